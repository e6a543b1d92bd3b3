"""A full checkpoint's tensors against what its real config implies.

Missing groups are checked on full-size sparse checkpoints (real names, shapes and byte
figures of Qwen2.5-VL-7B and Mixtral-8x7B); the rest on tiny real files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pyaudit.report.sizes import human_bytes
from pyaudit.testing.sparse import tensor_nbytes
from pyaudit.testing.stores import (
    LLM_LINEAR,
    lora_tensors,
    manifest_tensors,
    tiny_config,
    write_checkpoint,
)

QWEN25_VL = "Qwen2.5-VL-7B-Instruct_qwen2_5_vl"
QWEN3 = "Qwen3-4B_qwen3"
VL_BYTES = 16_584_333_312


def nbytes(tensors: dict[str, Any]) -> int:
    return sum(tensor_nbytes(d, s) for d, s in tensors.values())


# --- base-weights-missing, grouped for a human ------------------------------------------------


def test_last_layers_missing(tmp_path: Path, real_config: Any, scan: Any) -> None:
    config = real_config(QWEN25_VL)
    tensors = manifest_tensors(config)
    late = re.compile(r"model\.layers\.(2[0-7])\.")
    kept = {n: t for n, t in tensors.items() if not late.match(n)}
    dropped = {n: t for n, t in tensors.items() if late.match(n)}
    write_checkpoint(tmp_path, config, kept, shards=4)
    rc, report = scan.one(tmp_path)
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["base-weights-missing"]
    f = scan.the(report, "base-weights-missing")
    assert f["severity"] == "error" and f["count"] == 96 == len(dropped)
    size = human_bytes(nbytes(dropped))
    assert (
        f["message"] == f"96 of 729 base tensors absent ({size}): model.layers.20-27.* — 96 tensors"
    )
    assert f["tensors"][0] == "model.layers.20.self_attn.q_proj.weight" and len(f["tensors"]) == 20
    assert report["tensors"] == {"found": 633, "expected": 729, "missing": 96, "unexpected": 0}
    assert report["bytes"] == {"found": VL_BYTES - nbytes(dropped), "expected": VL_BYTES}


def test_frozen_vision_tower_dropped(tmp_path: Path, real_config: Any, scan: Any) -> None:
    config = real_config(QWEN25_VL)
    tensors = manifest_tensors(config)
    kept = {n: t for n, t in tensors.items() if not n.startswith("visual.")}
    write_checkpoint(tmp_path, config, kept, shards=4)
    rc, report = scan.one(tmp_path)
    assert rc == 1
    f = scan.the(report, "base-weights-missing")
    assert f["count"] == 390
    assert f["message"].startswith(
        "390 of 729 base tensors absent (1.35 GB): visual.blocks.* (32 blocks) — 384 tensors"
    )
    assert (
        "The whole vision section (390 tensors) is absent: frozen modules dropped on save?"
        in f["message"]
    )
    assert report["bytes"]["found"] == VL_BYTES - nbytes(
        {n: t for n, t in tensors.items() if n.startswith("visual.")}
    )


def test_only_vision_blocks_dropped_is_not_the_whole_section(
    tmp_path: Path, real_config: Any, scan: Any
) -> None:
    config = real_config(QWEN25_VL)
    kept = {n: t for n, t in manifest_tensors(config).items() if not n.startswith("visual.blocks.")}
    write_checkpoint(tmp_path, config, kept, shards=4)
    _rc, report = scan.one(tmp_path)
    f = scan.the(report, "base-weights-missing")
    assert (
        f["message"]
        == "384 of 729 base tensors absent (1.26 GB): visual.blocks.* (32 blocks) — 384 tensors"
    )


def test_experts_missing_from_a_mixtral(tmp_path: Path, real_config: Any, scan: Any) -> None:
    config = real_config("dolphin-2.5-mixtral-8x7b_mixtral")
    tensors = manifest_tensors(config)
    gone = re.compile(r"model\.layers\.[0-3]\.block_sparse_moe\.experts\.[23]\.")
    kept = {n: t for n, t in tensors.items() if not gone.match(n)}
    write_checkpoint(tmp_path, config, kept, shards=19)
    rc, report = scan.one(tmp_path)
    assert rc == 1
    f = scan.the(report, "base-weights-missing")
    assert f["count"] == 24  # 4 layers x 2 experts x (w1, w2, w3)
    assert f["message"].startswith("24 of 995 base tensors absent (2.82 GB): ")
    assert "model.layers.0-3.block_sparse_moe.experts.2-3.* — 24 tensors" in f["message"]


@pytest.mark.parametrize("model", [QWEN3, "gemma-2b_gemma"])
def test_tied_lm_head_is_not_missing(
    tmp_path: Path, real_config: Any, scan: Any, model: str
) -> None:
    config = tiny_config(real_config(model))
    tensors = manifest_tensors(config)
    assert "lm_head.weight" not in tensors
    write_checkpoint(tmp_path, config, tensors, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 0 and report["status"] == "pass" and report["findings"] == []


@pytest.mark.parametrize("model", [QWEN3, "gemma-2b_gemma"])
def test_tied_lm_head_saved_anyway_is_a_warning(
    tmp_path: Path, real_config: Any, scan: Any, model: str
) -> None:
    config = tiny_config(real_config(model))
    tensors = manifest_tensors(config)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    write_checkpoint(tmp_path, config, tensors, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 0 and report["status"] == "warn"
    assert scan.codes(report) == ["unexpected-tensors"]
    f = scan.the(report, "unexpected-tensors")
    assert f["severity"] == "warning" and f["tensors"] == ["lm_head.weight"]
    assert "tied to model.embed_tokens.weight (tie_word_embeddings): harmless" in f["message"]
    assert report["tensors"]["unexpected"] == 0 and report["tensors"]["missing"] == 0


def test_untied_model_needs_its_lm_head(tmp_path: Path, real_config: Any, scan: Any) -> None:
    config = tiny_config(real_config("neuroweave-Mistral-7B_mistral"))
    tensors = manifest_tensors(config)
    del tensors["lm_head.weight"]
    write_checkpoint(tmp_path, config, tensors, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 1
    f = scan.the(report, "base-weights-missing")
    assert f["tensors"] == ["lm_head.weight"] and f["message"].endswith(": lm_head.weight")


# --- contents of the tensors that are there ----------------------------------------------------


@pytest.fixture
def qwen3(real_config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    config = tiny_config(real_config(QWEN3))
    return config, manifest_tensors(config)


def test_zero3_empty_tensors(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, tensors = qwen3
    layer = {n: (d, (0,)) for n, (d, s) in tensors.items() if n.startswith("model.layers.")}
    write_checkpoint(tmp_path, config, {**tensors, **layer}, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["empty-tensors"]
    f = scan.the(report, "empty-tensors")
    assert f["severity"] == "error" and f["count"] == len(layer) == 22
    assert "22 tensors saved with zero elements" in f["message"]
    assert "shape [0], expected [64, 64]" in f["message"]
    assert (
        "stage3_gather_16bit_weights_on_model_save" in f["message"]
        and "zero_to_fp32.py" in f["message"]
    )


def test_shape_mismatch(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, tensors = qwen3
    tensors["model.embed_tokens.weight"] = (
        "BF16",
        (300, 64),
    )  # resized vocabulary, config not updated
    write_checkpoint(tmp_path, config, tensors, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 1
    assert scan.codes(report) == ["shape-mismatch"]
    f = scan.the(report, "shape-mismatch")
    assert f["severity"] == "error" and f["tensors"] == ["model.embed_tokens.weight"]
    assert "model.embed_tokens.weight: [300, 64], expected [256, 64]" in f["message"]
    assert "config.json" in f["message"]


def test_dtype_drift(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, tensors = qwen3
    assert config["torch_dtype"] == "bfloat16"
    write_checkpoint(
        tmp_path, config, {n: ("F32", s) for n, (d, s) in tensors.items()}, sparse=False
    )
    rc, report = scan.one(tmp_path)
    assert rc == 0 and report["status"] == "warn"
    assert scan.codes(report) == ["dtype-drift"]
    f = scan.the(report, "dtype-drift")
    assert f["severity"] == "warning" and f["count"] == 24
    expected = report["bytes"]["expected"]
    assert report["bytes"]["found"] == 2 * expected
    assert f["message"] == (
        f"24 tensors are F32 where config says BF16: 2.0× larger "  # noqa: RUF001
        f"({human_bytes(2 * expected)} instead of {human_bytes(expected)})"
    )

    rc, report = scan.one(tmp_path, "--fail-on", "warning")
    assert rc == 1 and report["status"] == "fail"


def test_unexpected_tensors(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, tensors = qwen3
    extra = {
        "v_head.summary.weight": ("BF16", (1, 64)),
        "v_head.summary.bias": ("BF16", (1,)),
    }  # a TRL value head
    write_checkpoint(tmp_path, config, {**tensors, **extra}, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 0 and report["status"] == "warn"
    f = scan.the(report, "unexpected-tensors")
    assert f["severity"] == "warning" and f["count"] == 2
    assert sorted(f["tensors"]) == sorted(extra)
    assert f["message"].startswith("2 tensors that config.json does not know (130 B): ")
    assert report["tensors"]["unexpected"] == 2


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_fsdp_wrapped_module."])
def test_wrapper_prefix(tmp_path: Path, qwen3: Any, scan: Any, prefix: str) -> None:
    config, tensors = qwen3
    write_checkpoint(tmp_path, config, {prefix + n: t for n, t in tensors.items()}, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 1
    assert scan.codes(report) == ["wrapper-prefix"]  # not 24 missing + 24 unexpected
    f = scan.the(report, "wrapper-prefix")
    assert f["severity"] == "error" and f["count"] == 24
    assert f"every tensor name starts with '{prefix}'" in f["message"]
    assert "unwrap_model" in f["message"]
    assert all(t.startswith(prefix) for t in f["tensors"])


def test_fsdp_inner_wrapper_segments(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, tensors = qwen3
    wrapped = {
        re.sub(r"^(model\.layers\.\d+\.)", r"\1_fsdp_wrapped_module.", n): t
        for n, t in tensors.items()
    }
    inner = sorted(n for n in wrapped if "_fsdp_wrapped_module" in n)
    write_checkpoint(tmp_path, config, wrapped, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 1
    assert scan.codes(report) == ["wrapper-prefix"]
    f = scan.the(report, "wrapper-prefix")
    assert f["count"] == len(inner) == 22
    assert len(f["tensors"]) == 20 and set(f["tensors"]) <= set(inner)
    assert "22 names hold FSDP/checkpoint/compile wrapper segments" in f["message"]


def test_unmerged_peft_in_a_full_checkpoint(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, tensors = qwen3
    saved: dict[str, Any] = {}
    for name, t in tensors.items():
        module = name.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] in LLM_LINEAR:
            saved[f"base_model.model.{module}.base_layer.weight"] = t
        else:
            saved[f"base_model.model.{name}"] = t
    lora = lora_tensors(tensors, r=4)  # base_model.model.<module>.lora_A/B.weight
    write_checkpoint(tmp_path, config, {**saved, **lora}, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 1 and report["kind"] == "full"
    assert scan.codes(report) == ["unmerged-peft"]
    f = scan.the(report, "unmerged-peft")
    assert f["severity"] == "error" and f["count"] == 28 + 14
    assert "28 LoRA tensors and 14 '.base_layer.' weights in a full checkpoint" in f["message"]
    assert "merge_and_unload" in f["message"]
    assert report["tensors"]["missing"] == 0


def test_mixed_layout(tmp_path: Path, real_config: Any, scan: Any) -> None:
    config = tiny_config(real_config(QWEN25_VL))
    tensors = manifest_tensors(config)
    mixed = {
        (
            n.replace("model.", "model.language_model.", 1)
            if n.startswith("model.layers.1.")
            else n
        ): t
        for n, t in tensors.items()
    }
    write_checkpoint(tmp_path, config, mixed, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 1
    assert scan.codes(report) == ["mixed-layout"]
    f = scan.the(report, "mixed-layout")
    assert f["severity"] == "error" and f["count"] == 12
    assert all(t.startswith("model.language_model.layers.1.") for t in f["tensors"])
    assert "in the transformers>=4.52 layout beside 45 in the legacy layout" in f["message"]
    assert report["tensors"]["missing"] == 0


@pytest.mark.parametrize("layout", ["legacy", "transformers>=4.52"])
@pytest.mark.parametrize("model", [QWEN25_VL, "medgemma-27b-it_gemma3"])
def test_both_layouts_are_healthy(
    tmp_path: Path, real_config: Any, scan: Any, layout: str, model: str
) -> None:
    config = tiny_config(real_config(model))
    tensors = manifest_tensors(config, layout)
    if layout != "legacy":
        assert any(n.startswith("model.language_model.") for n in tensors)
        assert any(n.startswith(("model.visual.", "model.vision_tower.")) for n in tensors)
    write_checkpoint(tmp_path, config, tensors, shards=2, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 0 and report["status"] == "pass", report["findings"]
    assert report["layout"] == layout
    assert report["tensors"]["missing"] == 0 and report["tensors"]["unexpected"] == 0


def test_both_layouts_full_size(tmp_path: Path, real_config: Any, scan: Any) -> None:
    config = real_config(QWEN25_VL)
    write_checkpoint(tmp_path, config, manifest_tensors(config, "transformers>=4.52"), shards=5)
    rc, report = scan.one(tmp_path)
    assert rc == 0 and report["status"] == "pass"
    assert report["bytes"] == {"found": VL_BYTES, "expected": VL_BYTES}


def test_unknown_architecture_still_checks_structure(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, tensors = qwen3
    config = {**config, "model_type": "qwen9_next", "architectures": ["Qwen9NextForCausalLM"]}
    write_checkpoint(tmp_path, config, tensors, shards=2, sparse=False)
    rc, report = scan.one(tmp_path)
    assert rc == 0 and report["status"] == "warn"
    assert scan.codes(report) == ["unknown-architecture"]
    f = scan.the(report, "unknown-architecture")
    assert f["severity"] == "warning"
    assert "no manifest spec for model_type 'qwen9_next'" in f["message"]
    assert "only structural checks ran" in f["message"]
    assert report["model_type"] == "qwen9_next"
    assert report["tensors"]["expected"] == 24  # from the index's names

    # Structural checks still run: a cut shard is still an error.
    shard = tmp_path / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    rc, report = scan.one(tmp_path)
    assert rc == 1 and scan.codes(report) == ["shard-truncated", "unknown-architecture"]

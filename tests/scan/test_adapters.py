"""PEFT adapters: against their own adapter_config.json, and against the base model when
the base can be found locally (a path, or the Hugging Face hub cache under $HF_HOME).

Real adapter configs come from tests/data/models/adapters (LLaMA-Factory and plain PEFT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyaudit.report.sizes import human_bytes
from pyaudit.testing.sparse import tensor_nbytes
from pyaudit.testing.stores import (
    adapter_config,
    lora_tensors,
    manifest_tensors,
    tiny_config,
    write_adapter,
    write_checkpoint,
    write_json,
)

QWEN3 = "Qwen3-4B_qwen3"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")

# Qwen/Qwen2.5-7B-Instruct's config.json (public values); its published
# model.safetensors.index.json says total_size 15231233024.
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "max_window_layers": 28,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 131072, "use_sliding_window": False,
}  # fmt: skip
QWEN25_7B_BYTES = 15_231_233_024


@pytest.fixture
def qwen3(real_config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    config = tiny_config(real_config(QWEN3))
    return config, manifest_tensors(config)


@pytest.fixture
def base_dir(tmp_path: Path, qwen3: Any) -> Path:
    """The base model on disk, as a path an adapter_config.json can name."""
    config, tensors = qwen3
    base = tmp_path / "models" / "Qwen3-4B"
    write_checkpoint(base, config, tensors, sparse=False)
    return base


def hf_cache_model(home: Path, repo_id: str, config: dict[str, Any]) -> Path:
    """$HF_HOME/hub/models--ORG--NAME/snapshots/HASH/config.json, as huggingface_hub lays it out."""
    org, name = repo_id.split("/")
    repo = home / "hub" / f"models--{org}--{name}"
    snapshot = repo / "snapshots" / "8faed761d45a263340a0528343f099c05c9a4323"
    write_json(snapshot / "config.json", config)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(snapshot.name)
    return snapshot


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no real ~/.cache/huggingface
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope"))
    return home


def test_empty_adapter_file(tmp_path: Path, base_dir: Path, scan: Any) -> None:
    write_adapter(tmp_path / "ckpt", {}, adapter_config(str(base_dir), r=8), sparse=False)
    rc, report = scan.one(tmp_path / "ckpt")
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["empty-adapter"]
    f = scan.the(report, "empty-adapter")
    assert f["severity"] == "error"
    assert (
        "the adapter file holds no tensors although adapter_config.json names target modules"
        in f["message"]
    )
    assert "q_proj" in f["message"]
    assert report["files"] == [
        {
            "path": "adapter_model.safetensors",
            "bytes": (tmp_path / "ckpt" / "adapter_model.safetensors").stat().st_size,
            "tensors": 0,
            "ok": True,
        }
    ]


def test_zero_element_lora_tensors(tmp_path: Path, base_dir: Path, qwen3: Any, scan: Any) -> None:
    _config, tensors = qwen3
    lora = {n: (d, (0,)) for n, (d, s) in lora_tensors(tensors, r=8).items()}
    write_adapter(tmp_path / "ckpt", lora, adapter_config(str(base_dir), r=8), sparse=False)
    rc, report = scan.one(tmp_path / "ckpt")
    assert rc == 1 and report["kind"] == "adapter"
    f = scan.the(report, "empty-adapter")
    assert f["severity"] == "error" and f["count"] == 28
    assert (
        "28 of 28 adapter tensors have zero elements" in f["message"] and "ZeRO-3" in f["message"]
    )
    assert "adapter-mismatch" not in scan.codes(report)


def test_rank_differs_from_r(tmp_path: Path, base_dir: Path, qwen3: Any, scan: Any) -> None:
    _config, tensors = qwen3
    write_adapter(
        tmp_path / "ckpt",
        lora_tensors(tensors, r=16),
        adapter_config(str(base_dir), r=8),
        sparse=False,
    )
    rc, report = scan.one(tmp_path / "ckpt")
    assert rc == 1
    f = scan.the(report, "adapter-mismatch")
    assert f["severity"] == "error" and f["count"] == 28
    assert "28 LoRA tensors disagree with adapter_config.json r=8" in f["message"]
    assert "has rank 16" in f["message"]


def test_modules_outside_target_modules(
    tmp_path: Path, base_dir: Path, qwen3: Any, scan: Any
) -> None:
    _config, tensors = qwen3
    write_adapter(
        tmp_path / "ckpt",
        lora_tensors(tensors, r=8),
        adapter_config(str(base_dir), r=8, targets=ATTENTION),
        sparse=False,
    )
    rc, report = scan.one(tmp_path / "ckpt")
    assert rc == 1
    f = scan.the(report, "adapter-mismatch")
    assert f["count"] == 6  # gate/up/down of 2 layers
    assert (
        "6 modules carry LoRA weights but are not in target_modules "
        "(k_proj, o_proj, q_proj, v_proj)" in f["message"]
    )
    assert set(f["tensors"]) == {
        f"model.layers.{i}.mlp.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj", "down_proj")
    }


def test_target_modules_without_tensors(
    tmp_path: Path, base_dir: Path, qwen3: Any, scan: Any
) -> None:
    _config, tensors = qwen3
    write_adapter(
        tmp_path / "ckpt",
        lora_tensors(tensors, r=8, targets=("q_proj", "v_proj")),
        adapter_config(str(base_dir), r=8, targets=("q_proj", "v_proj", "o_proj")),
        sparse=False,
    )
    rc, report = scan.one(tmp_path / "ckpt")
    assert rc == 1
    f = scan.the(report, "adapter-mismatch")
    assert f["tensors"] == ["o_proj"]
    assert f["message"] == "1 target_modules of adapter_config.json have no adapter tensors: o_proj"


def other_model_lora(real_config: Any) -> dict[str, Any]:
    """LoRA tensors of a wider model of the same family (an adapter for another base)."""
    wider = tiny_config(real_config(QWEN3), hidden_size=96, intermediate_size=160)
    return lora_tensors(manifest_tensors(wider), r=8)


def test_lora_shapes_against_a_base_found_by_path(
    tmp_path: Path, base_dir: Path, real_config: Any, scan: Any
) -> None:
    write_adapter(
        tmp_path / "ckpt",
        other_model_lora(real_config),
        adapter_config(str(base_dir), r=8),
        sparse=False,
    )
    rc, report = scan.one(tmp_path / "ckpt")
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["adapter-mismatch", "adapter-only"]
    f = scan.the(report, "adapter-mismatch")
    assert f["count"] == 20  # every A and B whose base dimension differs (k/v outputs still fit)
    assert f"do not fit the base model's shapes (base model {base_dir})" in f["message"]
    assert "lora_A.weight [8, 160] (base model.layers.0.mlp.down_proj is [64, 128])" in f["message"]
    assert report["expected_source"] == f"base model {base_dir}"
    assert report["bytes"]["expected"] == sum(
        tensor_nbytes(d, s) for d, s in manifest_tensors(tiny_config(real_config(QWEN3))).values()
    )


def test_lora_shapes_against_a_base_in_the_hub_cache(
    tmp_path: Path, hf_home: Path, qwen3: Any, real_config: Any, scan: Any
) -> None:
    config, tensors = qwen3
    snapshot = hf_cache_model(hf_home, "Qwen/Qwen3-4B", config)
    write_adapter(
        tmp_path / "ckpt",
        other_model_lora(real_config),
        adapter_config("Qwen/Qwen3-4B", r=8),
        sparse=False,
    )
    rc, report = scan.one(tmp_path / "ckpt")
    assert rc == 1
    f = scan.the(report, "adapter-mismatch")
    assert f["count"] == 20
    assert f"(base model Qwen/Qwen3-4B ({snapshot}))" in f["message"]

    # The right adapter for that base passes.
    write_adapter(
        tmp_path / "good",
        lora_tensors(tensors, r=8),
        adapter_config("Qwen/Qwen3-4B", r=8),
        sparse=False,
    )
    rc, report = scan.one(tmp_path / "good")
    assert rc == 0 and report["status"] == "pass" and scan.codes(report) == ["adapter-only"]
    assert "the base model (qwen3, " in scan.the(report, "adapter-only")["message"]


def test_adapter_for_another_architecture(
    tmp_path: Path, base_dir: Path, qwen3: Any, scan: Any
) -> None:
    _config, tensors = qwen3
    lora = lora_tensors(tensors, r=8)
    lora = {n.replace(".self_attn.", ".attention."): t for n, t in lora.items()}
    write_adapter(tmp_path / "ckpt", lora, adapter_config(str(base_dir), r=8), sparse=False)
    rc, report = scan.one(tmp_path / "ckpt")
    assert rc == 1
    f = next(f for f in report["findings"] if "do not exist in the base model" in f["message"])
    assert f["code"] == "adapter-mismatch" and f["count"] == 8
    assert "model.layers.0.attention.k_proj" in f["tensors"]


def test_base_not_found_is_info(tmp_path: Path, hf_home: Path, qwen3: Any, scan: Any) -> None:
    _config, tensors = qwen3
    write_adapter(
        tmp_path / "ckpt",
        lora_tensors(tensors, r=8),
        adapter_config("Qwen/Qwen3-4B", r=8),
        sparse=False,
    )
    rc, report = scan.one(tmp_path / "ckpt")
    assert rc == 0 and report["status"] == "pass"
    assert scan.codes(report) == ["adapter-only", "base-not-found"]
    f = scan.the(report, "base-not-found")
    assert f["severity"] == "info"
    assert (
        "the base model 'Qwen/Qwen3-4B' (adapter_config.json base_model_name_or_path) "
        "is not available locally" in f["message"]
    )
    assert "--base DIR" in f["message"]
    assert report["tensors"]["expected"] is None and report["bytes"]["expected"] is None


def real_lora(
    config: dict[str, Any], adapter: dict[str, Any], prefix: str = "base_model.model."
) -> dict[str, Any]:
    """LoRA tensors for every module PEFT's list rule selects (exact name, or '.'-suffix)."""
    targets = adapter["target_modules"]
    tensors = manifest_tensors(config)
    out = {}
    for name, (dtype, shape) in tensors.items():
        module = name.removesuffix(".weight")
        if (
            len(shape) != 2
            or name.startswith("visual.")
            or not any(module == t or module.endswith("." + t) for t in targets)
        ):
            continue
        out[f"{prefix}{module}.lora_A.weight"] = (dtype, (adapter["r"], shape[1]))
        out[f"{prefix}{module}.lora_B.weight"] = (dtype, (shape[0], adapter["r"]))
    return out


def test_real_llamafactory_adapter_config_passes(
    tmp_path: Path, hf_home: Path, real_adapter_config: Any, scan: Any
) -> None:
    adapter = real_adapter_config("Qwen2.5-7B-Instruct-llamafactory-lora")
    assert adapter["base_model_name_or_path"] == "Qwen/Qwen2.5-7B-Instruct"
    assert sorted(adapter["target_modules"]) == sorted(ATTENTION)
    hf_cache_model(hf_home, "Qwen/Qwen2.5-7B-Instruct", QWEN25_7B)
    lora = real_lora(QWEN25_7B, adapter)
    assert len(lora) == 28 * 4 * 2
    ckpt = tmp_path / "saves" / "qwen2.5-7b-lora"
    write_adapter(ckpt, lora, adapter)  # full-size, sparse
    rc, report = scan.one(ckpt)
    assert rc == 0 and report["status"] == "pass", report["findings"]
    assert scan.codes(report) == ["adapter-only"]
    lora_bytes = sum(tensor_nbytes(d, s) for d, s in lora.values())
    assert report["bytes"] == {"found": lora_bytes, "expected": QWEN25_7B_BYTES}
    assert scan.the(report, "adapter-only")["message"] == (
        f"adapter weights only (224 tensors, {human_bytes(lora_bytes)}); "
        "the base model (qwen2, 15.23 GB) is not in this checkpoint"
    )

    # The same adapter_config.json over LoRA tensors made for a smaller Qwen2.5 fails.
    small = {
        **QWEN25_7B,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "num_hidden_layers": 28,
    }
    write_adapter(ckpt, real_lora(small, adapter), adapter)
    rc, report = scan.one(ckpt)
    assert rc == 1
    assert "do not fit the base model's shapes" in scan.the(report, "adapter-mismatch")["message"]


def test_real_peft_adapter_with_relative_base_path(
    tmp_path: Path, real_adapter_config: Any, real_config: Any, scan: Any
) -> None:
    """crag-meta's PEFT adapter names its base as '../models/Meta-Llama-3-8B-Instruct/'."""
    adapter = real_adapter_config("crag-meta-Llama-3-8B-Instruct-lora")
    assert adapter["base_model_name_or_path"] == "../models/Meta-Llama-3-8B-Instruct/"
    llama = real_config("1PARAMMYL-8B-ModelStock_llama")  # Llama-3.1-8B: the same shapes
    write_json(tmp_path / "models" / "Meta-Llama-3-8B-Instruct" / "config.json", llama)
    lora = real_lora(llama, adapter)
    assert len(lora) == 32 * 2 * 2 and adapter["r"] == 64
    write_adapter(tmp_path / "models" / "peft", lora, adapter)
    rc, report = scan.one(tmp_path / "models" / "peft")
    assert rc == 0 and report["status"] == "pass", report["findings"]
    assert report["expected_source"].startswith("base model ../models/Meta-Llama-3-8B-Instruct/")
    assert report["bytes"]["expected"] == 16_060_522_496

    # Rank 32 tensors under r=64: the adapter disagrees with its own config.
    write_adapter(tmp_path / "models" / "peft", real_lora(llama, {**adapter, "r": 32}), adapter)
    rc, report = scan.one(tmp_path / "models" / "peft")
    assert rc == 1
    assert (
        "disagree with adapter_config.json r=64" in scan.the(report, "adapter-mismatch")["message"]
    )


def test_real_llamafactory_vl_adapter_with_layer_targets(
    tmp_path: Path, real_adapter_config: Any, real_config: Any, hf_home: Path, scan: Any
) -> None:
    """FinTechathon's LLaMA-Factory adapter lists 112 targets, some per layer ('34.mlp.up_proj')."""
    adapter = real_adapter_config("FinTechathon-Qwen2.5-VL-3B-llamafactory-lora")
    assert (
        isinstance(adapter["target_modules"], list)
        and "34.mlp.up_proj" in adapter["target_modules"]
    )
    # Qwen2.5-VL-3B-Instruct: the 7B config with the 3B's public text sizes.
    config = real_config("Qwen2.5-VL-7B-Instruct_qwen2_5_vl")
    config.update(
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    )
    config["vision_config"]["out_hidden_size"] = 2048
    lora = real_lora(config, adapter)
    ckpt = tmp_path / "saves" / "lora" / "train_2025-11-09-23-31-41"
    write_adapter(ckpt, lora, adapter)
    rc, report = scan.one(ckpt)
    assert rc == 0 and report["status"] == "pass", report["findings"]
    assert scan.codes(report) == ["adapter-only", "base-not-found"]

    # Drop the LoRA of one listed per-layer target: that target has no tensors now.
    lora = {n: t for n, t in lora.items() if ".layers.34.mlp.up_proj." not in n}
    write_adapter(ckpt, lora, adapter)
    rc, report = scan.one(ckpt)
    assert rc == 1
    f = scan.the(report, "adapter-mismatch")
    assert f["tensors"] == ["34.mlp.up_proj"]


def test_regex_target_modules(tmp_path: Path, base_dir: Path, qwen3: Any, scan: Any) -> None:
    """target_modules as one regex string: the whole module path must match it."""
    _config, tensors = qwen3
    pattern = r"^(?!.*\.layers\.1\.).*\.(q_proj|v_proj)"
    wanted = {
        n: t
        for n, t in lora_tensors(tensors, r=8, targets=("q_proj", "v_proj")).items()
        if ".layers.1." not in n
    }
    conf = {**adapter_config(str(base_dir), r=8), "target_modules": pattern}
    write_adapter(tmp_path / "ok", wanted, conf, sparse=False)
    rc, report = scan.one(tmp_path / "ok")
    assert rc == 0 and scan.codes(report) == ["adapter-only"]

    write_adapter(
        tmp_path / "bad",
        lora_tensors(tensors, r=8, targets=("q_proj", "v_proj")),
        conf,
        sparse=False,
    )
    rc, report = scan.one(tmp_path / "bad")
    assert rc == 1
    f = scan.the(report, "adapter-mismatch")
    assert sorted(f["tensors"]) == [
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    ]
    assert f"not in target_modules ({pattern!r})" in f["message"]


def test_base_dir_in_the_other_naming(tmp_path: Path, real_config: Any, scan: Any) -> None:
    """--base DIR on disk as model.layers.* / visual.*; the adapter names the LLM as
    transformers >= 4.52 holds it in memory (model.language_model.*), and a re-save of the
    model uses those names too: both are the base's tensors, not another model's."""
    config = tiny_config(real_config("Qwen2.5-VL-7B-Instruct_qwen2_5_vl"))
    legacy = manifest_tensors(config, "legacy")
    write_checkpoint(tmp_path / "base", config, legacy, sparse=False)
    lora = lora_tensors(
        legacy, r=8, rename=lambda m: m.replace("model.layers.", "model.language_model.layers.")
    )
    write_adapter(
        tmp_path / "adapter", lora, adapter_config("Qwen/Qwen2.5-VL-7B-Instruct", r=8), sparse=False
    )
    rc, report = scan.one(tmp_path / "adapter", "--base", tmp_path / "base")
    assert rc == 0 and report["status"] == "pass", report["findings"]
    assert scan.codes(report) == ["adapter-only"]
    assert report["expected_source"] == f"--base {tmp_path / 'base'}"

    write_checkpoint(
        tmp_path / "resaved", config, manifest_tensors(config, "transformers>=4.52"), sparse=False
    )
    rc, report = scan.one(tmp_path / "resaved", "--base", tmp_path / "base")
    assert rc == 0 and report["findings"] == [], report["findings"]

    # A wider model's adapter is still told apart.
    wider = lora_tensors(
        manifest_tensors(
            tiny_config(real_config("Qwen2.5-VL-7B-Instruct_qwen2_5_vl"), hidden_size=96)
        ),
        r=8,
    )
    write_adapter(tmp_path / "wrong", wider, adapter_config("x", r=8), sparse=False)
    rc, report = scan.one(tmp_path / "wrong", "--base", tmp_path / "base")
    assert rc == 1
    assert "do not fit the base model's shapes" in scan.the(report, "adapter-mismatch")["message"]


def test_rank_pattern_matches_at_a_dot_boundary(
    tmp_path: Path, base_dir: Path, qwen3: Any, scan: Any
) -> None:
    """PEFT's rank_pattern key 'j_proj' is not a suffix rule: it does not reach 'k_proj'."""
    _, tensors = qwen3
    lora = lora_tensors(tensors, r=8, targets=("k_proj", "v_proj"))
    lora.update(lora_tensors(tensors, r=4, targets=("q_proj",)))
    conf = {
        **adapter_config(str(base_dir), r=8, targets=("q_proj", "k_proj", "v_proj")),
        "rank_pattern": {"q_proj": 4, "j_proj": 2, "roj": 2},
    }
    write_adapter(tmp_path / "ok", lora, conf, sparse=False)
    rc, report = scan.one(tmp_path / "ok")
    assert rc == 0 and scan.codes(report) == ["adapter-only"], report["findings"]

    conf["rank_pattern"] = {"q_proj": 8}  # q_proj's tensors have rank 4
    write_adapter(tmp_path / "bad", lora, conf, sparse=False)
    rc, report = scan.one(tmp_path / "bad")
    assert rc == 1
    f = scan.the(report, "adapter-mismatch")
    assert f["count"] == 4 and all(".q_proj.lora_" in t for t in f["tensors"])


def test_invalid_regex_target_modules_is_a_finding_not_a_traceback(
    tmp_path: Path, base_dir: Path, qwen3: Any, scan: Any
) -> None:
    _, tensors = qwen3
    conf = {**adapter_config(str(base_dir), r=8), "target_modules": ".*(q_proj|v_proj"}
    write_adapter(tmp_path / "ckpt", lora_tensors(tensors, r=8, targets=("q_proj",)), conf)
    rc, report = scan.one(tmp_path / "ckpt")
    assert rc == 1
    f = scan.the(report, "adapter-mismatch")
    assert "not in target_modules ('.*(q_proj|v_proj')" in f["message"]

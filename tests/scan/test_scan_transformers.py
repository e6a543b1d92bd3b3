"""Checkpoints written by transformers and PEFT themselves (CI installs torch, transformers,
peft; skipped without them): tiny models built from the real configs, saved with
``save_pretrained``; PEFT adapters saved by PEFT; a PEFT model saved without merging.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyaudit.testing.stores import swift_args, tiny_config, trainer_state, write_json

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

# transformers/peft deprecation notices are theirs, not ours (filterwarnings=error).
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

FAMILIES = [
    "Qwen2.5-VL-7B-Instruct_qwen2_5_vl", "olmOCR-7B-0225-preview_qwen2_vl",
    "cogito-v1-preview-qwen-14B_qwen2", "Qwen3-4B_qwen3", "1PARAMMYL-8B-ModelStock_llama",
    "neuroweave-Mistral-7B_mistral", "dolphin-2.5-mixtral-8x7b_mixtral", "gemma-2b_gemma",
    "gemma-2-9b-it_gemma2", "gemma-3-4b-novision_gemma3_text", "PRYMMAL-PHI3-3B-SLERP_phi3",
    "medgemma-27b-it_gemma3",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _quiet() -> None:
    transformers.logging.set_verbosity_error()


def save_tiny_model(directory: Path, config: dict[str, Any]) -> Any:
    """Build the model class the config names, from the config alone, and save_pretrained it."""
    write_json(directory / "config.json", config)
    auto = transformers.AutoConfig.from_pretrained(directory)
    cls = getattr(transformers, auto.architectures[0])
    torch.manual_seed(0)
    model = cls._from_config(auto, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_transformers_save_pretrained_passes(
    tmp_path: Path, real_config: Any, scan: Any, family: str
) -> None:
    save_tiny_model(tmp_path, tiny_config(real_config(family)))
    rc, report = scan.one(tmp_path)
    assert report["findings"] == [] and report["status"] == "pass" and rc == 0
    assert report["kind"] == "full"
    assert report["tensors"]["found"] == report["tensors"]["expected"] > 0
    assert report["bytes"]["found"] == report["bytes"]["expected"]


def lora(model: Any, targets: list[str]) -> Any:
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.mark.parametrize("family", ["Qwen3-4B_qwen3", "Qwen2.5-VL-7B-Instruct_qwen2_5_vl"])
def test_real_peft_adapter_passes_against_its_base(
    tmp_path: Path, real_config: Any, scan: Any, family: str
) -> None:
    base = tmp_path / "base"
    model = save_tiny_model(base, tiny_config(real_config(family)))
    peft_model = lora(model, ATTENTION)
    peft_model.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 8 and sorted(saved["target_modules"]) == sorted(ATTENTION)
    rc, report = scan.one(tmp_path / "adapter")
    assert rc == 0 and report["status"] == "pass", report["findings"]
    assert report["kind"] == "adapter"
    assert [f["code"] for f in report["findings"]] == ["adapter-only"]
    assert report["tensors"]["found"] == 2 * 2 * len(ATTENTION)  # 2 layers x A/B x modules

    # The same adapter against a base of other dimensions: caught.
    other = tmp_path / "other"
    save_tiny_model(other, tiny_config(real_config(family), hidden_size=96, intermediate_size=160))
    rc, report = scan.one(tmp_path / "adapter", "--base", other)
    assert rc == 1
    assert "do not fit the base model's shapes" in scan.the(report, "adapter-mismatch")["message"]


def test_real_peft_model_saved_without_merging(tmp_path: Path, real_config: Any, scan: Any) -> None:
    model = save_tiny_model(
        tmp_path / "base", tiny_config(real_config("Qwen2.5-VL-7B-Instruct_qwen2_5_vl"))
    )
    peft_model = lora(model, ATTENTION)
    peft_model.get_base_model().save_pretrained(tmp_path / "unmerged")
    rc, report = scan.one(tmp_path / "unmerged")
    assert rc == 1 and report["kind"] == "full"
    assert [f["code"] for f in report["findings"]] == ["unmerged-peft"]
    f = scan.the(report, "unmerged-peft")
    assert "16 LoRA tensors and 14 '.base_layer.' weights" in f["message"]  # q/k/v carry biases
    assert report["tensors"]["missing"] == 0

    peft_model.merge_and_unload().save_pretrained(tmp_path / "merged")
    rc, report = scan.one(tmp_path / "merged")
    assert rc == 0 and report["findings"] == []


def test_seed_story_with_a_real_peft_adapter(
    tmp_path: Path, real_config: Any, scan: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GRPO run's checkpoint as PEFT really writes it (transformers >= 4.52 names the
    LLM model.language_model.* in memory), under ms-swift's args.json."""
    merged = tmp_path / "output" / "v0-20250530-100000" / "checkpoint-200-merged"
    model = save_tiny_model(merged, tiny_config(real_config("Qwen2.5-VL-7B-Instruct_qwen2_5_vl")))
    write_json(merged / "args.json", swift_args("Qwen/Qwen2.5-VL-7B-Instruct", "lora"))
    ckpt = tmp_path / "output" / "v1-20250601-090000" / "checkpoint-50"
    lora(model, ATTENTION).save_pretrained(ckpt)
    from safetensors import safe_open

    with safe_open(str(ckpt / "adapter_model.safetensors"), "np") as f:
        assert all(k.startswith("base_model.model.model.language_model.layers.") for k in f.keys())  # noqa: SIM118
    ref = "output/v0-20250530-100000/checkpoint-200-merged"
    write_json(ckpt / "args.json", swift_args(ref, "full", rlhf_type="grpo", load_args=True))
    write_json(ckpt / "trainer_state.json", trainer_state(50))
    monkeypatch.chdir(tmp_path)
    rc, doc = scan("output/")
    assert rc == 1
    by_path = {c["path"]: c for c in doc["checkpoints"]}
    assert by_path["v0-20250530-100000/checkpoint-200-merged"]["status"] == "pass"
    report = by_path["v1-20250601-090000/checkpoint-50"]
    assert report["status"] == "fail"
    assert sorted(f["code"] for f in report["findings"]) == [
        "adapter-only",
        "base-weights-missing",
        "intent-mismatch",
    ]
    assert "--load_args false" in scan.the(report, "intent-mismatch")["message"]


# Families without a real config in tests/data/models: small configs written for the test.
SMALL_MOE = {
    "qwen3_moe": {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 64,
        "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_experts": 4,
        "num_experts_per_tok": 2, "vocab_size": 256, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "decoder_sparse_step": 1, "mlp_only_layers": [],
    },
    "deepseek_v3": {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 256,
        "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
        "n_shared_experts": 1, "n_routed_experts": 4, "kv_lora_rank": 16, "q_lora_rank": 24,
        "qk_rope_head_dim": 8, "v_head_dim": 16, "qk_nope_head_dim": 16, "n_group": 2,
        "topk_group": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
        "moe_layer_freq": 1, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "num_nextn_predict_layers": 0,
    },
}  # fmt: skip


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3"])
def test_transformers_save_pretrained_moe(tmp_path: Path, scan: Any, family: str) -> None:
    save_tiny_model(tmp_path, SMALL_MOE[family])
    rc, report = scan.one(tmp_path)
    assert report["findings"] == [] and rc == 0, report["findings"]

"""pyaudit.manifest: what a checkpoint must hold, from config.json alone.

Ground truth: ``tests/data/models/*/`` holds verbatim ``config.json`` +
``model.safetensors.index.json`` pairs of real public checkpoints; a manifest must name
exactly the index's tensors and add up to its ``metadata.total_size``. Families without a
shared copy are checked against published numbers (each one's source is in a comment).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import realdata

from pyaudit.manifest import (
    ExpectedTensor,
    Layout,
    Manifest,
    ManifestError,
    UnknownArchitecture,
    UnsupportedQuantization,
    build_manifest,
    group_names,
    layouts,
    load_config,
    manifest_to_json,
    model_type_of,
    spec_of,
    supported_model_types,
)
from pyaudit.manifest.expr import ExprError, compile_expr, evaluate

MODEL_DIRS = realdata.model_dirs()


def _model_dir(suffix: str) -> Path:
    return realdata.model_dir(suffix)


def _config(suffix: str) -> dict[str, Any]:
    return load_config(_model_dir(suffix))


def _index(suffix: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (_model_dir(suffix) / "model.safetensors.index.json").read_text()
    )
    return data


def _params(m: Manifest) -> int:
    return sum(math.prod(t.shape) for t in m.tensors.values() if t.shape is not None)


def _params_by_dtype(m: Manifest) -> dict[str, int]:
    out: Counter[str] = Counter()
    for t in m.tensors.values():
        assert t.shape is not None
        out[t.dtype] += math.prod(t.shape)
    return dict(out)


# --------------------------------------------------------------------------------------
# Real checkpoints: names == index keys, bytes == total_size
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_manifest_matches_real_index(model_dir: Path) -> None:
    config = load_config(model_dir)
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    m = build_manifest(config)
    expected = set(index["weight_map"])
    got = set(m.tensors)
    missing, extra = sorted(expected - got), sorted(got - expected)
    assert not missing and not extra, (
        f"{model_dir.name}: {len(missing)} names in the index but not the manifest "
        f"{missing[:20]}, {len(extra)} in the manifest but not the index {extra[:20]}"
    )
    total_size = index["metadata"]["total_size"]
    assert m.total_bytes == total_size, (
        f"{model_dir.name}: manifest {m.total_bytes} bytes != index {total_size}"
    )
    assert m.model_type == config["model_type"]
    assert m.dtype == "BF16"  # every shared checkpoint declares torch_dtype bfloat16
    assert m.quantization is None
    assert all(t.dtype == "BF16" for t in m.tensors.values())
    assert m.layout == layouts(config)[0].name
    # Sections cover every tensor exactly once.
    grouped = [n for names in m.groups.values() for n in names]
    assert sorted(grouped) == sorted(m.tensors)


def test_medgemma_parameter_count_matches_index_metadata() -> None:
    # The index of medgemma-27b-it records total_parameters too; it counts the tied
    # lm_head (vocab x hidden) a second time, which the checkpoint does not store.
    m = build_manifest(_config("medgemma-27b-it_gemma3"))
    meta = _index("medgemma-27b-it_gemma3")["metadata"]
    vocab, hidden = 262208, 5376
    assert _params(m) + vocab * hidden == meta["total_parameters"]


def test_known_shapes_of_real_models() -> None:
    qwen3 = build_manifest(_config("Qwen3-4B_qwen3")).tensors
    assert qwen3["model.embed_tokens.weight"] == ExpectedTensor(
        (151936, 2560), "BF16", 151936 * 2560 * 2
    )
    assert qwen3["model.layers.0.self_attn.q_proj.weight"].shape == (32 * 128, 2560)
    assert qwen3["model.layers.0.self_attn.k_proj.weight"].shape == (8 * 128, 2560)
    assert qwen3["model.layers.35.self_attn.k_norm.weight"].shape == (128,)

    vl = build_manifest(_config("Qwen2.5-VL-7B-Instruct_qwen2_5_vl")).tensors
    assert vl["visual.patch_embed.proj.weight"].shape == (1280, 3, 2, 14, 14)
    assert vl["visual.blocks.0.attn.qkv.weight"].shape == (3840, 1280)
    assert vl["visual.blocks.31.mlp.down_proj.weight"].shape == (1280, 3420)
    assert vl["visual.merger.mlp.0.weight"].shape == (5120, 5120)
    assert vl["visual.merger.mlp.2.weight"].shape == (3584, 5120)
    assert vl["model.layers.0.self_attn.k_proj.bias"].shape == (512,)

    # olmOCR's vision_config only names in_chans/spatial_patch_size: the rest are the
    # Qwen2VLVisionConfig defaults (embed_dim 1280, mlp_ratio 4, merger out 3584).
    v2 = build_manifest(_config("olmOCR-7B-0225-preview_qwen2_vl")).tensors
    assert v2["visual.blocks.0.mlp.fc1.weight"].shape == (5120, 1280)
    assert v2["visual.merger.mlp.2.weight"].shape == (3584, 5120)

    phi = build_manifest(_config("PRYMMAL-PHI3-3B-SLERP_phi3")).tensors
    assert phi["model.layers.0.self_attn.qkv_proj.weight"].shape == (3 * 3072, 3072)
    assert phi["model.layers.0.mlp.gate_up_proj.weight"].shape == (2 * 8192, 3072)

    mx = build_manifest(_config("dolphin-2.5-mixtral-8x7b_mixtral")).tensors
    assert mx["model.layers.0.block_sparse_moe.gate.weight"].shape == (8, 4096)
    assert mx["model.layers.0.block_sparse_moe.experts.7.w2.weight"].shape == (4096, 14336)
    assert mx["lm_head.weight"].shape == (32002, 4096)

    mg = build_manifest(_config("medgemma-27b-it_gemma3")).tensors
    assert mg["multi_modal_projector.mm_input_projection_weight"].shape == (1152, 5376)
    assert mg["vision_tower.vision_model.embeddings.position_embedding.weight"].shape == (
        (896 // 14) ** 2,
        1152,
    )
    assert mg["vision_tower.vision_model.embeddings.patch_embedding.weight"].shape == (
        1152,
        3,
        14,
        14,
    )
    assert mg["language_model.model.layers.61.self_attn.q_norm.weight"].shape == (128,)


# --------------------------------------------------------------------------------------
# Tied embeddings
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["Qwen3-4B_qwen3", "gemma-2b_gemma"])
def test_tied_lm_head_is_not_expected_but_recorded(suffix: str) -> None:
    config = _config(suffix)
    m = build_manifest(config)
    assert "lm_head.weight" not in m.tensors
    assert m.tied == {"lm_head.weight": "model.embed_tokens.weight"}
    # gemma-2b's config has no tie_word_embeddings at all: GemmaConfig ties by default.
    if suffix.endswith("_gemma"):
        assert "tie_word_embeddings" not in config
    untied = dict(config, tie_word_embeddings=False)
    m2 = build_manifest(untied)
    assert m2.tied == {}
    assert m2.tensors["lm_head.weight"] == m.tensors["model.embed_tokens.weight"]
    assert len(m2.tensors) == len(m.tensors) + 1


def test_untied_models_expect_lm_head() -> None:
    m = build_manifest(_config("1PARAMMYL-8B-ModelStock_llama"))
    assert m.tied == {}
    assert m.tensors["lm_head.weight"].shape == (128256, 4096)


def test_gemma3_multimodal_tie_is_recorded_in_each_layout() -> None:
    config = _config("medgemma-27b-it_gemma3")
    legacy = build_manifest(config)
    assert legacy.tied == {
        "language_model.lm_head.weight": "language_model.model.embed_tokens.weight"
    }
    new = build_manifest(config, layout="transformers>=4.52")
    assert new.tied == {"lm_head.weight": "model.language_model.embed_tokens.weight"}


# --------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix", ["Qwen2.5-VL-7B-Instruct_qwen2_5_vl", "olmOCR-7B-0225-preview_qwen2_vl"]
)
def test_qwen_vl_layouts_are_a_bijection_of_the_legacy_names(suffix: str) -> None:
    config = _config(suffix)
    names = [lo.name for lo in layouts(config)]
    assert names == ["legacy", "transformers>=4.52"]
    legacy = build_manifest(config)
    new = build_manifest(config, layout="transformers>=4.52")
    assert new.layout == "transformers>=4.52"
    assert len(new.tensors) == len(legacy.tensors)

    def to_new(name: str) -> str:
        if name.startswith("visual."):
            return "model." + name
        if name.startswith("model."):
            return "model.language_model." + name[len("model.") :]
        return name

    mapped = {to_new(n): t for n, t in legacy.tensors.items()}
    assert len(mapped) == len(legacy.tensors)  # injective
    assert mapped == new.tensors  # same shapes and dtypes, name by name
    assert new.total_bytes == legacy.total_bytes
    assert "model.visual.blocks.0.attn.qkv.weight" in new.tensors
    assert "model.language_model.layers.27.mlp.down_proj.weight" in new.tensors
    assert "model.language_model.embed_tokens.weight" in new.tensors
    assert "lm_head.weight" in new.tensors
    assert not any(n.startswith(("visual.", "model.layers.")) for n in new.tensors)


def test_gemma3_new_layout_names() -> None:
    config = _config("medgemma-27b-it_gemma3")
    new = build_manifest(config, layout="transformers>=4.52")
    legacy = build_manifest(config)
    assert len(new.tensors) == len(legacy.tensors) and new.total_bytes == legacy.total_bytes
    prefixes = Counter(n.split(".")[1] if n.startswith("model.") else n for n in new.tensors)
    assert set(prefixes) == {"language_model", "vision_tower", "multi_modal_projector"}
    assert "model.vision_tower.vision_model.post_layernorm.weight" in new.tensors
    assert "model.multi_modal_projector.mm_soft_emb_norm.weight" in new.tensors
    assert "model.language_model.norm.weight" in new.tensors


def test_gemma3_transformers5_layout_drops_vision_model_only() -> None:
    config = _config("medgemma-27b-it_gemma3")
    assert [lo.name for lo in layouts(config)] == [
        "legacy",
        "transformers>=4.52",
        "transformers>=5",
    ]
    legacy = build_manifest(config)
    t5 = build_manifest(config, layout="transformers>=5")
    mapped = {
        n.replace("vision_tower.vision_model.", "vision_tower.", 1): t
        for n, t in legacy.tensors.items()
    }
    assert mapped == t5.tensors and t5.total_bytes == legacy.total_bytes
    assert "vision_tower.encoder.layers.26.mlp.fc2.weight" in t5.tensors
    assert "language_model.model.layers.61.self_attn.q_norm.weight" in t5.tensors
    assert "multi_modal_projector.mm_input_projection_weight" in t5.tensors
    assert t5.tied == {"language_model.lm_head.weight": "language_model.model.embed_tokens.weight"}
    # The three layouts share no vision-tower name: a checkpoint's names tell them apart.
    towers = [
        {n for n in build_manifest(config, layout=lo.name).tensors if "vision_tower." in n}
        for lo in layouts(config)
    ]
    assert (
        not (towers[0] & towers[1]) and not (towers[0] & towers[2]) and not (towers[1] & towers[2])
    )


def test_layout_dtype_overrides_and_omitted_sections() -> None:
    lay = Layout("x", dtypes=(("mlp.gate.weight", "F32"),), omit=("mtp",))
    assert lay.dtype_of("model.layers.3.mlp.gate.weight", "BF16") == "F32"
    assert lay.dtype_of("mlp.gate.weight", "BF16") == "F32"
    assert lay.dtype_of("model.layers.3.xmlp.gate.weight", "BF16") == "BF16"  # whole segments
    assert lay.dtype_of("model.layers.3.mlp.gate.e_score_correction_bias", "F32") == "F32"
    assert Layout("y").dtype_of("a.b", "F16") == "F16"


def test_layout_apply_first_match_wins() -> None:
    lay = Layout("x", (("model.", "model.language_model."), ("model.visual.", "never.")))
    assert lay.apply("model.visual.blocks.0") == "model.language_model.visual.blocks.0"
    assert lay.apply("lm_head.weight") == "lm_head.weight"


def test_unknown_layout_name() -> None:
    with pytest.raises(ValueError, match="unknown layout"):
        build_manifest({"model_type": "llama"}, layout="nope")


def test_single_layout_families() -> None:
    assert [lo.name for lo in layouts({"model_type": "llama"})] == ["default"]


# --------------------------------------------------------------------------------------
# Config scoping and dtype
# --------------------------------------------------------------------------------------

_TEXT_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "tie_word_embeddings",
    "rms_norm_eps",
)


@pytest.mark.parametrize(
    "suffix", ["Qwen2.5-VL-7B-Instruct_qwen2_5_vl", "olmOCR-7B-0225-preview_qwen2_vl"]
)
def test_transformers5_nested_config_gives_the_same_manifest(suffix: str) -> None:
    config = _config(suffix)
    nested = {k: v for k, v in config.items() if k not in _TEXT_KEYS and k != "torch_dtype"}
    nested["text_config"] = {k: config[k] for k in _TEXT_KEYS if k in config}
    nested["dtype"] = config["torch_dtype"]
    assert build_manifest(nested).tensors == build_manifest(config).tensors


def test_transformers5_config_spellings_are_read() -> None:
    # transformers 5 re-saves Qwen3-MoE's num_experts as num_local_experts (attribute_map).
    resaved = {k: v for k, v in QWEN3_30B.items() if k != "num_experts"}
    resaved["num_local_experts"] = 128
    assert build_manifest(resaved).tensors == build_manifest(QWEN3_30B).tensors
    nested = {"model_type": "qwen3_moe", "text_config": dict(resaved, num_hidden_layers=2)}
    assert build_manifest(nested).tensors["model.layers.1.mlp.gate.weight"].shape == (128, 2048)
    # Within one source the spec's own name wins.
    both = dict(QWEN3_30B, num_hidden_layers=1, num_experts=8, num_local_experts=16)
    assert build_manifest(both).tensors["model.layers.0.mlp.gate.weight"].shape == (8, 2048)
    # Mixtral: num_experts is an alias of num_local_experts.
    mx = build_manifest({"model_type": "mixtral", "num_hidden_layers": 1, "num_experts": 4})
    assert mx.tensors["model.layers.0.block_sparse_moe.gate.weight"].shape == (4, 4096)
    assert "model.layers.0.block_sparse_moe.experts.4.w1.weight" not in mx.tensors
    # DeepSeek-V3: num_local_experts / num_mtp_layers.
    ds = {
        k: v for k, v in DEEPSEEK_V3.items() if k not in ("n_routed_experts", "quantization_config")
    }
    ds = dict(ds, num_hidden_layers=4, num_local_experts=16)
    del ds["num_nextn_predict_layers"]
    t = build_manifest(dict(ds, num_mtp_layers=1), layout="default").tensors
    assert t["model.layers.3.mlp.gate.weight"].shape == (16, 7168)
    assert "model.layers.4.eh_proj.weight" in t
    assert not any(n.startswith("model.layers.4.") for n in build_manifest(ds).tensors)
    # Qwen2-VL vision: num_hidden_layers / num_attention_heads for depth / num_heads.
    vl = {
        "model_type": "qwen2_vl",
        "num_hidden_layers": 1,
        "vision_config": {"num_hidden_layers": 2},
    }
    names = build_manifest(vl).tensors
    assert (
        "visual.blocks.1.attn.qkv.weight" in names
        and "visual.blocks.2.attn.qkv.weight" not in names
    )
    vl25 = {
        "model_type": "qwen2_5_vl",
        "num_hidden_layers": 1,
        "vision_config": {"num_hidden_layers": 3},
    }
    assert "visual.blocks.2.mlp.up_proj.weight" in build_manifest(vl25).tensors


def test_dtype_names() -> None:
    base = {"model_type": "llama", "num_hidden_layers": 1, "vocab_size": 8}
    assert build_manifest(dict(base, torch_dtype="bfloat16")).dtype == "BF16"
    assert build_manifest(dict(base, torch_dtype="float16")).dtype == "F16"
    assert build_manifest(dict(base, dtype="float32", torch_dtype="float16")).dtype == "F32"
    assert build_manifest(base).dtype == "F32"  # transformers' default
    m = build_manifest(dict(base, torch_dtype="float16"))
    assert m.tensors["model.norm.weight"] == ExpectedTensor((4096,), "F16", 8192)


def test_every_family_builds_from_class_defaults() -> None:
    # (derived specs: tests/test_derived.py builds each from its recorded defaults)
    for mt in [m for m in supported_model_types() if spec_of(m).origin == "hand-written"]:
        m = build_manifest({"model_type": mt})
        assert m.tensors, mt
        for lo in layouts({"model_type": mt}):
            other = build_manifest({"model_type": mt}, layout=lo.name)
            if lo.source is None:  # (a lent layout stacks the experts: fewer tensors)
                assert len(other.tensors) == len(m.tensors)
            else:
                assert other.tensors and other.layout == lo.name


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "llama", "num_hidden_layers": 10**12},
        {"model_type": "mixtral", "num_local_experts": 10**7},
        {"model_type": "qwen3_moe", "num_experts": 20000, "num_hidden_layers": 1000},
    ],
    ids=["layers", "experts", "both"],
)
def test_implausible_configs_are_refused(config: dict[str, Any]) -> None:
    # Refused before any tensor is enumerated (no timing threshold: a build that enumerated
    # them would run out the suite's time, not pass).
    with pytest.raises(ManifestError, match="refusing"):
        build_manifest(config)


def test_missing_field_is_a_clear_error() -> None:
    with pytest.raises(ManifestError, match="hidden_size"):
        build_manifest({"model_type": "llama", "hidden_size": None})


# --------------------------------------------------------------------------------------
# Families without a shared copy: published numbers
# --------------------------------------------------------------------------------------

# Qwen/Qwen3-235B-A22B config.json (public): 94 layers, 128 experts.
QWEN3_235B = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "moe_intermediate_size": 1536,
    "num_hidden_layers": 94,
    "num_attention_heads": 64,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "vocab_size": 151936,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "torch_dtype": "bfloat16",
}
# Qwen/Qwen3-30B-A3B config.json (public).
QWEN3_30B = dict(
    QWEN3_235B,
    hidden_size=2048,
    intermediate_size=6144,
    moe_intermediate_size=768,
    num_hidden_layers=48,
    num_attention_heads=32,
    num_key_value_heads=4,
)


# meta-llama/Llama-2-7b-hf config.json (public), saved before transformers 4.31.
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}


def test_llama2_persistent_inv_freq_is_optional() -> None:
    m = build_manifest(LLAMA2_7B)
    # 6738415616 parameters (the Llama 2 paper's "7B"; Hub API safetensors total).
    assert _params(m) == 6738415616
    inv = m.optional["model.layers.31.self_attn.rotary_emb.inv_freq"]
    assert inv == ExpectedTensor((64,), "F32", 256)
    assert not any("inv_freq" in n for n in m.tensors)
    assert len(m.optional) == 32
    # The Llama-2-7b-hf index's total_size, 13476839424, counts those buffers too.
    extra = sum(t.nbytes or 0 for t in m.optional.values())
    assert m.total_bytes + extra == 13476839424


def test_qwen3_moe_published_numbers() -> None:
    m = build_manifest(QWEN3_235B)
    # Hub API safetensors.parameters for Qwen/Qwen3-235B-A22B: {"BF16": 235093634560};
    # its index: 36945 tensors, metadata.total_size 470187269120.
    assert _params_by_dtype(m) == {"BF16": 235093634560}
    assert len(m.tensors) == 36945
    assert m.total_bytes == 470187269120
    # Qwen3-30B-A3B: 30532122624 parameters (Hub API; GGUF general.parameter_count).
    assert _params(build_manifest(QWEN3_30B)) == 30532122624
    t = m.tensors
    assert t["model.layers.0.mlp.gate.weight"].shape == (128, 4096)
    assert t["model.layers.93.mlp.experts.127.down_proj.weight"].shape == (4096, 1536)
    assert t["model.layers.0.self_attn.q_proj.weight"].shape == (64 * 128, 4096)
    assert "model.layers.0.mlp.gate_proj.weight" not in t


def test_qwen3_moe_dense_layers() -> None:
    cfg = dict(QWEN3_30B, num_hidden_layers=4, decoder_sparse_step=2, mlp_only_layers=[3])
    t = build_manifest(cfg).tensors
    # sparse iff i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0: only layer 1
    assert "model.layers.1.mlp.experts.0.up_proj.weight" in t
    for i in (0, 2, 3):
        assert t[f"model.layers.{i}.mlp.up_proj.weight"].shape == (6144, 2048)
        assert f"model.layers.{i}.mlp.gate.weight" not in t


# deepseek-ai/DeepSeek-V3 config.json (public), with its FP8 quantization_config.
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "first_k_dense_replace": 3,
    "moe_layer_freq": 1,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "n_group": 8,
    "topk_group": 4,
    "q_lora_rank": 1536,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "num_nextn_predict_layers": 1,
    "vocab_size": 129280,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
}


def test_deepseek_v3_fp8_matches_published_dtype_breakdown() -> None:
    m = build_manifest(DEEPSEEK_V3)
    assert m.quantization == "fp8"
    # Hub API safetensors.parameters of deepseek-ai/DeepSeek-V3 (and R1): BF16 3918786560,
    # F8_E4M3 680571043840, F32 41555600 (total 684531386000). This covers the MTP layer 61,
    # the 128x128 weight_scale_inv blocks and the float32 e_score_correction_bias.
    assert _params_by_dtype(m) == {
        "BF16": 3918786560,
        "F8_E4M3": 680571043840,
        "F32": 41555600,
    }
    assert m.total_bytes == 3918786560 * 2 + 680571043840 + 41555600 * 4
    # Derived from the structure above (3 dense + 58 MoE + 1 MTP layer, two tensors per
    # FP8 linear); a regression guard rather than an independently published number.
    assert len(m.tensors) == 91991
    t = m.tensors
    assert t["model.layers.0.self_attn.q_b_proj.weight"] == ExpectedTensor(
        (128 * 192, 1536), "F8_E4M3", 128 * 192 * 1536
    )
    assert t["model.layers.0.self_attn.q_b_proj.weight_scale_inv"].shape == (192, 12)
    assert t["model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"].shape == (5, 56)
    assert t["model.layers.3.mlp.gate.e_score_correction_bias"] == ExpectedTensor(
        (256,), "F32", 1024
    )
    assert t["model.layers.3.mlp.gate.weight"].dtype == "BF16"
    assert "model.layers.2.mlp.experts.0.gate_proj.weight" not in t
    assert t["model.layers.2.mlp.gate_proj.weight"].shape == (18432, 7168)
    assert t["model.layers.3.mlp.shared_experts.down_proj.weight"].shape == (7168, 2048)
    # MTP layer (README_WEIGHTS.md): stored as model.layers.61, with its own embedding,
    # enorm/hnorm, eh_proj and shared_head; embedding, head and eh_proj stay BF16.
    assert t["model.layers.61.eh_proj.weight"] == ExpectedTensor(
        (7168, 14336), "BF16", 7168 * 14336 * 2
    )
    for name in (
        "model.layers.61.embed_tokens.weight",
        "model.layers.61.shared_head.head.weight",
    ):
        assert t[name].shape == (129280, 7168) and t[name].dtype == "BF16"
    for name in ("enorm", "hnorm", "shared_head.norm"):
        assert t[f"model.layers.61.{name}.weight"].shape == (7168,)
    assert "model.layers.61.mlp.experts.255.up_proj.weight_scale_inv" in t
    assert "model.layers.62.input_layernorm.weight" not in t
    assert set(m.groups) == {"text", "mtp"}
    assert all(n.startswith("model.layers.61.") for n in m.groups["mtp"])


def test_deepseek_v3_bf16_and_variants() -> None:
    bf16 = {k: v for k, v in DEEPSEEK_V3.items() if k != "quantization_config"}
    m = build_manifest(bf16)
    assert m.quantization is None
    assert not any(n.endswith("_scale_inv") for n in m.tensors)
    assert _params(m) == 3918786560 + 680571043840 + 41555600 - _scale_params(DEEPSEEK_V3)
    no_mtp = build_manifest(dict(bf16, num_nextn_predict_layers=0))
    assert not any(n.startswith("model.layers.61.") for n in no_mtp.tensors)
    # q_lora_rank null: a single q_proj instead of q_a_proj/q_a_layernorm/q_b_proj.
    t = build_manifest(dict(bf16, q_lora_rank=None, num_nextn_predict_layers=0)).tensors
    assert t["model.layers.0.self_attn.q_proj.weight"].shape == (128 * 192, 7168)
    assert not any("q_a_proj" in n or "q_b_proj" in n or "q_a_layernorm" in n for n in t)


def test_deepseek_v3_transformers_layout() -> None:
    config = dict(DEEPSEEK_V3)
    # (module-tree: lent by the derived spec, tests/scan/test_lent_layouts.py)
    assert [lo.name for lo in layouts(config)] == ["default", "transformers>=5", "module-tree"]
    official = build_manifest(config)
    assert official.layout == "default"
    t5 = build_manifest(config, layout="transformers>=5")
    # transformers writes no MTP layer, and the 58 routers in float32 (everything else alike).
    assert set(t5.groups) == {"text"} and set(official.groups) == {"text", "mtp"}
    assert set(t5.tensors) == set(official.tensors) - set(official.groups["mtp"])
    gates = [n for n in t5.tensors if n.endswith(".mlp.gate.weight")]
    assert len(gates) == 58
    assert all(t5.tensors[n] == ExpectedTensor((256, 7168), "F32", 256 * 7168 * 4) for n in gates)
    assert all(official.tensors[n].dtype == "BF16" for n in gates)
    changed = {n for n in t5.tensors if t5.tensors[n] != official.tensors[n]}
    assert changed == set(gates)
    mtp_bytes = sum(official.tensors[n].nbytes or 0 for n in official.groups["mtp"])
    assert t5.total_bytes == official.total_bytes - mtp_bytes + 58 * 256 * 7168 * 2
    assert t5.tensors["model.layers.3.mlp.experts.0.up_proj.weight"].dtype == "F8_E4M3"
    assert t5.tied == official.tied == {}


@pytest.mark.parametrize(
    ("version", "first"),
    [
        (None, "default"),  # the release's own config has 4.x, or no version at all
        ("4.46.3", "default"),
        ("4.57.1", "default"),
        ("5.0.0", "transformers>=5"),
        ("5.24.0", "transformers>=5"),
        ("10.1.0.dev0", "transformers>=5"),
        ("garbage", "default"),
        (5, "default"),
    ],
)
def test_deepseek_v3_default_layout_follows_the_config_writer(version: Any, first: str) -> None:
    config = dict(DEEPSEEK_V3, num_hidden_layers=4)
    if version is not None:
        config["transformers_version"] = version
    assert layouts(config)[0].name == first
    assert build_manifest(config).layout == first
    assert {lo.name for lo in layouts(config)} == {"default", "transformers>=5", "module-tree"}


def _scale_params(config: dict[str, Any]) -> int:
    m = build_manifest(config)
    return sum(math.prod(t.shape or ()) for n, t in m.tensors.items() if n.endswith("_scale_inv"))


_SIGLIP_GEMMA3 = {
    "hidden_size": 1152,
    "image_size": 896,
    "intermediate_size": 4304,
    "model_type": "siglip_vision_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 27,
    "patch_size": 14,
    "vision_use_head": False,
}


def _gemma3(
    hidden: int, inter: int, layers: int, heads: int, kv: int, head_dim: int
) -> dict[str, Any]:
    return {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "torch_dtype": "bfloat16",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": head_dim,
        },
        "vision_config": _SIGLIP_GEMMA3,
    }


@pytest.mark.parametrize(
    ("config", "params"),
    [
        # google/gemma-3-{4b,12b,27b}-it config.json values; parameter counts as published
        # (Hub API / keras-hub presets: 4300079472, 12187325040, 27432406640).
        (_gemma3(2560, 10240, 34, 8, 4, 256), 4300079472),
        (_gemma3(3840, 15360, 48, 16, 8, 256), 12187325040),
        (_gemma3(5376, 21504, 62, 32, 16, 128), 27432406640),
        # google/gemma-3-1b-it (gemma3_text, vocab 262144): 999885952 parameters.
        (
            {
                "model_type": "gemma3_text",
                "hidden_size": 1152,
                "intermediate_size": 6912,
                "num_hidden_layers": 26,
                "num_attention_heads": 4,
                "num_key_value_heads": 1,
                "head_dim": 256,
                "vocab_size": 262144,
            },
            999885952,
        ),
    ],
    ids=["gemma-3-4b", "gemma-3-12b", "gemma-3-27b", "gemma-3-1b"],
)
def test_gemma3_published_parameter_counts(config: dict[str, Any], params: int) -> None:
    m = build_manifest(config)
    assert _params(m) == params
    assert not any("lm_head" in n for n in m.tensors)  # tied by default


def test_gemma3_vision_head_follows_vision_use_head() -> None:
    cfg = _gemma3(2560, 10240, 34, 8, 4, 256)
    cfg["vision_config"] = dict(_SIGLIP_GEMMA3, vision_use_head=True)
    t = build_manifest(cfg).tensors
    assert t["vision_tower.vision_model.head.probe"].shape == (1, 1, 1152)
    assert t["vision_tower.vision_model.head.attention.in_proj_weight"].shape == (3456, 1152)
    assert t["vision_tower.vision_model.head.mlp.fc2.weight"].shape == (1152, 4304)


# --------------------------------------------------------------------------------------
# Quantized checkpoints
# --------------------------------------------------------------------------------------

LLAMA_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def test_bnb_4bit_nf4_double_quant() -> None:
    cfg = dict(
        LLAMA_8B,
        quantization_config={
            "quant_method": "bitsandbytes",
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_quant_storage": "uint8",
            "bnb_4bit_compute_dtype": "bfloat16",
        },
    )
    m = build_manifest(cfg)
    assert m.quantization == "bitsandbytes-4bit-nf4"
    t = m.tensors
    q = "model.layers.0.self_attn.q_proj.weight"
    # A 4096x4096 q_proj saved by bitsandbytes is U8 [8388608, 1] (two 4-bit values a byte).
    assert t[q] == ExpectedTensor((8388608, 1), "U8", 8388608)
    assert t[q + ".absmax"] == ExpectedTensor(None, "U8", None)  # block size not in config
    assert t[q + ".quant_map"] == ExpectedTensor((16,), "F32", 64)
    assert t[q + ".nested_absmax"] == ExpectedTensor(None, "F32", None)
    assert t[q + ".nested_quant_map"] == ExpectedTensor((256,), "F32", 1024)
    assert t[q + ".quant_state.bitsandbytes__nf4"] == ExpectedTensor(None, "U8", None)
    assert t["model.layers.0.mlp.down_proj.weight"].shape == (4096 * 14336 // 2, 1)
    # Not quantized: embeddings, norms, lm_head.
    assert t["model.embed_tokens.weight"].dtype == "BF16"
    assert t["lm_head.weight"] == ExpectedTensor((128256, 4096), "BF16", 128256 * 4096 * 2)
    assert t["model.norm.weight"].dtype == "BF16"
    assert not any(n.startswith("lm_head.weight.") for n in t)
    # 7 linear layers x 32 layers, 6 tensors each, + embed, norm, lm_head, 2 norms x 32.
    assert len(t) == 7 * 32 * 6 + 3 + 2 * 32


def test_bnb_4bit_fp4_without_double_quant() -> None:
    cfg = dict(
        LLAMA_8B,
        quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True},
    )
    t = build_manifest(cfg).tensors
    q = "model.layers.0.self_attn.q_proj.weight"
    assert t[q + ".absmax"].dtype == "F32"
    assert q + ".nested_absmax" not in t and q + ".nested_quant_map" not in t
    assert q + ".quant_state.bitsandbytes__fp4" in t


def test_bnb_8bit() -> None:
    cfg = dict(
        LLAMA_8B,
        quantization_config={
            "quant_method": "bitsandbytes",
            "load_in_8bit": True,
            "llm_int8_skip_modules": ["o_proj"],
        },
    )
    m = build_manifest(cfg)
    assert m.quantization == "bitsandbytes-8bit"
    t = m.tensors
    assert t["model.layers.0.self_attn.q_proj.weight"] == ExpectedTensor(
        (4096, 4096), "I8", 4096 * 4096
    )
    assert t["model.layers.0.self_attn.q_proj.SCB"] == ExpectedTensor((4096,), "F32", 16384)
    # Written by current bitsandbytes, not by every version: optional.
    assert m.optional["model.layers.0.self_attn.q_proj.weight_format"].shape == ()
    assert "model.layers.0.self_attn.q_proj.weight_format" not in t
    # Skipped module stays in the checkpoint dtype.
    assert t["model.layers.0.self_attn.o_proj.weight"].dtype == "BF16"
    assert "model.layers.0.self_attn.o_proj.SCB" not in t


def test_bnb_quantizes_vision_linears_unless_skipped() -> None:
    base = _config("Qwen2.5-VL-7B-Instruct_qwen2_5_vl")
    q = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    t = build_manifest(dict(base, quantization_config=q)).tensors
    assert t["visual.blocks.0.attn.qkv.weight"].dtype == "U8"
    assert t["visual.patch_embed.proj.weight"].dtype == "BF16"  # a Conv3d, not a Linear
    q2 = dict(q, llm_int8_skip_modules=["visual", "lm_head"])
    m2 = build_manifest(dict(base, quantization_config=q2), layout="transformers>=4.52")
    t2 = m2.tensors
    assert t2["model.visual.blocks.0.attn.qkv.weight"].dtype == "BF16"
    assert t2["model.language_model.layers.0.self_attn.q_proj.weight"].dtype == "U8"


# Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4 quantization_config (public).
QWEN25_7B = {
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}


def test_gptq() -> None:
    cfg = dict(
        QWEN25_7B,
        quantization_config={
            "bits": 4,
            "damp_percent": 0.01,
            "desc_act": False,
            "group_size": 128,
            "quant_method": "gptq",
            "static_groups": False,
            "sym": True,
            "true_sequential": True,
        },
    )
    m = build_manifest(cfg)
    assert m.quantization == "gptq-4bit"
    t = m.tensors
    p = "model.layers.0.self_attn.q_proj"
    assert p + ".weight" not in t
    assert t[p + ".qweight"] == ExpectedTensor((3584 // 32 * 4, 3584), "I32", 448 * 3584 * 4)
    assert t[p + ".qzeros"].shape == (3584 // 128, 3584 // 32 * 4)
    assert t[p + ".scales"] == ExpectedTensor((28, 3584), "F16", 28 * 3584 * 2)
    assert t[p + ".g_idx"] == ExpectedTensor((3584,), "I32", 3584 * 4)
    assert t[p + ".bias"] == ExpectedTensor((3584,), "F16", 3584 * 2)
    assert "model.layers.0.self_attn.o_proj.bias" not in t
    d = "model.layers.0.mlp.down_proj"
    assert t[d + ".qweight"].shape == (18944 // 32 * 4, 3584)
    assert t[d + ".qzeros"].shape == (148, 448)
    assert t["lm_head.weight"].dtype == "F16" and t["model.embed_tokens.weight"].dtype == "F16"


def test_awq_gemm_skips_router() -> None:
    mixtral = {
        "model_type": "mixtral",
        "num_hidden_layers": 2,
        "torch_dtype": "float16",
        "quantization_config": {
            "quant_method": "awq",
            "bits": 4,
            "group_size": 128,
            "version": "gemm",
            "zero_point": True,
            "modules_to_not_convert": ["gate"],
        },
    }
    t = build_manifest(mixtral).tensors
    w1 = "model.layers.0.block_sparse_moe.experts.0.w1"
    assert t[w1 + ".qweight"] == ExpectedTensor((4096, 14336 // 8), "I32", 4096 * 1792 * 4)
    assert t[w1 + ".qzeros"].shape == (32, 1792)
    assert t[w1 + ".scales"] == ExpectedTensor((32, 14336), "F16", 32 * 14336 * 2)
    assert w1 + ".g_idx" not in t
    assert t["model.layers.0.block_sparse_moe.gate.weight"] == ExpectedTensor(
        (8, 4096), "F16", 8 * 4096 * 2
    )


def test_awq_other_packings_keep_names_but_not_shapes() -> None:
    cfg = dict(QWEN25_7B, quantization_config={"quant_method": "awq", "bits": 4, "version": "gemv"})
    t = build_manifest(cfg).tensors
    assert t["model.layers.0.self_attn.q_proj.qweight"] == ExpectedTensor(None, "I32", None)


def test_fp8_respects_modules_to_not_convert() -> None:
    cfg = dict(
        QWEN3_30B,
        num_hidden_layers=2,
        quantization_config={
            "quant_method": "fp8",
            "weight_block_size": [128, 128],
            "modules_to_not_convert": ["model.layers.1.self_attn.o_proj"],
        },
    )
    t = build_manifest(cfg).tensors
    assert t["model.layers.0.self_attn.q_proj.weight"].dtype == "F8_E4M3"
    assert t["model.layers.0.self_attn.q_proj.weight_scale_inv"].shape == (32, 16)
    assert t["model.layers.0.mlp.gate.weight"].dtype == "BF16"  # router not converted
    assert t["model.layers.1.self_attn.o_proj.weight"].dtype == "BF16"
    assert "model.layers.1.self_attn.o_proj.weight_scale_inv" not in t


def test_unsupported_quantization_is_an_unknown_architecture() -> None:
    cfg = dict(LLAMA_8B, quantization_config={"quant_method": "hqq"})
    with pytest.raises(UnsupportedQuantization) as info:
        build_manifest(cfg)
    assert isinstance(info.value, UnknownArchitecture)
    assert info.value.model_type == "llama"
    assert "hqq" in str(info.value)


# --------------------------------------------------------------------------------------
# Unknown architectures, model_type_of, load_config, JSON, cache, speed
# --------------------------------------------------------------------------------------


def test_unknown_architecture() -> None:
    with pytest.raises(UnknownArchitecture) as info:
        build_manifest({"model_type": "brand_new_family", "hidden_size": 768})
    assert info.value.model_type == "brand_new_family"
    assert "brand_new_family" in str(info.value)
    with pytest.raises(UnknownArchitecture):
        layouts({"model_type": "brand_new_family"})
    with pytest.raises(UnknownArchitecture) as info2:
        build_manifest({})
    assert info2.value.model_type is None


def test_model_type_of() -> None:
    assert model_type_of({"model_type": "qwen3"}) == "qwen3"
    assert model_type_of({"architectures": ["Qwen2_5_VLForConditionalGeneration"]}) == "qwen2_5_vl"
    assert model_type_of({"architectures": ["SomethingElse"]}) is None
    assert model_type_of({}) is None
    assert {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_vl",
        "qwen2_5_vl",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3_text",
        "phi3",
        "deepseek_v3",
    } <= set(supported_model_types())


def test_load_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert load_config(tmp_path) == {"model_type": "llama"}
    assert load_config(tmp_path / "config.json") == {"model_type": "llama"}
    assert load_config(str(tmp_path)) == {"model_type": "llama"}
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError):
        load_config(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope")


def test_manifest_to_json() -> None:
    m = build_manifest(dict(LLAMA_8B, num_hidden_layers=2))
    j = manifest_to_json(m)
    assert set(j) == {"schema", "model_type", "dtype", "layout", "tensors", "total_bytes"}
    assert j["schema"] == 1 and j["model_type"] == "llama" and j["dtype"] == "BF16"
    assert j["layout"] == "default"
    assert j["tensors"]["model.norm.weight"] == {"shape": [4096], "dtype": "BF16"}
    assert list(j["tensors"]) == list(m.tensors)
    assert j["total_bytes"] == m.total_bytes
    assert json.loads(json.dumps(j)) == j
    qm = build_manifest(
        dict(
            LLAMA_8B,
            num_hidden_layers=1,
            quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True},
        )
    )
    qj = manifest_to_json(qm)
    assert qj["tensors"]["model.layers.0.self_attn.q_proj.weight.absmax"] == {
        "shape": None,
        "dtype": "F32",
    }


def test_cache_returns_independent_copies() -> None:
    cfg = dict(LLAMA_8B, num_hidden_layers=3)
    a = build_manifest(cfg)
    a.tensors.pop("model.norm.weight")
    a.tied["x"] = "y"
    b = build_manifest(copy.deepcopy(cfg))
    assert "model.norm.weight" in b.tensors and "x" not in b.tied
    assert b == build_manifest(cfg)


def test_build_speed_and_cache() -> None:
    config = _config("Qwen2.5-VL-7B-Instruct_qwen2_5_vl")
    fresh = dict(config, _probe=time.time_ns())  # an unseen config: a real build
    t0 = time.perf_counter()
    m = build_manifest(fresh)
    first = time.perf_counter() - t0
    assert len(m.tensors) == 729
    t0 = time.perf_counter()
    for _ in range(100):
        build_manifest(fresh)
    cached = (time.perf_counter() - t0) / 100
    # Generous bounds for a loaded CI machine; typically a few ms and well under 1 ms.
    assert first < 0.25, first
    assert cached < 0.01, cached
    assert cached < first


# --------------------------------------------------------------------------------------
# The expression language
# --------------------------------------------------------------------------------------


def test_expr_evaluates() -> None:
    env = {
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "head_dim": None,
        "layer_types": ["sliding_attention", "full_attention"],
        "q": {"weight_block_size": [128, 64]},
        "mlp_only_layers": [3, 5],
        "flag": False,
    }
    assert evaluate("head_dim or hidden_size // num_attention_heads", env) == 128
    assert evaluate("hidden_size, 2 * hidden_size", env) == (4096, 8192)
    assert evaluate("layer_types[1] == 'full_attention'", env) is True
    assert evaluate("q['weight_block_size'][0]", env) == 128
    assert evaluate("cdiv(1000, q['weight_block_size'][1])", env) == 16
    assert evaluate("3 in mlp_only_layers and 4 not in mlp_only_layers", env) is True
    assert evaluate("1 if flag else 2", env) == 2
    assert evaluate("min(3, 1, 2) + max([4, 9]) + len(layer_types)", env) == 12
    assert evaluate("2 ** 10 % 1000", env) == 24
    assert evaluate("missing is None and not missing", env) is True
    assert evaluate("missing * 2", env) is None  # missing fields propagate as None
    assert evaluate("missing > 3", env) is False
    assert evaluate("layer_types[7]", env) is None
    assert evaluate("-hidden_size", env) == -4096
    assert compile_expr("a + b * a").names == frozenset({"a", "b"})


@pytest.mark.parametrize(
    "source",
    [
        "hidden_size.bit_length()",
        "().__class__",
        "x.__class__.__bases__",
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "eval('1')",
        "getattr(x, 'y')",
        "_private",
        "(lambda: 1)()",
        "[i for i in x]",
        "[i for i in range(3) if i]",
        "[i for i in range(2) for j in range(2)]",
        "[i for i in range(2 ** 30)]",
        "[i for i in range(-1)]",
        "[_i for _i in range(3)]",
        "[i for i in range(y, 3)]",
        "{i: 1 for i in range(3)}",
        "(i for i in range(3))",
        "{'a': 1}",
        "{1, 2}",
        "f'{x}'",
        "(y := 3)",
        "x[1:2]",
        "min(*x)",
        "max(key=1)",
        "x @ y",
        "x / y",
        "2 ** 1000",
        "x; y",
        "import os",
        "b'bytes'",
        "1 +",
    ],
)
def test_expr_rejects_unsafe_or_unsupported(source: str) -> None:
    with pytest.raises(ExprError):
        evaluate(source, {"x": [1, 2], "y": 2, "hidden_size": 4})


def test_expr_list_comprehension_fills_a_per_layer_list() -> None:
    # how transformers fills qwen3_next's layer_types when a config leaves it out
    fill = (
        "layer_types if layer_types is not None else "
        '["full_attention" if (i + 1) % full_attention_interval == 0 else "linear_attention" '
        "for i in range(num_hidden_layers)]"
    )
    env = {"num_hidden_layers": 5, "full_attention_interval": 2}
    assert evaluate(fill, env) == ["linear_attention", "full_attention"] * 2 + ["linear_attention"]
    assert evaluate(fill, {**env, "layer_types": ["x"]}) == ["x"]
    assert evaluate(fill, {"full_attention_interval": 2}) is None  # no layer count: no list
    assert evaluate("[i for i in range(n)]", {"n": 0}) == []
    # the variable is seen by the item only, and shadows a field of the same name there
    assert evaluate("[i * k for i in range(3)]", {"k": 2, "i": 9}) == [0, 2, 4]
    assert evaluate("i", {"i": 9}) == 9


def test_expr_version_helper() -> None:
    assert evaluate("version(v)", {"v": "5.24.0"}) == (5, 24, 0)
    assert evaluate("version(v)", {"v": "4.54.0.dev0"}) == (4, 54, 0)
    assert evaluate("version(v)", {"v": "5"}) == (5,)
    assert evaluate("version(v) >= (5,)", {"v": "5.0.0rc1"}) is True
    assert evaluate("version(v) >= (5,)", {"v": "4.99"}) is False
    for bad in (None, 5, "", "v5", "dev", ["5"]):
        assert evaluate("version(v)", {"v": bad}) is None
        assert evaluate("version(v) >= (5,)", {"v": bad}) is False


def test_expr_true_division_and_log2_helper() -> None:
    # InternVL's projector width reads int(1 / downsample_ratio): true division, as Python's
    # (1 // 0.1 is 9.0, int(1 / 0.1) is 10)
    assert evaluate("int(1 / r) ** 2 * h", {"r": 0.5, "h": 1024}) == 4096
    assert evaluate("int(1 / r)", {"r": 0.1}) == 10
    assert evaluate("1 / r", {"r": 0}) is None  # as a missing dimension, not a crash
    assert evaluate("1 / r", {}) is None
    # phi4_multimodal's audio subsampling: int(math.log2(time_reduction)) - 1 stages
    assert [evaluate("log2(t) - 1", {"t": t}) for t in (2, 4, 8, 9, 16)] == [0, 1, 2, 2, 3]
    for bad in (0, -4, None, "8", True, [8]):
        assert evaluate("log2(t)", {"t": bad}) is None
    with pytest.raises(ExprError):
        evaluate("x / 2", {"x": [1, 2]})


def test_expr_rejects_string_arithmetic_and_overlong_source() -> None:
    with pytest.raises(ExprError):
        evaluate("'a' * 10", {})
    with pytest.raises(ExprError):
        compile_expr("1 + " * 400 + "1")


# --------------------------------------------------------------------------------------
# Grouping names for humans
# --------------------------------------------------------------------------------------


def test_group_names_on_realistic_sets() -> None:
    vl = build_manifest(_config("Qwen2.5-VL-7B-Instruct_qwen2_5_vl"))
    names = list(vl.tensors)
    blocks = [n for n in names if n.startswith("visual.blocks.")]
    assert vl.group_names(blocks) == [("visual.blocks.* (32 blocks)", 384)]
    assert group_names(blocks) == [("visual.blocks.0-31.*", 384)]
    tail = [n for n in names if any(n.startswith(f"model.layers.{i}.") for i in range(20, 28))]
    assert group_names(tail) == [("model.layers.20-27.*", 96)]
    assert vl.group_names([*tail, "model.layers.5.self_attn.q_proj.weight"]) == [
        ("model.layers.5.self_attn.q_proj.weight", 1),
        ("model.layers.20-27.*", 96),
    ]
    biases = [n for n in names if n.endswith("q_proj.bias")]
    assert vl.group_names(biases) == [("model.layers.*.self_attn.q_proj.bias (28 layers)", 28)]
    whole_vision = [n for n in names if n.startswith("visual.")]
    groups = vl.group_names([*whole_vision, "lm_head.weight"])
    assert groups == [
        ("lm_head.weight", 1),
        ("visual.blocks.* (32 blocks)", 384),
        ("visual.merger.ln_q.weight", 1),
        ("visual.merger.mlp.* (2 mlp)", 4),
        ("visual.patch_embed.proj.weight", 1),
    ]

    mx = build_manifest(_config("dolphin-2.5-mixtral-8x7b_mixtral"))
    experts = [
        n
        for n in mx.tensors
        if any(
            n.startswith(f"model.layers.{i}.block_sparse_moe.experts.{e}.")
            for i in range(4)
            for e in (2, 3)
        )
    ]
    assert group_names(experts) == [("model.layers.0-3.block_sparse_moe.experts.2-3.*", 24)]
    one_expert = [n for n in mx.tensors if ".experts.7." in n]
    assert mx.group_names([*one_expert, "model.layers.3.self_attn.q_proj.weight"]) == [
        ("model.layers.*.block_sparse_moe.experts.7.* (32 layers)", 96),
        ("model.layers.3.self_attn.q_proj.weight", 1),
    ]
    all_experts = [n for n in mx.tensors if ".experts." in n]
    assert mx.group_names(all_experts) == [
        ("model.layers.*.block_sparse_moe.experts.* (32 layers x 8 experts)", 768)
    ]
    part = [n for n in mx.tensors if n.startswith("model.layers.5.") and "experts" not in n]
    assert group_names(part) == [("model.layers.5.*", 7)]
    assert mx.group_names(part) == [
        ("model.layers.5.block_sparse_moe.gate.weight", 1),
        ("model.layers.5.input_layernorm.weight", 1),
        ("model.layers.5.post_attention_layernorm.weight", 1),
        ("model.layers.5.self_attn.*", 4),
    ]


def test_group_names_counts_add_up_and_ranges() -> None:
    names = {f"a.{i}.w" for i in (0, 1, 2, 5, 7, 8)} | {"b.weight", "a.3.x", "a.3.w"}
    groups = group_names(names)
    assert sum(c for _, c in groups) == len(names)
    assert groups == [("a.0-3,5,7-8.w", 7), ("a.3.x", 1), ("b.weight", 1)]
    assert group_names([]) == []

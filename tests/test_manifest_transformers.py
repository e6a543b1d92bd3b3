"""pyaudit.manifest against what transformers itself writes.

Tiny models (a few KB) are built from real configs with the installed transformers and
written with ``save_pretrained``; the tensors on disk must be exactly (names, shapes, dtypes)
the manifest of the config transformers wrote beside them, in the layout the auditor picks
(the one most names fit, the first of :func:`layouts` on a tie). Skipped without torch and
transformers (pyaudit itself never imports them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import realdata

from pyaudit.manifest import build_manifest, layouts, load_config
from pyaudit.testing.stores import tiny_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors import safe_open  # noqa: E402  (comes with transformers)
from safetensors.torch import load_file, save_file  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
needs_5 = pytest.mark.skipif(not TRANSFORMERS_5, reason="facts of transformers 5")

SHARED_MODELS = realdata.MODELS
REAL = sorted(p.name for p in SHARED_MODELS.iterdir() if (p / "config.json").is_file())

# Families without a shared config: small configs with the real families' fields.
QWEN3_MOE = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 64,
    "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_experts": 4,
    "num_experts_per_tok": 2, "vocab_size": 256, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "decoder_sparse_step": 1, "mlp_only_layers": [2],
}  # fmt: skip
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 256,
    "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
    "n_shared_experts": 1, "n_routed_experts": 4, "kv_lora_rank": 16, "q_lora_rank": 24,
    "qk_rope_head_dim": 8, "v_head_dim": 16, "qk_nope_head_dim": 16, "n_group": 2,
    "topk_group": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
    "moe_layer_freq": 1, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "num_nextn_predict_layers": 1,  # as in the release: one MTP layer
}  # fmt: skip
SMALL = {"qwen3_moe": QWEN3_MOE, "deepseek_v3": DEEPSEEK_V3}

Disk = dict[str, tuple[str, tuple[int, ...]]]


@pytest.fixture(autouse=True)
def _quiet() -> None:
    transformers.logging.set_verbosity_error()


def _config(family: str) -> dict[str, Any]:
    if family in SMALL:
        return dict(SMALL[family])
    return tiny_config(load_config(SHARED_MODELS / family))


def _read(directory: Path) -> Disk:
    out: Disk = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():  # noqa: SIM118 - safe_open is not a Mapping
                sl = st.get_slice(name)
                out[name] = (sl.get_dtype(), tuple(sl.get_shape()))
    return out


def _model_class(config: dict[str, Any]) -> Any:
    return getattr(transformers, config["architectures"][0])


def _save_fresh(directory: Path, config: dict[str, Any]) -> tuple[dict[str, Any], Disk]:
    """Build the config's model class from the config alone and save_pretrained it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    auto = transformers.AutoConfig.from_pretrained(directory)
    torch.manual_seed(0)
    model = _model_class(config)._from_config(auto, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    return load_config(directory), _read(directory)


def _resave(src: Path, dst: Path) -> tuple[dict[str, Any], Disk]:
    """from_pretrained what is in ``src``, save_pretrained it to ``dst``."""
    config = load_config(src)
    model = _model_class(config).from_pretrained(src, dtype=torch.bfloat16)
    model.save_pretrained(dst)
    return load_config(dst), _read(dst)


def _expected(config: dict[str, Any], layout: str) -> Disk:
    m = build_manifest(config, layout)
    return {n: (t.dtype, t.shape or ()) for n, t in m.tensors.items()}


def _auditor_layout(config: dict[str, Any], names: set[str]) -> str:
    """The layout the auditor holds a checkpoint against: most names fit, first on a tie."""
    lays = layouts(config)
    scores = [sum(1 for n in names if n in build_manifest(config, lo.name).tensors) for lo in lays]
    return lays[scores.index(max(scores))].name


def _assert_fits(config: dict[str, Any], disk: Disk) -> str:
    layout = _auditor_layout(config, set(disk))
    want = _expected(config, layout)
    missing, extra = sorted(set(want) - set(disk)), sorted(set(disk) - set(want))
    assert not missing and not extra, (layout, missing[:5], extra[:5])
    wrong = {n: (disk[n], want[n]) for n in want if disk[n] != want[n]}
    assert not wrong, (layout, dict(list(wrong.items())[:5]))
    return layout


@pytest.mark.parametrize("family", [*REAL, *SMALL])
def test_fresh_save_is_exactly_the_manifest(tmp_path: Path, family: str) -> None:
    if family not in SMALL and not REAL:  # pragma: no cover - parametrize has them
        pytest.skip("no shared configs")
    config, disk = _save_fresh(tmp_path, _config(family))
    _assert_fits(config, disk)


@needs_5
def test_gemma3_all_three_layouts_round_trip(tmp_path: Path) -> None:
    if "medgemma-27b-it_gemma3" not in REAL:
        pytest.skip("medgemma config not found")
    config = _config("medgemma-27b-it_gemma3")
    # Untied, to show where lm_head goes too (transformers 5 ties by the top-level flag).
    config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = False
    saved, disk = _save_fresh(tmp_path / "fresh", config)
    # A model transformers 5 builds itself: the SigLIP tower without vision_model.
    assert _assert_fits(saved, disk) == "transformers>=5"
    assert "vision_tower.post_layernorm.weight" in disk
    assert "language_model.lm_head.weight" in disk
    assert not any(n.startswith("vision_tower.vision_model.") for n in disk)
    values = load_file(tmp_path / "fresh" / "model.safetensors")
    fresh_order = list(build_manifest(saved, "transformers>=5").tensors)

    for layout in ("legacy", "transformers>=4.52", "transformers>=5"):
        # The same weights under this layout's names (a bijection, position by position) ...
        names = list(build_manifest(saved, layout).tensors)
        renamed = {names[fresh_order.index(n)]: t for n, t in values.items()}
        src = tmp_path / layout
        src.mkdir()
        (src / "config.json").write_text(json.dumps(saved))
        save_file(renamed, src / "model.safetensors", metadata={"format": "pt"})
        # ... load (every tensor found: same values back) and save again: same layout.
        resaved, disk2 = _resave(src, tmp_path / (layout + "-resaved"))
        assert _assert_fits(resaved, disk2) == layout
        back = load_file(tmp_path / (layout + "-resaved") / "model.safetensors")
        assert all(torch.equal(back[n], renamed[n]) for n in renamed)


@needs_5
def test_qwen3_moe_config_resaved_with_num_local_experts(tmp_path: Path) -> None:
    saved, disk = _save_fresh(tmp_path, QWEN3_MOE)
    assert "num_experts" not in saved and saved["num_local_experts"] == 4
    m = build_manifest(saved)
    assert m.tensors["model.layers.0.mlp.gate.weight"].shape == (4, 64)
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in disk
    assert "model.layers.2.mlp.up_proj.weight" in disk  # mlp_only_layers kept
    assert m.tensors == build_manifest(QWEN3_MOE).tensors
    assert _assert_fits(saved, disk) == "default"


@needs_5
def test_deepseek_v3_transformers_drops_mtp_and_keeps_router_in_float32(tmp_path: Path) -> None:
    saved, disk = _save_fresh(tmp_path, DEEPSEEK_V3)
    # The config still says one MTP layer; transformers wrote none.
    assert saved["num_nextn_predict_layers"] == 1
    assert saved["transformers_version"].startswith("5.")
    assert not any(n.startswith("model.layers.3.") for n in disk)
    # The class keeps the router (and its correction bias) in float32 ...
    strict = transformers.DeepseekV3PreTrainedModel._keep_in_fp32_modules_strict
    assert "gate.weight" in strict and "e_score_correction_bias" in strict
    assert disk["model.layers.1.mlp.gate.weight"] == ("F32", (4, 64))
    assert disk["model.layers.1.mlp.gate.e_score_correction_bias"] == ("F32", (4,))
    assert disk["model.layers.1.mlp.experts.0.gate_proj.weight"] == ("BF16", (32, 64))
    # ... so the config transformers wrote defaults to its layout, which fits exactly.
    assert [lo.name for lo in layouts(saved)] == ["transformers>=5", "default", "module-tree"]
    assert _assert_fits(saved, disk) == "transformers>=5"
    # The release's layout of the same config still expects the MTP layer, BF16 router.
    official = build_manifest(saved, "default")
    assert official.tensors["model.layers.3.eh_proj.weight"].shape == (64, 128)
    assert official.tensors["model.layers.1.mlp.gate.weight"].dtype == "BF16"
    # A release-style checkpoint beside that config is held against "default".
    assert _auditor_layout(saved, set(official.tensors)) == "default"


@needs_5
@pytest.mark.parametrize("family", ["dolphin-2.5-mixtral-8x7b_mixtral", "qwen3_moe", "deepseek_v3"])
def test_moe_experts_are_saved_unfused_after_a_load(tmp_path: Path, family: str) -> None:
    # transformers 5 fuses experts in memory (gate_up_proj) when it loads; saving reverts it.
    if family not in SMALL and family not in REAL:
        pytest.skip(f"{family} config not found")
    _, disk = _save_fresh(tmp_path / "fresh", _config(family))
    resaved, disk2 = _resave(tmp_path / "fresh", tmp_path / "resaved")
    assert disk2 == disk
    assert not any("gate_up_proj" in n for n in disk2)
    _assert_fits(resaved, disk2)

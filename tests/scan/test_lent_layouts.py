"""Hand-written MoE families in the layout their ``state_dict()`` holds (each layer's experts
stacked in ``mlp.experts.gate_up_proj`` / ``down_proj``: what a plain ``save_file(
model.state_dict())`` writes, as DeepSpeed's and FSDP's consolidations do), which the
hand-written specs never listed: it is lent by the family's spec derived from transformers
(``Layout.source``). Real saves of transformers' own models in it pass; one that lost a
layer's stacked experts fails naming them. Before, all three FAILed healthy as
``base-weights-missing`` + ``unexpected-tensors``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rewrite import rewrite_without

from pyaudit.api import scan
from pyaudit.manifest import build_manifest, layouts, spec_of
from pyaudit.manifest.specs import SPECS

_TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "num_hidden_layers": 3,
}
_MOE = {
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen3_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 16,
        "head_dim": 8,
    },
    "deepseek_v3": {
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 16,
        "first_k_dense_replace": 1,
        "n_group": 1,
        "topk_group": 1,
        "q_lora_rank": 16,
        "kv_lora_rank": 16,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "v_head_dim": 8,
    },
}


def _state_dict_save(out: Path, model_type: str) -> list[str]:
    """A tiny model of ``model_type`` saved as its state_dict() holds it; its names."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    config = transformers.AutoConfig.for_model(model_type, **_TINY, **_MOE[model_type])
    config.dtype = "bfloat16"
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    out.mkdir()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    return sorted(state)


@pytest.mark.parametrize("model_type", sorted(_MOE))
def test_state_dict_save_passes_and_a_lost_layer_fails(tmp_path: Path, model_type: str) -> None:
    names = _state_dict_save(tmp_path / "ok", model_type)
    stacked = [n for n in names if n.endswith("mlp.experts.down_proj")]
    assert stacked and not any(".experts.0." in n for n in names)  # stacked, not per expert
    c = scan([tmp_path / "ok"]).checkpoints[0]
    assert c.status == "pass", [(f.code, f.message) for f in c.findings]
    assert c.layout == "module-tree"

    lost = stacked[-1]
    (tmp_path / "lost").mkdir()
    for f in (tmp_path / "ok").iterdir():
        (tmp_path / "lost" / f.name).write_bytes(f.read_bytes())
    assert rewrite_without(tmp_path / "lost" / "model.safetensors", lambda n: n == lost) == [lost]
    c = scan([tmp_path / "lost"]).checkpoints[0]
    assert c.status == "fail" and c.layout == "module-tree"
    missing = [t for f in c.findings if f.code == "base-weights-missing" for t in f.tensors]
    assert missing == [lost], [(f.code, f.message) for f in c.findings]


@pytest.mark.parametrize("model_type", sorted(_MOE))
def test_lent_layout_is_the_derived_one_and_the_rest_hand_written(model_type: str) -> None:
    from pyaudit.manifest.derived import derived_spec

    hand, derived, spec = SPECS[model_type], derived_spec(model_type), spec_of(model_type)
    assert derived is not None and spec is not None
    assert spec.origin == "hand-written"
    assert spec.layouts[: len(hand.layouts)] == hand.layouts
    [lent] = spec.layouts[len(hand.layouts) :]
    assert lent.name == "module-tree" and lent.source is derived
    assert "derived from transformers" in lent.note


def test_full_size_mixtral_in_the_lent_layout(tmp_path: Path) -> None:
    """The real dolphin-2.5-mixtral-8x7b config.json: its module-tree manifest holds the same
    bytes as its default one (46.7B parameters, bfloat16), 32 layers of stacked experts."""
    import realdata

    config = realdata.load(realdata.MODELS / "dolphin-2.5-mixtral-8x7b_mixtral" / "config.json")
    assert [lay.name for lay in layouts(config)] == ["default", "module-tree"]
    tree, default = build_manifest(config, "module-tree"), build_manifest(config)
    assert tree.total_bytes == default.total_bytes == 93_405_618_176
    gate_up = tree.tensors["model.layers.31.mlp.experts.gate_up_proj"]
    assert gate_up.shape == (8, 2 * 14336, 4096)
    assert not any(".experts.0." in n for n in tree.tensors)
    assert json.dumps(sorted(tree.tensors)) != json.dumps(sorted(default.tensors))


def test_families_without_a_derived_twin_lend_nothing() -> None:
    for model_type, hand in SPECS.items():
        spec = spec_of(model_type)
        assert spec is not None
        extra: tuple[Any, ...] = spec.layouts[len(hand.layouts) :]
        assert all(lay.source is not None and lay.tensors is None for lay in extra)
        if model_type not in _MOE:
            assert extra == (), model_type


def test_a_lent_layout_its_spec_cannot_build_is_not_listed() -> None:
    """DeepSeek-V2-Lite-style configs (q_lora_rank null): the hand-written spec builds them,
    the derived one (class defaults have a q LoRA) does not: no module-tree for them, and
    every layout listed builds."""
    config = {"model_type": "deepseek_v3", "q_lora_rank": None}
    assert [lay.name for lay in layouts(config)] == ["default", "transformers>=5"]
    assert [lay.name for lay in layouts({"model_type": "deepseek_v3"})][-1] == "module-tree"
    for lay in layouts(config):
        assert build_manifest(config, lay.name).tensors

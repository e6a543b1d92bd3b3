"""Older on-disk namings a family still loads, derived from transformers' conversion mapping.

Real public checkpoints are often in a naming transformers 5 no longer writes but still loads:
llava-1.5's index names the vision tower ``vision_tower.vision_model.*`` (a ``PrefixChange``
in transformers' ``conversion_mapping.py``), where a fresh transformers 5 save writes
``vision_tower.*``. The generator derives each such layout as prefix renames of the spec's
names (``"layouts"`` in ``pyaudit/manifest/generated/<family>.json``); these tests hold the
derived manifest in that layout against real indexes, and full-size sparse checkpoints laid
out as those indexes against the audit, without torch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import realdata

from pyaudit.manifest import build_manifest, spec_of
from pyaudit.manifest.derived import GENERATED_DIR, derived_model_types, derived_spec
from pyaudit.testing.stores import manifest_tensors, write_checkpoint

#: Real config.json + index pairs whose index is in a derived layout other than the first,
#: and that layout's name.
LEGACY = {
    "llava-1.5-7b-hf_llava": "legacy",
    "PaliGemma_paligemma": "legacy",  # paligemma-3b-pt-224: vision_tower.vision_model.*
}


#: Real pairs of families with a derived spec (SOURCE.txt beside each).
DERIVED_MODELS = realdata.MODELS.parent / "derived_models"


def _pair(model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    d = DERIVED_MODELS / model
    return realdata.load(d / "config.json"), realdata.load(d / "model.safetensors.index.json")


def _data(model_type: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GENERATED_DIR / f"{model_type}.json").read_text())
    return data


@pytest.mark.parametrize("model", sorted(LEGACY))
def test_real_index_is_the_derived_manifest_in_its_legacy_layout(model: str) -> None:
    config, index = _pair(model)
    spec = spec_of(config["model_type"])
    assert spec is not None and spec.origin.startswith("derived from transformers")
    m = build_manifest(config, LEGACY[model])
    assert m.layout == LEGACY[model]
    assert list(sorted(m.tensors)) == sorted(index["weight_map"])
    assert m.total_bytes == index["metadata"]["total_size"]
    # and not in the layout a fresh transformers 5 save writes
    fresh = build_manifest(config)
    assert fresh.layout == "default" and set(fresh.tensors) != set(index["weight_map"])
    assert fresh.total_bytes == m.total_bytes


def test_llava_15_legacy_layout_is_the_vision_model_prefix() -> None:
    config, index = _pair("llava-1.5-7b-hf_llava")
    names = set(index["weight_map"])
    assert "vision_tower.vision_model.encoder.layers.23.mlp.fc2.weight" in names
    assert "language_model.lm_head.weight" in names
    m = build_manifest(config, "legacy")
    assert m.dtype == "F16"
    assert m.tensors["language_model.model.embed_tokens.weight"].shape == (32064, 4096)
    assert m.tensors["vision_tower.vision_model.embeddings.position_embedding.weight"].shape == (
        577,
        1024,
    )
    # the rule comes from transformers' PrefixChange of CLIPVisionModel, recorded as data
    (legacy,) = [lay for lay in _data("llava")["layouts"] if lay["name"] == "legacy"]
    assert legacy["renames"] == [["vision_tower.", "vision_tower.vision_model."]]
    assert any("PrefixChange" in c for c in legacy["loads_via"])


def _fake(tmp_path: Path, model: str, drop: Any = None) -> tuple[Path, list[str]]:
    """A full-size sparse checkpoint laid out exactly as ``model``'s real index (real headers,
    data as holes), without the tensors ``drop(name)`` selects."""
    config, index = _pair(model)
    tensors = manifest_tensors(config, LEGACY[model])
    weight_map = index["weight_map"]
    removed = sorted(n for n in weight_map if drop is not None and drop(n))
    kept = {n: f for n, f in weight_map.items() if n not in removed}
    out = tmp_path / model
    write_checkpoint(out, config, {n: tensors[n] for n in kept}, weight_map=kept)
    # the real index beside the shards (it still names what was dropped: a save that lost it)
    shutil.copy(DERIVED_MODELS / model / "model.safetensors.index.json", out)
    return out, removed


@pytest.mark.parametrize("model", sorted(LEGACY))
def test_full_size_legacy_checkpoint_passes(tmp_path: Path, scan: Any, model: str) -> None:
    path, _ = _fake(tmp_path, model)
    assert sum(p.stat().st_blocks * 512 for p in path.glob("*.safetensors")) < 64 * 2**20
    rc, report = scan.one(path)
    assert rc == 0 and report["status"] == "pass", report["findings"]
    assert report["findings"] == []
    assert report["layout"] == LEGACY[model]
    _, index = _pair(model)
    total = index["metadata"]["total_size"]
    assert report["bytes"] == {"found": total, "expected": total}
    n = len(index["weight_map"])
    assert report["tensors"] == {"found": n, "expected": n, "missing": 0, "unexpected": 0}


def _missing(report: dict[str, Any]) -> list[str]:
    codes = [f["code"] for f in report["findings"]]
    assert report["status"] == "fail" and "base-weights-missing" in codes, codes
    (f,) = [f for f in report["findings"] if f["code"] == "base-weights-missing"]
    tensors: list[str] = f["tensors"]
    return tensors


@pytest.mark.parametrize("model", sorted(LEGACY))
def test_legacy_checkpoint_missing_one_tensor_fails(tmp_path: Path, scan: Any, model: str) -> None:
    path, removed = _fake(
        tmp_path, model, lambda n: n.endswith("vision_model.encoder.layers.3.mlp.fc1.weight")
    )
    assert len(removed) == 1
    rc, report = scan.one(path)
    assert rc != 0
    assert report["layout"] == LEGACY[model]
    assert _missing(report) == removed  # named in the checkpoint's own naming


@pytest.mark.parametrize("model", sorted(LEGACY))
def test_legacy_checkpoint_missing_one_layer_fails(tmp_path: Path, scan: Any, model: str) -> None:
    path, removed = _fake(tmp_path, model, lambda n: ".layers.7." in n and "language_model" in n)
    assert len(removed) > 3
    rc, report = scan.one(path)
    assert rc != 0
    assert report["layout"] == LEGACY[model]
    assert sorted(_missing(report)) == removed


def test_derived_layouts_are_read_as_the_data_lists_them() -> None:
    """Each derived family's layouts are the data's, after ``default``, in order; a candidate
    left out carries its reason and is no layout; the README's counts are these."""
    with_layouts = merged = own = 0
    for mt in derived_model_types():
        spec = derived_spec(mt)
        assert spec is not None
        data = _data(mt)
        assert spec.layouts[0].name == "default"
        # (then the base-model layout, from base_model_prefix in loading.json)
        assert [
            lay.name for lay in spec.layouts[1:] if not lay.name.startswith("base model (no ")
        ] == [x["name"] for x in data.get("layouts", [])]
        for x in data.get("layouts_skipped", []):
            assert x["reason"] and x["name"] not in [lay.name for lay in spec.layouts]
        if data.get("layouts"):
            with_layouts += 1
        if any("WeightConverter" in x["reason"] for x in data.get("layouts_skipped", [])):
            merged += 1
        if any("tensors" in x for x in data.get("layouts", [])):
            own += 1
    assert with_layouts >= 10
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    text = " ".join(readme.split())
    assert f"{with_layouts} derived families have at least one" in text
    assert f"{own} MoE families have it as a layout with its own entries" in text
    assert f"the other {merged} do today" in text


def _olmoe_config() -> dict[str, Any]:
    """OLMoE at its transformers class defaults (the generated file's), as a config.json."""
    data = _data("olmoe")
    config: dict[str, Any] = json.loads(json.dumps(data["defaults"]))
    config.update(model_type="olmoe", architectures=[data["architecture"]], dtype="bfloat16")
    return config


def test_fused_experts_layout_passes_and_fails(tmp_path: Path, scan: Any) -> None:
    """OLMoE as its state_dict() holds it (what a plain save writes: each layer's experts
    stacked in mlp.experts.gate_up_proj / down_proj) is a layout with its own entries: full
    size it passes, without one layer's stacked experts it fails naming them."""
    config = _olmoe_config()
    tensors = manifest_tensors(config, "module-tree")
    experts, inter, hidden = (
        config[k] for k in ("num_experts", "intermediate_size", "hidden_size")
    )
    assert tensors["model.layers.0.mlp.experts.gate_up_proj"][1] == (experts, 2 * inter, hidden)
    assert not any(".experts.0." in n for n in tensors)
    write_checkpoint(tmp_path / "ok", config, tensors, shards=3)
    rc, report = scan.one(tmp_path / "ok")
    assert rc == 0 and report["status"] == "pass", report["findings"]
    assert report["layout"] == "module-tree"
    total = build_manifest(config, "module-tree").total_bytes
    assert report["bytes"] == {"found": total, "expected": total}

    gone = "model.layers.5.mlp.experts.down_proj"
    write_checkpoint(
        tmp_path / "lost", config, {n: t for n, t in tensors.items() if n != gone}, shards=3
    )
    rc, report = scan.one(tmp_path / "lost")
    assert rc != 0 and report["layout"] == "module-tree"
    assert _missing(report) == [gone]

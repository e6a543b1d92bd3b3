"""Consensus (pyaudit.auditing.consensus): a family nothing knows, and no transformers to ask.

The checkpoints of one scan that share a config.json byte for byte must hold the same tensor
names, shapes and dtypes; one that lacks what at least half of them hold fails, naming it.
Torch-free: "transformers is not installed" is simulated (``pyaudit.oracle._installed`` says
so), and the family is one no transformers knows, so nothing here needs torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyaudit.testing.stores import manifest_tensors, tiny_config, write_checkpoint

QWEN3 = "Qwen3-4B_qwen3"


@pytest.fixture(autouse=True)
def no_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyaudit.oracle as oracle

    monkeypatch.setattr(oracle, "_installed", lambda module: False)


@pytest.fixture
def unknown(real_config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A real qwen3 layout under a model_type no spec (and no transformers) knows."""
    config = tiny_config(real_config(QWEN3))
    tensors = manifest_tensors(config)
    config = {**config, "model_type": "qwen9_next", "architectures": ["Qwen9NextForCausalLM"]}
    return config, tensors


def _by_path(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["path"]: c for c in doc["checkpoints"]}


def test_a_checkpoint_lacking_a_layer_its_siblings_hold_fails(
    tmp_path: Path, unknown: Any, scan: Any
) -> None:
    config, tensors = unknown
    layer1 = {n for n in tensors if n.startswith("model.layers.1.")}
    run = tmp_path / "run"
    for step in (100, 200, 300):
        held = {n: t for n, t in tensors.items() if step != 200 or n not in layer1}
        write_checkpoint(run / f"checkpoint-{step}", config, held, sparse=False)
    rc, doc = scan(run)
    ckpts = _by_path(doc)
    assert rc == 1
    broken = ckpts["checkpoint-200"]
    assert broken["status"] == "fail"
    assert scan.codes(broken) == ["consensus-missing", "unknown-architecture"]
    missing = scan.the(broken, "consensus-missing")
    assert missing["severity"] == "error"
    assert missing["count"] == len(layer1)
    assert set(missing["tensors"]) == layer1
    assert "model.layers.1." in missing["message"] and "3 checkpoints" in missing["message"]
    note = scan.the(broken, "unknown-architecture")["message"]
    assert "consensus with the 2 other checkpoints sharing its config.json" in note
    for step in (100, 300):
        ok = ckpts[f"checkpoint-{step}"]
        assert ok["status"] == "warn" and scan.codes(ok) == ["unknown-architecture"]
        message = scan.the(ok, "unknown-architecture")["message"]
        agree = "consensus with the 2 other checkpoints sharing its config.json (names, shapes"
        assert agree + " and dtypes agree)" in message


def test_the_warning_says_what_was_and_was_not_checked(
    tmp_path: Path, unknown: Any, scan: Any
) -> None:
    config, tensors = unknown
    write_checkpoint(tmp_path / "alone", config, tensors, shards=2, sparse=False)
    rc, doc = scan(tmp_path / "alone")
    (report,) = doc["checkpoints"]
    assert rc == 0 and report["status"] == "warn"
    assert "oracle" not in doc["summary"]  # never asked
    message = scan.the(report, "unknown-architecture")["message"]
    assert "no manifest spec for model_type 'qwen9_next'" in message
    assert "no transformers oracle (torch and transformers are not installed)" in message
    assert "Checked: the index's tensor names and total_size, each file's header and extents" in (
        message
    )
    assert "no consensus check (no other checkpoint in this scan shares its config.json)" in (
        message
    )
    assert "Not checked: each tensor's name, shape and dtype against what the model holds" in (
        message
    )
    assert "pip install 'pyaudit[hf]'" in message


def test_another_config_is_never_held_against_them(
    tmp_path: Path, unknown: Any, scan: Any
) -> None:
    config, tensors = unknown
    other = {**config, "num_hidden_layers": 1}
    one_layer = {n: t for n, t in tensors.items() if not n.startswith("model.layers.1.")}
    write_checkpoint(tmp_path / "a" / "checkpoint-1", config, tensors, sparse=False)
    write_checkpoint(tmp_path / "a" / "checkpoint-2", config, tensors, sparse=False)
    write_checkpoint(tmp_path / "b" / "checkpoint-1", other, one_layer, sparse=False)
    rc, doc = scan(tmp_path)
    assert rc == 0
    ckpts = _by_path(doc)
    assert [c["status"] for c in doc["checkpoints"]] == ["warn"] * 3
    lone = scan.the(ckpts["b/checkpoint-1"], "unknown-architecture")["message"]
    assert "no consensus check" in lone
    pair = scan.the(ckpts["a/checkpoint-2"], "unknown-architecture")["message"]
    assert "consensus with the 1 other checkpoint sharing its config.json" in pair


def test_of_two_the_one_lacking_what_the_other_holds_fails(
    tmp_path: Path, unknown: Any, scan: Any
) -> None:
    config, tensors = unknown
    write_checkpoint(tmp_path / "checkpoint-1", config, tensors, sparse=False)
    held = {n: t for n, t in tensors.items() if n != "model.norm.weight"}
    write_checkpoint(tmp_path / "checkpoint-2", config, held, sparse=False)
    rc, doc = scan(tmp_path)
    ckpts = _by_path(doc)
    assert rc == 1
    assert ckpts["checkpoint-1"]["status"] == "warn"
    assert scan.the(ckpts["checkpoint-2"], "consensus-missing")["tensors"] == ["model.norm.weight"]


def test_a_shape_or_dtype_most_disagree_with_fails(
    tmp_path: Path, unknown: Any, scan: Any
) -> None:
    config, tensors = unknown
    name = "model.layers.0.mlp.down_proj.weight"
    dtype, shape = tensors[name]
    odd = {**tensors, name: ("F32" if dtype != "F32" else "F16", shape)}
    for step, held in ((1, tensors), (2, odd), (3, tensors)):
        write_checkpoint(tmp_path / f"checkpoint-{step}", config, held, sparse=False)
    rc, doc = scan(tmp_path)
    ckpts = _by_path(doc)
    assert rc == 1
    mismatch = scan.the(ckpts["checkpoint-2"], "consensus-mismatch")
    assert mismatch["tensors"] == [name] and mismatch["severity"] == "error"
    assert all(ckpts[f"checkpoint-{s}"]["status"] == "warn" for s in (1, 3))


def test_no_oracle_says_so_and_how_to_turn_it_on(
    tmp_path: Path, unknown: Any, scan: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyaudit.oracle as oracle

    monkeypatch.setattr(oracle, "_installed", lambda module: True)  # installed, but off
    config, tensors = unknown
    write_checkpoint(tmp_path, config, tensors, sparse=False)
    rc, report = scan.one(tmp_path, "--no-oracle")
    message = scan.the(report, "unknown-architecture")["message"]
    assert rc == 0
    assert "the transformers oracle is off (--no-oracle)" in message
    assert "run without --no-oracle" in message

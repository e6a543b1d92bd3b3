"""pyaudit.runfiles with ``fetched``: run files' bytes read elsewhere (a remote store's), by
path, answer a read before the disk does; a path they do not hold is read from the disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyaudit import runfiles
from pyaudit.runs import find_run_args


def test_held_bytes_answer_before_the_disk(tmp_path: Path) -> None:
    placeholder = tmp_path / "config.json"
    placeholder.write_bytes(b"\0" * 40)  # what a remote mirror holds where nothing was written
    other = tmp_path / "other.json"
    other.write_text('{"on": "disk"}')
    fetched = {str(placeholder): b'{"model_type": "qwen2"}'}

    assert runfiles.read_bytes(placeholder, fetched) == b'{"model_type": "qwen2"}'
    assert runfiles.load_json(placeholder, fetched=fetched) == ({"model_type": "qwen2"}, None)
    assert runfiles.load_json(other, fetched=fetched) == ({"on": "disk"}, None)
    doc, problem = runfiles.load_json(placeholder)  # without them: the placeholder's zeros
    assert doc is None and problem is not None and problem.code == "invalid-file"
    assert runfiles.read_bytes(tmp_path / "absent.json", fetched) is None


def test_held_bytes_are_held_to_the_same_bounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runfiles, "MAX_BYTES", 8)
    path = str(tmp_path / "args.json")
    why = runfiles.read_bytes(path, {path: b'{"a": 1234567}'})
    assert isinstance(why, str) and "more than such a file ever holds" in why
    assert runfiles.load_yaml_scalars(path, {path: b"a: 1\n"}) == ({"a": "1"}, None)


def test_run_arguments_above_a_checkpoint_are_read_from_held_bytes(tmp_path: Path) -> None:
    """As a remote scan's audit finds an ms-swift run's args.json one directory up: the
    mirror's placeholder is never parsed."""
    run = tmp_path / "output" / "v0-20250101-000000"
    ckpt = run / "checkpoint-10"
    ckpt.mkdir(parents=True)
    (run / "args.json").write_bytes(b"\0" * 64)
    args = {"train_type": "lora", "model": "Qwen/Qwen2.5-0.5B"}
    fetched = {str(run / "args.json"): json.dumps(args).encode()}

    found = find_run_args(ckpt, tmp_path, fetched=fetched)
    assert found.args == args and found.args_path == run / "args.json" and not found.problems
    unheld = find_run_args(ckpt, tmp_path)
    assert unheld.args is None and [p.code for p in unheld.problems] == ["invalid-file"]

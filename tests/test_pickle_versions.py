"""torch.save files written by several torch versions (tests/data/torch_saves, each with
what that torch's own torch.load(weights_only=True) said), read by the native reader: the
same names, dtypes, shapes, strides and storage offsets, every storage record present and
long enough, and no global beyond torch's own. Runs without torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import realdata

from pyaudit.formats.torch_pickle import read_torch

SAVES = realdata.MODELS.parent / "torch_saves"
FILES = [
    (folder, name)
    for folder in sorted(SAVES.glob("torch-*"))
    for name in json.loads((folder / "expected.json").read_text())
]


def test_several_torch_versions_are_here() -> None:
    assert len({folder.name for folder, _ in FILES}) >= 2


@pytest.mark.parametrize(
    ("folder", "name"), FILES, ids=[f"{f.name}/{n}" for f, n in FILES]
)
def test_reader_says_what_torch_load_said(folder: Path, name: str) -> None:
    want = json.loads((folder / "expected.json").read_text())[name]
    ckpt = read_torch(folder / name)
    assert ckpt.ok, (ckpt.rule, ckpt.message, ckpt.problems())
    got = {
        t.name: [t.dtype, list(t.shape), list(t.stride), t.storage_offset]
        for t in ckpt.tensors()
    }
    assert got == want
    assert ckpt.kind == ("legacy" if name == "legacy.bin" else "zip")
    assert all(s.present and s.record_size >= s.needed_bytes for s in ckpt.storages())
    assert not ckpt.unsafe_globals() and not ckpt.unrecognised_globals()


def test_tied_weights_share_one_storage() -> None:
    for folder in sorted(SAVES.glob("torch-*")):
        tensors = {t.name: t for t in read_torch(folder / "state_dict.bin").tensors()}
        assert tensors["0.weight"].storage_key == tensors["2.weight"].storage_key, folder

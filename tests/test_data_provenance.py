"""Every real metadata file under tests/data carries its provenance and is the file it names.

Each ``SOURCE.txt`` line ``NAME: ... git blob SHA`` says which public repository, path and commit
the file ``NAME`` beside it was copied from; ``SHA`` is git's blob id, so the copy is checked
byte for byte here (``git hash-object NAME`` gives the same id).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import realdata

DATA = realdata.MODELS.parent
SOURCE_LINE = re.compile(r"^(?P<name>[^\s:]+): .*?git blob (?P<blob>[0-9a-f]{40})", re.M)


def _blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sources() -> list[Path]:
    return sorted(DATA.rglob("SOURCE.txt"))


def _copies() -> list[Path]:
    """SOURCE.txt files of verbatim public copies (they name git blob ids)."""
    return [s for s in _sources() if SOURCE_LINE.search(s.read_text())]


def _written_here() -> list[Path]:
    """SOURCE.txt files of data written here by a real tool (they name the script that did)."""
    return [s for s in _sources() if not SOURCE_LINE.search(s.read_text())]


def test_the_data_is_in_the_repository() -> None:
    assert len(realdata.model_dirs()) >= 12
    assert len(_copies()) >= 16


@pytest.mark.parametrize("source", _written_here(), ids=lambda p: str(p.parent.relative_to(DATA)))
def test_data_written_here_names_its_writer_and_script(source: Path) -> None:
    text = source.read_text()
    scripts = [p.name for p in source.parent.glob("*.py")]
    assert scripts, f"{source}: no script beside the data says how it was written"
    assert any(name in text for name in scripts), f"{source} does not name {scripts}"
    assert "writer" in text or "written by" in text.lower(), source


@pytest.mark.parametrize("source", _copies(), ids=lambda p: str(p.parent.relative_to(DATA)))
def test_every_file_is_the_blob_its_source_names(source: Path) -> None:
    claims = {m["name"]: m["blob"] for m in SOURCE_LINE.finditer(source.read_text())}
    data_files = {p.name for p in source.parent.iterdir() if p.is_file() and p.name != "SOURCE.txt"}
    assert data_files, source
    # every data file has a provenance line, and every file that is there is that blob
    assert data_files <= set(claims), f"{source}: no provenance for {data_files - set(claims)}"
    for name in data_files:
        assert _blob_id(source.parent / name) == claims[name], f"{source.parent / name}"

"""`inspect --json` of a huge header is streamed, and says exactly what the small path says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyaudit import cli
from pyaudit.cli import main


def test_a_huge_metadata_header_streams_the_same_json(
    stkit: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np

    metadata = {f"k{i:06d}": f'v\u00e9{i}"x' for i in range(20_000)}
    path = tmp_path / "meta.safetensors"
    path.write_bytes(stkit.save({"t": np.zeros(2, np.float32)}, metadata))  # type: ignore[attr-defined]
    outputs = []
    for threshold in (0, 1 << 40):  # streamed, then whole
        monkeypatch.setattr(cli, "STREAM_JSON_ABOVE", threshold)
        assert main(["inspect", "--json", str(path)]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    doc = json.loads(outputs[0])
    assert doc["metadata"] == metadata and doc["ok"] is True

"""`pyaudit inspect` of a sharded training state's folder, on real trees accelerate and
DeepSpeed wrote (tests/frameworks/data): what the records hold, read as data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pyaudit.cli import main

FRAMEWORKS = Path(__file__).resolve().parent / "frameworks" / "data"
ZERO3 = FRAMEWORKS / "deepspeed-0.19.8" / "zero3-gather-false" / "global_step2"
DCP = FRAMEWORKS / "accelerate-1.16.0-fsdp2" / "fsdp2-accelerate-sharded" / "pytorch_model_fsdp_0"


def inspect(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    rc = main(["inspect", "--json", str(path)])
    return rc, json.loads(capsys.readouterr().out)


def test_deepspeed_step(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, doc = inspect(capsys, ZERO3)
    assert rc == 0 and doc["format"] == "deepspeed" and doc["ok"] is True
    assert (doc["stage"], doc["ds_version"], doc["world_size"]) == (3, "0.19.8", 1)
    assert doc["parameters"] == 21
    assert doc["partition_elements"] == {"0": doc["parameter_elements"]}
    # its optimizer partition gone: not complete, and the rank named
    copy = Path(shutil.copytree(ZERO3, tmp_path / "global_step2"))
    next(copy.glob("*_optim_states.pt")).unlink()
    rc, doc = inspect(capsys, copy)
    assert rc == 1 and doc["ok"] is False and doc["optimizer_files"] == []


def test_dcp_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, doc = inspect(capsys, DCP)
    assert rc == 0 and doc["format"] == "dcp" and doc["ok"] is True
    tensors = doc["tensors"]
    assert isinstance(tensors, dict) and len(tensors) == 21
    assert all(name.startswith("model.") for name in tensors)
    copy = Path(shutil.copytree(DCP, tmp_path / "pytorch_model_fsdp_0"))
    gone = sorted(copy.glob("*.distcp"))[0]
    gone.unlink()
    rc, doc = inspect(capsys, copy)
    assert rc == 1 and doc["files"][gone.name] is None  # type: ignore[index]
    assert any(p["rule"] == "storage-missing" for p in doc["problems"])  # type: ignore[union-attr]


def test_other_folders_are_for_scan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["inspect", str(tmp_path)]) == 2
    assert "use `pyaudit scan`" in capsys.readouterr().err

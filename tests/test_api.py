"""The Python API: pyaudit.scan / pyaudit.audit return the data of `scan --json`, typed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import pyaudit
from pyaudit.cli import main

STORE = Path(__file__).resolve().parents[1] / "examples" / "store"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    if not STORE.is_dir():
        pytest.skip("examples/store is not in this tree")
    out = tmp_path / "store"
    shutil.copytree(STORE, out)
    return out


def test_scan_matches_the_cli_json(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = pyaudit.scan(store)
    assert main(["scan", "--json", str(store)]) == 1
    cli = json.loads(capsys.readouterr().out)
    api = report.to_json()
    for doc in (cli, api):
        doc["summary"].pop("seconds")
    assert api == cli
    assert not report.ok
    assert {c.path for c in report.failed} == {
        c["path"] for c in cli["checkpoints"] if c["status"] == "fail"
    }


def test_audit_one_checkpoint_and_the_seed_story(store: Path) -> None:
    grpo = store / "output" / "v1-20250601-090000" / "checkpoint-50"
    report = pyaudit.audit(grpo)
    (checkpoint,) = report.checkpoints
    assert checkpoint.path == str(grpo)
    assert checkpoint.kind == "adapter" and checkpoint.status == "fail"
    codes = [f.code for f in checkpoint.findings]
    assert "intent-mismatch" in codes and "adapter-only" in codes
    assert [c for c, f in report.findings("error") if f.code == "intent-mismatch"] == [checkpoint]


def test_expect_and_fail_on_change_the_verdict(store: Path) -> None:
    fp32 = store / "fp32-export"
    assert pyaudit.audit(fp32).ok  # dtype drift is a warning
    assert not pyaudit.audit(fp32, fail_on="warning").ok
    merged = store / "output" / "v0-20250530-100000" / "checkpoint-200-merged"
    assert pyaudit.audit(merged).ok
    assert not pyaudit.audit(merged, expect="adapter").ok


def test_bad_arguments_raise_at_the_edge(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        pyaudit.scan(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="expect"):
        pyaudit.scan(tmp_path, expect="half")  # type: ignore[arg-type]

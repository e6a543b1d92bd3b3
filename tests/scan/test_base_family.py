"""``--base`` of another family than the checkpoint's own: a finding that says so, and the
checkpoint's own model in the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STORE = Path(__file__).resolve().parents[2] / "examples" / "store"
MERGED = STORE / "output" / "v0-20250530-100000" / "checkpoint-200-merged"  # qwen2_5_vl


def test_base_of_another_family_is_a_finding(scan: Any) -> None:
    rc, report = scan.one(MERGED, "--base", STORE / "fp32-export")  # a qwen3 export
    assert rc == 1
    f = scan.the(report, "base-mismatch")
    assert f["severity"] == "error"
    assert "qwen3" in f["message"] and "qwen2_5_vl" in f["message"]
    assert report["model_type"] == "qwen2_5_vl"


def test_base_of_the_same_family_is_not(scan: Any) -> None:
    rc, report = scan.one(MERGED, "--base", MERGED)
    assert rc == 0 and "base-mismatch" not in scan.codes(report)
    assert report["model_type"] == "qwen2_5_vl"

"""What an audit produces and the renderers (``pyaudit.report``) read: the options it ran
with, one report per checkpoint, and a sweep's summary. Plain data, no audit logic."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyaudit.findings import Finding


@dataclass
class AuditOptions:
    expect: str = "auto"  # auto | full | adapter
    base: Path | None = None
    fail_on: str = "error"  # error | warning
    verify_data: bool = False  # also stream tensor bytes: NaN / Inf / all-zero
    oracle: str | None = None  # "transformers": manifests for families without a spec


@dataclass
class FileEntry:
    path: str
    bytes: int
    tensors: int
    ok: bool
    rule: str = "ok"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "bytes": self.bytes, "tensors": self.tensors, "ok": self.ok}
        if not self.ok:
            doc["rule"] = self.rule
        return doc


@dataclass
class CheckpointReport:
    path: str
    status: str = "pass"
    kind: str = "unknown"
    model_type: str | None = None
    layout: str | None = None
    expected_source: str | None = None
    declared: str | None = None
    tensors: dict[str, int | None] = field(
        default_factory=lambda: {"found": 0, "expected": None, "missing": 0, "unexpected": 0}
    )
    bytes: dict[str, int | None] = field(default_factory=lambda: {"found": 0, "expected": None})
    files: list[FileEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "kind": self.kind,
            "model_type": self.model_type,
            "layout": self.layout,
            "expected_source": self.expected_source,
            "declared": self.declared,
            "tensors": dict(self.tensors),
            "bytes": dict(self.bytes),
            "files": [f.to_json() for f in self.files],
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass
class ScanSummary:
    checkpoints: int = 0
    passed: int = 0
    warned: int = 0
    failed: int = 0
    seconds: float = 0.0

    def add(self, report: CheckpointReport) -> None:
        self.checkpoints += 1
        if report.status == "pass":
            self.passed += 1
        elif report.status == "warn":
            self.warned += 1
        else:
            self.failed += 1

    def to_json(self) -> dict[str, object]:
        return {
            "checkpoints": self.checkpoints,
            "pass": self.passed,
            "warn": self.warned,
            "fail": self.failed,
            "seconds": round(self.seconds, 3),
        }

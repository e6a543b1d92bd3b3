"""What an audit produces and the renderers (``pyaudit.report``) read: the options it ran
with, one report per checkpoint, and a sweep's summary. Plain data, no audit logic.

A report and its parts are immutable (frozen dataclasses, tuples, :class:`Counts`):
reports of one sweep share findings through its memo tables, so none may change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyaudit.findings import Finding
from pyaudit.runs import Kind


@dataclass(frozen=True)
class AuditOptions:
    expect: str = "auto"  # auto | full | adapter
    base: Path | None = None
    fail_on: str = "error"  # error | warning
    verify_data: bool = False  # also stream tensor bytes: NaN / Inf / all-zero
    # A family without a spec: "auto" (default) asks the transformers oracle when torch and
    # transformers are installed; "transformers" asks it (and says why not when it cannot);
    # None (--no-oracle) never asks.
    oracle: str | None = "auto"
    # False: the native fast path (auditing.match) never settles a checkpoint, every one
    # takes the reference path (the tests hold the two equal; `scan --no-fast-path`).
    fast_path: bool = True
    # --expect-run PATTERN=KIND: per-run expectations (the last matching pattern wins)
    expect_runs: tuple[tuple[str, Kind], ...] = ()


class Counts(Mapping[str, "int | None"]):
    """A report's counts by name (``found``, ``expected``, ...): a read-only mapping
    (item assignment raises TypeError) that pickles, as a Dask worker's reports must."""

    __slots__ = ("_items",)

    def __init__(
        self, items: Mapping[str, int | None] | Iterable[tuple[str, int | None]] = ()
    ) -> None:
        self._items: dict[str, int | None] = dict(items)

    def __getitem__(self, key: str) -> int | None:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Counts({self._items!r})"

    def __getstate__(self) -> dict[str, int | None]:
        return self._items

    def __setstate__(self, state: dict[str, int | None]) -> None:
        self._items = dict(state)


def _tensor_counts() -> Counts:
    return Counts({"found": 0, "expected": None, "missing": 0, "unexpected": 0})


def _byte_counts() -> Counts:
    return Counts({"found": 0, "expected": None})


@dataclass(frozen=True)
class FileEntry:
    path: str
    bytes: int
    tensors: int
    ok: bool
    rule: str = "ok"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path,
            "bytes": self.bytes,
            "tensors": self.tensors,
            "ok": self.ok,
        }
        if not self.ok:
            doc["rule"] = self.rule
        return doc


@dataclass(frozen=True)
class AdapterSummary:
    """An adapter checkpoint's numbers, each as what it counts. JSON: ``{"tensors": 28,
    "bytes": 65544, "base": {"found": 0, "expected": 57, "bytes_expected": 861060}}``."""

    tensors: int
    bytes: int
    base_found: int = 0
    base_expected: int | None = None
    base_bytes_expected: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "tensors": self.tensors,
            "bytes": self.bytes,
            "base": {
                "found": self.base_found,
                "expected": self.base_expected,
                "bytes_expected": self.base_bytes_expected,
            },
        }


@dataclass(frozen=True)
class CheckpointReport:
    path: str
    status: str = "pass"
    kind: str = "unknown"
    model_type: str | None = None
    layout: str | None = None
    expected_source: str | None = None
    declared: str | None = None
    tensors: Counts = field(default_factory=_tensor_counts)
    bytes: Counts = field(default_factory=_byte_counts)
    files: tuple[FileEntry, ...] = ()
    findings: tuple[Finding, ...] = ()
    # kind "adapter": the adapter's own tensors and bytes, and how much of the base model
    # the checkpoint holds (``tensors``/``bytes`` keep their meaning: all tensors found
    # against the base model's manifest); None for other kinds.
    adapter: AdapterSummary | None = None

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
            "adapter": None if self.adapter is None else self.adapter.to_json(),
        }


@dataclass
class ScanSummary:
    """Counts of a sweep's verdicts, added up as its reports arrive (the one mutable
    record here: it belongs to the caller, never to a report)."""

    checkpoints: int = 0
    passed: int = 0
    warned: int = 0
    failed: int = 0
    seconds: float = 0.0
    remote: dict[str, int] | None = None  # what remote stores were asked (pyaudit.remote)
    oracle: dict[str, object] | None = None  # what the transformers oracle did (when asked)

    def add(self, report: CheckpointReport) -> None:
        self.checkpoints += 1
        if report.status == "pass":
            self.passed += 1
        elif report.status == "warn":
            self.warned += 1
        else:
            self.failed += 1

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "checkpoints": self.checkpoints,
            "pass": self.passed,
            "warn": self.warned,
            "fail": self.failed,
            "seconds": round(self.seconds, 3),
        }
        if self.remote is not None:
            doc["remote"] = self.remote
        if self.oracle is not None:
            doc["oracle"] = self.oracle
        return doc

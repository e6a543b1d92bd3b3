"""The JSON documents of CONTRACT.md."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from pyaudit import __version__
from pyaudit.auditing.results import CheckpointReport

SCHEMA = 1


def scan_json(reports: Iterable[CheckpointReport], summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "pyaudit_version": __version__,
        "checkpoints": [r.to_json() for r in reports],
        "summary": summary,
    }


def checkpoint_line(report: CheckpointReport) -> str:
    """One checkpoint's report as compact JSON (the C encoder; no newline)."""
    return json.dumps(report.to_json(), ensure_ascii=False)


def write_scan_json(out: TextIO, checkpoint_lines: list[str], summary: dict[str, Any]) -> None:
    """``scan_json``'s document, written with one checkpoint a line.

    The same JSON value as ``json.dumps(scan_json(...), indent=2)``, laid out so that
    each checkpoint is one compact line: readable, greppable, and encoded by the C
    encoder (an indented document goes through the pure-Python one: ~0.1 s per 1,000
    checkpoints). The checkpoints are held as these strings, not as report objects.
    """
    head = {"schema": SCHEMA, "pyaudit_version": __version__}
    out.write("{\n")
    for key, value in head.items():
        out.write(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},\n")
    if checkpoint_lines:
        out.write('  "checkpoints": [\n    ')
        out.write(",\n    ".join(checkpoint_lines))
        out.write("\n  ],\n")
    else:
        out.write('  "checkpoints": [],\n')
    out.write(f'  "summary": {json.dumps(summary, ensure_ascii=False)}\n}}\n')

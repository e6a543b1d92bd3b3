"""The JSON documents of CONTRACT.md."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyaudit import __version__
from pyaudit.checkpoint import CheckpointReport

SCHEMA = 1


def scan_json(reports: Iterable[CheckpointReport], summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "pyaudit_version": __version__,
        "checkpoints": [r.to_json() for r in reports],
        "summary": summary,
    }

"""Shared setup of the scan tests: real configs, and `pyaudit scan --json` run in-process.

Test modules cannot import each other (--import-mode=importlib), so the helpers are
handed out as fixtures. Real configs come from tests/data/models, in the repository with
their provenance (tests/support/realdata.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import realdata

from pyaudit.cli import main


def _timeless(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "summary": {k: v for k, v in doc["summary"].items() if k != "seconds"}}

MODELS = realdata.MODELS


class Scan:
    """Runs ``pyaudit scan --json`` through :func:`pyaudit.cli.main`; reads the report."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: object) -> tuple[int, dict[str, Any]]:
        """Every scan runs twice: as shipped, then with the native fast path
        (pyaudit.auditing.match) off (``--no-fast-path``). Each scan has its own memo
        tables (an AuditCache), so the second starts from empty ones. The two must agree
        to the byte."""
        rc, doc = self._run(args)
        reference_rc, reference = self._run((*args, "--no-fast-path"))
        assert (rc, _timeless(doc)) == (reference_rc, _timeless(reference))
        return rc, doc

    def _run(self, args: tuple[object, ...]) -> tuple[int, dict[str, Any]]:
        self.capsys.readouterr()
        rc = main(["scan", "--json", *map(str, args)])
        out = self.capsys.readouterr().out
        return rc, json.loads(out)

    def one(self, *args: object) -> tuple[int, dict[str, Any]]:
        """Scan a PATH that holds exactly one checkpoint: (exit status, its report)."""
        rc, doc = self(*args)
        assert len(doc["checkpoints"]) == 1, [c["path"] for c in doc["checkpoints"]]
        return rc, doc["checkpoints"][0]

    @staticmethod
    def codes(ckpt: dict[str, Any]) -> list[str]:
        return sorted(f["code"] for f in ckpt["findings"])

    @staticmethod
    def the(ckpt: dict[str, Any], code: str) -> dict[str, Any]:
        """The one finding with ``code`` (fails when there are none or several)."""
        hits = [f for f in ckpt["findings"] if f["code"] == code]
        assert len(hits) == 1, (code, ckpt["findings"])
        return hits[0]


@pytest.fixture
def scan(capsys: pytest.CaptureFixture[str]) -> Scan:
    return Scan(capsys)


@pytest.fixture(scope="session")
def models() -> Path:
    return MODELS


def _json_loader(models: Path, relative: str) -> Any:
    """name -> the JSON document at ``models / name / relative`` (a fresh dict each
    call)."""

    def load(name: str) -> dict[str, Any]:
        path = models / name / relative
        with open(path) as f:
            doc: dict[str, Any] = json.load(f)
        return doc

    return load


@pytest.fixture(scope="session")
def real_config(models: Path) -> Any:
    """real_config("Qwen3-4B_qwen3") -> that model's config.json (a fresh dict each call)."""
    return _json_loader(models, "config.json")


@pytest.fixture(scope="session")
def real_index(models: Path) -> Any:
    """real_index("Qwen3-4B_qwen3") -> that model's model.safetensors.index.json."""
    return _json_loader(models, "model.safetensors.index.json")


@pytest.fixture(scope="session")
def real_adapter_config(models: Path) -> Any:
    """real_adapter_config(name) -> adapters/<name>/adapter_config.json."""
    return _json_loader(models / "adapters", "adapter_config.json")

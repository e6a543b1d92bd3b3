"""The audit's state is explicit: reports and findings are immutable, memo tables live in
one AuditCache passed in, and nothing one scan hands out can change another report.

Before, memoised Finding objects were shared and mutable: changing one checkpoint's
finding changed every other checkpoint's report with the same contents, and a later scan
in the same process. Here two checkpoints of identical (faulty) contents share findings
through the cache, as they should, and every attempt to change one raises.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import realdata

from pyaudit.auditing.cache import AuditCache
from pyaudit.auditing.results import AuditOptions, CheckpointReport
from pyaudit.findings import Bytes
from pyaudit.report.sizes import human_bytes
from pyaudit.sweep import scan as sweep_scan
from pyaudit.testing.sparse import tensor_nbytes
from pyaudit.testing.stores import manifest_tensors, tiny_config, write_checkpoint

CONFIG = realdata.MODELS / "Qwen2.5-VL-7B-Instruct_qwen2_5_vl" / "config.json"
DROPPED = "model.norm.weight"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Two checkpoints of one run, byte-identical, each missing the final norm and with one
    tensor saved in F32 where the config says BF16 (base-weights-missing, dtype-drift)."""
    config = tiny_config(json.loads(CONFIG.read_text()))
    tensors = manifest_tensors(config)
    dropped_bytes = tensor_nbytes(*tensors.pop(DROPPED))
    first = next(iter(tensors))
    tensors[first] = ("F32", tensors[first][1])
    for step in (10, 20):
        write_checkpoint(tmp_path / "run" / f"checkpoint-{step}", config, tensors, shards=2)
    (tmp_path / "dropped_bytes").write_text(str(dropped_bytes))
    return tmp_path / "run"


def _scan(store: Path, cache: AuditCache | None = None) -> list[CheckpointReport]:
    return list(sweep_scan([str(store)], AuditOptions(), cache=cache))


def _mutations(report: CheckpointReport) -> list[tuple[str, Any]]:
    """Every way a caller might try to change a report or its parts."""
    finding = report.findings[0]
    entry = report.files[0]
    return [
        ("finding message", lambda: setattr(finding, "message", "changed")),
        ("finding tensors", lambda: finding.tensors.append("x")),  # type: ignore[attr-defined]
        ("finding count", lambda: setattr(finding, "count", 0)),
        ("report findings", lambda: report.findings.append(finding)),  # type: ignore[attr-defined]
        ("report status", lambda: setattr(report, "status", "pass")),
        ("report counts", lambda: report.tensors.__setitem__("found", 0)),  # type: ignore[attr-defined]
        ("report bytes", lambda: report.bytes.__setitem__("found", 0)),  # type: ignore[attr-defined]
        ("file entry", lambda: setattr(entry, "ok", False)),
        ("report files", lambda: report.files.append(entry)),  # type: ignore[attr-defined]
    ]


def test_shared_findings_cannot_be_changed(store: Path) -> None:
    a, b = _scan(store)
    assert a.status == b.status == "fail"
    assert {f.code for f in a.findings} >= {"base-weights-missing", "dtype-drift"}
    # The cache hands both checkpoints the same comparison: the findings are shared.
    shared = [f for f in a.findings if any(f is g for g in b.findings)]
    assert {f.code for f in shared} >= {"base-weights-missing", "dtype-drift"}
    before = b.to_json()
    for what, mutate in _mutations(a):
        with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
            mutate()
        assert b.to_json() == before, what
    assert a.to_json() == {**before, "path": a.path}


def test_a_second_scan_is_unaffected_and_shares_nothing(store: Path) -> None:
    first = _scan(store)
    expected = [r.to_json() for r in first]
    for report in first:
        for _, mutate in _mutations(report):
            with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
                mutate()
    second = _scan(store)
    assert [r.to_json() for r in second] == expected
    # Each scan has its own cache: no finding object crosses from one to the other.
    ids = {id(f) for r in first for f in r.findings}
    assert not any(id(f) in ids for r in second for f in r.findings)


def test_one_cache_serves_several_threads(store: Path) -> None:
    """A cache may be shared by threads (each table takes a lock): the same reports."""
    expected = [r.to_json() for r in _scan(store, AuditCache())]
    cache = AuditCache()
    results: list[list[dict[str, Any]]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(5):
                results.append([r.to_json() for r in _scan(store, cache)])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 20 and all(r == expected for r in results)


def test_reports_pickle_as_dask_workers_send_them(store: Path) -> None:
    for report in _scan(store):
        copy = pickle.loads(pickle.dumps(report))
        assert copy == report and copy.to_json() == report.to_json()
        assert copy.tensors["found"] == report.tensors["found"]


def test_findings_carry_numbers_as_data(store: Path) -> None:
    """A message states sizes as values (exact bytes); the text shows them rendered."""
    dropped = int((store.parent / "dropped_bytes").read_text())
    a, _ = _scan(store)
    (missing,) = [f for f in a.findings if f.code == "base-weights-missing"]
    values = dict(missing.values)
    assert values["size"] == dropped and isinstance(values["size"], Bytes)
    assert values["missing"] == 1
    assert f"({human_bytes(dropped)})" in missing.message and DROPPED in missing.message
    assert a.to_json()["findings"][0].keys() == {"code", "severity", "message", "count", "tensors"}


def test_the_pipeline_never_imports_the_renderers() -> None:
    """auditing/ and the sweep know nothing of report/; report/ reads auditing.results only."""
    code = (
        "import sys, pyaudit.sweep, pyaudit.auditing.pipeline\n"
        "print(sorted(m for m in sys.modules if m.startswith('pyaudit.report')))\n"
        "import pyaudit.report.table, pyaudit.report.html, pyaudit.report.markdown\n"
        "import pyaudit.report.json_report\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = (
        "import sys, pyaudit.report.table, pyaudit.report.html, pyaudit.report.markdown\n"
        "import pyaudit.report.json_report\n"
        "print(sorted(m for m in sys.modules if m.startswith('pyaudit.auditing')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['pyaudit.auditing', 'pyaudit.auditing.results']"

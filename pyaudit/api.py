"""The Python API scripts use: the same data as `pyaudit scan --json`, as typed objects."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pyaudit.auditing.results import AuditOptions, CheckpointReport, ScanSummary
from pyaudit.discover import is_url
from pyaudit.expected import Expected
from pyaudit.findings import Finding
from pyaudit.oracle import OracleSession
from pyaudit.sweep import load_base

Expect = Literal["auto", "full", "adapter"]


@dataclass
class Report:
    """Every checkpoint audited, and the summary (CONTRACT.md's `scan --json`)."""

    checkpoints: list[CheckpointReport] = field(default_factory=list)
    summary: ScanSummary = field(default_factory=ScanSummary)

    @property
    def ok(self) -> bool:
        """At least one checkpoint, and none fails (the exit status of `pyaudit scan`
        would be 0): a scan that found nothing verified nothing."""
        return self.summary.checkpoints > 0 and self.summary.failed == 0

    @property
    def failed(self) -> list[CheckpointReport]:
        return [c for c in self.checkpoints if c.status == "fail"]

    def findings(self, severity: str | None = None) -> list[tuple[CheckpointReport, Finding]]:
        return [
            (c, f) for c in self.checkpoints for f in c.findings if severity in (None, f.severity)
        ]

    def to_json(self) -> dict[str, Any]:
        from pyaudit.report.json_report import scan_json

        return scan_json(self.checkpoints, self.summary.to_json())


def reports(
    paths: list[str],
    options: AuditOptions,
    jobs: int | None = None,
    base_expected: Expected | None = None,
    *,
    dask: Any = None,
    ordered: bool = True,
    oracle: OracleSession | None = None,
) -> Iterator[CheckpointReport]:
    """The one scan entry of :func:`scan` and ``pyaudit scan``: every checkpoint under
    ``paths`` audited, as its report, in discovery order (``ordered=False``: on a Dask
    cluster, as chunks finish). Local PATHs through :func:`pyaudit.sweep.scan`, URLs
    (``s3://...``) through :func:`pyaudit.remote.scan_paths` (listed before this returns),
    ``dask`` (a scheduler address, ``"local"``, a ``distributed.Client``) through
    :func:`pyaudit.distributed.scan`. ``oracle``: the transformers oracle's session for a
    local scan (the caller owns it: its statistics, its worker stopped on close); default:
    the scan's own."""
    if dask is not None:
        from pyaudit import distributed

        return distributed.scan(
            paths, options, jobs, base_expected, cluster=dask, ordered=ordered
        )
    if any(is_url(p) for p in paths):
        from pyaudit.remote import scan_paths  # sweep.scan, with URLs (s3://...) too

        return scan_paths(paths, options, jobs, base_expected)
    from pyaudit.sweep import scan as local_scan

    return local_scan(paths, options, jobs, base_expected, oracle=oracle)


def scan(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    expect: Expect = "auto",
    base: str | os.PathLike[str] | None = None,
    verify_data: bool = False,
    fail_on: Literal["error", "warning"] = "error",
    jobs: int | None = None,
    oracle: Literal["auto", "transformers"] | None = "auto",
    dask: Any = None,
) -> Report:
    """Audit every checkpoint under ``paths``. Raises FileNotFoundError for a PATH that
    does not exist and ValueError for a bad argument; problems in the files are findings.

    ``dask``: audit on a Dask cluster (a scheduler address, ``"local"``, or a
    ``distributed.Client``): the same report; see :mod:`pyaudit.distributed` for its
    errors (``DaskUnavailable`` is an ImportError, ``ClusterError`` a RuntimeError).

    ``oracle``: a family without a spec gets its manifest from the installed transformers
    (``"auto"``, the default, when torch and transformers are installed; ``"transformers"``;
    ``None``: never), answers cached on disk (``$PYAUDIT_CACHE_DIR/oracle``, else
    ``~/.cache/pyaudit/oracle``); ``report.summary.oracle`` says what it did."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    strs = [os.fspath(p) for p in paths]
    for p in strs:
        if not is_url(p) and not os.path.exists(p):
            raise FileNotFoundError(p)
    if expect not in ("auto", "full", "adapter"):
        raise ValueError(f"expect must be 'auto', 'full' or 'adapter', not {expect!r}")
    if fail_on not in ("error", "warning"):
        raise ValueError(f"fail_on must be 'error' or 'warning', not {fail_on!r}")
    if oracle not in ("auto", "transformers", None):
        raise ValueError(f"oracle must be 'auto', 'transformers' or None, not {oracle!r}")
    options = AuditOptions(
        expect=expect,
        base=Path(base) if base is not None else None,
        fail_on=fail_on,
        verify_data=verify_data,
        oracle=oracle,
    )
    base_expected = load_base(options.base, jobs) if options.base is not None else None
    start = time.perf_counter()
    report = Report()
    with OracleSession() as session:
        audited = reports(strs, options, jobs, base_expected, dask=dask, oracle=session)
        for checkpoint in audited:
            report.summary.add(checkpoint)
            report.checkpoints.append(checkpoint)
    report.summary.seconds = time.perf_counter() - start
    if session.used:
        report.summary.oracle = session.stats.to_json()
    transfer = getattr(audited, "transfer", None)  # remote stores: requests and bytes
    if transfer is not None:
        report.summary.remote = transfer.to_json()
    return report


def audit(
    path: str | os.PathLike[str],
    *,
    expect: Expect = "auto",
    base: str | os.PathLike[str] | None = None,
    verify_data: bool = False,
    fail_on: Literal["error", "warning"] = "error",
    oracle: Literal["auto", "transformers"] | None = "auto",
) -> Report:
    """Audit one checkpoint (or every checkpoint under one PATH)."""
    return scan(
        [path], expect=expect, base=base, verify_data=verify_data, fail_on=fail_on, oracle=oracle
    )

"""`--verify-data`: tensor bytes streamed by the native core, NaN / Inf / all-zero findings."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyaudit import _core
from pyaudit.findings import Finding, finding


@dataclass
class DataResult:
    """One file's data scan: flagged tensors only (clean ones are not listed)."""

    path: str
    header_ok: bool
    error: str | None
    bytes_read: int
    nan: dict[str, int] = field(default_factory=dict)
    inf: dict[str, int] = field(default_factory=dict)
    all_zero: list[str] = field(default_factory=list)


def verify_data(
    paths: Iterable[str | os.PathLike[str]], jobs: int | None = None
) -> list[DataResult]:
    """Stream every tensor of every file (threads across files, GIL released)."""
    strs = [os.fspath(p) for p in paths]
    raw = _core.check_data([os.fsencode(p) for p in strs], jobs or 0)
    out = []
    for path, r in zip(strs, raw, strict=True):
        result = DataResult(
            path=path,
            header_ok=bool(r["header_ok"]),
            error=(r["error"] or None) if r["header_ok"] else r["message"],
            bytes_read=int(r["bytes_read"]),
        )
        for name, nan, inf, zero in r["flagged"]:
            if nan:
                result.nan[name] = int(nan)
            if inf:
                result.inf[name] = int(inf)
            if zero:
                result.all_zero.append(name)
        out.append(result)
    return out


def _counted(names: Mapping[str, int], limit: int = 3) -> str:
    top = sorted(names.items(), key=lambda kv: -kv[1])[:limit]
    shown = ", ".join(f"{n} ({c:,})" for n, c in top)
    return shown + (", ..." if len(names) > limit else "")


def data_findings(results: Mapping[str, DataResult]) -> list[Finding]:
    """Findings for one checkpoint's files (file name -> result)."""
    nan: dict[str, int] = {}
    inf: dict[str, int] = {}
    zeros: list[str] = []
    unread: list[str] = []
    for name, r in sorted(results.items()):
        if r.header_ok and r.error:
            unread.append(f"{name}: {r.error}")
        nan.update(r.nan)
        inf.update(r.inf)
        zeros.extend(r.all_zero)
    out: list[Finding] = []
    if nan:
        out.append(
            finding(
                "nan",
                f"{len(nan)} tensors hold NaN values ({sum(nan.values()):,} in all): "
                f"{_counted(nan)}",
                tensors=sorted(nan, key=lambda n: -nan[n]),
            )
        )
    if inf:
        out.append(
            finding(
                "inf",
                f"{len(inf)} tensors hold Inf values ({sum(inf.values()):,} in all): "
                f"{_counted(inf)}",
                tensors=sorted(inf, key=lambda n: -inf[n]),
            )
        )
    if zeros:
        out.append(finding(
            "all-zeros",
            f"{len(zeros)} tensors are all zeros (e.g. {', '.join(sorted(zeros)[:3])}): never "
            "trained or never written (a sparse or preallocated file?)",
            tensors=sorted(zeros),
        ))
    for line in unread:
        out.append(finding("unreadable", f"tensor data could not be read: {line}"))
    return out

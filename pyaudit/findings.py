"""The finding codes of CONTRACT.md and their severities, in one place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "info"]

#: code -> default severity (CONTRACT.md). A few codes change severity with
#: context (``adapter-only`` is an error under ``--expect full``); the auditor
#: says so explicitly where it makes them.
CODES: dict[str, Severity] = {
    "corrupt-header": "error",
    "lfs-pointer": "error",
    "shard-truncated": "error",
    "shard-missing": "error",
    "index-mismatch": "error",
    "base-weights-missing": "error",
    "adapter-only": "info",
    "intent-mismatch": "error",
    "no-weights": "error",
    "empty-adapter": "error",
    "wrapper-prefix": "error",
    "mixed-layout": "error",
    "adapter-mismatch": "error",
    "empty-tensors": "error",
    "shape-mismatch": "error",
    "dtype-drift": "warning",
    "unmerged-peft": "error",
    "unexpected-tensors": "warning",
    "unknown-architecture": "warning",
    "nan": "error",
    "inf": "error",
    "all-zeros": "warning",
    # Extensions (CONTRACT.md allows new codes; none above is renamed).
    "unreadable": "error",  # a weight file that cannot be opened or read at all
    "index-missing": "error",  # several shards and no index to tie them together
    "stray-weights": "warning",  # a weights file beside an index that does not name it
    "tied-weights-saved": "warning",  # a tied lm_head saved anyway
    "base-not-found": "info",  # an adapter's base model is not available locally
    "shapes-unverified": "info",  # .bin weights: names checked, shapes not (never unpickled)
}

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}
MAX_TENSORS = 20  # names listed per finding; `count` carries the full number


@dataclass
class Finding:
    code: str
    severity: Severity
    message: str
    count: int = 1
    tensors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "count": self.count,
            "tensors": self.tensors,
        }


def finding(
    code: str,
    message: str,
    tensors: Iterable[str] = (),
    count: int | None = None,
    severity: Severity | None = None,
) -> Finding:
    """A finding with the contract's default severity unless told otherwise."""
    if code not in CODES:
        raise KeyError(f"unknown finding code {code!r}")
    names = sorted(tensors) if not isinstance(tensors, list) else tensors
    return Finding(
        code=code,
        severity=severity or CODES[code],
        message=message,
        count=count if count is not None else max(len(names), 1),
        tensors=names[:MAX_TENSORS],
    )


def status_of(findings: Iterable[Finding], fail_on: str = "error") -> str:
    """pass / warn / fail, as CONTRACT.md defines them."""
    worst = max((SEVERITY_RANK[f.severity] for f in findings), default=0)
    if worst == SEVERITY_RANK["error"] or (fail_on == "warning" and worst >= 1):
        return "fail"
    return "warn" if worst == SEVERITY_RANK["warning"] else "pass"

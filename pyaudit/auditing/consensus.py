"""Consensus: where nothing says what a model holds, its siblings in the store still do.

A checkpoint whose family has no spec and no oracle answer (``unknown-architecture``) is
held against the other checkpoints of the same scan that share its ``config.json`` byte for
byte (one run's checkpoints, a sweep's repeats): they must hold the same tensor names, shapes
and dtypes. Torch-free: only the headers the sweep read.

What the group agrees on, for a group of N >= 2 such checkpoints (full weights, every header
valid):

- a name is expected when at least half of the N hold it (2 of 2, 2 of 3, 2 of 4, ...); a
  checkpoint that lacks an expected name gets ``consensus-missing`` (error), naming them;
- a name's shape and dtype are agreed when one (shape, dtype) is held by more of the group
  than any other; a checkpoint holding another one gets ``consensus-mismatch`` (error). A
  tie (1 against 1) makes no claim.

A checkpoint alone with its config gets no consensus claim, and the unknown-architecture
message says so. Checkpoints with another config are never held against each other.

The pass runs after the audits (:class:`Consensus`, fed by :func:`pyaudit.sweep.scan`,
:func:`pyaudit.remote.scan_paths` and :func:`pyaudit.distributed.scan`): the reports it may
amend are held back until the scan's end, then given in discovery order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace

from pyaudit.auditing.results import CheckpointReport
from pyaudit.auditing.structure import is_adapter_file
from pyaudit.discover import CheckpointDir
from pyaudit.expected import UNKNOWN_TEMPLATE
from pyaudit.findings import Finding, Message, finding, status_of
from pyaudit.headers import Header
from pyaudit.manifest import group_names
from pyaudit.units import noun, plural

Table = Mapping[str, tuple[str, tuple[int, ...]]]  # name -> (dtype, shape)

CONFIG_LIMIT = 16 << 20  # a config.json larger than this is not hashed for consensus


@dataclass
class _Held:
    order: int
    report: CheckpointReport
    config: Hashable
    table: Table


class Consensus:
    """Collects the reports a consensus could amend, and amends them at the end
    (:meth:`finish`). ``fail_on``: the scan's, to recompute a report's status."""

    def __init__(self, fail_on: str = "error") -> None:
        self.fail_on = fail_on
        self._held: list[_Held] = []
        self._tables: dict[tuple[object, ...], Table] = {}  # identical headers share one
        self._seen = 0

    @staticmethod
    def wants(ckpt: CheckpointDir, report: CheckpointReport) -> bool:
        """Whether a consensus may amend ``report``: full weights, a config.json, and no
        manifest (unknown-architecture); only then are its headers needed."""
        return (
            report.kind == "full"
            and ckpt.has_config
            and any(f.code == "unknown-architecture" for f in report.findings)
        )

    def hold(
        self,
        ckpt: CheckpointDir,
        headers: Mapping[str, Header],
        digests: Mapping[str, tuple[int, int] | None] | None,
        report: CheckpointReport,
    ) -> bool:
        """Keep ``report`` back when a consensus may amend it (True), else let it go."""
        self._seen += 1
        if not self.wants(ckpt, report):
            return False
        base = [n for n in ckpt.safetensors if not is_adapter_file(n)]
        if not base or not all(headers[n].ok for n in base):
            return False  # what it holds is not fully known (its files' findings say why)
        config = _config_key(ckpt, digests)
        if config is None:
            return False
        key = tuple((headers[n].digest, headers[n].header_size) for n in base)
        table = self._tables.get(key)
        if table is None:
            merged: dict[str, tuple[str, tuple[int, ...]]] = {}
            for n in base:
                names, dtypes, shapes, _ = headers[n].table()
                merged.update(zip(names, zip(dtypes, shapes, strict=True), strict=True))
            table = self._tables[key] = merged
        self._held.append(_Held(self._seen, report, config, table))
        return True

    def finish(self) -> list[CheckpointReport]:
        """The reports held back, amended, in the order they were audited."""
        groups: dict[Hashable, list[_Held]] = {}
        for held in self._held:
            groups.setdefault(held.config, []).append(held)
        out: list[tuple[int, CheckpointReport]] = []
        for members in groups.values():
            for held in members:
                out.append((held.order, self._amend(held, members)))
        self._held.clear()
        return [r for _, r in sorted(out, key=lambda x: x[0])]

    def _amend(self, held: _Held, members: list[_Held]) -> CheckpointReport:
        n = len(members)
        report = held.report
        new: list[Finding] = []
        if n < 2:
            clause = (
                "; no consensus check (no other checkpoint in this scan shares its config.json)"
            )
            gap = "a missing layer can go unnoticed"
        else:
            lacking, mismatched = _disagreements(held.table, [m.table for m in members])
            others = plural(n - 1, "other checkpoint")
            if not lacking and not mismatched:
                verdict = "names, shapes and dtypes agree"
            else:
                verdict = "see consensus-missing" if lacking else "see consensus-mismatch"
            clause = f"; consensus with the {others} sharing its config.json ({verdict})"
            gap = f"a layer missing from all {n} checkpoints of this config goes unnoticed"
            if lacking:
                new.append(_missing_finding(lacking, held.table, members))
            if mismatched:
                new.append(_mismatch_finding(mismatched, n))
        findings = [_with_consensus(f, clause, gap) for f in report.findings]
        findings = new + findings
        return replace(report, findings=tuple(findings), status=status_of(findings, self.fail_on))


def _config_key(
    ckpt: CheckpointDir, digests: Mapping[str, tuple[int, int] | None] | None
) -> Hashable | None:
    """The identity of the checkpoint's config.json bytes: the digest the sweep's reading
    threads took, else a sha256 of the file."""
    known = (digests or {}).get("config.json")
    if known is not None:
        return ("digest", known)
    try:
        with open(ckpt.file("config.json"), "rb") as f:
            data = f.read(CONFIG_LIMIT + 1)
    except OSError:
        return None
    if len(data) > CONFIG_LIMIT:
        return None
    import hashlib  # (here: a sweep whose reading threads gave every digest never needs it)

    return ("sha256", hashlib.sha256(data).hexdigest())


def _disagreements(
    own: Table, tables: list[Table]
) -> tuple[list[str], list[tuple[str, tuple[str, tuple[int, ...]], tuple[str, tuple[int, ...]]]]]:
    """What ``own`` lacks of the names at least half of ``tables`` hold, and the names where
    it holds another (dtype, shape) than the one most of the group holds."""
    n = len(tables)
    distinct = _distinct(tables)
    holders: Counter[str] = Counter()
    for table, k in distinct:
        holders.update(dict.fromkeys(table, k))
    lacking = sorted(name for name, k in holders.items() if 2 * k >= n and name not in own)
    mismatched = []
    for name, value in own.items():
        votes: Counter[tuple[str, tuple[int, ...]]] = Counter()
        for table, k in distinct:
            if name in table:
                votes[table[name]] += k
        (top, k), *rest = votes.most_common()
        if value != top and k > rest[0][1]:  # own's value has a vote: rest is not empty
            mismatched.append((name, value, top))
    return lacking, sorted(mismatched)


def _distinct(tables: list[Table]) -> list[tuple[Table, int]]:
    """Each distinct table object once, with how many members hold it (they share one when
    their headers are identical)."""
    count: dict[int, tuple[Table, int]] = {}
    for t in tables:
        table, k = count.get(id(t), (t, 0))
        count[id(t)] = (table, k + 1)
    return list(count.values())


def _missing_finding(lacking: list[str], own: Table, members: list[_Held]) -> Finding:
    n = len(members)
    holding = sum(1 for m in members if lacking[0] in m.table)
    everything = set(own) | set(lacking)
    groups = group_names(lacking, all_names=everything)
    shown = ", ".join(f"{label} — {k} tensors" if k > 1 else label for label, k in groups[:6])
    more = f" and {len(groups) - 6} more groups" if len(groups) > 6 else ""
    message = Message.of(
        "lacks {count} {tensors} that at least half of the {n} checkpoints sharing its "
        "config.json hold (e.g. {holding} of {n} hold {first}): {shown}{more}",
        count=len(lacking),
        tensors=noun(len(lacking), "tensor"),
        n=n,
        holding=holding,
        first=lacking[0],
        shown=shown,
        more=more,
    )
    return finding("consensus-missing", message, tensors=lacking)


def _mismatch_finding(
    mismatched: list[tuple[str, tuple[str, tuple[int, ...]], tuple[str, tuple[int, ...]]]],
    n: int,
) -> Finding:
    shown = "; ".join(
        f"{name}: {dtype} {list(shape)} where most hold {want_dtype} {list(want_shape)}"
        for name, (dtype, shape), (want_dtype, want_shape) in mismatched[:3]
    )
    more = f"; and {len(mismatched) - 3} more" if len(mismatched) > 3 else ""
    message = Message.of(
        "{count} {tensors} differ in shape or dtype from what most of the {n} checkpoints "
        "sharing its config.json hold: {shown}{more}",
        count=len(mismatched),
        tensors=noun(len(mismatched), "tensor"),
        n=n,
        shown=shown,
        more=more,
    )
    return finding("consensus-mismatch", message, tensors=[m[0] for m in mismatched])


def _with_consensus(f: Finding, clause: str, gap: str) -> Finding:
    """The unknown-architecture finding with what the consensus checked (others as they are)."""
    if f.code != "unknown-architecture" or not f.values:
        return f
    values = dict(f.values)
    if "consensus" not in values:
        return f
    values["consensus"] = clause
    values["gap"] = gap
    return finding(f.code, Message.of(UNKNOWN_TEMPLATE, **values), severity=f.severity)

"""Every memo table of an audit in one object, passed in: :class:`AuditCache`.

A store holds many checkpoints of one model, saved by one writer: their configs, indexes
and shard headers are byte-identical, so what is derived from them is derived once per
cache. Keys are content (bytes, or a header's digest with its sizes, or the identity of an
object the cache itself handed out), never paths, so a table can only return what the same
input would produce; tables are bounded, so memory stays flat however large the store.

What the tables hold is shared between the reports of one cache: immutable (frozen
findings and comparisons, read-only tensor tables) or never handed to a report (parsed
JSON, manifests). Each table takes a lock, so one cache may serve several threads; a sweep
makes its own (``sweep.scan``, ``remote.scan_paths``, one per Dask task), so two scans in
one process share nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyaudit.memo import LRU

if TYPE_CHECKING:
    from pyaudit import _core
    from pyaudit.auditing.compare import Comparison
    from pyaudit.auditing.match import CombinedSpecs, IndexSpecs
    from pyaudit.auditing.structure import FileTable
    from pyaudit.expected import Expected
    from pyaudit.findings import Finding
    from pyaudit.oracle import OracleSession

TABLE_SIZE = 64  # entries per table: a batch's worth of distinct files and configs


class AuditCache:
    """The memo tables of one sweep (or of one audit: the default for a single call).

    ``fast``: the native fast path (:mod:`pyaudit.auditing.match`) may settle a checkpoint
    from counts; with ``fast=False`` every checkpoint takes the reference path, which the
    test suite holds equal to the fast one. ``oracle``: the sweep's
    :class:`~pyaudit.oracle.OracleSession` (the sweep starts and closes it)."""

    def __init__(
        self, fast: bool = True, size: int = TABLE_SIZE, oracle: OracleSession | None = None
    ) -> None:
        self.fast = fast
        # The transformers oracle of the sweep (its worker and disk cache), owned by the
        # sweep; None: each question to the oracle gets a session of its own.
        self.oracle_session = oracle
        # Run files (config, index, adapter config, args), parsed once per content.
        self.json: LRU[dict[str, Any] | str] = LRU(4 * size)  # a document, or why not
        # What to expect: per config object handed out by ``json``, per config content,
        # and per (config, names) asked of the transformers oracle.
        self.expected_by_object: LRU[Expected] = LRU(size)
        self.manifests: LRU[Expected] = LRU(4 * size)
        self.oracle: LRU[Expected] = LRU(size)
        # Structure: per-file tensor tables, the files an index names, the index checks.
        self.file_tables: LRU[FileTable] = LRU(size)
        self.indexed_files: LRU[frozenset[str]] = LRU(size)
        self.index_checks: LRU[tuple[tuple[Finding, ...], dict[str, Any] | None]] = LRU(size)
        self.index_exact: LRU[bool] = LRU(size)
        # Contents: comparisons (fast and reference) and adapter checks.
        self.all_clean: LRU[Comparison | None] = LRU(size)
        self.clean: LRU[Comparison | None] = LRU(size)
        self.comparisons: LRU[Comparison] = LRU(size)
        self.adapter_checks: LRU[tuple[Finding, ...]] = LRU(size)
        # The native tables the fast path matches against.
        self.expected_specs: LRU[list[_core.TensorSpecs] | None] = LRU(size)
        self.index_specs: LRU[IndexSpecs] = LRU(size)
        self.combined_specs: LRU[CombinedSpecs | None] = LRU(size)
        # The table the fast path used last: a sweep's reading threads hold the next
        # batch against it (most checkpoints of a batch are of the same run).
        self.last_table: tuple[_core.TensorSpecs, dict[str, int]] | None = None

    def tables(self) -> dict[str, LRU[Any]]:
        """Every table by name (for tests and for a sweep's statistics)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, LRU)}

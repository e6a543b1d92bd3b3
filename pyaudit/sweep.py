"""Sweeps: every checkpoint under the PATHs given, audited as its headers arrive.

Discovery and header reading overlap: while Python audits one batch of
checkpoints, the native core reads the next batch's headers on its own threads
(the GIL is released there). Memory stays flat: checkpoints stream through.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from pyaudit import _core
from pyaudit.auditing.cache import AuditCache
from pyaudit.auditing.consensus import Consensus
from pyaudit.auditing.pipeline import audit_checkpoint
from pyaudit.auditing.results import AuditOptions, CheckpointReport
from pyaudit.auditing.structure import header_files, run_file_names
from pyaudit.data import DataResult
from pyaudit.data import verify_data as verify_data_files
from pyaudit.discover import CheckpointDir, discover
from pyaudit.expected import Expected, base_expectation
from pyaudit.headers import CACHED_READ, Header, read_headers, reading_threads
from pyaudit.oracle import OracleSession
from pyaudit.runs import PREFETCH_BYTES

if TYPE_CHECKING:
    from pyaudit.auditing.pickled import PickledFiles

BATCH_FILES = 512  # headers per native batch: enough to keep the threads busy
FIRST_BATCH_FILES = 32  # the first batch: the audit waits for it, nothing overlaps it


def batches(
    checkpoints: Iterable[CheckpointDir],
    files_per_batch: int = BATCH_FILES,
    first_batch: int = FIRST_BATCH_FILES,
) -> Iterator[list[CheckpointDir]]:
    """Checkpoints in order, cut into batches of about ``files_per_batch`` weight files;
    the first batches smaller (``first_batch``, doubling), so that auditing starts soon."""
    batch: list[CheckpointDir] = []
    files = 0
    limit = min(first_batch, files_per_batch)
    for ckpt in checkpoints:
        batch.append(ckpt)
        files += max(len(ckpt.safetensors), 1)
        if files >= limit:
            yield batch
            batch, files = [], 0
            limit = min(limit * 2, files_per_batch)
    if batch:
        yield batch


@dataclass
class _Read:
    headers: dict[str, Header]
    data: dict[str, DataResult] | None = None
    digests: dict[str, tuple[int, int] | None] | None = None  # run files: (size, digest)
    ahead: tuple[_core.TensorSpecs, _core.SpecMatch] | None = None  # held against a table


def _batch_paths(batch: list[CheckpointDir]) -> tuple[list[str], list[tuple[int, str, str]]]:
    """A batch's weight files, and its checkpoints' run files (index in the batch, name, path)."""
    headers = [path for ckpt in batch for path in header_files(ckpt)]
    run_files = [
        (i, name, ckpt.file(name)) for i, ckpt in enumerate(batch) for name in run_file_names(ckpt)
    ]
    return headers, run_files


def _reads(
    batch: list[CheckpointDir],
    paths: list[str],
    headers: list[Header],
    run_files: list[tuple[int, str, str]],
    found: list[tuple[int, int] | None],
    data: list[DataResult] | None,
) -> list[_Read]:
    digests: list[dict[str, tuple[int, int] | None]] = [{} for _ in batch]
    for (i, name, _), digest in zip(run_files, found, strict=True):
        digests[i][name] = digest
    by_path = {r.path: r for r in data} if data is not None else None
    out: list[_Read] = []
    at = 0
    for ckpt, known in zip(batch, digests, strict=True):
        n = len(ckpt.safetensors)
        names = ckpt.safetensors
        read = _Read(dict(zip(names, headers[at : at + n], strict=True)), digests=known)
        if by_path is not None:
            read.data = {
                name: by_path[p]
                for name, p in zip(names, paths[at : at + n], strict=True)
                if p in by_path
            }
        out.append(read)
        at += n
    return out


def read_batch(batch: list[CheckpointDir], jobs: int | None, verify_data: bool) -> list[_Read]:
    """A batch's headers and run-file digests (and, with verify_data, its tensor bytes), now."""
    paths, run_files = _batch_paths(batch)
    headers = read_headers(paths, jobs=jobs)
    # The config and index of every checkpoint too, read and hashed off the GIL.
    found = _core.digest_files([os.fsencode(p) for _, _, p in run_files], PREFETCH_BYTES, jobs or 0)
    data = (
        verify_data_files([p for p, h in zip(paths, headers, strict=True) if h.ok], jobs)
        if verify_data
        else None
    )
    return _reads(batch, paths, headers, run_files, found, data)


def load_base(base: Path, jobs: int | None) -> Expected:
    """``--base DIR``: the reference checkpoint's headers, read once for the whole sweep."""
    ckpts = list(islice(discover(str(base)), 1))
    if not ckpts or not ckpts[0].safetensors:
        raise ValueError(f"--base {base}: no .safetensors files there")
    headers = read_headers(header_files(ckpts[0]), jobs=jobs)
    return base_expectation(base, headers)


def scan(
    paths: Iterable[str],
    options: AuditOptions | None = None,
    jobs: int | None = None,
    base_expected: Expected | None = None,
    cache: AuditCache | None = None,
    oracle: OracleSession | None = None,
) -> Iterator[CheckpointReport]:
    """Audit every checkpoint under ``paths``, yielding reports in discovery order.
    ``cache``: the memo tables the audits share (default: this sweep's own).
    ``oracle``: the transformers oracle's session (default: this sweep's own, its worker
    started on first need and stopped when the sweep ends).

    Checkpoints that nothing could say the contents of (``unknown-architecture``: no spec,
    no oracle) are held against the others sharing their config.json
    (:mod:`pyaudit.auditing.consensus`): their reports come after the others', at the end."""
    options = options or AuditOptions()
    with contextlib.ExitStack() as stack:
        if oracle is None and (cache is None or cache.oracle_session is None):
            oracle = stack.enter_context(OracleSession())
        if cache is None:
            cache = AuditCache(fast=options.fast_path, oracle=oracle)
        elif cache.oracle_session is None:
            cache.oracle_session = oracle
        yield from _scan(paths, options, jobs, base_expected, cache)


def _scan(
    paths: Iterable[str],
    options: AuditOptions,
    jobs: int | None,
    base_expected: Expected | None,
    cache: AuditCache,
) -> Iterator[CheckpointReport]:
    if options.base is not None and base_expected is None:
        base_expected = load_base(options.base, jobs)
    checkpoints = (ckpt for path in paths for ckpt in discover(path))
    threads = _Threads(jobs)
    consensus = Consensus(options.fail_on)
    pending: _Ahead | None = None
    pending_batch: list[CheckpointDir] = []
    for batch in batches(checkpoints):
        ahead = _Ahead(batch, threads.next(), options.verify_data, cache)
        if pending is not None:
            reads = threads.saw(pending)
            yield from _unheld(
                consensus, pending_batch, reads, options, base_expected, cache
            )
        pending, pending_batch = ahead, batch
    if pending is not None:
        reads = threads.saw(pending)
        yield from _unheld(consensus, pending_batch, reads, options, base_expected, cache)
    yield from consensus.finish()


def _unheld(
    consensus: Consensus,
    batch: list[CheckpointDir],
    reads: list[_Read],
    options: AuditOptions,
    base_expected: Expected | None,
    cache: AuditCache,
) -> Iterator[CheckpointReport]:
    """A batch's reports, but those the consensus pass keeps back for the scan's end."""
    audited = audit_batch(batch, reads, options, base_expected, cache)
    for ckpt, read, report in zip(batch, reads, audited, strict=True):
        if not consensus.hold(ckpt, read.headers, read.digests, report):
            yield report


class _Threads:
    """How many threads read the next batch: ``--jobs`` when given; else as the last batch
    says. Headers in the page cache make reading CPU work, and the audit needs a core of
    its own: one fewer than the cores. Headers on disk (or a network filesystem) make it
    waiting: more threads than cores keep more requests in flight (DESIGN.md, cold cache).
    In the page cache means: cachestat said so of most files, or, on a kernel without
    cachestat, reading took little more than CPU time (~20 us a file; from disk, longer).
    """

    CACHED_READ = CACHED_READ  # thread-seconds a file, below which a batch was read from memory

    def __init__(self, jobs: int | None) -> None:
        self.fixed = jobs
        self.cores = _core.default_jobs()
        self.current = jobs or self.cores

    def next(self) -> int:
        return self.current

    def saw(self, ahead: _Ahead) -> list[_Read]:
        reads = ahead.result()
        if self.fixed is None and ahead.files:
            # The audit keeps a core of its own when reading is CPU work.
            self.current = reading_threads(
                ahead.files, ahead.from_page_cache, ahead.seconds_per_file, spare=1
            )
        return reads


class _Ahead:
    """One batch read while the previous one is audited.

    Headers and run files are read by native threads that never take the GIL
    (``_core.BatchRead``): a Python thread would, on every return from a blocking call,
    queue for the GIL behind the audit. With --verify-data (streaming gigabytes, where
    that does not matter) the batch is read on a Python thread.
    """

    def __init__(
        self, batch: list[CheckpointDir], jobs: int | None, verify_data: bool, cache: AuditCache
    ) -> None:
        self._batch = batch
        self.files = 0  # header files read natively, and of them how many were in the page
        self.from_page_cache = 0  # cache (known after result())
        self.seconds_per_file = 0.0
        self._reads: list[_Read] | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._native: _core.BatchRead | None = None
        if verify_data:
            self._thread = threading.Thread(target=self._run, args=(jobs,), name="pyaudit-read")
            self._thread.start()
        else:
            self._paths, self._run_files = _batch_paths(batch)
            # The table the audit used last (a run's checkpoints share one): each
            # checkpoint is held against it on the reading threads too.
            self._table = cache.last_table
            groups: list[int] = []
            if self._table is not None:
                ids = self._table[1]
                groups = [ids.get(name, -1) for ckpt in batch for name in ckpt.safetensors]
            self._native = _core.BatchRead(
                [os.fsencode(p) for p in self._paths],
                [os.fsencode(p) for _, _, p in self._run_files],
                PREFETCH_BYTES,
                jobs or 0,
                self._table[0] if self._table is not None else None,
                groups,
                [len(ckpt.safetensors) for ckpt in batch] if self._table is not None else [],
            )

    def _run(self, jobs: int | None) -> None:
        try:
            self._reads = read_batch(self._batch, jobs, True)
        except BaseException as e:  # handed to the auditing thread, raised there
            self._error = e

    def result(self) -> list[_Read]:
        if self._native is not None:
            cores, found, matches = self._native.result()
            self.files, self.from_page_cache = len(cores), self._native.from_page_cache
            self.seconds_per_file = self._native.seconds_per_file
            headers = [Header(p, c) for p, c in zip(self._paths, cores, strict=True)]
            reads = _reads(self._batch, self._paths, headers, self._run_files, found, None)
            if matches is not None and self._table is not None:
                for read, m in zip(reads, matches, strict=True):
                    read.ahead = (self._table[0], m)
            return reads
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._reads is not None
        return self._reads


def audit_batch(
    batch: list[CheckpointDir],
    reads: list[_Read],
    options: AuditOptions,
    base_expected: Expected | None,
    cache: AuditCache,
) -> Iterator[CheckpointReport]:
    """Each checkpoint of ``batch`` audited over what :func:`read_batch` read for it."""
    for ckpt, read in zip(batch, reads, strict=True):
        yield audit_checkpoint(
            ckpt, read.headers, options, base_expected, read.data, read.digests, read.ahead, cache,
            _read_pickled(ckpt),
        )


def _read_pickled(ckpt: CheckpointDir) -> PickledFiles | None:
    """:func:`pyaudit.auditing.pickled.read_pickled`, imported (with the pickle-era formats'
    readers) by the first checkpoint that has such files, not by every sweep."""
    if not ckpt.has_pickled:
        return None
    from pyaudit.auditing.pickled import read_pickled

    return read_pickled(ckpt)

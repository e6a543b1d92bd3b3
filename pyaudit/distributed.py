"""Sweeps on a Dask cluster: ``pyaudit scan STORE --dask tcp://scheduler:8786`` (or ``local``).

The client discovers the checkpoints (file names only) and cuts them into chunks; each
chunk is one task that reads its headers with the native core and audits each of its
checkpoints on a worker exactly as a local sweep does (``sweep.read_batch`` then
``sweep.audit_batch``, the same :class:`AuditOptions`; the ``--base`` expectation is
computed once on the client and scattered). Reports stream back as chunks complete and
are put back in discovery order, so the report is the one a local scan gives.

Requirements on the cluster: the workers see the store at the same paths as the client
(a shared filesystem) and run the same pyaudit version (checked). A relative PATH is
resolved on the worker against the client's working directory, as locally: the chunk
runs there (a worker process runs one pyaudit chunk at a time for that reason).
A worker that dies mid-chunk: the scheduler reruns the chunk elsewhere, up to
``distributed.scheduler.allowed-failures`` times (default 3); then :class:`ClusterError`,
naming the chunk that failed first (dask also counts the chunks queued on a dying worker
as suspects, so with a worker dying again and again that may be an innocent neighbour).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pyaudit import __version__
from pyaudit.auditing.consensus import Consensus
from pyaudit.auditing.results import AuditOptions, CheckpointReport
from pyaudit.discover import CheckpointDir, discover
from pyaudit.expected import Expected

INSTALL_HINT = "pip install 'pyaudit[dask]'"
CHUNK_CHECKPOINTS = 64  # checkpoints per task, at most
CHUNK_FILES = 512  # weight files per task, at most (one native header batch)
CHUNKS_PER_SLOT = 4  # at least this many tasks per worker thread, when there are enough


class DaskUnavailable(ImportError):
    """dask.distributed is not installed."""


class ClusterError(RuntimeError):
    """The cluster could not be reached, or a chunk could not be audited there."""


def require() -> Any:
    """The ``distributed`` module, or :class:`DaskUnavailable` with the install line."""
    try:
        import distributed
    except ImportError as e:
        raise DaskUnavailable(
            f"--dask needs dask.distributed, which is not installed ({e}); {INSTALL_HINT}"
        ) from None
    return distributed


def chunks(
    checkpoints: list[CheckpointDir],
    slots: int,
    max_checkpoints: int = CHUNK_CHECKPOINTS,
    max_files: int = CHUNK_FILES,
) -> list[list[CheckpointDir]]:
    """Consecutive runs of ``checkpoints`` (discovery order kept): at most ``max_checkpoints``
    and about ``max_files`` weight files each, and at least ``CHUNKS_PER_SLOT`` per slot
    (worker thread) when there are that many checkpoints, so the load evens out."""
    per = max(
        1, min(max_checkpoints, math.ceil(len(checkpoints) / (CHUNKS_PER_SLOT * max(slots, 1))))
    )
    out: list[list[CheckpointDir]] = []
    chunk: list[CheckpointDir] = []
    files = 0
    for ckpt in checkpoints:
        chunk.append(ckpt)
        files += max(len(ckpt.safetensors), 1)
        if len(chunk) >= per or files >= max_files:
            out.append(chunk)
            chunk, files = [], 0
    if chunk:
        out.append(chunk)
    return out


# One chunk at a time per worker process: the chunk runs in the client's working directory.
_CWD_LOCK = threading.Lock()


@contextmanager
def _client_directory(cwd: str, chunk: list[CheckpointDir]) -> Iterator[None]:
    with _CWD_LOCK:
        try:
            previous: str | None = os.getcwd()
        except OSError:
            previous = None
        moved = False
        if os.path.isdir(cwd):
            if previous != cwd:
                os.chdir(cwd)
                moved = True
        elif any(not ckpt.path.is_absolute() for ckpt in chunk):
            raise FileNotFoundError(
                f"worker {socket.gethostname()}: the client's working directory {cwd} is not "
                "there, and relative PATHs are resolved against it: give absolute PATHs on a "
                "filesystem the workers share"
            )
        try:
            for root in {ckpt.scan_root for ckpt in chunk if ckpt.scan_root is not None}:
                if not root.exists():
                    raise FileNotFoundError(
                        f"worker {socket.gethostname()}: {root} is not there: the store must be "
                        "on a filesystem the workers share, at the same path"
                    )
            yield
        finally:
            if moved and previous is not None:
                os.chdir(previous)


def audit_chunk(
    chunk: list[CheckpointDir],
    options: AuditOptions,
    base_expected: Expected | None,
    jobs: int | None,
    cwd: str,
) -> tuple[str, list[CheckpointReport]]:
    """The task: one chunk's headers read in one native batch, each checkpoint audited,
    as a local sweep does. Returns (this worker's pyaudit version, the reports in order)."""
    from pyaudit.auditing.cache import AuditCache
    from pyaudit.oracle import OracleSession
    from pyaudit.sweep import audit_batch, read_batch

    # This task's own memo tables and oracle worker: nothing shared between tasks.
    with OracleSession() as oracle, _client_directory(cwd, chunk):
        cache = AuditCache(fast=options.fast_path, oracle=oracle)
        reads = read_batch(chunk, jobs, options.verify_data)
        reports = list(audit_batch(chunk, reads, options, base_expected, cache))
    return __version__, reports


@contextmanager
def connect(cluster: Any) -> Iterator[Any]:
    """A ``distributed.Client``: the one given, one on a scheduler address
    (``tcp://host:8786``), or on a new LocalCluster for ``"local"`` (one single-threaded
    worker process per core; the native core reads headers on its own threads)."""
    distributed = require()
    if isinstance(cluster, distributed.Client):
        yield cluster
        return
    if not isinstance(cluster, str) or not cluster:
        raise ValueError(
            f"dask: a scheduler address, 'local' or a distributed.Client, not {cluster!r}"
        )
    if cluster == "local":
        with (
            distributed.LocalCluster(
                n_workers=os.cpu_count() or 1,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            ) as local,
            distributed.Client(local) as client,
        ):
            yield client
        return
    try:
        client = distributed.Client(cluster)
    except (OSError, TimeoutError, ValueError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {cluster}: {e}") from None
    with client:
        yield client


def _where(chunk: list[CheckpointDir]) -> str:
    if len(chunk) == 1:
        return f"checkpoint {chunk[0].display}"
    return f"{len(chunk)} checkpoints ({chunk[0].display} … {chunk[-1].display})"


def scan(
    paths: Iterable[str],
    options: AuditOptions | None = None,
    jobs: int | None = None,
    base_expected: Expected | None = None,
    *,
    cluster: Any = "local",
    ordered: bool = True,
    task: Callable[..., tuple[str, list[CheckpointReport]]] = audit_chunk,
) -> Iterator[CheckpointReport]:
    """:func:`pyaudit.sweep.scan` on a Dask cluster: the same reports, in discovery order
    (``ordered=False``: in completion order, as chunks finish). ``cluster``: a scheduler
    address, ``"local"``, or a ``distributed.Client``. ``jobs``: header-reading threads
    per worker. Raises :class:`DaskUnavailable` and :class:`ClusterError`."""
    distributed = require()
    from pyaudit.sweep import load_base

    paths = list(paths)
    urls = [p for p in paths if "://" in p]
    if urls:
        raise ValueError(
            f"--dask audits stores on a filesystem the workers share, not URLs ({urls[0]}): "
            "scan URLs without --dask"
        )
    options = options or AuditOptions()
    if options.base is not None and base_expected is None:
        base_expected = load_base(options.base, jobs)
    checkpoints = [ckpt for path in paths for ckpt in discover(path)]
    if not checkpoints:
        return
    cwd = os.getcwd()
    with connect(cluster) as client:
        slots = sum(client.nthreads().values())
        parts = chunks(checkpoints, slots)
        base_ref = (
            client.scatter(base_expected, broadcast=True) if base_expected is not None else None
        )
        scan_id = uuid.uuid4().hex[:12]
        futures = {
            client.submit(
                task,
                part,
                options,
                base_ref,
                jobs,
                cwd,
                key=f"pyaudit-chunk-{scan_id}-{i}",
                pure=False,
            ): i
            for i, part in enumerate(parts)
        }
        pending = set(futures)
        consensus = Consensus(options.fail_on)
        done: dict[int, list[CheckpointReport]] = {}
        following = 0
        try:
            for future in distributed.as_completed(list(futures)):
                i = futures[future]
                try:
                    version, reports = future.result()
                except Exception as e:
                    raise ClusterError(
                        f"{_where(parts[i])} could not be audited on the cluster: "
                        f"{type(e).__name__}: {e}"
                    ) from e
                pending.discard(future)
                future.release()
                if version != __version__:
                    raise ClusterError(
                        f"the workers run pyaudit {version}, this client {__version__}: "
                        "install the same version on both"
                    )
                if not ordered:
                    yield from _unheld(consensus, parts[i], reports, jobs)
                    continue
                done[i] = reports
                while following in done:
                    yield from _unheld(consensus, parts[following], done.pop(following), jobs)
                    following += 1
            yield from consensus.finish()
        finally:
            if pending:
                client.cancel(list(pending))


def _unheld(
    consensus: Consensus,
    part: list[CheckpointDir],
    reports: list[CheckpointReport],
    jobs: int | None,
) -> Iterator[CheckpointReport]:
    """A chunk's reports, but those the consensus pass keeps back for the scan's end (their
    headers read again here, on the client: the store is on a filesystem both see)."""
    from pyaudit.auditing.structure import header_files
    from pyaudit.headers import read_headers

    for ckpt, report in zip(part, reports, strict=True):
        if consensus.wants(ckpt, report):
            read = read_headers(header_files(ckpt), jobs=jobs)
            headers = dict(zip(ckpt.safetensors, read, strict=True))
            if consensus.hold(ckpt, headers, None, report):
                continue
        yield report


def until_error(
    errors: list[str], reports: Iterator[CheckpointReport]
) -> Iterator[CheckpointReport]:
    """:func:`scan`'s reports for the command line: a :class:`ClusterError` ends them and
    its one-line message is appended to ``errors`` (the caller reports it and exits 2)."""
    try:
        yield from reports
    except ClusterError as e:
        errors.append(str(e))

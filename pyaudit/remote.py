"""Remote stores: `pyaudit scan s3://bucket/prefix` (any fsspec URL: gs://, az://, file://;
http(s):// for single files).

One listing of the store gives every file's name and size; checkpoint directories are
grouped by :mod:`pyaudit.discover`'s own rules (``_classify`` over the listing). Each
``.safetensors`` header costs at most two range requests (the first ``FIRST_READ`` bytes,
then the rest of the header when its length prefix says it is longer), never the tensor
data beyond that first read; many requests are in flight at once (fsspec's async
``cat_ranges``, or a thread pool for synchronous filesystems), and headers are validated
by :func:`pyaudit.headers.parse_header_bytes`, the validator local files go through.

The audit reads a few small run files (config.json, adapter_config.json, args.json,
training_args.yaml, index files) through local paths: those alone are mirrored into a
temporary directory laid out like the remote tree, and each checkpoint is audited by
:func:`pyaudit.auditing.pipeline.audit_checkpoint` exactly as a local one. Paths in the report
read as they would for a local scan of the same tree, with the URL as the root.

Credentials and endpoints come from each filesystem's own environment (for S3:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pyaudit.auditing.cache import AuditCache
from pyaudit.auditing.pipeline import audit_checkpoint
from pyaudit.auditing.results import AuditOptions, CheckpointReport
from pyaudit.discover import is_url as is_url
from pyaudit.discover import (
    ADAPTER_CONFIG,
    CONFIG,
    FSDP_DIR,
    ZERO_DIR,
    CheckpointDir,
    _classify,
)
from pyaudit.expected import Expected
from pyaudit.headers import Header, header_span, parse_header_bytes
from pyaudit.sweep import batches

log = logging.getLogger("pyaudit.remote")

FIRST_READ = 100 * 1024  # bytes of each .safetensors asked for first: most headers fit
MIRROR_MAX_BYTES = 16 * 1024 * 1024  # a run file larger than this is not mirrored
BATCH_FILES = 512  # .safetensors headers per batch of requests
IN_FLIGHT = 64  # requests in flight by default (--jobs N: 8 x N)
RUN_MIRROR = (CONFIG, ADAPTER_CONFIG, "args.json", "training_args.yaml")
INSTALL_HINT = "pip install 'pyaudit[remote]'"


class RemoteError(Exception):
    """A remote PATH that cannot be scanned; the message is one line for the user."""


class RemoteNotFound(RemoteError, FileNotFoundError):
    """Nothing at that URL."""


class RemoteUnavailable(RemoteError, ImportError):
    """fsspec, or the filesystem's driver (s3fs, gcsfs, adlfs ...), is not installed."""


class RemoteUsage(RemoteError, ValueError):
    """An option remote PATHs cannot honour."""


# --- the listing, as a tree ---------------------------------------------------------------


@dataclass
class _Node:
    files: dict[str, int] = field(default_factory=dict)  # name -> size
    dirs: dict[str, _Node] = field(default_factory=dict)


@dataclass
class _Entry:
    """Enough of an ``os.DirEntry`` for ``discover._classify``."""

    name: str
    path: str
    directory: bool

    def is_dir(self) -> bool:
        return self.directory


@dataclass
class _Unread:
    """The core header interface for a file whose bytes could not be fetched (io-error)."""

    path: str
    file_size: int
    message: str
    ok: bool = False
    rule: str = "io-error"
    error_tensor: str | None = None
    header_size: int = 0
    data_size: int = 0
    metadata: dict[str, str] | None = None
    digest: int = 0

    def __len__(self) -> int:
        return 0

    def names(self) -> list[str]:
        return []

    def table(self) -> tuple[list[str], list[str], list[tuple[int, ...]], list[tuple[int, int]]]:
        return [], [], [], []


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec.core  # type: ignore[import-untyped]
    except ImportError:
        raise RemoteUnavailable(
            f"{url}: remote PATHs need fsspec (and s3fs for s3://): {INSTALL_HINT}"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise RemoteUnavailable(f"{url}: {_one_line(e)} ({INSTALL_HINT})") from None
    except ValueError as e:
        raise RemoteError(f"{url}: {_one_line(e)}") from None
    path = str(path)
    return fs, path if path in ("", "/") else path.rstrip("/")


class RemoteTree:
    """One URL: its listing, its checkpoints, and the local mirror of its run files."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = _filesystem(url)
        self.tree = _Node()
        self.files: dict[str, int] = {}  # path relative to the mirrored root -> size
        self.single: str | None = None  # the file's name when the URL names one file
        self.root_url = url.rstrip("/")  # the URL of the mirrored root
        protocols = self.fs.protocol
        protocols = protocols if isinstance(protocols, (tuple, list)) else (protocols,)
        self.http = any(p in ("http", "https") for p in protocols)  # no listing: one file
        self._list()

    # The listing ---------------------------------------------------------------------

    def _list(self) -> None:
        fs, url = self.fs, self.url
        try:
            if self.http:
                info = fs.info(self.root)  # http(s): one file, no listing
                found = {self.root: info}
            else:
                with contextlib.suppress(Exception):  # listings may be cached per instance
                    fs.invalidate_cache(self.root)
                found = fs.find(self.root, detail=True)
        except FileNotFoundError:
            found = {}
        except Exception as e:
            raise RemoteError(f"{url}: cannot list: {_one_line(e)}") from None
        info = found.get(self.root)
        if info is not None and info.get("type", "file") == "file" and len(found) == 1:
            self._list_single(info)
            return
        prefix = self.root.rstrip("/") + "/" if self.root not in ("", "/") else self.root
        for key, info in found.items():
            key = str(key)
            if key.endswith("/") or info.get("type", "file") != "file":
                continue  # a "directory" marker object
            if not key.startswith(prefix):
                continue
            rel = key[len(prefix):]
            self._add(rel, _size(info))
        if not self.files:
            raise RemoteNotFound(f"{url}: no such file or directory")

    def _list_single(self, info: dict[str, Any]) -> None:
        """The URL names one file: its directory is the checkpoint, as for a local file."""
        name = posixpath.basename(self.root)
        parent = posixpath.dirname(self.root)
        self.single = name
        self.root = parent
        self.root_url = self.url.rstrip("/").rsplit("/", 1)[0]
        entries: list[dict[str, Any]] = []
        if not self.http:
            try:
                entries = list(self.fs.ls(parent, detail=True))
            except Exception as e:
                log.warning("%s: cannot list the directory holding it: %s", self.url, _one_line(e))
        for entry in entries:
            entry_name = posixpath.basename(str(entry["name"]).rstrip("/"))
            if not entry_name or entry_name == name:
                continue
            if entry.get("type") == "directory":
                self.tree.dirs.setdefault(entry_name, _Node())
            else:
                self._add(entry_name, _size(entry))
        self._add(name, _size(info))

    def _add(self, rel: str, size: int) -> None:
        parts = rel.split("/")
        node = self.tree
        for part in parts[:-1]:
            node = node.dirs.setdefault(part, _Node())
        node.files[parts[-1]] = size
        self.files[rel] = size

    def key(self, rel: str) -> str:
        """The filesystem path of a file given relative to the mirrored root."""
        if self.root in ("", "/"):
            return self.root + rel
        return f"{self.root}/{rel}"

    # Discovery (pyaudit.discover's walk, over the listing) ------------------------------

    def checkpoints(self, mirror_root: Path) -> Iterator[CheckpointDir]:
        if self.single is not None:
            ckpt, _ = self._classify(self.tree, mirror_root, self.url)
            ckpt.scan_root = mirror_root
            if self.single.endswith(".safetensors"):
                ckpt.safetensors = [self.single]
                ckpt.indexes = []
                ckpt.bin_weights = []
                ckpt.bin_indexes = []
            yield ckpt
            return

        def walk(node: _Node, path: Path, rel: str) -> Iterator[CheckpointDir]:
            ckpt, names = self._classify(node, path, rel or self.url)
            ckpt.scan_root = mirror_root
            subdirs = [(name, node.dirs[name]) for name in names]
            if ckpt.has_weights or ckpt.has_adapter_config:
                yield ckpt
                for name, sub in subdirs:
                    yield from walk(sub, path / name, f"{rel}/{name}" if rel else name)
                return
            found_below = False
            for name, sub in subdirs:
                for child in walk(sub, path / name, f"{rel}/{name}" if rel else name):
                    found_below = True
                    yield child
            if not found_below and ckpt.is_weightless_candidate:
                yield ckpt

        yield from walk(self.tree, mirror_root, "")

    @staticmethod
    def _classify(node: _Node, path: Path, display: str) -> tuple[CheckpointDir, list[str]]:
        """discover's classification of one listed directory, and the names of the
        sub-directories it walks into, in its order."""
        entries = [_Entry(name, str(path / name), True) for name in node.dirs]
        entries += [_Entry(name, str(path / name), False) for name in node.files]
        ckpt, subdirs = _classify(path, display, cast("list[os.DirEntry[str]]", entries))
        # _classify lists FSDP shard folders from the local disk: take them from the listing.
        extra = [
            f"{name}/{f}"
            for name, sub in node.dirs.items()
            if not ZERO_DIR.fullmatch(name) and FSDP_DIR.fullmatch(name)
            for f in sorted([*sub.files, *sub.dirs])
            if f.endswith(".distcp")
        ]
        if extra:
            ckpt.fsdp_files = sorted(ckpt.fsdp_files + extra)
        return ckpt, [sub.name for sub in subdirs]

    # The mirror ------------------------------------------------------------------------

    def make_dirs(self, mirror_root: Path) -> None:
        """Every directory of the tree (``resolve_model`` asks which exist)."""

        def walk(node: _Node, path: Path) -> None:
            path.mkdir(parents=True, exist_ok=True)
            for name, sub in node.dirs.items():
                walk(sub, path / name)

        walk(self.tree, mirror_root)

    def run_files(self) -> list[str]:
        """The small run files the audit reads, wherever they are (not in hidden folders)."""
        return [
            rel
            for rel in self.files
            if posixpath.basename(rel) in RUN_MIRROR
            and not any(part.startswith(".") for part in rel.split("/")[:-1])
        ]


def _size(info: dict[str, Any]) -> int:
    size = info.get("size")
    if size is None:
        size = info.get("Size")
    return int(size) if size is not None else 0



# --- fetching -------------------------------------------------------------------------------


class _Fetcher:
    """Byte ranges of many files, many requests in flight; errors returned, not raised."""

    def __init__(self, fs: Any, in_flight: int) -> None:
        self.fs = fs
        self.in_flight = in_flight
        self._pool: ThreadPoolExecutor | None = None

    def ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes | BaseException]:
        if not requests:
            return []
        if getattr(self.fs, "async_impl", False):
            try:
                out = self.fs.cat_ranges(
                    [r[0] for r in requests],
                    [r[1] for r in requests],
                    [r[2] for r in requests],
                    on_error="return",
                    batch_size=self.in_flight,
                )
                return list(out)
            except Exception as e:  # the whole batch failed (e.g. the session)
                return [e] * len(requests)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="pyaudit-remote")
        return list(self._pool.map(self._one, requests))

    def _one(self, request: tuple[str, int, int]) -> bytes | BaseException:
        path, start, end = request
        try:
            return bytes(self.fs.cat_file(path, start=start, end=end))
        except Exception as e:
            return e

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def fetch_headers(
    fetcher: _Fetcher,
    files: Sequence[tuple[str, int, str]],
    first_read: int = FIRST_READ,
    extra: Sequence[tuple[str, int, int]] = (),
) -> tuple[list[Header], list[bytes | BaseException]]:
    """Headers of ``files`` (remote path, size from the listing, local path for messages):
    at most two range requests each. ``extra`` ranges ride along with the first round."""
    first = [(key, 0, min(size, first_read)) for key, size, _ in files if size > 0]
    results = fetcher.ranges(first + list(extra))
    got = iter(results[: len(first)])
    data: list[bytes | BaseException] = [next(got) if size > 0 else b"" for _, size, _ in files]
    second: list[tuple[str, int, int]] = []
    wanted: list[int] = []
    for i, ((key, size, _), d) in enumerate(zip(files, data, strict=True)):
        if isinstance(d, bytes) and len(d) >= 8:
            span = header_span(d[:8])
            if len(d) < span <= size:  # beyond the file: the validator says truncated
                second.append((key, len(d), span))
                wanted.append(i)
    for i, rest in zip(wanted, fetcher.ranges(second), strict=True):
        head = data[i]
        data[i] = rest if isinstance(rest, BaseException) else cast(bytes, head) + bytes(rest)
    headers = []
    for (_, size, local), d in zip(files, data, strict=True):
        if isinstance(d, BaseException):
            core = _Unread(local, size, f"cannot read: {_one_line(d)}")
            headers.append(Header(local, cast(Any, core)))
        else:
            headers.append(parse_header_bytes(bytes(d), size, local))
    return headers, results[len(first):]


# --- the sweep ------------------------------------------------------------------------------


def _rewrite(report: CheckpointReport, mirror: str, root_url: str) -> CheckpointReport:
    """Local mirror paths in messages -> the URL (as a local scan shows its own paths).
    Reports and findings are immutable: replaced, never mutated."""
    source = report.expected_source
    if source and mirror in source:
        source = source.replace(mirror, root_url)
    findings = tuple(
        dataclasses.replace(f, message=f.message.replace(mirror, root_url))
        if mirror in f.message
        else f
        for f in report.findings
    )
    return dataclasses.replace(report, expected_source=source, findings=findings)


def _rel(ckpt: CheckpointDir, name: str, mirror_root: Path) -> str:
    """A checkpoint's file, relative to the mirrored root (= to the remote root)."""
    return (ckpt.path / name).relative_to(mirror_root).as_posix()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _bin_placeholders(tree: RemoteTree, ckpt: CheckpointDir, mirror_root: Path) -> None:
    """Empty stand-ins for the files a .bin index names that the listing holds
    (the audit only asks whether they exist). Runs on the reader thread: parses the
    index itself rather than through read_json's shared memo."""
    rel_dir = ckpt.path.relative_to(mirror_root).as_posix()
    for index_name in ckpt.bin_indexes:
        try:
            doc = json.loads((ckpt.path / index_name).read_bytes())
        except (OSError, ValueError, RecursionError):
            continue
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict):
            continue
        for f in {v for v in weight_map.values() if isinstance(v, str)}:
            rel = posixpath.normpath(f"{rel_dir}/{f}" if rel_dir != "." else f)
            if rel in tree.files and not (mirror_root / rel).exists():
                _write(mirror_root / rel, b"")


def _mirror_small(
    tree: RemoteTree, fetcher: _Fetcher, rels: Iterable[str], mirror_root: Path
) -> list[tuple[str, int, int]]:
    """The requests that mirror ``rels`` (small files only)."""
    out = []
    for rel in rels:
        size = tree.files[rel]
        if size > MIRROR_MAX_BYTES:
            log.warning("%s/%s: %d bytes, larger than the %d mirrored: not read",
                        tree.root_url, rel, size, MIRROR_MAX_BYTES)
            continue
        if size == 0:
            _write(mirror_root / rel, b"")
            continue
        out.append((tree.key(rel), 0, size))
    return out


def _store(
    requests: Sequence[tuple[str, int, int]],
    results: Sequence[bytes | BaseException],
    tree: RemoteTree,
    mirror_root: Path,
) -> None:
    prefix = tree.key("")
    for (key, _, _), data in zip(requests, results, strict=True):
        rel = key[len(prefix):]
        if isinstance(data, BaseException):
            log.warning("%s/%s: cannot read: %s", tree.root_url, rel, _one_line(data))
            continue
        _write(mirror_root / rel, bytes(data))


@dataclass
class _Batch:
    checkpoints: list[CheckpointDir]
    headers: list[dict[str, Header]]
    mirrored: list[Path]


def scan_tree(
    tree: RemoteTree,
    options: AuditOptions,
    jobs: int | None = None,
    base_expected: Expected | None = None,
    first_read: int = FIRST_READ,
) -> Iterator[CheckpointReport]:
    """Audit every checkpoint of one listed URL, in discovery order."""
    in_flight = 8 * jobs if jobs else IN_FLIGHT
    fetcher = _Fetcher(tree.fs, in_flight)
    workdir = Path(tempfile.mkdtemp(prefix="pyaudit-remote-"))
    name = posixpath.basename(tree.root.rstrip("/")) or "root"
    mirror_root = workdir / "m" / name
    try:
        tree.make_dirs(mirror_root)
        # Run files first, for the whole tree: any checkpoint may name any other as its base.
        requests = _mirror_small(tree, fetcher, tree.run_files(), mirror_root)
        _store(requests, fetcher.ranges(requests), tree, mirror_root)

        def read(batch: list[CheckpointDir]) -> _Batch:
            files: list[tuple[str, int, str]] = []
            index_rels: list[str] = []
            for ckpt in batch:
                for n in ckpt.safetensors:
                    rel = _rel(ckpt, n, mirror_root)
                    files.append((tree.key(rel), tree.files[rel], str(ckpt.path / n)))
                rels = (_rel(ckpt, n, mirror_root) for n in ckpt.indexes + ckpt.bin_indexes)
                index_rels += [rel for rel in rels if rel in tree.files]
            extra = _mirror_small(tree, fetcher, index_rels, mirror_root)
            headers, extra_results = fetch_headers(fetcher, files, first_read, extra)
            _store(extra, extra_results, tree, mirror_root)
            by_ckpt: list[dict[str, Header]] = []
            i = 0
            for ckpt in batch:
                k = len(ckpt.safetensors)
                by_ckpt.append(dict(zip(ckpt.safetensors, headers[i : i + k], strict=True)))
                i += k
                if ckpt.bin_indexes:
                    _bin_placeholders(tree, ckpt, mirror_root)
            return _Batch(batch, by_ckpt, [mirror_root / r for r in index_rels])

        cache = AuditCache(fast=options.fast_path)  # this store's memo tables

        def audit(done: _Batch) -> Iterator[CheckpointReport]:
            for ckpt, headers in zip(done.checkpoints, done.headers, strict=True):
                report = audit_checkpoint(ckpt, headers, options, base_expected, cache=cache)
                yield _rewrite(report, str(mirror_root), tree.root_url)
            for path in done.mirrored:  # index files can be MBs: not kept past their batch
                path.unlink(missing_ok=True)

        # Fetch the next batch while this one is audited.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyaudit-remote-read") as reader:
            pending: Future[_Batch] | None = None
            for batch in batches(tree.checkpoints(mirror_root), BATCH_FILES):
                future = reader.submit(read, batch)
                if pending is not None:
                    yield from audit(pending.result())
                pending = future
            if pending is not None:
                yield from audit(pending.result())
    finally:
        fetcher.close()
        shutil.rmtree(workdir, ignore_errors=True)


_LISTED: dict[str, RemoteTree] = {}  # listed by prepare(), taken by scan_paths()


def prepare(paths: Iterable[str], verify_data: bool = False) -> None:
    """List every URL among ``paths`` now (kept for :func:`scan_paths`): a URL that cannot
    be listed, a missing driver or an option remote PATHs cannot honour raises
    :class:`RemoteError` before anything is audited."""
    urls = [p for p in paths if is_url(p)]
    if urls and verify_data:
        raise RemoteUsage("--verify-data reads tensor data: not available for remote PATHs")
    for url in urls:
        if url not in _LISTED:
            _LISTED[url] = RemoteTree(url)


def scan_paths(
    paths: Iterable[str],
    options: AuditOptions | None = None,
    jobs: int | None = None,
    base_expected: Expected | None = None,
) -> Iterator[CheckpointReport]:
    """:func:`pyaudit.sweep.scan`, with URLs (``"://"`` in a PATH) through a remote store.

    Every URL is listed before this returns, so a URL that does not exist, or a missing
    driver, raises :class:`RemoteError` here, before any report.
    """
    from pyaudit.sweep import load_base
    from pyaudit.sweep import scan as sweep

    paths = list(paths)
    options = options or AuditOptions()
    if not any(is_url(p) for p in paths):
        return sweep(paths, options, jobs, base_expected)
    prepare(paths, options.verify_data)
    trees = {p: _LISTED.pop(p) for p in paths if is_url(p)}
    if options.base is not None and base_expected is None:
        base_expected = load_base(options.base, jobs)

    def run() -> Iterator[CheckpointReport]:
        local: list[str] = []
        for p in paths:
            if p in trees:
                if local:
                    yield from sweep(local, options, jobs, base_expected)
                    local = []
                yield from scan_tree(trees[p], options, jobs, base_expected)
            else:
                local.append(p)
        if local:
            yield from sweep(local, options, jobs, base_expected)

    return run()


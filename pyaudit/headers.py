"""Safetensors headers, read and validated by the native core.

The API edge of the core: ``read_header`` raises :class:`FormatError` for a file
that breaks a format rule; ``read_headers`` never raises for a bad file, each
result says whether it is ``ok`` and, if not, which rule it broke.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from pyaudit import _core

PathLike = str | os.PathLike[str]

DTYPE_BITS: dict[str, int] = dict(_core.DTYPE_BITS)


class FormatError(ValueError):
    """A safetensors file breaks a format rule. The message names the file and the rule."""

    def __init__(self, path: str, rule: str, message: str, tensor: str | None = None) -> None:
        super().__init__(f"{path}: {message} [{rule}]")
        self.path = path
        self.rule = rule
        self.reason = message
        self.tensor = tensor


class TensorInfo(NamedTuple):
    """One tensor's entry in a header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.data_offsets[1] - self.data_offsets[0]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class Header:
    """One file's header: tensors, metadata, sizes. Never holds tensor data.

    ``ok`` is False when the file broke a format rule; ``error`` then says which.
    """

    __slots__ = ("_core", "_tensors", "ok", "path")

    def __init__(self, path: str, core: _core.Header) -> None:
        self.path = path
        self._core = core
        self._tensors: dict[str, TensorInfo] | None = None
        self.ok: bool = core.ok  # read on every check: kept, not asked of the core each time

    @property
    def native(self) -> _core.Header:
        """The core's own object (what native matches such as ``_core.TensorSpecs.match``
        take)."""
        return self._core

    @property
    def rule(self) -> str:
        """The rule the file broke, or ``"ok"``."""
        return self._core.rule

    @property
    def error(self) -> FormatError | None:
        if self._core.ok:
            return None
        return FormatError(
            self.path, self._core.rule, self._core.message or "", self._core.error_tensor
        )

    @property
    def file_size(self) -> int:
        return self._core.file_size

    @property
    def header_size(self) -> int:
        """Bytes of header JSON (without the 8-byte length prefix)."""
        return self._core.header_size

    @property
    def data_size(self) -> int:
        """Bytes of tensor data the header describes."""
        return self._core.data_size

    @property
    def metadata(self) -> dict[str, str] | None:
        return self._core.metadata

    @property
    def digest(self) -> int:
        """A hash of the header JSON: files with equal headers have equal digests."""
        return self._core.digest

    def __len__(self) -> int:
        return len(self._core)

    def names(self) -> list[str]:
        return self._core.names()

    def table(self) -> tuple[list[str], list[str], list[tuple[int, ...]], list[tuple[int, int]]]:
        """(names, dtypes, shapes, data_offsets) in header order, in one call."""
        return self._core.table()

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        """Name -> :class:`TensorInfo`, in header order."""
        if self._tensors is None:
            names, dtypes, shapes, offsets = self._core.table()
            self._tensors = {
                n: TensorInfo(n, d, s, o)
                for n, d, s, o in zip(names, dtypes, shapes, offsets, strict=True)
            }
        return self._tensors

    def raise_for_error(self) -> Header:
        error = self.error
        if error is not None:
            raise error
        return self

    def __repr__(self) -> str:
        state = f"{len(self)} tensors" if self.ok else self.rule
        return f"<Header {self.path!r}: {state}>"


HeaderResult = Header


def _native_path(path: PathLike) -> bytes:
    return os.fsencode(os.fspath(path))


def read_header(path: PathLike) -> Header:
    """Read and validate one file's header; raise :class:`FormatError` if it breaks a rule."""
    p = os.fspath(path)
    return Header(p, _core.read_header(_native_path(p))).raise_for_error()


#: Thread-seconds a file below which a batch was read from memory (kernels without cachestat).
CACHED_READ = 100e-6
PROBE_FILES = 64  # read_headers(jobs=None): files read first to learn where headers are


def reading_threads(files: int, from_page_cache: int, seconds_per_file: float, spare: int) -> int:
    """Threads for the next read, from how the last one went: headers in the page cache make
    reading CPU work (one thread a core, less ``spare`` cores kept for other work); headers
    on disk or a network filesystem make it waiting, and more requests in flight help (up to
    4 x cores, at most 16). In the page cache means: cachestat said so of most files, or,
    on a kernel without cachestat, reading took little more than CPU time."""
    cores = _core.default_jobs()
    if _core.cachestat_supported():
        warm = from_page_cache >= 0.9 * files
    else:
        warm = seconds_per_file < CACHED_READ
    return max(1, cores - spare) if warm else min(16, 4 * cores)


def read_headers(paths: Iterable[PathLike], jobs: int | None = None) -> list[Header]:
    """Read many headers on a pool of threads, GIL released; results in input order.

    ``jobs``: threads; by default chosen as a sweep chooses them: the first files are
    read one thread a core, the rest with :func:`reading_threads` (a cold store gets many).
    Never raises for a broken or unreadable file: check each result's ``ok``.
    """
    strs: Sequence[str] = [os.fspath(p) for p in paths]
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    native = [os.fsencode(p) for p in strs]
    if jobs is not None or len(native) <= 2 * PROBE_FILES:
        cores = _core.read_headers(native, jobs or 0)
    else:
        probe = _core.BatchRead(native[:PROBE_FILES], [], 0, 0)
        cores, _, _ = probe.result()
        threads = reading_threads(
            PROBE_FILES, probe.from_page_cache, probe.seconds_per_file, spare=0
        )
        cores = cores + _core.read_headers(native[PROBE_FILES:], threads)
    return [Header(p, c) for p, c in zip(strs, cores, strict=True)]


def parse_header_bytes(data: bytes, file_size: int | None = None, path: str = "") -> Header:
    """Validate a header from bytes: the start of a file of ``file_size`` bytes.

    ``data`` must hold at least the header (see :func:`header_span`); remote readers
    fetch that much by range request and share the validator with local files.
    """
    size = len(data) if file_size is None else file_size
    return Header(path, _core.parse_header_bytes(data, size, path))


def header_span(first: bytes) -> int:
    """Bytes from the start of a file that its header needs, from its first 8 bytes (0: invalid)."""
    return _core.header_span(bytes(first[:8]))

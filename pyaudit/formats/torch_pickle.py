"""``torch.save`` files (``pytorch_model.bin``, ``*.pt``): zip and legacy formats.

The native core reads the zip central directory and the pickle (``data.pkl``) and walks
the pickle's opcodes as data: globals are names, never imported or called. What the
pickle would have rebuilt is recognised by name (torch's tensor rebuild functions and
storage types, ``collections.OrderedDict``); every other global is reported, with the
ones that would run code if the file were unpickled (``os.system``, ``builtins.eval``,
...) told apart. Tensor data is never read: a storage is checked by its record's length.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pyaudit import _core
from pyaudit.formats.table import Problem, TableEntry, TensorTable

PathLike = str | os.PathLike[str]

# Globals that would run code, touch files or processes, or reach arbitrary attributes if
# the pickle were loaded by an unpickler that imports (torch.load(weights_only=False)).
UNSAFE_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "runpy", "importlib",
    "pickle", "_pickle", "cPickle", "marshal", "ctypes", "webbrowser", "pty", "code",
    "codeop", "commands", "multiprocessing", "signal", "asyncio", "threading", "urllib",
    "urllib2", "requests", "http", "httplib", "ftplib", "telnetlib", "smtplib", "pdb",
    "bdb", "timeit", "platform", "imp", "pkgutil", "zipimport", "tempfile", "glob",
    "pathlib", "pathlib._local", "io", "_io", "fcntl", "resource", "operator", "functools", "types",
    "inspect", "dill", "joblib", "cloudpickle", "torch.hub", "torch.serialization",
})  # fmt: skip
UNSAFE_BUILTINS = frozenset({
    "eval", "exec", "compile", "getattr", "setattr", "delattr", "__import__", "open",
    "globals", "locals", "vars", "breakpoint", "input", "exit", "quit", "help", "apply",
    "execfile", "file", "reload", "memoryview", "type", "object", "super", "classmethod",
    "staticmethod", "property",
})  # fmt: skip
SAFE_IN_UNSAFE_MODULES = frozenset({("torch.serialization", "_get_layout")})


class GlobalRef(NamedTuple):
    """A global the pickle names (never imported): how often, and what it is to us."""

    module: str
    name: str
    uses: int  # how many times the pickle names it
    kind: str  # "recognised" | "unsafe" | "unrecognised"

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


def classify_global(module: str, name: str, recognised: bool) -> str:
    if recognised or (module, name) in SAFE_IN_UNSAFE_MODULES:
        return "recognised"
    root = module.split(".", 1)[0]
    if module in UNSAFE_MODULES or root in UNSAFE_MODULES:
        return "unsafe"
    if module in ("builtins", "__builtin__") and name in UNSAFE_BUILTINS:
        return "unsafe"
    if module == "<extension code>":
        return "unsafe"  # the copyreg extension registry: any callable
    return "unrecognised"


class TorchTensor(NamedTuple):
    name: str
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int
    storage_key: str
    needed_bytes: int  # bytes of its storage it reaches, from the storage's start

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class Storage(NamedTuple):
    key: str
    dtype: str
    numel: int
    nbytes: int
    location: str
    present: bool
    record_size: int
    needed_bytes: int


@dataclass
class TorchCheckpoint:
    """One torch.save file read as data (see the module doc)."""

    path: str
    core: _core.TorchFile

    @property
    def ok(self) -> bool:
        return self.core.ok

    @property
    def rule(self) -> str:
        return self.core.rule

    @property
    def message(self) -> str | None:
        return self.core.message

    @property
    def kind(self) -> str:
        return self.core.kind

    @property
    def file_size(self) -> int:
        return self.core.file_size

    @property
    def bytes_read(self) -> int:
        return self.core.bytes_read

    def tensors(self) -> list[TorchTensor]:
        return [TorchTensor(*row) for row in zip(*self.core.table(), strict=True)]

    def storages(self) -> list[Storage]:
        return [Storage(*row) for row in self.core.storages()]

    def problems(self) -> list[Problem]:
        return [Problem(*p) for p in self.core.problems()]

    def globals(self) -> list[GlobalRef]:
        return [GlobalRef(m, n, c, classify_global(m, n, r)) for m, n, c, r in self.core.globals()]

    def unsafe_globals(self) -> list[GlobalRef]:
        return [g for g in self.globals() if g.kind == "unsafe"]

    def unrecognised_globals(self) -> list[GlobalRef]:
        return [g for g in self.globals() if g.kind == "unrecognised"]

    def values(self) -> dict[str, int | str | tuple[int, ...]]:
        """Ints, short strings and torch.Size values beside the tensors, by dotted path."""
        return dict(self.core.values())

    def to_table(self, strip_prefix: str = "") -> TensorTable:
        """The tensor table; ``strip_prefix`` (e.g. ``"module."``) keeps only names under it."""
        table = TensorTable(
            path=self.path,
            format="torch",
            kind=self.kind,
            rule=self.rule,
            message=self.message,
            problems=self.problems(),
            file_size=self.file_size,
            bytes_read=self.bytes_read,
        )
        names, dtypes, shapes, _strides, _offsets, _keys, _needed = self.core.table()
        n = len(strip_prefix)
        for name, dtype, shape in zip(names, dtypes, shapes, strict=True):
            if strip_prefix:
                if not name.startswith(strip_prefix):
                    continue
                name = name[n:]
            size = _core.DTYPE_BITS.get(dtype, 0)
            numel = 1
            for d in shape:
                numel *= d
            table.tensors[name] = TableEntry(name, dtype, shape, numel * size // 8)
        return table


def read_torch(path: PathLike) -> TorchCheckpoint:
    """Read one torch.save file as data. Never raises for a bad file: see ``rule``."""
    p = os.fspath(path)
    return TorchCheckpoint(p, _core.read_torch_file(os.fsencode(p)))


def read_torch_files(paths: Iterable[PathLike], jobs: int | None = None) -> list[TorchCheckpoint]:
    """read_torch on a pool of native threads, GIL released; results in input order."""
    strs: Sequence[str] = [os.fspath(p) for p in paths]
    cores = _core.read_torch_files([os.fsencode(p) for p in strs], jobs or 0)
    return [TorchCheckpoint(p, c) for p, c in zip(strs, cores, strict=True)]


def parse_torch_bytes(data: bytes, path: str = "") -> TorchCheckpoint:
    return TorchCheckpoint(path, _core.parse_torch_bytes(data, path))

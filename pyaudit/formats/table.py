"""The tensor table every format reader yields, and the dispatch by file content."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Format = Literal["safetensors", "torch", "dcp", "unknown"]


class TableEntry(NamedTuple):
    """One tensor as a format reader found it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int  # bytes of tensor data the file holds for it (its extent)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class Problem(NamedTuple):
    """A format rule one tensor or record broke; the rest of the file was read."""

    rule: str
    tensor: str | None
    message: str


@dataclass
class TensorTable:
    """What one file (or one DCP directory) holds: tensors in file order, errors as values.

    ``rule`` is ``"ok"`` unless the file could not be read as its format at all (then
    ``tensors`` may be empty or partial); ``problems`` are per-tensor failures.
    """

    path: str
    format: Format
    kind: str  # the format's own variant: "zip", "legacy", "metadata", ...
    tensors: dict[str, TableEntry] = field(default_factory=dict)
    rule: str = "ok"
    message: str | None = None
    problems: list[Problem] = field(default_factory=list)
    file_size: int = 0
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return self.rule == "ok" and not self.problems


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def sniff(first: bytes) -> Format:
    """Which format a file's first 8 bytes announce (no more is needed)."""
    if first[:4] in ZIP_MAGIC or (len(first) >= 2 and first[0] == 0x80 and first[1] <= 5):
        return "torch"
    if len(first) >= 9 and first[8:9] == b"{":
        return "safetensors"
    if len(first) == 8:
        n = int.from_bytes(first, "little")
        if 0 < n < 100_000_000:  # a safetensors length prefix; the header reader decides
            return "safetensors"
    return "unknown"


def read_table(path: str | os.PathLike[str]) -> TensorTable:
    """The tensor table of one file, whichever format it is in."""
    p = os.fspath(path)
    with open(p, "rb") as f:
        first = f.read(9)
    fmt = sniff(first)
    if fmt == "torch":
        from pyaudit.formats.torch_pickle import read_torch

        return read_torch(p).to_table()
    if fmt == "safetensors":
        from pyaudit.formats.safetensors import read_safetensors_table

        return read_safetensors_table(p)
    return TensorTable(
        path=p,
        format="unknown",
        kind="",
        rule="not-a-checkpoint",
        message="not a safetensors or torch file",
        file_size=os.path.getsize(p),
    )

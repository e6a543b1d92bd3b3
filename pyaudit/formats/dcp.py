"""torch.distributed.checkpoint directories: ``.metadata`` + ``*.distcp`` files.

The ``.metadata`` file is a pickle, read by the same native walker as torch.save files
(never unpickled): per tensor its global shape, dtype and chunks; per chunk the file,
offset and length its bytes were written to. Each referenced ``.distcp`` file must exist
and be long enough (only its size is asked of the file system; nothing of it is read).
accelerate's FSDP sharded save writes the model as ``pytorch_model_fsdp_0/`` (names under
``model.``) and the optimizer as ``optimizer_0/`` (names under ``optimizer.``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

from pyaudit import _core
from pyaudit.formats.table import Problem, TableEntry, TensorTable
from pyaudit.formats.torch_pickle import TorchCheckpoint, read_torch

METADATA = ".metadata"


class DcpChunk(NamedTuple):
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]


class DcpTensor(NamedTuple):
    fqn: str
    dtype: str | None
    shape: tuple[int, ...]
    chunks: tuple[DcpChunk, ...]


class DcpItem(NamedTuple):
    fqn: str
    chunk_offset: tuple[int, ...]
    relative_path: str
    offset: int
    length: int


def _volume(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


@dataclass
class DcpCheckpoint:
    """One DCP directory as data: its metadata table and what its files hold."""

    path: str
    metadata: TorchCheckpoint
    tensors: dict[str, DcpTensor] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)  # non-tensor entries (BytesStorageMetadata)
    items: list[DcpItem] = field(default_factory=list)
    file_sizes: dict[str, int | None] = field(
        default_factory=dict
    )  # relative path -> size (None: absent)
    problems: list[Problem] = field(default_factory=list)

    @property
    def rule(self) -> str:
        if self.metadata.rule != "ok":
            return self.metadata.rule
        return "ok" if self.metadata.core.is_dcp else "not-dcp"

    @property
    def ok(self) -> bool:
        return self.rule == "ok" and not self.problems

    @property
    def missing_files(self) -> list[str]:
        return sorted(f for f, size in self.file_sizes.items() if size is None)

    def prefix(self) -> str:
        """The one top-level key every tensor name starts with (accelerate: ``model.``), or ''."""
        tops = {fqn.split(".", 1)[0] for fqn in self.tensors}
        if len(tops) == 1 and all("." in f for f in self.tensors):
            return next(iter(tops)) + "."
        return ""

    def to_table(self, strip_prefix: str = "") -> TensorTable:
        table = TensorTable(
            path=self.path,
            format="dcp",
            kind="metadata",
            rule=self.rule,
            message=self.metadata.message
            if self.metadata.rule != "ok"
            else (
                None if self.rule == "ok" else "the .metadata pickle is not a DCP Metadata object"
            ),
            problems=list(self.problems),
            file_size=self.metadata.file_size,
            bytes_read=self.metadata.bytes_read,
        )
        n = len(strip_prefix)
        for fqn, t in self.tensors.items():
            if strip_prefix and not fqn.startswith(strip_prefix):
                continue
            name = fqn[n:]
            bits = _core.DTYPE_BITS.get(t.dtype or "", 0)
            table.tensors[name] = TableEntry(
                name, t.dtype or "?", t.shape, _volume(t.shape) * bits // 8
            )
        return table


def read_dcp(path: str | os.PathLike[str]) -> DcpCheckpoint:
    """Read a DCP directory's ``.metadata`` and check its files. Never raises for bad input."""
    root = os.fspath(path)
    meta = read_torch(os.path.join(root, METADATA))
    out = DcpCheckpoint(root, meta)
    if meta.rule != "ok" or not meta.core.is_dcp:
        return out
    out.problems.extend(Problem(*p) for p in meta.core.problems())
    for fqn, is_tensor, dtype, shape, chunks in meta.core.dcp_entries():
        if not is_tensor:
            out.objects.append(fqn)
            continue
        out.tensors[fqn] = DcpTensor(fqn, dtype, shape, tuple(DcpChunk(o, s) for o, s in chunks))
    out.items = [DcpItem(*i) for i in meta.core.dcp_items()]
    # Each file: present, and as long as the furthest chunk written to it.
    needed: dict[str, tuple[int, str]] = {}
    for item in out.items:
        end = item.offset + item.length
        if end > needed.get(item.relative_path, (-1, ""))[0]:
            needed[item.relative_path] = (end, item.fqn)
    for rel, (end, fqn) in sorted(needed.items()):
        target = os.path.join(root, rel)
        try:
            size: int | None = os.stat(target).st_size
        except OSError:
            size = None
        out.file_sizes[rel] = size
        if size is None:
            holders = sorted({i.fqn for i in out.items if i.relative_path == rel})
            out.problems.append(
                Problem(
                    "storage-missing",
                    holders[0] if holders else None,
                    f"{rel} is missing: it holds {len(holders)} of the checkpoint's entries "
                    f"({', '.join(holders[:3])}{', ...' if len(holders) > 3 else ''})",
                )
            )
        elif size < end:
            out.problems.append(
                Problem(
                    "storage-truncated",
                    fqn,
                    f"{rel} is {size:,} bytes; the metadata places '{fqn}' up to byte {end:,}",
                )
            )
    # Each tensor: chunks inside its shape, covering it, and each chunk stored somewhere.
    stored = {(i.fqn, i.chunk_offset) for i in out.items}
    for fqn, t in out.tensors.items():
        total = 0
        for c in t.chunks:
            if (
                len(c.offsets) != len(t.shape)
                or len(c.sizes) != len(t.shape)
                or any(o + s > d for o, s, d in zip(c.offsets, c.sizes, t.shape, strict=False))
            ):
                out.problems.append(
                    Problem(
                        "bad-tensor", fqn, f"a chunk of '{fqn}' lies outside its shape {t.shape}"
                    )
                )
                break
            total += _volume(c.sizes)
            if (fqn, c.offsets) not in stored:
                out.problems.append(
                    Problem(
                        "storage-missing", fqn, f"chunk {c.offsets} of '{fqn}' is stored in no file"
                    )
                )
        else:
            if total < _volume(t.shape):
                out.problems.append(
                    Problem(
                        "storage-missing",
                        fqn,
                        f"the chunks of '{fqn}' cover {total:,} of its "
                        f"{_volume(t.shape):,} elements",
                    )
                )
    return out

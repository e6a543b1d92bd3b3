"""Rewrite a real safetensors file without some of its tensors, as a writer that lost them
would (header and data consistent). Importable from any test module as ``import rewrite``."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any


def rewrite_without(path: Path, drop: Callable[[str], bool]) -> list[str]:
    """Write ``path`` again without the tensors ``drop(name)`` selects; their names."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    data = blob[8 + n :]
    meta = header.pop("__metadata__", None)
    kept: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    removed = []
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if drop(name):
            removed.append(name)
            continue
        a, b = info["data_offsets"]
        chunks.append(data[a:b])
        kept[name] = {**info, "data_offsets": [offset, offset + b - a]}
        offset += b - a
    if meta is not None:
        kept["__metadata__"] = meta
    text = json.dumps(kept, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    return removed


def rewrite_with(path: Path, add: dict[str, tuple[str, list[int], bytes]]) -> None:
    """Write ``path`` again with the tensors ``add`` names (name -> dtype, shape, data)
    appended after its own, header and data consistent."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    data = blob[8 + n :]
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    chunks = [data[:end]]
    for name, (dtype, shape, raw) in add.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [end, end + len(raw)]}
        chunks.append(raw)
        end += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def tensor_of(path: Path, name: str) -> tuple[str, list[int], bytes]:
    """``name``'s dtype, shape and bytes in the safetensors file ``path``."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    info = json.loads(blob[8 : 8 + n])[name]
    a, b = info["data_offsets"]
    return info["dtype"], list(info["shape"]), blob[8 + n + a : 8 + n + b]

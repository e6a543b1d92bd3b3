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

"""Sparse full-size safetensors files: real headers, data left as a hole."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

# Bits per element of each safetensors dtype (as the format defines them).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip
DTYPE_BYTES: dict[str, float] = {k: v / 8 for k, v in DTYPE_BITS.items()}

TensorSpec = tuple[str, Sequence[int]]  # (dtype, shape)


def tensor_nbytes(dtype: str, shape: Sequence[int]) -> int:
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8:
        raise ValueError(f"{dtype} {list(shape)} is not a whole number of bytes")
    return bits // 8


def header_json(
    tensors: Mapping[str, TensorSpec], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, int]:
    """The header the safetensors writer would produce, and the data size.

    Tensors are laid out in the writer's order (dtype alignment descending, then
    name) and the JSON is padded with spaces to a multiple of 8 bytes, as the
    reference writer does.
    """
    order = sorted(tensors, key=lambda n: (-DTYPE_BITS[tensors[n][0]], n))
    doc: dict[str, object] = {}
    if metadata is not None:
        doc["__metadata__"] = dict(metadata)
    offset = 0
    for name in order:
        dtype, shape = tensors[name]
        size = tensor_nbytes(dtype, shape)
        doc[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return text, offset


def write_sparse_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, TensorSpec],
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write a full-size .safetensors file whose data section is a hole. Returns its size."""
    text, data_size = header_json(tensors, metadata)
    size = 8 + len(text) + data_size
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.truncate(size)
    return size


def write_index(
    directory: str | os.PathLike[str],
    weight_map: Mapping[str, str],
    total_size: int,
    name: str = "model.safetensors.index.json",
) -> Path:
    path = Path(directory) / name
    doc = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def write_sparse_checkpoint(
    directory: str | os.PathLike[str],
    tensors: Mapping[str, TensorSpec],
    shards: int = 1,
    config: Mapping[str, object] | None = None,
    metadata: Mapping[str, str] | None = None,
    weight_map: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write a (sharded) sparse checkpoint: shards, an index when sharded, config.json.

    With ``weight_map`` (tensor -> shard file name, as in a real index) the shards
    follow it; otherwise tensors are split in order into ``shards`` files of about
    equal size, named as transformers names them.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if metadata is None:
        metadata = {"format": "pt"}
    if weight_map is None:
        if shards == 1:
            weight_map = {name: "model.safetensors" for name in tensors}
        else:
            total = sum(tensor_nbytes(*tensors[n]) for n in tensors)
            per_shard = total / shards
            assigned: dict[str, str] = {}
            acc = 0
            for name in tensors:
                k = min(int(acc // per_shard), shards - 1) if per_shard else 0
                assigned[name] = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
                acc += tensor_nbytes(*tensors[name])
            weight_map = assigned
    by_file: dict[str, dict[str, TensorSpec]] = {}
    for name, file in weight_map.items():
        by_file.setdefault(file, {})[name] = tensors[name]
    paths = []
    for file, members in sorted(by_file.items()):
        write_sparse_safetensors(out / file, members, metadata)
        paths.append(out / file)
    if len(by_file) > 1:
        total = sum(tensor_nbytes(*tensors[n]) for n in weight_map)
        write_index(out, weight_map, total)
    if config is not None:
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return paths

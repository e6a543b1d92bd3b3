"""Helpers that write real checkpoint files for tests, benchmarks and demos.

Small files are written by the `safetensors` library itself. Full-size files are
written as the format lays them out (length prefix, JSON header, data) with the
data section left as a hole, so a 16 GB shard costs a few KB of disk.
"""

from pyaudit.testing.sparse import (
    DTYPE_BYTES,
    header_json,
    write_index,
    write_sparse_checkpoint,
    write_sparse_safetensors,
)

__all__ = [
    "DTYPE_BYTES",
    "header_json",
    "write_index",
    "write_sparse_checkpoint",
    "write_sparse_safetensors",
]

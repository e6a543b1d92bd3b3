"""``.safetensors`` files as a tensor table (the header reader of pyaudit.headers)."""

from __future__ import annotations

from pyaudit.formats.table import TableEntry, TensorTable
from pyaudit.headers import Header, read_headers


def header_table(header: Header) -> TensorTable:
    table = TensorTable(
        path=header.path, format="safetensors", kind="header", file_size=header.file_size
    )
    if not header.ok:
        error = header.error
        table.rule = header.rule
        table.message = error.reason if error else header.rule
        return table
    table.bytes_read = 8 + header.header_size
    table.tensors = {
        t.name: TableEntry(t.name, t.dtype, t.shape, t.nbytes) for t in header.tensors.values()
    }
    return table


def read_safetensors_table(path: str) -> TensorTable:
    return header_table(read_headers([path], jobs=1)[0])

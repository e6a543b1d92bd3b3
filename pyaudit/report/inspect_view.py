"""`pyaudit inspect`: one file's header as a table or as the JSON of CONTRACT.md."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from pyaudit.headers import Header
from pyaudit.report.sizes import human_bytes, human_shape

SCHEMA = 1


def inspect_json(header: Header) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "path": header.path,
        "ok": header.ok,
        "error": None if header.ok else (header.error.reason if header.error else header.rule),
        "rule": header.rule,
        "error_tensor": None if header.error is None else header.error.tensor,
        "file_bytes": header.file_size,
        "header_bytes": header.header_size,
        "data_bytes": header.data_size if header.ok else None,
        "metadata": header.metadata,
        "tensors": {
            t.name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(t.data_offsets)}
            for t in (header.tensors.values() if header.ok else ())
        },
    }


def print_inspect(header: Header, console: Console) -> None:
    console.print(f"[bold]{header.path}[/bold]  {human_bytes(header.file_size)}")
    if not header.ok:
        error = header.error
        assert error is not None
        console.print(f"[bold red]INVALID[/bold red] ({error.rule}): {error.reason}")
        return
    console.print(
        f"header {header.header_size:,} bytes, tensor data {human_bytes(header.data_size)}"
    )
    if header.metadata:
        pairs = ", ".join(f"{k}={v}" for k, v in sorted(header.metadata.items()))
        console.print(f"__metadata__: {pairs}")
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("tensor", overflow="fold")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("size", justify="right")
    table.add_column("offsets", justify="right")
    for t in header.tensors.values():
        table.add_row(
            t.name,
            t.dtype,
            human_shape(t.shape),
            human_bytes(t.nbytes),
            f"{t.data_offsets[0]}-{t.data_offsets[1]}",
        )
    console.print(table)
    dtypes = Counter(t.dtype for t in header.tensors.values())
    mix = ", ".join(f"{n} {d}" for d, n in dtypes.most_common())
    console.print(
        f"[bold]{len(header)} tensors[/bold] ({mix or 'none'}), "
        f"{human_bytes(header.data_size)} of tensor data: [green]valid[/green]"
    )

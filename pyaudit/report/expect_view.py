"""`pyaudit expect`: a manifest as a table."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from pyaudit.manifest import Manifest
from pyaudit.report.sizes import human_bytes, human_shape


def print_expect(manifest: Manifest, layout_names: list[str], console: Console) -> None:
    console.print(
        f"[bold]{manifest.model_type}[/bold]  dtype {manifest.dtype}  layout {manifest.layout}"
        + (f"  (also healthy: {', '.join(n for n in layout_names if n != manifest.layout)})"
           if len(layout_names) > 1 else "")
        + (f"  quantization {manifest.quantization}" if manifest.quantization else "")
    )
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    table.add_column("tensor", overflow="fold")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("size", justify="right")
    for name, t in manifest.tensors.items():
        table.add_row(name, t.dtype, human_shape(t.shape), human_bytes(t.nbytes))
    console.print(table)
    dtypes = Counter(t.dtype for t in manifest.tensors.values())
    tied = f"; tied, not stored: {', '.join(manifest.tied)}" if manifest.tied else ""
    console.print(
        f"[bold]{len(manifest.tensors)} tensors[/bold] "
        f"({', '.join(f'{n} {d}' for d, n in dtypes.most_common())}), "
        f"{human_bytes(manifest.total_bytes)} ({manifest.total_bytes:,} bytes){tied}"
    )

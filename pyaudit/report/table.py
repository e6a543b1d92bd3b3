"""The terminal report of a scan: one row per checkpoint, then what is wrong and why."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pyaudit.auditing.results import CheckpointReport
from pyaudit.findings import worst_first
from pyaudit.report.sizes import human_bytes

STATUS_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red"}
SEVERITY_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


def bytes_pair(found: int | None, expected: int | None) -> str:
    """'0.12 GB of 16.58 GB': both in the expected size's unit, so they compare at a glance."""
    if expected is None:
        return human_bytes(found)
    unit, scale = "B", 1.0
    for u, s in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if expected >= s:
            unit, scale = u, s
            break
    if unit == "B":
        return f"{found or 0} B of {expected} B"
    return f"{(found or 0) / scale:.2f} {unit} of {expected / scale:.2f} {unit}"


def tensors_pair(report: CheckpointReport) -> str:
    found, expected = report.tensors["found"], report.tensors["expected"]
    if expected is None:
        return f"{found}"
    return f"{found} / {expected}"


def print_scan(reports: list[CheckpointReport], summary: dict[str, object], console: Console) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    table.add_column("status")
    table.add_column("checkpoint", overflow="fold")
    table.add_column("kind")
    table.add_column("model")
    table.add_column("tensors", justify="right")
    table.add_column("size", justify="right")
    for r in reports:
        table.add_row(
            Text(r.status.upper(), style=STATUS_STYLE.get(r.status, "")),
            r.path,
            r.kind,
            r.model_type or "?",
            tensors_pair(r),
            bytes_pair(r.bytes["found"], r.bytes["expected"]),
        )
    console.print(table)
    for r in reports:
        shown = [f for f in r.findings if f.severity != "info" or r.status != "pass"]
        if r.status == "pass" or not shown:
            continue
        console.print()
        header = Text(r.path, style="bold")
        header.append(f"  {r.status.upper()}", style=STATUS_STYLE.get(r.status, ""))
        details = [x for x in (r.expected_source and f"expected from {r.expected_source}",
                               r.layout and r.layout != "default" and f"layout {r.layout}", r.declared) if x]
        if details:
            header.append("  (" + "; ".join(details) + ")", style="dim")
        console.print(header)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=1)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for f in worst_first(shown):
            grid.add_row("", Text(f.severity, style=SEVERITY_STYLE.get(f.severity, "")),
                         Text(f.code, style="bold"), f.message)
        console.print(grid)
    console.print()
    console.print(_summary_line(summary))


def _summary_line(summary: dict[str, object]) -> Text:
    text = Text(f"{summary['checkpoints']} checkpoints: ")
    text.append(f"{summary['pass']} pass", style="green")
    text.append(", ")
    text.append(f"{summary['warn']} warn", style="yellow")
    text.append(", ")
    text.append(f"{summary['fail']} fail", style="red")
    text.append(f" ({summary['seconds']} s)")
    return text

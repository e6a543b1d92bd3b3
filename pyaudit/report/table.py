"""The terminal report of a scan: one row per checkpoint, then what is wrong and why."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pyaudit.auditing.results import CheckpointReport
from pyaudit.findings import worst_first
from pyaudit.report.sizes import human_bytes, plural

STATUS_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red"}
SEVERITY_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


def bytes_pair(found: int | None, expected: int | None) -> str:
    """'0.12 GB of 16.58 GB': both in the expected size's unit, so they compare at a glance."""
    if expected is None:
        return human_bytes(found)
    if found is None:  # not known (a ZeRO-3 state records shapes, not dtypes)
        return f"? of {human_bytes(expected)}"
    unit, scale = "B", 1.0
    for u, s in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if expected >= s:
            unit, scale = u, s
            break
    if unit == "B" or not found:
        return f"{found or 0} B of {human_bytes(expected)}"
    return f"{found / scale:.2f} {unit} of {expected / scale:.2f} {unit}"


def size_cell(report: CheckpointReport) -> str:
    """Bytes found against expected; an adapter's own size, and the base it lacks."""
    if report.adapter is not None:
        base = report.adapter.base_bytes_expected
        own = human_bytes(report.adapter.bytes)
        return f"{own} adapter" + (f" (base {human_bytes(base)} not here)" if base else "")
    return bytes_pair(report.bytes["found"], report.bytes["expected"])


def tensors_pair(report: CheckpointReport) -> str:
    if report.adapter is not None:
        # Adapter tensors are not base tensors: say what each number counts.
        a = report.adapter
        shown = f"{a.tensors} adapter"
        if a.base_expected is not None:
            shown += f", base {a.base_found} of {a.base_expected}"
        return shown
    found, expected = report.tensors["found"], report.tensors["expected"]
    shown = "?" if found is None else f"{found}"
    if expected is None:
        return shown
    return f"{shown} / {expected}"


#: Passing checkpoints listed before the rest are collapsed into one line (``--all`` lists
#: them all): a store of 20,000 shows what matters, not 20,000 PASS rows.
SCREENFUL = 20


def keep_for_table(report: CheckpointReport, passes_kept: int, show_all: bool) -> bool:
    """Whether the terminal report needs ``report`` (a sweep keeps no other: memory stays
    flat however many pass): every checkpoint that is not PASS, the first SCREENFUL
    passing ones, or all with ``show_all``."""
    return show_all or report.status != "pass" or passes_kept < SCREENFUL


def print_scan(
    reports: list[CheckpointReport],
    summary: dict[str, object],
    console: Console,
    show_all: bool = False,
) -> None:
    """The summary; a row per checkpoint, those that are not PASS first and passing ones
    collapsed past a screenful (unless ``show_all``); then what is wrong with each and why.
    ``reports`` may hold only what :func:`keep_for_table` kept: the summary has the counts."""
    console.print(_summary_line(summary))
    console.print()
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    table.add_column("status")
    table.add_column("checkpoint", overflow="fold")
    table.add_column("kind")
    table.add_column("model")
    table.add_column("tensors", justify="right")
    table.add_column("size", justify="right")
    passing = [r for r in reports if r.status == "pass"]
    listed = passing if show_all else passing[:SCREENFUL]
    for r in [r for r in reports if r.status != "pass"] + listed:
        table.add_row(
            Text(r.status.upper(), style=STATUS_STYLE.get(r.status, "")),
            r.path,
            r.kind,
            r.model_type or "?",
            tensors_pair(r),
            size_cell(r),
        )
    console.print(table)
    passed = summary.get("pass")
    hidden = (passed if isinstance(passed, int) else len(passing)) - len(listed)
    if hidden > 0:
        more = "more passing checkpoint" + ("s" if hidden != 1 else "")
        console.print(Text(f"PASS    ... {hidden:,} {more} (--all lists them)", style="dim"))
    for r in reports:
        shown = [f for f in r.findings if f.severity != "info" or r.status != "pass"]
        if r.status == "pass" or not shown:
            continue
        console.print()
        header = Text(r.path, style="bold")
        header.append(f"  {r.status.upper()}", style=STATUS_STYLE.get(r.status, ""))
        details = [
            x
            for x in (
                r.expected_source and f"expected from {r.expected_source}",
                r.layout and r.layout != "default" and f"layout {r.layout}",
                r.declared,
            )
            if x
        ]
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
    n = summary["checkpoints"]
    text = Text(f"{plural(n, 'checkpoint') if isinstance(n, int) else n}: ")
    text.append(f"{summary['pass']} pass", style="green")
    text.append(", ")
    text.append(f"{summary['warn']} warn", style="yellow")
    text.append(", ")
    text.append(f"{summary['fail']} fail", style="red")
    text.append(f" ({summary['seconds']} s)")
    return text

"""`scan --markdown`: a GitHub-flavoured Markdown summary for a pull request or a CI job
summary (`$GITHUB_STEP_SUMMARY`): one table row per checkpoint, worst first, then the
findings of the checkpoints that need attention.

Paths, model types and messages come from the scanned tree, so every cell is escaped:
paths and codes go in code spans (a fence longer than any backtick run inside, `|`
escaped as GFM tables require even there); other text is backslash-escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pyaudit import __version__
from pyaudit.auditing.results import CheckpointReport
from pyaudit.findings import worst_first as findings_worst_first
from pyaudit.report.html import worst_first
from pyaudit.report.table import size_cell, tensors_pair

STATUS_MD = {"fail": "\u274c fail", "warn": "\u26a0\ufe0f warn", "pass": "\u2705 pass"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# `_` only where it could open or close emphasis: an intraword `_` never does in GFM,
# so `qwen2_5_vl` and `model.embed_tokens.weight` stay readable in the raw text.
_SPECIAL = re.compile(r"([\\`*\[\]<>|~&$]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")


def _printable(s: object) -> str:
    """One line of valid UTF-8: control characters (a newline would end the table row)
    and lone surrogates (undecodable file names) become visible escapes."""
    text = str(s).encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def md_text(s: object) -> str:
    """Plain text, every Markdown-active character backslash-escaped (`|` included)."""
    return _SPECIAL.sub(lambda m: "\\" + m.group(), _printable(s))


def md_code(s: object, in_table: bool = True) -> str:
    """A code span holding ``s`` verbatim. In a table cell `|` must be escaped even inside
    the span (GFM splits cells first); outside a table the backslash would show."""
    text = _printable(s)
    if in_table:
        text = text.replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    if (
        text.startswith("`")
        or text.endswith("`")
        or (text.startswith(" ") and text.endswith(" ") and text.strip())
    ):
        text = f" {text} "
    return f"{fence}{text}{fence}"


MAX_ROWS = 200  # table rows before passing checkpoints are only counted
MAX_DETAILED = 100  # checkpoints whose findings are written out


def scan_markdown(
    reports: Iterable[CheckpointReport], summary: dict[str, Any], paths: Sequence[str] = ()
) -> str:
    ordered = worst_first(reports)
    lines = [
        f"### pyaudit: {summary.get('checkpoints', len(ordered))} checkpoints, "
        + ", ".join(f"{summary.get(k, 0)} {k}" for k in ("fail", "warn", "pass")),
        "",
    ]
    scanned = ", ".join(md_code(p, in_table=False) for p in paths)
    lines.append(
        (f"Scanned {scanned} in " if scanned else "Scanned in ")
        + f"{md_text(summary.get('seconds', '?'))} s with pyaudit {md_text(__version__)}."
    )
    lines.append("")
    if not ordered:
        lines.append("No checkpoints found.")
        return "\n".join(lines) + "\n"
    lines.append("| status | checkpoint | kind | model | tensors | size |")
    lines.append("| --- | --- | --- | --- | ---: | ---: |")
    # A CI job summary holds 1 MiB: past MAX_ROWS, passing checkpoints are counted, not listed.
    listed = [r for i, r in enumerate(ordered) if i < MAX_ROWS or r.status != "pass"]
    for r in listed:
        cells = (
            STATUS_MD.get(r.status, md_text(r.status)),
            md_code(r.path),
            md_text(r.kind),
            md_text(r.model_type or "?"),
            md_text(tensors_pair(r)),
            md_text(size_cell(r)),
        )
        lines.append("| " + " | ".join(cells) + " |")
    if len(listed) < len(ordered):
        lines.append(f"| | ... and {len(ordered) - len(listed)} more passing checkpoints | | | | |")
    attention = [r for r in ordered if r.status in ("fail", "warn")]
    if attention:
        lines += ["", "#### Findings"]
    for r in attention[:MAX_DETAILED]:
        shown = findings_worst_first(f for f in r.findings if f.severity != "info")
        if not shown:
            continue
        lines += [
            "",
            f"{md_code(r.path, in_table=False)} \u2014 "
            + STATUS_MD.get(r.status, md_text(r.status)),
            "",
        ]
        for f in shown:
            lines.append(
                f"- **{md_text(f.severity)}** {md_code(f.code, in_table=False)}: "
                + md_text(f.message)
            )
    if len(attention) > MAX_DETAILED:
        lines += ["", f"... and {len(attention) - MAX_DETAILED} more checkpoints with findings "
                  "(the full list: `pyaudit scan --json`)."]
    return "\n".join(lines) + "\n"

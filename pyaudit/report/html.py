"""`scan --html FILE`: one self-contained page, worst checkpoints first.

No template engine, no script, no resource from anywhere: inline CSS, `<details>` for the
findings, and a Content-Security-Policy that forbids scripts, so that a hostile checkpoint
or tensor name that got past the escaping would still run nothing. Every string from the
scanned tree (paths, model types, tensor names, messages) goes through `html.escape`.

One row per checkpoint, a few hundred bytes each, built in one pass: 5,000 checkpoints make
a page of a few MB that a browser lays out lazily (`content-visibility: auto`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from pyaudit import __version__
from pyaudit.auditing.results import CheckpointReport
from pyaudit.findings import worst_first as findings_worst_first
from pyaudit.report.table import bytes_pair, tensors_pair

STATUS_RANK = {"fail": 0, "warn": 1, "pass": 2}
NAMES_SHOWN = 10  # tensor names listed under a finding; the rest is counted


def worst_first(reports: Iterable[CheckpointReport]) -> list[CheckpointReport]:
    """fail, warn, pass; within each, most errors (then warnings) first; then by path."""

    def key(r: CheckpointReport) -> tuple[int, int, int, list[Any]]:
        errors = sum(f.severity == "error" for f in r.findings)
        warnings = sum(f.severity == "warning" for f in r.findings)
        return (STATUS_RANK.get(r.status, 3), -errors, -warnings, _natural(r.path))

    return sorted(reports, key=key)


def _natural(path: str) -> list[Any]:
    """checkpoint-50 before checkpoint-100: digit runs compare as numbers."""
    parts: list[Any] = re.split(r"(\d+)", path)
    parts[1::2] = [int(p) for p in parts[1::2]]
    return parts


def bar_widths(found: int | None, expected: int | None) -> tuple[float, float] | None:
    """(found %, overflow %) of the bar's track, or None when nothing says what to expect.

    At or under the expected size the track is the expected bytes and the fill is found's
    share of it. Over it (fp32 saved where bf16 was meant), the track is the found bytes:
    the expected part fills as usual and the excess shows as a distinct overflow segment,
    so the two always add up to at most 100%.
    """
    if expected is None:
        return None
    found = found or 0
    if expected <= 0:
        return (0.0, 100.0 if found > 0 else 0.0)
    if found <= expected:
        return (100.0 * found / expected, 0.0)
    inside = 100.0 * expected / found
    return (inside, 100.0 - inside)


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _bar(r: CheckpointReport) -> str:
    found, expected = r.bytes["found"], r.bytes["expected"]
    label = bytes_pair(found, expected)
    widths = bar_widths(found, expected)
    if widths is None:
        return f'<span class="size"><span class="bar none"></span>{_e(label)}</span>'
    fill, over = widths
    title = label
    if over > 0 and expected:
        title += f" ({(found or 0) / expected:.1f}\u00d7 the expected size)"
    inner = f'<i style="width:{fill:.1f}%"></i>'
    if over > 0:
        inner += f'<b style="width:{over:.1f}%"></b>'
    cls = "bar over" if over > 0 else "bar"
    bar = f'<span class="{cls}" title="{_e(title)}">{inner}</span>'
    return f'<span class="size">{bar}{_e(label)}</span>'


def _finding_counts(r: CheckpointReport) -> str:
    parts = []
    for severity, word in (("error", "error"), ("warning", "warning"), ("info", "note")):
        n = sum(f.severity == severity for f in r.findings)
        if n:
            parts.append(f"{n} {word}{'s' if n != 1 else ''}")
    return ", ".join(parts)


def _row(r: CheckpointReport) -> str:
    status = r.status if r.status in STATUS_RANK else "unknown"
    counts = _finding_counts(r)
    cells = (
        f'<span class="st">{_e(r.status.upper())}</span>'
        f'<span class="path">{_e(r.path)}'
        + (f"<small>{_e(counts)}</small>" if counts else "")
        + "</span>"
        f"<span>{_e(r.kind)}</span>"
        f"<span>{_e(r.model_type or '?')}</span>"
        f"<span>{_e(r.layout or '')}</span>"
        f'<span class="num">{_e(tensors_pair(r))}</span>' + _bar(r)
    )
    if not r.findings and not r.expected_source and not r.declared:
        return f'<div class="ck {status}"><div class="row">{cells}</div></div>\n'
    body = []
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
        body.append(f'<p class="meta">{_e("; ".join(details))}</p>')
    if r.findings:
        body.append("<ul>")
        for f in findings_worst_first(r.findings):
            names = ""
            if f.tensors:
                shown = f.tensors[:NAMES_SHOWN]
                rest = max(f.count, len(f.tensors)) - len(shown)
                text = ", ".join(shown) + (f", \u2026 and {rest} more" if rest > 0 else "")
                names = f'<div class="tn">{_e(text)}</div>'
            body.append(
                f'<li class="{_e(f.severity)}"><span class="sev">{_e(f.severity)}</span>'
                f'<code>{_e(f.code)}</code> <span class="msg">{_e(f.message)}</span>{names}</li>'
            )
        body.append("</ul>")
    return (
        f'<details class="ck {status}"><summary class="row">{cells}</summary>'
        f'<div class="body">{"".join(body)}</div></details>\n'
    )


CSS = """
:root{--fail:#c62828;--warn:#b26a00;--pass:#2e7d32;--fg:#1f2328;--dim:#656d76;--line:#d8dee4;
--bg:#fff;--alt:#f6f8fa;--track:#e3e7ec;--fill:#4a78c2}
@media (prefers-color-scheme:dark){:root{--fail:#f47067;--warn:#d29922;--pass:#57ab5a;--fg:#d1d7e0;
--dim:#9198a1;--line:#3d444d;--bg:#1b1f24;--alt:#22272e;--track:#3d444d;--fill:#6b9be0}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{padding:16px 24px 12px;border-bottom:1px solid var(--line)}
h1{margin:0 0 6px;font-size:20px}
h1 .v{font-size:13px;font-weight:normal;color:var(--dim);margin-left:8px}
.chips{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:baseline}
.chip{font-weight:600}.chip.fail{color:var(--fail)}.chip.warn{color:var(--warn)}
.chip.pass{color:var(--pass)}
.dim{color:var(--dim)}
.paths{margin-top:4px;color:var(--dim);overflow-wrap:anywhere}
.paths code{color:var(--fg)}
code,.tn{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
main{padding:0 24px 24px}
.row{display:grid;grid-template-columns:1.1em 3.6em minmax(14em,1fr) 4.6em 7.5em 5.5em 6.5em 17em;
gap:0 10px;align-items:center;padding:5px 6px}
.head{position:sticky;top:0;z-index:1;background:var(--bg);font-weight:600;
border-bottom:2px solid var(--line)}
.head span:first-child{grid-column:2}
.ck{border-bottom:1px solid var(--line);content-visibility:auto;contain-intrinsic-size:auto 34px}
.ck:nth-child(even){background:var(--alt)}
.ck>.row::before{content:"";grid-column:1;color:var(--dim)}
summary{cursor:pointer;list-style:none}
summary::-webkit-details-marker{display:none}
.ck>summary.row::before{content:"\\25B8"}
details[open]>summary.row::before{content:"\\25BE"}
summary:hover{background:rgba(127,127,127,.08)}
.st{font-weight:700;font-size:12px;letter-spacing:.03em}
.fail .st{color:var(--fail)}.warn .st{color:var(--warn)}.pass .st{color:var(--pass)}
.ck.fail{box-shadow:inset 3px 0 var(--fail)}.ck.warn{box-shadow:inset 3px 0 var(--warn)}
.ck.pass{box-shadow:inset 3px 0 var(--pass)}
.path{overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:13px}
.path small{margin-left:10px;font-family:system-ui,sans-serif;font-size:12px;color:var(--dim)}
.num{text-align:right;font-variant-numeric:tabular-nums}
.size{display:flex;align-items:center;gap:8px;font-variant-numeric:tabular-nums;
white-space:nowrap;font-size:12.5px}
.bar{flex:0 0 70px;height:10px;border-radius:2px;background:var(--track);display:flex;
overflow:hidden}
.bar i{display:block;background:var(--fill)}
.bar b{display:block;
background:repeating-linear-gradient(135deg,var(--warn) 0 3px,transparent 3px 6px);
border-left:2px solid var(--fg)}
.bar.none{background:repeating-linear-gradient(90deg,var(--track) 0 4px,transparent 4px 7px)}
.body{padding:2px 12px 10px calc(1.1em + 3.6em + 26px)}
.meta{margin:2px 0 6px;color:var(--dim)}
.body ul{margin:0;padding:0;list-style:none}
.body li{margin:4px 0;padding-left:10px;border-left:3px solid var(--line)}
.body li.error{border-color:var(--fail)}.body li.warning{border-color:var(--warn)}
.sev{display:inline-block;min-width:5.2em;margin-right:4px;font-size:12px;font-weight:600;
color:var(--dim)}
li.error .sev{color:var(--fail)}li.warning .sev{color:var(--warn)}
.body li code{font-weight:600;margin-right:4px}
.msg{overflow-wrap:anywhere}
.tn{overflow-wrap:anywhere;color:var(--dim);margin:3px 0 2px}
.legend{margin:10px 0 6px;color:var(--dim);font-size:12.5px;display:flex;gap:16px;
align-items:center}
.legend .bar{display:inline-flex;width:40px;flex-basis:40px}
.empty{padding:24px 6px;color:var(--dim)}
"""

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; script-src 'none'; "
    "base-uri 'none'; form-action 'none'"
)


def render_html(
    reports: Iterable[CheckpointReport], summary: dict[str, Any], paths: Sequence[str] = ()
) -> str:
    ordered = worst_first(reports)
    n = summary.get("checkpoints", len(ordered))
    counts = [f"{summary.get(k, 0)} {k}" for k in ("fail", "warn", "pass")]
    title = "pyaudit: " + ", ".join(counts)
    if paths:
        title += " \u2014 " + ", ".join(paths)
    out = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<header>\n",
        f'<h1>pyaudit scan<span class="v">pyaudit {_e(__version__)}</span></h1>\n',
        '<div class="chips">',
        f'<span class="chip">{_e(n)} checkpoint{"s" if n != 1 else ""}</span>',
        f'<span class="chip fail">{_e(summary.get("fail", 0))} fail</span>',
        f'<span class="chip warn">{_e(summary.get("warn", 0))} warn</span>',
        f'<span class="chip pass">{_e(summary.get("pass", 0))} pass</span>',
        f'<span class="dim">{_e(summary.get("seconds", "?"))} s</span>',
        "</div>\n",
    ]
    if paths:
        out.append(
            '<div class="paths">scanned '
            + ", ".join(f"<code>{_e(p)}</code>" for p in paths)
            + "</div>\n"
        )
    out.append("</header>\n<main>\n")
    out.append(
        '<div class="legend"><span>size: found of expected bytes</span>'
        '<span><span class="bar"><i style="width:60%"></i></span> under</span>'
        '<span><span class="bar over"><i style="width:50%"></i><b style="width:50%"></b></span>'
        " over (excess hatched)</span>"
        "<span>click a row for its findings</span></div>\n"
    )
    out.append(
        '<div class="row head"><span>status</span><span>checkpoint</span><span>kind</span>'
        "<span>model</span><span>layout</span>"
        '<span class="num">tensors</span><span>size</span></div>\n'
    )
    if not ordered:
        out.append('<p class="empty">No checkpoints found.</p>\n')
    out.append('<div class="rows">\n')
    out.extend(_row(r) for r in ordered)
    out.append("</div>\n</main>\n</body>\n</html>\n")
    return "".join(out)


def write_html(
    path: str | os.PathLike[str],
    reports: Iterable[CheckpointReport],
    summary: dict[str, Any],
    paths: Sequence[str] = (),
) -> None:
    """Write the page; names that are not valid UTF-8 (lone surrogates from the file
    system) are written as backslash escapes instead of failing the write."""
    text = render_html(reports, summary, paths)
    with open(path, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(text)

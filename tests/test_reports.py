"""`scan --html FILE` and `scan --markdown`: the demo store and a store of hostile names.

The HTML is parsed back (html.parser, with a check that every element closes), so the
assertions are about what a browser would see: the rows, their order, the bars' widths,
and the text of a checkpoint named `<script>alert(1)</script>` shown as text. The
Markdown is rendered back with markdown-it (which rich, a runtime dependency, installs)
so that a `|` or a backtick in a name is checked to land in the right cell.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pyaudit import __version__
from pyaudit.cli import main
from pyaudit.report.html import bar_widths
from pyaudit.report.markdown import md_code, md_text
from pyaudit.report.sizes import human_bytes
from pyaudit.report.table import bytes_pair

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "store"
SCRIPT_NAME = "<script>alert(1)</script>"
PIPE_NAME = "pipe|tick`name"
IMG_TENSOR = "<img src=x onerror=alert(1)>.weight"
EVIL_MODEL = "<b>evil|`</b>"
STATUS_RANK = {"fail": 0, "warn": 1, "pass": 2}
VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


# --- stores --------------------------------------------------------------------------


@pytest.fixture
def demo_store(tmp_path: Path) -> Path:
    if not DEMO.is_dir():
        pytest.skip("examples/store not found")
    return Path(shutil.copytree(DEMO, tmp_path / "store"))


@pytest.fixture
def hostile_store(tmp_path: Path) -> Path:
    """Three tiny real qwen3 checkpoints (the demo store's config): one passing under a
    `<script>` name, one failing under a name with `|` and a backtick and holding a tensor
    named like an `<img onerror>` tag, one warning with a hostile `model_type`."""
    pytest.importorskip("safetensors")
    pytest.importorskip("numpy")
    from pyaudit.testing.stores import manifest_tensors, write_checkpoint

    config = json.loads((DEMO / "fp32-export" / "config.json").read_text())
    tensors = manifest_tensors(config)
    out = tmp_path / "hostile"
    write_checkpoint(out / SCRIPT_NAME, config, tensors, sparse=False)
    odd = dict(tensors)
    odd[IMG_TENSOR] = ("BF16", [4])
    del odd["model.norm.weight"]
    write_checkpoint(out / PIPE_NAME, config, odd, sparse=False)
    evil = dict(config, model_type=EVIL_MODEL, architectures=["Evil"])
    write_checkpoint(out / "unknown-arch", evil, tensors, sparse=False)
    return out


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["scan", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def scan_json(capsys: pytest.CaptureFixture[str], store: Path) -> dict[str, Any]:
    _, out, _ = run(capsys, store, "--json")
    return json.loads(out)


# --- the HTML, read back -------------------------------------------------------------


class Page(HTMLParser):
    """Records the rows (status, path, bar widths), every tag and attribute, and any
    element that does not close where it should."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, list[str]]] = []
        self.errors: list[str] = []
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str | None]] = []
        self.rows: list[dict[str, Any]] = []
        self.text: list[str] = []
        self._in_path = False

    def _in_row(self) -> bool:
        return any("ck" in cls for _, cls in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.extend(attrs)
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if "ck" in cls:
            status = [c for c in cls if c != "ck"]
            self.rows.append({"status": status[0], "path": "", "widths": {}, "tag": tag})
        elif "path" in cls and self._in_row():
            self._in_path = True
        elif tag == "small":
            self._in_path = False
        elif tag in ("i", "b") and self._in_row() and self.stack and "bar" in self.stack[-1][1]:
            m = re.fullmatch(r"width:([0-9.]+)%", a.get("style") or "")
            assert m, a
            self.rows[-1]["widths"][tag] = float(m.group(1))
        if tag not in VOID:
            self.stack.append((tag, cls))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.errors.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1][0] if self.stack else 'nothing'}")
            return
        _, cls = self.stack.pop()
        if "path" in cls:
            self._in_path = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_path:
            self.rows[-1]["path"] += data


def parse(document: str) -> Page:
    page = Page()
    page.feed(document)
    page.close()
    assert not page.errors, page.errors[:5]
    assert not page.stack, f"unclosed: {page.stack}"
    return page


def assert_self_contained(document: str, page: Page) -> None:
    assert page.tags.isdisjoint({"script", "iframe", "object", "embed", "img", "link", "base"})
    assert not re.search(r"<\s*script", document, re.IGNORECASE)
    assert "http://" not in document and "https://" not in document
    assert "url(" not in document and "@import" not in document
    names = {name for name, _ in page.attrs}
    assert names.isdisjoint({"src", "href", "srcset", "action"}), names
    assert not any(name.startswith("on") for name in names), names


def assert_rows_match(page: Page, doc: dict[str, Any]) -> None:
    """Rows: worst first, and each bar as wide as its checkpoint's bytes say."""
    by_path = {c["path"]: c for c in doc["checkpoints"]}
    assert sorted(r["path"] for r in page.rows) == sorted(by_path)
    keys = []
    for row in page.rows:
        ckpt = by_path[row["path"]]
        assert row["status"] == ckpt["status"]
        errors = sum(f["severity"] == "error" for f in ckpt["findings"])
        keys.append((STATUS_RANK[ckpt["status"]], -errors))
        assert row["tag"] == ("details" if ckpt["findings"] else row["tag"])
        found, expected = ckpt["bytes"]["found"], ckpt["bytes"]["expected"]
        widths = row["widths"]
        if expected is None:
            assert widths == {}, row
        elif found <= expected:
            assert widths.get("i") == pytest.approx(100 * found / expected, abs=0.05), row
            assert "b" not in widths, row
        else:
            assert widths["i"] == pytest.approx(100 * expected / found, abs=0.05), row
            assert widths["b"] == pytest.approx(100 - 100 * expected / found, abs=0.05), row
        assert widths.get("i", 0) + widths.get("b", 0) <= 100.0 + 1e-9
    assert keys == sorted(keys), [r["path"] for r in page.rows]


def test_html_demo_store(
    demo_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.html"
    rc, out, err = run(capsys, demo_store, "--html", report)
    assert rc == 1
    assert "7 checkpoints: 1 pass, 1 warn, 5 fail" in out  # the terminal table, as usual
    assert f"wrote {report}" in err
    document = report.read_text(encoding="utf-8")
    page = parse(document)
    assert_self_contained(document, page)
    doc = scan_json(capsys, demo_store)
    assert_rows_match(page, doc)
    assert [r["status"] for r in page.rows] == ["fail"] * 5 + ["warn", "pass"]
    # the two 3-error adapter checkpoints lead, in step order
    assert page.rows[0]["path"].endswith("checkpoint-50")
    assert page.rows[1]["path"].endswith("checkpoint-100")
    # fp32 drift: the bar overflows, expected part half of the track
    fp32 = next(r for r in page.rows if r["path"] == "fp32-export")
    assert fp32["widths"]["i"] == pytest.approx(50.0, abs=0.1)
    assert fp32["widths"]["b"] == pytest.approx(50.0, abs=0.1)
    text = " ".join(page.text)
    for needle in (
        "7 checkpoints",
        "5 fail",
        "1 warn",
        "1 pass",
        f"pyaudit {__version__}",
        str(demo_store),
        "shard-truncated",
        "dtype-drift",
        "empty-tensors",
        "model.embed_tokens.weight",
    ):
        assert needle in text, needle


def test_html_escapes_hostile_names(
    hostile_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.html"
    rc, _, _ = run(capsys, hostile_store, "--html", report)
    assert rc == 1
    document = report.read_text(encoding="utf-8")
    page = parse(document)
    assert_self_contained(document, page)
    assert "<img" not in document and "<b>evil" not in document
    doc = scan_json(capsys, hostile_store)
    assert_rows_match(page, doc)
    assert [(r["status"], r["path"]) for r in page.rows] == [
        ("fail", PIPE_NAME),
        ("warn", "unknown-arch"),
        ("pass", SCRIPT_NAME),
    ]
    text = "".join(page.text)
    assert IMG_TENSOR in text  # shown, as text
    assert EVIL_MODEL in text


def test_html_with_jsonl_keeps_stdout_json(
    demo_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.html"
    rc, out, err = run(capsys, demo_store, "--jsonl", "--html", report)
    assert rc == 1
    assert len([json.loads(line) for line in out.splitlines()]) == 7
    assert "wrote" in err
    assert len(parse(report.read_text(encoding="utf-8")).rows) == 7


def test_html_into_missing_directory_is_a_usage_error(
    demo_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, demo_store, "--html", tmp_path / "nowhere" / "r.html")
    assert rc == 2
    assert out == ""
    assert "no such directory" in err


def test_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    rc, out, err = run(capsys, tmp_path / "empty", "--markdown", "--html", tmp_path / "r.html")
    assert rc == 2 and "no checkpoints found" in err  # nothing audited is not a pass
    assert "No checkpoints found." in out
    page = parse((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert page.rows == [] and "No checkpoints found." in "".join(page.text)


def test_bar_widths() -> None:
    assert bar_widths(None, None) is None
    assert bar_widths(5, None) is None
    assert bar_widths(0, 100) == (0.0, 0.0)
    assert bar_widths(25, 100) == (25.0, 0.0)
    assert bar_widths(100, 100) == (100.0, 0.0)
    assert bar_widths(200, 100) == (50.0, 50.0)
    inside, over = bar_widths(10_000, 100)  # type: ignore[misc]
    assert inside == pytest.approx(1.0) and over == pytest.approx(99.0)
    assert bar_widths(3, 0) == (0.0, 100.0)


# --- Markdown ------------------------------------------------------------------------


def render_markdown(text: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return str(markdown_it.MarkdownIt("commonmark").enable("table").render(text))


class Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.header: list[str] = []
        self._cell: list[str] | None = None
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_of(markdown: str) -> tuple[list[str], list[list[str]], Cells]:
    cells = Cells()
    cells.feed(render_markdown(markdown))
    cells.close()
    header, *rows = cells.rows
    return header, rows, cells


def test_markdown_demo_store(demo_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, demo_store, "--markdown")
    assert rc == 1
    assert "checkpoints:" not in out  # instead of the terminal table
    doc = scan_json(capsys, demo_store)
    header, rows, _ = table_of(out)
    assert header == ["status", "checkpoint", "kind", "model", "tensors", "size"]
    assert all(len(row) == 6 for row in rows)
    by_path = {c["path"]: c for c in doc["checkpoints"]}
    assert sorted(row[1] for row in rows) == sorted(by_path)
    assert [row[0].split()[-1] for row in rows] == ["fail"] * 5 + ["warn", "pass"]
    for status, path, kind, model, tensors, size in rows:
        ckpt = by_path[path]
        assert status.endswith(ckpt["status"])
        assert (kind, model) == (ckpt["kind"], ckpt["model_type"])
        t, a = ckpt["tensors"], ckpt["adapter"]
        if a is None:
            assert tensors == f"{t['found']} / {t['expected']}"
            assert size == bytes_pair(ckpt["bytes"]["found"], ckpt["bytes"]["expected"])
        else:  # an adapter: its own tensors, then how much of the base it holds
            assert tensors == f"{a['tensors']} adapter, base 0 of {a['base']['expected']}"
            assert size.startswith(f"{human_bytes(a['bytes'])} adapter")
    assert "0 B of 45.50 KB" in out  # zero3: the terminal table's wording
    # findings of the checkpoints that need attention, as a list below the table
    below = out.split("#### Findings", 1)[1]
    for code in ("shard-truncated", "intent-mismatch", "empty-tensors", "dtype-drift"):
        assert f"`{code}`" in below
    headings = [line for line in below.splitlines() if line.startswith("`")]
    assert len(headings) == 6
    assert not any("checkpoint-200-merged`" in line for line in headings)  # it passes


def test_markdown_escapes_hostile_names(
    hostile_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, hostile_store, "--markdown")
    assert rc == 1
    table = [line for line in out.splitlines() if line.startswith("| ")]
    for line in table:  # 7 cell borders, none of them from a name
        assert len(re.findall(r"(?<!\\)\|", line)) == 7, line
    _, rows, cells = table_of(out)
    assert [(row[1], row[3]) for row in rows] == [
        (PIPE_NAME, "qwen3"),
        ("unknown-arch", EVIL_MODEL),
        (SCRIPT_NAME, "qwen3"),
    ]
    assert cells.tags.isdisjoint({"script", "img", "b"}), cells.tags
    rendered = render_markdown(out)
    assert "<script" not in rendered and "<img" not in rendered
    assert "&lt;img src=x onerror=alert(1)&gt;.weight" in rendered


def test_markdown_escapers() -> None:
    assert md_text("a|b`c*d<e>[f]_g_ h_i") == "a\\|b\\`c\\*d\\<e\\>\\[f\\]\\_g\\_ h_i"
    assert md_text("two\nlines") == "two\\\\x0alines"  # renders as two\x0alines, one line
    assert md_code("a|b") == "`a\\|b`"
    assert md_code("a|b", in_table=False) == "`a|b`"
    assert md_code("x``y") == "```x``y```"
    assert md_code("`x") == "`` `x ``"


def test_markdown_excludes_json(demo_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for other in ("--json", "--jsonl"):
        with pytest.raises(SystemExit) as exc:
            main(["scan", str(demo_store), "--markdown", other])
        assert exc.value.code == 2


def test_markdown_stays_within_a_ci_job_summary_for_big_stores() -> None:
    from pyaudit.auditing.results import CheckpointReport
    from pyaudit.findings import finding
    from pyaudit.report.markdown import MAX_DETAILED, MAX_ROWS, scan_markdown

    missing = (finding("shard-missing", "model-00002-of-00002.safetensors is not there"),)
    reports = [
        CheckpointReport(path=f"run/checkpoint-{i}", status="pass")
        if i % 50
        else CheckpointReport(path=f"run/checkpoint-{i}", status="fail", findings=missing)
        for i in range(5000)
    ]
    failing = sum(r.status == "fail" for r in reports)
    md = scan_markdown(
        reports,
        {"checkpoints": 5000, "pass": 5000 - failing, "warn": 0, "fail": failing, "seconds": 1.0},
    )
    rows = [line for line in md.splitlines() if line.startswith("| ") and "checkpoint-" in line]
    assert len(md.encode()) < 1024 * 1024
    assert len(rows) == max(MAX_ROWS, failing)  # every failing checkpoint has its row
    assert f"and {5000 - len(rows)} more passing checkpoints" in md
    assert md.count("shard-missing") == min(failing, MAX_DETAILED)


def test_scan_json_one_checkpoint_a_line(
    demo_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scan --json` is the API's document (CONTRACT.md), laid out one checkpoint a line."""
    from pyaudit.api import scan

    rc, out, _ = run(capsys, demo_store, "--json")
    doc = json.loads(out)
    expected = scan(demo_store).to_json()
    for d in (doc, expected):
        d["summary"].pop("seconds")
    assert doc == expected and rc == 1
    lines = out.splitlines()
    rows = [line for line in lines if line.startswith("    {")]
    assert len(rows) == len(doc["checkpoints"]) > 3
    assert [json.loads(r.rstrip(",")) for r in rows] == doc["checkpoints"]
    (tmp_path / "empty").mkdir()
    rc, out, err = run(capsys, tmp_path / "empty", "--json")
    assert rc == 2 and json.loads(out)["checkpoints"] == [] and "no checkpoints found" in err

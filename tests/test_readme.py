"""The README shows real output: its `pyaudit scan examples/store` block is what the
command prints today (timing aside), its Python API block runs as written and prints the
block below it, and its test command is the one `.ci/run` runs."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from pyaudit.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _block_after(text: str, marker: str) -> str:
    start = text.index(marker)
    first = text.index("```\n", text.index("```", start) + 3) + 4
    return text[first : text.index("```", first)]


def _untimed(output: str) -> str:
    return re.sub(r"\(\d+(\.\d+)? s\)", "(N s)", output)


def test_readme_scan_example_is_current(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (ROOT / "README.md").read_text()
    if not (ROOT / "examples" / "store").is_dir():
        pytest.skip("no demo store in this tree")
    shown = _block_after(readme, "pip install . && pyaudit scan examples/store")
    monkeypatch.chdir(ROOT)
    assert main(["scan", "examples/store"]) == 1
    assert _untimed(capsys.readouterr().out) == _untimed(shown)


def test_ci_runs_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()

    def command(marker: str) -> str:
        return readme.split(f"<!-- {marker} -->\n```\n", 1)[1].split("\n", 1)[0]

    assert command("try-command") == "pip install . && pyaudit scan examples/store"
    assert command("test-command") == "pip install '.[test]' && pytest"
    assert 'try_command="$(readme_command try-command)"' in ci
    assert 'bash -c "$try_command"' in ci
    assert 'test_command="$(readme_command test-command)"' in ci
    assert 'bash -c "$test_command"' in ci


def test_readme_python_api_runs_as_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code, after = section.split("```python\n", 1)[1].split("```\n", 1)
    shown = after.split("```\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "readme_api.py"
    script.write_text(code)
    monkeypatch.chdir(ROOT)  # the snippet names examples/store relative to the root
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out == shown

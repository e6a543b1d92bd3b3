"""The terminal report of a big store: the summary and what is not PASS first, passing
checkpoints collapsed past a screenful (``--all`` lists them); plurals and sizes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from pyaudit import _core, headers
from pyaudit.api import scan as api_scan
from pyaudit.cli import main
from pyaudit.report.table import SCREENFUL

STORE = Path(__file__).resolve().parents[1] / "examples" / "store"
MERGED = STORE / "output" / "v0-20250530-100000" / "checkpoint-200-merged"


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["scan", *map(str, args)])
    return rc, capsys.readouterr().out


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SCREENFUL + 5 passing checkpoints (real Qwen2.5-VL exports) and one truncated."""
    root = tmp_path_factory.mktemp("big")
    for i in range(SCREENFUL + 5):
        shutil.copytree(MERGED, root / f"run-{i:03d}" / "checkpoint-200-merged")
    bad = Path(shutil.copytree(MERGED, root / "run-zzz" / "checkpoint-200-merged"))
    shard = bad / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    return root


def test_failing_first_passing_collapsed(
    big_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = _run(capsys, big_store)
    assert rc == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{SCREENFUL + 6} checkpoints: {SCREENFUL + 5} pass, 0 warn, 1 fail")
    rows = [line for line in lines if line.startswith(("PASS ", "FAIL ", "WARN "))]
    assert rows[0].startswith("FAIL") and "run-zzz" in rows[0]
    assert sum(r.startswith("PASS") and "run-" in r for r in rows) == SCREENFUL
    assert "5 more passing checkpoints (--all lists them)" in out
    assert lines[-1] == lines[0]  # the summary again, last


def test_all_lists_every_passing_checkpoint(
    big_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = _run(capsys, big_store, "--all")
    assert rc == 1
    assert sum(line.startswith("PASS ") for line in out.splitlines()) == SCREENFUL + 5
    assert "more passing" not in out


def test_one_checkpoint_is_singular(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _run(capsys, MERGED)
    assert rc == 0
    assert out.splitlines()[0].startswith("1 checkpoint: 1 pass, 0 warn, 0 fail")


def test_zero_bytes_found_reads_0_B(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _run(capsys, STORE / "zero3-run")
    assert rc == 1
    assert "0 B of 45.50 KB" in out and "0.00 KB" not in out


def test_api_report_of_nothing_is_not_ok(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    report = api_scan(tmp_path / "empty")
    assert report.checkpoints == [] and not report.ok


@pytest.mark.parametrize(("cached", "threads"), [(64, 4), (0, 16)], ids=["page-cache", "from-disk"])
def test_read_headers_chooses_threads_like_the_sweep(
    monkeypatch: Any, cached: int, threads: int
) -> None:
    """Without ``jobs``: the first files read one thread a core, the rest with as many
    threads as the sweep would use (no core kept back: nothing else runs)."""
    monkeypatch.setattr(_core, "default_jobs", lambda: 4)
    monkeypatch.setattr(_core, "cachestat_supported", lambda: True)

    class Probe:
        def __init__(self, paths: list[bytes], files: list[bytes], size: int, jobs: int) -> None:
            self.paths = paths
            self.from_page_cache = cached
            self.seconds_per_file = 0.0

        def result(self) -> tuple[list[Any], list[Any], None]:
            return [real(p) for p in self.paths], [], None

    real = _core.read_header
    asked: list[int] = []

    def read_many(paths: list[bytes], jobs: int = 0) -> list[Any]:
        asked.append(jobs)
        return [real(p) for p in paths]

    monkeypatch.setattr(_core, "BatchRead", Probe)
    monkeypatch.setattr(_core, "read_headers", read_many)
    paths = [MERGED / "model-00001-of-00002.safetensors"] * (3 * headers.PROBE_FILES)
    got = headers.read_headers(paths)
    assert len(got) == len(paths) and all(h.ok for h in got)
    assert asked == [threads]
    asked.clear()
    headers.read_headers(paths, jobs=3)  # given: kept
    assert asked == [3]

"""The benchmark scripts still run: each one's --quick mode, as a subprocess.

No timing is asserted: only that the script exits 0 (every tool in it read and
audited what it had to, findings checked by the script) and printed its table.
The stores go to a temporary directory, not benchmarks/store/.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_quick(script: str, store: Path, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--store", str(store), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def table_rows(out: str) -> list[str]:
    """The Markdown table rows printed (header and separator excluded)."""
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    return [line for line in lines if not line.startswith(("| reader ", "| tool ", "| N "))]


@pytest.mark.skipif(find_spec("safetensors") is None, reason="needs safetensors (the peer)")
def test_bench_headers_quick(tmp_path: Path) -> None:
    out = run_quick("bench_headers.py", tmp_path)
    assert "### Warm cache" in out
    rows = table_rows(out)
    assert any(r.startswith("| pyaudit read_headers(jobs=1)") for r in rows), out
    assert any(r.startswith("| safetensors safe_open") for r in rows), out


@pytest.mark.skipif(find_spec("safetensors") is None, reason="needs safetensors (the peer)")
def test_bench_sweep_quick(tmp_path: Path) -> None:
    out = run_quick("bench_sweep.py", tmp_path)
    assert "memoised" in out and "un-memoised" in out
    rows = table_rows(out)
    for tool in ("pyaudit scan --json |", "pyaudit scan --json --jobs 1 |", "safe_open script |"):
        assert sum(tool in r for r in rows) == 2, (tool, out)  # one row per variant


@pytest.mark.skipif(find_spec("numpy") is None, reason="needs numpy")
def test_bench_data_quick(tmp_path: Path) -> None:
    out = run_quick("bench_data.py", tmp_path)
    assert "### Warm cache" in out
    rows = table_rows(out)
    for tool in (
        "| cat FILES",
        "| pyaudit verify_data(jobs=1)",
        "| pyaudit scan --verify-data",
        "| numpy",
    ):
        assert any(r.startswith(tool) for r in rows), (tool, out)


@pytest.mark.skipif(
    find_spec("moto") is None or find_spec("s3fs") is None or find_spec("boto3") is None,
    reason="needs moto[server], s3fs and boto3",
)
def test_bench_remote_quick(tmp_path: Path) -> None:
    out = run_quick("bench_remote.py", tmp_path)
    rows = [r for r in out.splitlines() if r.startswith("| 0 ms |")]
    assert len(rows) == 1, out  # one row: D = 0, pyaudit and the careful script


@pytest.mark.skipif(
    find_spec("torch") is None or find_spec("transformers") is None,
    reason="needs torch and transformers (the oracle)",
)
def test_bench_oracle_quick(tmp_path: Path) -> None:
    out = run_quick("bench_oracle.py", tmp_path)
    rows = table_rows(out)
    assert any(r.startswith("| `pyaudit scan --json`, cold cache | ") for r in rows), out
    assert any(r.startswith("| `pyaudit scan --json`, warm cache | ") for r in rows), out


@pytest.mark.skipif(
    find_spec("torch") is None or find_spec("transformers") is None,
    reason="needs torch and transformers (to write the .bin store, and the peer)",
)
def test_bench_bin_quick(tmp_path: Path) -> None:
    out = run_quick("bench_bin.py", tmp_path)
    assert "both agree every checkpoint is complete" in out
    rows = table_rows(out)
    assert any(r.startswith("| pyaudit scan --json |") for r in rows), out
    assert any(r.startswith("| torch.load(mmap, weights_only) script |") for r in rows), out


def test_bench_derived_small(tmp_path: Path) -> None:
    """Every family's store passes (the script exits 0 only then), one row per family."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_derived.py"), "--n", "3", "--repeats", "1",
         "--store", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    for family, spec in (("llama", "hand-written"), ("olmo2", "derived"),
                         ("qwen2_moe", "derived"), ("qwen3_moe", "hand-written")):  # fmt: skip
        assert any(r.startswith(f"| {family} | {spec}") for r in rows), proc.stdout

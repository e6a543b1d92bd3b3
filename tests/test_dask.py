"""`pyaudit scan --dask`: the same report as a local scan, audited on a Dask cluster.

One LocalCluster for the module (2 single-threaded worker processes), a mixed store
(the demo store plus full-size sparse Qwen2.5-VL-7B checkpoints, healthy and broken).
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import realdata

distributed = pytest.importorskip("distributed")

import dask  # noqa: E402
import faults  # noqa: E402

import pyaudit  # noqa: E402
from pyaudit import distributed as dist  # noqa: E402
from pyaudit.auditing.results import AuditOptions  # noqa: E402
from pyaudit.cli import main  # noqa: E402
from pyaudit.discover import discover  # noqa: E402
from pyaudit.sweep import scan as local_scan  # noqa: E402
from pyaudit.testing.stores import manifest_tensors, write_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QWEN_VL = realdata.MODELS / "Qwen2.5-VL-7B-Instruct_qwen2_5_vl"
MERGED = "output/v0-20250530-100000/checkpoint-200-merged"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    # One death is retried; a chunk whose worker dies twice is reported (tests below).
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not QWEN_VL.is_dir():
        pytest.skip(f"{QWEN_VL} is not there")
    out = tmp_path_factory.mktemp("dask") / "store"
    runpy.run_path(str(ROOT / "examples" / "make_store.py"))["main"](out)
    config = json.loads((QWEN_VL / "config.json").read_text())
    weight_map = json.loads((QWEN_VL / "model.safetensors.index.json").read_text())["weight_map"]
    tensors = manifest_tensors(config)
    run = out / "qwen2.5-vl-7b" / "v0-20250701-120000"
    for step in (100, 200, 300, 400):
        kept = weight_map
        if step == 400:  # the vision tower dropped on save
            kept = {n: f for n, f in weight_map.items() if not n.startswith("visual.")}
        write_checkpoint(run / f"checkpoint-{step}", config, tensors, weight_map=kept)
    (run / "checkpoint-200" / "model-00003-of-00005.safetensors").unlink()  # shard missing
    shard = run / "checkpoint-300" / "model-00002-of-00005.safetensors"
    os.truncate(shard, shard.stat().st_size - 4096)  # truncated on copy
    return out


def _scan(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    rc = main(["scan", *args])
    out = capsys.readouterr().out
    if "--jsonl" in args:
        return rc, [json.loads(line) for line in out.splitlines()]
    doc = json.loads(out)
    doc["summary"].pop("seconds")
    return rc, doc


def test_cli_json_identical(
    cluster: Any, store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Relative PATH: paths in messages are as given, resolved on the workers as here.
    monkeypatch.chdir(store.parent)
    rc, here = _scan(["--json", "store"], capsys)
    rc_dask, there = _scan(["--json", "--dask", cluster.scheduler.address, "store"], capsys)
    assert (rc_dask, there) == (rc, here)
    assert rc == 1 and here["summary"]["checkpoints"] == 11
    codes = {f["code"] for c in here["checkpoints"] for f in c["findings"]}
    assert {"shard-missing", "shard-truncated", "base-weights-missing", "intent-mismatch"} <= codes
    assert len(dist.chunks(list(discover("store")), 2)) > 4  # several chunks, put back in order


def test_consensus_identical(
    cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A family nothing knows and no oracle: the checkpoints sharing a config are held against
    each other on a cluster as in a local scan (here the one lacking a layer fails)."""
    config = {**json.loads((QWEN_VL / "config.json").read_text()), "model_type": "qwen9_vl"}
    tensors = manifest_tensors(json.loads((QWEN_VL / "config.json").read_text()))
    for step in (1, 2, 3):
        held = {n: t for n, t in tensors.items() if step != 2 or ".layers.1." not in n}
        write_checkpoint(tmp_path / "run" / f"checkpoint-{step}", config, held)
    rc, here = _scan(["--json", "--no-oracle", str(tmp_path)], capsys)
    rc_dask, there = _scan(
        ["--json", "--no-oracle", "--dask", cluster.scheduler.address, str(tmp_path)], capsys
    )
    assert (rc_dask, there) == (rc, here)
    codes = [sorted(f["code"] for f in c["findings"]) for c in here["checkpoints"]]
    # (the dropped layer lies between layers the checkpoint holds: its own blocks say so too)
    lost = ["consensus-missing", "layer-incomplete", "unknown-architecture"]
    assert rc == 1 and codes.count(lost) == 1 and codes.count(["unknown-architecture"]) == 2


def test_cli_base_and_verify_data_identical(
    cluster: Any, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(store / "output"), str(store / "fp32-export"), str(store / "zero3-run")]
    args = ["--json", "--verify-data", "--base", str(store / MERGED), *paths]
    rc, here = _scan(args, capsys)
    rc_dask, there = _scan([*args, "--dask", cluster.scheduler.address], capsys)
    assert (rc_dask, there) == (rc, here)
    assert any(c["expected_source"].startswith("--base") for c in here["checkpoints"])


def test_jsonl_same_objects(cluster: Any, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, here = _scan(["--jsonl", str(store)], capsys)
    rc_dask, there = _scan(["--jsonl", "--dask", cluster.scheduler.address, str(store)], capsys)
    assert rc_dask == rc
    assert sorted(there, key=lambda c: c["path"]) == sorted(here, key=lambda c: c["path"])


def test_api_identical(cluster: Any, store: Path) -> None:
    here = pyaudit.scan(store).to_json()
    for target in (cluster.scheduler.address, cluster):  # an address, or a Client
        report = pyaudit.scan(store, dask=target)
        there = report.to_json()
        for doc in (here, there):
            doc["summary"].pop("seconds", None)
        assert there == here and not report.ok


@pytest.mark.slow  # starts its own LocalCluster (~5-10 s)
def test_local_cluster_from_the_command_line(store: Path) -> None:
    demo = str(store / "output")
    cmd = [sys.executable, "-m", "pyaudit", "scan", "--json", demo]
    here = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    there = subprocess.run([*cmd, "--dask", "local"], capture_output=True, text=True, timeout=120)
    assert there.returncode == here.returncode == 1, there.stderr
    docs = [json.loads(p.stdout) for p in (here, there)]
    for doc in docs:
        doc["summary"].pop("seconds")
    assert docs[0] == docs[1]


def test_dask_missing_is_one_line(
    store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    assert main(["scan", "--json", "--dask", "local", str(store)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("pyaudit scan: --dask needs dask.distributed")
    assert "pip install 'pyaudit[dask]'" in line
    with pytest.raises(ImportError, match=r"pyaudit\[dask\]"):
        pyaudit.scan(store, dask="local")


def test_unreachable_scheduler(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["scan", "--json", "--dask", "tcp://127.0.0.1:9", str(store)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in line


@pytest.fixture
def by_value(cluster: Any) -> None:
    """A full cluster before a fault-injection test (the previous one may have killed it)."""
    cluster.wait_for_workers(2, timeout=60)


def test_a_dead_worker_s_chunk_is_retried(
    cluster: Any, store: Path, by_value: None, tmp_path: Path
) -> None:
    from functools import partial

    options = AuditOptions()
    here = [r.to_json() for r in local_scan([str(store)], options)]
    task = partial(faults.die_once, str(tmp_path / "died"))
    there = [r.to_json() for r in dist.scan([str(store)], options, cluster=cluster, task=task)]
    assert (tmp_path / "died").exists()
    assert there == here


def test_a_chunk_that_keeps_killing_workers_is_a_clear_error(
    cluster: Any, store: Path, by_value: None
) -> None:
    from functools import partial

    # One checkpoint, one chunk: a worker that dies also fails the chunks queued on it
    # (dask counts them as suspects too), so in a bigger scan another could be named first.
    victim = str(store / "qwen2.5-vl-7b" / "v0-20250701-120000" / "checkpoint-300")
    task = partial(faults.die_on, victim)
    with pytest.raises(
        dist.ClusterError, match=r"could not be audited on the cluster: KilledWorker"
    ) as e:
        list(dist.scan([victim], cluster=cluster, task=task))
    assert str(e.value).startswith(f"checkpoint {victim} could not be audited")
    cluster.wait_for_workers(2, timeout=60)


def test_reports_come_back_in_discovery_order(cluster: Any, store: Path, by_value: None) -> None:
    from functools import partial

    here = [r.to_json() for r in local_scan([str(store)])]
    task = partial(faults.slow_first, here[0]["path"])
    ordered = [r.to_json() for r in dist.scan([str(store)], cluster=cluster, task=task)]
    assert ordered == here
    streamed = [
        r.to_json() for r in dist.scan([str(store)], cluster=cluster, task=task, ordered=False)
    ]
    assert streamed != here and sorted(streamed, key=str) == sorted(here, key=str)


def test_urls_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--dask", "local", "s3://bucket/store"]) == 2
    assert "scan URLs without --dask" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not URLs"):
        pyaudit.scan(["s3://bucket/store"], dask="local")

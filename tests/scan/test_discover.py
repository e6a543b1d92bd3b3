"""Finding checkpoints: hub-cache symlinks, loops, ZeRO folders, PATH forms, exit statuses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyaudit._core import make_placeholders
from pyaudit.discover import discover, listing_of
from pyaudit.testing.stores import (
    manifest_tensors,
    tiny_config,
    trainer_state,
    write_checkpoint,
    write_json,
)

HASH = "c1899de289a04d12100db370d81485cdf75e47ca"


@pytest.fixture
def qwen3(real_config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    config = tiny_config(real_config("Qwen3-4B_qwen3"))
    return config, manifest_tensors(config)


def hub_cache(root: Path, qwen3: Any, tmp_path: Path) -> Path:
    """models--Qwen--Qwen3-4B as huggingface_hub stores it: snapshot files link to blobs."""
    config, tensors = qwen3
    staging = tmp_path / "staging"
    write_checkpoint(staging, config, tensors, shards=2, sparse=False)
    repo = root / "hub" / "models--Qwen--Qwen3-4B"
    snapshot = repo / "snapshots" / HASH
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in sorted(staging.iterdir()):
        blob = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, repo / "blobs" / blob)
        os.symlink(f"../../blobs/{blob}", snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(HASH)
    return snapshot


def test_hub_cache_symlinks_are_followed(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    snapshot = hub_cache(tmp_path / "hf", qwen3, tmp_path)
    assert all(p.is_symlink() for p in snapshot.iterdir())
    rc, doc = scan(tmp_path / "hf")
    assert rc == 0
    assert [c["path"] for c in doc["checkpoints"]] == [
        f"hub/models--Qwen--Qwen3-4B/snapshots/{HASH}"
    ]
    report = doc["checkpoints"][0]
    assert report["status"] == "pass" and report["tensors"]["found"] == 24
    assert [f["path"] for f in report["files"]] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]


def test_symlink_loops_do_not_hang(tmp_path: Path, qwen3: Any) -> None:
    snapshot = hub_cache(tmp_path / "hf", qwen3, tmp_path)
    os.symlink("..", snapshot / "parent-loop")
    os.symlink(str(tmp_path / "hf"), tmp_path / "hf" / "hub" / "self-loop")
    os.symlink("loop-b", tmp_path / "hf" / "loop-a")
    os.symlink("loop-a", tmp_path / "hf" / "loop-b")  # a link cycle that never resolves
    proc = subprocess.run(
        [sys.executable, "-m", "pyaudit", "scan", "--json", str(tmp_path / "hf")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [c["path"] for c in doc["checkpoints"]] == [
        f"hub/models--Qwen--Qwen3-4B/snapshots/{HASH}"
    ]


def test_zero_folder_inside_a_checkpoint_is_part_of_it(tmp_path: Path, qwen3: Any) -> None:
    config, tensors = qwen3
    ckpt = tmp_path / "run" / "checkpoint-100"
    write_checkpoint(ckpt, config, tensors, sparse=False)
    (ckpt / "global_step100").mkdir()
    write_json(
        ckpt / "global_step100" / "config.json", config
    )  # even one that looks like a model dir
    (ckpt / "global_step100" / "mp_rank_00_model_states.pt").write_bytes(b"\0")
    write_json(ckpt / "trainer_state.json", trainer_state(100))
    found = list(discover(str(tmp_path / "run")))
    assert [c.display for c in found] == ["checkpoint-100"]
    assert found[0].zero_dirs == ["global_step100"]


def test_weightless_run_dir_above_checkpoints_is_not_reported(tmp_path: Path, qwen3: Any) -> None:
    config, tensors = qwen3
    write_json(tmp_path / "run" / "config.json", config)
    for step in (50, 100):
        write_checkpoint(tmp_path / "run" / f"checkpoint-{step}", config, tensors, sparse=False)
    assert [c.display for c in discover(str(tmp_path / "run"))] == [
        "checkpoint-50",
        "checkpoint-100",
    ]


@pytest.mark.parametrize("form", ["absolute", "relative", "trailing-slash"])
def test_path_that_is_a_checkpoint_is_reported_as_given(
    tmp_path: Path, qwen3: Any, scan: Any, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    config, tensors = qwen3
    write_checkpoint(tmp_path / "models" / "qwen3", config, tensors, sparse=False)
    monkeypatch.chdir(tmp_path)
    given = {
        "absolute": str(tmp_path / "models" / "qwen3"),
        "relative": "models/qwen3",
        "trailing-slash": "models/qwen3/",
    }[form]
    rc, report = scan.one(given)
    assert rc == 0 and report["path"] == given


def test_a_single_file_path(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, tensors = qwen3
    write_checkpoint(tmp_path, config, tensors, sparse=False)
    given = str(tmp_path / "model.safetensors")
    rc, report = scan.one(given)
    assert rc == 0 and report["path"] == given and report["status"] == "pass"


def test_nonexistent_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pyaudit.cli import main

    missing = tmp_path / "no-such-dir"
    assert main(["scan", "--json", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and str(missing) in err and "no such file or directory" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from pyaudit.cli import main

    with pytest.raises(SystemExit) as e:
        main(["scan", "--expect", "sometimes", "."])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_json_stdout_is_only_json(tmp_path: Path, qwen3: Any) -> None:
    """A tree with failures, warnings and an unreadable file: stdout is one JSON document."""
    config, tensors = qwen3
    write_checkpoint(tmp_path / "a", config, tensors, shards=2, sparse=False)
    (tmp_path / "a" / "model-00002-of-00002.safetensors").unlink()
    os.symlink("../nowhere/blob", tmp_path / "a" / "model-00002-of-00002.safetensors")
    write_checkpoint(
        tmp_path / "b", config, {n: ("F32", s) for n, (d, s) in tensors.items()}, sparse=False
    )
    write_json(tmp_path / "c" / "config.json", {"model_type": "no_such_family"})
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "pyaudit", "scan", "--json", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert proc.stdout.endswith("}\n") and proc.stdout.startswith("{")
    statuses = {c["path"]: c["status"] for c in doc["checkpoints"]}
    assert statuses == {"a": "fail", "b": "warn", "c": "fail"}


def test_batches_start_small_and_keep_order() -> None:
    """The first batch is small (the audit waits for it), then batches double up to the cap."""
    from pyaudit.discover import CheckpointDir
    from pyaudit.sweep import batches

    ckpts = [
        CheckpointDir(path=Path(f"c{i}"), display=f"c{i}", safetensors=["a", "b"])
        for i in range(200)
    ]
    out = list(batches(ckpts, files_per_batch=64, first_batch=8))
    assert [c for b in out for c in b] == ckpts
    assert [2 * len(b) for b in out[:4]] == [8, 16, 32, 64]
    assert all(2 * len(b) == 64 for b in out[3:-1])


def test_run_args_lookup_trusts_the_listing(tmp_path: Path) -> None:
    """With discovery's listing, absent run files are not probed for; present ones are read."""
    from pyaudit.runs import find_run_args

    run = tmp_path / "run"
    ckpt = run / "checkpoint-1"
    ckpt.mkdir(parents=True)
    (run / "args.json").write_text('{"train_type": "lora"}')
    listed = {str(tmp_path): (), str(run): ("args.json",), str(ckpt): ()}
    found = find_run_args(ckpt, tmp_path, listed=listed)
    assert found.args == {"train_type": "lora"} and found.args_path == run / "args.json"
    # A listing that saw none: nothing is read, even where a file appeared since.
    assert find_run_args(ckpt, tmp_path, listed={k: () for k in listed}).args is None
    assert find_run_args(ckpt, tmp_path).args == {"train_type": "lora"}  # no listing: probed


# Keys of a remote store: directories a sweep meets, the files it classifies, and names
# that are both (a file where another key needs a directory: its placeholder is refused).
_DIR = st.sampled_from(["run", "checkpoint-5", "checkpoint-10", "global_step5", "a01", "a1",
                        "pytorch_model_fsdp_0", "optimizer_0", ".hidden", "model.safetensors"])
_FILE = st.sampled_from(["model.safetensors", "model.safetensors.index.json", "config.json",
                         "adapter_config.json", "args.json", "trainer_state.json", "__0_0.distcp",
                         ".metadata", "pytorch_model.bin", "latest", "run", "checkpoint-5"])
_KEY = st.tuples(st.lists(_DIR, max_size=3), _FILE).map(lambda t: "/".join([*t[0], t[1]]))
_KEYS = st.lists(_KEY, max_size=30)


@settings(max_examples=150, deadline=None)
@given(keys=_KEYS)
def test_a_listing_is_discovered_as_the_tree_it_makes(keys: list[str]) -> None:
    """A remote store's mirror is discovered from its listing, not walked: the same
    checkpoints, with the same fields, as walking the placeholders made of it."""
    keys = list(dict.fromkeys(keys))
    with tempfile.TemporaryDirectory() as outer:
        root = Path(outer) / "m" / "store"
        root.mkdir(parents=True)
        refused = {keys[i] for i, _ in make_placeholders(str(root), [(k, 0) for k in keys])}
        walked = list(discover(str(root)))
        made = [k for k in keys if k not in refused]
        listed = list(discover(str(root), listing_of(str(root), made)))
    # (the order of two subdirectories that sort the same, a01 and a1, is the filesystem's)
    assert sorted(listed, key=lambda c: str(c.path)) == sorted(walked, key=lambda c: str(c.path))

"""Model directories whose weights are not (yet) safetensors files: DeepSpeed ZeRO shards,
FSDP sharded state, pickled .bin files (never unpickled), when their files are not what
they claim. Real files torch, accelerate and DeepSpeed wrote: test_scan_pickled.py and
test_frameworks.py."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from pyaudit.testing.sparse import tensor_nbytes
from pyaudit.testing.stores import manifest_tensors, tiny_config, trainer_state, write_json


@pytest.fixture
def qwen3(real_config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    config = tiny_config(real_config("Qwen3-4B_qwen3"))
    return config, manifest_tensors(config)


def test_zero_shards_that_record_nothing(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    """A ZeRO-3 checkpoint laid out as the HF Trainer's without stage3_gather (only
    global_step*/), whose records are empty pickles: nothing to consolidate, an error."""
    config, _ = qwen3
    ckpt = tmp_path / "output" / "checkpoint-100"
    write_json(ckpt / "config.json", config)
    write_json(ckpt / "trainer_state.json", trainer_state(100))
    zero = ckpt / "global_step100"
    zero.mkdir()
    for rank in range(2):
        (zero / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(
            b"\x80\x02}q\x00."
        )
        (zero / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt").write_bytes(b"\x80\x02}q\x00.")
    (ckpt / "zero_to_fp32.py").write_text("# DeepSpeed's consolidation script\n")
    (ckpt / "latest").write_text("global_step100")
    rc, doc = scan(tmp_path / "output")
    assert rc == 1
    assert [c["path"] for c in doc["checkpoints"]] == [
        "checkpoint-100"
    ]  # global_step100/ is part of it
    report = doc["checkpoints"][0]
    assert report["status"] == "fail" and report["kind"] == "unknown"
    assert scan.codes(report) == ["no-weights"]
    f = scan.the(report, "no-weights")
    assert f["severity"] == "error"
    assert f["message"] == (
        "DeepSpeed ZeRO-3 state in global_step100/ (2 rank(s), 2 optimizer partitions): its "
        "records list no model tensors, so there is nothing to consolidate: the model was not "
        "saved"
    )
    assert "zero_to_fp32.py" not in f["message"]  # no advice whose inputs are not there
    assert report["tensors"]["found"] == 0 and report["bytes"]["found"] == 0
    assert report["bytes"]["expected"] == sum(tensor_nbytes(d, s) for d, s in qwen3[1].values())


def test_fsdp_sharded_state_with_garbage_metadata(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, _ = qwen3
    ckpt = tmp_path / "checkpoint-10"
    write_json(ckpt / "config.json", config)
    fsdp = ckpt / "pytorch_model_fsdp_0"
    fsdp.mkdir()
    for rank in range(4):
        (fsdp / f"__{rank}_0.distcp").write_bytes(b"\0" * 64)
    (fsdp / ".metadata").write_bytes(b"\0")
    rc, report = scan.one(tmp_path)
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["corrupt-pickle", "unconsolidated"]
    assert scan.the(report, "corrupt-pickle")["message"].startswith(
        "pytorch_model_fsdp_0/.metadata: not-torch:"
    )
    unconsolidated = scan.the(report, "unconsolidated")["message"]
    assert "consolidating it would not give the whole model" in unconsolidated
    assert "merge-weights" not in unconsolidated


def test_trainer_checkpoint_without_config_or_weights(tmp_path: Path, scan: Any) -> None:
    ckpt = tmp_path / "checkpoint-5"
    write_json(ckpt / "trainer_state.json", trainer_state(5))
    (ckpt / "optimizer.pt").write_bytes(b"\0")
    rc, report = scan.one(tmp_path)
    assert rc == 1
    f = scan.the(report, "no-weights")
    assert f["message"] == "no weight files: holds only trainer_state.json, optimizer.pt"


class Tripwire:
    """Unpickling this writes a file: proof that someone unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.write_text, (self.marker, "unpickled"))


def test_bin_weights_are_named_not_unpickled(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, tensors = qwen3
    ckpt = tmp_path / "model"
    write_json(ckpt / "config.json", config)
    names = list(tensors)
    shards = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    weight_map = {n: shards[i * 2 // len(names)] for i, n in enumerate(names)}
    write_json(
        ckpt / "pytorch_model.bin.index.json",
        {"metadata": {"total_size": 1}, "weight_map": weight_map},
    )
    marker = tmp_path / "UNPICKLED"
    (ckpt / shards[0]).write_bytes(pickle.dumps(Tripwire(marker)))
    (ckpt / shards[1]).write_bytes(b"\x00garbage, not a pickle at all\xff" * 10)
    rc, report = scan.one(ckpt)
    assert not marker.exists()
    # Read as data: a pickle that would run code says so; garbage says it is not a torch file.
    assert rc == 1 and report["status"] == "fail"
    assert {"unsafe-pickle", "corrupt-pickle"} <= set(scan.codes(report))
    unsafe = scan.the(report, "unsafe-pickle")
    assert unsafe["severity"] == "error"
    assert unsafe["message"].startswith(f"{shards[0]} names pathlib")  # pathlib._local on 3.13
    # (3.13 pickles the path's class too: pathlib._local.PosixPath)
    assert "Path.write_text" in unsafe["message"]
    assert "loading it with torch.load(weights_only=False)" in unsafe["message"]
    assert scan.the(report, "corrupt-pickle")["message"].startswith(f"{shards[1]}: not-torch")
    assert [(f["path"], f["ok"]) for f in report["files"]] == [
        (shards[0], True), (shards[1], False)
    ]


def test_bin_index_names_a_missing_shard(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    config, tensors = qwen3
    ckpt = tmp_path / "model"
    write_json(ckpt / "config.json", config)
    weight_map = dict.fromkeys(tensors, "pytorch_model-00001-of-00002.bin")
    weight_map["model.norm.weight"] = "pytorch_model-00002-of-00002.bin"
    write_json(
        ckpt / "pytorch_model.bin.index.json",
        {"metadata": {"total_size": 1}, "weight_map": weight_map},
    )
    (ckpt / "pytorch_model-00001-of-00002.bin").write_bytes(b"garbage")
    rc, report = scan.one(ckpt)
    assert rc == 1
    f = scan.the(report, "shard-missing")
    assert "pytorch_model-00002-of-00002.bin" in f["message"]

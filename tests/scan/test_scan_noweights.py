"""Model directories whose weights are not (yet) safetensors files: DeepSpeed ZeRO shards,
FSDP sharded state, pickled .bin files (never unpickled)."""

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


def test_zero_shards_only(tmp_path: Path, qwen3: Any, scan: Any) -> None:
    """A DeepSpeed ZeRO-3 checkpoint of the HF Trainer without stage3_gather: only global_step*/."""
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
    assert f["message"].startswith(
        "config.json but no weight files: DeepSpeed ZeRO state in global_step100/"
    )
    # the script beside the shards, and the tag from `latest`: the advice's inputs exist
    assert "`python checkpoint-100/zero_to_fp32.py checkpoint-100 OUTPUT_DIR`" in f["message"]
    assert report["tensors"]["found"] == 0 and report["bytes"]["found"] == 0
    assert report["bytes"]["expected"] == sum(tensor_nbytes(d, s) for d, s in qwen3[1].values())


def test_fsdp_sharded_state(tmp_path: Path, qwen3: Any, scan: Any) -> None:
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
    f = scan.the(report, "no-weights")
    assert (
        "FSDP sharded model state in pytorch_model_fsdp_0/ (4 shard(s) and .metadata)"
        in f["message"]
    )
    assert (
        "`accelerate merge-weights checkpoint-10/pytorch_model_fsdp_0 OUTPUT_DIR`" in f["message"]
    )


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
    # Names are checked against the index; nothing else of the weights was: not a PASS.
    assert rc == 1 and report["status"] == "fail" and report["kind"] == "full"
    assert scan.codes(report) == ["weights-unverified"]
    f = scan.the(report, "weights-unverified")
    assert f["severity"] == "error"
    assert "2 pickled .bin weight files" in f["message"] and "never unpickles" in f["message"]
    assert "tensor names checked from the index only" in f["message"]
    assert report["tensors"]["found"] == 24 and report["tensors"]["missing"] == 0

    # A name the model needs that the .bin index lacks is still caught.
    del weight_map["model.norm.weight"]
    write_json(
        ckpt / "pytorch_model.bin.index.json",
        {"metadata": {"total_size": 1}, "weight_map": weight_map},
    )
    rc, report = scan.one(ckpt)
    assert not marker.exists()
    assert rc == 1
    missing = scan.the(report, "base-weights-missing")
    assert missing["tensors"] == ["model.norm.weight"]
    assert "not named by the .bin index" in missing["message"]


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

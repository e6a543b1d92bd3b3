"""The store the remote tests scan: real tiny checkpoints, healthy and broken, as a training
output tree holds them (tests/test_remote.py, tests/test_remote_gcs.py,
tests/test_remote_azure.py), and the reports those tests hold against each other."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
import realdata

from pyaudit.testing.stores import (
    adapter_config,
    lora_tensors,
    manifest_tensors,
    swift_args,
    tiny_config,
    trainer_state,
    write_adapter,
    write_checkpoint,
    write_json,
)

# Big enough that most shards hold MBs of tensor data behind a header of a few KB.
BIG = {"vocab_size": 8192, "intermediate_size": 4096}


def config(name: str, **overrides: Any) -> dict[str, Any]:
    path = realdata.MODELS / name / "config.json"
    return tiny_config(json.loads(path.read_text()), **overrides)


def write_store(out: Path) -> None:
    qwen3 = config("Qwen3-4B_qwen3", **BIG)
    q3 = manifest_tensors(qwen3)
    write_checkpoint(out / "qwen3" / "checkpoint-100", qwen3, q3, shards=2, sparse=False)
    write_json(out / "qwen3" / "checkpoint-100" / "trainer_state.json", trainer_state(100))
    llama = config("1PARAMMYL-8B-ModelStock_llama", **BIG)
    write_checkpoint(out / "llama", llama, manifest_tensors(llama), shards=3, sparse=False)
    mixtral = config("dolphin-2.5-mixtral-8x7b_mixtral", vocab_size=8192)
    write_checkpoint(out / "mixtral", mixtral, manifest_tensors(mixtral), shards=2, sparse=False)

    # A shard truncated on copy.
    paths = write_checkpoint(out / "copied" / "qwen3-tiny", qwen3, q3, shards=2, sparse=False)
    data = paths[-1].read_bytes()
    paths[-1].write_bytes(data[: len(data) - 1000])

    # The seed story: a GRPO run meant as full training saved LoRA adapters only; its
    # model is an ms-swift -merged export whose args.json says lora (load_args=True).
    vl = config("Qwen2.5-VL-7B-Instruct_qwen2_5_vl", **BIG)
    vl_tensors = manifest_tensors(vl)
    merged = out / "output" / "v0-20250530-100000" / "checkpoint-200-merged"
    write_checkpoint(merged, vl, vl_tensors, shards=2, sparse=False)
    write_json(merged / "args.json", swift_args("Qwen/Qwen2.5-VL-7B-Instruct", "lora"))
    ref = "output/v0-20250530-100000/checkpoint-200-merged"
    grpo = out / "output" / "v1-20250601-090000" / "checkpoint-50"
    lora = lora_tensors(vl_tensors, r=8)
    write_adapter(grpo, lora, adapter_config(ref, r=8), sparse=False)
    write_json(grpo / "args.json", swift_args(ref, "full", rlhf_type="grpo", load_args=True))
    write_json(grpo / "trainer_state.json", trainer_state(50))

    # Headers the validator rejects: a Git LFS pointer, a length prefix past the file.
    lfs = out / "broken" / "lfs"
    write_json(lfs / "config.json", qwen3)
    (lfs / "model.safetensors").write_bytes(
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 4000000\n"
    )
    bad = out / "broken" / "prefix"
    bad.mkdir(parents=True)
    (bad / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 20) + b'{"a":' + b" " * 100)

    # Weightless model dirs: ZeRO-3 shards, FSDP shards; a .bin index naming a lost shard.
    zero = out / "zero3-run" / "checkpoint-100"
    write_json(zero / "config.json", qwen3)
    (zero / "global_step100").mkdir()
    (zero / "global_step100" / "mp_rank_00_model_states.pt").write_bytes(b"\0" * 64)
    fsdp = out / "fsdp-run" / "checkpoint-10"
    (fsdp / "pytorch_model_fsdp_0").mkdir(parents=True)
    for i in range(2):
        (fsdp / "pytorch_model_fsdp_0" / f"__{i}_0.distcp").write_bytes(b"\0" * 32)
    write_json(fsdp / "trainer_state.json", trainer_state(10))
    bins = out / "bin-export"
    write_json(bins / "config.json", qwen3)
    names = list(q3)
    write_json(
        bins / "pytorch_model.bin.index.json",
        {"metadata": {"total_size": 1}, "weight_map": {
            n: f"pytorch_model-0000{1 + i % 2}-of-00002.bin" for i, n in enumerate(names)}},
    )
    (bins / "pytorch_model-00001-of-00002.bin").write_bytes(b"\0" * 128)
    # Hidden folders are not walked.
    write_checkpoint(out / ".cache" / "tmp", qwen3, q3, shards=1, sparse=False)


def span(path: Path) -> int:
    """A .safetensors file's header span: the 8-byte length and the header it gives."""
    with open(path, "rb") as f:
        first = f.read(8)
    return 8 + struct.unpack("<Q", first)[0] if len(first) == 8 else len(first)


def local_json(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`pyaudit scan --json PATH` in this process: its status and its report, the root
    written ROOT and the seconds left out."""
    from pyaudit.cli import main

    status = main(["scan", "--json", str(path)])
    doc = json.loads(capsys.readouterr().out)
    doc["summary"].pop("seconds")
    assert "remote" not in doc["summary"]
    return status, json.dumps(doc, indent=1).replace(str(path), "ROOT")


def remote_json(
    done: subprocess.CompletedProcess[str], url: str
) -> tuple[int, str, dict[str, Any]]:
    """A child's `pyaudit scan --json URL`: its status, its report as :func:`local_json`
    gives one, and its ``summary.remote``."""
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    doc["summary"].pop("seconds")
    transfer = doc["summary"].pop("remote")
    return done.returncode, json.dumps(doc, indent=1).replace(url, "ROOT"), transfer

"""The seed story end to end, and the run-intent checks around it.

An ms-swift output tree: an SFT LoRA run exported with ``swift export --merge_lora``
(``checkpoint-200-merged``, a healthy full Qwen2.5-VL-7B whose args.json still says
``train_type=lora``), and a GRPO run meant as full training that took that directory
as ``--model`` with ``load_args`` on, so it re-read ``train_type=lora`` and saved
LoRA adapters only. One command, ``pyaudit scan output/``, must say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pyaudit
from pyaudit.testing.sparse import tensor_nbytes
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

QWEN25_VL = "Qwen2.5-VL-7B-Instruct_qwen2_5_vl"
MERGED = "output/v0-20250530-100000/checkpoint-200-merged"
GRPO = "output/v1-20250601-090000/checkpoint-50"
FULL_BYTES = 16_584_333_312  # the real index's metadata.total_size


def language_model(module: str) -> str:
    """How transformers >= 4.52 names Qwen2.5-VL's LLM in memory (what PEFT saw)."""
    return module.replace("model.layers.", "model.language_model.layers.", 1)


@pytest.fixture
def seed_tree(tmp_path: Path, real_config: Any, real_index: Any) -> dict[str, Any]:
    config = real_config(QWEN25_VL)
    index = real_index(QWEN25_VL)
    tensors = manifest_tensors(config)
    write_checkpoint(tmp_path / MERGED, config, tensors, weight_map=index["weight_map"])
    write_json(tmp_path / MERGED / "args.json", swift_args("Qwen/Qwen2.5-VL-7B-Instruct", "lora"))

    grpo = tmp_path / GRPO
    lora = lora_tensors(tensors, r=8, rename=language_model)
    write_adapter(grpo, lora, adapter_config(MERGED, r=8))
    args = swift_args(MERGED, "full", rlhf_type="grpo", load_args=True)
    write_json(grpo / "args.json", args)
    write_json(grpo.parent / "args.json", args)
    write_json(grpo / "trainer_state.json", trainer_state(50))
    return {"root": tmp_path, "index": index, "lora": lora}


def check_seed_report(doc: dict[str, Any], tree: dict[str, Any]) -> None:
    assert doc["schema"] == 1
    assert doc["pyaudit_version"] == pyaudit.__version__
    by_path = {c["path"]: c for c in doc["checkpoints"]}
    merged_path, grpo_path = MERGED.removeprefix("output/"), GRPO.removeprefix("output/")
    assert sorted(by_path) == [merged_path, grpo_path]

    healthy = by_path[merged_path]
    assert healthy["status"] == "pass" and healthy["findings"] == []
    assert healthy["kind"] == "full" and healthy["model_type"] == "qwen2_5_vl"
    assert healthy["tensors"] == {"found": 729, "expected": 729, "missing": 0, "unexpected": 0}
    assert healthy["bytes"] == {"found": FULL_BYTES, "expected": FULL_BYTES}
    shards = sorted(set(tree["index"]["weight_map"].values()))
    assert [f["path"] for f in healthy["files"]] == shards
    assert all(f["ok"] for f in healthy["files"])
    assert sum(f["tensors"] for f in healthy["files"]) == 729
    on_disk = tree["root"] / MERGED
    assert [f["bytes"] for f in healthy["files"]] == [(on_disk / s).stat().st_size for s in shards]

    grpo = by_path[grpo_path]
    lora_bytes = sum(tensor_nbytes(d, s) for d, s in tree["lora"].values())
    assert len(tree["lora"]) == 392
    assert grpo["status"] == "fail" and grpo["kind"] == "adapter"
    assert grpo["model_type"] == "qwen2_5_vl"
    assert grpo["tensors"] == {"found": 392, "expected": 729, "missing": 729, "unexpected": 0}
    assert grpo["bytes"] == {"found": lora_bytes, "expected": FULL_BYTES}
    adapter_file = tree["root"] / GRPO / "adapter_model.safetensors"
    assert grpo["files"] == [
        {
            "path": "adapter_model.safetensors",
            "bytes": adapter_file.stat().st_size,
            "tensors": 392,
            "ok": True,
        }
    ]
    # The adapter's in-memory names (model.language_model.*) fit the base's legacy layout:
    # no adapter-mismatch, only the two errors of the story (and adapter-only, which the
    # declared full training makes an error).
    assert "adapter-mismatch" not in {f["code"] for f in grpo["findings"]}
    for f in grpo["findings"]:
        assert set(f) == {"code", "severity", "message", "count", "tensors"}
        assert len(f["tensors"]) <= 20

    missing = next(f for f in grpo["findings"] if f["code"] == "base-weights-missing")
    assert missing["severity"] == "error" and missing["count"] == 729
    assert len(missing["tensors"]) == 20 and missing["tensors"][0] == "model.embed_tokens.weight"
    for words in (
        "729 of 729",
        "16.58 GB",
        "model.layers.* (28 layers)",
        "visual.blocks.* (32 blocks)",
    ):
        assert words in missing["message"]

    intent = next(f for f in grpo["findings"] if f["code"] == "intent-mismatch")
    assert intent["severity"] == "error" and intent["count"] == 1 and intent["tensors"] == []
    for words in (
        "args.json",
        "train_type=full",
        "only LoRA adapter weights",
        "-merged",
        "train_type=lora",
        "load_args",
        "--load_args false",
    ):
        assert words in intent["message"], words

    summary = doc["summary"]
    assert {k: summary[k] for k in ("checkpoints", "pass", "warn", "fail")} == {
        "checkpoints": 2,
        "pass": 1,
        "warn": 0,
        "fail": 1,
    }
    assert isinstance(summary["seconds"], float | int) and summary["seconds"] >= 0


def test_seed_story_one_command(
    seed_tree: dict[str, Any], scan: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(seed_tree["root"])
    rc, doc = scan("output/")
    assert rc == 1
    check_seed_report(doc, seed_tree)


def test_seed_story_subprocess_json(seed_tree: dict[str, Any]) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.run(
        [sys.executable, "-m", "pyaudit", "scan", "--json", "output/"],
        cwd=seed_tree["root"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)  # stdout is the JSON document and nothing else
    check_seed_report(doc, seed_tree)


def test_seed_story_table_names_the_cause(
    seed_tree: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyaudit.cli import main

    monkeypatch.chdir(seed_tree["root"])
    assert main(["scan", "output/"]) == 1
    out = capsys.readouterr().out
    assert "intent-mismatch" in out and "--load_args false" in out
    assert "PASS" in out and "FAIL" in out


# --- the reverse, and what is not a mismatch ------------------------------------------------


@pytest.fixture
def tiny_vl(real_config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    config = tiny_config(real_config(QWEN25_VL))
    return config, manifest_tensors(config)


def test_full_weights_where_lora_declared(tmp_path: Path, tiny_vl: Any, scan: Any) -> None:
    config, tensors = tiny_vl
    ckpt = tmp_path / "output" / "v2-20250602-080000" / "checkpoint-100"
    write_checkpoint(ckpt, config, tensors, sparse=False)
    write_json(ckpt / "args.json", swift_args("Qwen/Qwen2.5-VL-7B-Instruct", "lora"))
    rc, report = scan.one(tmp_path / "output")
    assert rc == 1 and report["status"] == "fail" and report["kind"] == "full"
    assert scan.codes(report) == ["intent-mismatch"]
    intent = scan.the(report, "intent-mismatch")
    assert intent["severity"] == "error"
    for words in ("args.json says train_type=lora", "full model weights were saved", "merged"):
        assert words in intent["message"]
    assert (
        report["tensors"]["missing"] == 0
        and report["bytes"]["found"] == report["bytes"]["expected"]
    )


def test_merged_export_with_lora_args_passes(tmp_path: Path, tiny_vl: Any, scan: Any) -> None:
    config, tensors = tiny_vl
    ckpt = tmp_path / "output" / "v0-20250530-100000" / "checkpoint-200-merged"
    write_checkpoint(ckpt, config, tensors, shards=2, sparse=False)
    write_json(ckpt / "args.json", swift_args("Qwen/Qwen2.5-VL-7B-Instruct", "lora"))
    rc, report = scan.one(tmp_path / "output")
    assert rc == 0 and report["status"] == "pass" and report["findings"] == []
    assert report["declared"] == "args.json says train_type=lora"


def test_llamafactory_yaml_declares_lora(tmp_path: Path, tiny_vl: Any, scan: Any) -> None:
    config, tensors = tiny_vl
    ckpt = tmp_path / "saves" / "qwen2_5vl-7b" / "lora" / "sft"
    write_checkpoint(ckpt, config, tensors, sparse=False)
    (ckpt / "training_args.yaml").write_text(
        "model_name_or_path: Qwen/Qwen2.5-VL-7B-Instruct\nstage: sft\nfinetuning_type: lora  \n"
    )
    rc, report = scan.one(ckpt)
    assert rc == 1
    intent = scan.the(report, "intent-mismatch")
    assert "training_args.yaml says finetuning_type=lora" in intent["message"]


def lora_adapter(tmp_path: Path, tiny_vl: Any) -> Path:
    _config, tensors = tiny_vl
    ckpt = tmp_path / "checkpoint-10"
    write_adapter(
        ckpt, lora_tensors(tensors, r=8), adapter_config("nobody/not-here", r=8), sparse=False
    )
    return ckpt


def test_expect_full_on_an_adapter_fails(tmp_path: Path, tiny_vl: Any, scan: Any) -> None:
    ckpt = lora_adapter(tmp_path, tiny_vl)
    rc, report = scan.one(ckpt, "--expect", "full")
    assert rc == 1 and report["status"] == "fail" and report["kind"] == "adapter"
    only = scan.the(report, "adapter-only")
    assert only["severity"] == "error"
    assert (
        only["message"]
        == "only adapter weights were saved where full training was declared (--expect full)"
    )


@pytest.mark.parametrize("expect", [None, "adapter", "auto"])
def test_adapter_is_fine_unless_full_expected(
    tmp_path: Path, tiny_vl: Any, scan: Any, expect: str | None
) -> None:
    ckpt = lora_adapter(tmp_path, tiny_vl)
    rc, report = scan.one(ckpt, *(["--expect", expect] if expect else []))
    assert rc == 0 and report["status"] == "pass" and report["kind"] == "adapter"
    assert scan.codes(report) == ["adapter-only", "base-not-found"]
    only = scan.the(report, "adapter-only")
    assert only["severity"] == "info"
    assert only["message"].startswith(f"adapter weights only ({report['tensors']['found']} tensors")


def test_expect_adapter_on_full_weights(tmp_path: Path, tiny_vl: Any, scan: Any) -> None:
    config, tensors = tiny_vl
    write_checkpoint(tmp_path / "m", config, tensors, sparse=False)
    rc, report = scan.one(tmp_path / "m", "--expect", "adapter")
    assert rc == 1
    assert (
        "--expect adapter but full model weights were saved"
        in scan.the(report, "intent-mismatch")["message"]
    )

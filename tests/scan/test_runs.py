"""What a run declared, and where its base model lives locally (pyaudit.runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pyaudit.runs import find_run_args, resolve_model
from pyaudit.testing.stores import (
    adapter_config,
    lora_tensors,
    manifest_tensors,
    swift_args,
    tiny_config,
    write_adapter,
    write_json,
)


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty caches: nothing of the real machine's ~/.cache leaks into a test."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("MODELSCOPE_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_llamafactory_yaml_with_inline_comments(tmp_path: Path) -> None:
    ckpt = tmp_path / "saves" / "checkpoint-45"
    ckpt.mkdir(parents=True)
    (ckpt.parent / "training_args.yaml").write_text(
        "model_name_or_path: Qwen/Qwen2.5-VL-3B-Instruct  # the base\n"
        "finetuning_type: lora # LoRA, not full\n"
        "template: 'qwen2_vl # not a comment'\n"
    )
    run = find_run_args(ckpt, tmp_path / "saves")
    declared = run.declared()
    assert declared is not None and declared.kind == "adapter"
    assert declared.describe() == "training_args.yaml says finetuning_type=lora"
    assert run.model == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert run.yaml is not None and run.yaml["template"] == "qwen2_vl # not a comment"


@pytest.mark.parametrize(("key", "value", "kind"), [
    ("train_type", "full", "full"), ("train_type", "lora", "adapter"),
    ("sft_type", "lora", "adapter"),  # ms-swift 2.x
    ("train_type", "freeze", "full"),  # partly frozen, but whole weights saved
    ("train_type", "something-new", None),
])  # fmt: skip
def test_swift_train_types(tmp_path: Path, key: str, value: str, kind: str | None) -> None:
    write_json(tmp_path / "args.json", {"model": "Qwen/Qwen3-4B", key: value})
    declared = find_run_args(tmp_path, tmp_path).declared()
    assert (declared.kind if declared else None) == kind


def test_run_args_are_not_read_above_the_scanned_path(tmp_path: Path) -> None:
    write_json(tmp_path / "args.json", swift_args("x", "lora"))  # an unrelated run, above
    ckpt = tmp_path / "store" / "model"
    ckpt.mkdir(parents=True)
    assert find_run_args(ckpt, ckpt).args is None
    assert find_run_args(ckpt, tmp_path / "store").args is None
    write_json(tmp_path / "store" / "args.json", swift_args("y", "full"))
    run = find_run_args(ckpt, tmp_path / "store")
    assert run.args is not None and run.args["model"] == "y"


def test_hub_cache_newest_snapshot(caches: Path) -> None:
    snapshots = caches / "hf-home" / "hub" / "models--Qwen--Qwen3-4B" / "snapshots"
    old, new = snapshots / ("a" * 40), snapshots / ("b" * 40)
    write_json(old / "config.json", {"model_type": "qwen3"})
    write_json(new / "config.json", {"model_type": "qwen3"})
    os.utime(old, (1_000_000, 1_000_000))
    assert resolve_model("Qwen/Qwen3-4B", caches / "ckpt") == new
    assert resolve_model("Qwen/Qwen3-8B", caches / "ckpt") is None


@pytest.mark.parametrize(("env", "layout"), [
    (False, "hub/models/Qwen/Qwen2___5-7B-Instruct"),
    (False, "hub/Qwen/Qwen2___5-7B-Instruct"),
    (False, "hub/models/Qwen/Qwen2.5-7B-Instruct"),
    (True, "models/Qwen/Qwen2___5-7B-Instruct"),
    (True, "Qwen/Qwen2.5-7B-Instruct"),
])  # fmt: skip
def test_modelscope_cache_layouts(
    caches: Path, monkeypatch: pytest.MonkeyPatch, env: bool, layout: str
) -> None:
    """ms-swift downloads from ModelScope, which escapes the dots of a model name as ___."""
    root = caches / "ms-cache" if env else caches / "home" / ".cache" / "modelscope"
    if env:
        monkeypatch.setenv("MODELSCOPE_CACHE", str(root))
    write_json(root / layout / "config.json", {"model_type": "qwen2"})
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct", caches / "ckpt") == root / layout


def test_adapter_base_found_in_the_modelscope_cache(
    caches: Path, real_config: Any, scan: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(real_config("Qwen3-4B_qwen3"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(caches / "ms"))
    base = caches / "ms" / "models" / "Qwen" / "Qwen3-4B"
    write_json(base / "config.json", config)
    other = tiny_config(real_config("Qwen3-4B_qwen3"), hidden_size=96)
    ckpt = caches / "output" / "v0-20250601-000000" / "checkpoint-10"
    write_adapter(
        ckpt, lora_tensors(manifest_tensors(other), r=8), adapter_config("Qwen/Qwen3-4B", 8)
    )
    rc, report = scan.one(ckpt)
    assert rc == 1
    assert report["expected_source"] == f"base model Qwen/Qwen3-4B ({base})"
    assert "do not fit the base model's shapes" in scan.the(report, "adapter-mismatch")["message"]

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


# --- by version: which ms-swift wrote the args, and what a run re-read ----------------------


def _swift4(case: str, where: str = "") -> dict[str, Any]:
    import realdata

    run = next((realdata.FRAMEWORKS / "ms-swift-4.6.0" / case).iterdir())
    return dict(realdata.load(run / where / "args.json"))


def test_swift_versions_from_real_args() -> None:
    import realdata

    from pyaudit.runs import swift_full_flags, swift_major, type_field

    v4 = _swift4("grpo-load-args-true")
    assert swift_major(v4) == 4 and type_field(v4) == ("tuner_type", "lora")
    v3 = realdata.load(realdata.MS_SWIFT / "Qwen3-32B-full-sft" / "args.json")
    assert "swift_version" not in v3 and swift_major(v3) == 3  # told by train_type
    assert type_field(v3) == ("train_type", "full")
    assert swift_major({"sft_type": "lora"}) == 2
    assert swift_major({"finetuning_type": "lora"}) is None  # LLaMA-Factory, not ms-swift
    assert swift_major({"swift_version": "3.2.1", "tuner_type": "lora"}) == 3  # recorded wins
    assert swift_full_flags(4, load_args=True) == "--load_args false --tuner_type full"
    assert swift_full_flags(3, load_args=False) == "--train_type full"
    assert swift_full_flags(2, load_args=False) == "--sft_type full"


def test_inheritance_needs_load_args_and_the_parents_type(tmp_path: Path) -> None:
    from pyaudit.runs import swift_inherited

    run = tmp_path / "out" / "grpo" / "v0" / "checkpoint-2"
    parent = tmp_path / "out" / "sft" / "v0" / "checkpoint-2-merged"
    run.mkdir(parents=True)
    args = _swift4("grpo-load-args-true", "checkpoint-2")
    parent_args = _swift4("sft-lora", "checkpoint-2-merged")
    # recorded on the training machine: absolute, elsewhere
    args["ckpt_dir"] = args["model"] = "/cluster/jobs/u1/out/sft/v0/checkpoint-2-merged"
    assert swift_inherited(args, run, tmp_path) is not None  # parent absent: the run's own record
    write_json(parent / "args.json", parent_args)
    found = swift_inherited(args, run, tmp_path)
    assert found is not None and found.parent == parent and found.parent_value == "lora"
    assert swift_inherited(args, run, None) is not None  # no tree to search: own record
    assert swift_inherited(args | {"load_args": False}, run, tmp_path) is None
    assert swift_inherited(args | {"tuner_type": "full"}, run, tmp_path) is None
    assert swift_inherited(args | {"ckpt_dir": None}, run, tmp_path) is None
    # the parent says something else: the run's LoRA was its own choice (or its default)
    write_json(parent / "args.json", parent_args | {"tuner_type": "full"})
    assert swift_inherited(args, run, tmp_path) is None
    # a 3.x parent (train_type) is not force-loaded into 4.x's tuner_type
    del parent_args["tuner_type"]
    write_json(parent / "args.json", parent_args | {"train_type": "lora"})
    assert swift_inherited(args, run, tmp_path) is None


def _swift3(case: str, where: str = ".") -> dict[str, Any]:
    import realdata

    run = next((realdata.FRAMEWORKS / "ms-swift-3.12.6" / case).iterdir())
    return dict(realdata.load(run / where / "args.json"))


def test_swift3_real_records_adapters_and_resume(tmp_path: Path) -> None:
    """What ms-swift 3.12.6 recorded (load_args false by default for sft/rlhf, no
    swift_version), and which argument named ckpt_dir."""
    from pyaudit.runs import swift_ignored_adapters, swift_inherited, swift_major, swift_resumed

    default = _swift3("grpo-default")
    assert swift_major(default) == 3 and default["load_args"] is False
    assert "swift_version" not in default
    full = _swift3("adapters-full", "checkpoint-2")
    assert swift_ignored_adapters(full) == full["adapters"] != []
    assert swift_ignored_adapters(full | {"train_type": "lora"}) == []
    assert swift_ignored_adapters(full | {"rlhf_type": "grpo"}) == []  # adapters: the ref model
    assert swift_ignored_adapters(full | {"adapters": "x/checkpoint-2"}) == ["x/checkpoint-2"]
    v4 = {k: v for k, v in full.items() if k != "train_type"} | {"tuner_type": "full"}
    assert swift_ignored_adapters(v4) == full["adapters"]  # 4.6.0's tuner.py: the same branch
    assert swift_ignored_adapters({"sft_type": "full", "adapters": ["x"]}) == []  # 2.x: not read
    inherited = _swift3("adapters-full-load-args", "checkpoint-2")
    found = swift_inherited(inherited, tmp_path, None)
    assert found is not None and found.via == "adapters"
    assert found.named == f"--adapters {inherited['ckpt_dir']}"
    # resume_only_model copies the checkpoint into adapters: it is named as the resume
    resume = {"resume_from_checkpoint": inherited["ckpt_dir"], "resume_only_model": True}
    only_model = inherited | resume
    found = swift_inherited(only_model, tmp_path, None)
    assert found is not None and found.via == "resume_from_checkpoint"
    resumed = swift_resumed(_swift3("lora-resumed-lora", "checkpoint-4"), tmp_path, None)
    assert resumed is not None and resumed.parent is None and resumed.parent_kind is None
    assert swift_resumed(default, tmp_path, None) is None


def test_find_by_tail_stays_inside_the_scanned_tree(tmp_path: Path) -> None:
    from pyaudit.runs import find_by_tail

    inside = tmp_path / "store" / "runs" / "sft" / "ckpt"
    outside = tmp_path / "sft" / "ckpt"
    for d in (inside, outside):
        write_json(d / "args.json", {})
    start = tmp_path / "store" / "runs" / "grpo" / "v0"
    start.mkdir(parents=True)
    assert find_by_tail("/nfs/a/sft/ckpt", start, tmp_path / "store") == inside
    assert find_by_tail("/nfs/a/sft/ckpt", start, start) is None  # not below the anchor
    assert find_by_tail("/nfs/a/sft/ckpt", start, None) is None
    assert find_by_tail("/nfs/a/other", start, tmp_path / "store") is None


@pytest.mark.parametrize(("rules", "path", "kind"), [
    ([("grpo-*", "full")], "grpo-x/v0-1/checkpoint-2", "full"),
    ([("grpo-*", "full")], "sft-lora/v0/checkpoint-2", None),
    ([("out/sft", "adapter")], "out/sft/v0/checkpoint-2", "adapter"),
    ([("*", "full"), ("sft*", "adapter")], "sft-lora/checkpoint-2", "adapter"),  # last wins
    ([("checkpoint-2", "full")], "a/b/checkpoint-2", "full"),
])  # fmt: skip
def test_expect_run_patterns(rules: list[tuple[str, Any]], path: str, kind: str | None) -> None:
    from pyaudit.runs import expectation_for

    got = expectation_for(path, rules)
    assert (got[1] if got else None) == kind


@pytest.mark.parametrize("bad", ["grpo", "grpo=", "=full", "grpo=lora"])
def test_expect_run_usage_errors(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pyaudit.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["scan", ".", "--expect-run", bad])
    assert exit.value.code == 2
    assert "PATTERN=full or PATTERN=adapter" in capsys.readouterr().err


# --- LLaMA-Factory's model card: the CLI's only readable record of finetuning_type ----------

# the card llamafactory-cli train wrote for a yaml naming no finetuning_type
LF_CARD = Path(__file__).resolve().parents[1] / "frameworks/data/llamafactory-0.9.5/default"
LF_CARD /= "README.md"


def test_llamafactory_card_found_in_the_run_above(tmp_path: Path) -> None:
    from pyaudit.runs import llamafactory_card

    run = tmp_path / "store" / "run"
    ckpt = run / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (run / "README.md").write_bytes(LF_CARD.read_bytes())
    assert llamafactory_card(ckpt, tmp_path / "store") == (run / "README.md", "lora")
    # never above the scanned tree's parent
    assert llamafactory_card(ckpt, ckpt) is None


@pytest.mark.parametrize(
    "card",
    [
        b"# no front matter\ntags:\n- llama-factory\n- lora\n",
        b"---\nlicense: other\ntags:\n- generated_from_trainer\n- lora\n---\n",  # not LLaMA-Factory
        b"---\ntags:\n- llama-factory\n- lora\n- full\n---\n",  # two types: says nothing
        b"---\ntags:\n- llama-factory\n- lora\n" + b"x: y\n" * 20000,  # front matter never ends
        b"\xff\xfe\x00binary\x00" * 1000,
        b"",
    ],
    ids=["no-front-matter", "other-framework", "two-types", "unterminated", "binary", "empty"],
)
def test_llamafactory_card_says_nothing_unless_it_is_one(tmp_path: Path, card: bytes) -> None:
    from pyaudit.runs import llamafactory_card

    (tmp_path / "README.md").write_bytes(card)
    assert llamafactory_card(tmp_path, tmp_path) is None


def test_llamafactory_card_not_a_file(tmp_path: Path) -> None:
    from pyaudit.runs import card_tags, llamafactory_card

    (tmp_path / "README.md").mkdir()
    assert card_tags(tmp_path / "README.md") is None
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "README.md")  # opened non-blocking, never read
    assert llamafactory_card(fifo, fifo) is None
    (tmp_path / "dangling").mkdir()
    (tmp_path / "dangling" / "README.md").symlink_to(tmp_path / "nowhere")
    assert llamafactory_card(tmp_path / "dangling", tmp_path) is None

"""pyaudit's verdict on the output trees of real training-framework runs.

The trees under tests/frameworks/data/ were written by the frameworks themselves on CPU
(tests/frameworks/README.md says how to rerun them; each tree's VERSIONS.txt names the
versions and command lines), then trimmed (optimizer states emptied, names kept). Every
checkpoint of every tree has its verdict asserted here: the healthy runs PASS, each broken
state a framework really produced is found, with its cause.

The trees are scanned from a copy in a temporary folder: the paths the runs recorded
(relative to where they were launched, or absolute on the machine that trained) do not
resolve there, as on a store fed from a training cluster.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import realdata

FRAMEWORKS = realdata.FRAMEWORKS
SWIFT4 = FRAMEWORKS / "ms-swift-4.6.0"


def copied(tree: Path, tmp_path: Path) -> Path:
    """The tree as a store holds it: elsewhere, under a folder of its own."""
    dest = tmp_path / "store" / "cluster-a" / tree.name
    shutil.copytree(tree, dest, symlinks=True)
    return dest


def by_run(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Reports by path with ms-swift's timestamped version folder (v0-20261204-170331)
    shown as v0, so that a rerun of the generator keeps the tests' names."""
    import re

    out = {}
    for c in doc["checkpoints"]:
        key = re.sub(r"/v(\d+)-\d{8}-\d{6}", r"/v\1", c["path"])
        assert key not in out, key
        out[key] = c
    return out


def verdicts(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {path: (c["status"], c["kind"]) for path, c in by_run(doc).items()}


# --- ms-swift 4.6.0: the seed story -----------------------------------------------------------

SWIFT4_VERDICTS = {
    "tiny/qwen2_5_vl": ("pass", "full"),  # the base the runs started from
    "sft-lora/v0/checkpoint-2": ("pass", "adapter"),  # LoRA on purpose
    "sft-lora/v0/checkpoint-2-merged": ("pass", "full"),  # swift export --merge_lora true
    # swift rlhf --tuner_type full --load_args true on the merged export: LoRA re-read
    "grpo-load-args-true/v0/checkpoint-2": ("warn", "adapter"),
    "grpo-load-args-false/v0/checkpoint-2": ("pass", "full"),
    "grpo-default/v0/checkpoint-2": ("pass", "full"),
    "grpo-lora/v0/checkpoint-2": ("pass", "adapter"),  # --tuner_type lora on purpose
    "sft-full/v0/checkpoint-2": ("pass", "full"),
}
SEED = "grpo-load-args-true/v0/checkpoint-2"
SWIFT4_FIX = "--load_args false --tuner_type full"


def test_swift4_every_checkpoint_default_mode(tmp_path: Path, scan: Any) -> None:
    rc, doc = scan(copied(SWIFT4, tmp_path))
    assert rc == 0  # a warning, not a failure: LoRA may have been meant
    assert verdicts(doc) == SWIFT4_VERDICTS
    for path, c in by_run(doc).items():
        if path != SEED:
            assert [f["code"] for f in c["findings"] if f["severity"] != "info"] == [], path
    seed = by_run(doc)[SEED]
    assert scan.codes(seed) == ["adapter-only", "args-inherited"]
    message = scan.the(seed, "args-inherited")["message"]
    # the mechanism, the parent found by the recorded path's tail inside the copied tree,
    # and the fix in ms-swift 4's flags (it rejects --train_type)
    assert "load_args=true" in message and "force-loads tuner_type" in message
    assert (
        "sft-lora/v0-" in message
        and "checkpoint-2-merged/args.json says tuner_type=lora" in message
    )
    assert f"Fix: rerun with {SWIFT4_FIX}." in message
    assert "--train_type" not in message


def test_swift4_seed_story_expect_full(tmp_path: Path, scan: Any) -> None:
    root = copied(SWIFT4, tmp_path)
    rc, doc = scan(root, "--expect", "full")
    assert rc == 1
    got = verdicts(doc)
    # every adapter fails under --expect full (the SFT LoRA run too: --expect-run tells them apart)
    assert {p for p, v in got.items() if v[0] == "fail"} == {
        SEED, "sft-lora/v0/checkpoint-2", "grpo-lora/v0/checkpoint-2",
    }  # fmt: skip
    seed = by_run(doc)[SEED]
    assert scan.codes(seed) == ["adapter-only", "base-weights-missing", "intent-mismatch"]
    message = scan.the(seed, "intent-mismatch")["message"]
    assert "says tuner_type=lora" in message and "force-loads tuner_type" in message
    assert f"Fix: rerun with {SWIFT4_FIX}." in message
    assert "--train_type" not in message
    # a LoRA run with nothing inherited: the cause is the run's own tuner_type, fixed in 4.x flags
    lora = scan.the(by_run(doc)["grpo-lora/v0/checkpoint-2"], "intent-mismatch")["message"]
    assert "tuner_type=lora in" in lora and "(--tuner_type full)" in lora
    assert "load_args" not in lora


def test_swift4_expect_run_per_run(tmp_path: Path, scan: Any) -> None:
    """The SFT LoRA run and the GRPO runs meant full, checked in one scan."""
    root = copied(SWIFT4, tmp_path)
    rc, doc = scan(root, "--expect-run", "grpo-load-args-*=full",
                   "--expect-run", "grpo-default=full",
                   "--expect-run", "sft-lora=adapter")  # fmt: skip
    assert rc == 1
    got = verdicts(doc)
    assert got == SWIFT4_VERDICTS | {SEED: ("fail", "adapter")}
    seed = by_run(doc)[SEED]
    assert seed["declared"] == "--expect-run grpo-load-args-*=full"
    assert f"Fix: rerun with {SWIFT4_FIX}." in scan.the(seed, "intent-mismatch")["message"]
    assert by_run(doc)["sft-lora/v0/checkpoint-2"]["declared"] == "--expect-run sft-lora=adapter"


def test_swift4_seed_run_alone(tmp_path: Path, scan: Any) -> None:
    """Only the GRPO run was copied: its parent is nowhere, its own record still tells."""
    run = next((SWIFT4 / "grpo-load-args-true").iterdir())
    dest = tmp_path / "store" / "grpo-load-args-true" / run.name
    shutil.copytree(run, dest, symlinks=True)
    rc, doc = scan(tmp_path / "store")
    assert rc == 0
    (seed,) = doc["checkpoints"]
    assert seed["status"] == "warn" and seed["kind"] == "adapter"
    message = scan.the(seed, "args-inherited")["message"]
    assert "is not in the scanned tree" in message and "records load_args=true" in message
    assert f"Fix: rerun with {SWIFT4_FIX}." in message
    rc, doc = scan(tmp_path / "store", "--expect", "full")
    assert rc == 1
    assert (
        f"Fix: rerun with {SWIFT4_FIX}."
        in scan.the(doc["checkpoints"][0], "intent-mismatch")["message"]
    )


@pytest.mark.parametrize("load_args", [False, "false"])
def test_swift4_load_args_off_is_not_inheritance(
    tmp_path: Path, scan: Any, load_args: object
) -> None:
    """The same LoRA checkpoint, its record edited to load_args off: the user chose LoRA."""
    import json

    root = copied(SWIFT4, tmp_path)
    for args in (root / "grpo-load-args-true").rglob("args.json"):
        doc = json.loads(args.read_text())
        doc["load_args"] = load_args
        args.write_text(json.dumps(doc))
    rc, doc = scan(root)
    assert rc == 0 and verdicts(doc)[SEED] == ("pass", "adapter")


# --- ms-swift 3.12.6: the seed story in 3.x's flags, resumes, --adapters ------------------------

SWIFT3 = FRAMEWORKS / "ms-swift-3.12.6"
SWIFT3_VERDICTS = {
    "tiny/qwen2": ("pass", "full"),
    "sft-lora/v0/checkpoint-2": ("pass", "adapter"),
    "sft-lora/v0/checkpoint-2-merged": ("pass", "full"),
    # swift rlhf --train_type full --load_args true on the merged export: LoRA re-read
    "grpo-load-args-true/v0/checkpoint-2": ("warn", "adapter"),
    "grpo-load-args-false/v0/checkpoint-2": ("pass", "full"),
    "grpo-default/v0/checkpoint-2": ("pass", "full"),  # load_args defaults to false in 3.12
    "sft-full/v0/checkpoint-2": ("pass", "full"),
    "resume-lora/v0/checkpoint-2": ("pass", "adapter"),
    "resume-full/v0/checkpoint-2": ("pass", "full"),
    # --resume_from_checkpoint with the type the checkpoint was trained with: saves checkpoint-4
    "lora-resumed-lora/v0/checkpoint-4": ("pass", "adapter"),
    "full-resumed-full/v0/checkpoint-4": ("pass", "full"),
    # --adapters LORA --train_type full: ms-swift trains the base alone, the adapter unloaded
    "adapters-full/v0/checkpoint-2": ("warn", "full"),
    # the same with --load_args true: train_type=lora re-read from the adapter's args.json
    "adapters-full-load-args/v0/checkpoint-2": ("warn", "adapter"),
}
SEED3 = "grpo-load-args-true/v0/checkpoint-2"
SWIFT3_FIX = "--load_args false --train_type full"


def test_swift3_every_checkpoint_default_mode(tmp_path: Path, scan: Any) -> None:
    rc, doc = scan(copied(SWIFT3, tmp_path))
    assert rc == 0
    assert verdicts(doc) == SWIFT3_VERDICTS
    got = by_run(doc)
    warned = {SEED3: "args-inherited", "adapters-full-load-args/v0/checkpoint-2": "args-inherited",
              "adapters-full/v0/checkpoint-2": "adapters-ignored"}  # fmt: skip
    for path, c in got.items():
        above_info = [f["code"] for f in c["findings"] if f["severity"] != "info"]
        assert above_info == ([warned[path]] if path in warned else []), path
    message = scan.the(got[SEED3], "args-inherited")["message"]
    # 3.x's key and flags (3.x has no --tuner_type), the parent found by the tail of the
    # relative path the run recorded, inside the copied tree
    assert "load_args=true on --model out/sft-lora/v0-" in message
    assert "ms-swift 3.x force-loads train_type" in message
    assert "checkpoint-2-merged/args.json says train_type=lora" in message
    assert f"Fix: rerun with {SWIFT3_FIX}." in message
    assert "tuner_type" not in message
    # the resumes that changed the type stopped before saving anything (ms-swift's own
    # refusals, tests/frameworks/README.md): their folders hold args.json only, no checkpoint
    for failed in ("lora-resumed-full", "full-resumed-lora"):
        assert not any(p.startswith(failed + "/") for p in got)
        (run,) = (SWIFT3 / failed).iterdir()
        assert sorted(f.name for f in run.iterdir()) == ["args.json", "logging.jsonl"]


def test_swift3_seed_story_expect_full(tmp_path: Path, scan: Any) -> None:
    rc, doc = scan(copied(SWIFT3, tmp_path), "--expect", "full")
    assert rc == 1
    got = by_run(doc)
    adapters = {p for p, (_, kind) in SWIFT3_VERDICTS.items() if kind == "adapter"}
    assert {p for p, c in got.items() if c["status"] == "fail"} == adapters
    seed = got[SEED3]
    assert scan.codes(seed) == ["adapter-only", "base-weights-missing", "intent-mismatch"]
    message = scan.the(seed, "intent-mismatch")["message"]
    assert "says train_type=lora" in message and "force-loads train_type" in message
    assert f"Fix: rerun with {SWIFT3_FIX}." in message and "tuner_type" not in message
    # a LoRA run with nothing inherited: its own train_type, fixed in 3.x's flags
    lora = scan.the(got["sft-lora/v0/checkpoint-2"], "intent-mismatch")["message"]
    assert "train_type=lora in" in lora and "(--train_type full)" in lora
    assert "load_args" not in lora


def test_swift3_seed_run_alone(tmp_path: Path, scan: Any) -> None:
    """Only the GRPO run was copied: its parent is nowhere, its own record still tells."""
    (run,) = (SWIFT3 / "grpo-load-args-true").iterdir()
    shutil.copytree(run, tmp_path / "store" / run.name, symlinks=True)
    rc, doc = scan(tmp_path / "store")
    assert rc == 0
    (seed,) = doc["checkpoints"]
    assert (seed["status"], seed["kind"]) == ("warn", "adapter")
    message = scan.the(seed, "args-inherited")["message"]
    assert "is not in the scanned tree" in message and "records load_args=true" in message
    assert f"Fix: rerun with {SWIFT3_FIX}." in message
    rc, doc = scan(tmp_path / "store", "--expect", "full")
    assert rc == 1
    assert f"Fix: rerun with {SWIFT3_FIX}." in (
        scan.the(doc["checkpoints"][0], "intent-mismatch")["message"]
    )


def test_swift3_inherited_through_adapters(tmp_path: Path, scan: Any) -> None:
    """--adapters LORA --train_type full --load_args true: ckpt_dir is the adapter, whose
    args.json gives train_type=lora back. The fix merges first: load_args off alone would
    train the base and leave the adapter unloaded (the adapters-full run shows it)."""
    _, doc = scan(copied(SWIFT3, tmp_path))
    message = scan.the(by_run(doc)["adapters-full-load-args/v0/checkpoint-2"], "args-inherited")[
        "message"
    ]
    assert "load_args=true on --adapters /work/fwrun/swift3/out/resume-lora/v0-" in message
    assert "resume-lora/v0-20261205-061204/checkpoint-2/args.json says train_type=lora" in message
    assert (
        "Fix: merge the adapter (swift export --adapters /work/fwrun/swift3/out/resume-lora/"
        "v0-20261205-061204/checkpoint-2 --merge_lora true), then rerun with "
        f"{SWIFT3_FIX} --model /work/fwrun/swift3/out/resume-lora/v0-20261205-061204/"
        "checkpoint-2-merged"
    ) in message


def test_swift3_adapters_ignored_by_full_training(tmp_path: Path, scan: Any) -> None:
    """swift sft --train_type full --adapters LORA saved full weights equal, tensor for
    tensor, to a plain full run's from the same base (resume-full: same seed, data, steps):
    ms-swift 3.12.6 loads --adapters only for adapter types. Not a silent PASS."""
    from safetensors import safe_open

    def tensors(run: str) -> dict[str, bytes]:
        (path,) = (SWIFT3 / run).glob("v*/checkpoint-2/model.safetensors")
        with safe_open(str(path), "np") as f:  # the evidence for the claim, not the audit
            return {k: f.get_tensor(k).tobytes() for k in f.keys()}  # noqa: SIM118

    assert tensors("adapters-full") == tensors("resume-full")
    root = copied(SWIFT3, tmp_path)
    _, doc = scan(root)
    c = by_run(doc)["adapters-full/v0/checkpoint-2"]
    assert c["declared"] == "args.json says train_type=full"
    message = scan.the(c, "adapters-ignored")["message"]
    assert "records adapters=['/work/fwrun/swift3/out/resume-lora/v0-" in message
    assert "ms-swift 3.x loads --adapters only when training an adapter type" in message
    assert "trained model=tiny/qwen2 alone" in message
    assert "or keep training the adapter with --train_type lora --adapters" in message
    # --expect full: the kind matches, the warning stays
    _, doc = scan(root, "--expect", "full")
    assert by_run(doc)["adapters-full/v0/checkpoint-2"]["status"] == "warn"
    # the record without adapters (a plain full run): PASS
    import json

    for args in (root / "adapters-full").rglob("args.json"):
        record = json.loads(args.read_text())
        args.write_text(json.dumps(record | {"adapters": []}))
    _, doc = scan(root)
    assert verdicts(doc)["adapters-full/v0/checkpoint-2"] == ("pass", "full")


def test_swift3_resumed_runs(tmp_path: Path, scan: Any) -> None:
    """Resumes with the checkpoint's own type PASS, also held to it per run; a resumed LoRA
    run meant full fails with the resumed checkpoint as the cause and the way that works
    (merge, then train full from the export: resuming it as full stops at start)."""
    root = copied(SWIFT3, tmp_path)
    rc, doc = scan(root, "--expect-run", "lora-resumed-lora=adapter",
                   "--expect-run", "full-resumed-full=full")  # fmt: skip
    assert rc == 0
    got = by_run(doc)
    for path in ("lora-resumed-lora/v0/checkpoint-4", "full-resumed-full/v0/checkpoint-4"):
        assert got[path]["status"] == "pass" and got[path]["declared"].startswith("--expect-run")
    rc, doc = scan(root, "--expect-run", "lora-resumed-lora=full")
    assert rc == 1
    c = by_run(doc)["lora-resumed-lora/v0/checkpoint-4"]
    assert c["status"] == "fail"
    message = scan.the(c, "intent-mismatch")["message"]
    assert (
        "this run resumed /work/fwrun/swift3/out/resume-lora/v0-20261205-061204/checkpoint-2 "
        "(resume_from_checkpoint; a train_type=lora checkpoint: "
        "resume-lora/v0-20261205-061204/checkpoint-2/args.json)"
    ) in message
    assert "it went on training the adapter" in message
    assert "then train with --train_type full --model /work/fwrun/swift3/out/resume-lora/" in (
        message
    )


def test_swift3_resumed_adapter_record_says_full(tmp_path: Path, scan: Any) -> None:
    """The record of the LoRA->full resume (train_type full, resume_from_checkpoint the LoRA
    checkpoint; ms-swift stopped before saving) beside adapter weights, as a store that mixed
    them would hold: the run's own record declares full, the weights are an adapter: FAIL,
    the resumed adapter checkpoint named."""
    root = copied(SWIFT3, tmp_path)
    (failed,) = (root / "lora-resumed-full").iterdir()
    (resumed,) = (root / "lora-resumed-lora").glob("v*/checkpoint-4")
    shutil.copy(failed / "args.json", resumed / "args.json")
    rc, doc = scan(root)
    assert rc == 1
    c = by_run(doc)["lora-resumed-lora/v0/checkpoint-4"]
    assert c["status"] == "fail" and c["declared"] == "args.json says train_type=full"
    assert scan.codes(c) == ["adapter-only", "base-weights-missing", "intent-mismatch"]
    message = scan.the(c, "intent-mismatch")["message"]
    assert "a train_type=lora checkpoint: resume-lora/v0-20261205-061204/checkpoint-2/" in message
    assert "saved adapter weights although its args.json says train_type=full" in message
    assert "Fix: merge the adapter first (swift export --adapters " in message


# --- transformers Trainer + PEFT, TRL, accelerate FSDP2 ------------------------------------------

HF = FRAMEWORKS / "transformers-5.25.0-peft-0.21.2"
TRL = FRAMEWORKS / "trl-1.16.0"
FSDP = FRAMEWORKS / "accelerate-1.16.0-fsdp2"

HEALTHY = {
    HF: {
        "tiny/llama": "full",
        "trainer-full": "full", "trainer-full/checkpoint-2": "full",
        "peft-lora": "adapter", "peft-lora/checkpoint-2": "adapter",
        "peft-lora-merged": "full",  # merge_and_unload().save_pretrained()
        "peft-dora": "adapter", "peft-dora/checkpoint-2": "adapter",
        "peft-modules-to-save": "adapter", "peft-modules-to-save/checkpoint-2": "adapter",
    },
    TRL: {
        "tiny/qwen2": "full",
        "trl-sft-full": "full", "trl-sft-full/checkpoint-2": "full",
        "trl-sft-lora": "adapter", "trl-sft-lora/checkpoint-2": "adapter",
        "trl-grpo-full": "full", "trl-grpo-full/checkpoint-2": "full",
        "trl-grpo-lora": "adapter", "trl-grpo-lora/checkpoint-2": "adapter",
    },
}  # fmt: skip


@pytest.mark.parametrize("tree", list(HEALTHY), ids=lambda p: p.name)
def test_healthy_runs_pass(tree: Path, tmp_path: Path, scan: Any) -> None:
    """Every checkpoint of the healthy runs, with their optimizer, scheduler, RNG states,
    trainer_state.json, training_args.bin, tokenizer files and README: PASS, nothing above info."""
    rc, doc = scan(copied(tree, tmp_path))
    assert rc == 0
    assert {p: (c["status"], c["kind"]) for p, c in by_run(doc).items()} == {
        p: ("pass", kind) for p, kind in HEALTHY[tree].items()
    }
    for c in doc["checkpoints"]:
        assert all(f["severity"] == "info" for f in c["findings"]), c["path"]
        assert all(f["ok"] for f in c["files"])
        if c["kind"] == "full":
            assert (
                c["tensors"]["missing"] == 0 and c["tensors"]["found"] == c["tensors"]["expected"]
            )
            assert c["adapter"] is None
        else:  # adapter tensors and base coverage, each as what it is
            a = c["adapter"]
            assert a["tensors"] == c["tensors"]["found"] and a["bytes"] == c["bytes"]["found"]
            assert a["base"] == {"found": 0, "expected": c["tensors"]["expected"],
                                 "bytes_expected": c["bytes"]["expected"]}  # fmt: skip


def test_adapter_tensor_counts(tmp_path: Path, scan: Any) -> None:
    """What each PEFT variant saves, as pyaudit counts it: LoRA on q/v of 2 layers (4 pairs),
    DoRA on all 7 linears (14 x A, B and magnitude), modules_to_save (+ the lm_head copy)."""
    _, doc = scan(copied(HF, tmp_path))
    got = {p: c["adapter"]["tensors"] for p, c in by_run(doc).items() if c["adapter"]}
    assert got == {
        "peft-lora": 8, "peft-lora/checkpoint-2": 8,
        "peft-dora": 42, "peft-dora/checkpoint-2": 42,
        "peft-modules-to-save": 9, "peft-modules-to-save/checkpoint-2": 9,
    }  # fmt: skip


def test_adapter_table_reads_right(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole tree is scanned: the adapter names its base by the absolute path of the machine
    that trained (/work/fwrun/hf/tiny/qwen2), found again by its tail inside the scanned tree
    (scanning the run folder alone found it only where that machine's folder still existed)."""
    from pyaudit.cli import main

    assert main(["scan", "--all", str(copied(TRL, tmp_path))]) == 0
    out = "\n".join(line for line in capsys.readouterr().out.splitlines() if "trl-sft-lora" in line)
    assert out.count("trl-sft-lora") == 2  # the run root and checkpoint-2
    assert "28 adapter, base 0 of 27" in out and "16.38 KB adapter (base 189.57 KB not here)" in out
    assert "28 / 27" not in out


def test_fsdp2_sharded_and_full_state_dict(tmp_path: Path, scan: Any) -> None:
    """accelerate's SHARDED_STATE_DICT: pytorch_model_fsdp_0/ (DCP shards + .metadata) is the
    model, optimizer_0/ is training state beside it; the final save (the run root) is as
    sharded as its checkpoints: its .metadata is read (never unpickled) and held against the
    model; complete, it is a warning naming the command that consolidates it. FULL_STATE_DICT:
    pytorch_model_fsdp.bin, a full pickle, read as data and held against the model: PASS."""
    rc, doc = scan(copied(FSDP, tmp_path))
    assert rc == 0
    got = by_run(doc)
    assert {p: (c["status"], c["kind"]) for p, c in got.items()} == {
        "tiny/llama": ("pass", "full"),
        "fsdp2-accelerate-full": ("pass", "full"),
        "fsdp2-accelerate-full/checkpoint-2": ("pass", "full"),
        "fsdp2-accelerate-sharded": ("warn", "full"),  # the run root: as sharded
        "fsdp2-accelerate-sharded/checkpoint-2": ("warn", "full"),
    }
    assert not any("optimizer_0" in p for p in got)  # never reported as a model
    for path in ("fsdp2-accelerate-sharded", "fsdp2-accelerate-sharded/checkpoint-2"):
        c = got[path]
        assert scan.codes(c) == ["unconsolidated"]
        assert c["tensors"]["found"] == c["tensors"]["expected"] == 21
        message = scan.the(c, "unconsolidated")["message"]
        assert "FSDP sharded model state in pytorch_model_fsdp_0/ (2 shard(s))" in message
        assert "every tensor the model needs is there" in message
        assert f"`accelerate merge-weights {path}/pytorch_model_fsdp_0 OUTPUT_DIR`" in message
    for path in ("fsdp2-accelerate-full", "fsdp2-accelerate-full/checkpoint-2"):
        assert got[path]["findings"] == []
        assert got[path]["files"][0]["path"] == "pytorch_model_fsdp.bin"
        assert got[path]["tensors"]["found"] == got[path]["tensors"]["expected"] == 21


def test_fsdp2_sharded_state_broken(tmp_path: Path, scan: Any) -> None:
    """What a sharded state lacks is an error naming it, and no consolidation advice: a
    shard deleted, a shard truncated, a tensor dropped from the metadata's plan."""
    root = copied(FSDP, tmp_path)
    state = root / "fsdp2-accelerate-sharded" / "pytorch_model_fsdp_0"
    shards = sorted(state.glob("*.distcp"))
    shards[1].unlink()
    with open(shards[0], "r+b") as f:
        f.truncate(shards[0].stat().st_size // 2)
    _, doc = scan(root)
    c = by_run(doc)["fsdp2-accelerate-sharded"]
    assert c["status"] == "fail"
    assert {"shard-missing", "shard-truncated", "unconsolidated"} <= set(scan.codes(c))
    assert shards[1].name in scan.the(c, "shard-missing")["message"]
    assert "merge-weights" not in scan.the(c, "unconsolidated")["message"]


def test_fsdp2_shards_without_metadata_get_no_advice(tmp_path: Path, scan: Any) -> None:
    """The consolidation command is named only when its inputs exist: without .metadata,
    torch.distributed.checkpoint cannot read the shards."""
    root = copied(FSDP, tmp_path)
    (root / "fsdp2-accelerate-sharded" / "pytorch_model_fsdp_0" / ".metadata").unlink()
    _, doc = scan(root)
    c = by_run(doc)["fsdp2-accelerate-sharded"]
    assert c["status"] == "fail"
    message = scan.the(c, "no-weights")["message"]
    assert "without its .metadata (2 shard(s))" in message and "merge-weights" not in message


# --- DeepSpeed 0.19.8 ZeRO-2/3 on CPU ----------------------------------------------------------

DS = FRAMEWORKS / "deepspeed-0.19.8"


def test_deepspeed_zero_runs(tmp_path: Path, scan: Any) -> None:
    """ZeRO-2 and ZeRO-3 with stage3_gather_16bit_weights_on_model_save true save weights
    beside global_step*/ (PASS); with it false, neither the checkpoint nor the run root (the
    final save: config.json, global_step2/, zero_to_fp32.py) holds a weight: the ZeRO-3
    records (param_shapes, read as data) are held against the model, and complete they are a
    warning whose advice is the script DeepSpeed saved beside the partitions it reads."""
    rc, doc = scan(copied(DS, tmp_path))
    assert rc == 0
    got = by_run(doc)
    assert {p: (c["status"], c["kind"]) for p, c in got.items()} == {
        "tiny/llama": ("pass", "full"),
        "zero2": ("pass", "full"), "zero2/checkpoint-2": ("pass", "full"),
        "zero3-gather-true": ("pass", "full"), "zero3-gather-true/checkpoint-2": ("pass", "full"),
        # model.save_pretrained() of the ZeRO-3 model after training: transformers 5.25 gathers
        "zero3-save-pretrained/saved": ("pass", "full"),
        "zero3-gather-false": ("warn", "full"),
        "zero3-gather-false/checkpoint-2": ("warn", "full"),
    }  # fmt: skip
    for path in ("zero3-gather-false", "zero3-gather-false/checkpoint-2"):
        assert scan.codes(got[path]) == ["unconsolidated"]
        assert got[path]["tensors"]["found"] == got[path]["tensors"]["expected"] == 21
        message = scan.the(got[path], "unconsolidated")["message"]
        assert message.startswith("DeepSpeed ZeRO-3 state in global_step2/ (1 rank(s)")
        assert f"`python {path}/zero_to_fp32.py {path} OUTPUT_DIR`" in message
        assert "--tag" not in message  # `latest` names the tag
    for c in got.values():
        if c["status"] == "pass":
            assert all(f["severity"] == "info" for f in c["findings"]), c["path"]


def test_zero_to_fp32_not_advised_without_its_inputs(tmp_path: Path, scan: Any) -> None:
    """The optimizer partitions deleted to save space (as people do): zero_to_fp32 has
    nothing to rebuild the weights from, and the message says so instead of advising it."""
    root = copied(DS, tmp_path)
    for f in (root / "zero3-gather-false").rglob("*_optim_states.pt"):
        f.unlink()
    _, doc = scan(root / "zero3-gather-false")
    for c in doc["checkpoints"]:
        assert c["status"] == "fail"
        message = scan.the(c, "no-weights")["message"]
        assert "without optimizer partitions (*_optim_states.pt)" in message
        assert "zero_to_fp32 cannot rebuild the weights" in message
        assert "python" not in message


# --- LLaMA-Factory 0.9.5 ----------------------------------------------------------------------

LF = FRAMEWORKS / "llamafactory-0.9.5"
BOARD = "saves/Qwen2-0.5B-Instruct"  # LlamaBoard's save folder: saves/MODEL_NAME/TYPE/OUTPUT
LF_VERDICTS = {
    "tiny/qwen2": ("pass", "full"),
    # llamafactory-cli train: finetuning_type lora, full, freeze, and none named (lora)
    "lora": ("pass", "adapter"), "lora/checkpoint-2": ("pass", "adapter"),
    "full": ("pass", "full"), "full/checkpoint-2": ("pass", "full"),
    "freeze": ("pass", "full"), "freeze/checkpoint-2": ("pass", "full"),
    "default": ("pass", "adapter"), "default/checkpoint-2": ("pass", "adapter"),
    "oft": ("pass", "adapter"), "oft/checkpoint-2": ("pass", "adapter"),  # PEFT OFT, r=0
    "lora-merged": ("pass", "full"),  # llamafactory-cli export of the LoRA run
    # export_legacy_format: true, a no-op with transformers 5 (model.safetensors all the same)
    "lora-merged-legacy": ("pass", "full"),
    # launched from LlamaBoard: the UI's Finetuning method as it starts (lora), and full
    f"{BOARD}/lora/board-default": ("pass", "adapter"),
    f"{BOARD}/lora/board-default/checkpoint-2": ("pass", "adapter"),
    f"{BOARD}/full/board-full": ("pass", "full"),
    f"{BOARD}/full/board-full/checkpoint-2": ("pass", "full"),
}  # fmt: skip
LF_LORA_MEANT_FULL = {
    "lora", "lora/checkpoint-2", "default", "default/checkpoint-2", "oft", "oft/checkpoint-2",
    f"{BOARD}/lora/board-default", f"{BOARD}/lora/board-default/checkpoint-2",
}  # fmt: skip
LF_FIX = (
    "rerun with full training declared: set finetuning_type: full in the training yaml "
    "(LlamaBoard: Finetuning method full)."
)


def test_llamafactory_every_checkpoint_default_mode(tmp_path: Path, scan: Any) -> None:
    """Every run PASSes as what it is. What each declares comes from LLaMA-Factory's own
    record: LlamaBoard's training_args.yaml; the CLI saves none (its yaml stays where the user
    keeps it; training_args.bin is a pickle, never read), so nothing is declared there."""
    rc, doc = scan(copied(LF, tmp_path))
    assert rc == 0
    assert verdicts(doc) == LF_VERDICTS
    got = by_run(doc)
    for path, c in got.items():
        assert all(f["severity"] == "info" for f in c["findings"]), path
        board = path.startswith(f"{BOARD}/")
        kind = path.split("/")[2] if board else None
        assert c["declared"] == (
            f"training_args.yaml says finetuning_type={kind}" if board else None
        ), path
        if c["kind"] == "adapter":
            # LoRA r=4 (A and B) or OFT (oft_R) on all 7 linears of 2 layers; the base found by
            # its recorded relative path (tiny/qwen2) from the copied tree
            tensors = 14 if path.startswith("oft") else 28
            assert c["adapter"]["tensors"] == tensors and c["model_type"] == "qwen2", path
            assert c["adapter"]["base"] == {"found": 0, "expected": 27,
                                            "bytes_expected": c["bytes"]["expected"]}  # fmt: skip
        else:
            assert c["tensors"]["found"] == c["tensors"]["expected"] == 27, path
            assert c["tensors"]["missing"] == 0 and c["adapter"] is None


def test_llamafactory_lora_meant_full(tmp_path: Path, scan: Any) -> None:
    """--expect full: every adapter run fails, each with the record that says why. The CLI runs
    (finetuning_type lora, none named, which LLaMA-Factory trains as lora, and oft) by the
    model card saved with them (README.md tags llama-factory, and lora for a LoRA adapter);
    the LlamaBoard run by its training_args.yaml. The fix in LLaMA-Factory's terms, not
    ms-swift's flags."""
    rc, doc = scan(copied(LF, tmp_path), "--expect", "full")
    assert rc == 1
    got = by_run(doc)
    assert {p for p, c in got.items() if c["status"] == "fail"} == LF_LORA_MEANT_FULL
    for path in LF_LORA_MEANT_FULL:
        c = got[path]
        assert scan.codes(c) == ["adapter-only", "base-weights-missing", "intent-mismatch"]
        message = scan.the(c, "intent-mismatch")["message"]
        assert message.endswith(LF_FIX) and "--tuner_type" not in message, path
        if path.startswith("oft"):  # PEFT tags an OFT card with no type
            assert "LLaMA-Factory trained an adapter (finetuning_type lora or oft: " in message
            assert f"/{path}/README.md, tags it llama-factory and no type" in message
            continue
        assert "Likely cause: LLaMA-Factory ran with finetuning_type=lora (" in message, path
        if path.startswith(BOARD):
            assert "/lora/board-default/training_args.yaml says finetuning_type=lora." in message
            assert "lora is the Finetuning method LlamaBoard starts with" in message
            assert "README.md" not in message
        else:
            assert f"/{path}/README.md, tags it llama-factory and lora;" in message
            assert "lora is what it trains when the yaml names no finetuning_type" in message
    for path, c in got.items():
        if path not in LF_LORA_MEANT_FULL:
            assert c["status"] == "pass" and scan.codes(c) == [], path


def test_llamafactory_without_model_card_cause_is_generic(tmp_path: Path, scan: Any) -> None:
    """The model card is the evidence: without it (deleted, as people do), the CLI LoRA run
    still fails under --expect full, and the cause no longer claims to know the type."""
    root = copied(LF, tmp_path)
    for card in (root / "lora").rglob("README.md"):
        card.unlink()
    _, doc = scan(root / "lora", "--expect", "full")
    for c in doc["checkpoints"]:
        assert c["status"] == "fail"
        message = scan.the(c, "intent-mismatch")["message"]
        assert "LLaMA-Factory" not in message
        assert "tuner_type / train_type / finetuning_type" in message


def test_llamafactory_expect_run_per_run(tmp_path: Path, scan: Any) -> None:
    """Per run: the yaml that named no finetuning_type was meant full, the LoRA run meant
    LoRA, the LlamaBoard runs meant full; the exports are named by no rule."""
    rc, doc = scan(copied(LF, tmp_path), "--expect-run", "default=full",
                   "--expect-run", "lora=adapter", "--expect-run", "board-*=full")  # fmt: skip
    assert rc == 1
    meant_full = {
        "default", "default/checkpoint-2",
        f"{BOARD}/lora/board-default", f"{BOARD}/lora/board-default/checkpoint-2",
    }  # fmt: skip
    assert verdicts(doc) == LF_VERDICTS | {p: ("fail", "adapter") for p in meant_full}
    got = by_run(doc)
    assert got["lora/checkpoint-2"]["declared"] == "--expect-run lora=adapter"
    assert got["lora-merged"]["declared"] is None
    assert got["default"]["declared"] == "--expect-run default=full"
    assert got[f"{BOARD}/full/board-full"]["declared"] == "--expect-run board-*=full"


def test_llamafactory_oft_adapter_is_checked_not_waved_through(tmp_path: Path, scan: Any) -> None:
    """The OFT run's adapter_config (r=0 beside oft_block_size=32) and oft_R tensors PASS, and
    are still held to each other: a target module with no oft_R tensor is found, and r=0 under
    a LoRA peft_type is still no rank."""
    import json

    root = copied(LF, tmp_path)
    config_path = root / "oft" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    assert (config["peft_type"], config["r"], config["oft_block_size"]) == ("OFT", 0, 32)
    targets = [*config["target_modules"], "lm_head"]
    config_path.write_text(json.dumps(config | {"target_modules": targets}))
    _, doc = scan(root)
    got = by_run(doc)
    assert got["oft/checkpoint-2"]["status"] == "pass"  # its own config untouched
    edited = got["oft"]
    assert edited["status"] == "fail" and scan.codes(edited) == ["adapter-mismatch", "adapter-only"]
    assert "1 target_modules of adapter_config.json have no adapter tensors: lm_head" in (
        scan.the(edited, "adapter-mismatch")["message"]
    )
    config_path.write_text(json.dumps(config | {"peft_type": "LORA"}))
    _, doc = scan(root)
    edited = by_run(doc)["oft"]
    assert "r is 0: a LoRA rank is at least 1" in scan.the(edited, "invalid-file")["message"]

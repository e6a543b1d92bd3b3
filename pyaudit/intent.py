"""What the run meant against what it saved: a declared training kind (``--expect``, the
run's own arguments) held against the kind of weights found, and, when an unintended LoRA
run left its trace in the files (ms-swift ``load_args``), where it came from."""

from __future__ import annotations

from dataclasses import dataclass

from pyaudit.discover import CheckpointDir
from pyaudit.findings import Bytes, Finding, Message, finding
from pyaudit.runs import Declared, RunArgs, read_json, resolve_model


def declared(expect: str, run: RunArgs) -> Declared | None:
    """The kind of training declared: ``--expect full|adapter``, else the run's own args."""
    if expect in ("full", "adapter"):
        return Declared(expect, "--expect", "expect", expect)  # type: ignore[arg-type]
    return run.declared()


def lora_origin(run: RunArgs, ckpt: CheckpointDir) -> str | None:
    """Where an unintended LoRA came from, when the files show it (ms-swift load_args)."""
    if run.args is None or not run.model:
        return None
    model_dir = resolve_model(run.model, ckpt.path)
    if model_dir is None:
        return None
    parent_args = read_json(model_dir / "args.json")
    if parent_args is None:
        return None
    parent_type = parent_args.get("train_type") or parent_args.get("sft_type")
    if not (isinstance(parent_type, str) and parent_type.lower() != "full"):
        return None
    load_args = run.args.get("load_args")
    merged = model_dir.name.endswith("-merged")
    carrier = "an ms-swift -merged export that carries" if merged else "a directory with"
    how = (
        f"model={run.model} is {carrier} "
        f"the args.json of a train_type={parent_type} run"
    )
    if load_args in (True, None, "true", "True"):
        return (
            f"Likely cause: {how}, and load_args={load_args!r} made this run re-read those saved "
            f"arguments, keeping train_type={parent_type}. Fix: rerun with --load_args false "
            "--train_type full (or delete that args.json)."
        )
    return f"Note: {how}."


@dataclass(frozen=True)
class Intent:
    """The declared kind as the report shows it (None: nothing declared, or the kind
    found is unknown), and the findings where it and the weights disagree."""

    declared: str | None = None
    findings: tuple[Finding, ...] = ()


def check_intent(
    ckpt: CheckpointDir,
    run: RunArgs,
    declared: Declared | None,
    kind: str,
    found_bytes: int,
    expected_bytes: int | None,
) -> Intent:
    """``declared`` against ``kind`` (full / adapter / unknown) of the weights found."""
    if declared is None or kind == "unknown":
        return Intent()
    findings: list[Finding] = []
    if declared.kind == "full" and kind == "adapter":
        severity_note = "" if declared.source == "--expect" else f" ({declared.path})"
        findings.append(
            finding(
                "adapter-only",
                "only adapter weights were saved where full training was declared "
                f"({declared.describe()})",
                severity="error",
            )
        )
        origin = lora_origin(run, ckpt)
        # The run's own args disagreeing with itself is the common trap: name it.
        train_type = run.args.get("train_type") if run.args else None
        template = (
            "{declared}{note} but only LoRA adapter weights were saved ({found}"
            + (" of the {expected} a full checkpoint holds" if expected_bytes else "")
            + ")."
        )
        values: dict[str, str | Bytes] = {
            "declared": declared.describe(),
            "note": severity_note,
            "found": Bytes(found_bytes),
        }
        if expected_bytes:
            values["expected"] = Bytes(expected_bytes)
        if declared.source == "--expect" and isinstance(train_type, str):
            template += " {args_path} says train_type={train_type}."
            values["args_path"] = str(run.args_path)
            values["train_type"] = train_type
        template += " {cause}"
        values["cause"] = origin or (
            "Likely cause: the training framework ran with LoRA enabled (train_type / "
            "finetuning_type, or arguments inherited from an earlier run); rerun with full "
            "training declared explicitly."
        )
        findings.append(finding("intent-mismatch", Message.of(template, **values)))
    elif declared.kind == "adapter" and kind == "full":
        if ckpt.path.name.endswith("-merged") and declared.source != "--expect":
            return Intent(
                declared.describe()
            )  # an ms-swift merged export: full weights under the adapter run's args
        findings.append(
            finding(
                "intent-mismatch",
                Message.of(
                    "{declared}{where} but full model weights were saved ({found}): the "
                    "adapter was merged or full-parameter training ran; if the weights are "
                    "meant, fix the declared training type, else check the PEFT setup",
                    declared=declared.describe(),
                    where=f" ({declared.path})" if declared.path else "",
                    found=Bytes(found_bytes),
                ),
            )
        )
    return Intent(declared.describe(), tuple(findings))

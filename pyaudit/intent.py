"""What the run meant against what it saved: a declared training kind (``--expect``, the
run's own arguments) held against the kind of weights found, and, when an unintended LoRA
run left its trace in the files (ms-swift ``load_args``), where it came from."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from pyaudit import lineage
from pyaudit.discover import CheckpointDir
from pyaudit.findings import Bytes, Finding, Message, finding
from pyaudit.runfiles import Fetched
from pyaudit.runs import (
    LLAMAFACTORY_DEFAULT_TYPE,
    Declared,
    Kind,
    RunArgs,
    expectation_for,
    kind_of_train_type,
    llamafactory_card,
    swift_full_flags,
    swift_major,
    type_field,
)  # fmt: skip


def declared(
    expect: str, run: RunArgs, display: str = "", expect_runs: Collection[tuple[str, Kind]] = ()
) -> Declared | None:
    """The kind of training declared: ``--expect full|adapter``, else the last
    ``--expect-run PATTERN=KIND`` whose pattern matches the checkpoint's path (``display``),
    else the run's own args."""
    if expect in ("full", "adapter"):
        return Declared(expect, "--expect", "expect", expect)  # type: ignore[arg-type]
    rule = expectation_for(display, expect_runs) if expect_runs else None
    if rule is not None:
        pattern, kind = rule
        return Declared(kind, "--expect-run", "expect-run", f"{pattern}={kind}")
    return run.declared()


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
    fetched: Fetched | None = None,
) -> Intent:
    """``declared`` against ``kind`` (full / adapter / unknown) of the weights found; and
    an adapter-only run whose training type its own record took over from an earlier
    run's saved arguments (ms-swift ``load_args``), which is never a PASS. ``fetched``: run
    files' bytes read elsewhere (the earlier runs' ``args.json``), asked before the disk."""
    if kind == "unknown":
        return Intent()
    findings: list[Finding] = []
    inherited = lineage.inherited(run, ckpt, fetched) if kind == "adapter" else None
    by_user = declared is not None and declared.source.startswith("--expect")
    if inherited is not None and not by_user and (declared is None or declared.kind == "adapter"):
        # Nothing declared but the run's own record, and that record was inherited.
        findings.append(lineage.inherited_finding(inherited, ckpt, Bytes(found_bytes)))
    ignored = lineage.adapters_ignored_finding(run, ckpt) if kind == "full" else None
    if ignored is not None:
        findings.append(ignored)
    if declared is None:
        return Intent(None, tuple(findings))
    if declared.kind == "full" and kind == "adapter":
        severity_note = "" if by_user else f" ({declared.path})"
        findings.append(
            finding(
                "adapter-only",
                "only adapter weights were saved where full training was declared "
                f"({declared.describe()})",
                severity="error",
            )
        )
        # The run's own args disagreeing with itself is the common trap: name it.
        recorded, recorded_in = _recorded(run)
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
        if by_user and recorded is not None:
            template += " {args_path} says {key}={value}."
            values["args_path"] = str(recorded_in)
            values["key"], values["value"] = recorded
        template += " {cause}"
        values["cause"] = (
            lineage.cause(inherited, ckpt) if inherited is not None
            else lineage.parent_adapter_cause(run, ckpt, fetched)
            or lineage.resume_cause(run, ckpt, fetched)
            or _generic_cause(run, recorded, ckpt)
        )  # fmt: skip
        findings.append(finding("intent-mismatch", Message.of(template, **values)))
    elif declared.kind == "adapter" and kind == "full":
        if ckpt.path.name.endswith("-merged") and declared.source != "--expect":
            # (--expect-run PATTERN=adapter names a run: its merged export is not held to it)
            # an ms-swift merged export: full weights under the adapter run's args
            return Intent(declared.describe(), tuple(findings))
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


def _recorded(run: RunArgs) -> tuple[tuple[str, str] | None, Path | None]:
    """The training type the run's own saved arguments hold, and the file: ms-swift's
    args.json, else LLaMA-Factory's training_args.yaml (LlamaBoard writes it)."""
    found = type_field(run.args) if run.args else None
    if found is not None:
        return found, run.args_path
    value = run.yaml.get("finetuning_type") if run.yaml else None
    if value:
        return ("finetuning_type", value), run.yaml_path
    return None, None


# LLaMA-Factory's fix: its yaml key (CLI), its web UI's field (LlamaBoard).
LLAMAFACTORY_FIX = (
    "set finetuning_type: full in the training yaml (LlamaBoard: Finetuning method full)"
)


def _generic_cause(run: RunArgs, recorded: tuple[str, str] | None, ckpt: CheckpointDir) -> str:
    """The cause when no inheritance shows: the run's own type, fixed in its version's flags."""
    if recorded is not None and recorded[0] == "finetuning_type":  # LLaMA-Factory
        _, where = _recorded(run)
        source = f"recorded in {where}"
        if where is not None and where.name == "training_args.yaml":
            source = "its training_args.yaml, which LlamaBoard writes and trains from" + (
                f"; {recorded[1]} is the Finetuning method LlamaBoard starts with"
                if recorded[1] == LLAMAFACTORY_DEFAULT_TYPE
                else ""
            )
        return (
            f"Likely cause: LLaMA-Factory ran with finetuning_type={recorded[1]} ({source}); "
            f"rerun with full training declared: {LLAMAFACTORY_FIX}."
        )
    if recorded is None:
        card = llamafactory_card(ckpt.path, ckpt.scan_root)
        if card is not None and card[1] is None:
            return (
                "Likely cause: LLaMA-Factory trained an adapter (finetuning_type lora or oft: "
                f"the model card saved with the run, {card[0]}, tags it llama-factory and no "
                "type, and LLaMA-Factory's command line saves no other readable record of it); "
                f"rerun with full training declared: {LLAMAFACTORY_FIX}."
            )
        if card is not None and kind_of_train_type(card[1]) == "adapter":
            path, value = card
            default = (
                f", and {value} is what it trains when the yaml names no finetuning_type"
                if value == LLAMAFACTORY_DEFAULT_TYPE
                else ""
            )
            return (
                f"Likely cause: LLaMA-Factory ran with finetuning_type={value} (the model card "
                f"saved with the run, {path}, tags it llama-factory and {value}; LLaMA-Factory's "
                f"command line saves no other readable record of the type{default}); rerun "
                f"with full training declared: {LLAMAFACTORY_FIX}."
            )
    major = swift_major(run.args) if run.args else None
    flag = swift_full_flags(major, load_args=False) if major else None
    ran = (
        f"{recorded[0]}={recorded[1]} in {run.args_path}"
        if recorded is not None
        else "tuner_type / train_type / finetuning_type, or arguments inherited from an earlier run"
    )
    return (
        f"Likely cause: the training framework ran with LoRA enabled ({ran}); rerun with full "
        "training declared" + (f" ({flag})." if flag else " explicitly.")
    )

"""What a run took over from the run before it: the ms-swift ``load_args`` trap.

A run started with ``load_args`` on a directory that holds an earlier run's ``args.json``
(an ``-merged`` export carries the SFT run's) has its training type force-loaded from
that file over the command line: ``swift rlhf --tuner_type full --load_args true`` on an
export of a LoRA run trains LoRA and saves adapters only, and the log says only
``Successfully loaded .../args.json``. :func:`inherited_cause` names that mechanism and the
fix in the flags of the version that wrote the run (:mod:`pyaudit.runs` reads the records).
"""

from __future__ import annotations

from pathlib import Path

from pyaudit.discover import CheckpointDir
from pyaudit.findings import Bytes, Finding, Message, finding
from pyaudit.runfiles import Fetched
from pyaudit.runs import (
    Inherited,
    RunArgs,
    find_parent_run,
    is_true,
    kind_of_train_type,
    read_json,
    swift_full_flags,
    swift_ignored_adapters,
    swift_inherited,
    swift_major,
    swift_resumed,
    type_field,
)  # fmt: skip


def inherited(
    run: RunArgs, ckpt: CheckpointDir, fetched: Fetched | None = None
) -> Inherited | None:
    """The ms-swift inheritance behind this checkpoint's run, when its records show one."""
    if run.args is None or run.args_path is None:
        return None
    return swift_inherited(run.args, ckpt.path, ckpt.scan_root, fetched)


def _shown(path: Path | None, ckpt: CheckpointDir) -> str:
    """A path as the user scanned it (relative to the scanned PATH when below it)."""
    if path is None:
        return ""
    root = ckpt.scan_root
    if root is not None:
        try:
            return str(path.relative_to(root)) or "."
        except ValueError:
            pass
    return str(path)


def cause(found: Inherited, ckpt: CheckpointDir) -> str:
    """'Cause: ... Fix: ...' for an adapter-only checkpoint of an inheriting run."""
    parent = (
        f"{_shown(found.parent, ckpt)}/args.json says {found.key}={found.parent_value}"
        if found.parent is not None
        else f"{found.source}/args.json is not in the scanned tree; this run's own args.json "
        f"records load_args=true and ckpt_dir={found.source}"
    )
    version = f"ms-swift {found.major}.x" if found.major else "ms-swift"
    what = f"{found.rlhf_type} run" if found.rlhf_type else "run"
    return (
        f"Cause: this {what} was started with load_args=true on {found.named}, which holds an "
        f"earlier run's saved arguments; {version} force-loads {found.key} from them over the "
        f"command line, so it trained {found.key}={found.value} ({parent}; its log says only "
        f"'Successfully loaded .../args.json'). Fix: {found.fix}."
    )


def inherited_finding(found: Inherited, ckpt: CheckpointDir, found_bytes: Bytes) -> Finding:
    """Default mode (nothing declared but the run's own, inherited, record): not a PASS."""
    return finding(
        "args-inherited",
        Message.of(
            "adapter weights only ({found}), and the run's {key}={value} was re-read from an "
            "earlier run's saved arguments, not taken from its command line. {cause} If LoRA "
            "was meant, pass it explicitly with load_args off and this goes away.",
            found=found_bytes, key=found.key, value=found.value, cause=cause(found, ckpt),
        ),
    )


def parent_adapter_cause(
    run: RunArgs, ckpt: CheckpointDir, fetched: Fetched | None = None
) -> str | None:
    """A run whose model directory carries an adapter run's args.json (an ``-merged`` export
    does), started with ``load_args`` on (or not recorded), that saved adapters: the
    parent's arguments are the likely source."""
    if run.args is None or not run.model:
        return None
    model_dir = find_parent_run(run.model, ckpt.path, ckpt.scan_root)
    parent_args = (
        read_json(model_dir / "args.json", fetched=fetched) if model_dir is not None else None
    )
    found = type_field(parent_args) if parent_args is not None else None
    if model_dir is None or found is None or kind_of_train_type(found[1]) != "adapter":
        return None
    key, value = found
    merged = model_dir.name.endswith("-merged")
    how = (
        f"model={run.model} is "
        + ("an ms-swift -merged export that carries" if merged else "a directory with")
        + f" the args.json of a {key}={value} run"
    )
    load_args = run.args.get("load_args")
    if not (load_args is None or is_true(load_args)):
        return None  # the parent's arguments were not re-read: the run's own type stands
    flags = swift_full_flags(swift_major(run.args), load_args=True)
    return (
        f"Likely cause: {how}, and load_args={load_args!r} made this run re-read those saved "
        f"arguments, keeping {key}={value}. Fix: rerun with {flags} (or delete that args.json)."
    )


def resume_cause(
    run: RunArgs, ckpt: CheckpointDir, fetched: Fetched | None = None
) -> str | None:
    """An adapter-only checkpoint held to full training, of an ms-swift run that resumed an
    adapter checkpoint (``resume_from_checkpoint``): the cause, and the way to full weights.

    ms-swift 3.12.6 cannot turn an adapter checkpoint into full training by resuming it (seen
    in real runs): ``--train_type full --resume_from_checkpoint LORA`` stops before its first
    step (transformers' Trainer finds no full weights there: "Can't find a checkpoint
    index"); with ``--resume_only_model true`` ms-swift makes the adapter folder the
    ``--model`` and loading it fails ("Unrecognized model"). Neither saves a checkpoint."""
    if run.args is None:
        return None
    resumed = swift_resumed(run.args, ckpt.path, ckpt.scan_root, fetched)
    if resumed is None:
        return None
    own = type_field(run.args)
    if resumed.parent_kind == "adapter" and resumed.parent_type is not None:
        what = f"a {resumed.parent_type[0]}={resumed.parent_type[1]} checkpoint"
        if resumed.parent is not None and str(resumed.parent) != resumed.source:
            what += f": {_shown(resumed.parent, ckpt)}/args.json"
    elif resumed.parent is None and own is not None and kind_of_train_type(own[1]) == "adapter":
        what = "not in the scanned tree"
    else:
        return None
    major = swift_major(run.args)
    flags = swift_full_flags(major, load_args=False)
    trained = (
        f"and its args.json says {own[0]}={own[1]}: it went on training the adapter"
        if own is not None and kind_of_train_type(own[1]) == "adapter"
        else f"and saved adapter weights although its args.json says {own[0]}={own[1]}"
        if own is not None
        else "and saved adapter weights"
    )
    version = f"ms-swift {major}.x" if major else "ms-swift"
    return (
        f"Likely cause: this run resumed {resumed.source} (resume_from_checkpoint; {what}), "
        f"{trained}. Resuming an adapter checkpoint cannot give full weights: {version} started "
        f"with {flags} on it stops before the first step (the Trainer finds no full weights "
        "there). Fix: merge the adapter first (swift export --adapters "
        f"{resumed.source} --merge_lora true), then train with {flags} --model "
        f"{resumed.source}-merged, without --resume_from_checkpoint."
    )


def adapters_ignored_finding(run: RunArgs, ckpt: CheckpointDir) -> Finding | None:
    """Full weights from an ms-swift SFT run whose args.json records ``adapters`` with
    ``train_type``/``tuner_type`` full: ms-swift did not load them (:func:`swift_ignored_adapters`),
    so the weights hold no trace of the adapters' training. Never a silent PASS."""
    if run.args is None or run.args_path is None:
        return None
    adapters = swift_ignored_adapters(run.args)
    if not adapters:
        return None
    found = type_field(run.args)
    assert found is not None  # swift_ignored_adapters checked it
    major = swift_major(run.args)
    version = f"ms-swift {major}.x" if major else "ms-swift"
    first = adapters[0]
    model = run.model or "the --model"
    lora = {3: "--train_type", 4: "--tuner_type"}.get(major or 4, "--tuner_type")
    return finding(
        "adapters-ignored",
        Message.of(
            "full weights were saved, and {args_path} records adapters={adapters} with "
            "{key}={value}: {version} loads --adapters only when training an adapter type, so "
            "this run trained model={model} alone and the adapters' training is not in these "
            "weights (its log does not say so). If continuing them was meant: merge first "
            "(swift export --adapters {first} --merge_lora true) and train full with --model "
            "{first}-merged, or keep training the adapter with {lora} lora --adapters {first}.",
            args_path=str(run.args_path), adapters=str(adapters), key=found[0], value=found[1],
            version=version, model=model, first=first, lora=lora,
        ),
    )

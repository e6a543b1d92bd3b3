"""Pickle-era weights of one checkpoint, read as data and held like safetensors.

What is read (never unpickled: :mod:`pyaudit.formats`): each ``.bin`` weight file's zip
central directory and ``data.pkl`` (or a legacy torch file's pickles), an FSDP / DCP
folder's ``.metadata``, a DeepSpeed ``global_step*/`` folder's records. From them, the
tensors' names, shapes and dtypes as :class:`~pyaudit.auditing.compare.Found` entries, so
the one comparison (:func:`~pyaudit.auditing.compare.compare_full`) holds them against
what the model must hold; and findings for what the files themselves break.

A sharded training state (DCP, ZeRO) is never a loadable model: complete against the
model it is an ``unconsolidated`` warning with the command that consolidates it; what
it lacks is an error, as for any other checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyaudit import _core
from pyaudit.auditing.compare import Found, is_peft_tensor
from pyaudit.auditing.results import FileEntry
from pyaudit.discover import CheckpointDir
from pyaudit.findings import Finding, finding
from pyaudit.formats.dcp import METADATA, DcpCheckpoint, read_dcp
from pyaudit.formats.deepspeed import (
    MODEL_STATES,
    OPTIM_STATES,
    STEP_DIR,
    DeepSpeedStep,
    read_deepspeed,
)
from pyaudit.formats.table import Problem
from pyaudit.formats.torch_pickle import TorchCheckpoint, read_torch_files
from pyaudit.runs import read_json
from pyaudit.units import plural

# A torch file's format rules, as the finding a user acts on.
_TRUNCATED_RULES = frozenset({"zip-truncated", "pickle-truncated", "storage-truncated"})
# Top-level keys a whole-training-state dict keeps the model's state dict under (no model
# names a submodule so; ``model.`` is many models' own first segment, ``module.`` a
# wrapper the comparison reports).
STATE_DICT_KEYS = ("state_dict", "model_state_dict")
DCP_MODEL_DIR = re.compile(r"pytorch_model_fsdp_\d+$")
# A DCP folder's problems, as the finding a user acts on (any other: corrupt-pickle).
_DCP_CODES = {"storage-missing": "shard-missing", "storage-truncated": "shard-truncated"}


@dataclass(frozen=True)
class PickledFiles:
    """What a checkpoint's pickle-era files hold, read before its audit (the caller reads,
    so a remote mirror, whose weight files are placeholders, passes none)."""

    bins: Mapping[str, TorchCheckpoint] = field(default_factory=dict)  # file name -> reading
    dcp: Mapping[str, DcpCheckpoint] = field(default_factory=dict)  # folder ("." too) -> reading
    zero: DeepSpeedStep | None = None  # the latest global_step*/ folder
    zero_tag: str | None = None


def read_pickled(ckpt: CheckpointDir, jobs: int | None = None) -> PickledFiles | None:
    """Read the pickle-era files of ``ckpt`` (headers and records only); None when it has
    none. Never raises for a bad file: each reading carries its rule."""
    if not ckpt.has_pickled:
        return None
    names = _bins_read(ckpt)
    bins = dict(zip(names, read_torch_files([ckpt.file(n) for n in names], jobs), strict=True))
    if ckpt.has_weights:  # a sharded state beside weights is not what loads: not read
        return PickledFiles(bins)
    dcp: dict[str, DcpCheckpoint] = {}
    for folder in _dcp_folders(ckpt):
        dcp[folder] = read_dcp(ckpt.path if folder == "." else ckpt.path / folder)
    tag = _latest_zero(ckpt)
    zero = read_deepspeed(ckpt.path / tag, jobs) if tag is not None else None
    return PickledFiles(bins, dcp, zero, tag)


def pickled_inputs(ckpt: CheckpointDir) -> list[str]:
    """The files (relative to the checkpoint) :func:`read_pickled` opens: what a remote
    scan must fetch for it (a DCP's ``*.distcp`` files are only asked their size)."""
    names = _bins_read(ckpt)
    if ckpt.has_weights:
        return names
    names += [METADATA if f == "." else f"{f}/{METADATA}" for f in _dcp_folders(ckpt)]
    if ckpt.zero_dirs:
        names += [
            rel for rel in ckpt.zero_files
            if MODEL_STATES.search(rel) or OPTIM_STATES.search(rel)
        ]  # fmt: skip
        if "latest" in ckpt.other_files:
            names.append("latest")
    return names


def _bins_read(ckpt: CheckpointDir) -> list[str]:
    """The .bin weight files the audit holds against the model: none beside .safetensors
    (from_pretrained loads those; the .bin files are only named, shapes-unverified)."""
    return [] if ckpt.safetensors else list(ckpt.bin_weights)


def _dcp_folders(ckpt: CheckpointDir) -> list[str]:
    """Folders of the model's DCP state with a .metadata to read (the optimizer's
    ``optimizer_0/`` is training state and is not among them)."""
    folders = set()
    for rel in ckpt.fsdp_files:
        folder, sep, name = rel.rpartition("/")
        if name == METADATA:
            folders.add(folder if sep else ".")
    if ".metadata" in ckpt.other_files:
        folders.add(".")
    return sorted(f for f in folders if f == "." or DCP_MODEL_DIR.match(f.rsplit("/", 1)[-1]))


def _latest_zero(ckpt: CheckpointDir) -> str | None:
    """The global_step folder DeepSpeed loads: the one ``latest`` names, else the highest."""
    if not ckpt.zero_dirs:
        return None
    if "latest" in ckpt.other_files:
        try:
            with open(ckpt.file("latest"), "rb") as f:
                named = f.read(256).decode("utf-8", "replace").strip()
        except OSError:
            named = ""
        if named in ckpt.zero_dirs:
            return named

    def step(name: str) -> int:
        m = STEP_DIR.search(name)
        return int(m.group(1)) if m else -1

    return max(ckpt.zero_dirs, key=step)


# --- .bin weight files --------------------------------------------------------------------


@dataclass
class BinContents:
    """The tensors of a checkpoint's .bin files, and what the files themselves break."""

    base: dict[str, Found] = field(default_factory=dict)
    adapter: dict[str, Found] = field(default_factory=dict)
    files: list[FileEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    readable: set[str] = field(default_factory=set)
    found_bytes: int = 0


def _state_dict_prefix(reading: TorchCheckpoint, names: list[str]) -> str:
    """A whole-training-state dict (``{"state_dict": {...}, "epoch": 3}``): the prefix
    its weights sit under, when every tensor is under one such key."""
    tops = {n.split(".", 1)[0] for n in names}
    if len(tops) == 1 and all("." in n for n in names):
        top = next(iter(tops))
        if top in STATE_DICT_KEYS:
            return top + "."
    return ""


def bin_contents(ckpt: CheckpointDir, pickled: PickledFiles) -> BinContents:
    out = BinContents()
    for name, reading in pickled.bins.items():
        tensors = reading.tensors() if reading.rule == "ok" else []
        out.files.append(
            FileEntry(name, reading.file_size, len(tensors), reading.ok, reading.rule)
        )
        out.findings += file_findings(name, reading)
        if reading.rule != "ok":
            continue
        out.readable.add(name)
        prefix = _state_dict_prefix(reading, [t.name for t in tensors])
        target = out.adapter if name.startswith("adapter_model") else out.base
        for t in tensors:
            tname = t.name[len(prefix) :]
            nbytes = t.numel * _bits(t.dtype) // 8
            target[tname] = Found(t.dtype, t.shape, nbytes, name)
            out.found_bytes += nbytes
    return out


def _bits(dtype: str) -> int:
    return _core.DTYPE_BITS.get(dtype, 0)


def file_findings(name: str, reading: TorchCheckpoint) -> list[Finding]:
    """What one torch file breaks: its format (truncated, corrupt), its tensors' records,
    and globals that would run code or that torch.load(weights_only=True) refuses."""
    out: list[Finding] = []
    if reading.rule == "io-error":
        out.append(finding("unreadable", f"{name}: {reading.message}"))
        return out
    if reading.rule in _TRUNCATED_RULES:
        out.append(
            finding(
                "shard-truncated",
                f"{name} is truncated ({reading.file_size:,} bytes; {reading.rule}): "
                f"{reading.message}",
            )
        )
    elif reading.rule != "ok":
        out.append(finding("corrupt-pickle", f"{name}: {reading.rule}: {reading.message}"))
    problems = reading.problems() if reading.rule == "ok" else []
    truncated = [p for p in problems if p.rule in _TRUNCATED_RULES]
    other = [p for p in problems if p.rule not in _TRUNCATED_RULES]
    if truncated:
        out.append(
            finding(
                "shard-truncated",
                f"{name}: {plural(len(truncated), 'tensor')} reach past the end of their "
                f"storage record (e.g. {truncated[0].message})",
                tensors=[p.tensor for p in truncated if p.tensor],
                count=len(truncated),
            )
        )
    if other:
        out.append(
            finding(
                "corrupt-pickle",
                f"{name}: {plural(len(other), 'record')} broken (e.g. {other[0].rule}: "
                f"{other[0].message})",
                tensors=[p.tensor for p in other if p.tensor],
                count=len(other),
            )
        )
    # Globals named before a broken opcode count too: an unpickler would have run them.
    unsafe = reading.unsafe_globals()
    if unsafe:
        out.append(
            finding(
                "unsafe-pickle",
                f"{name} names {', '.join(g.qualname for g in unsafe[:5])}: loading it with "
                "torch.load(weights_only=False) or pickle would run that code (pyaudit "
                "never unpickles; torch.load(weights_only=True) refuses it)",
                count=len(unsafe),
            )
        )
    unknown = reading.unrecognised_globals()
    if unknown:
        out.append(
            finding(
                "pickle-globals",
                f"{name} names {plural(len(unknown), 'global')} that are not torch's "
                f"tensor rebuilders ({', '.join(g.qualname for g in unknown[:5])}): "
                "torch.load(weights_only=True) refuses them unless allow-listed; the "
                "tensors around them were read",
                count=len(unknown),
            )
        )
    return out


def check_bin_index(
    ckpt: CheckpointDir, contents: BinContents
) -> tuple[list[Finding], frozenset[str]]:
    """``pytorch_model.bin.index.json`` against the .bin files: shards it names that are
    absent, tensors it places where they are not. The findings, and the tensors whose
    absence a file finding already explains (their shard missing or unreadable)."""
    out: list[Finding] = []
    explained: set[str] = set()
    for index_name in ckpt.bin_indexes:
        doc = read_json(ckpt.path / index_name)
        weight_map: Any = doc.get("weight_map") if doc else None
        if not isinstance(weight_map, dict):
            out.append(
                finding(
                    "index-mismatch", f"{index_name} is not a readable index (no weight_map object)"
                )
            )
            continue
        placed = {t: f for t, f in weight_map.items() if isinstance(f, str)}
        absent = sorted({f for f in placed.values() if f not in ckpt.bin_weights})
        if absent:
            lost = [t for t, f in placed.items() if f in absent]
            out.append(
                finding(
                    "shard-missing",
                    f"{index_name} names {plural(len(absent), 'missing shard')} "
                    f"({', '.join(absent[:5])}), holding {plural(len(lost), 'tensor')}",
                    tensors=lost,
                    count=len(absent),
                )
            )
            explained.update(lost)
        unread = {f for f in placed.values() if f in ckpt.bin_weights} - contents.readable
        explained.update(t for t, f in placed.items() if f in unread)
        held = {t: f.file for t, f in contents.base.items()}
        misplaced = [
            t for t, f in placed.items()
            if f in contents.readable and held.get(t) != f
        ]  # fmt: skip
        unnamed = [
            t for t, f in held.items()
            if t not in placed and not is_peft_tensor(t)
        ]  # fmt: skip
        if misplaced:
            out.append(
                finding(
                    "index-mismatch",
                    f"{index_name} places {plural(len(misplaced), 'tensor')} in files that "
                    f"do not hold them (e.g. {misplaced[0]} in {placed[misplaced[0]]})",
                    tensors=misplaced,
                )
            )
        if unnamed:
            out.append(
                finding(
                    "index-mismatch",
                    f"the .bin files hold {plural(len(unnamed), 'tensor')} {index_name} does "
                    f"not name (e.g. {unnamed[0]} in {held[unnamed[0]]}): from_pretrained "
                    "never loads them",
                    tensors=unnamed,
                )
            )
    return out, frozenset(explained)


# --- sharded training states: DCP (FSDP) and DeepSpeed ZeRO ---------------------------------


@dataclass
class ShardedState:
    """A sharded model state held in place of weights: its tensors, what its files break,
    and how to consolidate it (None when its inputs are not all there)."""

    where: str
    found: dict[str, Found]
    findings: list[Finding]
    command: str | None
    dtypes_known: bool = True


def dcp_states(ckpt: CheckpointDir, pickled: PickledFiles) -> list[ShardedState]:
    out = []
    for folder, reading in pickled.dcp.items():
        where = "this folder" if folder == "." else f"{folder}/"
        target = ckpt.display if folder == "." else f"{ckpt.display}/{folder}"
        findings: list[Finding] = []
        if reading.metadata.rule != "ok":
            name = METADATA if folder == "." else f"{folder}/{METADATA}"
            findings += file_findings(name, reading.metadata)
        elif reading.rule != "ok":
            findings.append(
                finding(
                    "corrupt-pickle",
                    f"{where}.metadata is a pickle but not torch.distributed.checkpoint "
                    "Metadata: the shards cannot be read without it",
                )
            )
        else:
            by_code: dict[str, list[Problem]] = {}
            for p in reading.problems:
                code = _DCP_CODES.get(p.rule, "corrupt-pickle")
                by_code.setdefault(code, []).append(p)
            for code, problems in by_code.items():
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                findings.append(
                    finding(
                        code,
                        f"FSDP state in {where}: {problems[0].message}{more}",
                        tensors=[p.tensor for p in problems if p.tensor],
                        count=len(problems),
                    )
                )
        prefix = reading.prefix() if reading.rule == "ok" else ""
        table = reading.to_table(strip_prefix=prefix) if reading.rule == "ok" else None
        found = (
            {n: Found(e.dtype if e.dtype != "?" else "", e.shape, e.nbytes, folder)
             for n, e in table.tensors.items()}
            if table is not None else {}
        )  # fmt: skip
        shards = len(reading.file_sizes)
        command = (
            f"accelerate merge-weights {target} OUTPUT_DIR"
            if reading.ok and not findings
            else None
        )
        out.append(
            ShardedState(f"FSDP sharded model state in {where} ({shards} shard(s))", found,
                         findings, command)
        )  # fmt: skip
    return out


def zero_state(ckpt: CheckpointDir, pickled: PickledFiles) -> ShardedState | None:
    step, tag = pickled.zero, pickled.zero_tag
    if step is None or tag is None:
        return None
    findings: list[Finding] = []
    unreadable = [p for p in step.problems if p.rule == "io-error"]
    broken = [
        p for p in step.problems
        if p.rule not in ("io-error", *_TRUNCATED_RULES)
    ]  # fmt: skip
    truncated = [p for p in step.problems if p.rule in _TRUNCATED_RULES]
    if unreadable:
        findings.append(finding("unreadable", f"{tag}/: {unreadable[0].message}"))
    if truncated:
        findings.append(
            finding("shard-truncated", f"{tag}/{truncated[0].message}", count=len(truncated))
        )
    if broken:
        findings.append(
            finding("corrupt-pickle", f"{tag}/{broken[0].message}", count=len(broken))
        )
    if step.missing_ranks:
        ranks = ", ".join(str(r) for r in step.missing_ranks[:8])
        findings.append(
            finding(
                "shard-missing",
                f"DeepSpeed state in {tag}/ was saved by {step.world_size} data-parallel "
                f"ranks, but the partitions of rank(s) {ranks} are absent: zero_to_fp32 "
                "cannot rebuild the weights",
                count=len(step.missing_ranks),
            )
        )
    elif step.optim_files and step.param_numel and step.covered_numel < step.param_numel:
        findings.append(
            finding(
                "shard-missing",
                f"DeepSpeed optimizer partitions in {tag}/ hold {step.covered_numel:,} fp32 "
                f"elements; the parameters need {step.param_numel:,}: zero_to_fp32 cannot "
                "rebuild them all",
            )
        )
    if not step.optim_files and step.stage == 3:
        findings.append(
            finding(
                "no-weights",
                f"DeepSpeed ZeRO-3 state in {tag}/ without optimizer partitions "
                "(*_optim_states.pt): its model states are placeholders and zero_to_fp32 "
                "cannot rebuild the weights; the model was not saved in a loadable form (save "
                "with stage3_gather_16bit_weights_on_model_save: true, or keep the optimizer "
                "states)",
            )
        )
    found: dict[str, Found] = {}
    dtypes_known = True
    table = step.model_table()
    if table is not None and table.tensors:  # ZeRO 0-2: the real weights, training dtype
        found = {n: Found(e.dtype, e.shape, e.nbytes, tag) for n, e in table.tensors.items()}
    else:  # ZeRO-3: names and shapes from param_shapes; dtypes are not recorded
        first = step.model_files.get(0) or step.zero3_model_files.get(0)
        if first is not None and first in step.files:
            for key, value in step.files[first].values().items():
                if (
                    key.startswith("param_shapes.")
                    and key.count(".") >= 2
                    and isinstance(value, tuple)
                ):
                    found[key.split(".", 2)[2]] = Found("", value, 0, tag)
            dtypes_known = False
    optim = list(step.optim_files.values())
    usable = step.partitions_complete and not findings
    command = None
    if usable and optim:
        script = (
            f"python {ckpt.display}/zero_to_fp32.py" if "zero_to_fp32.py" in ckpt.other_files
            else "python -m deepspeed.utils.zero_to_fp32"
        )  # fmt: skip
        tag_flag = "" if "latest" in ckpt.other_files else f" --tag {tag}"
        command = f"{script} {ckpt.display} OUTPUT_DIR{tag_flag}"
    stage = f"ZeRO-{step.stage}" if step.stage is not None else "ZeRO"
    cover = (
        f", covering {step.covered_numel:,} of the {step.param_numel:,} parameter elements"
        if optim and step.param_numel
        else ""
    )
    where = (
        f"DeepSpeed {stage} state in {tag}/ ({step.world_size} rank(s), "
        f"{plural(len(optim), 'optimizer partition')}{cover})"
    )
    return ShardedState(where, found, findings, command, dtypes_known)


def unconsolidated(state: ShardedState, complete: bool, held: bool) -> Finding:
    """The warning a sharded state gets: not loadable as it is, and how to make it so
    (an error when it lists no model tensor at all).
    ``complete``: its files are sound and (``held``: held against the model) it holds every
    tensor the model needs."""
    if not state.found and not state.findings:
        return finding(
            "no-weights",
            f"{state.where}: its records list no model tensors, so there is nothing to "
            "consolidate: the model was not saved",
        )
    if complete and state.command is not None:
        what = (
            "every tensor the model needs is there"
            + ("" if state.dtypes_known else " (names and shapes; dtypes are not recorded)")
            if held
            else f"{len(state.found)} tensors, not held against the model (nothing says what "
            "it must hold)"
        )
        return finding(
            "unconsolidated",
            f"{state.where}: {what}, but from_pretrained cannot load a sharded training "
            f"state — consolidate: `{state.command}`",
        )
    why = "it is incomplete or broken (see the errors)" if state.findings or held else (
        "its consolidation inputs are not all there"
    )
    return finding(
        "unconsolidated",
        f"{state.where}: not loadable with from_pretrained, and consolidating it would not "
        f"give the whole model: {why}",
    )

"""A model folder without weight files: what it holds instead, and advice only where its
inputs exist.

A sharded training state (DeepSpeed ZeRO ``global_step*/``, FSDP ``pytorch_model_fsdp_0/``)
in place of weights is a model nobody can load with ``from_pretrained`` until it is
consolidated (``no-weights``, an error, in a ``checkpoint-N`` as in a run's final save).
The consolidation command is named only when the files it reads are there: ``zero_to_fp32``
rebuilds fp32 weights from the optimizer partitions (``*_optim_states.pt``), ``accelerate
merge-weights`` reads the DCP ``.metadata`` with its shards.
"""

from __future__ import annotations

import os
from collections import defaultdict

from pyaudit.discover import CheckpointDir
from pyaudit.findings import Finding, finding


def _nonempty(ckpt: CheckpointDir, name: str) -> bool:
    try:
        return os.stat(ckpt.file(name)).st_size > 0
    except OSError:
        return False


def _zero_advice(ckpt: CheckpointDir) -> str:
    dirs = ", ".join(d + "/" for d in ckpt.zero_dirs[:3])
    by_dir: dict[str, list[str]] = defaultdict(list)
    for rel in ckpt.zero_files:
        folder, _, name = rel.partition("/")
        by_dir[folder].append(name)
    tag = ckpt.zero_dirs[-1]
    names = by_dir.get(tag, [])
    optim = [n for n in names if n.endswith("_optim_states.pt")]
    model = [n for n in names if n.endswith("_model_states.pt")]
    usable = [n for n in optim if _nonempty(ckpt, f"{tag}/{n}")]
    if not model or not usable:
        lacking = (
            "no *_model_states.pt" if not model
            else "no optimizer partitions (*_optim_states.pt absent or empty)"
        )  # fmt: skip
        return (
            f"DeepSpeed ZeRO state in {dirs} with {lacking}: zero_to_fp32 cannot rebuild the "
            "weights from it; the model was not saved in a loadable form (save it with "
            "stage3_gather_16bit_weights_on_model_save: true, or keep the optimizer states)"
        )
    script = (
        f"python {ckpt.display}/zero_to_fp32.py" if "zero_to_fp32.py" in ckpt.other_files
        else "python -m deepspeed.utils.zero_to_fp32"
    )  # fmt: skip
    tag_flag = "" if "latest" in ckpt.other_files else f" --tag {tag}"
    return (
        f"DeepSpeed ZeRO state in {dirs} ({len(usable)} optimizer partition(s)) — consolidate: "
        f"`{script} {ckpt.display} OUTPUT_DIR{tag_flag}` (or save with "
        "stage3_gather_16bit_weights_on_model_save: true)"
    )


def _fsdp_advice(ckpt: CheckpointDir) -> str:
    by_dir: dict[str, list[str]] = defaultdict(list)
    for rel in ckpt.fsdp_files:
        folder, sep, name = rel.rpartition("/")
        by_dir[folder if sep else "."].append(name)
    parts = []
    for folder, names in sorted(by_dir.items()):
        shards = sum(n.endswith(".distcp") for n in names)
        where = "this folder" if folder == "." else f"{folder}/"
        has_metadata = ".metadata" in names or (folder == "." and ".metadata" in ckpt.other_files)
        if has_metadata and shards:
            target = ckpt.display if folder == "." else f"{ckpt.display}/{folder}"
            parts.append(
                f"FSDP sharded model state in {where} ({shards} shard(s) and .metadata) — "
                f"consolidate: `accelerate merge-weights {target} OUTPUT_DIR`"
            )
        else:
            parts.append(
                f"FSDP sharded model state in {where} without its .metadata ({shards} shard(s)):"
                " incomplete, torch.distributed.checkpoint cannot read the shards without it"
            )
    return "; ".join(parts)


def no_weights(ckpt: CheckpointDir) -> Finding:
    """The finding for a model folder with no weight files."""
    there: list[str] = []
    if ckpt.zero_dirs:
        there.append(_zero_advice(ckpt))
    if ckpt.fsdp_files:
        there.append(_fsdp_advice(ckpt))
    if ckpt.state_dirs:
        there.append(
            f"training state in {', '.join(d + '/' for d in ckpt.state_dirs)} (optimizer "
            "shards, not model weights)"
        )
    if not there:
        held = ckpt.run_files + ckpt.other_files  # (and no sharded model state)
        there.append(f"holds only {', '.join(held[:8])}" if held else "holds nothing else")
    lead = "config.json but no weight files: " if ckpt.has_config else "no weight files: "
    message = lead + "; ".join(there)
    return finding("no-weights", message)

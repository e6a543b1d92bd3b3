"""DeepSpeed checkpoint directories (``global_step<N>/``), from file names and records.

What DeepSpeed's engine writes into ``global_step<N>/`` (the names are its own):

- ``mp_rank_XX_model_states.pt``: the module state dict under ``module.`` (ZeRO 0-2:
  the real weights in the training dtype), ``param_shapes``, ``dp_world_size``,
  ``ds_version``; one per model-parallel rank.
- ``zero_pp_rank_D_mp_rank_XX_model_states.pt``: ZeRO-3, one per data-parallel rank:
  placeholders for the module's parameters, and ``param_shapes``.
- ``[bf16_]zero_pp_rank_D_mp_rank_XX_optim_states.pt``: each data-parallel rank's
  partition of the fp32 master weights and optimizer state
  (``optimizer_state_dict.fp32_flat_groups`` under ZeRO-3,
  ``single_partition_of_fp32_groups`` under ZeRO-1/2).

Every file is read as data by the native pickle reader (never unpickled, no tensor data).
The world size is taken from the file names and held against the records.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from pyaudit.formats.table import Problem, TensorTable
from pyaudit.formats.torch_pickle import TorchCheckpoint, read_torch_files

STEP_DIR = re.compile(r"global_step(\d+)$")
MODEL_STATES = re.compile(r"mp_rank_(\d+)_model_states\.pt$")
ZERO3_MODEL_STATES = re.compile(r"zero_pp_rank_(\d+)_mp_rank_(\d+)_model_states\.pt$")
OPTIM_STATES = re.compile(r"(bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")
PIPELINE_LAYER = re.compile(r"layer_(\d+)-model_(\d+)-model_states\.pt$")
FP32_PARTITIONS = (
    "optimizer_state_dict.fp32_flat_groups.",
    "optimizer_state_dict.single_partition_of_fp32_groups.",
)


@dataclass
class DeepSpeedStep:
    """What one ``global_step*`` directory holds."""

    path: str
    step: int | None
    model_files: dict[int, str] = field(default_factory=dict)  # mp rank -> name
    zero3_model_files: dict[int, str] = field(default_factory=dict)  # dp rank -> name (mp 0)
    optim_files: dict[int, str] = field(default_factory=dict)  # dp rank -> name (mp 0)
    layer_files: list[str] = field(default_factory=list)
    world_size: int = 0  # data-parallel ranks, from the names (and records when they say more)
    recorded_world_size: int | None = None
    stage: int | None = None
    ds_version: str | None = None
    param_numel: int = 0  # elements of the parameters param_shapes lists
    param_count: int = 0
    partition_numel: dict[int, int] = field(default_factory=dict)  # dp rank -> fp32 elements
    model: TorchCheckpoint | None = None
    files: dict[str, TorchCheckpoint] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def missing_ranks(self) -> list[int]:
        ranks = set(self.optim_files) | set(self.zero3_model_files)
        return (
            [
                r
                for r in range(self.world_size)
                if r not in self.optim_files
                or (self.zero3_model_files and r not in self.zero3_model_files)
            ]
            if ranks
            else []
        )

    @property
    def partitions_complete(self) -> bool:
        """Every data-parallel rank's optimizer partition (and ZeRO-3 model states) is there."""
        return (
            bool(self.optim_files)
            and not self.missing_ranks
            and not any(
                p.rule in ("storage-missing", "storage-truncated", "zip-truncated")
                for p in self.problems
            )
        )

    @property
    def covered_numel(self) -> int:
        return sum(self.partition_numel.values())

    def model_table(self) -> TensorTable | None:
        """The module's weights (ZeRO 0-2: real tensors under ``module.``), names unprefixed."""
        if self.model is None or self.stage == 3:
            return None
        return self.model.to_table(strip_prefix="module.")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def read_deepspeed(path: str | os.PathLike[str], jobs: int | None = None) -> DeepSpeedStep:
    """Read a ``global_step*`` directory: names, then each file's records. Never raises."""
    root = os.fspath(path)
    m = STEP_DIR.search(os.path.basename(root.rstrip("/")))
    out = DeepSpeedStep(root, int(m.group(1)) if m else None)
    try:
        names = sorted(os.listdir(root))
    except OSError as e:
        out.problems.append(Problem("io-error", None, f"cannot list {root}: {e.strerror}"))
        return out
    for name in names:
        if mm := ZERO3_MODEL_STATES.fullmatch(name):
            if int(mm.group(2)) == 0:
                out.zero3_model_files[int(mm.group(1))] = name
        elif mm := OPTIM_STATES.fullmatch(name):
            if int(mm.group(3)) == 0:
                out.optim_files[int(mm.group(2))] = name
        elif mm := MODEL_STATES.fullmatch(name):
            out.model_files[int(mm.group(1))] = name
        elif PIPELINE_LAYER.fullmatch(name):
            out.layer_files.append(name)
    ranks = set(out.optim_files) | set(out.zero3_model_files)
    out.world_size = max(ranks) + 1 if ranks else 0
    if out.zero3_model_files:
        out.stage = 3
    read = [*out.model_files.values(), *out.zero3_model_files.values(), *out.optim_files.values()]
    for name, ckpt in zip(
        read, read_torch_files([os.path.join(root, n) for n in read], jobs), strict=True
    ):
        out.files[name] = ckpt
        if ckpt.rule != "ok":
            out.problems.append(Problem(ckpt.rule, None, f"{name}: {ckpt.message}"))
        out.problems.extend(
            Problem(p.rule, p.tensor, f"{name}: {p.message}") for p in ckpt.problems()
        )
    first = out.model_files.get(0) or out.zero3_model_files.get(0)
    if first is not None:
        states = out.files[first]
        out.model = states if first == out.model_files.get(0) else None
        values = states.values()
        dp = values.get("dp_world_size")
        if isinstance(dp, int):
            out.recorded_world_size = dp
        version = values.get("ds_version")
        out.ds_version = version if isinstance(version, str) else None
        shapes = {
            k.split(".", 2)[2]: v
            for k, v in values.items()
            if k.startswith("param_shapes.") and k.count(".") >= 2
        }
        out.param_count = len(shapes)
        out.param_numel = sum(_numel(v) for v in shapes.values() if isinstance(v, tuple))
    for rank, name in out.optim_files.items():
        ckpt = out.files[name]
        total = 0
        for t in ckpt.tensors():
            if t.name.startswith(FP32_PARTITIONS):
                total += t.numel
        out.partition_numel[rank] = total
        if out.stage is None:
            stage = ckpt.values().get("optimizer_state_dict.zero_stage")
            if isinstance(stage, int):
                out.stage = stage
    if out.recorded_world_size and out.recorded_world_size > out.world_size and ranks:
        out.world_size = out.recorded_world_size  # the records say more ranks saved than are here
    return out

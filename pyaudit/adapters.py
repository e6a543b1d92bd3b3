"""PEFT adapters: their tensors against adapter_config.json and the base model's shapes.

PEFT saves ``base_model.model.<module>.lora_A.weight`` ([r, in]) and
``...lora_B.weight`` ([out, r]) per targeted module (``lora_embedding_A``/``_B``
for embeddings); OFT (PEFT 0.18) saves ``...<module>.oft_R.weight`` per targeted
module, sized by ``oft_block_size`` (no rank). Module paths follow the in-memory
names of the transformers that trained them, which may differ from the base's
on-disk layout: the lookup goes through every layout the manifest knows.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyaudit.auditing.compare import BASE_LAYER, Found
from pyaudit.expected import Expected
from pyaudit.findings import Finding, finding

ADAPTER_TENSOR = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)\."
    r"(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|oft_R)"
    r"(?:\.(?P<adapter>(?!weight$)[^.]+))?(?:\.weight)?$"
)
QUANTIZED_DTYPES = {"U8", "I8", "I32", "U32", "F8_E4M3", "F8_E5M2", "F4"}


@dataclass
class AdapterModules:
    """Adapter tensors by module: module path -> part -> tensor."""

    modules: dict[str, dict[str, tuple[str, Found]]] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)  # non-LoRA tensors (modules_to_save, ...)


def split_adapter(tensors: Mapping[str, Found]) -> AdapterModules:
    out = AdapterModules()
    for name, f in tensors.items():
        m = ADAPTER_TENSOR.match(name)
        if m is None:
            out.other.append(name)
            continue
        out.modules.setdefault(m.group("module"), {})[m.group("part")] = (name, f)
    return out


def _matches_target(module: str, targets: object) -> bool:
    """PEFT's rule: a list matches a module named exactly so or ending in ``.target``;
    a string is a regex the whole module path must match; 'all-linear' matches all."""
    if isinstance(targets, str):
        if targets == "all-linear":
            return True
        return _fullmatch(targets, module)
    if isinstance(targets, list):
        return any(
            isinstance(t, str) and (t == "all-linear" or module == t or module.endswith("." + t))
            for t in targets
        )
    return True  # nothing to hold it against


def _fullmatch(pattern: str, text: str) -> bool:
    """``re.fullmatch``; a pattern that is not a valid regex matches nothing (PEFT itself
    would refuse it; the audit must not crash on it)."""
    try:
        return re.fullmatch(pattern, text) is not None
    except re.error:
        return False


def _expected_rank(module: str, config: Mapping[str, Any]) -> int | None:
    pattern = config.get("rank_pattern") or {}
    if isinstance(pattern, dict):
        for key, rank in pattern.items():
            # PEFT's rule: the key matches at a '.' boundary (a bare suffix such as
            # 'v_proj' must not match 'kv_proj').
            if (
                isinstance(key, str)
                and isinstance(rank, int)
                and _fullmatch(f"(.*\\.)?(?:{key})", module)
            ):
                return rank
    r = config.get("r")
    return r if isinstance(r, int) else None


def _base_shape(module: str, expected: Expected | None) -> tuple[int, ...] | None:
    """The base weight shape of ``module`` in whichever layout names it."""
    if expected is None or not expected.shapes_known:
        return None
    where = expected.where()
    # Adapters may carry PEFT's `model.` nesting of a CausalLM differently: try the
    # module path as saved, then without a leading `model.` segment.
    for candidate in (f"{module}.weight", f"model.{module}.weight"):
        hit = where.get(candidate)
        if hit is not None:
            layout = expected.layouts[hit[0]]
            tensor = layout.tensors.get(candidate)
            if tensor is not None and tensor.dtype not in QUANTIZED_DTYPES:
                return tensor.shape
            return None
    return None


def check_adapter(
    tensors: Mapping[str, Found],
    adapter_config: Mapping[str, Any] | None,
    expected: Expected | None,
) -> list[Finding]:
    """Findings about an adapter's own consistency, and against its base when known."""
    findings: list[Finding] = []
    config: Mapping[str, Any] = adapter_config or {}
    targets = config.get("target_modules")
    has_targets = bool(targets)
    if not tensors:
        if has_targets or adapter_config is not None:
            findings.append(
                finding(
                    "empty-adapter",
                    "the adapter file holds no tensors although adapter_config.json names "
                    f"target modules ({_targets_text(targets)}): nothing was trained or saved "
                    "(PEFT not applied, or a save that ran before the adapter was attached)",
                    count=1,
                )
            )
        return findings

    empty = sorted(n for n, f in tensors.items() if f.numel == 0)
    if empty:
        findings.append(
            finding(
                "empty-adapter",
                f"{len(empty)} of {len(tensors)} adapter tensors have zero elements "
                f"(e.g. {empty[0]}: shape {list(tensors[empty[0]].shape)}): DeepSpeed ZeRO-3 "
                "saved partitions without gathering them",
                tensors=empty,
            )
        )

    base_layer = sorted(n for n in tensors if BASE_LAYER in n)
    if base_layer:
        findings.append(
            finding(
                "adapter-mismatch",
                f"the adapter holds {len(base_layer)} '.base_layer.' base weights: the whole "
                "PEFT-wrapped model was saved as the adapter",
                tensors=base_layer,
            )
        )

    split = split_adapter(tensors)
    rank_bad: list[str] = []
    rank_examples: list[str] = []
    untargeted: list[str] = []
    shape_bad: list[str] = []
    shape_examples: list[str] = []
    unknown_modules: list[str] = []
    for module, parts in sorted(split.modules.items()):
        a = parts.get("lora_A") or parts.get("lora_embedding_A")
        b = parts.get("lora_B") or parts.get("lora_embedding_B")
        if has_targets and not _matches_target(module, targets):
            untargeted.append(module)
        want_r = _expected_rank(module, config)
        if (
            a is not None
            and want_r is not None
            and a[1].numel
            and a[1].shape
            and a[1].shape[0] != want_r
        ):
            rank_bad.append(a[0])
            rank_examples.append(f"{a[0]} has rank {a[1].shape[0]}")
        if (
            b is not None
            and want_r is not None
            and b[1].numel
            and len(b[1].shape) == 2
            and b[1].shape[1] != want_r
        ):
            rank_bad.append(b[0])
            rank_examples.append(f"{b[0]} has rank {b[1].shape[1]}")
        if expected is not None and expected.shapes_known:
            base = _base_shape(module, expected)
            if base is None:
                if not any(
                    f"{module}.weight" in lay.tensors or f"model.{module}.weight" in lay.tensors
                    for lay in expected.layouts
                ):
                    unknown_modules.append(module)
                continue
            if len(base) != 2:
                continue
            out_f, in_f = base
            embedding = "lora_embedding_A" in parts
            if a is not None and a[1].numel and len(a[1].shape) == 2:
                want = in_f if not embedding else out_f
                if a[1].shape[1] != want:
                    shape_bad.append(a[0])
                    shape_examples.append(
                        f"{a[0]} {list(a[1].shape)} (base {module} is {list(base)})"
                    )
            if b is not None and b[1].numel and len(b[1].shape) == 2:
                want = out_f if not embedding else in_f
                if b[1].shape[0] != want:
                    shape_bad.append(b[0])
                    shape_examples.append(
                        f"{b[0]} {list(b[1].shape)} (base {module} is {list(base)})"
                    )

    if rank_bad:
        findings.append(
            finding(
                "adapter-mismatch",
                f"{len(rank_bad)} LoRA tensors disagree with adapter_config.json r="
                f"{config.get('r')}: {'; '.join(rank_examples[:3])}",
                tensors=rank_bad,
            )
        )
    if untargeted:
        findings.append(
            finding(
                "adapter-mismatch",
                f"{len(untargeted)} modules carry LoRA weights but are not in target_modules "
                f"({_targets_text(targets)}): e.g. {', '.join(untargeted[:3])}",
                tensors=untargeted,
            )
        )
    if has_targets and isinstance(targets, list):
        missing_targets = [
            t for t in targets
            if isinstance(t, str) and t != "all-linear"
            and not any(m == t or m.endswith("." + t) for m in split.modules)
        ]
        if missing_targets:
            findings.append(
                finding(
                    "adapter-mismatch",
                    f"{len(missing_targets)} target_modules of adapter_config.json have no "
                    f"adapter tensors: {', '.join(missing_targets[:5])}",
                    tensors=missing_targets,
                )
            )
    if shape_bad:
        findings.append(
            finding(
                "adapter-mismatch",
                f"{len(shape_bad)} LoRA tensors do not fit the base model's shapes "
                f"({expected.source if expected else ''}): {'; '.join(shape_examples[:3])}",
                tensors=shape_bad,
            )
        )
    if unknown_modules and expected is not None:
        findings.append(
            finding(
                "adapter-mismatch",
                f"{len(unknown_modules)} adapted modules do not exist in the base model "
                f"({expected.source}): e.g. {', '.join(unknown_modules[:3])} — an adapter "
                "for another model?",
                tensors=unknown_modules,
            )
        )
    return findings


def _targets_text(targets: object) -> str:
    if isinstance(targets, list):
        shown = ", ".join(str(t) for t in targets[:6])
        return shown + (f", ... ({len(targets)} in all)" if len(targets) > 6 else "")
    return repr(targets)


def adapter_counts(tensors: Mapping[str, Found]) -> dict[str, int]:
    by_part: dict[str, int] = defaultdict(int)
    for name in tensors:
        m = ADAPTER_TENSOR.match(name)
        by_part[m.group("part") if m else "other"] += 1
    return dict(by_part)

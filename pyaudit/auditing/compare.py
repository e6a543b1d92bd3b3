"""Found tensors against expected ones: the findings about a full checkpoint's contents.

Pure functions over plain data: names, dtypes, shapes in; findings out. Names are
first normalised (wrapper prefixes, unmerged PEFT names, a second layout) so that
one root cause gives one finding, not hundreds of "missing" and "unexpected" ones.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from pyaudit.auditing.extras import accepted_extras, ignored_on_load
from pyaudit.expected import Expected, LayoutTensors
from pyaudit.findings import Bytes, Finding, Message, Shape, finding
from pyaudit.units import noun, plural


class Found(NamedTuple):
    """One tensor as a header states it."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


LEADING_WRAPPERS = ("module.", "_orig_mod.", "_fsdp_wrapped_module.", "base_model.model.")
INNER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
INNER_WRAPPER = re.compile(r"(^|\.)(?:_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.")
PEFT_TENSOR = re.compile(
    r"\.(?:lora_[AB]|lora_embedding_[AB]|lora_magnitude_vector|lora_dropout)(?:\.|$)"
)
BASE_LAYER = ".base_layer."
GROUPS_SHOWN = 6
# Why a whole section goes missing, when it is not a frozen module dropped on save.
SECTION_CAUSES = {
    "mtp": "transformers neither loads nor saves multi-token-prediction layers, so a model "
    "re-saved through transformers lacks them (only MTP speculative decoding needs them)",
}


def is_peft_tensor(name: str) -> bool:
    return PEFT_TENSOR.search(name) is not None


@dataclass(frozen=True)
class Comparison:
    """Found against expected: the findings and the counts a report shows. Immutable:
    memo tables hand one comparison to every checkpoint with the same contents."""

    findings: tuple[Finding, ...] = ()
    layout: str | None = None
    expected: int | None = None
    expected_bytes: int | None = None
    missing: int = 0
    unexpected: int = 0


def _example_list(names: Iterable[str], limit: int = 3) -> str:
    items = list(names)
    shown = ", ".join(items[:limit])
    return shown + (", ..." if len(items) > limit else "")


def normalise(
    found: Mapping[str, Found], expected: Expected | None
) -> tuple[dict[str, Found], list[Finding]]:
    """Strip wrapper prefixes and PEFT wrapper names, saying so once each."""
    findings: list[Finding] = []
    known = expected.where() if expected else {}
    names = list(found)

    # One look at all names at once: the per-name passes below run only when some
    # name can need them (a healthy checkpoint needs none).
    joined = "\n".join(names)
    maybe_peft = "lora_" in joined or BASE_LAYER in joined
    maybe_inner = any(w in joined for w in INNER_SEGMENTS)

    # Leading prefixes every name carries (DDP `module.`, torch.compile `_orig_mod.`, ...),
    # unless the model's own names use them.
    stripped: list[str] = []
    peft_names = [n for n in names if is_peft_tensor(n) or BASE_LAYER in n] if maybe_peft else []
    while names:
        for prefix in LEADING_WRAPPERS:
            if all(n.startswith(prefix) for n in names) and not any(
                k.startswith(prefix) for k in known
            ):
                stripped.append(prefix)
                names = [n[len(prefix) :] for n in names]
                break
        else:
            break
    if maybe_inner:
        inner_names = [
            orig for orig, n in zip(found, names, strict=True) if INNER_WRAPPER.search(n)
        ]
        renamed = [INNER_WRAPPER.sub(r"\1", n) for n in names]
    else:
        inner_names, renamed = [], names
    inner = len(inner_names)

    wrapper_prefixes = [p for p in stripped if p != "base_model.model." or not peft_names]
    if wrapper_prefixes or inner:
        what = " + ".join(f"'{p}'" for p in wrapper_prefixes)
        parts = []
        if wrapper_prefixes:
            parts.append(f"every tensor name starts with {what}")
        if inner:
            parts.append(f"{inner} names hold FSDP/checkpoint/compile wrapper segments")
        findings.append(
            finding(
                "wrapper-prefix",
                "; ".join(parts) + ": the training wrapper was saved with the model, so "
                "from_pretrained will not match the names. Save the unwrapped model "
                "(accelerator.unwrap_model(model) / model.module / model._orig_mod).",
                # A leading prefix is on every name; inner segments only on some.
                tensors=list(found)[:20] if wrapper_prefixes else inner_names[:20],
                count=len(found) if wrapper_prefixes else inner,
            )
        )

    # PEFT wrapper names inside a full checkpoint: the adapter was never merged.
    if peft_names:
        lora = [n for n in found if is_peft_tensor(n)]
        base_layer = [n for n in found if BASE_LAYER in n]
        findings.append(
            finding(
                "unmerged-peft",
                f"{len(lora)} LoRA tensors and {len(base_layer)} '.base_layer.' weights in a "
                "full checkpoint: the PEFT model was saved without merging. Merge first "
                "(model = model.merge_and_unload(); model.save_pretrained(...)) or "
                "`swift export --merge_lora true`.",
                tensors=sorted(lora + base_layer),
                count=len(lora) + len(base_layer),
            )
        )
    if not (maybe_peft or stripped or inner):
        return dict(found), findings
    out: dict[str, Found] = {}
    for (orig, f), name in zip(found.items(), renamed, strict=True):
        if maybe_peft and is_peft_tensor(orig):
            continue
        out.setdefault(name.replace(BASE_LAYER, "."), f)
    return out, findings


def choose_layout(
    names: Iterable[str], expected: Expected
) -> tuple[int, dict[int, list[str]]]:
    """The layout most names fit, and names that fit only another layout (by layout)."""
    where = expected.where()
    found = set(names)
    scores = [
        len(found & lay.tensors.keys()) + len(found & lay.optional.keys())
        for lay in expected.layouts
    ]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    chosen = expected.layouts[best]
    others: dict[int, list[str]] = {}
    stray = (found - chosen.tensors.keys() - chosen.optional.keys()) & where.keys()
    for n in sorted(stray):
        li = where[n][0]
        if li != best:
            others.setdefault(li, []).append(n)
    return best, others


def _describe_missing(
    missing: list[str], layout: LayoutTensors, expected: Expected, total: int
) -> Message:
    nbytes = sum(layout.tensors[n].nbytes or 0 for n in missing)
    groups = sorted(expected.group(missing, layout), key=lambda g: -g[1])
    shown = ", ".join(
        f"{label} — {count} tensors" if count > 1 else label
        for label, count in groups[:GROUPS_SHOWN]
    )
    if len(groups) > GROUPS_SHOWN:
        shown += f", and {len(groups) - GROUPS_SHOWN} more groups"
    size = " ({size})" if expected.shapes_known else ""
    sections = ""
    # A whole section gone (a frozen vision tower dropped on save) deserves a name.
    missing_set = set(missing)
    for section, names in layout.sections.items():
        members = set(names)
        if section and members and members <= missing_set and len(members) < total:
            cause = SECTION_CAUSES.get(
                section,
                "frozen modules dropped on save? (e.g. a trainer saving only trainable parameters)",
            )
            sections += f". The whole {section} section ({len(members)} tensors) is absent: {cause}"
    return Message.of(
        "{missing} of {total} base tensors absent" + size + ": {shown}{sections}",
        missing=len(missing),
        total=total,
        **({"size": Bytes(nbytes)} if expected.shapes_known else {}),
        shown=shown,
        sections=sections,
    )


def compare_full(
    found: Mapping[str, Found], expected: Expected, explained: Collection[str] = ()
) -> Comparison:
    """Hold a full checkpoint's tensors against what its model must hold.

    ``explained``: tensors whose absence another finding already reports (the index
    places them in a shard that is missing or unreadable); they count as missing but
    are not listed again in base-weights-missing.
    """
    normalised, findings = normalise(found, expected)
    best, others = choose_layout(normalised, expected)
    layout = expected.layouts[best]
    if others:
        other_names = [n for names in others.values() for n in names]
        other_layouts = ", ".join(expected.layouts[li].name for li in others)
        findings.append(
            finding(
                "mixed-layout",
                f"{plural(len(other_names), 'tensor is', 'tensors are')} named in the "
                f"{other_layouts} layout beside "
                f"{len(normalised) - len(other_names)} in the {layout.name} layout "
                f"(e.g. {_example_list(sorted(other_names), 2)}): two naming conventions of "
                "one family in one checkpoint (files from two transformers versions mixed?)",
                tensors=sorted(other_names),
            )
        )
        # Hold them against the chosen layout under their chosen-layout names.
        where = expected.where()
        order = list(layout.tensors)
        for n in other_names:
            f = normalised.pop(n)
            pos = where[n][1]
            if pos < len(order):
                normalised.setdefault(order[pos], f)

    expected_names = layout.tensors
    expected_bytes = (
        layout.total_bytes if layout.total_bytes is not None else expected.total_bytes
    )

    missing = [n for n in expected_names if n not in normalised]
    unexplained = [n for n in missing if n not in explained] if explained else missing
    if unexplained:
        findings.append(
            finding(
                "base-weights-missing",
                _describe_missing(unexplained, layout, expected, len(expected_names)),
                tensors=unexplained,
            )
        )

    empty: list[str] = []
    shape_bad: list[str] = []
    drift: dict[tuple[str, str], list[str]] = defaultdict(list)
    drift_bytes: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for name, want in expected_names.items():
        held = normalised.get(name)
        if held is None or want.shape is None:
            continue
        f = held
        if f.shape != want.shape:
            if f.numel == 0 and math.prod(want.shape) > 0:
                empty.append(name)
            else:
                shape_bad.append(name)
            continue
        # '': not recorded; expected.dtype None: the config meant no dtype (none declared)
        if want.dtype and f.dtype and f.dtype != want.dtype and expected.dtype is not None:
            key = (f.dtype, want.dtype)
            drift[key].append(name)
            drift_bytes[key][0] += f.nbytes
            drift_bytes[key][1] += want.nbytes or 0
    if empty:
        findings.append(
            finding(
                "empty-tensors",
                Message.of(
                    "{count} {tensors} saved with zero elements where the model needs them "
                    "(e.g. {name}: shape {shape}, expected {want}): DeepSpeed ZeRO-3 partitions "
                    "saved without gathering. Set `stage3_gather_16bit_weights_on_model_save: "
                    "true` or rebuild the weights with zero_to_fp32.py.",
                    count=len(empty),
                    tensors=noun(len(empty), "tensor"),
                    name=empty[0],
                    shape=Shape(normalised[empty[0]].shape),
                    want=Shape(expected_names[empty[0]].shape or ()),
                ),
                tensors=empty,
            )
        )
    if shape_bad:
        sample = shape_bad[:3]
        examples: dict[str, str | Shape] = {}
        for i, n in enumerate(sample):
            examples[f"name{i}"] = n
            examples[f"shape{i}"] = Shape(normalised[n].shape)
            examples[f"want{i}"] = Shape(expected_names[n].shape or ())
        findings.append(
            finding(
                "shape-mismatch",
                Message.of(
                    "{count} {tensors} from what {source} implies: "
                    + "; ".join(
                        f"{{name{i}}}: {{shape{i}}}, expected {{want{i}}}"
                        for i in range(len(sample))
                    ),
                    count=len(shape_bad),
                    tensors=noun(
                        len(shape_bad), "tensor differs in shape", "tensors differ in shape"
                    ),
                    source=expected.source,
                    **examples,
                ),
                tensors=shape_bad,
            )
        )
    for (got_dtype, want_dtype), names in sorted(drift.items()):
        found_bytes, want_bytes = drift_bytes[(got_dtype, want_dtype)]
        ratio = found_bytes / want_bytes if want_bytes else float("nan")
        effect = (
            f"{ratio:.1f}× {'larger' if ratio > 1 else 'smaller'} ({{found}} instead of {{want}})"  # noqa: RUF001
            if want_bytes and ratio != 1
            else "same size"
        )
        source = (
            "config says {want_dtype}" if expected.dtype == want_dtype else "expected {want_dtype}"
        )
        findings.append(
            finding(
                "dtype-drift",
                Message.of(
                    "{count} {tensors} {dtype} where " + source + ": " + effect,
                    count=len(names),
                    tensors=noun(len(names), "tensor is", "tensors are"),
                    dtype=got_dtype,
                    want_dtype=want_dtype,
                    found=Bytes(found_bytes),
                    want=Bytes(want_bytes),
                ),
                tensors=names,
            )
        )

    unexpected = [
        n for n in normalised if n not in expected_names and n not in layout.optional
    ]
    tied_saved = [n for n in unexpected if n in layout.tied]
    unexpected = [n for n in unexpected if n not in layout.tied]
    unexpected, ignored = accepted_extras(expected.model_type, unexpected, normalised, layout)
    if ignored:
        findings.append(ignored_on_load(ignored, normalised))
    if tied_saved:
        findings.append(
            finding(
                "unexpected-tensors",
                Message.of(
                    "{names} saved although tied to {tied} (tie_word_embeddings): harmless, "
                    "{size} of duplicate data",
                    names=_example_list(tied_saved),
                    tied=layout.tied[tied_saved[0]],
                    size=Bytes(sum(normalised[n].nbytes for n in tied_saved)),
                ),
                tensors=tied_saved,
            )
        )
    if unexpected:
        groups = expected.group(unexpected, layout)
        shown = ", ".join(
            f"{label} ({count})" if count > 1 else label for label, count in groups[:GROUPS_SHOWN]
        )
        findings.append(
            finding(
                "unexpected-tensors",
                Message.of(
                    "{count} {tensors} that {source} does not know ({size}): {shown}",
                    count=len(unexpected),
                    tensors=noun(len(unexpected), "tensor"),
                    source=expected.source,
                    size=Bytes(sum(normalised[n].nbytes for n in unexpected)),
                    shown=shown,
                ),
                tensors=unexpected,
            )
        )
    return Comparison(
        findings=tuple(findings),
        layout=layout.name,
        expected=len(expected_names),
        expected_bytes=expected_bytes,
        missing=len(missing),
        unexpected=len(unexpected),
    )

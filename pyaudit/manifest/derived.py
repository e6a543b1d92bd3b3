"""Family specs derived from transformers, read from the data in ``generated/``.

Each ``generated/<model_type>.json`` was written by :mod:`pyaudit.manifest.generate` (which
needs torch and transformers); reading it needs neither. A file holds the transformers
version it was derived from, the class whose save it describes (``architecture``), the
config defaults and fallbacks (``let``) its expressions read, and the tensor entries, in
the vocabulary of :mod:`pyaudit.manifest.spec`:

``{"name", "shape", "when"?, "dtype"?, "fp16_dtype"?, "tied_to"?, "section"?, "kind"?,
"module"?, "role"?, "out"?, "in"?}``
    one tensor (:class:`~pyaudit.manifest.spec.T`); ``kind``/``module``/``out``/``in`` mark
    the weight and bias of a linear layer for the quantization overlays.
``{"repeat": var, "count", "start"?, "prefix", "when"?, "tensors": [...]}``
    a :class:`~pyaudit.manifest.spec.Repeat`.

``"layouts"`` lists the family's other healthy on-disk namings, each derived from
transformers' own conversion mapping (``conversion_mapping.py``: the ``WeightRenaming`` /
``PrefixChange`` entries of the model and its sub-models): ``{"name", "renames", "note",
"loads_via"}``, ``renames`` being ``[canonical_prefix, on_disk_prefix]`` pairs (the first whose
canonical prefix starts a name applies; :class:`~pyaudit.manifest.spec.Layout`), ``loads_via``
the conversions transformers applies when it loads that naming. Each was checked at generation
time: transformers' loader puts every name of it onto a parameter of the model, and a model
loaded from it saves it again unchanged. A layout that is not such a plain renaming (a
``WeightConverter`` stacking per-expert tensors changes names and shapes) carries its own
``"tensors"`` instead of ``"renames"``, derived as the family's own entries are (from saves in
that layout at every point, and checked against each). ``"layouts_skipped"`` lists the
candidates neither describes, with the reason: a checkpoint in one is not passed.

Files are read on first use of their model type, once.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from .spec import Entry, Layout, Repeat, Scope, Spec, T

__all__ = [
    "GENERATED_DIR",
    "LOADING_FILE",
    "architectures_markdown",
    "derived_model_types",
    "derived_spec",
    "loading_rules",
    "num_labels_default",
    "spec_from_data",
]

GENERATED_DIR = Path(__file__).with_name("generated")
#: How transformers reads each family's files (other spellings of config fields, the
#: base-model prefix): written by :mod:`pyaudit.manifest.generate_loading`.
LOADING_FILE = Path(__file__).with_name("loading.json")


@lru_cache(maxsize=1)
def derived_model_types() -> tuple[str, ...]:
    """Every model type with a derived spec, sorted."""
    if not GENERATED_DIR.is_dir():
        return ()
    return tuple(sorted(p.stem for p in GENERATED_DIR.glob("*.json")))


@cache
def derived_spec(model_type: str) -> Spec | None:
    """The derived spec of ``model_type``, or None when there is none."""
    if model_type not in derived_model_types():
        return None
    with (GENERATED_DIR / f"{model_type}.json").open("rb") as f:
        data = json.load(f)
    return spec_from_data(data, _loading().get(model_type, {}))


@cache
def _loading_file() -> dict[str, Any]:
    if not LOADING_FILE.is_file():
        return {}
    with LOADING_FILE.open("rb") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _loading() -> dict[str, dict[str, Any]]:
    families: dict[str, dict[str, Any]] = _loading_file().get("families", {})
    return families


def loading_rules(model_type: str) -> dict[str, Any]:
    """How transformers reads ``model_type``'s files (``loading.json``): ``aliases``,
    ``base_model_prefix``, ``heads`` (class -> rule, or ``{"refused": reason}``),
    ``untied_heads`` and ``ignore_unexpected`` (:mod:`pyaudit.auditing.extras`)."""
    return _loading().get(model_type, {})


def num_labels_default() -> int:
    """``PretrainedConfig().num_labels`` of the transformers ``loading.json`` came from."""
    value = _loading_file().get("num_labels_default")
    return value if isinstance(value, int) else 2


def _names_start(entries: list[dict[str, Any]], head: str) -> bool:
    for e in entries:
        if "repeat" in e:
            if str(e.get("prefix", "")).startswith(head) or _names_start(e["tensors"], head):
                return True
        elif str(e["name"]).startswith(head):
            return True
    return False


def _entries(raw: list[dict[str, Any]]) -> list[Entry]:
    out: list[Entry] = []
    for e in raw:
        if "repeat" in e:
            out.append(
                Repeat(
                    var=e["repeat"],
                    count=e["count"],
                    tensors=_entries(e["tensors"]),
                    start=e.get("start", "0"),
                    prefix=e.get("prefix", ""),
                    when=e.get("when"),
                )
            )
            continue
        linear = "module" in e
        out.append(
            T(
                name=e["name"],
                shape=e["shape"],
                when=e.get("when"),
                dtype=e.get("dtype"),
                fp16_dtype=e.get("fp16_dtype"),
                kind=e.get("kind"),
                tied_to=e.get("tied_to"),
                section=e.get("section"),
                module=e.get("module") if linear else None,
                in_features=e.get("in") if linear else None,
                out_features=e.get("out") if linear else None,
                role=e.get("role") if linear else None,
            )
        )
    return out


def spec_from_data(data: dict[str, Any], loading: dict[str, Any] | None = None) -> Spec:
    """A :class:`Spec` from one generated file's contents; ``loading``: how transformers
    reads the family (``aliases``: other spellings of its config's fields, ``n_embed`` ->
    ``hidden_size``; ``values``: older spellings of a field's values, ``"mamba"`` ->
    ``"linear_attention"``; ``base_model_prefix``: names without it are a healthy layout)."""
    loading = loading or {}
    aliases: dict[str, str] = loading.get("aliases", {})
    model_type = str(data["model_type"])
    version = data.get("derived_from", {}).get("transformers", "?")
    requires: list[tuple[str, str]] = []
    for dotted, value in sorted(data.get("requires", {}).items()):
        accepted = [value]
        if isinstance(value, str) and value.startswith(model_type + "_"):
            # a sub-config of the family's own class (qwen3_vl's vision_config is always
            # Qwen3VLVisionConfig, whatever model_type its dict names): releases saved before
            # it had a type of its own name the family's there (Qwen's Qwen3-VL files:
            # vision_config "qwen3_vl", which Qwen3VLConfig renames "qwen3_vl_vision" on load)
            accepted.append(model_type)
        requires.append(
            (
                " or ".join(f"{dotted} == {json.dumps(v)}" for v in accepted),
                f"{model_type}: the spec derived from transformers {version} describes "
                f"{dotted} {' or '.join(repr(v) for v in accepted)} only",
            )
        )
    for name in data.get("required", []):
        requires.append(
            (
                f"{name} is not None",
                f"{model_type}: config.json lacks {name}, which the derived spec needs",
            )
        )
    layouts = [Layout("default")]
    for lay in data.get("layouts", []):
        layouts.append(
            Layout(
                lay["name"],
                tuple((a, b) for a, b in lay.get("renames", [])),
                note=str(lay.get("note", "")),
                tensors=tuple(_entries(lay["tensors"])) if "tensors" in lay else None,
            )
        )
    prefix = loading.get("base_model_prefix")
    if isinstance(prefix, str) and prefix and _names_start(data["tensors"], prefix + "."):
        layouts.append(Layout(f"base model (no {prefix}. prefix)", ((prefix + ".", ""),)))
    return Spec(
        model_type=model_type,
        tensors=_entries(data["tensors"]),
        scopes={
            "text": Scope(
                sources=("",),
                defaults=data.get("defaults", {}),
                let=data.get("let", {}),
                aliases=aliases,
                values=loading.get("values", {}),
            )
        },
        layouts=tuple(layouts),
        architectures=(str(data["architecture"]),),
        requires=tuple(requires),
        origin=f"derived from transformers {version}",
    )


def architectures_markdown(hand_written: list[str]) -> str:
    """The list of architectures with a spec, as ``docs/ARCHITECTURES.md`` holds it."""
    rows = []
    versions = set()
    for mt in derived_model_types():
        with (GENERATED_DIR / f"{mt}.json").open("rb") as f:
            data = json.load(f)
        version = data.get("derived_from", {}).get("transformers", "?")
        versions.add(version)
        note = "hand-written spec (agrees with the derived one)" if mt in hand_written else ""
        rows.append(f"| `{mt}` | `{data['architecture']}` | {note} |")
    only_hand = sorted(set(hand_written) - set(derived_model_types()))
    for mt in only_hand:
        rows.append(f"| `{mt}` | | hand-written spec only |")
    derived_from = ", ".join(sorted(versions)) or "-"
    head = [
        "# Architectures checked without torch",
        "",
        "Generated by `python -m pyaudit.manifest.generate --list docs/ARCHITECTURES.md`; do",
        "not edit. Each derived spec was derived from transformers "
        f"{derived_from} (`pyaudit/manifest/generated/`) and checked there against what",
        "`save_pretrained` writes at the class defaults and at every point it was derived from.",
        "",
        f"{len(set(derived_model_types()) | set(hand_written))} model types: "
        f"{len(derived_model_types())} derived, {len(hand_written)} hand-written "
        f"({len(only_hand)} of them hand-written only).",
        "",
        "| model_type | class whose save is described | note |",
        "|---|---|---|",
    ]
    return "\n".join(head + rows) + "\n"

"""What a checkpoint must hold, computed from its ``config.json`` alone.

>>> m = build_manifest(load_config("path/to/model"))      # doctest: +SKIP
>>> m.tensors["model.embed_tokens.weight"]                  # doctest: +SKIP
ExpectedTensor(shape=(151936, 2560), dtype='BF16', nbytes=778311680)

No torch, no transformers: each supported family is a data spec
(:mod:`pyaudit.manifest.specs`) read by one interpreter. Manifests are cached per
(config, layout), so auditing many checkpoints of one model builds one manifest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from .derived import derived_model_types, derived_spec, loading_rules, num_labels_default
from .dtypes import DTYPE_BYTES, config_dtype
from .expr import ExprError, compile_expr
from .groups import Universe, group_names, group_names_in
from .heads import apply_head, head_env
from .interpret import ManifestError, Rec, run_spec, scope_env
from .quant import QuantConfigError, apply_quantization, detect_quantization
from .spec import Layout, Spec
from .specs import ARCHITECTURES, SPECS

__all__ = [
    "ExpectedTensor",
    "Layout",
    "Manifest",
    "ManifestError",
    "UnknownArchitecture",
    "UnsupportedQuantization",
    "build_manifest",
    "config_architecture",
    "group_names",
    "layouts",
    "load_config",
    "manifest_to_json",
    "model_type_of",
    "spec_of",
    "supported_model_types",
]


@dataclass(frozen=True)
class ExpectedTensor:
    """One tensor a checkpoint must hold."""

    shape: tuple[int, ...] | None  # None = shape not checked (some quantized aux tensors)
    dtype: str  # safetensors dtype name, e.g. "BF16"
    nbytes: int | None  # None when the shape is not checked


@dataclass
class Manifest:
    """The exact set of tensors a healthy checkpoint of one config holds, in one layout.

    ``tensors`` are required, in spec order. ``tied`` maps tensors that are legitimately absent
    because they are tied (``lm_head.weight`` of a tied model) to the tensor they are tied to:
    a checkpoint that saves them anyway deserves a warning, not an "unexpected tensor" error.
    ``groups`` maps a section label (``"text"``, ``"vision"``, ``"projector"``, ``"mtp"``) to
    the required names in it, in order. ``optional`` tensors may or may not be present (e.g.
    bitsandbytes' ``weight_format``); they are neither missing when absent nor unexpected
    when present. ``quantization`` is ``None`` or a label such as ``"bitsandbytes-4bit-nf4"``,
    ``"gptq-4bit"``, ``"awq-4bit"``, ``"fp8"``.

    Manifests returned by :func:`build_manifest` are fresh copies; mutating one does not
    affect the cache.
    """

    model_type: str
    dtype: str
    layout: str
    tensors: dict[str, ExpectedTensor]
    tied: dict[str, str]
    groups: dict[str, tuple[str, ...]]
    quantization: str | None
    optional: dict[str, ExpectedTensor] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Sum of the required tensors' bytes (tensors whose shape is not checked count 0)."""
        return sum(t.nbytes for t in self.tensors.values() if t.nbytes is not None)

    def group_names(self, names: Iterable[str]) -> list[tuple[str, int]]:
        """:func:`group_names` of ``names``, knowing this manifest's full name set."""
        universe = self.__dict__.get("_universe")
        if universe is None:
            universe = self.__dict__["_universe"] = Universe(self.tensors.keys())
        return group_names_in(names, universe)


class UnknownArchitecture(Exception):
    """No spec for this config's model_type (or no model_type at all)."""

    def __init__(self, model_type: str | None, message: str | None = None) -> None:
        self.model_type = model_type
        super().__init__(
            message
            or f"no manifest spec for model_type {model_type!r}; "
            f"{len(supported_model_types())} model types have one (docs/ARCHITECTURES.md)"
        )


class UnsupportedQuantization(UnknownArchitecture, ValueError):
    """The family is known but its ``quantization_config`` is not (an UnknownArchitecture)."""

    def __init__(self, model_type: str | None, method: str) -> None:
        self.method = method
        UnknownArchitecture.__init__(
            self, model_type, f"{model_type}: unsupported quantization: {method}"
        )


def model_type_of(config: dict[str, Any]) -> str | None:
    """The config's ``model_type``, else one inferred from a known ``architectures`` entry."""
    mt = config.get("model_type")
    if isinstance(mt, str) and mt:
        return mt
    archs = config.get("architectures")
    if isinstance(archs, list):
        for arch in archs:
            if isinstance(arch, str) and arch in ARCHITECTURES:
                return ARCHITECTURES[arch]
    return None


def supported_model_types() -> list[str]:
    """Every model type with a spec: hand-written or derived from transformers."""
    return sorted(set(SPECS) | set(derived_model_types()))


def spec_of(model_type: str) -> Spec | None:
    """The spec of ``model_type``: the hand-written one where there is one (they know more:
    older layouts, MTP layers), else the one derived from transformers, else None.

    A hand-written spec also lists the derived spec's layouts with entries of their own that
    it lacks (an MoE family's experts stacked as its ``state_dict()`` holds them), built
    from the derived spec (the two are tested to agree on the default layout)."""
    return _with_lent_layouts(model_type) if model_type in SPECS else derived_spec(model_type)


@cache
def _with_lent_layouts(model_type: str) -> Spec:
    hand = SPECS[model_type]
    derived = derived_spec(model_type)
    if derived is None:
        return hand
    have = {lay.name for lay in hand.layouts}
    lent = tuple(
        replace(
            lay,
            tensors=None,
            source=derived,
            note=f"{lay.note} (from this family's spec {derived.origin})",
        )
        for lay in derived.layouts
        if lay.tensors is not None and lay.name not in have
    )
    return replace(hand, layouts=hand.layouts + lent) if lent else hand


def _spec_for(config: dict[str, Any]) -> Spec:
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    mt = model_type_of(config)
    spec = spec_of(mt) if mt is not None else None
    if spec is None:
        raise UnknownArchitecture(mt)
    head = _head_rule(spec.model_type, config)
    if head is not None:
        if "refused" in head:
            raise UnknownArchitecture(
                mt,
                f"{mt}: this config's architecture {_named(spec.model_type, config)} saves "
                f"the {mt} body under another head, which could not be derived from "
                f"transformers ({head['refused']})",
            )
    elif spec.origin != "hand-written":
        arch = config_architecture(spec.model_type, config)
        if arch is not None and arch not in spec.architectures:
            raise UnknownArchitecture(
                mt,
                f"{mt}: the spec {spec.origin} describes {', '.join(spec.architectures)}; "
                f"this config's architecture is {_named(spec.model_type, config)}",
            )
    return spec


def config_architecture(model_type: str, config: dict[str, Any]) -> str | None:
    """The class whose save a config's checkpoint is held against: ``architectures[0]``, or,
    for a remote-code class transformers does not have (``auto_map`` names it), the class
    transformers builds in its place: loading such a checkpoint without
    ``trust_remote_code`` (the default when transformers has the model type), the Auto
    class the ``auto_map`` names it under builds transformers' own class for the model type
    (``loading.json``'s ``auto``: ``PhiMoEForCausalLM`` under ``AutoModelForCausalLM`` is
    ``PhimoeForCausalLM``). Left as named when the Auto classes naming it do not agree on
    one class."""
    archs = config.get("architectures")
    if not (isinstance(archs, list) and archs and isinstance(archs[0], str)):
        return None
    name: str = archs[0]
    auto = loading_rules(model_type).get("auto")
    auto_map = config.get("auto_map")
    if not isinstance(auto, dict) or not isinstance(auto_map, dict) or name in auto.values():
        return name
    built = {
        auto[key]
        for key, ref in auto_map.items()
        if isinstance(ref, str) and ref.rsplit(".", 1)[-1] == name and key in auto
    }
    return str(built.pop()) if len(built) == 1 else name


def _named(model_type: str, config: dict[str, Any]) -> str:
    """How a message names the config's architecture (and the class it stands for)."""
    named = str(config["architectures"][0])
    arch = config_architecture(model_type, config)
    return named if arch == named else f"{named} (auto_map: transformers' {arch})"


def _head_rule(model_type: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The derived rule of the head class this config names (:mod:`.heads`), if it names
    one of the family's head classes rather than its primary."""
    arch = config_architecture(model_type, config)
    if arch is None:
        return None
    rule = loading_rules(model_type).get("heads", {}).get(arch)
    return rule if isinstance(rule, dict) else None


def layouts(config: dict[str, Any]) -> list[Layout]:
    """Every healthy on-disk layout for this config's family, the config's default first.

    The default is the first layout whose ``prefer`` condition holds for ``config`` (e.g.
    DeepSeek-V3's transformers layout for a ``config.json`` transformers 5 wrote), else the
    spec's first; the others follow in spec order.
    """
    return [lay for lay in _ordered_layouts(_spec_for(config), config) if _builds(lay, config)]


def _builds(lay: Layout, config: dict[str, Any]) -> bool:
    """A lent layout is one of a config's only when its spec builds for the config (the
    derived DeepSeek-V3 spec knows no config without q_lora_rank, the hand-written one
    does); the spec's own layouts always are (their errors are the config's)."""
    if lay.source is None:
        return True
    try:
        build_manifest(config, lay.name)
    except (ManifestError, UnknownArchitecture, ValueError):
        return False
    return True


def _ordered_layouts(spec: Spec, config: dict[str, Any]) -> list[Layout]:
    lays = list(spec.layouts)
    for i, lay in enumerate(lays):
        if lay.prefer is not None and _holds(lay.prefer, config):
            return [lay, *lays[:i], *lays[i + 1 :]]
    return lays


def _holds(condition: str, config: dict[str, Any]) -> bool:
    try:
        return bool(compile_expr(condition)(config))
    except (ExprError, TypeError, ValueError, OverflowError):
        return False


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a ``config.json`` (a file, or a directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    with p.open("rb") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a config.json must hold a JSON object")
    return data


def build_manifest(config: dict[str, Any], layout: str | None = None) -> Manifest:
    """The manifest of ``config`` in ``layout`` (a name from :func:`layouts`; by default the
    first of :func:`layouts`).

    Raises :class:`UnknownArchitecture` for a family without a spec (and its subclass
    :class:`UnsupportedQuantization` for an unknown ``quantization_config``),
    :class:`ManifestError` when a needed config field is missing, ``ValueError`` for an
    unknown layout name.
    """
    spec = _spec_for(config)
    try:
        key = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):  # pragma: no cover - json.load output always dumps
        return _copy(_build(spec, config, layout))
    return _copy(_cached(spec.model_type, key, layout))


@lru_cache(maxsize=64)
def _cached(model_type: str, key: str, layout: str | None) -> Manifest:
    spec = spec_of(model_type)
    assert spec is not None  # _spec_for found it
    return _build(spec, json.loads(key), layout)


def _copy(m: Manifest) -> Manifest:
    return Manifest(
        model_type=m.model_type,
        dtype=m.dtype,
        layout=m.layout,
        tensors=dict(m.tensors),
        tied=dict(m.tied),
        groups=dict(m.groups),
        quantization=m.quantization,
        optional=dict(m.optional),
    )


def _build(spec: Spec, config: dict[str, Any], layout_name: str | None) -> Manifest:
    if layout_name is None:
        lay = _ordered_layouts(spec, config)[0]
    else:
        found = [lo for lo in spec.layouts if lo.name == layout_name]
        if not found:
            names = ", ".join(lo.name for lo in spec.layouts)
            raise ValueError(f"{spec.model_type}: unknown layout {layout_name!r} (have: {names})")
        lay = found[0]
    if lay.source is not None:
        return _build(lay.source, config, lay.name)
    if spec.requires:
        env = scope_env(config, spec, spec.default_scope)
        for condition, reason in spec.requires:
            if not _holds(condition, env):
                raise UnknownArchitecture(spec.model_type, reason)
    try:
        info = detect_quantization(config)
    except QuantConfigError as exc:
        raise UnsupportedQuantization(spec.model_type, str(exc)) from None
    dtype = config_dtype(config)
    if info is not None and info.method == "mxfp4" and not _declares_dtype(config):
        dtype = "BF16"  # gpt-oss releases declare none; what is not MXFP4 is bfloat16
    records, tied = run_spec(
        spec if lay.tensors is None else replace(spec, tensors=lay.tensors), config, dtype
    )
    head = _head_rule(spec.model_type, config)
    if head is not None and "refused" not in head:
        prefix = str(loading_rules(spec.model_type).get("base_model_prefix", ""))
        env = head_env(config, num_labels_default())
        records, tied = apply_head(records, tied, head, prefix, env, dtype)
    if lay.omit:
        records = [rec for rec in records if rec.section not in lay.omit]
    if lay.dtypes:
        records = [replace(rec, dtype=lay.dtype_of(rec.name, rec.dtype)) for rec in records]
    if info is not None:
        records = apply_quantization(records, info, lay.apply)
    return _assemble(spec, lay, dtype, records, tied, info.label if info else None)


def _declares_dtype(config: dict[str, Any]) -> bool:
    return any(
        isinstance(src, dict) and isinstance(src.get(key), str)
        for src in (config, config.get("text_config"))
        for key in ("dtype", "torch_dtype")
    )


def _assemble(
    spec: Spec,
    lay: Layout,
    dtype: str,
    records: list[Rec],
    tied: dict[str, str],
    quantization: str | None,
) -> Manifest:
    tensors: dict[str, ExpectedTensor] = {}
    optional: dict[str, ExpectedTensor] = {}
    groups: dict[str, list[str]] = {}
    # Identical (shape, dtype) pairs share one frozen ExpectedTensor (MoE models repeat them).
    memo: dict[tuple[tuple[int, ...] | None, str], ExpectedTensor] = {}
    renames = bool(lay.renames)
    for rec in records:
        name = lay.apply(rec.name) if renames else rec.name
        expected = memo.get((rec.shape, rec.dtype))
        if expected is None:
            nbytes: int | None = None
            if rec.shape is not None:
                nbytes = DTYPE_BYTES[rec.dtype]
                for d in rec.shape:
                    nbytes *= d
            expected = memo[(rec.shape, rec.dtype)] = ExpectedTensor(rec.shape, rec.dtype, nbytes)
        if name in tensors or name in optional:
            raise ManifestError(f"{spec.model_type}: spec yields {name!r} twice")
        if rec.optional:
            optional[name] = expected
        else:
            tensors[name] = expected
            groups.setdefault(rec.section, []).append(name)
    return Manifest(
        model_type=spec.model_type,
        dtype=dtype,
        layout=lay.name,
        tensors=tensors,
        tied={lay.apply(k): lay.apply(v) for k, v in tied.items()},
        groups={k: tuple(v) for k, v in groups.items()},
        quantization=quantization,
        optional=optional,
    )


def manifest_to_json(m: Manifest) -> dict[str, Any]:
    """A JSON-ready dict of ``m``.

    ``{"schema": 1, "model_type", "dtype", "layout", "tensors", "total_bytes"}`` where each
    tensor is ``{"shape": [...] | None, "dtype": "BF16"}``.
    """
    return {
        "schema": 1,
        "model_type": m.model_type,
        "dtype": m.dtype,
        "layout": m.layout,
        "tensors": {
            name: {"shape": None if t.shape is None else list(t.shape), "dtype": t.dtype}
            for name, t in m.tensors.items()
        },
        "total_bytes": m.total_bytes,
    }

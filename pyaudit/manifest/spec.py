"""The vocabulary family specs are written in.

A family spec is plain data: which config scopes it reads, a few derived values (``let``),
and an ordered list of tensor entries. One interpreter (:mod:`pyaudit.manifest.interpret`)
turns a spec plus a ``config.json`` into a :class:`~pyaudit.manifest.Manifest`.

Entries
-------
``T(name, shape, when=None, ...)``
    One tensor. ``name`` may hold ``{expr}`` templates (``"model.layers.{i}.x"``); ``shape``
    is an expression giving an int or a tuple of ints (``"vocab_size, hidden_size"``);
    ``when`` is a condition expression. A plain tuple ``(name, shape)`` or
    ``(name, shape, when)`` means the same.
``Linear(module, out_features, in_features, bias=False, ...)``
    An ``nn.Linear``: ``{module}.weight`` ``[out, in]`` and, when ``bias`` holds,
    ``{module}.bias`` ``[out]``. Its ``kind`` tells quantizers whether they replace it
    (``"linear"``: decoder-block linear layers; ``"vision_linear"``: linear layers of a vision
    tower or projector; ``"router"``: MoE router gates; ``"head"``: the LM head).
``Repeat(var, count, tensors, start="0", prefix="")``
    ``tensors`` once per ``var`` in ``range(start, start + count)``.
``Group(tensors, prefix="", when=None, scope=None, section=None)``
    A prefix, a condition, a config scope and/or a section label for several entries.

Every entry can carry ``scope`` (which config scope its expressions read; inherited) and
``section`` (a label such as ``"text"`` / ``"vision"`` / ``"mtp"``, inherited, used for
:attr:`Manifest.groups`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "TOP",
    "Entry",
    "Group",
    "Layout",
    "Linear",
    "Repeat",
    "Scope",
    "Spec",
    "T",
]

#: Name of the top-level config object as a scope source.
TOP = ""


@dataclass(frozen=True)
class Layout:
    """A way a family's checkpoints are found on disk (one writer's convention).

    ``renames`` are applied to canonical names: the first ``(canonical_prefix,
    on_disk_prefix)`` whose canonical prefix starts the name wins. ``omit`` names sections
    this writer never stores (DeepSeek-V3's ``"mtp"`` under transformers). ``dtypes`` are
    ``(canonical_name_suffix, dtype)`` overrides for tensors this writer keeps in a dtype
    of its own (a suffix matches a whole name or a ``.``-separated tail of one; the first
    match wins; quantized tensors are not affected). ``prefer`` is a condition over the
    top-level ``config.json`` fields under which this layout is the config's default, i.e.
    listed first by :func:`pyaudit.manifest.layouts` (the first matching layout wins).
    ``note`` says what the layout is (derived layouts: which of transformers' conversions
    load it). ``tensors``, when set, are this layout's own entries in place of the spec's
    (a naming that also changes shapes, such as per-expert weights stacked into one tensor):
    ``renames`` do not apply to them. ``source``, when set, is the spec this layout is built
    from, by its own layout of the same name (a hand-written family lending the layout the
    spec derived from transformers has and it lacks).
    """

    name: str
    renames: tuple[tuple[str, str], ...] = ()
    omit: tuple[str, ...] = ()
    dtypes: tuple[tuple[str, str], ...] = ()
    prefer: str | None = None
    note: str = ""
    tensors: tuple[Entry, ...] | None = None
    source: Spec | None = None

    def apply(self, name: str) -> str:
        for src, dst in self.renames:
            if name.startswith(src):
                return dst + name[len(src) :]
        return name

    def dtype_of(self, name: str, dtype: str) -> str:
        """The dtype this layout stores canonical tensor ``name`` in (``dtype`` by default)."""
        for suffix, override in self.dtypes:
            if name == suffix or name.endswith("." + suffix):
                return override
        return dtype


@dataclass(frozen=True)
class Scope:
    """Where a scope reads config fields from.

    ``sources`` are tried in order: ``"text_config"`` means the nested ``text_config`` dict,
    :data:`TOP` the top level. ``defaults`` hold the family config class defaults used when
    no source has the field. ``uses`` imports values of scopes declared earlier in the spec
    (``{"text_hidden_size": "text:hidden_size"}``: the expression ``hidden_size`` evaluated in
    scope ``text``). ``let`` are derived values (expressions evaluated in this scope, in
    order; later ones can use earlier ones). ``aliases`` map another spelling of a field to
    the name the spec reads (transformers' ``attribute_map``, e.g. ``{"num_local_experts":
    "num_experts"}``: transformers 5 re-saves Qwen3-MoE's ``num_experts`` under that name);
    within one source the spec's own name wins when both spellings are present. ``values``
    map older spellings of a field's values to the ones the spec reads, item by item in a
    list (transformers' legacy layer types: ``{"layer_types": {"mamba": "linear_attention"}}``,
    ``text_config.layer_types`` for a sub-config's), applied after the aliases.
    """

    sources: tuple[str, ...] = (TOP,)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    let: Mapping[str, str] = field(default_factory=dict)
    uses: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class T:
    """One tensor."""

    name: str
    shape: str
    when: str | None = None
    dtype: str | None = None  # safetensors dtype override, e.g. "F32"; None = config dtype
    fp16_dtype: str | None = None  # the dtype when the checkpoint is F16 (fp32-kept modules)
    kind: str | None = None  # quantization role; see module docstring
    tied_to: str | None = None  # when ``when`` is false, this tensor is tied to that one
    optional: bool = False  # may be present or absent (e.g. buffers old versions saved)
    scope: str | None = None
    section: str | None = None
    # For tensors that are the weight/bias of a Linear: the module and its features.
    module: str | None = None
    in_features: str | None = None
    out_features: str | None = None
    role: str | None = None  # "weight" | "bias"


@dataclass(frozen=True)
class Linear:
    """An ``nn.Linear`` (weight ``[out, in]`` + optional bias ``[out]``)."""

    module: str
    out_features: str
    in_features: str
    bias: bool | str = False
    when: str | None = None
    kind: str = "linear"
    dtype: str | None = None
    tied_to: str | None = None  # for LM heads: tied to this tensor when ``when`` is false
    scope: str | None = None
    section: str | None = None


@dataclass(frozen=True)
class Repeat:
    """``tensors`` once per ``var`` in ``range(start, start + count)``."""

    var: str
    count: str
    tensors: Sequence[Entry]
    start: str = "0"
    prefix: str = ""
    when: str | None = None
    scope: str | None = None
    section: str | None = None


@dataclass(frozen=True)
class Group:
    """A prefix / condition / scope / section shared by several entries."""

    tensors: Sequence[Entry]
    prefix: str = ""
    when: str | None = None
    scope: str | None = None
    section: str | None = None


Entry: TypeAlias = "T | Linear | Repeat | Group | tuple[str, ...]"


@dataclass(frozen=True)
class Spec:
    """A family: the config scopes it reads, its tensors and its on-disk layouts.

    ``default_scope`` is the scope of entries that name none. ``layouts`` lists every naming
    convention transformers (or the family's publisher) has written this family in, the most
    common first; the first one has the canonical names (no renames) the entries are written
    in. A layout whose ``prefer`` holds for a config moves to the front for that config.
    """

    model_type: str
    tensors: Sequence[Entry]
    scopes: Mapping[str, Scope] = field(default_factory=lambda: {"text": Scope()})
    default_scope: str = "text"
    default_section: str = "text"
    layouts: tuple[Layout, ...] = (Layout("default"),)
    architectures: tuple[str, ...] = ()
    notes: str = ""
    #: ``(condition, reason)`` pairs over the default scope: a config for which a condition
    #: is false is not one this spec describes (an UnknownArchitecture giving the reason).
    requires: tuple[tuple[str, str], ...] = ()
    #: where the spec came from ("hand-written", "derived from transformers 5.25.0")
    origin: str = "hand-written"

"""Derive how transformers reads a family's files, beside what it saves: config spellings and
the base-model prefix.

A developer tool (needs torch and transformers): ``python -m pyaudit.manifest.generate_loading``
writes ``pyaudit/manifest/loading.json``; ``--check`` exits 1 when the committed file differs
from what the installed transformers gives. For each derived family:

``base_model_prefix``
    the model class's ``base_model_prefix`` (``transformer`` for ``BloomForCausalLM``).
    transformers 5 loads weights saved by the base model (``h.0...``, no prefix) into the
    class with a head by adding the prefix (``core_model_loading.rename_source_key``), so a
    checkpoint without it is a healthy layout (the real ``bigscience/bloom`` index names
    ``h.0.*``, ``word_embeddings.weight``).
``aliases``
    a real ``config.json`` may spell a field another way than the config class's own field,
    and transformers still reads it:

- ``attribute_map`` (``BloomConfig``: ``num_hidden_layers`` is ``n_layer``): a config.json
  holding the mapped name sets the field;
- a legacy keyword the class pops in ``__init__``/``__post_init__`` (``BloomConfig``'s
  ``n_embed`` sets ``hidden_size``; the real ``bigscience/bloom`` config.json says
  ``n_embed``). Which field a popped keyword sets is found by building the config with it
  set to a probe value and seeing which one field takes that value: nothing is typed.

The derived specs (:mod:`pyaudit.manifest.derived`) read a config through these aliases, for
the top level and for each sub-config (``text_config.n_embed``), and accept the layout
without the prefix.

``values``
    a real ``config.json`` may spell a field's values another way, and transformers renames
    them when it reads the config: granite-4.0-h's ``layer_types`` say ``"mamba"`` and
    ``"attention"``, which every config class renames to ``"linear_attention"`` and
    ``"full_attention"`` (``configuration_utils._LEGACY_LAYER_TYPE_REMAP``). Each renaming is
    kept only where building the family's config class with the old value gives the new one.
``heads``
    the classes that save the family's body under another head (below).
``auto``
    Auto class -> the class transformers' Auto class builds for this model type
    (``AutoModelForCausalLM`` -> ``PhimoeForCausalLM``), for the classes above. A real
    ``config.json`` may name a remote-code class transformers does not have
    (``microsoft/Phi-3.5-MoE-instruct``: ``PhiMoEForCausalLM``, with ``auto_map``
    ``AutoModelForCausalLM`` -> ``modeling_phimoe.PhiMoEForCausalLM``); loaded without
    ``trust_remote_code`` (the default when transformers has the model type:
    ``dynamic_module_utils.resolve_trust_remote_code``), the Auto class the ``auto_map``
    names it under builds transformers' own class, whose names the checkpoint must hold.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyaudit.manifest.derived import GENERATED_DIR, LOADING_FILE, derived_model_types

_POPPED = re.compile(r"kwargs\.(?:pop|get)\(\s*[\"'](\w+)[\"']")
_PROBE = 7919  # a value no default has


def _popped_keywords(cls: type[Any]) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("transformers.models."):
            continue
        for method in ("__init__", "__post_init__"):
            fn = klass.__dict__.get(method)
            if fn is None:
                continue
            try:
                names |= set(_POPPED.findall(inspect.getsource(fn)))
            except (OSError, TypeError):
                continue
    return names


def config_aliases(cls: type[Any]) -> dict[str, str]:
    """Other spelling -> field, for one config class (its own fields only)."""
    try:
        base = cls().to_dict()
    except Exception:
        return {}
    aliases: dict[str, str] = {}
    for attr, name in sorted(getattr(cls, "attribute_map", {}).items()):
        if isinstance(attr, str) and isinstance(name, str) and name in base and attr not in base:
            aliases[attr] = name
    for keyword in sorted(_popped_keywords(cls)):
        if keyword in base or keyword in aliases:
            continue
        try:
            probed = cls(**{keyword: _PROBE}).to_dict()
        except Exception:
            continue
        changed = [
            k
            for k, v in probed.items()
            if k != keyword and v == _PROBE and base.get(k) != _PROBE and k in base
        ]
        if len(changed) == 1:
            aliases[keyword] = changed[0]
    return aliases


def family_aliases(model_type: str) -> dict[str, str]:
    """Other spelling -> field for a model type's config and its sub-configs
    (``text_config.n_embed`` -> ``text_config.hidden_size``)."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    out = dict(config_aliases(cls))
    for key, sub in sorted((getattr(cls, "sub_configs", None) or {}).items()):
        if isinstance(sub, type):
            for alias, name in config_aliases(sub).items():
                out[f"{key}.{alias}"] = f"{key}.{name}"
    return out


def config_values(cls: type[Any], fields: set[str]) -> dict[str, dict[str, str]]:
    """Field -> {older spelling of a value: the value the config class keeps}, for the
    per-item string lists among ``fields`` that one config class renames when built
    (``PreTrainedConfig`` renames legacy layer types: ``"mamba"`` -> ``"linear_attention"``).
    The candidates are transformers' own table of them (``_LEGACY_LAYER_TYPE_REMAP``), each
    kept only where building the class with it gives the value it names."""
    from transformers import configuration_utils

    table = getattr(configuration_utils, "_LEGACY_LAYER_TYPE_REMAP", None)
    if not isinstance(table, dict):
        return {}
    try:
        base = cls().to_dict()
    except Exception:
        return {}
    out: dict[str, dict[str, str]] = {}
    for name in sorted(fields):
        value = base.get(name)
        if not (isinstance(value, list) and value and all(isinstance(x, str) for x in value)):
            continue
        for old, new in sorted(table.items()):
            try:
                got = cls(**{name: [old] * len(value)}).to_dict().get(name)
            except Exception:
                continue
            if got == [new] * len(value) and old != new:
                out.setdefault(name, {})[old] = new
    return out


def family_values(model_type: str, data: dict[str, Any]) -> dict[str, dict[str, str]]:
    """:func:`config_values` for the fields a derived spec (``data``) reads, of its config
    and sub-configs (``text_config.layer_types``)."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    defaults: dict[str, Any] = data.get("defaults", {})
    out = config_values(cls, {k for k, v in defaults.items() if not isinstance(v, dict)})
    for key, sub in sorted((getattr(cls, "sub_configs", None) or {}).items()):
        inner = defaults.get(key)
        if isinstance(sub, type) and isinstance(inner, dict):
            for name, table in config_values(sub, set(inner)).items():
                out[f"{key}.{name}"] = table
    return out


def family_entry(env: Any, mt: str, log: Any = None) -> dict[str, Any]:
    """One derived family's entry (empty when there is nothing to say)."""
    import transformers

    from pyaudit.manifest.generate import _set

    entry: dict[str, Any] = {}
    try:
        aliases = family_aliases(mt)
    except KeyError:
        aliases = {}
    if aliases:
        entry["aliases"] = aliases
    with (GENERATED_DIR / f"{mt}.json").open("rb") as f:
        data = json.load(f)
    values = family_values(mt, data)
    if values:
        entry["values"] = values
    architecture = data["architecture"]
    prefix = getattr(getattr(transformers, architecture, None), "base_model_prefix", "")
    prefix = prefix if isinstance(prefix, str) else ""
    if prefix:
        entry["base_model_prefix"] = prefix
    heads: dict[str, Any] = {}
    defaults = json.loads(json.dumps(data["defaults"]))
    for dotted, filled in data.get("defaults_filled", {}).items():
        _set(defaults, dotted, filled["value"])  # (null there: no model builds)
    for head in _head_classes(env, mt, architecture):
        try:
            heads[head] = derive_head(env, mt, architecture, head, defaults, prefix)
        except Exception as e:  # not derivable: the runtime refuses the class
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            heads[head] = {"refused": reason}
            if log is not None:
                log(f"{mt} {head}: {reason}")
    if heads:
        entry["heads"] = heads
    entry.update(load_extras(getattr(transformers, architecture, None), data))
    auto = auto_classes(env, mt, {architecture, *heads})
    if auto:
        entry["auto"] = auto
    return entry


def derive_all(
    log: Any = None, only: Sequence[str] = (), kept: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every derived family's entry; with ``only``, those families' entries derived again
    and the others' taken from ``kept`` (the committed file) but for their ``values``, which
    are derived again for every family (they read the config classes only)."""
    import transformers

    from pyaudit.manifest.generate import Env

    env = Env()
    families: dict[str, dict[str, Any]] = {}
    old: dict[str, dict[str, Any]] = (kept or {}).get("families", {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mt in derived_model_types():
            if only and mt not in only:
                entry = {k: v for k, v in old.get(mt, {}).items() if k != "values"}
                with (GENERATED_DIR / f"{mt}.json").open("rb") as f:
                    values = family_values(mt, json.load(f))
                if values:
                    entry["values"] = values
            else:
                entry = family_entry(env, mt, log)
            if entry:
                families[mt] = entry
    return {
        "schema": 1,
        "derived_from": {"transformers": transformers.__version__},
        "num_labels_default": transformers.PretrainedConfig().num_labels,
        "families": families,
    }


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyaudit.manifest.generate_loading")
    ap.add_argument("--out", type=Path, default=LOADING_FILE)
    ap.add_argument("--check", action="store_true", help="exit 1 when the file differs")
    ap.add_argument(
        "model_types",
        nargs="*",
        help="derive only these families' entries again (the others' kept as the file has them, "
        "their values derived again); default: every family",
    )
    args = ap.parse_args(argv)
    kept = json.loads(args.out.read_text()) if args.model_types and args.out.is_file() else None
    text = dump(
        derive_all(log=lambda m: print(m, file=sys.stderr), only=args.model_types, kept=kept)
    )
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        if not same:
            print(f"{args.out} differs from what the installed transformers gives", file=sys.stderr)
        return 0 if same else 1
    args.out.write_text(text)
    return 0


# -- head classes ----------------------------------------------------------------------------

#: transformers' auto tables of the classes that save a family's body under another head
#: (or none): the ``architectures`` a real config.json may name besides the primary class.
HEAD_TABLES = (
    "MODEL_MAPPING_NAMES",
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
)


def auto_classes(env: Any, model_type: str, known: set[str]) -> dict[str, str]:
    """Auto class name -> the class it builds for ``model_type`` (transformers' own auto
    tables), for the classes in ``known`` (the primary and the head classes)."""
    out: dict[str, str] = {}
    for name in sorted(dir(env.auto)):
        if not name.startswith("AutoModel"):
            continue
        mapping = getattr(getattr(env.auto, name), "_model_mapping", None)
        table = getattr(mapping, "_model_mapping", None)  # (config name -> class name)
        if not isinstance(table, dict):
            continue
        cls = table.get(model_type)
        if isinstance(cls, str) and cls in known:
            out[name] = cls
    return out


def _head_classes(env: Any, model_type: str, primary: str) -> list[str]:
    out: list[str] = []
    for table in HEAD_TABLES:
        names = getattr(env.auto, table, {}).get(model_type)
        for name in names if isinstance(names, (list, tuple)) else [names]:
            if isinstance(name, str) and name != primary and name not in out:
                out.append(name)
    return out


def _saves(env: Any, model_type: str, cls: type[Any], points: list[dict[str, Any]]) -> list[Any]:
    return [env.save(cls, env.config(model_type, kw)) for kw in points]


def derive_head(
    env: Any, model_type: str, primary: str, head: str, defaults: dict[str, Any], prefix: str
) -> dict[str, Any]:
    """How ``head``'s save differs from ``primary``'s, as a rule the runtime applies to the
    primary manifest: ``strip_prefix`` (names saved without the base-model prefix), ``drop``
    (the primary's head tensors, absent), ``add`` (the head's own tensors: name, shape as
    expressions over the config, dtype ``null`` for the config's). Raises ValueError when
    the difference is not that simple (the runtime then refuses the class)."""
    p_cls = getattr(env.transformers, primary)
    h_cls = getattr(env.transformers, head)
    base = {k: v for k, v in defaults.items() if v is not None}  # (None: the class computes it)
    points = [base, {**base, "num_labels": 3}, {**base, "num_labels": 5}]  # (see _dim_expr)
    primary_saves = _saves(env, model_type, p_cls, points[:1])
    head_saves = _saves(env, model_type, h_cls, points)
    p = primary_saves[0].tensors
    h0 = head_saves[0].tensors
    strip = (
        bool(prefix)
        and not any(n.startswith(prefix + ".") for n in h0)
        and any(n.startswith(prefix + ".") for n in p)
    )

    def moved(name: str) -> str:
        return name[len(prefix) + 1 :] if strip and name.startswith(prefix + ".") else name

    body = {moved(n): v for n, v in p.items()}
    drop = sorted(n for n, m in ((n, moved(n)) for n in p) if m not in h0)
    if any(any(t.isdigit() for t in n.split(".")) for n in drop):
        raise ValueError(f"{head}: drops numbered tensors {drop[:3]}")
    for n, (shape, dt) in h0.items():
        if n in body and body[n] != (shape, dt):
            raise ValueError(f"{head}: {n} is {shape} {dt}, the primary's {body[n]}")
    added = [n for n in h0 if n not in body]
    if any(any(t.isdigit() for t in n.split(".")) for n in added):
        raise ValueError(f"{head}: adds numbered tensors {added[:3]}")
    add: list[dict[str, Any]] = []
    for name in added:
        shapes = [s.tensors[name][0] if name in s.tensors else None for s in head_saves]
        if any(s is None or len(s) != len(shapes[0]) for s in shapes):  # type: ignore[arg-type]
            raise ValueError(f"{head}: {name} is not saved at every point")
        dims: list[str] = []
        for d in range(len(shapes[0])):  # type: ignore[arg-type]
            values = [s[d] for s in shapes]  # type: ignore[index]
            dims.append(_dim_expr(env, model_type, h_cls, name, d, values, base))
        dtype = h0[name][1]
        add.append({"name": name, "shape": dims, "dtype": None if dtype == "BF16" else dtype})
    return {"strip_prefix": strip, "drop": drop, "add": add}


def _dim_expr(
    env: Any,
    model_type: str,
    cls: type[Any],
    name: str,
    d: int,
    values: list[int],
    base: dict[str, Any],
) -> str:
    """The config field a head tensor's dimension follows: ``num_labels`` (varied by the
    points), else the one top-level int field equal to it whose doubling doubles it, else
    (no field moves it) the constant (``qa_outputs``: start and end logits, 2)."""
    labels = [env.config(model_type, base).num_labels, 3, 5]
    if values == labels:
        return "num_labels"
    if len(set(values)) != 1:
        raise ValueError(f"{name} dim {d}: {values} follows neither num_labels nor a constant")
    value = values[0]
    cfg = env.config(model_type, base).to_dict()
    found: list[str] = []
    for field_name, v in cfg.items():
        if field_name.startswith("_") or isinstance(v, bool) or not isinstance(v, int):
            continue
        if v != value:
            continue
        try:
            saved = env.save(cls, env.config(model_type, {**base, field_name: v * 2}))
        except Exception:
            continue
        shape = saved.tensors.get(name, ((),))[0]
        if len(shape) > d and shape[d] == value * 2:
            found.append(field_name)
    if len(found) == 1:
        return found[0]
    if not found:  # the same at every point, and no field that equals it moves it
        return str(value)
    raise ValueError(f"{name} dim {d} = {value}: followed by {found}")


# -- tensors a file may hold beyond the family's saves ------------------------------------

_LITERAL = re.compile(r"[\w.]+")


def _spec_names(entries: list[dict[str, Any]], prefix: str = "") -> tuple[set[str], set[str]]:
    """The names a spec's entries give (repeated ones unrendered), and their ``tied_to``s."""
    names: set[str] = set()
    tied_to: set[str] = set()
    for e in entries:
        if "repeat" in e:
            more, also = _spec_names(e["tensors"], prefix + str(e.get("prefix", "")))
            names |= more
            tied_to |= also
        elif "name" in e:
            names.add(prefix + str(e["name"]))
            if isinstance(e.get("tied_to"), str):
                tied_to.add(e["tied_to"])
    return names, tied_to


def load_extras(cls: type[Any] | None, data: dict[str, Any]) -> dict[str, Any]:
    """What transformers accepts in a file of the saved class ``cls`` beyond what its saves
    hold, from the class's own attributes (``data``: the family's generated spec):

    ``untied_heads``
        target -> source of ``cls._tied_weights_keys`` (literal names only) whose target the
        family's saves never hold and whose source they do, where no spec entry is tied to
        that source (a tied head the spec knows, perhaps by another name, keeps its
        "saved although tied" warning) (``T5ForConditionalGeneration``:
        ``lm_head.weight`` -> ``shared.weight``; ``T5Config`` forces
        ``tie_word_embeddings=True``, so no save holds ``lm_head.weight``, while FLAN-T5 and
        T5 v1.1 files do). When a file holds the target, ``PreTrainedModel.tie_weights``
        (``from_pretrained``) finds source and target both present and, their values
        differing, does NOT tie them: the file's tensor is loaded as the weight of its own,
        used, and saved again; equal values are tied. A tensor of the source's shape and
        dtype there is a healthy file.
    ``ignore_unexpected``
        ``cls._keys_to_ignore_on_load_unexpected``: regexes transformers applies with
        ``re.search`` to the names it does not load (``_adjust_missing_and_unexpected_keys``)
        and does not report (T5's ``decoder.block.0.layer.1.EncDecAttention.
        relative_attention_bias.weight``, held by the original 2020 T5 files). Only the
        class's own (and inherited) attribute: patterns ``post_init`` gathers from child
        modules, and the buffers' ``rotary_emb.inv_freq``/``position_ids`` patterns, are not
        recorded.
    """
    out: dict[str, Any] = {}
    if cls is None:
        return out
    saved, tied_to = _spec_names(data.get("tensors", []))
    tied = getattr(cls, "_tied_weights_keys", None)
    if isinstance(tied, dict):
        untied = {
            t: s
            for t, s in sorted(tied.items())
            if isinstance(t, str)
            and isinstance(s, str)
            and _LITERAL.fullmatch(t)
            and _LITERAL.fullmatch(s)
            and t not in saved
            and s in saved
            and s not in tied_to  # the spec knows the tied head (by another name: gpt_neox)
        }
        if untied:
            out["untied_heads"] = untied
    ignore = getattr(cls, "_keys_to_ignore_on_load_unexpected", None)
    if isinstance(ignore, (list, tuple, set)):
        patterns = sorted(p for p in ignore if isinstance(p, str))
        if patterns:
            out["ignore_unexpected"] = patterns
    return out


if __name__ == "__main__":
    sys.exit(main())

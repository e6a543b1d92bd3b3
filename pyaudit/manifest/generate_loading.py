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


def derive_all() -> dict[str, Any]:
    import transformers

    families: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mt in derived_model_types():
            entry: dict[str, Any] = {}
            try:
                aliases = family_aliases(mt)
            except KeyError:
                aliases = {}
            if aliases:
                entry["aliases"] = aliases
            with (GENERATED_DIR / f"{mt}.json").open("rb") as f:
                architecture = json.load(f)["architecture"]
            prefix = getattr(getattr(transformers, architecture, None), "base_model_prefix", "")
            if isinstance(prefix, str) and prefix:
                entry["base_model_prefix"] = prefix
            if entry:
                families[mt] = entry
    return {
        "schema": 1,
        "derived_from": {"transformers": transformers.__version__},
        "families": families,
    }


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyaudit.manifest.generate_loading")
    ap.add_argument("--out", type=Path, default=LOADING_FILE)
    ap.add_argument("--check", action="store_true", help="exit 1 when the file differs")
    args = ap.parse_args(argv)
    text = dump(derive_all())
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        if not same:
            print(f"{args.out} differs from what the installed transformers gives", file=sys.stderr)
        return 0 if same else 1
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

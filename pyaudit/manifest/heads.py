"""Head classes: a family's body saved under another head, or none.

A real ``config.json`` names the class that saved the weights (``architectures``): beside
the primary class a spec describes (``Qwen2ForCausalLM``), transformers saves the same body
under other heads, and those checkpoints are healthy too: a reward model
(``Qwen2ForSequenceClassification``: ``score.weight`` in place of ``lm_head.weight``), an
embedding model (``Qwen3Model``: no head, no ``model.`` prefix), a token classifier.

How each head class's save differs from the primary's is derived from transformers
(:mod:`pyaudit.manifest.generate_loading`, ``heads`` in ``loading.json``): which of the
primary's tensors it does not hold (``drop``), whether it saves the body without the
base-model prefix (``strip_prefix``), and its own tensors (``add``: shapes as expressions
over the config; ``num_labels`` is the length of the config's ``id2label``, as transformers
reads it). Applied here to the primary's records, before the layout renames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .expr import compile_expr
from .interpret import ManifestError, Rec, shape_of

__all__ = ["apply_head", "head_env"]


def head_env(config: Mapping[str, Any], num_labels_default: int) -> dict[str, Any]:
    """The names a head rule's shapes read: the config's top level, and ``num_labels``."""
    env = dict(config)
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        env["num_labels"] = len(labels)
    elif "num_labels" not in config:  # (a value of the wrong type fails as the config's)
        env["num_labels"] = num_labels_default
    return env


def apply_head(
    records: list[Rec],
    tied: dict[str, str],
    rule: Mapping[str, Any],
    prefix: str,
    env: dict[str, Any],
    dtype: str,
) -> tuple[list[Rec], dict[str, str]]:
    """The records and ties of the head class ``rule`` describes, from the primary's."""
    drop = set(rule.get("drop", ()))
    # a dropped tensor's module is not in the head class at all: its other parameters go too
    # (the rule is derived at the class defaults: PhimoeModel drops lm_head.weight, and has no
    # lm_head.bias either when a config's lm_head_bias adds one to PhimoeForCausalLM)
    gone = {n.rpartition(".")[0] for n in drop if n.endswith((".weight", ".bias"))}
    drop |= {
        r.name
        for r in records
        if r.name.endswith((".weight", ".bias")) and r.name.rpartition(".")[0] in gone
    }
    head = prefix + "."

    def moved(name: str) -> str:
        if rule.get("strip_prefix") and name.startswith(head):
            return name[len(head) :]
        return name

    out = [replace(r, name=moved(r.name)) for r in records if r.name not in drop]
    out_tied = {moved(k): moved(v) for k, v in tied.items() if k not in drop and v not in drop}
    section = out[-1].section if out else "text"
    for entry in rule.get("add", ()):
        dims = tuple(compile_expr(str(e))(env) for e in entry["shape"])
        try:
            shape = shape_of(dims)
        except ValueError as e:
            raise ManifestError(f"{entry['name']}: shape {dims} from the config: {e}") from None
        out.append(Rec(entry["name"], shape, entry.get("dtype") or dtype, section))
    return out, out_tied

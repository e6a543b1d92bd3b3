"""Tensors a file holds beyond the family's saves that transformers accepts on load.

Two loading facts (``loading.json``, :func:`pyaudit.manifest.generate_loading.load_extras`,
derived from the saved class's own attributes, nothing typed):

- ``untied_heads``: a target of the class's ``_tied_weights_keys`` that the family's saves
  never hold (T5's ``lm_head.weight``: ``T5Config`` forces ``tie_word_embeddings=True``).
  Present in a file (FLAN-T5, T5 v1.1), transformers 5 loads it as a weight of its own
  (``tie_weights`` does not tie a target the checkpoint holds with other values than its
  source) and saves it again: with its source's shape and dtype, the file is healthy, and no
  finding is made. Another shape or dtype stays unexpected.
- ``ignore_unexpected``: the class's ``_keys_to_ignore_on_load_unexpected`` regexes, which
  transformers applies with ``re.search`` to the names it does not load and does not report
  (the original T5 files' ``decoder.block.0.layer.1.EncDecAttention.
  relative_attention_bias.weight``). Such names are an ``ignored-on-load`` note, not a warning.

A tied head the spec knows (``lm_head.weight`` ``when: not tie_word_embeddings``) is not
touched here: a file holding it while its config.json says tied keeps the
``saved although tied`` warning (transformers itself warns there: "specifies to tie ... but
both are present in the checkpoints with different values, so we will NOT tie them. You
should update the config with `tie_word_embeddings=False`").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

from pyaudit.findings import Bytes, Finding, Message, finding
from pyaudit.manifest.derived import loading_rules
from pyaudit.units import noun

if TYPE_CHECKING:
    from pyaudit.auditing.compare import Found
    from pyaudit.expected import LayoutTensors


@lru_cache(maxsize=256)
def _ignore_regex(model_type: str) -> re.Pattern[str] | None:
    patterns = loading_rules(model_type).get("ignore_unexpected") or []
    if not patterns:
        return None
    return re.compile("|".join(f"({p})" for p in patterns))


def accepted_extras(
    model_type: str | None,
    unexpected: list[str],
    found: Mapping[str, Found],
    layout: LayoutTensors,
) -> tuple[list[str], list[str]]:
    """``unexpected`` split into (still unexpected, ignored by transformers on load); the
    untied heads transformers loads as weights of their own are in neither."""
    if not model_type or not unexpected:
        return unexpected, []
    rules = loading_rules(model_type)
    untied = rules.get("untied_heads") or {}
    regex = _ignore_regex(model_type)
    if not untied and regex is None:
        return unexpected, []
    still: list[str] = []
    ignored: list[str] = []
    for name in unexpected:
        twin = untied.get(name)
        if isinstance(twin, str) and _as_twin(name, twin, found, layout):
            continue
        if regex is not None and regex.search(name) is not None:
            ignored.append(name)
        else:
            still.append(name)
    return still, ignored


def _as_twin(name: str, twin: str, found: Mapping[str, Found], layout: LayoutTensors) -> bool:
    want = layout.tensors.get(twin)
    if want is None or want.shape is None or found[name].shape != want.shape:
        return False
    dtype = found[twin].dtype if twin in found else want.dtype
    return found[name].dtype == dtype


def ignored_on_load(names: list[str], found: Mapping[str, Found]) -> Finding:
    """The ``ignored-on-load`` note for ``names`` (see :func:`accepted_extras`)."""
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return finding(
        "ignored-on-load",
        Message.of(
            "{count} {tensors} that the model class lists in "
            "_keys_to_ignore_on_load_unexpected ({size}): transformers skips them on load "
            "without a warning: {shown}",
            count=len(names),
            tensors=noun(len(names), "tensor"),
            size=Bytes(sum(found[n].nbytes for n in names)),
            shown=shown,
        ),
        tensors=names,
    )

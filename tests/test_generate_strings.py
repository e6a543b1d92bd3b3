"""String config fields that change what transformers saves (T5's ``feed_forward_proj``:
``wi`` or, gated, ``wi_0`` and ``wi_1``): the expression language's ``split``, the values the
generator reads off transformers' source for such a field, and the conditions it offers."""

from __future__ import annotations

import pytest

from pyaudit.manifest.expr import ExprError, evaluate
from pyaudit.manifest.generate import solve_condition, string_conditions


def test_split_reads_a_value_made_of_parts() -> None:
    text = 'split(feed_forward_proj, "-")[0] == "gated"'
    assert evaluate(text, {"feed_forward_proj": "gated-gelu"}) is True
    assert evaluate(text, {"feed_forward_proj": "gated-silu"}) is True
    assert evaluate(text, {"feed_forward_proj": "relu"}) is False
    assert evaluate(text, {}) is False  # a missing field: None, no part
    assert evaluate('split(x, "")', {"x": "a"}) is None
    assert evaluate('split(x, "-")', {"x": 3}) is None
    with pytest.raises(ExprError):
        evaluate('x.split("-")', {"x": "a-b"})


def test_a_prefix_is_told_from_one_value_only_when_the_samples_tell_them_apart() -> None:
    seen = ["relu", "gated-gelu", "gated-relu", "gelu"]
    samples = [{"feed_forward_proj": v} for v in seen]
    gated = [v.startswith("gated-") for v in seen]
    texts = string_conditions(["feed_forward_proj"], samples)
    assert 'feed_forward_proj == "gated-gelu"' in texts
    got = solve_condition(samples, gated, ["feed_forward_proj"], None)
    assert got == 'split(feed_forward_proj, "-")[0] == "gated"'
    # two values only: one of them is the simplest statement
    two = samples[:2]
    assert solve_condition(two, gated[:2], ["feed_forward_proj"], None) == (
        'feed_forward_proj == "gated-gelu"'
    )
    # not string-valued everywhere: no string condition
    assert string_conditions(["f"], [{"f": "a"}, {"f": 1}]) == []


def test_values_come_from_transformers_source() -> None:
    transformers = pytest.importorskip("transformers")
    from pyaudit.manifest.generate import string_values

    # T5Config's docstring: 'Should be one of "relu" or "gated-gelu"'; then their parts
    got = string_values(
        "feed_forward_proj", transformers.T5Config, transformers.T5ForConditionalGeneration
    )
    assert got[:2] == ["relu", "gated-gelu"] and set(got) == {
        "relu", "gated-gelu", "gated-relu", "gelu"
    }  # fmt: skip
    # LongT5's modeling file compares encoder_attention_type with both of its values
    got = string_values(
        "encoder_attention_type",
        transformers.LongT5Config,
        transformers.LongT5ForConditionalGeneration,
    )
    assert {"local", "transient-global"} <= set(got)

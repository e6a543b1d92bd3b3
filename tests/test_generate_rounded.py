"""The generator's vocabulary for widths rounded up to a multiple of a config field, behind a
flag (``pyaudit.manifest.generate.synthesize_rounded``, ``Deriver._rounded``), against what
transformers itself builds: LFM2's feed-forward width, read off ``Lfm2MLP`` on the meta
device at several configs; the expression solved from some of them gives transformers' width
at the others. Needs torch and transformers (skipped otherwise)."""

from __future__ import annotations

from typing import Any

import pytest

from pyaudit.manifest.expr import evaluate
from pyaudit.manifest.generate import Deriver, synthesize_rounded

FIELDS = ("intermediate_size", "block_multiple_of", "block_ffn_dim_multiplier")
FLAG = "block_auto_adjust_ff_dim"


def _width(config: dict[str, Any]) -> int:
    """The feed-forward width transformers' own Lfm2MLP takes for ``config``."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import Lfm2Config
    from transformers.models.lfm2.modeling_lfm2 import Lfm2MLP

    with torch.device("meta"):
        mlp = Lfm2MLP(Lfm2Config(hidden_size=64, **config))
    return int(mlp.w1.weight.shape[0])


def _seen() -> list[dict[str, Any]]:
    base = {"intermediate_size": 12288, "block_multiple_of": 256,
            "block_ffn_dim_multiplier": 1.0, FLAG: True}  # fmt: skip
    # one field varied at a time, as the generator's points vary them
    out = [base]
    for field, value in (("intermediate_size", 6144), ("intermediate_size", 24576),
                         ("intermediate_size", 12289), ("block_multiple_of", 257),
                         ("block_ffn_dim_multiplier", 2.0), (FLAG, False)):  # fmt: skip
        out.append({**base, field: value})
    return out


def test_a_rounded_width_behind_a_flag_is_solved_and_holds_where_unseen() -> None:
    seen = _seen()
    target = tuple(_width(c) for c in seen)
    atoms = {f: tuple(c[f] for c in seen) for f in FIELDS}
    bools = {FLAG: tuple(c[FLAG] for c in seen)}
    deriver = Deriver.__new__(Deriver)  # (_rounded reads nothing of the instance)
    text = deriver._rounded(atoms, target, bools)
    assert text is not None
    for config in (
        *seen,
        {"intermediate_size": 8199, "block_multiple_of": 64,
         "block_ffn_dim_multiplier": 1.5, FLAG: True},
        {"intermediate_size": 6656, "block_multiple_of": 256,
         "block_ffn_dim_multiplier": 1.0, FLAG: True},
        {"intermediate_size": 4100, "block_multiple_of": 100,
         "block_ffn_dim_multiplier": 0.75, FLAG: False},
    ):  # fmt: skip
        assert evaluate(text, config) == _width(config), (text, config)


def test_no_rounding_is_claimed_where_the_multiple_never_varied() -> None:
    seen = [c for c in _seen() if c["block_multiple_of"] == 256 and c[FLAG]]
    target = tuple(_width(c) for c in seen)
    atoms = {f: tuple(c[f] for c in seen) for f in FIELDS}
    assert synthesize_rounded(atoms, target) is None


@pytest.mark.parametrize(
    "config",
    [
        # the tiny real save's (tests/data/derived_saves/lfm2): 21 rounded up to 24
        {"intermediate_size": 32, "block_multiple_of": 8},
        # int(2 * 12289 / 3) = 8192, a multiple; 12289 - 12289 // 3 = 8193 is not
        {"intermediate_size": 12289, "block_multiple_of": 256},
        {"intermediate_size": 8199, "block_multiple_of": 64, "block_ffn_dim_multiplier": 1.5},
        {"intermediate_size": 4100, "block_multiple_of": 100, FLAG: False},
    ],
)
def test_the_committed_lfm2_spec_rounds_as_transformers_does(config: dict[str, Any]) -> None:
    """The derived spec (generated/lfm2.json) at configs where the rounding matters."""
    from pyaudit.manifest import _build
    from pyaudit.manifest.derived import derived_spec
    from pyaudit.manifest.generate import point_config

    pytest.importorskip("transformers")
    from transformers import Lfm2Config

    spec = derived_spec("lfm2")
    if spec is None:
        pytest.skip("lfm2 not derived")
    full = Lfm2Config(hidden_size=64, num_hidden_layers=2, **config).to_dict()
    shapes = {n: t.shape for n, t in _build(spec, point_config(full), None).tensors.items()}
    assert shapes["model.layers.0.feed_forward.w1.weight"] == (_width(config), 64)
    assert shapes["model.layers.0.feed_forward.w2.weight"] == (64, _width(config))

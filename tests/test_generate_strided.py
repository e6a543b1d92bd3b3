"""The generator's vocabulary for InternVL (issue 9) and phi4_multimodal:

* a repeat over indices that are not a range (an ``nn.Sequential`` whose activations hold no
  weights: ``[conv, act, (dw, pw, act) * n]`` saves items 0, 2, 3, 5, 6) split into classes
  stepping by one period (``pyaudit.manifest.generate.strides`` / ``strided`` /
  ``unstrided``), written back as names with an index expression (``conv.{3 * i + 2}``);
* a product with a floor division on its right keeps its parentheses;
* the derived specs of both families give transformers' own saves at configs the generator
  never saw (a time_reduction of 16 and 32, a downsample_ratio of 0.25, a non-square patch
  is not claimed): torch and transformers needed for those (skipped otherwise).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pyaudit.manifest.derived import GENERATED_DIR, spec_from_data
from pyaudit.manifest.generate import Saved, Term, _bin, strided, strides, unstrided

STEM = "enc.conv"


def _sequential(n: int, channels: int = 8) -> Saved:
    """The names an audio subsampling Sequential of ``n`` (dw, pw, act) stages saves."""
    tensors: dict[str, tuple[tuple[int, ...], str]] = {
        f"{STEM}.0.weight": ((channels, 1, 3, 3), "BF16"),
        f"{STEM}.0.bias": ((channels,), "BF16"),
    }
    for k in range(n):
        dw, pw = 3 * k + 2, 3 * k + 3
        tensors[f"{STEM}.{dw}.weight"] = ((channels, 1, 3, 3), "BF16")
        tensors[f"{STEM}.{dw}.bias"] = ((channels,), "BF16")
        tensors[f"{STEM}.{pw}.weight"] = ((channels, channels, 1, 1), "BF16")
        tensors[f"{STEM}.{pw}.bias"] = ((channels,), "BF16")
    tensors["enc.out.weight"] = ((4, 4), "BF16")
    return Saved(tensors, {}, {"enc.out": False}, {})


def test_indices_not_a_range_split_into_classes_of_one_period() -> None:
    saves = [_sequential(2), _sequential(1), _sequential(3, 16)]
    assert strides(saves) == {STEM: 3}  # period 2 also fits 0, 2, 3, 5, 6 but in 4 classes
    names = set(strided(saves[0], {STEM: 3}).tensors)
    assert names == {
        f"{STEM}~p3r0c0.0.weight",  # item 0: the first conv
        f"{STEM}~p3r0c0.0.bias",
        f"{STEM}~p3r2c0.0.weight",  # items 2, 5: depthwise, k = 0, 1
        f"{STEM}~p3r2c0.0.bias",
        f"{STEM}~p3r2c0.1.weight",
        f"{STEM}~p3r2c0.1.bias",
        f"{STEM}~p3r0c1.1.weight",  # items 3, 6: pointwise, k = 1, 2
        f"{STEM}~p3r0c1.1.bias",
        f"{STEM}~p3r0c1.2.weight",
        f"{STEM}~p3r0c1.2.bias",
        "enc.out.weight",
    }
    entries = [
        {"name": f"{STEM}~p3r0c0.0.weight", "shape": "c"},
        {"repeat": "i", "count": "n", "prefix": f"{STEM}~p3r2c0.{{i}}.", "tensors": []},
        {"repeat": "i", "count": "n", "start": "1", "prefix": f"{STEM}~p3r0c1.{{i}}."},
    ]
    assert unstrided(entries) == [
        {"name": f"{STEM}.0.weight", "shape": "c"},
        {"repeat": "i", "count": "n", "prefix": f"{STEM}.{{3 * i + 2}}.", "tensors": []},
        {"repeat": "i", "count": "n", "start": "1", "prefix": f"{STEM}.{{3 * i}}."},
    ]


def test_ranges_are_left_alone() -> None:
    plain = Saved({f"layers.{i}.w": ((2,), "BF16") for i in range(4)}, {}, {}, {})
    fewer = Saved({f"layers.{i}.w": ((2,), "BF16") for i in range(2)}, {}, {}, {})
    assert strides([plain, fewer]) == {}
    assert strided(plain, {}) is plain


def test_a_floor_division_right_of_a_product_keeps_its_parentheses() -> None:
    a, b, c = (Term(x, 0, 1) for x in ("a", "b", "c"))
    assert _bin(a, "*", _bin(b, "//", c)).text == "a * (b // c)"
    assert _bin(a, "*", _bin(b, "*", c)).text == "a * b * c"
    assert _bin(_bin(a, "*", b), "//", c).text == "a * b // c"
    assert _bin(a, "+", _bin(b, "+", c)).text == "a + b + c"
    assert _bin(a, "-", _bin(b, "+", c)).text == "a - (b + c)"


def _data(model_type: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GENERATED_DIR / f"{model_type}.json").read_text())
    return data


def test_the_derived_sequential_reads_the_stage_count_as_transformers_does() -> None:
    """phi4_multimodal's data: items 2, 5, ... and 3, 6, ... for int(log2(time_reduction)) - 1
    stages (without torch: what the file says)."""
    from pyaudit.manifest.interpret import run_spec

    spec = spec_from_data(_data("phi4_multimodal"))
    config = json.loads(json.dumps(_data("phi4_multimodal")["defaults"]))
    prefix = "model.embed_tokens_extend.audio_embed.encoder.embed.conv."
    for reduction, items in (
        (8, [0, 2, 3, 5, 6]),
        (4, [0, 2, 3]),
        (32, [0, 2, 3, 5, 6, 8, 9, 11, 12]),
    ):
        config["audio_config"]["time_reduction"] = reduction
        records, _ = run_spec(spec, config, "BF16")
        got = sorted(
            {int(r.name[len(prefix) :].split(".")[0]) for r in records if r.name.startswith(prefix)}
        )
        assert got == items, reduction


@pytest.fixture(scope="module")
def tf() -> Any:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pyaudit.manifest.generate import Env

    if transformers.__version__ != _data("internvl")["derived_from"]["transformers"]:
        pytest.skip("data derived from another transformers")
    return Env()


@pytest.mark.parametrize(
    ("model_type", "kwargs"),
    [
        ("phi4_multimodal", {"audio_config": {"time_reduction": 16, "num_blocks": 2}}),
        ("phi4_multimodal", {"audio_config": {"time_reduction": 32, "num_blocks": 2}}),
        ("phi4_multimodal", {"audio_config": {"time_reduction": 2, "num_blocks": 2}}),
        ("internvl", {"downsample_ratio": 0.25}),
        ("internvl", {"downsample_ratio": 0.3}),
        ("internvl", {"vision_config": {"patch_size": [16, 16], "image_size": [224, 224]}}),
    ],
)
def test_unseen_points_are_what_transformers_saves(
    tf: Any, model_type: str, kwargs: dict[str, Any]
) -> None:
    from pyaudit.manifest.generate import verify

    data = _data(model_type)
    cls = getattr(tf.transformers, data["architecture"])
    base = tf.config(model_type, {}).to_dict()
    merged: dict[str, Any] = {}
    for k, v in kwargs.items():
        merged[k] = {**base[k], **v} if isinstance(v, dict) else v
        if isinstance(v, dict):
            merged[k].pop("transformers_version", None)
    saved = tf.save(cls, tf.config(model_type, merged))
    assert verify(data, [(json.dumps(kwargs), saved)]) == []


def test_the_same_indices_everywhere_stay_literal() -> None:
    """A Sequential whose weighted items never change (an MLP's Linear, act, Linear: items 0
    and 2 at every point) is no repeat: its names stay as saved."""
    mlp = Saved({"proj.0.weight": ((4, 2), "BF16"), "proj.2.weight": ((2, 4), "BF16")}, {}, {}, {})
    assert strides([mlp, mlp]) == {}

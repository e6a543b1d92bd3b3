"""Per-layer lists that are one value at the class defaults (granitemoehybrid's
``layer_types``, every layer Mamba): the generator mixes in the other values the config class
accepts among its modeling file's string literals (``pyaudit.manifest.generate._mixes``), so
the derived spec has seen the layers they make; and the committed spec gives what transformers
saves at configs with such a mix it never saw, named as real granite-4.0-h configs name them.
Needs torch and transformers (skipped otherwise)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pyaudit.manifest import _build
from pyaudit.manifest.derived import GENERATED_DIR, derived_spec


@pytest.fixture(scope="module")
def env() -> Any:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pyaudit.manifest.generate import Env

    data = json.loads((GENERATED_DIR / "granitemoehybrid.json").read_text())
    if data["derived_from"]["transformers"] != transformers.__version__:
        pytest.skip("granitemoehybrid.json was derived from another transformers")
    return Env()


def test_a_one_valued_layer_list_is_mixed_with_the_values_the_class_accepts(env: Any) -> None:
    from pyaudit.manifest.generate import _mixes, _module_literals

    cls = env.buildable_class("granitemoehybrid")
    kwargs = {"num_hidden_layers": 4}
    cfg = env.config("granitemoehybrid", kwargs)
    value = cfg.to_dict()["layer_types"]
    assert value == ["linear_attention"] * 4
    literals = _module_literals(env.build(cls, cfg))
    mixes = _mixes(env, "granitemoehybrid", kwargs, cfg, ("layer_types",), value, literals)
    assert mixes == [["linear_attention", "full_attention"] * 2]


def test_a_class_that_takes_any_value_gets_no_mix(env: Any) -> None:
    from pyaudit.manifest.generate import _mixes

    class Loose:
        def to_dict(self) -> dict[str, Any]:
            return {"layer_types": self.layer_types}

    class LooseEnv:
        def config(self, model_type: str, kwargs: dict[str, Any]) -> Any:
            out = Loose()
            out.layer_types = kwargs.get("layer_types", ["a", "a"])  # type: ignore[attr-defined]
            return out

    got = _mixes(LooseEnv(), "x", {}, Loose(), ("layer_types",), ["a", "a"], {"a", "b"})  # type: ignore[arg-type]
    assert got == []


@pytest.mark.parametrize(
    "types",
    [
        # granite-4.0-h-tiny's pattern, shortened: attention at layers 5 and 15 of 20
        ["mamba"] * 5 + ["attention"] + ["mamba"] * 9 + ["attention"] + ["mamba"] * 4,
        ["attention", "mamba", "mamba", "attention"],
    ],
)
def test_the_spec_gives_transformers_save_at_mixes_it_never_saw(env: Any, types: list[str]) -> None:
    from pyaudit.manifest.generate import point_config

    cls = env.buildable_class("granitemoehybrid")
    kwargs = {"num_hidden_layers": len(types), "layer_types": types, "num_local_experts": 4,
              "num_key_value_heads": 8}  # fmt: skip
    saved = env.save(cls, env.config("granitemoehybrid", kwargs))
    config = point_config(saved.env)
    config["layer_types"] = types  # as a real config.json names them
    spec = derived_spec("granitemoehybrid")
    assert spec is not None
    got = {n: (t.shape, t.dtype) for n, t in _build(spec, config, None).tensors.items()}
    assert got == saved.tensors
    assert any(".self_attn." in n for n in got) and any(".mamba." in n for n in got)

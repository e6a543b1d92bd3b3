"""Specs derived from transformers (``pyaudit/manifest/generated/``) against transformers.

Without torch: every generated file loads and builds at its class defaults, and the tiny real
``save_pretrained`` outputs committed under ``tests/data/derived_saves/`` (written by
transformers, see their SOURCE.txt) get PASS, and FAIL with a tensor or a whole layer removed.

With torch and transformers (skipped otherwise): for every derived family, the manifest equals
what ``save_pretrained`` writes (names, shapes, dtypes), byte for byte, at the class defaults
(real size, on the meta device) and at two other points (fewer layers and experts, the tie
flipped, other sizes) the generator never saw; families that have a hand-written spec agree
with it; and the generator's output for the installed transformers equals the committed data
(the drift check; skipped when the installed version is not the one recorded).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from rewrite import rewrite_without

from pyaudit.api import scan
from pyaudit.manifest import UnknownArchitecture, _build, build_manifest, layouts, spec_of
from pyaudit.manifest.derived import GENERATED_DIR, derived_model_types, derived_spec
from pyaudit.manifest.specs import SPECS

DERIVED = list(derived_model_types())
SAVES = Path(__file__).parent / "data" / "derived_saves"
TINY = (
    sorted(p.name for p in SAVES.iterdir() if (p / "config.json").is_file())
    if SAVES.is_dir()
    else []
)


def _data(model_type: str) -> dict[str, Any]:
    with (GENERATED_DIR / f"{model_type}.json").open("rb") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _default_config(model_type: str) -> dict[str, Any]:
    data = _data(model_type)
    config = json.loads(json.dumps(data["defaults"]))
    config["model_type"] = model_type
    config["architectures"] = [data["architecture"]]
    config["dtype"] = "bfloat16"
    return config


# -- without torch ---------------------------------------------------------------------------


def test_generated_data_records_its_source() -> None:
    assert len(DERIVED) >= 15, DERIVED
    for mt in DERIVED:
        data = _data(mt)
        assert data["model_type"] == mt
        assert data["derived_from"]["transformers"].startswith("5.")
        assert data["schema"] == 1


@pytest.mark.parametrize("model_type", DERIVED)
def test_derived_spec_builds_at_its_defaults(model_type: str) -> None:
    spec = derived_spec(model_type)
    assert spec is not None and spec.origin.startswith("derived from transformers 5.")
    required = _data(model_type)["required"]
    if required:
        # fields transformers computes that the spec cannot (a per-layer list): a config
        # without them is refused, naming the field, never guessed
        with pytest.raises(UnknownArchitecture, match=required[0]):
            _build(spec, _default_config(model_type), None)
        return
    m = _build(spec, _default_config(model_type), None)
    assert m.tensors and m.total_bytes > 0
    assert all(t.shape is not None for t in m.tensors.values())


def test_hand_written_specs_win() -> None:
    """The hand-written spec, its layouts first; at most the derived twin's own-entries
    layouts after them (tests/scan/test_lent_layouts.py)."""
    for mt in SPECS:
        spec = spec_of(mt)
        assert spec is not None and spec.tensors is SPECS[mt].tensors
        assert spec == dataclasses.replace(SPECS[mt], layouts=spec.layouts)
        assert spec.layouts[: len(SPECS[mt].layouts)] == SPECS[mt].layouts


def test_derived_spec_refuses_another_architecture() -> None:
    mt = next(m for m in DERIVED if m not in SPECS)
    config = _default_config(mt)
    config["architectures"] = ["SomethingForSequenceClassification"]
    with pytest.raises(UnknownArchitecture, match="SomethingForSequenceClassification"):
        build_manifest(config)


def test_derived_spec_refuses_another_text_model() -> None:
    with_requires = [m for m in DERIVED if _data(m).get("requires") and m not in SPECS]
    if not with_requires:
        pytest.skip("no derived family reads a sub-config's model type")
    mt = with_requires[0]
    config = _default_config(mt)
    dotted = sorted(_data(mt)["requires"])[0]
    sub, _, _ = dotted.partition(".")
    config[sub] = {**config.get(sub, {}), "model_type": "not-" + str(config[sub]["model_type"])}
    with pytest.raises(UnknownArchitecture, match="describes"):
        build_manifest(config)


REAL_CONFIGS = Path(__file__).parent / "data" / "real_configs"
QWEN3_VL_EMBEDDING = REAL_CONFIGS / "Qwen3-VL-Embedding-8B_qwen3_vl" / "config.json"


def test_a_family_own_sub_config_under_the_family_type_is_that_sub_config() -> None:
    """Qwen's Qwen3-VL files (written by transformers 4.57) name their vision_config's
    model_type "qwen3_vl", the family's own; transformers 5 builds Qwen3VLVisionConfig from
    it all the same (Qwen3VLConfig renames it on load). The real config builds: 36 text
    layers, 27 vision blocks, 3 deepstack mergers, an untied lm_head (the release's own index,
    SOURCE.txt, lacks only that). Another type there is still refused, and a sub-config
    transformers picks by its model_type (llava's text_config) accepts no such second name."""
    config = json.loads(QWEN3_VL_EMBEDDING.read_text())
    assert config["vision_config"]["model_type"] == "qwen3_vl"
    m = build_manifest(config)
    names = set(m.tensors)

    def count(prefix: str, suffix: str) -> int:
        return sum(1 for n in names if n.startswith(prefix) and n.endswith(suffix))

    assert count("model.language_model.layers.", ".input_layernorm.weight") == 36
    assert count("model.visual.blocks.", ".norm1.weight") == 27
    assert count("model.visual.deepstack_merger_list.", ".norm.weight") == 3
    assert m.tensors["lm_head.weight"].shape == (151936, 4096)
    assert len(names) == 750

    other = {**config, "vision_config": {**config["vision_config"], "model_type": "siglip"}}
    with pytest.raises(UnknownArchitecture, match="qwen3_vl_vision"):
        build_manifest(other)
    llava = _default_config("llava")
    llava["text_config"] = {**llava["text_config"], "model_type": "llava"}
    only_llama = r"describes text_config\.model_type 'llama' only"
    with pytest.raises(UnknownArchitecture, match=only_llama):
        build_manifest(llava)


REAL = Path(__file__).parent / "data" / "derived_models"
REAL_DIRS = (
    sorted(p for p in REAL.iterdir() if (p / "config.json").is_file()) if REAL.is_dir() else []
)


@pytest.mark.parametrize("model_dir", REAL_DIRS, ids=lambda p: p.name)
def test_derived_spec_matches_a_real_index(model_dir: Path) -> None:
    """Public config.json + model.safetensors.index.json pairs (SOURCE.txt beside them)."""
    config = json.loads((model_dir / "config.json").read_text())
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    spec = spec_of(config["model_type"])
    assert spec is not None and spec.origin.startswith("derived from transformers")
    if "dtype" not in config and "torch_dtype" not in config:
        config = {**config, "dtype": "bfloat16"}  # (SOURCE.txt: the files hold bfloat16)
    # in the layout a fresh save writes, or in an older one transformers still loads
    # (tests/scan/test_legacy_layouts.py says which): exactly one
    fits = [
        m
        for m in (build_manifest(config, lay.name) for lay in layouts(config))
        if set(m.tensors) == set(index["weight_map"])
    ]
    assert len(fits) == 1, [lay.name for lay in layouts(config)]
    assert fits[0].total_bytes == index["metadata"]["total_size"]


COUNTS = Path(__file__).parent / "data" / "derived_models_counts"
COUNT_DIRS = (
    sorted(p for p in COUNTS.iterdir() if (p / "config.json").is_file()) if COUNTS.is_dir() else []
)


@pytest.mark.parametrize("model_dir", COUNT_DIRS, ids=lambda p: p.name)
def test_derived_spec_matches_a_real_single_file_summary(model_dir: Path) -> None:
    """A public config.json beside a summary of its one-file checkpoint (no index: the
    tensor count, dtypes, parameter count and some shapes; SOURCE.txt beside them)."""
    config = json.loads((model_dir / "config.json").read_text())
    summary = json.loads((model_dir / "model_files.json").read_text())
    (entry,) = summary["model_files"]
    info = entry["tensor_info"]
    spec = spec_of(config["model_type"])
    assert spec is not None and spec.origin.startswith("derived from transformers")
    m = build_manifest(config)
    assert len(m.tensors) == entry["tensor_count"] == info["total_tensors"]
    assert {t.dtype for t in m.tensors.values()} == set(info["dtypes"])
    assert sum(math.prod(t.shape or ()) for t in m.tensors.values()) == info["total_parameters"]
    assert m.total_bytes == 2 * info["total_parameters"]  # (all BF16)
    for line in entry["sample_tensors"].splitlines():
        name, _, rest = line.strip().removeprefix("- ").partition(": shape=[")
        shape = tuple(int(d) for d in rest.partition("]")[0].split(","))
        assert m.tensors[name].shape == shape, name


def _copy_save(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _status(path: Path, oracle: Any = "auto") -> tuple[str, list[str]]:
    report = scan([path], oracle=oracle)
    assert len(report.checkpoints) == 1
    c = report.checkpoints[0]
    return c.status, [f.code for f in c.findings]


def _rewrite_without(path: Path, drop: Any) -> list[str]:
    """Write ``path``'s model.safetensors again without the tensors ``drop(name)`` selects
    (header and data rewritten consistently, as a writer that lost them would)."""
    return rewrite_without(path / "model.safetensors", drop)


@pytest.mark.parametrize("family", TINY)
def test_tiny_real_save_pass_and_fail(tmp_path: Path, family: str) -> None:
    healthy = _copy_save(SAVES / family, tmp_path / "healthy")
    status, codes = _status(healthy)
    assert status == "pass", codes

    one = _copy_save(SAVES / family, tmp_path / "tensor")
    picked: list[str] = []

    def first_norm(n: str) -> bool:  # one tensor: the first such (llama4's text, not vision)
        if picked or not (
            n.endswith("layers.1.post_attention_layernorm.weight")
            or n.endswith("layers.1.ffn_norm.weight")  # (lfm2)
            or n.endswith("h.1.ln_2.weight")
            or n.endswith("layer.1.output.dense.weight")
            or n.endswith("block.1.layer.1.layer_norm.weight")  # t5's encoder
        ):
            return False
        picked.append(n)
        return True

    removed = _rewrite_without(one, first_norm)
    assert len(removed) == 1, removed
    status, codes = _status(one)
    assert status == "fail" and "base-weights-missing" in codes, codes

    layer = _copy_save(SAVES / family, tmp_path / "layer")
    removed = _rewrite_without(
        layer, lambda n: ".layers.1." in n or ".h.1." in n or ".layer.1." in n
    )
    assert len(removed) > 3
    status, codes = _status(layer)
    assert status == "fail" and "base-weights-missing" in codes, codes

    # a field the spec needs and transformers fills in itself when a config leaves it out
    # (a per-layer list): the same healthy save whose config lacks it is never a PASS
    required = _data(family)["required"] if family in DERIVED else []
    if required:
        lacking = _copy_save(SAVES / family, tmp_path / "lacking")
        config = json.loads((lacking / "config.json").read_text())
        for name in required:  # "text_config.moe_layers": a member of a nested config
            *outer, leaf = name.split(".")
            holder = config
            for part in outer:
                holder = holder.get(part, {})
            holder.pop(leaf, None)
        (lacking / "config.json").write_text(json.dumps(config))
        status, codes = _status(lacking, oracle=None)  # as without torch
        assert status != "pass" and "unknown-architecture" in codes, codes


@pytest.mark.skipif("granitemoehybrid" not in TINY, reason="no tiny granitemoehybrid save")
def test_legacy_layer_type_names_read_as_transformers_reads_them(tmp_path: Path) -> None:
    """granite-4.0-h's config.json names its layer types "mamba" and "attention" (some under
    the older key layers_block_type): transformers renames them when it reads the config
    (loading.json's ``values`` and ``aliases``, derived from it), and so does the spec; the
    same names in the other order describe another model."""
    saved = json.loads((SAVES / "granitemoehybrid" / "config.json").read_text())
    assert saved["layer_types"] == ["linear_attention", "full_attention"]
    for key, types, want in (
        ("layer_types", ["mamba", "attention"], "pass"),
        ("layers_block_type", ["mamba", "attention"], "pass"),
        ("layer_types", ["attention", "mamba"], "fail"),
    ):
        copy = _copy_save(SAVES / "granitemoehybrid", tmp_path / f"{key}-{types[0]}")
        config = {k: v for k, v in saved.items() if k != "layer_types"}
        config[key] = types
        (copy / "config.json").write_text(json.dumps(config))
        status, codes = _status(copy, oracle=None)  # as without torch
        assert status == want, (key, types, codes)


# -- with torch and transformers -------------------------------------------------------------

needs_torch = pytest.mark.skipif(
    os.environ.get("PYAUDIT_NO_TORCH_TESTS") == "1", reason="torch tests switched off"
)


@pytest.fixture(scope="module")
def tf() -> Any:
    """torch + transformers, when the installed transformers is the one the data records
    (another version may save differently: the drift check below says so)."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pyaudit.manifest.generate import Env

    recorded = {_data(m)["derived_from"]["transformers"] for m in DERIVED}
    if transformers.__version__ not in recorded:
        pytest.skip(
            f"data derived from transformers {sorted(recorded)}, "
            f"{transformers.__version__} installed"
        )
    return Env()


def _other_points(tf: Any, model_type: str) -> list[dict[str, Any]]:
    """Two configs the generator never saw: several fields changed at once."""
    return [alts[0] for alts in _other_point_choices(tf, model_type)]


def _other_point_choices(tf: Any, model_type: str) -> list[list[dict[str, Any]]]:
    """For each of the two unseen points, its config and, after it, the same with one count
    field left at its default (for a family transformers cannot build with every count
    equal: gemma3n's KV-shared layers must be fewer than its layers)."""
    from pyaudit.manifest.generate import _COUNT, fields_of, get

    first = _class_defaults(tf, model_type)
    default = tf.config(model_type, first).to_dict()
    counts = [
        p
        for p in fields_of(default)
        if _COUNT.search(p[-1])
        and isinstance(get(default, p), int)
        and not isinstance(get(default, p), bool)
        and get(default, p) > 1
    ]
    out = []
    for n, flip in ((3, True), (5, False)):
        alts = []
        for keep in [None, *counts]:
            varied = [p for p in counts if p != keep]
            kwargs = _point_kwargs(tf, model_type, default, varied, n, flip, first)
            if kwargs is not None and kwargs not in alts:
                alts.append(kwargs)
        if alts:
            out.append(alts)
    return out


def _point_kwargs(
    tf: Any,
    model_type: str,
    default: dict[str, Any],
    counts: list[Any],
    n: int,
    flip: bool,
    first: dict[str, Any],
) -> dict[str, Any] | None:
    from pyaudit.manifest.generate import fields_of, get, kwargs_for

    flips = [p for p in fields_of(default) if p[-1] == "tie_word_embeddings"]
    kwargs: dict[str, Any] = dict(first)
    try:
        for p in counts:
            cfg = tf.config(model_type, kwargs)
            kwargs = _merge(kwargs, kwargs_for(cfg, p, n))
        if flip:
            for p in flips:
                cfg = tf.config(model_type, kwargs)
                kwargs = _merge(kwargs, kwargs_for(cfg, p, not get(default, p)))
    except Exception:
        return None
    return kwargs


def _class_defaults(tf: Any, model_type: str) -> dict[str, Any]:
    """The config arguments of the family's class-default point: none, or the fields null at
    the class defaults that transformers cannot build with, filled as its modeling file
    computes them (``defaults_filled``, recorded by the generator)."""
    from pyaudit.manifest.generate import class_defaults

    return class_defaults(tf, _data(model_type))


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    from pyaudit.manifest.generate import _merge_kwargs

    return _merge_kwargs(a, b)


@needs_torch
@pytest.mark.parametrize("model_type", DERIVED)
def test_manifest_is_what_transformers_saves(tf: Any, model_type: str) -> None:
    from pyaudit.manifest.generate import point_config, verify

    data = _data(model_type)
    cls = getattr(tf.transformers, data["architecture"])
    first = _class_defaults(tf, model_type)
    saves = [("class defaults", tf.save(cls, tf.config(model_type, first)))]
    for alts in _other_point_choices(tf, model_type):
        for kwargs in alts:
            try:
                cfg = tf.config(model_type, kwargs)
                saves.append((json.dumps(kwargs, default=str)[:200], tf.save(cls, cfg)))
            except Exception:
                continue
            break
    assert verify(data, saves) == []
    # and through the public entry point (hand-written specs excepted: they may pick
    # another healthy layout first)
    if model_type not in SPECS:
        for _, saved in saves:
            m = build_manifest(point_config(saved.env))
            assert {n: (t.shape, t.dtype) for n, t in m.tensors.items()} == saved.tensors
    # a per-layer list the spec fills in as transformers does (a config.json without it,
    # as Qwen3-Next's own): the same manifest
    fills = [f for f, text in data["let"].items() if " for i in range(" in text]
    for _, saved in saves:
        for field in fills:
            config = point_config(saved.env)
            config.pop(field, None)
            m = build_manifest(config)
            assert {n: (t.shape, t.dtype) for n, t in m.tensors.items()} == saved.tensors
    assert len(saves) >= 2


def test_tiny_real_gated_t5_save_names_wi_0_and_wi_1(tmp_path: Path) -> None:
    """FLAN-T5's feed-forward (``feed_forward_proj`` "gated-gelu"): ``wi_0`` and ``wi_1``, no
    ``wi``; a save that lost one ``wi_1`` fails, and so does the same save whose config says
    "relu" (the spec then wants ``wi``), or one whose config.json names only the
    ``feed_forward_proj`` (as configs written before transformers saved ``is_gated_act``)."""
    names = set(build_manifest(json.loads((SAVES / "t5" / "config.json").read_text())).tensors)
    assert "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in names
    assert "decoder.block.1.layer.2.DenseReluDense.wi_1.weight" in names
    assert not any(".wi.weight" in n for n in names)

    older = _copy_save(SAVES / "t5", tmp_path / "older")
    config = json.loads((older / "config.json").read_text())
    for field in ("is_gated_act", "dense_act_fn", "scale_decoder_outputs"):
        config.pop(field)
    (older / "config.json").write_text(json.dumps(config))
    status, codes = _status(older, oracle=None)
    assert status == "pass", codes

    lost = _copy_save(SAVES / "t5", tmp_path / "lost")
    wi_1 = "decoder.block.1.layer.2.DenseReluDense.wi_1.weight"
    removed = _rewrite_without(lost, lambda n: n == wi_1)
    assert len(removed) == 1
    status, codes = _status(lost, oracle=None)
    assert status == "fail" and "base-weights-missing" in codes, codes

    relu = _copy_save(SAVES / "t5", tmp_path / "relu")
    config["feed_forward_proj"] = "relu"
    (relu / "config.json").write_text(json.dumps(config))
    status, codes = _status(relu, oracle=None)
    assert status == "fail" and "base-weights-missing" in codes, codes


#: (family, feed_forward_proj or encoder_attention_type) at the unseen points; "gated-silu"
#: (UL2's) is a value the generator never built
STRING_POINTS = [
    ("t5", {"feed_forward_proj": "gated-gelu"}),
    ("t5", {"feed_forward_proj": "gated-silu"}),
    ("t5", {"feed_forward_proj": "relu"}),
    ("mt5", {"feed_forward_proj": "relu"}),
    ("mt5", {"feed_forward_proj": "gated-silu"}),
    ("umt5", {"feed_forward_proj": "relu"}),
    ("longt5", {"feed_forward_proj": "gated-gelu", "encoder_attention_type": "transient-global"}),
    ("internvl", {"vision_config": {"norm_type": "rms_norm"}}),
    ("llava_next_video", {"spatial_pool_mode": "conv"}),
]


@needs_torch
@pytest.mark.parametrize(("model_type", "values"), STRING_POINTS, ids=lambda v: str(v))
def test_string_field_at_unseen_points_is_what_transformers_saves(
    tf: Any, model_type: str, values: dict[str, Any]
) -> None:
    """A string field that changes the saved structure (T5's gated feed-forward), set at the
    two unseen points, and read from a config.json without the fields transformers derives
    from it (``is_gated_act``, ``dense_act_fn``): the manifest is what transformers saves."""
    from pyaudit.manifest.generate import point_config, verify

    data = _data(model_type)
    cls = getattr(tf.transformers, data["architecture"])
    saves = []
    for kwargs in _other_points(tf, model_type):
        cfg = tf.config(model_type, _merge(kwargs, values))
        saves.append((json.dumps(values), tf.save(cls, cfg)))
    assert len(saves) == 2 and verify(data, saves) == []
    for _, saved in saves:
        config = point_config(saved.env)
        for field in ("is_gated_act", "dense_act_fn"):
            config.pop(field, None)
        m = build_manifest(config)
        assert {n: (t.shape, t.dtype) for n, t in m.tensors.items()} == saved.tensors


@needs_torch
@pytest.mark.parametrize("model_type", sorted(set(SPECS) & set(DERIVED)))
def test_hand_written_and_derived_specs_agree(tf: Any, model_type: str) -> None:
    from pyaudit.manifest.generate import point_config

    derived = derived_spec(model_type)
    assert derived is not None
    configs = [point_config(tf.config(model_type, _class_defaults(tf, model_type)).to_dict())]
    configs += [
        point_config(tf.config(model_type, kw).to_dict()) for kw in _other_points(tf, model_type)
    ]
    for config in configs:
        want = {n: (t.shape, t.dtype) for n, t in _build(derived, config, None).tensors.items()}
        fits = []
        for lay in layouts(config):
            got = {
                n: (t.shape, t.dtype) for n, t in build_manifest(config, lay.name).tensors.items()
            }
            fits.append(got == want)
        assert any(fits), model_type


#: Layouts derived from transformers' conversion mapping for families whose hand-written spec
#: was typed with its layouts (their derived specs are held out): derived name -> hand-written
#: layout it must equal (None: one the hand-written spec does not list).
HAND_LAYOUTS: dict[str, dict[str, str | None]] = {
    "qwen2_vl": {"module-tree": "transformers>=4.52"},
    "qwen2_5_vl": {"module-tree": "transformers>=4.52"},
    "gemma3": {
        "legacy": "legacy",
        "module-tree": None,
        "module-tree-prefixed": "transformers>=4.52",
    },
}


@needs_torch
@pytest.mark.parametrize("model_type", [*HAND_LAYOUTS, "llava"])
def test_derived_layouts_are_layouts_a_spec_knows(tf: Any, model_type: str) -> None:
    """The layouts the generator derives at the class defaults are the hand-written spec's
    other layouts, and for llava the committed data's; each is what a model transformers
    loaded from it saves again."""
    from pyaudit.manifest.generate import apply_rules, derive_layouts, point_config

    cls, _ = tf.model_class(model_type)
    cfg = tf.config(model_type, {})
    fresh = tf.save(cls, cfg)
    derived, _, saves = derive_layouts(tf, cls, cfg, fresh)
    config = point_config(fresh.env)
    if model_type in HAND_LAYOUTS:
        assert {x["name"] for x in derived} == set(HAND_LAYOUTS[model_type])
    else:
        assert [x["name"] for x in derived] == [
            x.name for x in derived_spec(model_type).layouts[1:]
        ]
    for lay in derived:
        names = {apply_rules(lay["renames"], n) for n in fresh.tensors}
        assert names == set(saves[lay["name"]].tensors)
        known = HAND_LAYOUTS.get(model_type, {}).get(lay["name"], lay["name"])
        if known is not None:
            assert set(build_manifest(config, known).tensors) == names, (model_type, lay)
    if model_type == "gemma3":
        # medgemma-27b-it's real index is the fresh save's names under the derived legacy rules
        d = Path(__file__).parent / "data" / "models" / "medgemma-27b-it_gemma3"
        real = json.loads((d / "config.json").read_text())
        index = json.loads((d / "model.safetensors.index.json").read_text())
        (legacy,) = [x for x in derived if x["name"] == "legacy"]
        fresh_names = build_manifest(real, "transformers>=5").tensors
        assert {apply_rules(legacy["renames"], n) for n in fresh_names} == set(index["weight_map"])


OWN_ENTRIES = sorted(
    mt for mt in DERIVED if any("tensors" in x for x in _data(mt).get("layouts", []))
)


@needs_torch
@pytest.mark.parametrize("model_type", OWN_ENTRIES)
def test_module_tree_entries_are_what_a_plain_state_dict_holds(tf: Any, model_type: str) -> None:
    """A layout with its own entries (per-expert tensors stacked, as the model holds them) is
    what the model's state_dict() holds, names, shapes and dtypes, at the class defaults and
    at a point the generator never saw."""
    from pyaudit.manifest.generate import point_config

    derived = derived_spec(model_type)
    assert derived is not None
    cls = getattr(tf.transformers, _data(model_type)["architecture"])
    kwargs = [_class_defaults(tf, model_type), *_other_points(tf, model_type)[:1]]
    tf.module_names = True
    try:
        saves = [tf.save(cls, tf.config(model_type, kw)) for kw in kwargs]
    finally:
        tf.module_names = False
    for saved in saves:
        m = _build(derived, point_config(saved.env), "module-tree")
        assert {n: (t.shape, t.dtype) for n, t in m.tensors.items()} == saved.tensors


@needs_torch
def test_generator_output_has_not_drifted(tf: Any) -> None:
    from pyaudit.manifest.generate import derive_family, dump

    sample = [
        m for m in ("llama", "gpt2", "bert", "t5", "olmo2", "starcoder2", "llava") if m in DERIVED
    ]
    if not sample:
        pytest.skip("none of the sampled families is derived")
    recorded = _data(sample[0])["derived_from"]["transformers"]
    if tf.versions["transformers"] != recorded:
        pytest.skip(
            f"data derived from transformers {recorded}, {tf.versions['transformers']} installed"
        )
    for mt in sample:
        text = dump(derive_family(tf, mt, log=lambda s: None))
        assert text == (GENERATED_DIR / f"{mt}.json").read_text(), (
            f"{mt}: rerun python -m pyaudit.manifest.generate {mt}"
        )


def test_architectures_list_is_current() -> None:
    from pyaudit.manifest.derived import architectures_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURES.md"
    assert doc.read_text() == architectures_markdown(sorted(SPECS)), (
        "rerun python -m pyaudit.manifest.generate --list docs/ARCHITECTURES.md"
    )


def test_gpt_oss_mxfp4_overlay_composes_with_the_derived_spec() -> None:
    if "gpt_oss" not in DERIVED:
        pytest.skip("gpt_oss not derived")
    # openai/gpt-oss-20b's dims; its config declares no dtype and quant_method mxfp4.
    config = {
        "model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"], "hidden_size": 2880,
        "intermediate_size": 2880, "num_hidden_layers": 24, "num_attention_heads": 64,
        "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 32,
        "vocab_size": 201088, "attention_bias": True, "tie_word_embeddings": False,
        "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
            "lm_head"]},
    }  # fmt: skip
    m = build_manifest(config)
    assert m.quantization == "mxfp4" and m.dtype == "BF16"
    e = "model.layers.0.mlp.experts."
    assert m.tensors[e + "gate_up_proj_blocks"].shape == (32, 5760, 90, 16)
    assert m.tensors[e + "gate_up_proj_scales"].shape == (32, 5760, 90)
    assert m.tensors[e + "down_proj_blocks"].shape == (32, 2880, 90, 16)
    assert m.tensors[e + "down_proj_scales"].dtype == "U8"
    assert m.tensors[e + "gate_up_proj_bias"].dtype == "BF16"
    assert e + "gate_up_proj" not in m.tensors
    assert m.tensors["model.layers.0.self_attn.q_proj.weight"].dtype == "BF16"


def test_readme_states_the_derived_count_and_version() -> None:
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    versions = sorted({_data(m)["derived_from"]["transformers"] for m in DERIVED})
    assert len(versions) == 1, versions
    assert (
        f"{len(DERIVED)} model types have a spec derived from transformers {versions[0]}" in readme
    ), "README's Families section: say how many model types are derived, from which version"


def test_real_bloom_index_laid_out_full_size_passes_and_a_layer_lost_fails(tmp_path: Path) -> None:
    """bigscience/bloom's own layout at full size (352 GB of holes): the names its index
    gives (saved by BloomModel: no ``transformer.`` prefix), the config's ``n_embed``
    spelling, bfloat16 data. PASS; with layer 35 gone from its shard, FAIL naming it."""
    from pyaudit.testing.stores import manifest_tensors, write_checkpoint

    real = REAL / "bloom_bloom"
    config = json.loads((real / "config.json").read_text())
    index = json.loads((real / "model.safetensors.index.json").read_text())
    [base] = [lay.name for lay in layouts(config) if lay.name.startswith("base model")]
    tensors = manifest_tensors({**config, "dtype": "bfloat16"}, base)
    assert set(tensors) == set(index["weight_map"])
    healthy = tmp_path / "healthy"
    write_checkpoint(healthy, config, tensors, weight_map=index["weight_map"])
    (c,) = scan([healthy]).checkpoints
    assert c.status == "pass", [(f.code, f.message) for f in c.findings]
    assert c.layout == base and c.bytes.get("found") == index["metadata"]["total_size"]

    broken = tmp_path / "broken"
    kept = {n: t for n, t in tensors.items() if not n.startswith("h.35.")}
    weight_map = {n: f for n, f in index["weight_map"].items() if n in kept}
    write_checkpoint(broken, config, kept, weight_map=weight_map)
    (c,) = scan([broken]).checkpoints
    assert c.status == "fail"
    missing = [f for f in c.findings if f.code == "base-weights-missing"]
    assert missing and missing[0].count == 12 and "h.35" in missing[0].message


#: Real pairs laid out at full size below: pair -> (one tensor, one layer) to lose.
FULL_SIZE = {
    # OLMo-2-1124-13B, float32, 55 GB of holes: its per-projection q_norm, one layer of 40
    "OLMo-2-1124-13B_olmo2": ("model.layers.17.self_attn.q_norm.weight", "model.layers.23."),
    # gpt-oss-20b as released, experts MXFP4 (uint8 blocks and scales): one scales tensor
    "gpt-oss-20b_gpt_oss": ("model.layers.5.mlp.experts.down_proj_scales", "model.layers.11."),
    # Phi-tiny-MoE (config names the remote-code PhiMoEForCausalLM): one expert, one layer
    "Phi-tiny-MoE_phimoe": (
        "model.layers.9.block_sparse_moe.experts.11.w2.weight",
        "model.layers.30.",
    ),
}


@pytest.mark.parametrize("pair", sorted(FULL_SIZE))
def test_real_index_laid_out_full_size_passes_and_a_loss_fails(tmp_path: Path, pair: str) -> None:
    """A real release's own layout at full size: each shard's header holds the names its
    index gives there, with the manifest's shapes and dtypes, the data a hole; the real index
    beside the shards. PASS; without one tensor, or one layer, from its shard (the index still
    naming it: a save that lost it), FAIL naming what is missing."""
    from pyaudit.testing.stores import manifest_tensors, write_checkpoint

    real = REAL / pair
    config = json.loads((real / "config.json").read_text())
    index = json.loads((real / "model.safetensors.index.json").read_text())
    tensors = manifest_tensors(config)
    assert set(tensors) == set(index["weight_map"])

    def laid_out(name: str, lost: list[str]) -> Path:
        out = tmp_path / name
        kept = {n: f for n, f in index["weight_map"].items() if n not in lost}
        write_checkpoint(out, config, {n: tensors[n] for n in kept}, weight_map=kept)
        shutil.copy(real / "model.safetensors.index.json", out)
        assert sum(p.stat().st_blocks * 512 for p in out.glob("*.safetensors")) < 64 * 2**20
        return out

    (c,) = scan([laid_out("healthy", [])]).checkpoints
    assert c.status == "pass", [(f.code, f.message) for f in c.findings]
    assert c.layout == "default" and c.bytes.get("found") == index["metadata"]["total_size"]

    one, layer = FULL_SIZE[pair]
    assert one in index["weight_map"]
    lost_layer = sorted(n for n in index["weight_map"] if n.startswith(layer))
    assert len(lost_layer) > 3
    for name, lost in (("tensor", [one]), ("layer", lost_layer)):
        (c,) = scan([laid_out(name, lost)]).checkpoints
        assert c.status == "fail", name
        (missing,) = [f for f in c.findings if f.code == "base-weights-missing"]
        assert missing.count == len(lost) and set(missing.tensors) <= set(lost), name
        assert (one if name == "tensor" else layer) in missing.message, missing.message


def test_loading_rules_are_what_the_installed_transformers_gives() -> None:
    """pyaudit/manifest/loading.json (config spellings, base-model prefixes) against the
    installed transformers (skipped when it is not the version the file records)."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pyaudit.manifest import generate_loading
    from pyaudit.manifest.derived import LOADING_FILE

    recorded = json.loads(LOADING_FILE.read_text())
    if recorded["derived_from"]["transformers"] != transformers.__version__:
        pytest.skip(f"loading.json is from transformers {recorded['derived_from']}")
    assert generate_loading.dump(generate_loading.derive_all()) == LOADING_FILE.read_text()
    # what the real bigscience/bloom config needs
    assert recorded["families"]["bloom"]["aliases"]["n_embed"] == "hidden_size"
    assert recorded["families"]["bloom"]["base_model_prefix"] == "transformer"


def test_a_config_naming_no_dtype_holds_no_dtype_against_the_files(tmp_path: Path) -> None:
    """transformers 5 loads such a checkpoint in its files' own dtype: no dtype-drift; the
    same files under a config that names float32 do drift."""
    from pyaudit.testing.stores import manifest_tensors, write_checkpoint

    config = json.loads((REAL / "bloom_bloom" / "config.json").read_text())
    small = {**config, "n_embed": 64, "n_layer": 3, "vocab_size": 128}
    tensors = manifest_tensors({**small, "dtype": "bfloat16"})
    write_checkpoint(tmp_path / "none", small, tensors)
    write_checkpoint(tmp_path / "fp32", {**small, "dtype": "float32"}, tensors)
    by_name = {Path(c.path).name: c for c in scan([tmp_path]).checkpoints}
    assert by_name["none"].status == "pass", by_name["none"].findings
    assert [f.code for f in by_name["fp32"].findings] == ["dtype-drift"]

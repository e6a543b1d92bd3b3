"""pyaudit.oracle: transformers' own save_pretrained, run on the meta device, as a second opinion.

Cross-checks every spec against the installed transformers: for each real checkpoint in
``tests/data/models`` and for small configs of families without one, the oracle's tensors
(names, shapes, dtypes) must equal the index and ``build_manifest`` for the matching layout.
Two oracle modes are checked: a model built fresh from the config then saved, and a round trip
(``source_names``: as loaded by ``from_pretrained`` from a checkpoint holding those names, then
saved). Known disagreements between transformers' writes and a spec are spelled out in
``KNOWN`` with the exact tensors, so that a fix on either side shows up as a strict XPASS.

Skipped without torch/transformers. All oracle answers come from one worker process
(``oracle_manifests``), computed once per module.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import realdata

from pyaudit.manifest import build_manifest, layouts, load_config
from pyaudit.oracle import OracleResult, OracleUnavailable, oracle_manifest, oracle_manifests

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
    pytest.skip("the oracle needs torch and transformers", allow_module_level=True)

SHARED_MODELS = realdata.MODELS
MODEL_DIRS = realdata.model_dirs()

# -- small configs of families without a shared checkpoint (dims shrunk; same structure) --------

QWEN3_MOE: dict[str, Any] = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "torch_dtype": "bfloat16",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [1],
    "tie_word_embeddings": False,
    "max_position_embeddings": 512,
}
DEEPSEEK_V3: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "torch_dtype": "bfloat16",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 2,
    "topk_group": 1,
    "q_lora_rank": 32,
    "kv_lora_rank": 16,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "num_nextn_predict_layers": 0,
    "tie_word_embeddings": False,
    "max_position_embeddings": 512,
}
GEMMA3: dict[str, Any] = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "torch_dtype": "bfloat16",
    "mm_tokens_per_image": 4,
    "boi_token_index": 250,
    "eoi_token_index": 251,
    "image_token_index": 252,
    "text_config": {
        "model_type": "gemma3_text",
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "sliding_window": 32,
        "max_position_embeddings": 512,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
        "vision_use_head": False,
    },
}
TINY_LLAMA: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "torch_dtype": "bfloat16",
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": False,
    "max_position_embeddings": 128,
}
TINY_QWEN2: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "torch_dtype": "float16",
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
    "max_position_embeddings": 128,
}
TINY_MIXTRAL: dict[str, Any] = {
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "tie_word_embeddings": False,
    "max_position_embeddings": 128,
}  # no dtype: float32

#: hidden_size not divisible by the heads: transformers raises while building the model.
ODD: dict[str, Any] = {**TINY_LLAMA, "hidden_size": 30, "num_attention_heads": 4, "vocab_size": 95}

EXTRA: dict[str, dict[str, Any]] = {
    "qwen3_moe": QWEN3_MOE,
    "deepseek_v3": DEEPSEEK_V3,
    "deepseek_v3-mtp": {**DEEPSEEK_V3, "num_nextn_predict_layers": 1},
    "deepseek_v3-no-q-lora": {**DEEPSEEK_V3, "q_lora_rank": None, "first_k_dense_replace": 0},
    "gemma3": GEMMA3,
    "tiny-llama": TINY_LLAMA,
    "tiny-qwen2": TINY_QWEN2,
    "tiny-mixtral": TINY_MIXTRAL,
}
REAL_SAVE = ["tiny-llama", "tiny-qwen2", "tiny-mixtral", "qwen3_moe", "deepseek_v3", "gemma3"]

# -- where transformers 5 and a spec disagree, exactly (see the reasons) --------------------------

_DEEPSEEK_GATE = (
    "transformers 5 keeps the DeepSeek-V3 router mlp.gate.weight in float32 (created so, and "
    "_keep_in_fp32_modules_strict on load) and writes it F32; the spec says the config dtype "
    "(BF16), as in DeepSeek's own release"
)
#: (case label, check) -> reason; those checks are strict xfails.
KNOWN: dict[tuple[str, str], str] = {
    ("deepseek_v3", "dtypes"): _DEEPSEEK_GATE,
    ("deepseek_v3", "fresh"): _DEEPSEEK_GATE,
    ("deepseek_v3-mtp", "fresh"): _DEEPSEEK_GATE,
    ("deepseek_v3-no-q-lora", "fresh"): _DEEPSEEK_GATE,
    ("deepseek_v3-mtp", "dtypes"): _DEEPSEEK_GATE,
    ("deepseek_v3-no-q-lora", "dtypes"): _DEEPSEEK_GATE,
}


def _known(request: pytest.FixtureRequest, label: str, check: str) -> None:
    reason = KNOWN.get((label, check))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


# -- one worker for everything ------------------------------------------------------------------


def _shared(d: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    index = json.loads((d / "model.safetensors.index.json").read_text())
    return load_config(d), index


def _cases() -> dict[str, dict[str, Any]]:
    cases = {d.name: load_config(d) for d in MODEL_DIRS}
    cases.update(EXTRA)
    return cases


@pytest.fixture(scope="module")
def oracle() -> dict[tuple[str, str], OracleResult | OracleUnavailable]:
    """(case, mode) -> the oracle's answer. Modes: "fresh"; "index" (round trip of the real
    index's names); "layout:<name>" (round trip of build_manifest's names in that layout)."""
    keys: list[tuple[str, str]] = []
    configs: list[dict[str, Any]] = []
    names: list[list[str] | None] = []
    for label, config in _cases().items():
        keys.append((label, "fresh"))
        configs.append(config)
        names.append(None)
        d = SHARED_MODELS / label
        if (d / "model.safetensors.index.json").is_file():
            keys.append((label, "index"))
            configs.append(config)
            names.append(list(_shared(d)[1]["weight_map"]))
        for lay in layouts(config):
            keys.append((label, f"layout:{lay.name}"))
            configs.append(config)
            names.append(list(build_manifest(config, lay.name).tensors))
    keys.append(("odd", "fresh"))  # fails inside transformers: see the failure-mode tests
    configs.append(ODD)
    names.append(None)
    started = time.monotonic()
    results = oracle_manifests(configs, timeout=120, source_names=names)
    print(f"oracle: {len(configs)} answers in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return dict(zip(keys, results, strict=True))


def _get(oracle: dict[tuple[str, str], Any], label: str, mode: str) -> OracleResult:
    result = oracle[(label, mode)]
    if isinstance(result, OracleUnavailable):
        pytest.fail(f"oracle unavailable for {label} ({mode}): {result.kind}: {result}")
    return result


def _norm(name: str) -> str:
    return re.sub(r"\.\d+(?=\.|$)", ".N", name)


def _name_diff(what_a: str, a: set[str], what_b: str, b: set[str]) -> str:
    """Readable difference of two name sets: layer indices folded, counts, a few examples."""
    lines = []
    for what, only in ((f"only in {what_a}", a - b), (f"only in {what_b}", b - a)):
        if not only:
            continue
        folded = Counter(_norm(n) for n in only)
        lines.append(f"{len(only)} {what}:")
        for pattern, count in folded.most_common(8):
            example = next(n for n in sorted(only) if _norm(n) == pattern)
            lines.append(f"  {count:4d} x {pattern}   (e.g. {example})")
        if len(folded) > 8:
            lines.append(f"  ... {len(folded) - 8} more patterns")
    return "\n".join(lines)


def _tensor_diff(
    result: OracleResult, config: dict[str, Any], layout: str, skip_groups: tuple[str, ...] = ()
) -> str:
    """Names, shapes and dtypes of the oracle vs build_manifest(config, layout)."""
    m = build_manifest(config, layout)
    spec = dict(m.tensors)
    for group in skip_groups:
        for name in m.groups.get(group, ()):
            spec.pop(name, None)
    problems = []
    names = _name_diff("transformers", set(result.tensors), f"spec {layout!r}", set(spec))
    if names:
        problems.append(names)
    for name in sorted(set(result.tensors) & set(spec)):
        shape, dtype = result.tensors[name]
        want = spec[name]
        if (want.shape is not None and tuple(want.shape) != shape) or want.dtype != dtype:
            problems.append(
                f"{name}: transformers writes {list(shape)} {dtype}, "
                f"spec says {None if want.shape is None else list(want.shape)} {want.dtype}"
            )
    # Tied: the same written tensors carry the ties. (The name of a tensor left out is the one
    # transformers would give it if written: in a round trip that depends on whether the source
    # checkpoint held it, e.g. gemma3 legacy "lm_head.weight" vs "language_model.lm_head.weight".)
    if sorted(result.tied.values()) != sorted(m.tied.values()):
        problems.append(f"tied: transformers drops {result.tied}, spec says {m.tied}")
    return "\n".join(problems[:30])


def _matching_layout(config: dict[str, Any], names: set[str]) -> str | None:
    for lay in layouts(config):
        if set(build_manifest(config, lay.name).tensors) == names:
            return lay.name
    return None


# -- real checkpoints ---------------------------------------------------------------------------

SHARED_IDS = [d.name for d in MODEL_DIRS]


@pytest.mark.parametrize("label", SHARED_IDS)
def test_round_trip_of_real_checkpoint_equals_its_index(oracle: Any, label: str) -> None:
    """Loaded from a checkpoint with these names and saved: transformers writes the same names,
    and the same total bytes as the index's metadata.total_size."""
    _config, index = _shared(SHARED_MODELS / label)
    result = _get(oracle, label, "index")
    wm = set(index["weight_map"])
    diff = _name_diff("transformers' save", set(result.tensors), "the index", wm)
    assert not diff, f"{label}:\n{diff}"
    assert result.total_bytes == index["metadata"]["total_size"]


@pytest.mark.parametrize("label", SHARED_IDS)
def test_real_checkpoint_spec_equals_transformers(oracle: Any, label: str) -> None:
    """The spec layout that names the index equals transformers' round trip, tensor by tensor."""
    config, index = _shared(SHARED_MODELS / label)
    layout = _matching_layout(config, set(index["weight_map"]))
    assert layout is not None, f"{label}: no pyaudit layout names the index"
    diff = _tensor_diff(_get(oracle, label, "index"), config, layout)
    assert not diff, f"{label} ({layout}):\n{diff}"


# -- every family, every layout -----------------------------------------------------------------

ALL_IDS = SHARED_IDS + list(EXTRA)


def _case_config(label: str) -> dict[str, Any]:
    return EXTRA[label] if label in EXTRA else load_config(SHARED_MODELS / label)


def _spec_skip(label: str) -> tuple[str, ...]:
    # transformers neither loads nor writes DeepSeek's multi-token-prediction layers; the spec
    # lists them (the official release holds them) in their own "mtp" section.
    return ("mtp",) if label.startswith("deepseek_v3") else ()


@pytest.mark.parametrize("label", ALL_IDS)
def test_fresh_save_is_a_spec_layout(
    oracle: Any, label: str, request: pytest.FixtureRequest
) -> None:
    """A model built by transformers from this config and saved: its names are one of the
    spec's layouts (transformers 5's own naming for new checkpoints), with the spec's shapes
    and dtypes."""
    _known(request, label, "fresh")
    config = _case_config(label)
    result = _get(oracle, label, "fresh")
    names = set(result.tensors)
    skip = _spec_skip(label)
    diffs = []
    for lay in layouts(config):
        m = build_manifest(config, lay.name)
        spec = set(m.tensors) - {n for g in skip for n in m.groups.get(g, ())}
        if spec == names:
            diff = _tensor_diff(result, config, lay.name, skip)
            assert not diff, f"{label} (fresh save, layout {lay.name!r}):\n{diff}"
            return
        diffs.append(f"vs layout {lay.name!r}:\n" + _name_diff("transformers", names, "spec", spec))
    pytest.fail(f"{label}: transformers' fresh save is no spec layout\n" + "\n".join(diffs))


@pytest.mark.parametrize("label", ALL_IDS)
def test_every_layout_round_trips_with_equal_tensors(
    oracle: Any, label: str, request: pytest.FixtureRequest
) -> None:
    """For each spec layout: transformers loading a checkpoint in it and saving again writes that
    layout back, with the spec's shapes and dtypes."""
    _known(request, label, "dtypes")
    config = _case_config(label)
    problems = []
    for lay in layouts(config):
        diff = _tensor_diff(
            _get(oracle, label, f"layout:{lay.name}"), config, lay.name, _spec_skip(label)
        )
        if diff:
            problems.append(f"layout {lay.name!r}:\n{diff}")
    assert not problems, f"{label}:\n" + "\n".join(problems)


def test_deepseek_v3_router_is_written_f32_by_transformers(oracle: Any) -> None:
    """The one dtype disagreement, pinned: everything else in the DeepSeek-V3 round trip
    matches the spec."""
    result = _get(oracle, "deepseek_v3", "layout:default")
    m = build_manifest(DEEPSEEK_V3)
    differ = {n for n, (shape, dt) in result.tensors.items() if dt != m.tensors[n].dtype}
    assert differ == {f"model.layers.{i}.mlp.gate.weight" for i in (1, 2)}
    assert all(result.tensors[n][1] == "F32" for n in differ)
    assert result.tensors["model.layers.1.mlp.gate.e_score_correction_bias"][1] == "F32"


# -- the oracle equals a real save_pretrained -----------------------------------------------------


@pytest.fixture(scope="module")
def real_saves(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, tuple[tuple[int, ...], str]]]:
    """save_pretrained of tiny models built on the CPU, read back with pyaudit.read_header."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pyaudit import read_header

    out = {}
    for label in REAL_SAVE:
        config = dict(EXTRA[label])
        directory = tmp_path_factory.mktemp(label)
        (directory / "config.json").write_text(json.dumps(config))
        cfg = transformers.AutoConfig.from_pretrained(directory)
        cls = getattr(transformers, config["architectures"][0])
        dtype = getattr(torch, config.get("torch_dtype", "float32"))
        torch.manual_seed(0)
        model = cls._from_config(cfg, dtype=dtype)
        model.save_pretrained(directory)
        files = sorted(directory.glob("*.safetensors"))
        assert [f.name for f in files] == ["model.safetensors"]
        header = read_header(files[0])
        out[label] = {n: (tuple(t.shape), t.dtype) for n, t in header.tensors.items()}
    return out


@pytest.mark.filterwarnings("ignore")  # transformers' own deprecation/advisory warnings
@pytest.mark.parametrize("label", REAL_SAVE)
def test_oracle_equals_a_real_save_pretrained(oracle: Any, real_saves: Any, label: str) -> None:
    result = _get(oracle, label, "fresh")
    real = real_saves[label]
    diff = _name_diff("the oracle", set(result.tensors), "a real save", set(real))
    assert not diff, f"{label}:\n{diff}"
    wrong = {n: (result.tensors[n], real[n]) for n in real if result.tensors[n] != real[n]}
    assert not wrong, f"{label}: oracle vs real (shape, dtype): {wrong}"


# -- failure modes --------------------------------------------------------------------------------


def test_unknown_model_type_is_unavailable_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(OracleUnavailable) as info:
        oracle_manifest({"model_type": "no_such_family", "architectures": ["NoSuchForCausalLM"]})
    assert time.monotonic() - started < 2
    assert info.value.kind == "unknown-architecture"
    assert "no_such_family" in str(info.value)


def test_no_model_type_is_unavailable() -> None:
    with pytest.raises(OracleUnavailable, match="model_type"):
        oracle_manifest({"hidden_size": 8})


def test_quantized_config_is_unsupported() -> None:
    config = {**TINY_LLAMA, "quantization_config": {"quant_method": "gptq", "bits": 4}}
    with pytest.raises(OracleUnavailable) as info:
        oracle_manifest(config)
    assert info.value.kind == "unsupported"


def test_an_implausible_config_is_refused_before_any_worker() -> None:
    import pyaudit.oracle as oracle_module

    config = {**TINY_LLAMA, "text_config": {"num_hidden_layers": 10**9}}
    assert oracle_module._precheck(config) is not None  # no worker asked: refused here
    with pytest.raises(OracleUnavailable) as info:
        oracle_manifest(config)
    assert info.value.kind == "unsupported"
    assert "text_config.num_hidden_layers = 1000000000" in str(info.value)


def test_timeout_kills_the_worker() -> None:
    config = {**TINY_LLAMA, "vocab_size": 97}  # not cached
    started = time.monotonic()
    with pytest.raises(OracleUnavailable) as info:
        oracle_manifest(config, timeout=0.2)
    assert time.monotonic() - started < 10
    assert info.value.kind == "timeout"
    assert "timed out after 0.2 s" in str(info.value)


def test_worker_error_is_reported_with_its_last_lines(oracle: Any) -> None:
    # the same batch answered every other config: one bad config does not spoil it
    result = oracle[("odd", "fresh")]
    if isinstance(result, OracleResult):
        pytest.skip("this transformers builds the odd config")
    assert result.kind == "error"
    first, *rest = str(result).splitlines()
    assert "Error" in first and rest  # the error, then the traceback's last lines
    assert "30" in str(result)  # transformers' message names the bad hidden size


def test_worker_crash_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pyaudit.oracle as oracle_module

    fake = tmp_path / "worker.py"
    fake.write_text(
        "import sys\nprint('boom: the worker fell over', file=sys.stderr)\nsys.exit(3)\n"
    )
    monkeypatch.setattr(oracle_module, "_WORKER", fake)
    with pytest.raises(OracleUnavailable) as info:
        oracle_manifest({**TINY_LLAMA, "vocab_size": 93})
    assert info.value.kind == "crashed"
    assert "exit status 3" in str(info.value) and "boom: the worker fell over" in str(info.value)


def test_transformers_missing_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyaudit.oracle as oracle_module

    monkeypatch.setattr(oracle_module, "_installed", lambda module: module != "transformers")
    with pytest.raises(OracleUnavailable) as info:
        oracle_manifest({**TINY_LLAMA, "vocab_size": 91})
    assert info.value.kind == "not-installed"
    assert "transformers" in str(info.value)


def test_results_are_cached(oracle: Any) -> None:
    started = time.monotonic()
    again = oracle_manifest(TINY_LLAMA)
    assert time.monotonic() - started < 0.5
    assert again == _get(oracle, "tiny-llama", "fresh")
    assert again.transformers_version and again.architecture == "LlamaForCausalLM"


def test_import_does_not_import_torch() -> None:
    import subprocess

    code = (
        "import sys, pyaudit.oracle; print('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- pyaudit.expected.from_oracle -----------------------------------------------------------------


def test_from_oracle_builds_one_layout(oracle: Any) -> None:
    from pyaudit.auditing.cache import AuditCache
    from pyaudit.expected import from_oracle

    result = _get(oracle, "tiny-qwen2", "fresh")
    cache = AuditCache()
    expected = from_oracle(TINY_QWEN2, cache=cache)
    assert expected.source == f"transformers {result.transformers_version} oracle"
    assert expected.model_type == "qwen2" and expected.dtype == "F16" and expected.shapes_known
    (layout,) = expected.layouts
    assert {n: (t.shape, t.dtype) for n, t in layout.tensors.items()} == result.tensors
    assert layout.tied == {"lm_head.weight": "model.embed_tokens.weight"}
    assert (
        expected.total_bytes == result.total_bytes == sum(t.nbytes for t in layout.tensors.values())
    )
    assert from_oracle(dict(TINY_QWEN2), cache=cache) is expected  # once per config
    assert from_oracle(dict(TINY_QWEN2)) is not expected  # a cache is passed in, never global


def test_from_oracle_with_source_names_keeps_the_checkpoint_layout(oracle: Any) -> None:
    from pyaudit.expected import from_oracle

    label = "medgemma-27b-it_gemma3"
    config, index = _shared(SHARED_MODELS / label)
    expected = from_oracle(config, "oracle", source_names=index["weight_map"])
    assert set(expected.default.tensors) == set(index["weight_map"])
    assert expected.total_bytes == index["metadata"]["total_size"]


def test_from_oracle_unavailable_is_manifest_unavailable() -> None:
    from pyaudit.expected import ManifestUnavailable, from_oracle

    with pytest.raises(ManifestUnavailable) as info:
        from_oracle({"model_type": "no_such_family"})
    assert info.value.model_type == "no_such_family"
    assert "transformers oracle" in str(info.value)


# -- pyaudit.oracle.OracleSession: one worker for a scan ------------------------------------------


def test_session_times_out_then_starts_a_new_worker(tmp_path: Path) -> None:
    from pyaudit.oracle import OracleSession

    with OracleSession(tmp_path, timeout=0.2) as session:
        with pytest.raises(OracleUnavailable) as info:
            session.manifest({**TINY_LLAMA, "vocab_size": 89})  # the imports alone take longer
        assert info.value.kind == "timeout"
        session.timeout = 120
        result, cached = session.manifest({**TINY_LLAMA, "vocab_size": 87})
        assert not cached and result.architecture == "LlamaForCausalLM"
        again, _ = session.manifest({**TINY_LLAMA, "vocab_size": 85})
        assert again.tensors["model.embed_tokens.weight"][0] == (85, 32)
        stats = session.stats
        assert (stats.builds, stats.failures, stats.worker_starts) == (3, 1, 2)
    assert [p.name.endswith("-f1.json") for p in tmp_path.iterdir()] == [True, True]

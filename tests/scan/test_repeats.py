"""Where nothing says what a model holds: never a silent PASS, and its own blocks still judge it.

- ``no-manifest``: full weights with no config.json, no ``--base`` and no model the run names
  found locally are a WARN that says what was and was not checked, never a PASS.
- ``layer-incomplete``: the numbered blocks of one list hold the same tensors. Held against
  what transformers saves for every derived family (its spec at the class defaults, which
  tests/test_derived.py proves equal to ``save_pretrained``'s output): healthy layouts of
  decoder LMs, MoE with dense first layers, hybrids (Mamba / linear attention beside
  attention), encoder-decoders and vision towers make no claim; a tensor or a whole block
  removed from the middle of a list is claimed, naming it. With torch, real tiny saves
  without their config.json: WARN healthy, FAIL broken.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from rewrite import rewrite_without

from pyaudit.api import scan
from pyaudit.auditing.repeats import block_lists, declared_heterogeneous, incomplete_blocks
from pyaudit.manifest import UnknownArchitecture, _build
from pyaudit.manifest.derived import GENERATED_DIR, derived_model_types, derived_spec

SAVES = Path(__file__).parents[1] / "data" / "derived_saves"
DERIVED = list(derived_model_types())


def _save_without_config(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "config.json").unlink()
    return dst


def _write(path: Path, tensors: dict[str, tuple[int, ...]]) -> None:
    """A real safetensors file (zeros): header and data consistent."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in tensors.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(offset))


def _llama_like(layers: int = 6) -> dict[str, tuple[int, ...]]:
    t: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (32, 8)}
    for i in range(layers):
        for rest, shape in (
            ("self_attn.q_proj.weight", (8, 8)),
            ("self_attn.k_proj.weight", (4, 8)),
            ("mlp.up_proj.weight", (16, 8)),
            ("input_layernorm.weight", (8,)),
        ):
            t[f"model.layers.{i}.{rest}"] = shape
    t["model.norm.weight"] = (8,)
    return t


def _one(tmp_path: Path, tensors: dict[str, tuple[int, ...]]) -> Any:
    _write(tmp_path / "ckpt" / "model.safetensors", tensors)
    report = scan([tmp_path / "ckpt"])
    assert len(report.checkpoints) == 1
    return report.checkpoints[0]


# -- no-manifest: never a silent PASS --------------------------------------------------------


def test_lone_weights_are_a_warning_that_says_what_was_checked(tmp_path: Path) -> None:
    c = _one(tmp_path, _llama_like())
    assert c.status == "warn"
    codes = [f.code for f in c.findings]
    assert codes == ["no-manifest"], codes
    text = c.findings[0].message
    assert "no config.json beside the weights" in text
    assert "model.layers: 6 blocks" in text
    assert "--base DIR" in text
    assert c.expected_source is None


def test_lone_weights_with_a_run_record_name_the_model_not_found(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt" / "model.safetensors", _llama_like())
    (tmp_path / "ckpt" / "args.json").write_text(json.dumps({"model": "Org/NotHere-7B"}))
    c = scan([tmp_path / "ckpt"]).checkpoints[0]
    assert c.status == "warn"
    [f] = [f for f in c.findings if f.code == "no-manifest"]
    assert "'Org/NotHere-7B'" in f.message and "not available locally" in f.message


def test_lone_weights_with_an_index_check_the_index_and_still_warn(tmp_path: Path) -> None:
    tensors = _llama_like()
    _write(tmp_path / "ckpt" / "model.safetensors", tensors)
    index = {
        "metadata": {"total_size": sum(2 * _numel(s) for s in tensors.values())},
        "weight_map": {n: "model.safetensors" for n in tensors},
    }
    (tmp_path / "ckpt" / "model.safetensors.index.json").write_text(json.dumps(index))
    c = scan([tmp_path / "ckpt"]).checkpoints[0]
    assert c.status == "warn", [f.message for f in c.findings]
    [f] = c.findings
    assert f.code == "no-manifest" and "the index's tensor names and total_size" in f.message


def test_adapter_without_base_is_not_no_manifest(tmp_path: Path) -> None:
    """An adapter is held against its adapter_config.json: base-not-found says the rest."""
    d = tmp_path / "ckpt"
    _write(
        d / "adapter_model.safetensors",
        {
            f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_{ab}.weight": shape
            for i in range(3)
            for ab, shape in (("A", (4, 8)), ("B", (8, 4)))
        },
    )
    (d / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": 4,
                "target_modules": ["q_proj"],
                "base_model_name_or_path": "Org/NotHere-7B",
            }
        )
    )
    c = scan([d]).checkpoints[0]
    assert "no-manifest" not in [f.code for f in c.findings]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# -- layer-incomplete, end to end ------------------------------------------------------------


def test_a_tensor_missing_from_one_block_fails_naming_it(tmp_path: Path) -> None:
    tensors = _llama_like()
    del tensors["model.layers.3.self_attn.k_proj.weight"]
    c = _one(tmp_path, tensors)
    assert c.status == "fail"
    [f] = [f for f in c.findings if f.code == "layer-incomplete"]
    assert f.severity == "error"
    assert f.tensors == ("model.layers.3.self_attn.k_proj.weight",)
    assert "block 3 of model.layers lacks self_attn.k_proj.weight, which 5 of its 6" in f.message


def test_a_block_missing_from_the_middle_fails_naming_its_tensors(tmp_path: Path) -> None:
    tensors = {n: s for n, s in _llama_like().items() if not n.startswith("model.layers.2.")}
    c = _one(tmp_path, tensors)
    assert c.status == "fail"
    [f] = [f for f in c.findings if f.code == "layer-incomplete"]
    assert f.count == 4 and all(n.startswith("model.layers.2.") for n in f.tensors)
    assert "blocks 0-1,3-5" in f.message


def test_the_last_block_missing_is_said_to_go_unnoticed(tmp_path: Path) -> None:
    tensors = {n: s for n, s in _llama_like().items() if not n.startswith("model.layers.5.")}
    c = _one(tmp_path, tensors)
    assert c.status == "warn"
    assert "a block missing at a list's end" in c.findings[0].message


def test_sequential_holes_make_no_claim() -> None:
    # Sequential(Linear, GELU, Linear, GELU, Linear): parameter-free members leave holes
    t = {f"mm_projector.{i}.weight": (8, 8) for i in (0, 2, 4)}
    t.update({f"mm_projector.{i}.bias": (8,) for i in (0, 2, 4)})
    assert incomplete_blocks(block_lists(t), None) == []


def test_a_config_declaring_different_blocks_makes_it_a_warning() -> None:
    tensors = _llama_like()
    del tensors["model.layers.3.self_attn.k_proj.weight"]
    config = {"layer_types": ["full", "full", "full", "none", "full", "full"]}
    [f] = incomplete_blocks(block_lists(tensors), config)
    assert f.severity == "warning" and "layer_types" in f.message
    assert declared_heterogeneous({"text_config": {"mlp_only_layers": [0, 3]}}, [6]) == (
        "text_config.mlp_only_layers"
    )
    assert declared_heterogeneous({"layer_types": ["a"] * 6, "depths": [3, 3]}, [6]) is None


# -- against what transformers saves, for every derived family ------------------------------


def _default_names(model_type: str) -> dict[str, tuple[int, ...]] | None:
    with (GENERATED_DIR / f"{model_type}.json").open("rb") as f:
        data = json.load(f)
    config = json.loads(json.dumps(data["defaults"]))
    config["model_type"] = model_type
    config["architectures"] = [data["architecture"]]
    spec = derived_spec(model_type)
    assert spec is not None
    try:
        m = _build(spec, config, None)
    except UnknownArchitecture:
        return None  # a field transformers computes that the spec does not (tested there)
    return {n: tuple(t.shape or ()) for n, t in m.tensors.items()}


@pytest.mark.parametrize("model_type", DERIVED)
def test_healthy_layouts_make_no_claim_and_broken_ones_are_claimed(model_type: str) -> None:
    tensors = _default_names(model_type)
    if tensors is None:
        pytest.skip("spec needs a field the class defaults leave to transformers")
    assert incomplete_blocks(block_lists(tensors), None) == [], model_type

    # Break the longest list whose middle block has the list's common names.
    lists = block_lists(tensors).lists
    candidates = []
    for stem, blocks in lists.items():
        if len(blocks) < 3:
            continue
        sets = [frozenset(b) for b in blocks.values()]
        common = max(set(sets), key=sets.count)
        if sets.count(common) * 2 <= len(sets):
            continue
        middle = [i for i in sorted(blocks)[1:-1] if frozenset(blocks[i]) == common]
        if middle:
            candidates.append((len(blocks), stem, middle[len(middle) // 2], sorted(common)))
    if not candidates:
        pytest.skip("no list of 3 or more blocks with a common kind")
    _, stem, index, rests = max(candidates)
    lost = f"{stem}.{index}.{rests[-1]}"
    one = {n: s for n, s in tensors.items() if n != lost}
    [f] = incomplete_blocks(block_lists(one), None)
    assert lost in f.tensors


# -- real public configs (hand-written specs), and real saves --------------------------------

MODELS = Path(__file__).parents[1] / "data" / "models"
REAL = sorted(p for p in MODELS.iterdir() if (p / "config.json").is_file())


@pytest.mark.parametrize("model_dir", REAL, ids=lambda p: p.name)
def test_real_public_configs_make_no_claim(model_dir: Path) -> None:
    """The tensors a real index names (public repositories, tests/data/models) hold no
    block that looks incomplete, judged by names alone, with and without the config."""
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    names = {n: () for n in index["weight_map"]}
    config = json.loads((model_dir / "config.json").read_text())
    assert incomplete_blocks(block_lists(names), None) == []
    assert incomplete_blocks(block_lists(names), config) == []


def _tiny_save(tmp_path: Path, model_type: str, **fields: Any) -> Path:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(model_type, **fields)
    model = transformers.AutoModelForCausalLM.from_config(config)
    out = tmp_path / "save"
    model.save_pretrained(out)
    for extra in out.glob("generation_config.json"):
        extra.unlink()
    return out


_TINY = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 64,
}


@pytest.mark.parametrize(
    ("model_type", "fields"),
    [
        ("llama", {"num_hidden_layers": 5}),
        # dense first layers, then MoE: kinds that are not subsets of one another
        (
            "qwen3_moe",
            {
                "num_hidden_layers": 5,
                "mlp_only_layers": [0, 1],
                "num_experts": 4,
                "num_experts_per_tok": 2,
                "moe_intermediate_size": 8,
            },
        ),
        # linear attention beside full attention
        (
            "qwen3_next",
            {
                "num_hidden_layers": 4,
                "num_experts": 4,
                "num_experts_per_tok": 2,
                "moe_intermediate_size": 8,
                "shared_expert_intermediate_size": 8,
                "linear_num_key_heads": 2,
                "linear_num_value_heads": 2,
                "linear_key_head_dim": 8,
                "linear_value_head_dim": 8,
                "head_dim": 8,
            },
        ),
    ],
)
def test_real_saves_without_config_warn_healthy_and_fail_broken(
    tmp_path: Path, model_type: str, fields: dict[str, Any]
) -> None:
    save = _tiny_save(tmp_path, model_type, **_TINY, **fields)
    healthy = _save_without_config(save, tmp_path / "healthy")
    c = scan([healthy]).checkpoints[0]
    assert c.status == "warn", [(f.code, f.message) for f in c.findings]
    assert [f.code for f in c.findings] == ["no-manifest"]

    from safetensors import safe_open

    with safe_open(str(save / "model.safetensors"), "np") as f:
        names = list(f.keys())
    blocks = block_lists({n: () for n in names}).lists["model.layers"]
    common = max(
        (frozenset(b) for b in blocks.values()),
        key=lambda s: sum(frozenset(b) == s for b in blocks.values()),
    )
    target = next(i for i in sorted(blocks)[1:] if frozenset(blocks[i]) == common)
    lost = f"model.layers.{target}.{sorted(common)[0]}"
    broken = _save_without_config(save, tmp_path / "broken")
    rewrite_without(broken / "model.safetensors", lambda n: n == lost)
    c = scan([broken]).checkpoints[0]
    assert c.status == "fail"
    [f] = [f for f in c.findings if f.code == "layer-incomplete"]
    assert f.tensors == (lost,)

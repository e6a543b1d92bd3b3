"""Head classes: a family's body saved under another head (a reward model, an embedding
model, a token classifier) is a healthy checkpoint, held against what that class saves.

How each head class differs from the family's primary class is derived from transformers
(``heads`` in pyaudit/manifest/loading.json, by ``python -m pyaudit.manifest.generate_loading``).

With torch and transformers (skipped otherwise): for every derived head class, the manifest
equals what ``save_pretrained`` of that class writes (names, shapes, dtypes), on the meta
device, at a point the derivation never saw (7 labels, 2 layers). Without torch: a reward
model and an embedding model laid out at full size from a real public config PASS, and FAIL
when their head or a layer is lost; a head class that could not be derived is refused
(never a false FAIL).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from pyaudit.api import scan
from pyaudit.manifest import UnknownArchitecture, build_manifest
from pyaudit.manifest.derived import LOADING_FILE
from pyaudit.testing.stores import manifest_tensors, write_checkpoint

LOADING = json.loads(LOADING_FILE.read_text())
HEADS = sorted(
    (mt, head)
    for mt, entry in LOADING["families"].items()
    for head, rule in entry.get("heads", {}).items()
    if "refused" not in rule
)
REFUSED = sorted(
    (mt, head)
    for mt, entry in LOADING["families"].items()
    for head, rule in entry.get("heads", {}).items()
    if "refused" in rule
)
MODELS = Path(__file__).parent / "data" / "models"


def test_the_common_heads_are_derived() -> None:
    derived = {head for _, head in HEADS}
    for head in (
        "LlamaForSequenceClassification",  # reward models (TRL RewardTrainer, PPO value)
        "Qwen2ForSequenceClassification",
        "Qwen3ForSequenceClassification",
        "Qwen3Model",  # embedding models
        "LlamaModel",
        "MistralForSequenceClassification",
        "Gemma2ForSequenceClassification",
    ):
        assert head in derived, head
    assert len(HEADS) >= 200, len(HEADS)


# -- without torch ----------------------------------------------------------------------------


def _qwen3(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((MODELS / "Qwen3-4B_qwen3" / "config.json").read_text())
    config.update(changes)
    return config


def test_reward_model_full_size_pass_and_fail(tmp_path: Path) -> None:
    """A Qwen3-4B reward model (one label, as TRL's RewardTrainer saves it): score.weight in
    place of the (tied) lm_head; 4 GB of holes."""
    config = _qwen3(
        architectures=["Qwen3ForSequenceClassification"],
        id2label={"0": "LABEL_0"},
        label2id={"LABEL_0": 0},
    )
    tensors = manifest_tensors(config)
    assert tensors["score.weight"] == ("BF16", (1, config["hidden_size"]))
    assert "lm_head.weight" not in tensors
    write_checkpoint(tmp_path / "rm", config, tensors, shards=2)
    (c,) = scan([tmp_path / "rm"]).checkpoints
    assert c.status == "pass" and c.findings == (), c.findings

    lost = {n: t for n, t in tensors.items() if n != "score.weight"}
    write_checkpoint(tmp_path / "headless", config, lost, shards=2)
    (c,) = scan([tmp_path / "headless"]).checkpoints
    assert c.status == "fail"
    assert any(f.code == "base-weights-missing" and "score.weight" in f.tensors for f in c.findings)

    # the same files under the primary class's config: its lm_head is tied, score is not its
    write_checkpoint(tmp_path / "as-lm", _qwen3(), tensors, shards=2)
    (c,) = scan([tmp_path / "as-lm"]).checkpoints
    assert c.status != "pass"
    assert any(f.code == "unexpected-tensors" and "score.weight" in f.tensors for f in c.findings)


def test_num_labels_is_read_as_transformers_reads_it() -> None:
    # no id2label: PretrainedConfig's default number of labels
    default = build_manifest(_qwen3(architectures=["Qwen3ForSequenceClassification"]))
    assert default.tensors["score.weight"].shape == (LOADING["num_labels_default"], 2560)
    five = {str(i): f"L{i}" for i in range(5)}
    m = build_manifest(_qwen3(architectures=["Qwen3ForSequenceClassification"], id2label=five))
    assert m.tensors["score.weight"].shape == (5, 2560)


def test_embedding_model_full_size_pass_and_fail(tmp_path: Path) -> None:
    """Qwen3Model (embedding models): the body without the ``model.`` prefix, no head."""
    config = _qwen3(architectures=["Qwen3Model"])
    tensors = manifest_tensors(config)
    assert "embed_tokens.weight" in tensors and "layers.35.mlp.up_proj.weight" in tensors
    assert not any(n.startswith(("model.", "lm_head")) for n in tensors)
    write_checkpoint(tmp_path / "emb", config, tensors)
    (c,) = scan([tmp_path / "emb"]).checkpoints
    assert c.status == "pass" and c.findings == (), c.findings
    lost = {n: t for n, t in tensors.items() if not n.startswith("layers.20.")}
    write_checkpoint(tmp_path / "lost", config, lost)
    (c,) = scan([tmp_path / "lost"]).checkpoints
    assert c.status == "fail"


@pytest.mark.parametrize(("model_type", "head"), REFUSED[:5])
def test_a_head_that_could_not_be_derived_is_refused(model_type: str, head: str) -> None:
    with pytest.raises(UnknownArchitecture, match="could not be derived"):
        build_manifest({"model_type": model_type, "architectures": [head]})


# -- with torch and transformers ---------------------------------------------------------------

needs_torch = pytest.mark.skipif(
    os.environ.get("PYAUDIT_NO_TORCH_TESTS") == "1", reason="torch tests switched off"
)
_COUNT = re.compile(r"(layers$|^n_layer$|depth$|experts$|^num_local_experts$)")


@pytest.fixture(scope="module")
def env() -> Any:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if LOADING["derived_from"]["transformers"] != transformers.__version__:
        pytest.skip(f"loading.json is from transformers {LOADING['derived_from']}")
    from pyaudit.manifest.generate import Env

    return Env()


@needs_torch
@pytest.mark.parametrize(("model_type", "head"), HEADS, ids=lambda v: str(v))
def test_head_manifest_equals_what_transformers_saves(env: Any, model_type: str, head: str) -> None:
    generated = Path(LOADING_FILE).with_name("generated") / f"{model_type}.json"
    data = json.loads(generated.read_text())
    defaults = data["defaults"]
    # fields null at the class defaults that transformers cannot build with, as filled
    filled = {k: v["value"] for k, v in data.get("defaults_filled", {}).items() if "." not in k}
    kwargs = {k: v for k, v in {**defaults, **filled}.items() if v is not None}
    for k, v in list(kwargs.items()):
        if _COUNT.search(k) and isinstance(v, int) and v > 2:
            kwargs[k] = 2
    kwargs["num_labels"] = 7
    cls = getattr(env.transformers, head)
    try:
        cfg = env.config(model_type, kwargs)
        saved = env.save(cls, cfg)
    except Exception as e:  # the point does not build: the class defaults carry the proof
        pytest.skip(f"{head} does not build with 2 layers: {type(e).__name__}")
    config = json.loads(cfg.to_json_string())
    config["architectures"] = [head]
    config["dtype"] = "bfloat16"
    m = build_manifest(config)
    want = {n: (shape, dt) for n, (shape, dt) in saved.tensors.items()}
    got = {n: (t.shape, t.dtype) for n, t in m.tensors.items()}
    assert got == want


@pytest.mark.parametrize("labels", [-3, 1 << 50, "two"])
def test_an_impossible_num_labels_is_the_configs_error(tmp_path: Path, labels: Any) -> None:
    config = _qwen3(architectures=["Qwen3ForSequenceClassification"], num_labels=labels)
    tensors = manifest_tensors(_qwen3(architectures=["Qwen3ForSequenceClassification"]))
    write_checkpoint(tmp_path / "rm", config, tensors, shards=2)
    (c,) = scan([tmp_path / "rm"]).checkpoints
    assert c.status == "fail"
    assert [f.code for f in c.findings if f.severity == "error"] == ["invalid-file"]


# -- a remote-code class named in auto_map ---------------------------------------------------

PHI_TINY = Path(__file__).parent / "data" / "derived_models" / "Phi-tiny-MoE_phimoe"


def _phi_tiny_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads((PHI_TINY / "config.json").read_text())
    return config


def test_auto_tables_name_only_classes_the_runtime_knows() -> None:
    """loading.json's ``auto``: each Auto class builds the family's primary class or one of
    its head classes (what the runtime can hold a checkpoint against)."""
    from pyaudit.manifest.derived import GENERATED_DIR

    for mt, entry in LOADING["families"].items():
        primary = json.loads((GENERATED_DIR / f"{mt}.json").read_text())["architecture"]
        known = {primary, *entry.get("heads", {})}
        for auto, cls in entry.get("auto", {}).items():
            assert auto.startswith("AutoModel") and cls in known, (mt, auto, cls)
    # the family of the real config: transformers' AutoModelForCausalLM builds its primary
    assert LOADING["families"]["phimoe"]["auto"]["AutoModelForCausalLM"] == "PhimoeForCausalLM"


def test_remote_code_class_is_held_against_the_class_transformers_builds() -> None:
    """The real Phi-tiny-MoE config names PhiMoEForCausalLM (remote code, as
    microsoft/Phi-3.5-MoE-instruct's does), under AutoModelForCausalLM in its auto_map:
    transformers loads it as PhimoeForCausalLM, and so is it held."""
    from pyaudit.manifest import config_architecture

    config = _phi_tiny_config()
    assert config["architectures"] == ["PhiMoEForCausalLM"]
    assert config_architecture("phimoe", config) == "PhimoeForCausalLM"
    m = build_manifest(config)
    assert "lm_head.weight" in m.tensors and "model.embed_tokens.weight" in m.tensors

    # named under AutoModel only: transformers' AutoModel builds PhimoeModel (no head, no
    # model. prefix), a head class loading.json derived
    base = {**config, "auto_map": {"AutoModel": "modeling_slimmoe.PhiMoEForCausalLM"}}
    assert config_architecture("phimoe", base) == "PhimoeModel"
    names = set(build_manifest(base).tensors)
    assert "embed_tokens.weight" in names and not any(n.startswith("lm_head") for n in names)


@pytest.mark.parametrize(
    "auto_map",
    [
        None,  # nothing says what the remote class is
        {"AutoConfig": "configuration_slimmoe.PhiMoEConfig"},  # not under a model class
        {"AutoModelForCausalLM": "modeling_slimmoe.SomethingElse"},  # another class
        {  # under two Auto classes that build different classes: which one saved it?
            "AutoModel": "modeling_slimmoe.PhiMoEForCausalLM",
            "AutoModelForCausalLM": "modeling_slimmoe.PhiMoEForCausalLM",
        },
    ],
)
def test_remote_code_class_not_resolved_is_refused(auto_map: dict[str, str] | None) -> None:
    config = _phi_tiny_config()
    config.pop("auto_map")
    if auto_map is not None:
        config["auto_map"] = auto_map
    with pytest.raises(UnknownArchitecture, match="PhiMoEForCausalLM"):
        build_manifest(config)

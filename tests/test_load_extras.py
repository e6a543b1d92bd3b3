"""Tensors a file holds beyond what transformers' saves of the family hold, which transformers
accepts on load (``loading.json``'s ``untied_heads`` and ``ignore_unexpected``, derived from
the saved class's ``_tied_weights_keys`` and ``_keys_to_ignore_on_load_unexpected``), on the
tiny real saves of ``tests/data/derived_saves`` (written by transformers 5.25)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from rewrite import rewrite_with, tensor_of

from pyaudit.api import scan
from pyaudit.manifest.derived import loading_rules

SAVES = Path(__file__).parent / "data" / "derived_saves"
ENC_DEC_BIAS = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"


def _audit(path: Path) -> tuple[str, dict[str, Any]]:
    report = scan([path], oracle=None)
    assert len(report.checkpoints) == 1
    c = report.checkpoints[0]
    return c.status, {f.code: f for f in c.findings}


def _t5(tmp_path: Path, name: str, untie: bool = True) -> Path:
    """The gated T5 save (FLAN-T5's layout); ``untie``: its config.json says
    ``tie_word_embeddings`` false, as FLAN-T5's and T5 v1.1's do."""
    dst = shutil.copytree(SAVES / "t5", tmp_path / name)
    if untie:
        config = json.loads((dst / "config.json").read_text())
        config["tie_word_embeddings"] = False
        (dst / "config.json").write_text(json.dumps(config))
    return dst


def _other_values(t: tuple[str, list[int], bytes]) -> tuple[str, list[int], bytes]:
    dtype, shape, raw = t
    return dtype, shape, raw[2:] + raw[:2]  # the twin's bytes, moved: other values


def test_loading_facts_are_t5s_own_class_attributes() -> None:
    transformers = pytest.importorskip("transformers")
    cls = transformers.T5ForConditionalGeneration
    rules = loading_rules("t5")
    assert rules["untied_heads"]["lm_head.weight"] == cls._tied_weights_keys["lm_head.weight"]
    assert rules["ignore_unexpected"] == sorted(cls._keys_to_ignore_on_load_unexpected)


def test_t5_lm_head_saved_untied_passes(tmp_path: Path) -> None:
    """FLAN-T5 / T5 v1.1 files hold lm_head.weight: transformers 5.25 loads it as a weight of
    its own (not tied to shared.weight: other values), so the file is healthy."""
    path = _t5(tmp_path, "lm_head")
    shared = tensor_of(path / "model.safetensors", "shared.weight")
    rewrite_with(path / "model.safetensors", {"lm_head.weight": _other_values(shared)})
    status, findings = _audit(path)
    assert status == "pass", list(findings)
    assert findings == {}


def test_t5_lm_head_of_another_shape_still_warns(tmp_path: Path) -> None:
    path = _t5(tmp_path, "lm_head_short")
    dtype, shape, raw = tensor_of(path / "model.safetensors", "shared.weight")
    half = shape[0] // 2
    rewrite_with(
        path / "model.safetensors",
        {"lm_head.weight": (dtype, [half, shape[1]], raw[: len(raw) // 2])},
    )
    status, findings = _audit(path)
    assert status == "warn"
    assert list(findings["unexpected-tensors"].tensors) == ["lm_head.weight"]


def test_original_t5_enc_dec_bias_passes_with_a_note(tmp_path: Path) -> None:
    """The original 2020 T5 files' extra cross-attention bias, which
    T5ForConditionalGeneration lists in _keys_to_ignore_on_load_unexpected."""
    path = _t5(tmp_path, "enc_dec", untie=False)
    sa = tensor_of(
        path / "model.safetensors",
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    )
    rewrite_with(path / "model.safetensors", {ENC_DEC_BIAS: sa})
    status, findings = _audit(path)
    assert status == "pass", list(findings)
    assert set(findings) == {"ignored-on-load"}
    note = findings["ignored-on-load"]
    assert note.severity == "info" and list(note.tensors) == [ENC_DEC_BIAS]


def test_t5_random_extra_tensor_still_warns(tmp_path: Path) -> None:
    path = _t5(tmp_path, "random")
    shared = tensor_of(path / "model.safetensors", "shared.weight")
    rewrite_with(
        path / "model.safetensors",
        {"lm_head.weight": _other_values(shared), "decoder.extra_proj.weight": shared},
    )
    status, findings = _audit(path)
    assert status == "warn"
    assert list(findings) == ["unexpected-tensors"]
    assert list(findings["unexpected-tensors"].tensors) == ["decoder.extra_proj.weight"]


def test_tied_gpt2_lm_head_saved_keeps_its_warning(tmp_path: Path) -> None:
    """A family whose saves hold lm_head.weight when untied (GPT2LMHeadModel, the spec's
    ``when: not tie_word_embeddings``), config.json saying tied and the file holding it:
    transformers 5.25 loads it (untied when the values differ) and warns to set
    tie_word_embeddings=False; pyaudit keeps its "saved although tied" warning."""
    path = shutil.copytree(SAVES / "gpt2", tmp_path / "gpt2")
    assert json.loads((path / "config.json").read_text())["tie_word_embeddings"] is True
    assert "untied_heads" not in loading_rules("gpt2")
    wte = tensor_of(path / "model.safetensors", "transformer.wte.weight")
    rewrite_with(path / "model.safetensors", {"lm_head.weight": _other_values(wte)})
    status, findings = _audit(path)
    assert status == "warn"
    f = findings["unexpected-tensors"]
    assert list(f.tensors) == ["lm_head.weight"]
    assert "saved although tied to transformer.wte.weight" in str(f.message)


def test_transformers_loads_t5s_lm_head_as_its_own_and_ignores_the_enc_dec_bias(
    tmp_path: Path,
) -> None:
    """What the two facts rest on, checked on the installed transformers: a T5 save given an
    lm_head.weight with other values than shared.weight loads it as a weight of its own (not
    shared's) and saves it again; the EncDecAttention bias is not reported as unexpected,
    while another extra tensor is."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    cls = transformers.T5ForConditionalGeneration
    config = transformers.T5Config.from_pretrained(SAVES / "t5")
    torch.manual_seed(0)
    cls(config).save_pretrained(tmp_path / "a")
    file = tmp_path / "a" / "model.safetensors"
    sd = safetensors_torch.load_file(file)
    assert "lm_head.weight" not in sd
    head = torch.randn_like(sd["shared.weight"])
    sd["lm_head.weight"] = head
    sd[ENC_DEC_BIAS] = sd[
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    ].clone()
    sd["decoder.extra_proj.weight"] = torch.zeros(2, 2)
    safetensors_torch.save_file(sd, file, metadata={"format": "pt"})
    model, info = cls.from_pretrained(tmp_path / "a", output_loading_info=True)
    assert sorted(info["unexpected_keys"]) == ["decoder.extra_proj.weight"]
    assert torch.equal(model.lm_head.weight.detach(), head)
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    model.save_pretrained(tmp_path / "b")
    again = safetensors_torch.load_file(tmp_path / "b" / "model.safetensors")
    assert torch.equal(again["lm_head.weight"], head)

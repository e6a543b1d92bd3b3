"""`pyaudit scan --oracle transformers`: a family without a spec, audited through the
installed transformers (meta device, in a subprocess). Skipped without torch/transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from pyaudit.cli import main  # noqa: E402

# Granite: a real transformers family. It has a derived spec now (tests/test_derived.py);
# these tests are about the oracle, so they hide every derived spec (``no_derived``).
GRANITE = {
    "model_type": "granite", "architectures": ["GraniteForCausalLM"], "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 1, "vocab_size": 128, "torch_dtype": "bfloat16",
    "tie_word_embeddings": True,
}  # fmt: skip


@pytest.fixture(scope="module")
def granite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("granite") / "checkpoint-10"
    config = transformers.AutoConfig.for_model(**GRANITE)
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def no_derived(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyaudit.manifest as manifest
    from pyaudit.manifest.specs import SPECS

    monkeypatch.setattr(manifest, "spec_of", SPECS.get)


def scan_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["scan", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_without_oracle_only_structure_is_checked(
    granite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = scan_json(capsys, str(granite))
    ckpt = doc["checkpoints"][0]
    assert code == 0
    assert ckpt["status"] == "warn"
    assert [f["code"] for f in ckpt["findings"]] == ["unknown-architecture"]
    assert ckpt["tensors"]["expected"] is None


def test_oracle_supplies_the_manifest(granite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = scan_json(capsys, "--oracle", "transformers", str(granite))
    ckpt = doc["checkpoints"][0]
    assert ckpt["expected_source"] == "transformers oracle"
    assert ckpt["tensors"]["expected"] == ckpt["tensors"]["found"] == 20  # tied: no lm_head
    assert ckpt["findings"] == []
    assert ckpt["status"] == "pass" and code == 0
    assert ckpt["bytes"]["found"] == ckpt["bytes"]["expected"]


def test_oracle_finds_a_dropped_layer(
    granite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "checkpoint-20"
    broken.mkdir()
    (broken / "config.json").write_text((granite / "config.json").read_text())
    tensors = load_file(granite / "model.safetensors")
    kept = {k: v for k, v in tensors.items() if not k.startswith("model.layers.1.")}
    save_file(kept, broken / "model.safetensors", metadata={"format": "pt"})
    code, doc = scan_json(capsys, "--oracle", "transformers", str(broken))
    ckpt = doc["checkpoints"][0]
    missing = [f for f in ckpt["findings"] if f["code"] == "base-weights-missing"]
    assert code == 1 and ckpt["status"] == "fail"
    assert missing and missing[0]["count"] == len(tensors) - len(kept)
    assert "model.layers.1." in missing[0]["message"]

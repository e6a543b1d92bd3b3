"""The transformers oracle in `pyaudit scan`: a family without a spec, audited through the
installed transformers (meta device, one worker process per scan, answers kept on disk), by
default or with `--oracle transformers`; `--no-oracle` turns it off. Skipped without
torch/transformers (tests/scan/test_consensus.py covers what happens without them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's oracle answers in a directory of its own: its first scan builds."""
    monkeypatch.setenv("PYAUDIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "oracle"


def scan_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["scan", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def _copy(src: Path, dst: Path, drop: str | None = None) -> dict[str, Any]:
    """``src`` (a save_pretrained folder) copied to ``dst``, without the tensors whose names
    start with ``drop``; the tensors written."""
    dst.mkdir(parents=True)
    (dst / "config.json").write_text((src / "config.json").read_text())
    tensors = load_file(src / "model.safetensors")
    kept = {k: v for k, v in tensors.items() if drop is None or not k.startswith(drop)}
    save_file(kept, dst / "model.safetensors", metadata={"format": "pt"})
    return kept


def test_no_oracle_only_structure_is_checked(
    granite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = scan_json(capsys, "--no-oracle", str(granite))
    ckpt = doc["checkpoints"][0]
    assert code == 0
    assert ckpt["status"] == "warn"
    assert [f["code"] for f in ckpt["findings"]] == ["unknown-architecture"]
    assert ckpt["tensors"]["expected"] is None
    message = ckpt["findings"][0]["message"]
    assert "the transformers oracle is off (--no-oracle)" in message
    assert "run without --no-oracle" in message and "no consensus check" in message
    assert "oracle" not in doc["summary"]


def test_the_oracle_is_the_default_and_its_answer_is_kept_on_disk(
    granite: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = scan_json(capsys, str(granite))
    ckpt = doc["checkpoints"][0]
    version = transformers.__version__
    assert ckpt["expected_source"] == f"transformers {version} oracle"
    assert ckpt["tensors"]["expected"] == ckpt["tensors"]["found"] == 20  # tied: no lm_head
    assert [(f["code"], f["severity"]) for f in ckpt["findings"]] == [("oracle-manifest", "info")]
    assert f"transformers {version} writes for GraniteForCausalLM" in ckpt["findings"][0]["message"]
    assert ckpt["status"] == "pass" and code == 0
    assert ckpt["bytes"]["found"] == ckpt["bytes"]["expected"]
    assert doc["summary"]["oracle"]["builds"] == 1
    assert doc["summary"]["oracle"]["cache_hits"] == 0
    (kept,) = cache_dir.iterdir()
    assert kept.name.endswith(f"-transformers-{version}-f1.json")

    # A second scan asks no worker: the answer is read from the disk cache.
    code, again = scan_json(capsys, str(granite))
    ckpt = again["checkpoints"][0]
    assert code == 0 and ckpt["status"] == "pass"
    assert ckpt["expected_source"] == f"transformers {version} oracle (cached)"
    assert again["summary"]["oracle"]["builds"] == 0
    assert again["summary"]["oracle"]["cache_hits"] == 1
    assert again["summary"]["oracle"]["worker_starts"] == 0


def test_explicit_oracle_is_cached_too(
    granite: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for builds, hits in ((1, 0), (0, 1)):
        code, doc = scan_json(capsys, "--oracle", "transformers", str(granite))
        assert code == 0 and doc["checkpoints"][0]["status"] == "pass"
        assert (doc["summary"]["oracle"]["builds"], doc["summary"]["oracle"]["cache_hits"]) == (
            builds,
            hits,
        )


def test_a_corrupt_cache_file_is_built_again(
    granite: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scan_json(capsys, str(granite))
    (kept,) = cache_dir.iterdir()
    good = json.loads(kept.read_text())
    odd_dtype = {**good, "tensors": [[n, shape, "F7"] for n, shape, _ in good["tensors"]]}
    negative = {**good, "tensors": [[n, [-1], dt] for n, _, dt in good["tensors"]]}
    for garbage in (
        b'{"format": 1, "ok": true, "tensors": [["x"',
        b"[1, 2]",
        b"\xff\x00",
        json.dumps(odd_dtype).encode(),
        json.dumps(negative).encode(),
    ):
        kept.write_bytes(garbage)
        code, doc = scan_json(capsys, str(granite))
        assert code == 0 and doc["checkpoints"][0]["status"] == "pass"
        assert doc["summary"]["oracle"]["builds"] == 1  # rebuilt, not misread
        assert json.loads(kept.read_text())["ok"] is True  # and replaced


def test_one_worker_for_a_run_of_checkpoints(
    granite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    for step in (10, 20, 30):
        _copy(granite, run / f"checkpoint-{step}")
    code, doc = scan_json(capsys, str(run))
    assert code == 0 and [c["status"] for c in doc["checkpoints"]] == ["pass"] * 3
    oracle = doc["summary"]["oracle"]
    assert (oracle["builds"], oracle["worker_starts"], oracle["cache_hits"]) == (1, 1, 0)


def test_oracle_finds_a_dropped_layer(
    granite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tensors = load_file(granite / "model.safetensors")
    kept = _copy(granite, tmp_path / "checkpoint-20", drop="model.layers.1.")
    code, doc = scan_json(capsys, "--oracle", "transformers", str(tmp_path / "checkpoint-20"))
    ckpt = doc["checkpoints"][0]
    missing = [f for f in ckpt["findings"] if f["code"] == "base-weights-missing"]
    assert code == 1 and ckpt["status"] == "fail"
    assert missing and missing[0]["count"] == len(tensors) - len(kept)
    assert "model.layers.1." in missing[0]["message"]


# GLM-4.5 (glm4_moe): its one MoE layer dropped, the checkpoint's names hold no per-expert
# tensor. Asked for the round trip of those names, transformers keeps its experts fused
# (mlp.experts.gate_up_proj): 25 tensors expected, 13 missing, where the model saves 35 and
# 23 are missing. The names pick among layouts; they never shrink what is expected.
GLM4_MOE = {
    "model_type": "glm4_moe", "architectures": ["Glm4MoeForCausalLM"], "vocab_size": 128,
    "hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
    "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "max_position_embeddings": 128,
}  # fmt: skip


def test_a_broken_checkpoints_names_never_shrink_the_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "full"
    config = transformers.AutoConfig.for_model(**GLM4_MOE)
    transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(full)
    tensors = load_file(full / "model.safetensors")
    kept = _copy(full, tmp_path / "broken", drop="model.layers.1.")
    assert (len(tensors), len(tensors) - len(kept)) == (35, 23)
    code, doc = scan_json(capsys, str(tmp_path / "broken"))
    ckpt = doc["checkpoints"][0]
    (missing,) = [f for f in ckpt["findings"] if f["code"] == "base-weights-missing"]
    assert code == 1 and ckpt["tensors"]["expected"] == 35
    assert missing["count"] == ckpt["tensors"]["missing"] == 23


def test_a_config_the_build_fails_on_is_a_finding_and_the_scan_goes_on(
    granite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "store" / "bad"
    bad.mkdir(parents=True)
    config = json.loads((granite / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "num_attention_heads": "two"}))
    (bad / "model.safetensors").write_bytes((granite / "model.safetensors").read_bytes())
    _copy(granite, tmp_path / "store" / "good")
    code, doc = scan_json(capsys, str(tmp_path / "store"))
    ckpts = {c["path"]: c for c in doc["checkpoints"]}
    assert code == 0 and ckpts["good"]["status"] == "pass" and ckpts["bad"]["status"] == "warn"
    (note,) = [f for f in ckpts["bad"]["findings"] if f["code"] == "unknown-architecture"]
    assert "transformers oracle:" in note["message"]
    assert doc["summary"]["oracle"]["failures"] == 1


def test_a_worker_that_dies_is_a_finding_not_a_hang(
    granite: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyaudit.oracle as oracle_module

    fake = tmp_path / "worker.py"
    fake.write_text(
        "import sys\nsys.stdin.readline()\n"
        "print('boom: the worker fell over', file=sys.stderr)\nsys.exit(3)\n"
    )
    monkeypatch.setattr(oracle_module, "_WORKER", fake)
    config = json.loads((granite / "config.json").read_text())
    for i, vocab in enumerate((128, 130)):
        d = tmp_path / "store" / f"c{i}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({**config, "vocab_size": vocab}))
        (d / "model.safetensors").write_bytes((granite / "model.safetensors").read_bytes())
    code, doc = scan_json(capsys, str(tmp_path / "store"))
    assert code == 0 and [c["status"] for c in doc["checkpoints"]] == ["warn", "warn"]
    for ckpt in doc["checkpoints"]:
        (note,) = [f for f in ckpt["findings"] if f["code"] == "unknown-architecture"]
        assert "worker died (exit status 3)" in note["message"]
        assert "boom: the worker fell over" in note["message"]
    oracle = doc["summary"]["oracle"]
    assert (oracle["builds"], oracle["failures"], oracle["worker_starts"]) == (2, 2, 2)


def test_python_api_reports_what_the_oracle_did(granite: Path) -> None:
    import pyaudit

    off = pyaudit.scan(granite, oracle=None)
    assert [f.code for _, f in off.findings()] == ["unknown-architecture"]
    assert off.summary.oracle is None
    on = pyaudit.scan(granite)
    assert on.ok and [f.code for _, f in on.findings()] == ["oracle-manifest"]
    assert on.summary.oracle is not None and on.summary.oracle["builds"] == 1
    again = pyaudit.scan(granite)
    assert again.summary.oracle is not None
    assert (again.summary.oracle["builds"], again.summary.oracle["cache_hits"]) == (0, 1)
    with pytest.raises(ValueError, match="oracle"):
        pyaudit.scan(granite, oracle="torch")  # type: ignore[arg-type]

"""Pickle-era checkpoints written by torch itself, audited like safetensors (never unpickled).

A tiny model is built from a real config by transformers and saved with save_pretrained;
its saved tensors (exactly what transformers saves: tied weights dropped) are then written
by ``torch.save`` as ``pytorch_model.bin`` (zip and legacy formats), as shards with the
index transformers 4 wrote beside them, and by ``torch.distributed.checkpoint.save`` as
accelerate's FSDP sharded state (``pytorch_model_fsdp_0/``). Skipped without torch (CI
has it); the scans themselves never import torch.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

from pyaudit.testing.stores import tiny_config, write_json

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(scope="module")
def saved(
    tmp_path_factory: pytest.TempPathFactory, real_config: Any
) -> tuple[Path, dict[str, Any]]:
    """(config.json path, the state dict save_pretrained wrote) of a tiny Qwen3."""
    transformers.logging.set_verbosity_error()
    directory = tmp_path_factory.mktemp("qwen3")
    config = tiny_config(real_config("Qwen3-4B_qwen3"))
    config["tie_word_embeddings"] = False  # an lm_head of its own, as the 8B has
    write_json(directory / "config.json", config)
    auto = transformers.AutoConfig.from_pretrained(directory)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM._from_config(auto, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    state = safetensors_torch.load_file(directory / "model.safetensors")
    return directory / "config.json", state


def checkpoint(root: Path, saved: tuple[Path, dict[str, Any]], name: str) -> Path:
    ckpt = root / name
    ckpt.mkdir(parents=True)
    shutil.copy(saved[0], ckpt / "config.json")
    return ckpt


def test_bin_healthy_tensor_missing_layer_missing(
    tmp_path: Path, saved: Any, scan: Any
) -> None:
    state: dict[str, Any] = saved[1]
    healthy = checkpoint(tmp_path, saved, "healthy")
    torch.save(state, healthy / "pytorch_model.bin")
    one = checkpoint(tmp_path, saved, "tensor-missing")
    torch.save(
        {k: v for k, v in state.items() if k != "model.norm.weight"}, one / "pytorch_model.bin"
    )
    layer = checkpoint(tmp_path, saved, "layer-missing")
    torch.save(
        {k: v for k, v in state.items() if ".layers.1." not in k}, layer / "pytorch_model.bin"
    )
    rc, doc = scan(tmp_path)
    assert rc == 1
    got = {c["path"]: c for c in doc["checkpoints"]}
    ok = got["healthy"]
    assert (ok["status"], ok["kind"], ok["findings"]) == ("pass", "full", [])
    assert ok["tensors"]["found"] == ok["tensors"]["expected"] == len(state)
    assert ok["bytes"]["found"] == ok["bytes"]["expected"] == sum(
        t.numel() * t.element_size() for t in state.values()
    )
    assert ok["files"] == [
        {"path": "pytorch_model.bin", "bytes": (healthy / "pytorch_model.bin").stat().st_size,
         "tensors": len(state), "ok": True}
    ]  # fmt: skip
    missing = scan.the(got["tensor-missing"], "base-weights-missing")
    assert missing["tensors"] == ["model.norm.weight"]
    per_layer = sum(".layers.1." in k for k in state)
    dropped = scan.the(got["layer-missing"], "base-weights-missing")
    assert dropped["count"] == per_layer and got["layer-missing"]["tensors"]["missing"] == per_layer
    assert "model.layers.1.*" in dropped["message"]


def test_bin_legacy_format_and_dtype_drift(tmp_path: Path, saved: Any, scan: Any) -> None:
    """torch's pre-1.6 format (a sequence of pickles, not a zip) reads the same; fp32 saved
    where the config says bf16 is dtype drift, as in safetensors."""
    state: dict[str, Any] = saved[1]
    legacy = checkpoint(tmp_path, saved, "legacy")
    torch.save(state, legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    fp32 = checkpoint(tmp_path, saved, "fp32")
    torch.save({k: v.float() for k, v in state.items()}, fp32 / "pytorch_model.bin")
    _, doc = scan(tmp_path)
    got = {c["path"]: c for c in doc["checkpoints"]}
    assert (got["legacy"]["status"], got["legacy"]["findings"]) == ("pass", [])
    drift = scan.the(got["fp32"], "dtype-drift")
    assert drift["count"] == len(state) and "F32 where config says BF16" in drift["message"]


def shard(ckpt: Path, state: dict[str, Any], parts: int = 2) -> list[str]:
    """Shards and index as transformers 4 wrote them (save_pretrained(safe_serialization=False))."""
    names = list(state)
    files = [f"pytorch_model-{i + 1:05d}-of-{parts:05d}.bin" for i in range(parts)]
    weight_map = {n: files[i * parts // len(names)] for i, n in enumerate(names)}
    for f in files:
        torch.save({n: state[n] for n, g in weight_map.items() if g == f}, ckpt / f)
    total = sum(t.numel() * t.element_size() for t in state.values())
    write_json(
        ckpt / "pytorch_model.bin.index.json",
        {"metadata": {"total_size": total}, "weight_map": weight_map},
    )
    return files


def test_sharded_bin_and_its_index(tmp_path: Path, saved: Any, scan: Any) -> None:
    state: dict[str, Any] = saved[1]
    healthy = checkpoint(tmp_path, saved, "healthy")
    shard(healthy, state)
    gone = checkpoint(tmp_path, saved, "shard-gone")
    files = shard(gone, state)
    (gone / files[1]).unlink()
    cut = checkpoint(tmp_path, saved, "shard-cut")
    files = shard(cut, state)
    with open(cut / files[0], "r+b") as f:
        f.truncate((cut / files[0]).stat().st_size - 4096)
    moved = checkpoint(tmp_path, saved, "index-wrong")
    files = shard(moved, state)
    index = json.loads((moved / "pytorch_model.bin.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = files[0]  # it is in the second shard
    write_json(moved / "pytorch_model.bin.index.json", index)

    _, doc = scan(tmp_path)
    got = {c["path"]: c for c in doc["checkpoints"]}
    assert (got["healthy"]["status"], got["healthy"]["findings"]) == ("pass", [])
    assert len(got["healthy"]["files"]) == 2
    lost = scan.the(got["shard-gone"], "shard-missing")
    assert files[1] in lost["message"]
    # the tensors in the lost shard are reported once, by the shard's finding
    assert "base-weights-missing" not in scan.codes(got["shard-gone"])
    assert got["shard-gone"]["status"] == "fail"
    assert got["shard-cut"]["status"] == "fail"
    assert "shard-truncated" in scan.codes(got["shard-cut"])
    assert files[0] in scan.the(got["shard-cut"], "shard-truncated")["message"]
    wrong = [f for f in got["index-wrong"]["findings"] if f["code"] == "index-mismatch"]
    assert wrong and any("model.norm.weight" in f["tensors"] for f in wrong)


def test_adapter_bin(tmp_path: Path, saved: Any, scan: Any) -> None:
    """PEFT's pre-safetensors adapter_model.bin: an adapter, its tensors read as data."""
    state: dict[str, Any] = saved[1]
    ckpt = tmp_path / "adapter"
    ckpt.mkdir()
    base = str(saved[0].parent)
    write_json(
        ckpt / "adapter_config.json",
        {"peft_type": "LORA", "base_model_name_or_path": base, "r": 4, "lora_alpha": 8,
         "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"},
    )  # fmt: skip
    lora = {}
    for name, t in state.items():
        if name.endswith("self_attn.q_proj.weight"):
            stem = "base_model.model." + name[: -len(".weight")]
            lora[f"{stem}.lora_A.weight"] = torch.zeros(4, t.shape[1], dtype=torch.bfloat16)
            lora[f"{stem}.lora_B.weight"] = torch.zeros(t.shape[0], 4, dtype=torch.bfloat16)
    torch.save(lora, ckpt / "adapter_model.bin")
    rc, report = scan.one(ckpt)
    assert report["kind"] == "adapter" and report["status"] == "pass" and rc == 0
    assert report["adapter"]["tensors"] == len(lora)
    assert scan.codes(report) == ["adapter-only"]


def dcp_save(state: dict[str, Any], directory: Path) -> None:
    """accelerate's FSDP SHARDED_STATE_DICT layout, one process: {"model": state dict}."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": state}, storage_writer=dcp.FileSystemWriter(str(directory)))


def test_dcp_sharded_state(tmp_path: Path, saved: Any, scan: Any) -> None:
    """Complete: a warning with the consolidation command; a tensor absent from the plan,
    or a shard file gone: errors naming it, and no command."""
    state: dict[str, Any] = saved[1]
    whole = checkpoint(tmp_path, saved, "checkpoint-1")
    dcp_save(state, whole / "pytorch_model_fsdp_0")
    partial = checkpoint(tmp_path, saved, "checkpoint-2")
    dcp_save(
        {k: v for k, v in state.items() if k != "lm_head.weight"}, partial / "pytorch_model_fsdp_0"
    )
    gone = checkpoint(tmp_path, saved, "checkpoint-3")
    dcp_save(state, gone / "pytorch_model_fsdp_0")
    for f in (gone / "pytorch_model_fsdp_0").glob("*.distcp"):
        f.unlink()
    rc, doc = scan(tmp_path)
    assert rc == 1
    got = {c["path"]: c for c in doc["checkpoints"]}
    ok = got["checkpoint-1"]
    assert (ok["status"], ok["kind"], scan.codes(ok)) == ("warn", "full", ["unconsolidated"])
    assert ok["tensors"]["found"] == ok["tensors"]["expected"] == len(state)
    assert "`accelerate merge-weights checkpoint-1/pytorch_model_fsdp_0 OUTPUT_DIR`" in (
        scan.the(ok, "unconsolidated")["message"]
    )
    lacks = got["checkpoint-2"]
    assert lacks["status"] == "fail"
    assert scan.the(lacks, "base-weights-missing")["tensors"] == ["lm_head.weight"]
    assert "merge-weights" not in scan.the(lacks, "unconsolidated")["message"]
    empty = got["checkpoint-3"]
    assert empty["status"] == "fail" and "shard-missing" in scan.codes(empty)
    assert ".distcp is missing" in scan.the(empty, "shard-missing")["message"]

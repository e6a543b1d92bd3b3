"""The torch checkpoint reader against torch itself, on files torch writes here.

torch.load(weights_only=True) says what a file holds (names, dtypes, shapes, strides,
storage offsets); the reader must say the same without unpickling and without reading
tensor data. torch.distributed.checkpoint's own FileSystemReader says what a DCP
directory's .metadata holds. Skipped without torch (CI has it).
"""

from __future__ import annotations

import collections
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from pyaudit.formats.dcp import read_dcp  # noqa: E402
from pyaudit.formats.torch_pickle import read_torch  # noqa: E402

SAFETENSORS_NAME = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.complex64: "C64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
}  # fmt: skip


def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Tensors of a loaded object by dotted path, as the reader names them."""
    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flat(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def assert_same(path: Path) -> None:
    loaded = flat(torch.load(path, weights_only=True, map_location="cpu"))
    ckpt = read_torch(path)
    assert ckpt.ok, (ckpt.rule, ckpt.message, ckpt.problems())
    got = {t.name: t for t in ckpt.tensors()}
    assert list(got) == list(loaded)
    for name, tensor in loaded.items():
        t = got[name]
        assert t.dtype == SAFETENSORS_NAME[tensor.dtype], name
        assert t.shape == tuple(tensor.shape), name
        assert t.stride == tuple(tensor.stride()), name
        assert t.storage_offset == tensor.storage_offset(), name
    assert not ckpt.unsafe_globals() and not ckpt.unrecognised_globals()


def state_dict() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    base = torch.arange(24, dtype=torch.int64)
    sd: dict[str, Any] = collections.OrderedDict()
    sd["model.embed_tokens.weight"] = torch.randn(16, 8, generator=g)
    sd["model.layers.0.self_attn.q_proj.weight"] = torch.randn(8, 8, generator=g).to(torch.bfloat16)
    sd["model.layers.0.mlp.up_proj.weight"] = torch.randn(8, 4, generator=g).t()  # strided
    sd["model.norm.weight"] = torch.nn.Parameter(torch.ones(8, dtype=torch.float16))
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]  # tied: one storage, two names
    sd["view.a"] = base[2:10].view(2, 4)
    sd["view.b"] = base[12:]
    sd["fp8"] = torch.zeros(4, dtype=torch.float8_e4m3fn)
    sd["u16"] = torch.zeros(3, dtype=torch.uint16)
    sd["scalar"] = torch.tensor(2.5, dtype=torch.float64)
    sd["empty"] = torch.zeros(0, 5)
    sd["mask"] = torch.ones(2, 2, dtype=torch.bool)
    return sd


def test_zip_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save(state_dict(), path)
    assert_same(path)


def test_legacy_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "legacy.bin"
    # torch 2.13 writes float8/uint16 legacy files it cannot load back (UntypedStorage has
    # no dtype in its legacy loader): those stay out of the comparison.
    sd = {k: v for k, v in state_dict().items() if k not in ("fp8", "u16")}
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    ckpt = read_torch(path)
    assert ckpt.kind == "legacy"
    assert_same(path)


def test_nested_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(
        {
            "model": state_dict(),
            "step": 7,
            "opt": {"state": {0: {"exp_avg": torch.zeros(3)}}},
            "hist": [torch.ones(1), torch.ones(2)],
        },
        path,
    )
    assert_same(path)
    values = read_torch(path).values()
    assert values["step"] == 7


def test_real_model_state_dicts(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    for config in (
        transformers.LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        transformers.Qwen2Config(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
    ):
        model = transformers.AutoModelForCausalLM.from_config(config)
        path = tmp_path / f"{config.model_type}.bin"
        torch.save(model.state_dict(), path)  # as transformers < 5 saved pytorch_model.bin
        assert_same(path)


def test_reads_only_directory_and_pickle(tmp_path: Path) -> None:
    """A 64 MB file costs what its pickle and central directory cost."""
    path = tmp_path / "big.bin"
    torch.save({"w": torch.zeros(4096, 4096), "b": torch.zeros(4096)}, path)
    ckpt = read_torch(path)
    assert ckpt.ok
    assert os.path.getsize(path) > 64_000_000
    assert ckpt.bytes_read < 8192


def test_truncated_file_is_found(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save(state_dict(), path)
    data = path.read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 2])
    ckpt = read_torch(cut)
    assert not ckpt.ok
    assert ckpt.rule == "zip-truncated"


def test_dcp_metadata_matches_torch(tmp_path: Path) -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    sd = {
        "model": {k: v.detach().clone() for k, v in state_dict().items() if k != "lm_head.weight"},
        "step": 3,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(sd, checkpoint_id=tmp_path)
        meta = dcp.FileSystemReader(tmp_path).read_metadata()
    ours = read_dcp(tmp_path)
    assert ours.ok, ours.problems
    expected = {
        fqn: (
            SAFETENSORS_NAME[md.properties.dtype],
            tuple(md.size),
            sorted((tuple(c.offsets), tuple(c.sizes)) for c in md.chunks),
        )
        for fqn, md in meta.state_dict_metadata.items()
        if hasattr(md, "chunks")
    }
    got = {
        fqn: (t.dtype, t.shape, sorted((c.offsets, c.sizes) for c in t.chunks))
        for fqn, t in ours.tensors.items()
    }
    assert got == expected
    assert ours.objects == [
        f for f, md in meta.state_dict_metadata.items() if not hasattr(md, "chunks")
    ]
    items = {(i.fqn, i.chunk_offset): (i.relative_path, i.offset, i.length) for i in ours.items}
    assert items == {
        (k.fqn, tuple(k.offset or ())): (v.relative_path, v.offset, v.length)
        for k, v in meta.storage_data.items()
    }
    assert ours.prefix() == "model."


def test_dcp_missing_and_short_files(tmp_path: Path) -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"a": torch.ones(64, 64), "b": torch.ones(8)}, checkpoint_id=tmp_path)
    (distcp,) = tmp_path.glob("*.distcp")
    data = distcp.read_bytes()
    distcp.write_bytes(data[: len(data) // 2])
    ours = read_dcp(tmp_path)
    assert [p.rule for p in ours.problems] == ["storage-truncated"]
    distcp.unlink()
    ours = read_dcp(tmp_path)
    assert [p.rule for p in ours.problems] == ["storage-missing"]
    assert ours.missing_files == [distcp.name]

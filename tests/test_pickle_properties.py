"""Properties of the torch checkpoint reader, over generated state dicts and bytes.

- Whatever state dict torch.save writes (names, dtypes, shapes, views, shared storages,
  zip or legacy), the reader's table is torch.load(weights_only=True)'s.
- Whatever bytes it is given (a real file mutated, cut or spliced), it returns a value:
  a known rule, never an exception, and never a tensor whose storage it cannot name.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyaudit.formats.torch_pickle import parse_torch_bytes

torch = pytest.importorskip("torch")

RULES = {
    "ok", "io-error", "not-torch", "zip-truncated", "zip-malformed", "zip-overlap",
    "zip-unsupported", "pickle-truncated", "pickle-malformed", "pickle-limit",
    "pickle-unsupported", "legacy-tar", "legacy-malformed",
}  # fmt: skip
PROBLEMS = {
    "storage-missing",
    "storage-truncated",
    "storage-compressed",
    "tensor-out-of-bounds",
    "bad-tensor",
    "unknown-storage-type",
    "pickle-limit",
}
DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
    torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL", torch.float64: "F64",
}  # fmt: skip

names = st.text(st.characters(codec="utf-8", exclude_characters="."), min_size=1, max_size=12)
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def state_dicts(draw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    shared: list[Any] = []
    for name in draw(st.lists(names, min_size=0, max_size=6, unique=True)):
        kind = draw(st.sampled_from(["new", "view", "shared", "transpose"]))
        dtype = draw(st.sampled_from(list(DTYPES)))
        if kind == "shared" and shared:
            out[name] = draw(st.sampled_from(shared))
            continue
        base = torch.zeros(draw(shapes), dtype=dtype)
        if kind == "view" and base.numel() > 1:
            base = base.reshape(-1)[1:]
        elif kind == "transpose" and base.dim() >= 2:
            base = base.transpose(0, 1)
        out[name] = base
        shared.append(base)
    return out


def saved(sd: dict[str, Any], legacy: bool) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state_dicts(), st.booleans())
def test_table_is_torch_load(sd: dict[str, Any], legacy: bool) -> None:
    blob = saved(sd, legacy)
    loaded = torch.load(io.BytesIO(blob), weights_only=True)
    ckpt = parse_torch_bytes(blob)
    assert ckpt.ok, (ckpt.rule, ckpt.message, ckpt.problems())
    got = {t.name: t for t in ckpt.tensors()}
    assert list(got) == list(loaded)
    for name, tensor in loaded.items():
        t = got[name]
        assert (t.dtype, t.shape, t.stride, t.storage_offset) == (
            DTYPES[tensor.dtype],
            tuple(tensor.shape),
            tuple(tensor.stride()),
            tensor.storage_offset(),
        )
    # Tensors sharing a storage in torch share one in the table.
    keys = {t.name: t.storage_key for t in ckpt.tensors()}
    for a in loaded:
        for b in loaded:
            same = loaded[a].untyped_storage().data_ptr() == loaded[b].untyped_storage().data_ptr()
            if loaded[a].numel() and loaded[b].numel():
                assert (keys[a] == keys[b]) == same


def check_value(blob: bytes) -> None:
    ckpt = parse_torch_bytes(blob)
    assert ckpt.rule in RULES
    assert all(p.rule in PROBLEMS for p in ckpt.problems())
    storages = {s.key for s in ckpt.storages()}
    assert all(t.storage_key in storages for t in ckpt.tensors())
    if ckpt.rule != "ok":
        assert ckpt.message


SEED = saved({"a": torch.ones(3, 2), "b": torch.zeros(4, dtype=torch.bfloat16)[1:]}, legacy=False)
SEED_LEGACY = saved(
    {"a": torch.ones(3, 2), "b": torch.zeros(4, dtype=torch.bfloat16)[1:]}, legacy=True
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([SEED, SEED_LEGACY]),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
)
def test_mutated_files_are_values(seed: bytes, flips: list[tuple[int, int]]) -> None:
    blob = bytearray(seed)
    for at, value in flips:
        blob[at % len(blob)] = value
    check_value(bytes(blob))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([SEED, SEED_LEGACY]), st.integers(0, 10**6), st.integers(0, 10**6))
def test_cut_and_spliced_files_are_values(seed: bytes, a: int, b: int) -> None:
    a, b = sorted((a % (len(seed) + 1), b % (len(seed) + 1)))
    check_value(seed[:a])
    check_value(seed[:a] + seed[b:])
    if a < len(seed):
        assert not parse_torch_bytes(seed[:a]).ok


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_pickle_bytes_are_values(body: bytes) -> None:
    check_value(b"\x80\x02" + body)
    check_value(b"\x80\x04" + body + b".")

"""`--verify-data`: tensor bytes streamed by the native core, NaN / Inf / all-zero.

Files are written by the safetensors library's own writer from raw bit patterns, so
every float format's NaN and Inf encodings are exercised; expected counts come from
numpy over the same bits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import TensorSpec, serialize_file

from pyaudit.cli import main
from pyaudit.data import verify_data
from pyaudit.testing.sparse import write_sparse_safetensors

WRITER = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
          "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "U8": "uint8",
          "I64": "int64", "BOOL": "bool"}  # fmt: skip


def write(path: Path, arrays: dict[str, tuple[str, np.ndarray]]) -> Path:
    """Raw little-endian bit patterns under safetensors dtypes, by the real writer."""
    keep = []
    specs = {}
    for name, (dtype, data) in arrays.items():
        data = np.ascontiguousarray(data)
        keep.append(data)
        specs[name] = TensorSpec(
            dtype=WRITER[dtype], shape=data.shape, data_ptr=data.ctypes.data, data_len=data.nbytes
        )
    serialize_file(specs, str(path), metadata={"format": "pt"})
    return path


def bf16(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def test_counts_match_numpy_for_every_float_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal(10_000).astype(np.float32)
    f32[[3, 77, 9_999]] = np.nan
    f32[[5, 6]] = [np.inf, -np.inf]
    f16 = rng.standard_normal(5_000).astype(np.float16)
    f16[[0, 10]] = np.nan
    f16[11] = np.inf
    f64 = rng.standard_normal(3_000)
    f64[[1, 2, 3]] = [np.nan, np.inf, -np.inf]
    b = rng.standard_normal(4_000).astype(np.float32)
    b[[7, 8, 9]] = [np.nan, np.nan, np.inf]
    e4m3 = rng.integers(0, 0x7E, 1_000, dtype=np.uint8)  # finite patterns...
    e4m3[[10, 20]] = [0x7F, 0xFF]  # ...and E4M3's two NaNs (it has no Inf)
    e5m2 = rng.integers(0, 0x7B, 1_000, dtype=np.uint8)
    e5m2[[1, 2, 3]] = [0x7C, 0xFC, 0x7D]  # +Inf, -Inf, NaN
    path = write(tmp_path / "m.safetensors", {
        "f32": ("F32", f32), "f16": ("F16", f16), "f64": ("F64", f64), "bf16": ("BF16", bf16(b)),
        "e4m3": ("F8_E4M3", e4m3), "e5m2": ("F8_E5M2", e5m2),
    })  # fmt: skip
    (result,) = verify_data([path])
    assert result.header_ok and result.error is None
    assert result.nan == {"f32": 3, "f16": 2, "f64": 1, "bf16": 2, "e4m3": 2, "e5m2": 1}
    assert result.inf == {"f32": 2, "f16": 1, "f64": 2, "bf16": 1, "e5m2": 2}
    assert result.all_zero == []
    assert result.bytes_read == sum(a.nbytes for a in (f32, f16, f64, bf16(b), e4m3, e5m2))


def test_all_zero_tensors_and_what_is_not_one(tmp_path: Path) -> None:
    path = write(tmp_path / "z.safetensors", {
        "zeros": ("F32", np.zeros(1000, np.float32)),
        "negative_zeros": ("F32", np.full(10, -0.0, np.float32)),  # numerically zero
        "int_zeros": ("I64", np.zeros(7, np.int64)),
        "one_bit": ("U8", np.array([0, 0, 1], np.uint8)),
        "empty": ("F32", np.zeros(0, np.float32)),  # no elements: empty-tensors' business
        "tiny": ("F32", np.array([1e-45], np.float32)),  # a denormal is not zero
    })  # fmt: skip
    (result,) = verify_data([path])
    assert sorted(result.all_zero) == ["int_zeros", "negative_zeros", "zeros"]
    assert result.nan == {} and result.inf == {}


def test_tensors_across_buffer_reads_and_at_odd_offsets(tmp_path: Path) -> None:
    # 3 MB of F32 spans several 1 MiB reads; a 3-byte U8 tensor first puts the F32
    # data at an odd file offset.
    big = np.ones(786_433, np.float32)
    nan_at = [0, 262_143, 262_144, 524_288, 786_432]  # both sides of each 1 MiB boundary
    big[nan_at] = np.nan
    path = write(
        tmp_path / "b.safetensors",
        {"a_odd": ("U8", np.array([1, 2, 3], np.uint8)), "big": ("F32", big)},
    )
    (result,) = verify_data([path], jobs=2)
    assert result.nan == {"big": len(nan_at)}


def test_scan_reports_nan_inf_and_zeros(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "diverged" / "checkpoint-400"
    ckpt.mkdir(parents=True)
    w = np.ones(64, np.float32)
    w[:5] = np.nan
    write(ckpt / "model.safetensors", {
        "model.layers.0.mlp.down_proj.weight": ("F32", w),
        "model.layers.0.mlp.up_proj.weight": ("F32", np.array([np.inf, 1.0], np.float32)),
        "model.norm.weight": ("F32", np.zeros(8, np.float32)),
    })  # fmt: skip
    assert main(["scan", "--json", str(ckpt)]) == 0  # headers alone: nothing wrong
    capsys.readouterr()
    assert main(["scan", "--json", "--verify-data", str(ckpt)]) == 1
    (report,) = json.loads(capsys.readouterr().out)["checkpoints"]
    found = {f["code"]: f for f in report["findings"]}
    assert found["nan"]["severity"] == "error" and found["nan"]["tensors"] == [
        "model.layers.0.mlp.down_proj.weight"
    ]
    assert "(5)" in found["nan"]["message"]
    assert found["inf"]["tensors"] == ["model.layers.0.mlp.up_proj.weight"]
    assert found["all-zeros"]["severity"] == "warning"
    assert found["all-zeros"]["tensors"] == ["model.norm.weight"]


def test_memory_stays_flat_over_a_large_file(tmp_path: Path) -> None:
    # 512 MB of (sparse, all-zero) F32 data streamed in a child process: its peak RSS
    # must not grow with the file.
    path = tmp_path / "large.safetensors"
    write_sparse_safetensors(path, {"w": ("F32", (128 * 1024 * 1024,))})
    code = (
        "import sys\n"
        "from pyaudit.data import verify_data\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'): return int(line.split()[1]) * 1024\n"
        "before = hwm()\n"
        "(r,) = verify_data([sys.argv[1]])\n"
        "assert r.all_zero == ['w'] and r.bytes_read == 512 * 1024 * 1024, r\n"
        "print(hwm() - before)\n"
    )
    grew = int(subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                              capture_output=True, text=True, cwd=tmp_path).stdout)
    assert grew < 16 * 1024 * 1024, f"peak RSS grew by {grew} bytes over a 512 MB file"

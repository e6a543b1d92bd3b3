"""Hostile pickles and zips: each is a value (a rule and a message), never execution,
never unbounded memory.

The catalogue: globals that run code (GLOBAL os.system, STACK_GLOBAL builtins.eval, a
__reduce__ payload), memo bombs, deep nesting, huge counts and lengths, zip bombs,
truncated zips, overlapping records. Non-execution is proved with payloads that would
create a file (a control unpickles one in a child process and sees the file appear);
memory with the child process's peak RSS.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

from pyaudit.formats.torch_pickle import parse_torch_bytes, read_torch

MB = 1 << 20


def touch_payload(marker: Path, protocol: int = 2) -> bytes:
    """A pickle whose loading runs os.system('touch MARKER')."""

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    return pickle.dumps(Payload(), protocol=protocol)


def as_torch_zip(data_pkl: bytes, records: dict[str, bytes] | None = None) -> bytes:
    """A zip laid out as torch.save lays it out, around any data.pkl."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        for name, blob in (records or {}).items():
            z.writestr(f"archive/data/{name}", blob)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def real_zip() -> bytes:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"a": torch.ones(4, 4), "b": torch.zeros(8, dtype=torch.bfloat16)}, buf)
    return buf.getvalue()


# --- code is never run -------------------------------------------------------------


def test_control_payload_creates_its_file(tmp_path: Path) -> None:
    """The payloads below are live: unpickling one (in a child) creates its file."""
    marker = tmp_path / "control"
    payload = touch_payload(marker)
    subprocess.run(
        [sys.executable, "-c", "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"],
        input=payload,
        check=True,
        timeout=60,
    )
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_reduce_payload_is_reported_not_run(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = touch_payload(marker, protocol)
    for blob in (payload, as_torch_zip(payload)):
        path = tmp_path / "pytorch_model.bin"
        path.write_bytes(blob)
        ckpt = read_torch(path)
        if protocol >= 2 or blob is not payload:  # a bare protocol-0 pickle is not a torch file
            assert ckpt.rule == "ok", ckpt.message
            unsafe = {g.qualname for g in ckpt.unsafe_globals()}
            assert unsafe & {"os.system", "posix.system"}, ckpt.globals()
        assert not ckpt.tensors()
    assert not marker.exists()


def test_payload_beside_real_tensors(tmp_path: Path) -> None:
    """torch.save of a state dict that also holds a __reduce__ payload: the tensors are
    read, the global reported, nothing run."""
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(4), "x": Payload()}, path)
    ckpt = read_torch(path)
    assert ckpt.rule == "ok", ckpt.message
    assert [t.name for t in ckpt.tensors()] == ["w"]
    assert {g.qualname for g in ckpt.unsafe_globals()} & {"os.system", "posix.system"}
    assert not marker.exists()


@pytest.mark.parametrize(
    ("pkl", "name"),
    [
        (
            b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x8c\x0b__import__()\x85R.",
            "builtins.eval",
        ),
        (b"\x80\x02c__builtin__\nexec\nX\x01\x00\x00\x001\x85R.", "__builtin__.exec"),
        (b"\x80\x02csubprocess\nPopen\n]\x85R.", "subprocess.Popen"),
        (b"\x80\x02cbuiltins\ngetattr\n(cos\nenviron\nX\x03\x00\x00\x00gettR.", "builtins.getattr"),
        (b"\x80\x02\x82\x01)R.", "<extension code>.1"),
        (b"\x80\x02(cos\nsystem\nX\x04\x00\x00\x00trueo.", "os.system"),  # OBJ
        (b"\x80\x02(X\x04\x00\x00\x00trueios\nsystem\n.", "os.system"),  # INST
    ],
)
def test_code_running_globals_are_unsafe(pkl: bytes, name: str) -> None:
    for blob in (pkl, as_torch_zip(pkl)):
        ckpt = parse_torch_bytes(blob)
        assert ckpt.rule == "ok", ckpt.message
        assert name in {g.qualname for g in ckpt.unsafe_globals()}


# --- malformed and hostile structure -> rules -----------------------------------------------


CATALOGUE: list[tuple[str, bytes, str]] = [
    ("protocol-6", b"\x80\x06N.", "pickle-unsupported"),  # bare: not a pickle this reader knows
    ("no-stop", b"\x80\x02N", "pickle-truncated"),
    ("unknown-opcode", b"\x80\x02\xff.", "pickle-malformed"),
    ("pop-empty", b"\x80\x020.", "pickle-malformed"),
    ("get-unset", b"\x80\x02h\x05.", "pickle-malformed"),
    ("setitems-odd", b"\x80\x02}(Nu.", "pickle-malformed"),
    ("binunicode8-2^63", b"\x80\x04\x8d" + struct.pack("<Q", 1 << 63) + b"x.", "pickle-truncated"),
    ("binbytes8-2^64-1", b"\x80\x04\x8e" + b"\xff" * 8 + b".", "pickle-truncated"),
    ("long4-2^31", b"\x80\x02\x8b" + struct.pack("<I", 1 << 31) + b".", "pickle-truncated"),
    ("frame-2^63", b"\x80\x04\x95" + struct.pack("<Q", 1 << 63) + b"N.", "ok"),
    ("out-of-band-buffer", b"\x80\x05\x97.", "pickle-unsupported"),
    ("stack-global-not-strings", b"\x80\x04KK\x93.", "pickle-malformed"),
    ("marks-100k", b"\x80\x02" + b"(" * 100_000 + b"N.", "pickle-limit"),
]


@pytest.mark.parametrize(("name", "pkl", "rule"), CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_hostile_pickle_is_a_rule(name: str, pkl: bytes, rule: str) -> None:
    for blob in (pkl, as_torch_zip(pkl)):
        ckpt = parse_torch_bytes(blob)
        if blob is pkl and name == "protocol-6":
            assert ckpt.rule == "not-torch"
            continue
        assert ckpt.rule == rule, (name, ckpt.message)
        if rule != "ok":
            assert ckpt.message


def test_memo_sharing_bomb_is_bounded() -> None:
    """Each list holds the one before twice: 2^60 paths to name, a few hundred bytes."""
    pkl = b"\x80\x02]q\x00"
    for i in range(1, 61):
        pkl += b"](h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"eq" + bytes([i])
    pkl += b"."
    ckpt = parse_torch_bytes(pkl)
    assert ckpt.rule in ("pickle-limit", "ok")
    assert ckpt.rule == "pickle-limit" or any(p.rule == "pickle-limit" for p in ckpt.problems())


def test_deep_nesting_is_bounded() -> None:
    pkl = b"\x80\x02" + b"]" * 50_000 + b"a" * 49_999 + b"."
    ckpt = parse_torch_bytes(pkl)
    assert ckpt.rule == "ok"
    assert [p.rule for p in ckpt.problems()] == ["pickle-limit"]
    assert "deeper than 100" in ckpt.problems()[0].message


def test_cycle_is_bounded() -> None:
    pkl = b"\x80\x02]q\x00h\x00a."  # a list that holds itself
    ckpt = parse_torch_bytes(pkl)
    assert ckpt.rule == "ok"
    assert "cycle" in ckpt.problems()[0].message


def test_storage_numel_overflow_is_a_rule() -> None:
    pkl = (
        b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
        b"ctorch\nDoubleStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu\x8a\x08"
        + b"\xff" * 7
        + b"\x7f"
        + b"tQK\x00K\x04\x85K\x01\x85\x89}tRu."
    )
    ckpt = parse_torch_bytes(as_torch_zip(pkl, {"0": b"\0" * 32}))
    assert ckpt.rule == "ok"
    assert [p.rule for p in ckpt.problems()] == ["bad-tensor"]
    assert "overflows" in ckpt.problems()[0].message


def test_tensor_extent_overflow_and_out_of_bounds() -> None:
    def pkl(shape: bytes) -> bytes:
        return (
            b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
            b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00"
            + shape
            + b"\x89}tRu."
        )

    two40 = b"\x8a\x06\x00\x00\x00\x00\x00\x01"
    huge = two40 + two40 + b"\x86" + two40 + two40 + b"\x86"  # (2^40, 2^40) strided 2^40
    ckpt = parse_torch_bytes(as_torch_zip(pkl(huge), {"0": b"\0" * 16}))
    assert [p.rule for p in ckpt.problems()] == ["bad-tensor"]
    big = b"K\x08\x85K\x01\x85"  # 8 elements of a 4-element storage
    ckpt = parse_torch_bytes(as_torch_zip(pkl(big), {"0": b"\0" * 16}))
    assert [p.rule for p in ckpt.problems()] == ["tensor-out-of-bounds"]


# --- zips --------------------------------------------------------------------------


def test_truncated_zip_at_every_cut() -> None:
    blob = real_zip()
    for cut in range(0, len(blob), max(1, len(blob) // 300)):
        ckpt = parse_torch_bytes(blob[:cut])
        assert not ckpt.ok
        assert ckpt.rule in ("zip-truncated", "not-torch", "zip-malformed"), (cut, ckpt.rule)


def test_storage_record_missing_and_short() -> None:
    blob = real_zip()
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        names = z.namelist()
        pkl = z.read(next(n for n in names if n.endswith("data.pkl")))
    ckpt = parse_torch_bytes(as_torch_zip(pkl, {"0": b"\0" * 64}))
    assert [p.rule for p in ckpt.problems()] == ["storage-missing"]
    assert ckpt.problems()[0].tensor == "b"
    ckpt = parse_torch_bytes(as_torch_zip(pkl, {"0": b"\0" * 64, "1": b"\0" * 15}))
    assert [p.rule for p in ckpt.problems()] == ["storage-truncated"]


def test_zip_bomb_is_never_inflated() -> None:
    """Records that claim terabytes, compressed: sizes are numbers, nothing is inflated."""
    blob = real_zip()
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", b"\0" * (4 * MB), compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("archive/data/1", b"\0" * 16)
    ckpt = parse_torch_bytes(buf.getvalue())
    assert "storage-compressed" in [p.rule for p in ckpt.problems()]
    assert ckpt.bytes_read < 64 * 1024
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl, compress_type=zipfile.ZIP_DEFLATED)
    assert parse_torch_bytes(buf.getvalue()).rule == "zip-unsupported"


def _central_entries(blob: bytes) -> list[int]:
    """Offsets of the central directory entries."""
    end = blob.rindex(b"PK\x05\x06")
    count, _size, offset = struct.unpack("<HII", blob[end + 10 : end + 20])
    out, at = [], offset
    for _ in range(count):
        out.append(at)
        n, m, k = struct.unpack("<HHH", blob[at + 28 : at + 34])
        at += 46 + n + m + k
    return out


def test_overlapping_records() -> None:
    blob = bytearray(real_zip())
    entries = _central_entries(bytes(blob))
    second = struct.unpack("<I", blob[entries[1] + 42 : entries[1] + 46])[0]
    blob[entries[2] + 42 : entries[2] + 46] = struct.pack(
        "<I", second
    )  # third record at the second's place
    assert parse_torch_bytes(bytes(blob)).rule == "zip-overlap"


def test_directory_count_bomb() -> None:
    blob = bytearray(real_zip())
    end = bytes(blob).rindex(b"PK\x05\x06")
    blob[end + 8 : end + 12] = struct.pack("<HH", 0xFFFE, 0xFFFE)  # 65,534 entries claimed
    assert parse_torch_bytes(bytes(blob)).rule == "zip-malformed"
    blob[end + 16 : end + 20] = struct.pack("<I", 0xFFFFFFF0)  # directory past the end
    assert parse_torch_bytes(bytes(blob)).rule == "zip-truncated"


def test_neither_format() -> None:
    assert parse_torch_bytes(b"hello, world\n").rule == "not-torch"
    assert parse_torch_bytes(b"").rule == "not-torch"
    assert parse_torch_bytes(b"PK\x03\x04" + b"\0" * 100).rule == "zip-truncated"


# --- memory -------------------------------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import json, sys
    from pyaudit.formats.torch_pickle import read_torch  # the core is loaded before measuring
    def status(field):  # bytes; VmHWM is this process's peak since exec
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    before = status("VmRSS")
    ckpt = read_torch(sys.argv[1])
    grew = status("VmHWM") - before
    problems = [p.rule for p in ckpt.problems()]
    print(json.dumps({"rule": ckpt.rule, "problems": problems, "grew": grew}))
    """
)


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize(
    ("name", "pkl", "rule"),
    [
        # 4 MB of BINGET: 2 M references to one list, onto the stack (capped at 1 M items).
        ("memo-2M-refs", b"\x80\x02]q\x00(" + b"h\x00" * (2 * MB) + b"e.", "pickle-limit"),
        # a list holding itself 500 k times: read, but naming through it would not end.
        ("memo-500k-self-refs", b"\x80\x02]q\x00(" + b"h\x00" * (MB // 2) + b"e.", "pickle-limit"),
        ("lists-2M", b"\x80\x02" + b"]" * (2 * MB) + b".", "pickle-limit"),
        ("lists-1M-nested", b"\x80\x02" + b"]" * MB + b"a" * (MB - 1) + b".", "ok"),
        (
            "string-claims-2^62",
            b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62) + b"x" * MB,
            "pickle-truncated",
        ),
    ],
)
def test_memory_stays_bounded(tmp_path: Path, name: str, pkl: bytes, rule: str) -> None:
    path = tmp_path / f"{name}.bin"
    path.write_bytes(as_torch_zip(pkl))
    result = probe(path)
    assert result["rule"] == rule, result
    # What the walk costs is a bounded multiple of the pickle's own size (a value is ~64
    # bytes, at most one per opcode byte), never what the pickle claims.
    assert result["grew"] < 100 * len(pkl) + 32 * MB, result

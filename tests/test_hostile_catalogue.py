"""A catalogue of bad and odd inputs, one child process each.

Every case builds a store from the real checkpoints of ``examples/store`` (written by
``examples/make_store.py`` with transformers), breaks one thing, and runs one ``pyaudit``
command on it in a fresh interpreter with a timeout. Whatever the input, the answer is a
finding that names the file (and a checkpoint that is not PASS) or a usage error with a
message: never a PASS where something could not be read, never a traceback, never a hang,
and the child's peak memory stays within twice the largest file it could read plus a fixed
amount (VmHWM, as in test_header_rules.py).

Permission cases run as a user that is not root (CI runs as root, and root reads
everything): the child drops to ``nobody`` after importing what it needs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

STORE = Path(__file__).resolve().parents[1] / "examples" / "store"
MERGED = "output/v0-20250530-100000/checkpoint-200-merged"
ADAPTER = "output/v1-20250601-090000/checkpoint-50"
SHARD = "model-00001-of-00002.safetensors"
INDEX = "model.safetensors.index.json"
NOBODY = 65534
TIMEOUT = 60  # seconds a child may take; far above what any case needs
FIXED_MEMORY = 64 << 20  # bytes a child's peak may rise above 2x the largest file read

_CHILD = textwrap.dedent(
    """
    import contextlib, io, json, os, sys
    spec = json.loads(sys.argv[1])

    def status(field):  # bytes; VmHWM is this process's peak since exec
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    from pyaudit import cli
    if spec["warmup"]:
        # Everything a command imports on first use, imported while the interpreter's own
        # files are still readable (the user dropped to cannot read them).
        for argv in spec["warmup"]:
            with contextlib.redirect_stdout(io.StringIO()):
                with contextlib.redirect_stderr(io.StringIO()):
                    cli.main(argv)  # each scan has its own cache: nothing carries over
    if spec["drop"]:
        os.setgroups([])
        os.setgid(spec["drop"])
        os.setuid(spec["drop"])
    os.chdir(spec["cwd"])
    before = status("VmRSS")
    rc = cli.main(spec["argv"])
    sys.stdout.flush()
    with open(spec["record"], "w") as f:
        json.dump({"rc": rc, "grew": status("VmHWM") - before}, f)
    sys.exit(rc)
    """
)


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    grew: int

    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.stdout)
        return doc


# -P (3.11+): the child's working directory does not go on sys.path. On 3.10 it is a scratch
# directory (cwd below) with no pyaudit in it, so nothing shadows the installed package.
SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []


def _warmup_argv() -> list[list[str]]:
    merged = str(STORE / MERGED)
    config = str(STORE / MERGED / "config.json")
    shard = str(STORE / MERGED / SHARD)
    return [
        ["scan", "--json", merged],
        ["scan", merged],
        ["scan", str(STORE / "copied")],
        ["inspect", shard],
        ["inspect", "--json", shard],
        ["inspect", str(STORE / MERGED / "config.json")],
        ["expect", config],
        ["expect", "--json", config],
        ["scan", "--json", str(STORE / "output")],
    ]


def run_child(argv: list[str], cwd: Path, drop: bool = False) -> Result:
    """``pyaudit *argv`` in a fresh interpreter (as ``nobody`` when ``drop``)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", dir=cwd, delete=False) as record:
        os.chmod(record.name, 0o666)
        spec = {
            "argv": argv,
            "cwd": str(cwd),
            "record": record.name,
            "drop": NOBODY if drop and os.geteuid() == 0 else 0,
            "warmup": _warmup_argv() if drop and os.geteuid() == 0 else [],
        }
        try:
            proc = subprocess.run(
                [sys.executable, *SAFE_PATH, "-c", _CHILD, json.dumps(spec)],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                errors="replace",
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"pyaudit {' '.join(argv)} did not return within {TIMEOUT} s (a hang)")
        text = Path(record.name).read_text()
        os.unlink(record.name)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert text, f"the child died (exit {proc.returncode}): {proc.stderr[-2000:]}"
    info = json.loads(text)
    assert info["rc"] == proc.returncode
    return Result(proc.returncode, proc.stdout, proc.stderr, info["grew"])


# --- building blocks ---------------------------------------------------------------------


def merged(root: Path) -> Path:
    """A healthy sharded Qwen2.5-VL checkpoint (config, index, two shards, args.json)."""
    return Path(shutil.copytree(STORE / MERGED, root / "checkpoint-200-merged"))


def adapter(root: Path) -> Path:
    """A healthy LoRA checkpoint of a run whose args.json says train_type=lora, with its
    base model (the merged checkpoint) where args.json and adapter_config.json name it."""
    shutil.copytree(STORE / MERGED, root / MERGED)
    ckpt = Path(shutil.copytree(STORE / ADAPTER, root / ADAPTER))
    args = json.loads((ckpt / "args.json").read_text())
    args["train_type"] = "lora"
    (ckpt / "args.json").write_text(json.dumps(args, indent=2))
    return ckpt


def fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


_SOCKETS: list[socket.socket] = []


def unix_socket(path: Path) -> None:
    path.unlink(missing_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))  # stays bound (and on disk) while the case runs
    _SOCKETS.append(s)


def self_loop(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.symlink(path.name, path)


def sparse(path: Path, size: int) -> None:
    """A file of ``size`` bytes that takes no disk space (all holes)."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def cut(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def header_len(path: Path) -> int:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return int(n)


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    doc = json.loads(path.read_text())
    new = change(doc)
    path.write_text(json.dumps(doc if new is None else new, indent=2))


def set_field(path: Path, dotted: str, value: Any) -> None:
    def change(doc: Any) -> None:
        *parents, last = dotted.split(".")
        for p in parents:
            doc = doc[p]
        doc[last] = value

    edit_json(path, change)


def raw(path: Path, text: str | bytes) -> None:
    path.unlink(missing_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def unreadable(path: Path) -> None:
    os.chmod(path, 0)


def set_safetensors_header(path: Path, header: dict[str, Any] | bytes, data_len: int) -> None:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * data_len)


def first_tensor_header(path: Path) -> dict[str, Any]:
    n = header_len(path)
    doc: dict[str, Any] = json.loads(path.read_bytes()[8 : 8 + n])
    return doc


# --- the catalogue -------------------------------------------------------------------------


@dataclass
class Case:
    """One hostile input: ``build(root)`` makes it under ``root`` and returns the argv."""

    id: str
    build: Callable[[Path], list[str]]
    # "finding": scan --json exits 1, the checkpoint ``at`` is not PASS, and a finding with
    # one of ``codes`` names ``names`` in its message. "usage": exit 2, a message on
    # stderr. "answer": exits 0 or 1 with a report (inspect/expect), see ``check``.
    expect: str = "finding"
    codes: tuple[str, ...] = ()
    names: str = ""
    at: str | None = None
    status: tuple[str, ...] = ("fail",)
    drop: bool = False  # run as a user that is not root
    largest: int | None = None  # bytes of the largest file pyaudit may read (else: measured)
    check: Callable[[Result], None] | None = None
    rc: tuple[int, ...] = (1,)


CASES: list[Case] = []


def case(
    id: str, **kw: Any
) -> Callable[[Callable[[Path], list[str]]], Callable[[Path], list[str]]]:
    def register(build: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        CASES.append(Case(id, build, **kw))
        return build

    return register


def scan_json(path: Path) -> list[str]:
    return ["scan", "--json", str(path)]


# Weights: a shard of a sharded checkpoint, cut at every boundary of the format.

TRUNC = ("shard-truncated", "corrupt-header")


def _shard_cut(keep: Callable[[Path], int]) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        ckpt = merged(root)
        cut(ckpt / SHARD, keep(ckpt / SHARD))
        return scan_json(root)

    return build


for _id, _keep in {
    "empty": lambda p: 0,
    "inside-length-prefix": lambda p: 4,
    "length-prefix-only": lambda p: 8,
    "inside-header": lambda p: 8 + header_len(p) // 2,
    "header-without-data": lambda p: 8 + header_len(p),
    "inside-first-tensor": lambda p: 8 + header_len(p) + 3,
    "inside-data": lambda p: (8 + header_len(p) + p.stat().st_size) // 2,
    "one-byte-short": lambda p: p.stat().st_size - 1,
}.items():
    CASES.append(Case(f"weights-cut-{_id}", _shard_cut(_keep), codes=TRUNC, names=SHARD))


@case("weights-trailing-bytes", codes=TRUNC, names=SHARD)
def _(root: Path) -> list[str]:
    ckpt = merged(root)
    with open(ckpt / SHARD, "ab") as f:
        f.write(b"\0")
    return scan_json(root)


@case("weights-length-2^63", codes=TRUNC, names=SHARD)
def _(root: Path) -> list[str]:
    ckpt = merged(root)
    data = (ckpt / SHARD).read_bytes()
    (ckpt / SHARD).write_bytes(struct.pack("<Q", 2**63) + data[8:])
    return scan_json(root)


@case("weights-fifo", codes=("unreadable", "corrupt-header"), names=SHARD)
def _(root: Path) -> list[str]:
    fifo(merged(root) / SHARD)
    return scan_json(root)


@case("weights-socket", codes=("unreadable", "corrupt-header", "shard-missing"), names=SHARD)
def _(root: Path) -> list[str]:
    unix_socket(merged(root) / SHARD)
    return scan_json(root)


@case("weights-permission-denied", codes=("unreadable",), names=SHARD, drop=True)
def _(root: Path) -> list[str]:
    unreadable(merged(root) / SHARD)
    return scan_json(root)


@case("weights-symlink-loop", codes=("unreadable", "shard-missing"), names=SHARD)
def _(root: Path) -> list[str]:
    self_loop(merged(root) / SHARD)
    return scan_json(root)


@case("weights-dangling-symlink", codes=("unreadable", "shard-missing"), names=SHARD)
def _(root: Path) -> list[str]:
    ckpt = merged(root)
    (ckpt / SHARD).unlink()
    os.symlink("blobs/gone", ckpt / SHARD)
    return scan_json(root)


@case("weights-directory-named-like-a-shard", codes=("shard-missing", "unreadable"), names=SHARD)
def _(root: Path) -> list[str]:
    ckpt = merged(root)
    (ckpt / SHARD).unlink()
    (ckpt / SHARD).mkdir()
    return scan_json(root)


@case("weights-git-lfs-pointer", codes=("lfs-pointer",), names=SHARD)
def _(root: Path) -> list[str]:
    raw(
        merged(root) / SHARD,
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 3900000000\n",
    )
    return scan_json(root)


@case("weights-pickle-named-safetensors", codes=("corrupt-header",), names=SHARD)
def _(root: Path) -> list[str]:
    raw(merged(root) / SHARD, pickle.dumps({"model.norm.weight": [1.0] * 64}, protocol=2))
    return scan_json(root)


@case("weights-header-not-utf8", codes=("corrupt-header",), names=SHARD)
def _(root: Path) -> list[str]:
    path = merged(root) / SHARD
    data = bytearray(path.read_bytes())
    data[12] = 0xFF
    path.write_bytes(bytes(data))
    return scan_json(root)


@case("weights-header-a-list", codes=("corrupt-header",), names=SHARD)
def _(root: Path) -> list[str]:
    set_safetensors_header(merged(root) / SHARD, b"[]      ", 0)
    return scan_json(root)


@case("weights-negative-offset", codes=("corrupt-header",), names=SHARD)
def _(root: Path) -> list[str]:
    path = merged(root) / SHARD
    header = first_tensor_header(path)
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [-4, header[name]["data_offsets"][1]]
    set_safetensors_header(path, header, path.stat().st_size)
    return scan_json(root)


@case("weights-shape-2^64", codes=("corrupt-header",), names=SHARD)
def _(root: Path) -> list[str]:
    path = merged(root) / SHARD
    header = first_tensor_header(path)
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [2**64, 2]
    set_safetensors_header(path, header, 16)
    return scan_json(root)


@case("weights-unknown-dtype", codes=("corrupt-header",), names=SHARD)
def _(root: Path) -> list[str]:
    path = merged(root) / SHARD
    header = first_tensor_header(path)
    for k, v in header.items():
        if k != "__metadata__":
            v["dtype"] = "BF17"
    set_safetensors_header(path, header, path.stat().st_size)
    return scan_json(root)


@case("adapter-weights-cut-inside-data", codes=TRUNC, names="adapter_model.safetensors")
def _(root: Path) -> list[str]:
    ckpt = adapter(root)
    path = ckpt / "adapter_model.safetensors"
    cut(path, path.stat().st_size - 100)
    return scan_json(ckpt)


@case(
    "adapter-weights-fifo",
    codes=("unreadable", "corrupt-header"),
    names="adapter_model.safetensors",
)
def _(root: Path) -> list[str]:
    ckpt = adapter(root)
    fifo(ckpt / "adapter_model.safetensors")
    return scan_json(ckpt)


# Pickled weights only, read as data (never unpickled): what is not a torch file, or
# would run code if loaded, says so; a pickle of no tensor is no weights.


def _only_bin(root: Path, data: bytes) -> list[str]:
    ckpt = merged(root)
    for name in (SHARD, "model-00002-of-00002.safetensors", INDEX):
        (ckpt / name).unlink()
    raw(ckpt / "pytorch_model.bin", data)
    return scan_json(root)


@case("weights-only-pickle", codes=("no-weights",), names="pytorch_model.bin")
def _(root: Path) -> list[str]:
    return _only_bin(root, pickle.dumps({"w": [0.0] * 8}, protocol=2))


OS_SYSTEM = b"\x80\x02cos\nsystem\nq\x00X\x06\x00\x00\x00exit 3"  # GLOBAL os.system, an arg


@case("bin-os-system", codes=("unsafe-pickle",), names="os.system")
def _(root: Path) -> list[str]:
    # GLOBAL os.system, then a REDUCE that would call it: never called (the test's
    # child would die or the marker appear if it were)
    return _only_bin(root, OS_SYSTEM + b"q\x01\x85q\x02Rq\x03.")


@case("bin-os-system-then-garbage", codes=("unsafe-pickle",), names="os.system")
def _(root: Path) -> list[str]:
    # pickle.load would have called os.system before reaching the broken opcode
    return _only_bin(root, OS_SYSTEM + b"q\x01\x85Rq\x03\xfe\xfe")


@case("bin-not-a-pickle", codes=("corrupt-pickle",), names="pytorch_model.bin")
def _(root: Path) -> list[str]:
    return _only_bin(root, b"\x00\x01 neither zip nor pickle \xff" * 64)


@case("bin-zip-cut", codes=("shard-truncated", "corrupt-pickle"), names="pytorch_model.bin")
def _(root: Path) -> list[str]:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        z.writestr("archive/version", "3\n")
    return _only_bin(root, buf.getvalue()[:-30])


# The index: every way it can fail to be an index.

INDEX_BAD = ("invalid-file", "index-mismatch")


def _index(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        make(merged(root) / INDEX)
        return scan_json(root)

    return build


for _id, _make, _codes in [
    ("empty", lambda p: raw(p, ""), INDEX_BAD),
    ("cut-inside", lambda p: cut(p, p.stat().st_size // 2), INDEX_BAD),
    ("a-list", lambda p: raw(p, "[]"), INDEX_BAD),
    ("not-utf8", lambda p: raw(p, b'{"weight_map": {"\xff": 1}}'), INDEX_BAD),
    ("nested-100000-deep", lambda p: raw(p, "[" * 100_000 + "]" * 100_000), INDEX_BAD),
    ("weight_map-a-list", lambda p: set_field(p, "weight_map", ["model.norm.weight"]), INDEX_BAD),
    (
        "weight_map-value-a-number",
        lambda p: edit_json(p, lambda d: d["weight_map"].update({next(iter(d["weight_map"])): 1})),
        INDEX_BAD,
    ),
    ("total_size-a-string", lambda p: set_field(p, "metadata.total_size", "78048"), INDEX_BAD),
    ("total_size-negative", lambda p: set_field(p, "metadata.total_size", -1), INDEX_BAD),
    ("total_size-2^70", lambda p: set_field(p, "metadata.total_size", 2**70), INDEX_BAD),
    ("metadata-a-list", lambda p: set_field(p, "metadata", [1]), INDEX_BAD),
    ("fifo", fifo, ("unreadable",)),
    ("socket", unix_socket, ("unreadable",)),
    ("symlink-loop", self_loop, ("unreadable",)),
]:
    _status = ("fail", "warn") if "total_size" in _id or "metadata" in _id else ("fail",)
    _rc = (0, 1) if _status != ("fail",) else (1,)
    CASES.append(
        Case(f"index-{_id}", _index(_make), codes=_codes, names=INDEX, status=_status, rc=_rc)
    )

CASES.append(
    Case(
        "index-permission-denied", _index(unreadable), codes=("unreadable",), names=INDEX, drop=True
    )
)
CASES.append(
    Case(
        "index-300MB-sparse",
        _index(lambda p: sparse(p, 300 << 20)),
        codes=("unreadable",),
        names=INDEX,
        largest=0,
    )
)


# config.json: unreadable, unparseable, and every field the Qwen2.5-VL spec reads given
# the wrong type or an impossible value.

CONFIG_BAD = ("invalid-file",)


def _config(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        make(merged(root) / "config.json")
        return scan_json(root)

    return build


for _id, _make, _codes in [
    ("empty", lambda p: raw(p, ""), CONFIG_BAD),
    ("cut-inside", lambda p: cut(p, p.stat().st_size // 2), CONFIG_BAD),
    ("a-list", lambda p: raw(p, "[]"), CONFIG_BAD),
    ("null", lambda p: raw(p, "null"), CONFIG_BAD),
    ("not-utf8", lambda p: raw(p, b'{"model_type": "qwen2_5_vl\xff"}'), CONFIG_BAD),
    ("nested-100000-deep", lambda p: raw(p, '{"a":' * 100_000 + "1" + "}" * 100_000), CONFIG_BAD),
    ("fifo", fifo, ("unreadable",)),
    ("socket", unix_socket, ("unreadable",)),
    ("symlink-loop", self_loop, ("unreadable",)),
    ("model_type-a-number", lambda p: set_field(p, "model_type", 7), CONFIG_BAD),
    ("num_hidden_layers-a-string", lambda p: set_field(p, "num_hidden_layers", "2"), CONFIG_BAD),
    ("num_hidden_layers-negative", lambda p: set_field(p, "num_hidden_layers", -1), CONFIG_BAD),
    ("num_hidden_layers-10^30", lambda p: set_field(p, "num_hidden_layers", 10**30), CONFIG_BAD),
    ("num_hidden_layers-a-float", lambda p: set_field(p, "num_hidden_layers", 2.5), CONFIG_BAD),
    ("num_hidden_layers-true", lambda p: set_field(p, "num_hidden_layers", True), CONFIG_BAD),
    (
        "hidden_size-zero",
        lambda p: set_field(p, "hidden_size", 0),
        ("invalid-file", "shape-mismatch"),
    ),
    ("hidden_size-null", lambda p: set_field(p, "hidden_size", None), CONFIG_BAD),
    ("vocab_size-2^63", lambda p: set_field(p, "vocab_size", 2**63), CONFIG_BAD),
    (
        "num_attention_heads-zero",
        lambda p: set_field(p, "num_attention_heads", 0),
        ("invalid-file", "shape-mismatch"),
    ),
    (
        "head_dim-a-list-with-10^8-heads",
        lambda p: (set_field(p, "head_dim", [0]), set_field(p, "num_attention_heads", 300_000_000)),
        CONFIG_BAD,
    ),
    ("intermediate_size-a-dict", lambda p: set_field(p, "intermediate_size", {"a": 1}), CONFIG_BAD),
    (
        "tie_word_embeddings-a-string",
        lambda p: set_field(p, "tie_word_embeddings", "no"),
        CONFIG_BAD,
    ),
    ("vision_config-a-list", lambda p: set_field(p, "vision_config", [16]), CONFIG_BAD),
    (
        "vision_config.depth-a-string",
        lambda p: set_field(p, "vision_config.depth", "2"),
        CONFIG_BAD,
    ),
    ("vision_config.depth-10^9", lambda p: set_field(p, "vision_config.depth", 10**9), CONFIG_BAD),
]:
    CASES.append(Case(f"config-{_id}", _config(_make), codes=_codes, names="config.json"))

# The dtype is a warning-level check (dtype-drift): a dtype that is not one is a warning.
for _id, _value in [("a-number", 5), ("unknown", "float128")]:
    CASES.append(
        Case(
            f"config-torch_dtype-{_id}",
            _config(lambda p, v=_value: set_field(p, "torch_dtype", v)),
            codes=CONFIG_BAD,
            names="config.json",
            status=("warn",),
            rc=(0,),
        )
    )
CASES.append(
    Case(
        "config-permission-denied",
        _config(unreadable),
        codes=("unreadable",),
        names="config.json",
        drop=True,
    )
)
CASES.append(
    Case(
        "config-300MB-sparse",
        _config(lambda p: sparse(p, 300 << 20)),
        codes=("unreadable",),
        names="config.json",
        largest=0,
    )
)


# adapter_config.json of a LoRA checkpoint that passes as shipped.


def _adapter_config(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        ckpt = adapter(root)
        make(ckpt / "adapter_config.json")
        return scan_json(ckpt)

    return build


for _id, _make, _codes in [
    ("cut-inside", lambda p: cut(p, p.stat().st_size // 2), CONFIG_BAD),
    ("a-list", lambda p: raw(p, "[1, 2]"), CONFIG_BAD),
    ("fifo", fifo, ("unreadable",)),
    ("r-a-string", lambda p: set_field(p, "r", "8"), ("invalid-file", "adapter-mismatch")),
    ("r-negative", lambda p: set_field(p, "r", -8), ("invalid-file", "adapter-mismatch")),
    (
        "target_modules-a-number",
        lambda p: set_field(p, "target_modules", 3),
        ("invalid-file", "adapter-mismatch"),
    ),
    (
        "base_model_name_or_path-a-number",
        lambda p: set_field(p, "base_model_name_or_path", 3),
        CONFIG_BAD,
    ),
]:
    CASES.append(
        Case(
            f"adapter_config-{_id}",
            _adapter_config(_make),
            codes=_codes,
            names="adapter_config.json",
        )
    )

CASES.append(
    Case(
        "adapter_config-permission-denied",
        _adapter_config(unreadable),
        codes=("unreadable",),
        names="adapter_config.json",
        drop=True,
    )
)


# args.json: what the run meant to save. Unreadable, the intent cannot be checked.


def _args(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        ckpt = adapter(root)
        make(ckpt / "args.json")
        return scan_json(ckpt)

    return build


for _id, _make, _codes in [
    ("cut-inside", lambda p: cut(p, p.stat().st_size // 2), CONFIG_BAD),
    ("a-list", lambda p: raw(p, '["lora"]'), CONFIG_BAD),
    ("fifo", fifo, ("unreadable",)),
    ("socket", unix_socket, ("unreadable",)),
    ("train_type-a-number", lambda p: set_field(p, "train_type", 1), CONFIG_BAD),
    ("train_type-a-list", lambda p: set_field(p, "train_type", ["lora"]), CONFIG_BAD),
    ("model-a-number", lambda p: set_field(p, "model", 3), CONFIG_BAD),
]:
    CASES.append(
        Case(
            f"args.json-{_id}",
            _args(_make),
            codes=_codes,
            names="args.json",
            status=("fail", "warn"),
            rc=(0, 1) if _id == "model-a-number" else (1,),
        )
    )

CASES.append(
    Case(
        "args.json-permission-denied",
        _args(unreadable),
        codes=("unreadable",),
        names="args.json",
        drop=True,
    )
)


# training_args.yaml (LLaMA-Factory) beside a full checkpoint.


def _yaml(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        ckpt = merged(root)
        (ckpt / "args.json").unlink()
        path = ckpt / "training_args.yaml"
        path.write_text("model_name_or_path: Qwen/Qwen2.5-VL-7B-Instruct\nfinetuning_type: full\n")
        make(path)
        return scan_json(root)

    return build


for _id, _make, _codes in [
    ("binary", lambda p: raw(p, bytes(range(256)) * 4), CONFIG_BAD),
    ("fifo", fifo, ("unreadable",)),
    ("symlink-loop", self_loop, ("unreadable",)),
]:
    CASES.append(
        Case(f"training_args.yaml-{_id}", _yaml(_make), codes=_codes, names="training_args.yaml")
    )

CASES.append(
    Case(
        "training_args.yaml-permission-denied",
        _yaml(unreadable),
        codes=("unreadable",),
        names="training_args.yaml",
        drop=True,
    )
)
CASES.append(
    Case(
        "training_args.yaml-300MB-sparse",
        _yaml(lambda p: sparse(p, 300 << 20)),
        codes=("unreadable",),
        names="training_args.yaml",
        largest=0,
    )
)


# trainer_state.json is never read: a FIFO there must not hang a scan.


@case(
    "trainer_state.json-fifo-in-a-checkpoint-without-weights",
    codes=("no-weights",),
    names="trainer_state.json",
)
def _(root: Path) -> list[str]:
    ckpt = root / "run" / "checkpoint-7"
    ckpt.mkdir(parents=True)
    fifo(ckpt / "trainer_state.json")
    return scan_json(root)


# Directory shapes.


def _no_checkpoints(result: Result) -> None:
    assert "no checkpoint" in result.stderr, result.stderr
    doc = result.json()
    assert doc["checkpoints"] == [] and doc["summary"]["checkpoints"] == 0, doc


@case("dir-empty", expect="usage", check=_no_checkpoints)
def _(root: Path) -> list[str]:
    (root / "empty").mkdir()
    return scan_json(root / "empty")


@case("dir-only-unrelated-files", expect="usage", check=_no_checkpoints)
def _(root: Path) -> list[str]:
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("nothing here")
    (root / "notes" / "data.csv").write_text("a,b\n")
    return scan_json(root / "notes")


@case("dir-2000-empty-subdirectories", expect="usage", check=_no_checkpoints)
def _(root: Path) -> list[str]:
    for i in range(2000):
        (root / "store" / f"d{i}").mkdir(parents=True)
    return scan_json(root / "store")


@case("dir-unreadable-subdirectory", codes=("unreadable",), names="locked", drop=True)
def _(root: Path) -> list[str]:
    merged(root / "store")
    locked = root / "store" / "locked"
    merged(locked)
    os.chmod(locked, 0)
    return scan_json(root / "store")


@case("dir-unreadable-root", codes=("unreadable",), names="locked", drop=True)
def _(root: Path) -> list[str]:
    locked = root / "locked"
    merged(locked)
    os.chmod(locked, 0)
    return scan_json(locked)


@case("dir-unreadable-checkpoint-listable", codes=("unreadable",), names="config.json", drop=True)
def _(root: Path) -> list[str]:
    ckpt = merged(root)
    for p in ckpt.iterdir():
        os.chmod(p, 0)
    return scan_json(root)


@case("dir-symlink-cycles", codes=TRUNC, names=SHARD)
def _(root: Path) -> list[str]:
    ckpt = merged(root / "store" / "a")
    cut(ckpt / SHARD, 100)
    os.symlink("..", root / "store" / "a" / "up")
    os.symlink(".", root / "store" / "here")
    self_loop(root / "store" / "loop")
    return scan_json(root / "store")


@case("dir-1500-levels-deep", codes=("unreadable",), names="not searched")
def _(root: Path) -> list[str]:
    deep = root / "s"
    os.makedirs(deep)
    fd = os.open(deep, os.O_RDONLY)
    try:  # relative mkdir: the whole path would pass PATH_MAX
        for _ in range(1500):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        for name in os.listdir(STORE / MERGED):
            with open(STORE / MERGED / name, "rb") as src:
                data = src.read()
            if name == SHARD:
                data = data[:100]
            wfd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(wfd, data)
            os.close(wfd)
    finally:
        os.close(fd)
    return ["scan", "--json", "s"]


def _unicode_name(name: str) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        ckpt = Path(shutil.copytree(STORE / MERGED, root / "store" / name))
        cut(ckpt / SHARD, 100)
        return scan_json(root / "store")

    return build


CASES.append(
    Case(
        "dir-unicode-and-spaces",
        _unicode_name("ckpt ü 中文 🙂 -merged"),
        codes=TRUNC,
        names=SHARD,
        at="ckpt ü 中文 🙂 -merged",
    )
)
CASES.append(
    Case(
        "dir-newline-and-tab-in-name",
        _unicode_name("a\nb\tc-merged"),
        codes=TRUNC,
        names=SHARD,
        at="a\nb\tc-merged",
    )
)
CASES.append(
    Case(
        "dir-not-utf8-name",
        _unicode_name(os.fsdecode(b"ckpt-\xff-merged")),
        codes=TRUNC,
        names=SHARD,
    )
)


def _table_lists(result: Result) -> None:
    assert "FAIL" in result.stdout and "ckpt ü 中文 🙂" in result.stdout, result.stdout


@case("dir-unicode-terminal-report", expect="answer", rc=(1,), check=_table_lists)
def _(root: Path) -> list[str]:
    _unicode_name("ckpt ü 中文 🙂 -merged")(root)
    return ["scan", str(root / "store")]


@case("path-a-fifo", expect="usage")
def _(root: Path) -> list[str]:
    fifo(root / "p")
    return scan_json(root / "p")


@case("path-a-socket", expect="usage")
def _(root: Path) -> list[str]:
    unix_socket(root / "p")
    return scan_json(root / "p")


@case("path-a-dangling-symlink", expect="usage")
def _(root: Path) -> list[str]:
    os.symlink("nowhere", root / "p")
    return scan_json(root / "p")


# inspect and expect.


def _says(*words: str) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        for w in words:
            assert w in result.stdout + result.stderr, (w, result.stdout, result.stderr)

    return check


@case("inspect-a-pickle", expect="answer", rc=(1,), check=_says("not a safetensors file"))
def _(root: Path) -> list[str]:
    raw(root / "pytorch_model.bin", b"PK\x03\x04" + b"\0" * 60)
    raw(root / "model.safetensors", pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    return ["inspect", str(root / "model.safetensors")]


@case("inspect-a-zip", expect="answer", rc=(1,), check=_says("not a safetensors file"))
def _(root: Path) -> list[str]:
    raw(root / "pytorch_model.bin", b"PK\x03\x04" + b"\0" * 600)
    return ["inspect", str(root / "pytorch_model.bin")]


@case("inspect-a-fifo", expect="answer", rc=(1, 2))
def _(root: Path) -> list[str]:
    fifo(root / "model.safetensors")
    return ["inspect", "--json", str(root / "model.safetensors")]


@case(
    "inspect-permission-denied",
    expect="answer",
    rc=(1,),
    drop=True,
    check=_says("ermission denied"),
)
def _(root: Path) -> list[str]:
    path = merged(root) / SHARD
    unreadable(path)
    return ["inspect", str(path)]


@case("inspect-empty-file", expect="answer", rc=(1,))
def _(root: Path) -> list[str]:
    raw(root / "model.safetensors", b"")
    return ["inspect", "--json", str(root / "model.safetensors")]


def _expect_config(
    make: Callable[[Path], None], json_out: bool = True
) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        ckpt = merged(root)
        make(ckpt / "config.json")
        return ["expect", *(["--json"] if json_out else []), str(ckpt / "config.json")]

    return build


def _stderr_names_config(result: Result) -> None:
    assert "config.json" in result.stderr, result.stderr


for _id, _make in [
    ("fifo", fifo),
    ("cut-inside", lambda p: cut(p, p.stat().st_size // 2)),
    ("a-list", lambda p: raw(p, "[]")),
    (
        "head_dim-a-list-with-10^8-heads",
        lambda p: (set_field(p, "head_dim", [0]), set_field(p, "num_attention_heads", 300_000_000)),
    ),
    ("num_hidden_layers-10^30", lambda p: set_field(p, "num_hidden_layers", 10**30)),
    ("vocab_size-a-string", lambda p: set_field(p, "vocab_size", "151936")),
    ("model_type-unknown", lambda p: set_field(p, "model_type", "no-such-family")),
]:
    CASES.append(
        Case(
            f"expect-{_id}",
            _expect_config(_make),
            expect="answer",
            rc=(1,),
            check=_stderr_names_config,
        )
    )

CASES.append(
    Case(
        "expect-permission-denied",
        _expect_config(unreadable),
        expect="answer",
        rc=(1,),
        drop=True,
        check=_stderr_names_config,
    )
)


@case("expect-no-such-file", expect="usage")
def _(root: Path) -> list[str]:
    return ["expect", str(root / "missing" / "config.json")]


@case("expect-directory-without-config", expect="usage")
def _(root: Path) -> list[str]:
    (root / "d").mkdir()
    return ["expect", str(root / "d")]


# --- running the catalogue -----------------------------------------------------------------


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A scratch directory that ``nobody`` can enter (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="pyaudit-hostile-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        for s in _SOCKETS:
            s.close()
        _SOCKETS.clear()
        # chmod and rm, not os.walk and shutil.rmtree: the deep case would pass
        # Python's recursion limit.
        subprocess.run(["chmod", "-R", "u+rwx", str(path)], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", str(path)], check=True)


def _can_drop() -> bool:
    if os.geteuid() != 0:
        return True  # already not root: permissions apply
    return hasattr(os, "setuid")


def _largest_file(root: Path) -> int:
    """The largest regular file under ``root`` (walked without recursion)."""
    largest = 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    largest = max(largest, entry.stat(follow_symlinks=False).st_size)
            except OSError:
                continue
    return largest


def test_catalogue_is_large() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_healthy_stores_pass(world_dir: Path) -> None:
    """The controls: each case breaks one thing of a store that passes as built."""
    full = run_child(scan_json(merged(world_dir / "a")), world_dir)
    lora = run_child(scan_json(adapter(world_dir / "b")), world_dir)
    for result in (full, lora):
        doc = result.json()
        assert result.rc == 0, doc
        assert [c["status"] for c in doc["checkpoints"]] == ["pass"], doc


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, world_dir: Path) -> None:
    if case.drop and not _can_drop():
        pytest.skip("no way to run as a user that is not root")
    argv = case.build(world_dir)
    largest = case.largest if case.largest is not None else _largest_file(world_dir)
    result = run_child(argv, world_dir, drop=case.drop)
    assert result.grew <= 2 * largest + FIXED_MEMORY, (result.grew, largest)
    if case.expect == "usage":
        assert result.rc == 2, (result.rc, result.stdout, result.stderr)
        assert result.stderr.strip(), "a usage error says why on stderr"
    elif case.expect == "answer":
        assert result.rc in case.rc, (result.rc, result.stdout, result.stderr)
    else:
        assert result.rc in case.rc, (result.rc, result.stderr, result.stdout)
        doc = result.json()
        assert doc["checkpoints"], doc
        reports = doc["checkpoints"]
        if case.at is not None:
            reports = [c for c in reports if c["path"] == case.at]
            assert reports, [c["path"] for c in doc["checkpoints"]]
        hits = [
            (c, f)
            for c in reports
            for f in c["findings"]
            if f["code"] in case.codes and case.names in f["message"]
        ]
        assert hits, json.dumps([c["findings"] for c in reports], indent=1)[:4000]
        for c, _ in hits:
            assert c["status"] in case.status, c
    if case.check is not None:
        case.check(result)


# --- a writer truncating files while the scan reads them ---------------------------------


def test_concurrent_writer_truncating_files(world_dir: Path) -> None:
    """A shard and the config rewritten and cut, over and over, while scans run: each scan
    reports what it read (PASS only of a complete checkpoint), never a traceback."""
    ckpt = merged(world_dir / "store")
    shard = (ckpt / SHARD).read_bytes()
    config = (ckpt / "config.json").read_bytes()
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            keep = (i * 7919) % len(shard)
            with open(ckpt / SHARD, "r+b") as f:
                f.truncate(keep)
                f.seek(keep)
                f.write(shard[keep:])
            with open(ckpt / "config.json", "r+b") as f:
                f.truncate(i % len(config))
                f.seek(i % len(config))
                f.write(config[i % len(config) :])

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    seen: set[str] = set()
    try:
        for _ in range(8):
            result = run_child(scan_json(world_dir / "store"), world_dir)
            (report,) = result.json()["checkpoints"]
            seen.add(report["status"])
            if report["status"] == "pass":
                assert report["tensors"]["found"] == report["tensors"]["expected"] == 57, report
                assert report["model_type"] == "qwen2_5_vl", report
            else:
                assert result.rc == 1
                assert {f["code"] for f in report["findings"]} & {
                    "shard-truncated",
                    "corrupt-header",
                    "invalid-file",
                    "unreadable",
                    "index-mismatch",
                    "base-weights-missing",
                    "shape-mismatch",
                }, report["findings"]
    finally:
        stop.set()
        thread.join()

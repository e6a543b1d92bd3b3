"""Files and index: corrupt headers, LFS pointers, cut shards, lost shards, inconsistent
indexes, strays. Small real checkpoints (every byte by the safetensors library) of a tiny
Qwen3 built from the real Qwen3-4B config, then broken the way copies and tools break them.

One root cause, one finding: tensors in a broken or absent shard are not reported again as
base-weights-missing (the count of missing tensors still says how many are gone).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from pyaudit.testing.stores import manifest_tensors, tiny_config, write_checkpoint

SHARDS = [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
INDEX = "model.safetensors.index.json"


@pytest.fixture
def tiny(real_config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    config = tiny_config(real_config("Qwen3-4B_qwen3"))
    return config, manifest_tensors(config)


@pytest.fixture
def ckpt(tmp_path: Path, tiny: Any) -> Path:
    """A healthy 3-shard checkpoint with its index."""
    config, tensors = tiny
    out = tmp_path / "ckpt"
    write_checkpoint(out, config, tensors, shards=3, sparse=False)
    assert sorted(p.name for p in out.glob("*.safetensors")) == SHARDS
    return out


def index_of(ckpt: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ckpt / INDEX).read_text())
    return doc


def write_index(ckpt: Path, doc: dict[str, Any]) -> None:
    (ckpt / INDEX).write_text(json.dumps(doc, indent=2))


def tensors_in(ckpt: Path, shard: str) -> list[str]:
    return sorted(t for t, f in index_of(ckpt)["weight_map"].items() if f == shard)


def header(path: Path) -> tuple[int, dict[str, Any]]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n])


def rewrite_header(path: Path, doc: dict[str, Any], pad_to: int | None = None) -> None:
    """Replace a file's header (same data section), padded to its old length when it fits."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    text = json.dumps(doc, separators=(",", ":")).encode()
    size = max(n, len(text)) if pad_to is None else pad_to
    text += b" " * (size - len(text))
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


def test_healthy_baseline(ckpt: Path, scan: Any, tiny: Any) -> None:
    rc, report = scan.one(ckpt)
    assert rc == 0 and report["status"] == "pass" and report["findings"] == []
    assert report["tensors"] == {"found": 24, "expected": 24, "missing": 0, "unexpected": 0}
    assert (
        report["bytes"]["found"]
        == report["bytes"]["expected"]
        == index_of(ckpt)["metadata"]["total_size"]
    )


# --- corrupt-header: one test per kind of rule, on a real shard -------------------------------


def break_unknown_dtype(path: Path) -> str:
    _, doc = header(path)
    name = next(k for k in doc if k != "__metadata__")
    doc[name]["dtype"] = "BF17"
    rewrite_header(path, doc)
    return name


def break_extent(path: Path) -> str:
    _, doc = header(path)
    name = next(k for k in doc if k != "__metadata__" and len(doc[k]["shape"]) == 2)
    doc[name]["shape"][0] += 1  # shape x dtype no longer equals the data extent
    rewrite_header(path, doc)
    return name


def break_overlap(path: Path) -> str:
    _, doc = header(path)
    names = sorted((k for k in doc if k != "__metadata__"), key=lambda k: doc[k]["data_offsets"][0])
    _a, b = names[0], names[1]
    doc[b]["data_offsets"][0] -= 2  # b starts inside a
    doc[b]["data_offsets"][1] -= 2
    rewrite_header(path, doc)
    return b


def break_json(path: Path) -> str:
    data = bytearray(path.read_bytes())
    data[8] = ord("[")
    path.write_bytes(bytes(data))
    return ""


def break_length(path: Path) -> str:
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 10**12)
    path.write_bytes(bytes(data))
    return ""


def break_duplicate(path: Path) -> str:
    n, doc = header(path)
    names = [k for k in doc if k != "__metadata__"]
    text = json.dumps(doc, separators=(",", ":"))
    entry = json.dumps({names[0]: doc[names[0]]}, separators=(",", ":"))[1:-1]
    text = text[:-1] + "," + entry + "}"  # the same name twice (json.loads keeps the last)
    data = path.read_bytes()
    raw = text.encode() + b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return names[0]


@pytest.mark.parametrize(
    ("breaker", "rule", "words"),
    [
        (break_unknown_dtype, "unknown-dtype", "unknown dtype 'BF17'"),
        (break_extent, "extent-mismatch", ""),
        (break_overlap, "offsets-overlap", ""),
        (break_json, "not-json", "JSON"),
        (break_length, "header-too-large", "1000000000000"),
        (break_duplicate, "duplicate-tensor", ""),
    ],
)
def test_corrupt_header(ckpt: Path, scan: Any, breaker: Any, rule: str, words: str) -> None:
    shard = SHARDS[1]
    lost = tensors_in(ckpt, shard)
    tensor = breaker(ckpt / shard)
    rc, report = scan.one(ckpt)
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["corrupt-header"], report["findings"]
    f = scan.the(report, "corrupt-header")
    assert f["severity"] == "error" and f["count"] == 1
    assert f["message"].startswith(f"{shard}: ") and f["message"].endswith(f"[{rule}]")
    assert words in f["message"]
    if tensor:
        assert f["tensors"] == [tensor] and tensor in f["message"]
    entry = next(e for e in report["files"] if e["path"] == shard)
    assert entry["ok"] is False and entry["rule"] == rule and entry["tensors"] == 0
    # Its tensors are gone for the loader, and counted so, but said once (above).
    assert report["tensors"]["missing"] == len(lost)
    assert report["tensors"]["found"] == 24 - len(lost)


def test_lfs_pointer(ckpt: Path, scan: Any) -> None:
    shard = SHARDS[2]
    lost = tensors_in(ckpt, shard)
    (ckpt / shard).write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 3900233256\n"
    )
    rc, report = scan.one(ckpt)
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["lfs-pointer"]
    f = scan.the(report, "lfs-pointer")
    assert f["severity"] == "error"
    for words in (shard, "Git LFS pointer", "git lfs pull", "3900233256"):
        assert words in f["message"]
    assert report["tensors"]["missing"] == len(lost)


def test_shard_cut_short(ckpt: Path, scan: Any) -> None:
    shard = ckpt / SHARDS[2]
    size = shard.stat().st_size
    os.truncate(shard, size - 1000)  # a copy that stopped early
    rc, report = scan.one(ckpt)
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["shard-truncated"]
    f = scan.the(report, "shard-truncated")
    assert f["severity"] == "error"
    assert f["message"].startswith(SHARDS[2]) and f["message"].endswith("[data-truncated]")
    assert "truncated" in f["message"]
    entry = next(e for e in report["files"] if e["path"] == SHARDS[2])
    assert entry == {
        "path": SHARDS[2],
        "bytes": size - 1000,
        "tensors": 0,
        "ok": False,
        "rule": "data-truncated",
    }


def test_shard_with_trailing_bytes(ckpt: Path, scan: Any) -> None:
    with open(ckpt / SHARDS[0], "ab") as f:
        f.write(b"\0" * 16)
    rc, report = scan.one(ckpt)
    assert rc == 1
    assert scan.codes(report) == ["shard-truncated"]
    f = scan.the(report, "shard-truncated")
    assert SHARDS[0] in f["message"] and "16 trailing bytes" in f["message"]
    assert f["message"].endswith("[trailing-bytes]")


def test_index_names_an_absent_shard(ckpt: Path, scan: Any) -> None:
    lost = tensors_in(ckpt, SHARDS[1])
    (ckpt / SHARDS[1]).unlink()
    rc, report = scan.one(ckpt)
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["shard-missing"]
    f = scan.the(report, "shard-missing")
    assert f["severity"] == "error" and f["count"] == len(lost)
    assert sorted(f["tensors"]) == lost
    assert (
        f"{INDEX} names 1 shard that is not there: {SHARDS[1]} ({len(lost)} tensors)"
        == f["message"]
    )
    assert report["tensors"]["missing"] == len(lost)


def test_gap_in_shard_numbering(ckpt: Path, scan: Any) -> None:
    """The index was rewritten for the shards that remained: only the numbering tells."""
    doc = index_of(ckpt)
    doc["weight_map"] = {t: f for t, f in doc["weight_map"].items() if f != SHARDS[1]}
    doc["metadata"]["total_size"] = sum(
        (ckpt / s).stat().st_size - 8 - header(ckpt / s)[0] for s in (SHARDS[0], SHARDS[2])
    )
    write_index(ckpt, doc)
    (ckpt / SHARDS[1]).unlink()
    rc, report = scan.one(ckpt)
    assert rc == 1
    gap = scan.the(report, "shard-missing")
    assert gap["severity"] == "error" and gap["count"] == 1
    assert (
        "shard numbering of model-*-of-00003 has a gap" in gap["message"]
        and SHARDS[1] in gap["message"]
    )
    assert "index-mismatch" not in scan.codes(report)


def test_gap_in_numbering_without_index(ckpt: Path, scan: Any) -> None:
    (ckpt / INDEX).unlink()
    (ckpt / SHARDS[2]).unlink()
    rc, report = scan.one(ckpt)
    assert rc == 1
    assert SHARDS[2] in scan.the(report, "shard-missing")["message"]
    assert scan.the(report, "index-missing")["count"] == 2


def test_tensor_placed_in_the_wrong_shard(ckpt: Path, scan: Any) -> None:
    doc = index_of(ckpt)
    assert doc["weight_map"]["model.norm.weight"] == SHARDS[2]
    doc["weight_map"]["model.norm.weight"] = SHARDS[0]
    write_index(ckpt, doc)
    rc, report = scan.one(ckpt)
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["index-mismatch"]  # one fault, one finding
    f = scan.the(report, "index-mismatch")
    assert f["severity"] == "error" and f["tensors"] == ["model.norm.weight"]
    assert f"model.norm.weight -> {SHARDS[0]}, but it is in {SHARDS[2]}" in f["message"]
    assert report["tensors"]["missing"] == 0


def test_shard_holds_an_unlisted_tensor(ckpt: Path, scan: Any) -> None:
    doc = index_of(ckpt)
    del doc["weight_map"]["model.norm.weight"]
    write_index(ckpt, doc)
    rc, report = scan.one(ckpt)
    assert rc == 1
    assert scan.codes(report) == ["index-mismatch"]
    f = scan.the(report, "index-mismatch")
    assert f["tensors"] == ["model.norm.weight"]
    assert "1 tensor held by shards is not listed" in f["message"] and INDEX in f["message"]


def test_total_size_wrong(ckpt: Path, scan: Any) -> None:
    doc = index_of(ckpt)
    right = doc["metadata"]["total_size"]
    doc["metadata"]["total_size"] = right + 4096
    write_index(ckpt, doc)
    rc, report = scan.one(ckpt)
    assert rc == 1
    f = scan.the(report, "index-mismatch")
    assert f["severity"] == "error"
    assert (
        f"total_size {right + 4096} but the shards hold {right} bytes of tensors (off by -4096)"
        in f["message"]
    )


def test_total_size_is_the_sum_of_file_sizes(ckpt: Path, scan: Any) -> None:
    doc = index_of(ckpt)
    tensor_bytes = doc["metadata"]["total_size"]
    doc["metadata"]["total_size"] = sum((ckpt / s).stat().st_size for s in SHARDS)
    write_index(ckpt, doc)
    rc, report = scan.one(ckpt)
    assert rc == 0 and report["status"] == "warn"
    f = scan.the(report, "index-mismatch")
    assert f["severity"] == "warning"
    assert "sum of file sizes" in f["message"] and "exactly the 3 headers" in f["message"]
    assert f"({tensor_bytes})" in f["message"]


def test_index_missing(ckpt: Path, scan: Any) -> None:
    (ckpt / INDEX).unlink()
    rc, report = scan.one(ckpt)
    assert rc == 1 and report["status"] == "fail"
    assert scan.codes(report) == ["index-missing"]
    f = scan.the(report, "index-missing")
    assert f["severity"] == "error" and f["count"] == 3
    assert INDEX in f["message"] and "from_pretrained cannot load them" in f["message"]
    assert report["tensors"]["missing"] == 0  # every tensor is there; only the index is not


def test_stray_weights_beside_the_index(ckpt: Path, tiny: Any, scan: Any, tmp_path: Path) -> None:
    """A stale single-file copy beside the shards: loaders never read it, and its
    (different) contents must not be audited as if they were the checkpoint's."""
    _config, tensors = tiny
    stale = {n: ("F32", s) for n, (d, s) in tensors.items()}  # an old fp32 export
    write_checkpoint(tmp_path / "old", None, stale, sparse=False)
    (tmp_path / "old" / "model.safetensors").rename(ckpt / "model.safetensors")
    rc, report = scan.one(ckpt)
    assert rc == 0 and report["status"] == "warn"
    assert scan.codes(report) == ["stray-weights"]
    f = scan.the(report, "stray-weights")
    assert f["severity"] == "warning" and f["count"] == 1
    assert f["message"].startswith(
        "model.safetensors beside the shards of model.safetensors.index.json"
    )
    assert report["bytes"]["found"] == report["bytes"]["expected"]
    assert [e["path"] for e in report["files"]] == [*SHARDS, "model.safetensors"]


def test_unreadable_file(ckpt: Path, scan: Any) -> None:
    shard = ckpt / SHARDS[1]
    shard.chmod(0)
    try:
        try:
            with open(shard, "rb"):
                pytest.skip("this user can read a chmod-000 file (root)")
        except PermissionError:
            pass
        rc, report = scan.one(ckpt)
    finally:
        shard.chmod(0o644)
    assert rc == 1
    assert scan.codes(report) == ["unreadable"]
    f = scan.the(report, "unreadable")
    assert f["severity"] == "error" and SHARDS[1] in f["message"] and "ermission" in f["message"]


def test_dangling_symlink_is_a_finding_not_a_traceback(ckpt: Path, scan: Any) -> None:
    """An interrupted hub download: the snapshot's link points at a blob never written."""
    (ckpt / SHARDS[1]).unlink()
    os.symlink("../../blobs/0f1e2d3c4b5a", ckpt / SHARDS[1])
    rc, report = scan.one(ckpt)
    assert rc == 1
    assert scan.codes(report) == ["unreadable"]
    f = scan.the(report, "unreadable")
    assert f["severity"] == "error" and SHARDS[1] in f["message"] and "No such file" in f["message"]
    assert report["tensors"]["missing"] == 8


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"weight_map": ', "is not a readable index (no weight_map object)"),
        ("[1, 2]", "is not a readable index (no weight_map object)"),
        (None, "1 tensor held by shards is not listed"),
    ],
)
def test_malformed_index_is_a_finding_not_a_traceback(
    ckpt: Path, scan: Any, text: str | None, words: str
) -> None:
    if text is None:  # a weight_map entry that is not a file name
        doc = index_of(ckpt)
        doc["weight_map"]["model.norm.weight"] = [SHARDS[2]]
        write_index(ckpt, doc)
    else:
        (ckpt / INDEX).write_text(text)
    rc, report = scan.one(ckpt)
    assert rc == 1
    f = scan.the(report, "index-mismatch")
    assert f["severity"] == "error" and words in f["message"]

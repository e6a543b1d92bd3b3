"""The native fast path (pyaudit.auditing.match, csrc/tensor_specs.cpp) against the reference path.

The fast path may only ever say "clean" for a checkpoint the reference path (auditing/compare.py,
the index check in auditing/structure.py) finds nothing in. Here Hypothesis writes real checkpoints
of a real model's layout (tiny dims, every byte by the safetensors writer) with faults
mixed in: dropped, extra, renamed, re-typed and re-shaped tensors, a tensor in two shards,
index entries missing, misplaced and naming tensors no shard holds. Each is audited with
the fast path and without it (every memo emptied between), and the reports must be equal.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import realdata

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("safetensors")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyaudit import _core  # noqa: E402
from pyaudit.auditing import match  # noqa: E402
from pyaudit.auditing.cache import AuditCache  # noqa: E402
from pyaudit.auditing.results import AuditOptions  # noqa: E402
from pyaudit.headers import read_headers  # noqa: E402
from pyaudit.sweep import scan as sweep_scan  # noqa: E402
from pyaudit.testing.sparse import tensor_nbytes  # noqa: E402
from pyaudit.testing.stores import manifest_tensors, tiny_config, write_json  # noqa: E402

CONFIG = realdata.MODELS / "Qwen2.5-VL-7B-Instruct_qwen2_5_vl" / "config.json"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")

Files = dict[str, dict[str, Any]]  # file name -> tensor name -> (dtype, shape)
FAULTS = (
    "drop", "extra", "rename", "dtype", "shape", "empty", "twice", "lora",
    "index-drop", "index-move", "index-phantom", "prefix",
)  # fmt: skip


def _base() -> tuple[dict[str, Any], dict[str, tuple[str, tuple[int, ...]]]]:
    config = tiny_config(json.loads(CONFIG.read_text()))
    return config, manifest_tensors(config)


def _write(root: Path, config: dict[str, Any], files: Files, index: dict[str, str]) -> None:
    from pyaudit.testing.stores import _write_real

    root.mkdir(parents=True)
    for name, tensors in files.items():
        _write_real(root / name, tensors, {"format": "pt"})
    write_json(root / "config.json", config)
    total = sum(tensor_nbytes(*t) for tensors in files.values() for t in tensors.values())
    index_doc = {"metadata": {"total_size": total}, "weight_map": index}
    write_json(root / "model.safetensors.index.json", index_doc)


def _faulty(
    draw: st.DrawFn, tensors: dict[str, tuple[str, tuple[int, ...]]]
) -> tuple[Files, dict[str, str]]:
    names = list(tensors)
    files: dict[str, dict[str, Any]] = {s: {} for s in SHARDS}
    index: dict[str, str] = {}
    for i, n in enumerate(names):
        shard = SHARDS[i * 2 // len(names)]
        files[shard][n] = tensors[n]
        index[n] = shard
    for fault in draw(st.lists(st.sampled_from(FAULTS), max_size=3)):
        victim = draw(st.sampled_from(names))
        shard = index.get(victim, SHARDS[0])
        other = SHARDS[1] if shard == SHARDS[0] else SHARDS[0]
        held = files[shard].get(victim)
        if fault == "drop":
            files[shard].pop(victim, None)
        elif fault == "extra":
            files[shard][victim + "_extra"] = ("F32", (2,))
            if draw(st.booleans()):
                index[victim + "_extra"] = shard
        elif fault == "rename" and held is not None:
            files[shard]["renamed." + victim] = files[shard].pop(victim)
        elif fault == "dtype" and held is not None:
            files[shard][victim] = ("F32" if held[0] != "F32" else "F16", held[1])
        elif fault == "shape" and held is not None:
            files[shard][victim] = (held[0], (*held[1][:-1], held[1][-1] + 1) if held[1] else (2,))
        elif fault == "empty" and held is not None:
            files[shard][victim] = (held[0], (0,))
        elif fault == "twice" and held is not None:
            files[other][victim] = held
        elif fault == "lora" and victim.endswith(".weight"):
            stem = victim[: -len(".weight")]
            files[shard][stem + ".lora_A.weight"] = ("F32", (2, 2))
            files[shard][stem + ".lora_B.weight"] = ("F32", (2, 2))
        elif fault == "index-drop":
            index.pop(victim, None)
        elif fault == "index-move":
            index[victim] = other
        elif fault == "index-phantom":
            index[victim + ".phantom"] = shard
        elif fault == "prefix":
            for s in SHARDS:
                files[s] = {"module." + n: t for n, t in files[s].items()}
    return files, index


def _reports(root: Path, fast: bool) -> list[dict[str, Any]]:
    """A scan with a cache of its own (empty memo tables), the fast path on or off."""
    return [c.to_json() for c in sweep_scan([str(root)], AuditOptions(fast_path=fast))]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fast_path_agrees_with_reference(data: st.DataObject) -> None:
    config, tensors = _base()
    files, index = _faulty(data.draw, tensors)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ckpt"
        _write(root, config, files, index)
        assert _reports(root, True) == _reports(root, False)


def test_clean_checkpoint_takes_the_fast_path(tmp_path: Path) -> None:
    """A healthy checkpoint is settled natively: no per-tensor table is built for it."""
    config, tensors = _base()
    files, index = {s: {} for s in SHARDS}, {}
    for i, (n, t) in enumerate(tensors.items()):
        shard = SHARDS[i * 2 // len(tensors)]
        files[shard][n] = t
        index[n] = shard
    _write(tmp_path / "ckpt", config, files, index)
    root = [str(tmp_path / "ckpt")]
    cache = AuditCache()
    (report,) = sweep_scan(root, AuditOptions(), cache=cache)
    assert report.status == "pass" and report.kind == "full", report.findings
    assert len(cache.file_tables) == 0  # no Found per tensor was made
    assert len(cache.comparisons) == 0  # compare_full never ran
    reference_cache = AuditCache(fast=False)
    (reference,) = sweep_scan(root, AuditOptions(fast_path=False), cache=reference_cache)
    assert len(reference_cache.file_tables) == 2 and len(reference_cache.comparisons) == 1
    assert reference.to_json() == report.to_json()


# --- the native table itself -----------------------------------------------------------


def _headers(tmp_path: Path, files: dict[str, dict[str, Any]]) -> list[Any]:
    from pyaudit.testing.stores import _write_real

    for name, tensors in files.items():
        _write_real(tmp_path / name, tensors, {"format": "pt"})
    return [h.native for h in read_headers([tmp_path / n for n in files])]


def test_counts(tmp_path: Path) -> None:
    headers = _headers(
        tmp_path,
        {
            "a.safetensors": {"w": ("F32", (2, 3)), "b": ("F16", (4,)), "x": ("F32", (1,))},
            "b.safetensors": {"w": ("F32", (2, 3)), "c": ("BF16", (3, 2))},
        },
    )
    specs = _core.TensorSpecs(
        ["w", "b", "c", "opt", "gone"],
        dtypes=["F32", "F32", None, None, "F32"],
        shapes=[(2, 3), (4,), (2, 3), None, (1,)],
        groups=[0, 0, 1, 1, 1],
        optional=[False, False, False, True, False],
    )
    assert len(specs) == 5 and specs.required == 4
    m = specs.match(headers, [0, 1])
    assert (m.tensors, m.known) == (5, 4)  # "x" unknown
    assert m.required_seen == 3 and m.optional_seen == 0  # w, b, c; "gone" never seen
    assert m.dtype_differs == 1  # b is F16, F32 stated
    assert m.shape_differs == 1  # c is (3, 2), (2, 3) stated; same element count
    assert m.repeated == 1  # w in both files
    assert m.in_group == [2, 1]  # a: w, b (group 0); b: c (group 1), not w
    assert _core.count_repeated_names(headers) == 1
    assert _core.count_names_containing(headers, "w") == 2


def test_shape_spelled_with_spaces_is_read(tmp_path: Path) -> None:
    """A header may spell a shape "[ 2 , 3 ]": equal to (2, 3), and (3, 2) is not."""
    body = json.dumps({"t": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}})
    body = body.replace("[2, 3]", "[ 2 ,3 ]")
    raw = body.encode()
    path = tmp_path / "spaced.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(24))
    headers = [h.native for h in read_headers([path])]
    assert headers[0].ok
    assert _core.TensorSpecs(["t"], shapes=[(2, 3)]).match(headers).shape_differs == 0
    assert _core.TensorSpecs(["t"], shapes=[(3, 2)]).match(headers).shape_differs == 1
    assert _core.TensorSpecs(["t"], shapes=[(6,)]).match(headers).shape_differs == 1


def test_hostile_names_and_bad_arguments(tmp_path: Path) -> None:
    headers = _headers(tmp_path, {"a.safetensors": {"w": ("F32", (1,))}})
    # A lone surrogate (json.loads makes one from "\\ud800") matches nothing, raises nothing.
    assert _core.TensorSpecs(["\ud800", "w"]).match(headers).known == 1
    with pytest.raises(ValueError, match="unknown dtype"):
        _core.TensorSpecs(["w"], dtypes=["F33"])
    with pytest.raises(ValueError, match="one item per name"):
        _core.TensorSpecs(["w", "v"], dtypes=["F32"])
    with pytest.raises(ValueError, match="one item per header"):
        _core.TensorSpecs(["w"]).match(headers, [0, 1])
    # A name given twice keeps its first spec.
    twice = _core.TensorSpecs(["w", "w"], dtypes=["F32", "F16"])
    assert len(twice) == 1 and twice.match(headers).dtype_differs == 0


def test_invalid_headers_are_skipped(tmp_path: Path) -> None:
    good = _headers(tmp_path, {"a.safetensors": {"w": ("F32", (1,))}})
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05" + bytes(7) + b"{oops")
    headers = good + [h.native for h in read_headers([bad])]
    assert not headers[1].ok
    m = _core.TensorSpecs(["w"]).match(headers)
    assert (m.tensors, m.known, m.in_group) == (1, 1, [0, 0])


def test_digest_is_of_the_header_text(tmp_path: Path) -> None:
    """Equal header bytes, equal digests (batch or single read); any change, another."""
    a = _headers(tmp_path, {"a.safetensors": {"w": ("F32", (2,))}})[0]
    (tmp_path / "b.safetensors").write_bytes((tmp_path / "a.safetensors").read_bytes())
    b = _core.read_header(str(tmp_path / "b.safetensors"))
    c = _headers(tmp_path, {"c.safetensors": {"v": ("F32", (2,))}})[0]
    assert a.digest == b.digest != c.digest


def test_store_sweep_with_read_ahead_matches_agrees(tmp_path: Path, monkeypatch: Any) -> None:
    """A store of one run's checkpoints, some faulty: later batches are held against the
    table on the reading threads (AuditCache.last_table), and the reports equal the reference.

    A batch's reads start before the batch ahead of it is audited, so the first batch
    audited sets the table the third is read against: 60 checkpoints of 2 shards are
    batches of 16, 32 and 12 (sweep.batches), the faults in each."""
    config, tensors = _base()
    names = list(tensors)
    faults = {3: "drop", 9: "dtype", 20: "shape", 49: "drop", 51: "dtype", 53: "shape",
              55: "twice", 57: "extra"}  # fmt: skip
    index = {n: SHARDS[i * 2 // len(names)] for i, n in enumerate(names)}
    for k in range(60):
        files: Files = {s: {} for s in SHARDS}
        for n in names:
            files[index[n]][n] = tensors[n]
        victim = names[k % len(names)]
        fault = faults.get(k)
        if fault == "drop":
            files[index[victim]].pop(victim)
        elif fault == "dtype":
            files[index[victim]][victim] = ("F16", tensors[victim][1])
        elif fault == "shape":
            files[index[victim]][victim] = (tensors[victim][0], (3, 3))
        elif fault == "twice":
            other = SHARDS[1] if index[victim] == SHARDS[0] else SHARDS[0]
            files[other][victim] = tensors[victim]
        elif fault == "extra":
            files[SHARDS[0]]["extra.weight"] = ("F32", (2,))
        _write(tmp_path / "store" / f"checkpoint-{k}", config, files, index)
    used: list[bool] = []
    real = match.all_clean

    def spy(*args: Any) -> Any:
        cache, ahead = args[3], args[4] if len(args) > 4 else None
        last = cache.last_table
        used.append(ahead is not None and last is not None and ahead[0] is last[0])
        return real(*args)

    monkeypatch.setattr(match, "all_clean", spy)
    fast = _reports(tmp_path / "store", True)
    assert any(used), "no checkpoint was matched ahead"
    assert fast == _reports(tmp_path / "store", False)
    assert sorted(r["path"] for r in fast if r["status"] != "pass") == sorted(
        f"checkpoint-{k}" for k in faults
    )

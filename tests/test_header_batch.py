"""Batch reads share the parse of equal headers (csrc/header_file.cpp HeaderCache).

A store's checkpoints repeat their shards' headers byte for byte; read_headers parses
each distinct (header bytes, file size) once per call. Sharing must never carry a
verdict to a file it does not hold for: the same header in a file of another size is
judged on its own, and every result names its own path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from pyaudit import read_header  # noqa: E402
from pyaudit.headers import read_headers  # noqa: E402


def _write(path: Path, **tensors: tuple[int, ...]) -> Path:
    safetensors_numpy.save_file({k: np.ones(s, np.float32) for k, s in tensors.items()}, str(path))
    return path


def test_equal_headers_share_a_parse_but_not_a_verdict(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.safetensors", w=(4, 4), b=(4,))
    copies = []
    for i in range(6):
        copies.append(tmp_path / f"copy{i}.safetensors")
        shutil.copy(a, copies[-1])
    truncated = tmp_path / "truncated.safetensors"
    shutil.copy(a, truncated)
    os.truncate(truncated, a.stat().st_size - 4)  # same header bytes, shorter file
    longer = tmp_path / "longer.safetensors"
    shutil.copy(a, longer)
    with open(longer, "ab") as f:
        f.write(b"\0")
    other = _write(tmp_path / "other.safetensors", v=(2,))
    paths = [a, *copies[:3], truncated, longer, other, *copies[3:]]

    for jobs in (1, 2, 4):
        headers = read_headers(paths, jobs=jobs)
        assert [h.path for h in headers] == [str(p) for p in paths]
        rules = {Path(h.path).name: h.rule for h in headers}
        assert rules["truncated.safetensors"] == "data-truncated"
        assert rules["longer.safetensors"] == "trailing-bytes"
        assert all(r == "ok" for n, r in rules.items() if n.startswith(("a.", "copy", "other")))
        ok = [h for h in headers if h.ok and Path(h.path).name != "other.safetensors"]
        assert len(ok) == 7
        assert len({h.digest for h in ok}) == 1
        assert {tuple(h.names()) for h in ok} == {("b", "w")}
        assert headers[6].names() == ["v"] and headers[6].digest != ok[0].digest
        # Each agrees with a read of its own, outside any batch.
        for h in headers:
            alone = read_headers([h.path])[0]
            assert (alone.rule, alone.file_size, alone.names() if alone.ok else None) == (
                h.rule,
                h.file_size,
                h.names() if h.ok else None,
            )
            assert alone.digest == h.digest
            if h.ok:
                assert read_header(h.path).digest == h.digest


def test_invalid_headers_repeat_their_own_findings(tmp_path: Path) -> None:
    bad = tmp_path / "bad0.safetensors"
    bad.write_bytes((7).to_bytes(8, "little") + b"{oops}!")
    paths = [bad]
    for i in range(1, 4):
        paths.append(tmp_path / f"bad{i}.safetensors")
        shutil.copy(bad, paths[-1])
    headers = read_headers(paths, jobs=2)
    assert {h.rule for h in headers} == {"not-json"}
    assert [h.path for h in headers] == [str(p) for p in paths]


def test_digest_files(tmp_path: Path) -> None:
    """Run files hashed off the GIL: (size, digest) of regular files within the cap, else None."""
    from pyaudit import _core

    doc = tmp_path / "config.json"
    doc.write_bytes(b'{"model_type": "qwen2"}')
    same = tmp_path / "same.json"
    same.write_bytes(doc.read_bytes())
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 100)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    paths = [doc, same, big, fifo, tmp_path, tmp_path / "absent.json"]
    got = _core.digest_files([os.fsencode(p) for p in paths], 64, 2)
    assert got[0] == got[1] == (len(doc.read_bytes()), _core.hash_bytes(doc.read_bytes()))
    assert got[2:] == [None, None, None, None]  # over the cap, a FIFO (never blocks), a dir, absent


def test_fifo_named_config_json_does_not_hang_a_scan(tmp_path: Path) -> None:
    import subprocess
    import sys

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    _write(ckpt / "model.safetensors", w=(2,))
    os.mkfifo(ckpt / "config.json")
    proc = subprocess.run(
        [sys.executable, "-m", "pyaudit", "scan", "--json", str(ckpt)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert '"checkpoints"' in proc.stdout


def test_batch_read_is_read_headers_and_digest_files(tmp_path: Path) -> None:
    """The sweep's native read-ahead gives what the two calls give; dropped unread, it joins."""
    import gc

    from pyaudit import _core

    a = _write(tmp_path / "a.safetensors", w=(3,))
    b = tmp_path / "b.safetensors"
    b.write_bytes(b"\x02" + bytes(7) + b"{}")
    doc = tmp_path / "config.json"
    doc.write_text("{}")
    headers = [os.fsencode(p) for p in (a, b, tmp_path / "absent.safetensors", a)]
    files = [os.fsencode(p) for p in (doc, tmp_path / "absent.json")]
    got, digests, matches = _core.BatchRead(headers, files, 1 << 20, 2).result()
    assert matches is None  # no table given
    want = _core.read_headers(headers, 2)
    assert [(h.rule, h.file_size, h.digest if h.ok else 0) for h in got] == [
        (h.rule, h.file_size, h.digest if h.ok else 0) for h in want
    ]
    assert [h.rule for h in got] == ["ok", "ok", "io-error", "ok"]
    assert digests == _core.digest_files(files, 1 << 20)
    for _ in range(20):  # started and dropped before their results are asked for
        _core.BatchRead(headers * 50, files, 1 << 20, 2)
    gc.collect()


def test_batch_read_holds_each_span_against_a_table(tmp_path: Path) -> None:
    """With a table, each span of headers (a checkpoint) is matched as TensorSpecs.match would."""
    from pyaudit import _core

    a = _write(tmp_path / "a.safetensors", w=(3,), b=(2,))
    b = _write(tmp_path / "b.safetensors", v=(2,))
    c = _write(tmp_path / "c.safetensors", w=(4,))
    table = _core.TensorSpecs(["w", "b", "v"], shapes=[(3,), (2,), (2,)], groups=[0, 0, 1])
    paths = [os.fsencode(p) for p in (a, b, c, a, b)]
    groups, spans = [0, 1, 0, 0, 1], [2, 1, 2]
    got, _, matches = _core.BatchRead(paths, [], 1 << 20, 2, table, groups, spans).result()
    assert matches is not None and len(matches) == 3
    at = 0
    for n, m in zip(spans, matches, strict=True):
        want = table.match(got[at : at + n], groups[at : at + n])
        fields = ("tensors", "known", "required_seen", "shape_differs", "repeated", "in_group")
        assert [getattr(m, f) for f in fields] == [getattr(want, f) for f in fields]
        at += n
    assert matches[0].in_group == [2, 1] and matches[1].shape_differs == 1
    with pytest.raises(ValueError, match="spans must cover"):
        _core.BatchRead(paths, [], 1 << 20, 2, table, groups, [1])

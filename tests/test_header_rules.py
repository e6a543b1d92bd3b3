"""One test per safetensors header rule, on real files, against the reference loader.

Valid files are written by ``safetensors.numpy``; each test then edits exact bytes
and checks the rule pyaudit names, the tensor it names, the message, and that
the reference loader (``safetensors.safe_open``) agrees the file is broken. The
two deliberate differences (duplicate names, Git LFS pointers) are tested as such.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyaudit
from pyaudit.headers import DTYPE_BITS, parse_header_bytes

ALL_DTYPES = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip


# --- helpers ------------------------------------------------------------------


@pytest.fixture
def base(stkit: Any) -> bytes:
    """b (I64 [4]) at [0, 32], a (F32 [2, 3]) at [32, 56], metadata format=pt."""
    blob = stkit.save(
        {"b": np.arange(4, dtype=np.int64), "a": np.zeros((2, 3), np.float32)}, {"format": "pt"}
    )
    header, _ = stkit.unpack(blob)
    assert b'"b":{"dtype":"I64","shape":[4],"data_offsets":[0,32]}' in header
    assert b'"a":{"dtype":"F32","shape":[2,3],"data_offsets":[32,56]}' in header
    return blob


def edit(stkit: Any, blob: bytes, old: bytes, new: bytes) -> bytes:
    """Replace one exact run of header bytes and re-frame the file."""
    header, data = stkit.unpack(blob)
    assert header.count(old) == 1, (old, header)
    return stkit.pack(header.replace(old, new), data)


def tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def rejects(
    stkit: Any, blob: bytes, rule: str, tensor: str | None = None, *, reference: bool = True
) -> pyaudit.FormatError:
    """pyaudit rejects the file under `rule`, naming `tensor`; so does the reference."""
    path = stkit.write(blob)
    with pytest.raises(pyaudit.FormatError) as info:
        pyaudit.read_header(path)
    err = info.value
    assert err.rule == rule, str(err)
    assert err.tensor == tensor, str(err)
    assert err.path == str(path)
    assert err.reason, "a failure says what broke"
    text = str(err)
    assert text.startswith(f"{path}: ") and text.endswith(f"[{rule}]"), text
    if tensor is not None:
        # Messages quote names with control characters as '?', cut at 200 bytes.
        shown = "".join("?" if ord(c) < 0x20 else c for c in tensor)[:100]
        assert f"'{shown}" in err.reason, err.reason
    # The in-memory entry point and the batch reader say the same.
    assert parse_header_bytes(blob).rule == rule
    (batch,) = pyaudit.read_headers([path])
    assert not batch.ok and batch.rule == rule and batch.error is not None
    if reference:
        ok, detail = stkit.reference(path)
        assert not ok, f"the reference accepts what pyaudit rejects as {rule}: {detail}"
    return err


def accepts(stkit: Any, blob: bytes) -> pyaudit.Header:
    """pyaudit and the reference both accept the file and see the same tensors."""
    path = stkit.write(blob)
    header = pyaudit.read_header(path)
    ok, detail = stkit.reference(path)
    assert ok, f"pyaudit accepts what the reference rejects: {detail}"
    tensors, metadata = detail
    assert {k: (t.dtype, t.shape) for k, t in header.tensors.items()} == tensors
    assert header.metadata == metadata
    assert header.file_size == len(blob) == 8 + header.header_size + header.data_size
    return header


# --- framing: the length prefix ----------------------------------------------------


@pytest.mark.parametrize("size", range(8))
def test_file_shorter_than_length_prefix(stkit: Any, size: int) -> None:
    err = rejects(stkit, b"\x02" * size, "too-small")
    assert "8-byte" in err.reason


def test_header_length_over_the_file(stkit: Any, base: bytes) -> None:
    header, _ = stkit.unpack(base)
    # One byte more than the whole rest of the file.
    blob = struct.pack("<Q", len(base) - 8 + 1) + base[8:]
    err = rejects(stkit, blob, "header-truncated")
    assert str(len(base) - 8 + 1) in err.reason
    # And a header that just fits but leaves the data short is a different rule.
    assert len(header) < len(base) - 8


def test_header_length_over_the_limit(stkit: Any) -> None:
    err = rejects(stkit, struct.pack("<Q", 100_000_001) + b"{}", "header-too-large")
    assert "100,000,000" in err.reason
    rejects(stkit, b"\xff" * 8 + b"{}", "header-too-large")


def test_header_length_at_the_limit_is_not_too_large(stkit: Any) -> None:
    # Exactly 100,000,000 is allowed; this file is far too short for it.
    rejects(stkit, struct.pack("<Q", 100_000_000) + b"{}", "header-truncated")


# --- the header text -------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff",  # never valid
        b"\xc0\xa1",  # overlong 'a'
        b"\xe0\x80\x80",  # overlong NUL
        b"\xed\xa0\x80",  # a UTF-16 surrogate
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b"\xe2\x82",  # truncated sequence
        b"\x80",  # lone continuation byte
    ],
)
def test_header_not_utf8(stkit: Any, base: bytes, bad: bytes) -> None:
    blob = edit(stkit, base, b'"a":', b'"a' + bad + b'":')
    err = rejects(stkit, blob, "not-utf8")
    assert "UTF-8" in err.reason


def test_header_utf8_names_accepted(stkit: Any, base: bytes) -> None:
    blob = edit(stkit, base, b'"a":', '"a\u00e9\u20ac\U0001f600":'.encode())
    header = accepts(stkit, blob)
    assert "a\u00e9\u20ac\U0001f600" in header.tensors


@pytest.mark.parametrize(
    ("old", "new", "tensor"),
    [
        (b"[32,56]}}", b"[32,56]}", None),  # unclosed object
        (b"[32,56]}}", b"[32,56]},}", None),  # trailing comma
        (b'"format":"pt"', b"'format':'pt'", None),  # single quotes
        (b'"format":"pt"', b'"format":"pt" /* c */', None),  # a comment
        (b'"format":"pt"', b'"format":"p\tt"', None),  # raw control character in a string
        (b'"format":"pt"', b'"format":"\\x41"', None),  # invalid escape
        (b'"format":"pt"', b'"format":"\\ud800"', None),  # lone surrogate escape
        (b'"format":"pt"', b'"format":"\\udc00\\ud800"', None),  # reversed pair
        (b'"data_offsets":[0,32]', b'"data_offsets":[0,32],"x":NaN', "b"),
        (b'"data_offsets":[0,32]', b'"data_offsets":[0,32],"x":1e400', "b"),  # beyond f64
        (b'"data_offsets":[0,32]', b'"data_offsets":[0,32],"x":tru', "b"),
        (b'"data_offsets":[0,32]', b'"data_offsets":[0,032]', "b"),  # leading zero
        (b'"data_offsets":[0,32]', b'"data_offsets":[0,32,]', "b"),
        (b'"a":{', b'"a" {', "a"),
        (b"[32,56]}}", b"[32,56]}}x", None),  # trailing characters
    ],
)
def test_header_not_json(
    stkit: Any, base: bytes, old: bytes, new: bytes, tensor: str | None
) -> None:
    err = rejects(stkit, edit(stkit, base, old, new), "not-json", tensor)
    assert "JSON" in err.reason


def test_nesting_limit_matches_serde_json(stkit: Any) -> None:
    # serde_json refuses the 128th level of nesting: top object (1) + entry (2) + k arrays.
    def nested(k: int) -> bytes:
        entry = '{"dtype":"U8","shape":[],"data_offsets":[0,1],"x":' + "[" * k + "]" * k + "}"
        return stkit.pack('{"t":' + entry + "}", b"\0")

    accepts(stkit, nested(125))
    err = rejects(stkit, nested(126), "not-json", "t")
    assert "nesting" in err.reason


@pytest.mark.parametrize(
    ("header", "tensor"),
    [
        (b'[{"dtype":"U8","shape":[],"data_offsets":[0,1]}]', None),  # the header is an array
        (b'"t"', None),
        (b'{"t":"U8"}', "t"),  # entry not an object
        (b'{"t":7}', "t"),
        (b'{"t":{"dtype":8,"shape":[],"data_offsets":[0,1]}}', "t"),
        (b'{"t":{"dtype":"U8","shape":"1","data_offsets":[0,1]}}', "t"),
        (b'{"t":{"dtype":"U8","shape":[],"data_offsets":{"0":0,"1":1}}}', "t"),
        (b'{"t":{"dtype":"U8","shape":[],"data_offsets":[0,1,1]}}', "t"),
        (b'{"t":{"dtype":"U8","shape":[],"data_offsets":[0]}}', "t"),
        (b'{"t":{"dtype":"U8","shape":[null],"data_offsets":[0,1]}}', "t"),
        (b'{"t":{"dtype":"U8","shape":[]}}', "t"),  # missing field
        (b'{"t":{"shape":[],"data_offsets":[0,1]}}', "t"),
        (b'{"t":{"dtype":"U8","dtype":"U8","shape":[],"data_offsets":[0,1]}}', "t"),  # dup field
        (b'{"t":["U8",[],[0,1],1]}', "t"),  # sequence form of 4 elements
        (b'{"t":["U8",[]]}', "t"),
        (b'{"t":{"dtype":{"U8":1},"shape":[],"data_offsets":[0,1]}}', "t"),
        (b'{"t":{"dtype":{"U8":null,"I8":null},"shape":[],"data_offsets":[0,1]}}', "t"),
        (b'{"t":{"dtype":{},"shape":[],"data_offsets":[0,1]}}', "t"),
    ],
)
def test_wrong_value_types(stkit: Any, header: bytes, tensor: str | None) -> None:
    rejects(stkit, stkit.pack(header, b"\0"), "wrong-type", tensor)


@pytest.mark.parametrize("dtype", ["F33", "f32", "", "float32", "F32 ", "BFLOAT16"])
def test_unknown_dtype(stkit: Any, base: bytes, dtype: str) -> None:
    blob = edit(stkit, base, b'"dtype":"F32"', b'"dtype":' + json.dumps(dtype).encode())
    err = rejects(stkit, blob, "unknown-dtype", "a")
    assert repr(dtype) in err.reason


def test_dtype_table_is_the_reference_list() -> None:
    assert DTYPE_BITS == ALL_DTYPES


@pytest.mark.parametrize("dtype", list(ALL_DTYPES))
def test_every_dtype_accepted(stkit: Any, dtype: str) -> None:
    # 16 elements is a whole number of bytes for every width, F4 and F6 included.
    nbytes = 16 * ALL_DTYPES[dtype] // 8
    doc = {"__metadata__": {"dtype": dtype}, "t": tensor(dtype, [4, 4], 0, nbytes)}
    header = accepts(stkit, stkit.pack(doc, b"\0" * nbytes))
    info = header.tensors["t"]
    assert (info.dtype, info.shape, info.data_offsets) == (dtype, (4, 4), (0, nbytes))
    assert info.nbytes == nbytes and header.data_size == nbytes


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"shape":[2,3]', b'"shape":[-2,3]'),
        (b'"shape":[2,3]', b'"shape":[2.0,3]'),
        (b'"shape":[2,3]', b'"shape":[2e0,3]'),
        (b'"shape":[2,3]', b'"shape":[-0,3]'),
        (b'"shape":[2,3]', b'"shape":[18446744073709551616,3]'),  # 2^64
        (b"[32,56]", b"[32,56.0]"),
        (b"[32,56]", b"[32,-56]"),
        (b"[32,56]", b"[3.2e1,56]"),
    ],
)
def test_negative_or_fractional_numbers(stkit: Any, base: bytes, old: bytes, new: bytes) -> None:
    rejects(stkit, edit(stkit, base, old, new), "bad-number", "a")


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        ("U8", [2**40, 2**40]),  # the element count overflows
        ("U8", [2**40, 2**40, 0]),  # ... before a zero dimension, as the reference folds
        ("F32", [2**62]),  # elements x 32 bits overflows
        ("F4", [2**63]),
        ("U64", [2**32, 2**26]),
    ],
)
def test_size_overflows_64_bits(stkit: Any, dtype: str, shape: list[int]) -> None:
    err = rejects(stkit, stkit.pack({"t": tensor(dtype, shape, 0, 0)}), "overflow", "t")
    assert "overflow" in err.reason


@pytest.mark.parametrize(("dtype", "n"), [("F4", 3), ("F6_E2M3", 2), ("F6_E3M2", 5), ("F4", 1)])
def test_not_a_whole_number_of_bytes(stkit: Any, dtype: str, n: int) -> None:
    blob = stkit.pack({"t": tensor(dtype, [n], 0, 1)}, b"\0")
    err = rejects(stkit, blob, "misaligned", "t")
    assert "whole number of bytes" in err.reason


@pytest.mark.parametrize(("dtype", "n", "nbytes"), [("F4", 2, 1), ("F6_E2M3", 4, 3), ("F4", 0, 0)])
def test_sub_byte_dtypes_whole_bytes_accepted(stkit: Any, dtype: str, n: int, nbytes: int) -> None:
    accepts(stkit, stkit.pack({"t": tensor(dtype, [n], 0, nbytes)}, b"\0" * nbytes))


def test_extent_not_shape_times_dtype(stkit: Any) -> None:
    blob = stkit.pack({"t": tensor("F32", [2], 0, 12)}, b"\0" * 12)
    err = rejects(stkit, blob, "extent-mismatch", "t")
    assert "8" in err.reason and "12" in err.reason


def test_offsets_not_starting_at_zero(stkit: Any) -> None:
    blob = stkit.pack({"t": tensor("U8", [4], 4, 8)}, b"\0" * 8)
    err = rejects(stkit, blob, "offsets-gap", "t")
    assert "start at 0" in err.reason


def test_offsets_hole(stkit: Any) -> None:
    doc = {"a": tensor("U8", [4], 0, 4), "b": tensor("U8", [4], 8, 12)}
    err = rejects(stkit, stkit.pack(doc, b"\0" * 12), "offsets-gap", "b")
    assert "hole of 4 bytes" in err.reason and "'a'" in err.reason


def test_offsets_overlap(stkit: Any) -> None:
    doc = {"a": tensor("U8", [4], 0, 4), "b": tensor("U8", [4], 2, 6)}
    err = rejects(stkit, stkit.pack(doc, b"\0" * 6), "offsets-overlap", "b")
    assert "'a'" in err.reason


def test_offsets_reversed(stkit: Any) -> None:
    doc = {"a": tensor("U8", [4], 0, 4), "b": tensor("U8", [0], 4, 0)}
    rejects(stkit, stkit.pack(doc, b"\0" * 4), "offsets-reversed", "b")


def test_offsets_in_any_header_order_accepted(stkit: Any) -> None:
    doc = {"z": tensor("U8", [4], 4, 8), "y": tensor("U8", [0], 8, 8), "x": tensor("U8", [4], 0, 4)}
    header = accepts(stkit, stkit.pack(doc, b"\0" * 8))
    assert list(header.tensors) == ["z", "y", "x"]  # header order kept


def test_data_truncated(stkit: Any, base: bytes) -> None:
    err = rejects(stkit, base[:-1], "data-truncated")
    assert "56" in err.reason and "55" in err.reason


def test_trailing_bytes(stkit: Any, base: bytes) -> None:
    err = rejects(stkit, base + b"\0", "trailing-bytes")
    assert "1 trailing" in err.reason


def test_valid_file_from_the_reference_writer(stkit: Any, base: bytes) -> None:
    header = accepts(stkit, base)
    assert header.metadata == {"format": "pt"}
    assert header.tensors["a"] == ("a", "F32", (2, 3), (32, 56))
    assert header.tensors["b"].data_offsets == (0, 32)
    assert header.data_size == 56


@pytest.mark.parametrize(
    "metadata",
    [b'{"k":1}', b'{"k":null}', b'{"k":["v"]}', b'{"k":{"v":"w"}}', b"[]", b'"pt"', b"1", b"true"],
)
def test_metadata_not_str_to_str(stkit: Any, base: bytes, metadata: bytes) -> None:
    blob = edit(stkit, base, b'{"format":"pt"}', metadata)
    err = rejects(stkit, blob, "bad-metadata")
    assert "__metadata__" in err.reason


def test_metadata_duplicate_field(stkit: Any) -> None:
    rejects(stkit, stkit.pack(b'{"__metadata__":null,"__metadata__":{}}'), "bad-metadata")


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (b"null", None),
        (b"{}", {}),
        (b'{"k":"v","k":"w"}', {"k": "w"}),
        (b'{"\\u00e9":""}', {"\u00e9": ""}),
    ],
)
def test_metadata_accepted(stkit: Any, base: bytes, metadata: bytes, expected: Any) -> None:
    header = accepts(stkit, edit(stkit, base, b'{"format":"pt"}', metadata))
    assert header.metadata == expected


def test_metadata_key_spelled_with_escapes(stkit: Any, base: bytes) -> None:
    header = accepts(stkit, edit(stkit, base, b'"__metadata__"', b'"__metadata\\u005f_"'))
    assert header.metadata == {"format": "pt"}
    assert "__metadata__" not in header.tensors


@pytest.mark.parametrize("ws", [b" ", b"\t", b"\n", b"\r", b" \t\r\n  "])
def test_json_whitespace_accepted(stkit: Any, base: bytes, ws: bytes) -> None:
    header, data = stkit.unpack(base)
    header = header.replace(b":", ws + b":" + ws).replace(b",", ws + b"," + ws)
    accepts(stkit, stkit.pack(ws + header + ws, data))


@pytest.mark.parametrize(
    ("lead", "trail"),
    [
        (b"", b"\0"),  # NUL padding
        (b"", b"\0" * 7),
        (b"\0", b""),
        (b"", b"\x0c"),  # form feed is not JSON whitespace
        (b"\x0b", b""),  # nor vertical tab
        (b"", "\u00a0".encode()),  # nor no-break space
        ("\ufeff".encode(), b""),  # nor a byte order mark
    ],
)
def test_non_json_padding_rejected(stkit: Any, base: bytes, lead: bytes, trail: bytes) -> None:
    header, data = stkit.unpack(base)
    rejects(stkit, stkit.pack(lead + header + trail, data), "not-json")


def test_empty_header_object_is_a_valid_empty_file(stkit: Any) -> None:
    header = accepts(stkit, stkit.pack(b"{}"))
    assert len(header) == 0 and header.data_size == 0 and header.metadata is None


# --- deliberate differences from the reference ----------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b'{"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        b'"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}',
        # the same name spelled with an escape
        b'{"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        b'"\\u0074":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}',
    ],
)
def test_duplicate_tensor_name_rejected_though_reference_accepts(stkit: Any, header: bytes) -> None:
    blob = stkit.pack(header, b"\0" * 4)
    err = rejects(stkit, blob, "duplicate-tensor", "t", reference=False)
    assert "more than once" in err.reason
    # Deliberate: the reference keeps the last entry of a JSON map and loads the file.
    ok, detail = stkit.reference(stkit.write(blob))
    assert ok and detail[0] == {"t": ("U8", (4,))}


def test_git_lfs_pointer_named_as_such(stkit: Any) -> None:
    pointer = (
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        b"size 4400000000\n"
    )
    err = rejects(stkit, pointer, "lfs-pointer", reference=False)
    assert "git lfs pull" in err.reason
    assert "4d7a214614ab" in err.reason and "4400000000" in err.reason
    # Deliberate: the reference reads "version " as a length and says the header is too large.
    ok, detail = stkit.reference(stkit.write(pointer))
    assert not ok and "too large" in detail.lower()


# --- regressions: forms the reference accepts (found by differential testing) --------


def test_regression_tensor_entry_as_sequence(stkit: Any) -> None:
    # serde reads a struct from a JSON array of its fields in order; the reference
    # accepts {"t": [dtype, shape, data_offsets]}. pyaudit said wrong-type.
    blob = stkit.pack(b'{"t":["F32",[2],[0,8]], "u": [ "U8" , [ ] , [8,9] ]}', b"\0" * 9)
    header = accepts(stkit, blob)
    assert header.tensors["t"] == ("t", "F32", (2,), (0, 8))
    assert header.tensors["u"] == ("u", "U8", (), (8, 9))


def test_regression_dtype_as_externally_tagged_unit_variant(stkit: Any) -> None:
    # serde reads a unit enum variant from {"F32": null} as well as "F32".
    # pyaudit said wrong-type.
    blob = stkit.pack(
        b'{"t":{"dtype":{"F32":null},"shape":[2],"data_offsets":[0,8]},'
        b'"u":[{ "U8" : null },[1],[8,9]]}',
        b"\0" * 9,
    )
    header = accepts(stkit, blob)
    assert header.tensors["t"].dtype == "F32" and header.tensors["u"].dtype == "U8"
    rejects(
        stkit,
        stkit.pack(b'{"t":{"dtype":{"F33":null},"shape":[2],"data_offsets":[0,8]}}', b"\0" * 8),
        "unknown-dtype",
        "t",
    )


def test_regression_long_unicode_name_in_message_is_valid_text(stkit: Any) -> None:
    # The message quotes at most 200 bytes of a name; the cut once split a UTF-8
    # sequence and reading the error raised UnicodeDecodeError.
    name = "a" * 199 + "\u00e9" * 10
    blob = stkit.pack({name: tensor("F33", [1], 0, 4)}, b"\0" * 4)
    err = rejects(stkit, blob, "unknown-dtype", name)
    assert "a" * 199 + "..." in err.reason


@pytest.mark.parametrize(
    ("number", "reference_ok"),
    [
        ("1.7976931348623157e308", True),  # DBL_MAX
        ("1.7976931348623158e308", False),  # strtod rounds to DBL_MAX; serde_json overflows
        ("1.7976931348623157999e308", False),
        ("179769313486231570000e288", False),
        ("17976931348623158079e289", False),  # digits past the u64 are dropped, not rounded
        ("-1.7976931348623158e308", False),
        ("1e308", True),
        ("0.1e309", True),
        ("1e309", False),
        ("0e99999999999999999999", True),  # exponent overflow with a zero significand
        ("1e-99999999999999999999", True),
        ("1e99999999999999999999", False),
    ],
)
def test_regression_number_range_as_serde_json(stkit: Any, number: str, reference_ok: bool) -> None:
    # An unknown field's number is converted to f64 by serde_json, not correctly
    # rounded; pyaudit used strtod and accepted what the reference rejects.
    header = '{"t":{"dtype":"U8","shape":[],"data_offsets":[0,1],"x":' + number + "}}"
    blob = stkit.pack(header, b"\0")
    if reference_ok:
        accepts(stkit, blob)
    else:
        err = rejects(stkit, blob, "not-json", "t")
        assert "out of range" in err.reason


def test_message_names_tensor_with_escapes(stkit: Any) -> None:
    name = 'we"ird\\na\u00efme\n'
    blob = stkit.pack({name: tensor("F32", [2], 0, 12)}, b"\0" * 12)
    err = rejects(stkit, blob, "extent-mismatch", name)
    assert err.tensor == name


# --- hostile input ------------------------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import json, sys, time
    import pyaudit.headers  # the native core is loaded before measuring
    def status(field):  # bytes; VmHWM is this process's peak since exec (ru_maxrss
        with open("/proc/self/status") as f:  # would carry over the parent's peak)
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    before = status("VmRSS")
    start = time.perf_counter()
    try:
        pyaudit.read_header(sys.argv[1])
        rule, reason = "ok", ""
    except pyaudit.FormatError as e:
        rule, reason = e.rule, e.reason
    seconds = time.perf_counter() - start
    grew = status("VmHWM") - before
    print(json.dumps({"rule": rule, "reason": reason, "seconds": seconds, "grew": grew}))
    """
)


def probe(path: Path) -> dict[str, Any]:
    """read_header in a fresh process: the rule, the time, how far the peak RSS rose. A hang
    fails through the timeout; time is reported, never asserted (no timing thresholds)."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


MB = 1 << 20


@pytest.mark.parametrize(
    ("name", "blob", "rule"),
    [
        ("claims-2^62", struct.pack("<Q", 2**62) + b"{}", "header-too-large"),
        (
            "shape-2^40-squared",
            b'{"t":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,0]}}',
            "overflow",
        ),
        ("nesting-10000", b'{"t":' + b"[" * 10_000 + b"]" * 10_000 + b"}", "not-json"),
        ("nesting-10000-objects", b'{"t":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001, "not-json"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "",
)
def test_hostile_small_files(stkit: Any, name: str, blob: bytes, rule: str) -> None:
    if not blob.startswith(struct.pack("<Q", 2**62)):
        blob = stkit.pack(blob)
    result = probe(stkit.write(blob, f"{name}.safetensors"))
    assert result["rule"] == rule, result
    assert result["grew"] < 8 * MB, result


def test_hostile_100mb_sparse_header(stkit: Any) -> None:
    # The largest allowed header, all NUL bytes (a hole): rejected at its first byte.
    path = stkit.directory / "sparse-100mb.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 100_000_000))
        f.truncate(8 + 100_000_000)
    result = probe(path)
    assert result["rule"] == "not-json", result
    # The header is read whole (it is at most 100 MB), nothing beyond that.
    assert result["grew"] < 100_000_000 + 16 * MB, result
    ok, _ = stkit.reference(path)
    assert not ok


def write_in_pieces(path: Path, pieces: Iterator[bytes]) -> Path:
    """Writes a large file without holding it in memory."""
    with open(path, "wb") as f:
        for piece in pieces:
            f.write(piece)
    return path


def test_hostile_100mb_header_of_dimensions(stkit: Any) -> None:
    # 100 MB of real header: one tensor with ~50 million dimensions of 1. Parsing
    # it must not build a vector of them (the error message once did: 400 MB).
    head = b'{"t":{"dtype":"U8","data_offsets":[0,2],"shape":['
    tail = b"1]}}"
    count = (100_000_000 - len(head) - len(tail)) // 2
    padding = b" " * (100_000_000 - len(head) - 2 * count - len(tail))
    chunk = b"1," * 1_000_000

    def pieces() -> Iterator[bytes]:
        yield struct.pack("<Q", 100_000_000) + head
        for done in range(0, count, 1_000_000):
            yield chunk[: 2 * min(1_000_000, count - done)]
        yield tail + padding + b"\0\0"

    path = write_in_pieces(stkit.directory / "dims-100mb.safetensors", pieces())
    try:
        assert path.stat().st_size == 8 + 100_000_000 + 2
        result = probe(path)
    finally:
        path.unlink()
    assert result["rule"] == "extent-mismatch", result
    assert result["reason"].count(",") < 40, result  # the shape is summarised
    assert result["grew"] < 100_000_000 + 32 * MB, result


def test_hostile_100mb_of_garbage(stkit: Any) -> None:
    rng = np.random.default_rng(0)

    def pieces() -> Iterator[bytes]:
        yield struct.pack("<Q", 100_000_000) + b"{"
        for _ in range(99):
            yield rng.bytes(1_000_000)
        yield rng.bytes(1_000_000 - 1)

    path = write_in_pieces(stkit.directory / "garbage-100mb.safetensors", pieces())
    try:
        result = probe(path)
    finally:
        path.unlink()
    assert result["rule"] in {"not-utf8", "not-json"}, result
    assert result["grew"] < 100_000_000 + 16 * MB, result


_SPECIAL = textwrap.dedent(
    """
    import json, sys, time
    import pyaudit
    out = {}
    for path in sys.argv[1:]:
        start = time.perf_counter()
        try:
            pyaudit.read_header(path)
            out[path] = ["ok", ""]
        except pyaudit.FormatError as e:
            out[path] = [e.rule, str(e)]
        out[path].append(time.perf_counter() - start)
    batch = pyaudit.read_headers(sys.argv[1:], jobs=2)
    out["batch"] = [h.rule for h in batch]
    print(json.dumps(out))
    """
)


def test_fifo_directory_and_missing_file_are_io_errors(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    directory = tmp_path / "dir.safetensors"
    directory.mkdir()
    missing = tmp_path / "missing.safetensors"
    paths = [str(fifo), str(directory), str(missing)]
    # In a child process: a reader that blocks on the FIFO fails the test (its timeout), not CI.
    out = subprocess.run(
        [sys.executable, "-c", _SPECIAL, *paths],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result = json.loads(out.stdout)
    for path in paths:
        rule, message, _seconds = result[path]
        assert rule == "io-error", (path, rule, message)
        assert message.startswith(path) and message.endswith("[io-error]")
    assert result["batch"] == ["io-error"] * 3
    assert "not a regular file" in result[str(fifo)][1]
    assert "not a regular file" in result[str(directory)][1]

"""Property tests of the header parser alone, through parse_header_bytes.

- For headers built from tensors with arbitrary offsets, the verdict (rule and
  tensor) is exactly that of a small model of the reference's validate(): valid
  iff, sorted by offsets, the extents tile [0, data_size) with each extent
  shape x dtype bytes, and the file is prefix + header + data.
- For any bytes and any file size, parsing returns (never raises) a result
  whose failure, if any, names a known rule and says what broke.
- A prefix holding the header gives the whole file's verdict; JSON whitespace
  between tokens changes nothing; other padding is rejected.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyaudit.headers import DTYPE_BITS, header_span, parse_header_bytes

DTYPES = sorted(DTYPE_BITS)
RULES = {
    "ok", "too-small", "lfs-pointer", "header-too-large", "header-truncated", "not-utf8",
    "not-json", "wrong-type", "bad-metadata", "unknown-dtype", "bad-number",
    "duplicate-tensor", "overflow", "misaligned", "extent-mismatch", "offsets-reversed",
    "offsets-gap", "offsets-overlap", "data-truncated", "trailing-bytes",
}  # fmt: skip
U64 = 2**64


def frame(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


def check_result(h: Any) -> None:
    """What every result promises, valid or not."""
    assert h.rule in RULES
    assert h.ok == (h.rule == "ok")
    if h.ok:
        assert h.error is None
        assert 8 + h.header_size + h.data_size == h.file_size
        extents = sorted(t.data_offsets for t in h.tensors.values())
        cursor = 0
        for begin, end in extents:
            assert begin == cursor
            cursor = end
        assert cursor == h.data_size
        for t in h.tensors.values():
            assert t.nbytes * 8 == t.numel * DTYPE_BITS[t.dtype]
        assert len(h.tensors) == len(h) == len(h.names())
    else:
        err = h.error
        assert err is not None and err.rule == h.rule
        assert err.reason and err.reason.strip()
        assert str(err).endswith(f"[{h.rule}]")
        assert len(h) == len(h.tensors)  # partial results stay readable
        _ = h.metadata


# --- the model --------------------------------------------------------------------------


def model(
    tensors: list[tuple[str, str, list[int], int, int]], header_len: int, file_size: int
) -> tuple[str, str | None]:
    """The reference's validate() + the final size check, as (rule, tensor)."""
    order = sorted(range(len(tensors)), key=lambda i: (tensors[i][3], tensors[i][4]))
    cursor = 0
    for i in order:
        name, dtype, shape, begin, end = tensors[i]
        if begin != cursor:
            return ("offsets-gap" if begin > cursor else "offsets-overlap"), name
        if end < begin:
            return "offsets-reversed", name
        cursor = end
        elements = 1
        for d in shape:  # a checked fold that stops at the first overflow
            elements *= d
            if elements >= U64:
                return "overflow", name
        bits = elements * DTYPE_BITS[dtype]
        if bits >= U64:
            return "overflow", name
        if bits % 8:
            return "misaligned", name
        if end - begin != bits // 8:
            return "extent-mismatch", name
    total = 8 + header_len + cursor
    if total > file_size:
        return "data-truncated", None
    if total < file_size:
        return "trailing-bytes", None
    return "ok", None


shapes = st.lists(st.integers(0, 6), max_size=3) | st.sampled_from(
    [[3], [5], [1, 3], [2**32, 2**32], [2**63, 2], [2**61], [2**62], [0, 2**63], [2**40, 2**40, 0]]
)
deltas = st.sampled_from([-(2**63), -8, -4, -1, 1, 2, 3, 8, 2**63, U64 - 1])


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[tuple[str, str, list[int], int, int]], int]:
    """Tensors laid out to tile the data section, then perhaps disturbed."""
    n = draw(st.integers(0, 5))
    specs = [(f"t{i}", draw(st.sampled_from(DTYPES)), draw(shapes)) for i in range(n)]
    offsets: dict[int, list[int]] = {}
    cursor = 0
    for i in draw(st.permutations(range(n))):
        _, dtype, shape = specs[i]
        numel = 1
        for d in shape:
            numel *= d
        bits = numel * DTYPE_BITS[dtype]
        size = bits // 8 if bits < U64 else draw(st.integers(0, 4))
        offsets[i] = [cursor, cursor + size]
        cursor += size
    for _ in range(draw(st.integers(0, 2)) if n else 0):
        i = draw(st.integers(0, n - 1))
        which = draw(st.integers(0, 1))
        offsets[i][which] = min(max(offsets[i][which] + draw(deltas), 0), U64 - 1)
    if n >= 2 and draw(st.booleans()):  # swap two tensors' extents
        i, j = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        offsets[i], offsets[j] = offsets[j], offsets[i]
    data = max(cursor + draw(st.sampled_from([0, 0, 0, -1, 1, 8])), 0)
    tensors = [(name, dtype, shape, *offsets[i]) for i, (name, dtype, shape) in enumerate(specs)]
    return tensors, data  # type: ignore[return-value]


@settings(max_examples=800)
@given(layouts())
def test_verdict_is_the_models(
    case: tuple[list[tuple[str, str, list[int], int, int]], int],
) -> None:
    tensors, data = case
    doc = {name: {"dtype": d, "shape": s, "data_offsets": [b, e]} for name, d, s, b, e in tensors}
    header = json.dumps(doc).encode()
    file_size = 8 + len(header) + data
    # Only the header is passed: the data section is never read.
    h = parse_header_bytes(frame(header), file_size)
    check_result(h)
    rule, tensor = model(tensors, len(header), file_size)
    assert h.rule == rule, (h.error, rule, tensor)
    assert (h.error.tensor if h.error else None) == tensor
    if h.ok:
        assert {
            k: (t.dtype, list(t.shape), list(t.data_offsets)) for k, t in h.tensors.items()
        } == {name: (d, s, [b, e]) for name, d, s, b, e in tensors}


# --- never raises ---------------------------------------------------------------------------

TOKENS = [
    "{", "}", "[", "]", ":", ",", '"', " ", "\n", "\t", "\0", "null", "true", "false", "0", "1",
    "8",
    "-1", "1.5", "1e400", "18446744073709551616", '"dtype"', '"shape"', '"data_offsets"',
    '"__metadata__"', '"F32"', '"F4"', '"U8"', '"x"', "\\", "\\u", "\\ud800", "\\u00e9", "\u00e9",
    "\xff", '{"F32":null}', "[0,0]", "[]", "{}",
]  # fmt: skip
json_ish = st.lists(st.sampled_from(TOKENS), max_size=40).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogatepass")
)


@settings(max_examples=500)
@given(st.binary(max_size=200), st.none() | st.integers(0, U64 - 1))
def test_any_bytes_any_size_returns_a_result(data: bytes, file_size: int | None) -> None:
    check_result(parse_header_bytes(data, file_size))


@settings(max_examples=600)
@given(json_ish, st.integers(0, 64), st.integers(-2, 2))
def test_json_like_headers_return_a_result(header: bytes, data: int, skew: int) -> None:
    blob = struct.pack("<Q", max(len(header) + skew, 0)) + header
    h = parse_header_bytes(blob, len(blob) + data)
    check_result(h)


# --- prefixes and whitespace ---------------------------------------------------------------


@st.composite
def valid_headers(draw: st.DrawFn) -> tuple[bytes, int]:
    n = draw(st.integers(0, 4))
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["__metadata__"] = draw(
            st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)
        )
    cursor = 0
    for i in range(n):
        dtype = draw(st.sampled_from(["U8", "F16", "F32", "F64", "BOOL"]))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        numel = 1
        for d in shape:
            numel *= d
        size = numel * DTYPE_BITS[dtype] // 8
        doc[draw(st.text(max_size=5)) + f"#{i}"] = {
            "dtype": dtype, "shape": shape, "data_offsets": [cursor, cursor + size],
        }  # fmt: skip
        cursor += size
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode(), cursor


@settings(max_examples=300)
@given(valid_headers(), st.data())
def test_a_prefix_holding_the_header_gives_the_whole_verdict(
    case: tuple[bytes, int], data: st.DataObject
) -> None:
    header, data_size = case
    blob = frame(header) + bytes(data_size)
    whole = parse_header_bytes(blob)
    assert whole.ok, whole.error
    span = header_span(blob[:8])
    assert span == 8 + len(header)
    cut = data.draw(st.integers(span, len(blob)))
    part = parse_header_bytes(blob[:cut], len(blob))
    assert part.ok and part.table() == whole.table() and part.metadata == whole.metadata
    short = data.draw(st.integers(8, span - 1)) if span > 8 else None
    if short is not None:
        assert parse_header_bytes(blob[:short], len(blob)).rule == "header-truncated"


def between_tokens(text: str) -> list[int]:
    """Where JSON allows whitespace in ``text``: both ends, and after each structural
    character outside strings. Inside a string a backslash escapes the next character, so
    ``"\\"{"`` is one string holding a quote and a brace, with no token boundary in it."""
    spots, in_string, escaped = [0, len(text)], False, False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif in_string:
            if c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{}[]:,":
            spots.append(i + 1)
    return sorted(spots)


# A key holding an escaped quote then a brace: an earlier version of between_tokens ended
# the string at the escaped quote and padded inside the key (found by a random seed).
ESCAPED_QUOTE_KEY = json.dumps(
    {'"{#0': {"dtype": "BOOL", "shape": [], "data_offsets": [0, 1]}}
).encode()


@settings(max_examples=300)
@given(valid_headers())
@example(case=(ESCAPED_QUOTE_KEY, 1))
def test_between_tokens_are_where_json_takes_whitespace(case: tuple[bytes, int]) -> None:
    text = case[0].decode()
    for at in between_tokens(text):
        assert json.loads(text[:at] + " \t\n\r" + text[at:]) == json.loads(text)


WHITESPACE = st.text(" \t\n\r", min_size=1, max_size=3)
NOT_WHITESPACE = st.sampled_from(["\0", "\x0b", "\x0c", "\u00a0", "\ufeff", "\u3000"])


@settings(max_examples=300)
@given(valid_headers(), st.integers(min_value=0), WHITESPACE, NOT_WHITESPACE)
@example(case=(ESCAPED_QUOTE_KEY, 1), pick=2, ws=" ", bad="\0")
def test_json_whitespace_changes_nothing_other_padding_is_rejected(
    case: tuple[bytes, int], pick: int, ws: str, bad: str
) -> None:
    header, data_size = case
    whole = parse_header_bytes(frame(header), 8 + len(header) + data_size)
    text = header.decode()
    spots = between_tokens(text)
    at = spots[pick % len(spots)]
    spaced = (text[:at] + ws + text[at:]).encode()
    h = parse_header_bytes(frame(spaced), 8 + len(spaced) + data_size)
    assert h.ok, h.error
    assert h.table() == whole.table() and h.metadata == whole.metadata
    padded = (text[:at] + bad + text[at:]).encode()
    rejected = parse_header_bytes(frame(padded), 8 + len(padded) + data_size)
    assert rejected.rule == "not-json", rejected.error

"""Writes the fuzzing seed corpus, fuzz/corpus/: small valid files (some written by
safetensors itself) and edge cases. Run from the repository root:

    python fuzz/make_corpus.py

Needs numpy and safetensors. Every file is under 2 KB.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save

BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip


def frame(header: str | bytes, data: bytes = b"") -> bytes:
    if isinstance(header, str):
        header = header.encode()
    return struct.pack("<Q", len(header)) + header + data


def entry(dtype: str, shape: list[int], begin: int, end: int) -> str:
    return json.dumps({"dtype": dtype, "shape": shape, "data_offsets": [begin, end]})


def corpus() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    files["valid-writer-two-tensors"] = save(
        {"b": np.arange(4, dtype=np.int64), "a": np.ones((2, 3), np.float32)}, {"format": "pt"}
    )
    files["valid-writer-scalar-zero-dim-unicode"] = save(
        {"s": np.array(1.5, np.float32), 'n\u00e9\\"\U0001f600': np.zeros((0, 3), np.float16)}
    )
    files["valid-empty"] = frame("{}")

    # Every dtype, 8 elements each (whole bytes for F4 and F6 too).
    parts, offset = [], 0
    for i, (dtype, bits) in enumerate(BITS.items()):
        size = 8 * bits // 8
        parts.append(
            f'"t{i}":{{"dtype":"{dtype}","shape":[8],"data_offsets":[{offset},{offset + size}]}}'
        )
        offset += size
    files["valid-all-dtypes"] = frame("{" + ",".join(parts) + "}", bytes(offset))

    # The spellings serde accepts: entry as an array, dtype as {"F32": null}; escapes, whitespace.
    files["valid-sequence-and-tagged-dtype"] = frame(
        ' {"t": ["F32", [2], [0, 8]],'
        ' "u": {"dtype": {"U8": null}, "shape": [1], "data_offsets": [8, 9]},'
        ' "__metadata__": {"k": "v\\u00e9\\ud83d\\ude00\\n"}}\r\n\t',
        bytes(9),
    )
    files["valid-unknown-field-nested-125"] = frame(
        '{"t":{"dtype":"U8","shape":[],"data_offsets":[0,1],"x":' + "[" * 125 + "]" * 125 + "}}",
        b"\x01",
    )
    files["valid-numbers-in-unknown-field"] = frame(
        '{"t":{"x":[18446744073709551615,18446744073709551616,-0,1e308,1E-400,-1.5e+3,0.0],'
        '"dtype":"F4","shape":[0,18446744073709551615],"data_offsets":[0,0]}}'
    )
    files["edge-lfs-pointer"] = (
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        b"size 12345\n"
    )
    files["edge-too-small"] = b"\x02\x00\x00\x00\x00"
    files["edge-header-too-large"] = struct.pack("<Q", 100_000_001) + b"{}"
    files["edge-duplicate-tensor"] = frame(
        "{" + ",".join(['"t":' + entry("U8", [4], 0, 4)] * 2) + "}", bytes(4)
    )
    files["edge-overflow"] = frame('{"t":' + entry("U8", [2**40, 2**40, 0], 0, 0) + "}")
    files["edge-misaligned-f4"] = frame('{"t":' + entry("F4", [3], 0, 2) + "}", bytes(2))
    files["edge-gap-overlap"] = frame(
        '{"a":' + entry("U8", [4], 0, 4) + ',"b":' + entry("U8", [4], 2, 6) + "}", bytes(6)
    )
    files["edge-nul-padding"] = frame('{"t":' + entry("U8", [1], 0, 1) + "}\0\0\0", b"\0")
    files["edge-bad-utf8-and-surrogate"] = frame(b'{"\xed\xa0\x80":1,"\\udc00":2}')
    return files


def main() -> None:
    out = Path(__file__).resolve().parent / "corpus"
    out.mkdir(exist_ok=True)
    for name, blob in corpus().items():
        assert len(blob) < 2048, (name, len(blob))
        (out / name).write_bytes(blob)
    print(f"wrote {len(corpus())} files to {out}")


if __name__ == "__main__":
    main()

"""Writes the seed corpus of the torch checkpoint reader, fuzz/corpus-pickle/: files
written by torch itself (torch.save zip and legacy formats, a torch.distributed.checkpoint
.metadata, a data.pkl taken out of a zip) and a few hostile pickles. Run from the
repository root:

    python fuzz/make_pickle_corpus.py

Needs torch. Every file is under 8 KB.
"""

from __future__ import annotations

import collections
import io
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch

OUT = Path(__file__).parent / "corpus-pickle"


def state_dict() -> dict[str, torch.Tensor]:
    base = torch.arange(6, dtype=torch.int64)
    sd: dict[str, torch.Tensor] = collections.OrderedDict()
    sd["w"] = torch.ones(2, 3)
    sd["b"] = torch.zeros(3, dtype=torch.bfloat16)
    sd["t"] = torch.ones(3, 2).t()
    sd["p"] = torch.nn.Parameter(torch.ones(2, dtype=torch.float16))
    sd["v1"] = base[1:3]
    sd["v2"] = base[3:]
    sd["f8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    sd["s"] = torch.tensor(1.0)
    return sd


def saved(obj: object, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    files: dict[str, bytes] = {}
    sd = state_dict()
    files["zip-state-dict"] = saved(sd)
    files["zip-nested"] = saved({"model": {"a": torch.ones(1)}, "step": 3, "names": ["x", "y"]})
    files["zip-shared"] = saved({"a": sd["w"], "tied": sd["w"]})
    files["legacy-state-dict"] = saved(sd, _use_new_zipfile_serialization=False)
    files["legacy-shared"] = saved(
        {"a": sd["v1"], "b": sd["v2"]}, _use_new_zipfile_serialization=False
    )
    with zipfile.ZipFile(io.BytesIO(files["zip-state-dict"])) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        files["data-pkl"] = z.read(name)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch.distributed.checkpoint as dcp

        dcp.save({"w": torch.ones(2, 2), "n": 1}, checkpoint_id=tmp)
        files["dcp-metadata"] = (Path(tmp) / ".metadata").read_bytes()
    # Hostile: what a loader that executes would run. Never run here either.
    files["hostile-os-system"] = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echoR."
    files["hostile-eval-stack-global"] = (
        b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x8c\x011\x85R."
    )
    files["hostile-memo-dup"] = b"\x80\x02]q\x00" + b"h\x00" * 64 + b"(" + b"h\x00" * 8 + b"e."
    files["hostile-deep-lists"] = b"\x80\x02" + b"]" * 200 + b"a" * 199 + b"."
    files["protocol0-dict"] = pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}, protocol=0)
    for name, data in files.items():
        assert len(data) < 8192, (name, len(data))
        (OUT / name).write_bytes(data)
    print(f"wrote {len(files)} files to {OUT}")


if __name__ == "__main__":
    main()

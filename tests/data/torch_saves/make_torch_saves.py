#!/usr/bin/env python3
"""Write small torch.save files with the torch that runs this script, and record what
torch.load(weights_only=True) itself says each holds (expected.json beside them).

    python tests/data/torch_saves/make_torch_saves.py   # run with each torch to record

Each file goes to torch-<version>/NAME; expected.json maps NAME to {tensor path: [dtype,
shape, stride, storage_offset]} as torch.load returned it (paths as pyaudit names them:
dict keys and list indices joined by dots). The files exercise what real checkpoints hold:
every common dtype, tied weights sharing one storage, views (a transpose, a slice at an
offset), an OrderedDict with its _metadata attribute (what nn.Module.state_dict returns),
nested dicts (a whole training state), and the pre-1.6 legacy format.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import torch

SAFETENSORS_NAME = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip


def flat(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flat(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def state_dict() -> collections.OrderedDict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Embedding(64, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 64, bias=False)
    )
    model[2].weight = model[0].weight  # tied, as an LM head to its embedding
    return model.to(torch.bfloat16).state_dict()  # an OrderedDict with _metadata


def cases() -> dict[str, tuple[object, dict[str, object]]]:
    base = torch.arange(96, dtype=torch.float32).reshape(8, 12)
    dtypes = {
        str(d).removeprefix("torch."): torch.ones(3, 2, dtype=d)
        for d in SAFETENSORS_NAME
    }
    return {
        "state_dict.bin": (state_dict(), {}),
        "dtypes.bin": (dtypes, {}),
        "views.bin": ({"t": base.t(), "rows": base[2:5], "col": base[:, 3], "base": base}, {}),
        "training_state.pt": (
            {"state_dict": state_dict(), "epoch": 3, "step": 1200, "lr": [1e-4]},
            {},
        ),
        "legacy.bin": (state_dict(), {"_use_new_zipfile_serialization": False}),
    }


def main() -> None:
    out = Path(__file__).resolve().parent / f"torch-{torch.__version__.split('+')[0]}"
    out.mkdir(exist_ok=True)
    expected: dict[str, dict[str, list[object]]] = {}
    for name, (obj, kwargs) in cases().items():
        torch.save(obj, out / name, **kwargs)
        loaded = torch.load(out / name, weights_only=True, map_location="cpu")
        expected[name] = {
            path: [SAFETENSORS_NAME[t.dtype], list(t.shape), list(t.stride()), t.storage_offset()]
            for path, t in flat(loaded).items()
        }
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(out, sorted(expected))


if __name__ == "__main__":
    main()

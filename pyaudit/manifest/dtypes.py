"""torch dtype names in configs -> safetensors dtype names, and element sizes."""

from __future__ import annotations

from typing import Any

__all__ = ["DTYPE_BYTES", "config_dtype", "declared_dtype", "safetensors_dtype"]

#: Bytes per element of each safetensors dtype.
DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

_TORCH_TO_ST: dict[str, str] = {
    "bfloat16": "BF16",
    "float16": "F16",
    "half": "F16",
    "float32": "F32",
    "float": "F32",
    "float64": "F64",
    "double": "F64",
    "int8": "I8",
    "uint8": "U8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}


def safetensors_dtype(name: Any, default: str = "F32") -> str:
    """Map a config dtype (``"bfloat16"``, ``"torch.float16"``, ``"BF16"``) to a safetensors name.

    Unknown values (``None``, ``"auto"``) give ``default``.
    """
    if not isinstance(name, str):
        return default
    key = name.strip()
    if key.startswith("torch."):
        key = key[len("torch.") :]
    if key.upper() in DTYPE_BYTES:
        return key.upper()
    return _TORCH_TO_ST.get(key.lower(), default)


def declared_dtype(config: dict[str, Any]) -> str | None:
    """The dtype a config declares (as :func:`config_dtype` reads it), or None when it names
    none: transformers 5 then loads the checkpoint in the dtype its files hold (``dtype``
    ``"auto"``), so no dtype was meant and none is held against the files."""
    for src in (config, config.get("text_config")):
        if isinstance(src, dict):
            for key in ("dtype", "torch_dtype"):
                value = src.get(key)
                if isinstance(value, str) and value != "auto":
                    return safetensors_dtype(value)
    return None


def config_dtype(config: dict[str, Any]) -> str:
    """The checkpoint dtype a config declares: ``dtype`` (transformers 5) or ``torch_dtype``.

    The top level wins; nested ``text_config`` is a fallback (some VL re-saves only keep it
    there). Defaults to float32, as transformers does.
    """
    return declared_dtype(config) or "F32"

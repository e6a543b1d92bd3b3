"""Quantized checkpoints: which tensors a ``quantization_config`` replaces, and with what.

Supported (recognised from ``config["quantization_config"]["quant_method"]``):

``bitsandbytes`` 4-bit
    Every ``nn.Linear`` (decoder, vision tower, projector, MoE router; never the LM head,
    embeddings or norms; minus ``llm_int8_skip_modules``) stores ``weight`` packed, two 4-bit
    values a byte, as ``[(n + 1) // (2 * itemsize), 1]`` of ``bnb_4bit_quant_storage``
    (uint8 by default), beside ``weight.absmax``, ``weight.quant_map`` ``F32[16]``,
    ``weight.quant_state.bitsandbytes__{nf4|fp4}`` (a packed JSON blob) and, with double
    quantization, ``weight.nested_absmax`` and ``weight.nested_quant_map`` ``F32[256]``.
    ``absmax``/``nested_absmax`` lengths depend on the bitsandbytes block size (not in the
    config) and the blob length on its JSON: their shapes are not checked (``None``).
``bitsandbytes`` 8-bit
    ``weight`` ``I8[out, in]`` + ``{module}.SCB`` ``F32[out]``; ``{module}.weight_format``
    (``U8[]``) is written by current bitsandbytes but not by every version: optional.
``gptq``
    Decoder-block linear layers (minus ``modules_to_not_convert``; only
    ``modules_in_block_to_quantize`` when given; the LM head too when ``lm_head`` is true):
    ``qweight`` ``I32[in // 32 * bits, out]``, ``qzeros`` ``I32[ceil(in / g), out // 32 * bits]``,
    ``scales`` ``F16[ceil(in / g), out]``, ``g_idx`` ``I32[in]``, bias ``F16[out]``.
``awq``
    Decoder-block linear layers: GEMM packing ``qweight`` ``I32[in, out // (32 // bits)]``,
    ``qzeros`` ``I32[in // g, out // (32 // bits)]``, ``scales`` ``F16[in // g, out]``,
    bias ``F16``. Other packings (GEMV...) keep the names; their shapes are not checked.
``mxfp4`` (gpt-oss)
    The MoE experts' fused 3-D weights ``mlp.experts.{gate_up,down}_proj`` ``[E, in, out]``
    are stored as ``{name}_blocks`` ``U8[E, out, in // 32, 16]`` (32 4-bit values a block)
    and ``{name}_scales`` ``U8[E, out, in // 32]``; their biases and every other tensor stay
    in the checkpoint dtype (bfloat16 when the config declares none, as gpt-oss's do).
``fp8``
    Decoder-block linear layers: ``weight`` ``F8_E4M3[out, in]`` + ``weight_scale_inv``
    ``F32[ceil(out / b0), ceil(in / b1)]`` for ``weight_block_size`` ``[b0, b1]`` (shape not
    checked without a block size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .dtypes import safetensors_dtype
from .interpret import Rec

__all__ = ["QuantConfigError", "QuantInfo", "apply_quantization", "detect_quantization"]

Renamer = Callable[[str], str]


class QuantConfigError(ValueError):
    """A ``quantization_config`` this package does not know how to expect.

    :func:`pyaudit.manifest.build_manifest` re-raises it as ``UnsupportedQuantization``.
    """


@dataclass(frozen=True)
class QuantInfo:
    method: str  # "bitsandbytes-4bit", "bitsandbytes-8bit", "gptq", "awq", "fp8", "mxfp4"
    label: str  # human/JSON label, e.g. "bitsandbytes-4bit-nf4", "gptq-4bit"
    config: dict[str, Any]


def _qconfig(config: dict[str, Any]) -> dict[str, Any] | None:
    for src in (config, config.get("text_config")):
        if isinstance(src, dict):
            q = src.get("quantization_config")
            if isinstance(q, dict) and q:
                return q
    return None


def detect_quantization(config: dict[str, Any]) -> QuantInfo | None:
    """What quantization a config declares; ``None`` for a plain checkpoint."""
    q = _qconfig(config)
    if q is None:
        return None
    method = str(q.get("quant_method", "")).lower()
    if method in ("bitsandbytes", "bitsandbytes_4bit", "bitsandbytes_8bit", ""):
        four = bool(q.get("load_in_4bit") or q.get("_load_in_4bit")) or method.endswith("4bit")
        eight = bool(q.get("load_in_8bit") or q.get("_load_in_8bit")) or method.endswith("8bit")
        if four:
            qt = str(q.get("bnb_4bit_quant_type", "fp4")).lower()
            return QuantInfo("bitsandbytes-4bit", f"bitsandbytes-4bit-{qt}", q)
        if eight:
            return QuantInfo("bitsandbytes-8bit", "bitsandbytes-8bit", q)
        if method == "":
            raise QuantConfigError(f"quantization_config without a quant_method: {q!r}")
        return None  # a bitsandbytes config that quantizes nothing
    if method == "gptq":
        fmt = str(q.get("checkpoint_format", "gptq")).lower()
        if fmt not in ("gptq", "gptq_v2"):
            raise QuantConfigError(f"GPTQ checkpoint_format {fmt!r} is not supported")
        return QuantInfo("gptq", f"gptq-{q.get('bits', 4)}bit", q)
    if method == "awq":
        bits = q.get("bits", q.get("w_bit", 4))
        return QuantInfo("awq", f"awq-{bits}bit", q)
    if method == "fp8":
        return QuantInfo("fp8", "fp8", q)
    if method == "mxfp4":
        return QuantInfo("mxfp4", "mxfp4", q)
    raise QuantConfigError(f"quant_method {method!r} is not supported")


def _segment_match(module: str, pattern: str) -> bool:
    return (
        module == pattern
        or module.endswith("." + pattern)
        or module.startswith(pattern + ".")
        or ("." + pattern + ".") in module
    )


def _patterns(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    if isinstance(value, (list, tuple)):
        for v in value:
            out.extend(_patterns(v))
    return out


def _skipped(module: str, rename: Renamer, patterns: list[str]) -> bool:
    if not patterns:
        return False
    on_disk = rename(module + ".weight")[: -len(".weight")]
    return any(_segment_match(module, p) or _segment_match(on_disk, p) for p in patterns)


_DECODER_KINDS = frozenset({"linear"})
_BNB_KINDS = frozenset({"linear", "vision_linear", "router"})


def _int(q: dict[str, Any], *keys: str, default: int) -> int:
    for k in keys:
        v = q.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return default


def apply_quantization(records: list[Rec], info: QuantInfo, rename: Renamer) -> list[Rec]:
    """Replace the quantized modules' tensors in ``records`` by what ``info`` stores instead."""
    q = info.config
    if info.method == "mxfp4":
        return [r for rec in records for r in _mxfp4(rec)]
    if info.method.startswith("bitsandbytes"):
        kinds = _BNB_KINDS
        skip = _patterns(q.get("llm_int8_skip_modules"))
        skip += _patterns(q.get("modules_to_not_convert"))
    else:
        kinds = _DECODER_KINDS | ({"head"} if info.method == "gptq" and q.get("lm_head") else set())
        skip = _patterns(q.get("modules_to_not_convert"))
    only = _patterns(q.get("modules_in_block_to_quantize")) if info.method == "gptq" else []

    out: list[Rec] = []
    for rec in records:
        module = rec.module
        if rec.kind not in kinds or module is None or rec.in_features is None:
            out.append(rec)
            continue
        if _skipped(module, rename, skip) or (
            only and rec.kind != "head" and not any(_segment_match(module, p) for p in only)
        ):
            out.append(rec)
            continue
        if rec.role == "weight":
            out.extend(_quantized_weight(rec, info))
        elif rec.role == "bias":
            if info.method in ("gptq", "awq"):
                out.append(_with(rec, rec.name, rec.shape, "F16"))
            else:
                out.append(rec)
        else:  # pragma: no cover - Linear only makes weight/bias records
            out.append(rec)
    return out


def _mxfp4(rec: Rec) -> list[Rec]:
    """An expert weight ``[E, in, out]`` as MXFP4 blocks and scales; anything else as is."""
    parts = rec.name.rsplit(".", 2)
    if (
        rec.shape is None
        or len(rec.shape) != 3
        or len(parts) != 3
        or parts[1] != "experts"
        or not parts[2].endswith("_proj")
        or rec.shape[1] % 32
    ):
        return [rec]
    experts, k, n = rec.shape
    return [
        _with(rec, rec.name + "_blocks", (experts, n, k // 32, 16), "U8"),
        _with(rec, rec.name + "_scales", (experts, n, k // 32), "U8"),
    ]


def _with(
    rec: Rec, name: str, shape: tuple[int, ...] | None, dtype: str, optional: bool = False
) -> Rec:
    return Rec(
        name=name,
        shape=shape,
        dtype=dtype,
        section=rec.section,
        kind=rec.kind,
        module=rec.module,
        in_features=rec.in_features,
        out_features=rec.out_features,
        role="quant",
        optional=optional,
    )


def _quantized_weight(rec: Rec, info: QuantInfo) -> list[Rec]:
    q = info.config
    assert rec.module is not None and rec.in_features is not None and rec.out_features is not None
    m, k, n = rec.module, rec.in_features, rec.out_features  # k = in, n = out
    w = rec.name
    if info.method == "bitsandbytes-4bit":
        storage = safetensors_dtype(q.get("bnb_4bit_quant_storage", "uint8"), default="U8")
        itemsize = {"U8": 1, "I8": 1, "F16": 2, "BF16": 2, "F32": 4}.get(storage, 1)
        numel = k * n
        double = bool(q.get("bnb_4bit_use_double_quant", False))
        qt = str(q.get("bnb_4bit_quant_type", "fp4")).lower()
        recs = [
            _with(rec, w, ((numel + 1) // (2 * itemsize), 1), storage),
            _with(rec, w + ".absmax", None, "U8" if double else "F32"),
            _with(rec, w + ".quant_map", (16,), "F32"),
        ]
        if double:
            recs += [
                _with(rec, w + ".nested_absmax", None, "F32"),
                _with(rec, w + ".nested_quant_map", (256,), "F32"),
            ]
        recs.append(_with(rec, w + f".quant_state.bitsandbytes__{qt}", None, "U8"))
        return recs
    if info.method == "bitsandbytes-8bit":
        return [
            _with(rec, w, (n, k), "I8"),
            _with(rec, m + ".SCB", (n,), "F32"),
            _with(rec, m + ".weight_format", (), "U8", optional=True),
        ]
    if info.method == "gptq":
        bits = _int(q, "bits", default=4)
        g = _int(q, "group_size", default=128)
        g = k if g <= 0 else g
        groups = -(-k // g)
        return [
            _with(rec, m + ".qweight", (k // 32 * bits, n), "I32"),
            _with(rec, m + ".qzeros", (groups, n // 32 * bits), "I32"),
            _with(rec, m + ".scales", (groups, n), "F16"),
            _with(rec, m + ".g_idx", (k,), "I32"),
        ]
    if info.method == "awq":
        bits = _int(q, "bits", "w_bit", default=4)
        g = _int(q, "group_size", "q_group_size", default=128)
        g = k if g <= 0 else g
        version = str(q.get("version", "gemm")).lower()
        pack = 32 // bits
        gemm = version in ("gemm", "exllama", "ipex")
        return [
            _with(rec, m + ".qweight", (k, n // pack) if gemm else None, "I32"),
            _with(rec, m + ".qzeros", (k // g, n // pack) if gemm else None, "I32"),
            _with(rec, m + ".scales", (k // g, n) if gemm else None, "F16"),
        ]
    if info.method == "fp8":
        block = q.get("weight_block_size")
        scale_shape: tuple[int, ...] | None = None
        if (
            isinstance(block, (list, tuple))
            and len(block) == 2
            and all(isinstance(b, int) and b > 0 for b in block)
        ):
            scale_shape = (-(-n // block[0]), -(-k // block[1]))
        return [
            _with(rec, w, (n, k), "F8_E4M3"),
            _with(rec, w + "_scale_inv", scale_shape, "F32"),
        ]
    raise QuantConfigError(info.method)  # pragma: no cover

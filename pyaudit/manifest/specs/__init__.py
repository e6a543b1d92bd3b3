"""The family specs, one module per family, registered by ``model_type``."""

from __future__ import annotations

from ..spec import Spec
from . import (
    deepseek_v3,
    gemma,
    gemma2,
    gemma3,
    llama,
    mistral,
    mixtral,
    phi3,
    qwen2,
    qwen2_5_vl,
    qwen2_vl,
    qwen3,
    qwen3_moe,
)

__all__ = ["ARCHITECTURES", "SPECS"]

_ALL: tuple[Spec, ...] = (
    llama.SPEC,
    mistral.SPEC,
    mixtral.SPEC,
    qwen2.SPEC,
    qwen2_vl.SPEC,
    qwen2_5_vl.SPEC,
    qwen3.SPEC,
    qwen3_moe.SPEC,
    gemma.SPEC,
    gemma2.SPEC,
    gemma3.TEXT_SPEC,
    gemma3.SPEC,
    phi3.SPEC,
    deepseek_v3.SPEC,
)

#: model_type -> spec
SPECS: dict[str, Spec] = {s.model_type: s for s in _ALL}
#: architecture class name (``config["architectures"]``) -> model_type
ARCHITECTURES: dict[str, str] = {a: s.model_type for s in _ALL for a in s.architectures}

"""Building blocks shared by family specs (functions that return spec data)."""

from __future__ import annotations

from ..spec import Entry, Linear, Repeat

__all__ = [
    "HEAD_DIM",
    "KV_HEADS",
    "causal_lm",
    "decoder_norms",
    "gated_mlp",
    "llama_attention",
    "sandwich_norms",
]

#: ``head_dim`` as transformers computes it when the config leaves it out or null.
HEAD_DIM = "head_dim or hidden_size // num_attention_heads"
#: ``num_key_value_heads`` defaults to ``num_attention_heads`` (multi-head attention).
KV_HEADS = "num_key_value_heads or num_attention_heads"


def llama_attention(
    qkv_bias: bool | str = "attention_bias",
    o_bias: bool | str = "attention_bias",
    qk_norm: bool = False,
) -> list[Entry]:
    """``self_attn.{q,k,v,o}_proj`` (+ per-head ``q_norm``/``k_norm``)."""
    entries: list[Entry] = [
        Linear("self_attn.q_proj", "num_attention_heads * head_dim", "hidden_size", qkv_bias),
        Linear("self_attn.k_proj", "num_key_value_heads * head_dim", "hidden_size", qkv_bias),
        Linear("self_attn.v_proj", "num_key_value_heads * head_dim", "hidden_size", qkv_bias),
        Linear("self_attn.o_proj", "hidden_size", "num_attention_heads * head_dim", o_bias),
    ]
    if qk_norm:
        entries += [
            ("self_attn.q_norm.weight", "head_dim"),
            ("self_attn.k_norm.weight", "head_dim"),
        ]
    return entries


def gated_mlp(
    prefix: str = "mlp.",
    intermediate: str = "intermediate_size",
    bias: bool | str = False,
    kind: str = "linear",
    hidden: str = "hidden_size",
) -> list[Entry]:
    """SwiGLU-style ``gate_proj``/``up_proj``/``down_proj``."""
    return [
        Linear(prefix + "gate_proj", intermediate, hidden, bias, kind=kind),
        Linear(prefix + "up_proj", intermediate, hidden, bias, kind=kind),
        Linear(prefix + "down_proj", hidden, intermediate, bias, kind=kind),
    ]


def decoder_norms() -> list[Entry]:
    return [
        ("input_layernorm.weight", "hidden_size"),
        ("post_attention_layernorm.weight", "hidden_size"),
    ]


def sandwich_norms() -> list[Entry]:
    """Gemma 2/3: norms before and after both the attention and the MLP."""
    return [
        ("input_layernorm.weight", "hidden_size"),
        ("post_attention_layernorm.weight", "hidden_size"),
        ("pre_feedforward_layernorm.weight", "hidden_size"),
        ("post_feedforward_layernorm.weight", "hidden_size"),
    ]


def causal_lm(layer: list[Entry]) -> list[Entry]:
    """``model.embed_tokens`` + ``model.layers.{i}`` + ``model.norm`` + (untied) ``lm_head``."""
    return [
        ("model.embed_tokens.weight", "vocab_size, hidden_size"),
        Repeat("i", "num_hidden_layers", layer, prefix="model.layers.{i}."),
        ("model.norm.weight", "hidden_size"),
        Linear(
            "lm_head",
            "vocab_size",
            "hidden_size",
            when="not tie_word_embeddings",
            kind="head",
            tied_to="model.embed_tokens.weight",
        ),
    ]

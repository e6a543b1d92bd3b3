"""Gemma 2: ``Gemma2ForCausalLM``.

Facts (transformers ``Gemma2Config``/``modeling_gemma2``): like Gemma plus
``pre_feedforward_layernorm`` and ``post_feedforward_layernorm`` in every layer;
``head_dim`` default 256; ``tie_word_embeddings`` defaults to TRUE.
"""

from ..spec import Scope, Spec
from ._common import HEAD_DIM, KV_HEADS, causal_lm, gated_mlp, llama_attention, sandwich_norms

SPEC = Spec(
    model_type="gemma2",
    architectures=("Gemma2ForCausalLM",),
    scopes={
        "text": Scope(
            sources=("text_config", ""),
            defaults={
                "vocab_size": 256000,
                "hidden_size": 2304,
                "intermediate_size": 9216,
                "num_hidden_layers": 26,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "head_dim": 256,
                "attention_bias": False,
                "tie_word_embeddings": True,
            },
            let={"num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
        )
    },
    tensors=causal_lm([*llama_attention(), *gated_mlp(), *sandwich_norms()]),
)

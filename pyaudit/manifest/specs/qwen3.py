"""Qwen3 (dense): ``Qwen3ForCausalLM``.

Facts (transformers ``Qwen3Config``/``modeling_qwen3``): per-head RMSNorms
``self_attn.q_norm``/``k_norm`` ``[head_dim]``; q/k/v/o biases follow ``attention_bias``
(default false); ``head_dim`` defaults to 128; ``tie_word_embeddings`` defaults to false
(Qwen3-0.6B/1.7B/4B set it true).
"""

from ..spec import Scope, Spec
from ._common import HEAD_DIM, KV_HEADS, causal_lm, decoder_norms, gated_mlp, llama_attention

SPEC = Spec(
    model_type="qwen3",
    architectures=("Qwen3ForCausalLM",),
    scopes={
        "text": Scope(
            sources=("text_config", ""),
            defaults={
                "vocab_size": 151936,
                "hidden_size": 4096,
                "intermediate_size": 22016,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 32,
                "head_dim": 128,
                "attention_bias": False,
                "tie_word_embeddings": False,
            },
            let={"num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
        )
    },
    tensors=causal_lm([*llama_attention(qk_norm=True), *gated_mlp(), *decoder_norms()]),
)

"""Phi-3 / Phi-3.5-mini / Phi-4-mini: ``Phi3ForCausalLM``.

Facts (transformers ``Phi3Config``/``modeling_phi3``): fused ``self_attn.qkv_proj``
``[heads * head_dim + 2 * kv_heads * head_dim, hidden]`` and ``mlp.gate_up_proj``
``[2 * intermediate, hidden]``, no biases; ``head_dim = hidden_size // num_attention_heads``
unless the config gives one; ``tie_word_embeddings`` defaults to false (Phi-4-mini sets true).
"""

from ..spec import Linear, Scope, Spec
from ._common import HEAD_DIM, KV_HEADS, causal_lm, decoder_norms

SPEC = Spec(
    model_type="phi3",
    architectures=("Phi3ForCausalLM",),
    scopes={
        "text": Scope(
            sources=("text_config", ""),
            defaults={
                "vocab_size": 32064,
                "hidden_size": 3072,
                "intermediate_size": 8192,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": None,
                "head_dim": None,
                "tie_word_embeddings": False,
            },
            let={"num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
        )
    },
    tensors=causal_lm(
        [
            Linear("self_attn.o_proj", "hidden_size", "num_attention_heads * head_dim"),
            Linear(
                "self_attn.qkv_proj",
                "(num_attention_heads + 2 * num_key_value_heads) * head_dim",
                "hidden_size",
            ),
            Linear("mlp.gate_up_proj", "2 * intermediate_size", "hidden_size"),
            Linear("mlp.down_proj", "hidden_size", "intermediate_size"),
            *decoder_norms(),
        ]
    ),
)

"""Mistral: ``MistralForCausalLM``.

Facts (transformers ``MistralConfig``/``modeling_mistral``): no attention or MLP biases;
``head_dim`` defaults to null -> ``hidden_size // num_attention_heads``;
``tie_word_embeddings`` defaults to false.
"""

from ..spec import Scope, Spec
from ._common import HEAD_DIM, KV_HEADS, causal_lm, decoder_norms, gated_mlp, llama_attention

SPEC = Spec(
    model_type="mistral",
    architectures=("MistralForCausalLM",),
    scopes={
        "text": Scope(
            sources=("text_config", ""),
            defaults={
                "vocab_size": 32000,
                "hidden_size": 4096,
                "intermediate_size": 14336,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "head_dim": None,
                "tie_word_embeddings": False,
            },
            let={"num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
        )
    },
    tensors=causal_lm(
        [*llama_attention(qkv_bias=False, o_bias=False), *gated_mlp(), *decoder_norms()],
    ),
)

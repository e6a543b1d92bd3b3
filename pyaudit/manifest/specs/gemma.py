"""Gemma (1): ``GemmaForCausalLM``.

Facts (transformers ``GemmaConfig``/``modeling_gemma``): ``head_dim`` is explicit (default
256); q/k/v/o biases follow ``attention_bias`` (default false); ``tie_word_embeddings``
defaults to TRUE, so a checkpoint normally has no ``lm_head.weight``.
"""

from ..spec import Scope, Spec
from ._common import HEAD_DIM, KV_HEADS, causal_lm, decoder_norms, gated_mlp, llama_attention

SPEC = Spec(
    model_type="gemma",
    architectures=("GemmaForCausalLM",),
    scopes={
        "text": Scope(
            sources=("text_config", ""),
            defaults={
                "vocab_size": 256000,
                "hidden_size": 3072,
                "intermediate_size": 24576,
                "num_hidden_layers": 28,
                "num_attention_heads": 16,
                "num_key_value_heads": 16,
                "head_dim": 256,
                "attention_bias": False,
                "tie_word_embeddings": True,
            },
            let={"num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
        )
    },
    tensors=causal_lm([*llama_attention(), *gated_mlp(), *decoder_norms()]),
)

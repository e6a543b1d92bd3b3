"""Llama (1/2/3.x): ``LlamaForCausalLM``.

Facts (transformers ``LlamaConfig``/``modeling_llama``): q/k/v/o biases follow
``attention_bias``, MLP biases follow ``mlp_bias`` (both default false); ``head_dim``
defaults to ``hidden_size // num_attention_heads``; ``tie_word_embeddings`` defaults to false.

Before transformers 4.31 the rotary ``inv_freq`` buffer was persistent, so checkpoints of
that era (e.g. meta-llama/Llama-2-7b-hf, whose index ``total_size`` 13476839424 is twice
the parameter count plus 32 x 64 float32s) hold ``self_attn.rotary_emb.inv_freq``
``F32[head_dim // 2]`` in every layer: optional.
"""

from ..spec import Scope, Spec, T
from ._common import HEAD_DIM, KV_HEADS, causal_lm, decoder_norms, gated_mlp, llama_attention

SPEC = Spec(
    model_type="llama",
    architectures=("LlamaForCausalLM",),
    scopes={
        "text": Scope(
            sources=("text_config", ""),
            defaults={
                "vocab_size": 32000,
                "hidden_size": 4096,
                "intermediate_size": 11008,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": None,
                "head_dim": None,
                "attention_bias": False,
                "mlp_bias": False,
                "tie_word_embeddings": False,
            },
            let={"num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
        )
    },
    tensors=causal_lm(
        [
            *llama_attention(),
            T("self_attn.rotary_emb.inv_freq", "head_dim // 2", dtype="F32", optional=True),
            *gated_mlp(bias="mlp_bias"),
            *decoder_norms(),
        ],
    ),
)

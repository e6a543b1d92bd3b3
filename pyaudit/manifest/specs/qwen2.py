"""Qwen2 / Qwen2.5: ``Qwen2ForCausalLM``.

Facts (transformers ``Qwen2Config``/``modeling_qwen2``): q/k/v projections always have a bias,
o_proj never; no MLP biases; ``head_dim = hidden_size // num_attention_heads``;
``tie_word_embeddings`` defaults to false (the small Qwen2.5 models set it true).
"""

from ..spec import Entry, Scope, Spec
from ._common import HEAD_DIM, KV_HEADS, causal_lm, decoder_norms, gated_mlp, llama_attention

TEXT_DEFAULTS = {
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 22016,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "head_dim": None,
    "tie_word_embeddings": False,
}

#: One Qwen2 decoder layer (also the text layers of Qwen2-VL / Qwen2.5-VL).
LAYER: list[Entry] = [*llama_attention(qkv_bias=True, o_bias=False), *gated_mlp(), *decoder_norms()]

SPEC = Spec(
    model_type="qwen2",
    architectures=("Qwen2ForCausalLM",),
    scopes={
        "text": Scope(
            sources=("text_config", ""),
            defaults=TEXT_DEFAULTS,
            let={"num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
        )
    },
    tensors=causal_lm(LAYER),
)

"""Mixtral: ``MixtralForCausalLM`` (sparse MoE in every layer).

Facts (transformers ``MixtralConfig``/``modeling_mixtral`` and ``conversion_mapping.py``):
on disk each layer holds ``block_sparse_moe.gate`` ``[num_local_experts, hidden]`` and
per-expert ``block_sparse_moe.experts.{e}.w1`` (gate) / ``w3`` (up) ``[intermediate, hidden]``
and ``w2`` (down) ``[hidden, intermediate]``; transformers 5 fuses them in memory only and
reverts the fusion when saving (a transformers 5.24 ``save_pretrained`` writes exactly these
names). No biases; ``tie_word_embeddings`` defaults to false. ``num_experts`` is an alias of
``num_local_experts`` (``MixtralConfig.attribute_map``); both spellings are read.
"""

from ..spec import Linear, Repeat, Scope, Spec
from ._common import HEAD_DIM, KV_HEADS, causal_lm, decoder_norms, llama_attention

SPEC = Spec(
    model_type="mixtral",
    architectures=("MixtralForCausalLM",),
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
                "num_local_experts": 8,
                "tie_word_embeddings": False,
            },
            let={"num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
            aliases={"num_experts": "num_local_experts"},
        )
    },
    tensors=causal_lm(
        [
            *llama_attention(qkv_bias=False, o_bias=False),
            Linear("block_sparse_moe.gate", "num_local_experts", "hidden_size", kind="router"),
            Repeat(
                "e",
                "num_local_experts",
                [
                    Linear("w1", "intermediate_size", "hidden_size"),
                    Linear("w2", "hidden_size", "intermediate_size"),
                    Linear("w3", "intermediate_size", "hidden_size"),
                ],
                prefix="block_sparse_moe.experts.{e}.",
            ),
            *decoder_norms(),
        ],
    ),
)

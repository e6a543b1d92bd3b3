"""Qwen3-MoE: ``Qwen3MoeForCausalLM``.

Facts (transformers ``Qwen3MoeConfig``/``modular_qwen3_moe``/``conversion_mapping.py``):
layer ``i`` is sparse when ``i not in mlp_only_layers and num_experts > 0 and
(i + 1) % decoder_sparse_step == 0``, else a dense MLP of ``intermediate_size``. A sparse
layer holds the router ``mlp.gate`` ``[num_experts, hidden]`` and per-expert
``mlp.experts.{e}.{gate,up,down}_proj`` of ``moe_intermediate_size`` (transformers 5 fuses
them in memory only and reverts on save); no shared expert. Attention as Qwen3 (q/k norms).
``head_dim`` falls back to ``hidden_size // num_attention_heads``; no tie by default.

Config spellings: transformers 5's ``Qwen3MoeConfig.attribute_map`` makes ``num_experts`` an
alias of ``num_local_experts``, so a config it re-saves holds ``num_local_experts`` only; both
are read. (The other fields, ``moe_intermediate_size``, ``decoder_sparse_step``,
``mlp_only_layers``, ``num_experts_per_tok``, keep their names.)
"""

from ..spec import Group, Linear, Repeat, Scope, Spec
from ._common import HEAD_DIM, KV_HEADS, causal_lm, decoder_norms, gated_mlp, llama_attention

SPARSE = "i not in mlp_only_layers and num_experts > 0 and (i + 1) % decoder_sparse_step == 0"

SPEC = Spec(
    model_type="qwen3_moe",
    architectures=("Qwen3MoeForCausalLM",),
    scopes={
        "text": Scope(
            sources=("text_config", ""),
            defaults={
                "vocab_size": 151936,
                "hidden_size": 2048,
                "intermediate_size": 6144,
                "num_hidden_layers": 24,
                "num_attention_heads": 32,
                "num_key_value_heads": 4,
                "head_dim": None,
                "attention_bias": False,
                "tie_word_embeddings": False,
                "decoder_sparse_step": 1,
                "moe_intermediate_size": 768,
                "num_experts": 128,
                "mlp_only_layers": None,
            },
            let={
                "num_key_value_heads": KV_HEADS,
                "head_dim": HEAD_DIM,
                "mlp_only_layers": "mlp_only_layers or []",
                "decoder_sparse_step": "decoder_sparse_step or 1",
                "num_experts": "num_experts or 0",
            },
            aliases={"num_local_experts": "num_experts"},
        )
    },
    tensors=causal_lm(
        [
            *llama_attention(qk_norm=True),
            Group(
                [
                    Linear("mlp.gate", "num_experts", "hidden_size", kind="router"),
                    Repeat(
                        "e",
                        "num_experts",
                        gated_mlp(prefix="", intermediate="moe_intermediate_size"),
                        prefix="mlp.experts.{e}.",
                    ),
                ],
                when=SPARSE,
            ),
            Group(gated_mlp(), when=f"not ({SPARSE})"),
            *decoder_norms(),
        ]
    ),
)

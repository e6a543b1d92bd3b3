"""DeepSeek-V3 / R1: ``DeepseekV3ForCausalLM``.

Facts (transformers ``configuration_deepseek_v3``/``modular_deepseek_v3`` and DeepSeek's
``README_WEIGHTS.md``):

* MLA attention: with ``q_lora_rank`` set, ``q_a_proj`` ``[q_lora_rank, hidden]`` +
  ``q_a_layernorm`` + ``q_b_proj`` ``[heads * (qk_nope + qk_rope), q_lora_rank]``; with
  ``q_lora_rank`` null a single ``q_proj``. Then ``kv_a_proj_with_mqa``
  ``[kv_lora_rank + qk_rope, hidden]``, ``kv_a_layernorm`` ``[kv_lora_rank]``, ``kv_b_proj``
  ``[heads * (qk_nope + v_head_dim), kv_lora_rank]``, ``o_proj`` ``[hidden, heads * v_head_dim]``.
  ``q_a_proj``/``kv_a_proj_with_mqa``/``o_proj`` biases follow ``attention_bias``.
* Layers ``< first_k_dense_replace`` have a dense MLP (``intermediate_size``); the others
  (every ``moe_layer_freq``-th) an MoE: router ``mlp.gate.weight`` ``[n_routed_experts, hidden]``
  (a bare parameter) + ``mlp.gate.e_score_correction_bias`` ``[n_routed_experts]`` kept in
  float32, ``n_routed_experts`` experts and one shared MLP of
  ``moe_intermediate_size * n_shared_experts``.
* Multi-token prediction: ``num_nextn_predict_layers`` extra layers stored as
  ``model.layers.{num_hidden_layers + k}``: a full decoder layer plus ``embed_tokens``,
  ``enorm``, ``hnorm``, ``eh_proj`` ``[hidden, 2 * hidden]``, ``shared_head.norm`` and
  ``shared_head.head`` ``[vocab, hidden]`` (embedding, head and ``eh_proj`` stay unquantized).
* The official FP8 release: ``quantization_config.quant_method == "fp8"`` with
  ``weight_block_size`` ``[128, 128]``: see :mod:`pyaudit.manifest.quant`.
* Config spellings (transformers 5 ``DeepseekV3Config.attribute_map``): ``num_local_experts``
  for ``n_routed_experts``, ``num_mtp_layers`` for ``num_nextn_predict_layers``; both read.
  transformers 5 writes ``num_nextn_predict_layers`` itself (1 when the config had none).

Layouts: two writers, two healthy checkpoints.

``default``
    DeepSeek's release (and conversions of it, e.g. its ``fp8_cast_bf16.py``): the MTP
    layers are there, and the router ``mlp.gate.weight`` is in the checkpoint dtype (BF16:
    the Hub's dtype breakdown of deepseek-ai/DeepSeek-V3, BF16 3918786560 / F8_E4M3
    680571043840 / F32 41555600, leaves no room for a float32 gate; see the tests).
``transformers>=5``
    A transformers ``save_pretrained``: ``DeepseekV3Model`` builds ``num_hidden_layers``
    layers only and drops ``model.layers.61.*`` on load (``_keys_to_ignore_on_load_unexpected``),
    so the ``mtp`` section is never written whatever the config says; and transformers 5
    keeps the router in float32 (``_keep_in_fp32_modules_strict = ["e_score_correction_bias",
    "gate.weight"]``, checked with 5.24), so ``mlp.gate.weight`` is F32 on disk.

Why a second layout and not an optional ``mtp`` section: each layout's ``total_bytes`` is
then exactly what its checkpoint holds (``default`` reproduces the release's byte count, MTP
included), a checkpoint holding part of an MTP layer is still caught (it fits neither
layout), and the router dtype, which differs between the two writers, travels with the
layout. The auditor holds a checkpoint against the layout most of its names fit, the first
on a tie; a checkpoint without MTP fits both equally, so the order matters: ``default``
comes first, except for a config transformers 5 wrote (``transformers_version`` >= 5; a
re-save always rewrites config.json), whose checkpoint has neither MTP layers nor a BF16
router. Not covered: transformers releases that kept the router in the model dtype (4.51
to some 5.x; no MTP, BF16 gate) are held against ``default`` (MTP reported missing when
the config has ``num_nextn_predict_layers``) or, with a 5.x config, against
``transformers>=5`` (a dtype-drift warning on the gates).
"""

from ..spec import Entry, Group, Layout, Linear, Repeat, Scope, Spec, T
from ._common import KV_HEADS, decoder_norms, gated_mlp

MOE = "n_routed_experts and i >= first_k_dense_replace and i % (moe_layer_freq or 1) == 0"

ATTENTION: list[Entry] = [
    Group(
        [
            Linear("self_attn.q_a_proj", "q_lora_rank", "hidden_size", "attention_bias"),
            ("self_attn.q_a_layernorm.weight", "q_lora_rank"),
            Linear("self_attn.q_b_proj", "num_attention_heads * qk_head_dim", "q_lora_rank"),
        ],
        when="q_lora_rank",
    ),
    Linear(
        "self_attn.q_proj",
        "num_attention_heads * qk_head_dim",
        "hidden_size",
        when="not q_lora_rank",
    ),
    Linear(
        "self_attn.kv_a_proj_with_mqa",
        "kv_lora_rank + qk_rope_head_dim",
        "hidden_size",
        "attention_bias",
    ),
    ("self_attn.kv_a_layernorm.weight", "kv_lora_rank"),
    Linear(
        "self_attn.kv_b_proj",
        "num_attention_heads * (qk_nope_head_dim + v_head_dim)",
        "kv_lora_rank",
    ),
    Linear("self_attn.o_proj", "hidden_size", "num_attention_heads * v_head_dim", "attention_bias"),
]

LAYER: list[Entry] = [
    *ATTENTION,
    Group(
        [
            Repeat(
                "e",
                "n_routed_experts",
                gated_mlp(prefix="", intermediate="moe_intermediate_size"),
                prefix="mlp.experts.{e}.",
            ),
            Group(
                gated_mlp(
                    prefix="mlp.shared_experts.",
                    intermediate="moe_intermediate_size * n_shared_experts",
                ),
                when="n_shared_experts",
            ),
            ("mlp.gate.weight", "n_routed_experts, hidden_size"),
            T("mlp.gate.e_score_correction_bias", "n_routed_experts", dtype="F32"),
        ],
        when=MOE,
    ),
    Group(gated_mlp(), when=f"not ({MOE})"),
    *decoder_norms(),
]

MTP_EXTRAS: list[Entry] = [
    ("embed_tokens.weight", "vocab_size, hidden_size"),
    ("enorm.weight", "hidden_size"),
    ("hnorm.weight", "hidden_size"),
    ("eh_proj.weight", "hidden_size, 2 * hidden_size"),
    ("shared_head.norm.weight", "hidden_size"),
    ("shared_head.head.weight", "vocab_size, hidden_size"),
]

SPEC = Spec(
    model_type="deepseek_v3",
    architectures=("DeepseekV3ForCausalLM",),
    scopes={
        "text": Scope(
            sources=("text_config", ""),
            defaults={
                "vocab_size": 129280,
                "hidden_size": 7168,
                "intermediate_size": 18432,
                "moe_intermediate_size": 2048,
                "num_hidden_layers": 61,
                "num_attention_heads": 128,
                "num_key_value_heads": 128,
                "n_shared_experts": 1,
                "n_routed_experts": 256,
                "kv_lora_rank": 512,
                "q_lora_rank": 1536,
                "qk_rope_head_dim": 64,
                "v_head_dim": 128,
                "qk_nope_head_dim": 128,
                "first_k_dense_replace": 3,
                "moe_layer_freq": 1,
                "num_nextn_predict_layers": 0,
                "attention_bias": False,
                "tie_word_embeddings": False,
            },
            let={
                "num_key_value_heads": KV_HEADS,
                "qk_head_dim": "qk_nope_head_dim + qk_rope_head_dim",
                "num_nextn_predict_layers": "num_nextn_predict_layers or 0",
            },
            aliases={
                "num_local_experts": "n_routed_experts",
                "num_mtp_layers": "num_nextn_predict_layers",
            },
        )
    },
    layouts=(
        Layout("default"),
        Layout(
            "transformers>=5",
            omit=("mtp",),
            dtypes=(("mlp.gate.weight", "F32"),),
            prefer="version(transformers_version) >= (5,)",
        ),
    ),
    tensors=[
        ("model.embed_tokens.weight", "vocab_size, hidden_size"),
        Repeat("i", "num_hidden_layers", LAYER, prefix="model.layers.{i}."),
        Repeat(
            "i",
            "num_nextn_predict_layers",
            [*LAYER, *MTP_EXTRAS],
            start="num_hidden_layers",
            prefix="model.layers.{i}.",
            section="mtp",
        ),
        ("model.norm.weight", "hidden_size"),
        Linear(
            "lm_head",
            "vocab_size",
            "hidden_size",
            when="not tie_word_embeddings",
            kind="head",
            tied_to="model.embed_tokens.weight",
        ),
    ],
)

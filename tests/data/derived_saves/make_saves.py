"""Writes the tiny real checkpoints in this folder (run with torch + transformers installed).

    python tests/data/derived_saves/make_saves.py

Each folder is what ``save_pretrained`` of the installed transformers writes for a tiny config
of one family (random weights, seed 0, bfloat16): ``config.json`` and ``model.safetensors``,
as written, nothing edited. pyaudit's manifests take no part in making them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import transformers

HERE = Path(__file__).resolve().parent
SMALL = {
    "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64,
    "max_position_embeddings": 64, "tie_word_embeddings": False,
    "pad_token_id": None, "bos_token_id": None, "eos_token_id": None,
}  # fmt: skip
FAMILIES = {
    "gpt2": {"n_embd": 16, "n_layer": 2, "n_head": 2, "vocab_size": 64, "n_positions": 64},
    "olmo2": SMALL,
    "starcoder2": SMALL,
    "granite": SMALL,
    "smollm3": SMALL,
    "bert": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "vocab_size": 64, "max_position_embeddings": 64,
             "pad_token_id": 0},
    "exaone4": SMALL,
    # layer 0 dense, layer 1 MoE (moe_layer_start_index 1)
    "ernie4_5_moe": {**SMALL, "moe_num_experts": 4, "moe_intermediate_size": 8,
                     "moe_num_shared_experts": 1, "moe_k": 2},
    "gemma3n_text": {**SMALL, "head_dim": 8, "vocab_size_per_layer_input": 64,
                     "hidden_size_per_layer_input": 4, "num_kv_shared_layers": 0,
                     "laurel_rank": 4, "altup_num_inputs": 2,
                     "activation_sparsity_pattern": [0.0, 0.0]},
    # layer 0 linear attention (Gated DeltaNet), layer 1 full attention; both MoE
    "qwen3_next": {**SMALL, "head_dim": 8, "linear_key_head_dim": 4, "linear_value_head_dim": 4,
                   "linear_num_key_heads": 2, "linear_num_value_heads": 4, "num_experts": 4,
                   "num_experts_per_tok": 2, "moe_intermediate_size": 8,
                   "shared_expert_intermediate_size": 8, "full_attention_interval": 2},
    # head_dim given: transformers 5.25 builds neither from a config leaving it null
    "hunyuan_v1_dense": {**SMALL, "head_dim": 8},
    # two experts and the shared MLP in every layer
    "hunyuan_v1_moe": {**SMALL, "head_dim": 8, "num_experts": 2, "moe_topk": 1},
    "ministral": {**SMALL, "head_dim": 8},
    # layer 0 a short convolution, layer 1 attention; the feed-forward width rounded up:
    # int(2 * 32 / 3) = 21 -> 24, the next multiple of block_multiple_of
    "lfm2": {**SMALL, "block_multiple_of": 8, "full_attn_idxs": [1]},
    # layer 0 Mamba2, layer 1 attention, in the names granite-4.0-h's config.json use
    # (transformers renames them "linear_attention", "full_attention"); two experts and the
    # shared MLP a layer
    "granitemoehybrid": {**SMALL, "layer_types": ["mamba", "attention"], "mamba_n_heads": 4,
                         "mamba_d_state": 8, "mamba_n_groups": 1, "mamba_chunk_size": 8,
                         "num_local_experts": 2, "num_experts_per_tok": 1,
                         "shared_intermediate_size": 16},
    # Llama4ForConditionalGeneration: text layer 0 dense, layer 1 MoE (interleave step 2)
    "llama4": {
        "text_config": {**SMALL, "head_dim": 8, "num_local_experts": 2,
                        "intermediate_size_mlp": 32, "interleave_moe_layer_step": 2},
        "vision_config": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "intermediate_size": 32, "vision_output_dim": 16, "image_size": 28,
                          "patch_size": 14, "projector_input_dim": 16,
                          "projector_output_dim": 16},
        "tie_word_embeddings": False,
    },
    # InternVLForConditionalGeneration: a qwen2 text model, a 2-block vision tower
    "internvl": {
        "text_config": {"model_type": "qwen2", **SMALL},
        "vision_config": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "intermediate_size": 32, "image_size": [28, 28],
                          "patch_size": [14, 14]},
        "tie_word_embeddings": False,
    },
    # Phi4MultimodalForCausalLM: text, vision and audio (a conformer of 2 blocks)
    "phi4_multimodal": {
        **SMALL,
        "vision_config": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "intermediate_size": 32, "image_size": 28, "patch_size": 14},
        "audio_config": {"hidden_size": 16, "num_blocks": 2, "num_attention_heads": 2,
                         "intermediate_size": 32, "nemo_conv_channels": 8,
                         "depthwise_seperable_out_channel": 16, "ext_pw_out_channel": 16},
    },
    # gated T5 (T5 v1.1 / FLAN-T5: feed_forward_proj "gated-gelu", wi_0 and wi_1); the
    # untied v1.1 config's tie_word_embeddings false is overridden by transformers 5.25
    "t5": {"d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 2, "num_heads": 2,
           "vocab_size": 64, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
}  # fmt: skip


def main() -> None:
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for model_type, kwargs in FAMILIES.items():
        if len(sys.argv) > 1 and model_type not in sys.argv[1:]:
            continue
        config = CONFIG_MAPPING[model_type](**kwargs)
        # the first class of these tables that builds from the config (llama4's causal-LM
        # class takes its text config only: the image-text one is what a llama4 save is)
        for table in (
            "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
            "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
            "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
            "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
        ):
            name = getattr(modeling_auto, table).get(model_type)
            if not name:
                continue
            cls = getattr(transformers, name)
            torch.manual_seed(0)
            try:
                model = cls._from_config(config, dtype=torch.bfloat16)
            except AttributeError:
                continue
            break
        out = HERE / model_type
        model.save_pretrained(out)
        print(model_type, name, sum(p.stat().st_size for p in out.iterdir()), "bytes")


if __name__ == "__main__":
    main()

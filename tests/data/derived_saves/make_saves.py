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
}  # fmt: skip


def main() -> None:
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for model_type, kwargs in FAMILIES.items():
        if len(sys.argv) > 1 and model_type not in sys.argv[1:]:
            continue
        config = CONFIG_MAPPING[model_type](**kwargs)
        for table in ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"):
            name = getattr(modeling_auto, table).get(model_type)
            if name:
                break
        cls = getattr(transformers, name)
        torch.manual_seed(0)
        model = cls._from_config(config, dtype=torch.bfloat16)
        out = HERE / model_type
        model.save_pretrained(out)
        print(model_type, name, sum(p.stat().st_size for p in out.iterdir()), "bytes")


if __name__ == "__main__":
    main()

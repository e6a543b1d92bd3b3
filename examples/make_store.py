"""Write examples/store/: a small checkpoint store showing what pyaudit catches.

Every file is real and small: tiny models of real families (shapes from the real
configs in tests/data/models, shrunk), tensors written by the `safetensors` library.

    python examples/make_store.py            # rewrites examples/store/

The store:
  output/v0-20250530-100000/checkpoint-200-merged/  healthy: SFT LoRA merged into Qwen2.5-VL
  output/v1-20250601-090000/checkpoint-50/          the seed story: GRPO meant as full
                                                    training saved only LoRA adapters
  zero3-run/checkpoint-100/                         ZeRO-3 weights saved without gathering
  copied/qwen3-4b-tiny/                             a shard truncated on copy
  vision-frozen/checkpoint-300/                     the frozen vision tower dropped on save
  fp32-export/                                      fp32 saved where bf16 was meant
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from pyaudit.testing.stores import (
    adapter_config,
    lora_tensors,
    manifest_tensors,
    swift_args,
    tiny_config,
    trainer_state,
    write_adapter,
    write_checkpoint,
    write_json,
)

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent / "tests" / "data" / "models"  # real configs, with provenance

# Qwen2.5-VL-7B-Instruct's config.json, shrunk (the structure is what matters).
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
         "num_key_value_heads": 1, "vocab_size": 128, "num_hidden_layers": 2}  # fmt: skip
VISION_SMALL = {"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                "out_hidden_size": 32, "patch_size": 2, "fullatt_block_indexes": [1]}  # fmt: skip


def load(name: str) -> dict:
    with open(MODELS / name / "config.json") as f:
        return json.load(f)


def tiny_qwen25_vl() -> dict:
    config = tiny_config(load("Qwen2.5-VL-7B-Instruct_qwen2_5_vl"), **SMALL)
    config["vision_config"].update(VISION_SMALL)
    return config


def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    vl = tiny_qwen25_vl()
    vl_tensors = manifest_tensors(vl)

    # 1. Healthy: an ms-swift `-merged` export of an SFT LoRA run (its args.json says lora).
    sft = out / "output" / "v0-20250530-100000" / "checkpoint-200-merged"
    write_checkpoint(sft, vl, vl_tensors, shards=2, sparse=False)
    write_json(sft / "args.json", swift_args("Qwen/Qwen2.5-VL-7B-Instruct", "lora"))

    # 2. The seed story: GRPO meant as full training; load_args re-read the SFT run's
    #    args.json, LoRA stayed on, and every "full" checkpoint is an adapter.
    grpo_run = out / "output" / "v1-20250601-090000"
    model_ref = "output/v0-20250530-100000/checkpoint-200-merged"
    for step in (50, 100):
        ckpt = grpo_run / f"checkpoint-{step}"
        lora = lora_tensors(
            vl_tensors,
            r=8,
            rename=lambda m: m.replace("model.layers.", "model.language_model.layers."),
        )
        write_adapter(ckpt, lora, adapter_config(model_ref, r=8), sparse=False)
        write_json(
            ckpt / "args.json", swift_args(model_ref, "full", rlhf_type="grpo", load_args=True)
        )
        write_json(ckpt / "trainer_state.json", trainer_state(step))

    # 3. DeepSpeed ZeRO-3 without gathering: every weight saved with zero elements.
    qwen3 = tiny_config(load("Qwen3-4B_qwen3"), **SMALL)
    q3 = manifest_tensors(qwen3)
    zero = {n: (d, (0,)) for n, (d, s) in q3.items()}
    write_checkpoint(out / "zero3-run" / "checkpoint-100", qwen3, zero, sparse=False)

    # 4. A shard truncated on copy.
    copied = out / "copied" / "qwen3-4b-tiny"
    paths = write_checkpoint(copied, qwen3, q3, shards=2, sparse=False)
    data = paths[-1].read_bytes()
    paths[-1].write_bytes(data[: len(data) - 1000])

    # 5. Vision tower frozen and dropped by a trainer that saved trainable parameters only.
    frozen = out / "vision-frozen" / "checkpoint-300"
    write_checkpoint(
        frozen,
        vl,
        {n: t for n, t in vl_tensors.items() if not n.startswith("visual.")},
        sparse=False,
    )

    # 6. fp32 saved where the config says bfloat16.
    fp32 = out / "fp32-export"
    write_checkpoint(fp32, qwen3, {n: ("F32", s) for n, (d, s) in q3.items()}, sparse=False)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "store"
    main(target)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"wrote {target} ({size / 1000:.0f} KB)")

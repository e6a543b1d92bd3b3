"""transformers Trainer + PEFT, TRL, accelerate FSDP2 and DeepSpeed on CPU: one case per call.

    python tests/frameworks/run_hf.py CASE WORKDIR
    python -m torch.distributed.run --nproc_per_node 2 \\
        tests/frameworks/run_hf.py fsdp2-sharded WORKDIR

WORKDIR holds tiny/ (make_tiny.py); the case writes WORKDIR/out/CASE/. Cases: see CASES.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


def rows(work: Path) -> list[dict[str, Any]]:
    with open(work / "tiny" / "data" / "sft.jsonl") as f:
        return [json.loads(line) for line in f]


def lm_dataset(work: Path, tok: Any) -> Any:
    from datasets import Dataset

    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows(work)]
    enc = tok(texts, truncation=True, max_length=64, padding="max_length")
    enc["labels"] = [list(ids) for ids in enc["input_ids"]]
    return Dataset.from_dict(dict(enc))


def args(out: Path, **extra: Any) -> Any:
    from transformers import TrainingArguments

    base: dict[str, Any] = dict(
        output_dir=str(out), max_steps=2, save_steps=2, per_device_train_batch_size=2,
        logging_steps=1, report_to="none", use_cpu=True, save_strategy="steps",
        dataloader_num_workers=0, learning_rate=1e-3,
    )  # fmt: skip
    base.update(extra)
    return TrainingArguments(**base)


def trainer_run(work: Path, case: str, model_name: str = "llama",
                peft: dict[str, Any] | None = None, merge: bool = False,
                **extra: Any) -> None:  # fmt: skip
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

    tiny = work / "tiny" / model_name
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    if peft is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **peft))
    out = work / "out" / case
    trainer = Trainer(model=model, args=args(out, **extra), train_dataset=lm_dataset(work, tok))
    trainer.train()
    trainer.save_model()  # the final save into output_dir
    tok.save_pretrained(out)
    if merge:
        merged = model.merge_and_unload()  # type: ignore[operator]
        merged.save_pretrained(work / "out" / f"{case}-merged")
        tok.save_pretrained(work / "out" / f"{case}-merged")


def trl_sft(work: Path, case: str, lora: bool) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tiny = work / "tiny" / "qwen2"
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    out = work / "out" / case
    cfg = SFTConfig(output_dir=str(out), max_steps=2, save_steps=2, per_device_train_batch_size=2,
                    logging_steps=1, report_to="none", use_cpu=True, max_length=64)  # fmt: skip
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear")
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows(work)),
                         processing_class=tok, peft_config=peft_config)  # fmt: skip
    trainer.train()
    trainer.save_model()


def trl_grpo(work: Path, case: str, lora: bool) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tiny = work / "tiny" / "qwen2"
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    out = work / "out" / case
    prompts = [{"prompt": r["messages"][:1]} for r in rows(work)]

    def reward_len(completions: list[Any], **kwargs: Any) -> list[float]:
        return [float(len(str(c))) / 10 for c in completions]

    cfg = GRPOConfig(output_dir=str(out), max_steps=2, save_steps=2, per_device_train_batch_size=2,
                     num_generations=2, max_completion_length=8, logging_steps=1, report_to="none",
                     use_cpu=True)  # fmt: skip
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear")
    trainer = GRPOTrainer(model=model, reward_funcs=reward_len, args=cfg,
                          train_dataset=Dataset.from_list(prompts), processing_class=tok,
                          peft_config=peft_config)  # fmt: skip
    trainer.train()
    trainer.save_model()


def fsdp2_accelerate(work: Path, case: str, state_dict_type: str) -> None:
    """FSDP2 on CPU, saved by accelerate's own save_fsdp_model / save_fsdp_optimizer.

    accelerate 1.16 (and so Trainer) picks DDP on a CPU-only machine whatever the FSDP
    plugin says (state.py: FSDP only among the accelerator backends), so the model is sharded
    with torch's fully_shard (what accelerate's FSDP2 path calls) and trained by hand; the
    checkpoint is written by accelerate's functions, as Trainer's _save_checkpoint does:
    checkpoint-2/{config.json, pytorch_model_fsdp_0/, optimizer_0/} and, for the final save,
    the output folder with config.json and the model shards only."""
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import save_fsdp_model, save_fsdp_optimizer
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    accelerator = Accelerator(cpu=True)
    tiny = work / "tiny" / "llama"
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = lm_dataset(work, tok)
    for step in range(2):
        batch = {
            k: torch.tensor(data[step * 2 : step * 2 + 2][k])
            for k in ("input_ids", "attention_mask", "labels")
        }
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type=state_dict_type)
    out = work / "out" / case
    ckpt = out / "checkpoint-2"
    ckpt.mkdir(parents=True, exist_ok=True)
    save_fsdp_model(plugin, accelerator, model, str(ckpt))
    save_fsdp_optimizer(plugin, accelerator, opt, model, str(ckpt))
    save_fsdp_model(plugin, accelerator, model, str(out))  # the final save
    if dist.get_rank() == 0:
        model.config.save_pretrained(ckpt)
        model.config.save_pretrained(out)
        tok.save_pretrained(out)
    dist.barrier()


def fsdp2(work: Path, case: str, state_dict_type: str) -> None:
    cfg = {"fsdp_version": 2, "state_dict_type": state_dict_type, "reshard_after_forward": True,
           "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
           "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
           "cpu_ram_efficient_loading": False}  # fmt: skip
    trainer_run(work, case, fsdp="full_shard", fsdp_config=cfg, ddp_backend="gloo")


def _no_shm_op() -> None:
    """DeepSpeed's CPU accelerator JIT-builds a shared-memory all-reduce op on first use; on a
    shared machine that build was seen killed mid-way and the run then waited for ever. One
    process needs no all-reduce: skip the op (the checkpoint format does not depend on it)."""
    import importlib

    # (not `import deepspeed.comm.torch as m`: deepspeed.comm's attribute `torch` is torch)
    ds_torch = importlib.import_module("deepspeed.comm.torch")
    ds_torch.build_shm_op = lambda: None


def deepspeed(work: Path, case: str, stage: int, gather: bool | None = None) -> None:
    _no_shm_op()
    zero: dict[str, Any] = {"stage": stage}
    if stage == 3 and gather is not None:
        zero["stage3_gather_16bit_weights_on_model_save"] = gather
    ds = {"zero_optimization": zero, "train_micro_batch_size_per_gpu": "auto",
          "gradient_accumulation_steps": "auto", "zero_allow_untested_optimizer": True,
          "bf16": {"enabled": False}, "fp16": {"enabled": False}}  # fmt: skip
    trainer_run(work, case, deepspeed=ds, ddp_backend="gloo", save_only_model=False)


def zero3_save_pretrained(work: Path, case: str) -> None:
    """The broken save: model.save_pretrained() of a ZeRO-3 engine's module, not gathered."""
    trainer_run_raw = _zero3_raw(work, case)
    del trainer_run_raw


def _zero3_raw(work: Path, case: str) -> None:
    _no_shm_op()
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

    tiny = work / "tiny" / "llama"
    tok = AutoTokenizer.from_pretrained(tiny)
    out = work / "out" / case
    ds = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto",
          "gradient_accumulation_steps": "auto", "zero_allow_untested_optimizer": True}  # fmt: skip
    targs = args(out / "run", deepspeed=ds, ddp_backend="gloo", save_strategy="no")
    model = AutoModelForCausalLM.from_pretrained(tiny)
    trainer = Trainer(model=model, args=targs, train_dataset=lm_dataset(work, tok))
    trainer.train()
    # What a user script does after training: save the module it holds, partitioned.
    trainer.model.save_pretrained(out / "saved")
    tok.save_pretrained(out / "saved")


CASES = {
    "trainer-full": lambda w, c: trainer_run(w, c),
    "peft-lora": lambda w, c: trainer_run(
        w, c, peft={"r": 4, "target_modules": ["q_proj", "v_proj"]}, merge=True
    ),
    "peft-dora": lambda w, c: trainer_run(
        w, c, peft={"r": 4, "target_modules": "all-linear", "use_dora": True}
    ),
    "peft-modules-to-save": lambda w, c: trainer_run(
        w, c, peft={"r": 4, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]}
    ),
    "trl-sft-full": lambda w, c: trl_sft(w, c, lora=False),
    "trl-sft-lora": lambda w, c: trl_sft(w, c, lora=True),
    "trl-grpo-full": lambda w, c: trl_grpo(w, c, lora=False),
    "trl-grpo-lora": lambda w, c: trl_grpo(w, c, lora=True),
    "fsdp2-sharded": lambda w, c: fsdp2(w, c, "SHARDED_STATE_DICT"),
    "fsdp2-full": lambda w, c: fsdp2(w, c, "FULL_STATE_DICT"),
    "fsdp2-accelerate-sharded": lambda w, c: fsdp2_accelerate(w, c, "SHARDED_STATE_DICT"),
    "fsdp2-accelerate-full": lambda w, c: fsdp2_accelerate(w, c, "FULL_STATE_DICT"),
    "zero2": lambda w, c: deepspeed(w, c, 2),
    "zero3-gather-false": lambda w, c: deepspeed(w, c, 3, gather=False),
    "zero3-gather-true": lambda w, c: deepspeed(w, c, 3, gather=True),
    "zero3-save-pretrained": zero3_save_pretrained,
}


def main() -> None:
    case, work = sys.argv[1], Path(sys.argv[2]).resolve()
    CASES[case](work, case)
    print("done", case)


if __name__ == "__main__":
    main()

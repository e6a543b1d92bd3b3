"""Tiny local models, tokenizer and data for the framework runs (no hub, no download).

    python tests/frameworks/make_tiny.py OUT_DIR [--transformers-only]

Writes, with whatever transformers the running venv has (so the configs are the ones
that framework version reads):

    OUT_DIR/tokenizer/          a byte-level BPE trained offline with `tokenizers`, carrying
                                the Qwen special tokens (<|im_start|>, <|image_pad|>, ...)
    OUT_DIR/qwen2_5_vl/         Qwen2.5-VL, 2 text + 2 vision layers, random weights
    OUT_DIR/qwen2/              Qwen2, 2 layers, random weights
    OUT_DIR/llama/              Llama, 2 layers, random weights
    OUT_DIR/data/sft.jsonl      16 chat rows (messages)
    OUT_DIR/data/grpo.jsonl     16 prompt-only rows with a `solution` column

Weights are random (torch.manual_seed(0)): the audits read headers, never values.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
)

WORDS = [
    "the",
    "a",
    "model",
    "checkpoint",
    "weights",
    "adapter",
    "lora",
    "full",
    "training",
    "run",
    "save",
    "load",
    "audit",
    "tensor",
    "shard",
    "config",
    "index",
    "layer",
    "head",
    "vision",
    "text",
    "token",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "what",
    "is",
    "how",
    "many",
    "answer",
    "yes",
    "no",
    "plus",
    "minus",
    "equals",
    "color",
    "sky",
    "blue",
    "green",
    "red",
    "cat",
    "dog",
]


def corpus() -> list[str]:
    lines = []
    for i in range(400):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12)]
        lines.append(" ".join(words) + f" {i} {i * 3}.")
    return lines


def make_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=QWEN_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def _text(hidden: int = 64) -> dict[str, object]:
    return dict(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-6,
    )  # fmt: skip


def ids(tok_dir: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    return {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS} | {"_vocab": len(tok)}


def save(model: object, tok_dir: Path, out: Path, processor: bool = False) -> None:
    import shutil

    model.save_pretrained(out)  # type: ignore[attr-defined]
    for f in tok_dir.iterdir():
        shutil.copy(f, out / f.name)
    if processor:
        from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLImageProcessor

        kwargs = {}
        try:
            from transformers import Qwen2VLVideoProcessor

            kwargs["video_processor"] = Qwen2VLVideoProcessor()
        except ImportError:
            pass
        proc = Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
            tokenizer=AutoTokenizer.from_pretrained(tok_dir),
            chat_template=CHAT_TEMPLATE,
            **kwargs,
        )
        proc.save_pretrained(out)


def make_models(root: Path, which: list[str]) -> None:
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )  # fmt: skip

    tok_dir = root / "tokenizer"
    t = ids(tok_dir)
    vocab = (t["_vocab"] + 63) // 64 * 64
    common = dict(vocab_size=vocab, bos_token_id=t["<|endoftext|>"], eos_token_id=t["<|im_end|>"],
                  pad_token_id=t["<|endoftext|>"])  # fmt: skip
    torch.manual_seed(0)
    if "qwen2" in which:
        cfg = Qwen2Config(**_text(32), **common, tie_word_embeddings=False)
        save(Qwen2ForCausalLM(cfg), tok_dir, root / "qwen2")
    if "llama" in which:
        cfg = LlamaConfig(**_text(32), **common, tie_word_embeddings=False)
        save(LlamaForCausalLM(cfg), tok_dir, root / "llama")
    if "qwen2_5_vl" in which:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                      out_hidden_size=64, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1], in_chans=3)  # fmt: skip
        text = _text() | dict(rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
        cfg = Qwen2_5_VLConfig(
            text_config=text | common, vision_config=vision,
            image_token_id=t["<|image_pad|>"], video_token_id=t["<|video_pad|>"],
            vision_start_token_id=t["<|vision_start|>"], vision_end_token_id=t["<|vision_end|>"],
            tie_word_embeddings=False, **common,
        )  # fmt: skip
        save(Qwen2_5_VLForConditionalGeneration(cfg), tok_dir, root / "qwen2_5_vl", processor=True)


def make_data(root: Path) -> None:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "sft.jsonl", "w") as f:
        for i in range(16):
            row = {"messages": [
                {"role": "user", "content": f"what is {i} plus {i}"},
                {"role": "assistant", "content": f"the answer is {2 * i}."},
            ]}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    with open(data / "grpo.jsonl", "w") as f:
        for i in range(16):
            row = {
                "messages": [{"role": "user", "content": f"what is {i} plus {i}"}],
                "solution": str(2 * i),
            }
            f.write(json.dumps(row) + "\n")
    # TRL's prompt-only format
    with open(data / "prompts.jsonl", "w") as f:
        for i in range(16):
            f.write(
                json.dumps({"prompt": [{"role": "user", "content": f"what is {i} plus {i}"}]})
                + "\n"
            )
    # LLaMA-Factory: alpaca format + dataset_info.json
    with open(data / "alpaca.json", "w") as f:
        json.dump([{"instruction": f"what is {i} plus {i}", "input": "",
                    "output": f"the answer is {2 * i}."}
                   for i in range(16)], f)  # fmt: skip
    with open(data / "dataset_info.json", "w") as f:
        json.dump({"tiny": {"file_name": "alpaca.json"}}, f)


def main() -> None:
    root = Path(sys.argv[1])
    which = [a for a in sys.argv[2:] if not a.startswith("-")] or ["qwen2", "llama", "qwen2_5_vl"]
    root.mkdir(parents=True, exist_ok=True)
    make_tokenizer(root / "tokenizer")
    make_models(root, which)
    make_data(root)
    print("wrote", root)


if __name__ == "__main__":
    main()

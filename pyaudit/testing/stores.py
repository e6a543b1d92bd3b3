"""Checkpoints and training-output trees as real frameworks leave them.

Full checkpoints come from a real ``config.json`` through the manifest (so names,
shapes and dtypes are exactly a real model's), either full-size and sparse (data
left as a hole) or tiny and real (every byte written by the ``safetensors``
library). Adapters follow PEFT's naming; run folders follow ms-swift's.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pyaudit.manifest import build_manifest
from pyaudit.testing.sparse import TensorSpec, tensor_nbytes, write_sparse_checkpoint

Tensors = dict[str, TensorSpec]
NUMPY_DTYPES = {"F32": "float32", "F16": "float16", "F64": "float64", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                "BOOL": "bool"}  # fmt: skip


def manifest_tensors(config: Mapping[str, Any], layout: str | None = None) -> Tensors:
    """name -> (dtype, shape) of every tensor ``config``'s model saves, in ``layout``."""
    manifest = build_manifest(dict(config), layout)
    out: Tensors = {}
    for name, t in manifest.tensors.items():
        if t.shape is None:
            raise ValueError(f"{name}: shape unknown in the manifest")
        out[name] = (t.dtype, t.shape)
    return out


def tiny_config(config: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """A real config shrunk to a few KB of weights: same family, same names, small dims."""
    small = {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "head_dim": 16, "moe_intermediate_size": 32, "num_experts": 4, "num_local_experts": 4,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "max_window_layers": 2,
    }  # fmt: skip
    vision_small: dict[str, Any] = {
        "depth": 2, "hidden_size": 32, "embed_dim": 32, "intermediate_size": 64,
        "num_heads": 2, "out_hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "fullatt_block_indexes": [1],
    }  # fmt: skip
    out = copy.deepcopy(dict(config))
    for scope in (out, out.get("text_config")):
        if isinstance(scope, dict):
            for key, value in small.items():
                if key in scope:
                    scope[key] = value
            if "head_dim" in scope:
                scope["head_dim"] = 16
    vision = out.get("vision_config")
    if isinstance(vision, dict):
        for key, value in vision_small.items():
            if key in vision:
                vision[key] = value
        if "hidden_size" in vision and "out_hidden_size" not in vision:
            vision["hidden_size"] = 32
        if vision.get("model_type") == "qwen2_vl":
            # Qwen2-VL configs may state no vision sizes at all (olmOCR's): the family
            # defaults are full size (depth 32, embed_dim 1280). Its vision hidden_size is
            # the merger's output, i.e. the language model's width.
            for key in ("depth", "embed_dim", "num_heads"):
                vision.setdefault(key, vision_small[key])
            text_config = out.get("text_config")
            text = text_config if isinstance(text_config, dict) else out
            vision["hidden_size"] = text.get("hidden_size", small["hidden_size"])
    for scope in (out, out.get("text_config")):
        if not isinstance(scope, dict):
            continue
        if isinstance(scope.get("layer_types"), list):
            scope["layer_types"] = scope["layer_types"][: scope.get("num_hidden_layers", 2)]
        # Special token ids must stay inside the shrunk vocabulary (transformers rejects a
        # pad_token_id outside it when it builds the embedding).
        vocab = scope.get("vocab_size")
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            token = scope.get(key)
            if isinstance(vocab, int) and isinstance(token, int) and token >= vocab:
                scope[key] = vocab - 1
            elif isinstance(vocab, int) and isinstance(token, list):
                scope[key] = [min(t, vocab - 1) if isinstance(t, int) else t for t in token]
    out.update(overrides)
    return out


# safetensors dtype -> the writer's dtype name (torch/numpy spelling).
WRITER_DTYPES = {
    "BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}  # fmt: skip


def _write_real(path: Path, tensors: Mapping[str, TensorSpec], metadata: Mapping[str, str]) -> None:
    """Small real files: every byte written by the safetensors library's own writer.

    Values are small normal numbers (as float32 bit patterns cut to the dtype's width
    for BF16; cast for the others), so --verify-data sees ordinary weights.
    """
    import numpy as np
    from safetensors import TensorSpec as WriterSpec
    from safetensors import serialize_file

    rng = np.random.default_rng(sum(path.name.encode()))
    keep = []
    specs = {}
    for name, (dtype, shape) in tensors.items():
        n = math.prod(shape)
        values = (rng.standard_normal(n, dtype=np.float32) * 0.02).astype(np.float32)
        data: np.ndarray[Any, Any]
        if dtype == "BF16":
            data = (values.view(np.uint32) >> 16).astype(np.uint16)
        elif dtype in ("F8_E4M3", "F8_E5M2"):
            data = rng.integers(0, 0x70, n, dtype=np.uint8)  # finite bit patterns
        elif dtype == "BOOL":
            data = values > 0
        else:
            data = values.astype(NUMPY_DTYPES[dtype])
        data = np.ascontiguousarray(data)
        keep.append(data)
        specs[name] = WriterSpec(
            dtype=WRITER_DTYPES[dtype],
            shape=tuple(shape),
            data_ptr=data.ctypes.data,
            data_len=data.nbytes,
        )
    serialize_file(specs, str(path), metadata=dict(metadata))


def write_checkpoint(
    directory: str | os.PathLike[str],
    config: Mapping[str, Any] | None,
    tensors: Mapping[str, TensorSpec],
    shards: int = 1,
    sparse: bool = True,
    weight_map: Mapping[str, str] | None = None,
    write_config: bool = True,
) -> list[Path]:
    """A checkpoint directory: shards (+ index when sharded) and config.json."""
    out = Path(directory)
    if sparse:
        return write_sparse_checkpoint(
            out,
            tensors,
            shards=shards,
            config=config if write_config else None,
            weight_map=weight_map,
        )
    out.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    if weight_map is None:
        if shards == 1:
            weight_map = {n: "model.safetensors" for n in names}
        else:
            per = -(-len(names) // shards)
            weight_map = {
                n: f"model-{i // per + 1:05d}-of-{shards:05d}.safetensors"
                for i, n in enumerate(names)
            }
    by_file: dict[str, dict[str, TensorSpec]] = {}
    for n, f in weight_map.items():
        by_file.setdefault(f, {})[n] = tensors[n]
    paths = []
    for file, members in sorted(by_file.items()):
        _write_real(out / file, members, {"format": "pt"})
        paths.append(out / file)
    if len(by_file) > 1:
        total = sum(tensor_nbytes(*tensors[n]) for n in weight_map)
        doc = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(doc, indent=2) + "\n")
    if config is not None and write_config:
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return paths


LLM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_tensors(
    base: Mapping[str, TensorSpec],
    r: int,
    targets: Iterable[str] = LLM_LINEAR,
    prefix: str = "base_model.model.",
    rename: Callable[[str], str] | None = None,
    dtype: str | None = None,
) -> Tensors:
    """PEFT LoRA tensors for every 2-D ``*.{target}.weight`` of ``base``.

    ``rename`` maps a base name to the in-memory module name the trainer saw
    (e.g. Qwen2.5-VL under transformers >= 4.52 nests the LLM under
    ``model.language_model``).
    """
    wanted = tuple(targets)
    out: Tensors = {}
    for name, (base_dtype, shape) in base.items():
        if not name.endswith(".weight") or len(shape) != 2:
            continue
        module = name[: -len(".weight")]
        if module.rsplit(".", 1)[-1] not in wanted:
            continue
        if module.startswith(("visual.", "model.visual.")):
            continue  # LLM-only LoRA, as ms-swift's default with a frozen ViT
        module = rename(module) if rename else module
        out_f, in_f = shape
        d = dtype or base_dtype
        out[f"{prefix}{module}.lora_A.weight"] = (d, (r, in_f))
        out[f"{prefix}{module}.lora_B.weight"] = (d, (out_f, r))
    return out


def adapter_config(
    base_model: str, r: int, targets: Iterable[str] = LLM_LINEAR, alpha: int = 32
) -> dict[str, Any]:
    return {
        "base_model_name_or_path": base_model,
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.05,
        "target_modules": sorted(targets),
        "modules_to_save": None,
        "bias": "none",
        "inference_mode": True,
    }


def write_adapter(
    directory: str | os.PathLike[str],
    tensors: Mapping[str, TensorSpec],
    config: Mapping[str, Any] | None,
    sparse: bool = True,
) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "adapter_model.safetensors"
    if sparse:
        from pyaudit.testing.sparse import write_sparse_safetensors

        write_sparse_safetensors(path, tensors, {"format": "pt"})
    elif tensors:
        _write_real(path, tensors, {"format": "pt"})
    else:
        from safetensors.numpy import save_file

        save_file({}, str(path), metadata={"format": "pt"})
    if config is not None:
        (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


def swift_args(model: str, train_type: str, **extra: Any) -> dict[str, Any]:
    """An ms-swift args.json: note LoRA defaults are present even for train_type=full."""
    args: dict[str, Any] = {
        "model": model,
        "model_type": extra.pop("model_type", "qwen2_5_vl"),
        "train_type": train_type,
        "torch_dtype": "bfloat16",
        "lora_rank": 8,
        "lora_alpha": 32,
        "target_modules": ["all-linear"],
        "load_args": extra.pop("load_args", False),
        "freeze_vit": True,
        "output_dir": extra.pop("output_dir", "output"),
        "add_version": True,
    }
    args.update(extra)
    return args


def write_json(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def trainer_state(step: int) -> dict[str, Any]:
    return {"global_step": step, "epoch": 1.0, "log_history": [{"step": step, "loss": 1.23}]}

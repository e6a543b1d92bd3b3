"""Derive family specs from transformers and write them as data (a developer tool).

    python -m pyaudit.manifest.generate                 # every family it can derive
    python -m pyaudit.manifest.generate llama qwen3_moe # some
    python -m pyaudit.manifest.generate --check         # exit 1 if the committed data drifted

Needs torch and transformers (pyaudit itself never imports them). For each model type the
installed transformers maps to a causal-LM, image-text, seq2seq, speech-seq2seq or
masked-LM class, the model is built on the meta device (no weight is allocated) at its
class-default config and at one point per structural config field (each field varied on
its own), and the real ``save_pretrained`` is run with the shard writer replaced by a
recorder (as :mod:`pyaudit._oracle_worker` does). From those saves it derives:

* which numeric name components repeat, and with which config field (``num_hidden_layers``,
  expert counts, vision depth...): the count is solved as an expression over the fields;
* each tensor's shape, each dimension solved as the smallest expression over the config
  fields that changed it (``num_attention_heads * head_dim``) that holds at every point;
* when a tensor exists (``not tie_word_embeddings``, ``layer_types[i] == "full_attention"``,
  ``i >= first_k_dense_replace``, ``i not in mlp_only_layers``...), from a small library of
  conditions, and which tensor a tied one is tied to;
* the dtype transformers writes (``_keep_in_fp32_modules`` / ``_strict``);
* config fields transformers computes when a config leaves them out (``head_dim``): a
  ``let`` fallback, so an older config.json without the field gets the same shapes.

Every derived spec is then checked against a fresh save at the default config and at every
point before it is written: a family whose derivation does not reproduce transformers
exactly is left out (and reported), never written approximately.

The output, one JSON file per family under ``pyaudit/manifest/generated/``, records the
transformers and torch versions; :mod:`pyaudit.manifest.derived` reads it at run time.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib
import itertools
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyaudit import _oracle_worker as worker

__all__ = ["GENERATED_DIR", "derive_family", "main"]

GENERATED_DIR = Path(__file__).with_name("generated")
SCHEMA = 1

#: Auto classes tried in order: the first that maps a config class gives the family's
#: primary architecture (what its checkpoints' ``architectures[0]`` names).
AUTO_ORDER = (
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES",  # encoders also have a causal-LM head; rarely saved
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
)

#: Sub-configs whose fields are varied too (and read as ``text_config.hidden_size``).
SUBCONFIGS = (
    "text_config",
    "vision_config",
    "audio_config",
    "encoder_config",
    "decoder_config",
    "speech_config",
    "projector_config",
    "perceiver_config",
    "qformer_config",
    "vq_config",
)

#: Config fields that never change which tensors exist or their shapes.
_SKIP = re.compile(
    r"(dropout|_eps$|epsilon|^eps$|initializer|init_std|_range$|theta|token_id|_id$|_ids$|"
    r"scale|scaling|factor|temperature|use_cache|^output_|^return_|torchscript|chunk_size|"
    r"^rope|rope_theta|rope_scaling|sliding_window$|window_size|threshold|capacity|aux_loss|jitter|noise|coef|loss|"
    r"softcap|freq(?!uency)|norm_topk|per_tok|top_k$|topk|^n_group$|^transformers_version$|"
    r"^is_encoder_decoder$|^tie_encoder_decoder$|label|problem_type|pruned|bad_words|"
    r"^dtype$|torch_dtype|_act$|activation|^use_return_dict$|image_token|video_token|"
    r"audio_token|boi_|eoi_|(?<!_start)(?<!_end)_index$|seq_length$|^pad_|^bos_|^eos_|^sep_|^cls_|^mask_|"
    r"^use_bfloat16$|tf_legacy|gradient_checkpointing|_attn_implementation|layer_norm_eps|"
    r"router_z|jitter|routing|max_length|min_length|num_beams|^do_sample$|top_p|"
    r"repetition_penalty|length_penalty|no_repeat|early_stopping|diversity|forced_|"
    r"remove_invalid|exponential_decay|suppress|begin_suppress|max_window_layers|"
    r"max_source_positions_unused|_bias_init|decoder_start|vision_feature_layer|"
    r"stride$|_stride$|attention_chunk|pretraining_tp|prompt_lookup|logits_to_keep)",
)

_ST = worker._ST_NAMES


# -- capturing what save_pretrained writes -------------------------------------------------


@dataclass
class Saved:
    """One save: on-disk name -> (shape, dtype) in write order, ties, linear modules."""

    tensors: dict[str, tuple[tuple[int, ...], str]]
    tied: dict[str, str]
    linear: dict[str, bool]  # on-disk module name -> has a bias (nn.Linear modules)
    env: dict[str, Any]  # the config's to_dict()


class Env:
    """torch + transformers, imported once."""

    def __init__(self) -> None:
        self.torch: Any = importlib.import_module("torch")
        self.transformers: Any = importlib.import_module("transformers")
        self.mu: Any = importlib.import_module("transformers.modeling_utils")
        self.auto: Any = importlib.import_module("transformers.models.auto.modeling_auto")
        self.cauto: Any = importlib.import_module("transformers.models.auto.configuration_auto")
        try:
            self.init: Any = importlib.import_module("transformers.initialization")
        except ImportError:  # pragma: no cover - older transformers
            self.init = None
        #: saves write the model's own module names (no conversion reverted), as a plain
        #: ``state_dict()`` holds them: for deriving the module-tree layout's own entries
        self.module_names = False
        self.transformers.logging.set_verbosity_error()
        self.transformers.logging.disable_progress_bar()
        self.torch.set_num_threads(1)

    @property
    def versions(self) -> dict[str, str]:
        return {
            "transformers": str(self.transformers.__version__),
            "torch": str(self.torch.__version__).split("+")[0],
        }

    def model_class(self, model_type: str) -> tuple[type[Any], str] | None:
        found = self.model_classes(model_type)
        return found[0] if found else None

    def model_classes(self, model_type: str) -> list[tuple[type[Any], str]]:
        """The classes of :data:`AUTO_ORDER`'s tables for ``model_type``, in order."""
        out: list[tuple[type[Any], str]] = []
        for table in AUTO_ORDER:
            names = getattr(self.auto, table, {})
            name = names.get(model_type)
            if isinstance(name, (list, tuple)):
                name = name[0] if name else None
            if isinstance(name, str):
                cls = getattr(self.transformers, name, None)
                if isinstance(cls, type) and all(cls is not c for c, _ in out):
                    out.append((cls, table))
        return out

    def buildable_class(self, model_type: str) -> type[Any] | None:
        """The first of :meth:`model_classes` that takes this model type's config: one
        written for a sub-config (llama4's causal-LM class takes the text config only) is
        passed over when it cannot be built from the class-default config."""
        config_class = self.cauto.CONFIG_MAPPING[model_type]
        found = self.model_classes(model_type)
        for n, (cls, _) in enumerate(found):
            own = getattr(cls, "config_class", None)
            if n == len(found) - 1 or own is None or issubclass(config_class, own):
                return cls
            try:
                self.save(cls, self.config(model_type, {}))
            except Exception:
                continue
            return cls
        return None

    def config(self, model_type: str, kwargs: dict[str, Any]) -> Any:
        return self.cauto.CONFIG_MAPPING[model_type](**kwargs)

    def build(self, cls: type[Any], cfg: Any, dtype: str = "bfloat16") -> Any:
        """The model on the meta device, dtypes as ``from_pretrained`` leaves them."""
        torch = self.torch
        tdtype = getattr(torch, dtype)
        with contextlib.ExitStack() as stack, warnings_off():
            stack.enter_context(torch.device("meta"))
            if self.init is not None and hasattr(self.init, "meta_device_safe_creation_ops"):
                stack.enter_context(self.init.meta_device_safe_creation_ops())
            model = cls._from_config(cfg, dtype=tdtype)
        worker._upcast_like_from_pretrained(model, tdtype)
        return model

    def save(
        self,
        cls: type[Any],
        cfg: Any,
        dtype: str = "bfloat16",
        loaded_from: Iterable[str] | None = None,
    ) -> Saved:
        """What ``save_pretrained`` writes for a fresh model of ``cfg``; with ``loaded_from``,
        for one ``from_pretrained`` loaded from a checkpoint holding those names (transformers
        then reverts the conversions that renamed them: the round trip keeps their layout)."""
        mu = self.mu
        model = self.build(cls, cfg, dtype)
        if loaded_from is not None:
            worker._as_if_loaded_from(model, loaded_from)
        elif self.module_names:
            model._weight_conversions = []  # revert nothing: the model's own module names
        captured: dict[str, tuple[tuple[int, ...], str]] = {}

        def capture(tensors: dict[str, Any], filename: str, metadata: Any = None) -> None:
            for name, t in tensors.items():
                st = _ST.get(str(t.dtype))
                if st is None:
                    raise ValueError(f"{name}: dtype {t.dtype} has no safetensors name")
                captured[name] = (tuple(int(d) for d in t.shape), st)

        dropped: dict[str, str] = {}
        real_untie = mu.remove_tied_weights_from_state_dict

        def untie(state_dict: dict[str, Any], model_to_save: Any) -> dict[str, Any]:
            before = {n: model_to_save.get_parameter_or_buffer(n) for n in state_dict}
            remaining: dict[str, Any] = real_untie(state_dict, model_to_save)
            for name in before.keys() - remaining.keys():
                twin = next((k for k in remaining if before.get(k) is before[name]), None)
                if twin is not None:
                    dropped[name] = twin
            return remaining

        real_save = mu.safe_save_file
        mu.safe_save_file = capture
        mu.remove_tied_weights_from_state_dict = untie
        try:
            with tempfile.TemporaryDirectory(prefix="pyaudit-gen-") as scratch, warnings_off():
                model.save_pretrained(scratch)
        finally:
            mu.safe_save_file = real_save
            mu.remove_tied_weights_from_state_dict = real_untie
        tied = worker._on_disk_tied(mu, model, dropped, set(captured))
        linear: dict[str, bool] = {}
        nn = self.torch.nn
        for mname, module in model.named_modules():
            if isinstance(module, nn.Linear) and mname + ".weight" in captured:
                linear[mname] = mname + ".bias" in captured
        return Saved(captured, tied, linear, cfg.to_dict())


@contextlib.contextmanager
def warnings_off() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# -- config points ------------------------------------------------------------------------


Path_ = tuple[str, ...]  # a field: ("hidden_size",) or ("text_config", "hidden_size")


def fname(path: Path_) -> str:
    return ".".join(path)


def get(env: dict[str, Any], path: Path_) -> Any:
    cur: Any = env
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def fields_of(env: dict[str, Any]) -> list[Path_]:
    """The structural fields of a config dict worth varying (ints, floats, bools, lists)."""
    out: list[Path_] = []

    def walk(d: dict[str, Any], base: Path_) -> None:
        for k, v in d.items():
            if k.startswith("_") or _SKIP.search(k):
                continue
            if isinstance(v, dict):
                if not base and k in SUBCONFIGS:
                    walk(v, (k,))
                continue
            if (
                isinstance(v, (bool, int, float))
                or (isinstance(v, list) and v and all(isinstance(x, (int, str, bool)) for x in v))
                or (isinstance(v, list) and not v)
            ):
                out.append((*base, k))

    walk(env, ())
    return out


def variations(value: Any, env: dict[str, Any]) -> list[Any]:
    """Other values to try for a field, best first."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        if value == 0:
            return [1, 2]
        if value == 1:
            return [2, 3]
        if value >= 6 and value % 2 == 0:
            return [value // 2, value * 2, value + 1]
        return [value * 2, value + 1, max(1, value - 1)]
    if isinstance(value, float):
        return [value * 2, value + 1.0]
    if isinstance(value, list):
        if not value:
            return [[1], [0]]
        if all(isinstance(x, bool) for x in value):
            return [[not x for x in value]]
        if all(isinstance(x, int) for x in value):
            # last: every item doubled, for a per-layer list whose length is fixed by the
            # layer count (gemma3n's intermediate_size, one per layer)
            return [[], [value[0] + 1] if len(value) == 1 else value[1:], [x * 2 for x in value]]
        distinct = sorted(set(value), key=str)
        if len(distinct) > 1:
            return [list(reversed(value)), value[1:] + value[:1]]
        return []
    return []


def kwargs_for(base_cfg: Any, path: Path_, value: Any) -> dict[str, Any]:
    if len(path) == 1:
        return {path[0]: value}
    sub = getattr(base_cfg, path[0], None)
    if sub is None or not hasattr(sub, "to_diff_dict"):
        raise ValueError(f"no sub-config {path[0]}")
    d = dict(sub.to_diff_dict())
    d.pop("transformers_version", None)
    # lists the sub-config class fills in itself (None by default: llama4's moe_layers,
    # one item per layer) are left for it to fill again, as at the top level: passed back
    # as they were, they would no longer fit another layer count
    for k in _self_filled_lists(type(sub)):
        if k != path[1] and isinstance(d.get(k), list):
            d.pop(k)
    d[path[1]] = value
    return {path[0]: d}


def _self_filled_lists(config_class: type[Any]) -> set[str]:
    import dataclasses

    if not dataclasses.is_dataclass(config_class):
        return set()
    return {f.name for f in dataclasses.fields(config_class) if f.default is None}


@dataclass
class Point:
    label: str  # "base" or the varied field
    kwargs: dict[str, Any]
    saved: Saved
    varied: Path_ | None = None


#: Count fields shrunk for the points the derivation runs on (names stay few); the class
#: default is checked separately, at full size.
_COUNT = re.compile(
    r"(layers$|^n_layer$|depth$|experts$|^n_routed_experts$|^num_local_experts$|^num_blocks$)"
)

#: Int fields a width is rounded up to a multiple of (LFM2's ``block_multiple_of``, xLSTM's
#: ``ffn_round_up_to_multiple_of``): varied first to a value that is no divisor of a width.
_MULTIPLE = re.compile(r"multiple_of")

#: Fields a modeling file reads when a config has them, though its config class does not
#: declare them (``getattr(config, "head_dim", None) or hidden_size // num_attention_heads``):
#: probed, and their fallback used where a config lacks them.
PROBES = {"head_dim": "hidden_size // num_attention_heads"}


def _try(env: Env, model_type: str, cls: type[Any], kwargs: dict[str, Any]) -> Saved | None:
    try:
        return env.save(cls, env.config(model_type, kwargs))
    except Exception:
        return None


def _merge_kwargs(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in more.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


#: ``getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads``:
#: a modeling file computing a config field itself where the config leaves it null
_NULL_FALLBACK = re.compile(
    r"""getattr\(\s*(?:self\.)?config\s*,\s*["'](\w+)["']\s*,\s*None\s*\)\s*or\s*([^\n#]+)"""
)


def _fallback_text(rest: str) -> str | None:
    """The expression after ``getattr(config, "f", None) or``, over config fields: cut at
    the first unbalanced closing bracket or top-level comma, ``config.x`` read as ``x``;
    None when anything but config fields is read."""
    from .expr import ExprError, compile_expr

    depth = 0
    end = len(rest)
    for n, ch in enumerate(rest):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                end = n
                break
            depth -= 1
        elif ch == "," and depth == 0:
            end = n
            break
    text = re.sub(r"\b(?:self\.)?config\.(\w+)", r"\1", rest[:end]).strip()
    if not text or "." in text or "self" in text:
        return None
    try:
        compile_expr(text)
    except ExprError:
        return None
    return text


def null_fallbacks(cls: type[Any]) -> dict[str, tuple[str, str]]:
    """Config field -> (expression, module) for each field the modeling module of ``cls``
    computes itself where a config leaves it null (one expression wherever it does so; a
    field computed two ways is left out)."""
    import inspect

    module = sys.modules.get(cls.__module__)
    try:
        source = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        source = ""
    found: dict[str, set[str]] = {}
    for field, rest in _NULL_FALLBACK.findall(source):
        text = _fallback_text(rest)
        found.setdefault(field, set()).add(text or "")
    return {
        f: (next(iter(texts)), cls.__module__)
        for f, texts in sorted(found.items())
        if len(texts) == 1 and "" not in texts
    }


def fill_defaults(
    env: Env, model_type: str, cls: type[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config arguments the family's class-default point is built with, and their record
    (``defaults_filled`` in the generated file). None when transformers builds the class
    defaults. Else fields null at the class defaults that the family's modeling file
    computes itself where a config leaves them null (:func:`null_fallbacks`; at full size
    another line of it reads the raw null and fails: hunyuan's attention takes
    ``config.head_dim ** -0.5``) are filled as that file computes them, as few as make the
    model build: one alone first, then all of them."""
    from .expr import evaluate

    try:
        env.save(cls, env.config(model_type, {}))
        return {}, {}
    except Exception as e:
        why = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    fallbacks = null_fallbacks(cls)
    cfg = env.config(model_type, {}).to_dict()
    paths: list[Path_] = [(k,) for k in cfg]
    paths += [(s, k) for s in SUBCONFIGS if isinstance(cfg.get(s), dict) for k in cfg[s]]
    found: list[tuple[Path_, str, str, int]] = []
    for path in paths:
        if get(cfg, path) is not None or path[-1] not in fallbacks:
            continue
        text, module = fallbacks[path[-1]]
        holder = get(cfg, path[:-1]) if len(path) > 1 else cfg
        try:
            value = evaluate(text, holder)
        except Exception:
            continue
        if _int_valued(value) and value > 0:
            found.append((path, text, module, value))
    tries = [[f] for f in found] + ([found] if len(found) > 1 else [])
    for chosen in tries:
        kwargs = filled_kwargs(env, model_type, {fname(p): v for p, _, _, v in chosen})
        if _try(env, model_type, cls, kwargs) is None:
            continue
        record = {
            fname(p): {"value": v, "as": text, "from": module, "class_defaults": why}
            for p, text, module, v in chosen
        }
        return kwargs, record
    raise DeriveError(
        f"the class defaults do not build ({why}) and no field null there is filled in by "
        f"the modeling file ({sorted(fallbacks) or 'none found'}) so that they do"
    )


def filled_kwargs(env: Env, model_type: str, values: dict[str, Any]) -> dict[str, Any]:
    """Config arguments setting each dotted field of ``values`` (``text_config.head_dim``)
    on the class defaults: what ``defaults_filled`` in a generated file records."""
    kwargs: dict[str, Any] = {}
    for dotted, value in sorted(values.items()):
        path = tuple(dotted.split("."))
        kwargs = _merge_kwargs(kwargs, kwargs_for(env.config(model_type, kwargs), path, value))
    return kwargs


def base_point(
    env: Env, model_type: str, cls: type[Any], defaults: dict[str, Any] | None = None
) -> tuple[Saved, dict[str, Any]]:
    """The save at the class defaults (``defaults``: with those arguments, as
    :func:`fill_defaults` gives them), and the base point's config arguments (the class
    defaults with counts shrunk, as far as the model still builds)."""
    base_kwargs: dict[str, Any] = dict(defaults or {})
    default = env.save(cls, env.config(model_type, base_kwargs))
    denv = default.env
    for path in fields_of(denv):
        value = get(denv, path)
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value > 8
            and _COUNT.search(path[-1])
        ):
            for small in (8, 6, 4, 12, 16):
                if small >= value:
                    break
                trial = _merge_kwargs(
                    base_kwargs, kwargs_for(env.config(model_type, base_kwargs), path, small)
                )
                if _try(env, model_type, cls, trial) is not None:
                    base_kwargs = trial
                    break
    return default, base_kwargs


def collect_points(
    env: Env,
    model_type: str,
    cls: type[Any],
    log: Callable[[str], None],
    defaults: dict[str, Any] | None = None,
) -> tuple[list[Point], Saved]:
    """The saves the derivation explains: a base (the class defaults with counts shrunk) and
    one point per structural field varied on its own; and the save at the class defaults
    (``defaults``: with those arguments, :func:`fill_defaults`)."""
    default, base_kwargs = base_point(env, model_type, cls, defaults)
    denv = default.env
    base_cfg = env.config(model_type, base_kwargs)
    base = env.save(cls, base_cfg)
    points = [Point("base", base_kwargs, base)]
    benv = base.env
    fields = fields_of(benv)
    for probe in PROBES:
        for sub in ((), *((s,) for s in SUBCONFIGS if isinstance(benv.get(s), dict))):
            holder = get(benv, sub) if sub else benv
            if (
                isinstance(holder, dict)
                and probe not in holder
                and ("hidden_size" in holder and "num_attention_heads" in holder)
            ):
                fields.append((*sub, probe))
    inert: list[tuple[Path_, list[Any]]] = []  # varied without changing the base's save
    # int fields transformers sets from the layer count (ernie's moe_layer_end_index = layers
    # - 1): their first variation (up) may change nothing, a later one (down) does
    shrunk = {fname(p) for p in fields_of(base_kwargs)} | {
        f"{k}.{k2}" for k, v in base_kwargs.items() if isinstance(v, dict) for k2 in v
    }
    follows_count = {
        path
        for path in fields
        if fname(path) not in shrunk
        and isinstance(get(benv, path), int)
        and not isinstance(get(benv, path), bool)
        and get(denv, path) != get(benv, path)
    }
    literals: set[str] | None = None  # (for _mixes: read once, when first needed)
    for path in fields:
        value = get(benv, path)
        if value is None and path[-1] in PROBES:
            holder = get(benv, path[:-1]) if len(path) > 1 else benv
            value = holder["hidden_size"] // max(1, holder["num_attention_heads"])
            tries = [value * 2, value // 2]
        else:
            tries = variations(value, benv)
            if not tries and _one_string(value):
                if literals is None:
                    literals = _module_literals(env.build(cls, base_cfg))
                tries = _mixes(env, model_type, base_kwargs, base_cfg, path, value, literals)
            if _MULTIPLE.search(path[-1]) and _int_valued(value) and value > 1:
                # a width is rounded up to a multiple of it: first a value no width is a
                # multiple of, so that the rounding shows (halved, 256 -> 128, it does not)
                tries = [value + 1, *(t for t in tries if t != value + 1)]
        for new in tries:
            try:
                kwargs = _merge_kwargs(base_kwargs, kwargs_for(base_cfg, path, new))
                cfg = env.config(model_type, kwargs)
                if get(cfg.to_dict(), path) != new:
                    continue  # the config class overrode it: not a free field
                saved = env.save(cls, cfg)
            except Exception:
                continue
            if not (saved.tensors != base.tensors or _structural_delta(saved.env, benv)):
                if path in follows_count and new != tries[-1]:
                    continue
                inert.append((path, [new]))
            if saved.tensors != base.tensors or _structural_delta(saved.env, benv):
                points.append(Point(fname(path), kwargs, saved, path))
                if new == [] and isinstance(value, list) and len(value) >= 2:
                    # emptying a list changed the save: whether it follows the list's
                    # length (a module per item) or only its emptiness, a shorter list says
                    shorter = _merge_kwargs(base_kwargs, kwargs_for(base_cfg, path, value[1:]))
                    got = _try(env, model_type, cls, shorter)
                    if got is not None:
                        points.append(Point(fname(path), shorter, got, path))
            break
    points += string_points(env, model_type, cls, base_kwargs, base)
    # Tensors the base does not have (biases behind a flag, dense layers of an MoE): their
    # sizes and conditions are seen at one point only, so the sweep is repeated from there.
    have = set(base.tensors)
    primary = list(points)
    seen_new: set[str] = set()
    secondary = 0
    for enabling in primary[1:]:
        new = {_shape_free(n) for n in enabling.saved.tensors if n not in have} - seen_new
        if not new or secondary >= 2:
            continue
        seen_new |= new
        secondary += 1
        for other in primary[1:]:
            if other is enabling or other.varied is None:
                continue
            kwargs = _merge_kwargs(enabling.kwargs, other.kwargs)
            got = _try(env, model_type, cls, kwargs)
            if got is not None:
                label = f"{fname(enabling.varied or ())}+{fname(other.varied)}"
                points.append(Point(label, kwargs, got, other.varied))
        # a field that changed nothing at the base may size what only exists here (the
        # dense MLP of an all-MoE base: intermediate_size): varied from here too, and kept
        # where it changes this save
        for path, news in inert:
            if enabling.varied is None:
                break
            kwargs = _merge_kwargs(enabling.kwargs, kwargs_for(base_cfg, path, news[0]))
            got = _try(env, model_type, cls, kwargs)
            if got is not None and got.tensors != enabling.saved.tensors:
                label = f"{fname(enabling.varied)}+{fname(path)}"
                points.append(Point(label, kwargs, got, path))
    log(f"  {len(points)} points")
    return points, default


# -- string fields ---------------------------------------------------------------------------

#: at most this many other values are tried for one string field
MAX_STRING_VALUES = 6
#: the separator of values made of parts (T5's ``feed_forward_proj``, ``gated-{ACT_FN}``)
STRING_SEP = "-"
_QUOTED = r"""["']([^"'\s{}()\[\],]+)["']"""


def string_fields(env: dict[str, Any]) -> list[Path_]:
    """The scalar string fields of a config dict (not ``model_type``, not :data:`_SKIP`)."""
    out: list[Path_] = []
    for k, v in env.items():
        if k.startswith("_") or _SKIP.search(k) or k == "model_type":
            continue
        if isinstance(v, str):
            out.append((k,))
        elif isinstance(v, dict) and k in SUBCONFIGS:
            out += [
                (k, k2)
                for k2, v2 in v.items()
                if isinstance(v2, str)
                and not (k2.startswith("_") or _SKIP.search(k2) or k2 == "model_type")
            ]
    return out


def _source(obj: Any) -> str:
    import inspect

    try:
        return inspect.getsource(obj) if obj is not None else ""
    except (OSError, TypeError):
        return ""


def string_values(field: str, config_class: type[Any], model_class: type[Any]) -> list[str]:
    """Values transformers' source names for a string field: the quoted words of the field's
    paragraph in its config class's docstring (T5Config: ``Should be one of "relu" or
    "gated-gelu"``) and the literals the config and modeling modules compare the field with
    (``config.encoder_attention_type == "transient-global"``); then the values made of their
    parts (:data:`STRING_SEP`): each first part joined to each last part or whole one-part
    value, and those last parts alone (``gated-relu``, ``gelu`` from ``relu`` and
    ``gated-gelu``), so a condition can tell a prefix from one value. Unchecked: the caller
    keeps those the config class accepts and transformers builds."""
    named: list[str] = []
    doc = _source(config_class)
    para = re.search(rf"^(\s*){re.escape(field)} \(.*?(?=^\1\w+ \(|\"\"\"|\Z)", doc, re.M | re.S)
    if para is not None:
        named += re.findall(_QUOTED, para.group(0))
    f = re.escape(field)
    for owner in (config_class, model_class):
        text = _source(sys.modules.get(owner.__module__))
        named += re.findall(rf"\b{f}\s*[!=]=\s*{_QUOTED}", text)
        named += re.findall(rf"{_QUOTED}\s*[!=]=\s*(?:self\.)?(?:config\.)?{f}\b", text)
        for group in re.findall(rf"\b{f}\s+(?:not\s+)?in\s*[\[({{]([^\])}}]*)", text):
            named += re.findall(_QUOTED, group)
    out = list(dict.fromkeys(named))
    heads = [v.split(STRING_SEP)[0] for v in out if STRING_SEP in v]
    tails = [v.split(STRING_SEP)[-1] for v in out if STRING_SEP in v]
    plain = [v for v in out if STRING_SEP not in v]
    made = [h + STRING_SEP + t for h in heads for t in [*tails, *plain]] + tails
    return list(dict.fromkeys(out + made))


def string_points(
    env: Env, model_type: str, cls: type[Any], base_kwargs: dict[str, Any], base: Saved
) -> list[Point]:
    """Points for the string fields whose value changes the save (T5's ``feed_forward_proj``:
    ``wi`` or ``wi_0``/``wi_1``): each of :func:`string_values` (at most
    :data:`MAX_STRING_VALUES`) the config class keeps as given and transformers builds; none
    for a field no value of which changes the tensors."""
    base_cfg = env.config(model_type, base_kwargs)
    config_class = type(base_cfg)
    points: list[Point] = []
    for path in string_fields(base.env):
        holder = getattr(base_cfg, path[0], None) if len(path) > 1 else base_cfg
        owner = type(holder) if holder is not None else config_class
        value = get(base.env, path)
        tries = [v for v in string_values(path[-1], owner, cls) if v != value]
        tries = tries[:MAX_STRING_VALUES]
        found: list[Point] = []
        for new in tries:
            try:
                kwargs = _merge_kwargs(base_kwargs, kwargs_for(base_cfg, path, new))
                cfg = env.config(model_type, kwargs)
                if get(cfg.to_dict(), path) != new:
                    continue  # the config class overrode it (T5's dense_act_fn)
                saved = env.save(cls, cfg)
            except Exception:
                continue
            found.append(Point(f"{fname(path)}={new}", kwargs, saved, path))
        if any(p.saved.tensors != base.tensors for p in found):
            points += found
    return points


def string_conditions(fields: Sequence[str], samples: list[dict[str, Any]]) -> list[str]:
    """Conditions on the string fields among ``fields`` that take two values or more: one
    value or not, then the first part of a value made of parts (``split(feed_forward_proj,
    "-")[0] == "gated"``, as T5Config computes ``is_gated_act``)."""
    texts: list[str] = []
    for f in fields:
        vals = [s.get(f) for s in samples]
        strs = sorted({v for v in vals if isinstance(v, str)})
        if len(strs) < 2 or not all(v is None or isinstance(v, str) for v in vals):
            continue
        for v in strs:
            texts += [f"{f} == {json.dumps(v)}", f"{f} != {json.dumps(v)}"]
        sep = json.dumps(STRING_SEP)
        for h in sorted({v.split(STRING_SEP)[0] for v in strs if STRING_SEP in v}):
            texts += [
                f"split({f}, {sep})[0] == {json.dumps(h)}",
                f"split({f}, {sep})[0] != {json.dumps(h)}",
            ]
    return texts


def _one_string(value: Any) -> bool:
    """A list of two or more items, all one string (``["linear_attention"] * layers``)."""
    return (
        isinstance(value, list)
        and len(value) >= 2
        and isinstance(value[0], str)
        and all(x == value[0] for x in value)
    )


def _module_literals(model: Any) -> set[str]:
    """The string constants (identifiers: ``"full_attention"``) of the source of every
    module the classes of ``model``'s modules are defined in (its modeling files)."""
    import ast
    import inspect

    out: set[str] = set()
    for name in sorted({type(m).__module__ for m in model.modules()}):
        module = sys.modules.get(name)
        try:
            tree = ast.parse(inspect.getsource(module)) if module is not None else None
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value)
    return {x for x in out if x.isidentifier()}


#: A value no config class accepts where it checks a field's values.
_NO_SUCH_VALUE = "pyaudit_no_such_value"


def _mixes(
    env: Env,
    model_type: str,
    base_kwargs: dict[str, Any],
    base_cfg: Any,
    path: Path_,
    value: list[str],
    literals: set[str],
) -> list[list[str]]:
    """Variations of a per-layer list that is one value at the base (granitemoehybrid's
    ``layer_types``, ``["linear_attention"] * layers``): another value at every other
    index, for each value the config class accepts there among the string literals of the
    modeling files (``"full_attention"``; the config class must check the field: one taking
    :data:`_NO_SUCH_VALUE` gives none). The config class's value is what it keeps."""

    def kept(items: list[str]) -> bool:
        try:
            kwargs = _merge_kwargs(base_kwargs, kwargs_for(base_cfg, path, items))
            return bool(get(env.config(model_type, kwargs).to_dict(), path) == items)
        except Exception:
            return False

    if kept([_NO_SUCH_VALUE] * len(value)):
        return []  # the class takes any value: nothing says which ones the model knows
    out = []
    for other in sorted(literals - {value[0]}):
        mix = [other if n % 2 else value[0] for n in range(len(value))]
        if kept(mix):
            out.append(mix)
    return out


def _structural_delta(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Did varying one field change another (a derived one) besides itself? Such a point
    stays even when the save did not change (it shows what the derived field follows)."""
    fa, fb = flat_env(a), flat_env(b)
    return sum(1 for k in set(fa) | set(fb) if fa.get(k) != fb.get(k)) > 1


def _shape_free(name: str) -> str:
    return re.sub(r"\.\d+(?=\.)", ".#", name)


# -- expressions ----------------------------------------------------------------------------

Vec = tuple[Any, ...]


@dataclass(frozen=True)
class Term:
    text: str
    prec: int  # 0 atom, 1 power, 2 mul/div, 3 add/sub
    size: int
    op: str = ""  # the outermost operator of a binary term


def _bin(a: Term, op: str, b: Term) -> Term:
    prec = {"*": 2, "//": 2, "+": 3, "-": 3}[op]
    lt = a.text if a.prec <= prec else f"({a.text})"
    # the right operand needs parentheses at equal precedence unless op is + or * (and, for
    # *, the operand is no floor division: a * (b // c) is not a * b // c)
    bare = b.prec < prec or (b.prec == prec and op in "+*" and not (op == "*" and b.op == "//"))
    rt = b.text if bare else f"({b.text})"
    return Term(f"{lt} {op} {rt}", prec, a.size + b.size + 1, op)


def _sq(a: Term) -> Term:
    t = a.text if a.prec == 0 else f"({a.text})"
    return Term(f"{t} ** 2", 1, a.size + 1)


def _apply(op: str, x: Any, y: Any) -> Any:
    if x is None or y is None:
        return None
    if op == "*":
        return x * y
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "//":
        return None if y == 0 else x // y
    raise AssertionError(op)


def _vec(op: str, a: Vec, b: Vec) -> Vec | None:
    out = []
    for x, y in zip(a, b, strict=True):
        if isinstance(x, bool) or isinstance(y, bool):
            return None
        v = _apply(op, x, y)
        if isinstance(v, float):
            if not v.is_integer():
                return None
            v = int(v)
        out.append(v)
    return tuple(out)


def _matches(vec: Vec, target: Vec, lo: Vec | None = None) -> bool:
    if lo is not None:  # within (lo, target]: the argument of a rounding up
        return all(
            t is None or (v is not None and not isinstance(v, bool) and low < v <= t)
            for v, t, low in zip(vec, target, lo, strict=True)
        )
    return all(t is None or v == t for v, t in zip(vec, target, strict=True))


class _OutOfBudget(Exception):
    pass


def synthesize(atoms: dict[str, Vec], target: Vec, max_size: int = 7) -> str | None:
    """:func:`_synthesize`, giving up (None) after a fixed number of candidates."""
    if len(atoms) > 12:
        return None
    try:
        return _synthesize(atoms, target, max_size)
    except _OutOfBudget:
        return None


def _synthesize(
    atoms: dict[str, Vec],
    target: Vec,
    max_size: int = 7,
    lo: Vec | None = None,
    float_terms: bool = False,
) -> str | None:
    """The smallest expression over ``atoms`` (name -> value per sample) and small constants
    whose value equals ``target`` at every sample where the target is not None (with
    ``lo``: lies in ``(lo, target]`` there). ``float_terms``: ``int(term * float_field)``
    for terms of every size, not only for single fields."""
    n = len(target)
    known = [t for t in target if t is not None]
    if not known:
        return None
    if all(t == known[0] for t in known) and not atoms:
        return str(known[0])
    levels: dict[int, list[tuple[Term, Vec]]] = {1: []}
    seen: set[Vec] = set()

    budget = [400_000]

    def add(size: int, term: Term, vec: Vec | None) -> str | None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _OutOfBudget
        if vec is None or vec in seen:
            return None
        if any(isinstance(v, int) and abs(v) > 1 << 48 for v in vec if v is not None):
            return None
        seen.add(vec)
        levels.setdefault(size, []).append((term, vec))
        if _matches(vec, target, lo):
            return term.text
        return None

    for name in sorted(atoms):
        vec = atoms[name]
        if any(v is None or isinstance(v, bool) or not isinstance(v, (int, float)) for v in vec):
            continue
        fvec = tuple(int(v) if isinstance(v, float) and v.is_integer() else v for v in vec)
        if any(isinstance(v, float) for v in (vec if float_terms else fvec)):
            # a float field (mlp_ratio): only int(field * other) makes sense; handled below
            levels.setdefault(0, []).append((Term(name, 0, 1), vec))
            continue
        hit = add(1, Term(name, 0, 1), fvec)
        if hit:
            return hit
    consts = [Term(str(c), 0, 1) for c in (1, 2, 3, 4, 8)]
    for c in consts:
        hit = add(1, c, (int(c.text),) * n)
        if hit:
            return hit
    # int(float_field * atom)
    for fterm, fvec in levels.get(0, []):
        for term, vec in list(levels[1]):
            prod = []
            for x, y in zip(fvec, vec, strict=True):
                prod.append(None if x is None or y is None else int(x * y))
            hit = add(3, Term(f"int({term.text} * {fterm.text})", 0, 3), tuple(prod))
            if hit:
                return hit
    for size in range(2, max_size + 1):
        if float_terms and size >= 4:
            # int(term * float_field) over a term of any size (int(multiplier * int(2 *
            # hidden / 3)))
            for fterm, fvec in levels.get(0, []):
                for term, vec in list(levels.get(size - 2, [])):
                    if term.text.isdigit():
                        continue
                    fprod = tuple(
                        None if x is None or y is None else int(x * y)
                        for x, y in zip(fvec, vec, strict=True)
                    )
                    inner = term.text if term.prec < 3 else f"({term.text})"
                    hit = add(size, Term(f"int({inner} * {fterm.text})", 0, size), fprod)
                    if hit:
                        return hit
        # unary square
        for term, vec in list(levels.get(size - 1, [])):
            if term.prec == 3 or term.text.isdigit():
                continue
            sq = tuple(None if v is None else v * v for v in vec)
            hit = add(size, _sq(term), sq)
            if hit:
                return hit
        for left in range(1, size - 1):
            right = size - 1 - left
            for (ta, va), (tb, vb) in itertools.product(
                list(levels.get(left, [])), list(levels.get(right, []))
            ):
                for op in ("*", "+", "-", "//"):
                    if op in "*+" and ta.text > tb.text and left == right:
                        continue  # commutative: one order is enough
                    if ta.text.isdigit() and tb.text.isdigit():
                        continue
                    if (op == "*" and ta.text == "1") or (tb.text == "1" and op in "*//"):
                        continue
                    hit = add(size, _bin(ta, op, tb), _vec(op, va, vb))
                    if hit:
                        return hit
        if sum(len(v) for v in levels.values()) > 200_000:
            break
    return None


def synthesize_rounded(atoms: dict[str, Vec], target: Vec) -> str | None:
    """``m * cdiv(E, m)``: a width rounded up to a multiple of an int field ``m`` (the
    feed-forward sizing of Llama's reference code, ``multiple_of * ((int(ffn_dim_multiplier *
    int(2 * hidden / 3)) + multiple_of - 1) // multiple_of)``), ``E`` the smallest expression
    over the other fields, float products of any term included, that lies within ``(target
    - m, target]`` at every sample. Tried only where nothing plainer fits."""
    for m in sorted(atoms):
        mv = atoms[m]
        if not all(_int_valued(v) and v > 1 for v in mv):
            continue
        pairs = [(t, v) for t, v in zip(target, mv, strict=True) if t is not None]
        if not pairs or any(t % v for t, v in pairs) or all(t == v for t, v in pairs):
            continue
        if len({v for _, v in pairs}) < 2:
            continue  # the multiple never varied: rounding to it is not seen
        lo = tuple(None if t is None else t - v for t, v in zip(target, mv, strict=True))
        rest = {k: a for k, a in atoms.items() if k != m}
        try:
            text = _synthesize(rest, target, 7, lo=lo, float_terms=True)
        except _OutOfBudget:
            continue
        if text is not None:
            return f"{m} * cdiv({text}, {m})"
    return None


def synthesize_sum(
    atoms: dict[str, Vec], target: Vec, loop: str | None = None, max_terms: int = 3
) -> list[str]:
    """A sum of up to ``max_terms`` products of one or two fields, each with a small
    coefficient, equal to ``target`` wherever it is known: the sizes of fused projections
    (``2 * key_heads * key_dim + value_heads * value_dim``, a Mamba block's
    ``2 * expand * hidden + 2 * groups * state + heads``), too long for :func:`synthesize`.
    The fewest terms win. Every sum with that few terms that fits is returned (at most
    six): fields varied one at a time cannot tell ``2 * a * b + c * d`` from ``a * d + 2 * b
    * c`` when a = d at the base, so more than one answer is ambiguous, for the caller to
    settle at a point where two of the fields change together."""
    known = [j for j, t in enumerate(target) if t is not None]
    if not known:
        return []
    ints: dict[str, tuple[int, ...]] = {}
    for name, vec in sorted(atoms.items()):
        if name == loop:
            continue
        if all(
            (isinstance(vec[j], int) and not isinstance(vec[j], bool))
            or (isinstance(vec[j], float) and vec[j].is_integer())
            for j in known
        ):
            ints[name] = tuple(int(vec[j]) for j in known)
    if len(ints) > 10:
        return []
    want = tuple(int(target[j]) for j in known)
    monos: dict[tuple[int, ...], str] = {}
    names = sorted(ints)
    for a in names:
        monos.setdefault(ints[a], a)
    for a, b in itertools.combinations(names, 2):
        vec = tuple(x * y for x, y in zip(ints[a], ints[b], strict=True))
        monos.setdefault(vec, f"{a} * {b}")
    items = [(text, vec) for vec, text in monos.items() if any(vec)]
    coeffs = (1, 2, 3, 4)
    for k in range(1, max_terms + 1):
        found: list[str] = []
        for combo in itertools.combinations(items, k):
            for cs in itertools.product(coeffs, repeat=k):
                vec = tuple(
                    sum(c * m[1][j] for c, m in zip(cs, combo, strict=True))
                    for j in range(len(want))
                )
                if vec == want:
                    found.append(
                        " + ".join(
                            m[0] if c == 1 else f"{m[0]} * {c}"
                            for c, m in zip(cs, combo, strict=True)
                        )
                    )
                    if len(found) > 6:
                        return found
        if found:
            return found
    return []


# -- conditions -------------------------------------------------------------------------------


def condition_library(
    samples: list[dict[str, Any]],
    fields: Sequence[str],
    loop: str | None,
    known: Sequence[str] = (),
) -> list[tuple[str, Callable[[dict[str, Any]], bool]]]:
    """Candidate existence conditions over ``fields`` (and the loop variable); ``known``:
    conditions already solved for other tensors (a bias exists where its weight does and
    the bias flag is set), tried last."""
    from .expr import compile_expr

    texts: list[str] = string_conditions(fields, samples)
    for f in fields:
        vals = [s.get(f) for s in samples]
        if all(isinstance(v, bool) for v in vals if v is not None):
            texts += [f, f"not {f}"]
        elif all(isinstance(v, int) for v in vals if v is not None):
            texts += [f"{f} > 0", f"{f} == 0"]
            if loop:
                texts += [
                    f"{loop} < {f}",
                    f"{loop} >= {f}",
                    f"({loop} + 1) % {f} == 0",
                    f"{loop} % {f} == 0",
                    f"({loop} + 1) % {f} != 0",
                    f"{loop} % {f} != 0",
                ]
        elif all(isinstance(v, list) for v in vals if v is not None):
            if loop:
                texts += [f"{loop} in {f}", f"{loop} not in {f}"]
                items = {x for v in vals if v for x in v}
                for x in sorted(items, key=str):
                    if isinstance(x, str):
                        texts += [
                            f"{f}[{loop}] == {json.dumps(x)}",
                            f"{f}[{loop}] != {json.dumps(x)}",
                        ]
                if items and all(isinstance(x, bool) for x in items):
                    texts += [f"{f}[{loop}]", f"not {f}[{loop}]"]
            # a list's truth is refused by the evaluator: its emptiness is asked by len()
            texts += [f"len({f}) > 0", f"len({f}) == 0"]
        if all(v is None or isinstance(v, (int, float, str, list)) for v in vals) and any(
            v is None for v in vals
        ):
            texts += [f"{f} is not None", f"{f} is None"]
    if loop:
        ints = [
            f
            for f in fields
            if all(isinstance(s.get(f), int) and not isinstance(s.get(f), bool) for s in samples)
        ]
        for f, g in itertools.permutations(ints, 2):
            texts += [f"{loop} < {f} - {g}", f"{loop} >= {f} - {g}"]
    # two sizes that are equal or not (OPT's project_in/out exist when word_embed_proj_dim
    # differs from hidden_size); last, so a simpler explanation wins
    sizes = [
        f
        for f in fields
        if all(isinstance(s.get(f), int) and not isinstance(s.get(f), bool) for s in samples)
    ]
    for f, g in itertools.combinations(sizes, 2):
        texts += [f"{f} != {g}", f"{f} == {g}"]
    texts += [k for k in known if k not in texts]
    out: list[tuple[str, Callable[[dict[str, Any]], bool]]] = []
    for t in texts:
        out.append((t, _truth(compile_expr(t))))
    return out


def _truth(fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], bool]:
    """A candidate condition judged as the evaluator judges it (a list or string is refused
    there, so a candidate testing one's truth raises here and is never chosen)."""
    from .expr import truth

    return lambda env: truth(fn(env))


def solve_condition(
    samples: list[dict[str, Any]],
    exists: list[bool],
    fields: Sequence[str],
    loop: str | None,
    known: Sequence[str] = (),
) -> str | None:
    """The simplest conjunction of library conditions that holds exactly where ``exists``."""
    if all(exists):
        return ""
    if not any(exists):
        return None
    lib = condition_library(samples, fields, loop, known)
    nested = [_nest(s) for s in samples]
    necessary = []
    for text, fn in lib:
        try:
            vals = [fn(s) for s in nested]
        except Exception:
            continue
        if all(v for v, e in zip(vals, exists, strict=True) if e):
            necessary.append((text, vals))
    for k in (1, 2, 3):
        for combo in itertools.combinations(necessary, k):
            if all(not all(c[1][j] for c in combo) for j, e in enumerate(exists) if not e):
                return " and ".join(f"({c[0]})" if " or " in c[0] else c[0] for c in combo)
    # or-combinations of two
    for (ta, va), (tb, vb) in itertools.combinations(lib_values(lib, nested), 2):
        if all((a or b) == e for a, b, e in zip(va, vb, exists, strict=True)):
            return f"{ta} or {tb}"
    return None


def lib_values(
    lib: list[tuple[str, Callable[[dict[str, Any]], bool]]], samples: list[dict[str, Any]]
) -> list[tuple[str, list[bool]]]:
    out = []
    for text, fn in lib:
        try:
            out.append((text, [fn(s) for s in samples]))
        except Exception:
            continue
    return out


# -- the derivation ---------------------------------------------------------------------------

_NUM = re.compile(r"^\d+$")
VARS = "ijklmn"


class DeriveError(Exception):
    """transformers' saves of a family could not be explained by a spec."""


def flat_env(env: dict[str, Any], probes: Iterable[str] = ()) -> dict[str, Any]:
    """Config dict -> the names expressions read (sub-config fields as ``text_config.x``);
    ``probes`` (dotted) a config lacks get their fallback value (:data:`PROBES`)."""
    from .expr import compile_expr

    out: dict[str, Any] = {}
    for k, v in env.items():
        if isinstance(v, dict):
            if k in SUBCONFIGS:
                for k2, v2 in v.items():
                    if not isinstance(v2, dict):
                        out[f"{k}.{k2}"] = v2
            continue
        out[k] = v
    for dotted in probes:
        if out.get(dotted) is None:
            sub, _, leaf = dotted.rpartition(".")
            holder = get(env, (sub,)) if sub else env
            if isinstance(holder, dict):
                out[dotted] = compile_expr(PROBES[leaf])(holder)
    return out


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _section(template: str) -> str:
    toks = template.split(".")[:4]
    low = [t.lower() for t in toks]
    if any(
        "projector" in t or t in ("mm_projector", "connector", "multi_modal_projector") for t in low
    ):
        return "projector"
    if any(
        "vision" in t or "visual" in t or t.startswith("image") or t in ("vit", "vpm") for t in low
    ):
        return "vision"
    if any("audio" in t or "speech" in t or t in ("sound", "whisper") for t in low):
        return "audio"
    return "text"


Sample = tuple[int, tuple[int, ...]]  # (point index, loop indices)


class Deriver:
    """Explains the saves at every point by one spec (see the module docstring)."""

    def __init__(
        self,
        points: list[Point],
        fp16: Saved | None,
        default: Saved,
        build: Callable[[dict[str, Any]], Saved] | None = None,
    ) -> None:
        self.points = points
        self.build = build  # saves one more config (kwargs) on demand: see _settle
        self.extra: dict[str, Saved] = {}  # those saves, by label
        self.default = default
        self.fp16 = fp16
        self.probes = {
            fname(p.varied) for p in points if p.varied is not None and p.varied[-1] in PROBES
        }
        self.envs = [flat_env(p.saved.env, self.probes) for p in points]
        base = self.envs[0]
        self.delta: list[set[str]] = []
        for e in self.envs:
            keys = set(e) | set(base)
            self.delta.append({k for k in keys if e.get(k) != base.get(k)})
        self.derived: set[str] = set()
        for p, d in zip(points, self.delta, strict=True):
            if p.varied is not None and "+" not in p.label:
                self.derived |= d - {fname(p.varied)}
        self.used: set[str] = set()
        self.bools: dict[str, Vec] = {}  # the flags among the fields :meth:`_atoms` last saw
        self.conds: list[tuple[str, str]] = []  # (template, its condition), as solved
        self.solved: list[tuple[str, str]] = []  # (template, dimension expression)

    # -- names ----------------------------------------------------------------------------
    def _stems(self) -> set[str]:
        """All-'#' stems whose index sets vary (a repeat); the others are literal."""
        sets: dict[str, dict[tuple[int, tuple[str, ...]], set[int]]] = {}
        for pi, p in enumerate(self.points):
            for name in p.saved.tensors:
                toks = name.split(".")
                outer: list[str] = []
                for pos, tok in enumerate(toks):
                    if _NUM.match(tok):
                        stem = ".".join("#" if _NUM.match(t) else t for t in toks[:pos])
                        sets.setdefault(stem, {}).setdefault((pi, tuple(outer)), set()).add(
                            int(tok)
                        )
                        outer.append(tok)
        rep = set()
        for stem, per in sets.items():
            vals = list(per.values())
            if any(v != vals[0] for v in vals):
                rep.add(stem)
        return rep

    def _template(self, name: str) -> tuple[str, tuple[int, ...]]:
        toks = name.split(".")
        out, idx = [], []
        for pos, tok in enumerate(toks):
            if _NUM.match(tok):
                stem = ".".join("#" if _NUM.match(t) else t for t in toks[:pos])
                if stem in self.rep:
                    out.append("#")
                    idx.append(int(tok))
                    continue
            out.append(tok)
        return ".".join(out), tuple(idx)

    # -- solving --------------------------------------------------------------------------
    def _atoms(
        self,
        samples: list[Sample],
        values: list[Any],
        extra_loop: str | None = None,
        own: bool = False,
    ) -> dict[str, Vec]:
        """The fields the values may follow (those changed where they changed), as atoms.
        ``own``: a combined point (``layer_types+hidden_size``) is held against the point it
        was combined from where that is sampled too, not against the first one (what the
        enabling field changed elsewhere is not taken for what changed these values)."""
        by_point: dict[int, set[Any]] = {}
        for (pi, _), v in zip(samples, values, strict=True):
            by_point.setdefault(pi, set()).add(v)
        ref = min(by_point)
        base_vals = by_point[ref]
        single: dict[str, int] = {}
        for n, p in enumerate(self.points):
            if "+" not in p.label:
                single.setdefault(p.label, n)
        dep: set[str] = set()
        for pi, vals in by_point.items():
            origin = single.get(self.points[pi].label.partition("+")[0], -1)
            if own and "+" in self.points[pi].label and origin in by_point:
                if vals != by_point[origin]:
                    dep |= self._delta(pi, origin)
            elif pi != ref and vals != base_vals:
                dep |= self._delta(pi, ref)
        grow = True
        while grow:
            grow = False
            for p, d in zip(self.points, self.delta, strict=True):
                if "+" not in p.label and d & dep and not d <= dep:
                    dep |= d
                    grow = True
        atoms: dict[str, Vec] = {}
        self.bools = {}
        for f in sorted(dep):
            vec = tuple(self.envs[pi].get(f) for pi, _ in samples)
            if all(_numeric(v) for v in vec):
                atoms[f] = vec
            elif all(isinstance(v, list) for v in vec):
                atoms[f"len({f})"] = tuple(len(v) if isinstance(v, list) else 0 for v in vec)
            elif all(isinstance(v, bool) for v in vec) and len(set(vec)) == 2:
                self.bools[f] = vec  # (for :meth:`_rounded` only)
        return atoms

    def _rounded(
        self,
        atoms: dict[str, Vec],
        target: Vec,
        bools: dict[str, Vec],
        samples: list[Sample] | None = None,
        what: str = "",
        loop: str | None = None,
    ) -> str | None:
        """Where nothing plainer fits: :func:`_rounded_fit`. With ``samples`` (of the
        dimension ``what``), a rounded width is also held against saves where a field it reads
        is one or two above the base (:meth:`_rounding_probes`): where it misses one, it is
        solved again with those saves among the samples (points whose widths happen to be
        multiples of 3 cannot tell ``intermediate_size - intermediate_size // 3`` from ``2 *
        intermediate_size // 3``; rounded up, they differ)."""
        text = self._rounded_fit(*_squeezed(atoms, target, bools, loop))
        for _ in range(2):
            if text is None or "cdiv(" not in text or samples is None:
                return text
            more = self._rounding_probes(text, samples, what, loop)
            if not more:
                return text
            atoms = {k: v + tuple(_at(k, e, o, loop) for e, o, _ in more) for k, v in atoms.items()}
            bools = {k: v + tuple(e.get(k) for e, _, _ in more) for k, v in bools.items()}
            target = target + tuple(w for _, _, w in more)
            text = self._rounded_fit(*_squeezed(atoms, target, bools, loop))
        return text

    def _rounding_probes(
        self, text: str, samples: list[Sample], what: str, loop: str | None
    ) -> list[tuple[dict[str, Any], tuple[int, ...], int]]:
        """Saves (transformers', on demand through ``self.build``; verified with the
        others) where one int field ``text`` reads is one or two above its base value, the
        others as at the point that varied it: (config, loop indices, width) at each, all of
        them when ``text`` misses one, else none."""
        from .expr import compile_expr

        if self.build is None or " dim " not in what:
            return []
        tpl, _, dim_text = what.rpartition(" dim ")
        dim = int(dim_text)
        fn = compile_expr(text)
        single = {
            fname(p.varied): p for p in self.points if p.varied is not None and "+" not in p.label
        }
        first = samples[0][0]
        outer = [o for pi, o in samples if pi == first]
        out: list[tuple[dict[str, Any], tuple[int, ...], int]] = []
        missed = False
        for f in sorted(fn.names - {loop}):
            value = self.envs[0].get(f)
            if f not in single or not isinstance(value, int) or isinstance(value, bool):
                continue
            for new in (value + 1, value + 2):
                label = f"{f}={new}"
                saved = self.extra.get(label)
                if saved is None:
                    try:
                        saved = self.build(_with_field(single[f].kwargs, f, new))
                    except Exception:
                        continue
                    if get(saved.env, tuple(f.split("."))) != new:
                        continue  # the config class overrode it
                    self.extra[label] = saved
                env = flat_env(saved.env, self.probes)
                for o in outer:
                    got = saved.tensors.get(_render(tpl, o))
                    if got is None or len(got[0]) <= dim:
                        continue
                    e = _nest(env)
                    if loop is not None and o:
                        e[loop] = o[-1]
                    try:
                        missed |= fn(e) != got[0][dim]
                    except Exception:
                        missed = True
                    out.append((env, o, got[0][dim]))
        return out if missed else []

    def _rounded_fit(self, atoms: dict[str, Vec], target: Vec, bools: dict[str, Vec]) -> str | None:
        """:func:`synthesize_rounded`, else one flag the size follows splitting the samples,
        each side solved on its own (``(rounded) if block_auto_adjust_ff_dim else
        intermediate_size``)."""
        text = synthesize_rounded(atoms, target)
        if text is not None:
            return text
        for flag, fvec in sorted(bools.items()):
            parts: list[str] = []
            for side in (True, False):
                idx = [j for j, v in enumerate(fvec) if v is side]
                sub = {k: tuple(a[j] for j in idx) for k, a in atoms.items()}
                want = tuple(target[j] for j in idx)
                part = synthesize(sub, want) or synthesize_rounded(sub, want)
                if part is None:
                    break
                parts.append(part)
            else:
                return f"({parts[0]}) if {flag} else ({parts[1]})"
        return None

    def expr(
        self, samples: list[Sample], values: list[int], what: str, loop: str | None = None
    ) -> str:
        atoms = self._atoms(samples, values)
        if loop is not None and samples and samples[0][1]:
            atoms[loop] = tuple(o[-1] for _, o in samples)
        trusted = self._trusted(samples)
        if all(v == values[0] for v in values) and trusted:
            return str(values[0])
        if not trusted:
            text = self._borrow(samples, values, what, loop)
            if text is not None:
                return text
        text = self._solve(atoms, samples, values, what, loop)
        if text is None:
            # where nothing fits: the fields a combined point changed besides the one it
            # varies are left out (granitemoehybrid's layer_types mix, which changes no Mamba
            # width, made every field its combined points vary look like a cause)
            own = self._atoms(samples, values, own=True)
            if loop is not None and samples and samples[0][1]:
                own[loop] = atoms[loop]
            if set(own) != {k for k in atoms if "[" not in k}:
                text = self._solve(own, samples, values, what, loop)
                atoms = own
        if text is None:
            raise DeriveError(
                f"no expression for {what}: over {sorted(atoms)} values {sorted(set(values))[:8]}"
            )
        self._note(text, atoms)
        return text

    def _solve(
        self,
        atoms: dict[str, Vec],
        samples: list[Sample],
        values: list[int],
        what: str,
        loop: str | None,
    ) -> str | None:
        """:meth:`expr`'s search over ``atoms`` (adds per-index atoms to it), or None."""
        target = tuple(values)
        text = None
        if what.startswith("count of ") and "~p" in what:
            # an nn.Sequential of stages built in a loop (:func:`strided`): a count may go
            # with a power of two, range(int(math.log2(subsampling_factor)) - 1)
            for name, ints in sorted(atoms.items()):
                if all(_int_valued(v) and v > 0 for v in ints):
                    atoms[f"log2({name})"] = tuple(int(math.log2(v)) for v in ints)
        if what.startswith("count of "):
            # transformers loops over range(num_hidden_layers): a count is a scalar field's
            # where one fits, not the length of a per-layer list that happens to agree
            scalars = {k: v for k, v in atoms.items() if not k.startswith("len(")}
            if len(scalars) < len(atoms):
                text = synthesize(scalars, target)
        if text is None and any(
            isinstance(v, float) and not v.is_integer() for a in atoms.values() for v in a
        ):
            # a size that follows a float field: int(1 / f) before the float products, which
            # two values of the field cannot tell from it (hidden * (4 // int(3 * ratio)))
            text = self._derived_atoms(samples, atoms, target)
        if text is None:
            text = synthesize(atoms, target)
        if text is None and loop is not None:
            # per-index sizes: a list field indexed by the loop variable
            for f in sorted({k for e in self.envs for k, v in e.items() if isinstance(v, list)}):
                vec = []
                for pi, o in samples:
                    lst = self.envs[pi].get(f)
                    k = o[-1] if o else None
                    vec.append(
                        lst[k] if isinstance(lst, list) and k is not None and k < len(lst) else None
                    )
                if all(_numeric(v) for v in vec):
                    atoms[f"{f}[{loop}]"] = tuple(vec)
            text = synthesize(atoms, target, max_size=5)
        if text is None:
            text = self._borrow(samples, values, what, loop)
        if text is None:
            sums = synthesize_sum(atoms, target, loop)
            text = sums[0] if len(sums) == 1 else self._settle(sums, samples, what, loop)
        if text is None:
            text = self._rounded(atoms, target, self.bools, samples, what, loop)
            if text is not None:
                self._note(text, self.bools)
        if text is None:
            text = self._derived_atoms(samples, atoms, target)
        return text

    def _derived_atoms(
        self, samples: list[Sample], atoms: dict[str, Vec], target: Vec
    ) -> str | None:
        """Where nothing else fits: the search again with atoms computed from the fields, the
        items of a list field of one length (``vision_config.patch_size[0]``: a kernel of
        ``patch_size = [14, 14]``) and ``int(1 / f)`` of a positive float field (InternVL's
        projector width, ``hidden_size * int(1 / downsample_ratio) ** 2``). Reached only
        where derivation raised before, so derived families are unchanged."""
        more = dict(atoms)
        read: dict[str, str] = {}  # atom -> the field it reads
        for name, vec in sorted(atoms.items()):
            if name.startswith("len(") and name.endswith(")"):
                f = name[4:-1]
                lists: list[list[Any]] = []
                for pi, _ in samples:
                    v = self.envs[pi].get(f)
                    if isinstance(v, list) and v and all(_numeric(x) for x in v):
                        lists.append(v)
                if len(lists) == len(samples) and len({len(v) for v in lists}) == 1:
                    for k in range(min(len(lists[0]), 4)):
                        more[f"{f}[{k}]"] = tuple(v[k] for v in lists)
                        read[f"{f}[{k}]"] = f
            elif (
                all(_numeric(v) and v > 0 for v in vec)
                and any(isinstance(v, float) and not v.is_integer() for v in vec)
            ):
                more[f"int(1 / {name})"] = tuple(int(1 / v) for v in vec)
                read[f"int(1 / {name})"] = name
        if len(more) == len(atoms):
            return None
        text = synthesize(more, target)
        if text is not None:
            self._note(text, atoms)
            self.used |= {f for a, f in read.items() if a in text}
        return text

    def _settle(
        self, candidates: list[str], samples: list[Sample], what: str, loop: str | None
    ) -> str | None:
        """The one of several expressions that fit every sample that also holds where two of
        the fields they read change together (transformers saves such points on demand,
        through ``self.build``; they are verified with the others)."""
        from .expr import compile_expr

        if len(candidates) < 2 or self.build is None or " dim " not in what:
            return None
        tpl, _, dim_text = what.rpartition(" dim ")
        dim = int(dim_text)
        fields = sorted(set().union(*(compile_expr(c).names for c in candidates)) - {loop})
        single = {
            fname(p.varied): p for p in self.points if p.varied is not None and "+" not in p.label
        }
        left = list(candidates)
        for a, b in itertools.combinations([f for f in fields if f in single], 2):
            kwargs = _merge_kwargs(single[a].kwargs, single[b].kwargs)
            label = f"{a}+{b}"
            saved = self.extra.get(label)
            if saved is None:
                try:
                    saved = self.build(kwargs)
                except Exception:
                    continue
                self.extra[label] = saved
            env = _nest(flat_env(saved.env, self.probes))
            seen = False
            for _, o in samples:
                got = saved.tensors.get(_render(tpl, o))
                if got is None or len(got[0]) <= dim:
                    continue
                seen = True
                e = dict(env)
                if loop is not None and o:
                    e[loop] = o[-1]
                left = [c for c in left if compile_expr(c)(e) == got[0][dim]]
            if seen and len(left) <= 1:
                return left[0] if left else None
        return None

    def _borrow(
        self, samples: list[Sample], values: list[int], what: str, loop: str | None
    ) -> str | None:
        """A tensor seen at too few points to tell what its size follows: the expression of
        a dimension already solved that gives the same values, its own module's first."""
        from .expr import compile_expr

        module = what.split(" dim ")[0].rsplit(".", 1)[0]
        ranked = sorted(
            self.solved,
            key=lambda kv: (not kv[0].startswith(module + "."), -_common(kv[0], module)),
        )
        envs = []
        for pi, o in samples:
            e = _nest(self.envs[pi])
            if loop is not None and o:
                e[loop] = o[-1]
            envs.append(e)
        for _, text in ranked:
            fn = compile_expr(text)
            try:
                if all(fn(e) == v for e, v in zip(envs, values, strict=True)):
                    return text
            except Exception:
                continue
        # else the one config field that has these values (none or several: no answer)
        fields = [
            f
            for f in self.envs[0]
            if all(
                _numeric(self.envs[pi].get(f)) and self.envs[pi].get(f) == v
                for (pi, _), v in zip(samples, values, strict=True)
            )
        ]
        return fields[0] if len(fields) == 1 else None

    def _delta(self, pi: int, ref: int) -> set[str]:
        if ref == 0:
            return self.delta[pi]
        a, b = self.envs[pi], self.envs[ref]
        return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}

    def _trusted(self, samples: list[Sample]) -> bool:
        """Were the samples seen at enough points for a constant to be believed?"""
        needed = {p.label for p in self.points[1:] if "+" not in p.label}
        covered = {self.points[pi].label.rpartition("+")[2] for pi, _ in samples}
        return len(needed - covered) <= 1

    def _note(self, text: str, names: Iterable[str]) -> None:
        for a in names:
            base = a.split("[")[0]
            if re.search(rf"(?<![\w.]){re.escape(base)}(?![\w])", text):
                self.used.add(base)

    def _string_delta(
        self, pi: int, ref: int, pattern: dict[int, set[tuple[int, ...]]]
    ) -> set[str]:
        """The fields that changed at point ``pi``; for a point sweeping a field from a string
        point (:func:`string_points`, ``encoder_attention_type+d_ff``) where the tensor is
        absent as at that string point, only the string point's (the sweep's other field did
        not change where it exists: longt5's relative_attention_bias is not ``i % d_ff == 0``)."""
        head = self.points[pi].label.split("+")[0]
        if "+" in self.points[pi].label:
            for pj, p in enumerate(self.points):
                if (
                    "=" in p.label
                    and "+" not in p.label
                    and fname(p.varied or ()) == head
                    and pattern.get(pj, set()) == pattern.get(pi, set())
                    and self._delta(pj, ref) <= self._delta(pi, ref)
                ):
                    return self._delta(pj, ref)
        return self._delta(pi, ref)

    def cond(self, samples: list[Sample], exists: list[bool], what: str, loop: str | None) -> str:
        if all(exists):
            return ""
        # fields that may explain it: those changed where the pattern changed
        pattern: dict[int, set[tuple[int, ...]]] = {}
        for (pi, o), e in zip(samples, exists, strict=True):
            if not e:
                pattern.setdefault(pi, set()).add(o)
        ref = min(pi for pi, _ in samples)
        base = pattern.get(ref, set())
        dep: set[str] = set()
        for pi in {pi for pi, _ in samples}:
            if pi != ref and pattern.get(pi, set()) != base:
                dep |= self._string_delta(pi, ref, pattern)
        grow = True
        while grow:
            grow = False
            for p, d in zip(self.points, self.delta, strict=True):
                if "+" not in p.label and d & dep and not d <= dep:
                    dep |= d
                    grow = True
        flat: list[dict[str, Any]] = []
        for pi, o in samples:
            one = dict(self.envs[pi])
            if loop is not None and o:
                one[loop] = o[-1]
            flat.append(one)
        text = solve_condition(flat, exists, sorted(dep), loop)
        if text is None:
            # with a condition solved for a sibling (in the same repeat) as a candidate
            known = [c for w, c in self.conds if w.rsplit(".", 1)[0] == what.rsplit(".", 1)[0]]
            known += [c for w, c in self.conds if c not in known and _loop_of(c) == loop]
            # and a last index that is inclusive (ernie's moe_layer_end_index)
            ints = [f for f in sorted(dep) if all(_int_valued(e.get(f)) for e in flat)]
            if loop is not None:
                known += [t for f in ints for t in (f"{loop} <= {f}", f"{loop} > {f}")]
            if known:
                text = solve_condition(flat, exists, sorted(dep), loop, known)
                if text is not None:
                    dep |= {f for c in known if c in text for f in _names(c)}
            if text is None and known:
                # where it is absent may be the simpler statement (a dense MLP: every layer
                # that is not an MoE layer, itself three conditions)
                absent = solve_condition(flat, [not e for e in exists], sorted(dep), loop, known)
                if absent:
                    text = f"not ({absent})"
                    dep |= {f for c in known if c in absent for f in _names(c)}
        if text is None:
            raise DeriveError(f"no condition for {what} over {sorted(dep)}")
        self._note(text, dep)
        self.conds.append((what, text))
        return text

    # -- the tree -------------------------------------------------------------------------
    def derive(self) -> dict[str, Any]:
        self.rep = self._stems()
        inst: dict[str, dict[int, dict[tuple[int, ...], str]]] = {}
        order: list[str] = []
        for pi, p in enumerate(self.points):
            for name in p.saved.tensors:
                tpl, idx = self._template(name)
                if tpl not in inst:
                    inst[tpl] = {}
                    order.append(tpl)
                inst[tpl].setdefault(pi, {})[idx] = name
        self.inst = inst
        # repeat nodes by key (template prefix ending in '#'): instances per point
        nodes: dict[str, dict[int, set[tuple[int, ...]]]] = {}
        for tpl, per in inst.items():
            toks = tpl.split(".")
            hashes = [pos for pos, t in enumerate(toks) if t == "#"]
            for k, pos in enumerate(hashes):
                key = ".".join(toks[: pos + 1])
                for pi, idxs in per.items():
                    nodes.setdefault(key, {}).setdefault(pi, set()).update(i[: k + 1] for i in idxs)
        self.nodes = nodes
        root: list[dict[str, Any]] = []
        made: dict[str, list[dict[str, Any]]] = {"": root}
        for tpl in order:
            toks = tpl.split(".")
            hashes = [pos for pos, t in enumerate(toks) if t == "#"]
            container, start = root, 0
            for k, pos in enumerate(hashes):
                key = ".".join(toks[: pos + 1])
                if key not in made:
                    entry = self.repeat(key, k, ".".join(toks[start:pos]))
                    container.append(entry)
                    made[key] = entry["tensors"]
                container, start = made[key], pos + 1
            container.append(self.tensor(tpl, len(hashes), ".".join(toks[start:])))
        return {"tensors": root}

    def _outer(self, depth: int, key_prefix: str | None) -> list[Sample]:
        """Every (point, outer indices) where the enclosing repeat (``key_prefix``) exists."""
        out: list[Sample] = []
        for pi in range(len(self.points)):
            if depth == 0 or key_prefix is None:
                out.append((pi, ()))
                continue
            for o in sorted(self.nodes[key_prefix].get(pi, set())):
                out.append((pi, o))
        return out

    def _parent_key(self, key: str) -> str | None:
        toks = key.split(".")
        hashes = [pos for pos, t in enumerate(toks[:-1]) if t == "#"]
        return ".".join(toks[: hashes[-1] + 1]) if hashes else None

    def repeat(self, key: str, depth: int, rel: str) -> dict[str, Any]:
        var = VARS[depth]
        outer_loop = VARS[depth - 1] if depth else None
        parent = self._parent_key(key)
        samples = self._outer(depth, parent)
        exists, counts, starts, ok = [], [], [], []
        for pi, o in samples:
            own = sorted(i[-1] for i in self.nodes[key].get(pi, set()) if i[:-1] == o)
            exists.append(bool(own))
            if own:
                if own != list(range(own[0], own[-1] + 1)):
                    raise DeriveError(f"{key}: indices {own[:10]} are not a range")
                ok.append((pi, o))
                counts.append(len(own))
                starts.append(own[0])
        when = self.cond(samples, exists, key, outer_loop)
        count = self.expr(ok, counts, f"count of {key}", outer_loop)
        start = self.expr(ok, starts, f"start of {key}", outer_loop)
        entry: dict[str, Any] = {"repeat": var, "count": count}
        if start != "0":
            entry["start"] = start
        entry["prefix"] = (rel + "." if rel else "") + "{" + var + "}."
        if when:
            entry["when"] = when
        entry["tensors"] = []
        return entry

    def tensor(self, tpl: str, depth: int, rel: str) -> dict[str, Any]:
        per = self.inst[tpl]
        toks = tpl.split(".")
        hashes = [pos for pos, t in enumerate(toks) if t == "#"]
        key = ".".join(toks[: hashes[-1] + 1]) if hashes else None
        loop = VARS[depth - 1] if depth else None
        samples = self._outer(depth, key)
        exists = [o in per.get(pi, {}) for pi, o in samples]
        when = self.cond(samples, exists, tpl, loop)
        there = [s for s, e in zip(samples, exists, strict=True) if e]
        shapes = [self.points[pi].saved.tensors[per[pi][o]][0] for pi, o in there]
        dtypes = {self.points[pi].saved.tensors[per[pi][o]][1] for pi, o in there}
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise DeriveError(f"{tpl}: rank varies {sorted(ranks)}")
        dims = [
            self.expr(there, [s[d] for s in shapes], f"{tpl} dim {d}", loop)
            for d in range(ranks.pop())
        ]
        self.solved += [(tpl, d) for d in dims if not d.isdigit()]
        # a scalar (an activation's learned beta) is the empty tuple
        entry: dict[str, Any] = {"name": rel, "shape": ", ".join(dims) if dims else "()"}
        if when:
            entry["when"] = when
        if len(dtypes) != 1:
            raise DeriveError(f"{tpl}: dtype varies {sorted(dtypes)}")
        dt = dtypes.pop()
        if dt != "BF16":
            entry["dtype"] = dt
        elif self.fp16 is not None:
            pi, o = there[0]
            if pi == 0:
                half = self.fp16.tensors.get(per[0][o])
                if half is not None and half[1] != "F16":
                    entry["fp16_dtype"] = half[1]
        # ties: absent where a tie made it absent
        absent = [s for s, e in zip(samples, exists, strict=True) if not e]
        if absent and when:
            twins = []
            for pi, o in absent:
                name = _render(tpl, o)
                twin = self.points[pi].saved.tied.get(name)
                twins.append(twin)
            if twins and all(twins):
                first_o = absent[0][1]
                twin = twins[0]
                assert twin is not None
                prefix = _render(tpl, first_o)[: -len(rel)] if rel else ""
                if twin.startswith(prefix) and all(
                    t == _render(tpl, o)[: -len(rel)] + twin[len(prefix) :] if rel else True
                    for t, (_, o) in zip(twins, absent, strict=True)
                ):
                    entry["tied_to"] = twin[len(prefix) :]
        # linear modules (for the quantization overlays)
        section = _section(tpl)
        if section != "text":
            entry["section"] = section
        name0 = per[there[0][0]][there[0][1]]
        saved0 = self.points[there[0][0]].saved
        module, _, leaf = name0.rpartition(".")
        rel_module = rel.rpartition(".")[0]
        is_linear = module in saved0.linear or (
            ".experts." in name0 and leaf == "weight" and len(shapes[0]) == 2
        )
        if is_linear and leaf in ("weight", "bias") and rel_module:
            last = rel_module.rsplit(".", 1)[-1]
            if last in ("lm_head", "embed_out", "output") and depth == 0:
                kind = "head"
            elif last in ("gate", "router", "wg") or rel_module.endswith("router.layer"):
                kind = "router"
            elif section != "text":
                kind = "vision_linear"
            else:
                kind = "linear"
            entry["kind"] = kind
            entry["module"] = rel_module
            entry["role"] = leaf
            if leaf == "weight":
                entry["out"], entry["in"] = dims[0], dims[1]
        return entry

    # -- config fields the spec reads -----------------------------------------------------
    def defaults_and_lets(self) -> tuple[dict[str, Any], dict[str, str], list[str]]:
        """Defaults of the fields used (the class defaults); ``let`` fallbacks for derived
        ones; required ones."""
        base = flat_env(self.default.env)
        defaults: dict[str, Any] = {}
        lets: dict[str, str] = {}
        required: list[str] = []
        for f in sorted(self.used):
            if f not in base and f not in self.derived:
                continue
            if f in self.derived:
                samples = [
                    (pi, ())
                    for pi, p in enumerate(self.points)
                    if "+" not in p.label and (p.varied is None or fname(p.varied) != f)
                ]
                values = [self.envs[pi].get(f) for pi, _ in samples]
                text = None
                if all(_numeric(v) for v in values):
                    saved_used = set(self.used)
                    try:
                        atoms = self._atoms(list(samples), values)
                        atoms.pop(f, None)
                        text = synthesize(atoms, tuple(values))
                    finally:
                        self.used = saved_used
                if text is not None:
                    lets[f] = f"{f} if {f} is not None else {text}"
                    self._note(text, atoms)
                    _set(defaults, f, None)
                    continue
                required.append(f)
                continue
            _set(defaults, f, base.get(f))
        return defaults, lets, required


def _squeezed(
    atoms: dict[str, Vec], target: Vec, bools: dict[str, Vec], loop: str | None
) -> tuple[dict[str, Vec], Vec, dict[str, Vec]]:
    """The samples with one row kept of those that agree on every atom but the loop variable
    and on every flag, and the loop variable left out, when they agree on the target too (a
    width the same in every layer at a point: the search runs over one row a point instead
    of one a layer); else all of them, unchanged."""
    keys = sorted(k for k in atoms if k != loop)
    flags = sorted(bools)
    first: dict[tuple[Any, ...], int] = {}
    keep: list[int] = []
    for j, t in enumerate(target):
        row = tuple(atoms[k][j] for k in keys) + tuple(bools[k][j] for k in flags)
        if row in first:
            if target[first[row]] != t:
                return atoms, target, bools  # the loop variable matters
            continue
        first[row] = j
        keep.append(j)
    return (
        {k: tuple(atoms[k][j] for j in keep) for k in keys},
        tuple(target[j] for j in keep),
        {k: tuple(bools[k][j] for j in keep) for k in flags},
    )


def _at(key: str, env: dict[str, Any], o: tuple[int, ...], loop: str | None) -> Any:
    """The value of the atom ``key`` (a field, ``len(field)``, ``field[i]``, the loop
    variable) for a config (flat) at loop indices ``o``."""
    if key == loop:
        return o[-1] if o else None
    if key.startswith("len(") and key.endswith(")"):
        lst = env.get(key[4:-1])
        return len(lst) if isinstance(lst, list) else 0
    if loop is not None and key.endswith(f"[{loop}]"):
        lst = env.get(key[: -len(loop) - 2])
        k = o[-1] if o else None
        return lst[k] if isinstance(lst, list) and k is not None and k < len(lst) else None
    return env.get(key)


def _with_field(kwargs: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """``kwargs`` (config arguments) with the field ``dotted`` (``text_config.x``) set."""
    out = copy.deepcopy(kwargs)
    _set(out, dotted, value)
    return out


def _int_valued(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _names(text: str) -> set[str]:
    from .expr import compile_expr

    return set(compile_expr(text).names)


def _loop_of(text: str) -> str | None:
    """The loop variable a condition reads (a single letter of :data:`VARS`), if any."""
    found = [n for n in _names(text) if len(n) == 1 and n in VARS]
    return found[0] if len(found) == 1 else None


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("."), b.split("."), strict=False):
        if x != y:
            break
        n += 1
    return n


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    head, _, rest = dotted.partition(".")
    if rest:
        d.setdefault(head, {})[rest] = value
    else:
        d[head] = value


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in flat.items():
        _set(out, k, v)
    return out


def _render(tpl: str, idx: tuple[int, ...]) -> str:
    it = iter(idx)
    return ".".join(str(next(it)) if t == "#" else t for t in tpl.split("."))


# -- repeats over indices that are not a range -------------------------------------------------
#
# An ``nn.Sequential`` of weighted and weightless items (phi4_multimodal's audio subsampling:
# ``[conv, act, (dw_conv, pw_conv, act) * n]``) saves indices such as [0, 2, 3, 5, 6]. They are
# split into classes: the items of one kind (the names and shapes under them) whose index has
# the same residue modulo a period ``p``; in each class the indices must step by ``p``. The
# period giving the fewest classes at every point wins (the smallest on a tie). Each class is
# then derived as an ordinary repeat over ``k = index // p`` (its names are rewritten to
# ``conv~p3r2c0.k`` for the derivation) and written back with ``conv.{3 * k + 2}`` as its name:
# the runtime renders ``{...}`` in a name as an expression already, so the data format is
# unchanged.

_STRIDE_MARK = re.compile(r"~p(\d+)r(\d+)c(\d+)\.(?:\{(\w+)\}|(\d+))(?=\.|$)")
MAX_PERIOD = 8


def _index_sets(
    tensors: dict[str, tuple[tuple[int, ...], str]],
) -> dict[str, dict[str, dict[int, tuple[Any, ...]]]]:
    """stem ('#' for every index) -> the stem with its indices -> index -> what lies under it
    (names after the index, with shapes)."""
    out: dict[str, dict[str, dict[int, list[Any]]]] = {}
    for name, (shape, _) in tensors.items():
        toks = name.split(".")
        for pos in range(1, len(toks)):
            if _NUM.match(toks[pos]):
                stem = ".".join("#" if _NUM.match(t) else t for t in toks[:pos])
                at = out.setdefault(stem, {}).setdefault(".".join(toks[:pos]), {})
                at.setdefault(int(toks[pos]), []).append((".".join(toks[pos + 1 :]), shape))
    return {
        stem: {c: {i: tuple(sorted(v)) for i, v in idx.items()} for c, idx in per.items()}
        for stem, per in out.items()
    }


def _stride_classes(
    per: dict[str, dict[int, tuple[Any, ...]]], p: int
) -> dict[tuple[str, int], tuple[int, int]] | None:
    """(stem with indices, index) -> (residue, class) with period ``p``, or None when a class
    does not step by ``p``. Within a residue, the kinds of item are numbered in the order
    their first index comes."""
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for concrete, idx in per.items():
        by_res: dict[int, dict[tuple[Any, ...], list[int]]] = {}
        for i in sorted(idx):
            by_res.setdefault(i % p, {}).setdefault(idx[i], []).append(i)
        for r, kinds in by_res.items():
            for c, members in enumerate(kinds.values()):
                if members != list(range(members[0], members[-1] + 1, p)):
                    return None
                for i in members:
                    out[(concrete, i)] = (r, c)
    return out


def strides(saves: Sequence[Saved]) -> dict[str, int]:
    """stem -> period, for each stem whose indices vary, are not a range at some save, and
    are explained by classes of one period at every save (:func:`_stride_classes`)."""
    sets = [_index_sets(s.tensors) for s in saves]
    out: dict[str, int] = {}
    for stem in sorted({st for one in sets for st in one}):
        pers = [one[stem] for one in sets if stem in one]
        sets_seen = [tuple(sorted(idx)) for per in pers for idx in per.values()]
        if all(f == sets_seen[0] for f in sets_seen):
            continue  # the same indices everywhere: literal names, as the derivation keeps them
        if all(
            sorted(idx) == list(range(min(idx), max(idx) + 1))
            for per in pers
            for idx in per.values()
        ):
            continue
        if _NUM.match(stem.rpartition(".")[2]):
            continue  # the item before the index is itself an index: not renamed
        best: tuple[int, int] | None = None
        for p in range(2, MAX_PERIOD + 1):
            found = [_stride_classes(per, p) for per in pers]
            if any(f is None for f in found):
                continue
            n = len({rc for f in found if f is not None for rc in f.values()})
            if best is None or n < best[0]:
                best = (n, p)
        if best is not None:
            out[stem] = best[1]
    return out


def strided(saved: Saved, periods: dict[str, int]) -> Saved:
    """``saved`` with the names of strided items rewritten for the derivation:
    ``conv.5.weight`` -> ``conv~p3r2c0.1.weight`` (period 3, residue 2, class 0, k = 5 // 3)."""
    if not periods:
        return saved
    classes: dict[tuple[str, int], tuple[int, int]] = {}
    for stem, per in _index_sets(saved.tensors).items():
        if stem in periods:
            found = _stride_classes(per, periods[stem])
            if found is None:
                raise DeriveError(f"{stem}: indices not explained by period {periods[stem]}")
            classes.update(found)

    def rename(name: str) -> str:
        toks = name.split(".")
        out = list(toks)
        for pos in range(1, len(toks)):
            if not _NUM.match(toks[pos]):
                continue
            stem = ".".join("#" if _NUM.match(t) else t for t in toks[:pos])
            if stem in periods:
                r, c = classes[(".".join(toks[:pos]), int(toks[pos]))]
                p = periods[stem]
                out[pos - 1] = f"{toks[pos - 1]}~p{p}r{r}c{c}"
                out[pos] = str(int(toks[pos]) // p)
        return ".".join(out)

    return Saved(
        {rename(n): v for n, v in saved.tensors.items()},
        {rename(n): rename(t) for n, t in saved.tied.items()},
        {rename(n): b for n, b in saved.linear.items()},
        saved.env,
    )


def unstrided(value: Any) -> Any:
    """Spec entries with the names :func:`strided` rewrote written back: ``conv~p3r2c0.{j}``
    -> ``conv.{3 * j + 2}``, ``conv~p3r0c0.1`` -> ``conv.3``."""
    if isinstance(value, list):
        return [unstrided(v) for v in value]
    if isinstance(value, dict):
        return {k: unstrided(v) for k, v in value.items()}
    if not isinstance(value, str) or "~p" not in value:
        return value

    def back(m: re.Match[str]) -> str:
        p, r = int(m.group(1)), int(m.group(2))
        if m.group(5) is not None:
            return f".{p * int(m.group(5)) + r}"
        var = m.group(4)
        return "." + "{" + (f"{p} * {var} + {r}" if r else f"{p} * {var}") + "}"

    return _STRIDE_MARK.sub(back, value)


def stride_points(
    points: list[Point], periods: dict[str, int], build: Callable[[dict[str, Any]], Saved]
) -> list[Point]:
    """More points for the fields that change the indices of a strided repeat: each such
    field at its other :func:`variations` too (two values of a field cannot tell the count
    of a loop from a power of two, ``int(log2(f)) - 1``, from a quotient, ``f // 4``)."""
    base = _index_sets(points[0].saved.tensors)
    out: list[Point] = []
    for p in points[1:]:
        if p.varied is None or "+" in p.label:
            continue
        mine = _index_sets(p.saved.tensors)
        if all(
            {c: sorted(i) for c, i in base.get(st, {}).items()}
            == {c: sorted(i) for c, i in mine.get(st, {}).items()}
            for st in periods
        ):
            continue
        seen = {repr(get(q.saved.env, p.varied)) for q in points if q.varied == p.varied}
        seen.add(repr(get(points[0].saved.env, p.varied)))
        for value in variations(get(points[0].saved.env, p.varied), points[0].saved.env):
            if repr(value) in seen:
                continue
            kwargs = _with_value(p.kwargs, p.varied, value)
            try:
                saved = build(kwargs)
            except Exception:
                continue
            out.append(Point(p.label, kwargs, saved, p.varied))
    return out


def _with_value(kwargs: dict[str, Any], path: Path_, value: Any) -> dict[str, Any]:
    """``kwargs`` with the (dotted) field ``path`` set to ``value``."""
    out = dict(kwargs)
    holder = out
    for key in path[:-1]:
        inner = holder.get(key)
        holder[key] = dict(inner) if isinstance(inner, dict) else {}
        holder = holder[key]
    holder[path[-1]] = value
    return out


def _strided_build(
    build: Callable[[dict[str, Any]], Saved], periods: dict[str, int], originals: dict[int, Saved]
) -> Callable[[dict[str, Any]], Saved]:
    """``build`` whose saves come renamed (:func:`strided`); ``originals`` keeps each as saved."""

    def renamed_build(kwargs: dict[str, Any]) -> Saved:
        saved = build(kwargs)
        renamed = strided(saved, periods)
        originals[id(renamed)] = saved
        return renamed

    return renamed_build


def solve(
    points: list[Point],
    fp16: Saved | None,
    default: Saved,
    build: Callable[[dict[str, Any]], Saved] | None = None,
) -> dict[str, Any]:
    periods = strides([p.saved for p in points])
    originals: dict[int, Saved] = {}
    more: dict[str, Saved] = {}  # the saves of stride_points, verified as the extra ones are
    derived_from = list(points)
    if periods and build is not None:
        for p in stride_points(points, periods, build):
            derived_from.append(p)
            more[f"{p.label}={get(p.saved.env, p.varied or ())!r}"] = p.saved
        periods = strides([p.saved for p in derived_from])
    if periods:
        derived_from = [
            dataclasses.replace(p, saved=strided(p.saved, periods)) for p in derived_from
        ]
        fp16 = strided(fp16, periods) if fp16 is not None else None
        if build is not None:
            build = _strided_build(build, periods, originals)
    d = Deriver(derived_from, fp16, default, build)
    spec = d.derive()
    if periods:
        spec["tensors"] = unstrided(spec["tensors"])

    # biases: their module's in/out come from the weight entry
    def walk(entries: list[dict[str, Any]], prefix: str) -> None:
        mods: dict[str, dict[str, Any]] = {}
        for e in entries:
            if "repeat" in e:
                walk(e["tensors"], prefix + e["prefix"])
            elif e.get("role") == "weight":
                mods[e["module"]] = e
        for e in entries:
            if e.get("role") == "bias" and "out" not in e:
                w = mods.get(e["module"])
                if w is None:
                    for k in ("kind", "module", "role"):
                        e.pop(k, None)
                else:
                    e["out"], e["in"] = w["out"], w["in"]

    walk(spec["tensors"], "")
    defaults, lets, required = d.defaults_and_lets()
    # a second pass for fields the lets read
    defaults2, _, _ = d.defaults_and_lets()
    for k, v in defaults2.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                defaults.setdefault(k, {}).setdefault(k2, v2)
        else:
            defaults.setdefault(k, v)
    requires = {}
    for sub in SUBCONFIGS:
        mt = get(points[0].saved.env, (sub, "model_type"))
        if isinstance(mt, str) and any(u.startswith(sub + ".") for u in d.used):
            requires[f"{sub}.model_type"] = mt
            defaults.setdefault(sub, {})["model_type"] = mt
    return {
        "defaults": defaults,
        "let": lets,
        "required": required,
        "requires": requires,
        "points": [p.label for p in points] + sorted([*d.extra, *more]),
        "tensors": spec["tensors"],
        "extra_saves": {**{k: originals.get(id(v), v) for k, v in d.extra.items()}, **more},
    }


def point_config(env: dict[str, Any], dtype: str = "bfloat16") -> dict[str, Any]:
    """A point's config as transformers writes it beside the weights."""
    config: dict[str, Any] = json.loads(json.dumps(env, default=str))
    config["dtype"] = dtype
    return config


def verify(
    data: dict[str, Any],
    saves: Iterable[tuple[str, Saved]],
    dtype: str = "BF16",
    layout: str | None = None,
) -> list[str]:
    """Differences between the spec in ``data`` (in ``layout``; by default its first) and
    each save (empty: they agree exactly)."""
    from . import _build
    from .derived import spec_from_data

    spec = spec_from_data(data)
    problems: list[str] = []
    torch_names = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
    for label, saved in saves:
        config = point_config(saved.env, torch_names[dtype])
        try:
            m = _build(spec, config, layout)
        except Exception as e:
            problems.append(f"{label}: {type(e).__name__}: {e}")
            continue
        want = {n: (t.shape, t.dtype) for n, t in m.tensors.items()}
        if layout is not None:
            label = f"{label}, layout {layout}"
        if want != saved.tensors:
            missing = sorted(set(saved.tensors) - set(want))
            extra = sorted(set(want) - set(saved.tensors))
            wrong = sorted(n for n in set(want) & set(saved.tensors) if want[n] != saved.tensors[n])
            problems.append(
                f"{label}: spec lacks {missing[:3]} ({len(missing)}), has extra {extra[:3]} "
                f"({len(extra)}), differs on {[(n, want[n], saved.tensors[n]) for n in wrong[:2]]} "
                f"({len(wrong)})"
            )
    return problems


_HIDDEN_KWARG = re.compile(r"""kwargs\.(?:pop|get)\(\s*["'](\w+)["']\s*,\s*(\d+)\s*\)""")


def derive_fill(env: Env, model_type: str, field: str) -> tuple[str, dict[str, Any]] | None:
    """How transformers fills in the per-layer list ``field`` when a config leaves it out,
    as an expression (``[A if cond else B for i in range(num_hidden_layers)]``) and the
    defaults it reads; None when sampling the config class cannot pin it down.

    The config class is built without ``field`` at many points: the layer count, each int
    field and each int keyword its ``__post_init__`` reads (``full_attention_interval``,
    popped, never stored) varied; the list it fills in is explained by a count field and a
    per-index condition from :func:`condition_library`, and the expression must give the
    very list at every point."""
    import inspect

    from .expr import compile_expr

    config_class = env.cauto.CONFIG_MAPPING[model_type]
    try:
        source = inspect.getsource(config_class.__post_init__)
    except (OSError, TypeError, AttributeError):
        source = ""
    hidden = {k: int(v) for k, v in _HIDDEN_KWARG.findall(source)}
    default = env.config(model_type, {}).to_dict()
    if not isinstance(default.get(field), list):
        return None
    ints = [p[0] for p in fields_of(default) if len(p) == 1 and _int_valued(default.get(p[0]))]
    tries: list[dict[str, Any]] = [{}]
    for layers in (1, 2, 3, 5, 8, 12):
        tries.append({"num_hidden_layers": layers})
        for k in hidden:
            for v in (1, 2, 3, 5):
                tries.append({"num_hidden_layers": layers, k: v})
    for f in ints:
        for v in variations(default[f], default):
            tries.append({f: v})
    # lists of layer indices the class fills the list from (lfm2's full_attn_idxs, the
    # attention layers: a real LFM2 config.json gives them and no layer_types)
    indices = [
        p[0]
        for p in fields_of(default)
        if len(p) == 1
        and p[0] != field
        and isinstance(default.get(p[0]), list)
        and default[p[0]]
        and all(_int_valued(x) for x in default[p[0]])
    ]
    for f in indices:
        for v in variations(default[f], default):
            tries.append({f: v})
    rows: list[tuple[dict[str, Any], list[Any]]] = []
    seen: dict[str, list[Any]] = {}  # kwargs (as JSON) -> the list filled in there
    for kwargs in tries:
        try:
            cfg = env.config(model_type, kwargs).to_dict()
        except Exception:
            continue
        filled = cfg.get(field)
        if not isinstance(filled, list):
            return None
        seen[json.dumps(kwargs, sort_keys=True)] = filled
        flat = {k: v for k, v in cfg.items() if not isinstance(v, dict)}
        flat.pop(field, None)
        for k, v in hidden.items():
            flat[k] = kwargs.get(k, v)
        rows.append((flat, filled))
    if len(rows) < 4:
        return None
    counts = [
        f
        for f in [*ints, *hidden]
        if all(_int_valued(e.get(f)) and e.get(f) == len(lst) for e, lst in rows)
    ]
    if not counts:
        return None
    count = "num_hidden_layers" if "num_hidden_layers" in counts else counts[0]
    items = sorted({x for _, lst in rows for x in lst}, key=str)
    if not items or not all(isinstance(x, str) for x in items) or len(items) > 2:
        return None
    first = json.dumps(items[0])
    if len(items) == 1:
        text = f"[{first} for i in range({count})]"
    else:
        samples, exists = [], []
        for e, lst in rows:
            for i, x in enumerate(lst):
                samples.append({**e, "i": i})
                exists.append(x == items[0])
        fields = sorted(f for f in {*ints, *hidden, *indices} if f != "i")
        cond = solve_condition(samples, exists, fields, "i")
        if cond is None:
            return None
        text = f"[{first} if {cond} else {json.dumps(items[1])} for i in range({count})]"
    fn = compile_expr(text)
    for e, lst in rows:
        if fn(_nest(e)) != lst:
            return None
    used = fn.names - {"i"}
    # every field the fill reads must change the list when varied on its own (else it
    # only happens to agree: "i % hidden_size == 0" for a first dense layer)
    for f in used - {count}:
        changed = False
        for key, lst in seen.items():
            kw = json.loads(key)
            if f not in kw:
                continue
            ref = {k: v for k, v in kw.items() if k != f}
            other = seen.get(json.dumps(ref, sort_keys=True))
            if other is not None and other != lst:
                changed = True
                break
        if not changed:
            return None
    defaults = {k: (hidden[k] if k in hidden else default.get(k)) for k in sorted(used)}
    return f"{field} if {field} is not None else {text}", defaults


# -- older on-disk layouts: transformers' own conversion mapping ----------------------------

#: The layouts tried beside the one a fresh model saves, with what each is. Each is the name
#: set transformers' ``revert_weight_conversion`` gives the model's state dict under a list
#: of the family's conversions (``get_model_conversion_mapping``): all of them, PrefixChange
#: transforms included (``save_pretrained`` of a fresh model drops those: it cannot know the
#: prefix was there), or none (the model's own module names).
LAYOUT_CANDIDATES: dict[str, str] = {
    "legacy": (
        "the names transformers' conversion mapping was written to load: every renaming "
        "undone, PrefixChange prefixes kept (what a model loaded from such a checkpoint saves "
        "again)"
    ),
    "module-tree": "the model's own module names, as its state_dict() holds them",
    "module-tree-prefixed": (
        "the model's own module names with PrefixChange prefixes kept (a sub-model's older "
        "wrapper, e.g. model.vision_tower.vision_model.*)"
    ),
}


def _conversions(model: Any, add_legacy: bool = False) -> list[Any]:
    from transformers.conversion_mapping import get_model_conversion_mapping

    return list(get_model_conversion_mapping(model, None, None, add_legacy=add_legacy))


def _reverted(mu: Any, model: Any, state: dict[str, Any], conversions: list[Any] | None) -> Any:
    """``revert_weight_conversion`` of ``state`` as a model holding ``conversions`` (None: a
    fresh one) reverts it: on-disk name -> tensor."""
    if conversions is None:
        model.__dict__.pop("_weight_conversions", None)
    else:
        model._weight_conversions = conversions
    try:
        with warnings_off():
            return mu.revert_weight_conversion(model, dict(state))
    finally:
        model.__dict__.pop("_weight_conversions", None)


def load_problems(model: Any, names: Iterable[str]) -> list[str]:
    """What transformers' loader would not load of a checkpoint holding ``names`` (every
    conversion ``from_pretrained`` uses, legacy ones included; the same renaming calls, no
    tensor): names that land on no parameter, parameters no name lands on."""
    from transformers.core_model_loading import (
        WeightConverter,
        WeightRenaming,
        dot_natural_key,
        rename_source_key,
    )

    mapping = _conversions(model, add_legacy=True)
    renamings = [e for e in mapping if isinstance(e, WeightRenaming)]
    converters = [e for e in mapping if isinstance(e, WeightConverter)]
    meta = model.state_dict()
    prefix = model.base_model_prefix
    problems: list[str] = []
    landed: set[str] = set()
    for key in sorted(names, key=dot_natural_key):
        new, _ = rename_source_key(key, renamings, converters, prefix, meta)
        if new not in meta and key in meta:
            new, _ = rename_source_key(key, [], [], prefix, meta)
        if new in meta:
            landed.add(new)
        else:
            problems.append(f"{key} loads as {new}, no parameter of the model")
    problems += [f"no name loads {n}" for n in sorted(set(meta) - landed)]
    return problems


def prefix_rules(pairs: dict[str, str]) -> list[list[str]]:
    """``[canonical_prefix, on_disk_prefix]`` rules (longest canonical prefix first; the first
    that starts a name applies) that turn each key of ``pairs`` (every name, renamed or not)
    into its value: for each renamed name, the most general rule (the longest common tail of
    whole name components kept) that maps every name it starts to that name's value."""
    rules: set[tuple[str, str]] = set()
    for a, b in pairs.items():
        if a == b:
            continue
        pa, pb = a.split("."), b.split(".")
        common = 0
        while common < min(len(pa), len(pb)) and pa[-1 - common] == pb[-1 - common]:
            common += 1
        for k in range(common, -1, -1):
            head_a, head_b = pa[: len(pa) - k], pb[: len(pb) - k]
            dot = "." if k else ""  # k == 0: the whole name is the prefix
            src = ".".join(head_a) + dot if head_a else ""
            dst = ".".join(head_b) + dot if head_b else ""
            if all(v == dst + n[len(src) :] for n, v in pairs.items() if n.startswith(src)):
                rules.add((src, dst))
                break
    return [list(r) for r in sorted(rules, key=lambda r: (-len(r[0]), r))]


def apply_rules(rules: Sequence[Sequence[str]], name: str) -> str:
    """``name`` under ``rules`` (:meth:`pyaudit.manifest.spec.Layout.apply`'s semantics)."""
    for src, dst in rules:
        if name.startswith(src):
            return dst + name[len(src) :]
    return name


def _pairs(
    mu: Any, model: Any, state: dict[str, Any], conversions: list[Any]
) -> tuple[dict[str, str], str | None]:
    """Each parameter's name as a fresh save writes it -> as the layout of ``conversions``
    writes it (one parameter at a time), or a reason they do not pair one to one."""
    pairs: dict[str, str] = {}
    for name, t in state.items():
        try:
            a = _reverted(mu, model, {name: t}, None)
            b = _reverted(mu, model, {name: t}, conversions)
        except Exception as e:
            return {}, f"{name}: {type(e).__name__}: {e}".splitlines()[0][:200]
        if len(a) != len(b):
            return {}, (
                f"a WeightConverter splits or merges tensors: {name} is written as "
                f"{len(a)} tensor(s) ({next(iter(a))}...) in one layout, {len(b)} "
                f"({next(iter(b))}...) in the other"
            )
        for (na, ta), (nb, tb) in zip(a.items(), b.items(), strict=True):
            if tuple(ta.shape) != tuple(tb.shape):
                return {}, (
                    f"a WeightConverter changes shapes: {na} {list(ta.shape)} is written as "
                    f"{nb} {list(tb.shape)}"
                )
            pairs[na] = nb
    return pairs, None


def derive_layouts(
    env: Env, cls: type[Any], cfg: Any, fresh: Saved
) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, Saved]]:
    """The family's other healthy on-disk layouts, from its conversion mapping: those
    transformers loads onto every parameter and writes back unchanged after loading (a round
    trip), each as prefix renames of the fresh save's names (``fresh``). Returns the layouts
    (``{"name", "renames", "note", "loads_via"}``), the candidates left out and why, and each
    layout's save (to check the spec against)."""
    mu = env.mu
    model = env.build(cls, cfg)
    conversions = _conversions(model)
    if not conversions:
        return [], [], {}
    state = model.state_dict()
    seen = {frozenset(_reverted(mu, model, state, None))}
    layouts: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    saves: dict[str, Saved] = {}
    prefixes = [c for c in conversions if type(c).__name__ == "PrefixChange"]
    for name, conv in (
        ("legacy", conversions),
        ("module-tree", []),
        ("module-tree-prefixed", prefixes),
    ):
        if name == "module-tree-prefixed" and not prefixes:
            continue
        names = frozenset(_reverted(mu, model, state, conv))
        if names in seen:
            continue  # the same names as a layout already listed
        seen.add(names)
        problems = load_problems(model, names)
        if problems:
            reason = f"transformers does not load it: {problems[0]} ({len(problems)} such)"
            skipped.append({"name": name, "reason": reason})
            continue
        pairs, why = _pairs(mu, model, state, conv)
        if why is not None:
            skipped.append({"name": name, "reason": f"not a renaming of names: {why}"})
            continue
        probe = env.build(cls, cfg)
        used = worker._as_if_loaded_from(probe, names) or []
        saved = env.save(cls, cfg, loaded_from=names)
        rules = prefix_rules(pairs)
        inner = [r for r in rules if any(_NUM.match(c) for c in ".".join(r).split("."))]
        if inner:
            # one rule per layer: the renaming is inside the repeated blocks, not of a prefix
            reason = f"renames inside repeated blocks (e.g. {inner[0][0]}* -> {inner[0][1]}*)"
            skipped.append({"name": name, "reason": f"not a renaming of name prefixes: {reason}"})
            continue
        got = {apply_rules(rules, n): v for n, v in fresh.tensors.items()}
        if got != saved.tensors:
            differ = sorted(set(got) ^ set(saved.tensors))[:3]
            skipped.append(
                {"name": name, "reason": f"not a renaming of name prefixes (e.g. {differ})"}
            )
            continue
        layouts.append(
            {"name": name, "renames": rules, "note": LAYOUT_CANDIDATES[name], "loads_via": used}
        )
        saves[name] = saved
    return layouts, skipped, saves


def derive_family(
    env: Env, model_type: str, log: Callable[[str], None] = print, layouts: bool = True
) -> dict[str, Any]:
    """The spec data of ``model_type``, checked against every save it was derived from (with
    ``layouts``, its other on-disk layouts too: :func:`add_layouts`)."""
    cls = env.buildable_class(model_type)
    if cls is None:
        raise DeriveError("no causal-LM / image-text / seq2seq / speech / masked-LM class")
    defaults, filled = fill_defaults(env, model_type, cls)
    points, default = collect_points(env, model_type, cls, log, defaults)
    if not points[0].saved.tensors:
        raise DeriveError("save_pretrained wrote no tensor")
    try:
        fp16 = env.save(cls, env.config(model_type, points[0].kwargs), "float16")
    except Exception:
        fp16 = None
    spec = solve(
        points, fp16, default, lambda kwargs: env.save(cls, env.config(model_type, kwargs))
    )
    extra: dict[str, Saved] = spec.pop("extra_saves")
    for field in list(spec["required"]):
        # a per-layer list transformers fills in: computed the way it computes it, when
        # sampling its config class pins that down; else it stays required
        fill = derive_fill(env, model_type, field) if "." not in field else None
        if fill is not None:
            spec["required"].remove(field)
            spec["let"][field] = fill[0]
            spec["defaults"][field] = None
            for k, v in fill[1].items():
                spec["defaults"].setdefault(k, v)
    for dotted in filled:
        # transformers builds no model from a config leaving it null: such a config is
        # refused, naming it, as one lacking a field the spec cannot compute
        _set(spec["defaults"], dotted, None)
        if dotted not in spec["required"]:
            spec["required"].append(dotted)
    data = {
        "schema": SCHEMA,
        "model_type": model_type,
        "architecture": cls.__name__,
        "derived_from": env.versions,
        **({"defaults_filled": filled} if filled else {}),
        **spec,
    }
    saves = [("class defaults", default)] + [(p.label, p.saved) for p in points]
    saves += sorted(extra.items())
    problems = verify(data, saves)
    if fp16 is not None:
        problems += verify(data, [("default, float16", fp16)], "F16")
    if problems:
        raise DeriveError("derived spec does not reproduce the saves: " + "; ".join(problems[:3]))
    if not layouts:
        return data
    return add_layouts(env, data, cls, points[0].kwargs, points[0].saved, default)


def class_defaults(env: Env, data: dict[str, Any]) -> dict[str, Any]:
    """The config arguments of a generated file's class-default point: none, or the fields
    its ``defaults_filled`` records (:func:`fill_defaults`)."""
    filled = data.get("defaults_filled") or {}
    values = {k: v["value"] for k, v in filled.items()}
    return filled_kwargs(env, str(data["model_type"]), values) if values else {}


def add_layouts(
    env: Env,
    data: dict[str, Any],
    cls: type[Any],
    base: dict[str, Any],
    base_saved: Saved | None = None,
    default: Saved | None = None,
) -> dict[str, Any]:
    """``data`` with the family's other healthy on-disk layouts (:func:`derive_layouts`),
    derived at the class defaults and at the ``base`` point, which must agree, and each
    checked against what transformers saves in it at both."""
    model_type = str(data["model_type"])
    out = {k: v for k, v in data.items() if k not in ("layouts", "layouts_skipped", "tensors")}
    checks: list[tuple[str, dict[str, Saved]]] = []
    found: list[tuple[list[dict[str, Any]], list[dict[str, str]]]] = []
    first = class_defaults(env, data)
    for label, kwargs, saved in (("class defaults", first, default), ("base", base, base_saved)):
        cfg = env.config(model_type, kwargs)
        fresh = saved if saved is not None else env.save(cls, cfg)
        lays, skipped, saves = derive_layouts(env, cls, cfg, fresh)
        found.append((lays, skipped))
        checks.append((label, saves))
    (lays, skipped), (lays_b, _) = found
    if [(x["name"], x["renames"]) for x in lays] != [(x["name"], x["renames"]) for x in lays_b]:
        raise DeriveError(
            f"layouts differ between the class defaults {[x['name'] for x in lays]} and the "
            f"base point {[x['name'] for x in lays_b]}"
        )
    for x in list(skipped):
        if x["name"] == "module-tree" and "WeightConverter" in x["reason"]:
            own = _own_entries(env, model_type, data)
            if isinstance(own, str):
                x["reason"] += f"; its own entries not derived: {own}"
            else:
                lays.append({"name": "module-tree", "note": MODULE_TREE_OWN, "tensors": own})
                skipped.remove(x)
    if lays:
        out["layouts"] = lays
    if skipped:
        out["layouts_skipped"] = skipped
    out["tensors"] = data["tensors"]
    problems: list[str] = []
    for label, saves in checks:
        for name, saved in saves.items():
            problems += verify(out, [(label, saved)], layout=name)
    if any("tensors" in x for x in lays):
        env.module_names = True
        try:
            for label, kwargs in (("class defaults", first), ("base", base)):
                saved = env.save(cls, env.config(model_type, kwargs))
                problems += verify(out, [(label, saved)], layout="module-tree")
        finally:
            env.module_names = False
    if problems:
        raise DeriveError("derived layouts do not reproduce the saves: " + "; ".join(problems[:3]))
    return out


MODULE_TREE_OWN = (
    "the model's own module names, as its state_dict() holds them (a plain save of it): "
    "transformers' WeightConverters stack per-expert tensors here, so names and shapes differ "
    "from the default layout; its entries are derived from saves in it, as the default's are"
)


def _own_entries(env: Env, model_type: str, data: dict[str, Any]) -> list[dict[str, Any]] | str:
    """The module-tree layout's own tensor entries (its saves explained at every point, as
    :func:`derive_family` explains the default's), or why not: they must read the same config
    fields, defaults and conditions as the family's default entries."""
    env.module_names = True
    try:
        own = derive_family(env, model_type, log=lambda s: None, layouts=False)
    except Exception as e:
        return f"{type(e).__name__}: {e}".splitlines()[0][:200]
    finally:
        env.module_names = False
    keys = ("defaults", "let", "required", "requires", "architecture")
    differ = [k for k in keys if own.get(k) != data.get(k)]
    if differ:
        return f"they read other config fields ({', '.join(differ)} differ)"
    tensors: list[dict[str, Any]] = own["tensors"]
    return tensors


def relayout(env: Env, model_type: str, path: Path) -> dict[str, Any]:
    """The committed data of ``model_type`` (at ``path``) with its layouts derived again:
    what :func:`derive_family` writes when the tensor entries have not changed."""
    data = json.loads(path.read_text())
    if data.get("derived_from") != env.versions:
        raise DeriveError(f"{path.name} was derived from {data.get('derived_from')}, not this")
    cls = getattr(env.transformers, data["architecture"])
    default, base_kwargs = base_point(env, model_type, cls, class_defaults(env, data))
    return add_layouts(env, data, cls, base_kwargs, default=default)


def dump(data: dict[str, Any]) -> str:
    """The file's text: one entry a line, nested repeats indented (readable in a diff)."""
    head = {k: v for k, v in data.items() if k != "tensors"}
    lines = ["{"]
    for k, v in head.items():
        if k == "layouts" and any("tensors" in x for x in v):
            lines.append('  "layouts": [')
            for n, lay in enumerate(v):
                comma = "," if n < len(v) - 1 else ""
                if "tensors" not in lay:
                    lines.append(f"    {json.dumps(lay, sort_keys=True)}{comma}")
                    continue
                rest = {a: b for a, b in sorted(lay.items()) if a != "tensors"}
                lines.append(f'    {json.dumps(rest)[:-1]}, "tensors": [')
                lines += _dump_entries(lay["tensors"], "      ")
                lines.append(f"    ]}}{comma}")
            lines.append("  ],")
            continue
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)},")
    lines.append('  "tensors": [')
    lines += _dump_entries(data["tensors"], "    ")
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dump_entries(entries: list[dict[str, Any]], pad: str) -> list[str]:
    out: list[str] = []
    for n, e in enumerate(entries):
        comma = "," if n < len(entries) - 1 else ""
        if "repeat" in e:
            head = {k: v for k, v in e.items() if k != "tensors"}
            text = json.dumps(head)[:-1]
            out.append(f'{pad}{text}, "tensors": [')
            out += _dump_entries(e["tensors"], pad + "  ")
            out.append(f"{pad}]}}{comma}")
        else:
            out.append(f"{pad}{json.dumps(e)}{comma}")
    return out


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    import signal

    def fire(signum: int, frame: Any) -> None:
        raise _Timeout(f"gave up after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def candidates(env: Env) -> list[str]:
    """Every model type with a class in one of :data:`AUTO_ORDER`'s tables."""
    names: set[str] = set()
    for table in AUTO_ORDER:
        names |= set(getattr(env.auto, table, {}))
    return sorted(n for n in names if n in env.cauto.CONFIG_MAPPING_NAMES)


def _report(report: Path, failures: dict[str, str], tried: Sequence[str]) -> None:
    """FAILED.txt: the earlier failures of types not tried again, and this run's (written
    after each failure, so a run stopped part-way still leaves its failures listed)."""
    old: dict[str, str] = {}
    if report.exists():
        for line in report.read_text().splitlines():
            k, _, v = line.partition(": ")
            old[k] = v
    for mt in tried:
        old.pop(mt, None)
    old.update(failures)
    if old or report.exists():
        report.write_text("".join(f"{k}: {v}\n" for k, v in sorted(old.items())))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pyaudit.manifest.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("model_types", nargs="*", help="default: every candidate")
    ap.add_argument("--out", type=Path, default=GENERATED_DIR)
    ap.add_argument(
        "--check", action="store_true", help="do not write; exit 1 when a committed file differs"
    )
    ap.add_argument("--skip-existing", action="store_true")
    ap.add_argument("--list", type=Path, metavar="MD", help="only write the list of families")
    ap.add_argument("--timeout", type=int, default=240, help="seconds per family")
    ap.add_argument(
        "--layouts-only",
        action="store_true",
        help="keep each committed file's tensors; derive (or --check) its layouts again",
    )
    args = ap.parse_args(argv)
    if args.list is not None:
        from .derived import architectures_markdown
        from .specs import SPECS

        args.list.write_text(architectures_markdown(sorted(SPECS)))
        return 0
    env = Env()
    todo = args.model_types or candidates(env)
    if args.layouts_only:  # only the committed families; FAILED.txt stays as the full run left it
        todo = [mt for mt in todo if (args.out / f"{mt}.json").exists()]
    record = not args.check and not args.layouts_only
    failures: dict[str, str] = {}
    drift: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for mt in todo:
        path = args.out / f"{mt}.json"
        if args.skip_existing and path.exists():
            continue
        t0 = time.monotonic()
        try:
            with _time_limit(args.timeout):
                if args.layouts_only:
                    data = relayout(env, mt, path)
                else:
                    data = derive_family(env, mt, log=lambda s: None)
        except Exception as e:
            msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            failures[mt] = msg
            print(f"{mt}: FAILED {msg}", file=sys.stderr, flush=True)
            if record:
                _report(args.out / "FAILED.txt", failures, todo[: todo.index(mt) + 1])
                if path.exists() and not args.model_types:
                    path.unlink()
            continue
        text = dump(data)
        if args.check:
            if not path.exists() or path.read_text() != text:
                drift.append(mt)
        else:
            path.write_text(text)
        print(f"{mt}: ok {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    if record:
        _report(args.out / "FAILED.txt", failures, todo)
    if drift:
        print("drifted: " + ", ".join(drift), file=sys.stderr)
        return 1
    return 1 if failures and args.layouts_only else 0


if __name__ == "__main__":
    sys.exit(main())

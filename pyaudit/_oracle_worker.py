"""Subprocess side of :mod:`pyaudit.oracle`; never imported by pyaudit itself.

Run as a script (``python -c "import runpy; runpy.run_path(<this file>)"``) so that it
imports neither pyaudit nor anything next to it. Protocol, line-delimited JSON: each stdin line
is a batch ``{"requests": [{"config": {...}, "dtype": "bfloat16"}, ...]}`` or one request
``{"config": {...}, "dtype": ...}``; stdout gets one JSON line per request, in order, as each
is done: ``{"ok": true, "tensors": [[name, shape, dtype], ...],
...}`` or ``{"ok": false, "kind": ..., "error": ...}``. Everything else the process prints
(transformers' logging, progress bars, prints) goes to stderr.

For each config: build the model with transformers on the meta device (no weight is
allocated), apply the dtypes ``from_pretrained`` would force (``_keep_in_fp32_modules_strict``),
then call the real ``save_pretrained`` into a scratch directory with the function that writes
each shard (``safe_save_file`` in ``transformers.modeling_utils``) replaced by one that records
each tensor's name, shape and dtype. So the tied-weight removal, ``_keys_to_ignore_on_save``,
non-persistent buffers and the reversal of transformers' weight-name conversions are
transformers' own, whatever its version does.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
from typing import Any

#: safetensors dtype names of torch dtypes (``str(torch.bfloat16)`` -> "BF16").
_ST_NAMES = {
    "torch.bool": "BOOL",
    "torch.uint8": "U8",
    "torch.int8": "I8",
    "torch.int16": "I16",
    "torch.uint16": "U16",
    "torch.int32": "I32",
    "torch.uint32": "U32",
    "torch.int64": "I64",
    "torch.uint64": "U64",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.float32": "F32",
    "torch.float64": "F64",
    "torch.float8_e4m3fn": "F8_E4M3",
    "torch.float8_e5m2": "F8_E5M2",
}


_TRACEBACK_LINES = 10


class _Fail(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _limit_memory(extra_bytes: int) -> None:
    """Cap the address space at what is mapped now plus ``extra_bytes`` (a stray real allocation
    then fails with MemoryError in here instead of swapping the machine)."""
    try:
        import resource

        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    now = int(line.split()[1]) * 1024
                    break
            else:
                return
        limit = now + extra_bytes
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass


def _model_class(transformers: Any, cfg: Any, archs: Any) -> tuple[Any, str]:
    """The class ``from_pretrained`` users would build: ``architectures[0]`` when transformers has
    it (and it takes this config class), else the Auto class mapping that knows the config."""
    base = transformers.PreTrainedModel
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        cls = getattr(transformers, archs[0], None)
        if isinstance(cls, type) and issubclass(cls, base):
            want = getattr(cls, "config_class", None)
            if want is None or isinstance(cfg, want):
                return cls, "architectures[0]"
    for auto_name in ("AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoModel"):
        auto = getattr(transformers, auto_name, None)
        mapping = getattr(auto, "_model_mapping", None)
        if mapping is None:
            continue
        try:
            return mapping[type(cfg)], auto_name
        except (KeyError, ValueError):
            continue
    raise _Fail(
        "unknown-architecture",
        f"transformers {transformers.__version__} has no model class for "
        f"{type(cfg).__name__} (architectures: {archs!r})",
    )


def _upcast_like_from_pretrained(model: Any, dtype: Any) -> list[str]:
    """Give the parameters ``from_pretrained`` would load in float32 (the model's
    ``_keep_in_fp32_modules_strict`` for bf16/fp16, ``_keep_in_fp32_modules`` for fp16) that dtype.
    Same matching as transformers' loader: each key is a glob searched in the parameter name."""
    import re

    get_plan = getattr(model, "_get_dtype_plan", None)
    if get_plan is None:
        return []
    plan = get_plan(dtype) or {}
    if not plan:
        return []
    globs = [(re.compile(str(k).replace("*", ".*")), v) for k, v in plan.items()]
    changed = []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        target = next((v for rx, v in globs if rx.search(name)), None)
        if target is None or tensor.dtype == target or not tensor.is_floating_point():
            continue
        tensor.data = tensor.data.to(target)
        changed.append(name)
    return changed


def _as_if_loaded_from(model: Any, names: Any) -> list[str] | None:
    """Mark the model as ``from_pretrained`` does after loading a checkpoint holding ``names``:
    of all its weight conversions (legacy ones included), keep those that renamed at least one
    of the names, and ``save_pretrained`` reverts exactly those (a round trip keeps the
    checkpoint's layout). Same calls as transformers' loader, without any tensor."""
    if names is None:
        return None
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        WeightConverter,
        WeightRenaming,
        dot_natural_key,
        rename_source_key,
    )

    mapping = get_model_conversion_mapping(model, None, None)
    renamings = [e for e in mapping if isinstance(e, WeightRenaming)]
    converters = [e for e in mapping if isinstance(e, WeightConverter)]
    meta_state_dict = model.state_dict()
    prefix = model.base_model_prefix
    for key in sorted((str(n) for n in names), key=dot_natural_key):
        rename_source_key(key, renamings, converters, prefix, meta_state_dict)
    used = [c for c in mapping if c.was_used()]
    model._weight_conversions = used
    return [
        f"{type(c).__name__}({getattr(c, 'source_patterns', '?')}"
        f" -> {getattr(c, 'target_patterns', '?')})"
        for c in used
    ]


def _on_disk_tied(
    mu: Any, model: Any, dropped: dict[str, str], written: set[str]
) -> dict[str, str]:
    """On-disk names of the tensors save_pretrained left out as ties -> the written tensor they
    are tied to (each name put through the same reverse conversion as the saved ones; a tie
    whose names do not convert one-to-one is left out)."""

    def disk_name(name: str) -> str | None:
        try:
            t = model.get_parameter_or_buffer(name)
            out = mu.revert_weight_conversion(model, {name: t})
        except Exception:
            return None
        return next(iter(out)) if len(out) == 1 else None

    tied = {}
    for name, twin in dropped.items():
        a, b = disk_name(name), disk_name(twin)
        if a is not None and b in written and a not in written:
            tied[a] = b
    return tied


def _one(request: dict[str, Any], modules: dict[str, Any]) -> dict[str, Any]:
    torch = modules["torch"]
    transformers = modules["transformers"]
    mu = modules["modeling_utils"]
    config = request.get("config")
    if not isinstance(config, dict):
        raise _Fail("error", "config must be a JSON object")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise _Fail("unknown-architecture", "config.json has no model_type")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        config_class = CONFIG_MAPPING[model_type]
    except KeyError:
        raise _Fail(
            "unknown-architecture",
            f"transformers {transformers.__version__} does not know model_type {model_type!r}",
        ) from None
    if config.get("quantization_config"):
        raise _Fail(
            "unsupported",
            "quantized config: the oracle builds the unquantized model, whose tensors differ",
        )
    cfg = config_class.from_dict(dict(config))
    cls, how = _model_class(transformers, cfg, config.get("architectures"))
    dtype = getattr(torch, request.get("dtype") or "float32")

    safe_ops = getattr(modules.get("init"), "meta_device_safe_creation_ops", None)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.device("meta"))
        if safe_ops is not None:  # what from_pretrained also enters for meta init
            stack.enter_context(safe_ops())
        model = cls._from_config(cfg, dtype=dtype)
    built = time.monotonic() - t0
    upcast = _upcast_like_from_pretrained(model, dtype)

    kept = _as_if_loaded_from(model, request.get("source_names"))

    captured: list[list[Any]] = []
    seen: set[str] = set()

    def capture(tensors: dict[str, Any], filename: str, metadata: Any = None) -> None:
        for name, t in tensors.items():
            st = _ST_NAMES.get(str(t.dtype))
            if st is None:
                raise _Fail("error", f"{name}: dtype {t.dtype} has no safetensors name")
            if name in seen:
                raise _Fail("error", f"save_pretrained wrote {name} twice")
            seen.add(name)
            captured.append([name, list(t.shape), st])

    dropped: dict[str, str] = {}  # model-side name dropped as tied -> the one kept
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
        with tempfile.TemporaryDirectory(prefix="pyaudit-oracle-") as scratch:
            model.save_pretrained(scratch)
    finally:
        mu.safe_save_file = real_save
        mu.remove_tied_weights_from_state_dict = real_untie
    tied = _on_disk_tied(mu, model, dropped, seen)
    return {
        "ok": True,
        "model_type": getattr(cfg, "model_type", model_type),
        "architecture": cls.__name__,
        "class_from": how,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "upcast_fp32": upcast,
        "conversions_kept": kept,
        "tied": tied,
        "build_seconds": round(built, 3),
        "tensors": captured,
    }


def _import() -> dict[str, Any]:
    from importlib import import_module

    modules: dict[str, Any] = {}
    for key, name in (
        ("torch", "torch"),
        ("transformers", "transformers"),
        ("modeling_utils", "transformers.modeling_utils"),
    ):
        try:
            modules[key] = import_module(name)
        except ImportError as e:
            raise _Fail("not-installed", f"{name} is not installed ({e})") from None
        except Exception as e:  # a broken install
            raise _Fail("error", f"importing {name} failed: {type(e).__name__}: {e}") from None
    try:
        modules["init"] = import_module("transformers.initialization")
    except ImportError:
        modules["init"] = None
    modules["torch"].set_num_threads(1)
    modules["transformers"].logging.set_verbosity_error()
    modules["transformers"].logging.disable_progress_bar()
    return modules


def _answer(one: Any, modules: dict[str, Any]) -> dict[str, Any]:
    try:
        if not isinstance(one, dict):
            raise _Fail("error", "a request must be a JSON object")
        return _one(one, modules)
    except _Fail as e:
        return {"ok": False, "kind": e.kind, "error": str(e)}
    except MemoryError:
        error = "MemoryError: the model allocated real memory"
        return {"ok": False, "kind": "error", "error": error}
    except Exception as e:
        lines = traceback.format_exc().rstrip().splitlines()
        head = " ".join(f"{type(e).__name__}: {e}".split())[:400]
        tail = "\n".join(lines[-_TRACEBACK_LINES:])
        return {"ok": False, "kind": "error", "error": f"{head}\n{tail}"}


def main() -> None:
    """Reads stdin line by line until it closes. Each line is one JSON object: a batch
    ``{"requests": [...]}`` (one reply line per request) or one request ``{"config": ...}``
    (one reply line). torch and transformers are imported once, before the first answer, so
    a long-lived worker (:class:`pyaudit.oracle.OracleSession`) pays for them once."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray prints, at C level too, go to stderr
    sys.stdout = sys.stderr

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    modules: dict[str, Any] | None = None
    failed: _Fail | None = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError as e:
            reply({"ok": False, "kind": "error", "error": f"not a JSON line: {e}"})
            continue
        batch = isinstance(message, dict) and "requests" in message
        requests = (message.get("requests") or []) if batch else [message]
        if modules is None and failed is None:
            try:
                modules = _import()
            except _Fail as e:
                failed = e
            else:
                memory = message.get("memory_bytes") if isinstance(message, dict) else None
                _limit_memory(int(memory or 4 << 30))
        for one in requests:
            if modules is None:
                assert failed is not None
                reply({"ok": False, "kind": failed.kind, "error": str(failed)})
            else:
                reply(_answer(one, modules))


if __name__ == "__main__":
    main()

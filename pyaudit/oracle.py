"""What transformers itself would save for a config: an independent check of the specs.

>>> r = oracle_manifest(load_config("path/to/model"))          # doctest: +SKIP
>>> r.tensors["model.embed_tokens.weight"]                       # doctest: +SKIP
((151936, 2560), 'BF16')

The installed transformers builds the model on the meta device (no weight is allocated) and
runs its real ``save_pretrained`` with the shard writer replaced by a recorder, so the names,
shapes and dtypes are exactly what ``model.safetensors`` would hold: tied weights dropped,
``_keys_to_ignore_on_save`` and non-persistent buffers left out, transformers' weight-name
conversions reverted, the dtypes ``from_pretrained`` forces (``_keep_in_fp32_modules_strict``)
applied. By default this is what transformers writes for a model built fresh from the config;
with ``source_names`` (a checkpoint's tensor names) it is what it writes after loading such a
checkpoint with ``from_pretrained``: the conversions those names needed are kept and reverted,
so an older layout survives the round trip.

torch and transformers are optional: they are imported only in a subprocess
(:mod:`pyaudit._oracle_worker`), with a timeout and an address-space cap, so a missing or
broken install, a hang, a crash or a huge allocation becomes :class:`OracleUnavailable`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyaudit.manifest.dtypes import config_dtype

__all__ = ["OracleResult", "OracleUnavailable", "oracle_manifest", "oracle_manifests"]

_WORKER = Path(__file__).with_name("_oracle_worker.py")
_ST_TO_TORCH = {
    "BF16": "bfloat16",
    "F16": "float16",
    "F32": "float32",
    "F64": "float64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
_STDERR_TAIL_LINES = 12


class OracleUnavailable(Exception):
    """The oracle cannot say: ``kind`` is one of ``not-installed``, ``unknown-architecture``,
    ``unsupported``, ``timeout``, ``crashed``, ``error``."""

    def __init__(self, reason: str, kind: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class OracleResult:
    """What ``save_pretrained`` writes for one config, in the order it writes them."""

    tensors: dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, safetensors dtype)
    model_type: str
    architecture: str  # the transformers class built, e.g. "Qwen3ForCausalLM"
    transformers_version: str
    torch_version: str = ""
    class_from: str = ""  # "architectures[0]" or the Auto class that mapped the config
    upcast_fp32: tuple[str, ...] = ()  # model-side names from_pretrained keeps in float32
    # with ``source_names``: the weight conversions loading them used (and saving reverts)
    conversions_kept: tuple[str, ...] | None = None
    # on-disk names save_pretrained left out because they are tied -> the tensor written instead
    tied: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the worker for this config (first one: imports too)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def total_bytes(self) -> int:
        from pyaudit.manifest.dtypes import DTYPE_BYTES as sizes

        total = 0
        for shape, dtype in self.tensors.values():
            n = sizes[dtype]
            for d in shape:
                n *= d
            total += n
        return total


_cache: dict[str, OracleResult] = {}
_cache_lock = threading.Lock()


def oracle_manifest(
    config: dict[str, Any],
    timeout: float = 120.0,
    *,
    source_names: Iterable[str] | None = None,
) -> OracleResult:
    """What transformers' ``save_pretrained`` would write for ``config`` (see the module doc).

    By default: a model built from ``config`` by the installed transformers, then saved. With
    ``source_names`` (the tensor names of a checkpoint): that model as ``from_pretrained`` left
    it after loading such a checkpoint, then saved. transformers keeps the weight conversions
    the names needed (legacy ones included) and reverts them on save, so a round trip of an
    older-layout checkpoint keeps its layout.

    Raises :class:`OracleUnavailable` with the reason (torch/transformers missing, unknown model
    type, quantized config, timeout after ``timeout`` seconds, the worker's error). Results are
    cached per (config, source names) for the life of the process; failures are not.
    """
    names: list[Iterable[str] | None] | None = None
    if source_names is not None:
        names = [list(source_names)]
    result = oracle_manifests([config], timeout=timeout, source_names=names)[0]
    if isinstance(result, OracleUnavailable):
        raise result
    return result


def oracle_manifests(
    configs: list[dict[str, Any]],
    timeout: float = 120.0,
    *,
    source_names: list[Iterable[str] | None] | None = None,
) -> list[OracleResult | OracleUnavailable]:
    """:func:`oracle_manifest` of many configs in one worker (torch and transformers are imported
    once), each result or failure in its place. ``source_names``, when given, has one entry
    (names or None) per config. ``timeout`` bounds each config (the first one's includes the
    imports); on a timeout or crash the worker is killed and the configs it had not finished
    get the OracleUnavailable."""
    if source_names is not None and len(source_names) != len(configs):
        raise ValueError("source_names needs one entry per config")
    out: list[OracleResult | OracleUnavailable | None] = [None] * len(configs)
    todo: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for i, config in enumerate(configs):
        if not isinstance(config, dict):
            out[i] = OracleUnavailable(f"config must be a dict, got {type(config).__name__}")
            continue
        request: dict[str, Any] = {
            "config": config,
            "dtype": _ST_TO_TORCH.get(config_dtype(config), "float32"),
        }
        names = None if source_names is None else source_names[i]
        if names is not None:
            request["source_names"] = sorted({str(n) for n in names})
        key = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None:
            out[i] = hit
            continue
        early = _precheck(config)
        if early is not None:
            out[i] = early
            continue
        todo.setdefault(key, (request, []))[1].append(i)  # the same request twice: asked once
    if todo:
        replies = _run_worker([request for request, _ in todo.values()], timeout)
        for (key, (_, where)), reply in zip(todo.items(), replies, strict=True):
            for i in where:
                out[i] = reply
            if isinstance(reply, OracleResult):
                with _cache_lock:
                    _cache[key] = reply
    return [r for r in out if r is not None]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _precheck(config: dict[str, Any]) -> OracleUnavailable | None:
    """Answers that need no subprocess: nothing installed, no model_type, a model_type the
    installed transformers' config registry does not name (read as text, not imported)."""
    if not _installed("torch"):
        return OracleUnavailable(
            "the transformers oracle needs torch, which is not installed", "not-installed"
        )
    spec = importlib.util.find_spec("transformers") if _installed("transformers") else None
    if spec is None or spec.origin is None:
        return OracleUnavailable(
            "the transformers oracle needs transformers, which is not installed", "not-installed"
        )
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        return OracleUnavailable("config.json has no model_type", "unknown-architecture")
    if config.get("quantization_config"):
        return OracleUnavailable(
            "quantized config: the oracle builds the unquantized model, whose tensors differ",
            "unsupported",
        )
    quoted = json.dumps(model_type)
    texts = []
    for path in sorted((Path(spec.origin).parent / "models" / "auto").glob("*.py")):
        try:
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return None
    registry = "\n".join(texts)
    # Only trust the text when it looks like the registry we know (a model type quoted in it).
    if '"llama"' in registry and quoted not in registry:
        return OracleUnavailable(
            f"the installed transformers does not know model_type {model_type!r}",
            "unknown-architecture",
        )
    return None


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TRANSFORMERS_VERBOSITY="error",
        TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _tail(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln.rstrip() for ln in f.read().splitlines() if ln.strip()]
    except OSError:
        return ""
    # drop tqdm/progress noise
    lines = [ln for ln in lines if "it/s]" not in ln and "Writing model shards" not in ln]
    return "\n".join(lines[-_STDERR_TAIL_LINES:])


def _from_reply(reply: dict[str, Any]) -> OracleResult | OracleUnavailable:
    if not reply.get("ok"):
        return OracleUnavailable(
            str(reply.get("error") or "unknown error"), str(reply.get("kind") or "error")
        )
    tensors = {str(n): (tuple(int(d) for d in shape), str(dt)) for n, shape, dt in reply["tensors"]}
    return OracleResult(
        tensors=tensors,
        model_type=str(reply["model_type"]),
        architecture=str(reply["architecture"]),
        transformers_version=str(reply["transformers_version"]),
        torch_version=str(reply.get("torch_version") or ""),
        class_from=str(reply.get("class_from") or ""),
        upcast_fp32=tuple(reply.get("upcast_fp32") or ()),
        conversions_kept=None
        if reply.get("conversions_kept") is None
        else tuple(reply["conversions_kept"]),
        tied={str(k): str(v) for k, v in (reply.get("tied") or {}).items()},
        seconds=float(reply.get("seconds") or 0.0),
    )


def _run_worker(
    requests: list[dict[str, Any]], timeout: float
) -> list[OracleResult | OracleUnavailable]:
    configs = requests  # one reply per request
    payload = json.dumps({"requests": requests}, default=str)
    code = f"import runpy; runpy.run_path({str(_WORKER)!r}, run_name='__main__')"
    results: list[OracleResult | OracleUnavailable] = []
    with tempfile.TemporaryDirectory(prefix="pyaudit-oracle-") as scratch:
        err_path = os.path.join(scratch, "stderr.txt")
        with open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-c", code],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    cwd=scratch,  # sys.path[0] of `-c` is the cwd: an empty directory
                    env=_worker_env(),
                    start_new_session=True,  # its own process group, killed as one
                )
            except OSError as e:
                return [
                    OracleUnavailable(f"cannot start the oracle worker: {e}", "crashed")
                    for _ in configs
                ]
            lines: queue.Queue[bytes | None] = queue.Queue()

            def pump() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.put(line)
                lines.put(None)

            def feed() -> None:  # in a thread: a worker that never reads must not block us
                assert proc.stdin is not None
                try:
                    proc.stdin.write(payload.encode())
                except OSError:
                    pass  # it died already: reported below
                finally:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            writer = threading.Thread(target=feed, daemon=True)
            writer.start()
            failure: OracleUnavailable | None = None
            start = time.monotonic()
            for _ in configs:
                try:
                    line = lines.get(timeout=max(timeout, 0.0))
                except queue.Empty:
                    failure = OracleUnavailable(
                        f"the transformers oracle timed out after {timeout:g} s", "timeout"
                    )
                    break
                if line is None:
                    failure = None  # decided once the process has exited
                    break
                try:
                    reply = json.loads(line)
                except ValueError:
                    failure = OracleUnavailable(f"oracle worker wrote garbage: {line[:200]!r}")
                    break
                reply["seconds"] = round(time.monotonic() - start, 3)
                start = time.monotonic()
                results.append(_from_reply(reply))
            if failure is not None or len(results) < len(configs):
                _kill(proc)
            try:
                rc = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill(proc)
                rc = proc.wait()
            reader.join(timeout=5)
            writer.join(timeout=5)
            if proc.stdout is not None and not reader.is_alive():
                proc.stdout.close()
        tail = _tail(err_path)
        if failure is not None and failure.kind == "timeout" and tail:
            failure = OracleUnavailable(f"{failure}; its last lines:\n{tail}", "timeout")
        if len(results) < len(configs) and failure is None:
            how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
            failure = OracleUnavailable(
                f"the transformers oracle worker died ({how})" + (f":\n{tail}" if tail else ""),
                "crashed",
            )
    while len(results) < len(configs):
        assert failure is not None
        results.append(failure)
    return results


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the worker's process group (it was started in its own session)."""
    if proc.poll() is not None:
        return
    killpg = getattr(os, "killpg", None)  # POSIX; elsewhere the worker alone
    try:
        if killpg is None:
            raise ProcessLookupError
        killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

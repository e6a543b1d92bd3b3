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

Two ways to ask: :func:`oracle_manifests` (a batch in a worker of its own, answers kept for
the life of the process), and :class:`OracleSession`, what a scan uses: one long-lived worker
for the whole scan, started on first need, each answer kept on disk
(``$PYAUDIT_CACHE_DIR/oracle``) so that a second scan starts no worker at all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyaudit.manifest.dtypes import config_dtype

if TYPE_CHECKING:
    import queue
    import subprocess
    import tempfile

__all__ = [
    "OracleResult",
    "OracleSession",
    "OracleStats",
    "OracleUnavailable",
    "oracle_installed",
    "oracle_manifest",
    "oracle_manifests",
]

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
    implausible = _implausible(config)
    if implausible is not None:
        return OracleUnavailable(implausible, "unsupported")
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


#: A count of layers, experts or heads above this is refused before any worker is asked: the
#: build would enumerate that many modules (a hostile config.json must not cost the timeout).
MAX_COUNT = 1 << 16
_COUNTED = ("layer", "expert", "head")


def _implausible(config: Any, path: str = "", depth: int = 0) -> str | None:
    """Why ``config`` (its sub-configs too) asks for an implausible model, or None."""
    if not isinstance(config, dict) or depth > 8:
        return None
    for key, value in config.items():
        where = f"{path}{key}"
        if isinstance(value, dict):
            found = _implausible(value, where + ".", depth + 1)
            if found is not None:
                return found
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value > MAX_COUNT
            and any(word in str(key).lower() for word in _COUNTED)
        ):
            return f"config.json {where} = {value}: more than {MAX_COUNT}; refusing to build it"
    return None


def _plausible(result: OracleResult) -> bool:
    """Every dtype one safetensors has, every dimension a count (a cache file is input)."""
    from pyaudit.manifest.dtypes import DTYPE_BYTES

    return all(
        dtype in DTYPE_BYTES and all(0 <= d < 1 << 62 for d in shape)
        for shape, dtype in result.tensors.values()
    )


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
    # (queue, subprocess, tempfile: imported where a worker starts, not by every scan)
    import queue
    import subprocess
    import tempfile

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
    import signal

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


# --- one worker for a whole scan, answers kept on disk -------------------------------------------

#: The format of a cache file; a change makes every older file a miss (rebuilt, never misread).
CACHE_FORMAT = 1


def oracle_installed() -> bool:
    """torch and transformers can be imported (found, not imported: no torch here)."""
    return _installed("torch") and _installed("transformers")


def transformers_version() -> str | None:
    """The installed transformers' version, from its metadata (nothing imported)."""
    from importlib import metadata

    try:
        return metadata.version("transformers")
    except (metadata.PackageNotFoundError, ValueError):
        return None


def default_cache_dir() -> Path:
    """Where oracle answers are kept: ``$PYAUDIT_CACHE_DIR/oracle``, else
    ``$XDG_CACHE_HOME/pyaudit/oracle``, else ``~/.cache/pyaudit/oracle``."""
    from pyaudit.cachedir import cache_root

    return cache_root() / "oracle"


def request_digest(request: dict[str, Any]) -> str:
    """sha256 of a request's canonical JSON (sorted keys, no spaces): its cache key."""
    import hashlib

    text = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class OracleStats:
    """What one session did: answers built by the worker, answers read from the disk cache,
    failures, worker starts, and the worker's wall time per build (the first includes its
    imports of torch and transformers)."""

    builds: int = 0
    cache_hits: int = 0
    failures: int = 0
    worker_starts: int = 0
    build_seconds: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        first = self.build_seconds[0] if self.build_seconds else None
        rest = self.build_seconds[1:]
        return {
            "builds": self.builds,
            "cache_hits": self.cache_hits,
            "failures": self.failures,
            "worker_starts": self.worker_starts,
            "first_build_seconds": None if first is None else round(first, 3),
            "mean_build_seconds_after_first": round(sum(rest) / len(rest), 3) if rest else None,
        }


class OracleSession:
    """The transformers oracle for one scan: one long-lived worker process, started on the
    first answer not already known and stopped by :meth:`close` (a context manager: the scan
    owns it and passes it in), answers kept on disk.

    Each answer is asked at most once per session and, when ``cache_dir`` is not None, at
    most once per (request, transformers version, :data:`CACHE_FORMAT`): a file
    ``<sha256 of the request's canonical JSON>-transformers-<version>-f<format>.json`` in
    ``cache_dir``, written atomically (temporary file, then rename). A file that cannot be read
    or parsed is a miss: the answer is built again and the file replaced. Failures are not
    kept. Each request has ``timeout`` seconds (the first also pays the imports); a worker that
    times out is killed, one that dies is reported with its last lines of stderr, and either
    is started again for the next request.
    """

    def __init__(
        self,
        cache_dir: Path | str | None = None,
        *,
        use_cache: bool = True,
        timeout: float = 120.0,
    ) -> None:
        if not use_cache:
            self.cache_dir: Path | None = None
        else:
            self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.timeout = timeout
        self.stats = OracleStats()
        self._answers: dict[str, OracleResult | OracleUnavailable] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] | None = None
        self._reader: threading.Thread | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._err_path: str | None = None
        self._version: str | None = None  # read on first need

    def __enter__(self) -> OracleSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def used(self) -> bool:
        return bool(self._answers)

    def manifest(
        self, config: dict[str, Any], source_names: Iterable[str] | None = None
    ) -> tuple[OracleResult, bool]:
        """:func:`oracle_manifest` of ``config`` through this session: the answer, and whether
        it came from the disk cache. Raises :class:`OracleUnavailable`."""
        if not isinstance(config, dict):
            raise OracleUnavailable(f"config must be a dict, got {type(config).__name__}")
        request: dict[str, Any] = {
            "config": config,
            "dtype": _ST_TO_TORCH.get(config_dtype(config), "float32"),
        }
        if source_names is not None:
            request["source_names"] = sorted({str(n) for n in source_names})
        key = request_digest(request)
        with self._lock:
            known = self._answers.get(key)
            if known is None:
                known = self._answer(key, request, config)
                self._answers[key] = known
        if isinstance(known, OracleUnavailable):
            raise known
        return known, bool(known.extra.get("cached"))

    # -- the disk cache --

    def _transformers(self) -> str | None:
        if self._version is None:
            self._version = transformers_version()
        return self._version

    def _cache_path(self, key: str) -> Path | None:
        version = self._transformers()
        if self.cache_dir is None or version is None:
            return None
        safe = "".join(c if c.isalnum() or c in ".-_+" else "_" for c in version)
        return self.cache_dir / f"{key}-transformers-{safe}-f{CACHE_FORMAT}.json"

    def _load(self, path: Path) -> OracleResult | None:
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read())
            version = doc.get("transformers_version")
            if doc.get("format") != CACHE_FORMAT or version != self._transformers():
                return None
            result = _from_reply(doc)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None  # absent, corrupt or foreign: built again
        if not isinstance(result, OracleResult) or not _plausible(result):
            return None
        return result

    def _store(self, path: Path, reply: dict[str, Any]) -> None:
        import tempfile

        doc = {**reply, "format": CACHE_FORMAT}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(doc, f, separators=(",", ":"))
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError:
            pass  # a cache that cannot be written costs a build next time, nothing else

    # -- answers --

    def _answer(
        self, key: str, request: dict[str, Any], config: dict[str, Any]
    ) -> OracleResult | OracleUnavailable:
        early = _precheck(config)
        if early is not None:
            return early
        path = self._cache_path(key)
        if path is not None:
            hit = self._load(path)
            if hit is not None:
                self.stats.cache_hits += 1
                hit.extra["cached"] = True
                return hit
        reply = self._ask(request)
        self.stats.builds += 1
        result = _from_reply(reply)
        if isinstance(result, OracleUnavailable):
            self.stats.failures += 1
            return result
        self.stats.build_seconds.append(result.seconds)
        if path is not None:
            self._store(path, reply)
        return result

    def _start(self) -> None:
        import queue
        import subprocess
        import tempfile

        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="pyaudit-oracle-")
            self._err_path = os.path.join(self._scratch.name, "stderr.txt")
        assert self._err_path is not None
        code = f"import runpy; runpy.run_path({str(_WORKER)!r}, run_name='__main__')"
        with open(self._err_path, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=self._scratch.name,  # sys.path[0] of `-c`: an empty directory
                env=_worker_env(),
                start_new_session=True,  # its own process group, killed as one
            )
        lines: queue.Queue[bytes | None] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    lines.put(line)
            except (OSError, ValueError):
                pass
            finally:
                lines.put(None)
                with contextlib.suppress(OSError):
                    proc.stdout.close()

        reader = threading.Thread(target=pump, name="pyaudit-oracle-reader", daemon=True)
        reader.start()
        self._proc, self._lines, self._reader = proc, lines, reader
        self.stats.worker_starts += 1

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request to the worker (started if need be): its reply, or a failure reply."""
        import queue

        if self._proc is None or self._proc.poll() is not None:
            self._stop()
            try:
                self._start()
            except OSError as e:
                return {"ok": False, "kind": "crashed", "error": f"cannot start the worker: {e}"}
        assert self._proc is not None and self._proc.stdin is not None
        assert self._lines is not None
        start = time.monotonic()
        try:
            self._proc.stdin.write((json.dumps(request, default=str) + "\n").encode())
            self._proc.stdin.flush()
        except OSError:
            pass  # it died: the reader says so below
        try:
            line = self._lines.get(timeout=max(self.timeout, 0.0))
        except queue.Empty:
            self._stop(kill=True)
            tail = self._tail()
            return {
                "ok": False,
                "kind": "timeout",
                "error": f"the transformers oracle timed out after {self.timeout:g} s"
                + (f"; its last lines:\n{tail}" if tail else ""),
            }
        if line is None:
            rc = self._stop()
            how = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit status {rc}"
            tail = self._tail()
            return {
                "ok": False,
                "kind": "crashed",
                "error": f"the transformers oracle worker died ({how})"
                + (f":\n{tail}" if tail else ""),
            }
        try:
            reply = json.loads(line)
            if not isinstance(reply, dict):
                raise ValueError("not an object")
        except ValueError:
            self._stop(kill=True)
            garbage = f"oracle worker wrote garbage: {line[:200]!r}"
            return {"ok": False, "kind": "error", "error": garbage}
        reply["seconds"] = round(time.monotonic() - start, 3)
        if not reply.get("ok") and str(reply.get("error", "")).startswith("MemoryError"):
            self._stop(kill=True)  # its address-space cap is spent: the next build starts anew
        return reply

    def _tail(self) -> str:
        return _tail(self._err_path) if self._err_path is not None else ""

    def _stop(self, kill: bool = False) -> int | None:
        """Stop the worker (if any): close its stdin (it exits at the end of its input), and
        kill its process group if it has not exited soon after (or at once, ``kill``)."""
        proc, reader = self._proc, self._reader
        self._proc, self._lines, self._reader = None, None, None
        if proc is None:
            return None
        import subprocess

        if kill:
            _kill(proc)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            rc = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc = proc.wait()
        if reader is not None:
            reader.join(timeout=5)  # it closes the worker's stdout at end of file
        return rc

    def close(self) -> None:
        """Stop the worker and remove its scratch directory; the session can still answer
        from what it knows (a new worker would be started for anything else)."""
        with self._lock:
            self._stop()
            if self._scratch is not None:
                self._scratch.cleanup()
                self._scratch, self._err_path = None, None

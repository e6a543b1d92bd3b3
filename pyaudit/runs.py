"""What a run meant to save: its own saved arguments, read as data.

ms-swift's ``args.json`` (``train_type``, ``rlhf_type``, ``model``, ``load_args``),
LLaMA-Factory's ``training_args.yaml`` (``finetuning_type``), PEFT's
``adapter_config.json``, and the user's ``--expect``. Nothing is unpickled:
``training_args.bin`` is opaque.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pyaudit import _core
from pyaudit.memo import LRU

Kind = Literal["full", "adapter"]

# ms-swift train_type values that save adapters rather than full weights.
ADAPTER_TRAIN_TYPES = {
    "lora", "longlora", "adalora", "vera", "boft", "fourierft", "reft", "bone", "adapter",
    "llamapro", "lisa_lora", "ia3", "prompt", "lokr", "loha", "olora", "pissa", "dora", "qlora",
}  # fmt: skip
FULL_TRAIN_TYPES = {"full", "freeze"}


MAX_JSON_BYTES = 256 * 1024 * 1024  # an index of 100k tensors is ~10 MB
PREFETCH_BYTES = 16 * 1024 * 1024  # sweeps digest run files up to this size off the GIL

Parsed = LRU[dict[str, Any] | None]  # parsed JSON by (size, digest) of its bytes


def read_run_file(
    directory: Path,
    name: str,
    known: tuple[int, int] | None = None,
    memo: Parsed | None = None,
) -> dict[str, Any] | None:
    """``read_json(directory / name, memo)``. ``known``: the file's (size, digest) as a
    sweep's reading threads found it (``_core.digest_files``): content ``memo`` parsed
    before is returned without reading the file again (or making its path)."""
    if known is not None and memo is not None:
        held, cached = memo.lookup(known)
        if held:
            return cached
    return read_json(directory / name, memo)


def read_json(path: Path, memo: Parsed | None = None) -> dict[str, Any] | None:
    """A JSON object from a small run file (config, index, args), or None when absent,
    unreadable, too large or not an object.

    With ``memo`` (an audit's cache), parsed once per distinct content, keyed by (size,
    digest) of the bytes (the core's seeded hash): the dict returned may be shared, never
    mutate it.
    """
    try:
        # O_NONBLOCK: a FIFO named config.json must not hang the audit (never read below).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        # Size first: read(n) would allocate n bytes up front on every call.
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_JSON_BYTES:
            return None
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:  # grew since the fstat: read the rest, within the cap
            parts = [data]
            total = len(data)
            while total <= MAX_JSON_BYTES and (chunk := os.read(fd, 1 << 20)):
                parts.append(chunk)
                total += len(chunk)
            data = b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_JSON_BYTES:  # grew since the fstat
        return None
    if memo is None:
        return _json_object(data)
    return memo.get((len(data), _core.hash_bytes(data)), lambda: _json_object(data))


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _read_yaml_scalars(path: Path) -> dict[str, str]:
    """Top-level ``key: value`` scalars of a flat YAML file (no YAML library needed)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_][\w.-]*):\s*(.*?)\s*$", line)
        if m and m.group(2) and not m.group(2).startswith(("#", "|", ">")):
            value = m.group(2)
            if not value.startswith(("'", '"')):
                value = re.sub(r"\s+#.*$", "", value)  # an inline comment
            out[m.group(1)] = value.strip("'\"")
    return out


def kind_of_train_type(value: object) -> Kind | None:
    if not isinstance(value, str):
        return None
    v = value.lower()
    if v in FULL_TRAIN_TYPES:
        return "full"
    if v in ADAPTER_TRAIN_TYPES:
        return "adapter"
    return None


@dataclass
class Declared:
    """One statement of intent: which file (or flag) says which kind, by which field."""

    kind: Kind
    source: str  # e.g. "args.json", "--expect", "adapter_config.json"
    field: str  # e.g. "train_type"
    value: str
    path: Path | None = None

    def describe(self) -> str:
        if self.source == "--expect":
            return f"--expect {self.value}"
        return f"{self.source} says {self.field}={self.value}"


@dataclass
class RunArgs:
    """What the run's saved arguments say, where they were found."""

    args_path: Path | None = None
    args: dict[str, Any] | None = None
    yaml_path: Path | None = None
    yaml: dict[str, str] | None = None

    @property
    def model(self) -> str | None:
        if self.args:
            for key in ("model", "model_id_or_path", "model_name_or_path"):
                value = self.args.get(key)
                if isinstance(value, str) and value:
                    return value
        if self.yaml:
            return self.yaml.get("model_name_or_path")
        return None

    def declared(self) -> Declared | None:
        if self.args is not None and self.args_path is not None:
            for key in ("train_type", "sft_type", "finetuning_type"):
                kind = kind_of_train_type(self.args.get(key))
                if kind:
                    return Declared(kind, self.args_path.name, key, str(self.args[key]), self.args_path)
        if self.yaml is not None and self.yaml_path is not None:
            kind = kind_of_train_type(self.yaml.get("finetuning_type"))
            if kind:
                return Declared(kind, self.yaml_path.name, "finetuning_type",
                                self.yaml["finetuning_type"], self.yaml_path)
        return None


def find_run_args(
    directory: Path,
    stop: Path | None,
    levels: int = 2,
    listed: Mapping[str, Collection[str]] | None = None,
    memo: Parsed | None = None,
) -> RunArgs:
    """The run files of a checkpoint: in its directory, else in its parents (ms-swift keeps
    ``args.json`` both in the run dir and in each ``checkpoint-N``), never above ``stop``'s
    parent. ``listed``: the run files of directories whose listing is known (by path), so
    that files known to be absent there are not probed for."""
    run = RunArgs()
    if listed is not None and not any(
        "args.json" in names or "training_args.yaml" in names for names in listed.values()
    ):
        # Discovery listed every directory this would look in (the checkpoint's and those
        # above it up to the scanned PATH): none holds run arguments.
        return run
    current = directory
    stop_parent = stop.parent if stop is not None else None
    for _ in range(levels + 1):
        known = listed.get(str(current)) if listed is not None else None
        if run.args is None and (known is None or "args.json" in known):
            args = read_json(current / "args.json", memo)
            if args is not None:
                run.args_path, run.args = current / "args.json", args
        if (
            run.yaml is None
            and (known is None or "training_args.yaml" in known)
            and (current / "training_args.yaml").is_file()
        ):
            run.yaml_path = current / "training_args.yaml"
            run.yaml = _read_yaml_scalars(run.yaml_path)
        if run.args is not None or run.yaml is not None:
            break
        if current.parent == current or current == stop_parent or current.parent == stop_parent:
            break
        current = current.parent
    return run


def hf_cache_dirs() -> list[Path]:
    """Local model caches, in the order a user's environment names them."""
    dirs: list[Path] = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    return dirs


def resolve_model(reference: str, relative_to: Path) -> Path | None:
    """A model reference (path or hub id) as a local directory, never over the network.

    A relative path is tried against the checkpoint's directory and its ancestors
    (training frameworks record paths relative to where the run was launched),
    then the current directory.
    """
    if not reference:
        return None
    candidate = Path(reference).expanduser()
    if candidate.is_absolute():
        tries = [candidate]
    else:
        tries = [base / candidate for base in [relative_to, *relative_to.parents][:8]]
        tries.append(Path.cwd() / candidate)
    for path in tries:
        if path.is_dir():
            return path
    if reference.count("/") == 1 and not reference.startswith((".", "/")):
        org, name = reference.split("/")
        for cache in hf_cache_dirs():
            snapshots = cache / f"models--{org}--{name}" / "snapshots"
            try:
                found = sorted(
                    (p for p in snapshots.iterdir() if (p / "config.json").exists()),
                    key=lambda p: p.stat().st_mtime,
                    reverse=True,
                )
            except OSError:
                continue
            if found:
                return found[0]
        for path in modelscope_dirs(org, name):
            if (path / "config.json").exists():
                return path
    return None


def modelscope_dirs(org: str, name: str) -> list[Path]:
    """Where ModelScope may have put ``org/name``: ``[$MODELSCOPE_CACHE|~/.cache/modelscope/hub]
    [/models]/org/name``, with the name's dots escaped as ``___`` (``Qwen2___5-7B-Instruct``)
    as many modelscope versions write it."""
    env = os.environ.get("MODELSCOPE_CACHE")
    roots = [Path(env).expanduser(), Path(env).expanduser() / "hub"] if env else []
    roots.append(Path.home() / ".cache" / "modelscope" / "hub")
    names = [name] + ([name.replace(".", "___")] if "." in name else [])
    return [root / sub / org / n for root in roots for sub in ("models", "") for n in names]

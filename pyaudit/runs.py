"""What a run meant to save: its own saved arguments, read as data.

ms-swift's ``args.json`` (``train_type``, ``rlhf_type``, ``model``, ``load_args``),
LLaMA-Factory's ``training_args.yaml`` (``finetuning_type``), PEFT's
``adapter_config.json``, and the user's ``--expect``. Nothing is unpickled:
``training_args.bin`` is opaque.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pyaudit import runfiles

Kind = Literal["full", "adapter"]

# ms-swift train_type values that save adapters rather than full weights.
ADAPTER_TRAIN_TYPES = {
    "lora", "longlora", "adalora", "vera", "boft", "fourierft", "reft", "bone", "adapter",
    "llamapro", "lisa_lora", "ia3", "prompt", "lokr", "loha", "olora", "pissa", "dora", "qlora",
}  # fmt: skip
FULL_TRAIN_TYPES = {"full", "freeze"}


MAX_JSON_BYTES = runfiles.MAX_BYTES
PREFETCH_BYTES = 16 * 1024 * 1024  # sweeps digest run files up to this size off the GIL

Parsed = runfiles.Parsed  # parsed run files (or why not) by (size, digest) of their bytes


def read_run_file(
    directory: Path,
    name: str,
    known: tuple[int, int] | None = None,
    memo: Parsed | None = None,
) -> dict[str, Any] | None:
    """``read_json(directory / name, memo)``, from content parsed before when ``known``."""
    return load_run_file(directory, name, known, memo)[0]


def load_run_file(
    directory: Path,
    name: str,
    known: tuple[int, int] | None = None,
    memo: Parsed | None = None,
) -> tuple[dict[str, Any] | None, runfiles.Problem | None]:
    """:func:`pyaudit.runfiles.load_json` of ``directory / name``. ``known``: the file's
    (size, digest) as a sweep's reading threads found it (``_core.digest_files``): content
    ``memo`` (an audit's cache) parsed before is answered without reading the file again
    (or making its path)."""
    if known is not None and memo is not None:
        held, doc, why = runfiles.parsed(known, memo)
        if held:
            return doc, runfiles.Problem(name, "invalid-file", why) if why is not None else None
    return runfiles.load_json(directory / name, name, memo)


def read_json(path: Path, memo: Parsed | None = None) -> dict[str, Any] | None:
    """A JSON object from a small run file (config, index, args), or None when absent,
    unreadable, too large or not an object (:func:`pyaudit.runfiles.load_json` says which).

    With ``memo`` (an audit's cache), parsed once per distinct content: the dict returned
    may be shared, never mutate it.
    """
    return runfiles.load_json(path, memo=memo)[0]


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
    # Run files that are there but could not be read or used (each becomes a finding).
    problems: tuple[runfiles.Problem, ...] = ()

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
        shown = os.path.relpath(current, directory)
        if run.args is None and (known is None or "args.json" in known):
            args, problem = runfiles.load_json(
                current / "args.json", _shown(shown, "args.json"), memo
            )
            if args is not None:
                run.args_path, run.args = current / "args.json", args
                run.problems += tuple(runfiles.args_problems(_shown(shown, "args.json"), args))
            elif problem is not None:
                run.problems += (problem,)
        if run.yaml is None and (known is None or "training_args.yaml" in known):
            path = current / "training_args.yaml"
            yaml, problem = runfiles.load_yaml_scalars(path)
            if yaml is not None:
                run.yaml_path, run.yaml = path, yaml
            elif problem is not None:
                run.problems += (runfiles.Problem(
                    _shown(shown, "training_args.yaml"), problem.code, problem.reason),)
        if run.args is not None or run.yaml is not None or run.problems:
            break
        if current.parent == current or current == stop_parent or current.parent == stop_parent:
            break
        current = current.parent
    return run


def _shown(relative: str, name: str) -> str:
    """A run file as a report names it: relative to the checkpoint (``../args.json``)."""
    return name if relative == "." else f"{relative}/{name}"


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
        if os.path.isdir(path):  # False, not an error, where a parent cannot be searched
            return path
    if reference.count("/") == 1 and not reference.startswith((".", "/")):
        org, name = reference.split("/")
        for cache in hf_cache_dirs():
            snapshots = cache / f"models--{org}--{name}" / "snapshots"
            try:
                found = sorted(
                    (p for p in snapshots.iterdir() if os.path.exists(p / "config.json")),
                    key=lambda p: p.stat().st_mtime,
                    reverse=True,
                )
            except OSError:
                continue
            if found:
                return found[0]
        for path in modelscope_dirs(org, name):
            if os.path.exists(path / "config.json"):
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

"""What a run meant to save: its own saved arguments, read as data, by the version that wrote them.

ms-swift's ``args.json``: the training type is ``tuner_type`` from 4.0, ``train_type`` in 3.x,
``sft_type`` in 2.x; ``load_args`` with ``ckpt_dir`` (or ``model`` / ``adapters``) says whether
the run re-read an earlier run's saved arguments, which force-load the training type over the
command line. LLaMA-Factory's ``training_args.yaml`` (``finetuning_type``; LlamaBoard writes it,
the CLI does not, its model card's tags name the type), PEFT's
``adapter_config.json``, and the user's ``--expect`` / ``--expect-run``. Nothing is unpickled:
``training_args.bin`` is opaque.
"""

from __future__ import annotations

import os
import re
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
    "oft",
}  # fmt: skip
FULL_TRAIN_TYPES = {"full", "freeze"}
# Where each framework version keeps the training type, newest first: ms-swift 4.x, 3.x, 2.x,
# then LLaMA-Factory.
TYPE_KEYS = ("tuner_type", "train_type", "sft_type", "finetuning_type")

# LLaMA-Factory 0.9.5 (hparams/finetuning_args.py): finetuning_type is lora, oft, freeze or full,
# lora when the training yaml names none. Its CLI saves no training_args.yaml (LlamaBoard, its
# web UI, writes one into the output folder and trains from it). The model card (README.md)
# tags "llama-factory" and the type for full and freeze runs (train/trainer_utils.py
# create_modelcard_and_push); for adapter runs PEFT rewrites the tags (peft 0.18.1
# create_or_update_model_card): "llama-factory" (the model's tag, model/patcher.py), and
# "lora" for a LoRA adapter, no type for OFT.
LLAMAFACTORY_TYPES = ("lora", "oft", "freeze", "full")
LLAMAFACTORY_DEFAULT_TYPE = "lora"
CARD = "README.md"  # the model card
CARD_HEAD_BYTES = 64 * 1024  # a model card's YAML front matter is at its top
CARD_LEVELS = 2  # a card is looked for this many directories above the checkpoint's


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
    fetched: runfiles.Fetched | None = None,
) -> tuple[dict[str, Any] | None, runfiles.Problem | None]:
    """:func:`pyaudit.runfiles.load_json` of ``directory / name``. ``known``: the file's
    (size, digest) as a sweep's reading threads found it (``_core.digest_files``): content
    ``memo`` (an audit's cache) parsed before is answered without reading the file again
    (or making its path). ``fetched``: as for :func:`pyaudit.runfiles.read_bytes`."""
    if known is not None and memo is not None:
        held, doc, why = runfiles.parsed(known, memo)
        if held:
            return doc, runfiles.Problem(name, "invalid-file", why) if why is not None else None
    return runfiles.load_json(directory / name, name, memo, fetched)


def read_json(
    path: Path, memo: Parsed | None = None, fetched: runfiles.Fetched | None = None
) -> dict[str, Any] | None:
    """A JSON object from a small run file (config, index, args), or None when absent,
    unreadable, too large or not an object (:func:`pyaudit.runfiles.load_json` says which).

    With ``memo`` (an audit's cache), parsed once per distinct content: the dict returned
    may be shared, never mutate it.
    """
    return runfiles.load_json(path, memo=memo, fetched=fetched)[0]


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
        if self.source == "--expect-run":
            return f"--expect-run {self.value}"
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
            found = type_field(self.args)
            if found is not None:
                key, value = found
                kind = kind_of_train_type(value)
                if kind:
                    return Declared(kind, self.args_path.name, key, value, self.args_path)
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
    fetched: runfiles.Fetched | None = None,
) -> RunArgs:
    """The run files of a checkpoint: in its directory, else in its parents (ms-swift keeps
    ``args.json`` both in the run dir and in each ``checkpoint-N``), never above ``stop``'s
    parent. ``listed``: the run files of directories whose listing is known (by path), so
    that files known to be absent there are not probed for. ``fetched``: run files' bytes
    read elsewhere (:func:`pyaudit.runfiles.read_bytes`)."""
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
                current / "args.json", _shown(shown, "args.json"), memo, fetched
            )
            if args is not None:
                run.args_path, run.args = current / "args.json", args
                run.problems += tuple(runfiles.args_problems(_shown(shown, "args.json"), args))
            elif problem is not None:
                run.problems += (problem,)
        if run.yaml is None and (known is None or "training_args.yaml" in known):
            path = current / "training_args.yaml"
            yaml, problem = runfiles.load_yaml_scalars(path, fetched)
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


def llamafactory_card(
    directory: Path, stop: Path | None, levels: int = CARD_LEVELS
) -> tuple[Path, str | None] | None:
    """(README.md, finetuning_type) of the model card saved with a LLaMA-Factory run, in the
    checkpoint's directory or the ones above it (not above ``stop``'s parent): the card whose
    front matter tags ``llama-factory`` and at most one of :data:`LLAMAFACTORY_TYPES` (None:
    none tagged). Read only to explain a finding (the CLI saves no other readable record of
    the type)."""
    current = directory
    stop_parent = stop.parent if stop is not None else None
    for _ in range(levels + 1):
        tags = card_tags(current / CARD)
        if tags is not None and "llama-factory" in tags:
            types = [t for t in LLAMAFACTORY_TYPES if t in tags]
            if len(types) > 1:
                return None
            return current / CARD, types[0] if types else None
        if current.parent == current or current == stop_parent or current.parent == stop_parent:
            break
        current = current.parent
    return None


def card_tags(path: Path) -> list[str] | None:
    """The ``tags:`` list of a model card's YAML front matter (``---`` lines at its top),
    or None when there is no card or no front matter."""
    data = runfiles.read_head(path, CARD_HEAD_BYTES)
    if data is None:
        return None
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    tags: list[str] = []
    in_tags = False
    for line in lines[1:]:
        if line.strip() == "---":
            return tags
        if in_tags and re.match(r"\s*-\s", line):
            tags.append(line.strip()[1:].strip().strip("'\""))
            continue
        in_tags = line.rstrip() == "tags:"
    return None  # no end of the front matter within the head read


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


def resolve_model(reference: str, relative_to: Path, stop: Path | None = None) -> Path | None:
    """A model reference (path or hub id) as a local directory, never over the network.

    A relative path is tried against the checkpoint's directory and its ancestors
    (training frameworks record paths relative to where the run was launched),
    then the current directory; a path that is not there (a tree copied from the machine
    that trained) is looked for by its tail inside the scanned tree ``stop``.
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
    if candidate.is_absolute():
        moved = find_by_tail(reference, relative_to, stop, marker="config.json")
        if moved is not None:
            return moved
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


# --- ms-swift: which version wrote a run, and what it re-read ---------------------------------


def type_field(args: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (key, value) that holds the training type in a framework's saved arguments:
    the first of :data:`TYPE_KEYS` present with a string value."""
    for key in TYPE_KEYS:
        value = args.get(key)
        if isinstance(value, str) and value:
            return key, value
    return None


def swift_major(args: Mapping[str, Any]) -> int | None:
    """The ms-swift major version that wrote ``args``: its ``swift_version`` when recorded,
    else told by the key of the training type (4.x ``tuner_type``, 3.x ``train_type``,
    2.x ``sft_type``). None for arguments that are not ms-swift's."""
    recorded = args.get("swift_version")
    if isinstance(recorded, str):
        m = re.match(r"\s*(\d+)\.", recorded)
        if m:
            return int(m.group(1))
    found = type_field(args)
    if found is None:
        return None
    return {"tuner_type": 4, "train_type": 3, "sft_type": 2}.get(found[0])


def swift_full_flags(major: int | None, load_args: bool) -> str:
    """The command-line flags that make an ms-swift run of this version train full weights."""
    key = {2: "--sft_type", 3: "--train_type"}.get(major or 4, "--tuner_type")
    return ("--load_args false " if load_args else "") + f"{key} full"


def is_true(value: object) -> bool:
    return value is True or (
        isinstance(value, str) and value.strip().lower() in ("true", "1", "yes")
    )


@dataclass
class Inherited:
    """An ms-swift run whose training type was re-read from an earlier checkpoint's args.json
    (``load_args`` on): ms-swift force-loads that key over the command line, silently."""

    key: str  # tuner_type / train_type / sft_type
    value: str  # the type the run ran with (and the parent's, when the parent was found)
    source: str  # the run's ckpt_dir (or model / adapters entry) as recorded
    parent: Path | None  # the parent's directory, found on disk or by the path's tail
    parent_value: str | None  # what the parent's args.json says (None: parent not found)
    major: int | None  # ms-swift major version that wrote the run
    rlhf_type: str | None
    via: str = "model"  # the argument that named ckpt_dir: model, adapters, resume_from_checkpoint

    @property
    def named(self) -> str:
        """``ckpt_dir`` as the run's arguments named it (``--adapters X``)."""
        return f"--{self.via} {self.source}"

    @property
    def fix(self) -> str:
        """The rerun that trains full weights. A ``ckpt_dir`` named by ``--adapters`` (or a
        resumed checkpoint) is an adapter: turning load_args off alone would train the
        ``--model`` and leave the adapter unloaded (:func:`swift_ignored_adapters`), so it
        is merged first."""
        flags = swift_full_flags(self.major, load_args=True)
        if self.via == "model":
            return f"rerun with {flags}"
        return (
            f"merge the adapter (swift export --adapters {self.source} --merge_lora true), then "
            f"rerun with {flags} --model {self.source}-merged ({self.major or 4}.x loads "
            "--adapters only for adapter training)"
        )

    def explain(self) -> str:
        """The mechanism, in the words of the version that wrote the run."""
        if self.parent is not None:
            where = f"{self.parent / 'args.json'} (recorded as {self.source})"
            if str(self.parent) == self.source:
                where = str(self.parent / "args.json")
            said = f"{where} says {self.key}={self.parent_value}"
        else:
            said = f"{self.source}/args.json (not in the scanned tree)"
        how = f"ms-swift {self.major}.x" if self.major else "ms-swift"
        what = f"{self.rlhf_type} run" if self.rlhf_type else "run"
        return (
            f"this {what} was started with load_args=true on {self.source}, so {how} re-read the "
            f"saved arguments there and force-loaded {self.key}={self.value} over the command line"
            f" ({said}; the log says only 'Successfully loaded .../args.json')"
        )


def find_by_tail(
    reference: str, start: Path, stop: Path | None, marker: str = "args.json"
) -> Path | None:
    """A directory recorded as an absolute path on another machine (a tree copied from a
    training cluster), found again by the path's tail below ``start`` or one of its
    ancestors up to ``stop``: the longest tail that names a directory holding ``marker``
    wins. Without ``stop``, nothing is searched (the scanned tree bounds the search)."""
    if stop is None:
        return None
    parts = [p for p in Path(reference).parts if p not in ("/", "")]
    if not parts:
        return None
    anchors = [start, *start.parents]
    try:
        anchors = anchors[: anchors.index(stop) + 1]
    except ValueError:
        return None  # start is not below the scanned tree
    for k in range(len(parts)):  # longest tail first
        tail = Path(*parts[k:])
        for anchor in anchors:
            candidate = anchor / tail
            if (candidate / marker).is_file():
                return candidate
    return None


def find_parent_run(reference: str, relative_to: Path, stop: Path | None) -> Path | None:
    """The directory a run's ``ckpt_dir`` / ``model`` names, as it exists here."""
    candidate = Path(reference).expanduser()
    if candidate.is_absolute() and (candidate / "args.json").is_file():
        return candidate
    if not candidate.is_absolute():
        for base in [relative_to, *relative_to.parents][:8]:
            if (base / candidate / "args.json").is_file():
                return base / candidate
    return find_by_tail(reference, relative_to, stop)


def swift_inherited(
    args: Mapping[str, Any], relative_to: Path, stop: Path | None,
    fetched: runfiles.Fetched | None = None,
) -> Inherited | None:
    """Whether an ms-swift run's adapter training type came from an earlier run's saved
    arguments rather than from its command line.

    ms-swift (every version with ``load_args``) sets ``ckpt_dir`` to the first of
    ``adapters`` / ``model`` that holds an ``args.json`` and, when ``load_args`` is on,
    force-loads the training type from it. The parent is looked for where the path
    points, else by the path's tail inside the scanned tree (a copied store); when it is
    found, its type must equal the run's; when it is not, the run's own record (load_args
    true, ckpt_dir set, an adapter type) is the evidence.
    """
    major = swift_major(args)
    found = type_field(args)
    if major is None or found is None or found[0] == "finetuning_type":
        return None
    key, value = found
    if kind_of_train_type(value) != "adapter" or not is_true(args.get("load_args")):
        return None
    source = args.get("ckpt_dir")
    if not (isinstance(source, str) and source):
        return None
    parent = find_parent_run(source, relative_to, stop)
    parent_value: str | None = None
    if parent is not None:
        parent_args = read_json(parent / "args.json", fetched=fetched)
        parent_found = type_field(parent_args) if parent_args is not None else None
        if parent_found != (key, value):
            # The parent says something else, or under another version's key (which this
            # version does not force-load): the run's type was its own (or its default).
            return None
        parent_value = parent_found[1]
    rlhf = args.get("rlhf_type")
    rlhf_type = rlhf if isinstance(rlhf, str) else None
    via = _ckpt_via(args, source)
    return Inherited(key, value, source, parent, parent_value, major, rlhf_type, via)


def _ckpt_via(args: Mapping[str, Any], source: str) -> str:
    """Which argument named an ms-swift run's ``ckpt_dir``: ``adapters`` (they come first),
    ``resume_from_checkpoint`` (with ``resume_only_model``, ms-swift 3.12 / 4.6 copy it into
    ``model`` or ``adapters``), else ``model``."""
    adapters = args.get("adapters")
    if args.get("resume_from_checkpoint") == source and is_true(args.get("resume_only_model")):
        return "resume_from_checkpoint"
    if isinstance(adapters, list) and source in adapters:
        return "adapters"
    return "model"


def swift_str_list(value: object) -> list[str]:
    """An ms-swift list argument (``adapters``) as recorded: a list of strings, or one string."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def swift_ignored_adapters(args: Mapping[str, Any]) -> list[str]:
    """The ``adapters`` an ms-swift SFT run recorded but did not train from.

    ms-swift 3.12.6 (``swift/llm/train/tuner.py``) and 4.6.0 (``swift/pipelines/train/tuner.py``)
    load ``--adapters`` (and an adapter ``--resume_from_checkpoint``) only inside
    ``prepare_model``'s adapter branch (``train_type``/``tuner_type`` other than ``full``): a
    full run with ``--adapters X`` trains the ``--model`` alone (seen in a 3.12.6 run: its
    weights equal, tensor for tensor, those of a plain full run from the same base). RLHF
    runs use ``adapters`` for the reference model too: not claimed here."""
    found = type_field(args)
    if found is None or found[0] not in ("tuner_type", "train_type") or found[1] != "full":
        return []
    if swift_major(args) not in (3, 4) or args.get("rlhf_type"):
        return []
    return swift_str_list(args.get("adapters"))


@dataclass
class Resumed:
    """An ms-swift run that resumed a checkpoint (``resume_from_checkpoint``), and what that
    checkpoint's own args.json says it trained (None: not found here)."""

    source: str
    parent: Path | None
    parent_type: tuple[str, str] | None

    @property
    def parent_kind(self) -> Kind | None:
        return kind_of_train_type(self.parent_type[1]) if self.parent_type else None


def swift_resumed(
    args: Mapping[str, Any], relative_to: Path, stop: Path | None,
    fetched: runfiles.Fetched | None = None,
) -> Resumed | None:
    """The checkpoint an ms-swift run resumed, found where the recorded path points or by
    its tail inside the scanned tree (ms-swift writes args.json into every checkpoint-N)."""
    source = args.get("resume_from_checkpoint")
    if swift_major(args) is None or not (isinstance(source, str) and source):
        return None
    parent = find_parent_run(source, relative_to, stop)
    parent_args = read_json(parent / "args.json", fetched=fetched) if parent is not None else None
    parent_type = type_field(parent_args) if parent_args is not None else None
    return Resumed(source, parent, parent_type)


# --- expectations per run ------------------------------------------------------------------


def parse_expect_run(value: str) -> tuple[str, Kind]:
    """``PATTERN=full`` or ``PATTERN=adapter`` (``--expect-run``)."""
    pattern, sep, kind = value.rpartition("=")
    if not sep or not pattern or kind not in ("full", "adapter"):
        raise ValueError(f"--expect-run {value!r}: expected PATTERN=full or PATTERN=adapter")
    return pattern, kind  # type: ignore[return-value]


def expectation_for(display: str, rules: Collection[tuple[str, Kind]]) -> tuple[str, Kind] | None:
    """The last ``--expect-run`` rule whose glob matches a checkpoint's path (as reported, or
    any of its trailing parts: ``grpo-*`` matches ``out/grpo-x/v0/checkpoint-2``)."""
    import fnmatch

    parts = display.replace("\\", "/").strip("/").split("/")
    heads = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    chosen: tuple[str, Kind] | None = None
    for pattern, kind in rules:
        p = pattern.strip("/")
        if any(fnmatch.fnmatchcase(c, p) for c in (*heads, *tails)) or any(
            fnmatch.fnmatchcase(part, p) for part in parts
        ):
            chosen = (pattern, kind)
    return chosen

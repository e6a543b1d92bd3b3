"""PATH -> checkpoint directories: which files hold weights, indexes, adapters and run args.

Knows file names, not file contents: nothing here reads a byte of a weight file.
Symlinks are followed (the Hugging Face cache keeps snapshots as links to blobs),
with a guard against directory cycles.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

INDEX_SUFFIX = ".safetensors.index.json"
BIN_INDEX_SUFFIX = ".bin.index.json"
ADAPTER_CONFIG = "adapter_config.json"
CONFIG = "config.json"
ZERO_DIR = re.compile(r"global_step\d+$")
FSDP_DIR = re.compile(r"pytorch_model_fsdp_\d+$|.*_fsdp_\d+$")
# accelerate's FSDP optimizer shards (optimizer_0/*.distcp) beside the model's: training
# state of the checkpoint that holds them, never a model of its own.
FSDP_STATE_DIR = re.compile(r"optimizer_\d+$")
CHECKPOINT_NAME = re.compile(r"checkpoint-\d+")
# Pickled weight files worth naming (names only: they are never unpickled).
WEIGHT_BIN = re.compile(
    r"(pytorch_model|adapter_model|model)(-\d{5}-of-\d{5})?\.bin$"
    r"|pytorch_model_fsdp(_\d+)?\.bin$"  # accelerate FSDP FULL_STATE_DICT (model_index > 0: _N)
)
RUN_ARGS_LEVELS = 2  # run args are looked for this many directories above a checkpoint
RUN_FILES = ("args.json", "training_args.yaml", "trainer_state.json", "training_args.bin")
# Directories deeper than this below a PATH are reported, not searched (each level is a
# nested generator: Python's recursion limit is ~1,000).
MAX_DEPTH = 256


class _Entry(Protocol):
    """What discovery asks of a directory entry: an ``os.DirEntry``, or a :class:`ListedEntry`."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> str: ...

    def is_dir(self) -> bool: ...


class ListedEntry:
    """A directory entry as a listing of keys names it (a remote store's mirror): a file,
    or a directory its keys run through."""

    __slots__ = ("_dir", "name", "path")

    def __init__(self, name: str, path: str, is_dir: bool) -> None:
        self.name = name
        self.path = path
        self._dir = is_dir

    def is_dir(self) -> bool:
        return self._dir

    def __repr__(self) -> str:
        return f"ListedEntry({self.path!r}{', dir' if self._dir else ''})"


#: Directory (its path, as the walk reaches it) -> its entries: a tree known from a listing,
#: walked by :func:`discover` without asking the filesystem (no symlinks, so no cycles).
Listing = Mapping[str, Sequence[ListedEntry]]


def listing_of(root: str, files: Iterable[str]) -> dict[str, list[ListedEntry]]:
    """The :data:`Listing` of ``files`` (relative names, ``/``-separated, no empty, ``.`` or
    ``..`` part) under the directory ``root``: what walking a tree that holds just them
    (and the directories their names run through) finds."""
    root = str(Path(root))
    tree: dict[str, list[ListedEntry]] = {root: []}
    last_dir, last_path = "", root  # (the directory of the file before, and its path)
    for rel in files:
        cut = rel.rfind("/")
        directory, name = (rel[:cut], rel[cut + 1 :]) if cut >= 0 else ("", rel)
        if directory != last_dir:  # (a listing names a directory's files together)
            parent = root
            for part in directory.split("/") if directory else ():
                path = f"{parent}/{part}"
                if path not in tree:
                    tree[path] = []
                    tree[parent].append(ListedEntry(part, path, True))
                parent = path
            last_dir, last_path = directory, parent
        tree[last_path].append(ListedEntry(name, f"{last_path}/{name}", False))
    return tree


def is_url(path: str | os.PathLike[str]) -> bool:
    """A PATH naming a remote store (``s3://...``): audited through pyaudit.remote."""
    return "://" in os.fspath(path)


@dataclass
class CheckpointDir:
    """One checkpoint: a directory and what it holds, as file names relative to it."""

    path: Path  # as reached from the PATH given (not resolved)
    display: str  # relative to the PATH given, or the PATH itself
    safetensors: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    bin_weights: list[str] = field(default_factory=list)
    bin_indexes: list[str] = field(default_factory=list)
    has_config: bool = False
    has_adapter_config: bool = False
    zero_dirs: list[str] = field(default_factory=list)
    fsdp_files: list[str] = field(default_factory=list)
    # The files of the ZeRO folders (global_step2/zero_pp_rank_0_mp_rank_00_optim_states.pt)
    # and training-state folders (FSDP optimizer_0/) of this checkpoint, by relative name.
    zero_files: list[str] = field(default_factory=list)
    state_dirs: list[str] = field(default_factory=list)
    run_files: list[str] = field(default_factory=list)
    other_files: list[str] = field(default_factory=list)
    scan_root: Path | None = None
    # Run files (args.json, ...) of this directory and the ones above it that discovery
    # listed, by path: the run-args lookup need not probe for files it knows are absent.
    listed_run_files: dict[str, tuple[str, ...]] | None = None
    # Why this directory could not be searched (permission denied, too deep), else None:
    # it may hold checkpoints, so it is reported rather than skipped.
    unlisted: str | None = None

    def file(self, name: str) -> str:
        """``str(self.path / name)``, without making a Path (a sweep makes thousands)."""
        base = str(self.path)
        if base == ".":
            return name
        return base + name if base.endswith("/") else f"{base}/{name}"

    @property
    def has_weights(self) -> bool:
        return bool(self.safetensors or self.indexes or self.bin_weights or self.bin_indexes)

    @property
    def has_pickled(self) -> bool:
        """Pickle-era files :func:`pyaudit.auditing.pickled.read_pickled` reads: ``.bin``
        weights, an FSDP / DCP folder, DeepSpeed ``global_step*/`` folders."""
        return bool(self.bin_weights or self.fsdp_files or self.zero_dirs)

    @property
    def is_checkpoint(self) -> bool:
        """Weights or adapter files, or a model/trainer dir whose weights are elsewhere."""
        if self.has_weights or self.has_adapter_config:
            return True
        return self.is_weightless_candidate

    def reported_weightless(self, found_below: bool) -> bool:
        """Whether a directory without weights is reported as a checkpoint (as weightless):
        when it holds a model's sharded training state (ZeRO ``global_step*/``, FSDP
        shards), when nothing below it was a checkpoint, or, with checkpoints below, when it
        is a run root that saved a model's config and its run records but no weights (the
        final save people upload)."""
        if self.zero_dirs or self.fsdp_files:
            return True
        if not self.is_weightless_candidate:
            return False
        return not found_below or (self.has_config and bool(self.run_files))

    @property
    def is_weightless_candidate(self) -> bool:
        return bool(
            self.has_config
            or self.zero_dirs
            or self.fsdp_files
            or (
                CHECKPOINT_NAME.fullmatch(self.path.name) and "trainer_state.json" in self.run_files
            )
        )


def _classify(
    path: Path, display: str, entries: Sequence[_Entry], listing: Listing | None = None
) -> tuple[CheckpointDir, list[Path]]:
    ckpt = CheckpointDir(path=path, display=display)
    subdirs: list[Path] = []
    for entry in entries:
        name = entry.name
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        if is_dir:
            if ZERO_DIR.fullmatch(name):
                ckpt.zero_dirs.append(name)
                ckpt.zero_files.extend(f"{name}/{f}" for f in _files_in(entry.path, listing))
            elif FSDP_DIR.fullmatch(name):
                ckpt.fsdp_files.extend(
                    f"{name}/{f}" for f in _files_in(entry.path, listing) if _is_dcp_file(f)
                )
            elif FSDP_STATE_DIR.fullmatch(name) and _distcp_in(entry.path, listing):
                ckpt.state_dirs.append(name)
            elif not name.startswith("."):
                subdirs.append(Path(entry.path))
            continue
        if name.endswith(".safetensors"):
            ckpt.safetensors.append(name)
        elif name.endswith(INDEX_SUFFIX):
            ckpt.indexes.append(name)
        elif name.endswith(BIN_INDEX_SUFFIX):
            ckpt.bin_indexes.append(name)
        elif WEIGHT_BIN.fullmatch(name):
            ckpt.bin_weights.append(name)
        elif name == CONFIG:
            ckpt.has_config = True
        elif name == ADAPTER_CONFIG:
            ckpt.has_adapter_config = True
        elif name.endswith(".distcp"):
            ckpt.fsdp_files.append(name)
        elif name in RUN_FILES:
            ckpt.run_files.append(name)
        else:
            ckpt.other_files.append(name)
    for names in (ckpt.safetensors, ckpt.indexes, ckpt.bin_weights, ckpt.bin_indexes,
                  ckpt.zero_dirs, ckpt.zero_files, ckpt.fsdp_files, ckpt.state_dirs, ckpt.run_files,
                  ckpt.other_files):
        names.sort()
    return ckpt, sorted(subdirs, key=_natural)


def _natural(path: Path) -> list[object]:
    """checkpoint-50 before checkpoint-100."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _is_dcp_file(name: str) -> bool:
    """A torch.distributed.checkpoint file: a shard (``__0_0.distcp``) or the ``.metadata``
    that maps every tensor to its shards (without it the shards cannot be read)."""
    return name.endswith(".distcp") or name == ".metadata"


def _distcp_in(directory: str, listing: Listing | None) -> list[str]:
    return [name for name in _files_in(directory, listing) if name.endswith(".distcp")]


def _files_in(directory: str, listing: Listing | None, limit: int = 4096) -> list[str]:
    """The names in a shard folder (ZeRO, FSDP), sorted; at most ``limit`` of them."""
    if listing is not None:
        return sorted(entry.name for entry in listing.get(directory, ()))[:limit]
    try:
        with os.scandir(directory) as it:
            names = []
            for entry in it:
                names.append(entry.name)
                if len(names) >= limit:
                    break
    except OSError:
        return []
    return sorted(names)


def _below(display: str, name: str, at_root: bool) -> str:
    """A subdirectory's display path: relative to the PATH given (the PATH itself at the top)."""
    return name if at_root else f"{display}/{name}"


def discover(given: str, listing: Listing | None = None) -> Iterator[CheckpointDir]:
    """Every checkpoint under ``given`` (a checkpoint dir, a run tree, a store), lazily.

    A directory of a checkpoint's own (``global_step*/`` ZeRO shards, FSDP shard
    folders) is part of it. A directory with a config but no weights is reported
    (as weightless) only when no checkpoint lies below it. ``listing``: the tree under the
    directory ``given`` as listed (a remote store's keys, made as placeholders below it),
    walked instead of asking the filesystem; the same checkpoints, by the same paths.
    """
    root = Path(given)
    seen: set[tuple[int, int]] = set()

    def walk(
        path: Path,
        display: str,
        above: tuple[tuple[str, tuple[str, ...]], ...] = (),
        top: bool = False,
        depth: int = 0,
    ) -> Iterator[CheckpointDir]:
        if listing is None:
            try:
                st = os.stat(path)
            except OSError:
                return
            key = (st.st_dev, st.st_ino)
            if key in seen:  # a symlink cycle, or the same dir reached twice
                return
            seen.add(key)
        if depth > MAX_DEPTH:
            why = f"more than {MAX_DEPTH} directories below {given}: not searched"
            yield CheckpointDir(path=path, display=display, scan_root=root, unlisted=why)
            return
        entries: Sequence[_Entry]
        try:
            if listing is not None:
                entries = listing.get(str(path), ())
            else:
                with os.scandir(path) as it:
                    entries = list(it)
        except OSError as e:
            if e.errno != errno.ENOENT:  # gone since it was listed: nothing to report
                why = f"cannot be listed: {e.strerror or e}" + (
                    " (anything below it was not searched)" if e.errno == errno.EACCES else "")
                yield CheckpointDir(path=path, display=display, scan_root=root, unlisted=why)
            return
        ckpt, subdirs = _classify(path, display, entries, listing)
        ckpt.scan_root = root
        here = (*above[-RUN_ARGS_LEVELS:], (str(path), tuple(ckpt.run_files)))
        ckpt.listed_run_files = dict(here)
        if ckpt.has_weights or ckpt.has_adapter_config:
            yield ckpt
            for sub in subdirs:
                yield from walk(sub, _below(display, sub.name, top), here, depth=depth + 1)
            return
        found_below = False
        for sub in subdirs:
            for child in walk(sub, _below(display, sub.name, top), here, depth=depth + 1):
                found_below = True
                yield child
        if ckpt.reported_weightless(found_below):
            yield ckpt

    if listing is None and root.is_file():
        # A single weights file: audit the directory that holds it, that file only.
        parent = root.parent
        try:
            with os.scandir(parent) as it:
                entries = list(it)
        except OSError:
            entries = []
        ckpt, _ = _classify(parent, given, entries)
        ckpt.scan_root = parent
        if root.name.endswith(".safetensors"):
            ckpt.safetensors = [root.name]
            ckpt.indexes = []
            ckpt.bin_weights = []
            ckpt.bin_indexes = []
        yield ckpt
        return
    yield from walk(root, given, top=True)

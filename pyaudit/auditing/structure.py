"""A checkpoint's structure: its weight files (valid or not, what each holds, repeated
names), its index against its shards (missing, misplaced, unlisted, strays, total_size)
and the numbering of its shards. Findings out, over the headers the core read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pyaudit import runs
from pyaudit.auditing import match
from pyaudit.auditing.cache import AuditCache
from pyaudit.auditing.compare import Found, is_peft_tensor
from pyaudit.auditing.results import FileEntry
from pyaudit.discover import CheckpointDir
from pyaudit.findings import Finding, finding
from pyaudit.headers import Header
from pyaudit.memo import Identity
from pyaudit.runfiles import Fetched, Problem, index_problems
from pyaudit.units import plural

SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<k>\d{5})-of-(?P<n>\d{5})\.safetensors$")
TRUNCATION_RULES = {"data-truncated", "trailing-bytes", "header-truncated", "too-small"}


def weights_index(ckpt: CheckpointDir) -> str | None:
    """The index of the (non-adapter) weights a loader reads: model.safetensors.index.json,
    else the first other one, or None."""
    indexes = [n for n in ckpt.indexes if not is_adapter_file(n)]
    if not indexes:
        return None
    name = "model.safetensors.index.json"
    return name if name in indexes else indexes[0]


def run_file_names(ckpt: CheckpointDir) -> list[str]:
    """The JSON files of a checkpoint that every audit reads (config, adapter config, index)."""
    index = weights_index(ckpt)
    names = [index] if index is not None else []
    if ckpt.has_config:
        names.append("config.json")
    if ckpt.has_adapter_config:
        names.append("adapter_config.json")
    return names


def header_files(ckpt: CheckpointDir) -> list[str]:
    """The .safetensors files whose headers the audit needs."""
    return [ckpt.file(name) for name in ckpt.safetensors]



def file_finding(name: str, header: Header) -> Finding:
    error = header.error
    reason = error.reason if error else header.rule
    rule = header.rule
    tensor = [error.tensor] if error is not None and error.tensor else []
    if rule == "lfs-pointer":
        return finding("lfs-pointer", f"{name}: {reason}", tensors=tensor)
    if rule in TRUNCATION_RULES:
        return finding("shard-truncated", f"{name}: {reason} [{rule}]", tensors=tensor)
    if rule == "io-error":
        return finding("unreadable", f"{name}: {reason}", tensors=tensor)
    return finding("corrupt-header", f"{name}: {reason} [{rule}]", tensors=tensor)


def is_adapter_file(name: str) -> bool:
    return name.startswith("adapter_model")


@dataclass
class Contents:
    """The readable files' headers (one audit's own: never shared). Per-tensor tables (an
    entry per tensor) are built only when a check needs them, once per distinct file in
    ``cache``: a clean checkpoint is judged from native counts."""

    cache: AuditCache
    base_files: list[tuple[str, Header, tuple[object, ...]]] = field(default_factory=list)
    adapter_files: list[tuple[str, Header, tuple[object, ...]]] = field(default_factory=list)
    headers: dict[str, Header] = field(default_factory=dict)  # every readable file
    keys: dict[str, tuple[object, ...]] = field(default_factory=dict)
    found_bytes: int = 0
    header_bytes: dict[str, int] = field(default_factory=dict)
    data_bytes: dict[str, int] = field(default_factory=dict)  # tensor bytes per file
    readable: set[str] = field(default_factory=set)
    base_keys: list[tuple[object, ...]] = field(default_factory=list)  # content ids of base files
    base_repeated: int = 0  # tensors whose name an earlier base file also holds
    adapter_repeated: int = 0
    index_exact: bool = False  # every named shard holds exactly what the index places in it
    files: list[FileEntry] = field(default_factory=list)  # every weight file, in order
    findings: list[Finding] = field(default_factory=list)  # unreadable files, repeated names
    _base: Mapping[str, Found] | None = None
    _adapter: Mapping[str, Found] | None = None

    @property
    def base(self) -> Mapping[str, Found]:
        """Name -> Found over the non-adapter files (a later file's tensor wins)."""
        if self._base is None:
            self._base = _merged(self.base_files, self.cache)
        return self._base

    @property
    def adapter(self) -> Mapping[str, Found]:
        if self._adapter is None:
            self._adapter = _merged(self.adapter_files, self.cache)
        return self._adapter

    @property
    def base_count(self) -> int:
        """Distinct tensor names in the non-adapter files."""
        return sum(len(h) for _, h, _ in self.base_files) - self.base_repeated

    @property
    def adapter_count(self) -> int:
        return sum(len(h) for _, h, _ in self.adapter_files) - self.adapter_repeated

    @property
    def base_peft(self) -> int:
        """PEFT-named tensors among the base files (read natively first: usually none)."""
        headers = [h for _, h, _ in self.base_files]
        if not self.cache.fast or match.names_containing(headers, "lora_"):
            return sum(file_table(n, h, k, self.cache).peft for n, h, k in self.base_files)
        return 0

    def tensors_by_file(self, name: str) -> frozenset[str]:
        if name not in self.readable:
            return frozenset()
        return file_table(name, self.headers[name], self.keys[name], self.cache).names


def _merged(
    files: list[tuple[str, Header, tuple[object, ...]]], cache: AuditCache
) -> Mapping[str, Found]:
    if len(files) == 1:
        return file_table(*files[0], cache).tensors
    merged: dict[str, Found] = {}
    for name, header, key in files:
        merged.update(file_table(name, header, key, cache).tensors)
    return merged


def indexed_files(doc: dict[str, Any] | None, cache: AuditCache) -> frozenset[str] | None:
    """The weight files the (non-adapter) index names, or None without a readable index."""
    weight_map = doc.get("weight_map") if doc is not None else None
    if not isinstance(weight_map, dict):
        return None
    return cache.indexed_files.get(
        Identity(doc), lambda: frozenset(f for f in weight_map.values() if isinstance(f, str))
    )


@dataclass(frozen=True)
class FileTable:
    """What one valid shard holds, derived once per distinct header."""

    tensors: Mapping[str, Found]  # read-only: shared through the cache
    names: frozenset[str]
    data_bytes: int
    peft: int  # tensors named as PEFT wrappers (lora_A, lora_B, ...)


def file_key(name: str, header: Header) -> tuple[object, ...]:
    """Content identity of a file as the audit sees it."""
    if not header.ok:
        return (name, header.rule, header.file_size)
    return (name, header.digest, header.header_size, header.file_size)


def file_table(
    name: str, header: Header, key: tuple[object, ...], cache: AuditCache
) -> FileTable:
    return cache.file_tables.get(key, lambda: _file_table(name, header))


def _file_table(name: str, header: Header) -> FileTable:
    names, dtypes, shapes, offsets = header.table()
    tensors = {
        n: Found(d, s, e - b, name)
        for n, d, s, (b, e) in zip(names, dtypes, shapes, offsets, strict=True)
    }
    joined = "\n".join(names)
    peft = sum(1 for n in names if is_peft_tensor(n)) if "lora_" in joined else 0
    return FileTable(
        MappingProxyType(tensors), frozenset(names), sum(e - b for b, e in offsets), peft
    )


def _repeated(files: list[tuple[str, Header, tuple[object, ...]]], cache: AuditCache) -> int:
    """Tensors whose name an earlier one of ``files`` also holds."""
    if len(files) < 2:
        return 0
    if cache.fast:
        return match.repeated_names([h for _, h, _ in files])
    names = [file_table(*f, cache).names for f in files]
    return sum(len(n) for n in names) - len(frozenset().union(*names))


def collect(
    ckpt: CheckpointDir,
    headers: Mapping[str, Header],
    keys: Mapping[str, tuple[object, ...]],
    cache: AuditCache,
    ignore: frozenset[str] | set[str] | None = None,
    index_exact: bool = False,
) -> Contents:
    """Every file's header; the tensors of files in ``ignore`` (weights beside an index
    that does not name them: loaders never read them) are not counted as found.
    ``index_exact``: the index names every other weight file and each holds exactly the
    tensors the index places in it, so no name is in two of them."""
    contents = Contents(cache, keys=dict(keys), index_exact=index_exact)
    for name in ckpt.safetensors:
        header = headers[name]
        entry = FileEntry(
            name, header.file_size, len(header) if header.ok else 0, header.ok, header.rule
        )
        contents.files.append(entry)
        if not header.ok:
            contents.findings.append(file_finding(name, header))
            continue
        contents.readable.add(name)
        contents.headers[name] = header
        contents.header_bytes[name] = 8 + header.header_size
        contents.data_bytes[name] = header.data_size
        if ignore and name in ignore:
            continue
        adapter = is_adapter_file(name)
        (contents.adapter_files if adapter else contents.base_files).append(
            (name, header, keys[name])
        )
        contents.found_bytes += header.data_size
        if not adapter:
            contents.base_keys.append(keys[name])
    contents.base_repeated = 0 if index_exact else _repeated(contents.base_files, cache)
    contents.adapter_repeated = _repeated(contents.adapter_files, cache)
    duplicates: list[str] = []
    if contents.base_repeated or contents.adapter_repeated:
        seen: dict[bool, set[str]] = {False: set(), True: set()}
        for name in ckpt.safetensors:
            if name not in contents.readable or (ignore and name in ignore):
                continue
            names = file_table(name, contents.headers[name], keys[name], cache).names
            held = seen[is_adapter_file(name)]
            duplicates.extend(sorted(held & names))
            held |= names
    if duplicates:
        contents.findings.append(
            finding(
                "index-mismatch",
                f"{plural(len(duplicates), 'tensor is', 'tensors are')} stored in more than "
                "one file "
                f"(e.g. {duplicates[0]}): which copy loads depends on file order",
                tensors=duplicates,
            )
        )
    return contents


def _check_index(
    ckpt: CheckpointDir, index: dict[str, Any] | None, contents: Contents
) -> tuple[tuple[Finding, ...], dict[str, Any] | None]:
    """Index against shards: missing shards, misplaced tensors, total_size, strays, gaps.
    The findings, and the index as the audit reads it on (weight_map, total_size, name),
    or None without a readable one."""
    findings: list[Finding] = []
    base_files = [n for n in ckpt.safetensors if not is_adapter_file(n)]
    index_name = weights_index(ckpt)
    if index_name is None:
        sharded = [n for n in base_files if SHARD_NAME.match(n)]
        if len(sharded) > 1:
            findings.append(
                finding(
                    "index-missing",
                    f"{len(sharded)} shards ({sharded[0]} ...) and no "
                    "model.safetensors.index.json: from_pretrained cannot load them; "
                    "the index was lost on copy or never written",
                    count=len(sharded),
                )
            )
        findings += check_numbering(sharded, set(ckpt.safetensors))
        return tuple(findings), None
    if index is None or not isinstance(index.get("weight_map"), dict):
        findings.append(
            finding(
                "index-mismatch", f"{index_name} is not a readable index (no weight_map object)"
            )
        )
        return tuple(findings), None
    weight_map: dict[str, Any] = index["weight_map"]
    on_disk = set(ckpt.safetensors)
    named_files = match.files_named(weight_map, contents.cache)
    absent = [f for f in named_files if f not in on_disk]
    if absent:
        lost = [t for t, f in weight_map.items() if f in absent]
        findings.append(
            finding(
                "shard-missing",
                f"{index_name} names {plural(len(absent), 'shard')} that "
                f"{'is' if len(absent) == 1 else 'are'} not there: "
                f"{', '.join(absent[:5])} ({plural(len(lost), 'tensor')})",
                tensors=lost,
                count=len(lost),
            )
        )
    findings += check_numbering(
        named_files + [n for n in base_files if SHARD_NAME.match(n)], on_disk, absent
    )

    misplaced: list[str] = []
    unlisted: list[str] = []
    holder: dict[str, str] = {}
    if not contents.index_exact:
        for tensor, file in weight_map.items():
            if not isinstance(file, str):
                continue  # a malformed entry: not a file name
            if file in contents.readable and tensor not in contents.tensors_by_file(file):
                misplaced.append(tensor)
        # A misplaced tensor held by another shard is one fault, reported once (below).
        holder = {t: f for f in reversed(named_files) for t in contents.tensors_by_file(f)}
        misplaced_set = set(misplaced)
        for file in named_files:
            for tensor in sorted(contents.tensors_by_file(file)):
                if weight_map.get(tensor) != file and tensor not in misplaced_set:
                    unlisted.append(tensor)
    if misplaced:
        first = misplaced[0]
        where = f", but it is in {holder[first]}" if first in holder else ""
        findings.append(
            finding(
                "index-mismatch",
                f"{plural(len(misplaced), 'tensor')} the index places in a shard "
                f"{'is' if len(misplaced) == 1 else 'are'} not in it "
                f"(e.g. {first} -> {weight_map[first]}{where})",
                tensors=misplaced,
            )
        )
    if unlisted:
        findings.append(
            finding(
                "index-mismatch",
                f"{plural(len(unlisted), 'tensor')} held by shards "
                f"{'is' if len(unlisted) == 1 else 'are'} not listed (for that shard) in "
                f"{index_name} (e.g. {unlisted[0]})",
                tensors=unlisted,
            )
        )
    strays = [n for n in base_files if n not in named_files]
    if strays:
        findings.append(
            finding(
                "stray-weights",
                f"{', '.join(strays)} beside the shards of {index_name}, which does not name "
                "it: loaders ignore it, and it may be a stale copy (delete it, or it was meant "
                "to replace the shards)",
                count=len(strays),
            )
        )
    total = (
        (index.get("metadata") or {}).get("total_size")
        if isinstance(index.get("metadata"), dict)
        else None
    )
    if isinstance(total, int) and not absent and all(f in contents.readable for f in named_files):
        tensor_bytes = sum(contents.data_bytes[f] for f in named_files)
        if total != tensor_bytes:
            header_bytes = sum(contents.header_bytes[f] for f in named_files)
            if total == tensor_bytes + header_bytes:
                findings.append(
                    finding(
                        "index-mismatch",
                        f"{index_name} total_size {total} is the sum of file sizes, not of "
                        f"tensor bytes ({tensor_bytes}): the difference is exactly the "
                        f"{len(named_files)} headers. Loaders do not use it; the writer "
                        "summed file sizes.",
                        severity="warning",
                    )
                )
            else:
                findings.append(
                    finding(
                        "index-mismatch",
                        f"{index_name} total_size {total} but the shards hold {tensor_bytes} "
                        f"bytes of tensors (off by {tensor_bytes - total:+d})",
                    )
                )
    return tuple(findings), {"weight_map": weight_map, "total_size": total, "name": index_name}


def index_doc(
    ckpt: CheckpointDir,
    known: Mapping[str, tuple[int, int] | None],
    cache: AuditCache,
    problems: list[Problem],
    fetched: Fetched | None = None,
) -> dict[str, Any] | None:
    """The weights index (:func:`weights_index`) as parsed JSON (shared: never mutated);
    why it could not be read (or what in it is of the wrong type) added to ``problems``."""
    name = weights_index(ckpt)
    if name is None:
        return None
    return load_run_file(ckpt, name, known, cache, problems, index_problems, fetched)


def load_run_file(
    ckpt: CheckpointDir,
    name: str,
    known: Mapping[str, tuple[int, int] | None],
    cache: AuditCache,
    problems: list[Problem],
    check: Callable[[str, dict[str, Any]], list[Problem]],
    fetched: Fetched | None = None,
) -> dict[str, Any] | None:
    """A run file of the checkpoint (``known``: digests a sweep's reading threads took;
    ``fetched``: bytes read elsewhere, by path, asked before the disk); why it could not be
    used, and what ``check`` finds in it, added to ``problems`` (each becomes a finding
    naming the file)."""
    doc, problem = runs.load_run_file(
        ckpt.path, name, known.get(name), memo=cache.json, fetched=fetched
    )
    if problem is not None:
        problems.append(problem)
    elif doc is not None:
        problems.extend(check(name, doc))
    return doc


def check_index(
    ckpt: CheckpointDir,
    doc: dict[str, Any] | None,
    keys: Mapping[str, tuple[object, ...]],
    contents: Contents,
) -> tuple[tuple[Finding, ...], dict[str, Any] | None]:
    """_check_index, once per distinct (file list, index content, shard contents).

    When every shard holds exactly what the index places in it, the check reads no
    tensor of them: their sizes are all it depends on, and all its key holds."""
    shards: tuple[object, ...]
    if contents.index_exact:
        shards = tuple(
            (contents.data_bytes[n], contents.header_bytes[n])
            if n in contents.readable
            else keys[n]
            for n in ckpt.safetensors
        )
    else:
        shards = tuple(keys.values())
    key = (
        tuple(ckpt.safetensors),
        tuple(ckpt.indexes),
        Identity(doc) if doc is not None else None,
        contents.index_exact,
        shards,
    )
    return contents.cache.index_checks.get(key, lambda: _check_index(ckpt, doc, contents))


def index_exact(
    doc: dict[str, Any] | None,
    headers: Mapping[str, Header],
    keys: Mapping[str, tuple[object, ...]],
    cache: AuditCache,
) -> bool:
    """match.index_places_exactly, once per distinct (index content, shard contents)."""
    weight_map = doc.get("weight_map") if doc is not None else None
    if not cache.fast or not isinstance(weight_map, dict):
        return False
    key = (Identity(weight_map), tuple(keys.values()))
    return cache.index_exact.get(
        key,
        lambda: match.index_places_exactly(
            weight_map, {n: h for n, h in headers.items() if h.ok}, cache
        ),
    )


def check_numbering(
    names: list[str], on_disk: set[str], already: list[str] | None = None
) -> list[Finding]:
    """Every k of `-0000k-of-0000N` must be there: a gap is a lost shard."""
    findings: list[Finding] = []
    series: dict[tuple[str, int], set[int]] = {}
    for name in names:
        m = SHARD_NAME.match(name)
        if m:
            series.setdefault((m.group("stem"), int(m.group("n"))), set()).add(int(m.group("k")))
    for (stem, n), ks in sorted(series.items()):
        gaps = [
            f"{stem}-{k:05d}-of-{n:05d}.safetensors"
            for k in range(1, n + 1)
            if k not in ks and f"{stem}-{k:05d}-of-{n:05d}.safetensors" not in on_disk
        ]
        gaps = [g for g in gaps if not already or g not in already]
        if gaps:
            findings.append(
                finding(
                    "shard-missing",
                    f"shard numbering of {stem}-*-of-{n:05d} has a gap: {', '.join(gaps[:5])} "
                    f"{'is' if len(gaps) == 1 else 'are'} neither on disk nor in the index",
                    count=len(gaps),
                )
            )
    return findings

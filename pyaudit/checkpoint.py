"""One checkpoint, audited: structure, contents against the manifest, adapters, intent.

Stages, each over plain data: the checkpoint's files (discover) and their headers
(read by the native core, passed in) -> structural findings -> what to expect and
from where -> comparison -> intent -> one :class:`CheckpointReport`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyaudit import expected as expect_mod
from pyaudit import _core, match
from pyaudit.adapters import check_adapter
from pyaudit.compare import Comparison, Found, compare_full, is_peft_tensor
from pyaudit.data import DataResult, data_findings
from pyaudit.discover import CheckpointDir
from pyaudit.expected import Expected, ManifestUnavailable
from pyaudit.findings import Finding, finding, status_of
from pyaudit.headers import Header
from pyaudit.memo import LRU, Identity
from pyaudit.report.sizes import human_bytes
from pyaudit.runs import Declared, RunArgs, find_run_args, read_json, read_run_file, resolve_model

SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<k>\d{5})-of-(?P<n>\d{5})\.safetensors$")
TRUNCATION_RULES = {"data-truncated", "trailing-bytes", "header-truncated", "too-small"}


@dataclass
class AuditOptions:
    expect: str = "auto"  # auto | full | adapter
    base: Path | None = None
    fail_on: str = "error"  # error | warning
    verify_data: bool = False  # also stream tensor bytes: NaN / Inf / all-zero
    oracle: str | None = None  # "transformers": manifests for families without a spec


@dataclass
class FileEntry:
    path: str
    bytes: int
    tensors: int
    ok: bool
    rule: str = "ok"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "bytes": self.bytes, "tensors": self.tensors, "ok": self.ok}
        if not self.ok:
            doc["rule"] = self.rule
        return doc


@dataclass
class CheckpointReport:
    path: str
    status: str = "pass"
    kind: str = "unknown"
    model_type: str | None = None
    layout: str | None = None
    expected_source: str | None = None
    declared: str | None = None
    tensors: dict[str, int | None] = field(
        default_factory=lambda: {"found": 0, "expected": None, "missing": 0, "unexpected": 0}
    )
    bytes: dict[str, int | None] = field(default_factory=lambda: {"found": 0, "expected": None})
    files: list[FileEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "kind": self.kind,
            "model_type": self.model_type,
            "layout": self.layout,
            "expected_source": self.expected_source,
            "declared": self.declared,
            "tensors": dict(self.tensors),
            "bytes": dict(self.bytes),
            "files": [f.to_json() for f in self.files],
            "findings": [f.to_json() for f in self.findings],
        }


def weights_index(ckpt: CheckpointDir) -> str | None:
    """The index of the (non-adapter) weights a loader reads: model.safetensors.index.json,
    else the first other one, or None."""
    indexes = [n for n in ckpt.indexes if not _is_adapter_file(n)]
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


# --- structure -------------------------------------------------------------------------


def _file_finding(name: str, header: Header) -> Finding:
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


def _is_adapter_file(name: str) -> bool:
    return name.startswith("adapter_model")


@dataclass
class _Contents:
    """The readable files' headers. Per-tensor tables (a dict entry per tensor) are built
    only when a check needs them: a clean checkpoint is judged from native counts."""

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
    _base: dict[str, Found] | None = None
    _adapter: dict[str, Found] | None = None

    @property
    def base(self) -> dict[str, Found]:
        """Name -> Found over the non-adapter files (a later file's tensor wins)."""
        if self._base is None:
            self._base = _merged(self.base_files)
        return self._base

    @property
    def adapter(self) -> dict[str, Found]:
        if self._adapter is None:
            self._adapter = _merged(self.adapter_files)
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
        if not match.ENABLED or match.names_containing(headers, "lora_"):
            return sum(file_table(n, h, k).peft for n, h, k in self.base_files)
        return 0

    def tensors_by_file(self, name: str) -> frozenset[str]:
        if name not in self.readable:
            return frozenset()
        return file_table(name, self.headers[name], self.keys[name]).names


def _merged(files: list[tuple[str, Header, tuple[object, ...]]]) -> dict[str, Found]:
    if len(files) == 1:
        return file_table(*files[0]).tensors
    merged: dict[str, Found] = {}
    for name, header, key in files:
        merged.update(file_table(name, header, key).tensors)
    return merged


_INDEXED: LRU[frozenset[str]] = LRU(64)


def _indexed_files(doc: dict[str, Any] | None) -> frozenset[str] | None:
    """The weight files the (non-adapter) index names, or None without a readable index."""
    weight_map = doc.get("weight_map") if doc is not None else None
    if not isinstance(weight_map, dict):
        return None
    return _INDEXED.get(
        Identity(doc), lambda: frozenset(f for f in weight_map.values() if isinstance(f, str))
    )


@dataclass(frozen=True)
class FileTable:
    """What one valid shard holds, derived once per distinct header."""

    tensors: dict[str, Found]  # shared through the memo: never mutate
    names: frozenset[str]
    data_bytes: int
    peft: int  # tensors named as PEFT wrappers (lora_A, lora_B, ...)


_FILE_TABLES: LRU[FileTable] = LRU(64)


def file_key(name: str, header: Header) -> tuple[object, ...]:
    """Content identity of a file as the audit sees it."""
    if not header.ok:
        return (name, header.rule, header.file_size)
    return (name, header.digest, header.header_size, header.file_size)


def file_table(name: str, header: Header, key: tuple[object, ...]) -> FileTable:
    return _FILE_TABLES.get(key, lambda: _file_table(name, header))


def _file_table(name: str, header: Header) -> FileTable:
    names, dtypes, shapes, offsets = header.table()
    tensors = {
        n: Found(d, s, e - b, name)
        for n, d, s, (b, e) in zip(names, dtypes, shapes, offsets, strict=True)
    }
    joined = "\n".join(names)
    peft = sum(1 for n in names if is_peft_tensor(n)) if "lora_" in joined else 0
    return FileTable(tensors, frozenset(names), sum(e - b for b, e in offsets), peft)


def _repeated(files: list[tuple[str, Header, tuple[object, ...]]]) -> int:
    """Tensors whose name an earlier one of ``files`` also holds."""
    if len(files) < 2:
        return 0
    if match.ENABLED:
        return match.repeated_names([h for _, h, _ in files])
    names = [file_table(*f).names for f in files]
    return sum(len(n) for n in names) - len(frozenset().union(*names))


def _collect(
    ckpt: CheckpointDir,
    headers: Mapping[str, Header],
    keys: Mapping[str, tuple[object, ...]],
    report: CheckpointReport,
    ignore: frozenset[str] | set[str] | None = None,
    index_exact: bool = False,
) -> _Contents:
    """Every file's header; the tensors of files in ``ignore`` (weights beside an index
    that does not name them: loaders never read them) are not counted as found.
    ``index_exact``: the index names every other weight file and each holds exactly the
    tensors the index places in it, so no name is in two of them."""
    contents = _Contents(keys=dict(keys), index_exact=index_exact)
    for name in ckpt.safetensors:
        header = headers[name]
        entry = FileEntry(name, header.file_size, len(header) if header.ok else 0, header.ok, header.rule)
        report.files.append(entry)
        if not header.ok:
            report.findings.append(_file_finding(name, header))
            continue
        contents.readable.add(name)
        contents.headers[name] = header
        contents.header_bytes[name] = 8 + header.header_size
        contents.data_bytes[name] = header.data_size
        if ignore and name in ignore:
            continue
        adapter = _is_adapter_file(name)
        (contents.adapter_files if adapter else contents.base_files).append((name, header, keys[name]))
        contents.found_bytes += header.data_size
        if not adapter:
            contents.base_keys.append(keys[name])
    contents.base_repeated = 0 if index_exact else _repeated(contents.base_files)
    contents.adapter_repeated = _repeated(contents.adapter_files)
    duplicates: list[str] = []
    if contents.base_repeated or contents.adapter_repeated:
        seen: dict[bool, set[str]] = {False: set(), True: set()}
        for name in ckpt.safetensors:
            if name not in contents.readable or (ignore and name in ignore):
                continue
            names = file_table(name, contents.headers[name], keys[name]).names
            held = seen[_is_adapter_file(name)]
            duplicates.extend(sorted(held & names))
            held |= names
    if duplicates:
        report.findings.append(
            finding(
                "index-mismatch",
                f"{len(duplicates)} tensors are stored in more than one file "
                f"(e.g. {duplicates[0]}): which copy loads depends on file order",
                tensors=duplicates,
            )
        )
    return contents


def _check_index(
    ckpt: CheckpointDir, index: dict[str, Any] | None, contents: _Contents, report: CheckpointReport
) -> dict[str, Any] | None:
    """Index against shards: missing shards, misplaced tensors, total_size, strays, gaps."""
    base_files = [n for n in ckpt.safetensors if not _is_adapter_file(n)]
    index_name = weights_index(ckpt)
    if index_name is None:
        sharded = [n for n in base_files if SHARD_NAME.match(n)]
        if len(sharded) > 1:
            report.findings.append(
                finding(
                    "index-missing",
                    f"{len(sharded)} shards ({sharded[0]} ...) and no model.safetensors.index.json: "
                    "from_pretrained cannot load them; the index was lost on copy or never written",
                    count=len(sharded),
                )
            )
        _check_numbering(sharded, set(ckpt.safetensors), report)
        return None
    if index is None or not isinstance(index.get("weight_map"), dict):
        report.findings.append(
            finding("index-mismatch", f"{index_name} is not a readable index (no weight_map object)")
        )
        return None
    weight_map: dict[str, Any] = index["weight_map"]
    on_disk = set(ckpt.safetensors)
    named_files = match.files_named(weight_map)
    absent = [f for f in named_files if f not in on_disk]
    if absent:
        lost = [t for t, f in weight_map.items() if f in absent]
        report.findings.append(
            finding(
                "shard-missing",
                f"{index_name} names {len(absent)} shard(s) that are not there: "
                f"{', '.join(absent[:5])} ({len(lost)} tensors)",
                tensors=lost,
                count=len(lost),
            )
        )
    _check_numbering(named_files + [n for n in base_files if SHARD_NAME.match(n)], on_disk, report, absent)

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
        report.findings.append(
            finding(
                "index-mismatch",
                f"{len(misplaced)} tensors the index places in a shard are not in it "
                f"(e.g. {first} -> {weight_map[first]}{where})",
                tensors=misplaced,
            )
        )
    if unlisted:
        report.findings.append(
            finding(
                "index-mismatch",
                f"{len(unlisted)} tensors held by shards are not listed (for that shard) in "
                f"{index_name} (e.g. {unlisted[0]})",
                tensors=unlisted,
            )
        )
    strays = [n for n in base_files if n not in named_files]
    if strays:
        report.findings.append(
            finding(
                "stray-weights",
                f"{', '.join(strays)} beside the shards of {index_name}, which does not name "
                "it: loaders ignore it, and it may be a stale copy (delete it, or it was meant "
                "to replace the shards)",
                count=len(strays),
            )
        )
    total = (index.get("metadata") or {}).get("total_size") if isinstance(index.get("metadata"), dict) else None
    if isinstance(total, int) and not absent and all(f in contents.readable for f in named_files):
        tensor_bytes = sum(contents.data_bytes[f] for f in named_files)
        if total != tensor_bytes:
            header_bytes = sum(contents.header_bytes[f] for f in named_files)
            if total == tensor_bytes + header_bytes:
                report.findings.append(
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
                report.findings.append(
                    finding(
                        "index-mismatch",
                        f"{index_name} total_size {total} but the shards hold {tensor_bytes} "
                        f"bytes of tensors (off by {tensor_bytes - total:+d})",
                    )
                )
    return {"weight_map": weight_map, "total_size": total, "name": index_name}


_INDEX_CHECKS: LRU[tuple[list[Finding], dict[str, Any] | None]] = LRU(64)
_COMPARISONS: LRU[Comparison] = LRU(64)
_ADAPTER_CHECKS: LRU[list[Finding]] = LRU(64)


def _index_doc(
    ckpt: CheckpointDir, known: Mapping[str, tuple[int, int] | None]
) -> dict[str, Any] | None:
    name = weights_index(ckpt)
    return read_run_file(ckpt.path, name, known.get(name)) if name is not None else None


def _check_index_memo(
    ckpt: CheckpointDir,
    doc: dict[str, Any] | None,
    keys: Mapping[str, tuple[object, ...]],
    contents: _Contents,
    report: CheckpointReport,
) -> dict[str, Any] | None:
    """_check_index, once per distinct (file list, index content, shard contents).

    When every shard holds exactly what the index places in it, the check reads no
    tensor of them: their sizes are all it depends on, and all its key holds."""
    shards: tuple[object, ...]
    if contents.index_exact:
        shards = tuple(
            (contents.data_bytes[n], contents.header_bytes[n]) if n in contents.readable else keys[n]
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

    def check() -> tuple[list[Finding], dict[str, Any] | None]:
        scratch = CheckpointReport(path=ckpt.display)
        return scratch.findings, _check_index(ckpt, doc, contents, scratch)

    findings, index = _INDEX_CHECKS.get(key, check)
    report.findings.extend(findings)
    return index


_INDEX_EXACT: LRU[bool] = LRU(64)


def _index_exact(
    doc: dict[str, Any] | None, headers: Mapping[str, Header], keys: Mapping[str, tuple[object, ...]]
) -> bool:
    """match.index_places_exactly, once per distinct (index content, shard contents)."""
    weight_map = doc.get("weight_map") if doc is not None else None
    if not match.ENABLED or not isinstance(weight_map, dict):
        return False
    key = (Identity(weight_map), tuple(keys.values()))
    return _INDEX_EXACT.get(
        key,
        lambda: match.index_places_exactly(weight_map, {n: h for n, h in headers.items() if h.ok}),
    )


_ALL_CLEAN: LRU[Comparison | None] = LRU(64)


def _all_clean_memo(
    ckpt: CheckpointDir,
    headers: Mapping[str, Header],
    keys: Mapping[str, tuple[object, ...]],
    index_doc: dict[str, Any] | None,
    config: dict[str, Any] | None,
    base_expected: Expected | None,
    strays: set[str] | None,
    ahead: tuple[_core.TensorSpecs, _core.SpecMatch] | None = None,
) -> Comparison | None:
    """match.all_clean, once per distinct (expected, index, files): the comparison of a
    checkpoint found clean in one pass, else None (the separate checks then run).
    ``ahead``: its files held against a table on a sweep's reading threads."""
    weight_map = index_doc.get("weight_map") if index_doc is not None else None
    if (
        not match.ENABLED
        or not isinstance(weight_map, dict)
        or strays
        or not ckpt.safetensors
        or any(_is_adapter_file(n) or not headers[n].ok for n in ckpt.safetensors)
    ):
        return None
    # What _expected_for settles on first, whenever there is one: --base, else config.json.
    expected = base_expected
    if expected is None and config is not None:
        try:
            expected = expect_mod.from_config(config, "config.json")
        except ManifestUnavailable:
            return None
    if expected is None:
        return None
    key = (Identity(expected), Identity(weight_map), tuple(keys.values()))
    return _ALL_CLEAN.get(
        key,
        lambda: match.all_clean(
            [(n, headers[n]) for n in ckpt.safetensors], weight_map, expected, ahead
        ),
    )


_CLEAN: LRU[Comparison | None] = LRU(64)


def _clean_memo(contents: _Contents, expected: Expected) -> Comparison | None:
    """match.clean_comparison over the base files, once per distinct (expected, files)."""
    if not match.ENABLED or contents.base_repeated or not contents.base_files:
        return None
    key = (Identity(expected), tuple(contents.base_keys))
    return _CLEAN.get(
        key, lambda: match.clean_comparison([h for _, h, _ in contents.base_files], expected)
    )


def _compare_memo(
    contents: _Contents, expected: Expected, explained: frozenset[str]
) -> Comparison:
    key = (Identity(expected), tuple(contents.base_keys), explained)
    return _COMPARISONS.get(key, lambda: compare_full(contents.base, expected, explained))


def _check_adapter_memo(
    tensors: Mapping[str, Found],
    keys: tuple[object, ...],
    adapter_config: dict[str, Any] | None,
    expected: Expected | None,
) -> list[Finding]:
    key = (
        keys,
        Identity(adapter_config) if adapter_config is not None else None,
        Identity(expected) if expected is not None else None,
    )
    return _ADAPTER_CHECKS.get(key, lambda: check_adapter(tensors, adapter_config, expected))


def _check_numbering(
    names: list[str], on_disk: set[str], report: CheckpointReport, already: list[str] | None = None
) -> None:
    """Every k of `-0000k-of-0000N` must be there: a gap is a lost shard."""
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
            report.findings.append(
                finding(
                    "shard-missing",
                    f"shard numbering of {stem}-*-of-{n:05d} has a gap: {', '.join(gaps[:5])} "
                    f"{'is' if len(gaps) == 1 else 'are'} neither on disk nor in the index",
                    count=len(gaps),
                )
            )


# --- what to expect -------------------------------------------------------------------


def _expected_for(
    ckpt: CheckpointDir,
    config: dict[str, Any] | None,
    adapter_config: dict[str, Any] | None,
    run: RunArgs,
    index: dict[str, Any] | None,
    options: AuditOptions,
    base_expected: Expected | None,
    report: CheckpointReport,
    found_names: Callable[[], Iterable[str]] = tuple,
) -> Expected | None:
    if base_expected is not None:
        return base_expected
    unavailable: ManifestUnavailable | None = None
    if config is not None:
        try:
            return expect_mod.from_config(config, "config.json")
        except ManifestUnavailable as e:
            unavailable = e
            report.model_type = e.model_type
        if options.oracle == "transformers":
            try:
                return expect_mod.from_oracle(config, source_names=found_names())
            except ManifestUnavailable as e:
                unavailable = ManifestUnavailable(e.model_type, f"{unavailable}; {e}")
    # The model the run's own files name, found locally.
    references = []
    if adapter_config and isinstance(adapter_config.get("base_model_name_or_path"), str):
        references.append(("adapter_config.json base_model_name_or_path", adapter_config["base_model_name_or_path"]))
    if run.model:
        references.append((f"{run.args_path.name if run.args_path else 'run args'} model", run.model))
    if unavailable is None and config is None:
        for what, ref in references:
            path = resolve_model(ref, ckpt.path)
            if path is None:
                continue
            base_config = read_json(path / "config.json")
            if base_config is None:
                continue
            try:
                where = ref if Path(ref) == path else f"{ref} ({path})"
                return expect_mod.from_config(base_config, f"base model {where}")
            except ManifestUnavailable as e:
                unavailable = e
                report.model_type = e.model_type
                break
        else:
            if references and (ckpt.has_adapter_config or not ckpt.has_weights):
                what, ref = references[0]
                report.findings.append(
                    finding(
                        "base-not-found",
                        f"the base model {ref!r} ({what}) is not available locally (path, "
                        "$HF_HOME hub cache, ModelScope cache): only the adapter's own "
                        "consistency was checked; pass --base DIR to check it against the base",
                    )
                )
    if unavailable is not None:
        report.findings.append(
            finding(
                "unknown-architecture",
                f"{unavailable}: only structural checks ran"
                + ("; the index says which tensors to expect" if index else ""),
            )
        )
    if index is not None:
        names = [n for n in index["weight_map"] if isinstance(n, str)]
        total = index.get("total_size")
        return expect_mod.from_index(names, total if isinstance(total, int) else None, index["name"])
    return None


def base_expectation(base: Path, headers: list[Header]) -> Expected:
    """``--base DIR``: the reference checkpoint's own tensors are what to expect."""
    tensors: dict[str, tuple[str, tuple[int, ...], int]] = {}
    for header in headers:
        if not header.ok:
            raise ValueError(f"--base {base}: {header.error}")
        if Path(header.path).name.startswith("adapter_model"):
            continue
        names, dtypes, shapes, offsets = header.table()
        for n, d, s, (b, e) in zip(names, dtypes, shapes, offsets, strict=True):
            tensors[n] = (d, s, e - b)
    config = read_json(base / "config.json")
    model_type = config.get("model_type") if config else None
    family: Expected | None = None
    if config is not None:
        try:
            family = expect_mod.from_config(config, "config.json")
        except ManifestUnavailable:
            family = None
    return expect_mod.from_tensors(
        tensors, f"--base {base}", model_type if isinstance(model_type, str) else None, family
    )


# --- intent ---------------------------------------------------------------------------


def _declared(options: AuditOptions, run: RunArgs) -> Declared | None:
    if options.expect in ("full", "adapter"):
        return Declared(options.expect, "--expect", "expect", options.expect)  # type: ignore[arg-type]
    return run.declared()


def _lora_origin(run: RunArgs, ckpt: CheckpointDir) -> str | None:
    """Where an unintended LoRA came from, when the files show it (ms-swift load_args)."""
    if run.args is None or not run.model:
        return None
    model_dir = resolve_model(run.model, ckpt.path)
    if model_dir is None:
        return None
    parent_args = read_json(model_dir / "args.json")
    if parent_args is None:
        return None
    parent_type = parent_args.get("train_type") or parent_args.get("sft_type")
    if not (isinstance(parent_type, str) and parent_type.lower() != "full"):
        return None
    load_args = run.args.get("load_args")
    merged = model_dir.name.endswith("-merged")
    how = (
        f"model={run.model} is {'an ms-swift -merged export that carries' if merged else 'a directory with'} "
        f"the args.json of a train_type={parent_type} run"
    )
    if load_args in (True, None, "true", "True"):
        return (
            f"Likely cause: {how}, and load_args={load_args!r} made this run re-read those saved "
            f"arguments, keeping train_type={parent_type}. Fix: rerun with --load_args false "
            "--train_type full (or delete that args.json)."
        )
    return f"Note: {how}."


def _check_intent(
    ckpt: CheckpointDir, run: RunArgs, declared: Declared | None, report: CheckpointReport,
    comparison_missing: bool,
) -> None:
    if declared is None or report.kind == "unknown":
        return
    report.declared = declared.describe()
    if declared.kind == "full" and report.kind == "adapter":
        severity_note = "" if declared.source == "--expect" else f" ({declared.path})"
        report.findings.append(
            finding(
                "adapter-only",
                "only adapter weights were saved where full training was declared "
                f"({declared.describe()})",
                severity="error",
            )
        )
        origin = _lora_origin(run, ckpt)
        # The run's own args disagreeing with itself is the common trap: name it.
        train_type = run.args.get("train_type") if run.args else None
        message = (
            f"{declared.describe()}{severity_note} but only LoRA adapter weights were saved "
            f"({human_bytes(report.bytes['found'])}"
            + (f" of the {human_bytes(report.bytes['expected'])} a full checkpoint holds" if report.bytes["expected"] else "")
            + ")."
        )
        if declared.source == "--expect" and isinstance(train_type, str):
            message += f" {run.args_path} says train_type={train_type}."
        message += " " + (
            origin
            or "Likely cause: the training framework ran with LoRA enabled (train_type / "
            "finetuning_type, or arguments inherited from an earlier run); rerun with full "
            "training declared explicitly."
        )
        report.findings.append(finding("intent-mismatch", message))
    elif declared.kind == "adapter" and report.kind == "full":
        if ckpt.path.name.endswith("-merged") and declared.source != "--expect":
            return  # an ms-swift merged export: full weights under the adapter run's args
        report.findings.append(
            finding(
                "intent-mismatch",
                f"{declared.describe()}"
                + (f" ({declared.path})" if declared.path else "")
                + " but full model weights were saved "
                f"({human_bytes(report.bytes['found'])}): the adapter was merged or "
                "full-parameter training ran; if the weights are meant, fix the declared "
                "training type, else check the PEFT setup",
            )
        )


# --- the whole audit -------------------------------------------------------------------


def _no_weights_message(ckpt: CheckpointDir) -> str:
    there: list[str] = []
    if ckpt.zero_dirs:
        there.append(
            f"DeepSpeed ZeRO shards in {', '.join(d + '/' for d in ckpt.zero_dirs[:3])}"
            " — consolidate them: `python zero_to_fp32.py . ./` (the script DeepSpeed saves "
            "beside them) or set stage3_gather_16bit_weights_on_model_save"
        )
    if ckpt.fsdp_files:
        there.append(
            f"{len(ckpt.fsdp_files)} FSDP sharded-state files (*.distcp) — consolidate with "
            "`accelerate merge-weights` or torch.distributed.checkpoint.format_utils.dcp_to_torch_save"
        )
    if not there:
        shown = ", ".join((ckpt.run_files + ckpt.other_files)[:8]) or "nothing else"
        there.append(f"holds only {shown}")
    lead = "config.json but no weight files: " if ckpt.has_config else "no weight files: "
    return lead + "; ".join(there)


def audit_checkpoint(
    ckpt: CheckpointDir,
    headers: Mapping[str, Header],
    options: AuditOptions,
    base_expected: Expected | None = None,
    data: Mapping[str, DataResult] | None = None,
    digests: Mapping[str, tuple[int, int] | None] | None = None,
    ahead: tuple[_core.TensorSpecs, _core.SpecMatch] | None = None,
) -> CheckpointReport:
    """Audit one checkpoint whose .safetensors headers (by file name) are given, and
    the results of streaming its tensor bytes when --verify-data asked for them.
    ``digests``: (size, digest) of its JSON files by name, as a sweep's reading threads
    found them (:func:`run_file_names`), so that content seen before is not read again;
    ``ahead``: its weight files held against a native table there (match.last_table)."""
    report = CheckpointReport(path=ckpt.display)
    known = digests or {}
    config = read_run_file(ckpt.path, "config.json", known.get("config.json")) if ckpt.has_config else None
    adapter_config = (
        read_run_file(ckpt.path, "adapter_config.json", known.get("adapter_config.json"))
        if ckpt.has_adapter_config
        else None
    )
    run = find_run_args(ckpt.path, ckpt.scan_root, listed=ckpt.listed_run_files)

    keys = {n: file_key(n, headers[n]) for n in ckpt.safetensors}
    index_doc = _index_doc(ckpt, known)
    indexed = _indexed_files(index_doc)
    strays = (
        {n for n in ckpt.safetensors if not _is_adapter_file(n) and n not in indexed}
        if indexed is not None
        else None
    )
    # The common case in one native pass: every file valid and indexed exactly, holding
    # exactly the default layout of the model its config names.
    all_clean = _all_clean_memo(ckpt, headers, keys, index_doc, config, base_expected, strays, ahead)
    exact = all_clean is not None or _index_exact(index_doc, {n: headers[n] for n in ckpt.safetensors}, keys)
    contents = _collect(ckpt, headers, keys, report, ignore=strays, index_exact=exact)
    index = _check_index_memo(ckpt, index_doc, keys, contents, report)
    report.bytes["found"] = contents.found_bytes

    expected = _expected_for(
        ckpt, config, adapter_config, run, index, options, base_expected, report,
        found_names=lambda: contents.base.keys(),
    )
    if expected is not None:
        report.expected_source = expected.source
        report.model_type = expected.model_type or report.model_type
        report.tensors["expected"] = len(expected.default.tensors)
        report.bytes["expected"] = expected.total_bytes

    # A checkpoint the native match finds exactly as expected holds no PEFT names: the
    # clean comparison settles its kind without a table of its tensors.
    clean = all_clean or (_clean_memo(contents, expected) if expected is not None else None)
    peft_in_base = (
        [n for n in contents.base if is_peft_tensor(n)] if clean is None and contents.base_peft else []
    )
    non_peft = contents.base_count - len(peft_in_base)
    if non_peft > 0:
        report.kind = "full"
    elif contents.adapter_count or peft_in_base:
        report.kind = "adapter"
    report.tensors["found"] = contents.base_count + contents.adapter_count
    adapter_keys = tuple(
        keys[n] for n in ckpt.safetensors if _is_adapter_file(n) and n in contents.readable
    )

    comparison: Comparison | None = None
    if report.kind == "full" and expected is not None:
        # Tensors the index places in a file that is absent or unreadable are reported
        # by that file's finding (shard-missing, shard-truncated, ...), not again as missing.
        weight_map = index["weight_map"] if index is not None else {}
        unread = (indexed or frozenset()) - contents.readable
        explained = frozenset(
            t for t, f in weight_map.items() if f in unread
        ) if unread else frozenset()
        comparison = clean or _compare_memo(contents, expected, explained)
        report.layout = comparison.layout
        report.tensors["expected"] = comparison.expected
        report.bytes["expected"] = comparison.expected_bytes
        report.tensors["missing"] = comparison.missing
        report.tensors["unexpected"] = comparison.unexpected
        report.findings.extend(comparison.findings)
        if contents.adapter_count:
            report.findings.extend(
                _check_adapter_memo(contents.adapter, adapter_keys, adapter_config, expected)
            )
    elif report.kind == "adapter":
        if contents.adapter_count:
            adapter_tensors: Mapping[str, Found] = contents.adapter
            tensor_keys = adapter_keys
        else:
            adapter_tensors = {n: contents.base[n] for n in peft_in_base}
            tensor_keys = tuple(contents.base_keys)
        report.findings.extend(
            _check_adapter_memo(adapter_tensors, tensor_keys, adapter_config, expected)
        )
        declared = _declared(options, run)
        if expected is not None:
            report.tensors["missing"] = report.tensors["expected"]
        if declared is not None and declared.kind == "full" and expected is not None:
            groups = sorted(
                expected.group(list(expected.default.tensors), expected.default), key=lambda g: -g[1]
            )
            report.findings.append(
                finding(
                    "base-weights-missing",
                    f"{len(expected.default.tensors)} of {len(expected.default.tensors)} base "
                    f"tensors absent ({human_bytes(expected.total_bytes)}): "
                    + ", ".join(f"{label} — {n} tensors" if n > 1 else label for label, n in groups[:6]),
                    tensors=list(expected.default.tensors),
                )
            )
        elif declared is None or declared.kind != "full":
            base = (
                f"; the base model ({expected.model_type or 'unknown'}, "
                f"{human_bytes(expected.total_bytes)}) is not in this checkpoint"
                if expected is not None
                else ""
            )
            report.findings.append(
                finding(
                    "adapter-only",
                    f"adapter weights only ({len(adapter_tensors)} tensors, "
                    f"{human_bytes(contents.found_bytes)}){base}",
                )
            )
    elif (
        ckpt.has_adapter_config
        and not ckpt.bin_weights
        and all(n in contents.readable for n in ckpt.safetensors)
    ):
        # No adapter file, or adapter files that were read and hold no tensors at all.
        report.findings.extend(check_adapter({}, adapter_config, expected))
        report.kind = "unknown"
    elif not ckpt.has_weights:
        report.findings.append(finding("no-weights", _no_weights_message(ckpt)))
    if ckpt.bin_weights or ckpt.bin_indexes:
        report.findings.extend(_bin_findings(ckpt, expected, report))

    if data:
        report.findings.extend(data_findings(data))
    _check_intent(ckpt, run, _declared(options, run), report, comparison is not None)
    if report.model_type is None and config is not None:
        mt = config.get("model_type")
        report.model_type = mt if isinstance(mt, str) else None
    report.status = status_of(report.findings, options.fail_on)
    return report


def _bin_findings(ckpt: CheckpointDir, expected: Expected | None, report: CheckpointReport) -> list[Finding]:
    """Pickled .bin weights: never unpickled; names from their index when there is one."""
    out: list[Finding] = []
    names: list[str] = []
    for index_name in ckpt.bin_indexes:
        index = read_json(ckpt.path / index_name)
        if index and isinstance(index.get("weight_map"), dict):
            names.extend(index["weight_map"])
            absent = sorted({f for f in index["weight_map"].values() if isinstance(f, str) and not (ckpt.path / f).exists()})
            if absent:
                out.append(finding("shard-missing", f"{index_name} names {len(absent)} missing shard(s): {', '.join(absent[:5])}", count=len(absent)))
    if report.kind == "unknown" and (ckpt.bin_weights or names):
        report.kind = "full" if not all(n.startswith("adapter_model") for n in ckpt.bin_weights) else "adapter"
        report.tensors["found"] = len(names) or None
    if names and expected is not None and report.kind == "full" and not ckpt.safetensors:
        have = set(names)
        missing = [n for n in expected.default.tensors if n not in have]
        report.tensors["missing"] = len(missing)
        if missing:
            out.append(finding("base-weights-missing", f"{len(missing)} of {len(expected.default.tensors)} base tensors are not named by the .bin index", tensors=missing))
    out.append(
        finding(
            "shapes-unverified",
            f"{len(ckpt.bin_weights)} pickled .bin weight file(s) ({', '.join(ckpt.bin_weights[:3])}): "
            "tensor names checked from the index only, shapes and dtypes not verified (pyaudit "
            "never unpickles); convert to safetensors for a full audit",
        )
    )
    return out

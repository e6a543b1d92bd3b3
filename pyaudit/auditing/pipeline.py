"""One checkpoint, audited: structure, contents against the expectation, adapters, intent.

Stages, each over plain data: the checkpoint's files (discover) and their headers (read
by the native core, passed in) -> structural findings (:mod:`.structure`) -> what to
expect and from where (:mod:`pyaudit.expected`) -> comparison (:mod:`.compare`, its fast
path :mod:`.match`) -> adapters -> intent (:mod:`pyaudit.intent`) -> one
:class:`~pyaudit.auditing.results.CheckpointReport`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pyaudit import _core
from pyaudit import expected as expect_mod
from pyaudit.adapters import check_adapter
from pyaudit.auditing import match, sharded, structure
from pyaudit.auditing.cache import AuditCache
from pyaudit.auditing.compare import Comparison, Found, compare_full, is_peft_tensor
from pyaudit.auditing.results import AdapterSummary, AuditOptions, CheckpointReport, Counts
from pyaudit.auditing.structure import Contents, is_adapter_file
from pyaudit.data import DataResult, data_findings
from pyaudit.discover import CheckpointDir
from pyaudit.expected import Expected, ManifestUnavailable, expectation_for
from pyaudit.findings import Bytes, Finding, Message, finding, status_of
from pyaudit.headers import Header
from pyaudit.intent import check_intent, declared
from pyaudit.manifest import model_type_of
from pyaudit.memo import Identity
from pyaudit.runfiles import (
    Fetched,
    Problem,
    adapter_config_problems,
    config_problems,
    findings_of,
)
from pyaudit.runs import Declared, find_run_args, read_json
from pyaudit.units import noun, plural

if TYPE_CHECKING:
    from pyaudit.auditing import pickled as pickled_mod
    from pyaudit.auditing.pickled import PickledFiles


def audit_checkpoint(
    ckpt: CheckpointDir,
    headers: Mapping[str, Header],
    options: AuditOptions,
    base_expected: Expected | None = None,
    data: Mapping[str, DataResult] | None = None,
    digests: Mapping[str, tuple[int, int] | None] | None = None,
    ahead: tuple[_core.TensorSpecs, _core.SpecMatch] | None = None,
    cache: AuditCache | None = None,
    pickled: PickledFiles | None = None,
    fetched: Fetched | None = None,
) -> CheckpointReport:
    """Audit one checkpoint whose .safetensors headers (by file name) are given, and
    the results of streaming its tensor bytes when --verify-data asked for them.
    ``digests``: (size, digest) of its JSON files by name, as a sweep's reading threads
    found them (:func:`~pyaudit.auditing.structure.run_file_names`), so that content seen
    before is not read again; ``ahead``: its weight files held against a native table
    there (``cache.last_table``); ``cache``: the memo tables of the sweep (default: a
    fresh one, nothing shared); ``pickled``: its pickle-era files (.bin, DCP, DeepSpeed)
    as :func:`~pyaudit.auditing.pickled.read_pickled` read them (None: not read, and
    nothing of them is verified); ``fetched``: run files' bytes read elsewhere (a remote
    store's), by path: its own config, adapter config and index, those of the directories
    above it and of the runs and models its files name, asked before the disk
    (:func:`pyaudit.runfiles.read_bytes`)."""
    if cache is None:
        cache = AuditCache(fast=options.fast_path)
    if ckpt.unlisted is not None:  # a directory that could not be searched
        unlisted = (finding("unreadable", f"directory {ckpt.display}: {ckpt.unlisted}"),)
        return CheckpointReport(
            path=ckpt.display, status=status_of(unlisted, options.fail_on), findings=unlisted
        )
    findings: list[Finding] = []
    kind = "unknown"
    model_type: str | None = None
    layout: str | None = None
    tensors: dict[str, int | None] = {"found": 0, "expected": None, "missing": 0, "unexpected": 0}
    sizes: dict[str, int | None] = {"found": 0, "expected": None}

    # The run's own files; what could not be read or used in them, each a finding.
    known = digests or {}
    problems: list[Problem] = []
    config = (
        structure.load_run_file(
            ckpt, "config.json", known, cache, problems, config_problems, fetched
        )
        if ckpt.has_config
        else None
    )
    adapter_config = (
        structure.load_run_file(
            ckpt, "adapter_config.json", known, cache, problems, adapter_config_problems,
            fetched,
        )
        if ckpt.has_adapter_config
        else None
    )
    run = find_run_args(
        ckpt.path, ckpt.scan_root, listed=ckpt.listed_run_files, memo=cache.json, fetched=fetched
    )
    problems.extend(run.problems)

    # Structure: the weight files, the index against them.
    keys = {n: structure.file_key(n, headers[n]) for n in ckpt.safetensors}
    index_doc = structure.index_doc(ckpt, known, cache, problems, fetched)
    indexed = structure.indexed_files(index_doc, cache)
    strays = (
        {n for n in ckpt.safetensors if not is_adapter_file(n) and n not in indexed}
        if indexed is not None
        else None
    )
    intended = declared(options.expect, run, ckpt.display, options.expect_runs)
    adapter: AdapterSummary | None = None
    # The common case in one native pass: every file valid and indexed exactly, holding
    # exactly the default layout of the model its config names.
    all_clean = _all_clean_memo(
        ckpt, headers, keys, index_doc, config, base_expected, strays, cache, ahead
    )
    exact = all_clean is not None or structure.index_exact(
        index_doc, {n: headers[n] for n in ckpt.safetensors}, keys, cache
    )
    contents = structure.collect(ckpt, headers, keys, cache, ignore=strays, index_exact=exact)
    findings += contents.findings
    index_findings, index = structure.check_index(ckpt, index_doc, keys, contents)
    findings += index_findings
    sizes["found"] = contents.found_bytes

    bins = None
    if pickled is not None and pickled.bins and not ckpt.safetensors:
        # (pyaudit.auditing.pickled, with its formats' readers: imported where a checkpoint
        # has pickle-era files, not by every sweep)
        from pyaudit.auditing import pickled as pickled_mod

        bins = pickled_mod.bin_contents(ckpt, pickled)

    def found_base() -> Mapping[str, Found]:  # (contents.base is built when first asked)
        return bins.base if bins is not None else contents.base

    # What to expect, and from where.
    expectation = expectation_for(
        ckpt, config, adapter_config, run, index, options.oracle, base_expected, cache,
        fetched=fetched,
        found_names=lambda: found_base().keys(),
        found_shapes=lambda: {n: f.shape for n, f in found_base().items()},
    )
    findings += expectation.findings
    model_type = expectation.model_type
    expected = expectation.expected
    if expected is not None:
        model_type = expected.model_type or model_type
        tensors["expected"] = len(expected.default.tensors)
        sizes["expected"] = expected.total_bytes
    if base_expected is not None and config is not None:
        # --base: the report's model is the checkpoint's own, and another family is a finding.
        own = model_type_of(config)
        model_type = own or model_type
        findings += _base_family(own, base_expected, options)
    findings += findings_of(problems)

    # What kind of checkpoint it is. A checkpoint the native match finds exactly as
    # expected holds no PEFT names: the clean comparison settles its kind without a
    # table of its tensors.
    clean = all_clean or (_clean_memo(contents, expected, cache) if expected is not None else None)
    peft_in_base = (
        [n for n in contents.base if is_peft_tensor(n)]
        if clean is None and contents.base_peft
        else []
    )
    non_peft = contents.base_count - len(peft_in_base)
    if non_peft > 0:
        kind = "full"
    elif contents.adapter_count or peft_in_base:
        kind = "adapter"
    tensors["found"] = contents.base_count + contents.adapter_count
    adapter_keys = tuple(
        keys[n] for n in ckpt.safetensors if is_adapter_file(n) and n in contents.readable
    )

    files = list(contents.files)

    # Contents against the expectation.
    if bins is not None:
        # Pickled .bin weights only, read as data: held like safetensors.
        kind, layout, adapter, bin_findings = _audit_bins(
            ckpt, bins, expected, adapter_config, intended, tensors, sizes
        )
        findings += bin_findings
        files += bins.files
    elif kind == "full" and expected is not None:
        # Tensors the index places in a file that is absent or unreadable are reported
        # by that file's finding (shard-missing, shard-truncated, ...), not again as missing.
        weight_map = index["weight_map"] if index is not None else {}
        unread = (indexed or frozenset()) - contents.readable
        explained = frozenset(
            t for t, f in weight_map.items() if f in unread
        ) if unread else frozenset()
        comparison = clean or _compare_memo(contents, expected, explained, cache)
        layout = comparison.layout
        _take_counts(comparison, tensors, sizes)
        findings += comparison.findings
        if contents.adapter_count:
            findings += _check_adapter_memo(
                contents.adapter, adapter_keys, adapter_config, expected, cache
            )
    elif kind == "adapter":
        if contents.adapter_count:
            adapter_tensors: Mapping[str, Found] = contents.adapter
            tensor_keys = adapter_keys
        else:
            adapter_tensors = {n: contents.base[n] for n in peft_in_base}
            tensor_keys = tuple(contents.base_keys)
        findings += _check_adapter_memo(
            adapter_tensors, tensor_keys, adapter_config, expected, cache
        )
        adapter, note = _adapter_kind(
            intended, expected, adapter_tensors, contents.found_bytes, tensors
        )
        if note is not None:
            findings.append(note)
    elif (
        ckpt.has_adapter_config
        and not ckpt.bin_weights
        and all(n in contents.readable for n in ckpt.safetensors)
    ):
        # No adapter file, or adapter files that were read and hold no tensors at all.
        findings += check_adapter({}, adapter_config, expected)
        kind = "unknown"
    elif not ckpt.has_weights:
        states = _sharded_states(ckpt, pickled)
        if states:
            kind, state_findings = _audit_sharded(states, expected, tensors, sizes)
            findings += state_findings
        else:
            findings.append(sharded.no_weights(ckpt))
    if bins is None and (ckpt.bin_weights or ckpt.bin_indexes):
        bin_findings, kind = _bin_findings(ckpt, expected, kind, tensors)
        findings += bin_findings

    if data:
        findings += data_findings(data)

    # What the run meant against what it saved.
    intent = check_intent(
        ckpt, run, intended, kind, contents.found_bytes, sizes["expected"], fetched
    )
    findings += intent.findings
    if model_type is None and config is not None:
        mt = config.get("model_type")
        model_type = mt if isinstance(mt, str) else None
    return CheckpointReport(
        path=ckpt.display,
        status=status_of(findings, options.fail_on),
        kind=kind,
        model_type=model_type,
        layout=layout,
        expected_source=expected.source if expected is not None else None,
        declared=intent.declared,
        tensors=Counts(tensors),
        bytes=Counts(sizes),
        files=tuple(files),
        findings=tuple(findings),
        adapter=adapter,
    )


def _adapter_kind(
    intent: Declared | None,
    expected: Expected | None,
    adapter_tensors: Mapping[str, Found],
    found_bytes: int,
    tensors: dict[str, int | None],
) -> tuple[AdapterSummary, Finding | None]:
    """An adapter checkpoint's summary and its adapter-only note (or, where full training
    was declared, every base tensor missing); ``tensors`` updated: the base is all missing."""
    if expected is not None:
        tensors["missing"] = tensors["expected"]
    summary = AdapterSummary(
        tensors=len(adapter_tensors),
        bytes=found_bytes,
        base_found=0,  # an adapter checkpoint holds no base tensor (else its kind is full)
        base_expected=len(expected.default.tensors) if expected is not None else None,
        base_bytes_expected=expected.total_bytes if expected is not None else None,
    )
    return summary, _adapter_only(intent, expected, adapter_tensors, found_bytes)


def _adapter_only(
    intent: Declared | None,
    expected: Expected | None,
    adapter_tensors: Mapping[str, Found],
    found_bytes: int,
) -> Finding | None:
    """An adapter-only checkpoint: every base tensor missing where full training was
    declared (the intent check says the rest), else a note of what it holds."""
    if intent is not None and intent.kind == "full":
        if expected is None:
            return None
        groups = sorted(expected.default_groups(), key=lambda g: -g[1])
        total = len(expected.default.tensors)
        return finding(
            "base-weights-missing",
            Message.of(
                "{missing} of {total} base tensors absent ({size}): {shown}",
                missing=total,
                total=total,
                size=Bytes(expected.total_bytes) if expected.total_bytes is not None else "?",
                shown=", ".join(
                    f"{label} — {n} tensors" if n > 1 else label for label, n in groups[:6]
                ),
            ),
            tensors=list(expected.default.tensors),
        )
    base = ""
    values: dict[str, str | int | Bytes] = {}
    if expected is not None:
        base = "; the base model ({model_type}, {base_size}) is not in this checkpoint"
        values["model_type"] = expected.model_type or "unknown"
        values["base_size"] = (
            Bytes(expected.total_bytes) if expected.total_bytes is not None else "?"
        )
    return finding(
        "adapter-only",
        Message.of(
            "adapter weights only ({count} {tensors}, {size})" + base,
            count=len(adapter_tensors),
            tensors=noun(len(adapter_tensors), "tensor"),
            size=Bytes(found_bytes),
            **values,
        ),
    )


# --- through the cache ---------------------------------------------------------------


def _all_clean_memo(
    ckpt: CheckpointDir,
    headers: Mapping[str, Header],
    keys: Mapping[str, tuple[object, ...]],
    index_doc: dict[str, Any] | None,
    config: dict[str, Any] | None,
    base_expected: Expected | None,
    strays: set[str] | None,
    cache: AuditCache,
    ahead: tuple[_core.TensorSpecs, _core.SpecMatch] | None = None,
) -> Comparison | None:
    """match.all_clean, once per distinct (expected, index, files): the comparison of a
    checkpoint found clean in one pass, else None (the separate checks then run).
    ``ahead``: its files held against a table on a sweep's reading threads."""
    weight_map = index_doc.get("weight_map") if index_doc is not None else None
    if (
        not cache.fast
        or not isinstance(weight_map, dict)
        or strays
        or not ckpt.safetensors
        or any(is_adapter_file(n) or not headers[n].ok for n in ckpt.safetensors)
    ):
        return None
    # What expectation_for settles on first, whenever there is one: --base, else config.json.
    expected = base_expected
    if expected is None and config is not None:
        try:
            expected = expect_mod.from_config(config, "config.json", cache)
        except ManifestUnavailable:
            return None
    if expected is None:
        return None
    key = (Identity(expected), Identity(weight_map), tuple(keys.values()))
    return cache.all_clean.get(
        key,
        lambda: match.all_clean(
            [(n, headers[n]) for n in ckpt.safetensors], weight_map, expected, cache, ahead
        ),
    )


def _clean_memo(contents: Contents, expected: Expected, cache: AuditCache) -> Comparison | None:
    """match.clean_comparison over the base files, once per distinct (expected, files)."""
    if not cache.fast or contents.base_repeated or not contents.base_files:
        return None
    key = (Identity(expected), tuple(contents.base_keys))
    return cache.clean.get(
        key,
        lambda: match.clean_comparison([h for _, h, _ in contents.base_files], expected, cache),
    )


def _compare_memo(
    contents: Contents, expected: Expected, explained: frozenset[str], cache: AuditCache
) -> Comparison:
    key = (Identity(expected), tuple(contents.base_keys), explained)
    return cache.comparisons.get(key, lambda: compare_full(contents.base, expected, explained))


def _check_adapter_memo(
    tensors: Mapping[str, Found],
    keys: tuple[object, ...],
    adapter_config: dict[str, Any] | None,
    expected: Expected | None,
    cache: AuditCache,
) -> tuple[Finding, ...]:
    key = (
        keys,
        Identity(adapter_config) if adapter_config is not None else None,
        Identity(expected) if expected is not None else None,
    )
    return cache.adapter_checks.get(
        key, lambda: tuple(check_adapter(tensors, adapter_config, expected))
    )




def _take_counts(
    comparison: Comparison, tensors: dict[str, int | None], sizes: dict[str, int | None]
) -> None:
    """A comparison's counts into a report's ``tensors`` and ``sizes``."""
    tensors["expected"] = comparison.expected
    sizes["expected"] = comparison.expected_bytes
    tensors["missing"] = comparison.missing
    tensors["unexpected"] = comparison.unexpected


def _audit_bins(
    ckpt: CheckpointDir,
    bins: pickled_mod.BinContents,
    expected: Expected | None,
    adapter_config: dict[str, Any] | None,
    intended: Declared | None,
    tensors: dict[str, int | None],
    sizes: dict[str, int | None],
) -> tuple[str, str | None, AdapterSummary | None, list[Finding]]:
    """A checkpoint whose weights are .bin files only, read as data (never unpickled):
    its kind, layout, adapter summary and findings; ``tensors``/``sizes`` updated."""
    from pyaudit.auditing import pickled as pickled_mod

    findings = list(bins.findings)
    index_findings, explained = pickled_mod.check_bin_index(ckpt, bins)
    findings += index_findings
    sizes["found"] = bins.found_bytes
    peft = [n for n in bins.base if is_peft_tensor(n)]
    kind = "unknown"
    if len(bins.base) > len(peft):
        kind = "full"
    elif bins.adapter or peft:
        kind = "adapter"
    tensors["found"] = len(bins.base) + len(bins.adapter)
    layout: str | None = None
    adapter: AdapterSummary | None = None
    if kind == "full" and expected is not None:
        comparison = compare_full(bins.base, expected, explained)
        layout = comparison.layout
        _take_counts(comparison, tensors, sizes)
        findings += comparison.findings
        if bins.adapter:
            findings += check_adapter(bins.adapter, adapter_config, expected)
    elif kind == "adapter":
        adapter_tensors: Mapping[str, Found] = bins.adapter or {n: bins.base[n] for n in peft}
        findings += check_adapter(adapter_tensors, adapter_config, expected)
        adapter, note = _adapter_kind(
            intended, expected, adapter_tensors, bins.found_bytes, tensors
        )
        if note is not None:
            findings.append(note)
    elif not bins.readable and not findings:  # (a file that is not read always has a finding)
        findings.append(finding("weights-unverified", "no .bin weight file could be read"))
    elif bins.readable and not bins.base and not bins.adapter:
        findings.append(
            finding(
                "no-weights",
                f"{', '.join(sorted(bins.readable)[:3])}: read (never unpickled), and "
                "holding no tensors",
            )
        )
    return kind, layout, adapter, findings


def _sharded_states(
    ckpt: CheckpointDir, pickled: PickledFiles | None
) -> list[pickled_mod.ShardedState]:
    if pickled is None:
        return []
    from pyaudit.auditing import pickled as pickled_mod

    states = pickled_mod.dcp_states(ckpt, pickled)
    zero = pickled_mod.zero_state(ckpt, pickled)
    if zero is not None:
        states.append(zero)
    return states


def _audit_sharded(
    states: list[pickled_mod.ShardedState],
    expected: Expected | None,
    tensors: dict[str, int | None],
    sizes: dict[str, int | None],
) -> tuple[str, list[Finding]]:
    """A checkpoint that holds sharded training states (FSDP DCP, DeepSpeed ZeRO) in
    place of weights: each held against the model; complete ones are ``unconsolidated``
    warnings with the command, what they lack errors."""
    from pyaudit.auditing import pickled as pickled_mod

    findings: list[Finding] = []
    kind = "unknown"
    for state in states:
        findings += state.findings
        complete = not state.findings
        if state.found:
            kind = "full"
            tensors["found"] = len(state.found)
            sizes["found"] = sum(f.nbytes for f in state.found.values()) or None
            if expected is not None:
                comparison = compare_full(state.found, expected)
                _take_counts(comparison, tensors, sizes)
                findings += comparison.findings
                complete = complete and not any(
                    f.severity == "error" for f in comparison.findings
                )
        else:
            complete = False
        findings.append(pickled_mod.unconsolidated(state, complete, expected is not None))
    return kind, findings


def _bin_findings(
    ckpt: CheckpointDir, expected: Expected | None, kind: str, tensors: dict[str, int | None]
) -> tuple[list[Finding], str]:
    """Pickled .bin weights: never unpickled; names from their index when there is one.
    The findings and the checkpoint's kind; ``tensors`` (this audit's counts) updated."""
    out: list[Finding] = []
    names: list[str] = []
    for index_name in ckpt.bin_indexes:
        index = read_json(ckpt.path / index_name)
        if index and isinstance(index.get("weight_map"), dict):
            names.extend(index["weight_map"])
            absent = sorted(
                {
                    f
                    for f in index["weight_map"].values()
                    if isinstance(f, str) and not (ckpt.path / f).exists()
                }
            )
            if absent:
                shards = plural(len(absent), "missing shard")
                out.append(
                    finding(
                        "shard-missing",
                        f"{index_name} names {shards}: {', '.join(absent[:5])}",
                        count=len(absent),
                    )
                )
    if kind == "unknown" and (ckpt.bin_weights or names):
        kind = (
            "full"
            if not all(n.startswith("adapter_model") for n in ckpt.bin_weights)
            else "adapter"
        )
        tensors["found"] = len(names) or None
    if names and expected is not None and kind == "full" and not ckpt.safetensors:
        have = set(names)
        missing = [n for n in expected.default.tensors if n not in have]
        tensors["missing"] = len(missing)
        if missing:
            of = plural(len(expected.default.tensors), "base tensor")
            verb = "is" if len(missing) == 1 else "are"
            out.append(
                finding(
                    "base-weights-missing",
                    f"{len(missing)} of {of} {verb} not named by the .bin index",
                    tensors=missing,
                )
            )
    files = (
        f"{plural(len(ckpt.bin_weights), 'pickled .bin weight file')} "
        f"({', '.join(ckpt.bin_weights[:3])})"
    )
    checked = (
        "tensor names checked from the index only"
        if names
        else "no index: not even tensor names checked"
    )
    if not ckpt.safetensors:
        # The .bin files were not read (a remote store's are not fetched; or none is there):
        # nothing of them was verified, so no PASS.
        what = (
            f"{files} not read here (a remote store's pickle-era files are fetched only up "
            "to 16 MiB each; copy the checkpoint to a local disk for a full audit)"
            if ckpt.bin_weights
            else "no .bin weight file is present"
        )
        out.append(
            finding(
                "weights-unverified",
                f"{what}: {checked}, shapes, dtypes and sizes not verified",
            )
        )
        return out, kind
    out.append(
        finding(
            "shapes-unverified",
            f"{files} beside the .safetensors weights (which from_pretrained loads): "
            f"{checked}, shapes and dtypes of the .bin files not held against the model",
        )
    )
    return out, kind


def _base_family(own: str | None, base: Expected, options: AuditOptions) -> list[Finding]:
    """``--base`` of another family than the checkpoint's own config.json names: every
    tensor would be 'missing' or 'unexpected'; say what is wrong instead."""
    if own is None or base.model_type is None or base.model_type == own:
        return []
    return [
        finding(
            "base-mismatch",
            f"--base {options.base} is a {base.model_type} model but this checkpoint's "
            f"config.json says {own}: its tensors are held against another family's",
        )
    ]

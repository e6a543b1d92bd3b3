"""Checkpoints held against manifests and indexes by the native core: counts, not objects.

The audit's fast path. Nearly every checkpoint in a store is healthy, and for those the
native core can say so from counts alone (every tensor known, every expected tensor seen,
no dtype or shape differs, no name repeated, every shard holding exactly what the index
places in it) without one Python object per tensor. These functions answer only "clean"
or "look closer" (None / False): whatever is not clean goes to the reference path
(:func:`pyaudit.auditing.compare.compare_full`,
:func:`pyaudit.auditing.structure.check_index`), which finds and
explains it. So the fast path can skip work, never change a finding; the test suite holds
every report made with it against the same report made without it (``AuditCache(fast=False)``).

The native tables are built once per expectation and index, held in the
:class:`~pyaudit.auditing.cache.AuditCache` passed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyaudit import _core
from pyaudit.auditing.cache import AuditCache
from pyaudit.auditing.compare import BASE_LAYER, INNER_WRAPPER, Comparison, is_peft_tensor
from pyaudit.expected import Expected, LayoutTensors
from pyaudit.headers import Header
from pyaudit.memo import Identity


def _needs_normalising(name: str) -> bool:
    """Would compare.normalise() touch a found tensor of this name?"""
    return is_peft_tensor(name) or BASE_LAYER in name or INNER_WRAPPER.search(name) is not None


def _layout_specs(
    layout: LayoutTensors, file_of: Mapping[str, int] | None = None
) -> _core.TensorSpecs | None:
    """``layout``'s table: its tensors (dtype and shape stated) and its optional names;
    with ``file_of``, each name's group is its file's id there (-1 when absent)."""
    if not layout.tensors or layout.tensors.keys() & layout.optional.keys():
        return None  # compare.choose_layout would count such a name twice
    names = [*layout.tensors, *layout.optional]
    if any(_needs_normalising(n) for n in names):
        return None
    # compare_full checks a dtype only where the shape is known, and so does this.
    dtypes = [t.dtype if t.shape is not None and t.dtype else None for t in layout.tensors.values()]
    shapes = [t.shape for t in layout.tensors.values()]
    extra = len(layout.optional)
    try:
        return _core.TensorSpecs(
            names,
            dtypes=dtypes + [None] * extra,
            shapes=shapes + [None] * extra,
            groups=[file_of.get(n, -1) for n in names] if file_of is not None else None,
            optional=[False] * len(layout.tensors) + [True] * extra,
        )
    except (ValueError, TypeError, OverflowError):
        return None  # a dtype or shape the core cannot state: the reference path decides


def _holds_exactly(m: _core.SpecMatch, table: _core.TensorSpecs) -> bool:
    """Every tensor known, every required entry seen once, no dtype or shape differs."""
    return (
        m.tensors > 0
        and m.known == m.tensors
        and m.required_seen == table.required
        and m.dtype_differs == 0
        and m.shape_differs == 0
        and m.repeated == 0
    )


def _clean(layout: LayoutTensors, expected: Expected) -> Comparison:
    """compare_full's result for files holding exactly ``layout``: nothing to report."""
    total = layout.total_bytes if layout.total_bytes is not None else expected.total_bytes
    return Comparison(
        findings=(), layout=layout.name, expected=len(layout.tensors), expected_bytes=total
    )


def expected_specs(expected: Expected, cache: AuditCache) -> list[_core.TensorSpecs] | None:
    """One native table per layout of ``expected`` (built once per Expected), or None
    when some layout cannot be checked by counts alone."""
    return cache.expected_specs.get(Identity(expected), lambda: _expected_specs(expected))


def _expected_specs(expected: Expected) -> list[_core.TensorSpecs] | None:
    tables = [_layout_specs(layout) for layout in expected.layouts]
    return None if any(t is None for t in tables) else [t for t in tables if t is not None]


def clean_comparison(
    headers: Sequence[Header], expected: Expected, cache: AuditCache
) -> Comparison | None:
    """The comparison of a full checkpoint whose files (``headers``: the valid, non-adapter
    weight files the loader reads, no name in two of them) hold exactly one layout of
    ``expected``: no findings. None when anything differs, or cannot be told by counts."""
    if not cache.fast:
        return None
    specs = expected_specs(expected, cache)
    if specs is None:
        return None
    cores = [h.native for h in headers]
    # compare.choose_layout takes the layout most names fit, the first on a tie. A layout
    # every name fits scores the most possible: the first such one is the choice, and
    # the layouts after it need no match.
    for layout, table in zip(expected.layouts, specs, strict=True):
        m = table.match(cores)
        if m.tensors == 0 or m.known < m.tensors:
            continue
        return _clean(layout, expected) if _holds_exactly(m, table) else None
    return None


@dataclass(frozen=True)
class IndexSpecs:
    """An index's native table: each name's group is its file's id."""

    specs: _core.TensorSpecs
    file_ids: dict[str, int]  # every file the index names, sorted -> its group
    per_file: Counter[str]


def _index_specs(weight_map: dict[str, Any], cache: AuditCache) -> IndexSpecs:
    return cache.index_specs.get(Identity(weight_map), lambda: _build_index_specs(weight_map))


def _build_index_specs(weight_map: dict[str, Any]) -> IndexSpecs:
    files = sorted({f for f in weight_map.values() if isinstance(f, str)})
    file_ids = {f: i for i, f in enumerate(files)}
    groups = [file_ids[f] if isinstance(f, str) else -1 for f in weight_map.values()]
    specs = _core.TensorSpecs(list(weight_map), groups=groups)
    per_file = Counter(f for f in weight_map.values() if isinstance(f, str))
    return IndexSpecs(specs, file_ids, per_file)


def files_named(weight_map: dict[str, Any], cache: AuditCache) -> list[str]:
    """The files an index's weight_map names, sorted (derived once per index)."""
    return list(_index_specs(weight_map, cache).file_ids)


def index_places_exactly(
    weight_map: dict[str, Any], headers: Mapping[str, Header], cache: AuditCache
) -> bool:
    """True when every valid shard the index names (``headers``: file name -> header)
    holds exactly the tensors the index places in it: nothing misplaced, nothing unlisted."""
    if not cache.fast:
        return False
    index = _index_specs(weight_map, cache)
    named = [(f, h) for f, h in headers.items() if f in index.file_ids and h.ok]
    if not named:
        return True
    m = index.specs.match([h.native for _, h in named], [index.file_ids[f] for f, _ in named])
    return _placed_exactly(named, m.in_group, index.per_file)


def _placed_exactly(
    files: Sequence[tuple[str, Header]], in_group: Sequence[int], per_file: Counter[str]
) -> bool:
    """Each file holds exactly the tensors the index places in it: all of its tensors are
    placed there (``in_group``: how many are) and as many as the index places there."""
    return all(n == len(h) == per_file[f] for (f, h), n in zip(files, in_group, strict=True))


def repeated_names(headers: Sequence[Header]) -> int:
    """Tensors (over valid headers, in order) whose name an earlier tensor had."""
    return int(_core.count_repeated_names([h.native for h in headers]))


def names_containing(headers: Sequence[Header], needle: str) -> int:
    return int(_core.count_names_containing([h.native for h in headers], needle))


CombinedSpecs = tuple[_core.TensorSpecs, dict[str, int], Counter[str]]


def _combined_specs(
    expected: Expected, weight_map: dict[str, Any], cache: AuditCache
) -> CombinedSpecs | None:
    """The default layout's table with each name's file (by the index) as its group."""
    key = (Identity(expected), Identity(weight_map))
    return cache.combined_specs.get(key, lambda: _build_combined_specs(expected, weight_map, cache))


def _build_combined_specs(
    expected: Expected, weight_map: dict[str, Any], cache: AuditCache
) -> CombinedSpecs | None:
    if expected_specs(expected, cache) is None:
        return None
    index = _index_specs(weight_map, cache)
    file_of = {n: index.file_ids[f] for n, f in weight_map.items() if isinstance(f, str)}
    table = _layout_specs(expected.default, file_of)
    return (table, index.file_ids, index.per_file) if table is not None else None


def all_clean(
    files: Sequence[tuple[str, Header]],
    weight_map: dict[str, Any],
    expected: Expected,
    cache: AuditCache,
    ahead: tuple[_core.TensorSpecs, _core.SpecMatch] | None = None,
) -> Comparison | None:
    """One native pass for the common case: the weight files (``files``: every one valid,
    none an adapter, each named by the index) hold exactly the default layout of
    ``expected``, and each holds exactly what the index places in it, and the index names
    no other file. Then the (finding-free) comparison; else None, and the separate checks
    decide. The table it used is kept as ``cache.last_table``: a sweep has the next batch's
    checkpoints held against it on the reading threads (most are of the same run), and
    this takes that match (``ahead``) when it is for the table it needs."""
    if not cache.fast or not files:
        return None
    combined = _combined_specs(expected, weight_map, cache)
    if combined is None:
        return None
    table, ids, per_file = combined
    if any(f not in ids for f, _ in files):
        return None
    if ahead is not None and ahead[0] is table:
        m = ahead[1]  # the same files held against the same table, on a reading thread
    else:
        m = table.match([h.native for _, h in files], [ids[f] for f, _ in files])
    last = cache.last_table
    if last is None or last[0] is not table:
        cache.last_table = (table, ids)
    if not (
        _holds_exactly(m, table)
        and _placed_exactly(files, m.in_group, per_file)
        and sum(per_file[f] for f, _ in files) == sum(per_file.values())
    ):
        return None
    return _clean(expected.default, expected)

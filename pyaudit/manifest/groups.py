"""Turn a set of tensor names into a few readable groups, using their numeric components.

Generic: it knows nothing about families. Names are split on ``.``; the first numeric
component (a layer, block or expert index) splits a name into a stem (``model.layers``), an
index and a rest. Indices whose rests are the same set are merged into ranges, and each rest
set is described recursively, so that::

    model.layers.{20..27}.*                 -> ("model.layers.20-27.*", 96)
    model.layers.{0..3}.mlp.experts.{2,3}.*  -> ("model.layers.0-3.mlp.experts.2-3.*", 24)

With ``all_names`` (every name that exists, e.g. a manifest's), labels get precise: a group
covering every index of its stem is named as a whole, ``("visual.blocks.* (32 blocks)", 390)``,
and a partial set under one index is split by sub-module instead of being shown as ``.*``.
Without it, a set of names under one index is shown as ``.*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["format_ranges", "group_names"]

_Tokens = tuple[str, ...]
_Group = tuple[str, int, tuple[str, ...]]  # label, count, notes ("32 blocks", ...)
_NUM = re.compile(r"\d+")


def _is_num(tok: str) -> bool:
    return _NUM.fullmatch(tok) is not None


def format_ranges(indices: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``."""
    nums = sorted(set(indices))
    parts: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(parts)


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(t)) if _is_num(t) else (1, t) for t in name.split("."))


class Universe:
    """What exists: names under each prefix, and the numeric children of each prefix."""

    def __init__(self, names: Iterable[str]) -> None:
        self.counts: dict[str, int] = {}
        self.children: dict[str, set[int]] = {}
        for name in set(names):
            toks = name.split(".")
            prefix = ""
            for tok in toks[:-1]:
                if _is_num(tok):
                    self.children.setdefault(prefix, set()).add(int(tok))
                prefix = f"{prefix}.{tok}" if prefix else tok
                self.counts[prefix] = self.counts.get(prefix, 0) + 1

    def complete(self, bases: list[str], rel: _Tokens, n: int) -> bool:
        """Do the ``n`` names at ``base.rel.*`` (for every base) cover all that exists there?"""
        tail = ".".join(rel)
        for base in bases:
            key = f"{base}.{tail}" if base and tail else (base or tail)
            if self.counts.get(key, 0) > n:
                return False
        return True

    def covers(self, bases: list[str], idx: set[int]) -> bool:
        return all(self.children.get(b, set()) <= idx for b in bases)


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _describe(names: list[_Tokens], bases: list[str], universe: Universe | None) -> list[_Group]:
    """Relative groups for ``names`` (token tuples found under every prefix in ``bases``)."""
    if len(names) == 1:
        return [(".".join(names[0]), 1, ())]
    common: list[str] = []
    for pos in range(min(len(n) for n in names) - 1):  # never swallow a whole name
        tok = names[0][pos]
        if all(n[pos] == tok for n in names):
            common.append(tok)
        else:
            break
    cp = tuple(common)
    rests = [n[len(cp) :] for n in names]
    if all(_is_num(r[0]) for r in rests):
        inner = _by_index(rests, [_join(b, *cp) for b in bases], universe)
        return [(_join(*cp, label), count, notes) for label, count, notes in inner]
    if universe is None or universe.complete(bases, cp, len(names)):
        return [(_join(*cp, "*"), len(names), ())]
    # A partial set: describe each sub-module separately.
    heads: dict[str, list[_Tokens]] = {}
    for r in rests:
        heads.setdefault(r[0], []).append(r)
    out: list[_Group] = []
    for head in sorted(heads, key=_natural_key):
        sub = heads[head]
        if len(sub) == 1:
            out.append((".".join((*cp, *sub[0])), 1, ()))
            continue
        for label, count, notes in _describe(sub, [_join(b, *cp) for b in bases], universe):
            out.append((_join(*cp, label), count, notes))
    return out


def _by_index(rests: list[_Tokens], bases: list[str], universe: Universe | None) -> list[_Group]:
    """Groups for ``rests`` that all start with an index, under every prefix in ``bases``.

    Two ways to cut: indices sharing the same set of sub-names (whole layers missing), or
    sub-names sharing the same set of indices (one expert missing in every layer); the one
    giving fewer groups (then the bigger largest group) wins.
    """
    per_index: dict[int, list[_Tokens]] = {}
    for r in rests:
        per_index.setdefault(int(r[0]), []).append(r[1:])
    by_subs: dict[frozenset[_Tokens], list[int]] = {}
    for idx, subs in per_index.items():
        by_subs.setdefault(frozenset(subs), []).append(idx)
    per_sub: dict[_Tokens, list[int]] = {}
    for idx, subs in per_index.items():
        for sub in subs:
            per_sub.setdefault(sub, []).append(idx)
    by_idxs: dict[frozenset[int], list[_Tokens]] = {}
    for sub, idxs in per_sub.items():
        by_idxs.setdefault(frozenset(idxs), []).append(sub)

    cut_a = [(sorted(idxs), sorted(subset, key=_sub_key)) for subset, idxs in by_subs.items()]
    cut_b = [(sorted(idxs), sorted(subs, key=_sub_key)) for idxs, subs in by_idxs.items()]
    out_a = _emit(cut_a, bases, universe)
    if len(out_a) == 1 or len(cut_b) > len(out_a):
        return out_a
    out_b = _emit(cut_b, bases, universe)

    def score(out: list[_Group]) -> tuple[int, int]:  # fewer groups, then a bigger largest one
        return (len(out), -max(g[1] for g in out))

    return out_b if score(out_b) < score(out_a) else out_a


def _sub_key(t: _Tokens) -> tuple[tuple[int, int | str], ...]:
    return _natural_key(".".join(t))


def _emit(
    cut: list[tuple[list[int], list[_Tokens]]], bases: list[str], universe: Universe | None
) -> list[_Group]:
    noun = bases[0].rsplit(".", 1)[-1] if bases and bases[0] else "items"
    out: list[_Group] = []
    for idxs, subs in sorted(cut, key=lambda c: (c[0][0], _sub_key(c[1][0]))):
        if subs == [()]:  # the names end with the index
            inner: list[_Group] = [("", 1, ())]
        else:
            inner_bases = [_join(b, str(i)) for b in bases for i in idxs]
            inner = _describe(subs, inner_bases, universe)
        whole = universe is not None and len(idxs) > 1 and universe.covers(bases, set(idxs))
        head = "*" if whole else format_ranges(idxs)
        note: tuple[str, ...] = (f"{len(idxs)} {noun}",) if whole else ()
        for label, count, notes in inner:
            lbl = "" if whole and label == "*" else label
            out.append((_join(head, lbl), count * len(idxs), note + notes))
    return out


def group_names(
    names: Iterable[str], all_names: Iterable[str] | None = None
) -> list[tuple[str, int]]:
    """Readable ``(label, count)`` groups for ``names``; counts add up to ``len(set(names))``.

    ``all_names`` (optional) is every name that exists (e.g. a manifest's); with it, a group
    spanning every index of a stem is labelled ``"stem.* (N <stem's last part>)"`` and partial
    sets are split by sub-module. Groups come in natural name order.
    """
    return group_names_in(names, Universe(all_names) if all_names is not None else None)


def group_names_in(names: Iterable[str], universe: Universe | None) -> list[tuple[str, int]]:
    """:func:`group_names` against a :class:`Universe` built once (a manifest's names)."""
    uniq = sorted(set(names), key=_natural_key)
    stems: dict[_Tokens, list[_Tokens]] = {}
    order: list[str | _Tokens] = []  # a plain name, or the stem of indexed names
    for name in uniq:
        toks = tuple(name.split("."))
        pos = next((i for i, t in enumerate(toks) if _is_num(t)), None)
        if pos is None:
            order.append(name)
            continue
        stem = toks[:pos]
        if stem not in stems:
            stems[stem] = []
            order.append(stem)
        stems[stem].append(toks[pos:])
    out: list[tuple[str, int]] = []
    for item in order:
        if isinstance(item, str):
            out.append((item, 1))
            continue
        stem_str = ".".join(item)
        for label, count, notes in _by_index(stems[item], [stem_str], universe):
            suffix = f" ({' x '.join(notes)})" if notes else ""
            out.append((_join(stem_str, label) + suffix, count))
    return out

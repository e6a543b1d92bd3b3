"""Repeated blocks: where nothing says what a model holds, its own layers still do.

A checkpoint with no manifest (no spec for its family and no oracle answer, or no config at
all) can still be held against itself: the numbered blocks of one list (``model.layers.N``,
``encoder.block.N``, ``h.N``) are made by one class, so they hold the same tensors. Generic
and torch-free: it knows nothing of families, only names and shapes.

For each list (a name's stem before its first numeric component) of at least
:data:`MIN_BLOCKS` blocks:

- **a block missing from the middle**: an index between two present ones is absent, and the
  blocks on either side of the hole have the list's common signature (the same tensor names
  and shapes as more than half of its blocks), in a list with at least
  :data:`MAX_HOLE_RATE` blocks per hole. A ``Sequential`` whose parameter-free members leave
  holes at a steady rate (``mlp.0``, ``mlp.2``, ``mlp.4``; conv, activation, conv) makes no
  claim;
- **a block lacking tensors**: a block (other than the list's first, which often differs by
  design: T5's relative bias, a first stage without a downsampler) whose names are a strict
  subset of a kind's (the names some blocks hold exactly), where the blocks of that kind
  and those short of it are more than half the list, and those of the kind outnumber those
  short of it (a MoE layer that lost a tensor, beside dense first layers).

Neither is claimed for hybrids whose kinds are not subsets of one another (attention beside
Mamba layers, dense beside MoE layers). When the config declares that its layers differ (a
per-layer list or pattern whose entries are not all equal, or a list of layer indices), a
claim is a warning instead of an error: such a model may omit tensors in some layers by
design.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from pyaudit.findings import Finding, Message, Severity, finding
from pyaudit.manifest.groups import format_ranges
from pyaudit.units import noun, plural

__all__ = ["BlockLists", "block_lists", "declared_heterogeneous", "incomplete_blocks"]

MIN_BLOCKS = 3  # fewer blocks give no majority to hold one against
MAX_HOLE_RATE = 4  # holes are claimed in a list with at least this many blocks per hole
_NUM = re.compile(r"\d+")
Shape = tuple[int, ...]


@dataclass(frozen=True)
class BlockLists:
    """The numbered blocks of a checkpoint: stem -> index -> {rest of the name: shape}."""

    lists: Mapping[str, Mapping[int, Mapping[str, Shape]]]

    def described(self) -> str:
        """What the check covered, for the ``Checked:`` part of a message."""
        big = [(s, len(b)) for s, b in self.lists.items() if len(b) >= MIN_BLOCKS]
        if not big:
            return ""
        big.sort(key=lambda sb: -sb[1])
        shown = ", ".join(f"{s}: {n} blocks" for s, n in big[:3])
        more = f" and {len(big) - 3} more lists" if len(big) > 3 else ""
        return f"that the numbered blocks of each list ({shown}{more}) hold the same tensors"


def block_lists(tensors: Mapping[str, Shape]) -> BlockLists:
    """Split each name at its first numeric component (after the first): stem, index, rest."""
    lists: dict[str, dict[int, dict[str, Shape]]] = {}
    for name, shape in tensors.items():
        toks = name.split(".")
        for p in range(1, len(toks) - 1):
            if _NUM.fullmatch(toks[p]) and len(toks[p]) < 10:
                stem = ".".join(toks[:p])
                rest = ".".join(toks[p + 1 :])
                lists.setdefault(stem, {}).setdefault(int(toks[p]), {})[rest] = shape
                break
    return BlockLists(lists)


def declared_heterogeneous(config: Mapping[str, Any] | None, counts: Iterable[int]) -> str | None:
    """The config field (``text_config.layer_types``) declaring that blocks differ: a list
    or pattern string as long as one of ``counts`` whose entries are not all equal, or a
    non-empty list of distinct block indices shorter than it. None when none does."""
    if not config:
        return None
    sizes = set(counts)

    def walk(node: Mapping[str, Any], prefix: str, depth: int) -> str | None:
        for key, value in node.items():
            where = f"{prefix}{key}"
            if isinstance(value, Mapping) and depth < 4:
                found = walk(value, f"{where}.", depth + 1)
                if found:
                    return found
            elif isinstance(value, str) and len(value) in sizes and len(set(value)) > 1:
                return where
            elif isinstance(value, list) and value:
                if len(value) in sizes and any(v != value[0] for v in value):
                    return where
                ints = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
                if (
                    len(ints) == len(value)
                    and len(set(ints)) == len(ints)
                    and any(min(ints) >= 0 and max(ints) < n and len(ints) < n for n in sizes)
                ):
                    return where
        return None

    return walk(config, "", 0)


def incomplete_blocks(blocks: BlockLists, config: Mapping[str, Any] | None) -> list[Finding]:
    """``layer-incomplete`` findings: blocks missing from the middle of a list, blocks
    lacking tensors their siblings hold (see the module's doc for the rules)."""
    claims: list[tuple[str, list[str], int]] = []  # (what, missing names, blocks involved)
    sizes: list[int] = []
    for stem, by_index in blocks.lists.items():
        n = len(by_index)
        if n < MIN_BLOCKS:
            continue
        signatures = {i: frozenset(rests.items()) for i, rests in by_index.items()}
        common_sig, sig_count = Counter(signatures.values()).most_common(1)[0]
        name_sets = {i: frozenset(rests) for i, rests in by_index.items()}
        indices = sorted(by_index)
        sizes.append(indices[-1] + 1)
        # Holes between blocks of the common signature, in a list that is dense: a
        # Sequential's parameter-free members leave holes at a steady rate (every second
        # or third index), a lost block leaves few.
        all_holes = indices[-1] - indices[0] + 1 - n
        if sig_count * 2 > n and 0 < all_holes * MAX_HOLE_RATE <= n:
            holes: list[int] = []
            for below, above in pairwise(indices):
                if (
                    above - below > 1
                    and signatures[below] == common_sig
                    and signatures[above] == common_sig
                ):
                    holes.extend(range(below + 1, above))
            if holes:
                rests = sorted(rest for rest, _ in common_sig)
                names = [f"{stem}.{i}.{rest}" for i in holes for rest in rests]
                what = (
                    f"{stem} has blocks {format_ranges(indices)}: "
                    f"{plural(len(holes), 'block')} ({format_ranges(holes)}) missing between "
                    f"blocks that {sig_count} of its {n} blocks match, "
                    f"{plural(len(rests), 'tensor')} each"
                )
                claims.append((what, names, len(holes)))
        # Blocks holding a strict subset of the names a kind of blocks holds, where that
        # kind with the blocks short of it are more than half the list, and the blocks that
        # hold it all outnumber those short of it.
        claimed: set[int] = set()
        for kind, holders in Counter(name_sets.values()).most_common():
            if holders < 2:
                break
            short = [i for i in indices[1:] if i not in claimed and name_sets[i] < kind]
            if not short or (holders + len(short)) * 2 <= n or holders <= len(short):
                continue
            claimed.update(short)
            names = [f"{stem}.{i}.{rest}" for i in short for rest in sorted(kind - name_sets[i])]
            lacking = sorted({rest for i in short for rest in kind - name_sets[i]})
            shown = ", ".join(lacking[:4])
            if len(lacking) > 4:
                shown += f" and {len(lacking) - 4} more"
            what = (
                f"{noun(len(short), 'block')} {format_ranges(short)} of {stem} "
                f"{'lacks' if len(short) == 1 else 'lack'} {shown}, which {holders} of its "
                f"{n} blocks hold beside the rest of {'its' if len(short) == 1 else 'their'} "
                "tensors"
            )
            claims.append((what, names, len(short)))
    if not claims:
        return []
    field = declared_heterogeneous(config, sizes)
    missing = [name for _, names, _ in claims for name in names]
    if field is not None:
        why = (
            f"; the config declares blocks of different kinds ({field}), so this may be by "
            "design: a warning, not an error"
        )
        severity: Severity | None = "warning"
    else:
        why = ""
        severity = None
    message = Message.of(
        "{claims}: the blocks of one list are made by one class, so they hold the same "
        "tensors{why}. Tensors missing in all: {count}",
        claims="; ".join(what for what, _, _ in claims),
        why=why,
        count=len(missing),
    )
    return [finding("layer-incomplete", message, tensors=missing, severity=severity)]

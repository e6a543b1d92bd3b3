"""Small bounded memo tables for sweeps.

A store holds many checkpoints of one model, saved by one writer: their configs,
indexes and shard headers are byte-identical, so what is derived from them is
derived once. Keys are content (bytes, or a header's digest with its sizes), never
paths, so a memo can only return what the same input would produce; tables are
bounded, so memory stays flat however large the store.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

_MISSING = object()
_TABLES: weakref.WeakSet[LRU[object]] = weakref.WeakSet()


class LRU(Generic[V]):
    """A least-recently-used table of at most ``maxsize`` entries."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self.hits = 0
        self.misses = 0
        _TABLES.add(self)  # type: ignore[arg-type]

    def lookup(self, key: Hashable) -> tuple[bool, V | None]:
        """(True, value) when ``key`` is held (the value may be None), else (False, None)."""
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            self.misses += 1
            return False, None
        self.hits += 1
        self._data.move_to_end(key)
        return True, value  # type: ignore[return-value]

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value held for ``key``; else ``make()``'s, held from now on."""
        held, value = self.lookup(key)
        if held:
            return value  # type: ignore[return-value]
        return self.put(key, make())

    def put(self, key: Hashable, value: V) -> V:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._data)


def clear_all() -> None:
    """Empty every memo table (tests that compare two ways of auditing the same files)."""
    for table in list(_TABLES):
        table._data.clear()


class Identity:
    """A hashable stand-in for an unhashable object that is shared, not copied (a parsed
    JSON document handed out by a memo): equal only to itself, and it keeps the object
    alive while a memo holds it, so its id cannot be reused."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.obj is self.obj

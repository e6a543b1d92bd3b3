"""Small bounded memo tables, each safe to share between threads.

The audit's tables live together in one :class:`pyaudit.auditing.cache.AuditCache`,
passed in: no table here is a module global.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

_MISSING = object()


class LRU(Generic[V]):
    """A least-recently-used table of at most ``maxsize`` entries. Lookups and puts take
    a lock; :meth:`get` computes a missing value outside it (two threads may both compute
    one: the same value, since keys are content)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def lookup(self, key: Hashable) -> tuple[bool, V | None]:
        """(True, value) when ``key`` is held (the value may be None), else (False, None)."""
        with self._lock:
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
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


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

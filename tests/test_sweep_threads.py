"""How many threads read a sweep's next batch when --jobs is not given (pyaudit.sweep._Threads)."""

from __future__ import annotations

from typing import Any

import pytest

from pyaudit import _core, sweep


class FakeBatch:
    def __init__(self, files: int, cached: int, seconds_per_file: float) -> None:
        self.files, self.from_page_cache, self.seconds_per_file = files, cached, seconds_per_file

    def result(self) -> list[Any]:
        return []


@pytest.mark.parametrize("cachestat", [True, False])
def test_threads_follow_where_the_headers_were(monkeypatch: Any, cachestat: bool) -> None:
    monkeypatch.setattr(_core, "default_jobs", lambda: 4)
    monkeypatch.setattr(_core, "cachestat_supported", lambda: cachestat)
    threads = sweep._Threads(None)
    assert threads.next() == 4  # the first batch: one thread a core
    threads.saw(FakeBatch(100, 100, 20e-6))  # in memory: the audit keeps a core
    assert threads.next() == 3
    threads.saw(FakeBatch(100, 0, 2e-3))  # from disk: requests in flight
    assert threads.next() == 16
    # cachestat, where the kernel has it, decides alone; else the time a read took does.
    threads.saw(FakeBatch(100, 0, 20e-6))
    assert threads.next() == (16 if cachestat else 3)
    threads.saw(FakeBatch(0, 0, 0.0))  # nothing read: no evidence, no change
    assert threads.next() == (16 if cachestat else 3)


def test_jobs_given_are_kept(monkeypatch: Any) -> None:
    monkeypatch.setattr(_core, "cachestat_supported", lambda: True)
    threads = sweep._Threads(5)
    for batch in (FakeBatch(100, 100, 20e-6), FakeBatch(100, 0, 2e-3)):
        threads.saw(batch)  # type: ignore[arg-type]
        assert threads.next() == 5

"""pyaudit.firstpage without a store: a request that cannot be answered, and a scan that
no longer waits for it (its callbacks failing on a closed loop), are never a traceback."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest

from pyaudit import firstpage
from pyaudit.firstpage import FirstPage
from pyaudit.s3presign import Credentials, Shape


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # (closed on return: nothing listens there)


def test_an_unanswered_first_page_is_an_error_value_and_a_closed_loop_no_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raised: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", raised.append)
    base = f"http://127.0.0.1:{_closed_port()}/b"
    shape = Shape("b", "v4", base + "/", base, 3600, "us-east-1", "s3")
    loop = asyncio.new_event_loop()
    loop.close()  # the scan that asked is over
    gate = threading.Event()  # (held until the callbacks are in: then run on its thread)
    real = firstpage.get_blocking

    def gated(*args: Any) -> Any:
        gate.wait(30)
        return real(*args)

    monkeypatch.setattr(firstpage, "get_blocking", gated)
    page = FirstPage("b", "", shape, Credentials("AK", "SK", None), None)
    page.when_done(lambda: loop.call_soon_threadsafe(print))  # raises: the loop is closed
    done = threading.Event()
    page.when_done(done.set)
    gate.set()
    assert done.wait(30)
    assert page.result() is None and page.error is not None
    assert "ConnectionRefusedError" in page.error
    assert raised == []
    called: list[int] = []
    page.when_done(lambda: called.append(1))  # once over: called at once, on this thread
    assert called == [1]

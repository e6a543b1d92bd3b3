"""pyaudit.firstpage without a store: a request that cannot be answered, and a scan that
no longer waits for it (its callbacks failing on a closed loop), are never a traceback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
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


def _listed(tmp_path: Any, files: int) -> Any:
    bucket = tmp_path / "b" / "store"
    bucket.mkdir(parents=True)
    for i in range(files):
        (bucket / f"f{i:02d}").write_bytes(b"x")
    return tmp_path


def _wait(what: Any) -> None:
    deadline = time.monotonic() + 30
    while not what():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_the_pages_after_the_first_come_one_after_another_at_most_ahead(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first page's thread asks the pages after it, each with the token the page before
    names, over one connection; no more than AHEAD wait untaken. Taken in order (each token
    as the page's XML parse gives it), the listing is whole: each page asked once."""
    from pyaudit.remote import _parse_listing
    from pyaudit.testing import static_s3
    from pyaudit.testing.proxy import LatencyProxy

    monkeypatch.setattr(static_s3, "MAX_KEYS", 3)
    with LatencyProxy(serve=str(_listed(tmp_path, 40)), delay=0.0) as proxy:
        base = f"{proxy.url}/b"
        shape = Shape("b", "v4", base + "/", base, 3600, "us-east-1", "s3")
        page = FirstPage("b", "store/", shape, Credentials("AK", "SK", None), None)
        _wait(lambda: page._waiting == firstpage.AHEAD)
        chain, at = [], page
        while at is not None:
            chain.append(at.token)
            at = at.next
        assert chain == [None, "store/f02", "store/f05", "store/f08"]
        assert proxy.stats.kinds["get-list"] == firstpage.AHEAD  # (then it waits)
        keys: list[str] = []
        token = None
        while True:
            taken = page.take(token)
            assert taken is not None and taken.token == token
            done = threading.Event()
            taken.when_done(done.set)
            assert done.wait(30)
            answer = taken.result()
            assert answer is not None and answer.status == 200
            items, token = _parse_listing(answer.body)
            keys += [key for key, _, _ in items]
            if token is None:
                break
        assert keys == [f"store/f{i:02d}" for i in range(40)]
        assert proxy.stats.kinds["get-list"] == 14 and proxy.stats.connections == 1
        assert page.untaken() == 0


def test_a_listing_that_asks_otherwise_stops_the_pages_asked_early(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token the thread did not ask (read otherwise than from the page's XML) is not
    answered here: the thread asks no page after the ones it has, each of which is a
    request sent, counted once by ``untaken``."""
    from pyaudit.testing import static_s3
    from pyaudit.testing.proxy import LatencyProxy

    monkeypatch.setattr(static_s3, "MAX_KEYS", 3)
    with LatencyProxy(serve=str(_listed(tmp_path, 40)), delay=0.0) as proxy:
        base = f"{proxy.url}/b"
        shape = Shape("b", "v4", base + "/", base, 3600, "us-east-1", "s3")
        page = FirstPage("b", "store/", shape, Credentials("AK", "SK", None), None)
        assert page.take(None) is page
        _wait(lambda: page._waiting == firstpage.AHEAD)  # (one taken: AHEAD more asked)
        assert page.take("store/f99") is None
        assert page.take("store/f02") is not None  # (asked: still to be taken)
        assert page.take(None) is None  # (taken once)
        asked = proxy.stats.kinds["get-list"]
        assert asked == firstpage.AHEAD + 1
        assert page.untaken() == asked - 2 and page.untaken() == 0
        assert proxy.stats.kinds["get-list"] == asked


@pytest.mark.parametrize(("body", "token"), [
    (b"<R><IsTruncated>true</IsTruncated><NextContinuationToken>a/b c</NextContinuationToken>"
     b"</R>", "a/b c"),
    (b"<R><IsTruncated> TRUE </IsTruncated><NextContinuationToken> x&amp;y&lt;z "
     b"</NextContinuationToken></R>", "x&y<z"),
    (b"<R><IsTruncated>false</IsTruncated><NextContinuationToken>t</NextContinuationToken></R>",
     None),
    (b"<R><IsTruncated>true</IsTruncated></R>", None),
    (b"<R><IsTruncated>true</IsTruncated><NextContinuationToken>&#65;</NextContinuationToken>"
     b"</R>", None),  # (a character reference: left to the XML parse)
    (b"<R><IsTruncated>true</IsTruncated><NextContinuationToken>\xff</NextContinuationToken>"
     b"</R>", None),
])
def test_the_next_token_read_off_a_page(body: bytes, token: str | None) -> None:
    assert firstpage.next_token(body) == token


def test_no_page_is_asked_early_after_a_long_one(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page longer than AHEAD_PAGE_BYTES is the last asked early (what waits to be taken
    stays bounded whatever a server sends): the listing asks the next itself."""
    from pyaudit.testing import static_s3
    from pyaudit.testing.proxy import LatencyProxy

    monkeypatch.setattr(static_s3, "MAX_KEYS", 3)
    monkeypatch.setattr(firstpage, "AHEAD_PAGE_BYTES", 100)  # (a page of 3 keys: ~1 KB)
    with LatencyProxy(serve=str(_listed(tmp_path, 40)), delay=0.0) as proxy:
        base = f"{proxy.url}/b"
        shape = Shape("b", "v4", base + "/", base, 3600, "us-east-1", "s3")
        page = FirstPage("b", "store/", shape, Credentials("AK", "SK", None), None)
        done = threading.Event()
        page.when_done(done.set)
        assert done.wait(30)
        answer = page.result()
        assert answer is not None and firstpage.next_token(answer.body) == "store/f02"
        assert page.take("store/f02") is None and page.next is None
        assert proxy.stats.kinds["get-list"] == 1 and page.untaken() == 1


def test_a_thread_that_gave_up_waiting_names_no_page(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages not taken for SOCKET_TIMEOUT: the thread ends, and the page after the last it
    asked is not named to the listing afterwards (it would never be asked: the listing
    would wait for it for ever); the listing asks it itself."""
    from pyaudit.testing import static_s3
    from pyaudit.testing.proxy import LatencyProxy

    monkeypatch.setattr(static_s3, "MAX_KEYS", 3)
    monkeypatch.setattr(firstpage, "SOCKET_TIMEOUT", 0.2)
    with LatencyProxy(serve=str(_listed(tmp_path, 40)), delay=0.0) as proxy:
        base = f"{proxy.url}/b"
        shape = Shape("b", "v4", base + "/", base, 3600, "us-east-1", "s3")
        page = FirstPage("b", "store/", shape, Credentials("AK", "SK", None), None)
        _wait(lambda: page._stopped)  # (AHEAD answered, none taken, 0.2 s over)
        tokens, at = [], page
        while at is not None:
            tokens.append(at.token)
            at = at.next
        assert tokens == [None, "store/f02", "store/f05", "store/f08"]
        for token in tokens:
            assert page.take(token) is not None
        assert page.take("store/f11") is None  # (named by the last: never to be asked)
        assert proxy.stats.kinds["get-list"] == firstpage.AHEAD

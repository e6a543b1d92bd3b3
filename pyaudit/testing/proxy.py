"""An HTTP/1.1 proxy on 127.0.0.1 that adds a delay to every request and injects faults,
in front of loopback servers (an S3 fake such as moto's; several: connections in turn):
what a remote store looks like
from far away, for tests (faults) and benchmarks (latency). Loopback only, no TLS.

Or, with ``serve=DIR`` instead of upstreams, it answers the few S3 requests a sweep makes
itself, from ``DIR/BUCKET/KEY`` on disk (:mod:`pyaudit.testing.static_s3`: ListObjectsV2,
GET with or without a Range, HEAD): an S3 fake whose own cost is small beside a round trip,
so that a benchmark measures the client and the latency, not the fake (moto answers
~100-200 requests a second a process on a 2-core machine).

Each request waits ``delay`` seconds before it is forwarded (the round trip a distant
store adds); ``faults(method, path, n)`` (``n``: how many times that method and path have
been asked, from 1) may answer instead ``"slowdown"`` (S3's 503 SlowDown), ``"error"``
(500 InternalError), ``"drop"`` (the connection closed with no answer) or ``"stall"``
(no answer at all). Counted:
requests (by kind), response body bytes, connections open at once.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

from pyaudit.testing import static_s3

Faults = Callable[[str, str, int], "str | None"]

#: Connections the listening socket queues before accept (asyncio's default is 100): a
#: client opening its 128-connection pool at once had 27 of them dropped and retried by TCP
#: one second later (the SYN timeout), a stall no real S3 endpoint puts on it.
BACKLOG = 1024

_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>"
)
_INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message>"
    b"<RequestId>proxy</RequestId></Error>"
)


@dataclass
class ProxyStats:
    requests: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # get-range, get, list, head, other
    body_bytes: int = 0  # response bodies sent to clients (object bytes and listings)
    object_bytes: int = 0  # bodies of object GETs only
    faults: Counter[str] = field(default_factory=Counter)
    open: int = 0
    max_open: int = 0
    connections: int = 0  # accepted, in all

    def snapshot(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "kinds": dict(self.kinds),
            "body_bytes": self.body_bytes,
            "object_bytes": self.object_bytes,
            "faults": dict(self.faults),
            "max_open": self.max_open,
            "connections": self.connections,
        }


class LatencyProxy:
    """``with LatencyProxy("http://127.0.0.1:PORT", delay=0.1) as proxy: proxy.url``"""

    def __init__(
        self,
        upstream: str | list[str] | None = None,
        delay: float = 0.0,
        faults: Faults | None = None,
        serve: str | None = None,
        frozen: bool = False,
    ) -> None:
        """``frozen``: the directory served does not change while it is served (a
        benchmark's store): walked once, each object looked at once (static_s3.Held)."""
        self.upstreams: list[tuple[str, int]] = []
        self.serve = serve
        self._held = static_s3.Held(frozen=frozen)  # the static fake's listings and ETags
        if serve is None and not upstream:
            raise ValueError("the proxy needs an upstream server or a directory to serve")
        for url in [upstream] if isinstance(upstream, str) else upstream or []:
            parts = urlsplit(url)
            if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError(f"{url}: the proxy forwards to loopback servers only")
            self.upstreams.append((parts.hostname, parts.port or 80))
        self._next = 0  # each client connection goes to the next upstream, in turn
        self.delay = delay
        self.faults = faults
        self.stats = ProxyStats()
        self._seen: Counter[tuple[str, str]] = Counter()
        self._connections: set[_Served] = set()  # the static fake's open connections
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="latency-proxy")
        self._server: asyncio.base_events.Server | None = None
        self.url = ""

    def __enter__(self) -> LatencyProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        self._thread.start()
        if self.serve is not None:  # answered here: a protocol, no task per connection
            server = self._loop.create_server(
                lambda: _Served(self), "127.0.0.1", 0, backlog=BACKLOG
            )
        else:
            server = asyncio.start_server(
                self._client, "127.0.0.1", 0, limit=1 << 20, backlog=BACKLOG
            )
        fut = asyncio.run_coroutine_threadsafe(server, self._loop)
        self._server = fut.result(10)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for connection in list(self._connections):  # (3.12's wait_closed waits for them)
                connection.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # a writer.close() schedules its socket's closing: let that run before the loop
            # stops (else the socket is left to the garbage collector, a ResourceWarning)
            for _ in range(3):
                await asyncio.sleep(0)
            if self._server is not None:
                await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def reset(self) -> None:
        self.stats = ProxyStats()
        self._seen.clear()

    def _control(self, path: str) -> dict[str, object]:
        """/__proxy__/stats, /__proxy__/reset, /__proxy__/delay/<ms>."""
        if path == "/__proxy__/reset":
            self.reset()
        elif path.startswith("/__proxy__/delay/"):
            self.delay = float(path.rsplit("/", 1)[1]) / 1000
        return {**self.stats.snapshot(), "delay_ms": self.delay * 1000}

    def _admit(
        self, method: str, target: str, headers: dict[str, str]
    ) -> tuple[bytes | None, str, str | None]:
        """A request's answer when it is a control (a path under /__proxy__/, from a
        benchmark: not counted), else None, its kind and the fault to inject (counted)."""
        path, _, query = target.partition("?")
        if path.startswith("/__proxy__/"):
            answer = json.dumps(self._control(path)).encode()
            return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)), "", None
        stats = self.stats
        stats.requests += 1
        kind = _kind(method, path, query, headers)
        stats.kinds[kind] += 1
        self._seen[(method, path)] += 1
        n = self._seen[(method, path)]
        return None, kind, self.faults(method, path, n) if self.faults is not None else None

    # One client connection to an upstream: requests one after another (HTTP/1.1 keep-alive)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = self.stats
        upstream = self.upstreams[self._next % len(self.upstreams)] if self.upstreams else None
        self._next += 1
        stats.open += 1
        stats.connections += 1
        stats.max_open = max(stats.max_open, stats.open)
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, headers = _parse_head(head)
                method, target = line.split(" ")[:2]
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                control, kind, fault = self._admit(method, target, headers)
                if control is not None:
                    writer.write(control)
                    await writer.drain()
                    continue
                if self.delay:
                    await asyncio.sleep(self.delay)
                if fault is not None:
                    self.stats.faults[fault] += 1
                if fault == "stall":  # no answer until the client gives up
                    await asyncio.sleep(3600)
                if fault == "drop":
                    writer.transport.abort()
                    return
                if fault in ("slowdown", "error"):
                    writer.write(_fault_answer(fault))
                    await writer.drain()
                    continue
                assert upstream is not None
                if up is None:
                    up = await asyncio.open_connection(*upstream, limit=1 << 20)
                up[1].write(head + body)
                await up[1].drain()
                status_line, out_headers, out_body, keep = await _response(up[0], method)
                if not keep:
                    up[1].close()
                    up = None
                writer.write(
                    _respond(self.stats, kind, method, status_line, out_headers, out_body)
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            stats.open -= 1
            if up is not None:
                up[1].close()
            writer.close()


def _fault_answer(fault: str) -> bytes:
    status, text = ("503 Slow Down", _SLOWDOWN) if fault == "slowdown" else (
        "500 Internal Server Error", _INTERNAL)
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(text)}\r\n\r\n".encode() + text)


def _respond(
    stats: ProxyStats, kind: str, method: str, status_line: str,
    out_headers: list[tuple[str, str]], out_body: bytes,
) -> bytes:
    """A response's bytes (a Content-Length of its own), counted. A HEAD's has no body (an
    error's too: its body sent would be read as the next response on the connection)."""
    if method == "HEAD":
        out_body = b""
    stats.body_bytes += len(out_body)
    if kind.startswith("get") and kind != "get-list":
        stats.object_bytes += len(out_body)
    lines = [status_line]
    for k, v in out_headers:
        if k.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive"):
            lines.append(f"{k}: {v}")
    if method != "HEAD":
        lines.append(f"Content-Length: {len(out_body)}")
    else:
        lines += [f"{k}: {v}" for k, v in out_headers if k.lower() == "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + out_body


class _Served(asyncio.Protocol):
    """One client connection to the static fake (``serve``): its requests answered one
    after another, each ``delay`` after it arrived, by callbacks rather than a task (the
    fake shares the benchmark's cores with the client: its cost a request is kept small)."""

    def __init__(self, proxy: LatencyProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiting: deque[tuple[str, str, dict[str, str]]] = deque()
        self.busy = False  # a request is being answered (waiting out its delay)
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False  # the request asked for it: closed once answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.proxy._connections.add(self)
        stats = self.proxy.stats
        stats.open += 1
        stats.connections += 1
        stats.max_open = max(stats.max_open, stats.open)

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy._connections.discard(self)
        self.proxy.stats.open -= 1
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 1 << 20:  # no head this long: not a client of ours
                    self._close()
                return
            line, headers = _parse_head(self.buffer[: end + 4])
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]  # (a body: not used)
            method, target = [*line.split(" "), "", ""][:2]
            self.waiting.append((method, target, headers))
            self._next()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _next(self) -> None:
        if self.busy or not self.waiting or self.transport is None:
            return
        method, target, headers = self.waiting.popleft()
        proxy = self.proxy
        control, kind, fault = proxy._admit(method, target, headers)
        if control is not None:
            self.transport.write(control)
            self._next()
            return
        if headers.get("connection", "").lower() == "close":
            self.closing = True
        self.busy = True
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(proxy.delay, self._answer, method, target, headers, kind,
                                     fault)

    def _answer(
        self, method: str, target: str, headers: dict[str, str], kind: str, fault: str | None
    ) -> None:
        self.timer = None
        proxy = self.proxy
        if fault is not None:
            proxy.stats.faults[fault] += 1
        if fault == "stall" or self.transport is None:  # no answer until the client gives up
            return
        if fault == "drop":
            self.transport.abort()
            return
        if fault in ("slowdown", "error"):
            self._send(_fault_answer(fault))
            return
        assert proxy.serve is not None
        served = functools.partial(
            static_s3.answer, proxy.serve, method, target, headers, proxy._held
        )
        if kind == "get-list":
            # A listing may walk the whole store: on a thread, so that the answers to other
            # requests do not wait for it, as they would not at S3.
            future = asyncio.get_running_loop().run_in_executor(None, served)
            future.add_done_callback(
                lambda f: self._reply(kind, method, f.result) if not f.cancelled() else None
            )
            return
        self._reply(kind, method, served)

    def _reply(self, kind: str, method: str, answer: Callable[[], static_s3.Answer]) -> None:
        """Send ``answer()``; a request the fake fails on closes the connection (as the
        streams path's task ending did), never leaves the client waiting."""
        try:
            response = _respond(self.proxy.stats, kind, method, *answer())
        except Exception:
            self.abort()
            return
        self._send(response)

    def _send(self, response: bytes) -> None:
        if self.transport is None:
            return
        self.transport.write(response)
        self.busy = False
        if self.closing:
            self._close()
            return
        self._next()


def _kind(method: str, path: str, query: str, headers: dict[str, str]) -> str:
    if method == "GET":
        if "list-type" in query or path.count("/") <= 1:
            return "get-list"
        return "get-range" if "range" in headers else "get"
    return method.lower()


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


async def _response(
    reader: asyncio.StreamReader, method: str
) -> tuple[str, list[tuple[str, str]], bytes, bool]:
    """One upstream response: status line, headers, body (de-chunked), keep-alive."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0]
    pairs = [(k.strip(), v.strip()) for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)]
    headers = {k.lower(): v for k, v in pairs}
    code = int(status_line.split(" ")[1])
    keep = headers.get("connection", "").lower() != "close" and status_line.startswith("HTTP/1.1")
    if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
        return status_line, pairs, b"", keep
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status_line, pairs, b"".join(parts), keep
    if "content-length" in headers:
        return status_line, pairs, await reader.readexactly(int(headers["content-length"])), keep
    return status_line, pairs, await reader.read(), False


def main() -> None:
    """``python -m pyaudit.testing.proxy --upstream http://127.0.0.1:PORT --delay-ms D``:
    prints the proxy's URL, then serves until killed (a process of its own, so that
    its event loop never waits for the server's GIL)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", action="append", default=[], help="repeat: round robin")
    ap.add_argument("--serve", help="answer S3 requests from DIR/BUCKET/KEY instead")
    ap.add_argument(
        "--frozen", action="store_true",
        help="with --serve: DIR does not change while served (walked once, each object "
        "looked at once, as S3 answers from an index)",
    )
    ap.add_argument("--delay-ms", type=float, default=0.0)
    args = ap.parse_args()
    if bool(args.upstream) == bool(args.serve):
        ap.error("give --upstream URL (repeatable) or --serve DIR")
    proxy = LatencyProxy(args.upstream, args.delay_ms / 1000, serve=args.serve,
                         frozen=args.frozen)
    print(proxy.start(), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()

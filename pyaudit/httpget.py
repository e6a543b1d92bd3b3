"""GET requests over kept-alive HTTP/1.1 connections: all a remote sweep asks of an object
store by URL (presigned range GETs, listing pages), at a fraction of a general client's CPU.

A sweep of 1,001 checkpoints sends ~3,000 small GETs; aiohttp spent ~0.13 ms of the event
loop's CPU on each (request and response objects, tracing hooks, cookie jar, stream readers),
the largest share of a remote scan's CPU at low latency. This client writes a request as one
bytes object and parses the response from one buffer in an :class:`asyncio.Protocol`.

Scope, and nothing more: GET; ``http`` and ``https`` (TLS by :mod:`ssl`, with the context
given); no proxies (the caller sends a request that must go through one another way); no
redirects, cookies or content decoding (``Accept-Encoding: identity``). Bodies framed by
Content-Length, chunked, or by the connection's end; never more than ``limit`` bytes of one
are kept (the connection is closed rather than read to the end when the body is longer). A
response that breaks HTTP/1.1 framing is a :class:`ProtocolError`, an :class:`OSError`, as is
a connection lost before the response is whole: both may pass by asking again.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

MAX_HEAD = 64 * 1024  # bytes of a response's status line and headers
MAX_CHUNK_LINE = 1024  # bytes of a chunk's size line (with its extensions)
USER_AGENT = "pyaudit"


class ProtocolError(OSError):
    """A response that is not HTTP/1.1 as RFC 9112 frames it."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # names in lower case; a repeated one: its last value
    body: bytes  # at most the ``limit`` asked for
    complete: bool  # the whole body (False: it was longer than ``limit``, and cut there)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes received go to ``buffer``; a reader waits for more
    with :meth:`more`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False  # the peer closed it, or it failed
        self.busy = False  # a request is on it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for, on an idle connection: not reused
            self.close()
            return
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.lost = True
        self._wake()
        return False  # (the transport closes itself)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def more(self) -> None:
        """Wait for more bytes, or the connection's end (then :attr:`lost`)."""
        if self.lost:
            return
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    async def find(self, mark: bytes, bound: int, what: str) -> int:
        """Where ``mark`` starts in the buffer, waiting for it: a :class:`ProtocolError`
        when ``bound`` bytes come without it, ConnectionResetError when the connection
        ends first."""
        while (at := self.buffer.find(mark)) < 0:
            if len(self.buffer) > bound:
                raise ProtocolError(f"{what} over {bound} bytes")
            if self.lost:
                raise ConnectionResetError(f"the connection closed inside {what}")
            await self.more()
        if at > bound:
            raise ProtocolError(f"{what} over {bound} bytes")
        return at

    async def hold(self, n: int, what: str) -> None:
        """Wait until the buffer holds ``n`` bytes (ConnectionResetError if it never will)."""
        while len(self.buffer) < n:
            if self.lost:
                raise ConnectionResetError(
                    f"the connection closed inside {what} ({len(self.buffer)} of {n} bytes)"
                )
            await self.more()


def _split_url(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host, port, Host header value, request target) of an absolute URL."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url[:80]!r}")
    cut = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if 0 <= at < cut:
            cut = at
    authority, target = rest[:cut], rest[cut:].partition("#")[0]
    if "@" in authority:
        raise ValueError("credentials in a URL are not sent")
    if not target.startswith("/"):
        target = "/" + target
    host, port = authority, 443 if scheme == "https" else 80
    if authority.startswith("["):  # [IPv6]:port
        close = authority.find("]")
        host = authority[1:close]
        if authority[close + 1 : close + 2] == ":":
            port = int(authority[close + 2 :])
    elif ":" in authority:
        host, _, digits = authority.rpartition(":")
        if not digits.isdigit():
            raise ValueError(f"a port that is not a number: {authority!r}")
        port = int(digits)
    if not host or not 0 < port < 65536:
        raise ValueError(f"no host or port in {url[:80]!r}")
    return scheme, host, port, authority, target


class HttpGetter:
    """Kept-alive connections by origin, reused one request at a time each. Every coroutine
    runs on the loop that calls it; the caller bounds how many requests are in flight (one
    connection each)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, cafile: str | None = None
                 ) -> None:
        """``ssl_context`` for https, else one made on the first https request (loading
        the CAs costs ~40 ms of CPU): the system's CAs, or those of ``cafile``."""
        self._ssl = ssl_context
        self._cafile = cafile
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self.connections = 0  # opened, in all

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self._cafile)
        return self._ssl

    async def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._context() if scheme == "https" else None
        _, conn = await loop.create_connection(
            lambda: _Connection(loop), host, port, ssl=tls, server_hostname=host if tls else None
        )
        self.connections += 1
        return conn

    async def get(self, url: str, headers: dict[str, str] | None = None, limit: int = 1 << 20
                  ) -> Response:
        """GET ``url``; the body up to ``limit`` bytes. A connection kept alive that turns out
        closed before any byte of the answer is replaced once, unasked (a GET may be)."""
        scheme, host, port, authority, target = _split_url(url)
        lines = [f"GET {target} HTTP/1.1", f"Host: {authority}", f"User-Agent: {USER_AGENT}",
                 "Accept-Encoding: identity"]
        for name, value in (headers or {}).items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"a header with a line break: {name!r}")
            lines.append(f"{name}: {value}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        origin = (scheme, host, port)
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.lost:
                continue
            try:
                return await self._exchange(origin, conn, request, limit)
            except _Stale:
                continue  # closed by the server while idle: another one
        conn = await self._connect(scheme, host, port)
        try:
            return await self._exchange(origin, conn, request, limit)
        except _Stale as e:
            raise ConnectionResetError("the connection closed before an answer") from e

    async def _exchange(
        self, origin: tuple[str, str, int], conn: _Connection, request: bytes, limit: int
    ) -> Response:
        conn.busy = True
        keep = False
        try:
            assert conn.transport is not None
            conn.transport.write(request)
            response, keep = await _read_response(conn, limit)
            return response
        finally:
            conn.busy = False
            if keep and not conn.lost and not conn.buffer:
                self._idle.setdefault(origin, []).append(conn)
            else:
                conn.close()

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class _Stale(Exception):
    """A connection that ended before one byte of the answer."""


async def _read_response(conn: _Connection, limit: int) -> tuple[Response, bool]:
    """The response on ``conn``, and whether the connection can carry another request."""
    buf = conn.buffer
    while True:  # the head (informational 1xx answers skipped)
        while not buf and not conn.lost:
            await conn.more()
        if not buf:
            raise _Stale()
        end = await conn.find(b"\r\n\r\n", MAX_HEAD, "a response head")
        head = buf[:end].decode("latin-1")
        del buf[: end + 4]
        status_line, _, rest = head.partition("\r\n")
        version, _, status_reason = status_line.partition(" ")
        code, _, reason = status_reason.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
        status = int(code)
        if 100 <= status < 200 and status != 101:
            continue
        break
    headers: dict[str, str] = {}
    for line in rest.split("\r\n") if rest else ():
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"a malformed header line: {line[:80]!r}")
        headers[name.lower()] = value.strip()
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in (101, 204, 304):
        return Response(status, reason, headers, b"", True), keep and status != 101
    encoding = headers.get("transfer-encoding", "").lower()
    if encoding:
        if encoding.rsplit(",", 1)[-1].strip() != "chunked":
            raise ProtocolError(f"a transfer coding this client does not read: {encoding!r}")
        body, complete = await _chunked(conn, limit)
        return Response(status, reason, headers, body, complete), keep and complete
    length_text = headers.get("content-length")
    if length_text is not None:
        if not length_text.isdigit() or len(length_text) > 19:
            raise ProtocolError(f"a Content-Length that is not a size: {length_text[:40]!r}")
        length = int(length_text)
        want = min(length, limit)
        await conn.hold(want, f"a body of {length} bytes")
        body = bytes(buf[:want])
        del buf[:want]
        complete = want == length
        return Response(status, reason, headers, body, complete), keep and complete
    while len(buf) < limit and not conn.lost:  # the body ends with the connection
        await conn.more()
    body = bytes(buf[:limit])
    complete = len(buf) <= limit and conn.lost
    buf.clear()
    return Response(status, reason, headers, body, complete), False


async def _chunked(conn: _Connection, limit: int) -> tuple[bytes, bool]:
    """A chunked body, up to ``limit`` bytes: (body, whether it was read to its end)."""
    buf = conn.buffer
    parts: list[bytes] = []
    held = 0
    while True:
        eol = await conn.find(b"\r\n", MAX_CHUNK_LINE, "a chunk size line")
        size_text = bytes(buf[:eol]).split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 16 or any(c not in b"0123456789abcdefABCDEF"
                                                      for c in size_text):
            raise ProtocolError(f"a chunk size that is not hex: {size_text[:20]!r}")
        size = int(size_text, 16)
        del buf[: eol + 2]
        if size == 0:  # the trailer section, up to an empty line
            while True:
                eol = await conn.find(b"\r\n", MAX_HEAD, "a trailer line")
                line_empty = eol == 0
                del buf[: eol + 2]
                if line_empty:
                    return b"".join(parts), True
        take = min(size, limit - held)
        await conn.hold(take, "a chunk")
        parts.append(bytes(buf[:take]))
        held += take
        if take < size:  # longer than asked for: not read further
            return b"".join(parts), False
        await conn.hold(size + 2, "a chunk")
        if buf[size : size + 2] != b"\r\n":
            raise ProtocolError("a chunk not followed by CRLF")
        del buf[: size + 2]

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

# (the wire format, shared with the blocking first request of pyaudit.firstpage)
from pyaudit.httpwire import (
    MAX_HEAD,
    Buffered,
    ProtocolError,
    Response,
    Stale,
    read_response,
    request_bytes,
)

__all__ = ["MAX_HEAD", "HttpGetter", "ProtocolError", "Response"]


class _Connection(asyncio.Protocol, Buffered):
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
        origin, request = request_bytes(url, headers)
        scheme, host, port = origin
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.lost:
                continue
            try:
                return await self._exchange(origin, conn, request, limit)
            except Stale:
                continue  # closed by the server while idle: another one
        conn = await self._connect(scheme, host, port)
        try:
            return await self._exchange(origin, conn, request, limit)
        except Stale as e:
            raise ConnectionResetError("the connection closed before an answer") from e

    async def _exchange(
        self, origin: tuple[str, str, int], conn: _Connection, request: bytes, limit: int
    ) -> Response:
        conn.busy = True
        keep = False
        try:
            assert conn.transport is not None
            conn.transport.write(request)
            response, keep = await read_response(conn, limit)
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

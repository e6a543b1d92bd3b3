"""HTTP/1.1 on the wire, for :mod:`pyaudit.httpget`: a GET's request bytes, and the response
read from a connection's buffer (RFC 9112 framing: Content-Length, chunked, or the
connection's end), whatever moves the bytes.

No asyncio here: the reader is a coroutine that awaits only its connection's :meth:`more`,
so that :mod:`pyaudit.httpget` runs it on an event loop and :func:`get_blocking` drives it
to its end over a blocking socket (a remote scan's first listing page, asked before asyncio
and the rest of pyaudit are imported: see :mod:`pyaudit.firstpage`).
"""

from __future__ import annotations

import socket
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, cast

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


class Stale(Exception):
    """A connection that ended before one byte of the answer."""


class Buffered:
    """What :func:`read_response` reads from: bytes received in ``buffer``, ``lost`` once
    the connection ended, and :meth:`more` to wait for either."""

    buffer: bytearray
    lost: bool

    async def more(self) -> None:
        raise NotImplementedError

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


def names_a_proxy(environ: Mapping[str, str]) -> bool:
    """Whether the environment holds a ``*_proxy`` variable (any case): the only variables
    urllib reads proxies from. Where one does, a request may have to go through a proxy,
    which this module's GETs do not."""
    return any(name[-6:].lower() == "_proxy" for name in environ)


def split_url(url: str) -> tuple[str, str, int, str, str]:
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


def request_bytes(url: str, headers: dict[str, str] | None = None, close: bool = False
                  ) -> tuple[tuple[str, str, int], bytes]:
    """(scheme, host, port) of ``url``, and the bytes of a GET of it with ``headers``."""
    scheme, host, port, authority, target = split_url(url)
    lines = [f"GET {target} HTTP/1.1", f"Host: {authority}", f"User-Agent: {USER_AGENT}",
             "Accept-Encoding: identity"]
    for name, value in (headers or {}).items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"a header with a line break: {name!r}")
        lines.append(f"{name}: {value}")
    if close:
        lines.append("Connection: close")
    return (scheme, host, port), ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_response(conn: Buffered, limit: int) -> tuple[Response, bool]:
    """The response on ``conn``, and whether the connection can carry another request."""
    buf = conn.buffer
    while True:  # the head (informational 1xx answers skipped)
        while not buf and not conn.lost:
            await conn.more()
        if not buf:
            raise Stale()
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


async def _chunked(conn: Buffered, limit: int) -> tuple[bytes, bool]:
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


class _Blocking(Buffered):
    """A blocking socket as :class:`Buffered`: :meth:`more` receives (or times out)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.lost = False

    async def more(self) -> None:
        if self.lost:
            return
        data = self.sock.recv(65536)  # (socket.timeout, an OSError, past the timeout)
        if data:
            self.buffer += data
        else:
            self.lost = True


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """A coroutine that never suspends (it awaits only :class:`_Blocking`), run to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a blocking read suspended")


class Kept:
    """The connection :func:`get_blocking` keeps for a thread's next GET to the same origin
    (a listing's pages, one after another: one connection, and one TLS handshake, for all).
    :meth:`close` once done."""

    def __init__(self) -> None:
        self.origin: tuple[str, str, int] | None = None
        self.conn: _Blocking | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.sock.close()
        self.origin = self.conn = None


def get_blocking(url: str, limit: int, timeout: float, cafile: str | None = None,
                 kept: Kept | None = None) -> Response:
    """GET ``url`` over a new connection of this thread (closed after it), the body up to
    ``limit`` bytes; the same framing and errors as :class:`pyaudit.httpget.HttpGetter`,
    and ``timeout`` s at most for the connection and for each read. ``kept``: over the
    connection it holds where it is to the same origin (one the server closed meanwhile:
    over a new one), and the connection kept there for the next GET where the answer
    leaves it usable."""
    origin, request = request_bytes(url, close=kept is None)
    if kept is not None and kept.conn is not None:
        reused, same = kept.conn, kept.origin == origin
        kept.origin = kept.conn = None  # (given back by _exchange only if still usable)
        if same:
            try:
                return _exchange(reused, request, limit, origin, kept)
            except (Stale, ConnectionError):  # closed by the server while idle
                pass
        else:
            reused.sock.close()
    scheme, host, port = origin
    # (an ASCII host as bytes: a str one is IDNA-encoded, whose codec's import, ~5 ms, would
    # come before this request)
    name: Any = host.encode("ascii") if host.isascii() else host  # (getaddrinfo takes both)
    sock = socket.create_connection((name, port), timeout=timeout)
    if scheme == "https":
        import ssl

        try:
            sock = ssl.create_default_context(cafile=cafile).wrap_socket(
                sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
    try:
        return _exchange(_Blocking(sock), request, limit, origin, kept)
    except Stale:
        raise ConnectionResetError("the connection closed before an answer") from None


def _exchange(conn: _Blocking, request: bytes, limit: int, origin: tuple[str, str, int],
              kept: Kept | None) -> Response:
    """``request`` sent over ``conn`` and its answer read; the connection then kept in
    ``kept`` where the answer leaves it usable, else closed (after an error too)."""
    keep = False
    try:
        conn.sock.sendall(request)
        response, keep = _run(read_response(conn, limit))
        keep = keep and kept is not None and not conn.buffer
        if keep:
            assert kept is not None
            kept.origin, kept.conn = origin, conn
        return cast(Response, response)
    finally:
        if not keep:
            conn.sock.close()

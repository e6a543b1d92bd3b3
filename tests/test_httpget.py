"""pyaudit.httpget: the GET client of remote sweeps, against a loopback server that answers
with scripted bytes (framings, kept-alive and dropped connections, malformed answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyaudit.httpget import MAX_HEAD, HttpGetter, ProtocolError, Response
from pyaudit.httpwire import split_url


@dataclass
class Script:
    """What the server answers: for the k-th request of the whole run, ``answers[k]``
    (bytes, written as they are; None: the connection is closed without an answer).
    ``close_after``: connections closed by the server after that many answers each."""

    answers: list[bytes | None]
    close_after: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


async def _serve(script: Script) -> asyncio.Server:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script.connections += 1
        answered = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                script.requests.append(head)
                k = len(script.requests) - 1
                answer = script.answers[k] if k < len(script.answers) else None
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                answered += 1
                if script.close_after and answered >= script.close_after:
                    return
        finally:
            writer.close()

    return await asyncio.start_server(client, "127.0.0.1", 0)


def _run(script: Script, body: Callable[[HttpGetter, str], Awaitable[object]]) -> object:
    async def main() -> object:
        server = await _serve(script)
        port = server.sockets[0].getsockname()[1]
        getter = HttpGetter()
        try:
            return await asyncio.wait_for(body(getter, f"http://127.0.0.1:{port}"), 20)
        finally:
            await getter.close()
            server.close()

    return asyncio.run(main())


def _ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def test_request_line_headers_and_kept_alive_connection() -> None:
    script = Script([_ok(b"first"), _ok(b"second")])

    async def body(g: HttpGetter, base: str) -> tuple[Response, Response]:
        a = await g.get(f"{base}/bucket/a%20b?X-Amz-Signature=1#frag", {"Range": "bytes=0-7"})
        b = await g.get(f"{base}/bucket/c")
        return a, b

    a, b = _run(script, body)  # type: ignore[misc]
    assert (a.status, a.body, a.complete, b.body) == (200, b"first", True, b"second")
    assert a.headers["content-length"] == "5"
    assert script.connections == 1
    first = script.requests[0].decode()
    assert first.startswith("GET /bucket/a%20b?X-Amz-Signature=1 HTTP/1.1\r\n")
    assert "\r\nHost: 127.0.0.1:" in first and "\r\nRange: bytes=0-7\r\n" in first
    assert "Accept-Encoding: identity" in first


def test_chunked_body_with_extensions_and_trailers() -> None:
    answer = (b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n")
    script = Script([answer, _ok(b"next")])

    async def body(g: HttpGetter, base: str) -> tuple[Response, Response]:
        return await g.get(f"{base}/k"), await g.get(f"{base}/k")

    a, b = _run(script, body)  # type: ignore[misc]
    assert (a.status, a.body, a.complete, b.body) == (206, b"wikipedia", True, b"next")
    assert script.connections == 1  # the chunked body was read to its end: kept


def test_body_to_the_connections_end() -> None:
    script = Script([b"HTTP/1.0 200 OK\r\n\r\nall of it", _ok(b"again")], close_after=1)

    async def body(g: HttpGetter, base: str) -> tuple[Response, Response]:
        return await g.get(f"{base}/k"), await g.get(f"{base}/k")

    a, b = _run(script, body)  # type: ignore[misc]
    assert (a.body, a.complete, b.body) == (b"all of it", True, b"again")
    assert script.connections == 2


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_longer_than_the_limit_is_cut_and_its_connection_closed(chunked: bool) -> None:
    big = b"x" * 300_000
    if chunked:
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
            len(big), big)
    else:
        answer = _ok(big)
    script = Script([answer, _ok(b"fresh")])

    async def body(g: HttpGetter, base: str) -> tuple[Response, Response]:
        return await g.get(f"{base}/k", limit=100), await g.get(f"{base}/k")

    a, b = _run(script, body)  # type: ignore[misc]
    assert (a.body, a.complete, b.body) == (b"x" * 100, False, b"fresh")
    assert script.connections == 2  # not drained: closed, and another one opened


def test_a_kept_connection_the_server_closed_is_replaced_unasked() -> None:
    """The server closes after each answer without saying so: the next GET finds the
    kept connection dead before any byte, and goes again on a new one."""
    script = Script([_ok(b"one"), _ok(b"two"), _ok(b"three")], close_after=1)

    async def body(g: HttpGetter, base: str) -> list[bytes]:
        out = []
        for _ in range(3):
            out.append((await g.get(f"{base}/k")).body)
            await asyncio.sleep(0.05)  # (the close arrives while the connection is idle)
        return out

    assert _run(script, body) == [b"one", b"two", b"three"]
    assert script.connections == 3


def test_a_kept_connection_that_ends_on_the_next_request_is_replaced_unasked() -> None:
    """The server reads the second request on the kept connection, then closes it without
    a byte: the GET goes again on a new connection (a GET may), and is answered."""
    script = Script([_ok(b"one"), None, _ok(b"two")])

    async def body(g: HttpGetter, base: str) -> list[bytes]:
        return [(await g.get(f"{base}/k")).body, (await g.get(f"{base}/k")).body]

    assert _run(script, body) == [b"one", b"two"]
    assert (script.connections, len(script.requests)) == (2, 3)


def test_a_connection_lost_mid_body_is_an_oserror() -> None:
    script = Script([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b"], close_after=1)

    async def body(g: HttpGetter, base: str) -> object:
        return await g.get(f"{base}/k")

    with pytest.raises(ConnectionResetError, match="10 of 100 bytes"):
        _run(script, body)


def test_no_answer_at_all_on_a_new_connection() -> None:
    script = Script([None])

    async def body(g: HttpGetter, base: str) -> object:
        return await g.get(f"{base}/k")

    with pytest.raises(ConnectionResetError):
        _run(script, body)


@pytest.mark.parametrize(
    "answer",
    [
        b"SPDY/3 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
    ],
)
def test_malformed_answers_are_protocol_errors(answer: bytes) -> None:
    script = Script([answer])

    async def body(g: HttpGetter, base: str) -> object:
        return await g.get(f"{base}/k")

    with pytest.raises(ProtocolError):
        _run(script, body)


def test_an_endless_head_is_refused_at_its_bound() -> None:
    answer = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * (4 * MAX_HEAD)
    script = Script([answer])

    async def body(g: HttpGetter, base: str) -> object:
        return await g.get(f"{base}/k")

    with pytest.raises(ProtocolError, match="head over"):
        _run(script, body)


def test_informational_answers_are_skipped() -> None:
    script = Script([b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"body")])

    async def body(g: HttpGetter, base: str) -> Response:
        return await g.get(f"{base}/k")

    got = _run(script, body)
    assert isinstance(got, Response) and got.body == b"body"


def test_an_error_status_is_an_answer_with_its_body() -> None:
    text = b"<Error><Code>NoSuchKey</Code></Error>"
    script = Script([b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)])

    async def body(g: HttpGetter, base: str) -> Response:
        return await g.get(f"{base}/k")

    got = _run(script, body)
    assert isinstance(got, Response) and (got.status, got.reason, got.body) == (
        404, "Not Found", text)


def test_headers_with_line_breaks_are_refused() -> None:
    async def body(g: HttpGetter, base: str) -> object:
        return await g.get(f"{base}/k", {"Range": "bytes=0-1\r\nX-Evil: 1"})

    with pytest.raises(ValueError, match="line break"):
        _run(Script([]), body)


@pytest.mark.parametrize(
    ("url", "split"),
    [
        ("http://h/k", ("http", "h", 80, "h", "/k")),
        ("https://b.s3.amazonaws.com/a/b?x=1", ("https", "b.s3.amazonaws.com", 443,
                                               "b.s3.amazonaws.com", "/a/b?x=1")),
        ("HTTP://h:8080?q", ("http", "h", 8080, "h:8080", "/?q")),
        ("http://[::1]:9000/k", ("http", "::1", 9000, "[::1]:9000", "/k")),
        ("http://[::1]/k", ("http", "::1", 80, "[::1]", "/k")),
    ],
)
def test_split_url(url: str, split: tuple[str, str, int, str, str]) -> None:
    assert split_url(url) == split


@pytest.mark.parametrize(
    "url", ["ftp://h/k", "h/k", "http://user:pw@h/k", "http://h:port/k", "http://:80/k",
            "http://h:0/k", "http:///k"]
)
def test_split_url_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        split_url(url)


@given(
    answer=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda head, rest: head + rest,
            st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 206 X\r\nContent-Length: 7\r\n",
                             b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                             b"HTTP/1.0 200 OK\r\n\r\n"]),
            st.binary(max_size=300),
        ),
    ),
    limit=st.integers(0, 64),
)
def test_any_answer_is_a_bounded_response_or_an_oserror(answer: bytes, limit: int) -> None:
    """Whatever bytes come back, then the connection's end: a Response with at most
    ``limit`` body bytes, or an OSError; never a hang or another exception."""
    script = Script([answer], close_after=1)

    async def body(g: HttpGetter, base: str) -> object:
        try:
            return await g.get(f"{base}/k", limit=limit)
        except OSError as e:
            return e

    got = _run(script, body)
    assert isinstance(got, (Response, OSError))
    if isinstance(got, Response):
        assert len(got.body) <= limit


# --- TLS ------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 (its own CA), and its key, as PEM files."""
    pytest.importorskip("cryptography")
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyaudit test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


def _tls_get(cert: Path, key: Path, getter: HttpGetter, host: str) -> object:
    """GET https://HOST:PORT/k from a TLS server answering "secure", by ``getter``: the
    Response, or the OSError it raised."""
    import ssl

    async def main() -> object:
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        server = await asyncio.start_server(_answer_secure, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            return await asyncio.wait_for(getter.get(f"https://{host}:{port}/k"), 20)
        except OSError as e:
            return e
        finally:
            await getter.close()
            server.close()

    return asyncio.run(main())


async def _answer_secure(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_ok(b"secure"))
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass  # (a client that refused the certificate)
    finally:
        writer.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_https_with_a_trusted_certificate(tmp_path: Path, host: str) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    got = _tls_get(cert, key, HttpGetter(ssl.create_default_context(cafile=str(cert))), host)
    assert isinstance(got, Response) and got.body == b"secure"


def test_https_refuses_a_certificate_it_does_not_trust(tmp_path: Path) -> None:
    """The default context (the system's CAs) verifies the server: a self-signed one is an
    SSL error, an OSError (asked again, then an unreadable finding), never read."""
    import ssl

    cert, key = _self_signed(tmp_path)
    got = _tls_get(cert, key, HttpGetter(), "127.0.0.1")
    assert isinstance(got, ssl.SSLCertVerificationError)


def test_aws_ca_bundle_is_what_s3_gets_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_CA_BUNDLE (botocore's setting) is the CA file the S3 GETs verify against."""
    from pyaudit.remote import _S3Ranges

    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    got = _tls_get(cert, key, _S3Ranges(fs=None, in_flight=4)._getter(), "localhost")
    assert isinstance(got, Response) and got.body == b"secure"
    monkeypatch.delenv("AWS_CA_BUNDLE")
    got = _tls_get(cert, key, _S3Ranges(fs=None, in_flight=4)._getter(), "localhost")
    assert isinstance(got, OSError)


_ANSWERS = [
    _ok(b"<ListBucketResult/>"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n"),
    b"HTTP/1.0 200 OK\r\n\r\nto the connection's end",
    b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"after a 1xx"),
    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nAccessDen",
    _ok(b"x" * 100),  # longer than the limit below: cut, not complete
    b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",  # the connection ends inside it
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # not hex
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    None,  # closed before an answer
]


@pytest.mark.parametrize("answer", _ANSWERS)
def test_a_blocking_get_frames_a_response_as_the_getter_does(answer: bytes | None) -> None:
    """httpwire.get_blocking (a remote scan's first listing page, asked before asyncio is
    imported) reads an answer with the getter's own reader: the same response, or the same
    error, for every framing; its request asks for the connection to be closed."""
    from pyaudit.httpwire import get_blocking

    def outcome(body: Callable[[HttpGetter, str], Awaitable[object]]) -> tuple[object, bytes]:
        script = Script([answer], close_after=1)  # (the server closes after its answer)
        try:
            got: object = _run(script, body)
        except OSError as e:
            got = type(e)
        return got, script.requests[0] if script.requests else b""

    blocking, asked = outcome(lambda g, base: asyncio.to_thread(get_blocking, f"{base}/k", 64, 10))
    looped, _ = outcome(lambda g, base: g.get(f"{base}/k", None, 64))
    assert blocking == looped
    assert asked.startswith(b"GET /k HTTP/1.1\r\n") and b"\r\nConnection: close\r\n" in asked
    if answer is None:
        assert blocking is ConnectionResetError


@pytest.mark.parametrize("close_after", [0, 1, 2])
def test_blocking_gets_over_a_kept_connection(close_after: int) -> None:
    """httpwire.get_blocking with ``kept`` (the pages of a listing asked early, one after
    another): the GETs go over one connection while the server keeps it open, asking it to
    stay open; one the server closed after an answer is made again, and no GET is lost or
    answered twice; a GET to another origin goes over a connection of its own."""
    from pyaudit.httpwire import Kept, get_blocking

    bodies = [b"first", b"second", b"third", b"fourth"]
    script = Script([_ok(b) for b in bodies], close_after=close_after)

    def gets(base: str) -> list[bytes]:
        kept = Kept()
        try:
            return [get_blocking(f"{base}/k{i}", 64, 10, None, kept).body
                    for i in range(len(bodies))]
        finally:
            kept.close()
            assert kept.conn is None

    got = _run(script, lambda g, base: asyncio.to_thread(gets, base))
    assert got == bodies
    assert [r.split(b"\r\n", 1)[0] for r in script.requests] == [
        f"GET /k{i} HTTP/1.1".encode() for i in range(len(bodies))]
    assert all(b"Connection: close" not in r for r in script.requests)
    assert script.connections == (1 if close_after == 0 else -(-len(bodies) // close_after))

    def two_origins(base: str) -> tuple[bytes, bytes]:
        kept = Kept()
        try:
            a = get_blocking(f"{base}/a", 64, 10, None, kept).body
            port = int(base.rsplit(":", 1)[1])
            with pytest.raises(OSError):  # (nothing listens there: a connection of its own)
                get_blocking(f"http://127.0.0.1:{_free_port(port)}/b", 64, 10, None, kept)
            assert kept.conn is None  # (the kept one closed: not to that origin)
            return a, get_blocking(f"{base}/c", 64, 10, None, kept).body
        finally:
            kept.close()

    other = Script([_ok(b"a"), _ok(b"c")])
    assert _run(other, lambda g, base: asyncio.to_thread(two_origins, base)) == (b"a", b"c")
    assert other.connections == 2


def _free_port(taken: int) -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    assert port != taken
    return port

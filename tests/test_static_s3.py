"""The benchmarks' static S3 fake (pyaudit.testing.static_s3), called directly: its frozen
mode (a store that does not change while served, as bench_remote.py serves it) answers
every request as the walking mode does, and walks the store once."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyaudit.testing import static_s3


def _store(root: Path) -> None:
    (root / "b" / "s" / "ck").mkdir(parents=True)
    (root / "b" / "s" / "ck" / "config.json").write_bytes(b'{"model_type": "llama"}')
    (root / "b" / "s" / "ck" / "w x+y.safetensors").write_bytes(bytes(range(256)) * 4)
    (root / "b" / "s" / "top.json").write_bytes(b"{}")


REQUESTS = [
    ("GET", "/b?list-type=2&prefix=s/", {}),
    ("GET", "/b?list-type=2&prefix=s/&encoding-type=url", {}),
    ("GET", "/b?list-type=2&prefix=s/&max-keys=1", {}),
    ("GET", "/b?list-type=2&prefix=s/&max-keys=1&continuation-token=s/ck/config.json", {}),
    ("GET", "/b/s/ck/config.json", {}),
    ("GET", "/b/s/ck/w%20x%2By.safetensors", {"range": "bytes=8-99"}),
    ("GET", "/b/s/ck/w%20x%2By.safetensors", {"range": "bytes=-10"}),
    ("GET", "/b/s/ck/w%20x%2By.safetensors", {"range": "bytes=5000-6000"}),
    ("GET", "/b/s/ck/w%20x%2By.safetensors", {"range": "bytes=x-y"}),
    ("HEAD", "/b/s/ck/config.json", {}),
    ("HEAD", "/b", {}),
    ("GET", "/b/s/ck/missing.json", {}),
    ("GET", "/b/s/../s/top.json", {}),
    ("GET", "/nobucket/k", {}),
    ("PUT", "/b/s/top.json", {}),
]


@pytest.mark.parametrize(("method", "target", "headers"), REQUESTS)
def test_frozen_answers_as_walking(
    tmp_path: Path, method: str, target: str, headers: dict[str, str]
) -> None:
    _store(tmp_path)
    walking = static_s3.answer(str(tmp_path), method, target, headers, static_s3.Held())
    held = static_s3.Held(frozen=True)
    first = static_s3.answer(str(tmp_path), method, target, headers, held)
    again = static_s3.answer(str(tmp_path), method, target, headers, held)  # from what it held
    assert first == walking
    assert again == walking
    assert walking[0].split(" ")[1] in ("200", "206", "400", "404", "416", "501")


def test_frozen_walks_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file added after the first listing: listed again by the walking fake, not by the
    frozen one (it answers from its one walk, as bench_remote.py's unchanging store allows);
    and the frozen fake walked the bucket once for two first pages."""
    _store(tmp_path)
    walks = []
    real = static_s3._objects
    monkeypatch.setattr(static_s3, "_objects", lambda bucket: walks.append(bucket) or real(bucket))
    walking, frozen = static_s3.Held(), static_s3.Held(frozen=True)
    listing = ("GET", "/b?list-type=2&prefix=s/", {})
    before = {id(h): static_s3.answer(str(tmp_path), *listing, h)[2] for h in (walking, frozen)}
    (tmp_path / "b" / "s" / "new.json").write_bytes(b"{}")
    after_walking = static_s3.answer(str(tmp_path), *listing, walking)[2]
    after_frozen = static_s3.answer(str(tmp_path), *listing, frozen)[2]
    assert b"s/new.json" in after_walking and b"s/new.json" not in before[id(walking)]
    assert after_frozen == before[id(frozen)]
    assert len(walks) == 3  # walking: two walks; frozen: one


@pytest.mark.parametrize(
    "target", ["/b?list-type=2&prefix=s/&max-keys=many", "/b/s/ck/config.json"]
)
def test_a_request_the_fake_fails_on_closes_its_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """The proxy serving the fake: a request it cannot answer (a max-keys that is not a
    number; a file gone from under a frozen store) closes the connection, as the streams
    proxy's task ending did, instead of leaving the client waiting for an answer."""
    import socket

    from pyaudit.testing.proxy import LatencyProxy

    _store(tmp_path)
    with LatencyProxy(serve=str(tmp_path), frozen=True) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        if not target.startswith("/b?"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as ok:
                ok.sendall(f"HEAD {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert ok.recv(100).startswith(b"HTTP/1.1 200")  # looked at, then held
            (tmp_path / "b" / "s" / "ck" / "config.json").unlink()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            try:
                got = conn.recv(100)
            except ConnectionResetError:
                got = b""
    assert got == b""


def test_a_head_answered_with_an_error_has_no_body(tmp_path: Path) -> None:
    """HEAD of a bucket that is not there (s3fs asks it before a listing): 404 and no body,
    so that the next answer on the connection is read as one (a body sent after a HEAD's
    answer was read by the client as the next status line)."""
    import socket

    from pyaudit.testing.proxy import LatencyProxy

    _store(tmp_path)
    with LatencyProxy(serve=str(tmp_path), frozen=True) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"HEAD /nobucket HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /b/s/top.json HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while not got.endswith(b"{}"):
                part = conn.recv(4096)
                if not part:
                    break
                got += part
    first, _, rest = got.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 404")
    assert rest.startswith(b"HTTP/1.1 200")
    assert rest.endswith(b"\r\n\r\n{}")

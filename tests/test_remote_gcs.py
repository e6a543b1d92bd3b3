"""`pyaudit scan gs://...` through gcsfs against gcp-storage-emulator on 127.0.0.1.

gcp-storage-emulator is a pure-Python fake of GCS's JSON API (PyPI). It is served here by
its own request handler and in-memory storage, with a counting subclass of the handler (per
object: the media GETs, their Range headers and the body bytes sent), on a threading HTTP
server (the emulator's own answers one request at a time; the scan sends up to 128 at once).
The scan runs in a child process configured only through gcsfs' and fsspec's own environment:

- ``STORAGE_EMULATOR_HOST``: gcsfs' endpoint for emulators;
- ``FSSPEC_GCS_TOKEN=anon``: fsspec's configuration of the gcs protocol (no credentials are
  looked for: neither a credentials file nor a metadata server);
- ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``: gcsfs' default filesystem asks the Storage
  Control gRPC API for each bucket's layout (zonal, hierarchical) before reading; the
  emulator serves no gRPC, and each ask waits 60 s before gcsfs falls back to the JSON API
  (and asks again on the next call). Off, gcsfs goes to the JSON API straight away.

What the emulator does not do as GCS does: it lists a bucket in one page whatever
``maxResults`` says (GCS: at most 1,000 objects a page). The counting handler pages its
answer as GCS would (``maxResults``, ``pageToken``, ``nextPageToken``), so that gcsfs'
paging is what the listing goes through.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
from remote_store import config, local_json, remote_json, span, write_store

from pyaudit.testing.stores import manifest_tensors, write_checkpoint

BUCKET = "pyaudit-gcs-test"
PAGE = 7  # objects a listing page (GCS: 1,000; the emulator: all of them)


@dataclass
class Served:
    """What the emulator was asked: every request, and per object its media GETs (Range
    headers) and the body bytes sent."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    gets: dict[str, list[str | None]] = field(default_factory=lambda: defaultdict(list))
    bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lists: int = 0
    tokens: set[str] = field(default_factory=set)  # the Authorization headers received
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.tokens.clear()
            self.gets.clear()
            self.bytes.clear()
            self.lists = 0


@dataclass
class Emulator:
    url: str
    served: Served

    def env(self, token: str | None = None) -> dict[str, str]:
        """The child's environment: gcsfs' and fsspec's own variables, nothing else of GCP
        (``token``: a raw access token as gcsfs takes one, its expiry not asked of Google)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GOOGLE_", "GCSFS_", "FSSPEC_", "CLOUDSDK_"))
        }
        env.update(
            STORAGE_EMULATOR_HOST=self.url,
            FSSPEC_GCS_TOKEN="anon",
            GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false",
            NO_GCE_CHECK="true",
        )
        if token is not None:
            env.update(FSSPEC_GCS_TOKEN=token, FETCH_RAW_TOKEN_EXPIRY="false")
        return env

    def upload(self, local: Path, prefix: str) -> None:
        """Every file below ``local`` as ``prefix/<relative path>``, by the JSON API's media
        upload (as a client uploads)."""
        for path in sorted(local.rglob("*")):
            if path.is_file():
                name = quote(f"{prefix}/{path.relative_to(local).as_posix()}", safe="")
                request = urllib.request.Request(
                    f"{self.url}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={name}",
                    data=path.read_bytes(),
                    method="POST",
                    headers={"Content-Type": "application/octet-stream"},
                )
                with urllib.request.urlopen(request, timeout=60) as response:
                    assert response.status == 200


def _handler(served: Served) -> Any:
    from gcp_storage_emulator.server import RequestHandler

    class Counting(RequestHandler):  # type: ignore[misc]
        """The emulator's handler: counts what it is asked and sends, and pages listings."""

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            # (objects read by /download/storage/v1/b/..., listed by /storage/v1/b/...)
            route = parts.path.removeprefix("/download").removeprefix("/storage/v1")
            self._media_key: str | None = None
            self._page: dict[str, list[str]] | None = None
            with served.lock:
                served.requests.append(("GET", self.path))
                if self.headers.get("Authorization") is not None:
                    served.tokens.add(self.headers["Authorization"])
                if route.startswith("/b/") and "/o/" in route and query.get("alt") == ["media"]:
                    bucket, _, key = route[len("/b/") :].partition("/o/")
                    self._media_key = f"{bucket}/{unquote(key)}"
                    served.gets[self._media_key].append(self.headers.get("Range"))
                elif route.startswith("/b/") and route.endswith("/o"):
                    served.lists += 1
                    self._page = query
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def send_header(self, keyword: str, value: str) -> None:
            if keyword == "Content-Length" and getattr(self, "_media_key", None):
                with served.lock:
                    served.bytes[self._media_key] += int(value)  # type: ignore[index]
            super().send_header(keyword, value)

    return Counting


def _paged() -> Any:
    """Listings in pages of ``PAGE`` objects, as GCS pages them (the emulator sends one)."""
    from gcp_storage_emulator import server as emulator_server

    class Response(emulator_server.Response):  # type: ignore[misc]
        def json(self, obj: Any) -> None:
            query = getattr(self._handler, "_page", None)
            if (
                query is not None
                and isinstance(obj, dict)
                and obj.get("kind") == "storage#objects"
            ):
                start = int(query.get("pageToken", ["0"])[0])
                wanted = int(query.get("maxResults", [str(PAGE)])[0])
                size = min(PAGE, wanted)
                items = obj.get("items") or []
                obj = {**obj, "items": items[start : start + size]}
                if start + size < len(items):
                    obj["nextPageToken"] = str(start + size)
            super().json(obj)

    return Response


@pytest.fixture(scope="module")
def gcs() -> Iterator[Emulator]:
    """gcp-storage-emulator's handler and in-memory storage on 127.0.0.1 (a free port)."""
    pytest.importorskip("gcsfs", reason="the gs:// tests need gcsfs")
    pytest.importorskip("gcp_storage_emulator", reason="the gs:// tests need gcp-storage-emulator")
    from gcp_storage_emulator import server as emulator_server
    from gcp_storage_emulator.handlers.buckets import create_bucket
    from gcp_storage_emulator.storage import Storage

    served = Served()
    storage = Storage(use_memory_fs=True)
    create_bucket(BUCKET, storage)
    handler = _handler(served)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(emulator_server, "Response", _paged())
        httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(handler, storage)
        )
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield Emulator(f"http://127.0.0.1:{httpd.server_address[1]}", served)
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=10)


def _write_gcs_store(out: Path) -> None:
    """The S3 tests' store, and a sharded checkpoint whose index names a shard not there."""
    write_store(out)
    qwen3 = config("Qwen3-4B_qwen3")
    paths = write_checkpoint(out / "lost-shard", qwen3, manifest_tensors(qwen3), shards=3,
                             sparse=False)
    paths[1].unlink()


@pytest.fixture(scope="module")
def store(gcs: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gcs") / "store"
    _write_gcs_store(out)
    gcs.upload(out, "store")
    return out




def _gcs_scan(
    gcs: Emulator, *args: str, pages: bool = True, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`pyaudit scan ARGS` in a child process whose environment points gcsfs at the emulator
    (``pages`` False: listed by gcsfs' own _find, in one piece)."""
    code = (
        f"import pyaudit.remote\npyaudit.remote.GCS_PAGES = {pages!r}\n"
        "from pyaudit.cli import main\n"
        f"raise SystemExit(main(['scan', *{list(args)!r}]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=gcs.env(token),
        timeout=300,
    )






# --- tests ----------------------------------------------------------------------------------


def test_gcs_same_report_as_local_header_bytes_only(
    gcs: Emulator, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report of a local scan of the same tree; broken checkpoints FAIL with the local
    codes; every .safetensors read by one or two range requests, never the tensor data
    behind its header; ``summary.remote`` counts what the emulator was asked and sent."""
    local_status, local = local_json(store, capsys)
    gcs.served.clear()
    url = f"gs://{BUCKET}/store"
    remote_status, remote, transfer = remote_json(_gcs_scan(gcs, "--json", url), url)
    assert remote == local
    assert remote_status == local_status == 1
    by_path = {c["path"]: c for c in json.loads(remote)["checkpoints"]}
    assert len(by_path) == 12 and ".cache/tmp" not in by_path
    codes = {p: {f["code"] for f in c["findings"]} for p, c in by_path.items()}
    assert by_path["copied/qwen3-tiny"]["status"] == "fail"
    assert "shard-truncated" in codes["copied/qwen3-tiny"]
    assert by_path["lost-shard"]["status"] == "fail"
    assert "shard-missing" in codes["lost-shard"]
    assert "shard-missing" in codes["bin-export"]
    assert "lfs-pointer" in codes["broken/lfs"]
    assert {"adapter-only", "intent-mismatch"} <= codes["output/v1-20250601-090000/checkpoint-50"]
    assert by_path["qwen3/checkpoint-100"]["status"] == "pass"
    assert by_path["llama"]["tensors"]["found"] == by_path["llama"]["tensors"]["expected"] > 0
    assert by_path["lost-shard"]["tensors"]["missing"] > 0

    files = {
        f"{BUCKET}/store/{p.relative_to(store).as_posix()}": p
        for p in store.rglob("*.safetensors")
        if not p.relative_to(store).as_posix().startswith(".")
    }
    served = gcs.served
    for key, path in files.items():
        ranges = served.gets[key]
        assert 1 <= len(ranges) <= 2, (key, ranges)
        assert all(r is not None and r.startswith("bytes=") for r in ranges), (key, ranges)
        assert served.bytes[key] <= max(span(path), 4096) + 4096, (key, served.bytes[key])
    total = sum(p.stat().st_size for p in files.values())
    assert sum(served.bytes[k] for k in files) < total / 10
    objects = sum(1 for p in store.rglob("*") if p.is_file())
    assert served.lists == -(-objects // PAGE)  # one listing of the tree, paged
    others = {k: n for k, n in served.bytes.items() if k not in files}
    assert all(k.endswith((".json", ".yaml", ".bin", "_model_states.pt")) for k in others), others
    assert transfer["bytes"] == sum(served.bytes.values())
    assert transfer["listed"] == objects
    assert transfer["failed"] == 0 and transfer["retries"] == 0
    assert not served.tokens  # anonymous: no credentials looked for, none sent
    # Every request gcsfs sent is counted, each listing page too.
    assert transfer["requests"] == len(served.requests), served.requests


def test_gcs_listed_by_find_same_report_as_local(
    gcs: Emulator, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Listed by gcsfs' _find (every page before it returns), the report is the same."""
    local_status, local = local_json(store, capsys)
    gcs.served.clear()
    url = f"gs://{BUCKET}/store"
    remote_status, remote, transfer = remote_json(
        _gcs_scan(gcs, "--json", url, pages=False), url
    )
    assert (remote_status, remote) == (local_status, local)
    assert gcs.served.lists > 1 and transfer["failed"] == 0


def test_gcs_single_file_url(
    gcs: Emulator, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rel = "copied/qwen3-tiny/model-00002-of-00002.safetensors"
    local_status, local = local_json(store / rel, capsys)
    url = f"gs://{BUCKET}/store/{rel}"
    remote_status, remote, _ = remote_json(_gcs_scan(gcs, "--json", url), url)
    assert (remote_status, remote) == (local_status, local) and local_status == 1
    assert "shard-truncated" in remote


@pytest.mark.parametrize(
    "url", [f"gs://{BUCKET}/no-such-prefix", "gs://pyaudit-no-such-bucket/store"]
)
def test_gcs_missing_bucket_or_prefix_is_a_usage_error(
    gcs: Emulator, store: Path, url: str
) -> None:
    done = _gcs_scan(gcs, url)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"pyaudit scan: {url}: no such file or directory"
    ], done.stderr


def test_gcs_token_from_gcsfs_environment_sent_never_shown(
    gcs: Emulator, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token given as gcsfs takes one from its environment (fsspec's FSSPEC_GCS_TOKEN) is
    what every request carries; neither a report nor a usage error shows it."""
    token = "ya29.secretvalue123456"
    local_status, local = local_json(store / "llama", capsys)
    gcs.served.clear()
    url = f"gs://{BUCKET}/store/llama"
    done = _gcs_scan(gcs, "--json", url, token=token)
    assert remote_json(done, url)[:2] == (local_status, local)
    missing = _gcs_scan(gcs, f"gs://{BUCKET}/no-such-prefix", token=token)
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    assert gcs.served.tokens == {f"Bearer {token}"}
    for out in (done.stdout, done.stderr, missing.stdout, missing.stderr):
        assert "secretvalue" not in out

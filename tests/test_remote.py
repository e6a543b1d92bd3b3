"""`pyaudit scan s3://...` against a real S3-protocol server (moto) on 127.0.0.1.

The server sits behind a WSGI wrapper that counts, per object, the GET requests, their
Range headers and the body bytes sent: the proof that a remote scan reads headers with at
most two range requests per file and never the tensor data behind them. The reports
must be those of a local scan of the same tree (the root path and timing aside).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from remote_store import config as _config
from remote_store import span as span_of
from remote_store import write_store

from pyaudit.auditing.results import AuditOptions
from pyaudit.cli import main
from pyaudit.testing.stores import (
    manifest_tensors,
    swift_args,
    write_checkpoint,
    write_json,
)

BUCKET = "pyaudit-remote-test"

# --- the server -----------------------------------------------------------------------------


@dataclass
class Served:
    """Per object key: GET requests (their Range headers) and body bytes sent."""

    gets: dict[str, list[str | None]] = field(default_factory=lambda: defaultdict(list))
    bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lists: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.gets.clear()
            self.bytes.clear()
            self.lists = 0


class Counting:
    """WSGI middleware: counts what the wrapped app sends for each object."""

    def __init__(self, app: Any, served: Served) -> None:
        self.app = app
        self.served = served

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        method = environ["REQUEST_METHOD"]
        key = unquote(environ.get("PATH_INFO", "")).lstrip("/")
        is_object = method == "GET" and "/" in key
        served = self.served
        with served.lock:
            if is_object:
                served.gets[key].append(environ.get("HTTP_RANGE"))
            elif method == "GET" and "list-type" in environ.get("QUERY_STRING", ""):
                served.lists += 1
        for chunk in self.app(environ, start_response):
            if is_object:
                with served.lock:
                    served.bytes[key] += len(chunk)
            yield chunk


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Served]]:
    """moto's S3 server on 127.0.0.1 (a free port), and the environment that points at it."""
    try:  # pip install "moto[server]" s3fs boto3
        import boto3
        import moto.server as moto_server
        import s3fs  # noqa: F401
        from werkzeug.serving import WSGIRequestHandler, make_server
    except ImportError as e:
        pytest.skip(f"remote tests need moto[server], s3fs and boto3: {e}")

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    served = Served()
    app = Counting(moto_server.DomainDispatcherApplication(moto_server.create_backend_app), served)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            mp.delenv(k, raising=False)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        try:
            yield endpoint, served
        finally:
            server.shutdown()
            thread.join(timeout=10)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own cache directory: the URL shapes a scan keeps for the next
    (pyaudit.s3direct) are shared by the tests of one environment otherwise."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PYAUDIT_CACHE_DIR", str(cache))
    return cache


# --- the store ------------------------------------------------------------------------------


def _upload(local: Path, prefix: str, endpoint: str | None = None) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)  # (the proxy does not forward PUTs)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(local).as_posix()}")


@pytest.fixture(scope="module")
def store(s3: tuple[str, Served], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("remote") / "store"
    write_store(out)
    _upload(out, "store")
    return out


TRANSFER: dict[str, Any] = {}


def _scan_json(path: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    status = main(["scan", "--json", *extra, path])
    doc = json.loads(capsys.readouterr().out)
    doc["summary"].pop("seconds")
    TRANSFER[path] = doc["summary"].pop("remote", None)  # requests and bytes: remote only
    # The root as given is the only difference: a local path there, the URL here.
    return status, json.dumps(doc, indent=1).replace(path.rstrip("/"), "ROOT")




# --- tests ----------------------------------------------------------------------------------


def test_same_report_as_local_and_no_tensor_data(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyaudit.remote import FIRST_GUESS, IN_FLIGHT

    _, served = s3
    local_status, local = _scan_json(str(store), capsys)
    served.clear()
    remote_status, remote = _scan_json(f"s3://{BUCKET}/store", capsys)
    transfer = TRANSFER[f"s3://{BUCKET}/store"]
    assert remote == local
    assert remote_status == local_status == 1
    doc = json.loads(remote)
    by_path = {c["path"]: c for c in doc["checkpoints"]}
    assert len(by_path) == 11 and ".cache/tmp" not in by_path
    codes = {p: {f["code"] for f in c["findings"]} for p, c in by_path.items()}
    assert "shard-truncated" in codes["copied/qwen3-tiny"]
    assert {"adapter-only", "intent-mismatch"} <= codes["output/v1-20250601-090000/checkpoint-50"]
    assert "lfs-pointer" in codes["broken/lfs"]
    assert "corrupt-pickle" in codes["zero3-run/checkpoint-100"]  # its records are zeros
    assert "shard-missing" in codes["bin-export"]
    assert by_path["qwen3/checkpoint-100"]["status"] == "pass"
    assert "ROOT/output/v0-20250530-100000/checkpoint-200-merged" in remote  # paths as local

    # What the server sent for each .safetensors: one range request (two when the first
    # fell short of the header, then exactly the rest), at most the header plus 1/8 of the
    # largest header seen or the first guess, never the data behind.
    files = {
        f"{BUCKET}/store/{p.relative_to(store).as_posix()}": p
        for p in store.rglob("*.safetensors")
        if not p.relative_to(store).as_posix().startswith(".")
    }
    spans = {key: span_of(path) for key, path in files.items()}
    most = max(s for k, s in spans.items() if s <= files[k].stat().st_size)
    total_size = sum(p.stat().st_size for p in files.values())
    for key, path in files.items():
        ranges = served.gets[key]
        size, span = path.stat().st_size, spans[key]
        assert 1 <= len(ranges) <= 2, (key, ranges)
        assert all(r is not None and r.startswith("bytes=") for r in ranges), (key, ranges)
        if len(ranges) == 2:
            assert served.bytes[key] == span, (key, served.bytes[key], span)
        else:
            assert min(size, span) <= served.bytes[key] <= max(FIRST_GUESS, most + most // 8)
    total_sent = sum(served.bytes[k] for k in files)
    assert total_sent < total_size / 10, (total_sent, total_size)
    assert served.lists == 1  # one listing of the whole tree
    # Nothing else large was read: the small run files and index files, and pickle-era
    # files small enough to read whole (as here: a few bytes each; their records are read
    # as on a local disk). A DCP's shards are only listed.
    others = {k: n for k, n in served.bytes.items() if k not in files}
    pickled = (".bin", "_model_states.pt", "/.metadata")
    assert all(k.endswith((".json", ".yaml", *pickled)) for k in others), sorted(others)
    assert all(n <= 128 for k, n in others.items() if k.endswith(pickled)), others
    # The summary says what was asked: every request and every byte the server sent.
    requests = sum(len(r) for r in served.gets.values()) + served.lists
    assert transfer["requests"] == requests and transfer["retries"] == 0
    assert transfer["bytes"] == sum(served.bytes.values())
    assert transfer["failed"] == 0 and transfer["in_flight"] == IN_FLIGHT == 128


def test_the_mirror_is_removed_once_the_reports_are_out(
    s3: tuple[str, Served], store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each store's mirror (its listing as placeholders, its run files) is removed once its
    last report is out, when a scan is given up after its first report, and before a
    `pyaudit scan` process exits: nothing of it is left in the temporary directory."""
    import tempfile

    from pyaudit import remote
    from pyaudit.auditing.results import AuditOptions

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # (the mirror there, not in /dev/shm)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    url = f"s3://{BUCKET}/store"
    assert len(list(remote.scan_paths([url], AuditOptions()))) == 11
    assert os.listdir(scratch) == []

    scan = remote.scan_paths([url], AuditOptions())
    next(scan)
    assert [p.name[:15] for p in scratch.iterdir()] == ["pyaudit-remote-"]  # in use
    scan.close()  # type: ignore[attr-defined]
    assert os.listdir(scratch) == []

    done = subprocess.run([sys.executable, "-m", "pyaudit", "scan", "--json", url],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 1 and len(json.loads(done.stdout)["checkpoints"]) == 11
    assert os.listdir(scratch) == []


def test_objects_no_directory_tree_can_hold_are_a_finding(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys S3 holds but a directory tree cannot (an object named as the directory of
    others, a name with an empty part) are not mirrored: the store's report says which,
    as an error, instead of their checkpoint going missing from the report unseen."""
    import boto3

    local = json.loads(_scan_json(str(store / "qwen3"), capsys)[1])
    _upload(store / "qwen3", "odd/qwen3")
    client = boto3.client("s3")
    body = (store / "qwen3" / "checkpoint-100" / "config.json").read_bytes()
    # "run/checkpoint-5", an object, lists before the checkpoint "run/checkpoint-5/" holds
    for key, data in (("odd/run/checkpoint-5", b""), ("odd/run/checkpoint-5/config.json", body),
                      ("odd/x//model.safetensors", b"")):
        client.put_object(Bucket=BUCKET, Key=key, Body=data)
    url = f"s3://{BUCKET}/odd"
    status, text = _scan_json(url, capsys)
    got = json.loads(text)
    assert status == 1
    by_path = {c["path"]: c for c in got["checkpoints"]}
    assert by_path.pop("ROOT")["status"] == "fail"
    (finding,) = json.loads(text)["checkpoints"][0]["findings"]
    assert finding["code"] == "unreadable" and finding["severity"] == "error"
    assert "2 objects listed but not scanned" in finding["message"]
    assert "run/checkpoint-5/config.json: below an object whose name is that of its " \
        "directory" in finding["message"]
    assert "x//model.safetensors: a name no directory can hold" in finding["message"]
    # the rest as a local scan of it reports it
    assert [c["status"] for c in by_path.values()] == [c["status"] for c in local["checkpoints"]]


def test_safetensors_are_names_in_the_mirror_held_to_the_tree(
    s3: tuple[str, Served], store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The mirror holds a .safetensors file as a name only (its directory made, no file:
    the audit reads the header fetched), and such a name is still held to the tree: one
    other objects are below, or one below another object, is not scanned and said so, as
    a placeholder of it would not be; the rest is reported as a local scan reports it."""
    import tempfile

    import boto3

    from pyaudit import remote
    from pyaudit.auditing.results import AuditOptions

    local = json.loads(_scan_json(str(store / "qwen3"), capsys)[1])
    _upload(store / "qwen3", "names/qwen3")
    body = (store / "qwen3" / "checkpoint-100" / "config.json").read_bytes()
    client = boto3.client("s3")
    for key, data in (("names/run/checkpoint-5", b""),
                      ("names/run/checkpoint-5/model.safetensors", b""),
                      ("names/w.safetensors", b""), ("names/w.safetensors/config.json", body)):
        client.put_object(Bucket=BUCKET, Key=key, Body=data)
    url = f"s3://{BUCKET}/names"

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    scan = remote.scan_paths([url], AuditOptions())
    next(scan)  # (the listing is complete, the mirror made)
    files = {p.name for p in scratch.rglob("*") if p.is_file()}
    dirs = {p.relative_to(scratch).as_posix().split("/m/", 1)[-1]
            for p in scratch.rglob("*") if p.is_dir()}
    scan.close()  # type: ignore[attr-defined]
    assert "config.json" in files and not {n for n in files if n.endswith(".safetensors")}
    assert {"names/qwen3/checkpoint-100", "names/w.safetensors"} <= dirs

    status, text = _scan_json(url, capsys)
    got = json.loads(text)
    by_path = {c["path"]: c for c in got["checkpoints"]}
    (finding,) = by_path.pop("ROOT")["findings"]
    assert finding["code"] == "unreadable" and finding["severity"] == "error"
    assert "2 objects listed but not scanned" in finding["message"]
    assert "run/checkpoint-5/model.safetensors: below an object whose name is that of its " \
        "directory" in finding["message"]
    assert "w.safetensors: named as the directory of other objects" in finding["message"]
    qwen3 = {p: c for p, c in by_path.items() if p.startswith("qwen3/")}
    assert len(qwen3) == len(local["checkpoints"]) and status == 1
    assert [c["status"] for c in qwen3.values()] == [c["status"] for c in local["checkpoints"]]
    assert [[f["code"] for f in c["findings"]] for c in qwen3.values()] == \
        [[f["code"] for f in c["findings"]] for c in local["checkpoints"]]


def _record_mirror_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the files a remote scan writes into its mirror, from now on."""
    from pyaudit import remote

    written: list[str] = []
    write = remote._write_file

    def recorded(path: str, data: bytes) -> None:
        written.append(path)
        write(path, data)

    monkeypatch.setattr(remote, "_write_file", recorded)
    return written


def test_a_checkpoints_own_config_and_index_reach_its_audit_as_bytes(
    s3: tuple[str, Served], store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A checkpoint whose audit reads no other directory's run files (a config, no adapter
    config, no run arguments) is audited from the fetched bytes of its config.json and
    weights index: neither is written into the mirror, and the reports, a truncated config
    and a broken index among them, are the local scan's."""
    import shutil


    local_root = tmp_path / "given"
    shutil.copytree(store / "qwen3", local_root / "good")
    shutil.copytree(store / "qwen3", local_root / "bad-config")
    config = local_root / "bad-config" / "checkpoint-100" / "config.json"
    config.write_bytes(config.read_bytes()[:40])
    shutil.copytree(store / "qwen3", local_root / "bad-index")
    index = local_root / "bad-index" / "checkpoint-100" / "model.safetensors.index.json"
    index.write_bytes(index.read_bytes()[:30])
    status_local, local = _scan_json(str(local_root), capsys)
    _upload(local_root, "given")

    written = _record_mirror_writes(monkeypatch)
    status, got = _scan_json(f"s3://{BUCKET}/given", capsys)
    assert (status, got) == (status_local, local)
    codes = {c["path"]: {f["code"] for f in c["findings"]}
             for c in json.loads(got)["checkpoints"]}
    assert "invalid-file" in codes["bad-config/checkpoint-100"]
    assert "invalid-file" in codes["bad-index/checkpoint-100"]
    assert codes["good/checkpoint-100"] == set()
    assert not [p for p in written if p.endswith(("config.json", ".index.json"))], written


@pytest.mark.parametrize("framework", sorted(
    p.name for p in (Path(__file__).parent / "frameworks" / "data").iterdir() if p.is_dir()
))
@pytest.mark.parametrize("expect", ["", "full"])
def test_real_framework_trees_report_as_locally(
    s3: tuple[str, Served], framework: str, expect: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Every real training-output tree in tests/frameworks (ms-swift's load_args lineage,
    resumed and merged runs, LLaMA-Factory's cards, ZeRO and FSDP states, TRL, PEFT) as an
    S3 store reports exactly as the same tree on a local disk, with its own arguments and
    under --expect full; and no run file (config, adapter config, run arguments) is written
    into the mirror: every read of one, of any directory, is answered from the bytes
    fetched."""
    from realdata import FRAMEWORKS

    from pyaudit import remote

    written = _record_mirror_writes(monkeypatch)

    local_root = tmp_path / framework
    shutil.copytree(FRAMEWORKS / framework, local_root)
    extra = ("--expect", expect) if expect else ()
    status_local, local = _scan_json(str(local_root), capsys, *extra)
    prefix = f"frameworks-{framework}"
    if prefix not in _UPLOADED:
        _upload(local_root, prefix)
        _UPLOADED.add(prefix)
    status, got = _scan_json(f"s3://{BUCKET}/{prefix}", capsys, *extra)
    assert (status, got) == (status_local, local)
    assert json.loads(got)["checkpoints"]
    assert not [p for p in written if p.endswith(remote.GLOBAL_RUN_FILES)], written


_UPLOADED: set[str] = set()  # (the module's S3 server keeps them)


def test_a_model_card_explains_an_intent_finding_as_locally(
    s3: tuple[str, Served], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """LLaMA-Factory's command line records the training type only in the model card saved
    with the run (README.md), read to explain an intent finding: --expect full over its real
    LoRA and OFT output trees reports as a local scan does, each cause naming the card (at
    its URL) and the type it tags."""
    from realdata import FRAMEWORKS

    local_root = tmp_path / "lf"
    for run in ("lora", "oft"):
        shutil.copytree(FRAMEWORKS / "llamafactory-0.9.5" / run, local_root / run)
    status_local, local = _scan_json(str(local_root), capsys, "--expect", "full")
    _upload(local_root, "lf")
    status, got = _scan_json(f"s3://{BUCKET}/lf", capsys, "--expect", "full")
    assert (status, got) == (status_local, local)
    messages = [f["message"] for c in json.loads(got)["checkpoints"] for f in c["findings"]
                if f["code"] == "intent-mismatch"]
    assert len(messages) == 4
    assert all("ROOT/lora/" in m or "ROOT/oft/" in m for m in messages), messages
    assert all("README.md, tags it llama-factory" in m for m in messages), messages


@pytest.mark.parametrize("ns", ['xmlns="http://s3.amazonaws.com/doc/2006-03-01/"', ""])
def test_a_listing_page_as_s3_writes_it(ns: str) -> None:
    """A ListObjectsV2 page, with S3's namespace or none: keys XML-escaped and URL-encoded
    (encoding-type url), ETags quoted as entities (a multipart one, one that is no MD5), a
    size that is no number (0), an entry without a key (skipped), the next page's token."""
    from pyaudit.remote import _parse_listing

    md5 = "0123456789abcdef0123456789ABCDEF"
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult {ns}><Name>b</Name>'
        "<IsTruncated>true</IsTruncated><NextContinuationToken> t1 </NextContinuationToken>"
        "<EncodingType>url</EncodingType>"
        f"<Contents><Key>a/x%20y+z&amp;.json</Key><ETag>&quot;{md5}&quot;</ETag>"
        "<Size>12</Size></Contents>"
        f"<Contents><Key>a/m.safetensors</Key><ETag>&quot;{md5}-3&quot;</ETag>"
        "<Size>many</Size></Contents>"
        "<Contents><ETag>&quot;x&quot;</ETag><Size>1</Size></Contents>"
        "<Contents><Key>a/b</Key><ETag>W/&quot;weak&quot;</ETag><Size>-5</Size></Contents>"
        "</ListBucketResult>"
    ).encode()
    items, token = _parse_listing(body)
    assert items == [
        ("a/x y z&.json", 12, f"s3:{md5.lower()}"),
        ("a/m.safetensors", 0, f"s3:{md5.lower()}-3"),
        ("a/b", 0, None),
    ]
    assert token == "t1"
    last = body.replace(b"<IsTruncated>true", b"<IsTruncated>false")
    assert _parse_listing(last)[1] is None
    with pytest.raises(OSError, match="not XML"):
        _parse_listing(body[:-20])


def _first_pages(monkeypatch: pytest.MonkeyPatch, answer: Any = None) -> list[Any]:
    """The pages pyaudit.firstpage asks for, recorded; ``answer``: what the early request
    gets instead of the server's answer (a Response, or an exception raised)."""
    from pyaudit import firstpage

    asked: list[Any] = []
    real_ask, real_get = firstpage.ask, firstpage.get_blocking

    def ask(*args: Any, **kwargs: Any) -> dict[str, Any]:
        pages = real_ask(*args, **kwargs)
        asked.extend(pages.values())
        return pages

    def get_blocking(*args: Any, **kwargs: Any) -> Any:
        if isinstance(answer, BaseException):
            raise answer
        return answer if answer is not None else real_get(*args, **kwargs)

    monkeypatch.setattr(firstpage, "ask", ask)
    monkeypatch.setattr(firstpage, "get_blocking", get_blocking)
    return asked


def test_the_first_listing_page_is_asked_before_the_imports(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a scan kept the bucket's URL shape, the next `pyaudit scan` asks its first
    listing page before importing the scan (pyaudit.firstpage) and the listing takes it
    as its own: the page is asked once, every request is counted, the report is the same."""
    _, served = s3
    url = f"s3://{BUCKET}/store"
    local_status, local = _scan_json(str(store), capsys)
    asked = _first_pages(monkeypatch)
    assert _scan_json(url, capsys) == (local_status, local)  # (keeps the shape)
    assert asked == []  # no shape kept yet: the listing asked the usual way
    served.clear()
    assert _scan_json(url, capsys) == (local_status, local)
    (page,) = asked
    assert page.taken and page.error is None and page.result().status == 200
    assert served.lists == 1
    assert TRANSFER[url]["requests"] == sum(map(len, served.gets.values())) + served.lists


def test_a_first_page_is_asked_early_only_where_the_listing_would_ask_it_so(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """pyaudit.firstpage asks a page only for an s3:// URL whose bucket has a kept shape,
    with the environment's credentials and no proxy variable (through a proxy, the usual way
    goes); and importing it imports no asyncio (what it is for: ~0.1 s of imports after it)."""
    from pyaudit import firstpage

    url = f"s3://{BUCKET}/store"
    assert firstpage.ask([url]) == {}  # no shape kept yet in this test's cache
    _scan_json(url, capsys)  # (keeps it)
    env = dict(os.environ)
    assert firstpage.ask([url, "s3://another-bucket/x", "gs://b/x", str(store)], env).keys() \
        == {url}
    assert firstpage.ask([url], {**env, "HTTPS_PROXY": "http://proxy:3128"}) == {}
    assert firstpage.ask([url], {k: v for k, v in env.items()
                                 if k != "AWS_SECRET_ACCESS_KEY"}) == {}
    page = firstpage.ask([url], env)[url]
    done = threading.Event()
    page.when_done(done.set)
    assert done.wait(30)
    answer = page.result()
    assert answer is not None and answer.status == 200 and b"<Key>store/" in answer.body
    assert page.matches(BUCKET, "store/", page.shape, page.creds)
    assert not page.matches(BUCKET, "store/qwen3/", page.shape, page.creds)
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, pyaudit.firstpage; print('asyncio' in sys.modules)"],
        capture_output=True, text=True, timeout=60)
    assert imported.stdout.strip() == "False", imported.stderr


@pytest.mark.parametrize("named", ["as the listing reads it", "otherwise"])
def test_the_pages_after_the_first_are_asked_early_and_taken(
    s3: tuple[str, Served], store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, named: str,
) -> None:
    """Once the shape is kept, the first page's thread asks the listing's later pages too
    (pages of 3 keys here), each with the token the page before names, and the listing takes
    every one: each page asked once, every request counted, the report the local one. Where
    a page names its token otherwise than its XML parse reads it, the listing asks from
    there on itself; the page asked early with the other token is a request, counted."""
    from pyaudit import firstpage
    from pyaudit.testing import static_s3
    from pyaudit.testing.proxy import LatencyProxy

    root = tmp_path / "served"
    shutil.copytree(store, root / BUCKET / "store")
    monkeypatch.setattr(static_s3, "MAX_KEYS", 3)
    objects = sum(1 for p in store.rglob("*") if p.is_file())
    pages = -(-objects // 3)
    url = f"s3://{BUCKET}/store"
    local = _scan_json(str(store), capsys)
    if named == "otherwise":
        monkeypatch.setattr(firstpage, "next_token",
                            lambda body: "store/a" if b"<IsTruncated>true" in body else None)
    with LatencyProxy(serve=str(root), delay=0.0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        assert _scan_json(url, capsys) == local  # (keeps the shape)
        asked = _first_pages(monkeypatch)
        proxy.reset()
        assert _scan_json(url, capsys) == local
        sent = proxy.stats.requests
        lists = proxy.stats.kinds["get-list"]
    (first,) = asked
    chain = []
    page = first
    while page is not None:
        chain.append(page)
        page = page.next
    assert all(page.taken for page in chain)
    assert TRANSFER[url]["requests"] == sent
    if named == "otherwise":
        # (asked ahead while the listing read the first: at most AHEAD more, none taken;
        # maybe none, where the listing asked on before the thread)
        assert len(chain) <= firstpage.AHEAD + 1 and lists == pages + len(chain) - 1
    else:
        assert len(chain) == pages > firstpage.AHEAD and lists == pages
        # (each page's body let go once read: a long listing's pages are not all held)
        assert all(page.result().status == 200 and page.result().body == b"" for page in chain)


@pytest.mark.parametrize("answer", ["lost", "refused"])
def test_a_first_page_asked_early_and_lost_or_refused_is_asked_again(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, answer: str,
) -> None:
    """The early request fails before an answer (the connection), or its signature is
    refused (403: the kept shape no longer holds): the listing asks for the page again (the
    refused shape forgotten, botocore presigning), the report is the same, and the early
    request is counted among those sent."""
    from pyaudit.httpwire import Response
    from pyaudit.s3direct import load_shape, shape_key

    _, served = s3
    url = f"s3://{BUCKET}/store"
    local = _scan_json(str(store), capsys)
    assert _scan_json(url, capsys) == local  # (keeps the shape)
    key = shape_key(os.environ)
    assert key is not None and load_shape(key, BUCKET) is not None
    early = ConnectionResetError("reset") if answer == "lost" else Response(
        403, "Forbidden", {}, b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>",
        True)
    asked = _first_pages(monkeypatch, early)
    served.clear()
    assert _scan_json(url, capsys) == local
    (page,) = asked
    assert page.taken
    assert served.lists == 1  # (the early request never reached the server)
    assert TRANSFER[url]["requests"] == sum(map(len, served.gets.values())) + served.lists + 1
    if answer == "refused":  # forgotten, then learnt again from botocore's URLs
        assert load_shape(key, BUCKET) is not None


def test_long_headers_take_a_second_range(
    s3: tuple[str, Served], store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a first guess shorter than the headers, a header arrives in exactly two
    requests and exactly its own bytes; the guess then learnt takes one; the report does
    not change."""
    from pyaudit import remote
    from pyaudit.sweep import scan

    _, served = s3
    root = store / "output"
    local = [r.to_json() for r in scan([str(root)], AuditOptions())]
    served.clear()
    monkeypatch.setattr(remote, "FIRST_GUESS", 256)
    url = f"s3://{BUCKET}/store/output"
    reports = remote.scan_tree(remote.RemoteTree(url, in_flight=1), AuditOptions())
    got = [r.to_json() for r in reports]
    assert json.dumps(got).replace(url, "ROOT") == json.dumps(local).replace(str(root), "ROOT")
    paths = sorted(root.rglob("*.safetensors"))
    most = max(span_of(p) for p in paths)
    counts = []
    for path in paths:
        key = f"{BUCKET}/store/output/{path.relative_to(root).as_posix()}"
        counts.append(len(served.gets[key]))
        if len(served.gets[key]) == 2:
            assert served.bytes[key] == span_of(path), key
        else:
            assert span_of(path) <= served.bytes[key] <= most + most // 8, key
    assert counts.count(2) >= 1 and max(counts) == 2, counts


def test_single_file_url(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rel = "copied/qwen3-tiny/model-00002-of-00002.safetensors"
    local_status, local = _scan_json(str(store / rel), capsys)
    remote_status, remote = _scan_json(f"s3://{BUCKET}/store/{rel}", capsys)
    assert remote == local and remote_status == local_status == 1
    assert "shard-truncated" in remote


def test_object_gone_after_listing_is_unreadable(
    s3: tuple[str, Served], proxied: Any, store: Path
) -> None:
    """An object deleted between the listing and its read (here: as its GET arrives)."""
    import boto3

    from pyaudit import remote

    endpoint, _ = s3
    _upload(store / "llama", "gone", endpoint)
    victim = "gone/model-00002-of-00003.safetensors"

    def faults(method: str, path: str, n: int) -> str | None:
        if method == "GET" and path.endswith(victim) and n == 1:
            boto3.client("s3", endpoint_url=endpoint).delete_object(Bucket=BUCKET, Key=victim)
        return None

    proxied.faults = faults
    tree = remote.RemoteTree(f"s3://{BUCKET}/gone")
    (report,) = remote.scan_tree(tree, AuditOptions())
    assert report.status == "fail"
    (finding,) = [f for f in report.findings if f.code == "unreadable"]
    assert finding.message.startswith("model-00002-of-00003.safetensors: cannot read")


def test_usage_errors_exit_2(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", f"s3://{BUCKET}/no-such-prefix"]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["scan", "--verify-data", f"s3://{BUCKET}/store/llama"]) == 2
    assert "--verify-data" in capsys.readouterr().err
    # A usage error found after the listing started: the listing is not kept for later.
    from pyaudit import remote, runs

    assert main(["scan", "--base", str(store / "no-such-base"), f"s3://{BUCKET}/store"]) == 2
    assert "--base" in capsys.readouterr().err and not remote._LISTED
    assert remote.RUN_WHOLE_MAX == runs.PREFETCH_BYTES  # the same bound as a local sweep's
    import pyaudit

    with pytest.raises(FileNotFoundError):
        pyaudit.scan(f"s3://{BUCKET}/no-such-prefix")
    report = pyaudit.scan(f"s3://{BUCKET}/store/llama")
    assert report.ok and report.checkpoints[0].path == f"s3://{BUCKET}/store/llama"


def test_no_credentials_is_one_line_asked_once(tmp_path: Path) -> None:
    """No credentials anywhere botocore looks: exit 2 with botocore's own one line, at once
    (its configuration errors are not asked again)."""
    pytest.importorskip("botocore")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env.update({"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "HOME": str(tmp_path),
                "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    done = subprocess.run([sys.executable, "-m", "pyaudit", "scan", "s3://bucket/prefix"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "pyaudit scan: s3://bucket/prefix: cannot list: Unable to locate credentials"
    )


@pytest.mark.parametrize("hidden", ["fsspec", "s3fs"])
def test_missing_driver_is_one_line(hidden: str) -> None:
    code = (
        f"import sys; sys.modules[{hidden!r}] = None\n"
        "from pyaudit.cli import main\n"
        "raise SystemExit(main(['scan', 's3://bucket/prefix']))\n"
    )
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'pyaudit[remote]'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_file_url_same_as_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fsspec")
    out = tmp_path / "store"
    qwen3 = _config("Qwen3-4B_qwen3")
    tensors = manifest_tensors(qwen3)
    paths = write_checkpoint(out / "a" / "checkpoint-5", qwen3, tensors, shards=2, sparse=False)
    paths[0].write_bytes(paths[0].read_bytes()[:-10])
    write_json(out / "a" / "args.json", swift_args("Qwen/Qwen3-4B", "lora"))
    local = _scan_json(str(out), capsys)
    assert _scan_json(out.as_uri(), capsys) == local


def test_file_url_consensus_same_as_local(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A family nothing knows, no transformers: the checkpoints of a remote store that share
    a config.json are held against each other as a local scan's are."""
    pytest.importorskip("fsspec")
    import pyaudit.oracle as oracle

    monkeypatch.setattr(oracle, "_installed", lambda module: False)
    out = tmp_path / "store"
    config = {**_config("Qwen3-4B_qwen3"), "model_type": "qwen9_next"}
    tensors = manifest_tensors(_config("Qwen3-4B_qwen3"))
    for step in (1, 2, 3):
        held = {n: t for n, t in tensors.items() if step != 2 or ".layers.1." not in n}
        write_checkpoint(out / "run" / f"checkpoint-{step}", config, held)
    local = _scan_json(str(out), capsys)
    assert local[0] == 1 and local[1].count('"consensus-missing"') == 1
    assert _scan_json(out.as_uri(), capsys) == local


def test_http_single_file(s3: tuple[str, Served], store: Path) -> None:
    """http(s):// names one file (no listing): its header alone, by range requests."""
    pytest.importorskip("aiohttp")
    import pyaudit

    endpoint, served = s3
    rel = "qwen3/checkpoint-100/model-00001-of-00002.safetensors"
    url = f"{endpoint}/{BUCKET}/store/{rel}"
    import boto3

    boto3.client("s3").put_object_acl(Bucket=BUCKET, Key=f"store/{rel}", ACL="public-read")
    served.clear()
    report = pyaudit.scan(url)
    (ckpt,) = report.checkpoints
    assert ckpt.path == url and ckpt.kind == "full"
    assert [(f.path, f.ok, f.bytes) for f in ckpt.files] == [
        (Path(rel).name, True, (store / rel).stat().st_size)
    ]
    ranges = served.gets[f"{BUCKET}/store/{rel}"]
    assert len(ranges) == 1 and ranges[0] is not None


# --- faults, through a proxy that injects them ----------------------------------------------


@pytest.fixture
def proxied(
    s3: tuple[str, Served], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The S3 server behind pyaudit.testing.proxy (faults chosen by each test); retries
    after 10 ms, a try given up after 5 s."""
    from pyaudit import remote
    from pyaudit.testing.proxy import LatencyProxy

    endpoint, _ = s3
    with LatencyProxy(endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setattr(remote, "BACKOFF", 0.01)
        monkeypatch.setattr(remote, "TIMEOUT", 5.0)
        yield proxy


def test_throttling_and_dropped_connections_are_retried(
    proxied: Any, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first try of every request is throttled (503 SlowDown), the listing's first
    page fails (500), config files also lose their connection once and one shard's
    header stalls once: the report is the local one, every fault was retried."""

    def faults(method: str, path: str, n: int) -> str | None:
        if n == 1:
            return "slowdown" if "/" in path.strip("/") else "error"
        if n == 2 and path.endswith("config.json"):
            return "drop"
        if n == 2 and path.endswith("qwen3/checkpoint-100/model-00001-of-00002.safetensors"):
            return "stall"
        return None

    proxied.faults = faults
    local = _scan_json(str(store / "qwen3"), capsys)
    remote = _scan_json(f"s3://{BUCKET}/store/qwen3", capsys)
    assert remote == local
    transfer = TRANSFER[f"s3://{BUCKET}/store/qwen3"]
    faults_seen = proxied.stats.faults
    assert faults_seen["slowdown"] >= 3 and faults_seen["error"] == 1
    assert faults_seen["drop"] == 1 and faults_seen["stall"] == 1
    # (a request whose kept-alive connection was dropped may be resent by the client itself)
    assert transfer["retries"] >= sum(faults_seen.values()) - faults_seen["drop"]
    assert transfer["failed"] == 0


def test_an_object_that_stays_unreadable_is_a_finding(
    proxied: Any, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shard, a config.json, an args.json and a weights index throttled on every try:
    after the bounded retries, an `unreadable` finding of their checkpoints; every other one
    as locally."""
    from pyaudit import remote

    def faults(method: str, path: str, n: int) -> str | None:
        if path.endswith(("llama/model-00002-of-00003.safetensors", "mixtral/config.json",
                          "v1-20250601-090000/checkpoint-50/args.json",
                          "checkpoint-200-merged/model.safetensors.index.json")):
            return "slowdown"
        return None

    proxied.faults = faults
    local = json.loads(_scan_json(str(store), capsys)[1])
    status, text = _scan_json(f"s3://{BUCKET}/store", capsys)
    got = json.loads(text)
    assert status == 1
    by_path = {c["path"]: c for c in got["checkpoints"]}
    assert [c["path"] for c in got["checkpoints"]] == [c["path"] for c in local["checkpoints"]]
    grpo = "output/v1-20250601-090000/checkpoint-50"
    merged = "output/v0-20250530-100000/checkpoint-200-merged"
    for c in local["checkpoints"]:
        if c["path"] not in ("llama", "mixtral", grpo, merged):
            assert by_path[c["path"]] == c
    for path, name in (
        ("llama", "model-00002-of-00003.safetensors"),
        ("mixtral", "config.json"),
        (grpo, "args.json"),
        (merged, "model.safetensors.index.json"),
    ):
        assert by_path[path]["status"] == "fail", json.dumps(by_path[path])
        (f,) = [f for f in by_path[path]["findings"] if f["code"] == "unreadable"]
        assert f["message"].startswith(f"{name}: cannot read: ")
        assert f["message"].endswith(f"reduce your request rate. ({remote.ATTEMPTS} tries)")
        # said once: the mirror's empty placeholder is not also reported as an invalid file
        assert not [
            g for g in by_path[path]["findings"]
            if g["code"] == "invalid-file" and g["message"].startswith(f"{name}:")
        ], by_path[path]["findings"]
    assert proxied.stats.faults["slowdown"] == 4 * remote.ATTEMPTS
    transfer = TRANSFER[f"s3://{BUCKET}/store"]
    assert transfer["failed"] == 4 and transfer["retries"] >= 4 * (remote.ATTEMPTS - 1)


def test_latency_is_paid_in_parallel(proxied: Any, store: Path) -> None:
    """Through a proxy adding 50 ms to every request, no more connections than requests
    in flight are opened, and every request is counted by both sides."""
    from pyaudit import remote

    proxied.delay = 0.05
    url = f"s3://{BUCKET}/store"
    scan = remote.scan_paths([url], AuditOptions(), jobs=1)  # 8 in flight
    reports = list(scan)
    assert len(reports) == 11
    assert scan.transfer.requests == proxied.stats.requests  # type: ignore[attr-defined]
    assert scan.transfer.in_flight == 8  # type: ignore[attr-defined]
    assert proxied.stats.max_open <= 8 + 1  # the slots, and the listing


# --- other filesystems through the same code ------------------------------------------------


def test_memory_filesystem_same_as_local(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A synchronous fsspec filesystem (memory://: the path hf:// takes, HfFileSystem
    being synchronous too): requests on threads, the same report as a local scan."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for path in sorted(store.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"/mstore/{path.relative_to(store).as_posix()}", path.read_bytes())
    try:
        local = _scan_json(str(store), capsys)
        assert _scan_json("memory://mstore", capsys) == local
        assert TRANSFER["memory://mstore"]["requests"] > 11
    finally:
        fs.rm("/mstore", recursive=True)


def test_generic_async_listing_same_as_local(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listing adlfs gets (fsspec's async _find, in one piece), over S3."""
    from pyaudit import remote

    monkeypatch.setattr(remote, "S3_PAGES", False)
    local = _scan_json(str(store), capsys)
    assert _scan_json(f"s3://{BUCKET}/store", capsys) == local


def test_unreachable_hub_is_one_line_without_the_token(tmp_path: Path) -> None:
    """hf:// is HfFileSystem's (credentials from HF_TOKEN); with no Hub reachable the
    scan is a one-line usage error that never shows the token."""
    pytest.importorskip("huggingface_hub")
    code = (
        "from pyaudit.cli import main\n"
        "raise SystemExit(main(['scan', 'hf://pyaudit-test/none-such-repo']))\n"
    )
    env = {**os.environ, "HF_TOKEN": "hf_secretvalue123456", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "secretvalue" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _hf_scan(hub_url: str, url: str, home: Path, token: str) -> subprocess.CompletedProcess[str]:
    """`pyaudit scan --json URL` in a child (huggingface_hub reads HF_ENDPOINT on import)."""
    code = f"from pyaudit.cli import main\nraise SystemExit(main(['scan', '--json', {url!r}]))\n"
    env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_TOKEN": token, "HF_HOME": str(home),
           "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_hf_hub_same_report_as_local_header_bytes_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hf:// through huggingface_hub's HfFileSystem, against a local fake of the Hub's
    endpoints it calls (pyaudit.testing.fake_hub; the tree listed in pages of 5): the
    report of a local scan; each .safetensors read by at most two range requests, never
    the tensor data behind its header; the token sent as HfFileSystem sends it, never shown."""
    pytest.importorskip("huggingface_hub")
    pytest.importorskip("fsspec")
    from pyaudit.testing.fake_hub import FakeHub

    served = tmp_path / "hub"
    out = served / "pyaudit-test" / "store"
    write_store(out)
    local_status, local = _scan_json(str(out), capsys)
    token = "hf_secretvalue123456"
    url = "hf://pyaudit-test/store"
    with FakeHub(served, page_size=5) as hub:
        done = _hf_scan(hub.url, url, tmp_path / "home", token)
        missing = _hf_scan(hub.url, "hf://pyaudit-test/none-such", tmp_path / "home", token)
    assert done.returncode == local_status == 1, done.stderr[-2000:]
    doc = json.loads(done.stdout)
    doc["summary"].pop("seconds")
    transfer = doc["summary"].pop("remote")
    assert json.dumps(doc, indent=1).replace(url, "ROOT") == local
    assert hub.kinds["tree"] > 5  # paged
    assert hub.tokens == {f"Bearer {token}"}
    assert token not in done.stdout + done.stderr
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    assert token not in missing.stdout + missing.stderr
    files = {
        f"pyaudit-test/store/{p.relative_to(out).as_posix()}": p
        for p in out.rglob("*.safetensors")
        if not p.relative_to(out).as_posix().startswith(".")
    }
    for key, path in files.items():
        ranges = hub.ranges.get(key, [])
        assert 1 <= len(ranges) <= 2 and all(r is not None for r in ranges), (key, ranges)
        assert hub.sent[key] <= max(span_of(path), 4096) + 4096, (key, hub.sent[key])
    total = sum(p.stat().st_size for p in files.values())
    assert sum(hub.sent[k] for k in files) < total / 10
    assert transfer["bytes"] == hub.file_bytes and transfer["failed"] == 0


@pytest.mark.parametrize(
    ("url", "driver", "hint"),
    [("gs://bucket/store", "gcsfs", "pip install 'pyaudit[gcs]'"),
     ("az://c/store", "adlfs", "pip install 'pyaudit[azure]'")],
)
def test_gcs_and_azure_without_their_driver(url: str, driver: str, hint: str) -> None:
    """Where the driver of gs:// (gcsfs) or az:// (adlfs) is not installed (here: hidden
    from the child), the scan says how to get it, in one line."""
    from importlib.util import find_spec

    if find_spec("fsspec") is None:
        pytest.skip("needs fsspec (the remote extra): without it the scan asks for that first")
    code = (
        f"import sys; sys.modules[{driver!r}] = None\n"
        f"from pyaudit.cli import main\nraise SystemExit(main(['scan', {url!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert driver in done.stderr and hint in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_static_s3_fake_same_report_as_local(
    s3: tuple[str, Served], store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The benchmarks' light S3 fake (pyaudit.testing.static_s3, served by the proxy): the
    store scanned through it reports as the local scan does, listed in pages of 1,000
    (here 7 keys a page) as S3 lists, each page read plainly (pyaudit.s3listing), none
    left to the XML parse."""
    from pyaudit import remote
    from pyaudit.testing import static_s3
    from pyaudit.testing.proxy import LatencyProxy

    root = tmp_path / "served"
    shutil.copytree(store, root / BUCKET / "store")
    monkeypatch.setattr(static_s3, "MAX_KEYS", 7)
    as_xml: list[bytes] = []
    parse_xml = remote._parse_listing_xml
    monkeypatch.setattr(remote, "_parse_listing_xml",
                        lambda body: as_xml.append(body) or parse_xml(body))
    local_status, local = _scan_json(str(store), capsys)
    with LatencyProxy(serve=str(root)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        remote_status, remote_report = _scan_json(f"s3://{BUCKET}/store", capsys)
        kinds = proxy.stats.kinds
    assert (remote_status, remote_report) == (local_status, local)
    assert as_xml == []
    objects = sum(1 for p in store.rglob("*") if p.is_file())
    assert kinds["get-list"] >= objects // 7  # paged
    assert kinds["get-range"] > 0


def test_through_an_http_proxy_named_by_the_environment(
    s3: tuple[str, Served], store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY names a proxy for the endpoint: every request (listing pages and range
    GETs) goes through it, by aiohttp, to an endpoint that only the proxy can reach; the
    report is the local one."""
    pytest.importorskip("aiohttp")
    from pyaudit.testing.proxy import LatencyProxy

    root = tmp_path / "served"
    shutil.copytree(store / "qwen3", root / BUCKET / "store")
    local = _scan_json(str(store / "qwen3"), capsys)
    with LatencyProxy(serve=str(root)) as proxy:
        for name in ("http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3.pyaudit-test.invalid")
        remote = _scan_json(f"s3://{BUCKET}/store", capsys)
        kinds = proxy.stats.kinds
    assert remote == local
    assert kinds["get-list"] >= 1 and kinds["get-range"] >= 2


def test_static_s3_keys_url_encoded_and_decoded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names with a space, a '+' and non-ASCII letters: listed URL-encoded (as S3 lists when
    asked, and botocore asks), decoded back, read by their own names, reported as locally."""
    pytest.importorskip("s3fs")
    from pyaudit.testing.proxy import LatencyProxy

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                 "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
        monkeypatch.setenv(k, v)
    root = tmp_path / "served"
    out = root / BUCKET / "store"
    qwen3 = _config("Qwen3-4B_qwen3")
    tensors = manifest_tensors(qwen3)
    paths = write_checkpoint(out / "run a+b" / "checkpoint-5 é", qwen3, tensors, shards=2)
    paths[0].write_bytes(paths[0].read_bytes()[:-10])
    local_status, local = _scan_json(str(out), capsys)
    with LatencyProxy(serve=str(root)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        remote_status, remote = _scan_json(f"s3://{BUCKET}/store", capsys)
    assert (remote_status, remote) == (local_status, local)
    (ckpt,) = json.loads(remote)["checkpoints"]
    assert ckpt["path"] == "run a+b/checkpoint-5 é" and "shard-truncated" in remote
    assert TRANSFER[f"s3://{BUCKET}/store"]["failed"] == 0


def test_headers_requested_while_the_listing_arrives(
    s3: tuple[str, Served], store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Header requests go out as the listing names their files, before its last page; past
    the window (one request in flight: 8 files), as long as what they hold is small; the
    scan takes them (no header asked again); the report is the local one."""
    from pyaudit import remote
    from pyaudit.sweep import scan
    from pyaudit.testing import static_s3
    from pyaudit.testing.proxy import LatencyProxy

    root = tmp_path / "served"
    shutil.copytree(store, root / BUCKET / "store")
    seen: list[tuple[str, str]] = []

    def record(method: str, path: str, n: int) -> None:
        seen.append((method, path))

    local = json.dumps([r.to_json() for r in scan([str(store)], AuditOptions())])
    shards = {p.relative_to(store).as_posix() for p in store.rglob("*.safetensors")}
    shards = {rel for rel in shards if not rel.startswith(".")}
    url = f"s3://{BUCKET}/store"
    for in_flight, keys in ((1, 7), (8, 3)):
        seen.clear()
        monkeypatch.setattr(static_s3, "MAX_KEYS", keys)
        with LatencyProxy(serve=str(root), delay=0.02, faults=record) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
            tree = remote.RemoteTree(url, in_flight=in_flight)
            assert tree.listed() is None
            prefetched = set(tree.headers)
            got = [r.to_json() for r in remote.scan_tree(tree, AuditOptions())]
        assert json.dumps(got).replace(url, "ROOT") == local.replace(str(store), "ROOT")
        assert prefetched == shards and len(shards) > remote.WINDOW * 1
        assert not tree.headers  # every one taken by the scan, none asked again
        for rel in shards:  # (two: the first read fell short of the header)
            assert 1 <= [p for _, p in seen].count(f"/{BUCKET}/store/{rel}") <= 2, rel
    # (8 in flight: the run files, asked first, leave slots to headers before the end)
    pages = [i for i, (_, path) in enumerate(seen) if path == f"/{BUCKET}"]
    first_header = min(i for i, (_, path) in enumerate(seen) if path.endswith(".safetensors"))
    assert len(pages) >= 10 and first_header < pages[-1], seen


def test_the_listing_s_end_wakes_the_mirror_maker(
    s3: tuple[str, Served], store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing's last page is added (and said) before the listing is over: a wait of
    the mirror's maker begun between the two is woken by the listing's end, not by its
    poll running out (it slept 50 ms of a scan's critical path away). Here the listing
    ends 0.3 s after its last page, and the poll is 30 s: no wait may run out."""
    from pyaudit import remote
    from pyaudit.testing.proxy import LatencyProxy

    class Counting(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            self.ran_out = 0

        def wait(self, timeout: float | None = None) -> bool:
            woken = super().wait(timeout)
            self.ran_out += not woken
            return woken

    listing = remote.RemoteTree._list

    async def late_end(self: remote.RemoteTree) -> None:
        await listing(self)
        await asyncio.sleep(0.3)  # (every page added: the listing is not over yet)

    root = tmp_path / "served"
    shutil.copytree(store, root / BUCKET / "store")
    monkeypatch.setattr(remote, "LISTING_POLL", 30.0)
    monkeypatch.setattr(remote.RemoteTree, "_list", late_end)
    with LatencyProxy(serve=str(root), delay=0.0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        tree = remote.RemoteTree(f"s3://{BUCKET}/store", in_flight=4)
        tree._page_added = event = Counting()
        mirror = tmp_path / "mirror"
        mirror.mkdir()
        try:
            assert tree.mirror_while_listed(mirror) is None
        finally:
            tree.close()
    assert event.ran_out == 0
    assert tree._listing.done() and tree.files
    assert all((mirror / rel).exists() or rel.endswith(".safetensors") for rel in tree.files)


def test_a_scan_given_up_lists_no_further(
    s3: tuple[str, Served], store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a tree whose listing is still arriving (pages of 3 keys, 50 ms a request)
    cancels the listing: its later pages are not asked for."""
    from pyaudit import remote
    from pyaudit.testing import static_s3
    from pyaudit.testing.proxy import LatencyProxy

    root = tmp_path / "served"
    shutil.copytree(store, root / BUCKET / "store")
    monkeypatch.setattr(static_s3, "MAX_KEYS", 3)
    objects = sum(1 for p in store.rglob("*") if p.is_file())
    with LatencyProxy(serve=str(root), delay=0.05) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        tree = remote.RemoteTree(f"s3://{BUCKET}/store", in_flight=4)
        tree.close()
        assert tree._listing.cancelled()
        assert tree.listed() is not None  # (said to be cut short, were it scanned)
        assert proxy.stats.kinds["get-list"] < objects // 3
        # Nothing left running or waiting: requests in flight cancelled, queued ones
        # dropped, every future answered (an error), none submitted later left pending.
        assert not tree.client._tasks
        asked = [*tree.headers.values(), *tree.indexes.values(), *tree.run_files.values()]
        assert asked and all(f.done() for f in asked)
        late = tree.client.submit(0, lambda: tree.client.whole(tree.key("config.json"), 10))
        assert isinstance(late.result(10), OSError)


def test_listing_cut_short_is_a_finding(
    s3: tuple[str, Served], store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listing whose later pages fail on every try: the scan ends, the root says it could
    not be listed past what was, and the checkpoints listed by then are audited."""
    from pyaudit import remote
    from pyaudit.testing import static_s3
    from pyaudit.testing.proxy import LatencyProxy

    root = tmp_path / "served"
    shutil.copytree(store, root / BUCKET / "store")
    monkeypatch.setattr(static_s3, "MAX_KEYS", 7)
    monkeypatch.setattr(remote, "BACKOFF", 0.01)

    def faults(method: str, path: str, n: int) -> str | None:
        return "error" if path == f"/{BUCKET}" and n > 1 else None  # pages after the first

    with LatencyProxy(serve=str(root), faults=faults) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        status, text = _scan_json(f"s3://{BUCKET}/store", capsys)
        assert proxy.stats.faults["error"] == remote.ATTEMPTS
    doc = json.loads(text)
    assert status == 1
    first = doc["checkpoints"][0]
    assert first["path"] == "ROOT" and first["status"] == "fail"
    (finding,) = first["findings"]
    assert finding["code"] == "unreadable"
    assert "cannot be listed past 7 files" in finding["message"]
    assert "InternalError" in finding["message"]
    listed = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())[:7]
    assert len(doc["checkpoints"]) > 1
    for c in doc["checkpoints"][1:]:
        assert any(rel.startswith(c["path"] + "/") for rel in listed), c["path"]


def test_proxy_environment_read_once_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP(S)_PROXY and NO_PROXY are honoured (the session no longer trusts the environment
    on every request: it is asked once a host)."""
    from pyaudit.remote import _S3Ranges

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "skip.example")
    ranges = _S3Ranges(fs=None, in_flight=4)
    assert ranges._proxy("http://bucket.s3.example/k?X-Amz=1") == "http://proxy.example:3128"
    assert ranges._proxy("http://skip.example/k") is None
    monkeypatch.setenv("HTTP_PROXY", "http://other.example:1")  # looked up once: kept
    assert ranges._proxy("http://bucket.s3.example/other") == "http://proxy.example:3128"


def test_no_proxy_variable_no_proxy_and_no_urllib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a ``*_proxy`` variable nothing goes through a proxy, decided without importing
    urllib.request; a lower-case one is read as urllib reads it."""
    from pyaudit.remote import _S3Ranges

    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    code = ("import sys; from pyaudit.remote import _S3Ranges; "
            "print(_S3Ranges(None, 4)._proxy('https://b.s3.example/k'), "
            "'urllib.request' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["None", "False"]
    monkeypatch.setenv("https_proxy", "http://lower.example:8080")
    assert _S3Ranges(fs=None, in_flight=4)._proxy("https://b.s3.example/k") == (
        "http://lower.example:8080")


def _count_presigned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The operations botocore's client is asked to presign from here on, in order (the
    GETs sent by the scan's own process, not a fetching one: see test_fetching_process_*)."""
    from pyaudit import remote

    monkeypatch.setattr(remote, "FETCHER", False)
    asked: list[str] = []
    presign = remote._S3Ranges._presign

    async def counting(self: Any, bucket: str, operation: str, params: dict[str, Any]) -> str:
        asked.append(operation)
        return await presign(self, bucket, operation, params)

    monkeypatch.setattr(remote._S3Ranges, "_presign", counting)
    return asked


def test_urls_signed_by_the_learnt_presigner(
    s3: tuple[str, Served],
    store: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client presigns one GET URL a bucket (and each listing page); the other GETs are
    signed by the Presigner learnt from it, and the report is the local one. With the client's
    URL not reproduced, the client presigns every URL and nothing else changes."""
    asked = _count_presigned(monkeypatch)
    _, served = s3
    url = f"s3://{BUCKET}/store"
    _, local = _scan_json(str(store), capsys)
    served.clear()
    _, learnt = _scan_json(url, capsys)
    gets = sum(len(r) for r in served.gets.values())
    assert learnt == local
    assert gets >= 20 and asked.count("get_object") == 1, (gets, asked.count("get_object"))
    assert asked.count("list_objects_v2") == served.lists == 1

    monkeypatch.setattr("pyaudit.s3presign.learn", lambda *a: None)
    asked.clear()
    served.clear()
    _, unlearnt = _scan_json(url, capsys)
    assert unlearnt == local
    assert asked.count("get_object") == sum(len(r) for r in served.gets.values()) == gets


def test_start_listing_returns_once_the_first_request_is_out(
    s3: tuple[str, Served], store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start_listing() waits until the listing's first request is about to go out (the
    client made, the page presigned), not for its answer: the CLI's own imports then
    overlap that round trip. A listing that fails sets the same signal (no wait in vain)."""
    from pyaudit import remote
    from pyaudit.testing.proxy import LatencyProxy

    root = tmp_path / "served"
    shutil.copytree(store, root / BUCKET / "store")
    monkeypatch.setattr(remote, "FIRST_ASK_WAIT", 60.0)  # (the signal, not the bound, tested)
    with LatencyProxy(serve=str(root), delay=1.0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        for url in (f"s3://{BUCKET}/store", "s3://no-such-bucket/store"):
            remote.start_listing([url])
            tree = remote._LISTED[url]
            try:
                assert tree.client.asked.is_set()
                assert not tree._first.done()  # its answer is 1 s away
                if url.startswith("s3://no-such"):
                    with pytest.raises(remote.RemoteError, match="no-such-bucket"):
                        remote.prepare([url])
                else:
                    remote.prepare([url])
                    assert tree._first.done()
            finally:
                remote.discard([url])


class _DriverHttpError(Exception):
    """What gcsfs raises for an HTTP error (its HttpError: the status as ``code``)."""

    def __init__(self, code: object) -> None:
        super().__init__(f"HTTP {code}")
        self.code = code


@pytest.mark.parametrize(
    ("error", "again"),
    [
        (_DriverHttpError(403), False),  # gcsfs' 403: asking again will not help
        (_DriverHttpError(404), False),
        (_DriverHttpError(429), True),  # throttled
        (_DriverHttpError(408), True),
        (_DriverHttpError(503), True),
        (_DriverHttpError("403"), True),  # not a status: unknown, asked again (bounded)
        (PermissionError("denied"), False),
        (ConnectionResetError("dropped"), True),
        (TimeoutError(), True),
        (type("NoCredentialsError", (Exception,), {})("Unable to locate credentials"), False),
        (type("NoRegionError", (Exception,), {})("You must specify a region."), False),
    ],
)
def test_which_errors_are_asked_again(error: BaseException, again: bool) -> None:
    from pyaudit import remote

    assert remote._transient(error) is again


# --- s3:// without s3fs' import (pyaudit.s3direct) -------------------------------------------


def test_s3_scan_imports_neither_s3fs_nor_aiohttp(s3: tuple[str, Served], store: Path) -> None:
    """With nothing configuring s3fs, a scan presigns by botocore's own client and reads by
    pyaudit.httpget: s3fs, aiobotocore, aiohttp and fsspec are never imported (their
    import was ~0.26 s of CPU before the first request), and the report is the local one."""
    code = (
        "import json, sys\n"
        "from pyaudit.cli import main\n"
        f"rc = main(['scan', '--json', 's3://{BUCKET}/store/qwen3'])\n"
        "names = ('s3fs', 'aiobotocore', 'aiohttp', 'fsspec')\n"
        "print(json.dumps([rc, [n for n in names if n in sys.modules]]), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSSPEC_")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    rc, imported = json.loads(done.stderr.strip().splitlines()[-1])
    local = subprocess.run(
        [sys.executable, "-m", "pyaudit", "scan", "--json", str(store / "qwen3")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert (rc, imported) == (local.returncode, [])
    doc, want = json.loads(done.stdout), json.loads(local.stdout)
    assert [c["status"] for c in doc["checkpoints"]] == [c["status"] for c in want["checkpoints"]]
    assert doc["summary"]["remote"]["requests"] > 0


def test_fsspec_configuration_is_honoured_through_s3fs(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An endpoint given to s3fs by fsspec's configuration (FSSPEC_S3_ENDPOINT_URL) is what
    the scan uses: botocore's own setting points nowhere, and the report is the local one."""
    endpoint, _ = s3
    local = _scan_json(str(store / "qwen3"), capsys)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # (nothing listens there)
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", endpoint)
    import fsspec.config  # type: ignore[import-untyped]

    monkeypatch.setattr(fsspec.config, "conf", {"s3": {"endpoint_url": endpoint}})
    assert _scan_json(f"s3://{BUCKET}/store/qwen3", capsys) == local


def test_which_urls_go_without_s3fs(tmp_path: Path) -> None:
    from pyaudit import s3direct

    pytest.importorskip("s3fs")
    home = {"HOME": str(tmp_path)}  # (no fsspec configuration directory there)
    assert s3direct.applies("s3://bucket/prefix", home)
    assert s3direct.applies("s3a://bucket", home)
    assert not s3direct.applies("gs://bucket/prefix", home)
    assert not s3direct.applies("s3://bucket", {**home, "FSSPEC_S3_ANON": "true"})
    assert not s3direct.applies("s3://bucket", {**home, "FSSPEC_S3": '{"anon": true}'})
    conf = tmp_path / "conf"
    conf.mkdir()
    assert s3direct.applies("s3://bucket", {**home, "FSSPEC_CONFIG_DIR": str(conf)})
    (conf / "s3.json").write_text('{"s3": {"anon": true}}')
    assert not s3direct.applies("s3://bucket", {**home, "FSSPEC_CONFIG_DIR": str(conf)})
    # The directory fsspec reads by default is the one looked at.
    code = ("import os, fsspec.config; print(fsspec.config.conf_dir == "
            "os.path.join(os.path.expanduser('~'), '.config', 'fsspec'))")
    env = {k: v for k, v in os.environ.items() if k != "FSSPEC_CONFIG_DIR"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.stdout.strip() == "True", done.stderr


_TIMED = ("Signature", "Expires", "X-Amz-Date", "X-Amz-Signature", "X-Amz-Credential")


def _untimed(url: str) -> tuple[str, list[tuple[str, str]]]:
    """A presigned URL without what depends on the clock (its time, and so its signature)."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in _TIMED]
    return f"{parts.scheme}://{parts.netloc}{parts.path}", sorted(query)


@pytest.mark.parametrize(
    "env",
    [
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "us-east-1"},
        {"AWS_DEFAULT_REGION": "eu-west-1"},
        {"AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "session-token"},
        {"AWS_ENDPOINT_URL_S3": "https://minio.example:9000", "AWS_REGION": "ap-south-1"},
    ],
)
def test_direct_urls_are_the_urls_s3fs_would_presign(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same endpoint, addressing, region, credentials and token in botocore's client as
    made here and in s3fs' (the clock aside), for the settings users give by environment."""
    pytest.importorskip("s3fs")
    import asyncio

    import fsspec.core

    from pyaudit import s3direct

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for k, v in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
                 "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                 "AWS_SHARED_CREDENTIALS_FILE": os.devnull, **env}.items():
        monkeypatch.setenv(k, v)
    params = {"Bucket": "my-bucket", "Key": "run/checkpoint-1/model.safetensors"}
    direct = s3direct.DirectS3("s3://my-bucket/run", 8)
    try:
        client = asyncio.run_coroutine_threadsafe(direct.get_s3("my-bucket"), direct.loop).result()
        ours = [client.generate_presigned_url(op, Params=p, ExpiresIn=3600) for op, p in
                (("get_object", params), ("list_objects_v2", {"Bucket": "my-bucket"}))]
    finally:
        direct.shutdown()

    async def theirs() -> list[str]:
        fs, _ = fsspec.core.url_to_fs("s3://my-bucket/run", asynchronous=True,
                                      skip_instance_cache=True)
        s3 = await fs.set_session()
        try:
            return [await s3.generate_presigned_url(op, Params=p, ExpiresIn=3600) for op, p in
                    (("get_object", params), ("list_objects_v2", {"Bucket": "my-bucket"}))]
        finally:
            await fs._s3creator.__aexit__(None, None, None)

    expected = asyncio.run(theirs())
    assert [_untimed(u) for u in ours] == [_untimed(u) for u in expected]


# --- the shape of botocore's URLs, kept for the next scan (pyaudit.s3direct) -----------------


_SCAN_AND_SAY = (
    "import json, sys\n"
    "from pyaudit.cli import main\n"
    "rc = main(['scan', '--json', sys.argv[1]])\n"
    "print(json.dumps([rc, 'botocore' in sys.modules]), file=sys.stderr)\n"
)


def _scan_and_say(url: str, env: dict[str, str]) -> tuple[int, bool, dict[str, Any]]:
    """(exit status, whether botocore was imported, the report less its times) of a scan
    in a fresh process."""
    done = subprocess.run([sys.executable, "-c", _SCAN_AND_SAY, url], capture_output=True,
                          text=True, env=env, timeout=120)
    rc, imported = json.loads(done.stderr.strip().splitlines()[-1])
    doc = json.loads(done.stdout)
    doc["summary"].pop("seconds")
    doc["summary"].pop("remote")
    return rc, imported, doc


def test_the_next_scan_signs_without_botocore(
    s3: tuple[str, Served], store: Path, own_cache: Path
) -> None:
    """A scan whose credentials are the environment's keeps the shape of botocore's URLs
    for the bucket, with no credential in it; the next scan in that environment signs with
    it, never imports botocore (~0.19 s of CPU before the first request) and reports the
    same. Another region is another environment: botocore again."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSSPEC_")}
    url = f"s3://{BUCKET}/store/qwen3"
    first = _scan_and_say(url, env)
    kept = list((own_cache / "s3").glob("*.json"))
    assert first[1] is True and len(kept) == 1
    text = kept[0].read_text()
    assert env["AWS_SECRET_ACCESS_KEY"] not in text and '"kind": "v2"' in text
    second = _scan_and_say(url, env)
    assert second == (first[0], False, first[2])
    elsewhere = _scan_and_say(url, {**env, "AWS_DEFAULT_REGION": "eu-west-1"})
    assert elsewhere[1] is True and elsewhere[2] == first[2]
    assert len(list((own_cache / "s3").glob("*.json"))) == 2


def test_a_refused_shape_gives_way_to_botocore(
    s3: tuple[str, Served], store: Path, own_cache: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the store refuses (403) the URLs the kept shape signs, as S3 would ones of a
    stale shape, the scan asks botocore's client instead and reports what a local scan
    does, and the shape is forgotten (learnt again by the next client made)."""
    import dataclasses

    from pyaudit import firstpage, remote
    from pyaudit.httpwire import Response, get_blocking
    from pyaudit.s3presign import Shape

    local = _scan_json(str(store / "qwen3"), capsys)
    url = f"s3://{BUCKET}/store/qwen3"
    assert _scan_json(url, capsys) == local  # (the shape kept)
    assert len(list((own_cache / "s3").glob("*.json"))) == 1
    list_url, presigner = Shape.list_url, Shape.presigner

    def marked_list(self: Shape, *args: Any) -> str:
        return list_url(self, *args) + "&refuse=1"

    def marked_presigner(self: Shape, *args: Any) -> Any:
        made = presigner(self, *args)
        return dataclasses.replace(made, query=(made.query[0], made.query[1] + "&refuse=1"))

    refused: list[str] = []
    fetch = remote._S3Ranges._fetch

    async def refusing(self: Any, url: str, start: int, end: int | None) -> bytes:
        if url.endswith("&refuse=1"):
            refused.append(url)
            raise PermissionError("AccessDenied: Access Denied")
        return await fetch(self, url, start, end)

    def refusing_early(url: str, *args: Any) -> Response:  # (the first page, pyaudit.firstpage)
        if url.endswith("&refuse=1"):
            refused.append(url)
            return Response(403, "Forbidden", {}, b"<Error><Code>AccessDenied</Code></Error>",
                            True)
        return get_blocking(url, *args)

    monkeypatch.setattr(Shape, "list_url", marked_list)
    monkeypatch.setattr(Shape, "presigner", marked_presigner)
    monkeypatch.setattr(remote._S3Ranges, "_fetch", refusing)
    monkeypatch.setattr(firstpage, "get_blocking", refusing_early)
    asked = _count_presigned(monkeypatch)
    assert _scan_json(url, capsys) == local
    assert len(refused) == 1 and "list-type=2" in refused[0]  # the first request: then botocore
    assert "list_objects_v2" in asked and "get_object" in asked
    # the refused shape forgotten (here not learnt again: its URLs are the marked ones)
    assert list((own_cache / "s3").glob("*.json")) == []
    monkeypatch.undo()
    monkeypatch.setenv("PYAUDIT_CACHE_DIR", str(own_cache))
    assert _scan_json(url, capsys) == local
    assert len(list((own_cache / "s3").glob("*.json"))) == 1  # learnt again


def test_the_shape_s_key_is_the_environment_botocore_reads(tmp_path: Path) -> None:
    """The key of a kept shape: every AWS_ variable (the secret ones by name only), the
    identity of botocore's configuration files and of its installed ``__init__.py``; none
    without credentials in the environment, the only ones a shape signs with (and none
    without botocore)."""
    from pyaudit.s3direct import env_credentials, shape_key

    pytest.importorskip("botocore")

    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-west-1\n")
    env = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s1",
           "AWS_CONFIG_FILE": str(config), "HOME": str(tmp_path)}
    key = shape_key(env)
    assert key is not None and len(key) == 64
    assert shape_key({**env, "AWS_SECRET_ACCESS_KEY": "s2"}) == key  # (read at signing time)
    assert shape_key({**env, "PATH": "/elsewhere"}) == key
    for other in ({"AWS_REGION": "us-west-2"}, {"AWS_ENDPOINT_URL": "http://x:1"},
                  {"AWS_ACCESS_KEY_ID": "AKID2"}, {"AWS_SESSION_TOKEN": "t"},
                  {"AWS_PROFILE": "p"}, {"AWS_CONFIG_FILE": os.devnull}):
        assert shape_key({**env, **other}) != key, other
    config.write_text("[default]\nregion = eu-west-2\n")
    assert shape_key(env) != key
    assert shape_key({k: v for k, v in env.items() if k != "AWS_SECRET_ACCESS_KEY"}) is None
    # botocore by the identity of the file an import loads: another install, another key
    import botocore

    installed = tmp_path / "botocore_init.py"
    installed.write_bytes(Path(botocore.__file__).read_bytes())
    assert shape_key(env) == shape_key(env, botocore.__file__)
    assert shape_key(env, str(installed)) not in (key, None)
    before = shape_key(env, str(installed))
    installed.write_bytes(installed.read_bytes() + b"# upgraded\n")
    assert shape_key(env, str(installed)) != before
    assert shape_key({**env, "AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z"}) is None
    creds = env_credentials({**env, "AWS_SECURITY_TOKEN": "old"})
    assert creds is not None and creds.token == "old"
    assert env_credentials({**env, "AWS_SESSION_TOKEN": "new", "AWS_SECURITY_TOKEN": "old"}
                           ).token == "new"  # type: ignore[union-attr]


# --- small files of one content read once ---------------------------------------------------


def test_run_files_of_one_content_are_read_once(
    s3: tuple[str, Served], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checkpoints of one run hold the same config.json: the listing's ETag (the MD5 of the
    bytes, as moto and S3 give it) and size say so, and it is read once; the report is the
    local one. A config that differs by a byte is read on its own; with the bytes held for
    sharing bounded below one file, every file is read."""
    from pyaudit import remote

    _, served = s3
    out = tmp_path / "run"
    qwen3 = _config("Qwen3-4B_qwen3")
    tensors = manifest_tensors(qwen3)
    for step in (100, 200, 300):
        write_checkpoint(out / f"checkpoint-{step}", qwen3, tensors)
    write_checkpoint(out / "checkpoint-400", {**qwen3, "rope_theta": 1e6 + 1}, tensors)
    _upload(out, "shared")
    local = _scan_json(str(out), capsys)
    url = f"s3://{BUCKET}/shared"
    served.clear()
    assert _scan_json(url, capsys) == local
    configs = {k: len(v) for k, v in served.gets.items() if k.endswith("config.json")}
    assert sum(configs.values()) == 2
    assert configs[f"{BUCKET}/shared/checkpoint-400/config.json"] == 1
    assert TRANSFER[url]["shared"] == 2
    assert TRANSFER[url]["requests"] == sum(len(r) for r in served.gets.values()) + served.lists

    monkeypatch.setattr(remote, "SHARED_BYTES", 10)
    served.clear()
    assert _scan_json(url, capsys) == local
    assert sum(len(v) for k, v in served.gets.items() if k.endswith("config.json")) == 4
    assert TRANSFER[url]["shared"] == 0


@pytest.mark.parametrize(
    ("etag", "content"),
    [
        ('"9b2cf535f27731c974343645a3985328"', "s3:9b2cf535f27731c974343645a3985328"),
        ('"9B2CF535F27731C974343645A3985328-12"', "s3:9b2cf535f27731c974343645a3985328-12"),
        ("9b2cf535f27731c974343645a3985328", "s3:9b2cf535f27731c974343645a3985328"),
        ('"9b2cf535f27731c974343645a398532"', None),  # 31 digits
        ('"9b2cf535f27731c974343645a398532g"', None),
        ('"9b2cf535f27731c974343645a3985328-x"', None),
        ('"9b2cf535f27731c974343645a3985328-"', None),  # a part count with no digit
        ('"9b2cf535f27731c974343645a3985328-\u00b2"', None),  # a digit only to Unicode
        ('W/"abc"', None),
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_which_etags_name_a_content(etag: object, content: str | None) -> None:
    from pyaudit.remote import _content_id

    assert _content_id(etag) == content


def test_one_timer_guards_every_try(monkeypatch: pytest.MonkeyPatch) -> None:
    """A try that takes TIMEOUT is a TimeoutError (retried, as a stalled request is), one
    that answers in time is its answer; a try cancelled by anything else (the scan given
    up) stays cancelled; nothing is left guarded after."""
    import asyncio
    from types import SimpleNamespace

    from pyaudit import remote

    monkeypatch.setattr(remote, "TIMEOUT", 0.2)
    monkeypatch.setattr(remote, "BACKOFF", 0.01)
    # an async filesystem's loop, as s3fs's is (no driver needed: nothing is fetched)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    client = remote._Client(SimpleNamespace(async_impl=True, loop=loop, protocol="test"), 4)

    def call(make: Any) -> Any:  # (bounded: a guard that never fires fails, not hangs)
        return asyncio.run_coroutine_threadsafe(make(), client.loop).result(10)

    try:
        async def never() -> bytes:
            await asyncio.sleep(3600)
            return b""

        async def soon() -> bytes:
            await asyncio.sleep(0.01)
            return b"ok"

        async def timed(job: Any) -> tuple[str, float]:
            start = asyncio.get_running_loop().time()
            try:
                out = repr(await client._try(job))
            except TimeoutError:
                out = "timeout"
            task = asyncio.current_task()
            assert task is not None
            if hasattr(task, "cancelling"):
                assert task.cancelling() == 0  # (the guard's cancel consumed)
            await asyncio.sleep(0)  # (and the task goes on unhindered)
            return out, asyncio.get_running_loop().time() - start

        out, took = call(lambda: timed(never))
        assert out == "timeout" and 0.2 <= took < 1.0
        assert call(lambda: timed(soon))[0] == "b'ok'"

        async def together() -> list[tuple[str, float]]:
            return list(await asyncio.gather(*(timed(j) for j in (never, soon, never))))

        assert [o for o, _ in call(together)] == ["timeout", "b'ok'", "timeout"]

        tries = iter([never, never, soon])
        answer = call(lambda: client._retrying("x", lambda: next(tries)()))
        assert answer == b"ok" and client.transfer.retries == 2

        async def given_up() -> str:
            task = asyncio.ensure_future(client._try(never))
            await asyncio.sleep(0.05)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return "cancelled"
            return "not cancelled"

        assert call(given_up) == "cancelled"
        assert client._tries == {} and client._expired == set()
    finally:
        client.close()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


# --- the fetching process (pyaudit.fetcher) -------------------------------------------------


def _spy_fetchers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every fetching process a scan configures, from here on."""
    from pyaudit.fetcher import Fetcher

    made: list[Any] = []
    configure = Fetcher.configure

    def spying(self: Any, *args: Any) -> None:
        made.append(self)
        configure(self, *args)

    monkeypatch.setattr(Fetcher, "configure", spying)
    return made


def test_fetching_process_sends_the_gets_and_reports_as_the_scans_own(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An s3:// scan's GETs go to a process of their own: the report is the one the scan's
    own client gives (and the local one), the requests and bytes it counts are in the
    summary, and the process has ended once the scan is over."""
    from pyaudit import remote

    _, served = s3
    url = f"s3://{BUCKET}/store"
    _, local = _scan_json(str(store), capsys)
    made = _spy_fetchers(monkeypatch)
    served.clear()
    assert _scan_json(url, capsys) == (1, local)
    in_child = TRANSFER[url]
    gets = sum(len(r) for r in served.gets.values())
    assert len(made) == 1 and made[0].counts is not None
    assert made[0]._proc.poll() == 0
    assert made[0].counts["requests"] == gets > 20
    assert in_child["requests"] == gets + served.lists
    assert in_child["bytes"] == made[0].counts["bytes"] > 0

    monkeypatch.setattr(remote, "FETCHER", False)
    made.clear()
    assert _scan_json(url, capsys) == (1, local)
    assert not made
    here = TRANSFER[url]
    assert abs(here["requests"] - in_child["requests"]) <= 2, (here, in_child)


@pytest.mark.parametrize("when", [0, 3])
def test_fetching_process_that_dies_loses_no_request(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, when: int,
) -> None:
    """A fetching process killed (before its first answer, or after three) leaves its
    requests to the scan's own process, with a warning: the report is the local one, never
    an unreadable file the store served."""
    from pyaudit.fetcher import Fetcher

    url = f"s3://{BUCKET}/store/qwen3"
    local = _scan_json(str(store / "qwen3"), capsys)
    ask = Fetcher.ask
    asked = [0]

    def killing(self: Any, *args: Any) -> Any:
        if asked[0] == when:
            self._proc.kill()
        asked[0] += 1
        return ask(self, *args)

    monkeypatch.setattr(Fetcher, "ask", killing)
    made = _spy_fetchers(monkeypatch)
    with caplog.at_level("WARNING", logger="pyaudit.fetcher"):
        assert _scan_json(url, capsys) == local
    assert asked[0] > when
    assert len(made) == 1 and made[0].counts is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{url}: the fetching process ended (exit status -9): its requests are sent by the "
        "scan's own process"
    ]


def test_fetching_process_that_dies_keeps_the_counts_of_its_answers(
    s3: tuple[str, Served], store: Path,
) -> None:
    """A fetching process killed after answering: the requests and bytes it answered stay
    counted (each answer says the child's counts so far), as the store served them; and
    they are those a close says when the process is not killed. The second process is
    started after the first is closed: before its close waited for its pipes' threads, the
    first's close frame was written into the pipe that took its number (the second's), which
    then ended at once, unasked."""
    from pyaudit import remote
    from pyaudit.fetcher import SETTINGS, Fetcher

    _, served = s3
    url = f"s3://{BUCKET}/store"
    shards = sorted(store.glob("llama/*.safetensors"))
    assert len(shards) == 3
    settings = {name: getattr(remote, name) for name in SETTINGS}
    fell_back: list[str] = []

    def fallback(priority: int, kind: str, path: str, args: tuple[int, ...]) -> Any:
        fell_back.append(path)
        out: concurrent.futures.Future[Any] = concurrent.futures.Future()
        out.set_result(OSError("not sent"))
        return out

    counts = []
    for kill in (True, False):
        served.clear()
        fetcher = Fetcher(url)
        fetcher.configure(8, settings, fallback)
        answers = [
            fetcher.ask(2, "h", f"{BUCKET}/store/llama/{p.name}", p.stat().st_size).result(30)
            for p in shards
        ]
        assert all(isinstance(a, bytes) and a for a in answers), answers
        if kill:
            fetcher._proc.kill()
            assert fetcher._done.wait(30)
        counts.append(fetcher.close())
        assert (fetcher.counts is None) == kill
        assert counts[-1] == {
            "requests": sum(len(r) for r in served.gets.values()),
            "bytes": sum(served.bytes.values()),
            "retries": 0,
        } | ({} if kill else {"listed": 0, "failed": 0, "in_flight": 8, "shared": 0})
        assert counts[-1]["requests"] >= 3
    assert not fell_back
    assert counts[0] == {k: counts[1][k] for k in counts[0]}


def test_fetching_process_that_cannot_start_or_run(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """No interpreter to start (the scan's client sends its GETs itself), or one that ends at
    once without a word: the report is the local one."""
    from pyaudit import fetcher

    url = f"s3://{BUCKET}/store/qwen3"
    local = _scan_json(str(store / "qwen3"), capsys)
    monkeypatch.setattr(fetcher.sys, "executable", str(tmp_path / "no-such-python"))
    assert _scan_json(url, capsys) == local
    monkeypatch.setattr(fetcher.sys, "executable", shutil.which("false") or "/bin/false")
    assert _scan_json(url, capsys) == local


def test_many_urls_share_a_bounded_number_of_fetching_processes(
    s3: tuple[str, Served], store: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three s3:// PATHs in one command line (listed at once, scanned in turn): two fetching
    processes, the third URL's GETs sent by the scan's own, and the reports as locally."""
    from pyaudit.fetcher import MAX_PROCESSES

    names = ["qwen3", "llama", "mixtral"]
    assert len(names) > MAX_PROCESSES
    made = _spy_fetchers(monkeypatch)
    local = main(["scan", "--json", *(str(store / n) for n in names)])
    local_doc = json.loads(capsys.readouterr().out)
    urls = [f"s3://{BUCKET}/store/{n}" for n in names]
    status = main(["scan", "--json", *urls])
    doc = json.loads(capsys.readouterr().out)
    assert status == local
    assert [c["status"] for c in doc["checkpoints"]] == [
        c["status"] for c in local_doc["checkpoints"]]
    assert [c["findings"] for c in doc["checkpoints"]] == [
        c["findings"] for c in local_doc["checkpoints"]]
    assert sorted(f.url for f in made) == sorted(urls[:MAX_PROCESSES])
    assert all(f.counts is not None and f.counts["requests"] > 0 for f in made)


# --- the listing's pages ----------------------------------------------------------------


def test_the_next_listing_page_is_asked_before_the_one_in_hand_is_given_on() -> None:
    """Each next page is asked as soon as its token is known, before the page in hand is
    given to the listing (which asks for its files meanwhile); an error of a page is
    raised after the pages before it; a listing given up cancels the page in flight and
    asks no further."""
    import asyncio

    from pyaudit.remote import _pages_ahead

    events: list[str] = []
    cancelled: list[str | None] = []

    async def fetch(token: str | None) -> tuple[list[Any], str | None]:
        events.append(f"ask {token}")
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.append(token)
            raise
        if token == "boom":
            raise OSError("page 3 failed")
        following = {None: "p2", "p2": "boom"}[token]
        return [(f"key of {token}", 1, None)], following

    async def take(pages: int) -> None:
        listing = _pages_ahead(fetch)
        try:
            async for page in listing:
                events.append(f"got {page[0][0]}")
                time.sleep(0.02)  # (the listing's work on the page: the loop's thread busy)
                pages -= 1
                if not pages:
                    break
        finally:
            await listing.aclose()

    with pytest.raises(OSError, match="page 3 failed"):
        asyncio.run(take(5))
    assert events == ["ask None", "ask p2", "got key of None", "ask boom", "got key of p2"]

    events.clear()
    asyncio.run(take(1))
    assert events == ["ask None", "ask p2", "got key of None"]
    assert cancelled == ["p2"]

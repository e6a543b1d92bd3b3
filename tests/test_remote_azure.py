"""`pyaudit scan az://...` through adlfs and the Azure SDK against pyaudit.testing.fake_azure.

No fake of Azure Blob Storage installs from PyPI (Azurite is an npm package), so the service is
faked here: the few Blob REST operations adlfs asks when a sweep lists a container and reads
byte ranges (List Blobs, Get Blob with a range, Get Blob Properties, Get Container
Properties), answered from a directory as the service answers, and parsed by the real SDK
(azure-storage-blob) inside the real adlfs. The scan runs in a child process configured
only through adlfs' own environment (``AZURE_STORAGE_CONNECTION_STRING``).

What the fake does not do as the service does: it checks no SharedKey signature (it records
that one was sent, by which account) and serves plain HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from remote_store import config, local_json, remote_json, span, write_store

from pyaudit.testing.stores import manifest_tensors, write_checkpoint

CONTAINER = "pyaudit-azure-test"
PAGE = 7  # blobs a List Blobs page (the service: up to 5,000)

pytest.importorskip("adlfs", reason="the az:// tests need adlfs (pip install '.[azure]')")
from pyaudit.testing.fake_azure import KEY, FakeAzure  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The S3 tests' store, and a sharded checkpoint whose index names a shard not there."""
    root = tmp_path_factory.mktemp("azure")
    out = root / CONTAINER / "store"
    write_store(out)
    qwen3 = config("Qwen3-4B_qwen3")
    paths = write_checkpoint(out / "lost-shard", qwen3, manifest_tensors(qwen3), shards=3,
                             sparse=False)
    paths[1].unlink()
    return out


@pytest.fixture
def azure(store: Path) -> Iterator[FakeAzure]:
    with FakeAzure(store.parent.parent, page_size=PAGE) as fake:
        yield fake


def _env(connection_string: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "FSSPEC_"))}
    env["AZURE_STORAGE_CONNECTION_STRING"] = connection_string
    return env


def _az_scan(
    connection_string: str, *args: str, pages: bool = True, retries: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`pyaudit scan ARGS` in a child process whose environment points adlfs at the fake
    (``pages`` False: listed by adlfs' own _find, in one piece; ``retries``: pyaudit's
    attempts a request, with no backoff)."""
    code = f"import pyaudit.remote\npyaudit.remote.AZURE_PAGES = {pages!r}\n"
    if retries is not None:
        code += f"pyaudit.remote.ATTEMPTS = {retries}\npyaudit.remote.BACKOFF = 0.0\n"
    code += (
        "from pyaudit.cli import main\n"
        f"raise SystemExit(main(['scan', *{list(args)!r}]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env=_env(connection_string), timeout=300,
    )








def test_azure_same_report_as_local_header_bytes_only(
    azure: FakeAzure, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report of a local scan of the same tree; broken checkpoints FAIL with the local
    codes; every .safetensors read by one or two range requests, never the tensor data
    behind its header; the container listed page by page, each page one request;
    ``summary.remote`` counts what the service was asked and sent; the account key signs
    every request and is never shown."""
    local_status, local = local_json(store, capsys)
    url = f"az://{CONTAINER}/store"
    done = _az_scan(azure.connection_string, "--json", url)
    remote_status, remote, transfer = remote_json(done, url)
    assert remote == local
    assert remote_status == local_status == 1
    by_path = {c["path"]: c for c in json.loads(remote)["checkpoints"]}
    assert len(by_path) == 12 and ".cache/tmp" not in by_path
    codes = {p: {f["code"] for f in c["findings"]} for p, c in by_path.items()}
    assert "shard-truncated" in codes["copied/qwen3-tiny"]
    assert "shard-missing" in codes["lost-shard"]
    assert "lfs-pointer" in codes["broken/lfs"]
    assert by_path["qwen3/checkpoint-100"]["status"] == "pass"

    files = {
        f"{CONTAINER}/store/{p.relative_to(store).as_posix()}": p
        for p in store.rglob("*.safetensors")
        if not p.relative_to(store).as_posix().startswith(".")
    }
    for key, path in files.items():
        ranges = azure.ranges[key]
        assert 1 <= len(ranges) <= 2, (key, ranges)
        assert all(r is not None and r.startswith("bytes=") for r in ranges), (key, ranges)
        assert azure.sent[key] <= max(span(path), 4096) + 4096, (key, azure.sent[key])
    total = sum(p.stat().st_size for p in files.values())
    assert sum(azure.sent[k] for k in files) < total / 10
    others = {k for k in azure.sent if k not in files}
    assert all(k.endswith((".json", ".yaml", ".bin", "_model_states.pt")) for k in others), others
    objects = sum(1 for p in store.rglob("*") if p.is_file())
    assert azure.kinds["list"] == -(-objects // PAGE)  # one listing of the tree, paged
    assert transfer["listed"] == objects
    assert transfer["bytes"] == azure.file_bytes
    assert transfer["requests"] == sum(azure.kinds.values())  # each page counted
    assert transfer["failed"] == 0 and transfer["retries"] == 0
    assert transfer["in_flight"] == 100  # the SDK's connection pool, not the default 128
    assert not azure.unknown
    assert azure.auth == {"SharedKey devstoreaccount1"}
    assert KEY not in done.stdout + done.stderr


def test_azure_listed_by_find_same_report_as_local(
    azure: FakeAzure, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Listed by adlfs' _find (every page before it returns), the report is the same."""
    local_status, local = local_json(store, capsys)
    url = f"az://{CONTAINER}/store"
    done = _az_scan(azure.connection_string, "--json", url, pages=False)
    remote_status, remote, transfer = remote_json(done, url)
    assert (remote_status, remote) == (local_status, local)
    assert azure.kinds["list"] > 1 and transfer["failed"] == 0


def test_azure_single_file_url(
    azure: FakeAzure, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rel = "copied/qwen3-tiny/model-00002-of-00002.safetensors"
    local_status, local = local_json(store / rel, capsys)
    url = f"az://{CONTAINER}/store/{rel}"
    remote_status, remote, _ = remote_json(_az_scan(azure.connection_string, "--json", url),
                                            url)
    assert (remote_status, remote) == (local_status, local) and local_status == 1
    assert "shard-truncated" in remote


@pytest.mark.parametrize("pages", [True, False])
@pytest.mark.parametrize(
    "url", [f"az://{CONTAINER}/no-such-prefix", "az://pyaudit-no-such-container/store"]
)
def test_azure_missing_container_or_prefix_is_a_usage_error(
    azure: FakeAzure, url: str, pages: bool
) -> None:
    done = _az_scan(azure.connection_string, url, pages=pages)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"pyaudit scan: {url}: no such file or directory"
    ], done.stderr


def test_azure_throttled_and_dropped_requests_are_retried_by_pyaudit_alone(
    azure: FakeAzure, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Behind a proxy that answers the first listing page's and config.json's first request
    with a 503 and drops a shard's first connection: the report is the local one. The two
    503s are retried by pyaudit (counted), not by the SDK, whose own retries (15 s before
    the first) are off; no request is asked a third time."""
    from pyaudit.testing.proxy import LatencyProxy

    local_status, local = local_json(store / "llama", capsys)
    shard = next(p for p in sorted((store / "llama").iterdir()) if p.suffix == ".safetensors")
    listing = f"/devstoreaccount1/{CONTAINER}"  # (the proxy is given paths without queries)
    seen: dict[tuple[str, str], int] = {}

    def faults(method: str, path: str, n: int) -> str | None:
        seen[(method, path)] = n
        if n == 1 and (path == listing or path.endswith("llama/config.json")):
            return "slowdown"
        if n == 1 and path.endswith(f"llama/{shard.name}"):
            return "drop"
        return None

    url = f"az://{CONTAINER}/store/llama"
    with LatencyProxy(azure.url.rsplit("/", 1)[0], faults=faults) as proxy:
        via_proxy = azure.connection_string.replace(azure.url.rsplit("/", 1)[0], proxy.url)
        done = _az_scan(via_proxy, "--json", url)
        injected = dict(proxy.stats.faults)
    status, remote, transfer = remote_json(done, url)
    assert (status, remote) == (local_status, local)
    assert injected == {"slowdown": 2, "drop": 1}
    # (a dropped keep-alive connection may be asked again by aiohttp itself, uncounted)
    assert 2 <= transfer["retries"] <= 3 and transfer["failed"] == 0, (seen, transfer)
    assert seen[("GET", listing)] == 2 and max(seen.values()) == 2, seen


def test_azure_a_blob_that_stays_unreadable_is_a_finding(
    azure: FakeAzure, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shard whose every read is throttled: after pyaudit's bounded tries, an
    ``unreadable`` finding for its checkpoint, which fails; the others as scanned locally."""
    from pyaudit.testing.proxy import LatencyProxy

    shard = next(p for p in sorted((store / "llama").iterdir()) if p.suffix == ".safetensors")

    def faults(method: str, path: str, n: int) -> str | None:
        return "slowdown" if path.endswith(f"llama/{shard.name}") else None

    url = f"az://{CONTAINER}/store"
    with LatencyProxy(azure.url.rsplit("/", 1)[0], faults=faults) as proxy:
        via_proxy = azure.connection_string.replace(azure.url.rsplit("/", 1)[0], proxy.url)
        done = _az_scan(via_proxy, "--json", url, retries=3)
        asked = proxy.stats.faults["slowdown"]
    status, _, transfer = remote_json(done, url)
    doc = json.loads(done.stdout)
    by_path = {c["path"]: c for c in doc["checkpoints"]}
    llama = by_path["llama"]
    assert llama["status"] == "fail"
    assert [f["code"] for f in llama["findings"] if f["code"] == "unreadable"] == ["unreadable"]
    assert asked == 3 and transfer["failed"] == 1  # 3 tries, none of them the SDK's
    assert by_path["qwen3/checkpoint-100"]["status"] == "pass"
    assert status == 1

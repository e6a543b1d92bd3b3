"""Remote stores: `pyaudit scan s3://bucket/prefix` (any fsspec URL: gs://, az://, hf://,
memory://, file://; http(s):// for single files).

The scan is one pipeline whose every stage overlaps the others, with a bounded number of
requests in flight (``IN_FLIGHT``, or 8 x ``--jobs``; the filesystem's connection pool is
sized to it) and no stage waiting on a round trip of another:

1. **Listing**, page by page, on the event loop's thread while the scan starts (the CLI
   starts it before importing the audit, and waits for the first page only: a URL that
   cannot be listed is a usage error). S3: a presigned ``ListObjectsV2`` by the range
   GETs' client, read by :mod:`pyaudit.s3listing` (ElementTree where a page is written
   otherwise). GCS: the JSON API's ``objects.list`` by gcsfs' own
   session. Other filesystems: fsspec's ``find``, in one piece. Every small run file a page
   names (config.json, adapter_config.json, args.json, training_args.yaml) is requested as
   the page arrives, ahead of any header: any checkpoint's audit may read any of them (an
   adapter's base model, a run's arguments above it). So are its ``.safetensors`` headers
   and index files, up to a window of files (``WINDOW`` per request in flight, more while
   what they would hold stays under ``AHEAD_BYTES``): the slots are busy from the first
   page on. A run or index file whose content the listing names (S3's ETag, GCS's MD5,
   and its size) as that of one already asked for is given that one's bytes, not asked
   again: the checkpoints of one run share their config.json.
2. **Discovery**, once the listing is complete (a directory's entries are known only
   then): the listing becomes a local mirror of the tree (every directory, every file as a
   sparse placeholder of its listed size but ``.safetensors`` files, whose headers are all
   the audit reads of them: names only) walked by :func:`pyaudit.discover.discover`
   itself, so remote and local stores are classified by the same code.
3. **Headers and index files** not asked for yet, requested in discovery order, a window
   of files ahead of the audit. A header costs one range request of a size learnt from the
   store (the largest span seen of the same file name, plus 1/8), or two when the guess
   falls short (then exactly the rest of the header). S3 GETs go by presigned URL over
   :mod:`pyaudit.httpget`'s kept-alive connections (aiohttp's session where a proxy is
   configured for the endpoint): the client presigns the first URL of a bucket, and
   :mod:`pyaudit.s3presign` learns from it to sign the others with one HMAC each, kept only
   when it writes the client's URL again byte for byte (else the client signs every URL).
   Those GETs run in a process of their own (:mod:`pyaudit.fetcher`: this module's
   :class:`_Client` there), off the audits' GIL. Tensor data is never asked for
   beyond that slack. Sizes come from the listing (no HEAD, no ``info`` a file). Headers
   are validated by :func:`pyaudit.headers.parse_header_bytes`, the validator local files
   go through.
4. **Audit**, by :func:`pyaudit.auditing.pipeline.audit_checkpoint` over the mirror, exactly as
   a local checkpoint, as soon as that checkpoint's own files are in. The run files it
   reads (its config.json, adapter config and weights index; a run's arguments above it;
   an earlier run's or a base model's named in them) are answered from the bytes fetched
   (``fetched``), never from the mirror: it holds run files as placeholders only (their
   names and sizes, for discovery and lookups), and a file written into it is one that
   could not be read (empty), a pickle-era file read whole, or a model card asked for an
   intent finding.

Faults: each request is retried with jittered exponential backoff (``ATTEMPTS`` tries,
``TIMEOUT`` seconds each) when it failed for a reason that may pass (throttling such as
S3's 503 SlowDown, a dropped connection, a timeout); an object that still cannot be read
is an ``unreadable`` finding of its checkpoint. The filesystem's own retries are turned off
where they can be (S3), so that the bound is this one.

``s3://`` goes without s3fs where nothing configures s3fs (:mod:`pyaudit.s3direct`:
botocore's own client presigns); fsspec's configuration for s3 sends it through s3fs.

Credentials and endpoints come from each filesystem's own environment (for S3:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE`` ...; ``HF_TOKEN`` for hf://;
fsspec's ``FSSPEC_<PROTOCOL>_...`` options); nothing of them is printed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import functools
import heapq
import inspect
import logging
import os
import posixpath
import random
import re
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pyaudit._core import hash_bytes, make_directories, make_placeholders, remove_tree
from pyaudit.discover import (
    ADAPTER_CONFIG,
    BIN_INDEX_SUFFIX,
    CONFIG,
    INDEX_SUFFIX,
    CheckpointDir,
    Listing,
    discover,
    listing_of,
)
from pyaudit.discover import is_url as is_url
from pyaudit.fetcher import CANCELLED
from pyaudit.findings import finding, status_of
from pyaudit.firstpage import MAX_LISTING_BYTES, FirstPage
from pyaudit.headers import Header, header_span, parse_header_bytes
from pyaudit.httpwire import names_a_proxy
from pyaudit.s3direct import DirectS3, s3_config_kwargs
from pyaudit.s3direct import applies as s3direct_applies
from pyaudit.s3listing import read_plain_page
from pyaudit.s3presign import PRESIGN_EXPIRES, Credentials, Presigner, Shape, list_params
from pyaudit.units import plural

# The audit's modules are imported once the listing is under way (start(), then the
# imports, overlap the first round trips): ~0.1 s of a remote scan's start.
if TYPE_CHECKING:
    from pyaudit.auditing.cache import AuditCache
    from pyaudit.auditing.results import AuditOptions, CheckpointReport
    from pyaudit.expected import Expected
    from pyaudit.fetcher import Fetcher
    from pyaudit.httpget import HttpGetter

log = logging.getLogger("pyaudit.remote")

IN_FLIGHT = 128  # requests in flight by default (--jobs N: 8 x N); see benchmarks/README.md
FIRST_GUESS = 4 * 1024  # bytes first asked of a .safetensors whose kind of header is not seen yet
GUESS_MAX = 64 * 1024  # a new file name's first read is at most this (+1/8), whatever was seen
MAX_HEADER_BYTES = 100 * 1024 * 1024  # never fetched beyond this (the validator's own limit)
RUN_WHOLE_MAX = 16 * 1024 * 1024  # a run or index file larger than this is not read
# (pyaudit.runs.PREFETCH_BYTES, what a local sweep digests; not imported: see above)
RUN_ARGS_FILES = ("args.json", "training_args.yaml")  # a run's arguments (ms-swift, LLaMA-Factory)
GLOBAL_RUN_FILES = (CONFIG, ADAPTER_CONFIG, *RUN_ARGS_FILES)
ATTEMPTS = 5  # tries of one request
BACKOFF = 0.2  # seconds before the first retry; doubles, jittered, up to BACKOFF_MAX
BACKOFF_MAX = 5.0
TIMEOUT = 60.0  # seconds one try may take
FIRST_ASK_WAIT = 0.5  # seconds start_listing waits for a listing's first request to go out
WINDOW = 8  # header files requested ahead of the audit, per request in flight
AHEAD_BYTES = 64 * 1024 * 1024  # ... and while a listing arrives, more up to this held
AHEAD_FILES = 16384  # ... and this many files
# Small files of one content (S3's ETag and size) are read once: the bytes of the files
# asked for are held for the later ones, the oldest let go beyond this much.
SHARED_BYTES = 64 * 1024 * 1024
INSTALL_HINT = "pip install 'pyaudit[remote]'"
# A driver that is missing, by protocol (fsspec is there: it said which driver it lacks).
DRIVER_HINTS = {
    **dict.fromkeys(("gs", "gcs"), "pip install 'pyaudit[gcs]'"),
    **dict.fromkeys(("az", "abfs", "abfss", "adl"), "pip install 'pyaudit[azure]'"),
}
S3_DIRECT = True  # S3 range GETs by presigned URL over aiohttp (False: s3fs's _cat_file)
# Those GETs in a child process, off the scan's GIL (pyaudit.fetcher; False: on the scan's
# event loop)
FETCHER = True
# seconds a Presigner learnt from the client's URL is used before it is learnt again (the
# client's URLs live 3,600 s; learning again also picks up refreshed credentials)
PRESIGNER_LIFE = 300.0
AZURE_PROTOCOLS = ("az", "abfs", "abfss")  # adlfs' AzureBlobFileSystem
S3_PAGES = True  # S3: list page by page (False: fsspec's generic _find, as adlfs is)
# GCS: list page by page, the JSON API's objects.list by gcsfs' own session (False: its _find,
# which asks for every page before it returns, and is counted as one request)
GCS_PAGES = True
GCS_PAGE = 1000  # objects a GCS listing page (the most the JSON API sends)
# Azure Blob: list page by page, List Blobs by adlfs' own service client (False: its _find,
# which asks for every page before it returns, and is counted as one request)
AZURE_PAGES = True
AZURE_PAGE = 5000  # blobs a List Blobs page (the most the service sends)
# connections the Azure SDK's transport holds (aiohttp's default pool: adlfs passes no other)
AZURE_POOL = 100

GUARD_TICKS = 10  # the tries in flight are looked at every TIMEOUT / this (see _guard_tries)

# Errors that will not pass by asking again.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
              ValueError, TypeError, NotImplementedError)


# A listed object: its path, its size, and what identifies its content where the listing
# says (see _content_id), else None.
Listed = tuple[str, int, "str | None"]
#: One page of a listing asked by its token (None: the first): its files, and the next page's
#: token (None after the last).
PageFetch = Callable[["str | None"], Awaitable[tuple[list[Listed], "str | None"]]]


class RemoteError(Exception):
    """A remote PATH that cannot be scanned; the message is one line for the user."""


class RemoteNotFound(RemoteError, FileNotFoundError):
    """Nothing at that URL."""


class RemoteUnavailable(RemoteError, ImportError):
    """fsspec, or the filesystem's driver (s3fs, gcsfs, adlfs ...), is not installed."""


class RemoteUsage(RemoteError, ValueError):
    """An option remote PATHs cannot honour."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass
class Transfer:
    """What a remote scan asked of the store (``--json`` summary, ``"remote"``)."""

    requests: int = 0  # every request sent, listing pages and retries included
    bytes: int = 0  # object bytes received (listings not counted)
    listed: int = 0  # objects listed
    retries: int = 0
    failed: int = 0  # objects that could not be read after the retries
    in_flight: int = 0  # the bound on requests in flight
    # small files (run and index files) not requested: listed with the content of one that
    # was (the same ETag and size), whose bytes they were given
    shared: int = 0

    def add(self, other: Transfer) -> None:
        for f in dataclasses.fields(self):
            if f.name != "in_flight":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.in_flight = max(self.in_flight, other.in_flight)

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# --- the filesystem -------------------------------------------------------------------------


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return tuple(p) if isinstance(p, (tuple, list)) else (str(p),)


def _filesystem(url: str, in_flight: int) -> tuple[Any, str]:
    if S3_DIRECT and S3_PAGES and s3direct_applies(url):
        return DirectS3(url, in_flight), DirectS3.strip(url)
    try:
        import fsspec.core  # type: ignore[import-untyped]
    except ImportError:
        raise RemoteUnavailable(
            f"{url}: remote PATHs need fsspec (and s3fs for s3://): {INSTALL_HINT}"
        ) from None
    options: dict[str, Any] = {}
    if url.split("://", 1)[0] in ("s3", "s3a"):
        # The pool holds every request in flight, and botocore's and s3fs's retries are off
        # (s3fs' below): ours are the bound (see _Client._retrying).
        import fsspec.config  # type: ignore[import-untyped]

        configured = fsspec.config.conf.get("s3", {}).get("config_kwargs", {})
        options = {"config_kwargs": s3_config_kwargs(in_flight, configured),
                   "skip_instance_cache": True}
    elif url.split("://", 1)[0] in AZURE_PROTOCOLS:
        options = {"skip_instance_cache": True}  # its retry policy is changed below
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as e:
        hint = DRIVER_HINTS.get(url.split("://", 1)[0], INSTALL_HINT)
        raise RemoteUnavailable(f"{url}: {_one_line(e)} ({hint})") from None
    except (ValueError, TypeError) as e:
        raise RemoteError(f"{url}: {_one_line(e)}") from None
    if "s3" in _protocols(fs):
        fs.retries = 1  # this instance only (skip_instance_cache)
    if _is_azure(fs):
        _azure_retries_off(fs)
    path = str(path)
    return fs, path if path in ("", "/") else path.rstrip("/")


def _azure_retries_off(fs: Any) -> None:
    """The Azure SDK's own retries off, for this filesystem's client (and the container and
    blob clients it makes, which share its policies): ours are the bound. Its default,
    ExponentialRetry, waits 15 s before the first retry of a throttled request, 18 s and 24 s
    before the next ones, for each request."""
    config = getattr(getattr(fs, "service_client", None), "_config", None)
    policy = getattr(config, "retry_policy", None)
    for name in ("total_retries", "connect_retries", "read_retries", "status_retries"):
        if isinstance(getattr(policy, name, None), int):
            setattr(policy, name, 0)


def _size(info: dict[str, Any]) -> int:
    size = info.get("size")
    if size is None:
        size = info.get("Size")
    try:
        return max(0, int(size)) if size is not None else 0
    except (TypeError, ValueError):
        return 0


# --- the client: requests in flight, retried, counted ---------------------------------------


def _is_plain_s3(fs: Any) -> bool:
    return "s3" in _protocols(fs) and not getattr(fs, "version_aware", False)


def _is_plain_gcs(fs: Any) -> bool:
    return (
        "gs" in _protocols(fs)
        and callable(getattr(fs, "_call", None))
        and not getattr(fs, "version_aware", False)
    )


def _is_azure(fs: Any) -> bool:
    return bool(set(_protocols(fs)) & set(AZURE_PROTOCOLS))


def _is_plain_azure(fs: Any) -> bool:
    return (
        _is_azure(fs)
        and getattr(fs, "service_client", None) is not None
        and hasattr(fs.service_client, "get_container_client")  # (one client, not a list)
        and not getattr(fs, "version_aware", False)
    )


async def _azure_page(
    fs: Any, container: str, prefix: str, token: str | None
) -> tuple[list[Listed], str | None]:
    """One List Blobs request: (name, size, None) of its blobs (an Azure ETag names a
    write, not a content), and the marker of the next page."""
    from azure.core.exceptions import ResourceNotFoundError  # (adlfs' own dependency)

    async with fs.service_client.get_container_client(container) as client:
        pager = client.list_blobs(
            name_starts_with=prefix or None, results_per_page=AZURE_PAGE
        ).by_page(continuation_token=token)
        items: list[Listed] = []
        try:
            async for page in pager:
                async for blob in page:
                    items.append((f"{container}/{blob.name}", max(0, int(blob.size or 0)), None))
                break  # one page, one request: the next is asked for by its marker
        except ResourceNotFoundError:  # no such container
            raise FileNotFoundError(f"{container}: no such container") from None
        return items, pager.continuation_token or None


class _S3Ranges:
    """Range GETs of S3 objects: a URL presigned by the filesystem's own client (its
    credentials, endpoint, region and addressing), fetched by :mod:`pyaudit.httpget` (a
    connection per request in flight) or, where the environment names a proxy for the
    endpoint, one aiohttp session. The same requests s3fs's ``_cat_file`` sends, without
    the per-request machinery of an aiobotocore call (on loopback moto: 1.8x the requests a
    second at 32 in flight, and 40% of the client's CPU a request), nor aiohttp's (3,000
    GETs at 128 in flight: 0.26-0.35 s of CPU by aiohttp, 0.15 s by httpget)."""

    def __init__(
        self, fs: Any, in_flight: int, first_page: FirstPage | None = None,
        transfer: Transfer | None = None,
    ) -> None:
        self.fs = fs
        self.in_flight = in_flight
        # The listing's first page, asked before the scan's imports (pyaudit.firstpage)
        self.first_page = first_page
        self.transfer = transfer or Transfer()
        self._http: Any = None  # aiohttp, for URLs that go through a proxy
        self._direct: HttpGetter | None = None  # every other URL
        self._proxies: dict[str, str | None] = {}  # scheme://host[:port] -> proxy URL
        # bucket -> (when learnt, what was learnt: None when the client's URL was not
        # reproduced, and then it is asked for every URL until the next try; whether it
        # was made from the kept shape, whose refused URLs send the scan back to botocore)
        self._presigners: dict[str, tuple[float, Presigner | None, bool]] = {}

    def _proxy(self, url: str) -> str | None:
        """The HTTP(S)_PROXY / NO_PROXY answer for ``url``'s host, looked up once per host
        (aiohttp's trust_env looks up the environment and reads ~/.netrc on every request:
        14% of the client's CPU in a sweep; a presigned URL needs no netrc credentials)."""
        cut = url.find("/", url.find("://") + 3)
        key = url[:cut] if cut >= 0 else url  # scheme://host:port, found without parsing
        if key in self._proxies:
            return self._proxies[key]
        if not names_a_proxy(os.environ):
            self._proxies[key] = None
            return None
        import urllib.request  # (~13 ms of imports: http.client, email)
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        proxies = urllib.request.getproxies_environment()
        host = parts.hostname or ""
        # (on Linux proxy_bypass is the environment's NO_PROXY test)
        bypass = bool(proxies.get("no")) and bool(urllib.request.proxy_bypass(host))
        self._proxies[key] = None if bypass else proxies.get(parts.scheme)
        return self._proxies[key]

    @staticmethod
    def _ssl_context() -> Any:
        """botocore's CA bundle setting, where it is given in the environment (else the
        system's, as both clients default to)."""
        import ssl

        bundle = os.environ.get("AWS_CA_BUNDLE")
        return ssl.create_default_context(cafile=bundle) if bundle else None

    def _session(self) -> Any:
        if self._http is None:
            import aiohttp

            context = self._ssl_context()
            connector = aiohttp.TCPConnector(limit=self.in_flight + 4, ssl=context or True)
            self._http = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=False
            )
        return self._http

    def _getter(self) -> HttpGetter:
        if self._direct is None:
            from pyaudit.httpget import HttpGetter

            # (the CA bundle botocore is given, if any, loaded on the first https request)
            self._direct = HttpGetter(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
        return self._direct

    async def client(self, bucket: str) -> Any:
        """The filesystem's client for ``bucket``, made on first use: s3fs' aiobotocore
        client, or botocore's (:class:`~pyaudit.s3direct.DirectS3`)."""
        await self.fs.set_session()
        return await self.fs.get_s3(bucket)

    async def _presign(self, bucket: str, operation: str, params: dict[str, Any]) -> str:
        client = await self.client(bucket)
        params = {**params, **(getattr(self.fs, "req_kw", None) or {})}
        url = client.generate_presigned_url(operation, Params=params, ExpiresIn=PRESIGN_EXPIRES)
        if inspect.isawaitable(url):  # (aiobotocore's; botocore's is plain)
            url = await url
        return str(url)

    async def _fetch(self, url: str, start: int, end: int | None) -> bytes:
        """The body of a GET (bytes ``[start, end)`` by a Range; ``end`` None: all of it, up
        to ``MAX_LISTING_BYTES``); HTTP errors as the exceptions the retries tell apart."""
        headers = {"Range": f"bytes={start}-{end - 1}"} if end is not None else {}
        limit = end - start if end is not None else MAX_LISTING_BYTES
        proxy = self._proxy(url)
        if proxy is None:
            # (an error's body is read up to 4,000 bytes, for its Code and Message)
            resp = await self._getter().get(url, headers, max(limit, 4000))
            status, reason, body = resp.status, resp.reason, resp.body
        else:
            status, reason, body = await self._get_by_proxy(url, headers, proxy, limit)
        return _answer(status, reason, body, start, limit)

    async def _first_page(
        self, bucket: str, prefix: str, kept: tuple[Shape, Credentials], token: str | None
    ) -> bytes | None:
        """The body of ``prefix``'s listing page of ``token`` (None: the first) as
        pyaudit.firstpage asked for it, where that is the request this listing sends (taken
        once); None where it is not, or where it failed before an answer (both requests
        are then counted)."""
        first = self.first_page
        if first is None or not first.matches(bucket, prefix, *kept):
            return None
        page = first.take(token)
        if page is None:
            return None
        loop = asyncio.get_running_loop()
        over: asyncio.Future[None] = loop.create_future()
        page.when_done(functools.partial(loop.call_soon_threadsafe, _settle, over))
        await over  # (a try past TIMEOUT is cancelled here, as any other)
        response = page.result()
        page.release()  # (its body is held here from now on, and parsed)
        if response is None:
            log.debug("s3://%s/%s: a page asked early: %s", bucket, prefix, page.error)
            self.transfer.requests += 1
            return None
        return _answer(response.status, response.reason, response.body, 0, MAX_LISTING_BYTES)

    def not_taken(self) -> None:
        """The listing is over: pages asked early and never taken are still requests sent
        (counted); no more are asked."""
        if self.first_page is not None:
            self.transfer.requests += self.first_page.untaken()

    async def _get_by_proxy(
        self, url: str, headers: dict[str, str], proxy: str, limit: int
    ) -> tuple[int, str, bytes]:
        """(status, reason, body) of a GET through ``proxy``, by aiohttp: the body up to
        ``limit`` bytes (an error's up to 4,000); a longer one's connection is closed."""
        async with self._session().get(
            url, headers=headers, allow_redirects=False, proxy=proxy
        ) as resp:
            want = limit if resp.status in (200, 206) else 4000
            parts, got = [], 0
            while got < want:
                part = await resp.content.read(want - got)
                if not part:
                    break
                parts.append(part)
                got += len(part)
            if not resp.content.at_eof():
                resp.close()  # the rest is not wanted: the connection goes
            return resp.status, resp.reason or "", b"".join(parts)

    def kept_shape(self, bucket: str) -> tuple[Shape, Credentials] | None:
        """The shape of ``bucket``'s URLs kept from an earlier scan (a
        :class:`~pyaudit.s3direct.DirectS3` store's), or None."""
        shape = getattr(self.fs, "shape", None)
        return shape(bucket) if shape is not None else None

    def _refused(self, bucket: str) -> None:
        """A URL signed by the kept shape was refused: forget it, and what it signed."""
        self.fs.refused(bucket)
        self._presigners.pop(bucket, None)

    async def _url(self, bucket: str, key: str) -> tuple[str, bool]:
        """The presigned URL of a GET of ``key``, and whether the kept shape signed it: by
        the :class:`~pyaudit.s3presign.Presigner` made for the bucket while it is fresh
        (from the kept shape, or learnt from the client's URL), else by the client."""
        now = time.monotonic()
        learnt = self._presigners.get(bucket)
        if learnt is None or now - learnt[0] >= PRESIGNER_LIFE:
            kept = self.kept_shape(bucket)
            if kept is not None:
                learnt = (now, kept[0].presigner(kept[1], time.time()), True)
                self._presigners[bucket] = learnt
        if learnt is not None and now - learnt[0] < PRESIGNER_LIFE and learnt[1] is not None:
            url = learnt[1].url(key)
            if url is not None:
                return url, learnt[2]
        url = await self._presign(bucket, "get_object", {"Bucket": bucket, "Key": key})
        if learnt is None or now - learnt[0] >= PRESIGNER_LIFE:
            self._presigners[bucket] = (now, await self._learn(url, bucket, key), False)
        return url, False

    async def _learn(self, url: str, bucket: str, key: str) -> Presigner | None:
        from .s3presign import Credentials, learn

        client = await self.fs.get_s3(bucket)
        held = getattr(getattr(client, "_request_signer", None), "_credentials", None)
        creds = None
        if held is not None:
            frozen = held.get_frozen_credentials()
            if inspect.isawaitable(frozen):
                frozen = await frozen
            creds = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
        return learn(url, bucket, key, creds)

    async def get(self, path: str, start: int, end: int) -> bytes:
        bucket, key, _ = self.fs.split_path(path)
        url, kept = await self._url(bucket, key)
        try:
            return await self._fetch(url, start, end)
        except PermissionError:
            if not kept:
                raise
        self._refused(bucket)
        self.transfer.requests += 1  # (the refused one; this try counts the next)
        url, _ = await self._url(bucket, key)
        return await self._fetch(url, start, end)

    async def list_page(
        self, bucket: str, prefix: str, token: str | None
    ) -> tuple[list[Listed], str | None]:
        """One ListObjectsV2 page: (key, size, content id) of its objects, and the token of the next
        page (None after the last). Read by :func:`_parse_listing`: botocore's parser spent
        ~0.1 s of the event loop's thread on each page of 1,000 keys (most of it parsing
        dates)."""
        kept = self.kept_shape(bucket)
        if kept is not None:
            try:
                early = await self._first_page(bucket, prefix, kept, token)
                if early is not None:
                    return _parse_listing(early)
                url = kept[0].list_url(kept[1], time.time(), list_params(prefix, token))
                return _parse_listing(await self._fetch(url, 0, None))
            except PermissionError:
                self._refused(bucket)
                self.transfer.requests += 1  # (the refused one; this try counts the next)
        params = {"Bucket": bucket, "Prefix": prefix}
        if token:
            params["ContinuationToken"] = token
        url = await self._presign(bucket, "list_objects_v2", params)
        return _parse_listing(await self._fetch(url, 0, None))

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()
        if self._http is not None:
            await self._http.close()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _answer(status: int, reason: str, body: bytes, start: int, limit: int) -> bytes:
    """A GET's body (at most ``limit`` bytes, from ``start``), or its HTTP error as the
    exception the retries tell apart."""
    if status in (200, 206):
        if status == 200 and start:
            raise OSError("the server ignored the Range of the request")
        return body[:limit]  # never more than asked for, whatever the server sends
    if status == 416:  # the object is shorter than when it was listed
        return b""
    raise _http_error(status, reason, body[:4000].decode("utf-8", "replace"))


def _http_error(status: int, reason: str, text: str) -> OSError:
    """An S3 error response as the exception the retries tell apart (404 and 403 are
    answers, not faults)."""
    code = _xml_field(text, "Code") or str(status)
    message = f"{code}: {_xml_field(text, 'Message') or reason or ''}".strip()
    if status == 404:
        return FileNotFoundError(message)
    if status == 403:
        return PermissionError(message)
    return OSError(f"HTTP {status} {message}")


def _content_id(etag: object) -> str | None:
    """An S3 ETag as an identity of the object's content: the MD5 of its bytes (``"hex"``,
    a single-part upload) or of its parts' MD5s (``"hex-N"``, a multipart one). S3 gives it
    in the listing; objects of one ETag and size hold the same bytes (the same content
    uploaded in other parts has another ETag: then it is simply read twice). Anything else
    is None."""
    if not isinstance(etag, str):
        return None
    text = etag.strip().strip('"')
    return "s3:" + text.lower() if _ETAG.fullmatch(text) else None


_ETAG = re.compile(r"[0-9a-fA-F]{32}(-[0-9]+)?")  # (a character loop: ~8 us an object)


def _gcs_content_id(md5: object) -> str | None:
    """GCS's ``md5Hash`` (base64 of the object's MD5; composite objects have none)."""
    return f"gcs:{md5}" if isinstance(md5, str) and len(md5) == 24 else None


def _xml_field(text: str, name: str) -> str | None:
    start = text.find(f"<{name}>")
    stop = text.find(f"</{name}>", start + 1)
    return text[start + len(name) + 2 : stop] if 0 <= start < stop else None


def _parse_listing(body: bytes) -> tuple[list[Listed], str | None]:
    """A ListObjectsV2 response: (key, size, content id) of each object (the id: its ETag,
    see :func:`_content_id`), and the next page's token.
    Keys are URL-decoded when the response says ``EncodingType`` url (botocore asks for
    it when it presigns the request, and decodes the keys as this does). A page written
    plainly is read without an XML parser (:mod:`pyaudit.s3listing`), any other as XML."""
    page = read_plain_page(body)
    objects, fields = page if page is not None else _parse_listing_xml(body)
    items: list[Listed] = [(key, size, _content_id(etag)) for key, size, etag in objects]
    if fields.get("EncodingType", "").strip() == "url":
        from urllib.parse import unquote_plus

        items = [(unquote_plus(key), size, etag) for key, size, etag in items]
    token = fields.get("NextContinuationToken", "").strip() or None
    if (fields.get("IsTruncated", "").strip() or "false").lower() != "true":
        token = None
    return items, token


_LISTING_FIELDS = ("EncodingType", "NextContinuationToken", "IsTruncated")


def _parse_listing_xml(body: bytes) -> tuple[list[tuple[str, int, str | None]], dict[str, str]]:
    """(key, size, ETag as written) of each object of a ListObjectsV2 page, and the fields
    of its root :func:`_parse_listing` reads, by an XML parse; OSError if it is not XML."""
    from xml.etree.ElementTree import ParseError, fromstring

    try:
        root = fromstring(body)
    except ParseError as e:  # a body cut short: asking again may do
        raise OSError(f"a listing that is not XML: {e}") from None
    # Each field found by the element's own (native) search, in the namespace of the
    # response, rather than by a Python loop over every child (a third of the time).
    tag = root.tag
    ns = tag[: tag.index("}") + 1] if tag.startswith("{") and "}" in tag else ""
    key_tag, size_tag, etag_tag = f"{ns}Key", f"{ns}Size", f"{ns}ETag"
    objects: list[tuple[str, int, str | None]] = []
    for child in root.iterfind(f"{ns}Contents"):
        key = child.findtext(key_tag)
        if key is None:
            continue
        try:
            size = max(0, int(child.findtext(size_tag) or 0))
        except ValueError:
            size = 0
        objects.append((key, size, child.findtext(etag_tag)))
    fields = {}
    for name in _LISTING_FIELDS:
        text = root.findtext(f"{ns}{name}")
        if text is not None:
            fields[name] = text
    return objects, fields


def _read_range(fs: Any, path: str, start: int, end: int, size: int | None) -> bytes:
    """Bytes ``[start, end)`` from a synchronous filesystem. Where its ``cat_file`` is
    fsspec's own (it opens a buffered file: HfFileSystem, most), the file is opened with no
    cache and the listed size: the default cache reads a block ahead (HfFileSystem: the
    first read of a header fetched up to 5 MB of tensor data behind it) and the size would
    be asked of the store again."""
    from fsspec.spec import AbstractFileSystem  # type: ignore[import-untyped]

    if type(fs).cat_file is AbstractFileSystem.cat_file:
        options: dict[str, Any] = {"cache_type": "none"}
        if size is not None:
            options["size"] = size
        try:
            f = fs.open(path, "rb", **options)
        except TypeError:  # a file class that takes neither: as the filesystem reads
            pass
        else:
            with f:
                f.seek(start)
                return bytes(f.read(end - start))
    return bytes(fs.cat_file(path, start=start, end=end))


def _client_error(e: BaseException) -> bool:
    """An HTTP 4xx other than 408 (timeout) and 429 (throttled), as a driver's own error
    holds it (gcsfs' HttpError ``code``, aiohttp's ``status``, the Azure SDK's
    ``status_code``): gcsfs raises a 403 as that, not as a PermissionError."""
    for name in ("code", "status", "status_code"):
        value = getattr(e, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return 400 <= value < 500 and value not in (408, 429)
    return False


# botocore's errors of its own configuration (by name: botocore is not imported here),
# raised before any request: asking again finds the same environment.
_CONFIGURATION_ERRORS = frozenset({
    "NoCredentialsError", "PartialCredentialsError", "NoRegionError", "ParamValidationError",
    "InvalidConfigError", "ProfileNotFound", "UnknownSignatureVersionError",
})


def _transient(e: BaseException) -> bool:
    """Whether asking again may succeed (throttled, dropped, timed out, server error)."""
    if isinstance(e, TimeoutError):
        return True
    if type(e).__name__ in _CONFIGURATION_ERRORS:
        return False
    return not isinstance(e, _PERMANENT) and not _client_error(e)


class _Client:
    """Requests to one filesystem, at most ``in_flight`` at once, in order of priority.

    Runs on an event loop thread: the filesystem's own (async filesystems: s3fs, gcsfs,
    adlfs, http) or fsspec's, with a thread per request in flight (sync ones: hf, memory).
    Results are handed to the scanning thread as ``concurrent.futures.Future``.
    """

    def __init__(
        self, fs: Any, in_flight: int, first_page: FirstPage | None = None,
        fetcher: Fetcher | None = None, spawn: bool = True,
    ) -> None:
        """``fetcher``: a fetching process started for the URL (pyaudit.fetcher.spawn): its
        GETs go there where they are sent by presigned URL (else it is closed); without
        one, such GETs go to a process started here (``spawn``) or are sent by this one."""
        self.fs = fs
        self.in_flight = in_flight
        self.is_async = bool(getattr(fs, "async_impl", False))
        if self.is_async:
            self.loop: asyncio.AbstractEventLoop = fs.loop
        else:
            import fsspec.asyn  # type: ignore[import-untyped]

            self.loop = fsspec.asyn.get_loop()
        self.pool = (
            None
            if self.is_async
            else concurrent.futures.ThreadPoolExecutor(in_flight, "pyaudit-remote")
        )
        self.transfer = Transfer(in_flight=in_flight)
        # Set when the listing's first request is about to go out (or the listing ended):
        # the caller's imports wait for it, so that they overlap its round trip rather
        # than delay it (both hold the GIL: at 100 ms, 0.1 s of a 2 s sweep).
        self.asked = threading.Event()
        self._heap: list[tuple[int, int, Callable[[], Awaitable[None]]]] = []
        self._seq = 0
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()  # the requests in flight
        self._unsettled: set[concurrent.futures.Future[Any]] = set()  # submitted, unanswered
        self._closed = False
        # The tries in flight (the task of each, and when it started), looked at by one
        # timer while there are any; those past TIMEOUT are cancelled and marked expired.
        self._tries: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._guard: asyncio.TimerHandle | None = None
        self.s3 = (
            _S3Ranges(fs, in_flight, first_page, self.transfer)
            if S3_DIRECT and _is_plain_s3(fs) else None
        )
        if self.s3 is None and first_page is not None:  # asked, and never to be taken
            self.transfer.requests += first_page.untaken()
        # The largest header span seen of each file name, and of any: the next first read
        # (+1/8). The largest, not the last: where one name holds headers of several sizes
        # (model.safetensors of several families), the last fell short for 1 in 25.
        self._spans: dict[str, int] = {}
        self._span = 0
        # Where the GETs go by presigned URL, a child process sends them (pyaudit.fetcher):
        # this one keeps the listing.
        self.fetcher: Fetcher | None = None
        wanted = fetcher is not None or spawn
        if self.s3 is not None and FETCHER and isinstance(fs, DirectS3) and wanted:
            from pyaudit.fetcher import SETTINGS, Fetcher

            try:
                if fetcher is None or fetcher.url != fs.url or fetcher.configured:
                    fetcher = Fetcher(fs.url)
                settings = {name: globals()[name] for name in SETTINGS}
                fetcher.configure(in_flight, settings, self._ask_here)
                self.fetcher = fetcher
            except OSError as e:  # (no process to be had: the GETs go on this loop)
                log.debug("no fetching process: %s", e)
        elif fetcher is not None:
            fetcher.close()

    @property
    def largest_span(self) -> int:
        """The largest header span seen so far (0: none yet)."""
        if self.fetcher is not None:
            return max(self._span, self.fetcher.largest_span)
        return self._span

    def ask_header(self, priority: int, path: str, size: int) -> concurrent.futures.Future[Any]:
        """:meth:`header` of ``path`` when a slot is free (see :meth:`submit`)."""
        return self._ask(priority, "h", path, (size,))

    def ask_whole(self, priority: int, path: str, size: int) -> concurrent.futures.Future[Any]:
        """:meth:`whole` of ``path`` when a slot is free (see :meth:`submit`)."""
        return self._ask(priority, "w", path, (size,))

    def ask_range(
        self, priority: int, path: str, start: int, end: int, size: int
    ) -> concurrent.futures.Future[Any]:
        """:meth:`get` of bytes ``[start, end)`` of ``path`` when a slot is free."""
        return self._ask(priority, "g", path, (start, end, size))

    def _ask(
        self, priority: int, kind: str, path: str, args: tuple[int, ...]
    ) -> concurrent.futures.Future[Any]:
        if self.fetcher is not None:
            return self.fetcher.ask(priority, kind, path, *args)
        return self._ask_here(priority, kind, path, args)

    def _ask_here(
        self, priority: int, kind: str, path: str, args: tuple[int, ...]
    ) -> concurrent.futures.Future[Any]:
        """A request of :meth:`_ask` sent by this process (the fetching one's fallback)."""
        if kind == "h":
            return self.submit(priority, lambda: self.header(path, *args))
        if kind == "w":
            return self.submit(priority, lambda: self.whole(path, *args))
        return self.submit(priority, lambda: self.get(path, *args))

    # Scheduling (called on the loop thread) ------------------------------------------------

    def _push(self, priority: int, job: Callable[[], Awaitable[None]]) -> None:
        if self._closed:
            self._settle()
            return
        self._seq += 1
        heapq.heappush(self._heap, (priority, self._seq, job))
        self._pump()

    def _pump(self) -> None:
        while self._heap and self._running < self.in_flight and not self._closed:
            _, _, job = heapq.heappop(self._heap)
            self._running += 1
            task = self.loop.create_task(self._run(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Callable[[], Awaitable[None]]) -> None:
        try:
            await job()
        finally:
            self._running -= 1
            self._pump()

    def submit(
        self, priority: int, job: Callable[[], Awaitable[Any]]
    ) -> concurrent.futures.Future[Any]:
        """Run ``job`` when a slot is free (lower ``priority`` first); errors are results."""
        out: concurrent.futures.Future[Any] = concurrent.futures.Future()

        async def run() -> None:
            try:
                out.set_result(await job())
            except Exception as e:
                out.set_result(e)
            except BaseException as e:  # cancelled (the loop closing): never leave it pending
                out.set_result(OSError(f"cancelled: {type(e).__name__}"))
                raise

        self._unsettled.add(out)
        out.add_done_callback(self._unsettled.discard)
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:  # (no loop runs in this thread)
            on_loop = False
        if on_loop:  # asked by the listing, on the loop's thread: no wake-up to send
            self._push(priority, run)
            return out
        try:
            self.loop.call_soon_threadsafe(self._push, priority, run)
        except RuntimeError:  # the loop is closed (a DirectS3's, once the client is)
            out.set_result(OSError(CANCELLED))
        return out

    def _settle(self) -> None:
        """Every request's future not answered yet gets an error (the client is closed)."""
        for out in list(self._unsettled):
            if not out.done():
                out.set_result(OSError(CANCELLED))

    def call(self, job: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run ``job`` on the loop outside the slots (the listing), and wait for it."""
        return asyncio.run_coroutine_threadsafe(job(), self.loop).result()

    def close(self) -> None:
        """Nothing more is asked: queued requests are dropped, those in flight cancelled
        (their futures get an error), then the session's connections closed. Called from
        outside the loop's thread."""

        async def stop() -> None:
            self._closed = True
            self._heap.clear()
            if self._guard is not None:
                self._guard.cancel()
                self._guard = None
            running = list(self._tasks)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            self._settle()
            if self.s3 is not None:
                await self.s3.close()
            if isinstance(self.fs, DirectS3):
                await self.fs.close()

        if self.fetcher is not None:
            self.transfer.add(Transfer(**self.fetcher.close()))
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):  # (a loop already closed: nothing runs on it)
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        if isinstance(self.fs, DirectS3):  # its own loop, which nothing else uses
            self.fs.shutdown()

    # Requests (on the loop thread) ---------------------------------------------------------

    async def _retrying(self, what: str, attempt_once: Callable[[], Awaitable[Any]]) -> Any:
        for attempt in range(ATTEMPTS):
            self.transfer.requests += 1
            try:
                return await self._try(attempt_once)
            except Exception as e:
                if not _transient(e) or self._closed:
                    raise
                if attempt == ATTEMPTS - 1:
                    raise OSError(f"{_one_line(e)} ({ATTEMPTS} tries)") from e
                self.transfer.retries += 1
                delay = min(BACKOFF_MAX, BACKOFF * 2**attempt) * (0.5 + random.random() / 2)
                log.debug("%s: %s; retrying in %.2f s", what, _one_line(e), delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _try(self, attempt_once: Callable[[], Awaitable[Any]]) -> Any:
        """One try, TimeoutError when it takes TIMEOUT seconds (to TIMEOUT x (1 + 1 /
        GUARD_TICKS)). One timer guards every try in flight: asyncio.timeout() made and
        cancelled a timer a try, ~15% of the loop's CPU a GET of a sweep."""
        task = asyncio.current_task(self.loop)
        if task is None:  # (not in a task of this loop: cannot be cancelled by the guard)
            return await asyncio.wait_for(attempt_once(), TIMEOUT)
        self._tries[task] = self.loop.time()
        if self._guard is None:
            self._guard = self.loop.call_later(TIMEOUT / GUARD_TICKS, self._guard_tries)
        try:
            return await attempt_once()
        except asyncio.CancelledError:
            if task not in self._expired:  # (cancelled by someone else: the scan is given up)
                raise
            uncancel = getattr(task, "uncancel", None)  # (3.11+: the cancel is consumed here)
            if uncancel is not None:
                uncancel()
            raise TimeoutError(f"no answer in {TIMEOUT:g} s") from None
        finally:
            self._tries.pop(task, None)
            self._expired.discard(task)

    def _guard_tries(self) -> None:
        """Cancel each try in flight for TIMEOUT seconds or more, marked expired (its
        :meth:`_try` says TimeoutError); look again later while any is in flight."""
        self._guard = None
        now = self.loop.time()
        for task, started in list(self._tries.items()):
            if now - started >= TIMEOUT and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        if self._tries:
            self._guard = self.loop.call_later(TIMEOUT / GUARD_TICKS, self._guard_tries)

    async def _sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self.loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    async def get(self, path: str, start: int, end: int, size: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of ``path`` (``size``: the object's, as listed)."""

        async def once() -> bytes:
            if self.s3 is not None:
                data = await self.s3.get(path, start, end)
            elif self.is_async:
                data = await self.fs._cat_file(path, start=start, end=end)
            else:
                data = await self._sync(_read_range, self.fs, path, start, end, size)
            return bytes(data)

        data: bytes = await self._retrying(path, once)
        self.transfer.bytes += len(data)
        return data

    async def header(self, path: str, size: int) -> bytes:
        """The header bytes of a .safetensors of ``size`` bytes: one range request sized from
        the headers seen so far, a second for exactly the rest when that fell short."""
        if size <= 0:
            return b""
        name = posixpath.basename(path)
        known = self._spans.get(name) or min(self._span, GUESS_MAX)
        guess = known + known // 8 if known else FIRST_GUESS
        data = await self.get(path, 0, min(size, max(guess, 8)), size)
        if len(data) >= 8:
            span = header_span(data[:8])
            if 0 < span <= min(size, MAX_HEADER_BYTES):  # (a file that holds it)
                self._spans[name] = max(span, self._spans.get(name, 0))
                self._span = max(span, self._span)
            if len(data) < span <= min(size, MAX_HEADER_BYTES):
                data += await self.get(path, len(data), span, size)
            elif span and len(data) > span:
                data = data[:span]
        return data

    async def whole(self, path: str, size: int) -> bytes:
        return await self.get(path, 0, size, size) if size > 0 else b""

    # Listing (on the loop thread, outside the slots) --------------------------------------

    async def listing(self, root: str) -> AsyncIterator[list[Listed]]:
        """(path, size, content id) of every file below ``root``, a page at a time (each next
        page asked ahead, where the store lists page by page)."""
        fs = self.fs
        page = await self._page_fetch(root)
        if page is not None:
            async for listed in _pages_ahead(page):
                yield listed
            return
        if self.is_async:
            found = await self._retrying(root, lambda: fs._find(root, detail=True))
        else:
            found = await self._retrying(root, lambda: self._sync(fs.find, root, detail=True))
        yield [
            (str(k), _size(info), None)
            for k, info in found.items()
            if info.get("type", "file") == "file" and not str(k).endswith("/")
        ]

    async def _page_fetch(self, root: str) -> PageFetch | None:
        """How one page of ``root``'s listing is asked (its token: None for the first), where
        the store lists page by page (S3 presigned or through s3fs, GCS, Azure); None where
        one fsspec ``find`` lists it whole."""
        fs = self.fs
        if S3_PAGES and _is_plain_s3(fs):
            bucket, key, _ = fs.split_path(root)
            prefix = f"{key}/" if key else ""
            s3 = self.s3
            if s3 is not None:  # presigned, over the session of the range GETs
                if s3.kept_shape(bucket) is None:  # (else botocore is not needed)
                    with contextlib.suppress(Exception):  # (its errors are the first page's)
                        await s3.client(bucket)
                self.asked.set()

                async def presigned_page(token: str | None) -> tuple[list[Listed], str | None]:
                    assert s3 is not None
                    page_of = functools.partial(s3.list_page, bucket, prefix, token)
                    items, token = await self._retrying(root, page_of)
                    return [(f"{bucket}/{k}", size, etag) for k, size, etag in items], token

                return presigned_page
            base: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            base.update(getattr(fs, "req_kw", {}) or {})
            self.asked.set()

            async def s3fs_page(token: str | None) -> tuple[list[Listed], str | None]:
                kwargs = {**base, "ContinuationToken": token} if token else base
                page = await self._retrying(root, lambda: fs._call_s3("list_objects_v2", **kwargs))
                listed = [
                    (f"{bucket}/{c['Key']}", _size(c), _content_id(c.get("ETag")))
                    for c in page.get("Contents", [])
                ]
                token = page.get("NextContinuationToken")
                return listed, token if page.get("IsTruncated") and token else None

            return s3fs_page
        self.asked.set()
        if GCS_PAGES and _is_plain_gcs(fs):
            bucket, key, _ = fs.split_path(root)
            params: dict[str, Any] = {"maxResults": GCS_PAGE}
            if key:
                params["prefix"] = f"{key.rstrip('/')}/"

            async def gcs_page(token: str | None) -> tuple[list[Listed], str | None]:
                asked = {**params, "pageToken": token} if token else params
                list_page = functools.partial(
                    fs._call, "GET", "b/{}/o", bucket, json_out=True, **asked
                )
                page = await self._retrying(root, list_page)
                items = (page.get("items") or []) if isinstance(page, dict) else []
                listed = [
                    (f"{bucket}/{o['name']}", _size(o), _gcs_content_id(o.get("md5Hash")))
                    for o in items
                    if isinstance(o, dict) and isinstance(o.get("name"), str)
                ]
                next_token = page.get("nextPageToken") if isinstance(page, dict) else None
                return listed, next_token or None

            return gcs_page
        if AZURE_PAGES and _is_plain_azure(fs):
            container, key, _ = fs.split_path(root)
            prefix = f"{key.rstrip('/')}/" if key else ""

            async def azure_page(marker: str | None) -> tuple[list[Listed], str | None]:
                page_of = functools.partial(_azure_page, fs, container, prefix, marker)
                items, marker = await self._retrying(root, page_of)
                return items, marker or None

            return azure_page
        return None

    async def info(self, path: str) -> dict[str, Any]:
        if self.is_async:
            out = await self._retrying(path, lambda: self.fs._info(path))
        else:
            out = await self._retrying(path, lambda: self._sync(self.fs.info, path))
        return dict(out)

    async def ls(self, path: str) -> list[dict[str, Any]]:
        if self.is_async:
            out = await self._retrying(path, lambda: self.fs._ls(path, detail=True))
        else:
            out = await self._retrying(path, lambda: self._sync(self.fs.ls, path, detail=True))
        return [dict(e) for e in out]


# Listed files taken in (their requests asked) between turns of the event loop, whose other
# work (the next listing page's request and answer) then waits no longer than this.
_ADDS_BETWEEN_IO = 128
# s the mirror's maker waits for a page before it looks again (a safety net: each page
# added, and the listing's end, wake it)
LISTING_POLL = 0.05


async def _pages_ahead(fetch: PageFetch) -> AsyncIterator[list[Listed]]:
    """The pages ``fetch(token)`` gives (its items, and the next page's token: None after the
    last), each next page asked before the one in hand is given on, so that its round trip
    overlaps the caller's work on this one (the requests it makes of the page's files)
    instead of following it. The next page's request runs to its first wait (on a kept
    connection, it is written) before this page is given on. A page's error is raised after
    the pages before it; pages not taken are not asked for (the one in flight is
    cancelled)."""
    pending: asyncio.Future[tuple[list[Listed], str | None]] | None = (
        asyncio.ensure_future(fetch(None)))
    try:
        while pending is not None:
            items, token = await pending
            pending = asyncio.ensure_future(fetch(token)) if token else None
            if pending is not None:
                await asyncio.sleep(0)  # (its first step, before the caller's work on this)
            yield items
    finally:
        if pending is not None:
            if not pending.done():
                pending.cancel()
            elif not pending.cancelled():
                pending.exception()  # (a page not taken: its error is no one's)


# --- one URL --------------------------------------------------------------------------------


# Why a listed object has no place in the mirror (by the errno of its placeholder).
_UNSCANNED = {
    errno.EINVAL: "a name no directory can hold (an empty, '.' or '..' part, a NUL, or a part "
                  "longer than 255 bytes)",
    errno.ENOTDIR: "below an object whose name is that of its directory",
    errno.EISDIR: "named as the directory of other objects",
    errno.ENAMETOOLONG: "a name longer than a path can be",
}


def _unscanned(tree: RemoteTree) -> str:
    """The listed objects the scan could not place, as one sentence."""
    first = "; ".join(f"{rel}: {why}" for rel, why in tree.unscanned[:5])
    more = len(tree.unscanned) - 5
    return (f"{plural(len(tree.unscanned), 'object')} listed but not scanned ({first}"
            f"{f'; and {more} more' if more > 0 else ''})")


def _safe_rel(rel: str) -> bool:
    """A key that can be a path below the mirror: no empty, '.', '..' or over-long part."""
    parts = rel.split("/")
    return all(p not in ("", ".", "..") and "\0" not in p and len(p.encode()) <= 255 for p in parts)


class RemoteTree:
    """One URL: its listing (run files requested while it arrives) and its local mirror."""

    def __init__(
        self, url: str, in_flight: int = IN_FLIGHT, wait: bool = True,
        first_page: FirstPage | None = None, fetcher: Fetcher | None = None,
        spawn: bool = True,
    ) -> None:
        """``first_page``: the listing's first page, asked early (pyaudit.firstpage);
        ``fetcher``: a process started for its GETs (pyaudit.fetcher.spawn), else one is
        started for them where ``spawn``."""
        self.url = url
        self.fs, self.root = _filesystem(url, in_flight)
        if _is_azure(self.fs):
            in_flight = min(in_flight, AZURE_POOL)  # more would wait in the SDK's pool
        self.client = _Client(self.fs, in_flight, first_page, fetcher, spawn)
        self.files: dict[str, int] = {}  # path relative to the mirrored root -> size
        # Listed files not in the mirror yet (appended by the listing, taken by the scan's
        # thread) and a signal after each page.
        self._unmirrored: deque[tuple[str, int]] = deque()
        # Listed .safetensors files, which the mirror holds as names only (their directories
        # made): the audit reads nothing of them but the header fetched. Taken as the others,
        # and all of them looked at once more when the listing is complete.
        self._unmade: deque[str] = deque()
        self._names_only: list[str] = []
        # Listed objects the mirror cannot hold (and why): a finding of the store, not lost
        self.unscanned: list[tuple[str, str]] = []
        self._page_added = threading.Event()
        # Small files (run and index files) are read once per content: rel -> the content id
        # the listing gave (S3's ETag), and (content id, size) -> the request of the first.
        self.contents: dict[str, str] = {}
        self._by_content: OrderedDict[tuple[str, int], concurrent.futures.Future[Any]] = (
            OrderedDict()
        )
        self._shared_bytes = 0  # what the requests held there hold, at most SHARED_BYTES
        self.single: str | None = None  # the file's name when the URL names one file
        self.root_url = url.rstrip("/")  # the URL of the mirrored root
        self.http = any(p in ("http", "https") for p in _protocols(self.fs))  # no listing
        self.run_files: dict[str, concurrent.futures.Future[Any]] = {}  # rel -> bytes | error
        # Header and index files requested as the listing names them, ahead of discovery
        # (which waits for the whole listing): rel -> the request's future, taken by the
        # scan. ``WINDOW`` x in-flight of them, and more while what they hold stays under
        # ``AHEAD_BYTES`` (headers of the largest span seen so far, index files as listed),
        # so that the slots stay busy through a listing of many pages.
        self.headers: dict[str, concurrent.futures.Future[Any]] = {}
        self.indexes: dict[str, concurrent.futures.Future[Any]] = {}
        self._window = WINDOW * in_flight
        self._index_bytes = 0
        self._prefetch = True
        # The listing runs on the loop; the tree is ready once its first page is in (a URL
        # that cannot be listed fails there), the rest arrives while the scan starts.
        self._first: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._listing = asyncio.run_coroutine_threadsafe(self._list(), self.client.loop)
        # The listing's end wakes the mirror's maker too: its last page is added (and
        # said) before the listing is done, and a wait begun between the two would
        # otherwise sleep out its whole poll (up to 50 ms on the critical path).
        self._listing.add_done_callback(lambda _: self._page_added.set())
        if wait:
            self.ready()

    def ready(self) -> None:
        """Wait for the listing's first page; :class:`RemoteError` if there is none."""
        concurrent.futures.wait((self._first, self._listing),
                                return_when=concurrent.futures.FIRST_COMPLETED)
        if not self._first.done():
            try:
                self._listing.result()
            except RemoteError:
                self.client.close()
                raise
            except Exception as e:
                self.client.close()
                raise RemoteError(f"{self.url}: cannot list: {_one_line(e)}") from None

    def listed(self) -> str | None:
        """Wait for the rest of the listing: None, or why it stopped short (what was listed
        by then is scanned)."""
        try:
            self._listing.result()
        except Exception as e:
            log.warning("%s: cannot list all of it: %s", self.url, _one_line(e))
            return f"cannot be listed past {len(self.files)} files: {_one_line(e)}"
        return None

    def key(self, rel: str) -> str:
        """The filesystem path of a file given relative to the mirrored root."""
        if self.root in ("", "/"):
            return self.root + rel
        return f"{self.root}/{rel}"

    async def _list(self) -> None:
        try:
            await self._list_all()
        finally:
            self.client.asked.set()
            if self.client.s3 is not None:
                self.client.s3.not_taken()

    async def _list_all(self) -> None:
        if self.http:
            self.client.asked.set()
            info = await self.client.info(self.root)  # http(s): one file, no listing
            await self._list_single(info)
            return
        prefix = self.root.rstrip("/") + "/" if self.root not in ("", "/") else self.root
        try:
            async for page in self.client.listing(self.root):
                self.client.transfer.listed += len(page)
                for index, (path, size, content) in enumerate(page, 1):
                    if path.startswith(prefix):
                        self._add(path[len(prefix) :], size, content)
                    if not index % _ADDS_BETWEEN_IO:  # (the next page's exchange goes on)
                        await asyncio.sleep(0)
                self._page_added.set()
                if self.files and not self._first.done():
                    self._first.set_result(None)
        except FileNotFoundError:
            if self.files:  # gone while listed: what was listed is scanned, and said
                raise
        if self.files:
            return
        try:
            info = await self.client.info(self.root)
        except FileNotFoundError:
            info = {}
        if info.get("type", "file") == "file" and info:
            await self._list_single(info)
            return
        raise RemoteNotFound(f"{self.url}: no such file or directory")

    async def _list_single(self, info: dict[str, Any]) -> None:
        """The URL names one file: its directory is the checkpoint, as for a local file."""
        self._prefetch = False  # that file's header only, requested by the scan
        name = posixpath.basename(self.root)
        parent = posixpath.dirname(self.root)
        self.single, self.root = name, parent
        self.root_url = self.url.rstrip("/").rsplit("/", 1)[0]
        entries: list[dict[str, Any]] = []
        if not self.http:
            try:
                entries = await self.client.ls(parent)
            except Exception as e:
                log.warning("%s: cannot list the directory holding it: %s", self.url, _one_line(e))
        for entry in entries:
            entry_name = posixpath.basename(str(entry.get("name", "")).rstrip("/"))
            if entry_name and entry_name != name and entry.get("type", "file") == "file":
                self._add(entry_name, _size(entry))
        self._add(name, _size(info))

    def _add(self, rel: str, size: int, content: str | None = None) -> None:
        if rel.endswith("/") or not rel:
            return  # a "directory" marker object
        if not _safe_rel(rel):
            self.unscanned.append((rel, _UNSCANNED[errno.EINVAL]))
            log.warning("%s/%s: a name no directory can hold: not scanned", self.root_url, rel)
            return
        self.files[rel] = size
        if self.single is None and rel.endswith(".safetensors"):
            self._unmade.append(rel)
        else:
            self._unmirrored.append((rel, size))
        if content is not None:
            self.contents[rel] = content
        if _hidden(rel):
            return
        name = posixpath.basename(rel)
        if name in GLOBAL_RUN_FILES:
            self.run_files[rel] = self._fetch_small(rel, size, 0)
        elif self._prefetch and self._may_prefetch():
            if name.endswith(".safetensors"):
                self.headers[rel] = self.client.ask_header(2, self.key(rel), size)
            elif name.endswith((INDEX_SUFFIX, BIN_INDEX_SUFFIX)) and size <= RUN_WHOLE_MAX:
                self._index_bytes += size
                self.indexes[rel] = self._fetch_small(rel, size, 1)

    def _may_prefetch(self) -> bool:
        ahead = len(self.headers) + len(self.indexes)
        if ahead < self._window:
            return True
        span = max(self.client.largest_span, FIRST_GUESS)
        held = len(self.headers) * (span + span // 8) + self._index_bytes
        return ahead < AHEAD_FILES and held < AHEAD_BYTES

    def _fetch_small(self, rel: str, size: int, priority: int) -> concurrent.futures.Future[Any]:
        if size > RUN_WHOLE_MAX:
            log.warning("%s/%s: %d bytes, larger than the %d read: not read",
                        self.root_url, rel, size, RUN_WHOLE_MAX)
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()
            done.set_result(None)
            return done
        content = self.contents.get(rel)
        if content is not None:  # the same bytes as a file already asked for: not asked again
            same = self._by_content.get((content, size))
            if same is not None:
                self.client.transfer.shared += 1
                return same
        future = self.client.ask_whole(priority, self.key(rel), size)
        if content is not None:  # held for files of the same content, up to SHARED_BYTES
            self._by_content[(content, size)] = future
            self._shared_bytes += size
            while self._shared_bytes > SHARED_BYTES and self._by_content:
                (_, dropped), _ = self._by_content.popitem(last=False)
                self._shared_bytes -= dropped
        return future

    def mirror_while_listed(self, mirror_root: Path) -> str | None:
        """Every listed file as a sparse placeholder of its size (discovery and the audit
        ask which files exist, and how large), made as the listing's pages arrive (this
        thread has nothing else to do until the listing is complete), natively and without
        the GIL (the requests' thread runs meanwhile); contents are written as they are
        read. A ``.safetensors`` file is a name only, its directory made: the audit reads
        its header as fetched, never the file (a quarter of the entries made and removed on
        the benchmark's store). Returns :meth:`listed`'s answer."""
        while True:
            self._page_added.clear()  # (a page added from here on wakes the wait below)
            done = self._listing.done()  # (before the draining: nothing added is missed)
            self._make_placeholders(str(mirror_root))
            if done:
                self._check_names_only()
                return self.listed()
            self._page_added.wait(LISTING_POLL)

    def _make_placeholders(self, root: str) -> None:
        new = self._unmirrored
        batch = [new.popleft() for _ in range(len(new))]  # (appended meanwhile: next time)
        names = self._unmade
        only = [names.popleft() for _ in range(len(names))]
        if batch:
            for index, error in make_placeholders(
                root, [(rel, min(size, _LARGEST)) for rel, size in batch]
            ):
                self._not_scanned(batch[index][0], error)
        if not only:
            return
        self._names_only += only
        below: dict[str, list[str]] = {}  # directory -> the names of this batch in it
        for rel in only:
            cut = rel.rfind("/")
            if cut > 0:
                below.setdefault(rel[:cut], []).append(rel)
        dirs = list(below)
        for index, error in make_directories(root, dirs):
            for rel in below[dirs[index]]:
                self._not_scanned(rel, error)

    def _not_scanned(self, rel: str, error: int) -> None:
        self.unscanned.append((rel, _UNSCANNED.get(error) or os.strerror(error)))
        log.warning("%s/%s: %s: not scanned", self.root_url, rel, os.strerror(error))

    def _check_names_only(self) -> None:
        """The names kept without a file, held against the whole listing as the mirror's
        files are by their making: one that other objects are below (EISDIR), or that is
        below a file made (ENOTDIR), is not scanned, as a placeholder of it would not be."""
        if not self._names_only:
            return
        unmade = {rel for rel, _ in self.unscanned}
        kept = set(self._names_only) - unmade
        dirs: set[str] = set()
        for rel in self.files:
            if rel in unmade:
                continue
            cut = rel.rfind("/")
            while cut > 0 and rel[:cut] not in dirs:
                dirs.add(rel[:cut])
                cut = rel.rfind("/", 0, cut)
        made = {rel for rel in self.files if rel not in unmade and rel not in kept}
        for rel in self._names_only:
            if rel not in kept:
                continue
            if rel in dirs:
                self._not_scanned(rel, errno.EISDIR)
                continue
            cut = rel.rfind("/")
            while cut > 0:
                if rel[:cut] in made:
                    self._not_scanned(rel, errno.ENOTDIR)
                    break
                cut = rel.rfind("/", 0, cut)

    def mirror_listing(self, mirror_root: Path) -> Listing:
        """The mirror :meth:`mirror_while_listed` made, as a tree discovery walks without
        asking the filesystem (a stat and a directory read of each of its thousands of
        directories: a tenth of a remote scan's time on the scan's thread)."""
        unmade = {rel for rel, _ in self.unscanned}
        return listing_of(str(mirror_root), (rel for rel in self.files if rel not in unmade))

    def close(self) -> None:
        self._listing.cancel()  # a scan given up (or done) lists no further
        self.client.close()


_LARGEST = (1 << 63) - 1  # bytes a placeholder can be (a listed size beyond it: an error)

# A mirror file opened to be written whole (made if new, emptied if not).
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _write_file(path: str, data: bytes) -> None:
    """``data`` as the whole of the file at ``path`` (no buffered file object: a sweep
    writes a run file a checkpoint into the mirror, and pathlib's cost ~20 us each)."""
    fd = os.open(path, _WRITE_FLAGS, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _hidden(rel: str) -> bool:
    """Whether a directory of ``rel`` (not its file name) is hidden (starts with '.')."""
    cut = rel.rfind("/")
    return cut > 0 and (rel[0] == "." or "/." in rel[:cut])


# --- the sweep ------------------------------------------------------------------------------


def _rewrite(report: CheckpointReport, mirror: str, root_url: str) -> CheckpointReport:
    """Local mirror paths in messages -> the URL (as a local scan shows its own paths).
    Reports and findings are immutable: replaced, never mutated."""
    path = report.path
    source = report.expected_source
    if (
        not path.startswith(mirror)
        and not (source and mirror in source)
        and not any(mirror in f.message for f in report.findings)
    ):
        return report  # (most: a report names its checkpoint relative to the PATH given)
    if path.startswith(mirror):
        path = root_url + path[len(mirror) :]
    if source and mirror in source:
        source = source.replace(mirror, root_url)
    findings = tuple(
        dataclasses.replace(f, message=f.message.replace(mirror, root_url))
        if mirror in f.message
        else f
        for f in report.findings
    )
    return dataclasses.replace(report, path=path, expected_source=source, findings=findings)


@dataclass
class _Pending:
    """One checkpoint whose files are requested: its headers and index files."""

    ckpt: CheckpointDir
    headers: list[tuple[str, int, concurrent.futures.Future[Any]]] = field(default_factory=list)
    indexes: list[tuple[str, concurrent.futures.Future[Any]]] = field(default_factory=list)
    # Pickle-era files read whole (each small enough), so that they are audited as on a
    # local disk; None: some are too large to fetch, and they are not read.
    pickled: list[tuple[str, concurrent.futures.Future[Any]]] | None = None
    read: dict[str, Header] = field(default_factory=dict)  # the headers, once audited
    # (size, digest) of its run files, by name, once audited (None: not read)
    digests: dict[str, tuple[int, int] | None] = field(default_factory=dict)


class _Scan:
    """One URL's checkpoints, audited in discovery order while later ones are read."""

    def __init__(self, tree: RemoteTree, mirror_root: Path, cache: AuditCache) -> None:
        self.tree = tree
        self.cache = cache  # this store's memo tables
        self.mirror_root = mirror_root
        self.mirror = str(mirror_root)
        self.written: set[str] = set()
        # The tree's run files as fetched, by mirror path: the audit's reads of them (its
        # own, those of the directories above it, those of the runs its files name) are
        # answered from these bytes; the mirror holds them as placeholders only.
        self.fetched = _Fetched(self)
        self.failed: dict[str, str] = {}  # rel -> why it could not be read
        # rel -> (size, digest) of a run or index file given to an audit or written into
        # the mirror, as a local sweep's reading threads give them: content the audit
        # parsed before is not parsed again (most checkpoints of a run share their config)
        self.digests: dict[str, tuple[int, int]] = {}

    def rel(self, ckpt: CheckpointDir, name: str) -> str:
        """``name`` of ``ckpt`` relative to the mirror's root (as the listing names it)."""
        base = str(ckpt.path)
        if base == self.mirror:
            return name
        if base.startswith(self.mirror + "/"):  # (every checkpoint: discovered in the mirror)
            return f"{base[len(self.mirror) + 1:]}/{name}"
        return (ckpt.path / name).relative_to(self.mirror_root).as_posix()

    def schedule(self, ckpt: CheckpointDir) -> _Pending:
        tree, client = self.tree, self.tree.client
        pending = _Pending(ckpt)
        for name in [*ckpt.indexes, *ckpt.bin_indexes]:
            rel = self.rel(ckpt, name)
            if rel in tree.files:
                ahead = tree.indexes.pop(rel, None)
                pending.indexes.append(
                    (rel, ahead or tree._fetch_small(rel, tree.files[rel], 1))
                )
        for name in ckpt.safetensors:
            rel = self.rel(ckpt, name)
            size = tree.files.get(rel, 0)
            future = tree.headers.pop(rel, None)
            if future is None:
                future = client.ask_header(2, tree.key(rel), size)
            pending.headers.append((name, size, future))
        inputs = []
        if ckpt.has_pickled:
            from pyaudit.auditing.pickled import pickled_inputs

            inputs = [self.rel(ckpt, name) for name in pickled_inputs(ckpt)]
        if inputs and all(tree.files.get(rel, 0) <= RUN_WHOLE_MAX for rel in inputs):
            pending.pickled = [
                (rel, tree._fetch_small(rel, tree.files.get(rel, 0), 2)) for rel in inputs
            ]
        return pending

    def materialise(self, rel: str, future: concurrent.futures.Future[Any]) -> None:
        """A small file's bytes into the mirror (once)."""
        if rel in self.written:
            return
        self.written.add(rel)
        data = future.result()
        if data is None:  # too large to read: the placeholder stands
            size = self.tree.files.get(rel, 0)
            self.failed[rel] = f"{size} bytes, more than the {RUN_WHOLE_MAX} read remotely"
            return
        if isinstance(data, BaseException):
            self.failed[rel] = _one_line(data)
            self.tree.client.transfer.failed += 1
            log.warning("%s/%s: cannot read: %s", self.tree.root_url, rel, _one_line(data))
            with contextlib.suppress(OSError):
                _write_file(f"{self.mirror}/{rel}", b"")
            return
        try:
            _write_file(f"{self.mirror}/{rel}", data)
        except OSError as e:
            self.failed[rel] = e.strerror or str(e)
            return
        if len(data) <= RUN_WHOLE_MAX:  # (= the bound of what a local sweep digests)
            self.digests[rel] = (len(data), hash_bytes(data))

    def give(self, rel: str, future: concurrent.futures.Future[Any]) -> None:
        """A small file of the checkpoint's own, held for its audit (``self.fetched``), its
        digest taken, where its bytes were read and it is not in the mirror already;
        otherwise it is materialised (a file that could not be read stands there as an
        empty one, a file too large to read as its placeholder, as the audit's findings
        expect)."""
        if rel in self.written:  # (materialised: it could not be read)
            return
        data = future.result()
        if not isinstance(data, bytes):
            self.materialise(rel, future)
            return
        self.fetched.held[rel] = data
        self.digests[rel] = (len(data), hash_bytes(data))

    def read_cards(self, ckpt: CheckpointDir, report: CheckpointReport) -> bool:
        """The heads of the model cards (README.md) of the checkpoint's directory and those
        above it where the audit looks for one, into the mirror, when its report has an
        intent finding (whose cause a LLaMA-Factory card may be the only record of): a
        card explains, never decides, so none is read for any other report. Whether one
        was written (the audit is then run again, reading it as a local scan does)."""
        for f in report.findings:
            if f.code == "intent-mismatch":
                break
        else:
            return False
        from pyaudit.runs import CARD, CARD_HEAD_BYTES, CARD_LEVELS

        tree, client = self.tree, self.tree.client
        here = ckpt.path.relative_to(self.mirror_root).as_posix()
        parts = [] if here == "." else here.split("/")
        asked = []
        for up in range(min(CARD_LEVELS, len(parts)) + 1):
            rel = "/".join([*parts[: len(parts) - up], CARD])
            if rel in tree.files and rel not in self.written:
                self.written.add(rel)
                key, size = tree.key(rel), tree.files[rel]
                end = min(size, CARD_HEAD_BYTES)
                asked.append((rel, client.ask_range(0, key, 0, end, size) if end else None))
        written = False
        for rel, future in asked:
            data = future.result() if future is not None else b""
            if isinstance(data, BaseException):  # (as an unreadable card is locally: none)
                log.warning("%s/%s: cannot read: %s", tree.root_url, rel, _one_line(data))
                continue
            with contextlib.suppress(OSError):
                _write_file(f"{self.mirror}/{rel}", data)
                written = True
        return written

    def dirs_of(self, ckpt: CheckpointDir) -> list[str]:
        """The checkpoint's directory (first) and those above it whose run files its audit
        looks at, relative to the mirror's root ("." for the root)."""
        here = self.rel_dir(str(ckpt.path))
        dirs = [here if here is not None else ckpt.path.relative_to(self.mirror_root).as_posix()]
        for listed in ckpt.listed_run_files or {}:
            rel = self.rel_dir(listed)
            if rel is not None and rel not in dirs:
                dirs.append(rel)
        return dirs

    def rel_dir(self, path: str) -> str | None:
        """A directory's path in the mirror relative to its root ("." for the root), or
        None for one not below it (string work: pathlib's ~10 us a call, thousands)."""
        if path == self.mirror:
            return "."
        prefix = self.fetched.prefix
        return path[len(prefix) :] if path.startswith(prefix) else None

    def audit(
        self, pending: _Pending, options: AuditOptions, base_expected: Expected | None
    ) -> CheckpointReport:
        from pyaudit.auditing.pipeline import audit_checkpoint
        from pyaudit.auditing.structure import run_file_names, weights_index

        ckpt, tree = pending.ckpt, self.tree
        # Its own config, adapter config and weights index held for the audit as fetched,
        # their digests taken; the run arguments of the directories above it resolved: each
        # of these that could not be fetched stands in the mirror as an empty file (an
        # unreadable finding below). The audit reads them, and the run files of other
        # directories (the runs and base models its files name), from the fetched bytes
        # (self.fetched), never from the mirror.
        dirs = self.dirs_of(ckpt)
        for directory in dirs:
            for name in GLOBAL_RUN_FILES if directory == dirs[0] else RUN_ARGS_FILES:
                rel = name if directory == "." else f"{directory}/{name}"
                future = tree.run_files.get(rel)
                if future is None:
                    continue
                if directory == dirs[0] and name in (CONFIG, ADAPTER_CONFIG):
                    self.give(rel, future)
                elif not isinstance(future.result(), bytes):
                    self.materialise(rel, future)
        index = weights_index(ckpt)
        for rel, future in pending.indexes:
            if index is not None and rel == self.rel(ckpt, index):
                self.give(rel, future)
            else:
                self.materialise(rel, future)
        headers: dict[str, Header] = {}
        for name, size, future in pending.headers:
            data = future.result()
            local = ckpt.file(name)
            if isinstance(data, BaseException):
                tree.client.transfer.failed += 1
                core = _Unread(local, size, f"cannot read: {_one_line(data)}")
                headers[name] = Header(local, cast(Any, core))
            else:
                headers[name] = parse_header_bytes(data, size, local)
        pending.read = headers
        pickled = None
        if pending.pickled is not None:
            for rel, future in pending.pickled:
                self.materialise(rel, future)
            if not any(rel in self.failed for rel, _ in pending.pickled):
                from pyaudit.auditing.pickled import read_pickled

                pickled = read_pickled(ckpt)
        digests = {name: self.digests.get(self.rel(ckpt, name)) for name in run_file_names(ckpt)}
        pending.digests = digests
        try:
            report = audit_checkpoint(
                ckpt, headers, options, base_expected, digests=digests, cache=self.cache,
                pickled=pickled, fetched=self.fetched,
            )
            if self.read_cards(ckpt, report):  # (rare: a finding a card may explain)
                report = audit_checkpoint(
                    ckpt, headers, options, base_expected, digests=digests, cache=self.cache,
                    pickled=pickled, fetched=self.fetched,
                )
        finally:
            self.fetched.held.clear()  # (an index can be MBs: not kept past its audit)
        extra = []
        # Files that could not be read, of this directory and of those above it whose
        # run files the audit looks at.
        if self.failed:
            here = dirs[0]
            for rel, why in self.failed.items():
                if (posixpath.dirname(rel) or ".") in dirs:
                    name = posixpath.relpath(rel, here)
                    extra.append(finding("unreadable", f"{name}: cannot read: {why}"))
        if extra:
            # A run file that could not be fetched stands in the mirror as an empty placeholder,
            # which the audit then calls invalid: one finding (unreadable) says what happened.
            unread = tuple(f"{f.message.split(': cannot read: ')[0]}: " for f in extra)
            kept = (
                f
                for f in report.findings
                if not (f.code == "invalid-file" and f.message.startswith(unread))
            )
            findings = (*kept, *extra)
            status = status_of(findings, options.fail_on)
            report = dataclasses.replace(report, findings=findings, status=status)
        for rel, _ in pending.indexes:  # index files can be MBs: not kept past their audit
            if rel in self.written:
                with contextlib.suppress(OSError):
                    _write_file(f"{self.mirror}/{rel}", b"")
        return _rewrite(report, self.mirror, tree.root_url)


class _Fetched:
    """A scan's fetched run files (config, adapter config, run arguments; the audited
    checkpoint's own index) by their path in its mirror, as the audit asks
    (:class:`pyaudit.runfiles.Fetched`): the bytes read, or
    None where the disk answers (a path outside the mirror or not a run file; a file that
    could not be read, then made an empty file there, as the audit's findings expect)."""

    def __init__(self, scan: _Scan) -> None:
        self.scan = scan
        self.prefix = scan.mirror + "/"
        # rel -> bytes of the audited checkpoint's own run and index files (_Scan.give)
        self.held: dict[str, bytes] = {}

    def get(self, path: str, /) -> bytes | None:
        if not path.startswith(self.prefix):
            return None
        rel = posixpath.normpath(path[len(self.prefix) :])  # ("a/../b": no link in a mirror)
        held = self.held.get(rel)
        if held is not None:
            return held
        future = self.scan.tree.run_files.get(rel)
        if future is None or rel in self.scan.written:
            return None
        data = future.result()
        if isinstance(data, bytes):
            return data
        self.scan.materialise(rel, future)
        return None


@dataclass
class _Unread:
    """The core header interface for a file whose bytes could not be fetched (io-error)."""

    path: str
    file_size: int
    message: str
    ok: bool = False
    rule: str = "io-error"
    error_tensor: str | None = None
    header_size: int = 0
    data_size: int = 0
    metadata: dict[str, str] | None = None
    digest: int = 0

    def __len__(self) -> int:
        return 0

    def names(self) -> list[str]:
        return []

    def table(self) -> tuple[list[str], list[str], list[tuple[int, ...]], list[tuple[int, int]]]:
        return [], [], [], []


def scan_tree(
    tree: RemoteTree,
    options: AuditOptions,
    jobs: int | None = None,
    base_expected: Expected | None = None,
) -> Iterator[CheckpointReport]:
    """Audit every checkpoint of one listed URL, in discovery order."""
    from pyaudit.auditing.cache import AuditCache
    from pyaudit.auditing.consensus import Consensus
    from pyaudit.auditing.pipeline import audit_checkpoint
    from pyaudit.oracle import OracleSession

    workdir = Path(tempfile.mkdtemp(prefix="pyaudit-remote-", dir=_scratch()))
    name = posixpath.basename(tree.root.rstrip("/")) or "root"
    mirror_root = workdir / "m" / name
    oracle = OracleSession()  # this store's transformers oracle: a worker on first need
    consensus = Consensus(options.fail_on)  # checkpoints no manifest knows, held together
    try:
        mirror_root.mkdir(parents=True)
        # The mirror made as the pages arrive; requests of the first pages are in flight.
        short = tree.mirror_while_listed(mirror_root)
        if short is not None:
            root = CheckpointDir(path=mirror_root, display=tree.root_url, unlisted=short)
            yield audit_checkpoint(root, {}, options, base_expected)
        if tree.unscanned:  # objects a checkpoint may hold: said, never skipped unseen
            root = CheckpointDir(path=mirror_root, display=tree.root_url,
                                 unlisted=_unscanned(tree))
            yield audit_checkpoint(root, {}, options, base_expected)
        scan = _Scan(tree, mirror_root, AuditCache(fast=options.fast_path, oracle=oracle))
        given = str(mirror_root / tree.single) if tree.single else str(mirror_root)
        checkpoints = discover(given, None if tree.single else tree.mirror_listing(mirror_root))
        window = WINDOW * tree.client.in_flight
        ahead: deque[_Pending] = deque()
        files_ahead = 0
        more = True
        while True:
            while more and files_ahead < window:
                ckpt = next(checkpoints, None)
                if ckpt is None:
                    more = False
                    break
                if ckpt.display == given:
                    ckpt.display = tree.url.rstrip("/") if tree.single is None else tree.url
                pending = scan.schedule(ckpt)
                files_ahead += max(1, len(pending.headers))
                ahead.append(pending)
            if not ahead:
                break
            pending = ahead.popleft()
            files_ahead -= max(1, len(pending.headers))
            report = scan.audit(pending, options, base_expected)
            if not consensus.hold(pending.ckpt, pending.read, pending.digests, report):
                yield report
        yield from consensus.finish()  # before the mirror (the configs hashed) is removed
    finally:
        # The mirror removed on a thread of its own while the store's client and fetching
        # process close (natively, the GIL released: shutil.rmtree's ~10 us of Python per
        # entry was ~50 ms of a 1,001-checkpoint sweep's mirror; ~10 ms now, as long as
        # the closing), and removed before this returns.
        removal: list[int] = []
        remover = threading.Thread(target=lambda: removal.append(remove_tree(str(workdir))),
                                   name="pyaudit-mirror-removal")
        remover.start()
        try:
            oracle.close()
            tree.close()
        finally:
            remover.join()
        failed = removal[0] if removal else errno.EIO
        if failed:
            log.warning("%s: cannot remove all of it: %s", workdir, os.strerror(failed))


def _scratch() -> str | None:
    """Where the mirror goes: memory (/dev/shm) where there is one (thousands of empty
    files and directories, made and removed), else the temporary directory."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) and not os.environ.get("TMPDIR"):
        return shm
    return None


class RemoteScan:
    """The reports of :func:`scan_paths`, and what the remote stores were asked
    (``transfer``, complete once the reports are)."""

    def __init__(self, reports: Iterator[CheckpointReport], transfer: Transfer) -> None:
        self._reports = reports
        self.transfer = transfer

    def __iter__(self) -> RemoteScan:
        return self

    def close(self) -> None:
        """Give the scan up: no further request or report; the mirrors are removed."""
        close = getattr(self._reports, "close", None)
        if close is not None:
            close()

    def __next__(self) -> CheckpointReport:
        return next(self._reports)


_LISTED: dict[str, RemoteTree] = {}  # listed by prepare(), taken by scan_paths()
_LISTED_LOCK = threading.Lock()


def _in_flight(jobs: int | None) -> int:
    return 8 * jobs if jobs else IN_FLIGHT


def start_listing(
    paths: Iterable[str], jobs: int | None = None,
    first_pages: Mapping[str, FirstPage] | None = None,
    fetchers: dict[str, Fetcher] | None = None,
) -> None:
    """Start listing every URL among ``paths`` (kept for :func:`prepare` and
    :func:`scan_paths`) and return: the caller's own imports then overlap the first round
    trips. ``first_pages``: pages asked already (:func:`pyaudit.firstpage.ask`), by URL,
    taken as those URLs' first; ``fetchers``: processes started for their GETs
    (:func:`pyaudit.fetcher.spawn`), taken out of it by the URLs listed (the caller closes
    the others). At most ``pyaudit.fetcher.MAX_PROCESSES`` of the listings started at once
    have such a process (the others' GETs are sent by this one). A missing driver or a
    malformed URL raises :class:`RemoteError` here."""
    from pyaudit.fetcher import MAX_PROCESSES

    with _LISTED_LOCK:
        fetching = sum(tree.client.fetcher is not None for tree in _LISTED.values())
    for url in [p for p in paths if is_url(p)]:
        with _LISTED_LOCK:
            if url in _LISTED:
                continue
        first = (first_pages or {}).get(url)
        fetcher = fetchers.pop(url, None) if fetchers is not None else None
        try:
            tree = RemoteTree(url, _in_flight(jobs), wait=False, first_page=first,
                              fetcher=fetcher, spawn=fetching < MAX_PROCESSES)
        except BaseException:
            if fetcher is not None:
                fetcher.close()
            raise
        fetching += tree.client.fetcher is not None
        with _LISTED_LOCK:
            _LISTED[url] = tree
        # Until its first request is out (the client made, the first page presigned): the
        # caller's imports then overlap that round trip instead of delaying it.
        tree.client.asked.wait(FIRST_ASK_WAIT)


def discard(paths: Iterable[str]) -> None:
    """Forget the listings of ``paths`` (a scan that will not run)."""
    for p in paths:
        with _LISTED_LOCK:
            tree = _LISTED.pop(p, None)
        if tree is not None:
            tree.close()


def prepare(paths: Iterable[str], verify_data: bool = False, jobs: int | None = None) -> None:
    """List every URL among ``paths`` (kept for :func:`scan_paths`; started by
    :func:`start_listing` or now) until its first page: a URL that cannot be listed, a missing
    driver or an option remote PATHs cannot honour raises :class:`RemoteError` before
    anything is audited. Run and header files are requested while the listing arrives."""
    urls = [p for p in paths if is_url(p)]
    if urls and verify_data:
        raise RemoteUsage("--verify-data reads tensor data: not available for remote PATHs")
    start_listing(urls, jobs)
    for url in urls:
        with _LISTED_LOCK:
            tree = _LISTED.get(url)
        if tree is None:
            continue
        try:
            tree.ready()
        except RemoteError:
            with _LISTED_LOCK:
                _LISTED.pop(url, None)
            raise


def scan_paths(
    paths: Iterable[str],
    options: AuditOptions | None = None,
    jobs: int | None = None,
    base_expected: Expected | None = None,
) -> Iterator[CheckpointReport]:
    """:func:`pyaudit.sweep.scan`, with URLs (``"://"`` in a PATH) through a remote store.

    Every URL is listed before this returns, so a URL that does not exist, or a missing
    driver, raises :class:`RemoteError` here, before any report. The iterator returned
    has a ``transfer`` (:class:`Transfer`): requests and bytes, once iterated.
    """
    from pyaudit.auditing.results import AuditOptions
    from pyaudit.sweep import load_base
    from pyaudit.sweep import scan as sweep

    paths = list(paths)
    options = options or AuditOptions()
    if not any(is_url(p) for p in paths):
        return sweep(paths, options, jobs, base_expected)
    prepare(paths, options.verify_data, jobs)
    with _LISTED_LOCK:
        trees = {p: _LISTED.pop(p) for p in paths if is_url(p) and p in _LISTED}
    if options.base is not None and base_expected is None:
        base_expected = load_base(options.base, jobs)
    transfer = Transfer()

    def run() -> Iterator[CheckpointReport]:
        local: list[str] = []
        try:
            for p in paths:
                if p in trees:
                    if local:
                        yield from sweep(local, options, jobs, base_expected)
                        local = []
                    tree = trees.pop(p)
                    try:
                        yield from scan_tree(tree, options, jobs, base_expected)
                    finally:
                        transfer.add(tree.client.transfer)
                else:
                    local.append(p)
            if local:
                yield from sweep(local, options, jobs, base_expected)
        finally:
            for tree in trees.values():
                tree.close()

    return RemoteScan(run(), transfer)

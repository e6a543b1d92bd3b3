"""Azure Blob Storage on 127.0.0.1, answering from a directory (``ROOT/CONTAINER/BLOB`` is
the blob ``BLOB`` of container ``CONTAINER`` of the one account), for tests of ``az://``
scans through adlfs (``AzureBlobFileSystem``) and the Azure SDK it drives
(``azure-storage-blob``): point ``AZURE_STORAGE_CONNECTION_STRING`` at :attr:`url`.

Path-style URLs as the storage emulators serve them (``/ACCOUNT/CONTAINER/BLOB``), and only
what adlfs asks when a sweep lists a container and reads byte ranges of its blobs (read from
adlfs' ``_find``, ``_info``, ``_cat_file`` and the SDK's generated operations and models:
``ContainerOperations.list_blob_flat_segment``, ``BlobOperations.download``,
``BlobOperations.get_properties``, ``ListBlobsFlatSegmentResponse``):

- ``GET /ACCOUNT/CONTAINER?restype=container&comp=list`` (List Blobs: ``prefix``,
  ``marker``, ``maxresults``; ``delimiter`` for a hierarchy): an ``EnumerationResults`` XML
  document, paged by ``NextMarker`` (``page_size`` blobs a page; the service's most is 5,000);
- ``GET /ACCOUNT/CONTAINER?restype=container``: the container's properties;
- ``GET|HEAD /ACCOUNT/CONTAINER/BLOB``, with or without ``x-ms-range`` / ``Range``: the bytes
  (206 and ``Content-Range`` for a range), or the properties (HEAD).

Errors are the service's: the status, an ``x-ms-error-code`` header and an ``<Error>``
document (``ContainerNotFound``, ``BlobNotFound``, ``InvalidRange``). Anything else is a 400
``UnsupportedHttpVerb`` / ``InvalidQueryParameterValue``, and recorded (``unknown``).
No signature is checked; each request's ``Authorization`` header is recorded (``auth``: the
scheme and account, ``SharedKey ACCOUNT``, never the signature) so a test can see the
account key was used as the SDK uses it. Counted: requests by kind, and per blob the range
of each GET and the bytes sent; connections accepted.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from pyaudit.testing.loopback import CountingHandler, Serving

ACCOUNT = "devstoreaccount1"
# Any base64 text is a key the SDK signs with; the fake checks no signature.
KEY = "cHlhdWRpdC10ZXN0LWtleS1ub3QtYS1zZWNyZXQtb2YtYW55LWFjY291bnQ="
VERSION = "2026-02-06"  # x-ms-version answered (the SDK sends its own; none is checked)
MAX_RESULTS = 5000  # List Blobs: the most a page holds


class FakeAzure:
    """``with FakeAzure(root) as az: az.connection_string``."""

    def __init__(self, root: str | Path, page_size: int = MAX_RESULTS) -> None:
        self.root = Path(root)
        self.page_size = page_size
        self.kinds: Counter[str] = Counter()
        self.file_bytes = 0
        self.ranges: dict[str, list[str | None]] = {}  # "CONTAINER/BLOB" -> range of each GET
        self.sent: Counter[str] = Counter()  # "CONTAINER/BLOB" -> bytes sent
        self.auth: set[str | None] = set()  # "SharedKey ACCOUNT" (the signature cut off)
        self.connections = 0
        self.unknown: list[str] = []
        self.lock = threading.Lock()
        self._serving: Serving | None = None

    @property
    def url(self) -> str:
        """The account's blob endpoint."""
        assert self._serving is not None
        return f"http://127.0.0.1:{self._serving.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.url};"
        )

    def __enter__(self) -> FakeAzure:
        fake = self

        class Handler(_Handler):
            azure = fake
            counted = fake

        self._serving = Serving(Handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._serving is not None:
            self._serving.stop()
            self._serving = None

    # What the account holds ----------------------------------------------------------------

    def container(self, name: str) -> Path | None:
        path = self.root / name
        ok = name not in ("", ".", "..") and "/" not in name
        return path if ok and path.is_dir() else None

    def blob(self, container: Path, name: str) -> Path | None:
        path = container / name
        ok = name and ".." not in Path(name).parts and not name.endswith("/")
        return path if ok and path.is_file() else None

    def blobs(self, container: Path, prefix: str) -> list[tuple[str, int, float]]:
        """(name, size, mtime) of every blob whose name starts with ``prefix``, by name."""
        out = []
        for p in container.rglob("*"):
            if p.is_file():
                name = p.relative_to(container).as_posix()
                if name.startswith(prefix):
                    st = p.stat()
                    out.append((name, st.st_size, st.st_mtime))
        return sorted(out)


def _etag(name: str, size: int, mtime: float) -> str:
    return '"0x' + hashlib.md5(f"{name}:{size}:{mtime}".encode()).hexdigest()[:15].upper() + '"'


def _date(t: float) -> str:
    return formatdate(t, usegmt=True)


def _properties(name: str, size: int, mtime: float) -> str:
    return (
        f"<Properties><Creation-Time>{_date(mtime)}</Creation-Time>"
        f"<Last-Modified>{_date(mtime)}</Last-Modified>"
        f"<Etag>{_etag(name, size, mtime)}</Etag><Content-Length>{size}</Content-Length>"
        "<Content-Type>application/octet-stream</Content-Type><BlobType>BlockBlob</BlobType>"
        "<AccessTier>Hot</AccessTier><AccessTierInferred>true</AccessTierInferred>"
        "<LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState>"
        "<ServerEncrypted>true</ServerEncrypted></Properties>"
    )


class _Handler(CountingHandler):
    azure: FakeAzure

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
              head: bool = False, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("x-ms-version", VERSION)
        self.send_header("x-ms-request-id", "00000000-0000-0000-0000-000000000000")
        self.send_header("Date", formatdate(usegmt=True))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        ).encode()
        self._send(status, body, {"Content-Type": "application/xml", "x-ms-error-code": code},
                   head)

    def _count(self, kind: str) -> None:
        auth = self.headers.get("Authorization")
        with self.azure.lock:
            self.azure.kinds[kind] += 1
            self.azure.auth.add(auth.rsplit(":", 1)[0] if auth else None)

    def _unknown(self, head: bool) -> None:
        self._count("other")
        with self.azure.lock:
            self.azure.unknown.append(f"{self.command} {self.path}")
        self._error(400, "UnsupportedHttpVerb", f"{self.command} {self.path}", head)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        parts = urlsplit(self.path)
        account, _, rest = unquote(parts.path).lstrip("/").partition("/")
        container_name, _, blob_name = rest.partition("/")
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if account != ACCOUNT or not container_name:
            self._unknown(head)
            return
        container = self.azure.container(container_name)
        if not blob_name and query.get("restype") == "container":
            kind = "list" if query.get("comp") == "list" else "container"
            if query.get("comp") not in (None, "list"):
                self._unknown(head)
                return
            self._count(kind)
            if container is None:
                self._error(404, "ContainerNotFound", "The specified container does not exist.",
                            head)
            elif kind == "list":
                self._list(container_name, container, query, head)
            else:
                self._send(200, b"", {"ETag": '"0x1"', "Last-Modified": _date(0),
                                      "x-ms-lease-status": "unlocked",
                                      "x-ms-lease-state": "available",
                                      "x-ms-has-immutability-policy": "false",
                                      "x-ms-has-legal-hold": "false"}, head)
            return
        if not blob_name or query.get("comp") is not None:
            self._unknown(head)
            return
        self._count("properties" if head else "get")
        path = self.azure.blob(container, blob_name) if container is not None else None
        if container is None:
            self._error(404, "ContainerNotFound", "The specified container does not exist.",
                        head)
        elif path is None:
            self._error(404, "BlobNotFound", "The specified blob does not exist.", head)
        else:
            self._blob(path, f"{container_name}/{blob_name}", head)

    def _list(self, name: str, container: Path, query: dict[str, str], head: bool) -> None:
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        marker = query.get("marker", "")
        try:
            wanted = int(query.get("maxresults") or MAX_RESULTS)
        except ValueError:
            self._error(400, "InvalidQueryParameterValue", "maxresults", head)
            return
        size = max(1, min(wanted, MAX_RESULTS, self.azure.page_size))
        entries: list[tuple[str, str]] = []  # (name, xml), blobs and prefixes in name order
        seen: set[str] = set()
        for blob, length, mtime in self.azure.blobs(container, prefix):
            cut = blob.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                virtual = blob[: cut + len(delimiter)]
                if virtual not in seen:
                    seen.add(virtual)
                    entries.append((virtual, f"<BlobPrefix><Name>{escape(virtual)}</Name>"
                                             "</BlobPrefix>"))
                continue
            entries.append((blob, f"<Blob><Name>{escape(blob)}</Name>"
                                  f"{_properties(blob, length, mtime)}<Metadata /></Blob>"))
        entries = [e for e in entries if e[0] > marker] if marker else entries
        page, more = entries[:size], len(entries) > size
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="{escape(self.azure.url)}/" '
            f'ContainerName="{escape(name)}">'
            f"<Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>"
            f"<MaxResults>{size}</MaxResults>"
            + (f"<Delimiter>{escape(delimiter)}</Delimiter>" if delimiter else "")
            + "<Blobs>" + "".join(xml for _, xml in page) + "</Blobs>"
            + f"<NextMarker>{escape(page[-1][0]) if more else ''}</NextMarker>"
            + "</EnumerationResults>"
        ).encode()
        self._send(200, body, {"Content-Type": "application/xml"}, head)

    def _blob(self, path: Path, name: str, head: bool) -> None:
        st = path.stat()
        size = st.st_size
        common = {
            "ETag": _etag(name, size, st.st_mtime), "Last-Modified": _date(st.st_mtime),
            "x-ms-creation-time": _date(st.st_mtime), "x-ms-blob-type": "BlockBlob",
            "x-ms-lease-status": "unlocked", "x-ms-lease-state": "available",
            "x-ms-server-encrypted": "true", "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        spec = self.headers.get("x-ms-range") or self.headers.get("Range") or ""
        if head or not spec:
            if not head:
                with self.azure.lock:
                    self.azure.ranges.setdefault(name, []).append(None)
            data = b"" if head else path.read_bytes()
            if not head:
                with self.azure.lock:
                    self.azure.file_bytes += len(data)
                    self.azure.sent[name] += len(data)
            self._send(200, data, common, head, length=size)
            return
        with self.azure.lock:
            self.azure.ranges.setdefault(name, []).append(spec)
        try:
            first_s, last_s = spec.removeprefix("bytes=").split("-", 1)
            first = int(first_s)
            last = min(int(last_s), size - 1) if last_s else size - 1
        except ValueError:
            self._error(400, "InvalidHeaderValue", f"x-ms-range: {spec}")
            return
        if first >= size or first > last:
            self._error(416, "InvalidRange", "The range specified is invalid for the current "
                        "size of the resource.")
            return
        with open(path, "rb") as f:
            f.seek(first)
            data = f.read(last - first + 1)
        with self.azure.lock:
            self.azure.file_bytes += len(data)
            self.azure.sent[name] += len(data)
        self._send(206, data, {**common, "Content-Range": f"bytes {first}-{last}/{size}"})

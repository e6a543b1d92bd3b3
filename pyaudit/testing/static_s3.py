"""The S3 requests a sweep makes, answered from a directory (``ROOT/BUCKET/KEY``), for
benchmarks behind :class:`pyaudit.testing.proxy.LatencyProxy` (``serve=ROOT``).

Path-style URLs, no authentication (signatures are not checked), as the S3 API documents
them: ``GET /BUCKET?list-type=2`` (ListObjectsV2: ``prefix``, ``max-keys`` up to 1,000,
``continuation-token``, ``start-after``, ``encoding-type=url``; no ``delimiter``),
``GET /BUCKET/KEY`` with or without
a ``Range: bytes=A-B`` (206 Partial Content), ``HEAD /BUCKET/KEY``, ``HEAD /BUCKET``. Anything
else is 501. Files are read per request (a few KB: headers); a listing walks the bucket's
directory at its first page, and its later pages are cut from that walk when the caller keeps
it (``held``), as one listing of a store that does not change meanwhile would see. ETags are
the MD5 of each file's bytes, as S3's are for an object uploaded in one PUT.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, quote_plus, unquote, urlsplit
from xml.sax.saxutils import escape

Answer = tuple[str, list[tuple[str, str]], bytes]


@dataclass
class Held:
    """What the fake keeps between requests, where its caller keeps it (the proxy)."""

    # (bucket, prefix) -> the objects a listing's first page walked, sorted
    listings: dict[tuple[str, str], list[tuple[str, os.stat_result]]] = field(
        default_factory=dict
    )
    # (path, size, mtime_ns) -> the file's ETag (the MD5 of its bytes, as S3's of a PUT)
    etags: dict[tuple[str, int, int], str] = field(default_factory=dict)
    # The store does not change while it is served (a benchmark's): each bucket is walked
    # once, each object looked at once, each listing entry written once, as S3 answers from
    # an index and not from a walk. Otherwise every first page walks the store again.
    frozen: bool = False
    walks: dict[str, list[tuple[str, os.stat_result]]] = field(default_factory=dict)
    # (bucket, key) -> (file, size, the headers of a GET), or None: no such object (frozen)
    objects: dict[tuple[str, str], tuple[str, int, list[tuple[str, str]]] | None] = field(
        default_factory=dict
    )
    buckets: dict[str, bool] = field(default_factory=dict)  # name -> whether it is one (frozen)
    # (bucket, key, URL-encoded) -> the key's <Contents> element of a listing (frozen)
    entries: dict[tuple[str, str, bool], str] = field(default_factory=dict)


MAX_KEYS = 1000


def _error(status: str, code: str, message: str) -> Answer:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message><RequestId>static</RequestId></Error>"
    ).encode()
    return f"HTTP/1.1 {status}", [("Content-Type", "application/xml")], body


def _objects(bucket: Path) -> list[tuple[str, os.stat_result]]:
    """Every file below ``bucket`` (directories linked in followed), by key, sorted."""
    out: list[tuple[str, os.stat_result]] = []
    pending = [(str(bucket), "")]
    while pending:
        path, prefix = pending.pop()
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir():  # (follows a link, as os.walk(followlinks=True) did)
                    pending.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.is_file():
                    out.append((prefix + entry.name, entry.stat()))
    out.sort(key=lambda item: item[0])
    return out


def _etag(path: Path, st: os.stat_result, held: Held | None) -> str:
    """S3's ETag of an object uploaded in one PUT: the MD5 of its bytes, quoted."""
    key = (str(path), st.st_size, st.st_mtime_ns)
    if held is not None and key in held.etags:
        return held.etags[key]
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    etag = f'"{digest.hexdigest()}"'
    if held is not None:
        held.etags[key] = etag
    return etag


def _list(
    bucket_name: str, bucket: Path, query: dict[str, list[str]], held_by: Held | None
) -> Answer:
    prefix = query.get("prefix", [""])[0]
    max_keys = min(int(query.get("max-keys", [str(MAX_KEYS)])[0]), MAX_KEYS)
    token = query.get("continuation-token", [""])[0]
    after = token or query.get("start-after", [""])[0]
    held = held_by.listings.get((bucket_name, prefix)) if held_by is not None and token else None
    frozen = held_by if held_by is not None and held_by.frozen else None
    if held is None:
        walked = frozen.walks.get(bucket_name) if frozen is not None else None
        if walked is None:
            walked = _objects(bucket)
            if frozen is not None:
                frozen.walks[bucket_name] = walked
        held = [(k, st) for k, st in walked if k.startswith(prefix)]
        if held_by is not None:
            held_by.listings[(bucket_name, prefix)] = held
    keys = [(k, st) for k, st in held if k > after]
    page, truncated = keys[:max_keys], len(keys) > max_keys
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
        f"<Name>{escape(bucket_name)}</Name><Prefix>{escape(prefix)}</Prefix>",
        f"<KeyCount>{len(page)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
    ]
    if truncated:
        parts.append(f"<NextContinuationToken>{escape(page[-1][0])}</NextContinuationToken>")
    encoded = query.get("encoding-type") == ["url"]
    if encoded:  # keys URL-encoded, as S3 does when asked (botocore asks when it presigns)
        parts.append("<EncodingType>url</EncodingType>")
    entries = frozen.entries if frozen is not None else None
    for key, st in page:
        entry = entries.get((bucket_name, key, encoded)) if entries is not None else None
        if entry is None:
            iso = _iso(st.st_mtime)
            shown = quote_plus(key, safe="/") if encoded else key
            entry = (
                f"<Contents><Key>{escape(shown)}</Key><LastModified>{iso}</LastModified>"
                f"<ETag>{escape(_etag(bucket / key, st, held_by))}</ETag>"
                f"<Size>{st.st_size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
            if entries is not None:
                entries[(bucket_name, key, encoded)] = entry
        parts.append(entry)
    parts.append("</ListBucketResult>")
    return "HTTP/1.1 200 OK", [("Content-Type", "application/xml")], "".join(parts).encode()


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def answer(
    root: str, method: str, target: str, headers: dict[str, str],
    held: Held | None = None,
) -> Answer:
    """The response (status line, headers, body) to one request; ``headers`` lower-cased.
    ``held``: where a listing's first page keeps the objects it walked, for the pages after it
    (by continuation token), instead of a walk of the store a page; and the files' ETags."""
    parts = urlsplit(target)
    segments = parts.path.lstrip("/").split("/", 1)
    bucket_name = unquote(segments[0])
    key = unquote(segments[1]) if len(segments) > 1 else ""
    bucket = Path(root) / bucket_name
    if not bucket_name or not _is_bucket(bucket, bucket_name, held):
        return _error("404 Not Found", "NoSuchBucket", f"{bucket_name}: no such bucket")
    if not key:
        query = parse_qs(parts.query, keep_blank_values=True)
        if method == "HEAD":
            return "HTTP/1.1 200 OK", [], b""
        if method == "GET" and query.get("list-type") == ["2"] and "delimiter" not in query:
            return _list(bucket_name, bucket, query, held)
        return _error("501 Not Implemented", "NotImplemented", f"{method} {target}")
    found = _object(bucket, bucket_name, key, held)
    if found is None:
        return _error("404 Not Found", "NoSuchKey", f"{key}: no such key")
    file, size, common = found
    if method == "HEAD":
        return "HTTP/1.1 200 OK", [*common, ("Content-Length", str(size))], b""
    if method != "GET":
        return _error("501 Not Implemented", "NotImplemented", f"{method} {target}")
    spec = headers.get("range", "")
    if not spec:
        return "HTTP/1.1 200 OK", common, Path(file).read_bytes()
    try:
        first_s, last_s = spec.removeprefix("bytes=").split("-", 1)
        first = int(first_s) if first_s else max(0, size - int(last_s))
        last = min(int(last_s), size - 1) if first_s and last_s else size - 1
    except ValueError:
        return _error("400 Bad Request", "InvalidArgument", f"range {spec!r}")
    if first >= size or first > last:
        return _error("416 Requested Range Not Satisfiable", "InvalidRange", spec)
    fd = os.open(file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        data = os.pread(fd, last - first + 1, first)
    finally:
        os.close(fd)
    return (
        "HTTP/1.1 206 Partial Content",
        [*common, ("Content-Range", f"bytes {first}-{last}/{size}")],
        data,
    )


def _is_bucket(bucket: Path, bucket_name: str, held: Held | None) -> bool:
    if held is None or not held.frozen:
        return bucket.is_dir()
    known = held.buckets.get(bucket_name)
    if known is None:
        known = held.buckets[bucket_name] = bucket.is_dir()
    return known


def _object(
    bucket: Path, bucket_name: str, key: str, held: Held | None
) -> tuple[str, int, list[tuple[str, str]]] | None:
    """(its file, its size, the headers of a GET) of an object, or None if there is none;
    looked at once per key when the store is ``frozen``."""
    frozen = held if held is not None and held.frozen else None
    if frozen is not None and (bucket_name, key) in frozen.objects:
        return frozen.objects[(bucket_name, key)]
    path = bucket / key
    found = None
    if ".." not in Path(key).parts and path.is_file():
        st = path.stat()
        common = [
            ("ETag", _etag(path, st, held)),
            ("Last-Modified", formatdate(st.st_mtime, usegmt=True)),
            ("Accept-Ranges", "bytes"),
        ]
        found = (str(path), st.st_size, common)
    if frozen is not None:
        frozen.objects[(bucket_name, key)] = found
    return found

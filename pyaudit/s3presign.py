"""Presigned S3 GET URLs at the cost of one HMAC, learnt from the filesystem's own client.

botocore's ``generate_presigned_url`` spends ~0.25 ms of CPU a URL (serialising the call,
resolving the endpoint ruleset, emitting events) before the HMAC that is the signature: in a
sweep of ~1,400 header reads that was the largest share of the event loop's CPU. The URL of
another key of the same bucket differs from a sample only in its path and signature, so a
:class:`Presigner` is *learnt* from one URL botocore presigned (its endpoint, addressing,
signature version, expiry, credentials and token are what the client chose) and kept only
when it reproduces that URL byte for byte from the key, the credentials and the sample's own
timestamp. Three forms are known: unsigned (anonymous), SigV2 query (``AWSAccessKeyId``,
``Signature``, ``Expires``: botocore's default presigning in us-east-1) and SigV4 query
(``X-Amz-*``, ``SignedHeaders=host``). Anything else (other parameters, another signed
header, a key with characters that need percent-encoding) is not learnt, and the caller keeps
asking botocore. Nothing here reads the environment or prints a credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, unquote, urlsplit

#: Keys whose URL path is the key itself (no percent-encoding, no normalisation question).
PLAIN_KEY = re.compile(r"[A-Za-z0-9/._\-]+")
_V2 = {"AWSAccessKeyId", "Signature", "Expires"}
_V4 = {
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
}
_TOKEN_V2 = "x-amz-security-token"
_TOKEN_V4 = "X-Amz-Security-Token"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


def _enc(text: str) -> str:
    return quote(text, safe="-_.~")


@dataclass(frozen=True)
class Presigner:
    """The URL of a GET of ``bucket``'s key, as the client that presigned the sample would
    write it at the sample's time (valid as long as the sample is)."""

    bucket: str
    base: str  # scheme://host + the path up to the key
    query: tuple[str, str]  # the query's text before and after the signature's value
    sign: Callable[[str], str] | None  # key -> encoded signature; None: unsigned

    def url(self, key: str) -> str | None:
        """The URL of ``key``; None when the key is not plain (ask the client)."""
        if not PLAIN_KEY.fullmatch(key) or key.startswith("/") or "//" in key:
            return None
        if self.sign is None:
            return self.base + key
        before, after = self.query
        return f"{self.base}{key}?{before}{self.sign(key)}{after}"


def _split_at_key(sample: str, key: str) -> tuple[SplitResult, str] | None:
    """A URL of plain ``key`` split, and its text up to the key; None for a key that is not
    plain or a URL whose path does not end with it."""
    if not PLAIN_KEY.fullmatch(key) or key.startswith("/") or "//" in key:
        return None
    parts = urlsplit(sample)
    if parts.fragment or not parts.path.endswith("/" + key):
        return None
    return parts, f"{parts.scheme}://{parts.netloc}{parts.path[: -len(key)]}"


def learn(sample: str, bucket: str, key: str, creds: Credentials | None) -> Presigner | None:
    """A :class:`Presigner` that writes ``sample`` (botocore's URL of ``bucket``/``key``)
    again from the key, or None when this module cannot (then keep asking the client)."""
    split = _split_at_key(sample, key)
    if split is None:
        return None
    parts, base = split
    pairs = [p.split("=", 1) for p in parts.query.split("&")] if parts.query else []
    if any(len(p) != 2 for p in pairs):
        return None
    raw = [(k, v) for k, v in pairs]
    params = {k: unquote(v) for k, v in raw}
    if len(params) != len(raw):
        return None
    names = set(params)
    found: Presigner | None
    if not names:
        found = Presigner(bucket, base, ("", ""), None)
    elif creds is None:
        return None
    elif names - {_TOKEN_V2} == _V2:
        found = _v2(bucket, base, raw, params, creds)
    elif names - {_TOKEN_V4} == _V4:
        found = _v4(bucket, base, parts.scheme, parts.netloc, raw, params, creds)
    else:
        return None
    if found is None or found.url(key) != sample:
        return None
    return found


def _around(raw: list[tuple[str, str]], name: str) -> tuple[str, str]:
    """The query's text before and after the value of parameter ``name``."""
    at = [k for k, _ in raw].index(name)
    before = "".join(f"{k}={v}&" for k, v in raw[:at]) + f"{name}="
    after = "".join(f"&{k}={v}" for k, v in raw[at + 1 :])
    return before, after


def _v2(
    bucket: str,
    base: str,
    raw: list[tuple[str, str]],
    params: dict[str, str],
    creds: Credentials,
) -> Presigner | None:
    if params["AWSAccessKeyId"] != creds.access_key or params.get(_TOKEN_V2) != creds.token:
        return None
    head = f"GET\n\n\n{params['Expires']}\n"
    if creds.token is not None:
        head += f"{_TOKEN_V2}:{creds.token}\n"
    secret = creds.secret_key.encode()

    def sign(key: str) -> str:
        text = f"{head}/{bucket}/{key}".encode()
        digest = hmac.new(secret, text, hashlib.sha1).digest()
        return _enc(base64.b64encode(digest).decode())

    return Presigner(bucket, base, _around(raw, "Signature"), sign)


def _v4(
    bucket: str,
    base: str,
    scheme: str,
    netloc: str,
    raw: list[tuple[str, str]],
    params: dict[str, str],
    creds: Credentials,
) -> Presigner | None:
    if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256" or params["X-Amz-SignedHeaders"] != "host":
        return None
    if params.get(_TOKEN_V4) != creds.token:
        return None
    scope = params["X-Amz-Credential"].split("/")
    if len(scope) != 5 or scope[0] != creds.access_key or scope[4] != "aws4_request":
        return None
    _, day, region, service, _ = scope
    when = params["X-Amz-Date"]
    host = netloc.lower()
    for default in ((":80" if scheme == "http" else ""), (":443" if scheme == "https" else "")):
        if default and host.endswith(default):
            host = host[: -len(default)]
    path = urlsplit(base).path
    signed = sorted((k, v) for k, v in params.items() if k != "X-Amz-Signature")
    query = "&".join(f"{_enc(k)}={_enc(v)}" for k, v in signed)
    tail = f"\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD"
    signing = ("AWS4" + creds.secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        signing = hmac.new(signing, part.encode(), hashlib.sha256).digest()
    prefix = f"AWS4-HMAC-SHA256\n{when}\n{day}/{region}/{service}/aws4_request\n"

    def sign(key: str) -> str:
        canonical = f"GET\n{path}{key}{tail}".encode()
        text = prefix + hashlib.sha256(canonical).hexdigest()
        return hmac.new(signing, text.encode(), hashlib.sha256).hexdigest()

    return Presigner(bucket, base, _around(raw, "X-Amz-Signature"), sign)


# --- a bucket's URLs at any time: the shape of botocore's, kept between scans ----------------

#: Seconds a URL pyaudit asks botocore to presign is valid (``ExpiresIn``).
PRESIGN_EXPIRES = 3600
_V2_ORDER: tuple[str, ...] = ("AWSAccessKeyId", "Signature", _TOKEN_V2, "Expires")
_V4_ORDER = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
             "X-Amz-SignedHeaders", _TOKEN_V4, "X-Amz-Signature")


@dataclass(frozen=True)
class Shape:
    """How botocore's client writes a bucket's presigned URLs, apart from the clock and the
    credentials: the signature's form, the URLs' bases (endpoint, addressing) and, for
    SigV4, the region and service of its scope. Learnt by :func:`learn_shape` only where it
    writes botocore's own URLs again byte for byte; it holds no credential, so it can be kept
    on disk (:mod:`pyaudit.s3direct`) and sign the next scan's URLs before botocore is
    imported."""

    bucket: str
    kind: str  # "v2" (SigV2 query) or "v4" (SigV4 query, SignedHeaders=host)
    get_base: str  # scheme://host + the path up to a key
    list_base: str  # the URL of the bucket's listing, before its query
    expires: int  # seconds a URL is valid
    region: str = ""  # SigV4's scope
    service: str = ""

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: object) -> Shape | None:
        """The shape a :meth:`to_json` wrote, or None for anything else."""
        if not isinstance(data, dict):
            return None
        names = {f for f in cls.__dataclass_fields__}
        if set(data) != names or data.get("kind") not in ("v2", "v4"):
            return None
        if not isinstance(data.get("expires"), int) or any(
            not isinstance(data[n], str) for n in names - {"expires"}
        ):
            return None
        return cls(**data)

    def _auth(self, creds: Credentials, now: float, path: str, params: list[tuple[str, str]],
              resource: str) -> str:
        """The query of a GET of ``path`` with ``params`` (in the order given) and the
        signature's parameters, signed at ``now`` (seconds since the epoch)."""
        if self.kind == "v2":
            expires = str(int(now) + self.expires)
            head = f"GET\n\n\n{expires}\n"
            if creds.token is not None:
                head += f"{_TOKEN_V2}:{creds.token}\n"
            digest = hmac.new(creds.secret_key.encode(), (head + resource).encode(),
                              hashlib.sha1).digest()
            auth = {"AWSAccessKeyId": creds.access_key,
                    "Signature": base64.b64encode(digest).decode(),
                    _TOKEN_V2: creds.token, "Expires": expires}
            order = _V2_ORDER
        else:
            when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
            day = when[:8]
            scope = f"{day}/{self.region}/{self.service}/aws4_request"
            auth = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                    "X-Amz-Credential": f"{creds.access_key}/{scope}", "X-Amz-Date": when,
                    "X-Amz-Expires": str(self.expires), "X-Amz-SignedHeaders": "host",
                    _TOKEN_V4: creds.token}
            signed = sorted([*params, *((k, v) for k, v in auth.items() if v is not None)])
            query = "&".join(f"{_enc(k)}={_enc(v)}" for k, v in signed)
            host = _signed_host(self.get_base)
            canonical = f"GET\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD"
            text = (f"AWS4-HMAC-SHA256\n{when}\n{scope}\n"
                    + hashlib.sha256(canonical.encode()).hexdigest())
            signing = ("AWS4" + creds.secret_key).encode()
            for part in (day, self.region, self.service, "aws4_request"):
                signing = hmac.new(signing, part.encode(), hashlib.sha256).digest()
            auth["X-Amz-Signature"] = hmac.new(signing, text.encode(), hashlib.sha256).hexdigest()
            order = _V4_ORDER
        pairs = [*params, *((k, auth[k]) for k in order if auth.get(k) is not None)]
        return "&".join(f"{_enc(k)}={_enc(v or '')}" for k, v in pairs)

    def list_url(self, creds: Credentials, now: float, params: list[tuple[str, str]]) -> str:
        """The URL of a ListObjectsV2 page with ``params`` (botocore's order: ``list-type``,
        ``prefix``, ``continuation-token``, ``encoding-type``), signed at ``now``."""
        path = urlsplit(self.list_base).path or "/"
        query = self._auth(creds, now, path, params, f"/{self.bucket}/")
        return f"{self.list_base}?{query}"

    def presigner(self, creds: Credentials, now: float) -> Presigner | None:
        """GET URLs of the bucket's plain keys, signed at ``now`` (learnt, as from botocore's
        URL, from this shape's URL of one key)."""
        path = urlsplit(self.get_base).path
        query = self._auth(creds, now, path + "k", [], f"/{self.bucket}/k")
        return learn(f"{self.get_base}k?{query}", self.bucket, "k", creds)


def list_params(prefix: str, token: str | None) -> list[tuple[str, str]]:
    """The query of a ListObjectsV2 page as botocore writes it when it presigns one."""
    params = [("list-type", "2"), ("prefix", prefix)]
    if token:
        params.append(("continuation-token", token))
    return [*params, ("encoding-type", "url")]


def _signed_host(base: str) -> str:
    """The host header SigV4 signs for URLs of ``base`` (the default port left out)."""
    parts = urlsplit(base)
    host = parts.netloc.lower()
    default = {"http": ":80", "https": ":443"}.get(parts.scheme, "")
    return host[: -len(default)] if default and host.endswith(default) else host


def learn_shape(
    list_sample: str,
    list_params: list[tuple[str, str]],
    get_sample: str,
    bucket: str,
    key: str,
    creds: Credentials,
) -> Shape | None:
    """The :class:`Shape` of two URLs botocore presigned (a listing page with
    ``list_params`` and a GET of ``key``), or None unless it writes both again byte for byte
    from the credentials and the time each was signed at. (Each its own time: botocore
    signs the two apart, and a second may turn between them.)"""
    split = _split_at_key(get_sample, key)
    if split is None:
        return None
    get_parts, get_base = split
    list_base, _, list_query = list_sample.partition("?")
    params = _query(get_parts.query)
    if set(params) - {_TOKEN_V2} == _V2:
        # (the expiry is not in a SigV2 URL: the one pyaudit asks for, from the sample's end)
        shape = Shape(bucket, "v2", get_base, list_base, PRESIGN_EXPIRES)
    elif set(params) - {_TOKEN_V4} == _V4:
        scope = unquote(params["X-Amz-Credential"]).split("/")
        if len(scope) != 5:
            return None
        try:
            expires = int(params["X-Amz-Expires"])
        except ValueError:
            return None
        shape = Shape(bucket, "v4", get_base, list_base, expires, scope[2], scope[3])
    else:
        return None
    listed_at, got_at = _signed_at(shape, _query(list_query)), _signed_at(shape, params)
    if not list_query or listed_at is None or got_at is None:
        return None
    if shape.list_url(creds, listed_at, list_params) != list_sample:
        return None
    presigner = shape.presigner(creds, got_at)
    if presigner is None or presigner.url(key) != get_sample:
        return None
    return shape


def _query(query: str) -> dict[str, str]:
    """A URL's query as name -> value, as written (not decoded)."""
    return dict(p.split("=", 1) for p in query.split("&") if "=" in p)


def _signed_at(shape: Shape, params: dict[str, str]) -> float | None:
    """When a URL of ``shape`` with query ``params`` was presigned (seconds since the epoch):
    SigV2 writes its end (the shape's expiry after it), SigV4 its date; None without it."""
    try:
        if shape.kind == "v2":
            return float(int(params["Expires"]) - shape.expires)
        import calendar  # (only when a shape is learned: ~3 ms of imports, with datetime)

        return float(calendar.timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ")))
    except (KeyError, ValueError):
        return None

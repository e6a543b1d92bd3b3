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
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

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


def learn(sample: str, bucket: str, key: str, creds: Credentials | None) -> Presigner | None:
    """A :class:`Presigner` that writes ``sample`` (botocore's URL of ``bucket``/``key``)
    again from the key, or None when this module cannot (then keep asking the client)."""
    if not PLAIN_KEY.fullmatch(key) or key.startswith("/") or "//" in key:
        return None
    parts = urlsplit(sample)
    if parts.fragment or not parts.path.endswith("/" + key):
        return None
    base = f"{parts.scheme}://{parts.netloc}{parts.path[: -len(key)]}"
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

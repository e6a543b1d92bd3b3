"""The first listing page of each ``s3://`` PATH, asked before the rest of pyaudit is imported.

Every request of a remote scan waits for the first listing page: until it is in, nothing is
known to ask for. The command line imports asyncio and the scan's modules (~0.12 s of CPU)
before its event loop could send that request. Where an earlier scan in this environment kept
the shape of the bucket's URLs (:mod:`pyaudit.s3direct`), the page needs none of them: its
URL is signed here, and a thread fetches it over a blocking socket
(:func:`pyaudit.httpwire.get_blocking`, the same reader as the scan's client) while the
imports run.

The scan's listing (``pyaudit.remote``) takes the answer as its first page's, through the
same handling of HTTP errors and refusals as a page it asked for itself; when the request
failed before an answer (the connection), it asks again the usual way. Only where the usual
path would sign the same URL with the same shape: an ``s3://`` URL that
:mod:`pyaudit.s3direct` serves, a shape kept for its bucket, credentials in the environment,
and no proxy variable (the first page then goes the usual way, through the proxy).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable

from pyaudit.httpwire import Response, get_blocking, names_a_proxy
from pyaudit.s3direct import DirectS3, applies, env_credentials, load_shape, shape_key
from pyaudit.s3presign import Credentials, Shape, list_params

MAX_LISTING_BYTES = 64 * 1024 * 1024  # a listing page is read up to this (1,000 keys: ~0.3 MB)
SOCKET_TIMEOUT = 60.0  # s the connection, and each read, may take


class FirstPage:
    """One URL's first listing page, asked on a thread of its own from construction on."""

    def __init__(self, bucket: str, prefix: str, shape: Shape, creds: Credentials,
                 cafile: str | None) -> None:
        self.bucket = bucket
        self.prefix = prefix  # as the listing asks for it: "" or "key/"
        self.shape = shape
        self.creds = creds
        self.taken = False  # by the scan's listing
        self._cafile = cafile
        self._url = shape.list_url(creds, time.time(), list_params(prefix, None))
        self._lock = threading.Lock()
        self._done = False
        self._callbacks: list[Callable[[], object]] = []
        self._response: Response | None = None
        self.error: str | None = None  # why there is no answer
        threading.Thread(target=self._get, name="pyaudit-first-page", daemon=True).start()

    def _get(self) -> None:
        try:
            self._response = get_blocking(self._url, MAX_LISTING_BYTES, SOCKET_TIMEOUT,
                                          self._cafile)
        except Exception as e:  # (any failure: the page is asked for again, the usual way)
            self.error = f"{type(e).__name__}: {e}"
        finally:
            with self._lock:
                self._done = True
                callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                # (the scan may be over, its loop closed: never a traceback from this thread)
                with contextlib.suppress(Exception):
                    callback()

    def matches(self, bucket: str, prefix: str, shape: Shape, creds: Credentials) -> bool:
        """Whether this is the request the listing would send for ``prefix``'s first page."""
        return (bucket, prefix, shape, creds) == (self.bucket, self.prefix, self.shape, self.creds)

    def when_done(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the request is over (now, if it is; else on its thread)."""
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback()

    def result(self) -> Response | None:
        """The answer (any status) once the request is over; None when it failed without
        one."""
        return self._response


def ask(
    paths: Iterable[str], environ: dict[str, str] | os._Environ[str] = os.environ
) -> dict[str, FirstPage]:
    """The first listing page of every PATH it can be asked for now (see the module), by URL."""
    pages: dict[str, FirstPage] = {}
    if names_a_proxy(environ):
        return pages
    creds = env_credentials(environ)
    key: str | None = None
    for url in paths:
        if creds is None or url in pages or "://" not in url or not applies(url, environ):
            continue
        key = key or shape_key(environ)
        if key is None:
            return pages
        bucket, name, _ = DirectS3.split_path(DirectS3.strip(url))
        shape = load_shape(key, bucket)
        if shape is not None:
            pages[url] = FirstPage(bucket, f"{name}/" if name else "", shape, creds,
                                   environ.get("AWS_CA_BUNDLE") or None)
    return pages

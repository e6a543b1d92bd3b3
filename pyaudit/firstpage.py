"""The first listing pages of each ``s3://`` PATH, asked before the rest of pyaudit is imported.

Every request of a remote scan waits for the first listing page: until it is in, nothing is
known to ask for. The command line imports asyncio and the scan's modules (~0.12 s of CPU)
before its event loop could send that request. Where an earlier scan in this environment kept
the shape of the bucket's URLs (:mod:`pyaudit.s3direct`), the page needs none of them: its
URL is signed here, and a thread fetches it over a blocking socket
(:func:`pyaudit.httpwire.get_blocking`, the same reader as the scan's client) while the
imports run.

The same thread then asks the pages after it, one after another over the same connection,
each as soon as the page before it names its token (``NextContinuationToken``, read off the
answer's bytes): the pages of a listing follow each other at the server's pace, not at that
of the scan's parsing of each (which, under the imports, took most of a page's time at low
latency). At most :data:`AHEAD` pages wait to be taken (none after one longer than
:data:`AHEAD_PAGE_BYTES`); the thread stops once the scan's listing asks for a page it did
not ask (a token read otherwise than here: the listing then asks from there on itself) or
is over.

The scan's listing (``pyaudit.remote``) takes each answer as its page's, through the same
handling of HTTP errors and refusals as a page it asked for itself; when the request failed
before an answer (the connection), it asks again the usual way. Only where the usual path
would sign the same URL with the same shape: an ``s3://`` URL that :mod:`pyaudit.s3direct`
serves, a shape kept for its bucket, credentials in the environment, and no proxy variable
(the pages then go the usual way, through the proxy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable

from pyaudit.httpwire import Kept, Response, get_blocking, names_a_proxy
from pyaudit.s3direct import DirectS3, applies, env_credentials, load_shape, shape_key
from pyaudit.s3listing import xml_text
from pyaudit.s3presign import Credentials, Shape, list_params

MAX_LISTING_BYTES = 64 * 1024 * 1024  # a listing page is read up to this (1,000 keys: ~0.3 MB)
SOCKET_TIMEOUT = 60.0  # s the connection, and each read, may take
AHEAD = 4  # pages asked and not yet taken by the scan's listing, at most
# A page longer than this (1,000 keys: ~0.3 MB) is the last asked here: what waits to be
# taken stays under AHEAD x this.
AHEAD_PAGE_BYTES = 8 * 1024 * 1024

_TRUNCATED = re.compile(rb"<IsTruncated>\s*true\s*</IsTruncated>", re.IGNORECASE)
_TOKEN = re.compile(rb"<NextContinuationToken>([^<]{1,4096})</NextContinuationToken>")


def next_token(body: bytes) -> str | None:
    """The next page's token a ListObjectsV2 answer names, read off its bytes (as its XML
    parse gives it: the five predefined entities replaced, spaces around it dropped); None
    after the last page, or where it is written otherwise (the scan's listing, which parses
    the page, then asks the next page itself)."""
    if not _TRUNCATED.search(body):
        return None
    found = _TOKEN.search(body)
    if found is None:
        return None
    try:
        text = xml_text(found.group(1).decode("utf-8"))
    except UnicodeDecodeError:
        return None
    if text is None:  # (a character reference, or not XML: left to the parse)
        return None
    return text.strip() or None


class EarlyPage:
    """One listing page asked early: its answer once in (any status), or why there is none."""

    def __init__(self, token: str | None) -> None:
        self.token = token  # the page's continuation token (None: the first page)
        self.taken = False  # by the scan's listing
        self.next: EarlyPage | None = None  # the page after it, once asked
        self.named: str | None = None  # the next page's token, as its answer names it
        self._lock = threading.Lock()
        self._done = False
        self._callbacks: list[Callable[[], object]] = []
        self._response: Response | None = None
        self.error: str | None = None  # why there is no answer

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

    def release(self) -> None:
        """Let the answer's body go (the listing has read it: a long listing's pages are not
        all held); its status and headers stay, marked cut short."""
        if self._response is not None:
            self._response = dataclasses.replace(self._response, body=b"", complete=False)

    def _settle(self, response: Response | None, error: str | None) -> None:
        self._response, self.error = response, error
        with self._lock:
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            # (the scan may be over, its loop closed: never a traceback from this thread)
            with contextlib.suppress(Exception):
                callback()


class FirstPage(EarlyPage):
    """One URL's first listing page, asked on a thread of its own from construction on, and
    the pages after it (see the module)."""

    def __init__(self, bucket: str, prefix: str, shape: Shape, creds: Credentials,
                 cafile: str | None) -> None:
        super().__init__(None)
        self.bucket = bucket
        self.prefix = prefix  # as the listing asks for it: "" or "key/"
        self.shape = shape
        self.creds = creds
        self._cafile = cafile
        self._url = shape.list_url(creds, time.time(), list_params(prefix, None))
        self._chain = threading.Condition()  # (over .next, .taken, and the three below)
        self._stopped = False
        self._waiting = 0  # pages asked and not taken
        self._oldest: EarlyPage = self  # the first page not taken (else the last): every
        # page before it is taken, and :meth:`take` looks from it on
        threading.Thread(target=self._get, name="pyaudit-first-page", daemon=True).start()

    def _get(self) -> None:
        kept = Kept()
        page: EarlyPage = self
        try:
            while True:
                response, error = None, None
                try:
                    url = self._url if page is self else self.shape.list_url(
                        self.creds, time.time(), list_params(self.prefix, page.token))
                    response = get_blocking(url, MAX_LISTING_BYTES, SOCKET_TIMEOUT,
                                            self._cafile, kept)
                except Exception as e:  # (any failure: the page is asked for again, the usual way)
                    error = f"{type(e).__name__}: {e}"
                token = None
                if (response is not None and response.status == 200 and response.complete
                        and len(response.body) <= AHEAD_PAGE_BYTES):
                    token = next_token(response.body)
                with self._chain:
                    self._waiting += 1
                    page.named = token
                page._settle(response, error)
                with self._chain:
                    # The next page waits while AHEAD are untaken, unless the listing asks
                    # for it meanwhile (:meth:`take` names it: then it is asked, whatever).
                    if page.next is None and token is not None and not self._stopped:
                        self._chain.wait_for(functools.partial(self._may_ask_after, page),
                                             SOCKET_TIMEOUT)
                        if page.next is None and not self._stopped and self._waiting < AHEAD:
                            page.next = EarlyPage(token)
                    if page.next is None:  # (the last page, stopped, or not taken for long)
                        self._stopped = True  # (before the lock is let go: none named later)
                        return
                page = page.next
        finally:
            with self._chain:
                self._stopped = True
            kept.close()

    def _may_ask_after(self, page: EarlyPage) -> bool:
        """Whether the page after ``page`` is to be asked now (or not at all: stopped)."""
        return self._stopped or self._waiting < AHEAD or page.next is not None

    def matches(self, bucket: str, prefix: str, shape: Shape, creds: Credentials) -> bool:
        """Whether this is the request the listing would send for ``prefix``'s first page."""
        return (bucket, prefix, shape, creds) == (self.bucket, self.prefix, self.shape, self.creds)

    def take(self, token: str | None) -> EarlyPage | None:
        """The page of ``token`` (None: the first) as asked here, taken (once); None where
        it was not asked, or was taken already: then no page is asked here any more (the
        listing asks from there on)."""
        with self._chain:
            page: EarlyPage | None = self._oldest
            last: EarlyPage = self._oldest
            while page is not None and page.token != token:
                last, page = page, page.next
            if page is None and token is not None and last.named == token and not self._stopped:
                # (the token of the last page answered, whose next the thread has not asked
                # yet: asked now, past AHEAD, as the listing waits for it)
                page = last.next = EarlyPage(token)
            if page is None or page.taken:
                self._stopped = True
                self._chain.notify_all()
                return None
            page.taken = True
            self._waiting -= 1  # (counted once its answer is in: maybe after this)
            while self._oldest.taken and self._oldest.next is not None:
                self._oldest = self._oldest.next
            self._chain.notify_all()
            return page

    def untaken(self) -> int:
        """No page is asked here any more: the pages asked and never taken (each a request
        sent), from now on taken."""
        with self._chain:
            self._stopped = True
            self._chain.notify_all()
            count = 0
            page: EarlyPage | None = self._oldest
            while page is not None:
                if not page.taken:
                    page.taken = True
                    count += 1
                page = page.next
            return count


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

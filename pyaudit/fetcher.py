"""An ``s3://`` store's range GETs in a process of their own, off the scan's GIL.

A remote scan at low latency is bound by CPU, all of it under one GIL: the audits on the
scan's thread, and ~0.1 ms of Python a GET on the event loop's (asyncio, the HTTP exchange,
the presigned URL, the retries). On the benchmark's store of 1,001 checkpoints that loop
held the GIL ~0.2 s of a ~0.7 s scan at 0 ms, and a bare asyncio protocol sending the same
GETs still ~0.1 s. Here the GETs run in a child process (the same :class:`_Client` of
:mod:`pyaudit.remote`, on a core of its own); the scan hands each request over a pipe and
takes its answer from another, ~15 us of its own CPU a request.

The child is ``python -m pyaudit.fetcher URL``, started by the command line before its own
imports (:func:`spawn`: the child's ~0.1 s of imports overlap the scan's, and the first
listing page's round trip) and told the requests in flight and the tunables of
:mod:`pyaudit.remote` as the scan has them once the scan's client is made
(:meth:`Fetcher.configure`). It inherits the environment, so its credentials, endpoint and
URL shapes are the scan's own; it ends when its requests' pipe does. The listing stays
with the scan (its first page is asked before the scan's imports: :mod:`pyaudit.firstpage`).

Wire: frames of a 4-byte little-endian length and a :mod:`marshal` tuple (only ints,
strings, bytes and None; both ends are this module). Requests ``("a", id, priority, kind,
path, *ints)`` with kind ``h`` (a header: size), ``w`` (a whole file: size) or ``g``
(bytes ``[start, end)``: start, end, size), after ``("s", in_flight, settings)`` first,
and ``("x",)`` (close). Answers ``("r", id, bytes, largest header span so far, *sent)``,
``("e", id, one-line error, *sent)``, and after a close ``("t", transfer counts)``;
``sent``: the child's requests, object bytes and retries so far (:data:`SENT`), which the
scan counts where no close says them (a child that ended). A child that ends otherwise
(killed, crashed, failed to start, its client not to be made: then silently) loses
nothing: the requests it did not answer, and those asked later, go to the scan's own client
(the ``fallback`` given to :meth:`Fetcher.configure`), with a warning; a request is never
left unanswered, so a scan never hangs on one. Its counts lack only the requests sent after
its last answer.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import logging
import marshal
import os
import queue
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

log = logging.getLogger("pyaudit.fetcher")

#: (priority, kind, path, ints) -> the answer's future, where the child cannot answer
Fallback = Callable[[int, str, str, tuple[int, ...]], "concurrent.futures.Future[Any]"]

_LEN = struct.Struct("<I")
MAX_FRAME = 256 * 1024 * 1024  # (a frame holds one answer: a header, a run or index file)
CLOSE_WAIT = 10.0  # s a closing child may take to say its counts and end
# Fetching processes at once (a command line of many s3:// PATHs lists them all at once, and
# scans them one after another): the URLs beyond have their GETs sent by the scan's process.
MAX_PROCESSES = 2
#: The transfer counts (pyaudit.remote.Transfer's) each answer carries, as they were then.
SENT = ("requests", "bytes", "retries")
#: The error a request gets once the scan has closed (or given up) the process.
CANCELLED = "cancelled: the scan was given up"

#: The tunables of pyaudit.remote a child takes from the scan (tests and callers change them).
SETTINGS = ("ATTEMPTS", "BACKOFF", "BACKOFF_MAX", "TIMEOUT", "FIRST_GUESS", "GUESS_MAX",
            "MAX_HEADER_BYTES", "PRESIGNER_LIFE", "GUARD_TICKS")


def frame(message: tuple[Any, ...]) -> bytes:
    """``message`` as a frame (see the module)."""
    body = marshal.dumps(message)
    return _LEN.pack(len(body)) + body


class Frames:
    """The messages of the frames ``read`` gives (``read(n)``: up to n bytes, b"" at the
    end), read a chunk at a time; ValueError for a frame longer than ``MAX_FRAME``."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read = read
        self.buf = bytearray()

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while True:
            while len(self.buf) >= 4:
                (n,) = _LEN.unpack_from(self.buf)
                if n > MAX_FRAME:
                    raise ValueError(f"a frame of {n} bytes")
                if len(self.buf) < 4 + n:
                    break
                with memoryview(self.buf) as view, view[4 : 4 + n] as body:
                    message = marshal.loads(body)  # (not copied first: a frame can be MBs)
                del self.buf[: 4 + n]
                yield message
            chunk = self.read(1 << 20)
            if not chunk:
                return
            self.buf += chunk


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """``proc``'s exit status once it has ended, waited for without polling where the
    system has pidfd_open (Popen.wait with a timeout polls: sleeps of 0.5, 1, 2, 4... ms,
    ~9 ms at the end of a sweep for a child whose exit takes ~3);
    subprocess.TimeoutExpired after ``timeout`` seconds."""
    if proc.returncode is None:
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # (no pidfd here, or already reaped)
            return proc.wait(timeout)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(timeout * 1000):
                raise subprocess.TimeoutExpired(proc.args, timeout)
        finally:
            os.close(pidfd)
    return proc.wait()


def _pass_on(out: concurrent.futures.Future[Any], done: concurrent.futures.Future[Any]
             ) -> None:
    out.set_result(done.result())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _writer(fd: int, out: queue.SimpleQueue[bytes | None]) -> None:
    """Write what is queued (None: stop), a batch at a time, until the pipe breaks (the
    reader at the other end has gone: its side sees that itself)."""
    while True:
        item = out.get()
        batch = []
        while item is not None:
            batch.append(item)
            try:
                item = out.get_nowait()
            except queue.Empty:
                break
        try:
            if batch:
                _write_all(fd, b"".join(batch))
        except OSError:
            return
        if item is None:
            return


class Fetcher:
    """The scan's end: requests handed to a child process, answers as futures (bytes, or
    an exception whose text is the child's)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.configured = False
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pyaudit.fetcher", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._lock = threading.Lock()
        # id -> (its future, the request: priority, kind, path, ints)
        self._pending: dict[int, tuple[concurrent.futures.Future[Any],
                                       tuple[int, str, str, tuple[int, ...]]]] = {}
        self._next = 0
        self._ended: str | None = None  # why no request is answered any more
        self._closing = False
        self._fallback: Fallback | None = None
        self.largest_span = 0
        self.counts: dict[str, int] | None = None  # the child's transfer, once closed
        self.sent = dict.fromkeys(SENT, 0)  # the child's counts as its last answer said them
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._done = threading.Event()
        # (each writes or reads its pipe by number: :meth:`close` closes a pipe only once its
        # thread is over, so that no write or read reaches a file given that number later)
        self._writer = threading.Thread(
            target=_writer, args=(self._proc.stdin.fileno(), self._out),
            name="pyaudit-fetch-out", daemon=True)
        self._reader = threading.Thread(target=self._read, name="pyaudit-fetch-in", daemon=True)
        self._writer.start()
        self._reader.start()

    def configure(self, in_flight: int, settings: dict[str, Any], fallback: Fallback) -> None:
        """The child's client: ``in_flight`` requests at once, pyaudit.remote's tunables as
        ``settings`` (before any :meth:`ask`); ``fallback`` sends a request the child cannot
        answer (it ended) in this process."""
        self.configured = True
        self._fallback = fallback
        self._out.put(frame(("s", in_flight, json.dumps(settings))))

    def ask(
        self, priority: int, kind: str, path: str, *args: int
    ) -> concurrent.futures.Future[Any]:
        """The answer of a request: ``h`` (the header of ``path``: its size), ``w`` (all of
        it: its size) or ``g`` (start, end, size): bytes, or an exception (as a result)."""
        out: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._ended is not None:
                ended = self._ended
            else:
                self._next += 1
                ident = self._next
                self._pending[ident] = (out, (priority, kind, path, args))
                ended = None
        if ended is None:
            self._out.put(frame(("a", ident, priority, kind, path, *args)))
        elif self._closing or self._fallback is None:
            out.set_result(OSError(ended))
        else:
            return self._fallback(priority, kind, path, args)
        return out

    def _read(self) -> None:
        why = "the fetching process ended"
        try:
            assert self._proc.stdout is not None
            for message in Frames(functools.partial(os.read, self._proc.stdout.fileno())):
                tag = message[0]
                if tag == "r":
                    _, ident, data, span, *sent = message
                    if span > self.largest_span:
                        self.largest_span = span
                    self._said(sent)
                    with self._lock:
                        held = self._pending.pop(ident, None)
                    if held is not None:
                        held[0].set_result(data)
                elif tag == "e":
                    _, ident, text, *sent = message
                    self._said(sent)
                    with self._lock:
                        held = self._pending.pop(ident, None)
                    if held is not None:
                        held[0].set_result(OSError(text))
                elif tag == "t":
                    self.counts = dict(message[1])
                    why = CANCELLED
                    break  # (nothing follows)
        except (OSError, ValueError, EOFError, TypeError) as e:
            why = f"the fetching process's answers could not be read: {e}"
        finally:
            if self.counts is None:
                # (its answers' pipe is at its end: it is ending, if not gone)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    why = f"{why} (exit status {_wait(self._proc, CLOSE_WAIT)})"
            self._end(why)
            self._done.set()

    def _said(self, sent: list[int]) -> None:
        """An answer's counts (the child's so far: answers written by more than one of its
        threads may come out of order, so each count is the largest said)."""
        for name, value in zip(SENT, sent, strict=True):
            if value > self.sent[name]:
                self.sent[name] = value

    def _end(self, why: str) -> None:
        """No more answers: every request unanswered goes to the fallback (the scan goes
        on), or, once the scan closes this, gets an error saying why."""
        with self._lock:
            first = self._ended is None
            if first:
                self._ended = why
            pending, self._pending = self._pending, {}
            lost = not self._closing and self._fallback is not None
        if first and lost and self.counts is None:
            log.warning("%s: %s: its requests are sent by the scan's own process",
                        self.url, self._ended)
        for future, (priority, kind, path, args) in pending.values():
            if future.done():
                continue
            if lost:
                assert self._fallback is not None
                again = self._fallback(priority, kind, path, args)
                again.add_done_callback(functools.partial(_pass_on, future))
            else:
                future.set_result(OSError(self._ended))

    def close(self) -> dict[str, int]:
        """Nothing more is asked: the child drops what is queued and says its counts, then
        ends. Returns them; where it ended without saying them (killed, crashed), the counts
        its last answer said (those of the requests it sent after that are lost)."""
        with self._lock:
            self._closing = True
        with contextlib.suppress(Exception):
            self._out.put(frame(("x",)))
            self._out.put(None)
        if not self._done.wait(CLOSE_WAIT):
            self._proc.kill()
            self._done.wait(CLOSE_WAIT)
        try:
            _wait(self._proc, CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        # The child is gone: a write still pending fails (EPIPE), and its thread ends.
        self._writer.join(CLOSE_WAIT)
        self._reader.join(CLOSE_WAIT)
        for stream, thread in ((self._proc.stdin, self._writer), (self._proc.stdout, self._reader)):
            if stream is not None and not thread.is_alive():
                with contextlib.suppress(OSError):
                    stream.close()
        self._end(CANCELLED)
        return self.counts if self.counts is not None else dict(self.sent)


def spawn(paths: list[str], environ: Any = os.environ) -> dict[str, Fetcher]:
    """A fetching process for each of the first ``MAX_PROCESSES`` ``s3://`` PATHs whose
    GETs the scan sends by presigned URL (:func:`pyaudit.s3direct.applies`), by URL, started
    now (see the module)."""
    from pyaudit.s3direct import applies

    started: dict[str, Fetcher] = {}
    for url in paths:
        if len(started) == MAX_PROCESSES:
            break
        if url not in started and "://" in url and applies(url, environ):
            try:
                started[url] = Fetcher(url)
            except OSError:  # (the scan's client sends its GETs itself)
                continue
    return started


# --- the child ------------------------------------------------------------------------------


def _serve(url: str, requests_fd: int, answers_fd: int) -> int:
    from pyaudit import remote

    frames = iter(Frames(functools.partial(os.read, requests_fd)))
    first = next(frames, ("x",))  # (nothing asked: the scan did not take this process)
    if first[0] != "s":
        return 0
    _, in_flight, settings = cast(tuple[str, int, str], first)
    for name, value in json.loads(settings).items():
        if name in SETTINGS:
            setattr(remote, name, value)
    remote.FETCHER = False  # (this process sends the GETs itself)
    fs, _ = remote._filesystem(url, in_flight)
    client = remote._Client(fs, in_flight)
    out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    writer = threading.Thread(target=_writer, args=(answers_fd, out),
                              name="pyaudit-fetch-out", daemon=True)
    writer.start()

    transfer = client.transfer

    def answer(ident: int, future: concurrent.futures.Future[Any]) -> None:
        data = future.result()
        sent = [getattr(transfer, name) for name in SENT]
        if isinstance(data, BaseException):
            out.put(frame(("e", ident, remote._one_line(data), *sent)))
        else:
            out.put(frame(("r", ident, bytes(data), client.largest_span, *sent)))

    try:
        for message in frames:
            if message[0] == "x":
                break
            _, ident, priority, kind, path, *args = message
            future = client._ask_here(priority, kind, path, tuple(args))
            future.add_done_callback(functools.partial(answer, ident))
    finally:
        # The counts (the scan waits for them, and for this process's end: what is in
        # flight now was counted when it was sent). The client is not closed: the process
        # ends at once (os._exit), its connections closed with it, ~4 ms sooner than by
        # cancelling each request and closing each connection first.
        out.put(frame(("t", client.transfer.to_json())))
        out.put(None)
        writer.join(CLOSE_WAIT)
    return 0


def main(argv: list[str]) -> int:
    import signal

    # (an interrupt of the command line reaches this process too: the scan's process
    # handles it, and this one ends when its requests' pipe does)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers_fd = os.dup(1)
    os.dup2(2, 1)  # (anything printed goes to stderr, never into the answers)
    try:
        code = _serve(argv[1], 0, answers_fd)
    except Exception:  # (no traceback: the scan says this process ended, and goes on)
        code = 1
    # (its answers are written: nothing is left to finalise, its connections close with
    # it, and the scan that waits for this process's end waits no longer)
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

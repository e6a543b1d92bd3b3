"""What the local HTTP fakes of remote stores share (:mod:`pyaudit.testing.fake_hub`,
:mod:`pyaudit.testing.fake_azure`): a threading server on 127.0.0.1 whose listen backlog
holds a scan's burst of connections, and a request handler that counts them."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Counted(Protocol):
    """A fake that counts the connections its server accepts."""

    connections: int
    lock: threading.Lock


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    # listen()'s backlog (socketserver's default: 5): a scan opens up to 128 connections at
    # once, and a full accept queue drops them, for TCP to retry seconds later
    request_queue_size = 1024


class Serving:
    """A :class:`LoopbackServer` on 127.0.0.1 (a free port) for ``handler``, served on a
    daemon thread from construction until :meth:`stop`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = LoopbackServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class CountingHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no log lines; each connection counted on ``counted``."""

    counted: Counted
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.counted.lock:
            self.counted.connections += 1

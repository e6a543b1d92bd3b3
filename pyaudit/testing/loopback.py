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

"""Tasks for fault-injection tests of distributed sweeps.

They stand in for `pyaudit.distributed.audit_chunk` on a Dask worker: they live in a module
(not in a test module) so that a worker process imports them by name, as it imports the real
task. Test-only (they kill the worker with ``os._exit``), so not in the package: a spawned
worker inherits ``sys.path``, and with it ``tests/support``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pyaudit.distributed import audit_chunk


def die_once(marker: str, chunk: Any, *args: Any) -> Any:
    """Kill the worker the first time any chunk runs (``marker`` records it), then audit."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return audit_chunk(chunk, *args)
    os._exit(1)


def die_on(display: str, chunk: Any, *args: Any) -> Any:
    """Kill every worker that runs the chunk holding checkpoint ``display``."""
    if any(c.display == display for c in chunk):
        os._exit(1)
    return audit_chunk(chunk, *args)


def slow_first(first: str, chunk: Any, *args: Any) -> Any:
    """Audit, one second late for the chunk that starts with checkpoint ``first``."""
    if chunk[0].display == first:
        time.sleep(1.0)
    return audit_chunk(chunk, *args)

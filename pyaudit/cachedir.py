"""Where pyaudit keeps what it learnt for the next run: ``$PYAUDIT_CACHE_DIR``, else
``$XDG_CACHE_HOME/pyaudit``, else ``~/.cache/pyaudit`` (a directory a kind of answer:
``oracle``, ``s3``)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PYAUDIT_CACHE_DIR"


def cache_root(environ: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    own = environ.get(CACHE_ENV)
    if own:
        return Path(own)
    xdg = environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pyaudit"

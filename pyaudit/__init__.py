"""pyaudit: audit ML model checkpoints without loading a single weight.

The public API is imported lazily, so that `import pyaudit.manifest` (pure
Python) works without the native core and the command line starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.1.0"

__all__ = [
    "FormatError",
    "Header",
    "HeaderResult",
    "Report",
    "TensorInfo",
    "__version__",
    "audit",
    "read_header",
    "read_headers",
    "scan",
]

_HEADER_API = {"FormatError", "Header", "HeaderResult", "TensorInfo", "read_header", "read_headers"}
_AUDIT_API = {"Report", "audit", "scan"}

if TYPE_CHECKING:
    from pyaudit.api import Report, audit, scan
    from pyaudit.headers import (
        FormatError,
        Header,
        HeaderResult,
        TensorInfo,
        read_header,
        read_headers,
    )


def _native_core() -> Any:
    try:
        return importlib.import_module("pyaudit._core")
    except ModuleNotFoundError as e:
        if e.name != "pyaudit._core":
            raise
        raise ImportError(
            f"pyaudit's native core (pyaudit._core) is not in {__path__[0]}: this is a source "
            "tree, not an installed pyaudit. Install it (`pip install .`) and run from outside "
            "the source tree (from its root, `python -m pytest` and `pytest` test the installed "
            "package); or, to work on it, `pip install --no-build-isolation -e .`"
        ) from e


def __getattr__(name: str) -> Any:
    if name == "_core":
        # `from pyaudit import _core` ends here only when the submodule is not imported yet.
        return _native_core()
    if name in _HEADER_API:
        from pyaudit import headers

        return getattr(headers, name)
    if name in _AUDIT_API:
        from pyaudit import api

        return getattr(api, name)
    raise AttributeError(f"module 'pyaudit' has no attribute {name!r}")

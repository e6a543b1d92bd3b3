"""pyaudit: audit ML model checkpoints without loading a single weight.

The public API is imported lazily, so that `import pyaudit.manifest` (pure
Python) works without the native core and the command line starts fast.
"""

from __future__ import annotations

from pkgutil import extend_path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Run from a source checkout (`python -m pyaudit` or `python -c` in the repo root puts the
# checkout first on sys.path), this package has no compiled core of its own: let the
# installed copy's directory serve the rest of the package (its `_core`).
__path__ = extend_path(__path__, __name__)

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


def __getattr__(name: str) -> Any:
    if name in _HEADER_API:
        try:
            from pyaudit import headers
        except ImportError as e:  # pragma: no cover - a broken install
            raise ImportError(
                "pyaudit's native core (pyaudit._core) is not built: install pyaudit with "
                "`pip install .` rather than importing it from a source tree"
            ) from e
        return getattr(headers, name)
    if name in _AUDIT_API:
        from pyaudit import api

        return getattr(api, name)
    raise AttributeError(f"module 'pyaudit' has no attribute {name!r}")

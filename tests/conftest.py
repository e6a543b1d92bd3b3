"""Shared test setup: a Hypothesis profile for CI and a small safetensors kit.

Test modules cannot import each other (--import-mode=importlib), so helpers that
several of them need are handed out as fixtures here.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The tests test the installed pyaudit. `python -m pytest` from the repository root puts the
# root first on sys.path, and with it the source tree's `pyaudit` (no compiled core): take it
# off. Subprocesses (`python -c`, `python -m pyaudit`) would put their working directory there
# too, so each test starts in a scratch directory (tests that need a directory chdir to it).
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != ROOT]


@pytest.fixture(autouse=True)
def _outside_the_source_tree(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.chdir(tmp_path_factory.getbasetemp())


try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass
else:
    # CI: the same examples on every run, no example database on disk.
    settings.register_profile(
        "ci",
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    # CI again, with fresh examples: .ci/run passes --hypothesis-seed=N and prints N.
    settings.register_profile(
        "ci-random",
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile("dev", deadline=None)
    settings.load_profile(
        os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
    )


_CACHE_DIR: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    # The transformers oracle keeps its answers on disk ($PYAUDIT_CACHE_DIR/oracle): in a
    # directory of this test session's own, never the user's cache (subprocesses inherit it).
    # Tests about the cache itself give each scan a directory of their own.
    import tempfile

    global _CACHE_DIR
    _CACHE_DIR = tempfile.mkdtemp(prefix="pyaudit-test-cache-")
    os.environ["PYAUDIT_CACHE_DIR"] = _CACHE_DIR
    # Hypothesis imports libcst (when installed) to suggest a patch for a failing
    # example; libcst's import warns, and filterwarnings=error would hide the failure.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


class SafetensorsKit:
    """Builds, splits and writes safetensors files as bytes; asks the reference loader."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._names = itertools.count()

    @staticmethod
    def pack(header: bytes | str | dict[str, Any], data: bytes = b"") -> bytes:
        """Length prefix + header + data. A dict is written as compact JSON."""
        if isinstance(header, dict):
            header = json.dumps(header, separators=(",", ":"))
        if isinstance(header, str):
            header = header.encode()
        return struct.pack("<Q", len(header)) + header + data

    @staticmethod
    def unpack(blob: bytes) -> tuple[bytes, bytes]:
        """(header bytes, data bytes) of a well-framed file."""
        (n,) = struct.unpack("<Q", blob[:8])
        return blob[8 : 8 + n], blob[8 + n :]

    @staticmethod
    def save(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
        """A file as the reference writer (safetensors.numpy) produces it."""
        from safetensors.numpy import save

        return save(tensors, metadata=metadata)

    def write(self, blob: bytes, name: str | None = None) -> Path:
        path = self.directory / (name or f"f{next(self._names)}.safetensors")
        path.write_bytes(blob)
        return path

    @staticmethod
    def reference(path: Path) -> tuple[bool, Any]:
        """(True, ({name: (dtype, shape)}, metadata)) or (False, message) from safetensors."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), "numpy") as f:
                tensors = {}
                for k in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    s = f.get_slice(k)
                    tensors[k] = (s.get_dtype(), tuple(s.get_shape()))
                return True, (tensors, f.metadata())
        except Exception as e:  # the loader raises several types
            return False, f"{type(e).__name__}: {e}"


@pytest.fixture(scope="session")
def stkit(tmp_path_factory: pytest.TempPathFactory) -> SafetensorsKit:
    return SafetensorsKit(tmp_path_factory.mktemp("st"))

"""An ``s3://`` store for a sweep without importing s3fs: the bucket's URLs are presigned by
botocore's own client, made as s3fs makes it when nothing configures s3fs.

A sweep asks S3 for listing pages and range GETs only, both sent by presigned URL over
:mod:`pyaudit.httpget` (see :class:`pyaudit.remote._S3Ranges`); what it needs of a filesystem
is a client to presign with. s3fs' import (with fsspec, aiobotocore and aiohttp) cost ~0.26 s
of CPU before a remote scan's first request, botocore's ~0.10 s. Everything that matters to
a URL (credentials, endpoint, region, addressing, signature version) is botocore's own
resolution from the environment either way: s3fs passes botocore nothing of its own unless
fsspec's configuration (``FSSPEC_S3...`` variables, files in fsspec's configuration
directory) gives it options. So :func:`applies` only where no such configuration exists;
elsewhere the scan goes through s3fs as before.

The rare requests that are not a listing page or a GET (the size of a URL that names one
object, the directory around it) are answered by a real s3fs filesystem made on first use,
on this store's loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from typing import Any

S3_PROTOCOLS = ("s3", "s3a")


def s3_config_kwargs(in_flight: int, configured: dict[str, Any] | None = None) -> dict[str, Any]:
    """botocore ``Config`` options of a sweep's S3 client, over ``configured`` (fsspec's):
    a connection pool that holds every request in flight (s3fs's default is 10), and
    botocore's retries off: pyaudit's own are the bound."""
    options = dict(configured or {})
    options.setdefault("max_pool_connections", in_flight + 4)
    options.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
    return options


def _fsspec_configured(environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether fsspec has configuration that s3fs would be given: an ``FSSPEC_<PROTOCOL>``
    variable, or a file in its configuration directory (``FSSPEC_CONFIG_DIR``, else
    ``~/.config/fsspec``; read by ``fsspec.config`` at import)."""
    if any(k.startswith("FSSPEC_") and k != "FSSPEC_CONFIG_DIR" for k in environ):
        return True
    conf_dir = environ.get("FSSPEC_CONFIG_DIR") or os.path.join(
        os.path.expanduser("~"), ".config", "fsspec"
    )
    try:
        return any(name.endswith((".json", ".ini")) for name in os.listdir(conf_dir))
    except OSError:
        return False


def applies(url: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether ``url`` is an ``s3://`` URL this store serves as s3fs would: nothing
    configures s3fs, and both s3fs and botocore are installed (s3fs for the rare requests,
    and so that the drivers a scan needs stay those ``pyaudit[remote]`` installs)."""
    if url.split("://", 1)[0] not in S3_PROTOCOLS or _fsspec_configured(environ):
        return False
    return all(_installed(m) for m in ("botocore", "fsspec", "s3fs"))


def _installed(module: str) -> bool:
    try:  # (a module set to None in sys.modules, as a test hides one, raises ValueError)
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class DirectS3:
    """The part of ``s3fs.S3FileSystem`` a sweep uses, for one ``s3://`` URL."""

    protocol = S3_PROTOCOLS
    async_impl = True
    version_aware = False

    def __init__(self, url: str, in_flight: int) -> None:
        self.url = url
        self.in_flight = in_flight
        self.loop = asyncio.new_event_loop()  # this store's requests run on it
        self._thread = threading.Thread(target=self.loop.run_forever, name="pyaudit-s3",
                                        daemon=True)
        self._thread.start()
        self.req_kw: dict[str, Any] = {}  # (s3fs' requester-pays parameters: none here)
        self._client: Any = None  # botocore's, made on the loop's thread at first use
        self._s3fs: Any = None

    @staticmethod
    def strip(url: str) -> str:
        """``bucket/key`` of ``s3://bucket/key/`` (as s3fs strips its URLs)."""
        path = url.split("://", 1)[1]
        return path if path in ("", "/") else path.rstrip("/")

    @staticmethod
    def split_path(path: str) -> tuple[str, str, None]:
        bucket, _, key = path.lstrip("/").partition("/")
        return bucket, key, None

    def _make_client(self) -> Any:
        from botocore.config import Config  # type: ignore[import-untyped]
        from botocore.session import get_session  # type: ignore[import-untyped]

        # What s3fs passes when nothing configures it: use_ssl, its two timeouts, and the
        # pool and retry settings pyaudit.remote gives s3fs too (none changes a URL).
        config = Config(connect_timeout=5, read_timeout=15, **s3_config_kwargs(self.in_flight))
        return get_session().create_client("s3", use_ssl=True, config=config)

    async def set_session(self) -> Any:
        if self._client is None:  # (no await before it is set: made once)
            self._client = self._make_client()
        return self._client

    async def get_s3(self, bucket: str | None = None) -> Any:
        return await self.set_session()

    async def _fs(self) -> Any:
        """A real s3fs filesystem on this loop, for what is not a listing page or a GET."""
        if self._s3fs is None:
            import fsspec.core  # type: ignore[import-untyped]

            fs, _ = fsspec.core.url_to_fs(
                self.url, asynchronous=True, loop=self.loop, skip_instance_cache=True,
                config_kwargs=s3_config_kwargs(self.in_flight),
            )
            fs.retries = 1
            await fs.set_session()
            self._s3fs = fs
        return self._s3fs

    async def _info(self, path: str) -> dict[str, Any]:
        info: dict[str, Any] = await (await self._fs())._info(path)
        return info

    async def _ls(self, path: str, detail: bool = True) -> list[Any]:
        out: list[Any] = await (await self._fs())._ls(path, detail=detail)
        return out

    async def close(self) -> None:
        """The s3fs filesystem's connections, if one was made (botocore's client made no
        request: it only presigns)."""
        if self._s3fs is not None:
            s3 = getattr(self._s3fs, "_s3creator", None)
            if s3 is not None:
                await s3.__aexit__(None, None, None)
            self._s3fs = None

    def shutdown(self) -> None:
        """Stop and close the loop (called from another thread, once nothing runs on it)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

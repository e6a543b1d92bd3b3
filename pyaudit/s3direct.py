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

botocore itself (~0.19 s of CPU to import and make a client, before the first request) is
needed once per environment: where the client takes its credentials from the environment
(``AWS_ACCESS_KEY_ID``...), the :class:`~pyaudit.s3presign.Shape` of its URLs for the bucket
(signature form, endpoint, addressing, region; no credential) is kept in pyaudit's cache
directory, keyed by everything botocore resolves them from (the ``AWS_*`` variables, the
secret ones by name only; the identity of its configuration files and of its own installed
``__init__.py``). It is kept only when it writes the client's own URLs again byte for
byte; the next scan in the same environment signs with it and imports botocore only if a
URL it signed is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import stat
import threading
from typing import Any

from pyaudit.cachedir import cache_root
from pyaudit.s3presign import PRESIGN_EXPIRES, Credentials, Shape, learn_shape, list_params

log = logging.getLogger(__name__)

S3_PROTOCOLS = ("s3", "s3a")
SHAPE_FORMAT = 1  # of a kept shape's file; a change makes every older file a miss
# Variables botocore reads whose values are secret: in a shape's key by name only.
_SECRET = frozenset({"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"})


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


def env_credentials(environ: dict[str, str] | os._Environ[str]) -> Credentials | None:
    """The credentials botocore's first provider reads from the environment; None where it
    gives none (or ones that expire, which botocore refreshes)."""
    access = environ.get("AWS_ACCESS_KEY_ID")
    secret = environ.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret or environ.get("AWS_CREDENTIAL_EXPIRATION"):
        return None
    token = environ.get("AWS_SESSION_TOKEN") or environ.get("AWS_SECURITY_TOKEN") or None
    return Credentials(access, secret, token)


def _file_identity(path: str) -> list[Any]:
    """What says a configuration file is unchanged (not its bytes: they may hold secrets)."""
    try:
        st = os.stat(path)
    except OSError:
        return [path, "absent"]
    if not stat.S_ISREG(st.st_mode):
        return [path, "not a file"]  # (/dev/null: read as empty, its times change)
    return [path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def _botocore_file() -> str | None:
    """The file of the botocore package an import would load (found, not imported), or
    None where there is none."""
    try:
        spec = importlib.util.find_spec("botocore")
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.origin else None


def shape_key(
    environ: dict[str, str] | os._Environ[str], botocore_file: str | None = None
) -> str | None:
    """The key of the shape botocore's client gives this environment's URLs: None unless
    the environment holds credentials (the only ones a kept shape signs with) and botocore
    is installed. botocore is named by the identity of its ``__init__.py`` (``botocore_file``,
    else the one an import would load): another version, or the same reinstalled, is
    another file (its version by ``importlib.metadata`` cost ~30 ms of the first request's
    CPU, most of it importing that module)."""
    if env_credentials(environ) is None:
        return None
    botocore_file = botocore_file or _botocore_file()
    if botocore_file is None:
        return None
    installed = _file_identity(botocore_file)
    home = os.path.expanduser("~")
    variables = sorted(
        (k, "" if k in _SECRET else v) for k, v in environ.items() if k.startswith(("AWS_", "BOTO"))
    )
    files = [
        _file_identity(os.path.expanduser(environ.get(name) or os.path.join(home, ".aws", base)))
        for name, base in (("AWS_CONFIG_FILE", "config"),
                           ("AWS_SHARED_CREDENTIALS_FILE", "credentials"))
    ]
    text = json.dumps([SHAPE_FORMAT, installed, variables, files], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _shape_path(key: str, bucket: str) -> str:
    name = hashlib.sha256(f"{key}/{bucket}".encode()).hexdigest()[:40]
    return os.path.join(cache_root(), "s3", f"{name}.json")


def load_shape(key: str, bucket: str) -> Shape | None:
    """The shape kept for ``bucket`` in the environment of ``key``, if any."""
    try:
        with open(_shape_path(key, bucket), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != SHAPE_FORMAT:
        return None
    shape = Shape.from_json(data.get("shape"))
    return shape if shape is not None and shape.bucket == bucket else None


def save_shape(key: str, shape: Shape) -> None:
    """Keep ``shape`` (written whole, then renamed: a reader sees the old file or the new);
    a cache that cannot be written is only a slower next scan."""
    path = _shape_path(key, shape.bucket)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temp = f"{path}.{os.getpid()}.{threading.get_ident()}"
        with open(temp, "w", encoding="utf-8") as f:
            json.dump({"format": SHAPE_FORMAT, "shape": shape.to_json()}, f)
        os.replace(temp, path)
    except OSError as e:
        log.debug("cannot keep the S3 URL shape in %s: %s", path, e)


def forget_shape(key: str, bucket: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(_shape_path(key, bucket))


class DirectS3:
    """The part of ``s3fs.S3FileSystem`` a sweep uses, for one ``s3://`` URL."""

    protocol = S3_PROTOCOLS
    async_impl = True
    version_aware = False

    def __init__(self, url: str, in_flight: int) -> None:
        self.url = url
        self.in_flight = in_flight
        import asyncio  # (here: pyaudit.firstpage reads kept shapes before asyncio's import)

        self.loop = asyncio.new_event_loop()  # this store's requests run on it
        self._thread = threading.Thread(target=self.loop.run_forever, name="pyaudit-s3",
                                        daemon=True)
        self._thread.start()
        self.req_kw: dict[str, Any] = {}  # (s3fs' requester-pays parameters: none here)
        self._client: Any = None  # botocore's, made on the loop's thread at first use
        self._s3fs: Any = None
        # The kept shape of the URLs of the URL's bucket, and the credentials it signs with
        # (see the module's text): looked up on first use.
        self._key: str | None = None
        self._shape: tuple[Shape, Credentials] | None = None
        self._shape_looked_up = False

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
            self._keep_shape(self._client)
        return self._client

    def shape(self, bucket: str) -> tuple[Shape, Credentials] | None:
        """The kept shape of ``bucket``'s URLs in this environment, and the environment's
        credentials to sign with; None where there is none (botocore's client presigns)."""
        if not self._shape_looked_up:
            self._shape_looked_up = True
            self._key = shape_key(os.environ)
            creds = env_credentials(os.environ)
            own_bucket = self.split_path(self.strip(self.url))[0]
            shape = load_shape(self._key, own_bucket) if self._key else None
            if shape is not None and creds is not None:
                self._shape = (shape, creds)
        if self._shape is None or self._shape[0].bucket != bucket:
            return None
        return self._shape

    def refused(self, bucket: str) -> None:
        """A URL the kept shape signed was refused (403): botocore's client presigns from
        now on, and learns the shape again."""
        if self._shape is not None and self._shape[0].bucket == bucket:
            self._shape = None
            if self._key:
                forget_shape(self._key, bucket)

    def _keep_shape(self, client: Any) -> None:
        """Learn the shape of the bucket's URLs from the client (two URLs presigned, ~1 ms)
        and keep it, where the client's credentials are the environment's."""
        key = self._key if self._shape_looked_up else shape_key(os.environ)
        creds = env_credentials(os.environ)
        if key is None or creds is None:
            return
        try:
            held = client._request_signer._credentials
            if held is None or getattr(held, "method", None) != "env":
                return
            bucket, prefix, _ = self.split_path(self.strip(self.url))
            prefix = f"{prefix}/" if prefix else ""
            sample_key = f"{prefix}config.json"
            listed = client.generate_presigned_url(
                "list_objects_v2", Params={"Bucket": bucket, "Prefix": prefix},
                ExpiresIn=PRESIGN_EXPIRES)
            got = client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": sample_key},
                ExpiresIn=PRESIGN_EXPIRES)
        except Exception as e:  # (a bucket name botocore refuses: its own error comes later)
            log.debug("no S3 URL shape learnt: %s", e)
            return
        shape = learn_shape(listed, list_params(prefix, None), got, bucket, sample_key, creds)
        if shape is not None:
            save_shape(key, shape)

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

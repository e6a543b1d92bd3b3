"""A Hugging Face Hub on 127.0.0.1, answering from a directory (``ROOT/NAMESPACE/NAME/...``
is the model repository ``NAMESPACE/NAME`` at one revision), for tests of ``hf://`` scans
through huggingface_hub's ``HfFileSystem`` (``HF_ENDPOINT`` pointed here).

Only what HfFileSystem asks when a sweep lists a repository and reads byte ranges of its
files (read from huggingface_hub's own source: ``HfApi.repo_info``,
``HfApi._iter_repo_tree_pages``, ``HfApi.get_paths_info``, ``HfFileSystemFile._fetch_range``):

- ``GET /api/models/NS/NAME[/revision/REV]``: the repository (at that revision): its ``sha``;
- ``GET /api/models/NS/NAME/tree/REV[/PATH]?recursive=..``: entries (files and folders), paged
  by a ``Link: <...>; rel="next"`` header as the Hub pages (``page_size`` entries a page);
- ``POST /api/models/NS/NAME/paths-info/REV`` (form or JSON ``paths``): those entries;
- ``GET|HEAD /NS/NAME/resolve/REV/PATH``, with or without a ``Range``: the bytes.

Anything else is a 404 with the Hub's ``X-Error-Code``, and recorded (``unknown``;
huggingface_hub 2.4 also asks ``GET /api/agent-harnesses`` once, and takes the 404).
No authentication is checked; the ``Authorization`` header of each request is recorded
(``tokens``) so a test can see that the token went where it should and nowhere else.
Counted: requests by kind, and for each file the Range of each GET and the bytes sent;
connections accepted.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pyaudit.testing.loopback import CountingHandler, Serving

SHA = "0123456789abcdef0123456789abcdef01234567"  # the one revision every repository has


class FakeHub:
    """``with FakeHub(root) as hub: hub.url`` (set ``HF_ENDPOINT`` to it)."""

    def __init__(self, root: str | Path, page_size: int = 1000) -> None:
        self.root = Path(root)
        self.page_size = page_size
        self.kinds: Counter[str] = Counter()
        self.file_bytes = 0
        self.ranges: dict[str, list[str | None]] = {}  # "NS/NAME/PATH" -> Range of each GET
        self.sent: Counter[str] = Counter()  # "NS/NAME/PATH" -> file bytes sent
        self.tokens: set[str | None] = set()
        self.connections = 0  # accepted, in all
        self.unknown: list[str] = []  # requests this fake does not answer (a 404 each)
        self.lock = threading.Lock()
        self._serving: Serving | None = None

    @property
    def url(self) -> str:
        assert self._serving is not None
        return f"http://127.0.0.1:{self._serving.port}"

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub
            counted = hub

        self._serving = Serving(Handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._serving is not None:
            self._serving.stop()
            self._serving = None

    # What the Hub knows ---------------------------------------------------------------------

    def repo(self, namespace: str, name: str) -> Path | None:
        path = self.root / namespace / name
        ok = ".." not in (namespace, name) and "/" not in namespace + name
        return path if ok and path.is_dir() else None

    def entry(self, repo: Path, rel: str) -> dict[str, Any] | None:
        path = repo / rel
        if not rel or ".." in Path(rel).parts or not path.exists():
            return None
        if path.is_dir():
            return {"type": "directory", "oid": _oid(rel), "path": rel}
        size = path.stat().st_size
        return {"type": "file", "oid": _oid(f"{rel}:{size}"), "size": size, "path": rel}

    def tree(self, repo: Path, rel: str, recursive: bool) -> list[dict[str, Any]] | None:
        base = repo / rel if rel else repo
        if not base.is_dir() or (rel and ".." in Path(rel).parts):
            return None
        found = base.rglob("*") if recursive else base.iterdir()
        rels = sorted(p.relative_to(repo).as_posix() for p in found)
        return [e for r in rels if (e := self.entry(repo, r)) is not None]


def _oid(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class _Handler(CountingHandler):
    fake: FakeHub

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
              head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, doc: Any, headers: dict[str, str] | None = None) -> None:
        self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json",
                                                   **(headers or {})})

    def _missing(self, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(404, body, {"Content-Type": "application/json", "X-Error-Code": code,
                               "X-Error-Message": message})

    def _count(self, kind: str) -> None:
        with self.fake.lock:
            self.fake.kinds[kind] += 1
            self.fake.tokens.add(self.headers.get("Authorization"))

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        seg = [unquote(s) for s in parts.path.strip("/").split("/")]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(seg) >= 6 and seg[:2] == ["api", "models"] and seg[4] == "paths-info":
            self._count("paths-info")
            repo = self.fake.repo(seg[2], seg[3])
            if repo is None:
                self._missing("RepoNotFound", "Repository not found")
                return
            ctype = self.headers.get("Content-Type", "")
            if "json" in ctype:
                paths = json.loads(body or b"{}").get("paths", [])
            else:
                paths = parse_qs(body.decode()).get("paths", [])
            found = [e for p in paths if (e := self.fake.entry(repo, p.strip("/"))) is not None]
            self._json(found)
            return
        self._count("other")
        with self.fake.lock:
            self.fake.unknown.append(f"POST {self.path}")
        self._missing("EntryNotFound", f"POST {parts.path}")

    def _answer(self, head: bool) -> None:
        parts = urlsplit(self.path)
        seg = [unquote(s) for s in parts.path.strip("/").split("/")]
        query = parse_qs(parts.query)
        fake = self.fake
        is_api = len(seg) >= 4 and seg[:2] == ["api", "models"]
        if is_api and (len(seg) == 4 or seg[4] in ("revision", "tree")):
            what = seg[4] if len(seg) > 4 else "revision"
            repo = fake.repo(seg[2], seg[3])
            if repo is None:
                self._count(what)
                self._missing("RepoNotFound", "Repository not found")
                return
            repo_id = f"{seg[2]}/{seg[3]}"
            if what == "revision":
                self._count("revision")
                self._json({"id": repo_id, "modelId": repo_id, "sha": SHA, "private": False,
                            "siblings": []})
                return
            self._count("tree")
            rel = "/".join(seg[6:]) if len(seg) > 6 else ""
            recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
            entries = fake.tree(repo, rel, recursive)
            if entries is None:
                self._missing("EntryNotFound", f"{rel}: no such folder")
                return
            start = int(query.get("cursor", ["0"])[0] or 0)
            page = entries[start : start + fake.page_size]
            headers = {}
            if start + fake.page_size < len(entries):
                nxt = f"{fake.url}{parts.path}?" + "&".join(
                    f"{k}={quote(v[0])}" for k, v in query.items() if k != "cursor"
                ) + f"&cursor={start + fake.page_size}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            self._json(page, headers)
            return
        if len(seg) >= 5 and seg[2] == "resolve":
            self._count("resolve-head" if head else "resolve")
            repo = fake.repo(seg[0], seg[1])
            rel = "/".join(seg[4:])
            entry = fake.entry(repo, rel) if repo is not None else None
            if repo is None or entry is None or entry["type"] != "file":
                self._missing("EntryNotFound", f"{rel}: no such file")
                return
            self._file(repo / rel, head, f"{seg[0]}/{seg[1]}/{rel}")
            return
        self._count("other")
        with fake.lock:
            fake.unknown.append(f"{self.command} {self.path}")
        self._missing("EntryNotFound", f"GET {parts.path}")

    def _file(self, path: Path, head: bool, name: str) -> None:
        size = path.stat().st_size
        spec = self.headers.get("Range", "")
        if not head:
            with self.fake.lock:
                self.fake.ranges.setdefault(name, []).append(spec or None)
        common = {"ETag": f'"{_oid(str(size))}"', "X-Repo-Commit": SHA,
                  "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if not spec:
            data = b"" if head else path.read_bytes()
            if head:
                self.send_response(200)
                for k, v in common.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                return
            with self.fake.lock:
                self.fake.file_bytes += len(data)
                self.fake.sent[name] += len(data)
            self._send(200, data, common)
            return
        try:
            first_s, last_s = spec.removeprefix("bytes=").split("-", 1)
            first = int(first_s) if first_s else max(0, size - int(last_s))
            last = min(int(last_s), size - 1) if first_s and last_s else size - 1
        except ValueError:
            self._send(400, b"bad range")
            return
        if first >= size or first > last:
            self._send(416, b"", {"Content-Range": f"bytes */{size}"}, head)
            return
        with open(path, "rb") as f:
            f.seek(first)
            data = f.read(last - first + 1)
        if not head:
            with self.fake.lock:
                self.fake.file_bytes += len(data)
                self.fake.sent[name] += len(data)
        self._send(206, data, {**common, "Content-Range": f"bytes {first}-{last}/{size}"}, head)

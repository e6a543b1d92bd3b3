"""The small files an audit reads beside the weights, read as data, and why one could not be.

``config.json``, ``adapter_config.json``, the weight index, ``args.json`` and
``training_args.yaml`` decide what a checkpoint must hold and what the run meant to save.
A file that is absent says nothing; a file that is there but cannot be read (permission
denied, a FIFO, a socket, a symlink loop, larger than any such file) or parsed (truncated
JSON, not an object, a field of the wrong type) must not say nothing: each read here returns
the content or a :class:`Problem` that the audit turns into a finding naming the file.

Every read is bounded: opened non-blocking (a FIFO never blocks), regular files only, at most
``MAX_BYTES``; parsed once per distinct content (keyed by size and digest).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pyaudit import _core
from pyaudit.findings import Finding, finding
from pyaudit.memo import LRU

MAX_BYTES = 256 * 1024 * 1024  # an index of 100k tensors is ~10 MB

Code = Literal["unreadable", "invalid-file"]


@dataclass(frozen=True)
class Problem:
    """Why a file that is there could not be used: ``unreadable`` (its bytes could not be
    read) or ``invalid-file`` (read, but not what such a file must be)."""

    name: str  # as the report names it: the file name, or a path relative to the checkpoint
    code: Code
    reason: str
    severity: Literal["error", "warning"] = "error"

    def message(self) -> str:
        return f"{self.name}: {self.reason}"


class Fetched(Protocol):
    """Run files' bytes read elsewhere (a remote store's, fetched), by the path the audit
    knows them by: a read asks here first, and the disk only for a path not held."""

    def get(self, path: str, /) -> bytes | None: ...


#: An audit's table of parsed run files: (size, digest) of the bytes -> the document, or
#: why it is not one (:class:`pyaudit.auditing.cache.AuditCache` holds one).
Parsed = LRU[dict[str, Any] | str]


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "cannot be read: a symbolic link loop"
    if e.errno == errno.ENXIO:
        return "cannot be read: a socket, not a file"
    return f"cannot be read: {e.strerror or e}"


def _too_large(size: int) -> str:
    return f"cannot be read: {size} bytes, more than such a file ever holds ({MAX_BYTES})"


def read_bytes(path: Path | str, fetched: Fetched | None = None) -> bytes | str | None:
    """The bytes of a small regular file; None when it does not exist (or is a dangling
    link); else why not (a sentence) when it cannot be read. ``fetched``: bytes read
    elsewhere, asked first."""
    if fetched is not None:
        held = fetched.get(os.fspath(path))
        if held is not None:
            return held if len(held) <= MAX_BYTES else _too_large(len(held))
    try:
        # O_NONBLOCK: a FIFO must not hang the audit (never read below).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"cannot be read: a symbolic link to nothing ({os.readlink(path)})"
        return None
    except OSError as e:
        return _os_reason(e)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return f"cannot be read: {_kind(st.st_mode)}, not a regular file"
        # Size first: read(n) would allocate n bytes up front on every call.
        if st.st_size > MAX_BYTES:
            return _too_large(st.st_size)
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:  # grew since the fstat: read the rest, within the cap
            parts = [data]
            total = len(data)
            while total <= MAX_BYTES and (chunk := os.read(fd, 1 << 20)):
                parts.append(chunk)
                total += len(chunk)
            data = b"".join(parts)
    except OSError as e:
        return _os_reason(e)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        return f"cannot be read: grew past {MAX_BYTES} bytes while being read"
    return data


def read_head(path: Path | str, limit: int) -> bytes | None:
    """At most the first ``limit`` bytes of a regular file, or None (absent, unreadable, not
    a regular file): for a file that only may tell something (a model card), never a finding."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def load_json(
    path: Path | str, name: str | None = None, memo: Parsed | None = None,
    fetched: Fetched | None = None,
) -> tuple[dict[str, Any] | None, Problem | None]:
    """(the JSON object in ``path``, None), (None, None) when there is no such file, or
    (None, why) when it is there but unusable. With ``memo``, parsed once per distinct
    content (keyed by size and the core's seeded hash): the dict may be shared, never
    mutate it. ``fetched``: as for :func:`read_bytes`."""
    shown = name or Path(path).name
    data = read_bytes(path, fetched)
    if data is None:
        return None, None
    if isinstance(data, str):
        return None, Problem(shown, "unreadable", data)
    if memo is None:
        doc = _json_object(data)
    else:
        doc = memo.get((len(data), _core.hash_bytes(data)), lambda: _json_object(data))
    if isinstance(doc, str):
        return None, Problem(shown, "invalid-file", doc)
    return doc, None


def parsed(
    known: tuple[int, int], memo: Parsed
) -> tuple[bool, dict[str, Any] | None, str | None]:
    """(held, document, why not) for content ``memo`` parsed before, by (size, digest)."""
    held, doc = memo.lookup(known)
    if not held:
        return False, None, None
    if isinstance(doc, str):
        return True, None, doc
    return True, doc, None


def _json_object(data: bytes) -> dict[str, Any] | str:
    if not data.strip():
        return "empty: not a JSON object"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 text (byte {e.start}): not a JSON file"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        cut = " (cut short?)" if e.pos >= len(text.rstrip()) - 1 else ""
        return f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}{cut}"
    except (ValueError, RecursionError):
        return "not valid JSON: nested too deeply to parse"
    if not isinstance(doc, dict):
        return f"holds a JSON {_json_type(doc)}, not an object"
    return doc


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


_YAML_LINE = re.compile(r"^([A-Za-z_][\w.-]*):\s*(.*?)\s*$")


def load_yaml_scalars(
    path: Path | str, fetched: Fetched | None = None
) -> tuple[dict[str, str] | None, Problem | None]:
    """The top-level ``key: value`` scalars of a flat YAML file (no YAML library needed), as
    :func:`load_json` answers."""
    shown = Path(path).name
    data = read_bytes(path, fetched)
    if data is None:
        return None, None
    if isinstance(data, str):
        return None, Problem(shown, "unreadable", data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, Problem(
            shown, "invalid-file", f"not UTF-8 text (byte {e.start}): not a YAML file"
        )
    if "\0" in text:
        return None, Problem(shown, "invalid-file", "holds NUL bytes: not a YAML file")
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _YAML_LINE.match(line)
        if m and m.group(2) and not m.group(2).startswith(("#", "|", ">")):
            value = m.group(2)
            if not value.startswith(("'", '"')):
                value = re.sub(r"\s+#.*$", "", value)  # an inline comment
            out[m.group(1)] = value.strip("'\"")
    return out, None


# --- fields of the wrong type ------------------------------------------------------------


def field_problems(
    name: str,
    doc: dict[str, Any],
    fields: dict[str, tuple[type, ...]],
    severity: Literal["error", "warning"] = "error",
) -> list[Problem]:
    """A Problem for each of ``fields`` present in ``doc`` with a value of none of its
    types (``None`` counts as absent)."""
    out: list[Problem] = []
    for key, types in fields.items():
        value = doc.get(key)
        if value is None:
            continue
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            wanted = " or ".join(_TYPE_NAMES[t] for t in types)
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            out.append(
                Problem(
                    name,
                    "invalid-file",
                    f"{key} is {shown} (a {_json_type(value)}), not {wanted}",
                    severity,
                )
            )
    return out


_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true/false",
    list: "a list",
    dict: "an object",
}

#: Fields the audit reads from each file, by the type they must have.
CONFIG_FIELDS: dict[str, tuple[type, ...]] = {
    "model_type": (str,),
    "text_config": (dict,),
    "vision_config": (dict,),
}
CONFIG_DTYPE_FIELDS: dict[str, tuple[type, ...]] = {"torch_dtype": (str,), "dtype": (str,)}
ADAPTER_FIELDS: dict[str, tuple[type, ...]] = {
    "r": (int,),
    "lora_alpha": (int, float),
    "target_modules": (str, list),
    "base_model_name_or_path": (str,),
    "peft_type": (str,),
    "modules_to_save": (list,),
}
ARGS_KIND_FIELDS: dict[str, tuple[type, ...]] = {
    "train_type": (str,),
    "sft_type": (str,),
    "finetuning_type": (str,),
}
ARGS_MODEL_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "model_id_or_path": (str,),
    "model_name_or_path": (str,),
}


def config_problems(name: str, config: dict[str, Any]) -> list[Problem]:
    """What in a config.json the audit cannot use (before a manifest is built from it)."""
    out = field_problems(name, config, CONFIG_FIELDS)
    out += field_problems(name, config, CONFIG_DTYPE_FIELDS, "warning")
    from pyaudit.manifest.dtypes import safetensors_dtype

    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if isinstance(value, str) and value != "auto" and not safetensors_dtype(value, default=""):
            out.append(
                Problem(
                    name,
                    "invalid-file",
                    f"{key} is {value!r}, not a dtype: the dtype is not checked",
                    "warning",
                )
            )
    return out


OFT_PEFT_TYPES = {"OFT", "BOFT"}


def adapter_config_problems(name: str, doc: dict[str, Any]) -> list[Problem]:
    out = field_problems(name, doc, ADAPTER_FIELDS)
    r = doc.get("r")
    peft_type = doc.get("peft_type")
    # r is a rank for LoRA; PEFT's OFT saves r=0 beside oft_block_size (one of the two sizes
    # the blocks: PEFT 0.18.1, from LLaMA-Factory's finetuning_type: oft).
    is_oft = isinstance(peft_type, str) and peft_type.upper() in OFT_PEFT_TYPES
    if isinstance(r, int) and not isinstance(r, bool) and r <= 0 and not is_oft:
        out.append(Problem(name, "invalid-file", f"r is {r}: a LoRA rank is at least 1"))
    targets = doc.get("target_modules")
    if isinstance(targets, list) and not all(isinstance(t, str) for t in targets):
        out.append(Problem(name, "invalid-file", "target_modules holds entries that are not names"))
    return out


def args_problems(name: str, doc: dict[str, Any]) -> list[Problem]:
    return field_problems(name, doc, ARGS_KIND_FIELDS) + field_problems(
        name, doc, ARGS_MODEL_FIELDS, "warning"
    )


def index_problems(name: str, doc: dict[str, Any]) -> list[Problem]:
    """What in an index's ``metadata`` is of the wrong type (a missing or malformed
    ``weight_map`` is the index check's ``index-mismatch``)."""
    metadata = doc.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return [
            Problem(
                name,
                "invalid-file",
                f"metadata is a {_json_type(metadata)}, not an object: total_size not checked",
                "warning",
            )
        ]
    if isinstance(metadata, dict):
        total = metadata.get("total_size")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
            return [
                Problem(
                    name,
                    "invalid-file",
                    f"metadata.total_size is {json.dumps(total)[:40]} (a {_json_type(total)}), "
                    "not an integer: not checked",
                    "warning",
                )
            ]
    return []


def findings_of(problems: Iterable[Problem]) -> list[Finding]:
    """Each problem as the finding a report carries (code, severity, the file and why)."""
    return [finding(p.code, p.message(), severity=p.severity) for p in problems]

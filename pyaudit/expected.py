"""What a checkpoint must hold, and where that knowledge came from.

Sources, in order of authority: ``--base DIR`` (a reference checkpoint's own
headers), the directory's ``config.json``, the model the run's files name
(resolved locally, never over the network), the index alone. Each becomes one
:class:`Expected`: every healthy on-disk layout's tensor names, shapes and dtypes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyaudit.auditing.cache import AuditCache
from pyaudit.discover import CheckpointDir
from pyaudit.findings import Finding, finding
from pyaudit.headers import Header
from pyaudit.manifest import (
    ExpectedTensor,
    ManifestError,
    UnknownArchitecture,
    build_manifest,
    group_names,
    layouts,
    model_type_of,
)
from pyaudit.manifest.dtypes import DTYPE_BYTES, config_dtype
from pyaudit.memo import Identity
from pyaudit.runs import RunArgs, read_json, resolve_model


@dataclass
class LayoutTensors:
    """One naming convention: on-disk name -> expected tensor, in spec order."""

    name: str
    tensors: dict[str, ExpectedTensor]
    optional: dict[str, ExpectedTensor] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    sections: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "vision" -> names
    total_bytes: int | None = None  # this layout's bytes, when they differ between layouts


@dataclass
class Expected:
    """The tensors a checkpoint must hold, in every layout that is healthy for it."""

    source: str  # "config.json", "base model Qwen/... (path)", "--base DIR", "index"
    model_type: str | None
    dtype: str | None  # the config's dtype as a safetensors name, when a config said
    layouts: list[LayoutTensors]
    shapes_known: bool = True
    quantization: str | None = None
    total_bytes: int | None = None
    # on-disk name in any layout -> (layout index, canonical position); built lazily
    _where: dict[str, tuple[int, int]] | None = None

    @property
    def default(self) -> LayoutTensors:
        return self.layouts[0]

    def where(self) -> dict[str, tuple[int, int]]:
        """Every layout's names -> (layout index, position in spec order)."""
        if self._where is None:
            where: dict[str, tuple[int, int]] = {}
            for li, lay in enumerate(self.layouts):
                for pos, name in enumerate(lay.tensors):
                    where.setdefault(name, (li, pos))
            self._where = where
        return self._where

    def group(self, names: list[str], layout: LayoutTensors) -> list[tuple[str, int]]:
        return group_names(names, all_names=layout.tensors.keys())


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


class ManifestUnavailable(Exception):
    """No spec can say what this config's model holds (unknown-architecture)."""

    def __init__(self, model_type: str | None, reason: str) -> None:
        super().__init__(reason)
        self.model_type = model_type


class ConfigInvalid(ManifestUnavailable):
    """The family has a spec, but this config's fields cannot give its manifest (a count
    that is a string, a negative size, a section that is not an object): invalid-file."""


def from_config(
    config: dict[str, Any], source: str, cache: AuditCache | None = None
) -> Expected:
    """Every layout's manifest of ``config``; with ``cache``, one build per distinct config.

    Configs read through the cache's JSON table are the same object for the same bytes:
    those skip even the canonical dump that keys the content table.
    """
    if cache is None:
        return _from_config_key(_config_key(config), source)
    manifests = cache.manifests
    return cache.expected_by_object.get(
        (Identity(config), source),
        lambda: manifests.get(
            (_config_key(config), source),
            lambda: _from_config_key(_config_key(config), source),
        ),
    )


def _from_config_key(key: str, source: str) -> Expected:
    config = json.loads(key)
    model_type = model_type_of(config)
    try:
        lays = layouts(config)
        manifests = [build_manifest(config, lay.name) for lay in lays]
    except UnknownArchitecture as e:
        raise ManifestUnavailable(model_type, str(e)) from None
    except (ManifestError, KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise ConfigInvalid(model_type, f"not a valid {model_type} config: {e}") from None
    first = manifests[0]
    return Expected(
        source=source,
        model_type=first.model_type,
        dtype=first.dtype,
        layouts=[
            LayoutTensors(
                m.layout, m.tensors, dict(m.optional), dict(m.tied), dict(m.groups), m.total_bytes
            )
            for m in manifests
        ],
        shapes_known=True,
        quantization=first.quantization,
        total_bytes=first.total_bytes,
    )


def from_oracle(
    config: dict[str, Any],
    source: str = "transformers oracle",
    *,
    source_names: Iterable[str] | None = None,
    timeout: float = 120.0,
    cache: AuditCache | None = None,
) -> Expected:
    """What the installed transformers' ``save_pretrained`` writes for ``config``
    (:func:`pyaudit.oracle.oracle_manifest`), as one layout; with ``cache``, one per config
    (and names). The oracle keeps its own answers for the life of the process.

    ``source_names``: the audited checkpoint's tensor names, to get the layout transformers
    keeps when it loads such a checkpoint and saves it again (older layouts survive a round
    trip). Raises :class:`ManifestUnavailable` when the oracle cannot answer (torch or
    transformers missing, unknown model type, quantized config, timeout, worker error).
    """
    names = None if source_names is None else tuple(sorted(set(source_names)))
    key = _config_key(config)
    if cache is None:
        return _from_oracle_key(key, source, names, timeout)
    return cache.oracle.get(
        (key, source, names, timeout), lambda: _from_oracle_key(key, source, names, timeout)
    )


def _from_oracle_key(
    key: str, source: str, names: tuple[str, ...] | None, timeout: float
) -> Expected:
    from pyaudit.oracle import OracleUnavailable, oracle_manifest

    config = json.loads(key)
    try:
        result = oracle_manifest(config, timeout=timeout, source_names=names)
    except OracleUnavailable as e:
        raise ManifestUnavailable(model_type_of(config), f"transformers oracle: {e}") from None
    dtype = config_dtype(config)
    tensors: dict[str, ExpectedTensor] = {}
    for name, (shape, st_dtype) in result.tensors.items():
        nbytes = DTYPE_BYTES[st_dtype]
        for d in shape:
            nbytes *= d
        tensors[name] = ExpectedTensor(shape, st_dtype, nbytes)
    layout = f"as transformers {result.transformers_version} saves {result.architecture}"
    return Expected(
        source=source,
        model_type=result.model_type,
        dtype=dtype,
        layouts=[LayoutTensors(layout, tensors, tied=dict(result.tied))],
        shapes_known=True,
        total_bytes=sum(t.nbytes or 0 for t in tensors.values()),
    )


def from_tensors(
    tensors: dict[str, tuple[str, tuple[int, ...], int]],
    source: str,
    model_type: str | None,
    family: Expected | None = None,
) -> Expected:
    """A reference checkpoint's own tensors (``--base``): name -> (dtype, shape, nbytes).

    With ``family`` (the manifest of the base's config), the same tensors are also
    expected under the family's other healthy namings (e.g. Qwen2.5-VL's
    ``model.language_model.*``, which is how PEFT names an adapter's modules under
    transformers >= 4.52 even when the base on disk uses ``model.layers.*``).
    """
    expected = {
        n: ExpectedTensor(shape, dtype, nbytes) for n, (dtype, shape, nbytes) in tensors.items()
    }
    own = LayoutTensors("as in the base", expected)
    return Expected(
        source=source,
        model_type=model_type,
        dtype=None,
        layouts=[own, *(_renamed(own, family) if family is not None else [])],
        total_bytes=sum(nbytes for _, _, nbytes in tensors.values()),
    )


def _renamed(own: LayoutTensors, family: Expected) -> list[LayoutTensors]:
    """``own``'s tensors under each other layout of ``family``, matched by spec position."""
    scores = [sum(1 for n in own.tensors if n in lay.tensors) for lay in family.layouts]
    if not scores or max(scores) == 0:
        return []
    li = max(range(len(scores)), key=lambda i: scores[i])
    position = {n: i for i, n in enumerate(family.layouts[li].tensors)}
    out = []
    for lj, lay in enumerate(family.layouts):
        names = list(lay.tensors)
        if lj == li or len(names) != len(position):
            continue
        renamed = {(names[position[n]] if n in position else n): t for n, t in own.tensors.items()}
        out.append(LayoutTensors(f"as in the base, {lay.name} names", renamed))
    return out


def from_index(names: list[str], total_size: int | None, source: str) -> Expected:
    """Names alone (an index's weight_map): shapes and dtypes unknown."""
    expected = {n: ExpectedTensor(None, "", None) for n in names}
    return Expected(
        source=source,
        model_type=None,
        dtype=None,
        layouts=[LayoutTensors("as in the index", expected)],
        shapes_known=False,
        total_bytes=total_size,
    )


# --- where the expectation comes from -------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What a checkpoint is held against (None: nothing says), the model type a config
    named that no spec knows, and what was found out on the way (unknown-architecture,
    base-not-found)."""

    expected: Expected | None
    model_type: str | None = None
    findings: tuple[Finding, ...] = ()


def expectation_for(
    ckpt: CheckpointDir,
    config: dict[str, Any] | None,
    adapter_config: dict[str, Any] | None,
    run: RunArgs,
    index: dict[str, Any] | None,
    oracle: str | None,
    base_expected: Expected | None,
    cache: AuditCache,
    found_names: Callable[[], Iterable[str]] = tuple,
) -> Expectation:
    """The first source that answers: ``--base`` (``base_expected``), the checkpoint's
    config.json (then, with ``oracle="transformers"``, the installed transformers), the
    model the run's files name (found locally), the index (``index``: its weight_map,
    total_size and name) alone."""
    if base_expected is not None:
        return Expectation(base_expected)
    findings: list[Finding] = []
    model_type: str | None = None
    unavailable: ManifestUnavailable | None = None
    if config is not None:
        try:
            return Expectation(from_config(config, "config.json", cache))
        except ConfigInvalid as e:
            # A family with a spec, a config that cannot give its manifest: the config is
            # at fault (not pyaudit's knowledge), and nothing it implies was verified.
            invalid = finding("invalid-file", f"config.json: {e}")
            return Expectation(_from_index(index), e.model_type, (invalid,))
        except ManifestUnavailable as e:
            unavailable = e
            model_type = e.model_type
        if oracle == "transformers":
            try:
                found = from_oracle(config, source_names=found_names(), cache=cache)
                return Expectation(found, model_type)
            except ManifestUnavailable as e:
                unavailable = ManifestUnavailable(e.model_type, f"{unavailable}; {e}")
    # The model the run's own files name, found locally.
    references: list[tuple[str, str]] = []
    base_ref = adapter_config.get("base_model_name_or_path") if adapter_config else None
    if isinstance(base_ref, str):
        references.append(("adapter_config.json base_model_name_or_path", base_ref))
    if run.model:
        args_name = run.args_path.name if run.args_path else "run args"
        references.append((f"{args_name} model", run.model))
    if unavailable is None and config is None:
        for _, ref in references:
            path = resolve_model(ref, ckpt.path, ckpt.scan_root)
            if path is None:
                continue
            base_config = read_json(path / "config.json", cache.json)
            if base_config is None:
                continue
            try:
                where = ref if Path(ref) == path else f"{ref} ({path})"
                return Expectation(from_config(base_config, f"base model {where}", cache))
            except ManifestUnavailable as e:
                unavailable = e
                model_type = e.model_type
                break
        else:
            if references and (ckpt.has_adapter_config or not ckpt.has_weights):
                what, ref = references[0]
                findings.append(
                    finding(
                        "base-not-found",
                        f"the base model {ref!r} ({what}) is not available locally (path, "
                        "$HF_HOME hub cache, ModelScope cache): only the adapter's own "
                        "consistency was checked; pass --base DIR to check it against the base",
                    )
                )
    if unavailable is not None:
        checked = (
            "the index's tensor names and total_size, each file's header and extents"
            if index
            else "each file's header and extents (no index to list the tensors)"
        )
        how = (
            ""
            if oracle == "transformers"
            else "; to check every tensor's name, shape and dtype, run with --oracle transformers "
            "(needs `pip install torch transformers`)"
        )
        findings.append(
            finding(
                "unknown-architecture",
                f"{unavailable}: only structural checks ran ({checked}); no tensor was checked "
                f"against what the model holds, so a missing layer can go unnoticed{how}",
            )
        )
    return Expectation(_from_index(index), model_type, tuple(findings))


def _from_index(index: dict[str, Any] | None) -> Expected | None:
    if index is None:
        return None
    names = [n for n in index["weight_map"] if isinstance(n, str)]
    total = index.get("total_size")
    return from_index(names, total if isinstance(total, int) else None, index["name"])


def base_expectation(base: Path, headers: list[Header]) -> Expected:
    """``--base DIR``: the reference checkpoint's own tensors are what to expect."""
    tensors: dict[str, tuple[str, tuple[int, ...], int]] = {}
    for header in headers:
        if not header.ok:
            raise ValueError(f"--base {base}: {header.error}")
        if Path(header.path).name.startswith("adapter_model"):
            continue
        names, dtypes, shapes, offsets = header.table()
        for n, d, s, (b, e) in zip(names, dtypes, shapes, offsets, strict=True):
            tensors[n] = (d, s, e - b)
    config = read_json(base / "config.json")
    model_type = config.get("model_type") if config else None
    family: Expected | None = None
    if config is not None:
        try:
            family = from_config(config, "config.json")
        except ManifestUnavailable:
            family = None
    return from_tensors(
        tensors, f"--base {base}", model_type if isinstance(model_type, str) else None, family
    )


"""What a checkpoint must hold, and where that knowledge came from.

Sources, in order of authority: ``--base DIR`` (a reference checkpoint's own
headers), the directory's ``config.json``, the model the run's files name
(resolved locally, never over the network), the index alone. Each becomes one
:class:`Expected`: every healthy on-disk layout's tensor names, shapes and dtypes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyaudit.auditing.cache import AuditCache
from pyaudit.auditing.repeats import block_lists, incomplete_blocks
from pyaudit.discover import CheckpointDir
from pyaudit.findings import Finding, Message, finding
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
from pyaudit.manifest.dtypes import DTYPE_BYTES, declared_dtype
from pyaudit.memo import Identity
from pyaudit.oracle import oracle_installed
from pyaudit.runfiles import Fetched
from pyaudit.runs import RunArgs, read_json, resolve_model

if TYPE_CHECKING:
    from pyaudit.oracle import OracleResult, OracleSession


@dataclass
class LayoutTensors:
    """One naming convention: on-disk name -> expected tensor, in spec order."""

    name: str
    tensors: dict[str, ExpectedTensor]
    optional: dict[str, ExpectedTensor] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    sections: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "vision" -> names
    total_bytes: int | None = None  # this layout's bytes, when they differ between layouts
    # group_names() of all of ``tensors``, made on first need (see Expected.default_groups)
    all_groups: list[tuple[str, int]] | None = field(default=None, repr=False, compare=False)


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
    oracle: str | None = None  # from the transformers oracle: what it built, and how
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

    def default_groups(self) -> list[tuple[str, int]]:
        """:meth:`group` of every tensor of the default layout (asked of each adapter-only
        checkpoint of one base where full training was declared: made once a layout, which
        the manifests of one config share)."""
        layout = self.default
        if layout.all_groups is None:
            layout.all_groups = self.group(list(layout.tensors), layout)
        return list(layout.all_groups)


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

    def of_key(key: str) -> Expected:
        # One build per config, whatever its source: the base of every adapter of one run
        # is the same config under a different name (the adapter's own base path), and the
        # layouts (with what is made of them on first need, as default_groups) are shared.
        shared = manifests.get((key, None), lambda: _from_config_key(key, source))
        return shared if shared.source == source else dataclasses.replace(shared, source=source)

    def by_content() -> Expected:
        key = _config_key(config)  # (the canonical dump, once a miss)
        return manifests.get((key, source), lambda: of_key(key))

    return cache.expected_by_object.get((Identity(config), source), by_content)


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
    # A config that names no dtype meant none: the files' own dtype is what loads.
    meant = first.dtype if declared_dtype(config) is not None or first.quantization else None
    return Expected(
        source=source,
        model_type=first.model_type,
        dtype=meant,
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
    source: str | None = None,
    *,
    source_names: Iterable[str] | None = None,
    timeout: float = 120.0,
    cache: AuditCache | None = None,
    session: OracleSession | None = None,
) -> Expected:
    """What the installed transformers' ``save_pretrained`` writes for ``config``
    (:func:`pyaudit.oracle.oracle_manifest`); with ``cache``, once per config.

    Asked through ``session`` (else the cache's, else one of its own for this call): one
    worker, answers kept on disk. ``source`` defaults to ``"transformers <version> oracle"``,
    with ``" (cached)"`` when the answer came from the disk cache.

    ``source_names`` (the audited checkpoint's tensor names) only pick among layouts the
    oracle builds, and never shrink what is expected: the first layout is what transformers
    writes for a model built fresh from ``config`` (asked once per config, whatever the
    names). Only when some names are not in it (an older layout) is the round trip asked
    too (the model as ``from_pretrained`` leaves it after loading those names, then saved),
    and it is kept as a second layout only when it holds the same bytes as the fresh build
    (the same model under other names), placed first when more of the names fit it. A
    broken checkpoint's names (a layer dropped) therefore never make a smaller
    expectation. Raises :class:`ManifestUnavailable` when the oracle cannot answer.
    """
    names = None if source_names is None else frozenset(source_names)
    key = _config_key(config)
    asked = session if session is not None else cache.oracle_session if cache else None

    def fresh() -> Expected:
        return _from_oracle_key(key, source, None, timeout, asked)

    first = fresh() if cache is None else cache.oracle.get((key, source, None), fresh)
    if not names:
        return first
    outside = names - first.default.tensors.keys() - first.default.tied.keys()
    if not outside:
        return first

    def both() -> Expected:
        return _with_round_trip(first, key, source, names, timeout, asked)

    if cache is None:
        return both()
    return cache.oracle.get((key, source, names), both)


def _oracle_answer(
    key: str, names: frozenset[str] | None, timeout: float, session: OracleSession | None
) -> tuple[OracleResult, bool]:
    from pyaudit.oracle import OracleSession, OracleUnavailable

    config = json.loads(key)
    try:
        if session is not None:
            return session.manifest(config, names)
        with OracleSession(timeout=timeout) as own:
            return own.manifest(config, names)
    except OracleUnavailable as e:
        raise ManifestUnavailable(model_type_of(config), f"transformers oracle: {e}") from None


def _oracle_layout(result: OracleResult, name: str) -> LayoutTensors:
    tensors: dict[str, ExpectedTensor] = {}
    for tensor, (shape, st_dtype) in result.tensors.items():
        nbytes = DTYPE_BYTES[st_dtype]
        for d in shape:
            nbytes *= d
        tensors[tensor] = ExpectedTensor(shape, st_dtype, nbytes)
    return LayoutTensors(name, tensors, tied=dict(result.tied))


def _from_oracle_key(
    key: str,
    source: str | None,
    names: frozenset[str] | None,
    timeout: float,
    session: OracleSession | None,
) -> Expected:
    result, cached = _oracle_answer(key, names, timeout, session)
    version = result.transformers_version
    if source is None:
        source = f"transformers {version} oracle" + (" (cached)" if cached else "")
    layout = _oracle_layout(result, f"as transformers {version} saves {result.architecture}")
    how = "answer read from the disk cache" if cached else "built on the meta device"
    return Expected(
        source=source,
        model_type=result.model_type,
        dtype=declared_dtype(json.loads(key)),
        layouts=[layout],
        shapes_known=True,
        total_bytes=result.total_bytes,
        oracle=f"what transformers {version} writes for {result.architecture} ({how})",
    )


def _with_round_trip(
    first: Expected,
    key: str,
    source: str | None,
    names: frozenset[str],
    timeout: float,
    session: OracleSession | None,
) -> Expected:
    """``first`` (the fresh build), with the round trip of ``names`` as a second layout when
    it is the same model under other names (same bytes); ``first`` itself otherwise."""
    try:
        result, _ = _oracle_answer(key, names, timeout, session)
    except ManifestUnavailable:
        return first
    fresh = first.default
    if set(result.tensors) == set(fresh.tensors) or result.total_bytes != first.total_bytes:
        return first
    version = result.transformers_version
    trip = _oracle_layout(
        result, f"as transformers {version} saves {result.architecture} loaded from these names"
    )
    if len(names & trip.tensors.keys()) > len(names & fresh.tensors.keys()):
        lays = [trip, fresh]
    else:
        lays = [fresh, trip]
    return Expected(
        source=first.source,
        model_type=first.model_type,
        dtype=first.dtype,
        layouts=lays,
        shapes_known=True,
        total_bytes=first.total_bytes,
        oracle=first.oracle,
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
    fetched: Fetched | None = None,
    found_names: Callable[[], Iterable[str]] = tuple,
    found_shapes: Callable[[], Mapping[str, tuple[int, ...]]] = dict,
) -> Expectation:
    """The first source that answers: ``--base`` (``base_expected``), the checkpoint's
    config.json (then, with ``oracle`` ``"auto"`` or ``"transformers"`` and torch and
    transformers installed, the transformers oracle: its note an ``oracle-manifest``), the
    model the run's files name (found locally), the index (``index``: its weight_map,
    total_size and name) alone. Where none says what the model holds (no spec or oracle
    answer: ``unknown-architecture``; nothing at all: ``no-manifest``), the checkpoint's
    numbered blocks (``found_shapes``) are held against one another
    (:mod:`pyaudit.auditing.repeats`). ``fetched``: run files' bytes read elsewhere (the
    named model's ``config.json``), asked before the disk."""
    if base_expected is not None:
        return Expectation(base_expected)
    findings: list[Finding] = []
    model_type: str | None = None
    unavailable: ManifestUnavailable | None = None
    oracle_state = "off"
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
        if oracle in ("auto", "transformers"):
            if oracle_installed():
                try:
                    found = from_oracle(config, source_names=found_names(), cache=cache)
                    note = finding(
                        "oracle-manifest",
                        f"{unavailable}: the expected tensors are {found.oracle}, from "
                        "config.json",
                    )
                    return Expectation(found, model_type, (note,))
                except ManifestUnavailable as e:
                    unavailable = ManifestUnavailable(e.model_type, f"{unavailable}; {e}")
                    oracle_state = "failed"
            else:
                oracle_state = "not-installed"
        else:
            oracle_state = "off"
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
            base_config = read_json(path / "config.json", cache.json, fetched)
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
    unguided = unavailable is None and config is None and not ckpt.has_adapter_config
    if unavailable is not None or (unguided and ckpt.has_weights):
        blocks = block_lists(found_shapes())
        checked = (
            "the index's tensor names and total_size, each file's header and extents"
            if index
            else "each file's header and extents (no index to list the tensors)"
        )
        described = blocks.described()
        if described:
            checked += f", {described}"
        findings += incomplete_blocks(blocks, config)
        if unavailable is not None:
            findings.append(
                unknown_architecture(str(unavailable), checked, oracle_state, config, described)
            )
        else:
            findings.append(no_manifest(references, checked, described))
    return Expectation(_from_index(index), model_type, tuple(findings))


#: The unknown-architecture message; ``consensus`` is filled in by the sweep's consensus
#: pass (:mod:`pyaudit.auditing.consensus`), which rebuilds the message from its values.
UNKNOWN_TEMPLATE = (
    "{reason}: only structural checks ran. Checked: {checked}{consensus}. Not checked: each "
    "tensor's name, shape and dtype against what the model holds, so {gap}. {how}"
)


def _gap(blocks_checked: str) -> str:
    if blocks_checked:
        return (
            "a tensor missing from every block of a list alike, a block missing at a list's "
            "end, or a tensor outside the numbered blocks can go unnoticed"
        )
    return "a missing layer can go unnoticed"


def no_manifest(
    references: list[tuple[str, str]], checked: str, blocks_checked: str = ""
) -> Finding:
    """``no-manifest``: full weights and nothing that says what the model must hold (no
    config.json, no ``--base``, no base model the run's files name found locally)."""
    if references:
        what, ref = references[0]
        reason = (
            f"no config.json beside the weights, and the model {ref!r} ({what}) is not "
            "available locally (path, $HF_HOME hub cache, ModelScope cache)"
        )
    else:
        reason = "no config.json beside the weights, and no --base or run record names the model"
    how = (
        "To check them: put the model's config.json beside the weights, or pass --base "
        "DIR, a checkpoint of the same model known to be complete."
    )
    return finding("no-manifest", _unchecked(reason, checked, blocks_checked, how))


def _unchecked(reason: str, checked: str, blocks_checked: str, how: str) -> Message:
    """The message of a checkpoint nothing said the tensors of (:data:`UNKNOWN_TEMPLATE`)."""
    return Message.of(
        UNKNOWN_TEMPLATE,
        reason=reason,
        checked=checked,
        consensus="",
        gap=_gap(blocks_checked),
        how=how,
    )


def unknown_architecture(
    reason: str,
    checked: str,
    oracle_state: str,
    config: dict[str, Any] | None,
    blocks_checked: str = "",
) -> Finding:
    """``unknown-architecture``: why, what was checked and what was not, and how to get the
    rest checked. ``oracle_state``: ``off`` (--no-oracle), ``not-installed``, ``failed``;
    ``blocks_checked``: what the repeated-blocks check covered ("" when nothing)."""
    base = "pass --base DIR, a checkpoint of this config known to be complete"
    if config is None:
        how = f"To check them: {base}."
    elif oracle_state == "off":
        reason += "; the transformers oracle is off (--no-oracle)"
        how = f"To check them: run without --no-oracle (needs torch and transformers), or {base}."
    elif oracle_state == "not-installed":
        reason += "; no transformers oracle (torch and transformers are not installed)"
        how = (
            "To check them: pip install 'pyaudit[hf]' (torch, transformers; the oracle then "
            f"runs by default), or {base}."
        )
    else:
        how = (
            "To check them: a transformers release that builds this model "
            f"(pip install -U transformers), or {base}."
        )
    return finding("unknown-architecture", _unchecked(reason, checked, blocks_checked, how))


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


"""The finding codes of CONTRACT.md, their severities and their one order, in one place.

A finding's numbers (counts, byte sizes, shapes) are data: a message is a template and
its values (:class:`Message`), rendered to text by :func:`render` (sizes by
:mod:`pyaudit.units`), so the audit states quantities and never formats them itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from pyaudit.units import human_bytes, human_shape

Severity = Literal["error", "warning", "info"]

#: code -> default severity (CONTRACT.md). A few codes change severity with
#: context (``adapter-only`` is an error under ``--expect full``); the auditor
#: says so explicitly where it makes them.
CODES: dict[str, Severity] = {
    "corrupt-header": "error",
    "lfs-pointer": "error",
    "shard-truncated": "error",
    "shard-missing": "error",
    "index-mismatch": "error",
    "base-weights-missing": "error",
    "adapter-only": "info",
    "intent-mismatch": "error",
    "no-weights": "error",
    "empty-adapter": "error",
    "wrapper-prefix": "error",
    "mixed-layout": "error",
    "adapter-mismatch": "error",
    "empty-tensors": "error",
    "shape-mismatch": "error",
    "dtype-drift": "warning",
    "unmerged-peft": "error",
    "unexpected-tensors": "warning",
    "unknown-architecture": "warning",
    "nan": "error",
    "inf": "error",
    "all-zeros": "warning",
    # Extensions (CONTRACT.md allows new codes; none above is renamed).
    "unreadable": "error",  # a weight file that cannot be opened or read at all
    "index-missing": "error",  # several shards and no index to tie them together
    "stray-weights": "warning",  # a weights file beside an index that does not name it
    "tied-weights-saved": "warning",  # a tied lm_head saved anyway
    "base-not-found": "info",  # an adapter's base model is not available locally
    "shapes-unverified": "info",  # .bin weights: names checked, shapes not (never unpickled)
    "invalid-file": "error",  # a run file read but unusable: not JSON, not an object, bad field
    "weights-unverified": "error",  # weights only in a format pyaudit cannot read
    "base-mismatch": "error",  # --base is a model of another family than the checkpoint
    # the run's training type was force-loaded from an earlier run's saved arguments
    # (ms-swift load_args) and it saved adapters only: the message names the source and fix
    "args-inherited": "warning",
    # full weights from an ms-swift SFT run that recorded --adapters with train_type/tuner_type
    # full: ms-swift loads adapters only for adapter types, so they were not trained from
    "adapters-ignored": "warning",
    # pickle-era files (.bin, DCP .metadata, DeepSpeed records), read as data, never unpickled
    "corrupt-pickle": "error",  # not a readable torch file / DCP metadata, or a broken record
    "unsafe-pickle": "error",  # names globals that would run code if unpickled (os.system ...)
    "pickle-globals": "warning",  # names globals torch.load(weights_only=True) refuses
    # a sharded training state (FSDP DCP, DeepSpeed ZeRO) in place of weights: complete
    # against the model, with the command that consolidates it; else what it lacks
    "unconsolidated": "warning",
    # no spec for the family: the expected tensors came from the installed transformers
    "oracle-manifest": "info",
    # a checkpoint lacks tensors (or disagrees in shape/dtype with) what the other
    # checkpoints of the scan sharing its config.json hold (no spec, no oracle)
    "consensus-missing": "error",
    "consensus-mismatch": "error",
    "no-manifest": "warning",
    "layer-incomplete": "error",
    # tensors the saved class's _keys_to_ignore_on_load_unexpected names: transformers
    # does not load them and says nothing (the original T5 files' EncDecAttention bias)
    "ignored-on-load": "info",
}

SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")  # worst first: the one order
SEVERITY_RANK: dict[str, int] = {s: len(SEVERITIES) - 1 - i for i, s in enumerate(SEVERITIES)}
MAX_TENSORS = 20  # names listed per finding; `count` carries the full number


class Bytes(int):
    """A byte count in a message: rendered as a size (16.58 GB, 512 B)."""


class Shape(tuple[int, ...]):
    """A tensor shape in a message: rendered as [a, b]."""


Value = str | int | float | Bytes | Shape


@dataclass(frozen=True)
class Message:
    """A message as data: ``template`` (``str.format`` fields naming ``values``) and the
    values, numbers kept as numbers. Only the template is parsed: a value (a tensor or
    file name from the scanned tree) is inserted verbatim, braces and all."""

    template: str
    values: tuple[tuple[str, Value], ...] = ()

    @classmethod
    def of(cls, template: str, **values: Value) -> Message:
        return cls(template, tuple(values.items()))

    def render(self) -> str:
        return render(self)


def _text(value: Value) -> str:
    if isinstance(value, Bytes):
        return human_bytes(int(value))
    if isinstance(value, Shape):
        return human_shape(tuple(value))
    return str(value)


def render(message: Message | str) -> str:
    """A message's text: sizes as :func:`pyaudit.units.human_bytes`, shapes bracketed."""
    if isinstance(message, str):
        return message
    if not message.values:
        return message.template
    return message.template.format_map({k: _text(v) for k, v in message.values})


def severity_order(severity: str) -> int:
    """Sort key: error, warning, info (anything else last)."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


F = TypeVar("F", bound="Finding")


def worst_first(findings: Iterable[F]) -> list[F]:
    """``findings`` in the one severity order, stable within a severity."""
    return sorted(findings, key=lambda f: severity_order(f.severity))


@dataclass(frozen=True)
class Finding:
    """One finding: immutable, so that the memo tables may hand the same one to many
    reports (an attempt to change it raises ``dataclasses.FrozenInstanceError``)."""

    code: str
    severity: Severity
    message: str
    count: int = 1
    tensors: tuple[str, ...] = ()
    values: tuple[tuple[str, Value], ...] = ()  # the message's numbers (and names), as data

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "count": self.count,
            "tensors": list(self.tensors),
        }


def finding(
    code: str,
    message: str | Message,
    tensors: Iterable[str] = (),
    count: int | None = None,
    severity: Severity | None = None,
) -> Finding:
    """A finding with the contract's default severity unless told otherwise; ``message``
    plain text or a :class:`Message` (its values kept on the finding)."""
    if code not in CODES:
        raise KeyError(f"unknown finding code {code!r}")
    names = tensors if isinstance(tensors, list) else sorted(tensors)
    return Finding(
        code=code,
        severity=severity or CODES[code],
        message=render(message),
        count=count if count is not None else max(len(names), 1),
        tensors=tuple(names[:MAX_TENSORS]),
        values=message.values if isinstance(message, Message) else (),
    )


def status_of(findings: Iterable[Finding], fail_on: str = "error") -> str:
    """pass / warn / fail, as CONTRACT.md defines them."""
    worst = max((SEVERITY_RANK[f.severity] for f in findings), default=0)
    if worst == SEVERITY_RANK["error"] or (fail_on == "warning" and worst >= 1):
        return "fail"
    return "warn" if worst == SEVERITY_RANK["warning"] else "pass"

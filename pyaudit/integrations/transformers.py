"""Audit every checkpoint a ``transformers.Trainer`` saves, right after it is saved.

::

    from pyaudit.integrations.transformers import AuditCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[AuditCallback(expect="auto", on_fail="stop")])

On each save (``on_save``, main process only) the callback audits
``{output_dir}/checkpoint-{global_step}`` with :func:`pyaudit.audit`, logs one line
(status, kind, tensors and bytes found / expected), appends it as numbers to
``state.log_history`` (``audit_failed``, ``audit_errors``, ``audit_adapter``,
``audit_bytes_found`` …), and keeps ``(step, Report)`` in ``callback.reports``. On a failing
checkpoint, ``on_fail`` decides: ``"stop"`` ends training after this save
(``control.should_training_stop``) and logs the findings as an error, ``"warn"`` only
logs them, ``"raise"`` raises :class:`CheckpointAuditError` carrying the report.

``expect="auto"``: the run's own saved declarations win (an ``args.json`` /
``training_args.yaml`` in the checkpoint saying ``train_type=full`` or ``lora``, read by
:func:`pyaudit.audit`); when there is none, the model the trainer holds decides: a PEFT
model (``peft.PeftModel``, or a transformers model carrying ``peft_config``) must save
an adapter, any other model full weights.

Logging goes to the standard ``logging`` logger ``pyaudit.integrations.transformers``:
a passing checkpoint at INFO, a failing one at WARNING (``on_fail="warn"``) or ERROR.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "pyaudit.integrations.transformers needs the transformers library "
        "(>= 4.40): pip install 'pyaudit[hf]'"
    ) from e

from pyaudit.api import Report, audit
from pyaudit.findings import SEVERITY_RANK, Finding
from pyaudit.report.sizes import human_bytes

__all__ = ["AuditCallback", "CheckpointAuditError", "expected_kind"]

logger = logging.getLogger(__name__)

Expect = Literal["auto", "full", "adapter"]
OnFail = Literal["stop", "warn", "raise"]

#: findings named in a failure's log message (the report holds them all)
MAX_LOGGED_FINDINGS = 5


class CheckpointAuditError(RuntimeError):
    """A checkpoint saved during training failed its audit (``on_fail="raise"``).

    ``report`` is the :class:`pyaudit.Report` (``None`` on processes other than the main
    one in distributed training: only the main process audits), ``path`` the checkpoint
    directory, ``step`` the global step at which it was saved.
    """

    def __init__(self, message: str, report: Report | None, path: str, step: int) -> None:
        super().__init__(message)
        self.report = report
        self.path = path
        self.step = step


def _unwrap(model: Any) -> Any:
    """The model inside DDP / DeepSpeed (``.module``) and torch.compile (``._orig_mod``)."""
    for _ in range(4):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None or inner is model:
            break
        model = inner
    return model


def expected_kind(model: Any) -> tuple[Literal["full", "adapter"] | None, str]:
    """What a trainer holding ``model`` saves: ``("adapter", why)`` for a PEFT model,
    ``("full", why)`` for any other model, ``(None, why)`` when there is no model."""
    if model is None:
        return None, "the trainer passed no model"
    model = _unwrap(model)
    peft = sys.modules.get("peft")  # a PeftModel exists only once peft is imported
    peft_model = getattr(peft, "PeftModel", None) if peft is not None else None
    if isinstance(peft_model, type) and isinstance(model, peft_model):
        return "adapter", f"the model is a PEFT model ({type(model).__name__})"
    if getattr(model, "_hf_peft_config_loaded", False) is True or getattr(
        model, "peft_config", None
    ):
        return "adapter", f"the model ({type(model).__name__}) carries a peft_config"
    return "full", f"the model ({type(model).__name__}) is not a PEFT model"


def _ranked(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings; info findings are not problems."""
    problems = [f for f in findings if f.severity != "info"]
    return sorted(problems, key=lambda f: -SEVERITY_RANK[f.severity])


def _share_failure(failure: str | None) -> str | None:
    """In distributed training only the main process audits: hand its verdict to every
    process, so that all of them stop (or raise) at the same step."""
    torch = sys.modules.get("torch")
    if torch is None:
        return failure
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return failure
    box: list[str | None] = [failure]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _history_entry(report: Report, step: int, epoch: float | None) -> dict[str, float]:
    """The audit as ``state.log_history`` holds metrics: numbers only (codes and messages
    are in ``callback.reports``); an unknown expectation is left out."""
    ckpt = report.checkpoints[0]
    findings = [f for c in report.checkpoints for f in c.findings]
    entry: dict[str, float] = {"step": step}
    if epoch is not None:
        entry["epoch"] = epoch
    entry["audit_failed"] = float(not report.ok)
    entry["audit_errors"] = sum(f.severity == "error" for f in findings)
    entry["audit_warnings"] = sum(f.severity == "warning" for f in findings)
    entry["audit_adapter"] = float(ckpt.kind == "adapter")
    for what, counts in (("tensors", ckpt.tensors), ("bytes", ckpt.bytes)):
        for key in ("found", "expected"):
            value = counts[key]
            if value is not None:
                entry[f"audit_{what}_{key}"] = value
    return entry


class AuditCallback(TrainerCallback):
    """Audit each checkpoint right after the Trainer saves it (see the module docstring).

    expect: ``"auto"`` (the run's saved declarations, else the model: PEFT ⇒ adapter,
        otherwise full), ``"full"`` or ``"adapter"``.
    on_fail: ``"stop"`` (end training after this save), ``"warn"`` (log only) or
        ``"raise"`` (:class:`CheckpointAuditError`).
    base: a reference checkpoint directory whose tensors every checkpoint must hold.
    fail_on: ``"error"`` (default) or ``"warning"``: which findings fail a checkpoint.

    ``reports``: ``(global_step, Report)`` for every checkpoint audited, in order.
    """

    def __init__(
        self,
        expect: Expect = "auto",
        on_fail: OnFail = "stop",
        base: str | os.PathLike[str] | None = None,
        fail_on: Literal["error", "warning"] = "error",
    ) -> None:
        if expect not in ("auto", "full", "adapter"):
            raise ValueError(f"expect must be 'auto', 'full' or 'adapter', not {expect!r}")
        if on_fail not in ("stop", "warn", "raise"):
            raise ValueError(f"on_fail must be 'stop', 'warn' or 'raise', not {on_fail!r}")
        if fail_on not in ("error", "warning"):
            raise ValueError(f"fail_on must be 'error' or 'warning', not {fail_on!r}")
        if base is not None and not os.path.isdir(base):
            raise FileNotFoundError(f"base checkpoint directory not found: {os.fspath(base)}")
        self.expect: Expect = expect
        self.on_fail: OnFail = on_fail
        self.base = base
        self.fail_on: Literal["error", "warning"] = fail_on
        self.reports: list[tuple[int, Report]] = []

    # --- the audit ---------------------------------------------------------------------

    def _audit(self, path: str, model: Any) -> tuple[Report, str]:
        """The report, and what was expected and why."""
        options: dict[str, Any] = {"base": self.base, "fail_on": self.fail_on}
        if self.expect != "auto":
            report = audit(path, expect=self.expect, **options)
            return report, f"{self.expect} (expect={self.expect!r})"
        kind, why = expected_kind(model)
        report = audit(path, expect="auto", **options)
        declared = report.checkpoints[0].declared if report.checkpoints else None
        if declared is not None:
            return report, f"what the run declares ({declared})"
        if kind is None:
            return report, f"nothing declared ({why})"
        return audit(path, expect=kind, **options), f"{kind} ({why})"

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> TrainerControl:
        step = int(state.global_step)
        path = os.path.join(args.output_dir or "", f"{PREFIX_CHECKPOINT_DIR}-{step}")
        report: Report | None = None
        failure: str | None = None
        if state.is_world_process_zero:
            report, failure = self._audit_and_log(path, step, state, kwargs.get("model"))
        if self.on_fail != "warn":
            failure = _share_failure(failure)
        if failure is None:
            return control
        if self.on_fail == "raise":
            raise CheckpointAuditError(failure, report, path, step)
        if self.on_fail == "stop":
            control.should_training_stop = True
        return control

    def _audit_and_log(
        self, path: str, step: int, state: TrainerState, model: Any
    ) -> tuple[Report | None, str | None]:
        """Audit on the main process: log, record; the failure message when it fails."""
        name = os.path.basename(path)
        if not os.path.isdir(path):
            logger.warning("pyaudit: %s not found after the step %d save: not audited", path, step)
            return None, None
        try:
            report, expected = self._audit(path, model)
        except Exception:  # an auditor bug must not end a training run
            logger.exception("pyaudit: auditing %s failed: not audited", path)
            return None, None
        self.reports.append((step, report))
        if not report.checkpoints:
            logger.warning("pyaudit: found no checkpoint to audit in %s (step %d)", path, step)
            return report, None
        ckpt = report.checkpoints[0]
        tensors, size = ckpt.tensors, ckpt.bytes
        problems = _ranked([f for c in report.checkpoints for f in c.findings])
        summary = (
            f"pyaudit: {name} (step {step}) {ckpt.status.upper()}: {ckpt.kind} checkpoint"
            + (f" ({ckpt.model_type})" if ckpt.model_type else "")
            + f", {tensors['found']}/{'?' if tensors['expected'] is None else tensors['expected']}"
            f" tensors, {human_bytes(size['found'])} of {human_bytes(size['expected'])};"
            f" expected {expected}"
        )
        state.log_history.append(_history_entry(report, step, state.epoch))
        details = "".join(
            f"\n  {f.severity} {f.code}: {f.message}" for f in problems[:MAX_LOGGED_FINDINGS]
        )
        if len(problems) > MAX_LOGGED_FINDINGS:
            details += f"\n  ... and {len(problems) - MAX_LOGGED_FINDINGS} more findings"
        if report.ok:
            if problems:
                logger.warning("%s%s", summary, details)
            else:
                logger.info("%s", summary)
            return report, None
        consequence = {
            "stop": "stopping training after this save (on_fail='stop')",
            "warn": "training goes on (on_fail='warn')",
            "raise": "raising CheckpointAuditError (on_fail='raise')",
        }[self.on_fail]
        message = f"{summary}; {consequence}{details}"
        if self.on_fail == "warn":
            logger.warning("%s", message)
        else:
            logger.error("%s", message)
        return report, message

"""AuditCallback under a real transformers.Trainer: a tiny Llama built from a config
(nothing downloaded), trained a few steps on CPU, full and LoRA, each save audited."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MAX_STEPS, SAVE_STEPS = 4, 2
LOGGER = "pyaudit.integrations.transformers"

pytestmark = [
    # transformers 5 warns when peft 0.21 asks a model whether it checkpoints activations
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]


@pytest.fixture(scope="module")
def hf() -> Any:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from pyaudit.integrations import transformers as integration

    return integration


def _model(lora: bool) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=128,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    if lora:
        import peft

        lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, lora)
    return model


class _Tokens:
    """A few dozen random token sequences; labels = input_ids."""

    def __init__(self) -> None:
        import torch

        self.ids = torch.randint(0, 128, (24, 16), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _train(tmp_path: Path, *, lora: bool, callbacks: list[Any]) -> Any:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=MAX_STEPS, save_steps=SAVE_STEPS,
        per_device_train_batch_size=2, report_to=[], use_cpu=True, logging_steps=1,
        disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    trainer = Trainer(model=_model(lora), args=args, train_dataset=_Tokens(), callbacks=callbacks)
    trainer.train()
    return trainer


def _codes(report: Any) -> set[str]:
    return {f.code for c in report.checkpoints for f in c.findings}


def _audit_logs(trainer: Any) -> list[dict[str, Any]]:
    return [e for e in trainer.state.log_history if "audit_failed" in e]


def test_full_training_every_checkpoint_passes(
    hf: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = hf.AuditCallback(expect="auto")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        trainer = _train(tmp_path, lora=False, callbacks=[callback])
    assert trainer.state.global_step == MAX_STEPS
    assert [step for step, _ in callback.reports] == [2, 4]
    for step, report in callback.reports:
        (ckpt,) = report.checkpoints
        assert report.ok, report.to_json()
        assert ckpt.path.endswith(f"checkpoint-{step}")
        assert (ckpt.status, ckpt.kind, ckpt.model_type) == ("pass", "full", "llama")
        assert ckpt.bytes["found"] == ckpt.bytes["expected"] > 0
    logs = _audit_logs(trainer)
    assert [(e["step"], e["audit_failed"], e["audit_adapter"]) for e in logs] == [
        (2, 0, 0), (4, 0, 0),
    ]  # fmt: skip
    assert logs[0]["audit_bytes_found"] == logs[0]["audit_bytes_expected"] > 0
    assert all(isinstance(v, (int, float)) for e in logs for v in e.values())
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in records] == [logging.INFO] * 2
    lines = [r.getMessage() for r in records]
    assert lines[0].startswith("pyaudit: checkpoint-2 (step 2) PASS: full checkpoint (llama)")
    assert "expected full (the model (LlamaForCausalLM) is not a PEFT model)" in lines[0]


def test_lora_under_expect_full_stops_at_the_first_save(
    hf: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = hf.AuditCallback(expect="full", on_fail="stop")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        trainer = _train(tmp_path, lora=True, callbacks=[callback])
    assert trainer.state.global_step == SAVE_STEPS
    ((step, report),) = callback.reports
    assert step == SAVE_STEPS and not report.ok
    assert report.checkpoints[0].kind == "adapter"
    assert {"adapter-only", "intent-mismatch"} <= _codes(report)
    errors = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert "checkpoint-2 (step 2) FAIL" in text and "on_fail='stop'" in text
    assert "adapter-only" in text and "intent-mismatch" in text
    assert not (tmp_path / f"checkpoint-{MAX_STEPS}").exists()


def test_lora_under_expect_full_raises(hf: Any, tmp_path: Path) -> None:
    callback = hf.AuditCallback(expect="full", on_fail="raise")
    with pytest.raises(hf.CheckpointAuditError, match="adapter-only") as info:
        _train(tmp_path, lora=True, callbacks=[callback])
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.step == SAVE_STEPS and err.path == str(tmp_path / "checkpoint-2")
    assert err.report is callback.reports[0][1]
    assert "intent-mismatch" in _codes(err.report)


def test_lora_under_expect_full_warns_and_trains_on(
    hf: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = hf.AuditCallback(expect="full", on_fail="warn")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        trainer = _train(tmp_path, lora=True, callbacks=[callback])
    assert trainer.state.global_step == MAX_STEPS
    assert [(step, report.ok) for step, report in callback.reports] == [(2, False), (4, False)]
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in records] == [logging.WARNING] * 2
    assert all("adapter-only" in r.getMessage() for r in records)
    assert [(e["audit_failed"], e["audit_errors"]) for e in _audit_logs(trainer)] == [(1, 2)] * 2


def test_lora_under_auto_expects_an_adapter(
    hf: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = hf.AuditCallback(expect="auto", on_fail="raise")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        trainer = _train(tmp_path, lora=True, callbacks=[callback])
    assert trainer.state.global_step == MAX_STEPS
    assert [step for step, _ in callback.reports] == [2, 4]
    for _, report in callback.reports:
        assert report.ok
        assert report.checkpoints[0].kind == "adapter"
        assert report.checkpoints[0].declared == "--expect adapter"
    assert [e["audit_adapter"] for e in _audit_logs(trainer)] == [1, 1]
    assert "expected adapter (the model is a PEFT model (PeftModelForCausalLM))" in caplog.text


def test_auto_honours_the_runs_declared_intent(hf: Any, tmp_path: Path) -> None:
    """The seed story: a run whose saved arguments say full training (ms-swift writes
    args.json into every checkpoint) trains a LoRA model; auto stops at the first save."""
    from transformers import TrainerCallback

    class WriteSwiftArgs(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ckpt = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            with open(os.path.join(ckpt, "args.json"), "w") as f:
                json.dump({"train_type": "full", "rlhf_type": "grpo"}, f)

    callback = hf.AuditCallback(expect="auto", on_fail="stop")
    trainer = _train(tmp_path, lora=True, callbacks=[WriteSwiftArgs(), callback])
    assert trainer.state.global_step == SAVE_STEPS
    ((_, report),) = callback.reports
    (ckpt,) = report.checkpoints
    assert ckpt.declared == "args.json says train_type=full"
    assert {"adapter-only", "intent-mismatch"} <= _codes(report)


def test_bad_arguments(hf: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_fail"):
        hf.AuditCallback(on_fail="ignore")
    with pytest.raises(ValueError, match="expect"):
        hf.AuditCallback(expect="lora")
    with pytest.raises(FileNotFoundError):
        hf.AuditCallback(base=tmp_path / "absent")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )


def test_import_pyaudit_never_imports_transformers() -> None:
    done = _python(
        "import sys, pyaudit, pyaudit.integrations; pyaudit.audit; pyaudit.scan\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    assert done.returncode == 0, done.stderr


def test_without_transformers_the_import_error_says_what_to_install() -> None:
    done = _python(
        "import sys; sys.modules['transformers'] = None\n"
        "try:\n"
        "    import pyaudit.integrations.transformers\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    raise SystemExit('imported')\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'pyaudit[hf]'" in done.stdout

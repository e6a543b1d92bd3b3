"""LLaMA-Factory's web UI (LlamaBoard) launching a training run, without a browser.

    cd WORKDIR && python tests/frameworks/run_llamaboard.py OUTPUT_NAME FINETUNING_TYPE

Builds LlamaBoard's own UI (``llamafactory.webui.interface.create_ui``), takes every field at
the value the UI starts with, sets the ones a user fills in (model name and path, template,
dataset, output name, fp32, save steps, max_steps through the "extra arguments" box, and the
finetuning method unless FINETUNING_TYPE is ``default``: the UI's own default is kept), and
presses "Start" (``Runner.run_train``): LlamaBoard writes ``training_args.yaml`` and
``llamaboard_config.yaml`` into ``saves/MODEL_NAME/FINETUNING_TYPE/OUTPUT_NAME`` and runs
``llamafactory-cli train`` on that yaml, as it does from the browser. Needs WORKDIR/tiny
(make_tiny.py) and ``llamafactory-cli`` on PATH.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> None:
    name, finetuning_type = sys.argv[1], sys.argv[2]
    import llamafactory.webui.engine as engine_module
    from llamafactory.webui.interface import create_ui

    engines: list[Any] = []
    real_init = engine_module.Engine.__init__

    def keep(self: Any, *args: Any, **kwargs: Any) -> None:  # the UI's engine, to press Start
        real_init(self, *args, **kwargs)
        engines.append(self)

    engine_module.Engine.__init__ = keep  # type: ignore[method-assign]
    create_ui()
    (engine,) = engines
    manager = engine.manager
    data = {elem: getattr(elem, "value", None) for elem in manager.get_elem_list()}
    user = {
        "top.lang": "en",
        "top.model_name": "Qwen2-0.5B-Instruct",
        "top.model_path": "tiny/qwen2",
        "top.template": "qwen",
        "train.dataset_dir": "tiny/data",
        "train.dataset": ["tiny"],
        "train.output_dir": name,
        "train.cutoff_len": 64,
        "train.batch_size": 2,
        "train.compute_type": "fp32",  # the UI starts at bf16, which the CPU refuses
        "train.save_steps": 2,
        "train.logging_steps": 1,
        "train.extra_args": json.dumps({"optim": "adamw_torch", "max_steps": 2}),
    }
    if finetuning_type != "default":
        user["top.finetuning_type"] = finetuning_type
    for elem_id, value in user.items():
        data[manager.get_elem_by_id(elem_id)] = value
    shown = ("top.finetuning_type", "train.save_steps")
    print("LlamaBoard fields:", {k: data[manager.get_elem_by_id(k)] for k in shown}, flush=True)
    last: dict[Any, Any] = {}
    for update in engine.runner.run_train(data):
        last = update
    output_box = manager.get_elem_by_id("train.output_box")
    log = str(last.get(output_box, ""))
    print(log[-2000:])
    if "Exit code" in log or "failed" in log.lower():
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Sweeping a store of pickled ``pytorch_model.bin`` checkpoints: pyaudit against the
script a user writes with torch (issue 10).

The store: N checkpoints, each a ``config.json`` and one ``pytorch_model.bin`` written by
``torch.save`` of the state dict transformers builds for that config (a Llama-3.1-8B
layout, 32 layers, 291 tensors, with the hidden sizes scaled down so a file is a few MB:
the cost of both tools is per tensor, not per byte, since neither reads tensor data).
The checkpoints are hard links of one file (the page cache holds it either way).

The peer, ``torch_script``: what a careful user runs to get the same answer: build the
model on the meta device once per distinct config (transformers), then for each
checkpoint ``torch.load(mmap=True, weights_only=True)`` and compare names, shapes and
dtypes. Both run as fresh processes (imports included: a user pays them), warm cache,
interleaved, median of ``--repeats``.

    python benchmarks/bench_bin.py             # N=200
    python benchmarks/bench_bin.py --n 50 --repeats 1
    python benchmarks/bench_bin.py --quick     # N=5, one run

Needs torch and transformers (to write the store and to run the peer). No timing is a
pass/fail threshold; exit 0 when both tools agree every checkpoint is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256,
    "intermediate_size": 512, "num_hidden_layers": 32, "num_attention_heads": 8,
    "num_key_value_heads": 2, "vocab_size": 4096, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "max_position_embeddings": 2048,
}  # fmt: skip

TORCH_SCRIPT = r"""
import json, sys
from pathlib import Path
import torch, transformers
transformers.logging.set_verbosity_error()
expected = {}  # config text -> {name: (shape, dtype)}
bad = 0
for ckpt in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    text = (ckpt / "config.json").read_text()
    if text not in expected:
        config = transformers.AutoConfig.for_model(**json.loads(text))
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        expected[text] = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    want = expected[text]
    sd = torch.load(ckpt / "pytorch_model.bin", mmap=True, weights_only=True, map_location="cpu")
    got = {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}
    bad += got != want
print(json.dumps({"checkpoints": len(list(Path(sys.argv[1]).iterdir())), "bad": bad}))
"""


def make_store(root: Path, n: int) -> Path:
    import torch
    import transformers

    store = root / f"bin-{n}"
    if (store / f"checkpoint-{n:05d}" / "pytorch_model.bin").exists():
        return store
    store.mkdir(parents=True, exist_ok=True)
    first = store / "checkpoint-00001"
    first.mkdir(exist_ok=True)
    (first / "config.json").write_text(json.dumps(CONFIG))
    config = transformers.AutoConfig.for_model(**CONFIG)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    torch.save(model.state_dict(), first / "pytorch_model.bin")
    for i in range(2, n + 1):
        d = store / f"checkpoint-{i:05d}"
        d.mkdir(exist_ok=True)
        for name in ("config.json", "pytorch_model.bin"):
            if not (d / name).exists():
                os.link(first / name, d / name)
    return store


def timed(argv: list[str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr)
    return wall, cpu, proc.stdout


def pyaudit_ok(out: str, n: int) -> bool:
    doc = json.loads(out)
    return len(doc["checkpoints"]) == n and all(c["status"] == "pass" for c in doc["checkpoints"])


def torch_ok(out: str, n: int) -> bool:
    doc = json.loads(out.strip().splitlines()[-1])
    return bool(doc["checkpoints"] == n and doc["bad"] == 0)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--store", type=Path, default=Path(tempfile.gettempdir()) / "pyaudit-bench-bin"
    )
    ap.add_argument("--quick", action="store_true", help="N=5, one timed run (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeats = 5, 1
    store = make_store(args.store, args.n)
    size = (store / "checkpoint-00001" / "pytorch_model.bin").stat().st_size
    tools = {
        "pyaudit scan --json": ([sys.executable, "-m", "pyaudit", "scan", "--json", str(store)],
                                pyaudit_ok),
        "torch.load(mmap, weights_only) script": ([sys.executable, "-c", TORCH_SCRIPT, str(store)],
                                                  torch_ok),
    }  # fmt: skip
    ok = True
    for argv, check in tools.values():  # warm-up, untimed
        ok &= check(timed(argv)[2], args.n)
    walls: dict[str, list[float]] = {t: [] for t in tools}
    cpus: dict[str, list[float]] = {t: [] for t in tools}
    for _ in range(args.repeats):
        for name, (argv, check) in tools.items():
            wall, cpu, out = timed(argv)
            ok &= check(out, args.n)
            walls[name].append(wall)
            cpus[name].append(cpu)
    print(
        f"N={args.n} checkpoints, one {size / 1e6:.1f} MB pytorch_model.bin each "
        f"({len(json.dumps(CONFIG))} B config; 291 tensors), {args.repeats} timed runs, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print("| tool | wall s (median) | CPU s | per checkpoint | pyaudit faster by |")
    print("|---|---|---|---|---|")
    first = statistics.median(walls[next(iter(tools))])
    for name in tools:
        w = statistics.median(walls[name])
        print(
            f"| {name} | {w:.2f} | {statistics.median(cpus[name]):.2f} | "
            f"{w / args.n * 1000:.2f} ms | {w / first:.1f}x |"
        )
    print("both agree every checkpoint is complete" if ok else "DISAGREE (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

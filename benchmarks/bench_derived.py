#!/usr/bin/env python3
"""Sweeping 1,000 checkpoints of derived-spec families beside a hand-written one.

Each store holds N checkpoints of one family at a real 7-8B size: one safetensors shard with
the real header (names, shapes, dtypes from the family's manifest) and the data left as a
hole, plus config.json; the checkpoints are copies (bench_sweep's ``same`` stores: what
pyaudit derives from a header is memoised, so the rate is the memoised one). Families:

- ``llama``   (hand-written spec): Llama-3.1-8B dims
- ``olmo2``   (derived):           the same dims
- ``granite`` (derived):           the same dims
- ``qwen2_moe`` (derived, MoE):    Qwen1.5-MoE-A2.7B dims (24 layers x 60 experts)
- ``qwen3_moe`` (hand-written, MoE): the same dims, no shared expert (the MoE to compare with)

``pyaudit scan --json`` runs as a subprocess over each store (warm cache: one untimed run,
then ``--repeats`` timed ones, families interleaved); median wall and CPU seconds. Also the
manifest build for one config (the cost a new config pays once), hand vs derived.

    python benchmarks/bench_derived.py                # N=1000
    python benchmarks/bench_derived.py --n 20 --repeats 1

No timing is a pass/fail threshold; exit 0 when every checkpoint of every store passes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DENSE = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **DENSE},
    "olmo2": {"model_type": "olmo2", "architectures": ["Olmo2ForCausalLM"], **DENSE},
    "granite": {"model_type": "granite", "architectures": ["GraniteForCausalLM"], **DENSE},
    "qwen2_moe": {
        "model_type": "qwen2_moe", "architectures": ["Qwen2MoeForCausalLM"],
        "hidden_size": 2048, "intermediate_size": 5632, "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632, "num_hidden_layers": 24,
        "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 60,
        "num_experts_per_tok": 4, "vocab_size": 151936, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    },
    "qwen3_moe": {
        "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
        "hidden_size": 2048, "intermediate_size": 5632, "moe_intermediate_size": 1408,
        "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
        "head_dim": 128, "num_experts": 60, "num_experts_per_tok": 4, "vocab_size": 151936,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    },
}  # fmt: skip


def make_store(root: Path, family: str, n: int) -> Path:
    from pyaudit.testing.stores import manifest_tensors, write_checkpoint

    store = root / family
    if (store / f"checkpoint-{n:05d}").is_dir():
        return store
    shutil.rmtree(store, ignore_errors=True)
    config = FAMILIES[family]
    one = store / "checkpoint-00001"
    write_checkpoint(one, config, manifest_tensors(config))
    for i in range(2, n + 1):
        dst = store / f"checkpoint-{i:05d}"
        subprocess.run(["cp", "-r", "--sparse=always", str(one), str(dst)], check=True)
    return store


def run(store: Path, out: Path) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with out.open("wb") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "pyaudit", "scan", "--json", str(store)],
            stdout=f,
            stderr=subprocess.PIPE,
            check=False,
        )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    doc = json.loads(out.read_text())
    passed = sum(1 for c in doc["checkpoints"] if c["status"] == "pass")
    if proc.returncode != 0 or passed != len(doc["checkpoints"]):
        statuses = {c["status"] for c in doc["checkpoints"]}
        print(f"  {store.name}: rc {proc.returncode}, statuses {statuses}", file=sys.stderr)
    return wall, cpu, passed


def manifest_seconds(config: dict[str, Any], repeats: int = 20) -> float:
    from pyaudit.manifest import _build, spec_of

    spec = spec_of(config["model_type"])
    assert spec is not None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _build(spec, config, None)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--store", type=Path, default=Path(tempfile.gettempdir()) / "pyaudit-bench-derived"
    )
    ap.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args()
    families = args.families.split(",")
    stores = {f: make_store(args.store / str(args.n), f, args.n) for f in families}
    out = args.store / "out.json"
    ok = True
    for f in families:  # warm-up, untimed
        ok &= run(stores[f], out)[2] == args.n
    walls: dict[str, list[float]] = {f: [] for f in families}
    cpus: dict[str, list[float]] = {f: [] for f in families}
    for _ in range(args.repeats):
        for f in families:
            wall, cpu, passed = run(stores[f], out)
            ok &= passed == args.n
            walls[f].append(wall)
            cpus[f].append(cpu)
    base = statistics.median(walls[families[0]])
    load = os.getloadavg()[0]
    print(f"N={args.n} checkpoints per store, {args.repeats} timed runs, load {load:.1f}")
    print("| family | spec | tensors | manifest build | wall s (median) | CPU s | vs first |")
    print("|---|---|---|---|---|---|---|")
    from pyaudit.manifest import build_manifest, spec_of

    for f in families:
        spec = spec_of(FAMILIES[f]["model_type"])
        assert spec is not None
        n_t = len(build_manifest(FAMILIES[f]).tensors)
        ms = manifest_seconds(FAMILIES[f]) * 1000
        w = statistics.median(walls[f])
        print(
            f"| {f} | {spec.origin} | {n_t:,} | {ms:.1f} ms | {w:.2f} | "
            f"{statistics.median(cpus[f]):.2f} | {w / base:.2f}x |"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

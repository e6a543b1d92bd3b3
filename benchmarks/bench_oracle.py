#!/usr/bin/env python3
"""The transformers oracle as the fallback of a store no spec knows (issue 9, item 5).

A store of ``--configs`` distinct configs x ``--per-config`` checkpoints of falcon (a
family transformers has and pyaudit has no spec for), tiny dims, each checkpoint one
safetensors file with the real header (names, shapes, dtypes as transformers writes them)
and the data left as a hole, plus config.json. Measured, each a ``pyaudit scan --json``
subprocess:

- cold: an empty oracle cache ($PYAUDIT_CACHE_DIR): the oracle builds (the one worker's
  requests), the first build (torch and transformers imported), the mean after it;
- warm: the same cache again (every answer on disk: no worker at all);
- ``--no-oracle``: the structural checks and consensus only;
- the peer, in the same run: what one config cost before the long-lived worker, a fresh
  worker process per config (``pyaudit.oracle.oracle_manifests`` of one config), for
  ``--peer`` configs (default 3; 0 skips it).

    python benchmarks/bench_oracle.py                  # 10 configs x 10 checkpoints
    python benchmarks/bench_oracle.py --quick          # 2 x 2, no peer

No timing is a pass/fail threshold; exit 0 when every checkpoint passes with the oracle's
expectation, and the cold scan built each config once and the warm one built nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, md_table

BASE: dict[str, Any] = {
    "model_type": "falcon", "architectures": ["FalconForCausalLM"], "hidden_size": 32,
    "num_attention_heads": 4, "max_position_embeddings": 128, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}  # fmt: skip


def configs(n: int) -> list[dict[str, Any]]:
    """``n`` distinct configs: vocabulary and depth vary."""
    return [
        {**BASE, "vocab_size": 128 + 16 * (i // 2), "num_hidden_layers": 2 + i % 2}
        for i in range(n)
    ]


def make_store(root: Path, n_configs: int, per_config: int) -> Path:
    """The store; tensors as transformers writes them (asked once, no cache kept)."""
    from pyaudit.oracle import OracleSession
    from pyaudit.testing.stores import write_checkpoint

    store = root / f"falcon-{n_configs}x{per_config}"
    if (store / "done").exists():
        return store
    shutil.rmtree(store, ignore_errors=True)
    with OracleSession(use_cache=False) as oracle:
        for c, config in enumerate(configs(n_configs)):
            result, _ = oracle.manifest(config)
            tensors = {n: (dtype, shape) for n, (shape, dtype) in result.tensors.items()}
            for k in range(per_config):
                path = store / f"run-{c:02d}" / f"checkpoint-{k + 1:03d}"
                write_checkpoint(path, config, tensors)
    (store / "done").write_text("")
    return store


def scan(store: Path, cache: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "PYAUDIT_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pyaudit", "scan", "--json", *extra, str(store)],
        capture_output=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"pyaudit scan exited {proc.returncode}:\n{proc.stderr.decode()}")
    return wall, json.loads(proc.stdout)


def peer(n: int) -> list[float]:
    """A fresh worker per config (the oracle before this issue): seconds each."""
    from pyaudit.oracle import oracle_manifests

    out = []
    for config in configs(n):
        t0 = time.perf_counter()
        (result,) = oracle_manifests([{**config, "vocab_size": config["vocab_size"] + 1}])
        out.append(time.perf_counter() - t0)
        if not hasattr(result, "tensors"):
            sys.exit(f"peer: the oracle failed: {result}")
    return out


def _seconds(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=10)
    parser.add_argument("--per-config", type=int, default=10)
    parser.add_argument("--peer", type=int, default=3, help="configs the peer builds (0: none)")
    parser.add_argument("--store", type=Path, default=Path(__file__).parent / "store")
    parser.add_argument("--quick", action="store_true", help="2 configs x 2, no peer")
    args = parser.parse_args()
    if args.quick:
        args.configs, args.per_config, args.peer = 2, 2, 0
    store = make_store(args.store, args.configs, args.per_config)
    n = args.configs * args.per_config
    facts = machine(("torch", "transformers", "pyaudit"))
    print(" | ".join(f"{k}: {v}" for k, v in facts.items()))
    ok = True
    with tempfile.TemporaryDirectory(prefix="pyaudit-oracle-cache-") as cache_dir:
        cache = Path(cache_dir)
        cold_wall, cold = scan(store, cache)
        warm_wall, warm = scan(store, cache)
        off_wall, off = scan(store, cache, "--no-oracle")
    rows = []
    for label, wall, doc in (("cold cache", cold_wall, cold), ("warm cache", warm_wall, warm)):
        o = doc["summary"].get("oracle") or {}
        statuses = {c["status"] for c in doc["checkpoints"]}
        sources = {c["expected_source"] for c in doc["checkpoints"]}
        ok &= statuses == {"pass"} and len(doc["checkpoints"]) == n
        rows.append(
            [
                f"`pyaudit scan --json`, {label}",
                f"{wall:.2f} s",
                str(o.get("builds")),
                str(o.get("cache_hits")),
                str(o.get("worker_starts")),
                _seconds(o.get("first_build_seconds"), 2),
                _seconds(o.get("mean_build_seconds_after_first"), 3),
                f"{n}: " + ", ".join(sorted(statuses)) + f" ({'; '.join(sorted(sources))})",
            ]
        )
    ok &= (cold["summary"]["oracle"]["builds"], warm["summary"]["oracle"]["builds"]) == (
        args.configs,
        0,
    )
    statuses = sorted({c["status"] for c in off["checkpoints"]})
    rows.append(
        [
            "`pyaudit scan --json --no-oracle`",
            f"{off_wall:.2f} s",
            "-",
            "-",
            "-",
            "-",
            "-",
            f"{n}: " + ", ".join(statuses) + " (unknown-architecture, consensus)",
        ]
    )
    if args.peer:
        each = peer(args.peer)
        rows.append(
            [
                f"peer: a fresh worker per config (`oracle_manifests`, {args.peer} configs)",
                f"{sum(each):.2f} s",
                str(args.peer),
                "0",
                str(args.peer),
                f"{each[0]:.2f} s",
                f"{sum(each[1:]) / max(len(each) - 1, 1):.3f} s",
                "-",
            ]
        )
    head = [
        "run",
        "wall",
        "oracle builds",
        "cache hits",
        "worker starts",
        "first build",
        "mean build after the first",
        "checkpoints",
    ]
    print(f"\n### {args.configs} configs x {args.per_config} checkpoints of falcon (no spec)\n")
    print(md_table(head, rows))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

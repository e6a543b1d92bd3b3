#!/usr/bin/env python3
"""Sweeping a store: `pyaudit scan --json STORE` against a safe_open script, end to end.

The stores are N checkpoints (100, 1,000, 5,000) of the Qwen2.5-VL-7B-Instruct layout:
5 shards, 729 tensors, 16.6 GB apparent each, real headers with the tensor data left
as holes, plus the index and config.json. One checkpoint is written with
``pyaudit.testing.write_checkpoint`` (shapes from ``manifest_tensors(config)``, shard
assignment from the real index in tests/data/models) and copied with
``cp -r --sparse=always``. Two variants of each store:

- ``same``: every checkpoint's shard headers are byte-identical, as in a real run
  (same writer, same model). pyaudit memoises what it derives from a header
  (pyaudit/auditing/cache.py), so this is its memoised rate.
- ``unique``: each checkpoint's headers differ (``__metadata__`` carries its step,
  ``{"format":"pt","step":"00000100"}``), so no header is seen twice: the un-memoised
  rate. The index and config.json stay identical (as in a real run).

Each tool runs as a subprocess over the whole store (interpreter start, imports,
discovery, reading, auditing, the JSON report written to a file), warm cache: one
untimed run, then rounds with the order rotated; median and best wall seconds, CPU
seconds (the child's own rusage, all threads) and peak RSS (its ``ru_maxrss``; the
parent stays lean, see _common.spawn). The peer is the script a user would write:
for each checkpoint, config.json and the index, then every shard with
``safetensors.safe_open``: names, shapes, dtypes against the index and the shapes
config.json implies (``peer_main`` below).

With ``--cold`` (default outside ``--quick``; needs root), N=100 again with the page
cache, dentries and inodes dropped before every run (the tools' own code re-warmed
on a one-checkpoint store elsewhere): pyaudit ``--jobs`` 1/2/8/16 against the peer.

    python benchmarks/bench_sweep.py            # full: N=100/1000/5000, both variants, cold
    python benchmarks/bench_sweep.py --quick    # smoke test: N=3, one run each, a few seconds

No timing is a pass/fail threshold: the script exits 0 when every run of every tool
audited every checkpoint and found them all sound.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import (
    DEFAULT_STORE,
    SHARED_MODEL,
    Measured,
    drop_caches,
    du_bytes,
    load,
    machine,
    md_table,
    rotated,
    spawn,
    vm_kb,
    wait_for_quiet,
)

STORE_VERSION = 1  # bump when the files written change
VARIANTS = ("same", "unique")
SHARDS = 5

# --------------------------------------------------------------------------- the peer


def peer_main(root: str) -> int:
    """The safe_open script: what a user would write to check a store by hand.

    Every directory holding a ``model.safetensors.index.json`` is a checkpoint. The
    expected tensors are the index's names, with the shapes and dtype config.json
    implies (derived once per distinct config); each shard is opened with safe_open
    and every tensor's name, shard, shape and dtype compared; then the totals.
    Prints one JSON document: per checkpoint its problems, and a summary.
    """
    from _common import qwen2_5_vl_tensors
    from safetensors import safe_open

    derived: dict[bytes, dict[str, tuple[str, tuple[int, ...]]]] = {}
    results = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "model.safetensors.index.json" not in filenames:
            continue
        problems: list[str] = []
        with open(os.path.join(dirpath, "config.json"), "rb") as f:
            raw = f.read()
        if raw not in derived:
            derived[raw] = qwen2_5_vl_tensors(json.loads(raw))
        expected = derived[raw]
        with open(os.path.join(dirpath, "model.safetensors.index.json")) as f:
            index = json.load(f)
        weight_map: dict[str, str] = index["weight_map"]
        if set(weight_map) != set(expected):
            problems.append(
                f"index names {len(set(weight_map) - set(expected))} unexpected tensors, "
                f"misses {len(set(expected) - set(weight_map))}"
            )
        seen: set[str] = set()
        nbytes = 0
        for shard in sorted(set(weight_map.values())):
            path = os.path.join(dirpath, shard)
            if not os.path.exists(path):
                problems.append(f"{shard}: missing")
                continue
            with safe_open(path, "numpy") as st:
                for name in st.keys():  # noqa: SIM118 (safe_open is not iterable)
                    sl = st.get_slice(name)
                    shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
                    seen.add(name)
                    nbytes += math.prod(shape) * 2  # BF16
                    if weight_map.get(name) != shard:
                        problems.append(f"{name}: in {shard}, index says {weight_map.get(name)}")
                    want = expected.get(name)
                    if want is None:
                        problems.append(f"{name}: unexpected")
                    elif (dtype, shape) != want:
                        problems.append(f"{name}: {dtype} {list(shape)}, expected {want}")
        missing = set(expected) - seen
        if missing:
            problems.append(f"{len(missing)} tensors missing, e.g. {min(missing)}")
        total = index.get("metadata", {}).get("total_size")
        if total != nbytes:
            problems.append(f"total_size {total}, shards hold {nbytes} bytes")
        results.append({"path": os.path.relpath(dirpath, root), "problems": problems})
    failed = sum(1 for r in results if r["problems"])
    doc = {"checkpoints": results, "summary": {"checkpoints": len(results), "fail": failed}}
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return 1 if failed else 0


# --------------------------------------------------------------------------- the stores


def store_root(store: Path) -> Path:
    return store / f"sweep-qwen2_5_vl_7b-v{STORE_VERSION}"


def checkpoint_name(i: int) -> str:
    return f"checkpoint-{(i + 1) * 100}"


def _step_header(path: Path, step: int) -> None:
    """Rewrite a sparse shard's header with ``"step"`` in its ``__metadata__``.

    The header grows (re-padded to 8 bytes as the writer pads), the data section
    moves with it and stays a hole; offsets are relative to the data, so unchanged.
    """
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        text = f.read(n)
        size = os.fstat(f.fileno()).st_size
        old = b'"__metadata__":{"format":"pt"}'
        if old not in text:
            raise SystemExit(f"{path}: no {old!r} in its header")
        new = text.rstrip(b" ").replace(
            old, b'"__metadata__":{"format":"pt","step":"%08d"}' % step, 1
        )
        new += b" " * (-len(new) % 8)
        f.seek(0)
        f.write(len(new).to_bytes(8, "little") + new)
        f.truncate(size - n + len(new))


def make_store(store: Path, variant: str, n: int) -> str:
    """``store_root/{variant}-{n}``: n checkpoints, written unless complete. Returns a note."""
    root = store_root(store)
    template = root / "template"
    t0 = time.perf_counter()
    if not (template / ".complete").is_file():
        from pyaudit.testing.stores import manifest_tensors, write_checkpoint

        shutil.rmtree(template, ignore_errors=True)
        config = json.loads((SHARED_MODEL / "config.json").read_text())
        index = json.loads((SHARED_MODEL / "model.safetensors.index.json").read_text())
        tensors = manifest_tensors(config)
        write_checkpoint(template, config, tensors, weight_map=index["weight_map"])
        (template / ".complete").write_text("ok\n")
    target = root / f"{variant}-{n}"
    marker = target / ".complete"
    if marker.is_file() and marker.read_text().strip() == f"{variant} {n}":
        return f"{target.name}: reused"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    files = sorted(p for p in template.iterdir() if not p.name.startswith("."))
    for i in range(n):
        d = target / checkpoint_name(i)
        d.mkdir()
        subprocess.run(["cp", "--sparse=always", *map(str, files), str(d)], check=True)
        if variant == "unique":
            for p in files:
                if p.name.endswith(".safetensors"):
                    _step_header(d / p.name, (i + 1) * 100)
    marker.write_text(f"{variant} {n}\n")
    return f"{target.name}: written in {time.perf_counter() - t0:.0f} s"


def ensure_stores(store: Path, variants: Sequence[str], sizes: Sequence[int]) -> list[str]:
    """Write what is missing, in a child process (keeps this one lean: see spawn)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--make-store",
            "--store",
            str(store),
            "--variants",
            ",".join(variants),
            "--sizes",
            ",".join(map(str, sizes)),
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return proc.stdout.split("\n")[:-1]


# --------------------------------------------------------------------------- the tools


def pyaudit_cmd(store: Path, jobs: int | None) -> list[str]:
    exe = shutil.which("pyaudit")
    head = [exe] if exe else [sys.executable, "-m", "pyaudit"]
    return [*head, "scan", "--json", str(store)] + (["--jobs", str(jobs)] if jobs else [])


def peer_cmd(store: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--peer", str(store)]


def check_output(key: str, path: Path, n: int, returncode: int) -> None:
    """Every checkpoint audited and sound, read without parsing the whole document (a
    5,000-checkpoint report parsed here would raise this process's RSS, see spawn)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 400))
        tail = f.read().decode()
    m = re.search(r'"summary": (\{[^{}]*\})', tail)
    if m is None:
        raise SystemExit(f"{key}: no summary at the end of its output ({path})")
    summary = json.loads(m.group(1))
    if returncode != 0 or summary.get("checkpoints") != n or summary.get("fail") != 0:
        raise SystemExit(f"{key}: exit {returncode}, summary {summary}, expected {n} sound")


def time_tools(
    tools: dict[str, tuple[str, list[str]]],
    n: int,
    repeats: int,
    work: Path,
    cold_prep: Any = None,
    settle: bool = True,
) -> dict[str, Measured]:
    """``repeats`` rounds over the tools, order rotated; warm (one untimed run of each
    first) unless ``cold_prep`` is given (called before every timed run)."""
    out = {k: Measured(k, label) for k, (label, _) in tools.items()}
    keys = list(tools)
    if cold_prep is None and settle:
        for k in keys:
            with open(work / "out.json", "wb") as f:
                run = spawn(tools[k][1], stdout=f)
            check_output(k, work / "out.json", n, run.returncode)
    for r in range(repeats):
        for k in rotated(keys, r):
            if cold_prep is not None:
                cold_prep()
            with open(work / "out.json", "wb") as f:
                run = spawn(tools[k][1], stdout=f)
            check_output(k, work / "out.json", n, run.returncode)
            m = out[k]
            m.wall.append(run.wall)
            m.cpu.append(run.cpu)
            m.rss_kb = max(m.rss_kb or 0, run.maxrss_kb)
    return out


def startup(cmd: list[str], repeats: int) -> float:
    """Median wall seconds of ``cmd`` (an import-only run: the fixed cost)."""
    times = sorted(spawn(cmd).wall for _ in range(repeats))
    return times[len(times) // 2]


# --------------------------------------------------------------------------- the report


def table(results: dict[int, dict[str, Measured]], stat: str, peer: str = "peer") -> str:
    head = [
        "N",
        "tool",
        f"wall s ({stat})",
        *(["wall s (best)"] if stat != "best" else []),
        "checkpoints/s",
        "ms per checkpoint",
        "CPU s",
        "checkpoints per CPU-s",
        "peak RSS MB",
        "x safe_open (wall / CPU)",
    ]
    rows = []
    for n, ms in results.items():
        p = ms.get(peer)
        for m in ms.values():
            w = m.wall_s(stat)
            rows.append(
                [
                    f"{n:,}",
                    m.label,
                    f"{w:.3f}",
                    *([f"{min(m.wall):.3f}"] if stat != "best" else []),
                    f"{n / w:,.0f}",
                    f"{w / n * 1e3:.2f}",
                    f"{m.cpu_s():.3f}",
                    f"{n / m.cpu_s():,.0f}",
                    f"{(m.rss_kb or 0) / 1024:.1f}",
                    f"{p.wall_s(stat) / w:.1f} / {p.cpu_s() / m.cpu_s():.1f}" if p else "-",
                ]
            )
    return md_table(head, rows, left=2)


def growth(results: dict[int, dict[str, Measured]], stat: str) -> list[str]:
    """Per tool: the marginal cost of a checkpoint between the smallest and largest N,
    and the fixed cost that leaves (interpreter, imports, the first audit)."""
    sizes = sorted(results)
    if len(sizes) < 2:
        return []
    lo, hi = sizes[0], sizes[-1]
    out = []
    for key, m in results[hi].items():
        if key not in results[lo]:
            continue
        a, b = results[lo][key].wall_s(stat), m.wall_s(stat)
        per = (b - a) / (hi - lo)
        out.append(
            f"{m.label}: {per * 1e3:.3f} ms per added checkpoint ({lo:,} -> {hi:,}), "
            f"fixed {max(a - per * lo, 0):.2f} s"
        )
    return out


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE, help="where stores are cached")
    ap.add_argument("--sizes", default=None, help="checkpoints per store (default 100,1000,5000)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="same,unique (default both)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per tool (default 5)")
    ap.add_argument("--quick", action="store_true", help="smoke test: N=3, one run, no cold run")
    ap.add_argument("--cold", dest="cold", action="store_true", default=None)
    ap.add_argument("--no-cold", dest="cold", action="store_false")
    ap.add_argument("--cold-n", type=int, default=100, help="checkpoints read cold (default 100)")
    ap.add_argument("--cold-repeats", type=int, default=3)
    ap.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-min load below this")
    ap.add_argument("--max-wait", type=float, default=300, help="seconds to wait for it at most")
    ap.add_argument("--json", type=Path, help="also write the results here as JSON")
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--make-store", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.peer:
        return peer_main(args.peer)
    variants = [v for v in args.variants.split(",") if v]
    if any(v not in VARIANTS for v in variants):
        ap.error(f"--variants: one of {VARIANTS}")
    sizes = (
        [int(x) for x in args.sizes.split(",")]
        if args.sizes
        else [3]
        if args.quick
        else [100, 1000, 5000]
    )
    if args.make_store:
        for v in variants:
            for n in sizes:
                print(make_store(args.store, v, n), flush=True)
        return 0

    repeats = args.repeats or (1 if args.quick else 5)
    stat = "median" if repeats > 1 else "best"
    cold = (not args.quick) if args.cold is None else args.cold
    t_start = time.perf_counter()
    cold_sizes = [args.cold_n] if cold else []
    notes = ensure_stores(args.store, variants, sorted(set(sizes) | set(cold_sizes)))
    if cold and "same" not in variants:
        notes += ensure_stores(args.store, ["same"], cold_sizes)
    notes += ensure_stores(args.store, ["same"], [1])  # the cold run's code warm-up
    root = store_root(args.store)
    if not args.quick:
        wait_for_quiet(args.max_load, args.max_wait)
    info = machine(("pyaudit", "safetensors", "numpy"))
    print(f"# pyaudit store-sweep benchmark ({info['date']})")
    print(
        f"{info['cpu']}, {info['memory']}; Linux {info['kernel']}; Python {info['python']}; "
        f"pyaudit {info['pyaudit']}; safetensors {info['safetensors']}; numpy {info['numpy']}"
    )
    print(f"load average at start: {info['load']}")
    one = root / "same-1"
    apparent = sum(p.stat().st_size for p in (one / checkpoint_name(0)).iterdir())
    print(
        f"stores: {root}/{{{','.join(variants)}}}-N, N in {sizes}: Qwen2.5-VL-7B layout, "
        f"{SHARDS} shards + index + config.json a checkpoint, {apparent / 1e9:.1f} GB apparent "
        f"each, {du_bytes(one) / 1e3:.0f} KB on disk each ({'; '.join(notes)})"
    )
    work = Path(tempfile.mkdtemp(prefix="pyaudit-bench-sweep-"))
    results: dict[str, Any] = {"machine": info, "repeats": repeats, "stat": stat}
    try:
        fixed = {
            "pyaudit": startup(pyaudit_cmd(one, None), 1 if args.quick else 5),
            "peer": startup(peer_cmd(one), 1 if args.quick else 5),
        }
        print(
            f"one-checkpoint run (interpreter, imports, one audit): pyaudit "
            f"{fixed['pyaudit'] * 1e3:.0f} ms, safe_open script {fixed['peer'] * 1e3:.0f} ms"
        )
        print(f"parent's peak RSS (floor of the RSS column): {vm_kb('VmHWM') / 1024:.1f} MB")
        results["fixed_s"] = fixed
        for variant in variants:
            per_n: dict[int, dict[str, Measured]] = {}
            for n in sizes:
                d = root / f"{variant}-{n}"
                tools = {
                    "pyaudit": ("pyaudit scan --json", pyaudit_cmd(d, None)),
                    "pyaudit-j1": ("pyaudit scan --json --jobs 1", pyaudit_cmd(d, 1)),
                    "peer": ("safe_open script", peer_cmd(d)),
                }
                per_n[n] = time_tools(tools, n, repeats, work, settle=not args.quick)
            label = (
                "memoised: every checkpoint's headers identical (as in a real run)"
                if variant == "same"
                else "un-memoised: every checkpoint's headers differ (__metadata__ step)"
            )
            print(
                f"\n### Warm cache, {label}; {stat} of {repeats} interleaved runs, load {load()}\n"
            )
            print(table(per_n, stat))
            lines = growth(per_n, stat)
            if lines:
                print("\n" + "\n".join("- " + line for line in lines))
            results[variant] = {str(n): [asdict(m) for m in ms.values()] for n, ms in per_n.items()}

        if cold:
            why = drop_caches()
            if why:
                print(f"\nCold cache: not run: dropping the page cache was refused ({why}).")
                results["cold"] = {"refused": why}
            else:
                n = args.cold_n
                d = root / f"same-{n}"
                tools = {
                    "pyaudit": (
                        "pyaudit scan --json (threads chosen per batch)",
                        pyaudit_cmd(d, None),
                    )
                }
                tools.update(
                    {
                        f"pyaudit-j{j}": (f"pyaudit scan --json --jobs {j}", pyaudit_cmd(d, j))
                        for j in (1, 2, 8, 16)
                    }
                )
                tools["peer"] = ("safe_open script", peer_cmd(d))

                def prep() -> None:
                    drop_caches()
                    for cmd in (pyaudit_cmd(one, None), peer_cmd(one)):
                        spawn(cmd)  # the tools' code and the interpreter back in the cache

                cold_ms = time_tools(tools, n, args.cold_repeats, work, cold_prep=prep)
                print(
                    f"\n### Cold cache (page cache, dentries, inodes dropped before every run; "
                    f"the tools' code re-warmed on another store), N={n}, median of "
                    f"{args.cold_repeats}, load {load()}\n"
                )
                print(table({n: cold_ms}, "median"))
                results["cold"] = {str(n): [asdict(m) for m in cold_ms.values()]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_end"] = load()
    print(
        f"\nload average at end: {results['load_end']}; total {time.perf_counter() - t_start:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

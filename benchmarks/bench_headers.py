#!/usr/bin/env python3
"""Reading safetensors headers: pyaudit against its peers, on one store, in one run.

The store is a set of full-size sparse checkpoints of the Qwen2.5-VL-7B layout
(5 shards, 729 tensors, 16.6 GB apparent each; real headers, tensor data left as
holes, so ``du`` stays tiny). It is written once and cached under ``--store``.

Every reader reads every shard header of the store, several times (interleaved,
the order rotated each pass), warm cache; the table gives the median and best
wall-clock rate and the rate per CPU-second of the process (all its threads),
which other work on the machine disturbs much less. Peak RSS is measured per
reader in a fresh process of its own that reads the whole store once (VmHWM).
A C program doing only open + pread(8) + pread(n) + close per file
(``floor.c``, compiled here with ``cc -O2``) gives the syscall floor. With
``--cold`` (the default outside ``--quick``), the page cache is dropped before
each timed pass of a smaller run, if the kernel lets us.

    python benchmarks/bench_headers.py            # the full run (200 checkpoints)
    python benchmarks/bench_headers.py --quick    # a smoke test, a few seconds

No timing here is a pass/fail threshold: the script exits 0 whenever every reader
read every header correctly.
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
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from _common import (
    DEFAULT_STORE,
    HERE,
    QWEN25_VL_7B_TENSORS,
    Measured,
    cpu_seconds,
    drop_caches,
    du_bytes,
    layout,
    machine,
    vm_kb,
)

LAYOUT = "qwen2_5_vl_7b"
STORE_VERSION = 1  # bump when the files written change

# --------------------------------------------------------------------------- the store


def ensure_store(store: Path, checkpoints: int, distinct: bool = True) -> tuple[list[str], str]:
    """The shard paths of the first `checkpoints` checkpoints, writing what is missing.

    ``distinct``: every checkpoint's shards carry its own ``__metadata__`` step, so no two
    headers in the store are equal (what the parser costs); otherwise every checkpoint
    repeats the same five headers byte for byte, as the checkpoints of one training run
    do (what a sweep over a real store costs: pyaudit parses a repeated header once per
    batch, csrc/header_file.cpp HeaderCache).
    """
    from pyaudit.testing.sparse import header_json

    root = (
        store / f"{LAYOUT}-v{STORE_VERSION}"
        if not distinct
        else store / f"{LAYOUT}-v{STORE_VERSION}-distinct"
    )
    root.mkdir(parents=True, exist_ok=True)
    config, tensors, weight_map, source = layout()
    if weight_map is None:  # split in order into 5 shards, as the writer does
        from pyaudit.testing.sparse import tensor_nbytes

        total = sum(tensor_nbytes(*tensors[n]) for n in tensors)
        weight_map, acc = {}, 0
        for name in tensors:
            k = min(int(acc // (total / 5)), 4)
            weight_map[name] = f"model-{k + 1:05d}-of-00005.safetensors"
            acc += tensor_nbytes(*tensors[name])
    by_file: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    for name, file in weight_map.items():
        by_file.setdefault(file, {})[name] = tensors[name]
    files = sorted(by_file)
    paths: list[str] = []
    written = 0
    for i in range(checkpoints):
        metadata = {"format": "pt", "step": f"{i:08d}"} if distinct else {"format": "pt"}
        sizes = {}
        for file, members in by_file.items():
            text, data = header_json(members, metadata)
            sizes[file] = 8 + len(text) + data
        d = root / f"ckpt-{i:05d}"
        shard_paths = [d / f for f in files]
        complete = (d / "config.json").is_file() and all(
            p.is_file() and p.stat().st_size == sizes[p.name] for p in shard_paths
        )
        if not complete:
            from pyaudit.testing import write_sparse_checkpoint

            write_sparse_checkpoint(
                d, tensors, weight_map=weight_map, config=config, metadata=metadata
            )
            written += 1
        paths.extend(str(p) for p in shard_paths)
    kind = "distinct headers" if distinct else "headers repeating in every checkpoint"
    return (
        paths,
        f"{kind}; {written} checkpoints written, {checkpoints - written} reused; shapes {source}",
    )


# --------------------------------------------------------------------------- the readers
# Each reads every path once and returns the number of tensors it saw.


def _pyaudit_native(jobs: int) -> Callable[[Sequence[str]], int]:
    def run(paths: Sequence[str]) -> int:
        from pyaudit import read_headers

        headers = read_headers(paths, jobs=jobs)
        n = 0
        for h in headers:
            if not h.ok:
                raise SystemExit(f"pyaudit: {h.path}: {h.rule}")
            n += len(h)
        return n

    return run


def _pyaudit_lists(jobs: int) -> Callable[[Sequence[str]], int]:
    def run(paths: Sequence[str]) -> int:
        from pyaudit import read_headers

        n = 0
        for h in read_headers(paths, jobs=jobs):
            if not h.ok:
                raise SystemExit(f"pyaudit: {h.path}: {h.rule}")
            names, _dtypes, _shapes, _offsets = h.table()  # all four lists are built
            n += len(names)
        return n

    return run


def _safe_open(paths: Sequence[str]) -> int:
    from safetensors import safe_open

    n = 0
    for p in paths:
        with safe_open(p, "numpy") as f:
            for k in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                s = f.get_slice(k)
                s.get_shape()
                s.get_dtype()
                n += 1
    return n


def _python_json(paths: Sequence[str]) -> int:
    n = 0
    for p in paths:
        with open(p, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        n += len(header) - ("__metadata__" in header)
    return n


def _python_orjson(paths: Sequence[str]) -> int:
    import orjson

    n = 0
    for p in paths:
        with open(p, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = orjson.loads(f.read(size))
        n += len(header) - ("__metadata__" in header)
    return n


def available(name: str) -> str | None:
    """None if the reader can run here, else why not."""
    from importlib.util import find_spec

    need = {"safe_open": ["safetensors", "numpy"], "orjson": ["orjson"]}.get(name, [])
    missing = [m for m in need if find_spec(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


PY_READERS: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {
    "pyaudit-j1": ("pyaudit read_headers(jobs=1), validated, kept native", _pyaudit_native(1)),
    "pyaudit-j2": ("pyaudit read_headers(jobs=2), validated, kept native", _pyaudit_native(2)),
    "pyaudit-j1-repeating": (
        "pyaudit read_headers(jobs=1), the same store with headers repeating",
        _pyaudit_native(1),
    ),
    "pyaudit-j2-repeating": (
        "pyaudit read_headers(jobs=2), the same store with headers repeating",
        _pyaudit_native(2),
    ),
    "pyaudit-j1-lists": ("pyaudit jobs=1 + table() as Python lists", _pyaudit_lists(1)),
    "pyaudit-j2-lists": ("pyaudit jobs=2 + table() as Python lists", _pyaudit_lists(2)),
    "safe_open": ("safetensors safe_open + keys/get_shape/get_dtype", _safe_open),
    "json": ("Python open + json.loads", _python_json),
    "orjson": ("Python open + orjson.loads", _python_orjson),
}

# --------------------------------------------------------------------------- measurements


def header_bytes(paths: Sequence[str]) -> int:
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            total += 8 + int.from_bytes(f.read(8), "little")
    return total


def time_readers(
    names: Sequence[str], paths: Sequence[str], repeats: int, expected: int, cold: bool = False
) -> dict[str, Measured]:
    """`repeats` rounds over the readers, the order rotated each round.

    Warm, each timed pass follows an untimed one of the same reader: a pass right
    after another reader's (safe_open's mappings, say) starts with caches holding
    the other reader's state, which costs a 30 ms pyaudit pass up to a third of its
    time and a 300 ms one little. Rounds still interleave the readers, so that a
    change in the machine's load touches them all alike.
    """
    out = {n: Measured(n, PY_READERS[n][0]) for n in names}
    for r in range(repeats):
        order = list(names[r % len(names) :]) + list(names[: r % len(names)])
        for name in order:
            fn = PY_READERS[name][1]
            if cold:
                why = drop_caches()
                if why:
                    raise SystemExit(f"cannot drop caches: {why}")
            else:
                fn(paths)  # settle: this reader's own state in the caches
            c0, t0 = cpu_seconds(), time.perf_counter()
            n = fn(paths)
            out[name].wall.append(time.perf_counter() - t0)
            out[name].cpu.append(cpu_seconds() - c0)
            if n != expected:
                raise SystemExit(f"{name}: saw {n} tensors, expected {expected}")
    return out


# --------------------------------------------------------------------------- the C floor


def build_floor(workdir: Path) -> Path | None:
    """floor.c compiled with cc -O2, or None (said) when there is no compiler."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("(no C compiler: the C floor is left out)")
        return None
    exe = workdir / "floor"
    try:
        subprocess.run([cc, "-O2", "-pthread", "-o", str(exe), str(HERE / "floor.c")], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"(floor.c did not compile: {e}; the C floor is left out)")
        return None
    return exe


def run_floor(
    exe: Path, paths_file: Path, threads: int, repeats: int, label: str, drop: bool = False
) -> tuple[Measured, int]:
    """The floor's passes (and the header bytes it read)."""
    cmd = [str(exe), str(paths_file), str(threads), str(repeats)] + (["drop"] if drop else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE)
    if proc.returncode != 0:
        raise SystemExit(f"floor failed ({proc.returncode}): {proc.stdout!r}")
    doc = json.loads(proc.stdout)
    m = Measured(f"floor-t{threads}", label, doc["times"], doc["cpu"], doc["peak_rss_kb"], None)
    return m, doc["header_bytes"]


# --------------------------------------------------------------------------- peak RSS


def child_main(reader: str, paths_file: str) -> None:
    """Run one reader once over the store in this fresh process; print its RSS."""
    paths = [p for p in Path(paths_file).read_text().split("\n") if p]
    # Import what the reader needs before the "after imports" sample.
    if reader.startswith("pyaudit"):
        import pyaudit.headers  # noqa: F401
    elif reader == "safe_open":
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
    elif reader == "orjson":
        import orjson  # noqa: F401
    before = vm_kb("VmRSS")
    n = PY_READERS[reader][1](paths)
    print(json.dumps({"tensors": n, "before_kb": before, "peak_kb": vm_kb("VmHWM")}))


def child_rss(reader: str, paths_file: Path) -> tuple[int, int]:
    """(peak RSS KB, RSS KB after imports) of a fresh process running `reader` once."""
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            reader,
            "--paths-file",
            str(paths_file),
        ],
        stdout=subprocess.PIPE,
        check=True,
    )
    doc = json.loads(proc.stdout)
    return doc["peak_kb"], doc["before_kb"]


# --------------------------------------------------------------------------- the report


def ratio(peer: Measured | None, m: Measured, stat: str) -> str:
    if peer is None:
        return "-"
    return f"{peer.wall_s(stat) / m.wall_s(stat):.1f} / {peer.cpu_s() / m.cpu_s():.1f}"


def print_table(
    title: str, ms: list[Measured], files: int, hbytes: int, stat: str, show_rss: bool
) -> None:
    by = {m.key: m for m in ms}
    print(f"\n### {title}\n")
    head = (
        ["reader", f"files/s ({stat})"]
        + (["files/s (best)"] if stat != "best" else [])
        + [
            "files per CPU-s",
            f"headers MB/s ({stat})",
            "x safe_open (wall / CPU)",
            "x orjson (wall / CPU)",
        ]
    )
    if show_rss:
        head.append("peak RSS MB (after imports)")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for m in ms:
        cells = [
            m.label,
            f"{files / m.wall_s(stat):,.0f}",
            *([f"{files / min(m.wall):,.0f}"] if stat != "best" else []),
            f"{files / m.cpu_s():,.0f}" if m.cpu_s() > 0 else "-",
            f"{hbytes / m.wall_s(stat) / 1e6:,.0f}",
            ratio(by.get("safe_open"), m, stat),
            ratio(by.get("orjson"), m, stat),
        ]
        if show_rss:
            if m.rss_kb is None:
                cells.append("-")
            elif m.base_kb is None:
                cells.append(f"{m.rss_kb / 1024:.1f}")
            else:
                cells.append(f"{m.rss_kb / 1024:.1f} ({m.base_kb / 1024:.1f})")
        print("| " + " | ".join(cells) + " |")


def headline(ms: list[Measured], files: int, stat: str) -> list[str]:
    by = {m.key: m for m in ms}
    native = [k for k in by if k.startswith("pyaudit-j") and not k.endswith(("lists", "repeating"))]
    if not native:
        return []
    lines = []
    best = min(native, key=lambda k: by[k].wall_s(stat))
    m = by[best]
    parts = [
        f"pyaudit read_headers({best.removeprefix('pyaudit-').replace('j', 'jobs=')}) "
        f"{files / m.wall_s(stat):,.0f} files/s ({stat})"
    ]
    for peer in ("safe_open", "orjson"):
        if peer in by:
            parts.append(
                f"{by[peer].wall_s(stat) / m.wall_s(stat):.1f}x {peer} "
                f"({by[peer].cpu_s() / m.cpu_s():.1f}x by CPU time)"
            )
    lines.append("; ".join(parts))
    lists = by.get(best + "-lists")
    if lists is not None:
        parts = [
            f"with names/dtypes/shapes as Python lists {files / lists.wall_s(stat):,.0f} files/s"
        ]
        for peer in ("safe_open", "orjson"):
            if peer in by:
                parts.append(
                    f"{by[peer].wall_s(stat) / lists.wall_s(stat):.1f}x {peer} "
                    f"({by[peer].cpu_s() / lists.cpu_s():.1f}x by CPU time)"
                )
        lines.append("; ".join(parts))
    for key in native:
        threads = key.removeprefix("pyaudit-j")
        floor = by.get("floor-t" + threads)
        if floor is not None:
            lines.append(
                f"C floor, {threads} thread(s): "
                f"{by[key].wall_s(stat) / floor.wall_s(stat):.1f}x faster than pyaudit "
                f"(wall, {stat}), {by[key].cpu_s() / floor.cpu_s():.1f}x by CPU time"
            )
            rep = by.get(key + "-repeating")
            if rep is not None:
                lines.append(
                    f"headers repeating (as in one run's checkpoints), {threads} thread(s): "
                    f"{files / rep.wall_s(stat):,.0f} files/s, the C floor "
                    f"{rep.wall_s(stat) / floor.wall_s(stat):.1f}x faster (wall), "
                    f"{rep.cpu_s() / floor.cpu_s():.1f}x by CPU time"
                    + (
                        f"; {by['safe_open'].wall_s(stat) / rep.wall_s(stat):.1f}x safe_open"
                        if "safe_open" in by
                        else ""
                    )
                )
    return lines


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--store", type=Path, default=DEFAULT_STORE, help="where the sparse store is cached"
    )
    ap.add_argument(
        "--checkpoints", type=int, default=None, help="checkpoints in the store (default 200)"
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed passes per reader (default 9)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 4 checkpoints, 1 pass, no cold run (a few seconds)",
    )
    ap.add_argument(
        "--cold",
        dest="cold",
        action="store_true",
        default=None,
        help="also a cold-cache run: drops the page cache (default outside --quick)",
    )
    ap.add_argument("--no-cold", dest="cold", action="store_false")
    ap.add_argument(
        "--cold-checkpoints", type=int, default=40, help="checkpoints read cold (default 40)"
    )
    ap.add_argument("--cold-repeats", type=int, default=3)
    ap.add_argument("--no-rss", action="store_true", help="skip the per-reader RSS subprocesses")
    ap.add_argument("--json", type=Path, help="also write the results here as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--paths-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        child_main(args.child, args.paths_file)
        return 0

    checkpoints = args.checkpoints or (4 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 9)
    cold = (not args.quick) if args.cold is None else args.cold
    stat = "median" if repeats > 1 else "best"

    t_start = time.perf_counter()
    paths, note = ensure_store(args.store, checkpoints, distinct=True)
    rpaths, rnote = ensure_store(args.store, checkpoints, distinct=False)
    root = args.store / f"{LAYOUT}-v{STORE_VERSION}-distinct"
    files = len(paths)
    apparent = sum(os.stat(p).st_size for p in paths)
    on_disk = du_bytes(root)
    expected = checkpoints * QWEN25_VL_7B_TENSORS
    hbytes = header_bytes(paths)
    info = machine()
    print(f"# pyaudit header benchmark ({info['date']})")
    print(
        f"{info['cpu']}; Linux {info['kernel']}; Python {info['python']}; "
        f"pyaudit {info['pyaudit']}; safetensors {info['safetensors']}; orjson {info['orjson']}; "
        f"numpy {info['numpy']}"
    )
    print(
        f"load average at start: {info['load']} (other work on the machine slows every reader; "
        f"the CPU-time columns are the steadier comparison)"
    )
    print(
        f"store: {root}: {checkpoints} checkpoints x 5 shards = {files} files, "
        f"{expected:,} tensors, {apparent / 1e12:.2f} TB apparent, "
        f"{on_disk / 1e6:.1f} MB on disk (du), headers {hbytes / 1e6:.1f} MB "
        f"({hbytes / files / 1e3:.1f} KB a file) [{note}]; and the same with headers "
        f"repeating [{rnote}]"
    )

    results: dict[str, object] = {
        "machine": info,
        "files": files,
        "checkpoints": checkpoints,
        "header_bytes": hbytes,
        "apparent_bytes": apparent,
        "du_bytes": on_disk,
        "repeats": repeats,
        "stat": stat,
    }
    work = Path(tempfile.mkdtemp(prefix="pyaudit-bench-"))
    try:
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        floor = build_floor(work)
        names = []
        for name in PY_READERS:
            why = available(name)
            if why:
                print(f"({name} left out: {why})")
            else:
                names.append(name)

        # ---- warm cache
        plain = [n for n in names if not n.endswith("-repeating")]
        timed = time_readers(plain, paths, repeats, expected)
        repeating = [n for n in names if n.endswith("-repeating")]
        timed.update(time_readers(repeating, rpaths, repeats, expected))
        ms = [timed[n] for n in names]
        for threads in (1, 2) if floor is not None else ():
            assert floor is not None
            m, fb = run_floor(
                floor,
                paths_file,
                threads,
                max(repeats, 3),
                f"C floor: open+pread+pread+close, {threads} thread" + "s" * (threads > 1),
            )
            if fb != hbytes:
                raise SystemExit(f"the floor read {fb} header bytes, expected {hbytes}")
            ms.append(m)
        if not args.no_rss:
            for m in ms:
                if m.key in PY_READERS and not m.key.endswith("-repeating"):
                    m.rss_kb, m.base_kb = child_rss(m.key, paths_file)
        print_table(
            f"Warm cache: {files} files, {stat} of {repeats} interleaved passes",
            ms,
            files,
            hbytes,
            stat,
            not args.no_rss,
        )
        lines = headline(ms, files, stat)
        if lines:
            print("\n" + "\n".join("- " + line for line in lines))
        results["warm"] = [asdict(m) for m in ms]

        # ---- cold cache
        if cold:
            why = drop_caches()
            if why:
                print(f"\nCold cache: not run: dropping the page cache was refused ({why}).")
                results["cold"] = {"refused": why}
            else:
                ck = min(args.cold_checkpoints, checkpoints)
                cpaths = paths[: ck * 5]
                cfile = work / "cold-paths.txt"
                cfile.write_text("\n".join(cpaths) + "\n")
                chb = header_bytes(cpaths)
                for jobs in (8, 16):
                    PY_READERS[f"pyaudit-j{jobs}"] = (
                        f"pyaudit read_headers(jobs={jobs}), validated, kept native",
                        _pyaudit_native(jobs),
                    )
                cnames = [
                    n
                    for n in (
                        "pyaudit-j1",
                        "pyaudit-j2",
                        "pyaudit-j8",
                        "pyaudit-j16",
                        "safe_open",
                        "orjson",
                    )
                    if available(n) is None
                ]
                ctimed = time_readers(
                    cnames, cpaths, args.cold_repeats, ck * QWEN25_VL_7B_TENSORS, cold=True
                )
                cms = [ctimed[n] for n in cnames]
                for threads in (1, 16) if floor is not None else ():
                    assert floor is not None
                    m, _ = run_floor(
                        floor,
                        cfile,
                        threads,
                        args.cold_repeats,
                        f"C floor, {threads} thread" + "s" * (threads > 1),
                        drop=True,
                    )
                    cms.append(m)
                print_table(
                    f"Cold cache (page cache, dentries and inodes dropped before every pass): "
                    f"{len(cpaths)} files, median of {args.cold_repeats}",
                    cms,
                    len(cpaths),
                    chb,
                    "median",
                    False,
                )
                results["cold"] = [asdict(m) for m in cms]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nload average at end: {results['load_end']}; total {time.perf_counter() - t_start:.1f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""`--verify-data`: streaming tensor bytes through NaN / Inf / all-zero checks, against
`cat FILE > /dev/null` (the read floor) and numpy doing the same checks on a memmap.

The data: ``--files`` real (not sparse) safetensors files of ``--file-mb`` MiB each
(default 2 x 1024), written once in chunks and cached under ``--store``. Each holds
random BF16 and F32 weights (normal, std 0.02; ~55% of the bytes BF16, tensors up to
the size of Qwen2.5-7B's MLP matrices, 136 MB) with a few planted faults so that
every tool has something to find and their findings can be compared: 3 NaNs in a
BF16 tensor, +Inf, -Inf and a NaN in an F32 tensor, one all-zero F32 vector.

Warm cache (every file read once before timing). Each tool runs as a subprocess over
all the files, rounds with the order rotated, median and best:

- ``cat f1 f2 ... > /dev/null``: read(2) into a buffer, nothing else;
- ``pyaudit.data.verify_data(paths, jobs=1|2)`` in a fresh Python process, the call
  timed inside it (interpreter and imports excluded), peak RSS (VmHWM) beside the RSS
  after imports;
- ``pyaudit scan --verify-data --json DIR``: the CLI end to end (interpreter, imports,
  header audit, the data scan with the default jobs, the report);
- numpy: per tensor, a view of an ``np.memmap`` of the file: NaN / Inf counts and
  all-zero by bit masks (BF16 as uint16) or ``np.isnan``/``np.isinf``/``np.any`` (F32),
  the call timed inside the process like pyaudit's.

Every run's findings are checked: pyaudit and numpy must report exactly the planted
NaN / Inf counts and all-zero tensors.

    python benchmarks/bench_data.py            # full: 2 x 1 GiB, 5 rounds (~1 min once written)
    python benchmarks/bench_data.py --quick    # smoke test: 2 x 8 MiB, one round, a few seconds

No timing is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import (
    DEFAULT_STORE,
    Measured,
    load,
    machine,
    md_table,
    rotated,
    spawn,
    vm_kb,
    wait_for_quiet,
)

STORE_VERSION = 1  # bump when the files written change
WIDTH = 3584  # Qwen2.5-7B hidden size: every matrix is (rows, WIDTH)
MAX_ROWS = {"BF16": 18944, "F32": 3584}  # the MLP (136 MB) / a square F32 matrix (51 MB)
ESIZE = {"BF16": 2, "F32": 4}
SHARE = {"BF16": 0.55, "F32": 0.45}

# --------------------------------------------------------------------------- the files


def plan(k: int, target: int) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, Any]]:
    """File k's tensors (name -> (dtype, shape)), about ``target`` bytes, and its plants."""
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    first: dict[str, str] = {}
    for dtype in ("BF16", "F32"):
        budget = int(target * SHARE[dtype])
        i = 0
        kind = "mlp.up_proj" if dtype == "BF16" else "self_attn.o_proj"
        while budget >= WIDTH * ESIZE[dtype] * 2:
            rows = min(MAX_ROWS[dtype], budget // (WIDTH * ESIZE[dtype]) - 1)
            name = f"model.layers.{k * 100 + i}.{kind}.weight"
            tensors[name] = (dtype, (rows, WIDTH))
            first.setdefault(dtype, name)
            norm = f"model.layers.{k * 100 + i}.{kind}.norm"
            tensors[norm] = (dtype, (WIDTH,))
            budget -= (rows + 1) * WIDTH * ESIZE[dtype]
            i += 1
    zero = f"model.layers.{k * 100}.zero_bias"
    tensors[zero] = ("F32", (WIDTH,))
    plants = {
        "nan": {first["BF16"]: 3, first["F32"]: 1},
        "inf": {first["F32"]: 2},
        "zero": [zero],
    }
    return tensors, plants


def write_file(path: Path, k: int, target: int) -> dict[str, Any]:
    """A real safetensors file (the safetensors writer's layout), written in chunks."""
    import numpy as np

    from pyaudit.testing.sparse import header_json

    tensors, plants = plan(k, target)
    text, size = header_json(tensors, {"format": "pt"})
    header = json.loads(text)
    rng = np.random.default_rng(1000 + k)
    chunk = 1 << 24  # elements
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        order = sorted((v["data_offsets"][0], n) for n, v in header.items() if n != "__metadata__")
        for begin, name in order:
            dtype, shape = tensors[name]
            assert f.tell() == 8 + len(text) + begin
            count = int(np.prod(shape))
            for start in range(0, count, chunk):
                n = min(chunk, count - start)
                values = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
                if name in plants["zero"]:
                    values[:] = 0.0
                if start == 0 and name in plants["inf"]:
                    values[1], values[n // 2] = np.inf, -np.inf
                if start == 0 and name in plants["nan"] and dtype == "F32":
                    values[2] = np.nan
                data = values
                if dtype == "BF16":
                    data = (values.view(np.uint32) >> 16).astype(np.uint16)
                    if start == 0 and name in plants["nan"]:
                        data[[0, n // 3, n - 1]] = 0x7FC1  # quiet NaN, payload 1
                f.write(data.tobytes())
        assert f.tell() == 8 + len(text) + size
    os.replace(tmp, path)
    return plants


def ensure_files(store: Path, count: int, mib: int) -> tuple[list[str], dict[str, Any], str]:
    """The files (written unless present and complete), the plants expected, a note."""
    d = store / f"data-v{STORE_VERSION}" / f"{count}x{mib}MiB"
    d.mkdir(parents=True, exist_ok=True)
    marker = d / "plants.json"
    paths = [d / f"model-{k + 1:05d}-of-{count:05d}.safetensors" for k in range(count)]
    if marker.is_file() and all(p.is_file() for p in paths):
        return [str(p) for p in paths], json.loads(marker.read_text()), "reused"
    t0 = time.perf_counter()
    expected: dict[str, Any] = {"nan": {}, "inf": {}, "zero": []}
    weight_map: dict[str, str] = {}
    total = 0
    for k, p in enumerate(paths):
        plants = write_file(p, k, mib << 20)
        expected["nan"].update(plants["nan"])
        expected["inf"].update(plants["inf"])
        expected["zero"] += plants["zero"]
        tensors, _ = plan(k, mib << 20)
        from pyaudit.testing.sparse import tensor_nbytes

        weight_map.update({n: p.name for n in tensors})
        total += sum(tensor_nbytes(*t) for t in tensors.values())
    from pyaudit.testing.sparse import write_index

    write_index(d, weight_map, total)
    marker.write_text(json.dumps(expected, indent=2) + "\n")
    return [str(p) for p in paths], expected, f"written in {time.perf_counter() - t0:.0f} s"


# --------------------------------------------------------------------------- the checkers
# Each returns {"nan": {name: n}, "inf": {name: n}, "zero": [names]}: flagged tensors only.


def check_pyaudit(paths: Sequence[str], jobs: int) -> dict[str, Any]:
    from pyaudit.data import verify_data

    out: dict[str, Any] = {"nan": {}, "inf": {}, "zero": []}
    for r in verify_data(paths, jobs=jobs):
        if not r.header_ok or r.error:
            raise SystemExit(f"pyaudit: {r.path}: {r.error}")
        out["nan"].update(r.nan)
        out["inf"].update(r.inf)
        out["zero"] += r.all_zero
    return out


def check_numpy(paths: Sequence[str]) -> dict[str, Any]:
    """What a user would write with numpy: the header by hand, a memmap, per tensor."""
    import numpy as np

    out: dict[str, Any] = {"nan": {}, "inf": {}, "zero": []}
    for path in paths:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            raw = mm[base + begin : base + end]
            if info["dtype"] == "BF16":
                bits = raw.view(np.uint16)
                special = (bits & 0x7F80) == 0x7F80
                mantissa = (bits & 0x007F) != 0
                nan = int(np.count_nonzero(special & mantissa))
                inf = int(np.count_nonzero(special & ~mantissa))
                zero = not np.any(bits & 0x7FFF)
            elif info["dtype"] == "F32":
                values = raw.view(np.float32)
                nan = int(np.count_nonzero(np.isnan(values)))
                inf = int(np.count_nonzero(np.isinf(values)))
                zero = not np.any(values)
            else:
                raise SystemExit(f"numpy checker: {info['dtype']} not handled")
            if nan:
                out["nan"][name] = nan
            if inf:
                out["inf"][name] = inf
            if zero:
                out["zero"].append(name)
        del mm
    return out


def child_main(tool: str, paths: Sequence[str]) -> None:
    """One timed pass of ``tool`` in this fresh process; prints JSON (time, RSS, findings)."""
    import resource

    if tool.startswith("pyaudit"):
        import pyaudit.data  # noqa: F401
    else:
        import numpy  # noqa: F401
    before = vm_kb("VmRSS")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if tool.startswith("pyaudit-j"):
        found = check_pyaudit(paths, int(tool.removeprefix("pyaudit-j")))
    else:
        found = check_numpy(paths)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    doc = {"wall": wall, "cpu": cpu, "before_kb": before, "peak_kb": vm_kb("VmHWM"), "found": found}
    print(json.dumps(doc))


# --------------------------------------------------------------------------- measuring


def same_findings(key: str, found: dict[str, Any], expected: dict[str, Any]) -> None:
    if (
        found["nan"] != expected["nan"]
        or found["inf"] != expected["inf"]
        or sorted(found["zero"]) != sorted(expected["zero"])
    ):
        raise SystemExit(f"{key}: found {found}, planted {expected}")


def check_scan_json(path: Path, expected: dict[str, Any]) -> None:
    doc = json.loads(path.read_text())
    rules = {f["code"]: f for c in doc["checkpoints"] for f in c["findings"]}
    for rule, want in (("nan", expected["nan"]), ("inf", expected["inf"])):
        got = rules.get(rule, {}).get("tensors", [])
        if sorted(got) != sorted(want):
            raise SystemExit(f"pyaudit scan: {rule} tensors {got}, planted {sorted(want)}")
    got = rules.get("all-zeros", {}).get("tensors", [])
    if sorted(got) != sorted(expected["zero"]):
        raise SystemExit(f"pyaudit scan: all-zeros {got}, planted {expected['zero']}")


def run_tool(
    key: str, paths: Sequence[str], work: Path, expected: dict[str, Any]
) -> tuple[float, float, int, int | None]:
    """(wall s, CPU s, peak RSS KB, RSS after imports KB or None) of one pass."""
    out = work / "out.json"
    if key == "cat":
        with open(os.devnull, "wb") as devnull:
            run = spawn(["cat", *paths], stdout=devnull)
        if run.returncode != 0:
            raise SystemExit(f"cat exited {run.returncode}")
        return run.wall, run.cpu, run.maxrss_kb, None
    if key == "scan":
        exe = shutil.which("pyaudit")
        cmd = [exe] if exe else [sys.executable, "-m", "pyaudit"]
        with open(out, "wb") as f:
            run = spawn(
                [*cmd, "scan", "--verify-data", "--json", str(Path(paths[0]).parent)], stdout=f
            )
        if run.returncode not in (0, 1):  # 1: the planted faults fail the checkpoint
            raise SystemExit(f"pyaudit scan exited {run.returncode}")
        check_scan_json(out, expected)
        return run.wall, run.cpu, run.maxrss_kb, None
    with open(out, "wb") as f:
        run = spawn(
            [sys.executable, str(Path(__file__).resolve()), "--child", key, *paths], stdout=f
        )
    if run.returncode != 0:
        raise SystemExit(f"{key} exited {run.returncode}")
    doc = json.loads(out.read_text())
    same_findings(key, doc["found"], expected)
    return doc["wall"], doc["cpu"], doc["peak_kb"], doc["before_kb"]


LABELS = {
    "cat": "cat FILES > /dev/null",
    "pyaudit-j1": "pyaudit verify_data(jobs=1), in-process call",
    "pyaudit-j2": "pyaudit verify_data(jobs=2), in-process call",
    "scan": "pyaudit scan --verify-data --json (CLI end to end)",
    "numpy": "numpy on np.memmap, in-process call",
}


def measure(
    keys: Sequence[str], paths: Sequence[str], repeats: int, work: Path, expected: dict[str, Any]
) -> dict[str, Measured]:
    out = {k: Measured(k, LABELS[k]) for k in keys}
    for r in range(repeats):
        for k in rotated(keys, r):
            wall, cpu, peak, base = run_tool(k, paths, work, expected)
            m = out[k]
            m.wall.append(wall)
            m.cpu.append(cpu)
            m.rss_kb = max(m.rss_kb or 0, peak)
            m.base_kb = base
    return out


def table(ms: dict[str, Measured], nbytes: int, stat: str) -> str:
    cat, np_ = ms.get("cat"), ms.get("numpy")
    head = [
        "tool",
        f"GB/s ({stat})",
        *(["GB/s (best)"] if stat != "best" else []),
        "GB per CPU-s",
        "% of cat (wall)",
        "x numpy (wall / CPU)",
        "peak RSS MB (after imports)",
    ]
    rows = []
    for m in ms.values():
        w = m.wall_s(stat)
        rss = "-" if m.rss_kb is None else f"{m.rss_kb / 1024:.1f}"
        if m.base_kb is not None:
            rss += f" ({m.base_kb / 1024:.1f})"
        rows.append(
            [
                m.label,
                f"{nbytes / w / 1e9:.2f}",
                *([f"{nbytes / min(m.wall) / 1e9:.2f}"] if stat != "best" else []),
                f"{nbytes / m.cpu_s() / 1e9:.2f}" if m.cpu_s() > 0 else "-",
                f"{cat.wall_s(stat) / w * 100:.0f}%" if cat else "-",
                f"{np_.wall_s(stat) / w:.1f} / {np_.cpu_s() / m.cpu_s():.1f}" if np_ else "-",
                rss,
            ]
        )
    return md_table(head, rows)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE, help="where the files are cached")
    ap.add_argument("--files", type=int, default=2, help="files (default 2)")
    ap.add_argument("--file-mb", type=int, default=None, help="MiB a file (default 1024)")
    ap.add_argument("--repeats", type=int, default=None, help="timed passes per tool (default 5)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 x 8 MiB, one pass")
    ap.add_argument("--tools", default="cat,pyaudit-j1,pyaudit-j2,scan,numpy")
    ap.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-min load below this")
    ap.add_argument("--max-wait", type=float, default=300, help="seconds to wait for it at most")
    ap.add_argument("--json", type=Path, help="also write the results here as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("child_paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args.child, args.child_paths)
        return 0

    mib = args.file_mb or (8 if args.quick else 1024)
    repeats = args.repeats or (1 if args.quick else 5)
    stat = "median" if repeats > 1 else "best"
    keys = [k for k in args.tools.split(",") if k]
    unknown = [k for k in keys if k not in LABELS]
    if unknown:
        ap.error(f"--tools: unknown {unknown}; known: {', '.join(LABELS)}")
    free = shutil.disk_usage(args.store if args.store.exists() else args.store.parent).free
    if free < 2 * args.files * (mib << 20):
        raise SystemExit(f"{args.store}: {free / 1e9:.1f} GB free, too little for the files")
    t_start = time.perf_counter()
    from importlib.util import find_spec

    if find_spec("numpy") is None:
        raise SystemExit("numpy is needed (to write the files): pip install 'pyaudit[bench]'")
    # Written in a child: numpy and pyaudit imported here would raise this process's
    # RSS, which every child's ru_maxrss starts from (see _common.spawn).
    proc_out = Path(tempfile.mkstemp(prefix="pyaudit-bench-data-", suffix=".json")[1])
    with open(proc_out, "wb") as f:
        made = spawn(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                "write",
                str(args.store),
                str(args.files),
                str(mib),
            ],
            stdout=f,
        )
    if made.returncode != 0:
        raise SystemExit("writing the files failed")
    written = json.loads(proc_out.read_text())
    proc_out.unlink()
    paths, expected, note = written["paths"], written["expected"], written["note"]
    nbytes = sum(os.path.getsize(p) for p in paths)
    blocks = sum(os.stat(p).st_blocks * 512 for p in paths)

    if not args.quick:
        wait_for_quiet(args.max_load, args.max_wait)
    info = machine(("pyaudit", "numpy"))
    print(f"# pyaudit --verify-data benchmark ({info['date']})")
    print(
        f"{info['cpu']}, {info['memory']}; Linux {info['kernel']}; Python {info['python']}; "
        f"pyaudit {info['pyaudit']}; numpy {info['numpy']}"
    )
    print(f"load average at start: {info['load']}")
    print(
        f"files: {len(paths)} x {mib} MiB in {Path(paths[0]).parent} ({nbytes / 1e9:.2f} GB, "
        f"{blocks / 1e9:.2f} GB on disk: not sparse) [{note}]; planted: "
        f"NaN {expected['nan']}, Inf {expected['inf']}, all-zero {expected['zero']}"
    )
    work = Path(tempfile.mkdtemp(prefix="pyaudit-bench-data-"))
    results: dict[str, Any] = {"machine": info, "bytes": nbytes, "repeats": repeats, "stat": stat}
    try:
        with open(os.devnull, "wb") as devnull:  # warm: every byte in the page cache
            spawn(["cat", *paths], stdout=devnull)
        for k in keys if not args.quick else ():  # and one untimed pass of each tool
            run_tool(k, paths, work, expected)
        ms = measure(keys, paths, repeats, work, expected)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n### Warm cache, {len(paths)} files, {nbytes / 1e9:.2f} GB; {stat} of {repeats} "
        f"interleaved passes, load {load()}\n"
    )
    print(table(ms, nbytes, stat))
    print(
        "\nGB/s: file bytes over wall seconds (pyaudit and numpy: the call, timed inside the "
        "process; cat and scan: the whole process). Peak RSS: VmHWM of the process "
        "(cat, scan: ru_maxrss); numpy's counts the memmapped file pages it touched."
    )
    results["warm"] = [asdict(m) for m in ms.values()]
    results["load_end"] = load()
    print(
        f"\nload average at end: {results['load_end']}; total {time.perf_counter() - t_start:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def write_child(store: str, count: str, mib: str) -> None:
    paths, expected, note = ensure_files(Path(store), int(count), int(mib))
    print(json.dumps({"paths": paths, "expected": expected, "note": note}))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1:3] == ["--child", "write"]:
        write_child(*sys.argv[3:6])
        sys.exit(0)
    sys.exit(main())

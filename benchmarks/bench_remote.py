"""A sweep of an S3 store far away: `pyaudit scan s3://... --json` against the careful
script, both through a proxy that adds D ms to every request (issue 12).

The store: the checkpoints of examples/store (real layouts: sharded and single-file full
models, LoRA adapters with their run args, a truncated shard), replicated N/9 times, on
moto's S3 server (``ThreadedMotoServer``; ``--servers`` processes of it, 2 by default, each
holding the store) on 127.0.0.1, behind
:class:`pyaudit.testing.proxy.LatencyProxy` (loopback, D ms per request). The careful
script is what a user writes: list the prefix, then two range GETs per .safetensors (the
8-byte length, then the header) on a 32-thread pool with a 32-connection boto3 client.
Both run as child processes, one after the other, for each D, in the same run.

    python benchmarks/bench_remote.py                        # 450 checkpoints, D = 0, 50, 100 ms
    python benchmarks/bench_remote.py --checkpoints 900 --delays 100
    python benchmarks/bench_remote.py --quick                # smoke: 18 checkpoints, D = 0

Printed per D: wall seconds of each, the ratio, requests and bytes the server saw for each,
pyaudit's requests x D / in-flight (the floor its own requests allow) and the bytes needed
(every header plus every run file pyaudit reads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_STORE, child_env, machine, md_table, spawn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "store"
BUCKET = "bench-remote"
RUN_FILES = ("config.json", "adapter_config.json", "args.json", "training_args.yaml")


# --- the careful script (run as a child: `bench_remote.py --script s3://bucket/prefix`) -----


def careful_script(url: str) -> None:
    import boto3
    from botocore.config import Config

    bucket, _, prefix = url[len("s3://") :].partition("/")
    s3 = boto3.client("s3", config=Config(max_pool_connections=32))
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".safetensors")]

    def header(key: str) -> int:
        first = s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-7")["Body"].read()
        n = struct.unpack("<Q", first)[0] if len(first) == 8 else 0
        if n == 0 or n > 100_000_000:
            return 0
        body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=8-{8 + n - 1}")["Body"].read()
        try:
            return len(json.loads(body))
        except ValueError:
            return 0

    with ThreadPoolExecutor(32) as pool:
        tensors = sum(pool.map(header, keys))
    print(json.dumps({"files": len(keys), "tensors": tensors}))


# --- the store ------------------------------------------------------------------------------


def make_store(root: Path, checkpoints: int, distinct: bool = False) -> tuple[Path, int]:
    """The examples store copied until it holds ``checkpoints``. The copies' run and index
    files are the same bytes, as the checkpoints of one run hold (pyaudit reads each
    content once); ``distinct``: each copy's own (a key added to every JSON run and index
    file, a comment to the YAML), as in a store of as many different runs."""
    from pyaudit.discover import discover

    per = sum(1 for _ in discover(str(EXAMPLES)))
    copies = max(1, -(-checkpoints // per))
    name = f"remote-{copies}x" + ("-distinct" if distinct else "")
    out = root / name
    if not out.is_dir():
        tmp = root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(copies):
            shutil.copytree(EXAMPLES, tmp / f"r{i:04d}")
            if distinct:
                _make_distinct(tmp / f"r{i:04d}", i)
        tmp.rename(out)
    return out, copies * per


def _make_distinct(copy: Path, i: int) -> None:
    for p in sorted(copy.rglob("*")):
        if p.name.endswith(".yaml") and p.name in RUN_FILES:
            p.write_text(p.read_text() + f"\n# copy {i}\n")
        elif p.name in RUN_FILES or p.name.endswith(".index.json"):
            try:
                doc = json.loads(p.read_text())
            except ValueError:
                continue  # (a file the store holds broken on purpose: left as it is)
            if isinstance(doc, dict):
                doc["bench_copy"] = i
                p.write_text(json.dumps(doc, indent=2))


def needed_bytes(store: Path) -> tuple[int, int]:
    """(header bytes of every .safetensors, bytes of every run and index file)."""
    headers = runs = 0
    for p in store.rglob("*"):
        if p.name.endswith(".safetensors"):
            with open(p, "rb") as f:
                first = f.read(8)
            headers += min(8 + struct.unpack("<Q", first)[0], p.stat().st_size)
        elif p.name in RUN_FILES or p.name.endswith(".index.json"):
            runs += p.stat().st_size
    return headers, runs


def upload(endpoint: str, local: Path, prefix: str) -> int:
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=16))
    s3.create_bucket(Bucket=BUCKET)
    files = [p for p in sorted(local.rglob("*")) if p.is_file()]

    def put(p: Path) -> None:
        s3.upload_file(str(p), BUCKET, f"{prefix}/{p.relative_to(local).as_posix()}")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, files))
    return len(files)


MOTO = """
import logging, sys, time
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
server.start()
print("http://%s:%d" % server.get_host_and_port(), flush=True)
sys.stdin.read()
"""


def _moto_process() -> tuple[subprocess.Popen[str], str]:
    """A moto S3 server in a process of its own (ends when its stdin closes)."""
    proc = subprocess.Popen([sys.executable, "-c", MOTO], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


# --- one timed run --------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """User + system CPU seconds a running process has used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, the child's own CPU seconds, its stdout)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        run = spawn(cmd, stdout=out, stderr=err, env=env)
        out.seek(0)
        err.seek(0)
        if run.returncode not in (0, 1):
            raise SystemExit(f"{cmd[:3]} exited {run.returncode}:\n{err.read()[-3000:]}")
        return run.wall, run.cpu, out.read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=int, default=450)
    ap.add_argument("--delays", default="0,50,100", help="ms added to each request")
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE)
    ap.add_argument("--quick", action="store_true", help="18 checkpoints, D = 0 (smoke test)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each tool per D, interleaved; the median is shown")
    ap.add_argument("--servers", type=int, default=2, help="moto processes behind the proxy")
    ap.add_argument(
        "--server", choices=("moto", "static"), default="moto",
        help="the S3 fake: moto processes behind the proxy, or the proxy answering from the "
        "store on disk itself (pyaudit.testing.static_s3, frozen: the store walked once, each "
        "object looked at once; a small cost a request, so the client and the latency are "
        "measured, not the fake)",
    )
    ap.add_argument(
        "--pyaudit-jobs", type=int, default=None,
        help="pass --jobs N to pyaudit (8 N requests in flight; default: 128 in flight)",
    )
    ap.add_argument(
        "--distinct", action="store_true",
        help="every copy's run and index files its own (a store of many runs; by default "
        "the copies share them, as the checkpoints of one run do)",
    )
    ap.add_argument(
        "--first-scan", action="store_true",
        help="every timed pyaudit scan the first in its environment: the shape of botocore's "
        "URLs it keeps for the next scan (pyaudit.s3direct) removed before each, so it "
        "imports botocore (by default the untimed first run keeps it, as a user's earlier "
        "scans do)",
    )
    ap.add_argument("--script", help=argparse.SUPPRESS)  # the careful script, as a child
    args = ap.parse_args()
    if args.script:
        careful_script(args.script)
        return 0
    if args.quick:
        args.checkpoints, args.delays, args.servers = 18, "0", 1
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as e:
        print(f"bench_remote needs moto[server] and boto3: {e}", file=sys.stderr)
        return 2
    args.store.mkdir(parents=True, exist_ok=True)
    local, n = make_store(args.store, args.checkpoints, args.distinct)
    headers, runs = needed_bytes(local)
    env = child_env()
    env.update({
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    })
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    # pyaudit's cache (the shape of the bucket's URLs) its own for this run, not the user's
    cache = Path(tempfile.mkdtemp(prefix="bench-remote-cache-"))
    env["PYAUDIT_CACHE_DIR"] = str(cache)
    # The S3 server: `--servers` moto processes (ThreadedMotoServer each), every one holding
    # the store, the proxy sending each connection to the next: one moto process serves
    # ~100 requests/s on this machine, and the latency, not the server, is to be measured.
    served = None
    if args.server == "static":
        servers, endpoints = [], []
        served = args.store / "static"
        (served / BUCKET).mkdir(parents=True, exist_ok=True)
        link = served / BUCKET / "store"
        if link.is_symlink() and link.resolve() != local.resolve():
            link.unlink()  # a store of another size, from an earlier run
        if not link.is_symlink():
            link.symlink_to(local.resolve(), target_is_directory=True)
        objects = sum(1 for p in local.rglob("*") if p.is_file())
    else:
        servers = [_moto_process() for _ in range(args.servers)]
        endpoints = [endpoint for _, endpoint in servers]
        with ThreadPoolExecutor(len(endpoints)) as pool:
            objects = max(pool.map(lambda e: upload(e, local, "store"), endpoints))
    url = f"s3://{BUCKET}/store"
    print(f"store: {n} checkpoints, {objects} objects; headers {headers:,} B + run files "
          f"{runs:,} B needed", flush=True)
    rows, results = [], []
    proxy_proc = subprocess.Popen(
        [sys.executable, "-m", "pyaudit.testing.proxy",
         *(["--serve", str(served), "--frozen"] if served is not None else
           [x for e in endpoints for x in ("--upstream", e)])],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proxy_proc.stdout is not None
        proxy_url = proxy_proc.stdout.readline().strip()
        env["AWS_ENDPOINT_URL"] = proxy_url

        def control(what: str) -> dict[str, Any]:
            with urllib.request.urlopen(f"{proxy_url}/__proxy__/{what}", timeout=30) as r:
                doc: dict[str, Any] = json.loads(r.read())
                return doc

        pyaudit_cmd = [sys.executable, "-m", "pyaudit", "scan", "--json", url]
        if args.pyaudit_jobs:
            pyaudit_cmd[-1:-1] = ["--jobs", str(args.pyaudit_jobs)]
        script_cmd = [sys.executable, str(Path(__file__).resolve()), "--script", url]
        timed(pyaudit_cmd, env)  # untimed: bytecode caches, moto's first requests
        local_wall, local_cpu, _ = timed([sys.executable, "-m", "pyaudit", "scan", "--json",
                                          str(local)], env)
        print(f"local scan of the same store: {local_wall:.2f} s, CPU {local_cpu:.2f} s",
              flush=True)
        for d in [float(x) for x in args.delays.split(",")]:
            control(f"delay/{d}")
            runs_p, runs_s, server_cpu = [], [], []  # server: the proxy (+ moto's, not counted)
            for _ in range(args.repeats):  # interleaved: pyaudit, script, pyaudit, ...
                control("reset")
                if args.first_scan:
                    shutil.rmtree(cache / "s3", ignore_errors=True)
                served_before = process_cpu(proxy_proc.pid)
                wall, cpu, out = timed(pyaudit_cmd, env)
                runs_p.append((wall, cpu, control("stats"), out))
                server_cpu.append(process_cpu(proxy_proc.pid) - served_before)
                control("reset")
                wall, cpu, _ = timed(script_cmd, env)
                runs_s.append((wall, cpu, control("stats")))
            wall_p, cpu_p, seen_p, out = sorted(runs_p, key=lambda r: r[0])[len(runs_p) // 2]
            wall_s, cpu_s, seen_s = sorted(runs_s, key=lambda r: r[0])[len(runs_s) // 2]
            summary: dict[str, Any] = json.loads(out)["summary"]
            remote = summary["remote"]
            floor = remote["requests"] * (d / 1000) / remote["in_flight"]
            result = {
                "delay_ms": d, "checkpoints": summary["checkpoints"], "pyaudit_s": wall_p,
                "script_s": wall_s, "pyaudit_cpu_s": cpu_p, "script_cpu_s": cpu_s,
                "local_s": local_wall, "local_cpu_s": local_cpu, "pyaudit": seen_p,
                "script": seen_s, "summary": summary,
                "floor_s": floor, "needed_bytes": headers + runs,
                "pyaudit_walls_s": [r[0] for r in runs_p], "script_walls_s": [r[0] for r in runs_s],
                "proxy_cpu_s": sorted(server_cpu)[len(server_cpu) // 2],
            }
            results.append(result)
            rows.append([
                f"{d:.0f} ms", f"{summary['checkpoints']:,}",
                f"{wall_p:.2f} s ({cpu_p:.1f})", f"{wall_s:.2f} s ({cpu_s:.1f})",
                f"{wall_s / wall_p:.2f}x",
                f"{seen_p['requests']:,} / {seen_s['requests']:,}",
                f"{seen_p['max_open']} / {seen_s['max_open']}",
                f"{seen_p['object_bytes'] / 1e6:.2f} / {seen_s['object_bytes'] / 1e6:.2f} MB",
                f"{seen_p['object_bytes'] / (headers + runs):.2f}",
                f"{floor:.2f} s" + (f" ({wall_p / floor:.2f}x)" if floor else ""),
            ])
            print(f"D={d:.0f} ms: proxy CPU during pyaudit's scan "
                  f"{sorted(server_cpu)[len(server_cpu) // 2]:.2f} s"
                  + (" (the server itself: --server static)" if served is not None else
                     " (moto's own processes not counted)"), flush=True)
            print(f"D={d:.0f} ms: pyaudit {wall_p:.2f} s, script {wall_s:.2f} s (medians of "
                  + ", ".join(f"{r[0]:.2f}" for r in runs_p) + " / "
                  + ", ".join(f"{r[0]:.2f}" for r in runs_s) + ")", flush=True)
    finally:
        proxy_proc.terminate()
        proxy_proc.wait(10)
        shutil.rmtree(cache, ignore_errors=True)
    for proc, _ in servers:
        proc.terminate()
        proc.wait(10)
    print()
    print(md_table(
        ["D", "checkpoints", "pyaudit (CPU s)", "careful script (CPU s)", "script / pyaudit",
         "requests (pyaudit / script)", "connections", "object bytes (pyaudit / script)",
         "pyaudit bytes / needed", "requests x D / in-flight"],
        rows,
    ))
    facts = machine(("pyaudit", "s3fs", "aiobotocore", "boto3", "moto"))
    print("\n" + ", ".join(f"{k}: {v}" for k, v in facts.items()))
    if args.json:
        args.json.write_text(json.dumps({"machine": facts, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

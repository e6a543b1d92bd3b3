"""Shared by the benchmark scripts: the Qwen2.5-VL-7B layout, machine facts, timing
records, cache dropping, peak-RSS probes and Markdown tables.

Standard library only at import time (the benchmarks' parent processes stay lean:
a child's ``ru_maxrss`` starts from its parent's high-water mark, see ``spawn``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
DEFAULT_STORE = HERE / "store"
# The real config.json + index (tests/data/models: verbatim public copies, with provenance).
SHARED_MODEL = HERE.parent / "tests" / "data" / "models" / "Qwen2.5-VL-7B-Instruct_qwen2_5_vl"

# The Qwen2.5-VL-7B-Instruct config fields the layout depends on (used when the
# shared copy of config.json is not on this machine).
QWEN25_VL_7B_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}
QWEN25_VL_7B_TOTAL_SIZE = 16_584_333_312
QWEN25_VL_7B_TENSORS = 729

# --------------------------------------------------------------------------- the layout


def qwen2_5_vl_tensors(config: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of a Qwen2.5-VL checkpoint, derived from its config."""
    c = config
    h = int(c["hidden_size"])
    inter = int(c["intermediate_size"])
    heads = int(c["num_attention_heads"])
    kv = int(c["num_key_value_heads"])
    vocab = int(c["vocab_size"])
    hd = h // heads
    v = c["vision_config"]
    assert isinstance(v, dict)
    vh, vi, vo = v["hidden_size"], v["intermediate_size"], v["out_hidden_size"]
    merged = vh * v["spatial_merge_size"] ** 2
    dt = "BF16"
    t: dict[str, tuple[str, tuple[int, ...]]] = {}
    t["model.embed_tokens.weight"] = (dt, (vocab, h))
    for i in range(int(c["num_hidden_layers"])):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = (dt, (h,))
        t[p + "post_attention_layernorm.weight"] = (dt, (h,))
        t[p + "self_attn.q_proj.weight"] = (dt, (heads * hd, h))
        t[p + "self_attn.q_proj.bias"] = (dt, (heads * hd,))
        t[p + "self_attn.k_proj.weight"] = (dt, (kv * hd, h))
        t[p + "self_attn.k_proj.bias"] = (dt, (kv * hd,))
        t[p + "self_attn.v_proj.weight"] = (dt, (kv * hd, h))
        t[p + "self_attn.v_proj.bias"] = (dt, (kv * hd,))
        t[p + "self_attn.o_proj.weight"] = (dt, (h, heads * hd))
        t[p + "mlp.gate_proj.weight"] = (dt, (inter, h))
        t[p + "mlp.up_proj.weight"] = (dt, (inter, h))
        t[p + "mlp.down_proj.weight"] = (dt, (h, inter))
    t["model.norm.weight"] = (dt, (h,))
    if not c.get("tie_word_embeddings", False):
        t["lm_head.weight"] = (dt, (vocab, h))
    t["visual.patch_embed.proj.weight"] = (
        dt,
        (vh, v["in_chans"], v["temporal_patch_size"], v["patch_size"], v["patch_size"]),
    )
    for i in range(v["depth"]):
        p = f"visual.blocks.{i}."
        t[p + "norm1.weight"] = (dt, (vh,))
        t[p + "norm2.weight"] = (dt, (vh,))
        t[p + "attn.qkv.weight"] = (dt, (3 * vh, vh))
        t[p + "attn.qkv.bias"] = (dt, (3 * vh,))
        t[p + "attn.proj.weight"] = (dt, (vh, vh))
        t[p + "attn.proj.bias"] = (dt, (vh,))
        t[p + "mlp.gate_proj.weight"] = (dt, (vi, vh))
        t[p + "mlp.gate_proj.bias"] = (dt, (vi,))
        t[p + "mlp.up_proj.weight"] = (dt, (vi, vh))
        t[p + "mlp.up_proj.bias"] = (dt, (vi,))
        t[p + "mlp.down_proj.weight"] = (dt, (vh, vi))
        t[p + "mlp.down_proj.bias"] = (dt, (vh,))
    t["visual.merger.ln_q.weight"] = (dt, (vh,))
    t["visual.merger.mlp.0.weight"] = (dt, (merged, merged))
    t["visual.merger.mlp.0.bias"] = (dt, (merged,))
    t["visual.merger.mlp.2.weight"] = (dt, (vo, merged))
    t["visual.merger.mlp.2.bias"] = (dt, (vo,))
    return t


def layout() -> tuple[
    dict[str, object], dict[str, tuple[str, tuple[int, ...]]], dict[str, str] | None, str
]:
    """(config, tensors, weight_map or None, where the shapes came from)."""
    config: dict[str, Any] = QWEN25_VL_7B_CONFIG
    weight_map = None
    if (SHARED_MODEL / "config.json").is_file():
        config = json.loads((SHARED_MODEL / "config.json").read_text())
    index = SHARED_MODEL / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
    derived = qwen2_5_vl_tensors(config)
    tensors, source = derived, "derived from config.json in benchmarks/_common.py"
    try:  # the manifest when it builds Qwen2.5-VL; the derivation otherwise
        from pyaudit.manifest import build_manifest

        m = build_manifest(config)
        from_manifest = {
            n: (e.dtype, tuple(e.shape)) for n, e in m.tensors.items() if e.shape is not None
        }
        if len(from_manifest) == len(m.tensors):
            tensors = from_manifest
            differ = sum(derived.get(k) != v for k, v in from_manifest.items())
            source = "pyaudit.manifest.build_manifest" + (
                f" (DIFFERS from the derivation in _common.py on {differ} tensors)"
                if differ or len(derived) != len(from_manifest)
                else " (agrees with the derivation in _common.py)"
            )
    except Exception as e:
        source += f" (manifest not usable: {type(e).__name__})"
    from pyaudit.testing.sparse import tensor_nbytes

    total = sum(tensor_nbytes(d, s) for d, s in tensors.values())
    if len(tensors) != QWEN25_VL_7B_TENSORS or total != QWEN25_VL_7B_TOTAL_SIZE:
        raise SystemExit(
            f"layout: {len(tensors)} tensors, {total} bytes; expected "
            f"{QWEN25_VL_7B_TENSORS} tensors, {QWEN25_VL_7B_TOTAL_SIZE} bytes"
        )
    if weight_map is not None and set(weight_map) != set(tensors):
        raise SystemExit("layout: the tensor names differ from the shared index's weight_map")
    return config, tensors, weight_map, source


def du_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (what ``du`` says)."""
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
    return total


# --------------------------------------------------------------------------- measurements


@dataclass
class Measured:
    """One reader's (or command's) timed passes over the same input."""

    key: str
    label: str
    wall: list[float] = field(default_factory=list)  # seconds per pass
    cpu: list[float] = field(default_factory=list)  # CPU seconds per pass, all threads
    rss_kb: int | None = None  # peak RSS (of a fresh process doing the job once)
    base_kb: int | None = None  # its RSS after imports, before the job

    def wall_s(self, stat: str) -> float:
        return statistics.median(self.wall) if stat == "median" else min(self.wall)

    def cpu_s(self) -> float:
        return min(self.cpu)


def cpu_seconds() -> float:
    """CPU seconds of this process so far (user + system, all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def drop_caches() -> str | None:
    """Drop the page cache (and dentries, inodes); None on success, else why not."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def vm_kb(name: str) -> int:
    """A field of /proc/self/status in KB (VmHWM: this process's peak RSS since exec).

    Not ru_maxrss: on Linux a child's ru_maxrss keeps the high-water mark of the
    parent's image it was forked from, so it would report the parent's RSS.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Run:
    """One child process, waited for: its exit status, wall and CPU seconds, peak RSS."""

    returncode: int
    wall: float
    cpu: float
    maxrss_kb: int


PYCACHE = Path(__file__).resolve().parent / "store" / "pycache"


def child_env() -> dict[str, str]:
    """The environment every timed child gets: this one, with bytecode caching on.

    An installed package has its ``.pyc`` files (pip compiles them); an editable install
    under PYTHONDONTWRITEBYTECODE=1 (as on the benchmark machine) compiles every module
    of pyaudit on every run, ~40 ms that no user pays. Caches go to benchmarks/store/
    pycache (PYTHONPYCACHEPREFIX), written by the untimed first run of each tool; the
    peers (safetensors, numpy) are installed with theirs already.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))
    return env


def spawn(
    cmd: Sequence[str],
    stdout: IO[Any] | int | None = subprocess.DEVNULL,
    stderr: IO[Any] | int | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """Run ``cmd`` to the end; its own rusage (``os.wait4``), not the sum of all children.

    ``maxrss_kb`` is the child's peak RSS, floored at this (parent) process's peak RSS
    at the time of the spawn: Linux carries the parent's high-water mark into the
    child through fork/exec. Keep the parent lean (``vm_kb("VmHWM")`` says how lean).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=stdout, stderr=stderr, env=env or child_env())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


# --------------------------------------------------------------------------- the report


def machine(dists: Sequence[str] = ("safetensors", "orjson", "numpy", "pyaudit")) -> dict[str, str]:
    """Date, CPU, kernel, Python, package versions and the load average, now."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in dists:
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = "-"
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024**2:.0f} GB"
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "load": load(),
    }


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def wait_for_quiet(limit: float, max_wait: float, quiet: bool = False) -> str:
    """Wait (up to ``max_wait`` s) until the 1-minute load average is below ``limit``;
    returns the load average then. The machine is shared: this only lowers the odds."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        if not quiet:
            print(f"(load {load()}: waiting for < {limit})", flush=True)
        time.sleep(15)
    return load()


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns left-aligned, the rest right."""
    lines = ["| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join(["---"] * left + ["---:"] * (len(head) - left)) + "|")
    lines.extend("| " + " | ".join(r) + " |" for r in rows)
    return "\n".join(lines)


def rotated(names: Sequence[str], r: int) -> list[str]:
    """``names`` rotated by ``r`` (round r of an interleaved measurement)."""
    k = r % len(names) if names else 0
    return list(names[k:]) + list(names[:k])

"""What a local sweep of safetensors checkpoints imports: not the transformers oracle's
process machinery (subprocess, tempfile), not hashlib (OpenSSL), not the pickle-era
formats' readers. Each is imported where it is needed (a worker started, a config
without a digest, a checkpoint with .bin/DCP/ZeRO files), and each cost every scan
milliseconds of its fixed start (the one-checkpoint run: ~90 ms in all)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

STORE = Path(__file__).resolve().parent.parent / "examples" / "store"

NOT_IMPORTED = (
    "subprocess",
    "tempfile",
    "hashlib",
    "pyaudit.auditing.pickled",
    "pyaudit.formats.dcp",
    "pyaudit.formats.deepspeed",
    "pyaudit.formats.torch_pickle",
)

PROBE = """
import io, contextlib, json, sys
from pyaudit.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    status = main(["scan", "--json", sys.argv[1]])
doc = json.loads(out.getvalue())
print(json.dumps({"status": status, "checkpoints": len(doc["checkpoints"]),
                  "modules": sorted(sys.modules)}))
"""


def test_a_safetensors_sweep_imports_only_what_it_uses() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(STORE)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    seen = json.loads(done.stdout)
    assert seen["checkpoints"] >= 5  # the demo store: audited, not skipped
    modules = set(seen["modules"])
    assert "pyaudit.auditing.pipeline" in modules and "pyaudit.oracle" in modules
    assert modules.isdisjoint(NOT_IMPORTED), sorted(modules & set(NOT_IMPORTED))

"""How the `pyaudit` command runs and ends (`pyaudit.cli.run`): the collector at a slower
pace; its output out, its atexit functions run, the interpreter's teardown skipped; a thread
still running waited for; a reader that left before the last flush no error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

STORE = Path(__file__).resolve().parent.parent / "examples" / "store"
CHECKPOINT = STORE / "vision-frozen"  # one failing checkpoint: a --json document < 8 KiB

# A script that leaves two marks: one from an atexit function, one from an object freed
# by the interpreter's teardown (__main__'s globals cleared), then ends as ENDING says.
PROBE = textwrap.dedent(
    """
    import atexit, sys, threading, time
    marks = sys.argv[1]

    class FreedAtTeardown:
        def __del__(self, open=open, marks=marks):  # (builtins may be gone by then)
            open(marks + "/teardown", "w").close()

    kept = FreedAtTeardown()
    import gc
    def at_exit():
        with open(marks + "/atexit", "w") as f:
            f.write(",".join(map(str, gc.get_threshold()[:2])))
    atexit.register(at_exit)
    if sys.argv[2] == "thread":
        def late():
            time.sleep(0.3)
            open(marks + "/thread", "w").close()
        threading.Thread(target=late).start()
    sys.argv = ["pyaudit", "scan", "--json", sys.argv[3]]
    from pyaudit.cli import main, run
    if ENDING == "main":
        raise SystemExit(main())
    run()
    """
)


def _probe(
    tmp_path: Path, ending: str, thread: bool = False
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    marks = tmp_path / ending
    marks.mkdir()
    script = PROBE.replace("ENDING", repr(ending))
    done = subprocess.run(
        [sys.executable, "-c", script, str(marks), "thread" if thread else "-", str(CHECKPOINT)],
        capture_output=True, text=True, timeout=120,
    )
    return done, {p.name for p in marks.iterdir()}


def test_run_ends_as_main_would_without_the_teardown(tmp_path: Path) -> None:
    normal, normal_marks = _probe(tmp_path, "main")
    fast, fast_marks = _probe(tmp_path, "run")
    assert normal.stderr == "" and fast.stderr == ""
    assert normal.returncode == 1  # (the vision tower dropped: a failing checkpoint)
    assert fast.returncode == normal.returncode
    # The whole document out, and the same one (its timing aside).
    assert fast.stdout.endswith("}\n") and len(fast.stdout) > 500
    strip = lambda s: [line for line in s.splitlines() if '"seconds"' not in line]  # noqa: E731
    assert strip(fast.stdout) == strip(normal.stdout)
    # The probe tells the two endings apart: a normal exit frees __main__'s objects.
    assert normal_marks == {"atexit", "teardown"}
    assert fast_marks == {"atexit"}
    # The collector's pace (young and middle generations): run()'s, where main() leaves the
    # interpreter's default.
    assert (tmp_path / "run" / "atexit").read_text() == "10000,100"
    default = subprocess.run(
        [sys.executable, "-c", "import gc; print(*gc.get_threshold()[:2], sep=',')"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert (tmp_path / "main" / "atexit").read_text() == default != "10000,100"


def test_a_thread_still_running_is_waited_for(tmp_path: Path) -> None:
    done, marks = _probe(tmp_path, "run", thread=True)
    assert done.returncode == 1 and done.stderr == ""
    assert "thread" in marks and "atexit" in marks


@pytest.mark.parametrize("buffered", [True, False])
def test_a_reader_gone_is_no_error(buffered: bool) -> None:
    # Buffered, the document (< 8 KiB) waits in stdout's buffer until run() flushes it, into
    # a pipe whose reader has closed: an ordinary exit says "Exception ignored ...
    # BrokenPipeError" and ends with status 120. Unbuffered, the scan's own write fails.
    # Either way, as main() has always taken it: the reader left, status 0, nothing said.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pyaudit", "scan", "--json", str(CHECKPOINT)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, env=env,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 0

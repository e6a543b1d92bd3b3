"""pyaudit.fetcher's wire: frames written whole and read in chunks of any size give back the
messages written, in order; a frame longer than the bound is refused, never allocated.
(The fetching process itself is tested with a real S3 fake in test_remote.py.)"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyaudit.fetcher import MAX_FRAME, Frames, frame

scalars = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=50),
                    st.binary(max_size=3000), st.none())
messages = st.lists(st.tuples(st.sampled_from("rehtas"), scalars, scalars), max_size=20)


def _reader(data: bytes, cuts: list[int]):  # type: ignore[no-untyped-def]
    """read(n) over ``data``, giving at most the next cut's number of bytes each time."""
    at = [0]
    sizes = iter(cuts)

    def read(n: int) -> bytes:
        size = min(n, next(sizes, n))
        chunk = data[at[0] : at[0] + max(1, size)]
        at[0] += len(chunk)
        return chunk

    return read


@given(messages, st.lists(st.integers(1, 5000), max_size=50))
def test_frames_read_in_any_chunks_give_the_messages_written(
    written: list[tuple[object, ...]], cuts: list[int]
) -> None:
    data = b"".join(frame(m) for m in written)
    assert list(Frames(_reader(data, cuts))) == written


@given(messages, st.integers(1, 3))
def test_a_cut_frame_is_not_a_message(written: list[tuple[object, ...]], short: int) -> None:
    """A stream that ends inside a frame gives the whole frames before it, then ends."""
    data = b"".join(frame(m) for m in written) + frame(("r", 1, b"tail"))
    assert list(Frames(_reader(data[:-short], []))) == written


def test_a_frame_over_the_bound_is_refused_before_it_is_read() -> None:
    asked: list[int] = []
    head = struct.pack("<I", MAX_FRAME + 1)

    def read(n: int) -> bytes:
        asked.append(n)
        return head if len(asked) == 1 else pytest.fail("read past the length")

    with pytest.raises(ValueError, match="a frame of"):
        list(Frames(read))


@pytest.mark.parametrize("url", ["nope://x/y", "s3://bucket/key"])
def test_the_child_ends_without_a_traceback(url: str) -> None:
    """A child whose client cannot be made (a URL no filesystem serves, or s3:// without
    pyaudit[remote]) ends with status 1 and says nothing (the scan warns, and sends its
    requests itself); one configured and then closed says its counts and ends with 0; one
    closed before it is configured ends with 0 and says nothing. None leaves a byte on
    stderr."""
    import subprocess
    import sys

    from pyaudit.s3direct import applies

    # (an s3:// client is made where pyaudit[remote] is installed: botocore, fsspec, s3fs)
    served = applies(url, {})
    for stdin, status, said in (
        (frame(("s", 8, "{}")), 0 if served else 1, ["t"] if served else []),
        (frame(("x",)), 0, []),
        (b"", 0, []),
    ):
        done = subprocess.run([sys.executable, "-m", "pyaudit.fetcher", url], input=stdin,
                              capture_output=True, timeout=60)
        assert (done.returncode, done.stderr) == (status, b""), (stdin, done)
        answers = list(Frames(_reader(done.stdout, [])))
        assert [a[0] for a in answers] == said, answers
        if said:
            assert answers[0][1]["requests"] == 0


def test_wait_gives_the_exit_status_or_times_out() -> None:
    """fetcher._wait (the scan's wait for its child's end, by pidfd where there is one):
    the status of a child that ends later, of one already ended and reaped, and
    TimeoutExpired for one that outlives the timeout (then killed, and its status read)."""
    import subprocess
    import sys

    from pyaudit.fetcher import _wait

    later = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(3)"])
    assert _wait(later, 30) == 3
    assert _wait(later, 30) == 3  # (reaped: the status kept)
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(subprocess.TimeoutExpired):
        _wait(slow, 0.2)
    slow.kill()
    assert _wait(slow, 30) == -9

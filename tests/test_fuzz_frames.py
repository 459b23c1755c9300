"""Fuzzing the frame reader through a real pipe fed by a writer thread.

``test_core_frames.py`` already checks both cores against a model on streams
built from a few pieces, written chunk by chunk from the test's own thread
(so never more than the 64 KiB a pipe holds). Here the bytes are arbitrary,
the streams reach a megabyte (the writer blocks on a full pipe while the
reader drains it), the split points and pauses between writes are arbitrary,
and the writer may stall without closing. For every stream:

* ``read_frame`` never waits past its deadline (a stalled writer gives
  ``DeadlineExceeded`` within the deadline plus a small slack);
* ``buffered`` never exceeds ``max_frame_bytes`` + 64 KiB after any call;
* the frames and the way the stream ends match the model, and the compiled
  core and the twin give the same frames on the same schedule.
"""

from __future__ import annotations

import os
import threading
import time
import types
from typing import Any, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_client._core_errors import DeadlineExceeded, FrameTooLargeError, StreamEOF

from _helpers import both_cores

KiB = 1024
READ_CHUNK = 64 * KiB
SLACK = 0.5  # how late a deadline may fire on a loaded 2-core CI machine

FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def model(stream: bytes, limit: int) -> Tuple[List[bytes], str]:
    """The frames of ``stream`` and how it ends ("eof" or "too_large")."""
    frames: List[bytes] = []
    pos = 0
    while True:
        end = stream.find(b"\n", pos)
        if end < 0:
            return frames, ("too_large" if len(stream) - pos > limit else "eof")
        if end - pos > limit:
            return frames, "too_large"
        line = stream[pos:end]
        frames.append(line[:-1] if line.endswith(b"\r") else line)
        pos = end + 1


class Writer(threading.Thread):
    """Writes ``chunks`` to a blocking pipe end, pausing briefly after each chunk
    flagged in ``pauses``; then closes it, or, if ``stall``, sets ``done`` and keeps
    it open (silent) until ``release`` is set."""

    def __init__(self, fd: int, chunks: List[bytes], pauses: List[bool], stall: bool) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.chunks = chunks
        self.pauses = pauses
        self.stall = stall
        self.done = threading.Event()
        self.release = threading.Event()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            for chunk, pause in zip(self.chunks, self.pauses):
                view = memoryview(chunk)
                while view:
                    n = os.write(self.fd, view)
                    view = view[n:]
                if pause:
                    time.sleep(0.0005)
        except BrokenPipeError:
            pass  # the reader gave up (an oversized frame): expected
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc
        finally:
            self.done.set()
            if self.stall:
                self.release.wait(30)
            os.close(self.fd)


def read_all(
    core: types.ModuleType, chunks: List[bytes], pauses: List[bool], limit: int, stall: bool
) -> Tuple[List[bytes], str]:
    """Run one schedule; returns (frames, ending): "eof", "too_large" or, for a
    writer that stalls instead of closing, "stalled". Checks the deadline and the
    buffer bound after every call."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    writer = Writer(w, chunks, pauses, stall)
    writer.start()
    frames: List[bytes] = []
    # Short deadlines against a stalling writer, so that the stall ends the test.
    wait = 0.1 if stall else 10.0
    try:
        reader = core.FrameReader(r, limit)
        while True:
            all_written = writer.done.is_set()
            t0 = time.monotonic()
            try:
                frames.append(reader.read_frame(core.monotonic() + wait))
            except StreamEOF:
                return frames, "eof"
            except FrameTooLargeError as exc:
                assert exc.limit == limit and exc.seen > limit
                return frames, "too_large"
            except DeadlineExceeded:
                waited = time.monotonic() - t0
                assert wait <= waited + 0.001 and waited < wait + SLACK, waited
                if stall and all_written:  # nothing more will come: the stall
                    return frames, "stalled"
                if not stall:  # pragma: no cover - 10 s of silence from a live writer
                    raise
            finally:
                assert reader.buffered <= limit + READ_CHUNK, (reader.buffered, limit)
    finally:
        writer.release.set()
        os.close(r)
        writer.join(30)
        assert writer.error is None, writer.error


# --- strategies ----------------------------------------------------------------------

# A stream: segments of arbitrary bytes, some repeated into long runs (so lines
# cross the read size and the pipe's capacity), joined by \n or \r\n or nothing.
segment = st.tuples(
    st.binary(max_size=40),
    st.sampled_from([1, 1, 1, 2, 100, 3000, 40_000]),
    st.sampled_from([b"\n", b"\r\n", b"", b"\r", b"\n\n"]),
).map(lambda t: t[0] * t[1] + t[2])
streams = st.lists(segment, max_size=25).map(b"".join).filter(lambda s: len(s) <= 1_200_000)
limits = st.sampled_from([1, 7, 100, 4096, READ_CHUNK - 1, READ_CHUNK, READ_CHUNK + 1, 200_000, 1 << 20]) | st.integers(1, 300_000)


@st.composite
def schedules(draw: Any) -> Tuple[bytes, List[bytes], List[bool], int]:
    stream = draw(streams)
    n = len(stream)
    cuts = sorted(set(draw(st.lists(st.integers(0, max(n, 0)), max_size=20))) | {0, n})
    chunks = [stream[a:b] for a, b in zip(cuts, cuts[1:])] or [b""]
    pauses = draw(st.lists(st.booleans(), min_size=len(chunks), max_size=len(chunks)))
    return stream, chunks, pauses, draw(limits)


# --- properties -----------------------------------------------------------------------


@FUZZ
@given(schedule=schedules(), stall=st.booleans())
def test_pipe_reader_matches_model_and_stays_bounded(core: types.ModuleType, schedule: Any, stall: bool) -> None:
    stream, chunks, pauses, limit = schedule
    frames, ending = read_all(core, chunks, pauses, limit, stall)
    want_frames, want_end = model(stream, limit)
    if stall and want_end == "eof":
        want_end = "stalled"
    assert ending == want_end
    assert frames == want_frames


@pytest.mark.c_extension
@FUZZ
@given(schedule=schedules(), stall=st.booleans())
def test_cores_give_the_same_frames_through_a_pipe(schedule: Any, stall: bool) -> None:
    _, chunks, pauses, limit = schedule
    py, c = both_cores()
    assert read_all(py, chunks, pauses, limit, stall) == read_all(c, chunks, pauses, limit, stall)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    prefix=st.binary(max_size=300).filter(lambda b: b"\n" not in b[-1:]),
    limit=limits,
    deadline=st.sampled_from([0.0, 0.01, 0.05, 0.2]),
)
def test_stalled_writer_never_holds_the_reader_past_its_deadline(
    core: types.ModuleType, prefix: bytes, limit: int, deadline: float
) -> None:
    """The writer sends some bytes (maybe whole frames, maybe half of one) and then
    goes silent without closing. Every frame that is complete comes out; then the
    reader gives up at its deadline, late by at most SLACK, holding no more than
    the limit plus one read."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        os.write(w, prefix)
        reader = core.FrameReader(r, limit)
        want, end = model(prefix, limit)
        got: List[bytes] = []
        while True:
            t0 = time.monotonic()
            try:
                got.append(reader.read_frame(core.monotonic() + deadline))
            except DeadlineExceeded:
                assert time.monotonic() - t0 < deadline + SLACK
                assert end == "eof"
                break
            except FrameTooLargeError:
                assert end == "too_large"
                break
            finally:
                assert reader.buffered <= limit + READ_CHUNK
        assert got == want
    finally:
        os.close(r)
        os.close(w)

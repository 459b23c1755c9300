"""The core's request primitives, over both cores: ``FrameReader.exchange``,
``idle_state`` and ``exchange_if_idle`` (the client's warm path), and the
compiled reader's adaptive spin, which must never bend a deadline or a frame.
"""

from __future__ import annotations

import os
import shutil
import time
import types
from typing import Any

import pytest

from plugin_client._core_errors import DeadlineExceeded, PipeClosed, ProcessExited, StreamEOF
from plugin_client._process import IDLE_EXITED, IDLE_OK, IDLE_OUTPUT

from _helpers import make_pipe, spawner, two_cpus, wait_until  # noqa: F401  (fixtures)

CAT = shutil.which("cat") or "/bin/cat"
SH = shutil.which("sh") or "/bin/sh"

# Reads one line, leaves a descendant holding stdout (so no EOF can come),
# writes what $1 says (nothing, half a frame, or a whole one), then exits.
_EXIT_KEEPING_STDOUT = 'read line; sleep 30 & printf "$1"; exit 3'


def test_idle_state_values_are_the_process_constants() -> None:
    assert (IDLE_OK, IDLE_EXITED, IDLE_OUTPUT) == (0, 1, 2)


def test_exchange_round_trips_with_cat(core: types.ModuleType, spawner: Any) -> None:
    child = spawner(core, [CAT])
    reader = core.FrameReader(child.stdout_fd)
    for i in range(200):
        line = b'{"id":%d}\n' % i
        assert reader.exchange(child.stdin_fd, line, core.monotonic() + 5) == line[:-1]
    assert reader.buffered == 0


def test_exchange_deadline_on_a_silent_peer(core: types.ModuleType, make_pipe: Any) -> None:
    to_peer, from_peer = make_pipe(), make_pipe()
    os.set_blocking(from_peer.r, False)
    reader = core.FrameReader(from_peer.r)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        reader.exchange(to_peer.w, b"ping\n", core.monotonic() + 0.05)
    assert 0.04 <= time.monotonic() - start < 5
    assert os.read(to_peer.r, 100) == b"ping\n"  # the request went out first


def test_exchange_reports_a_closed_stdin_and_eof(core: types.ModuleType, make_pipe: Any) -> None:
    to_peer, from_peer = make_pipe(), make_pipe()
    reader = core.FrameReader(from_peer.r)
    to_peer.close_r()
    with pytest.raises(PipeClosed):
        reader.exchange(to_peer.w, b"ping\n", core.monotonic() + 5)
    other = make_pipe()
    from_peer.close_w()
    with pytest.raises(StreamEOF):
        reader.exchange(other.w, b"ping\n", core.monotonic() + 5)


def test_idle_state(core: types.ModuleType, make_pipe: Any) -> None:
    p = make_pipe()
    reader = core.FrameReader(p.r)
    assert reader.idle_state() == 0
    os.write(p.w, b"stray")
    assert reader.idle_state() == 2  # readable: output nobody asked for
    assert reader.idle_state(-1) == 2
    p.close_w()
    assert reader.idle_state() == 2  # data and a hang-up: the output wins
    q = make_pipe()
    quiet = core.FrameReader(q.r)
    q.close_w()
    assert quiet.idle_state() == 1  # hung up, nothing to read: it exited


def test_idle_state_counts_buffered_bytes(core: types.ModuleType, make_pipe: Any) -> None:
    p = make_pipe()
    reader = core.FrameReader(p.r)
    reader.feed(b"half a fra")
    assert reader.idle_state() == 2


def test_idle_state_sees_the_exit_on_the_pidfd(core: types.ModuleType, spawner: Any) -> None:
    # The pidfd turns readable at the exit, whoever else may hold the stdout.
    child = spawner(core, [CAT])
    if child.pidfd < 0:
        pytest.skip("no pidfd on this kernel")
    reader = core.FrameReader(child.stdout_fd)
    assert reader.idle_state(child.pidfd) == 0
    child.close_stdin()
    assert child.wait(5, reap=False) == 0
    assert reader.idle_state(child.pidfd) == 1


def test_exchange_if_idle_writes_nothing_when_not_idle(core: types.ModuleType, make_pipe: Any) -> None:
    to_peer, from_peer = make_pipe(), make_pipe()
    os.set_blocking(to_peer.r, False)
    reader = core.FrameReader(from_peer.r)
    os.write(from_peer.w, b"stray line\n")
    assert reader.exchange_if_idle(to_peer.w, b"ping\n", core.monotonic() + 5) is None
    with pytest.raises(BlockingIOError):
        os.read(to_peer.r, 100)  # nothing was sent
    assert reader.read_frame(core.monotonic() + 5) == b"stray line"
    assert reader.idle_state() == 0
    from_peer.close_w()
    assert reader.exchange_if_idle(to_peer.w, b"ping\n", core.monotonic() + 5) is None  # hung up
    with pytest.raises(BlockingIOError):
        os.read(to_peer.r, 100)


def test_exchange_if_idle_with_cat(core: types.ModuleType, spawner: Any) -> None:
    child = spawner(core, [CAT])
    reader = core.FrameReader(child.stdout_fd)
    for i in range(100):
        line = b"line %d\n" % i
        assert reader.exchange_if_idle(child.stdin_fd, line, core.monotonic() + 5, child.pidfd) == line[:-1]
    child.close_stdin()
    child.wait(5, reap=False)
    assert reader.exchange_if_idle(child.stdin_fd, b"x\n", core.monotonic() + 5, child.pidfd) is None


def test_request_is_exchange_if_idle_on_the_childs_own_fds(core: types.ModuleType, spawner: Any) -> None:
    child = spawner(core, [CAT])
    reader = core.FrameReader(child.stdout_fd, exit_fd=child.pidfd)
    for i in range(100):
        line = b"line %d\n" % i
        assert reader.request(child, line, core.monotonic() + 5) == line[:-1]
    os.write(child.stdin_fd, b"stray\n")  # behind the reader's back: output nobody asked for
    assert wait_until(lambda: reader.idle_state(child.pidfd) == IDLE_OUTPUT, 5)
    assert reader.request(child, b"x\n", core.monotonic() + 5) is None  # nothing written
    assert reader.read_frame(core.monotonic() + 5) == b"stray"
    child.close_stdin()
    child.wait(5, reap=False)
    assert reader.request(child, b"x\n", core.monotonic() + 5) is None  # exited
    with pytest.raises(TypeError):
        reader.request(child.pidfd, b"x\n", core.monotonic() + 5)


def test_spinning_reader_keeps_frames_and_deadlines(core: types.ModuleType, spawner: Any) -> None:
    """Quick replies teach the compiled reader to spin; it must still return
    every frame whole and raise DeadlineExceeded on time once the peer is silent."""
    child = spawner(core, [CAT])
    reader = core.FrameReader(child.stdout_fd)
    for i in range(2000):
        line = b"%d %s\n" % (i, b"x" * (i % 300))
        assert reader.exchange(child.stdin_fd, line, core.monotonic() + 5) == line[:-1]
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        reader.read_frame(core.monotonic() + 0.03)
    assert 0.025 <= time.monotonic() - start < 5
    # and it goes on working after a wait it did not spin through
    assert reader.exchange(child.stdin_fd, b"again\n", core.monotonic() + 5) == b"again"


def test_a_deadline_already_past_still_reads_what_is_there(core: types.ModuleType, spawner: Any) -> None:
    child = spawner(core, [CAT])
    reader = core.FrameReader(child.stdout_fd)
    core.write_all(child.stdin_fd, b"ready\n", core.monotonic() + 5)
    deadline = time.monotonic() + 5
    while reader.idle_state() != 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert reader.exchange(child.stdin_fd, b"next\n", core.monotonic() - 1) == b"ready"


def test_spin_can_be_turned_off_for_benchmarks(core: types.ModuleType, spawner: Any) -> None:
    limit = getattr(core, "_spin_limit", None)
    if limit is None:
        pytest.skip("the twin never spins")
    old = limit(0.0)
    try:
        assert limit() == 0.0
        child = spawner(core, [CAT])
        reader = core.FrameReader(child.stdout_fd)
        for i in range(100):
            assert reader.exchange(child.stdin_fd, b"%d\n" % i, core.monotonic() + 5) == b"%d" % i
        with pytest.raises(ValueError):
            limit(-1.0)
    finally:
        limit(old)
    assert limit() == old > 0


@pytest.mark.parametrize("wrote, pending", [("", 0), ("half a fr", 9)])
def test_exit_while_a_descendant_holds_stdout(core: types.ModuleType, spawner: Any, wrote: str, pending: int) -> None:
    """No EOF can come (the background sleep holds stdout): a reader that knows the
    pidfd reports the exit well before the deadline, with the pending bytes."""
    child = spawner(core, [SH, "-c", _EXIT_KEEPING_STDOUT, "sh", wrote])
    if child.pidfd < 0:
        pytest.skip("no pidfd on this kernel")
    reader = core.FrameReader(child.stdout_fd, exit_fd=child.pidfd)
    assert reader.exit_fd == child.pidfd
    start = time.monotonic()
    with pytest.raises(ProcessExited) as info:
        reader.exchange(child.stdin_fd, b"go\n", core.monotonic() + 20)
    assert time.monotonic() - start < 5
    assert isinstance(info.value, StreamEOF) and info.value.pending == pending
    assert child.wait(5, reap=False) == 3
    child.signal_group(9)  # the sleep (the group outlives its unreaped leader)


def test_a_reply_written_before_the_exit_is_kept(core: types.ModuleType, spawner: Any) -> None:
    child = spawner(core, [SH, "-c", _EXIT_KEEPING_STDOUT, "sh", "the reply\\n"])
    reader = core.FrameReader(child.stdout_fd, exit_fd=child.pidfd)
    assert reader.exchange(child.stdin_fd, b"go\n", core.monotonic() + 20) == b"the reply"
    assert child.wait(5, reap=False) == 3
    child.signal_group(9)


def test_without_exit_fd_only_the_deadline_ends_the_wait(core: types.ModuleType, spawner: Any) -> None:
    child = spawner(core, [SH, "-c", _EXIT_KEEPING_STDOUT, "sh", ""])
    reader = core.FrameReader(child.stdout_fd)
    assert reader.exit_fd == -1
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        reader.exchange(child.stdin_fd, b"go\n", core.monotonic() + 0.3)
    assert time.monotonic() - start >= 0.29
    child.signal_group(9)


def test_exit_fd_is_checked(core: types.ModuleType) -> None:
    with pytest.raises(ValueError):
        core.FrameReader(-1, exit_fd=-2)
    with pytest.raises(TypeError):
        core.FrameReader(-1, exit_fd="3")


def test_spin_ready_follows_the_spin_rules(core: types.ModuleType, make_pipe: Any, two_cpus: Any) -> None:
    """The asyncio client's spin: never on a reader's first wait; True at once
    for bytes that are there; False when nothing comes within the spin; after
    three spins in a row ran out, none for the next 64 waits (readable or not)."""
    pipe = make_pipe()
    os.set_blocking(pipe.r, False)
    reader = core.FrameReader(pipe.r)
    os.write(pipe.w, b"there\n")
    assert reader.spin_ready() is False  # the first wait never spins
    if getattr(core, "_spin_limit", None) is None:
        assert reader.spin_ready() is False  # the twin never spins
        return
    assert reader.spin_ready() is True
    assert reader.read_frame(core.monotonic() + 5) == b"there"
    for _ in range(3):
        start = time.monotonic()
        assert reader.spin_ready() is False
        assert time.monotonic() - start < 1  # 50 µs on a quiet machine
    os.write(pipe.w, b"late\n")
    assert [reader.spin_ready() for _ in range(64)] == [False] * 64
    assert reader.spin_ready() is True
    assert reader.read_frame(core.monotonic() + 5) == b"late"


def test_spin_ready_never_spins_past_its_deadline_nor_on_one_cpu(
    core: types.ModuleType, make_pipe: Any, two_cpus: Any
) -> None:
    limit = getattr(core, "_spin_limit", None)
    if limit is None:
        pytest.skip("the twin never spins")
    pipe = make_pipe()
    os.set_blocking(pipe.r, False)
    reader = core.FrameReader(pipe.r)
    assert reader.spin_ready() is False  # (the first wait)
    with pytest.raises(ValueError):
        reader.spin_ready(float("nan"))
    old = limit(2.0)  # a spin of up to 2 s: the deadline must end it
    try:
        start = time.monotonic()
        assert reader.spin_ready(core.monotonic() + 0.05) is False
        assert 0.04 <= time.monotonic() - start < 1
        os.write(pipe.w, b"x\n")
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        one = core.FrameReader(pipe.r)
        # On one CPU the plugin would be waiting for the spin to end: never.
        assert [one.spin_ready() for _ in range(70)] == [False] * 70
    finally:
        limit(old)

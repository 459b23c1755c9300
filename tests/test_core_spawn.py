"""``spawn``, ``Child`` and ``write_all`` over both cores, with real processes.

What the child sees is read from the host through ``/proc/<pid>``, after a
round trip through ``cat`` has proved the child has exec'd: no helper inside
the child can then disturb what is measured (its own directory fd, a libc
that installs handlers).
"""

from __future__ import annotations

import array
import errno
import fcntl
import gc
import importlib
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List, Union

import pytest

from plugin_client._core_errors import CoreError, DeadlineExceeded, PipeClosed, SpawnFailed

from _helpers import (  # noqa: F401  (fixtures)
    SRC_DIR,
    Spawner,
    is_dead,
    make_pipe,
    open_fds,
    proc_stat,
    proc_status,
    read_until_eof,
    roundtrip,
    spawner,
    wait_until,
    zombie_children,
)

@pytest.fixture(
    params=[
        pytest.param("python", id="py"),
        pytest.param("cython", id="c", marks=pytest.mark.c_extension),
        pytest.param("cython-fallback", id="c-fallback", marks=pytest.mark.c_extension),
    ],
)
def core(request: pytest.FixtureRequest) -> Iterator[types.ModuleType]:
    """``tests/conftest.py``'s ``core``, plus the compiled core's second spawn
    path: its ``vfork`` fallback for systems without ``closefrom_np``, forced
    through the private ``_force_spawn_fallback`` switch."""
    if request.param == "python":
        yield importlib.import_module("plugin_client._core_py")
        return
    module = importlib.import_module("plugin_client._core")
    if request.param == "cython":
        yield module
        return
    force = getattr(module, "_force_spawn_fallback", None)
    if force is None:
        pytest.skip("the compiled core has a single spawn path")
    force(True)
    try:
        yield module
    finally:
        force(False)


CAT = "/bin/cat"
SH = "/bin/sh"
TRUE = "/bin/true"
MiB = 1024 * 1024


def _import_core(core: types.ModuleType) -> str:
    """The line that imports ``core`` in a subprocess host, on the same spawn path."""
    line = f"import {core.__name__} as core"
    if core.spawn_method().startswith("vfork"):
        line += "; core._force_spawn_fallback(True)"
    return line


# --- what the child gets ----------------------------------------------------


def test_child_gets_exactly_env(core: types.ModuleType, spawner: Spawner) -> None:
    env: Dict[Union[str, bytes], Union[str, bytes]] = {"A": "1", "EMPTY": "", b"RAW": b"\xff\xfe\x80", "UNI": "\u00e9", b"PATH": "/nowhere"}
    child = spawner(core, [CAT], env)
    assert roundtrip(core, child) == b"ping"
    with open(f"/proc/{child.pid}/environ", "rb") as f:
        entries = f.read().split(b"\0")
    assert entries[-1] == b""
    assert sorted(entries[:-1]) == sorted(
        [b"A=1", b"EMPTY=", b"RAW=\xff\xfe\x80", b"UNI=\xc3\xa9", b"PATH=/nowhere"]
    )


def test_child_gets_empty_env(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [CAT], {})
    assert roundtrip(core, child) == b"ping"
    with open(f"/proc/{child.pid}/environ", "rb") as f:
        assert f.read() == b""


def test_argv_passed_verbatim(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [SH, "-c", 'printf "%s|" "$@"', "sh", "a b", b"\xff\xfe", ""], {})
    assert read_until_eof(child.stdout_fd) == b"a b|\xff\xfe||"
    assert child.wait(10) == 0


def test_child_has_only_stdio_fds(core: types.ModuleType, spawner: Spawner, make_pipe: Any) -> None:
    """Inheritable fds of every kind stay in the host."""
    held: List[int] = []
    sockets: List[socket.socket] = []
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        held.append(devnull)
        os.set_inheritable(devnull, True)
        high = os.dup2(devnull, 123, inheritable=True)
        held.append(high)
        pipe = make_pipe()
        os.set_inheritable(pipe.r, True)
        os.set_inheritable(pipe.w, True)
        a, b = socket.socketpair()
        sockets += [a, b]
        a.set_inheritable(True)
        listener = socket.socket()
        sockets.append(listener)
        listener.set_inheritable(True)
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        child = spawner(core, [CAT], {})
        assert roundtrip(core, child) == b"ping"
        assert open_fds(child.pid) == {0, 1, 2}
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{child.pid}/fd/{fd}").startswith("pipe:")
    finally:
        for fd in held:
            os.close(fd)
        for s in sockets:
            s.close()


def test_parent_ends_are_nonblocking_and_cloexec(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [CAT], {})
    fds = [child.stdin_fd, child.stdout_fd, child.stderr_fd]
    assert len(set(fds)) == 3 and min(fds) > 2
    for fd in fds:
        assert not os.get_blocking(fd)
        assert not os.get_inheritable(fd)
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)
    if child.pidfd >= 0:
        assert os.readlink(f"/proc/self/fd/{child.pidfd}") == "anon_inode:[pidfd]"
        assert not os.get_inheritable(child.pidfd)
    else:
        assert child.pidfd == -1


def _fd_flags(pid: int, fd: int) -> int:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError(f"no flags in /proc/{pid}/fdinfo/{fd}")  # pragma: no cover


def _assert_wired(child: Any) -> None:
    """The child's fds 0, 1 and 2 are the pipes whose other ends the host holds
    as its stdin, stdout and stderr (a pipe's two ends share one inode), and
    blocking, as a plugin expects its stdio."""
    for fd, host_end in ((0, child.stdin_fd), (1, child.stdout_fd), (2, child.stderr_fd)):
        assert os.stat(f"/proc/{child.pid}/fd/{fd}").st_ino == os.fstat(host_end).st_ino, fd
        assert not _fd_flags(child.pid, fd) & os.O_NONBLOCK, fd


def test_child_stdio_is_its_own_blocking_pipes(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [CAT], {})
    assert roundtrip(core, child) == b"ping"
    _assert_wired(child)


def test_spawns_whose_pipes_get_other_numbers_are_wired_right(core: types.ModuleType, spawner: Spawner) -> None:
    """The compiled core keeps the last spawn's file actions for pipes that get the
    same fd numbers (they repeat as processes come and go); numbers that moved
    must get new ones, and numbers that come back must work again."""
    first = spawner(core, [CAT], {})
    assert roundtrip(core, first) == b"ping"
    held = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # shifts the next pipes' numbers
    try:
        second = spawner(core, [CAT], {})
        assert {second.stdin_fd, second.stdout_fd, second.stderr_fd}.isdisjoint(
            {first.stdin_fd, first.stdout_fd, first.stderr_fd}
        )
        assert roundtrip(core, second) == b"ping"
        first.kill()
        first.wait(10)
        first.close()
        third = spawner(core, [CAT], {})  # the first one's numbers are free again
        assert roundtrip(core, third) == b"ping"
        for child in (second, third):
            _assert_wired(child)
    finally:
        os.close(held)


def test_concurrent_spawns_are_each_wired_right(core: types.ModuleType, spawner: Spawner) -> None:
    """Spawns from several threads at once (the compiled core's kept file actions
    are taken by one spawn at a time; the others make their own)."""
    children: List[Any] = []
    errors: List[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            for _ in range(15):
                child = core.spawn([CAT], {})
                with lock:
                    children.append(child)
                assert roundtrip(core, child) == b"ping"
                _assert_wired(child)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        spawner.children.extend(children)
    assert not errors, errors[0]
    assert len(children) == 60


def test_child_reader_reads_its_stdout_within_the_frame_limit(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [CAT], {})
    reader = child.reader(16)
    assert (reader.fd, reader.exit_fd) == (child.stdout_fd, child.pidfd)
    deadline = core.monotonic() + 5
    assert reader.exchange(child.stdin_fd, b"hello\n", deadline) == b"hello"
    assert reader.request(child, b"again\n", deadline) == b"again"
    with pytest.raises(core.FrameTooLargeError):
        reader.exchange(child.stdin_fd, b"x" * 17 + b"\n", deadline)
    with pytest.raises(ValueError, match="max_frame_bytes"):
        child.reader(0)


def test_child_reader_keeps_the_deadline_on_a_blocking_stdout(core: types.ModuleType, spawner: Spawner) -> None:
    """A Child not made by spawn (blocking fds) gets a reader that asks the kernel,
    and so polls before reading: the deadline holds."""
    other = spawner(core, [CAT], {})
    r, w = os.pipe()  # blocking
    # A line comes after 1 s: a reader that read without polling would block
    # until then and return it instead of keeping its 50 ms deadline (or for
    # ever, if it also kept the GIL while reading, as it does on an fd it
    # takes for non-blocking: the timer could not write).
    late = threading.Timer(1.0, os.write, (w, b"late\n"))
    try:
        child = core.Child(other.pid, -1, -1, r, -1)
        reader = child.reader()
        late.start()
        with pytest.raises(DeadlineExceeded):
            reader.read_frame(core.monotonic() + 0.05)
        assert reader.read_frame(core.monotonic() + 5) == b"late"
        child.close()  # closes r
    finally:
        late.join()
        os.close(w)


def test_stdout_pipe_is_grown_and_the_others_are_not(core: types.ModuleType, spawner: Spawner) -> None:
    """256 KiB for the plugin's replies (fewer wake-ups for a large one), where
    the kernel allows it; stdin and stderr keep the default."""
    F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
    r, w = os.pipe()
    try:
        default = fcntl.fcntl(r, F_GETPIPE_SZ)
    finally:
        os.close(r)
        os.close(w)
    child = spawner(core, [CAT], {})
    with open("/proc/sys/fs/pipe-max-size") as f:
        allowed = int(f.read()) >= 256 * 1024 or os.geteuid() == 0
    assert fcntl.fcntl(child.stdout_fd, F_GETPIPE_SZ) == (256 * 1024 if allowed else default)
    assert fcntl.fcntl(child.stdin_fd, F_GETPIPE_SZ) == default
    assert fcntl.fcntl(child.stderr_fd, F_GETPIPE_SZ) == default
    assert roundtrip(core, child) == b"ping"


# The C library reserves a few real-time signals (glibc 32 and 33, musl 32-34)
# and its posix_spawn sets those to SIG_IGN in the child unless they are in
# the "set to default" set. Its sigaddset, through which os.posix_spawn builds
# that set, refuses them, so the twin cannot name them; C can (glibc: memset
# the sigset_t to 0xff). A documented limitation of the twin, harmless to
# children on the same libc (it installs its own handlers for them). Python's
# valid_signals() leaves out exactly these numbers.
_LIBC_RESERVED = set(range(1, signal.NSIG)) - {int(s) for s in signal.valid_signals()}
_UNRESETTABLE = {"python": _LIBC_RESERVED}


def test_signals_default_and_unblocked_in_child(core: types.ModuleType, spawner: Spawner) -> None:
    # Python ignores SIGPIPE; make the host ignore and block more, for good measure.
    old_usr1 = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGHUP})
    try:
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
        child = spawner(core, [CAT], {})
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGUSR1, old_usr1)
    assert roundtrip(core, child) == b"ping"
    status = proc_status(child.pid)
    ignored = {sig for sig in range(1, 65) if int(status["SigIgn"], 16) >> (sig - 1) & 1}
    assert signal.SIGPIPE not in ignored
    assert ignored <= _UNRESETTABLE.get(core.IMPLEMENTATION, set())
    assert int(status["SigBlk"], 16) == 0
    assert int(status["SigPnd"], 16) == 0


def test_child_leads_its_own_process_group(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [CAT], {})
    assert os.getpgid(child.pid) == child.pid
    assert os.getpgid(child.pid) != os.getpgrp()
    assert os.getsid(child.pid) == os.getsid(0)  # a new group, not a new session


def test_stderr_is_a_separate_pipe(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [SH, "-c", "echo out; echo err >&2"], {})
    assert read_until_eof(child.stdout_fd) == b"out\n"
    assert read_until_eof(child.stderr_fd) == b"err\n"
    assert child.wait(10) == 0


def test_stdio_fds_work_when_host_stdio_is_closed(core: types.ModuleType, tmp_path: Path) -> None:
    """With the host's fds 0-2 closed, new pipes land on them; the child must
    still get its pipes on 0, 1 and 2 and nothing else."""
    out = tmp_path / "result"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {SRC_DIR!r})
        {_import_core(core)}
        for fd in (0, 1, 2):
            os.close(fd)
        child = core.spawn(["/bin/cat"], {{}})
        # The parent's ends must not sit on 0-2 either, where the host's own
        # prints (or a library's) would go into the plugin's stdin.
        low = [fd for fd in (child.stdin_fd, child.stdout_fd, child.stderr_fd, child.pidfd) if 0 <= fd <= 2]
        core.write_all(child.stdin_fd, b"hello\\n", core.monotonic() + 5)
        echoed = core.FrameReader(child.stdout_fd).read_frame(core.monotonic() + 5)
        fds = sorted(int(n) for n in os.listdir(f"/proc/{{child.pid}}/fd"))
        kinds = [os.readlink(f"/proc/{{child.pid}}/fd/{{fd}}")[:5] for fd in fds]
        child.close_stdin()
        rc = child.wait(10)
        child.close()
        with open({str(out)!r}, "w") as f:
            f.write(repr((echoed, fds, kinds, rc, low)))
        """
    )
    proc = subprocess.run([sys.executable, "-I", "-c", script], timeout=60, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == repr((b"hello", [0, 1, 2], ["pipe:"] * 3, 0, []))


# --- process groups and signals -----------------------------------------------


def _spawn_with_grandchild(core: types.ModuleType, spawner: Spawner) -> tuple[Any, int]:
    child = spawner(core, [SH, "-c", "sleep 60 & echo $!; wait"], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    reader = core.FrameReader(child.stdout_fd)
    grandchild = int(reader.read_frame(core.monotonic() + 10))
    assert os.getpgid(grandchild) == child.pid
    return child, grandchild


def test_group_kill_ends_grandchild(core: types.ModuleType, spawner: Spawner) -> None:
    child, grandchild = _spawn_with_grandchild(core, spawner)
    child.kill()
    assert child.wait(10) == -signal.SIGKILL
    assert wait_until(lambda: is_dead(grandchild), 10), proc_stat(grandchild)


def test_terminate_signals_the_group(core: types.ModuleType, spawner: Spawner) -> None:
    child, grandchild = _spawn_with_grandchild(core, spawner)
    child.terminate()
    assert child.wait(10) == -signal.SIGTERM
    assert wait_until(lambda: is_dead(grandchild), 10), proc_stat(grandchild)


def test_send_signal_reaches_the_leader_only(core: types.ModuleType, spawner: Spawner) -> None:
    child, grandchild = _spawn_with_grandchild(core, spawner)
    child.send_signal(signal.SIGKILL)
    assert child.wait(10, reap=False) == -signal.SIGKILL
    assert not is_dead(grandchild)
    # The unreaped leader still holds its pid and so its group id.
    child.signal_group(signal.SIGKILL)
    assert wait_until(lambda: is_dead(grandchild), 10), proc_stat(grandchild)
    assert child.wait(10) == -signal.SIGKILL


def test_finish_kills_the_group_reaps_the_leader_and_closes_fds(core: types.ModuleType, spawner: Spawner) -> None:
    """The end of every stop: the leader exited by itself; a grandchild it left
    behind in the group is killed, the leader reaped (its own status kept), the fds closed."""
    child, grandchild = _spawn_with_grandchild(core, spawner)
    fds = [child.stdin_fd, child.stdout_fd, child.stderr_fd] + ([child.pidfd] if child.pidfd >= 0 else [])
    child.send_signal(signal.SIGTERM)
    assert child.wait(10, reap=False) == -signal.SIGTERM
    assert not is_dead(grandchild)
    assert child.finish() == -signal.SIGTERM
    assert child.returncode == -signal.SIGTERM
    assert wait_until(lambda: is_dead(grandchild), 10), proc_stat(grandchild)
    assert (child.stdin_fd, child.stdout_fd, child.stderr_fd, child.pidfd) == (-1, -1, -1, -1)
    assert not set(fds) & open_fds()
    # Once reaped, finish() signals nobody (the group id may be someone else's now).
    assert child.finish() == -signal.SIGTERM


def test_signals_after_reaping_are_noops(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [TRUE], {})
    assert child.wait(10) == 0
    for _ in range(2):
        child.send_signal(signal.SIGKILL)
        child.signal_group(signal.SIGKILL)
        child.terminate()
        child.kill()
    assert child.returncode == 0


def test_signal_group_ignores_esrch(core: types.ModuleType, spawner: Spawner) -> None:
    """A zombie leader alone in its group: killpg may find nobody to signal."""
    child = spawner(core, [TRUE], {})
    assert child.wait(10, reap=False) == 0
    child.signal_group(signal.SIGTERM)
    child.kill()
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == 0


# --- waiting and return codes -----------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([TRUE], 0),
        (["/bin/false"], 1),
        ([SH, "-c", "exit 3"], 3),
        ([SH, "-c", "exit 255"], 255),
        ([SH, "-c", "kill -TERM $$"], -signal.SIGTERM),
        ([SH, "-c", "kill -KILL $$"], -signal.SIGKILL),
        ([SH, "-c", "kill -USR1 $$"], -signal.SIGUSR1),
    ],
)
def test_returncode(core: types.ModuleType, spawner: Spawner, argv: List[str], expected: int) -> None:
    child = spawner(core, argv, {})
    assert child.returncode is None
    assert child.wait(10) == expected
    assert child.returncode == expected
    assert child.poll() == expected
    assert child.wait(0) == expected


def test_wait_returns_promptly(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [TRUE], {})
    start = time.monotonic()
    assert child.wait(30) == 0
    assert time.monotonic() - start < 2.0  # loose: CI may emulate another architecture


def test_wait_returns_promptly_after_a_delayed_exit(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [CAT], {})
    assert child.wait(0.05) is None
    timer = threading.Timer(0.1, child.close_stdin)
    timer.start()
    try:
        start = time.monotonic()
        assert child.wait(30) == 0
        assert time.monotonic() - start < 5.0
    finally:
        timer.join()


def test_wait_refuses_nan(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [CAT], {})
    with pytest.raises(ValueError):
        child.wait(float("nan"))


def test_write_all_refuses_nan(core: types.ModuleType, make_pipe: Any) -> None:
    pipe = make_pipe()
    with pytest.raises(ValueError):
        core.write_all(pipe.w, b"x", float("nan"))


def test_wait_without_timeout(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [SH, "-c", "exit 4"], {})
    assert child.wait() == 4
    child = spawner(core, [SH, "-c", "exit 5"], {})
    assert child.wait(float("inf")) == 5


def test_wait_times_out(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [CAT], {})
    start = time.monotonic()
    assert child.wait(0.2) is None
    assert time.monotonic() - start >= 0.19
    assert child.wait(0) is None
    assert child.poll() is None
    assert child.returncode is None
    child.close_stdin()  # the protocol's exit signal: cat sees EOF and exits
    assert child.wait(10) == 0


def test_wait_without_reaping_leaves_a_zombie(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [SH, "-c", "exit 7"], {})
    assert child.wait(10, reap=False) == 7
    assert child.returncode is None
    st = proc_stat(child.pid)
    assert st is not None and st[0] == "Z" and st[1] == os.getpid()
    assert child.wait(10, reap=False) == 7  # still there
    assert child.poll() == 7
    assert child.returncode == 7
    st = proc_stat(child.pid)
    assert st is None or st[1] != os.getpid()  # gone (or the pid was reused)


def test_poll_reaps(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [CAT], {})
    assert child.poll() is None
    child.close_stdin()
    assert wait_until(lambda: child.poll() is not None, 10)
    assert child.returncode == 0
    assert child.pid not in zombie_children()


def test_many_spawn_exit_cycles_leak_nothing(core: types.ModuleType) -> None:
    before = open_fds()
    for i in range(1000):
        child = core.spawn([TRUE], {})
        try:
            if i % 3 == 0:
                child.close_stdin()
            assert child.wait(10) == 0
        finally:
            child.close()
    assert zombie_children() == []
    assert open_fds() == before


# --- handles and fds ---------------------------------------------------------


def test_close_is_idempotent_and_does_not_reap(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [CAT], {})
    fds = [child.stdin_fd, child.stdout_fd, child.stderr_fd] + ([child.pidfd] if child.pidfd >= 0 else [])
    child.close_stdin()
    assert child.stdin_fd == -1
    child.close_stdin()
    child.close()
    child.close()
    assert (child.stdin_fd, child.stdout_fd, child.stderr_fd, child.pidfd) == (-1, -1, -1, -1)
    assert not set(fds) & open_fds()
    assert child.returncode is None
    # cat saw EOF on stdin; wait still works without a pidfd.
    assert child.wait(10) == 0


def test_repr_names_pid_and_state(core: types.ModuleType, spawner: Spawner) -> None:
    child = spawner(core, [TRUE], {})
    assert str(child.pid) in repr(child)
    child.wait(10)
    assert str(child.pid) in repr(child)


def test_dropping_a_reaped_child_closes_its_fds(core: types.ModuleType) -> None:
    before = open_fds()
    child = core.spawn([TRUE], {})
    assert child.wait(10) == 0
    assert open_fds() != before
    del child
    gc.collect()
    assert open_fds() == before


def test_ignored_sigchld_loses_the_status_but_not_the_host(core: types.ModuleType, tmp_path: Path) -> None:
    """With SIGCHLD ignored the kernel reaps children itself (ECHILD)."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {SRC_DIR!r})
        {_import_core(core)}
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        child = core.spawn(["/bin/true"], {{}})
        rc = child.wait(10)
        child.close()
        print("returned", rc is not None, child.returncode is not None)
        """
    )
    proc = subprocess.run([sys.executable, "-I", "-c", script], timeout=60, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"returned True True\n"


# --- spawn failures -----------------------------------------------------------


def _no_leaks(before: set[int]) -> None:
    assert open_fds() == before
    assert zombie_children() == []


def test_spawn_missing_file(core: types.ModuleType, tmp_path: Path) -> None:
    path = str(tmp_path / "missing")
    before = open_fds()
    with pytest.raises(SpawnFailed) as info:
        core.spawn([path], {})
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == path
    assert isinstance(info.value, OSError) and isinstance(info.value, CoreError)
    _no_leaks(before)


def test_spawn_non_executable_file(core: types.ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o644)
    before = open_fds()
    with pytest.raises(SpawnFailed) as info:
        core.spawn([str(path)], {})
    assert info.value.errno == errno.EACCES
    assert info.value.filename == str(path)
    _no_leaks(before)


def test_spawn_directory(core: types.ModuleType, tmp_path: Path) -> None:
    before = open_fds()
    with pytest.raises(SpawnFailed) as info:
        core.spawn([str(tmp_path)], {})
    assert info.value.errno == errno.EACCES
    assert info.value.filename == str(tmp_path)
    _no_leaks(before)


def test_spawn_not_an_executable_format(core: types.ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "garbage"
    path.write_bytes(b"\x00\x01\x02 not an ELF, no shebang\n")
    path.chmod(0o755)
    before = open_fds()
    with pytest.raises(SpawnFailed) as info:
        core.spawn([str(path)], {})
    assert info.value.errno == errno.ENOEXEC
    assert info.value.filename == str(path)
    _no_leaks(before)


def test_spawn_does_not_search_path(core: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpawnFailed) as info:
        core.spawn(["true"], {"PATH": "/usr/bin:/bin"})
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == "true"


def test_spawn_bytes_path_reports_str_filename(core: types.ModuleType, tmp_path: Path) -> None:
    path = os.fsencode(tmp_path / "missing")
    with pytest.raises(SpawnFailed) as info:
        core.spawn([path], {})
    assert info.value.filename == os.fsdecode(path)


@pytest.mark.parametrize("argv", ["/bin/true", b"/bin/true", []])
def test_spawn_rejects_bad_argv(core: types.ModuleType, argv: Any) -> None:
    before = open_fds()
    with pytest.raises((TypeError, ValueError)):
        core.spawn(argv, {})
    _no_leaks(before)


@pytest.mark.parametrize("env", [{"": "x"}, {"A=B": "x"}, {"A": "x\0y"}])
def test_spawn_rejects_bad_env(core: types.ModuleType, env: Any) -> None:
    before = open_fds()
    with pytest.raises(ValueError):
        core.spawn([TRUE], env)
    _no_leaks(before)


def test_spawn_method_is_named(core: types.ModuleType) -> None:
    method = core.spawn_method()
    assert isinstance(method, str) and method


# --- cwd ------------------------------------------------------------------------


@pytest.mark.parametrize("as_bytes", [False, True])
def test_spawn_in_cwd(core: types.ModuleType, spawner: Spawner, tmp_path: Path, as_bytes: bool) -> None:
    host_cwd = os.getcwd()
    cwd = os.fsencode(tmp_path) if as_bytes else str(tmp_path)
    child = spawner(core, ["/bin/pwd"], {}, cwd=cwd)
    assert read_until_eof(child.stdout_fd) == os.fsencode(tmp_path) + b"\n"
    assert child.wait(10) == 0
    assert os.getcwd() == host_cwd


def test_relative_executable_is_found_from_cwd(core: types.ModuleType, spawner: Spawner, tmp_path: Path) -> None:
    script = tmp_path / "plugin"
    script.write_text("#!/bin/sh\necho here\n")
    script.chmod(0o755)
    child = spawner(core, ["./plugin"], {}, cwd=str(tmp_path))
    assert read_until_eof(child.stdout_fd) == b"here\n"
    assert child.wait(10) == 0


def test_spawn_in_missing_cwd(core: types.ModuleType, tmp_path: Path) -> None:
    before = open_fds()
    with pytest.raises(SpawnFailed) as info:
        core.spawn([TRUE], {}, cwd=str(tmp_path / "missing"))
    assert info.value.errno == errno.ENOENT
    _no_leaks(before)


# --- write_all ------------------------------------------------------------------


def test_write_all_small(core: types.ModuleType, make_pipe: Any) -> None:
    pipe = make_pipe()
    core.write_all(pipe.w, b"abc")
    core.write_all(pipe.w, bytearray(b"def"), core.monotonic() + 5)
    core.write_all(pipe.w, memoryview(b"xghix")[1:4], deadline=core.monotonic() + 5)
    core.write_all(pipe.w, b"")
    assert os.read(pipe.r, 100) == b"abcdefghi"


def test_write_all_any_buffer(core: types.ModuleType, make_pipe: Any) -> None:
    pipe = make_pipe()
    data = array.array("H", [1, 2, 0xFFFF])
    core.write_all(pipe.w, memoryview(data))
    assert os.read(pipe.r, 100) == data.tobytes()


def test_write_all_to_closed_pipe(core: types.ModuleType, make_pipe: Any) -> None:
    pipe = make_pipe()
    pipe.close_r()
    with pytest.raises(PipeClosed) as info:
        core.write_all(pipe.w, b"x")
    assert info.value.fd == pipe.w
    assert isinstance(info.value, BrokenPipeError) and isinstance(info.value, CoreError)


def test_write_all_never_delivers_sigpipe_to_a_handler(core: types.ModuleType, make_pipe: Any) -> None:
    caught: List[int] = []
    old = signal.signal(signal.SIGPIPE, lambda signum, frame: caught.append(signum))
    try:
        pipe = make_pipe()
        pipe.close_r()
        with pytest.raises(PipeClosed):
            core.write_all(pipe.w, b"x" * 100)
        assert signal.SIGPIPE not in signal.sigpending()
        assert signal.SIGPIPE not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        signal.signal(signal.SIGPIPE, old)
    assert caught == []


def test_host_with_default_sigpipe_survives_epipe(core: types.ModuleType) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {SRC_DIR!r})
        {_import_core(core)}
        from plugin_client._core_errors import PipeClosed
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)

        r, w = os.pipe()
        os.close(r)
        try:
            core.write_all(w, b"x")
        except PipeClosed:
            print("pipe")

        # A reader that takes 100 kB and leaves: EPIPE in the middle of 1 MiB.
        child = core.spawn(["/bin/sh", "-c", "exec /usr/bin/head -c 100000 >/dev/null"], {{}})
        try:
            core.write_all(child.stdin_fd, b"y" * (1 << 20), core.monotonic() + 10)
        except PipeClosed:
            print("child")
        child.wait(10)
        child.close()

        assert signal.SIGPIPE not in signal.sigpending()
        assert signal.SIGPIPE not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_DFL
        print("alive")
        """
    )
    proc = subprocess.run([sys.executable, "-I", "-c", script], timeout=60, capture_output=True)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout == b"pipe\nchild\nalive\n"


def test_write_all_partial_writes_to_a_slow_reader(core: types.ModuleType, spawner: Spawner) -> None:
    payload = os.urandom(MiB)
    # The child sleeps first, so the pipe fills and write_all must wait.
    child = spawner(core, [SH, "-c", "sleep 0.2; exec /bin/cat"], {})
    got: List[bytes] = []
    drain = threading.Thread(target=lambda: got.append(read_until_eof(child.stdout_fd, 30)))
    drain.start()
    try:
        core.write_all(child.stdin_fd, payload, core.monotonic() + 30)
        child.close_stdin()
    finally:
        drain.join(30)
    assert got == [payload]
    assert child.wait(10) == 0


def test_write_all_deadline_on_a_full_pipe(core: types.ModuleType, make_pipe: Any) -> None:
    pipe = make_pipe()
    os.set_blocking(pipe.w, False)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        core.write_all(pipe.w, b"z" * MiB, core.monotonic() + 0.2)
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 3.0
    assert isinstance(info.value, TimeoutError)


def test_write_all_on_a_blocking_fd(core: types.ModuleType, make_pipe: Any) -> None:
    pipe = make_pipe()
    got: List[bytes] = []

    def drain() -> None:
        chunks = []
        while data := os.read(pipe.r, 65536):
            chunks.append(data)
        got.append(b"".join(chunks))

    t = threading.Thread(target=drain)
    t.start()
    try:
        core.write_all(pipe.w, b"q" * (256 * 1024))
        pipe.close_w()
    finally:
        t.join(10)
    assert got == [b"q" * (256 * 1024)]


# --- exec_fd: run the file open at a descriptor ---------------------------------


def _cat_fd(tmp_path: Path) -> tuple[Path, int]:
    """A copy of cat, opened close-on-exec, then its path taken by a shell script."""
    exe = tmp_path / "plugin"
    exe.write_bytes(Path(CAT).read_bytes())
    os.chmod(exe, 0o755)
    fd = os.open(exe, os.O_RDONLY | os.O_CLOEXEC)
    impostor = tmp_path / "impostor"
    impostor.write_text(f"#!{SH}\necho impostor\n")
    os.chmod(impostor, 0o755)
    os.replace(impostor, exe)
    return exe, fd


def test_exec_fd_runs_the_open_file_not_the_path(core: types.ModuleType, spawner: Spawner, tmp_path: Path) -> None:
    exe, fd = _cat_fd(tmp_path)
    try:
        child = spawner(core, [str(exe), "-u"], {}, exec_fd=fd)
        assert roundtrip(core, child) == b"ping"  # cat, not the script now at the path
        assert open_fds(child.pid) == {0, 1, 2}  # the descriptor did not follow
        assert Path(f"/proc/{child.pid}/cmdline").read_bytes() == os.fsencode(exe) + b"\0-u\0"
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # still the caller's
    finally:
        os.close(fd)


def test_exec_fd_on_a_low_number_survives_the_stdio_dup2s(core: types.ModuleType, spawner: Spawner,
                                                           tmp_path: Path) -> None:
    """A host that closed its stdin may hold the descriptor as fd 0."""
    exe, fd = _cat_fd(tmp_path)
    saved = os.dup(0)
    try:
        os.dup2(fd, 0, inheritable=False)
        child = spawner(core, [str(exe)], {}, exec_fd=0)
        assert roundtrip(core, child) == b"ping"
        assert open_fds(child.pid) == {0, 1, 2}
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(fd)


def test_exec_fd_must_be_close_on_exec_and_open(core: types.ModuleType, tmp_path: Path) -> None:
    exe, fd = _cat_fd(tmp_path)
    before = open_fds()
    try:
        os.set_inheritable(fd, True)
        with pytest.raises(ValueError, match="close-on-exec"):
            core.spawn([str(exe)], {}, exec_fd=fd)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as info:
        core.spawn([str(exe)], {}, exec_fd=fd)
    assert info.value.errno == errno.EBADF
    assert open_fds() == before - {fd}


def test_exec_fd_of_a_script_fails_as_a_spawn_error(core: types.ModuleType, tmp_path: Path) -> None:
    """Why scripts run by path: the interpreter gets a /dev/fd path that is closed by then.
    The compiled core reports the failed exec; the twin's interpreter fails after it."""
    script = tmp_path / "script"
    script.write_text(f"#!{SH}\necho ran\n")
    os.chmod(script, 0o755)
    fd = os.open(script, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            child = core.spawn([str(script)], {}, exec_fd=fd)
        except SpawnFailed as exc:
            assert exc.filename == str(script)
            return
        try:
            assert child.wait(5) != 0
            assert read_until_eof(child.stdout_fd) == b""
        finally:
            child.close()
    finally:
        os.close(fd)

"""One running plugin process: its core ``Child``, frame reader and stderr tail.

This module does the process I/O: one request / reply exchange, the idle check
before a request, the graceful stop (close stdin, SIGTERM the group, grace,
SIGKILL the group, reap the leader last) and the immediate kill after an error.
It keeps no policy and counts no crashes: :mod:`plugin_client._flow` decides
what an outcome means.

The stop sequences are written once, as generators (``stop_steps``,
``kill_steps``, ``reap_dead_steps``) that ``yield`` the waits they need as
small operation objects (:class:`Exchange`, :class:`WaitExit`) and get each
result back through ``send()`` (or its error through ``throw()``).
:func:`run_sync` performs the operations with blocking core calls (the sync
client, finalizers); :mod:`plugin_client.aio` awaits the same operations on an
event loop. ``stop()``, ``kill()`` and ``reap_dead()`` are the blocking forms.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime, timezone
from typing import Any, Callable, Generator, Mapping, Optional, Sequence, Tuple, Union, cast

from ._core_errors import DeadlineExceeded, FrameTooLargeError, PipeClosed, StreamEOF
from ._impl import Child, FrameReader, spawn
from ._stderr import PUMP, StderrTail
from ._wire_trace import TRACE, traced_exchange, tracing
from .health import ExitInfo, ExitStage

__all__ = (
    "PluginProcess", "ExitRecord", "IDLE_OK", "IDLE_EXITED", "IDLE_OUTPUT", "Exchange", "WaitExit", "Steps", "run_sync",
    "EXCHANGE_ERRORS",
)

IDLE_OK = 0
IDLE_EXITED = 1  # the leader exited, or closed its stdout
IDLE_OUTPUT = 2  # it wrote to stdout with no request in flight

# How long a process whose stdout hit EOF gets to finish exiting by itself
# before it counts as a hostile "closed stdout but stays alive" and is killed.
_EOF_EXIT_WAIT = 0.1

# How long a cooperative exit may take before the stderr pump watches the
# process again (see stop_steps).
_QUIET_EXIT = 0.002

_StrOrBytes = Union[str, bytes]


def _signal_name(returncode: Optional[int]) -> Optional[str]:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class ExitRecord:
    """How a process ended, as the stop sequences record it.

    Plain attributes, no validation: a shutdown ends right after the plugin's
    exit, when the caches are cold and every object built costs several times
    its usual price, so the public, validated :class:`ExitInfo` is made only
    when asked for (:meth:`info`, by ``health()``)."""

    __slots__ = ("pid", "stage", "returncode", "wall", "_info")

    def __init__(self, pid: int, stage: ExitStage, returncode: Optional[int]) -> None:
        self.pid = pid
        self.stage = stage
        self.returncode = returncode
        self.wall = time.time()
        self._info: Optional[ExitInfo] = None

    @property
    def signal(self) -> Optional[str]:
        """The signal's name, if a signal ended it."""
        return _signal_name(self.returncode)

    def info(self) -> ExitInfo:
        info = self._info
        if info is None:
            info = self._info = ExitInfo(
                pid=self.pid,
                stage=self.stage,
                returncode=self.returncode,
                signal=self.signal,
                at=datetime.fromtimestamp(self.wall, timezone.utc),
            )
        return info

    def __repr__(self) -> str:
        return f"<ExitRecord pid={self.pid} {self.stage.value} returncode={self.returncode}>"


class Exchange:
    """Operation: write ``line`` to ``proc`` and read one reply frame, both before
    ``deadline``. Result: the frame's bytes. Errors: the core's ``DeadlineExceeded``,
    ``StreamEOF``, ``PipeClosed``, ``FrameTooLargeError``.

    ``call_type`` and ``rid``: the call the line carries and its request id,
    which the reply must answer (the flow's concern; opaque here).

    ``skippable``: a driver whose caller has gone (a cancelled asyncio task) may
    close the flow here instead of performing it, since nothing was written yet and
    nothing else depends on it (a host's request; never an ``init``)."""

    __slots__ = ("proc", "line", "deadline", "call_type", "rid", "skippable")

    def __init__(
        self, proc: Any, line: bytes, deadline: float, call_type: Any, rid: int, *, skippable: bool = False
    ) -> None:
        self.proc: PluginProcess = proc
        self.line = line
        self.deadline = deadline
        self.call_type = call_type
        self.rid = rid
        self.skippable = skippable


class WaitExit:
    """Operation: wait up to ``timeout`` seconds (``None``: for ever) for ``proc``'s
    leader to exit, without reaping it. Result: its would-be return code, or
    ``None`` on timeout."""

    __slots__ = ("proc", "timeout")

    def __init__(self, proc: PluginProcess, timeout: Optional[float]) -> None:
        self.proc = proc
        self.timeout = timeout


Op = Union[Exchange, WaitExit]

# What an Exchange raises when the plugin failed it (a ``WaitExit`` fails with
# nothing): the flow handles these; anything else is the host's interruption.
EXCHANGE_ERRORS = (DeadlineExceeded, StreamEOF, PipeClosed, FrameTooLargeError)
# A step generator: yields operations, is sent their results, returns a value.
Steps = Generator[Op, Any, Any]


def run_sync(steps: Steps, interrupted: Optional[Callable[[PluginProcess], None]] = None) -> Any:
    """Drive ``steps`` to its end with blocking core calls; return its value.

    An operation's own failure (one of ``EXCHANGE_ERRORS`` from an
    :class:`Exchange`: the plugin's doing) is thrown into the generator at its
    ``yield``, so the flow handles it exactly as under the asyncio driver.
    Anything else raised while an operation is performed (``KeyboardInterrupt``,
    ``SystemExit``, an exception from a signal handler) is the host's
    interruption, not the plugin's failure: the generator is closed, so it books
    nothing and counts no crash, ``interrupted`` (if given) is called with the
    operation's process, which is left in limbo (a request half done, a stop
    under way), and the exception propagates unchanged.
    """
    send = steps.send
    try:
        op = send(None)
        while True:
            try:
                if type(op) is Exchange:
                    res: Any = op.proc.exchange(op.line, op.deadline)
                else:
                    wait = cast(WaitExit, op)
                    res = wait.proc.child.wait(wait.timeout, reap=False)
            except EXCHANGE_ERRORS as exc:
                op = steps.throw(exc)
            except BaseException:
                steps.close()
                if interrupted is not None:
                    interrupted(op.proc)
                raise
            else:
                op = send(res)
    except StopIteration as stop:
        return stop.value


def _signal_all(child: Child, sig: int) -> None:
    # The group, and the leader through its pidfd: a leader that setsid()ed
    # has left the group that killpg reaches.
    child.signal_group(sig)
    child.send_signal(sig)


class PluginProcess:
    """A spawned plugin: exchange frames, check it while idle, and end it."""

    __slots__ = ("child", "reader", "tail", "pid", "name", "io", "_stdout_fd", "_pidfd")

    def __init__(self, child: Child, reader: FrameReader, tail: StderrTail, name: str = "") -> None:
        self.child = child
        self.reader = reader
        self.tail = tail
        self.pid = child.pid
        self.name = name  # the plugin's, for the wire trace
        # An event loop's hooks on this process's fds (aio's channel), if any:
        # ``release()``d before the fds are closed, whoever ends the process.
        self.io: Any = None
        self._stdout_fd = child.stdout_fd
        self._pidfd = child.pidfd

    @classmethod
    def start(
        cls,
        argv: Sequence[_StrOrBytes],
        env: Mapping[bytes, bytes],
        *,
        plugin_name: str,
        max_frame_bytes: int,
        stderr_lines: int,
        exec_fd: Optional[int] = None,
        core: Any = None,
    ) -> PluginProcess:
        """Spawn (``argv[0]``, or the file open at ``exec_fd``); raises the core's ``SpawnFailed``.
        ``core``: the core module to spawn with (its ``Child`` then reads and writes), if not
        the one :mod:`plugin_client._impl` selected (benchmarks compare both in one run)."""
        child = (spawn if core is None else core.spawn)(argv, env, exec_fd=exec_fd)
        try:
            tail = PUMP.register(child.stderr_fd, plugin_name, stderr_lines)
        except BaseException:
            # (Out of fds for the pump's first epoll, no thread to be had...)
            # Nobody holds the child yet: end it here rather than orphan it.
            child.finish()
            raise
        return cls(child, child.reader(max_frame_bytes), tail, plugin_name)

    def exchange(self, line: bytes, deadline: float) -> bytes:
        """Write one request line and read one reply frame, both before ``deadline``."""
        if TRACE.maybe and tracing():
            return traced_exchange(self, line, deadline)
        # One core call: write, then read first and poll only if the reply is not there yet.
        return self.reader.exchange(self.child.stdin_fd, line, deadline)

    def idle_check(self) -> int:
        """What happened since the last reply: ``IDLE_OK``, ``IDLE_EXITED`` or ``IDLE_OUTPUT``."""
        # Buffered bytes, then one poll(0) of stdout and the pidfd, all in the core.
        state: int = self.reader.idle_state(self._pidfd)
        return state

    def stop_steps(self, exit_wait: float, grace: float) -> Steps:
        """Graceful stop: close stdin, wait; SIGTERM the group, wait ``grace``; SIGKILL.
        Returns its :class:`ExitRecord`."""
        paused, first = self._begin_stop(exit_wait)
        rc = yield WaitExit(self, first)
        return (yield from self._stop_rest_steps(rc, paused, first, exit_wait, grace))

    def _begin_stop(self, exit_wait: float) -> Tuple[bool, float]:
        """Close stdin. Returns whether the stderr pump let go of the process, and
        how long to wait for its exit before anything else."""
        # A quick cooperative exit wakes no other thread: the stderr pump lets
        # go of this process for the first _QUIET_EXIT seconds (what it writes
        # meanwhile stays in the pipe and is drained at the end) and takes it
        # back if the exit takes longer, so a plugin that logs a lot while it
        # shuts down is held up for that long at most.
        paused = PUMP.pause(self.tail)
        self.child.close_stdin()
        return paused, (min(exit_wait, _QUIET_EXIT) if paused else exit_wait)

    def _stop_rest_steps(self, rc: Optional[int], paused: bool, first: float, exit_wait: float, grace: float) -> Steps:
        """The stop once the first wait returned ``rc``."""
        child = self.child
        stage = ExitStage.STDIN_CLOSE
        if rc is None and paused:
            PUMP.resume(self.tail)
            if exit_wait > first:
                rc = yield WaitExit(self, exit_wait - first)
        if rc is None:
            stage = ExitStage.SIGTERM
            _signal_all(child, signal.SIGTERM)
            rc = yield WaitExit(self, grace)
        if rc is None:
            stage = ExitStage.SIGKILL
            _signal_all(child, signal.SIGKILL)
        return (yield from self._wait_then_close_steps(stage, rc))

    def kill_steps(self) -> Steps:
        """End it now, after a timeout or a protocol error."""
        _signal_all(self.child, signal.SIGKILL)
        return (yield from self._wait_then_close_steps(ExitStage.KILLED_AFTER_ERROR))

    def reap_dead_steps(self) -> Steps:
        """It hit EOF or exited on its own: collect it, killing it if it lingers."""
        rc = yield WaitExit(self, _EOF_EXIT_WAIT)
        if rc is None:
            _signal_all(self.child, signal.SIGKILL)
            return (yield from self._wait_then_close_steps(ExitStage.KILLED_AFTER_ERROR))
        return (yield from self._wait_then_close_steps(ExitStage.CRASH, rc))

    def _wait_then_close_steps(self, stage: ExitStage, exited: Optional[int] = None) -> Steps:
        if exited is None:  # not seen exiting yet (a wait already returned its status otherwise)
            yield WaitExit(self, None)
        return self._close_exited(stage)

    def _close_exited(self, stage: ExitStage) -> ExitRecord:
        """The end of every stop, once the leader has exited or was sent SIGKILL."""
        child = self.child
        # The leader is dead or dying but not yet reaped, so its pid (the group
        # id) cannot be reused: SIGKILL whatever else is left in the group
        # first, so that no descendant keeps filling its stderr while it is
        # drained, then read the group's last words (a bounded drain: a writer
        # that left the group is not waited for).
        child.kill()
        PUMP.unregister(self.tail)
        self.release_io()
        # Reap the leader last (a zombie by now: that wait does not block) and
        # close the fds. Not Child.finish(): the group was killed above, and a
        # second killpg would cost a system call on every stop
        # (bench/test_bench_lifecycle.py, shutdown).
        rc = child.wait(None)
        child.close()
        self.reader.clear()
        return ExitRecord(self.pid, stage, rc)

    def release_io(self) -> None:
        io, self.io = self.io, None
        if io is not None:
            io.release()

    def stop(self, exit_wait: float, grace: float) -> ExitRecord:
        """:meth:`stop_steps`, blocking. The common case, an exit within the first
        wait, runs as plain calls: the end of a stop comes right after the plugin's
        exit, when the caches are cold and every generator resumed is dear."""
        paused, first = self._begin_stop(exit_wait)
        rc = self.child.wait(first, reap=False)
        if rc is not None:
            return self._close_exited(ExitStage.STDIN_CLOSE)
        info: ExitRecord = run_sync(self._stop_rest_steps(rc, paused, first, exit_wait, grace))
        return info

    def kill(self) -> ExitRecord:
        """:meth:`kill_steps`, blocking."""
        info: ExitRecord = run_sync(self.kill_steps())
        return info

    def reap_dead(self) -> ExitRecord:
        """:meth:`reap_dead_steps`, blocking."""
        info: ExitRecord = run_sync(self.reap_dead_steps())
        return info

    def forget(self) -> None:
        """After ``fork()``, in the child: drop the parent's fds without signalling anything."""
        self.io = None  # the parent's event loop is not this process's to touch
        self.child.close()

"""One running plugin process: its core ``Child``, frame reader and stderr tail.

This module does the blocking process I/O of the sync client: one request /
reply exchange, the idle check before a request, the graceful stop (close
stdin, SIGTERM the group, grace, SIGKILL the group, reap the leader last) and
the immediate kill after an error. It keeps no policy and counts no crashes:
:mod:`plugin_client.client` decides what an outcome means.
"""

from __future__ import annotations

import select
import signal
from datetime import datetime, timezone
from typing import Mapping, Optional, Sequence, Union

from ._impl import Child, FrameReader, spawn, write_all
from ._stderr import PUMP, StderrTail
from .health import ExitInfo, ExitStage

__all__ = ("PluginProcess", "IDLE_OK", "IDLE_EXITED", "IDLE_OUTPUT")

IDLE_OK = 0
IDLE_EXITED = 1  # the leader exited, or closed its stdout
IDLE_OUTPUT = 2  # it wrote to stdout with no request in flight

# How long a process whose stdout hit EOF gets to finish exiting by itself
# before it counts as a hostile "closed stdout but stays alive" and is killed.
_EOF_EXIT_WAIT = 0.1

_StrOrBytes = Union[str, bytes]


def _signal_name(returncode: Optional[int]) -> Optional[str]:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _signal_all(child: Child, sig: int) -> None:
    # The group, and the leader through its pidfd: a leader that setsid()ed
    # has left the group that killpg reaches.
    child.signal_group(sig)
    child.send_signal(sig)


class PluginProcess:
    """A spawned plugin: exchange frames, check it while idle, and end it."""

    __slots__ = ("child", "reader", "tail", "pid", "_poller", "_stdout_fd", "_pidfd")

    def __init__(self, child: Child, reader: FrameReader, tail: StderrTail) -> None:
        self.child = child
        self.reader = reader
        self.tail = tail
        self.pid = child.pid
        self._stdout_fd = child.stdout_fd
        self._pidfd = child.pidfd
        # One poll object made once: the idle check is then a single syscall.
        self._poller = select.poll()
        self._poller.register(self._stdout_fd, select.POLLIN)
        if self._pidfd >= 0:
            self._poller.register(self._pidfd, select.POLLIN)

    @classmethod
    def start(
        cls,
        argv: Sequence[_StrOrBytes],
        env: Mapping[bytes, bytes],
        *,
        plugin_name: str,
        max_frame_bytes: int,
        stderr_lines: int,
    ) -> PluginProcess:
        """Spawn; raises the core's ``SpawnFailed``."""
        child = spawn(argv, env)
        tail = PUMP.register(child.stderr_fd, plugin_name, stderr_lines)
        return cls(child, FrameReader(child.stdout_fd, max_frame_bytes), tail)

    def exchange(self, line: bytes, deadline: float) -> bytes:
        """Write one request line and read one reply frame, both before ``deadline``."""
        write_all(self.child.stdin_fd, line, deadline)
        return self.reader.read_frame(deadline)

    def idle_check(self) -> int:
        """What happened since the last reply: ``IDLE_OK``, ``IDLE_EXITED`` or ``IDLE_OUTPUT``."""
        if self.reader.buffered:
            return IDLE_OUTPUT
        events = self._poller.poll(0)
        if not events:
            return IDLE_OK
        exited = False
        output = False
        for fd, ev in events:
            if fd == self._pidfd:
                exited = True
            elif ev & select.POLLIN:
                output = True
            else:  # POLLHUP/POLLERR without data: stdout is closed
                exited = True
        if output:
            return IDLE_OUTPUT
        return IDLE_EXITED if exited else IDLE_OK

    def stop(self, exit_wait: float, grace: float) -> ExitInfo:
        """Graceful stop: close stdin, wait; SIGTERM the group, wait ``grace``; SIGKILL."""
        child = self.child
        child.close_stdin()
        stage = ExitStage.STDIN_CLOSE
        rc = child.wait(exit_wait, reap=False)
        if rc is None:
            stage = ExitStage.SIGTERM
            _signal_all(child, signal.SIGTERM)
            rc = child.wait(grace, reap=False)
        if rc is None:
            stage = ExitStage.SIGKILL
            _signal_all(child, signal.SIGKILL)
        return self._finish(stage)

    def kill(self) -> ExitInfo:
        """End it now, after a timeout or a protocol error."""
        _signal_all(self.child, signal.SIGKILL)
        return self._finish(ExitStage.KILLED_AFTER_ERROR)

    def reap_dead(self) -> ExitInfo:
        """It hit EOF or exited on its own: collect it, killing it if it lingers."""
        if self.child.wait(_EOF_EXIT_WAIT, reap=False) is None:
            _signal_all(self.child, signal.SIGKILL)
            return self._finish(ExitStage.KILLED_AFTER_ERROR)
        return self._finish(ExitStage.CRASH)

    def _finish(self, stage: ExitStage) -> ExitInfo:
        child = self.child
        # The leader is dead or dying but not yet reaped, so its pid (the group
        # id) cannot be reused: SIGKILL whatever else is left in the group, then
        # reap the leader last.
        child.wait(None, reap=False)
        child.kill()
        rc = child.wait(None)
        PUMP.unregister(self.tail)
        child.close()
        self.reader.clear()
        return ExitInfo(
            pid=self.pid,
            stage=stage,
            returncode=rc,
            signal=_signal_name(rc),
            at=datetime.now(timezone.utc),
        )

    def forget(self) -> None:
        """After ``fork()``, in the child: drop the parent's fds without signalling anything."""
        self.child.close()

"""The twin's :class:`Child`: wait on a pidfd (or ``waitpid`` with a backoff), signal
the process and its group, and close the parent's ends of its pipes (the compiled
core's ``_core_child.pxi``).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from typing import TYPE_CHECKING, Optional

from ._core_constants import DEFAULT_MAX_FRAME_BYTES
from ._core_py_clock import check_deadline, close_quietly, wait_fd

if TYPE_CHECKING:
    from ._core_py_frames import FrameReader

_POLLIN = select.POLLIN


def _status_from_waitid(res: "os.waitid_result") -> int:
    if res.si_code == os.CLD_EXITED:
        return int(res.si_status)
    return -int(res.si_status)  # CLD_KILLED or CLD_DUMPED


class Child:
    """A spawned child process and the parent's ends of its pipes."""

    __slots__ = ("_pid", "_pidfd", "_stdin", "_stdout", "_stderr", "_returncode", "__weakref__")

    def __init__(self, pid: int, pidfd: int, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> None:
        """Made by :func:`spawn`; not for direct use."""
        self._pidfd = self._stdin = self._stdout = self._stderr = -1
        self._returncode: Optional[int] = None
        if pid <= 0:  # kill(0)/killpg(0) would signal the host's own group
            raise ValueError(f"pid must be positive, not {pid!r}")
        self._pid = pid
        self._pidfd = pidfd
        self._stdin = stdin_fd
        self._stdout = stdout_fd
        self._stderr = stderr_fd

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def pidfd(self) -> int:
        """A pidfd for the child, or ``-1`` where the kernel has none."""
        return self._pidfd

    @property
    def stdin_fd(self) -> int:
        """``-1`` once closed."""
        return self._stdin

    @property
    def stdout_fd(self) -> int:
        return self._stdout

    @property
    def stderr_fd(self) -> int:
        return self._stderr

    @property
    def returncode(self) -> Optional[int]:
        """``None`` until reaped; then the exit status, or ``-signum``."""
        return self._returncode

    def reader(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> FrameReader:
        """``FrameReader(stdout_fd, max_frame_bytes, pidfd)``."""
        # Here, not at the top: FrameReader.request checks its argument is a Child,
        # so the frames unit imports this one.
        from ._core_py_frames import FrameReader

        return FrameReader(self._stdout, max_frame_bytes, self._pidfd)

    def __repr__(self) -> str:
        state = "running" if self._returncode is None else f"returncode={self._returncode}"
        return f"<Child pid={self._pid} {state}>"

    def _try_reap(self) -> Optional[int]:
        """``waitpid(WNOHANG)``; sets and returns ``returncode`` once the child is gone."""
        if self._returncode is not None:
            return self._returncode
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped behind our back (SIGCHLD ignored, or a waitpid(-1)
            # elsewhere): the status is lost. subprocess reports 0 too.
            self._returncode = 0
            return 0
        if pid == 0:
            return None
        self._returncode = os.waitstatus_to_exitcode(status)
        return self._returncode

    def _try_peek(self) -> Optional[int]:
        """``waitid(WEXITED | WNOWAIT | WNOHANG)``: the would-be return code of an
        exited child, leaving it a zombie."""
        if self._returncode is not None:
            return self._returncode
        try:
            res = os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            self._returncode = 0
            return 0
        if res is None or res.si_pid == 0:
            return None
        return _status_from_waitid(res)

    def poll(self) -> Optional[int]:
        """Reap the child if it has exited (``WNOHANG``) and return ``returncode``."""
        return self._try_reap()

    def wait(self, timeout: Optional[float] = None, *, reap: bool = True) -> Optional[int]:
        """Wait up to ``timeout`` seconds for the child to exit; ``None`` on timeout."""
        check = self._try_reap if reap else self._try_peek
        rc = check()
        if rc is not None:
            return rc
        timeout = check_deadline(timeout)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if self._pidfd >= 0:
            # The pidfd turns readable when the child exits: no latency, no
            # spinning. If it is readable but the child is not waitable (the
            # pidfd was closed under us, or poll and waitid disagree), back off.
            try:
                if not wait_fd(self._pidfd, _POLLIN, deadline):
                    return check()
            except OSError:
                pass
            rc = check()
            if rc is not None:
                return rc
        delay = 50e-6
        while True:
            rc = check()
            if rc is not None:
                return rc
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0.0:
                    return None
                time.sleep(min(delay, remaining))
            else:
                time.sleep(delay)
            delay = min(delay * 2.0, 0.001)

    def send_signal(self, sig: int) -> None:
        """Signal the leader only, through its pidfd where there is one. No-op once reaped."""
        if self._returncode is not None:
            return
        if self._pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
                return
            except ProcessLookupError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOSYS:  # a seccomp policy may allow pidfd_open only
                    raise
        try:
            # Safe: an unreaped child keeps its pid, even as a zombie.
            os.kill(self._pid, sig)
        except ProcessLookupError:
            pass

    def signal_group(self, sig: int) -> None:
        """Signal the whole process group. No-op once the leader is reaped; ``ESRCH`` is ignored."""
        if self._returncode is not None:
            return
        try:
            os.killpg(self._pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        """``signal_group(SIGTERM)``."""
        self.signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """``signal_group(SIGKILL)``."""
        self.signal_group(signal.SIGKILL)

    def close_stdin(self) -> None:
        """Close the parent's end of the child's stdin. Idempotent."""
        fd, self._stdin = self._stdin, -1
        close_quietly(fd)

    def close(self) -> None:
        """Close every fd the parent holds for this child (pipes and pidfd). Does not reap."""
        fds = (self._stdin, self._stdout, self._stderr, self._pidfd)
        self._stdin = self._stdout = self._stderr = self._pidfd = -1
        for fd in fds:
            close_quietly(fd)

    def finish(self) -> Optional[int]:
        """kill(), a blocking wait() and close(), in one call; returns ``returncode``."""
        self.signal_group(signal.SIGKILL)
        rc = self.wait(None)
        self.close()
        return rc

    def __del__(self) -> None:
        # Closes fds only: signalling or reaping from a finalizer could hit an
        # unrelated process or block the garbage collector.
        try:
            self.close()
        except AttributeError:  # __init__ never ran
            pass

"""The twin's frames: :class:`FrameReader` (frames split out of a pipe, ``exchange`` /
``request``), :func:`split_result` (the head of a success reply) and :func:`write_all`
(SIGPIPE kept from the host); the compiled core's ``_core_frames.pxi``,
``_core_result.pxi`` and ``_core_write.pxi``.
"""

from __future__ import annotations

import operator
import os
import select
import signal
import time
from typing import Optional

from ._core_constants import DEFAULT_MAX_FRAME_BYTES
from ._core_constants import EXIT_WATCH as _EXIT_WATCH
from ._core_errors import DeadlineExceeded, FrameTooLargeError, PipeClosed, ProcessExited, StreamEOF
from ._core_py_child import Child
from ._core_py_clock import Bytes, as_int, check_deadline, poll_until, wait_fd
from ._sigpipe import write_sigpipe_blocked

_READ_SIZE = 64 * 1024
# Dropping the consumed head of the buffer costs a memmove of what is left, so
# it is done only once the head is both big and at least half of the buffer:
# each byte is then moved O(1) times on average.
_COMPACT_MIN = 64 * 1024

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


class FrameReader:
    """Splits a byte stream into newline-delimited frames."""

    __slots__ = ("_fd", "_exit_fd", "_max", "_buf", "_pos", "_scan", "_nonblocking", "_busy")

    def __init__(self, fd: int, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, exit_fd: int = -1) -> None:
        fd = as_int(fd, "fd")
        max_frame_bytes = as_int(max_frame_bytes, "max_frame_bytes")
        exit_fd = as_int(exit_fd, "exit_fd")
        if fd < -1:
            raise ValueError(f"fd must be a file descriptor or -1, not {fd!r}")
        if exit_fd < -1:
            raise ValueError(f"exit_fd must be a file descriptor or -1, not {exit_fd!r}")
        if max_frame_bytes < 1:
            raise ValueError(f"max_frame_bytes must be at least 1, not {max_frame_bytes!r}")
        self._fd = fd
        self._exit_fd = exit_fd
        self._max = max_frame_bytes
        self._buf = bytearray()
        # _buf[:_pos] has been returned already; _buf[_pos:_scan] holds no b"\n".
        self._pos = 0
        self._scan = 0
        # On a blocking fd read() would ignore the deadline; poll first there.
        try:
            self._nonblocking = fd < 0 or not os.get_blocking(fd)
        except OSError:
            self._nonblocking = True
        self._busy = False

    def _idle(self) -> None:
        # read_frame drops the GIL in os.read and poll; another thread
        # feeding or popping then would interleave with it.
        if self._busy:
            raise RuntimeError("FrameReader is in use by another thread")

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def exit_fd(self) -> int:
        return self._exit_fd

    @property
    def max_frame_bytes(self) -> int:
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes held that have not yet been returned as frames."""
        return len(self._buf) - self._pos

    def __repr__(self) -> str:
        return (
            f"<FrameReader fd={self._fd} max_frame_bytes={self._max}"
            f" buffered={self.buffered}>"
        )

    def spin_ready(self, deadline: Optional[float] = None) -> bool:
        """Always ``False``: the twin never spins."""
        self._idle()
        check_deadline(deadline)
        return False

    def read_frame(self, deadline: Optional[float] = None) -> bytes:
        """Return the next frame, reading from ``fd`` as needed."""
        self._idle()
        frame = self._pop()
        if frame is not None:
            return frame
        deadline = check_deadline(deadline)
        start = time.monotonic()
        self._busy = True
        try:
            while True:
                if not self._nonblocking and deadline is not None:
                    self._wait_readable(deadline, start)
                # _pop did not raise, so the unfinished head line is within
                # the limit: one more read keeps the buffer under limit + 64 KiB.
                try:
                    data: Optional[bytes] = os.read(self._fd, _READ_SIZE)
                except BlockingIOError:
                    data = None
                if data is None:
                    self._wait_readable(deadline, start)
                    continue
                if not data:
                    raise StreamEOF(len(self._buf) - self._pos)
                self._append(data)
                frame = self._pop()
                if frame is not None:
                    return frame
        finally:
            self._busy = False

    def exchange(self, fd: int, data: Bytes, deadline: Optional[float] = None) -> bytes:
        """One request and its reply: write_all, then read_frame, in one call."""
        self._idle()
        write_all(fd, data, deadline)
        return self.read_frame(deadline)

    def exchange_if_idle(
        self, fd: int, data: Bytes, deadline: Optional[float] = None, pidfd: int = -1
    ) -> Optional[bytes]:
        """idle_state() first; exchange() only if it is 0, else None."""
        if self.idle_state(pidfd) != 0:
            return None
        return self.exchange(fd, data, deadline)

    def request(self, child: Child, data: Bytes, deadline: Optional[float] = None) -> Optional[bytes]:
        """exchange_if_idle() on ``child``'s stdin and pidfd."""
        if not isinstance(child, Child):
            raise TypeError(f"child must be a Child, not {type(child).__name__}")
        return self.exchange_if_idle(child.stdin_fd, data, deadline, child.pidfd)

    def idle_state(self, pidfd: int = -1) -> int:
        """What came while no request was in flight (0, 1 or 2), with one poll that never waits."""
        pidfd = as_int(pidfd, "pidfd")
        self._idle()
        if len(self._buf) > self._pos:
            return 2
        poller = select.poll()
        if self._fd >= 0:
            poller.register(self._fd, _POLLIN)
        if pidfd >= 0:
            poller.register(pidfd, _POLLIN)
        state = 0
        for fd, ev in poller.poll(0):
            if fd == self._fd and ev & _POLLIN:
                return 2
            state = 1  # POLLHUP/POLLERR/POLLNVAL on fd, or the pidfd
        return state

    def _wait_readable(self, deadline: Optional[float], start: float) -> None:
        """Wait until ``fd`` is readable, or raise DeadlineExceeded. With an exit fd,
        a wait that has lasted _EXIT_WATCH since ``start`` watches it too, and
        raises ProcessExited if the process exited while ``fd`` had nothing to
        read (what it wrote before its exit is in the pipe by then)."""
        exit_fd = self._exit_fd
        if exit_fd >= 0:
            watch = start + _EXIT_WATCH
            if (deadline is None or watch < deadline) and wait_fd(self._fd, _POLLIN, watch):
                return
            ready = poll_until(((self._fd, _POLLIN), (exit_fd, _POLLIN)), deadline)
            if ready:
                if not any(fd == self._fd for fd, _ in ready):
                    raise ProcessExited(len(self._buf) - self._pos)
                return
        elif wait_fd(self._fd, _POLLIN, deadline):
            return
        assert deadline is not None
        raise DeadlineExceeded("read a frame", max(0.0, deadline - start))

    def feed(self, data: Bytes) -> None:
        """Append bytes read elsewhere."""
        self._idle()
        self._append(data)

    def _append(self, data: Bytes) -> None:
        buf = self._buf
        pos = self._pos
        if pos:
            if pos == len(buf):
                buf.clear()
                self._pos = self._scan = 0
            elif pos >= _COMPACT_MIN and pos * 2 >= len(buf):
                del buf[:pos]
                self._pos = 0
                self._scan -= pos
        buf += data

    def next_frame(self) -> Optional[bytes]:
        """Pop the next complete frame from the buffer without I/O, or ``None``."""
        if self._busy:  # _idle(), inlined on the per-frame path
            self._idle()
        return self._pop()

    def _pop(self) -> Optional[bytes]:
        buf = self._buf
        pos = self._pos
        end = buf.find(b"\n", self._scan)
        if end < 0:
            size = len(buf)
            self._scan = size
            if size - pos > self._max:
                raise FrameTooLargeError(self._max, size - pos)
            return None
        if end - pos > self._max:
            raise FrameTooLargeError(self._max, end - pos)
        self._pos = self._scan = end + 1
        if end > pos and buf[end - 1] == 13:  # b"\r"
            end -= 1
        return bytes(buf[pos:end])

    def clear(self) -> None:
        """Drop everything buffered."""
        self._idle()
        self._buf.clear()
        self._pos = self._scan = 0


# --- the head of a success reply -----------------------------------------------

_RESULT_HEAD = b'{"jsonrpc":"2.0","id":%d,"result":'
_MAX_U64 = 2**64 - 1


def split_result(frame: bytes, request_id: int) -> Optional[bytes]:
    """The result bytes of a success reply to ``request_id``, or ``None``."""
    if type(frame) is not bytes:  # exactly bytes, as frames are
        raise TypeError(f"split_result() needs bytes, not {type(frame).__name__}")
    request_id = operator.index(request_id)
    if not 0 <= request_id <= _MAX_U64:
        raise OverflowError(f"request_id {request_id} is not an unsigned 64-bit integer")
    head = _RESULT_HEAD % request_id
    if len(frame) > len(head) and frame.endswith(b"}") and frame.startswith(head):
        return frame[len(head) : -1]
    return None


# --- writing ----------------------------------------------------------------



def write_all(fd: int, data: Bytes, deadline: Optional[float] = None) -> None:
    """Write all of ``data`` to ``fd``."""
    with memoryview(data) as original:
        if original.ndim == 1 and original.itemsize == 1:
            _write_view(fd, original, deadline)
        else:
            with original.cast("B") as flat:
                _write_view(fd, flat, deadline)


def _write_view(fd: int, view: memoryview, deadline: Optional[float]) -> None:
    size = len(view)
    if size == 0:
        return
    deadline = check_deadline(deadline)
    start = time.monotonic() if deadline is not None else 0.0
    # Python ignores SIGPIPE at start-up; a host (or an embedding application)
    # may have restored it, and then one EPIPE kills it. Asked on every call:
    # the disposition can change at any time.
    guard = signal.getsignal(signal.SIGPIPE) != signal.SIG_IGN
    done = 0
    while done < size:
        try:
            if guard:
                n = write_sigpipe_blocked(fd, view[done:])
            else:
                n = os.write(fd, view[done:])
        except BlockingIOError:
            n = 0
        except BrokenPipeError:
            raise PipeClosed(fd) from None
        if n:
            done += n
        elif not wait_fd(fd, _POLLOUT, deadline):
            assert deadline is not None
            raise DeadlineExceeded(f"write to fd {fd}", max(0.0, deadline - start))

"""The pure-Python twin of the compiled core ``_core``: same names, same signatures.

It is the core on interpreters other than CPython, in pure-Python builds and
under ``PLUGIN_CLIENT_NO_EXTENSIONS=1``, and the type source for the selector
(:mod:`plugin_client._impl`) under ``TYPE_CHECKING``. The contract is
``_core.pyi``; this module follows it with the standard library only:

* :class:`FrameReader` splits newline-delimited frames out of a ``bytearray``
  with ``bytearray.find`` and a read offset (amortized O(n): the consumed head
  is dropped only when it is at least half the buffer). ``read_frame`` tries
  ``os.read`` first and waits with :func:`select.poll` on ``EAGAIN``.
* :func:`write_all` loops over ``os.write``, waiting with ``poll`` for
  ``POLLOUT``. If SIGPIPE is not ignored (Python ignores it at start-up, but a
  host may restore the default), it is blocked around each write and an EPIPE's
  SIGPIPE is consumed with ``sigtimedwait``, so it is never delivered.
* :func:`spawn` is :func:`os.posix_spawn` with ``dup2`` file actions for the
  three pipes, ``setpgroup=0``, every signal at its default disposition and an
  empty signal mask. A working directory is set in a short-lived helper thread
  that first unshares its filesystem context (``unshare(CLONE_FS)``), so the
  host's own working directory never changes, not even for an instant.
  A descriptor (``exec_fd``) is run as the path ``/proc/self/fd/N``, which the
  kernel resolves before the exec closes that close-on-exec descriptor; the
  file actions leave it open until then.
* :class:`Child` waits on a pidfd with ``poll`` where the kernel has pidfds,
  else with ``waitpid(WNOHANG)`` and a backoff from 50 µs to 1 ms.

What it deliberately does not do, and known limitations:

* It releases the GIL only where CPython's own ``os``/``select`` calls do, so
  it is slower than the compiled core, never different in behaviour.
* ``os.posix_spawn`` has a ``closefrom`` action only from Python 3.13 (and
  glibc 2.34). Without it :func:`spawn` lists ``/proc/self/fd`` (or scans up
  to ``RLIMIT_NOFILE``) and adds a ``close`` action for every inheritable fd
  above 2. An inheritable fd that another thread creates between that listing
  and the spawn then reaches the child: a race the compiled core
  (``closefrom``/``close_range`` in the child) does not have. fds Python
  creates are close-on-exec, so only fds made inheritable on purpose
  (``os.set_inheritable``, ``pass_fds`` helpers) are at risk.
* The C library reserves a few real-time signals for itself (glibc 32 and 33,
  musl 32 to 34), and its ``posix_spawn`` sets them to ``SIG_IGN`` in the
  child unless they are in the "set to default" set, which
  ``os.posix_spawn`` builds with ``sigaddset``, which refuses them. So in the
  twin those stay ignored in the child (a child on the same libc reinstalls
  its own handlers for them); every other signal is at its default. The
  compiled core resets them too.
* ``cwd`` needs ``unshare(CLONE_FS)`` (:func:`os.unshare` on Python 3.12+, else
  through :mod:`ctypes`). Where that is unavailable (not Linux, or a seccomp
  policy that forbids it) ``spawn(..., cwd=...)`` raises
  :class:`NotImplementedError` rather than ``chdir`` the whole process.
* A relative ``argv[0]`` is resolved against ``cwd`` when one is given, as
  with ``posix_spawn_file_actions_addchdir_np``.
* If something else reaps the child (``SIGCHLD`` set to ``SIG_IGN``, or a
  stray ``waitpid(-1)``), its status is lost: ``waitpid`` fails with
  ``ECHILD`` and ``returncode`` becomes ``0``, as :mod:`subprocess` does.
* :meth:`Child.__del__` closes the parent's fds and nothing else: it never
  signals or reaps, so a dropped, unreaped child stays a zombie until the
  host reaps it.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import math
import operator
import os
import resource
import select
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Deque, Dict, List, Optional, Tuple, Union

# One place for the values both cores must agree on (see _core_constants.py).
from ._core_constants import DEFAULT_MAX_FRAME_BYTES
from ._core_constants import EXIT_WATCH as _EXIT_WATCH
from ._core_constants import STDOUT_PIPE_BYTES as _STDOUT_PIPE_BYTES
from ._core_errors import (
    DeadlineExceeded,
    FrameTooLargeError,
    PipeClosed,
    ProcessExited,
    SpawnFailed,
    StreamEOF,
)

__all__ = (
    "IMPLEMENTATION",
    "DEFAULT_MAX_FRAME_BYTES",
    "Child",
    "FrameReader",
    "RestartWindow",
    "monotonic",
    "spawn",
    "spawn_method",
    "split_result",
    "write_all",
)

_Bytes = Union[bytes, bytearray, memoryview]
_StrOrBytes = Union[str, bytes]
# Mapping is invariant in its key type, so ``Mapping[str | bytes, ...]`` alone
# would refuse a plain ``dict[str, str]`` (or ``dict[bytes, bytes]``).
_Env = Union[
    Mapping[str, _StrOrBytes],
    Mapping[bytes, _StrOrBytes],
    Mapping[_StrOrBytes, _StrOrBytes],
]

IMPLEMENTATION = "python"

_READ_SIZE = 64 * 1024
# Dropping the consumed head of the buffer costs a memmove of what is left, so
# it is done only once the head is both big and at least half of the buffer:
# each byte is then moved O(1) times on average.
_COMPACT_MIN = 64 * 1024

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
# poll() takes an int of milliseconds; a far deadline (even inf) waits in steps.
_MAX_POLL_MS = 2**31 - 1


def monotonic() -> float:
    """``CLOCK_MONOTONIC`` now, in seconds; the same clock as :func:`time.monotonic`."""
    return time.monotonic()


def _check_deadline(deadline: Optional[float]) -> Optional[float]:
    """``None`` or the deadline as a float; NaN is refused (it would never pass)."""
    if deadline is None:
        return None
    value = float(deadline)
    if value != value:
        raise ValueError("deadline must be a number of seconds, not NaN")
    return value


def _poll_timeout_ms(deadline: Optional[float]) -> Optional[int]:
    """Milliseconds until ``deadline`` for ``poll`` (rounded up, so it never wakes
    early and spins); ``None`` for no deadline; ``0`` once it has passed."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0.0:
        return 0
    if remaining >= _MAX_POLL_MS / 1000.0:
        return _MAX_POLL_MS
    return max(1, math.ceil(remaining * 1000.0))


def _wait_fd(fd: int, events: int, deadline: Optional[float]) -> bool:
    """Wait until ``fd`` is ready for ``events`` (or has hung up); ``False`` if the
    deadline passed first. ``poll`` itself retries on EINTR (PEP 475)."""
    return bool(_poll_until(((fd, events),), deadline))


def _poll_until(fds: Sequence[Tuple[int, int]], deadline: Optional[float]) -> List[Tuple[int, int]]:
    """poll() ``(fd, events)`` pairs until one is ready: the ready ones, with their
    events; ``[]`` once ``deadline`` has passed."""
    poller = select.poll()
    for fd, events in fds:
        poller.register(fd, events)
    while True:
        timeout = _poll_timeout_ms(deadline)
        if timeout == 0:
            return []
        ready = poller.poll(timeout)
        if ready:
            return ready
        # poll's millisecond clock and CLOCK_MONOTONIC disagree by a hair
        # sometimes; loop until the deadline has really passed.


# --- frames -----------------------------------------------------------------


class FrameReader:
    """Splits a byte stream into newline-delimited frames."""

    __slots__ = ("_fd", "_exit_fd", "_max", "_buf", "_pos", "_scan", "_nonblocking", "_busy")

    def __init__(self, fd: int, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, exit_fd: int = -1) -> None:
        fd = _as_int(fd, "fd")
        max_frame_bytes = _as_int(max_frame_bytes, "max_frame_bytes")
        exit_fd = _as_int(exit_fd, "exit_fd")
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
        _check_deadline(deadline)
        return False

    def read_frame(self, deadline: Optional[float] = None) -> bytes:
        """Return the next frame, reading from ``fd`` as needed."""
        self._idle()
        frame = self._pop()
        if frame is not None:
            return frame
        deadline = _check_deadline(deadline)
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

    def exchange(self, fd: int, data: _Bytes, deadline: Optional[float] = None) -> bytes:
        """One request and its reply: write_all, then read_frame, in one call."""
        self._idle()
        write_all(fd, data, deadline)
        return self.read_frame(deadline)

    def exchange_if_idle(
        self, fd: int, data: _Bytes, deadline: Optional[float] = None, pidfd: int = -1
    ) -> Optional[bytes]:
        """idle_state() first; exchange() only if it is 0, else None."""
        if self.idle_state(pidfd) != 0:
            return None
        return self.exchange(fd, data, deadline)

    def request(self, child: "Child", data: _Bytes, deadline: Optional[float] = None) -> Optional[bytes]:
        """exchange_if_idle() on ``child``'s stdin and pidfd."""
        if not isinstance(child, Child):
            raise TypeError(f"child must be a Child, not {type(child).__name__}")
        return self.exchange_if_idle(child.stdin_fd, data, deadline, child.pidfd)

    def idle_state(self, pidfd: int = -1) -> int:
        """What came while no request was in flight (0, 1 or 2), with one poll that never waits."""
        pidfd = _as_int(pidfd, "pidfd")
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
            if (deadline is None or watch < deadline) and _wait_fd(self._fd, _POLLIN, watch):
                return
            ready = _poll_until(((self._fd, _POLLIN), (exit_fd, _POLLIN)), deadline)
            if ready:
                if not any(fd == self._fd for fd, _ in ready):
                    raise ProcessExited(len(self._buf) - self._pos)
                return
        elif _wait_fd(self._fd, _POLLIN, deadline):
            return
        assert deadline is not None
        raise DeadlineExceeded("read a frame", max(0.0, deadline - start))

    def feed(self, data: _Bytes) -> None:
        """Append bytes read elsewhere."""
        self._idle()
        self._append(data)

    def _append(self, data: _Bytes) -> None:
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

_SIGPIPE_SET = {signal.SIGPIPE}


def write_all(fd: int, data: _Bytes, deadline: Optional[float] = None) -> None:
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
    deadline = _check_deadline(deadline)
    start = time.monotonic() if deadline is not None else 0.0
    # Python ignores SIGPIPE at start-up; a host (or an embedding application)
    # may have restored it, and then one EPIPE kills it. Asked on every call:
    # the disposition can change at any time.
    guard = signal.getsignal(signal.SIGPIPE) != signal.SIG_IGN
    done = 0
    while done < size:
        try:
            if guard:
                n = _write_sigpipe_blocked(fd, view[done:])
            else:
                n = os.write(fd, view[done:])
        except BlockingIOError:
            n = 0
        except BrokenPipeError:
            raise PipeClosed(fd) from None
        if n:
            done += n
        elif not _wait_fd(fd, _POLLOUT, deadline):
            assert deadline is not None
            raise DeadlineExceeded(f"write to fd {fd}", max(0.0, deadline - start))


def _write_sigpipe_blocked(fd: int, chunk: memoryview) -> int:
    """One ``os.write`` with SIGPIPE blocked in this thread; a SIGPIPE that the
    write itself raised is consumed, one that was already pending is left alone."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGPIPE_SET)
    try:
        pending_before = signal.SIGPIPE in signal.sigpending()
        try:
            return os.write(fd, chunk)
        except BrokenPipeError:
            if not pending_before:
                signal.sigtimedwait(_SIGPIPE_SET, 0)
            raise
    finally:
        if signal.SIGPIPE not in old:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


# --- restart window ---------------------------------------------------------


class RestartWindow:
    """A sliding window of crash timestamps on ``CLOCK_MONOTONIC``."""

    __slots__ = ("_window", "_cap", "_times", "_last")

    def __init__(self, window: float, cap: int) -> None:
        if isinstance(window, bool) or isinstance(cap, bool):
            raise ValueError(f"window and cap must be numbers, not bools: {window!r}, {cap!r}")
        if not isinstance(window, (int, float)):
            raise TypeError(f"window must be a number of seconds, not {window!r}")
        cap = _as_int(cap, "cap")
        window = float(window)
        if not window > 0.0:  # also rejects NaN
            raise ValueError(f"window must be > 0 seconds, not {window!r}")
        if cap < 1:
            raise ValueError(f"cap must be >= 1, not {cap!r}")
        self._window = window
        self._cap = cap
        self._times: Deque[float] = collections.deque(maxlen=cap)
        self._last: Optional[float] = None

    @property
    def window(self) -> float:
        return self._window

    @property
    def cap(self) -> int:
        return self._cap

    @property
    def last(self) -> Optional[float]:
        """The newest recorded timestamp, or ``None``; kept across pruning."""
        return self._last

    def __repr__(self) -> str:
        return f"<RestartWindow window={self._window!r} cap={self._cap} held={len(self._times)}>"

    def record(self, now: Optional[float] = None) -> int:
        """Record a crash at ``now``; return the count within the window as of ``now``."""
        t = time.monotonic() if now is None else float(now)
        self._times.append(t)
        self._last = t
        return self.count(t)

    def count(self, now: Optional[float] = None) -> int:
        """Prune timestamps older than ``now - window`` and return how many are left."""
        t = time.monotonic() if now is None else float(now)
        cutoff = t - self._window
        times = self._times
        while times and times[0] < cutoff:
            times.popleft()
        return len(times)

    def exceeded(self, now: Optional[float] = None) -> bool:
        """``count(now) >= cap``."""
        return self.count(now) >= self._cap

    def clear(self) -> None:
        """Forget every timestamp (``last`` too)."""
        self._times.clear()
        self._last = None


# --- spawning ---------------------------------------------------------------

_SIGDEF = frozenset(
    s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)
)
_CLONE_FS = 0x00000200


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    return int(value)


def _fd_dir() -> Optional[str]:
    for d in ("/proc/self/fd", "/dev/fd"):
        try:
            os.listdir(d)
        except OSError:
            continue
        return d
    return None


_FD_DIR = _fd_dir()
# Python 3.13+, where the C library has posix_spawn_file_actions_addclosefrom_np.
_CLOSEFROM: Optional[int] = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)


def spawn_method() -> str:
    """How spawn() closes inherited fds on this machine."""
    if _CLOSEFROM is not None:
        return "os.posix_spawn+closefrom"
    if _FD_DIR is not None:
        return f"os.posix_spawn+close_inheritable({_FD_DIR})"
    return "os.posix_spawn+close_inheritable(scan to RLIMIT_NOFILE)"


def _inheritable_fds() -> List[int]:
    """Open fds above 2 that would survive ``exec``. Racy by nature: see the
    module docstring."""
    if _FD_DIR is not None:
        candidates: Sequence[int] = [int(n) for n in os.listdir(_FD_DIR) if n.isdigit()]
    else:  # pragma: no cover - Linux always has /proc/self/fd or /dev/fd
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft > 1 << 20:
            soft = 1 << 20
        candidates = range(3, soft)
    out = []
    for fd in candidates:
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                out.append(fd)
        except OSError:  # closed since (or the listing's own directory fd)
            pass
    return out


_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Python < 3.10 lacks the name


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _STDOUT_PIPE_BYTES)
    except OSError:  # over the user's pipe quota, or not Linux: the default size
        pass


def _pipe() -> Tuple[int, int]:
    """A close-on-exec pipe whose fds are both above 2.

    If the host closed its stdin/stdout/stderr, ``pipe`` hands out 0, 1 or 2;
    a ``dup2`` onto the same number would then be a no-op that leaves
    close-on-exec set, and a later ``dup2`` could overwrite a pipe end.
    """
    ends = list(os.pipe())
    try:
        for i in (0, 1):
            if ends[i] <= 2:
                fd, ends[i] = ends[i], -1
                ends[i] = _move_above_2(fd)
    except BaseException:
        for fd in ends:
            _close_quietly(fd)
        raise
    return ends[0], ends[1]


def _move_above_2(fd: int) -> int:
    """A close-on-exec duplicate of ``fd`` numbered 3 or more; ``fd`` is closed
    whether or not that works."""
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _close_quietly(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _unshare_fs() -> None:
    """Give the calling thread its own cwd (and umask/root), so ``chdir`` in it
    changes nothing for the rest of the process."""
    unshare = getattr(os, "unshare", None)
    if unshare is not None:  # Python 3.12+
        unshare(getattr(os, "CLONE_FS", _CLONE_FS))
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "unshare", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "unshare is not available")
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    if fn(_CLONE_FS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _posix_spawn_in(
    cwd: _StrOrBytes,
    path: _StrOrBytes,
    argv: List[_StrOrBytes],
    env: _Env,
    file_actions: List[Tuple[int, ...]],
) -> int:
    """``os.posix_spawn`` from a helper thread that has its own working directory.

    ``os.posix_spawn`` has no chdir action, and ``os.chdir`` in the host would
    change every thread's relative paths. The kernel copies the spawning
    thread's filesystem context into the child, so a thread that has
    unshared it and moved into ``cwd`` spawns the child there.
    """
    result: List[int] = []
    error: List[BaseException] = []

    def run() -> None:
        try:
            try:
                _unshare_fs()
            except OSError as exc:
                raise NotImplementedError(
                    "spawn(cwd=...) in the pure-Python core needs unshare(CLONE_FS),"
                    f" which failed here ({exc}); use the compiled core or cwd=None"
                ) from exc
            try:
                os.chdir(cwd)
            except OSError as exc:
                raise SpawnFailed(exc.errno or errno.ENOENT, os.fsdecode(cwd)) from None
            result.append(_posix_spawn(path, argv, env, file_actions))
        except BaseException as exc:  # re-raised in the calling thread
            error.append(exc)

    t = threading.Thread(target=run, name="plugin_client-spawn", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def _exec_fd_arg(exec_fd: int) -> int:
    """``exec_fd`` checked: an open, close-on-exec descriptor (else it would reach
    the plugin)."""
    if isinstance(exec_fd, bool) or not isinstance(exec_fd, int):
        raise TypeError(f"exec_fd must be an int, not {exec_fd!r}")
    try:
        flags = fcntl.fcntl(exec_fd, fcntl.F_GETFD)
    except OSError as exc:
        raise OSError(exc.errno, f"{os.strerror(exc.errno or 0)} (fcntl(F_GETFD) on exec_fd {exec_fd})") from None
    if not flags & fcntl.FD_CLOEXEC:
        raise ValueError(f"exec_fd {exec_fd} must be close-on-exec, or the plugin would inherit it")
    return int(exec_fd)


def _posix_spawn(
    path: _StrOrBytes,
    argv: List[_StrOrBytes],
    env: _Env,
    file_actions: List[Tuple[int, ...]],
) -> int:
    # Keys as bytes: os.posix_spawn takes str and bytes alike (both through
    # the filesystem encoding); this only gives it one key type.
    envb: Dict[bytes, _StrOrBytes] = {os.fsencode(k): v for k, v in env.items()}
    return os.posix_spawn(
        path,
        argv,
        envb,
        file_actions=file_actions,
        setpgroup=0,
        setsigdef=_SIGDEF,
        setsigmask=(),
    )


def spawn(
    argv: Sequence[_StrOrBytes],
    env: _Env,
    *,
    cwd: Optional[_StrOrBytes] = None,
    exec_fd: Optional[int] = None,
) -> "Child":
    """Start ``argv[0]`` (a path; no ``PATH`` search) and return its Child."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a sequence of arguments, not one string")
    args = list(argv)
    if not args:
        raise ValueError("argv must not be empty")
    path = args[0]
    exec_path: _StrOrBytes = path
    fds: List[int] = []
    moved_exec = -1
    if exec_fd is not None:
        exec_fd = _exec_fd_arg(exec_fd)
    try:
        if exec_fd is not None:
            if exec_fd <= 2:  # off the numbers the child's dup2s write over
                exec_fd = moved_exec = fcntl.fcntl(exec_fd, fcntl.F_DUPFD_CLOEXEC, 3)
            exec_path = f"/proc/self/fd/{exec_fd}"
        for _ in range(3):
            fds.extend(_pipe())
        in_r, in_w, out_r, out_w, err_r, err_w = fds
        # Before the spawn, so nothing after it can fail and orphan the child.
        # O_NONBLOCK is per open file description: the child's ends keep
        # blocking I/O.
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        _grow_pipe(out_r)
        actions: List[Tuple[int, ...]] = [
            (os.POSIX_SPAWN_DUP2, in_r, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
        ]
        if _CLOSEFROM is not None and exec_fd is not None:
            # Every fd but exec_fd, which must stay open until the exec closes it.
            actions.extend((os.POSIX_SPAWN_CLOSE, fd) for fd in range(3, exec_fd))
            actions.append((_CLOSEFROM, exec_fd + 1))
        elif _CLOSEFROM is not None:
            # After the dup2s: it closes our pipe ends' originals in the child too.
            actions.append((_CLOSEFROM, 3))
        else:
            actions.extend((os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds())
        try:
            if cwd is None:
                pid = _posix_spawn(exec_path, args, env, actions)
            else:
                pid = _posix_spawn_in(cwd, exec_path, args, env, actions)
        except SpawnFailed:
            raise
        except OSError as exc:
            raise SpawnFailed(exc.errno or errno.EINVAL, os.fsdecode(path)) from None
        for fd in (in_r, out_w, err_w):
            fds.remove(fd)
            _close_quietly(fd)
    except BaseException:
        for fd in fds:
            _close_quietly(fd)
        raise
    finally:
        _close_quietly(moved_exec)
    pidfd = -1
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            # Safe from pid reuse: the child is ours and not reaped yet.
            pidfd = pidfd_open(pid)
        except OSError:  # old kernel (ENOSYS), a seccomp policy, EMFILE
            pidfd = -1
        if 0 <= pidfd <= 2:  # kept off the host's stdio numbers, as the pipes are
            try:
                pidfd = _move_above_2(pidfd)
            except OSError:
                pidfd = -1
    return Child(pid, pidfd, in_w, out_r, err_r)


# --- the child handle -------------------------------------------------------


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
        timeout = _check_deadline(timeout)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if self._pidfd >= 0:
            # The pidfd turns readable when the child exits: no latency, no
            # spinning. If it is readable but the child is not waitable (the
            # pidfd was closed under us, or poll and waitid disagree), back off.
            try:
                if not _wait_fd(self._pidfd, _POLLIN, deadline):
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
        _close_quietly(fd)

    def close(self) -> None:
        """Close every fd the parent holds for this child (pipes and pidfd). Does not reap."""
        fds = (self._stdin, self._stdout, self._stderr, self._pidfd)
        self._stdin = self._stdout = self._stderr = self._pidfd = -1
        for fd in fds:
            _close_quietly(fd)

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

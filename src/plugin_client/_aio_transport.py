"""The event loop's side of a plugin process, for :class:`~plugin_client.aio.AsyncPluginClient`:
the channel (reads, writes, the deadline timer and the exit watch of one process, and the
exchange in flight), exit waits, and the loop helpers (a lock taken within a timeout, a
non-blocking write with SIGPIPE kept from the host). No client state: the client module
drives these from its one flow loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any, Coroutine, Optional

from ._core_errors import DeadlineExceeded, FrameTooLargeError, PipeClosed, ProcessExited, StreamEOF
from ._impl import Child, FrameReader, monotonic
from ._process import PluginProcess
from ._sigpipe import write_sigpipe_blocked
from ._wire_trace import TRACE, TracedCall, trace_failure, trace_reply, trace_request, tracing

__all__ = (
    "Channel", "DeliveredOutcome", "ExitWait", "QUICK_MAX", "acquire_within", "acquire_within_task", "loop_idle",
    "write_nonblocking",
)

_READ = 65536
# A task's exchanges that may end in a row without a loop iteration (Channel.wait).
QUICK_MAX = 16
# Exit waits without a pidfd poll with this backoff (seconds).
_POLL_FIRST = 0.0005
_POLL_MAX = 0.002

_SIGPIPE = int(signal.SIGPIPE)
_SIG_IGN = int(signal.SIG_IGN)
# CPython's C getsignal, not the public signal.getsignal, on purpose: that one
# converts the handler to a Handlers enum on every write of the warm path
# (bench/test_bench_roundtrip.py). Both give the same int for SIG_IGN; the
# public one is the fallback on another interpreter.
try:
    from _signal import getsignal as _getsignal  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - not CPython
    _getsignal = signal.getsignal


def write_nonblocking(fd: int, data: Any) -> int:
    """One non-blocking ``write``. Python ignores SIGPIPE, and then EPIPE is a
    ``BrokenPipeError``; a host that restored SIGPIPE gets it blocked around the
    write, so one dead plugin never kills the host (as in the core's ``write_all``)."""
    if _getsignal(_SIGPIPE) == _SIG_IGN:
        return os.write(fd, data)
    return write_sigpipe_blocked(fd, data)


def loop_idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` has no callback ready to run but the current one: then a
    short spin for a reply keeps no ready task waiting, where the loop would
    sleep instead. Known only for asyncio's own loops (their ``_ready``
    queue); for another loop (uvloop), False."""
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready


class Channel:
    """The event loop's hooks on one plugin process, and the exchange in flight.

    An exchange's outcome (a frame or an error) goes to the future of whoever
    waits for it; if that future was cancelled, it is kept until someone calls
    :meth:`wait` again, so a cancelled caller's flow can be finished by another
    task. It holds no reference to the client, so a client can be collected
    while the loop still holds this channel's callbacks.
    """

    __slots__ = (
        "loop", "reader", "fd_in", "fd_out", "fd_exit", "reading", "eof", "busy", "settled", "frame", "error",
        "waiter", "out", "writing", "early", "deadline", "timer", "armed_for", "released", "quick", "name", "traced",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: PluginProcess) -> None:
        self.loop = loop
        self.reader: FrameReader = proc.reader
        self.fd_in = proc.child.stdin_fd
        self.fd_out = proc.child.stdout_fd
        self.busy = False  # an exchange began and its outcome has not been taken
        self.settled = False  # its outcome is in frame/error, waiting to be taken
        self.frame: Optional[bytes] = None
        self.error: Optional[BaseException] = None
        self.waiter: Optional[asyncio.Future[bytes]] = None
        self.out: Optional[memoryview] = None
        self.writing = False
        self.early: Optional[bytes] = None  # a reply that came before its request was all written
        self.eof = False
        self.deadline = 0.0
        self.timer: Optional[asyncio.TimerHandle] = None
        self.armed_for = 0.0  # the deadline (monotonic) the timer was set for
        self.released = False
        self.quick = 0  # exchanges in a row that ended without a loop iteration (see wait)
        self.name = proc.name
        self.traced: Optional[TracedCall] = None  # the exchange in flight, if the wire trace logged its request
        loop.add_reader(self.fd_out, self._on_readable)
        self.reading = True
        # The pidfd, watched until it turns readable (the exit); -1: not watched.
        self.fd_exit = proc.child.pidfd
        if self.fd_exit >= 0:
            loop.add_reader(self.fd_exit, self._on_exit)

    def begin(self, line: bytes, deadline: float) -> None:
        """Start one exchange: write ``line`` (the rest from a writer callback), arm the deadline."""
        if self.eof:
            raise StreamEOF(self.reader.buffered)
        self.busy = True
        self.settled = False
        self.deadline = deadline
        if TRACE.maybe and tracing():  # wire trace (its reply is logged by _settle)
            self.traced = trace_request(self.name, line)
        try:
            n = write_nonblocking(self.fd_in, line)
        except (BlockingIOError, InterruptedError):
            n = 0
        except BrokenPipeError:
            self.busy = False
            exc = PipeClosed(self.fd_in)
            if self.traced is not None:
                self._settle_trace(None, exc)
            raise exc from None
        if n < len(line):
            self.out = memoryview(line)[n:]
            self.loop.add_writer(self.fd_in, self._on_writable)
            self.writing = True
        # One timer per process: deadlines only move later while a plugin is in
        # use, so an early timer just re-arms itself (see _on_timer).
        if self.timer is None or self.armed_for > deadline:
            self._arm(deadline)

    def wait(self) -> asyncio.Future[bytes]:
        """A future for the outcome of the exchange in flight.

        A reply that is already in the pipe is taken at once, with one read
        that never blocks, and the future comes back done: the awaiting task
        goes on without a loop iteration. A plugin that shares this CPU has
        typically answered during the write (the kernel runs it as soon as
        the line wakes it). A plugin on another CPU has not, yet; if no other
        callback is ready (:func:`loop_idle`), the reader's adaptive spin
        waits for it a little before the loop would sleep. Every
        ``QUICK_MAX``-th such exchange in a row goes through the loop anyway,
        so a task that requests in a tight loop still lets the others run.
        """
        fut: asyncio.Future[bytes] = self.loop.create_future()
        if self.busy and not self.settled and self.reading and not self.writing:
            if self.quick < QUICK_MAX:
                if not self._on_readable() and loop_idle(self.loop) and self.reader.spin_ready(self.deadline):
                    self._on_readable()
                self.quick = self.quick + 1 if self.settled else 0  # not settled: this one waits in the loop
            else:
                self.quick = 0
        if self.settled:
            self.settled = self.busy = False
            frame, error, self.frame, self.error = self.frame, self.error, None, None
            if error is not None:
                fut.set_exception(error)
            else:
                assert frame is not None
                fut.set_result(frame)
        else:
            self.waiter = fut
        return fut

    def _settle(self, frame: Optional[bytes], error: Optional[BaseException]) -> None:
        self.early = None
        if self.traced is not None:  # wire trace
            self._settle_trace(frame, error)
        if self.writing:  # only on an error: the process is ended next
            self.writing = False
            self.out = None
            self.loop.remove_writer(self.fd_in)
        w = self.waiter
        self.waiter = None
        if w is not None and not w.done():
            self.busy = False
            if error is not None:
                w.set_exception(error)
            else:
                w.set_result(frame)  # type: ignore[arg-type]
            return
        self.frame, self.error, self.settled = frame, error, True

    def _settle_trace(self, frame: Optional[bytes], error: Optional[BaseException]) -> None:
        """Log the outcome of the exchange whose request the wire trace logged."""
        traced, self.traced = self.traced, None
        if traced is None:  # pragma: no cover - the callers check first
            return
        if error is not None:
            trace_failure(self.name, traced, error)
        elif frame is not None:
            trace_reply(self.name, traced, frame)

    def _stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd_out)

    def _on_readable(self) -> bool:
        """Read once. False if there was nothing to read."""
        if self.released:  # a callback queued before release(): the fd may be another's now
            return False
        try:
            data = os.read(self.fd_out, _READ)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self.eof = True
            self._stop_reading()
            if self.busy and not self.settled:
                self._settle(None, StreamEOF(self.reader.buffered))
            return True
        self.reader.feed(data)
        if not self.busy or self.settled or self.early is not None:
            # Output no request asked for. Keep it (the idle check before the
            # next request sees it and recycles the process) but read no more:
            # a plugin spewing on stdout cannot make us buffer without bound.
            self._stop_reading()
            return True
        try:
            frame = self.reader.next_frame()
        except FrameTooLargeError as exc:
            self._stop_reading()
            self._settle(None, exc)
            return True
        if frame is not None:
            if self.writing:
                # Answered before it read all of its request: the exchange ends
                # when the line is all written, as with the blocking write_all.
                self.early = frame
            else:
                self._settle(frame, None)
        return True

    def _on_exit(self) -> None:
        """The process exited. A reply still awaited gets what the process wrote
        before its exit (all in the pipe by now), else ProcessExited: a
        descendant may hold stdout open, and then no EOF would come."""
        if self.released:
            return
        self._stop_watching_exit()
        while self.busy and not self.settled and self.early is None and self.reading and self._on_readable():
            pass
        if self.busy and not self.settled:
            early = self.early
            if early is not None:  # answered, then exited before taking all of its request
                self._settle(early, None)
            else:
                self._settle(None, ProcessExited(self.reader.buffered))

    def _stop_watching_exit(self) -> None:
        fd, self.fd_exit = self.fd_exit, -1
        if fd >= 0:
            self.loop.remove_reader(fd)

    def _on_writable(self) -> None:
        out = self.out
        if out is None or self.released:  # pragma: no cover - removed with out, and at release
            return
        try:
            n = write_nonblocking(self.fd_in, out)
        except (BlockingIOError, InterruptedError):
            return
        except BrokenPipeError:
            self._settle(None, PipeClosed(self.fd_in))
            return
        if n < len(out):
            self.out = out[n:]
            return
        self.out = None
        self.writing = False
        self.loop.remove_writer(self.fd_in)
        early, self.early = self.early, None
        if early is not None:
            self._settle(early, None)

    def _arm(self, deadline: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.armed_for = deadline
        loop = self.loop
        # The loop's clock need not be ours (uvloop's counts milliseconds).
        self.timer = loop.call_at(loop.time() + (deadline - monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if not self.busy or self.settled or self.released:
            return
        if self.deadline > monotonic():
            self._arm(self.deadline)
            return
        self._settle(None, DeadlineExceeded("read a frame"))

    def release(self) -> None:
        """Drop every hook on the process's fds; called before they are closed."""
        if self.released:
            return
        self.released = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        loop = self.loop
        if loop.is_closed():
            return
        self._stop_watching_exit()
        if self.reading:
            self.reading = False
            loop.remove_reader(self.fd_out)
        if self.writing:
            self.writing = False
            loop.remove_writer(self.fd_in)


class ExitWait:
    """A wait for a child's exit with an absolute deadline, so that it can be
    awaited again (by another task) without starting its timeout over."""

    __slots__ = ("loop", "child", "deadline")

    def __init__(self, loop: asyncio.AbstractEventLoop, child: Child, timeout: Optional[float]) -> None:
        self.loop = loop
        self.child = child
        self.deadline = None if timeout is None else monotonic() + max(0.0, timeout)

    def wait(self) -> Coroutine[Any, Any, Optional[int]]:
        return self._wait()

    async def _wait(self) -> Optional[int]:
        child, deadline, loop = self.child, self.deadline, self.loop
        rc = child.wait(0.0, reap=False)
        if rc is not None:
            return rc
        pidfd = child.pidfd
        if pidfd >= 0:
            fut: asyncio.Future[None] = loop.create_future()

            def wake() -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(pidfd, wake)
            timer = None if deadline is None else loop.call_at(loop.time() + (deadline - monotonic()), wake)
            try:
                await fut
            finally:
                loop.remove_reader(pidfd)
                if timer is not None:
                    timer.cancel()
            rc = child.wait(0.0, reap=False)
            if rc is not None or (deadline is not None and monotonic() >= deadline):
                return rc
            # Readable, yet not waitable: back off below rather than spin.
        delay = _POLL_FIRST
        while True:
            rc = child.wait(0.0, reap=False)
            if rc is not None:
                return rc
            if deadline is not None:
                remaining = deadline - monotonic()
                if remaining <= 0.0:
                    return None
                delay = min(delay, remaining)
            await asyncio.sleep(delay)
            delay = min(delay * 2.0, _POLL_MAX)


async def acquire_within_task(lock: asyncio.Lock, timeout: float) -> None:
    """``lock.acquire()``, or ``asyncio.TimeoutError`` after ``timeout`` seconds.

    Not ``wait_for``: before Python 3.11 it can time out after the lock was
    taken, and leak it. Here an acquisition that lands after we gave up is
    handed back at once."""
    acquire = asyncio.ensure_future(lock.acquire())
    try:
        await asyncio.wait((acquire,), timeout=timeout)
    except BaseException:
        _give_up(acquire, lock)
        raise
    if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
        return
    _give_up(acquire, lock)
    raise asyncio.TimeoutError


def _give_up(acquire: "asyncio.Future[Any]", lock: asyncio.Lock) -> None:
    def hand_back(fut: "asyncio.Future[Any]") -> None:
        if not fut.cancelled() and fut.exception() is None:
            lock.release()

    if acquire.done():
        hand_back(acquire)
    else:
        acquire.cancel()
        acquire.add_done_callback(hand_back)


if sys.version_info >= (3, 11):

    async def acquire_within(lock: asyncio.Lock, timeout: float) -> None:
        """``lock.acquire()``, or ``asyncio.TimeoutError`` after ``timeout`` seconds
        (no task: ``asyncio.timeout``; ``Lock.acquire`` passes a cancelled wake-up on)."""
        async with asyncio.timeout(timeout):
            await lock.acquire()

else:  # pragma: no cover - Python < 3.11
    acquire_within = acquire_within_task


class DeliveredOutcome:
    """An operation whose outcome arrived just as its waiter was cancelled."""

    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[Any]) -> None:
        self.fut = fut

    def wait(self) -> asyncio.Future[Any]:
        return self.fut

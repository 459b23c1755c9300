"""The clients' background thread: it reaps sync clients' idle processes, and stops processes nobody waits for.

Without it a process unused for ``idle_timeout`` stays up until the client's
next request, which would then have to stop it first: a plugin that ignores
stdin EOF and SIGTERM would make that request wait ``exit_wait +
shutdown_grace``, and a host that goes quiet would keep its plugins (and
whatever sessions they hold) for ever.

One daemon thread serves every :class:`~plugin_client.PluginClient` of the
interpreter, started at the first spawn (again after a ``fork``). It does two
things (asyncio clients ask only for the second, and only for a client
collected without ``shutdown()`` or left at exit):

* **Idle reaps.** It keeps no table of clients: it walks the live ones of
  :mod:`plugin_client._live` (those whose slot has a ``reap_if_idle``), so a client
  costs it nothing to construct, shut down or collect, and a warm request does
  not touch it. It looks again at the earliest time a live process could have
  been idle long enough; a spawn wakes it only if that is earlier than it
  planned to look (in practice the first spawn, or a client with a shorter
  ``idle_timeout``). A due client is asked to reap (``slot.reap_if_idle``), which
  takes the client's request lock without waiting (a client in use is not
  idle), takes the expired process out of it and hands it to the stops below.
* **Stops in the background** (:meth:`Sweeper.stop_for_flow`): the graceful stop
  of a process already taken out of its client (an idle reap's, or the one a
  request found expired before this thread got to it), and of the process of a
  client collected without ``shutdown()`` or left at exit (:meth:`Sweeper.stop_dropped`,
  for asyncio clients too). The stop's first step
  (closing stdin) runs at once, in the caller's thread; its waits (for the
  exit, then after SIGTERM, then after SIGKILL) are the ``WaitExit``\\ s of
  ``Flow.stop_steps``, which this thread serves all together: one ``poll`` on
  every stopping process's pidfd, with the nearest deadline as its timeout. So
  a request never waits for an old process's stop (it starts a fresh one
  beside it), and a stubborn plugin's ``exit_wait + shutdown_grace`` holds up
  neither another client's reap nor another stop. A client's ``shutdown()``
  waits for its stops (:meth:`Sweeper.wait_stopped`), and so does the
  interpreter's exit (which serves them itself if no thread could be started
  by then: Python >= 3.12 starts none during the exit).

Deliberately not here: the asyncio client (its processes belong to its event
loop, so it reaps with a loop timer and stops in loop tasks, in
:mod:`plugin_client.aio`), what a stop does (:meth:`plugin_client._flow_ends.FlowEnds.stop_steps`),
and when a process is expired (:meth:`plugin_client._flow_ends.FlowEnds.take_idle`).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import select
import threading
from typing import TYPE_CHECKING, Any, List, Optional

from ._impl import monotonic
from ._live import EXIT_WAITS, Slot, live_slots
from ._process import PluginProcess, Steps, WaitExit

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = ("SWEEPER", "Sweeper", "watch_idle")

_log = logging.getLogger("plugin_client")

# How often a stop whose process has no pidfd to poll (or whose pidfd turned
# readable before the process could be waited for) is looked at, in seconds.
_NO_PIDFD_POLL = 0.005


class _Stop:
    """A stop under way: its steps, and when the wait they asked for is over.

    ``flow``: the client's flow, whose books the steps keep and whose
    ``shutdown()`` waits for the stop; None for a collected client's process."""

    __slots__ = ("flow", "proc", "steps", "name", "bound", "deadline", "polled")

    def __init__(self, flow: Optional["Flow"], proc: PluginProcess, steps: Steps, name: str, bound: float) -> None:
        self.flow = flow
        self.proc = proc
        self.steps = steps
        self.name = name
        self.bound = bound  # how long the whole stop may take
        self.deadline = math.inf
        # Looked at every _NO_PIDFD_POLL instead of through its pidfd.
        self.polled = proc.child.pidfd < 0

    def asked(self, op: Any) -> None:
        """The stop's next operation: a wait for the exit (``Flow.stop_steps`` asks for nothing else)."""
        if type(op) is not WaitExit or op.proc is not self.proc:  # pragma: no cover - a bug, not a plugin's doing
            raise RuntimeError(f"a background stop can only wait for its process's exit, not {op!r}")
        self.deadline = math.inf if op.timeout is None else monotonic() + max(0.0, op.timeout)


class Sweeper:
    """The thread, when it looks for idle processes next, and the stops it serves."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Guards wake_at and stops; notified when a stop ends (wait_stopped).
        # Re-entrant: a client collected while this thread holds it (its weak
        # reference's callback, stop_dropped) takes it again.
        self._cond = threading.Condition(threading.RLock())
        self.wake_at = math.inf  # when the thread sweeps next (inf: when asked)
        self._thread: Optional[threading.Thread] = None
        self._wake_r = self._wake_w = -1  # the thread's wake-up pipe, made with it
        # Stops under way; read without the lock (a list's truth) by shutdown()'s quick check.
        self.stops: List[_Stop] = []
        # Held while the thread sweeps; the exit hook waits for it (see _at_exit).
        self._sweeping = threading.Lock()
        self._exiting = False  # the interpreter is exiting: no more sweeps

    # --- asking the thread ---------------------------------------------------------

    def look_by(self, due: float) -> None:
        """Make the thread sweep no later than ``due`` (monotonic), starting it if needed."""
        with self._cond:
            if due < self.wake_at and not self._exiting:
                self.wake_at = due
                self._wake()

    def stop_for_flow(self, flow: "Flow", proc: PluginProcess) -> None:
        """``Flow.stop_in_background`` of a sync client: stop ``proc`` (taken out of ``flow``'s
        slot) gracefully without waiting for it, and book its end on ``flow``.

        Its first step runs now; the thread serves the rest. The caller holds the
        client's request lock, so a ``shutdown()`` after it sees the stop. Raises
        ``RuntimeError`` if no thread can be started (and then does nothing), except during the
        interpreter's exit, whose own wait then serves the stop."""
        self._add(_Stop(flow, proc, flow.stop_steps(proc), flow.name, flow.stop_bound()))

    def stop_dropped(self, slot: Slot, proc: PluginProcess) -> None:
        """``Slot.stop_dropped`` of both clients: stop the process of a client that
        was collected without ``shutdown()`` (or is left at the interpreter's
        exit), without waiting for it, so a stubborn plugin holds up neither the
        thread that dropped the client (an event loop's, perhaps) nor the other
        stops at exit. An asyncio client's hooks on its loop go first, in the
        caller's thread, as they would in a blocking stop. Raises
        ``RuntimeError`` if no thread can be started (and then does nothing), except during the
        interpreter's exit, whose own wait then serves the stop."""
        steps = proc.stop_steps(slot.exit_wait, slot.grace)
        proc.release_io()
        self._add(_Stop(None, proc, steps, slot.name, slot.stop_bound()))

    def _add(self, stop: _Stop) -> None:
        with self._cond:
            try:
                self._start()  # first: if there is no thread to be had, nothing is done
            except RuntimeError:
                # Python >= 3.12 starts no thread during the interpreter's exit:
                # then the exit's own wait serves the stops (_wait_at_exit).
                if not self._exiting:
                    raise
        try:
            op = stop.steps.send(None)
        except StopIteration:  # pragma: no cover - a stop always waits for the exit first
            return
        stop.asked(op)
        with self._cond:
            self.stops.append(stop)
            self._wake()

    def _start(self) -> None:
        """Start the thread if it is not running (holding ``_cond``)."""
        if self._thread is None:
            wake_r, wake_w = os.pipe()
            os.set_blocking(wake_r, False)
            os.set_blocking(wake_w, False)
            thread = threading.Thread(target=self._run, args=(wake_r,), name="plugin-client-reaper", daemon=True)
            try:
                thread.start()
            except BaseException:
                os.close(wake_r)
                os.close(wake_w)
                raise
            self._wake_r, self._wake_w, self._thread = wake_r, wake_w, thread

    def _wake(self) -> None:
        """Start the thread, or wake it to look at its deadlines and fds again (holding ``_cond``)."""
        if self._thread is None:
            if not self._exiting:
                self._start()
        else:
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:  # a full pipe already wakes it
                pass

    # --- the thread ------------------------------------------------------------------

    def _run(self, wake_r: int) -> None:
        cond = self._cond
        while True:
            ready = self._wait_once(wake_r, self.wake_at)
            if wake_r in ready:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            if self.stops:
                self._serve_stops(ready)
            with cond:
                if self.wake_at > monotonic():
                    continue
                self.wake_at = math.inf  # a spawn from here on asks again (look_by)
            with self._sweeping:
                nxt = math.inf if self._exiting else self.sweep()
            with cond:
                if nxt < self.wake_at:
                    self.wake_at = nxt

    def _wait_once(self, wake_r: int, due: float) -> "set[int]":
        """Sleep until ``due``, a stop's deadline, an exit of a stopping process or
        (``wake_r`` >= 0) a byte on the wake-up pipe; the fds found ready."""
        poller = select.poll()
        if wake_r >= 0:
            poller.register(wake_r, select.POLLIN)
        with self._cond:
            for stop in self.stops:
                if stop.polled:
                    due = min(due, stop.deadline, monotonic() + _NO_PIDFD_POLL)
                else:
                    due = min(due, stop.deadline)
                    poller.register(stop.proc.child.pidfd, select.POLLIN)
        if due == math.inf:
            ready = poller.poll()
        else:
            # In whole milliseconds, rounded up: woken a little late rather than spinning.
            ready = poller.poll(max(0, math.ceil((due - monotonic()) * 1000.0)))
        return {fd for fd, _ in ready}

    def _serve_stops(self, ready: "set[int]") -> None:
        """Take every stop whose process exited, or whose wait is over, one step further."""
        now = monotonic()
        for stop in list(self.stops):
            rc = stop.proc.child.wait(0.0, reap=False)
            if rc is None and now < stop.deadline:
                if not stop.polled and stop.proc.child.pidfd in ready:
                    stop.polled = True  # readable, yet not waitable: look every few ms rather than spin
                continue
            try:
                stop.asked(stop.steps.send(rc))
                continue
            except StopIteration:
                pass
            except Exception:  # pragma: no cover - a stop books its own failures
                _log.exception("Plugin %r: a background stop failed", stop.name)
            with self._cond:
                self.stops.remove(stop)
                self._cond.notify_all()

    def sweep(self) -> float:
        """Ask every due client to reap; returns when to look next (``inf``: nothing to watch)."""
        nxt = math.inf
        now = monotonic()
        for slot in live_slots():
            reap = slot.reap_if_idle
            client = slot.ref() if reap is not None and slot.ref is not None else None
            if client is None or reap is None:
                continue
            try:
                due = reap(client, now)
            except Exception:  # pragma: no cover - a stop books its own failures
                _log.exception("Plugin %r: the idle reap failed", slot.name)
                due = None
            del client  # no strong reference while this thread sleeps
            if due is not None and due < nxt:
                nxt = due
        return nxt

    # --- waiting for stops -----------------------------------------------------------

    def stopping(self, flow: "Flow") -> int:
        """How many of ``flow``'s processes are being stopped in the background."""
        with self._cond:
            return sum(1 for stop in self.stops if stop.flow is flow)

    def wait_stopped(self, flow: Optional["Flow"], timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``flow``'s background stops (every
        client's, for None) to end. True once none is under way."""
        deadline = monotonic() + timeout
        with self._cond:
            while any(flow is None or stop.flow is flow for stop in self.stops):
                left = deadline - monotonic()
                if left <= 0.0:
                    return False
                self._cond.wait(left)
        return True

    # --- fork and exit ---------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork. The processes it was stopping are
        # the parent's: forget them (close their fds here) without signalling them.
        for stop in self.stops:
            stop.proc.forget()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._reset()

    def _at_exit(self) -> None:
        """No sweep from here on: the exit hook of :mod:`plugin_client._live`
        (which runs next) hands every process still in a client to this
        thread, and then waits for them all (:meth:`_wait_at_exit`)."""
        with self._cond:
            self._exiting = True
            self.wake_at = math.inf
        if self._thread is None:
            return
        # A sweep under way hands its process over before it lets go of this lock.
        if self._sweeping.acquire(timeout=1.0):
            self._sweeping.release()

    def _wait_at_exit(self) -> None:
        """Let the stops under way end, each within its bound: the interpreter
        would otherwise kill this daemon thread in the middle of them, and a
        stubborn plugin whose stdin was closed would outlive the host. If no
        thread could be started (Python >= 3.12 refuses one during the exit),
        serve them from here, as the thread would have."""
        with self._cond:
            bound = max((stop.bound for stop in self.stops), default=0.0)
        if not bound:
            return
        if self._thread is None:  # none could be started at exit: serve the stops from here
            deadline = monotonic() + bound
            while self.stops and monotonic() < deadline:
                self._serve_stops(self._wait_once(-1, deadline))
            done = not self.stops
        else:
            done = self.wait_stopped(None, bound)
        if not done:  # pragma: no cover - each stop ends within its bound
            _log.warning("plugin-client: a background stop has not ended at interpreter exit; not waiting longer")


SWEEPER = Sweeper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=SWEEPER._after_fork_in_child)
atexit.register(SWEEPER._at_exit)  # after _live's registration (imported above), so it runs first
EXIT_WAITS.append(SWEEPER._wait_at_exit)


def watch_idle(flow: "Flow") -> None:
    """``Flow.on_live`` of a sync client: its new process is to be looked at by
    ``idle_timeout`` from now. A no-op unless the thread planned to look later."""
    due = monotonic() + flow.policy.idle_timeout
    if due < SWEEPER.wake_at:
        SWEEPER.look_by(due)

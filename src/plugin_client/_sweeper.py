"""Reaps the idle processes of sync clients in the background, so ``idle_timeout`` means it.

Without it a process unused for ``idle_timeout`` stays up until the client's
next request, which then stops it first: a plugin that ignores stdin EOF and
SIGTERM makes that request wait ``exit_wait + shutdown_grace``, and a host that
goes quiet keeps its plugins (and whatever sessions they hold) for ever. The
request path still reaps an expired process itself, if this thread has not
got to it yet.

One daemon thread serves every :class:`~plugin_client.PluginClient` of the
interpreter, started at the first spawn (again after a ``fork``). It keeps no
table of its own: it walks the live clients of :mod:`plugin_client._live`
(those whose slot says ``swept``), so a client costs it nothing to construct,
shut down or collect, and a warm request does not touch it. It sleeps until
the earliest time a live process could have been idle long enough; a spawn
wakes it only if that is earlier than it planned to look (in practice the
first spawn, or a client with a shorter ``idle_timeout``). Each due client
is asked to reap (``client._sweep()``), which takes the client's request lock
without waiting (a client in use is not idle), takes the expired process out
of it, and stops that process after releasing it: a request that comes
meanwhile starts a fresh process instead of waiting for a stubborn one to
stop, and the client's ``shutdown()`` waits for that stop
(:meth:`Sweeper.wait_stopped`). A stop of a stubborn plugin holds this
thread for up to ``exit_wait + shutdown_grace``; other clients' reaps wait
behind it.

Deliberately not here: the asyncio client (its process belongs to its event
loop, so it reaps with a loop timer, in :mod:`plugin_client.aio`), and how a
process is taken and stopped (:meth:`plugin_client._flow.Flow.take_idle`, ``Flow.stop_blocking``).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
from typing import TYPE_CHECKING, Any, Optional

from ._impl import monotonic
from ._live import live_slots

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = ("SWEEPER", "Sweeper", "nudge")

_log = logging.getLogger("plugin_client")


class Sweeper:
    """The thread that reaps idle processes, and when it will look next."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.wake_at = math.inf  # when the thread looks next (inf: when woken)
        self._thread: Optional[threading.Thread] = None
        # Held while the thread sweeps; the exit hook takes it (see _at_exit).
        self._sweeping = threading.Lock()
        self._bound = 0.0  # how long the sweep under way may still take (its stop's bound)
        # Notified when a stop made outside a client's request lock ends (stopped()).
        self._stops = threading.Condition(threading.Lock())

    def look_by(self, due: float) -> None:
        """Make the thread look again no later than ``due`` (monotonic), starting it if needed."""
        with self._cond:
            if due < self.wake_at:
                self.wake_at = due
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="plugin-client-idle", daemon=True)
                    self._thread.start()
                else:
                    self._cond.notify()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                now = monotonic()
                if self.wake_at > now:
                    cond.wait(None if self.wake_at == math.inf else self.wake_at - now)
                    continue
                self.wake_at = math.inf  # a spawn from here on asks again (look_by)
            with self._sweeping:
                nxt = self.sweep()
            with cond:
                if nxt < self.wake_at:
                    self.wake_at = nxt

    def sweep(self) -> float:
        """Ask every due client to reap; returns when to look next (``inf``: nothing to watch)."""
        nxt = math.inf
        now = monotonic()
        for slot in live_slots():
            client = slot.ref() if slot.swept and slot.ref is not None else None
            if client is None:
                continue
            due: Optional[float] = client._flow.idle_due()
            if due is not None and due <= now:
                self._bound = client._flow.stop_bound()
                try:
                    due = client._sweep()
                except Exception:  # pragma: no cover - a stop books its own failures
                    _log.exception("Plugin %r: the idle reap failed", slot.name)
                    due = None
            del client  # no strong reference while this thread sleeps
            if due is not None and due < nxt:
                nxt = due
        return nxt

    def stopped(self, client: Any) -> None:
        """``client``'s background stop (``client._stopping``) has ended."""
        with self._stops:
            client._stopping = None
            self._stops.notify_all()

    def wait_stopped(self, client: Any, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``client``'s background stop to end.
        True once none is under way."""
        deadline = monotonic() + timeout
        with self._stops:
            while client._stopping is not None:
                left = deadline - monotonic()
                if left <= 0.0:
                    return False
                self._stops.wait(left)
        return True

    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork; the clients forget their parent's processes
        # (the one a background stop had in hand included: PluginClient._forget_after_fork).
        self._cond = threading.Condition(threading.Lock())
        self.wake_at = math.inf
        self._thread = None
        self._sweeping = threading.Lock()
        self._stops = threading.Condition(threading.Lock())

    def _at_exit(self) -> None:
        """Let a reap under way end (within its stop's bound) and start no other:
        the interpreter would otherwise kill this daemon thread in the middle of
        a stop, and a stubborn plugin whose stdin it had closed would outlive
        the host. (Runs before :mod:`plugin_client._live`'s hook, which stops
        every process left, this one no longer among them.)"""
        if self._thread is not None:
            self._sweeping.acquire(timeout=max(self._bound, 1.0))


SWEEPER = Sweeper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=SWEEPER._after_fork_in_child)
atexit.register(SWEEPER._at_exit)  # after _live's registration (imported above), so it runs first


def nudge(flow: "Flow") -> None:
    """``Flow.on_live`` of a sync client: its new process is to be looked at by
    ``idle_timeout`` from now. A no-op unless the thread planned to look later."""
    due = monotonic() + flow.policy.idle_timeout
    if due < SWEEPER.wake_at:
        SWEEPER.look_by(due)

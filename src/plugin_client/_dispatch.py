"""The one thread that hands lifecycle events to the hosts' callbacks.

Clients put ``(callback, event)`` pairs on a queue (:meth:`Dispatcher.put`,
a lock and a ``deque.append``) and go on; a daemon thread,
``plugin-client-events``, started at the first event, calls each callback in
order, as ``logging.handlers.QueueListener`` does for handlers. Once woken it
lets a burst gather for a millisecond and delivers it in one go, so request
events at full speed cost one wake-up per burst (and :meth:`Dispatcher.flush`
cuts that wait short). So a callback
runs on neither a request's thread, nor an event loop, nor the background stop
thread, and never while a client holds a lock: a slow callback holds up only
the delivery of the events after it. An exception a callback raises is logged
on ``plugin_client`` and dropped.

The queue is bounded (:data:`MAX_PENDING`): if callbacks fall that far behind
(request events at full speed into a slow callback), further events are
dropped and counted, and one WARNING says so until the queue has drained.
After ``fork()`` the child starts with an empty queue (the parent's events are
the parent's). At interpreter exit the events already queued are delivered,
for :data:`EXIT_FLUSH_SECONDS` at most; an event emitted when no thread can be
started any more (Python >= 3.12 starts none during the exit) is delivered on
the emitting thread.

Deliberately not here: what an event is (:mod:`plugin_client.events`) or when
one is emitted (:mod:`plugin_client._notify` and the flow).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Any, Callable, Deque, Optional, Tuple

from ._impl import monotonic
from ._live import EXIT_WAITS

__all__ = ("Dispatcher", "DISPATCHER", "MAX_PENDING", "EXIT_FLUSH_SECONDS", "deliver")

_log = logging.getLogger("plugin_client")

# Events waiting for their callbacks, at most; past that new ones are dropped.
MAX_PENDING = 10_000
# How long the interpreter's exit waits for queued events to be delivered.
EXIT_FLUSH_SECONDS = 2.0
# How long the thread lets a burst gather once woken, before it delivers: one
# wake-up (and GIL hand-over) per burst of request events, not one per event.
_LINGER = 0.001

_Item = Tuple[Callable[[Any], None], Any]

# Whether the exit hook was added to EXIT_WAITS (once per interpreter, see Dispatcher._start).
_EXIT_HOOKED = False


def deliver(callback: Callable[[Any], None], event: Any) -> None:
    """Call ``callback(event)``; log what it raises instead of raising it (a
    ``SystemExit`` too: it would otherwise end the events thread, and with it
    every later delivery)."""
    try:
        callback(event)
    except BaseException:
        _log.exception(
            "Plugin %r: the on_event callback %r raised on its %r event; the client is not affected",
            getattr(event, "plugin", "?"), callback, getattr(getattr(event, "kind", None), "value", "?"),
        )


class Dispatcher:
    """The queue, its thread, and the counts :meth:`flush` waits on."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: Deque[_Item] = collections.deque()
        self._thread: Optional[threading.Thread] = None
        self._queued = 0  # events ever queued
        self._flushing = 0  # flush() calls waiting: deliver at once, without lingering
        self._settled = 0  # of those, delivered (or whose callback raised)
        self.dropped = 0  # events dropped because the queue was full
        self._warned = False

    def put(self, callback: Callable[[Any], None], event: Any) -> None:
        """Queue ``event`` for ``callback``, starting the thread if needed. Never waits
        for a callback and never raises (a full queue drops the event)."""
        warn = inline = False
        with self._cond:
            if len(self._queue) >= MAX_PENDING:
                self.dropped += 1
                warn, self._warned = not self._warned, True
            elif self._thread is None and not self._start():
                inline = True
            else:
                queue = self._queue
                queue.append((callback, event))
                self._queued += 1
                if len(queue) == 1:  # the thread waits only on an empty queue
                    self._cond.notify()
        if warn:
            _log.warning(
                "plugin-client: %d lifecycle events are waiting for slow on_event callbacks; "
                "dropping new events until they catch up", MAX_PENDING,
            )
        elif inline:
            deliver(callback, event)

    def _start(self) -> bool:
        """Start the thread (holding ``_cond``). False if none can be had (the
        interpreter is exiting): the caller delivers the event itself."""
        global _EXIT_HOOKED
        thread = threading.Thread(target=self._run, name="plugin-client-events", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            return False
        self._thread = thread
        if not _EXIT_HOOKED:
            # Appended now, not at import: _live's exit hook runs its waits in
            # order, and this one must come after the background stops' wait
            # (_sweeper's, appended when a client module is imported), whose
            # stops emit events of their own.
            _EXIT_HOOKED = True
            EXIT_WAITS.append(self._at_exit)
        return True

    def _run(self) -> None:
        cond = self._cond
        queue = self._queue
        while True:
            with cond:
                while not queue:
                    cond.wait()
                if not self._flushing:
                    cond.wait(_LINGER)  # (put() notifies only an empty queue: this sleeps it out)
                # Everything queued so far, in one go: a burst of request events
                # takes the lock twice, not twice per event.
                batch = list(queue)
                queue.clear()
            for callback, event in batch:
                deliver(callback, event)
            n = len(batch)
            del batch, callback, event  # no reference kept while this thread waits
            with cond:
                self._settled += n
                if not queue:
                    self._warned = False
                cond.notify_all()

    def flush(self, timeout: Optional[float] = 5.0) -> bool:
        """Wait until every event queued before this call is delivered; True if it was."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush_events() cannot be called from an on_event callback: it would wait for itself")
        deadline = None if timeout is None else monotonic() + timeout
        with self._cond:
            target = self._queued
            self._flushing += 1
            self._cond.notify_all()  # a thread lingering over a burst delivers at once
            try:
                while self._settled < target:
                    if deadline is None:
                        self._cond.wait()
                        continue
                    left = deadline - monotonic()
                    if left <= 0.0:
                        return False
                    self._cond.wait(left)
            finally:
                self._flushing -= 1
        return True

    def pending(self) -> int:
        """How many events wait for delivery."""
        with self._cond:
            return self._queued - self._settled

    def _at_exit(self) -> None:
        if self._thread is not None and not self.flush(EXIT_FLUSH_SECONDS):
            _log.warning(
                "plugin-client: %d lifecycle events were not delivered within %g s of the interpreter's exit",
                self.pending(), EXIT_FLUSH_SECONDS,
            )


DISPATCHER = Dispatcher()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=DISPATCHER._reset)

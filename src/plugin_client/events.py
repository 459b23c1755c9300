"""Lifecycle events of a plugin client: what happened to a plugin, as data a host can subscribe to.

A client made with ``on_event=callback`` calls ``callback(event)`` with a
:class:`PluginEvent` for every transition of its plugin (spawned, ready,
stopped, reaped after idling, crashed, timed out, killed, disabled,
re-enabled, refused because its executable changed, interrupted by the host)
and, if it was also made with ``request_events=True``, for every request that
reached the plugin. The same transitions are logged on the ``plugin_client``
logger (:data:`EVENT_LEVELS`); request events are never logged.

Callbacks run on one daemon thread, ``plugin-client-events``, shared by every
client of the interpreter, in the order the events happened: never on the
thread that made the request, an event loop, or the background stop thread,
and never while a client holds a lock, so a slow callback holds up only the
delivery of later events. An exception a callback raises is logged on
``plugin_client`` and dropped. :func:`flush_events` waits until every event
so far has been delivered (for tests, and for a host before it exits; the
interpreter's exit waits up to :data:`EXIT_FLUSH_SECONDS` for it too).

Deliberately not here: deciding when an event happens (the clients' flow and
bookkeeping, :mod:`plugin_client._flow`, :mod:`plugin_client._lifecycle`),
the queue and its thread (:mod:`plugin_client._dispatch`), and how a line is
worded (:mod:`plugin_client._messages`). Nothing here ever holds a secret: a
``detail`` is a cause or a method name, never a reference, a value or a config.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Dict, Optional, Tuple

from ._dispatch import DISPATCHER, EXIT_FLUSH_SECONDS
from ._enums import ValueEnum
from .health import ExitInfo

__all__ = ("EventKind", "PluginEvent", "EVENT_LEVELS", "EXIT_FLUSH_SECONDS", "flush_events")


class EventKind(ValueEnum):
    """What a :class:`PluginEvent` reports. Its value is what ``extra["event"]`` of the log record holds."""

    SPAWNED = "spawned"  # a process was started (pid)
    READY = "ready"  # it answered init (pid, duration: from the spawn to the answer)
    STOPPED = "stopped"  # it ended without a fault: shutdown, clear_disabled, an interruption (pid, exit)
    REAPED_IDLE = "reaped_idle"  # it was stopped after idle_timeout unused (pid, exit)
    CRASHED = "crashed"  # it exited by itself, or could not be started; counted as a crash (pid, exit, detail)
    TIMED_OUT = "timed_out"  # a request or init got no answer in time (pid, duration, detail: the method)
    KILLED = "killed"  # the host killed it after a fault; counted as a crash (pid, exit, detail: the cause)
    DISABLED = "disabled"  # the restart cap was reached (detail: the reason health() reports)
    CLEARED = "cleared"  # clear_disabled() re-enabled it (detail: the state it was in)
    EXECUTABLE_CHANGED = "executable_changed"  # the executable changed since it was verified; not started
    INTERRUPTED = "interrupted"  # the host interrupted an operation (Ctrl-C, a signal handler's exception)
    REQUEST = "request"  # only with request_events=True: a request's end (duration, detail: the method)


# The level each kind is logged at on ``plugin_client``; 0: never logged.
EVENT_LEVELS: Dict[EventKind, int] = {
    EventKind.SPAWNED: logging.INFO,
    EventKind.READY: logging.INFO,
    EventKind.STOPPED: logging.INFO,
    EventKind.REAPED_IDLE: logging.INFO,
    EventKind.CLEARED: logging.INFO,
    EventKind.INTERRUPTED: logging.INFO,
    EventKind.CRASHED: logging.WARNING,
    EventKind.TIMED_OUT: logging.WARNING,
    EventKind.KILLED: logging.WARNING,
    EventKind.EXECUTABLE_CHANGED: logging.WARNING,
    EventKind.DISABLED: logging.ERROR,
    EventKind.REQUEST: 0,
}


class PluginEvent:
    """One thing that happened to a plugin. Frozen: its attributes cannot be set.

    ``plugin``: the plugin's name. ``kind``: an :class:`EventKind`. ``at``: when
    (a UTC ``datetime``). ``pid``: the process it is about, or None (a start
    that failed before a process existed, a state change). ``detail``: a short
    text (see :class:`EventKind`), never a secret. ``exit``: how the process
    ended, for ``stopped``, ``reaped_idle``, ``crashed`` and ``killed``.
    ``duration``: seconds, for ``ready`` (the start), ``timed_out`` (the wait)
    and ``request`` (from the line's write to its answer or failure).
    ``error``: for a ``request`` that failed, its kind, as counted in
    ``health().errors``; None for a success.
    """

    # One slot holding every field: building an event (once per request with
    # request_events=True) is then one attribute write, not eight.
    __slots__ = ("_v",)
    _v: Tuple[Any, ...]

    def __init__(
        self,
        plugin: str,
        kind: EventKind,
        at: datetime,
        pid: Optional[int] = None,
        detail: str = "",
        exit: Optional[ExitInfo] = None,
        duration: Optional[float] = None,
        error: Optional[str] = None,
    ) -> None:
        # object.__setattr__: this class's own __setattr__ refuses every write.
        object.__setattr__(self, "_v", (plugin, kind, at, pid, detail, exit, duration, error))

    @property
    def plugin(self) -> str:
        return self._v[0]  # type: ignore[no-any-return]

    @property
    def kind(self) -> EventKind:
        return self._v[1]  # type: ignore[no-any-return]

    @property
    def at(self) -> datetime:
        return self._v[2]  # type: ignore[no-any-return]

    @property
    def pid(self) -> Optional[int]:
        return self._v[3]  # type: ignore[no-any-return]

    @property
    def detail(self) -> str:
        return self._v[4]  # type: ignore[no-any-return]

    @property
    def exit(self) -> Optional[ExitInfo]:
        return self._v[5]  # type: ignore[no-any-return]

    @property
    def duration(self) -> Optional[float]:
        return self._v[6]  # type: ignore[no-any-return]

    @property
    def error(self) -> Optional[str]:
        return self._v[7]  # type: ignore[no-any-return]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"PluginEvent is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"PluginEvent is frozen: cannot delete {name!r}")

    def _key(self) -> Tuple[Any, ...]:
        return self._v

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PluginEvent):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        parts = [f"plugin={self.plugin!r}", f"kind={self.kind.value!r}"]
        for name in ("pid", "detail", "duration", "error"):
            value = getattr(self, name)
            if value is not None and value != "":
                parts.append(f"{name}={value!r}")
        if self.exit is not None:
            parts.append(f"exit={self.exit.stage.value}/{self.exit.signal or self.exit.returncode}")
        return f"PluginEvent({', '.join(parts)})"

    def to_dict(self) -> Dict[str, Any]:
        """The event as JSON-ready data (``at`` in ISO 8601, ``exit`` as a dict)."""
        return {
            "plugin": self.plugin,
            "kind": self.kind.value,
            "at": self.at.isoformat(),
            "pid": self.pid,
            "detail": self.detail,
            "exit": self.exit.model_dump(mode="json") if self.exit is not None else None,
            "duration": self.duration,
            "error": self.error,
        }


def flush_events(timeout: Optional[float] = 5.0) -> bool:
    """Wait until every event emitted before this call has been delivered to its
    callback (``timeout`` seconds at most; None: for as long as it takes).
    True if they all were. Not from within a callback: that raises ``RuntimeError``."""
    return DISPATCHER.flush(timeout)

"""One client's voice: its lifecycle events, logged and handed to its ``on_event`` callback.

:class:`Notifier` is what the bookkeeping (:mod:`plugin_client._lifecycle`)
and the flow call at each transition. It builds a
:class:`~plugin_client.events.PluginEvent` only when somebody listens (a
callback, or the ``plugin_client`` logger enabled for the kind's level), logs
it on the emitting thread with ``extra`` fields (``plugin``, ``event``,
``pid``) for structured handlers, and queues it for the callback
(:mod:`plugin_client._dispatch`), which runs on the events thread.

It also names the kind of a failure a client raised (:func:`error_key`), the
keys of ``health().errors`` and of a failed request event's ``error``.

Deliberately not here: when a transition happens (the flow decides), the
wording of a line (:func:`plugin_client._messages.event_line`), and the
delivery thread.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import _messages as messages
from ._dispatch import DISPATCHER
from ._impl import monotonic
from .errors import (
    ClientClosed,
    ExecutableChanged,
    FrameTooLarge,
    InitError,
    ManifestError,
    PluginClientError,
    PluginCrashed,
    PluginDisabled,
    PluginError,
    ProtocolError,
    RequestTimeout,
    SpawnError,
    UnsupportedCapability,
)
from .events import EVENT_LEVELS, EventKind, PluginEvent

if TYPE_CHECKING:
    from ._process import Exchange, ExitRecord

__all__ = ("Notifier", "OnEvent", "error_key")

_log = logging.getLogger("plugin_client")

OnEvent = Callable[[PluginEvent], None]

# An exception class -> its key in health().errors, most specific first.
_ERROR_KEYS = (
    (FrameTooLarge, "frame-too-large"),
    (ProtocolError, "protocol"),
    (RequestTimeout, "timeout"),
    (PluginCrashed, "crash"),
    (InitError, "init"),
    (ExecutableChanged, "executable-changed"),
    (SpawnError, "spawn"),
    (ManifestError, "manifest"),
    (PluginDisabled, "disabled"),
    (ClientClosed, "closed"),
    (UnsupportedCapability, "unsupported-capability"),
)


def error_key(exc: BaseException) -> Optional[str]:
    """The kind of a failure a client raised, for ``health().errors``: the plugin's
    own error kind for an error reply, else the host-side failure's name. None
    for what is not the client's failure (a host's ``ValueError``, an interruption)."""
    if isinstance(exc, PluginError):
        return exc.kind
    if not isinstance(exc, PluginClientError):
        return None
    for cls, key in _ERROR_KEYS:
        if isinstance(exc, cls):
            return key
    return "other-client-error"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Notifier:
    """Emits one client's events. ``callback``: its ``on_event``, or None.
    ``requests``: whether it wants ``request`` events (``request_events=True``)."""

    __slots__ = ("name", "callback", "requests")

    def __init__(self, name: str, callback: Optional[OnEvent] = None, requests: bool = False) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"Plugin {name!r}: on_event must be a callable taking a PluginEvent, not {callback!r}.")
        if requests and callback is None:
            raise ValueError(
                f"Plugin {name!r}: request_events=True needs an on_event callback to deliver them to; pass on_event= too."
            )
        self.name = name
        self.callback = callback
        self.requests = requests

    def emit(
        self,
        kind: EventKind,
        pid: Optional[int] = None,
        detail: Optional[str] = "",
        exit: Optional[ExitRecord] = None,
        duration: Optional[float] = None,
    ) -> None:
        """Log and deliver one event; nothing is built if nobody listens."""
        level = EVENT_LEVELS[kind]
        log = level and _log.isEnabledFor(level)
        callback = self.callback
        if callback is None and not log:
            return
        if detail is None:
            detail = ""
        event = PluginEvent(self.name, kind, _now(), pid, detail, exit.info() if exit is not None else None, duration)
        if log:
            # The line itself as the record's msg, with no args (so no %-formatting):
            # a handler that reads record.msg gets the sentence.
            _log.log(
                level, messages.event_line(event),
                extra={"plugin": self.name, "event": kind.value, "pid": pid},
            )
        if callback is not None:
            DISPATCHER.put(callback, event)

    def request(self, pending: Exchange, started: float, error: Optional[str] = None) -> None:
        """A ``request`` event for ``pending`` (begun at monotonic ``started``), ended now."""
        callback = self.callback
        if callback is None:  # pragma: no cover - requests is False without a callback
            return
        event = PluginEvent(
            self.name, EventKind.REQUEST, _now(), pending.proc.pid if pending.proc is not None else None,
            pending.call_type.method.value, None, monotonic() - started, error,
        )
        DISPATCHER.put(callback, event)


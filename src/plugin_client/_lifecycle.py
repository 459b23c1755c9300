"""The lifetime bookkeeping of one plugin client, with no I/O.

State (idle / running / recovering / disabled), the crash window, counters,
timestamps, the last init result and the last exit: everything ``health()``
reports and every rule that decides what happens next (is the plugin
disabled? has the process idled out?). The sync client, and an asyncio client,
drive the same ``Lifecycle``; only the I/O differs between them.

Every method takes the ``meta`` lock briefly, so ``snapshot()`` never waits
behind a request in flight. Each transition is also an event
(:class:`~plugin_client._notify.Notifier`: logged, and handed to the client's
``on_event``), emitted after the lock is released.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Dict, List, Optional

from . import _messages as messages
from ._impl import IMPLEMENTATION, RestartWindow, monotonic
from ._notify import Notifier
from .events import EventKind
from .errors import PluginDisabled
from .health import ExitStage, PluginHealth, PluginState
from .policy import LifetimePolicy
from .protocol import Capability, InitResult

if TYPE_CHECKING:
    from ._process import ExitRecord

__all__ = ("Lifecycle",)

# As module globals: an enum member read through its class costs a descriptor
# call, and these are read on every cold start and stop.
_SPAWNED, _READY, _STOPPED = EventKind.SPAWNED, EventKind.READY, EventKind.STOPPED


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Lifecycle:
    def __init__(
        self, plugin_name: str, source_name: str, policy: LifetimePolicy, notifier: Optional[Notifier] = None
    ) -> None:
        self.plugin_name = plugin_name
        self.notify = notifier if notifier is not None else Notifier(plugin_name)
        self.source_name = source_name
        self.policy = policy
        self._meta = threading.Lock()
        self._window = RestartWindow(policy.restart_window, policy.restart_cap)
        self.state = PluginState.IDLE
        self.disabled_reason: Optional[str] = None
        self.spawn_count = 0
        self.pid: Optional[int] = None
        # As the int init sent: the IntFlag is built only for a snapshot (it is
        # dear to make, and on_ready is on every cold start's path).
        self.capabilities_bits: Optional[int] = None
        self.plugin_version: Optional[str] = None
        self.last_used_mono = -math.inf
        self.last_crash: Optional[datetime] = None
        self.last_error: Optional[str] = None
        self.last_exit: Optional[ExitRecord] = None
        # When the live process's start began (monotonic), for the ready event's duration.
        self.started_mono = -math.inf
        # Requests answered with a result, and the failures a client raised, by
        # kind (_notify.error_key), since the client was made. ``served`` is
        # bumped without the meta lock (under the request lock, on the warm path).
        self.served = 0
        self.errors: Dict[str, int] = {}

    # --- rules ---------------------------------------------------------------

    def check_enabled(self) -> None:
        if self.state is PluginState.DISABLED:
            raise PluginDisabled(messages.disabled(self.plugin_name, str(self.disabled_reason)), plugin=self.plugin_name)

    def idle_expired(self, now: float) -> bool:
        return now - self.last_used_mono > self.policy.idle_timeout

    def crash_note(self) -> str:
        """``"crash 2 of 3 in 60 s"``, for messages."""
        with self._meta:
            n = self._window.count()
        return f"crash {n} of {self.policy.restart_cap} within {self.policy.restart_window:g} s"

    # --- transitions (the caller holds the request lock; on_stopped may not) ----

    def on_spawned(self, pid: int, started: Optional[float] = None) -> None:
        """A process started (its start began at monotonic ``started``, if given)."""
        with self._meta:
            self.spawn_count += 1
            self.pid = pid
            self.state = PluginState.RUNNING
            self.last_used_mono = now = monotonic()
            self.started_mono = started if started is not None else now
        self.notify.emit(_SPAWNED, pid)

    def on_ready(self, init: InitResult) -> None:
        with self._meta:
            self.capabilities_bits = init.capabilities_bits
            self.plugin_version = init.plugin_version
            pid = self.pid
        self.notify.emit(_READY, pid, None, None, monotonic() - self.started_mono)

    def on_used(self) -> None:
        # Only a float on the hot path; snapshot() derives the wall time.
        self.last_used_mono = monotonic()

    def on_stopped(self, info: ExitRecord, kind: EventKind = _STOPPED, detail: str = "") -> None:
        """A process ended without a crash (idle reap, shutdown). It may be one the
        background idle reap stopped while a newer process started (or crashed):
        then only its exit is recorded. ``kind``: its event (``stopped``, or
        ``reaped_idle``), with ``detail``."""
        with self._meta:
            self.last_exit = info
            if self.pid == info.pid:
                self.pid = None
                if self.state is not PluginState.DISABLED:
                    self.state = PluginState.IDLE
        self.notify.emit(kind, info.pid, detail, info)

    def on_crash(self, error: str, info: Optional[ExitRecord] = None) -> bool:
        """Record a crash, ``error`` its cause (a sentence naming the plugin, with no
        outcome: the caller words that from the answer). ``info`` is None if no
        process was started. True if now disabled."""
        with self._meta:
            if info is not None:
                self.last_exit = info
            self.pid = None
            self.last_crash = _now()
            self.last_error = error
            count = self._window.record()
            if count >= self.policy.restart_cap:
                self.state = PluginState.DISABLED
                self.disabled_reason = reason = messages.disabled_reason(count, self.policy, error)
                disabled = True
            else:
                self.state = PluginState.RECOVERING
                disabled = False
        # Killed: the host ended it after a fault; else it exited by itself (or never started).
        killed = info is not None and info.stage is ExitStage.KILLED_AFTER_ERROR
        notify = self.notify
        notify.emit(
            EventKind.KILLED if killed else EventKind.CRASHED,
            info.pid if info is not None else None,
            messages.without_name(self.plugin_name, error),
            info,
        )
        if disabled:
            notify.emit(EventKind.DISABLED, None, reason)
        return disabled

    def clear_disabled(self) -> None:
        with self._meta:
            was = self.state
            self._window.clear()
            self.disabled_reason = None
            if self.state in (PluginState.DISABLED, PluginState.RECOVERING):
                self.state = PluginState.IDLE if self.pid is None else PluginState.RUNNING
        self.notify.emit(EventKind.CLEARED, None, was.value)

    def count_error(self, key: str) -> None:
        """Count a failure a client raised (``key``: :func:`~plugin_client._notify.error_key`)."""
        with self._meta:
            self.errors[key] = self.errors.get(key, 0) + 1

    def reset_after_fork(self) -> None:
        self._meta = threading.Lock()
        self.pid = None
        if self.state is not PluginState.DISABLED:
            self.state = PluginState.IDLE

    # --- reporting ----------------------------------------------------------------

    def snapshot(self, stderr_tail: List[str]) -> PluginHealth:
        with self._meta:
            bits = self.capabilities_bits
            caps = Capability(bits) if bits is not None else None
            last_exit = self.last_exit
            used_mono = self.last_used_mono
            last_used: Optional[datetime] = None
            if used_mono != -math.inf and self.spawn_count:
                # Wall time derived from the monotonic stamp, so the hot path
                # only stores a float.
                last_used = datetime.fromtimestamp(
                    _now().timestamp() - (monotonic() - used_mono), timezone.utc
                )
            return PluginHealth(
                plugin_name=self.plugin_name,
                source_name=self.source_name,
                state=self.state,
                disabled_reason=self.disabled_reason,
                crashes_in_window=self._window.count(),
                restart_cap=self.policy.restart_cap,
                restart_window=self.policy.restart_window,
                last_used=last_used,
                last_crash=self.last_crash,
                last_error=self.last_error,
                pid=self.pid,
                spawn_count=self.spawn_count,
                plugin_version=self.plugin_version,
                capabilities=[c.name for c in Capability if caps is not None and c in caps and c.name],
                capabilities_bits=bits,
                last_exit=last_exit.info() if last_exit is not None else None,
                stderr_tail=stderr_tail,
                implementation=IMPLEMENTATION,
                requests_served=self.served,
                errors=dict(self.errors),
            )

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

The cooldown (``LifetimePolicy.disabled_cooldown``), a circuit breaker's
half-open state: once the cooldown has passed, :meth:`check_enabled` lets
exactly one caller through, the probe (the caller holds the request lock; a
caller that finds the lock taken meanwhile is refused by :meth:`check_probing`
instead of waiting). Its spawn and ``init`` succeeding (:meth:`on_ready`)
enable the plugin again; its crash (:meth:`on_crash`) disables it again with
the cooldown doubled, up to ``disabled_cooldown_max``; a probe that ends with
neither (the host interrupted it, ran out of descriptors, the executable
changed: :meth:`probe_unresolved`) leaves the next probe due at once. A claim
nobody resolved expires after the longest a request may hold the client.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, TypeVar

from . import _messages as messages
from ._impl import IMPLEMENTATION, RestartWindow, monotonic
from ._notify import Notifier
from .events import EventKind
from .errors import PluginClientError, PluginDisabled
from .health import ExitStage, PluginHealth, PluginState
from .policy import LifetimePolicy
from .protocol import Capability, InitResult

if TYPE_CHECKING:
    from ._process import ExitRecord

__all__ = ("Lifecycle",)

# As module globals: an enum member read through its class costs a descriptor
# call, and these are read on every cold start and stop.
_SPAWNED, _READY, _STOPPED = EventKind.SPAWNED, EventKind.READY, EventKind.STOPPED

_E = TypeVar("_E", bound=PluginClientError)


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
        # Why the last spawn was refused because the executable changed (with
        # what to do); None once a spawn goes ahead.
        self.executable_changed: Optional[str] = None
        # The cooldown while disabled under policy.disabled_cooldown: its current
        # length, when (monotonic) the next probe is due, and the probe's claim.
        self.cooldown: Optional[float] = None
        self.probe_due: Optional[float] = None
        self.probing = False
        self._probe_claimed = 0.0
        # The last crash's diagnostics: its process's stderr tail and exit (none
        # when no process ran), given to the errors that report it.
        self.crash_tail: Tuple[str, ...] = ()
        self.crash_exit: Optional[ExitRecord] = None

    # --- rules ---------------------------------------------------------------

    def check_enabled(self) -> None:
        """Raise :class:`PluginDisabled` if disabled, unless this caller may probe now."""
        if self.state is PluginState.DISABLED and not self._claim_probe():
            raise self._disabled_error()

    def check_probing(self) -> None:
        """Raise :class:`PluginDisabled` while a probe spawn is under way: for a caller
        that found the request lock taken, rather than waiting behind the probe.
        Counted here: the clients call it before their own count could see it."""
        if self.probing and self.state is PluginState.DISABLED:
            self.count_error("disabled")
            raise self._disabled_error()

    def _claim_probe(self) -> bool:
        with self._meta:
            due = self.probe_due
            if due is None or self.state is not PluginState.DISABLED:
                return False
            now = monotonic()
            if self.probing and now - self._probe_claimed < self._probe_claim_bound():
                return False
            if now < due:
                return False
            self.probing = True
            self._probe_claimed = now
            return True

    def _probe_claim_bound(self) -> float:
        p = self.policy
        return p.start_timeout + p.request_timeout + p.exit_wait + p.shutdown_grace

    def _disabled_error(self) -> PluginDisabled:
        with self._meta:
            probe = ""
            if self.cooldown is not None and self.probe_due is not None:
                if self.probing:
                    probe = messages.next_probe(0.0, None, self.cooldown)
                else:
                    left = self.probe_due - monotonic()
                    probe = messages.next_probe(left, self._wall(self.probe_due), self.cooldown)
            msg = messages.disabled(self.plugin_name, str(self.disabled_reason), probe)
            msg = messages.with_last_stderr_line(msg, self.crash_tail)
            return self.diagnosed(PluginDisabled(msg, plugin=self.plugin_name))

    def diagnosed(self, error: _E) -> _E:
        """``error``, given the last crash's diagnostics (``stderr_tail``, ``exit``)."""
        error.stderr_tail = self.crash_tail
        info = self.crash_exit
        error.exit = info.info() if info is not None else None
        return error

    @staticmethod
    def _wall(mono: float) -> datetime:
        """The UTC wall time of a monotonic stamp."""
        return datetime.fromtimestamp(_now().timestamp() + (mono - monotonic()), timezone.utc)

    def probe_unresolved(self) -> None:
        """A probe's spawn or ``init`` ended with neither success nor a crash (the host
        interrupted it, ran out of descriptors, the executable changed): the next
        probe is due at once, the cooldown unchanged. No-op without a probe."""
        if not self.probing:
            return
        with self._meta:
            if self.probing:
                self.probing = False
                self.probe_due = monotonic()
                if self.state is not PluginState.DISABLED:  # on_spawned of a probe leaves it so; be sure
                    self.state = PluginState.DISABLED

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
            self.executable_changed = None
            if not self.probing:  # a probe stays disabled until its init answers
                self.state = PluginState.RUNNING
            self.last_used_mono = now = monotonic()
            self.started_mono = started if started is not None else now
        self.notify.emit(_SPAWNED, pid)

    def on_ready(self, init: InitResult) -> None:
        with self._meta:
            self.capabilities_bits = init.capabilities_bits
            self.plugin_version = init.plugin_version
            pid = self.pid
            probed = self.probing
            if probed:  # the probe succeeded: enabled again, the breaker closed
                self._window.clear()
                self.disabled_reason = None
                self.cooldown = self.probe_due = None
                self.probing = False
                self.state = PluginState.RUNNING
        self.notify.emit(_READY, pid, None, None, monotonic() - self.started_mono)
        if probed:
            self.notify.emit(EventKind.CLEARED, pid, "by a probe after the cooldown")

    def on_refused(self, cause: str) -> None:
        """A spawn was refused because the executable changed on disk: not the
        plugin's crash, so nothing is counted; ``health()`` shows it."""
        with self._meta:
            self.executable_changed = messages.executable_changed(cause)
        self.notify.emit(EventKind.EXECUTABLE_CHANGED, None, cause)
        self.probe_unresolved()

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

    def on_crash(self, error: str, info: Optional[ExitRecord] = None, stderr_tail: Tuple[str, ...] = ()) -> bool:
        """Record a crash, ``error`` its cause (a sentence naming the plugin, with no
        outcome: the caller words that from the answer). ``info`` is None if no
        process was started; ``stderr_tail`` is its process's last stderr lines.
        True if now disabled."""
        with self._meta:
            if info is not None:
                self.last_exit = info
            self.crash_tail = stderr_tail
            self.crash_exit = info
            self.pid = None
            self.last_crash = _now()
            self.last_error = error
            count = self._window.record()
            reason: Optional[str] = None  # set if this crash disables the plugin
            if self.probing:  # the probe failed: disabled again, for twice as long
                self.probing = False
                cooldown = self.cooldown if self.cooldown is not None else self.policy.disabled_cooldown
                assert cooldown is not None
                self.state = PluginState.DISABLED
                self.disabled_reason = reason = messages.probe_failed_reason(cooldown, error)
                self._start_cooldown(min(cooldown * 2, self.policy.disabled_cooldown_max))
            elif count >= self.policy.restart_cap:
                self.state = PluginState.DISABLED
                self.disabled_reason = reason = messages.disabled_reason(count, self.policy, error)
                if self.policy.disabled_cooldown is not None:
                    self._start_cooldown(self.policy.disabled_cooldown)
            else:
                self.state = PluginState.RECOVERING
        self._crash_events(error, info, reason)
        return reason is not None

    def _crash_events(self, error: str, info: Optional[ExitRecord], disabled_reason: Optional[str]) -> None:
        """The events of a crash (after the lock): ``killed`` if the host ended the
        process after a fault, else ``crashed`` (it exited by itself, or never
        started); then ``disabled`` if it disabled the plugin."""
        killed = info is not None and info.stage is ExitStage.KILLED_AFTER_ERROR
        notify = self.notify
        notify.emit(
            EventKind.KILLED if killed else EventKind.CRASHED,
            info.pid if info is not None else None,
            messages.without_name(self.plugin_name, error),
            info,
        )
        if disabled_reason is not None:
            notify.emit(EventKind.DISABLED, None, disabled_reason)

    def _start_cooldown(self, seconds: float) -> None:
        self.cooldown = seconds
        self.probe_due = monotonic() + seconds

    def clear_disabled(self) -> None:
        with self._meta:
            was = self.state
            self._window.clear()
            self.disabled_reason = None
            self.cooldown = self.probe_due = None
            self.probing = False
            if self.state in (PluginState.DISABLED, PluginState.RECOVERING):
                self.state = PluginState.IDLE if self.pid is None else PluginState.RUNNING
        self.notify.emit(EventKind.CLEARED, None, f"by clear_disabled() (it was {was.value})")

    def count_error(self, key: str) -> None:
        """Count a failure a client raised (``key``: :func:`~plugin_client._notify.error_key`)."""
        with self._meta:
            self.errors[key] = self.errors.get(key, 0) + 1

    def reset_after_fork(self) -> None:
        self._meta = threading.Lock()
        self.pid = None
        self.probing = False  # the parent's probe, if any, is the parent's
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
                executable_changed=self.executable_changed,
                disabled_cooldown=self.cooldown,
                next_probe=self._wall(self.probe_due) if self.probe_due is not None else None,
            )

"""The lifetime bookkeeping of one plugin client, with no I/O.

State (idle / running / recovering / disabled), the crash window, counters,
timestamps, the last init result and the last exit: everything ``health()``
reports and every rule that decides what happens next (is the plugin
disabled? has the process idled out?). The sync client, and an asyncio client,
drive the same ``Lifecycle``; only the I/O differs between them.

Every method takes the ``meta`` lock briefly, so ``snapshot()`` never waits
behind a request in flight.

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
from typing import TYPE_CHECKING, List, Optional

from . import _messages as messages
from ._impl import IMPLEMENTATION, RestartWindow, monotonic
from .errors import PluginDisabled
from .health import PluginHealth, PluginState
from .policy import LifetimePolicy
from .protocol import Capability, InitResult

if TYPE_CHECKING:
    from ._process import ExitRecord

__all__ = ("Lifecycle",)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Lifecycle:
    def __init__(self, plugin_name: str, source_name: str, policy: LifetimePolicy) -> None:
        self.plugin_name = plugin_name
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
        # Why the last spawn was refused because the executable changed (with
        # what to do); None once a spawn goes ahead.
        self.executable_changed: Optional[str] = None
        # The cooldown while disabled under policy.disabled_cooldown: its current
        # length, when (monotonic) the next probe is due, and the probe's claim.
        self.cooldown: Optional[float] = None
        self.probe_due: Optional[float] = None
        self.probing = False
        self._probe_claimed = 0.0

    # --- rules ---------------------------------------------------------------

    def check_enabled(self) -> None:
        """Raise :class:`PluginDisabled` if disabled, unless this caller may probe now."""
        if self.state is PluginState.DISABLED and not self._claim_probe():
            raise self._disabled_error()

    def check_probing(self) -> None:
        """Raise :class:`PluginDisabled` while a probe spawn is under way: for a caller
        that found the request lock taken, rather than waiting behind the probe."""
        if self.probing and self.state is PluginState.DISABLED:
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
        return PluginDisabled(msg, plugin=self.plugin_name)

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

    def on_spawned(self, pid: int) -> None:
        with self._meta:
            self.spawn_count += 1
            self.pid = pid
            self.executable_changed = None
            if not self.probing:  # a probe stays disabled until its init answers
                self.state = PluginState.RUNNING
            self.last_used_mono = monotonic()

    def on_ready(self, init: InitResult) -> None:
        with self._meta:
            self.capabilities_bits = init.capabilities_bits
            self.plugin_version = init.plugin_version
            if self.probing:  # the probe succeeded: enabled again, the breaker closed
                self._window.clear()
                self.disabled_reason = None
                self.cooldown = self.probe_due = None
                self.probing = False
                self.state = PluginState.RUNNING

    def on_refused(self, cause: str) -> None:
        """A spawn was refused because the executable changed on disk: not the
        plugin's crash, so nothing is counted; ``health()`` shows it."""
        with self._meta:
            self.executable_changed = messages.executable_changed(cause)
        self.probe_unresolved()

    def on_used(self) -> None:
        # Only a float on the hot path; snapshot() derives the wall time.
        self.last_used_mono = monotonic()

    def on_stopped(self, info: ExitRecord) -> None:
        """A process ended without a crash (idle reap, shutdown). It may be one the
        background idle reap stopped while a newer process started (or crashed):
        then only its exit is recorded."""
        with self._meta:
            self.last_exit = info
            if self.pid != info.pid:
                return
            self.pid = None
            if self.state is not PluginState.DISABLED:
                self.state = PluginState.IDLE

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
            if self.probing:  # the probe failed: disabled again, for twice as long
                self.probing = False
                cooldown = self.cooldown if self.cooldown is not None else self.policy.disabled_cooldown
                assert cooldown is not None
                self.state = PluginState.DISABLED
                self.disabled_reason = messages.probe_failed_reason(cooldown, error)
                self._start_cooldown(min(cooldown * 2, self.policy.disabled_cooldown_max))
                return True
            if count >= self.policy.restart_cap:
                self.state = PluginState.DISABLED
                self.disabled_reason = messages.disabled_reason(count, self.policy, error)
                if self.policy.disabled_cooldown is not None:
                    self._start_cooldown(self.policy.disabled_cooldown)
                return True
            self.state = PluginState.RECOVERING
            return False

    def _start_cooldown(self, seconds: float) -> None:
        self.cooldown = seconds
        self.probe_due = monotonic() + seconds

    def clear_disabled(self) -> None:
        with self._meta:
            self._window.clear()
            self.disabled_reason = None
            self.cooldown = self.probe_due = None
            self.probing = False
            if self.state in (PluginState.DISABLED, PluginState.RECOVERING):
                self.state = PluginState.IDLE if self.pid is None else PluginState.RUNNING

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
                executable_changed=self.executable_changed,
                disabled_cooldown=self.cooldown,
                next_probe=self._wall(self.probe_due) if self.probe_due is not None else None,
            )

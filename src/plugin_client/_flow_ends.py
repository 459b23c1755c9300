"""How a flow's process ends: the failures, the interruptions, the stops and the idle reap.

:class:`FlowEnds` is a mixin :class:`~plugin_client._flow.Flow` inherits, so
these are the flow's own methods (``flow.stop_steps(proc)``), with no extra
call or lookup. Each one ends a process, or hands it to whoever will, and books
how it ended:

- a failure (an exchange's error, a reply that breaks the protocol, an ``init``
  that fails, stray output found by the idle check): the process is killed
  or reaped, the crash counted, and the message to raise composed once
  (:meth:`FlowEnds._fail_steps`), with the crash's diagnostics;
- an interruption by the host (:meth:`FlowEnds.interrupted`): nothing counted,
  the process stopped in the background; :meth:`FlowEnds.abandon`, the last
  resort of a driver going away;
- a graceful stop (``shutdown()``, an idle reap, ``clear_disabled()``), booked
  as stopped, not as a crash (:meth:`FlowEnds.book_stopped`);
- the idle reap's decision (:meth:`FlowEnds.take_idle`) and its bounds.

Deliberately not here: the state (every attribute is a slot of ``Flow``, whose
``__slots__`` hold them; this class has none), when a request or a start has
failed (``Flow``'s steps decide, and call these), the warm request, spawning
and ``init``, any message's wording (:mod:`plugin_client._messages`), and
running a stop nobody waits for (the sweeper thread, or a loop task, behind
``stop_in_background``). No I/O of its own: the waits are operations yielded
to the driver, as everywhere in the flow.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Optional, Set, Tuple, Union

from . import _messages as messages
from ._core_errors import DeadlineExceeded, FrameTooLargeError, PipeClosed, StreamEOF
from ._impl import monotonic
from ._process import Exchange, ExitRecord, PluginProcess
from .errors import FrameTooLarge, InitError, PluginCrashed, ProtocolError, RequestTimeout
from .events import EventKind

if TYPE_CHECKING:
    from ._flow import FlowSteps
    from ._lifecycle import Lifecycle
    from ._live import Slot
    from ._notify import Notifier
    from .policy import LifetimePolicy

__all__ = ("FlowEnds", "how_ended")

_log = logging.getLogger("plugin_client")

# An exchange's failure -> the key of the public error it becomes (_notify.error_key).
_EXCHANGE_ERROR_KEYS = ((DeadlineExceeded, "timeout"), (FrameTooLargeError, "frame-too-large"))


def how_ended(info: ExitRecord) -> str:
    """How a process ended, for messages: its signal's name, or its exit status."""
    return info.signal or f"status {info.returncode}"


class FlowEnds:
    """The ends of a flow's process, as methods of :class:`~plugin_client._flow.Flow`.
    Methods ending in ``_steps`` are generators to be driven."""

    __slots__ = ()

    if TYPE_CHECKING:
        # What these methods use of the Flow they are part of (its slots, and one method).
        name: str
        policy: LifetimePolicy
        life: Lifecycle
        slot: Slot
        notify: Notifier
        request_events: bool
        closed: bool
        stop_in_background: Optional[Callable[[Any, PluginProcess], None]]
        _reaping: Set[int]
        _request_timeout: float
        _pid: int

        def _remember_tail(self, proc: PluginProcess) -> None: ...

    # --- the failures: end the process, count the crash, say so -------------------

    def _exchange_failed(self, pending: Exchange, exc: BaseException) -> None:
        """The events of an exchange that failed with ``exc`` (one of ``EXCHANGE_ERRORS``),
        before its process is ended: its ``request`` event if asked for, and a
        ``timed_out`` event for a missed deadline."""
        started = pending.deadline - self._request_timeout
        key = "crash"
        for cls, name in _EXCHANGE_ERROR_KEYS:
            if isinstance(exc, cls):
                key = name
                break
        if self.request_events:
            self.notify.request(pending, started, key)
        if key == "timeout":
            self.notify.emit(
                EventKind.TIMED_OUT, pending.proc.pid, pending.call_type.method.value, duration=monotonic() - started
            )

    def exchange_failed_steps(self, proc: PluginProcess, call_type: Any, exc: BaseException) -> FlowSteps:
        """An exchange failed with one of ``EXCHANGE_ERRORS``: end ``proc``, count the
        crash and raise the public error, chained to ``exc``."""
        name, method = self.name, call_type.method.value
        if isinstance(exc, DeadlineExceeded):
            msg = yield from self._fail_steps(proc, messages.timed_out(name, method, self.policy))
            raise self.life.diagnosed(RequestTimeout(msg, plugin=name)) from exc
        if isinstance(exc, (StreamEOF, PipeClosed)):
            msg = yield from self._fail_steps(
                proc,
                lambda how: messages.exited_while_answering(name, method, how),
                dead=True,
                advice=messages.stderr_hint(name),
            )
            raise self.life.diagnosed(PluginCrashed(msg, plugin=name)) from exc
        if isinstance(exc, FrameTooLargeError):
            msg = yield from self._fail_steps(
                proc, messages.reply_too_long(name, exc.limit), advice=messages.REPLY_TOO_LONG_ADVICE
            )
            raise self.life.diagnosed(FrameTooLarge(msg, plugin=name)) from exc
        raise exc

    def bad_reply_steps(self, proc: PluginProcess, exc: ProtocolError) -> FlowSteps:
        """A reply broke the protocol: end ``proc`` and count the crash. The caller
        re-raises ``exc`` itself (its type and fields, such as the expected and
        received ids, survive); its message gets the outcome."""
        msg = yield from self._fail_steps(proc, exc.message)
        exc.args = (msg,)
        self.life.diagnosed(exc)

    def _spawn_failed_steps(self, proc: PluginProcess, exc: BaseException) -> FlowSteps:
        """The init of ``proc`` failed with ``exc``: end it, count the crash, raise."""
        if isinstance(exc, DeadlineExceeded):
            self.notify.emit(
                EventKind.TIMED_OUT, proc.pid, "secret_source.init", duration=monotonic() - self.life.started_mono
            )
        dead = isinstance(exc, (StreamEOF, PipeClosed))
        msg = yield from self._fail_steps(
            proc, messages.init_failure(self.name, self.policy, exc), dead=dead, advice=messages.init_advice(self.name, exc)
        )
        raise self.life.diagnosed(InitError(msg, plugin=self.name)) from exc

    def _fail_steps(
        self, proc: PluginProcess, cause: Union[str, Callable[[str], str]], *, dead: bool = False, advice: str = ""
    ) -> FlowSteps:
        """End ``proc`` after an error (``dead``: it exited by itself; else it is
        killed), count the crash, and return the message to raise: ``cause`` (or,
        a function, ``cause(how it ended)``), the one outcome this crash has, and
        the plugin's last stderr line. The error raised with it gets the crash's
        diagnostics from ``self.life.diagnosed``."""
        self.slot.proc = None
        info: ExitRecord = yield from (proc.reap_dead_steps() if dead else proc.kill_steps())
        self._remember_tail(proc)
        # Complete: the stop drained the group's last stderr before the reap.
        tail = tuple(proc.tail.lines())
        text = cause if isinstance(cause, str) else cause(how_ended(info))
        now_disabled = self.life.on_crash(text, info, tail)
        msg = messages.crashed(text, killed=not dead, now_disabled=now_disabled, policy=self.policy, advice=advice)
        return messages.with_last_stderr_line(msg, tail)

    # --- the host's interruptions, and the last resort ----------------------------

    def interrupted(self, proc: PluginProcess) -> None:
        """The host interrupted an operation on ``proc`` (``KeyboardInterrupt``,
        ``SystemExit``, an exception raised by a signal handler such as a
        ``SIGALRM`` timeout): a request half done, an ``init``, a stop under way.

        The plugin did nothing wrong, so nothing is counted (and a probe after a
        cooldown is due again). But its state is
        unknown (the request may be written in part, its reply may still come),
        so no other request may be written to it: it leaves the slot and is
        stopped gracefully without anybody waiting (:attr:`stop_in_background`; the
        next request starts a fresh process), booked as stopped; ``shutdown()``
        and the interpreter's exit wait for that stop. The caller re-raises.
        """
        self.life.probe_unresolved()
        if self.slot.proc is proc:
            self.slot.proc = None
        if proc.child.returncode is not None:  # reaped and closed already: nothing left
            return
        self.notify.emit(EventKind.INTERRUPTED, proc.pid)
        if not self._hand_over_stop(proc):  # no background to be had: end it here, at once
            self.abandon(proc)

    def abandon(self, proc: Optional[PluginProcess] = None) -> Optional[ExitRecord]:
        """Last resort when a flow cannot be finished (its driver is going away): kill
        the live process, blocking briefly, and book it as stopped, not as a crash."""
        proc = proc if proc is not None else self.take_process()
        if self.slot.proc is proc:
            self.slot.proc = None
        if proc is None or proc.child.returncode is not None:
            return None
        info = proc.kill()
        self.book_stopped(proc, info)
        return info

    # --- the stops, and their books -----------------------------------------------

    def take_process(self) -> Optional[PluginProcess]:
        proc, self.slot.proc = self.slot.proc, None
        return proc

    def book_stopped(self, proc: PluginProcess, info: ExitRecord) -> None:
        """Book an end that was not a crash (idle reap, shutdown, abandon)."""
        self._remember_tail(proc)
        if self._reaping and proc.pid in self._reaping:
            self._reaping.discard(proc.pid)
            self.life.on_stopped(info, EventKind.REAPED_IDLE, f"idle for more than {self.policy.idle_timeout:g} s")
        else:
            self.life.on_stopped(info)

    def stop_steps(self, proc: PluginProcess) -> FlowSteps:
        """Graceful stop of ``proc`` (already taken out of the slot), booked as stopped."""
        self.book_stopped(proc, (yield from proc.stop_steps(self.policy.exit_wait, self.policy.shutdown_grace)))

    def shutdown_steps(self) -> FlowSteps:
        """Stop the live process, if any (the caller set ``closed``)."""
        proc = self.take_process()
        if proc is not None:
            yield from self.stop_steps(proc)

    def clear_disabled_steps(self) -> FlowSteps:
        """Stop any leftover process and clear the crash window."""
        proc = self.take_process()
        if proc is not None:
            yield from self.stop_steps(proc)
        self.life.clear_disabled()

    def _hand_over_stop(self, proc: PluginProcess) -> bool:
        """Give an expired process to :attr:`stop_in_background`. False if there is none, or
        it could not take it (no thread to be had: it did nothing then)."""
        if self.stop_in_background is None:
            return False
        try:
            self.stop_in_background(self, proc)
        except RuntimeError:  # pragma: no cover - only while the interpreter shuts down
            return False
        return True

    # --- the idle reap ------------------------------------------------------------

    def idle_due(self) -> Optional[float]:
        """When (monotonic) the live process will have been idle for ``idle_timeout``;
        None if there is none to reap (no process, or the client is closed)."""
        if self.slot.proc is None or self.closed:
            return None
        return self.life.last_used_mono + self.policy.idle_timeout

    def take_idle(self) -> Tuple[Optional[PluginProcess], Optional[float]]:
        """The background idle reap's decision (no request may be under way: the
        caller holds the request lock, or saw it free): take the live process out
        of the slot if it has been idle for ``idle_timeout``, and return it for
        the caller to stop without the lock (from :meth:`stop_steps`, as
        :attr:`stop_in_background` does). Otherwise None, and when to look again (None:
        nothing left to reap)."""
        due = self.idle_due()
        if due is None or os.getpid() != self._pid:
            return None, None
        if not self.life.idle_expired(monotonic()):
            return None, due
        return self._take_expired(), None

    def _take_expired(self) -> PluginProcess:
        """Take the live process, idle for ``idle_timeout``, out of the slot."""
        proc = self.slot.proc
        assert proc is not None
        self._reaping.add(proc.pid)  # its stop's end is a reaped_idle event (book_stopped)
        self.slot.proc = None
        return proc

    def stop_bound(self) -> float:
        """How long waiting for a stop of this client's process may take before it
        is given up: the graceful stop's own bound, and a second to spare."""
        return self.slot.stop_bound()

    def warn_stop_unfinished(self) -> None:
        """A shutdown() gives up waiting for a background idle reap (:meth:`stop_bound`)."""
        _log.warning(
            "Plugin %r: the idle reap of its previous process has not ended after "
            "exit_wait + shutdown_grace + 1 s; shutdown() returns without waiting longer",
            self.name,
        )

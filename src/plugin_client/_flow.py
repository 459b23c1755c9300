"""The decision flow of a plugin client, written once for the sync and the asyncio client.

Sans-I/O: every step that waits on the plugin is a generator that ``yield``\\ s a
small operation from :mod:`plugin_client._process` (:class:`Exchange`: write a
request and read its reply frame; :class:`WaitExit`: wait for the leader to
exit) and gets the result back from ``send()``, or the operation's error from
``throw()``. Everything else (idle reaping, death while idle, stray output,
spawn plus ``init`` within ``start_timeout``, the capability gate, an error
followed by kill and crash accounting, every message a host sees) happens in
the flow, between the yields, with no I/O of its own but non-blocking checks.
How a process ends (a failure's kill and crash accounting, an interruption, a
stop, the idle reap) is :class:`~plugin_client._flow_ends.FlowEnds`, a mixin
:class:`Flow` inherits; the rest is here.

:class:`PluginClient` drives a flow with blocking calls (:func:`run_sync`),
:class:`AsyncPluginClient` awaits the same operations on its event loop. A
request is :meth:`Flow.begin` (a pending request, or None: the slow path,
:meth:`Flow.request_steps`), the driver's exchange, then :meth:`Flow.complete`
for a reply that is plainly a success, else :meth:`Flow.finish_steps` with
whatever came: both drivers take that one path, and a warm request drives no
generator. The
caller of a flow method holds the client's request lock (a ``threading.Lock``
or an ``asyncio.Lock``): the flow assumes one request at a time per process.
The bookkeeping behind ``health()`` is :class:`~plugin_client._lifecycle.Lifecycle`,
which also emits the lifecycle events of its transitions; the flow adds those
only it knows of (a timeout, an idle reap, an interruption) and, when a client
asked for them, the ``request`` events.

A flow generator must run to its end once started: its steps keep the process
and the books in step only together. The asyncio client therefore finishes a
cancelled caller's flow in a task of its own rather than abandoning it.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, Generator, Mapping, Optional, Set, Tuple, Union

from pydantic import ValidationError

from ._impl import monotonic
from . import _messages as messages
from ._flow_ends import FlowEnds, how_ended
from ._lifecycle import Lifecycle
from ._live import Slot
from ._notify import Notifier, OnEvent, error_key
from ._spawn import Spawner
from ._process import EXCHANGE_ERRORS, IDLE_EXITED, IDLE_OK, Exchange, Op, PluginProcess, run_sync
from ._stderr import StderrTail
from .errors import (
    ClientClosed,
    InitError,
    PluginClientError,
    PluginError,
    ProtocolError,
    RequestTimeout,
    UnsupportedCapability,
)
from .health import PluginHealth, PluginState
from .manifest import PluginManifest, VerifiedExecutable
from .policy import LifetimePolicy
from ._wire import GET_TEMPLATE, REF_JSON, compact_result, get_line, init_line, init_params, plain_result
from .protocol import (
    MAX_REQUEST_ID,
    Call,
    InitCall,
    InitResult,
    Result,
    decode_reply,
    encode_request,
)

__all__ = ("Flow", "FlowSteps")

_PathLike = Union[str, "os.PathLike[str]"]
FlowSteps = Generator[Op, Any, Any]

# What the plugin can be blamed for while it starts: an exchange's failure
# (handled by exchange_failed_steps) or a reply that breaks the protocol.
# Anything else raised meanwhile is the host's interruption (Flow.interrupted).
_PLUGIN_FAULTS = EXCHANGE_ERRORS + (PluginClientError,)


_NEED_BITS: Dict[type, int] = {}

# This process's pid, kept by an at-fork hook: the warm path's fork check
# without a getpid() system call (ready_steps still asks the kernel).
_PID = os.getpid()
_DISABLED = PluginState.DISABLED


def _after_fork_in_child() -> None:
    global _PID
    _PID = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _no_idle_watch(_flow: "Flow") -> None:
    pass


def _problems(exc: ValueError) -> str:
    """What a ValueError from the init params says; a ValidationError's errors
    without their input (the config may hold credentials)."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors(include_input=False)
        )
    return str(exc)


def _need_bits(call_type: type) -> int:
    """The capability bits a call needs, as an int; -1 (any process will do) for none."""
    try:
        return _NEED_BITS[call_type]
    except KeyError:
        need = int(call_type.capability)  # type: ignore[attr-defined]
        bits = _NEED_BITS[call_type] = need if need else -1
        return bits


class Flow(FlowEnds):
    """One client's state (the process slot, the books, the request ids) and its
    decision flow. Methods ending in ``_steps`` are generators to be driven. How
    its process ends (failures, interruptions, stops, the idle reap) it inherits
    from :class:`~plugin_client._flow_ends.FlowEnds`."""

    __slots__ = (
        "name", "manifest", "policy", "source_name", "config", "life", "slot", "closed",
        "init", "last_tail", "client_type", "caps_bits", "spawner", "_next_id", "_pid",
        "_init_params", "on_live", "stop_in_background", "_get", "_idle_check", "_idle_timeout", "_request_timeout",
        "notify", "request_events", "_reaping", "__weakref__",
    )

    def __init__(
        self,
        manifest: PluginManifest,
        executable: Union[VerifiedExecutable, _PathLike, None],
        policy: LifetimePolicy,
        source_name: Optional[str],
        config: Optional[Mapping[str, Any]],
        client_type: str = "PluginClient",
        *,
        idle_check_in_exchange: bool = False,
        start_process: Optional[Callable[..., PluginProcess]] = None,
        on_event: Optional[OnEvent] = None,
        request_events: bool = False,
    ) -> None:
        self.client_type = client_type
        self.manifest = manifest
        self.name = manifest.name
        self.policy = policy
        self.source_name = source_name if source_name is not None else manifest.name
        self.config: Dict[str, Any] = dict(config) if config is not None else {}
        # The init call's params, checked and encoded once: a config that cannot
        # be sent is the constructor's error, not a spawned plugin's.
        try:
            self._init_params = init_params(self.source_name, self.config)
        except ValueError as exc:
            raise ValueError(messages.init_not_buildable(self.name, _problems(exc))) from exc
        self.spawner = Spawner(manifest, executable, policy, start_process)
        # Emits the lifecycle events (Lifecycle's transitions, and the flow's own).
        self.notify = Notifier(self.name, on_event, request_events)
        # Read by complete() on every warm request: one attribute, False unless asked.
        self.request_events = request_events
        self.life = Lifecycle(self.name, self.source_name, policy, self.notify)
        # Pids of processes taken out as idle and being stopped (their end is a reaped_idle event).
        self._reaping: Set[int] = set()
        self.slot = Slot(self.name, policy.exit_wait, policy.shutdown_grace)
        self.closed = False
        self.init: Optional[InitResult] = None
        # life.capabilities_bits as a plain int (-1 until an init told them: no gate yet);
        # IntFlag arithmetic would cost more than the rest of the gate.
        self.caps_bits = -1
        # The last process's stderr tail, kept as is (copied only if health() asks).
        self.last_tail: Optional[StderrTail] = None
        self._next_id = 1
        self._pid = os.getpid()
        # Called with this flow once a new process has answered init (unless
        # idle_timeout is infinite): the client's idle reap (the sweeper, or a
        # loop timer) is to look at it. A plain function: a bound method would
        # make a reference cycle through the client.
        self.on_live: Callable[[Flow], None] = _no_idle_watch
        # Called with this flow and a process taken out of its slot that has
        # been idle for idle_timeout, found so by a request: stop it gracefully
        # without making the request wait (the sweeper thread, or a loop task).
        # None (or a RuntimeError from it): the request stops it first. Not a
        # method of the client, like on_live.
        self.stop_in_background: Optional[Callable[[Flow, PluginProcess], None]] = None
        # begin()'s own idle check, unless the driver's exchange makes it
        # (the sync client's core call, FrameReader.request, does).
        self._idle_check = not idle_check_in_exchange
        # The policy's figures begin() reads, one attribute away.
        self._idle_timeout = policy.idle_timeout
        self._request_timeout = policy.request_timeout
        # The pending request of every get by reference, reused: one request at a
        # time per flow (the caller holds the request lock), and a get's line
        # carries no secret. Other calls get an Exchange of their own (a put's
        # line holds its value: it goes when the request ends).
        self._get = Exchange(None, b"", 0.0, None, 0, skippable=True)

    # --- no I/O ----------------------------------------------------------------

    def lock_timeout(self) -> float:
        # A waiter may be queued behind one request that spends its whole start,
        # request and shutdown budget; past that something is wrong.
        p = self.policy
        return p.start_timeout + p.request_timeout + p.exit_wait + p.shutdown_grace

    def lock_timeout_error(self) -> RequestTimeout:
        t = self.lock_timeout()
        # Counted here: the clients raise it before their own count (count_failure) could see it.
        self.life.count_error("lock-timeout")
        return RequestTimeout(messages.lock_timeout(self.name, t), plugin=self.name)

    def count_failure(self, exc: BaseException) -> None:
        """Count an error a client's method is raising, by kind, for ``health().errors``.
        The gate's refusals and lock timeouts count themselves (:meth:`unsupported`,
        :meth:`lock_timeout_error`), since they are raised where no count sees them."""
        if exc.__class__ is UnsupportedCapability:
            return
        key = error_key(exc)
        if key is not None:
            self.life.count_error(key)

    def unsupported(self, call_type: Any) -> UnsupportedCapability:
        self.life.count_error("unsupported-capability")
        cap = call_type.capability
        cap_name = cap.name or str(int(cap))
        return UnsupportedCapability(
            messages.unsupported(self.name, cap_name, call_type.method.value), capability=cap_name, plugin=self.name
        )

    def gate(self, call_type: Any) -> None:
        """The capability gate: raise :class:`UnsupportedCapability` before any I/O
        unless the capabilities ``init`` told (all, until one did) cover
        ``call_type``'s. :meth:`begin` leaves a refused call to the slow path,
        which asks this."""
        if not (self.caps_bits & _need_bits(call_type)):
            raise self.unsupported(call_type)

    # --- the warm request: begin -> the driver's exchange -> complete -----------

    def begin(self, call_type: Any, call: Optional[Call], reference: str) -> Optional[Exchange]:
        """A request that can be written at once, or None: the slow path
        (:func:`~plugin_client._flow_blocking.begin_blocking` or :meth:`request_steps`) must run.

        ``call`` (of class ``call_type``), or, for a ``get`` (``call`` None,
        ``call_type`` :class:`GetCall`), its ``reference``, whose line is made
        with no model. The request is pending on the live process if the
        client is open and not forked, the plugin is not disabled, the process
        has not been idle too long, the gate lets the call through and (unless
        the driver's exchange does it) the idle check sees nothing. It carries
        the line with a new id, the deadline, and what :meth:`complete` and
        :meth:`finish_steps` need. The driver performs it (an :class:`Exchange`
        operation) and hands the outcome back to one of them.

        No generator and a few calls: this and :meth:`complete` are all the
        engine adds to a warm request (``bench/test_bench_roundtrip.py``).
        """
        proc = self.slot.proc
        if proc is None or self.closed or self._pid != _PID:
            return None
        life = self.life
        now = monotonic()
        if life.state is _DISABLED or now - life.last_used_mono > self._idle_timeout:
            return None
        try:
            need = _NEED_BITS[call_type]
        except KeyError:
            need = _need_bits(call_type)
        if not (self.caps_bits & need):
            return None  # refused: gate() raises it on the slow path
        # proc.idle_check(), minus a Python frame.
        if self._idle_check and proc.reader.idle_state(proc.child.pidfd) != IDLE_OK:
            return None
        # _take_id() and get_line()'s cache hit, written out (the warm path's
        # calls are what a request costs beyond its I/O and decode).
        rid = self._next_id
        self._next_id = rid + 1 if rid < MAX_REQUEST_ID else 1
        if call is None:
            enc = REF_JSON.get(reference)
            pending = self._get
            pending.line = GET_TEMPLATE % (rid, enc) if enc is not None else get_line(reference, rid)
            pending.proc = proc
            pending.deadline = now + self._request_timeout
            pending.call_type = call_type
            pending.rid = rid
            return pending
        return Exchange(proc, encode_request(call, rid), now + self._request_timeout, call_type, rid, skippable=True)

    def complete(self, pending: Exchange, frame: bytes) -> Optional[Result]:
        """The result of ``pending``'s reply ``frame``, booked, if it is plainly a
        success; else None: :meth:`finish_steps` says what it is."""
        # The compact reply first, as plain_result() would, minus a call.
        result = compact_result(frame, pending.call_type, pending.rid)
        if result is None:
            result = plain_result(frame, pending.call_type, pending.rid)
            if result is None:
                return None
        life = self.life
        life.last_used_mono = monotonic()  # Lifecycle.on_used(), minus a call
        life.served += 1
        if self.request_events:
            self.notify.request(pending, pending.deadline - self._request_timeout)
        return result

    def finish_steps(self, pending: Exchange, outcome: Union[bytes, BaseException, None]) -> FlowSteps:
        """The slow tail of a request begun by :meth:`begin` (or the slow path):
        ``outcome`` is its reply frame (not plainly a success), its exchange's
        error (one of ``EXCHANGE_ERRORS``: the process is ended, the crash
        counted, and the public error raised), or None: nothing was written,
        because the driver's idle check found output or an exit; the request
        then starts over from :meth:`ready_steps`. Returns the typed result."""
        if outcome is None:
            proc = yield from self.ready_steps()
            self.gate(pending.call_type)  # the process may be new, and say otherwise
            pending.proc = proc
            pending.deadline = monotonic() + self._request_timeout
            return (yield from self.exchange_steps(pending))
        if isinstance(outcome, BaseException):
            self._exchange_failed(pending, outcome)
            yield from self.exchange_failed_steps(pending.proc, pending.call_type, outcome)
            raise outcome  # pragma: no cover - the steps always raise
        return (yield from self.reply_steps(pending, outcome))

    def pending_request(self, proc: PluginProcess, call_type: Any, call: Optional[Call], reference: str) -> Exchange:
        rid = self._take_id()
        line = encode_request(call, rid) if call is not None else get_line(reference, rid)
        return Exchange(proc, line, monotonic() + self._request_timeout, call_type, rid, skippable=True)

    def health(self) -> PluginHealth:
        """A snapshot; never waits behind a request in flight."""
        proc = self.slot.proc
        last = proc.tail if proc is not None else self.last_tail
        tail = last.lines() if last is not None else []
        return self.life.snapshot(tail)

    def forked(self) -> bool:
        return os.getpid() != self._pid

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's process without signalling it."""
        self._pid = os.getpid()
        proc, self.slot.proc = self.slot.proc, None
        if proc is not None:
            proc.forget()
        self._reaping.clear()
        self.life.reset_after_fork()

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id = rid + 1 if rid < MAX_REQUEST_ID else 1
        return rid

    def _remember_tail(self, proc: PluginProcess) -> None:
        self.last_tail = proc.tail

    # --- flows (generators; the caller holds the request lock) -----------------

    def request_steps(self, call_type: Any, call: Optional[Call], reference: str = "") -> FlowSteps:
        """A request from the start, as a generator: the gate (before any I/O), a
        process readied (reap, respawn, init as needed), the gate again, then
        the exchange and its reply (:meth:`exchange_steps`). ``call`` and
        ``reference`` as for :meth:`begin`. Returns the typed result; raises
        the public errors."""
        self.gate(call_type)
        proc = yield from self.ready_steps()
        self.gate(call_type)
        return (yield from self.exchange_steps(self.pending_request(proc, call_type, call, reference)))

    def exchange_steps(self, pending: Exchange) -> FlowSteps:
        """Perform ``pending`` (the driver's exchange), then :meth:`finish_steps`
        with its outcome. A driver that has begun ``pending`` already (the
        asyncio client's warm path) awaits that instead of beginning it again."""
        try:
            outcome: Union[bytes, BaseException] = yield pending
        except EXCHANGE_ERRORS as exc:
            outcome = exc
        return (yield from self.finish_steps(pending, outcome))

    def reply_steps(self, pending: Exchange, frame: bytes) -> FlowSteps:
        """Decode ``pending``'s reply and book it. The plugin's own error reply
        leaves the process up; a reply that breaks the protocol ends it
        (:meth:`bad_reply_steps`), and its error is re-raised."""
        try:
            result = decode_reply(frame, pending.call_type, pending.rid, plugin=self.name)
        except PluginError as exc:
            self.life.on_used()
            if self.request_events:
                self.notify.request(pending, pending.deadline - self._request_timeout, exc.kind)
            raise
        except ProtocolError as exc:
            if self.request_events:
                self.notify.request(pending, pending.deadline - self._request_timeout, error_key(exc))
            yield from self.bad_reply_steps(pending.proc, exc)
            raise
        life = self.life
        life.on_used()
        life.served += 1
        if self.request_events:
            self.notify.request(pending, pending.deadline - self._request_timeout)
        return result

    def start_steps(self) -> FlowSteps:
        """Spawn and init now if there is no live process; returns the ``InitResult``."""
        yield from self.ready_steps()
        assert self.init is not None
        return self.init

    def ready_steps(self) -> FlowSteps:
        """The live process, after the checks a request needs before its line is written."""
        self.check_usable()
        return (yield from self.live_steps())

    def check_usable(self) -> None:
        """Raise unless a request may go on (not closed, not disabled); after a
        fork, forget the parent's process first."""
        if self.closed:
            raise ClientClosed(messages.client_closed(self.name, self.client_type), plugin=self.name)
        if os.getpid() != self._pid:
            self.forget_after_fork()
        self.life.check_enabled()

    def live_steps(self) -> FlowSteps:
        """:meth:`ready_steps` after its checks: the live process, reaped, replaced
        or spawned as needed."""
        proc = self.slot.proc
        if proc is not None:
            if self.life.idle_expired(monotonic()):
                # The background reap has not got to it yet: a stubborn plugin
                # would make this request wait exit_wait + shutdown_grace.
                proc = self._take_expired()
                if not self._hand_over_stop(proc):
                    yield from self.stop_steps(proc)
                proc = None
            else:
                status = proc.idle_check()
                if status != IDLE_OK:
                    self.slot.proc = None
                    if status == IDLE_EXITED:
                        info = yield from proc.reap_dead_steps()
                        self._remember_tail(proc)  # (on_crash logs it: a crashed event)
                        self.life.on_crash(
                            messages.exited_while_idle(self.name, how_ended(info)), info, tuple(proc.tail.lines())
                        )
                        self.life.check_enabled()
                        proc = None
                    else:
                        msg = yield from self._fail_steps(proc, messages.stray_output(self.name))
                        raise self.life.diagnosed(ProtocolError(msg, plugin=self.name))
        if proc is None:
            proc = yield from self._spawn_steps()
        return proc

    def _spawn_steps(self) -> FlowSteps:
        """Spawn and init a new process (none is live); returns it."""
        proc, rid, deadline = self._spawn_begin()
        try:
            frame = yield Exchange(proc, init_line(self._init_params, rid), deadline, InitCall, rid)
            init = self._decode_init(frame, rid)
        except _PLUGIN_FAULTS as exc:
            yield from self._spawn_failed_steps(proc, exc)
            raise  # pragma: no cover - the steps always raise
        except GeneratorExit:  # the flow was closed, not failed: yield nothing more
            self.life.probe_unresolved()
            raise
        except BaseException:
            self.interrupted(proc)
            raise
        self._spawned(init)
        return proc

    def spawn_blocking(self) -> PluginProcess:
        """:meth:`_spawn_steps` with blocking calls: a sync client's cold start, as
        plain calls (it comes right after the plugin's start flushed the caches,
        where every generator resumed is dear). Its failures run the same steps."""
        proc, rid, deadline = self._spawn_begin()
        try:
            init = self._decode_init(proc.exchange(init_line(self._init_params, rid), deadline), rid)
        except _PLUGIN_FAULTS as exc:
            run_sync(self._spawn_failed_steps(proc, exc), self.interrupted)
            raise  # pragma: no cover - the steps always raise
        except BaseException:
            self.interrupted(proc)
            raise
        self._spawned(init)
        return proc

    def _spawn_begin(self) -> Tuple[PluginProcess, int, float]:
        """A cold start up to its ``init`` line: check the executable, spawn, book
        the process. Returns it, the ``init``'s id and its deadline."""
        started = monotonic()
        deadline = started + self.policy.start_timeout
        try:
            proc = self.spawner.start(self.life)
        except BaseException:
            self.life.probe_unresolved()  # (a crash booked already resolved a probe)
            raise
        self.slot.proc = proc
        self.life.on_spawned(proc.pid, started)
        return proc, self._take_id(), deadline

    def _decode_init(self, frame: bytes, rid: int) -> InitResult:
        init = decode_reply(frame, InitCall, rid, plugin=self.name)
        if init.source_name != self.source_name:
            raise InitError(messages.wrong_source(self.name, init.source_name, self.source_name), plugin=self.name)
        return init

    def _spawned(self, init: InitResult) -> None:
        """Book a process that answered ``init``."""
        self.init = init
        self.life.on_ready(init)
        self.caps_bits = init.capabilities_bits  # int(init.capabilities), without building the IntFlag
        if self.policy.idle_timeout != math.inf:
            self.on_live(self)

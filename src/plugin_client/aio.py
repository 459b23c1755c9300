"""``AsyncPluginClient``: the :class:`~plugin_client.PluginClient` contract for asyncio hosts.

Same constructor, policy, health, errors and semantics as ``PluginClient``; the
request methods are coroutines and ``health()`` stays a plain, non-blocking
call. The lifetime decisions are not written again here: both clients drive the
same flow (:mod:`plugin_client._flow`), which ``yield``\\ s the waits it needs.
This module only performs those waits on the running event loop:

- **Reads**: a reader callback on the plugin's stdout (registered once per
  process, ``loop.add_reader``) reads what is there and feeds the process's
  core ``FrameReader`` (``feed()`` / ``next_frame()``). A reply that is
  already in the pipe when the request's task starts to wait for it (a
  plugin on this CPU has typically answered during the write) is read at
  once, and the task goes on without a loop iteration; never more than
  ``QUICK_MAX`` requests in a row, so that other tasks run. When it is not
  there yet and the loop has no other callback ready, the compiled core
  spins for it briefly (``FrameReader.spin_ready``, at most 50 µs, GIL
  released) instead of letting the loop sleep: a plugin on another CPU then
  answers a running CPU, not one that must be woken. (I/O of other tasks
  that arrives during a spin waits for its end, 50 µs at most.) Bytes that
  arrive with no request waiting for them are left in the reader, and
  reading stops; the flow's idle check then sees them before the next
  request and recycles the process, as in the sync client.
- **A warm** ``get``: with a live process and a reply that is plainly a
  success, the request is made and decoded without the flow's generator or
  a ``GetCall`` model, as ``PluginClient`` does it; anything else (a spawn,
  a reply to wait for, an error) continues in the flow from that point.
- **Writes**: ``os.write`` on the non-blocking stdin pipe; what a full pipe
  does not take is written from a ``loop.add_writer`` callback.
- **Deadlines**: one loop timer per process, moved only when a deadline is
  earlier than the one it is set for.
- **Idle reap**: a loop timer per process, armed when it has answered
  ``init``; when it fires, it reaps the process if it has been idle for
  ``idle_timeout``, else re-arms for when it could be (a client in use is
  looked at again a timeout later). It takes the process out while the
  request lock is free and stops it in a task of its own, without the lock,
  so a request meanwhile starts a fresh process. A request that finds its
  process expired before the timer fired hands it to such a task too, rather
  than wait for its stop. ``shutdown()`` awaits those tasks. The sync client
  does the same from one thread (:mod:`plugin_client._sweeper`).
- **Exit waits**: ``loop.add_reader`` on the child's pidfd, where the kernel
  has one; otherwise ``child.wait(0)`` with an ``asyncio.sleep`` backoff.
- **Exits during a request**: the pidfd is watched for the process's whole
  life (it turns readable only at the exit: no cost per request). An exit while
  a reply is awaited settles it at once, after what the process wrote is read,
  even if a descendant keeps its stdout open (then no EOF comes).

No executor and no thread per request. Requests to one process are
serialized in arrival order by an ``asyncio.Lock``. A task whose replies are
there at once may make up to ``QUICK_MAX`` requests in a row before it
yields; after that it queues behind every task that is waiting.

**Cancellation.** A task cancelled while its request is in flight gets its
``CancelledError`` at once, but the flow it started is never abandoned
half-way: the rest of it runs in a task of its own, which keeps the request
lock until it ends. So an in-flight request's reply is read and dropped before
the next request is written, or, if the plugin does not answer, the request's
own deadline kills the process (a ``RequestTimeout``, counted as a crash, as
for any hung plugin). A cancelled spawn still finishes its ``init`` (within
``start_timeout``), but the cancelled request itself is then not written; a
cancelled shutdown still ends the process. No later caller can get the reply
of a cancelled one. Only if that task itself is
cancelled (the loop is being torn down, e.g. at the end of ``asyncio.run``)
is the process killed on the spot, blocking for the few milliseconds a
SIGKILL takes.

A client binds to the event loop that first uses it. It may move to another
loop only while it has no request in flight and its process (if any) belonged
to a loop that is closed, as when a script calls ``asyncio.run`` twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import weakref
from typing import Any, Dict, Mapping, Optional, Set, Union, cast, overload

from ._aio_transport import Channel, DeliveredOutcome, ExitWait, acquire_within
from ._client_base import ClientBase
from ._flow import Flow, FlowSteps
from ._flow_blocking import stop_blocking
from ._live import unwatch, watch
from ._impl import monotonic
from ._process import EXCHANGE_ERRORS, Exchange, PluginProcess, WaitExit
from ._scrub import scrub
from ._sweeper import SWEEPER
from .manifest import LoadedPlugin, PluginManifest, VerifiedExecutable
from .policy import LifetimePolicy
from .protocol import (
    Call,
    DeleteCall,
    DeleteResult,
    GetCall,
    GetResult,
    InitCall,
    InitResult,
    IsAvailableCall,
    IsAvailableResult,
    KeyMaterialCall,
    KeyMaterialResult,
    ListCall,
    ListResult,
    PutCall,
    PutResult,
    Result,
    ValidateCall,
    ValidateResult,
)

__all__ = ("AsyncPluginClient",)

_log = logging.getLogger("plugin_client")

_PathLike = Union[str, "os.PathLike[str]"]


# Tasks finishing the flows of cancelled callers, and idle reaps: the loop keeps
# only weak references to tasks.
_FINISHING: Set["asyncio.Task[None]"] = set()


class AsyncPluginClient(ClientBase):
    """An asyncio host's handle on one plugin. Does not spawn until the first request.

    Takes exactly the arguments of :class:`~plugin_client.PluginClient`.
    """

    # The tasks stopping this client's expired processes without the request
    # lock, and those processes (_stop_in_background); a class default, so a
    # client never reaped pays nothing.
    _stops: Optional[Dict["asyncio.Task[None]", PluginProcess]] = None

    def __init__(
        self,
        manifest: Union[PluginManifest, LoadedPlugin],
        executable: Union[VerifiedExecutable, _PathLike, None] = None,
        policy: Optional[LifetimePolicy] = None,
        *,
        source_name: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
        _core: Any = None,
    ) -> None:
        """``_core`` (private, for benchmarks): the core module this client's
        processes use (``plugin_client._core`` or ``plugin_client._core_py``),
        instead of the one ``PLUGIN_CLIENT_NO_EXTENSIONS`` selected at import."""
        if isinstance(manifest, LoadedPlugin):
            if executable is None:
                executable = manifest.executable
            manifest = manifest.manifest
        self._flow = flow = Flow(
            manifest,
            executable,
            policy if policy is not None else LifetimePolicy(),
            source_name,
            config,
            client_type="AsyncPluginClient",
            start_process=None if _core is None else functools.partial(PluginProcess.start, core=_core),
        )
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        # Made at first use, in the loop: before Python 3.10 a Lock binds to a loop when made.
        self._lock: Optional[asyncio.Lock] = None
        self._lock_timeout = flow.lock_timeout()
        watch(self, flow.slot)  # stops the process if this client is collected first
        flow.slot.stop_dropped = SWEEPER.stop_dropped  # (in the sweeper thread: not blocking this loop)
        # Each new process is reaped once idle, from a loop timer (weakly held).
        self._idle_timer: Optional[asyncio.TimerHandle] = None
        flow.on_live = _on_live
        flow.stop_in_background = _stop_in_loop_task
        flow.slot.forget_after_fork = AsyncPluginClient._forget_after_fork

    # --- public API -------------------------------------------------------------

    async def __aenter__(self) -> AsyncPluginClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @overload
    async def request(self, call: InitCall) -> InitResult: ...
    @overload
    async def request(self, call: IsAvailableCall) -> IsAvailableResult: ...
    @overload
    async def request(self, call: GetCall) -> GetResult: ...
    @overload
    async def request(self, call: ListCall) -> ListResult: ...
    @overload
    async def request(self, call: ValidateCall) -> ValidateResult: ...
    @overload
    async def request(self, call: PutCall) -> PutResult: ...
    @overload
    async def request(self, call: DeleteCall) -> DeleteResult: ...
    @overload
    async def request(self, call: KeyMaterialCall) -> KeyMaterialResult: ...
    @overload
    async def request(self, call: Call) -> Result: ...

    async def request(self, call: Call) -> Result:
        """Send one call and return its typed result. Spawns (and inits) the plugin if needed.

        Raises :class:`PluginError` for the plugin's own error replies (the process
        stays up) and another :class:`PluginClientError` for everything else.
        """
        result: Result = await self._call(type(call), call, "")
        return result

    # Each awaits _call itself rather than request(): one coroutine layer less.
    async def is_available(self) -> IsAvailableResult:
        result: IsAvailableResult = await self._call(IsAvailableCall, IsAvailableCall(), "")
        return result

    async def get(self, reference: str) -> GetResult:
        if reference.__class__ is str:
            # No GetCall model on the warm path: the line is formatted from the reference.
            got: GetResult = await self._call(GetCall, None, reference)
            return got
        result: GetResult = await self._call(GetCall, GetCall(reference=reference), "")  # GetCall validates it
        return result

    async def list(self) -> ListResult:
        result: ListResult = await self._call(ListCall, ListCall(), "")
        return result

    async def validate(self, reference: str) -> ValidateResult:
        result: ValidateResult = await self._call(ValidateCall, ValidateCall(reference=reference), "")
        return result

    async def put(self, reference: str, value: Any) -> PutResult:
        """``value`` is a ``str`` or a ``pydantic.SecretStr``."""
        call = PutCall(reference=reference, value=value)
        del value  # (not in this frame's locals if the request raises)
        result: PutResult = await self._call(PutCall, call, "")
        return result

    async def delete(self, reference: str) -> DeleteResult:
        result: DeleteResult = await self._call(DeleteCall, DeleteCall(reference=reference), "")
        return result

    async def key_material(self, purpose: str) -> KeyMaterialResult:
        result: KeyMaterialResult = await self._call(KeyMaterialCall, KeyMaterialCall(purpose=purpose), "")
        return result

    async def start(self) -> InitResult:
        """Spawn and init now, instead of at the first request (for ``doctor``, warm-ups)."""
        init: InitResult = await self._run(self._flow.start_steps(), timed=False)
        return init

    async def clear_disabled(self) -> None:
        """Re-enable a disabled plugin: clear the crash window and any leftover process."""
        await self._run(self._flow.clear_disabled_steps(), timed=False)

    async def shutdown(self) -> None:
        """Stop the plugin gracefully (stdin close, SIGTERM, grace, SIGKILL) without
        blocking the loop. Idempotent. The client cannot be used afterwards."""
        flow = self._flow
        flow.closed = True
        self._disarm_idle()
        lock = self._bind()
        if lock.locked():
            try:
                await acquire_within(lock, self._lock_timeout)
            except asyncio.TimeoutError:
                proc = flow.slot.proc
                if proc is not None:  # a request is stuck: end its process from here
                    proc.child.kill()
                await lock.acquire()
        else:
            await lock.acquire()
        await self._run(flow.shutdown_steps(), locked=True)
        if self._stops:
            # Expired processes being stopped without the lock (_stop_in_background).
            loop = asyncio.get_running_loop()
            tasks = [task for task in self._stops if task.get_loop() is loop]
            if tasks:
                _done, late = await asyncio.wait(tasks, timeout=flow.stop_bound())
                if late:
                    flow.warn_stop_unfinished()
        unwatch(self._flow.slot)

    close = shutdown

    # --- the driver -----------------------------------------------------------------

    def _bind(self) -> asyncio.Lock:
        """The request lock, for the running loop (binding to it on first use)."""
        loop = asyncio.get_running_loop()
        lock = self._lock
        if loop is self._loop and lock is not None:
            return lock
        old = self._loop
        if old is not None and lock is not None:
            proc = self._flow.slot.proc
            if lock.locked() or (proc is not None and proc.io is not None and not old.is_closed()):
                raise RuntimeError(
                    f"AsyncPluginClient {self.name!r} is in use by another event loop; "
                    "use one client per loop, or shut it down before moving on."
                )
            if proc is not None:
                proc.release_io()  # its loop is closed: hooks on the new one come with the next exchange
        self._loop = loop
        self._lock = lock = asyncio.Lock()
        return lock

    async def _call(self, call_type: Any, call: Optional[Call], reference: str) -> Any:
        """One request: ``call``, or (``call`` None) a ``GetCall`` for ``reference``.

        The engine's one request path on the loop: ``Flow.begin``, the exchange
        begun on the process's channel, and ``Flow.complete`` when the reply is
        there at once and plainly a success. Anything else (no warm process, a
        reply to wait for, a failure) goes on in the flow (:meth:`_drive`).
        """
        flow = self._flow
        flow.gate(call_type)  # a refused call waits for no other request
        lock = self._bind()
        if lock.locked():
            flow.life.check_probing()  # a probe after a cooldown holds it: refused, not queued
            try:
                await acquire_within(lock, self._lock_timeout)
            except asyncio.TimeoutError:
                raise flow.lock_timeout_error() from None
        else:
            await lock.acquire()
        waited: Any = None  # the warm exchange's outcome, begun here
        try:
            pending = flow.begin(call_type, call, reference)
            if pending is None:
                steps = flow.request_steps(call_type, call, reference)
            elif pending.proc.io is None:  # no channel yet (a loop moved): the flow's driver opens one
                steps = flow.exchange_steps(pending)
            else:
                ch = pending.proc.io
                try:
                    ch.begin(pending.line, pending.deadline)
                except EXCHANGE_ERRORS as exc:
                    steps = flow.finish_steps(pending, exc)
                else:
                    waited = ch.wait()
                    if waited.done() and waited.exception() is None:
                        result = flow.complete(pending, waited.result())
                        if result is not None:
                            lock.release()
                            return result
                    steps = flow.exchange_steps(pending)
        except BaseException as err:
            lock.release()
            waited = None  # (a future holding the reply frame)
            scrub(err)
            raise
        return await self._drive(steps, waited=waited)

    async def _run(self, steps: FlowSteps, *, timed: bool = False, locked: bool = False) -> Any:
        """Take the request lock (``timed``: waiting at most the lock timeout;
        ``locked``: the caller has it), then :meth:`_drive` ``steps``."""
        if not locked:
            try:
                lock = self._bind()
                if timed and lock.locked():
                    try:
                        await acquire_within(lock, self._lock_timeout)
                    except asyncio.TimeoutError:
                        raise self._flow.lock_timeout_error() from None
                else:
                    await lock.acquire()
            except BaseException:
                steps.close()  # never started: nothing to undo
                raise
        return await self._drive(steps)

    async def _drive(
        self,
        steps: FlowSteps,
        op: Any = None,
        waited: Any = None,
        source: Any = None,
        *,
        caller: bool = True,
        locked: bool = True,
    ) -> Any:
        """The one loop that drives every flow generator on this loop: perform
        each operation ``steps`` asks for (an :class:`Exchange` on the process's
        channel, a :class:`WaitExit`), hand it its outcome, return its value.

        ``op``: None to start ``steps``; or the operation it is at (a flow
        handed over, see below), with ``source`` its begun wait (a channel, an
        exit wait, :class:`DeliveredOutcome`) or None if it is still to be performed.
        ``waited``: the outcome (a future) of the first operation, which the
        caller has begun already (the warm exchange of :meth:`_call`).

        ``caller``: a caller awaits this. If it is cancelled while an operation
        is in progress, the rest of the flow is handed over to a task that
        finishes it (``caller=False``), and the cancellation propagates at
        once. That task, cancelled itself (the loop is going away), ends the
        process on the spot; it never writes a request its caller did not see
        begun (``Exchange.skippable``), and nobody sees its errors (the flow
        booked them). ``locked``: release the request lock at the end (not for
        the idle reap's stop, which runs without it).
        """
        loop = self._loop
        handed_over = False
        try:
            if op is None:
                op = steps.send(None)
                if waited is not None:
                    source = op.proc.io
            while True:
                try:
                    if waited is None:
                        if source is None:
                            if type(op) is Exchange:
                                if not caller and op.skippable:
                                    # The cancelled caller's request was not written yet: never write it.
                                    steps.close()
                                    return None
                                ch = op.proc.io
                                if ch is None:
                                    ch = op.proc.io = Channel(loop, op.proc)  # type: ignore[arg-type]
                                ch.begin(op.line, op.deadline)
                                source = ch
                            else:
                                wait = cast(WaitExit, op)
                                source = ExitWait(loop, wait.proc.child, wait.timeout)  # type: ignore[arg-type]
                        waited = source.wait()
                    res = await waited
                except asyncio.CancelledError:
                    if not caller:
                        self._flow.abandon(op.proc)
                        steps.close()
                        raise
                    if source is None:  # pragma: no cover - only an await raises it
                        raise
                    # The outcome may have been delivered before the cancellation landed.
                    if isinstance(waited, asyncio.Future) and waited.done() and not waited.cancelled():
                        source = DeliveredOutcome(waited)
                    handed_over = True
                    self._finish_in_task(steps, op, source)
                    raise
                except BaseException as exc:
                    waited = source = None
                    op = steps.throw(exc)
                else:
                    waited = source = None
                    op = steps.send(res)
        except StopIteration as stop:
            return stop.value
        except BaseException as err:
            # The reply frame (a get value) must not ride along in locals.
            res = waited = source = None  # noqa: F841
            if caller:
                scrub(err)
                raise
            if not isinstance(err, Exception):
                raise
            # Booked by the flow (a timeout or a crash is counted); nobody waits for it.
            _log.debug("Plugin %r: a flow finished in the background ended with %s", self.name, type(err).__name__)
            return None
        finally:
            if locked and not handed_over:
                assert self._lock is not None
                self._lock.release()

    def _finish_in_task(self, steps: FlowSteps, op: Any, source: Any) -> None:
        """A cancelled caller's flow, at ``op`` (``source``: its begun wait): finish
        it in a task of its own, which keeps the request lock until it ends."""
        loop = self._loop
        assert loop is not None
        task = loop.create_task(self._drive(steps, op, None, source, caller=False))
        _FINISHING.add(task)
        task.add_done_callback(_FINISHING.discard)

    # --- the idle reap -------------------------------------------------------------

    def _arm_idle(self, delay: float) -> None:
        """Look at the process again ``delay`` seconds from now, from a timer on
        this client's loop that holds the client weakly."""
        self._disarm_idle()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            self._idle_timer = loop.call_later(delay, _idle_timer_fired, weakref.ref(self))

    def _disarm_idle(self) -> None:
        timer, self._idle_timer = self._idle_timer, None
        if timer is not None:
            timer.cancel()

    def _reap_idle(self) -> None:
        """The idle timer's call: reap the process if it has been idle for
        ``idle_timeout``, as the sync client's sweeper thread does. A client in
        use (its lock taken) is not reaped now: look again a whole timeout later.

        The process is taken out while the lock is free (this runs in the loop,
        between tasks, so no request is under way) and stopped by a task of its
        own without the lock (:meth:`_stop_in_background`)."""
        flow = self._flow
        if flow.idle_due() is None:
            return
        lock = self._lock
        if lock is None or lock.locked():
            self._arm_idle(flow.policy.idle_timeout)
            return
        proc, nxt = flow.take_idle()
        if proc is not None:
            self._stop_in_background(proc)
        elif nxt is not None:
            self._arm_idle(max(0.0, nxt - monotonic()))

    def _stop_in_background(self, proc: PluginProcess) -> None:
        """Stop ``proc``, taken out of the slot as expired, gracefully and without
        the request lock, so no request waits up to ``exit_wait + shutdown_grace``
        for a stubborn plugin: in a task that ``shutdown()`` awaits. Runs in
        this client's loop."""
        loop = self._loop
        assert loop is not None
        task = loop.create_task(self._drive(self._flow.stop_steps(proc), caller=False, locked=False))
        stops = self._stops
        if stops is None:
            stops = self._stops = {}
        stops[task] = proc
        _FINISHING.add(task)  # held until done, as a finishing flow is
        task.add_done_callback(_FINISHING.discard)
        task.add_done_callback(self._background_stop_done)

    def _background_stop_done(self, task: "asyncio.Task[None]") -> None:
        if self._stops is not None:
            self._stops.pop(task, None)

    def _background_stops(self) -> int:
        """How many of this client's processes are being stopped in the background."""
        return len(self._stops) if self._stops else 0

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's process without signalling it."""
        self._flow.forget_after_fork()
        self._loop = None
        self._lock = None
        self._idle_timer = None  # the parent's loop's
        stops, self._stops = self._stops, None
        for proc in (stops or {}).values():  # the parent's tasks were stopping them: not this process's to touch
            proc.forget()


def _on_live(flow: Flow) -> None:
    """``Flow.on_live`` of an asyncio client (in its loop): arm the new process's idle reap."""
    ref = flow.slot.ref
    client = ref() if ref is not None else None
    if client is not None:
        client._arm_idle(flow.policy.idle_timeout)


def _stop_in_loop_task(flow: Flow, proc: PluginProcess) -> None:
    """``Flow.stop_in_background`` of an asyncio client (in its loop, from a request's flow)."""
    ref = flow.slot.ref
    client = ref() if ref is not None else None
    if client is not None:
        client._stop_in_background(proc)
    else:  # pragma: no cover - a request's flow runs for a live client
        stop_blocking(flow, proc)


def _idle_timer_fired(ref: "weakref.ref[AsyncPluginClient]") -> None:
    client = ref()
    if client is None:
        return
    client._idle_timer = None
    client._reap_idle()

"""``PluginClient``: owns one plugin process and its whole lifetime, for threaded hosts.

Lazy spawn with an env-cleared ``posix_spawn``, the ``init`` handshake within
``start_timeout``, a capability gate, one request in flight at a time with a
deadline, idle reaping (in the background, :mod:`plugin_client._sweeper`,
whose thread also stops the expired process a request may find first, so
that request does not wait for it), detection of a process
that died while idle, graceful shutdown of the whole process group, a
sliding-window restart cap, and finalizer/at-exit/at-fork safety so no
client leaves a zombie or an orphan, or touches its parent's plugin after
``fork()``.

Deliberately not here: the decision flow (:mod:`plugin_client._flow`, shared
with :class:`~plugin_client.aio.AsyncPluginClient`: this module only performs
its operations with blocking calls, through :func:`~plugin_client._flow_blocking.run_blocking`),
the wire format (:mod:`plugin_client.protocol`), the process mechanics
(:mod:`plugin_client._process`), the bookkeeping (:mod:`plugin_client._lifecycle`)
and manifest checks (:mod:`plugin_client.manifest`).
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any, Callable, Mapping, Optional, Union, overload

from ._client_base import ClientBase
from ._flow import Flow
from ._flow_blocking import begin_blocking, run_blocking, shutdown_blocking
from ._impl import monotonic
from ._live import unwatch, watch
from ._process import EXCHANGE_ERRORS, PluginProcess
from ._scrub import scrub
from ._sweeper import SWEEPER, watch_idle
from ._wire_trace import TRACE, traced_request, tracing
from .events import PluginEvent
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

__all__ = ("PluginClient",)

_PathLike = Union[str, "os.PathLike[str]"]


class PluginClient(ClientBase):
    """A host's handle on one plugin. Does not spawn until the first request.

    ``manifest`` is a :class:`PluginManifest` (its executable is verified
    against ``checksum_sha256`` at the first spawn) or a :class:`LoadedPlugin`
    (already verified). ``executable`` overrides the manifest's path with a
    :class:`VerifiedExecutable` or a path, verified the same way.

    ``on_event``: called with a :class:`~plugin_client.events.PluginEvent` for each
    lifecycle event of the plugin (spawned, ready, stopped, crashed...), on the
    events thread, never on the caller's (README "Events and logging");
    ``request_events=True`` adds a ``request`` event for every request.
    """

    def __init__(
        self,
        manifest: Union[PluginManifest, LoadedPlugin],
        executable: Union[VerifiedExecutable, _PathLike, None] = None,
        policy: Optional[LifetimePolicy] = None,
        *,
        source_name: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
        on_event: Optional[Callable[[PluginEvent], None]] = None,
        request_events: bool = False,
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
            idle_check_in_exchange=True,  # FrameReader.request makes it, in the core
            start_process=None if _core is None else functools.partial(PluginProcess.start, core=_core),
            on_event=on_event,
            request_events=request_events,
        )
        self._lock = threading.Lock()
        self._lock_timeout = flow.lock_timeout()
        watch(self, flow.slot)  # stops the process if this client is collected first
        flow.slot.reap_if_idle = PluginClient._reap_if_idle  # each process is reaped in the background once idle (_sweeper)
        flow.slot.stop_dropped = SWEEPER.stop_dropped  # and stopped there if this client is collected
        flow.slot.forget_after_fork = PluginClient._forget_after_fork
        flow.on_live = watch_idle
        flow.stop_in_background = SWEEPER.stop_for_flow  # an expired process found by a request

    # --- public API -------------------------------------------------------------

    def __enter__(self) -> PluginClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @overload
    def request(self, call: InitCall) -> InitResult: ...
    @overload
    def request(self, call: IsAvailableCall) -> IsAvailableResult: ...
    @overload
    def request(self, call: GetCall) -> GetResult: ...
    @overload
    def request(self, call: ListCall) -> ListResult: ...
    @overload
    def request(self, call: ValidateCall) -> ValidateResult: ...
    @overload
    def request(self, call: PutCall) -> PutResult: ...
    @overload
    def request(self, call: DeleteCall) -> DeleteResult: ...
    @overload
    def request(self, call: KeyMaterialCall) -> KeyMaterialResult: ...
    @overload
    def request(self, call: Call) -> Result: ...

    def request(self, call: Call) -> Result:
        """Send one call and return its typed result. Spawns (and inits) the plugin if needed.

        Raises :class:`PluginError` for the plugin's own error replies (the process
        stays up) and another :class:`PluginClientError` for everything else.
        """
        return self._call(type(call), call, "")

    def is_available(self) -> IsAvailableResult:
        return self.request(IsAvailableCall())

    def get(self, reference: str) -> GetResult:
        if reference.__class__ is not str:
            return self.request(GetCall(reference=reference))  # GetCall validates it
        # No GetCall model on the warm path: the line is formatted from the reference.
        return self._call(GetCall, None, reference)  # type: ignore[return-value]

    def list(self) -> ListResult:
        return self.request(ListCall())

    def validate(self, reference: str) -> ValidateResult:
        return self.request(ValidateCall(reference=reference))

    def put(self, reference: str, value: Any) -> PutResult:
        """``value`` is a ``str`` or a ``pydantic.SecretStr``."""
        call = PutCall(reference=reference, value=value)
        del value  # (not in this frame's locals if the request raises)
        return self.request(call)

    def delete(self, reference: str) -> DeleteResult:
        return self.request(DeleteCall(reference=reference))

    def key_material(self, purpose: str) -> KeyMaterialResult:
        return self.request(KeyMaterialCall(purpose=purpose))

    def start(self) -> InitResult:
        """Spawn and init now, instead of at the first request (for ``doctor``, warm-ups)."""
        with self._lock:
            try:
                init: InitResult = run_blocking(self._flow, self._flow.start_steps())
            except BaseException as err:
                self._flow.count_failure(err)
                scrub(err)  # the init line carries the config
                raise
            return init

    def clear_disabled(self) -> None:
        """Re-enable a disabled plugin: clear the crash window and any leftover process."""
        with self._lock:
            try:
                run_blocking(self._flow, self._flow.clear_disabled_steps())
            except BaseException as err:
                self._flow.count_failure(err)
                scrub(err)
                raise

    def shutdown(self) -> None:
        """Stop the plugin gracefully (stdin close, SIGTERM, grace, SIGKILL). Idempotent.
        The client cannot be used afterwards."""
        flow = self._flow
        flow.closed = True
        if not self._lock.acquire(blocking=False) and not self._lock.acquire(timeout=self._lock_timeout):
            proc = flow.slot.proc
            if proc is not None:  # a request is stuck: end its process from here
                proc.child.kill()
            self._lock.acquire()
        # The process leaves the slot first thing below, so the finalizer would
        # find nothing: let it go now, while that is cheap (before the exit).
        unwatch(self._flow.slot)
        try:
            shutdown_blocking(flow)
        finally:
            self._lock.release()
        # Processes of this client stopped in the background (_reap_if_idle, Flow.stop_in_background).
        if SWEEPER.stops and not SWEEPER.wait_stopped(flow, flow.stop_bound()):
            flow.warn_stop_unfinished()

    close = shutdown

    # --- the request path -----------------------------------------------------------

    def _call(self, call_type: Any, call: Optional[Call], reference: str) -> Result:
        """One request: ``call``, or (``call`` None) a ``GetCall`` for ``reference``.

        The engine's one request path with blocking calls: ``Flow.begin`` (or,
        with no warm process, ``begin_blocking``: spawn, reap, recover,
        refuse), one core call that makes the idle check, writes the line and
        reads the reply, then ``Flow.complete`` or ``Flow.finish_steps``.
        """
        flow = self._flow
        flow.gate(call_type)  # a refused call waits for no other request
        lock = self._lock
        # acquire(False) by position: the warm path (bench/test_bench_roundtrip.py).
        if not lock.acquire(False):
            flow.life.check_probing()  # a probe after a cooldown holds it: refused, not queued
            if not lock.acquire(timeout=self._lock_timeout):
                raise flow.lock_timeout_error()
        try:
            pending = flow.begin(call_type, call, reference) or begin_blocking(flow, call_type, call, reference)
            proc = pending.proc
            try:
                # None: output or an exit while idle; nothing was written.
                if TRACE.maybe and tracing():  # wire trace (its cost: bench/test_bench_wire_trace.py)
                    outcome: Any = traced_request(proc, pending.line, pending.deadline)
                else:
                    outcome = proc.reader.request(proc.child, pending.line, pending.deadline)
            except EXCHANGE_ERRORS as exc:
                outcome = exc
            except BaseException:  # the host's interruption, mid-request: not the plugin's doing
                flow.interrupted(proc)
                raise
            if outcome.__class__ is bytes:
                result = flow.complete(pending, outcome)
                if result is not None:
                    return result
            done: Result = run_blocking(flow, flow.finish_steps(pending, outcome))
            return done
        except BaseException as err:
            # The reply frame (a get value) must not ride along in this frame's locals.
            outcome = None
            flow.count_failure(err)
            scrub(err)
            raise
        finally:
            lock.release()

    def _reap_if_idle(self, now: float) -> Optional[float]:
        """The idle sweeper's call (:mod:`plugin_client._sweeper`, ``Slot.reap_if_idle``):
        reap the process if it has been idle for ``idle_timeout`` at ``now``.
        Returns when to look again, or None (nothing to watch).

        Never waits for the request lock (a client in use is not idle), and holds
        it only to take the process out of the slot and hand it to a background
        stop (``SWEEPER.stop_for_flow``): a request meanwhile starts a fresh process
        instead of waiting up to ``exit_wait + shutdown_grace`` for a stubborn
        one. ``shutdown()`` waits for the stop."""
        flow = self._flow
        due = flow.idle_due()
        if due is None or due > now:
            return due
        if not self._lock.acquire(blocking=False):
            return monotonic() + flow.policy.idle_timeout
        try:
            proc, due = flow.take_idle()
            if proc is not None:
                SWEEPER.stop_for_flow(flow, proc)
            return due
        finally:
            self._lock.release()

    def _background_stops(self) -> int:
        """How many of this client's processes are being stopped in the background."""
        return SWEEPER.stopping(self._flow)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's process without signalling it."""
        self._lock = threading.Lock()
        self._flow.forget_after_fork()  # (the sweeper forgets the ones it was stopping)

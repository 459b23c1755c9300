"""``PluginClient``: owns one plugin process and its whole lifetime, for threaded hosts.

Lazy spawn with an env-cleared ``posix_spawn``, the ``init`` handshake within
``start_timeout``, a capability gate, one request in flight at a time with a
deadline, lazy idle reaping, detection of a process that died while idle,
graceful shutdown of the whole process group, a sliding-window restart cap,
and finalizer/at-exit/at-fork safety so no client leaves a zombie or an
orphan, or touches its parent's plugin after ``fork()``.

Deliberately not here: the wire format (:mod:`plugin_client.protocol`), the
process mechanics (:mod:`plugin_client._process`), the bookkeeping
(:mod:`plugin_client._lifecycle`) and manifest checks
(:mod:`plugin_client.manifest`). No background thread reaps idle processes: a
process past its idle timeout is shut down before the next request.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, Dict, List, Mapping, Optional, TypeVar, Union, overload

from ._core_errors import DeadlineExceeded, FrameTooLargeError, PipeClosed, SpawnFailed, StreamEOF
from ._impl import monotonic
from ._lifecycle import Lifecycle
from ._process import IDLE_EXITED, IDLE_OK, PluginProcess
from .errors import (
    ClientClosed,
    FrameTooLarge,
    InitError,
    PluginClientError,
    PluginCrashed,
    PluginError,
    ProtocolError,
    RequestTimeout,
    SpawnError,
    UnsupportedCapability,
)
from .health import PluginHealth
from .manifest import LoadedPlugin, PluginManifest, VerifiedExecutable, verify_executable
from .policy import LifetimePolicy
from .protocol import (
    MAX_REQUEST_ID,
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
    decode_reply,
    encode_request,
)

__all__ = ("PluginClient",)

_log = logging.getLogger("plugin_client")

R = TypeVar("R", bound=Result)
_PathLike = Union[str, "os.PathLike[str]"]


class _Slot:
    """Holds the live process. Shared with the finalizer, which must not hold the client."""

    __slots__ = ("proc", "exit_wait", "grace", "__weakref__")

    def __init__(self, exit_wait: float, grace: float) -> None:
        self.proc: Optional[PluginProcess] = None
        self.exit_wait = exit_wait
        self.grace = grace


def _finalize(slot: _Slot, name: str) -> None:
    proc, slot.proc = slot.proc, None
    if proc is not None:
        _log.debug("Plugin %r: client collected or interpreter exiting; shutting its process down", name)
        try:
            proc.stop(slot.exit_wait, slot.grace)
        except Exception:  # pragma: no cover - a finalizer must never raise
            _log.exception("Plugin %r: error while shutting down from a finalizer", name)


_LIVE: "weakref.WeakSet[PluginClient]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_LIVE):
        client._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class PluginClient:
    """A host's handle on one plugin. Does not spawn until the first request.

    ``manifest`` is a :class:`PluginManifest` (its executable is verified
    against ``checksum_sha256`` at the first spawn) or a :class:`LoadedPlugin`
    (already verified). ``executable`` overrides the manifest's path with a
    :class:`VerifiedExecutable` or a path, verified the same way.
    """

    def __init__(
        self,
        manifest: Union[PluginManifest, LoadedPlugin],
        executable: Union[VerifiedExecutable, _PathLike, None] = None,
        policy: Optional[LifetimePolicy] = None,
        *,
        source_name: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if isinstance(manifest, LoadedPlugin):
            if executable is None:
                executable = manifest.executable
            manifest = manifest.manifest
        self._manifest = manifest
        self._name = manifest.name
        self._policy = policy if policy is not None else LifetimePolicy()
        self._source_name = source_name if source_name is not None else manifest.name
        self._config: Dict[str, Any] = dict(config) if config is not None else {}
        self._exe_source = executable
        self._verified: Optional[VerifiedExecutable] = (
            executable if isinstance(executable, VerifiedExecutable) else None
        )
        self._life = Lifecycle(self._name, self._source_name, self._policy)
        self._lock = threading.Lock()
        self._closed = False
        self._next_id = 1
        self._pid = os.getpid()
        self._slot = _Slot(self._policy.exit_wait, self._policy.shutdown_grace)
        p = self._policy
        # A waiter may be queued behind one request that spends its whole start,
        # request and shutdown budget; past that something is wrong.
        self._lock_timeout = p.start_timeout + p.request_timeout + p.exit_wait + p.shutdown_grace
        self._finalizer = weakref.finalize(self, _finalize, self._slot, self._name)
        _LIVE.add(self)

    # --- public API -------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def manifest(self) -> PluginManifest:
        return self._manifest

    @property
    def policy(self) -> LifetimePolicy:
        return self._policy

    def __repr__(self) -> str:
        return f"<PluginClient {self._name!r} state={self._life.state.value} pid={self._life.pid}>"

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
        need = type(call).capability
        caps = self._life.capabilities
        if need and caps is not None and not (caps & need):
            raise self._unsupported(call)
        if not self._lock.acquire(timeout=self._lock_timeout):
            raise RequestTimeout(
                f"Plugin {self._name!r}: another request held the client for more than "
                f"{self._lock_timeout:g} s; check health() for a hung plugin.",
                plugin=self._name,
            )
        try:
            proc = self._ready_process()
            caps = self._life.capabilities
            if need and caps is not None and not (caps & need):
                raise self._unsupported(call)
            return self._exchange(proc, call)
        finally:
            self._lock.release()

    def is_available(self) -> IsAvailableResult:
        return self.request(IsAvailableCall())

    def get(self, reference: str) -> GetResult:
        return self.request(GetCall(reference=reference))

    def list(self) -> ListResult:
        return self.request(ListCall())

    def validate(self, reference: str) -> ValidateResult:
        return self.request(ValidateCall(reference=reference))

    def put(self, reference: str, value: Any) -> PutResult:
        """``value`` is a ``str`` or a ``pydantic.SecretStr``."""
        return self.request(PutCall(reference=reference, value=value))

    def delete(self, reference: str) -> DeleteResult:
        return self.request(DeleteCall(reference=reference))

    def key_material(self, purpose: str) -> KeyMaterialResult:
        return self.request(KeyMaterialCall(purpose=purpose))

    def start(self) -> InitResult:
        """Spawn and init now, instead of at the first request (for ``doctor``, warm-ups)."""
        with self._lock:
            self._ready_process()
            assert self._init is not None
            return self._init

    def health(self) -> PluginHealth:
        """A snapshot; never waits behind a request in flight."""
        proc = self._slot.proc
        tail = proc.tail.lines() if proc is not None else list(self._last_tail)
        return self._life.snapshot(tail)

    def clear_disabled(self) -> None:
        """Re-enable a disabled plugin: clear the crash window and any leftover process."""
        with self._lock:
            proc, self._slot.proc = self._slot.proc, None
            if proc is not None:
                self._life.on_stopped(self._stop(proc))
            self._life.clear_disabled()

    def shutdown(self) -> None:
        """Stop the plugin gracefully (stdin close, SIGTERM, grace, SIGKILL). Idempotent.
        The client cannot be used afterwards."""
        self._closed = True
        if not self._lock.acquire(timeout=self._lock_timeout):
            proc = self._slot.proc
            if proc is not None:  # a request is stuck: end its process from here
                proc.child.kill()
            self._lock.acquire()
        try:
            proc, self._slot.proc = self._slot.proc, None
            if proc is not None:
                self._life.on_stopped(self._stop(proc))
        finally:
            self._lock.release()
        self._finalizer.detach()
        _LIVE.discard(self)

    close = shutdown

    # --- internals ----------------------------------------------------------------

    _init: Optional[InitResult] = None
    _last_tail: List[str] = []

    def _unsupported(self, call: Call) -> UnsupportedCapability:
        cap = type(call).capability
        cap_name = cap.name or str(int(cap))
        return UnsupportedCapability(
            f"Plugin {self._name!r} does not claim the {cap_name} capability needed by "
            f"{type(call).method.value!r}; use a plugin that supports it.",
            capability=cap_name,
            plugin=self._name,
        )

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id = rid + 1 if rid < MAX_REQUEST_ID else 1
        return rid

    def _ready_process(self) -> PluginProcess:
        if self._closed:
            raise ClientClosed(
                f"Plugin {self._name!r}: the client was shut down; make a new PluginClient.",
                plugin=self._name,
            )
        if os.getpid() != self._pid:
            self._forget_after_fork()
        self._life.check_enabled()
        proc = self._slot.proc
        if proc is not None:
            if self._life.idle_expired(monotonic()):
                _log.debug("Plugin %r: idle for more than %g s; restarting it", self._name, self._policy.idle_timeout)
                self._slot.proc = None
                self._life.on_stopped(self._stop(proc))
                proc = None
            else:
                status = proc.idle_check()
                if status != IDLE_OK:
                    self._slot.proc = None
                    if status == IDLE_EXITED:
                        info = proc.reap_dead()
                        _log.warning(
                            "Plugin %r (pid %d) exited while idle (%s); starting a fresh one",
                            self._name, info.pid, info.signal or f"status {info.returncode}",
                        )
                        self._remember_tail(proc)
                        self._life.on_crash("it exited while idle", info)
                        self._life.check_enabled()
                        proc = None
                    else:
                        info = proc.kill()
                        self._remember_tail(proc)
                        msg = (
                            f"Plugin {self._name!r} wrote to stdout while no request was in flight; "
                            "it was restarted. Make sure it writes only replies to stdout and logs to stderr."
                        )
                        self._life.on_crash(msg, info)
                        raise ProtocolError(msg, plugin=self._name)
        if proc is None:
            proc = self._start()
        return proc

    def _executable(self) -> VerifiedExecutable:
        if self._verified is None:
            src = self._exe_source if self._exe_source is not None else self._manifest.executable_path()
            assert not isinstance(src, VerifiedExecutable)
            self._verified = verify_executable(src, self._manifest.checksum_sha256, plugin=self._name)
        return self._verified

    def _env(self) -> Dict[bytes, bytes]:
        environb = os.environb
        env: Dict[bytes, bytes] = {}
        for var in self._manifest.allowed_env_vars:
            key = os.fsencode(var)
            value = environb.get(key)
            if value is not None:
                env[key] = value
        return env

    def _start(self) -> PluginProcess:
        p = self._policy
        deadline = monotonic() + p.start_timeout
        try:
            exe = self._executable()
            exe.check_unchanged(plugin=self._name)
        except PluginClientError as exc:
            self._life.on_crash(str(exc))
            raise
        try:
            proc = PluginProcess.start(
                [os.fsencode(exe.path)],
                self._env(),
                plugin_name=self._name,
                max_frame_bytes=p.max_frame_bytes,
                stderr_lines=p.stderr_lines,
            )
        except SpawnFailed as exc:
            msg = (
                f"Plugin {self._name!r}: cannot start {str(exe.path)!r}: {os.strerror(exc.errno or 0)}; "
                "check the manifest's executable and its permissions."
            )
            self._life.on_crash(msg)
            raise SpawnError(msg, plugin=self._name) from exc
        self._slot.proc = proc
        self._life.on_spawned(proc.pid)
        call = InitCall(source_name=self._source_name, config=self._config)
        rid = self._take_id()
        try:
            frame = proc.exchange(encode_request(call, rid), deadline)
            init = decode_reply(frame, call, rid, plugin=self._name)
            if init.source_name != self._source_name:
                raise InitError(
                    f"Plugin {self._name!r} answered init for source {init.source_name!r} instead of "
                    f"{self._source_name!r}; it must echo the source_name it was given.",
                    plugin=self._name,
                )
        except BaseException as exc:
            self._slot.proc = None
            if isinstance(exc, (StreamEOF, PipeClosed)):
                info = proc.reap_dead()
            else:
                info = proc.kill()
            self._remember_tail(proc)
            err = self._init_error(exc, info.signal or f"status {info.returncode}")
            self._life.on_crash(str(err), info)
            if isinstance(exc, Exception):
                raise err from exc
            raise
        self._init = init
        self._life.on_ready(init)
        return proc

    def _init_error(self, exc: BaseException, how: str) -> PluginClientError:
        name, t = self._name, self._policy.start_timeout
        tail = "; see health().stderr_tail or the log 'plugin_client.plugin.%s'" % name
        if isinstance(exc, InitError):
            return exc
        if isinstance(exc, DeadlineExceeded):
            return InitError(f"Plugin {name!r} did not finish starting within start_timeout={t:g} s and was killed{tail}.", plugin=name)
        if isinstance(exc, (StreamEOF, PipeClosed)):
            return InitError(f"Plugin {name!r} exited during init ({how}){tail}.", plugin=name)
        if isinstance(exc, FrameTooLargeError):
            return InitError(f"Plugin {name!r} sent an init reply longer than max_frame_bytes={exc.limit}; it was killed.", plugin=name)
        if isinstance(exc, PluginError):
            return InitError(f"Plugin {name!r} refused init ({exc.kind}: {exc.detail or 'no detail'}); check its config and protocol version.", plugin=name)
        if isinstance(exc, PluginClientError):
            return InitError(f"Plugin {name!r} sent a bad init reply: {exc.message}", plugin=name)
        return InitError(f"Plugin {name!r} failed during init ({type(exc).__name__}); it was killed{tail}.", plugin=name)

    def _exchange(self, proc: PluginProcess, call: Call) -> Result:
        rid = self._take_id()
        line = encode_request(call, rid)
        deadline = monotonic() + self._policy.request_timeout
        method = type(call).method.value
        try:
            frame = proc.exchange(line, deadline)
        except DeadlineExceeded as exc:
            msg = self._fail(
                proc,
                f"Plugin {self._name!r} did not answer {method!r} within "
                f"request_timeout={self._policy.request_timeout:g} s; it was killed and will be restarted.",
            )
            raise RequestTimeout(msg, plugin=self._name) from exc
        except (StreamEOF, PipeClosed) as exc:
            msg = self._fail(proc, f"Plugin {self._name!r} exited while answering {method!r}", dead=True)
            raise PluginCrashed(msg, plugin=self._name) from exc
        except FrameTooLargeError as exc:
            msg = self._fail(
                proc,
                f"Plugin {self._name!r} sent a reply line longer than max_frame_bytes={exc.limit}; "
                "it was killed. Raise max_frame_bytes in the LifetimePolicy if such replies are legitimate.",
            )
            raise FrameTooLarge(msg, plugin=self._name) from exc
        try:
            result = decode_reply(frame, call, rid, plugin=self._name)
        except PluginError:
            self._life.on_used()
            raise
        except ProtocolError as exc:
            # Same exception object, so its type and fields (expected/got ids) survive.
            exc.args = (self._fail(proc, exc.message + " The plugin was killed and will be restarted."),)
            raise
        self._life.on_used()
        return result

    def _fail(self, proc: PluginProcess, msg: str, *, dead: bool = False) -> str:
        """End ``proc`` after an error, count the crash, and return the message to raise."""
        self._slot.proc = None
        info = proc.reap_dead() if dead else proc.kill()
        self._remember_tail(proc)
        if dead:
            msg += (
                f" ({info.signal or f'status {info.returncode}'}); it will be restarted on the next request. "
                f"See health().stderr_tail or the log 'plugin_client.plugin.{self._name}'."
            )
        if self._life.on_crash(msg, info):
            msg += (
                f" The plugin is now disabled after {self._policy.restart_cap} crashes within "
                f"{self._policy.restart_window:g} s; call clear_disabled() once it is fixed."
            )
        return msg

    def _stop(self, proc: PluginProcess) -> Any:
        info = proc.stop(self._policy.exit_wait, self._policy.shutdown_grace)
        self._remember_tail(proc)
        return info

    def _remember_tail(self, proc: PluginProcess) -> None:
        self._last_tail = proc.tail.lines()

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's process without signalling it."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        proc, self._slot.proc = self._slot.proc, None
        if proc is not None:
            proc.forget()
        self._life.reset_after_fork()

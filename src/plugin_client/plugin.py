"""The plugin SDK: write a secret-source plugin as a small class, not a JSON-RPC loop.

A plugin is a class with one method per protocol method; :func:`serve` runs
the protocol on stdin/stdout and calls it::

    from plugin_client.plugin import NotFound, SecretSourcePlugin, serve

    class Vault(SecretSourcePlugin):
        version = "1.0.0"

        def get(self, reference):
            if reference not in SECRETS:
                raise NotFound(reference)
            return SECRETS[reference], 300          # value, lease in seconds

        def list(self):
            return sorted(SECRETS)

    serve(Vault)

Handler methods, all optional (:class:`SecretSourcePlugin` gives ``init`` and
``is_available`` defaults), and what they may return:

==============================  =================================================================
method                          returns
==============================  =================================================================
``init(source_name, config)``   ``None`` (use the class's ``capabilities``/``version``), a
                                ``(capabilities, version)`` pair, a :class:`Capability`, or an
                                :class:`~plugin_client.protocol.InitResult`
``is_available()``              ``None``/``True`` (available), ``False`` (unavailable), an
                                :class:`AvailabilityStatus` or its string, ``(status, detail)``,
                                or an ``IsAvailableResult``; raising :class:`Unavailable` or
                                :class:`NeedsCredential` answers that status with its detail
``get(reference)``              ``str``/``SecretStr``, ``(value, lease)`` with the lease in
                                seconds or a ``timedelta``, an object with ``value`` and
                                ``lease``/``lease_seconds``, a ``GetResult``; ``None`` means
                                not found
``list()``                      an iterable of references (``str``), ``(reference, display)``
                                pairs, dicts or ``ListEntry``; or a ``ListResult``
``validate(reference)``         a ``bool``
``put(reference, value)``       ``value`` is a ``SecretStr``; return whether a value was replaced
``delete(reference)``           whether it existed
``key_material(purpose)``       ``bytes`` or ``SecretBytes``
==============================  =================================================================

Capabilities: :class:`SecretSourcePlugin` claims exactly the methods the
subclass overrides (``get`` -> READ, ``list`` -> LIST, ``validate`` ->
VALIDATE, ``put`` -> WRITE, ``delete`` -> DELETE, ``key_material`` ->
KEY_SOURCE), unless the class sets ``capabilities``. A call of a method the
plugin did not claim, or does not implement, and a call of an unknown method
are answered ``unsupported-capability``.

Errors: raise :class:`NotFound`, :class:`BadReference`, :class:`Unavailable`,
:class:`NeedsCredential`, :class:`Unsupported` or :class:`Failure` to answer
with that error kind. Any other exception is answered as ``other`` with its
type and message as the detail; its traceback goes to stderr (through
``logging``) and the plugin keeps serving.

stdout belongs to the protocol: while serving, file descriptor 1 and
``sys.stdout`` point to stderr, so a stray ``print()``, a C library or a child
process cannot corrupt a frame, and fd 0 points to ``/dev/null``, so nothing
but the SDK reads requests. Replies go to a private duplicate of the original
stdout. :func:`serve` returns (and the plugin exits with status 0) when stdin
reaches EOF or on SIGTERM; a request being handled when SIGTERM arrives is
answered first.

Compatibility with the existing Rust host: requests without ``params`` are
accepted, replies use exactly the documented shapes (optional members that
are ``None`` are left out), and ``init`` refuses a protocol major version
other than 1.

This module imports only the protocol layer, so a plugin starts fast.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import sys
import threading
from datetime import timedelta
from types import FrameType
from typing import Any, BinaryIO, Callable, ClassVar, Dict, Iterable, List, Mapping, Optional, Tuple, Type, Union

from pydantic import SecretBytes, SecretStr

from .errors import MalformedRequest
from .protocol import (
    AvailabilityStatus,
    Call,
    Capability,
    DeleteCall,
    DeleteResult,
    ErrorKind,
    GetCall,
    GetResult,
    InitCall,
    InitResult,
    IsAvailableCall,
    IsAvailableResult,
    KeyMaterialCall,
    KeyMaterialResult,
    ListCall,
    ListEntry,
    ListResult,
    Method,
    PutCall,
    PutResult,
    Result,
    ValidateCall,
    ValidateResult,
    decode_request,
    encode_error,
    encode_result,
)

__all__ = (
    "SecretSourcePlugin",
    "serve",
    "ReplyError",
    "Unavailable",
    "NeedsCredential",
    "BadReference",
    "NotFound",
    "Unsupported",
    "Failure",
)

_log = logging.getLogger("plugin_client.sdk")

_MAX_DETAIL = 500
_READ_SIZE = 1 << 16


# --- what a handler raises to answer with an error -------------------------------


class ReplyError(Exception):
    """Raise a subclass from a handler method to answer the request with that error kind."""

    kind: ClassVar[ErrorKind] = ErrorKind.OTHER

    def fields(self) -> Dict[str, str]:
        raise NotImplementedError


class _DetailError(ReplyError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def fields(self) -> Dict[str, str]:
        return {"detail": str(self.detail)}


class Unavailable(_DetailError):
    """The backend is down (``unavailable``). ``detail`` says what is wrong."""

    kind = ErrorKind.UNAVAILABLE


class NeedsCredential(_DetailError):
    """The plugin is up but needs e.g. a sign-in (``needs-credential``); ``detail`` says
    what the user should do."""

    kind = ErrorKind.NEEDS_CREDENTIAL


class Failure(_DetailError):
    """Anything else (``other``), with a detail meant for the user."""

    kind = ErrorKind.OTHER


class BadReference(ReplyError):
    """The reference is malformed or unknown (``bad-reference``)."""

    kind = ErrorKind.BAD_REFERENCE

    def __init__(self, reference: str, reason: str = "malformed") -> None:
        super().__init__(f"bad reference {reference!r}: {reason}")
        self.reference = reference
        self.reason = reason

    def fields(self) -> Dict[str, str]:
        return {"reference": str(self.reference), "reason": str(self.reason)}


class NotFound(BadReference):
    """There is no secret at this reference (``bad-reference``, reason "not found"; a
    host's ``get`` turns it into "no value")."""

    def __init__(self, reference: str) -> None:
        super().__init__(reference, "not found")


class Unsupported(ReplyError):
    """This plugin does not do what was asked (``unsupported-capability``)."""

    kind = ErrorKind.UNSUPPORTED_CAPABILITY

    def __init__(self, capability: str) -> None:
        super().__init__(f"unsupported: {capability}")
        self.capability = capability

    def fields(self) -> Dict[str, str]:
        return {"capability": str(self.capability)}


# --- the base class ------------------------------------------------------------------

# handler attribute -> the capability it needs (none for is_available)
_METHOD_CAPS: Dict[str, Capability] = {
    "get": Capability.READ,
    "list": Capability.LIST,
    "validate": Capability.VALIDATE,
    "put": Capability.WRITE,
    "delete": Capability.DELETE,
    "key_material": Capability.KEY_SOURCE,
}


class SecretSourcePlugin:
    """A convenient base for handlers. Override the methods your plugin supports.

    ``capabilities``: ``None`` (default) claims the overridden methods' bits;
    set it to claim others as well (e.g. ``AUDIT_LOGGED``), then also
    implement each method it gates. ``version`` is sent as ``plugin_version``.
    After ``init``, ``source_name`` and ``config`` hold what the host sent.
    """

    version: ClassVar[str] = "0.0.0"
    capabilities: ClassVar[Optional[Capability]] = None

    source_name: str = ""
    config: Dict[str, Any] = {}

    def init(self, source_name: str, config: Dict[str, Any]) -> Any:
        self.source_name = source_name
        self.config = config
        return None

    def is_available(self) -> Any:
        return True


def _implements(handler: Any, attr: str) -> bool:
    if isinstance(handler, SecretSourcePlugin):
        impl = getattr(type(handler), attr, None)
        return impl is not None and impl is not getattr(SecretSourcePlugin, attr, None)
    return callable(getattr(handler, attr, None))


def _default_capabilities(handler: Any) -> Capability:
    declared = getattr(handler, "capabilities", None)
    if declared is not None:
        return Capability(int(declared))
    caps = Capability(0)
    for attr, cap in _METHOD_CAPS.items():
        if _implements(handler, attr):
            caps |= cap
    return caps


# --- turning handler return values into results ---------------------------------------


def _lease_seconds(lease: Any) -> Optional[int]:
    if lease is None:
        return None
    if isinstance(lease, timedelta):
        return max(0, int(lease.total_seconds()))
    if isinstance(lease, bool) or not isinstance(lease, (int, float)):
        raise TypeError(f"a lease must be seconds (int) or a timedelta, not {type(lease).__name__}")
    return max(0, int(lease))


def _as_secret_str(value: Any) -> SecretStr:
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        return SecretStr(value)
    raise TypeError(f"a secret value must be a str or SecretStr, not {type(value).__name__}")


def _init_result(ret: Any, source_name: str, handler: Any) -> InitResult:
    if isinstance(ret, InitResult):
        return ret
    version = str(getattr(handler, "version", "0.0.0"))
    if ret is None:
        caps = _default_capabilities(handler)
    elif isinstance(ret, tuple) and len(ret) == 2:
        caps, version = Capability(int(ret[0])), str(ret[1])
    elif isinstance(ret, int) and not isinstance(ret, bool):
        caps = Capability(ret)
    else:
        raise TypeError(f"init() returned {type(ret).__name__}; return None, (capabilities, version) or an InitResult")
    return InitResult(source_name=source_name, capabilities_bits=int(caps), plugin_version=version)


def _available_result(ret: Any) -> IsAvailableResult:
    if isinstance(ret, IsAvailableResult):
        return ret
    detail = None
    if isinstance(ret, tuple) and len(ret) == 2:
        ret, detail = ret
        detail = None if detail is None else str(detail)
    if ret is None or ret is True:
        status = AvailabilityStatus.AVAILABLE
    elif ret is False:
        status = AvailabilityStatus.UNAVAILABLE
    elif isinstance(ret, (AvailabilityStatus, str)):
        status = AvailabilityStatus(ret)
    else:
        raise TypeError(f"is_available() returned {type(ret).__name__}; return a bool, a status or (status, detail)")
    return IsAvailableResult(status=status, detail=detail)


def _get_result(ret: Any, reference: str) -> GetResult:
    if ret is None:
        raise NotFound(reference)
    if isinstance(ret, GetResult):
        return ret
    if isinstance(ret, (str, SecretStr)):
        return GetResult(value=_as_secret_str(ret))
    if isinstance(ret, tuple) and len(ret) == 2:
        return GetResult(value=_as_secret_str(ret[0]), lease_seconds=_lease_seconds(ret[1]))
    if hasattr(ret, "value") and (hasattr(ret, "lease") or hasattr(ret, "lease_seconds")):
        lease = ret.lease if hasattr(ret, "lease") else ret.lease_seconds
        return GetResult(value=_as_secret_str(ret.value), lease_seconds=_lease_seconds(lease))
    raise TypeError(f"get() returned {type(ret).__name__}; return a str, (value, lease) or None for not found")


def _list_entry(item: Any) -> ListEntry:
    if isinstance(item, ListEntry):
        return item
    if isinstance(item, str):
        return ListEntry(reference=item)
    if isinstance(item, tuple) and len(item) == 2:
        return ListEntry(reference=str(item[0]), display=None if item[1] is None else str(item[1]))
    if isinstance(item, Mapping):
        display = item.get("display")
        return ListEntry(reference=str(item["reference"]), display=None if display is None else str(display))
    if hasattr(item, "reference"):  # e.g. plugin_client.source.SecretRef
        display = getattr(item, "display", None)
        return ListEntry(reference=str(item.reference), display=None if display is None else str(display))
    raise TypeError(f"list() yielded {type(item).__name__}; yield references (str) or (reference, display) pairs")


def _list_result(ret: Any) -> ListResult:
    if isinstance(ret, ListResult):
        return ret
    if ret is None:
        return ListResult(entries=[])
    if isinstance(ret, (str, bytes)) or not isinstance(ret, Iterable):
        raise TypeError(f"list() returned {type(ret).__name__}; return an iterable of references")
    return ListResult(entries=[_list_entry(item) for item in ret])


def _bool_result(ret: Any, cls: Type[Result], field: str, method: str) -> Result:
    if isinstance(ret, cls):
        return ret
    if ret is None:
        ret = False
    if not isinstance(ret, bool):
        raise TypeError(f"{method}() returned {type(ret).__name__}; return a bool")
    return cls(**{field: ret})


def _key_result(ret: Any) -> KeyMaterialResult:
    if isinstance(ret, KeyMaterialResult):
        return ret
    if isinstance(ret, SecretBytes):
        return KeyMaterialResult(material=ret)
    if isinstance(ret, (bytes, bytearray, memoryview)):
        return KeyMaterialResult(material=SecretBytes(bytes(ret)))
    raise TypeError(f"key_material() returned {type(ret).__name__}; return bytes or SecretBytes")


# call type -> (handler attribute, how to call it, how to build the result)
_Invoke = Callable[[Callable[..., Any], Any], Any]
_Build = Callable[[Any, Any], Result]
_DISPATCH: Dict[type, Tuple[str, _Invoke, _Build]] = {
    GetCall: ("get", lambda fn, c: fn(c.reference), lambda r, c: _get_result(r, c.reference)),
    ListCall: ("list", lambda fn, c: fn(), lambda r, c: _list_result(r)),
    ValidateCall: ("validate", lambda fn, c: fn(c.reference), lambda r, c: _bool_result(r, ValidateResult, "ok", "validate")),
    PutCall: ("put", lambda fn, c: fn(c.reference, c.value), lambda r, c: _bool_result(r, PutResult, "replaced", "put")),
    DeleteCall: ("delete", lambda fn, c: fn(c.reference), lambda r, c: _bool_result(r, DeleteResult, "existed", "delete")),
    KeyMaterialCall: ("key_material", lambda fn, c: fn(c.purpose), lambda r, c: _key_result(r)),
}

_KNOWN_METHODS = frozenset(m.value for m in Method)


def _clip(text: str, limit: int = _MAX_DETAIL) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- the server -------------------------------------------------------------------------


class _Terminate(BaseException):
    """Raised by the SIGTERM handler while the server waits for a request."""


_Stream = Union[int, BinaryIO, None]


class _Server:
    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.init: Optional[InitResult] = None
        self.caps = Capability(0)
        self.stop = False
        self.waiting = False

    # -- one request ----------------------------------------------------------------

    def handle_line(self, line: bytes) -> Optional[bytes]:
        """The reply to one request line, or ``None`` when there is no one to answer."""
        if not line.strip():
            _log.debug("Ignoring a blank request line")
            return None
        try:
            rid, call = decode_request(line)
        except MalformedRequest as exc:
            if exc.request_id is None:
                _log.warning("Ignoring a request that cannot be answered: %s", exc.message)
                return None
            if exc.method is not None and exc.method not in _KNOWN_METHODS:
                _log.info("Answering the unknown method %r with unsupported-capability", _clip(exc.method, 80))
                return self._error(exc.request_id, ErrorKind.UNSUPPORTED_CAPABILITY, capability=_clip(exc.method, 200))
            return self._error(exc.request_id, ErrorKind.OTHER, detail=exc.message)
        return self.dispatch(rid, call)

    def dispatch(self, rid: int, call: Call) -> bytes:
        method = type(call).method.value
        try:
            if isinstance(call, InitCall):
                return encode_result(rid, self._do_init(call))
            if self.init is None:
                raise Failure(f"{method!r} arrived before init; the host must send secret_source.init first")
            if isinstance(call, IsAvailableCall):
                return encode_result(rid, self._do_is_available())
            attr, invoke, build = _DISPATCH[type(call)]
            need = type(call).capability
            if not (self.caps & need) or not _implements(self.handler, attr):
                raise Unsupported(need.name or method)
            return encode_result(rid, build(invoke(getattr(self.handler, attr), call), call))
        except ReplyError as exc:
            return self._error(rid, exc.kind, **exc.fields())
        except Exception as exc:
            _log.exception("The handler failed on %r (request %d); answering 'other'", method, rid)
            return self._error(rid, ErrorKind.OTHER, detail=_clip(f"{type(exc).__name__}: {exc}"))

    def _do_init(self, call: InitCall) -> InitResult:
        major = call.protocol_version.split(".", 1)[0]
        if major != "1":
            raise Failure(
                f"protocol version {call.protocol_version!r} is not supported; this plugin speaks 1.x"
            )
        fn = getattr(self.handler, "init", None)
        ret = fn(call.source_name, dict(call.config)) if callable(fn) else None
        result = _init_result(ret, call.source_name, self.handler)
        self.init, self.caps = result, result.capabilities
        return result

    def _do_is_available(self) -> IsAvailableResult:
        fn = getattr(self.handler, "is_available", None)
        if not callable(fn):
            return IsAvailableResult(status=AvailabilityStatus.AVAILABLE)
        try:
            return _available_result(fn())
        except Unavailable as exc:
            return IsAvailableResult(status=AvailabilityStatus.UNAVAILABLE, detail=exc.detail)
        except NeedsCredential as exc:
            return IsAvailableResult(status=AvailabilityStatus.NEEDS_CREDENTIAL, detail=exc.detail)

    def _error(self, rid: int, kind: ErrorKind, **fields: str) -> bytes:
        try:
            return encode_error(rid, kind, **fields)
        except (TypeError, ValueError) as exc:
            _log.error("Cannot send a %s error for request %d (%s); sending 'other'", kind.value, rid, exc)
            return encode_error(rid, ErrorKind.OTHER, detail=f"the plugin raised an unsendable {kind.value} error")

    # -- the loop ----------------------------------------------------------------------

    def on_sigterm(self, signum: int, frame: Optional[FrameType]) -> None:
        self.stop = True
        if self.waiting:
            raise _Terminate()

    def run(self, read: Callable[[], bytes], write: Callable[[bytes], None]) -> None:
        buf = bytearray()
        scanned = 0  # no newline in buf[:scanned]: a long line is scanned once, not per chunk
        while not self.stop:
            try:
                self.waiting = True
                if self.stop:  # SIGTERM between the last reply and now
                    break
                chunk = read()
            except _Terminate:
                break
            finally:
                self.waiting = False
            if not chunk:
                if bytes(buf).strip():  # a last request without its newline
                    self._answer(bytes(buf), write)
                break
            buf += chunk
            while True:
                nl = buf.find(b"\n", scanned)
                if nl < 0:
                    scanned = len(buf)
                    break
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                scanned = 0
                if not self._answer(line, write) or self.stop:
                    return

    def _answer(self, line: bytes, write: Callable[[bytes], None]) -> bool:
        reply = self.handle_line(line)
        if reply is None:
            return True
        try:
            write(reply)
        except OSError as exc:  # the host closed our stdout: nobody to answer any more
            _log.warning("Cannot write a reply (%s); stopping", exc.strerror or exc)
            return False
        return True


def _fd_reader(fd: int) -> Callable[[], bytes]:
    return lambda: os.read(fd, _READ_SIZE)


def _fd_writer(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    return write


def _stream_reader(stream: Any) -> Callable[[], bytes]:
    read1 = getattr(stream, "read1", None)
    if callable(read1):
        return lambda: bytes(read1(_READ_SIZE))
    return lambda: bytes(stream.readline())


def _stream_writer(stream: Any) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()

    return write


def _restore_signal(previous: Any) -> None:
    signal.signal(signal.SIGTERM, previous)


def _take_fd(fd: int, null_mode: int, restore: List[Callable[[], None]], replacement: Optional[int] = None) -> int:
    """Move ``fd`` to a private, non-inheritable descriptor and point ``fd`` at
    ``replacement`` (or ``/dev/null``); ``restore`` gets the undo step."""
    private = os.dup(fd)

    def undo() -> None:
        os.dup2(private, fd)
        os.close(private)

    restore.append(undo)
    if replacement is not None:
        try:
            os.dup2(replacement, fd)
            return private
        except OSError:  # stderr is closed: fall back to /dev/null
            pass
    null = os.open(os.devnull, null_mode)
    os.dup2(null, fd)
    os.close(null)
    return private


def serve(handler: Any, *, stdin: _Stream = None, stdout: _Stream = None) -> None:
    """Serve ``handler`` (an instance, or a class to instantiate) until EOF or SIGTERM.

    With the defaults, requests are read from fd 0 and replies written to fd 1,
    unbuffered, and while serving fd 0 is ``/dev/null`` and fd 1 and
    ``sys.stdout`` are stderr (see the module docstring); both are restored on
    return. ``stdin``/``stdout`` may instead be file descriptors or binary
    streams (for tests and embedding); then no descriptor is touched. Logging
    is sent to stderr if the process has not configured it. SIGTERM is handled
    only when called from the main thread.
    """
    if isinstance(handler, type):
        handler = handler()
    server = _Server(handler)
    restore: List[Callable[[], None]] = []
    try:
        if stdin is None:
            read = _fd_reader(_take_fd(0, os.O_RDONLY, restore))
        elif isinstance(stdin, int):
            read = _fd_reader(stdin)
        else:
            read = _stream_reader(stdin)
        if stdout is None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError, AttributeError):
                pass
            write = _fd_writer(_take_fd(1, os.O_WRONLY, restore, replacement=2))
            saved_stdout = sys.stdout
            sys.stdout = sys.stderr
            restore.append(lambda: setattr(sys, "stdout", saved_stdout))
        elif isinstance(stdout, int):
            write = _fd_writer(stdout)
        else:
            write = _stream_writer(stdout)
        if not logging.getLogger().handlers:
            logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, server.on_sigterm)
            restore.append(lambda: _restore_signal(previous))
        server.run(read, write)
    finally:
        for undo in reversed(restore):
            try:
                undo()
            except Exception:  # pragma: no cover - best effort while unwinding
                _log.debug("Could not restore the process state after serving", exc_info=True)

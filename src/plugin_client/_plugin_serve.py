"""The SDK's server: what :func:`plugin_client.plugin.serve` runs. The capabilities a
handler claims, its return values turned into the wire's result dicts, the dispatch
of one request to its handler method, the read/answer loop, and the process set-up
around it (fds 0 and 1, ``sys.stdout``, SIGTERM, logging).

Imported by ``serve()`` when a plugin starts serving, so importing the SDK stays
light; it imports the public classes a handler raises from :mod:`plugin_client.plugin`.
"""

from __future__ import annotations

import binascii
import os
import signal
import sys
from collections.abc import Iterable, Mapping

from ._enums import AvailabilityStatus, Capability, ErrorKind, Method
from ._plugin_wire import clip, decode_request, encode_error, result_line
from .errors import MalformedRequest, NeedsCredential, ReplyError
from .plugin import Failure, NotFound, SecretSourcePlugin, SecretText, Unavailable, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from types import FrameType
    from typing import Any, BinaryIO, Callable, Dict, List, Optional, Tuple, Union

    Stream = Union[int, BinaryIO, None]
    _Invoke = Callable[[Callable[..., Any], Dict[str, Any]], Any]
    _Build = Callable[[Any, Dict[str, Any]], Dict[str, Any]]

_MAX_DETAIL = 500
_READ_SIZE = 1 << 16
_MAX_U32 = 2**32 - 1
_MAX_U64 = 2**64 - 1


# --- logging, loaded on first use ----------------------------------------------------

# Set by serve(): send the SDK's records to stderr unless the process set up logging.
_configure_logging = False


def _log() -> logging.Logger:
    import logging  # here: a plugin that never logs never loads it

    global _configure_logging
    if _configure_logging:
        _configure_logging = False
        _basic_config(logging)
    return logging.getLogger("plugin_client.sdk")


# The shape the host reads a level from (a leading level word: README.md, "Diagnostics").
_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def _basic_config(logging: Any) -> None:
    """Records to stderr, one line ``LEVEL name: message`` each, the record's further
    lines (a multi-line message, a traceback) indented by four spaces: the host logs
    an indented line at the level of the line it continues, so a ``log.exception``'s
    traceback arrives at ERROR whatever its lines say."""
    if logging.getLogger().handlers:
        return

    class Indented(logging.Formatter):  # type: ignore[misc]  # (logging is Any here)
        def format(self, record: logging.LogRecord) -> str:
            text: str = super().format(record)
            return text.replace("\n", "\n    ") if "\n" in text else text

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Indented(_LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


# --- the capabilities a handler claims ----------------------------------------------

# handler attribute -> the capability it needs (none for is_available)
_METHOD_CAPS: Dict[str, Capability] = {
    "get": Capability.READ,
    "list": Capability.LIST,
    "validate": Capability.VALIDATE,
    "put": Capability.WRITE,
    "delete": Capability.DELETE,
    "key_material": Capability.KEY_SOURCE,
}


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


# --- turning handler return values into the wire's dicts ----------------------------
# The host-side pydantic models a handler may return (InitResult, GetResult,
# SecretStr, ...) are recognised by their attributes, so this module never imports them.


def _lease_seconds(lease: Any) -> Optional[int]:
    if lease is None:
        return None
    if hasattr(lease, "total_seconds"):  # a timedelta
        lease = lease.total_seconds()
    if isinstance(lease, bool) or not isinstance(lease, (int, float)):
        raise TypeError(f"a lease must be seconds (int) or a timedelta, not {type(lease).__name__}")
    return min(max(0, int(lease)), _MAX_U64)


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    reveal = getattr(value, "get_secret_value", None)
    if callable(reveal):
        value = reveal()
        if isinstance(value, str):
            return value
    raise TypeError(f"{what} must be a str or SecretStr, not {type(value).__name__}")


def _optional_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _init_result(ret: Any, source_name: str, handler: Any) -> Dict[str, Any]:
    version = str(getattr(handler, "version", "0.0.0"))
    if ret is None:
        caps = int(_default_capabilities(handler))
    elif hasattr(ret, "capabilities_bits") and hasattr(ret, "plugin_version"):  # an InitResult
        caps, version, source_name = ret.capabilities_bits, ret.plugin_version, ret.source_name
    elif isinstance(ret, tuple) and len(ret) == 2:
        caps, version = int(ret[0]), str(ret[1])
    elif isinstance(ret, int) and not isinstance(ret, bool):
        caps = int(ret)
    else:
        raise TypeError(f"init() returned {type(ret).__name__}; return None, (capabilities, version) or an InitResult")
    if not 0 <= caps <= _MAX_U32:
        raise ValueError(f"init() claimed the capability bits {caps}; they must fit in 0..2**32-1")
    return {"source_name": source_name, "capabilities_bits": caps, "plugin_version": version}


def _available_result(ret: Any) -> Dict[str, Any]:
    detail = None
    if hasattr(ret, "status") and hasattr(ret, "detail"):  # an IsAvailableResult
        ret, detail = ret.status, ret.detail
    elif isinstance(ret, tuple) and len(ret) == 2:
        ret, detail = ret
    if ret is None or ret is True:
        status = AvailabilityStatus.AVAILABLE
    elif ret is False:
        status = AvailabilityStatus.UNAVAILABLE
    elif isinstance(ret, str):
        status = AvailabilityStatus(ret)
    else:
        raise TypeError(f"is_available() returned {type(ret).__name__}; return a bool, a status or (status, detail)")
    return _status(status, _optional_str(detail))


def _status(status: AvailabilityStatus, detail: Optional[str] = None) -> Dict[str, Any]:
    out: Dict[str, Any] = {"status": status.value}
    if detail is not None:
        out["detail"] = detail
    return out


def _value(value: Any, lease: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {"value": _text(value, "a secret value")}
    seconds = _lease_seconds(lease)
    if seconds is not None:
        out["lease_seconds"] = seconds
    return out


def _get_result(ret: Any, reference: str) -> Dict[str, Any]:
    if ret is None:
        raise NotFound(reference)
    if isinstance(ret, str) or hasattr(ret, "get_secret_value"):
        return _value(ret, None)
    if isinstance(ret, tuple) and len(ret) == 2:
        return _value(ret[0], ret[1])
    if hasattr(ret, "value") and (hasattr(ret, "lease") or hasattr(ret, "lease_seconds")):  # e.g. a GetResult
        return _value(ret.value, ret.lease if hasattr(ret, "lease") else ret.lease_seconds)
    raise TypeError(f"get() returned {type(ret).__name__}; return a str, (value, lease) or None for not found")


def _list_entry(item: Any) -> Dict[str, Any]:
    if isinstance(item, str):
        reference, display = item, None
    elif isinstance(item, tuple) and len(item) == 2:
        reference, display = item
    elif isinstance(item, Mapping):
        reference, display = item["reference"], item.get("display")
    elif hasattr(item, "reference"):  # a ListEntry, or e.g. plugin_client.source.SecretRef
        reference, display = item.reference, getattr(item, "display", None)
    else:
        raise TypeError(f"list() yielded {type(item).__name__}; yield references (str) or (reference, display) pairs")
    out: Dict[str, Any] = {"reference": str(reference)}
    if display is not None:
        out["display"] = str(display)
    return out


def _list_result(ret: Any) -> Dict[str, Any]:
    if ret is None:
        return {"entries": []}
    if not isinstance(ret, (list, tuple)) and hasattr(ret, "entries"):  # a ListResult
        ret = ret.entries
    if isinstance(ret, (str, bytes)) or not isinstance(ret, Iterable):
        raise TypeError(f"list() returned {type(ret).__name__}; return an iterable of references")
    return {"entries": [_list_entry(item) for item in ret]}


def _bool_result(ret: Any, field: str, method: str) -> Dict[str, Any]:
    if ret is not None and not isinstance(ret, bool) and hasattr(ret, field):  # e.g. a PutResult
        ret = getattr(ret, field)
    if ret is None:
        ret = False
    if not isinstance(ret, bool):
        raise TypeError(f"{method}() returned {type(ret).__name__}; return a bool")
    return {field: ret}


def _key_result(ret: Any) -> Dict[str, Any]:
    if hasattr(ret, "material"):  # a KeyMaterialResult
        ret = ret.material
    reveal = getattr(ret, "get_secret_value", None)
    if callable(reveal):  # a SecretBytes
        ret = reveal()
    if not isinstance(ret, (bytes, bytearray, memoryview)):
        raise TypeError(f"key_material() returned {type(ret).__name__}; return bytes or SecretBytes")
    return {"material_b64": binascii.b2a_base64(ret, newline=False).decode("ascii")}


# method -> (handler attribute, the capability it needs, how to call it, how to build the result)
_DISPATCH: Dict[str, Tuple[str, Capability, _Invoke, _Build]] = {
    Method.GET.value: ("get", Capability.READ, lambda fn, p: fn(p["reference"]), lambda r, p: _get_result(r, p["reference"])),
    Method.LIST.value: ("list", Capability.LIST, lambda fn, p: fn(), lambda r, p: _list_result(r)),
    Method.VALIDATE.value: (
        "validate", Capability.VALIDATE, lambda fn, p: fn(p["reference"]), lambda r, p: _bool_result(r, "ok", "validate")
    ),
    Method.PUT.value: (
        "put",
        Capability.WRITE,
        lambda fn, p: fn(p["reference"], SecretText(p["value"])),
        lambda r, p: _bool_result(r, "replaced", "put"),
    ),
    Method.DELETE.value: (
        "delete", Capability.DELETE, lambda fn, p: fn(p["reference"]), lambda r, p: _bool_result(r, "existed", "delete")
    ),
    Method.KEY_MATERIAL.value: (
        "key_material", Capability.KEY_SOURCE, lambda fn, p: fn(p["purpose"]), lambda r, p: _key_result(r)
    ),
}

_KNOWN_METHODS = frozenset(m.value for m in Method)


# --- the server -------------------------------------------------------------------------


class _Terminate(BaseException):
    """Raised by the SIGTERM handler while the server waits for a request."""


class _Server:
    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.initialised = False
        self.caps = Capability(0)
        self.stop = False
        self.waiting = False

    # -- one request ----------------------------------------------------------------

    def handle_line(self, line: bytes) -> Optional[bytes]:
        """The reply to one request line, or ``None`` when there is no one to answer."""
        if not line.strip():
            _log().debug("Ignoring a blank request line")
            return None
        try:
            rid, method, params = decode_request(line)
        except MalformedRequest as exc:
            if exc.request_id is None:
                _log().warning("Ignoring a request that cannot be answered: %s", exc.message)
                return None
            if exc.method is not None and exc.method not in _KNOWN_METHODS:
                _log().info("Answering the unknown method %r with unsupported-capability", clip(exc.method, 80))
                return self._error(exc.request_id, ErrorKind.UNSUPPORTED_CAPABILITY, capability=clip(exc.method, 200))
            return self._error(exc.request_id, ErrorKind.OTHER, detail=exc.message)
        return self.dispatch(rid, method, params)

    def dispatch(self, rid: int, method: str, params: Dict[str, Any]) -> bytes:
        try:
            if method == Method.INIT.value:
                return result_line(rid, self._do_init(params), "init()'s result")
            if not self.initialised:
                raise Failure(f"{method!r} arrived before init; the host must send secret_source.init first")
            if method == Method.IS_AVAILABLE.value:
                return result_line(rid, self._do_is_available(), "is_available()'s result")
            attr, need, invoke, build = _DISPATCH[method]
            if not (self.caps & need) or not _implements(self.handler, attr):
                raise Unsupported(need.name or method)
            return result_line(rid, build(invoke(getattr(self.handler, attr), params), params), f"{attr}()'s result")
        except ReplyError as exc:
            return self._error(rid, exc.kind, **exc.fields())
        except Exception as exc:
            _log().exception("The handler failed on %r (request %d); answering 'other'", method, rid)
            return self._error(rid, ErrorKind.OTHER, detail=clip(f"{type(exc).__name__}: {exc}", _MAX_DETAIL))

    def _do_init(self, params: Dict[str, Any]) -> Dict[str, Any]:
        version = params["protocol_version"]
        if version.split(".", 1)[0] != "1":
            raise Failure(f"protocol version {version!r} is not supported; this plugin speaks 1.x")
        fn = getattr(self.handler, "init", None)
        source_name = params["source_name"]
        ret = fn(source_name, dict(params["config"])) if callable(fn) else None
        result = _init_result(ret, source_name, self.handler)
        self.initialised, self.caps = True, Capability(result["capabilities_bits"])
        return result

    def _do_is_available(self) -> Dict[str, Any]:
        fn = getattr(self.handler, "is_available", None)
        if not callable(fn):
            return _status(AvailabilityStatus.AVAILABLE)
        try:
            return _available_result(fn())
        except Unavailable as exc:
            return _status(AvailabilityStatus.UNAVAILABLE, exc.detail)
        except NeedsCredential as exc:
            return _status(AvailabilityStatus.NEEDS_CREDENTIAL, exc.detail)

    def _error(self, rid: int, kind: ErrorKind, **fields: str) -> bytes:
        try:
            return encode_error(rid, kind, **fields)
        except (TypeError, ValueError) as exc:
            _log().error("Cannot send a %s error for request %d (%s); sending 'other'", kind.value, rid, exc)
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
            _log().warning("Cannot write a reply (%s); stopping", exc.strerror or exc)
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


def _send_logs_to_stderr() -> None:
    """Logging goes to stderr unless the process set it up: at once if the plugin
    has loaded logging (its own records need a handler from the start), else
    when the SDK writes its first record."""
    global _configure_logging
    logging = sys.modules.get("logging")
    if logging is not None:
        _basic_config(logging)
    else:
        _configure_logging = True


def run(handler: Any, stdin: Stream, stdout: Stream) -> None:
    """:func:`plugin_client.plugin.serve`'s work (its docstring says what it does)."""
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
        _send_logs_to_stderr()
        try:
            previous = signal.signal(signal.SIGTERM, server.on_sigterm)
        except ValueError:  # not the main thread: SIGTERM stays the host's business
            pass
        else:
            restore.append(lambda: _restore_signal(previous))
        server.run(read, write)
    finally:
        for undo in reversed(restore):
            try:
                undo()
            except Exception:  # pragma: no cover - best effort while unwinding
                _log().debug("Could not restore the process state after serving", exc_info=True)

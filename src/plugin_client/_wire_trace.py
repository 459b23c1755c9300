"""The wire trace: every request and reply line, redacted, on the ``plugin_client.wire`` logger at DEBUG.

A record reads ``-> jsonfile #12 {...}`` (a request) or ``<- jsonfile #12 {...}``
(its reply, or ``no reply: ... (DeadlineExceeded)`` when the exchange failed), where
``#12`` is the id of the request the exchange carries; its ``extra`` fields are
``plugin``, ``direction`` (``"request"`` or ``"reply"``), ``id`` and ``method``.

What is shown is a redacted copy of the parsed line, never the line itself:

- a request (the host's own line) is shown with every ``value`` and
  ``material_b64`` redacted, at any depth, and every value of a ``config`` (its
  keys are kept);
- a reply shows only what the protocol defines there and holds no secret: the
  envelope, an error's documented members (``kind``, ``code``, ``message``,
  ``detail``, ``reason``, ``reference``, ``capability``) and each result's
  non-secret members (``lease_seconds``; ``value`` and ``material_b64`` show
  as ``"<redacted>"``), each only with the type the protocol gives it.
  Anything else (an unknown member, keys included, of the envelope, a result,
  an entry or an error, such as a JSON-RPC error's ``data``; a result that is
  not an object; a string where a number belongs; a status or error kind
  that is not one of the protocol's words; an id that is not a number) is
  redacted whole, and the number of members hidden goes under a
  ``"<redacted>"`` key: the host ignores or rejects it, and cannot tell what
  it holds;
- a line that does not parse as a JSON object is logged as its length only;
- what is shown is cut at ``MAX_SHOWN`` characters, after redaction.

The drivers read ``TRACE.maybe`` once per exchange and call in here only when
it is true; it turns false once the logger is found off, and true again when
``logging`` clears its level cache (:class:`TraceSwitch`), so with DEBUG off a
request pays one attribute read (``bench/test_bench_wire_trace.py``). Not
here: deciding anything about an exchange (the trace only watches; its
failures are the flow's), and logging anything but the wire (``plugin_client``
logs the lifecycle).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, Optional, Tuple

from ._core_errors import DeadlineExceeded, FrameTooLargeError, PipeClosed, ProcessExited, StreamEOF
from ._enums import AvailabilityStatus, ErrorKind

if TYPE_CHECKING:  # (_process calls in here)
    from ._process import PluginProcess

__all__ = (
    "WIRE", "DEBUG", "TRACE", "TraceSwitch", "tracing", "wire_on", "TracedCall", "trace_request", "trace_reply",
    "trace_failure", "traced_request", "traced_exchange", "redacted", "REDACTED", "MAX_SHOWN",
)

WIRE = logging.getLogger("plugin_client.wire")
DEBUG = logging.DEBUG
wire_on = WIRE.isEnabledFor  # (the logger object lives for ever)


class TraceSwitch:
    """``maybe``: whether the wire logger may be on. The drivers read it before
    every exchange and call :func:`tracing` only when it is true, so with the
    trace off an exchange pays one attribute read, not ``isEnabledFor``'s call.

    ``logging`` clears every logger's level cache (``Manager._clear_cache``) on
    each ``setLevel`` anywhere and each ``logging.disable``; the wire logger's
    cache is a dict whose ``clear()`` sets ``maybe`` again, so a level changed
    at run time is seen at the next exchange. Not seen: ``disabled`` set back
    to False by hand on the wire logger (set a level after it)."""

    __slots__ = ("maybe", "watched")

    def __init__(self) -> None:
        self.maybe = True
        self.watched = False


TRACE = TraceSwitch()


class _LevelCache(dict):  # type: ignore[type-arg]
    """The wire logger's level cache: clearing it (a level changed) makes the drivers look again."""

    __slots__ = ()

    def clear(self) -> None:
        super().clear()
        TRACE.maybe = True


def _watch_levels() -> None:
    cache = getattr(WIRE, "_cache", None)
    if type(cache) is dict:  # CPython's logging since 3.7; elsewhere maybe stays True: isEnabledFor every time
        setattr(WIRE, "_cache", _LevelCache(cache))
        TRACE.watched = True


_watch_levels()


def tracing() -> bool:
    """Whether to trace the exchange about to start (called while ``TRACE.maybe``).

    ``maybe`` is cleared only when the logger is found off, never while it is on
    (another thread's exchange would then go untraced); and the logger is looked at
    again after clearing it, so a level change between the two is not lost (its
    cache clear sets ``maybe`` again, or the second look sees it)."""
    if wire_on(DEBUG):
        return True
    if TRACE.watched:
        TRACE.maybe = False
        if wire_on(DEBUG):
            TRACE.maybe = True
            return True
    return False

REDACTED = "<redacted>"
# Past this many characters a record's JSON is cut (after redaction: nothing secret is left to cut).
MAX_SHOWN = 4096

_ERROR: FrozenSet[str] = frozenset(("kind", "code", "message", "detail", "reason", "reference", "capability"))
_ENTRY: FrozenSet[str] = frozenset(("reference", "display"))
# Each method's result members that hold no secret; any other member is redacted.
_RESULT: Dict[str, FrozenSet[str]] = {
    "secret_source.init": frozenset(("source_name", "capabilities_bits", "plugin_version")),
    "secret_source.is_available": frozenset(("status", "detail")),
    "secret_source.get": frozenset(("lease_seconds",)),
    "secret_source.list": frozenset(("entries",)),
    "secret_source.validate": frozenset(("ok",)),
    "secret_source.put": frozenset(("replaced",)),
    "secret_source.delete": frozenset(("existed",)),
    "secret_source.key_material": frozenset(),
}
# The type of each member above; those not here take one of a few words (_WORDS).
_TYPES: Dict[str, type] = {
    "capabilities_bits": int, "lease_seconds": int, "code": int,
    "ok": bool, "replaced": bool, "existed": bool,
    "source_name": str, "plugin_version": str, "detail": str, "reference": str, "display": str,
    "message": str, "reason": str, "capability": str,
}
_WORDS: Dict[str, FrozenSet[str]] = {
    "status": frozenset(status.value for status in AvailabilityStatus),
    "kind": frozenset(kind.value for kind in ErrorKind),
}
_SECRET_KEYS: FrozenSet[str] = frozenset(("value", "material_b64"))

# Most specific first (ProcessExited is a StreamEOF).
_FAILURES = (
    (DeadlineExceeded, "no reply before the deadline"),
    (ProcessExited, "the plugin exited"),
    (StreamEOF, "the plugin closed its stdout"),
    (PipeClosed, "the plugin closed its stdin"),
    (FrameTooLargeError, "the reply is longer than max_frame_bytes"),
)

# What a traced request remembers for its reply: its id and method.
TracedCall = Tuple[Optional[int], str]


# --- redaction --------------------------------------------------------------------


def _scrubbed(obj: Any) -> Any:
    """``obj`` with every ``value`` and ``material_b64`` redacted, and every ``config``'s
    values (keys kept), at any depth. Keys compare without case."""
    if isinstance(obj, dict):
        out: Dict[str, Any] = {}
        for key, val in obj.items():
            low = key.lower()
            if low in _SECRET_KEYS:
                out[key] = REDACTED
            elif low == "config":
                out[key] = {k: REDACTED for k in val} if isinstance(val, dict) else REDACTED
            else:
                out[key] = _scrubbed(val)
        return out
    if isinstance(obj, list):
        return [_scrubbed(item) for item in obj]
    return obj


def _member(key: str, val: Any) -> Any:
    """A member of a reply the protocol defines, if it has the type the protocol
    gives it (a string where a number belongs may be anything): ``list``'s entries,
    or a scalar; else ``"<redacted>"``."""
    if val is None:
        return None
    if key == "entries":
        return [_only(entry, _ENTRY) for entry in val] if isinstance(val, list) else REDACTED
    kind = _TYPES.get(key)
    if kind is None:  # one of a few words
        return val if val in _WORDS.get(key, ()) else REDACTED
    if isinstance(val, kind) and (kind is bool or not isinstance(val, bool)):
        return val
    return REDACTED


def _only(obj: Any, shown: FrozenSet[str]) -> Any:
    """A reply's object with its ``shown`` members kept, a ``value`` or ``material_b64``
    as ``"<redacted>"``, and the others (keys and values: either may be anything)
    counted under one ``"<redacted>"`` key."""
    if not isinstance(obj, dict):
        return REDACTED if obj is not None else None
    out = {
        key: _member(key, val) if key in shown else REDACTED
        for key, val in obj.items()
        if key in shown or key in _SECRET_KEYS
    }
    hidden = len(obj) - len(out)
    if hidden:
        out[REDACTED] = hidden
    return out


def redacted(message: Dict[str, Any], method: str, *, request: bool = False) -> Dict[str, Any]:
    """The redacted copy of one parsed line: a ``request`` (the host's own line,
    scrubbed of its secrets), or a reply to ``method`` (only what the protocol
    defines there and holds no secret is kept)."""
    if request:
        scrubbed: Dict[str, Any] = _scrubbed(message)
        return scrubbed
    out: Dict[str, Any] = {}
    for key, val in message.items():
        if key == "id":
            out[key] = val if val is None or (isinstance(val, int) and not isinstance(val, bool)) else REDACTED
        elif key == "jsonrpc":
            out[key] = val if val == "2.0" else REDACTED
        elif key == "result":
            out[key] = _only(val, _RESULT.get(method, frozenset()))
        elif key == "error":
            out[key] = _only(val, _ERROR)
    hidden = len(message) - len(out)
    if hidden:
        out[REDACTED] = hidden
    return out


def _parsed(line: bytes) -> Optional[Dict[str, Any]]:
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, an int too long, nested too deep
        return None
    return message if isinstance(message, dict) else None


def _shown(message: Dict[str, Any], method: str, request: bool = False) -> Optional[str]:
    try:
        text = json.dumps(redacted(message, method, request=request), separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError):  # nested too deep for the walk
        return None
    if len(text) > MAX_SHOWN:
        text = f"{text[:MAX_SHOWN]}... ({len(text)} characters)"
    return text


# --- records ----------------------------------------------------------------------


def _log(arrow: str, plugin: str, rid: Optional[int], method: str, text: str) -> None:
    direction = "request" if arrow == "->" else "reply"
    WIRE.debug(
        "%s %s #%s %s", arrow, plugin, "?" if rid is None else rid, text,
        extra={"plugin": plugin, "direction": direction, "id": rid, "method": method},
    )


def trace_request(plugin: str, line: bytes) -> TracedCall:
    """Log one request line; returns what :func:`trace_reply` needs."""
    message = _parsed(line)
    if message is None:  # pragma: no cover - the host writes only lines it encoded
        _log("->", plugin, None, "", f"(unparsable, {len(line)} bytes)")
        return None, ""
    rid = message.get("id")
    rid = rid if isinstance(rid, int) and not isinstance(rid, bool) else None
    method = message.get("method")
    method = method if isinstance(method, str) else ""
    text = _shown(message, method, request=True)
    _log("->", plugin, rid, method, text if text is not None else f"(unparsable, {len(line)} bytes)")
    return rid, method


def trace_reply(plugin: str, call: TracedCall, frame: bytes) -> None:
    """Log the reply ``frame`` to the request ``call``."""
    rid, method = call
    message = _parsed(frame)
    text = _shown(message, method) if message is not None else None
    if text is None:
        text = f"(not a JSON object, {len(frame)} bytes)"
    _log("<-", plugin, rid, method, text)


def trace_failure(plugin: str, call: TracedCall, exc: BaseException) -> None:
    """Log that the request ``call`` got no reply, because of ``exc``."""
    rid, method = call
    why = next((text for kind, text in _FAILURES if isinstance(exc, kind)), "the exchange was interrupted")
    _log("<-", plugin, rid, method, f"no reply: {why} ({type(exc).__name__})")


# --- the drivers' traced exchanges ------------------------------------------------------


def traced_exchange(proc: "PluginProcess", line: bytes, deadline: float) -> bytes:
    """:meth:`PluginProcess.exchange`, traced."""
    call = trace_request(proc.name, line)
    try:
        frame = proc.reader.exchange(proc.child.stdin_fd, line, deadline)
    except BaseException as exc:
        trace_failure(proc.name, call, exc)
        raise
    trace_reply(proc.name, call, frame)
    return frame


def traced_request(proc: "PluginProcess", line: bytes, deadline: float) -> Optional[bytes]:
    """The sync client's warm core call (``FrameReader.request``: the idle check,
    then the exchange), traced. None: the idle check found output or an exit, and
    nothing was written (nor traced)."""
    if proc.reader.idle_state(proc.child.pidfd) != 0:
        return None
    return traced_exchange(proc, line, deadline)

"""The plugin side of the wire on the standard library's ``json``: requests in, replies out.

:mod:`plugin_client.plugin` (the SDK) decodes each request line with
:func:`decode_request` into ``(id, method, params)`` and writes each reply with
:func:`result_line` or :func:`encode_error`. The bytes are those the host side
(:mod:`plugin_client.protocol`) has always written for a plugin: compact JSON,
raw UTF-8, ``jsonrpc``/``id``/``result`` (or ``error``) in that order, and
optional members that are ``None`` left out by the caller.

What it deliberately does not do: import pydantic, ``typing`` or anything else
that a plugin would pay for at every start (this module is loaded by every SDK
plugin process, and the host's pydantic models cost it ten times its start-up
time); build typed results (the SDK turns handler return values into plain
dicts); or any I/O. :mod:`plugin_client.protocol` re-exports
:func:`encode_error` and shares the small helpers here, so the two sides
cannot drift.

Strictness follows the Rust host's serde types and the pydantic models the
host side validates with: ids are JSON integers in 0..2**64-1, text fields are
strings, ``config`` is an object, NaN and infinity are not JSON. Messages of
:class:`~plugin_client.errors.MalformedRequest` describe a value by its type
and size only, never its content, so a secret sent to ``put`` is never echoed.
"""

from __future__ import annotations

import json

from ._enums import ErrorKind, Method
from .errors import MalformedRequest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Tuple, Union

    _Spec = Tuple[Tuple[str, type, Any], ...]

__all__ = (
    "PROTOCOL_VERSION",
    "MAX_REQUEST_ID",
    "decode_request",
    "result_line",
    "encode_error",
    "dumps",
)

PROTOCOL_VERSION = "1.1"
"""The protocol version this package speaks, and sends in ``init``."""

MAX_REQUEST_ID = 2**64 - 1
"""Request ids are unsigned 64-bit integers."""

# One encoder for every line: json.dumps() with non-default options builds a new
# JSONEncoder each time, which costs more than encoding a small object.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as strict as serde_json: no NaN/infinity, no lone surrogates
    (``ValueError``; ``UnicodeEncodeError`` is one)."""
    return _ENCODER.encode(obj).encode("utf-8")


def check_request_id(request_id: int) -> None:
    if isinstance(request_id, bool) or not isinstance(request_id, int):
        raise TypeError(f"A request id must be an int, not {type(request_id).__name__}")
    if not 0 <= request_id <= MAX_REQUEST_ID:
        raise ValueError(f"Request id {int_text(request_id)} is outside 0..2**64-1; ids are unsigned 64-bit integers")


def int_text(value: int) -> str:
    text = str(value) if -(10**30) < value < 10**30 else None
    return text if text is not None else f"<an integer of {len(str(abs(value)))} digits>"


def clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def kind_of(value: Any) -> str:
    """A description of a JSON value that holds none of its content."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return f"a string of {count(len(value), 'character')}"
    if isinstance(value, (list, tuple)):
        return f"an array of {count(len(value), 'item')}"
    if isinstance(value, dict):
        return "an object"
    return "a value"  # pragma: no cover - JSON has no other kinds


# --- requests in ------------------------------------------------------------------

_REQUIRED: Any = object()

# method -> its params: (name, JSON type, default or _REQUIRED); None: it takes none
_REFERENCE: _Spec = (("reference", str, _REQUIRED),)
_PARAMS: Dict[str, Optional[_Spec]] = {
    Method.INIT.value: (("source_name", str, _REQUIRED), ("config", dict, None), ("protocol_version", str, PROTOCOL_VERSION)),
    Method.IS_AVAILABLE.value: None,
    Method.GET.value: _REFERENCE,
    Method.LIST.value: None,
    Method.VALIDATE.value: _REFERENCE,
    Method.PUT.value: (("reference", str, _REQUIRED), ("value", str, _REQUIRED)),
    Method.DELETE.value: _REFERENCE,
    Method.KEY_MATERIAL.value: (("purpose", str, _REQUIRED),),
}
_TYPE_NAMES: Dict[type, str] = {str: "a string", dict: "an object"}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_request(line: bytes) -> Tuple[int, str, Dict[str, Any]]:
    """Decode one request frame: ``(request_id, method, params)``.

    ``params`` holds exactly the method's documented members (defaults filled
    in: ``config`` ``{}``, ``protocol_version`` ``"1.1"``); unknown members,
    of the envelope or the params, are ignored so that a newer host's additions
    do not break an older plugin, and ``is_available``/``list`` are accepted with
    no ``params``, ``null`` or ``{}``.

    Raises :class:`~plugin_client.errors.MalformedRequest`, with ``request_id``
    set whenever the id could be read (so the plugin can still answer with an
    error) and ``method`` when the method was a string.
    """
    if not line.strip():
        raise MalformedRequest("The request line is empty; the host must send one JSON object per line.")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest(f"The request line is not valid UTF-8 ({count(len(line), 'byte')}).") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise MalformedRequest(f"The request line is not JSON ({why}, {count(len(line), 'byte')}).") from None
    if not isinstance(obj, dict):
        raise MalformedRequest(f"The request is not a JSON-RPC 2.0 request: it must be an object, not {kind_of(obj)}.")
    rid = obj.get("id")
    if isinstance(rid, bool) or not isinstance(rid, int) or not 0 <= rid <= MAX_REQUEST_ID:
        got = "missing" if "id" not in obj else f"must be an integer in 0..2**64-1, not {kind_of(rid)}"
        raise MalformedRequest(f"The request is not a JSON-RPC 2.0 request: 'id' {got}.", method=_str_or_none(obj.get("method")))
    name = obj.get("method")
    if not isinstance(name, str):
        raise MalformedRequest(f"Request {rid} is not a JSON-RPC 2.0 request: 'method' must be a string, not {kind_of(name)}.", request_id=rid)
    if obj.get("jsonrpc") != "2.0":
        raise MalformedRequest(f"Request {rid} is not a JSON-RPC 2.0 request: 'jsonrpc' must be '2.0'.", request_id=rid, method=name)
    if name not in _PARAMS:
        raise MalformedRequest(
            f"Request {rid} asks for the unknown method {clip(name, 80)!r}; this plugin "
            f"speaks protocol {PROTOCOL_VERSION} (answer it with an unsupported-capability error).",
            request_id=rid,
            method=name,
        )
    spec = _PARAMS[name]
    params = obj.get("params")
    if params is not None and not isinstance(params, dict):
        raise MalformedRequest(f"Request {rid} ({name!r}) has invalid params: they must be an object, not {kind_of(params)}.", request_id=rid, method=name)
    if spec is None:
        return rid, name, {}
    if params is None:
        needs = sorted(field for field, _, _ in spec)
        raise MalformedRequest(f"Request {rid} ({name!r}) has no params; it needs {needs}.", request_id=rid, method=name)
    out: Dict[str, Any] = {}
    problems = []
    for field, kind, default in spec:
        value = params.get(field, default)
        if value is _REQUIRED:
            problems.append(f"{field!r} is missing")
        elif value is None and kind is dict:
            out[field] = {}
        elif not isinstance(value, kind):
            problems.append(f"{field!r} must be {_TYPE_NAMES[kind]}, not {kind_of(value)}")
        else:
            out[field] = value
    if problems:
        raise MalformedRequest(f"Request {rid} ({name!r}) has invalid params: {'; '.join(problems)}.", request_id=rid, method=name)
    return rid, name, out


def _str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


# --- replies out --------------------------------------------------------------------

RESULT_LINE = b'{"jsonrpc":"2.0","id":%d,"result":%b}\n'
ERROR_LINE = b'{"jsonrpc":"2.0","id":%d,"error":%b}\n'


def result_line(request_id: int, result: Dict[str, Any], what: str = "The result") -> bytes:
    """The reply line carrying ``result``, a dict of JSON values in wire order (leave
    out the optional members that are ``None``). ``ValueError`` if a text cannot be
    sent (a lone surrogate); its message names ``what``, never the text, which may
    be a secret."""
    check_request_id(request_id)
    try:
        body = dumps(result)
    except ValueError:
        raise ValueError(f"{what} cannot be sent: a text is not valid Unicode (it holds a lone surrogate)") from None
    return RESULT_LINE % (request_id, body)


_ERROR_FIELDS: Dict[str, Tuple[str, ...]] = {
    ErrorKind.UNAVAILABLE.value: ("detail",),
    ErrorKind.UNSUPPORTED_CAPABILITY.value: ("capability",),
    ErrorKind.BAD_REFERENCE.value: ("reference", "reason"),
    ErrorKind.NEEDS_CREDENTIAL.value: ("detail",),
    ErrorKind.OTHER.value: ("detail",),
}


def encode_error(request_id: int, kind: Union[ErrorKind, str], **fields: Optional[str]) -> bytes:
    """The reply line carrying an error object of ``kind`` (for the plugin SDK).

    Each kind takes exactly its documented fields, all strings, all required:
    ``unavailable``/``needs-credential``/``other`` take ``detail``,
    ``unsupported-capability`` takes ``capability``, ``bad-reference`` takes
    ``reference`` and ``reason``. They are required because a host built on
    the Rust types may not accept an error without them. Raises
    :class:`ValueError` for an unknown kind and :class:`TypeError` for a
    missing, ``None``, non-string or unknown field.
    """
    check_request_id(request_id)
    try:
        kind_value = ErrorKind(kind).value
    except ValueError:
        kind_value = None
    if kind_value is None:
        known = ", ".join(repr(k.value) for k in ErrorKind)
        raise ValueError(f"Unknown error kind {kind!r}; use one of {known}")
    names = _ERROR_FIELDS[kind_value]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise TypeError(f"An error of kind {kind_value!r} has no field(s) {unknown}; it takes {list(names)}")
    missing = [n for n in names if fields.get(n) is None]
    if missing:
        raise TypeError(f"An error of kind {kind_value!r} needs the field(s) {missing}, as strings")
    wrong = [n for n in names if not isinstance(fields[n], str)]
    if wrong:
        raise TypeError(f"The field(s) {wrong} of an error of kind {kind_value!r} must be strings")
    obj: Dict[str, Any] = {"kind": kind_value}
    obj.update((n, fields[n]) for n in names)
    try:
        body = dumps(obj)
    except ValueError:
        body = b""
    if not body:
        raise ValueError(f"An error of kind {kind_value!r} cannot be sent: a field is not valid Unicode (a lone surrogate)")
    return ERROR_LINE % (request_id, body)

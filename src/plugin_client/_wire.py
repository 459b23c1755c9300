"""The host's fast paths on the wire: request lines from byte templates, the plain decode of a reply.

:mod:`plugin_client.protocol` documents the public API (``encode_request``,
``decode_reply``); this module holds what makes it fast, with public names
for the engine (:mod:`plugin_client._flow`) to use directly on the warm path:

* the per-method request templates (``GET_TEMPLATE`` and its kin), formatted
  with ``%`` and the request id, and the per-method encoders built on them;
* :func:`get_line`, with ``REF_JSON``, a bounded cache of references already
  encoded as JSON, and :func:`init_params`/:func:`init_line`, so a client
  encodes its ``init`` params once and formats a line after every spawn;
* the one-pass reply validators (``REPLY_VALIDATORS``, ``RESULT_VALIDATORS``,
  keyed by call class and filled by ``protocol`` through :func:`register`),
  :func:`compact_result` (a reply written as the SDK and serde_json write it:
  the core checks its head as bytes and pydantic-core parses the result alone)
  and :func:`plain_result` (any reply that is plainly a success).

What it deliberately does not do: explain a broken reply (every function here
answers ``None`` and lets ``decode_reply`` and :mod:`plugin_client._diagnose`
say what is wrong), check its arguments as the public API does (the callers
pass a ``str`` reference, an ``int`` id in range, ``bytes`` lines), define the
models (``protocol`` does; this module does not import them at run time), or
any I/O.
"""

from __future__ import annotations

import gc
import json
from typing import TYPE_CHECKING, Any, Callable, Dict, Final, Iterable, Literal, Mapping, Optional, Type

import pydantic_core
from pydantic import Field, Strict, TypeAdapter, ValidationError
from typing_extensions import Annotated, NotRequired, TypedDict

from ._enums import Method
from ._impl import split_result
from ._plugin_wire import MAX_REQUEST_ID, PROTOCOL_VERSION, dumps

if TYPE_CHECKING:
    from .protocol import Call, Result

__all__ = (
    "U64",
    "LINE_CONFIG",
    "Validate",
    "Encoder",
    "json_str",
    "INIT_TEMPLATE",
    "IS_AVAILABLE_TEMPLATE",
    "GET_TEMPLATE",
    "LIST_TEMPLATE",
    "VALIDATE_TEMPLATE",
    "PUT_TEMPLATE",
    "DELETE_TEMPLATE",
    "KEY_MATERIAL_TEMPLATE",
    "REQUEST_ENCODERS",
    "init_params",
    "init_line",
    "REF_JSON",
    "REF_JSON_MAX",
    "get_line",
    "reply_validator",
    "REPLY_VALIDATORS",
    "RESULT_VALIDATORS",
    "register",
    "plain_result",
    "compact_result",
    "GC_PAUSE_BYTES",
    "validate_gc_paused",
)

# Validated as JSON integers only: 7.0, "7" and true are not ids, as for serde's u64.
U64 = Annotated[int, Strict(), Field(ge=0, le=MAX_REQUEST_ID)]
# cache_strings="keys" for the validators that parse a whole line (the reply
# envelope, and a request in the plugin SDK, whose params may hold a put value):
# see protocol's _RESULT_CONFIG.
LINE_CONFIG = pydantic_core.CoreConfig(cache_strings="keys")

_to_json = pydantic_core.to_json


def json_str(text: str, what: str) -> bytes:
    try:
        return _to_json(text)
    except pydantic_core.PydanticSerializationError:
        pass  # its message quotes the text, which may be a secret
    raise ValueError(f"{what} cannot be sent: it is not valid Unicode text (it holds a lone surrogate)")


# --- request encoding (host side) ------------------------------------------------


def _template(method: Method, params: bytes) -> bytes:
    head = b'{"jsonrpc":"2.0","id":%d,"method":"' + method.value.encode("ascii") + b'"'
    return head + (b',"params":' + params + b"}\n" if params else b"}\n")


INIT_TEMPLATE: Final = _template(Method.INIT, b"%b")
IS_AVAILABLE_TEMPLATE: Final = _template(Method.IS_AVAILABLE, b"")
GET_TEMPLATE: Final = _template(Method.GET, b'{"reference":%b}')
LIST_TEMPLATE: Final = _template(Method.LIST, b"")
VALIDATE_TEMPLATE: Final = _template(Method.VALIDATE, b'{"reference":%b}')
PUT_TEMPLATE: Final = _template(Method.PUT, b'{"reference":%b,"value":%b}')
DELETE_TEMPLATE: Final = _template(Method.DELETE, b'{"reference":%b}')
KEY_MATERIAL_TEMPLATE: Final = _template(Method.KEY_MATERIAL, b'{"purpose":%b}')


# What json.dumps(ensure_ascii=False) does to a str, without building an encoder.
_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring


def _enc_init(call: Any, rid: int) -> bytes:
    return INIT_TEMPLATE % (rid, _init_body(call.source_name, call.config, call.protocol_version))


def _init_body(source_name: str, config: Mapping[str, Any], protocol_version: str) -> bytes:
    # The bytes of dumps({"source_name": ..., "config": ..., "protocol_version": ...}),
    # built in parts: an empty config (the common case) needs no encoder at all.
    try:
        body = b'{"source_name":%b,"config":%b,"protocol_version":%b}' % (
            _encode_str(source_name).encode("utf-8"),
            dumps(config) if config else b"{}",
            _encode_str(protocol_version).encode("utf-8"),
        )
    except (TypeError, ValueError) as exc:
        problem: Optional[str] = type(exc).__name__
    else:
        problem = None
    if problem is not None:
        raise ValueError(f"InitCall cannot be sent: its fields are not all JSON-serialisable ({problem})")
    return body


def init_params(source_name: str, config: Dict[str, Any]) -> bytes:
    """The ``params`` of ``encode_request(InitCall(source_name=..., config=...), rid)``,
    checked as ``InitCall`` checks them, for a client to build once and send after
    every spawn (:func:`init_line`). Raises :class:`ValueError` (a pydantic
    ``ValidationError``, which shows no input value) for fields ``InitCall`` refuses."""
    if source_name.__class__ is str and not config and config.__class__ is dict:
        return _init_body(source_name, config, PROTOCOL_VERSION)  # no model for the common case
    # protocol, which defines the models, imports this module: InitCall is looked
    # up when it is needed, off the common path, once per client.
    from .protocol import InitCall

    call = InitCall(source_name=source_name, config=config)
    return _init_body(call.source_name, call.config, call.protocol_version)


def init_line(params: bytes, request_id: int) -> bytes:
    """The ``init`` request line for params from :func:`init_params`."""
    return INIT_TEMPLATE % (request_id, params)


def _enc_is_available(call: Any, rid: int) -> bytes:
    return IS_AVAILABLE_TEMPLATE % rid


def _enc_get(call: Any, rid: int) -> bytes:
    return GET_TEMPLATE % (rid, json_str(call.reference, "GetCall.reference"))


# References as JSON, for get_line: a host asks for the same few references
# again and again. References name secrets, they are not secrets. Bounded: a
# host that makes up references as it goes empties it now and then.
REF_JSON: Dict[str, bytes] = {}
REF_JSON_MAX: Final = 512


def get_line(reference: str, request_id: int) -> bytes:
    """``encode_request(GetCall(reference=reference), request_id)`` without building
    the model: ``PluginClient.get``'s warm path. ``reference`` must be a ``str``
    (the caller checks; anything else goes through ``GetCall``'s validation)."""
    encoded = REF_JSON.get(reference)
    if encoded is None:
        try:
            encoded = _to_json(reference)
        except pydantic_core.PydanticSerializationError:
            encoded = None
        if encoded is None:  # raised outside the except block: no chained error
            encoded = json_str(reference, "GetCall.reference")  # raises the ValueError
        if len(REF_JSON) >= REF_JSON_MAX:
            REF_JSON.clear()
        REF_JSON[reference] = encoded
    return GET_TEMPLATE % (request_id, encoded)


def _enc_list(call: Any, rid: int) -> bytes:
    return LIST_TEMPLATE % rid


def _enc_validate(call: Any, rid: int) -> bytes:
    return VALIDATE_TEMPLATE % (rid, json_str(call.reference, "ValidateCall.reference"))


def _enc_put(call: Any, rid: int) -> bytes:
    ref = json_str(call.reference, "PutCall.reference")
    return PUT_TEMPLATE % (rid, ref, json_str(call.value.get_secret_value(), "PutCall.value"))


def _enc_delete(call: Any, rid: int) -> bytes:
    return DELETE_TEMPLATE % (rid, json_str(call.reference, "DeleteCall.reference"))


def _enc_key_material(call: Any, rid: int) -> bytes:
    return KEY_MATERIAL_TEMPLATE % (rid, json_str(call.purpose, "KeyMaterialCall.purpose"))


Encoder = Callable[[Any, int], bytes]
REQUEST_ENCODERS: Final[Dict[Method, Encoder]] = {
    Method.INIT: _enc_init,
    Method.IS_AVAILABLE: _enc_is_available,
    Method.GET: _enc_get,
    Method.LIST: _enc_list,
    Method.VALIDATE: _enc_validate,
    Method.PUT: _enc_put,
    Method.DELETE: _enc_delete,
    Method.KEY_MATERIAL: _enc_key_material,
}


Validate = Callable[[bytes], Any]
# The functional form builds one envelope class per method. Typed as Any
# because mypy does not follow TypedDicts built at run time.
_make_typed_dict: Any = TypedDict


def reply_validator(result_type: Type[Result]) -> Validate:
    """One-pass validator of the reply envelope, ``result`` typed for one method."""
    envelope = _make_typed_dict(
        f"_{result_type.__name__}Reply",
        {
            "jsonrpc": Literal["2.0"],
            "id": U64,
            # null and absent are the same here, as for serde's Option.
            "result": NotRequired[Optional[result_type]],
            "error": NotRequired[Optional[Dict[str, Any]]],
        },
    )
    adapter: TypeAdapter[Any] = TypeAdapter(envelope)
    # The JSON parser's settings are the validator's, which TypeAdapter does not
    # let a TypedDict set: the same schema, compiled with them.
    validate: Validate = pydantic_core.SchemaValidator(adapter.core_schema, LINE_CONFIG).validate_json
    return validate


# Keyed by Call subclass. Filled by protocol, which defines the call types, as
# it is imported (this module cannot import the models it would need to).
REPLY_VALIDATORS: Final[Dict[type, Validate]] = {}
# The result alone (for compact_result): the very schema the envelope nests.
RESULT_VALIDATORS: Final[Dict[type, Validate]] = {}


def register(call_types: Iterable[Type[Call]]) -> None:
    """Build the reply validators of ``call_types`` (``protocol`` does, for its own)."""
    for c in call_types:
        REPLY_VALIDATORS[c] = reply_validator(c.result_type)
        RESULT_VALIDATORS[c] = c.result_type.__pydantic_validator__.validate_json


def plain_result(line: bytes, call_type: type, request_id: int) -> Optional[Result]:
    """The result of a reply that is plainly a success (valid, the expected id, a
    ``result`` and no ``error``), else ``None``: then :func:`decode_reply` says what
    the reply is, with its error. The warm path's decode, without decode_reply's
    look at its arguments. ``call_type``: a :class:`Call` subclass. A compact
    reply is :func:`compact_result`'s; any other gets the envelope's validator."""
    compact = compact_result(line, call_type, request_id)
    if compact is not None:
        return compact
    if len(line) >= GC_PAUSE_BYTES:
        return None  # decode_reply pauses the GC for it
    try:
        env = REPLY_VALIDATORS[call_type](line)
    except (KeyError, ValidationError):
        return None
    if env["id"] == request_id and env.get("error") is None:
        result: Optional[Result] = env.get("result")
        return result
    return None


def compact_result(line: bytes, call_type: type, request_id: int) -> Optional[Result]:
    """The result of a success reply written as the SDK and serde_json write it
    (compact; ``jsonrpc``, ``id``, ``result`` in that order), else ``None``.

    The core's ``split_result`` checks the head and the closing brace as
    bytes, and only the bytes between go to pydantic, which then skips the
    envelope's validation, a large share of a small reply's decode
    (``bench/test_bench_roundtrip.py``, warm_get). They are valid only if
    they are one JSON value, so a reply with more after its result (an
    ``error`` member) is not taken here; neither is a line long enough for
    decode_reply's GC pause. ``request_id``: a valid id; ``line``: ``bytes``.
    """
    if len(line) >= GC_PAUSE_BYTES:
        return None
    body = split_result(line, request_id)
    if body is not None:
        validate = RESULT_VALIDATORS.get(call_type)
        if validate is not None:
            try:
                result: Result = validate(body)
                return result
            except ValidationError:
                pass  # not a valid result, or more after it: the envelope's to say
    return None


# A large reply (a long list) becomes tens of thousands of new, acyclic objects.
# A cyclic-GC pass during the decode cannot free any of them but walks them all
# (and a full pass walks the whole heap): with the GC on, it was half the time
# of a 10,000-entry list. pydantic-core holds the GIL while it decodes, so
# another thread sees the GC off only if it runs in the few bytecodes around
# the call; a GC that is already off is left alone.
GC_PAUSE_BYTES: Final = 64 * 1024


def validate_gc_paused(validate: Validate, line: bytes) -> Any:
    """``validate(line)`` with the cyclic GC paused (for lines of ``GC_PAUSE_BYTES`` or more)."""
    if not gc.isenabled():
        return validate(line)
    gc.disable()
    try:
        return validate(line)
    finally:
        gc.enable()


"""The secret-source wire protocol: typed calls and results, and their JSON-RPC 2.0 lines.

This module turns a :class:`Call` into the one line the host writes to a
plugin's stdin (:func:`encode_request`) and one line read from its stdout
into that call's typed :class:`Result` or a precise exception
(:func:`decode_reply`). For the plugin side (the SDK) it does the mirror
image: :func:`decode_request`, :func:`encode_result` and :func:`encode_error`.
The format is the one ``PROTOCOL.md`` (at the repository root) specifies, so
plugins written for the existing Rust host work unmodified and plugins written
with our SDK run under that host.

What it deliberately does not do: any I/O. It never reads, writes, spawns,
waits or times out; it does not split a byte stream into frames (the core's
``FrameReader`` does) and it does not gate calls on capability bits (the client
does, from :attr:`Call.capability`). Everything here is a pure function of its
arguments.

Speed: a reply is decoded in one pass by pydantic-core, straight from the
bytes, into an envelope whose ``result`` has the type of the method that was
called (never guessed from the shape). A success reply written as the SDK
and serde_json write it (compact; ``jsonrpc``, ``id``, ``result`` in that
order) skips the envelope: the core compares its head, with the id sent, as
bytes, and pydantic-core parses the result alone (:func:`_compact_result`).
Nothing is parsed twice unless the reply is broken (or not a plain success
after a compact head), when a slower path works out exactly what it is. The
cyclic GC is paused while a large reply (64 KiB or more) is decoded. Requests
are formatted from constant per-method byte templates.

Leniency, as for the Rust host: unknown members are ignored (envelope and
result), ``null`` counts as absent for ``result``/``error`` and the optional
fields, and any whitespace around or inside the JSON is fine. Strictness, as
for serde: ids and integers must be JSON integers in range (not ``7.0``,
``"7"`` or ``true``), booleans must be booleans, text must be valid UTF-8.
An ``error`` member that is not an object is a protocol violation
(``ReplyShapeError``); an object of any shape is the plugin's answer
(``PluginError``). Needs pydantic >= 2.5.

Secrecy: ``GetResult.value`` and ``PutCall.value`` are :class:`~pydantic.SecretStr`,
``KeyMaterialResult.material`` is :class:`~pydantic.SecretBytes`; they are only
ever revealed on the wire. Exceptions raised here are built from error types,
field names, lengths and ids only; they never hold the reply line, and no
pydantic ``ValidationError`` (whose text includes input values) is chained
to them: ``__cause__`` and ``__context__`` are ``None``. The exception is an
error reply's own text (``detail``, ``reason``, ``reference``, ``message``),
which the plugin wrote to be shown to a user: it is kept on
:class:`~plugin_client.errors.PluginError` and quoted, clipped, in its message.
"""

import base64
import binascii
import gc
import json
import re
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    Final,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
    overload,
)

import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import Annotated, NotRequired, TypedDict

from ._enums import AvailabilityStatus, Capability, ErrorKind, Method
from ._impl import split_result
from ._plugin_wire import MAX_REQUEST_ID, PROTOCOL_VERSION, encode_error
from ._plugin_wire import RESULT_LINE as _RESULT_LINE
from ._plugin_wire import check_request_id as _check_request_id
from ._plugin_wire import clip as _clip
from ._plugin_wire import count as _count
from ._plugin_wire import dumps as _dumps
from ._plugin_wire import int_text as _int_text
from ._plugin_wire import kind_of as _kind_of
from ._scrub import scrub
from .errors import (
    AmbiguousReply,
    BadJsonRpcVersion,
    BadReplyId,
    BlankReply,
    InvalidJsonReply,
    InvalidUtf8Reply,
    MalformedRequest,
    PluginClientError,
    PluginError,
    PluginUnsupportedCapability,
    ReplyIdMismatch,
    ReplyShapeError,
)

__all__ = (
    "PROTOCOL_VERSION",
    "MAX_REQUEST_ID",
    "Capability",
    "Method",
    "ErrorKind",
    "AvailabilityStatus",
    "Call",
    "InitCall",
    "IsAvailableCall",
    "GetCall",
    "ListCall",
    "ValidateCall",
    "PutCall",
    "DeleteCall",
    "KeyMaterialCall",
    "Result",
    "InitResult",
    "IsAvailableResult",
    "GetResult",
    "ListEntry",
    "ListResult",
    "ValidateResult",
    "PutResult",
    "DeleteResult",
    "KeyMaterialResult",
    "encode_request",
    "decode_reply",
    "decode_request",
    "encode_result",
    "encode_error",
)

_MAX_U32: Final = 2**32 - 1

# Validated as JSON integers only: 7.0, "7" and true are not ids, as for serde's u64.
_U64 = Annotated[int, Strict(), Field(ge=0, le=MAX_REQUEST_ID)]
_U32 = Annotated[int, Strict(), Field(ge=0, le=_MAX_U32)]
_StrictBool = Annotated[bool, Strict()]


# --- results (plugin -> host) --------------------------------------------------

# hide_input_in_errors: a ValidationError raised by these models directly (not
# through decode_reply, which never lets one out) must not print a secret input.
# cache_strings="keys": a reply's values (references, secrets) are rarely the
# same twice, so looking each up in pydantic-core's process-wide string cache is
# wasted work (a 10,000-entry list decodes a fifth faster without it), and a
# secret value kept there would outlive every result that held it. Keys still
# come from the cache.
_RESULT_CONFIG = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True, cache_strings="keys")
# The same for the validators that parse a whole line (the reply envelope, and
# a request in the plugin SDK, whose params may hold a put value).
_LINE_CONFIG = pydantic_core.CoreConfig(cache_strings="keys")


class Result(BaseModel):
    """Base of the typed results. Frozen; unknown fields from the wire are ignored."""

    model_config = _RESULT_CONFIG


class InitResult(Result):
    """``init``'s answer: who the plugin is and which capabilities it claims."""

    source_name: str
    capabilities_bits: _U32
    plugin_version: str

    @property
    def capabilities(self) -> Capability:
        """``capabilities_bits`` as flags; unknown bits are kept."""
        return Capability(self.capabilities_bits)


class IsAvailableResult(Result):
    """``is_available``'s answer. ``detail`` says what to do when not available."""

    status: AvailabilityStatus
    detail: Optional[str] = None


class GetResult(Result):
    """``get``'s answer. ``lease_seconds`` bounds how long the value may be cached."""

    value: SecretStr
    lease_seconds: Optional[_U64] = None


class ListEntry(BaseModel):
    """One entry of ``list``'s answer."""

    model_config = _RESULT_CONFIG

    reference: str
    display: Optional[str] = None


class ListResult(Result):
    """``list``'s answer."""

    entries: List[ListEntry]


class ValidateResult(Result):
    """``validate``'s answer."""

    ok: _StrictBool


class PutResult(Result):
    """``put``'s answer; an absent ``replaced`` means false."""

    replaced: _StrictBool = False


class DeleteResult(Result):
    """``delete``'s answer; an absent ``existed`` means false."""

    existed: _StrictBool = False


def _b64decode_strict(raw: object) -> bytes:
    if not isinstance(raw, str):
        raise ValueError("'material_b64' must be a string of standard base64")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        pass  # the decoder's message is not ours to show; ours has no input in it
    raise ValueError(f"'material_b64' is not valid standard base64 ({len(raw)} characters)")


class KeyMaterialResult(Result):
    """``key_material``'s answer: raw key bytes.

    On the wire the bytes travel as ``material_b64`` (standard base64, padded,
    checked strictly); a ``material`` member on the wire is ignored. In Python,
    construct it with ``material=<bytes>`` or ``material_b64=<str>``.
    """

    material: SecretBytes

    @model_validator(mode="before")
    @classmethod
    def _from_material_b64(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        if info.mode == "json" and "material" in data:
            # On the wire only material_b64 exists: a stray "material" is an unknown field.
            data = {k: v for k, v in data.items() if k != "material"}
        if "material_b64" in data:
            if "material" in data:
                raise ValueError("give either 'material' or 'material_b64', not both")
            data = dict(data)
            data["material"] = _b64decode_strict(data.pop("material_b64"))
        return data


# --- calls (host -> plugin) ----------------------------------------------------

_CALL_CONFIG = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class Call(BaseModel):
    """Base of the requests. Frozen; unknown fields are an error.

    Each subclass says, as class attributes, its JSON-RPC ``method``, the
    ``capability`` bit it needs (``Capability(0)``: none) and its ``result_type``.
    """

    model_config = _CALL_CONFIG

    method: ClassVar[Method]
    capability: ClassVar[Capability]
    result_type: ClassVar[Type[Result]]


class InitCall(Call):
    """The handshake, sent first after every spawn. ``config`` must be JSON-serialisable."""

    method: ClassVar[Method] = Method.INIT
    capability: ClassVar[Capability] = Capability(0)
    result_type: ClassVar[Type[Result]] = InitResult

    source_name: str
    config: Dict[str, Any] = Field(default_factory=dict)
    protocol_version: str = PROTOCOL_VERSION

    @field_validator("config")
    @classmethod
    def _config_is_json(cls, value: Dict[str, Any]) -> Dict[str, Any]:
        if not value:
            return value  # {} is JSON: the common case costs no encoding
        try:
            _dumps(value)
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            problem = type(exc).__name__
        else:
            return value
        raise ValueError(
            "config must hold only JSON values: str, int, float, bool, None, lists and dicts "
            f"with str keys, no NaN, infinity, lone surrogate or cycle ({problem})"
        )


class IsAvailableCall(Call):
    """Is the backend up? Needs no capability; sent without ``params``."""

    method: ClassVar[Method] = Method.IS_AVAILABLE
    capability: ClassVar[Capability] = Capability(0)
    result_type: ClassVar[Type[Result]] = IsAvailableResult


class GetCall(Call):
    """Read one secret. Needs ``READ``."""

    method: ClassVar[Method] = Method.GET
    capability: ClassVar[Capability] = Capability.READ
    result_type: ClassVar[Type[Result]] = GetResult

    reference: str


class ListCall(Call):
    """List the references the plugin knows. Needs ``LIST``; sent without ``params``."""

    method: ClassVar[Method] = Method.LIST
    capability: ClassVar[Capability] = Capability.LIST
    result_type: ClassVar[Type[Result]] = ListResult


class ValidateCall(Call):
    """Check that a reference resolves, without reading it. Needs ``VALIDATE``."""

    method: ClassVar[Method] = Method.VALIDATE
    capability: ClassVar[Capability] = Capability.VALIDATE
    result_type: ClassVar[Type[Result]] = ValidateResult

    reference: str


class PutCall(Call):
    """Store a secret. Needs ``WRITE``. ``value`` is revealed only on the wire."""

    method: ClassVar[Method] = Method.PUT
    capability: ClassVar[Capability] = Capability.WRITE
    result_type: ClassVar[Type[Result]] = PutResult

    reference: str
    value: SecretStr


class DeleteCall(Call):
    """Delete a secret. Needs ``DELETE``."""

    method: ClassVar[Method] = Method.DELETE
    capability: ClassVar[Capability] = Capability.DELETE
    result_type: ClassVar[Type[Result]] = DeleteResult

    reference: str


class KeyMaterialCall(Call):
    """Ask for raw key bytes for ``purpose``. Needs ``KEY_SOURCE``."""

    method: ClassVar[Method] = Method.KEY_MATERIAL
    capability: ClassVar[Capability] = Capability.KEY_SOURCE
    result_type: ClassVar[Type[Result]] = KeyMaterialResult

    purpose: str


_CALL_TYPES: Final[Tuple[Type[Call], ...]] = (
    InitCall,
    IsAvailableCall,
    GetCall,
    ListCall,
    ValidateCall,
    PutCall,
    DeleteCall,
    KeyMaterialCall,
)
_CALL_BY_METHOD: Final[Dict[str, Type[Call]]] = {c.method.value: c for c in _CALL_TYPES}
_NO_PARAMS: Final = frozenset((IsAvailableCall, ListCall))


# --- small helpers ---------------------------------------------------------------

_to_json = pydantic_core.to_json
# Only the slow paths that explain a broken line parse it a second time.
_from_json = pydantic_core.from_json


def _json_str(text: str, what: str) -> bytes:
    try:
        return _to_json(text)
    except pydantic_core.PydanticSerializationError:
        pass  # its message quotes the text, which may be a secret
    raise ValueError(f"{what} cannot be sent: it is not valid Unicode text (it holds a lone surrogate)")


def _who(plugin: Optional[str]) -> str:
    return "The plugin" if plugin is None else f"Plugin {plugin!r}"


# --- request encoding (host side) ------------------------------------------------


def _template(method: Method, params: bytes) -> bytes:
    head = b'{"jsonrpc":"2.0","id":%d,"method":"' + method.value.encode("ascii") + b'"'
    return head + (b',"params":' + params + b"}\n" if params else b"}\n")


_T_INIT: Final = _template(Method.INIT, b"%b")
_T_IS_AVAILABLE: Final = _template(Method.IS_AVAILABLE, b"")
_T_GET: Final = _template(Method.GET, b'{"reference":%b}')
_T_LIST: Final = _template(Method.LIST, b"")
_T_VALIDATE: Final = _template(Method.VALIDATE, b'{"reference":%b}')
_T_PUT: Final = _template(Method.PUT, b'{"reference":%b,"value":%b}')
_T_DELETE: Final = _template(Method.DELETE, b'{"reference":%b}')
_T_KEY_MATERIAL: Final = _template(Method.KEY_MATERIAL, b'{"purpose":%b}')


# What json.dumps(ensure_ascii=False) does to a str, without building an encoder.
_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring


def _enc_init(call: Any, rid: int) -> bytes:
    return _T_INIT % (rid, _init_body(call.source_name, call.config, call.protocol_version))


def _init_body(source_name: str, config: Mapping[str, Any], protocol_version: str) -> bytes:
    # The bytes of _dumps({"source_name": ..., "config": ..., "protocol_version": ...}),
    # built in parts: an empty config (the common case) needs no encoder at all.
    try:
        body = b'{"source_name":%b,"config":%b,"protocol_version":%b}' % (
            _encode_str(source_name).encode("utf-8"),
            _dumps(config) if config else b"{}",
            _encode_str(protocol_version).encode("utf-8"),
        )
    except (TypeError, ValueError) as exc:
        problem: Optional[str] = type(exc).__name__
    else:
        problem = None
    if problem is not None:
        raise ValueError(f"InitCall cannot be sent: its fields are not all JSON-serialisable ({problem})")
    return body


def _init_params(source_name: str, config: Dict[str, Any]) -> bytes:
    """The ``params`` of ``encode_request(InitCall(source_name=..., config=...), rid)``,
    checked as ``InitCall`` checks them, for a client to build once and send after
    every spawn (:func:`_init_line`). Raises :class:`ValueError` (a pydantic
    ``ValidationError``, which shows no input value) for fields ``InitCall`` refuses."""
    if source_name.__class__ is str and not config and config.__class__ is dict:
        return _init_body(source_name, config, PROTOCOL_VERSION)  # no model for the common case
    call = InitCall(source_name=source_name, config=config)
    return _init_body(call.source_name, call.config, call.protocol_version)


def _init_line(params: bytes, request_id: int) -> bytes:
    """The ``init`` request line for params from :func:`_init_params`."""
    return _T_INIT % (request_id, params)


def _enc_is_available(call: Any, rid: int) -> bytes:
    return _T_IS_AVAILABLE % rid


def _enc_get(call: Any, rid: int) -> bytes:
    return _T_GET % (rid, _json_str(call.reference, "GetCall.reference"))


# References as JSON, for _get_line: a host asks for the same few references
# again and again. References name secrets, they are not secrets. Bounded: a
# host that makes up references as it goes empties it now and then.
_REF_JSON: Dict[str, bytes] = {}
_REF_JSON_MAX: Final = 512


def _get_line(reference: str, request_id: int) -> bytes:
    """``encode_request(GetCall(reference=reference), request_id)`` without building
    the model: ``PluginClient.get``'s warm path. ``reference`` must be a ``str``
    (the caller checks; anything else goes through ``GetCall``'s validation)."""
    encoded = _REF_JSON.get(reference)
    if encoded is None:
        try:
            encoded = _to_json(reference)
        except pydantic_core.PydanticSerializationError:
            encoded = None
        if encoded is None:  # raised outside the except block: no chained error
            encoded = _json_str(reference, "GetCall.reference")  # raises the ValueError
        if len(_REF_JSON) >= _REF_JSON_MAX:
            _REF_JSON.clear()
        _REF_JSON[reference] = encoded
    return _T_GET % (request_id, encoded)


def _enc_list(call: Any, rid: int) -> bytes:
    return _T_LIST % rid


def _enc_validate(call: Any, rid: int) -> bytes:
    return _T_VALIDATE % (rid, _json_str(call.reference, "ValidateCall.reference"))


def _enc_put(call: Any, rid: int) -> bytes:
    ref = _json_str(call.reference, "PutCall.reference")
    return _T_PUT % (rid, ref, _json_str(call.value.get_secret_value(), "PutCall.value"))


def _enc_delete(call: Any, rid: int) -> bytes:
    return _T_DELETE % (rid, _json_str(call.reference, "DeleteCall.reference"))


def _enc_key_material(call: Any, rid: int) -> bytes:
    return _T_KEY_MATERIAL % (rid, _json_str(call.purpose, "KeyMaterialCall.purpose"))


_Encoder = Callable[[Any, int], bytes]
_REQUEST_ENCODERS: Final[Dict[Method, _Encoder]] = {
    Method.INIT: _enc_init,
    Method.IS_AVAILABLE: _enc_is_available,
    Method.GET: _enc_get,
    Method.LIST: _enc_list,
    Method.VALIDATE: _enc_validate,
    Method.PUT: _enc_put,
    Method.DELETE: _enc_delete,
    Method.KEY_MATERIAL: _enc_key_material,
}
# Keyed by class too: a type lookup is a pointer hash, an enum lookup runs Python code.
_ENCODER_BY_CLASS: Final[Dict[type, _Encoder]] = {c: _REQUEST_ENCODERS[c.method] for c in _CALL_TYPES}


def encode_request(call: Call, request_id: int) -> bytes:
    """The request line for ``call``: one compact JSON object and ``b"\\n"``.

    ``is_available`` and ``list`` are sent without a ``params`` key, as plugins
    built on the Rust types require. A :class:`PutCall`'s value is revealed
    here and nowhere else. Non-ASCII text is sent as UTF-8.

    Raises :class:`ValueError` for an id outside ``0..2**64-1`` or text that is
    not valid Unicode (a lone surrogate), :class:`TypeError` for an id that is
    not an ``int`` or a ``call`` that is not a :class:`Call`.
    """
    if request_id.__class__ is not int or not 0 <= request_id <= MAX_REQUEST_ID:
        _check_request_id(request_id)
    try:
        encoder = _ENCODER_BY_CLASS[call.__class__]
    except KeyError:
        encoder = _encoder_for(call)
    return encoder(call, request_id)


def _encoder_for(call: Any) -> _Encoder:
    if not isinstance(call, Call):
        raise TypeError(f"encode_request() needs a Call, not {type(call).__name__}")
    return _REQUEST_ENCODERS[call.method]


# --- reply decoding (host side) ----------------------------------------------------

_Validate = Callable[[bytes], Any]
# The functional form builds one envelope class per method. Typed as Any
# because mypy does not follow TypedDicts built at run time.
_make_typed_dict: Any = TypedDict


def _reply_validator(result_type: Type[Result]) -> _Validate:
    """One-pass validator of the reply envelope, ``result`` typed for one method."""
    envelope = _make_typed_dict(
        f"_{result_type.__name__}Reply",
        {
            "jsonrpc": Literal["2.0"],
            "id": _U64,
            # null and absent are the same here, as for serde's Option.
            "result": NotRequired[Optional[result_type]],
            "error": NotRequired[Optional[Dict[str, Any]]],
        },
    )
    adapter: TypeAdapter[Any] = TypeAdapter(envelope)
    # The JSON parser's settings are the validator's, which TypeAdapter does not
    # let a TypedDict set: the same schema, compiled with them.
    validate: _Validate = pydantic_core.SchemaValidator(adapter.core_schema, _LINE_CONFIG).validate_json
    return validate


_REPLY_VALIDATORS: Final[Dict[type, _Validate]] = {c: _reply_validator(c.result_type) for c in _CALL_TYPES}
# The result alone (for _plain_result): the very schema the envelope nests.
_RESULT_VALIDATORS: Final[Dict[type, _Validate]] = {
    c: c.result_type.__pydantic_validator__.validate_json for c in _CALL_TYPES
}


@overload
def decode_reply(
    line: bytes, call: Union[InitCall, Type[InitCall]], request_id: int, *, plugin: Optional[str] = None
) -> InitResult: ...
@overload
def decode_reply(
    line: bytes, call: Union[IsAvailableCall, Type[IsAvailableCall]], request_id: int, *, plugin: Optional[str] = None
) -> IsAvailableResult: ...
@overload
def decode_reply(
    line: bytes, call: Union[GetCall, Type[GetCall]], request_id: int, *, plugin: Optional[str] = None
) -> GetResult: ...
@overload
def decode_reply(
    line: bytes, call: Union[ListCall, Type[ListCall]], request_id: int, *, plugin: Optional[str] = None
) -> ListResult: ...
@overload
def decode_reply(
    line: bytes, call: Union[ValidateCall, Type[ValidateCall]], request_id: int, *, plugin: Optional[str] = None
) -> ValidateResult: ...
@overload
def decode_reply(
    line: bytes, call: Union[PutCall, Type[PutCall]], request_id: int, *, plugin: Optional[str] = None
) -> PutResult: ...
@overload
def decode_reply(
    line: bytes, call: Union[DeleteCall, Type[DeleteCall]], request_id: int, *, plugin: Optional[str] = None
) -> DeleteResult: ...
@overload
def decode_reply(
    line: bytes, call: Union[KeyMaterialCall, Type[KeyMaterialCall]], request_id: int, *, plugin: Optional[str] = None
) -> KeyMaterialResult: ...
@overload
def decode_reply(
    line: bytes, call: Union[Call, Type[Call]], request_id: int, *, plugin: Optional[str] = None
) -> Result: ...


def decode_reply(
    line: bytes, call: Union[Call, Type[Call]], request_id: int, *, plugin: Optional[str] = None
) -> Result:
    """Decode one reply frame (without its ``b"\\n"``) as the answer to ``call``.

    ``call`` is the call that was sent, or its class: the result is decoded as
    that method's result type, never guessed from its shape. Whitespace around
    the JSON (such as the ``\\r`` of a ``\\r\\n`` line end) is accepted, and so
    are unknown extra members, in the envelope and in the result.

    Raises, each with ``plugin=plugin``:

    * :class:`BlankReply`, :class:`InvalidUtf8Reply`, :class:`InvalidJsonReply`
      (not JSON, or JSON but not an object), :class:`BadJsonRpcVersion`,
      :class:`BadReplyId` (missing, not an integer, negative or above 2**64-1);
    * :class:`ReplyIdMismatch` for a valid id other than ``request_id``;
    * :class:`AmbiguousReply` when ``result`` and ``error`` are both present
      (non-null) or both absent;
    * :class:`ReplyShapeError` when ``result`` does not have the method's
      shape, or ``error`` is present but is not a JSON object;
    * :class:`PluginError` for an error reply (any JSON object: documented kinds
      keep their fields; unknown kinds, JSON-RPC ``{"code", "message"}`` errors
      and other objects become ``kind="other"``, with an integer ``code`` kept).
      An ``unsupported-capability`` answer is a :class:`PluginUnsupportedCapability`,
      which is also an :class:`~plugin_client.errors.UnsupportedCapability`.

    The checks run in that order, so a reply broken in several ways gets the
    first error of the list. None of them holds the line or a value from it,
    and neither do the locals of the library's frames in their traceback.
    """
    try:
        return _decode_reply(line, call, request_id, plugin)
    except BaseException as err:
        del line
        scrub(err)
        raise


def _decode_reply(line: bytes, call: Union[Call, Type[Call]], request_id: int, plugin: Optional[str]) -> Result:
    cls = call if isinstance(call, type) else call.__class__
    if line.__class__ is bytes and request_id.__class__ is int and 0 <= request_id <= MAX_REQUEST_ID:
        compact = _compact_result(line, cls, request_id)
        if compact is not None:
            return compact
    try:
        validate = _REPLY_VALIDATORS[cls]
    except KeyError:
        validate = _validator_for(cls)
    try:
        env = validate(line) if len(line) < _GC_PAUSE_BYTES else _validate_gc_paused(validate, line)
    except ValidationError as exc:
        issues = _issues(exc)
    else:
        if env["id"] != request_id:
            raise _id_mismatch(env["id"], request_id, cls.method, plugin)
        result = env.get("result")
        error = env.get("error")
        if error is None:
            if result is not None:
                return result  # type: ignore[no-any-return]
        elif result is None:
            raise _plugin_error(error, cls.method, request_id, plugin)
        raise _ambiguous(result is not None, request_id, cls.method, plugin)
    # Raised outside the except block, so the ValidationError (whose text holds
    # input values) is neither __cause__ nor __context__.
    raise _diagnose_reply(line, issues, cls.method, request_id, plugin) from None


def _plain_result(line: bytes, call_type: type, request_id: int) -> Optional[Result]:
    """The result of a reply that is plainly a success (valid, the expected id, a
    ``result`` and no ``error``), else ``None``: then :func:`decode_reply` says what
    the reply is, with its error. The warm path's decode, without decode_reply's
    look at its arguments. ``call_type``: a :class:`Call` subclass. A compact
    reply is :func:`_compact_result`'s; any other gets the envelope's validator."""
    compact = _compact_result(line, call_type, request_id)
    if compact is not None:
        return compact
    if len(line) >= _GC_PAUSE_BYTES:
        return None  # decode_reply pauses the GC for it
    try:
        env = _REPLY_VALIDATORS[call_type](line)
    except (KeyError, ValidationError):
        return None
    if env["id"] == request_id and env.get("error") is None:
        result: Optional[Result] = env.get("result")
        return result
    return None


def _compact_result(line: bytes, call_type: type, request_id: int) -> Optional[Result]:
    """The result of a success reply written as the SDK and serde_json write it
    (compact; ``jsonrpc``, ``id``, ``result`` in that order), else ``None``.

    The core's ``split_result`` checks the head and the closing brace as
    bytes, and only the bytes between go to pydantic: the envelope's
    validation was a third of a small reply's decode. They are valid only if
    they are one JSON value, so a reply with more after its result (an
    ``error`` member) is not taken here; neither is a line long enough for
    decode_reply's GC pause. ``request_id``: a valid id; ``line``: ``bytes``.
    """
    if len(line) >= _GC_PAUSE_BYTES:
        return None
    body = split_result(line, request_id)
    if body is not None:
        validate = _RESULT_VALIDATORS.get(call_type)
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
_GC_PAUSE_BYTES: Final = 64 * 1024


def _validate_gc_paused(validate: _Validate, line: bytes) -> Any:
    if not gc.isenabled():
        return validate(line)
    gc.disable()
    try:
        return validate(line)
    finally:
        gc.enable()


def _validator_for(cls: Any) -> _Validate:
    if not (isinstance(cls, type) and issubclass(cls, Call)) or cls is Call:
        raise TypeError(f"decode_reply() needs a Call subclass or instance, not {cls!r}")
    return _REPLY_VALIDATORS.setdefault(cls, _reply_validator(cls.result_type))


# An issue of a ValidationError, stripped of the input: (type, loc, kind of input, safe text).
_Issue = Tuple[str, Tuple[Union[str, int], ...], str, str]
_JITER_MESSAGE = re.compile(r"[A-Za-z ,'`]{1,80} at line \d+ column \d+")


def _issues(exc: ValidationError) -> List[_Issue]:
    out: List[_Issue] = []
    for err in exc.errors(include_url=False):
        kind = err["type"]
        ctx = err.get("ctx") or {}
        safe = ""
        if kind == "json_invalid":
            text = str(ctx.get("error", ""))
            safe = text if _JITER_MESSAGE.fullmatch(text) else ""
        elif kind == "value_error":
            # Raised by this module's own validators, whose messages hold no input.
            safe = str(ctx.get("error", ""))
        elif kind in ("literal_error", "enum"):
            safe = str(ctx.get("expected", ""))
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            bound = next(iter(ctx.values()), None)
            safe = str(bound) if isinstance(bound, int) else ""
        out.append((kind, tuple(err["loc"]), _kind_of(err.get("input")), safe))
    return out


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "a boolean",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
    "bytes_type": "a string",
}


def _path(loc: Sequence[Union[str, int]]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = "material_b64" if part == "material" else _clip(str(part), 40)
            text += f".{name}" if text else name
    return text


def _describe(issue: _Issue, root: int) -> str:
    kind, loc, got, safe = issue
    where = _path(loc[root:])
    subject = f"{where!r}" if where else "it"
    if kind == "missing":
        return f"{subject} is missing"
    if kind in _EXPECTED:
        return f"{subject} must be {_EXPECTED[kind]}, not {got}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"{subject} must be >= {safe or 0}"
    if kind in ("less_than_equal", "less_than"):
        return f"{subject} must be <= {safe}" if safe else f"{subject} is too large"
    if kind in ("literal_error", "enum"):
        return f"{subject} must be {safe}, not {got}"
    if kind == "value_error" and safe:
        return safe
    return f"{subject} is invalid ({kind}, got {got})"


def _describe_all(issues: Sequence[_Issue], root: int) -> str:
    shown = "; ".join(_describe(issue, root) for issue in issues[:3])
    if len(issues) > 3:
        shown += f"; and {len(issues) - 3} more"
    return shown


def _on(method: Method, request_id: int) -> str:
    return f"request {request_id} ({method.value!r})"


def _diagnose_reply(
    line: bytes, issues: List[_Issue], method: Method, request_id: int, plugin: Optional[str]
) -> PluginClientError:
    """Work out what is wrong with a reply that failed validation (the slow path)."""
    who, on = _who(plugin), _on(method, request_id)
    size = _count(len(line), "byte")
    if not line.strip():
        return BlankReply(
            f"{who} sent a blank line in reply to {on}; a plugin must write exactly one JSON "
            "object per line to stdout (logs belong on stderr).",
            plugin=plugin,
        )
    if any(issue[0] in ("json_invalid", "json_type") for issue in issues):
        bad_at: Optional[int] = None
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:  # exc.object is the line: keep only the offset
            bad_at = exc.start
        if bad_at is not None:
            return InvalidUtf8Reply(
                f"{who} sent a reply to {on} that is not valid UTF-8 (bad byte at offset {bad_at} "
                f"of {size}); a plugin must write UTF-8 JSON.",
                plugin=plugin,
            )
        why = next((issue[3] for issue in issues if issue[0] == "json_invalid" and issue[3]), "")
        return InvalidJsonReply(
            f"{who} sent a reply to {on} that is not JSON ({why + ', ' if why else ''}{size}); "
            "a plugin must write only JSON-RPC replies to stdout, one per line, and its logs to stderr.",
            plugin=plugin,
        )
    try:
        obj = _from_json(line)
    except ValueError:  # pragma: no cover - validate_json accepted the JSON itself
        obj = None
    if not isinstance(obj, dict):
        return InvalidJsonReply(
            f"{who} sent a reply to {on} that is JSON but not an object (it is {_kind_of(obj)}); "
            'a reply must be an object such as {"jsonrpc": "2.0", "id": ..., "result": ...}.',
            plugin=plugin,
        )
    if "jsonrpc" not in obj or obj["jsonrpc"] != "2.0":
        got = "it has none" if "jsonrpc" not in obj else f"it is {_kind_of(obj['jsonrpc'])}"
        return BadJsonRpcVersion(
            f'{who} sent a reply to {on} whose "jsonrpc" is not "2.0" ({got}); '
            'every reply must carry "jsonrpc": "2.0".',
            plugin=plugin,
        )
    rid = obj.get("id")
    if "id" not in obj or isinstance(rid, bool) or not isinstance(rid, int) or not 0 <= rid <= MAX_REQUEST_ID:
        if "id" not in obj:
            got = "it has none"
        elif isinstance(rid, bool) or not isinstance(rid, int):
            got = f"it is {_kind_of(rid)}"
        else:
            got = f"it is {_int_text(rid)}, outside 0..2**64-1"
        return BadReplyId(
            f"{who} sent a reply to {on} without a valid id ({got}); a reply must echo the "
            "request's id, an unsigned 64-bit integer.",
            plugin=plugin,
        )
    if rid != request_id:
        return _id_mismatch(rid, request_id, method, plugin)
    result, error = obj.get("result"), obj.get("error")
    if (result is None) == (error is None):
        return _ambiguous(result is not None, request_id, method, plugin)
    if error is not None:
        if isinstance(error, dict):  # pragma: no cover - an object error always validates
            return _plugin_error(error, method, request_id, plugin)
        return ReplyShapeError(
            f'{who} answered {on} with an "error" that is {_kind_of(error)}, not an object; '
            'an error reply must be an object such as {"kind": "other", "detail": "..."}.',
            plugin=plugin,
        )
    shape = [issue for issue in issues if issue[1][:1] == ("result",)]
    hint = " (did it answer another method?)" if any(issue[0] == "missing" for issue in shape) else ""
    return ReplyShapeError(
        f"{who} answered {on} with a result of the wrong shape: "
        f"{_describe_all(shape, 1) if shape else 'it does not match the method'}{hint}; "
        f"the result must be a {method.value} result as protocol 1.1 defines it.",
        plugin=plugin,
    )


def _id_mismatch(got: int, expected: int, method: Method, plugin: Optional[str]) -> ReplyIdMismatch:
    return ReplyIdMismatch(
        f"{_who(plugin)} sent a reply with id {got} while request {expected} ({method.value!r}) was "
        "in flight; the plugin is out of step (a stale, repeated or invented reply) and must "
        "echo each request's id.",
        expected=expected,
        got=got,
        plugin=plugin,
    )


def _ambiguous(both: bool, request_id: int, method: Method, plugin: Optional[str]) -> AmbiguousReply:
    what = 'both "result" and "error"' if both else 'neither "result" nor "error"'
    return AmbiguousReply(
        f"{_who(plugin)} sent a reply to {_on(method, request_id)} with {what}; a reply must "
        "carry exactly one of them.",
        plugin=plugin,
    )


def _text(error: Mapping[str, Any], name: str) -> Optional[str]:
    value = error.get(name)
    return value if isinstance(value, str) else None


def _quoted(text: Optional[str]) -> str:
    return f": {_clip(text)!r}" if text else ""


def _plugin_error(error: Mapping[str, Any], method: Method, request_id: int, plugin: Optional[str]) -> PluginError:
    """The PluginError for an error object. The plugin's own words are quoted, clipped."""
    who, on = _who(plugin), _on(method, request_id)
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    kind = error.get("kind")
    detail = _text(error, "detail")
    if kind == "unavailable":
        msg = f"{who} reports that its backend is unavailable{_quoted(detail)}; check the backend, then retry."
        return PluginError(msg, kind=kind, detail=detail, code=code, plugin=plugin)
    if kind == "needs-credential":
        msg = f"{who} needs a credential to answer {on}{_quoted(detail)}; do what it asks (for example, sign in), then retry."
        return PluginError(msg, kind=kind, detail=detail, code=code, plugin=plugin)
    if kind == "bad-reference":
        reference, reason = _text(error, "reference"), _text(error, "reason")
        ref = f" {_clip(reference)!r}" if reference is not None else ""
        msg = f"{who} rejected the reference{ref} in {on}{_quoted(reason)}; check the reference."
        return PluginError(msg, kind=kind, detail=detail, reference=reference, reason=reason, code=code, plugin=plugin)
    if kind == "unsupported-capability":
        capability = _text(error, "capability")
        if capability is None:
            capability = method.value
        msg = (
            f"{who} does not support {_clip(capability)!r} (it refused {on}); use a plugin that "
            "offers it, or do not ask this one."
        )
        return PluginUnsupportedCapability(msg, capability=capability, detail=detail, code=code, plugin=plugin)
    if kind == "other":
        detail = detail if detail is not None else _text(error, "message")
        msg = f"{who} failed {on}{_quoted(detail)}."
    elif isinstance(kind, str):
        detail = next((t for t in (detail, _text(error, "message"), _text(error, "reason")) if t is not None), None)
        msg = f"{who} failed {on} with an error of unknown kind {_clip(kind, 60)!r}{_quoted(detail)}; it is treated as 'other'."
    elif "message" in error or "code" in error:
        detail = _text(error, "message")
        number = f" {code}" if code is not None else ""
        msg = f"{who} failed {on} with JSON-RPC error{number}{_quoted(detail)}."
    else:
        detail = "an error object without a 'kind' or a 'message'"
        msg = f"{who} failed {on} with {detail}; a plugin should send a documented error kind."
    return PluginError(msg, kind="other", detail=detail, code=code, plugin=plugin)


# --- the plugin side: requests in, replies out -------------------------------------


class _Request(TypedDict):
    jsonrpc: Literal["2.0"]
    id: _U64
    method: str
    params: NotRequired[Optional[Dict[str, Any]]]


_validate_request: Final[_Validate] = pydantic_core.SchemaValidator(
    TypeAdapter(_Request).core_schema, _LINE_CONFIG
).validate_json


def decode_request(line: bytes) -> Tuple[int, Call]:
    """Decode one request frame (for the plugin SDK): returns ``(request_id, call)``.

    Lenient where the plugin side can afford it: ``is_available`` and ``list``
    are accepted with no ``params``, ``"params": null`` or ``"params": {}``, and
    unknown members (envelope or params) are ignored, so a newer host's
    additions do not break an older plugin.

    Raises :class:`~plugin_client.errors.MalformedRequest`, with ``request_id``
    set whenever the id could be read (so the plugin can still answer with an
    error) and ``method`` when the method was a string.
    """
    try:
        env = _validate_request(line)
    except ValidationError as exc:
        issues = _issues(exc)
    else:
        rid, name = env["id"], env["method"]
        cls = _CALL_BY_METHOD.get(name)
        if cls is None:
            raise MalformedRequest(
                f"Request {rid} asks for the unknown method {_clip(name, 80)!r}; this plugin "
                f"speaks protocol {PROTOCOL_VERSION} (answer it with an unsupported-capability error).",
                request_id=rid,
                method=name,
            )
        params = env.get("params")
        if cls in _NO_PARAMS:
            return rid, cls()
        if params is None:
            raise MalformedRequest(
                f"Request {rid} ({name!r}) has no params; it needs {sorted(cls.model_fields)}.",
                request_id=rid,
                method=name,
            )
        fields = cls.model_fields
        try:
            call = cls.model_validate({k: v for k, v in params.items() if k in fields})
        except ValidationError as exc:
            issues = _issues(exc)
        else:
            return rid, call
        raise MalformedRequest(
            f"Request {rid} ({name!r}) has invalid params: {_describe_all(issues, 0)}.",
            request_id=rid,
            method=name,
        ) from None
    raise _diagnose_request(line, issues) from None


def _diagnose_request(line: bytes, issues: List[_Issue]) -> MalformedRequest:
    if not line.strip():
        return MalformedRequest("The request line is empty; the host must send one JSON object per line.")
    if any(issue[0] in ("json_invalid", "json_type") for issue in issues):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return MalformedRequest(f"The request line is not valid UTF-8 ({_count(len(line), 'byte')}).")
        why = next((issue[3] for issue in issues if issue[0] == "json_invalid" and issue[3]), "")
        return MalformedRequest(f"The request line is not JSON ({why + ', ' if why else ''}{_count(len(line), 'byte')}).")
    try:
        obj = _from_json(line)
    except ValueError:  # pragma: no cover - validate_json accepted the JSON itself
        obj = None
    rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, int) or not 0 <= rid <= MAX_REQUEST_ID:
        rid = None
    name = obj.get("method") if isinstance(obj, dict) else None
    return MalformedRequest(
        f"{'The request' if rid is None else f'Request {rid}'} is not a JSON-RPC 2.0 request: "
        f"{_describe_all(issues, 0)}.",
        request_id=rid,
        method=name if isinstance(name, str) else None,
    )


def _res_get(result: Any) -> bytes:
    value = _json_str(result.value.get_secret_value(), "GetResult.value")
    if result.lease_seconds is None:
        return b'{"value":%b}' % value
    return b'{"value":%b,"lease_seconds":%d}' % (value, result.lease_seconds)


def _res_key_material(result: Any) -> bytes:
    return b'{"material_b64":"%b"}' % base64.b64encode(result.material.get_secret_value())


def _res_model(result: Any) -> bytes:
    try:
        body: bytes = result.__pydantic_serializer__.to_json(result, exclude_none=True)
    except pydantic_core.PydanticSerializationError:
        pass
    else:
        return body
    raise ValueError(f"{type(result).__name__} cannot be sent: a text field is not valid Unicode (a lone surrogate)")


_RESULT_ENCODERS: Final[Dict[type, Callable[[Any], bytes]]] = {
    GetResult: _res_get,
    KeyMaterialResult: _res_key_material,
}


def encode_result(request_id: int, result: Result) -> bytes:
    """The reply line carrying ``result`` (for the plugin SDK).

    Optional members that are ``None`` (``detail``, ``lease_seconds``,
    ``display``) are left out, which the Rust host reads as null. Secrets are
    revealed here and nowhere else; key bytes are sent as ``material_b64``.
    """
    _check_request_id(request_id)
    if not isinstance(result, Result):
        raise TypeError(f"encode_result() needs a Result, not {type(result).__name__}")
    body = _RESULT_ENCODERS.get(result.__class__, _res_model)(result)
    return _RESULT_LINE % (request_id, body)

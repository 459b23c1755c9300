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
bytes, and pydantic-core parses the result alone. Nothing is parsed twice
unless the reply is broken (or not a plain success after a compact head), when
a slower path works out exactly what it is. The cyclic GC is paused while a
large reply (64 KiB or more) is decoded. Requests are formatted from constant
per-method byte templates. Those fast paths live in :mod:`plugin_client._wire`,
the slow diagnosis of a broken line in :mod:`plugin_client._diagnose`; this
module holds the models and the documented API over both.

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
from typing import Any, Callable, ClassVar, Dict, Final, List, Literal, Optional, Tuple, Type, Union, overload

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

from ._diagnose import (
    ambiguous,
    describe_all,
    diagnose_reply,
    diagnose_request,
    id_mismatch,
    issues_of,
    plugin_error,
)
from ._enums import AvailabilityStatus, Capability, ErrorKind, Method
from ._plugin_wire import MAX_REQUEST_ID, PROTOCOL_VERSION, RESULT_LINE, check_request_id, clip, dumps, encode_error
from ._scrub import scrub
from ._wire import (
    GC_PAUSE_BYTES,
    LINE_CONFIG,
    REPLY_VALIDATORS,
    REQUEST_ENCODERS,
    U64,
    Encoder,
    Validate,
    compact_result,
    json_str,
    register,
    reply_validator,
    validate_gc_paused,
)
from .errors import MalformedRequest

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

_U32 = Annotated[int, Strict(), Field(ge=0, le=_MAX_U32)]
_StrictBool = Annotated[bool, Strict()]


# --- results (plugin -> host) --------------------------------------------------

# hide_input_in_errors: a ValidationError raised by these models directly (not
# through decode_reply, which never lets one out) must not print a secret input.
# cache_strings="keys": a reply's values (references, secrets) are rarely the
# same twice, so looking each up in pydantic-core's process-wide string cache is
# wasted work (``bench/test_bench_list.py`` guards it), and a
# secret value kept there would outlive every result that held it. Keys still
# come from the cache.
_RESULT_CONFIG = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True, cache_strings="keys")


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
    lease_seconds: Optional[U64] = None


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
            dumps(value)
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
# The wire's fast paths decode replies to these calls with validators built once, now.
register(_CALL_TYPES)

# Keyed by class too: a type lookup is a pointer hash, an enum lookup runs Python code.
_ENCODER_BY_CLASS: Final[Dict[type, Encoder]] = {c: REQUEST_ENCODERS[c.method] for c in _CALL_TYPES}


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
        check_request_id(request_id)
    try:
        encoder = _ENCODER_BY_CLASS[call.__class__]
    except KeyError:
        encoder = _encoder_for(call)
    return encoder(call, request_id)


def _encoder_for(call: Any) -> Encoder:
    if not isinstance(call, Call):
        raise TypeError(f"encode_request() needs a Call, not {type(call).__name__}")
    return REQUEST_ENCODERS[call.method]


# --- reply decoding (host side) ----------------------------------------------------

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
        compact = compact_result(line, cls, request_id)
        if compact is not None:
            return compact
    try:
        validate = REPLY_VALIDATORS[cls]
    except KeyError:
        validate = _validator_for(cls)
    try:
        env = validate(line) if len(line) < GC_PAUSE_BYTES else validate_gc_paused(validate, line)
    except ValidationError as exc:
        issues = issues_of(exc)
    else:
        if env["id"] != request_id:
            raise id_mismatch(env["id"], request_id, cls.method, plugin)
        result = env.get("result")
        error = env.get("error")
        if error is None:
            if result is not None:
                return result  # type: ignore[no-any-return]
        elif result is None:
            raise plugin_error(error, cls.method, request_id, plugin)
        raise ambiguous(result is not None, request_id, cls.method, plugin)
    # Raised outside the except block, so the ValidationError (whose text holds
    # input values) is neither __cause__ nor __context__.
    raise diagnose_reply(line, issues, cls.method, request_id, plugin) from None


def _validator_for(cls: Any) -> Validate:
    if not (isinstance(cls, type) and issubclass(cls, Call)) or cls is Call:
        raise TypeError(f"decode_reply() needs a Call subclass or instance, not {cls!r}")
    return REPLY_VALIDATORS.setdefault(cls, reply_validator(cls.result_type))


# --- the plugin side: requests in, replies out -------------------------------------


class _Request(TypedDict):
    jsonrpc: Literal["2.0"]
    id: U64
    method: str
    params: NotRequired[Optional[Dict[str, Any]]]


_validate_request: Final[Validate] = pydantic_core.SchemaValidator(
    TypeAdapter(_Request).core_schema, LINE_CONFIG
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
        issues = issues_of(exc)
    else:
        rid, name = env["id"], env["method"]
        cls = _CALL_BY_METHOD.get(name)
        if cls is None:
            raise MalformedRequest(
                f"Request {rid} asks for the unknown method {clip(name, 80)!r}; this plugin "
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
            issues = issues_of(exc)
        else:
            return rid, call
        raise MalformedRequest(
            f"Request {rid} ({name!r}) has invalid params: {describe_all(issues, 0)}.",
            request_id=rid,
            method=name,
        ) from None
    raise diagnose_request(line, issues) from None


def _res_get(result: Any) -> bytes:
    value = json_str(result.value.get_secret_value(), "GetResult.value")
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
    check_request_id(request_id)
    if not isinstance(result, Result):
        raise TypeError(f"encode_result() needs a Result, not {type(result).__name__}")
    body = _RESULT_ENCODERS.get(result.__class__, _res_model)(result)
    return RESULT_LINE % (request_id, body)

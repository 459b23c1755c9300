"""Golden vectors and error mapping for :mod:`plugin_client.protocol`.

Request lines are checked byte for byte: plugins built on the Rust types are
strict about them (no ``params`` for is_available/list). Reply lines are
written the ways real plugins write them: compact, with the Python reference
plugin's ``", "``/``": "`` spacing, with unknown fields, nulls, absent optional
fields and ``\\r\\n`` endings (the frame reader strips the ``\\n``).
"""

import json
import logging
import traceback
from typing import Any, Dict, List, Optional, Tuple, Type

import pytest
from pydantic import SecretBytes, SecretStr, ValidationError

from plugin_client._wire import plain_result
from plugin_client.errors import (
    AmbiguousReply,
    BadJsonRpcVersion,
    BadReplyId,
    BlankReply,
    InvalidJsonReply,
    InvalidUtf8Reply,
    MalformedReply,
    MalformedRequest,
    PluginClientError,
    PluginError,
    PluginUnsupportedCapability,
    ProtocolError,
    ReplyIdMismatch,
    ReplyShapeError,
    UnsupportedCapability,
)
from plugin_client.protocol import (
    MAX_REQUEST_ID,
    PROTOCOL_VERSION,
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
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
    encode_result,
)

SECRET = "hunter2-TOP-SECRET-7f3a"


def py_line(obj: Any) -> bytes:
    """A reply as the Python reference plugin writes it: json.dumps default spacing."""
    return json.dumps(obj).encode()


# --- the public surface -----------------------------------------------------------


def test_constants_and_enums() -> None:
    assert PROTOCOL_VERSION == "1.1"
    assert MAX_REQUEST_ID == 2**64 - 1
    assert [int(c) for c in Capability] == [1 << i for i in range(9)]
    assert Method.KEY_MATERIAL.value == "secret_source.key_material"
    assert {k.value for k in ErrorKind} == {
        "unavailable",
        "unsupported-capability",
        "bad-reference",
        "needs-credential",
        "other",
    }
    assert AvailabilityStatus("needs-credential") is AvailabilityStatus.NEEDS_CREDENTIAL


def test_unknown_capability_bits_are_kept() -> None:
    init = InitResult(source_name="v", capabilities_bits=0x1FF | 0x400, plugin_version="1")
    caps = init.capabilities
    assert int(caps) == 0x5FF
    assert Capability.KEY_SOURCE in caps and Capability.READ in caps
    assert Capability(0x400) & Capability.READ == 0


@pytest.mark.parametrize(
    "cls, method, capability, result_type",
    [
        (InitCall, Method.INIT, Capability(0), InitResult),
        (IsAvailableCall, Method.IS_AVAILABLE, Capability(0), IsAvailableResult),
        (GetCall, Method.GET, Capability.READ, GetResult),
        (ListCall, Method.LIST, Capability.LIST, ListResult),
        (ValidateCall, Method.VALIDATE, Capability.VALIDATE, ValidateResult),
        (PutCall, Method.PUT, Capability.WRITE, PutResult),
        (DeleteCall, Method.DELETE, Capability.DELETE, DeleteResult),
        (KeyMaterialCall, Method.KEY_MATERIAL, Capability.KEY_SOURCE, KeyMaterialResult),
    ],
)
def test_call_class_attributes(cls: Type[Call], method: Method, capability: Capability, result_type: type) -> None:
    assert cls.method is method
    assert cls.capability == capability
    assert cls.result_type is result_type


def test_calls_are_frozen_and_forbid_unknown_fields() -> None:
    call = GetCall(reference="a")
    with pytest.raises(ValidationError):
        call.reference = "b"
    with pytest.raises(ValidationError):
        GetCall(reference="a", referance="typo")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        GetCall(reference=5)  # type: ignore[arg-type]
    assert InitCall(source_name="v").config == {}
    assert InitCall(source_name="v").protocol_version == "1.1"


def test_results_are_frozen_and_ignore_unknown_fields() -> None:
    res = ValidateResult.model_validate({"ok": True, "future": 1})
    assert res == ValidateResult(ok=True)
    with pytest.raises(ValidationError):
        res.ok = False
    assert PutResult().replaced is False and DeleteResult().existed is False


def test_init_config_must_be_json() -> None:
    for bad in ({"x": float("nan")}, {"x": object()}, {"x": "\ud800"}):
        with pytest.raises(ValidationError):
            InitCall(source_name="v", config=bad)


# --- requests: golden lines ---------------------------------------------------------

REQUESTS: List[Tuple[Call, int, bytes]] = [
    (
        InitCall(source_name="vault", config={"addr": "https://vault:8200", "retries": 3, "tls": None}),
        1,
        b'{"jsonrpc":"2.0","id":1,"method":"secret_source.init","params":{"source_name":"vault",'
        b'"config":{"addr":"https://vault:8200","retries":3,"tls":null},"protocol_version":"1.1"}}\n',
    ),
    (
        InitCall(source_name="vault"),
        1,
        b'{"jsonrpc":"2.0","id":1,"method":"secret_source.init","params":{"source_name":"vault",'
        b'"config":{},"protocol_version":"1.1"}}\n',
    ),
    (IsAvailableCall(), 1, b'{"jsonrpc":"2.0","id":1,"method":"secret_source.is_available"}\n'),
    (
        GetCall(reference="kv/prod/db#password"),
        2,
        b'{"jsonrpc":"2.0","id":2,"method":"secret_source.get","params":{"reference":"kv/prod/db#password"}}\n',
    ),
    (ListCall(), 3, b'{"jsonrpc":"2.0","id":3,"method":"secret_source.list"}\n'),
    (
        ValidateCall(reference="a"),
        4,
        b'{"jsonrpc":"2.0","id":4,"method":"secret_source.validate","params":{"reference":"a"}}\n',
    ),
    (
        PutCall(reference="a", value=SecretStr("s3cr\"et")),
        5,
        b'{"jsonrpc":"2.0","id":5,"method":"secret_source.put","params":{"reference":"a","value":"s3cr\\"et"}}\n',
    ),
    (
        DeleteCall(reference="a"),
        6,
        b'{"jsonrpc":"2.0","id":6,"method":"secret_source.delete","params":{"reference":"a"}}\n',
    ),
    (
        KeyMaterialCall(purpose="disk-encryption"),
        7,
        b'{"jsonrpc":"2.0","id":7,"method":"secret_source.key_material","params":{"purpose":"disk-encryption"}}\n',
    ),
]


@pytest.mark.parametrize("call, rid, expected", REQUESTS, ids=lambda v: getattr(v, "method", None) or "")
def test_request_golden_lines(call: Call, rid: int, expected: bytes) -> None:
    line = encode_request(call, rid)
    assert line == expected
    assert line.count(b"\n") == 1
    assert decode_request(line.rstrip(b"\n")) == (rid, call)


def test_put_accepts_a_plain_str_and_hides_it() -> None:
    call = PutCall(reference="a", value=SECRET)  # type: ignore[arg-type]
    assert SECRET not in repr(call) and SECRET not in str(call)
    assert SECRET.encode() in encode_request(call, 1)


def test_request_non_ascii_and_control_characters() -> None:
    ref = "pässwörd/€/日本\u2028\n\t\"\\\x00"
    line = encode_request(GetCall(reference=ref), 9)
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert "€".encode() in line  # sent as UTF-8, not \\u escapes
    assert json.loads(line)["params"]["reference"] == ref


@pytest.mark.parametrize("rid", [0, 1, 2**32, MAX_REQUEST_ID])
def test_request_id_bounds_accepted(rid: int) -> None:
    line = encode_request(ListCall(), rid)
    assert line == b'{"jsonrpc":"2.0","id":%d,"method":"secret_source.list"}\n' % rid


@pytest.mark.parametrize("rid, exc", [(-1, ValueError), (2**64, ValueError), (10**40, ValueError), (True, TypeError), (1.0, TypeError), ("1", TypeError)])
def test_request_id_out_of_range(rid: Any, exc: Type[Exception]) -> None:
    with pytest.raises(exc):
        encode_request(ListCall(), rid)


def test_request_with_lone_surrogate_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError) as info:
        encode_request(PutCall(reference="a", value=SecretStr(SECRET + "\ud800")), 1)
    assert SECRET not in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None
    with pytest.raises(ValueError):
        encode_request(GetCall(reference="\udc80"), 1)


def test_get_line_matches_encode_request_and_stays_bounded() -> None:
    """PluginClient.get's warm path formats the line itself, from a bounded cache of
    encoded references: same bytes as encode_request, same refusal of what JSON cannot hold."""
    from plugin_client import _wire

    for ref in ("db/password", 'quo"te\\', "ünï/☃", "db/password"):
        for rid in (1, 2**64 - 1):
            assert _wire.get_line(ref, rid) == encode_request(GetCall(reference=ref), rid)
    with pytest.raises(ValueError) as info:
        _wire.get_line("\udc80", 1)
    assert info.value.__context__ is None and info.value.__cause__ is None
    for i in range(_wire.REF_JSON_MAX * 3):
        _wire.get_line(f"ref/{i}", 1)
    assert 0 < len(_wire.REF_JSON) <= _wire.REF_JSON_MAX
    assert _wire.get_line("ref/7", 9) == encode_request(GetCall(reference="ref/7"), 9)


def test_encode_request_rejects_non_calls() -> None:
    with pytest.raises(TypeError):
        encode_request("secret_source.get", 1)  # type: ignore[arg-type]


# --- replies: success -----------------------------------------------------------------

OK_REPLIES: List[Tuple[Type[Call], bytes, Result]] = [
    (
        InitCall,
        b'{"jsonrpc":"2.0","id":1,"result":{"source_name":"vault","capabilities_bits":511,"plugin_version":"0.3.1"}}',
        InitResult(source_name="vault", capabilities_bits=511, plugin_version="0.3.1"),
    ),
    (
        InitCall,
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"source_name": "v", "capabilities_bits": 4294967295, "plugin_version": "x", "vendor": "acme"}}),
        InitResult(source_name="v", capabilities_bits=2**32 - 1, plugin_version="x"),
    ),
    (
        IsAvailableCall,
        b'{"jsonrpc":"2.0","id":1,"result":{"status":"available"}}',
        IsAvailableResult(status=AvailabilityStatus.AVAILABLE),
    ),
    (
        IsAvailableCall,
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"status": "needs-credential", "detail": "run `vault login`"}}),
        IsAvailableResult(status=AvailabilityStatus.NEEDS_CREDENTIAL, detail="run `vault login`"),
    ),
    (
        IsAvailableCall,
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"status": "unavailable", "detail": None}}),
        IsAvailableResult(status=AvailabilityStatus.UNAVAILABLE),
    ),
    (
        GetCall,
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"s3cret"}}',
        GetResult(value=SecretStr("s3cret")),
    ),
    (
        GetCall,
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"value": "s3cret", "lease_seconds": None}}),
        GetResult(value=SecretStr("s3cret")),
    ),
    (
        GetCall,
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"value": "", "lease_seconds": 18446744073709551615}}),
        GetResult(value=SecretStr(""), lease_seconds=2**64 - 1),
    ),
    (
        GetCall,
        b'  {"result": {"lease_seconds": 0, "value": "\\u00e9\xc3\xa9"}, "id": 1, "jsonrpc": "2.0", "extra": [1, {"x": null}]}\t\r',
        GetResult(value=SecretStr("éé"), lease_seconds=0),
    ),
    (
        ListCall,
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"entries": [{"reference": "a"}, {"reference": "b", "display": "B"}, {"reference": "c", "display": None, "kind": "x"}]}}),
        ListResult(entries=[ListEntry(reference="a"), ListEntry(reference="b", display="B"), ListEntry(reference="c")]),
    ),
    (ListCall, b'{"jsonrpc":"2.0","id":1,"result":{"entries":[]}}', ListResult(entries=[])),
    (ValidateCall, b'{"jsonrpc":"2.0","id":1,"result":{"ok":false}}', ValidateResult(ok=False)),
    (PutCall, b'{"jsonrpc":"2.0","id":1,"result":{}}', PutResult(replaced=False)),
    (PutCall, py_line({"jsonrpc": "2.0", "id": 1, "result": {"replaced": True}}), PutResult(replaced=True)),
    (DeleteCall, b'{"jsonrpc":"2.0","id":1,"result":{}}', DeleteResult(existed=False)),
    (DeleteCall, b'{"jsonrpc":"2.0","id":1,"result":{"existed":true}}', DeleteResult(existed=True)),
    (
        KeyMaterialCall,
        b'{"jsonrpc":"2.0","id":1,"result":{"material_b64":"AAECA/7/"}}',
        KeyMaterialResult(material=SecretBytes(b"\x00\x01\x02\x03\xfe\xff")),
    ),
    (KeyMaterialCall, b'{"jsonrpc":"2.0","id":1,"result":{"material_b64":""}}', KeyMaterialResult(material=SecretBytes(b""))),
    (
        KeyMaterialCall,
        # "material" is not a wire field: ignored like any unknown field
        b'{"jsonrpc":"2.0","id":1,"result":{"material_b64":"AQ==","material":"Zm9v"}}',
        KeyMaterialResult(material=SecretBytes(b"\x01")),
    ),
    (
        GetCall,
        # null and absent are the same for the other member, as for serde's Option
        b'{"jsonrpc":"2.0","id":1,"error":null,"result":{"value":"v"}}',
        GetResult(value=SecretStr("v")),
    ),
]


@pytest.mark.parametrize("cls, line, expected", OK_REPLIES)
def test_reply_golden_success(cls: Type[Call], line: bytes, expected: Result) -> None:
    got = decode_reply(line, cls, 1, plugin="vault")
    assert type(got) is cls.result_type
    assert got == expected


def test_reply_accepts_call_instance_and_class() -> None:
    line = b'{"jsonrpc":"2.0","id":42,"result":{"ok":true}}'
    assert decode_reply(line, ValidateCall(reference="a"), 42) == decode_reply(line, ValidateCall, 42)


def test_reply_secrets_stay_hidden() -> None:
    got = decode_reply(py_line({"jsonrpc": "2.0", "id": 1, "result": {"value": SECRET}}), GetCall, 1)
    assert got.value.get_secret_value() == SECRET
    assert SECRET not in repr(got) and SECRET not in str(got) and SECRET not in got.model_dump_json()
    key = decode_reply(b'{"jsonrpc":"2.0","id":1,"result":{"material_b64":"c2VjcmV0LWtleQ=="}}', KeyMaterialCall, 1)
    assert key.material.get_secret_value() == b"secret-key"
    assert "secret-key" not in repr(key) and "c2VjcmV0LWtleQ" not in repr(key)


def test_key_material_python_construction() -> None:
    assert KeyMaterialResult(material_b64="AQI=") == KeyMaterialResult(material=SecretBytes(b"\x01\x02"))  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        KeyMaterialResult(material=SecretBytes(b"\x01"), material_b64="AQI=")  # type: ignore[call-arg]


# --- replies: the plugin's own errors -----------------------------------------------


def _error(err: Any, rid: int = 1) -> bytes:
    return py_line({"jsonrpc": "2.0", "id": rid, "error": err})


@pytest.mark.parametrize(
    "err, attrs",
    [
        ({"kind": "unavailable", "detail": "vault is sealed"}, {"kind": "unavailable", "detail": "vault is sealed"}),
        ({"kind": "needs-credential", "detail": "run `vault login`"}, {"kind": "needs-credential", "detail": "run `vault login`"}),
        (
            {"kind": "bad-reference", "reference": "kv/x", "reason": "not found"},
            {"kind": "bad-reference", "reference": "kv/x", "reason": "not found", "detail": None},
        ),
        ({"kind": "other", "detail": "disk full"}, {"kind": "other", "detail": "disk full", "code": None}),
        ({"kind": "other", "detail": None}, {"kind": "other", "detail": None}),
        ({"kind": "unavailable"}, {"kind": "unavailable", "detail": None}),
        ({"kind": "unavailable", "detail": 42}, {"kind": "unavailable", "detail": None}),
        # foreign shapes
        ({"code": -32601, "message": "Method not found"}, {"kind": "other", "detail": "Method not found", "code": -32601}),
        ({"code": -32000, "message": "boom", "data": {"trace": "..."}}, {"kind": "other", "detail": "boom", "code": -32000}),
        ({"code": "E42", "message": "boom"}, {"kind": "other", "detail": "boom", "code": None}),
        ({"code": True}, {"kind": "other", "detail": None, "code": None}),
        ({"kind": "quota-exceeded", "detail": "try tomorrow"}, {"kind": "other", "detail": "try tomorrow"}),
        ({"kind": "quota-exceeded", "message": "try tomorrow", "code": 7}, {"kind": "other", "detail": "try tomorrow", "code": 7}),
        ({"kind": 5}, {"kind": "other"}),
        ({}, {"kind": "other"}),
        ({"whatever": [1, 2]}, {"kind": "other"}),
    ],
)
def test_error_replies(err: Dict[str, Any], attrs: Dict[str, Any]) -> None:
    with pytest.raises(PluginError) as info:
        decode_reply(_error(err), GetCall, 1, plugin="vault")
    exc = info.value
    assert type(exc) is PluginError
    for name, value in attrs.items():
        assert getattr(exc, name) == value, name
    assert exc.plugin == "vault" and "Plugin 'vault'" in str(exc)
    assert exc.kind in {k.value for k in ErrorKind}
    assert exc.__cause__ is None and exc.__context__ is None


def test_unknown_kind_is_named_in_the_message() -> None:
    with pytest.raises(PluginError) as info:
        decode_reply(_error({"kind": "quota-exceeded"}), GetCall, 1, plugin="vault")
    assert "'quota-exceeded'" in str(info.value)


def test_foreign_error_shows_message_and_code() -> None:
    with pytest.raises(PluginError) as info:
        decode_reply(_error({"code": -32601, "message": "Method not found"}), GetCall, 1, plugin="vault")
    assert "-32601" in str(info.value) and "Method not found" in str(info.value)


def test_unsupported_capability_is_both_error_types() -> None:
    with pytest.raises(PluginUnsupportedCapability) as info:
        decode_reply(_error({"kind": "unsupported-capability", "capability": "WRITE"}), PutCall, 1, plugin="vault")
    exc = info.value
    assert isinstance(exc, PluginError) and isinstance(exc, UnsupportedCapability)
    assert exc.kind == "unsupported-capability" and exc.capability == "WRITE" and exc.plugin == "vault"
    with pytest.raises(PluginUnsupportedCapability) as info:
        decode_reply(_error({"kind": "unsupported-capability"}), PutCall, 1)
    assert info.value.capability == "secret_source.put"
    assert "The plugin" in str(info.value)


def test_error_detail_is_clipped_in_the_message() -> None:
    long = "x" * 5000
    with pytest.raises(PluginError) as info:
        decode_reply(_error({"kind": "other", "detail": long}), GetCall, 1)
    assert info.value.detail == long
    assert len(str(info.value)) < 400


# --- replies: broken ones -------------------------------------------------------------

_GOOD = {"jsonrpc": "2.0", "id": 1, "result": {"value": SECRET}}


def _without(key: str) -> Dict[str, Any]:
    return {k: v for k, v in _GOOD.items() if k != key}


MALFORMED: List[Tuple[str, bytes, Type[PluginClientError]]] = [
    ("empty", b"", BlankReply),
    ("spaces", b"   ", BlankReply),
    ("cr", b"\r", BlankReply),
    ("tabs", b"\t \t\r", BlankReply),
    ("bad utf8 outside strings", b"\xff\xfe{}", InvalidUtf8Reply),
    ("bad utf8 in the secret", b'{"jsonrpc":"2.0","id":1,"result":{"value":"' + SECRET.encode() + b'\xc3\x28"}}', InvalidUtf8Reply),
    ("bad utf8 in an unknown field", b'{"jsonrpc":"2.0","id":1,"result":{"value":"' + SECRET.encode() + b'"},"x":"\xed\xa0\x80"}', InvalidUtf8Reply),
    ("not json", b"ERROR: " + SECRET.encode(), InvalidJsonReply),
    ("log line", b"2024-01-01 INFO started", InvalidJsonReply),
    ("truncated", py_line(_GOOD)[:-3], InvalidJsonReply),
    ("trailing garbage", py_line(_GOOD) + b" x", InvalidJsonReply),
    ("two objects", py_line(_GOOD) + py_line(_GOOD), InvalidJsonReply),
    ("single quotes", b"{'jsonrpc': '2.0'}", InvalidJsonReply),
    ("lone surrogate escape", b'{"jsonrpc":"2.0","id":1,"result":{"value":"\\ud800' + SECRET.encode() + b'"}}', InvalidJsonReply),
    ("array", py_line([_GOOD]), InvalidJsonReply),
    ("string", py_line(SECRET), InvalidJsonReply),
    ("number", b"1", InvalidJsonReply),
    ("null", b"null", InvalidJsonReply),
    ("no jsonrpc", py_line(_without("jsonrpc")), BadJsonRpcVersion),
    ("jsonrpc 1.0", py_line({**_GOOD, "jsonrpc": "1.0"}), BadJsonRpcVersion),
    ("jsonrpc number", py_line({**_GOOD, "jsonrpc": 2.0}), BadJsonRpcVersion),
    ("jsonrpc null", py_line({**_GOOD, "jsonrpc": None}), BadJsonRpcVersion),
    ("no id", py_line(_without("id")), BadReplyId),
    ("id null", py_line({**_GOOD, "id": None}), BadReplyId),
    ("id string", py_line({**_GOOD, "id": "1"}), BadReplyId),
    ("id float", py_line({**_GOOD, "id": 1.0}), BadReplyId),
    ("id exponent", b'{"jsonrpc":"2.0","id":1e0,"result":{"value":"x"}}', BadReplyId),
    ("id true", py_line({**_GOOD, "id": True}), BadReplyId),
    ("id negative", py_line({**_GOOD, "id": -1}), BadReplyId),
    ("id 2**64", py_line({**_GOOD, "id": 2**64}), BadReplyId),
    ("id huge", py_line({**_GOOD, "id": 10**400}), BadReplyId),
    ("id object", py_line({**_GOOD, "id": {"n": 1}}), BadReplyId),
    ("both", py_line({**_GOOD, "error": {"kind": "other", "detail": "d"}}), AmbiguousReply),
    ("neither", py_line(_without("result")), AmbiguousReply),
    ("both null", py_line({**_without("result"), "result": None, "error": None}), AmbiguousReply),
    ("result array", py_line({**_GOOD, "result": [SECRET]}), ReplyShapeError),
    ("result string", py_line({**_GOOD, "result": SECRET}), ReplyShapeError),
    ("value missing", py_line({**_GOOD, "result": {"valu": SECRET}}), ReplyShapeError),
    ("value not a string", py_line({**_GOOD, "result": {"value": [SECRET]}}), ReplyShapeError),
    ("lease string", py_line({**_GOOD, "result": {"value": SECRET, "lease_seconds": "300"}}), ReplyShapeError),
    ("lease float", py_line({**_GOOD, "result": {"value": SECRET, "lease_seconds": 1.5}}), ReplyShapeError),
    ("lease negative", py_line({**_GOOD, "result": {"value": SECRET, "lease_seconds": -1}}), ReplyShapeError),
    ("lease too big", py_line({**_GOOD, "result": {"value": SECRET, "lease_seconds": 2**64}}), ReplyShapeError),
    ("list result for get", py_line({**_GOOD, "result": {"entries": [{"reference": SECRET}]}}), ReplyShapeError),
    ("error string", py_line({**_without("result"), "error": SECRET}), ReplyShapeError),
    ("error array", py_line({**_without("result"), "error": [SECRET]}), ReplyShapeError),
    ("error number", py_line({**_without("result"), "error": -32000}), ReplyShapeError),
]


@pytest.mark.parametrize("name, line, exc_type", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_replies(name: str, line: bytes, exc_type: Type[PluginClientError]) -> None:
    with pytest.raises(exc_type) as info:
        decode_reply(line, GetCall, 1, plugin="vault")
    exc = info.value
    assert type(exc) is exc_type
    assert isinstance(exc, MalformedReply)
    assert exc.plugin == "vault"
    assert str(exc).startswith("Plugin 'vault' ")
    assert "request 1 ('secret_source.get')" in str(exc)
    _assert_no_leak(exc, SECRET)


def test_malformed_reply_without_plugin_name() -> None:
    with pytest.raises(BlankReply) as info:
        decode_reply(b"", GetCall, 3)
    assert info.value.plugin is None and str(info.value).startswith("The plugin ")


@pytest.mark.parametrize(
    "cls, result",
    [
        (IsAvailableCall, {"status": "degraded"}),
        (IsAvailableCall, {"status": None}),
        (InitCall, {"source_name": "v", "capabilities_bits": 2**32, "plugin_version": "1"}),
        (InitCall, {"source_name": "v", "capabilities_bits": -1, "plugin_version": "1"}),
        (InitCall, {"source_name": "v", "capabilities_bits": "0x1ff", "plugin_version": "1"}),
        (InitCall, {"source_name": "v", "capabilities_bits": 3}),
        (ListCall, {"entries": [{"reference": "a"}, {"display": "no reference"}]}),
        (ListCall, {"entries": [{"reference": 5}]}),
        (ListCall, {"entries": {"reference": "a"}}),
        (ListCall, {"value": "a get result"}),
        (ValidateCall, {"ok": "true"}),
        (ValidateCall, {"ok": 1}),
        (ValidateCall, {}),
        (PutCall, {"replaced": "no"}),
        (PutCall, {"replaced": None}),
        (DeleteCall, {"existed": 0}),
        (KeyMaterialCall, {"material_b64": "not base64!"}),
        (KeyMaterialCall, {"material_b64": "AAE"}),  # missing padding
        (KeyMaterialCall, {"material_b64": "AA-_"}),  # urlsafe alphabet
        (KeyMaterialCall, {"material_b64": "AA\nAA=="}),
        (KeyMaterialCall, {"material_b64": 5}),
        (KeyMaterialCall, {"material": "AAEC"}),
        (GetCall, {"status": "available"}),
    ],
)
def test_wrong_shape_for_method(cls: Type[Call], result: Dict[str, Any]) -> None:
    with pytest.raises(ReplyShapeError) as info:
        decode_reply(py_line({"jsonrpc": "2.0", "id": 5, "result": result}), cls, 5, plugin="vault")
    assert cls.method.value in str(info.value)


def test_shape_error_names_the_fields() -> None:
    line = py_line({"jsonrpc": "2.0", "id": 1, "result": {"entries": [{"reference": "a"}, {"reference": 5}, {"display": "d"}]}})
    with pytest.raises(ReplyShapeError) as info:
        decode_reply(line, ListCall, 1)
    msg = str(info.value)
    assert "'entries[1].reference' must be a string, not an integer" in msg
    assert "'entries[2].reference' is missing" in msg
    with pytest.raises(ReplyShapeError) as info:
        decode_reply(b'{"jsonrpc":"2.0","id":1,"result":{}}', KeyMaterialCall, 1)
    assert "'material_b64' is missing" in str(info.value)


@pytest.mark.parametrize("got", [0, 2, 1000, MAX_REQUEST_ID])
def test_reply_id_mismatch(got: int) -> None:
    line = py_line({"jsonrpc": "2.0", "id": got, "result": {"value": SECRET}})
    with pytest.raises(ReplyIdMismatch) as info:
        decode_reply(line, GetCall, 1, plugin="vault")
    exc = info.value
    assert (exc.expected, exc.got) == (1, got)
    assert isinstance(exc, ProtocolError) and not isinstance(exc, MalformedReply)
    assert f"Plugin 'vault' sent a reply with id {got} while request 1" in str(exc)
    _assert_no_leak(exc, SECRET)


def test_id_mismatch_comes_before_shape_and_ambiguity() -> None:
    with pytest.raises(ReplyIdMismatch):
        decode_reply(py_line({"jsonrpc": "2.0", "id": 2, "result": {"nope": 1}}), GetCall, 1)
    with pytest.raises(ReplyIdMismatch):
        decode_reply(py_line({"jsonrpc": "2.0", "id": 2}), GetCall, 1)
    with pytest.raises(ReplyIdMismatch):
        decode_reply(py_line({"jsonrpc": "2.0", "id": 2, "error": {"kind": "other", "detail": "x"}}), GetCall, 1)
    with pytest.raises(BadJsonRpcVersion):  # the version is checked before the id
        decode_reply(py_line({"jsonrpc": "1.0", "id": -1}), GetCall, 1)


@pytest.mark.parametrize("rid", [0, MAX_REQUEST_ID])
def test_reply_id_bounds(rid: int) -> None:
    line = b'{"jsonrpc":"2.0","id":%d,"result":{"ok":true}}' % rid
    assert decode_reply(line, ValidateCall, rid) == ValidateResult(ok=True)


def test_decode_reply_rejects_non_calls() -> None:
    with pytest.raises(TypeError):
        decode_reply(b"{}", str, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decode_reply(b"{}", Call, 1)


def test_large_list_reply_leaves_gc_as_it_was() -> None:
    import gc

    entries = [{"reference": f"r/{i}", "display": None if i % 2 else f"R {i}"} for i in range(5000)]
    line = py_line({"jsonrpc": "2.0", "id": 1, "result": {"entries": entries}})
    assert len(line) > 64 * 1024
    assert gc.isenabled()
    got = decode_reply(line, ListCall, 1)
    assert len(got.entries) == 5000 and got.entries[2].display == "R 2" and got.entries[3].display is None
    assert gc.isenabled()
    with pytest.raises(ReplyShapeError):
        decode_reply(line.replace(b'"r/7"', b"7"), ListCall, 1)
    assert gc.isenabled()
    gc.disable()
    try:
        decode_reply(line, ListCall, 1)
        assert not gc.isenabled()
    finally:
        gc.enable()


# --- secrecy -------------------------------------------------------------------------


def _assert_no_leak(exc: BaseException, *secrets: str) -> None:
    """No text reachable from the exception holds a secret."""
    assert exc.__cause__ is None
    assert exc.__context__ is None
    texts = [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
    texts += [repr(v) for v in vars(exc).values()]
    for secret in secrets:
        for text in texts:
            assert secret not in text
            assert repr(secret)[1:-1] not in text


SECRET_CARRIERS: List[Tuple[Type[Call], bytes]] = [
    (cls, line)
    for cls in (GetCall, ListCall, KeyMaterialCall, InitCall, IsAvailableCall, ValidateCall)
    for line in [
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"value": SECRET, "lease_seconds": SECRET}}),
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"value": SECRET, "lease_seconds": -1}}),
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"value": SECRET}, "error": {"detail": SECRET}}),
        py_line({"jsonrpc": "2.0", "id": SECRET, "result": {"value": SECRET}}),
        py_line({"jsonrpc": SECRET, "id": 1, "result": {"value": SECRET}}),
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"entries": [{"reference": SECRET, "display": 5}]}}),
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"status": SECRET}}),
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"material_b64": SECRET}}),
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"material_b64": SECRET + "==", "material": SECRET}}),
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"source_name": SECRET, "capabilities_bits": SECRET}}),
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"ok": SECRET}}),
        py_line({"jsonrpc": "2.0", "id": 1, "result": [SECRET], SECRET: SECRET}),
        py_line({"jsonrpc": "2.0", "id": 1, "error": SECRET}),
        py_line({"jsonrpc": "2.0", "id": 2, "result": {"value": SECRET}}),
        py_line({"jsonrpc": "2.0", "id": 1, "result": {"value": SECRET}})[:-1],
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"' + SECRET.encode() + b'\xff"}}',
        SECRET.encode(),
    ]
]


@pytest.mark.parametrize("cls, line", SECRET_CARRIERS)
def test_no_secret_in_any_error(cls: Type[Call], line: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    try:
        decode_reply(line, cls, 1, plugin="vault")
    except PluginClientError as exc:
        _assert_no_leak(exc, SECRET)
    else:  # a few lines are valid replies for some methods; their repr must still hide it
        pass
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_no_secret_when_raised_inside_an_except_block() -> None:
    """Raised while the caller handles another exception, ours chains only that one."""
    line = py_line({"jsonrpc": "2.0", "id": 1, "result": {"value": SECRET, "lease_seconds": "x"}})
    try:
        try:
            raise KeyError("outer")
        except KeyError:
            decode_reply(line, GetCall, 1)
    except ReplyShapeError as exc:
        assert isinstance(exc.__context__, KeyError)
        assert exc.__suppress_context__
        assert SECRET not in "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def test_no_secret_in_direct_model_validation_errors() -> None:
    with pytest.raises(ValidationError) as info:
        GetResult.model_validate({"value": SECRET, "lease_seconds": SECRET})
    assert SECRET not in str(info.value)
    with pytest.raises(ValidationError) as info2:
        KeyMaterialResult.model_validate({"material_b64": SECRET})
    assert SECRET not in str(info2.value)
    with pytest.raises(ValidationError) as info3:
        PutCall(reference="r", value=SECRET, extra=SECRET)  # type: ignore[call-arg, arg-type]
    assert SECRET not in str(info3.value)


# --- the plugin side ---------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"secret_source.is_available"}', IsAvailableCall()),
        (b'{"jsonrpc":"2.0","id":1,"method":"secret_source.is_available","params":{}}', IsAvailableCall()),
        (b'{"jsonrpc":"2.0","id":1,"method":"secret_source.list","params":null}', ListCall()),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "secret_source.list", "params": {}}\r', ListCall()),
        (b'{"method":"secret_source.get","params":{"reference":"a","since":"1.2"},"id":1,"jsonrpc":"2.0","x":1}', GetCall(reference="a")),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"secret_source.init","params":{"source_name":"v","config":{"a":[1,2.5,null,{"b":true}]},"protocol_version":"1.0"}}',
            InitCall(source_name="v", config={"a": [1, 2.5, None, {"b": True}]}, protocol_version="1.0"),
        ),
    ],
)
def test_decode_request_lenient(line: bytes, expected: Call) -> None:
    assert decode_request(line) == (1, expected)


@pytest.mark.parametrize(
    "line, request_id, method",
    [
        (b"", None, None),
        (b"\xff", None, None),
        (b"nope", None, None),
        (b"[]", None, None),
        (b'{"id":1,"method":"secret_source.get","params":{"reference":"a"}}', 1, "secret_source.get"),
        (b'{"jsonrpc":"2.0","method":"secret_source.get","params":{"reference":"a"}}', None, "secret_source.get"),
        (b'{"jsonrpc":"2.0","id":-1,"method":"secret_source.get","params":{"reference":"a"}}', None, "secret_source.get"),
        (b'{"jsonrpc":"2.0","id":7,"method":"secret_source.nope"}', 7, "secret_source.nope"),
        (b'{"jsonrpc":"2.0","id":7,"method":7}', 7, None),
        (b'{"jsonrpc":"2.0","id":7,"method":"secret_source.get"}', 7, "secret_source.get"),
        (b'{"jsonrpc":"2.0","id":7,"method":"secret_source.get","params":{}}', 7, "secret_source.get"),
        (b'{"jsonrpc":"2.0","id":7,"method":"secret_source.get","params":[]}', 7, "secret_source.get"),
        (b'{"jsonrpc":"2.0","id":7,"method":"secret_source.put","params":{"reference":"a","value":5}}', 7, "secret_source.put"),
        (b'{"jsonrpc":"2.0","id":7,"method":"secret_source.init","params":{"source_name":"v","config":[]}}', 7, "secret_source.init"),
    ],
)
def test_decode_request_errors(line: bytes, request_id: Optional[int], method: Optional[str]) -> None:
    with pytest.raises(MalformedRequest) as info:
        decode_request(line)
    exc = info.value
    assert isinstance(exc, ProtocolError)
    assert (exc.request_id, exc.method) == (request_id, method)
    assert exc.__cause__ is None and exc.__context__ is None


def test_decode_request_hides_put_value() -> None:
    line = py_line({"jsonrpc": "2.0", "id": 1, "method": "secret_source.put", "params": {"reference": 5, "value": SECRET}})
    with pytest.raises(MalformedRequest) as info:
        decode_request(line)
    _assert_no_leak(info.value, SECRET)
    rid, call = decode_request(encode_request(PutCall(reference="r", value=SecretStr(SECRET)), 3))
    assert rid == 3 and SECRET not in repr(call)


@pytest.mark.parametrize(
    "result, expected",
    [
        (InitResult(source_name="v", capabilities_bits=Capability.READ | Capability.LIST, plugin_version="1.0"),
         b'{"source_name":"v","capabilities_bits":3,"plugin_version":"1.0"}'),
        (IsAvailableResult(status=AvailabilityStatus.AVAILABLE), b'{"status":"available"}'),
        (IsAvailableResult(status=AvailabilityStatus.NEEDS_CREDENTIAL, detail="log in"), b'{"status":"needs-credential","detail":"log in"}'),
        (GetResult(value=SecretStr("s")), b'{"value":"s"}'),
        (GetResult(value=SecretStr("s"), lease_seconds=60), b'{"value":"s","lease_seconds":60}'),
        (ListResult(entries=[ListEntry(reference="a"), ListEntry(reference="b", display="B")]),
         b'{"entries":[{"reference":"a"},{"reference":"b","display":"B"}]}'),
        (ValidateResult(ok=True), b'{"ok":true}'),
        (PutResult(), b'{"replaced":false}'),
        (DeleteResult(existed=True), b'{"existed":true}'),
        (KeyMaterialResult(material=SecretBytes(b"\x00\xff")), b'{"material_b64":"AP8="}'),
    ],
)
def test_encode_result_golden(result: Result, expected: bytes) -> None:
    line = encode_result(9, result)
    assert line == b'{"jsonrpc":"2.0","id":9,"result":' + expected + b"}\n"
    assert decode_reply(line.rstrip(b"\n"), _CALL_FOR[type(result)], 9) == result


_CALL_FOR: Dict[type, Type[Call]] = {
    InitResult: InitCall,
    IsAvailableResult: IsAvailableCall,
    GetResult: GetCall,
    ListResult: ListCall,
    ValidateResult: ValidateCall,
    PutResult: PutCall,
    DeleteResult: DeleteCall,
    KeyMaterialResult: KeyMaterialCall,
}


def test_encode_result_checks() -> None:
    with pytest.raises(ValueError):
        encode_result(-1, PutResult())
    with pytest.raises(TypeError):
        encode_result(1, {"ok": True})  # type: ignore[arg-type]
    with pytest.raises(ValueError) as info:
        encode_result(1, GetResult(value=SecretStr(SECRET + "\ud800")))
    _assert_no_leak(info.value, SECRET)


@pytest.mark.parametrize(
    "kind, fields, expected",
    [
        ("unavailable", {"detail": "down"}, b'{"kind":"unavailable","detail":"down"}'),
        (ErrorKind.UNSUPPORTED_CAPABILITY, {"capability": "WRITE"}, b'{"kind":"unsupported-capability","capability":"WRITE"}'),
        ("bad-reference", {"reason": "not found", "reference": "a"}, b'{"kind":"bad-reference","reference":"a","reason":"not found"}'),
        (ErrorKind.NEEDS_CREDENTIAL, {"detail": "sign in"}, b'{"kind":"needs-credential","detail":"sign in"}'),
        ("other", {"detail": "\u00e9"}, b'{"kind":"other","detail":"\xc3\xa9"}'),
    ],
)
def test_encode_error_golden(kind: Any, fields: Dict[str, str], expected: bytes) -> None:
    line = encode_error(4, kind, **fields)
    assert line == b'{"jsonrpc":"2.0","id":4,"error":' + expected + b"}\n"
    with pytest.raises(PluginError) as info:
        decode_reply(line.rstrip(b"\n"), GetCall, 4)
    assert info.value.kind == ErrorKind(kind).value
    for name, value in fields.items():
        assert getattr(info.value, name) == value


@pytest.mark.parametrize(
    "kind, fields, exc",
    [
        ("exploded", {"detail": "x"}, ValueError),
        ("other", {}, TypeError),
        ("other", {"detail": None}, TypeError),
        ("bad-reference", {"reference": "a"}, TypeError),
        ("other", {"detail": "x", "reason": "y"}, TypeError),
        ("other", {"detail": 5}, TypeError),
        ("other", {"detail": "\ud800"}, ValueError),
    ],
)
def test_encode_error_checks(kind: str, fields: Dict[str, Any], exc: Type[Exception]) -> None:
    with pytest.raises(exc):
        encode_error(1, kind, **fields)


@pytest.mark.parametrize(
    "line, plain",
    [
        (b'{"jsonrpc":"2.0","id":7,"result":{"value":"v","lease_seconds":5}}', True),
        (b'{"jsonrpc":"2.0","id":7,"result":{"value":"v"},"error":null,"extra":1}', True),
        (b'{"jsonrpc":"2.0","id":8,"result":{"value":"v"}}', False),  # another id
        (b'{"jsonrpc":"2.0","id":7,"error":{"kind":"unavailable","detail":"d"}}', False),
        (b'{"jsonrpc":"2.0","id":7,"result":{"value":"v"},"error":{"kind":"other"}}', False),
        (b'{"jsonrpc":"2.0","id":7}', False),
        (b'{"jsonrpc":"1.0","id":7,"result":{"value":"v"}}', False),
        (b'{"jsonrpc":"2.0","id":7,"result":{"value":3}}', False),
        (b"not json", False),
        (b'{"jsonrpc":"2.0","id":7,"result":{"value":"' + b"x" * 70_000 + b'"}}', False),  # decode_reply's (GC pause)
    ],
)
def test_plain_result_takes_only_plain_successes(line: bytes, plain: bool) -> None:
    """The warm path's decode: a plain success gives what decode_reply gives; anything
    else is None, and decode_reply then says what the reply is."""
    result = plain_result(line, GetCall, 7)
    if plain:
        assert result == decode_reply(line, GetCall, 7)
    else:
        assert result is None
        if len(line) >= 65536:
            assert decode_reply(line, GetCall, 7).value.get_secret_value() == "x" * 70_000
        else:
            with pytest.raises(PluginClientError):
                decode_reply(line, GetCall, 7)


def test_plain_result_of_an_unknown_call_type_is_none() -> None:
    assert plain_result(b'{"jsonrpc":"2.0","id":1,"result":{}}', int, 1) is None

"""Hypothesis round trips and robustness for :mod:`plugin_client.protocol`.

* every call: ``encode_request`` -> ``decode_request`` gives an equal call;
* every result: ``encode_result`` -> ``decode_reply`` gives an equal result
  (secrets compared through ``get_secret_value()``);
* the compact fast path (``split_result``, then the result alone) decodes any
  compact line, under any id, exactly as the envelope's validation does;
* every error kind: ``encode_error`` -> ``decode_reply`` raises the same error;
* ``decode_reply`` on arbitrary bytes or JSON raises only plugin-client errors,
  and none of them shows a secret planted in the reply.
"""

import json
import traceback
from typing import Any, Dict, Type

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretBytes, SecretStr, ValidationError

from plugin_client._wire import REPLY_VALIDATORS, init_line, init_params, plain_result
from plugin_client.errors import PluginClientError, PluginError
from plugin_client.protocol import (
    MAX_REQUEST_ID,
    AvailabilityStatus,
    Call,
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

# Text a JSON line can carry: anything but lone surrogates (which UTF-8 cannot hold).
text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
ids = st.integers(min_value=0, max_value=MAX_REQUEST_ID)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)

calls = st.one_of(
    st.builds(InitCall, source_name=text, config=st.dictionaries(text, json_values, max_size=4), protocol_version=text),
    st.just(IsAvailableCall()),
    st.builds(GetCall, reference=text),
    st.just(ListCall()),
    st.builds(ValidateCall, reference=text),
    st.builds(PutCall, reference=text, value=text.map(SecretStr)),
    st.builds(DeleteCall, reference=text),
    st.builds(KeyMaterialCall, purpose=text),
)

results = st.one_of(
    st.builds(InitResult, source_name=text, capabilities_bits=st.integers(0, 2**32 - 1), plugin_version=text),
    st.builds(IsAvailableResult, status=st.sampled_from(AvailabilityStatus), detail=st.none() | text),
    st.builds(GetResult, value=text.map(SecretStr), lease_seconds=st.none() | ids),
    st.builds(
        ListResult,
        entries=st.lists(st.builds(ListEntry, reference=text, display=st.none() | text), max_size=8),
    ),
    st.builds(ValidateResult, ok=st.booleans()),
    st.builds(PutResult, replaced=st.booleans()),
    st.builds(DeleteResult, existed=st.booleans()),
    st.builds(KeyMaterialResult, material=st.binary(max_size=64).map(SecretBytes)),
)

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


def _secrets(obj: Any) -> Dict[str, Any]:
    out = {}
    for name in type(obj).model_fields:
        value = getattr(obj, name)
        if isinstance(value, (SecretStr, SecretBytes)):
            out[name] = value.get_secret_value()
    return out


@given(call=calls, rid=ids)
def test_call_round_trip(call: Call, rid: int) -> None:
    line = encode_request(call, rid)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    obj = json.loads(line)
    assert obj["jsonrpc"] == "2.0" and obj["id"] == rid and obj["method"] == call.method.value
    assert ("params" in obj) == (type(call) not in (IsAvailableCall, ListCall))
    got_id, got = decode_request(line[:-1])
    assert got_id == rid
    assert type(got) is type(call)
    assert got == call
    assert _secrets(got) == _secrets(call)


@given(result=results, rid=ids, crlf=st.booleans())
def test_result_round_trip(result: Result, rid: int, crlf: bool) -> None:
    line = encode_result(rid, result)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    frame = line[:-1] + (b"\r" if crlf else b"")
    got = decode_reply(frame, _CALL_FOR[type(result)], rid, plugin="p")
    assert type(got) is type(result)
    assert got == result
    assert _secrets(got) == _secrets(result)


def _envelope_decode(line: bytes, cls: Type[Call], sent: int) -> Any:
    """The reference: the envelope's one-pass validation alone (the decode before
    the compact fast path), giving the result of a plain success, else None."""
    try:
        env = REPLY_VALIDATORS[cls](line)
    except ValidationError:
        return None
    if env["id"] == sent and env.get("error") is None:
        return env.get("result")
    return None


@given(result=results, rid=ids)
def test_compact_decode_round_trip(result: Result, rid: int) -> None:
    """The SDK's line through the compact fast path (the core's split_result head
    test, then the result alone) is the result sent, as the envelope decodes it."""
    frame = encode_result(rid, result)[:-1]
    cls = _CALL_FOR[type(result)]
    got = plain_result(frame, cls, rid)
    assert type(got) is type(result) and got == result and _secrets(got) == _secrets(result)
    assert got == _envelope_decode(frame, cls, rid)


# What may follow a compact reply's result: nothing, members decode_reply
# accepts or refuses, and bytes that are not JSON at all.
tails = st.sampled_from(
    [b"", b',"error":null', b',"error":{"kind":"other","detail":"d"}', b',"x":1', b",", b"}", b" ", b'"']
)


_HEAD_1 = len(b'{"jsonrpc":"2.0","id":1,"result":')
# (result bytes, call class): a result of the class's own type (so the line is
# often a plain success), or any JSON value under any class.
bodies = results.map(lambda r: (encode_result(1, r)[_HEAD_1:-2], _CALL_FOR[type(r)])) | st.tuples(
    json_values.map(lambda v: json.dumps(v, separators=(",", ":")).encode()),
    st.sampled_from(list(_CALL_FOR.values())),
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(
    body_cls=bodies,
    tail=st.just(b"") | tails,
    rid=ids,
    sent=st.none() | ids,
)
def test_compact_decode_is_the_envelope_decode(body_cls: Any, tail: bytes, rid: int, sent: Any) -> None:
    """On compact lines with any result and anything after it, under the id sent
    (``sent`` None) or another, the fast path changes nothing: the warm decode
    is the envelope's, and decode_reply gives that result (or raises where
    there is none)."""
    body, cls = body_cls
    sent = rid if sent is None else sent
    line = b'{"jsonrpc":"2.0","id":%d,"result":%b%b}' % (rid, body, tail)
    want = _envelope_decode(line, cls, sent)
    got = plain_result(line, cls, sent)
    assert type(got) is type(want) and got == want
    if want is not None:
        assert _secrets(got) == _secrets(want)
        assert decode_reply(line, cls, sent) == want
    else:
        with pytest.raises(PluginClientError):
            decode_reply(line, cls, sent)


@given(result=results, rid=ids)
def test_result_survives_python_reference_spacing(result: Result, rid: int) -> None:
    """The same reply re-written by json.dumps (", " and ": ", ASCII escapes) decodes the same."""
    line = encode_result(rid, result)
    respaced = json.dumps(json.loads(line)).encode()
    assert decode_reply(respaced, _CALL_FOR[type(result)], rid) == result


@given(
    rid=ids,
    kind=st.sampled_from(ErrorKind),
    a=text,
    b=text,
)
def test_error_round_trip(rid: int, kind: ErrorKind, a: str, b: str) -> None:
    fields = {
        ErrorKind.UNAVAILABLE: {"detail": a},
        ErrorKind.NEEDS_CREDENTIAL: {"detail": a},
        ErrorKind.OTHER: {"detail": a},
        ErrorKind.UNSUPPORTED_CAPABILITY: {"capability": a},
        ErrorKind.BAD_REFERENCE: {"reference": a, "reason": b},
    }[kind]
    line = encode_error(rid, kind, **fields)
    try:
        decode_reply(line[:-1], GetCall, rid, plugin="p")
    except PluginError as exc:
        assert exc.kind == kind.value
        for name, value in fields.items():
            assert getattr(exc, name) == value
        assert exc.plugin == "p"
    else:  # pragma: no cover
        raise AssertionError("an error reply decoded as a result")


SECRET = "Zq9-SECRET-VALUE-w7"


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    cls=st.sampled_from(list(_CALL_FOR.values())),
    rid=ids,
)
def test_decode_reply_never_crashes(data: bytes, cls: Type[Call], rid: int) -> None:
    try:
        decode_reply(data, cls, rid)
    except PluginClientError as exc:
        assert exc.__cause__ is None and exc.__context__ is None


def _plant(value: Any, where: int) -> Any:
    """A reply-like object with the secret planted in one of several places."""
    places = [
        {"jsonrpc": "2.0", "id": 1, "result": {"value": SECRET, "lease_seconds": value}},
        {"jsonrpc": "2.0", "id": 1, "result": {"value": value, SECRET: SECRET}},
        {"jsonrpc": "2.0", "id": value, "result": {"value": SECRET}},
        {"jsonrpc": value, "id": 1, "result": {"value": SECRET}},
        {"jsonrpc": "2.0", "id": 1, "result": {"entries": [{"reference": SECRET, "display": value}]}},
        {"jsonrpc": "2.0", "id": 1, "result": {"material_b64": SECRET, "x": value}},
        {"jsonrpc": "2.0", "id": 1, "result": value, "error": {"data": SECRET}},
        {"jsonrpc": "2.0", "id": 1, "result": {"value": SECRET}, "error": value},
    ]
    return places[where]


@given(value=json_values, where=st.integers(0, 7), cls=st.sampled_from(list(_CALL_FOR.values())), cut=st.integers(0, 3))
def test_no_secret_escapes(value: Any, where: int, cls: Type[Call], cut: int) -> None:
    line = json.dumps(_plant(value, where)).encode()
    if cut:
        line = line[:-cut]  # truncated frames too
    try:
        got = decode_reply(line, cls, 1, plugin="vault")
    except PluginError as exc:
        # An error object's own text is shown; SECRET was never placed in one.
        assert SECRET not in str(exc) and SECRET not in repr(exc)
    except PluginClientError as exc:
        assert exc.__cause__ is None and exc.__context__ is None
        rendered = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        for t in (str(exc), repr(exc), repr(exc.args), rendered, repr(vars(exc))):
            assert SECRET not in t
    else:
        if not isinstance(got, ListResult):  # a list entry's reference is not a secret
            assert SECRET not in repr(got) and SECRET not in str(got)


@given(source_name=text, config=st.none() | st.dictionaries(text, json_values, max_size=4), rid=ids)
def test_init_line_built_once_is_the_encoded_init_call(source_name: str, config: Any, rid: int) -> None:
    """What a client builds at construction and sends after every spawn is byte for
    byte ``encode_request(InitCall(...))``."""
    cfg = config if config is not None else {}
    expected = encode_request(InitCall(source_name=source_name, config=cfg), rid)
    assert init_line(init_params(source_name, cfg), rid) == expected

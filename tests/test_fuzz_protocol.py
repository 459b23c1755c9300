"""Fuzzing the reply decoder: a typed result or a typed error, never anything else.

``test_protocol_properties.py`` feeds ``decode_reply`` arbitrary bytes and
arbitrary top-level JSON, and plants secrets in a few fixed reply shapes. What
those rarely reach, and this module targets:

* well-formed envelopes (right ``jsonrpc``, right or wrong ``id``) whose
  ``result`` or ``error`` is an arbitrary JSON value, or an object with the
  method's own field names holding arbitrary values, so that every type check
  of every result model is exercised;
* JSON at the edges: nesting thousands deep, integers of hundreds of digits,
  ``1e400``, ``NaN``/``Infinity`` tokens, duplicate keys, surrogate escapes,
  a byte-order mark, trailing junk, NUL and control bytes;
* valid replies with random byte edits (flip, insert, delete, truncate);
* the plugin side's ``decode_request`` on the same inputs.

Every exception must be a ``PluginClientError`` with no chained cause (a
pydantic ``ValidationError`` would carry input values); a result must be an
instance of the called method's result type.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Type

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import SecretBytes, SecretStr

from plugin_client.errors import MalformedRequest, PluginClientError, PluginError, ReplyShapeError
from plugin_client.protocol import (
    MAX_REQUEST_ID,
    Call,
    DeleteCall,
    GetCall,
    GetResult,
    InitCall,
    InitResult,
    IsAvailableCall,
    KeyMaterialCall,
    KeyMaterialResult,
    ListCall,
    ListEntry,
    ListResult,
    PutCall,
    Result,
    ValidateCall,
    ValidateResult,
    decode_reply,
    decode_request,
    encode_result,
)

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

CALLS: List[Type[Call]] = [InitCall, IsAvailableCall, GetCall, ListCall, ValidateCall, PutCall, DeleteCall, KeyMaterialCall]

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)
edge_ints = st.sampled_from([0, 1, -1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), 10**30])
json_scalars = st.none() | st.booleans() | st.integers() | edge_ints | st.floats(allow_nan=False, allow_infinity=False) | text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=15,
)
ids = st.integers(min_value=0, max_value=MAX_REQUEST_ID) | edge_ints
valid_ids = st.integers(min_value=0, max_value=MAX_REQUEST_ID) | st.sampled_from([0, 1, 2**63, MAX_REQUEST_ID])
# Values of about the right type for some result field: they pass one check and
# fail the next, which reaches deeper into the models than arbitrary JSON.
plausible = st.one_of(
    text,
    edge_ints,
    st.booleans(),
    st.none(),
    st.sampled_from(["available", "unavailable", "needs-credential", "AAECAw==", "AAECAw", "====", "a\nb"]),
    st.binary(max_size=30).map(lambda b: __import__("base64").b64encode(b).decode()),
    st.lists(st.fixed_dictionaries({"reference": text}, optional={"display": st.none() | text | edge_ints}), max_size=3),
)


def check(line: bytes, cls: Type[Call], rid: int) -> Any:
    """Decode; a result must have the method's type, an error must be typed and unchained."""
    try:
        result = decode_reply(line, cls, rid, plugin="fuzz")
    except PluginClientError as exc:
        assert exc.__cause__ is None and exc.__context__ is None, type(exc.__cause__ or exc.__context__)
        assert exc.plugin == "fuzz"
        assert exc.message and len(exc.message) < 2000
        repr(exc)
        event(type(exc).__name__)
        return exc
    except BaseException as exc:  # pragma: no cover - the property under test
        raise AssertionError(f"decode_reply raised {type(exc).__name__}: {exc!r}"[:500]) from None
    assert isinstance(result, cls.result_type), (type(result), cls)
    repr(result)
    event("result")
    return result


def field_names(cls: Type[Call]) -> List[str]:
    names = list(cls.result_type.model_fields)
    if cls is KeyMaterialCall:
        names = ["material_b64"]
    return names


@st.composite
def shaped_results(draw: Any, cls: Type[Call]) -> Dict[str, Any]:
    """An object with (some of) the method's field names, each holding anything."""
    names = field_names(cls)
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    obj = {name: draw(plausible | json_values) for name in chosen}
    if cls is ListCall and draw(st.booleans()):
        obj["entries"] = draw(
            st.lists(st.dictionaries(st.sampled_from(["reference", "display", "x"]), plausible | json_values, max_size=3), max_size=3)
        )
    extra = draw(st.dictionaries(text, json_values, max_size=2))
    return {**extra, **obj}


@st.composite
def envelopes(draw: Any) -> Any:
    cls = draw(st.sampled_from(CALLS))
    rid = draw(valid_ids)
    # Mostly the right version and id, so that the result and error checks run.
    reply_id = draw(ids | json_values) if draw(st.integers(0, 9)) == 5 else rid
    version = draw(json_values) if draw(st.integers(0, 9)) == 5 else "2.0"
    env: Dict[str, Any] = {"jsonrpc": version, "id": reply_id}
    kind = draw(st.sampled_from(["result", "shaped", "shaped", "shaped", "error", "both", "neither"]))
    if kind == "result":
        env["result"] = draw(json_values)
    elif kind == "shaped":
        env["result"] = draw(shaped_results(cls))
    elif kind == "error":
        env["error"] = draw(json_values | st.dictionaries(st.sampled_from(["kind", "detail", "code", "message", "reference", "reason", "capability"]), json_values, max_size=4))
    elif kind == "both":
        env["result"] = draw(shaped_results(cls))
        env["error"] = draw(json_values)
    env.update(draw(st.dictionaries(text, json_values, max_size=2)))
    if draw(st.booleans()):  # unknown members first, the known ones last
        env = dict(reversed(list(env.items())))
    return cls, rid, env


@FUZZ
@given(case=envelopes(), spacing=st.sampled_from([(",", ":"), (", ", ": ")]), ascii_only=st.booleans(), crlf=st.booleans())
def test_envelopes_with_arbitrary_members(case: Any, spacing: Any, ascii_only: bool, crlf: bool) -> None:
    cls, rid, env = case
    line = json.dumps(env, separators=spacing, ensure_ascii=ascii_only).encode("utf-8") + (b"\r" if crlf else b"")
    got = check(line, cls, rid)
    if isinstance(got, Result):
        assert env["id"] == rid and env["jsonrpc"] == "2.0" and "result" in env
    elif isinstance(got, PluginError):
        assert isinstance(env.get("error"), dict) and env.get("result") is None
    if isinstance(env.get("error"), dict) and env.get("result") is None and env["jsonrpc"] == "2.0" and env["id"] == rid:
        assert isinstance(got, PluginError)  # any object is the plugin's own answer
    if env["jsonrpc"] == "2.0" and env["id"] == rid and env.get("result") is None and env.get("error") is not None:
        if not isinstance(env["error"], dict):
            assert isinstance(got, ReplyShapeError)


# --- JSON at the edges -------------------------------------------------------------------

HEAD = b'{"jsonrpc":"2.0","id":1,'


def nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


edge_lines = st.one_of(
    # Deep nesting at the top, in the result, in the error, as the id.
    st.builds(lambda d, k: nested(d, k), st.integers(1, 20_000), st.sampled_from(["array", "object"])),
    st.builds(lambda d, k, where: HEAD + b'"' + where + b'":' + nested(d, k) + b"}", st.integers(1, 5_000),
              st.sampled_from(["array", "object"]), st.sampled_from([b"result", b"error"])),
    st.builds(lambda d: b'{"jsonrpc":"2.0","id":' + nested(d, "array") + b',"result":{}}', st.integers(1, 3_000)),
    # Numbers: long integers, huge exponents, non-finite tokens, as id and as fields.
    st.builds(lambda n, where: (b'{"jsonrpc":"2.0","id":%b,"result":{"value":"v"}}' % n) if where else
              (HEAD + b'"result":{"value":"v","lease_seconds":%b,"capabilities_bits":%b,"ok":%b}}' % (n, n, n)),
              st.sampled_from([b"1" * 400, b"-" + b"9" * 400, b"1e400", b"-1e400", b"1.0", b"1E0", b"-0",
                               b"NaN", b"Infinity", b"-Infinity", b"0x10", b"01", b"1.", b".5", b"+1", b"18446744073709551616"]),
              st.booleans()),
    # Duplicate keys, escapes, a BOM, trailing junk, control and NUL bytes, odd whitespace.
    st.sampled_from([
        b'{"jsonrpc":"2.0","id":1,"id":2,"result":{"value":"v"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"v"},"result":null}',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"v","value":7}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"\\ud83d\\ude00"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"\\ud83d"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"\\udc00\\ud800"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"\\u0000"}}',
        b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"result":{"value":"v"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"v"}} trailing',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"v"}}{"jsonrpc":"2.0","id":1,"result":{"value":"v"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"a\x00b"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"a\x01b\x1fc"}}',
        b'\x0c{"jsonrpc":"2.0","id":1,"result":{"value":"v"}}',
        b'\t\r {"jsonrpc":"2.0","id":1,"result":{"value":"v"}} \t\r',
        b'{"jsonrpc":"2.0","id":1,"result":{"value":"v"}',
        b'{"jsonrpc":"2.0","id":1,"error":{"kind":"bad-reference","reference":[1],"reason":{"x":1}}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"kind":null,"code":1e400,"message":[]}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":true,"message":"m"}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"kind":"unsupported-capability","capability":123}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"material_b64":"' + b"A" * 100_001 + b'"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"entries":[' + b'{"reference":"r"},' * 20_000 + b'{"reference":"r"}]}}',
        b'{"jsonrpc":2.0,"id":1,"result":{"value":"v"}}',
        b'{"jsonrpc":"2.0","id":true,"result":{"value":"v"}}',
        b"null", b"[]", b'""', b"{}", b"", b" ", b"\r", b"\x00", b"\xff", b"\xc0\x80",
    ]),
)


@FUZZ
@given(line=edge_lines, cls=st.sampled_from(CALLS))
def test_json_at_the_edges(line: bytes, cls: Type[Call]) -> None:
    check(line, cls, 1)


# --- mutations of valid replies -------------------------------------------------------------

valid_results = st.one_of(
    st.builds(InitResult, source_name=text, capabilities_bits=st.integers(0, 2**32 - 1), plugin_version=text),
    st.builds(GetResult, value=text.map(SecretStr), lease_seconds=st.none() | st.integers(0, 2**64 - 1)),
    st.builds(ListResult, entries=st.lists(st.builds(ListEntry, reference=text, display=st.none() | text), max_size=4)),
    st.builds(ValidateResult, ok=st.booleans()),
    st.builds(KeyMaterialResult, material=st.binary(max_size=40).map(SecretBytes)),
)
CALL_OF = {InitResult: InitCall, GetResult: GetCall, ListResult: ListCall, ValidateResult: ValidateCall, KeyMaterialResult: KeyMaterialCall}


@st.composite
def mutated(draw: Any) -> Any:
    result = draw(valid_results)
    rid = draw(st.integers(0, MAX_REQUEST_ID))
    line = bytearray(encode_result(rid, result)[:-1])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        if not line:
            break
        i = draw(st.integers(0, len(line) - 1))
        if op == "flip":
            line[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            line[i:i] = draw(st.binary(min_size=1, max_size=4) | st.sampled_from([b'"', b"{", b"}", b",", b":", b"\\", b"\n"]))
        elif op == "delete":
            del line[i : i + draw(st.integers(1, 4))]
        elif op == "truncate":
            del line[i:]
        else:
            j = draw(st.integers(i, len(line)))
            line[j:j] = line[i:j]
    return CALL_OF[type(result)], rid, bytes(line)


@FUZZ
@given(case=mutated())
def test_mutated_valid_replies(case: Any) -> None:
    cls, rid, line = case
    check(line, cls, rid)


# --- the plugin side ---------------------------------------------------------------------------


@FUZZ
@given(line=edge_lines | st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
       | st.builds(lambda m, p, i: json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p}).encode(),
                   st.sampled_from([c.method.value for c in CALLS]) | text, json_values, ids | json_values))
def test_decode_request_gives_a_call_or_malformed_request(line: bytes) -> None:
    try:
        rid, call = decode_request(line)
    except MalformedRequest as exc:
        assert exc.__cause__ is None and exc.__context__ is None
        assert exc.request_id is None or 0 <= exc.request_id <= MAX_REQUEST_ID
        return
    except BaseException as exc:  # pragma: no cover - the property under test
        raise AssertionError(f"decode_request raised {type(exc).__name__}: {exc!r}"[:500]) from None
    assert isinstance(call, Call) and 0 <= rid <= MAX_REQUEST_ID

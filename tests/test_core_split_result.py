"""``split_result`` over both cores: the byte test of a compact success reply's
head that lets the warm path hand pydantic the result alone.

Its contract is a definition on bytes (``model`` below): the frame is exactly
``{"jsonrpc":"2.0","id":<decimal id>,"result":`` + body + ``}``. Whether the
body is JSON is not its business; :mod:`test_protocol_properties` checks that
the decode built on it never differs from ``decode_reply``.
"""

from __future__ import annotations

import types
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _helpers import both_cores

U64 = 2**64 - 1
HEAD = b'{"jsonrpc":"2.0","id":%d,"result":'


def model(frame: bytes, request_id: int) -> Optional[bytes]:
    head = HEAD % request_id
    if len(frame) > len(head) and frame[: len(head)] == head and frame[-1:] == b"}":
        return frame[len(head) : -1]
    return None


@pytest.mark.parametrize(
    "frame, rid, body",
    [
        (b'{"jsonrpc":"2.0","id":7,"result":{"value":"v"}}', 7, b'{"value":"v"}'),
        (b'{"jsonrpc":"2.0","id":0,"result":true}', 0, b"true"),
        (b'{"jsonrpc":"2.0","id":%d,"result":{}}' % U64, U64, b"{}"),
        (b'{"jsonrpc":"2.0","id":7,"result":}', 7, b""),  # empty: the parser refuses it
        (b'{"jsonrpc":"2.0","id":7,"result":{},"error":{}}', 7, b'{},"error":{}'),  # not one value
        # The head does not match: the full decode's.
        (b'{"jsonrpc":"2.0","id":7,"result":{}}', 70, None),
        (b'{"jsonrpc":"2.0","id":70,"result":{}}', 7, None),
        (b'{"jsonrpc":"2.0","id":07,"result":{}}', 7, None),
        (b'{"jsonrpc":"2.0","id":7.0,"result":{}}', 7, None),
        (b'{"jsonrpc": "2.0", "id": 7, "result": {}}', 7, None),
        (b'{"id":7,"jsonrpc":"2.0","result":{}}', 7, None),
        (b'{"jsonrpc":"2.0","id":7,"error":{}}', 7, None),
        (b'{"jsonrpc":"2.0","id":7,"result":{} ', 7, None),
        (b'{"jsonrpc":"2.0","id":7,"result":', 7, None),
        (b'{"jsonrpc":"2.0","id":7,"result"}', 7, None),
        (b'{"jsonrpc":"2.0","id":7}', 7, None),
        (b"", 7, None),
        (b"}", 0, None),
    ],
)
def test_split_result(core: types.ModuleType, frame: bytes, rid: int, body: Optional[bytes]) -> None:
    assert model(frame, rid) == body
    assert core.split_result(frame, rid) == body


class _Bytes(bytes):
    pass


@pytest.mark.parametrize(
    "frame, rid, exc",
    [
        (bytearray(b"{}"), 1, TypeError),
        (memoryview(b"{}"), 1, TypeError),
        (_Bytes(b"{}"), 1, TypeError),
        ("{}", 1, TypeError),
        (None, 1, TypeError),
        (b"{}", 1.0, TypeError),
        (b"{}", "1", TypeError),
        (b"{}", None, TypeError),
        (b"{}", -1, OverflowError),
        (b"{}", U64 + 1, OverflowError),
    ],
)
def test_split_result_refuses_other_types(core: types.ModuleType, frame: Any, rid: Any, exc: type) -> None:
    with pytest.raises(exc):
        core.split_result(frame, rid)


ids = st.integers(0, 30) | st.integers(0, U64)
pieces = st.sampled_from([b"", b"}", b"{", b",", b'"result":', b'"id":', b"0", b"7", b" ", b"\n", b"\x00", b"\xff"])
frames = st.builds(
    lambda rid, body, tail: (HEAD % rid) + body + tail,
    ids,
    st.lists(pieces, max_size=6).map(b"".join) | st.binary(max_size=20),
    st.sampled_from([b"}", b"", b"} ", b"}}"]),
) | st.binary(max_size=60)


@settings(max_examples=300, deadline=None)
@given(frame=frames, rid=ids)
def test_split_result_is_its_definition(core: types.ModuleType, frame: bytes, rid: int) -> None:
    assert core.split_result(frame, rid) == model(frame, rid)


@pytest.mark.c_extension
@settings(max_examples=300, deadline=None)
@given(frame=frames, rid=ids)
def test_cores_agree_on_split_result(frame: bytes, rid: int) -> None:
    py, c = both_cores()
    assert py.split_result(frame, rid) == c.split_result(frame, rid)

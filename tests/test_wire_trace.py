"""The wire trace: ``plugin_client.wire`` at DEBUG logs every request and reply line of
both clients, over both cores, with every secret redacted; off, it logs nothing, and
turning it on while a client runs takes effect at the next request."""

from __future__ import annotations

import base64
import logging
import types
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

from plugin_client.errors import PluginError, ProtocolError, RequestTimeout
from plugin_client.manifest import LoadedPlugin
from plugin_client.policy import LifetimePolicy
from plugin_client._wire_trace import MAX_SHOWN, REDACTED, redacted

from client_kinds import client_kind, new_client  # noqa: F401 - fixtures
from plugin_factory import make_plugin, python_script

WIRE = "plugin_client.wire"
FAST = LifetimePolicy(request_timeout=5.0, start_timeout=10.0, shutdown_grace=1.0, exit_wait=0.5)
CONFIG_SECRET = "cfg-Secret-4f1d"
PUT_SECRET = "put-Secret-9a2e"

# Answers get by reference with replies of odd shapes, every one carrying secrets
# ("Odd-Secret-..."), some where the protocol puts none.
ODD = r'''
import json, sys

def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

for raw in sys.stdin:
    req = json.loads(raw)
    rid, method, params = req["id"], req["method"], req.get("params") or {}
    if method == "secret_source.init":
        send({"jsonrpc": "2.0", "id": rid, "result": {"source_name": params["source_name"],
              "capabilities_bits": 511, "plugin_version": "odd-1"}})
        continue
    ref = params.get("reference")
    if ref == "nested":
        send({"jsonrpc": "2.0", "id": rid, "Odd-Secret-envelope": 1,
              "result": {"value": "Odd-Secret-value", "lease_seconds": 5,
                         "meta": {"Value": "Odd-Secret-case", "hint": "Odd-Secret-hint"}}})
    elif ref == "bare":
        send({"jsonrpc": "2.0", "id": rid, "result": "Odd-Secret-bare"})
    elif ref == "data":
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": "failed",
              "data": {"token": "Odd-Secret-data"}}})
    elif ref == "nested-error":
        send({"jsonrpc": "2.0", "id": rid, "error": {"kind": "other", "detail": {"value": "Odd-Secret-detail"}}})
    elif ref == "string-id":
        send({"jsonrpc": "2.0", "id": "Odd-Secret-id", "result": {"value": "x"}})
    elif ref == "not-json":
        sys.stdout.write("Odd-Secret-raw is not json\n")
        sys.stdout.flush()
    elif ref == "list-of":
        send([{"value": "Odd-Secret-array"}])
    elif ref == "deep":
        sys.stdout.write("[" * 100000 + "]" * 100000 + "\n")
        sys.stdout.flush()
    elif method == "secret_source.list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"entries": [
              {"reference": "a", "display": None, "value": "Odd-Secret-entry"}]}})
    else:
        send({"jsonrpc": "2.0", "id": rid, "result": {"value": "ok"}})
'''


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> LoadedPlugin:
    return make_plugin(tmp_path_factory.mktemp("echo"))


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> LoadedPlugin:
    return make_plugin(tmp_path_factory.mktemp("odd"), "odd", python_script(ODD))


@pytest.fixture
def wire_records(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], List[logging.LogRecord]]]:
    """The trace on (the wire logger at DEBUG); returns its records so far."""
    caplog.set_level(logging.DEBUG, logger=WIRE)
    yield lambda: [r for r in caplog.records if r.name == WIRE]


def everything(records: List[logging.LogRecord]) -> str:
    """All a handler could print of ``records``: messages, args and every attribute."""
    return "\n".join(f"{r.getMessage()} {r.args!r} {vars(r)!r}" for r in records)


def test_secrets_never_appear_while_methods_and_ids_do(
    new_client: Callable[..., Any], core: types.ModuleType, echo: LoadedPlugin,
    wire_records: Callable[[], List[logging.LogRecord]],
) -> None:
    c = new_client(echo, policy=FAST, config={"token": CONFIG_SECRET, "entries": 2}, _core=core)
    assert c.put("db/pw", PUT_SECRET).replaced is False
    got = c.get("db/pw")
    assert got.value.get_secret_value() == "value-of-db/pw"
    material = c.key_material("signing").material.get_secret_value()
    assert c.list().entries[1].reference == "ref-1"

    records = wire_records()
    text = everything(records)
    material_b64 = base64.b64encode(material).decode()
    for secret in (CONFIG_SECRET, PUT_SECRET, "value-of-db/pw", material_b64):
        assert secret not in text
    # Every line both ways, in order, with the extra fields a structured handler reads.
    seen = [(r.direction, r.method, r.id) for r in records]  # type: ignore[attr-defined]
    methods = ["init", "put", "get", "key_material", "list"]
    assert seen == [
        (direction, f"secret_source.{m}", i + 1) for i, m in enumerate(methods) for direction in ("request", "reply")
    ]
    assert {r.plugin for r in records} == {"echo"}  # type: ignore[attr-defined]
    assert all(r.levelno == logging.DEBUG for r in records)
    messages = [r.getMessage() for r in records]
    assert messages[0].startswith('-> echo #1 {"jsonrpc":"2.0","id":1,"method":"secret_source.init"')
    assert '"config":{"token":"<redacted>","entries":"<redacted>"}' in messages[0]
    assert messages[2].startswith("-> echo #2 ") and '"reference":"db/pw","value":"<redacted>"' in messages[2]
    assert messages[5].startswith("<- echo #3 ") and '"value":"<redacted>"' in messages[5]
    assert '"material_b64":"<redacted>"' in messages[7]
    assert '"reference":"ref-1"' in messages[9]  # what is no secret is shown


def test_replies_of_odd_shapes_leak_nothing(
    new_client: Callable[..., Any], core: types.ModuleType, odd: LoadedPlugin,
    wire_records: Callable[[], List[logging.LogRecord]],
) -> None:
    c = new_client(odd, policy=FAST.model_copy(update={"restart_cap": 10}), _core=core)
    assert c.get("nested").value.get_secret_value() == "Odd-Secret-value"
    with pytest.raises(PluginError):
        c.get("data")
    with pytest.raises(PluginError):
        c.get("nested-error")
    assert c.list().entries[0].reference == "a"
    for broken in ("bare", "string-id", "not-json", "list-of", "deep"):
        with pytest.raises(ProtocolError):
            c.get(broken)

    records = wire_records()
    assert "Odd-Secret" not in everything(records)
    replies = {r.id: r.getMessage() for r in records if r.direction == "reply"}  # type: ignore[attr-defined]
    assert replies[2].endswith('"result":{"value":"<redacted>","lease_seconds":5,"<redacted>":1},"<redacted>":1}')
    assert replies[3].endswith('"error":{"code":-32000,"message":"failed","<redacted>":1}}')
    assert replies[4].endswith('"error":{"kind":"other","detail":"<redacted>"}}')
    assert '"entries":[{"reference":"a","display":null,"value":"<redacted>"}]' in replies[5]
    # A broken reply kills the process: each of those is a fresh start, an init and a get.
    odd_replies = [m for m in replies.values() if m.startswith("<- odd") and "init" not in m]
    assert any('"result":"<redacted>"' in m for m in odd_replies)
    assert any('"id":"<redacted>"' in m for m in odd_replies)
    assert any(m.endswith(f"(not a JSON object, {len('Odd-Secret-raw is not json')} bytes)") for m in odd_replies)
    assert any(m.endswith("(not a JSON object, 200000 bytes)") for m in odd_replies)


def test_a_failed_exchange_is_traced_as_no_reply(
    new_client: Callable[..., Any], core: types.ModuleType, echo: LoadedPlugin,
    wire_records: Callable[[], List[logging.LogRecord]],
) -> None:
    c = new_client(echo, policy=LifetimePolicy(request_timeout=0.2, exit_wait=0.1, shutdown_grace=0.1), _core=core)
    with pytest.raises(RequestTimeout):
        c.get("hang")
    last = wire_records()[-1]
    assert last.direction == "reply" and last.method == "secret_source.get"  # type: ignore[attr-defined]
    assert last.getMessage() == "<- echo #2 no reply: no reply before the deadline (DeadlineExceeded)"


def test_off_by_default_and_turned_on_while_running(
    new_client: Callable[..., Any], core: types.ModuleType, echo: LoadedPlugin, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # the root at INFO; the wire logger left as it is
    c = new_client(echo, policy=FAST, _core=core)
    c.get("a")
    c.get("b")
    assert [r for r in caplog.records if r.name == WIRE] == []

    caplog.set_level(logging.DEBUG, logger=WIRE)  # a host turns it on, the client warm
    c.get("c")
    logging.getLogger(WIRE).setLevel(logging.NOTSET)  # and off again (the root at INFO)
    c.get("d")
    traced = [r.getMessage() for r in caplog.records if r.name == WIRE]
    assert traced == [
        '-> echo #4 {"jsonrpc":"2.0","id":4,"method":"secret_source.get","params":{"reference":"c"}}',
        '<- echo #4 {"jsonrpc":"2.0","id":4,"result":{"value":"<redacted>"}}',
    ]


def test_redaction_of_shapes_no_plugin_sends() -> None:
    request = {"jsonrpc": "2.0", "id": 1, "method": "secret_source.init",
               "params": {"source_name": "s", "config": "not-an-object", "nested": [{"VALUE": "x", "config": {"a": 1}}]}}
    assert redacted(request, "secret_source.init", request=True)["params"] == {
        "source_name": "s", "config": REDACTED, "nested": [{"VALUE": REDACTED, "config": {"a": REDACTED}}],
    }
    reply = {"jsonrpc": "2.0", "id": True, "params": {"x": 1},
             "result": {"source_name": "s", "capabilities_bits": {"x": 1}, "extra": 2}}
    assert redacted(reply, "secret_source.init") == {
        "jsonrpc": "2.0", "id": REDACTED, "result": {"source_name": "s", "capabilities_bits": REDACTED, REDACTED: 1},
        REDACTED: 1,
    }
    # A method the trace does not know: only the secrets' names are kept.
    assert redacted({"result": {"a": 1, "value": 2}}, "secret_source.future")["result"] == {"value": REDACTED, REDACTED: 1}
    assert redacted({"error": "text", "result": None}, "secret_source.get") == {"error": REDACTED, "result": None}
    assert MAX_SHOWN >= 1024


def test_a_long_line_is_cut_after_redaction(
    new_client: Callable[..., Any], echo: LoadedPlugin, wire_records: Callable[[], List[logging.LogRecord]],
) -> None:
    c = new_client(echo, policy=FAST, config={"entries": 500})
    assert len(c.list().entries) == 500
    reply = wire_records()[-1].getMessage()
    assert reply.endswith(" characters)") and len(reply) < MAX_SHOWN + 100


def test_a_level_changed_anywhere_is_seen_at_the_next_request(
    new_client: Callable[..., Any], echo: LoadedPlugin, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # the root at INFO
    caplog.handler.setLevel(logging.DEBUG)
    parent = logging.getLogger("plugin_client")
    c = new_client(echo, policy=FAST)
    c.get("warm")

    def traced(ref: str) -> bool:
        caplog.clear()
        c.get(ref)
        return [r.name for r in caplog.records if r.name == WIRE] == [WIRE, WIRE]

    try:
        assert not traced("off")
        parent.setLevel(logging.DEBUG)  # an ancestor's level
        assert traced("parent")
        logging.disable(logging.DEBUG)
        assert not traced("disabled")
        logging.disable(logging.NOTSET)
        assert traced("enabled")
        parent.setLevel(logging.NOTSET)
        assert not traced("off-again")
        logging.getLogger().setLevel(logging.DEBUG)  # the root's
        assert traced("root")
    finally:
        logging.disable(logging.NOTSET)
        parent.setLevel(logging.NOTSET)


def test_with_the_trace_on_no_request_of_another_thread_goes_untraced(
    echo: LoadedPlugin, wire_records: Callable[[], List[logging.LogRecord]],
) -> None:
    import threading

    from plugin_client.client import PluginClient

    clients = [PluginClient(echo, policy=FAST) for _ in range(4)]
    try:
        threads = [threading.Thread(target=lambda c=c: [c.get(f"r{i}") for i in range(50)]) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # Each client: init and 50 gets, a request and a reply each.
        assert len(wire_records()) == 4 * 51 * 2
    finally:
        for c in clients:
            c.shutdown()

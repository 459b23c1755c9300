"""The plugin SDK (``plugin_client.plugin``): an SDK-built plugin is as conformant as the
hand-written echo plugin, and the SDK keeps stdout clean and its process alive."""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List

import pytest
from pydantic import SecretStr

from plugin_client.client import PluginClient
from plugin_client.manifest import LoadedPlugin
from plugin_client.plugin import (
    BadReference,
    Failure,
    NeedsCredential,
    NotFound,
    SecretSourcePlugin,
    Unavailable,
    Unsupported,
    serve,
)
from plugin_client.policy import LifetimePolicy
from plugin_client.protocol import Capability, GetResult, ListEntry

from conformance import RawPlugin, check_conformance, check_raw_conformance, make_sdk_plugin
from plugin_factory import make_plugin

FAST = LifetimePolicy(request_timeout=5.0, start_timeout=10.0, shutdown_grace=1.0, exit_wait=1.0)


@pytest.fixture(params=["echo", "sdk"])
def any_plugin(request: pytest.FixtureRequest, tmp_path: Path) -> LoadedPlugin:
    if request.param == "echo":
        return make_plugin(tmp_path / "p")
    return make_sdk_plugin(tmp_path / "p")


@pytest.fixture
def sdk_plugin(tmp_path: Path) -> LoadedPlugin:
    return make_sdk_plugin(tmp_path / "p")


@pytest.fixture
def raw(sdk_plugin: LoadedPlugin) -> Any:
    p = RawPlugin([str(sdk_plugin.executable.path)])
    yield p
    p.kill()


# --- the same conformance as the hand-written plugin -----------------------------------


def test_conformance_through_the_client(any_plugin: LoadedPlugin) -> None:
    made: List[PluginClient] = []

    def make(**kw: Any) -> PluginClient:
        c = PluginClient(any_plugin, policy=FAST, **kw)
        made.append(c)
        return c

    try:
        check_conformance(make)
    finally:
        for c in made:
            c.shutdown()


def test_conformance_over_the_pipes(any_plugin: LoadedPlugin) -> None:
    check_raw_conformance(any_plugin)


# --- what the SDK adds ---------------------------------------------------------------------


def test_requests_with_empty_or_null_params_are_accepted(raw: RawPlugin) -> None:
    raw.init()
    for params in ({}, None):
        assert raw.call("is_available", params)["result"] == {"status": "available"}
        assert len(raw.call("list", params)["result"]["entries"]) == 3


def test_replies_use_the_documented_shapes_exactly(raw: RawPlugin) -> None:
    raw.init()
    raw.request("get", {"reference": "value:x"}, rid=41)
    assert raw.read_raw() == b'{"jsonrpc":"2.0","id":41,"result":{"value":"x"}}'
    raw.request("get", {"reference": "lease:7"}, rid=42)
    assert raw.read_raw() == b'{"jsonrpc":"2.0","id":42,"result":{"value":"leased","lease_seconds":7}}'
    raw.request("get", {"reference": "missing"}, rid=2**64 - 1)
    assert raw.read_raw() == (
        b'{"jsonrpc":"2.0","id":18446744073709551615,"error":'
        b'{"kind":"bad-reference","reference":"missing","reason":"not found"}}'
    )
    assert raw.call("key_material", {"purpose": "ab"})["result"] == {"material_b64": "YWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWI="}
    assert raw.call("put", {"reference": "r", "value": "v"})["result"] == {"replaced": False}
    assert raw.call("delete", {"reference": "r"})["result"] == {"existed": True}
    assert raw.call("validate", {"reference": "ok"})["result"] == {"ok": True}


def test_unknown_method_is_unsupported(raw: RawPlugin) -> None:
    raw.init()
    err = raw.call("rotate", {"reference": "x"})["error"]
    assert err == {"kind": "unsupported-capability", "capability": "secret_source.rotate"}
    raw.request("frobnicate")
    assert raw.read()["error"]["kind"] == "unsupported-capability"


def test_unclaimed_capability_is_unsupported(raw: RawPlugin) -> None:
    assert raw.init({"caps": int(Capability.READ)})["capabilities_bits"] == 1
    assert raw.call("put", {"reference": "k", "value": "v"})["error"] == {
        "kind": "unsupported-capability",
        "capability": "WRITE",
    }
    assert raw.call("list")["error"]["capability"] == "LIST"
    assert raw.call("get", {"reference": "value:still"})["result"]["value"] == "still"


@pytest.mark.parametrize(
    "ref, error",
    [
        ("unavailable", {"kind": "unavailable", "detail": "backend is down"}),
        ("needs-credential", {"kind": "needs-credential", "detail": "run 'vault login'"}),
        ("bad", {"kind": "bad-reference", "reference": "bad", "reason": "must look like a/b"}),
        ("other", {"kind": "other", "detail": "it went wrong"}),
        ("unsupported", {"kind": "unsupported-capability", "capability": "READ"}),
    ],
)
def test_typed_exceptions_become_their_kind(raw: RawPlugin, ref: str, error: Dict[str, str]) -> None:
    raw.init()
    assert raw.call("get", {"reference": ref})["error"] == error


def test_handler_exception_is_other_and_the_process_survives(raw: RawPlugin) -> None:
    raw.init()
    pid = raw.call("get", {"reference": "pid"})["result"]["value"]
    err = raw.call("get", {"reference": "raise"})["error"]
    assert err == {"kind": "other", "detail": "RuntimeError: handler bug"}
    assert raw.call("get", {"reference": "pid"})["result"]["value"] == pid
    code, rest, stderr = raw.finish()
    assert code == 0 and rest == b""
    assert b"Traceback" in stderr and b"RuntimeError: handler bug" in stderr


def test_stray_output_goes_to_stderr_not_stdout(raw: RawPlugin) -> None:
    raw.init()
    raw.request("get", {"reference": "print"}, rid=9)
    assert raw.read_raw() == b'{"jsonrpc":"2.0","id":9,"result":{"value":"printed"}}'
    assert raw.no_output()
    code, rest, stderr = raw.finish()
    assert code == 0 and rest == b""
    assert b"a stray print\n" in stderr and b"a raw write to fd 1\n" in stderr


def test_stray_print_through_the_client(sdk_plugin: LoadedPlugin) -> None:
    with PluginClient(sdk_plugin, policy=FAST) as c:
        assert c.get("print").value.get_secret_value() == "printed"
        time.sleep(0.05)
        # A byte on stdout while idle would be a protocol error here.
        assert c.get("value:next").value.get_secret_value() == "next"
        assert c.health().spawn_count == 1


def test_eof_exits_zero(raw: RawPlugin) -> None:
    raw.init()
    code, rest, stderr = raw.finish()
    assert code == 0 and rest == b""
    assert b"served, exiting" in stderr  # serve() returned: the script's own code ran


def test_sigterm_while_idle_exits_zero(raw: RawPlugin) -> None:
    raw.init()
    raw.terminate()
    assert raw.proc.wait(10) == 0
    _, rest, stderr = raw.finish()
    assert rest == b"" and b"served, exiting" in stderr


def test_sigterm_during_a_request_answers_it_first(raw: RawPlugin) -> None:
    raw.init()
    raw.request("get", {"reference": "slow:300"}, rid=5)
    time.sleep(0.1)
    raw.terminate()
    assert raw.read() == {"jsonrpc": "2.0", "id": 5, "result": {"value": "slow"}}
    assert raw.proc.wait(10) == 0


def test_sigterm_before_init_exits_zero(raw: RawPlugin) -> None:
    raw.request("is_available", rid=1)  # answered (with an error) once serve() runs
    assert raw.read()["error"]["kind"] == "other"
    raw.terminate()
    assert raw.proc.wait(10) == 0


def test_malformed_lines(raw: RawPlugin) -> None:
    raw.send_line(b"this is not json")
    raw.send_line(b"")
    raw.send_line(b'{"jsonrpc":"2.0","method":"secret_source.init"}')  # no id: no one to answer
    raw.send_line(b"\xff\xfe")
    assert raw.no_output()
    raw.request("get", {"reference": "x"}, rid=3)  # before init
    err = raw.read()["error"]
    assert err["kind"] == "other" and "before init" in err["detail"]
    raw.init()
    raw.send_line(b'{"jsonrpc":"2.0","id":8,"method":"secret_source.get","params":{"reference":5}}')
    reply = raw.read()
    assert reply["id"] == 8 and reply["error"]["kind"] == "other" and "reference" in reply["error"]["detail"]
    raw.send_line(b'{"jsonrpc":"2.0","id":9,"method":"secret_source.get"}')
    assert raw.read()["error"]["kind"] == "other"
    assert raw.call("get", {"reference": "value:ok"})["result"]["value"] == "ok"
    code, _, stderr = raw.finish()
    assert code == 0 and b"not JSON" in stderr


def test_put_value_is_not_echoed_in_errors(raw: RawPlugin) -> None:
    raw.init()
    raw.send_line(b'{"jsonrpc":"2.0","id":4,"method":"secret_source.put","params":{"reference":"r","value":12345678}}')
    err = raw.read()["error"]
    assert err["kind"] == "other" and "12345678" not in err["detail"]


def test_large_request_and_crlf(raw: RawPlugin) -> None:
    raw.init()
    big = "v" * 3_000_000
    assert raw.call("put", {"reference": "big", "value": big})["result"] == {"replaced": False}
    raw.send_line(b'{"jsonrpc":"2.0","id":77,"method":"secret_source.is_available"}\r\n')
    assert raw.read()["id"] == 77


def test_unsupported_protocol_major(raw: RawPlugin) -> None:
    raw.request("init", {"source_name": "s", "config": {}, "protocol_version": "2.0"}, rid=1)
    err = raw.read()["error"]
    assert err["kind"] == "other" and "2.0" in err["detail"]


def test_is_available_errors_become_statuses(tmp_path: Path) -> None:
    plugin = make_sdk_plugin(tmp_path / "p")
    for avail, detail in (("unavailable", "backend is down"), ("needs-credential", "run 'vault login'")):
        with PluginClient(plugin, policy=FAST, config={"avail": avail}) as c:
            res = c.is_available()
            assert res.status.value == avail and res.detail == detail


# --- in process: return values and handler shapes -----------------------------------------


def run_in_process(handler: Any, *lines: Dict[str, Any]) -> List[Dict[str, Any]]:
    data = b"".join(json.dumps(obj).encode() + b"\n" for obj in lines)
    out = io.BytesIO()
    serve(handler, stdin=io.BytesIO(data), stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def req(rid: int, method: str, **params: Any) -> Dict[str, Any]:
    obj: Dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": "secret_source." + method}
    if params:
        obj["params"] = params
    return obj


INIT = req(1, "init", source_name="s", config={}, protocol_version="1.1")


class Shapes(SecretSourcePlugin):
    version = "9.9"

    def get(self, reference: str) -> Any:
        return {
            "td": ("v", timedelta(minutes=2)),
            "secretstr": SecretStr("s"),
            "result": GetResult(value=SecretStr("r"), lease_seconds=3),
            "none": None,
            "wrong": 42,
            "obj": type("S", (), {"value": "o", "lease": timedelta(seconds=9)})(),
        }[reference]

    def list(self) -> Any:
        return iter(["a", ("b", "B"), {"reference": "c", "display": None}, ListEntry(reference="d")])


def test_return_value_shapes() -> None:
    refs = ["td", "secretstr", "result", "none", "wrong", "obj"]
    replies = run_in_process(Shapes, INIT, *(req(i + 2, "get", reference=r) for i, r in enumerate(refs)), req(99, "list"))
    init = replies[0]["result"]
    assert init == {"source_name": "s", "capabilities_bits": int(Capability.READ | Capability.LIST), "plugin_version": "9.9"}
    got = {r: rep for r, rep in zip(refs, replies[1:])}
    assert got["td"]["result"] == {"value": "v", "lease_seconds": 120}
    assert got["secretstr"]["result"] == {"value": "s"}
    assert got["result"]["result"] == {"value": "r", "lease_seconds": 3}
    assert got["none"]["error"] == {"kind": "bad-reference", "reference": "none", "reason": "not found"}
    assert got["wrong"]["error"]["kind"] == "other" and "TypeError" in got["wrong"]["error"]["detail"]
    assert got["obj"]["result"] == {"value": "o", "lease_seconds": 9}
    assert replies[-1]["result"]["entries"] == [
        {"reference": "a"},
        {"reference": "b", "display": "B"},
        {"reference": "c"},
        {"reference": "d"},
    ]


def test_duck_typed_handler_and_explicit_capabilities() -> None:
    class Plain:
        capabilities = Capability.READ | Capability.WRITE  # claims WRITE, implements no put

        def get(self, reference: str) -> str:
            if reference == "gone":
                raise NotFound(reference)
            return "plain:" + reference

    replies = run_in_process(
        Plain(),
        INIT,
        req(2, "is_available"),
        req(3, "get", reference="x"),
        req(4, "get", reference="gone"),
        req(5, "put", reference="x", value="y"),
    )
    assert replies[0]["result"]["capabilities_bits"] == int(Capability.READ | Capability.WRITE)
    assert replies[0]["result"]["plugin_version"] == "0.0.0"
    assert replies[1]["result"] == {"status": "available"}
    assert replies[2]["result"] == {"value": "plain:x"}
    assert replies[3]["error"]["reason"] == "not found"
    assert replies[4]["error"] == {"kind": "unsupported-capability", "capability": "WRITE"}


def test_init_may_return_capabilities_and_version() -> None:
    class Dyn(SecretSourcePlugin):
        def init(self, source_name: str, config: Dict[str, Any]) -> Any:
            super().init(source_name, config)
            if config.get("fail"):
                raise Failure("bad config: 'fail' is set")
            return Capability.READ, "dyn-2"

        def get(self, reference: str) -> str:
            return self.source_name + ":" + reference

        def put(self, reference: str, value: SecretStr) -> bool:  # pragma: no cover - not claimed
            return True

    ok = run_in_process(Dyn, INIT, req(2, "get", reference="r"), req(3, "put", reference="r", value="v"))
    assert ok[0]["result"]["capabilities_bits"] == 1 and ok[0]["result"]["plugin_version"] == "dyn-2"
    assert ok[1]["result"] == {"value": "s:r"}
    assert ok[2]["error"]["kind"] == "unsupported-capability"
    bad = run_in_process(Dyn, req(1, "init", source_name="s", config={"fail": True}))
    assert bad[0]["error"] == {"kind": "other", "detail": "bad config: 'fail' is set"}


def test_error_helpers_carry_their_fields() -> None:
    assert Unavailable("d").fields() == {"detail": "d"}
    assert NeedsCredential("sign in").fields() == {"detail": "sign in"}
    assert BadReference("r").fields() == {"reference": "r", "reason": "malformed"}
    assert NotFound("r").fields() == {"reference": "r", "reason": "not found"}
    assert Unsupported("WRITE").fields() == {"capability": "WRITE"}
    assert Failure("x").fields() == {"detail": "x"}


def test_sdk_plugin_under_the_existing_host_request_shapes(raw: RawPlugin) -> None:
    """The Rust host's serde output: compact, params omitted for is_available/list,
    protocol_version possibly absent (a 1.0 host)."""
    raw.send_line(b'{"jsonrpc":"2.0","id":1,"method":"secret_source.init","params":{"source_name":"rust","config":{}}}')
    assert raw.read()["result"]["source_name"] == "rust"
    raw.send_line(b'{"jsonrpc":"2.0","id":2,"method":"secret_source.is_available"}')
    assert raw.read() == {"jsonrpc": "2.0", "id": 2, "result": {"status": "available"}}
    raw.send_line(b'{"jsonrpc":"2.0","id":3,"method":"secret_source.list"}')
    assert raw.read()["id"] == 3


# --- a light SDK: no pydantic, asyncio, clients or core in a plugin process --------------

HEAVY = ("pydantic", "pydantic_core", "asyncio", "plugin_client.client", "plugin_client.aio",
         "plugin_client.protocol", "plugin_client._impl", "plugin_client._core", "plugin_client._core_py")


def _fresh_modules(code: str) -> List[str]:
    import subprocess
    import sys

    from _helpers import SRC_DIR

    proc = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {SRC_DIR!r}); {code}; "
         "print('\\n'.join(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def _loaded(modules: List[str], names: Any) -> List[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def test_importing_the_sdk_loads_nothing_heavy() -> None:
    modules = _fresh_modules("import plugin_client.plugin")
    assert _loaded(modules, HEAVY) == []
    # Not even these until a plugin needs them (logging: at its first record).
    assert _loaded(modules, ("typing", "logging", "threading", "datetime", "base64")) == []


def test_the_package_loads_names_on_first_use() -> None:
    assert _loaded(_fresh_modules("import plugin_client"), HEAVY) == []
    sync_host = _fresh_modules("from plugin_client import PluginClient, load_plugin")
    assert "plugin_client.client" in sync_host and _loaded(sync_host, ("asyncio", "plugin_client.aio")) == []
    impl = _fresh_modules("import plugin_client; assert plugin_client.IMPLEMENTATION in ('cython', 'python')")
    assert "plugin_client._impl" in impl and _loaded(impl, ("pydantic",)) == []


def test_every_public_name_is_reachable_and_listed() -> None:
    import plugin_client

    assert isinstance(plugin_client.__all__, tuple)
    for name in plugin_client.__all__:
        assert getattr(plugin_client, name) is not None, name
    assert set(plugin_client.__all__) <= set(dir(plugin_client))
    with pytest.raises(AttributeError):
        plugin_client.NoSuchName  # type: ignore[attr-defined]


def test_host_and_sdk_share_one_class_per_error_kind() -> None:
    import plugin_client
    from plugin_client import plugin

    assert plugin_client.BadReference is plugin.BadReference
    assert plugin_client.NeedsCredential is plugin.NeedsCredential
    assert issubclass(plugin.NotFound, plugin_client.BadReference)
    host = plugin_client.BadReference("Plugin 'p' rejected 'r'.", reference="r", reason="not found", plugin="p")
    assert (host.reference, host.reason, host.plugin, str(host)) == ("r", "not found", "p", "Plugin 'p' rejected 'r'.")
    assert BadReference("r", "must look like a/b").fields() == {"reference": "r", "reason": "must look like a/b"}
    cred = plugin_client.NeedsCredential("Plugin 'p' needs a credential.", detail="sign in", plugin="p")
    assert cred.detail == "sign in" and cred.fields() == {"detail": "sign in"}


def test_put_value_is_masked() -> None:
    from plugin_client.plugin import SecretText

    seen: List[Any] = []

    class Store(SecretSourcePlugin):
        def put(self, reference: str, value: SecretText) -> bool:
            seen.append(value)
            return False

    replies = run_in_process(Store, INIT, req(2, "put", reference="r", value="hunter2"))
    assert replies[1]["result"] == {"replaced": False}
    (value,) = seen
    assert value.get_secret_value() == "hunter2" and "hunter2" not in f"{value} {value!r}"


@pytest.mark.parametrize("value", ["plain", 'h\u00e9llo \u2713 "q" \\ \t\x00\x1f\x7f \U0001f511', ""])
@pytest.mark.parametrize("lease", [None, 0, 2**64 - 1])
def test_sdk_writes_the_bytes_the_protocol_module_writes(value: str, lease: Any) -> None:
    from plugin_client import protocol
    from plugin_client._plugin_wire import result_line

    body: Dict[str, Any] = {"value": value} if lease is None else {"value": value, "lease_seconds": lease}
    model = GetResult(value=SecretStr(value), lease_seconds=lease)
    assert result_line(7, body) == protocol.encode_result(7, model)
    entries = protocol.ListResult(entries=[ListEntry(reference=value), ListEntry(reference="x", display=value)])
    assert result_line(8, {"entries": [{"reference": value}, {"reference": "x", "display": value}]}) == (
        protocol.encode_result(8, entries)
    )


def test_a_lone_surrogate_is_refused_without_echoing_the_secret() -> None:
    class Bad(SecretSourcePlugin):
        def get(self, reference: str) -> str:
            return "secret\ud800"

    err = run_in_process(Bad, INIT, req(2, "get", reference="r"))[1]["error"]
    assert err["kind"] == "other" and "secret" not in err["detail"] and "surrogate" in err["detail"]

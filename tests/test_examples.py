"""Every example plugin in ``examples/plugins`` runs through the client, and every shipped
manifest's checksum matches its executable (so they cannot drift)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from plugin_client import errors
from plugin_client.client import PluginClient
from plugin_client.manifest import discover_plugins, load_plugin
from plugin_client.policy import LifetimePolicy
from plugin_client.protocol import Capability
from plugin_client.source import PluginSecretSource

from conformance import EXAMPLES, RawPlugin, make_sdk_plugin, python_for_examples

POLICY = LifetimePolicy(request_timeout=10.0, start_timeout=15.0, shutdown_grace=1.0, exit_wait=1.0)
SHIPPED = {"jsonfile", "shell-demo"}


def _stopped_cleanly(client: PluginClient) -> None:
    client.shutdown()
    last = client.health().last_exit
    assert last is not None and last.stage.value == "stdin-close" and last.returncode == 0, last


@pytest.fixture
def py_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """$PLUGIN_CLIENT_PYTHON as plugin-client's CLI would set it (this interpreter)."""
    python = python_for_examples(tmp_path / "bin")
    monkeypatch.setenv("PLUGIN_CLIENT_PYTHON", python)
    monkeypatch.delenv("JSONFILE_SECRETS_PATH", raising=False)
    return python


@pytest.fixture
def secrets_copy(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "secrets.json"
    path.parent.mkdir()
    shutil.copy(EXAMPLES / "jsonfile-secrets.json", path)
    return path


# --- the shipped manifests ----------------------------------------------------------------


def test_every_shipped_manifest_verifies() -> None:
    """Fails with the new checksum in the message when an example is edited."""
    outcomes = discover_plugins(EXAMPLES)
    problems = [str(o.error) for o in outcomes if o.error is not None]
    assert problems == []
    assert {o.plugin.manifest.name for o in outcomes if o.plugin} == SHIPPED


def test_shipped_executables_hold_no_machine_specific_path() -> None:
    for name in SHIPPED:
        text = (EXAMPLES / f"devboy-source-{name}").read_text()
        assert text.startswith("#!/bin/sh\n")
        for marker in ("/home/", "/tmp/", "/work/", ".venv", "site-packages"):
            assert marker not in text, (name, marker)


# --- jsonfile: the SDK-based Python example ---------------------------------------------------


def test_jsonfile_all_methods(py_env: str, secrets_copy: Path) -> None:
    plugin = load_plugin(EXAMPLES / "devboy-source-jsonfile.toml")
    with PluginClient(plugin, policy=POLICY, config={"path": str(secrets_copy)}) as client:
        src = PluginSecretSource(client)
        assert src.capabilities == (
            Capability.READ | Capability.LIST | Capability.VALIDATE | Capability.WRITE | Capability.DELETE | Capability.KEY_SOURCE
        )
        assert src.is_available().available
        secret = src.get("demo/db-password")
        assert secret is not None and secret.value.get_secret_value() == "dummy-db-password-not-a-secret"
        assert secret.lease is not None and secret.lease.total_seconds() == 300
        greeting = src.get("demo/greeting")
        assert greeting is not None and greeting.lease is None
        assert src.get("demo/nope") is None
        assert [(r.reference, r.display) for r in src.list()] == [
            ("demo/api-token", "Demo API token"),
            ("demo/db-password", "Demo database password"),
            ("demo/greeting", None),
        ]
        assert src.validate("demo/greeting") and not src.validate("demo/nope")
        with pytest.raises(errors.BadReference):
            src.validate("bad\nref")
        assert src.put("demo/new", "fresh") is False
        assert src.put("demo/db-password", "rotated") is True
        assert src.delete("demo/greeting") is True and src.delete("demo/greeting") is False
        assert src.key_material("demo-signing").get_secret_value() == bytes(range(32))
        with pytest.raises(errors.BadReference):
            src.key_material("no-such-key")
        _stopped_cleanly(client)
    doc = json.loads(secrets_copy.read_text())
    assert doc["secrets"]["demo/new"] == {"value": "fresh"}
    assert doc["secrets"]["demo/db-password"]["value"] == "rotated"
    assert doc["secrets"]["demo/db-password"]["lease_seconds"] == 300
    assert "demo/greeting" not in doc["secrets"]
    assert oct(secrets_copy.stat().st_mode & 0o777) == "0o600"


def test_jsonfile_default_file_and_env_var(py_env: str, secrets_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = load_plugin(EXAMPLES / "devboy-source-jsonfile.toml")
    with PluginClient(plugin, policy=POLICY, config={"read_only": True}) as client:
        assert client.get("demo/greeting").value.get_secret_value() == "hello from a JSON file"
        assert not client.start().capabilities & Capability.WRITE
        with pytest.raises(errors.UnsupportedCapability):
            client.put("demo/greeting", "no")
    doc = json.loads(secrets_copy.read_text())
    doc["secrets"]["from/env"] = "env-file-value"
    secrets_copy.write_text(json.dumps(doc))
    monkeypatch.setenv("JSONFILE_SECRETS_PATH", str(secrets_copy))
    with PluginClient(plugin, policy=POLICY) as client:
        assert client.get("from/env").value.get_secret_value() == "env-file-value"


def test_jsonfile_missing_or_broken_file_is_unavailable(py_env: str, tmp_path: Path) -> None:
    plugin = load_plugin(EXAMPLES / "devboy-source-jsonfile.toml")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path in (tmp_path / "absent.json", broken):
        with PluginClient(plugin, policy=POLICY, config={"path": str(path)}) as client:
            src = PluginSecretSource(client)
            status = src.is_available()
            assert status.status.value == "unavailable" and str(path) in (status.detail or "")
            with pytest.raises(errors.SourceUnavailable):
                src.get("demo/greeting")


def test_jsonfile_explains_an_interpreter_without_plugin_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUGIN_CLIENT_PYTHON", python_for_examples(tmp_path / "bin", site=False))
    plugin = load_plugin(EXAMPLES / "devboy-source-jsonfile.toml")
    client = PluginClient(plugin, policy=POLICY)
    with pytest.raises(errors.InitError):
        client.start()
    tail = "\n".join(client.health().stderr_tail)
    assert "cannot import plugin_client" in tail and "PLUGIN_CLIENT_PYTHON" in tail
    client.shutdown()


README_HOST = """
import sys
from plugin_client import PluginClient, LifetimePolicy, PluginError, load_plugin

plugin = load_plugin(sys.argv[1])
with PluginClient(plugin, policy=LifetimePolicy(request_timeout=10.0, start_timeout=15.0)) as vault:
    secret = vault.get("demo/db-password")
    print("lease:", secret.lease_seconds, "value:", secret.value.get_secret_value())
"""


def test_jsonfile_from_a_plain_host_with_no_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's host, in a fresh process with no PLUGIN_CLIENT_PYTHON: the manifest
    allow-lists it, so the client passes its own interpreter (issue 23, item 2)."""
    monkeypatch.delenv("PLUGIN_CLIENT_PYTHON", raising=False)
    monkeypatch.delenv("JSONFILE_SECRETS_PATH", raising=False)
    proc = subprocess.run(
        [sys.executable, "-c", README_HOST, str(EXAMPLES / "devboy-source-jsonfile.toml")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "lease: 300 value: dummy-db-password-not-a-secret\n"


def test_jsonfile_in_process_with_no_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLUGIN_CLIENT_PYTHON", raising=False)
    monkeypatch.delenv("JSONFILE_SECRETS_PATH", raising=False)
    with PluginClient(load_plugin(EXAMPLES / "devboy-source-jsonfile.toml"), policy=POLICY) as client:
        assert client.get("demo/greeting").value.get_secret_value() == "hello from a JSON file"
        _stopped_cleanly(client)


@pytest.mark.parametrize(
    "allowed, host_value, seen",
    [
        (["PLUGIN_CLIENT_PYTHON"], None, sys.executable),  # the host's own interpreter
        (["PLUGIN_CLIENT_PYTHON"], "/opt/py/bin/python3", "/opt/py/bin/python3"),  # the host's choice wins
        ([], None, "<unset>"),  # not allow-listed: nothing is added
        ([], "/opt/py/bin/python3", "<unset>"),
    ],
)
def test_the_interpreter_reaches_only_a_manifest_that_lists_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowed: List[str], host_value: Optional[str], seen: str
) -> None:
    if host_value is None:
        monkeypatch.delenv("PLUGIN_CLIENT_PYTHON", raising=False)
    else:
        monkeypatch.setenv("PLUGIN_CLIENT_PYTHON", host_value)
    plugin = make_sdk_plugin(tmp_path / "p", allowed_env_vars=allowed)
    with PluginClient(plugin, policy=POLICY) as client:
        assert client.get("env:PLUGIN_CLIENT_PYTHON").value.get_secret_value() == seen
        assert client.get("env:PATH").value.get_secret_value() == "<unset>"


# --- shell-demo: the dependency-free POSIX sh example ----------------------------------------------


def test_shell_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = load_plugin(EXAMPLES / "devboy-source-shell-demo.toml")
    with PluginClient(plugin, policy=POLICY, source_name="sh-src") as client:
        src = PluginSecretSource(client)
        assert src.name == "sh-src"
        assert src.capabilities == Capability.READ | Capability.LIST | Capability.VALIDATE
        assert src.is_available().available
        token = src.get("demo/token")
        assert token is not None and token.value.get_secret_value() == "dummy-shell-token"
        assert token.lease is not None and token.lease.total_seconds() == 60
        assert src.get("demo/nope") is None
        assert src.get('with "quote') is None
        assert [r.reference for r in src.list()] == ["demo/greeting", "demo/token"]
        assert src.validate("demo/greeting") and not src.validate("x")
        with pytest.raises(errors.UnsupportedCapability):
            src.put("demo/token", "x")
        _stopped_cleanly(client)


def test_shell_demo_sigterm_and_unknown_method() -> None:
    p = RawPlugin([str(EXAMPLES / "devboy-source-shell-demo")])
    try:
        p.init()
        assert p.call("put", {"reference": "a", "value": "b"})["error"]["kind"] == "unsupported-capability"
        p.terminate()
        assert p.proc.wait(10) == 0  # its TERM trap exits 0, also while blocked in `read`
    finally:
        p.kill()


# --- c-echo: the C example, built here ---------------------------------------------------------------


@pytest.fixture(scope="module")
def c_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("cc") is None or shutil.which("sha256sum") is None:
        pytest.skip("needs cc and sha256sum")
    out = tmp_path_factory.mktemp("c-echo")
    proc = subprocess.run(
        ["sh", str(EXAMPLES / "c-echo" / "build.sh"), str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    yield out / "devboy-source-c-echo.toml"


def test_c_echo_through_the_client(c_echo: Path) -> None:
    plugin = load_plugin(c_echo)  # the manifest build.sh wrote, with this machine's checksum
    with PluginClient(plugin, policy=POLICY, source_name='c "quoted" src') as client:
        src = PluginSecretSource(client)
        assert src.capabilities == Capability.READ | Capability.LIST | Capability.VALIDATE
        assert src.is_available().available
        text = 'h\u00e9llo "q" \\ \U0001f511'
        secret = src.get(text)
        assert secret is not None and secret.value.get_secret_value() == "echo:" + text
        assert src.get("missing") is None
        assert [(r.reference, r.display) for r in src.list()] == [("c/one", "First"), ("c/two", None)]
        assert src.validate("x") and not src.validate("")
        _stopped_cleanly(client)


def test_c_echo_raw(c_echo: Path) -> None:
    exe = c_echo.parent / "devboy-source-c-echo"
    p = RawPlugin([str(exe)])
    try:
        p.send_line(b'{"jsonrpc":"2.0","method":"secret_source.init","id":1,"params":{"config":{"source_name":"no"},"source_name":"yes"}}')
        assert p.read()["result"]["source_name"] == "yes"
        assert p.call("delete", {"reference": "x"})["error"] == {
            "kind": "unsupported-capability",
            "capability": "secret_source.delete",
        }
        p.send_line(b"garbage")
        assert p.call("get", {"reference": "a"})["result"]["value"] == "echo:a"
        p.terminate()
        assert p.proc.wait(10) == 0
    finally:
        p.kill()


def test_c_echo_build_outputs_are_ignored_not_shipped() -> None:
    # A compiled binary's checksum is per machine: only the source and build.sh ship.
    ignored = (EXAMPLES / "c-echo" / ".gitignore").read_text().split()
    assert {"devboy-source-c-echo", "devboy-source-c-echo.toml"} <= set(ignored)

"""``plugin-client`` (``python -m plugin_client``), run as a subprocess as an operator would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

import plugin_client

from conformance import EXAMPLES, python_for_examples
from plugin_factory import make_plugin, python_script, write_manifest

SECRET_VALUES = ("dummy-db-password-not-a-secret", "dummy-api-token", "hello from a JSON file", "dummy-shell-token")


class Run:
    def __init__(self, proc: "subprocess.CompletedProcess[str]") -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    python = python_for_examples(tmp_path / "bin")

    def run(*args: str, env: Optional[Dict[str, str]] = None, stdin: str = "", drop: tuple = ()) -> Run:  # type: ignore[type-arg]
        full = dict(os.environ)
        full["PLUGIN_CLIENT_PYTHON"] = python
        for name in ("PLUGIN_CLIENT_PLUGINS_DIR", "JSONFILE_SECRETS_PATH", *drop):
            full.pop(name, None)
        full.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "plugin_client", *args],
            capture_output=True, text=True, input=stdin, env=full, timeout=60, cwd=tmp_path,
        )
        return Run(proc)

    return run


@pytest.fixture
def mixed_dir(tmp_path: Path) -> Path:
    """A healthy plugin, one with a bad checksum, an unparsable manifest and one that dies in init."""
    d = tmp_path / "mixed"
    make_plugin(d, "good")
    bad = make_plugin(d, "tampered")
    with open(bad.executable.path, "ab") as f:
        f.write(b"# changed\n")
    (d / "devboy-source-unparsable.toml").write_text("name = [\n")
    dying = python_script("import sys\nsys.stderr.write('fatal: no config here\\n')\nsys.exit(4)\n")
    make_plugin(d, "dying", dying)
    return d


# --- doctor -------------------------------------------------------------------------------------


def test_doctor_on_the_examples_is_healthy(cli: Any) -> None:
    r = cli("doctor", "--plugins-dir", str(EXAMPLES))
    assert r.code == 0, r.out + r.err
    assert "jsonfile" in r.out and "shell-demo" in r.out
    assert f"core: {plugin_client.IMPLEMENTATION}" in r.out
    assert "2 healthy, 0 unavailable, 0 broken" in r.out
    assert not any(v in r.out + r.err for v in SECRET_VALUES)


def test_doctor_json(cli: Any) -> None:
    r = cli("doctor", "--plugins-dir", str(EXAMPLES), "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["healthy"] is True
    assert doc["implementation"] == plugin_client.IMPLEMENTATION
    assert doc["spawn_method"] and doc["plugins_dir"] == str(EXAMPLES)
    assert doc["counts"] == {"ok": 2, "unavailable": 0, "broken": 0}
    by_name = {p["name"]: p for p in doc["plugins"]}
    assert set(by_name) == {"jsonfile", "shell-demo"}
    for p in by_name.values():
        assert p["verdict"] == "ok" and p["manifest_ok"] and p["checksum"] == "ok"
        assert p["availability"] == "available" and p["spawn_to_ready_ms"] > 0
        assert "READ" in p["capabilities"]
        health = p["health"]
        assert health["plugin_name"] == p["name"] and health["spawn_count"] == 1
        assert health["last_exit"]["stage"] == "stdin-close"
    assert by_name["jsonfile"]["capabilities"] == ["READ", "LIST", "VALIDATE", "WRITE", "DELETE", "KEY_SOURCE"]
    assert not any(v in r.out for v in SECRET_VALUES)


def test_doctor_with_broken_plugins(cli: Any, mixed_dir: Path) -> None:
    r = cli("doctor", "--plugins-dir", str(mixed_dir))
    assert r.code == 1
    assert "1 healthy, 0 unavailable, 3 broken" in r.out
    assert "ChecksumMismatch" in r.out and "ManifestParseError" in r.out
    assert "tampered: broken (executable problem)" in r.out and "unparsable: broken (manifest error)" in r.out
    assert "dying: broken (did not start)" in r.out
    assert "fatal: no config here" in r.out  # the stderr tail of the plugin that died

    doc = cli("doctor", "--plugins-dir", str(mixed_dir), "--json").json()
    by_name = {p["name"]: p for p in doc["plugins"]}
    assert doc["healthy"] is False
    assert by_name["good"]["verdict"] == "ok"
    assert by_name["tampered"]["checksum"] == "mismatch" and by_name["tampered"]["error_type"] == "ChecksumMismatch"
    assert by_name["tampered"]["manifest_ok"] is True and by_name["tampered"]["executable_ok"] is False
    assert by_name["unparsable"]["manifest_ok"] is False and by_name["unparsable"]["checksum"] == "unknown"
    dying = by_name["dying"]
    assert dying["checksum"] == "ok" and dying["error_type"] == "InitError"
    assert "fatal: no config here" in dying["stderr_tail"]
    assert dying["health"]["last_exit"]["returncode"] == 4
    assert dying["problem"] == "start" and f"call dying init --plugins-dir {mixed_dir} -v" in dying["hint"]


def test_doctor_unavailable_plugin_fails(cli: Any, tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    shutil.copy(EXAMPLES / "devboy-source-jsonfile", d)
    shutil.copy(EXAMPLES / "devboy-source-jsonfile.toml", d)  # no data file beside it
    r = cli("doctor", "--plugins-dir", str(d), "--json")
    assert r.code == 1
    p = r.json()["plugins"][0]
    assert p["verdict"] == "unavailable" and p["availability"] == "unavailable"
    assert "jsonfile-secrets.json" in p["availability_detail"]


def test_doctor_empty_missing_and_unlistable_dirs(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = cli("doctor", "--plugins-dir", str(tmp_path / "empty"))
    assert r.code == 0 and "No plugins found" in r.out
    # A mistyped path must fail a health check: exit 3, not "no plugins, healthy".
    r = cli("doctor", "--plugins-dir", str(tmp_path / "absent"), "--json")
    doc = r.json()
    assert r.code == 3 and doc["plugins"] == [] and doc["plugins_dir_exists"] is False
    assert doc["healthy"] is False and doc["plugins_dir_problem"] == "missing"
    (tmp_path / "file").write_text("")
    r = cli("doctor", "--plugins-dir", str(tmp_path / "file"))
    assert r.code == 3 and "is not a directory" in r.err


def test_plugins_dir_from_env_then_default(cli: Any, tmp_path: Path) -> None:
    r = cli("doctor", "--json", env={"PLUGIN_CLIENT_PLUGINS_DIR": str(EXAMPLES)})
    doc = r.json()
    assert r.code == 0 and doc["plugins_dir"] == str(EXAMPLES) and doc["plugins_dir_source"] == "$PLUGIN_CLIENT_PLUGINS_DIR"
    r = cli("doctor", "--json", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    doc = r.json()
    assert r.code == 3 and doc["plugins_dir_problem"] == "missing"  # the default, never created
    assert doc["plugins_dir"] == str(tmp_path / "xdg" / "plugin-client" / "plugins")
    assert doc["plugins_dir_source"] == "default"
    r = cli("doctor", "--json", env={"HOME": str(tmp_path / "home")}, drop=("XDG_CONFIG_HOME",))
    assert r.json()["plugins_dir"] == str(tmp_path / "home" / ".config" / "plugin-client" / "plugins")


def test_usage_errors_exit_2(cli: Any) -> None:
    assert cli().code == 2
    assert cli("frobnicate").code == 2
    assert cli("doctor", "--timeout", "-1").code == 2
    ex = str(EXAMPLES)
    assert cli("call", "shell-demo", "rotate", "--plugins-dir", ex).code == 2
    assert cli("call", "shell-demo", "get", "--plugins-dir", ex).code == 2
    assert cli("call", "shell-demo", "get", "a", "b", "--plugins-dir", ex).code == 2
    r = cli("call", "nope", "list", "--plugins-dir", ex)
    assert r.code == 2 and "jsonfile, shell-demo" in r.err
    assert cli("call", "../examples", "list", "--plugins-dir", ex).code == 2
    assert cli("call", "jsonfile", "list", "--config", "[1]", "--plugins-dir", ex).code == 2
    assert cli("--help").code == 0


# --- call -----------------------------------------------------------------------------------------


def test_call_masks_secrets_unless_revealed(cli: Any) -> None:
    ex = str(EXAMPLES)
    r = cli("call", "jsonfile", "get", "demo/db-password", "--plugins-dir", ex)
    assert r.code == 0, r.err
    assert "dummy-db-password" not in r.out + r.err
    assert "value: **********" in r.out and "lease_seconds: 300" in r.out
    r = cli("call", "jsonfile", "get", "demo/db-password", "--plugins-dir", ex, "--reveal")
    assert r.code == 0 and "value: dummy-db-password-not-a-secret" in r.out

    doc = cli("call", "jsonfile", "get", "demo/db-password", "--plugins-dir", ex, "--json").json()
    assert doc == {"ok": True, "result": {"value": "**********", "lease_seconds": 300}}
    doc = cli("call", "jsonfile", "get", "demo/db-password", "--plugins-dir", ex, "--json", "--reveal").json()
    assert doc["result"]["value"] == "dummy-db-password-not-a-secret"

    key = cli("call", "jsonfile", "key_material", "demo-signing", "--plugins-dir", ex, "--json").json()
    assert key["result"] == {"material_b64": "**********", "length": 32}
    key = cli("call", "jsonfile", "key-material", "demo-signing", "--plugins-dir", ex, "--json", "--reveal").json()
    assert key["result"]["material_b64"] == "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def test_call_other_methods_and_errors(cli: Any, tmp_path: Path) -> None:
    ex = str(EXAMPLES)
    r = cli("call", "shell-demo", "list", "--plugins-dir", ex)
    assert r.code == 0 and r.out.splitlines() == ["demo/greeting\tA greeting", "demo/token\tA dummy token"]
    r = cli("call", "shell-demo", "init", "--plugins-dir", ex, "--source-name", "mine")
    assert "source_name: mine" in r.out and "capabilities: READ, LIST, VALIDATE" in r.out
    assert "status: available" in cli("call", "shell-demo", "is_available", "--plugins-dir", ex).out
    assert "ok: true" in cli("call", "shell-demo", "validate", "demo/token", "--plugins-dir", ex).out

    r = cli("call", "shell-demo", "get", "demo/nope", "--plugins-dir", ex)
    assert r.code == 1 and "not found" in r.err
    doc = cli("call", "shell-demo", "get", "demo/nope", "--plugins-dir", ex, "--json").json()
    assert doc["ok"] is False and doc["error"]["kind"] == "bad-reference" and doc["error"]["reason"] == "not found"
    r = cli("call", "shell-demo", "put", "demo/token", "x", "--plugins-dir", ex)
    assert r.code == 1 and "UnsupportedCapability" in r.err


def test_call_put_reads_the_value_from_stdin(cli: Any, tmp_path: Path) -> None:
    data = tmp_path / "s.json"
    shutil.copy(EXAMPLES / "jsonfile-secrets.json", data)
    args = ["--plugins-dir", str(EXAMPLES), "--config", json.dumps({"path": str(data)})]
    r = cli("call", "jsonfile", "put", "new/one", *args, stdin="from-stdin-value\n")
    assert r.code == 0 and "replaced: false" in r.out
    assert "from-stdin-value" not in r.out + r.err
    assert "existed: true" in cli("call", "jsonfile", "delete", "demo/greeting", *args).out
    assert json.loads(data.read_text())["secrets"]["new/one"] == {"value": "from-stdin-value"}


def test_operator_python_setting_wins(cli: Any, tmp_path: Path) -> None:
    r = cli("doctor", "--plugins-dir", str(EXAMPLES), "--json",
            env={"PLUGIN_CLIENT_PYTHON": python_for_examples(tmp_path / "nosite", site=False)})
    assert r.code == 1
    jsonfile = next(p for p in r.json()["plugins"] if p["name"] == "jsonfile")
    assert any("cannot import plugin_client" in line for line in jsonfile["stderr_tail"])


def test_main_in_process_returns_codes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plugin_client.cli import main

    monkeypatch.delenv("PLUGIN_CLIENT_PYTHON", raising=False)

    assert main(["doctor", "--plugins-dir", str(tmp_path / "none")]) == 3
    assert "does not exist" in capsys.readouterr().err
    assert main(["call"]) == 2
    write_manifest(tmp_path, "x", "missing-exe", "0" * 64)
    assert main(["doctor", "--plugins-dir", str(tmp_path), "--json"]) == 1
    found = json.loads(capsys.readouterr().out)["plugins"][0]
    assert found["error_type"] == "ExecutableMissing" and found["problem"] == "executable"
    assert "PLUGIN_CLIENT_PYTHON" not in os.environ  # set for the probes only, then restored

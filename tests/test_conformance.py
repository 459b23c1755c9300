"""``plugin-client conformance`` and :func:`plugin_client.conformance.run_conformance`.

The bundled examples, the SDK's and the hand-written echo plugins pass; each
broken plugin (a small stdlib script with one fault, or ``c_hostile``) fails,
with the right check named and no other.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from plugin_client.conformance import FIRST_ID, run_conformance
from plugin_client.manifest import LoadedPlugin, load_plugin

from _reliability import c_plugin, c_plugins  # noqa: F401 - the session fixture
from conformance import EXAMPLES, make_sdk_plugin, python_for_examples
from plugin_factory import make_plugin, python_script

FAST: Dict[str, Any] = {"quiet_wait": 0.15, "exit_bound": 1.0, "timeout": 5.0}

# A stdlib plugin whose every fault is a knob: CAPS claimed, ANSWERS per method
# (anything else is refused), SHIFT added to each echoed id, code BEFORE the loop
# and AFTER it.
SCRIPT = """\
import json, signal, sys, time
CAPS, ANSWERS, SHIFT = {caps!r}, {answers!r}, {shift!r}
{before}
for line in sys.stdin:
    r = json.loads(line)
    m = r["method"].replace("secret_source.", "", 1)
    if m == "init":
        out = {{"result": {{"source_name": r["params"]["source_name"], "capabilities_bits": CAPS, "plugin_version": "1"}}}}
    elif m in ANSWERS:
        out = {{"result": ANSWERS[m]}}
    else:
        out = {{"error": {{"kind": "unsupported-capability", "capability": m}}}}
    print(json.dumps(dict(jsonrpc="2.0", id=r["id"] + SHIFT, **out)), flush=True)
{after}
"""
GOOD = {"is_available": {"status": "available"}, "get": {"value": "v"}, "list": {"entries": []}, "validate": {"ok": True}}


def script(caps: int = 7, answers: Optional[Dict[str, Any]] = None, shift: int = 0, before: str = "",
           after: str = "") -> bytes:
    return python_script(SCRIPT.format(caps=caps, answers=GOOD if answers is None else answers, shift=shift,
                                       before=before, after=after))


def statuses(plugin: LoadedPlugin, **kw: Any) -> Dict[str, str]:
    report = run_conformance(plugin, **{**FAST, **kw})
    assert report.ok == (not report.failed())
    return {c.name: c.status for c in report.checks}


def failed(plugin: LoadedPlugin, **kw: Any) -> set:  # type: ignore[type-arg]
    return {name for name, status in statuses(plugin, **kw).items() if status == "fail"}


@pytest.fixture
def py_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$PLUGIN_CLIENT_PYTHON for the jsonfile example, as the CLI sets it."""
    monkeypatch.setenv("PLUGIN_CLIENT_PYTHON", python_for_examples(tmp_path / "bin"))
    monkeypatch.delenv("JSONFILE_SECRETS_PATH", raising=False)


# --- conformant plugins ------------------------------------------------------------------


def test_a_good_stdlib_plugin_passes_every_check(tmp_path: Path) -> None:
    got = statuses(make_plugin(tmp_path, "good", script()))
    assert got == {
        "init": "pass", "is_available": "pass", "get": "pass", "list": "pass", "validate": "pass",
        "key_material": "skip", "put": "skip", "delete": "skip", "unclaimed-capability": "pass",
        "unknown-method": "pass", "ids-echoed": "pass", "stdout-only-replies": "pass",
        "exit-on-stdin-close": "pass", "exit-on-sigterm": "pass",
    }


def test_shell_demo_example_passes() -> None:
    assert failed(load_plugin(EXAMPLES / "devboy-source-shell-demo.toml")) == set()


def test_jsonfile_example_passes_with_writes_on_a_copy(py_env: None, tmp_path: Path) -> None:
    data = tmp_path / "secrets.json"
    shutil.copy(EXAMPLES / "jsonfile-secrets.json", data)
    plugin = load_plugin(EXAMPLES / "devboy-source-jsonfile.toml")
    got = statuses(plugin, write=True, config={"path": str(data)})
    assert set(got.values()) <= {"pass", "skip"} and got["put"] == got["delete"] == "pass"
    assert "plugin-client-conformance" not in data.read_text()  # put, then delete: the store is as it was


def test_c_echo_example_passes(tmp_path: Path) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    subprocess.run(["sh", str(EXAMPLES / "c-echo" / "build.sh"), str(tmp_path)], check=True, capture_output=True)
    assert failed(load_plugin(tmp_path / "devboy-source-c-echo.toml")) == set()


def test_sdk_plugin_passes_with_writes(tmp_path: Path) -> None:
    assert failed(make_sdk_plugin(tmp_path), write=True) == set()


def test_ids_are_far_from_one(tmp_path: Path) -> None:
    report = run_conformance(make_plugin(tmp_path, "good", script()), **FAST)
    assert str(FIRST_ID) in next(c.detail for c in report.checks if c.name == "ids-echoed")
    assert FIRST_ID > 2**32


# --- broken plugins: each fails its own check ------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "content", "expected"),
    [
        ("wrong-id", {"shift": 1}, {"init", "ids-echoed"}),
        ("banner", {"before": "print('starting up', flush=True)"}, {"stdout-only-replies"}),
        ("ignores-eof", {"after": "time.sleep(60)"}, {"exit-on-stdin-close"}),
        ("ignores-sigterm", {"before": "signal.signal(signal.SIGTERM, signal.SIG_IGN)"}, {"exit-on-sigterm"}),
        ("claims-list-but-refuses-it", {"answers": {k: v for k, v in GOOD.items() if k != "list"}}, {"list"}),
        ("answers-unclaimed-validate", {"caps": 1}, {"unclaimed-capability"}),
        ("answers-unknown-method", {"answers": {**GOOD, "plugin_client_conformance_probe": {}}}, {"unknown-method"}),
        ("wrong-shape", {"answers": {**GOOD, "get": {"val": "v"}}}, {"get"}),
        ("unknown-bit", {"caps": 7 | 0x400}, {"init"}),
        ("exits-on-eof-with-1", {"after": "sys.exit(1)"}, {"exit-on-stdin-close"}),
    ],
)
def test_a_broken_plugin_fails_the_right_check(tmp_path: Path, fault: str, content: Dict[str, Any],
                                                expected: set) -> None:  # type: ignore[type-arg]
    assert failed(make_plugin(tmp_path, fault, script(**content))) == expected


def test_a_crash_mid_run_fails_that_check_and_the_run_goes_on(tmp_path: Path) -> None:
    body = script().replace(b"    elif m in ANSWERS:", b"    elif m == 'get':\n        sys.exit(5)\n    elif m in ANSWERS:")
    got = statuses(make_plugin(tmp_path, "crashy", body))
    assert got["get"] == "fail" and got["list"] == got["validate"] == got["exit-on-sigterm"] == "pass"


def test_c_hostile_fails_on_a_stray_reply_before_init(c_plugins: Dict[str, bytes], tmp_path: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTILE_START", "prereply")
    plugin = c_plugin(c_plugins, tmp_path, allowed_env_vars=["HOSTILE_START"])
    assert failed(plugin) == {"stdout-only-replies"}


def test_c_hostile_fails_init_when_it_answers_for_another_source(c_plugins: Dict[str, bytes],  # noqa: F811
                                                                 tmp_path: Path) -> None:
    plugin = c_plugin(c_plugins, tmp_path)
    assert failed(plugin, config={"mode": "wrong-source"}) == {"init"}


def test_c_hostile_never_answering_init_is_a_timeout(c_plugins: Dict[str, bytes], tmp_path: Path) -> None:  # noqa: F811
    report = run_conformance(c_plugin(c_plugins, tmp_path), **{**FAST, "timeout": 0.5}, config={"mode": "hang"})
    assert report.failed() == ["init"] and "no reply within 0.5 s" in report.checks[0].detail


# --- the command line ---------------------------------------------------------------------


def _cli(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "plugin_client", "conformance", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_report_and_exit_codes(tmp_path: Path) -> None:
    ok = _cli(str(EXAMPLES / "devboy-source-shell-demo.toml"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS  unknown-method" in ok.stdout and ok.stdout.rstrip().endswith("conformant")
    banner = make_plugin(tmp_path, "banner", script(before="print('hi', flush=True)"))
    bad = _cli(str(banner.manifest_path), "--json")
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False and doc["failed"] == ["stdout-only-replies"]
    assert {"name", "status", "detail"} == set(doc["checks"][0])


def test_cli_refused_manifest_is_exit_1_and_usage_is_2(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path, "tampered", script())
    with open(plugin.executable.path, "ab") as f:
        f.write(b"# changed\n")
    r = _cli(str(plugin.manifest_path))
    assert r.returncode == 1 and "ChecksumMismatch" in r.stderr
    assert _cli(str(plugin.manifest_path), "--config", "[1]").returncode == 2

"""``plugin-client doctor``: probes side by side, plugin names, an unusable plugins
directory (and ``call``'s same report of it), executable problems, the JSON schema.

Real plugins, the CLI run as a subprocess as an operator would, and in process
where the processes it leaves behind are checked. Over both cores: run the file
with and without ``PLUGIN_CLIENT_NO_EXTENSIONS=1``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import plugin_client
from plugin_client import cli as cli_module
from plugin_client._cli_doctor import SCHEMA_VERSION, DoctorHost, probe_all, run_doctor

from _helpers import is_dead, zombie_children
from plugin_factory import make_plugin, python_script, write_manifest

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples" / "plugins"


class Run:
    def __init__(self, proc: "subprocess.CompletedProcess[str]", seconds: float) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.seconds = seconds

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*args: str, env: Optional[Dict[str, str]] = None) -> Run:
    full = dict(os.environ)
    full.pop("PLUGIN_CLIENT_PLUGINS_DIR", None)
    full.update(env or {})
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "plugin_client", *args], capture_output=True, text=True, env=full, timeout=60
    )
    return Run(proc, time.monotonic() - t0)


def hung_plugin(directory: Path, name: str) -> Path:
    """A plugin that never answers ``init`` and ignores SIGTERM (only SIGKILL ends it);
    it writes its pid to ``<name>.pid`` first."""
    pidfile = directory / f"{name}.pid"
    body = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(3600)\n"
    )
    make_plugin(directory, name, python_script(body))
    return pidfile


def pids_of(pidfiles: List[Path]) -> List[int]:
    return [int(p.read_text()) for p in pidfiles]


# --- side by side ---------------------------------------------------------------------------


def test_hung_plugins_are_probed_side_by_side_and_all_reaped(tmp_path: Path) -> None:
    d = tmp_path / "hung"
    n, timeout = 6, 0.5
    pidfiles = [hung_plugin(d, f"hung{i}") for i in range(n)]
    make_plugin(d, "good")
    r = run_cli("doctor", "--plugins-dir", str(d), "--json", "--timeout", str(timeout))
    assert r.code == 1, r.err
    doc = r.json()
    by_name = {p["name"]: p for p in doc["plugins"]}
    assert by_name["good"]["verdict"] == "ok"
    for i in range(n):
        p = by_name[f"hung{i}"]
        assert p["verdict"] == "broken" and p["problem"] == "start", p
        assert p["error_type"] and p["spawn_to_ready_ms"] is None and p["hint"]
    # One after the other, each needs at least its start timeout: n * timeout (3 s here).
    # Side by side they share one (measured: 0.52 s); half of n * timeout leaves room for
    # a loaded machine and still fails for probes one after the other.
    assert doc["elapsed_ms"] < n * timeout * 1000 / 2, doc["elapsed_ms"]
    assert r.seconds < n * timeout, r.seconds
    # Every one was SIGKILLed and reaped by doctor, not left to init.
    assert all(is_dead(pid) for pid in pids_of(pidfiles))


def test_probe_all_in_process_leaves_no_process_or_zombie(tmp_path: Path) -> None:
    d = tmp_path / "hung"
    pidfiles = [hung_plugin(d, f"hung{i}") for i in range(4)]
    make_plugin(d, "good")
    t0 = time.monotonic()
    found = probe_all(DoctorHost(d, 0.4))
    took = time.monotonic() - t0
    assert [p["name"] for p in found] == ["good", "hung0", "hung1", "hung2", "hung3"]  # file-name order
    assert [p["verdict"] for p in found] == ["ok", "broken", "broken", "broken", "broken"]
    pids = pids_of(pidfiles)
    assert all(is_dead(pid) for pid in pids)
    assert not set(zombie_children()) & set(pids)
    assert took < 4 * 0.4 * 0.75, took  # one after the other: >= 1.6 s; side by side: ~0.4 s
    for p in found:
        assert p["health"]["pid"] is None  # its client holds no process any more


# --- names ----------------------------------------------------------------------------------


def test_doctor_probes_only_the_named_plugins(tmp_path: Path) -> None:
    d = tmp_path / "p"
    make_plugin(d, "alpha")
    make_plugin(d, "beta")
    (d / "devboy-source-gamma.toml").write_text("name = [\n")
    r = run_cli("doctor", "beta", "--plugins-dir", str(d), "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert [p["name"] for p in doc["plugins"]] == ["beta"] and doc["selected"] == ["beta"]
    r = run_cli("doctor", "gamma", "alpha", "--plugins-dir", str(d), "--json")
    assert r.code == 1 and [p["name"] for p in r.json()["plugins"]] == ["alpha", "gamma"]

    r = run_cli("doctor", "alpha", "nope", "--plugins-dir", str(d))
    assert r.code == 2 and r.out == ""
    assert "No plugin 'nope'" in r.err and "(found: alpha, beta, gamma)" in r.err


# --- the plugins directory --------------------------------------------------------------------


def _bad_dirs(tmp_path: Path) -> Dict[str, Path]:
    (tmp_path / "a-file").write_text("")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)  # ELOOP: unreadable even for root, who bypasses chmod
    return {
        "missing": tmp_path / "absent",
        "not-a-directory": tmp_path / "a-file",
        "not-a-directory ": tmp_path / "a-file" / "below",
        "unreadable": loop,
    }


def test_unusable_plugins_dir_exits_3_in_doctor_and_call_alike(tmp_path: Path) -> None:
    for kind, path in _bad_dirs(tmp_path).items():
        r = run_cli("doctor", "--plugins-dir", str(path), "--json")
        assert r.code == 3, (kind, r.out, r.err)
        doc = r.json()
        assert doc["healthy"] is False and doc["plugins"] == [] and doc["schema_version"] == SCHEMA_VERSION
        assert doc["plugins_dir_problem"] == kind.strip() and doc["error_type"] == "ManifestUnreadable"
        assert str(path) in doc["error"] and "--plugins-dir" in doc["error"]
        assert cli_module.PLUGINS_DIR_ENV in doc["error"]

        text = run_cli("doctor", "--plugins-dir", str(path))
        assert text.code == 3 and f"plugins dir: {path}" in text.out
        message = text.err.strip().split(": ", 1)[1]
        assert text.err.startswith("plugin-client doctor: ") and message.endswith(doc["error"])

        call = run_cli("call", "anything", "list", "--plugins-dir", str(path))
        assert call.code == 3 and call.out == ""
        assert call.err.strip() == f"plugin-client call: {message}"  # exactly doctor's words
        call_json = run_cli("call", "anything", "list", "--plugins-dir", str(path), "--json").json()
        assert call_json == {"ok": False, "error": {
            "type": "ManifestUnreadable", "message": doc["error"], "plugins_dir_problem": kind.strip(),
        }}


def test_unusable_plugins_dir_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_doctor(tmp_path / "absent", timeout=1.0, source="--plugins-dir")
    assert doc["healthy"] is False and doc["plugins_dir_problem"] == "missing"
    assert cli_module.main(["doctor", "--plugins-dir", str(tmp_path / "absent")]) == 3
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_module.main(["doctor", "--plugins-dir", str(tmp_path / "empty"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plugins_dir_problem"] is None


# --- executable problems ------------------------------------------------------------------------


def test_executable_problems_are_reported_as_such(tmp_path: Path) -> None:
    d = tmp_path / "p"
    make_plugin(d, "good")
    write_manifest(d, "missing", "devboy-source-missing", "0" * 64)
    noexec = make_plugin(d, "noexec")
    os.chmod(noexec.executable.path, 0o644)
    tampered = make_plugin(d, "tampered")
    with open(tampered.executable.path, "ab") as f:
        f.write(b"# changed\n")
    unsafe = make_plugin(d, "unsafe")
    os.chmod(unsafe.executable.path, 0o775)  # group-writable
    (d / "devboy-source-unparsable.toml").write_text("name = [\n")

    r = run_cli("doctor", "--plugins-dir", str(d), "--json")
    assert r.code == 1, r.err
    by_name = {p["name"]: p for p in r.json()["plugins"]}
    expected = {
        "missing": ("ExecutableMissing", "missing"),
        "noexec": ("ExecutableNotExecutable", "not-executable"),
        "tampered": ("ChecksumMismatch", "checksum-mismatch"),
        "unsafe": ("UnsafePermissions", "unsafe-permissions"),
    }
    for name, (error_type, kind) in expected.items():
        p = by_name[name]
        assert (p["error_type"], p["executable_problem"], p["problem"]) == (error_type, kind, "executable"), p
        assert p["manifest_ok"] is True and p["executable_ok"] is False and p["verdict"] == "broken"
        assert p["executable"] == str(d / f"devboy-source-{name}")
        assert p["hint"] and "plugin-client manifest" in p["hint"]
    assert "manifest update" in by_name["tampered"]["hint"]
    bad = by_name["unparsable"]
    assert bad["problem"] == "manifest" and bad["manifest_ok"] is False and bad["executable_ok"] is None
    assert by_name["good"]["problem"] is None and by_name["good"]["hint"] is None

    text = run_cli("doctor", "--plugins-dir", str(d)).out
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] and line.split()[0] in by_name}
    assert rows["missing"][1:4] == ["-", "ok", "missing"]  # VERSION, MANIFEST, EXECUTABLE
    assert rows["unparsable"][2] == "error"
    for name in expected:
        assert f"{name}: broken (executable problem)" in text
    assert "unparsable: broken (manifest error)" in text
    assert text.count("what to do: ") == 5


def test_executable_changed_after_loading_is_an_executable_problem(tmp_path: Path) -> None:
    d = tmp_path / "p"
    plugin = make_plugin(d, "swapped")
    host = DoctorHost(d, 2.0)  # verified here
    data = plugin.executable.path.read_bytes() + b"# swapped after verification\n"
    plugin.executable.path.write_bytes(data)
    (found,) = probe_all(host)
    assert found["error_type"] == "ExecutableChanged" and found["problem"] == "executable"
    assert found["executable_problem"] == "changed" and found["executable_ok"] is False
    assert found["spawn_to_ready_ms"] is None and "run doctor again" in found["hint"]


# --- the report ------------------------------------------------------------------------------


def test_spawn_report_names_both_paths(tmp_path: Path) -> None:
    d = tmp_path / "p"
    make_plugin(d, "good")
    r = run_cli("doctor", "--plugins-dir", str(d), "--json")
    doc = r.json()
    if doc["implementation"] == "cython":
        assert doc["spawn_method_elf"] == "vfork+execveat(fd)"
    else:
        assert "/proc/self/fd" in doc["spawn_method_elf"] and doc["spawn_method_elf"].startswith("os.posix_spawn")
    assert doc["spawn_method"] != doc["spawn_method_elf"]
    text = run_cli("doctor", "--plugins-dir", str(d)).out
    assert f"spawn: scripts {doc['spawn_method']}; ELF binaries {doc['spawn_method_elf']}" in text


def _documented_keys() -> set:  # type: ignore[type-arg]
    text = README.read_text()
    section = text[text.index("`doctor --json` prints one object"):]
    section = section[: section.index("Schema 2 (this version)")]  # the two tables, not the history
    return set(re.findall(r"`([a-z_]+)`", section))


def test_every_json_field_is_documented(tmp_path: Path) -> None:
    d = tmp_path / "p"
    make_plugin(d, "good")
    doc = run_cli("doctor", "--plugins-dir", str(d), "--json").json()
    documented = _documented_keys()
    assert set(doc) - documented == set()
    assert set(doc["plugins"][0]) - documented == set()
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    assert plugin_client.__version__ == doc["plugin_client_version"]


def test_elf_and_script_plugins_side_by_side(tmp_path: Path) -> None:
    """An ELF binary (run from its verified descriptor) and a script (run by path) in one
    directory: both probed, both healthy."""
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler (cc)")
    d = tmp_path / "p"
    make_plugin(d, "script")
    subprocess.run(["sh", str(EXAMPLES_DIR / "c-echo" / "build.sh"), str(d)], check=True, capture_output=True)
    r = run_cli("doctor", "--plugins-dir", str(d), "--json")
    assert r.code == 0, r.out + r.err
    by_name = {p["name"]: p for p in r.json()["plugins"]}
    assert set(by_name) == {"c-echo", "script"}
    assert all(p["verdict"] == "ok" and p["executable_ok"] is True for p in by_name.values())


def stubborn_plugin(directory: Path, name: str) -> Path:
    """A healthy plugin that ignores SIGTERM and lingers after stdin EOF: only SIGKILL,
    after exit_wait + shutdown_grace, ends it. It writes its pid to ``<name>.pid``."""
    pidfile = directory / f"{name}.pid"
    body = (
        "import json, os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "for line in sys.stdin:\n"
        "    r = json.loads(line)\n"
        "    res = ({'source_name': r['params']['source_name'], 'capabilities_bits': 1, 'plugin_version': '1'}\n"
        "           if r['method'].endswith('init') else {'status': 'available'})\n"
        "    print(json.dumps({'jsonrpc': '2.0', 'id': r['id'], 'result': res}), flush=True)\n"
        "time.sleep(3600)\n"
    )
    make_plugin(directory, name, python_script(body))
    return pidfile


def test_plugins_that_resist_shutdown_are_stopped_side_by_side(tmp_path: Path) -> None:
    d = tmp_path / "stubborn"
    n, timeout = 4, 0.4  # the probe's exit_wait and grace are min(1, T) and min(2, T)
    pidfiles = [stubborn_plugin(d, f"s{i}") for i in range(n)]
    t0 = time.monotonic()
    found = probe_all(DoctorHost(d, timeout))
    took = time.monotonic() - t0
    assert [p["verdict"] for p in found] == ["ok"] * n, found
    assert all(p["health"]["last_exit"]["stage"] == "sigkill" for p in found), [p["health"]["last_exit"] for p in found]
    assert all(is_dead(pid) for pid in pids_of(pidfiles))
    assert not set(zombie_children()) & set(pids_of(pidfiles))
    # One after the other: n stops of exit_wait + grace (0.8 s each, 3.2 s); side by side, one.
    assert took < n * 2 * timeout * 0.75, took


def answering_plugin(directory: Path, name: str, is_available: str) -> None:
    """A plugin that starts, then answers ``is_available`` with the JSON ``is_available``
    (a result or an error object), or never answers it when that is ``"hang"``."""
    body = (
        "import json, sys, time\n"
        "for line in sys.stdin:\n"
        "    r = json.loads(line)\n"
        "    if r['method'].endswith('init'):\n"
        "        out = {'result': {'source_name': r['params']['source_name'], 'capabilities_bits': 1, 'plugin_version': '2'}}\n"
        f"    elif {is_available!r} == 'hang':\n"
        "        time.sleep(3600)\n"
        "    else:\n"
        f"        out = json.loads({is_available!r})\n"
        "    print(json.dumps(dict(out, jsonrpc='2.0', id=r['id'])), flush=True)\n"
    )
    make_plugin(directory, name, python_script(body))


def test_is_available_failures_after_a_good_start(tmp_path: Path) -> None:
    """Each client's probe is init then is_available: a plugin that started but is not
    available is "unavailable", one whose is_available times out is broken at that step,
    and a hung is_available delays no other plugin's findings."""
    d = tmp_path / "p"
    answering_plugin(d, "down", '{"result": {"status": "unavailable", "detail": "backend offline"}}')
    answering_plugin(d, "refuses", '{"error": {"code": -32000, "message": "no", "data": {"kind": "other", "detail": "bad"}}}')
    answering_plugin(d, "hangs", "hang")
    timeout = 0.5
    found = {p["name"]: p for p in probe_all(DoctorHost(d, timeout))}
    down = found["down"]
    assert (down["verdict"], down["problem"], down["availability"]) == ("unavailable", "is_available", "unavailable")
    assert down["availability_detail"] == "backend offline" and down["plugin_version"] == "2"
    assert down["spawn_to_ready_ms"] is not None and down["is_available_ms"] is not None
    refuses = found["refuses"]
    assert (refuses["verdict"], refuses["problem"], refuses["error_type"]) == ("unavailable", "is_available", "PluginError")
    hangs = found["hangs"]
    assert (hangs["verdict"], hangs["problem"]) == ("broken", "is_available"), hangs
    assert hangs["spawn_to_ready_ms"] is not None and hangs["is_available_ms"] >= timeout * 1000 * 0.9
    assert "is_available" in hangs["hint"]
    assert all(p["health"]["pid"] is None for p in found.values())
    assert down["is_available_ms"] < timeout * 1000 / 2  # not waiting behind the hung one

"""``plugin-client doctor --sources FILE``: the pre-flight of a ``sources.toml`` on the
command line: its verdict and exit codes (a valid healthy file, a missing or
unavailable source, a rule without an available source, an invalid file, an unusable
plugins directory, usage errors), the text and JSON forms, and hung plugins probed
side by side and reaped.

Real plugins: a raw JSON-RPC script whose ``init`` config says how it answers
``is_available`` (or that it hangs). The CLI runs as a subprocess, and in process
where the processes it leaves behind are checked. Over both cores: run the file with
and without ``PLUGIN_CLIENT_NO_EXTENSIONS=1``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from plugin_client import cli as cli_module
from plugin_client._cli_doctor_sources import run_sources

from _helpers import is_dead, zombie_children
from plugin_factory import make_plugin, python_script

README = Path(__file__).resolve().parent.parent / "README.md"

# A source plugin: config "avail" is its is_available status (default "available"),
# config "hang" makes its init never answer; it ignores SIGTERM then, and writes its
# pid to config "pidfile" when given.
SOURCE_PLUGIN = """
import json, os, signal, sys, time
for line in sys.stdin:
    r = json.loads(line)
    if r['method'].endswith('.init'):
        config = r['params'].get('config') or {}
        if config.get('pidfile'):
            open(config['pidfile'], 'w').write(str(os.getpid()))
        if config.get('hang'):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(3600)
        res = {'source_name': r['params']['source_name'], 'capabilities_bits': 1, 'plugin_version': '1'}
    elif r['method'].endswith('.is_available'):
        res = {'status': config.get('avail', 'available'), 'detail': config.get('detail')}
    else:
        res = {'value': 'v', 'lease_seconds': None}
    print(json.dumps({'jsonrpc': '2.0', 'id': r['id'], 'result': res}), flush=True)
"""

GOOD = """
[[source]]
name = "team-a"
type = "kv"

[[source]]
name = "team-b"
type = "kv"
detail = "second process"

[default]
source = "team-a"

[[route]]
prefix = "team/b/"
source = "team-b"

[secret."ci/deploy/token"]
source = "team-b"
reference = "deploy"
"""

BAD = """
[[source]]
name = "up"
type = "kv"

[[source]]
name = "down"
type = "kv"
avail = "unavailable"
detail = "backend offline"

[[source]]
name = "absent"
type = "not-installed"

[default]
source = "absent"
fallback = "up"

[[route]]
prefix = "ops/"
source = "down"
"""


class Run:
    def __init__(self, proc: "subprocess.CompletedProcess[str]") -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*args: str) -> Run:
    env = dict(os.environ)
    env.pop("PLUGIN_CLIENT_PLUGINS_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "plugin_client", *args], capture_output=True, text=True, env=env, timeout=60
    )
    return Run(proc)


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    d = tmp_path / "plugins"
    make_plugin(d, "kv", python_script(SOURCE_PLUGIN))
    return d


def write(tmp_path: Path, text: str, name: str = "sources.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_healthy_file_exits_0_and_shows_each_source_rule_and_path(tmp_path: Path, plugins: Path) -> None:
    f = write(tmp_path, GOOD)
    r = run_cli("doctor", "--sources", str(f), "--plugins-dir", str(plugins), "--json", "--path", "team/b/db")
    assert r.code == 0, r.out + r.err
    doc = r.json()
    assert doc["healthy"] is True and doc["valid"] is True and doc["plugins_dir_problem"] is None
    assert [(s["name"], s["status"]) for s in doc["sources"]] == [("team-a", "available"), ("team-b", "available")]
    assert {s["detail"] for s in doc["sources"]} == {None, "second process"}  # each source its own config
    assert [(x["rule"], x["ok"]) for x in doc["rules"]] == [("secret", True), ("route", True), ("default", True)]
    assert doc["paths"] == [{"path": "team/b/db", "source": "team-b", "reference": "team/b/db",
                             "rule": "route", "prefix": "team/b/", "fallback": None}]
    assert doc["file"] == str(f) and doc["timeout_s"] == 10.0

    text = run_cli("doctor", "--sources", str(f), "--plugins-dir", str(plugins), "--path", "team/b/db")
    assert text.code == 0 and text.err == ""
    assert re.search(r"^team-b\s+kv\s+ok\s+available$", text.out, re.M), text.out
    assert re.search(r"^route\s+team/b/\s+team-b\s+ok$", text.out, re.M), text.out
    assert "team/b/db -> source 'team-b', reference 'team/b/db' (route team/b/)" in text.out
    assert "2 source(s): 2 available; 3 rule(s): 3 with an available source; healthy" in text.out


def test_missing_and_unavailable_sources_and_a_rule_without_one_exit_1(tmp_path: Path, plugins: Path) -> None:
    f = write(tmp_path, BAD)
    r = run_cli("doctor", "--sources", str(f), "--plugins-dir", str(plugins), "--json", "--timeout", "5")
    assert r.code == 1, r.out + r.err
    doc = r.json()
    assert doc["healthy"] is False and doc["valid"] is True
    by_name = {s["name"]: s for s in doc["sources"]}
    assert by_name["up"]["status"] == "available"
    assert (by_name["down"]["status"], by_name["down"]["detail"]) == ("unavailable", "backend offline")
    absent = by_name["absent"]
    assert absent["status"] is None and absent["plugin"]["found"] is False
    assert absent["plugin"]["error"]["type"] == "SourcePluginMissing"
    assert "devboy-source-not-installed.toml" in absent["plugin"]["error"]["message"]
    rules = {(x["rule"], x["subject"]): x["ok"] for x in doc["rules"]}
    assert rules == {("route", "ops/"): False, ("default", None): True}  # the default's fallback is up

    text = run_cli("doctor", "--sources", str(f), "--plugins-dir", str(plugins), "--timeout", "5").out
    assert re.search(r"^absent\s+not-installed\s+missing\s+-$", text, re.M), text
    assert re.search(r"^route\s+ops/\s+down\s+DOWN$", text, re.M), text
    assert "absent: its plugin 'not-installed' is missing" in text
    assert "down: unavailable\n  backend offline" in text
    assert "NOT healthy" in text


def test_an_unavailable_source_no_rule_names_still_fails(tmp_path: Path, plugins: Path) -> None:
    f = write(tmp_path, GOOD + '\n[[source]]\nname = "spare"\ntype = "kv"\navail = "needs-credential"\n')
    r = run_cli("doctor", "--sources", str(f), "--plugins-dir", str(plugins), "--json")
    assert r.code == 1, r.out + r.err
    doc = r.json()
    assert all(x["ok"] for x in doc["rules"]) and doc["healthy"] is False
    assert {s["name"]: s["status"] for s in doc["sources"]}["spare"] == "needs-credential"


def test_a_path_with_no_route_fails(tmp_path: Path, plugins: Path) -> None:
    f = write(tmp_path, GOOD.replace('[default]\nsource = "team-a"\n', ""))
    r = run_cli("doctor", "--sources", str(f), "--plugins-dir", str(plugins), "--json", "--path", "else/where/x")
    assert r.code == 1, r.out + r.err
    (path,) = r.json()["paths"]
    assert path["path"] == "else/where/x" and path["error"]["type"] == "NoRoute"


def test_an_invalid_or_unreadable_file_exits_4(tmp_path: Path, plugins: Path) -> None:
    bad = write(tmp_path, '[[source]]\nname = "Bad Name"\ntype = "kv"\n\n[[route]]\nprefix = "x"\nsource = "nowhere"\n')
    r = run_cli("doctor", "--sources", str(bad), "--plugins-dir", str(plugins), "--json")
    assert r.code == 4, r.out + r.err
    doc = r.json()
    assert doc["valid"] is False and doc["healthy"] is False and doc["sources"] == []
    subjects = {p["subject"] for p in doc["problems"]}
    assert len(doc["problems"]) >= 2 and any("Bad Name" in (s or "") for s in subjects), doc["problems"]
    text = run_cli("doctor", "--sources", str(bad), "--plugins-dir", str(plugins))
    assert text.code == 4 and "is not valid:" in text.err and "Bad Name" in text.err

    # Exit 4 wins over an unusable plugins directory: nothing in the file is probed.
    missing = run_cli("doctor", "--sources", str(tmp_path / "absent.toml"), "--plugins-dir", str(tmp_path / "nope"))
    assert missing.code == 4 and "does not exist" in missing.err


def test_an_unusable_plugins_dir_exits_3(tmp_path: Path) -> None:
    f = write(tmp_path, GOOD)
    r = run_cli("doctor", "--sources", str(f), "--plugins-dir", str(tmp_path / "absent"), "--json")
    assert r.code == 3, r.out + r.err
    doc = r.json()
    assert doc["plugins_dir_problem"] == "missing" and doc["healthy"] is False
    assert doc["error_type"] == "ManifestUnreadable" and cli_module.PLUGINS_DIR_ENV in doc["error"]
    assert all(s["plugin"]["found"] is False for s in doc["sources"])
    text = run_cli("doctor", "--sources", str(f), "--plugins-dir", str(tmp_path / "absent"))
    assert text.code == 3 and text.err.startswith("plugin-client doctor: ManifestUnreadable: ")


def test_names_and_path_without_sources_are_usage_errors(tmp_path: Path, plugins: Path) -> None:
    f = write(tmp_path, GOOD)
    r = run_cli("doctor", "kv", "--sources", str(f), "--plugins-dir", str(plugins))
    assert r.code == 2 and r.out == "" and "do not mix" in r.err
    r = run_cli("doctor", "--path", "a/b/c", "--plugins-dir", str(plugins))
    assert r.code == 2 and r.out == "" and "--path needs --sources" in r.err


def test_hung_sources_are_probed_side_by_side_and_reaped(tmp_path: Path, plugins: Path) -> None:
    n, timeout = 4, 0.5
    pidfiles = [tmp_path / f"hung{i}.pid" for i in range(n)]
    text = "".join(
        f'[[source]]\nname = "hung{i}"\ntype = "kv"\nhang = true\npidfile = "{p}"\n\n' for i, p in enumerate(pidfiles)
    ) + '[default]\nsource = "hung0"\n'
    f = write(tmp_path, text)
    t0 = time.monotonic()
    doc = run_sources(f, plugins, timeout=timeout)
    took = time.monotonic() - t0
    assert doc["healthy"] is False and [s["status"] for s in doc["sources"]] == ["unavailable"] * n
    assert all("start_timeout=0.5" in (s["detail"] or "") for s in doc["sources"]), doc["sources"]
    pids = [int(p.read_text()) for p in pidfiles]
    assert all(is_dead(pid) for pid in pids)
    assert not set(zombie_children()) & set(pids)
    # One after the other: n start timeouts (2 s) plus n stops; side by side, about one of each.
    assert took < n * timeout * 0.75, took


def _documented_keys() -> set:  # type: ignore[type-arg]
    text = README.read_text()
    section = text[text.index("`doctor --sources FILE --json` prints"):]
    section = section[: section.index("\n\n", section.index("| key |"))]
    return set(re.findall(r"`([a-z_]+)`", section))


def test_every_json_field_is_documented(tmp_path: Path, plugins: Path) -> None:
    doc: Optional[Dict[str, Any]] = run_sources(write(tmp_path, BAD), plugins, timeout=5.0, paths=["ops/x/y"])
    assert doc is not None
    documented = _documented_keys()
    assert set(doc) - documented == set()
    assert set(doc["sources"][0]) - documented == set()
    assert set(doc["sources"][0]["plugin"]) - documented == set()
    assert set(doc["rules"][-1]) - documented == set()

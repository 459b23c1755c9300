"""``reload()`` of both hosts, with real plugins: added, removed, replaced and broken
manifests, a directory that disappears, and plugins removed or replaced while a request
is in flight (it finishes on the old process, which is then stopped). After every test,
no process of the host (retired ones included) is left running."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from plugin_client import ChecksumMismatch, LifetimePolicy, PluginState, ReloadReport, UnknownPlugin

from _helpers import is_dead, wait_until
from host_kinds import host_kind, new_host  # noqa: F401 - fixtures
from plugin_factory import ECHO, STUBBORN, make_plugin, python_script, write_manifest

POLICY = LifetimePolicy(exit_wait=0.2, shutdown_grace=0.5, start_timeout=5.0, request_timeout=5.0)

NewHost = Callable[..., Any]


def _pid(host: Any, name: str) -> int:
    pid = host.health()[name].pid
    assert pid is not None
    return int(pid)


def _in_thread(fn: Callable[[], Any]) -> Dict[str, Any]:
    """Run ``fn`` on a thread; the dict gets "result" or "error", and "thread"."""
    out: Dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out["error"] = exc

    out["thread"] = t = threading.Thread(target=run)
    t.start()
    return out


def test_nothing_changed_is_an_empty_report(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    host = new_host(tmp_path, policy=POLICY)
    host.get("alpha", "value:x")
    pid = _pid(host, "alpha")
    report = host.reload()
    assert isinstance(report, ReloadReport) and not report.changed
    assert report.added == () and dict(report.removed) == {} and dict(report.replaced) == {}
    assert _pid(host, "alpha") == pid  # the same client and process go on


def test_a_new_manifest_adds_a_client(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    host = new_host(tmp_path, policy=POLICY)
    with pytest.raises(UnknownPlugin):
        host.get("beta", "value:x")
    make_plugin(tmp_path, "beta")
    report = host.reload()
    assert report.added == ("beta",) and report.changed
    assert host.names() == ("alpha", "beta")
    assert host.get("beta", "value:x").value.get_secret_value() == "x"


def test_a_removed_manifest_stops_its_client(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    make_plugin(tmp_path, "beta")
    host = new_host(tmp_path, policy=POLICY)
    host.start()
    pid = _pid(host, "beta")
    (tmp_path / "devboy-source-beta.toml").unlink()
    report = host.reload()
    assert list(report.removed) == ["beta"] and "is gone" in report.removed["beta"]
    assert host.names() == ("alpha",)
    assert wait_until(lambda: is_dead(pid), 5.0)
    with pytest.raises(UnknownPlugin):
        host.get("beta", "value:x")


def test_a_changed_manifest_gets_a_new_client(tmp_path: Path, new_host: NewHost) -> None:
    loaded = make_plugin(tmp_path, "alpha")
    host = new_host(tmp_path, policy=POLICY)
    host.get("alpha", "value:x")
    old_pid = _pid(host, "alpha")
    manifest = tmp_path / "devboy-source-alpha.toml"
    manifest.write_text(manifest.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    report = host.reload()
    assert list(report.replaced) == ["alpha"] and "version '0.1.0' -> '0.2.0'" in report.replaced["alpha"]
    assert host["alpha"].manifest.version == "0.2.0"
    assert wait_until(lambda: is_dead(old_pid), 5.0)
    host.get("alpha", "value:y")
    assert _pid(host, "alpha") != old_pid
    del loaded


def test_new_bytes_with_a_new_checksum_replace_and_with_the_old_one_break(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    host = new_host(tmp_path, policy=POLICY)
    # An upgrade: new bytes and their checksum.
    make_plugin(tmp_path, "alpha", content=python_script(ECHO + "\n# v2\n"))
    report = host.reload()
    assert "checksum changed" in report.replaced["alpha"]
    assert host.get("alpha", "value:v2").value.get_secret_value() == "v2"
    pid = _pid(host, "alpha")
    # New bytes, old checksum: removed, and broken says why.
    (tmp_path / "devboy-source-alpha").write_bytes(python_script(ECHO + "\n# tampered\n"))
    report = host.reload()
    assert "no longer loads" in report.removed["alpha"]
    assert isinstance(report.broken["alpha"], ChecksumMismatch) and isinstance(host.broken["alpha"], ChecksumMismatch)
    assert host.names() == ()
    assert wait_until(lambda: is_dead(pid), 5.0)


def test_a_touched_executable_keeps_its_client(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    host = new_host(tmp_path, policy=POLICY)
    assert host.get("alpha", "value:ok").value.get_secret_value() == "ok"
    client = host["alpha"]
    exe = tmp_path / "devboy-source-alpha"
    st = exe.stat()
    os.utime(exe, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    report = host.reload()
    # Same bytes: no new client; the old one verifies the file again by hash.
    assert not report.changed and host["alpha"] is client
    assert host.get("alpha", "value:ok").value.get_secret_value() == "ok"
    assert host.health()["alpha"].crashes_in_window == 0


def test_removed_while_a_request_is_in_flight(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    make_plugin(tmp_path, "beta")
    host = new_host(tmp_path, policy=POLICY)
    host.start()
    pid = _pid(host, "beta")
    running = _in_thread(lambda: host.get("beta", "slow:600"))
    time.sleep(0.2)
    (tmp_path / "devboy-source-beta.toml").unlink()
    report = host.reload()
    assert list(report.removed) == ["beta"]
    # A request after the removal: the name is gone at once.
    with pytest.raises(UnknownPlugin):
        host.get("beta", "value:x")
    assert not is_dead(pid), "the request in flight keeps its process"
    running["thread"].join(5)
    assert "error" not in running, running.get("error")
    assert running["result"].value.get_secret_value() == "slow"
    assert wait_until(lambda: is_dead(pid), 5.0)


def test_replaced_while_a_request_is_in_flight(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    host = new_host(tmp_path, policy=POLICY)
    host.start()
    old_pid = _pid(host, "alpha")
    running = _in_thread(lambda: host.get("alpha", "slow:800"))
    time.sleep(0.2)
    manifest = tmp_path / "devboy-source-alpha.toml"
    manifest.write_text(manifest.read_text().replace('version = "0.1.0"', 'version = "0.3.0"'))
    assert list(host.reload().replaced) == ["alpha"]
    # New requests go to the new client while the old one drains.
    assert host.get("alpha", "value:new").value.get_secret_value() == "new"
    new_pid = _pid(host, "alpha")
    assert new_pid != old_pid and not is_dead(old_pid)
    running["thread"].join(5)
    assert running["result"].value.get_secret_value() == "slow"
    assert wait_until(lambda: is_dead(old_pid), 5.0)
    assert not is_dead(new_pid)


def test_a_directory_that_disappears_removes_its_plugins(tmp_path: Path, new_host: NewHost) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make_plugin(first, "alpha")
    make_plugin(second, "beta")
    host = new_host([first, second], policy=POLICY)
    host.start()
    pid = _pid(host, "beta")
    shutil.rmtree(second)
    report = host.reload()
    assert list(report.removed) == ["beta"] and "unavailable" in report.removed["beta"]
    assert str(second) in report.dir_errors and str(second) in host.dir_errors
    assert wait_until(lambda: is_dead(pid), 5.0)
    # It comes back: so do its plugins.
    make_plugin(second, "beta")
    report = host.reload()
    assert report.added == ("beta",) and host.dir_errors == {}


def test_a_duplicate_appearing_in_an_earlier_directory_takes_the_name(tmp_path: Path, new_host: NewHost) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    make_plugin(second, "alpha")
    host = new_host([first, second], policy=POLICY)
    make_plugin(first, "alpha")
    report = host.reload()
    assert "manifest" in report.replaced["alpha"]
    assert host["alpha"].manifest.base_dir == first
    assert str(second / "devboy-source-alpha.toml") in host.broken


def test_shutdown_stops_retired_clients_too(tmp_path: Path, new_host: NewHost) -> None:
    """A stubborn plugin retired with a request in flight: shutdown() waits for its
    stop, and every process of the host is gone after it."""
    make_plugin(tmp_path, "alpha", content=python_script(STUBBORN))
    make_plugin(tmp_path, "beta")
    host = new_host(tmp_path, policy=POLICY)
    host.start()
    pids: List[int] = [_pid(host, "alpha"), _pid(host, "beta")]
    (tmp_path / "devboy-source-alpha.toml").unlink()
    (tmp_path / "devboy-source-beta.toml").unlink()
    make_plugin(tmp_path, "gamma")
    report = host.reload()
    assert report.added == ("gamma",) and set(report.removed) == {"alpha", "beta"}
    host.get("gamma", "value:x")
    pids.append(_pid(host, "gamma"))
    host.shutdown()
    assert all(is_dead(pid) for pid in pids), [(p, is_dead(p)) for p in pids]


def test_shutdown_during_a_retired_clients_request(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    host = new_host(tmp_path, policy=POLICY)
    host.start()
    pid = _pid(host, "alpha")
    running = _in_thread(lambda: host.get("alpha", "slow:400"))
    time.sleep(0.15)
    (tmp_path / "devboy-source-alpha.toml").unlink()
    host.reload()
    host.shutdown()
    running["thread"].join(5)
    assert not running["thread"].is_alive()
    assert is_dead(pid)


def test_a_broken_manifest_appearing_is_reported(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    host = new_host(tmp_path, policy=POLICY)
    write_manifest(tmp_path, "beta", "devboy-source-beta", "0" * 64)
    report = host.reload()
    assert not report.changed and set(report.broken) == {"beta"}
    assert host.names() == ("alpha",)
    assert host.health()["alpha"].state is PluginState.IDLE


def test_requests_from_threads_while_reloads_swap_clients(tmp_path: Path, new_host: NewHost) -> None:
    """Four threads keep requesting while the main thread replaces and removes the plugin
    again and again: every request either gets its value or UnknownPlugin (never a closed
    client), and after shutdown no process of any generation is left."""
    make_plugin(tmp_path, "alpha")
    host = new_host(tmp_path, policy=POLICY)
    stop = threading.Event()
    outcomes: List[str] = []
    pids = set()
    lock = threading.Lock()

    def worker(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                got = host.get("alpha", f"value:{i}-{n}").value.get_secret_value()
                kind = "ok" if got == f"{i}-{n}" else f"wrong {got!r}"
            except UnknownPlugin:
                kind = "unknown"
            except Exception as exc:  # noqa: BLE001 - reported below
                kind = f"{type(exc).__name__}: {exc}"
            with lock:
                outcomes.append(kind)
                pid = host.health().get("alpha")
                if pid is not None and pid.pid is not None:
                    pids.add(pid.pid)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    manifest = tmp_path / "devboy-source-alpha.toml"
    try:
        for generation in range(1, 5):
            time.sleep(0.05)
            manifest.write_text(re.sub(r'version = "[^"]*"', f'version = "0.{generation}.1"', manifest.read_text()))
            assert list(host.reload().replaced) == ["alpha"]
            # Each generation serves at least this request, so it had a process.
            assert host.get("alpha", "value:main").value.get_secret_value() == "main"
            pids.add(_pid(host, "alpha"))
            if generation == 2:
                manifest.rename(tmp_path / "away.toml")
                assert list(host.reload().removed) == ["alpha"]
                time.sleep(0.02)
                (tmp_path / "away.toml").rename(manifest)
                assert host.reload().added == ("alpha",)
        time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert set(outcomes) <= {"ok", "unknown"}, sorted(set(outcomes))
    assert "ok" in outcomes
    host.shutdown()
    assert len(pids) >= 4 and all(is_dead(pid) for pid in pids)

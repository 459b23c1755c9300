"""The host interrupts the sync client: Ctrl-C, or any exception raised by a signal handler.

An interruption is the host's doing, never the plugin's: whatever is raised
inside a request, an ``init`` or a stop, the interrupted process leaves the
client and is stopped gracefully in the background (``shutdown()`` and the
interpreter's exit wait for it), no crash is counted, the next caller gets a
fresh process and the right answer, and no plugin outlives its host.

The interruptions are real signals: ``SIGALRM`` from ``setitimer`` with a
handler that raises (as a timeout decorator does), and a real ``SIGINT`` sent
to a host process. Both cores run these tests (CI runs the suite once per
core).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from plugin_client._sweeper import SWEEPER
from plugin_client.client import PluginClient
from plugin_client.health import PluginState
from plugin_client.policy import LifetimePolicy

from _helpers import SRC_DIR, is_dead, wait_until
from _reliability import c_plugin, c_plugins, zombies  # noqa: F401 - fixture
from plugin_factory import STUBBORN, make_plugin, python_script

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "setitimer"), reason="needs setitimer"
)


class Interrupted(BaseException):
    """What the test's SIGALRM handler raises: like KeyboardInterrupt, not an Exception."""


@contextlib.contextmanager
def alarm_after(seconds: float, exc: type = Interrupted) -> Iterator[None]:
    """Raise ``exc`` from a SIGALRM handler ``seconds`` from now (once)."""

    def handler(signum: int, frame: Any) -> None:
        raise exc(f"alarm after {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def stop_bound(policy: LifetimePolicy) -> float:
    return policy.exit_wait + policy.shutdown_grace + 1.0


# --- an interrupted shutdown() (issue: Ctrl-C left the plugin running for ever) -------


STOP_POLICY = LifetimePolicy(exit_wait=0.2, shutdown_grace=1.0, request_timeout=5.0, start_timeout=10.0)


@pytest.mark.parametrize("at", [0.1, 0.6], ids=["in-exit-wait", "in-grace"])
def test_interrupted_shutdown_still_stops_the_plugin(tmp_path: Path, at: float) -> None:
    plugin = make_plugin(tmp_path / "p", "stubborn", python_script(STUBBORN))
    client = PluginClient(plugin, policy=STOP_POLICY)
    client.get("x")
    pid = client.health().pid
    assert pid is not None
    with pytest.raises(Interrupted):
        with alarm_after(at):
            client.shutdown()
    interrupted_at = time.monotonic()
    # The stop goes on in the background, within its own bound from the interruption.
    assert wait_until(lambda: is_dead(pid), stop_bound(STOP_POLICY)), "the plugin outlived its interrupted stop"
    assert time.monotonic() - interrupted_at < stop_bound(STOP_POLICY)
    # A second shutdown() waits for that stop, and nothing is left behind.
    client.shutdown()
    assert SWEEPER.stopping(client._flow) == 0
    assert wait_until(lambda: pid not in zombies(), 2.0)
    h = client.health()
    assert h.crashes_in_window == 0 and h.state is PluginState.IDLE
    assert h.last_exit is not None and h.last_exit.pid == pid


HOST = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {src!r})
    from plugin_client import LifetimePolicy, PluginClient, load_plugin
    client = PluginClient(load_plugin({manifest!r}),
                          policy=LifetimePolicy(exit_wait=0.2, shutdown_grace={grace}))
    client.get("x")
    print(client.health().pid, flush=True)
    sys.stdin.readline()          # the test says when
    print("stopping", flush=True)
    client.shutdown()             # SIGINT arrives during the grace wait
    print("returned", flush=True)
    """
)


def test_ctrl_c_during_shutdown_then_exit_leaves_no_plugin(tmp_path: Path) -> None:
    """The issue's case: the plugin ignores stdin EOF and SIGTERM, SIGINT lands in
    the grace wait, ``KeyboardInterrupt`` leaves ``shutdown()`` and the host exits."""
    plugin = make_plugin(tmp_path / "p", "stubborn", python_script(STUBBORN))
    grace = 1.5
    script = HOST.format(src=SRC_DIR, manifest=str(plugin.manifest_path), grace=grace)
    host = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    plugin_pid = 0
    try:
        assert host.stdout is not None and host.stdin is not None
        plugin_pid = int(host.stdout.readline())
        host.stdin.write("\n")
        host.stdin.flush()
        assert host.stdout.readline().strip() == "stopping"
        time.sleep(0.5)  # past exit_wait (0.2 s): SIGTERM was sent, the grace wait is on
        assert not is_dead(plugin_pid)
        host.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        _out, err = host.communicate(timeout=30)
        exited_after = time.monotonic() - interrupted_at
        assert "KeyboardInterrupt" in err and "returned" not in _out
        # The exit waited for the stop the interruption handed over: the plugin is
        # gone by the time the host is, well within the stop's own bound.
        assert is_dead(plugin_pid), f"the plugin outlived its host (host exited {exited_after:.2f} s after SIGINT)"
        assert exited_after < 0.2 + grace + 1.0
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        if plugin_pid and not is_dead(plugin_pid):
            os.kill(plugin_pid, signal.SIGKILL)


# --- an interrupted request (issue: the next caller got an error, crashes were counted) ---


REQ_POLICY = LifetimePolicy(
    request_timeout=5.0, start_timeout=10.0, exit_wait=0.5, shutdown_grace=1.0, restart_cap=3
)


def _assert_clean(client: PluginClient, old_pids: "list[int]") -> None:
    h = client.health()
    assert h.crashes_in_window == 0, h.last_error
    assert h.state is not PluginState.DISABLED
    for pid in old_pids:
        assert wait_until(lambda: is_dead(pid), stop_bound(REQ_POLICY)), f"interrupted process {pid} was not stopped"


def test_interrupted_requests_harm_no_later_caller_and_count_no_crash(tmp_path: Path) -> None:
    client = PluginClient(make_plugin(tmp_path / "p"), policy=REQ_POLICY)
    try:
        assert client.get("value:first").value.get_secret_value() == "first"
        old = []
        for i in range(REQ_POLICY.restart_cap + 2):  # more interruptions than the restart cap
            pid = client.health().pid
            assert pid is not None
            old.append(pid)
            with pytest.raises(Interrupted):
                with alarm_after(0.05):
                    client.get("slow:400")
            # The very next caller gets its own answer, not the interrupted one's reply.
            t0 = time.monotonic()
            assert client.get(f"value:after-{i}").value.get_secret_value() == f"after-{i}"
            assert time.monotonic() - t0 < 3.0
        _assert_clean(client, old)
        assert client.health().spawn_count == len(old) + 1
    finally:
        client.shutdown()
    assert wait_until(lambda: not zombies(), 2.0)


def test_exception_from_a_signal_handler_is_not_a_crash_either(tmp_path: Path) -> None:
    """A SIGALRM timeout that raises an ordinary ``Exception`` (``TimeoutError``) is
    still the host's interruption, not a plugin failure."""
    client = PluginClient(make_plugin(tmp_path / "p"), policy=REQ_POLICY)
    try:
        client.get("value:warm")
        pid = client.health().pid
        with pytest.raises(TimeoutError):
            with alarm_after(0.05, TimeoutError):
                client.get("slow:400")
        assert client.get("value:next").value.get_secret_value() == "next"
        _assert_clean(client, [pid])  # type: ignore[list-item]
    finally:
        client.shutdown()


SLOW_INIT = (
    "import json, sys, time\n"
    "for line in sys.stdin:\n"
    "    r = json.loads(line)\n"
    "    if r['method'].endswith('init'):\n"
    "        time.sleep(0.4)\n"
    "        res = {'source_name': r['params']['source_name'], 'capabilities_bits': 1, 'plugin_version': '1'}\n"
    "    else:\n"
    "        res = {'value': 'v'}\n"
    "    print(json.dumps({'jsonrpc': '2.0', 'id': r['id'], 'result': res}), flush=True)\n"
)


def test_interrupted_init_is_not_a_crash(tmp_path: Path) -> None:
    client = PluginClient(make_plugin(tmp_path / "p", "slowinit", python_script(SLOW_INIT)), policy=REQ_POLICY)
    try:
        pids = []
        for _ in range(REQ_POLICY.restart_cap + 1):
            with pytest.raises(Interrupted):
                with alarm_after(0.1):
                    client.get("x")
            pid = client.health().last_exit.pid if client.health().last_exit else None
            pids.append(pid)
        assert client.get("x").value.get_secret_value() == "v"
        h = client.health()
        assert h.crashes_in_window == 0 and h.state is PluginState.RUNNING
        assert h.spawn_count == REQ_POLICY.restart_cap + 2
    finally:
        client.shutdown()
    assert wait_until(lambda: not zombies(), 2.0)


def test_interrupted_write_of_a_large_put_leaves_no_half_line(
    tmp_path: Path, c_plugins: Dict[str, bytes]  # noqa: F811 - fixture
) -> None:
    """Interrupted while a 4 MiB ``put`` is still being written (the plugin stopped
    reading): the plugin holds half a line, so that process is never written to again."""
    client = PluginClient(c_plugin(c_plugins, tmp_path / "hostile"), policy=REQ_POLICY)
    try:
        assert client.get("stop-reading").value.get_secret_value() == "deaf"
        pid = client.health().pid
        with pytest.raises(Interrupted):
            with alarm_after(0.1):
                client.put("value:x", "v" * (4 << 20))
        assert client.get("value:fresh").value.get_secret_value() == "fresh"
        assert client.health().pid != pid
        _assert_clean(client, [pid])  # type: ignore[list-item]
    finally:
        client.shutdown()

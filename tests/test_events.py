"""Lifecycle events, their log lines and the health counts, against real plugin processes.

Every test that takes ``new_client`` runs against ``AsyncPluginClient`` too
(``client_kinds.py``). Events reach their callback on the events thread;
:func:`flush_events` waits for that delivery, so no test sleeps for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

import pytest

from plugin_client import (
    AsyncPluginClient,
    EventKind,
    LifetimePolicy,
    PluginClient,
    PluginEvent,
    errors,
    flush_events,
)
from plugin_client._dispatch import DISPATCHER
from plugin_client.health import ExitStage

from client_kinds import client_kind, new_client  # noqa: F401 - fixtures
from _helpers import is_dead, wait_until
from plugin_factory import make_plugin

FAST = LifetimePolicy(request_timeout=2.0, start_timeout=5.0, shutdown_grace=1.0, exit_wait=0.5)

K = EventKind


class Recorder:
    """An ``on_event`` callback that keeps every event and the thread it ran on."""

    def __init__(self) -> None:
        self.events: List[PluginEvent] = []
        self.threads: List[str] = []

    def __call__(self, event: PluginEvent) -> None:
        self.threads.append(threading.current_thread().name)
        self.events.append(event)

    def kinds(self) -> List[EventKind]:
        assert flush_events(5.0)
        return [e.kind for e in self.events]

    def of(self, kind: EventKind) -> List[PluginEvent]:
        assert flush_events(5.0)
        return [e for e in self.events if e.kind is kind]

    def wait_for(self, kind: EventKind, timeout: float = 5.0) -> PluginEvent:
        assert wait_until(lambda: any(e.kind is kind for e in self.events), timeout), self.kinds()
        return self.of(kind)[0]


@pytest.fixture
def plugin(tmp_path: Path) -> Any:
    return make_plugin(tmp_path / "plugins")


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def test_spawn_ready_stop(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    c = new_client(plugin, policy=FAST, on_event=rec)
    assert c.get("value:a").value.get_secret_value() == "a"
    pid = c.health().pid
    c.shutdown()
    assert rec.kinds() == [K.SPAWNED, K.READY, K.STOPPED]
    spawned, ready, stopped = rec.events
    assert {e.pid for e in rec.events} == {pid} and {e.plugin for e in rec.events} == {"echo"}
    assert ready.duration is not None and 0.0 < ready.duration < FAST.start_timeout
    assert stopped.exit is not None and stopped.exit.stage is ExitStage.STDIN_CLOSE and stopped.exit.pid == pid
    assert spawned.at.tzinfo is not None and spawned.at <= ready.at <= stopped.at
    # Never on the caller's thread or the event loop's: on the one events thread.
    assert set(rec.threads) == {"plugin-client-events"}


def test_event_is_frozen_and_plain_data(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    c = new_client(plugin, policy=FAST, on_event=rec)
    c.get("value:a")
    c.shutdown()
    stopped = rec.of(K.STOPPED)[0]
    with pytest.raises(AttributeError, match="frozen"):
        stopped.pid = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del stopped.kind  # type: ignore[misc]
    data = json.loads(json.dumps(stopped.to_dict()))
    assert data["kind"] == "stopped" and data["exit"]["stage"] == "stdin-close" and data["plugin"] == "echo"
    assert "kind='stopped'" in repr(stopped) and hash(stopped) == hash(rec.of(K.STOPPED)[0])


def test_idle_reap(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    c = new_client(plugin, policy=FAST.model_copy(update={"idle_timeout": 0.2}), on_event=rec)
    c.get("value:a")
    pid = c.health().pid
    reaped = rec.wait_for(K.REAPED_IDLE)
    assert reaped.pid == pid and reaped.exit is not None and reaped.exit.stage is ExitStage.STDIN_CLOSE
    assert "0.2 s" in reaped.detail
    c.shutdown()
    assert rec.kinds() == [K.SPAWNED, K.READY, K.REAPED_IDLE]  # nothing left to stop


def test_crash(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    c = new_client(plugin, policy=FAST, on_event=rec)
    c.get("value:a")
    pid = c.health().pid
    with pytest.raises(errors.PluginCrashed):
        c.get("crash")
    crashed = rec.wait_for(K.CRASHED)
    assert crashed.pid == pid and crashed.exit is not None
    assert crashed.exit.stage is ExitStage.CRASH and crashed.exit.returncode == 7
    assert crashed.detail == "exited while answering 'secret_source.get' (status 7)"
    assert K.DISABLED not in rec.kinds() and K.KILLED not in rec.kinds()


def test_timeout_then_kill(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    c = new_client(plugin, policy=FAST.model_copy(update={"request_timeout": 0.3}), on_event=rec)
    c.get("value:a")
    pid = c.health().pid
    with pytest.raises(errors.RequestTimeout):
        c.get("hang")
    assert rec.kinds() == [K.SPAWNED, K.READY, K.TIMED_OUT, K.KILLED]
    timed_out, killed = rec.events[2:]
    assert timed_out.pid == killed.pid == pid
    assert timed_out.detail == "secret_source.get" and timed_out.duration is not None and timed_out.duration >= 0.3
    assert killed.exit is not None and killed.exit.stage is ExitStage.KILLED_AFTER_ERROR
    assert killed.exit.signal == "SIGKILL" and "request_timeout=0.3 s" in killed.detail


def test_init_timeout(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    c = new_client(plugin, policy=FAST.model_copy(update={"start_timeout": 0.3}), config={"init": "hang"}, on_event=rec)
    with pytest.raises(errors.InitError):
        c.get("value:a")
    assert rec.kinds() == [K.SPAWNED, K.TIMED_OUT, K.KILLED]
    assert rec.events[1].detail == "secret_source.init" and (rec.events[1].duration or 0) >= 0.3


def test_disable_then_clear(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    c = new_client(plugin, policy=FAST.model_copy(update={"restart_cap": 2}), on_event=rec)
    for _ in range(2):
        with pytest.raises(errors.PluginCrashed):
            c.get("crash")
    with pytest.raises(errors.PluginDisabled):
        c.get("value:a")
    disabled = rec.of(K.DISABLED)
    assert len(disabled) == 1 and "crashed 2 times" in disabled[0].detail
    assert rec.kinds()[-2:] == [K.CRASHED, K.DISABLED]
    c.clear_disabled()
    assert c.get("value:b").value.get_secret_value() == "b"
    cleared = rec.of(K.CLEARED)
    assert len(cleared) == 1 and cleared[0].detail == "by clear_disabled() (it was disabled)"
    assert rec.kinds()[-3:] == [K.CLEARED, K.SPAWNED, K.READY]


def test_a_probe_after_the_cooldown(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    """Under ``disabled_cooldown`` a probe that answers init re-enables the plugin
    (``cleared``, with the probe's pid); one that crashes disables it again."""
    policy = FAST.model_copy(update={"restart_cap": 1, "disabled_cooldown": 0.2, "disabled_cooldown_max": 0.5})
    c = new_client(plugin, policy=policy, on_event=rec)
    with pytest.raises(errors.PluginCrashed):
        c.get("crash")
    assert rec.kinds() == [K.SPAWNED, K.READY, K.CRASHED, K.DISABLED]
    time.sleep(0.25)
    assert c.get("value:back").value.get_secret_value() == "back"
    probe = c.health().pid
    assert rec.kinds()[4:] == [K.SPAWNED, K.READY, K.CLEARED]
    cleared = rec.events[-1]
    assert cleared.pid == probe and cleared.detail == "by a probe after the cooldown"


def test_a_failed_probe_disables_again(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    policy = FAST.model_copy(update={"restart_cap": 1, "disabled_cooldown": 0.2, "disabled_cooldown_max": 0.5})
    c = new_client(plugin, policy=policy, config={"init": "crash"}, on_event=rec)
    with pytest.raises(errors.InitError):
        c.get("value:a")
    time.sleep(0.25)
    with pytest.raises(errors.InitError):
        c.get("value:a")  # the probe
    assert rec.kinds() == [K.SPAWNED, K.CRASHED, K.DISABLED, K.SPAWNED, K.CRASHED, K.DISABLED]
    assert "probe" in rec.events[-1].detail and rec.events[-2].detail.startswith("exited during init")


def test_executable_changed(tmp_path: Path, new_client: Callable[..., Any], rec: Recorder) -> None:
    plugin = make_plugin(tmp_path / "plugins")
    exe = tmp_path / "plugins" / "devboy-source-echo"
    exe.write_bytes(exe.read_bytes() + b"\n# changed after verification\n")
    c = new_client(plugin, policy=FAST, on_event=rec)
    with pytest.raises(errors.ExecutableChanged):
        c.get("value:a")
    changed = rec.of(K.EXECUTABLE_CHANGED)
    assert len(changed) == 1 and changed[0].pid is None and "not run" in changed[0].detail
    assert rec.kinds() == [K.EXECUTABLE_CHANGED]  # not counted as a crash
    assert c.health().errors == {"executable-changed": 1}


@pytest.mark.parametrize("raised", [ValueError, SystemExit], ids=["ValueError", "SystemExit"])
def test_a_raising_callback_is_logged_and_never_reaches_the_client(
    plugin: Any, new_client: Callable[..., Any], caplog: pytest.LogCaptureFixture, raised: type
) -> None:
    """Not even a ``SystemExit``, which would otherwise end the events thread."""
    seen: List[EventKind] = []

    def callback(event: PluginEvent) -> None:
        seen.append(event.kind)
        raise raised("callback bug")

    c = new_client(plugin, policy=FAST, on_event=callback)
    with caplog.at_level(logging.ERROR, logger="plugin_client"):
        assert c.get("value:a").value.get_secret_value() == "a"
        c.shutdown()
        assert flush_events(5.0)
    assert seen == [K.SPAWNED, K.READY, K.STOPPED]  # every event delivered regardless
    records = [r for r in caplog.records if "on_event callback" in r.getMessage()]
    assert len(records) == 3 and all(r.exc_info and r.exc_info[0] is raised for r in records)


def test_a_slow_callback_holds_up_no_request(plugin: Any, new_client: Callable[..., Any]) -> None:
    release = threading.Event()
    delivered: List[EventKind] = []

    def slow(event: PluginEvent) -> None:
        release.wait(10.0)
        delivered.append(event.kind)

    c = new_client(plugin, policy=FAST, on_event=slow)
    try:
        t0 = time.monotonic()
        for i in range(20):
            assert c.get(f"value:{i}").value.get_secret_value() == str(i)
        elapsed = time.monotonic() - t0
        assert delivered == [] and not release.is_set()  # the callback is still stuck on the first event
        assert elapsed < 5.0
        assert not flush_events(0.05)  # and the events wait for it
    finally:
        release.set()
    assert flush_events(5.0)
    assert delivered == [K.SPAWNED, K.READY]


def test_flush_from_a_callback_is_refused(plugin: Any, new_client: Callable[..., Any]) -> None:
    outcome: List[str] = []

    def callback(event: PluginEvent) -> None:
        try:
            flush_events(1.0)
        except RuntimeError as exc:
            outcome.append(str(exc))

    c = new_client(plugin, policy=FAST, on_event=callback)
    c.start()
    assert flush_events(5.0)
    assert len(outcome) == 2 and "cannot be called from an on_event callback" in outcome[0]


def test_bad_arguments_are_refused(plugin: Any) -> None:
    with pytest.raises(TypeError, match="on_event must be a callable"):
        PluginClient(plugin, on_event="print")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="request_events=True needs an on_event"):
        AsyncPluginClient(plugin, request_events=True)


# --- logging ---------------------------------------------------------------------------


def _lifecycle_records(caplog: pytest.LogCaptureFixture) -> List[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "plugin_client"]


def test_log_lines_levels_and_extra_fields(
    plugin: Any, new_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """One record per event, at the issue's levels, each naming the plugin and
    carrying ``plugin``, ``event`` and ``pid`` for structured handlers."""
    c = new_client(plugin, policy=FAST.model_copy(update={"restart_cap": 2, "request_timeout": 0.3}))
    with caplog.at_level(logging.INFO, logger="plugin_client"):
        c.get("value:a")
        first = c.health().pid
        with pytest.raises(errors.RequestTimeout):
            c.get("hang")
        with pytest.raises(errors.PluginCrashed):
            c.get("crash")
        c.clear_disabled()
        c.get("value:b")
        last = c.health().pid
        c.shutdown()
    records = _lifecycle_records(caplog)
    got = [(r.event, r.levelname) for r in records]  # type: ignore[attr-defined]
    assert got == [
        ("spawned", "INFO"), ("ready", "INFO"),
        ("timed_out", "WARNING"), ("killed", "WARNING"),
        ("spawned", "INFO"), ("ready", "INFO"),
        ("crashed", "WARNING"), ("disabled", "ERROR"),
        ("cleared", "INFO"),
        ("spawned", "INFO"), ("ready", "INFO"),
        ("stopped", "INFO"),
    ]
    for r in records:
        assert r.plugin == "echo" and "Plugin 'echo'" in r.getMessage()  # type: ignore[attr-defined]
    assert records[0].pid == first and records[-1].pid == last  # type: ignore[attr-defined]
    assert records[7].pid is None  # type: ignore[attr-defined]  # disabled: no process
    assert f"(pid {first})" in records[0].getMessage()


def test_idle_reap_and_exit_while_idle_log_one_line_each(
    plugin: Any, new_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    c = new_client(plugin, policy=FAST.model_copy(update={"idle_timeout": 0.5}))
    with caplog.at_level(logging.INFO, logger="plugin_client"):
        c.get("exit-soon")  # replies, then exits 50 ms later
        pid = c.health().pid
        assert pid is not None and wait_until(lambda: is_dead(pid), 5.0)
        c.get("value:a")  # finds it dead while idle: a crash, and a fresh process
        assert wait_until(lambda: any(getattr(r, "event", "") == "reaped_idle" for r in caplog.records), 5.0)
    events = [r.event for r in _lifecycle_records(caplog)]  # type: ignore[attr-defined]
    assert events == ["spawned", "ready", "crashed", "spawned", "ready", "reaped_idle"]
    crashed = [r for r in caplog.records if getattr(r, "event", "") == "crashed"][0]
    assert "exited while idle" in crashed.getMessage() and crashed.levelname == "WARNING"


def test_a_healthy_run_logs_nothing_at_warning(plugin: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="plugin_client"):
        with PluginClient(plugin, policy=FAST) as c:
            c.get("value:a")
    assert _lifecycle_records(caplog) == []


# --- interruptions ---------------------------------------------------------------------


class Interrupted(BaseException):
    """What the test's SIGALRM handler raises, like KeyboardInterrupt."""


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_interrupted_request(plugin: Any, rec: Recorder) -> None:
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted()

    c = PluginClient(plugin, policy=FAST, on_event=rec)
    try:
        c.get("value:a")
        pid = c.health().pid
        old = signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        try:
            with pytest.raises(Interrupted):
                c.get("slow:400")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        stopped = rec.wait_for(K.STOPPED)
    finally:
        c.shutdown()
    assert rec.kinds()[:4] == [K.SPAWNED, K.READY, K.INTERRUPTED, K.STOPPED]
    assert rec.events[2].pid == stopped.pid == pid
    assert K.CRASHED not in rec.kinds()


# --- counts and request events -----------------------------------------------------------


def test_health_counts_requests_and_errors_by_kind(plugin: Any, new_client: Callable[..., Any]) -> None:
    c = new_client(
        plugin, policy=FAST.model_copy(update={"restart_cap": 3, "request_timeout": 0.3}), config={"caps": 0x1}
    )
    assert c.health().requests_served == 0 and c.health().errors == {}
    for i in range(3):
        c.get(f"value:{i}")
    with pytest.raises(errors.PluginError):
        c.get("missing")
    with pytest.raises(errors.UnsupportedCapability):
        c.list()  # refused by the gate: caps says READ only
    with pytest.raises(errors.RequestTimeout):
        c.get("hang")
    with pytest.raises(errors.ProtocolError):
        c.get("garbage")
    with pytest.raises(errors.PluginCrashed):
        c.get("crash")
    with pytest.raises(errors.PluginDisabled):
        c.get("value:x")
    c.clear_disabled()
    c.get("value:again")
    h = c.health()
    assert h.requests_served == 4
    assert h.errors == {
        "bad-reference": 1, "unsupported-capability": 1, "timeout": 1, "protocol": 1, "crash": 1, "disabled": 1,
    }
    assert h.to_dict()["errors"]["timeout"] == 1
    c.shutdown()
    with pytest.raises(errors.ClientClosed):
        c.get("value:late")
    assert c.health().errors["closed"] == 1


def test_request_events_are_opt_in(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    c = new_client(plugin, policy=FAST, on_event=rec)
    c.get("value:a")
    c.get("value:b")
    assert K.REQUEST not in rec.kinds()
    assert c.health().requests_served == 2


def test_request_events(plugin: Any, new_client: Callable[..., Any], rec: Recorder) -> None:
    c = new_client(plugin, policy=FAST.model_copy(update={"request_timeout": 0.3}), on_event=rec, request_events=True)
    c.get("value:a")  # cold: the slow path
    c.get("value:b")  # warm
    c.list()
    with pytest.raises(errors.PluginError):
        c.get("missing")
    with pytest.raises(errors.RequestTimeout):
        c.get("hang")
    requests = rec.of(K.REQUEST)
    assert [(e.detail, e.error) for e in requests] == [
        ("secret_source.get", None), ("secret_source.get", None), ("secret_source.list", None),
        ("secret_source.get", "bad-reference"), ("secret_source.get", "timeout"),
    ]
    assert all(e.duration is not None and e.duration > 0 for e in requests)
    assert (requests[-1].duration or 0) >= 0.3  # the timeout's: from the write to the deadline
    # The values and references never ride along.
    assert not any("value:" in e.detail or "missing" in e.detail for e in rec.events)


# --- the asyncio client, natively -------------------------------------------------------


def test_asyncio_client_events_never_run_on_the_loop(plugin: Any, rec: Recorder) -> None:
    loop_thread: List[Optional[str]] = [None]

    async def main() -> None:
        loop_thread[0] = threading.current_thread().name
        async with AsyncPluginClient(plugin, policy=FAST, on_event=rec, request_events=True) as c:
            assert (await c.get("value:a")).value.get_secret_value() == "a"
            with pytest.raises(errors.PluginCrashed):
                await c.get("crash")
            await c.get("value:b")

    asyncio.run(main())
    assert rec.kinds() == [
        K.SPAWNED, K.READY, K.REQUEST, K.REQUEST, K.CRASHED, K.SPAWNED, K.READY, K.REQUEST, K.STOPPED,
    ]
    assert loop_thread[0] not in rec.threads and set(rec.threads) == {"plugin-client-events"}


# --- the queue -------------------------------------------------------------------------------


def test_a_full_queue_drops_and_warns_once(
    plugin: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from plugin_client import _dispatch

    release = threading.Event()
    got: List[EventKind] = []

    def slow(event: PluginEvent) -> None:
        release.wait(10.0)
        got.append(event.kind)

    monkeypatch.setattr(_dispatch, "MAX_PENDING", 3)
    dropped_before = DISPATCHER.dropped
    with caplog.at_level(logging.WARNING, logger="plugin_client"):
        with PluginClient(plugin, policy=FAST, on_event=slow, request_events=True) as c:
            try:
                for i in range(10):
                    c.get(f"value:{i}")
            finally:
                release.set()
        assert flush_events(5.0)
    assert DISPATCHER.dropped > dropped_before
    assert len([r for r in caplog.records if "dropping new events" in r.getMessage()]) == 1
    assert got[:2] == [K.SPAWNED, K.READY]


# --- the interpreter's exit ---------------------------------------------------------------

EXIT_SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from plugin_factory import make_plugin
from plugin_client import PluginClient

def slow(event):
    time.sleep(0.3)
    print(event.kind.value, flush=True)

client = PluginClient(make_plugin(Path({where!r})), on_event=slow)
client.get("value:a")
client.shutdown()
print("main done", flush=True)
"""


def test_queued_events_are_delivered_at_exit(tmp_path: Path) -> None:
    """The interpreter's exit waits for the events still queued (here, all three,
    behind a slow callback), rather than killing the daemon thread mid-queue."""
    import subprocess
    import sys

    script = EXIT_SCRIPT.format(tests=str(Path(__file__).parent), where=str(tmp_path / "p"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert [x for x in lines if x not in ("main", "done")] == ["spawned", "ready", "stopped"]
    assert lines.index("done") < lines.index("stopped")  # still queued when the main code ended


# --- hosts and routers pass on_event to their clients ---------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "plugins"


def test_a_source_router_gives_on_event_to_each_client(tmp_path: Path, rec: Recorder) -> None:
    from plugin_client import SourceRouter

    (tmp_path / "a.json").write_text(json.dumps({"secrets": {"a/x/y": "1"}}))
    (tmp_path / "b.json").write_text(json.dumps({"secrets": {"b/x/y": "2"}}))
    (tmp_path / "sources.toml").write_text(
        f'[[source]]\nname = "a"\ntype = "jsonfile"\npath = "{tmp_path / "a.json"}"\n\n'
        f'[[source]]\nname = "b"\ntype = "jsonfile"\npath = "{tmp_path / "b.json"}"\n\n'
        '[default]\nsource = "a"\n\n[[route]]\nprefix = "b/"\nsource = "b"\n'
    )
    with SourceRouter.open(tmp_path / "sources.toml", EXAMPLES, policy=FAST, on_event=rec) as router:
        secret = router.get_secret("b/x/y")
        assert secret is not None and secret.value.get_secret_value() == "2"
        secret = router.get_secret("a/x/y")
        assert secret is not None and secret.value.get_secret_value() == "1"
    assert rec.kinds() == [K.SPAWNED, K.READY, K.SPAWNED, K.READY, K.STOPPED, K.STOPPED]
    assert {e.plugin for e in rec.events} == {"jsonfile"}
    assert len({e.pid for e in rec.events}) == 2


def test_a_plugin_host_gives_on_event_to_each_client(tmp_path: Path, rec: Recorder) -> None:
    from plugin_client import PluginHost

    make_plugin(tmp_path / "plugins", "one")
    make_plugin(tmp_path / "plugins", "two")
    with PluginHost(tmp_path / "plugins", policy=FAST, on_event=rec) as host:
        assert host.get("one", "value:1").value.get_secret_value() == "1"
        assert host.get("two", "value:2").value.get_secret_value() == "2"
    assert flush_events(5.0)
    assert sorted((e.plugin, e.kind.value) for e in rec.events) == [
        ("one", "ready"), ("one", "spawned"), ("one", "stopped"),
        ("two", "ready"), ("two", "spawned"), ("two", "stopped"),
    ]

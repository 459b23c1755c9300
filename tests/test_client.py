"""PluginClient's lifetime contract, against real plugin processes.

Each weak point of the reference host has a test here showing we don't have it.
Every test runs against ``AsyncPluginClient`` too (``client_kind``, see
``client_kinds.py``), except the ones pinned to ``"sync"``.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import signal
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from plugin_client import errors
from plugin_client._sweeper import SWEEPER
from plugin_client.client import PluginClient
from plugin_client.health import ExitStage, PluginState
from plugin_client.policy import LifetimePolicy
from plugin_client.protocol import Capability, GetCall, IsAvailableCall

from client_kinds import client_kind, new_client  # noqa: F401 - fixtures
from _helpers import is_dead, wait_until
from _reliability import children_of
from plugin_factory import STUBBORN, make_plugin, python_script

FAST = LifetimePolicy(request_timeout=2.0, start_timeout=5.0, shutdown_grace=1.0, exit_wait=0.5)


def alive(pid: int) -> bool:
    # (is_dead also copes with a process reaped between the open and the read of its
    # /proc entry: a background stop may reap it while a test is looking.)
    return not is_dead(pid)


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.01)
    return not alive(pid)


@pytest.fixture
def plugin(tmp_path: Path) -> Any:
    return make_plugin(tmp_path / "plugins")


@pytest.fixture
def client_factory(plugin: Any, new_client: Callable[..., PluginClient]) -> Any:
    def make(policy: LifetimePolicy = FAST, **kw: Any) -> PluginClient:
        return new_client(plugin, policy=policy, **kw)

    return make


@pytest.fixture
def client(client_factory: Callable[..., PluginClient]) -> PluginClient:
    return client_factory()


def test_lazy_spawn_and_all_methods(client: PluginClient) -> None:
    assert client.health().state is PluginState.IDLE
    assert client.health().pid is None
    assert client.get("value:hello").value.get_secret_value() == "hello"
    h = client.health()
    assert h.state is PluginState.RUNNING and h.spawn_count == 1 and h.pid
    assert h.plugin_version == "echo-1.0"
    assert "READ" in h.capabilities
    assert client.is_available().status.value == "available"
    assert [e.reference for e in client.list().entries] == ["ref-0", "ref-1", "ref-2"]
    assert client.validate("good").ok and not client.validate("bad").ok
    assert client.put("k", "v").replaced is False
    assert client.put("k", "v2").replaced is True
    assert client.delete("k").existed is True
    assert client.key_material("enc").material.get_secret_value() == (b"enc" * 11)[:32]
    assert client.get("lease:30").lease_seconds == 30
    assert client.request(GetCall(reference="extra")).value.get_secret_value() == "x"
    assert client.health().spawn_count == 1


def test_source_name_and_config_go_into_init(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(source_name="work-vault", config={"entries": 5})
    assert len(c.list().entries) == 5
    assert c.health().source_name == "work-vault"


@pytest.mark.parametrize(
    "kw, where",
    [
        ({"config": {"token": "s3cr3t-cfg", "bad": {1, 2}}}, "config"),
        ({"config": {"token": "s3cr3t-cfg", "n": float("nan")}}, "config"),
        ({"source_name": 42}, "source_name"),
    ],
)
def test_init_that_cannot_be_sent_is_refused_by_the_constructor(
    client_factory: Callable[..., PluginClient], kw: Dict[str, Any], where: str
) -> None:
    """Before, the plugin was spawned, the init call failed to build, and the process
    stayed up un-initialised for the next request. Now nothing is spawned."""
    before = set(children_of(os.getpid()))
    with pytest.raises(ValueError, match=f"init call cannot be built .*{where}") as info:
        client_factory(**kw)
    assert "s3cr3t-cfg" not in str(info.value) and "s3cr3t-cfg" not in repr(info.value.__cause__)
    assert set(children_of(os.getpid())) - before == set()


def test_init_source_name_must_be_echoed(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(config={"init": "bad-source"})
    with pytest.raises(errors.InitError, match="echo the source_name"):
        c.get("x")
    assert c.health().crashes_in_window == 1


def test_init_refused_is_init_error(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(config={"init": "refuse"})
    with pytest.raises(errors.InitError, match="refused init"):
        c.get("x")


def test_crash_during_init(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(config={"init": "crash"})
    with pytest.raises(errors.InitError, match="exited during init"):
        c.get("x")
    h = c.health()
    assert h.state is PluginState.RECOVERING
    assert h.last_exit is not None and h.last_exit.returncode == 3
    assert h.last_exit.stage is ExitStage.CRASH
    assert any("crashing on purpose" in line for line in h.stderr_tail)


def test_hang_in_init_honours_start_timeout(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(LifetimePolicy(start_timeout=0.5, shutdown_grace=1.0), config={"init": "hang"})
    t0 = time.monotonic()
    with pytest.raises(errors.InitError, match="start_timeout"):
        c.get("x")
    assert time.monotonic() - t0 < 4.0
    assert c.health().last_exit.stage is ExitStage.KILLED_AFTER_ERROR  # type: ignore[union-attr]


def test_hung_plugin_times_out_and_next_request_respawns(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(LifetimePolicy(request_timeout=0.3, shutdown_grace=1.0))
    c.get("warm")
    pid = c.health().pid
    assert pid is not None
    with pytest.raises(errors.RequestTimeout, match="request_timeout"):
        c.get("hang")
    assert wait_gone(pid)
    assert c.health().state is PluginState.RECOVERING
    assert c.get("value:after").value.get_secret_value() == "after"
    assert c.health().pid != pid
    assert c.health().crashes_in_window == 1


def test_health_does_not_block_behind_hung_request(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(LifetimePolicy(request_timeout=1.5, shutdown_grace=1.0))
    c.get("warm")
    started = threading.Event()

    def hang() -> None:
        started.set()
        with pytest.raises(errors.RequestTimeout):
            c.get("hang")

    t = threading.Thread(target=hang)
    t.start()
    started.wait()
    time.sleep(0.1)
    t0 = time.monotonic()
    h = c.health()
    assert time.monotonic() - t0 < 0.5
    assert h.state is PluginState.RUNNING
    c.shutdown()  # also must not wait for the whole request_timeout... it may; the hung request ends
    t.join(10)
    assert not t.is_alive()


def test_wrong_reply_id_then_good_request(client: PluginClient) -> None:
    client.get("warm")
    pid = client.health().pid
    with pytest.raises(errors.ReplyIdMismatch) as ei:
        client.get("badid")
    assert ei.value.got == ei.value.expected + 1000
    assert "killed" in str(ei.value)
    assert client.get("value:ok").value.get_secret_value() == "ok"
    assert client.health().pid != pid


@pytest.mark.parametrize(
    "ref, exc",
    [
        ("garbage", errors.InvalidJsonReply),
        ("crash", errors.PluginCrashed),
        ("close-stdout", errors.PluginCrashed),
    ],
)
def test_broken_replies_recycle_the_process(client: PluginClient, ref: str, exc: type) -> None:
    client.get("warm")
    pid = client.health().pid
    assert pid is not None
    with pytest.raises(exc):
        client.get(ref)
    assert wait_gone(pid)
    assert client.get("value:next").value.get_secret_value() == "next"


def test_partial_frame_then_sleep_times_out(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(LifetimePolicy(request_timeout=0.3, shutdown_grace=1.0))
    with pytest.raises(errors.RequestTimeout):
        c.get("partial")
    assert c.get("value:x").value.get_secret_value() == "x"


def test_oversized_line_raises_at_the_limit(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(LifetimePolicy(max_frame_bytes=4096, request_timeout=5.0, shutdown_grace=1.0))
    with pytest.raises(errors.FrameTooLarge, match="max_frame_bytes=4096"):
        c.get("huge:1000000")
    assert c.get("value:x").value.get_secret_value() == "x"


def test_plugin_errors_keep_the_process(client: PluginClient) -> None:
    client.get("warm")
    pid = client.health().pid
    with pytest.raises(errors.PluginError) as ei:
        client.get("missing")
    assert ei.value.kind == "bad-reference" and ei.value.reason == "not found"
    with pytest.raises(errors.PluginError) as ei:
        client.get("foreign-error")
    assert ei.value.kind == "other" and ei.value.code == -32601
    with pytest.raises(errors.PluginError) as ei:
        client.get("unknown-kind")
    assert ei.value.kind == "other"
    assert client.health().pid == pid
    assert client.health().crashes_in_window == 0


def test_duplicate_reply_is_caught_before_the_next_request(client: PluginClient) -> None:
    assert client.get("dup").value.get_secret_value() == "one"
    time.sleep(0.05)
    with pytest.raises(errors.ProtocolError, match="no request was in flight"):
        client.get("value:x")
    assert client.get("value:y").value.get_secret_value() == "y"


def test_capability_gate_refuses_without_io(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(config={"caps": int(Capability.READ)})
    c.get("warm")
    before = c.health()
    with pytest.raises(errors.UnsupportedCapability) as ei:
        c.put("k", "v")
    assert ei.value.capability == "WRITE"
    with pytest.raises(errors.UnsupportedCapability):
        c.list()
    after = c.health()
    assert after.pid == before.pid and after.spawn_count == 1
    assert c.get("value:still").value.get_secret_value() == "still"


def test_a_refused_call_waits_for_no_other_request(client_factory: Callable[..., PluginClient]) -> None:
    """The gate answers before the request lock: a call the plugin did not claim is
    refused at once even while another caller's request holds the client."""
    c = client_factory(config={"caps": int(Capability.READ)})
    c.get("warm")
    started = threading.Event()

    def slow() -> None:
        started.set()
        c.get("slow:1500")

    t = threading.Thread(target=slow)
    t.start()
    try:
        assert started.wait(2.0)
        time.sleep(0.2)  # the slow request holds the lock by now
        t0 = time.monotonic()
        with pytest.raises(errors.UnsupportedCapability):
            c.list()
        assert time.monotonic() - t0 < 0.5
    finally:
        t.join(10.0)


def test_plugin_exits_while_idle_is_transparent(client: PluginClient) -> None:
    client.get("exit-soon")
    pid = client.health().pid
    assert pid is not None
    assert wait_gone(pid)
    assert client.get("value:fresh").value.get_secret_value() == "fresh"
    h = client.health()
    assert h.pid != pid and h.spawn_count == 2 and h.crashes_in_window == 1


def test_idle_reap(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(LifetimePolicy(idle_timeout=0.2, shutdown_grace=1.0))
    c.get("warm")
    pid = c.health().pid
    time.sleep(0.3)
    assert c.get("value:x").value.get_secret_value() == "x"
    h = c.health()
    assert h.pid != pid and h.spawn_count == 2 and h.crashes_in_window == 0
    # Stopped in the background: by the reap, or (if that came late) after the request handed it over.
    assert wait_until(lambda: getattr(c.health().last_exit, "pid", None) == pid, 3.0)
    assert c.health().last_exit.stage is ExitStage.STDIN_CLOSE  # type: ignore[union-attr]
    assert wait_gone(pid, 3.0)  # type: ignore[arg-type]


def test_idle_process_is_reaped_without_a_request(client_factory: Callable[..., PluginClient]) -> None:
    """``idle_timeout`` means it: the process goes once idle that long, whether or
    not another request comes (the sync client's sweeper thread, the asyncio
    client's loop timer), and is booked as stopped, not crashed."""
    c = client_factory(LifetimePolicy(idle_timeout=0.2, shutdown_grace=1.0, exit_wait=0.5))
    c.get("warm")
    pid = c.health().pid
    assert pid is not None
    assert wait_until(lambda: c.health().pid is None, 3.0)
    assert wait_gone(pid, 3.0)
    h = c.health()
    assert h.state is PluginState.IDLE and h.spawn_count == 1 and h.crashes_in_window == 0
    assert h.last_exit is not None and h.last_exit.pid == pid and h.last_exit.stage is ExitStage.STDIN_CLOSE
    assert c.get("value:again").value.get_secret_value() == "again"
    assert c.health().spawn_count == 2


def test_a_client_in_use_is_not_reaped(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(LifetimePolicy(idle_timeout=0.3, shutdown_grace=1.0, exit_wait=0.5))
    c.get("warm")
    pid = c.health().pid
    end = time.monotonic() + 1.2
    while time.monotonic() < end:  # never idle for as long as 0.3 s
        assert c.get("value:k").value.get_secret_value() == "k"
        time.sleep(0.05)
    h = c.health()
    assert h.pid == pid and h.spawn_count == 1


def test_background_idle_reap_of_a_stubborn_plugin_spares_the_next_request(
    tmp_path: Path, new_client: Callable[..., PluginClient]
) -> None:
    """A plugin that ignores stdin EOF and SIGTERM takes exit_wait + grace to stop.
    Reaped in the background, that time is not the next request's: only a
    reap left to the request path would make it wait."""
    plugin = make_plugin(tmp_path / "p", "stubborn", python_script(STUBBORN))
    c = new_client(plugin, policy=LifetimePolicy(idle_timeout=0.2, exit_wait=0.3, shutdown_grace=0.6))
    c.get("x")
    pid = c.health().pid
    assert wait_until(lambda: c.health().pid is None, 5.0)  # stopped: 0.2 + 0.3 + 0.6 s
    assert wait_gone(pid, 3.0)  # type: ignore[arg-type]
    assert c.health().last_exit.stage is ExitStage.SIGKILL  # type: ignore[union-attr]
    assert c.get("y").value.get_secret_value() == "v"
    h = c.health()  # the request only spawned: no stop of its own before it
    assert h.spawn_count == 2 and h.last_exit.pid == pid  # type: ignore[union-attr]
    c.shutdown()


def _stops(c: Any) -> int:
    """How many background stops of ``c``'s processes (``c``: a client, or the async one's adapter) are under way."""
    n: int = getattr(c, "aclient", c)._background_stops()
    return n


def _reaping(c: Any) -> bool:
    """A background idle reap of ``c`` is under way."""
    return _stops(c) > 0


def _stubborn_being_reaped(tmp_path: Path, new_client: Callable[..., PluginClient]) -> "tuple[PluginClient, int]":
    """A client whose stubborn plugin the background idle reap (the sweeper, or an
    asyncio client's timer) has just taken out of it and is stopping
    (exit_wait + grace: 1.5 s at least), and that pid."""
    plugin = make_plugin(tmp_path / "p", "stubborn", python_script(STUBBORN))
    c = new_client(plugin, policy=LifetimePolicy(idle_timeout=0.2, exit_wait=0.5, shutdown_grace=1.0))
    c.get("x")
    pid = c.health().pid
    assert pid is not None
    assert wait_until(lambda: _reaping(c), 3.0)
    return c, pid


def test_a_request_during_a_background_idle_reap_does_not_wait_for_it(
    tmp_path: Path, new_client: Callable[..., PluginClient]
) -> None:
    """The reap stops an idle process without the request lock: a request that
    comes meanwhile gets a fresh process at once, and the books stay the new
    process's when the old one's stop ends."""
    c, old = _stubborn_being_reaped(tmp_path, new_client)
    try:
        assert c.get("y").value.get_secret_value() == "v"
        new = c.health().pid
        assert new is not None and new != old
        assert alive(old)  # the reply came while the old one is still being stopped, beside it
        # The new one idles out too (0.2 s), and its stop starts beside the old one's (1.5 s).
        assert wait_until(lambda: _stops(c) == 2, 1.2)
        assert wait_until(lambda: getattr(c.health().last_exit, "pid", None) == old, 5.0)
        assert not os.path.exists(f"/proc/{old}")  # reaped
        h = c.health()
        assert h.pid == new and h.state is PluginState.RUNNING
        assert h.last_exit is not None and h.last_exit.stage is ExitStage.SIGKILL
    finally:
        c.shutdown()
    assert not os.path.exists(f"/proc/{new}")  # its own reap (or the shutdown) is over too


def test_shutdown_waits_for_a_background_idle_reap(
    tmp_path: Path, new_client: Callable[..., PluginClient], caplog: pytest.LogCaptureFixture
) -> None:
    """shutdown() returns with no process of the client left, the one the
    background reap is stopping included, because that stop ended (not
    because the wait for it gave up)."""
    c, old = _stubborn_being_reaped(tmp_path, new_client)
    with caplog.at_level(logging.WARNING, logger="plugin_client"):
        c.shutdown()
    assert not os.path.exists(f"/proc/{old}")  # reaped, not merely signalled
    assert not _reaping(c)
    assert not [r for r in caplog.records if "idle reap" in r.getMessage()]
    assert c.health().last_exit.pid == old  # type: ignore[union-attr]


def test_a_request_that_finds_its_process_expired_does_not_wait_for_its_stop(
    tmp_path: Path, new_client: Callable[..., PluginClient]
) -> None:
    """The background reap has not got to an expired process (here it never
    would: its timeout is an hour, the process is made to look older): the
    request takes it out, hands it to a background stop and starts a fresh one,
    instead of waiting exit_wait + grace for a stubborn plugin to stop."""
    plugin = make_plugin(tmp_path / "p", "stubborn", python_script(STUBBORN))
    c = new_client(plugin, policy=LifetimePolicy(idle_timeout=3600.0, exit_wait=0.5, shutdown_grace=1.0))
    c.get("x")
    old = c.health().pid
    assert old is not None
    getattr(c, "aclient", c)._flow.life.last_used_mono -= 7200.0  # idle for two hours
    try:
        assert c.get("y").value.get_secret_value() == "v"
        h = c.health()
        assert h.pid is not None and h.pid != old and h.spawn_count == 2
        assert alive(old)  # the reply came while the old one is being stopped
        assert _reaping(c) and h.last_exit is None
        assert wait_until(lambda: getattr(c.health().last_exit, "pid", None) == old, 5.0)
        assert c.health().last_exit.stage is ExitStage.SIGKILL  # type: ignore[union-attr]
        assert not os.path.exists(f"/proc/{old}")  # reaped
        assert c.health().pid == h.pid  # the books stay the new process's
    finally:
        c.shutdown()


def test_background_stops_of_several_clients_run_together(
    tmp_path: Path, new_client: Callable[..., PluginClient]
) -> None:
    """Two clients' stubborn plugins idle out together: their stops (1.5 s each)
    overlap, rather than one waiting for the other (sync clients share one
    thread for them), and both clients' shutdown() leave nothing behind."""
    plugin = make_plugin(tmp_path / "p", "stubborn", python_script(STUBBORN))
    policy = LifetimePolicy(idle_timeout=0.2, exit_wait=0.5, shutdown_grace=1.0)
    a, b = new_client(plugin, policy=policy), new_client(plugin, policy=policy)
    a.get("x")
    b.get("x")
    pids = [a.health().pid, b.health().pid]
    try:
        assert wait_until(lambda: _reaping(a) and _reaping(b), 3.0)
        assert all(alive(p) for p in pids)  # type: ignore[arg-type]
    finally:
        a.shutdown()
        b.shutdown()
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
    assert [getattr(c.health().last_exit, "stage", None) for c in (a, b)] == [ExitStage.SIGKILL] * 2


@pytest.mark.parametrize("client_kind", ["sync"])
def test_an_infinite_idle_timeout_is_never_swept(plugin: Any, new_client: Callable[..., PluginClient]) -> None:
    """A sweep (run here for whichever clients are live) never reaps it."""
    c = new_client(plugin, policy=LifetimePolicy(idle_timeout=math.inf))
    c.get("warm")
    pid = c.health().pid
    c._flow.life.last_used_mono -= 1e9  # as idle as can be
    SWEEPER.sweep()
    assert c.health().pid == pid


@pytest.mark.parametrize("client_kind", ["sync"])
def test_the_idle_sweeper_keeps_no_client_alive(plugin: Any, new_client: Callable[..., PluginClient]) -> None:
    """The sweeper holds a client weakly, and makes no reference cycle: a dropped
    client goes at once (its finalizer then stops the process)."""
    client = new_client(plugin, policy=FAST)
    client.get("warm")
    pid = client.health().pid
    ref = weakref.ref(client)
    del client
    assert ref() is None  # no gc.collect(): reference counting alone
    assert wait_gone(pid, 3.0)  # type: ignore[arg-type]


def test_restart_cap_disables_and_clear_re_enables(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(LifetimePolicy(restart_cap=3, restart_window=60.0, request_timeout=2.0))
    for _ in range(2):
        with pytest.raises(errors.PluginCrashed):
            c.get("crash")
    assert c.health().state is PluginState.RECOVERING
    with pytest.raises(errors.PluginCrashed, match="now disabled"):
        c.get("crash")
    h = c.health()
    assert h.state is PluginState.DISABLED and h.crashes_in_window == 3
    assert h.disabled_reason and "3 times" in h.disabled_reason
    spawns = h.spawn_count
    with pytest.raises(errors.PluginDisabled, match="clear_disabled"):
        c.get("value:x")
    assert c.health().spawn_count == spawns  # no spawn while disabled
    c.clear_disabled()
    assert c.health().state is PluginState.IDLE and c.health().crashes_in_window == 0
    assert c.get("value:x").value.get_secret_value() == "x"


def test_old_crashes_age_out(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(LifetimePolicy(restart_cap=2, restart_window=0.3, request_timeout=2.0))
    with pytest.raises(errors.PluginCrashed):
        c.get("crash")
    time.sleep(0.4)
    assert c.health().crashes_in_window == 0
    with pytest.raises(errors.PluginCrashed):
        c.get("crash")
    assert c.health().state is PluginState.RECOVERING


def test_missing_executable(tmp_path: Path, new_client: Callable[..., PluginClient]) -> None:
    plugin = make_plugin(tmp_path / "p")
    os.unlink(plugin.executable.path)
    c = new_client(plugin, policy=FAST)
    with pytest.raises(errors.ExecutableChanged, match="was removed"):
        c.get("x")
    # Removed after verification: refused, not run, and not the plugin's crash.
    h = c.health()
    assert h.crashes_in_window == 0 and h.executable_changed is not None and "was removed" in h.executable_changed
    c.shutdown()


def test_unverified_missing_executable_path(tmp_path: Path, new_client: Callable[..., PluginClient]) -> None:
    plugin = make_plugin(tmp_path / "p")
    c = new_client(plugin.manifest, executable=tmp_path / "nope", policy=FAST)
    with pytest.raises(errors.ExecutableMissing):
        c.get("x")
    c.shutdown()


def test_spawn_failures_count_toward_the_cap(tmp_path: Path, new_client: Callable[..., PluginClient]) -> None:
    # A client given a path verifies it lazily: a missing file is a failed start.
    # (One removed after it was verified is not counted: test_missing_executable.)
    plugin = make_plugin(tmp_path / "p")
    c = new_client(plugin.manifest, executable=tmp_path / "nope", policy=LifetimePolicy(restart_cap=2))
    for _ in range(2):
        with pytest.raises(errors.ExecutableMissing):
            c.get("x")
    with pytest.raises(errors.PluginDisabled):
        c.get("x")
    c.shutdown()


def test_env_is_exactly_the_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_client: Callable[..., PluginClient]
) -> None:
    monkeypatch.setenv("ALLOWED_ONE", "yes")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret")
    monkeypatch.delenv("ALLOWED_UNSET", raising=False)
    plugin = make_plugin(tmp_path / "p", allowed_env_vars=["ALLOWED_ONE", "ALLOWED_UNSET"])
    with new_client(plugin, policy=FAST) as c:
        names = c.get("environ").value.get_secret_value()
        # LC_CTYPE may be set by the interpreter itself when it coerces the C locale.
        assert [n for n in names.split(",") if n and n != "LC_CTYPE"] == ["ALLOWED_ONE"]
        assert c.get("env:ALLOWED_ONE").value.get_secret_value() == "yes"
        assert c.get("env:AWS_SECRET_ACCESS_KEY").value.get_secret_value() == "<unset>"


def test_plugin_sees_only_fds_0_1_2(client: PluginClient) -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        # /proc/self/fd's own listing fd is the 4th entry the plugin sees.
        fds = client.get("fds").value.get_secret_value().split(",")
        assert fds[:3] == ["0", "1", "2"] and len(fds) == 4
    finally:
        os.close(fd)


def test_stderr_flood_does_not_block(client_factory: Callable[..., PluginClient]) -> None:
    c = client_factory(LifetimePolicy(request_timeout=10.0, stderr_lines=20))
    assert c.get("stderr:1000000").value.get_secret_value() == "logged"
    assert c.get("value:after").value.get_secret_value() == "after"
    deadline = time.monotonic() + 5
    while len(c.health().stderr_tail) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 0 < len(c.health().stderr_tail) <= 20


def test_stderr_goes_to_logging(client: PluginClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="plugin_client.plugin.echo"):
        client.get("stderr:300")
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
    assert any(r.name == "plugin_client.plugin.echo" for r in caplog.records)


def test_shutdown_cooperative_closes_stdin(client: PluginClient) -> None:
    client.get("warm")
    pid = client.health().pid
    client.shutdown()
    h = client.health()
    assert h.state is PluginState.IDLE and h.pid is None
    assert h.last_exit is not None and h.last_exit.stage is ExitStage.STDIN_CLOSE and h.last_exit.returncode == 0
    assert not alive(pid)  # type: ignore[arg-type]
    client.shutdown()  # idempotent
    with pytest.raises(errors.ClientClosed):
        client.get("x")


def test_stubborn_plugin_sigterm_then_sigkill(tmp_path: Path, new_client: Callable[..., PluginClient]) -> None:
    plugin = make_plugin(tmp_path / "p", "stubborn", python_script(STUBBORN))
    c = new_client(plugin, policy=LifetimePolicy(exit_wait=0.1, shutdown_grace=0.3))
    c.get("x")
    pid = c.health().pid
    t0 = time.monotonic()
    c.shutdown()
    elapsed = time.monotonic() - t0
    h = c.health()
    assert h.last_exit is not None and h.last_exit.stage is ExitStage.SIGKILL
    assert h.last_exit.signal == "SIGKILL"
    assert 0.3 <= elapsed < 2.0
    assert not alive(pid)  # type: ignore[arg-type]


def test_grandchild_of_wrapper_script_is_killed(tmp_path: Path, new_client: Callable[..., PluginClient]) -> None:
    inner = make_plugin(tmp_path / "inner")
    # dash gives a background job /dev/null as stdin unless it is redirected from another fd.
    wrapper = f"#!/bin/sh\nexec 3<&0\n{inner.executable.path} 0<&3 &\nwait\n".encode()
    plugin = make_plugin(tmp_path / "wrap", "wrapped", wrapper)
    c = new_client(plugin, policy=LifetimePolicy(exit_wait=0.2, shutdown_grace=0.5))
    gc_pid = int(c.get("grandchild").value.get_secret_value())
    assert alive(gc_pid)
    c.shutdown()
    assert wait_gone(gc_pid, 3.0)


def test_client_dropped_without_shutdown(plugin: Any, new_client: Callable[..., PluginClient]) -> None:
    c = new_client(plugin, policy=FAST)
    c.get("warm")
    pid = c.health().pid
    del c
    gc.collect()
    assert wait_gone(pid, 3.0)  # type: ignore[arg-type]


def test_a_client_dropped_without_shutdown_is_stopped_in_the_background(
    tmp_path: Path, new_client: Callable[..., PluginClient]
) -> None:
    """Its process is stopped gracefully by the background thread: the thread
    that dropped the client (an event loop's, perhaps) does not wait the
    exit_wait + grace (1.5 s) a stubborn plugin takes."""
    plugin = make_plugin(tmp_path / "p", "stubborn", python_script(STUBBORN))
    c = new_client(plugin, policy=LifetimePolicy(exit_wait=0.5, shutdown_grace=1.0))
    c.get("x")
    pid = c.health().pid
    assert pid is not None
    del c
    gc.collect()
    assert alive(pid)  # dropped, and still being stopped
    assert wait_gone(pid, 5.0)


def in_forked_child(check: Callable[[], bool]) -> bool:
    """Run ``check`` in a forked child; what it returned (False if it raised)."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        try:
            os.write(w, b"1" if check() else b"0")
        finally:
            os._exit(0)
    os.close(w)
    try:
        return os.read(r, 1) == b"1"
    finally:
        os.close(r)
        os.waitpid(child, 0)


@pytest.mark.parametrize("client_kind", ["sync"])  # a forked child has no event loop thread
def test_fork_child_does_not_touch_parent_plugin(client: PluginClient) -> None:
    client.get("warm")
    pid = client.health().pid

    def in_child() -> bool:
        ok = client.health().pid is None
        client.shutdown()
        return ok

    assert in_forked_child(in_child)
    assert alive(pid)  # type: ignore[arg-type]
    assert client.health().pid == pid
    assert client.get("value:still").value.get_secret_value() == "still"


@pytest.mark.parametrize("client_kind", ["sync"])  # a forked child has no event loop thread
def test_fork_during_a_background_idle_reap(tmp_path: Path, new_client: Callable[..., PluginClient]) -> None:
    """A child forked while the parent's sweeper stops a process neither waits for
    that stop in its shutdown() nor touches the process; the parent's stop ends."""
    c, old = _stubborn_being_reaped(tmp_path, new_client)

    def in_child() -> bool:
        ok = c._background_stops() == 0  # so its shutdown() has no stop of the parent's to wait for
        c.shutdown()
        return ok

    assert in_forked_child(in_child)
    c.shutdown()  # waits for the parent's stop
    assert not os.path.exists(f"/proc/{old}")
    assert c.health().last_exit.pid == old  # type: ignore[union-attr]


def test_threads_get_their_own_replies(client: PluginClient) -> None:
    n_threads, n_req = 8, 2000
    failures: list[str] = []
    barrier = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(n_req):
            ref = f"value:t{t}-r{i}"
            got = client.get(ref).value.get_secret_value()
            if got != ref[6:]:
                failures.append(f"{ref} got {got}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert client.health().spawn_count == 1  # concurrent first requests shared one spawn


def test_request_primitive_and_policy_validation(client: PluginClient) -> None:
    assert client.request(IsAvailableCall()).status.value == "available"
    with pytest.raises(ValueError):
        LifetimePolicy(restart_cap=0)
    with pytest.raises(ValueError):
        LifetimePolicy(request_timeout=-1)


def test_health_to_json(client: PluginClient) -> None:
    client.get("warm")
    import json

    doc = json.loads(client.health().to_json())
    assert doc["plugin_name"] == "echo" and doc["state"] == "running"

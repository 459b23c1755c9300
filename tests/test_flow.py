"""``Flow``, the sans-I/O engine, driven by a fake operation executor: no processes.

Each test builds a flow whose processes are :class:`FakeProcess` objects (the
flow's ``start_process`` hook), scripts what its exchanges and exit waits
return, and drives the flow's steps with :func:`drive`, which performs every
operation from the script and records it. The manifest's executable is a real
file (verified as in production) that is never run.
"""

from __future__ import annotations

import errno
import math
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Deque, List, Optional, Tuple, Union

import pytest

from plugin_client import _flow, errors
from plugin_client._core_errors import DeadlineExceeded, FrameTooLargeError, PipeClosed, SpawnFailed, StreamEOF
from plugin_client._flow import Flow
from plugin_client._process import EXCHANGE_ERRORS, IDLE_EXITED, IDLE_OK, IDLE_OUTPUT, Exchange, ExitRecord, WaitExit
from plugin_client.health import ExitStage, PluginState
from plugin_client.policy import LifetimePolicy
from plugin_client.protocol import (
    MAX_REQUEST_ID, GetCall, InitCall, ListCall, PutCall, encode_request,
)

from plugin_factory import make_plugin

POLICY = LifetimePolicy(request_timeout=1.0, start_timeout=2.0, idle_timeout=60.0, restart_cap=3)

Outcome = Union[bytes, BaseException]


class FakeChild:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd = -1
        self.returncode: Optional[int] = None


class FakeReader:
    def __init__(self) -> None:
        self.idle = IDLE_OK

    def idle_state(self, pidfd: int = -1) -> int:
        return self.idle


class FakeTail:
    def lines(self) -> List[str]:
        return ["a line on stderr"]


class FakeProcess:
    """What the flow asks of a ``PluginProcess``, with steps that wait as a real one's do."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.child = FakeChild(pid)
        self.reader = FakeReader()
        self.tail = FakeTail()
        self.io: Any = None
        self.ended: Optional[ExitStage] = None

    def idle_check(self) -> int:
        return self.reader.idle

    def _end(self, stage: ExitStage, rc: Optional[int]) -> ExitRecord:
        self.ended = stage
        self.child.returncode = rc if rc is not None else -9
        return ExitRecord(self.pid, stage, self.child.returncode)

    def kill_steps(self) -> Any:
        yield WaitExit(self, None)  # type: ignore[arg-type]
        return self._end(ExitStage.KILLED_AFTER_ERROR, -9)

    def reap_dead_steps(self) -> Any:
        rc = yield WaitExit(self, 0.1)  # type: ignore[arg-type]
        return self._end(ExitStage.CRASH, rc)

    def stop_steps(self, exit_wait: float, grace: float) -> Any:
        rc = yield WaitExit(self, exit_wait)  # type: ignore[arg-type]
        return self._end(ExitStage.STDIN_CLOSE, rc)

    def stop(self, exit_wait: float, grace: float) -> ExitRecord:
        return self._end(ExitStage.STDIN_CLOSE, 0)

    def kill(self) -> ExitRecord:
        return self._end(ExitStage.KILLED_AFTER_ERROR, -9)

    def forget(self) -> None:
        self.ended = None


class Script:
    """The fake operation executor's answers, in order, and what it performed."""

    def __init__(self) -> None:
        self.outcomes: Deque[Outcome] = deque()
        self.performed: List[Tuple[str, Any]] = []
        self.spawned: List[FakeProcess] = []
        self.spawn_error: Optional[BaseException] = None

    def start(self, argv: Any, env: Any, **kw: Any) -> FakeProcess:
        if self.spawn_error is not None:
            raise self.spawn_error
        proc = FakeProcess(1000 + len(self.spawned))
        self.spawned.append(proc)
        return proc

    def init_reply(self, caps: int = 0x1FF, source: str = "echo") -> bytes:
        return (
            b'{"jsonrpc":"2.0","id":%d,"result":{"source_name":"%s","capabilities_bits":%d,"plugin_version":"1"}}'
            % (0, source.encode(), caps)
        )


def drive(steps: Any, script: Script) -> Any:
    """Drive a flow generator: each Exchange gets the next scripted outcome (with
    the request id put into a reply), each WaitExit an exit status of 0."""
    try:
        op = steps.send(None)
        while True:
            if type(op) is Exchange:
                script.performed.append(("exchange", op.line))
                out = script.outcomes.popleft()
                if isinstance(out, BaseException):
                    op = steps.throw(out)
                    continue
                res: Any = out.replace(b'"id":0', b'"id":%d' % op.rid, 1)
            else:
                assert type(op) is WaitExit
                script.performed.append(("wait", op.timeout))
                res = 0
            op = steps.send(res)
    except StopIteration as stop:
        return stop.value


def reply(value: str = "v") -> bytes:
    return b'{"jsonrpc":"2.0","id":0,"result":{"value":"%s"}}' % value.encode()


@pytest.fixture
def plugin(tmp_path: Path) -> Any:
    return make_plugin(tmp_path / "p")


@pytest.fixture
def script() -> Script:
    return Script()


def new_flow(plugin: Any, script: Script, policy: LifetimePolicy = POLICY, **kw: Any) -> Flow:
    flow = Flow(plugin.manifest, plugin.executable, policy, None, None, start_process=script.start, **kw)
    flow.on_live = lambda f: script.performed.append(("on_live", None))
    return flow


def warm(flow: Flow, script: Script, caps: int = 0x1FF) -> FakeProcess:
    script.outcomes.append(script.init_reply(caps))
    proc = drive(flow.start_steps(), script)
    script.performed.clear()
    assert flow.slot.proc is not None
    return flow.slot.proc  # type: ignore[return-value]


def test_a_flow_keeps_to_its_slots(plugin: Any, script: Script) -> None:
    """Flow's methods come from two classes (``FlowEnds``, the mixin of its process's
    ends): the mixin adds no ``__dict__``, so the state stays in ``Flow.__slots__``,
    ``__weakref__`` among them."""
    flow = new_flow(plugin, script)
    assert not hasattr(flow, "__dict__")
    with pytest.raises(AttributeError):
        flow.not_a_slot = 1  # type: ignore[attr-defined]
    assert weakref.ref(flow)() is flow


# --- begin -------------------------------------------------------------------------


def test_begin_without_a_process_is_the_slow_path(plugin: Any, script: Script) -> None:
    assert new_flow(plugin, script).begin(GetCall, None, "r") is None


def test_begin_on_a_warm_process_makes_the_request(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    proc = warm(flow, script)
    first = flow.begin(GetCall, None, "db/x")
    assert first is not None and first.proc is proc and first.call_type is GetCall
    assert first.line == encode_request(GetCall(reference="db/x"), first.rid)
    assert 0.0 < first.deadline - _flow.monotonic() <= POLICY.request_timeout
    rid = first.rid
    again = flow.begin(GetCall, None, "db/x")
    assert again is first and again.rid == rid + 1  # a get's pending request is reused
    call = PutCall(reference="k", value="secret")
    put = flow.begin(PutCall, call, "")
    assert put is not None and put is not first and put.line == encode_request(call, rid + 2)
    assert script.performed == []  # no I/O


def test_request_ids_wrap(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    warm(flow, script)
    flow._next_id = MAX_REQUEST_ID
    first = flow.begin(GetCall, None, "r")
    assert first is not None and first.rid == MAX_REQUEST_ID
    second = flow.begin(GetCall, None, "r")
    assert second is not None and second.rid == 1


@pytest.mark.parametrize("why", ["closed", "forked", "disabled", "idle-expired", "gate", "idle-output", "idle-exit"])
def test_begin_declines(plugin: Any, script: Script, why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = new_flow(plugin, script)
    proc = warm(flow, script, caps=0x1)
    call_type: Any = GetCall
    if why == "closed":
        flow.closed = True
    elif why == "forked":
        monkeypatch.setattr(_flow, "_PID", -1)
    elif why == "disabled":
        flow.life.state = PluginState.DISABLED
    elif why == "idle-expired":
        flow.life.last_used_mono -= POLICY.idle_timeout + 1
    elif why == "gate":
        call_type = ListCall
    else:
        proc.reader.idle = IDLE_OUTPUT if why == "idle-output" else IDLE_EXITED
    rid = flow._next_id
    assert flow.begin(call_type, None if call_type is GetCall else ListCall(), "r") is None
    assert flow._next_id == rid  # no id taken


def test_begin_leaves_the_idle_check_to_an_exchange_that_makes_it(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script, idle_check_in_exchange=True)
    proc = warm(flow, script)
    proc.reader.idle = IDLE_OUTPUT
    assert flow.begin(GetCall, None, "r") is not None


# --- complete ------------------------------------------------------------------------


def test_complete_takes_a_plain_success(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    warm(flow, script)
    pending = flow.begin(GetCall, None, "r")
    assert pending is not None
    flow.life.last_used_mono = used = -math.inf
    got = flow.complete(pending, b'{"jsonrpc":"2.0","id":%d,"result":{"value":"s3"}}' % pending.rid)
    assert got is not None and got.value.get_secret_value() == "s3"
    assert flow.life.last_used_mono > used
    # Spaced, another member order: not compact, still plainly a success.
    spaced = b'{"result": {"value": "s4"}, "id": %d, "jsonrpc": "2.0"}' % pending.rid
    got = flow.complete(pending, spaced)
    assert got is not None and got.value.get_secret_value() == "s4"


@pytest.mark.parametrize("frame", [
    b'{"jsonrpc":"2.0","id":%d,"error":{"kind":"other","detail":"no"}}',
    b'{"jsonrpc":"2.0","id":999,"result":{"value":"x"}}',
    b"garbage %d",
])
def test_complete_leaves_anything_else_to_finish(plugin: Any, script: Script, frame: bytes) -> None:
    flow = new_flow(plugin, script)
    warm(flow, script)
    pending = flow.begin(GetCall, None, "r")
    assert pending is not None
    used = flow.life.last_used_mono
    assert flow.complete(pending, frame % pending.rid if b"%d" in frame else frame) is None
    assert flow.life.last_used_mono == used


# --- finish_steps ----------------------------------------------------------------------


def _begun(plugin: Any, script: Script, **kw: Any) -> Tuple[Flow, FakeProcess, Exchange]:
    flow = new_flow(plugin, script, **kw)
    proc = warm(flow, script)
    pending = flow.begin(GetCall, None, "r")
    assert pending is not None
    return flow, proc, pending


def test_finish_a_plugin_error_keeps_the_process(plugin: Any, script: Script) -> None:
    flow, proc, pending = _begun(plugin, script)
    frame = b'{"jsonrpc":"2.0","id":%d,"error":{"kind":"bad-reference","reference":"r","reason":"gone"}}' % pending.rid
    with pytest.raises(errors.PluginError):
        drive(flow.finish_steps(pending, frame), script)
    assert flow.slot.proc is proc and proc.ended is None and flow.life.state is PluginState.RUNNING
    assert script.performed == []


def test_finish_a_broken_reply_kills_and_counts(plugin: Any, script: Script) -> None:
    flow, proc, pending = _begun(plugin, script)
    with pytest.raises(errors.ProtocolError) as info:
        drive(flow.finish_steps(pending, b"not json"), script)
    assert flow.slot.proc is None and proc.ended is ExitStage.KILLED_AFTER_ERROR
    assert flow.life.state is PluginState.RECOVERING and flow.health().crashes_in_window == 1
    assert "the next request starts a fresh process" in str(info.value)


@pytest.mark.parametrize("exc, public, stage", [
    (DeadlineExceeded("read a frame"), errors.RequestTimeout, ExitStage.KILLED_AFTER_ERROR),
    (StreamEOF(0), errors.PluginCrashed, ExitStage.CRASH),
    (PipeClosed(5), errors.PluginCrashed, ExitStage.CRASH),
    (FrameTooLargeError(10, 11), errors.FrameTooLarge, ExitStage.KILLED_AFTER_ERROR),
])
def test_finish_an_exchange_error(plugin: Any, script: Script, exc: BaseException, public: type,
                                  stage: ExitStage) -> None:
    flow, proc, pending = _begun(plugin, script)
    with pytest.raises(public) as info:
        drive(flow.finish_steps(pending, exc), script)
    assert info.value.__cause__ is exc
    assert flow.slot.proc is None and proc.ended is stage and flow.health().crashes_in_window == 1


def test_finish_disables_at_the_restart_cap(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    for _ in range(POLICY.restart_cap):
        warm(flow, script)
        pending = flow.begin(GetCall, None, "r")
        assert pending is not None
        with pytest.raises(errors.RequestTimeout) as info:
            drive(flow.finish_steps(pending, DeadlineExceeded("read a frame")), script)
    assert flow.life.state is PluginState.DISABLED
    assert "disabled" in str(info.value)
    assert flow.begin(GetCall, None, "r") is None
    with pytest.raises(errors.PluginDisabled):
        drive(flow.request_steps(GetCall, None, "r"), script)


def test_finish_an_exchange_not_written_starts_over_on_a_fresh_process(plugin: Any, script: Script) -> None:
    flow, proc, pending = _begun(plugin, script, idle_check_in_exchange=True)
    proc.reader.idle = IDLE_EXITED  # the core's idle check wrote nothing
    script.outcomes.extend([script.init_reply(), reply("fresh")])
    got = drive(flow.finish_steps(pending, None), script)
    assert got.value.get_secret_value() == "fresh"
    assert proc.ended is ExitStage.CRASH and flow.slot.proc is script.spawned[-1] is not proc
    assert flow.health().crashes_in_window == 1  # an exit while idle counts


def test_finish_an_exchange_not_written_after_stray_output(plugin: Any, script: Script) -> None:
    flow, proc, pending = _begun(plugin, script, idle_check_in_exchange=True)
    proc.reader.idle = IDLE_OUTPUT
    with pytest.raises(errors.ProtocolError, match="wrote to stdout while no request"):
        drive(flow.finish_steps(pending, None), script)
    assert proc.ended is ExitStage.KILLED_AFTER_ERROR and flow.slot.proc is None
    assert [op for op, _ in script.performed if op == "exchange"] == []


# --- the slow path: request_steps, ready, spawn ---------------------------------------------


def test_request_steps_spawns_inits_and_asks(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    script.outcomes.extend([script.init_reply(), reply("cold")])
    got = drive(flow.request_steps(GetCall, None, "r"), script)
    assert got.value.get_secret_value() == "cold"
    kinds = [op for op, _ in script.performed]
    assert kinds == ["on_live", "exchange"] or kinds == ["exchange", "on_live", "exchange"]
    assert b"secret_source.init" in script.performed[0][1]
    assert flow.life.state is PluginState.RUNNING and flow.caps_bits == 0x1FF


def test_the_cold_gate_refuses_after_init_without_writing(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    script.outcomes.append(script.init_reply(caps=0x1))
    with pytest.raises(errors.UnsupportedCapability):
        drive(flow.request_steps(ListCall, ListCall(), ""), script)
    lines = [line for op, line in script.performed if op == "exchange"]
    assert len(lines) == 1 and b"secret_source.init" in lines[0]
    assert flow.health().crashes_in_window == 0 and flow.slot.proc is not None
    # Known capabilities: refused before any I/O, no process needed.
    script.performed.clear()
    flow.slot.proc = None
    with pytest.raises(errors.UnsupportedCapability):
        drive(flow.request_steps(ListCall, ListCall(), ""), script)
    assert script.performed == [] and script.spawned[1:] == []


def test_an_expired_process_is_handed_to_stop_in_background(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    old = warm(flow, script)
    handed: List[Any] = []
    flow.stop_in_background = lambda f, p: handed.append(p)
    flow.life.last_used_mono -= POLICY.idle_timeout + 1
    script.outcomes.extend([script.init_reply(), reply()])
    drive(flow.request_steps(GetCall, None, "r"), script)
    assert handed == [old] and flow.slot.proc is not old and old.ended is None


def test_an_expired_process_is_stopped_first_without_stop_in_background(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    old = warm(flow, script)
    flow.life.last_used_mono -= POLICY.idle_timeout + 1
    script.outcomes.extend([script.init_reply(), reply()])
    drive(flow.request_steps(GetCall, None, "r"), script)
    assert old.ended is ExitStage.STDIN_CLOSE and flow.health().crashes_in_window == 0


@pytest.mark.parametrize("init, message", [
    (DeadlineExceeded("read a frame"), "did not finish starting"),
    (StreamEOF(0), "exited during init"),
    (FrameTooLargeError(10, 11), "longer than max_frame_bytes"),
    (b'{"jsonrpc":"2.0","id":0,"error":{"kind":"other","detail":"bad config"}}', "refused init"),
    (b'{"jsonrpc":"2.0","id":0,"result":{"source_name":"other","capabilities_bits":1,"plugin_version":"1"}}',
     "instead of"),
    (b"garbage", "not JSON"),
])
def test_a_failed_init_ends_the_process_and_counts(plugin: Any, script: Script, init: Outcome, message: str) -> None:
    flow = new_flow(plugin, script)
    script.outcomes.append(init)
    with pytest.raises(errors.InitError, match=message):
        drive(flow.start_steps(), script)
    assert flow.slot.proc is None and script.spawned[0].ended is not None
    assert flow.health().crashes_in_window == 1


@pytest.mark.parametrize("error, message, crashes", [
    (SpawnFailed(errno.EACCES, "x"), "cannot start", 1),
    (OSError(errno.EMFILE, "Too many open files"), "file descriptors", 0),  # the host's state, not the plugin's
])
def test_a_spawn_failure(plugin: Any, script: Script, error: BaseException, message: str, crashes: int) -> None:
    flow = new_flow(plugin, script)
    script.spawn_error = error
    with pytest.raises(errors.SpawnError, match=message):
        drive(flow.start_steps(), script)
    assert flow.health().crashes_in_window == crashes


def test_a_closed_flow_refuses(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    flow.closed = True
    with pytest.raises(errors.ClientClosed):
        drive(flow.request_steps(GetCall, None, "r"), script)


# --- stops, the idle reap, interruptions ------------------------------------------------


def test_take_idle_and_stop_steps(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    assert flow.take_idle() == (None, None)
    proc = warm(flow, script)
    taken, due = flow.take_idle()
    assert taken is None and due == flow.idle_due()
    flow.life.last_used_mono -= POLICY.idle_timeout + 1
    taken, due = flow.take_idle()
    assert taken is proc and due is None and flow.slot.proc is None
    drive(flow.stop_steps(proc), script)
    h = flow.health()
    assert proc.ended is ExitStage.STDIN_CLOSE and h.state is PluginState.IDLE and h.crashes_in_window == 0
    assert h.stderr_tail == ["a line on stderr"]


def test_shutdown_and_clear_disabled_steps(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    proc = warm(flow, script)
    flow.life.on_crash("x")
    flow.life.on_crash("y")
    flow.life.on_crash("z")
    assert flow.life.state is PluginState.DISABLED
    drive(flow.clear_disabled_steps(), script)
    assert proc.ended is ExitStage.STDIN_CLOSE and flow.life.state is PluginState.IDLE
    second = warm(flow, script)
    flow.closed = True
    drive(flow.shutdown_steps(), script)
    assert second.ended is ExitStage.STDIN_CLOSE and flow.slot.proc is None


@pytest.mark.parametrize("stop_in_background", [True, False])
def test_interrupted_hands_the_process_over_and_counts_nothing(plugin: Any, script: Script, stop_in_background: bool) -> None:
    flow = new_flow(plugin, script)
    proc = warm(flow, script)
    handed: List[Any] = []
    if stop_in_background:
        flow.stop_in_background = lambda f, p: handed.append(p)
    flow.interrupted(proc)  # type: ignore[arg-type]
    assert flow.slot.proc is None and flow.health().crashes_in_window == 0
    if stop_in_background:
        assert handed == [proc] and proc.ended is None
    else:
        assert proc.ended is ExitStage.KILLED_AFTER_ERROR  # abandoned: killed here, booked as stopped


def test_exchange_errors_are_the_plugins_doing() -> None:
    assert set(EXCHANGE_ERRORS) == {DeadlineExceeded, StreamEOF, PipeClosed, FrameTooLargeError}


def test_init_exchange_is_never_skippable(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    steps = flow.start_steps()
    op = steps.send(None)
    assert type(op) is Exchange and op.call_type is InitCall and not op.skippable
    steps.close()


# --- messages: one outcome each -------------------------------------------------------------


def test_a_crash_message_has_one_outcome(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    texts = []
    for _ in range(POLICY.restart_cap):
        warm(flow, script)
        pending = flow.begin(GetCall, None, "r")
        assert pending is not None
        with pytest.raises(errors.PluginCrashed) as info:
            drive(flow.finish_steps(pending, StreamEOF(0)), script)
        texts.append(str(info.value))
    *before, last = texts
    for text in before:
        assert "the next request starts a fresh process" in text.lower() and "disabled" not in text
    assert "now disabled" in last and "fresh process" not in last
    with pytest.raises(errors.PluginDisabled) as refused:
        drive(flow.request_steps(GetCall, None, "r"), script)
    text = str(refused.value)
    assert "fresh process" not in text and "now disabled" not in text and text.count("clear_disabled()") == 1


def test_a_bad_init_reply_says_so_once(plugin: Any, script: Script) -> None:
    flow = new_flow(plugin, script)
    script.outcomes.append(b"garbage")
    with pytest.raises(errors.InitError) as info:
        drive(flow.start_steps(), script)
    text = str(info.value)
    assert text.startswith("Plugin 'echo' sent a reply to request") and text.count("Plugin 'echo'") == 1
    assert text.endswith("It was killed; the next request starts a fresh process. Its last stderr line: 'a line on stderr'.")
    assert info.value.stderr_tail == ("a line on stderr",) and info.value.exit is not None

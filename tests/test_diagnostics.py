"""Every error of a process failure carries its diagnostics: ``stderr_tail`` (the
plugin's last stderr lines before the failure) and ``exit`` (how the process
ended), and its message ends with the plugin's last stderr line when that line is
short enough to quote. Real plugins that write to stderr, then fail init, crash,
hang, send garbage or too long a reply; through both clients (run the file under
both cores: with and without ``PLUGIN_CLIENT_NO_EXTENSIONS=1``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from plugin_client import errors
from plugin_client.health import ExitStage
from plugin_client.policy import LifetimePolicy
from plugin_client.source import PluginSecretSource

from client_kinds import client_kind, new_client  # noqa: F401  (fixtures)
from plugin_factory import make_plugin, python_script

POLICY = LifetimePolicy(
    request_timeout=0.5, start_timeout=3.0, exit_wait=0.1, shutdown_grace=0.1, restart_cap=100, max_frame_bytes=4096
)

# A plugin that says on stderr what it is about to do, then does it. ``init`` per
# config["init"]; get per reference. Its last words are written with os.write,
# unbuffered, right before it dies: the host must still have them.
DIAGNOSED = python_script(
    """
import json, os, sys, time

def reply(rid, result):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}) + "\\n")
    sys.stdout.flush()

def say(text):
    os.write(2, text.encode() + b"\\n")

for raw in sys.stdin:
    req = json.loads(raw)
    rid, method, params = req["id"], req["method"], req.get("params") or {}
    if method.endswith(".init"):
        mode = params["config"].get("init")
        if mode == "import":
            say("Traceback (most recent call last):")
            say('  File "/plugins/jsonfile", line 3, in <module>')
            say("ModuleNotFoundError: No module named 'plugin_client'")
            os._exit(1)
        if mode == "hang":
            say("init: waiting for the vault to unseal")
            time.sleep(3600)
        reply(rid, {"source_name": params["source_name"], "capabilities_bits": 0x1FF, "plugin_version": "1"})
        continue
    ref = params.get("reference", "")
    if ref == "crash":
        # Enough noise to keep the pump busy, then the last words and the exit at once.
        os.write(2, b"".join(b"noise %d\\n" % i for i in range(3000)))
        say("fatal: lost the connection to the backend")
        os._exit(7)
    if ref == "hang":
        say("WARN waiting for a lock held by pid 4242")
        time.sleep(3600)
    if ref == "garbage":
        say("about to answer in the wrong format")
        sys.stdout.write("this is not json\\n")
        sys.stdout.flush()
        continue
    if ref == "huge":
        say("sending a very large reply")
        sys.stdout.write("x" * 100000)
        sys.stdout.flush()
        time.sleep(3600)
    if ref == "long-line":
        say("y" * 301)
        os._exit(3)
    if ref == "escapes":
        say("\\x1b[31mERROR\\x1b[0m bad\\tthing\\x07 happened")
        os._exit(4)
    if ref == "silent":
        os._exit(5)
    if ref == "exit-soon":
        say("exiting while idle")
        reply(rid, {"value": "bye"})
        time.sleep(0.05)
        os._exit(9)
    reply(rid, {"value": ref})
"""
)


@pytest.fixture
def diagnosed(tmp_path: Path) -> Any:
    return make_plugin(tmp_path / "p", "diag", DIAGNOSED)


def _fail(fn: Callable[[], Any], kind: type) -> Any:
    with pytest.raises(kind) as info:
        fn()
    return info.value


def _assert_roundtrips(exc: errors.PluginClientError) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and str(back) == str(exc)
    assert back.stderr_tail == exc.stderr_tail and back.exit == exc.exit and back.plugin == exc.plugin


def test_a_failed_init_carries_the_real_reason(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY, config={"init": "import"})
    exc = _fail(lambda: c.get("x"), errors.InitError)
    assert exc.stderr_tail[-1] == "ModuleNotFoundError: No module named 'plugin_client'"
    assert exc.stderr_tail[0] == "Traceback (most recent call last):"
    assert exc.exit is not None and exc.exit.returncode == 1 and exc.exit.stage is ExitStage.CRASH
    assert exc.exit.pid > 0 and exc.exit.signal is None
    assert str(exc).startswith("Plugin 'diag' exited during init (status 1).")
    assert str(exc).endswith("""Its last stderr line: "ModuleNotFoundError: No module named 'plugin_client'".""")
    assert vars(exc)["stderr_tail"] == exc.stderr_tail  # on the instance, for structured reporting
    _assert_roundtrips(exc)


def test_an_init_timeout_carries_the_tail_and_the_kill(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY.model_copy(update={"start_timeout": 0.5}), config={"init": "hang"})
    exc = _fail(lambda: c.get("x"), errors.InitError)
    assert exc.stderr_tail == ("init: waiting for the vault to unseal",)
    assert exc.exit is not None and exc.exit.stage is ExitStage.KILLED_AFTER_ERROR and exc.exit.signal == "SIGKILL"
    assert "did not finish starting within start_timeout=0.5 s" in str(exc)
    assert str(exc).endswith("Its last stderr line: 'init: waiting for the vault to unseal'.")


def test_a_crash_keeps_the_line_written_just_before_dying(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY)
    for _ in range(3):  # the race between the pump and the exit, more than once
        exc = _fail(lambda: c.get("crash"), errors.PluginCrashed)
        assert exc.stderr_tail[-1] == "fatal: lost the connection to the backend"
        assert exc.stderr_tail[-2] == "noise 2999"
        assert len(exc.stderr_tail) == POLICY.stderr_lines
        assert exc.exit is not None and exc.exit.returncode == 7 and exc.exit.stage is ExitStage.CRASH
        assert str(exc).endswith("Its last stderr line: 'fatal: lost the connection to the backend'.")
        assert c.health().stderr_tail == list(exc.stderr_tail)
        _assert_roundtrips(exc)


def test_a_timeout_carries_the_tail_and_the_kill(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY)
    assert c.get("value:up").value.get_secret_value() == "value:up"
    exc = _fail(lambda: c.get("hang"), errors.RequestTimeout)
    assert exc.stderr_tail == ("WARN waiting for a lock held by pid 4242",)
    assert exc.exit is not None and exc.exit.stage is ExitStage.KILLED_AFTER_ERROR and exc.exit.signal == "SIGKILL"
    assert str(exc).startswith("Plugin 'diag' did not answer 'secret_source.get' within request_timeout=0.5 s.")
    assert str(exc).endswith("Its last stderr line: 'WARN waiting for a lock held by pid 4242'.")
    _assert_roundtrips(exc)


def test_a_protocol_error_carries_the_tail(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY)
    exc = _fail(lambda: c.get("garbage"), errors.InvalidJsonReply)
    assert isinstance(exc, errors.ProtocolError)
    assert exc.stderr_tail == ("about to answer in the wrong format",)
    assert exc.exit is not None and exc.exit.stage is ExitStage.KILLED_AFTER_ERROR
    assert str(exc).endswith("Its last stderr line: 'about to answer in the wrong format'.")
    assert "this is not json" not in str(exc)  # never the reply line itself
    _assert_roundtrips(exc)


def test_a_frame_too_large_carries_the_tail(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY)
    exc = _fail(lambda: c.get("huge"), errors.FrameTooLarge)
    assert exc.stderr_tail == ("sending a very large reply",)
    assert exc.exit is not None and exc.exit.stage is ExitStage.KILLED_AFTER_ERROR
    assert str(exc).endswith("Its last stderr line: 'sending a very large reply'.")
    assert "xxxx" not in str(exc)


def test_a_long_last_line_is_left_to_the_tail(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY)
    exc = _fail(lambda: c.get("long-line"), errors.PluginCrashed)
    assert exc.stderr_tail == ("y" * 301,)
    assert "Its last stderr line" not in str(exc) and "yyyy" not in str(exc)
    assert str(exc).endswith("See the error's stderr_tail, health().stderr_tail or the log 'plugin_client.plugin.diag'.")


def test_a_quoted_line_loses_its_escapes(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY)
    exc = _fail(lambda: c.get("escapes"), errors.PluginCrashed)
    assert exc.stderr_tail == ("\x1b[31mERROR\x1b[0m bad\tthing\x07 happened",)  # the tail is as written
    assert str(exc).endswith("Its last stderr line: 'ERROR bad thing happened'.")


def test_a_silent_crash_has_an_empty_tail_and_no_quote(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY)
    exc = _fail(lambda: c.get("silent"), errors.PluginCrashed)
    assert exc.stderr_tail == () and exc.exit is not None and exc.exit.returncode == 5
    assert "Its last stderr line" not in str(exc)


def test_disabled_carries_the_last_crash(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY.model_copy(update={"restart_cap": 1}))
    crash = _fail(lambda: c.get("crash"), errors.PluginCrashed)
    assert "now disabled" in str(crash)
    off = _fail(lambda: c.get("x"), errors.PluginDisabled)
    assert off.stderr_tail == crash.stderr_tail and off.exit == crash.exit
    assert str(off).startswith("Plugin 'diag' is disabled: it crashed 1 times")
    assert str(off).endswith("Its last stderr line: 'fatal: lost the connection to the backend'.")
    _assert_roundtrips(off)
    c.clear_disabled()
    assert c.get("value:back").value.get_secret_value() == "value:back"


def test_an_exit_while_idle_that_disables_carries_its_tail(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY.model_copy(update={"restart_cap": 1}))
    assert c.get("exit-soon").value.get_secret_value() == "bye"
    pid = c.health().pid
    assert pid is not None
    from _helpers import is_dead, wait_until

    assert wait_until(lambda: is_dead(pid) or c.health().pid != pid)
    off = _fail(lambda: c.get("x"), errors.PluginDisabled)
    assert off.stderr_tail == ("exiting while idle",)
    assert off.exit is not None and off.exit.returncode == 9 and off.exit.stage is ExitStage.CRASH


def test_a_spawn_failure_has_no_process_diagnostics(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY)
    assert c.get("value:up").value.get_secret_value() == "value:up"
    c.shutdown()
    c = new_client(diagnosed, policy=POLICY)
    exe = Path(diagnosed.executable.path)
    exe.write_bytes(exe.read_bytes() + b"# changed\n")
    exc = _fail(lambda: c.get("x"), errors.ExecutableChanged)
    assert isinstance(exc, errors.SpawnError)
    assert exc.stderr_tail == () and exc.exit is None
    assert vars(exc)["exit"] is None
    _assert_roundtrips(exc)


def test_errors_not_of_a_process_have_empty_diagnostics() -> None:
    for exc in (
        errors.PluginClientError("x"),
        errors.UnsupportedCapability("x", capability="READ"),
        errors.PluginUnsupportedCapability("x", capability="READ"),
        errors.PluginError("x", kind="other"),
        errors.ReplyIdMismatch("x", expected=1, got=2),
        errors.ManifestFieldError("x", path="/p"),
        errors.BadReference("ref"),
    ):
        assert exc.stderr_tail == () and exc.exit is None, type(exc)


def test_the_source_adapter_keeps_the_diagnostics(diagnosed: Any) -> None:
    from plugin_client.client import PluginClient

    with PluginClient(diagnosed, policy=POLICY) as c:
        src = PluginSecretSource(c)
        with pytest.raises(errors.SourceUnavailable) as info:
            src.get("crash")
    exc = info.value
    cause = exc.__cause__
    assert isinstance(cause, errors.PluginCrashed)
    assert exc.stderr_tail == cause.stderr_tail and exc.stderr_tail[-1] == "fatal: lost the connection to the backend"
    assert exc.exit == cause.exit and exc.exit is not None


def test_a_put_value_is_never_in_a_diagnosed_message(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY)
    secret = "Zq9-put-value-in-a-crash"
    exc = _fail(lambda: c.put("crash", secret), errors.PluginCrashed)
    texts: Dict[str, str] = {"str": str(exc), "repr": repr(exc), "vars": repr(vars(exc))}
    for where, text in texts.items():
        assert secret not in text, where


def test_disabled_under_a_cooldown_carries_the_last_crash(new_client: Callable[..., Any], diagnosed: Any) -> None:
    c = new_client(diagnosed, policy=POLICY.model_copy(update={"restart_cap": 1, "disabled_cooldown": 60.0}))
    crash = _fail(lambda: c.get("crash"), errors.PluginCrashed)
    off = _fail(lambda: c.get("x"), errors.PluginDisabled)
    assert off.stderr_tail == crash.stderr_tail and off.exit == crash.exit and off.exit is not None
    assert "probe" in str(off)  # the cooldown's own sentence stays
    assert str(off).endswith("Its last stderr line: 'fatal: lost the connection to the backend'.")

"""Recovery without a human: an executable touched or upgraded on disk, and the cooldown.

* A change of the executable's metadata only (``touch``, a ``chmod`` that keeps
  the mode safe, a rename over it of a file with the same bytes) is verified
  again by hash and the spawn goes ahead; nothing is counted.
* Changed bytes (or a file the checks now refuse: a symbolic link, a mode
  writable by others) are refused with ``ExecutableChanged`` and never run,
  but they are not the plugin's crash: nothing is counted, ``health()`` says
  what to do, and a file restored to the verified bytes spawns again.
* ``LifetimePolicy(disabled_cooldown=...)``: one probe spawn after the
  cooldown, which enables the plugin again if it starts; failed probes double
  the cooldown up to ``disabled_cooldown_max``; concurrent callers are refused
  while the probe is under way.

Each runs for a ``#!`` script and an ELF (C) plugin, and for the sync and the
asyncio client (``new_client``); the suite runs over both cores.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from plugin_client import errors
from plugin_client.health import PluginState
from plugin_client.manifest import LoadedPlugin, load_plugin, verify_executable
from plugin_client.policy import LifetimePolicy

from client_kinds import client_kind, new_client  # noqa: F401 - fixtures
from _reliability import c_plugins  # noqa: F401 - fixture
from plugin_factory import ECHO, make_plugin, python_script

# A start behaviour chosen by the environment, as c_hostile.c's HOSTILE_START.
_SCRIPT_START = (
    "import os as _os, time as _time\n"
    "_mode = _os.environ.get('HOSTILE_START')\n"
    "if _mode == 'exit':\n"
    "    _os._exit(3)\n"
    "if _mode == 'sleep':\n"
    "    _time.sleep(3600)\n"
)
KINDS = ["script", "elf"]

# Every request after a short sleep finds its process idle for longer than
# idle_timeout, so it spawns a fresh one; restart_cap=1: one crash counted disables.
RESPAWN = LifetimePolicy(idle_timeout=0.05, restart_cap=1, start_timeout=5.0, exit_wait=0.2, shutdown_grace=0.5)


def _bytes(kind: str, c_plugins: Dict[str, bytes]) -> bytes:
    if kind == "elf":
        return c_plugins["c_hostile"]
    return python_script(_SCRIPT_START + ECHO)


def _other_bytes(kind: str, c_plugins: Dict[str, bytes], marker: Path) -> bytes:
    """Other bytes that would show if they ran: a variant of the C plugin with
    another version; a script that leaves a marker."""
    if kind == "elf":
        good = c_plugins["c_hostile"]
        assert good.count(b"c-hostile-1") == 1
        return good.replace(b"c-hostile-1", b"c-hostile-E")
    return python_script(f"open({str(marker)!r}, 'w').close()\n" + ECHO)


def _plugin(kind: str, tmp_path: Path, c_plugins: Dict[str, bytes]) -> LoadedPlugin:
    return make_plugin(tmp_path / "p", "hostile", _bytes(kind, c_plugins), ["HOSTILE_START"])


def _replace(path: Path, data: bytes, mode: int = 0o755) -> None:
    """A rename over ``path`` (a new inode), as a package manager installs."""
    tmp = path.with_name(".new")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _touch(path: Path, data: bytes) -> None:
    os.utime(path)


def _chmod_safe(path: Path, data: bytes) -> None:
    os.chmod(path, 0o700)  # still safe: only the owner may write it
    os.chmod(path, 0o755)


def _rename_same(path: Path, data: bytes) -> None:
    _replace(path, data)


METADATA = {"touch": _touch, "chmod": _chmod_safe, "rename-same-bytes": _rename_same}


@pytest.mark.parametrize("change", list(METADATA), ids=list(METADATA))
@pytest.mark.parametrize("kind", KINDS)
def test_a_metadata_change_is_verified_again_and_counts_nothing(
    tmp_path: Path, new_client: Callable[..., Any], c_plugins: Dict[str, bytes], kind: str, change: str
) -> None:
    """Before, each such change made the next spawn raise and count a crash: three
    touches disabled a healthy plugin. Now each respawn after one goes ahead."""
    plugin = _plugin(kind, tmp_path, c_plugins)
    data = _bytes(kind, c_plugins)
    path = plugin.executable.path
    c = new_client(plugin, policy=RESPAWN)
    for i in range(3):
        time.sleep(0.03)  # past the coarse clock's tick: the ctime moves
        METADATA[change](path, data)
        assert c.get(f"value:v{i}").value.get_secret_value() == f"v{i}"
        time.sleep(0.08)  # idle past idle_timeout: the next request spawns again
    h = c.health()
    assert h.spawn_count == 3 and h.crashes_in_window == 0 and h.state is not PluginState.DISABLED
    assert h.executable_changed is None


@pytest.mark.parametrize("kind", KINDS)
def test_changed_bytes_are_refused_uncounted_until_restored(
    tmp_path: Path, new_client: Callable[..., Any], c_plugins: Dict[str, bytes], kind: str
) -> None:
    plugin = _plugin(kind, tmp_path, c_plugins)
    good = _bytes(kind, c_plugins)
    path = plugin.executable.path
    marker = tmp_path / "other-bytes-ran"
    _replace(path, _other_bytes(kind, c_plugins, marker))
    c = new_client(plugin, policy=RESPAWN)
    for _ in range(3):  # more than restart_cap=1
        with pytest.raises(errors.ExecutableChanged, match="contents changed.*it was not run"):
            c.get("value:x")
    h = c.health()
    assert h.spawn_count == 0 and h.crashes_in_window == 0 and h.state is PluginState.IDLE
    assert h.executable_changed is not None
    assert "not counted as a crash" in h.executable_changed and "reload()" in h.executable_changed
    assert "new client" in h.executable_changed
    assert not marker.exists()
    # Restored (a new inode, the verified bytes): every spawn checks again, so it runs.
    _replace(path, good)
    assert c.get("value:back").value.get_secret_value() == "back"
    h = c.health()
    assert h.executable_changed is None and h.spawn_count == 1 and h.crashes_in_window == 0
    if kind == "elf":
        assert h.plugin_version == "c-hostile-1"  # the verified bytes, not the variant
    assert not marker.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_changed_bytes_after_a_run_refuse_the_respawn_uncounted(
    tmp_path: Path, new_client: Callable[..., Any], c_plugins: Dict[str, bytes], kind: str
) -> None:
    plugin = _plugin(kind, tmp_path, c_plugins)
    marker = tmp_path / "other-bytes-ran"
    c = new_client(plugin, policy=RESPAWN)
    assert c.get("value:first").value.get_secret_value() == "first"
    _replace(plugin.executable.path, _other_bytes(kind, c_plugins, marker))
    time.sleep(0.08)
    with pytest.raises(errors.ExecutableChanged):
        c.get("value:x")
    h = c.health()
    assert h.spawn_count == 1 and h.crashes_in_window == 0 and h.state is not PluginState.DISABLED
    assert not marker.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_a_symlink_swapped_in_is_refused_uncounted(
    tmp_path: Path, new_client: Callable[..., Any], c_plugins: Dict[str, bytes], kind: str
) -> None:
    """Even to an identical copy: the path's last component must not be a link."""
    plugin = _plugin(kind, tmp_path, c_plugins)
    path = plugin.executable.path
    copy = tmp_path / "copy"
    copy.write_bytes(_bytes(kind, c_plugins))
    os.chmod(copy, 0o755)
    os.unlink(path)
    path.symlink_to(copy)
    c = new_client(plugin, policy=RESPAWN)
    for _ in range(2):
        with pytest.raises(errors.ExecutableChanged, match="symbolic link"):
            c.get("value:x")
    h = c.health()
    assert h.spawn_count == 0 and h.crashes_in_window == 0 and h.executable_changed is not None
    os.unlink(path)
    _replace(path, _bytes(kind, c_plugins))
    assert c.get("value:ok").value.get_secret_value() == "ok"


def test_an_unsafe_chmod_is_refused_uncounted(tmp_path: Path, new_client: Callable[..., Any]) -> None:
    plugin = make_plugin(tmp_path / "p")
    path = plugin.executable.path
    os.chmod(path, 0o777)
    c = new_client(plugin, policy=RESPAWN)
    for _ in range(2):
        with pytest.raises(errors.ExecutableChanged, match="writable"):
            c.get("value:x")
    assert c.health().crashes_in_window == 0
    os.chmod(path, 0o755)
    assert c.get("value:ok").value.get_secret_value() == "ok"


def test_current_remembers_the_new_stat(tmp_path: Path) -> None:
    """Verified again after a touch, the result is kept: its own check is one lstat."""
    plugin = make_plugin(tmp_path / "p")
    verified = plugin.executable
    assert verified.current() is verified
    time.sleep(0.03)
    os.utime(verified.path)
    again = verified.current(plugin="echo")
    assert again is not verified and again.sha256 == verified.sha256
    assert again.identity.ctime_ns != verified.identity.ctime_ns
    assert again.current() is again
    with pytest.raises(errors.ExecutableChanged):
        verified.check_unchanged()  # the strict check still sees the touch


def test_current_refuses_changed_bytes_with_their_hash(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path / "p")
    other = python_script("print('other')\n")
    _replace(plugin.executable.path, other)
    with pytest.raises(errors.ExecutableChanged) as info:
        plugin.executable.current(plugin="echo")
    assert hashlib.sha256(other).hexdigest() in info.value.message and "'echo'" in info.value.message


def test_an_elf_verified_again_runs_from_a_new_sealed_copy(tmp_path: Path, c_plugins: Dict[str, bytes]) -> None:
    plugin = _plugin("elf", tmp_path, c_plugins)
    assert plugin.executable.via == "memfd"
    time.sleep(0.03)
    os.utime(plugin.executable.path)
    again = plugin.executable.current()
    assert again.via == "memfd" and again.exec_fileno is not None
    assert again.exec_fileno != plugin.executable.exec_fileno
    assert verify_executable(plugin.executable.path, plugin.executable.sha256).sha256 == again.sha256


# --- the cooldown ----------------------------------------------------------------------------------


def _cooling(**kw: Any) -> LifetimePolicy:
    base: Dict[str, Any] = dict(
        restart_cap=1, start_timeout=5.0, exit_wait=0.2, shutdown_grace=0.5,
        disabled_cooldown=0.2, disabled_cooldown_max=0.5,
    )
    base.update(kw)
    return LifetimePolicy(**base)


def _disable(c: Any) -> None:
    with pytest.raises(errors.InitError):
        c.get("value:x")
    assert c.health().state is PluginState.DISABLED


def test_policy_validates_the_cooldown() -> None:
    assert LifetimePolicy().disabled_cooldown is None
    assert LifetimePolicy().disabled_cooldown_max == 900.0
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="disabled_cooldown"):
            LifetimePolicy(disabled_cooldown=bad)
    with pytest.raises(ValueError, match="must be at least disabled_cooldown"):
        LifetimePolicy(disabled_cooldown=10, disabled_cooldown_max=5)
    with pytest.raises(ValueError, match="disabled_cooldown_max"):
        LifetimePolicy(disabled_cooldown_max=float("inf"))


@pytest.mark.parametrize("kind", KINDS)
def test_without_a_cooldown_disabled_stays_disabled(
    tmp_path: Path, new_client: Callable[..., Any], c_plugins: Dict[str, bytes], kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOSTILE_START", "exit")
    c = new_client(_plugin(kind, tmp_path, c_plugins), policy=_cooling(disabled_cooldown=None))
    _disable(c)
    monkeypatch.delenv("HOSTILE_START")
    time.sleep(0.3)
    with pytest.raises(errors.PluginDisabled, match=r"Fix the plugin, then call clear_disabled\(\)") as info:
        c.get("value:x")
    assert "probe" not in info.value.message
    h = c.health()
    assert h.spawn_count == 1 and h.next_probe is None and h.disabled_cooldown is None
    c.clear_disabled()
    assert c.get("value:ok").value.get_secret_value() == "ok"


@pytest.mark.parametrize("kind", KINDS)
def test_a_probe_after_the_cooldown_enables_the_plugin_again(
    tmp_path: Path, new_client: Callable[..., Any], c_plugins: Dict[str, bytes], kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOSTILE_START", "exit")
    c = new_client(_plugin(kind, tmp_path, c_plugins), policy=_cooling())
    before = datetime.now(timezone.utc)
    _disable(c)
    h = c.health()
    assert h.disabled_cooldown == 0.2 and h.next_probe is not None
    assert before + timedelta(seconds=0.1) < h.next_probe < datetime.now(timezone.utc) + timedelta(seconds=0.25)
    with pytest.raises(errors.PluginDisabled, match=r"next probe spawn is allowed in .* s, at .*clear_disabled\(\)"):
        c.get("value:x")
    assert c.health().spawn_count == 1  # refused during the cooldown: nothing spawned
    monkeypatch.delenv("HOSTILE_START")  # fixed meanwhile
    time.sleep(0.25)
    assert c.get("value:back").value.get_secret_value() == "back"
    h = c.health()
    assert h.state is PluginState.RUNNING and h.crashes_in_window == 0 and h.disabled_reason is None
    assert h.next_probe is None and h.disabled_cooldown is None and h.spawn_count == 2
    # Enabled again with a fresh window: the next crash disables again, for the base cooldown.
    with pytest.raises(errors.PluginCrashed):
        c.get("crash")
    assert c.health().state is PluginState.DISABLED and c.health().disabled_cooldown == 0.2


@pytest.mark.parametrize("kind", KINDS)
def test_failed_probes_double_the_cooldown_up_to_its_max(
    tmp_path: Path, new_client: Callable[..., Any], c_plugins: Dict[str, bytes], kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOSTILE_START", "exit")
    # restart_cap=2 within 0.1 s: by the time a probe fails its window holds one
    # crash, under the cap; a failed probe disables again all the same.
    c = new_client(_plugin(kind, tmp_path, c_plugins), policy=_cooling(restart_cap=2, restart_window=0.1))
    with pytest.raises(errors.InitError):
        c.get("value:x")
    _disable(c)
    seen: List[float] = []
    for _ in range(3):
        cooldown = c.health().disabled_cooldown
        assert cooldown is not None
        seen.append(cooldown)
        time.sleep(cooldown + 0.05)
        with pytest.raises(errors.InitError, match="probe spawn is allowed after its cooldown"):
            c.get("value:x")
        with pytest.raises(errors.PluginDisabled, match="its probe spawn after a cooldown of"):
            c.get("value:x")  # at once: the next probe is not due yet
    seen.append(c.health().disabled_cooldown or 0)
    assert seen == [0.2, 0.4, 0.5, 0.5]
    assert c.health().spawn_count == 5  # two crashes and three probes: one spawn each
    c.clear_disabled()
    h = c.health()
    assert h.state is PluginState.IDLE and h.next_probe is None and h.disabled_cooldown is None
    monkeypatch.delenv("HOSTILE_START")
    assert c.get("value:ok").value.get_secret_value() == "ok"


@pytest.mark.parametrize("kind", KINDS)
def test_one_caller_probes_and_concurrent_callers_are_refused(
    tmp_path: Path, new_client: Callable[..., Any], c_plugins: Dict[str, bytes], kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Half-open: the probe's start hangs until start_timeout; meanwhile every other
    caller gets PluginDisabled at once instead of a second spawn or a wait."""
    monkeypatch.setenv("HOSTILE_START", "exit")
    c = new_client(_plugin(kind, tmp_path, c_plugins), policy=_cooling(start_timeout=0.6))
    _disable(c)
    monkeypatch.setenv("HOSTILE_START", "sleep")
    time.sleep(0.25)
    outcomes: List[str] = []
    lock = threading.Lock()

    def call() -> None:
        t0 = time.monotonic()
        try:
            c.get("value:x")
            name = "ok"
        except errors.PluginClientError as exc:
            name = type(exc).__name__
            if isinstance(exc, errors.PluginDisabled):
                assert "under way" in exc.message
                name += "-fast" if time.monotonic() - t0 < 0.3 else "-slow"
        with lock:
            outcomes.append(name)

    prober = threading.Thread(target=call)
    prober.start()
    assert _wait(lambda: c.health().spawn_count == 2)  # the probe's process is up
    others = [threading.Thread(target=call) for _ in range(4)]
    for t in others:
        t.start()
    for t in [prober, *others]:
        t.join(10)
    assert sorted(outcomes) == ["InitError"] + ["PluginDisabled-fast"] * 4
    h = c.health()
    assert h.spawn_count == 2 and h.state is PluginState.DISABLED and h.disabled_cooldown == 0.4


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return False


class _Alarm(Exception):
    pass


@pytest.mark.parametrize("client_kind", ["sync"])
def test_a_probe_the_host_interrupts_is_due_again_at_once(
    tmp_path: Path, new_client: Callable[..., Any], c_plugins: Dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGALRM handler's exception ends the probe mid-init: not the plugin's crash,
    so the cooldown is not doubled and the next request may probe at once."""
    import signal

    monkeypatch.setenv("HOSTILE_START", "exit")
    c = new_client(_plugin("elf", tmp_path, c_plugins), policy=_cooling())
    _disable(c)
    monkeypatch.setenv("HOSTILE_START", "sleep")
    time.sleep(0.25)

    def alarm(signum: int, frame: Any) -> None:
        raise _Alarm()

    old = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(_Alarm):
            c.get("value:x")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    h = c.health()
    assert h.state is PluginState.DISABLED and h.disabled_cooldown == 0.2 and h.spawn_count == 2
    assert h.next_probe is not None and h.next_probe <= datetime.now(timezone.utc)
    monkeypatch.delenv("HOSTILE_START")
    assert c.get("value:ok").value.get_secret_value() == "ok"  # probes at once, and succeeds
    assert c.health().state is PluginState.RUNNING

"""The host misbehaves instead of the plugin: it is SIGKILLed, or it forks.

* A host killed with SIGKILL cannot run any cleanup. Its plugin must still go:
  the host's end of the plugin's stdin closes with the host, and a plugin
  exits at stdin EOF (the protocol's exit signal). Tested with real host
  processes (``python -c`` scripts using ``PluginClient``).
* A forked child must never talk to, signal or reap its parent's plugin. If it
  makes requests itself, it gets a fresh plugin of its own, and the parent's
  keeps working under the same pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import plugin_client
from plugin_client.client import PluginClient
from plugin_client.policy import LifetimePolicy

from _reliability import alive, c_plugin, c_plugins, kill_quietly, wait_gone, zombies  # noqa: F401  (fixture)
from plugin_factory import make_plugin

FAST = LifetimePolicy(request_timeout=5.0, start_timeout=5.0, shutdown_grace=0.5, exit_wait=0.2)
PKG_PARENT = str(Path(plugin_client.__file__).resolve().parent.parent)


def host_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PKG_PARENT, env.get("PYTHONPATH", "")) if p)
    return env


def run_host(script: str, *args: str) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=host_env(),
    )


@pytest.fixture
def python_plugin(tmp_path: Path) -> Any:
    return make_plugin(tmp_path / "py")


@pytest.fixture
def c_echo(c_plugins: Dict[str, bytes], tmp_path: Path) -> Any:
    return c_plugin(c_plugins, tmp_path / "c")


# --- SIGKILL of the host ---------------------------------------------------------------

HOST_THAT_WAITS = """
    import sys, time
    from plugin_client import PluginClient, load_plugin
    client = PluginClient(load_plugin(sys.argv[1]))
    assert client.get("value:up").value.get_secret_value() == "up"
    print(client.health().pid, flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("which", ["python_plugin", "c_echo"])
def test_sigkilled_host_leaves_no_plugin(request: pytest.FixtureRequest, which: str) -> None:
    plugin = request.getfixturevalue(which)
    host = run_host(HOST_THAT_WAITS, str(plugin.manifest_path))
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        assert line.strip().isdigit(), (line, host.stderr.read() if host.poll() is not None else "")  # type: ignore[union-attr]
        pid = int(line)
        assert alive(pid)
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        t0 = time.monotonic()
        assert wait_gone(pid, 1.0), "the plugin outlived its SIGKILLed host by more than 1 s"
        print(f"\n{which}: gone {1e3 * (time.monotonic() - t0):.0f} ms after its host was SIGKILLed")
    finally:
        if host.poll() is None:  # pragma: no cover - only if an assertion failed early
            host.kill()
            host.wait(10)
        host.stdout.close()  # type: ignore[union-attr]
        host.stderr.close()  # type: ignore[union-attr]


def test_sigkilled_host_with_several_plugins_and_a_busy_one(c_echo: Any, python_plugin: Any) -> None:
    """Three plugins, one of them in the middle of a request that floods stderr when
    the host dies: each exits within 1 s (EOF on stdin, or EPIPE on stdout/stderr)."""
    script = """
        import sys, threading, time
        from plugin_client import PluginClient, LifetimePolicy, load_plugin
        a = PluginClient(load_plugin(sys.argv[1]))
        b = PluginClient(load_plugin(sys.argv[2]))
        busy = PluginClient(load_plugin(sys.argv[1]), policy=LifetimePolicy(request_timeout=60))
        for c in (a, b, busy):
            c.get("value:up")
        print(a.health().pid, b.health().pid, busy.health().pid, flush=True)
        threading.Thread(target=busy.get, args=("stderr:1000000000000:100",), daemon=True).start()
        time.sleep(120)
    """
    host = run_host(script, str(c_echo.manifest_path), str(python_plugin.manifest_path))
    try:
        pids = [int(p) for p in host.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(pids) == 3 and all(alive(p) for p in pids)
        time.sleep(0.2)  # the busy one is flooding now
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        assert all(wait_gone(p, 1.0) for p in pids), [p for p in pids if alive(p)]
    finally:
        if host.poll() is None:  # pragma: no cover
            host.kill()
            host.wait(10)
        host.stdout.close()  # type: ignore[union-attr]
        host.stderr.close()  # type: ignore[union-attr]


# --- fork -------------------------------------------------------------------------------


def fork() -> int:
    # Python 3.12+ warns about fork() in a process with threads (the stderr pump
    # is one); the suite turns warnings into errors, and the child here only
    # uses what the library resets after a fork.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def in_child(fn: Any) -> None:  # pragma: no cover - runs in the forked child
    code = 1
    try:
        code = 0 if fn() else 2
    except BaseException:
        code = 3
    finally:
        os._exit(code)


@pytest.fixture
def client(c_echo: Any) -> Iterator[PluginClient]:
    c = PluginClient(c_echo, policy=FAST)
    yield c
    c.shutdown()


def test_forked_child_gets_its_own_plugin_and_parent_keeps_its_own(client: PluginClient) -> None:
    assert client.get("value:parent").value.get_secret_value() == "parent"
    parent_plugin = client.health().pid
    spawns = client.health().spawn_count
    r, w = os.pipe()
    child = fork()
    if child == 0:  # pragma: no cover - the forked child

        def work() -> bool:
            os.close(r)
            assert client.health().pid is None  # the parent's process is forgotten
            got = [client.get(f"value:child-{i}").value.get_secret_value() for i in range(50)]
            mine = client.health().pid
            assert mine is not None and mine != parent_plugin
            assert got == [f"child-{i}" for i in range(50)]
            assert alive(parent_plugin)  # type: ignore[arg-type]
            client.shutdown()
            assert not alive(mine)
            assert alive(parent_plugin)  # type: ignore[arg-type]
            os.write(w, f"{mine}\n".encode())
            return True

        in_child(work)
    os.close(w)
    with os.fdopen(r) as f:
        report = f.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child_plugin = int(report)
    assert child_plugin != parent_plugin and not alive(child_plugin)
    # The parent's plugin: same pid, still answering, never restarted.
    assert alive(parent_plugin)  # type: ignore[arg-type]
    assert client.get("value:parent-again").value.get_secret_value() == "parent-again"
    h = client.health()
    assert h.pid == parent_plugin and h.spawn_count == spawns and h.crashes_in_window == 0
    assert zombies() == []


def test_fork_while_another_thread_holds_the_client(tmp_path: Path) -> None:
    """A thread of the parent is inside a slow request when the host forks: the child's
    copy of the request lock is held by a thread that does not exist there. The child
    must still be able to use the client (a fresh lock, a fresh plugin) at once."""
    plugin = make_plugin(tmp_path / "slow")  # the Python echo plugin has slow:<ms>
    c = PluginClient(plugin, policy=FAST)
    try:
        c.get("value:warm")
        parent_plugin = c.health().pid
        out: List[str] = []
        t = threading.Thread(target=lambda: out.append(c.get("slow:800").value.get_secret_value()))
        t.start()
        time.sleep(0.2)  # the thread now holds the lock and waits for the plugin
        r, w = os.pipe()
        child = fork()
        if child == 0:  # pragma: no cover - the forked child

            def work() -> bool:
                os.close(r)
                t0 = time.monotonic()
                ok = c.get("value:from-child").value.get_secret_value() == "from-child"
                fast = time.monotonic() - t0 < 3.0
                c.shutdown()
                os.write(w, b"1" if ok and fast else b"0")
                return ok

            in_child(work)
        os.close(w)
        got = os.read(r, 1)
        os.close(r)
        _, status = os.waitpid(child, 0)
        assert got == b"1" and os.waitstatus_to_exitcode(status) == 0
        t.join(10)
        assert out == ["slow"]
        assert c.health().pid == parent_plugin
        assert c.get("value:after").value.get_secret_value() == "after"
    finally:
        c.shutdown()
    assert zombies() == []


def test_forked_child_exiting_normally_does_not_touch_the_parent_plugin(c_echo: Any) -> None:
    """In a real host: the child uses the client, then exits through the interpreter's
    normal shutdown (at-exit hooks and finalizers run). The parent's plugin survives
    with the same pid and still answers; the child's own plugin is gone."""
    script = """
        import os, sys, time
        from plugin_client import PluginClient, load_plugin
        client = PluginClient(load_plugin(sys.argv[1]))
        client.get("value:up")
        parent_plugin = client.health().pid
        child = os.fork()
        if child == 0:
            client.get("value:in-child")
            print("child-plugin", client.health().pid, flush=True)
            sys.exit(0)  # no shutdown(): the at-exit finalizer ends the child's plugin
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.1)
        assert client.health().pid == parent_plugin
        os.kill(parent_plugin, 0)
        assert client.get("value:after").value.get_secret_value() == "after"
        assert client.health().pid == parent_plugin and client.health().spawn_count == 1
        print("parent-plugin", parent_plugin, flush=True)
    """
    host = run_host(script, str(c_echo.manifest_path))
    out, err = host.communicate(timeout=30)
    assert host.returncode == 0, err
    lines = dict(line.split() for line in out.splitlines())
    child_plugin, parent_plugin = int(lines["child-plugin"]), int(lines["parent-plugin"])
    assert child_plugin != parent_plugin
    # The parent host exited normally too: its at-exit hook ended its plugin.
    assert wait_gone(child_plugin, 2.0) and wait_gone(parent_plugin, 2.0)


# Answers init and get; at stdin EOF it does not exit but waits to be signalled.
_LINGERING = '''
import json, sys, time
for line in sys.stdin:
    req = json.loads(line)
    if req["method"] == "secret_source.init":
        result = {"source_name": req["params"]["source_name"], "capabilities_bits": 1, "plugin_version": "1"}
    else:
        result = {"value": "v"}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result}) + "\\n")
    sys.stdout.flush()
time.sleep(60)
'''


def test_host_exiting_without_shutdown_stops_a_plugin_that_ignores_eof(tmp_path: Path) -> None:
    """The at-exit hook ends the plugins of clients still alive at interpreter exit, for
    both client kinds: a plugin that ignores stdin EOF is SIGTERMed after exit_wait. A
    hook registered before the library's runs after it (at-exit hooks run last-in,
    first-out), while the clients are still referenced, and finds both plugins reaped."""
    from plugin_factory import python_script

    plugin = make_plugin(tmp_path, "linger", python_script(_LINGERING))
    script = """
        import atexit, os, sys
        PIDS = []

        @atexit.register
        def check_after_the_library():
            for pid in PIDS:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                print("alive-at-exit", pid, flush=True)
                return
            print("gone-at-exit", flush=True)

        import asyncio
        from plugin_client import AsyncPluginClient, LifetimePolicy, PluginClient, load_plugin
        policy = LifetimePolicy(exit_wait=0.1, shutdown_grace=2.0)
        sync_client = PluginClient(load_plugin(sys.argv[1]), policy=policy)
        sync_client.get("x")
        async_client = AsyncPluginClient(load_plugin(sys.argv[1]), policy=policy)
        asyncio.run(async_client.get("x"))
        PIDS[:] = [sync_client.health().pid, async_client.health().pid]
        print(*PIDS, flush=True)
        # no shutdown(): the interpreter's exit must end both plugins
    """
    host = run_host(script, str(plugin.manifest_path))
    out, err = host.communicate(timeout=30)
    assert host.returncode == 0, err
    first, verdict = out.splitlines()
    pids = [int(p) for p in first.split()]
    assert len(pids) == 2 and all(p > 0 for p in pids)
    assert verdict == "gone-at-exit", out
    assert all(wait_gone(p, 3.0) for p in pids), [alive(p) for p in pids]


def test_host_exiting_during_a_background_idle_reap_leaves_no_plugin(tmp_path: Path) -> None:
    """The sweeper thread may be half-way through stopping a plugin that ignores EOF
    and SIGTERM (its stdin closed, its slot empty) when the interpreter exits. The
    exit then waits for that stop to end (SIGKILL after the grace) rather than
    kill the daemon thread in the middle and leave the plugin behind."""
    from plugin_factory import STUBBORN, python_script

    plugin = make_plugin(tmp_path, "stubborn", python_script(STUBBORN))
    script = """
        import sys, time
        from plugin_client import LifetimePolicy, PluginClient, load_plugin
        policy = LifetimePolicy(idle_timeout=0.1, exit_wait=0.2, shutdown_grace=0.5)
        client = PluginClient(load_plugin(sys.argv[1]), policy=policy)
        client.get("x")
        print(client.health().pid, flush=True)
        time.sleep(0.3)  # the reap began at 0.1 s; its stop lasts 0.7 s
        assert client._flow.slot.proc is None and client.health().pid is not None  # under way
        # no shutdown(): the interpreter exits with the client still referenced
    """
    host = run_host(script, str(plugin.manifest_path))
    out, err = host.communicate(timeout=30)
    assert host.returncode == 0, err
    pid = int(out.split()[0])
    assert wait_gone(pid, 3.0), "the plugin outlived its host"


def test_host_exiting_while_a_background_stop_runs_and_a_reap_comes_due(tmp_path: Path) -> None:
    """At exit the sweeper thread keeps serving the stop under way while the exit
    waits for it, even when another client's reap comes due meanwhile: that reap
    is left to the exit's own stop of every live process, and both plugins are
    gone once the host has exited."""
    from plugin_factory import STUBBORN, python_script

    stubborn = make_plugin(tmp_path / "s", "stubborn", python_script(STUBBORN))
    echo = make_plugin(tmp_path / "e")
    script = """
        import sys, time
        from plugin_client import LifetimePolicy, PluginClient, load_plugin
        slow = PluginClient(load_plugin(sys.argv[1]),
                            policy=LifetimePolicy(idle_timeout=0.1, exit_wait=0.2, shutdown_grace=0.8))
        quick = PluginClient(load_plugin(sys.argv[2]), policy=LifetimePolicy(idle_timeout=0.5))
        slow.get("x")
        quick.get("x")
        print(slow.health().pid, quick.health().pid, flush=True)
        time.sleep(0.3)  # slow's stop began at 0.1 s and lasts 1 s; quick's reap is due at 0.5 s
        assert slow._background_stops() == 1
    """
    host = run_host(script, str(stubborn.manifest_path), str(echo.manifest_path))
    out, err = host.communicate(timeout=30)
    assert host.returncode == 0, err
    pids = [int(p) for p in out.split()[:2]]
    assert all(wait_gone(p, 3.0) for p in pids), [alive(p) for p in pids]


def test_host_exiting_while_group_children_flood_stderr_leaves_none(c_echo: Any) -> None:
    """Two plugins (a sync client's, an asyncio client's) whose children stay in
    their group, ignore SIGTERM and flood stderr when the host exits without
    shutdown(): the exit takes at most exit_wait + grace + 1 s, and the children
    are gone with it (the group is killed before its stderr is drained)."""
    script = """
        import asyncio, sys
        from plugin_client import AsyncPluginClient, LifetimePolicy, PluginClient, load_plugin
        policy = LifetimePolicy(exit_wait=0.2, shutdown_grace=0.5)
        client = PluginClient(load_plugin(sys.argv[1]), policy=policy)
        aclient = AsyncPluginClient(load_plugin(sys.argv[1]), policy=policy)
        kids = [client.get("flood-child:nl"), asyncio.run(aclient.get("flood-child:block"))]
        print(*[k.value.get_secret_value() for k in kids], flush=True)
        # no shutdown(): the interpreter's exit must end both plugins and their children
    """
    bound = 0.2 + 0.5 + 1.0
    host = run_host(script, str(c_echo.manifest_path))
    kids: List[int] = []
    try:
        assert host.stdout is not None
        # Each was flooding when its plugin replied; the exit may have begun by now.
        kids = [int(p) for p in host.stdout.readline().split()]
        assert len(kids) == 2
        t0 = time.monotonic()
        _out, err = host.communicate(timeout=30)
        took = time.monotonic() - t0
        assert host.returncode == 0, err
        assert took < bound, took
        assert all(wait_gone(k, 1.0) for k in kids), [k for k in kids if alive(k)]
        print(f"\nhost exit with two flooding group children: {took * 1e3:.0f} ms")
    finally:
        kill_quietly(*kids)
        if host.poll() is None:  # pragma: no cover - only if an assertion failed early
            host.kill()
            host.communicate(timeout=10)


def test_host_exiting_with_stubborn_plugins_stops_them_all_at_once(tmp_path: Path) -> None:
    """The exit stops every plugin still live at the same time, rather than one
    after the other: three plugins that ignore stdin EOF and SIGTERM (1.2 s to
    stop each: exit_wait + grace) hold the exit up about 1.2 s, not 3.6 s."""
    from plugin_factory import STUBBORN, python_script

    plugin = make_plugin(tmp_path, "stubborn", python_script(STUBBORN))
    script = """
        import asyncio, sys
        from plugin_client import AsyncPluginClient, LifetimePolicy, PluginClient, load_plugin
        policy = LifetimePolicy(exit_wait=0.2, shutdown_grace=1.0)
        clients = [PluginClient(load_plugin(sys.argv[1]), policy=policy) for _ in range(2)]
        for c in clients:
            c.get("x")
        aclient = AsyncPluginClient(load_plugin(sys.argv[1]), policy=policy)
        asyncio.run(aclient.get("x"))
        print(*[c.health().pid for c in clients + [aclient]], flush=True)
        # no shutdown(): the interpreter's exit must end all three
    """
    _assert_three_stubborn_stopped_at_once(script, plugin)


def test_host_exiting_without_a_reaper_thread_still_stops_its_plugins_at_once(tmp_path: Path) -> None:
    """Python 3.12 and later start no thread during the interpreter's exit. With
    no reaper thread running by then (every ``idle_timeout`` infinite, no client
    collected), the exit serves the stops itself, side by side, as the thread
    would have. Simulated on any version: an exit hook that runs before the
    library's makes ``Thread.start`` refuse, as 3.12 does."""
    from plugin_factory import STUBBORN, python_script

    plugin = make_plugin(tmp_path, "stubborn", python_script(STUBBORN))
    script = """
        import atexit, math, sys, threading
        from plugin_client import LifetimePolicy, PluginClient, load_plugin
        from plugin_client._sweeper import SWEEPER

        def refuse(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")

        @atexit.register  # registered after the library's hooks: runs before them
        def as_python_3_12():
            threading.Thread.start = refuse

        policy = LifetimePolicy(idle_timeout=math.inf, exit_wait=0.2, shutdown_grace=1.0)
        clients = [PluginClient(load_plugin(sys.argv[1]), policy=policy) for _ in range(3)]
        for c in clients:
            c.get("x")
        assert SWEEPER._thread is None
        print(*[c.health().pid for c in clients], flush=True)
    """
    _assert_three_stubborn_stopped_at_once(script, plugin)


def _assert_three_stubborn_stopped_at_once(script: str, plugin: Any) -> None:
    """Run ``script`` (it prints the pids of its three stubborn plugins, then
    exits without shutdown()): the exit ends all three in about one
    exit_wait + grace (1.2 s), not three (3.6 s)."""
    host = run_host(script, str(plugin.manifest_path))
    assert host.stdout is not None
    pids = [int(p) for p in host.stdout.readline().split()]
    t0 = time.monotonic()
    _out, err = host.communicate(timeout=30)
    took = time.monotonic() - t0
    assert host.returncode == 0, err
    assert len(pids) == 3 and not any(alive(p) for p in pids)
    assert took < 2.6, f"the exit took {took:.2f} s: the stops ran one after the other"

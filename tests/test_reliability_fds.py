"""The host runs out of file descriptors at spawn (issue 19, item 7).

The fd table is filled for real: ``RLIMIT_NOFILE`` is lowered a little above
what the process holds, and ``dup``s take every free number but ``free`` of
them (both restored afterwards). At every level the spawn fails before any
process exists, and the failure is a :class:`~plugin_client.errors.SpawnError`
that says so, counts no crash, leaks no fd, and leaves the client usable once
fds are free again. Runs on whichever core the selector picked (CI runs the
suite once per core).
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from plugin_client import LifetimePolicy, PluginClient, errors
from plugin_client.source import PluginSecretSource

from _helpers import open_fds
from _reliability import c_plugin, c_plugins, zombies  # noqa: F401  (fixture)

FAST = LifetimePolicy(request_timeout=5.0, start_timeout=5.0, shutdown_grace=0.5, exit_wait=0.2, restart_cap=3)


@contextlib.contextmanager
def only_free_fds(free: int) -> Iterator[None]:
    """Exactly ``free`` fd numbers left to this process until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: List[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(open_fds()) + 32, hard))
    try:
        while True:
            try:
                held.append(os.dup(0))
            except OSError:
                break
        for _ in range(free):
            os.close(held.pop())
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("free", [0, 1, 2, 3, 5, 6])
@pytest.mark.parametrize("racy", [True, False], ids=["racy", "settled"])
def test_out_of_fds_at_spawn_is_a_spawn_error_that_counts_no_crash(
    c_plugins: Dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, racy: bool
) -> None:
    """``racy``: a fresh executable is re-hashed through the path before each spawn (an
    ``open``); ``settled``: the first fd the spawn needs is a pipe's. With 6 free the
    pipes fit and the next fd fails: the compiled core's report pipe, the twin's
    listing of /proc/self/fd."""
    if not racy:
        monkeypatch.setattr("plugin_client.manifest.RACY_WINDOW_NS", 0)
    plugin = c_plugin(c_plugins, tmp_path / "p")
    assert plugin.executable.racy is racy
    c = PluginClient(plugin, policy=FAST)
    source = PluginSecretSource(c, name="hostile")
    try:
        gc.collect()  # earlier tests' clients, and the fds they hold, go now rather than mid-test
        fds_before = open_fds()
        with only_free_fds(free):
            for _ in range(FAST.restart_cap + 1):  # more than would disable the plugin
                with pytest.raises(errors.SpawnError) as info:
                    c.get("value:x")
            status = source.is_available()
        err = info.value
        assert type(err) is errors.SpawnError and err.plugin == "hostile"
        assert "has run out of file descriptors (EMFILE" in err.message and "ulimit -n" in err.message
        assert status.status.value == "unavailable" and "run out of file descriptors" in (status.detail or "")
        health = c.health()
        assert (health.crashes_in_window, health.spawn_count, health.state.value) == (0, 0, "idle")
        assert open_fds() == fds_before and zombies() == []
        assert c.get("value:back").value.get_secret_value() == "back"
        assert c.health().crashes_in_window == 0
    finally:
        c.shutdown()


def test_a_spawned_child_is_never_orphaned_when_its_stderr_cannot_be_watched(
    tmp_path: Path, c_plugins: Dict[str, bytes], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """The spawn worked but the stderr pump could not take the new process (its first
    ``epoll`` out of fds, say): the child, which nobody holds yet, is killed and
    reaped on the spot, and the error is the out-of-fds ``SpawnError``."""
    from plugin_client import _stderr

    spawned: List[int] = []
    real_register = _stderr.PUMP.register

    def register(fd: int, name: str, lines: int) -> object:
        spawned.append(fd)
        raise OSError(24, "Too many open files")

    client = PluginClient(c_plugin(c_plugins, tmp_path / "p"), policy=FAST)
    try:
        before = open_fds()
        monkeypatch.setattr(_stderr.PUMP, "register", register)
        with pytest.raises(errors.SpawnError, match="run out of file descriptors"):
            client.get("value:x")
        monkeypatch.setattr(_stderr.PUMP, "register", real_register)
        assert spawned, "the spawn did not reach the pump"
        assert zombies() == [] and open_fds() == before
        assert client.health().crashes_in_window == 0
        assert client.get("value:x").value.get_secret_value() == "x"
    finally:
        client.shutdown()

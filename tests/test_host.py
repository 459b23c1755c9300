"""``PluginHost`` and ``AsyncPluginHost``: a directory of real plugins as one object.

Every test runs against both hosts (``host_kinds``): the lookups, the broken
manifests and directories, requests by name, ``start()``, ``health()`` and a
side-by-side ``shutdown()`` that leaves no process behind. Reloads are in
``test_host_reload.py``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest

from plugin_client import (
    ChecksumMismatch,
    ClientClosed,
    DuplicatePlugin,
    InitResult,
    LifetimePolicy,
    ManifestError,
    PluginClientError,
    PluginHost,
    PluginsDirUnavailable,
    PluginState,
    SourcesFileError,
    UnknownPlugin,
)
from plugin_client.cli import PLUGINS_DIR_ENV as CLI_ENV
from plugin_client.cli import default_plugins_dir as cli_default

from _helpers import is_dead, wait_until
from host_kinds import host_kind, new_host  # noqa: F401 - fixtures
from plugin_factory import STUBBORN, make_plugin, python_script, write_manifest

POLICY = LifetimePolicy(exit_wait=0.2, shutdown_grace=0.5, start_timeout=5.0, request_timeout=5.0)

NewHost = Callable[..., Any]


def _pids(host: Any) -> List[int]:
    return [h.pid for h in host.health().values() if h.pid is not None]


def test_names_lookups_and_requests_by_name(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    make_plugin(tmp_path, "beta")
    host = new_host(tmp_path, policy=POLICY)
    assert host.names() == ("alpha", "beta")
    assert list(host) == ["alpha", "beta"] and len(host) == 2
    assert "alpha" in host and "gamma" not in host
    assert host["alpha"].name == "alpha"
    assert host.broken == {} and host.dir_errors == {}
    assert host.plugins_dirs == (tmp_path,)

    assert host.get("alpha", "value:one").value.get_secret_value() == "one"
    assert host.get("beta", "value:two").value.get_secret_value() == "two"
    assert host.is_available("alpha").status.value == "available"
    assert [e.reference for e in host.list("beta").entries] == ["ref-0", "ref-1", "ref-2"]
    assert host.validate("alpha", "bad-x").ok is False
    assert host.put("alpha", "k", "v").replaced is False
    assert host.put("alpha", "k", "w").replaced is True
    assert host.delete("alpha", "k").existed is True
    assert len(host.key_material("beta", "sign").material.get_secret_value()) == 32
    # Each plugin has its own process.
    pids = _pids(host)
    assert len(set(pids)) == 2


def test_unknown_name_is_a_typed_key_error_that_lists_the_names(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    make_plugin(tmp_path, "beta")
    host = new_host(tmp_path, policy=POLICY)
    with pytest.raises(UnknownPlugin) as info:
        host["gamma"]
    assert isinstance(info.value, KeyError) and isinstance(info.value, PluginClientError)
    msg = str(info.value)
    assert not msg.startswith(("'", '"')), "KeyError's quoting must not wrap the message"
    assert "'gamma'" in msg and "'alpha'" in msg and "'beta'" in msg and "reload()" in msg
    assert info.value.name == "gamma" and info.value.plugin == "gamma"
    with pytest.raises(KeyError):
        host.get("gamma", "x")


def test_broken_manifests_are_typed_entries_and_hide_no_other(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "good")
    bad = make_plugin(tmp_path, "badsum")
    Path(bad.executable.path).write_bytes(python_script("print('changed')\n"))
    nameless = tmp_path / "devboy-source-no good.toml"
    nameless.write_text("name = 'x'\n")
    write_manifest(tmp_path, "noexe", "devboy-source-noexe", "0" * 64)
    host = new_host(tmp_path, policy=POLICY)
    assert host.names() == ("good",)
    assert set(host.broken) == {"badsum", "noexe", str(nameless)}
    assert isinstance(host.broken["badsum"], ChecksumMismatch)
    assert all(isinstance(err, ManifestError) for err in host.broken.values())
    # A broken plugin's name says why it is not there.
    with pytest.raises(UnknownPlugin, match="did not load"):
        host.get("badsum", "x")
    assert host.get("good", "value:ok").value.get_secret_value() == "ok"


def test_duplicates_across_directories_first_directory_wins(tmp_path: Path, new_host: NewHost) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make_plugin(first, "shared")
    make_plugin(second, "shared")
    make_plugin(second, "only2")
    host = new_host([first, second], policy=POLICY)
    assert host.names() == ("only2", "shared")
    assert host["shared"].manifest.base_dir == first
    dup_path = str(second / "devboy-source-shared.toml")
    err = host.broken[dup_path]
    assert isinstance(err, DuplicatePlugin)
    assert err.kept == str(first / "devboy-source-shared.toml") and err.plugin == "shared"


def test_a_broken_manifest_in_the_first_directory_still_wins_its_name(tmp_path: Path, new_host: NewHost) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    write_manifest(first, "shared", "missing-exe", "0" * 64)
    make_plugin(second, "shared")
    host = new_host([first, second], policy=POLICY)
    assert host.names() == ()
    assert isinstance(host.broken["shared"], ManifestError)
    assert isinstance(host.broken[str(second / "devboy-source-shared.toml")], DuplicatePlugin)


def test_missing_and_unreadable_directories_are_reported(tmp_path: Path, new_host: NewHost, caplog: Any) -> None:
    make_plugin(tmp_path / "ok", "alpha")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    missing = tmp_path / "missing"
    with caplog.at_level(logging.WARNING, logger="plugin_client"):
        host = new_host([missing, not_a_dir, tmp_path / "ok"], policy=POLICY)
    assert host.names() == ("alpha",)
    assert set(host.dir_errors) == {str(missing), str(not_a_dir)}
    assert all(isinstance(e, PluginsDirUnavailable) for e in host.dir_errors.values())
    assert host.dir_errors[str(missing)].errno == 2
    assert "does not exist" in caplog.text


def test_default_directory_is_the_clis_and_its_env_var(tmp_path: Path, monkeypatch: Any) -> None:
    make_plugin(tmp_path, "alpha")
    monkeypatch.setenv("PLUGIN_CLIENT_PLUGINS_DIR", str(tmp_path))
    assert CLI_ENV == "PLUGIN_CLIENT_PLUGINS_DIR" and cli_default()[0] == tmp_path
    with PluginHost(policy=POLICY) as host:
        assert host.plugins_dirs == (tmp_path,) and host.names() == ("alpha",)


def test_policies_and_configs_by_name(tmp_path: Path, new_host: NewHost, caplog: Any) -> None:
    make_plugin(tmp_path, "alpha")
    make_plugin(tmp_path, "beta")
    special = LifetimePolicy(request_timeout=3.0, exit_wait=0.2, shutdown_grace=0.5)
    with caplog.at_level(logging.WARNING, logger="plugin_client"):
        host = new_host(
            tmp_path, policy=POLICY, policies={"alpha": special, "typo": special}, configs={"beta": {"entries": 5}}
        )
    assert host["alpha"].policy == special and host["beta"].policy == POLICY
    assert len(host.list("beta").entries) == 5 and len(host.list("alpha").entries) == 3
    assert "'typo'" in caplog.text and "policies" in caplog.text


def test_a_missing_sources_file_is_a_typed_error(tmp_path: Path) -> None:
    # The sources= host itself is tested in test_host_sources.py.
    with pytest.raises(SourcesFileError, match="does not exist"):
        PluginHost(tmp_path, sources=tmp_path / "sources.toml")


def test_start_inits_every_plugin_and_one_failure_stops_no_other(tmp_path: Path, new_host: NewHost) -> None:
    for name in ("alpha", "beta", "broken-init"):
        make_plugin(tmp_path, name)
    host = new_host(tmp_path, policy=POLICY, configs={"broken-init": {"init": "crash"}})
    results = host.start()
    assert list(results) == ["alpha", "beta", "broken-init"]
    assert isinstance(results["alpha"], InitResult) and results["alpha"].source_name == "alpha"
    assert isinstance(results["beta"], InitResult)
    assert isinstance(results["broken-init"], PluginClientError)
    health = host.health()
    assert health["alpha"].state is PluginState.RUNNING and health["beta"].state is PluginState.RUNNING
    assert health["broken-init"].state is not PluginState.RUNNING


def test_start_of_some_names_starts_only_those(tmp_path: Path, new_host: NewHost) -> None:
    for name in ("alpha", "beta", "gamma"):
        make_plugin(tmp_path, name)
    host = new_host(tmp_path, policy=POLICY)
    with pytest.raises(UnknownPlugin, match="'nope'"):
        host.start(["beta", "nope"])  # checked before anything starts
    assert all(h.pid is None for h in host.health().values())
    results = host.start(["gamma", "beta", "beta"])
    assert list(results) == ["beta", "gamma"] and all(isinstance(r, InitResult) for r in results.values())
    health = host.health()
    assert health["alpha"].pid is None and health["alpha"].spawn_count == 0
    assert health["beta"].state is PluginState.RUNNING and health["gamma"].state is PluginState.RUNNING


def test_health_never_waits_on_a_plugin(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    make_plugin(tmp_path, "beta")
    host = new_host(tmp_path, policy=POLICY)
    host.start()
    done = threading.Event()
    t = threading.Thread(target=lambda: (host.get("alpha", "slow:1500"), done.set()))
    t.start()
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        health = host.health()
        took = time.monotonic() - t0
        assert not done.is_set(), "the slow request must still be in flight"
        assert set(health) == {"alpha", "beta"} and health["alpha"].state is PluginState.RUNNING
        assert took < 0.5
    finally:
        t.join()


def test_shutdown_stops_stubborn_plugins_side_by_side(tmp_path: Path, new_host: NewHost) -> None:
    names = ["s1", "s2", "s3"]
    for name in names:
        make_plugin(tmp_path, name, content=python_script(STUBBORN))
    host = new_host(tmp_path, policy=POLICY)
    assert all(isinstance(r, InitResult) for r in host.start().values())
    pids = _pids(host)
    assert len(pids) == 3
    t0 = time.monotonic()
    host.shutdown()
    took = time.monotonic() - t0
    bound = POLICY.exit_wait + POLICY.shutdown_grace
    assert all(is_dead(pid) for pid in pids)
    # Each needs exit_wait + grace and a SIGKILL; one after the other would be 3x.
    assert bound * 0.9 <= took < bound * 2, took
    host.shutdown()  # idempotent
    with pytest.raises(ClientClosed):
        host.get("s1", "x")
    with pytest.raises(ClientClosed):
        host.reload()
    assert host.names() == ()


def test_with_block_shuts_everything_down(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    make_plugin(tmp_path, "beta")
    with new_host(tmp_path, policy=POLICY) as host:
        host.start()
        pids = _pids(host)
    assert len(pids) == 2 and all(is_dead(pid) for pid in pids)


def test_a_collected_host_leaves_no_process(tmp_path: Path) -> None:
    make_plugin(tmp_path, "alpha")
    host = PluginHost(tmp_path, policy=POLICY)
    host.get("alpha", "value:x")
    pid = _pids(host)[0]
    del host
    assert wait_until(lambda: is_dead(pid), 5.0)


def test_secrets_stay_out_of_messages_and_reprs(tmp_path: Path, new_host: NewHost) -> None:
    make_plugin(tmp_path, "alpha")
    secret = "s3cr3t-value-" + os.urandom(4).hex()
    host = new_host(tmp_path, policy=POLICY, configs={"alpha": {"token": secret}})
    with pytest.raises(UnknownPlugin) as info:
        host.put("nope", "ref", secret)
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert secret not in repr(host) and secret not in repr(host["alpha"])
    assert host.put("alpha", "ref", secret).replaced is False


def test_async_host_natively_in_asyncio_run(tmp_path: Path) -> None:
    """AsyncPluginHost in its own asyncio.run: concurrent requests to several plugins,
    a removal mid-request (the task still gets its reply), and every process gone at
    the end of the ``async with``."""
    import asyncio

    from plugin_client import AsyncPluginHost

    make_plugin(tmp_path, "alpha")
    make_plugin(tmp_path, "beta")

    async def main() -> List[int]:
        async with AsyncPluginHost(tmp_path, policy=POLICY) as host:
            started = await host.start()
            assert all(isinstance(r, InitResult) for r in started.values())
            got = await asyncio.gather(*(host.get(n, f"value:{n}{i}") for i in range(5) for n in ("alpha", "beta")))
            assert sorted(g.value.get_secret_value() for g in got) == sorted(
                f"{n}{i}" for i in range(5) for n in ("alpha", "beta")
            )
            pids = _pids(host)
            slow = asyncio.ensure_future(host.get("beta", "slow:300"))
            await asyncio.sleep(0.1)
            (tmp_path / "devboy-source-beta.toml").unlink()
            report = await host.reload()
            assert list(report.removed) == ["beta"]
            with pytest.raises(UnknownPlugin):
                await host.get("beta", "value:x")
            assert (await slow).value.get_secret_value() == "slow"
            return pids

    pids = asyncio.run(main())
    assert len(pids) == 2 and all(is_dead(pid) for pid in pids)

"""``PluginHost(..., sources=PATH)`` and ``AsyncPluginHost``'s: a host whose clients are
a ``sources.toml``'s sources, over real SDK plugins.

Every test runs against both hosts (``host_kinds``) and, through the ``core``
fixture of ``conftest.py``, both cores: two sources of one type as two processes
with their own configs, the routing decisions without a plugin call,
``get_secret`` with the default's fallback, the whole host as a cached
``SecretSource``, a reload of a changed and of an invalid file, and no process
left after ``shutdown()``.
"""

from __future__ import annotations

import inspect
import logging
import threading
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from plugin_client import (
    ClientClosed,
    HostHasNoSources,
    LifetimePolicy,
    NoRoute,
    RouteKind,
    SourcePluginMissing,
    SourcesFileError,
    SourcesInvalid,
    SourceUnavailable,
    UnknownPlugin,
    parse_sources,
)

from _helpers import is_dead, wait_until
from conformance import sdk_script
from host_kinds import host_kind, new_host  # noqa: F401 - fixtures
from plugin_factory import make_plugin

POLICY = LifetimePolicy(request_timeout=5.0, start_timeout=10.0, shutdown_grace=1.0, exit_wait=0.5)

NewHost = Callable[..., Any]

# A source plugin whose behaviour is its init config: "values" maps references to
# values, "down" = "unavailable" makes it answer so. A value comes back as
# "<source>:<pid>:<value>", so a test sees who answered.
KV = textwrap.dedent(
    """
    import os, time
    from plugin_client.plugin import Capability, SecretSourcePlugin, Unavailable, serve

    class Kv(SecretSourcePlugin):
        version = "kv-1"

        def init(self, source_name, config):
            super().init(source_name, config)
            return Capability.READ | Capability.VALIDATE, self.version

        def _check(self):
            if self.config.get("down") == "unavailable":
                raise Unavailable("down by config")

        def is_available(self):
            self._check()
            return True

        def get(self, reference):
            self._check()
            time.sleep(self.config.get("slow", 0))
            value = self.config.get("values", {}).get(reference)
            if value is None:
                return None
            return "%s:%d:%s" % (self.source_name, os.getpid(), value), self.config.get("lease")

        def validate(self, reference):
            self._check()
            return reference in self.config.get("values", {})

    serve(Kv)
    """
)

FILE = """
[[source]]
name = "team"
type = "kv"
values = { "team/db/password" = "t-db", "team/db/deep/key" = "t-deep", "op://x" = "t-op" }

[[source]]
name = "deep"
type = "kv"
values = { "team/db/deep/key" = "d-deep" }

[[source]]
name = "local"
type = "kv"
values = { "app/api/token" = "l-token", "team/db/password" = "l-db" }

[default]
source = "local"

[[route]]
prefix = "team/"
source = "team"

[[route]]
prefix = "team/db/deep/"
source = "deep"

[secret."app/jira/key"]
source = "team"
reference = "op://x"
"""


def _plugins(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    make_plugin(plugins, "kv", sdk_script(KV))
    make_plugin(plugins, "unused", sdk_script(KV))
    return plugins


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(text)
    return path


def _value(secret: Any) -> str:
    assert secret is not None
    return str(secret.value.get_secret_value())


def _run(host: Any, value: Any) -> Any:
    """An awaitable's result on the async host's loop; anything else as it is."""
    return host._runner.run(value) if inspect.isawaitable(value) else value


def _pids(host: Any) -> Dict[str, int]:
    return {name: h.pid for name, h in host.health().items() if h.pid is not None}


def test_two_sources_of_one_type_are_two_processes_with_their_own_configs(
    tmp_path: Path, new_host: NewHost
) -> None:
    host = new_host(_plugins(tmp_path), sources=_write(tmp_path, FILE), policy=POLICY)
    # The sources are the clients; a plugin no source uses has none.
    assert host.names() == ("deep", "local", "team") and "unused" not in host and "kv" not in host
    assert host.broken == {} and host.sources is not None and host.sources.names() == ["team", "deep", "local"]
    assert {h.source_name for h in host.health().values()} == {"team", "deep", "local"}
    assert host["team"].name == "kv" and host["deep"].name == "kv"

    team = _value(_run(host, host.get_secret("team/db/password")))
    deep = _value(_run(host, host.get_secret("team/db/deep/key")))
    assert team.startswith("team:") and team.endswith(":t-db")
    assert deep.startswith("deep:") and deep.endswith(":d-deep")
    pids = _pids(host)
    assert set(pids) == {"team", "deep"} and pids["team"] != pids["deep"]
    assert team.split(":")[1] == str(pids["team"])

    host.shutdown()
    assert all(is_dead(pid) for pid in pids.values())


def test_resolve_decides_by_the_file_without_calling_a_plugin(tmp_path: Path, new_host: NewHost) -> None:
    host = new_host(_plugins(tmp_path), sources=_write(tmp_path, FILE), policy=POLICY)
    exact = host.resolve("app/jira/key")
    assert (exact.source, exact.reference, exact.rule) == ("team", "op://x", RouteKind.SECRET)
    longest = host.resolve("team/db/deep/key")
    assert (longest.source, longest.reference, longest.rule, longest.prefix) == (
        "deep", "team/db/deep/key", RouteKind.ROUTE, "team/db/deep/",
    )
    shorter = host.resolve("team/db/password")
    assert (shorter.source, shorter.prefix, shorter.tail) == ("team", "team/", "db/password")
    default = host.resolve("app/api/token")
    assert (default.source, default.reference, default.rule) == ("local", "app/api/token", RouteKind.DEFAULT)
    assert _pids(host) == {}  # no plugin was started to decide

    # The exact override hands the plugin its reference, not the path.
    assert _value(_run(host, host.get_secret("app/jira/key"))).endswith(":t-op")
    assert _run(host, host.get_secret("app/api/missing")) is None


def test_no_route_and_a_host_without_sources_are_typed_errors(tmp_path: Path, new_host: NewHost) -> None:
    plugins = _plugins(tmp_path)
    host = new_host(plugins, sources=_write(tmp_path, '[[source]]\nname = "a"\ntype = "kv"\n'), policy=POLICY)
    with pytest.raises(NoRoute) as info:
        host.resolve("team/db/password")
    assert "add a route or a [default] source" in info.value.message
    with pytest.raises(NoRoute):
        _run(host, host.get_secret("team/db/password"))

    plain = new_host(plugins, policy=POLICY)
    assert plain.sources is None and plain.names() == ("kv", "unused")
    for call in (lambda: plain.resolve("a/b/c"), lambda: _run(plain, plain.get_secret("a/b/c")), plain.secret_source):
        with pytest.raises(HostHasNoSources) as err:
            call()
        assert "sources=" in err.value.message


def test_a_source_whose_plugin_is_missing_is_broken_and_the_default_falls_back(
    tmp_path: Path, new_host: NewHost
) -> None:
    text = """
[[source]]
name = "keychain"
type = "absent"

[[source]]
name = "local"
type = "kv"
values = { "app/api/token" = "l-token" }

[[source]]
name = "team"
type = "absent"

[default]
source = "keychain"
fallback = "local"

[[route]]
prefix = "team/"
source = "team"
"""
    host = new_host(_plugins(tmp_path), sources=_write(tmp_path, text), policy=POLICY)
    assert host.names() == ("local",)
    missing = host.broken["keychain"]
    assert isinstance(missing, SourcePluginMissing)
    assert (missing.source, missing.plugin) == ("keychain", "absent")
    assert "devboy-source-absent.toml" in missing.message and "'keychain'" in missing.message
    with pytest.raises(UnknownPlugin) as info:
        host["keychain"]
    assert "devboy-source-absent.toml" in info.value.message

    assert _value(_run(host, host.get_secret("app/api/token"))).startswith("local:")
    # A route has no fallback.
    with pytest.raises(SourceUnavailable) as down:
        _run(host, host.get_secret("team/db/password"))
    assert "absent" in down.value.message


def test_an_unavailable_default_falls_back_and_both_down_says_so(tmp_path: Path, new_host: NewHost) -> None:
    text = """
[[source]]
name = "primary"
type = "kv"
down = "unavailable"

[[source]]
name = "backup"
type = "kv"
values = { "app/api/token" = "b-token" }

[default]
source = "primary"
fallback = "backup"
"""
    host = new_host(_plugins(tmp_path), sources=_write(tmp_path, text), policy=POLICY)
    assert _value(_run(host, host.get_secret("app/api/token"))).startswith("backup:")
    # configs[source name] merges over the file's settings, the host's keys winning.
    both = new_host(
        _plugins(tmp_path), sources=_write(tmp_path, text), policy=POLICY, configs={"backup": {"down": "unavailable"}}
    )
    with pytest.raises(SourceUnavailable) as info:
        _run(both, both.get_secret("app/api/token"))
    assert "'primary'" in info.value.message and "'backup'" in info.value.message


def test_policies_by_source_name_then_type_then_the_host_policy(tmp_path: Path, new_host: NewHost) -> None:
    by_name = LifetimePolicy(request_timeout=3.0, exit_wait=0.2, shutdown_grace=0.5)
    by_type = LifetimePolicy(request_timeout=4.0, exit_wait=0.2, shutdown_grace=0.5)
    host = new_host(
        _plugins(tmp_path), sources=_write(tmp_path, FILE), policy=POLICY, policies={"deep": by_name, "kv": by_type}
    )
    assert host["deep"].policy == by_name
    assert host["team"].policy == by_type and host["local"].policy == by_type


def test_the_host_as_a_cached_secret_source_follows_reloads(tmp_path: Path, new_host: NewHost) -> None:
    text = FILE.replace('name = "local"\ntype = "kv"\n', 'name = "local"\ntype = "kv"\nlease = 600\n')
    path = _write(tmp_path, text)
    host = new_host(_plugins(tmp_path), sources=path, policy=POLICY)
    source = host.secret_source(cache=True)
    first = _value(_run(host, source.get("app/api/token")))
    pid = _pids(host)["local"]
    assert first == f"local:{pid}:l-token"
    _run(host, host["local"].shutdown())
    # Served from the lease cache: the stopped client is not asked again.
    assert _value(_run(host, source.get("app/api/token"))) == first

    path.write_text(text.replace('"l-token"', '"l-token-2"'))
    report = host.reload()
    assert set(report.replaced) == {"local"} and "config changed" in report.replaced["local"]
    # The replaced source's cache went with it: the new process answers.
    second = _value(_run(host, source.get("app/api/token")))
    assert second.endswith(":l-token-2") and second != first


def test_reload_rereads_the_file_and_an_invalid_one_changes_nothing(tmp_path: Path, new_host: NewHost) -> None:
    path = _write(tmp_path, FILE)
    host = new_host(_plugins(tmp_path), sources=path, policy=POLICY)
    assert _value(_run(host, host.get_secret("team/db/password"))).endswith(":t-db")
    before = _pids(host)
    old_team = host["team"]

    for bad, error in (
        (FILE + '\n[[route]]\nprefix = "nope"\nsource = "ghost"\n', SourcesInvalid),
        ("[[source]\n", SourcesFileError),
    ):
        path.write_text(bad)
        with pytest.raises(error):
            host.reload()
        assert host.names() == ("deep", "local", "team") and host["team"] is old_team
        assert _pids(host) == before and host.resolve("team/db/deep/key").source == "deep"

    changed = (
        FILE.replace('"t-db"', '"t-db-2"')
        .replace('[[source]]\nname = "deep"\ntype = "kv"\nvalues = { "team/db/deep/key" = "d-deep" }\n', "")
        .replace('[[route]]\nprefix = "team/db/deep/"\nsource = "deep"\n', "")
        + '\n[[source]]\nname = "extra"\ntype = "kv"\n\n[[route]]\nprefix = "extra/"\nsource = "extra"\n'
    )
    parse_sources(changed)  # the test's own file is valid
    path.write_text(changed)
    report = host.reload()
    assert report.added == ("extra",)
    assert set(report.removed) == {"deep"} and "no longer defines source 'deep'" in report.removed["deep"]
    assert set(report.replaced) == {"team"} and "config changed" in report.replaced["team"]
    assert host.names() == ("extra", "local", "team")
    assert host.resolve("team/db/deep/key").source == "team"
    now = _value(_run(host, host.get_secret("team/db/password")))
    assert now.endswith(":t-db-2") and now.split(":")[1] != str(before["team"])
    # The retired clients (replaced team, removed deep) were stopped.
    assert wait_until(lambda: all(is_dead(p) for p in before.values()))

    pids: List[int] = list(_pids(host).values())
    host.shutdown()
    assert pids and all(is_dead(p) for p in pids)


def test_a_missing_sources_file_is_a_typed_error_at_construction(tmp_path: Path, new_host: NewHost) -> None:
    with pytest.raises(SourcesFileError) as info:
        new_host(_plugins(tmp_path), sources=tmp_path / "nope.toml", policy=POLICY)
    assert "does not exist" in info.value.message


def test_a_source_removed_while_get_secret_is_in_flight_answers_then_stops(
    tmp_path: Path, new_host: NewHost
) -> None:
    text = '[[source]]\nname = "slow"\ntype = "kv"\nslow = 0.6\nvalues = { "app/api/token" = "s" }\n'
    path = _write(tmp_path, text + '[default]\nsource = "slow"\n')
    host = new_host(_plugins(tmp_path), sources=path, policy=POLICY)
    host.start()
    pid = _pids(host)["slow"]
    got: List[Any] = []
    worker = threading.Thread(target=lambda: got.append(_run(host, host.get_secret("app/api/token"))))
    worker.start()
    # In flight through the host (its count is what a reload drains).
    assert wait_until(lambda: host._table.members["slow"].inflight == 1, timeout=2.0)
    path.write_text('[[source]]\nname = "other"\ntype = "kv"\n')
    report = host.reload()
    assert set(report.removed) == {"slow"} and report.added == ("other",)
    with pytest.raises(NoRoute):
        host.resolve("app/api/token")  # the new file routes nothing there
    worker.join(5.0)
    # The request in flight was answered by the removed source, then it stopped.
    assert got and _value(got[0]) == f"slow:{pid}:s"
    assert wait_until(lambda: is_dead(pid))


def test_unknown_policy_and_config_names_are_warned_by_source_and_type(
    tmp_path: Path, new_host: NewHost, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="plugin_client"):
        host = new_host(
            _plugins(tmp_path), sources=_write(tmp_path, FILE), policy=POLICY,
            policies={"kv": POLICY, "team": POLICY, "typo-policy": POLICY},
            configs={"local": {"x": 1}, "kv": {"x": 1}},
        )
    assert "'typo-policy'" in caplog.text and "not a source" in caplog.text
    # configs are by source name only: a type there is a typo too.
    assert "configs names 'kv'" in caplog.text
    assert "policies names 'kv'" not in caplog.text and "'team'" not in caplog.text
    assert host["local"].health().source_name == "local"


def test_a_source_setting_stays_out_of_reprs_messages_and_reports(tmp_path: Path, new_host: NewHost) -> None:
    secret = "hunter2-do-not-log"
    text = FILE.replace('name = "local"\ntype = "kv"\n', f'name = "local"\ntype = "kv"\ntoken = "{secret}"\n')
    text += f'\n[[source]]\nname = "gone"\ntype = "absent"\npassword = "{secret}"\n'
    path = _write(tmp_path, text)
    host = new_host(_plugins(tmp_path), sources=path, policy=POLICY, configs={"team": {"key": secret}})
    path.write_text(text.replace(secret, secret + "-2"))
    report = host.reload()
    assert set(report.replaced) == {"local"}
    shown = " ".join(
        [repr(host), repr(host.secret_source()), repr(report), repr(host.sources), repr(host.resolve("team/a/b"))]
        + [e.message for e in host.broken.values()]
        + [repr(h) for h in host.health().values()]
    )
    assert "hunter2" not in shown


def test_an_installed_plugin_or_a_changed_type_is_seen_at_the_next_reload(tmp_path: Path, new_host: NewHost) -> None:
    plugins = _plugins(tmp_path)
    text = '[[source]]\nname = "vault"\ntype = "later"\n\n[[source]]\nname = "main"\ntype = "kv"\n'
    path = _write(tmp_path, text)
    host = new_host(plugins, sources=path, policy=POLICY)
    assert host.names() == ("main",) and isinstance(host.broken["vault"], SourcePluginMissing)
    with pytest.raises(UnknownPlugin) as info:
        host["nope"]
    assert "no source 'nope'" in info.value.message and "[[source]]" in info.value.message
    make_plugin(plugins, "later", sdk_script(KV))
    report = host.reload()
    assert report.added == ("vault",) and host.broken == {} and host["vault"].name == "later"

    path.write_text(text.replace('type = "kv"', 'type = "unused"'))
    report = host.reload()
    assert set(report.replaced) == {"main"} and "devboy-source-unused.toml" in report.replaced["main"]
    assert host["main"].name == "unused"


def test_after_shutdown_routing_a_path_is_client_closed(tmp_path: Path, new_host: NewHost) -> None:
    host = new_host(_plugins(tmp_path), sources=_write(tmp_path, FILE), policy=POLICY)
    source = host.secret_source()
    assert _value(_run(host, host.get_secret("app/api/token"))).endswith(":l-token")
    pids = list(_pids(host).values())
    host.shutdown()
    assert pids and all(is_dead(p) for p in pids)
    with pytest.raises(ClientClosed):
        _run(host, host.get_secret("app/api/token"))
    with pytest.raises(ClientClosed):
        _run(host, source.get("app/api/token"))

"""sources.toml: the file's checks (every problem at once, each typed and naming its
entry), the routing decision, and real plugins behind the blocking and asyncio
routers (two sources of one type, the default's fallback, the pre-flight)."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin_client import errors
from plugin_client.aio import AsyncPluginClient
from plugin_client.client import PluginClient
from plugin_client.policy import LifetimePolicy
from plugin_client.protocol import AvailabilityStatus, Capability
from plugin_client.source import SecretSource
from plugin_client.source_router import AsyncSourceRouter, SourceRouter, find_source_plugins, preflight_sources
from plugin_client.sources import RouteKind, SourcesConfig, load_sources, parse_sources

from conformance import sdk_script
from plugin_factory import make_plugin

FAST = LifetimePolicy(request_timeout=5.0, start_timeout=10.0, shutdown_grace=1.0, exit_wait=0.5)

# A source plugin whose whole behaviour is its init config: "values" maps references
# to values, "down" makes it answer that error kind. A value comes back prefixed
# with the source's name and the process id, so a test sees who answered.
KV_PLUGIN = textwrap.dedent(
    """
    import os, time
    from plugin_client.plugin import Capability, NeedsCredential, SecretSourcePlugin, Unavailable, serve

    class Kv(SecretSourcePlugin):
        version = "kv-1"

        def init(self, source_name, config):
            super().init(source_name, config)
            return Capability.READ | Capability.VALIDATE | Capability.WRITE, self.version

        def _check(self):
            down = self.config.get("down")
            if down == "unavailable":
                raise Unavailable("down by config")
            if down == "needs-credential":
                raise NeedsCredential("sign in by config")
            if down == "hang":
                time.sleep(60)

        def is_available(self):
            self._check()
            return True

        def get(self, reference):
            self._check()
            value = self.config.get("values", {}).get(reference)
            if value is None:
                return None
            return "%s:%d:%s" % (self.source_name, os.getpid(), value), self.config.get("lease")

        def validate(self, reference):
            self._check()
            return reference in self.config.get("values", {})

        def put(self, reference, value):
            self._check()
            return False

    serve(Kv)
    """
)


ADR_EXAMPLE = """
[[source]]
name = "keychain"
type = "keychain"

[[source]]
name = "local-vault"
type = "local-vault"

[[source]]
name = "1p-personal"
type = "1password"
account = "personal.example.1password.com"

[[source]]
name = "vault-team"
type = "vault"
addr  = "https://vault.example.internal/"
mount = "secret"

[default]
source = "keychain"
fallback = "local-vault"

[[route]]
prefix = "team/"
source = "vault-team"
mount  = "secret/data/team"

[[route]]
prefix = "personal/"
source = "1p-personal"
vault  = "Personal"

[secret."client-acme/jira/api-key"]
source    = "1p-personal"
reference = "op://Work/Acme Jira/credential"
"""


def _problems(text: str) -> Tuple[errors.SourcesError, ...]:
    with pytest.raises(errors.SourcesInvalid) as info:
        parse_sources(text, origin="/etc/sources.toml")
    assert info.value.origin == "/etc/sources.toml"
    assert str(len(info.value.problems)) in info.value.message
    return info.value.problems


# --- the file ---------------------------------------------------------------------------


def test_the_adr_example_parses_into_frozen_models() -> None:
    cfg = parse_sources(ADR_EXAMPLE)
    assert cfg.names() == ["keychain", "local-vault", "1p-personal", "vault-team"]
    vault = cfg.source("vault-team")
    assert (vault.type, vault.plugin, vault.manifest_file) == ("vault", "vault", "devboy-source-vault.toml")
    assert vault.init_config() == {"addr": "https://vault.example.internal/", "mount": "secret"}
    assert cfg.source("keychain").init_config() == {}
    assert cfg.default is not None and (cfg.default.source, cfg.default.fallback) == ("keychain", "local-vault")
    assert [(r.prefix, r.source, dict(r.settings)) for r in cfg.routes] == [
        ("team/", "vault-team", {"mount": "secret/data/team"}),
        ("personal/", "1p-personal", {"vault": "Personal"}),
    ]
    assert cfg.secrets["client-acme/jira/api-key"].reference == "op://Work/Acme Jira/credential"
    with pytest.raises(Exception):
        cfg.sources[0].name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        vault.settings["addr"] = "x"  # type: ignore[index]
    with pytest.raises(errors.UnknownSource) as info:
        cfg.source("nope")
    assert isinstance(info.value, KeyError) and "'nope'" in str(info.value)


def test_an_empty_file_is_a_config_that_routes_nothing() -> None:
    cfg = parse_sources("")
    assert cfg.sources == () and cfg.default is None
    with pytest.raises(errors.NoRoute) as info:
        cfg.resolve("team/db/password")
    assert isinstance(info.value, LookupError) and info.value.path == "team/db/password"
    assert "add a route or a [default] source" in info.value.message


_SRC = '[[source]]\nname = "a"\ntype = "kv"\n'


@pytest.mark.parametrize(
    "text, error, subject, words",
    [
        ('[[source]]\nname = "Vault"\ntype = "v"\n', errors.BadSourceName, "source 1 ('Vault')", "lowercase"),
        ('[[source]]\nname = "-x"\ntype = "v"\n', errors.BadSourceName, "source 1 ('-x')", "rename it"),
        ('[[source]]\nname = ""\ntype = "v"\n', errors.BadSourceName, "source 1 ('')", "rename it"),
        (_SRC + '[[source]]\nname = "a"\ntype = "kv"\n', errors.DuplicateSource, "source 2 ('a')", "name of source 1"),
        ('[[source]]\nname = "a"\ntype = "a b"\n', errors.BadSourceType, "source 1 ('a')", "devboy-source-<name>.toml"),
        ('[[source]]\nname = "a"\n', errors.SourcesFieldError, "source 1 ('a')", "has no 'type'"),
        ('[[source]]\ntype = "kv"\n', errors.SourcesFieldError, "source 1", "has no 'name'"),
        ('[[source]]\nname = 3\ntype = "kv"\n', errors.SourcesFieldError, "source 1", "not a string"),
        ('[source]\nname = "a"\ntype = "kv"\n', errors.SourcesFieldError, "[source]", "[[source]]"),
        (_SRC + "when = 1979-05-27T07:32:00Z\n", errors.SourcesFieldError, "source 1 ('a')", "date-time"),
        (_SRC + '[default]\nsource = "b"\n', errors.UndefinedSource, "[default]", "the source 'b'"),
        (_SRC + '[default]\nsource = "a"\nfallback = "b"\n', errors.UndefinedSource, "[default]", "the fallback 'b'"),
        (_SRC + '[default]\nsource = "a"\nfalback = "a"\n', errors.SourcesFieldError, "[default]", "'falback'"),
        (_SRC + '[default]\nfallback = "a"\n', errors.SourcesFieldError, "[default]", "has no 'source'"),
        (_SRC + '[[route]]\nprefix = "team"\nsource = "a"\n', errors.BadRoutePrefix, "route 1 (prefix 'team')", "'team/'"),
        (
            _SRC + '[[route]]\nprefix = "t/"\nsource = "a"\n[[route]]\nprefix = "t/"\nsource = "a"\n',
            errors.DuplicateRoutePrefix,
            "route 2 (prefix 't/')",
            "prefix of route 1",
        ),
        (_SRC + '[[route]]\nprefix = "t/"\nsource = "b"\n', errors.UndefinedSource, "route 1 (prefix 't/')", "'b'"),
        (_SRC + '[[route]]\nsource = "a"\n', errors.SourcesFieldError, "route 1", "has no 'prefix'"),
        (_SRC + '[secret."Bad"]\nsource = "a"\nreference = "r"\n', errors.BadSecretPath, "secret 'Bad'", "segment"),
        (_SRC + '[secret."__sources/a/b"]\nsource = "a"\nreference = "r"\n', errors.BadSecretPath, "secret '__sources/a/b'", "reserved"),
        (_SRC + '[secret."a/b/c"]\nsource = "b"\nreference = "r"\n', errors.UndefinedSource, "secret 'a/b/c'", "'b'"),
        (_SRC + '[secret."a/b/c"]\nsource = "a"\n', errors.SourcesFieldError, "secret 'a/b/c'", "has no 'reference'"),
        (_SRC + '[secret."a/b/c"]\nsource = "a"\nreference = ""\n', errors.SourcesFieldError, "secret 'a/b/c'", "empty"),
        (_SRC + '[[routes]]\nprefix = "t/"\nsource = "a"\n', errors.SourcesFieldError, "the key 'routes'", "[[route]]"),
    ],
)
def test_each_problem_is_typed_and_names_its_entry(
    text: str, error: Type[errors.SourcesError], subject: str, words: str
) -> None:
    (problem,) = _problems(text)
    assert type(problem) is error
    assert problem.subject == subject
    assert problem.message.lower().startswith(subject.lower())
    assert "'/etc/sources.toml'" in problem.message and words in problem.message
    assert isinstance(problem, errors.PluginClientError)


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        '[[source]]\nname = "Bad"\ntype = "kv"\n'
        '[[source]]\nname = "ok"\ntype = "kv"\n'
        '[default]\nsource = "missing"\n'
        '[[route]]\nprefix = "team"\nsource = "ok"\n'
        '[[route]]\nprefix = "x/"\nsource = "gone"\n'
        '[secret."a/b"]\nsource = "ok"\nreference = "r"\n'
    )
    assert [type(p) for p in problems] == [
        errors.BadSourceName,
        errors.UndefinedSource,
        errors.BadRoutePrefix,
        errors.UndefinedSource,
        errors.BadSecretPath,
    ]
    undefined = [p for p in problems if isinstance(p, errors.UndefinedSource)]
    assert [p.source for p in undefined] == ["missing", "gone"]
    bad_path = problems[-1]
    assert isinstance(bad_path, errors.BadSecretPath) and bad_path.path == "a/b"


def test_a_file_that_is_not_toml_or_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(errors.SourcesFileError) as info:
        parse_sources('[[source]]\nname = "a"\ntype = \n', origin="f.toml")
    assert info.value.line == 3 and info.value.message.startswith("Sources file 'f.toml' is not valid TOML at line 3")
    with pytest.raises(errors.SourcesFileError) as info:
        parse_sources(b"name = '\xff'")
    assert "UTF-8" in info.value.message
    with pytest.raises(errors.SourcesFileError) as info:
        load_sources(tmp_path / "nope.toml")
    assert "does not exist" in info.value.message and info.value.errno == 2
    with pytest.raises(errors.SourcesFileError) as info:
        load_sources(tmp_path)
    assert "is a directory" in info.value.message
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(errors.SourcesFileError, match="not a regular file"):
        load_sources(fifo)  # and does not hang waiting for a writer
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(errors.SourcesFileError, match="larger than"):
        load_sources(big)
    good = tmp_path / "sources.toml"
    good.write_text(ADR_EXAMPLE)
    assert load_sources(good).origin == str(good)


# --- the decision -----------------------------------------------------------------------


def test_resolution_precedence_and_references() -> None:
    cfg = parse_sources(
        ADR_EXAMPLE
        + '\n[[source]]\nname = "acme"\ntype = "vault"\n[[route]]\nprefix = "team/acme/"\nsource = "acme"\n'
        + '[secret."team/gitlab/token-deploy"]\nsource = "1p-personal"\nreference = "op://Work/Gitlab/credential"\n'
    )
    exact = cfg.resolve("team/gitlab/token-deploy")
    assert (exact.rule, exact.source, exact.reference, exact.prefix) == (
        RouteKind.SECRET, "1p-personal", "op://Work/Gitlab/credential", None,
    )
    longest = cfg.resolve("team/acme/db/url")
    assert (longest.rule, longest.source, longest.reference, longest.prefix) == (
        RouteKind.ROUTE, "acme", "team/acme/db/url", "team/acme/",
    )
    assert longest.tail == "db/url"
    short = cfg.resolve("team/gitlab/pat")
    assert (short.source, short.prefix, dict(short.settings)) == ("vault-team", "team/", {"mount": "secret/data/team"})
    # A prefix matches whole segments only: "teamx/" is not under "team/".
    default = cfg.resolve("teamx/gitlab/pat")
    assert (default.rule, default.source, default.reference, default.fallback) == (
        RouteKind.DEFAULT, "keychain", "teamx/gitlab/pat", "local-vault",
    )
    assert default.to_dict() == {
        "path": "teamx/gitlab/pat", "source": "keychain", "reference": "teamx/gitlab/pat",
        "rule": "default", "prefix": None, "fallback": "local-vault",
    }


@pytest.mark.parametrize("path", ["a/b", "A/b/c", "a//c", "a/b/c/", "__sources/a/b", "_test/a/b", "a/b_c/d", 7])
def test_a_malformed_path_is_a_typed_value_error(path: Any) -> None:
    cfg = parse_sources(_SRC + '[default]\nsource = "a"\n')
    with pytest.raises(errors.BadSecretPath) as info:
        cfg.resolve(path)
    assert isinstance(info.value, ValueError) and info.value.message.startswith("Secret path")


_segment = st.sampled_from(["a", "b", "team", "x1"])
_prefix = st.lists(_segment, min_size=1, max_size=3).map(lambda s: "/".join(s) + "/")
_path = st.lists(_segment, min_size=3, max_size=5).map("/".join)


@settings(max_examples=200, deadline=None)
@given(
    prefixes=st.lists(_prefix, max_size=6, unique=True),
    exact=st.lists(_path, max_size=3, unique=True),
    has_default=st.booleans(),
    path=_path,
)
def test_resolve_matches_the_rule_as_stated(prefixes: List[str], exact: List[str], has_default: bool, path: str) -> None:
    lines = [f'[[source]]\nname = "s{i}"\ntype = "kv"\n' for i in range(len(prefixes) + 1)]
    lines += [f'[[route]]\nprefix = "{p}"\nsource = "s{i}"\n' for i, p in enumerate(prefixes)]
    lines += [f'[secret."{p}"]\nsource = "s0"\nreference = "ref:{p}"\n' for p in exact]
    if has_default:
        lines.append(f'[default]\nsource = "s{len(prefixes)}"\n')
    cfg = parse_sources("".join(lines))
    matching = [(len(p), -i, i) for i, p in enumerate(prefixes) if path.startswith(p)]
    if path in exact:
        expected: Optional[Tuple[str, str]] = ("s0", f"ref:{path}")
    elif matching:
        expected = (f"s{max(matching)[2]}", path)
    elif has_default:
        expected = (f"s{len(prefixes)}", path)
    else:
        expected = None
    if expected is None:
        with pytest.raises(errors.NoRoute):
            cfg.resolve(path)
    else:
        r = cfg.resolve(path)
        assert (r.source, r.reference) == expected


# --- real plugins behind the router -----------------------------------------------------


@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("plugins")
    make_plugin(directory, "kv", sdk_script(KV_PLUGIN))
    make_plugin(directory, "broken", b"#!/bin/sh\nexit 0\n")
    # The manifest of "broken" then names bytes that no longer match its checksum.
    (directory / "devboy-source-broken").write_bytes(b"#!/bin/sh\nexit 1\n")
    return directory


TWO_KV = """
[[source]]
name = "team-a"
type = "kv"
values = {"team/db/password" = "alpha", "shared/x/y" = "from-a"}

[[source]]
name = "team-b"
type = "kv"
values = {"team/b/password" = "beta", "shared/x/y" = "from-b"}
lease = 300

[[source]]
name = "down"
type = "kv"
down = "unavailable"

[[source]]
name = "locked"
type = "kv"
down = "needs-credential"

[[source]]
name = "absent"
type = "not-installed"

[[source]]
name = "damaged"
type = "broken"

[[route]]
prefix = "team/"
source = "team-a"

[[route]]
prefix = "team/b/"
source = "team-b"

[secret."pinned/one/secret"]
source = "team-b"
reference = "shared/x/y"
"""


def _with_default(default: str, fallback: Optional[str] = None) -> SourcesConfig:
    text = TWO_KV + f'\n[default]\nsource = "{default}"\n' + (f'fallback = "{fallback}"\n' if fallback else "")
    return parse_sources(text, origin="test-sources.toml")


def _who(value: str) -> Tuple[str, int, str]:
    name, pid, rest = value.split(":", 2)
    return name, int(pid), rest


def test_two_sources_of_one_type_are_two_processes_with_their_own_configs(plugins_dir: Path) -> None:
    with SourceRouter.open(_with_default("team-a"), plugins_dir, policy=FAST) as router:
        assert isinstance(router, SecretSource)
        a = router.get_secret("team/db/password")
        b = router.get_secret("team/b/password")
        assert a is not None and b is not None
        name_a, pid_a, value_a = _who(a.value.get_secret_value())
        name_b, pid_b, value_b = _who(b.value.get_secret_value())
        assert (name_a, value_a, name_b, value_b) == ("team-a", "alpha", "team-b", "beta")
        assert pid_a != pid_b
        assert a.lease is None and b.lease is not None and b.lease.total_seconds() == 300
        # The same path under another source's config: each process has its own.
        pinned = router.get_secret("pinned/one/secret")
        assert pinned is not None and _who(pinned.value.get_secret_value())[::2] == ("team-b", "from-b")
        assert router.get_secret("team/db/nothing") is None
        assert router.validate("team/db/password") is True
        assert router.capabilities & Capability.READ
        clients = [router.source(n).client for n in ("team-a", "team-b")]  # type: ignore[attr-defined]
    assert all(c.health().pid is None for c in clients)


def test_the_fallback_answers_when_the_default_is_unavailable(plugins_dir: Path) -> None:
    for default in ("down", "absent", "damaged"):
        with SourceRouter.open(_with_default(default, "team-a"), plugins_dir, policy=FAST) as router:
            r = router.resolve("other/db/password")
            assert (r.rule, r.source, r.fallback) == (RouteKind.DEFAULT, default, "team-a")
            # Not a team/ path, so the default decides; team-a has no such secret.
            assert router.get_secret("other/db/password") is None
    # The fallback's answer is the value the default would have given.
    cfg = parse_sources(
        TWO_KV.replace('values = {"team/db/password" = "alpha"', 'values = {"other/db/password" = "fb", "team/db/password" = "alpha"')
        + '\n[default]\nsource = "absent"\nfallback = "team-a"\n'
    )
    with SourceRouter.open(cfg, [plugins_dir], policy=FAST) as router:
        secret = router.get_secret("other/db/password")
        assert secret is not None and _who(secret.value.get_secret_value())[::2] == ("team-a", "fb")


def test_no_fallback_for_a_credential_or_a_route(plugins_dir: Path) -> None:
    with SourceRouter.open(_with_default("locked", "team-a"), plugins_dir, policy=FAST) as router:
        with pytest.raises(errors.NeedsCredential):
            router.get_secret("other/db/password")
    with SourceRouter.open(_with_default("down"), plugins_dir, policy=FAST) as router:
        with pytest.raises(errors.SourceUnavailable) as info:
            router.get_secret("other/db/password")
        assert "down by config" in info.value.message
    text = TWO_KV.replace('prefix = "team/"\nsource = "team-a"', 'prefix = "team/"\nsource = "absent"')
    with SourceRouter.open(parse_sources(text + '[default]\nsource = "down"\nfallback = "team-a"\n'), plugins_dir) as router:
        with pytest.raises(errors.SourceUnavailable) as info:
            router.get_secret("team/db/password")
        assert "'absent'" in info.value.message and "devboy-source-not-installed.toml" in info.value.message


def test_a_failing_fallback_raises_its_own_error(plugins_dir: Path) -> None:
    with SourceRouter.open(_with_default("absent", "down"), plugins_dir, policy=FAST) as router:
        with pytest.raises(errors.SourceUnavailable) as info:
            router.get_secret("other/db/password")
        assert info.value.message.startswith("Default source 'absent' and its fallback 'down' are both unavailable")
        assert "devboy-source-not-installed.toml" in info.value.message and "down by config" in info.value.message
        assert isinstance(info.value.__cause__, errors.SourceUnavailable)


def test_status_and_the_protocol_over_the_whole_router(plugins_dir: Path) -> None:
    with SourceRouter.open(_with_default("team-a"), plugins_dir, policy=FAST) as router:
        status = router.status()
        assert list(status) == ["team-a", "team-b", "down", "locked", "absent", "damaged"]
        assert [status[n].status for n in status] == [
            AvailabilityStatus.AVAILABLE,
            AvailabilityStatus.AVAILABLE,
            AvailabilityStatus.UNAVAILABLE,
            AvailabilityStatus.NEEDS_CREDENTIAL,
            AvailabilityStatus.UNAVAILABLE,
            AvailabilityStatus.UNAVAILABLE,
        ]
        overall = router.is_available()
        assert overall.status is AvailabilityStatus.UNAVAILABLE and "absent" in (overall.detail or "")
        assert "checksum" in (status["damaged"].detail or "").lower()
        with pytest.raises(errors.SourceUnsupportedCapability):
            router.list()
        with pytest.raises(errors.SourceUnsupportedCapability):
            router.key_material("signing")
        assert router.put("team/db/password", "new") is False
        with pytest.raises(errors.UnknownSource):
            router.source("nope")
        assert "secret" not in repr(router).lower()


def test_the_cache_is_per_source(plugins_dir: Path) -> None:
    with SourceRouter.open(_with_default("team-a"), plugins_dir, policy=FAST, cache=True) as router:
        first = router.get_secret("pinned/one/secret")
        pid = router.source("team-b").client.health().pid  # type: ignore[attr-defined]
        second = router.get_secret("pinned/one/secret")
        assert first is not None and second is not None
        assert first.value.get_secret_value() == second.value.get_secret_value()
        assert router.source("team-b").cache is not None  # type: ignore[attr-defined]
        assert len(router.source("team-b").cache) == 1  # type: ignore[attr-defined]
        assert router.source("team-a").cache is not router.source("team-b").cache  # type: ignore[attr-defined]
        assert pid is not None


def test_clients_the_host_made_and_names_it_does_not_define(plugins_dir: Path) -> None:
    cfg = _with_default("team-a")
    found, missing = find_source_plugins(cfg, plugins_dir)
    assert sorted(found) == ["down", "locked", "team-a", "team-b"]
    assert isinstance(missing["absent"], errors.SourcePluginMissing) and missing["absent"].plugin == "not-installed"
    assert isinstance(missing["damaged"], errors.ChecksumMismatch)
    client = PluginClient(found["team-a"], policy=FAST, source_name="team-a", config=cfg.source("team-a").init_config())
    try:
        router = SourceRouter(cfg, {"team-a": client}, missing=missing)
        secret = router.get_secret("team/db/password")
        assert secret is not None and secret.value.get_secret_value().endswith(":alpha")
        router.close()  # not owned: the client stays usable
        assert client.get("team/db/password").value.get_secret_value().endswith(":alpha")
        with pytest.raises(ValueError, match="'typo'"):
            SourceRouter(cfg, {"typo": client})
    finally:
        client.shutdown()


def test_policies_by_source_or_by_plugin(plugins_dir: Path, tmp_path: Path) -> None:
    own, per_type = LifetimePolicy(request_timeout=3.0), LifetimePolicy(request_timeout=4.0)
    cfg = _with_default("team-a")
    with SourceRouter.open(cfg, plugins_dir, policy=FAST, policies={"team-b": own, "kv": per_type}) as router:
        timeouts = {n: router.source(n).client.policy.request_timeout for n in ("team-a", "team-b")}  # type: ignore[attr-defined]
    assert timeouts == {"team-a": 4.0, "team-b": 3.0}
    with SourceRouter.open(cfg, tmp_path / "nowhere", policy=FAST) as router:
        with pytest.raises(errors.SourceUnavailable, match="which do not exist"):
            router.get_secret("team/db/password")


def test_settings_values_stay_out_of_reprs() -> None:
    cfg = parse_sources('[[source]]\nname = "a"\ntype = "kv"\ntoken = "s3cr3t"\n[[route]]\nprefix = "t/"\nsource = "a"\nk = "s3cr3t"\n')
    assert "s3cr3t" not in repr(cfg) and "'token'" in repr(cfg.sources[0])
    assert cfg.source("a").init_config() == {"token": "s3cr3t"}


def test_the_asyncio_router(plugins_dir: Path) -> None:
    async def main() -> None:
        cfg = _with_default("absent", "team-a")
        async with AsyncSourceRouter.open(cfg, plugins_dir, policy=FAST, cache=True) as router:
            a, b = await asyncio.gather(router.get_secret("team/db/password"), router.get_secret("team/b/password"))
            assert a is not None and b is not None
            (na, pa, va), (nb, pb, vb) = _who(a.value.get_secret_value()), _who(b.value.get_secret_value())
            assert (na, va, nb, vb) == ("team-a", "alpha", "team-b", "beta") and pa != pb
            assert b.lease is not None and b.lease.total_seconds() == 300
            assert await router.get_secret("other/db/password") is None  # the fallback answered
            assert await router.get_secret("team/db/nothing") is None
            with pytest.raises(errors.NeedsCredential):
                await router.source("locked").get("x/y/z")
            assert await router.validate("team/db/password") is True
            status = await router.status()
            assert status["team-a"].available and not status["down"].available
            assert not (await router.is_available()).available
            clients = [router.source(n).client for n in ("team-a", "team-b", "down", "locked")]
        assert all(c.health().pid is None for c in clients)
        # An async client the host made, under its own source name.
        found, missing = find_source_plugins(cfg, plugins_dir)
        client = AsyncPluginClient(found["team-b"], policy=FAST, source_name="team-b", config=cfg.source("team-b").init_config())
        try:
            router2 = AsyncSourceRouter(cfg, {"team-b": client}, missing=missing)
            with pytest.raises(errors.SourceUnavailable):
                await router2.get_secret("team/db/password")  # team-a has no client here
            secret = await router2.get_secret("pinned/one/secret")
            assert secret is not None and secret.value.get_secret_value().endswith(":from-b")
        finally:
            await client.shutdown()

    asyncio.run(main())


def test_secrets_stay_out_of_reprs_and_messages(plugins_dir: Path) -> None:
    with SourceRouter.open(_with_default("team-a"), plugins_dir, policy=FAST) as router:
        secret = router.get_secret("team/db/password")
        assert secret is not None
        for text in (repr(secret), str(secret), repr(router), repr(router.resolve("team/db/password"))):
            assert "alpha" not in text


# --- the pre-flight ---------------------------------------------------------------------


def test_preflight_reports_every_source_and_rule(plugins_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(
        TWO_KV
        + '\n[[source]]\nname = "hung-1"\ntype = "kv"\ndown = "hang"\n'
        + '[[source]]\nname = "hung-2"\ntype = "kv"\ndown = "hang"\n'
        + '[default]\nsource = "absent"\nfallback = "team-a"\n'
    )
    report = preflight_sources(path, plugins_dir, timeout=1.0, paths=["team/b/x", "bad"])
    assert report["schema_version"] == 1 and report["valid"] and report["file"] == str(path)
    by_name: Dict[str, Any] = {s["name"]: s for s in report["sources"]}
    assert by_name["team-a"]["status"] == "available" and by_name["team-a"]["plugin"]["found"]
    assert by_name["down"]["status"] == "unavailable" and "down by config" in by_name["down"]["detail"]
    assert by_name["locked"]["status"] == "needs-credential"
    assert by_name["absent"]["status"] is None
    assert by_name["absent"]["plugin"] == {
        "found": False, "manifest": None,
        "error": {"type": "SourcePluginMissing", "message": by_name["absent"]["plugin"]["error"]["message"]},
    }
    assert by_name["damaged"]["plugin"]["error"]["type"] == "ChecksumMismatch"
    for hung in ("hung-1", "hung-2"):
        assert by_name[hung]["status"] == "unavailable" and "did not answer" in by_name[hung]["detail"]
    rules = [(r["rule"], r["subject"], r["source"], r["ok"]) for r in report["rules"]]
    assert rules == [
        ("secret", "pinned/one/secret", "team-b", True),
        ("route", "team/", "team-a", True),
        ("route", "team/b/", "team-b", True),
        ("default", None, "absent", True),  # through its fallback
    ]
    assert report["paths"][0]["source"] == "team-b" and report["paths"][0]["rule"] == "route"
    assert report["paths"][1]["error"]["type"] == "BadSecretPath"
    assert report["healthy"] is False  # a path did not resolve
    assert json.loads(json.dumps(report)) == report  # JSON-ready as it is
    assert preflight_sources(path, plugins_dir, timeout=1.0)["healthy"] is True


def test_preflight_of_an_invalid_or_missing_file(tmp_path: Path, plugins_dir: Path) -> None:
    bad = tmp_path / "sources.toml"
    bad.write_text('[[route]]\nprefix = "t"\nsource = "x"\n')
    with pytest.raises(ValueError, match="timeout"):
        preflight_sources(bad, plugins_dir, timeout=0)
    report = preflight_sources(bad, plugins_dir)
    assert report["valid"] is False and report["healthy"] is False
    assert [p["type"] for p in report["problems"]] == ["BadRoutePrefix", "UndefinedSource"]
    assert report["problems"][0]["subject"] == "route 1 (prefix 't')"
    missing = preflight_sources(tmp_path / "none.toml", plugins_dir)
    assert missing["valid"] is False and missing["problems"][0]["type"] == "SourcesFileError"
    unroutable = tmp_path / "down.toml"
    unroutable.write_text(TWO_KV.replace('source = "team-a"', 'source = "down"'))
    report = preflight_sources(unroutable, plugins_dir, timeout=2.0)
    assert report["valid"] and report["healthy"] is False
    assert [r["ok"] for r in report["rules"] if r["rule"] == "route"] == [False, True]
    assert os.path.isdir(report["plugins_dirs"][0])

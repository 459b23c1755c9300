"""The SecretSource adapter: typed values, one exception per error kind, client failures
as SourceUnavailable with the cause chained, and a lease-honouring cache."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Type

import pytest
from pydantic import SecretBytes, SecretStr

from plugin_client import errors
from plugin_client.client import PluginClient
from plugin_client.manifest import LoadedPlugin
from plugin_client.policy import LifetimePolicy
from plugin_client.protocol import AvailabilityStatus, Capability
from plugin_client.source import LeaseCache, PluginSecretSource, Secret, SecretRef, SecretSource, SourceStatus

from conformance import make_sdk_plugin
from plugin_factory import make_plugin

FAST = LifetimePolicy(request_timeout=5.0, start_timeout=10.0, shutdown_grace=1.0, exit_wait=0.5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> LoadedPlugin:
    return make_sdk_plugin(tmp_path_factory.mktemp("sdk"))


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> LoadedPlugin:
    return make_plugin(tmp_path_factory.mktemp("echo"))


@pytest.fixture
def sources() -> Iterator[Callable[..., PluginSecretSource]]:
    made: List[PluginClient] = []

    def make(plugin: LoadedPlugin, *, policy: LifetimePolicy = FAST, cache: Any = False,
             config: Optional[dict] = None, **kw: Any) -> PluginSecretSource:  # type: ignore[type-arg]
        client = PluginClient(plugin, policy=policy, config=config, **kw)
        made.append(client)
        return PluginSecretSource(client, cache=cache)

    yield make
    for c in made:
        c.shutdown()


# --- values ---------------------------------------------------------------------------------


def test_values_and_the_protocol(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    src = sources(sdk, source_name="team-vault", config={"entries": 2})
    assert isinstance(src, SecretSource)
    assert src.name == "team-vault"
    assert src.capabilities & Capability.READ  # starts the plugin to learn them
    assert src.client.health().spawn_count == 1

    secret = src.get("value:s3cr3t-value")
    assert isinstance(secret, Secret) and isinstance(secret.value, SecretStr)
    assert secret.value.get_secret_value() == "s3cr3t-value" and secret.lease is None
    assert src.get("lease:30") == Secret(value=SecretStr("leased"), lease=timedelta(seconds=30))
    assert src.get("missing") is None

    assert src.list() == [SecretRef(reference="ref-0"), SecretRef(reference="ref-1")]
    assert src.validate("good") is True and src.validate("bad") is False
    assert src.put("k", "v") is False and src.put("k", SecretStr("v2")) is True
    assert src.delete("k") is True and src.delete("k") is False
    key = src.key_material("kek")
    assert isinstance(key, SecretBytes) and key.get_secret_value() == (b"kek" * 32)[:32]
    assert src.is_available() == SourceStatus(status=AvailabilityStatus.AVAILABLE)
    assert src.is_available().available


def test_secrets_never_in_reprs_or_messages(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    src = sources(sdk, cache=True, config={"caps": int(Capability.READ | Capability.KEY_SOURCE)})
    secret = src.get("lease:60")
    assert secret is not None and secret.value.get_secret_value() == "leased"
    texts = [repr(secret), str(secret), repr(src), repr(src.cache), repr(src.key_material("zz")), repr(src.get("lease:60"))]
    assert not any("leased" in t or "zzzz" in t for t in texts), texts
    with pytest.raises(errors.SourceUnsupportedCapability) as ei:
        src.put("k", SecretStr("hunter2-put"))
    assert "hunter2" not in str(ei.value) and "hunter2" not in repr(ei.value)


def test_capabilities_known_after_start_do_not_restart(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    src = sources(sdk, config={"caps": int(Capability.READ | Capability.VALIDATE)})
    assert src.capabilities == Capability.READ | Capability.VALIDATE
    pid = src.client.health().pid
    assert src.capabilities == Capability.READ | Capability.VALIDATE
    assert src.client.health().pid == pid


# --- error mapping: one exception per kind ---------------------------------------------------


@pytest.mark.parametrize(
    "ref, exc_type, kind",
    [
        ("unavailable", errors.SourceUnavailable, "unavailable"),
        ("needs-credential", errors.NeedsCredential, "needs-credential"),
        ("bad", errors.BadReference, "bad-reference"),
        ("unsupported", errors.SourceUnsupportedCapability, "unsupported-capability"),
        ("other", errors.SourceError, "other"),
        ("raise", errors.SourceError, "other"),
    ],
)
def test_every_error_kind_maps_to_its_exception(
    sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource], ref: str, exc_type: Type[Exception], kind: str
) -> None:
    src = sources(sdk)
    with pytest.raises(exc_type) as ei:
        src.get(ref)
    exc = ei.value
    assert type(exc) is exc_type
    assert isinstance(exc, errors.SourceError)
    assert isinstance(exc.__cause__, errors.PluginError) and exc.__cause__.kind == kind
    if isinstance(exc, errors.NeedsCredential):
        assert exc.detail == "run 'vault login'"
    if isinstance(exc, errors.BadReference):
        assert (exc.reference, exc.reason) == ("bad", "must look like a/b")
    if isinstance(exc, errors.SourceUnsupportedCapability):
        assert isinstance(exc, errors.UnsupportedCapability) and exc.capability == "READ"
    assert src.client.health().crashes_in_window == 0  # the plugin's answers keep the process


@pytest.mark.parametrize("ref", ["foreign-error", "unknown-kind"])
def test_foreign_errors_are_source_errors(echo: LoadedPlugin, sources: Callable[..., PluginSecretSource], ref: str) -> None:
    with pytest.raises(errors.SourceError) as ei:
        sources(echo).get(ref)
    assert type(ei.value) is errors.SourceError
    assert isinstance(ei.value.__cause__, errors.PluginError)


def test_not_found_is_none_only_for_get(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    src = sources(sdk)
    assert src.get("missing") is None
    with pytest.raises(errors.BadReference) as ei:
        src.delete("missing")
    assert (ei.value.reference, ei.value.reason) == ("missing", "not found")


def test_host_capability_gate_is_unsupported(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    src = sources(sdk, config={"caps": int(Capability.READ)})
    src.get("value:warm")
    with pytest.raises(errors.SourceUnsupportedCapability) as ei:
        src.put("k", "v")
    assert ei.value.capability == "WRITE"
    assert type(ei.value.__cause__) is errors.UnsupportedCapability
    with pytest.raises(errors.UnsupportedCapability):
        src.list()


# --- client failures -> SourceUnavailable, cause chained ---------------------------------------


def _unavailable(fn: Callable[[], Any], cause: Type[Exception]) -> errors.SourceUnavailable:
    with pytest.raises(errors.SourceUnavailable) as ei:
        fn()
    assert isinstance(ei.value.__cause__, cause), repr(ei.value.__cause__)
    return ei.value


def test_timeout(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    src = sources(sdk, policy=LifetimePolicy(request_timeout=0.3, shutdown_grace=1.0))
    _unavailable(lambda: src.get("hang"), errors.RequestTimeout)
    assert src.get("value:after") is not None


def test_crash_then_disabled(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    src = sources(sdk, policy=LifetimePolicy(restart_cap=2, request_timeout=5.0))
    _unavailable(lambda: src.get("crash"), errors.PluginCrashed)
    _unavailable(lambda: src.get("crash"), errors.PluginCrashed)
    _unavailable(lambda: src.get("value:x"), errors.PluginDisabled)
    status = src.is_available()
    assert status.status is AvailabilityStatus.UNAVAILABLE and "disabled" in (status.detail or "")


def test_spawn_init_protocol_and_closed(echo: LoadedPlugin, tmp_path: Path, sources: Callable[..., PluginSecretSource]) -> None:
    gone = make_plugin(tmp_path / "gone", "gone")
    os.unlink(gone.executable.path)
    _unavailable(lambda: sources(gone).get("x"), errors.SpawnError)
    refusing = sources(echo, config={"init": "refuse"})
    _unavailable(lambda: refusing.get("x"), errors.InitError)
    _unavailable(lambda: refusing.capabilities, errors.InitError)
    _unavailable(lambda: sources(echo).get("garbage"), errors.ProtocolError)
    closed = sources(echo)
    closed.client.shutdown()
    _unavailable(lambda: closed.list(), errors.ClientClosed)


def test_is_available_reports_instead_of_raising(sdk: LoadedPlugin, echo: LoadedPlugin,
                                                  sources: Callable[..., PluginSecretSource]) -> None:
    down = sources(sdk, config={"avail": "unavailable"}).is_available()
    assert down == SourceStatus(status=AvailabilityStatus.UNAVAILABLE, detail="backend is down")
    assert not down.available
    cred = sources(sdk, config={"avail": "needs-credential"}).is_available()
    assert cred.status is AvailabilityStatus.NEEDS_CREDENTIAL and cred.detail == "run 'vault login'"
    broken = sources(echo, config={"init": "crash"}).is_available()
    assert broken.status is AvailabilityStatus.UNAVAILABLE and "init" in (broken.detail or "")


# --- the cache -------------------------------------------------------------------------------------


def _count(src: PluginSecretSource, ref: str) -> int:
    secret = src.get(ref)
    assert secret is not None
    return int(secret.value.get_secret_value())


def test_cache_serves_within_the_lease_and_never_past_it(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    clock = FakeClock()
    src = sources(sdk, cache=LeaseCache(clock=clock))
    first = _count(src, "count:30")
    clock.advance(10)
    hit = src.get("count:30")
    assert hit is not None and int(hit.value.get_secret_value()) == first
    assert hit.lease == timedelta(seconds=20)  # what is left, so the caller cannot overstay
    clock.advance(19.999)
    assert _count(src, "count:30") == first
    clock.advance(0.001)  # exactly at the lease: expired
    assert _count(src, "count:30") == first + 1


@pytest.mark.parametrize("seconds", [86_399_999_999_998, 86_400_000_000_000, 2**64 - 1])
def test_a_huge_lease_is_clamped_not_an_overflow(
    sdk: LoadedPlugin, echo: LoadedPlugin, sources: Callable[..., PluginSecretSource], seconds: int
) -> None:
    """Any u64 ``lease_seconds`` is valid; past what a ``timedelta`` holds it means
    no expiry in practice: ``timedelta.max``, cached and served as such."""
    expected = timedelta.max if seconds >= 86_399_999_999_999 else timedelta(seconds=seconds)
    assert sources(echo).get(f"lease:{seconds}") == Secret(value=SecretStr("leased"), lease=expected)
    clock = FakeClock()
    src = sources(sdk, cache=LeaseCache(clock=clock))
    first = _count(src, f"count:{seconds}")
    clock.advance(10 * 365 * 86400)
    hit = src.get(f"count:{seconds}")
    assert hit is not None and int(hit.value.get_secret_value()) == first
    assert hit.lease is not None and hit.lease > timedelta(days=900_000_000)


@pytest.mark.parametrize("ref", ["count:none", "count:0"])
def test_no_lease_or_zero_lease_is_not_cached(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource], ref: str) -> None:
    src = sources(sdk, cache=True)
    assert _count(src, ref) + 1 == _count(src, ref)
    assert src.cache is not None and len(src.cache) == 0


def test_max_ttl_caps_the_lease(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    clock = FakeClock()
    src = sources(sdk, cache=LeaseCache(max_ttl=5, clock=clock))
    first = _count(src, "count:3600")
    clock.advance(4.9)
    assert _count(src, "count:3600") == first
    clock.advance(0.2)
    assert _count(src, "count:3600") == first + 1


def test_put_and_delete_invalidate(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    src = sources(sdk, cache=True)
    first = _count(src, "count:600")
    assert _count(src, "count:600") == first
    src.put("count:600", "new")
    second = _count(src, "count:600")
    assert second == first + 1
    assert _count(src, "count:600") == second
    src.delete("count:600")
    assert _count(src, "count:600") == second + 1


def test_cache_with_the_real_monotonic_clock(sdk: LoadedPlugin, sources: Callable[..., PluginSecretSource]) -> None:
    src = sources(sdk, cache=True)
    first = _count(src, "count:1")
    assert _count(src, "count:1") == first
    time.sleep(1.05)
    assert _count(src, "count:1") == first + 1


def test_cache_does_not_store_a_read_that_raced_an_invalidation() -> None:
    cache = LeaseCache()
    since = cache.generation("r")
    cache.invalidate("r")  # a put landed while the read was in flight
    assert cache.store("r", Secret(value=SecretStr("stale"), lease=timedelta(seconds=60)), since=since) is False
    assert cache.get("r") is None
    since = cache.generation("r")
    cache.clear()
    assert cache.store("r", Secret(value=SecretStr("stale"), lease=timedelta(seconds=60)), since=since) is False
    assert cache.store("r", Secret(value=SecretStr("fresh"), lease=timedelta(seconds=60))) is True
    with pytest.raises(ValueError):
        LeaseCache(max_ttl=-1)


def test_cache_is_thread_safe_and_never_serves_expired() -> None:
    clock = FakeClock()
    lock = threading.Lock()
    cache = LeaseCache(clock=clock)
    stop = time.monotonic() + 0.5
    problems: List[str] = []

    def writer() -> None:
        i = 0
        while time.monotonic() < stop:
            i += 1
            cache.store(f"r{i % 7}", Secret(value=SecretStr(str(i)), lease=timedelta(seconds=1 + i % 3)))
            if i % 5 == 0:
                cache.invalidate(f"r{i % 7}")
            with lock:
                clock.advance(0.01)

    def reader() -> None:
        while time.monotonic() < stop:
            for n in range(7):
                hit = cache.get(f"r{n}")
                if hit is not None and not (hit.lease and hit.lease > timedelta(0)):
                    problems.append(f"served r{n} with lease {hit.lease}")

    threads = [threading.Thread(target=writer) for _ in range(2)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []

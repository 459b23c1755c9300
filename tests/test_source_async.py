"""AsyncPluginSecretSource: PluginSecretSource's values, errors and cache over an
AsyncPluginClient, with coroutine methods; each adapter refuses the other's client.
Each test runs its own event loop with ``asyncio.run``."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Awaitable, Callable, TypeVar

import pytest
from pydantic import SecretBytes, SecretStr

import plugin_client
from plugin_client import errors
from plugin_client.aio import AsyncPluginClient
from plugin_client.client import PluginClient
from plugin_client.manifest import LoadedPlugin
from plugin_client.policy import LifetimePolicy
from plugin_client.protocol import AvailabilityStatus, Capability
from plugin_client.source import AsyncPluginSecretSource, PluginSecretSource, Secret, SecretRef, SourceStatus

from conformance import make_sdk_plugin
from plugin_factory import make_plugin

FAST = LifetimePolicy(request_timeout=5.0, start_timeout=10.0, shutdown_grace=1.0, exit_wait=0.5)
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> LoadedPlugin:
    return make_sdk_plugin(tmp_path_factory.mktemp("sdk"))


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> LoadedPlugin:
    return make_plugin(tmp_path_factory.mktemp("echo"))


def with_source(plugin: LoadedPlugin, body: Callable[[AsyncPluginSecretSource], Awaitable[T]], *,
                cache: Any = False, **kw: Any) -> T:
    """Run ``body`` with a source over a new client, owned (shut down at the end)."""
    async def main() -> T:
        client = AsyncPluginClient(plugin, policy=kw.pop("policy", FAST), **kw)
        async with AsyncPluginSecretSource(client, cache=cache, owns_client=True) as src:
            return await body(src)

    return run(main())


def test_exported() -> None:
    assert plugin_client.AsyncPluginSecretSource is AsyncPluginSecretSource
    assert "AsyncPluginSecretSource" in plugin_client.__all__


def test_values_and_the_protocol(sdk: LoadedPlugin) -> None:
    async def body(src: AsyncPluginSecretSource) -> None:
        assert src.name == "team-vault" and isinstance(src.client, AsyncPluginClient)
        assert await src.capabilities() & Capability.READ  # starts the plugin to learn them
        assert src.client.health().spawn_count == 1
        secret = await src.get("value:s3cr3t-value")
        assert isinstance(secret, Secret) and secret.value.get_secret_value() == "s3cr3t-value"
        assert secret.lease is None
        assert await src.get("lease:30") == Secret(value=SecretStr("leased"), lease=timedelta(seconds=30))
        assert await src.get("missing") is None
        assert await src.list() == [SecretRef(reference="ref-0"), SecretRef(reference="ref-1")]
        assert await src.validate("good") is True and await src.validate("bad") is False
        assert await src.put("k", "v") is False and await src.put("k", SecretStr("v2")) is True
        assert await src.delete("k") is True and await src.delete("k") is False
        key = await src.key_material("kek")
        assert isinstance(key, SecretBytes) and key.get_secret_value() == (b"kek" * 32)[:32]
        assert await src.is_available() == SourceStatus(status=AvailabilityStatus.AVAILABLE)
        assert "s3cr3t" not in repr(src) and repr(src).startswith("<AsyncPluginSecretSource 'team-vault'")

    with_source(sdk, body, source_name="team-vault", config={"entries": 2})


def test_the_cache_serves_within_the_lease_and_writes_invalidate(sdk: LoadedPlugin) -> None:
    async def body(src: AsyncPluginSecretSource) -> None:
        first = await src.get("lease:60")
        assert first is not None and src.cache is not None and len(src.cache) == 1
        await src.client.shutdown()  # a hit needs no plugin
        again = await src.get("lease:60")
        assert again is not None and again.value.get_secret_value() == "leased"
        assert again.lease is not None and again.lease <= timedelta(seconds=60)
        with pytest.raises(errors.SourceUnavailable):
            await src.put("lease:60", "new")  # the closed client fails it, and still:
        assert len(src.cache) == 0

    with_source(sdk, body, cache=True)


@pytest.mark.parametrize(
    "ref, exc_type, kind",
    [
        ("unavailable", errors.SourceUnavailable, "unavailable"),
        ("needs-credential", errors.NeedsCredential, "needs-credential"),
        ("bad", errors.BadReference, "bad-reference"),
        ("unsupported", errors.SourceUnsupportedCapability, "unsupported-capability"),
        ("other", errors.SourceError, "other"),
    ],
)
def test_every_error_kind_maps_to_its_exception(sdk: LoadedPlugin, ref: str, exc_type: type, kind: str) -> None:
    async def body(src: AsyncPluginSecretSource) -> None:
        with pytest.raises(exc_type) as ei:
            await src.get(ref)
        assert type(ei.value) is exc_type
        assert isinstance(ei.value.__cause__, errors.PluginError) and ei.value.__cause__.kind == kind
        assert src.client.health().crashes_in_window == 0

    with_source(sdk, body)


def test_client_failures_are_unavailable_and_is_available_never_raises(echo: LoadedPlugin) -> None:
    async def body(src: AsyncPluginSecretSource) -> None:
        with pytest.raises(errors.SourceUnavailable) as ei:
            await src.get("crash")
        assert isinstance(ei.value.__cause__, errors.PluginCrashed)
        assert "PluginCrashed" in str(ei.value)
        await src.client.shutdown()
        status = await src.is_available()
        assert status.status is AvailabilityStatus.UNAVAILABLE and status.detail
        with pytest.raises(errors.SourceUnavailable) as closed:
            await src.list()
        assert isinstance(closed.value.__cause__, errors.ClientClosed)

    with_source(echo, body)


def test_the_host_gate_is_unsupported(sdk: LoadedPlugin) -> None:
    async def body(src: AsyncPluginSecretSource) -> None:
        assert await src.capabilities() == Capability.READ
        with pytest.raises(errors.SourceUnsupportedCapability) as ei:
            await src.put("k", SecretStr("hunter2-put"))
        assert ei.value.capability == "WRITE" and "hunter2" not in str(ei.value)

    with_source(sdk, body, config={"caps": int(Capability.READ)})


def test_each_adapter_refuses_the_other_client(echo: LoadedPlugin) -> None:
    aclient = AsyncPluginClient(echo, policy=FAST)
    client = PluginClient(echo, policy=FAST)
    try:
        with pytest.raises(TypeError, match=r"PluginSecretSource takes a PluginClient, not an AsyncPluginClient; "
                                            r"use AsyncPluginSecretSource"):
            PluginSecretSource(aclient)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"AsyncPluginSecretSource takes an AsyncPluginClient, not a PluginClient; "
                                            r"use PluginSecretSource"):
            AsyncPluginSecretSource(client)  # type: ignore[arg-type]
        assert client.health().spawn_count == aclient.health().spawn_count == 0
    finally:
        client.shutdown()
        run(aclient.shutdown())


def test_closing_an_unowned_source_leaves_the_client(echo: LoadedPlugin) -> None:
    async def main() -> None:
        client = AsyncPluginClient(echo, policy=FAST)
        async with AsyncPluginSecretSource(client) as src:
            assert (await src.get("value:x")) is not None
        assert (await client.get("value:y")).value.get_secret_value() == "y"  # still usable
        await client.shutdown()

    run(main())

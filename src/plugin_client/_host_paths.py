"""The whole host of a ``sources.toml`` as one ``SecretSource`` whose references are secret paths.

:class:`HostSecretSource` (a :class:`~plugin_client.PluginHost`'s) and
:class:`AsyncHostSecretSource` (an :class:`~plugin_client.AsyncPluginHost`'s):
each call builds (or reuses) a :class:`~plugin_client.SourceRouter` /
:class:`~plugin_client.AsyncSourceRouter` over the host's *current* routing
file and sources, so the rules (exact override, longest prefix, default, and
the default's fallback when it is unavailable) are the routers' own, and a
``reload()`` is seen at the next call (the host's table counts its applies).
Each source is reached through the host's request methods
(``host.get(name, ...)``), never a client held aside, so a reload's draining
counts these requests too. With a cache, each source has its own
:class:`~plugin_client.LeaseCache`, dropped when a reload replaces or removes
the source.

Deliberately not here: which source serves a path (:mod:`plugin_client.sources`),
the fallback (:mod:`plugin_client.source_router`), the host's entries
(:mod:`plugin_client._host_sources`), and clients, processes and waits (the hosts).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from pydantic import SecretBytes, SecretStr

from ._host_scan import HostEntry
from ._host_sources import no_sources
from .protocol import Capability
from .source import (
    AsyncPluginSecretSource,
    LeaseCache,
    PluginSecretSource,
    Secret,
    SecretRef,
    SourceStatus,
)
from .source_router import AsyncSourceRouter, SourceRouter
from .sources import Resolution

__all__ = ("HostSecretSource", "AsyncHostSecretSource")


# --- the sync host as a SecretSource ------------------------------------------------------


class _Bound:
    """One source of a host as the client that :class:`PluginSecretSource` drives:
    every request goes through the host's request methods. Over an asyncio host
    each method returns the host's coroutine (see :class:`_AsyncBound`)."""

    def __init__(self, host: Any, name: str) -> None:
        self._host = host
        self.name = name

    def health(self) -> Any:
        return self._host[self.name].health()

    def start(self) -> Any:
        return self._host[self.name].start()

    def is_available(self) -> Any:
        return self._host.is_available(self.name)

    def get(self, ref: str) -> Any:
        return self._host.get(self.name, ref)

    def list(self) -> Any:
        return self._host.list(self.name)

    def validate(self, ref: str) -> Any:
        return self._host.validate(self.name, ref)

    def put(self, ref: str, value: Any) -> Any:
        return self._host.put(self.name, ref, value)

    def delete(self, ref: str) -> Any:
        return self._host.delete(self.name, ref)

    def key_material(self, purpose: str) -> Any:
        return self._host.key_material(self.name, purpose)


class _AsyncBound(_Bound):
    """:class:`_Bound` over an asyncio host, for :class:`AsyncPluginSecretSource`,
    which tells an asyncio client by its ``get`` being a coroutine function."""

    async def get(self, ref: str) -> Any:
        return await self._host.get(self.name, ref)


class _RouterCache:
    """The router of the host's current file and sources, rebuilt when a reload
    changed them; each source's adapter (and its cache) kept while its entry is."""

    def __init__(self, host: Any, make: Callable[[str, Optional[LeaseCache]], Any], router: Any,
                 cache: bool, max_ttl: Optional[float], name: Optional[str]) -> None:
        self._host = host
        self._make = make
        self._router_type = router
        self._cache = cache
        self._max_ttl = max_ttl
        self._name = name
        self._generation = -1
        self._router: Any = None
        self._adapters: Dict[str, Tuple[HostEntry, Any]] = {}

    def current(self) -> Any:
        table = self._host._table
        if table.closed:
            raise table.closed_error()
        generation = table.generation
        if self._router is not None and generation == self._generation:
            return self._router
        # One read of each: the sync host's apply() swaps them (never mutates them).
        config, members, broken = table.sources, table.members, table.broken
        if config is None:
            raise no_sources(table.kind)
        adapters: Dict[str, Tuple[HostEntry, Any]] = {}
        for name, member in members.items():
            kept = self._adapters.get(name)
            if kept is not None and kept[0] is member.entry:
                adapters[name] = kept
            else:
                cache = LeaseCache(max_ttl=self._max_ttl) if self._cache else None
                adapters[name] = (member.entry, self._make(name, cache))
        self._adapters = adapters
        self._router = self._router_type(
            config, {n: a for n, (_e, a) in adapters.items()}, missing=broken, name=self._name
        )
        self._generation = generation
        return self._router


class HostSecretSource:
    """A :class:`~plugin_client.PluginHost` made with ``sources=`` as one
    :class:`~plugin_client.SecretSource` whose references are secret paths (module
    docstring): ``get`` resolves and falls back as :class:`~plugin_client.SourceRouter`
    does; ``validate``, ``put`` and ``delete`` go to the resolved source;
    ``is_available`` is every source's; ``list`` and ``key_material`` are
    unsupported (ask the host by source name)."""

    def __init__(self, host: Any, *, cache: bool = False, max_ttl: Optional[float] = None,
                 name: Optional[str] = None) -> None:
        self._lock = threading.Lock()

        def make(src: str, lease_cache: Optional[LeaseCache]) -> PluginSecretSource:
            return PluginSecretSource(_Bound(host, src), cache=lease_cache, name=src)  # type: ignore[arg-type]

        self._routers = _RouterCache(host, make, SourceRouter, cache, max_ttl, name)

    def _router(self) -> SourceRouter:
        with self._lock:
            router: SourceRouter = self._routers.current()
            return router

    def __repr__(self) -> str:
        return f"<HostSecretSource over {self._routers._host!r}>"

    @property
    def name(self) -> str:
        return self._router().name

    def resolve(self, path: str) -> Resolution:
        return self._router().resolve(path)

    @property
    def capabilities(self) -> Capability:
        return self._router().capabilities

    def status(self) -> Dict[str, SourceStatus]:
        return self._router().status()

    def is_available(self) -> SourceStatus:
        return self._router().is_available()

    def get(self, ref: str) -> Optional[Secret]:
        return self._router().get_secret(ref)

    get_secret = get

    def list(self) -> List[SecretRef]:
        return self._router().list()

    def validate(self, ref: str) -> bool:
        return self._router().validate(ref)

    def put(self, ref: str, value: Union[str, SecretStr]) -> bool:
        return self._router().put(ref, value)

    def delete(self, ref: str) -> bool:
        return self._router().delete(ref)

    def key_material(self, purpose: str) -> SecretBytes:
        return self._router().key_material(purpose)


# --- the asyncio host as a SecretSource -----------------------------------------------------


class AsyncHostSecretSource:
    """:class:`HostSecretSource` for an :class:`~plugin_client.AsyncPluginHost`: the
    same decisions and fallback (:class:`~plugin_client.AsyncSourceRouter`'s);
    ``get``, ``get_secret``, ``validate``, ``put``, ``delete``, ``status`` and
    ``is_available`` are coroutines, ``resolve`` is not."""

    def __init__(self, host: Any, *, cache: bool = False, max_ttl: Optional[float] = None,
                 name: Optional[str] = None) -> None:
        def make(src: str, lease_cache: Optional[LeaseCache]) -> AsyncPluginSecretSource:
            return AsyncPluginSecretSource(_AsyncBound(host, src), cache=lease_cache, name=src)  # type: ignore[arg-type]

        # The loop is the only thread that calls it: no lock.
        self._routers = _RouterCache(host, make, AsyncSourceRouter, cache, max_ttl, name)

    def __repr__(self) -> str:
        return f"<AsyncHostSecretSource over {self._routers._host!r}>"

    def _router(self) -> AsyncSourceRouter:
        router: AsyncSourceRouter = self._routers.current()
        return router

    @property
    def name(self) -> str:
        return self._router().name

    def resolve(self, path: str) -> Resolution:
        return self._router().resolve(path)

    async def status(self) -> Dict[str, SourceStatus]:
        return await self._router().status()

    async def is_available(self) -> SourceStatus:
        return await self._router().is_available()

    async def get(self, ref: str) -> Optional[Secret]:
        return await self._router().get_secret(ref)

    get_secret = get

    async def validate(self, ref: str) -> bool:
        return await self._router().validate(ref)

    async def put(self, ref: str, value: Union[str, SecretStr]) -> bool:
        return await self._router().put(ref, value)

    async def delete(self, ref: str) -> bool:
        return await self._router().delete(ref)

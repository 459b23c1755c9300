"""``AsyncPluginHost``: the :class:`~plugin_client.PluginHost` contract for asyncio hosts.

The same constructor (``sources=`` included), lookups, ``health()`` and
``resolve()`` (plain calls: they never wait) and reload semantics as ``PluginHost``, over one
:class:`~plugin_client.AsyncPluginClient` per plugin; the request methods,
``start()``, ``reload()`` and ``shutdown()`` are coroutines. The asyncio
driver of the shared table (:mod:`plugin_client._host_core`): the loop is the
only thread that touches it, so it needs no lock. What waits runs side by
side as tasks: ``start()`` and ``shutdown()`` gather every client's, and a
retired client (removed or replaced by a reload, once its requests in flight
have ended) is shut down in a task of its own, which ``shutdown()`` awaits.
``reload()`` scans (reads and hashes files) in the loop's default executor,
so the loop goes on serving requests meanwhile; the constructor scans in
the caller's thread, as it cannot await.

A host binds to one event loop, as its clients do (each binds to the loop of
its first use).

Deliberately not here: the scan, the comparison, the report, the lookups and
health (shared with the sync host: :mod:`plugin_client._host_base`,
:mod:`plugin_client._host_core`, :mod:`plugin_client._host_scan`), and
everything about one plugin (the client's).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Union

from ._host_base import HostBase
from ._host_core import Member, ReloadReport
from ._host_paths import AsyncHostSecretSource
from ._host_sources import no_sources
from .aio import AsyncPluginClient
from .source import Secret
from .protocol import (
    Call,
    DeleteResult,
    GetResult,
    InitResult,
    IsAvailableResult,
    KeyMaterialResult,
    ListResult,
    PutCall,
    PutResult,
    Result,
    ValidateResult,
)

__all__ = ("AsyncPluginHost",)

_log = logging.getLogger("plugin_client")

_Member = Member[AsyncPluginClient]


class AsyncPluginHost(HostBase[AsyncPluginClient]):
    """Every plugin of ``plugins_dir``, each behind its own :class:`~plugin_client.AsyncPluginClient`.

    Takes exactly the arguments of :class:`~plugin_client.PluginHost`."""

    client_class = AsyncPluginClient

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._stoppers: Set["asyncio.Task[None]"] = set()
        self._reload_lock: Optional[asyncio.Lock] = None  # made in the loop, at the first reload
        self._paths: Optional[AsyncHostSecretSource] = None  # get_secret()'s, made at its first call
        super().__init__(*args, **kwargs)

    async def __aenter__(self) -> AsyncPluginHost:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # --- requests -----------------------------------------------------------------------

    def _leave(self, member: _Member) -> None:
        if self._table.leave(member):
            self._stop_in_background(member)

    async def request(self, name: str, call: Call) -> Result:
        """``AsyncPluginClient.request`` on the plugin ``name``: :class:`~plugin_client.UnknownPlugin`
        if the host has none (any more)."""
        member = self._table.enter(name)
        try:
            result: Result = await member.client.request(call)
            return result
        finally:
            self._leave(member)

    async def is_available(self, name: str) -> IsAvailableResult:
        member = self._table.enter(name)
        try:
            return await member.client.is_available()
        finally:
            self._leave(member)

    async def get(self, name: str, reference: str) -> GetResult:
        member = self._table.enter(name)
        try:
            return await member.client.get(reference)
        finally:
            self._leave(member)

    async def list(self, name: str) -> ListResult:
        member = self._table.enter(name)
        try:
            return await member.client.list()
        finally:
            self._leave(member)

    async def validate(self, name: str, reference: str) -> ValidateResult:
        member = self._table.enter(name)
        try:
            return await member.client.validate(reference)
        finally:
            self._leave(member)

    async def put(self, name: str, reference: str, value: Any) -> PutResult:
        """``value`` is a ``str`` or a ``pydantic.SecretStr``."""
        call = PutCall(reference=reference, value=value)
        del value  # (not in this frame's locals if the request raises)
        member = self._table.enter(name)
        try:
            return await member.client.request(call)
        finally:
            self._leave(member)

    async def delete(self, name: str, reference: str) -> DeleteResult:
        member = self._table.enter(name)
        try:
            return await member.client.delete(reference)
        finally:
            self._leave(member)

    async def key_material(self, name: str, purpose: str) -> KeyMaterialResult:
        member = self._table.enter(name)
        try:
            return await member.client.key_material(purpose)
        finally:
            self._leave(member)

    # --- secret paths (sources=) -------------------------------------------------------

    async def get_secret(self, path: str) -> Optional[Secret]:
        """``PluginHost.get_secret``, awaited."""
        source = self._paths
        if source is None:
            source = self._paths = AsyncHostSecretSource(self)
        return await source.get(path)

    def secret_source(self, *, cache: bool = False, max_ttl: Optional[float] = None) -> AsyncHostSecretSource:
        """``PluginHost.secret_source``, whose ``get`` and the other request methods
        are coroutines."""
        if self._table.sources is None:
            raise no_sources(type(self).__name__)
        return AsyncHostSecretSource(self, cache=cache, max_ttl=max_ttl)

    # --- every plugin at once ---------------------------------------------------------

    async def start(self, names: Optional[Iterable[str]] = None) -> Dict[str, Union[InitResult, Exception]]:
        """Spawn and init every loaded plugin now (or only ``names``), side by side (one
        task each).

        Returns name -> its :class:`~plugin_client.InitResult`, or the error that
        stopped it: one plugin's failure stops no other, and nothing is raised for it.
        A name in ``names`` that the host has no client for raises
        :class:`~plugin_client.UnknownPlugin` before anything starts."""
        wanted = self._table.names() if names is None else sorted(set(names))
        for name in wanted:  # every name checked before any is entered
            self._table.client(name)
        members: List[Tuple[str, _Member]] = [(name, self._table.enter(name)) for name in wanted]

        async def start_one(member: _Member) -> Union[InitResult, Exception]:
            try:
                return await member.client.start()
            except Exception as exc:
                return exc
            finally:
                self._leave(member)

        results = await asyncio.gather(*(start_one(member) for _name, member in members))
        return {name: result for (name, _member), result in zip(members, results)}

    async def reload(self) -> ReloadReport:
        """``PluginHost.reload()``, with the scan (and the sources file's reading) in the
        loop's default executor."""
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        async with self._reload_lock:
            scan = await asyncio.get_running_loop().run_in_executor(None, self._scan)
            report, idle = self._table.apply(scan)
            for member in idle:
                self._stop_in_background(member)
            return report

    async def shutdown(self) -> None:
        """Stop every plugin, side by side, and await the stops of retired clients.
        Idempotent; the host cannot be used afterwards."""
        everyone = self._table.close()
        stops: List[Any] = [_shutdown_client(member) for member in everyone]
        stops.extend(self._stoppers)
        if stops:
            await asyncio.gather(*stops)

    close = shutdown

    # --- retired clients ------------------------------------------------------------------

    def _stop_in_background(self, member: _Member) -> None:
        """Shut a retired, idle client down in a task of its own (kept until it ends)."""
        self._table.stopped(member)
        task = asyncio.get_running_loop().create_task(_shutdown_client(member))
        self._stoppers.add(task)
        task.add_done_callback(self._stoppers.discard)


async def _shutdown_client(member: _Member) -> None:
    try:
        await member.client.shutdown()
    except Exception:  # pragma: no cover - a client's shutdown does not raise; one stop must not stop the others
        _log.exception("AsyncPluginHost: stopping plugin %r failed", member.entry.name)

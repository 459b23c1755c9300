"""``PluginHost``: a directory (or several) of plugins as one object, for threaded hosts.

One :class:`~plugin_client.PluginClient` per plugin that loaded, the request
methods of a client with the plugin's name first, and what a long-running
host needs around them: ``start()`` and ``shutdown()`` of every plugin side
by side, ``health()`` of all without waiting, and ``reload()``, which rescans
the directories and adds, replaces and retires clients while requests run.

The sync driver of the shared table (:mod:`plugin_client._host_core`): the
table's decisions are made under one lock, held only for dictionary work,
never across a request, a spawn or a stop. What waits runs side by side on
threads: ``start()`` and ``shutdown()`` one thread per plugin, and each retired
client's stop (a removed or replaced plugin, once its requests in flight have
ended) on a thread of its own, so the request that drained it, and
``reload()``, never wait for a stubborn plugin; ``shutdown()`` waits for them.

No finalizer of its own: each client has one (a collected client's process is
stopped, and every process at interpreter exit, :mod:`plugin_client._live`),
and a host holds nothing else that runs.

Deliberately not here: the scan, the reload's comparison and report, the
lookups and health (:mod:`plugin_client._host_base`, :mod:`plugin_client._host_core`,
:mod:`plugin_client._host_scan`, shared with :class:`~plugin_client.AsyncPluginHost`),
and everything about one plugin (the client's).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Set, Union

from ._host_base import HostBase
from ._host_core import Member, ReloadReport
from .client import PluginClient
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

__all__ = ("PluginHost",)

_log = logging.getLogger("plugin_client")

_Member = Member[PluginClient]


class PluginHost(HostBase[PluginClient]):
    """Every plugin of ``plugins_dir`` (a path, a list of paths, or None for the default
    directory), each behind its own :class:`~plugin_client.PluginClient`.

    ``policy`` is every client's :class:`~plugin_client.LifetimePolicy` unless
    ``policies`` has one for its name; ``configs`` maps names to ``init`` configs.
    A name in ``policies`` or ``configs`` that matches no plugin is logged as a
    warning, not an error: it applies if such a plugin appears at a ``reload()``.
    ``sources`` (a ``sources.toml``) is not supported yet. ``on_event`` is kept for
    the clients' event hook. Nothing is spawned until a request or ``start()``.
    """

    _client_type = PluginClient

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()  # the table's; never held across a wait
        self._reload_lock = threading.Lock()  # one reload at a time
        self._stoppers: Set[threading.Thread] = set()
        super().__init__(*args, **kwargs)

    def __enter__(self) -> PluginHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # --- requests -----------------------------------------------------------------------

    def _enter(self, name: str) -> _Member:
        with self._lock:
            return self._table.enter(name)

    def _leave(self, member: _Member) -> None:
        with self._lock:
            if self._table.leave(member):
                self._stop_in_background(member)

    def request(self, name: str, call: Call) -> Result:
        """``PluginClient.request`` on the plugin ``name``: :class:`~plugin_client.UnknownPlugin`
        if the host has none (any more)."""
        member = self._enter(name)
        try:
            return member.client.request(call)
        finally:
            self._leave(member)

    def is_available(self, name: str) -> IsAvailableResult:
        member = self._enter(name)
        try:
            return member.client.is_available()
        finally:
            self._leave(member)

    def get(self, name: str, reference: str) -> GetResult:
        member = self._enter(name)
        try:
            return member.client.get(reference)
        finally:
            self._leave(member)

    def list(self, name: str) -> ListResult:
        member = self._enter(name)
        try:
            return member.client.list()
        finally:
            self._leave(member)

    def validate(self, name: str, reference: str) -> ValidateResult:
        member = self._enter(name)
        try:
            return member.client.validate(reference)
        finally:
            self._leave(member)

    def put(self, name: str, reference: str, value: Any) -> PutResult:
        """``value`` is a ``str`` or a ``pydantic.SecretStr``."""
        call = PutCall(reference=reference, value=value)
        del value  # (not in this frame's locals if the request raises)
        member = self._enter(name)
        try:
            return member.client.request(call)
        finally:
            self._leave(member)

    def delete(self, name: str, reference: str) -> DeleteResult:
        member = self._enter(name)
        try:
            return member.client.delete(reference)
        finally:
            self._leave(member)

    def key_material(self, name: str, purpose: str) -> KeyMaterialResult:
        member = self._enter(name)
        try:
            return member.client.key_material(purpose)
        finally:
            self._leave(member)

    # --- every plugin at once ---------------------------------------------------------

    def start(self) -> Dict[str, Union[InitResult, Exception]]:
        """Spawn and init every loaded plugin now, side by side (one thread each).

        Returns name -> its :class:`~plugin_client.InitResult`, or the error that
        stopped it (a :class:`~plugin_client.PluginClientError`): one plugin's failure
        stops no other, and nothing is raised for it."""
        with self._lock:
            members = [(name, self._table.enter(name)) for name in self._table.names()]
        results: Dict[str, Union[InitResult, Exception]] = {}

        def start_one(name: str, member: _Member) -> None:
            try:
                results[name] = member.client.start()
            except Exception as exc:
                results[name] = exc
            finally:
                self._leave(member)

        _side_by_side([(start_one, (name, member)) for name, member in members])
        return dict(sorted(results.items()))

    def reload(self) -> ReloadReport:
        """Rescan the directories: a new manifest adds a client; a changed one (version,
        checksum, executable, allowed variables, or the executable's file) gets a new
        client for new requests; a removed or now broken one is removed. A removed or
        replaced client stops once its requests in flight end, in the background
        (``shutdown()`` waits for it). Returns what changed."""
        with self._reload_lock:
            scan = self._scan()  # file I/O and hashing, outside the table's lock
            with self._lock:
                report, idle = self._table.apply(scan)
                for member in idle:
                    self._stop_in_background(member)
            return report

    def shutdown(self) -> None:
        """Stop every plugin, side by side (one thread each), and wait for the stops of
        retired clients. Idempotent; the host cannot be used afterwards."""
        with self._lock:
            everyone = self._table.close()
            stoppers = list(self._stoppers)
        _side_by_side([(_shutdown_client, (member,)) for member in everyone])
        for thread in stoppers:
            thread.join()

    close = shutdown

    # --- retired clients ------------------------------------------------------------------

    def _stop_in_background(self, member: _Member) -> None:
        """Stop a retired, idle client on a thread of its own. Called under the lock, so
        that ``shutdown()`` sees the thread started, or the member still in the table."""
        self._table.stopped(member)
        thread = threading.Thread(
            target=self._stop_retired, args=(member,), name=f"plugin-host-stop-{member.entry.name}", daemon=True
        )
        self._stoppers.add(thread)
        thread.start()

    def _stop_retired(self, member: _Member) -> None:
        try:
            _shutdown_client(member)
        finally:
            with self._lock:
                self._stoppers.discard(threading.current_thread())


def _shutdown_client(member: _Member) -> None:
    try:
        member.client.shutdown()
    except Exception:  # pragma: no cover - a client's shutdown does not raise; one stop must not stop the others
        _log.exception("PluginHost: stopping plugin %r failed", member.entry.name)


def _side_by_side(jobs: List[Any]) -> None:
    """Run each ``(function, args)`` on a thread of its own (the last on this one) and
    wait for all."""
    threads = []
    for fn, args in jobs[:-1]:
        thread = threading.Thread(target=fn, args=args, name="plugin-host", daemon=True)
        thread.start()
        threads.append(thread)
    if jobs:
        fn, args = jobs[-1]
        fn(*args)
    for thread in threads:
        thread.join()

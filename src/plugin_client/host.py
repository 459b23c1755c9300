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
from typing import Any, Dict, Iterable, List, Optional, Set, Union

from ._host_base import HostBase
from ._host_core import Member, ReloadReport
from ._host_paths import HostSecretSource
from ._host_sources import no_sources
from .client import PluginClient
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
    ``on_event`` is given to every client (:mod:`plugin_client.events`). Nothing
    is spawned until a request or ``start()``.

    ``sources`` (the path of a ``sources.toml``, or a
    :class:`~plugin_client.SourcesConfig`): the host's clients are the file's
    sources instead, each named by the source and running the plugin named by its
    ``type`` with the source's settings as ``init`` config, merged with
    ``configs[source name]`` (the host's keys win); a source's policy is
    ``policies[source name]``, else ``policies[type]``, else ``policy``. Plugins no
    source uses get no client. ``resolve(path)``, ``get_secret(path)`` and
    ``secret_source()`` route secret paths as :class:`~plugin_client.SourceRouter`
    does; ``reload()`` reads the file again.
    """

    client_class = PluginClient

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()  # the table's; never held across a wait
        self._reload_lock = threading.Lock()  # one reload at a time
        self._stoppers: Set[threading.Thread] = set()
        self._paths: Optional[HostSecretSource] = None  # get_secret()'s, made at its first call
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

    # --- secret paths (sources=) -------------------------------------------------------

    def get_secret(self, path: str) -> Optional[Secret]:
        """Resolve the secret ``path`` by the sources file (``resolve()``) and get it from
        the source chosen, through this host's request path; when the ``[default]``
        source is unavailable (not installed, failed, or answering ``unavailable``),
        from its ``fallback``. ``None`` if the source has no such secret. Raises as
        :meth:`~plugin_client.SourceRouter.get_secret` does, and
        :class:`~plugin_client.HostHasNoSources` for a host made without ``sources=``."""
        source = self._paths
        if source is None:
            source = self._paths = HostSecretSource(self)
        return source.get(path)

    def secret_source(self, *, cache: bool = False, max_ttl: Optional[float] = None) -> HostSecretSource:
        """The whole host as one :class:`~plugin_client.SecretSource` whose references are
        secret paths (``get`` is :meth:`get_secret`); ``cache=True`` gives each source
        its own :class:`~plugin_client.LeaseCache` (at most ``max_ttl`` seconds), which a
        ``reload()`` that replaces or removes the source drops. It follows the host's
        reloads; it is not owned: shutting the host down ends it."""
        if self._table.sources is None:
            raise no_sources(type(self).__name__)
        return HostSecretSource(self, cache=cache, max_ttl=max_ttl)

    # --- every plugin at once ---------------------------------------------------------

    def start(self, names: Optional[Iterable[str]] = None) -> Dict[str, Union[InitResult, Exception]]:
        """Spawn and init every loaded plugin now (or only ``names``), side by side (one
        thread each).

        Returns name -> its :class:`~plugin_client.InitResult`, or the error that
        stopped it (a :class:`~plugin_client.PluginClientError`): one plugin's failure
        stops no other, and nothing is raised for it. A name in ``names`` that the host
        has no client for raises :class:`~plugin_client.UnknownPlugin` before anything
        starts."""
        with self._lock:
            wanted = self._table.names() if names is None else sorted(set(names))
            for name in wanted:  # every name checked before any is entered
                self._table.client(name)
            members = [(name, self._table.enter(name)) for name in wanted]
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
        (``shutdown()`` waits for it). Returns what changed.

        With ``sources=`` (a path), the file is read again first: an added source adds
        a client, a removed one is removed, one whose type or settings changed is
        replaced. A file that no longer loads raises its
        :class:`~plugin_client.SourcesFileError` / :class:`~plugin_client.SourcesInvalid`
        and leaves the host exactly as it was."""
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

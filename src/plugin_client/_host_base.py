"""``HostBase``: what the sync and the asyncio host share around their table: the constructor and every member that does not wait.

The constructor takes the hosts' common arguments, scans the plugins
directories once (:func:`~plugin_client._host_scan.scan_plugins_dirs`) and
fills the table (:class:`~plugin_client._host_core.HostTable`); the lookups
(``names()``, ``broken``, ``dir_errors``, ``host[name]``, ``in``, ``iter``,
``len``) and ``health()`` read it. Nothing here spawns or waits on a plugin.

With ``sources=`` (a ``sources.toml``), the entries come from the file
(:func:`~plugin_client._host_sources.scan_sources`: one per source) and
``resolve()`` decides a path by it.

Deliberately not here: requests, ``start()``, ``reload()``, ``shutdown()`` and
``get_secret()``, which wait (the drivers, :mod:`plugin_client.host` with threads
and :mod:`plugin_client.aio_host` on the event loop).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Dict, Generic, Iterator, Mapping, Optional, Tuple, Type, Union

from ._host_core import C, HostTable, client_kwargs
from ._host_scan import HostEntry, PluginsDirArg, Scan, plugins_dirs, scan_plugins_dirs
from ._host_sources import resolve_on, scan_sources
from .errors import PluginClientError, PluginsDirUnavailable
from .health import PluginHealth
from .policy import LifetimePolicy
from .sources import Resolution, SourcesConfig, load_sources

_log = logging.getLogger("plugin_client")

__all__ = ("HostBase",)


class HostBase(Generic[C]):
    """The constructor and the non-waiting members of both hosts (see the module docstring)."""

    # The class of the clients the host makes: PluginClient or AsyncPluginClient,
    # or a subclass with the same constructor (the doctor's probing client).
    client_class: Type[Any]

    def __init__(
        self,
        plugins_dir: PluginsDirArg = None,
        *,
        sources: Union[None, str, "os.PathLike[str]", SourcesConfig] = None,
        policy: Optional[LifetimePolicy] = None,
        policies: Optional[Mapping[str, LifetimePolicy]] = None,
        configs: Optional[Mapping[str, Mapping[str, Any]]] = None,
        on_event: Optional[Callable[..., None]] = None,
    ) -> None:
        self._dirs = plugins_dirs(plugins_dir)
        # A path is read again by every reload(); a SourcesConfig is fixed.
        self._sources_arg: Union[None, SourcesConfig, Path] = (
            sources if sources is None or isinstance(sources, SourcesConfig) else Path(sources)
        )
        self._policy = policy
        self._policies: Dict[str, LifetimePolicy] = dict(policies or {})
        self._configs: Dict[str, Mapping[str, Any]] = dict(configs or {})
        # Passed to every client (client_kwargs).
        self._on_event = on_event
        # A plain function, not a bound method: the table holds no reference back
        # to the host, so a host dropped without shutdown() is freed at once and
        # its clients' finalizers stop their processes.
        self._table: HostTable[C] = HostTable(
            self._dirs, functools.partial(_new_client, self.client_class, on_event), kind=type(self).__name__
        )
        self._table.apply(self._scan())
        if self._sources_arg is None:
            self._table.warn_unused("policies", self._policies)
            self._table.warn_unused("configs", self._configs)
        else:
            self._warn_unused_by_sources()

    def _scan(self) -> Scan:
        """The directories (and the sources file, if any) scanned into entries: file
        I/O and hashing, no state change. An invalid sources file raises here, before
        anything changes."""
        if self._sources_arg is None:
            return scan_plugins_dirs(self._dirs, policy=self._policy, policies=self._policies, configs=self._configs)
        config = self._sources_arg if isinstance(self._sources_arg, SourcesConfig) else load_sources(self._sources_arg)
        return scan_sources(self._dirs, config, policy=self._policy, policies=self._policies, configs=self._configs)

    def _warn_unused_by_sources(self) -> None:
        config = self._table.sources
        names = set(config.names()) if config is not None else set()
        types = {src.type for src in config.sources} if config is not None else set()
        for what, keys, known in (("policies", self._policies, names | types), ("configs", self._configs, names)):
            for key in keys:
                if key not in known:
                    _log.warning(
                        "%s: %s names %r, which is not a source of %r; it applies if such a source appears "
                        "at a reload()",
                        type(self).__name__, what, key, config.origin if config is not None else None,
                    )

    # --- secret paths (sources=) ----------------------------------------------------------

    @property
    def sources(self) -> Optional[SourcesConfig]:
        """The routing file in use (as of the last ``reload()``), or None for a host made
        without ``sources=``."""
        return self._table.sources

    def resolve(self, path: str) -> Resolution:
        """Which source serves the secret ``path``, the reference it gets and the rule that
        matched (exact ``[secret]``, longest ``[[route]]`` prefix, ``[default]``), without
        calling a plugin. :class:`~plugin_client.NoRoute` if nothing covers it,
        :class:`~plugin_client.HostHasNoSources` for a host made without ``sources=``."""
        return resolve_on(self._table.sources, type(self).__name__, path)

    # --- lookups ----------------------------------------------------------------------

    @property
    def plugins_dirs(self) -> Tuple[Path, ...]:
        """The directories scanned, first (winning a duplicate name) first."""
        return tuple(self._dirs)

    def names(self) -> Tuple[str, ...]:
        """The names of the loaded plugins, sorted."""
        return self._table.names()

    @property
    def broken(self) -> Mapping[str, PluginClientError]:
        """Each manifest or executable that did not load: name -> its typed error. A
        manifest whose file name gives no plugin name, and a duplicate that an earlier
        directory shadows (:class:`~plugin_client.DuplicatePlugin`), are keyed by the
        manifest's path. With ``sources=``: each source without a client, by the
        source's name: its plugin's manifest error, or
        :class:`~plugin_client.SourcePluginMissing` if none is installed. A read-only
        snapshot."""
        return MappingProxyType(dict(self._table.broken))

    @property
    def dir_errors(self) -> Mapping[str, PluginsDirUnavailable]:
        """Each plugins directory that is missing or cannot be read, by its path: no
        plugin of it is loaded. A read-only snapshot."""
        return MappingProxyType(dict(self._table.dir_errors))

    def __getitem__(self, name: str) -> C:
        """The client of ``name``; :class:`~plugin_client.UnknownPlugin` (a ``KeyError``)
        if there is none. A client taken this way is used outside the host's count of
        requests in flight: after a ``reload()`` removes or replaces it, it may be shut
        down under you (its requests then raise ``ClientClosed``)."""
        return self._table.client(name)

    def __contains__(self, name: object) -> bool:
        return name in self._table.members

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.names())

    def __len__(self) -> int:
        return len(self._table.members)

    def health(self) -> Dict[str, PluginHealth]:
        """name -> each loaded plugin's :class:`~plugin_client.PluginHealth`. Never waits
        on a plugin (nor on a request in flight), from any thread."""
        return self._table.health()

    def __repr__(self) -> str:
        dirs = ", ".join(repr(str(d)) for d in self._dirs)
        state = "closed" if self._table.closed else f"{len(self._table.members)} plugins"
        return f"<{type(self).__name__} [{dirs}] {state}, {len(self._table.broken)} broken>"


def _new_client(client_type: Type[Any], on_event: Optional[Callable[..., None]], entry: HostEntry) -> Any:
    return client_type(entry.plugin, **client_kwargs(entry, on_event))

"""A host of ``sources.toml`` sources: its entries, one per source.

:func:`scan_sources` is the hosts' second builder of entries (the first,
:func:`~plugin_client._host_scan.scan_plugins_dirs`, makes one per plugin): one
:class:`~plugin_client._host_scan.HostEntry` per ``[[source]]`` of the file,
named by the source, running the plugin named by its ``type`` (found in the
host's plugins directories as the first builder finds plugins), with
``source_name`` = the source's name and as ``init`` config the source's
settings, over which the host's ``configs[source name]`` is merged key by key
(the host's keys win: a host injects what the file should not hold, such as a
token). Its policy: ``policies[source name]``, else ``policies[type]``, else
the host's ``policy``. A source whose plugin is not installed is broken under
its own name with a :class:`~plugin_client.SourcePluginMissing`; one whose
plugin's manifest does not load, with that manifest's error. Plugins that no
source names get no entry.

:func:`no_sources` and :func:`resolve_on` are the decisions a host of either
kind makes without waiting.

Deliberately not here: reading or checking the file (:mod:`plugin_client.sources`),
clients, locks and waits (the hosts), and the host as a ``SecretSource`` of
paths (:mod:`plugin_client._host_paths`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ._host_scan import HostEntry, Scan, load_plugins_dirs
from .errors import HostHasNoSources, PluginClientError, SourcePluginMissing
from .manifest import DEFAULT_PREFIX
from .policy import LifetimePolicy
from .sources import Resolution, SourcesConfig

__all__ = ("scan_sources", "no_sources", "resolve_on")


def scan_sources(
    dirs: Sequence[Path],
    config: SourcesConfig,
    *,
    policy: Optional[LifetimePolicy] = None,
    policies: Optional[Mapping[str, LifetimePolicy]] = None,
    configs: Optional[Mapping[str, Mapping[str, Any]]] = None,
    prefix: str = DEFAULT_PREFIX,
) -> Scan:
    """One entry per source of ``config`` (module docstring). Never raises for a
    directory's, a manifest's or a missing plugin's problem: each is in the
    returned :class:`Scan`."""
    scan = Scan(sources=config)
    default = policy if policy is not None else LifetimePolicy()
    policies = policies or {}
    configs = configs or {}
    everything = Scan()
    loaded = load_plugins_dirs(dirs, prefix, everything)
    scan.dir_errors = everything.dir_errors
    used = {src.type for src in config.sources}
    for key, problem in everything.broken.items():
        # A duplicate (keyed by its path) matters only for a plugin some source runs.
        if "/" in key and problem.plugin in used:
            scan.broken[key] = problem
    for src in config.sources:
        plugin = loaded.get(src.type)
        if plugin is None:
            err: Optional[PluginClientError] = everything.broken.get(src.type)
            if err is None:
                where = ", ".join(repr(str(d)) for d in dirs)
                err = SourcePluginMissing(
                    f"Source {src.name!r} runs plugin {src.type!r}, but no {src.manifest_file} loads from {where}; "
                    "install the plugin there (then call reload()) or fix the source's type",
                    source=src.name,
                    plugin=src.type,
                    origin=config.origin,
                )
            scan.broken[src.name] = err
            continue
        init_config = src.init_config()
        init_config.update(configs.get(src.name) or {})
        own = policies.get(src.name, policies.get(src.type, default))
        scan.entries[src.name] = HostEntry(
            name=src.name, plugin=plugin, policy=own, source_name=src.name, config=init_config
        )
    return scan


def no_sources(kind: str) -> HostHasNoSources:
    """The error of a host made without ``sources=`` asked to route a path."""
    return HostHasNoSources(
        f"{kind} was made without sources=, so it has no routes; pass sources=PATH (a sources.toml) "
        "to resolve secret paths, or call a plugin by name (host.get(name, reference))"
    )


def resolve_on(config: Optional[SourcesConfig], kind: str, path: str) -> Resolution:
    """``config``'s decision for ``path``; :class:`HostHasNoSources` without one."""
    if config is None:
        raise no_sources(kind)
    return config.resolve(path)

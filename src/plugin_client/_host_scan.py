"""What a host of many plugins runs: its directories scanned into *entries*, one per client.

A :class:`HostEntry` is everything one client of a host is built from: the
host's name for it, the verified plugin it runs, its ``source_name``, ``init``
config and :class:`~plugin_client.LifetimePolicy`. :func:`scan_plugins_dirs`
is the one builder from plugins directories: it loads every manifest of every
directory (``discover_plugins``, one broken manifest never hiding another),
applies the host's ``policies`` / ``configs`` by name, and returns a
:class:`Scan`: the entries, the broken manifests, and the directories that
could not be read. Another builder (a ``sources.toml``: many entries over one
plugin, each its own process) returns the same :class:`Scan`, and the host's
machinery (:mod:`plugin_client._host_core`) takes it from there.

The keys of ``Scan.broken``: a plugin's name when its manifest's file name
gives one (``devboy-source-<name>.toml``); otherwise, and for a duplicate that
an earlier directory shadows, the manifest's path as a string, which can never
be a plugin name (it holds a ``/``). Duplicates: the first directory that has
a manifest of a name wins, even when that manifest is broken, so that a
broken manifest never silently hands its name to an older one further down
the list.

Deliberately not here: clients, processes, and what changed between two
scans (:mod:`plugin_client._host_core`); the manifest checks themselves
(:mod:`plugin_client.manifest`).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ._plugins_dir import default_plugins_dir
from .errors import DuplicatePlugin, ManifestError, ManifestUnreadable, PluginsDirUnavailable
from .manifest import DEFAULT_PREFIX, LoadedPlugin, discover_plugins
from .policy import LifetimePolicy

__all__ = ("HostEntry", "Scan", "PluginsDirArg", "plugins_dirs", "scan_plugins_dirs")

_PathLike = Union[str, "os.PathLike[str]"]
#: A host's ``plugins_dir``: one path, several, or None for the default.
PluginsDirArg = Union[_PathLike, Sequence[_PathLike], None]


@dataclass(frozen=True)
class HostEntry:
    """One client of a host: ``name`` is the host's key for it (a plugin's name, or a
    source's), ``plugin`` what it runs; ``source_name`` (None: the plugin's name),
    ``config`` and ``policy`` what the client is built with. ``config`` stays out of
    the repr: an ``init`` config may hold credentials."""

    name: str
    plugin: LoadedPlugin
    policy: LifetimePolicy
    source_name: Optional[str] = None
    config: Optional[Mapping[str, Any]] = field(default=None, repr=False)

    def changes_to(self, new: HostEntry) -> List[str]:
        """What differs in ``new`` (the same name, a later scan), for a reload's report;
        empty if a client of this entry may go on serving ``new``.

        A file touched or rewritten with the same bytes is no change: the old
        client verifies it again by hash before its next spawn and goes on."""
        old_m, new_m = self.plugin.manifest, new.plugin.manifest
        old_x, new_x = self.plugin.executable, new.plugin.executable
        out: List[str] = []
        if self.plugin.manifest_path != new.plugin.manifest_path:
            out.append(f"manifest {str(self.plugin.manifest_path)!r} -> {str(new.plugin.manifest_path)!r}")
        if old_m.version != new_m.version:
            out.append(f"version {old_m.version!r} -> {new_m.version!r}")
        if old_x.path != new_x.path:
            out.append(f"executable {str(old_x.path)!r} -> {str(new_x.path)!r}")
        if old_x.sha256 != new_x.sha256 or old_m.checksum_sha256 != new_m.checksum_sha256:
            out.append("checksum changed")
        if old_m.allowed_env_vars != new_m.allowed_env_vars:
            out.append("allowed_env_vars changed")
        if self.source_name != new.source_name:
            out.append(f"source_name {self.source_name!r} -> {new.source_name!r}")
        if self.config != new.config:
            out.append("config changed")
        if self.policy != new.policy:
            out.append("policy changed")
        return out


@dataclass
class Scan:
    """One scan's outcome: ``entries`` by name, ``broken`` (see the module docstring
    for its keys), and ``dir_errors``: each directory that could not be read, by its
    path as given."""

    entries: Dict[str, HostEntry] = field(default_factory=dict)
    broken: Dict[str, ManifestError] = field(default_factory=dict)
    dir_errors: Dict[str, PluginsDirUnavailable] = field(default_factory=dict)


def plugins_dirs(plugins_dir: PluginsDirArg) -> List[Path]:
    """A host's ``plugins_dir`` argument as a list of directories, in priority order.
    None: the default directory (``$PLUGIN_CLIENT_PLUGINS_DIR``, else the XDG one)."""
    if plugins_dir is None:
        return [default_plugins_dir()[0]]
    if isinstance(plugins_dir, (str, os.PathLike)):
        return [Path(plugins_dir)]
    dirs = [Path(d) for d in plugins_dir]
    if not dirs:
        raise ValueError("plugins_dir is an empty list; give at least one directory, or None for the default")
    return dirs


def _dir_error(directory: Path) -> Optional[PluginsDirUnavailable]:
    """The directory's problem, if it has one that ``discover_plugins`` would not raise."""
    try:
        os.stat(directory)
    except FileNotFoundError:
        return PluginsDirUnavailable(
            f"Plugins directory {str(directory)!r} does not exist; create it or configure another one",
            path=str(directory),
            errno=errno.ENOENT,
        )
    except OSError as exc:
        return PluginsDirUnavailable(
            f"Plugins directory {str(directory)!r} cannot be read ({exc.strerror}); make it a readable "
            "directory or configure another one",
            path=str(directory),
            errno=exc.errno,
        )
    return None


def _scan_dirs(dirs: Sequence[Path], prefix: str, scan: Scan) -> Dict[str, LoadedPlugin]:
    loaded: Dict[str, LoadedPlugin] = {}
    first: Dict[str, str] = {}  # name -> the manifest that claimed it
    for directory in dirs:
        problem = _dir_error(directory)
        if problem is None:
            try:
                outcomes = discover_plugins(directory, prefix=prefix)
            except ManifestUnreadable as exc:
                problem = PluginsDirUnavailable(exc.message, path=str(directory), errno=exc.errno)
        if problem is not None:
            scan.dir_errors[str(directory)] = problem
            continue
        for outcome in outcomes:
            name, path = outcome.name, str(outcome.manifest_path)
            if name is not None and name in first:
                scan.broken[path] = DuplicatePlugin(
                    f"Manifest {path!r} is not used: plugin {name!r} is already defined by {first[name]!r}, "
                    "in a directory listed earlier; remove one of the two",
                    path=path,
                    kept=first[name],
                    plugin=name,
                )
                continue
            if name is not None:
                first[name] = path
            if outcome.plugin is not None:
                loaded[outcome.plugin.name] = outcome.plugin
            elif outcome.error is not None:
                scan.broken[name if name is not None else path] = outcome.error
    return loaded


def scan_plugins_dirs(
    dirs: Sequence[Path],
    *,
    policy: Optional[LifetimePolicy] = None,
    policies: Optional[Mapping[str, LifetimePolicy]] = None,
    configs: Optional[Mapping[str, Mapping[str, Any]]] = None,
    prefix: str = DEFAULT_PREFIX,
) -> Scan:
    """Scan ``dirs`` (earlier ones win a name) into one entry per loaded plugin.

    Each entry's policy is ``policies[name]``, else ``policy``, else the default
    :class:`~plugin_client.LifetimePolicy`; its config is ``configs[name]`` (None if
    absent). Never raises for a directory's or a manifest's problem: each is in the
    returned :class:`Scan`."""
    scan = Scan()
    default = policy if policy is not None else LifetimePolicy()
    policies = policies or {}
    configs = configs or {}
    for name, plugin in _scan_dirs(dirs, prefix, scan).items():
        scan.entries[name] = HostEntry(
            name=name, plugin=plugin, policy=policies.get(name, default), config=configs.get(name)
        )
    return scan

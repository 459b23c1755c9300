"""What :class:`~plugin_client.PluginHost` and :class:`~plugin_client.AsyncPluginHost` share: the table of clients.

:class:`HostTable` holds a host's members (one client per :class:`HostEntry`
of the last scan), its broken manifests and unreadable directories, and the
members that a reload retired (removed or replaced) but that still have
requests in flight. It makes every decision of a host that waits on nothing:

* **Requests** go through :meth:`HostTable.enter` (the member of a name, its
  in-flight count raised; an unknown or retired name is :class:`UnknownPlugin`)
  and :meth:`HostTable.leave` (the count lowered; True when the member was
  retired and this was its last request, so the driver stops it now).
* **Reloads**: :meth:`HostTable.apply` compares a new :class:`Scan` with the
  members (:meth:`HostEntry.changes_to`), builds the new clients first (so a
  constructor's error changes nothing), then swaps them in and returns the
  :class:`ReloadReport` and the retired members that are idle, to stop.
* **Health** of every member, from the clients' own ``health()``, which never waits.
* :func:`client_kwargs`: the one place a client's keyword arguments are built.

Deliberately not here: threads, locks, the event loop and any wait (the
drivers, :mod:`plugin_client.host` and :mod:`plugin_client.aio_host`: the sync
one calls the table under its lock), and the scan's file I/O
(:mod:`plugin_client._host_scan`, which the drivers call outside any lock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, Sequence, Tuple, TypeVar

from ._client_base import ClientBase
from ._host_scan import HostEntry, Scan
from .errors import ClientClosed, ManifestError, PluginsDirUnavailable, UnknownPlugin
from .health import PluginHealth

__all__ = ("ReloadReport", "Member", "HostTable", "client_kwargs")

_log = logging.getLogger("plugin_client")

C = TypeVar("C", bound=ClientBase)


@dataclass(frozen=True)
class ReloadReport:
    """What a ``reload()`` changed.

    ``added``: names of new clients. ``removed``: name -> why it is gone (its
    manifest was removed, its directory is unavailable, or its manifest no longer
    loads: then it is in ``broken`` too). ``replaced``: name -> what changed; a new
    client serves the name's new requests. A removed or replaced client stops once
    its requests in flight end. ``broken`` and ``dir_errors`` are the host's, after
    the reload (the same as ``host.broken`` and ``host.dir_errors``)."""

    added: Tuple[str, ...] = ()
    removed: Mapping[str, str] = field(default_factory=dict)
    replaced: Mapping[str, str] = field(default_factory=dict)
    broken: Mapping[str, ManifestError] = field(default_factory=dict)
    dir_errors: Mapping[str, PluginsDirUnavailable] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"ReloadReport(added={self.added!r}, removed={dict(self.removed)!r}, replaced={dict(self.replaced)!r}, "
            f"broken={dict(self.broken)!r}, dir_errors={dict(self.dir_errors)!r})"
        )

    @property
    def changed(self) -> bool:
        """Whether any client was added, removed or replaced."""
        return bool(self.added or self.removed or self.replaced)


class Member(Generic[C]):
    """One client of a host and its requests in flight through the host."""

    __slots__ = ("entry", "client", "inflight", "retired")

    def __init__(self, entry: HostEntry, client: C) -> None:
        self.entry = entry
        self.client = client
        self.inflight = 0
        self.retired = False


def client_kwargs(entry: HostEntry, on_event: Optional[Callable[..., None]]) -> Dict[str, Any]:
    """The keyword arguments of the client of ``entry`` (after the plugin itself)."""
    kwargs: Dict[str, Any] = {"policy": entry.policy, "source_name": entry.source_name, "config": entry.config}
    if on_event is not None:
        kwargs["on_event"] = on_event
    return kwargs


def _removed_reason(entry: HostEntry, scan: Scan) -> str:
    path = entry.plugin.manifest_path
    for directory, problem in scan.dir_errors.items():
        if Path(directory) == path.parent:
            return f"its plugins directory {directory!r} is unavailable: {problem.message}"
    if entry.name in scan.broken:
        err = scan.broken[entry.name]
        return f"its manifest no longer loads ({type(err).__name__}); see broken[{entry.name!r}]"
    return f"its manifest {str(path)!r} is gone"


class HostTable(Generic[C]):
    """A host's clients by name, its broken manifests, and its retired clients (see the module docstring).

    ``make_client(entry)`` builds a client; ``kind`` names the host in messages."""

    def __init__(
        self,
        dirs: Sequence[Path],
        make_client: Callable[[HostEntry], C],
        *,
        kind: str,
    ) -> None:
        self.dirs = list(dirs)
        self.kind = kind
        self._make_client = make_client
        self.members: Dict[str, Member[C]] = {}
        self.broken: Dict[str, ManifestError] = {}
        self.dir_errors: Dict[str, PluginsDirUnavailable] = {}
        self.retired: List[Member[C]] = []
        self.closed = False

    # --- requests -----------------------------------------------------------------

    def unknown(self, name: str) -> UnknownPlugin:
        """The error for a name with no client."""
        err = self.broken.get(name)
        if err is not None:
            return UnknownPlugin(
                f"Plugin {name!r} did not load: {err.message} (host.broken[{name!r}]); fix it and call reload()",
                name=name,
            )
        loaded = ", ".join(repr(n) for n in sorted(self.members)) or "none"
        where = ", ".join(repr(str(d)) for d in self.dirs)
        return UnknownPlugin(
            f"{self.kind} has no plugin {name!r} (loaded: {loaded}); install its manifest in {where} "
            "and call reload(), or use one of the loaded names",
            name=name,
        )

    def closed_error(self) -> ClientClosed:
        return ClientClosed(f"{self.kind} was shut down; make a new one")

    def enter(self, name: str) -> Member[C]:
        """The member that serves ``name``, with one more request in flight."""
        member = self.members.get(name)
        if member is None:
            if self.closed:
                raise self.closed_error()
            raise self.unknown(name)
        member.inflight += 1
        return member

    def leave(self, member: Member[C]) -> bool:
        """One request of ``member`` ended. True: it was retired and was the last one,
        so the caller stops the client now (and calls :meth:`stopped`)."""
        member.inflight -= 1
        return member.retired and member.inflight == 0 and not self.closed

    def stopped(self, member: Member[C]) -> None:
        """A retired member's client was stopped."""
        try:
            self.retired.remove(member)
        except ValueError:
            pass

    def client(self, name: str) -> C:
        member = self.members.get(name)
        if member is None:
            if self.closed:
                raise self.closed_error()
            raise self.unknown(name)
        return member.client

    # --- reloads ------------------------------------------------------------------

    def apply(self, scan: Scan) -> Tuple[ReloadReport, List[Member[C]]]:
        """Make ``scan`` the host's: returns the report and the retired members that
        have no request in flight (the caller stops them)."""
        if self.closed:
            raise self.closed_error()
        added: List[str] = []
        replaced: Dict[str, str] = {}
        removed: Dict[str, str] = {}
        fresh: Dict[str, HostEntry] = {}
        for name, entry in scan.entries.items():
            old = self.members.get(name)
            if old is None:
                added.append(name)
                fresh[name] = entry
                continue
            changes = old.entry.changes_to(entry)
            if changes:
                replaced[name] = "; ".join(changes)
                fresh[name] = entry
        for name, member in self.members.items():
            if name not in scan.entries:
                removed[name] = _removed_reason(member.entry, scan)
        # Every new client is built before anything changes, so that a
        # constructor's error (a config the init call cannot carry) leaves the
        # host as it was.
        built = {name: Member(entry, self._make_client(entry)) for name, entry in sorted(fresh.items())}
        to_stop: List[Member[C]] = []
        members = dict(self.members)
        for name in list(removed) + list(replaced):
            member = members.pop(name)
            member.retired = True
            self.retired.append(member)
            if member.inflight == 0:
                to_stop.append(member)
        members.update(built)
        # One assignment: a reader without the driver's lock (health(), names())
        # sees the table before or after, never half-way.
        self.members = dict(sorted(members.items()))
        self.broken = dict(scan.broken)
        self.dir_errors = dict(scan.dir_errors)
        for directory, problem in scan.dir_errors.items():
            _log.warning("%s: %s", self.kind, problem.message)
        report = ReloadReport(
            added=tuple(sorted(added)),
            removed=MappingProxyType(removed),
            replaced=MappingProxyType(replaced),
            broken=MappingProxyType(dict(self.broken)),
            dir_errors=MappingProxyType(dict(self.dir_errors)),
        )
        return report, to_stop

    def warn_unused(self, what: str, names: Mapping[str, Any]) -> None:
        """Log each name of the host's ``policies`` / ``configs`` that matches no plugin."""
        for name in names:
            if name not in self.members and name not in self.broken:
                _log.warning(
                    "%s: %s names %r, which is not a plugin in %s; it applies if such a plugin appears at a reload()",
                    self.kind, what, name, ", ".join(repr(str(d)) for d in self.dirs),
                )

    # --- shutdown and health -----------------------------------------------------

    def close(self) -> List[Member[C]]:
        """Mark the host closed; returns every member to stop (current and retired)."""
        self.closed = True
        everyone = list(self.members.values()) + self.retired
        self.members = {}
        self.retired = []
        return everyone

    def health(self) -> Dict[str, PluginHealth]:
        return {name: member.client.health() for name, member in self.members.items()}

    def names(self) -> Tuple[str, ...]:
        return tuple(self.members)

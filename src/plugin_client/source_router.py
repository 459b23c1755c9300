"""Secret paths to values: routers over one client per ``sources.toml`` source.

:class:`SourceRouter` (blocking) and :class:`AsyncSourceRouter` (asyncio) resolve a
path with :meth:`~plugin_client.sources.SourcesConfig.resolve`, then ask the chosen
source with the resolved reference.

The fallback: when the default source's ``get`` raises
:class:`~plugin_client.errors.SourceUnavailable` (its plugin answered
``unavailable``, or it could not be run: not installed, a failed spawn or init, a
crash, disabled, a timeout), ``[default].fallback`` is asked the same reference.
That is devboy-tools' rule, "the default reports ``NotInstalled``" (ADR-021 §2
step 3), for a protocol whose availability answers are ``available`` /
``unavailable`` / ``needs-credential``; it is decided from the ``get`` itself,
so a healthy default costs no extra ``is_available`` round trip. A default that
needs a credential (devboy-tools' ``Locked``), or has no such secret, does not
fall back: the user should sign in, not silently get another source's value.
Routes and ``[secret]`` entries have no fallback; only ``get`` falls back.

:func:`preflight_sources` is ``doctor --sources``: every source's plugin, its
availability (probed side by side), and every rule's target, as a JSON-ready dict.

:func:`find_source_plugins` finds each source's plugin (the manifest
``devboy-source-<type>.toml``) in the plugins directories, and why a source has none.

This module neither parses the file (:mod:`plugin_client.sources`) nor watches the
plugins directories for a long-running host (``PluginHost`` does), and never prints.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    Generic,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
    cast,
    runtime_checkable,
)

from pydantic import SecretBytes, SecretStr

from .aio import AsyncPluginClient
from .client import PluginClient
from .events import PluginEvent
from .errors import (
    ManifestError,
    PluginClientError,
    SourceError,
    SourcePluginMissing,
    SourcesError,
    SourcesInvalid,
    SourceUnavailable,
    SourceUnsupportedCapability,
)
from .manifest import LoadedPlugin, discover_plugins
from .policy import LifetimePolicy
from .protocol import AvailabilityStatus, Capability
from .source import (
    AsyncPluginSecretSource,
    LeaseCache,
    PluginSecretSource,
    Secret,
    SecretRef,
    SecretSource,
    SourceStatus,
)
from .sources import Resolution, RouteKind, SourceDef, SourcesConfig, load_sources

__all__ = (
    "SourceRouter",
    "AsyncSourceRouter",
    "AsyncGetSource",
    "find_source_plugins",
    "preflight_sources",
    "PREFLIGHT_SCHEMA_VERSION",
)

log = logging.getLogger("plugin_client.sources")

CT = TypeVar("CT")  # the kind of client a router adapts
ST = TypeVar("ST")  # what it holds per source: an adapter, or a source it was given
R = TypeVar("R", bound="_RouterBase[Any, Any]")
_PathArg = Union[str, "Path"]


# --- plugins for the sources --------------------------------------------------------


def _as_dirs(plugins_dir: Union[_PathArg, Sequence[_PathArg]]) -> List[Path]:
    if isinstance(plugins_dir, (str, Path)):
        return [Path(plugins_dir).absolute()]
    return [Path(p).absolute() for p in plugins_dir]


def find_source_plugins(
    config: SourcesConfig, plugins_dir: Union[_PathArg, Sequence[_PathArg]]
) -> Tuple[Dict[str, LoadedPlugin], Dict[str, PluginClientError]]:
    """Each source's loaded plugin, and for each source without one, why: a
    :class:`~plugin_client.errors.SourcePluginMissing` or the plugin's
    :class:`~plugin_client.errors.ManifestError`. The first directory holding a
    manifest for a name wins. A directory that cannot be listed raises."""
    dirs = _as_dirs(plugins_dir)
    loaded: Dict[str, LoadedPlugin] = {}
    broken: Dict[str, ManifestError] = {}
    for directory in dirs:
        for outcome in discover_plugins(directory):
            name = outcome.name
            if name is None or name in loaded or name in broken:
                continue
            if outcome.plugin is not None:
                loaded[name] = outcome.plugin
            elif outcome.error is not None:
                broken[name] = outcome.error
    found: Dict[str, LoadedPlugin] = {}
    missing: Dict[str, PluginClientError] = {}
    for src in config.sources:
        if src.type in loaded:
            found[src.name] = loaded[src.type]
        elif src.type in broken:
            missing[src.name] = broken[src.type]
        else:
            absent = "" if any(d.is_dir() for d in dirs) else " (which do not exist)"
            missing[src.name] = SourcePluginMissing(
                f"Source {src.name!r} runs plugin {src.type!r}, but no {src.manifest_file} is in "
                f"{[str(d) for d in dirs]!r}{absent}; install the plugin there or fix the source's type",
                source=src.name,
                plugin=src.type,
                origin=config.origin,
            )
    return found, missing


def _policy_for(
    src: SourceDef, policy: Optional[LifetimePolicy], policies: Optional[Mapping[str, LifetimePolicy]]
) -> Optional[LifetimePolicy]:
    """The source's own policy, else its plugin's, else ``policy``."""
    if policies is not None:
        for key in (src.name, src.type):
            if key in policies:
                return policies[key]
    return policy


# --- the blocking router ------------------------------------------------------------


class _RouterBase(Generic[CT, ST]):
    """What both routers share: the config, the sources (each client wrapped in its
    adapter), the missing sources, the decision, :meth:`open`. A router names the
    client type it adapts (``_client_type``) and how (``_adapt``)."""

    _client_type: ClassVar[type]

    def __init__(
        self,
        config: SourcesConfig,
        clients: Mapping[str, Union[CT, ST]],
        *,
        missing: Optional[Mapping[str, BaseException]] = None,
        cache: bool = False,
        max_ttl: Optional[float] = None,
        owns_clients: bool = False,
        name: Optional[str] = None,
    ) -> None:
        self._config = config
        defined = set(config.names())
        unknown = sorted(set(clients) - defined)
        if unknown:
            raise ValueError(
                f"Sources {unknown!r} are not defined in {config.origin!r}; the sources are {config.names()!r}"
            )
        self._missing: Dict[str, BaseException] = dict(missing or {})
        self._name = name if name is not None else f"sources:{Path(config.origin).name}"
        self._clients: List[CT] = []
        self._sources: Dict[str, ST] = {}
        for src_name, client in clients.items():
            if isinstance(client, self._client_type):
                self._clients.append(cast(CT, client))
                cache_for = LeaseCache(max_ttl=max_ttl) if cache else None
                self._sources[src_name] = self._adapt(cast(CT, client), cache_for, src_name)
            else:
                self._sources[src_name] = cast(ST, client)
        self._owns = owns_clients

    def _adapt(self, client: CT, cache: Optional[LeaseCache], name: str) -> ST:
        raise NotImplementedError

    @classmethod
    def open(
        cls: Type[R],
        config: Union[SourcesConfig, _PathArg],
        plugins_dir: Union[_PathArg, Sequence[_PathArg]],
        *,
        policy: Optional[LifetimePolicy] = None,
        policies: Optional[Mapping[str, LifetimePolicy]] = None,
        cache: bool = False,
        max_ttl: Optional[float] = None,
        on_event: Optional[Callable[[PluginEvent], None]] = None,
    ) -> R:
        """A router that owns one new client per source (a :class:`PluginClient` for
        :class:`SourceRouter`, an :class:`AsyncPluginClient` for
        :class:`AsyncSourceRouter`): the plugin named by the source's ``type``, found
        in ``plugins_dir`` (a directory or a list), inited with the source's name and
        settings. ``policies`` maps a source's name (or, for every source of a type,
        the plugin's name) to its own :class:`LifetimePolicy`; ``policy`` is the
        rest's. ``on_event`` is given to every client (README "Events and logging").
        Nothing is spawned yet."""
        cfg = config if isinstance(config, SourcesConfig) else load_sources(config)
        found, missing = find_source_plugins(cfg, plugins_dir)
        clients = {
            src.name: cls._client_type(
                found[src.name],
                policy=_policy_for(src, policy, policies),
                source_name=src.name,
                config=src.init_config(),
                on_event=on_event,
            )
            for src in cfg.sources
            if src.name in found
        }
        return cls(cfg, clients, missing=missing, cache=cache, max_ttl=max_ttl, owns_clients=True)

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> SourcesConfig:
        return self._config

    def resolve(self, path: str) -> Resolution:
        """The decision for ``path``, without calling a plugin (:meth:`SourcesConfig.resolve`)."""
        return self._config.resolve(path)

    def _source(self, name: str) -> ST:
        src = self._sources.get(name)
        if src is None:
            raise self._no_source(name)
        return src

    def _no_source(self, name: str) -> SourceUnavailable:
        src = self._config.source(name)  # UnknownSource for a name the file lacks
        why = self._missing.get(name)
        if isinstance(why, SourcePluginMissing):
            return SourceUnavailable(why.message, plugin=src.type)
        detail = f": {why}" if why is not None else "; give the router a client for it"
        return SourceUnavailable(f"Source {name!r} has no client{detail}", plugin=src.type)

    def _fallback_to(self, r: Resolution, exc: SourceUnavailable) -> Optional[str]:
        if r.rule is RouteKind.DEFAULT and r.fallback is not None and r.fallback != r.source:
            log.info(
                "Default source %r is unavailable for %r (%s); asking the fallback %r",
                r.source,
                r.path,
                exc.message,
                r.fallback,
            )
            return r.fallback
        return None

    def _both_down(self, r: Resolution, exc: SourceUnavailable, fb_exc: SourceUnavailable) -> SourceUnavailable:
        return SourceUnavailable(
            f"Default source {r.source!r} and its fallback {r.fallback!r} are both unavailable for {r.path!r}: "
            f"{exc.message} / {fb_exc.message}",
            plugin=fb_exc.plugin,
        )

    def _unsupported(self, method: str) -> SourceUnsupportedCapability:
        return SourceUnsupportedCapability(
            f"Router {self._name!r} does not support {method!r}: it has no single inventory or key store; "
            f"call the source's own (router.source(name).{method}(...))",
            capability=method,
        )


class SourceRouter(_RouterBase[PluginClient, SecretSource]):
    """Routes secret paths to sources, each a :class:`PluginClient` (or any
    :class:`~plugin_client.source.SecretSource`), by a :class:`SourcesConfig`.

    It is itself a :class:`~plugin_client.source.SecretSource` whose references are
    secret paths: ``get``, ``validate``, ``put`` and ``delete`` resolve the path
    and call the chosen source with the resolved reference (only ``get`` falls
    back); ``is_available`` is every source's; ``list`` and ``key_material`` are
    unsupported (ask a source: :meth:`source`). ``capabilities`` is the union of
    the sources'.

    ``clients`` maps source names to clients. A source without one (``missing``
    says why, e.g. from :func:`find_source_plugins`) is unavailable, which lets
    its fallback answer. ``cache=True`` gives each plugin source its own
    :class:`~plugin_client.source.LeaseCache` (at most ``max_ttl`` seconds, if
    given). Clients are shut down by :meth:`close` only if ``owns_clients``.
    """

    _client_type = PluginClient

    def _adapt(self, client: PluginClient, cache: Optional[LeaseCache], name: str) -> SecretSource:
        return PluginSecretSource(client, cache=cache, name=name)

    def __repr__(self) -> str:
        return f"<SourceRouter {self._name!r} sources={len(self._sources)} missing={sorted(self._missing)!r}>"

    def __enter__(self) -> SourceRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut the owned clients down, side by side (one grace for all, not one each)."""
        if not self._owns:
            return
        threads = [threading.Thread(target=c.shutdown, name="plugin-client-router-close") for c in self._clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def source(self, name: str) -> SecretSource:
        """The source named ``name``: :class:`~plugin_client.errors.UnknownSource` if the
        file defines none, :class:`~plugin_client.errors.SourceUnavailable` if it has no client."""
        return self._source(name)

    def get_secret(self, path: str) -> Optional[Secret]:
        """Resolve ``path`` and get it from its source (the fallback, if the default is
        unavailable); ``None`` if the source has no such secret."""
        r = self.resolve(path)
        try:
            return self.source(r.source).get(r.reference)
        except SourceUnavailable as exc:
            fallback = self._fallback_to(r, exc)
            if fallback is None:
                raise
            try:
                return self.source(fallback).get(r.reference)
            except SourceUnavailable as fb_exc:
                raise self._both_down(r, exc, fb_exc) from fb_exc

    # --- the SecretSource protocol, references being paths ---------------------------

    @property
    def capabilities(self) -> Capability:
        bits = Capability(0)
        for src in self._sources.values():
            try:
                bits |= src.capabilities
            except SourceError:
                continue  # an unavailable source claims nothing
        return bits

    def status(self) -> Dict[str, SourceStatus]:
        """Every source's :meth:`~plugin_client.source.SecretSource.is_available`, asked side by side."""
        result: Dict[str, SourceStatus] = {}

        def ask(name: str) -> None:
            src = self._sources.get(name)
            if src is None:
                result[name] = SourceStatus(status=AvailabilityStatus.UNAVAILABLE, detail=self._no_source(name).message)
            else:
                result[name] = src.is_available()

        threads = [
            threading.Thread(target=ask, args=(n,), name="plugin-client-router-status") for n in self._config.names()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {n: result[n] for n in self._config.names()}

    def is_available(self) -> SourceStatus:
        return _overall(self.status())

    def get(self, ref: str) -> Optional[Secret]:
        return self.get_secret(ref)

    def list(self) -> List[SecretRef]:
        raise self._unsupported("list")

    def validate(self, ref: str) -> bool:
        r = self.resolve(ref)
        return self.source(r.source).validate(r.reference)

    def put(self, ref: str, value: Union[str, SecretStr]) -> bool:
        r = self.resolve(ref)
        return self.source(r.source).put(r.reference, value)

    def delete(self, ref: str) -> bool:
        r = self.resolve(ref)
        return self.source(r.source).delete(r.reference)

    def key_material(self, purpose: str) -> SecretBytes:
        raise self._unsupported("key_material")


def _overall(statuses: Mapping[str, SourceStatus]) -> SourceStatus:
    bad = {n: s for n, s in statuses.items() if not s.available}
    if not bad:
        return SourceStatus(status=AvailabilityStatus.AVAILABLE)
    worst = (
        AvailabilityStatus.UNAVAILABLE
        if any(s.status is AvailabilityStatus.UNAVAILABLE for s in bad.values())
        else AvailabilityStatus.NEEDS_CREDENTIAL
    )
    detail = "; ".join(f"{n}: {s.status.value}" + (f" ({s.detail})" if s.detail else "") for n, s in bad.items())
    return SourceStatus(status=worst, detail=detail)


# --- the asyncio router -------------------------------------------------------------


@runtime_checkable
class AsyncGetSource(Protocol):
    """What :class:`AsyncSourceRouter` needs from a source besides an
    :class:`AsyncPluginClient`: coroutine ``get`` and ``is_available`` with the
    :class:`~plugin_client.source.SecretSource` meanings."""

    async def get(self, ref: str) -> Optional[Secret]: ...

    async def is_available(self) -> SourceStatus: ...


class AsyncSourceRouter(_RouterBase[AsyncPluginClient, AsyncGetSource]):
    """:class:`SourceRouter` for asyncio: the same decisions and fallback, over
    :class:`AsyncPluginClient`\\ s (or any :class:`AsyncGetSource`). Its
    ``get_secret``, ``get``, ``validate``, ``put``, ``delete``, ``status``,
    ``is_available`` and ``aclose`` are coroutines; ``resolve`` is not."""

    _client_type = AsyncPluginClient

    def _adapt(self, client: AsyncPluginClient, cache: Optional[LeaseCache], name: str) -> AsyncGetSource:
        return AsyncPluginSecretSource(client, cache=cache, name=name)

    def __repr__(self) -> str:
        return f"<AsyncSourceRouter {self._name!r} sources={len(self._sources)} missing={sorted(self._missing)!r}>"

    async def __aenter__(self) -> AsyncSourceRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Shut the owned clients down, side by side."""
        if self._owns:
            await asyncio.gather(*(c.shutdown() for c in self._clients))

    def source(self, name: str) -> Any:
        """The source named ``name`` (as :meth:`SourceRouter.source`)."""
        return self._source(name)

    async def get_secret(self, path: str) -> Optional[Secret]:
        """As :meth:`SourceRouter.get_secret`."""
        r = self.resolve(path)
        secret: Optional[Secret]
        try:
            secret = await self.source(r.source).get(r.reference)
        except SourceUnavailable as exc:
            fallback = self._fallback_to(r, exc)
            if fallback is None:
                raise
            try:
                secret = await self.source(fallback).get(r.reference)
            except SourceUnavailable as fb_exc:
                raise self._both_down(r, exc, fb_exc) from fb_exc
        return secret

    async def get(self, ref: str) -> Optional[Secret]:
        return await self.get_secret(ref)

    async def status(self) -> Dict[str, SourceStatus]:
        """Every source's availability, asked side by side."""

        async def ask(name: str) -> SourceStatus:
            src = self._sources.get(name)
            if src is None:
                return SourceStatus(status=AvailabilityStatus.UNAVAILABLE, detail=self._no_source(name).message)
            status: SourceStatus = await src.is_available()
            return status

        names = self._config.names()
        return dict(zip(names, await asyncio.gather(*(ask(n) for n in names))))

    async def is_available(self) -> SourceStatus:
        return _overall(await self.status())

    async def validate(self, ref: str) -> bool:
        r = self.resolve(ref)
        ok: bool = await self.source(r.source).validate(r.reference)
        return ok

    async def put(self, ref: str, value: Union[str, SecretStr]) -> bool:
        r = self.resolve(ref)
        replaced: bool = await self.source(r.source).put(r.reference, value)
        return replaced

    async def delete(self, ref: str) -> bool:
        r = self.resolve(ref)
        existed: bool = await self.source(r.source).delete(r.reference)
        return existed


# --- pre-flight (doctor --sources) -----------------------------------------------------

#: The version of :func:`preflight_sources`' report.
PREFLIGHT_SCHEMA_VERSION = 1


def preflight_sources(
    sources: Union[SourcesConfig, _PathArg],
    plugins_dir: Union[_PathArg, Sequence[_PathArg]],
    *,
    timeout: float = 10.0,
    paths: Sequence[str] = (),
) -> Dict[str, Any]:
    """Check a routing file against the plugins without routing a request, for
    ``plugin-client doctor --sources FILE``. Returns a JSON-ready dict:

    * ``schema_version``, ``file``, ``plugins_dirs``;
    * ``valid`` and ``problems`` (each ``{"type", "subject", "message"}``): the
      file's own check; an invalid file is reported, not raised;
    * ``sources``: per source ``name``, ``type``, ``plugin`` (``found``,
      ``manifest``, ``error``), ``status`` (``available`` / ``unavailable`` /
      ``needs-credential``, or ``None`` when it was not probed), ``detail``;
      every found plugin is started and asked ``is_available`` side by side, each
      within ``timeout`` (N hung plugins take about ``timeout``, not N times it),
      then stopped;
    * ``rules``: every ``[secret]``, ``[[route]]`` and ``[default]`` with its
      ``source`` and ``ok`` (the source is available, or for the default, it or
      its fallback is);
    * ``paths``: the decision for each of ``paths`` (or its ``error``);
    * ``healthy``: the file is valid and every rule is ``ok``.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")
    dirs = _as_dirs(plugins_dir)
    report: Dict[str, Any] = {
        "schema_version": PREFLIGHT_SCHEMA_VERSION,
        "file": str(sources.origin if isinstance(sources, SourcesConfig) else Path(sources).absolute()),
        "plugins_dirs": [str(d) for d in dirs],
        "valid": True,
        "problems": [],
        "sources": [],
        "rules": [],
        "paths": [],
        "healthy": False,
    }
    try:
        cfg = sources if isinstance(sources, SourcesConfig) else load_sources(sources)
    except SourcesError as exc:
        problems = exc.problems if isinstance(exc, SourcesInvalid) else (exc,)
        report["valid"] = False
        report["problems"] = [
            {"type": type(p).__name__, "subject": p.subject, "message": p.message} for p in problems
        ]
        return report
    try:
        found, missing = find_source_plugins(cfg, dirs)
    except ManifestError as exc:  # a directory that cannot be listed
        found, missing = {}, {s.name: exc for s in cfg.sources}
    statuses = _probe(cfg, found, timeout)
    for src in cfg.sources:
        plugin = found.get(src.name)
        status = statuses.get(src.name)
        error = missing.get(src.name)
        report["sources"].append(
            {
                "name": src.name,
                "type": src.type,
                "plugin": {
                    "found": plugin is not None,
                    "manifest": str(plugin.manifest_path) if plugin is not None else None,
                    "error": None if error is None else {"type": type(error).__name__, "message": str(error)},
                },
                "status": None if status is None else status.status.value,
                "detail": None if status is None else status.detail,
            }
        )

    def up(name: Optional[str]) -> bool:
        status = statuses.get(name) if name is not None else None
        return status is not None and status.available

    for path, override in cfg.secrets.items():
        report["rules"].append(
            {"rule": "secret", "subject": path, "source": override.source, "ok": up(override.source)}
        )
    for route in cfg.routes:
        report["rules"].append(
            {"rule": "route", "subject": route.prefix, "source": route.source, "ok": up(route.source)}
        )
    if cfg.default is not None:
        d = cfg.default
        report["rules"].append(
            {
                "rule": "default",
                "subject": None,
                "source": d.source,
                "fallback": d.fallback,
                "ok": up(d.source) or up(d.fallback),
            }
        )
    for path in paths:
        try:
            report["paths"].append(cfg.resolve(path).to_dict())
        except SourcesError as exc:
            report["paths"].append({"path": path, "error": {"type": type(exc).__name__, "message": exc.message}})
    report["healthy"] = all(rule["ok"] for rule in report["rules"]) and not any("error" in p for p in report["paths"])
    return report


def _probe(cfg: SourcesConfig, found: Mapping[str, LoadedPlugin], timeout: float) -> Dict[str, SourceStatus]:
    # A short policy: the probe's own timeouts end a hung plugin, so every thread ends.
    policy = LifetimePolicy(
        start_timeout=timeout, request_timeout=timeout, shutdown_grace=min(timeout, 2.0), exit_wait=min(timeout, 1.0)
    )
    result: Dict[str, SourceStatus] = {}

    def probe(src: SourceDef, plugin: LoadedPlugin) -> None:
        try:
            client = PluginClient(plugin, policy=policy, source_name=src.name, config=src.init_config())
            try:
                result[src.name] = PluginSecretSource(client, name=src.name).is_available()
            finally:
                client.shutdown()
        except Exception as exc:  # the report must hold every source, whatever failed
            detail = f"{type(exc).__name__}: {exc}"
            result[src.name] = SourceStatus(status=AvailabilityStatus.UNAVAILABLE, detail=detail)

    threads = [
        threading.Thread(target=probe, args=(src, found[src.name]), name="plugin-client-preflight")
        for src in cfg.sources
        if src.name in found
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result

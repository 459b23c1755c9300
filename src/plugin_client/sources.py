"""``sources.toml``: which source serves a secret path, as devboy-tools' router decides it.

The file (devboy-tools ADR-021 §2) declares sources and routes::

    [[source]]                 # one per source: a plugin process with its own config
    name = "team-vault"        # ^[a-z0-9][a-z0-9_-]*$, unique
    type = "vault"             # the plugin: devboy-source-vault.toml
    addr = "https://vault.example/"   # every other key: the plugin's init config

    [default]                  # optional
    source = "keychain"
    fallback = "local-vault"   # optional

    [[route]]                  # longest prefix wins
    prefix = "team/"           # ends in "/"
    source = "team-vault"

    [secret."client-acme/jira/api-key"]   # an exact override
    source = "team-vault"
    reference = "op://Work/Acme Jira/credential"

:func:`load_sources` / :func:`parse_sources` read it into a frozen
:class:`SourcesConfig`, checking what devboy-tools' router checks (source names,
duplicate names and prefixes, undefined sources, prefixes ending in ``/``, secret
paths) and, stricter, unknown keys of the fixed-shape tables (a ``[[routes]]``
typo would otherwise drop every route silently), a ``type`` that cannot name a
plugin and settings that JSON cannot carry to ``init``. Every problem is found in
one pass: :class:`~plugin_client.errors.SourcesInvalid` carries them all, each a
typed error naming its entry.

:meth:`SourcesConfig.resolve` is the pure decision, as devboy-tools'
``router_resolve`` makes it: the exact ``[secret."<path>"]`` first, then the
longest matching ``[[route]]`` prefix (ties to the earlier declaration), then
``[default]``; else :class:`~plugin_client.errors.NoRoute`. The reference a
plugin gets: a ``[secret]`` entry's ``reference``; for a prefix route and the
default, the path itself. devboy-tools leaves mapping a routed path to a
reference to the source ("the keychain source uses the path directly", ADR-021
§2, as its local-vault does); a subprocess plugin sees only the reference, so
it gets the whole path and maps it itself. A host that maps on the plugin's
behalf finds the route's extra keys in :attr:`Resolution.settings` and the path
after the prefix in :attr:`Resolution.tail`.

:class:`SourceRouter` (blocking) and :class:`AsyncSourceRouter` (asyncio) turn a
decision into a value through one client per source. The fallback: when the
default source's ``get`` raises :class:`~plugin_client.errors.SourceUnavailable`
(its plugin answered ``unavailable``, or it could not be run: not installed, a
failed spawn or init, a crash, disabled, a timeout), ``[default].fallback`` is
asked. That is devboy-tools' "the default reports ``NotInstalled``" for a
protocol whose availability answers are ``available`` / ``unavailable`` /
``needs-credential``, decided from the ``get`` itself so a healthy default costs
no extra round trip. A default that needs a credential, or has no such secret,
does not fall back: the user should sign in, not silently get another source's
value. Routes and ``[secret]`` entries have no fallback.

:func:`preflight_sources` is ``doctor --sources``: every source's plugin, its
availability (probed side by side), and every rule's target, as a JSON-ready dict.

This module does not discover or reload plugin directories for a long-running
host (``PluginHost`` does), and never prints.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    runtime_checkable,
)

from pydantic import SecretBytes, SecretStr

from .aio import AsyncPluginClient
from .client import PluginClient
from .errors import (
    BadReference,
    BadRoutePrefix,
    BadSecretPath,
    BadSourceName,
    BadSourceType,
    DuplicateRoutePrefix,
    DuplicateSource,
    ManifestError,
    ManifestParseError,
    NoRoute,
    PluginClientError,
    SourceError,
    SourcePluginMissing,
    SourcesError,
    SourcesFieldError,
    SourcesFileError,
    SourcesInvalid,
    SourceUnavailable,
    SourceUnsupportedCapability,
    UndefinedSource,
    UnknownSource,
)
from .manifest import DEFAULT_PREFIX, LoadedPlugin, discover_plugins, parse_toml_document
from .policy import LifetimePolicy
from .protocol import AvailabilityStatus, Capability
from .source import (
    LeaseCache,
    PluginSecretSource,
    Secret,
    SecretRef,
    SecretSource,
    SourceStatus,
    is_not_found,
    secret_from_reply,
    source_error,
)

__all__ = (
    "SOURCES_FILE_NAME",
    "RouteKind",
    "SourceDef",
    "DefaultRule",
    "RouteRule",
    "SecretOverride",
    "SourcesConfig",
    "Resolution",
    "load_sources",
    "parse_sources",
    "SourceRouter",
    "AsyncSourceRouter",
    "AsyncGetSource",
    "find_source_plugins",
    "secret_path_problem",
    "preflight_sources",
    "PREFLIGHT_SCHEMA_VERSION",
)

log = logging.getLogger("plugin_client.sources")

T = TypeVar("T")
_PathArg = Union[str, "Path"]

#: The file's name in devboy-tools (``~/.devboy/secrets/sources.toml``).
SOURCES_FILE_NAME = "sources.toml"

_SOURCE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
# A type names a plugin, so it follows the manifest's name rule (manifest.py).
_TYPE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SEGMENT_RE = re.compile(r"[a-z][a-z0-9-]*")
_RESERVED_SCOPE_RE = re.compile(r"__[a-z][a-z0-9-]*|_test")
_TOP_KEYS = ("source", "default", "route", "secret")
_DEFAULT_KEYS = ("source", "fallback")
_SECRET_KEYS = ("source", "reference")
_MAX_SHOWN = 60


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


# --- the model --------------------------------------------------------------------


class RouteKind(str, Enum):
    """Which rule of the file decided a path."""

    SECRET = "secret"  # an exact [secret."<path>"] entry
    ROUTE = "route"  # the longest matching [[route]] prefix
    DEFAULT = "default"  # [default]


@dataclass(frozen=True)
class SourceDef:
    """One ``[[source]]``: a process of the plugin named by ``type``, inited with
    ``source_name = name`` and ``config = settings`` (every other key of the entry).
    Two sources of one type are two processes with their own configs."""

    name: str
    type: str
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def plugin(self) -> str:
        """The plugin's (manifest's) name: the ``type``."""
        return self.type

    @property
    def manifest_file(self) -> str:
        """The plugin's manifest file name, ``devboy-source-<type>.toml``."""
        return f"{DEFAULT_PREFIX}{self.type}.toml"

    def init_config(self) -> Dict[str, Any]:
        """The ``init`` config: a fresh copy of ``settings``."""
        return dict(self.settings)


@dataclass(frozen=True)
class DefaultRule:
    """``[default]``: the source of a path nothing else matches, and its fallback."""

    source: str
    fallback: Optional[str] = None


@dataclass(frozen=True)
class RouteRule:
    """One ``[[route]]``: paths starting with ``prefix`` go to ``source``. ``settings``
    are its other keys, kept for the host (the router sends none of them)."""

    prefix: str
    source: str
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class SecretOverride:
    """One ``[secret."<path>"]``: exactly this path goes to ``source`` as ``reference``."""

    path: str
    source: str
    reference: str


@dataclass(frozen=True)
class Resolution:
    """Where a path goes, decided without calling a plugin.

    ``reference`` is what the source's ``get`` receives: the ``[secret]`` entry's
    ``reference``, else the path itself. ``prefix`` and ``settings`` are the
    matched route's (``rule`` is ``ROUTE``); ``fallback`` is ``[default].fallback``
    (``rule`` is ``DEFAULT``)."""

    path: str
    source: str
    reference: str
    rule: RouteKind
    prefix: Optional[str] = None
    fallback: Optional[str] = None
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def tail(self) -> str:
        """The path after the matched prefix (the whole path without one)."""
        return self.path[len(self.prefix) :] if self.prefix else self.path

    def to_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "source": self.source,
            "reference": self.reference,
            "rule": self.rule.value,
            "prefix": self.prefix,
            "fallback": self.fallback,
        }


@dataclass(frozen=True)
class SourcesConfig:
    """A checked ``sources.toml``. ``origin`` is the file it came from (or ``"<string>"``)."""

    origin: str
    sources: Tuple[SourceDef, ...] = ()
    default: Optional[DefaultRule] = None
    routes: Tuple[RouteRule, ...] = ()
    secrets: Mapping[str, SecretOverride] = field(default_factory=lambda: MappingProxyType({}))
    # The routes longest first, ties in declaration order: the first match wins.
    _by_length: Tuple[RouteRule, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        order = sorted(range(len(self.routes)), key=lambda i: (-len(self.routes[i].prefix), i))
        object.__setattr__(self, "_by_length", tuple(self.routes[i] for i in order))

    def names(self) -> List[str]:
        """The source names, in declaration order."""
        return [s.name for s in self.sources]

    def source(self, name: str) -> SourceDef:
        """The ``[[source]]`` named ``name``; :class:`~plugin_client.errors.UnknownSource` if none."""
        for s in self.sources:
            if s.name == name:
                return s
        raise UnknownSource(
            f"Sources file {self.origin!r} defines no source {name!r}; the sources are {self.names()!r}",
            source=name,
            origin=self.origin,
        )

    def resolve(self, path: str) -> Resolution:
        """The decision for ``path`` (module docstring). Raises
        :class:`~plugin_client.errors.BadSecretPath` for a malformed path and
        :class:`~plugin_client.errors.NoRoute` when nothing covers it."""
        problem = secret_path_problem(path)
        if problem is not None:
            raise BadSecretPath(f"Secret path {_short(path)} is invalid: {problem}", path=str(path), origin=self.origin)
        exact = self.secrets.get(path)
        if exact is not None:
            return Resolution(path, exact.source, exact.reference, RouteKind.SECRET)
        for route in self._by_length:
            if path.startswith(route.prefix):
                return Resolution(path, route.source, path, RouteKind.ROUTE, prefix=route.prefix, settings=route.settings)
        if self.default is not None:
            return Resolution(path, self.default.source, path, RouteKind.DEFAULT, fallback=self.default.fallback)
        raise NoRoute(
            f"No route for secret path {path!r} in {self.origin!r}: no [secret] entry, no [[route]] prefix "
            "matches it and there is no [default]; add a route or a [default] source",
            path=path,
            origin=self.origin,
        )


def secret_path_problem(path: object) -> Optional[str]:
    """Why ``path`` is not an ADR-020 secret path (``<scope>/<provider>/<purpose>``), or ``None``."""
    if not isinstance(path, str):
        return f"expected a string, not {type(path).__name__}"
    segments = path.split("/")
    if len(segments) < 3:
        return f"it has {len(segments)} segment(s), a path has at least 3: '<scope>/<provider>/<purpose>'"
    for i, seg in enumerate(segments):
        if not seg:
            return f"segment {i + 1} is empty"
        if i == 0 and _RESERVED_SCOPE_RE.fullmatch(seg):
            return f"the scope {seg!r} is reserved for the framework"
        if not _SEGMENT_RE.fullmatch(seg):
            return f"segment {_short(seg)} is not lowercase kebab-case ([a-z][a-z0-9-]*)"
    return None


# --- parsing ------------------------------------------------------------------------


def load_sources(path: _PathArg) -> SourcesConfig:
    """Read and check the routing file at ``path``. Raises
    :class:`~plugin_client.errors.SourcesFileError` (unreadable, not TOML) or
    :class:`~plugin_client.errors.SourcesInvalid` (every rule it breaks)."""
    spath = str(Path(path).absolute())
    try:
        with open(spath, "rb") as f:
            data = f.read((1 << 20) + 1)
    except FileNotFoundError:
        raise SourcesFileError(
            f"Sources file {spath!r} does not exist; check the path", origin=spath, errno=2
        ) from None
    except IsADirectoryError:
        raise SourcesFileError(
            f"Sources file {spath!r} is a directory; name the sources.toml inside it", origin=spath, errno=21
        ) from None
    except OSError as exc:
        raise SourcesFileError(
            f"Sources file {spath!r} cannot be read ({exc.strerror}); fix its permissions",
            origin=spath,
            errno=exc.errno,
        ) from None
    if len(data) > 1 << 20:
        raise SourcesFileError(f"Sources file {spath!r} is larger than 1 MiB; it is not a routing file", origin=spath)
    return parse_sources(data, origin=spath)


def parse_sources(text: Union[str, bytes], *, origin: str = "<string>") -> SourcesConfig:
    """Check a routing file's text; ``origin`` names it in messages. Raises as
    :func:`load_sources` does."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    try:
        # The manifests' reader: the byte order mark, UTF-8 and the dotted-key guard.
        document = parse_toml_document(data, origin, "sources")
    except ManifestParseError as exc:
        head = f"Manifest {origin!r} of plugin 'sources'"
        message = exc.message
        if message.startswith(head):
            message = f"Sources file {origin!r}" + message[len(head) :]
        raise SourcesFileError(message, origin=origin, line=exc.line) from None
    return _Checker(origin).check(document)


class _Checker:
    """One pass over the document that records every problem before raising."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.problems: List[SourcesError] = []

    def add(self, cls: Any, subject: str, text: str, **kw: Any) -> None:
        self.problems.append(cls(f"{subject[:1].upper()}{subject[1:]} in {self.origin!r} {text}", origin=self.origin, subject=subject, **kw))

    def check(self, doc: Dict[str, Any]) -> SourcesConfig:
        for key in doc:
            if key not in _TOP_KEYS:
                self.add(
                    SourcesFieldError,
                    f"the key {_short(key)}",
                    f"is not part of a routing file; the file has [[source]], [default], [[route]] and "
                    f"[secret.\"<path>\"] entries: rename or remove it",
                )
        sources = self._sources(self._array(doc, "source"))
        names = {s.name for s in sources}
        default = self._default(doc.get("default"), names)
        routes = self._routes(self._array(doc, "route"), names)
        secrets = self._secrets(doc.get("secret"), names)
        if self.problems:
            n = len(self.problems)
            listed = " ".join(f"({i}) {p.message}" for i, p in enumerate(self.problems, 1))
            raise SourcesInvalid(
                f"Sources file {self.origin!r} has {n} problem{'s' if n > 1 else ''}: {listed}",
                origin=self.origin,
                problems=self.problems,
            )
        return SourcesConfig(self.origin, tuple(sources), default, tuple(routes), MappingProxyType(secrets))

    def _array(self, doc: Dict[str, Any], key: str) -> List[Any]:
        value = doc.get(key, [])
        if isinstance(value, list):
            return value
        self.add(SourcesFieldError, f"[{key}]", f"is a single table; write each entry as [[{key}]]")
        return []

    def _string(self, entry: Dict[str, Any], key: str, subject: str, required: bool = True) -> Optional[str]:
        value = entry.get(key)
        if value is None:
            if required:
                self.add(SourcesFieldError, subject, f"has no {key!r}; add {key} = \"...\"")
            return None
        if not isinstance(value, str):
            self.add(SourcesFieldError, subject, f"has {key} = {_short(value)}, not a string; quote it")
            return None
        return value

    def _unknown(self, entry: Dict[str, Any], allowed: Sequence[str], subject: str) -> None:
        extra = [k for k in entry if k not in allowed]
        if extra:
            self.add(
                SourcesFieldError,
                subject,
                f"has unknown key(s) {', '.join(_short(k) for k in extra)}; its keys are {', '.join(allowed)}",
            )

    def _settings(self, entry: Dict[str, Any], fixed: Sequence[str], subject: str) -> Mapping[str, Any]:
        settings = {k: v for k, v in entry.items() if k not in fixed}
        for key, value in settings.items():
            bad = _non_json(value)
            if bad is not None:
                self.add(
                    SourcesFieldError,
                    subject,
                    f"has {key} = a TOML {bad}, which the plugin's JSON init config cannot carry; write it as a string",
                )
        return MappingProxyType(settings)

    def _sources(self, entries: List[Any]) -> List[SourceDef]:
        out: List[SourceDef] = []
        seen: Dict[str, int] = {}
        for i, entry in enumerate(entries, 1):
            subject = f"source {i}"
            if not isinstance(entry, dict):
                self.add(SourcesFieldError, subject, "is not a table; write it as [[source]] with name and type")
                continue
            name = self._string(entry, "name", subject)
            if name is not None:
                subject = f"source {i} ({name!r})"
                if not _SOURCE_NAME_RE.fullmatch(name):
                    self.add(
                        BadSourceName,
                        subject,
                        "has an invalid name: a name is lowercase letters, digits, '-' and '_', "
                        "starting with a letter or digit; rename it",
                    )
                elif name in seen:
                    self.add(
                        DuplicateSource,
                        subject,
                        f"has the name of source {seen[name]}; give each source its own name",
                    )
                else:
                    seen[name] = i
            type_ = self._string(entry, "type", subject)
            if type_ is not None and not _TYPE_RE.fullmatch(type_):
                self.add(
                    BadSourceType,
                    subject,
                    f"has type = {_short(type_)}, which cannot name a plugin: the type is the <name> of "
                    f"{DEFAULT_PREFIX}<name>.toml (1 to 128 letters, digits, '-', '_' or '.', not starting "
                    "with '-' or '.')",
                )
            settings = self._settings(entry, ("name", "type"), subject)
            if name is not None and type_ is not None and seen.get(name) == i:
                out.append(SourceDef(name, type_, settings))
        return out

    def _defined(self, name: Optional[str], names: Iterable[str], subject: str, what: str) -> bool:
        if name is None:
            return False
        if name in names:
            return True
        self.add(
            UndefinedSource,
            subject,
            f"names {what} {name!r}, which no [[source]] defines; define it or fix the name",
            source=name,
        )
        return False

    def _default(self, entry: Any, names: Iterable[str]) -> Optional[DefaultRule]:
        if entry is None:
            return None
        subject = "[default]"
        if not isinstance(entry, dict):
            self.add(SourcesFieldError, subject, "is not a table; write [default] with source = \"...\"")
            return None
        self._unknown(entry, _DEFAULT_KEYS, subject)
        source = self._string(entry, "source", subject)
        fallback = self._string(entry, "fallback", subject, required=False)
        ok = self._defined(source, names, subject, "the source")
        if fallback is not None and not self._defined(fallback, names, subject, "the fallback"):
            ok = False
        return DefaultRule(source, fallback) if ok and source is not None else None

    def _routes(self, entries: List[Any], names: Iterable[str]) -> List[RouteRule]:
        out: List[RouteRule] = []
        seen: Dict[str, int] = {}
        for i, entry in enumerate(entries, 1):
            subject = f"route {i}"
            if not isinstance(entry, dict):
                self.add(SourcesFieldError, subject, "is not a table; write it as [[route]] with prefix and source")
                continue
            prefix = self._string(entry, "prefix", subject)
            ok = prefix is not None
            if prefix is not None:
                subject = f"route {i} (prefix {prefix!r})"
                if not prefix.endswith("/"):
                    self.add(
                        BadRoutePrefix,
                        subject,
                        f"has a prefix that does not end in '/'; write {prefix + '/'!r}, so that it matches "
                        "whole path segments",
                    )
                    ok = False
                elif prefix in seen:
                    self.add(
                        DuplicateRoutePrefix,
                        subject,
                        f"repeats the prefix of route {seen[prefix]}; keep one of them",
                    )
                    ok = False
                else:
                    seen[prefix] = i
            source = self._string(entry, "source", subject)
            ok = self._defined(source, names, subject, "the source") and ok
            settings = self._settings(entry, ("prefix", "source"), subject)
            if ok and prefix is not None and source is not None:
                out.append(RouteRule(prefix, source, settings))
        return out

    def _secrets(self, table: Any, names: Iterable[str]) -> Dict[str, SecretOverride]:
        out: Dict[str, SecretOverride] = {}
        if table is None:
            return out
        if not isinstance(table, dict):
            self.add(SourcesFieldError, "[secret]", 'is not a table; write each entry as [secret."<path>"]')
            return out
        for path, entry in table.items():
            subject = f"secret {path!r}"
            if not isinstance(entry, dict):
                self.add(SourcesFieldError, subject, 'is not a table; write [secret."<path>"] with source and reference')
                continue
            problem = secret_path_problem(path)
            ok = problem is None
            if problem is not None:
                self.add(BadSecretPath, subject, f"is not a valid secret path: {problem}", path=path)
            self._unknown(entry, _SECRET_KEYS, subject)
            source = self._string(entry, "source", subject)
            reference = self._string(entry, "reference", subject)
            if reference == "":
                self.add(SourcesFieldError, subject, "has an empty reference; give the source's reference")
                ok = False
            ok = self._defined(source, names, subject, "the source") and ok
            if ok and source is not None and reference is not None:
                out[path] = SecretOverride(path, source, reference)
        return out


def _non_json(value: Any) -> Optional[str]:
    """The TOML kind of ``value`` if JSON cannot carry it (dates and times), else ``None``."""
    if isinstance(value, datetime):
        return "date-time"
    if isinstance(value, (date, time)):
        return type(value).__name__
    if isinstance(value, list):
        return next((k for k in map(_non_json, value) if k is not None), None)
    if isinstance(value, dict):
        return next((k for k in map(_non_json, value.values()) if k is not None), None)
    return None


# --- plugins for the sources --------------------------------------------------------


def _as_dirs(plugins_dir: Union[_PathArg, Sequence[_PathArg]]) -> List[Path]:
    if isinstance(plugins_dir, (str, Path)):
        return [Path(plugins_dir)]
    return [Path(p) for p in plugins_dir]


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
            missing[src.name] = SourcePluginMissing(
                f"Source {src.name!r} runs plugin {src.type!r}, but no {src.manifest_file} is in "
                f"{[str(d) for d in dirs]!r}; install the plugin there or fix the source's type",
                source=src.name,
                plugin=src.type,
                origin=config.origin,
            )
    return found, missing


def _policy_for(name: str, policy: Optional[LifetimePolicy], policies: Optional[Mapping[str, LifetimePolicy]]) -> Optional[LifetimePolicy]:
    if policies is not None and name in policies:
        return policies[name]
    return policy


# --- the blocking router ------------------------------------------------------------


class _RouterBase:
    """What both routers share: the config, the missing sources, the decision."""

    def __init__(
        self,
        config: SourcesConfig,
        names: Iterable[str],
        missing: Optional[Mapping[str, BaseException]],
        name: Optional[str],
    ) -> None:
        self._config = config
        defined = set(config.names())
        unknown = sorted(set(names) - defined)
        if unknown:
            raise ValueError(f"Sources {unknown!r} are not defined in {config.origin!r}; the sources are {config.names()!r}")
        self._missing: Dict[str, BaseException] = dict(missing or {})
        self._name = name if name is not None else f"sources:{Path(config.origin).name}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> SourcesConfig:
        return self._config

    def resolve(self, path: str) -> Resolution:
        """The decision for ``path``, without calling a plugin (:meth:`SourcesConfig.resolve`)."""
        return self._config.resolve(path)

    def _no_source(self, name: str) -> SourceUnavailable:
        src = self._config.source(name)  # UnknownSource for a name the file lacks
        why = self._missing.get(name)
        detail = f": {why}" if why is not None else ""
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

    def _unsupported(self, method: str) -> SourceUnsupportedCapability:
        return SourceUnsupportedCapability(
            f"Router {self._name!r} does not support {method!r}: it has no single inventory or key store; "
            f"call the source's own (router.source(name).{method}(...))",
            capability=method,
        )


class SourceRouter(_RouterBase):
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

    def __init__(
        self,
        config: SourcesConfig,
        clients: Mapping[str, Union[PluginClient, SecretSource]],
        *,
        missing: Optional[Mapping[str, BaseException]] = None,
        cache: bool = False,
        max_ttl: Optional[float] = None,
        owns_clients: bool = False,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(config, clients, missing, name)
        self._clients: List[PluginClient] = []
        self._sources: Dict[str, SecretSource] = {}
        for src_name, client in clients.items():
            if isinstance(client, PluginClient):
                self._clients.append(client)
                cache_for = LeaseCache(max_ttl=max_ttl) if cache else None
                self._sources[src_name] = PluginSecretSource(client, cache=cache_for, name=src_name)
            else:
                self._sources[src_name] = client
        self._owns = owns_clients

    @classmethod
    def open(
        cls,
        config: Union[SourcesConfig, _PathArg],
        plugins_dir: Union[_PathArg, Sequence[_PathArg]],
        *,
        policy: Optional[LifetimePolicy] = None,
        policies: Optional[Mapping[str, LifetimePolicy]] = None,
        cache: bool = False,
        max_ttl: Optional[float] = None,
    ) -> SourceRouter:
        """A router that owns one new client per source: the plugin named by the
        source's ``type``, found in ``plugins_dir`` (a directory or a list),
        inited with the source's name and settings. ``policies`` maps source
        names to their own :class:`LifetimePolicy`. Nothing is spawned yet."""
        cfg = config if isinstance(config, SourcesConfig) else load_sources(config)
        found, missing = find_source_plugins(cfg, plugins_dir)
        clients = {
            src.name: PluginClient(
                found[src.name],
                policy=_policy_for(src.name, policy, policies),
                source_name=src.name,
                config=src.init_config(),
            )
            for src in cfg.sources
            if src.name in found
        }
        return cls(cfg, clients, missing=missing, cache=cache, max_ttl=max_ttl, owns_clients=True)

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
        src = self._sources.get(name)
        if src is None:
            raise self._no_source(name)
        return src

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
            return self.source(fallback).get(r.reference)

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

        threads = [threading.Thread(target=ask, args=(n,), name="plugin-client-router-status") for n in self._config.names()]
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


class _AsyncClientSource:
    """An :class:`AsyncPluginClient` as a source: the errors and the cache of
    :class:`~plugin_client.source.PluginSecretSource`, awaited."""

    def __init__(self, client: AsyncPluginClient, name: str, cache: Optional[LeaseCache]) -> None:
        self.client = client
        self.name = name
        self.cache = cache

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return await make()
        except PluginClientError as exc:
            raise source_error(exc, source=self.name) from exc

    async def is_available(self) -> SourceStatus:
        try:
            res = await self.client.is_available()
        except PluginClientError as exc:
            kind = getattr(exc, "kind", None)
            status = AvailabilityStatus.NEEDS_CREDENTIAL if kind == "needs-credential" else AvailabilityStatus.UNAVAILABLE
            return SourceStatus(status=status, detail=exc.message)
        return SourceStatus(status=res.status, detail=res.detail)

    async def get(self, ref: str) -> Optional[Secret]:
        since = None
        if self.cache is not None:
            hit = self.cache.get(ref)
            if hit is not None:
                return hit
            since = self.cache.generation(ref)
        try:
            res = await self.client.get(ref)
        except PluginClientError as exc:
            mapped = source_error(exc, source=self.name)
            if isinstance(mapped, BadReference) and is_not_found(mapped.reason):
                return None
            raise mapped from exc
        secret = secret_from_reply(res.value, res.lease_seconds)
        if self.cache is not None:
            self.cache.store(ref, secret, since=since)
        return secret

    async def validate(self, ref: str) -> bool:
        return (await self._call(lambda: self.client.validate(ref))).ok

    async def put(self, ref: str, value: Union[str, SecretStr]) -> bool:
        try:
            return (await self._call(lambda: self.client.put(ref, value))).replaced
        finally:
            if self.cache is not None:
                self.cache.invalidate(ref)

    async def delete(self, ref: str) -> bool:
        try:
            return (await self._call(lambda: self.client.delete(ref))).existed
        finally:
            if self.cache is not None:
                self.cache.invalidate(ref)


class AsyncSourceRouter(_RouterBase):
    """:class:`SourceRouter` for asyncio: the same decisions and fallback, over
    :class:`AsyncPluginClient`\\ s (or any :class:`AsyncGetSource`). Its
    ``get_secret``, ``get``, ``validate``, ``put``, ``delete``, ``status``,
    ``is_available`` and ``aclose`` are coroutines; ``resolve`` is not."""

    def __init__(
        self,
        config: SourcesConfig,
        clients: Mapping[str, Union[AsyncPluginClient, AsyncGetSource]],
        *,
        missing: Optional[Mapping[str, BaseException]] = None,
        cache: bool = False,
        max_ttl: Optional[float] = None,
        owns_clients: bool = False,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(config, clients, missing, name)
        self._clients: List[AsyncPluginClient] = []
        self._sources: Dict[str, Any] = {}
        for src_name, client in clients.items():
            if isinstance(client, AsyncPluginClient):
                self._clients.append(client)
                self._sources[src_name] = _AsyncClientSource(client, src_name, LeaseCache(max_ttl=max_ttl) if cache else None)
            else:
                self._sources[src_name] = client
        self._owns = owns_clients

    @classmethod
    def open(
        cls,
        config: Union[SourcesConfig, _PathArg],
        plugins_dir: Union[_PathArg, Sequence[_PathArg]],
        *,
        policy: Optional[LifetimePolicy] = None,
        policies: Optional[Mapping[str, LifetimePolicy]] = None,
        cache: bool = False,
        max_ttl: Optional[float] = None,
    ) -> AsyncSourceRouter:
        """As :meth:`SourceRouter.open`, with :class:`AsyncPluginClient`\\ s."""
        cfg = config if isinstance(config, SourcesConfig) else load_sources(config)
        found, missing = find_source_plugins(cfg, plugins_dir)
        clients = {
            src.name: AsyncPluginClient(
                found[src.name],
                policy=_policy_for(src.name, policy, policies),
                source_name=src.name,
                config=src.init_config(),
            )
            for src in cfg.sources
            if src.name in found
        }
        return cls(cfg, clients, missing=missing, cache=cache, max_ttl=max_ttl, owns_clients=True)

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
        src = self._sources.get(name)
        if src is None:
            raise self._no_source(name)
        return src

    async def get_secret(self, path: str) -> Optional[Secret]:
        """As :meth:`SourceRouter.get_secret`."""
        r = self.resolve(path)
        try:
            return await self.source(r.source).get(r.reference)
        except SourceUnavailable as exc:
            fallback = self._fallback_to(r, exc)
            if fallback is None:
                raise
            return await self.source(fallback).get(r.reference)

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
        report["rules"].append({"rule": "secret", "subject": path, "source": override.source, "ok": up(override.source)})
    for route in cfg.routes:
        report["rules"].append({"rule": "route", "subject": route.prefix, "source": route.source, "ok": up(route.source)})
    if cfg.default is not None:
        d = cfg.default
        report["rules"].append(
            {"rule": "default", "subject": None, "source": d.source, "fallback": d.fallback, "ok": up(d.source) or up(d.fallback)}
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
            result[src.name] = SourceStatus(status=AvailabilityStatus.UNAVAILABLE, detail=f"{type(exc).__name__}: {exc}")

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

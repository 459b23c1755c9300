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
longest matching ``[[route]]`` prefix (ties to the earlier declaration, though
two different prefixes of one length cannot both match a path, and equal ones
are refused), then ``[default]``; else :class:`~plugin_client.errors.NoRoute`. The reference a
plugin gets: a ``[secret]`` entry's ``reference``; for a prefix route and the
default, the path itself. devboy-tools leaves mapping a routed path to a
reference to the source ("the keychain source uses the path directly", ADR-021
§2, as its local-vault does); a subprocess plugin sees only the reference, so
it gets the whole path and maps it itself. A host that maps on the plugin's
behalf finds the route's extra keys in :attr:`Resolution.settings` and the path
after the prefix in :attr:`Resolution.tail`.

The routers that turn a decision into a value, and the pre-flight, are in
:mod:`plugin_client.source_router`.

This module reads and decides only: it starts no plugin and never prints.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ._enums import ValueEnum
from .errors import (
    BadRoutePrefix,
    BadSecretPath,
    BadSourceName,
    BadSourceType,
    DuplicateRoutePrefix,
    DuplicateSource,
    ManifestParseError,
    NoRoute,
    SourcesError,
    SourcesFieldError,
    SourcesFileError,
    SourcesInvalid,
    UndefinedSource,
    UnknownSource,
)
from .manifest import DEFAULT_PREFIX, parse_toml_document

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
    "secret_path_problem",
)

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
_MAX_FILE_BYTES = 1 << 20


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


# --- the model --------------------------------------------------------------------


class RouteKind(ValueEnum):
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
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    def __repr__(self) -> str:
        # The keys only: a setting's value is the user's, and a repr ends up in logs.
        return f"SourceDef(name={self.name!r}, type={self.type!r}, settings={sorted(self.settings)!r})"

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
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)


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
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)

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
            f"Sources file {self.origin!r} defines no source {name!r}; use one of {self.names()!r}",
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
                return Resolution(
                    path, route.source, path, RouteKind.ROUTE, prefix=route.prefix, settings=route.settings
                )
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
    :class:`~plugin_client.errors.SourcesFileError` (missing, unreadable, not a
    regular file, over 1 MiB, not TOML) or :class:`~plugin_client.errors.SourcesInvalid`
    (every rule it breaks)."""
    spath = str(Path(path).absolute())
    try:
        # O_NONBLOCK: a FIFO named by mistake must not hang the host (as for manifests).
        fd = os.open(spath, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SourcesFileError(
            f"Sources file {spath!r} does not exist; check the path", origin=spath, errno=errno.ENOENT
        ) from None
    except OSError as exc:
        raise SourcesFileError(
            f"Sources file {spath!r} cannot be opened ({exc.strerror}); fix its permissions",
            origin=spath,
            errno=exc.errno,
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SourcesFileError(
                f"Sources file {spath!r} is a directory; name the sources.toml inside it",
                origin=spath,
                errno=errno.EISDIR,
            )
        if not stat.S_ISREG(mode):
            raise SourcesFileError(
                f"Sources file {spath!r} is not a regular file; name a TOML file", origin=spath
            )
        chunks: List[bytes] = []
        total = 0
        while total <= _MAX_FILE_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise SourcesFileError(
            f"Sources file {spath!r} cannot be read ({exc.strerror}); fix the file", origin=spath, errno=exc.errno
        ) from None
    finally:
        os.close(fd)
    if total > _MAX_FILE_BYTES:
        raise SourcesFileError(
            f"Sources file {spath!r} is larger than {_MAX_FILE_BYTES} bytes; a routing file is far smaller: "
            "check the path",
            origin=spath,
        )
    return parse_sources(b"".join(chunks), origin=spath)


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
        message = f"{subject[:1].upper()}{subject[1:]} in {self.origin!r} {text}"
        self.problems.append(cls(message, origin=self.origin, subject=subject, **kw))

    def check(self, doc: Dict[str, Any]) -> SourcesConfig:
        for key in doc:
            if key not in _TOP_KEYS:
                self.add(
                    SourcesFieldError,
                    f"the key {_short(key)}",
                    "is not part of a routing file; the file has [[source]], [default], [[route]] and "
                    '[secret."<path>"] entries: rename or remove it',
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
                    "with '-' or '.'): fix the type",
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
                self.add(
                    SourcesFieldError, subject, 'is not a table; write [secret."<path>"] with source and reference'
                )
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

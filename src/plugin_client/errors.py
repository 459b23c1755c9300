"""The public exception hierarchy of plugin-client.

Every error the library raises to a host is a :class:`PluginClientError`.
Messages are one capitalized sentence (or two) that name the plugin, show
values with ``!r`` and say what to do. No message, ``repr`` or attribute of
these errors ever holds a secret value or a raw reply line: callers pass
only names, references, kinds and lengths.

The classes of the plugin's answers that both sides raise are one class per
error kind where a host and a plugin author mean the same thing:
:class:`BadReference` and :class:`NeedsCredential` are what
:class:`~plugin_client.source.PluginSecretSource` raises to a host and what a
plugin's handler raises (through :mod:`plugin_client.plugin`) to answer with
that kind; :class:`ReplyError` is what makes an exception an answer. The
plugin SDK imports this module, so it imports nothing heavy (no pydantic, no
``typing`` at run time) and holds no logic beyond building messages.
"""

from __future__ import annotations

from ._enums import ErrorKind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Dict, Optional

__all__ = (
    "PluginClientError",
    "ClientClosed",
    "SpawnError",
    "InitError",
    "PluginDisabled",
    "RequestTimeout",
    "PluginCrashed",
    "ProtocolError",
    "MalformedReply",
    "BlankReply",
    "InvalidUtf8Reply",
    "InvalidJsonReply",
    "BadJsonRpcVersion",
    "BadReplyId",
    "AmbiguousReply",
    "ReplyShapeError",
    "ReplyIdMismatch",
    "MalformedRequest",
    "FrameTooLarge",
    "UnsupportedCapability",
    "PluginError",
    "PluginUnsupportedCapability",
    "ManifestError",
    "BadManifestName",
    "ManifestNameMismatch",
    "ManifestParseError",
    "ManifestFieldError",
    "ManifestUnreadable",
    "ExecutableMissing",
    "ExecutableNotExecutable",
    "UnsafePermissions",
    "ChecksumMismatch",
    "ExecutableChanged",
    "SourceError",
    "SourceUnavailable",
    "SourceUnsupportedCapability",
    "BadReference",
    "NeedsCredential",
    "ReplyError",
    "UnknownPlugin",
    "DuplicatePlugin",
    "PluginsDirUnavailable",
    "SourcesError",
    "SourcesFileError",
    "SourcesInvalid",
    "SourcesFieldError",
    "BadSourceName",
    "DuplicateSource",
    "BadSourceType",
    "UndefinedSource",
    "BadRoutePrefix",
    "DuplicateRoutePrefix",
    "BadSecretPath",
    "NoRoute",
    "UnknownSource",
    "SourcePluginMissing",
)


class PluginClientError(Exception):
    """Base of every error plugin-client raises. ``plugin`` names the plugin, if known."""

    def __init__(self, message: str, *, plugin: Optional[str] = None) -> None:
        super().__init__(message)
        self.plugin = plugin

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- process lifetime -------------------------------------------------------


class SpawnError(PluginClientError):
    """The plugin's executable could not be started (missing, not executable, changed)."""


class InitError(PluginClientError):
    """The plugin started but its ``init`` handshake failed or timed out."""


class PluginDisabled(PluginClientError):
    """The plugin crashed ``restart_cap`` times within ``restart_window``; an operator must
    call ``clear_disabled()``."""


class RequestTimeout(PluginClientError, TimeoutError):
    """The plugin did not answer within its deadline; the process was killed."""


class PluginCrashed(PluginClientError):
    """The plugin exited, or closed its stdout, while a request was in flight."""


# --- protocol -----------------------------------------------------------------


class ProtocolError(PluginClientError):
    """The plugin broke the wire protocol; its process is recycled."""


class MalformedReply(ProtocolError):
    """A reply line that cannot be decoded as a JSON-RPC 2.0 reply to the request sent."""


class BlankReply(MalformedReply):
    """The reply line was empty or whitespace only."""


class InvalidUtf8Reply(MalformedReply):
    """The reply line is not valid UTF-8."""


class InvalidJsonReply(MalformedReply):
    """The reply line is not a JSON object."""


class BadJsonRpcVersion(MalformedReply):
    """The reply's ``jsonrpc`` member is missing or not ``"2.0"``."""


class BadReplyId(MalformedReply):
    """The reply's ``id`` is missing, not an integer, negative or above 2**64-1."""


class AmbiguousReply(MalformedReply):
    """The reply has both ``result`` and ``error``, or neither."""


class ReplyShapeError(MalformedReply):
    """The ``result`` (or ``error``) does not have the shape its method requires."""


class ReplyIdMismatch(ProtocolError):
    """The reply answers another request id than the one in flight."""

    def __init__(self, message: str, *, expected: int, got: int, plugin: Optional[str] = None) -> None:
        super().__init__(message, plugin=plugin)
        self.expected = expected
        self.got = got


class MalformedRequest(ProtocolError):
    """A request line that a plugin cannot decode (raised on the plugin side, by the SDK's
    ``decode_request``). ``request_id`` is the request's id when it could be read, so the
    plugin can still answer it with an error; ``method`` is the method name, if it was a
    string."""

    def __init__(
        self,
        message: str,
        *,
        request_id: Optional[int] = None,
        method: Optional[str] = None,
        plugin: Optional[str] = None,
    ) -> None:
        super().__init__(message, plugin=plugin)
        self.request_id = request_id
        self.method = method


class FrameTooLarge(ProtocolError):
    """A reply line grew past ``max_frame_bytes``."""


# --- the plugin's own answers -------------------------------------------------


class UnsupportedCapability(PluginClientError):
    """The plugin does not do this method: refused by the host from the capability bits,
    or answered ``unsupported-capability`` by the plugin."""

    def __init__(self, message: str, *, capability: str, plugin: Optional[str] = None) -> None:
        super().__init__(message, plugin=plugin)
        self.capability = capability


class PluginError(PluginClientError):
    """The plugin answered with an error object. ``kind`` is one of ``unavailable``,
    ``unsupported-capability``, ``bad-reference``, ``needs-credential`` or ``other``
    (foreign error shapes and unknown kinds become ``other``, with the foreign
    ``code`` kept)."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        detail: Optional[str] = None,
        reference: Optional[str] = None,
        reason: Optional[str] = None,
        capability: Optional[str] = None,
        code: Optional[int] = None,
        plugin: Optional[str] = None,
    ) -> None:
        super().__init__(message, plugin=plugin)
        self.kind = kind
        self.detail = detail
        self.reference = reference
        self.reason = reason
        self.capability = capability
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, plugin={self.plugin!r}, message={self.message!r})"


# ``capability`` is Optional[str] on PluginError and str on UnsupportedCapability; here it
# is always a str, which satisfies both.
class PluginUnsupportedCapability(PluginError, UnsupportedCapability):  # type: ignore[misc]
    """The plugin itself answered ``unsupported-capability``: both a :class:`PluginError`
    (``kind="unsupported-capability"``, the process stays up) and an
    :class:`UnsupportedCapability`, like the host's own refusal. ``capability`` is the
    capability the plugin named, or the method's name if it named none."""

    def __init__(
        self,
        message: str,
        *,
        capability: str,
        detail: Optional[str] = None,
        code: Optional[int] = None,
        plugin: Optional[str] = None,
    ) -> None:
        # Not super().__init__: the two bases' initialisers take different keywords.
        PluginClientError.__init__(self, message, plugin=plugin)
        self.kind = "unsupported-capability"
        self.detail = detail
        self.reference = None
        self.reason = None
        self.capability = capability
        self.code = code


# --- manifests and executables ------------------------------------------------


class ManifestError(PluginClientError):
    """A manifest or the executable it names is not usable. ``path`` is the file at fault."""

    def __init__(self, message: str, *, path: str, plugin: Optional[str] = None) -> None:
        super().__init__(message, plugin=plugin)
        self.path = path


class BadManifestName(ManifestError):
    """The manifest's file name is not ``<prefix><name>.toml``."""


class ManifestNameMismatch(ManifestError):
    """The ``name`` inside the manifest differs from the one in its file name."""


class ManifestParseError(ManifestError):
    """The manifest is not valid TOML. ``line`` is where the parser stopped, if known."""

    def __init__(self, message: str, *, path: str, line: Optional[int] = None, plugin: Optional[str] = None) -> None:
        super().__init__(message, path=path, plugin=plugin)
        self.line = line


class ManifestFieldError(ManifestError):
    """A field is unknown, missing or invalid."""


class ManifestUnreadable(ManifestError):
    """The manifest, its executable or the plugins directory could not be read for a
    reason other than its content: an operating-system error other than "not found"
    (``errno`` says which, e.g. ``EACCES``), a file that is not a regular file, or an
    executable that kept changing while it was being verified."""

    def __init__(self, message: str, *, path: str, errno: Optional[int] = None, plugin: Optional[str] = None) -> None:
        super().__init__(message, path=path, plugin=plugin)
        self.errno = errno


class ExecutableMissing(ManifestError):
    """The executable named by the manifest does not exist."""


class ExecutableNotExecutable(ManifestError):
    """The executable is not a regular file with an execute bit."""


class UnsafePermissions(ManifestError):
    """The executable, or a directory on its resolved path up to ``/``, could be changed
    or renamed by a user other than root and the host's own user. ``component`` is
    the file or directory at fault and ``rule`` the rule it breaks: ``"symlink"``
    (the executable is a symbolic link), ``"owner"`` (owned by another user),
    ``"writable"`` (writable by group or others, a directory without the sticky
    bit), or ``"sticky"`` (owned by another user inside a sticky directory that
    others can write)."""

    def __init__(
        self,
        message: str,
        *,
        path: str,
        component: Optional[str] = None,
        rule: Optional[str] = None,
        plugin: Optional[str] = None,
    ) -> None:
        super().__init__(message, path=path, plugin=plugin)
        self.component = component
        self.rule = rule


class ChecksumMismatch(ManifestError):
    """The executable's SHA-256 differs from ``checksum_sha256``."""

    def __init__(self, message: str, *, path: str, declared: str, actual: str, plugin: Optional[str] = None) -> None:
        super().__init__(message, path=path, plugin=plugin)
        self.declared = declared
        self.actual = actual


class ExecutableChanged(SpawnError):
    """The executable changed on disk after it was verified; it was not run."""


class ClientClosed(PluginClientError):
    """The client was shut down; make a new one."""


# --- the SecretSource adapter (plugin_client.source) ------------------------------
#
# What a host sees through PluginSecretSource: one exception per error kind, all
# under SourceError. The PluginError or client failure that caused one is its
# __cause__.


class SourceError(PluginClientError):
    """Base of the errors :class:`~plugin_client.source.PluginSecretSource` raises, and
    the error for the plugin's ``other`` kind (including foreign JSON-RPC errors and
    unknown kinds). The original error is ``__cause__``."""


class SourceUnavailable(SourceError):
    """The source cannot answer now: the plugin's backend is down (``unavailable``), or
    the client failed (timeout, crash, disabled, spawn, init, protocol, manifest)."""


class SourceUnsupportedCapability(SourceError, UnsupportedCapability):
    """The source does not do this method (``unsupported-capability``, from the plugin
    or from the host's capability gate). Also an :class:`UnsupportedCapability`."""

    def __init__(self, message: str, *, capability: str, plugin: Optional[str] = None) -> None:
        UnsupportedCapability.__init__(self, message, capability=capability, plugin=plugin)


class ReplyError(Exception):
    """An exception that a plugin's handler raises to answer a request with the error
    kind ``kind``; ``fields()`` are the error object's members besides ``kind``."""

    kind: ClassVar[ErrorKind] = ErrorKind.OTHER

    def fields(self) -> Dict[str, str]:
        raise NotImplementedError


# Tells the host's constructor call (message, reference=..., reason=...) from a
# plugin handler's (reference, reason): a reference may itself be None.
_PLUGIN_FORM: Any = object()


class BadReference(SourceError, ReplyError):
    """A reference is malformed or unknown (``bad-reference``). ``get`` returns ``None``
    instead when ``reason`` is "not found".

    A host gets it from :class:`~plugin_client.source.PluginSecretSource`, built as
    ``BadReference(message, reference=..., reason=..., plugin=...)``. A plugin's
    handler raises ``BadReference(reference, reason="malformed")``, and the SDK
    answers with the kind and both fields.
    """

    kind = ErrorKind.BAD_REFERENCE

    def __init__(
        self,
        text: str,
        reason: Optional[str] = None,
        *,
        reference: Optional[str] = _PLUGIN_FORM,
        plugin: Optional[str] = None,
    ) -> None:
        if reference is _PLUGIN_FORM:
            reference, reason = text, "malformed" if reason is None else reason
            text = f"bad reference {reference!r}: {reason}"
        super().__init__(text, plugin=plugin)
        self.reference = reference
        self.reason = reason

    def fields(self) -> Dict[str, str]:
        return {"reference": str(self.reference), "reason": str(self.reason)}


class NeedsCredential(SourceError, ReplyError):
    """The plugin is up but needs e.g. a sign-in (``needs-credential``); ``detail`` says
    what the user should do.

    A host gets it built as ``NeedsCredential(message, detail=..., plugin=...)``; a
    plugin's handler raises ``NeedsCredential(detail)`` (the message is the detail).
    """

    kind = ErrorKind.NEEDS_CREDENTIAL

    def __init__(self, message: str, *, detail: Optional[str] = _PLUGIN_FORM, plugin: Optional[str] = None) -> None:
        super().__init__(message, plugin=plugin)
        self.detail = message if detail is _PLUGIN_FORM else detail

    def fields(self) -> Dict[str, str]:
        return {"detail": str(self.detail)}


# --- hosts of many plugins (plugin_client.host, plugin_client.aio_host) -----------


class UnknownPlugin(PluginClientError, KeyError):
    """A host has no loaded plugin of this name (never loaded, broken, or removed by
    ``reload()``). Also a :class:`KeyError`, as ``host[name]`` is a lookup; the message
    says which names the host has. ``name`` is the name asked for."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message, plugin=name)
        self.name = name

    def __str__(self) -> str:
        # KeyError's own __str__ shows its argument's repr, quotes and all.
        return self.message


class DuplicatePlugin(ManifestError):
    """Two plugins directories of one host hold a manifest of the same name: the first
    directory's is used and this one (``path``) is not. ``kept`` is the manifest used."""

    def __init__(self, message: str, *, path: str, kept: str, plugin: Optional[str] = None) -> None:
        super().__init__(message, path=path, plugin=plugin)
        self.kept = kept


class PluginsDirUnavailable(ManifestUnreadable):
    """A host's plugins directory is missing (``errno`` is ``ENOENT``), not a directory,
    or cannot be listed: no plugin of it is loaded."""
# --- sources.toml: the routing file (plugin_client.sources) -----------------------


class SourcesError(PluginClientError):
    """Base of the errors of a ``sources.toml`` routing file and of routing a path
    through one. ``origin`` is the file (or ``"<string>"``), ``subject`` the entry at
    fault as a message names it (e.g. ``"route 2 (prefix 'team/')"``), if any."""

    def __init__(
        self,
        message: str,
        *,
        origin: Optional[str] = None,
        subject: Optional[str] = None,
        plugin: Optional[str] = None,
    ) -> None:
        super().__init__(message, plugin=plugin)
        self.origin = origin
        self.subject = subject


class SourcesFileError(SourcesError):
    """The routing file cannot be read, or is not valid TOML. ``line`` is where the
    parser stopped and ``errno`` the operating system's error, if known."""

    def __init__(
        self,
        message: str,
        *,
        origin: Optional[str] = None,
        line: Optional[int] = None,
        errno: Optional[int] = None,
    ) -> None:
        super().__init__(message, origin=origin)
        self.line = line
        self.errno = errno


class SourcesInvalid(SourcesError):
    """The routing file parsed but breaks the router's rules. ``problems`` holds every
    problem found, each one of the typed errors below, in file order: one run of
    the check shows them all."""

    def __init__(self, message: str, *, origin: Optional[str] = None, problems: Any = ()) -> None:
        super().__init__(message, origin=origin)
        self.problems = tuple(problems)


class SourcesFieldError(SourcesError):
    """An entry has a missing, unknown or mistyped key (e.g. ``[[source]]`` without
    ``type``, or a ``[[routes]]`` table)."""


class BadSourceName(SourcesError):
    """A source's ``name`` does not match ``^[a-z0-9][a-z0-9_-]*$``."""


class DuplicateSource(SourcesError):
    """Two ``[[source]]`` entries have the same ``name``."""


class BadSourceType(SourcesError):
    """A source's ``type`` cannot name a plugin (a manifest ``devboy-source-<type>.toml``)."""


class UndefinedSource(SourcesError):
    """A ``[[route]]``, ``[default]`` or ``[secret."<path>"]`` names a source that no
    ``[[source]]`` defines. ``source`` is that name."""

    def __init__(
        self, message: str, *, source: str, origin: Optional[str] = None, subject: Optional[str] = None
    ) -> None:
        super().__init__(message, origin=origin, subject=subject)
        self.source = source


class BadRoutePrefix(SourcesError):
    """A ``[[route]]`` prefix does not end in ``/``."""


class DuplicateRoutePrefix(SourcesError):
    """Two ``[[route]]`` entries have the same ``prefix``."""


class BadSecretPath(SourcesError, ValueError):
    """A secret path (a ``[secret."<path>"]`` key, or a path given to ``resolve``) is
    not ``<scope>/<provider>/<purpose>``: three or more ``/``-separated segments of
    ``[a-z][a-z0-9-]*``, the first not a reserved ``__*`` or ``_test`` scope. Also a
    ``ValueError``. ``path`` is the offending path."""

    def __init__(
        self, message: str, *, path: str, origin: Optional[str] = None, subject: Optional[str] = None
    ) -> None:
        super().__init__(message, origin=origin, subject=subject)
        self.path = path


class NoRoute(SourcesError, LookupError):
    """No ``[secret]`` entry, no ``[[route]]`` prefix and no ``[default]`` covers the
    path. Also a ``LookupError``. ``path`` is the path."""

    def __init__(self, message: str, *, path: str, origin: Optional[str] = None) -> None:
        super().__init__(message, origin=origin)
        self.path = path


class UnknownSource(SourcesError, KeyError):
    """A source name that the routing file does not define was asked for. Also a
    ``KeyError``. ``source`` is the name."""

    def __init__(self, message: str, *, source: str, origin: Optional[str] = None) -> None:
        super().__init__(message, origin=origin)
        self.source = source

    def __str__(self) -> str:  # KeyError's would quote the whole message
        return self.message


class SourcePluginMissing(SourcesError):
    """A source's plugin (``devboy-source-<type>.toml``) is not in the plugins
    directories. ``source`` is the source's name; its plugin is ``plugin``."""

    def __init__(self, message: str, *, source: str, plugin: str, origin: Optional[str] = None) -> None:
        super().__init__(message, origin=origin, plugin=plugin)
        self.source = source

"""plugin-client: run out-of-tree subprocess secret-source plugins safely and fast.

The public API is re-exported here; ``IMPLEMENTATION`` says which core is in
use (``"cython"`` or ``"python"``) and ``NO_EXTENSIONS`` whether the compiled
one was turned off or missing.

Every name is loaded on first use (PEP 562), not when the package is imported:
a sync host that takes ``PluginClient`` never loads the asyncio client, and a
plugin that imports :mod:`plugin_client.plugin` loads neither pydantic nor the
core, nor the clients. So this module imports nothing itself; the imports under
``TYPE_CHECKING`` are for type checkers only.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Tuple

    from ._impl import IMPLEMENTATION, NO_EXTENSIONS
    from ._host_core import ReloadReport
    from ._host_paths import AsyncHostSecretSource, HostSecretSource
    from .aio import AsyncPluginClient
    from .aio_host import AsyncPluginHost
    from .client import PluginClient
    from .host import PluginHost
    from .errors import (
        AmbiguousReply,
        BadJsonRpcVersion,
        BadManifestName,
        BadReplyId,
        BlankReply,
        ChecksumMismatch,
        ClientClosed,
        ExecutableChanged,
        ExecutableMissing,
        ExecutableNotExecutable,
        FrameTooLarge,
        InitError,
        InvalidJsonReply,
        InvalidUtf8Reply,
        MalformedReply,
        ManifestError,
        ManifestFieldError,
        ManifestNameMismatch,
        ManifestParseError,
        ManifestUnreadable,
        PluginClientError,
        PluginCrashed,
        PluginDisabled,
        PluginError,
        ProtocolError,
        ReplyIdMismatch,
        ReplyShapeError,
        RequestTimeout,
        SpawnError,
        UnsafePermissions,
        UnsupportedCapability,
    )
    from .errors import (
        DuplicatePlugin,
        PluginsDirUnavailable,
        UnknownPlugin,
    )
    from .errors import (
        BadReference,
        NeedsCredential,
        SourceError,
        SourceUnavailable,
        SourceUnsupportedCapability,
    )
    from .events import EventKind, PluginEvent, flush_events
    from .health import ExitInfo, ExitStage, PluginHealth, PluginState
    from .manifest import (
        DEFAULT_PREFIX,
        DiscoveryOutcome,
        LoadedPlugin,
        PluginManifest,
        VerifiedExecutable,
        discover_plugins,
        load_manifest,
        load_plugin,
        verify_executable,
    )
    from .policy import LifetimePolicy
    from ._enums import AvailabilityStatus, Capability, ErrorKind, Method
    from .protocol import (
        PROTOCOL_VERSION,
        Call,
        DeleteCall,
        DeleteResult,
        GetCall,
        GetResult,
        InitCall,
        InitResult,
        IsAvailableCall,
        IsAvailableResult,
        KeyMaterialCall,
        KeyMaterialResult,
        ListCall,
        ListEntry,
        ListResult,
        PutCall,
        PutResult,
        Result,
        ValidateCall,
        ValidateResult,
    )
    from .source import (
        AsyncPluginSecretSource,
        LeaseCache,
        PluginSecretSource,
        Secret,
        SecretRef,
        SecretSource,
        SourceStatus,
    )
    from .errors import (
        BadRoutePrefix,
        BadSecretPath,
        BadSourceName,
        BadSourceType,
        DuplicateRoutePrefix,
        DuplicateSource,
        NoRoute,
        HostHasNoSources,
        SourcePluginMissing,
        SourcesError,
        SourcesFieldError,
        SourcesFileError,
        SourcesInvalid,
        UndefinedSource,
        UnknownSource,
    )
    from .source_router import AsyncGetSource, AsyncSourceRouter, SourceRouter, find_source_plugins, preflight_sources
    from .sources import (
        DefaultRule,
        Resolution,
        RouteKind,
        RouteRule,
        SecretOverride,
        SourceDef,
        SourcesConfig,
        load_sources,
        parse_sources,
    )

__version__ = "0.1.0"

__all__ = (
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "PROTOCOL_VERSION",
    "DEFAULT_PREFIX",
    # client
    "PluginClient",
    "AsyncPluginClient",
    "LifetimePolicy",
    "PluginHealth",
    "PluginState",
    "ExitInfo",
    "ExitStage",
    # events
    "PluginEvent",
    "EventKind",
    "flush_events",
    # hosts of many plugins
    "PluginHost",
    "AsyncPluginHost",
    "ReloadReport",
    "UnknownPlugin",
    "DuplicatePlugin",
    "PluginsDirUnavailable",
    # manifests
    "PluginManifest",
    "LoadedPlugin",
    "VerifiedExecutable",
    "DiscoveryOutcome",
    "load_manifest",
    "load_plugin",
    "verify_executable",
    "discover_plugins",
    # protocol
    "Capability",
    "Method",
    "ErrorKind",
    "AvailabilityStatus",
    "Call",
    "InitCall",
    "IsAvailableCall",
    "GetCall",
    "ListCall",
    "ValidateCall",
    "PutCall",
    "DeleteCall",
    "KeyMaterialCall",
    "Result",
    "InitResult",
    "IsAvailableResult",
    "GetResult",
    "ListEntry",
    "ListResult",
    "ValidateResult",
    "PutResult",
    "DeleteResult",
    "KeyMaterialResult",
    # errors
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
    "FrameTooLarge",
    "UnsupportedCapability",
    "PluginError",
    "ManifestError",
    "BadManifestName",
    "ManifestNameMismatch",
    "ManifestParseError",
    "ManifestUnreadable",
    "ManifestFieldError",
    "ExecutableMissing",
    "ExecutableNotExecutable",
    "UnsafePermissions",
    "ChecksumMismatch",
    "ExecutableChanged",
    # the SecretSource adapter
    "SecretSource",
    "PluginSecretSource",
    "AsyncPluginSecretSource",
    "SourceStatus",
    "Secret",
    "SecretRef",
    "LeaseCache",
    "SourceError",
    "SourceUnavailable",
    "SourceUnsupportedCapability",
    "BadReference",
    "NeedsCredential",
    # sources.toml: routes to sources
    "SourcesConfig",
    "SourceDef",
    "DefaultRule",
    "RouteRule",
    "SecretOverride",
    "Resolution",
    "RouteKind",
    "load_sources",
    "parse_sources",
    "SourceRouter",
    "AsyncSourceRouter",
    "AsyncGetSource",
    "find_source_plugins",
    "preflight_sources",
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
    "HostHasNoSources",
    "HostSecretSource",
    "AsyncHostSecretSource",
)

# name -> the module that defines it, imported on first access
_MODULES: Dict[str, Tuple[str, ...]] = {
    "_enums": (
        "AvailabilityStatus", "Capability", "ErrorKind", "Method",
    ),
    "_host_core": (
        "ReloadReport",
    ),
    "_host_paths": (
        "AsyncHostSecretSource", "HostSecretSource",
    ),
    "_impl": (
        "IMPLEMENTATION", "NO_EXTENSIONS",
    ),
    "aio": (
        "AsyncPluginClient",
    ),
    "aio_host": (
        "AsyncPluginHost",
    ),
    "client": (
        "PluginClient",
    ),
    "host": (
        "PluginHost",
    ),
    "errors": (
        "AmbiguousReply", "BadJsonRpcVersion", "BadManifestName", "BadReplyId", "BlankReply",
        "ChecksumMismatch", "ClientClosed", "ExecutableChanged", "ExecutableMissing",
        "ExecutableNotExecutable", "FrameTooLarge", "InitError", "InvalidJsonReply",
        "InvalidUtf8Reply", "MalformedReply", "ManifestError", "ManifestFieldError",
        "ManifestNameMismatch", "ManifestParseError", "ManifestUnreadable", "PluginClientError",
        "PluginCrashed", "PluginDisabled", "PluginError", "ProtocolError", "ReplyIdMismatch",
        "ReplyShapeError", "RequestTimeout", "SpawnError", "UnsafePermissions",
        "UnsupportedCapability", "BadReference", "NeedsCredential", "SourceError",
        "SourceUnavailable", "SourceUnsupportedCapability", "DuplicatePlugin", "PluginsDirUnavailable",
        "UnknownPlugin",
        "SourcesError", "SourcesFileError", "SourcesInvalid", "SourcesFieldError", "BadSourceName",
        "DuplicateSource", "BadSourceType", "UndefinedSource", "BadRoutePrefix", "DuplicateRoutePrefix",
        "BadSecretPath", "NoRoute", "UnknownSource", "SourcePluginMissing", "HostHasNoSources",
    ),
    "events": (
        "EventKind", "PluginEvent", "flush_events",
    ),
    "health": (
        "ExitInfo", "ExitStage", "PluginHealth", "PluginState",
    ),
    "manifest": (
        "DEFAULT_PREFIX", "DiscoveryOutcome", "LoadedPlugin", "PluginManifest",
        "VerifiedExecutable", "discover_plugins", "load_manifest", "load_plugin",
        "verify_executable",
    ),
    "policy": (
        "LifetimePolicy",
    ),
    "protocol": (
        "PROTOCOL_VERSION", "Call", "DeleteCall", "DeleteResult", "GetCall", "GetResult",
        "InitCall", "InitResult", "IsAvailableCall", "IsAvailableResult", "KeyMaterialCall",
        "KeyMaterialResult", "ListCall", "ListEntry", "ListResult", "PutCall", "PutResult",
        "Result", "ValidateCall", "ValidateResult",
    ),
    "source": (
        "AsyncPluginSecretSource", "LeaseCache", "PluginSecretSource", "Secret", "SecretRef", "SecretSource",
        "SourceStatus",
    ),
    "source_router": (
        "AsyncGetSource", "AsyncSourceRouter", "SourceRouter", "find_source_plugins", "preflight_sources",
    ),
    "sources": (
        "DefaultRule", "Resolution", "RouteKind", "RouteRule", "SecretOverride", "SourceDef", "SourcesConfig",
        "load_sources", "parse_sources",
    ),
}
_LAZY: Dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))

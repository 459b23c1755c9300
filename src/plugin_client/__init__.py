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
    from .aio import AsyncPluginClient
    from .client import PluginClient
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
        BadReference,
        NeedsCredential,
        SourceError,
        SourceUnavailable,
        SourceUnsupportedCapability,
    )
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
)

# name -> the module that defines it, imported on first access
_MODULES: Dict[str, Tuple[str, ...]] = {
    "_enums": (
        "AvailabilityStatus", "Capability", "ErrorKind", "Method",
    ),
    "_impl": (
        "IMPLEMENTATION", "NO_EXTENSIONS",
    ),
    "aio": (
        "AsyncPluginClient",
    ),
    "client": (
        "PluginClient",
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
        "SourceUnavailable", "SourceUnsupportedCapability",
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

"""The protocol's enumerations, and the base that makes the project's enums print their value.

Both sides of the wire use these: the host through :mod:`plugin_client.protocol`
(which re-exports them) and the plugin SDK directly, so this module imports
nothing but :mod:`enum` (no pydantic, no typing at run time) and a plugin that
imports it starts fast. It holds no logic beyond how a member prints.
"""

from __future__ import annotations

import enum

__all__ = ("ValueEnum", "Capability", "Method", "ErrorKind", "AvailabilityStatus")


class ValueEnum(str, enum.Enum):
    """A ``str`` enum whose ``str()`` and ``format()`` are its value on every Python.

    ``f"{PluginState.RUNNING}"`` is ``"running"``, as ``enum.StrEnum`` (3.11+)
    would print it; a plain ``(str, Enum)`` prints ``PluginState.RUNNING`` on
    3.11 and later, and a log line or a web page would show that class name.
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)


class Capability(enum.IntFlag):
    """Capability bits a plugin claims in ``init``'s ``capabilities_bits``.

    Bits this version does not know are kept, not rejected (``IntFlag``'s
    default boundary is ``KEEP`` on 3.11+, and 3.9/3.10 keep them as
    pseudo-members), so a newer plugin's claims survive a round trip. A member
    prints as its integer value on every Python, as it does on 3.11+.
    """

    READ = 0x1
    LIST = 0x2
    VALIDATE = 0x4
    WRITE = 0x8
    ROTATE = 0x10
    BIOMETRIC_PROMPT = 0x20
    AUDIT_LOGGED = 0x40
    DELETE = 0x80
    KEY_SOURCE = 0x100

    def __str__(self) -> str:
        return str(int(self))

    def __format__(self, format_spec: str) -> str:
        return format(int(self), format_spec)


class Method(ValueEnum):
    """The JSON-RPC method names."""

    INIT = "secret_source.init"
    IS_AVAILABLE = "secret_source.is_available"
    GET = "secret_source.get"
    LIST = "secret_source.list"
    VALIDATE = "secret_source.validate"
    PUT = "secret_source.put"
    DELETE = "secret_source.delete"
    KEY_MATERIAL = "secret_source.key_material"


class ErrorKind(ValueEnum):
    """The documented ``kind`` tags of an error reply."""

    UNAVAILABLE = "unavailable"
    UNSUPPORTED_CAPABILITY = "unsupported-capability"
    BAD_REFERENCE = "bad-reference"
    NEEDS_CREDENTIAL = "needs-credential"
    OTHER = "other"


class AvailabilityStatus(ValueEnum):
    """``is_available``'s ``status``."""

    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    NEEDS_CREDENTIAL = "needs-credential"

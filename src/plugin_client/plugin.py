"""The plugin SDK: write a secret-source plugin as a small class, not a JSON-RPC loop.

A plugin is a class with one method per protocol method; :func:`serve` runs
the protocol on stdin/stdout and calls it::

    from plugin_client.plugin import NotFound, SecretSourcePlugin, serve

    class Vault(SecretSourcePlugin):
        version = "1.0.0"

        def get(self, reference):
            if reference not in SECRETS:
                raise NotFound(reference)
            return SECRETS[reference], 300          # value, lease in seconds

        def list(self):
            return sorted(SECRETS)

    serve(Vault)

Handler methods, all optional (:class:`SecretSourcePlugin` gives ``init`` and
``is_available`` defaults), and what they may return:

==============================  =================================================================
method                          returns
==============================  =================================================================
``init(source_name, config)``   ``None`` (use the class's ``capabilities``/``version``), a
                                ``(capabilities, version)`` pair, a :class:`Capability`, or an
                                :class:`~plugin_client.protocol.InitResult`
``is_available()``              ``None``/``True`` (available), ``False`` (unavailable), an
                                :class:`AvailabilityStatus` or its string, ``(status, detail)``,
                                or an ``IsAvailableResult``; raising :class:`Unavailable` or
                                :class:`NeedsCredential` answers that status with its detail
``get(reference)``              ``str``/``SecretStr``/:class:`SecretText`, ``(value, lease)`` with the lease in
                                seconds or a ``timedelta``, an object with ``value`` and
                                ``lease``/``lease_seconds``, a ``GetResult``; ``None`` means
                                not found
``list()``                      an iterable of references (``str``), ``(reference, display)``
                                pairs, dicts or ``ListEntry``; or a ``ListResult``
``validate(reference)``         a ``bool``
``put(reference, value)``       ``value`` is a :class:`SecretText`; return whether a value was replaced
``delete(reference)``           whether it existed
``key_material(purpose)``       ``bytes`` or ``SecretBytes``
==============================  =================================================================

Capabilities: :class:`SecretSourcePlugin` claims exactly the methods the
subclass overrides (``get`` -> READ, ``list`` -> LIST, ``validate`` ->
VALIDATE, ``put`` -> WRITE, ``delete`` -> DELETE, ``key_material`` ->
KEY_SOURCE), unless the class sets ``capabilities``. A call of a method the
plugin did not claim, or does not implement, and a call of an unknown method
are answered ``unsupported-capability``.

Errors: raise :class:`NotFound`, :class:`BadReference`, :class:`Unavailable`,
:class:`NeedsCredential`, :class:`Unsupported` or :class:`Failure` to answer
with that error kind (any :class:`ReplyError` answers with its ``kind``).
:class:`BadReference` and :class:`NeedsCredential` are the very classes a host
catches from :class:`~plugin_client.source.PluginSecretSource`
(``plugin_client.BadReference``); for the other kinds a host sees
``SourceUnavailable`` (``Unavailable``), ``SourceUnsupportedCapability``
(``Unsupported``) and ``SourceError`` (``Failure``). Any other exception is answered as ``other`` with its
type and message as the detail; its traceback goes to stderr (through
``logging``) and the plugin keeps serving.

stdout belongs to the protocol: while serving, file descriptor 1 and
``sys.stdout`` point to stderr, so a stray ``print()``, a C library or a child
process cannot corrupt a frame, and fd 0 points to ``/dev/null``, so nothing
but the SDK reads requests. Replies go to a private duplicate of the original
stdout. :func:`serve` returns (and the plugin exits with status 0) when stdin
reaches EOF or on SIGTERM; a request being handled when SIGTERM arrives is
answered first.

Compatibility with the existing Rust host: requests without ``params`` are
accepted, replies use exactly the documented shapes (optional members that
are ``None`` are left out), and ``init`` refuses a protocol major version
other than 1.

Light by design: this module and what it imports (the protocol's enums and the error
classes; the server, :mod:`plugin_client._plugin_serve`, and its
:mod:`plugin_client._plugin_wire` once :func:`serve` runs) load neither pydantic
nor the core, the clients or asyncio, and not even ``typing``, ``logging`` or ``base64`` until
they are needed, so an SDK plugin starts about as fast as one written on the
standard library's ``json`` alone. Handlers may still return the host-side
pydantic models (``GetResult``, ``SecretStr``, ...): they are read by their
attributes, never imported here.
"""

from __future__ import annotations

from ._enums import AvailabilityStatus, Capability, ErrorKind
from .errors import BadReference, NeedsCredential, ReplyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Dict, Optional, Tuple, Union

    from collections.abc import Iterable as _Iterable
    from collections.abc import Mapping as _Mapping
    from datetime import timedelta

    from pydantic import SecretBytes, SecretStr

    from ._plugin_serve import Stream
    from .protocol import (
        DeleteResult,
        GetResult,
        InitResult,
        IsAvailableResult,
        KeyMaterialResult,
        ListEntry,
        ListResult,
        PutResult,
        ValidateResult,
    )

    # What each handler may return (the table in the module docstring), for type checkers.
    _Text = Union[str, SecretStr, "SecretText"]
    _Lease = Union[int, float, timedelta, None]
    InitReturn = Union[None, int, Tuple[int, str], InitResult]
    AvailableReturn = Union[None, bool, str, Tuple[Union[bool, str], Optional[str]], IsAvailableResult]
    GetReturn = Union[None, _Text, Tuple[_Text, _Lease], GetResult]
    ListItem = Union[str, Tuple[str, Optional[str]], _Mapping[str, Any], ListEntry]
    ListReturn = Union[None, _Iterable[ListItem], ListResult]
    KeyReturn = Union[bytes, bytearray, memoryview, SecretBytes, KeyMaterialResult]

__all__ = (
    "SecretSourcePlugin",
    "serve",
    "SecretText",
    "Capability",
    "AvailabilityStatus",
    "ReplyError",
    "Unavailable",
    "NeedsCredential",
    "BadReference",
    "NotFound",
    "Unsupported",
    "Failure",
)


# --- what a handler raises to answer with an error -------------------------------
# ReplyError, BadReference and NeedsCredential live in plugin_client.errors: the
# host raises the same classes.


class _DetailError(ReplyError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def fields(self) -> Dict[str, str]:
        return {"detail": str(self.detail)}


class Unavailable(_DetailError):
    """The backend is down (``unavailable``). ``detail`` says what is wrong."""

    kind = ErrorKind.UNAVAILABLE


class Failure(_DetailError):
    """Anything else (``other``), with a detail meant for the user."""

    kind = ErrorKind.OTHER


class NotFound(BadReference):
    """There is no secret at this reference (``bad-reference``, reason "not found"; a
    host's ``get`` turns it into "no value")."""

    def __init__(self, reference: str) -> None:
        super().__init__(reference, "not found")


class Unsupported(ReplyError):
    """This plugin does not do what was asked (``unsupported-capability``)."""

    kind = ErrorKind.UNSUPPORTED_CAPABILITY

    def __init__(self, capability: str) -> None:
        super().__init__(f"unsupported: {capability}")
        self.capability = capability

    def fields(self) -> Dict[str, str]:
        return {"capability": str(self.capability)}


class SecretText:
    """The secret a host sends to ``put``: ``get_secret_value()`` reveals it; ``str()``
    and ``repr()`` mask it, as pydantic's ``SecretStr`` (whose interface this is) does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretText('**********')" if self._value else "SecretText('')"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretText) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)


# --- the base class ------------------------------------------------------------------


class SecretSourcePlugin:
    """A convenient base for handlers. Override the methods your plugin supports.

    The handler methods are declared with their signatures for type checkers
    (mypy checks a subclass's overrides), but exist only on the subclass at run
    time. ``capabilities``: ``None`` (default) claims the overridden methods' bits;
    set it to claim others as well (e.g. ``AUDIT_LOGGED``), then also
    implement each method it gates. ``version`` is sent as ``plugin_version``.
    After ``init``, ``source_name`` and ``config`` hold what the host sent.
    """

    version: ClassVar[str] = "0.0.0"
    capabilities: ClassVar[Optional[Capability]] = None

    source_name: str = ""
    config: Dict[str, Any] = {}

    def init(self, source_name: str, config: Dict[str, Any]) -> InitReturn:
        self.source_name = source_name
        self.config = config
        return None

    def is_available(self) -> AvailableReturn:
        return True

    # The handlers a subclass may define, declared for type checkers only: at run
    # time the class has none of them, so a subclass claims exactly what it defines.
    if TYPE_CHECKING:

        def get(self, reference: str) -> GetReturn: ...

        def list(self) -> ListReturn: ...

        def validate(self, reference: str) -> Union[bool, None, ValidateResult]: ...

        def put(self, reference: str, value: SecretText) -> Union[bool, None, PutResult]: ...

        def delete(self, reference: str) -> Union[bool, None, DeleteResult]: ...

        def key_material(self, purpose: str) -> KeyReturn: ...


def serve(handler: Any, *, stdin: Stream = None, stdout: Stream = None) -> None:
    """Serve ``handler`` (an instance, or a class to instantiate) until EOF or SIGTERM.

    With the defaults, requests are read from fd 0 and replies written to fd 1,
    unbuffered, and while serving fd 0 is ``/dev/null`` and fd 1 and
    ``sys.stdout`` are stderr (see the module docstring); both are restored on
    return. ``stdin``/``stdout`` may instead be file descriptors or binary
    streams (for tests and embedding); then no descriptor is touched. Logging
    is sent to stderr if the process has not configured it. SIGTERM is handled
    only when called from the main thread.
    """
    # Here, not at the top: the server imports this module's classes, and a module
    # that only imports the SDK (a test, a type check) loads no server.
    from ._plugin_serve import run

    run(handler, stdin, stdout)

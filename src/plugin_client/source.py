"""A typed secret-source interface over a :class:`~plugin_client.client.PluginClient`
(:class:`PluginSecretSource`) or an :class:`~plugin_client.aio.AsyncPluginClient`
(:class:`AsyncPluginSecretSource`, the same with coroutine methods).

A host rarely wants raw wire results. :class:`PluginSecretSource` maps the
protocol onto a small interface, :class:`SecretSource`:

* ``get(ref)`` returns a :class:`Secret` (a ``SecretStr`` value and an optional
  lease as a ``timedelta``), or ``None`` when the plugin answers
  ``bad-reference`` with reason "not found";
* ``list()``, ``validate(ref)``, ``put(ref, value)``, ``delete(ref)`` and
  ``key_material(purpose)`` return plain values;
* ``is_available()`` returns a :class:`SourceStatus` and never raises for a
  plugin or client failure: a failure *is* the answer to "is it available?".

Errors, one class per kind of the plugin's answer (all in
:mod:`plugin_client.errors`, all under :class:`~plugin_client.errors.SourceError`):

===========================  ==================================================
plugin error kind            raised
===========================  ==================================================
``unavailable``              :class:`~plugin_client.errors.SourceUnavailable`
``unsupported-capability``   :class:`~plugin_client.errors.SourceUnsupportedCapability`
                             (also an :class:`~plugin_client.errors.UnsupportedCapability`)
``bad-reference``            :class:`~plugin_client.errors.BadReference`
``needs-credential``         :class:`~plugin_client.errors.NeedsCredential`
``other`` (and foreign)      :class:`~plugin_client.errors.SourceError`
===========================  ==================================================

Every other client failure (timeout, crash, disabled, spawn, init, protocol,
manifest, closed client) is a :class:`~plugin_client.errors.SourceUnavailable`.
The original exception is always chained as ``__cause__``.

The optional :class:`LeaseCache` keeps ``get`` results in memory for at most
their ``lease_seconds`` (and at most ``max_ttl``, if given), measured on the
monotonic clock. A value without a lease, or with a lease of 0, is not cached.
A served value's ``lease`` is the time it has left, so a caller that caches
it too still never keeps it past the plugin's lease. ``put`` and ``delete``
invalidate the reference.

Secrets live only in ``SecretStr``/``SecretBytes``; no repr, log line or
exception message here holds one.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    Generic,
    List,
    NoReturn,
    Optional,
    Protocol,
    Tuple,
    TypeVar,
    Union,
    runtime_checkable,
)

from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr

from ._impl import monotonic
from .client import PluginClient
from .errors import (
    BadReference,
    NeedsCredential,
    PluginClientError,
    PluginError,
    SourceError,
    SourceUnavailable,
    SourceUnsupportedCapability,
    UnsupportedCapability,
)
from .protocol import AvailabilityStatus, Capability, GetResult, ListResult

if TYPE_CHECKING:  # (not imported at run time: a sync host needs no asyncio)
    from .aio import AsyncPluginClient

__all__ = (
    "SecretSource",
    "PluginSecretSource",
    "AsyncPluginSecretSource",
    "SourceStatus",
    "Secret",
    "SecretRef",
    "LeaseCache",
)

T = TypeVar("T")
C = TypeVar("C")


# --- values -----------------------------------------------------------------------


class SourceStatus(BaseModel):
    """The answer to "is the source available?". ``detail`` says what to do if not."""

    model_config = ConfigDict(frozen=True)

    status: AvailabilityStatus
    detail: Optional[str] = None

    @property
    def available(self) -> bool:
        return self.status is AvailabilityStatus.AVAILABLE


class Secret(BaseModel):
    """One secret value. ``lease`` is how long it may be cached at most (``None``:
    the plugin set no lease, so do not cache it). A lease longer than
    ``timedelta.max`` (about 2.7 million years; ``lease_seconds`` is a u64) is
    clamped to ``timedelta.max``: no expiry, in practice. ``value`` prints as
    ``'**********'``."""

    model_config = ConfigDict(frozen=True)

    value: SecretStr
    lease: Optional[timedelta] = None


_MAX_LEASE_SECONDS = int(timedelta.max.total_seconds())


def _lease_of(lease_seconds: Optional[int]) -> Optional[timedelta]:
    """A reply's ``lease_seconds`` as a ``timedelta``, clamped to ``timedelta.max``
    (a valid u64 may be far larger than a ``timedelta`` holds)."""
    if lease_seconds is None:
        return None
    if lease_seconds >= _MAX_LEASE_SECONDS:
        return timedelta.max
    return timedelta(seconds=lease_seconds)


class SecretRef(BaseModel):
    """One entry of :meth:`SecretSource.list`: a reference and an optional display name."""

    model_config = ConfigDict(frozen=True)

    reference: str
    display: Optional[str] = None


@runtime_checkable
class SecretSource(Protocol):
    """What a host needs from a secret source, whatever implements it."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capability: ...

    def is_available(self) -> SourceStatus: ...

    def get(self, ref: str) -> Optional[Secret]: ...

    def list(self) -> List[SecretRef]: ...

    def validate(self, ref: str) -> bool: ...

    def put(self, ref: str, value: Union[str, SecretStr]) -> bool: ...

    def delete(self, ref: str) -> bool: ...

    def key_material(self, purpose: str) -> SecretBytes: ...


# --- the cache ----------------------------------------------------------------------


class LeaseCache:
    """A thread-safe in-memory cache of secrets that never serves one past its lease.

    A value is kept for ``min(lease, max_ttl)`` seconds on ``clock`` (the
    monotonic clock by default); without a lease, or with a lease of 0, it is
    not kept. :meth:`get` returns the secret with ``lease`` set to the time it
    has left. Use one cache per source: it is keyed by reference only.

    Invalidation and in-flight reads: a read that started before an
    :meth:`invalidate` of its reference cannot store its (possibly stale)
    value afterwards; :meth:`generation` and the ``since`` argument of
    :meth:`store` implement this.
    """

    def __init__(self, *, max_ttl: Optional[float] = None, clock: Callable[[], float] = monotonic) -> None:
        if max_ttl is not None and not max_ttl >= 0:
            raise ValueError(f"max_ttl must be a number of seconds >= 0 or None, not {max_ttl!r}")
        self._max_ttl = max_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: Dict[str, Tuple[SecretStr, float]] = {}
        self._generations: Dict[str, int] = {}
        self._epoch = 0  # bumped by clear(): invalidates every in-flight read

    def __repr__(self) -> str:
        return f"<LeaseCache entries={len(self._entries)} max_ttl={self._max_ttl!r}>"

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._entries)

    def generation(self, ref: str) -> Tuple[int, int]:
        """A token to pass to :meth:`store` as ``since``, taken before fetching ``ref``."""
        with self._lock:
            return self._epoch, self._generations.get(ref, 0)

    def get(self, ref: str) -> Optional[Secret]:
        """The cached secret with its remaining lease, or ``None`` (absent or expired)."""
        with self._lock:
            entry = self._entries.get(ref)
            if entry is None:
                return None
            value, expires = entry
            left = expires - self._clock()
            if left <= 0:
                del self._entries[ref]
                return None
        return Secret(value=value, lease=timedelta(seconds=min(left, _MAX_LEASE_SECONDS)))

    def store(self, ref: str, secret: Secret, *, since: Optional[Tuple[int, int]] = None) -> bool:
        """Keep ``secret`` for ``min(lease, max_ttl)``; returns whether it was kept.

        Not kept: no lease, a lease of 0 (or a ``max_ttl`` of 0), or ``since``
        older than an invalidation of ``ref`` made after it was taken.
        """
        if secret.lease is None:
            return False
        ttl = secret.lease.total_seconds()
        if self._max_ttl is not None:
            ttl = min(ttl, self._max_ttl)
        if ttl <= 0:
            return False
        with self._lock:
            if since is not None and since != (self._epoch, self._generations.get(ref, 0)):
                return False
            # The lease counts from when the reply was read (just now), not from
            # when the plugin looked the value up: a few milliseconds late at most.
            now = self._clock()
            self._purge(now)
            self._entries[ref] = (secret.value, now + ttl)
        return True

    def invalidate(self, ref: str) -> None:
        """Drop ``ref`` and stop any read of it in flight from storing its value."""
        with self._lock:
            self._entries.pop(ref, None)
            self._generations[ref] = self._generations.get(ref, 0) + 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generations.clear()
            self._epoch += 1

    def _purge(self, now: float) -> None:
        # Called with the lock held; bounds memory to live entries.
        dead = [ref for ref, (_, expires) in self._entries.items() if expires <= now]
        for ref in dead:
            del self._entries[ref]


# --- the adapters -----------------------------------------------------------------


def _absent(exc: PluginError) -> bool:
    """Whether ``exc`` is the plugin's "not found": ``get`` answers ``None`` then."""
    return exc.kind == "bad-reference" and _is_not_found(exc.reason)


def _status_of_failure(exc: PluginClientError) -> SourceStatus:
    """``is_available``'s answer when asking failed: the failure is the answer."""
    if isinstance(exc, PluginError) and exc.kind == "needs-credential":
        return SourceStatus(status=AvailabilityStatus.NEEDS_CREDENTIAL, detail=exc.message)
    return SourceStatus(status=AvailabilityStatus.UNAVAILABLE, detail=exc.message)


def _is_async_client(client: Any) -> bool:
    """Whether ``client`` is an asyncio client (its ``get`` is a coroutine function)."""
    if isinstance(client, PluginClient):
        return False
    import inspect  # (only for a client that is not a PluginClient)

    return inspect.iscoroutinefunction(getattr(type(client), "get", None))


def _source_error(exc: PluginClientError, *, source: str) -> SourceError:
    """The :class:`~plugin_client.errors.SourceError` that an adapter for the source
    named ``source`` raises for ``exc``: one mapping for both adapters. The caller
    chains ``exc`` as the cause."""
    plugin = exc.plugin
    who = f"Source {source!r}"
    if isinstance(exc, UnsupportedCapability):
        # The host's gate and the plugin's own answer (PluginUnsupportedCapability).
        return SourceUnsupportedCapability(
            f"{who} does not support {exc.capability!r}: {exc.message}",
            capability=exc.capability,
            plugin=plugin,
        )
    if isinstance(exc, PluginError):
        kind: Any = exc.kind
        if kind == "unavailable":
            return SourceUnavailable(f"{who} is unavailable: {exc.message}", plugin=plugin)
        if kind == "bad-reference":
            return BadReference(
                f"{who} rejected a reference: {exc.message}",
                reference=exc.reference,
                reason=exc.reason,
                plugin=plugin,
            )
        if kind == "needs-credential":
            return NeedsCredential(f"{who} needs a credential: {exc.message}", detail=exc.detail, plugin=plugin)
        return SourceError(f"{who} failed: {exc.message}", plugin=plugin)
    failed = SourceUnavailable(f"{who} is unavailable ({type(exc).__name__}): {exc.message}", plugin=plugin)
    failed.stderr_tail, failed.exit = exc.stderr_tail, exc.exit  # a process failure's diagnostics
    return failed


def _secret_from_reply(value: SecretStr, lease_seconds: Optional[int]) -> Secret:
    """A ``get`` reply's value and lease as the :class:`Secret` the adapters return
    (the lease clamped to ``timedelta.max``)."""
    return Secret(value=value, lease=_lease_of(lease_seconds))


def _is_not_found(reason: Optional[str]) -> bool:
    """Whether a ``bad-reference`` reason means "not found" (``get`` then returns
    ``None``)."""
    return reason is not None and reason.strip().lower() == "not found"


class _Adapter(Generic[C]):
    """What both adapters share: the client check, the name, the cache, the typed
    values, the error mapping. The two differ only in calling (or awaiting) the
    client, in the few lines between these steps. The client may also be any
    object with a client's request methods (a host's per-source binding calls
    the host, so that its in-flight counting holds); an asyncio one is told by
    its ``get`` being a coroutine function."""

    _wants_async = False

    def __init__(
        self,
        client: C,
        *,
        cache: Union[bool, LeaseCache, None] = False,
        name: Optional[str] = None,
        owns_client: bool = False,
    ) -> None:
        if _is_async_client(client) is not self._wants_async:
            mine, other = type(self).__name__, ("PluginSecretSource" if self._wants_async else "AsyncPluginSecretSource")
            wanted = "an AsyncPluginClient" if self._wants_async else "a PluginClient"
            got = type(client).__name__
            article = "an" if got[:1] in "AEIOU" else "a"
            raise TypeError(f"{mine} takes {wanted}, not {article} {got}; use {other} for that client.")
        self._client = client
        self._name = name if name is not None else client.health().source_name  # type: ignore[attr-defined]
        if cache is True:
            self._cache: Optional[LeaseCache] = LeaseCache()
        elif isinstance(cache, LeaseCache):
            self._cache = cache
        elif cache is False or cache is None:
            self._cache = None
        else:
            raise TypeError(f"cache must be a bool or a LeaseCache, not {type(cache).__name__}")
        self._owns_client = owns_client

    def __repr__(self) -> str:
        plugin = self._client.name  # type: ignore[attr-defined]
        return f"<{type(self).__name__} {self._name!r} plugin={plugin!r} cache={self._cache!r}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def client(self) -> C:
        return self._client

    @property
    def cache(self) -> Optional[LeaseCache]:
        return self._cache

    def _known_capabilities(self) -> Optional[Capability]:
        """The capabilities from the plugin's last ``init``, if there was one."""
        bits = self._client.health().capabilities_bits  # type: ignore[attr-defined]
        return Capability(bits) if bits is not None else None

    def _cached(self, ref: str) -> Tuple[Optional[Secret], Optional[Tuple[int, int]]]:
        """A cache hit for ``ref``, or None and the token a fetch stores its value with."""
        cache = self._cache
        if cache is None:
            return None, None
        hit = cache.get(ref)
        return hit, (cache.generation(ref) if hit is None else None)

    def _secret(self, ref: str, res: GetResult, since: Optional[Tuple[int, int]]) -> Secret:
        """The fetched value as a :class:`Secret`, cached if it has a lease."""
        secret = _secret_from_reply(res.value, res.lease_seconds)
        if self._cache is not None:
            self._cache.store(ref, secret, since=since)
        return secret

    def _raise_unless_absent(self, exc: PluginClientError) -> None:
        """A ``get`` failed with ``exc``: raise the mapped error, unless the plugin
        said "not found" (``get`` then answers None)."""
        if not (isinstance(exc, PluginError) and _absent(exc)):
            self._raise(exc)

    def _invalidate(self, ref: str) -> None:
        # Also after a failure: the plugin may have written before it failed.
        if self._cache is not None:
            self._cache.invalidate(ref)

    @staticmethod
    def _refs(res: ListResult) -> List[SecretRef]:
        return [SecretRef(reference=e.reference, display=e.display) for e in res.entries]

    def _raise(self, exc: PluginClientError) -> NoReturn:
        raise self._map(exc) from exc

    def _map(self, exc: PluginClientError) -> SourceError:
        return _source_error(exc, source=self._name)


class PluginSecretSource(_Adapter[PluginClient]):
    """A :class:`SecretSource` backed by one plugin through a :class:`PluginClient`.

    ``cache``: ``False`` (default) for none, ``True`` for a new
    :class:`LeaseCache`, or a :class:`LeaseCache` to use (e.g. with a
    ``max_ttl``). ``name`` defaults to the client's source name. The client
    is not owned: :meth:`close` (or the context manager) shuts it down only if
    ``owns_client`` is true. An :class:`~plugin_client.AsyncPluginClient` is a
    ``TypeError``: that is :class:`AsyncPluginSecretSource`'s.
    """

    def __enter__(self) -> PluginSecretSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self._client.shutdown()

    @property
    def capabilities(self) -> Capability:
        """The capabilities from the plugin's last ``init``; starts the plugin if unknown."""
        known = self._known_capabilities()
        return known if known is not None else self._call(self._client.start).capabilities

    def is_available(self) -> SourceStatus:
        """The plugin's own answer; a failure to ask is the answer ``unavailable`` (or
        ``needs-credential``), with the error's message as ``detail``. Never raises for
        a plugin or client failure."""
        try:
            res = self._client.is_available()
        except PluginClientError as exc:
            return _status_of_failure(exc)
        return SourceStatus(status=res.status, detail=res.detail)

    def get(self, ref: str) -> Optional[Secret]:
        """The secret at ``ref``, or ``None`` if the plugin says it is not found."""
        hit, since = self._cached(ref)
        if hit is not None:
            return hit
        try:
            res = self._client.get(ref)
        except PluginClientError as exc:
            self._raise_unless_absent(exc)
            return None
        return self._secret(ref, res, since)

    def list(self) -> List[SecretRef]:
        return self._refs(self._call(self._client.list))

    def validate(self, ref: str) -> bool:
        return self._call(lambda: self._client.validate(ref)).ok

    def put(self, ref: str, value: Union[str, SecretStr]) -> bool:
        """Store ``value`` at ``ref``; returns whether a value was replaced."""
        try:
            return self._call(lambda: self._client.put(ref, value)).replaced
        finally:
            self._invalidate(ref)

    def delete(self, ref: str) -> bool:
        """Delete ``ref``; returns whether it existed."""
        try:
            return self._call(lambda: self._client.delete(ref)).existed
        finally:
            self._invalidate(ref)

    def key_material(self, purpose: str) -> SecretBytes:
        return self._call(lambda: self._client.key_material(purpose)).material

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except PluginClientError as exc:
            self._raise(exc)


class AsyncPluginSecretSource(_Adapter["AsyncPluginClient"]):
    """:class:`PluginSecretSource` for an :class:`~plugin_client.AsyncPluginClient`: the
    same values, errors, cache and arguments, with coroutine methods
    (``capabilities()`` too: it may have to start the plugin) and ``async with``.
    A :class:`PluginClient` is a ``TypeError``: that is :class:`PluginSecretSource`'s.
    The :class:`LeaseCache` is shared safely with sources on other threads or loops."""

    _wants_async = True

    async def __aenter__(self) -> AsyncPluginSecretSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_client:
            await self._client.shutdown()

    async def capabilities(self) -> Capability:
        """The capabilities from the plugin's last ``init``; starts the plugin if unknown."""
        known = self._known_capabilities()
        return known if known is not None else (await self._call(self._client.start())).capabilities

    async def is_available(self) -> SourceStatus:
        """As :meth:`PluginSecretSource.is_available`: never raises for a plugin or client failure."""
        try:
            res = await self._client.is_available()
        except PluginClientError as exc:
            return _status_of_failure(exc)
        return SourceStatus(status=res.status, detail=res.detail)

    async def get(self, ref: str) -> Optional[Secret]:
        """The secret at ``ref``, or ``None`` if the plugin says it is not found."""
        hit, since = self._cached(ref)
        if hit is not None:
            return hit
        try:
            res = await self._client.get(ref)
        except PluginClientError as exc:
            self._raise_unless_absent(exc)
            return None
        return self._secret(ref, res, since)

    async def list(self) -> List[SecretRef]:
        return self._refs(await self._call(self._client.list()))

    async def validate(self, ref: str) -> bool:
        return (await self._call(self._client.validate(ref))).ok

    async def put(self, ref: str, value: Union[str, SecretStr]) -> bool:
        """Store ``value`` at ``ref``; returns whether a value was replaced."""
        try:
            return (await self._call(self._client.put(ref, value))).replaced
        finally:
            self._invalidate(ref)

    async def delete(self, ref: str) -> bool:
        """Delete ``ref``; returns whether it existed."""
        try:
            return (await self._call(self._client.delete(ref))).existed
        finally:
            self._invalidate(ref)

    async def key_material(self, purpose: str) -> SecretBytes:
        return (await self._call(self._client.key_material(purpose))).material

    async def _call(self, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except PluginClientError as exc:
            self._raise(exc)

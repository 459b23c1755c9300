"""Type stub and contract of the core: ``_core`` (Cython) and ``_core_py`` (its twin).

Both modules implement exactly this API, keyword arguments included. The core
moves bytes, pids and timestamps; it parses no JSON and knows nothing of
pydantic or plugins (:func:`split_result` compares a reply's fixed head, as
bytes). Every blocking wait (``poll``, ``read``, ``write``, ``waitpid``) runs
with the GIL released in the compiled core. Deadlines are absolute times on
``CLOCK_MONOTONIC`` in float seconds, the clock of :func:`time.monotonic`;
``None`` means "wait for ever". Errors are the classes of
:mod:`plugin_client._core_errors`.

The docstrings here are the API's one full description: ``_core.pyx`` (with
its ``.pxi`` units) and ``_core_py.py`` give each public name a one-line
docstring and keep comments on how and why they implement it.
"""

from collections.abc import Mapping, Sequence
from typing import Final, Optional, Union

_Bytes = Union[bytes, bytearray, memoryview]
_StrOrBytes = Union[str, bytes]
# Mapping is invariant in its key type: accept str-keyed and bytes-keyed dicts.
_Env = Union[Mapping[str, _StrOrBytes], Mapping[bytes, _StrOrBytes], Mapping[_StrOrBytes, _StrOrBytes]]

IMPLEMENTATION: Final[str]
"""``"cython"`` in ``_core``, ``"python"`` in ``_core_py``."""

DEFAULT_MAX_FRAME_BYTES: Final[int]
"""Default frame limit: 16 MiB."""

def monotonic() -> float:
    """``CLOCK_MONOTONIC`` now, in seconds; the same clock as :func:`time.monotonic`."""

class FrameReader:
    """Splits a byte stream into newline-delimited frames.

    A frame is the bytes before a ``b"\\n"`` with one trailing ``b"\\r"``
    removed. Only ``b"\\n"`` splits: U+2028 and lone ``\\r`` are frame content.
    A line whose length before its ``\\n`` (a trailing ``\\r`` included)
    exceeds ``max_frame_bytes`` raises :class:`FrameTooLargeError` as soon as
    that many bytes are seen, so the buffer never holds more than the limit
    plus one read. Complete frames
    before an oversized one are still returned first. An empty line is
    returned as ``b""`` (the façade decides that it is an error).
    """

    def __init__(self, fd: int, max_frame_bytes: int = ..., exit_fd: int = -1) -> None:
        """``fd`` is a readable pipe end; it should be non-blocking. ``-1``
        makes a reader that is only fed (``feed``/``next_frame``).

        ``exit_fd`` (a pidfd, or -1) is the process writing to ``fd``. A read
        that has waited 5 ms for its frame watches it too, and raises
        :class:`ProcessExited` if that process exits while ``fd`` stays open
        (a descendant holds it, so no EOF would come before the deadline).
        Not from the start: a second fd in every wait would slow each fast
        round trip."""
    @property
    def fd(self) -> int: ...
    @property
    def exit_fd(self) -> int: ...
    @property
    def max_frame_bytes(self) -> int: ...
    @property
    def buffered(self) -> int:
        """Bytes held that have not yet been returned as frames."""
    def read_frame(self, deadline: Optional[float] = None) -> bytes:
        """Return the next frame, reading from ``fd`` as needed.

        A frame already buffered is returned with no system call. Otherwise
        it reads (retrying on EINTR, waiting with ``poll`` on EAGAIN) until a
        frame is complete. Raises :class:`DeadlineExceeded` when ``deadline``
        passes, :class:`StreamEOF` (with ``pending`` bytes of an unfinished
        frame) at end of stream or, as its subclass :class:`ProcessExited`,
        when ``exit_fd`` shows the writer's exit first, :class:`FrameTooLargeError` past the limit,
        and ``OSError`` for other read errors.

        The compiled core spins on ``read`` for up to 50 us (the GIL
        released) before it sleeps in ``poll``, so a reply from a plugin on
        another CPU lands on a running CPU; after 3 spins in a row ran out it
        blocks at once for the next 64 waits. Never past the deadline, never
        on a blocking fd, never when this thread may run on one CPU only (its
        plugin, which inherited that, would wait for the spin). The twin
        never spins.
        """
    def spin_ready(self, deadline: Optional[float] = None) -> bool:
        """Spin (as :meth:`read_frame` does before it sleeps) until ``fd`` turns
        readable, never past ``deadline``, for a caller that reads it
        elsewhere: the asyncio client, before its event loop would sleep.
        ``True``: readable (or hung up) now; ``False``: no spin was allowed by
        ``read_frame``'s rules, whose state it shares, or the spin ran out.
        The twin never spins."""
    def exchange(self, fd: int, data: _Bytes, deadline: Optional[float] = None) -> bytes:
        """One request and its reply: :func:`write_all` ``data`` to ``fd``, then
        :meth:`read_frame`, both within ``deadline``, in one call.

        The compiled core looks up ``fd``'s ``O_NONBLOCK`` flag the first time
        the reader writes to that fd number, and keeps it; a non-blocking fd is
        written with the GIL held (such a write never waits)."""
    def exchange_if_idle(
        self, fd: int, data: _Bytes, deadline: Optional[float] = None, pidfd: int = -1
    ) -> Optional[bytes]:
        """:meth:`idle_state` first: unless it is ``0``, return ``None`` and write
        nothing; else :meth:`exchange`. A warm request in one call."""
    def request(self, child: "Child", data: _Bytes, deadline: Optional[float] = None) -> Optional[bytes]:
        """:meth:`exchange_if_idle` with ``child``'s ``stdin_fd`` and ``pidfd``,
        read by the core itself (in C, for the compiled one): the client's warm
        request in one call, never with a stale copy of an fd."""
    def idle_state(self, pidfd: int = -1) -> int:
        """What came while no request was in flight, with one ``poll`` that never waits.

        ``2``: bytes are held, or readable on ``fd`` (output nobody asked for).
        ``1``: ``fd`` hung up, or ``pidfd`` (when >= 0) is readable: the process
        exited or closed its stdout. ``0``: nothing.
        """
    def feed(self, data: _Bytes) -> None:
        """Append bytes read elsewhere (an event loop's reader callback). Never raises
        for size: the limit is enforced by :meth:`next_frame`."""
    def next_frame(self) -> Optional[bytes]:
        """Pop the next complete frame from the buffer without I/O, or ``None``.
        Raises :class:`FrameTooLargeError` when the head line exceeds the limit."""
    def clear(self) -> None:
        """Drop everything buffered."""

def split_result(frame: bytes, request_id: int) -> Optional[bytes]:
    """The bytes between ``{"jsonrpc":"2.0","id":<request_id>,"result":`` and
    the frame's last byte, a ``}``; ``None`` for any other frame.

    The one protocol fact the core holds, as bytes (the head of a success
    reply as this library's SDK and serde_json write it). A fast path, not a
    decoder: it never looks inside those bytes. Whether they are one JSON
    value (a ``,"error":...`` after the result makes them invalid JSON) is
    for the caller's parser to say; a frame written otherwise (spaces,
    another member order) is the caller's full decode's. ``request_id`` is an
    unsigned 64-bit integer (else ``OverflowError``).
    """

def write_all(fd: int, data: _Bytes, deadline: Optional[float] = None) -> None:
    """Write all of ``data`` to ``fd``, handling partial writes and EAGAIN (with ``poll``).

    EPIPE raises :class:`PipeClosed`; the host never dies of SIGPIPE, even if
    the host has restored SIGPIPE's default disposition. Raises
    :class:`DeadlineExceeded` if the pipe stays full past ``deadline``.
    """

class RestartWindow:
    """A sliding window of crash timestamps on ``CLOCK_MONOTONIC``.

    Holds at most ``cap`` timestamps (the newest), so memory is bounded and
    :meth:`count` never exceeds ``cap``. ``now`` arguments default to
    :func:`monotonic` and exist for tests.
    """

    def __init__(self, window: float, cap: int) -> None:
        """``window`` > 0 seconds, ``cap`` >= 1; otherwise ``ValueError``."""
    @property
    def window(self) -> float: ...
    @property
    def cap(self) -> int: ...
    @property
    def last(self) -> Optional[float]:
        """The newest recorded timestamp, or ``None``; kept across pruning."""
    def record(self, now: Optional[float] = None) -> int:
        """Record a crash at ``now``; return the count within the window as of ``now``."""
    def count(self, now: Optional[float] = None) -> int:
        """Prune timestamps older than ``now - window`` and return how many are left."""
    def exceeded(self, now: Optional[float] = None) -> bool:
        """``count(now) >= cap``."""
    def clear(self) -> None:
        """Forget every timestamp (``last`` too)."""

def spawn_method() -> str:
    """How :func:`spawn` closes inherited fds on this machine, e.g.
    ``"posix_spawn+closefrom_np"`` or the fallback's name. For ``doctor``."""

def spawn(
    argv: Sequence[_StrOrBytes],
    env: _Env,
    *,
    cwd: Optional[_StrOrBytes] = None,
    exec_fd: Optional[int] = None,
) -> "Child":
    """Start ``argv[0]`` (a path; no ``PATH`` search) with ``posix_spawn``.

    ``exec_fd``, if given, is an open close-on-exec descriptor of the file to
    run instead of the one ``argv[0]`` names (which stays the child's
    ``argv[0]``): the kernel executes that very file, whatever a rename did to
    the path since it was opened. The descriptor stays the caller's; the child
    does not inherit it. It must name a binary (ELF): a ``#!`` script's
    interpreter would be handed a ``/dev/fd`` path that is closed by then and
    fail. The compiled core runs it with ``execveat(AT_EMPTY_PATH)`` from its
    ``vfork`` path (``posix_spawn``'s ``closefrom`` would close it first), the
    twin with ``posix_spawn`` of ``/proc/self/fd/N`` (so the twin needs
    ``/proc`` for it). ``ValueError`` if it is not close-on-exec, ``OSError``
    if it is not open.

    The child gets exactly ``env`` (an empty mapping included), pipes on fds
    0, 1 and 2 and no other fd, every signal at its default disposition, an
    empty signal mask, and a new process group whose id is its pid. ``cwd``,
    if given, is its working directory. The parent's pipe ends are
    close-on-exec and non-blocking; the stdout pipe holds 256 KiB where the
    kernel allows it (``F_SETPIPE_SZ``; a user over ``fs.pipe-user-pages-soft``
    keeps the default 64 KiB), so a large reply needs fewer wake-ups. Raises :class:`SpawnFailed` (errno and
    path) if the file is missing, not executable or not a valid executable.
    """

class Child:
    """A spawned child process and the parent's ends of its pipes."""

    @property
    def pid(self) -> int: ...
    @property
    def pidfd(self) -> int:
        """A pidfd for the child, or ``-1`` where the kernel has none."""
    @property
    def stdin_fd(self) -> int:
        """``-1`` once closed."""
    @property
    def stdout_fd(self) -> int: ...
    @property
    def stderr_fd(self) -> int: ...
    @property
    def returncode(self) -> Optional[int]:
        """``None`` until reaped; then the exit status, or ``-signum`` if a signal ended it."""
    def reader(self, max_frame_bytes: int = ...) -> FrameReader:
        """``FrameReader(stdout_fd, max_frame_bytes, pidfd)``: the reader a client
        exchanges frames through. For a child from :func:`spawn` the compiled core
        makes it without asking the kernel what it already knows (stdout and
        stdin are non-blocking)."""
    def poll(self) -> Optional[int]:
        """Reap the child if it has exited (``WNOHANG``) and return ``returncode``."""
    def wait(self, timeout: Optional[float] = None, *, reap: bool = True) -> Optional[int]:
        """Wait up to ``timeout`` seconds for the child to exit; ``None`` on timeout.

        Returns as soon as the child exits: ``poll`` on the pidfd where there is
        one (timeouts kept to the nanosecond; the compiled core first spins on
        it for up to 100 us, yielding the CPU between tries, when this thread
        may run on more than one CPU), else ``waitpid(WNOHANG)`` with a
        backoff capped at 1 ms. With
        ``reap=False`` the exited child is left a zombie (its pid, and so its
        process-group id, cannot be reused yet) and the would-be return code is
        returned while ``returncode`` stays ``None``.
        """
    def send_signal(self, sig: int) -> None:
        """Signal the leader only, through its pidfd where there is one. No-op once reaped."""
    def signal_group(self, sig: int) -> None:
        """Signal the whole process group. No-op once the leader is reaped (its
        id could then name another group); ``ESRCH`` is ignored."""
    def terminate(self) -> None:
        """``signal_group(SIGTERM)``."""
    def kill(self) -> None:
        """``signal_group(SIGKILL)``."""
    def close_stdin(self) -> None:
        """Close the parent's end of the child's stdin (the protocol's exit signal). Idempotent."""
    def close(self) -> None:
        """Close every fd the parent holds for this child (pipes and pidfd). Does not reap. Idempotent."""
    def finish(self) -> Optional[int]:
        """``kill()``, a blocking ``wait()`` (the leader has exited or is dying) and
        ``close()``, in one call: the end of every stop. Returns ``returncode``."""

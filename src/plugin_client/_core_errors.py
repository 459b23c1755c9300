"""Exceptions raised by the core (both the Cython ``_core`` and its twin ``_core_py``).

The core moves bytes, pids and timestamps and knows nothing about plugins, so
these errors carry no plugin name. ``PluginClient`` catches them and re-raises
the public, plugin-named errors of :mod:`plugin_client.errors` with the core
error chained. This module deliberately imports nothing but the standard
library, so the compiled core can import it cheaply.
"""

from __future__ import annotations

__all__ = (
    "CoreError",
    "FrameTooLargeError",
    "DeadlineExceeded",
    "StreamEOF",
    "ProcessExited",
    "PipeClosed",
    "SpawnFailed",
)


class CoreError(Exception):
    """Base class of every error the core raises."""


class FrameTooLargeError(CoreError):
    """A line grew past ``max_frame_bytes`` without a newline.

    Raised as soon as the limit is crossed; the reader never buffers more than
    the limit plus one read. The stream is out of step afterwards: the caller
    must discard the reader (and recycle the process).
    """

    def __init__(self, limit: int, seen: int) -> None:
        self.limit = limit
        self.seen = seen
        super().__init__(
            f"Frame exceeds the limit of {limit} bytes ({seen} bytes without a newline)"
        )


class DeadlineExceeded(CoreError, TimeoutError):
    """A read, write or wait did not finish before its deadline."""

    def __init__(self, operation: str, timeout: float | None = None) -> None:
        self.operation = operation
        self.timeout = timeout
        msg = f"Deadline exceeded while waiting to {operation}"
        if timeout is not None:
            msg += f" (after {timeout:.3f} s)"
        super().__init__(msg)


class StreamEOF(CoreError, EOFError):
    """The peer closed its end. ``pending`` counts bytes of an unfinished frame."""

    def __init__(self, pending: int = 0) -> None:
        self.pending = pending
        if pending:
            msg = f"Stream closed in the middle of a frame ({pending} bytes without a newline)"
        else:
            msg = "Stream closed"
        super().__init__(msg)


class ProcessExited(StreamEOF):
    """The process exited while a reply was awaited, and its stdout stays open:
    a descendant holds it, so no EOF will come. Whatever it wrote before its
    exit was read first; ``pending`` counts bytes of an unfinished frame."""

    def __init__(self, pending: int = 0) -> None:
        super().__init__(pending)
        self.args = (
            "The process exited before its reply was complete; its stdout is still open "
            f"(held by a descendant), {pending} bytes pending",
        )


class PipeClosed(CoreError, BrokenPipeError):
    """The reader of the pipe has gone (EPIPE). Never delivered as SIGPIPE."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        super().__init__(f"Pipe fd {fd} is closed at the other end (EPIPE)")


class SpawnFailed(CoreError, OSError):
    """The executable could not be started. Carries ``errno`` and ``filename``."""

    def __init__(self, err: int, path: str) -> None:
        import os

        super().__init__(err, f"Cannot execute {path!r}: {os.strerror(err)}", path)

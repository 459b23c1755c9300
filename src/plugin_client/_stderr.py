"""Drains plugins' stderr continuously, into a bounded ring and ``logging``.

One daemon thread serves every plugin process of the interpreter through one
``epoll`` set, so a plugin that logs megabytes never blocks on a full pipe and
a spawn costs one ``epoll_ctl``, not a thread start. Each process gets a
:class:`StderrTail`: the last N lines (each cut to 1,000 characters), kept for
``health()`` and forwarded to the logger ``plugin_client.plugin.<name>`` at
the level the line carries (:mod:`plugin_client._log_levels`: a JSON log's
``level``, a leading ``ERROR``, ``[WARN]``, ...; INFO for a plain line).

Every drain is bounded, in bytes and in logger calls, whatever a plugin (or a
descendant that shares its stderr) writes, at any rate and for any length of
time: the thread reads one buffer per ready fd per wake-up and moves on to the
next fd (the ``epoll`` set is level-triggered, so a fd with more to read comes
back), and :meth:`StderrPump.unregister` reads at most one full pipe's worth
and gives up (a daemon that left the process group may keep writing for
ever). A drain logs at most ``_LOG_LINES`` lines and one record saying how
many more it did not log; the ring still keeps the last N of them all. So one
plugin's stderr delays neither another plugin's, nor a stop, nor an event
loop by more than one bounded drain.

Deliberately not done here: deciding anything about the process. The pump only
reads; the client owns the fd and closes it after :meth:`StderrPump.unregister`
(and kills the process group first, so that the pipe stops filling).
"""

from __future__ import annotations

import collections
import logging
import os
import select
import threading
from typing import Deque, Dict, List, Optional

from ._log_levels import DEFAULT_LEVEL, LevelReader

__all__ = ("StderrTail", "StderrPump", "PUMP")

_EVENTS = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_MAX_LINE = 1000
_MAX_PARTIAL = 4096
_READ = 65536
# The most a final drain reads: the largest pipe an unprivileged process can
# ask for (/proc/sys/fs/pipe-max-size's default), so a dead group's last words
# are all read, and a writer outside the group cannot hold the drain.
_FINAL_READ = 16 * _READ
# The most lines one drain hands to the logger: a flood of short lines would
# otherwise cost one logger call per byte.
_LOG_LINES = 1000


class StderrTail:
    """The bounded tail of one process's stderr, and where its lines are logged."""

    __slots__ = (
        "fd", "_lines", "_partial", "_logger", "_lock", "closed", "bytes_seen", "_logged", "_unlogged", "_levels",
    )

    def __init__(self, fd: int, logger: logging.Logger, max_lines: int) -> None:
        self.fd = fd
        self._lines: Deque[str] = collections.deque(maxlen=max_lines)
        self._partial = b""
        self._logger = logger
        self._lock = threading.Lock()
        self.closed = False
        self.bytes_seen = 0
        # Of the drain under way: the lines logged, and those not logged.
        self._logged = 0
        self._unlogged = 0
        # The level of each line logged: its own, or that of the record it continues.
        self._levels = LevelReader()

    def mark_closed(self) -> None:
        """The pipe is done with (its reader gave up on it): no more lines come."""
        with self._lock:
            self.closed = True

    def lines(self) -> List[str]:
        with self._lock:
            out = list(self._lines)
            if self._partial:
                out.append(self._decode(self._partial))
            return out[-self._lines.maxlen :] if self._lines.maxlen else []

    @staticmethod
    def _decode(raw: bytes) -> str:
        text = raw.rstrip(b"\r").decode("utf-8", "replace")
        return text if len(text) <= _MAX_LINE else text[:_MAX_LINE] + "…"

    def _emit(self, raw: bytes) -> None:
        line = self._decode(raw)
        self._lines.append(line)
        self._log(line)

    def _log(self, line: str) -> None:
        if self._logged < _LOG_LINES:
            self._logged += 1
            self._logger.log(self._levels.level(line), "%s", line)
        else:
            self._unlogged += 1

    def _take_lines(self, buf: bytes, end: int) -> None:
        """Take the complete lines of ``buf``, whose last newline is at ``end``."""
        count = buf.count(b"\n", 0, end + 1)
        keep = self._lines.maxlen or 0
        room = _LOG_LINES - self._logged
        if count <= keep or count <= room:
            for raw in buf[:end].split(b"\n"):
                self._emit(raw)
            return
        # A flood: decode only the lines that are logged and those the ring keeps,
        # so the work stays bounded however short the lines are.
        body = buf[:end]
        if room > 0:
            for raw in body.split(b"\n", room)[:room]:
                self._log(self._decode(raw))
        self._unlogged += count - room
        if keep:
            self._lines.extend(self._decode(raw) for raw in body.rsplit(b"\n", keep)[-keep:])

    def drain(self, limit: int = _READ) -> bool:
        """Read what is available now, up to about ``limit`` bytes (one read at
        least). Returns False at end of stream."""
        with self._lock:
            if self.closed:
                return False
            self._logged = self._unlogged = 0
            try:
                return self._drain(limit)
            finally:
                if self._unlogged:
                    # The lines left out may have begun or ended a record.
                    self._levels.reset()
                    self._logger.log(
                        DEFAULT_LEVEL,
                        "The plugin wrote %d more lines than are logged at once; they are left out"
                        " (health().stderr_tail keeps the last of them)",
                        self._unlogged,
                    )

    def _drain(self, limit: int) -> bool:
        left = limit
        while True:
            try:
                data = os.read(self.fd, _READ)
            except BlockingIOError:
                return True
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                if self._partial:
                    self._emit(self._partial)
                    self._partial = b""
                self.closed = True
                return False
            self.bytes_seen += len(data)
            buf = self._partial + data if self._partial else data
            end = buf.rfind(b"\n")
            if end >= 0:
                self._take_lines(buf, end)
            rest = buf[end + 1 :]
            # A line with no newline for 4 KiB is logged in pieces, so the
            # partial buffer stays bounded whatever the plugin writes.
            while len(rest) > _MAX_PARTIAL:
                self._emit(rest[:_MAX_PARTIAL])
                rest = rest[_MAX_PARTIAL:]
            self._partial = rest
            left -= len(data)
            if len(data) < _READ or left <= 0:
                return True


class StderrPump:
    """One epoll thread for every registered stderr fd."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tails: Dict[int, StderrTail] = {}
        self._epoll: Optional[select.epoll] = None
        self._thread: Optional[threading.Thread] = None
        # Loggers live for ever anyway; a spawn should not take logging's lock to find one.
        self._loggers: Dict[str, logging.Logger] = {}

    def register(self, fd: int, plugin_name: str, max_lines: int) -> StderrTail:
        logger = self._loggers.get(plugin_name)
        if logger is None:
            logger = self._loggers[plugin_name] = logging.getLogger(f"plugin_client.plugin.{plugin_name}")
        tail = StderrTail(fd, logger, max_lines)
        with self._lock:
            if self._epoll is None:
                self._epoll = select.epoll()
                self._thread = threading.Thread(
                    target=self._run, args=(self._epoll,), name="plugin-client-stderr", daemon=True
                )
                self._thread.start()
            self._tails[fd] = tail
            self._epoll.register(fd, _EVENTS)
        return tail

    def pause(self, tail: StderrTail) -> bool:
        """Stop watching ``tail.fd`` for now; what the plugin writes stays in the pipe.
        True if it was being watched. :meth:`resume` or :meth:`unregister` follows.

        For a cooperative exit: the exit hangs up stderr, and a watched fd would
        wake this thread to take the GIL just when the stopping thread wakes.
        """
        # No lock: the dict's pop is atomic, no other thread registers this fd
        # (it is open) or resumes this tail, and the pump thread only unregisters
        # a tail it still finds in the dict.
        if self._tails.pop(tail.fd, None) is not tail:
            return False
        self._unwatch(tail.fd)
        return True

    def resume(self, tail: StderrTail) -> None:
        """Watch ``tail.fd`` again after :meth:`pause`, unless it has reached its end."""
        with self._lock:
            if tail.closed or self._epoll is None or tail.fd in self._tails:
                return
            self._tails[tail.fd] = tail
            self._epoll.register(tail.fd, _EVENTS)

    def unregister(self, tail: StderrTail) -> None:
        """Stop watching ``tail.fd`` and read what is left, one full pipe at most;
        the caller closes the fd afterwards. Kill the writers first: a writer that
        lives on gets the rest of its lines dropped, not waited for."""
        if self._tails.get(tail.fd) is tail:  # (not after pause(): the lock is not needed then)
            with self._lock:
                if self._tails.get(tail.fd) is tail:
                    del self._tails[tail.fd]
                    self._unwatch(tail.fd)
        if tail.drain(_FINAL_READ):  # not at its end (a descendant holds it): done anyway
            tail.mark_closed()

    def _unwatch(self, fd: int) -> None:
        if self._epoll is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:  # already gone from the set (the fd hit its end)
                pass

    def _run(self, ep: select.epoll) -> None:
        while True:
            try:
                events = ep.poll()
            except InterruptedError:
                continue
            except (OSError, ValueError):  # the epoll was closed after a fork
                return
            # One read per ready fd (drain's default), then the next fd: a fd
            # with more to read is in the next poll's events again.
            for fd, _ in events:
                with self._lock:
                    tail = self._tails.get(fd)
                if tail is None:
                    continue
                if not tail.drain():
                    with self._lock:
                        if self._tails.get(fd) is tail:
                            del self._tails[fd]
                            try:
                                ep.unregister(fd)
                            except OSError:
                                pass

    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork; the fds belong to the parent's plugins.
        self._lock = threading.Lock()
        self._tails = {}
        if self._epoll is not None:
            try:
                self._epoll.close()
            except OSError:
                pass
        self._epoll = None
        self._thread = None


PUMP = StderrPump()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=PUMP._after_fork_in_child)

"""The compiled core of plugin-client: frames, pipes, clocks and child processes.

It implements ``_core.pyi`` exactly, as its pure-Python twin ``_core_py`` does:

* :class:`FrameReader` splits newline-delimited frames out of a ``malloc``'d
  buffer with ``memchr``. Reading it never holds more than ``max_frame_bytes``
  plus one 64 KiB read; ``read`` comes first and ``poll`` only on ``EAGAIN``,
  after a bounded, adaptive spin (see ``_read_frame``).
  ``exchange`` is a write and its reply in one call, ``idle_state`` the
  one-``poll`` check for output or an exit while no request is in flight.
* :func:`write_all` writes with the GIL released and turns EPIPE into
  :class:`PipeClosed`, without SIGPIPE even where the host restored its default.
* :func:`spawn` is ``posix_spawn`` with a ``closefrom`` file action, looked up at
  run time because the wheel targets glibc 2.28 and the action is glibc 2.34.
  Without it a ``vfork`` fallback written in C below does the same job. Its
  attributes are made once, and the last spawn's file actions are kept for
  the next one whose pipes get the same fd numbers (see ``_kept_fa``). A
  spawn of a descriptor (``exec_fd``) always takes the ``vfork`` path, which
  keeps that descriptor open up to its ``execveat``.
* :class:`Child` waits on a pidfd with ``poll`` (or ``waitpid(WNOHANG)`` with a
  backoff from 50 us to 1 ms) and signals through the pidfd or the group.

Timed waits use ``ppoll``, so a timeout or deadline is kept to the
nanosecond, not rounded up to poll()'s whole milliseconds.

Every call that can block (``poll``, ``read``, ``write``, ``nanosleep``,
``posix_spawn``) runs without the GIL. ``waitpid``/``waitid`` are only ever
called with ``WNOHANG`` and keep the GIL: that makes "reap and record the
status" atomic, so two threads waiting on one child cannot both claim it.

If something else reaps a child (``SIGCHLD`` ignored, a stray ``waitpid(-1)``)
its status is lost and ``returncode`` becomes ``0``, as in :mod:`subprocess`
and the twin.

Deliberately not here: JSON parsing (:func:`split_result` only compares the
fixed head of a success reply, as bytes), plugin names, timeout policy,
logging, and any reaping or signalling from ``__dealloc__``: the client owns
a child's lifetime.
A :class:`FrameReader` is for one thread at a time (a second one gets a
``RuntimeError`` rather than a corrupted buffer); a :class:`Child` may be
signalled from one thread while another waits on it.

``_force_spawn_fallback(True)`` (private, tests only) makes :func:`spawn` use
the ``vfork`` fallback even where ``closefrom_np`` exists. The twin has no
such switch; tests look for it with ``hasattr``.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.number cimport PyNumber_Index

import os

from ._core_errors import (
    DeadlineExceeded,
    FrameTooLargeError,
    PipeClosed,
    ProcessExited,
    SpawnFailed,
    StreamEOF,
)

# The C helpers: see _core_c.h (it compiles on its own; tests/test_core_c_header.py).
cdef extern from "_core_c.h":
    enum:
        PC_STEP_CHDIR
    int pc_pidfd_open(pid_t pid) nogil
    int pc_pidfd_send_signal(int pidfd, int sig) nogil
    int pc_close_range(unsigned int lo, unsigned int hi) nogil
    int pc_poll_for(pollfd *fds, nfds_t n, double seconds) nogil
    ssize_t pc_spin_read(int fd, char *dst, size_t cap, double until, int *err) nogil
    int pc_can_spin() nogil
    int pc_spin_poll(int fd, double until) nogil
    void pc_resolve()
    bint pc_have_closefrom() nogil
    bint pc_have_addchdir() nogil
    int pc_fa_closefrom(posix_spawn_file_actions_t *fa, int lowfd) nogil
    int pc_fa_chdir(posix_spawn_file_actions_t *fa, const char *path) nogil
    int pc_vfork_spawn(const char *path, char *const argv[], char *const envp[],
                       const char *cwd, int fd0, int fd1, int fd2,
                       int execfd, const char *fdpath,
                       pid_t *out_pid, int *out_step) nogil

__all__ = (
    "IMPLEMENTATION",
    "DEFAULT_MAX_FRAME_BYTES",
    "Child",
    "FrameReader",
    "RestartWindow",
    "monotonic",
    "spawn",
    "spawn_method",
    "write_all",
)

IMPLEMENTATION = "cython"
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

cdef enum:
    CHUNK = 64 * 1024          # one read
    MIN_ALLOC = 4096

cdef Py_ssize_t SSIZE_MAX_ = <Py_ssize_t>(<size_t>-1 >> 1)

# The adaptive spin of FrameReader (see _read_frame): spin up to SPIN_MAX
# seconds for a reply that is not there yet; after SPIN_FAILS spins in a row
# ran out, block at once for the next SPIN_SKIP waits, then try again.
cdef double SPIN_MAX = 50e-6
# Child.wait spins this long on the pidfd before it sleeps: the waits are for
# an exit that is under way (stdin closed, a signal sent), typically tens of
# microseconds away, and a sleeping waiter adds its own wake-up to that.
cdef double SPIN_EXIT = 100e-6
cdef int SPIN_FAILS = 3
cdef int SPIN_SKIP = 64
# A reader with an exit fd (the process's pidfd) watches it too once a reply
# has kept it waiting this long: a process that died while a descendant
# holds its stdout gives no EOF. Not from the start: a second fd in every
# wait costs each fast round trip a quarter of a microsecond.
cdef double EXIT_WATCH = 5e-3
# The plugin's stdout pipe is grown to this (F_SETPIPE_SZ). A 600 KB reply came
# 2.5x faster unpinned than through the default 64 KiB, and the user's pipe
# quota (fs.pipe-user-pages-soft, 64 MiB) still holds 256 plugins.
cdef int STDOUT_PIPE_BYTES = 256 * 1024

pc_resolve()
# close_range(~0U, ~0U) closes nothing; it only tells whether the call exists.
cdef bint _have_close_range = pc_close_range(<unsigned int>-1, <unsigned int>-1) == 0
cdef bint _forced_fallback = False


# --- clocks, deadlines, errors ------------------------------------------------

cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    # The same arithmetic as time.monotonic(), so both give the very same float.
    return <double>(<long long>ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9


def monotonic():
    """``CLOCK_MONOTONIC`` now, in seconds; the same clock as :func:`time.monotonic`."""
    return _now()


cdef inline bint _deadline(object deadline, double *out) except -1:
    """False for ``None``; else stores the deadline (NaN is refused: it never passes)."""
    if deadline is None:
        return False
    out[0] = deadline
    if out[0] != out[0]:
        raise ValueError("deadline must be a number of seconds, not NaN")
    return True


cdef int _spin_poll_for(int fd, double spin, bint has_dl, double dl) noexcept:
    """pc_spin_poll on ``fd`` for ``spin`` seconds, never past ``dl`` (when
    ``has_dl``), with the GIL released: 1 readable, 0 ran out, -1 poll failed."""
    cdef double until = _now() + spin
    cdef int r
    if has_dl and until > dl:
        until = dl
    with nogil:
        r = pc_spin_poll(fd, until)
    return r


cdef object _os_error(int err, str what):
    return OSError(err, f"{os.strerror(err)} ({what})")


cdef enum:
    OP_READ = 0
    OP_WRITE = 1

cdef int _poll_until(pollfd *fds, int n, bint has_dl, double until) except -1:
    """ppoll() ``fds`` with the GIL released: 1 when one is ready, 0 once ``until``
    has passed (never, without ``has_dl``)."""
    cdef int r, err
    cdef double remaining = -1.0
    while True:
        if has_dl:
            remaining = until - _now()
            if remaining <= 0.0:
                return 0
        with nogil:
            r = pc_poll_for(fds, <nfds_t>n, remaining)
            err = errno
        if r > 0:
            return 1  # ready, hung up or invalid: the read/write itself tells which
        if r < 0:
            if err != EINTR:
                raise _os_error(err, f"poll on fd {fds[0].fd}")
            PyErr_CheckSignals()  # so Ctrl-C interrupts a long wait


cdef int _wait_fd(int fd, short events, bint has_dl, double dl, double start, int op) except -1:
    """poll() one fd with the GIL released until it is ready, or raise DeadlineExceeded."""
    cdef pollfd pfd
    pfd.fd = fd
    pfd.events = events
    pfd.revents = 0
    if not _poll_until(&pfd, 1, has_dl, dl):
        raise DeadlineExceeded(
            "read a frame" if op == OP_READ else f"write to fd {fd}",
            max(0.0, dl - start),
        )
    return 0


cdef object _as_int(object value, str name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    return int(value)


# --- frames -------------------------------------------------------------------

cdef class FrameReader:
    """Splits a byte stream into newline-delimited frames.

    A frame is the bytes before a ``b"\\n"`` with one trailing ``b"\\r"``
    removed. Only ``b"\\n"`` splits: U+2028 and lone ``\\r`` are frame content.
    A line whose length before its ``\\n`` (a trailing ``\\r`` included)
    exceeds ``max_frame_bytes`` raises :class:`FrameTooLargeError` as soon as
    that many bytes are seen. Complete frames before an oversized one are
    returned first. An empty line is returned as ``b""``.

    ``exit_fd`` (a pidfd, or -1) is the process behind ``fd``: a read that has
    waited 5 ms for its frame also watches it, and raises
    :class:`ProcessExited` if the process exits while its stdout stays open.
    """

    # _buf[_start:_end] is held; _buf[_start:_scan] is known to hold no b"\n",
    # so every byte goes through memchr once however it is split.
    cdef char *_buf
    cdef Py_ssize_t _cap, _start, _scan, _end
    cdef Py_ssize_t _max, _limit
    cdef int _fd
    cdef int _exit_fd       # the process's pidfd, watched in long waits; -1: none
    cdef bint _poll_first
    cdef bint _nonblocking  # fd is O_NONBLOCK: a read never blocks, so it keeps the GIL
    cdef int _wfd           # the last fd exchange() wrote to, and whether it is O_NONBLOCK
    cdef bint _wfd_nonblocking
    cdef bint _busy
    cdef int _spin_fails  # spins in a row that ran out
    cdef int _spin_skip   # waits left to block at once, without spinning
    cdef int _spin_ok     # pc_can_spin(), asked again every SPIN_SKIP waits (_can_spin)
    cdef int _spin_asked  # waits left before asking pc_can_spin() again

    def __cinit__(self, *args, **kwargs):
        self._buf = NULL
        self._fd = -1
        self._exit_fd = -1
        self._wfd = -1

    def __dealloc__(self):
        free(self._buf)

    def __init__(self, fd, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES, exit_fd=-1):
        self._idle()  # re-running __init__ frees the buffer
        fd = _as_int(fd, "fd")
        max_frame_bytes = _as_int(max_frame_bytes, "max_frame_bytes")
        exit_fd = _as_int(exit_fd, "exit_fd")
        if fd < -1:
            raise ValueError(f"fd must be a file descriptor or -1, not {fd!r}")
        if exit_fd < -1:
            raise ValueError(f"exit_fd must be a file descriptor or -1, not {exit_fd!r}")
        if max_frame_bytes < 1:
            raise ValueError(f"max_frame_bytes must be at least 1, not {max_frame_bytes!r}")
        self._setup(fd, max_frame_bytes, exit_fd, fcntl(fd, F_GETFL) if fd >= 0 else -1)

    cdef void _setup(self, int fd, Py_ssize_t max_frame_bytes, int exit_fd, int flags) noexcept:
        """``flags``: ``fd``'s status flags (``F_GETFL``), or -1."""
        self._fd = fd
        self._exit_fd = exit_fd
        self._wfd = -1
        self._max = max_frame_bytes
        self._limit = self._max + CHUNK if self._max <= SSIZE_MAX_ - CHUNK else SSIZE_MAX_
        # On a blocking fd read() would ignore the deadline, so poll first
        # there; but not on a write-only fd, where poll never says "ready"
        # and read fails at once with EBADF.
        self._poll_first = (
            flags >= 0 and (flags & O_NONBLOCK) == 0 and (flags & O_ACCMODE) != O_WRONLY
        )
        self._nonblocking = flags >= 0 and (flags & O_NONBLOCK) != 0
        # No spin for the first wait: a process that is still starting up
        # answers in milliseconds, and may need this very CPU to do it.
        self._spin_fails = 0
        self._spin_skip = 1
        self._drop()

    cdef bint _may_spin(self) noexcept:
        """Whether a wait may spin (and it counts as one): not one of the SPIN_SKIP
        waits after SPIN_FAILS spins ran out (nor the first), spinning on, the fd
        non-blocking, and this thread free to run on another CPU."""
        if self._spin_skip > 0:
            self._spin_skip -= 1
            return False
        return SPIN_MAX > 0.0 and not self._poll_first and self._can_spin()

    cdef void _spun(self, bint got) noexcept:
        """Book a spin that ended with data (``got``) or ran out: SPIN_FAILS of the
        latter in a row, and the next SPIN_SKIP waits block at once."""
        if got:
            self._spin_fails = 0
            return
        self._spin_fails += 1
        if self._spin_fails >= SPIN_FAILS:
            self._spin_fails = 0
            self._spin_skip = SPIN_SKIP

    cdef bint _can_spin(self) noexcept:
        """pc_can_spin(), a system call, asked again every SPIN_SKIP waits that could
        spin (not for a first wait, nor one where spinning is off)."""
        if self._spin_asked <= 0:
            self._spin_ok = pc_can_spin()
            self._spin_asked = SPIN_SKIP
        else:
            self._spin_asked -= 1
        return self._spin_ok

    cdef void _drop(self) noexcept:
        free(self._buf)
        self._buf = NULL
        self._cap = self._start = self._scan = self._end = 0

    @property
    def fd(self):
        return self._fd

    @property
    def exit_fd(self):
        return self._exit_fd

    @property
    def max_frame_bytes(self):
        return self._max

    @property
    def buffered(self):
        """Bytes held that have not yet been returned as frames."""
        return self._end - self._start

    def __repr__(self):
        return (
            f"<FrameReader fd={self._fd} max_frame_bytes={self._max}"
            f" buffered={self._end - self._start}>"
        )

    cdef int _idle(self) except -1:
        # A read in another thread writes into the buffer without the GIL.
        if self._busy:
            raise RuntimeError("FrameReader is in use by another thread")
        return 0

    cdef int _room(self, Py_ssize_t n, bint reading) except -1:
        """Make room for ``n`` more bytes at the tail."""
        cdef Py_ssize_t live = self._end - self._start
        cdef Py_ssize_t need, newcap
        cdef char *nb
        if self._cap - self._end >= n:
            return 0
        # Slide the held bytes to the front. When reading, they are one
        # unfinished line that no later slide moves again (it stays at the
        # head until its b"\n" arrives). When fed, slide only over a dead
        # prefix at least as long, so each byte moved was paid for by one
        # consumed. Either way repeated small frames stay O(n).
        if self._start > 0 and (reading or self._start >= live):
            memmove(self._buf, self._buf + self._start, <size_t>live)
            self._scan -= self._start
            self._end = live
            self._start = 0
            if self._cap - self._end >= n:
                return 0
        if n > SSIZE_MAX_ - self._end:
            raise MemoryError()
        need = self._end + n
        newcap = self._cap * 2 if self._cap <= SSIZE_MAX_ // 2 else need
        if newcap < need:
            newcap = need
        if newcap < MIN_ALLOC:
            newcap = MIN_ALLOC
        if reading and newcap > self._limit:
            newcap = self._limit  # >= need: a read happens only with <= max held
        nb = <char *>realloc(self._buf, <size_t>newcap)
        if nb == NULL:
            raise MemoryError()
        self._buf = nb
        self._cap = newcap
        return 0

    cdef object _pop(self):
        """The next complete frame, or None; FrameTooLargeError past the limit."""
        cdef const char *nl
        cdef Py_ssize_t line, size
        if self._end == self._start:
            return None
        nl = <const char *>memchr(self._buf + self._scan, c'\n', <size_t>(self._end - self._scan))
        if nl == NULL:
            self._scan = self._end
            if self._end - self._start > self._max:
                raise FrameTooLargeError(self._max, self._end - self._start)
            return None
        line = (nl - self._buf) - self._start
        if line > self._max:
            raise FrameTooLargeError(self._max, line)
        size = line
        if size > 0 and self._buf[self._start + size - 1] == c'\r':
            size -= 1
        frame = PyBytes_FromStringAndSize(self._buf + self._start, size)
        self._start += line + 1
        if self._start == self._end:
            self._start = self._end = 0  # free compaction
        self._scan = self._start
        return frame

    def read_frame(self, deadline=None):
        """Return the next frame, reading from ``fd`` as needed.

        A frame already buffered is returned with no system call. Raises
        :class:`DeadlineExceeded`, :class:`StreamEOF` (with ``pending``; its
        subclass :class:`ProcessExited` when ``exit_fd`` shows an exit first),
        :class:`FrameTooLargeError` and ``OSError`` for other read errors.
        """
        self._idle()
        return self._read_frame(deadline)

    def exchange(self, int fd, data, deadline=None):
        """One request and its reply: :func:`write_all` ``data`` to ``fd``, then
        :meth:`read_frame`, both within ``deadline``, in one call.

        ``fd``'s ``O_NONBLOCK`` flag is looked up when the reader first writes
        to that fd number: a non-blocking fd is written with the GIL held (the
        write never waits; EAGAIN polls with the GIL released), as reads are."""
        self._idle()
        return self._exchange(fd, data, deadline)

    def exchange_if_idle(self, int fd, data, deadline=None, int pidfd=-1):
        """:meth:`idle_state` first: unless it is ``0``, return ``None`` and write
        nothing; else :meth:`exchange`. A warm request in one call."""
        self._idle()
        if self._idle_state(pidfd) != 0:
            return None
        return self._exchange(fd, data, deadline)

    def request(self, Child child, data, deadline=None):
        """:meth:`exchange_if_idle` on ``child``'s stdin and pidfd, read in C: the
        client's warm request in one call (the fds are never a stale copy)."""
        self._idle()
        if self._idle_state(child._pidfd) != 0:
            return None
        return self._exchange(child._stdin, data, deadline)

    cdef object _exchange(self, int fd, object data, object deadline):
        _write_all(fd, data, deadline, self._write_keeps_gil(fd))
        return self._read_frame(deadline)

    cdef bint _write_keeps_gil(self, int fd):
        cdef int flags
        if fd != self._wfd:
            flags = fcntl(fd, F_GETFL)
            self._wfd = fd
            self._wfd_nonblocking = flags >= 0 and (flags & O_NONBLOCK) != 0
        return self._wfd_nonblocking

    def spin_ready(self, deadline=None):
        """Spin a little, without sleeping, until ``fd`` turns readable: the
        adaptive spin of :meth:`read_frame`, for a caller that reads elsewhere
        (the asyncio client, before its event loop would sleep). ``True``:
        ``fd`` is readable (or hung up) now; ``False``: no spin was allowed,
        or it ran out. The rules and the state are ``read_frame``'s: never for
        the reader's first wait, never past ``deadline``, never on a blocking
        fd, never when this thread may run on one CPU only, and none for
        SPIN_SKIP waits after SPIN_FAILS spins in a row ran out. The GIL is
        released meanwhile."""
        cdef int r
        cdef double dl = 0.0
        cdef bint has_dl
        self._idle()
        has_dl = _deadline(deadline, &dl)
        if self._fd < 0 or not self._may_spin():
            return False
        r = _spin_poll_for(self._fd, SPIN_MAX, has_dl, dl)
        if r >= 0:
            self._spun(r > 0)
        return r > 0

    def idle_state(self, int pidfd=-1):
        """What came while no request was in flight, with one ``poll`` that never waits.

        ``2``: bytes are held, or readable on ``fd`` (output nobody asked for).
        ``1``: ``fd`` hung up, or ``pidfd`` (when >= 0) is readable: the process
        exited or closed its stdout. ``0``: nothing.
        """
        self._idle()
        return self._idle_state(pidfd)

    cdef int _idle_state(self, int pidfd) except -1:
        cdef pollfd fds[2]
        cdef int r, err
        if self._end > self._start:
            return 2
        fds[0].fd = self._fd
        fds[0].events = POLLIN
        fds[0].revents = 0
        fds[1].fd = pidfd
        fds[1].events = POLLIN
        fds[1].revents = 0
        while True:
            r = poll(fds, 2 if pidfd >= 0 else 1, 0)
            if r >= 0:
                break
            err = errno
            if err != EINTR:
                raise _os_error(err, f"poll on fd {self._fd}")
        if r == 0:
            return 0
        if fds[0].revents & POLLIN:
            return 2
        if fds[0].revents or fds[1].revents:  # POLLHUP/POLLERR/POLLNVAL, or the pidfd
            return 1
        return 0

    cdef int _wait_reply(self, bint has_dl, double dl, double start) except -1:
        """Wait until ``fd`` is readable (0), or raise DeadlineExceeded. With an
        exit fd, a wait that has lasted EXIT_WATCH since ``start`` watches it too,
        and returns 1 if the process exited while ``fd`` had nothing to read
        (what it wrote before its exit is in the pipe by then)."""
        cdef pollfd fds[2]
        cdef double watch
        if self._exit_fd < 0:
            return _wait_fd(self._fd, POLLIN, has_dl, dl, start, OP_READ)
        fds[0].fd = self._fd
        fds[0].events = POLLIN
        fds[0].revents = 0
        watch = start + EXIT_WATCH
        if not has_dl or watch < dl:
            if _poll_until(fds, 1, True, watch):
                return 0
        fds[1].fd = self._exit_fd
        fds[1].events = POLLIN
        fds[1].revents = 0
        if not _poll_until(fds, 2, has_dl, dl):
            raise DeadlineExceeded("read a frame", max(0.0, dl - start))
        return 1 if fds[0].revents == 0 else 0

    cdef object _read_frame(self, object deadline):
        # The fd is read first and polled only on EAGAIN: a reply that is
        # already there costs one read(). When it is not there yet, the reader
        # spins on read() for up to SPIN_MAX (GIL released) before it sleeps
        # in poll: a plugin on another CPU then answers a running CPU instead
        # of waking an idle one, which on a VM costs tens of microseconds per
        # wake-up, twice per round trip. After SPIN_FAILS spins in a row ran
        # out (a slow plugin, or one that shares this CPU and so cannot run
        # while we spin) it blocks at once for the next SPIN_SKIP waits, then
        # tries again: a slow plugin costs at most SPIN_FAILS * SPIN_MAX of
        # CPU per SPIN_SKIP requests. Never for a reader's first wait (the
        # process may still be starting), never past the deadline, never on
        # a blocking fd, never when this thread may only run on one CPU (nor
        # on a one-CPU machine): see pc_can_spin.
        cdef double dl = 0.0, start = 0.0, waited_from = 0.0, until
        cdef bint has_dl, waited = False
        cdef ssize_t n
        cdef int err, fd = self._fd
        cdef char *dst
        frame = self._pop()
        if frame is not None:
            return frame
        has_dl = _deadline(deadline, &dl)
        self._busy = True
        try:
            while True:
                if self._poll_first and has_dl:
                    if start == 0.0:
                        start = _now()
                    if self._wait_reply(has_dl, dl, start):
                        raise ProcessExited(self._end - self._start)
                # _pop did not raise, so at most max bytes are held: with one
                # more read the buffer stays under max + CHUNK.
                self._room(CHUNK, True)
                dst = self._buf + self._end
                if self._nonblocking:
                    # Returns at once, with data or EAGAIN: dropping and taking
                    # back the GIL would cost more than the read.
                    n = read(fd, dst, CHUNK)
                    err = errno
                else:
                    with nogil:
                        n = read(fd, dst, CHUNK)
                        err = errno
                if n < 0 and err == EAGAIN and not waited:
                    waited = True  # spin once per frame, on its first EAGAIN
                    waited_from = _now()
                    if self._may_spin():
                        until = waited_from + SPIN_MAX
                        if has_dl and until > dl:
                            until = dl
                        with nogil:
                            n = pc_spin_read(fd, dst, CHUNK, until, &err)
                        if n >= 0 or err == EAGAIN:
                            self._spun(n >= 0)
                if n > 0:
                    self._end += n
                    frame = self._pop()
                    if frame is not None:
                        return frame
                elif n == 0:
                    raise StreamEOF(self._end - self._start)
                elif err == EAGAIN:  # == EWOULDBLOCK on Linux
                    if start == 0.0:
                        start = waited_from  # the clock is read only once a wait begins
                    if self._wait_reply(has_dl, dl, start):
                        raise ProcessExited(self._end - self._start)
                elif err == EINTR:
                    PyErr_CheckSignals()
                else:
                    raise _os_error(err, f"read from fd {fd}")
        finally:
            self._busy = False

    def feed(self, data):
        """Append bytes read elsewhere. Never raises for size: the limit is
        enforced by :meth:`next_frame`."""
        cdef Py_buffer view
        self._idle()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len > 0:
                self._room(view.len, False)
                memcpy(self._buf + self._end, view.buf, <size_t>view.len)
                self._end += view.len
        finally:
            PyBuffer_Release(&view)

    def next_frame(self):
        """Pop the next complete frame from the buffer without I/O, or ``None``.
        Raises :class:`FrameTooLargeError` when the head line exceeds the limit."""
        self._idle()
        return self._pop()

    def clear(self):
        """Drop everything buffered."""
        self._idle()
        self._drop()


# --- the head of a success reply ------------------------------------------------

# The one protocol fact the core holds, as bytes: the head of a success reply
# as this library's SDK and serde_json write it. No JSON is parsed here.
cdef const char *RESULT_HEAD = b'{"jsonrpc":"2.0","id":'
cdef const char *RESULT_MID = b',"result":'
cdef enum:
    RESULT_HEAD_LEN = 22
    RESULT_MID_LEN = 10


def split_result(frame, request_id):
    """The bytes between ``{"jsonrpc":"2.0","id":<request_id>,"result":`` and
    the frame's last byte, a ``}``; ``None`` for any other frame.

    A fast path, not a decoder: it never looks inside those bytes. Whether
    they are one JSON value (a ``,"error":...`` after the result makes them
    invalid JSON) is for the caller's parser to say; any frame written
    otherwise (spaces, another member order) is the caller's full decode's.
    """
    cdef const char *p
    cdef Py_ssize_t n, k, at
    cdef char digits[24]
    cdef unsigned long long v
    if type(frame) is not bytes:  # exactly bytes, as frames are
        raise TypeError(f"split_result() needs bytes, not {type(frame).__name__}")
    v = PyNumber_Index(request_id)  # OverflowError outside 0..2**64-1
    p = PyBytes_AS_STRING(frame)
    n = PyBytes_GET_SIZE(frame)
    k = 24
    while True:  # request_id in decimal, as %d writes it, at digits[k:24]
        k -= 1
        digits[k] = <char>(c'0' + <int>(v % 10))
        v //= 10
        if v == 0:
            break
    at = RESULT_HEAD_LEN + (24 - k) + RESULT_MID_LEN
    if (
        n <= at
        or p[n - 1] != c'}'
        or memcmp(p, RESULT_HEAD, RESULT_HEAD_LEN) != 0
        or memcmp(p + RESULT_HEAD_LEN, digits + k, <size_t>(24 - k)) != 0
        or memcmp(p + RESULT_HEAD_LEN + (24 - k), RESULT_MID, RESULT_MID_LEN) != 0
    ):
        return None
    return PyBytes_FromStringAndSize(p + at, n - 1 - at)


# --- writing ------------------------------------------------------------------

def write_all(int fd, data, deadline=None):
    """Write all of ``data`` to ``fd``, handling partial writes and EAGAIN (with ``poll``).

    EPIPE raises :class:`PipeClosed`; the host never dies of SIGPIPE, even if
    the host has restored SIGPIPE's default disposition. Raises
    :class:`DeadlineExceeded` if the pipe stays full past ``deadline``.
    """
    _write_all(fd, data, deadline, False)


cdef int _write_all(int fd, object data, object deadline, bint keep_gil) except -1:
    cdef Py_buffer view
    cdef const char *p
    cdef Py_ssize_t left
    cdef ssize_t n
    cdef int err
    cdef double dl = 0.0, start = 0.0
    cdef bint has_dl, guard = False, epipe = False, pending_before = False
    cdef sigaction_t old_action
    cdef sigset_t pipeset, oldmask, pending
    cdef timespec zero
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len == 0:
            return 0
        has_dl = _deadline(deadline, &dl)
        # Python ignores SIGPIPE, but a host may have restored SIG_DFL, and
        # then one EPIPE would kill it. Asked every call (one cheap syscall):
        # the disposition can change at any time.
        if sigaction(SIGPIPE, NULL, &old_action) != 0 or old_action.sa_handler != SIG_IGN:
            sigemptyset(&pipeset)
            sigaddset(&pipeset, SIGPIPE)
            pthread_sigmask(SIG_BLOCK, &pipeset, &oldmask)
            guard = True
            sigemptyset(&pending)
            sigpending(&pending)
            pending_before = sigismember(&pending, SIGPIPE) == 1
        p = <const char *>view.buf
        left = view.len
        while left > 0:
            if keep_gil:  # a non-blocking fd: returns at once (see FrameReader.exchange)
                n = write(fd, p, <size_t>left)
                err = errno
            else:
                with nogil:
                    n = write(fd, p, <size_t>left)
                    err = errno
            if n > 0:
                p += n
                left -= n
            elif n == 0 or err == EAGAIN:  # == EWOULDBLOCK on Linux
                if start == 0.0:
                    start = _now()  # read only once a wait begins
                _wait_fd(fd, POLLOUT, has_dl, dl, start, OP_WRITE)
            elif err == EINTR:
                PyErr_CheckSignals()
            elif err == EPIPE:
                epipe = True
                raise PipeClosed(fd)
            else:
                raise _os_error(err, f"write to fd {fd}")
    finally:
        if guard:
            if epipe and not pending_before:
                # Ours is the thread-directed SIGPIPE of that write: take it
                # before unblocking, so it is never delivered.
                zero.tv_sec = 0
                zero.tv_nsec = 0
                while sigtimedwait(&pipeset, NULL, &zero) < 0 and errno == EINTR:
                    pass
            pthread_sigmask(SIG_SETMASK, &oldmask, NULL)
        PyBuffer_Release(&view)
    return 0


# --- restart window -----------------------------------------------------------

cdef class RestartWindow:
    """A sliding window of crash timestamps on ``CLOCK_MONOTONIC``.

    Holds at most ``cap`` timestamps (the newest) in a fixed ring, so
    :meth:`count` never exceeds ``cap``. ``now`` arguments default to
    :func:`monotonic`.
    """

    cdef double *_ts        # ring of _n timestamps, oldest at _head
    cdef Py_ssize_t _cap, _head, _n
    cdef double _window
    cdef object _last

    def __cinit__(self, *args, **kwargs):
        self._ts = NULL

    def __dealloc__(self):
        free(self._ts)

    def __init__(self, window, cap):
        if isinstance(window, bool) or isinstance(cap, bool):
            raise ValueError(f"window and cap must be numbers, not bools: {window!r}, {cap!r}")
        if not isinstance(window, (int, float)):
            raise TypeError(f"window must be a number of seconds, not {window!r}")
        cap = _as_int(cap, "cap")
        window = float(window)
        if not window > 0.0:  # also rejects NaN
            raise ValueError(f"window must be > 0 seconds, not {window!r}")
        if cap < 1:
            raise ValueError(f"cap must be >= 1, not {cap!r}")
        if cap > SSIZE_MAX_ // <Py_ssize_t>sizeof(double):
            raise MemoryError(f"cap {cap!r} is too large")
        free(self._ts)
        self._ts = NULL
        self._cap = cap
        self._ts = <double *>malloc(<size_t>self._cap * sizeof(double))
        if self._ts == NULL:
            raise MemoryError()
        self._window = window
        self._head = self._n = 0
        self._last = None

    @property
    def window(self):
        return self._window

    @property
    def cap(self):
        return self._cap

    @property
    def last(self):
        """The newest recorded timestamp, or ``None``; kept across pruning."""
        return self._last

    def __repr__(self):
        return f"<RestartWindow window={self._window!r} cap={self._cap} held={self._n}>"

    cdef Py_ssize_t _prune(self, double now) noexcept:
        cdef double cutoff = now - self._window
        while self._n > 0 and self._ts[self._head] < cutoff:
            self._head = (self._head + 1) % self._cap
            self._n -= 1
        return self._n

    def record(self, now=None):
        """Record a crash at ``now``; return the count within the window as of ``now``."""
        cdef double t = _now() if now is None else now
        if self._n == self._cap:  # full: the oldest makes way
            self._head = (self._head + 1) % self._cap
            self._n -= 1
        self._ts[(self._head + self._n) % self._cap] = t
        self._n += 1
        self._last = t
        return self._prune(t)

    def count(self, now=None):
        """Prune timestamps older than ``now - window`` and return how many are left."""
        return self._prune(_now() if now is None else now)

    def exceeded(self, now=None):
        """``count(now) >= cap``."""
        return self._prune(_now() if now is None else now) >= self._cap

    def clear(self):
        """Forget every timestamp (``last`` too)."""
        self._head = self._n = 0
        self._last = None


# --- spawning -----------------------------------------------------------------

def _spin_limit(limit=None):
    """Private, for benchmarks and tests: the longest adaptive spin of a
    FrameReader, in seconds; sets it when ``limit`` is given (``0`` also turns
    off :meth:`Child.wait`'s spin). Returns the value in force before the call."""
    global SPIN_MAX
    cdef double old = SPIN_MAX
    if limit is not None:
        if not limit >= 0.0:
            raise ValueError(f"limit must be >= 0, not {limit!r}")
        SPIN_MAX = limit
    return old


def _force_spawn_fallback(bint flag):
    """Private, for tests: make :func:`spawn` use the ``vfork`` fallback even
    where ``posix_spawn_file_actions_addclosefrom_np`` exists."""
    global _forced_fallback
    _forced_fallback = flag


cdef bint _use_fallback(bint with_cwd) noexcept:
    return _forced_fallback or not pc_have_closefrom() or (with_cwd and not pc_have_addchdir())


def spawn_method():
    """How :func:`spawn` closes inherited fds on this machine. For ``doctor``."""
    if not _use_fallback(False):
        return "posix_spawn+closefrom_np"
    return "vfork+close_range" if _have_close_range else "vfork+proc_self_fd"


cdef int _make_attr(posix_spawnattr_t *attr) noexcept nogil:
    """The spawn attributes, the same for every spawn: made once, at import."""
    cdef sigset_t sigs
    cdef int err = posix_spawnattr_init(attr)
    if err:
        return err
    err = posix_spawnattr_setflags(
        attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
    if not err:
        err = posix_spawnattr_setpgroup(attr, 0)
    if not err:
        # Every signal 1..NSIG-1 back to its default: SIGPIPE and SIGXFSZ above
        # all, which Python ignores. Not sigfillset: it leaves out glibc's two
        # internal signals (32, 33), and posix_spawn then sets those to
        # SIG_IGN in the child, which exec keeps. Setting every bit by hand
        # resets them too; the kernel skips SIGKILL/SIGSTOP by itself.
        memset(&sigs, 0xff, sizeof(sigs))
        err = posix_spawnattr_setsigdefault(attr, &sigs)
    if not err:
        sigemptyset(&sigs)
        err = posix_spawnattr_setsigmask(attr, &sigs)
    if err:
        posix_spawnattr_destroy(attr)
    return err


cdef posix_spawnattr_t _attr
cdef int _attr_err = _make_attr(&_attr)


cdef int _make_actions(posix_spawn_file_actions_t *fa, int fd0, int fd1, int fd2,
                       const char *cwd) noexcept nogil:
    """The child's file actions: the pipes on 0, 1 and 2, the cwd, no other fd."""
    cdef int err = posix_spawn_file_actions_init(fa)
    if err:
        return err
    # The pipe fds are all >= 3 (see _pipe), so these dup2s never clobber
    # one another and never land on the fd they start from (a no-op dup2
    # would leave close-on-exec set).
    err = posix_spawn_file_actions_adddup2(fa, fd0, 0)
    if not err:
        err = posix_spawn_file_actions_adddup2(fa, fd1, 1)
    if not err:
        err = posix_spawn_file_actions_adddup2(fa, fd2, 2)
    if not err and cwd != NULL:
        err = pc_fa_chdir(fa, cwd)
    if not err:
        err = pc_fa_closefrom(fa, 3)
    if err:
        posix_spawn_file_actions_destroy(fa)
    return err


# The file actions of the last spawn without a cwd, kept for the next one. They
# depend only on the pipes' fd numbers, which repeat as processes come and go,
# and making them costs glibc a getrlimit per fd it checks (seven system calls).
# Taken (busy) by one spawn at a time; a spawn in another thread meanwhile makes
# its own.
cdef posix_spawn_file_actions_t _kept_fa
cdef int _kept_fds[3]
cdef bint _kept_valid = False, _kept_busy = False


cdef int _take_kept_actions(int fd0, int fd1, int fd2) noexcept:
    """Under the GIL: make ``_kept_fa`` the actions for these fds, and take it."""
    global _kept_valid, _kept_busy
    cdef int err = 0
    _kept_busy = True
    if _kept_valid and _kept_fds[0] == fd0 and _kept_fds[1] == fd1 and _kept_fds[2] == fd2:
        return 0
    if _kept_valid:
        posix_spawn_file_actions_destroy(&_kept_fa)
        _kept_valid = False
    err = _make_actions(&_kept_fa, fd0, fd1, fd2, NULL)
    if not err:
        _kept_valid = True
        _kept_fds[0], _kept_fds[1], _kept_fds[2] = fd0, fd1, fd2
    return err


cdef int _pipe(int *ends) except -1:
    """A close-on-exec pipe with both ends >= 3.

    If the host closed its stdin/stdout/stderr, pipe2 hands out 0, 1 or 2. A
    child end there could be clobbered by another dup2 or left close-on-exec,
    and a parent end there would receive the host's own prints.
    """
    cdef int i, fd, err
    if pipe2(ends, O_CLOEXEC) < 0:
        err = errno
        ends[0] = ends[1] = -1
        raise _os_error(err, "pipe2")
    for i in range(2):
        if ends[i] < 3:
            fd = fcntl(ends[i], F_DUPFD_CLOEXEC, 3)
            err = errno
            close(ends[i])
            ends[i] = fd
            if fd < 0:
                raise _os_error(err, "fcntl(F_DUPFD_CLOEXEC)")
    return 0


cdef int _set_nonblocking(int fd) except -1:
    """O_NONBLOCK on an end of a pipe from :func:`_pipe`. Its other status flags
    are all clear (its access mode, the only other thing F_GETFL would say, is
    ignored by F_SETFL), so there is nothing to read first."""
    if fcntl(fd, F_SETFL, O_NONBLOCK) < 0:
        raise _os_error(errno, f"fcntl(O_NONBLOCK) on fd {fd}")
    return 0


cdef bytes _fsencode(object value):
    cdef bytes b = value if type(value) is bytes else os.fsencode(value)
    if memchr(PyBytes_AS_STRING(b), 0, <size_t>len(b)) != NULL:
        raise ValueError(f"embedded null byte in {value!r}")
    return b


cdef int _exec_fd_arg(object exec_fd) except -1:
    """``exec_fd`` checked: an open, close-on-exec descriptor (else it would reach
    the plugin)."""
    cdef int fd = _as_int(exec_fd, "exec_fd")
    cdef int flags = fcntl(fd, F_GETFD)
    if flags < 0:
        raise _os_error(errno, f"fcntl(F_GETFD) on exec_fd {fd}")
    if not flags & FD_CLOEXEC:
        raise ValueError(f"exec_fd {fd} must be close-on-exec, or the plugin would inherit it")
    return fd


cdef bint _dir_ok(bytes path):
    return os.path.isdir(path) and os.access(path, os.X_OK)


def spawn(argv, env, *, cwd=None, exec_fd=None):
    """Start ``argv[0]`` (a path; no ``PATH`` search) with ``posix_spawn``, or
    the file open at ``exec_fd`` with the ``vfork`` fallback and ``execveat``
    (``posix_spawn``'s ``closefrom`` would close it before the exec).

    The child gets exactly ``env``, pipes on fds 0, 1 and 2 and no other fd,
    every signal at its default disposition, an empty signal mask, and a new
    process group whose id is its pid. Its stdout pipe holds 256 KiB where the
    kernel allows it. Raises :class:`SpawnFailed` (errno and path) if the file
    is missing, not executable or not a valid executable.
    """
    cdef list args, envl
    cdef bytes cwd_b = None
    cdef Py_ssize_t i
    cdef char **c_argv = NULL
    cdef char **c_envp = NULL
    cdef const char *c_path
    cdef const char *c_cwd = NULL
    # in_r, in_w, out_r, out_w, err_r, err_w
    cdef int fds[6]
    cdef int err = 0, step = 0, pidfd, moved, flags
    cdef int c_execfd = -1, moved_exec = -1
    cdef bytes fdpath_b = None
    cdef const char *c_fdpath = NULL
    cdef pid_t pid = 0
    global _kept_busy
    cdef bint fallback, kept = False, ok = False
    cdef posix_spawn_file_actions_t own_fa
    cdef posix_spawn_file_actions_t *fa = NULL
    cdef Child child

    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a sequence of arguments, not one string")
    args = [_fsencode(a) for a in argv]
    if not args:
        raise ValueError("argv must not be empty")
    envl = []
    for k, v in env.items():
        kb = _fsencode(k)
        if not kb or b"=" in kb:
            raise ValueError(f"illegal environment variable name {k!r}")
        envl.append(kb + b"=" + _fsencode(v))
    if cwd is not None:
        cwd_b = _fsencode(cwd)
        c_cwd = cwd_b
    fallback = _use_fallback(cwd is not None)
    if exec_fd is not None:
        c_execfd = _exec_fd_arg(exec_fd)
        fallback = True

    for i in range(6):
        fds[i] = -1
    c_argv = <char **>malloc((len(args) + 1) * sizeof(char *))
    c_envp = <char **>malloc((len(envl) + 1) * sizeof(char *))
    try:
        if c_argv == NULL or c_envp == NULL:
            raise MemoryError()
        for i in range(len(args)):
            c_argv[i] = PyBytes_AS_STRING(args[i])
        c_argv[len(args)] = NULL
        for i in range(len(envl)):
            c_envp[i] = PyBytes_AS_STRING(envl[i])
        c_envp[len(envl)] = NULL
        c_path = c_argv[0]
        if 0 <= c_execfd < 3:  # off the numbers the child's dup2s write over
            moved_exec = fcntl(c_execfd, F_DUPFD_CLOEXEC, 3)
            if moved_exec < 0:
                raise _os_error(errno, f"fcntl(F_DUPFD_CLOEXEC) on exec_fd {c_execfd}")
            c_execfd = moved_exec
        if c_execfd >= 0:
            fdpath_b = b"/proc/self/fd/%d" % c_execfd
            c_fdpath = fdpath_b

        _pipe(&fds[0])
        _pipe(&fds[2])
        _pipe(&fds[4])
        _set_nonblocking(fds[1])
        _set_nonblocking(fds[2])
        _set_nonblocking(fds[4])
        # A bigger stdout pipe (best effort: a user over the kernel's pipe quota
        # keeps the default): a large reply then needs a few wake-ups of the
        # plugin instead of one per 64 KiB.
        fcntl(fds[2], F_SETPIPE_SZ, STDOUT_PIPE_BYTES)

        if fallback:
            with nogil:
                err = pc_vfork_spawn(c_path, c_argv, c_envp, c_cwd,
                                     fds[0], fds[3], fds[5], c_execfd, c_fdpath, &pid, &step)
        else:
            if c_cwd == NULL and not _kept_busy:
                kept = True
                err = _take_kept_actions(fds[0], fds[3], fds[5])
                fa = &_kept_fa
            else:
                err = _make_actions(&own_fa, fds[0], fds[3], fds[5], c_cwd)
                if not err:
                    fa = &own_fa
            if not err:
                err = _attr_err
            if not err:
                # posix_spawn, not posix_spawnp: no PATH search. glibc >= 2.24
                # returns the exec's errno (ENOENT, EACCES, ENOEXEC, ...).
                with nogil:
                    err = posix_spawn(&pid, c_path, fa, &_attr, c_argv, c_envp)
        if err:
            # posix_spawn's errno does not say whether chdir or exec failed.
            if cwd_b is not None and (step == PC_STEP_CHDIR or (not fallback and not _dir_ok(cwd_b))):
                raise SpawnFailed(err, os.fsdecode(cwd_b))
            raise SpawnFailed(err, os.fsdecode(args[0]))

        # Safe from pid reuse: the child is ours and unreaped, a zombie at worst.
        # Any failure (ENOSYS before Linux 5.3, seccomp, EMFILE) means no pidfd.
        pidfd = pc_pidfd_open(pid)
        if 0 <= pidfd < 3:  # kept off the host's stdio numbers, as the pipes are
            moved = fcntl(pidfd, F_DUPFD_CLOEXEC, 3)
            close(pidfd)
            pidfd = moved
        child = Child.__new__(Child)
        child._pid = pid
        child._pidfd = pidfd if pidfd >= 0 else -1
        child._stdin = fds[1]
        child._stdout = fds[2]
        child._stderr = fds[4]
        child._nonblocking = True
        ok = True
        return child
    finally:
        if kept:
            _kept_busy = False
        elif fa == &own_fa:
            posix_spawn_file_actions_destroy(&own_fa)
        free(c_argv)
        free(c_envp)
        if moved_exec >= 0:
            close(moved_exec)
        for i in range(6):
            # The child's ends always; the parent's only if no Child owns them.
            if fds[i] >= 0 and (not ok or i in (0, 3, 5)):
                close(fds[i])


# --- the child handle ---------------------------------------------------------

cdef class Child:
    """A spawned child process and the parent's ends of its pipes."""

    cdef pid_t _pid
    cdef int _pidfd, _stdin, _stdout, _stderr
    cdef bint _nonblocking  # spawn() made stdin and stdout non-blocking
    cdef object _returncode
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        self._pidfd = self._stdin = self._stdout = self._stderr = -1

    def __init__(self, int pid, int pidfd, int stdin_fd, int stdout_fd, int stderr_fd):
        """Made by :func:`spawn`; not for direct use."""
        if pid <= 0:  # kill(0)/killpg(0) would signal the host's own group
            raise ValueError(f"pid must be positive, not {pid!r}")
        self._pid = pid
        self._pidfd = pidfd
        self._stdin = stdin_fd
        self._stdout = stdout_fd
        self._stderr = stderr_fd

    def __dealloc__(self):
        # fds only: signalling or reaping here could hit an unrelated process
        # or block the garbage collector. The client owns the lifetime.
        self._close_all()

    cdef void _close_all(self) noexcept:
        cdef int fds[4]
        cdef int i
        fds[0], fds[1], fds[2], fds[3] = self._stdin, self._stdout, self._stderr, self._pidfd
        self._stdin = self._stdout = self._stderr = self._pidfd = -1
        for i in range(4):
            if fds[i] >= 0:
                close(fds[i])  # Linux frees the fd even when close() reports an error

    @property
    def pid(self):
        return self._pid

    @property
    def pidfd(self):
        """A pidfd for the child, or ``-1`` where the kernel has none."""
        return self._pidfd

    @property
    def stdin_fd(self):
        """``-1`` once closed."""
        return self._stdin

    @property
    def stdout_fd(self):
        return self._stdout

    @property
    def stderr_fd(self):
        return self._stderr

    @property
    def returncode(self):
        """``None`` until reaped; then the exit status, or ``-signum``."""
        return self._returncode

    def reader(self, Py_ssize_t max_frame_bytes=DEFAULT_MAX_FRAME_BYTES):
        """``FrameReader(stdout_fd, max_frame_bytes, pidfd)``. For a child from
        :func:`spawn`, made without asking the kernel what it already knows:
        stdout and stdin are non-blocking."""
        cdef FrameReader r
        cdef bint known = self._nonblocking and self._stdout >= 0
        if max_frame_bytes < 1:
            raise ValueError(f"max_frame_bytes must be at least 1, not {max_frame_bytes!r}")
        if not known:
            return FrameReader(self._stdout, max_frame_bytes, self._pidfd)
        r = FrameReader.__new__(FrameReader)
        r._setup(self._stdout, max_frame_bytes, self._pidfd, O_NONBLOCK)
        if self._stdin >= 0:
            r._wfd = self._stdin
            r._wfd_nonblocking = True
        return r

    def __repr__(self):
        state = "running" if self._returncode is None else f"returncode={self._returncode}"
        return f"<Child pid={self._pid} {state}>"

    cdef object _check(self, bint reap):
        """One non-blocking look: the (would-be, if not reap) return code, or None.

        Under the GIL, so reaping and recording are one step for other threads.
        If something else reaped the child (SIGCHLD ignored, a stray
        waitpid(-1)), its status is lost: returncode becomes 0, as in
        subprocess and the twin.
        """
        cdef int status = 0, err
        cdef pid_t r
        cdef siginfo_t info
        if self._returncode is not None:
            return self._returncode
        while True:
            if reap:
                r = waitpid(self._pid, &status, WNOHANG)
                if r == self._pid:
                    self._returncode = (
                        WEXITSTATUS(status) if WIFEXITED(status) else -WTERMSIG(status)
                    )
                    return self._returncode
                if r == 0:
                    return None
            else:
                info.si_pid = 0
                if waitid(P_PID, <id_t>self._pid, &info, WEXITED | WNOWAIT | WNOHANG) == 0:
                    if info.si_pid == 0:
                        return None
                    return info.si_status if info.si_code == CLD_EXITED else -info.si_status
            err = errno
            if err == ECHILD:
                self._returncode = 0
                return 0
            if err != EINTR:
                raise _os_error(err, f"waitpid for pid {self._pid}")

    def poll(self):
        """Reap the child if it has exited (``WNOHANG``) and return ``returncode``."""
        return self._check(True)

    def wait(self, timeout=None, *, bint reap=True):
        """Wait up to ``timeout`` seconds for the child to exit; ``None`` on timeout.

        With ``reap=False`` the exited child is left a zombie and the would-be
        return code is returned while ``returncode`` stays ``None``.
        """
        cdef double dl = 0.0, remaining = -1.0, delay = 50e-6
        cdef bint has_dl = False, use_pidfd
        cdef pollfd pfd
        cdef timespec ts
        cdef int r, err
        rc = self._check(reap)
        if rc is not None:
            return rc
        if timeout is not None:
            has_dl = _deadline(timeout, &dl)
            dl = _now() + max(0.0, dl)
        use_pidfd = self._pidfd >= 0
        if use_pidfd and SPIN_MAX > 0.0 and pc_can_spin():
            r = _spin_poll_for(self._pidfd, SPIN_EXIT, has_dl, dl)
            if r > 0:
                rc = self._check(reap)
                if rc is not None:
                    return rc
        while True:
            if has_dl:
                remaining = dl - _now()
                if remaining <= 0.0:
                    return self._check(reap)
            if use_pidfd:
                # A pidfd turns readable when the child exits: no latency, no spinning.
                pfd.fd = self._pidfd
                pfd.events = POLLIN
                with nogil:
                    r = pc_poll_for(&pfd, 1, remaining if has_dl else -1.0)
                    err = errno
                if r > 0:
                    rc = self._check(reap)
                    if rc is not None:
                        return rc
                    use_pidfd = False  # closed under us, or poll/waitid disagree: back off
                elif r < 0:
                    if err != EINTR:
                        use_pidfd = False
                    PyErr_CheckSignals()
                continue
            if has_dl and remaining < delay:
                delay = remaining
            ts.tv_sec = <time_t>delay
            ts.tv_nsec = <long>((delay - <double>ts.tv_sec) * 1e9)
            with nogil:
                r = nanosleep(&ts, NULL)
            if r < 0:
                PyErr_CheckSignals()
            delay = min(delay * 2.0, 1e-3)
            rc = self._check(reap)
            if rc is not None:
                return rc

    def send_signal(self, int sig):
        """Signal the leader only, through its pidfd where there is one. No-op once reaped."""
        cdef int err
        if self._returncode is not None:
            return
        if self._pidfd >= 0:
            if pc_pidfd_send_signal(self._pidfd, sig) == 0:
                return
            err = errno
            if err != ENOSYS:  # a seccomp policy may allow pidfd_open only
                if err != ESRCH:
                    raise _os_error(err, f"pidfd_send_signal({sig}) to pid {self._pid}")
                return
        # Safe: an unreaped child keeps its pid, even as a zombie.
        if kill(self._pid, sig) < 0 and errno != ESRCH:
            raise _os_error(errno, f"kill({sig}) to pid {self._pid}")

    def signal_group(self, int sig):
        """Signal the whole process group. No-op once the leader is reaped; ``ESRCH`` is ignored."""
        self._signal_group(sig)

    cdef int _signal_group(self, int sig) except -1:
        if self._returncode is not None:
            return 0  # the group id could name someone else's group now
        if killpg(self._pid, sig) < 0 and errno != ESRCH:
            raise _os_error(errno, f"killpg({sig}) to process group {self._pid}")
        return 0

    def terminate(self):
        """``signal_group(SIGTERM)``."""
        self.signal_group(SIGTERM)

    def kill(self):
        """``signal_group(SIGKILL)``."""
        self.signal_group(SIGKILL)

    def close_stdin(self):
        """Close the parent's end of the child's stdin. Idempotent."""
        cdef int fd = self._stdin
        self._stdin = -1
        if fd >= 0:
            close(fd)

    def close(self):
        """Close every fd the parent holds for this child (pipes and pidfd). Does not reap."""
        self._close_all()

    def finish(self):
        """The end of every stop, in one call: ``kill()`` (SIGKILL to whatever is
        left of the group), ``wait()`` (blocking: the leader has exited or is
        dying) and ``close()``. Returns ``returncode``."""
        self._signal_group(SIGKILL)
        rc = self.wait(None)
        self._close_all()
        return rc

# _core.pyx includes this (one extension, one namespace). FrameReader: frames
# split out of a pipe, and the client's request and reply in one call.

cdef enum:
    CHUNK = 64 * 1024          # one read
    MIN_ALLOC = 4096


# The adaptive spin of FrameReader (see _read_frame): spin up to SPIN_MAX
# seconds for a reply that is not there yet; after SPIN_FAILS spins in a row
# ran out, block at once for the next SPIN_SKIP waits, then try again.
cdef double SPIN_MAX = 50e-6
cdef int SPIN_FAILS = 3
cdef int SPIN_SKIP = 64
# How long a reply may keep a reader waiting before it watches its exit fd
# too; why, and why not from the start: _core_constants.py.
cdef double EXIT_WATCH = _EXIT_WATCH


cdef class FrameReader:
    """Splits a byte stream into newline-delimited frames."""

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
        """Return the next frame, reading from ``fd`` as needed."""
        self._idle()
        return self._read_frame(deadline)

    def exchange(self, int fd, data, deadline=None):
        """One request and its reply: write_all, then read_frame, in one call."""
        # fd's O_NONBLOCK flag is looked up when the reader first writes to that fd
        # number (_write_keeps_gil): a non-blocking fd is then written with the GIL
        # held, as it is read, because such a write never waits (EAGAIN polls with
        # the GIL released) and dropping the GIL would cost more than the write.
        self._idle()
        return self._exchange(fd, data, deadline)

    def exchange_if_idle(self, int fd, data, deadline=None, int pidfd=-1):
        """idle_state() first; exchange() only if it is 0, else None."""
        self._idle()
        if self._idle_state(pidfd) != 0:
            return None
        return self._exchange(fd, data, deadline)

    def request(self, Child child, data, deadline=None):
        """exchange_if_idle() on ``child``'s stdin and pidfd."""
        # The fds are read from the Child in C on every call, so the client never
        # sends on a stale copy of one (a restart replaces them).
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
        """Spin, without sleeping, until ``fd`` turns readable: whether it did."""
        # read_frame's spin for a caller that reads elsewhere (the asyncio client,
        # before its loop would sleep). It books into the same state (_may_spin,
        # _spun), so a reader used both ways still backs off after SPIN_FAILS.
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
        """What came while no request was in flight (0, 1 or 2), with one poll that never waits."""
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
        # of waking an idle one, a wake-up that a VM makes slow and that would
        # come twice per round trip (bench/test_bench_roundtrip.py's warm_get,
        # spin against nospin, guards it). After SPIN_FAILS spins in a row ran
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
                    # back the GIL would cost more than the read (bench/
                    # test_bench_roundtrip.py's warm_get guards this line).
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
        """Append bytes read elsewhere."""
        # No size check here: the limit is on a line, and the complete frames
        # before an oversized one must still come out of next_frame first.
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
        """Pop the next complete frame from the buffer without I/O, or ``None``."""
        self._idle()
        return self._pop()

    def clear(self):
        """Drop everything buffered."""
        self._idle()
        self._drop()

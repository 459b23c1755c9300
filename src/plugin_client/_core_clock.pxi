# _core.pyx includes this (one extension, one namespace). The clock, deadlines,
# waits and errors that every other unit uses.

cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    # The same arithmetic as time.monotonic(), so both give the very same float.
    return <double>(<long long>ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9


def monotonic():
    """``CLOCK_MONOTONIC`` now, in seconds."""
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

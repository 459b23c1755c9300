# _core.pyx includes this (one extension, one namespace). write_all.

def write_all(int fd, data, deadline=None):
    """Write all of ``data`` to ``fd``."""
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

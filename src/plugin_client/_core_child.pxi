# _core.pyx includes this (one extension, one namespace). Child: the handle of
# a spawned process.

# Child.wait spins this long on the pidfd before it sleeps: its waits are for
# an exit that is already under way (stdin closed, a signal sent), which often
# comes sooner than a sleeping waiter could be woken for it. Guarded by
# bench/test_bench_lifecycle.py's shutdown and sigterm cases.
cdef double SPIN_EXIT = 100e-6


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
        """``FrameReader(stdout_fd, max_frame_bytes, pidfd)``."""
        # For a child from spawn() the fds' flags are known (stdin and stdout are
        # non-blocking): the reader is made without an fcntl per fd.
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
        """Wait up to ``timeout`` seconds for the child to exit; ``None`` on timeout."""
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
        """kill(), a blocking wait() and close(), in one call; returns ``returncode``."""
        self._signal_group(SIGKILL)
        rc = self.wait(None)
        self._close_all()
        return rc

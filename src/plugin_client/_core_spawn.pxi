# _core.pyx includes this (one extension, one namespace). spawn and
# spawn_method: posix_spawn, or the vfork fallback of _core_c.h.

# The plugin's stdout pipe is grown to this (F_SETPIPE_SZ); why this size:
# _core_constants.py.
cdef int STDOUT_PIPE_BYTES = _STDOUT_PIPE_BYTES

pc_resolve()
# close_range(~0U, ~0U) closes nothing; it only tells whether the call exists.
cdef bint _have_close_range = pc_close_range(<unsigned int>-1, <unsigned int>-1) == 0
cdef bint _forced_fallback = False  # set by the test hook _force_spawn_fallback only


cdef bint _use_fallback(bint with_cwd) noexcept:
    return _forced_fallback or not pc_have_closefrom() or (with_cwd and not pc_have_addchdir())


def spawn_method():
    """How spawn() closes inherited fds on this machine."""
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
# and making them takes glibc several system calls (a getrlimit per fd it
# checks), on the path of every cold start (bench/test_bench_lifecycle.py's
# cold_start and cold_start_cpu guard it).
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
    """Start ``argv[0]`` (a path; no ``PATH`` search) and return its Child."""
    # exec_fd always takes the vfork path: posix_spawn's closefrom action would
    # close that descriptor before the exec, and execveat needs it open.
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

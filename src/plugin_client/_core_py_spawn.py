"""The twin's :func:`spawn` and :func:`spawn_method`: ``os.posix_spawn`` with
``dup2``/close file actions, the working directory set in a helper thread that has
unshared its filesystem context, and the pipes kept above fd 2 (the compiled
core's ``_core_spawn.pxi``). The module docstring of :mod:`plugin_client._core_py`
says what this does not do.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import signal
import threading
from collections.abc import Sequence
from typing import Dict, List, Optional, Tuple

from ._core_constants import STDOUT_PIPE_BYTES as _STDOUT_PIPE_BYTES
from ._core_errors import SpawnFailed
from ._core_py_child import Child
from ._core_py_clock import Env, StrOrBytes, close_quietly

_SIGDEF = frozenset(
    s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)
)
_CLONE_FS = 0x00000200


def _fd_dir() -> Optional[str]:
    for d in ("/proc/self/fd", "/dev/fd"):
        try:
            os.listdir(d)
        except OSError:
            continue
        return d
    return None


_FD_DIR = _fd_dir()
# Python 3.13+, where the C library has posix_spawn_file_actions_addclosefrom_np.
_CLOSEFROM: Optional[int] = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)


def spawn_method() -> str:
    """How spawn() closes inherited fds on this machine."""
    if _CLOSEFROM is not None:
        return "os.posix_spawn+closefrom"
    if _FD_DIR is not None:
        return f"os.posix_spawn+close_inheritable({_FD_DIR})"
    return "os.posix_spawn+close_inheritable(scan to RLIMIT_NOFILE)"


def _inheritable_fds() -> List[int]:
    """Open fds above 2 that would survive ``exec``. Racy by nature: see the docstring of
    ``_core_py``."""
    if _FD_DIR is not None:
        candidates: Sequence[int] = [int(n) for n in os.listdir(_FD_DIR) if n.isdigit()]
    else:  # pragma: no cover - Linux always has /proc/self/fd or /dev/fd
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft > 1 << 20:
            soft = 1 << 20
        candidates = range(3, soft)
    out = []
    for fd in candidates:
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                out.append(fd)
        except OSError:  # closed since (or the listing's own directory fd)
            pass
    return out


_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Python < 3.10 lacks the name


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _STDOUT_PIPE_BYTES)
    except OSError:  # over the user's pipe quota, or not Linux: the default size
        pass


def _pipe() -> Tuple[int, int]:
    """A close-on-exec pipe whose fds are both above 2.

    If the host closed its stdin/stdout/stderr, ``pipe`` hands out 0, 1 or 2;
    a ``dup2`` onto the same number would then be a no-op that leaves
    close-on-exec set, and a later ``dup2`` could overwrite a pipe end.
    """
    ends = list(os.pipe())
    try:
        for i in (0, 1):
            if ends[i] <= 2:
                fd, ends[i] = ends[i], -1
                ends[i] = _move_above_2(fd)
    except BaseException:
        for fd in ends:
            close_quietly(fd)
        raise
    return ends[0], ends[1]


def _move_above_2(fd: int) -> int:
    """A close-on-exec duplicate of ``fd`` numbered 3 or more; ``fd`` is closed
    whether or not that works."""
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _unshare_fs() -> None:
    """Give the calling thread its own cwd (and umask/root), so ``chdir`` in it
    changes nothing for the rest of the process."""
    unshare = getattr(os, "unshare", None)
    if unshare is not None:  # Python 3.12+
        unshare(getattr(os, "CLONE_FS", _CLONE_FS))
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "unshare", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "unshare is not available")
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    if fn(_CLONE_FS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _posix_spawn_in(
    cwd: StrOrBytes,
    path: StrOrBytes,
    argv: List[StrOrBytes],
    env: Env,
    file_actions: List[Tuple[int, ...]],
) -> int:
    """``os.posix_spawn`` from a helper thread that has its own working directory.

    ``os.posix_spawn`` has no chdir action, and ``os.chdir`` in the host would
    change every thread's relative paths. The kernel copies the spawning
    thread's filesystem context into the child, so a thread that has
    unshared it and moved into ``cwd`` spawns the child there.
    """
    result: List[int] = []
    error: List[BaseException] = []

    def run() -> None:
        try:
            try:
                _unshare_fs()
            except OSError as exc:
                raise NotImplementedError(
                    "spawn(cwd=...) in the pure-Python core needs unshare(CLONE_FS),"
                    f" which failed here ({exc}); use the compiled core or cwd=None"
                ) from exc
            try:
                os.chdir(cwd)
            except OSError as exc:
                raise SpawnFailed(exc.errno or errno.ENOENT, os.fsdecode(cwd)) from None
            result.append(_posix_spawn(path, argv, env, file_actions))
        except BaseException as exc:  # re-raised in the calling thread
            error.append(exc)

    t = threading.Thread(target=run, name="plugin_client-spawn", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def _exec_fd_arg(exec_fd: int) -> int:
    """``exec_fd`` checked: an open, close-on-exec descriptor (else it would reach
    the plugin)."""
    if isinstance(exec_fd, bool) or not isinstance(exec_fd, int):
        raise TypeError(f"exec_fd must be an int, not {exec_fd!r}")
    try:
        flags = fcntl.fcntl(exec_fd, fcntl.F_GETFD)
    except OSError as exc:
        raise OSError(exc.errno, f"{os.strerror(exc.errno or 0)} (fcntl(F_GETFD) on exec_fd {exec_fd})") from None
    if not flags & fcntl.FD_CLOEXEC:
        raise ValueError(f"exec_fd {exec_fd} must be close-on-exec, or the plugin would inherit it")
    return int(exec_fd)


def _posix_spawn(
    path: StrOrBytes,
    argv: List[StrOrBytes],
    env: Env,
    file_actions: List[Tuple[int, ...]],
) -> int:
    # Keys as bytes: os.posix_spawn takes str and bytes alike (both through
    # the filesystem encoding); this only gives it one key type.
    envb: Dict[bytes, StrOrBytes] = {os.fsencode(k): v for k, v in env.items()}
    return os.posix_spawn(
        path,
        argv,
        envb,
        file_actions=file_actions,
        setpgroup=0,
        setsigdef=_SIGDEF,
        setsigmask=(),
    )


def spawn(
    argv: Sequence[StrOrBytes],
    env: Env,
    *,
    cwd: Optional[StrOrBytes] = None,
    exec_fd: Optional[int] = None,
) -> "Child":
    """Start ``argv[0]`` (a path; no ``PATH`` search) and return its Child."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a sequence of arguments, not one string")
    args = list(argv)
    if not args:
        raise ValueError("argv must not be empty")
    path = args[0]
    exec_path: StrOrBytes = path
    fds: List[int] = []
    moved_exec = -1
    if exec_fd is not None:
        exec_fd = _exec_fd_arg(exec_fd)
    try:
        if exec_fd is not None:
            if exec_fd <= 2:  # off the numbers the child's dup2s write over
                exec_fd = moved_exec = fcntl.fcntl(exec_fd, fcntl.F_DUPFD_CLOEXEC, 3)
            exec_path = f"/proc/self/fd/{exec_fd}"
        for _ in range(3):
            fds.extend(_pipe())
        in_r, in_w, out_r, out_w, err_r, err_w = fds
        # Before the spawn, so nothing after it can fail and orphan the child.
        # O_NONBLOCK is per open file description: the child's ends keep
        # blocking I/O.
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        _grow_pipe(out_r)
        actions: List[Tuple[int, ...]] = [
            (os.POSIX_SPAWN_DUP2, in_r, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
        ]
        if _CLOSEFROM is not None and exec_fd is not None:
            # Every fd but exec_fd, which must stay open until the exec closes it.
            actions.extend((os.POSIX_SPAWN_CLOSE, fd) for fd in range(3, exec_fd))
            actions.append((_CLOSEFROM, exec_fd + 1))
        elif _CLOSEFROM is not None:
            # After the dup2s: it closes our pipe ends' originals in the child too.
            actions.append((_CLOSEFROM, 3))
        else:
            actions.extend((os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds())
        try:
            if cwd is None:
                pid = _posix_spawn(exec_path, args, env, actions)
            else:
                pid = _posix_spawn_in(cwd, exec_path, args, env, actions)
        except SpawnFailed:
            raise
        except OSError as exc:
            raise SpawnFailed(exc.errno or errno.EINVAL, os.fsdecode(path)) from None
        for fd in (in_r, out_w, err_w):
            fds.remove(fd)
            close_quietly(fd)
    except BaseException:
        for fd in fds:
            close_quietly(fd)
        raise
    finally:
        close_quietly(moved_exec)
    pidfd = -1
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            # Safe from pid reuse: the child is ours and not reaped yet.
            pidfd = pidfd_open(pid)
        except OSError:  # old kernel (ENOSYS), a seccomp policy, EMFILE
            pidfd = -1
        if 0 <= pidfd <= 2:  # kept off the host's stdio numbers, as the pipes are
            try:
                pidfd = _move_above_2(pidfd)
            except OSError:
                pidfd = -1
    return Child(pid, pidfd, in_w, out_r, err_r)

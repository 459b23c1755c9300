"""The compiled core of plugin-client: frames, pipes, clocks and child processes.

It implements ``_core.pyi`` exactly, as its pure-Python twin ``_core_py`` does;
the API is documented there only, and the docstrings here are one line (with
``embedsignature``, ``help()`` still shows each signature):

* :class:`FrameReader` splits newline-delimited frames out of a ``malloc``'d
  buffer with ``memchr``. Reading it never holds more than ``max_frame_bytes``
  plus one 64 KiB read; ``read`` comes first and ``poll`` only on ``EAGAIN``,
  after a bounded, adaptive spin (see ``_read_frame`` in ``_core_frames.pxi``).
  ``exchange`` is a write and its reply in one call, ``idle_state`` the
  one-``poll`` check for output or an exit while no request is in flight.
* :func:`write_all` writes with the GIL released and turns EPIPE into
  :class:`PipeClosed`, without SIGPIPE even where the host restored its default.
* :func:`spawn` is ``posix_spawn`` with a ``closefrom`` file action, looked up at
  run time because the wheel targets glibc 2.28 and the action is glibc 2.34.
  Without it a ``vfork`` fallback written in C (``_core_c.h``) does the same
  job. Its attributes are made once, and the last spawn's file actions are
  kept for the next one whose pipes get the same fd numbers (see ``_kept_fa``
  in ``_core_spawn.pxi``). A
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

Test hooks (``_core_testing.pxi``; for tests and benchmarks only, never called
by the package, absent from the twin, ``__all__`` and the stub):

* ``_spin_limit(limit=None)`` reads or sets the longest adaptive spin
  (``0`` turns spinning off, ``Child.wait``'s too);
* ``_force_spawn_fallback(flag)`` makes :func:`spawn` use the ``vfork``
  fallback even where ``closefrom_np`` exists.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.number cimport PyNumber_Index

import os

# One place for the values both cores must agree on (see _core_constants.py).
from ._core_constants import DEFAULT_MAX_FRAME_BYTES
from ._core_constants import EXIT_WATCH as _EXIT_WATCH
from ._core_constants import STDOUT_PIPE_BYTES as _STDOUT_PIPE_BYTES
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
    "split_result",
    "write_all",
)

IMPLEMENTATION = "cython"

cdef Py_ssize_t SSIZE_MAX_ = <Py_ssize_t>(<size_t>-1 >> 1)

# The units (DEVELOPERS.md maps them), in an order where each uses only
# what comes before it or is a cdef class or function: Cython resolves those
# across the whole module.
include "_core_clock.pxi"
include "_core_frames.pxi"
include "_core_result.pxi"
include "_core_write.pxi"
include "_core_window.pxi"
include "_core_spawn.pxi"
include "_core_child.pxi"
include "_core_testing.pxi"

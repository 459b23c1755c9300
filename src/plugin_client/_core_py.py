"""The pure-Python twin of the compiled core ``_core``: same names, same signatures.

It is the core on interpreters other than CPython, in pure-Python builds and
under ``PLUGIN_CLIENT_NO_EXTENSIONS=1``, and the type source for the selector
(:mod:`plugin_client._impl`) under ``TYPE_CHECKING``. The contract is
``_core.pyi``; this module follows it with the standard library only:

* :class:`FrameReader` splits newline-delimited frames out of a ``bytearray``
  with ``bytearray.find`` and a read offset (amortized O(n): the consumed head
  is dropped only when it is at least half the buffer). ``read_frame`` tries
  ``os.read`` first and waits with :func:`select.poll` on ``EAGAIN``.
* :func:`write_all` loops over ``os.write``, waiting with ``poll`` for
  ``POLLOUT``. If SIGPIPE is not ignored (Python ignores it at start-up, but a
  host may restore the default), it is blocked around each write and an EPIPE's
  SIGPIPE is consumed with ``sigtimedwait``, so it is never delivered.
* :func:`spawn` is :func:`os.posix_spawn` with ``dup2`` file actions for the
  three pipes, ``setpgroup=0``, every signal at its default disposition and an
  empty signal mask. A working directory is set in a short-lived helper thread
  that first unshares its filesystem context (``unshare(CLONE_FS)``), so the
  host's own working directory never changes, not even for an instant.
  A descriptor (``exec_fd``) is run as the path ``/proc/self/fd/N``, which the
  kernel resolves before the exec closes that close-on-exec descriptor; the
  file actions leave it open until then.
* :class:`Child` waits on a pidfd with ``poll`` where the kernel has pidfds,
  else with ``waitpid(WNOHANG)`` and a backoff from 50 µs to 1 ms.

What it deliberately does not do, and known limitations:

* It releases the GIL only where CPython's own ``os``/``select`` calls do, so
  it is slower than the compiled core, never different in behaviour.
* ``os.posix_spawn`` has a ``closefrom`` action only from Python 3.13 (and
  glibc 2.34). Without it :func:`spawn` lists ``/proc/self/fd`` (or scans up
  to ``RLIMIT_NOFILE``) and adds a ``close`` action for every inheritable fd
  above 2. An inheritable fd that another thread creates between that listing
  and the spawn then reaches the child: a race the compiled core
  (``closefrom``/``close_range`` in the child) does not have. fds Python
  creates are close-on-exec, so only fds made inheritable on purpose
  (``os.set_inheritable``, ``pass_fds`` helpers) are at risk.
* The C library reserves a few real-time signals for itself (glibc 32 and 33,
  musl 32 to 34), and its ``posix_spawn`` sets them to ``SIG_IGN`` in the
  child unless they are in the "set to default" set, which
  ``os.posix_spawn`` builds with ``sigaddset``, which refuses them. So in the
  twin those stay ignored in the child (a child on the same libc reinstalls
  its own handlers for them); every other signal is at its default. The
  compiled core resets them too.
* ``cwd`` needs ``unshare(CLONE_FS)`` (:func:`os.unshare` on Python 3.12+, else
  through :mod:`ctypes`). Where that is unavailable (not Linux, or a seccomp
  policy that forbids it) ``spawn(..., cwd=...)`` raises
  :class:`NotImplementedError` rather than ``chdir`` the whole process.
* A relative ``argv[0]`` is resolved against ``cwd`` when one is given, as
  with ``posix_spawn_file_actions_addchdir_np``.
* If something else reaps the child (``SIGCHLD`` set to ``SIG_IGN``, or a
  stray ``waitpid(-1)``), its status is lost: ``waitpid`` fails with
  ``ECHILD`` and ``returncode`` becomes ``0``, as :mod:`subprocess` does.
* :meth:`Child.__del__` closes the parent's fds and nothing else: it never
  signals or reaps, so a dropped, unreaped child stays a zombie until the
  host reaps it.

The units live in private modules, as the compiled core's live in ``.pxi``
files: ``_core_py_clock`` (deadlines and ``poll`` waits), ``_core_py_frames``
(:class:`FrameReader`, :func:`split_result`, :func:`write_all`),
``_core_py_window`` (:class:`RestartWindow`), ``_core_py_spawn``
(:func:`spawn`, :func:`spawn_method`) and ``_core_py_child`` (:class:`Child`).
This module is the one the selector imports: it re-exports their API.
"""

from __future__ import annotations

# One place for the values both cores must agree on (see _core_constants.py).
from ._core_constants import DEFAULT_MAX_FRAME_BYTES
# The core's exceptions are importable from it, as from the compiled core.
from ._core_errors import (  # noqa: F401
    DeadlineExceeded,
    FrameTooLargeError,
    PipeClosed,
    ProcessExited,
    SpawnFailed,
    StreamEOF,
)
from ._core_py_child import Child
from ._core_py_clock import monotonic
from ._core_py_frames import FrameReader, split_result, write_all
from ._core_py_spawn import spawn, spawn_method
from ._core_py_window import RestartWindow

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

IMPLEMENTATION = "python"

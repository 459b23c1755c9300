"""One ``os.write`` with SIGPIPE blocked, for a host that restored SIGPIPE's default.

Python ignores SIGPIPE, and then a write to a dead plugin's pipe is a
``BrokenPipeError``. A host that restored the default would instead be killed
by the first dead plugin; both the twin core's ``write_all`` and the asyncio
transport's write call :func:`write_sigpipe_blocked` in that case. The
compiled core does the same in C.

Deliberately not here: deciding when to block (the callers ask the
disposition first, so the common case costs no extra system call).
"""

from __future__ import annotations

import os
import signal
from typing import Any

__all__ = ("write_sigpipe_blocked",)

_SIGPIPE_SET = {signal.SIGPIPE}


def write_sigpipe_blocked(fd: int, data: Any) -> int:
    """One ``os.write`` with SIGPIPE blocked in this thread; a SIGPIPE that the
    write itself raised is consumed, one that was already pending is left alone."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGPIPE_SET)
    try:
        pending_before = signal.SIGPIPE in signal.sigpending()
        try:
            return os.write(fd, data)
        except BrokenPipeError:
            if not pending_before:
                signal.sigtimedwait(_SIGPIPE_SET, 0)
            raise
    finally:
        if signal.SIGPIPE not in old:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

"""The twin's clock, deadlines and ``poll`` waits, and the small checks every other
unit of the twin uses (the compiled core's ``_core_clock.pxi``).

The names are public so the twin's units import them by name; the twin's API is
re-exported by :mod:`plugin_client._core_py` only.
"""

from __future__ import annotations

import math
import os
import select
import time
from collections.abc import Mapping, Sequence
from typing import List, Optional, Tuple, Union

Bytes = Union[bytes, bytearray, memoryview]
StrOrBytes = Union[str, bytes]
# Mapping is invariant in its key type, so ``Mapping[str | bytes, ...]`` alone
# would refuse a plain ``dict[str, str]`` (or ``dict[bytes, bytes]``).
Env = Union[
    Mapping[str, StrOrBytes],
    Mapping[bytes, StrOrBytes],
    Mapping[StrOrBytes, StrOrBytes],
]

# poll() takes an int of milliseconds; a far deadline (even inf) waits in steps.
_MAX_POLL_MS = 2**31 - 1


def monotonic() -> float:
    """``CLOCK_MONOTONIC`` now, in seconds; the same clock as :func:`time.monotonic`."""
    return time.monotonic()


def check_deadline(deadline: Optional[float]) -> Optional[float]:
    """``None`` or the deadline as a float; NaN is refused (it would never pass)."""
    if deadline is None:
        return None
    value = float(deadline)
    if value != value:
        raise ValueError("deadline must be a number of seconds, not NaN")
    return value


def poll_timeout_ms(deadline: Optional[float]) -> Optional[int]:
    """Milliseconds until ``deadline`` for ``poll`` (rounded up, so it never wakes
    early and spins); ``None`` for no deadline; ``0`` once it has passed."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0.0:
        return 0
    if remaining >= _MAX_POLL_MS / 1000.0:
        return _MAX_POLL_MS
    return max(1, math.ceil(remaining * 1000.0))


def wait_fd(fd: int, events: int, deadline: Optional[float]) -> bool:
    """Wait until ``fd`` is ready for ``events`` (or has hung up); ``False`` if the
    deadline passed first. ``poll`` itself retries on EINTR (PEP 475)."""
    return bool(poll_until(((fd, events),), deadline))


def poll_until(fds: Sequence[Tuple[int, int]], deadline: Optional[float]) -> List[Tuple[int, int]]:
    """poll() ``(fd, events)`` pairs until one is ready: the ready ones, with their
    events; ``[]`` once ``deadline`` has passed."""
    poller = select.poll()
    for fd, events in fds:
        poller.register(fd, events)
    while True:
        timeout = poll_timeout_ms(deadline)
        if timeout == 0:
            return []
        ready = poller.poll(timeout)
        if ready:
            return ready
        # poll's millisecond clock and CLOCK_MONOTONIC disagree by a hair
        # sometimes; loop until the deadline has really passed.


def as_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    return int(value)


def close_quietly(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass

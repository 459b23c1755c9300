"""The twin's :class:`RestartWindow`: crash timestamps in a bounded deque (the
compiled core's ``_core_window.pxi``).
"""

from __future__ import annotations

import collections
import time
from typing import Deque, Optional

from ._core_py_clock import as_int


class RestartWindow:
    """A sliding window of crash timestamps on ``CLOCK_MONOTONIC``."""

    __slots__ = ("_window", "_cap", "_times", "_last")

    def __init__(self, window: float, cap: int) -> None:
        if isinstance(window, bool) or isinstance(cap, bool):
            raise ValueError(f"window and cap must be numbers, not bools: {window!r}, {cap!r}")
        if not isinstance(window, (int, float)):
            raise TypeError(f"window must be a number of seconds, not {window!r}")
        cap = as_int(cap, "cap")
        window = float(window)
        if not window > 0.0:  # also rejects NaN
            raise ValueError(f"window must be > 0 seconds, not {window!r}")
        if cap < 1:
            raise ValueError(f"cap must be >= 1, not {cap!r}")
        self._window = window
        self._cap = cap
        self._times: Deque[float] = collections.deque(maxlen=cap)
        self._last: Optional[float] = None

    @property
    def window(self) -> float:
        return self._window

    @property
    def cap(self) -> int:
        return self._cap

    @property
    def last(self) -> Optional[float]:
        """The newest recorded timestamp, or ``None``; kept across pruning."""
        return self._last

    def __repr__(self) -> str:
        return f"<RestartWindow window={self._window!r} cap={self._cap} held={len(self._times)}>"

    def record(self, now: Optional[float] = None) -> int:
        """Record a crash at ``now``; return the count within the window as of ``now``."""
        t = time.monotonic() if now is None else float(now)
        self._times.append(t)
        self._last = t
        return self.count(t)

    def count(self, now: Optional[float] = None) -> int:
        """Prune timestamps older than ``now - window`` and return how many are left."""
        t = time.monotonic() if now is None else float(now)
        cutoff = t - self._window
        times = self._times
        while times and times[0] < cutoff:
            times.popleft()
        return len(times)

    def exceeded(self, now: Optional[float] = None) -> bool:
        """``count(now) >= cap``."""
        return self.count(now) >= self._cap

    def clear(self) -> None:
        """Forget every timestamp (``last`` too)."""
        self._times.clear()
        self._last = None

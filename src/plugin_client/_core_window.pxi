# _core.pyx includes this (one extension, one namespace). RestartWindow.

cdef class RestartWindow:
    """A sliding window of crash timestamps on ``CLOCK_MONOTONIC``."""

    cdef double *_ts        # ring of _n timestamps, oldest at _head
    cdef Py_ssize_t _cap, _head, _n
    cdef double _window
    cdef object _last

    def __cinit__(self, *args, **kwargs):
        self._ts = NULL

    def __dealloc__(self):
        free(self._ts)

    def __init__(self, window, cap):
        if isinstance(window, bool) or isinstance(cap, bool):
            raise ValueError(f"window and cap must be numbers, not bools: {window!r}, {cap!r}")
        if not isinstance(window, (int, float)):
            raise TypeError(f"window must be a number of seconds, not {window!r}")
        cap = _as_int(cap, "cap")
        window = float(window)
        if not window > 0.0:  # also rejects NaN
            raise ValueError(f"window must be > 0 seconds, not {window!r}")
        if cap < 1:
            raise ValueError(f"cap must be >= 1, not {cap!r}")
        if cap > SSIZE_MAX_ // <Py_ssize_t>sizeof(double):
            raise MemoryError(f"cap {cap!r} is too large")
        free(self._ts)
        self._ts = NULL
        self._cap = cap
        self._ts = <double *>malloc(<size_t>self._cap * sizeof(double))
        if self._ts == NULL:
            raise MemoryError()
        self._window = window
        self._head = self._n = 0
        self._last = None

    @property
    def window(self):
        return self._window

    @property
    def cap(self):
        return self._cap

    @property
    def last(self):
        """The newest recorded timestamp, or ``None``; kept across pruning."""
        return self._last

    def __repr__(self):
        return f"<RestartWindow window={self._window!r} cap={self._cap} held={self._n}>"

    cdef Py_ssize_t _prune(self, double now) noexcept:
        cdef double cutoff = now - self._window
        while self._n > 0 and self._ts[self._head] < cutoff:
            self._head = (self._head + 1) % self._cap
            self._n -= 1
        return self._n

    def record(self, now=None):
        """Record a crash at ``now``; return the count within the window as of ``now``."""
        cdef double t = _now() if now is None else now
        if self._n == self._cap:  # full: the oldest makes way
            self._head = (self._head + 1) % self._cap
            self._n -= 1
        self._ts[(self._head + self._n) % self._cap] = t
        self._n += 1
        self._last = t
        return self._prune(t)

    def count(self, now=None):
        """Prune timestamps older than ``now - window`` and return how many are left."""
        return self._prune(_now() if now is None else now)

    def exceeded(self, now=None):
        """``count(now) >= cap``."""
        return self._prune(_now() if now is None else now) >= self._cap

    def clear(self):
        """Forget every timestamp (``last`` too)."""
        self._head = self._n = 0
        self._last = None

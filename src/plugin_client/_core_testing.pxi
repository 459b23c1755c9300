# _core.pyx includes this (one extension, one namespace). The hooks for tests
# and benchmarks (see the module docstring); nothing in the package calls them.

def _spin_limit(limit=None):
    """Private, for benchmarks and tests: the longest adaptive spin of a
    FrameReader, in seconds; sets it when ``limit`` is given (``0`` also turns
    off :meth:`Child.wait`'s spin). Returns the value in force before the call."""
    global SPIN_MAX
    cdef double old = SPIN_MAX
    if limit is not None:
        if not limit >= 0.0:
            raise ValueError(f"limit must be >= 0, not {limit!r}")
        SPIN_MAX = limit
    return old


def _force_spawn_fallback(bint flag):
    """Private, for tests: make :func:`spawn` use the ``vfork`` fallback even
    where ``posix_spawn_file_actions_addclosefrom_np`` exists."""
    global _forced_fallback
    _forced_fallback = flag

# _core.pyx includes this (one extension, one namespace). TEST HOOKS: the only
# entry points that exist for tests and benchmarks alone. Nothing in the package
# calls them (test_core_selector checks), the twin has neither (callers look
# them up with getattr), and they are not in __all__ or _core.pyi.

# Test and benchmark hook: bench/test_bench_roundtrip.py's "nospin" variant
# measures what the spin buys; tests shorten or lengthen it.
def _spin_limit(limit=None):
    """Test hook: the longest adaptive spin of a FrameReader, in seconds; sets it
    when ``limit`` is given (``0`` also turns off :meth:`Child.wait`'s spin).
    Returns the value in force before the call."""
    global SPIN_MAX
    cdef double old = SPIN_MAX
    if limit is not None:
        if not limit >= 0.0:
            raise ValueError(f"limit must be >= 0, not {limit!r}")
        SPIN_MAX = limit
    return old


# Test hook: the vfork fallback is the only spawn path on glibc < 2.34, which
# the development machines are not; tests run every spawn test over it too.
def _force_spawn_fallback(bint flag):
    """Test hook: make :func:`spawn` use the ``vfork`` fallback even where
    ``posix_spawn_file_actions_addclosefrom_np`` exists."""
    global _forced_fallback
    _forced_fallback = flag

"""The values both cores must agree on, written once: ``_core.pyx`` and ``_core_py.py``
import them from here (the compiled core copies the private ones into C
variables at import, so its hot paths read a C double or int as before).

``DEFAULT_MAX_FRAME_BYTES`` is public, re-exported by both cores; the others are
behaviour ``_core.pyi`` documents, private to the cores.
"""

from __future__ import annotations

__all__ = ("DEFAULT_MAX_FRAME_BYTES", "EXIT_WATCH", "STDOUT_PIPE_BYTES")

DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

# A reader with an exit fd (the process's pidfd) watches it too once a reply
# has kept it waiting this long, in seconds: a process that died while a
# descendant holds its stdout gives no EOF. Not from the start, because a
# second fd in every wait slows each fast round trip (guarded by
# bench/test_bench_roundtrip.py's warm_get).
EXIT_WATCH = 5e-3

# The plugin's stdout pipe is grown to this (F_SETPIPE_SZ), so a large reply
# needs a few wake-ups of the plugin instead of one per 64 KiB (guarded by
# bench/test_bench_list.py's list_ours, a 600 KB reply); the user's pipe quota (fs.pipe-user-pages-soft,
# 64 MiB) still holds 256 plugins.
STDOUT_PIPE_BYTES = 256 * 1024

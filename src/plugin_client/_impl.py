"""Chooses the core implementation: the compiled ``_core`` or its twin ``_core_py``.

``PLUGIN_CLIENT_NO_EXTENSIONS`` is read once, at import time; ``""`` and
``"0"`` mean "off". Under ``TYPE_CHECKING`` or on an interpreter other than
CPython the twin is used. A compiled core that fails to import falls back to
the twin, and says so in ``IMPLEMENTATION`` and a log record: a silent
fallback is a performance bug nobody notices. The façade modules import the
core only from here; this module does nothing else.
"""

from __future__ import annotations

import logging
import os
import platform
from typing import TYPE_CHECKING

__all__ = (
    "NO_EXTENSIONS",
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

_log = logging.getLogger("plugin_client")

NO_EXTENSIONS: bool = os.environ.get("PLUGIN_CLIENT_NO_EXTENSIONS", "") not in ("", "0")
if platform.python_implementation() != "CPython":
    NO_EXTENSIONS = True

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._core_py import (
        DEFAULT_MAX_FRAME_BYTES,
        IMPLEMENTATION,
        Child,
        FrameReader,
        RestartWindow,
        monotonic,
        spawn,
        spawn_method,
        split_result,
        write_all,
    )
else:
    try:
        from ._core import (
            DEFAULT_MAX_FRAME_BYTES,
            IMPLEMENTATION,
            Child,
            FrameReader,
            RestartWindow,
            monotonic,
            spawn,
            spawn_method,
            split_result,
            write_all,
        )
    except ImportError as exc:  # pragma: no cover - exercised by a broken build only
        _log.warning("plugin_client: compiled core unavailable (%s); using the pure-Python twin", exc)
        NO_EXTENSIONS = True
        from ._core_py import (
            DEFAULT_MAX_FRAME_BYTES,
            IMPLEMENTATION,
            Child,
            FrameReader,
            RestartWindow,
            monotonic,
            spawn,
            spawn_method,
            split_result,
            write_all,
        )

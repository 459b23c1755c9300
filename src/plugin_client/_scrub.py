"""Drops the library's frame locals from an exception that leaves it, so no secret rides along.

A request line carries a ``put`` value or ``init``'s config, a reply frame a
``get`` value or key bytes; on their way the library's functions hold them in
plain ``bytes`` and ``str`` locals. The frames of a traceback keep those
locals alive, and Sentry's default, ``traceback`` with ``capture_locals``,
rich and ``pytest --showlocals`` print the ``repr`` of each. So every public
entry point that can raise with such a frame below it calls :func:`scrub` on
the way out, and drops its own locals that hold one (its frame is still
running, so it cannot be cleared).

Deliberately not here: masking values in messages or ``repr``\\ s (the
exceptions never hold a value; ``SecretStr`` masks the models), and any frame
outside this package (a caller's own frames are the caller's).
"""

from __future__ import annotations

import os
from typing import List, Optional

__all__ = ("scrub",)

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def scrub(exc: BaseException) -> None:
    """Clear the locals of every finished frame of this package in the traceback
    of ``exc`` and of each exception chained to it (causes and contexts)."""
    todo: List[Optional[BaseException]] = [exc]
    seen = set()
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        tb = cur.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_filename.startswith(_PACKAGE_DIR):
                try:
                    frame.clear()
                except RuntimeError:  # still running (the caller's own frame, or one above it)
                    pass
            tb = tb.tb_next
        todo.append(cur.__cause__)
        todo.append(cur.__context__)

"""What every ``plugin-client`` command shares: its output, exit codes and argument types.

Only the command-line modules (``cli`` and ``_cli_*``) import this; it is the
one place that writes to stdout and stderr. It holds no command of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict, Optional, TextIO

from .errors import PluginClientError

__all__ = (
    "Out", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "positive_seconds",
    "config_object", "refused", "report",
)


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class Out:
    """stdout and stderr of a command (replaceable in tests)."""

    def __init__(self, stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> None:
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr

    def line(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def json(self, doc: Any) -> None:
        self.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds > 0")
    return value


def config_object(text: str) -> dict:  # type: ignore[type-arg]
    """An argparse type: ``--config``'s JSON object (the ``config`` sent in ``init``)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def refused(out: Out, exc: PluginClientError, *, command: str, as_json: bool, empty: Dict[str, Any]) -> int:
    """A command stopped before it had a report (a refused manifest, an unreadable
    directory): ``empty`` with the error as JSON, or one line on stderr."""
    if as_json:
        out.json({**empty, "error_type": type(exc).__name__, "error": exc.message})
    else:
        out.err(f"plugin-client {command}: {type(exc).__name__}: {exc.message}")
    return EXIT_FAILED


def report(out: Out, doc: Dict[str, Any], *, as_json: bool, text: Callable[[], None], ok: bool) -> int:
    """A command's report: ``doc`` as JSON, or ``text()``; the exit code for ``ok``."""
    if as_json:
        out.json(doc)
    else:
        text()
    return EXIT_OK if ok else EXIT_FAILED

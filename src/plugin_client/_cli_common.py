"""What every ``plugin-client`` command shares: its output, exit codes, argument types,
and the one check of a plugins directory (:func:`plugins_dir_problem`) that ``doctor``
and ``call`` report in the same words.

Only the command-line modules (``cli`` and ``_cli_*``) import this; it is the
one place that writes to stdout and stderr. It holds no command of its own, and
does not choose the plugins directory (``cli.default_plugins_dir`` does).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, TextIO

from .errors import ManifestUnreadable, PluginClientError
from ._plugins_dir import PLUGINS_DIR_ENV

__all__ = (
    "Out", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_PLUGINS_DIR", "EXIT_SOURCES", "positive_seconds",
    "config_object", "refused", "report", "PluginsDirProblem", "plugins_dir_problem",
)


# The one list of these is README.md's "Command-line reference" table; cli.py's docstring
# repeats it.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: The plugins directory is missing, not a directory, or cannot be read: a mistyped
#: path must fail a health check, not pass it as "no plugins".
EXIT_PLUGINS_DIR = 3
#: ``doctor --sources FILE``: the file cannot be read or is not valid.
EXIT_SOURCES = 4


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


@dataclass(frozen=True)
class PluginsDirProblem:
    """Why a plugins directory cannot be used. ``kind`` is ``"missing"``,
    ``"not-a-directory"`` or ``"unreadable"``; ``error`` carries the message."""

    kind: str
    error: ManifestUnreadable


def _problem(kind: str, path: Path, source: str, what: str, code: Optional[int], todo: str) -> PluginsDirProblem:
    message = (
        f"The plugins directory {str(path)!r} (from {source}) {what}; {todo}, or point --plugins-dir "
        f"or ${PLUGINS_DIR_ENV} at the right directory."
    )
    return PluginsDirProblem(kind, ManifestUnreadable(message, path=str(path), errno=code))


def plugins_dir_problem(path: Path, source: str) -> Optional[PluginsDirProblem]:
    """What is wrong with the plugins directory ``path`` (named by ``source``), or
    ``None`` when it is a directory this user can list. ``doctor`` and ``call`` both
    report it through this function, in the same words."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _problem("missing", path, source, "does not exist", errno.ENOENT, "create it")
    except NotADirectoryError:
        return _problem(
            "not-a-directory", path, source, "is not a directory (a component of the path is a file)",
            errno.ENOTDIR, "fix the path",
        )
    except OSError as exc:
        return _problem(
            "unreadable", path, source, f"cannot be read ({exc.strerror})", exc.errno,
            "fix the path or its permissions",
        )
    if not stat.S_ISDIR(st.st_mode):
        return _problem(
            "not-a-directory", path, source, "is not a directory", errno.ENOTDIR,
            "fix the path",
        )
    try:
        with os.scandir(path):
            pass
    except OSError as exc:
        return _problem(
            "unreadable", path, source, f"cannot be listed ({exc.strerror})", exc.errno,
            "make it readable and searchable by this user (chmod u+rx)",
        )
    return None

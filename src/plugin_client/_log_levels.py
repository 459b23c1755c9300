"""The ``logging`` level a plugin's stderr line carries.

A plugin's stderr is its log, written by whatever logging library its author
chose. :func:`line_level` reads the level from the shapes those libraries
write, so the line can be logged on ``plugin_client.plugin.<name>`` at that
level; :class:`LevelReader` adds the lines that continue a record (a
traceback, a stack trace) at the level of the record they belong to.

Recognized (a word in any case; a line is read from its start only):

* a JSON object (only a line starting with ``{`` is parsed) with a ``level``,
  ``severity``, ``lvl``, ``@level`` (hclog), ``levelname`` or ``log.level``
  member: a level word, or pino's and bunyan's numbers (10 trace, 20 debug,
  30 info, 40 warn, 50 error, 60 fatal);
* a leading level word, bare, ``[bracketed]``, or followed by ``:``:
  ``TRACE``, ``DEBUG``, ``INFO``, ``NOTICE``, ``WARN``, ``WARNING``, ``ERROR``,
  ``ERR``, ``CRIT``, ``CRITICAL``, ``FATAL``, ``PANIC``; so Python's default
  ``LEVEL:name:message``, the SDK's ``LEVEL name: message`` and hclog's
  ``[INFO]  name: message``. A timestamp may come first (ISO 8601 with ``T`` or
  a space, ``2006/01/02 15:04:05``, or a time of day alone);
* logfmt's ``level=``, ``lvl=`` or ``severity=`` (logrus, Go's ``slog``, go-kit);
* klog / glog's ``E1207 20:40:00.123456 ...`` (I, W, E, F).

``TRACE`` is level 5 (below ``DEBUG``), a number ``logging`` has no name for
unless the host gives it one (``logging.addLevelName(5, "TRACE")``). Any other
line is at :data:`DEFAULT_LEVEL` (INFO), unless it continues a record.

Deliberately not done: taking the message or the timestamp out of the line
(the line is logged as the plugin wrote it) and guessing a level from words in
the middle of a line.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Dict, Optional

__all__ = ("TRACE", "DEFAULT_LEVEL", "line_level", "LevelReader")

TRACE = 5
DEFAULT_LEVEL = logging.INFO

_DEBUG, _INFO, _WARNING, _ERROR, _CRITICAL = (
    logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL,
)

# The level words a line may start with (and logfmt's values).
_WORDS: Dict[str, int] = {
    "trace": TRACE,
    "debug": _DEBUG,
    "info": _INFO,
    "notice": _INFO,
    "warn": _WARNING,
    "warning": _WARNING,
    "error": _ERROR,
    "err": _ERROR,
    "crit": _CRITICAL,
    "critical": _CRITICAL,
    "fatal": _CRITICAL,
    "panic": _CRITICAL,
}
# A JSON member's values add the names zap, structlog and Google Cloud use.
_JSON_WORDS: Dict[str, int] = dict(
    _WORDS,
    verbose=TRACE,
    information=_INFO,
    dpanic=_CRITICAL,
    alert=_CRITICAL,
    emerg=_CRITICAL,
    emergency=_CRITICAL,
    exception=_ERROR,
)
_JSON_KEYS = ("level", "severity", "lvl", "@level", "levelname", "log.level")
_CHAINED = ("The above exception was the direct cause", "During handling of the above exception")
_KLOG = {"I": _INFO, "W": _WARNING, "E": _ERROR, "F": _CRITICAL}

# A line starting with a letter: its first word (the common case, matched
# without the timestamp's alternatives).
_WORD = re.compile(r"[A-Za-z]{1,9}")
_WORD_END = frozenset(":[]|> \t")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# A line starting with a digit, '[' or '<': a timestamp, then the level word,
# bare, bracketed or followed by ':'.
_LEAD = re.compile(
    r"(?:\[?(?:\d{4}[-/]\d\d[-/]\d\d[T ])?\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\]?\s+)?"
    r"[\[<]?(trace|debug|info|notice|warn|warning|error|err|crit|critical|fatal|panic)"
    r"(?:[\]>]|(?=[:\s\[|]|$))",
    re.IGNORECASE,
)
_LEAD_START = frozenset("0123456789[<")
_KLOG_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d\d")
_LOGFMT = re.compile(r"(?:^|\s)(?:level|lvl|severity)=\"?([A-Za-z]+)", re.IGNORECASE)


def _number_level(n: float) -> int:
    """pino's (and bunyan's) numeric levels."""
    if n <= 10:
        return TRACE
    if n <= 20:
        return _DEBUG
    if n <= 30:
        return _INFO
    if n <= 40:
        return _WARNING
    if n <= 50:
        return _ERROR
    return _CRITICAL


def _json_level(line: str) -> Optional[int]:
    try:
        obj: Any = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if type(obj) is not dict:
        return None
    for key in _JSON_KEYS:
        value = obj.get(key)
        if value is None:
            continue
        if type(value) is str:
            return _JSON_WORDS.get(value.strip().lower())
        if type(value) in (int, float):  # not bool
            return _number_level(value) if value == value else None  # (NaN is no level)
        return None
    return None


def line_level(line: str) -> Optional[int]:
    """The level ``line`` carries, or None if it carries none this module knows."""
    if not line:
        return None
    c = line[0]
    if c in _LETTERS:
        end = _WORD.match(line).end()  # type: ignore[union-attr]  # (a letter matches)
        if end < 9 and (end == len(line) or line[end] in _WORD_END):
            level = _WORDS.get(line[:end].lower())
            if level is not None:
                return level
        if end == 1 and c in _KLOG:
            m = _KLOG_LINE.match(line)
            if m is not None:
                return _KLOG[c]
        if "=" in line and ("level=" in line or "lvl=" in line or "severity=" in line):
            m = _LOGFMT.search(line)
            if m is not None:
                return _WORDS.get(m.group(1).lower())
        return None
    if c == "{":
        return _json_level(line)
    if c in _LEAD_START:
        m = _LEAD.match(line)
        if m is not None:
            return _WORDS[m.group(1).lower()]
    return None


class LevelReader:
    """The levels of one stream's lines, in order: :func:`line_level`, or, for a line
    that carries none, the level of the record it continues.

    A record continues on lines that start with whitespace (a stack trace's
    frames, a message's indented lines) or are blank, and through a Python
    traceback: from ``Traceback (most recent call last):`` to the exception
    line that ends it (chained tracebacks included). A traceback is at its
    record's level if that is WARNING or above, else at ERROR: one that follows
    no record, or an INFO line, is most likely an uncaught exception as the
    interpreter prints it (a record logged below WARNING with its traceback is
    then shown at ERROR, the lesser harm).
    Any other line that carries no level ends the record, and is at
    :data:`DEFAULT_LEVEL`.
    """

    __slots__ = ("_carry", "_in_traceback")

    def __init__(self) -> None:
        self._carry: Optional[int] = None  # the level of the record under way, if any
        self._in_traceback = False

    def reset(self) -> None:
        """Forget the record under way (lines were skipped)."""
        self._carry = None
        self._in_traceback = False

    def level(self, line: str) -> int:
        level = line_level(line)
        if level is not None:
            self._carry = level
            self._in_traceback = False
            return level
        carry = self._carry
        if not line or line[0] in " \t" or line.isspace():
            return carry if carry is not None else DEFAULT_LEVEL
        if line.startswith("Traceback (most recent call last):"):
            if carry is None or carry < _WARNING:
                # No record, or one at INFO or below: most likely an uncaught
                # exception printed right after an unrelated line.
                carry = self._carry = _ERROR
            self._in_traceback = True
            return carry
        if carry is not None:
            if line.startswith(_CHAINED):  # between the tracebacks of a chain
                self._in_traceback = True
                return carry
            if self._in_traceback:
                # The exception line that ends the traceback; an indented line may still follow.
                self._in_traceback = False
                return carry
        self._carry = None
        self._in_traceback = False
        return DEFAULT_LEVEL

"""A plugin's stderr lines are logged on ``plugin_client.plugin.<name>`` at the level
they carry: the shapes of the common logging libraries, the lines that continue a
record (tracebacks) at their record's level, anything else at INFO. The reader on
its own (a table and properties), a stderr tail over a real pipe, and real plugins,
foreign and SDK-built, through both clients.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin_client import errors
from plugin_client._log_levels import DEFAULT_LEVEL, TRACE, LevelReader, line_level
from plugin_client._stderr import StderrTail
from plugin_client.policy import LifetimePolicy

from client_kinds import client_kind, new_client  # noqa: F401  (fixtures)
from conformance import make_sdk_plugin
from plugin_factory import make_plugin, python_script

D, I, W, E, C = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL

SHAPES: List[Tuple[str, Optional[int]]] = [
    # Python's default basicConfig, and the SDK's own format.
    ("ERROR:root:the backend refused", E),
    ("WARNING:jsonfile:file is world-readable", W),
    ("CRITICAL:x:y", C),
    ("DEBUG:x:y", D),
    ("ERROR plugin_client.sdk: The handler failed on 'get' (request 3); answering 'other'", E),
    ("INFO plugin_client.sdk: Answering the unknown method 'x' with unsupported-capability", I),
    # hclog's text format (go-plugin), with and without its timestamp.
    ("2026-12-07T20:40:00.123Z [WARN]  vault: token expires soon", W),
    ("[ERROR] vault: permission denied", E),
    ("[DEBUG] plugin: starting", D),
    ("[TRACE] plugin: frame", TRACE),
    # Python's asctime, Go's log package date, a time of day alone.
    ("2026-12-07 20:40:00,123 ERROR jsonfile: cannot read", E),
    ("2026/12/07 20:40:00 [WARN] x", W),
    ("20:40:00.5 DEBUG x", D),
    ("2026-12-07T20:40:00+01:00 fatal: x", C),
    # A leading word in any case: bare, bracketed, after ':'.
    ("error: cannot open /etc/secret.json", E),
    ("Error reading the config", E),
    ("warn: slow", W),
    ("Warning: deprecated", W),
    ("FATAL cannot continue", C),
    ("TRACE entering get", TRACE),
    ("info", I),
    ("<crit> disk full", C),
    ("WARN[0000] logrus tty format", W),
    ("panic: runtime error: index out of range", C),
    # JSON: zap, structlog, hclog (@level), pino (numbers), Google Cloud (severity).
    ('{"level":"error","ts":1733600000.1,"caller":"x.go:1","msg":"boom"}', E),
    ('{"event": "cache miss", "level": "warning", "timestamp": "2026-12-07T20:40:00Z"}', W),
    ('{"@level":"debug","@message":"hello","@module":"plugin"}', D),
    ('{"level":30,"time":1733600000000,"pid":1,"msg":"up"}', I),
    ('{"level":10,"msg":"t"}', TRACE),
    ('{"level":20,"msg":"d"}', D),
    ('{"level":40,"msg":"w"}', W),
    ('{"level":50,"msg":"e"}', E),
    ('{"level":60,"msg":"f"}', C),
    ('{"severity":"ERROR","message":"x"}', E),
    ('{"severity":"NOTICE","message":"x"}', I),
    ('{"lvl":"WARN","msg":"x"}', W),
    ('{"levelname":"CRITICAL","msg":"x"}', C),
    ('{"level":"dpanic"}', C),
    # logfmt and klog.
    ('time="2026-12-07T20:40:00Z" level=warning msg="slow backend"', W),
    ("time=2026-12-07T20:40:00Z level=ERROR msg=x", E),
    ("ts=1 lvl=debug msg=x", D),
    ("E1207 20:40:00.123456    4242 main.go:12] cannot connect", E),
    ("W1207 20:40:00.123456    4242 main.go:12] slow", W),
    # No level: the default.
    ("plain text from a plugin", None),
    ("errors were found", None),
    ("information: a word that only begins like one", None),
    ("Informational", None),
    ("  indented", None),
    ("", None),
    ("{not json", None),
    ('{"level": true}', None),
    ('{"level": "verbose-ish"}', None),
    ('{"level": {"nested": 1}}', None),
    ("[1, 2, 3]", None),
    ("I am a sentence", None),
    ("12345", None),
    ("a=b c=d", None),
]


@pytest.mark.parametrize("line, level", SHAPES)
def test_the_level_a_line_carries(line: str, level: Optional[int]) -> None:
    assert line_level(line) == level
    assert LevelReader().level(line) == (DEFAULT_LEVEL if level is None else level)


def test_the_default_level_is_info() -> None:
    assert DEFAULT_LEVEL == logging.INFO and TRACE < logging.DEBUG


def _levels(lines: List[str]) -> List[int]:
    reader = LevelReader()
    return [reader.level(line) for line in lines]


def test_a_traceback_is_at_its_records_level() -> None:
    lines = [
        "ERROR plugin_client.sdk: The handler failed",
        "Traceback (most recent call last):",
        '  File "/p/x.py", line 3, in get',
        "    raise RuntimeError('handler bug')",
        "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
        "RuntimeError: handler bug",
        "next, a plain line",
    ]
    assert _levels(lines) == [E, E, E, E, E, E, I]


def test_a_warning_with_a_chained_traceback_stays_a_warning() -> None:
    lines = [
        "WARNING:x:retrying",
        "Traceback (most recent call last):",
        "  File a",
        "KeyError: 'k'",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        "  File b",
        "LookupError: no",
        "INFO:x:recovered",
    ]
    assert _levels(lines) == [W] * 10 + [I]


def test_an_uncaught_traceback_is_an_error_even_after_an_info_line() -> None:
    lines = [
        "INFO:x:starting",
        "Traceback (most recent call last):",
        '  File "/p/plugin", line 3, in <module>',
        "ModuleNotFoundError: No module named 'plugin_client'",
        "plain",
    ]
    assert _levels(lines) == [I, E, E, E, I]
    assert _levels(lines[1:]) == [E, E, E, I]


def test_indented_lines_continue_a_record_and_a_plain_line_ends_it() -> None:
    lines = ["[WARN]  x: a multi-line message", "\tat com.example.Main(Main.java:1)", "    more", "plain", "  indented"]
    assert _levels(lines) == [W, W, W, I, I]


def test_reset_forgets_the_record() -> None:
    reader = LevelReader()
    assert reader.level("ERROR:x:y") == E
    reader.reset()
    assert reader.level("  continued?") == DEFAULT_LEVEL


_WORDS = ["ERROR", "WARN", "WARNING", "INFO", "DEBUG", "TRACE", "FATAL", "CRITICAL"]
_EXPECT = {"ERROR": E, "WARN": W, "WARNING": W, "INFO": I, "DEBUG": D, "TRACE": TRACE, "FATAL": C, "CRITICAL": C}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_line_gets_a_level(line: str) -> None:
    level = line_level(line)
    assert level is None or level in (TRACE, D, I, W, E, C)
    reader = LevelReader()
    assert reader.level(line) in (TRACE, D, I, W, E, C)
    assert reader.level("{" + line) in (TRACE, D, I, W, E, C)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(_WORDS),
    st.sampled_from(["lower", "upper", "title"]),
    st.sampled_from(["{} ", "[{}] ", "{}:", "{}:name:", "[{}]", "{}"]),
    st.text(max_size=80),
)
def test_a_leading_level_word_in_any_case_and_shape(word: str, case: str, shape: str, rest: str) -> None:
    written = getattr(word, case)()
    line = shape.format(written) + (rest if shape.endswith((" ", ":", "]")) else "")
    assert line_level(line) == _EXPECT[word], line


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["level", "severity", "lvl", "@level"]),
    st.one_of(st.sampled_from(_WORDS).map(str.lower), st.integers(-100, 200), st.floats(allow_nan=True)),
    st.dictionaries(st.text(max_size=10), st.one_of(st.none(), st.integers(), st.text(max_size=20)), max_size=4),
)
def test_any_json_record_gets_a_level(key: str, value: Any, extra: Any) -> None:
    record = dict(extra)
    record[key] = value
    line = json.dumps(record)
    level = line_level(line)
    assert level is None or level in (TRACE, D, I, W, E, C)
    if isinstance(value, str) and not any(k in extra for k in ("level", "severity", "lvl", "@level", "levelname")):
        assert level == _EXPECT[value.upper()]


# --- a stderr tail over a real pipe -------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(TRACE)
        self.seen: List[Tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.levelno, record.getMessage()))


@pytest.fixture
def plugin_records() -> Iterator[Records]:
    """Every record of the ``plugin_client.plugin`` loggers, down to TRACE."""
    logger = logging.getLogger("plugin_client.plugin")
    handler = Records()
    saved = logger.level, logger.propagate
    logger.setLevel(TRACE)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def test_a_tail_logs_each_line_at_its_level(plugin_records: Records) -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        tail = StderrTail(r, logging.getLogger("plugin_client.plugin.pipe"), 10)
        # A record split across two drains keeps its level.
        os.write(w, b"ERROR:x:failed\nTraceback (most recent call last):\n  Fi")
        assert tail.drain()
        os.write(w, b'le "x"\nValueError: v\n{"level":"debug","msg":"d"}\nplain')
        os.close(w)
        w = -1
        while tail.drain():  # to the end of the stream
            pass
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert plugin_records.seen == [
        (E, "ERROR:x:failed"),
        (E, "Traceback (most recent call last):"),
        (E, '  File "x"'),
        (E, "ValueError: v"),
        (D, '{"level":"debug","msg":"d"}'),
        (I, "plain"),
    ]


# --- real plugins -----------------------------------------------------------------------

POLICY = LifetimePolicy(request_timeout=5.0, exit_wait=0.5, shutdown_grace=0.2)

LOGGING = python_script(
    """
import json, sys
LINES = %r
for raw in sys.stdin:
    req = json.loads(raw)
    rid, method, params = req["id"], req["method"], req.get("params") or {}
    if method.endswith(".init"):
        res = {"source_name": params["source_name"], "capabilities_bits": 0x1FF, "plugin_version": "1"}
    else:
        sys.stderr.write("\\n".join(LINES) + "\\n")
        sys.stderr.flush()
        res = {"value": "logged"}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": rid, "result": res}) + "\\n")
    sys.stdout.flush()
"""
    % ([line for line, _ in SHAPES if line],)
)


def test_a_plugins_lines_arrive_at_their_levels(
    new_client: Callable[..., Any], tmp_path: Path, plugin_records: Records
) -> None:
    c = new_client(make_plugin(tmp_path / "p", "levels", LOGGING), policy=POLICY)
    assert c.get("x").value.get_secret_value() == "logged"
    c.shutdown()  # the last drain: every line is logged by now
    want = [(DEFAULT_LEVEL if level is None else level, line) for line, level in SHAPES if line]
    # Indented lines continue the record before them.
    for i, (level, line) in enumerate(want):
        if line[0] in " \t":
            want[i] = (want[i - 1][0], line)
    assert plugin_records.seen == want


def test_an_sdk_plugins_error_and_its_traceback_arrive_at_error(
    new_client: Callable[..., Any], tmp_path: Path, plugin_records: Records
) -> None:
    c = new_client(make_sdk_plugin(tmp_path / "p"), policy=POLICY)
    with pytest.raises(errors.PluginError):
        c.get("raise")  # the handler raises: the SDK logs it with log.exception
    c.shutdown()
    seen = plugin_records.seen
    start = next(i for i, (_, text) in enumerate(seen) if "The handler failed" in text)
    end = next(i for i, (_, text) in enumerate(seen) if text.strip() == "RuntimeError: handler bug")
    record = seen[start : end + 1]
    assert record[0][1].startswith("ERROR plugin_client.sdk: The handler failed on 'secret_source.get'")
    assert record[1][1].strip() == "Traceback (most recent call last):" and len(record) > 3
    # The SDK indents a record's further lines, so each is read as a continuation.
    assert all(text.startswith("    ") for _, text in record[1:])
    assert {level for level, _ in record} == {E}


def test_an_sdk_plugins_multi_line_warning_stays_a_warning(tmp_path: Path, plugin_records: Records) -> None:
    from plugin_client.client import PluginClient

    body = (
        "import logging\n"
        "from plugin_client.plugin import SecretSourcePlugin, serve\n"
        "class Logs(SecretSourcePlugin):\n"
        "    def get(self, reference):\n"
        "        logging.getLogger('jsonfile').warning('first line\\nError: the second line')\n"
        "        return reference\n"
        "serve(Logs)\n"
    )
    with PluginClient(make_sdk_plugin(tmp_path / "p", body=body), policy=POLICY) as c:
        assert c.get("x").value.get_secret_value() == "x"
    assert (W, "WARNING jsonfile: first line") in plugin_records.seen
    assert (W, "    Error: the second line") in plugin_records.seen

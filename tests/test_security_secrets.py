"""No secret ever shows: every error path run with known secret values, and
everything the host could print scanned for them.

The secrets: a value the plugin returns (it knows it from an allow-listed
variable), a value the host sends with ``put``, a credential in the ``init``
config, and a host variable that is not allow-listed. Scanned: every log
record of every logger at DEBUG (message, arguments and formatted traceback),
each exception's ``str``, ``repr``, ``args``, attributes and full traceback
(causes included, with every frame's locals as ``capture_locals`` shows them), each result's ``repr``/``str``/dumps, ``repr(client)``,
``health()`` and ``health().to_json()``. The plugin's own stderr is its log and
is shown as written, so no plugin here writes a secret to it.
"""

from __future__ import annotations

import base64
import logging
import os
import traceback
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from plugin_client import errors
from plugin_client.client import PluginClient
from plugin_client.events import PluginEvent, flush_events
from plugin_client.policy import LifetimePolicy
from plugin_client.protocol import GetCall, decode_reply, decode_request

from _reliability import c_plugin, c_plugins, wait_gone  # noqa: F401  (fixture)

RETURNED = "Zq9-returned-secret-7f3a"  # the plugin's answer to get
SENT = "Zq9-put-value-secret-91bc"  # the host's put value
CONFIG = "Zq9-config-credential-c0de"  # in init's config
HOST_ONLY = "Zq9-host-env-secret-5e5e"  # in the host's environment only
SECRETS = (RETURNED, SENT, CONFIG, HOST_ONLY)

POLICY = LifetimePolicy(
    request_timeout=0.5, start_timeout=0.5, shutdown_grace=0.3, exit_wait=0.1, max_frame_bytes=4096, restart_cap=1000
)

# The ways a reply carrying the secret is broken (see c_hostile.c's secret_reply).
BROKEN = [
    "wrongshape", "notstring", "badid", "dup", "huge", "partial-exit", "partial-hang",
    "badutf8", "notjson", "ambiguous", "badversion", "exit-after", "error-data", "good",
]


def variants(secret: str) -> List[str]:
    """The secret and the encodings it could leak in."""
    raw = secret.encode()
    return [secret, secret[4:16], base64.b64encode(raw).decode(), raw.hex(), repr(raw)[2:-1]]


class Capture(logging.Handler):
    """Every record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: List[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))
        self.texts.append(repr(record.__dict__))


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Loggers with a level of their own would otherwise filter DEBUG out.
    touched = []
    for name in list(logging.root.manager.loggerDict):
        lg = logging.getLogger(name)
        if lg.level and lg.level > logging.DEBUG:
            touched.append((lg, lg.level))
            lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for lg, level in touched:
            lg.setLevel(level)


def exception_texts(exc: BaseException) -> List[str]:
    out = [str(exc), repr(exc), repr(exc.args), repr(getattr(exc, "__dict__", {}))]
    out.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    out += library_locals(exc)
    seen = set()
    cur: Any = exc
    while cur is not None and id(cur) not in seen:  # the whole chain, by hand too
        seen.add(id(cur))
        out += [str(cur), repr(cur), repr(getattr(cur, "__dict__", {}))]
        cur = cur.__cause__ or cur.__context__
    return out


def library_locals(exc: BaseException) -> List[str]:
    """What Sentry, rich, ``pytest --showlocals`` and ``traceback`` with
    ``capture_locals`` print of the library's frames: the repr of each local of
    each of its frames in the traceback, for every exception of the chain. (The
    test's own frames hold the secrets on purpose, as arguments.)"""
    out: List[str] = []
    te: Any = traceback.TracebackException(type(exc), exc, exc.__traceback__, capture_locals=True)
    seen = set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        for frame in te.stack:
            if f"{os.sep}plugin_client{os.sep}" in frame.filename:
                out += [f"{frame.filename}:{frame.lineno} {name}={value}" for name, value in (frame.locals or {}).items()]
        te = te.__cause__ or te.__context__
    return out


def result_texts(result: Any) -> List[str]:
    return [repr(result), str(result), result.model_dump_json(), repr(result.model_dump())]


def client_texts(client: PluginClient) -> List[str]:
    h = client.health()
    return [repr(client), repr(h), str(h), h.to_json(), repr(h.model_dump())]


def assert_clean(texts: List[str], where: str) -> None:
    for secret in SECRETS:
        for form in variants(secret):
            for text in texts:
                assert form not in text, f"{where}: secret {secret!r} (as {form!r}) leaked into: {text[:300]!r}"


def attempt(texts: List[str], fn: Any, *args: Any) -> Tuple[str, Any]:
    """Call ``fn``; collect what its result or exception would show."""
    try:
        result = fn(*args)
    except errors.PluginClientError as exc:
        texts += exception_texts(exc)
        return type(exc).__name__, exc
    texts += result_texts(result)
    return "ok", result


@pytest.fixture
def secret_plugin(c_plugins: Dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HOSTILE_SECRET", RETURNED)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", HOST_ONLY)
    return c_plugin(c_plugins, tmp_path / "secret", allowed_env_vars=["HOSTILE_SECRET"])


def event_texts(events: List[PluginEvent]) -> List[str]:
    assert flush_events(5.0)
    return [text for e in events for text in (repr(e), str(e.to_dict()), e.detail)]


def test_every_reply_error_path_keeps_the_secrets(secret_plugin: Any, capture: Capture) -> None:
    texts: List[str] = []
    outcomes: Dict[str, List[str]] = {}
    events: List[PluginEvent] = []
    client = PluginClient(
        secret_plugin, policy=POLICY, config={"token": CONFIG}, on_event=events.append, request_events=True
    )
    try:
        for how in BROKEN:
            for op, fn, args in (("get", client.get, (f"secret:{how}",)), ("put", client.put, (f"secret:{how}", SENT))):
                kind, _ = attempt(texts, fn, *args)
                # A stray line (dup) or an exit (exit-after) shows at the next request.
                after, _ = attempt(texts, client.get, "value:next")
                outcomes.setdefault(how, []).append(f"{op}:{kind}/{after}")
                texts += client_texts(client)
        for ref in ("crash", "hang"):
            attempt(texts, client.put, ref, SENT)
            texts += client_texts(client)
        attempt(texts, client.key_material, "enc")
        # Make sure the log capture sees records: the plugin's stderr (INFO) and an
        # exit while idle (WARNING).
        attempt(texts, client.get, "stderr:300:100")
        attempt(texts, client.get, "secret:exit-after")
        pid = client.health().pid
        assert pid is not None and wait_gone(pid)
        assert client.get("value:plain").value.get_secret_value() == "plain"
        # The plugin really did carry the secrets back: the scan is not vacuous.
        good = client.get("secret:good")
        assert good.value.get_secret_value() == RETURNED
        texts += result_texts(good)
    finally:
        client.shutdown()
    texts += client_texts(client)
    texts += capture.texts
    texts += event_texts(events)
    assert {e.kind.value for e in events} >= {"request", "crashed", "killed", "timed_out"}  # not vacuous
    assert_clean(texts, "reply error paths")
    # Each broken get reply was a typed error, except those whose first line is a
    # good answer (the fault, a stray line or an exit, shows at the next request).
    assert outcomes["good"] == ["get:ok/ok", "put:ok/ok"]
    for how, seen in outcomes.items():
        get_kind = seen[0].split(":")[1].split("/")[0]
        assert (get_kind == "ok") == (how in ("good", "exit-after", "dup")), (how, seen)
    assert any(r.startswith("plugin_client.plugin.hostile INFO") for r in capture.texts)
    assert any(r.startswith("plugin_client WARNING") and "exited while idle" in r for r in capture.texts)


@pytest.mark.parametrize("mode", ["hang", "crash", "refuse", "wrong-source"])
def test_init_failures_keep_the_config_secret(secret_plugin: Any, capture: Capture, mode: str) -> None:
    texts: List[str] = []
    events: List[PluginEvent] = []
    client = PluginClient(
        secret_plugin, policy=POLICY.model_copy(update={"restart_cap": 2}), config={"token": CONFIG, "mode": mode},
        on_event=events.append,
    )
    try:
        for _ in range(3):  # the third attempt is refused as disabled, quoting the last error
            attempt(texts, client.get, "value:x")
            texts += client_texts(client)
        assert client.health().state.value == "disabled"
    finally:
        client.shutdown()
    texts += capture.texts
    texts += event_texts(events)
    assert_clean(texts, f"init {mode}")


def test_host_only_secret_never_reaches_the_plugin(secret_plugin: Any) -> None:
    with PluginClient(secret_plugin, policy=POLICY) as client:
        hexed = client.get("environ").value.get_secret_value()
    environ = [bytes.fromhex(h) for h in hexed.split(",")]
    assert environ == [b"HOSTILE_SECRET=" + RETURNED.encode()]


def test_a_returned_secret_is_not_kept_in_pydantics_string_cache(secret_plugin: Any) -> None:
    """By default pydantic-core keeps the short strings it parses in a cache of
    its own, shared by the whole process: a secret value would stay referenced
    there, in memory, after the host has dropped every result holding it. The
    replies' validators cache keys only. Two reads of one secret give two
    ``str`` objects: the second did not come from the cache, so the first was
    never put in it."""
    with PluginClient(secret_plugin, policy=POLICY) as client:
        first = client.get("secret:good").value.get_secret_value()
        second = client.get("secret:good").value.get_secret_value()
    assert first == second == RETURNED and first is not second
    # A reply not in the compact form goes through the envelope's validator instead.
    line = b'{"id":7,"jsonrpc":"2.0","result":{"value":"%s"}}' % RETURNED.encode()
    a, b = (decode_reply(line, GetCall, 7).value.get_secret_value() for _ in range(2))
    assert a == b == RETURNED and a is not b
    # And a put value, as a Python plugin (the SDK) reads it.
    request = b'{"jsonrpc":"2.0","id":3,"method":"secret_source.put","params":{"reference":"r","value":"%s"}}'
    puts = [decode_request(request % SENT.encode())[1] for _ in range(2)]
    c, d = (put.value.get_secret_value() for put in puts)  # type: ignore[attr-defined]
    assert c == d == SENT and c is not d


def test_unsendable_put_value_is_not_quoted(secret_plugin: Any, capture: Capture) -> None:
    """A value with a lone surrogate cannot be sent; the error says so without it."""
    texts: List[str] = []
    with PluginClient(secret_plugin, policy=POLICY) as client:
        try:
            client.put("k", SENT + "\ud800")
        except ValueError as exc:
            texts += exception_texts(exc)
        else:  # pragma: no cover
            raise AssertionError("a lone surrogate was sent")
        texts += client_texts(client)
    texts += capture.texts
    assert_clean(texts, "unsendable put")


def test_doctor_and_call_output_keep_the_secrets(
    secret_plugin: Any, capture: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's command line: ``doctor`` (table and JSON) and ``call`` on every
    broken reply, with and without --json. Only --reveal may print a secret."""
    cli = pytest.importorskip("plugin_client.cli")
    plugins_dir = str(secret_plugin.manifest_path.parent)
    texts: List[str] = []
    runs = [["doctor", "--plugins-dir", plugins_dir], ["doctor", "--plugins-dir", plugins_dir, "--json"]]
    for how in BROKEN:
        for fmt in ([], ["--json"]):
            runs.append(["call", "hostile", "get", f"secret:{how}", "--plugins-dir", plugins_dir, "--timeout", "0.5", *fmt])
            runs.append(["call", "hostile", "put", f"secret:{how}", SENT, "--plugins-dir", plugins_dir, "--timeout", "0.5", *fmt])
    runs.append(["call", "hostile", "init", "--plugins-dir", plugins_dir, "--config", '{"token": "%s", "mode": "refuse"}' % CONFIG])
    for argv in runs:
        code = cli.main(argv)
        out, err = capsys.readouterr()
        assert code in (0, 1), (argv, code, err)
        texts += [out, err]
    texts += capture.texts
    assert_clean(texts, "command line")
    # The control: --reveal does print it, so the scan above could have seen it.
    assert cli.main(["call", "hostile", "get", "secret:good", "--plugins-dir", plugins_dir, "--reveal"]) == 0
    assert RETURNED in capsys.readouterr().out


def test_traceback_locals_keep_the_secrets_asyncio(secret_plugin: Any) -> None:
    """The asyncio client's paths, scanned the same way (frame locals included)."""
    import asyncio

    from plugin_client.aio import AsyncPluginClient

    texts: List[str] = []

    async def main() -> None:
        async with AsyncPluginClient(secret_plugin, policy=POLICY, config={"token": CONFIG}) as client:
            for how in ("wrongshape", "notstring", "badid", "badutf8", "huge", "partial-exit", "partial-hang"):
                for coro in (client.get(f"secret:{how}"), client.put(f"secret:{how}", SENT)):
                    try:
                        texts.extend(result_texts(await coro))
                    except errors.PluginClientError as exc:
                        texts.extend(exception_texts(exc))
            for ref in ("crash", "hang"):
                try:
                    await client.put(ref, SENT)
                except errors.PluginClientError as exc:
                    texts.extend(exception_texts(exc))

    asyncio.run(main())
    assert any("plugin_client" in t and "=" in t for t in texts)  # library frames were scanned
    assert_clean(texts, "asyncio paths")


def test_decode_reply_keeps_no_line_in_traceback_locals() -> None:
    line = b'{"jsonrpc":"2.0","id":9,"result":{"value":"%s","lease_seconds":"x"}}' % RETURNED.encode()
    for rid in (9, 10):  # the wrong shape; the wrong id
        with pytest.raises(errors.ProtocolError) as info:
            decode_reply(line, GetCall, rid)
        texts = library_locals(info.value)
        assert texts, "no library frame in the traceback: the scan would be vacuous"
        assert_clean(texts, "decode_reply")

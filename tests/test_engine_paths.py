"""Every call type, cold and warm, through both drivers: one request path.

Both clients take the engine's path (``Flow.begin``, the driver's exchange,
``Flow.complete`` or ``Flow.finish_steps``; ``begin_blocking`` or
``request_steps`` with no warm process), so each call must end the same way,
result or error, whichever client makes it and whether or not a process was
running. The plugin logs every method it receives on stderr, so a call the
capability gate refuses can be shown never to have been written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

from plugin_client import errors
from plugin_client.aio import AsyncPluginClient
from plugin_client.client import PluginClient
from plugin_client.policy import LifetimePolicy
from plugin_client.protocol import GetCall

from client_kinds import LoopThread, SyncAdapter
from plugin_factory import ECHO, make_plugin, python_script

POLICY = LifetimePolicy(request_timeout=2.0, start_timeout=5.0, shutdown_grace=0.2, exit_wait=0.2, restart_cap=100)

# The tests' echo plugin, logging each method it reads to stderr.
_READ = "        req = json.loads(raw)\n"
assert _READ in ECHO
RECORDING = ECHO.replace(
    _READ, _READ + "        sys.stderr.write('got ' + req['method'] + '\\n')\n        sys.stderr.flush()\n"
)

# (name, call): every call type, and the ways a reply can fail.
CALLS: List[Tuple[str, Callable[[Any], Any]]] = [
    ("is_available", lambda c: c.is_available()),
    ("get", lambda c: c.get("value:x")),
    ("get-model", lambda c: c.request(GetCall(reference="value:y"))),
    ("get-plugin-error", lambda c: c.get("missing")),
    ("get-garbage", lambda c: c.get("garbage")),
    ("get-crash", lambda c: c.get("crash")),
    ("list", lambda c: c.list()),
    ("validate", lambda c: c.validate("fine")),
    ("put", lambda c: c.put("k", "v")),
    ("delete", lambda c: c.delete("k")),
    ("key_material", lambda c: c.key_material("p")),
]


@pytest.fixture(scope="module")
def runner() -> Any:
    r = LoopThread()
    yield r
    r.close()


@pytest.fixture
def recording(tmp_path: Path) -> Any:
    return make_plugin(tmp_path / "plugins", "rec", python_script(RECORDING))


def _make(kind: str, runner: LoopThread, plugin: Any, caps: int) -> Any:
    config = {"caps": caps}
    if kind == "sync":
        return PluginClient(plugin, policy=POLICY, config=config)
    return SyncAdapter(runner, AsyncPluginClient(plugin, policy=POLICY, config=config))


def _outcome(client: Any, call: Callable[[Any], Any]) -> Tuple[Any, ...]:
    try:
        res = call(client)
    except errors.PluginClientError as exc:
        got: Tuple[Any, ...] = (type(exc).__name__, str(exc))
    else:
        got = ("ok", type(res).__name__, res.model_dump())
    h = client.health()
    return got + (h.crashes_in_window, h.state.value)


def _methods(client: Any, until: str) -> List[str]:
    """The methods the plugin has read, once it has logged ``until``."""
    deadline = time.monotonic() + 5.0
    while True:
        got = [line[4:] for line in client.health().stderr_tail if line.startswith("got ")]
        if until in got or time.monotonic() > deadline:
            return got
        time.sleep(0.005)


@pytest.mark.parametrize("caps", [0x1FF, 0x1], ids=["all-caps", "read-only"])
def test_every_call_ends_the_same_cold_or_warm_sync_or_async(
    recording: Any, runner: LoopThread, caps: int
) -> None:
    for name, call in CALLS:
        seen: Dict[str, Tuple[Any, ...]] = {}
        for kind in ("sync", "async"):
            for temp in ("cold", "warm"):
                client = _make(kind, runner, recording, caps)
                try:
                    if temp == "warm":
                        client.start()
                    seen[f"{kind}-{temp}"] = _outcome(client, call)
                finally:
                    client.shutdown()
        first = next(iter(seen.values()))
        assert all(o == first for o in seen.values()), (name, seen)


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("temp", ["cold", "warm"])
def test_the_gate_refuses_without_writing_or_counting_a_crash(
    recording: Any, runner: LoopThread, kind: str, temp: str
) -> None:
    """A READ-only plugin: ``list()`` is refused by the host, before a word of it
    reaches the plugin, whether the plugin was running (warm) or the call is
    the one that starts it (cold: the gate can only refuse once ``init`` has
    told the capabilities)."""
    client = _make(kind, runner, recording, 0x1)
    try:
        if temp == "warm":
            client.start()
        with pytest.raises(errors.UnsupportedCapability) as info:
            client.list()
        assert not isinstance(info.value, errors.PluginUnsupportedCapability)  # the host's refusal
        h = client.health()
        assert h.crashes_in_window == 0 and h.state.value == "running" and h.spawn_count == 1
        client.is_available()  # then the plugin reads this, and nothing in between
        assert _methods(client, "secret_source.is_available") == [
            "secret_source.init",
            "secret_source.is_available",
        ]
        assert client.health().spawn_count == 1
    finally:
        client.shutdown()

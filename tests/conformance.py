"""Shared plugin conformance checks, and helpers to run SDK-based and example plugins.

``check_conformance`` is what every plugin that plays the echo behaviour must
pass through a :class:`PluginClient`: the hand-written ``echo_plugin.py`` and
the SDK-built ``sdk_plugin.py`` both run it (``test_sdk.py``).
``check_raw_conformance`` drives a plugin over its pipes directly, then runs the
library's :func:`~plugin_client.conformance.run_conformance` for the wire rules
every plugin must follow (what a client never sends or never shows).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import pytest

from plugin_client import errors
from plugin_client.client import PluginClient
from plugin_client.conformance import run_conformance
from plugin_client.manifest import LoadedPlugin
from plugin_client.protocol import Capability

from _helpers import SRC_DIR
from plugin_factory import PLUGINS, make_plugin

SDK_PLUGIN = (PLUGINS / "sdk_plugin.py").read_text()
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "plugins"

ALL_METHOD_CAPS = (
    Capability.READ | Capability.LIST | Capability.VALIDATE | Capability.WRITE | Capability.DELETE | Capability.KEY_SOURCE
)


def sdk_script(body: str = SDK_PLUGIN) -> bytes:
    """A plugin script on the SDK, run by this interpreter with the package under test
    on its path. Tests compute its checksum, so the machine-specific paths are fine."""
    return f"#!{sys.executable} -I\nimport sys\nsys.path.insert(0, {SRC_DIR!r})\n{body}".encode()


def make_sdk_plugin(directory: Path, name: str = "sdk", body: str = SDK_PLUGIN, **kw: Any) -> LoadedPlugin:
    return make_plugin(directory, name, sdk_script(body), **kw)


def python_for_examples(directory: Path, *, site: bool = True) -> str:
    """An interpreter for ``$PLUGIN_CLIENT_PYTHON``: this one, able to import the
    package under test (installed or from the source tree). ``site=False`` gives one
    that cannot import plugin_client or pydantic."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ("python-with-plugin-client" if site else "python-without-site")
    if site:
        body = f'#!/bin/sh\nPYTHONPATH={SRC_DIR!r} exec {sys.executable!r} "$@"\n'
    else:
        body = f'#!/bin/sh\nexec {sys.executable!r} -S "$@"\n'
    path.write_text(body)
    os.chmod(path, 0o755)
    return str(path)


# --- through the client -----------------------------------------------------------------


def check_conformance(make: Callable[..., PluginClient]) -> None:
    """The echo behaviour, through a PluginClient. ``make(**kw)`` builds a client."""
    c = make(source_name="conformance", config={"entries": 4})
    init = c.start()
    assert init.source_name == "conformance"
    assert init.plugin_version
    assert init.capabilities & ALL_METHOD_CAPS == ALL_METHOD_CAPS
    pid = c.health().pid

    assert c.is_available().status.value == "available"
    assert c.get("value:hello").value.get_secret_value() == "hello"
    assert c.get("value:hello").lease_seconds is None
    text = 'h\u00e9llo \u2713 "quoted" \\ back\tslash \U0001f511'
    assert c.get("value:" + text).value.get_secret_value() == text
    big = "x" * 200_000
    assert c.get("value:" + big).value.get_secret_value() == big
    assert c.get("lease:30").lease_seconds == 30
    with pytest.raises(errors.PluginError) as ei:
        c.get("missing")
    assert (ei.value.kind, ei.value.reference, ei.value.reason) == ("bad-reference", "missing", "not found")

    assert [e.reference for e in c.list().entries] == ["ref-0", "ref-1", "ref-2", "ref-3"]
    assert c.validate("good").ok is True and c.validate("bad").ok is False
    assert c.put("k", "v1").replaced is False
    assert c.put("k", "v2").replaced is True
    assert c.delete("k").existed is True
    assert c.delete("k").existed is False
    assert c.key_material("enc").material.get_secret_value() == (b"enc" * 32)[:32]

    h = c.health()
    assert h.pid == pid and h.spawn_count == 1 and h.crashes_in_window == 0
    c.shutdown()
    last = c.health().last_exit
    assert last is not None and last.returncode == 0 and last.stage.value == "stdin-close"

    gated = make(config={"caps": int(Capability.READ)})
    assert gated.get("value:x").value.get_secret_value() == "x"
    with pytest.raises(errors.UnsupportedCapability):
        gated.put("k", "v")


# --- over the pipes ---------------------------------------------------------------------


class RawPlugin:
    """A plugin process driven line by line, with an empty environment as a host gives."""

    def __init__(self, argv: List[str], env: Optional[Dict[str, str]] = None) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or {}
        )
        self._buf = b""
        self._next_id = 1
        self._done = False

    def send_line(self, line: Union[bytes, str]) -> None:
        data = line.encode() if isinstance(line, str) else line
        assert self.proc.stdin is not None
        self.proc.stdin.write(data if data.endswith(b"\n") else data + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: Any = "absent", rid: Optional[int] = None) -> int:
        if rid is None:
            rid, self._next_id = self._next_id, self._next_id + 1
        obj: Dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": "secret_source." + method}
        if params != "absent":
            obj["params"] = params
        self.send_line(json.dumps(obj))
        return rid

    def init(self, config: Optional[Dict[str, Any]] = None, source_name: str = "raw") -> Dict[str, Any]:
        rid = self.request("init", {"source_name": source_name, "config": config or {}, "protocol_version": "1.1"})
        reply = self.read()
        assert reply["id"] == rid and "result" in reply, reply
        return reply["result"]  # type: ignore[no-any-return]

    def call(self, method: str, params: Any = "absent") -> Dict[str, Any]:
        rid = self.request(method, params)
        reply = self.read()
        assert reply["id"] == rid, reply
        return reply

    def read_raw(self, timeout: float = 10.0) -> bytes:
        """One line of stdout, without its newline."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply line")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError(f"stdout closed; buffered: {self._buf!r}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def read(self, timeout: float = 10.0) -> Dict[str, Any]:
        doc = json.loads(self.read_raw(timeout))
        assert doc["jsonrpc"] == "2.0" and isinstance(doc, dict)
        return doc  # type: ignore[no-any-return]

    def no_output(self, wait: float = 0.2) -> bool:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout.fileno()], [], [], wait)
        return not ready and not self._buf

    def close_stdin(self) -> None:
        # communicate() must not see a closed stdin, so drop it from the Popen.
        if self.proc.stdin is not None:
            self.proc.stdin.close()
            self.proc.stdin = None

    def finish(self, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
        """Close stdin, wait; returns (returncode, the rest of stdout, all of stderr)."""
        self.close_stdin()
        out, err = self.proc.communicate(timeout=timeout)
        self._done = True
        return self.proc.returncode, self._buf + out, err

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self._done:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.close_stdin()
        self.proc.communicate(timeout=10)
        self._done = True


def check_raw_conformance(plugin: LoadedPlugin) -> None:
    """The echo behaviour over the pipes (params-less requests), then every wire rule
    of the library's own conformance run (unknown and unclaimed methods, ids, stray
    output, exit on EOF and SIGTERM), with put and delete."""
    p = RawPlugin([str(plugin.executable.path)])
    try:
        res = p.init({"entries": 2})
        assert res["source_name"] == "raw"
        assert p.call("is_available")["result"]["status"] == "available"
        assert [e["reference"] for e in p.call("list")["result"]["entries"]] == ["ref-0", "ref-1"]
        assert p.call("get", {"reference": "value:after"})["result"]["value"] == "after"
    finally:
        p.kill()
    report = run_conformance(plugin, write=True, quiet_wait=0.1)
    assert report.ok, report.to_dict()

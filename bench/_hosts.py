"""What users would write instead of PluginClient, and the least Python can do.

``NaiveHost`` is the obvious code: ``subprocess.Popen`` with pipes,
``stdin.write`` + ``flush``, ``stdout.readline``, ``json``. No deadline, no
frame limit, no idle check, no typed result: it is the baseline our typed,
checked client has to beat.

``FloorHost`` is the Python floor: one ``os.write`` of a request formatted
from a template, ``os.read`` until the newline, ``json.loads`` of the reply,
nothing else (no id check, no validation, no deadline). What our client costs
beyond it is what the library itself costs; what it costs beyond the C host is
what Python costs on this CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any, List

INIT = {"source_name": "bench", "config": {}, "protocol_version": "1.1"}


class NaiveHost:
    def __init__(self, exe: Path, *args: str) -> None:
        self.proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.next_id = 1
        self.call("secret_source.init", INIT)

    def call(self, method: str, params: Any = None) -> Any:
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        stdin = self.proc.stdin
        assert stdin is not None and self.proc.stdout is not None
        stdin.write(json.dumps(msg).encode() + b"\n")
        stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if reply.get("id") != rid:
            raise RuntimeError(f"reply id {reply.get('id')!r} != {rid}")
        return reply["result"]

    def get(self, reference: str) -> str:
        value: str = self.call("secret_source.get", {"reference": reference})["value"]
        return value

    def close(self) -> None:
        """Cooperative: close stdin, wait for the exit."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait()
        self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.close()


class FloorHost(NaiveHost):
    """Raw ``os.write``/``os.read`` + ``json.loads`` on the same plugin (spawned and
    initialised as ``NaiveHost`` does it)."""

    GET = b'{"jsonrpc":"2.0","id":%d,"method":"secret_source.get","params":{"reference":%b}}\n'

    def __init__(self, exe: Path, *args: str) -> None:
        super().__init__(exe, *args)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()

    def get(self, reference: str) -> str:
        rid = self.next_id
        self.next_id = rid + 1
        os.write(self.wfd, self.GET % (rid, json.dumps(reference).encode()))
        data = os.read(self.rfd, 65536)
        while not data.endswith(b"\n"):
            data += os.read(self.rfd, 65536)
        value: str = json.loads(data)["result"]["value"]
        return value


class LockedNaiveHost(NaiveHost):
    """``NaiveHost`` made safe to share between threads the obvious way: one
    ``threading.Lock`` around each call."""

    def __init__(self, exe: Path, *args: str) -> None:
        self.lock = threading.Lock()
        super().__init__(exe, *args)

    def call(self, method: str, params: Any = None) -> Any:
        with self.lock:
            return super().call(method, params)


def close_all(hosts: List[Any]) -> None:
    """Shut down whatever a benchmark left running (a disabled pedantic run skips teardown)."""
    while hosts:
        h = hosts.pop()
        try:
            (h.shutdown if hasattr(h, "shutdown") else h.kill)()
        except Exception:  # pragma: no cover - cleanup only
            pass

"""What users would write instead of PluginClient: the naive Popen + json host.

``NaiveHost`` is the obvious code: ``subprocess.Popen`` with pipes,
``stdin.write`` + ``flush``, ``stdout.readline``, ``json``. No deadline, no
frame limit, no idle check, no typed result: it is the baseline our typed,
checked client has to beat.
"""

from __future__ import annotations

import json
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

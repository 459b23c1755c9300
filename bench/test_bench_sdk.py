"""The plugin SDK's start-up: an SDK echo plugin against the same handlers on stdlib ``json``.

* ``sdk_start``: spawn (``subprocess.Popen``) to the ``init`` reply read back,
  for ``sdk`` (the handlers on :mod:`plugin_client.plugin`) and ``stdlib`` (the
  same handlers, a loop on ``json`` alone). Both run this interpreter with
  ``-I``. The stdlib plugin runs once between every two rounds of the SDK one
  (``_bench.Between``), so both are timed in the same minutes; ``test_sdk_start_stdlib``
  reports those samples. Each spawn also reads the plugin's ``VmRSS`` and
  ``VmHWM`` from ``/proc`` after its init reply; their medians are in
  ``extra_info`` (``rss_kb``, ``hwm_kb``), and ``ratios.py`` prints their ratio.
* ``import``: ``python -X importtime -c STATEMENT`` in fresh processes, the
  statement's own cumulative import time: a sync host
  (``from plugin_client import PluginClient, load_plugin``), an SDK plugin
  (``import plugin_client.plugin``) and ``import json`` for scale.

Nothing here asserts a time; ``bench/ratios.py`` prints the ratios.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from _bench import Between, Placement, _report, _summary, report_between, tag

HANDLERS_SDK = """
from plugin_client.plugin import NotFound, SecretSourcePlugin, serve

class Echo(SecretSourcePlugin):
    version = "1.0"

    def get(self, reference):
        if reference == "missing":
            raise NotFound(reference)
        return reference

    def list(self):
        return ["a", "b"]

serve(Echo)
"""

HANDLERS_STDLIB = """
import json, sys

def reply(rid, key, body):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": rid, key: body}, separators=(",", ":")) + "\\n")
    sys.stdout.flush()

for line in sys.stdin:
    req = json.loads(line)
    rid, method, params = req["id"], req["method"], req.get("params") or {}
    if method == "secret_source.init":
        reply(rid, "result", {"source_name": params["source_name"], "capabilities_bits": 3, "plugin_version": "1.0"})
    elif method == "secret_source.get":
        if params["reference"] == "missing":
            reply(rid, "error", {"kind": "bad-reference", "reference": "missing", "reason": "not found"})
        else:
            reply(rid, "result", {"value": params["reference"]})
    elif method == "secret_source.list":
        reply(rid, "result", {"entries": [{"reference": "a"}, {"reference": "b"}]})
    else:
        reply(rid, "error", {"kind": "unsupported-capability", "capability": method})
"""

INIT = b'{"jsonrpc":"2.0","id":1,"method":"secret_source.init","params":{"source_name":"s","config":{},"protocol_version":"1.1"}}\n'

# variant -> the (rss_kb, hwm_kb) of each spawn
_MEMORY: Dict[str, List[Dict[str, int]]] = {}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    out = tmp_path_factory.mktemp("sdk-start")
    paths = {}
    for variant, body in (("sdk", HANDLERS_SDK), ("stdlib", HANDLERS_STDLIB)):
        path = out / f"echo-{variant}"
        path.write_text(f"#!{sys.executable} -I\n{body}")
        os.chmod(path, 0o755)
        paths[variant] = path
    return paths


def _memory(pid: int) -> Dict[str, int]:
    fields: Dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields["rss_kb" if key == "VmRSS" else "hwm_kb"] = int(value.split()[0])
    return fields


def start_once(path: Path, variant: str) -> None:
    """Spawn, send init, read the reply, read the memory, stop: all timed, for both
    plugins alike (the memory read and the stop cost the same for either)."""
    proc = subprocess.Popen([str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(INIT)
    proc.stdin.flush()
    reply = proc.stdout.readline()
    _MEMORY.setdefault(variant, []).append(_memory(proc.pid))
    proc.stdin.close()
    proc.wait(10)
    proc.stdout.close()
    assert json.loads(reply)["result"]["capabilities_bits"] == 3, reply


def _memory_info(benchmark: BenchmarkFixture, variant: str) -> None:
    samples = _MEMORY.get(variant) or []
    if samples:
        benchmark.extra_info.update(
            rss_kb=statistics.median(s["rss_kb"] for s in samples),
            hwm_kb=statistics.median(s["hwm_kb"] for s in samples),
        )


def test_sdk_start_sdk(benchmark: BenchmarkFixture, placement: Placement, scripts: Dict[str, Path]) -> None:
    tag(benchmark, "sdk_start", "sdk", placement)
    between = Between(benchmark, "sdk_start", placement, lambda: start_once(scripts["stdlib"], "stdlib"))
    _MEMORY.pop("sdk", None)
    _MEMORY.pop("stdlib", None)
    benchmark.pedantic(lambda: start_once(scripts["sdk"], "sdk"), setup=between.tick, rounds=30 if not benchmark.disabled else 1,
                       warmup_rounds=2 if not benchmark.disabled else 0)
    _memory_info(benchmark, "sdk")


def test_sdk_start_stdlib(benchmark: BenchmarkFixture, placement: Placement, scripts: Dict[str, Path]) -> None:
    tag(benchmark, "sdk_start", "stdlib", placement)
    if not report_between(benchmark, "sdk_start", placement):  # run alone: time itself
        _MEMORY.pop("stdlib", None)
        benchmark.pedantic(lambda: start_once(scripts["stdlib"], "stdlib"), rounds=30 if not benchmark.disabled else 1)
    _memory_info(benchmark, "stdlib")


IMPORTS = {
    "sync-host": "from plugin_client import PluginClient, load_plugin",
    "sdk": "import plugin_client.plugin",
    "json": "import json",
}


def _import_us(statement: str) -> int:
    """The cumulative import time (µs) of what the statement imports, in a fresh
    process: the top-level entries after the interpreter's own start-up (``site``)."""
    err = subprocess.run(
        [sys.executable, "-I", "-X", "importtime", "-c", statement], capture_output=True, text=True, check=True
    ).stderr
    rows = [line.split("|") for line in err.splitlines() if line.startswith("import time:") and line.count("|") == 2]
    names = [name[1:] for _, _, name in rows]
    after_site = names.index("site") + 1 if "site" in names else 0
    return sum(int(cum) for (_, cum, _), name in zip(rows[after_site:], names[after_site:]) if not name.startswith(" "))


@pytest.mark.parametrize("variant", list(IMPORTS))
def test_import(benchmark: BenchmarkFixture, variant: str) -> None:
    tag(benchmark, "import", variant, "n/a")
    samples: List[int] = []
    n = 1 if benchmark.disabled else 21
    benchmark.pedantic(lambda: samples.extend(_import_us(IMPORTS[variant]) for _ in range(n)), rounds=1, iterations=1)
    report: Dict[str, Any] = _summary([us * 1000 for us in samples])
    _report(benchmark, report, "python -X importtime, fresh processes", False)

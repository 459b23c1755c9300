"""Warm round trip under asyncio: ``await client.get(ref)`` against the sync client
and the plain asyncio host.

All contenders talk to the same C echo plugin (``bench/echo_plugin.c``), in the
same placement, and are timed the same way: one sample per ``get``
(``perf_counter`` around it), ``SAMPLES`` of them after a warm-up, in one
``pytest-benchmark`` round whose samples are replaced by those:

* ``async-c`` / ``async-py``: :class:`AsyncPluginClient` over the compiled core /
  the twin, on the default asyncio loop, process already spawned and initialised;
* ``sync-c`` / ``sync-py``: :class:`PluginClient`, the same plugin (no loop);
* ``asyncio-naive``: ``asyncio.create_subprocess_exec`` + ``StreamWriter.write``
  + ``drain`` + ``StreamReader.readline`` + ``json``: what an asyncio host
  writes without this library (no deadline, no frame limit, no idle check, no
  typed result).

Nothing here asserts a time; ``bench/ratios.py`` prints the ratios (case
``aio_warm_get``).
"""

from __future__ import annotations

import asyncio
import json
import time
import types
from typing import Any, Awaitable, Callable, List

from pytest_benchmark.fixture import BenchmarkFixture

from _bench import BenchBin, _replace_samples, tag
from _hosts import INIT
from plugin_client import AsyncPluginClient, LifetimePolicy, PluginClient

REF = "db/password"
POLICY = LifetimePolicy(idle_timeout=3600.0)
WARMUP = 2_000
SAMPLES = 20_000
SAMPLES_DISABLED = 20  # --benchmark-disable: a smoke run


class AsyncioNaiveHost:
    """The obvious asyncio host: a subprocess with stream pipes, one JSON line each way."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.next_id = 1

    @classmethod
    async def start(cls, exe: str) -> AsyncioNaiveHost:
        proc = await asyncio.create_subprocess_exec(
            exe, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        host = cls(proc)
        await host.call("secret_source.init", INIT)
        return host

    async def call(self, method: str, params: Any = None) -> Any:
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(msg).encode() + b"\n")
        await stdin.drain()
        reply = json.loads(await stdout.readline())
        if reply.get("id") != rid:
            raise RuntimeError(f"reply id {reply.get('id')!r} != {rid}")
        return reply["result"]

    async def get(self, reference: str) -> str:
        value: str = (await self.call("secret_source.get", {"reference": reference}))["value"]
        return value

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


async def _sample_async(get: Callable[[], Awaitable[Any]], n: int) -> List[float]:
    clock = time.perf_counter
    for _ in range(min(n, WARMUP)):
        await get()
    samples = []
    append = samples.append
    for _ in range(n):
        t0 = clock()
        await get()
        append(clock() - t0)
    return samples


def _sample_sync(get: Callable[[], Any], n: int) -> List[float]:
    clock = time.perf_counter
    for _ in range(min(n, WARMUP)):
        get()
    samples = []
    append = samples.append
    for _ in range(n):
        t0 = clock()
        get()
        append(clock() - t0)
    return samples


def _record(benchmark: BenchmarkFixture, run: Callable[[], List[float]]) -> None:
    samples: List[float] = []
    benchmark.pedantic(lambda: samples.extend(run()), rounds=1, iterations=1)
    samples.sort()
    benchmark.extra_info.update(median_s=samples[len(samples) // 2], samples=len(samples), timed_by="per-get")
    _replace_samples(benchmark, samples)


def _core_tag(core: types.ModuleType) -> str:
    return "c" if core.IMPLEMENTATION == "cython" else "py"


def test_aio_warm_get_async(
    benchmark: BenchmarkFixture, client_impl: types.ModuleType, bench_bin: BenchBin, placement: str
) -> None:
    tag(benchmark, "aio_warm_get", f"async-{_core_tag(client_impl)}", placement)
    n = SAMPLES_DISABLED if benchmark.disabled else SAMPLES

    async def main() -> List[float]:
        async with AsyncPluginClient(bench_bin.plugins, policy=POLICY, _core=client_impl) as client:
            assert (await client.get(REF)).value.get_secret_value() == REF
            return await _sample_async(lambda: client.get(REF), n)

    _record(benchmark, lambda: asyncio.run(main()))


def test_aio_warm_get_sync(
    benchmark: BenchmarkFixture, client_impl: types.ModuleType, bench_bin: BenchBin, placement: str
) -> None:
    tag(benchmark, "aio_warm_get", f"sync-{_core_tag(client_impl)}", placement)
    n = SAMPLES_DISABLED if benchmark.disabled else SAMPLES
    with PluginClient(bench_bin.plugins, policy=POLICY, _core=client_impl) as client:
        assert client.get(REF).value.get_secret_value() == REF
        _record(benchmark, lambda: _sample_sync(lambda: client.get(REF), n))


def test_aio_warm_get_asyncio_naive(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str) -> None:
    tag(benchmark, "aio_warm_get", "asyncio-naive", placement)
    n = SAMPLES_DISABLED if benchmark.disabled else SAMPLES

    async def main() -> List[float]:
        host = await AsyncioNaiveHost.start(str(bench_bin.echo))
        try:
            assert await host.get(REF) == REF
            return await _sample_async(lambda: host.get(REF), n)
        finally:
            await host.close()

    _record(benchmark, lambda: asyncio.run(main()))

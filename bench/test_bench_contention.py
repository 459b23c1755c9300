"""Contention: 4 threads sharing one :class:`PluginClient`, against one thread.

Each round makes ``TOTAL`` ``get`` requests on one warm client: all from one
thread, or split over 4 threads that start together. The client serves one
request at a time (the protocol allows no more), so the best 4 threads can do
is to keep the plugin as busy as one thread does; ``extra_info`` holds the
requests per second, and ``ratios.py`` compares them. The same rounds on the
naive Popen + json host behind one ``threading.Lock`` (what a user would
share between threads instead) say how much of the loss is ours: the rest is
the GIL and the lock handing the one core from thread to thread.

Nothing here asserts a time.
"""

from __future__ import annotations

import threading
import types
from typing import Any, Callable, Iterator, List

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from _bench import BenchBin, tag
from _hosts import LockedNaiveHost
from plugin_client import LifetimePolicy, PluginClient

REF = "db/password"
TOTAL = 4000
POLICY = LifetimePolicy(idle_timeout=3600.0)


@pytest.fixture
def shared_client(placement: str, client_impl: types.ModuleType, bench_bin: BenchBin) -> Iterator[PluginClient]:
    client = PluginClient(bench_bin.plugins, policy=POLICY, _core=client_impl)
    client.get(REF)
    yield client
    client.shutdown()


@pytest.mark.parametrize("threads", [1, 4])
def test_contention(benchmark: BenchmarkFixture, shared_client: PluginClient, client_impl: types.ModuleType,
                    placement: str, threads: int) -> None:
    impl = "c" if client_impl.IMPLEMENTATION == "cython" else "py"
    _rounds(benchmark, shared_client.get, impl, placement, threads)


@pytest.mark.parametrize("threads", [1, 4])
def test_contention_naive(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str, threads: int) -> None:
    host = LockedNaiveHost(bench_bin.echo)
    try:
        _rounds(benchmark, host.get, "naive", placement, threads)
    finally:
        host.close()


def _rounds(benchmark: BenchmarkFixture, get: Callable[[str], Any], impl: str, placement: str,
            threads: int) -> None:
    """``TOTAL`` ``get(REF)`` calls split over ``threads`` threads, timed from their
    start signal to the last one's end."""
    tag(benchmark, "contention", f"{threads}-thread{'s' if threads > 1 else ''}-{impl}", placement,
        requests=TOTAL, threads=threads)
    total = TOTAL if not benchmark.disabled else 40
    per_thread = total // threads
    errors: List[BaseException] = []

    def worker(go: threading.Event) -> None:
        go.wait()
        try:
            for _ in range(per_thread):
                get(REF)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def setup() -> Any:
        # Threads started outside the timing, waiting on one event.
        go = threading.Event()
        pool = [threading.Thread(target=worker, args=(go,)) for _ in range(threads)]
        for t in pool:
            t.start()
        return (go, pool), {}

    def run(go: threading.Event, pool: List[threading.Thread]) -> None:
        go.set()
        for t in pool:
            t.join()

    benchmark.pedantic(run, setup=setup, rounds=15, warmup_rounds=1)
    assert not errors, errors
    if benchmark.stats is not None and benchmark.stats.stats:
        benchmark.extra_info["requests_per_s"] = total / benchmark.stats.stats.median

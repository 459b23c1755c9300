"""Warm round trip: ``client.get(ref)`` against the limit and the naive host.

All four contenders talk to the same C echo plugin (``bench/echo_plugin.c``),
in the same placement:

* ``ours-c`` / ``ours-py``: :class:`PluginClient` over the compiled core / the
  twin (``client_impl``), process already spawned and initialised;
* ``c-host``: ``bench/c_host.c`` doing raw ``write``/``read`` ping-pong (the
  physical limit), timing each round trip itself;
* ``naive``: ``subprocess.Popen`` + ``stdin.write`` + ``stdout.readline`` + ``json``.

Nothing here asserts a time; ``bench/ratios.py`` prints the ratios.
"""

from __future__ import annotations

import types
from typing import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from _hosts import NaiveHost
from _bench import BenchBin, c_host, tag
from plugin_client import LifetimePolicy, PluginClient

REF = "db/password"
POLICY = LifetimePolicy(idle_timeout=3600.0)


@pytest.fixture
def warm_client(placement: str, client_impl: types.ModuleType, bench_bin: BenchBin) -> Iterator[PluginClient]:
    client = PluginClient(bench_bin.plugins, policy=POLICY)
    client.get(REF)  # spawned and initialised under the placement
    yield client
    client.shutdown()


def test_warm_get_ours(benchmark: BenchmarkFixture, warm_client: PluginClient, client_impl: types.ModuleType,
                       placement: str) -> None:
    tag(benchmark, "warm_get", f"ours-{'c' if client_impl.IMPLEMENTATION == 'cython' else 'py'}", placement)
    result = benchmark(warm_client.get, REF)
    assert result.value.get_secret_value() == REF


def test_warm_get_c_host(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str) -> None:
    tag(benchmark, "warm_get", "c-host", placement)
    c_host(benchmark, bench_bin, "rtt", bench_bin.echo, 50_000, n_disabled=10)


def test_warm_get_naive(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str) -> None:
    tag(benchmark, "warm_get", "naive", placement)
    host = NaiveHost(bench_bin.echo)
    try:
        assert benchmark(host.get, REF) == REF
    finally:
        host.close()

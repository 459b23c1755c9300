"""Warm round trip: ``client.get(ref)`` against the limit and the naive host.

All four contenders talk to the same C echo plugin (``bench/echo_plugin.c``),
in the same placement:

* ``ours-c`` / ``ours-py``: :class:`PluginClient` over the compiled core / the
  twin (``client_impl``), process already spawned and initialised;
* ``c-host``: ``bench/c_host.c`` doing raw ``write``/``read`` ping-pong (the
  physical limit), timing each round trip itself; ``c-host-spin`` busy-waits
  on non-blocking reads instead of blocking (for the unpinned placements);
* ``naive``: ``subprocess.Popen`` + ``stdin.write`` + ``stdout.readline`` + ``json``;
* ``python-floor``: raw ``os.write``/``os.read`` + ``json.loads`` (``FloorHost``):
  what Python itself costs, so a ratio to it shows what the library costs, on
  any CPU;
* ``ours-c-nospin``: ``ours-c`` with the core's adaptive spin turned off;
* ``ours-c-events`` / ``ours-py-events``: ``request_events=True`` with a no-op
  ``on_event`` callback (a ``request`` event per get, delivered on the events
  thread): what a subscriber to request events costs. Without it the warm path
  pays one attribute check (``Flow.complete``).

Placements: ``pinned``, ``unpinned`` and ``split`` (host on one CPU, plugin
on another: where a reply wakes an idle CPU, and where the spin pays).

Nothing here asserts a time; ``bench/ratios.py`` prints the ratios.
"""

from __future__ import annotations

import types
from typing import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from _hosts import FloorHost, NaiveHost
from _bench import BenchBin, Placement, c_host, tag
from plugin_client import LifetimePolicy, PluginClient, PluginEvent, flush_events

REF = "db/password"
POLICY = LifetimePolicy(idle_timeout=3600.0)


@pytest.fixture
def warm_client(rt_placement: Placement, client_impl: types.ModuleType, bench_bin: BenchBin) -> Iterator[PluginClient]:
    client = PluginClient(bench_bin.plugins, policy=POLICY, _core=client_impl)
    with rt_placement.spawning():
        client.get(REF)  # spawned and initialised under the placement
    yield client
    client.shutdown()


@pytest.fixture(params=["spin", "nospin"])
def spin(request: pytest.FixtureRequest, client_impl: types.ModuleType) -> Iterator[str]:
    """The compiled core's adaptive spin as it ships, or turned off (``_spin_limit(0)``)."""
    limit = getattr(client_impl, "_spin_limit", None)
    if request.param == "nospin" and limit is None:
        pytest.skip("the twin never spins")
    old = limit(0.0) if request.param == "nospin" else None
    yield request.param
    if old is not None:
        limit(old)


def test_warm_get_ours(benchmark: BenchmarkFixture, warm_client: PluginClient, client_impl: types.ModuleType,
                       rt_placement: Placement, spin: str) -> None:
    name = "ours-c" if client_impl.IMPLEMENTATION == "cython" else "ours-py"
    tag(benchmark, "warm_get", name if spin == "spin" else f"{name}-nospin", rt_placement)
    result = benchmark(warm_client.get, REF)
    assert result.value.get_secret_value() == REF


@pytest.mark.parametrize("reads", ["blocking", "spinning"])
def test_warm_get_c_host(benchmark: BenchmarkFixture, bench_bin: BenchBin, rt_placement: Placement,
                         reads: str) -> None:
    tag(benchmark, "warm_get", "c-host" if reads == "blocking" else "c-host-spin", rt_placement)
    c_host(benchmark, bench_bin, "rtt", bench_bin.echo, 50_000, n_disabled=10, placement=rt_placement,
           spin=reads == "spinning")


def test_warm_get_naive(benchmark: BenchmarkFixture, bench_bin: BenchBin, rt_placement: Placement) -> None:
    tag(benchmark, "warm_get", "naive", rt_placement)
    with rt_placement.spawning():
        host = NaiveHost(bench_bin.echo)
    try:
        assert benchmark(host.get, REF) == REF
    finally:
        host.close()


def test_warm_get_python_floor(benchmark: BenchmarkFixture, bench_bin: BenchBin, rt_placement: Placement) -> None:
    tag(benchmark, "warm_get", "python-floor", rt_placement)
    with rt_placement.spawning():
        host = FloorHost(bench_bin.echo)
    try:
        assert benchmark(host.get, REF) == REF
    finally:
        host.close()


def _ignore(event: PluginEvent) -> None:
    pass


def test_warm_get_request_events(benchmark: BenchmarkFixture, bench_bin: BenchBin, client_impl: types.ModuleType,
                                 rt_placement: Placement) -> None:
    name = "ours-c" if client_impl.IMPLEMENTATION == "cython" else "ours-py"
    tag(benchmark, "warm_get", f"{name}-events", rt_placement)
    client = PluginClient(bench_bin.plugins, policy=POLICY, _core=client_impl, on_event=_ignore, request_events=True)
    try:
        with rt_placement.spawning():
            client.get(REF)  # (the events thread starts here, placed as the host's threads are)
        result = benchmark(client.get, REF)
        assert result.value.get_secret_value() == REF
    finally:
        client.shutdown()
        flush_events()

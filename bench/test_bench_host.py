"""``PluginHost`` over 20 C plugins: ``start()``, ``health()`` and a stubborn ``shutdown()``.

* ``host_start``: spawn + ``init`` of every plugin of a directory of 20 copies of
  ``echo_plugin.c``. ``side-by-side`` is ``host.start()`` (one thread per
  plugin), ``one-by-one`` is each client's ``start()`` in turn, and
  ``async-side-by-side`` is ``AsyncPluginHost.start()`` (a task per plugin, in
  one ``asyncio.run``). The host is made (the directory scanned and hashed) and
  shut down outside the timing.
* ``host_health``: ``host.health()`` of the 20 running plugins.
* ``host_shutdown``: 20 plugins that ignore both stdin EOF and SIGTERM (the C
  plugin in its "stubborn" mode: only SIGKILL ends them), with ``exit_wait`` =
  50 ms and ``shutdown_grace`` = 100 ms. ``side-by-side`` is ``host.shutdown()``,
  whose target is one ``exit_wait + shutdown_grace`` (150 ms) plus the kills, not
  20; ``one-by-one`` shuts the clients down in turn (3 rounds: 3 s each).

Unpinned only: side by side is about using the CPUs there are. Nothing here
asserts a time; ``bench/ratios.py`` prints the ratios.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple, TypeVar

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from _bench import BenchBin, install, tag
from plugin_client import AsyncPluginHost, InitResult, LifetimePolicy, PluginHost
from plugin_client.manifest import RACY_WINDOW_NS

H = TypeVar("H")

N = 20
POLICY = LifetimePolicy(idle_timeout=3600.0)
STUBBORN_POLICY = LifetimePolicy(idle_timeout=3600.0, exit_wait=0.05, shutdown_grace=0.1)
PLACEMENT = "unpinned"


@pytest.fixture(scope="module")
def host_dirs(bench_bin: BenchBin, tmp_path_factory: pytest.TempPathFactory,
              request: pytest.FixtureRequest) -> Iterator[Tuple[Path, Path]]:
    """Two directories of N plugins each: cooperative C echoes, and stubborn ones."""
    base = tmp_path_factory.mktemp("host-bench")
    echo, stubborn = base / "echo", base / "stubborn"
    for d in (echo, stubborn):
        d.mkdir(mode=0o755)
    for i in range(N):
        install(echo, f"h{i:02d}", bench_bin.echo)
        install(stubborn, f"stubborn{i:02d}", bench_bin.echo)  # the name selects the mode
    # Past the racy window, so no spawn re-hashes its executable (manifest.py);
    # not worth the wait for an untimed run (CI's --benchmark-disable).
    if not request.config.getoption("benchmark_disable"):
        time.sleep(RACY_WINDOW_NS / 1e9 + 0.1)
    yield echo, stubborn


def _all_started(results: Any) -> bool:
    return len(results) == N and all(isinstance(r, InitResult) for r in results.values())


def _time_starts(benchmark: BenchmarkFixture, new_host: Callable[[], H], start: Callable[[H], Any],
                 stop: Callable[[H], Any]) -> None:
    """Time ``start`` of a fresh host each round (made in the untimed setup, stopped
    in the teardown), and stop every host made once more if a round fails."""
    made: List[H] = []

    def setup() -> Tuple[Tuple[H], dict]:  # type: ignore[type-arg]
        host = new_host()
        made.append(host)
        return (host,), {}

    try:
        results = benchmark.pedantic(start, setup=setup, teardown=stop, rounds=15, warmup_rounds=1)
        assert _all_started(results)
    finally:
        for host in made:
            stop(host)


def test_host_start_side_by_side(benchmark: BenchmarkFixture, host_dirs: Tuple[Path, Path]) -> None:
    tag(benchmark, "host_start", "side-by-side", PLACEMENT, plugins=N)
    _time_starts(benchmark, lambda: PluginHost(host_dirs[0], policy=POLICY), PluginHost.start, PluginHost.shutdown)


def test_host_start_one_by_one(benchmark: BenchmarkFixture, host_dirs: Tuple[Path, Path]) -> None:
    tag(benchmark, "host_start", "one-by-one", PLACEMENT, plugins=N)
    _time_starts(
        benchmark,
        lambda: PluginHost(host_dirs[0], policy=POLICY),
        lambda host: {name: host[name].start() for name in host.names()},
        PluginHost.shutdown,
    )


def test_host_start_async(benchmark: BenchmarkFixture, host_dirs: Tuple[Path, Path]) -> None:
    tag(benchmark, "host_start", "async-side-by-side", PLACEMENT, plugins=N)
    loop = asyncio.new_event_loop()
    try:
        _time_starts(
            benchmark,
            lambda: AsyncPluginHost(host_dirs[0], policy=POLICY),
            lambda host: loop.run_until_complete(host.start()),
            lambda host: loop.run_until_complete(host.shutdown()),
        )
    finally:
        loop.close()


def test_host_health(benchmark: BenchmarkFixture, host_dirs: Tuple[Path, Path]) -> None:
    tag(benchmark, "host_health", "ours", PLACEMENT, plugins=N)
    with PluginHost(host_dirs[0], policy=POLICY) as host:
        assert _all_started(host.start())
        health = benchmark(host.health)
        assert len(health) == N and all(h.pid is not None for h in health.values())


@pytest.mark.parametrize("variant, rounds", [("side-by-side", 10), ("one-by-one", 3)])
def test_host_shutdown_stubborn(benchmark: BenchmarkFixture, host_dirs: Tuple[Path, Path],
                                variant: str, rounds: int) -> None:
    bound = STUBBORN_POLICY.exit_wait + STUBBORN_POLICY.shutdown_grace
    tag(benchmark, "host_shutdown", variant, PLACEMENT, plugins=N, bound_s=bound)
    made: List[PluginHost] = []

    def setup() -> Tuple[Tuple[PluginHost], dict]:  # type: ignore[type-arg]
        host = PluginHost(host_dirs[1], policy=STUBBORN_POLICY)
        made.append(host)
        assert _all_started(host.start())
        return (host,), {}

    def run(host: PluginHost) -> None:
        if variant == "side-by-side":
            host.shutdown()
        else:
            for name in host.names():
                host[name].shutdown()
            host.shutdown()

    try:
        benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=0)
    finally:
        for host in made:
            host.shutdown()

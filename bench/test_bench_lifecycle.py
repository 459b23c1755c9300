"""Cold start and shutdown, against the C host and ``subprocess.Popen``, on the same plugin.

* ``cold_start``: spawn + ``init`` + first ``get``. Ours is a new
  :class:`PluginClient` (from an already loaded, verified plugin) and its first
  ``get``; the shutdown happens outside the timing. The C host is
  ``posix_spawn`` + two raw round trips; the Popen host is
  ``subprocess.Popen`` + ``json`` for the same two requests.
* ``cold_start_cpu``: the same, timed as the host thread's CPU time
  (``time.thread_time``; the C host's ``cold-cpu`` mode reads the same clock).
* ``shutdown``: a cooperative plugin (exits on stdin EOF), close-to-reaped.
  Ours is ``client.shutdown()`` (close stdin, wait for the exit on the pidfd,
  reap, close the fds, record the exit); the C host closes stdin and blocks in
  ``waitpid``; the Popen host does ``stdin.close(); wait()``.
* ``sigterm``: a plugin that ignores stdin EOF and exits 2 ms after SIGTERM.
  ``ours-core`` is the core's ``Child.terminate(); Child.wait(timeout)`` (the
  stage our shutdown runs once ``exit_wait`` is over), against
  ``Popen.terminate(); Popen.wait(timeout)``, which polls with growing sleeps.
  ``ours-client`` is the whole ``client.shutdown()`` with ``exit_wait`` at
  0.5 ms: it first waits that long for a cooperative exit, then SIGTERMs.
  The C host sends SIGTERM and blocks in ``waitpid``.

For ``cold_start`` and ``shutdown`` the C host runs in chunks of 10 between
our rounds (``_bench.CHostChunks``, every 10th round's untimed setup), and
its ``c-host`` result reports those pooled samples: the baseline is timed at
the same moments as we are. Run alone (``-k c_host``), it times itself.

Nothing here asserts a time; ``bench/ratios.py`` prints the ratios.
"""

from __future__ import annotations

import json
import subprocess
import time
import types
from typing import Any, Iterator, List, Tuple

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from _bench import BenchBin, CHostChunks, c_host, tag
from _hosts import close_all
from plugin_client import LifetimePolicy, PluginClient

REF = "db/password"
POLICY = LifetimePolicy(idle_timeout=3600.0)
# A plugin known to ignore stdin EOF: don't wait long for a cooperative exit.
SIGTERM_POLICY = LifetimePolicy(idle_timeout=3600.0, exit_wait=0.0005, shutdown_grace=5.0)
ROUNDS = 200
SIGTERM_ROUNDS = 60

INIT = b'{"jsonrpc":"2.0","id":1,"method":"secret_source.init","params":{"source_name":"bench","config":{},"protocol_version":"1.1"}}\n'
GET = b'{"jsonrpc":"2.0","id":2,"method":"secret_source.get","params":{"reference":"db/password"}}\n'


def _impl_name(impl: types.ModuleType) -> str:
    return "c" if impl.IMPLEMENTATION == "cython" else "py"


@pytest.fixture
def leftovers() -> Iterator[List[Any]]:
    """Clients and processes a round left behind (a disabled pedantic run skips teardown)."""
    made: List[Any] = []
    yield made
    close_all(made)


def _popen(exe: Any, *args: str) -> subprocess.Popen:  # type: ignore[type-arg]
    return subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _popen_roundtrips(p: subprocess.Popen) -> str:  # type: ignore[type-arg]
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(INIT)
    p.stdin.flush()
    json.loads(p.stdout.readline())
    p.stdin.write(GET)
    p.stdin.flush()
    value: str = json.loads(p.stdout.readline())["result"]["value"]
    return value


def _popen_close(p: subprocess.Popen) -> None:  # type: ignore[type-arg]
    assert p.stdin is not None and p.stdout is not None
    if p.poll() is None and not p.stdin.closed:
        p.stdin.close()
    if p.wait(timeout=10) is None:  # pragma: no cover
        p.kill()
    p.stdout.close()
    if not p.stdin.closed:
        p.stdin.close()


class _PopenHandle:
    def __init__(self, p: subprocess.Popen) -> None:  # type: ignore[type-arg]
        self.p = p

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        _popen_close(self.p)


# --- cold start ------------------------------------------------------------------


def _cold_rounds(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str, leftovers: List[Any],
                 c_mode: str, core: types.ModuleType) -> None:
    """Our cold starts, with the C host's ``c_mode`` run in chunks between them."""
    if not benchmark.disabled:
        bench_bin.wait_not_racy()
    plugin = bench_bin.plugins

    chunks = CHostChunks(benchmark, bench_bin, c_mode, bench_bin.echo, placement)

    def cold() -> str:
        client = PluginClient(plugin, policy=POLICY, _core=core)
        leftovers.append(client)
        return client.get(REF).value.get_secret_value()

    def teardown() -> None:
        close_all(leftovers)

    assert benchmark.pedantic(cold, setup=chunks.tick, teardown=teardown, rounds=ROUNDS, warmup_rounds=5) == REF


# Each cold start is timed twice: on the wall clock (``cold_start``, the target),
# and as the host thread's own CPU time (``cold_start_cpu``, ``time.thread_time``;
# the C host's ``cold-cpu`` mode). Pinned, host and plugin share one CPU and the
# plugin's part costs it the same under either host, so the second is where a
# pinned cold start's difference is (BENCHMARKS.md).
CLOCKS = [
    pytest.param("cold_start", "cold", id="wall"),
    pytest.param("cold_start_cpu", "cold-cpu", id="cpu", marks=pytest.mark.benchmark(timer=time.thread_time)),
]


@pytest.mark.parametrize("case, c_mode", CLOCKS)
def test_cold_start_ours(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str,
                         client_impl: types.ModuleType, leftovers: List[Any], case: str, c_mode: str) -> None:
    tag(benchmark, case, f"ours-{_impl_name(client_impl)}", placement)
    _cold_rounds(benchmark, bench_bin, placement, leftovers, c_mode, client_impl)


@pytest.mark.parametrize("case, c_mode", CLOCKS)
def test_cold_start_c_host(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str,
                           case: str, c_mode: str) -> None:
    tag(benchmark, case, "c-host", placement)
    c_host(benchmark, bench_bin, c_mode, bench_bin.echo, ROUNDS, interleaved_as=placement)


def test_cold_start_popen(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str,
                          leftovers: List[Any]) -> None:
    tag(benchmark, "cold_start", "popen", placement)

    def cold() -> str:
        p = _popen(bench_bin.echo)
        leftovers.append(_PopenHandle(p))
        return _popen_roundtrips(p)

    def teardown() -> None:
        while leftovers:
            _popen_close(leftovers.pop().p)

    assert benchmark.pedantic(cold, teardown=teardown, rounds=ROUNDS, warmup_rounds=5) == REF


# --- cooperative shutdown --------------------------------------------------------------


def test_shutdown_ours(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str,
                       client_impl: types.ModuleType, leftovers: List[Any]) -> None:
    tag(benchmark, "shutdown", f"ours-{_impl_name(client_impl)}", placement)
    chunks = CHostChunks(benchmark, bench_bin, "shutdown", bench_bin.echo, placement)

    def setup() -> Tuple[Tuple[PluginClient], dict]:  # type: ignore[type-arg]
        chunks.tick()
        client = PluginClient(bench_bin.plugins, policy=POLICY, _core=client_impl)
        leftovers.append(client)
        client.get(REF)
        return (client,), {}

    def stop(client: PluginClient) -> None:
        client.shutdown()

    benchmark.pedantic(stop, setup=setup, rounds=ROUNDS, warmup_rounds=5)
    info = leftovers[-1].health().last_exit
    assert info is not None and info.stage.value == "stdin-close"


def test_shutdown_c_host(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str) -> None:
    tag(benchmark, "shutdown", "c-host", placement)
    c_host(benchmark, bench_bin, "shutdown", bench_bin.echo, ROUNDS, interleaved_as=placement)


def test_shutdown_popen(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str,
                        leftovers: List[Any]) -> None:
    tag(benchmark, "shutdown", "popen", placement)

    def setup() -> Tuple[Tuple[Any], dict]:  # type: ignore[type-arg]
        p = _popen(bench_bin.echo)
        leftovers.append(_PopenHandle(p))
        _popen_roundtrips(p)
        return (p,), {}

    def stop(p: subprocess.Popen) -> None:  # type: ignore[type-arg]
        assert p.stdin is not None
        p.stdin.close()
        p.wait()

    benchmark.pedantic(stop, setup=setup, rounds=ROUNDS, warmup_rounds=5)


# --- SIGTERM shutdown ------------------------------------------------------------------


def test_sigterm_ours_client(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str,
                             client_impl: types.ModuleType, leftovers: List[Any]) -> None:
    tag(benchmark, "sigterm", f"ours-client-{_impl_name(client_impl)}", placement)

    def setup() -> Tuple[Tuple[PluginClient], dict]:  # type: ignore[type-arg]
        client = PluginClient(bench_bin.plugins_sigterm, policy=SIGTERM_POLICY, _core=client_impl)
        leftovers.append(client)
        client.get(REF)
        return (client,), {}

    def stop(client: PluginClient) -> None:
        client.shutdown()

    benchmark.pedantic(stop, setup=setup, rounds=SIGTERM_ROUNDS, warmup_rounds=2)
    info = leftovers[-1].health().last_exit
    assert info is not None and info.stage.value == "sigterm" and info.returncode == 0


def test_sigterm_ours_core(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str,
                           impl: types.ModuleType, leftovers: List[Any]) -> None:
    tag(benchmark, "sigterm", f"ours-core-{_impl_name(impl)}", placement)
    argv = [str(bench_bin.echo), "--sigterm-2ms"]

    class _Kill:
        def __init__(self, child: Any) -> None:
            self.child = child

        def kill(self) -> None:
            if self.child.returncode is None:
                self.child.kill()
                self.child.wait(10)
            self.child.close()

    def setup() -> Tuple[Tuple[Any], dict]:  # type: ignore[type-arg]
        child = impl.spawn(argv, {})
        leftovers.append(_Kill(child))
        reader = impl.FrameReader(child.stdout_fd)
        impl.write_all(child.stdin_fd, INIT)
        reader.read_frame(impl.monotonic() + 10)
        return (child,), {}

    def stop(child: Any) -> int:
        child.terminate()
        rc: int = child.wait(10.0)
        return rc

    assert benchmark.pedantic(stop, setup=setup, rounds=SIGTERM_ROUNDS, warmup_rounds=2) == 0


def test_sigterm_c_host(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str) -> None:
    tag(benchmark, "sigterm", "c-host", placement)
    c_host(benchmark, bench_bin, "sigterm", bench_bin.echo, SIGTERM_ROUNDS)


def test_sigterm_popen(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str,
                       leftovers: List[Any]) -> None:
    tag(benchmark, "sigterm", "popen", placement)

    def setup() -> Tuple[Tuple[Any], dict]:  # type: ignore[type-arg]
        p = _popen(bench_bin.echo, "--sigterm-2ms")
        leftovers.append(_PopenHandle(p))
        _popen_roundtrips(p)
        return (p,), {}

    def stop(p: subprocess.Popen) -> int:  # type: ignore[type-arg]
        p.terminate()
        return p.wait(timeout=10.0)

    assert benchmark.pedantic(stop, setup=setup, rounds=SIGTERM_ROUNDS, warmup_rounds=2) == 0

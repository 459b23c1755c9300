"""Large replies: a ``list`` of 10,000 entries, about 600 KB on one line.

* ``list``: the whole round trip. Ours is ``client.list()`` (read + frame +
  decode + validate into a typed ``ListResult``); the naive host is
  ``stdin.write`` + ``stdout.readline`` + ``json.loads`` +
  ``ListResult.model_validate``. Same plugin, same reply bytes. The naive
  host runs once between every two of our rounds (``_bench.Between``), so both
  are timed at the same moments; run alone (``-k naive``) it times itself.
* ``list_decode``: the same reply line already in memory, to separate the
  decoding from the pipe: ``decode_reply`` against ``json.loads`` +
  ``ListResult.model_validate``.

Nothing here asserts a time; ``bench/ratios.py`` prints the ratios.
"""

from __future__ import annotations

import json
import types
from typing import Any, Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from _bench import BenchBin, Between, report_between, tag
from _hosts import NaiveHost
from plugin_client import LifetimePolicy, PluginClient
from plugin_client.protocol import ListCall, ListResult, decode_reply

ENTRIES = 10_000
LIST_ROUNDS = 60
POLICY = LifetimePolicy(idle_timeout=3600.0)


def _naive_list(host: NaiveHost) -> ListResult:
    assert host.proc.stdin is not None and host.proc.stdout is not None
    rid = host.next_id
    host.next_id += 1
    host.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "secret_source.list"}).encode() + b"\n")
    host.proc.stdin.flush()
    reply = json.loads(host.proc.stdout.readline())
    assert reply["id"] == rid
    return ListResult.model_validate(reply["result"])


@pytest.fixture
def list_client(placement: str, client_impl: types.ModuleType, bench_bin: BenchBin) -> Iterator[PluginClient]:
    client = PluginClient(bench_bin.plugins, policy=POLICY, config={"list_entries": ENTRIES}, _core=client_impl)
    client.list()
    yield client
    client.shutdown()


def test_list_ours(benchmark: BenchmarkFixture, list_client: PluginClient, client_impl: types.ModuleType,
                   placement: str, bench_bin: BenchBin) -> None:
    compiled = client_impl.IMPLEMENTATION == "cython"
    tag(benchmark, "list", f"ours-{'c' if compiled else 'py'}", placement)
    if not compiled:
        result = benchmark(list_client.list)
        assert len(result.entries) == ENTRIES
        return
    host = NaiveHost(bench_bin.echo)  # list_entries defaults to 10,000 in the plugin
    try:
        # The naive host runs between our rounds (test_list_naive reports it): both
        # allocate ~20,000 objects a round, and this VM's page-fault and allocator
        # costs drift within a run by more than the gap between the two.
        between = Between(benchmark, "list", placement, lambda: _naive_list(host))
        result = benchmark.pedantic(list_client.list, setup=between.tick, rounds=LIST_ROUNDS, warmup_rounds=2)
        assert len(result.entries) == ENTRIES
    finally:
        host.close()


def test_list_naive(benchmark: BenchmarkFixture, bench_bin: BenchBin, placement: str) -> None:
    tag(benchmark, "list", "naive", placement)
    if report_between(benchmark, "list", placement):
        return
    host = NaiveHost(bench_bin.echo)  # run alone (-k naive): it times itself
    try:
        # pedantic, as ours: each round's result is freed outside the timing.
        result = benchmark.pedantic(_naive_list, args=(host,), rounds=LIST_ROUNDS, warmup_rounds=2)
        assert len(result.entries) == ENTRIES
    finally:
        host.close()


@pytest.fixture(scope="module")
def list_line(bench_bin: BenchBin) -> Any:
    host = NaiveHost(bench_bin.echo)
    try:
        assert host.proc.stdin is not None and host.proc.stdout is not None
        host.proc.stdin.write(b'{"jsonrpc":"2.0","id":7,"method":"secret_source.list"}\n')
        host.proc.stdin.flush()
        line = host.proc.stdout.readline().rstrip(b"\n")
    finally:
        host.close()
    assert 500_000 < len(line) < 700_000
    return line


def test_list_decode_ours(benchmark: BenchmarkFixture, list_line: bytes) -> None:
    tag(benchmark, "list_decode", "ours", "n/a")
    result = benchmark(decode_reply, list_line, ListCall, 7)
    assert len(result.entries) == ENTRIES


def test_list_decode_naive(benchmark: BenchmarkFixture, list_line: bytes) -> None:
    tag(benchmark, "list_decode", "naive", "n/a")

    def decode(line: bytes) -> ListResult:
        reply = json.loads(line)
        assert reply["id"] == 7
        return ListResult.model_validate(reply["result"])

    result = benchmark(decode, list_line)
    assert len(result.entries) == ENTRIES

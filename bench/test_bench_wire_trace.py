"""What the wire trace costs a warm ``get`` when DEBUG is off: a pinned A/B in one run.

The trace is checked once per exchange (``TRACE.maybe``, see
``plugin_client._wire_trace``), in ``PluginClient._call`` (the sync warm path)
and in ``Channel.begin`` and ``Channel._settle`` (every asyncio exchange). The
contenders, the same warm client on the same C plugin, in alternating blocks of
``BLOCK`` gets:

* ``checked``: the code as it ships, the wire logger off (the root at WARNING);
* ``unchecked``: those methods compiled again from their own source without
  the lines marked ``# wire trace`` (``_without_trace``), swapped in for the
  block: the warm path as if the trace did not exist;
* ``debug-on``: the trace on, into a ``NullHandler`` (what a host that turns
  DEBUG on pays: parsing, redacting and formatting two records per request).

Each sample is one block's mean per ``get``, the first two swapping places
every other round; ``test_*_checked`` times all three side by side and the other two tests report the samples it took for them (run
alone, they time themselves), with ``extra_info["paired_ratio_to_checked"]``:
the median of each round's ratio to the ``checked`` block next to it (and
``paired_ratio_quartiles``), which the machine's drift (other processes on the
pinned CPU) does not move the way it moves two medians. Case ``wire_trace_off`` (sync) and
``aio_wire_trace_off`` (asyncio), compiled core, pinned only (where the ±3 % of
the warm round trip is steadiest). Nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import statistics
import textwrap
import time
import types
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from _bench import BenchBin, Placement, _replace_samples, tag
from plugin_client import AsyncPluginClient, LifetimePolicy, PluginClient
from plugin_client import _aio_transport, client as client_module
from plugin_client._aio_transport import Channel

REF = "db/password"
POLICY = LifetimePolicy(idle_timeout=3600.0)
BLOCK = 500
ROUNDS = 300
VARIANTS = ("checked", "unchecked", "debug-on")
WIRE = logging.getLogger("plugin_client.wire")

# Samples (seconds per get) that test_*_checked took for the other variants, by (case, variant),
# and the median of each round's ratio of that variant's block to the checked one's.
_TAKEN: Dict[Tuple[str, str], List[float]] = {}
_PAIRED: Dict[Tuple[str, str], List[float]] = {}

pytestmark = [
    pytest.mark.parametrize("placement", ["pinned"], indirect=True),
    pytest.mark.parametrize("impl", ["cython"], indirect=True),
]


def _without_trace(cls: type, name: str, module: Any) -> Any:
    """``cls.name`` compiled again from its source without the wire trace: each
    ``if`` marked ``# wire trace`` goes with its body, and its ``else:`` body
    (if any) stays, one level out. The baseline follows the shipped method."""
    lines = textwrap.dedent(inspect.getsource(getattr(cls, name))).splitlines()
    out: List[str] = []
    i, marked = 0, 0
    indent = lambda line: len(line) - len(line.lstrip())  # noqa: E731
    while i < len(lines):
        line = lines[i]
        if not (line.lstrip().startswith("if ") and "# wire trace" in line):
            out.append(line)
            i += 1
            continue
        marked += 1
        depth = indent(line)
        i += 1
        while i < len(lines) and indent(lines[i]) > depth:
            i += 1
        if i < len(lines) and lines[i].strip() == "else:" and indent(lines[i]) == depth:
            i += 1
            while i < len(lines) and indent(lines[i]) > depth:
                out.append(lines[i][4:])
                i += 1
    assert marked, f"{cls.__name__}.{name} has no line marked '# wire trace' any more"
    src = "\n".join(out)
    namespace = dict(vars(module))
    exec(compile(src, f"<{cls.__name__}.{name} without the wire trace>", "exec"), namespace)
    return namespace[name]


# The methods whose lines check the trace, each with its baseline without the check.
_SYNC = [(PluginClient, "_call", client_module)]
_AIO = [(Channel, "begin", _aio_transport), (Channel, "_settle", _aio_transport)]


class _Variant:
    """Puts the process in one variant's state for a block, and back."""

    def __init__(self, methods: List[Tuple[type, str, Any]], variant: str) -> None:
        self.variant = variant
        self.handler = logging.NullHandler()
        self.swaps = [(cls, name, getattr(cls, name), _without_trace(cls, name, module))
                      for cls, name, module in methods]

    def __enter__(self) -> None:
        if self.variant == "unchecked":
            for cls, name, _shipped, baseline in self.swaps:
                setattr(cls, name, baseline)
        elif self.variant == "debug-on":
            WIRE.addHandler(self.handler)
            WIRE.propagate = False  # (not into pytest's capture)
            WIRE.setLevel(logging.DEBUG)

    def __exit__(self, *exc: object) -> None:
        for cls, name, shipped, _baseline in self.swaps:
            setattr(cls, name, shipped)
        WIRE.setLevel(logging.NOTSET)
        WIRE.propagate = True
        WIRE.removeHandler(self.handler)


def _interleaved(benchmark: BenchmarkFixture, case: str, methods: List[Tuple[type, str, Any]],
                 block: Callable[[int], float], variants: Tuple[str, ...]) -> List[float]:
    """Blocks of each variant in turn, ``ROUNDS`` times; returns the first variant's
    samples and keeps the others' for their own tests."""
    rounds = 1 if benchmark.disabled else ROUNDS
    size = 10 if benchmark.disabled else BLOCK
    samples: Dict[str, List[float]] = {v: [] for v in variants}
    states = {v: _Variant(methods, v) for v in variants}
    for v in variants:  # one untimed block each: warm caches, and the trace's first records
        with states[v]:
            block(size)
    swapped = variants[1::-1] + variants[2:]
    for i in range(rounds):
        # The first two swap places every other round: a block right after
        # debug-on's (which fills the caches with json and logging) starts colder,
        # and each of the two compared must be that one as often as the other.
        for v in variants if i % 2 == 0 else swapped:
            with states[v]:
                samples[v].append(block(size) / size)
    first = samples[variants[0]]
    for v in variants[1:]:
        _TAKEN[(case, v)] = samples[v]
        _PAIRED[(case, v)] = [b / a for a, b in zip(first, samples[v])]
    return first


def _report(benchmark: BenchmarkFixture, samples: List[float], case: str, variant: str) -> None:
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(median_s=statistics.median(samples), samples=len(samples), timed_by="blocks of gets")
    paired = _PAIRED.get((case, variant))
    if paired:  # the round-by-round ratio to "checked": drift cancels out
        quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
        benchmark.extra_info.update(paired_ratio_to_checked=statistics.median(paired),
                                    paired_ratio_quartiles=[quartiles[0], quartiles[2]])
    _replace_samples(benchmark, samples)


# --- the sync client ----------------------------------------------------------------


@pytest.fixture
def sync_client(placement: Placement, client_impl: types.ModuleType, bench_bin: BenchBin) -> Iterator[PluginClient]:
    client = PluginClient(bench_bin.plugins, policy=POLICY, _core=client_impl)
    client.get(REF)
    yield client
    client.shutdown()


def _sync_block(client: PluginClient) -> Callable[[int], float]:
    get = client.get

    def block(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            get(REF)
        return time.perf_counter() - t0

    return block


@pytest.mark.parametrize("variant", VARIANTS)
def test_wire_trace_off(benchmark: BenchmarkFixture, sync_client: PluginClient, placement: Placement,
                        variant: str) -> None:
    tag(benchmark, "wire_trace_off", variant, placement)
    taken = _TAKEN.get(("wire_trace_off", variant)) if variant != VARIANTS[0] else None
    if taken is None:
        order = (variant,) + tuple(v for v in VARIANTS if v != variant) if variant == VARIANTS[0] else (variant,)
        taken = _interleaved(benchmark, "wire_trace_off", _SYNC, _sync_block(sync_client), order)
    _report(benchmark, taken, "wire_trace_off", variant)
    assert sync_client.get(REF).value.get_secret_value() == REF


# --- the asyncio client ----------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_aio_wire_trace_off(benchmark: BenchmarkFixture, placement: Placement, client_impl: types.ModuleType,
                            bench_bin: BenchBin, variant: str) -> None:
    tag(benchmark, "aio_wire_trace_off", variant, placement)
    taken = _TAKEN.get(("aio_wire_trace_off", variant)) if variant != VARIANTS[0] else None
    if taken is None:
        loop = asyncio.new_event_loop()
        client = AsyncPluginClient(bench_bin.plugins, policy=POLICY, _core=client_impl)
        try:
            loop.run_until_complete(client.get(REF))

            async def run(n: int) -> float:
                get = client.get
                t0 = time.perf_counter()
                for _ in range(n):
                    await get(REF)
                return time.perf_counter() - t0

            def block(n: int) -> float:
                return loop.run_until_complete(run(n))

            order = (variant,) + tuple(v for v in VARIANTS if v != variant) if variant == VARIANTS[0] else (variant,)
            taken = _interleaved(benchmark, "aio_wire_trace_off", _AIO, block, order)
        finally:
            loop.run_until_complete(client.shutdown())
            loop.close()
    _report(benchmark, taken, "aio_wire_trace_off", variant)

"""What reading each stderr line's level costs a drain (``pytest bench``).

One drain of a pipe holding ~60 KB (at most 1,000 lines) of one shape of line (a plain line, the SDK's
``LEVEL name: message``, a pino JSON record, a traceback's indented frame),
logged to a handler that only counts, at INFO, as a host with logging set up
has it. ``levels`` is the stderr tail as it is; ``info-only`` the same tail
logging every line at INFO without reading its level (what it did before the
levels), timed between the rounds of ``levels`` (``_bench.Between``): the ratio
of the two medians is the cost of reading the levels.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from plugin_client._stderr import StderrTail

from _bench import Between, report_between, tag

SHAPES = {
    "plain": b"e" * 99 + b"\n",
    "sdk": b"ERROR plugin_client.sdk: something failed while answering\n",
    "json": b'{"level":40,"time":1700000000000,"pid":1,"msg":"something happened here"}\n',
    "traceback": b'  File "/srv/plugin/handler.py", line 12, in get\n',
}


class InfoOnlyTail(StderrTail):
    """The tail without the levels: every line logged at INFO."""

    __slots__ = ()

    def _log(self, line: str) -> None:
        if self._logged < 1000:
            self._logged += 1
            self._logger.info("%s", line)
        else:
            self._unlogged += 1


class _Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@pytest.fixture
def counted() -> Iterator[Tuple[logging.Logger, _Counting]]:
    logger = logging.getLogger("plugin_client.plugin.bench-stderr")
    handler = _Counting()
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@pytest.mark.parametrize("variant", ["levels", "info-only"])  # (in this order: info-only reports what levels took)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_stderr_drain(
    benchmark: BenchmarkFixture, placement: Any, counted: Tuple[logging.Logger, _Counting], shape: str, variant: str
) -> None:
    case = f"stderr_{shape}"
    tag(benchmark, case, variant, str(placement))
    if variant == "info-only" and report_between(benchmark, case, placement):
        return
    logger, handler = counted
    line = SHAPES[shape]
    payload = line * min(1000, 60000 // len(line))  # all logged: at most 1,000 lines a drain
    lines = payload.count(b"\n")
    fds: List[int] = []

    def tail_of(cls: type) -> StderrTail:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.write(w, payload)
        os.close(w)
        fds.append(r)
        tail: StderrTail = cls(r, logger, 50)
        return tail

    drained: List[StderrTail] = []

    def drain(tail: StderrTail) -> None:
        while tail.drain():
            pass
        drained.append(tail)

    baselines: List[StderrTail] = []
    between = Between(benchmark, case, placement, lambda: drain(baselines.pop()))

    def setup() -> Tuple[Tuple[StderrTail], Dict[str, Any]]:
        if variant == "levels":
            baselines.append(tail_of(InfoOnlyTail))
            between.tick()
        return (tail_of(StderrTail if variant == "levels" else InfoOnlyTail),), {}

    # pytest's log capture hangs its own handlers on the logger too (for this
    # test's report); off for the timing, which is of the tail and one handler.
    captures = [h for h in logger.handlers if h is not handler]
    for h in captures:
        logger.removeHandler(h)
    try:
        benchmark.pedantic(drain, setup=setup, rounds=60, iterations=1)
    finally:
        for h in captures:
            logger.addHandler(h)
        for fd in fds:
            os.close(fd)
    assert drained and handler.count == lines * len(drained)  # every line logged, every round (and baseline)
    benchmark.extra_info["lines"] = lines

"""Frame-parser microbenchmarks, compiled core vs. twin (``pytest bench``).

Nothing here asserts a time: compare the medians of ``[c]`` and ``[py]`` in
the report. The frame checks only keep a broken parser from looking fast.
"""

from __future__ import annotations

import types

from pytest_benchmark.fixture import BenchmarkFixture

from _bench import tag

# ~100-byte JSON-RPC replies, 1000 to a buffer: a busy plugin's read.
SMALL = b'{"jsonrpc":"2.0","id":%06d,"result":{"value":"' + b"v" * 45 + b'"}}\n'
SMALL_FRAMES = 1000
SMALL_BUFFER = b"".join(SMALL % i for i in range(SMALL_FRAMES))

# One ~1 MiB frame (a big `list` reply) arriving in 4 KiB pipe reads.
HUGE_FRAME = b'{"entries":"' + b"e" * (1024 * 1024 - 16) + b'"}'
CHUNK = 4096
HUGE_CHUNKS = [HUGE_FRAME[i : i + CHUNK] for i in range(0, len(HUGE_FRAME), CHUNK)] + [b"\n"]


def _name(impl: types.ModuleType) -> str:
    return "c" if impl.IMPLEMENTATION == "cython" else "py"


def test_many_small_frames(benchmark: BenchmarkFixture, impl: types.ModuleType) -> None:
    tag(benchmark, "frames_small", _name(impl), "n/a")
    reader = impl.FrameReader(-1)

    def run() -> int:
        reader.feed(SMALL_BUFFER)
        n = 0
        next_frame = reader.next_frame
        while next_frame() is not None:
            n += 1
        return n

    assert benchmark(run) == SMALL_FRAMES
    assert reader.buffered == 0


def test_one_huge_frame_in_4k_chunks(benchmark: BenchmarkFixture, impl: types.ModuleType) -> None:
    tag(benchmark, "frames_huge", _name(impl), "n/a")
    reader = impl.FrameReader(-1)

    def run() -> int:
        feed, next_frame = reader.feed, reader.next_frame
        frame = None
        for chunk in HUGE_CHUNKS:
            feed(chunk)
            frame = next_frame()
        assert frame is not None
        return len(frame)

    assert benchmark(run) == len(HUGE_FRAME)
    assert reader.buffered == 0

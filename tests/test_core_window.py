"""``RestartWindow`` and ``monotonic`` over both cores."""

from __future__ import annotations

import math
import time
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def test_monotonic_is_time_monotonic(core: types.ModuleType) -> None:
    before = time.monotonic()
    now = core.monotonic()
    after = time.monotonic()
    assert type(now) is float
    assert before <= now <= after


def test_records_and_prunes_with_explicit_now(core: types.ModuleType) -> None:
    w = core.RestartWindow(10.0, 3)
    assert w.record(now=100.0) == 1
    assert w.record(now=105.0) == 2
    assert w.count(now=110.0) == 2  # exactly `window` old is still inside
    assert w.count(now=110.5) == 1
    assert w.count(now=115.5) == 0
    assert w.last == 105.0  # kept across pruning


def test_record_counts_as_of_now(core: types.ModuleType) -> None:
    w = core.RestartWindow(60.0, 5)
    w.record(now=0.0)
    w.record(now=30.0)
    assert w.record(now=90.0) == 2  # 0.0 has left the window, 30.0 has not


def test_cap_bounds_memory_and_count(core: types.ModuleType) -> None:
    w = core.RestartWindow(60.0, 3)
    for i in range(1000):
        assert w.record(now=1.0 + i * 1e-3) <= 3
    assert w.count(now=2.0) == 3
    assert w.exceeded(now=2.0)
    assert w.last == pytest.approx(1.999)


def test_exceeded_is_count_at_least_cap(core: types.ModuleType) -> None:
    w = core.RestartWindow(60.0, 3)
    w.record(now=0.0)
    w.record(now=1.0)
    assert not w.exceeded(now=2.0)
    w.record(now=2.0)
    assert w.exceeded(now=2.0)
    assert w.exceeded(now=60.0)
    assert not w.exceeded(now=60.5)  # the crash at 0.0 has aged out


def test_last_and_clear(core: types.ModuleType) -> None:
    w = core.RestartWindow(5.0, 2)
    assert w.last is None
    assert w.count(now=0.0) == 0
    w.record(now=1.0)
    w.record(now=2.0)
    w.clear()
    assert w.last is None
    assert w.count(now=2.0) == 0
    assert not w.exceeded(now=2.0)
    assert w.record(now=3.0) == 1


def test_now_defaults_to_monotonic(core: types.ModuleType) -> None:
    w = core.RestartWindow(60.0, 3)
    before = core.monotonic()
    assert w.record() == 1
    after = core.monotonic()
    assert w.last is not None and before <= w.last <= after
    assert w.count() == 1
    assert not w.exceeded()


def test_properties(core: types.ModuleType) -> None:
    w = core.RestartWindow(60, 3)
    assert w.window == 60.0 and type(w.window) is float
    assert w.cap == 3


@pytest.mark.parametrize(
    ("window", "cap"),
    [(0.0, 3), (-1.0, 3), (math.nan, 3), (60.0, 0), (60.0, -1)],
)
def test_invalid_arguments(core: types.ModuleType, window: float, cap: int) -> None:
    with pytest.raises(ValueError):
        core.RestartWindow(window, cap)


@pytest.mark.parametrize(("window", "cap"), [("60", 3), (None, 3), (60.0, "3"), (60.0, None)])
def test_non_numbers_are_rejected(core: types.ModuleType, window: object, cap: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        core.RestartWindow(window, cap)


@settings(max_examples=100, deadline=None)
@given(
    window=st.floats(min_value=0.001, max_value=1000),
    cap=st.integers(min_value=1, max_value=6),
    gaps=st.lists(st.floats(min_value=0, max_value=100), max_size=30),
)
def test_matches_model(core: types.ModuleType, window: float, cap: int, gaps: list[float]) -> None:
    w = core.RestartWindow(window, cap)
    now = 0.0
    times: list[float] = []
    for gap in gaps:
        now += gap
        times.append(now)
        kept = [t for t in times[-cap:] if t >= now - window]
        assert w.record(now=now) == len(kept)
        assert w.exceeded(now=now) == (len(kept) >= cap)
        assert w.last == now

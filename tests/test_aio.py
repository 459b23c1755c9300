"""``AsyncPluginClient``'s own behaviour: concurrency, cancellation, a loop that never blocks.

The lifetime contract it shares with ``PluginClient`` is tested by
``test_client.py``, which runs every behaviour test against both clients.
Each test here runs its own event loop with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import importlib.util
import os
import random
import select
import signal
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, List, Optional, Tuple

import pytest

import plugin_client
from plugin_client import _aio_transport, aio, errors
from plugin_client._impl import monotonic
from plugin_client.aio import AsyncPluginClient
from plugin_client.health import ExitStage, PluginState
from plugin_client.manifest import LoadedPlugin
from plugin_client.policy import LifetimePolicy
from plugin_client.protocol import GetCall, decode_reply, encode_request

from _helpers import is_dead, two_cpus, wait_until  # noqa: F401  (fixture)
from _reliability import bounded, c_plugin, c_plugins, kill_quietly  # noqa: F401  (fixture)
from plugin_factory import STUBBORN, make_plugin, python_script

FAST = LifetimePolicy(request_timeout=2.0, start_timeout=5.0, shutdown_grace=1.0, exit_wait=0.5)
# The longest the loop may go without running a task while a plugin's stderr
# floods: a few bounded drains on a busy 2-core machine, not a stall.
_MAX_LAG = 0.1


@pytest.fixture
def plugin(tmp_path: Path) -> LoadedPlugin:
    return make_plugin(tmp_path / "plugins")


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def value(result: Any) -> str:
    return str(result.value.get_secret_value())


class Ticker:
    """Counts 1 ms sleeps on the loop; a blocked loop shows up as one long gap."""

    def __init__(self) -> None:
        self.gaps: List[float] = []
        self._task: Optional["asyncio.Task[None]"] = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.001)
            now = loop.time()
            self.gaps.append(now - last)
            last = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


def test_exported() -> None:
    assert plugin_client.AsyncPluginClient is AsyncPluginClient
    assert "AsyncPluginClient" in plugin_client.__all__


def test_concurrent_tasks_get_their_own_replies_in_arrival_order(plugin: LoadedPlugin) -> None:
    n_tasks, n_req = 200, 50
    done: List[Tuple[int, int]] = []
    wrong: List[str] = []

    async def worker(c: AsyncPluginClient, t: int) -> None:
        for i in range(n_req):
            ref = f"value:t{t}-r{i}"
            got = value(await c.get(ref))
            if got != ref[6:]:
                wrong.append(f"{ref} got {got}")
            done.append((t, i))

    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            await c.start()  # the first spawn starts the shared stderr pump thread
            threads = threading.active_count()
            await asyncio.gather(*(worker(c, t) for t in range(n_tasks)))
            assert threading.active_count() == threads  # no thread per request
            h = c.health()
            assert h.spawn_count == 1 and h.crashes_in_window == 0

    run(main())
    assert wrong == []
    # The first task may get several replies before the others have even started
    # (a reply already in the pipe ends a request without a loop iteration, up to
    # QUICK_MAX in a row; see test_a_reply_already_there...). From then on the
    # lock is FIFO: each task queues again behind all the others.
    burst = next(k for k, (t, _) in enumerate(done) if t != 0)
    assert 1 <= burst <= _aio_transport.QUICK_MAX + 1
    queue = collections.deque(list(range(1, n_tasks)) + ([0] if burst < n_req else []))
    sent = [burst] + [0] * (n_tasks - 1)
    expected = []
    while queue:
        t = queue.popleft()
        expected.append((t, sent[t]))
        sent[t] += 1
        if sent[t] < n_req:
            queue.append(t)
    assert done[burst:] == expected


def test_a_reply_already_there_is_taken_without_a_loop_iteration(plugin: LoadedPlugin) -> None:
    """The channel's wait() reads a reply that is already in the pipe and hands back
    a done future, so the task goes on without a loop iteration; every
    QUICK_MAX-th exchange in a row goes through the loop, so a task that
    requests in a tight loop still lets the others run."""
    n = _aio_transport.QUICK_MAX

    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            await c.start()
            proc = c._flow.slot.proc
            assert proc is not None
            ch = proc.io
            assert ch is not None
            ch.quick = 0
            done_at_once: List[bool] = []
            for i in range(2 * n + 2):
                rid = 10_000 + i
                ch.begin(encode_request(GetCall(reference=f"value:r{i}"), rid), monotonic() + 5.0)
                ready, _, _ = select.select([ch.fd_out], [], [], 5.0)
                assert ready  # the reply is in the pipe before wait() is called
                fut = ch.wait()
                done_at_once.append(fut.done())
                reply = decode_reply(await fut, GetCall, rid)
                assert reply.value.get_secret_value() == f"r{i}"
            assert done_at_once == ([True] * n + [False]) * 2

    run(main())


def test_loop_idle_tells_whether_another_callback_is_ready() -> None:
    """The reply spin's condition: nothing else ready on the loop (asyncio's own
    loops); a loop that does not show its queue never spins."""

    async def main() -> Tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        alone = _aio_transport.loop_idle(loop)
        loop.call_soon(lambda: None)
        return alone, _aio_transport.loop_idle(loop)

    assert run(main()) == (True, False)
    assert _aio_transport.loop_idle(object()) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("busy", [False, True], ids=["idle-loop", "busy-loop"])
def test_a_reply_that_comes_during_the_spin_needs_no_loop_iteration(
    plugin: LoadedPlugin, two_cpus: None, busy: bool
) -> None:
    """With the compiled core on two CPUs, wait() spins for a reply that is not
    there yet (here a 20 ms one, under a spin limit raised to 2 s) and hands
    back a done future, but only while no other callback is ready: with one
    queued, the task waits in the loop instead, and the reply is the same."""
    if plugin_client._impl.IMPLEMENTATION != "cython":
        pytest.skip("the twin never spins")
    from plugin_client import _core

    async def main() -> Tuple[bool, str]:
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            await c.start()
            assert value(await c.get("value:warm")) == "warm"  # (a reader's first wait never spins)
            proc = c._flow.slot.proc
            assert proc is not None and proc.io is not None
            ch = proc.io
            ch.begin(encode_request(GetCall(reference="slow:20"), 10_000), monotonic() + 5.0)
            if busy:
                asyncio.get_running_loop().call_soon(lambda: None)
            fut = ch.wait()
            at_once = fut.done()
            reply = decode_reply(await fut, GetCall, 10_000)
            return at_once, reply.value.get_secret_value()

    old = _core._spin_limit(2.0)
    try:
        at_once, got = run(main())
    finally:
        _core._spin_limit(old)
    assert got == "slow"
    assert at_once is not busy


def test_no_executor_is_used(plugin: LoadedPlugin) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def refuse(*args: Any, **kw: Any) -> Any:
            raise AssertionError("run_in_executor was called")

        loop.run_in_executor = refuse  # type: ignore[method-assign]
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            assert value(await c.get("value:a")) == "a"
            with pytest.raises(errors.PluginCrashed):
                await c.get("crash")
            assert value(await c.get("value:b")) == "b"

    run(main())


def test_random_cancellations_never_misroute_a_reply(plugin: LoadedPlugin, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 requests, most cancelled at random points (queued for the lock, written,
    reply on its way, reply delivered): every reply a caller gets is its own, and
    no process is recycled for a cancellation."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    wrong: List[str] = []
    outcomes = {"ok": 0, "cancelled": 0, "handed_over": 0, "seed": seed}
    hand_over = AsyncPluginClient._finish_in_task

    def counting_finish_in_task(self: AsyncPluginClient, *args: Any) -> None:
        outcomes["handed_over"] += 1
        hand_over(self, *args)

    monkeypatch.setattr(AsyncPluginClient, "_finish_in_task", counting_finish_in_task)

    async def one(c: AsyncPluginClient, i: int) -> None:
        text = f"req-{i}"
        # The plugin answers at once or after up to 2 ms, so cancellations land
        # before, during and after the reply.
        ref = f"echo-after:{rng.choice((0, 0.5, 1, 2))}:{text}"
        mode = rng.random()
        try:
            if mode < 0.4:
                res = await asyncio.wait_for(c.get(ref), rng.uniform(0.0, 0.0025))
            elif mode < 0.85:
                task = asyncio.ensure_future(c.get(ref))
                for _ in range(rng.randrange(1, 5)):  # cancel after a few loop turns...
                    await asyncio.sleep(0)
                if rng.random() < 0.5:  # ...or a little time
                    await asyncio.sleep(rng.uniform(0.0, 0.002))
                task.cancel()
                res = await task
            else:
                res = await c.get(ref)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            outcomes["cancelled"] += 1
            return
        outcomes["ok"] += 1
        if value(res) != text:
            wrong.append(f"{text} got {value(res)}")

    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            i = 0
            while i < 1000:  # waves of 1 to 4 concurrent callers
                n = min(rng.randint(1, 4), 1000 - i)
                await asyncio.gather(*(one(c, k) for k in range(i, i + n)))
                i += n
            # Afterwards, every caller still gets its own reply.
            got = await asyncio.gather(*(c.get(f"value:after-{k}") for k in range(200)))
            assert [value(r) for r in got] == [f"after-{k}" for k in range(200)]
            h = c.health()
            # Replies of cancelled requests were read and dropped: one process throughout.
            assert h.spawn_count == 1 and h.crashes_in_window == 0, h
            assert not aio._FINISHING

    run(main())
    assert wrong == []
    assert outcomes["cancelled"] > 300 and outcomes["ok"] > 100, outcomes
    assert outcomes["handed_over"] > 50, outcomes  # many cancellations did land in flight (~120 typical)


def test_cancelled_just_as_the_reply_arrives(plugin: LoadedPlugin, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reply reaches the caller's future, then the cancellation lands before the
    caller resumes: the reply is dropped, not left for the next caller."""
    settle = _aio_transport.Channel._settle
    victim: List["asyncio.Task[Any]"] = []

    def settle_then_cancel(self: Any, frame: Any, error: Any) -> None:
        settle(self, frame, error)
        if victim:
            victim.pop().cancel()

    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            await c.get("value:warm")
            monkeypatch.setattr(_aio_transport.Channel, "_settle", settle_then_cancel)
            task = asyncio.ensure_future(c.get("value:dropped"))
            victim.append(task)
            with pytest.raises(asyncio.CancelledError):
                await task
            assert value(await c.get("value:mine")) == "mine"
            assert c.health().spawn_count == 1

    run(main())


def test_cancelled_during_spawn_still_inits_once_and_sends_nothing(plugin: LoadedPlugin) -> None:
    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.put("k", "v"), 0.001)
            assert value(await c.get("value:y")) == "y"
            h = c.health()
            assert h.spawn_count == 1 and h.crashes_in_window == 0 and h.plugin_version == "echo-1.0"
            # The init finished, but the cancelled put was never written.
            assert (await c.delete("k")).existed is False

    run(main())


def test_cancelled_hung_request_is_recycled_at_its_deadline(plugin: LoadedPlugin) -> None:
    policy = LifetimePolicy(request_timeout=0.3, shutdown_grace=1.0, exit_wait=0.2)

    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=policy) as c:
            await c.get("value:warm")
            pid = c.health().pid
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.get("hang"), 0.05)
            t0 = time.monotonic()
            assert value(await c.get("value:next")) == "next"  # waits for the deadline
            assert 0.15 < time.monotonic() - t0 < 2.0
            h = c.health()
            assert h.pid != pid and h.crashes_in_window == 1
            assert h.last_exit is not None and h.last_exit.stage is ExitStage.KILLED_AFTER_ERROR

    run(main())


def test_cancelled_big_write_is_finished_before_the_next_request(plugin: LoadedPlugin) -> None:
    big = "x" * 2_000_000  # far beyond a pipe's 64 KiB: written from a writer callback

    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            assert (await c.put("k", big)).replaced is False
            task = asyncio.ensure_future(c.put("k", big))
            await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert value(await c.get("value:after")) == "after"
            assert (await c.delete("k")).existed is True
            assert c.health().spawn_count == 1

    run(main())


def test_cancelled_shutdown_still_ends_the_process(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path / "p", "stubborn", python_script(STUBBORN))
    policy = LifetimePolicy(exit_wait=0.1, shutdown_grace=0.3)

    async def main() -> int:
        c = AsyncPluginClient(plugin, policy=policy)
        await c.get("x")
        pid = c.health().pid
        assert pid is not None
        task = asyncio.ensure_future(c.shutdown())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while aio._FINISHING:
            await asyncio.sleep(0.01)
        h = c.health()
        assert h.last_exit is not None and h.last_exit.stage is ExitStage.SIGKILL
        with pytest.raises(errors.ClientClosed):
            await c.get("x")
        return pid

    pid = run(main())
    assert wait_until(lambda: is_dead(pid), 3.0)


def test_loop_torn_down_under_a_finishing_flow_kills_the_process(plugin: LoadedPlugin) -> None:
    """``asyncio.run`` cancels the task finishing a cancelled request: the process is
    killed on the spot rather than left with an unread reply."""

    async def main(c: AsyncPluginClient) -> int:
        await c.get("value:warm")
        pid = c.health().pid
        assert pid is not None
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(c.get("hang"), 0.05)
        assert aio._FINISHING
        return pid

    c = AsyncPluginClient(plugin, policy=FAST)
    pid = run(main(c))
    assert is_dead(pid)
    h = c.health()
    assert h.state is PluginState.IDLE and h.pid is None and h.crashes_in_window == 0

    async def again() -> str:
        return value(await c.get("value:again"))

    assert run(again()) == "again"  # a new loop, a fresh process
    run(c.shutdown())


def test_loop_keeps_ticking_during_a_hung_request_and_a_stubborn_shutdown(tmp_path: Path) -> None:
    hung = make_plugin(tmp_path / "a")
    stubborn = make_plugin(tmp_path / "b", "stubborn", python_script(STUBBORN))

    async def main() -> None:
        c = AsyncPluginClient(hung, policy=LifetimePolicy(request_timeout=0.5, shutdown_grace=1.0, exit_wait=0.2))
        await c.get("value:warm")
        ticker = Ticker()
        ticker.start()
        t0 = time.monotonic()
        with pytest.raises(errors.RequestTimeout):
            await c.get("hang")
        elapsed = time.monotonic() - t0
        await ticker.stop()
        assert 0.45 < elapsed < 1.5
        assert max(ticker.gaps) < 0.05, max(ticker.gaps)
        assert len(ticker.gaps) > 0.5 * elapsed / 0.0015
        await c.shutdown()

        s = AsyncPluginClient(stubborn, policy=LifetimePolicy(exit_wait=0.2, shutdown_grace=0.5))
        await s.get("x")
        pid = s.health().pid
        ticker = Ticker()
        ticker.start()
        t0 = time.monotonic()
        await s.shutdown()
        elapsed = time.monotonic() - t0
        await ticker.stop()
        h = s.health()
        assert h.last_exit is not None and h.last_exit.stage is ExitStage.SIGKILL
        assert pid is not None and is_dead(pid)
        assert 0.7 <= elapsed < 1.0  # exit_wait + grace + a few ms: pidfd, not sleep-polling
        assert max(ticker.gaps) < 0.05, max(ticker.gaps)
        assert len(ticker.gaps) > 0.5 * elapsed / 0.0015

    run(main())


def test_health_is_immediate_during_a_hung_request(plugin: LoadedPlugin) -> None:
    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=LifetimePolicy(request_timeout=0.5, shutdown_grace=1.0)) as c:
            await c.get("value:warm")
            task = asyncio.ensure_future(c.get("hang"))
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            h = c.health()
            assert time.perf_counter() - t0 < 0.05
            assert h.state is PluginState.RUNNING
            with pytest.raises(errors.RequestTimeout):
                await task

    run(main())


def test_dropped_client_is_finalized_and_its_fds_leave_the_loop(plugin: LoadedPlugin) -> None:
    async def main() -> None:
        c = AsyncPluginClient(plugin, policy=FAST)
        await c.get("value:warm")
        pid = c.health().pid
        assert pid is not None
        del c
        gc.collect()
        assert is_dead(pid) or wait_until(lambda: is_dead(pid), 3.0)
        # The freed fd numbers come back for the next process: stale loop
        # registrations would make these fail.
        for _ in range(3):
            async with AsyncPluginClient(plugin, policy=FAST) as d:
                assert value(await d.get("value:fresh")) == "fresh"

    run(main())


def test_client_moves_to_a_new_loop_after_the_old_one_closed(plugin: LoadedPlugin) -> None:
    c = AsyncPluginClient(plugin, policy=FAST)

    async def use(ref: str) -> Tuple[str, Optional[int]]:
        return value(await c.get(ref)), c.health().pid

    first = run(use("value:one"))
    second = run(use("value:two"))
    assert first[0] == "one" and second[0] == "two"
    assert first[1] == second[1]  # the same process, now read by the second loop
    run(c.shutdown())


def test_client_refuses_a_second_running_loop(plugin: LoadedPlugin) -> None:
    c = AsyncPluginClient(plugin, policy=FAST)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(c.get("value:a"))

        async def other() -> None:
            with pytest.raises(RuntimeError, match="another event loop"):
                await c.get("value:b")

        run(other())
        loop.run_until_complete(c.shutdown())
    finally:
        loop.close()


def test_timeout_uses_the_request_deadline_after_a_longer_init_deadline(plugin: LoadedPlugin) -> None:
    # init arms the process's timer at start_timeout; a shorter request deadline must move it.
    policy = LifetimePolicy(start_timeout=20.0, request_timeout=0.3, shutdown_grace=1.0)

    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=policy) as c:
            await c.get("value:warm")
            t0 = time.monotonic()
            with pytest.raises(errors.RequestTimeout):
                await c.get("hang")
            assert 0.25 < time.monotonic() - t0 < 1.5

    run(main())


def test_lock_timeout_when_a_request_holds_the_client_too_long(
    plugin: LoadedPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=LifetimePolicy(request_timeout=1.0, shutdown_grace=1.0)) as c:
            await c.get("value:warm")
            monkeypatch.setattr(c, "_lock_timeout", 0.1)
            slow = asyncio.ensure_future(c.get("slow:500"))
            await asyncio.sleep(0.02)
            with pytest.raises(errors.RequestTimeout, match="held the client"):
                await c.get("value:x")
            assert value(await slow) == "slow"

    run(main())


def test_async_context_manager_and_repr(plugin: LoadedPlugin) -> None:
    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            assert "AsyncPluginClient 'echo'" in repr(c)
            init = await c.start()
            assert init.plugin_version == "echo-1.0"
            assert (await c.is_available()).status.value == "available"
        with pytest.raises(errors.ClientClosed, match="AsyncPluginClient"):
            await c.get("x")
        await c.shutdown()  # idempotent

    run(main())


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
def test_works_on_uvloop(plugin: LoadedPlugin, tmp_path: Path) -> None:
    import uvloop

    stubborn = make_plugin(tmp_path / "b", "stubborn", python_script(STUBBORN))

    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=LifetimePolicy(request_timeout=0.3, shutdown_grace=1.0)) as c:
            got = await asyncio.gather(*(c.get(f"value:{i}") for i in range(500)))
            assert [value(r) for r in got] == [str(i) for i in range(500)]
            with pytest.raises(errors.RequestTimeout):
                await c.get("hang")
            for i in range(100):
                try:
                    r = await asyncio.wait_for(c.get(f"value:c{i}"), random.uniform(0, 0.001))
                except asyncio.TimeoutError:
                    continue
                assert value(r) == f"c{i}"
            assert value(await c.get("value:last")) == "last"
            assert c.health().crashes_in_window == 1
        s = AsyncPluginClient(stubborn, policy=LifetimePolicy(exit_wait=0.1, shutdown_grace=0.2))
        await s.get("x")
        t0 = time.monotonic()
        await s.shutdown()
        assert time.monotonic() - t0 < 1.0
        assert s.health().last_exit.stage is ExitStage.SIGKILL  # type: ignore[union-attr]

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.mark.parametrize("helper", ["acquire_within", "acquire_within_task"])
def test_timed_lock_acquire_never_leaks_the_lock(helper: str) -> None:
    acquire_within: Callable[[asyncio.Lock, float], Awaitable[None]] = getattr(_aio_transport, helper)

    async def main() -> None:
        lock = asyncio.Lock()
        await lock.acquire()
        with pytest.raises(asyncio.TimeoutError):
            await acquire_within(lock, 0.01)
        # Released just as the waiter times out, many times: the lock ends up free.
        for i in range(200):
            loop = asyncio.get_running_loop()
            loop.call_later(0.001 + (i % 7) * 0.0001, lock.release)
            try:
                await acquire_within(lock, 0.001 + (i % 5) * 0.0001)
            except asyncio.TimeoutError:
                await asyncio.sleep(0.002)
                assert not lock.locked()
                await lock.acquire()
            assert lock.locked()
        lock.release()
        # An outer cancellation while queued does not take the lock either.
        await lock.acquire()
        waiter = asyncio.ensure_future(acquire_within(lock, 5.0))
        await asyncio.sleep(0.001)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        lock.release()
        await asyncio.sleep(0.001)
        assert not lock.locked()

    run(main())


def test_epipe_with_sigpipe_restored_is_a_crash_not_a_dead_host(tmp_path: Path) -> None:
    body = (
        "import sys, json, os, time\n"
        "r = json.loads(sys.stdin.readline())\n"
        "print(json.dumps({'jsonrpc': '2.0', 'id': r['id'], 'result': {'source_name': r['params']['source_name'],"
        " 'capabilities_bits': 1, 'plugin_version': '1'}}), flush=True)\n"
        "os.close(0)\n"
        "time.sleep(3600)\n"
    )
    plugin = make_plugin(tmp_path / "p", "closer", python_script(body))

    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            await c.start()
            await asyncio.sleep(0.05)  # let it close its stdin
            with pytest.raises(errors.PluginCrashed):
                await c.get("x")
            assert c.health().crashes_in_window == 1

    old = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        run(main())
    finally:
        signal.signal(signal.SIGPIPE, old)
    assert signal.SIGPIPE not in signal.sigpending()


def test_exit_wait_without_a_pidfd_polls_with_a_short_backoff() -> None:
    from plugin_client._impl import spawn

    class NoPidfd:
        """A child as a kernel without pidfds shows it."""

        def __init__(self, child: Any) -> None:
            self._child = child
            self.pidfd = -1

        def wait(self, timeout: Optional[float] = None, *, reap: bool = True) -> Optional[int]:
            return self._child.wait(timeout, reap=reap)  # type: ignore[no-any-return]

    child = spawn([b"/bin/sh", b"-c", b"sleep 0.2; exit 3"], {})
    try:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            ticker = Ticker()
            ticker.start()
            assert await _aio_transport.ExitWait(loop, NoPidfd(child), 0.05).wait() is None  # type: ignore[arg-type]
            t0 = time.monotonic()
            rc = await _aio_transport.ExitWait(loop, NoPidfd(child), 5.0).wait()  # type: ignore[arg-type]
            assert rc == 3 and time.monotonic() - t0 < 0.5
            await ticker.stop()
            assert max(ticker.gaps) < 0.05

        run(main())
    finally:
        child.kill()
        child.wait(5)
        child.close()


EARLY = (
    "import json, os, re, sys\n"
    "buf = b''\n"
    "def fill(cond):\n"
    "    global buf\n"
    "    while not cond():\n"
    "        chunk = os.read(0, 65536)\n"
    "        if not chunk:\n"
    "            sys.exit(0)\n"
    "        buf += chunk\n"
    "def send(obj):\n"
    "    os.write(1, (json.dumps(obj) + '\\n').encode())\n"
    "while True:\n"
    "    fill(lambda: len(buf) >= 200 or b'\\n' in buf)\n"
    "    rid = int(re.search(rb'\"id\":\\s*(\\d+)', buf[:200]).group(1))\n"
    "    method = re.search(rb'\"method\":\\s*\"([^\"]+)\"', buf[:200]).group(1).decode()\n"
    "    if method.endswith('put'):\n"
    "        send({'jsonrpc': '2.0', 'id': rid, 'result': {'replaced': False}})  # before the rest\n"
    "    fill(lambda: b'\\n' in buf)\n"
    "    line, _, buf = buf.partition(b'\\n')\n"
    "    req = json.loads(line)\n"
    "    if method.endswith('init'):\n"
    "        send({'jsonrpc': '2.0', 'id': rid, 'result': {'source_name': req['params']['source_name'],"
    " 'capabilities_bits': 511, 'plugin_version': '1'}})\n"
    "    elif method.endswith('get'):\n"
    "        send({'jsonrpc': '2.0', 'id': rid, 'result': {'value': req['params']['reference']}})\n"
)


def test_reply_before_the_whole_request_was_written(tmp_path: Path) -> None:
    """A plugin may answer before it read all of a long request: the rest of the
    line is still written before the next request, as by the blocking client."""
    plugin = make_plugin(tmp_path / "p", "early", python_script(EARLY))

    async def main() -> None:
        async with AsyncPluginClient(plugin, policy=FAST) as c:
            for i in range(3):
                assert (await c.put("k", "x" * 1_000_000)).replaced is False
                assert value(await c.get(f"after-{i}")) == f"after-{i}"
            assert c.health().spawn_count == 1 and c.health().crashes_in_window == 0

    run(main())


def test_crash_while_descendants_hold_stdout_is_prompt(c_plugins: Any, tmp_path: Path) -> None:
    """No EOF comes while the plugin's children keep its stdout: the pidfd the loop
    watches settles the request as a crash at once, and the children die with the group."""
    hostile = c_plugin(c_plugins, tmp_path / "hostile")

    async def main() -> None:
        async with AsyncPluginClient(hostile, policy=FAST) as c:
            kids = [int(p) for p in value(await c.get("term-fork:2")).split(",")]
            try:
                t0 = time.monotonic()
                with pytest.raises(errors.PluginCrashed, match="exited while answering"):
                    await c.get("crash")
                assert time.monotonic() - t0 < FAST.request_timeout / 2
                assert all(wait_until(lambda k=k: is_dead(k), 2.0) for k in kids)
                assert value(await c.get("value:after")) == "after"
            finally:
                for k in kids:
                    try:
                        os.kill(k, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    run(main())


def test_a_descendant_flooding_stderr_never_stalls_the_loop(c_plugins: Any, tmp_path: Path) -> None:
    """A plugin whose child (in its group, deaf to SIGTERM) floods stderr crashes, and
    then one is shut down: each ends within its bound, the children die with their
    group, and the loop keeps ticking all along (the final drain of a stderr pipe is
    bounded, and the pump's reads happen in its own thread)."""
    hostile = c_plugin(c_plugins, tmp_path / "hostile")
    policy = FAST.model_copy(update={"exit_wait": 0.2, "shutdown_grace": 0.5})
    bound = policy.exit_wait + policy.shutdown_grace + 1.0
    kids: List[int] = []

    async def main() -> Tuple[float, float, float]:
        ticker = Ticker()
        ticker.start()
        c = AsyncPluginClient(hostile, policy=policy)
        try:
            kids.append(int(value(await c.get("flood-child:nl"))))
            await asyncio.sleep(0.1)
            t0 = monotonic()
            with pytest.raises(errors.PluginCrashed, match="exited while answering"):
                await c.get("crash")
            crash = monotonic() - t0
            kids.append(int(value(await c.get("flood-child:block"))))
            await asyncio.sleep(0.1)
            t0 = monotonic()
            await c.shutdown()
            stop = monotonic() - t0
        finally:
            await ticker.stop()
        return crash, stop, max(ticker.gaps)

    try:
        _, (crash, stop, lag) = bounded(lambda: run(main()), 30.0)
        assert crash < policy.request_timeout / 2, crash
        assert stop < bound, stop
        assert lag < _MAX_LAG, lag
        assert all(wait_until(lambda k=k: is_dead(k), 1.0) for k in kids)
        print(f"\nflooding child: crash {crash * 1e3:.1f} ms, shutdown {stop * 1e3:.0f} ms, longest loop gap {lag * 1e3:.1f} ms")
    finally:
        kill_quietly(*kids)

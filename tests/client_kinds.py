"""Runs the sync client's behaviour tests against ``AsyncPluginClient`` too.

``client_kind`` is ``"sync"`` or ``"async"``; ``new_client(...)`` takes
``PluginClient``'s arguments and returns a ``PluginClient`` or, for
``"async"``, a :class:`SyncAdapter`: the same method names over an
``AsyncPluginClient`` whose event loop runs in a background thread, so one
test body checks both clients. A test that is inherently about the sync
client (``os.fork``) pins ``client_kind`` with
``@pytest.mark.parametrize("client_kind", ["sync"])``. Import both fixtures
into a test module to use them.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Callable, Coroutine, List, Optional, TypeVar

import pytest

from plugin_client.aio import AsyncPluginClient
from plugin_client.client import PluginClient
from plugin_client.health import PluginHealth
from plugin_client.protocol import Call, Result

T = TypeVar("T")

KINDS = ["sync", "async"]


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-aio-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        async def drain() -> None:
            # Flows finishing for cancelled callers end within their deadlines.
            from plugin_client import aio

            while aio._FINISHING:
                await asyncio.sleep(0.01)

        self.run(drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class SyncAdapter:
    """``PluginClient``'s API over an ``AsyncPluginClient`` (calls block until done)."""

    def __init__(self, runner: LoopThread, client: AsyncPluginClient) -> None:
        self._runner = runner
        self.aclient = client

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def request(self, call: Call) -> Result:
        return self._run(self.aclient.request(call))

    def is_available(self) -> Any:
        return self._run(self.aclient.is_available())

    def get(self, reference: str) -> Any:
        return self._run(self.aclient.get(reference))

    def list(self) -> Any:
        return self._run(self.aclient.list())

    def validate(self, reference: str) -> Any:
        return self._run(self.aclient.validate(reference))

    def put(self, reference: str, value: Any) -> Any:
        return self._run(self.aclient.put(reference, value))

    def delete(self, reference: str) -> Any:
        return self._run(self.aclient.delete(reference))

    def key_material(self, purpose: str) -> Any:
        return self._run(self.aclient.key_material(purpose))

    def start(self) -> Any:
        return self._run(self.aclient.start())

    def clear_disabled(self) -> None:
        self._run(self.aclient.clear_disabled())

    def shutdown(self) -> None:
        self._run(self.aclient.shutdown())

    close = shutdown

    def health(self) -> PluginHealth:
        return self.aclient.health()

    @property
    def name(self) -> str:
        return self.aclient.name

    def __enter__(self) -> SyncAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


@pytest.fixture(params=KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_client(client_kind: str) -> Iterator[Callable[..., Any]]:
    """A constructor with ``PluginClient``'s signature for the kind under test. Clients
    still alive at teardown are shut down (held weakly: a test may drop one)."""
    runner: Optional[LoopThread] = None
    made: List["weakref.ref[Any]"] = []

    def make(*args: Any, **kw: Any) -> Any:
        nonlocal runner
        c: Any
        if client_kind == "sync":
            c = PluginClient(*args, **kw)
        else:
            if runner is None:
                runner = LoopThread()
            c = SyncAdapter(runner, AsyncPluginClient(*args, **kw))
        made.append(weakref.ref(c))
        return c

    yield make
    for ref in made:
        c = ref()
        if c is not None:
            c.shutdown()
    if runner is not None:
        runner.close()

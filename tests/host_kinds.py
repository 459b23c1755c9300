"""Runs the host tests against ``PluginHost`` and ``AsyncPluginHost`` with one body.

``new_host(...)`` takes ``PluginHost``'s arguments and returns a ``PluginHost`` or,
for ``"async"``, a :class:`HostAdapter`: the same members over an
``AsyncPluginHost`` whose coroutines run on an event loop in a background thread
(:class:`client_kinds.LoopThread`), so a test may call it from several threads at
once, as it would a ``PluginHost``. Hosts left at teardown are shut down. Import
``host_kind`` and ``new_host`` into a test module to use them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any, Callable, List, Optional

import pytest

from client_kinds import LoopThread
from plugin_client import AsyncPluginHost, PluginHost


class HostAdapter:
    """``PluginHost``'s API over an ``AsyncPluginHost``: its coroutines block until done."""

    def __init__(self, runner: LoopThread, host: AsyncPluginHost) -> None:
        self._runner = runner
        self.ahost = host

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.ahost, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **kw: self._runner.run(attr(*a, **kw))
        return attr

    def __getitem__(self, name: str) -> Any:
        return self.ahost[name]

    def __contains__(self, name: object) -> bool:
        return name in self.ahost

    def __iter__(self) -> Iterator[str]:
        return iter(self.ahost)

    def __len__(self) -> int:
        return len(self.ahost)

    def __enter__(self) -> HostAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.run(self.ahost.shutdown())


@pytest.fixture(params=["sync", "async"])
def host_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_host(host_kind: str) -> Iterator[Callable[..., Any]]:
    runner: Optional[LoopThread] = None
    made: List[Any] = []

    def make(*args: Any, **kw: Any) -> Any:
        nonlocal runner
        if host_kind == "sync":
            host: Any = PluginHost(*args, **kw)
        else:
            if runner is None:
                runner = LoopThread()
            host = HostAdapter(runner, AsyncPluginHost(*args, **kw))
        made.append(host)
        return host

    yield make
    for host in made:
        host.shutdown()
    if runner is not None:
        runner.close()

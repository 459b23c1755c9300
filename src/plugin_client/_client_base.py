"""What the sync and the asyncio client share around their flow: names, health, repr."""

from __future__ import annotations

from typing import Callable, Optional

from ._flow import Flow
from .events import PluginEvent
from .health import PluginHealth
from .manifest import PluginManifest
from .policy import LifetimePolicy

__all__ = ("ClientBase",)


class ClientBase:
    """What the sync and the asyncio client share around their flow: names, health, repr."""

    _flow: Flow

    @property
    def name(self) -> str:
        return self._flow.name

    @property
    def manifest(self) -> PluginManifest:
        return self._flow.manifest

    @property
    def policy(self) -> LifetimePolicy:
        return self._flow.policy

    @property
    def on_event(self) -> Optional[Callable[[PluginEvent], None]]:
        """The callback given as ``on_event=``, or None."""
        return self._flow.notify.callback

    @property
    def request_events(self) -> bool:
        """Whether ``on_event`` also gets a ``request`` event for every request."""
        return self._flow.request_events

    def health(self) -> PluginHealth:
        """A snapshot; never waits behind a request in flight, from any thread."""
        return self._flow.health()

    def __repr__(self) -> str:
        life = self._flow.life
        return f"<{type(self).__name__} {self.name!r} state={life.state.value} pid={life.pid}>"

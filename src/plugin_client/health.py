"""What a host, or ``plugin-client doctor``, can know about one plugin without waiting on it.

``PluginState`` and ``PluginHealth`` are plain data; :mod:`plugin_client.client`
fills them in. ``PluginHealth`` converts to a JSON-ready dict and to JSON text;
its enums print their values. Nothing here holds a secret:
the stderr tail is the plugin's own log, which the plugin chose to write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict

from ._enums import ValueEnum

__all__ = ("PluginState", "ExitStage", "ExitInfo", "PluginHealth")


class PluginState(ValueEnum):
    """``IDLE``: no process (never started, reaped or shut down). ``RUNNING``: a process is up.
    ``RECOVERING``: the last process crashed; the next request starts a fresh one.
    ``DISABLED``: the restart cap was hit; requests fail until ``clear_disabled()``, or,
    with ``LifetimePolicy.disabled_cooldown``, until a probe spawn after the cooldown
    succeeds (``PluginHealth.next_probe``)."""

    IDLE = "idle"
    RUNNING = "running"
    RECOVERING = "recovering"
    DISABLED = "disabled"


class ExitStage(ValueEnum):
    """What ended a process."""

    STDIN_CLOSE = "stdin-close"  # exited on its own after we closed its stdin
    SIGTERM = "sigterm"  # exited after SIGTERM to its group
    SIGKILL = "sigkill"  # did not exit within the grace; killed
    CRASH = "crash"  # exited by itself (mid-request, while idle, or during init)
    KILLED_AFTER_ERROR = "killed-after-error"  # killed by us after a timeout or protocol error


class ExitInfo(BaseModel):
    """How the last process ended."""

    model_config = ConfigDict(frozen=True)

    pid: int
    stage: ExitStage
    returncode: Optional[int]
    signal: Optional[str] = None
    at: datetime


class PluginHealth(BaseModel):
    """A snapshot of one client's plugin. ``to_dict()`` is it as JSON-ready data (to embed
    in a larger document, e.g. a web response); ``to_json()`` is that dict as JSON text,
    what ``doctor --json`` prints.

    ``executable_changed``: why the last spawn was refused because the executable's
    bytes changed on disk after it was verified (not counted as a crash), with what
    to do; None once a spawn goes ahead. ``disabled_cooldown`` and ``next_probe``:
    while disabled under a ``LifetimePolicy.disabled_cooldown``, the current
    cooldown (seconds, doubled by each failed probe) and when (UTC) the next probe
    spawn is allowed (in the past while one is due or under way); None otherwise."""

    model_config = ConfigDict(frozen=True)

    plugin_name: str
    source_name: str
    state: PluginState
    disabled_reason: Optional[str] = None
    crashes_in_window: int
    restart_cap: int
    restart_window: float
    last_used: Optional[datetime] = None
    last_crash: Optional[datetime] = None
    last_error: Optional[str] = None
    pid: Optional[int] = None
    spawn_count: int = 0
    plugin_version: Optional[str] = None
    capabilities: List[str] = []
    capabilities_bits: Optional[int] = None
    last_exit: Optional[ExitInfo] = None
    stderr_tail: List[str] = []
    implementation: str
    executable_changed: Optional[str] = None
    disabled_cooldown: Optional[float] = None
    next_probe: Optional[datetime] = None

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self, *, indent: Optional[int] = None) -> str:
        return self.model_dump_json(indent=indent)

"""``LifetimePolicy``: the knobs of a plugin process's lifetime, validated when built.

Only data and validation live here; :mod:`plugin_client.client` applies it.
"""

from __future__ import annotations

import math
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ("LifetimePolicy",)

#: The default ceiling of a doubling cooldown: 15 minutes.
DEFAULT_DISABLED_COOLDOWN_MAX = 900.0


class LifetimePolicy(BaseModel):
    """How long a plugin may idle, start, answer and linger, and how often it may crash.

    All durations are float seconds and must be > 0. ``idle_timeout`` may be
    ``math.inf`` (never reap). Defaults follow the existing host where it has
    one (idle 60 s, grace 10 s, 3 crashes in 60 s) and are chosen for a
    secrets backend otherwise: starting an interpreter-based plugin and its
    backend client can take seconds, so ``start_timeout`` is 10 s; a single
    secret lookup that takes 30 s is broken, so ``request_timeout`` is 30 s.

    ``disabled_cooldown`` (opt-in) turns the restart cap's permanent disable
    into a circuit breaker: ``None`` (the default) keeps a disabled plugin
    disabled until ``clear_disabled()``; seconds allow one probe spawn that long
    after it was disabled, which enables it again if its start and ``init``
    succeed; each failed probe doubles the wait, up to
    ``disabled_cooldown_max`` (15 minutes by default).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    idle_timeout: float = Field(default=60.0, description="Shut an unused process down after this long.")
    shutdown_grace: float = Field(default=10.0, description="Wait this long after SIGTERM before SIGKILL.")
    restart_window: float = Field(default=60.0, description="The sliding window the crash cap counts in.")
    restart_cap: int = Field(default=3, description="This many crashes within the window disable the plugin.")
    start_timeout: float = Field(default=10.0, description="Spawn plus the init handshake must finish within this.")
    request_timeout: float = Field(default=30.0, description="A request must be answered within this.")
    exit_wait: float = Field(
        default=1.0, description="After closing stdin, wait this long for a cooperative exit before SIGTERM."
    )
    max_frame_bytes: int = Field(default=16 * 1024 * 1024, description="The longest reply line accepted.")
    stderr_lines: int = Field(default=50, description="How many lines of the plugin's stderr health() keeps.")
    disabled_cooldown: Optional[float] = Field(
        default=None,
        description="None: disabled until clear_disabled(). Seconds: one probe spawn is allowed after this long.",
    )
    disabled_cooldown_max: float = Field(
        default=DEFAULT_DISABLED_COOLDOWN_MAX,
        description="Each failed probe doubles the cooldown, up to this.",
    )

    @field_validator(
        "idle_timeout", "shutdown_grace", "restart_window", "start_timeout", "request_timeout", "exit_wait"
    )
    @classmethod
    def _positive_duration(cls, v: float) -> float:
        if math.isnan(v) or v <= 0:
            raise ValueError("must be a number of seconds greater than 0")
        return v

    @field_validator("disabled_cooldown")
    @classmethod
    def _cooldown(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and (math.isnan(v) or v <= 0 or math.isinf(v)):
            raise ValueError(
                "must be None (disabled until clear_disabled()) or a finite number of seconds greater than 0"
            )
        return v

    @field_validator("disabled_cooldown_max")
    @classmethod
    def _cooldown_max(cls, v: float) -> float:
        if math.isnan(v) or v <= 0 or math.isinf(v):
            raise ValueError("must be a finite number of seconds greater than 0")
        return v

    @model_validator(mode="after")
    def _cooldown_within_max(self) -> "LifetimePolicy":
        if self.disabled_cooldown is not None and self.disabled_cooldown_max < self.disabled_cooldown:
            raise ValueError(
                f"disabled_cooldown_max ({self.disabled_cooldown_max:g} s) must be at least "
                f"disabled_cooldown ({self.disabled_cooldown:g} s)"
            )
        return self

    @field_validator("restart_window", "start_timeout", "request_timeout", "shutdown_grace", "exit_wait")
    @classmethod
    def _finite(cls, v: float) -> float:
        if math.isinf(v):
            raise ValueError("must be finite")
        return v

    @field_validator("restart_cap")
    @classmethod
    def _cap(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1 (a cap of 0 would disable the plugin before it starts)")
        return v

    @field_validator("max_frame_bytes")
    @classmethod
    def _frame(cls, v: int) -> int:
        if v < 1024:
            raise ValueError("must be at least 1024 bytes")
        return v

    @field_validator("stderr_lines")
    @classmethod
    def _lines(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be 0 or more")
        return v

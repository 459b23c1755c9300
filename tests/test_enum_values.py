"""The public enums print their values, and ``PluginHealth`` has a JSON-ready dict form."""

from __future__ import annotations

import enum
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

import plugin_client
from plugin_client import health, protocol, sources
from plugin_client.client import PluginClient

from plugin_factory import make_plugin

STR_ENUMS = [
    health.PluginState,
    health.ExitStage,
    protocol.Method,
    protocol.ErrorKind,
    protocol.AvailabilityStatus,
    sources.RouteKind,
]


@pytest.mark.parametrize("cls", STR_ENUMS, ids=lambda c: c.__name__)
def test_str_enums_print_their_value(cls: type) -> None:
    for member in cls:  # type: ignore[attr-defined]
        assert str(member) == member.value
        assert f"{member}" == member.value
        assert f"{member:>20}" == f"{member.value:>20}"
        assert member == member.value  # still a str


def test_capability_prints_its_integer() -> None:
    both = protocol.Capability.READ | protocol.Capability.LIST
    assert str(protocol.Capability.READ) == "1" and f"{both}" == "3" and f"{both:04x}" == "0003"


def test_every_public_enum_is_covered() -> None:
    public = {getattr(plugin_client, n) for n in plugin_client.__all__}
    enums = {v for v in public if isinstance(v, type) and issubclass(v, enum.Enum)}
    assert enums == set(STR_ENUMS) | {protocol.Capability}


def test_health_dict_is_what_to_json_encodes(tmp_path: Path) -> None:
    with PluginClient(make_plugin(tmp_path / "p")) as client:
        client.get("value:x")
        h = client.health()
    as_dict = h.to_dict()
    assert as_dict == json.loads(h.to_json())
    assert as_dict["state"] == "running" and f"{h.state}" == "running"
    json.dumps(as_dict)  # JSON-ready: no datetime, enum or model left
    assert isinstance(as_dict["last_used"], str)


def test_health_dict_holds_nested_exit_info() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    h = health.PluginHealth(
        plugin_name="p", source_name="s", state=health.PluginState.IDLE, crashes_in_window=0,
        restart_cap=3, restart_window=60.0, implementation="python",
        last_exit=health.ExitInfo(pid=7, stage=health.ExitStage.SIGTERM, returncode=0, at=at),
    )
    assert h.to_dict()["last_exit"] == {"pid": 7, "stage": "sigterm", "returncode": 0, "signal": None,
                                        "at": "2026-01-02T03:04:05Z"}

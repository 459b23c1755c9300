"""Shared fixtures: the ``core`` fixture runs a test over both core implementations.

As in propcache/multidict, the compiled parameter carries the ``c_extension``
mark and imports ``plugin_client._core`` directly, so a build that silently
failed fails here loudly. ``--no-c-extensions`` (or
``PLUGIN_CLIENT_NO_EXTENSIONS=1``) deselects it. Tests above the core (client,
protocol, manifests) use whatever the selector picked; CI runs the suite once
per core.
"""

from __future__ import annotations

import importlib
import os
import types
from collections.abc import Iterator

import pytest

_NO_EXT_ENV = os.environ.get("PLUGIN_CLIENT_NO_EXTENSIONS", "") not in ("", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-c-extensions",
        action="store_true",
        default=False,
        help="Do not test the compiled core (the pure-Python twin only).",
    )


def _no_c(config: pytest.Config) -> bool:
    return bool(config.getoption("--no-c-extensions")) or _NO_EXT_ENV


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _no_c(config):
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("c_extension") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("python", id="py"),
        pytest.param("cython", id="c", marks=pytest.mark.c_extension),
    ],
)
def core(request: pytest.FixtureRequest) -> Iterator[types.ModuleType]:
    """The core module under test: ``plugin_client._core_py`` or ``plugin_client._core``."""
    name = "plugin_client._core_py" if request.param == "python" else "plugin_client._core"
    yield importlib.import_module(name)

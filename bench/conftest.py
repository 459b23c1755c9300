"""The ``impl`` fixture for benchmarks: the compiled core and its twin, side by side.

Like the ``core`` fixture of ``tests/conftest.py`` (which pytest does not load
for ``bench/``). The compiled parameter carries the ``c_extension`` mark; it
is skipped, with the reason shown, when ``PLUGIN_CLIENT_NO_EXTENSIONS`` is set
or ``--no-c-extensions`` is given, and when the compiled core is not built:
``tests/`` is where a missing build fails loudly.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import types
from collections.abc import Iterator

import pytest

_NO_EXT_ENV = os.environ.get("PLUGIN_CLIENT_NO_EXTENSIONS", "") not in ("", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    # tests/conftest.py registers the same option when both directories are
    # collected in one run.
    try:
        parser.addoption(
            "--no-c-extensions",
            action="store_true",
            default=False,
            help="Do not benchmark the compiled core.",
        )
    except ValueError:
        pass


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("python", id="py"),
        pytest.param("cython", id="c", marks=pytest.mark.c_extension),
    ],
)
def impl(request: pytest.FixtureRequest) -> Iterator[types.ModuleType]:
    """The core module to benchmark: ``plugin_client._core_py`` or ``plugin_client._core``."""
    if request.param == "python":
        yield importlib.import_module("plugin_client._core_py")
        return
    if _NO_EXT_ENV or request.config.getoption("--no-c-extensions"):
        pytest.skip("compiled core disabled (--no-c-extensions / PLUGIN_CLIENT_NO_EXTENSIONS)")
    if importlib.util.find_spec("plugin_client._core") is None:
        pytest.skip("compiled core not built (python setup.py build_ext --inplace)")
    yield importlib.import_module("plugin_client._core")

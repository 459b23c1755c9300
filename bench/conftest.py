"""Fixtures for the benchmarks: cores, the C plugin and host, placements.

* ``impl``: the compiled core and its twin, side by side. Like the ``core``
  fixture of ``tests/conftest.py`` (which pytest does not load for
  ``bench/``). The compiled parameter carries the ``c_extension`` mark; it is
  skipped, with the reason shown, when ``PLUGIN_CLIENT_NO_EXTENSIONS`` is set
  or ``--no-c-extensions`` is given, and when the compiled core is not built:
  ``tests/`` is where a missing build fails loudly.
* ``client_impl``: ``impl``, which a benchmark passes to its client
  (``PluginClient(..., _core=client_impl)``, a private argument), so one run
  compares the client over both cores.
* ``bench_bin``: ``echo_plugin.c`` and ``c_host.c`` built with ``cc -O2`` into
  a temporary directory, once a session, and the plugin installed twice with
  checksummed manifests: ``cecho`` (exits on stdin EOF) and ``cecho-sigterm``
  (ignores EOF, exits 2 ms after SIGTERM). No ``cc``: those benchmarks skip.
* ``placement``: ``pinned`` (every thread of this process on one CPU; children
  inherit it at spawn, so host and plugin share the core) or ``unpinned``;
  ``rt_placement`` adds ``split`` (host on one CPU, plugin on another).
* ``_bench.tag`` labels a result for ``bench/ratios.py``; ``_bench.c_host`` runs the
  C host, which times itself, and records its median as the result.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Dict

import pytest

from _bench import BENCH, BenchBin, Placement, _set_affinity_all_threads, compiler, install

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


@pytest.fixture
def client_impl(impl: types.ModuleType) -> Iterator[types.ModuleType]:
    """``impl``, for the clients of the test to pass as ``_core=``: their processes use it."""
    yield impl


# --- the C plugin and host ------------------------------------------------------

@pytest.fixture(scope="session")
def bench_bin(tmp_path_factory: pytest.TempPathFactory) -> BenchBin:
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (cc) to build bench/echo_plugin.c and bench/c_host.c")
    out = tmp_path_factory.mktemp("bench-bin")
    os.chmod(out, 0o755)
    for src in ("echo_plugin", "c_host"):
        subprocess.run([cc, "-O2", "-o", str(out / src), str(BENCH / f"{src}.c")], check=True, capture_output=True)
    plugins = out / "plugins"
    plugins.mkdir(mode=0o755)
    os.chmod(plugins, 0o755)
    cecho = install(plugins, "cecho", out / "echo_plugin")
    # The program name selects the SIGTERM mode: PluginClient passes no arguments.
    sigterm = install(plugins, "cecho-sigterm", out / "echo_plugin")
    return BenchBin(
        c_host=out / "c_host",
        echo=Path(cecho.executable.path),
        echo_sigterm=Path(sigterm.executable.path),
        plugins=cecho,
        plugins_sigterm=sigterm,
        built_at=time.monotonic(),
    )


# --- placement ---------------------------------------------------------------------


def _place(name: str) -> Iterator[Placement]:
    if name == "unpinned":
        yield Placement("unpinned")
        return
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity here")
    cpus = sorted(os.sched_getaffinity(0))
    if name == "split" and len(cpus) < 2:
        pytest.skip("the split placement needs two CPUs")
    old = _set_affinity_all_threads({cpus[0]})
    try:
        yield Placement(name, host_cpu=cpus[0], plugin_cpu=cpus[1] if name == "split" else None)
    finally:
        for tid, mask in old.items():
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:
                pass


@pytest.fixture(params=["pinned", "unpinned"])
def placement(request: pytest.FixtureRequest) -> Iterator[Placement]:
    """``pinned``: this process (and every child spawned meanwhile) on one CPU;
    ``unpinned``: wherever the scheduler puts them."""
    yield from _place(request.param)


@pytest.fixture(params=["pinned", "unpinned", "split"])
def rt_placement(request: pytest.FixtureRequest) -> Iterator[Placement]:
    """``placement``, plus ``split``: this process on one CPU, the plugin on
    another (spawn inside ``with rt_placement.spawning():``): the case the core's
    adaptive spin is for."""
    yield from _place(request.param)

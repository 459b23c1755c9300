"""A host made with ``sources=``: what routing a secret path costs over a request by name.

``host_get_secret`` is a warm ``get`` of one C echo plugin (``echo_plugin.c``) that a
``sources.toml`` names as source ``team`` (``[[route]] prefix = "team/"``):

* ``host.get``: ``PluginHost.get("team", path)``, the request by source name (no routing);
* ``host.get_secret``: ``PluginHost.get_secret(path)``: the file's decision, the router
  over the host's sources, the ``SecretSource`` mapping, then the same request;
* ``router.get_secret``: ``SourceRouter.open(...)``'s ``get_secret``, a router that owns its
  client (no host, no in-flight count), for comparison.

Nothing here asserts a time; compare the medians.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from _bench import BenchBin, install, tag
from plugin_client import LifetimePolicy, PluginHost, SourceRouter
from plugin_client.manifest import RACY_WINDOW_NS

POLICY = LifetimePolicy(idle_timeout=3600.0)
PATH = "team/db/password"
FILE = '[[source]]\nname = "team"\ntype = "echo"\n\n[[route]]\nprefix = "team/"\nsource = "team"\n'


@pytest.fixture(scope="module")
def sources_dir(bench_bin: BenchBin, tmp_path_factory: pytest.TempPathFactory,
                request: pytest.FixtureRequest) -> Iterator[Tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("host-sources-bench")
    plugins = base / "plugins"
    plugins.mkdir(mode=0o755)
    install(plugins, "echo", bench_bin.echo)
    sources = base / "sources.toml"
    sources.write_text(FILE)
    if not request.config.getoption("benchmark_disable"):
        time.sleep(RACY_WINDOW_NS / 1e9 + 0.1)  # past the racy window: no spawn re-hashes
    yield plugins, sources


@pytest.mark.parametrize("variant", ["host.get", "host.get_secret"])
def test_host_get_secret(benchmark: BenchmarkFixture, sources_dir: Tuple[Path, Path], variant: str) -> None:
    tag(benchmark, "host_get_secret", variant, "unpinned")
    with PluginHost(sources_dir[0], sources=sources_dir[1], policy=POLICY) as host:
        call = (lambda: host.get("team", PATH).value) if variant == "host.get" else (
            lambda: host.get_secret(PATH).value  # type: ignore[union-attr]
        )
        call()
        value = benchmark(call)
        assert value.get_secret_value() == PATH


def test_router_get_secret(benchmark: BenchmarkFixture, sources_dir: Tuple[Path, Path]) -> None:
    tag(benchmark, "host_get_secret", "router.get_secret", "unpinned")
    with SourceRouter.open(sources_dir[1], sources_dir[0], policy=POLICY) as router:
        call = lambda: router.get_secret(PATH).value  # type: ignore[union-attr]  # noqa: E731
        call()
        value = benchmark(call)
        assert value.get_secret_value() == PATH

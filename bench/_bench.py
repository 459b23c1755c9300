"""Helpers of the benchmarks (the fixtures are in ``conftest.py``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

BENCH = Path(__file__).parent

# A fresh file is "racy" for manifest.RACY_WINDOW_NS (3 s): every spawn re-hashes
# it until then. Cold-start benchmarks wait that out so they time the steady state.
_RACY_S = 3.2


def _set_affinity_all_threads(cpus: Set[int]) -> Dict[int, Set[int]]:
    """Set every thread's affinity (the stderr pump's too); return the old masks."""
    old: Dict[int, Set[int]] = {}
    for tid in (int(t) for t in os.listdir("/proc/self/task")):
        try:
            old[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
        except OSError:  # the thread ended meanwhile
            pass
    return old


class Placement(str):
    """A placement's name, and where host and plugin run: ``pinned`` (one CPU
    for both), ``unpinned`` (the scheduler's choice) or ``split`` (host threads on
    ``host_cpu``, plugins spawned inside :meth:`spawning` on ``plugin_cpu``)."""

    host_cpu: Optional[int]
    plugin_cpu: Optional[int]

    def __new__(cls, name: str, host_cpu: Optional[int] = None, plugin_cpu: Optional[int] = None) -> "Placement":
        self = super().__new__(cls, name)
        self.host_cpu = host_cpu
        self.plugin_cpu = plugin_cpu
        return self

    @contextmanager
    def spawning(self) -> Iterator[None]:
        """Children spawned by this thread inside the block run on ``plugin_cpu``."""
        if self.plugin_cpu is None:
            yield
            return
        os.sched_setaffinity(0, {self.plugin_cpu})
        try:
            yield
        finally:
            # Back to the host CPU, for every thread (one may have started meanwhile).
            assert self.host_cpu is not None
            _set_affinity_all_threads({self.host_cpu})

    def env(self) -> Dict[str, str]:
        """The C host's environment for this placement."""
        env = dict(os.environ)
        if self.plugin_cpu is not None:
            env["C_HOST_PLUGIN_CPU"] = str(self.plugin_cpu)
        return env


@dataclass
class BenchBin:
    c_host: Path
    echo: Path  # the plugin binary, as spawned by the C host and Popen baselines
    echo_sigterm: Path
    plugins: Any  # LoadedPlugin for "cecho"
    plugins_sigterm: Any  # LoadedPlugin for "cecho-sigterm"
    built_at: float

    def wait_not_racy(self) -> None:
        left = self.built_at + _RACY_S - time.monotonic()
        if left > 0:
            time.sleep(left)
        self.plugins.executable.check_unchanged()
        self.plugins_sigterm.executable.check_unchanged()


def compiler() -> Optional[str]:
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def install(directory: Path, name: str, binary: Path) -> Any:
    from plugin_client.manifest import load_plugin

    exe = directory / f"devboy-source-{name}"
    shutil.copyfile(binary, exe)
    os.chmod(exe, 0o755)
    digest = hashlib.sha256(exe.read_bytes()).hexdigest()
    manifest = directory / f"devboy-source-{name}.toml"
    manifest.write_text(
        f'name = "{name}"\nversion = "1.0.0"\nexecutable = "{exe.name}"\n'
        f'allowed_env_vars = []\nchecksum_sha256 = "{digest}"\n'
    )
    return load_plugin(manifest)


# --- labelling and the C host --------------------------------------------------------


def tag(benchmark: Any, case: str, variant: str, placement: str, **extra: Any) -> None:
    """Label a result for ``bench/ratios.py``: which case, which contender, which placement."""
    benchmark.group = f"{case} {placement}"
    benchmark.extra_info.update(case=case, variant=variant, placement=placement, **extra)


def _run_c_host(bench_bin: BenchBin, mode: str, plugin: Path, count: int, env: Dict[str, str]) -> Dict[str, Any]:
    out = subprocess.run(
        [str(bench_bin.c_host), mode, str(plugin), str(count)], check=True, capture_output=True, text=True, env=env,
    ).stdout
    report: Dict[str, Any] = json.loads(out)
    return report


# Baseline samples (ns) taken between the rounds of our own benchmark of the same
# case and placement (see CHostChunks and Between), by (mode or case, placement).
_INTERLEAVED: Dict[Tuple[str, str], List[int]] = {}


def _summary(samples_ns: List[int]) -> Dict[str, Any]:
    ordered = sorted(samples_ns)
    return dict(
        n=len(ordered), samples_ns=list(samples_ns), median_ns=statistics.median(ordered),
        min_ns=ordered[0], p90_ns=ordered[(len(ordered) * 9) // 10],
    )


def _report(benchmark: Any, report: Dict[str, Any], timed_by: str, interleaved: bool) -> None:
    """Report externally timed samples as this benchmark's result (``ratios.py``
    prefers ``extra_info["median_s"]``)."""
    benchmark.extra_info.update(
        median_s=report["median_ns"] / 1e9,
        min_s=report["min_ns"] / 1e9,
        p90_s=report["p90_ns"] / 1e9,
        samples=report["n"],
        timed_by=timed_by,
        interleaved=interleaved,
    )
    _replace_samples(benchmark, [ns / 1e9 for ns in report["samples_ns"]])


class Between:
    """Times a Python baseline once between every two rounds of one of our
    benchmarks (call :meth:`tick` from its untimed setup): :class:`CHostChunks`
    for a baseline that runs in this process. Its benchmark then calls
    :func:`report_between` and reports those samples instead of running alone."""

    def __init__(self, benchmark: Any, case: str, placement: str, baseline: Callable[[], Any]) -> None:
        self.enabled = not benchmark.disabled
        self.key = (case, str(placement))
        self.baseline = baseline

    def tick(self) -> None:
        if self.enabled:
            t0 = time.perf_counter_ns()
            result = self.baseline()
            t1 = time.perf_counter_ns()
            # Freed after the timing, as pytest-benchmark frees our round's result
            # (a 10,000-entry list takes ~2 ms to free: timed on one side only,
            # it made the ratio look better than it is).
            del result
            _INTERLEAVED.setdefault(self.key, []).append(t1 - t0)


def report_between(benchmark: Any, case: str, placement: str) -> bool:
    """Report the samples :class:`Between` took for ``case`` under ``placement``
    as this benchmark's result; False (nothing reported) if there are none."""
    pooled = _INTERLEAVED.get((case, str(placement))) if not benchmark.disabled else None
    if not pooled:
        return False
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    _report(benchmark, _summary(pooled), "perf_counter_ns, between our rounds", True)
    return True


class CHostChunks:
    """Runs the C host in short chunks between the rounds of one of our benchmarks
    (call :meth:`tick` from its untimed setup), so that the baseline is measured on
    the same machine at the same moments: this VM's speed drifts by tens of percent
    within a run, and a baseline taken a minute apart gave ratios on either side of
    a target. :func:`c_host` reports the pooled chunks, when there are any, instead
    of running on its own. The first iteration of each chunk (a freshly started
    C host) is dropped, as our benchmarks drop their warm-up rounds."""

    def __init__(self, benchmark: Any, bench_bin: BenchBin, mode: str, plugin: Path, placement: str,
                 every: int = 10, size: int = 10) -> None:
        self.enabled = not benchmark.disabled
        self.bench_bin, self.mode, self.plugin = bench_bin, mode, plugin
        self.key = (mode, str(placement))
        self.every, self.size = every, size
        self.rounds = 0

    def tick(self) -> None:
        self.rounds += 1
        if self.enabled and self.rounds % self.every == 0:
            report = _run_c_host(self.bench_bin, self.mode, self.plugin, self.size + 1, dict(os.environ))
            _INTERLEAVED.setdefault(self.key, []).extend(report["samples_ns"][1:])


def c_host(benchmark: Any, bench_bin: BenchBin, mode: str, plugin: Path, n: int, n_disabled: int = 3,
           placement: Optional[Placement] = None, spin: bool = False, interleaved_as: str = "") -> Dict[str, Any]:
    """Run ``c_host MODE PLUGIN N`` once, in the current placement (it inherits
    the affinity). The C host times each of its N iterations itself; those
    samples replace pytest-benchmark's timing of the whole run, so the table
    and the JSON show the C host's own distribution. Its median is also kept
    in ``extra_info["median_s"]``, which ``ratios.py`` prefers.

    ``interleaved_as``: the placement under which :class:`CHostChunks` may
    have run this mode already, between our rounds; those samples are then
    reported instead (``extra_info["interleaved"]``), and nothing is run."""
    count = n_disabled if benchmark.disabled else n
    report: Dict[str, Any] = {}
    env = placement.env() if placement is not None else dict(os.environ)
    if spin:
        env["C_HOST_SPIN"] = "1"
    pooled = _INTERLEAVED.get((mode, interleaved_as)) if interleaved_as and not benchmark.disabled else None

    def run() -> None:
        report.update(_summary(pooled) if pooled else _run_c_host(bench_bin, mode, plugin, count, env))

    benchmark.pedantic(run, rounds=1, iterations=1)
    _report(benchmark, report, "c_host", bool(pooled))
    return report


def _replace_samples(benchmark: Any, samples: List[float]) -> None:
    """Swap the one-round timing for externally measured samples (pytest-benchmark 4/5 internals)."""
    try:
        from pytest_benchmark.stats import Stats

        meta = benchmark.stats
        stats = Stats()
        for s in samples:
            stats.update(s)
        if meta is not None:
            meta.stats = stats
    except (ImportError, AttributeError):  # pragma: no cover - other versions: extra_info still has it
        pass

"""Print the ratio table of a benchmark run against the targets of issue 7.

    python -m pytest bench --benchmark-only --benchmark-json=bench.json
    python bench/ratios.py bench.json [--markdown]

Reads pytest-benchmark's JSON. Every result carries ``extra_info`` set by
``_bench.tag``: ``case`` (warm_get, cold_start, ...), ``variant`` (ours-c,
c-host, naive, ...) and ``placement`` (pinned, unpinned, n/a). A result timed
by the C host itself has ``extra_info["median_s"]``, used instead of
pytest-benchmark's median. All ratios are of medians from the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

Medians = Dict[Tuple[str, str, str], float]  # (case, placement, variant) -> seconds


def load(path: str) -> Tuple[Medians, Dict[Tuple[str, str, str], Dict[str, Any]], Dict[str, Any]]:
    with open(path) as f:
        data = json.load(f)
    medians: Medians = {}
    extras: Dict[Tuple[str, str, str], Dict[str, Any]] = {}
    for b in data.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if "case" not in info:
            continue
        key = (info["case"], info["placement"], info["variant"])
        medians[key] = float(info.get("median_s", b["stats"]["median"]))
        extras[key] = info
    return medians, extras, data.get("machine_info", {})


def fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} µs"


# (case, our variant, baseline variant, how the target reads, check(ratio) -> met?)
# ratio = ours / baseline for times (lower is better). A target whose text ends
# in "(pinned)" is judged for the pinned placement only (the wording);
# the other placements are shown for information.
Target = Tuple[str, str, str, str, Callable[[float], bool]]
TARGETS: List[Target] = [
    ("warm_get", "ours-c", "c-host", "<= 1.8x the C-host limit (pinned)", lambda r: r <= 1.8),
    ("warm_get", "ours-c", "naive", "<= 0.8x the naive Popen+json host (pinned)", lambda r: r <= 0.8),
    ("warm_get", "ours-c", "python-floor", "(info) vs the Python floor: raw os.write/os.read + json.loads", lambda r: True),
    ("warm_get", "python-floor", "c-host", "(info) the Python floor vs the C host: what Python costs on this CPU", lambda r: True),
    ("warm_get", "ours-c", "ours-py", "(info) compiled core vs the twin", lambda r: True),
    ("warm_get", "ours-c", "ours-c-nospin", "(info) adaptive spin on vs off", lambda r: True),
    ("warm_get", "ours-c", "c-host-spin", "(info) vs a C host that busy-waits", lambda r: True),
    ("warm_get", "ours-c-events", "ours-c", "(info) request_events=True with a no-op callback vs none", lambda r: True),
    ("cold_start", "ours-c", "c-host", "<= 1.2x C-host posix_spawn path", lambda r: r <= 1.2),
    ("cold_start", "ours-c", "popen", "(info) vs subprocess.Popen", lambda r: True),
    ("cold_start_cpu", "ours-c", "c-host", "(info) the host thread's own CPU per cold start", lambda r: True),
    ("shutdown", "ours-c", "c-host", "<= 1.5x the C host", lambda r: r <= 1.5),
    ("shutdown", "ours-c", "popen", "(info) vs Popen stdin.close()+wait()", lambda r: True),
    ("sigterm", "ours-core-c", "popen", "faster than Popen.terminate()+wait(timeout)", lambda r: r < 1.0),
    ("sigterm", "ours-client-c", "popen", "(info) whole shutdown(), exit_wait=0.5 ms, vs Popen", lambda r: True),
    ("sigterm", "ours-core-c", "c-host", "(info) vs C host kill+waitpid", lambda r: True),
    ("list", "ours-c", "naive", ">= 1.5x faster than readline+json.loads+model_validate", lambda r: r <= 1 / 1.5),
    ("list_decode", "ours", "naive", "(info) decode only, no pipe", lambda r: True),
    ("frames_small", "c", "py", ">= 3x the twin on small frames", lambda r: r <= 1 / 3),
    ("frames_huge", "c", "py", "(info) one huge frame, 4 KiB reads", lambda r: True),
    ("aio_warm_get", "async-c", "sync-c", "(info) AsyncPluginClient vs PluginClient", lambda r: True),
    ("aio_warm_get", "async-c", "asyncio-naive", "(info) vs create_subprocess_exec+readline+json", lambda r: True),
    ("aio_warm_get", "async-c", "async-py", "(info) asyncio client, compiled core vs the twin", lambda r: True),
    ("wire_trace_off", "checked", "unchecked", "(info) the wire trace's check, DEBUG off, vs none (sync warm get)", lambda r: True),
    ("wire_trace_off", "debug-on", "checked", "(info) the wire trace on (NullHandler) vs off (sync warm get)", lambda r: True),
    ("aio_wire_trace_off", "checked", "unchecked", "(info) the same, asyncio warm get", lambda r: True),
    ("aio_wire_trace_off", "debug-on", "checked", "(info) the trace on vs off, asyncio warm get", lambda r: True),
    ("sdk_start", "sdk", "stdlib", "<= 1.3x the same handlers on stdlib json, spawn to init reply", lambda r: r <= 1.3),
    ("import", "sdk", "json", "(info) import plugin_client.plugin vs import json", lambda r: True),
    ("import", "sync-host", "json", "(info) from plugin_client import PluginClient, load_plugin", lambda r: True),
    ("host_start", "side-by-side", "one-by-one", "(info) PluginHost.start() of 20 C plugins vs one after the other", lambda r: True),
    ("host_start", "async-side-by-side", "one-by-one", "(info) AsyncPluginHost.start() vs one after the other", lambda r: True),
    ("host_shutdown", "side-by-side", "one-by-one", "(info) shutdown() of 20 SIGTERM-ignoring plugins vs one after the other", lambda r: True),
]

# (case, ours, baseline, extra_info key, target text, check(ratio)): memory, not time.
MEMORY_TARGETS = [
    ("sdk_start", "sdk", "stdlib", "rss_kb", "<= 1.3x the RSS after init (VmRSS)", lambda r: r <= 1.3),
    ("sdk_start", "sdk", "stdlib", "hwm_kb", "(info) peak RSS after init (VmHWM)", lambda r: True),
]


def rows(medians: Medians) -> List[List[str]]:
    order = ("pinned", "unpinned", "split", "n/a")
    placements = sorted({p for (_, p, _) in medians}, key=lambda p: order.index(p) if p in order else 9)
    out: List[List[str]] = []
    for case, ours, base, goal, check in TARGETS:
        for placement in placements:
            a = medians.get((case, placement, ours))
            b = medians.get((case, placement, base))
            if a is None or b is None:
                continue
            r = a / b
            speed = f"{1 / r:.2f}x faster" if r < 1 else f"{r:.2f}x slower"
            info = goal.startswith("(info)") or (goal.endswith("(pinned)") and placement != "pinned")
            verdict = "" if info else ("met" if check(r) else "MISSED")
            out.append([case, placement, f"{ours} / {base}", fmt_time(a), fmt_time(b), f"{r:.2f}", speed, goal, verdict])
    return out


def contention_rows(medians: Medians, extras: Dict[Tuple[str, str, str], Dict[str, Any]]) -> List[List[str]]:
    out: List[List[str]] = []
    for (case, placement, variant), median in sorted(medians.items()):
        if case != "contention" or not variant.startswith("4-"):
            continue
        one = (case, placement, "1-thread" + variant[len("4-threads"):])
        if one not in medians:
            continue
        n = extras[(case, placement, variant)].get("requests", 1)
        rps4, rps1 = n / median, n / medians[one]
        out.append([case, placement, f"{variant} / {one[2]}", f"{rps4:,.0f} req/s", f"{rps1:,.0f} req/s",
                    f"{rps4 / rps1:.2f}", "throughput ratio", "(info) 4 threads vs 1", ""])
        naive = (case, placement, "4-threads-naive")
        if variant != naive[2] and naive in medians:
            rpsn = extras[naive].get("requests", 1) / medians[naive]
            out.append([case, placement, f"{variant} / {naive[2]}", f"{rps4:,.0f} req/s", f"{rpsn:,.0f} req/s",
                        f"{rps4 / rpsn:.2f}", "throughput ratio", "(info) vs the naive host behind a lock", ""])
    return out


def memory_rows(extras: Dict[Tuple[str, str, str], Dict[str, Any]]) -> List[List[str]]:
    out: List[List[str]] = []
    for case, ours, base, key, goal, check in MEMORY_TARGETS:
        for (c, placement, variant), info in sorted(extras.items()):
            other = extras.get((case, placement, base), {})
            if c != case or variant != ours or key not in info or key not in other:
                continue
            r = info[key] / other[key]
            verdict = "" if goal.startswith("(info)") else ("met" if check(r) else "MISSED")
            out.append([f"{case} {key}", placement, f"{ours} / {base}", f"{info[key] / 1024:.1f} MiB",
                        f"{other[key] / 1024:.1f} MiB", f"{r:.2f}", "memory ratio", goal, verdict])
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="the file written by pytest --benchmark-json=FILE")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (for BENCHMARKS.md)")
    ap.add_argument("--all", action="store_true", help="also list every median")
    args = ap.parse_args(argv)
    medians, extras, machine = load(args.json)
    if not medians:
        print("no tagged benchmark results (run with --benchmark-only, not --benchmark-disable)", file=sys.stderr)
        return 1
    head = ["case", "placement", "ours / baseline", "ours", "baseline", "ratio", "", "target", ""]
    table = rows(medians) + contention_rows(medians, extras) + memory_rows(extras)
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in table:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
        for r in [head] + table:
            print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
    if args.all:
        print()
        for (case, placement, variant), m in sorted(medians.items()):
            print(f"{case:14s} {placement:9s} {variant:22s} {fmt_time(m)}")
    cpu = machine.get("cpu", {}).get("brand_raw") if isinstance(machine.get("cpu"), dict) else None
    if cpu:
        print(f"\nmachine: {cpu}, python {machine.get('python_version', '?')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

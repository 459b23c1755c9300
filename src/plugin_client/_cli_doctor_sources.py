"""``plugin-client doctor --sources FILE``: pre-flight a ``sources.toml`` and report it.

The checks are :func:`~plugin_client.source_router.preflight_sources`' (the file's
own validation, every source's plugin and its availability, probed side by side,
every rule's target, and each ``--path``'s decision); this module adds what the
command line needs around that report: the core in use, the plugins directory
and its problem (in the words ``doctor`` and ``call`` use), the verdict, the exit
code, and the text form.

The verdict (``healthy``) is stricter than ``preflight_sources``' own, which asks
only whether every rule has an available source: here every *source* must also
be available, since a source no rule names yet is still a plugin that should run,
and the plugins directory must be usable.

Exit codes (README.md's "Command-line reference" table is the one list): 0
healthy, 1 a source's plugin is missing, broken or not available, a rule has no
available source, or a ``--path`` has no route; 3 the plugins directory cannot be
used; 4 the sources file cannot be read or is not valid (this wins over 3: nothing
in an invalid file is probed).

What it deliberately does not do: parse or route (:mod:`plugin_client.sources`,
:mod:`plugin_client.source_router`), or probe plain plugins (:mod:`plugin_client._cli_doctor`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from . import __version__
from ._cli_common import EXIT_FAILED, EXIT_OK, EXIT_PLUGINS_DIR, EXIT_SOURCES, Out, plugins_dir_problem
from ._impl import IMPLEMENTATION, NO_EXTENSIONS
from .source_router import preflight_sources

__all__ = ("run_sources", "print_sources", "run", "exit_code")

# A rule is DOWN when its source (for the default: its fallback too) is not available.
_TEXT_OK = {True: "ok", False: "DOWN"}


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def run_sources(
    sources_file: Path,
    plugins_dir: Path,
    *,
    timeout: float = 10.0,
    source: str = "--plugins-dir",
    paths: Sequence[str] = (),
) -> Dict[str, Any]:
    """``doctor --sources``' document: :func:`~plugin_client.source_router.preflight_sources`'
    report of ``sources_file`` over ``plugins_dir``, with the doctor's fields added and
    ``healthy`` as the exit code's verdict (see the module docstring). Every probe's
    process is stopped before this returns."""
    started = time.perf_counter()
    problem = plugins_dir_problem(plugins_dir, source)
    report = preflight_sources(sources_file, plugins_dir, timeout=timeout, paths=paths)
    doc: Dict[str, Any] = {
        **report,
        "plugin_client_version": __version__,
        "implementation": IMPLEMENTATION,
        "no_extensions": NO_EXTENSIONS,
        "plugins_dir": str(plugins_dir),
        "plugins_dir_source": source,
        "plugins_dir_problem": None if problem is None else problem.kind,
        "error_type": None if problem is None else type(problem.error).__name__,
        "error": None if problem is None else problem.error.message,
        "timeout_s": timeout,
    }
    doc["healthy"] = bool(
        report["valid"]
        and problem is None
        and report["healthy"]
        and all(s["status"] == "available" for s in report["sources"])
    )
    doc["elapsed_ms"] = _ms(time.perf_counter() - started)
    return doc


def exit_code(doc: Dict[str, Any]) -> int:
    """The exit code of a :func:`run_sources` document."""
    if not doc["valid"]:
        return EXIT_SOURCES
    if doc["plugins_dir_problem"] is not None:
        return EXIT_PLUGINS_DIR
    return EXIT_OK if doc["healthy"] else EXIT_FAILED


def _table(rows: Sequence[Sequence[str]]) -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _plugin_cell(src: Dict[str, Any]) -> str:
    plugin = src["plugin"]
    if plugin["found"]:
        return "ok"
    error = plugin["error"]
    return "missing" if error is None or error["type"] == "SourcePluginMissing" else "broken"


def print_sources(out: Out, doc: Dict[str, Any]) -> None:
    """The text report of a :func:`run_sources` document."""
    core = doc["implementation"] + (" (extensions off)" if doc["no_extensions"] else "")
    out.line(f"plugin-client {doc['plugin_client_version']}  core: {core}")
    out.line(f"sources file: {doc['file']}")
    out.line(f"plugins dir: {doc['plugins_dir']}  (from {doc['plugins_dir_source']})")
    out.line()
    if not doc["valid"]:
        out.err(f"plugin-client doctor: the sources file {doc['file']!r} is not valid:")
        for p in doc["problems"]:
            subject = f" [{p['subject']}]" if p["subject"] else ""
            out.err(f"  {p['type']}{subject}: {p['message']}")
        return
    if doc["plugins_dir_problem"] is not None:
        out.err(f"plugin-client doctor: {doc['error_type']}: {doc['error']}")
    sources = doc["sources"]
    rows: List[List[str]] = [["SOURCE", "TYPE", "PLUGIN", "STATUS"]]
    for s in sources:
        rows.append([s["name"], s["type"], _plugin_cell(s), s["status"] or "-"])
    for line in _table(rows):
        out.line(line)
    rules = doc["rules"]
    if rules:
        out.line()
        rows = [["RULE", "SUBJECT", "SOURCE", "OK"]]
        for r in rules:
            target = r["source"] + (f" (fallback {r['fallback']})" if r.get("fallback") else "")
            rows.append([r["rule"], r["subject"] or "-", target, _TEXT_OK[r["ok"]]])
        for line in _table(rows):
            out.line(line)
    for s in sources:
        if s["status"] == "available":
            continue
        out.line()
        error = s["plugin"]["error"]
        if error is not None:
            out.line(f"{s['name']}: its plugin {s['type']!r} is {_plugin_cell(s)}")
            out.line(f"  {error['type']}: {error['message']}")
        else:
            out.line(f"{s['name']}: {s['status'] or 'not probed'}")
            if s["detail"]:
                out.line(f"  {s['detail']}")
    if doc["paths"]:
        out.line()
        for p in doc["paths"]:
            if "error" in p:
                out.line(f"{p['path']}: {p['error']['type']}: {p['error']['message']}")
            else:
                via = p["rule"] + (f" {p['prefix']}" if p["prefix"] else "")
                out.line(f"{p['path']} -> source {p['source']!r}, reference {p['reference']!r} ({via})")
    up = sum(1 for s in sources if s["status"] == "available")
    ok = sum(1 for r in rules if r["ok"])
    out.line()
    verdict = "healthy" if doc["healthy"] else "NOT healthy"
    out.line(
        f"{len(sources)} source(s): {up} available; {len(rules)} rule(s): {ok} with an available source; "
        f"{verdict} ({doc['elapsed_ms']:.0f} ms)."
    )


def run(out: Out, doc: Dict[str, Any], *, as_json: bool) -> int:
    """Print ``doc`` and return its exit code."""
    if as_json:
        out.json(doc)
    else:
        print_sources(out, doc)
    return exit_code(doc)

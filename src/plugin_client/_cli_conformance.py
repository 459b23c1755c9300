"""``plugin-client conformance MANIFEST``: run a plugin through the protocol and report.

``conformance MANIFEST [--json] [--write] [--config JSON] [--source-name NAME] [--timeout S]``
    Loads and verifies the manifest, then runs every check of
    :mod:`plugin_client.conformance` and prints one line per check
    (``PASS``/``FAIL``/``SKIP``, its name and why), or with ``--json`` one
    document (:meth:`~plugin_client.conformance.ConformanceReport.to_dict`).
    ``--write`` also calls ``put`` and ``delete`` (on
    ``plugin-client-conformance/probe``), which change the plugin's store.

Exit codes: 0 every check passed or was skipped, 1 a check failed or the
manifest was refused, 2 usage. The checks are the library's; this module only
parses arguments and prints.
"""

from __future__ import annotations

import argparse

from ._cli_common import Out, config_object, positive_seconds, refused, report
from .conformance import ConformanceReport, run_conformance
from .errors import PluginClientError
from .manifest import load_plugin

__all__ = ("add_parser", "run")


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``conformance`` to ``plugin-client``."""
    p = sub.add_parser(
        "conformance",
        help="check a plugin against the protocol",
        description="Run a plugin through the protocol (PROTOCOL.md) and report each check. "
        "Exit 0 when none fails, 1 otherwise.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="the plugin's devboy-source-<name>.toml")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--write", action="store_true", help="also call put and delete (they change the store)")
    p.add_argument("--config", type=config_object, metavar="JSON", help="the config object sent in init")
    p.add_argument("--source-name", metavar="NAME", help="the source name sent in init (default: the plugin's name)")
    p.add_argument("--timeout", type=positive_seconds, default=5.0, metavar="S", help="request timeout (default 5)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the library's log on stderr")


def _print(out: Out, result: ConformanceReport) -> None:
    out.line(f"conformance of {result.plugin!r} ({result.manifest_path})")
    width = max(len(c.name) for c in result.checks)
    for c in result.checks:
        out.line(f"{c.status.upper():4}  {c.name.ljust(width)}  {c.detail}")
    if not result.ok and result.stderr_tail:
        out.line(f"stderr (last {len(result.stderr_tail)} lines):")
        for line in result.stderr_tail:
            out.line(f"  | {line}")
    failed = result.failed()
    out.line(f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "conformant")


def run(args: argparse.Namespace, out: Out) -> int:
    """Run ``conformance``; returns the exit code."""
    try:
        plugin = load_plugin(args.manifest)
        result = run_conformance(
            plugin, write=args.write, config=args.config, source_name=args.source_name, timeout=args.timeout,
        )
    except PluginClientError as exc:
        return refused(out, exc, command="conformance", as_json=args.json, empty={"ok": False, "checks": []})
    return report(out, result.to_dict(), as_json=args.json, text=lambda: _print(out, result), ok=result.ok)

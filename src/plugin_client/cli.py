"""``plugin-client``: the operator's command line (also ``python -m plugin_client``).

``plugin-client doctor [NAME ...] [--plugins-dir DIR] [--json] [--timeout S]``
    Discovers every ``devboy-source-*.toml`` in the plugins directory (or only
    the NAMEs), verifies each manifest and executable, then probes the plugins
    side by side: spawn, ``init``, ``is_available``, shutdown, with timings.
    Prints a table (or, with ``--json``, one JSON document with the same data
    and each plugin's :class:`~plugin_client.health.PluginHealth`) and the core
    in use. :mod:`plugin_client._cli_doctor` does the work.

``plugin-client doctor --sources FILE [--path PATH ...] [--plugins-dir DIR] [--json] [--timeout S]``
    Pre-flights a ``sources.toml`` (:mod:`plugin_client._cli_doctor_sources`): the
    file's validation, every source's plugin and availability (side by side), every
    rule's target, and each PATH's decision. NAMEs cannot be given with it.

``plugin-client call NAME METHOD [ARG ...] [--plugins-dir DIR] [--json] [--reveal]``
    Runs one request against one plugin. METHOD is ``init``, ``is_available``,
    ``get REF``, ``list``, ``validate REF``, ``put REF [VALUE]`` (the value is
    read from stdin when not given, so it stays out of the shell history),
    ``delete REF`` or ``key_material PURPOSE``. A secret (``get``'s value, key
    material) is printed masked unless ``--reveal`` is given.

``plugin-client manifest new|update|verify ...`` and ``plugin-client conformance MANIFEST``
    For plugin authors: write, re-hash and verify a manifest
    (:mod:`plugin_client._cli_manifest`), and check a plugin against PROTOCOL.md
    (:mod:`plugin_client._cli_conformance`).

The plugins directory is ``--plugins-dir``, else ``$PLUGIN_CLIENT_PLUGINS_DIR``,
else ``$XDG_CONFIG_HOME/plugin-client/plugins`` (``~/.config/plugin-client/plugins``
when ``XDG_CONFIG_HOME`` is unset or empty).

Exit codes (README.md's "Command-line reference" table is the one list, per command):
``0`` success (for ``doctor``: every plugin probed is healthy, i.e. its manifest and
executable are good, it started, answered ``init`` and reported itself ``available``;
an empty directory is healthy); ``1`` a plugin is broken or not available, a request
failed, a manifest was refused; ``2`` usage errors (unknown options, methods or plugin
names, a wrong number of arguments); ``3`` the plugins directory is missing, not a
directory, or cannot be read (``doctor`` and ``call``); ``4`` (``doctor --sources``) the
sources file cannot be read or is not valid.

Only this module and the ``_cli_*`` modules print; the library only logs. ``-v`` shows the library's log
on stderr.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, TextIO, Tuple

from . import __version__
from . import _cli_conformance, _cli_doctor, _cli_doctor_sources, _cli_manifest
from ._cli_common import (
    EXIT_FAILED, EXIT_OK, EXIT_PLUGINS_DIR, EXIT_USAGE, Out, config_object, plugins_dir_problem,
    positive_seconds,
)
from ._cli_doctor import UnknownPlugins, capability_names, run_doctor
from ._plugins_dir import PLUGINS_DIR_ENV, default_plugins_dir
from ._spawn_env import PYTHON_ENV
from ._impl import IMPLEMENTATION
from .client import PluginClient
from .errors import PluginClientError, PluginError
from .manifest import DEFAULT_PREFIX, load_plugin
from .policy import LifetimePolicy
from .protocol import KeyMaterialResult, Result

__all__ = ("main", "default_plugins_dir", "run_doctor", "PLUGINS_DIR_ENV", "PYTHON_ENV")

MASK = "**********"

# method name -> (protocol method, number of arguments (min, max))
_METHODS: Dict[str, Tuple[str, int, int]] = {
    "init": ("secret_source.init", 0, 0),
    "is_available": ("secret_source.is_available", 0, 0),
    "get": ("secret_source.get", 1, 1),
    "list": ("secret_source.list", 0, 0),
    "validate": ("secret_source.validate", 1, 1),
    "put": ("secret_source.put", 1, 2),
    "delete": ("secret_source.delete", 1, 1),
    "key_material": ("secret_source.key_material", 1, 1),
}


# --- configuration ----------------------------------------------------------------------


def _plugins_dir(arg: Optional[str]) -> Tuple[Path, str]:
    if arg:
        return Path(arg), "--plugins-dir"
    return default_plugins_dir()


# --- doctor -----------------------------------------------------------------------------
# The checks, probes and report are _cli_doctor's; run_doctor is re-exported above.


def _cmd_doctor(args: argparse.Namespace, out: Out) -> int:
    plugins_dir, source = _plugins_dir(args.plugins_dir)
    if args.sources is not None:
        if args.names:
            # A pre-flight judges every rule, and a rule's source must have been probed.
            out.err(
                f"plugin-client doctor: NAMEs and --sources do not mix: --sources checks every source of "
                f"the file; run `plugin-client doctor {' '.join(args.names)}` on its own"
            )
            return EXIT_USAGE
        doc = _cli_doctor_sources.run_sources(
            Path(args.sources), plugins_dir, timeout=args.timeout, source=source, paths=args.paths
        )
        return _cli_doctor_sources.run(out, doc, as_json=args.json)
    if args.paths:
        out.err("plugin-client doctor: --path needs --sources FILE (the file that routes it)")
        return EXIT_USAGE
    try:
        doc = run_doctor(plugins_dir, timeout=args.timeout, source=source, names=args.names)
    except UnknownPlugins as exc:
        out.err(f"plugin-client doctor: {exc}")
        return EXIT_USAGE
    return _cli_doctor.run(out, doc, as_json=args.json)


# --- call ---------------------------------------------------------------------------------


def _result_doc(result: Result, reveal: bool) -> Dict[str, Any]:
    if isinstance(result, KeyMaterialResult):
        raw = result.material.get_secret_value()
        return {"material_b64": base64.b64encode(raw).decode("ascii") if reveal else MASK, "length": len(raw)}
    doc: Dict[str, Any] = result.model_dump(mode="json")
    if "value" in doc:
        doc["value"] = result.value.get_secret_value() if reveal else MASK  # type: ignore[attr-defined]
    if "capabilities_bits" in doc:
        doc["capabilities"] = capability_names(doc["capabilities_bits"])
    return doc


def _print_result(out: Out, doc: Dict[str, Any]) -> None:
    if "entries" in doc:
        for entry in doc["entries"]:
            display = entry.get("display")
            out.line(entry["reference"] + (f"\t{display}" if display else ""))
        return
    for key, value in doc.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        elif value is None:
            value = "-"
        out.line(f"{key}: {value}")


def _cmd_call(args: argparse.Namespace, out: Out, stdin: TextIO) -> int:
    method = args.method.replace("-", "_")
    if method.startswith("secret_source."):
        method = method[len("secret_source.") :]
    if method not in _METHODS:
        out.err(f"plugin-client call: unknown method {args.method!r}; use one of {', '.join(_METHODS)}")
        return EXIT_USAGE
    _, lo, hi = _METHODS[method]
    if not lo <= len(args.args) <= hi:
        want = str(lo) if lo == hi else f"{lo} or {hi}"
        out.err(f"plugin-client call: {method} takes {want} argument(s), got {len(args.args)}")
        return EXIT_USAGE
    name = args.name
    plugins_dir, source = _plugins_dir(args.plugins_dir)
    problem = plugins_dir_problem(plugins_dir, source)
    if problem is not None:  # in doctor's words: one function, one message
        if args.json:
            out.json({"ok": False, "error": {
                "type": type(problem.error).__name__, "message": problem.error.message,
                "plugins_dir_problem": problem.kind,
            }})
        else:
            out.err(f"plugin-client call: {type(problem.error).__name__}: {problem.error.message}")
        return EXIT_PLUGINS_DIR
    manifest_path = plugins_dir / f"{DEFAULT_PREFIX}{name}.toml"
    if "/" in name or name in (".", "..") or not manifest_path.is_file():
        known = sorted(p.name[len(DEFAULT_PREFIX) : -len(".toml")] for p in plugins_dir.glob(f"{DEFAULT_PREFIX}*.toml"))
        out.err(
            f"plugin-client call: no plugin {name!r} in {str(plugins_dir)!r} "
            f"(found: {', '.join(known) or 'none'}); check the name or --plugins-dir"
        )
        return EXIT_USAGE
    value: Optional[str] = None
    if method == "put":
        value = args.args[1] if len(args.args) > 1 else stdin.readline().rstrip("\r\n")
    policy = LifetimePolicy(start_timeout=args.timeout, request_timeout=args.timeout, exit_wait=1.0, shutdown_grace=2.0)
    try:
        plugin = load_plugin(manifest_path)
        with PluginClient(plugin, policy=policy, source_name=args.source_name, config=args.config or {}) as client:
            arg = args.args[0] if args.args else ""
            result: Result
            if method == "init":
                result = client.start()
            elif method == "is_available":
                result = client.is_available()
            elif method == "get":
                result = client.get(arg)
            elif method == "list":
                result = client.list()
            elif method == "validate":
                result = client.validate(arg)
            elif method == "put":
                assert value is not None
                result = client.put(arg, value)
            elif method == "delete":
                result = client.delete(arg)
            else:
                result = client.key_material(arg)
    except PluginClientError as exc:
        if args.json:
            err: Dict[str, Any] = {"type": type(exc).__name__, "message": exc.message}
            if isinstance(exc, PluginError):
                err.update(kind=exc.kind, detail=exc.detail, reference=exc.reference, reason=exc.reason)
            out.json({"ok": False, "error": err})
        else:
            out.err(f"plugin-client call: {type(exc).__name__}: {exc.message}")
        return EXIT_FAILED
    doc = _result_doc(result, args.reveal)
    if args.json:
        out.json({"ok": True, "result": doc})
    else:
        _print_result(out, doc)
    return EXIT_OK


# --- entry point ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--plugins-dir",
        metavar="DIR",
        help=f"the plugins directory (default: ${PLUGINS_DIR_ENV}, else $XDG_CONFIG_HOME/plugin-client/plugins)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON document")
    common.add_argument("--timeout", type=positive_seconds, default=10.0, metavar="S", help="start and request timeout (default 10)")
    common.add_argument("-v", "--verbose", action="store_true", help="show the library's log on stderr")

    parser = argparse.ArgumentParser(
        prog="plugin-client",
        description="Check and call secret-source plugins.",
        epilog="Exit codes: 0 ok, 1 a plugin is broken or a request failed, 2 usage error, "
        "3 the plugins directory is missing, not a directory, or unreadable, "
        "4 (doctor --sources) the sources file cannot be read or is not valid.",
    )
    parser.add_argument("--version", action="version", version=f"plugin-client {__version__} ({IMPLEMENTATION} core)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    doctor = sub.add_parser(
        "doctor",
        parents=[common],
        help="verify and probe every plugin",
        description="Verify every manifest in the plugins directory and probe each plugin "
        "(spawn, init, is_available), all side by side. Exit 0 when all are healthy, 1 otherwise, "
        "3 when the plugins directory is missing, not a directory, or unreadable. With --sources FILE, "
        "pre-flight a sources.toml instead: exit 4 when the file cannot be read or is not valid, 1 when "
        "a source is not available or a rule or --path has no available source.",
    )
    doctor.add_argument("names", metavar="NAME", nargs="*", help="probe only these plugins (default: all)")
    doctor.add_argument(
        "--sources", metavar="FILE",
        help="pre-flight this sources.toml instead: the file, every source's plugin and availability, every rule "
        "(exit 4 when the file cannot be read or is not valid)",
    )
    doctor.add_argument(
        "--path", dest="paths", action="append", default=[], metavar="PATH",
        help="with --sources: also show which source and reference serve this secret path (repeatable)",
    )
    call = sub.add_parser(
        "call",
        parents=[common],
        help="run one request against one plugin",
        description="Run one request. Secrets are masked unless --reveal is given. "
        "put REF without VALUE reads the value from stdin.",
    )
    call.add_argument("name", metavar="NAME", help="the plugin's name (devboy-source-NAME.toml)")
    call.add_argument("method", metavar="METHOD", help=", ".join(_METHODS))
    call.add_argument("args", metavar="ARG", nargs="*", help="the reference, purpose, or put's reference and value")
    call.add_argument("--reveal", action="store_true", help="print secret values instead of masking them")
    call.add_argument("--config", type=config_object, metavar="JSON", help="the config object sent in init")
    call.add_argument("--source-name", metavar="NAME", help="the source name sent in init (default: the plugin's name)")
    _cli_manifest.add_parser(sub)
    _cli_conformance.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code."""
    out = Out()
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 for --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.verbose:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        # Without -v, keep the library's warnings (also shown in the report) off the
        # terminal: a handler in the hierarchy stops logging's last-resort printing,
        # and records still propagate to any handler a host configured.
        lib_log = logging.getLogger("plugin_client")
        if not any(isinstance(h, logging.NullHandler) for h in lib_log.handlers):
            lib_log.addHandler(logging.NullHandler())
    try:
        if args.command == "doctor":
            return _cmd_doctor(args, out)
        if args.command == "manifest":
            return _cli_manifest.run(args, out)
        if args.command == "conformance":
            return _cli_conformance.run(args, out)
        return _cmd_call(args, out, sys.stdin)
    except BrokenPipeError:  # e.g. `plugin-client doctor | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the exit flush quiet
        return EXIT_FAILED

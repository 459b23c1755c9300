"""``plugin-client manifest new|update|verify``: write, re-hash and check a sidecar manifest.

``manifest new EXECUTABLE [--name NAME] [--version V] [--allow-env VAR]... [--force]``
    Writes ``devboy-source-<name>.toml`` beside EXECUTABLE with its SHA-256. The
    name defaults to the file name without ``devboy-source-`` (else the file's
    stem) and follows the loader's rule; an existing manifest is kept unless
    ``--force`` is given.
``manifest update MANIFEST``
    Hashes the executable again (after a rebuild) and rewrites only the value of
    the ``checksum_sha256`` line; comments and the other lines stay as they are.
``manifest verify MANIFEST``
    Loads the manifest and verifies its executable as a host would, before a spawn.

Exit codes: 0 done (verify: the executable matches), 1 the manifest or the
executable is refused (the loader's message says why and what to do), 2 usage.
The editing is :mod:`plugin_client._manifest_files`'s, the checking
:mod:`plugin_client.manifest`'s; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse

from ._cli_common import EXIT_FAILED, EXIT_OK, Out
from ._manifest_files import new_manifest, update_checksum
from .errors import PluginClientError
from .manifest import LoadedPlugin, load_plugin

__all__ = ("add_parser", "run")


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``manifest`` and its three subcommands to ``plugin-client``."""
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", help="show the library's log on stderr")
    manifest = sub.add_parser(
        "manifest",
        help="write, re-hash or verify a plugin's manifest",
        description="Write, re-hash or verify a devboy-source-<name>.toml manifest.",
    )
    actions = manifest.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    new = actions.add_parser(
        "new",
        parents=[verbose],
        help="write a manifest beside an executable",
        description="Write devboy-source-<name>.toml beside EXECUTABLE, with its SHA-256.",
    )
    new.add_argument("executable", metavar="EXECUTABLE", help="the plugin's executable")
    new.add_argument("--name", help="the plugin's name (default: from the file name)")
    new.add_argument("--version", default="0.1.0", metavar="V", help="the plugin's version (default 0.1.0)")
    new.add_argument(
        "--allow-env", action="append", default=[], metavar="VAR",
        help="an environment variable the plugin receives (repeat for more; default: none)",
    )
    new.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    for action, text in (
        ("update", "hash the executable again and rewrite the checksum line"),
        ("verify", "check that the executable matches the manifest"),
    ):
        p = actions.add_parser(action, parents=[verbose], help=text, description=text[:1].upper() + text[1:] + ".")
        p.add_argument("manifest", metavar="MANIFEST", help="the devboy-source-<name>.toml file")


def _describe(plugin: LoadedPlugin) -> str:
    return f"plugin {plugin.name!r}, executable {str(plugin.executable.path)!r}, sha256 {plugin.executable.sha256}"


def run(args: argparse.Namespace, out: Out) -> int:
    """Run ``manifest ACTION``; returns the exit code."""
    try:
        if args.action == "new":
            plugin = new_manifest(
                args.executable, name=args.name, version=args.version, allowed_env_vars=args.allow_env,
                force=args.force,
            )
            out.line(f"wrote {str(plugin.manifest_path)!r}: {_describe(plugin)}")
        elif args.action == "update":
            plugin, previous = update_checksum(args.manifest)
            if previous is None:
                out.line(f"unchanged {str(plugin.manifest_path)!r}: {_describe(plugin)}")
            else:
                out.line(f"updated {str(plugin.manifest_path)!r}: {_describe(plugin)} (was {previous})")
        else:
            plugin = load_plugin(args.manifest)
            out.line(f"ok {str(plugin.manifest_path)!r}: {_describe(plugin)}")
    except PluginClientError as exc:
        out.err(f"plugin-client manifest {args.action}: {type(exc).__name__}: {exc.message}")
        return EXIT_FAILED
    except OSError as exc:  # the manifest exists (new without --force), or it cannot be written
        out.err(f"plugin-client manifest {args.action}: {exc.strerror if exc.filename else exc}"
                + (f": {exc.filename!r}" if exc.filename else ""))
        return EXIT_FAILED
    return EXIT_OK

"""Builds real plugin directories for the tests: an executable beside its manifest.

``make_plugin`` writes an executable (a Python script run by this interpreter,
a shell script, or any bytes) and a ``devboy-source-<name>.toml`` manifest
with the right checksum, and returns the loaded, verified plugin.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

from plugin_client.manifest import LoadedPlugin, load_plugin

PLUGINS = Path(__file__).parent / "plugins"
ECHO = (PLUGINS / "echo_plugin.py").read_text()


# Ignores SIGTERM and lingers after stdin EOF: only SIGKILL ends it.
STUBBORN = (
    "import signal, sys, time, json\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "for line in sys.stdin:\n"
    "    r = json.loads(line)\n"
    "    print(json.dumps({'jsonrpc': '2.0', 'id': r['id'], 'result': {'source_name': r['params']['source_name'],"
    " 'capabilities_bits': 1, 'plugin_version': '1'} if r['method'].endswith('init') else {'value': 'v'}}), flush=True)\n"
    "time.sleep(3600)\n"
)


def python_script(body: str) -> bytes:
    # -I: no user site or env vars; -S: no site import, so the plugin starts fast.
    return f"#!{sys.executable} -IS\n{body}".encode()


def write_manifest(directory: Path, name: str, executable: str, checksum: str,
                   allowed_env_vars: Iterable[str] = ()) -> Path:
    env = ", ".join(f'"{v}"' for v in allowed_env_vars)
    path = directory / f"devboy-source-{name}.toml"
    path.write_text(
        f'name = "{name}"\nversion = "0.1.0"\nexecutable = "{executable}"\n'
        f"allowed_env_vars = [{env}]\nchecksum_sha256 = \"{checksum}\"\n"
    )
    return path


def make_plugin(directory: Path, name: str = "echo", content: Optional[bytes] = None,
                allowed_env_vars: Iterable[str] = ()) -> LoadedPlugin:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    data = python_script(ECHO) if content is None else content
    exe = directory / f"devboy-source-{name}"
    exe.write_bytes(data)
    os.chmod(exe, 0o755)
    manifest = write_manifest(directory, name, exe.name, hashlib.sha256(data).hexdigest(), allowed_env_vars)
    return load_plugin(manifest)

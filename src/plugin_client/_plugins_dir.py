"""Where plugins live when a host names no directory: the one default for the CLI and the hosts.

``$PLUGIN_CLIENT_PLUGINS_DIR`` if set and not empty, else
``$XDG_CONFIG_HOME/plugin-client/plugins`` (``~/.config/plugin-client/plugins``
when ``XDG_CONFIG_HOME`` is unset or empty).

Deliberately not here: reading or checking the directory (``discover_plugins``
and the hosts' scan do that), and any command-line option (``cli.py`` adds
``--plugins-dir`` on top).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Tuple

__all__ = ("PLUGINS_DIR_ENV", "default_plugins_dir")

PLUGINS_DIR_ENV = "PLUGIN_CLIENT_PLUGINS_DIR"


def default_plugins_dir(environ: Mapping[str, str] = os.environ) -> Tuple[Path, str]:
    """The plugins directory when none is given, and where it came from."""
    env_dir = environ.get(PLUGINS_DIR_ENV, "")
    if env_dir:
        return Path(env_dir), f"${PLUGINS_DIR_ENV}"
    config_home = environ.get("XDG_CONFIG_HOME", "")
    base = Path(config_home) if config_home else Path(environ.get("HOME", "") or Path.home()) / ".config"
    return base / "plugin-client" / "plugins", "default"

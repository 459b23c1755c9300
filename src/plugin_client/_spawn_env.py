"""The environment a plugin process is spawned with (the clients' and ``conformance``'s)."""

from __future__ import annotations

import os
import sys
from typing import Dict, Sequence

__all__ = ("PYTHON_ENV", "plugin_env")

# A manifest that allow-lists this variable gets the host's value or, when the host
# has none, the host's own interpreter: a Python plugin's launcher re-runs itself with
# it, so an SDK plugin starts from any Python host with no set-up. The manifest shows it.
PYTHON_ENV = "PLUGIN_CLIENT_PYTHON"
_PYTHON_ENV_B = os.fsencode(PYTHON_ENV)

def plugin_env(allowed_env_vars: Sequence[str]) -> Dict[bytes, bytes]:
    """The environment a plugin is spawned with: the allow-listed variables the
    host has set, nothing else (and :data:`PYTHON_ENV`, if allow-listed, as above)."""
    environb = os.environb
    env: Dict[bytes, bytes] = {}
    for var in allowed_env_vars:
        key = os.fsencode(var)
        value = environb.get(key)
        if value is not None:
            env[key] = value
        elif key == _PYTHON_ENV_B and sys.executable:
            env[key] = os.fsencode(sys.executable)
    return env

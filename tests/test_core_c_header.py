"""``_core_c.h``, the compiled core's C helpers, compiles on its own.

The extension #includes it after Python.h and the ``.pxd``'s system headers,
which would hide a missing ``#include`` or a warning the header itself
causes; compiled alone, with every warning an error, it can hide neither.
Skipped without a C compiler (the twin's installs need none).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from _helpers import SRC_DIR

HEADER = Path(SRC_DIR) / "plugin_client" / "_core_c.h"


def _compiler() -> str:
    for cc in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if cc and shutil.which(cc.split()[0]):
            return cc
    pytest.skip("no C compiler")


def test_header_is_shipped_next_to_the_pyx() -> None:
    assert HEADER.is_file(), f"{HEADER} is missing"


@pytest.mark.parametrize("std", ["gnu11", "gnu17"])
def test_header_compiles_alone_without_warnings(std: str) -> None:
    if not HEADER.is_file():
        pytest.skip("no source tree next to the installed package")
    cc = _compiler()
    # -x c: as a C file, not a precompiled header; gnu11 is what setup.py builds with.
    cmd = cc.split() + [f"-std={std}", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-x", "c", str(HEADER)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}"


def test_glibc_symbol_version_pins_are_kept() -> None:
    """The wheel is manylinux_2_28: built against a newer glibc, dlsym and
    pthread_sigmask must still bind to the versions 2.28 has (auditwheel in
    .ci/wheel-check checks the built wheel; this keeps the pins in the source)."""
    if not HEADER.is_file():
        pytest.skip("no source tree next to the installed package")
    text = HEADER.read_text()
    for pin in (
        '__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");',
        '__asm__(".symver pthread_sigmask,pthread_sigmask@GLIBC_2.2.5");',
        '__asm__(".symver dlsym,dlsym@GLIBC_2.17");',
        '__asm__(".symver pthread_sigmask,pthread_sigmask@GLIBC_2.17");',
    ):
        assert pin in text

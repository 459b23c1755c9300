"""Build script: cythonizes the hot path unless a pure-Python build is asked for.

``PLUGIN_CLIENT_NO_EXTENSIONS=1`` builds a pure-Python package that uses
``_core_py``. Otherwise a missing Cython or C compiler fails the build loudly:
a silently pure wheel is a performance bug nobody notices.
``PLUGIN_CLIENT_CYTHON_TRACING=1`` turns on line tracing for coverage and
profiling, plus an annotated HTML next to the ``.pyx``.
"""

import os
import sys

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


CORE_DIR = os.path.join("src", "plugin_client")
NO_EXTENSIONS = _flag("PLUGIN_CLIENT_NO_EXTENSIONS")
TRACING = _flag("PLUGIN_CLIENT_CYTHON_TRACING")

# The one place where compiler directives live.
DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
}

if NO_EXTENSIONS:
    print("*********************************************************", file=sys.stderr)
    print("* plugin-client: pure-Python build (NO_EXTENSIONS is set) *", file=sys.stderr)
    print("*********************************************************", file=sys.stderr)
    ext_modules = []
else:
    from Cython.Build import cythonize  # a missing Cython must fail the build

    macros = []
    if TRACING:
        DIRECTIVES["linetrace"] = True
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    ext_modules = cythonize(
        [
            Extension(
                "plugin_client._core",
                ["src/plugin_client/_core.pyx"],
                # _core_c.h: the core's C helpers, #included by the generated
                # _core.c. depends: a change to it alone recompiles the core.
                include_dirs=[CORE_DIR],
                depends=[os.path.join(CORE_DIR, "_core_c.h")],
                define_macros=macros,
                extra_compile_args=["-O2", "-std=gnu11"],
                libraries=["dl"],
            )
        ],
        compiler_directives=DIRECTIVES,
        annotate=TRACING,
    )
    print("plugin-client: accelerated build (Cython core)", file=sys.stderr)

setup(ext_modules=ext_modules)

"""The selector (``plugin_client._impl``) and the shape of both cores' API.

The guard test fails when the compiled core is built but not the one in use
(yarl's ``test_quoting_c_loaded``): a silent fallback to the twin is a
performance bug nobody notices.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from _helpers import SRC_DIR, compiled_core_built, make_pipe  # noqa: F401  (fixture)

STUB = Path(SRC_DIR) / "plugin_client" / "_core.pyi"


@pytest.mark.c_extension
def test_compiled_core_is_selected() -> None:
    """Deselected by --no-c-extensions / PLUGIN_CLIENT_NO_EXTENSIONS (set, not "0")."""
    impl = importlib.import_module("plugin_client._impl")
    assert impl.IMPLEMENTATION == "cython"
    assert impl.NO_EXTENSIONS is False
    assert impl.FrameReader is importlib.import_module("plugin_client._core").FrameReader


def _selected(value: Optional[str]) -> Tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PLUGIN_CLIENT_NO_EXTENSIONS"}
    if value is not None:
        env["PLUGIN_CLIENT_NO_EXTENSIONS"] = value
    code = (
        f"import sys; sys.path.insert(0, {SRC_DIR!r}); "
        "import plugin_client._impl as i; print(i.IMPLEMENTATION, i.NO_EXTENSIONS)"
    )
    # -I: no PYTHON* variables, no user site; the package comes from SRC_DIR only.
    proc = subprocess.run([sys.executable, "-I", "-c", code], env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    impl, no_ext = proc.stdout.decode().split()
    return impl, no_ext


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_variable_set_selects_the_twin(value: str) -> None:
    assert _selected(value) == ("python", "True")


@pytest.mark.parametrize("value", ["0", "", None], ids=["zero", "empty", "unset"])
def test_variable_off_selects_the_compiled_core(value: Optional[str]) -> None:
    if not compiled_core_built():
        pytest.skip("the compiled core is not built")
    assert _selected(value) == ("cython", "False")


def test_implementation_names(core: types.ModuleType) -> None:
    want = "python" if core.__name__.endswith("_core_py") else "cython"
    assert core.IMPLEMENTATION == want


# --- API parity with the stub ---------------------------------------------------

Params = List[Tuple[str, str, bool]]  # (name, kind, has default)


def _stub_params(fn: ast.FunctionDef) -> Params:
    a = fn.args
    out: Params = []
    positional = a.posonlyargs + a.args
    first_default = len(positional) - len(a.defaults)
    for i, arg in enumerate(positional):
        kind = "POSITIONAL_ONLY" if arg in a.posonlyargs else "POSITIONAL_OR_KEYWORD"
        out.append((arg.arg, kind, i >= first_default))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, "KEYWORD_ONLY", default is not None))
    return out


def _stub() -> Dict[str, object]:
    """``{name: params}`` for functions, ``{name: {member: params | "property"}}`` for classes."""
    tree = ast.parse(STUB.read_text())
    api: Dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            api[node.name] = _stub_params(node)
        elif isinstance(node, ast.ClassDef):
            members: Dict[str, object] = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    is_prop = any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list)
                    members[item.name] = "property" if is_prop else _stub_params(item)
            api[node.name] = members
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if not node.target.id.startswith("_"):
                api[node.target.id] = "constant"
    return api


def _actual_params(obj: object) -> Optional[Params]:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # some compiled callables carry no signature
        return None
    return [(p.name, p.kind.name, p.default is not inspect.Parameter.empty) for p in sig.parameters.values()]


def test_api_matches_the_stub(core: types.ModuleType) -> None:
    problems: List[str] = []
    for name, spec in _stub().items():
        if not hasattr(core, name):
            problems.append(f"missing {name}")
            continue
        obj = getattr(core, name)
        if spec == "constant":
            continue
        if isinstance(spec, list):
            got = _actual_params(obj)
            if got is not None and got != spec:
                problems.append(f"{name}{got} != stub {spec}")
            continue
        assert isinstance(spec, dict)
        for member, mspec in spec.items():
            raw = inspect.getattr_static(obj, member, None)
            if raw is None:
                problems.append(f"missing {name}.{member}")
            elif mspec == "property":
                if callable(raw) and not inspect.isdatadescriptor(raw):
                    problems.append(f"{name}.{member} is not a property")
            elif member != "__init__":
                got = _actual_params(getattr(obj, member))
                if got is not None and got != mspec:
                    problems.append(f"{name}.{member}{got} != stub {mspec}")
    assert not problems, problems


def test_keyword_arguments_work(core: types.ModuleType, make_pipe) -> None:  # type: ignore[no-untyped-def]
    pipe = make_pipe()
    reader = core.FrameReader(fd=pipe.r, max_frame_bytes=64)
    core.write_all(fd=pipe.w, data=b"kw\n", deadline=None)
    assert reader.read_frame(deadline=core.monotonic() + 5) == b"kw"
    window = core.RestartWindow(window=1.0, cap=2)
    assert window.record(now=1.0) == 1
    assert window.count(now=1.5) == 1
    assert not window.exceeded(now=1.5)
    child = core.spawn(argv=["/bin/true"], env={}, cwd=None)
    try:
        assert child.wait(timeout=10, reap=True) == 0
    finally:
        child.close()


# --- test hooks -------------------------------------------------------------------

TEST_HOOKS = ("_spin_limit", "_force_spawn_fallback")


def test_test_hooks_are_not_api_and_unused_by_the_package() -> None:
    """The compiled core's test hooks (``_core_testing.pxi``) are for tests and
    benchmarks only: no module of the package calls them, and neither the stub nor
    ``__all__`` names them."""
    package = Path(SRC_DIR) / "plugin_client"
    callers = [
        f"{path.name}: {hook}"
        for path in sorted(package.glob("*.py"))
        for hook in TEST_HOOKS
        if hook in path.read_text()
    ]
    assert not callers
    stub = STUB.read_text()
    assert not [hook for hook in TEST_HOOKS if hook in stub]
    assert not [hook for hook in TEST_HOOKS if hook in importlib.import_module("plugin_client._core_py").__all__]

"""The compiled core and its twin expose the same module: ``__all__``, constants,
and every public callable's signature, keyword names and defaults included.

``test_core_selector.py`` holds each core to the stub's names and parameter
kinds; this compares the two modules with each other, so a default or a
constant that drifts in one of them (the stub says ``...`` for defaults, and
nothing about private constants) fails here. The compiled core's
``embedsignature`` line stands in where ``inspect`` sees no signature (a
``cdef class``'s ``__init__``).
"""

from __future__ import annotations

import inspect
import numbers
import types
from typing import Any, Dict, List, Optional, Tuple

import pytest

from _helpers import both_cores

pytestmark = pytest.mark.c_extension

Param = Tuple[str, str, Any]  # (name, kind, default or inspect.Parameter.empty)
EMPTY = inspect.Parameter.empty


@pytest.fixture(scope="module")
def cores() -> Tuple[types.ModuleType, types.ModuleType]:
    return both_cores()


def _constants(module: types.ModuleType) -> Dict[str, object]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and isinstance(value, (numbers.Number, str, bytes, tuple))
        and name != "__all__"
    }


def test_all_is_the_same_tuple(cores: Tuple[types.ModuleType, types.ModuleType]) -> None:
    py, c = cores
    assert isinstance(py.__all__, tuple) and isinstance(c.__all__, tuple)
    assert c.__all__ == py.__all__
    for module in cores:
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, f"{module.__name__}.__all__ names what it lacks: {missing}"


def test_split_result_is_exported(cores: Tuple[types.ModuleType, types.ModuleType]) -> None:
    for module in cores:
        assert "split_result" in module.__all__


def test_public_constants_are_equal(cores: Tuple[types.ModuleType, types.ModuleType]) -> None:
    py, c = cores
    got_py, got_c = _constants(py), _constants(c)
    assert set(got_py) == set(got_c), "a public constant only one core has"
    assert (got_c.pop("IMPLEMENTATION"), got_py.pop("IMPLEMENTATION")) == ("cython", "python")
    assert got_c == got_py
    assert set(got_c) <= set(c.__all__), "a public constant missing from __all__"


def test_shared_constants_come_from_one_module(cores: Tuple[types.ModuleType, types.ModuleType]) -> None:
    import plugin_client._core_constants as shared

    for module in cores:
        assert module.DEFAULT_MAX_FRAME_BYTES == shared.DEFAULT_MAX_FRAME_BYTES == 16 * 1024 * 1024


# --- signatures -------------------------------------------------------------------


def _params(sig: inspect.Signature) -> List[Param]:
    return [(p.name, p.kind.name, p.default) for p in sig.parameters.values()]


def _split_top_level(text: str) -> List[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _embedded(doc: Optional[str], module: types.ModuleType) -> List[Param]:
    """The parameters of an ``embedsignature`` line, ``Name(int fd, data, x=DEFAULT)``:
    C types dropped, defaults evaluated in ``module``."""
    assert doc, "no docstring: is embedsignature off?"
    line = doc.splitlines()[0]
    assert "(" in line and line.endswith(")"), f"no embedded signature in {line!r}"
    inner = line[line.index("(") + 1 : -1]
    params: List[Param] = []
    kind = "POSITIONAL_OR_KEYWORD"
    for part in _split_top_level(inner):
        if part == "*":
            kind = "KEYWORD_ONLY"
            continue
        left, eq, default = part.partition("=")
        name = left.split()[-1]
        if name == "self":
            continue
        value = eval(default, vars(module)) if eq else EMPTY  # noqa: S307 - our own docstring
        params.append((name, kind, value))
    return params


def _signature(obj: Any, module: types.ModuleType, *, init_of: Optional[type] = None) -> List[Param]:
    if init_of is not None:
        if module.IMPLEMENTATION == "cython":
            return _embedded(init_of.__doc__, module)
        return [p for p in _params(inspect.signature(init_of.__init__)) if p[0] != "self"]
    return _params(inspect.signature(obj))


def _public_members(cls: type) -> Dict[str, Any]:
    return {name: inspect.getattr_static(cls, name) for name in dir(cls) if not name.startswith("_")}


def test_every_public_callable_has_the_same_signature(cores: Tuple[types.ModuleType, types.ModuleType]) -> None:
    py, c = cores
    problems: List[str] = []
    for name in py.__all__:
        obj_py, obj_c = getattr(py, name), getattr(c, name)
        if isinstance(obj_py, type):
            sig_py = _signature(None, py, init_of=obj_py)
            sig_c = _signature(None, c, init_of=obj_c)
            if sig_py != sig_c:
                problems.append(f"{name}(): {sig_c} != twin {sig_py}")
            members_py, members_c = _public_members(obj_py), _public_members(obj_c)
            if set(members_py) != set(members_c):
                problems.append(f"{name} members differ: {sorted(set(members_py) ^ set(members_c))}")
            for member in sorted(set(members_py) & set(members_c)):
                raw_py, raw_c = members_py[member], members_c[member]
                is_prop_py = isinstance(raw_py, property)
                is_prop_c = inspect.isdatadescriptor(raw_c) and not callable(raw_c)
                if is_prop_py or is_prop_c:
                    if is_prop_py != is_prop_c:
                        problems.append(f"{name}.{member}: a property in one core only")
                    continue
                m_py = _signature(getattr(obj_py, member), py)
                m_c = _signature(getattr(obj_c, member), c)
                if m_py != m_c:
                    problems.append(f"{name}.{member}: {m_c} != twin {m_py}")
        elif callable(obj_py):
            sig_py, sig_c = _signature(obj_py, py), _signature(obj_c, c)
            if sig_py != sig_c:
                problems.append(f"{name}: {sig_c} != twin {sig_py}")
    assert not problems, "\n".join(problems)


def test_the_embedded_signature_parser_sees_keyword_only_and_defaults(
    cores: Tuple[types.ModuleType, types.ModuleType],
) -> None:
    """Guards the test above: it would pass vacuously if it read nothing."""
    _, c = cores
    assert _embedded(c.FrameReader.__doc__, c) == [
        ("fd", "POSITIONAL_OR_KEYWORD", EMPTY),
        ("max_frame_bytes", "POSITIONAL_OR_KEYWORD", c.DEFAULT_MAX_FRAME_BYTES),
        ("exit_fd", "POSITIONAL_OR_KEYWORD", -1),
    ]
    assert _signature(c.Child.wait, c) == [
        ("self", "POSITIONAL_OR_KEYWORD", EMPTY),
        ("timeout", "POSITIONAL_OR_KEYWORD", None),
        ("reap", "KEYWORD_ONLY", True),
    ]
    assert _embedded("spawn(argv, env, *, cwd=None, exec_fd=None)", c)[2:] == [
        ("cwd", "KEYWORD_ONLY", None),
        ("exec_fd", "KEYWORD_ONLY", None),
    ]

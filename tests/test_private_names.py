"""No module of the package imports another's private name (issue 20): what a
module shares, it shares under a public name, even inside a private module
(yarl's ``_quoters`` style)."""

import ast
import importlib
from pathlib import Path
from typing import List, Tuple

import plugin_client

KNOWN: Tuple[Tuple[str, str, str], ...] = ()


def _private_imports() -> List[Tuple[str, str, str]]:
    found = []
    for path in sorted(Path(plugin_client.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                found += [(path.name, node.module, a.name) for a in node.names if a.name.startswith("_")]
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    assert [hit for hit in _private_imports() if hit not in KNOWN] == []


def test_the_wire_modules_export_what_they_name() -> None:
    for name in ("protocol", "_wire", "_diagnose"):
        module = importlib.import_module(f"plugin_client.{name}")
        assert [n for n in module.__all__ if not hasattr(module, n)] == []


def test_the_warm_path_binds_the_wire_objects_themselves() -> None:
    """The engine's warm get reads the template and the reference cache as its own
    module globals (bench/test_bench_roundtrip.py guards the cost): they must be the
    very objects the wire fills, not copies."""
    from plugin_client import _flow, _wire

    assert getattr(_flow, "GET_TEMPLATE") is _wire.GET_TEMPLATE
    assert getattr(_flow, "REF_JSON") is _wire.REF_JSON

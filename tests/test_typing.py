"""The installed package type-checks under ``mypy --strict``, and so does code using it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy")

USER_CODE = textwrap.dedent(
    """
    from plugin_client import PluginClient, LifetimePolicy, load_plugin, GetResult
    from plugin_client._impl import FrameReader, RestartWindow, spawn, write_all

    def host(path: str) -> str:
        with PluginClient(load_plugin(path), policy=LifetimePolicy(request_timeout=1.0)) as c:
            r: GetResult = c.get("x")
            return r.value.get_secret_value()

    def core() -> int:
        child = spawn([b"/bin/true"], {"PATH": "/bin"})
        reader = FrameReader(child.stdout_fd, 1024)
        write_all(child.stdin_fd, b"x\\n", None)
        window = RestartWindow(60.0, 3)
        window.record()
        rc = child.wait(1.0)
        child.close()
        return (rc or 0) + reader.buffered + window.count()
    """
)


@pytest.mark.slow
def test_mypy_strict_on_package_and_user_code(tmp_path: Path) -> None:
    user = tmp_path / "user_code.py"
    user.write_text(USER_CODE)
    base = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache")]
    for target in (["-p", "plugin_client"], [str(user)]):
        proc = subprocess.run(base + target, capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr


PLUGIN_CODE = textwrap.dedent(
    """
    from typing import Any, Dict, List, Optional, Tuple
    from plugin_client.plugin import SecretSourcePlugin, SecretText, serve

    class Good(SecretSourcePlugin):
        def init(self, source_name: str, config: Dict[str, Any]) -> Tuple[int, str]:
            return 1, "v"
        def get(self, reference: str) -> Optional[Tuple[str, int]]:
            return "v", 3
        def list(self) -> List[str]:
            return ["a"]
        def put(self, reference: str, value: SecretText) -> bool:
            return bool(value.get_secret_value())

    class Bad(SecretSourcePlugin):
        def get(self, reference: int) -> str:  # wrong: the argument type
            return "x"
        def validate(self, reference: str) -> str:  # wrong: the return type
            return "yes"

    serve(Good)
    """
)


@pytest.mark.slow
def test_mypy_checks_a_plugins_handler_signatures(tmp_path: Path) -> None:
    """SecretSourcePlugin declares its handlers for type checkers, so a wrongly typed
    override is reported (and a right one is not)."""
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN_CODE)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), str(plugin)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    wrong = [str(n) for n, line in enumerate(PLUGIN_CODE.splitlines(), 1) if "# wrong" in line]
    assert [line.split(":")[1] for line in errors] == wrong, proc.stdout
    assert '"get" is incompatible with supertype' in errors[0]
    assert 'Return type "str" of "validate" incompatible' in errors[1]

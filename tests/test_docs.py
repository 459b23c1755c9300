"""Every shell command and Python snippet in README.md and examples/plugins/README.md runs.

The fenced blocks are read from the documents themselves:

* ``sh`` blocks run with ``sh -e`` in a temporary copy of ``examples/``, whose
  ``.venv`` is a link to the environment running the tests (so ``.venv/bin/plugin-client``
  is this checkout's), with that environment's ``bin`` first on ``PATH``. A block
  that builds C (``cc``, ``build.sh``) is skipped without a C compiler.
* ``python`` blocks run in a fresh interpreter in the same copy, with the names of
  ``plugin_client.__all__`` imported (a snippet may continue an earlier one) and
  top-level ``await`` wrapped in ``asyncio.run``. The README's host snippets name a
  plugin a new user does not have (``plugins/devboy-source-vault.toml``,
  ``db/password``): they run against the bundled Python example ``jsonfile``
  (``SUBSTITUTIONS``), from a plain Python host with no ``$PLUGIN_CLIENT_PYTHON``
  set, as a new user would run them. The SDK snippet is a plugin, so it runs as one, through
  :func:`~plugin_client.conformance.run_conformance`.
* ``text``, ``toml`` and ``json`` blocks are not commands.

``SKIP`` lists, with the reason, the blocks that are not run; a stale entry fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

import pytest

from plugin_client._manifest_files import new_manifest
from plugin_client.conformance import run_conformance

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "examples/plugins/README.md")
BIN = Path(sys.prefix) / "bin"

# (document, the block's first line) -> why it is not run
SKIP: Dict[Tuple[str, str], str] = {
    ("README.md", "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/plugin-client doctor --plugins-dir examples/plugins"):
        "the Quick start's install and run on a fresh machine: .ci/run runs it on a clean clone",
    ("README.md", "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/python -m pytest"):
        "the Quick start's install and test run: .ci/run runs it on a clean clone (and it would run this suite in itself)",
    ("README.md", ".venv/bin/python -m pytest bench --benchmark-only --benchmark-json=bench.json && .venv/bin/python bench/ratios.py bench.json"):
        "the benchmarks take minutes of a shared machine; CI runs each of them once with --benchmark-disable",
    ("examples/plugins/README.md", "#!/bin/sh"):
        "the first two lines of devboy-source-jsonfile, shown to explain them: not a command (test_examples.py runs the file)",
}

SUBSTITUTIONS = (
    ("plugins/devboy-source-vault.toml", "examples/plugins/devboy-source-jsonfile.toml"),
    ('"db/password"', '"demo/db-password"'),
)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


class Block(NamedTuple):
    doc: str
    line: int
    lang: str
    code: str

    @property
    def first(self) -> str:
        return self.code.splitlines()[0] if self.code.strip() else ""


def _blocks() -> List[Block]:
    out = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for m in _FENCE.finditer(text):
            code = textwrap.dedent(m.group("body"))
            out.append(Block(doc, text.count("\n", 0, m.start()) + 1, m.group("lang"), code))
    return out


BLOCKS = _blocks()
RUN = [b for b in BLOCKS if b.lang in ("sh", "python")]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the examples, with ``.venv`` standing for the test environment."""
    if not (BIN / "plugin-client").exists():
        pytest.skip(f"plugin-client is not installed in {sys.prefix} (the documents run .venv/bin/plugin-client)")
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("devboy-source-c-echo*"))
    (work / ".venv").symlink_to(sys.prefix)
    return work


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    # The commands must work as a new user's shell has them: nothing set by a test run.
    for name in ("PLUGIN_CLIENT_PYTHON", "PLUGIN_CLIENT_PLUGINS_DIR", "JSONFILE_SECRETS_PATH", "PYTHONPATH"):
        env.pop(name, None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _python_source(code: str) -> str:
    for old, new in SUBSTITUTIONS:
        code = code.replace(old, new)
    if re.search(r"^(async with|await )|\bawait ", code, re.M):
        code = "import asyncio\n\nasync def _main():\n" + textwrap.indent(code, "    ") + "\n\nasyncio.run(_main())\n"
    return "from plugin_client import *\n" + code


def _run(args: List[str], cwd: Path) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("block", RUN, ids=[f"{b.doc}:{b.line}" for b in RUN])
def test_block_runs_as_written(block: Block, workdir: Path) -> None:
    reason = SKIP.get((block.doc, block.first))
    if reason is not None:
        pytest.skip(reason)
    if block.lang == "sh":
        if re.search(r"\bcc\b|build\.sh", block.code) and shutil.which("cc") is None:
            pytest.skip("needs a C compiler (cc)")
        r = _run(["sh", "-e", "-c", block.code], workdir)
    elif block.first.startswith("# devboy-source-"):
        _run_sdk_plugin(block, workdir)
        return
    else:
        r = _run([sys.executable, "-c", _python_source(block.code)], workdir)
    assert r.returncode == 0, f"{block.doc}:{block.line} failed\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"


def _run_sdk_plugin(block: Block, workdir: Path) -> None:
    exe = workdir / "devboy-source-vault"
    exe.write_text(f"#!{sys.executable}\n{block.code}")
    exe.chmod(0o755)
    report = run_conformance(new_manifest(exe), quiet_wait=0.1)
    assert report.ok, report.to_dict()


def test_every_skip_names_a_block() -> None:
    present = {(b.doc, b.first) for b in BLOCKS}
    assert [key for key in SKIP if key not in present] == []


def test_the_documents_have_the_blocks_this_test_expects() -> None:
    langs = {b.lang for b in BLOCKS}
    assert {"sh", "python"} <= langs
    assert sum(1 for b in RUN if (b.doc, b.first) not in SKIP) >= 10

"""``plugin-client manifest new|update|verify``, run as a subprocess as an author would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from plugin_client.manifest import load_plugin

SH = b"#!/bin/sh\nexit 0\n"


def _run(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "plugin_client", "manifest", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def exe(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "devboy-source-vault"
    path.write_bytes(SH)
    os.chmod(path, 0o755)
    return path


def test_new_writes_a_manifest_that_loads(exe: Path) -> None:
    r = _run("new", str(exe), "--version", "2.0.0", "--allow-env", "HOME", "--allow-env", "PATH")
    assert r.returncode == 0, r.stderr
    plugin = load_plugin(exe.parent / "devboy-source-vault.toml")
    assert (plugin.name, plugin.manifest.version, plugin.manifest.allowed_env_vars) == ("vault", "2.0.0", ("HOME", "PATH"))
    assert plugin.manifest.executable == "devboy-source-vault"


def test_new_names_another_file_by_its_stem_or_by_name(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    script = tmp_path / "vault.py"
    script.write_bytes(SH)
    os.chmod(script, 0o755)
    assert _run("new", str(script)).returncode == 0
    assert load_plugin(tmp_path / "devboy-source-vault.toml").manifest.executable == "vault.py"
    assert _run("new", str(script), "--name", "other").returncode == 0
    assert load_plugin(tmp_path / "devboy-source-other.toml").name == "other"


def test_new_refuses_what_the_loader_refuses(exe: Path) -> None:
    for bad in ("-dash", "has space", "a/b", ""):
        r = _run("new", str(exe), f"--name={bad}")
        assert r.returncode == 1 and "ManifestFieldError" in r.stderr and "plugin name must be" in r.stderr, (bad, r.stderr)
    r = _run("new", str(exe), "--allow-env", "A=B")
    assert r.returncode == 1 and "allowed_env_vars" in r.stderr
    os.chmod(exe, 0o777)
    r = _run("new", str(exe))
    assert r.returncode == 1 and "UnsafePermissions" in r.stderr
    assert not (exe.parent / "devboy-source-vault.toml").exists()
    r = _run("new", str(exe.parent / "missing"))
    assert r.returncode == 1 and "ExecutableMissing" in r.stderr


def test_new_keeps_an_existing_manifest_unless_forced(exe: Path) -> None:
    assert _run("new", str(exe)).returncode == 0
    manifest = exe.parent / "devboy-source-vault.toml"
    manifest.write_text(manifest.read_text().replace('version = "0.1.0"', 'version = "9"'))
    r = _run("new", str(exe))
    assert r.returncode == 1 and "--force" in r.stderr and 'version = "9"' in manifest.read_text()
    assert _run("new", str(exe), "--force").returncode == 0
    assert 'version = "0.1.0"' in manifest.read_text()


def test_update_rewrites_only_the_checksum_and_verify_follows(exe: Path) -> None:
    assert _run("new", str(exe)).returncode == 0
    manifest = exe.parent / "devboy-source-vault.toml"
    text = "# my plugin\n" + manifest.read_text().replace("\nchecksum", "\n  checksum") .rstrip("\n") + "  # pinned\n"
    manifest.write_text(text)
    assert _run("verify", str(manifest)).returncode == 0
    r = _run("update", str(manifest))
    assert r.returncode == 0 and r.stdout.startswith("unchanged")
    exe.write_bytes(SH + b"# rebuilt\n")
    r = _run("verify", str(manifest))
    assert r.returncode == 1 and "ChecksumMismatch" in r.stderr
    r = _run("update", str(manifest))
    assert r.returncode == 0 and r.stdout.startswith("updated"), r.stderr
    new_text = manifest.read_text()
    assert [a for a in zip(text.splitlines(), new_text.splitlines()) if a[0] != a[1]] == [
        (text.splitlines()[-1], new_text.splitlines()[-1])
    ]
    assert new_text.endswith("  # pinned\n") and _run("verify", str(manifest)).returncode == 0


def test_update_without_a_checksum_line_says_how_to_fix_it(exe: Path) -> None:
    assert _run("new", str(exe)).returncode == 0
    manifest = exe.parent / "devboy-source-vault.toml"
    manifest.write_text(manifest.read_text().replace("checksum_sha256 = ", "\"checksum_sha256\" = "))
    exe.write_bytes(SH + b"# rebuilt\n")
    r = _run("update", str(manifest))
    assert r.returncode == 1 and "set it by hand" in r.stderr


def test_verify_names_the_problem(tmp_path: Path) -> None:
    r = _run("verify", str(tmp_path / "devboy-source-none.toml"))
    assert r.returncode == 1 and "ManifestUnreadable" in r.stderr
    assert _run("verify").returncode == 2

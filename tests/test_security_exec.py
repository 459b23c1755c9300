"""Who may change what a plugin's path runs, and what runs once it is verified (issue 19,
items 2 and 3).

* The rules on the path, as OpenSSH's StrictModes and sudo apply them: every
  directory of the resolved path up to ``/``, and the executable, owned by root
  or the host's user; none writable by group or others without the sticky bit;
  in a sticky directory others can write, the entry below owned by root or us.
* What runs: an ELF plugin from a sealed memfd copy of the bytes that were
  hashed. A loop that swaps the plugin's directory with a sibling holding
  another binary (``renameat2(RENAME_EXCHANGE)``) while the host respawns, and a
  rewrite through a shared writable ``mmap`` made before verification, never
  get other bytes run.

The tests run as root (as CI does): other owners are made with ``chown`` to
uid 65534.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import subprocess
import threading
import time
import types
from pathlib import Path
from typing import Any, Dict, List

import pytest

from plugin_client import LifetimePolicy, PluginClient, errors
from plugin_client import manifest as mf
from plugin_client.manifest import load_plugin, verify_executable

from _reliability import _compiler, c_plugins, scaled  # noqa: F401  (fixture)
from plugin_factory import write_manifest

NOBODY = 65534
RESPAWN = LifetimePolicy(
    request_timeout=5.0, start_timeout=5.0, shutdown_grace=0.5, exit_wait=0.2, restart_cap=1_000_000
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root (CI runs as root)"),
    pytest.mark.skipif(
        {"x86_64": 316, "aarch64": 276}.get(os.uname().machine) is None,
        reason="renameat2's system call number is known here for x86_64 and aarch64 only",
    ),
]


def _install(directory: Path, data: bytes, name: str = "x", mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / f"devboy-source-{name}"
    exe.write_bytes(data)
    os.chmod(exe, mode)
    return write_manifest(directory, name, exe.name, hashlib.sha256(data).hexdigest())


def _refused(manifest: Path, component: Path, rule: str) -> errors.UnsafePermissions:
    with pytest.raises(errors.UnsafePermissions) as info:
        load_plugin(manifest)
    err = info.value
    assert (err.component, err.rule) == (str(component), rule)
    assert repr(str(component)) in err.message and err.plugin == "x"
    return err


# --- the rules on the path ---------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``shared/plugins/`` under the test's directory, all 0755 and root's."""
    root = tmp_path / "shared"
    (root / "plugins").mkdir(parents=True)
    for d in (tmp_path, root, root / "plugins"):
        os.chmod(d, 0o755)
    return root


def test_world_writable_ancestor_without_sticky_bit_is_refused(tree: Path) -> None:
    manifest = _install(tree / "plugins", b"#!/bin/sh\n")
    load_plugin(manifest)
    os.chmod(tree, 0o777)
    err = _refused(manifest, tree, "writable")
    assert "all users without the sticky bit (mode 0o777)" in err.message and "chmod go-w" in err.message


def test_group_writable_ancestor_is_refused(tree: Path) -> None:
    manifest = _install(tree / "plugins", b"#!/bin/sh\n")
    os.chmod(tree, 0o775)
    err = _refused(manifest, tree, "writable")
    assert "its group without the sticky bit" in err.message


def test_ancestor_owned_by_another_user_is_refused(tree: Path) -> None:
    manifest = _install(tree / "plugins", b"#!/bin/sh\n")
    os.chown(tree, NOBODY, NOBODY)
    err = _refused(manifest, tree, "owner")
    assert f"owned by uid {NOBODY}, neither root nor the host's user" in err.message


def test_executable_owned_by_another_user_is_refused(tree: Path) -> None:
    manifest = _install(tree / "plugins", b"#!/bin/sh\n")
    exe = tree / "plugins" / "devboy-source-x"
    os.chown(exe, NOBODY, NOBODY)
    _refused(manifest, exe, "owner")


def test_sticky_world_writable_ancestor_with_our_entry_is_accepted(tree: Path) -> None:
    """Like /tmp: others may add entries but not rename ours."""
    manifest = _install(tree / "plugins", b"#!/bin/sh\n")
    os.chmod(tree, 0o1777)
    assert load_plugin(manifest).executable.via == "path"


def test_sticky_ancestor_whose_entry_another_user_owns_is_refused(tree: Path) -> None:
    manifest = _install(tree / "plugins", b"#!/bin/sh\n")
    os.chmod(tree, 0o1777)
    os.chown(tree / "plugins", NOBODY, NOBODY)
    err = _refused(manifest, tree / "plugins", "sticky")
    assert "sticky bit protects only" in err.message


def test_symlinked_ancestor_is_judged_on_what_it_resolves_to(tree: Path, tmp_path: Path) -> None:
    """The manifest names the executable relatively, through a link to a 0777 directory."""
    real = tmp_path / "real"
    data = b"#!/bin/sh\n"
    _install(real, data)
    os.chmod(real, 0o777)
    (tree / "plugins" / "link").symlink_to(real)
    manifest = write_manifest(tree / "plugins", "x", "link/devboy-source-x", hashlib.sha256(data).hexdigest())
    err = _refused(manifest, real, "writable")
    assert err.path == str(tree / "plugins" / "link" / "devboy-source-x")


# --- what runs ---------------------------------------------------------------------

_EVIL_C = r"""
#include <fcntl.h>
#include <unistd.h>
int main(void) { close(open(MARKER, O_CREAT | O_WRONLY, 0644)); return 3; }
"""


def _compile(tmp_path: Path, source: str, *defines: str) -> bytes:
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (cc)")
    src = tmp_path / "evil.c"
    src.write_text(source)
    out = tmp_path / "evil.bin"
    subprocess.run([cc, "-O2", *defines, "-o", str(out), str(src)], check=True, capture_output=True)
    return out.read_bytes()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}.get(os.uname().machine, -1)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: bytes, b: bytes) -> None:
    if _libc.syscall(_SYS_RENAMEAT2, _AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Exchange:
    """``shared/plugins`` (the verified C plugin) and ``shared/evil`` (a binary that creates
    ``marker``), swapped in a loop by a thread while the host respawns. ``shared`` is
    sticky and 1777 (as /tmp), so the path rules accept it: in a real attack the sticky
    bit keeps another user from this very rename, and root (the test) plays that user
    to test what is executed."""

    def __init__(self, tmp_path: Path, plugin_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
        # Not racy: a racy verification re-hashes through the path at each spawn,
        # which refuses nearly every spawn here and leaves the exec untested.
        monkeypatch.setattr(mf, "RACY_WINDOW_NS", 0)
        self.shared = tmp_path / "shared"
        self.shared.mkdir()
        os.chmod(tmp_path, 0o755)
        os.chmod(self.shared, 0o1777)
        self.marker = tmp_path / "MARKER-evil-ran"
        evil = _compile(tmp_path, _EVIL_C, f'-DMARKER="{self.marker}"')
        self.plugin = load_plugin(_install(self.shared / "plugins", plugin_bytes, "hostile"))
        (self.shared / "evil").mkdir()
        (self.shared / "evil" / "devboy-source-hostile").write_bytes(evil)
        os.chmod(self.shared / "evil" / "devboy-source-hostile", 0o755)
        self.swaps = 0
        self.outcomes: Dict[str, int] = {}

    def run(self, respawns: int, until_marker: bool = False) -> int:
        """Requests until ``respawns`` processes were spawned, each request on a fresh
        process (refused spawns do not count); returns the spawn count."""
        stop = threading.Event()

        def swapper() -> None:
            a, b = os.fsencode(self.shared / "plugins"), os.fsencode(self.shared / "evil")
            while not stop.is_set():
                _exchange(a, b)
                self.swaps += 1
                time.sleep(20e-6)  # lets the host thread have the GIL between swaps

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        try:
            with PluginClient(self.plugin, policy=RESPAWN) as c:
                while c.health().spawn_count < respawns and not (until_marker and self.marker.exists()):
                    try:
                        assert c.get("value:ok").value.get_secret_value() == "ok"
                        c.get("crash")  # the plugin exits: the next request spawns
                    except errors.PluginClientError as exc:
                        name = type(exc).__name__
                        self.outcomes[name] = self.outcomes.get(name, 0) + 1
                spawns: int = c.health().spawn_count
        finally:
            stop.set()
            thread.join()
        return spawns


def test_control_the_exchange_loop_runs_the_evil_binary_by_path(
    c_plugins: Dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the verified descriptor (the plugin run by its path, as before), the loop
    gets the evil binary run: the probe works."""
    ex = Exchange(tmp_path, c_plugins["c_hostile"], monkeypatch)
    object.__setattr__(ex.plugin.executable, "exec_fd", None)
    spawns = ex.run(2_000, until_marker=True)
    print(f"\ncontrol: the evil binary ran within {spawns} spawns ({ex.swaps} swaps)")
    assert ex.marker.exists(), f"the evil binary never ran in {spawns} spawns"


@pytest.mark.slow
def test_directory_exchange_loop_runs_nothing_unverified(
    c_plugins: Dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's attack. A spawn that finds the path swapped is refused
    (ExecutableChanged: refused, not run); one that does not runs the verified bytes
    from their memfd, whatever the path names by the time of the exec."""
    ex = Exchange(tmp_path, c_plugins["c_hostile"], monkeypatch)
    assert ex.plugin.executable.via == "memfd"
    t0 = time.monotonic()
    spawns = ex.run(scaled(2_000, 10_000))
    print(f"\n{spawns} spawns, {ex.swaps} swaps, {ex.outcomes} in {time.monotonic() - t0:.1f} s")
    assert not ex.marker.exists()
    assert set(ex.outcomes) <= {"PluginCrashed", "ExecutableChanged"}
    assert spawns == scaled(2_000, 10_000) and ex.outcomes.get("ExecutableChanged", 0) > 0


@pytest.fixture
def good_and_evil(c_plugins: Dict[str, bytes]) -> List[bytes]:
    """c_hostile, and the same binary with another plugin_version: same size, other bytes."""
    good = c_plugins["c_hostile"]
    assert good.count(b"c-hostile-1") == 1
    return [good, good.replace(b"c-hostile-1", b"c-hostile-E")]


def _map_and_verify(path: Path, good: bytes, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install ``good`` at ``path``, map it shared and writable, verify it. The
    verification is made old enough not to re-hash (the racy window is for a
    rewrite within the same clock tick, not for a mapping)."""
    monkeypatch.setattr(mf, "RACY_WINDOW_NS", 0)
    _install(path.parent, good, "hostile")
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, len(good), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)
    m[:4] = good[:4]  # dirty the mapping before verification, as an attacker would
    verified = verify_executable(path, hashlib.sha256(good).hexdigest(), plugin="hostile")
    assert verified.via == "memfd" and not verified.racy
    return m, verified


def _rewrite(m: mmap.mmap, data: bytes) -> None:
    """Write through the mapping, then unmap: the kernel refuses to exec a file while
    a writable mapping of it exists (ETXTBSY), so the attacker lets go first."""
    m[:] = data
    m.flush()
    m.close()


def _init_version(core: types.ModuleType, argv: List[bytes], **kwargs: Any) -> bytes:
    child = core.spawn(argv, {}, **kwargs)
    try:
        core.write_all(
            child.stdin_fd,
            b'{"jsonrpc":"2.0","id":1,"method":"secret_source.init","params":{"source_name":"s","config":{}}}\n',
            core.monotonic() + 5,
        )
        line = bytes(core.FrameReader(child.stdout_fd).read_frame(core.monotonic() + 5))
        return line.split(b'"plugin_version":"')[1].split(b'"')[0]
    finally:
        child.kill()
        child.wait(5)
        child.close()


def test_rewrite_through_a_shared_mapping_does_not_change_what_runs(
    core: types.ModuleType, good_and_evil: List[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, evil = good_and_evil
    exe = tmp_path / "plugins" / "devboy-source-hostile"
    m, verified = _map_and_verify(exe, good, monkeypatch)
    _rewrite(m, evil)
    assert exe.read_bytes() == evil  # the attack worked on the file...
    assert _init_version(core, [verified.path_bytes]) == b"c-hostile-E"  # ...and on its path
    assert _init_version(core, [verified.path_bytes], exec_fd=verified.exec_fileno) == b"c-hostile-1"


def test_client_runs_the_verified_bytes_after_a_rewrite_through_a_mapping(
    good_and_evil: List[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, evil = good_and_evil
    exe = tmp_path / "plugins" / "devboy-source-hostile"
    m, verified = _map_and_verify(exe, good, monkeypatch)
    _rewrite(m, evil)
    manifest_path = exe.parent / "devboy-source-hostile.toml"
    plugin = mf.LoadedPlugin(manifest=mf.load_manifest(manifest_path), manifest_path=manifest_path, executable=verified)
    with PluginClient(plugin, policy=RESPAWN) as c:
        try:
            c.get("value:x")
        except errors.ExecutableChanged:  # the write through the map moved the ctime: refused
            return
        assert c.health().plugin_version == "c-hostile-1"


def test_binary_using_origin_runs_from_the_verified_file(tmp_path: Path) -> None:
    """$ORIGIN resolves through /proc/self/exe, which for a memfd names no directory: such
    a binary runs from the verified file's descriptor instead."""
    data = _compile(tmp_path, "int main(void) { return 0; }\n", "-Wl,-rpath,$ORIGIN/lib")
    assert b"$ORIGIN" in data
    manifest = _install(tmp_path / "plugins", data)
    verified = load_plugin(manifest).executable
    assert verified.via == "fd"
    assert os.readlink(f"/proc/self/fd/{verified.exec_fileno}") == str(verified.path)


def test_script_runs_by_path(tmp_path: Path) -> None:
    verified = load_plugin(_install(tmp_path / "plugins", b"#!/bin/sh\n")).executable
    assert (verified.via, verified.exec_fileno) == ("path", None)


def test_verified_descriptor_closes_with_its_executable(c_plugins: Dict[str, bytes], tmp_path: Path) -> None:
    verified = load_plugin(_install(tmp_path / "plugins", c_plugins["c_hostile"])).executable
    fd = verified.exec_fileno
    assert fd is not None and os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & seals == seals
    del verified
    with pytest.raises(OSError) as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF

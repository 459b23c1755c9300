"""Shared helpers for the reliability, security and fuzz suites.

* ``c_plugins``: a session fixture that compiles the small C plugins of
  ``tests/plugins/*.c`` once, with ``cc``, into a temporary directory (the
  tests skip if there is no C compiler);
* ``c_plugin``: copies one of them into a fresh plugin directory beside a
  manifest with the right checksum, as ``make_plugin`` does for scripts;
* ``/proc`` probes (zombies, fds, RSS and its peak) and waits;
* ``bounded``: a call that fails the test, rather than hangs it, if it never
  returns; ``kill_quietly`` for what a test leaves behind on purpose;
* ``scaled``: the CI figure of a long scenario, or the issue's full figure
  under ``PLUGIN_CLIENT_STRESS=1``.

Every test that starts a process also ends it; these helpers never leave one.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, TypeVar

import pytest

from plugin_client.manifest import LoadedPlugin

from plugin_factory import make_plugin

PLUGINS = Path(__file__).parent / "plugins"
C_SOURCES = ("c_hostile", "c_crash")

T = TypeVar("T")

STRESS = os.environ.get("PLUGIN_CLIENT_STRESS", "") not in ("", "0")


def scaled(ci: int, full: int) -> int:
    """``full`` (the issue's figure) under ``PLUGIN_CLIENT_STRESS=1``, else ``ci``."""
    return full if STRESS else ci


# --- C plugins ------------------------------------------------------------------


def _compiler() -> Optional[str]:
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


@pytest.fixture(scope="session")
def c_plugins(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, bytes]:
    """The compiled C plugins' bytes, by source name (``c_hostile``, ``c_crash``)."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (cc) to build the C test plugins")
    out_dir = tmp_path_factory.mktemp("c-plugins")
    built: Dict[str, bytes] = {}
    for name in C_SOURCES:
        exe = out_dir / name
        subprocess.run([cc, "-O2", "-o", str(exe), str(PLUGINS / f"{name}.c")], check=True, capture_output=True)
        built[name] = exe.read_bytes()
    return built


def c_plugin(
    binaries: Dict[str, bytes],
    directory: Path,
    source: str = "c_hostile",
    name: str = "hostile",
    allowed_env_vars: Iterable[str] = (),
) -> LoadedPlugin:
    return make_plugin(directory, name, binaries[source], allowed_env_vars)


# --- /proc ------------------------------------------------------------------------


def proc_state(pid: int) -> Optional[str]:
    """The state letter of ``pid`` (``R``, ``S``, ``Z``...), or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(b")") + 2 :].split()[0].decode()


def alive(pid: int) -> bool:
    """Running or sleeping: not gone and not a zombie (an orphan's zombie counts as dead)."""
    return proc_state(pid) not in (None, "Z", "X")


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def proc_stats() -> Iterator[Tuple[int, List[bytes]]]:
    """``(pid, fields)`` of every process: ``/proc/<pid>/stat`` after the command
    name, so ``fields[0]`` is the state, ``[1]`` the parent, ``[2]`` the group."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        yield int(name), raw[raw.rindex(b")") + 2 :].split()


def children_of(ppid: int) -> Dict[int, str]:
    """``{pid: state}`` of every process whose parent is ``ppid``."""
    return {pid: rest[0].decode() for pid, rest in proc_stats() if int(rest[1]) == ppid}


def group_members(pgid: int) -> List[int]:
    """Live processes whose process group is ``pgid``."""
    return [pid for pid, rest in proc_stats() if int(rest[2]) == pgid and rest[0] not in (b"Z", b"X")]


def zombies() -> List[int]:
    return [pid for pid, state in children_of(os.getpid()).items() if state == "Z"]


def fd_count() -> int:
    # Garbage first: an earlier test's unreachable client may still hold a
    # verified executable's descriptor, which a collection could close mid-test.
    gc.collect()
    # The listing's own directory fd is counted every time, so it cancels out.
    return len(os.listdir("/proc/self/fd"))


def _have_pidfd() -> bool:
    try:
        fd = os.pidfd_open(os.getpid())  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return False
    os.close(fd)
    return True


#: The host fds one live plugin process holds: its stdin, stdout and stderr pipe
#: ends, and a pidfd where the kernel has them.
FDS_PER_PROCESS = 4 if _have_pidfd() else 3


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)  # pragma: no cover


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    return _status_kib("VmHWM") * 1024


MiB = 1024 * 1024


# --- bounds ---------------------------------------------------------------------------


def bounded(fn: Callable[[], T], timeout: float) -> Tuple[float, T]:
    """``(seconds it took, its result)`` of ``fn()``, run in a daemon thread so that a
    call that never returns fails the test after ``timeout`` instead of hanging the
    suite (the caller's teardown must then free it: kill what it waits for).
    ``fn``'s exception is raised here."""
    box: List[Tuple[bool, Any]] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:
            box.append((False, exc))

    t = threading.Thread(target=run, name="bounded-call", daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(timeout)
    took = time.monotonic() - t0
    assert box, f"still running after {timeout:g} s"
    ok, out = box[0]
    if not ok:
        raise out
    return took, out


def kill_quietly(*pids: int) -> None:
    """SIGKILL each of ``pids`` that still exists (a test's escaped daemons)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

"""Helpers and fixtures for the core tests (``test_core_*.py``).

The fixtures live here rather than in ``conftest.py`` and are imported by the
modules that use them. Every fd a test makes and every child it spawns is
closed and reaped at teardown, because the suite runs with
``filterwarnings = error`` and a leak in one test must not show up in
another.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import select
import signal
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, List, Optional, Union

import pytest

SRC_DIR = str(Path(importlib.util.find_spec("plugin_client").submodule_search_locations[0]).parent)  # type: ignore[union-attr,index]


def compiled_core_built() -> bool:
    return importlib.util.find_spec("plugin_client._core") is not None


def both_cores() -> tuple[types.ModuleType, types.ModuleType]:
    """``(_core_py, _core)``, imported directly; for differential tests, which
    carry the ``c_extension`` mark and so are deselected without the C core."""
    return (
        importlib.import_module("plugin_client._core_py"),
        importlib.import_module("plugin_client._core"),
    )


# --- /proc ------------------------------------------------------------------


def open_fds(pid: Union[int, str] = "self") -> set[int]:
    """The fds open in ``pid``. For ``self`` the listing's own directory fd is
    not in the result (it is closed again by the time ``listdir`` returns)."""
    fds = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    if pid == "self":
        fds = {fd for fd in fds if _fd_alive(fd)}
    return fds


def _fd_alive(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def proc_stat(pid: int) -> Optional[tuple[str, int, int]]:
    """``(state, ppid, pgrp)`` of ``pid``, or ``None`` if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except ProcessLookupError:  # pragma: no cover - raced with the process exiting
        return None
    # The command name is in parentheses and may itself hold ") ".
    rest = raw[raw.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[1]), int(rest[2])


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def zombie_children(ppid: Optional[int] = None) -> list[int]:
    """Pids of zombies whose parent is ``ppid`` (this process by default)."""
    ppid = os.getpid() if ppid is None else ppid
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st is not None and st[0] == "Z" and st[1] == ppid:
            out.append(int(name))
    return out


def is_dead(pid: int) -> bool:
    """No such process, or a zombie (an orphan whose reaper has not run yet)."""
    st = proc_stat(pid)
    return st is None or st[0] in ("Z", "X")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


# --- pipes ------------------------------------------------------------------


def read_until_eof(fd: int, timeout: float = 10.0) -> bytes:
    """Everything from non-blocking ``fd`` until EOF."""
    chunks: List[bytes] = []
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no EOF on fd {fd} within {timeout} s") from None
            poller.poll(max(1, int(remaining * 1000)))
            continue
        if not data:
            return b"".join(chunks)
        chunks.append(data)


class Pipe:
    """An ``os.pipe()`` whose ends are closed at teardown unless the test did."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def close_r(self) -> None:
        if self.r >= 0:
            os.close(self.r)
            self.r = -1

    def close_w(self) -> None:
        if self.w >= 0:
            os.close(self.w)
            self.w = -1

    def close(self) -> None:
        self.close_r()
        self.close_w()


@pytest.fixture
def make_pipe() -> Iterator[Callable[[], Pipe]]:
    made: List[Pipe] = []

    def factory() -> Pipe:
        p = Pipe()
        made.append(p)
        return p

    yield factory
    for p in made:
        p.close()


@pytest.fixture
def two_cpus() -> Iterator[None]:
    """This thread allowed on two CPUs (the compiled reader spins only then);
    its affinity is restored afterwards."""
    old = os.sched_getaffinity(0)
    if len(old) < 2:
        pytest.skip("needs two CPUs to spin")
    os.sched_setaffinity(0, sorted(old)[:2])
    yield
    os.sched_setaffinity(0, old)


# --- children ---------------------------------------------------------------


class Spawner:
    """Spawns children through a core and kills, reaps and closes them at teardown."""

    def __init__(self) -> None:
        self.children: List[Any] = []

    def __call__(
        self,
        core: types.ModuleType,
        argv: Sequence[Union[str, bytes]],
        env: Optional[Mapping[Any, Union[str, bytes]]] = None,
        **kwargs: Any,
    ) -> Any:
        child = core.spawn(list(argv), {} if env is None else env, **kwargs)
        self.children.append(child)
        return child

    def cleanup(self) -> None:
        for child in self.children:
            if child.returncode is None:
                child.kill()
                child.wait(10)
            child.close()


@pytest.fixture
def spawner() -> Iterator[Spawner]:
    s = Spawner()
    yield s
    s.cleanup()


def roundtrip(core: types.ModuleType, child: Any, line: bytes = b"ping\n") -> bytes:
    """Write ``line`` to a ``cat`` child and read it back: proof that the child
    has exec'd and wired its stdin and stdout."""
    core.write_all(child.stdin_fd, line, core.monotonic() + 5)
    reader = core.FrameReader(child.stdout_fd)
    return bytes(reader.read_frame(core.monotonic() + 5))


def sigpipe_is_ignored() -> bool:
    return signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN

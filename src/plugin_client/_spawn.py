"""Starting one client's plugin processes: the executable, verified once and
checked before each start, the environment, and the spawn. A start that fails
is booked as a crash; the host's own state (running out of file descriptors)
and an executable whose bytes changed on disk after it was verified are not the
plugin's crash, so nothing is counted for them (the latter shows in
``health().executable_changed``). A change of metadata only (``touch``, a safe
``chmod``, a rename over it of identical bytes) is verified again by hash and
the spawn goes ahead (``VerifiedExecutable.current``); the flow books a
process that started. It does not decide what a refusal means for a probe
after a cooldown: ``Lifecycle`` does."""

from __future__ import annotations

import errno
import os
from typing import Callable, Optional, Union

from . import _messages as messages
from ._core_errors import SpawnFailed
from ._exec_image import FD_EXHAUSTED
from ._lifecycle import Lifecycle
from ._process import PluginProcess
from ._spawn_env import plugin_env
from .errors import ExecutableChanged, PluginClientError, SpawnError
from .manifest import PluginManifest, VerifiedExecutable, verify_executable
from .policy import LifetimePolicy

__all__ = ("Spawner",)

_PathLike = Union[str, "os.PathLike[str]"]


class Spawner:
    """How one client starts a process (:meth:`start`)."""

    __slots__ = ("name", "manifest", "policy", "exe_source", "verified", "start_process")

    def __init__(
        self,
        manifest: PluginManifest,
        executable: Union[VerifiedExecutable, _PathLike, None],
        policy: LifetimePolicy,
        start_process: Optional[Callable[..., PluginProcess]] = None,
    ) -> None:
        self.name = manifest.name
        self.manifest = manifest
        self.policy = policy
        self.exe_source = executable
        self.verified: Optional[VerifiedExecutable] = (
            executable if isinstance(executable, VerifiedExecutable) else None
        )
        # PluginProcess.start, or what a test or a benchmark puts in its place
        # (a fake process; another core).
        self.start_process = start_process if start_process is not None else PluginProcess.start

    def executable(self) -> VerifiedExecutable:
        """The plugin's executable, verified against the manifest's checksum once."""
        if self.verified is None:
            src = self.exe_source if self.exe_source is not None else self.manifest.executable_path()
            assert not isinstance(src, VerifiedExecutable)
            self.verified = verify_executable(src, self.manifest.checksum_sha256, plugin=self.name)
        return self.verified

    def start(self, life: Lifecycle) -> PluginProcess:
        """Check the executable and spawn a process; a failure the plugin is to
        blame for is booked in ``life`` as a crash and raised."""
        p = self.policy
        try:
            verified = self.executable()
            exe = verified.current(plugin=self.name)
        except ExecutableChanged as exc:
            # Not the plugin's crash: it never ran. Every spawn looks again, so a
            # restored file passes; health() says what else to do.
            life.on_refused(str(exc))
            raise
        except (PluginClientError, OSError) as exc:
            # Out of fds is the host's state, not the plugin's: no crash is booked.
            if getattr(exc, "errno", None) in FD_EXHAUSTED:
                raise self.out_of_fds(exc) from exc
            if not isinstance(exc, PluginClientError):
                raise
            life.on_crash(str(exc))
            raise
        if exe is not verified:  # only its metadata changed: the next check is one lstat again
            self.verified = exe
        try:
            return self.start_process(
                [exe.path_bytes],
                plugin_env(self.manifest.allowed_env_vars),
                plugin_name=self.name,
                max_frame_bytes=p.max_frame_bytes,
                stderr_lines=p.stderr_lines,
                exec_fd=exe.exec_fileno,
            )
        except OSError as exc:
            if exc.errno in FD_EXHAUSTED:
                raise self.out_of_fds(exc) from exc
            if not isinstance(exc, SpawnFailed):
                raise
            cause = messages.cannot_start(self.name, str(exe.path), exc.errno or 0)
            msg = messages.crashed(cause, killed=False, now_disabled=life.on_crash(cause), policy=p)
            raise SpawnError(msg, plugin=self.name) from exc

    def out_of_fds(self, exc: BaseException) -> SpawnError:
        code = getattr(exc, "errno", None) or errno.EMFILE
        return SpawnError(messages.out_of_fds(self.name, code), plugin=self.name)

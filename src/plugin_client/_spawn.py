"""Starting one client's plugin processes: the executable, verified once and
checked unchanged before each start, the environment, and the spawn. A start
that fails is booked as a crash (the host's own state, such as running out of
file descriptors, is not); the flow books a process that started."""

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
from .errors import PluginClientError, SpawnError
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
            exe = self.executable()
            exe.check_unchanged(plugin=self.name)
        except (PluginClientError, OSError) as exc:
            # Out of fds is the host's state, not the plugin's: no crash is booked.
            if getattr(exc, "errno", None) in FD_EXHAUSTED:
                raise self.out_of_fds(exc) from exc
            if not isinstance(exc, PluginClientError):
                raise
            life.on_crash(str(exc))
            raise
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

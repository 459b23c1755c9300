"""Load plugin sidecar manifests and verify the executables they name.

A secret-source plugin is described by one TOML file, ``<prefix><name>.toml``,
in a plugins directory (the existing ecosystem's prefix is ``devboy-source-``,
so ``devboy-source-vault.toml`` describes the plugin ``vault``)::

    name = "vault"                        # must equal the name in the file name
    version = "0.1.0"                     # advisory
    executable = "devboy-source-vault"    # relative to the manifest's directory, or absolute
    allowed_env_vars = ["HOME", "PATH"]   # the only variables the plugin receives (default: none)
    checksum_sha256 = "<64 hex digits>"   # SHA-256 of the executable's bytes; case-insensitive

What this module does:

* :func:`load_manifest` checks the file name, parses the TOML and validates it
  into a frozen :class:`PluginManifest`. Unknown keys are an error. Every
  problem is raised as a typed :class:`~plugin_client.errors.ManifestError`
  whose message names the file and says what to do; no pydantic or TOML
  exception escapes.
* :func:`verify_executable` walks the executable's resolved directory from
  ``/`` and refuses a directory on the way that a user other than root and the
  host's user owns, or that its group or others can write without the sticky
  bit (``_trusted_path``); it then opens the executable once in the directory
  it checked, refuses a symbolic link, a non-regular file, a file without an
  execute bit, a file writable by group or others or owned by another user,
  hashes the bytes *from that same descriptor* and compares them with the
  declared checksum. It returns a :class:`VerifiedExecutable` that remembers
  the file's identity (device, inode, size, mtime, ctime) and holds what a
  spawn runs (``_exec_image``: for an ELF binary a sealed memfd copy of the
  bytes that were hashed).
* :func:`executable_sha256` makes the same checks and returns the hash, for
  a tool that writes a manifest (``plugin-client manifest``).
* :func:`load_plugin` does both; :func:`discover_plugins` does it for every
  ``<prefix>*.toml`` in a directory and reports each manifest on its own, so
  one broken manifest never hides the others.

What it deliberately does not do: it never spawns or executes anything, never
reads the environment and never talks to a plugin. Spawning belongs to
``PluginClient``. It does not check the manifest file's own permissions or
ownership, and it does not follow a symbolic link as the executable's last
path component (symbolic links in the directories above it are followed, and
the directories they lead to are the ones judged).

The spawn-time defence. Verification and execution happen at different times,
so the file could be replaced in between. An ELF binary is run from the
descriptor the verification holds (``spawn(exec_fd=...)``), so what runs is
what was hashed whatever happens to the path. In addition, and for scripts,
which run by path, the client calls
:meth:`VerifiedExecutable.current` right before the spawn: if the file's
device, inode, size, mtime or ctime differ from those recorded when it was
hashed (:meth:`VerifiedExecutable.check_unchanged` refuses it then), the path
is verified again from scratch, and the spawn goes ahead (with the new
verification) only if the bytes still match the checksum: a ``touch`` or a
safe ``chmod`` is forgiven, other bytes are never run. A rename over the path gives a new inode;
an in-place rewrite changes the ctime, which, unlike the mtime, no user can set
back (``os.utime`` itself updates it), so a forged mtime does not hide it.
Timestamps have a granularity (the kernel's coarse clock, a few milliseconds;
two seconds on FAT), so a rewrite within the same tick as the verification
could leave every field equal. As ``git`` does for "racily clean" index
entries, a verification made less than :data:`RACY_WINDOW_NS` after the file's
last ctime marks the result ``racy``, and ``check_unchanged`` then re-hashes
the file (through a fresh ``O_NOFOLLOW`` descriptor) until the ctime is old
enough for the cheap check to be sound. For an executable installed more than a
few seconds before verification, ``check_unchanged`` is one ``lstat``.

Why not execute a script's descriptor too? For a ``#!`` script the kernel
hands the interpreter a ``/dev/fd/N`` path: if the descriptor is close-on-exec
that path no longer exists when the interpreter opens it, and if it is not, the
descriptor leaks into the plugin, which must see only fds 0, 1 and 2; and the
interpreter reads the script by that name anyway.

The residual window, stated honestly: for a script, between the final
``lstat`` in ``check_unchanged`` and the kernel's ``execve`` (microseconds),
and for the interpreter's own open of the script after it, whoever may change
the path could still swap it. The rules on the path are what make that user
root or the host's user, who can run code as the host's user anyway. The same
two can rewrite in place an ELF binary that uses ``$ORIGIN`` (run from the
verified file, not a copy). On network file systems whose server clock or
timestamp granularity differs from ours the racy-window reasoning is weaker.
"""

from __future__ import annotations

import errno as _errno
import hmac
import os
import re
import reprlib
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, List, Optional, Tuple, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, PrivateAttr, StrictStr, ValidationError, field_validator

from ._exec_image import FD_EXHAUSTED, HeldFd, Image, read_image, sha256_fd
from ._trusted_path import check_owner, of_plugin, open_trusted_dir
from .errors import (
    BadManifestName,
    ChecksumMismatch,
    ExecutableChanged,
    ExecutableMissing,
    ExecutableNotExecutable,
    ManifestError,
    ManifestFieldError,
    ManifestNameMismatch,
    ManifestParseError,
    ManifestUnreadable,
    UnsafePermissions,
)

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as _toml

__all__ = (
    "DEFAULT_PREFIX",
    "MAX_MANIFEST_BYTES",
    "RACY_WINDOW_NS",
    "PluginManifest",
    "FileIdentity",
    "VerifiedExecutable",
    "LoadedPlugin",
    "DiscoveryOutcome",
    "load_manifest",
    "verify_executable",
    "executable_sha256",
    "load_plugin",
    "discover_plugins",
)

DEFAULT_PREFIX: Final = "devboy-source-"

#: A manifest is five short keys; anything larger is refused before parsing.
MAX_MANIFEST_BYTES: Final = 1 << 20

#: A verification made less than this after the file's ctime is "racy": the
#: file's timestamps cannot yet prove that it was not rewritten within the same
#: clock tick, so ``check_unchanged`` re-hashes it. Larger than FAT's two-second
#: granularity and any coarse-clock lag.
RACY_WINDOW_NS: Final = 3_000_000_000

_PathArg = Union[str, "os.PathLike[str]"]

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_NAME_RULE: Final = "1 to 128 letters, digits, '-', '_' or '.', not starting with '-' or '.'"
_CHECKSUM_RE: Final = re.compile(r"[0-9A-Fa-f]{64}")
_TOML_POSITION_RE: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_EOF_RE: Final = re.compile(r"\s*\(at end of document\)\s*$")
_MAX_EXECUTABLE_CHARS: Final = 4096
_HASH_CHUNK: Final = 1 << 16
# tomllib (and tomli) keep every prefix of a dotted key: a key of n parts costs
# O(n**2) time and memory, so a 200 KB line "a.a.a...= 1" took over 15 GB. A
# valid manifest has no dot outside its strings and comments (its keys are flat
# and no field is a number, a time or a table), so a document with more than a
# few is refused before it is parsed.
_MAX_BARE_DOTS: Final = 512
# Strings and comments, each matched to its end (or the end of its line or of the
# document when unterminated), so that no match ever fails and the scan is linear.
_STRINGS_AND_COMMENTS: Final = re.compile(
    r'"""(?:[^"\\]+|\\.?|"(?!""))*(?:"{3,5}|\Z)'
    r"|'''.*?(?:'{3,5}|\Z)"
    r'|"(?:[^"\\\n]+|\\[^\n]?)*"?'
    r"|'[^'\n]*'?"
    r"|#[^\n]*",
    re.S,
)

# O_NONBLOCK: opening a FIFO for reading would otherwise block until a writer
# appears, hanging discovery; it has no effect on reads from a regular file.
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
_EXE_OPEN_FLAGS: Final = _OPEN_FLAGS | os.O_NOFOLLOW

_FIELD_HELP: Final = {
    "name": f"the plugin's name ({_NAME_RULE}), equal to the name in the file name",
    "version": 'a version string such as "0.1.0"',
    "executable": "the path of the plugin's executable, relative to the manifest's directory or absolute",
    "allowed_env_vars": 'a list of environment variable names such as ["HOME", "PATH"]',
    "checksum_sha256": "the SHA-256 of the executable as 64 hexadecimal characters",
}

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = 5
_repr.maxtuple = 5
_repr.maxdict = 4
_repr.maxlevel = 2


def _short(value: object) -> str:
    """A bounded repr for messages: manifests hold no secrets, but they may hold junk."""
    try:
        return _repr.repr(value)
    except Exception:  # pragma: no cover - reprlib falls back per type; belt and braces
        return f"<{type(value).__name__}>"


_of = of_plugin


def _absolute(path: _PathArg) -> Path:
    """``path`` made absolute without resolving symbolic links or ``..``.

    Resolving would follow the very symlink that verification must refuse, and
    collapsing ``..`` lexically can name another file than the kernel would.
    """
    p = Path(path)
    return p if p.is_absolute() else Path.cwd() / p


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


# --- the manifest model -------------------------------------------------------


def _check_env_var_name(value: str) -> str:
    if not value or "=" in value or "\x00" in value:
        raise ValueError("an environment variable name must be non-empty, without '=' or NUL")
    return value


_EnvVarName = Annotated[StrictStr, AfterValidator(_check_env_var_name)]



class PluginManifest(BaseModel):
    """A validated sidecar manifest. Frozen; unknown keys are an error.

    ``base_dir`` is the directory of the manifest file when it came from
    :func:`load_manifest`, and ``None`` for a manifest built in memory (its
    relative ``executable`` is then taken relative to the current directory).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StrictStr
    version: StrictStr
    executable: StrictStr
    allowed_env_vars: Tuple[_EnvVarName, ...] = ()
    checksum_sha256: StrictStr

    _base_dir: Optional[Path] = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if _NAME_RE.fullmatch(value) is None:
            raise ValueError(f"a plugin name must be {_NAME_RULE}")
        return value

    @field_validator("executable")
    @classmethod
    def _check_executable(cls, value: str) -> str:
        if not value:
            raise ValueError("the executable path must not be empty")
        if "\x00" in value:
            raise ValueError("the executable path must not contain a NUL character")
        if len(value) > _MAX_EXECUTABLE_CHARS:
            raise ValueError(f"the executable path must be at most {_MAX_EXECUTABLE_CHARS} characters")
        return value

    @field_validator("allowed_env_vars")
    @classmethod
    def _dedupe_env_vars(cls, value: Tuple[str, ...]) -> Tuple[str, ...]:
        # A name listed twice means the same thing as once; keep the first position.
        return tuple(dict.fromkeys(value))

    @field_validator("checksum_sha256")
    @classmethod
    def _check_checksum(cls, value: str) -> str:
        if _CHECKSUM_RE.fullmatch(value) is None:
            raise ValueError(f"expected 64 hexadecimal characters, got {len(value)} characters")
        return value.lower()

    @property
    def base_dir(self) -> Optional[Path]:
        """The directory of the manifest file, or ``None`` for an in-memory manifest."""
        base: Optional[Path] = self._base_dir
        return base

    def executable_path(self) -> Path:
        """The absolute path of the executable (``executable`` if absolute, else under
        :attr:`base_dir`, else under the current directory). Symlinks are not resolved."""
        exe = Path(self.executable)
        if exe.is_absolute():
            return exe
        base = self.base_dir if self.base_dir is not None else Path.cwd()
        return base / exe


# --- result types ---------------------------------------------------------------


@dataclass(frozen=True)
class FileIdentity:
    """What ``os.fstat`` said about the verified executable."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileIdentity:
        return cls(
            dev=st.st_dev,
            ino=st.st_ino,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
            mode=st.st_mode,
        )

    def key(self) -> Tuple[int, ...]:
        """The fields :meth:`differences` compares, as one tuple: equal to
        ``(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)``
        exactly when ``differences(st)`` is empty."""
        return (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)

    def differences(self, st: os.stat_result) -> List[str]:
        """The fields (among dev, ino, size, mtime_ns, ctime_ns) that differ in ``st``,
        described for a message; empty if the file is the same."""
        out: List[str] = []
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            out.append("it was replaced by another file (new device/inode)")
        if st.st_size != self.size:
            out.append(f"size {self.size} -> {st.st_size}")
        if st.st_mtime_ns != self.mtime_ns:
            out.append("mtime changed")
        if st.st_ctime_ns != self.ctime_ns:
            out.append("ctime changed")
        return out


def _is_racy(st: os.stat_result) -> bool:
    return time.time_ns() - st.st_ctime_ns < RACY_WINDOW_NS


@dataclass(frozen=True)
class VerifiedExecutable:
    """An executable whose bytes matched the manifest's checksum when it was verified.

    ``racy`` is true while the file's ctime is too recent for its timestamps to
    prove it unchanged (see the module docstring); ``check_unchanged`` then
    re-hashes it, and clears the flag once the file is old enough.

    ``via`` says what a spawn runs: ``"memfd"`` (an ELF binary: a sealed
    in-memory copy of the bytes that were hashed), ``"fd"`` (an ELF binary that
    uses ``$ORIGIN``, or where no memfd could be made: the verified file, by
    descriptor) or ``"path"`` (a ``#!`` script or anything else: the path).
    :attr:`exec_fileno` is the descriptor for the first two, held open (and
    close-on-exec) for as long as this object lives.
    """

    path: Path
    sha256: str
    identity: FileIdentity
    racy: bool = field(default=False, compare=False)
    exec_fd: Optional[HeldFd] = field(default=None, compare=False, repr=False)
    via: str = field(default="path", compare=False)
    #: ``path`` as bytes: the ``argv[0]`` a spawn passes.
    path_bytes: bytes = field(init=False, repr=False, compare=False)
    # What check_unchanged needs before every spawn, computed once: the path as
    # str for the lstat, and the identity as one tuple to compare.
    _spath: str = field(init=False, repr=False, compare=False)
    _key: Tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_bytes", os.fsencode(self.path))
        object.__setattr__(self, "_spath", str(self.path))
        object.__setattr__(self, "_key", self.identity.key())

    @property
    def exec_fileno(self) -> Optional[int]:
        """The descriptor a spawn executes (``spawn(exec_fd=...)``), or ``None``: run ``path``."""
        held = self.exec_fd
        return None if held is None else held.fd

    def check_unchanged(self, *, plugin: Optional[str] = None) -> None:
        """Raise :class:`~plugin_client.errors.ExecutableChanged` unless the file at
        ``path`` is still the one that was verified, metadata included (a ``touch``
        is a change here; :meth:`current` forgives one whose bytes still match).

        One ``lstat`` (a symlink placed at the path is a change); for a racy
        verification, also a re-hash through a fresh ``O_NOFOLLOW`` descriptor.
        """
        st = self._lstat(plugin)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != self._key:
            changes = self.identity.differences(st)
            if changes:
                raise ExecutableChanged(_changed_message(self._spath, plugin, changes), plugin=plugin)
        if self.racy:
            self._recheck_contents(plugin)

    def current(self, *, plugin: Optional[str] = None) -> VerifiedExecutable:
        """What a spawn is to run now; call it right before spawning.

        ``self`` if the file at ``path`` is unchanged (:meth:`check_unchanged`'s
        one ``lstat``, and its re-hash while racy). If only its metadata
        changed (a ``touch``, a ``chmod`` that keeps the mode safe, a rename
        over it of a file with the same bytes), the path is verified again from
        scratch, exactly as :func:`verify_executable` does (the trusted
        directories, one ``O_NOFOLLOW`` descriptor, the modes, the hash, and for
        an ELF binary a new sealed copy of the bytes hashed), and the new
        :class:`VerifiedExecutable` is returned: the caller keeps it, so the
        next spawn is one ``lstat`` again. Bytes that no longer match the
        checksum, or a file the checks now refuse (a symbolic link, a mode
        writable by others, a removed file), raise
        :class:`~plugin_client.errors.ExecutableChanged`; nothing is run. Each
        call looks again, so a file restored to the verified bytes passes.
        """
        st = self._lstat(plugin)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) == self._key:
            if self.racy:
                self._recheck_contents(plugin)
            return self
        return self._reverified(plugin)

    def _reverified(self, plugin: Optional[str]) -> VerifiedExecutable:
        spath = self._spath
        try:
            return verify_executable(self.path, self.sha256, plugin=plugin)
        except ChecksumMismatch as exc:
            changes = [f"its contents changed: SHA-256 {exc.actual}"]
            raise ExecutableChanged(_changed_message(spath, plugin, changes), plugin=plugin) from None
        except ExecutableMissing:
            raise _removed(spath, plugin) from None
        except ManifestError as exc:
            if getattr(exc, "errno", None) in FD_EXHAUSTED:
                raise  # the host's trouble, not the file's: the client says so
            raise ExecutableChanged(
                f"Executable {spath!r}{_of(plugin)} changed on disk after it was verified and fails "
                f"verification now, so it was not run: {exc.message}",
                plugin=plugin,
            ) from None

    def _lstat(self, plugin: Optional[str]) -> os.stat_result:
        spath = self._spath
        try:
            return os.stat(spath, follow_symlinks=False)
        except FileNotFoundError:
            raise _removed(spath, plugin) from None
        except OSError as exc:
            raise ExecutableChanged(
                f"Executable {spath!r}{_of(plugin)} can no longer be checked ({exc.strerror}); it was not "
                "run: fix the path's permissions and load the plugin again",
                plugin=plugin,
            ) from None

    def _recheck_contents(self, plugin: Optional[str]) -> None:
        spath = str(self.path)
        try:
            fd = os.open(spath, _EXE_OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in FD_EXHAUSTED:
                raise  # the host's trouble, not the file's: the client says so
            raise ExecutableChanged(
                f"Executable {spath!r}{_of(plugin)} cannot be re-opened for checking ({exc.strerror}); "
                "it was not run: load the plugin again",
                plugin=plugin,
            ) from None
        try:
            before = os.fstat(fd)
            changes = self.identity.differences(before)
            if not changes:
                digest, nread = sha256_fd(fd)
                changes = self.identity.differences(os.fstat(fd))
                if not changes and (nread != self.identity.size or not hmac.compare_digest(digest, self.sha256)):
                    changes = ["its contents changed"]
        finally:
            os.close(fd)
        if changes:
            raise ExecutableChanged(_changed_message(spath, plugin, changes), plugin=plugin)
        if not _is_racy(before):
            # Verified again, and now old enough that any later write moves the
            # ctime: from here on the single lstat is sound.
            object.__setattr__(self, "racy", False)


def _removed(spath: str, plugin: Optional[str]) -> ExecutableChanged:
    return ExecutableChanged(
        f"Executable {spath!r}{_of(plugin)} was removed after it was verified; it was not run: "
        "reinstall it and load the plugin again",
        plugin=plugin,
    )


def _changed_message(spath: str, plugin: Optional[str], changes: List[str]) -> str:
    return (
        f"Executable {spath!r}{_of(plugin)} changed on disk after it was verified "
        f"({'; '.join(changes)}); it was not run: load the plugin again to re-verify it, and update "
        "checksum_sha256 if the change was intended"
    )


@dataclass(frozen=True)
class LoadedPlugin:
    """A valid manifest together with its verified executable."""

    manifest: PluginManifest
    manifest_path: Path
    executable: VerifiedExecutable

    @property
    def name(self) -> str:
        return self.manifest.name


@dataclass(frozen=True)
class DiscoveryOutcome:
    """The result for one manifest file: exactly one of ``plugin`` and ``error`` is set."""

    manifest_path: Path
    plugin: Optional[LoadedPlugin]
    error: Optional[ManifestError]

    @property
    def ok(self) -> bool:
        return self.plugin is not None and self.error is None

    @property
    def name(self) -> Optional[str]:
        """The plugin's name: from the manifest if it loaded, else from the file name
        when that follows ``<prefix><name>.toml``, else ``None``."""
        if self.plugin is not None:
            return self.plugin.name
        if self.error is not None:
            return self.error.plugin
        return None


# --- loading manifests ------------------------------------------------------------


def _name_from_file_name(file_name: str, prefix: str) -> Optional[str]:
    suffix = ".toml"
    if len(file_name) <= len(prefix) + len(suffix):
        return None
    if not (file_name.startswith(prefix) and file_name.endswith(suffix)):
        return None
    name = file_name[len(prefix) : -len(suffix)]
    return name if _NAME_RE.fullmatch(name) is not None else None


def _read_manifest(spath: str, plugin: str) -> bytes:
    try:
        fd = os.open(spath, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ManifestUnreadable(
            f"Manifest {spath!r} of plugin {plugin!r} does not exist; check the path",
            path=spath,
            errno=_errno.ENOENT,
            plugin=plugin,
        ) from None
    except (OSError, ValueError) as exc:
        code = exc.errno if isinstance(exc, OSError) else None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ManifestUnreadable(
            f"Manifest {spath!r} of plugin {plugin!r} cannot be opened ({reason}); fix its permissions",
            path=spath,
            errno=code,
            plugin=plugin,
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ManifestUnreadable(
                f"Manifest {spath!r} of plugin {plugin!r} is {_file_kind(st.st_mode)}, not a regular file; "
                "replace it with a TOML file or remove it",
                path=spath,
                plugin=plugin,
            )
        chunks: List[bytes] = []
        total = 0
        while total <= MAX_MANIFEST_BYTES:
            chunk = os.read(fd, _HASH_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise ManifestUnreadable(
            f"Manifest {spath!r} of plugin {plugin!r} cannot be read ({exc.strerror}); fix the file",
            path=spath,
            errno=exc.errno,
            plugin=plugin,
        ) from None
    finally:
        os.close(fd)
    if total > MAX_MANIFEST_BYTES:
        raise ManifestParseError(
            f"Manifest {spath!r} of plugin {plugin!r} is larger than {MAX_MANIFEST_BYTES} bytes; "
            "a manifest has five short keys: rewrite it",
            path=spath,
            plugin=plugin,
        )
    return b"".join(chunks)


def _toml_error_position(exc: Exception) -> Tuple[str, Optional[int], Optional[int]]:
    """The message without its position suffix, and the line and column if known."""
    text = str(exc)
    match = _TOML_POSITION_RE.search(text)
    if match is not None:
        return text[: match.start()], int(match.group(1)), int(match.group(2))
    eof = _TOML_EOF_RE.search(text)
    if eof is not None:
        return text[: eof.start()] + " at the end of the document", None, None
    line = getattr(exc, "lineno", None)
    col = getattr(exc, "colno", None)
    return text, line if isinstance(line, int) else None, col if isinstance(col, int) else None


def parse_toml_document(data: bytes, spath: str, plugin: str) -> dict[str, Any]:
    """A manifest's bytes as a TOML document (not yet validated), or the
    :class:`ManifestParseError` that says where and how to fix it. Shared with
    the manifest tooling (``_manifest_files``); not part of ``__all__``."""
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as some editors write
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = data.count(b"\n", 0, exc.start) + 1
        raise ManifestParseError(
            f"Manifest {spath!r} of plugin {plugin!r} is not valid UTF-8 (line {bad_line}); save it as UTF-8",
            path=spath,
            line=bad_line,
            plugin=plugin,
        ) from None
    if _STRINGS_AND_COMMENTS.sub("", text).count(".") > _MAX_BARE_DOTS:
        raise ManifestParseError(
            f"Manifest {spath!r} of plugin {plugin!r} has more than {_MAX_BARE_DOTS} dots outside its strings "
            "(dotted keys or numbers); a manifest needs none: write its five keys as plain key = \"value\" lines",
            path=spath,
            plugin=plugin,
        )
    try:
        return _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        detail, line, col = _toml_error_position(exc)
    except RecursionError:
        raise ManifestParseError(
            f"Manifest {spath!r} of plugin {plugin!r} nests arrays or tables too deeply to parse; "
            "a manifest needs no nesting: rewrite it",
            path=spath,
            plugin=plugin,
        ) from None
    where = f" at line {line}" + (f", column {col}" if col is not None else "") if line is not None else ""
    fix = f"fix line {line}" if line is not None else "fix the end of the file"
    raise ManifestParseError(
        f"Manifest {spath!r} of plugin {plugin!r} is not valid TOML{where}: {detail}; {fix} "
        '(write one key = value per line, with strings in double quotes, e.g. version = "0.1.0")',
        path=spath,
        line=line,
        plugin=plugin,
    )


def describe_validation_error(exc: ValidationError) -> str:
    """What a manifest's ``ValidationError`` says, field by field, without pydantic's
    wording. Shared with the manifest tooling; not part of ``__all__``."""
    unknown: List[str] = []
    problems: List[str] = []
    for err in exc.errors(include_url=False):
        loc = err.get("loc", ())
        key = str(loc[0]) if loc else ""
        if err["type"] == "extra_forbidden":
            unknown.append(_short(key))
            continue
        if err["type"] == "missing":
            problems.append(f"the required field {key!r} is missing (expected {_FIELD_HELP.get(key, 'a value')})")
            continue
        where = key + "".join(f"[{part}]" for part in loc[1:])
        ctx = err.get("ctx") or {}
        if err["type"] == "value_error" and "error" in ctx:
            reason = str(ctx["error"])
        elif len(loc) > 1:
            msg = str(err.get("msg", "invalid value"))
            reason = msg[:1].lower() + msg[1:]
        else:
            reason = f"expected {_FIELD_HELP.get(key, 'a valid value')}"
        problems.append(f"{where} = {_short(err.get('input'))} is invalid: {reason}")
    if unknown:
        allowed = ", ".join(repr(f) for f in PluginManifest.model_fields)
        s = "s" if len(unknown) > 1 else ""
        it = "them" if s else "it"
        problems.insert(0, f"unknown field{s} {', '.join(unknown)} (remove {it}; the allowed fields are {allowed})")
    return "; ".join(problems)


def load_manifest(path: _PathArg, *, prefix: str = DEFAULT_PREFIX) -> PluginManifest:
    """Read and validate the manifest at ``path``, named ``<prefix><name>.toml``.

    Raises a :class:`~plugin_client.errors.ManifestError` subclass:
    :class:`BadManifestName`, :class:`ManifestUnreadable`,
    :class:`ManifestParseError` (with ``line``), :class:`ManifestNameMismatch` or
    :class:`ManifestFieldError`. Does not look at the executable.
    """
    mpath = _absolute(path)
    spath = str(mpath)
    name = _name_from_file_name(mpath.name, prefix)
    if name is None:
        raise BadManifestName(
            f"Manifest {spath!r} is not named '{prefix}<name>.toml' with a name of {_NAME_RULE}; "
            f"rename it to '{prefix}<plugin name>.toml'",
            path=spath,
        )
    document = parse_toml_document(_read_manifest(spath, name), spath, name)
    inner = document.get("name")
    if isinstance(inner, str) and inner != name:
        raise ManifestNameMismatch(
            f"Manifest {spath!r} declares name = {_short(inner)} but its file name says {name!r}; "
            "make them equal (rename the file or fix the name field)",
            path=spath,
            plugin=name,
        )
    try:
        manifest = PluginManifest.model_validate(document)
    except ValidationError as exc:
        raise ManifestFieldError(
            f"Manifest {spath!r} of plugin {name!r} is invalid: {describe_validation_error(exc)}; "
            "fix the manifest",
            path=spath,
            plugin=name,
        ) from None
    manifest._base_dir = mpath.parent
    return manifest


# --- verifying executables ----------------------------------------------------------


def _may_execute(st: os.stat_result) -> bool:
    """Whether the mode bits let us execute the file, by the kernel's owner/group/other
    rule. Root may execute a file if any execute bit is set: ``os.access`` would
    say yes even for mode 0o644, so it is not used."""
    mode = st.st_mode
    euid = os.geteuid()
    if euid == 0:
        return mode & 0o111 != 0
    if st.st_uid == euid:
        return mode & stat.S_IXUSR != 0
    if st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        return mode & stat.S_IXGRP != 0
    return mode & stat.S_IXOTH != 0


def _open_failure(exc: OSError, base: str, dfd: int, spath: str, plugin: Optional[str]) -> ManifestError:
    """Turn a failed ``open(O_NOFOLLOW)`` of the executable into a typed error."""
    try:
        lst = os.stat(base, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return ExecutableMissing(
            f"Executable {spath!r}{_of(plugin)} does not exist; install the plugin there or fix "
            "'executable' in its manifest",
            path=spath,
            plugin=plugin,
        )
    except OSError:
        lst = None
    if lst is not None and stat.S_ISLNK(lst.st_mode):
        try:
            target = f" (it points to {_short(os.readlink(base, dir_fd=dfd))})"
        except OSError:
            target = ""
        return UnsafePermissions(
            f"Executable {spath!r}{_of(plugin)} is a symbolic link{target}; it was refused because a link "
            "can be re-pointed after verification: set 'executable' in the manifest to the real file",
            path=spath,
            component=spath,
            rule="symlink",
            plugin=plugin,
        )
    if lst is not None and not stat.S_ISREG(lst.st_mode):
        return ExecutableNotExecutable(
            f"Executable {spath!r}{_of(plugin)} is {_file_kind(lst.st_mode)}, not a regular file; "
            "point 'executable' in the manifest at the plugin's program",
            path=spath,
            plugin=plugin,
        )
    return ManifestUnreadable(
        f"Executable {spath!r}{_of(plugin)} cannot be opened ({exc.strerror}); fix its permissions",
        path=spath,
        errno=exc.errno,
        plugin=plugin,
    )


def _check_modes(st: os.stat_result, spath: str, plugin: Optional[str], sticky_above: Optional[str]) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ExecutableNotExecutable(
            f"Executable {spath!r}{_of(plugin)} is {_file_kind(st.st_mode)}, not a regular file; "
            "point 'executable' in the manifest at the plugin's program",
            path=spath,
            plugin=plugin,
        )
    mode = stat.S_IMODE(st.st_mode)
    if not _may_execute(st):
        raise ExecutableNotExecutable(
            f"Executable {spath!r}{_of(plugin)} has no execute permission (mode {mode:#o}); "
            "make it executable (chmod +x)",
            path=spath,
            plugin=plugin,
        )
    if mode & 0o022:
        raise UnsafePermissions(
            f"Executable {spath!r}{_of(plugin)} is writable by its group or by others (mode {mode:#o}), "
            "so it could be replaced after verification; remove those write bits (chmod go-w)",
            path=spath,
            component=spath,
            rule="writable",
            plugin=plugin,
        )
    check_owner(st, spath, spath, plugin, sticky_above)


def verify_executable(
    path: _PathArg, checksum_sha256: str, *, plugin: Optional[str] = None
) -> VerifiedExecutable:
    """Check the executable at ``path`` and that its SHA-256 is ``checksum_sha256``.

    The file is opened once, with ``O_NOFOLLOW`` relative to a descriptor of its
    directory, and every check (type, mode, directory mode, hash, identity) is
    made on what those descriptors point to. Raises
    :class:`ExecutableMissing`, :class:`UnsafePermissions` (also for a symbolic
    link), :class:`ExecutableNotExecutable`, :class:`ManifestUnreadable`,
    :class:`ManifestFieldError` (malformed ``checksum_sha256``),
    :class:`ChecksumMismatch`, or :class:`ExecutableChanged` if the file changed
    while it was being hashed. Nothing is executed.
    """
    exe = _absolute(path)
    spath = str(exe)
    if not isinstance(checksum_sha256, str) or _CHECKSUM_RE.fullmatch(checksum_sha256) is None:
        raise ManifestFieldError(
            f"The checksum given for executable {spath!r}{_of(plugin)} is {_short(checksum_sha256)}, not 64 "
            "hexadecimal characters; set checksum_sha256 to the file's SHA-256 (sha256sum prints it)",
            path=spath,
            plugin=plugin,
        )
    declared = checksum_sha256.lower()
    image, st = _hash_executable(exe, plugin)
    actual = image.sha256
    if not hmac.compare_digest(actual, declared):
        raise ChecksumMismatch(
            f"Executable {spath!r}{_of(plugin)} has SHA-256 {actual} but the manifest declares {declared}; "
            f'if the new binary is intended, set checksum_sha256 = "{actual}", otherwise restore the original',
            path=spath,
            declared=declared,
            actual=actual,
            plugin=plugin,
        )
    return VerifiedExecutable(
        path=exe, sha256=actual, identity=FileIdentity.from_stat(st), racy=_is_racy(st),
        exec_fd=image.exec_fd, via=image.via,
    )


def executable_sha256(path: _PathArg, *, plugin: Optional[str] = None) -> str:
    """The SHA-256 (lower-case hex) of the executable at ``path``, after the same
    checks as :func:`verify_executable` (so a file it would refuse has no checksum
    here either), for writing it into a manifest. Raises what that raises, except
    :class:`ChecksumMismatch`. Nothing is executed."""
    return _hash_executable(_absolute(path), plugin)[0].sha256


def _hash_executable(exe: Path, plugin: Optional[str]) -> Tuple[Image, os.stat_result]:
    """Open ``exe`` once, check it (its path too), and hash it from that
    descriptor: what a spawn runs (:class:`Image`: the hash, and for an ELF
    binary the sealed copy) and the ``fstat`` it was hashed under. See
    :func:`verify_executable`."""
    spath = str(exe)
    parent, base = os.path.split(spath)
    try:
        dfd, _, sticky_above = open_trusted_dir(parent or os.sep, spath, plugin)
    except (FileNotFoundError, NotADirectoryError):
        raise ExecutableMissing(
            f"Executable {spath!r}{_of(plugin)} does not exist (its directory {parent!r} is missing); install "
            "the plugin there or fix 'executable' in its manifest",
            path=spath,
            plugin=plugin,
        ) from None
    except (OSError, ValueError) as exc:
        code = exc.errno if isinstance(exc, OSError) else None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ManifestUnreadable(
            f"The directory {parent!r} of executable {spath!r}{_of(plugin)} cannot be opened ({reason}); "
            "fix its permissions",
            path=spath,
            errno=code,
            plugin=plugin,
        ) from None
    try:
        try:
            fd = os.open(base, _EXE_OPEN_FLAGS, dir_fd=dfd)
        except OSError as exc:
            raise _open_failure(exc, base, dfd, spath, plugin) from None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        _check_modes(st, spath, plugin, sticky_above)
        image = read_image(fd)
        nread = image.nread
        after = os.fstat(fd)
    except OSError as exc:
        raise ManifestUnreadable(
            f"Executable {spath!r}{_of(plugin)} cannot be read ({exc.strerror}); fix the file",
            path=spath,
            errno=exc.errno,
            plugin=plugin,
        ) from None
    finally:
        os.close(fd)
    changes = FileIdentity.from_stat(st).differences(after)
    if not changes and nread != st.st_size:
        changes = [f"{nread} bytes read of {st.st_size}"]
    if changes:
        raise ExecutableChanged(
            f"Executable {spath!r}{_of(plugin)} changed while it was being verified ({'; '.join(changes)}); "
            "wait for the update to finish and load the plugin again",
            plugin=plugin,
        )
    return image, st


# --- plugins ------------------------------------------------------------------------


def load_plugin(path: _PathArg, *, prefix: str = DEFAULT_PREFIX) -> LoadedPlugin:
    """:func:`load_manifest` then :func:`verify_executable` on its executable.

    Raises what those raise (a :class:`ManifestError`, or
    :class:`ExecutableChanged` if the executable changed while being hashed).
    """
    manifest = load_manifest(path, prefix=prefix)
    executable = verify_executable(manifest.executable_path(), manifest.checksum_sha256, plugin=manifest.name)
    return LoadedPlugin(manifest=manifest, manifest_path=_absolute(path), executable=executable)


def _is_manifest_file_name(file_name: str, prefix: str) -> bool:
    # The glob "<prefix>*.toml", without glob's treatment of metacharacters in the prefix.
    if file_name.startswith(".") and not prefix.startswith("."):
        return False
    return (
        len(file_name) >= len(prefix) + len(".toml")
        and file_name.startswith(prefix)
        and file_name.endswith(".toml")
    )


def discover_plugins(directory: _PathArg, *, prefix: str = DEFAULT_PREFIX) -> List[DiscoveryOutcome]:
    """Load every ``<prefix>*.toml`` in ``directory``, in sorted file-name order.

    Each manifest gets its own :class:`DiscoveryOutcome`, holding either the
    :class:`LoadedPlugin` or the :class:`ManifestError` that stopped it; a bad
    manifest never hides another and never raises. Other files are ignored. A
    missing directory means no plugins (``[]``); a path that exists but cannot
    be listed (not a directory, permission denied) raises
    :class:`ManifestUnreadable`, since silently finding nothing would hide it.
    """
    root = _absolute(directory)
    try:
        with os.scandir(root) as entries:
            names = sorted(e.name for e in entries if _is_manifest_file_name(e.name, prefix))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ManifestUnreadable(
            f"Plugins directory {str(root)!r} cannot be listed ({exc.strerror}); make it a readable "
            "directory or configure another one",
            path=str(root),
            errno=exc.errno,
        ) from None
    outcomes: List[DiscoveryOutcome] = []
    for file_name in names:
        manifest_path = root / file_name
        try:
            plugin = load_plugin(manifest_path, prefix=prefix)
        except ManifestError as exc:
            outcomes.append(DiscoveryOutcome(manifest_path=manifest_path, plugin=None, error=exc))
            continue
        except (ExecutableChanged, OSError) as exc:
            # Not expected from load_plugin except for an executable caught
            # mid-update; still one manifest's problem, so report it as such.
            wrapped = ManifestUnreadable(
                f"Manifest {str(manifest_path)!r} could not be loaded: {exc}",
                path=str(manifest_path),
                errno=exc.errno if isinstance(exc, OSError) else None,
                plugin=_name_from_file_name(file_name, prefix),
            )
            wrapped.__cause__ = exc
            outcomes.append(DiscoveryOutcome(manifest_path=manifest_path, plugin=None, error=wrapped))
            continue
        outcomes.append(DiscoveryOutcome(manifest_path=manifest_path, plugin=plugin, error=None))
    return outcomes

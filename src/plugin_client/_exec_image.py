"""What a spawn runs for a verified executable: hash the bytes, and keep what was hashed.

An ELF binary is run from a descriptor, never from its path again, so no
rename of the file or of a directory above it can put other bytes in its
place between verification and ``exec``:

* ``"memfd"``: a sealed copy of the bytes that were hashed (``memfd_create``,
  then ``F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL``, reopened
  read-only through ``/proc/self/fd`` because ``exec`` refuses a file that is
  open for writing with ``ETXTBSY``). Not even the file's owner can change
  those bytes afterwards: not by a rename, an in-place write, or a shared
  writable ``mmap`` made before verification.
* ``"fd"``: the verified file itself, through a descriptor. Used for a binary
  whose bytes hold ``$ORIGIN`` (the dynamic linker finds ``$ORIGIN`` through
  ``/proc/self/exe``, which for a memfd names no directory), and where a
  memfd cannot be made. Renames cannot substitute another file; the file's
  owner can still rewrite it in place.
* ``"path"``: anything else, ``#!`` scripts above all. The kernel hands a
  script's interpreter a path to open (``/dev/fd/N`` for a descriptor, gone
  once a close-on-exec descriptor is closed, and a leak into the plugin if it
  is not), and the interpreter opens the script by that name, so a script is
  run by its path and is protected only by the rules on who may change that
  path (``_trusted_path``).

The memfd costs the binary's size in memory (shared memory, charged to the
host) for as long as the :class:`~plugin_client.manifest.VerifiedExecutable`
lives.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import mmap
import os
import sys
from dataclasses import dataclass
from typing import Final, Optional, Tuple

__all__ = ("ELF_MAGIC", "FD_EXHAUSTED", "HeldFd", "Image", "read_image", "sha256_fd")

ELF_MAGIC: Final = b"\x7fELF"
# The dynamic string tokens that ld.so expands through /proc/self/exe. A stray
# match elsewhere in the bytes only costs the memfd's protection, never a run.
_ORIGIN_TOKENS: Final = (b"$ORIGIN", b"${ORIGIN}")
_SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
_HASH_CHUNK: Final = 1 << 16
#: The errnos of a host out of file descriptors (its own limit, the system's).
FD_EXHAUSTED: Final = frozenset((errno.EMFILE, errno.ENFILE))


class HeldFd:
    """A close-on-exec descriptor that closes when the last reference to it goes;
    copies of one ``VerifiedExecutable`` share it."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:  # pragma: no cover - closed by someone else already
            pass


@dataclass(frozen=True)
class Image:
    """The verified bytes' SHA-256, how many bytes were read, and what runs them."""

    sha256: str
    nread: int
    exec_fd: Optional[HeldFd]
    via: str


def sha256_fd(fd: int) -> Tuple[str, int]:
    """The SHA-256 of the bytes read from ``fd`` to its end, and how many were read.
    ``fd`` stays open."""
    with io.FileIO(fd, "rb", closefd=False) as f:
        if sys.version_info >= (3, 11):
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        else:  # pragma: no cover - exercised on Python < 3.11 only
            h = hashlib.sha256()
            buf = bytearray(_HASH_CHUNK)
            view = memoryview(buf)
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(view[:n])
            digest = h.hexdigest()
        return digest, f.tell()


def _sealed_copy(fd: int) -> Optional[int]:
    """A read-only descriptor of a sealed memfd holding the bytes of ``fd`` from
    offset 0, or ``None`` where the kernel, a seccomp filter or a missing
    ``/proc`` refuses one. Out of descriptors is raised, not hidden."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None:  # pragma: no cover - not Linux
        return None
    try:
        w = memfd_create("plugin-client-exec", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as exc:
        if exc.errno in FD_EXHAUSTED:
            raise
        return None
    try:
        offset = 0
        while True:
            n = os.sendfile(w, fd, offset, 1 << 30)
            if not n:
                break
            offset += n
        fcntl.fcntl(w, fcntl.F_ADD_SEALS, _SEALS)
        return os.open(f"/proc/self/fd/{w}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in FD_EXHAUSTED:
            raise
        return None
    finally:
        os.close(w)


def _hash_memfd(mfd: int) -> Tuple[str, int, bool, bool]:
    """SHA-256, size, ELF magic and ``$ORIGIN`` of a sealed memfd's bytes."""
    size = os.fstat(mfd).st_size
    if size == 0:
        return hashlib.sha256(b"").hexdigest(), 0, False, False
    with mmap.mmap(mfd, size, prot=mmap.PROT_READ) as mm:
        digest = hashlib.sha256(mm).hexdigest()
        origin = any(mm.find(token) >= 0 for token in _ORIGIN_TOKENS)
        return digest, size, mm[:4] == ELF_MAGIC, origin


def _dup_above_2(fd: int) -> HeldFd:
    return HeldFd(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3))


def read_image(fd: int) -> Image:
    """Hash the regular file open at ``fd`` (from offset 0) and choose how it will be
    run (see the module docstring). ``fd`` stays open and the caller closes it;
    the image holds its own descriptor."""
    if os.pread(fd, len(ELF_MAGIC), 0) != ELF_MAGIC:
        digest, nread = sha256_fd(fd)
        return Image(digest, nread, None, "path")
    mfd = _sealed_copy(fd)
    if mfd is None:
        digest, nread = sha256_fd(fd)
        return Image(digest, nread, _dup_above_2(fd), "fd")
    held = HeldFd(mfd)
    digest, nread, elf, origin = _hash_memfd(mfd)
    if not elf:
        # Rewritten between the peek and the copy: the caller's identity check
        # refuses it; until then the copy is what was hashed, run by its path.
        return Image(digest, nread, None, "path")
    if origin:
        return Image(digest, nread, _dup_above_2(fd), "fd")
    return Image(digest, nread, held, "memfd")

"""Who may change the path to an executable: the rules OpenSSH's StrictModes and sudo apply.

The executable's directory is opened by walking its *resolved* path from ``/``,
one ``openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)`` at a time, and every
directory on the way is judged on the descriptor that was opened, so the
directory the executable is then opened in is the one that was checked:

* every directory, and the executable, is owned by root or by the host's
  effective user;
* no directory is writable by its group or by others, unless it has the sticky
  bit; then only an entry's owner (or the directory's, root or us) can rename
  or remove the entry, so the entry below it must be owned by root or by us.

With these, only root or the host's user can rename a component of the path
or replace what it names; both can run code as the host's user anyway.
Symbolic links in the directories are followed once (``realpath``) and the
directories they lead to are judged; a link that appears during the walk
stops it. ACLs and Linux capabilities other than root's are not looked at.
"""

from __future__ import annotations

import os
import stat
from typing import Final, Optional, Tuple

from .errors import UnsafePermissions

__all__ = ("of_plugin", "open_trusted_dir", "check_owner")

_WALK_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def of_plugin(plugin: Optional[str]) -> str:
    """`` of plugin 'name'`` for a message, or nothing for an unnamed plugin."""
    return f" of plugin {plugin!r}" if plugin is not None else ""


def _writers(mode: int) -> str:
    if mode & stat.S_IWGRP and mode & stat.S_IWOTH:
        return "its group and all users"
    return "its group" if mode & stat.S_IWGRP else "all users"


def _open_sticky(st: os.stat_result) -> bool:
    """A directory that users other than its owner can write, made safe by the sticky bit."""
    return st.st_mode & 0o022 != 0 and st.st_mode & stat.S_ISVTX != 0


def check_owner(
    st: os.stat_result, where: str, spath: str, plugin: Optional[str], sticky_above: Optional[str]
) -> None:
    """Refuse ``where`` (the executable at ``spath``, or a directory above it) if a user
    other than root and the host's user owns it. ``sticky_above`` names its directory
    when that is a sticky directory others can write."""
    euid = os.geteuid()
    uid = st.st_uid
    if uid == 0 or uid == euid:
        return
    what = "it" if where == spath else f"directory {where!r}"
    if sticky_above is not None:
        raise UnsafePermissions(
            f"Executable {spath!r}{of_plugin(plugin)} is refused: {what} is owned by uid {uid} and lies in "
            f"{sticky_above!r}, a directory others can write whose sticky bit protects only the entries of root "
            f"and of the host's user (uid {euid}), so uid {uid} could rename it; chown it to root or uid {euid}, "
            "or move the plugin to a directory only they can write",
            path=spath,
            component=where,
            rule="sticky",
            plugin=plugin,
        )
    raise UnsafePermissions(
        f"Executable {spath!r}{of_plugin(plugin)} is refused: {what} is owned by uid {uid}, neither root nor "
        f"the host's user (uid {euid}), so uid {uid} could replace what it holds; chown it to root or uid {euid}, "
        "or move the plugin to a directory only they own",
        path=spath,
        component=where,
        rule="owner",
        plugin=plugin,
    )


def _check_dir(st: os.stat_result, where: str, spath: str, plugin: Optional[str], sticky_above: Optional[str]) -> None:
    check_owner(st, where, spath, plugin, sticky_above)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise UnsafePermissions(
            f"Executable {spath!r}{of_plugin(plugin)} is refused: directory {where!r} on its path is writable by "
            f"{_writers(mode)} without the sticky bit (mode {mode:#o}), so another user could rename or replace "
            "what lies below it; remove those write bits (chmod go-w) or move the plugin to a directory only its "
            "owner can write",
            path=spath,
            component=where,
            rule="writable",
            plugin=plugin,
        )


def open_trusted_dir(directory: str, spath: str, plugin: Optional[str]) -> Tuple[int, os.stat_result, Optional[str]]:
    """Open ``directory`` (resolved) by walking it from ``/``, checking each directory.

    Returns an ``O_PATH`` descriptor of it, its ``fstat``, and its resolved path
    if it is a sticky directory others can write (whose entry must then be owned
    by root or us), else ``None``. Raises :class:`UnsafePermissions` naming the
    first directory that breaks a rule, and ``OSError`` if the walk cannot open
    a component (``ENOENT``, ``ENOTDIR``, or ``ELOOP`` for a link that appeared).
    """
    resolved = os.path.realpath(directory)
    fd = os.open("/", _WALK_FLAGS)
    try:
        where = "/"
        st = os.fstat(fd)
        _check_dir(st, where, spath, plugin, None)
        for name in resolved.split("/"):
            if not name:
                continue
            sticky_above = where if _open_sticky(st) else None
            child = os.open(name, _WALK_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
            where = os.path.join(where, name)
            st = os.fstat(fd)
            _check_dir(st, where, spath, plugin, sticky_above)
        return fd, st, (where if _open_sticky(st) else None)
    except BaseException:
        os.close(fd)
        raise

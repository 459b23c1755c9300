"""Write a plugin's sidecar manifest, and rewrite its checksum after a rebuild.

The file-editing half of ``plugin-client manifest``: :func:`new_manifest`
writes ``<prefix><name>.toml`` beside an executable, with the executable's
SHA-256; :func:`update_checksum` hashes the executable again and rewrites only
the value on the ``checksum_sha256`` line, so the rest of the file (comments,
order, spacing) stays as its author wrote it. Both write a temporary file in
the same directory and rename it over the target, so a reader never sees half
a manifest, and both prove the result by loading it with
:func:`~plugin_client.manifest.load_plugin` before returning.

What it deliberately does not do: decide what a valid manifest or a safe
executable is (:mod:`plugin_client.manifest` does, and its typed errors are
what a caller gets), print anything (the CLI does), or reformat a manifest.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Final, Optional, Sequence, Tuple, Union

from pydantic import ValidationError

from .errors import ManifestFieldError, ManifestParseError
from .manifest import (
    DEFAULT_PREFIX,
    LoadedPlugin,
    PluginManifest,
    describe_validation_error,
    parse_toml_document,
    executable_sha256,
    load_manifest,
    load_plugin,
)

__all__ = ("default_name", "new_manifest", "update_checksum")

_PathArg = Union[str, "os.PathLike[str]"]

# The checksum line as a writer of TOML puts it: a bare key, a quoted value, anything after it.
_CHECKSUM_LINE: Final = re.compile(
    r"^(?P<head>[ \t]*checksum_sha256[ \t]*=[ \t]*)(?P<q>[\"'])(?P<sum>[^\"'\n]*)(?P=q)", re.M
)


def default_name(executable: _PathArg, prefix: str = DEFAULT_PREFIX) -> str:
    """The plugin name a file name suggests: ``devboy-source-foo`` gives ``foo``,
    any other file its stem (``vault.py`` gives ``vault``)."""
    file_name = Path(executable).name
    if file_name.startswith(prefix) and len(file_name) > len(prefix):
        return file_name[len(prefix) :]
    return Path(file_name).stem


def _toml_string(text: str, what: str, spath: str) -> str:
    """``text`` as a TOML basic string. JSON's escapes are TOML's, except that TOML
    also wants DEL escaped; a lone surrogate (an undecodable file name) has no TOML form."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestFieldError(
            f"The {what} for manifest {spath!r} is not valid Unicode text, so TOML cannot hold it; rename the file",
            path=spath,
        ) from None
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _validated(fields: Dict[str, Any], spath: str, name: str) -> PluginManifest:
    """The fields checked by the loader's own model, so a name or variable the
    loader would refuse is refused here, with its message."""
    try:
        return PluginManifest.model_validate(fields)
    except ValidationError as exc:
        raise ManifestFieldError(
            f"Manifest {spath!r} of plugin {name!r} would be invalid: {describe_validation_error(exc)}",
            path=spath,
            plugin=name,
        ) from None


def _write_atomically(target: Path, data: bytes, mode: int, *, exclusive: bool) -> None:
    """Write ``data`` to a temporary file beside ``target``, then rename it over
    ``target``; with ``exclusive``, refuse (``FileExistsError``) if ``target`` exists."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
        if exclusive:
            os.link(tmp, target)  # fails with FileExistsError, atomically, if it exists
        else:
            os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def new_manifest(
    executable: _PathArg,
    *,
    name: Optional[str] = None,
    version: str = "0.1.0",
    allowed_env_vars: Sequence[str] = (),
    force: bool = False,
    prefix: str = DEFAULT_PREFIX,
) -> LoadedPlugin:
    """Write ``<prefix><name>.toml`` beside ``executable``, with its checksum, and
    return the plugin loaded from it.

    ``name`` defaults to :func:`default_name`. Raises a
    :class:`~plugin_client.errors.ManifestError` for a name, version or variable
    the loader would refuse and for an executable it would refuse (missing,
    unsafe permissions...), and ``FileExistsError`` if the manifest exists and
    ``force`` is false.
    """
    exe = Path(os.path.abspath(executable))
    plugin = name if name is not None else default_name(exe, prefix)
    target = exe.parent / f"{prefix}{plugin}.toml"
    spath = str(target)
    checksum = executable_sha256(exe, plugin=plugin)
    fields = {
        "name": plugin,
        "version": version,
        "executable": exe.name,
        "allowed_env_vars": list(allowed_env_vars),
        "checksum_sha256": checksum,
    }
    _validated(fields, spath, plugin)
    env = ", ".join(_toml_string(v, "variable name", spath) for v in allowed_env_vars)
    text = (
        f"name = {_toml_string(plugin, 'name', spath)}\n"
        f"version = {_toml_string(version, 'version', spath)}\n"
        f"executable = {_toml_string(exe.name, 'executable name', spath)}\n"
        f"allowed_env_vars = [{env}]\n"
        f'checksum_sha256 = "{checksum}"\n'
    )
    if target.exists() and not force:
        raise FileExistsError(f"Manifest {spath!r} exists; pass --force to overwrite it, or run 'manifest update'")
    _write_atomically(target, text.encode("utf-8"), 0o644, exclusive=not force)
    return load_plugin(target, prefix=prefix)


def update_checksum(manifest_path: _PathArg, *, prefix: str = DEFAULT_PREFIX) -> Tuple[LoadedPlugin, Optional[str]]:
    """Hash the manifest's executable again and rewrite its ``checksum_sha256``
    value in place. Returns the plugin loaded from the result and the previous
    checksum, or ``None`` if it was already right (the file is then untouched).

    Raises what :func:`~plugin_client.manifest.load_manifest` and
    :func:`~plugin_client.manifest.executable_sha256` raise, and
    :class:`~plugin_client.errors.ManifestParseError` if the checksum is not on
    a line of its own (``checksum_sha256 = "..."``) that can be rewritten.
    """
    manifest = load_manifest(manifest_path, prefix=prefix)
    target = Path(os.path.abspath(manifest_path))
    spath = str(target)
    checksum = executable_sha256(manifest.executable_path(), plugin=manifest.name)
    if checksum == manifest.checksum_sha256:
        return load_plugin(target, prefix=prefix), None
    data = target.read_bytes()
    text = data.decode("utf-8")  # load_manifest read it as UTF-8 already
    matches = list(_CHECKSUM_LINE.finditer(text))
    new_text = None
    if len(matches) == 1:
        m = matches[0]
        new_text = text[: m.start("sum")] + checksum + text[m.end("sum") :]
        if parse_toml_document(new_text.encode("utf-8"), spath, manifest.name).get("checksum_sha256") != checksum:
            new_text = None  # the line found was not the key (inside a multi-line string, say)
    if new_text is None:
        raise ManifestParseError(
            f"Manifest {spath!r} of plugin {manifest.name!r} has no line 'checksum_sha256 = \"...\"' to rewrite; "
            f'set it by hand: checksum_sha256 = "{checksum}"',
            path=spath,
            plugin=manifest.name,
        )
    _write_atomically(target, new_text.encode("utf-8"), os.stat(target).st_mode & 0o7777, exclusive=False)
    return load_plugin(target, prefix=prefix), manifest.checksum_sha256

"""Tests for plugin_client.manifest: loading, verifying and discovering plugins.

Every test builds its own plugins directory in ``tmp_path``, laid out like the
existing ecosystem (``devboy-source-<name>.toml`` beside the executable
``devboy-source-<name>``), with checksums computed here. CI runs as root, so no
test relies on a permission being *denied*: the checks under test look at mode
bits, not at access() results.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Type

import pydantic
import pytest

from plugin_client import _exec_image as exec_image
from plugin_client import manifest as mf
from plugin_client.errors import (
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
from plugin_client.manifest import (
    DEFAULT_PREFIX,
    DiscoveryOutcome,
    FileIdentity,
    LoadedPlugin,
    PluginManifest,
    VerifiedExecutable,
    discover_plugins,
    load_manifest,
    load_plugin,
    verify_executable,
)

SCRIPT = b"#!/bin/sh\nexec cat\n"
OTHER_SCRIPT = b"#!/bin/sh\nexec tee\n"  # same length as SCRIPT
assert len(SCRIPT) == len(OTHER_SCRIPT)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_exe(path: Path, data: bytes = SCRIPT, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)  # independent of the umask
    return path


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        body = "".join(
            "\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in value
        )
        return '"' + body + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_manifest(directory: Path, name: str, fields: Dict[str, Any], *, file_name: Optional[str] = None) -> Path:
    path = directory / (file_name or f"{DEFAULT_PREFIX}{name}.toml")
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items()), encoding="utf-8")
    return path


def make_plugin(
    directory: Path,
    stem: str,
    *,
    data: bytes = SCRIPT,
    mode: int = 0o755,
    exe_at: Optional[str] = None,
    create_exe: bool = True,
    **overrides: Any,
) -> Path:
    """A plugin ``stem`` laid out like the ecosystem's: ``devboy-source-<stem>.toml``
    beside the executable ``devboy-source-<stem>`` (or at ``exe_at``, relative to
    ``directory`` or absolute). ``overrides`` replace manifest fields (``None``
    removes one). Returns the manifest path."""
    exe_rel = exe_at if exe_at is not None else f"{DEFAULT_PREFIX}{stem}"
    if create_exe:
        write_exe(Path(exe_rel) if os.path.isabs(exe_rel) else directory / exe_rel, data, mode)
    fields: Dict[str, Any] = {
        "name": stem,
        "version": "0.1.0",
        "executable": exe_rel,
        "allowed_env_vars": ["HOME", "PATH"],
        "checksum_sha256": sha(data),
    }
    for key, value in overrides.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return write_manifest(directory, stem, fields)


def assert_no_foreign_chain(err: BaseException) -> None:
    """No pydantic or TOML exception rides along as the cause or context."""
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    d = tmp_path / "plugins"
    d.mkdir()
    return d


# --- the good path -------------------------------------------------------------------


def test_good_plugin_loads(plugins: Path) -> None:
    path = make_plugin(plugins, "vault")
    plugin = load_plugin(path)
    assert isinstance(plugin, LoadedPlugin)
    assert plugin.name == "vault"
    assert plugin.manifest_path == path
    m = plugin.manifest
    assert (m.name, m.version, m.executable) == ("vault", "0.1.0", "devboy-source-vault")
    assert m.allowed_env_vars == ("HOME", "PATH")
    assert m.checksum_sha256 == sha(SCRIPT)
    assert m.base_dir == plugins
    assert m.executable_path() == plugins / "devboy-source-vault"
    exe = plugin.executable
    assert exe.path == plugins / "devboy-source-vault"
    assert exe.sha256 == sha(SCRIPT)
    st = os.stat(exe.path)
    assert exe.identity == FileIdentity(
        dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, mode=st.st_mode
    )
    exe.check_unchanged(plugin="vault")  # nothing changed


def test_manifest_is_frozen_and_forbids_extra() -> None:
    m = PluginManifest(name="x", version="1", executable="x", checksum_sha256="a" * 64)
    with pytest.raises(pydantic.ValidationError):
        m.name = "y"
    with pytest.raises(pydantic.ValidationError):
        PluginManifest(name="x", version="1", executable="x", checksum_sha256="a" * 64, extra=1)  # type: ignore[call-arg]


def test_uppercase_checksum_is_accepted_and_normalized(plugins: Path) -> None:
    path = make_plugin(plugins, "vault", checksum_sha256=sha(SCRIPT).upper())
    assert load_manifest(path).checksum_sha256 == sha(SCRIPT)
    assert load_plugin(path).executable.sha256 == sha(SCRIPT)
    verify_executable(plugins / "devboy-source-vault", sha(SCRIPT).upper())


def test_allowed_env_vars_defaults_to_empty_and_dedupes(plugins: Path) -> None:
    assert load_manifest(make_plugin(plugins, "a", allowed_env_vars=None)).allowed_env_vars == ()
    m = load_manifest(make_plugin(plugins, "b", allowed_env_vars=["PATH", "HOME", "PATH"]))
    assert m.allowed_env_vars == ("PATH", "HOME")
    assert load_manifest(make_plugin(plugins, "c", allowed_env_vars=[])).allowed_env_vars == ()


@pytest.mark.parametrize("bad", ["A=B", "", "A\x00B"])
def test_invalid_env_var_names_are_field_errors(plugins: Path, bad: str) -> None:
    path = plugins / "devboy-source-e.toml"
    path.write_text(
        'name = "e"\nversion = "1"\nexecutable = "e"\n'
        f'checksum_sha256 = "{sha(SCRIPT)}"\nallowed_env_vars = ["OK", {toml_value(bad)}]\n'
    )
    with pytest.raises(ManifestFieldError, match=r"allowed_env_vars\[1\]"):
        load_manifest(path)


def test_relative_executable_in_subdirectory(plugins: Path) -> None:
    path = make_plugin(plugins, "sub", exe_at="bin/the-plugin")
    plugin = load_plugin(path)
    assert plugin.executable.path == plugins / "bin" / "the-plugin"


def test_absolute_executable(plugins: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "plugin-bin"
    path = make_plugin(plugins, "abs", exe_at=str(target))
    m = load_manifest(path)
    assert m.executable_path() == target
    assert load_plugin(path).executable.path == target


def test_relative_manifest_path_and_in_memory_manifest_use_cwd(
    plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin(plugins, "rel")
    monkeypatch.chdir(plugins.parent)
    plugin = load_plugin(Path("plugins") / "devboy-source-rel.toml")
    assert plugin.manifest.base_dir == plugins
    assert plugin.executable.path == plugins / "devboy-source-rel"
    assert plugin.manifest_path.is_absolute()

    monkeypatch.chdir(plugins)
    m = PluginManifest(name="rel", version="1", executable="devboy-source-rel", checksum_sha256=sha(SCRIPT))
    assert m.base_dir is None
    assert m.executable_path() == plugins / "devboy-source-rel"
    assert m.executable_path().is_absolute()


def test_custom_prefix(plugins: Path) -> None:
    exe = write_exe(plugins / "x-run")
    path = write_manifest(
        plugins,
        "x",
        {"name": "x", "version": "1", "executable": "x-run", "checksum_sha256": sha(SCRIPT)},
        file_name="acme-x.toml",
    )
    assert load_plugin(path, prefix="acme-").executable.path == exe
    with pytest.raises(BadManifestName, match="devboy-source-<name>.toml"):
        load_manifest(path)
    assert [o.name for o in discover_plugins(plugins, prefix="acme-")] == ["x"]
    assert discover_plugins(plugins) == []


# --- discovery ----------------------------------------------------------------------------


def build_ecosystem(plugins: Path, tmp_path: Path) -> Dict[str, Optional[Type[ManifestError]]]:
    """One good plugin and one broken plugin per failure mode. Returns file name -> the
    expected error type (None: loads)."""
    expected: Dict[str, Optional[Type[ManifestError]]] = {}

    def add(stem: str, err: Optional[Type[ManifestError]], **kw: Any) -> None:
        make_plugin(plugins, stem, **kw)
        expected[f"{DEFAULT_PREFIX}{stem}.toml"] = err

    add("vault", None)
    add("sticky", None, exe_at="sticky/devboy-source-sticky")
    os.chmod(plugins / "sticky", 0o1777)
    add("wwdir", UnsafePermissions, exe_at="ww/devboy-source-wwdir")
    os.chmod(plugins / "ww", 0o777)
    add("mismatch", ChecksumMismatch, checksum_sha256=sha(b"something else"))
    add("noexec", ExecutableNotExecutable, mode=0o644)
    add("wwfile", UnsafePermissions, mode=0o777)
    add("gwfile", UnsafePermissions, mode=0o775)
    add("missing", ExecutableMissing, create_exe=False)
    add("unknown", ManifestFieldError, colour="blue")
    add("nochecksum", ManifestFieldError, checksum_sha256=None)
    add("badchecksum", ManifestFieldError, checksum_sha256="abc123")
    # Symlink to a file whose checksum is right: refused anyway, nothing followed.
    real = write_exe(tmp_path / "real" / "real-binary")
    add("symlink", UnsafePermissions, create_exe=False)
    os.symlink(real, plugins / "devboy-source-symlink")
    # Name mismatch: the file says "named", the content says "other".
    add("named", ManifestNameMismatch, name="other")
    # TOML syntax error on line 3.
    (plugins / "devboy-source-syntax.toml").write_text('name = "syntax"\nversion = "1"\nexecutable = devboy\n')
    expected["devboy-source-syntax.toml"] = ManifestParseError
    # Bad file names that still match the "<prefix>*.toml" glob.
    (plugins / "devboy-source-has space.toml").write_text('name = "has space"\n')
    expected["devboy-source-has space.toml"] = BadManifestName
    (plugins / "devboy-source-.toml").write_text("")
    expected["devboy-source-.toml"] = BadManifestName
    # Not manifests: ignored.
    (plugins / "README.md").write_text("hello")
    (plugins / "other.toml").write_text('name = "other"\n')
    (plugins / "devboy-source-vault.toml.bak").write_text("junk")
    (plugins / ".devboy-source-hidden.toml").write_text("junk")
    return expected


def test_discovery_reports_each_broken_manifest_on_its_own(plugins: Path, tmp_path: Path) -> None:
    expected = build_ecosystem(plugins, tmp_path)
    outcomes = discover_plugins(plugins)
    assert [o.manifest_path.name for o in outcomes] == sorted(expected)
    for outcome in outcomes:
        want = expected[outcome.manifest_path.name]
        assert isinstance(outcome, DiscoveryOutcome)
        assert outcome.manifest_path == plugins / outcome.manifest_path.name
        if want is None:
            assert outcome.ok, outcome.error
            assert outcome.error is None and outcome.plugin is not None
        else:
            assert not outcome.ok and outcome.plugin is None
            assert type(outcome.error) is want, (outcome.manifest_path.name, outcome.error)
            assert outcome.error is not None and outcome.error.message[:1].isupper()
    by_name = {o.name: o for o in outcomes}
    assert by_name["vault"].ok and by_name["sticky"].ok
    assert by_name["named"].name == "named"  # from the file name
    assert by_name[None].manifest_path.name in ("devboy-source-has space.toml", "devboy-source-.toml")


def test_discovery_order_is_sorted(plugins: Path) -> None:
    for name in ["zeta", "alpha", "Mid", "beta_2", "beta-1", "0num"]:
        make_plugin(plugins, name)
    names = [str(o.name) for o in discover_plugins(plugins)]
    assert names == sorted(names) == ["0num", "Mid", "alpha", "beta-1", "beta_2", "zeta"]


def test_missing_directory_means_no_plugins(tmp_path: Path) -> None:
    assert discover_plugins(tmp_path / "nope") == []
    assert discover_plugins(str(tmp_path / "nope" / "deeper")) == []


def test_directory_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ManifestUnreadable) as info:
        discover_plugins(f)
    assert info.value.errno == errno.ENOTDIR


def test_unexpected_oserror_is_wrapped_and_others_still_load(
    plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin(plugins, "a")
    make_plugin(plugins, "b")
    make_plugin(plugins, "c")
    real_open = os.open

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith("devboy-source-b.toml"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        if str(path) == "devboy-source-c":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    outcomes = {o.name: o for o in discover_plugins(plugins)}
    assert outcomes["a"].ok
    for name in ("b", "c"):
        err = outcomes[name].error
        assert isinstance(err, ManifestUnreadable) and err.errno == errno.EACCES
        assert "permission" in err.message.lower()


def test_executable_changing_during_discovery_is_reported(plugins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin(plugins, "a")
    make_plugin(plugins, "b")
    real_hash = exec_image.sha256_fd

    def hash_then_append(fd: int) -> Any:
        result = real_hash(fd)
        if os.fstat(fd).st_ino == os.stat(plugins / "devboy-source-b").st_ino:
            with open(plugins / "devboy-source-b", "ab") as f:
                f.write(b"# appended while hashing\n")
        return result

    monkeypatch.setattr(exec_image, "sha256_fd", hash_then_append)
    with pytest.raises(ExecutableChanged, match="while it was being verified"):
        load_plugin(plugins / "devboy-source-b.toml")
    outcomes = {o.name: o for o in discover_plugins(plugins)}
    assert outcomes["a"].ok
    err = outcomes["b"].error
    assert isinstance(err, ManifestUnreadable) and isinstance(err.__cause__, ExecutableChanged)


def test_fifos_do_not_hang_discovery(plugins: Path) -> None:
    os.mkfifo(plugins / "devboy-source-fifo.toml")
    make_plugin(plugins, "fifoexe", create_exe=False)
    os.mkfifo(plugins / "devboy-source-fifoexe")
    outcomes = {o.name: o for o in discover_plugins(plugins)}
    assert isinstance(outcomes["fifo"].error, ManifestUnreadable)
    assert "FIFO" in outcomes["fifo"].error.message
    assert isinstance(outcomes["fifoexe"].error, ExecutableNotExecutable)


def test_executable_that_is_a_directory(plugins: Path) -> None:
    path = make_plugin(plugins, "dir", create_exe=False)
    (plugins / "devboy-source-dir").mkdir()
    with pytest.raises(ExecutableNotExecutable, match="a directory"):
        load_plugin(path)


def test_manifest_that_is_a_directory(plugins: Path) -> None:
    (plugins / "devboy-source-d.toml").mkdir()
    [outcome] = discover_plugins(plugins)
    assert isinstance(outcome.error, ManifestUnreadable) and outcome.name == "d"


# --- load_manifest errors, one by one, with their messages -----------------------------------


@pytest.mark.parametrize(
    "file_name",
    ["vault.toml", "devboy-source-vault.json", "devboy-source-.toml", "devboy-source-a b.toml", "devboy-source--x.toml"],
)
def test_bad_manifest_name(plugins: Path, file_name: str) -> None:
    path = plugins / file_name
    path.write_text('name = "vault"\n')
    with pytest.raises(BadManifestName) as info:
        load_manifest(path)
    assert "devboy-source-<name>.toml" in info.value.message
    assert info.value.path == str(path)


def test_name_mismatch_shows_both_names(plugins: Path) -> None:
    path = make_plugin(plugins, "vault", name="Vault2")
    with pytest.raises(ManifestNameMismatch) as info:
        load_manifest(path)
    assert "'Vault2'" in info.value.message and "'vault'" in info.value.message
    assert info.value.plugin == "vault"


def test_toml_syntax_error_has_line_number(plugins: Path) -> None:
    path = plugins / "devboy-source-vault.toml"
    path.write_text('name = "vault"\nversion = "1"\n\nexecutable = devboy-source-vault\n')
    with pytest.raises(ManifestParseError) as info:
        load_manifest(path)
    err = info.value
    assert err.line == 4
    assert "line 4" in err.message and "double quotes" in err.message
    assert_no_foreign_chain(err)


def test_toml_error_at_end_of_document(plugins: Path) -> None:
    path = plugins / "devboy-source-vault.toml"
    path.write_text('name = "vault"\nversion = ')
    with pytest.raises(ManifestParseError, match="end of the document"):
        load_manifest(path)


def test_invalid_utf8_is_a_parse_error_with_line(plugins: Path) -> None:
    path = plugins / "devboy-source-vault.toml"
    path.write_bytes(b'name = "vault"\nversion = "\xff"\n')
    with pytest.raises(ManifestParseError, match="UTF-8") as info:
        load_manifest(path)
    assert info.value.line == 2


def test_utf8_bom_is_accepted(plugins: Path) -> None:
    path = make_plugin(plugins, "vault")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_manifest(path).name == "vault"


def test_deeply_nested_toml_is_a_parse_error(plugins: Path) -> None:
    path = plugins / "devboy-source-deep.toml"
    path.write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ManifestParseError, match="too deeply"):
        load_manifest(path)


def test_oversized_manifest_is_refused(plugins: Path) -> None:
    path = plugins / "devboy-source-big.toml"
    path.write_text("# " + "x" * (mf.MAX_MANIFEST_BYTES + 10) + "\n")
    with pytest.raises(ManifestParseError, match="larger than"):
        load_manifest(path)


def test_unknown_fields_are_named_with_allowed_list(plugins: Path) -> None:
    path = make_plugin(plugins, "vault", colour="blue", size=3)
    with pytest.raises(ManifestFieldError) as info:
        load_manifest(path)
    msg = info.value.message
    assert "'colour'" in msg and "'size'" in msg
    for allowed in ("name", "version", "executable", "allowed_env_vars", "checksum_sha256"):
        assert repr(allowed) in msg
    assert_no_foreign_chain(info.value)


@pytest.mark.parametrize("missing", ["name", "version", "executable", "checksum_sha256"])
def test_missing_field_is_named(plugins: Path, missing: str) -> None:
    overrides: Dict[str, Any] = {missing: None}
    path = make_plugin(plugins, "vault", **overrides)
    with pytest.raises(ManifestFieldError, match=f"required field '{missing}' is missing"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("checksum_sha256", "abc", "64 hexadecimal"),
        ("checksum_sha256", "g" * 64, "64 hexadecimal"),
        ("checksum_sha256", 12, "64 hexadecimal"),
        ("version", 1, "version string"),
        ("executable", "", "must not be empty"),
        ("executable", ["a"], "path of the plugin's executable"),
        ("allowed_env_vars", "HOME", "list of environment variable names"),
        ("allowed_env_vars", [1], "valid string"),
    ],
)
def test_invalid_field_is_named(plugins: Path, field: str, value: Any, needle: str) -> None:
    overrides: Dict[str, Any] = {field: value}
    path = make_plugin(plugins, "vault", **overrides)
    with pytest.raises(ManifestFieldError) as info:
        load_manifest(path)
    assert field in info.value.message and needle in info.value.message
    assert info.value.plugin == "vault" and info.value.path == str(path)


def test_nul_in_executable_is_a_field_error(plugins: Path) -> None:
    path = plugins / "devboy-source-vault.toml"
    path.write_text(f'name = "vault"\nversion = "1"\nexecutable = "a\\u0000b"\nchecksum_sha256 = "{"a" * 64}"\n')
    with pytest.raises(ManifestFieldError, match="NUL"):
        load_manifest(path)


def test_long_values_are_truncated_in_messages(plugins: Path) -> None:
    path = make_plugin(plugins, "vault", version=["x" * 5000] * 50, checksum_sha256="f" * 5000)
    with pytest.raises(ManifestFieldError) as info:
        load_manifest(path)
    assert len(info.value.message) < 1500
    assert "x" * 100 not in info.value.message and "f" * 100 not in info.value.message


def test_manifest_missing_file(plugins: Path) -> None:
    with pytest.raises(ManifestUnreadable) as info:
        load_manifest(plugins / "devboy-source-ghost.toml")
    assert info.value.errno == errno.ENOENT


# --- verify_executable ---------------------------------------------------------------------


def test_executable_missing(plugins: Path) -> None:
    with pytest.raises(ExecutableMissing, match="does not exist"):
        verify_executable(plugins / "nope", sha(SCRIPT), plugin="p")
    with pytest.raises(ExecutableMissing, match="directory"):
        verify_executable(plugins / "nodir" / "nope", sha(SCRIPT), plugin="p")


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o444])
def test_not_executable(plugins: Path, mode: int) -> None:
    exe = write_exe(plugins / "x", mode=mode)
    with pytest.raises(ExecutableNotExecutable, match="chmod"):
        verify_executable(exe, sha(SCRIPT), plugin="p")


@pytest.mark.parametrize("mode", [0o700, 0o500, 0o744, 0o711, 0o701])
def test_any_execute_bit_suffices_as_root(plugins: Path, mode: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    verify_executable(write_exe(plugins / "x", mode=mode), sha(SCRIPT))


def test_execute_bit_follows_owner_group_other_rule_for_non_root(
    plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a non-root user the kernel uses the owner, else group, else other bits. CI runs
    as root, so the file is given to a made-up owner and the ids we report are faked;
    for the group and other bits it belongs to root (another user's file is refused)."""
    uid, gid = 4242, 4343
    exe = write_exe(plugins / "x", mode=0o711)
    os.chown(exe, uid, gid)
    monkeypatch.setattr(os, "getegid", lambda: gid + 1)
    monkeypatch.setattr(os, "getgroups", lambda: [])
    monkeypatch.setattr(os, "geteuid", lambda: uid)  # the owner
    verify_executable(exe, sha(SCRIPT))
    os.chmod(exe, 0o611)  # others may execute, the owner may not
    with pytest.raises(ExecutableNotExecutable):
        verify_executable(exe, sha(SCRIPT))
    os.chown(exe, 0, gid)  # we are an "other" to a file of root's
    verify_executable(exe, sha(SCRIPT))
    os.chmod(exe, 0o710)  # only owner and group
    with pytest.raises(ExecutableNotExecutable):
        verify_executable(exe, sha(SCRIPT))
    monkeypatch.setattr(os, "getgroups", lambda: [gid])  # a member of the group
    verify_executable(exe, sha(SCRIPT))
    monkeypatch.setattr(os, "getgroups", lambda: [])
    monkeypatch.setattr(os, "getegid", lambda: gid)
    verify_executable(exe, sha(SCRIPT))


@pytest.mark.parametrize("mode", [0o777, 0o757, 0o775, 0o2775, 0o722])
def test_group_or_world_writable_file_is_unsafe(plugins: Path, mode: int) -> None:
    exe = write_exe(plugins / "x", mode=mode)
    with pytest.raises(UnsafePermissions, match="go-w"):
        verify_executable(exe, sha(SCRIPT), plugin="p")


@pytest.mark.parametrize(
    ("dir_mode", "ok"), [(0o777, False), (0o1777, True), (0o775, False), (0o1775, True), (0o757, False), (0o755, True)]
)
def test_world_writable_directory_needs_sticky_bit(plugins: Path, dir_mode: int, ok: bool) -> None:
    exe = write_exe(plugins / "d" / "x")
    os.chmod(plugins / "d", dir_mode)
    if ok:
        verify_executable(exe, sha(SCRIPT))
    else:
        with pytest.raises(UnsafePermissions, match="sticky"):
            verify_executable(exe, sha(SCRIPT))


def test_symlinked_executable_is_refused(plugins: Path, tmp_path: Path) -> None:
    real = write_exe(tmp_path / "real" / "binary")
    link = plugins / "link"
    os.symlink(real, link)
    with pytest.raises(UnsafePermissions, match="symbolic link") as info:
        verify_executable(link, sha(SCRIPT), plugin="p")
    assert "real file" in info.value.message and "points to" in info.value.message
    dangling = plugins / "dangling"
    os.symlink(tmp_path / "gone", dangling)
    with pytest.raises(UnsafePermissions, match="symbolic link"):
        verify_executable(dangling, sha(SCRIPT))


def test_symlinked_parent_directory_is_followed(plugins: Path, tmp_path: Path) -> None:
    real = write_exe(tmp_path / "realdir" / "binary")
    os.symlink(tmp_path / "realdir", plugins / "linkdir")
    verified = verify_executable(plugins / "linkdir" / "binary", sha(SCRIPT))
    assert verified.identity.ino == os.stat(real).st_ino


def test_checksum_mismatch_shows_both_digests(plugins: Path) -> None:
    exe = write_exe(plugins / "x")
    declared = sha(b"other").upper()
    with pytest.raises(ChecksumMismatch) as info:
        verify_executable(exe, declared, plugin="p")
    err = info.value
    assert err.declared == declared.lower() and err.actual == sha(SCRIPT)
    assert err.declared in err.message and err.actual in err.message
    assert "checksum_sha256" in err.message and "restore" in err.message
    assert err.plugin == "p" and err.path == str(exe)


@pytest.mark.parametrize("bad", ["", "abc", "z" * 64, "a" * 65])
def test_verify_rejects_malformed_checksum(plugins: Path, bad: str) -> None:
    with pytest.raises(ManifestFieldError, match="64"):
        verify_executable(write_exe(plugins / "x"), bad)


def test_large_executable_hash(plugins: Path) -> None:
    data = os.urandom(3 * 65536 + 17)
    exe = write_exe(plugins / "big", data=data)
    assert verify_executable(exe, sha(data)).sha256 == sha(data)


def test_empty_executable_hash(plugins: Path) -> None:
    exe = write_exe(plugins / "empty", data=b"")
    assert verify_executable(exe, sha(b"")).identity.size == 0


# --- the file swap: check_unchanged ---------------------------------------------------------


def _rename_over(exe: Path) -> None:
    tmp = exe.with_name(exe.name + ".new")
    write_exe(tmp, OTHER_SCRIPT)
    os.replace(tmp, exe)


def _rewrite_in_place(exe: Path) -> None:
    with open(exe, "r+b") as f:
        f.write(OTHER_SCRIPT)


def _rewrite_and_restore_mtime(exe: Path) -> None:
    st = os.stat(exe)
    _rewrite_in_place(exe)
    os.utime(exe, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(exe).st_mtime_ns == st.st_mtime_ns


def _replace_with_symlink(exe: Path) -> None:
    keep = exe.with_name(exe.name + ".orig")
    os.rename(exe, keep)
    os.symlink(keep, exe)


def _remove(exe: Path) -> None:
    exe.unlink()


SWAPS: Dict[str, Callable[[Path], None]] = {
    "rename-over": _rename_over,
    "rewrite-in-place": _rewrite_in_place,
    "rewrite-restore-mtime": _rewrite_and_restore_mtime,
    "symlink": _replace_with_symlink,
    "remove": _remove,
}


@pytest.mark.parametrize("swap", list(SWAPS), ids=list(SWAPS))
def test_swap_after_verification_is_detected(plugins: Path, swap: str) -> None:
    """A freshly written file is verified "racy": check_unchanged re-hashes it, so even a
    rewrite within the same timestamp tick is caught."""
    exe = write_exe(plugins / "x")
    verified = verify_executable(exe, sha(SCRIPT))
    assert verified.racy
    verified.check_unchanged()
    SWAPS[swap](exe)
    with pytest.raises(ExecutableChanged) as info:
        verified.check_unchanged(plugin="p")
    assert "'p'" in info.value.message and "not run" in info.value.message
    assert info.value.plugin == "p"


@pytest.mark.parametrize("swap", list(SWAPS), ids=list(SWAPS))
def test_swap_detected_by_stat_alone(plugins: Path, swap: str) -> None:
    """The cheap path: no re-hash, only the lstat comparison (ctime defeats the restored mtime)."""
    exe = write_exe(plugins / "x")
    verified = dataclasses.replace(verify_executable(exe, sha(SCRIPT)), racy=False)
    time.sleep(0.05)  # past the kernel's coarse-clock tick, so the ctime moves
    SWAPS[swap](exe)
    with pytest.raises(ExecutableChanged):
        verified.check_unchanged()


def test_racy_rehash_catches_same_tick_rewrite(plugins: Path) -> None:
    """Simulate a rewrite within the same timestamp tick: the stat looks identical to the
    recorded identity, but the bytes differ. Only the racy re-hash can see it."""
    exe = write_exe(plugins / "x")
    verified = verify_executable(exe, sha(SCRIPT))
    _rewrite_and_restore_mtime(exe)
    same_tick = dataclasses.replace(verified, identity=FileIdentity.from_stat(os.stat(exe, follow_symlinks=False)))
    assert same_tick.racy
    with pytest.raises(ExecutableChanged, match="contents changed"):
        same_tick.check_unchanged()
    # Without the racy flag the single lstat is blind to it: why the flag exists.
    dataclasses.replace(same_tick, racy=False).check_unchanged()


def test_racy_flag_clears_once_file_is_old_enough(plugins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = write_exe(plugins / "x")
    verified = verify_executable(exe, sha(SCRIPT))
    assert verified.racy
    monkeypatch.setattr(mf, "RACY_WINDOW_NS", 0)
    verified.check_unchanged()
    assert not verified.racy
    assert not verify_executable(exe, sha(SCRIPT)).racy


def test_check_unchanged_is_a_single_lstat_when_not_racy(plugins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = write_exe(plugins / "x")
    verified = dataclasses.replace(verify_executable(exe, sha(SCRIPT)), racy=False)
    calls: List[str] = []
    real_stat, real_open = os.stat, os.open

    def counting_stat(*args: Any, **kwargs: Any) -> Any:
        calls.append("stat")
        return real_stat(*args, **kwargs)

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        calls.append("open")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr(os, "open", counting_open)
    verified.check_unchanged()
    assert calls == ["stat"]


def test_verified_executable_equality_ignores_racy(plugins: Path) -> None:
    exe = write_exe(plugins / "x")
    v = verify_executable(exe, sha(SCRIPT))
    assert v == dataclasses.replace(v, racy=not v.racy)
    assert hash(v) == hash(dataclasses.replace(v, racy=not v.racy))
    assert isinstance(v, VerifiedExecutable)


def test_file_identity_differences(plugins: Path) -> None:
    exe = write_exe(plugins / "x")
    st = os.stat(exe)
    ident = FileIdentity.from_stat(st)
    assert ident.differences(st) == []
    assert ident.mode == st.st_mode
    moved = dataclasses.replace(ident, ino=ident.ino + 1, size=ident.size + 1)
    assert len(moved.differences(st)) == 2
    # mode is recorded but not compared: a chmod moves the ctime anyway.
    assert dataclasses.replace(ident, mode=0).differences(st) == []

"""Fuzzing the manifest loader with TOML that ``test_manifest_hypothesis.py`` does not write.

That module's generator writes flat ``key = value`` documents of strings,
numbers, booleans, arrays and inline tables, plus arbitrary text and bytes.
This one adds what real TOML also has: date-times, dates and times (which
tomllib returns as ``datetime`` objects), ``[table]`` and ``[[array.of.tables]]``
headers, dotted keys, literal and multi-line strings, comments, hex/octal/binary
and underscored numbers; documents nested thousands deep; documents near the
size limit; and random splices of TOML tokens that trip the parser's error
paths. Then ``load_plugin`` with an ``executable`` naming anything at all: a
directory, a FIFO, a symlink, a missing file, a file without an execute bit,
"..", an over-long name.

The property: a valid manifest (and plugin), or a typed error whose message
names the file; never another exception, never a hang.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_client.errors import ManifestError, PluginClientError
from plugin_client.manifest import DEFAULT_PREFIX, MAX_MANIFEST_BYTES, LoadedPlugin, PluginManifest, load_manifest, load_plugin

FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
STEM = "fuzz"
GOOD = b"#!/bin/sh\nexit 0\n"
GOOD_SUM = hashlib.sha256(GOOD).hexdigest()


def load(path: Path) -> Any:
    t0 = time.monotonic()
    try:
        result: Any = load_manifest(path)
    except ManifestError as exc:
        assert exc.path == str(path)
        assert exc.message[:1].isupper() and len(exc.message) < 4000
        assert exc.__cause__ is None or isinstance(exc.__cause__, Exception)
        result = exc
    except BaseException as exc:  # pragma: no cover - the property under test
        raise AssertionError(f"load_manifest raised {type(exc).__name__}: {exc!r}"[:500]) from None
    assert time.monotonic() - t0 < 10.0
    if isinstance(result, PluginManifest):
        assert result.name == STEM and len(result.checksum_sha256) == 64
        assert all(v and "=" not in v and "\x00" not in v for v in result.allowed_env_vars)
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-manifests")


def write(workdir: Path, data: bytes) -> Path:
    path = workdir / f"{DEFAULT_PREFIX}{STEM}.toml"
    path.write_bytes(data)
    return path


# --- a TOML writer with the whole grammar ------------------------------------------------------

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


def basic_string(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "-_") for c in k) else basic_string(k)


tz = st.sampled_from([None, dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(-dt.timedelta(hours=8))])
temporal = st.one_of(
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31), timezones=tz),
    st.dates(),
    st.times(),
)


def scalar_toml(draw: Any, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        form = draw(st.sampled_from(["dec", "hex", "oct", "bin", "under"])) if v >= 0 else "dec"
        return {"dec": str(v), "hex": hex(v), "oct": "0o" + format(v, "o"), "bin": bin(v), "under": f"{v:_}"}[form]
    if isinstance(v, float):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else {"nan": "nan", "inf": "inf", "-inf": "-inf"}[repr(v)]
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=draw(st.sampled_from(["T", " "])))
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, str):
        style = draw(st.sampled_from(["basic", "literal", "multi", "multiliteral"]))
        if style == "literal" and "'" not in v and not any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in v):
            return "'" + v + "'"
        if style == "multiliteral" and "'''" not in v and "'" not in v[-1:] and not any(ord(c) < 0x20 and c not in "\t\n" or ord(c) == 0x7F for c in v):
            return "'''" + v + "'''"
        if style == "multi":
            return '"""' + basic_string(v)[1:-1] + '"""'
        return basic_string(v)
    raise TypeError(type(v))


values = st.recursive(
    st.one_of(text, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.floats(), temporal),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=8,
)
field_values = st.one_of(
    values,
    st.just(STEM),
    st.just(GOOD_SUM),
    st.lists(st.sampled_from(["HOME", "PATH", "A=B", "", "LANG"]) | temporal, max_size=3),
    st.sampled_from(["bin/x", "/abs/x", "0.1.0"]),
)


def inline(draw: Any, v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(inline(draw, x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{key(k)} = {inline(draw, x)}" for k, x in v.items()) + "}"
    return scalar_toml(draw, v)


@st.composite
def documents(draw: Any) -> str:
    """Top-level pairs (some dotted), then [table] and [[array]] sections, with comments."""
    lines: List[str] = []
    top = draw(st.dictionaries(st.sampled_from(["name", "version", "executable", "allowed_env_vars", "checksum_sha256"]) | text, field_values, max_size=6))
    for k, v in top.items():
        if draw(st.booleans()) and isinstance(v, dict) and v:  # a dotted key for one member
            sub, subv = next(iter(v.items()))
            lines.append(f"{key(k)}.{key(sub)} = {inline(draw, subv)}")
        else:
            lines.append(f"{key(k)} = {inline(draw, v)}" + (" # a comment" if draw(st.booleans()) else ""))
    for _ in range(draw(st.integers(0, 3))):
        header = ".".join(key(p) for p in draw(st.lists(text | st.sampled_from(["name", "plugin", "env"]), min_size=1, max_size=3)))
        many = draw(st.booleans())
        lines.append(f"[[{header}]]" if many else f"[{header}]")
        for k, v in draw(st.dictionaries(text, values, max_size=3)).items():
            lines.append(f"{key(k)} = {inline(draw, v)}")
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "# " + draw(text).replace("\n", " ").replace("\r", " "))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "\r\n", "", "\n\n"]))


@FUZZ
@given(source=documents())
def test_documents_with_the_whole_toml_grammar(workdir: Path, source: str) -> None:
    load(write(workdir, source.encode("utf-8")))


# --- splices of tokens: the parser's error paths --------------------------------------------------

TOKENS = [
    "name", "version", "executable", "allowed_env_vars", "checksum_sha256", STEM, GOOD_SUM,
    " = ", "=", "[", "]", "[[", "]]", "{", "}", ",", ".", '"', "'", '"""', "'''", "\\", "\\u00e9", "\\U0001F600",
    "\\ud800", "\n", "\r\n", "\r", "\t", " ", "#", "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "1979-05-27T25:61:61",
    "0x1F", "0o17", "0b101", "1_000", "1__0", "+inf", "-nan", "1e400", "9" * 30, "true", "false", "\x00", "\x7f", "é",
    "\ufeff", "𝄞",
]


@FUZZ
@given(tokens=st.lists(st.sampled_from(TOKENS) | text, max_size=40))
def test_token_splices(workdir: Path, tokens: List[str]) -> None:
    load(write(workdir, "".join(tokens).encode("utf-8", "surrogatepass")))


@pytest.mark.parametrize("depth", [10, 500, 5_000, 100_000])
@pytest.mark.parametrize("shape", ["array", "inline-table", "dotted-key", "header"])
def test_deep_documents(workdir: Path, depth: int, shape: str) -> None:
    if shape == "array":
        body = "allowed_env_vars = " + "[" * depth + "]" * depth + "\n"
    elif shape == "inline-table":
        body = "x = " + "{a = " * depth + "1" + "}" * depth + "\n"
    elif shape == "dotted-key":
        body = "a" + ".a" * (depth - 1) + " = 1\n"
    else:
        body = "[" + ".".join(["a"] * depth) + "]\n"
    data = (f'name = "{STEM}"\n' + body).encode()
    if len(data) > MAX_MANIFEST_BYTES:
        data = data[: MAX_MANIFEST_BYTES + 1]
    assert isinstance(load(write(workdir, data)), ManifestError)


@pytest.mark.parametrize("size", [MAX_MANIFEST_BYTES - 100, MAX_MANIFEST_BYTES, MAX_MANIFEST_BYTES + 1, 4 * MAX_MANIFEST_BYTES])
def test_documents_around_the_size_limit(workdir: Path, size: int) -> None:
    head = f'name = "{STEM}"\nversion = "1"\nexecutable = "x"\nchecksum_sha256 = "{GOOD_SUM}"\n'.encode()
    data = head + b"#" * (size - len(head) - 1) + b"\n"
    got = load(write(workdir, data))
    assert isinstance(got, PluginManifest) == (size <= MAX_MANIFEST_BYTES)


# --- load_plugin: executables that are not what they seem ---------------------------------------


@pytest.fixture(scope="module")
def exe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugins directory holding one of everything an ``executable`` could name."""
    d = tmp_path_factory.mktemp("fuzz-exes")
    os.chmod(d, 0o755)
    (d / "good").write_bytes(GOOD)
    os.chmod(d / "good", 0o755)
    (d / "noexec").write_bytes(GOOD)
    os.chmod(d / "noexec", 0o644)
    (d / "writable").write_bytes(GOOD)
    os.chmod(d / "writable", 0o777)
    (d / "subdir").mkdir()
    os.mkfifo(d / "fifo")
    (d / "link").symlink_to(d / "good")
    (d / "dangling").symlink_to(d / "nowhere")
    (d / "empty").write_bytes(b"")
    os.chmod(d / "empty", 0o755)
    return d


exe_names = st.sampled_from(
    ["good", "noexec", "writable", "subdir", "fifo", "link", "dangling", "empty", "missing", ".", "..", "", "/",
     "subdir/..", "good/", "./good", "subdir/../good", "x" * 300, "a\nb", "/dev/null", "/proc/self/status", " good"]
) | text


@FUZZ
@given(exe=exe_names, checksum=st.sampled_from([GOOD_SUM, GOOD_SUM.upper(), hashlib.sha256(b"").hexdigest(), "0" * 64]),
       env=st.lists(st.sampled_from(["HOME", "PATH"]) | text, max_size=3))
def test_load_plugin_with_any_executable(exe_dir: Path, exe: str, checksum: str, env: List[str]) -> None:
    doc = (
        f'name = "{STEM}"\nversion = "1"\nexecutable = {basic_string(exe)}\n'
        f"allowed_env_vars = [{', '.join(basic_string(e) for e in env)}]\nchecksum_sha256 = {basic_string(checksum)}\n"
    )
    path = exe_dir / f"{DEFAULT_PREFIX}{STEM}.toml"
    path.write_text(doc, encoding="utf-8")
    t0 = time.monotonic()
    try:
        got: Any = load_plugin(path)
    except PluginClientError as exc:  # ManifestError, or ExecutableChanged
        assert exc.message[:1].isupper()
        got = exc
    except BaseException as exc:  # pragma: no cover - the property under test
        raise AssertionError(f"load_plugin raised {type(exc).__name__}: {exc!r}"[:500]) from None
    assert time.monotonic() - t0 < 5.0
    if isinstance(got, LoadedPlugin):
        assert got.executable.sha256 == checksum.lower()
        real = os.path.realpath(got.executable.path)
        assert real in (os.path.realpath(exe_dir / "good"), os.path.realpath(exe_dir / "empty")), real


def test_known_executable_outcomes(exe_dir: Path) -> None:
    """The fuzz above accepts any typed error; pin down the important ones."""
    from plugin_client import errors

    expect: Dict[str, type] = {
        "good": LoadedPlugin,
        "noexec": errors.ExecutableNotExecutable,
        "writable": errors.UnsafePermissions,
        "subdir": errors.ExecutableNotExecutable,
        "fifo": errors.ExecutableNotExecutable,
        "link": errors.UnsafePermissions,
        "dangling": errors.UnsafePermissions,
        "missing": errors.ExecutableMissing,
    }
    path = exe_dir / f"{DEFAULT_PREFIX}{STEM}.toml"
    for exe, kind in expect.items():
        path.write_text(f'name = "{STEM}"\nversion = "1"\nexecutable = "{exe}"\nchecksum_sha256 = "{GOOD_SUM}"\n')
        try:
            got: Any = load_plugin(path)
        except errors.PluginClientError as exc:
            got = exc
        assert isinstance(got, kind), (exe, got)


# --- the dotted-key bomb ---------------------------------------------------------------------------
# tomllib keeps every prefix of a dotted key (O(n**2) memory): before the loader
# counted the dots outside strings, this 200 KB manifest made it allocate over
# 15 GB and the host was OOM-killed.


@pytest.mark.parametrize(
    "body",
    [
        "a" + ".a" * 99_999 + " = 1\n",
        "[" + ".".join(["a"] * 100_000) + "]\n",
        "".join(f"k{i}" + ".a" * 500 + " = 1\n" for i in range(400)),
        "x = {" + "a" + ".a" * 50_000 + " = 1}\n",
    ],
    ids=["dotted-key", "table-header", "many-keys", "inline-table"],
)
def test_dotted_key_bomb_is_refused_at_once(workdir: Path, body: str) -> None:
    from _reliability import MiB, peak_rss_bytes, reset_peak_rss, rss_bytes

    base = rss_bytes()
    peak_ok = reset_peak_rss()
    t0 = time.monotonic()
    got = load(write(workdir, (f'name = "{STEM}"\n' + body).encode()))
    assert time.monotonic() - t0 < 2.0
    assert (peak_rss_bytes() if peak_ok else rss_bytes()) - base < 64 * MiB
    from plugin_client.errors import ManifestParseError

    assert isinstance(got, ManifestParseError) and "dots outside its strings" in got.message


def test_a_few_dotted_keys_still_get_the_field_error(workdir: Path) -> None:
    from plugin_client.errors import ManifestFieldError

    got = load(write(workdir, (f'name = "{STEM}"\nplugin.a.b = 1\nversion = 0.1\n').encode()))
    assert isinstance(got, ManifestFieldError)


dotty = st.text(st.sampled_from(list('..../\\"\'#ab \t')), max_size=1500)


@FUZZ
@given(version=dotty, exe=dotty.filter(lambda s: 0 < len(s) <= 1000), comment=dotty, style=st.sampled_from(["basic", "literal", "multi", "multiliteral"]))
def test_dots_inside_strings_and_comments_are_never_refused(workdir: Path, version: str, exe: str, comment: str, style: str) -> None:
    """Valid manifests full of dots in their strings and comments load: the dot count
    only ever refuses documents that could not be valid anyway."""
    def lit(s: str) -> str:
        if style == "literal" and "'" not in s and "\n" not in s:
            return "'" + s + "'"
        if style == "multiliteral" and "'" not in s:
            return "'''" + s + "'''"
        if style == "multi":
            return '"""' + basic_string(s)[1:-1] + '"""'
        return basic_string(s)

    doc = (
        f"# {comment.replace(chr(10), ' ')}\n"
        f'name = "{STEM}"  # {comment.replace(chr(10), " ")}\n'
        f"version = {lit(version)}\nexecutable = {lit(exe)}\nchecksum_sha256 = \"{GOOD_SUM}\"\n"
    )
    got = load(write(workdir, doc.encode()))
    assert isinstance(got, PluginManifest), got
    assert got.version == version and got.executable == exe

"""Property tests: the manifest loader, fed anything, gives a valid manifest or a typed
ManifestError, never another exception.

Documents are generated as dicts of TOML-typed values and serialized by the tiny
writer below (so most inputs are *valid* TOML and reach validation), and also as
arbitrary text and bytes (so the parser's error paths are hit too).
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_client.errors import ManifestError, ManifestNameMismatch
from plugin_client.manifest import DEFAULT_PREFIX, PluginManifest, load_manifest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,  # keep the work tree clean
    suppress_health_check=[HealthCheck.too_slow],
)

FIELDS = ["name", "version", "executable", "allowed_env_vars", "checksum_sha256"]
GOOD_CHECKSUM = hashlib.sha256(b"x").hexdigest()
STEM = "prop"


# --- a tiny TOML writer ------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else toml_string(k)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_document(d: Dict[str, Any]) -> str:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in d.items())


# --- strategies ---------------------------------------------------------------------------

# Surrogates cannot be encoded as UTF-8, so they never occur in a file.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
scalars = st.one_of(
    text,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=3)),
    max_leaves=10,
)
field_values = st.one_of(
    values,
    st.just(STEM),
    st.just(GOOD_CHECKSUM),
    st.just(GOOD_CHECKSUM.upper()),
    st.lists(st.sampled_from(["HOME", "PATH", "A=B", "", "X\x00", "LANG"]), max_size=4),
    st.sampled_from(["bin/x", "/abs/x", "", "a\x00b", "0.1.0"]),
)
documents = st.dictionaries(st.one_of(st.sampled_from(FIELDS), text), field_values, max_size=7)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hypothesis-manifests")


def load_bytes(workdir: Path, data: bytes) -> Any:
    path = workdir / f"{DEFAULT_PREFIX}{STEM}.toml"
    path.write_bytes(data)
    try:
        return load_manifest(path)
    except ManifestError as exc:
        assert exc.message and exc.message[:1].isupper()
        assert exc.path == str(path)
        assert len(exc.message) < 4000
        return exc


def check_valid(manifest: PluginManifest, workdir: Path) -> None:
    assert manifest.name == STEM
    assert re.fullmatch(r"[0-9a-f]{64}", manifest.checksum_sha256)
    assert all(v and "=" not in v and "\x00" not in v for v in manifest.allowed_env_vars)
    assert len(set(manifest.allowed_env_vars)) == len(manifest.allowed_env_vars)
    assert manifest.executable and "\x00" not in manifest.executable
    assert manifest.base_dir == workdir
    assert manifest.executable_path().is_absolute()


@SETTINGS
@given(documents)
def test_writer_round_trips(document: Dict[str, Any]) -> None:
    """The generator really produces valid TOML, so the loader's validation is exercised."""
    assert tomllib.loads(toml_document(document)) == document


@SETTINGS
@given(documents)
def test_generated_documents_load_or_fail_typed(workdir: Path, document: Dict[str, Any]) -> None:
    result = load_bytes(workdir, toml_document(document).encode("utf-8"))
    if isinstance(result, PluginManifest):
        check_valid(result, workdir)
    elif isinstance(document.get("name"), str) and document["name"] != STEM:
        assert isinstance(result, ManifestNameMismatch)


@SETTINGS
@given(
    st.fixed_dictionaries(
        {
            "name": st.just(STEM),
            "version": text,
            "executable": text.filter(lambda s: s != ""),
            "checksum_sha256": st.sampled_from([GOOD_CHECKSUM, GOOD_CHECKSUM.upper()]),
        },
        optional={"allowed_env_vars": st.lists(text, max_size=5)},
    )
)
def test_nearly_valid_documents(workdir: Path, document: Dict[str, Any]) -> None:
    """Right shape, arbitrary strings: valid unless a string breaks a documented rule."""
    result = load_bytes(workdir, toml_document(document).encode("utf-8"))
    env_ok = all(v and "=" not in v and "\x00" not in v for v in document.get("allowed_env_vars", []))
    exe_ok = "\x00" not in document["executable"] and len(document["executable"]) <= 4096
    if env_ok and exe_ok:
        assert isinstance(result, PluginManifest), result
        check_valid(result, workdir)
        assert result.version == document["version"]
        assert result.checksum_sha256 == GOOD_CHECKSUM
    else:
        assert isinstance(result, ManifestError)


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(workdir: Path, source: str) -> None:
    result = load_bytes(workdir, source.encode("utf-8", "surrogatepass"))
    if isinstance(result, PluginManifest):
        check_valid(result, workdir)


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes(workdir: Path, data: bytes) -> None:
    result = load_bytes(workdir, data)
    if isinstance(result, PluginManifest):
        check_valid(result, workdir)


@SETTINGS
@given(st.text(max_size=60))
def test_arbitrary_file_names(tmp_path_factory: pytest.TempPathFactory, stem: str) -> None:
    """Any file name gives a manifest or a typed error (names that cannot exist on disk
    are skipped)."""
    if "/" in stem or "\x00" in stem or stem in ("", ".", ".."):
        return
    directory = tmp_path_factory.getbasetemp() / "names"
    directory.mkdir(exist_ok=True)
    path = directory / stem
    try:
        path.write_text(toml_document({"name": STEM, "version": "1", "executable": "x", "checksum_sha256": GOOD_CHECKSUM}))
    except (OSError, UnicodeEncodeError):
        return  # e.g. a name too long for the file system
    try:
        result: Any = load_manifest(path)
    except ManifestError as exc:
        result = exc
    finally:
        path.unlink()
    if isinstance(result, PluginManifest):
        assert stem == f"{DEFAULT_PREFIX}{STEM}.toml"

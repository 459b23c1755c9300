"""``plugin-client doctor``: verify every manifest and executable, probe the plugins side
by side, and report (a table, or one JSON document of :data:`SCHEMA_VERSION`).

Built on the host: :class:`DoctorHost` is a :class:`~plugin_client.PluginHost` over the
plugins directory whose clients each probe their plugin when started (spawn,
``init``, ``is_available``, timed); :func:`probe_all` starts the plugins named on
the command line (or all) with the host's side-by-side ``start()``, shuts the host
down (every process stopped and reaped), and turns each client, and each entry of
the host's ``broken``, into one plugin's findings. :func:`run_doctor` adds the
document around them, and an unusable directory (``_cli_common.plugins_dir_problem``,
in the words ``call`` uses).

What it deliberately does not do: choose the plugins directory (``cli``), keep any
client running after the report, or check a ``sources.toml``
(``doctor --sources``: :mod:`plugin_client._cli_doctor_sources`).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import __version__
from ._cli_common import EXIT_PLUGINS_DIR, Out, PluginsDirProblem, plugins_dir_problem, report
from ._impl import IMPLEMENTATION, NO_EXTENSIONS, spawn_method
from .client import PluginClient
from .errors import (
    ChecksumMismatch,
    ExecutableChanged,
    ExecutableMissing,
    ExecutableNotExecutable,
    ManifestUnreadable,
    PluginClientError,
    PluginError,
    UnsafePermissions,
)
from .host import PluginHost
from .manifest import DEFAULT_PREFIX, LoadedPlugin
from .policy import LifetimePolicy
from .protocol import Capability, InitResult, IsAvailableResult

__all__ = (
    "SCHEMA_VERSION",
    "UnknownPlugins",
    "DoctorHost",
    "known_names",
    "probe_all",
    "run_doctor",
    "print_doctor",
    "run",
    "spawn_report",
    "capability_names",
)

#: The version of ``doctor --json``'s document; README.md's "doctor --json" says
#: what each version changed.
SCHEMA_VERSION = 2

_TAIL_SHOWN = 5

# The executable's problems, by error type (an executable that cannot be read is a
# ManifestUnreadable whose path is not the manifest's: see _executable_kind).
_EXECUTABLE_KINDS: Tuple[Tuple[type, str], ...] = (
    (ExecutableMissing, "missing"),
    (ExecutableNotExecutable, "not-executable"),
    (ChecksumMismatch, "checksum-mismatch"),
    (UnsafePermissions, "unsafe-permissions"),
    (ExecutableChanged, "changed"),
)


# How the text report names each "problem" of the JSON document.
_PROBLEM_TEXT = {
    "manifest": "manifest error",
    "executable": "executable problem",
    "start": "did not start",
    "is_available": "not available",
}


class UnknownPlugins(ValueError):
    """Names given to doctor that no manifest in the directory has. ``unknown`` and
    ``known`` list them."""

    def __init__(self, unknown: Sequence[str], known: Sequence[str], plugins_dir: Path) -> None:
        self.unknown = list(unknown)
        self.known = list(known)
        names = ", ".join(repr(n) for n in unknown)
        super().__init__(
            f"No plugin {names} in {str(plugins_dir)!r} (found: {', '.join(known) or 'none'}); "
            "check the name or --plugins-dir."
        )


def capability_names(bits: Optional[int]) -> List[str]:
    """The names of the capability bits ``bits``; unknown bits as one hex number."""
    if bits is None:
        return []
    names = [c.name for c in Capability if c.name and bits & c.value]
    unknown = bits & ~sum(c.value for c in Capability)
    if unknown:
        names.append(hex(unknown))
    return names


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def _executable_kind(err: PluginClientError, manifest_path: Path) -> Optional[str]:
    """The executable problem ``err`` is, or ``None`` when it is not one."""
    for cls, kind in _EXECUTABLE_KINDS:
        if isinstance(err, cls):
            return kind
    if isinstance(err.__cause__, ExecutableChanged):
        return "changed"  # discover_plugins caught the executable mid-update
    if isinstance(err, ManifestUnreadable) and err.path != str(manifest_path):
        return "unreadable"  # the executable or a directory on its path, not the manifest
    return None


def _hint(problem: Optional[str], kind: Optional[str], name: str, manifest_path: Path) -> Optional[str]:
    """What to do next, one sentence, for a plugin that is not ok."""
    manifest = shlex.quote(str(manifest_path))
    if problem == "manifest":
        return f"Fix the manifest as the error says; `plugin-client manifest verify {manifest}` checks it again."
    if problem == "executable":
        if kind == "checksum-mismatch":
            return (
                f"If the new executable is intended, `plugin-client manifest update {manifest}` records its "
                "checksum; otherwise reinstall the original."
            )
        if kind == "changed":
            return "The executable changed while doctor ran (an install in progress?); run doctor again once it ends."
        return (
            f"Fix the executable as the error says (it is never run until then); "
            f"`plugin-client manifest verify {manifest}` checks it again."
        )
    call = f"plugin-client call {shlex.quote(name)}"
    where = f"--plugins-dir {shlex.quote(str(manifest_path.parent))}"
    if problem == "start":
        return (
            f"The plugin did not start: see its error and stderr; `{call} init {where} -v` starts it "
            "once more and shows its log."
        )
    if problem == "is_available":
        return f"The plugin runs but its backend is not ready: see the detail; `{call} is_available {where}` asks again."
    return None


class _ProbeClient(PluginClient):
    """A client whose ``start()`` is the doctor's whole probe of one plugin: ``init``,
    then ``is_available``, each timed. The host's ``start()`` runs these side by side,
    so the doctor needs no threads of its own, and each plugin's findings are its own
    (a hung ``is_available`` of one plugin delays no other's)."""

    def __init__(self, plugin: LoadedPlugin, **kwargs: Any) -> None:
        super().__init__(plugin, **kwargs)
        self.loaded = plugin
        self.spawn_to_ready_ms: Optional[float] = None
        self.is_available_ms: Optional[float] = None
        self.availability: Optional[IsAvailableResult] = None
        self.availability_error: Optional[PluginClientError] = None

    def start(self) -> InitResult:
        t0 = time.perf_counter()
        init = super().start()
        self.spawn_to_ready_ms = _ms(time.perf_counter() - t0)
        t1 = time.perf_counter()
        try:
            self.availability = self.is_available()
        except PluginClientError as exc:  # kept: the start itself succeeded
            self.availability_error = exc
        self.is_available_ms = _ms(time.perf_counter() - t1)
        return init


class DoctorHost(PluginHost):
    """The :class:`~plugin_client.PluginHost` the doctor probes through: one plugins
    directory, every client a probe (spawn, ``init``, ``is_available``) with
    ``timeout`` as its start and request timeouts, and short stops."""

    client_class = _ProbeClient  # type: ignore[assignment]  # a PluginClient, with a probing start()

    def __init__(self, plugins_dir: Path, timeout: float) -> None:
        policy = LifetimePolicy(
            start_timeout=timeout, request_timeout=timeout, exit_wait=min(1.0, timeout), shutdown_grace=min(2.0, timeout)
        )
        super().__init__(plugins_dir, policy=policy)


def _blank(name: str, manifest_path: Path) -> Dict[str, Any]:
    return {
        "name": name,
        "manifest_path": str(manifest_path),
        "version": None,
        "executable": None,
        "manifest_ok": True,
        "executable_ok": None,
        "checksum": "unknown",
        "problem": None,
        "executable_problem": None,
        "plugin_version": None,
        "capabilities": [],
        "capabilities_bits": None,
        "availability": None,
        "availability_detail": None,
        "spawn_to_ready_ms": None,
        "is_available_ms": None,
        "error_type": None,
        "error": None,
        "hint": None,
        "stderr_tail": [],
        "verdict": "broken",
        "health": None,
    }


def _broken_finding(name: str, manifest_path: Path, err: PluginClientError) -> Dict[str, Any]:
    """A manifest or executable that did not load (the host's ``broken``: a
    :class:`~plugin_client.ManifestError` for a host of a plugins directory)."""
    found = _blank(name, manifest_path)
    kind = _executable_kind(err, manifest_path)
    found["error_type"] = type(err).__name__
    found["error"] = err.message
    if kind is None:
        found["manifest_ok"] = False
        found["problem"] = "manifest"
    else:
        found["problem"] = "executable"
        found["executable_problem"] = kind
        found["executable_ok"] = False
        found["executable"] = getattr(err, "path", None)
        if isinstance(err, ChecksumMismatch):
            found["checksum"] = "mismatch"
    found["hint"] = _hint(found["problem"], kind, name, manifest_path)
    return found


def _probe_finding(name: str, client: _ProbeClient, outcome: Union[InitResult, Exception]) -> Dict[str, Any]:
    """What one probe found; ``client`` has been shut down."""
    plugin = client.loaded
    found = _blank(name, plugin.manifest_path)
    found["version"] = plugin.manifest.version
    found["executable"] = str(plugin.executable.path)
    found["executable_ok"] = True
    found["checksum"] = "ok"
    found["spawn_to_ready_ms"] = client.spawn_to_ready_ms
    found["is_available_ms"] = client.is_available_ms
    if isinstance(outcome, InitResult):
        found["plugin_version"] = outcome.plugin_version
        found["capabilities_bits"] = outcome.capabilities_bits
        found["capabilities"] = capability_names(outcome.capabilities_bits)
    avail, exc = client.availability, client.availability_error
    if isinstance(outcome, Exception):
        exc = outcome if isinstance(outcome, PluginClientError) else PluginClientError(f"{type(outcome).__name__}: {outcome}")
    if avail is not None:
        found["availability"] = avail.status.value
        found["availability_detail"] = avail.detail
        if avail.status.value == "available":
            found["verdict"] = "ok"
        else:
            found["verdict"] = "unavailable"
            found["problem"] = "is_available"
    elif exc is not None:
        found["error_type"] = type(exc).__name__
        found["error"] = exc.message
        kind = _executable_kind(exc, plugin.manifest_path)
        if kind is not None:  # checked again before the spawn: never run
            found["problem"] = "executable"
            found["executable_problem"] = kind
            found["executable_ok"] = False
            found["checksum"] = "unknown"
        elif client.spawn_to_ready_ms is None:
            found["problem"] = "start"
        else:
            found["problem"] = "is_available"
            if isinstance(exc, PluginError):
                found["verdict"] = "unavailable"  # it runs, but its is_available failed
    found["hint"] = _hint(found["problem"], found["executable_problem"], name, plugin.manifest_path)
    health = client.health()
    found["health"] = health.model_dump(mode="json")
    if found["verdict"] != "ok":
        found["stderr_tail"] = list(health.stderr_tail)
    return found


def _probe_client(host: DoctorHost, name: str) -> _ProbeClient:
    client = host[name]
    assert isinstance(client, _ProbeClient)
    return client


def _broken_name(key: str, plugins_dir: Path) -> Tuple[str, Path]:
    """The plugin name and manifest path of a key of ``host.broken``: a name, or (a
    manifest whose file name gives none) the manifest's path."""
    if "/" in key:
        path = Path(key)
        return path.name[len(DEFAULT_PREFIX) : -len(".toml")], path
    return key, plugins_dir / f"{DEFAULT_PREFIX}{key}.toml"


def known_names(host: DoctorHost) -> Dict[str, Path]:
    """name -> manifest path of every manifest the host found, loaded or broken."""
    (plugins_dir,) = host.plugins_dirs
    known = {name: _probe_client(host, name).loaded.manifest_path for name in host.names()}
    for key in host.broken:
        name, path = _broken_name(key, plugins_dir)
        known.setdefault(name, path)
    return known


def probe_all(host: DoctorHost, names: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """Probe the plugins of ``host`` (only ``names`` when given) side by side with
    ``host.start()``, shut the host down, and return each plugin's findings in
    manifest file-name order: the loaded ones probed, the broken ones (the host's
    ``broken``) as they failed to load. The host is shut down, so every probe's
    process is stopped and reaped, when this returns, also when it raises. Raises
    :class:`UnknownPlugins` for a name no manifest has."""
    (plugins_dir,) = host.plugins_dirs
    try:
        known = known_names(host)
        wanted = list(dict.fromkeys(names)) if names else list(known)
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise UnknownPlugins(unknown, sorted(known), plugins_dir)
        loaded = [n for n in wanted if n in host]
        clients = {n: _probe_client(host, n) for n in loaded}  # kept: a host shut down has no members
        broken = {_broken_name(key, plugins_dir)[0]: (key, err) for key, err in host.broken.items()}
        outcomes = host.start(loaded)
    finally:
        host.shutdown()
    found: List[Tuple[str, Dict[str, Any]]] = []
    for name in wanted:
        if name in clients:
            found.append((clients[name].loaded.manifest_path.name, _probe_finding(name, clients[name], outcomes[name])))
        else:
            key, err = broken[name]
            path = _broken_name(key, plugins_dir)[1]
            found.append((path.name, _broken_finding(name, path, err)))
    return [f for _, f in sorted(found, key=lambda pair: pair[0])]


def spawn_report() -> Dict[str, str]:
    """How this core starts a plugin, by kind of executable. An ELF binary is run from
    the descriptor it was verified through (``_exec_image``); a script by its path.
    The compiled core takes its ``vfork`` path for a descriptor (``execveat``, since
    posix_spawn's closefrom would close it), the twin hands ``os.posix_spawn`` the
    ``/proc/self/fd`` name of the descriptor (``_core_spawn.pxi``, ``_core_py_spawn.py``)."""
    script = spawn_method()
    if IMPLEMENTATION == "cython":
        elf = "vfork+execveat(fd)"
    else:
        elf = f"{script} of /proc/self/fd/N"
    return {"script": script, "elf": elf}


def run_doctor(
    plugins_dir: Path, *, timeout: float = 10.0, source: str = "--plugins-dir", names: Sequence[str] = ()
) -> Dict[str, Any]:
    """The doctor's findings as a JSON-ready dict (what ``doctor --json`` prints).

    A missing, unreadable or not-a-directory ``plugins_dir`` gives a document with
    ``"healthy": false``, ``plugins_dir_problem`` and the error. Raises
    :class:`UnknownPlugins` when ``names`` holds a name no manifest has.
    """
    started = time.perf_counter()
    spawn = spawn_report()
    doc: Dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "plugin_client_version": __version__,
        "implementation": IMPLEMENTATION,
        "no_extensions": NO_EXTENSIONS,
        "spawn_method": spawn["script"],
        "spawn_method_elf": spawn["elf"],
        "python": sys.executable,
        "plugins_dir": str(plugins_dir),
        "plugins_dir_source": source,
        "plugins_dir_exists": plugins_dir.is_dir(),
        "plugins_dir_problem": None,
        "selected": list(names) or None,
        "timeout_s": timeout,
        "healthy": False,
        "counts": {"ok": 0, "unavailable": 0, "broken": 0},
        "plugins": [],
        "elapsed_ms": None,
        "error_type": None,
        "error": None,
    }
    problem = plugins_dir_problem(plugins_dir, source)
    host: Optional[DoctorHost] = None
    if problem is None:
        host = DoctorHost(plugins_dir, timeout)
        if host.dir_errors:  # it changed between the check and the scan: say how, in call's words
            host.shutdown()
            problem = plugins_dir_problem(plugins_dir, source)
            if problem is None:  # pragma: no cover - it came back in between
                (err,) = host.dir_errors.values()
                problem = PluginsDirProblem("unreadable", err)
    if problem is not None:
        doc.update(plugins_dir_problem=problem.kind, error_type=type(problem.error).__name__, error=problem.error.message)
        doc["elapsed_ms"] = _ms(time.perf_counter() - started)
        return doc
    assert host is not None
    plugins = probe_all(host, names)
    doc["plugins"] = plugins
    doc["healthy"] = all(p["verdict"] == "ok" for p in plugins)
    doc["counts"] = {v: sum(1 for p in plugins if p["verdict"] == v) for v in ("ok", "unavailable", "broken")}
    doc["elapsed_ms"] = _ms(time.perf_counter() - started)
    return doc


def _table(rows: Sequence[Sequence[str]]) -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _executable_cell(p: Dict[str, Any]) -> str:
    if p["executable_ok"] is None:
        return "-"
    return "ok" if p["executable_ok"] else p["executable_problem"]


def print_doctor(out: Out, doc: Dict[str, Any], command: str = "doctor") -> None:
    """The text report of a :func:`run_doctor` document."""
    core = doc["implementation"] + (" (extensions off)" if doc["no_extensions"] else "")
    out.line(f"plugin-client {doc['plugin_client_version']}  core: {core}")
    out.line(f"spawn: scripts {doc['spawn_method']}; ELF binaries {doc['spawn_method_elf']}")
    out.line(f"python: {doc['python']}")
    missing = "" if doc["plugins_dir_exists"] else "  (does not exist)"
    out.line(f"plugins dir: {doc['plugins_dir']}  (from {doc['plugins_dir_source']}){missing}")
    out.line()
    if doc["plugins_dir_problem"] is not None:
        out.err(f"plugin-client {command}: {doc['error_type']}: {doc['error']}")
        return
    plugins = doc["plugins"]
    if not plugins:
        out.line(f"No plugins found (no {DEFAULT_PREFIX}*.toml in the directory).")
        return
    rows: List[List[str]] = [
        ["NAME", "VERSION", "MANIFEST", "EXECUTABLE", "CHECKSUM", "CAPABILITIES", "AVAILABILITY", "READY", "STATUS"]
    ]
    for p in plugins:
        ready = f"{p['spawn_to_ready_ms']:.1f} ms" if p["spawn_to_ready_ms"] is not None else "-"
        rows.append(
            [
                p["name"],
                p["version"] or "-",
                "ok" if p["manifest_ok"] else "error",
                _executable_cell(p),
                p["checksum"],
                ",".join(p["capabilities"]) or "-",
                p["availability"] or "-",
                ready,
                p["verdict"].upper() if p["verdict"] != "ok" else "ok",
            ]
        )
    for line in _table(rows):
        out.line(line)
    for p in plugins:
        if p["verdict"] == "ok":
            continue
        out.line()
        what = _PROBLEM_TEXT.get(p["problem"], p["problem"])
        out.line(f"{p['name']}: {p['verdict']} ({what})")
        if p["error"]:
            out.line(f"  {p['error_type']}: {p['error']}")
        elif p["availability_detail"]:
            out.line(f"  {p['availability']}: {p['availability_detail']}")
        if p["hint"]:
            out.line(f"  what to do: {p['hint']}")
        tail = p["stderr_tail"][-_TAIL_SHOWN:]
        if tail:
            out.line(f"  stderr (last {len(tail)} lines):")
            for line in tail:
                out.line(f"    | {line}")
    counts = doc["counts"]
    out.line()
    out.line(
        f"{len(plugins)} plugin(s): {counts['ok']} healthy, {counts['unavailable']} unavailable, "
        f"{counts['broken']} broken ({doc['elapsed_ms']:.0f} ms)."
    )


def run(out: Out, doc: Dict[str, Any], *, as_json: bool) -> int:
    """Print ``doc`` and return doctor's exit code."""
    code = report(out, doc, as_json=as_json, text=lambda: print_doctor(out, doc), ok=doc["healthy"])
    return EXIT_PLUGINS_DIR if doc["plugins_dir_problem"] is not None else code

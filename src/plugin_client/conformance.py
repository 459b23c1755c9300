"""Check a plugin against the wire protocol (PROTOCOL.md), as ``plugin-client conformance`` does.

:func:`run_conformance` spawns a loaded plugin the way the client does (exactly
its manifest's ``allowed_env_vars``, its own process group, the executable
re-checked right before the spawn) and drives it over its pipes with the
library's own codec (:func:`~plugin_client.protocol.encode_request`,
:func:`~plugin_client.protocol.decode_reply`) and process layer, not through
:class:`~plugin_client.PluginClient`: a conformance run must send what a client
never sends (a method the plugin did not claim, an unknown method, ids far
from 1) and see what a client hides (a stray line, how the process ends). It
returns a :class:`ConformanceReport`, one :class:`Check` per rule:

``init``
    the reply decodes as ``init``'s result, echoes ``source_name``, has a
    non-empty ``plugin_version`` and claims only the capability bits of
    protocol 1.1 (``0x1ff``).
``is_available``
    answers a status, not an error.
``get``, ``list``, ``validate``, ``key_material``, ``put``, ``delete``
    each claimed method answers in its result's shape; a ``bad-reference``
    error is a fine answer for an unknown reference, and ``unavailable`` or
    ``needs-credential`` for a backend that is not ready. ``put`` and
    ``delete`` change the plugin's store, so they run only with ``write=True``
    (on the reference ``plugin-client-conformance/probe``).
``unclaimed-capability``, ``unknown-method``
    a method whose bit was not claimed, and a method that does not exist, are
    answered ``unsupported-capability``.
``ids-echoed``
    every reply carries its request's id (ids start above 2**32).
``stdout-only-replies``
    nothing but replies reaches stdout: checked before ``init`` and while
    idle after the requests, each after a short wait.
``exit-on-stdin-close``, ``exit-on-sigterm``
    the plugin exits (status 0 after stdin close) within ``exit_bound``
    seconds of its stdin being closed, and of SIGTERM to its process group.

What it deliberately does not do: print (the CLI does), keep or show any
secret (a value or key material read is dropped; a stray line is described by
its length and id, never its text), or judge the plugin's own error texts.
Each check runs once; timings are bounds, not benchmarks.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

from pydantic import SecretStr

from ._core_errors import DeadlineExceeded, FrameTooLargeError, PipeClosed, SpawnFailed, StreamEOF
from ._spawn_env import plugin_env
from ._impl import monotonic
from ._process import IDLE_EXITED, IDLE_OUTPUT, PluginProcess
from .errors import PluginClientError, PluginError, ReplyIdMismatch
from .health import ExitStage
from .manifest import LoadedPlugin
from .policy import LifetimePolicy
from .protocol import (
    Call,
    Capability,
    DeleteCall,
    GetCall,
    InitCall,
    InitResult,
    IsAvailableCall,
    KeyMaterialCall,
    ListCall,
    PutCall,
    Result,
    ValidateCall,
    decode_reply,
    encode_request,
)

__all__ = ("Check", "ConformanceReport", "run_conformance", "PROBE_REFERENCE", "FIRST_ID")

PASS, FAIL, SKIP = "pass", "fail", "skip"

#: The reference the checks read, validate, write and delete: one no store should hold.
PROBE_REFERENCE = "plugin-client-conformance/probe"
#: The first request id: above 2**32, so a plugin that keeps ids in 32 bits, or
#: counts its own from 1, is caught.
FIRST_ID = 5_000_000_017
_UNKNOWN_METHOD = "secret_source.plugin_client_conformance_probe"
_KNOWN_BITS = sum(c.value for c in Capability)
# What a reply that is a well-formed refusal may be, beyond the method's result.
_NOT_READY = ("unavailable", "needs-credential")
_STDERR_SHOWN = 10

# method check name -> (capability, the call, error kinds that are a fine answer)
_PROBES: Dict[str, Tuple[Capability, Call, Tuple[str, ...]]] = {
    "get": (Capability.READ, GetCall(reference=PROBE_REFERENCE), ("bad-reference",) + _NOT_READY),
    "list": (Capability.LIST, ListCall(), _NOT_READY),
    "validate": (Capability.VALIDATE, ValidateCall(reference=PROBE_REFERENCE), ("bad-reference",) + _NOT_READY),
    "key_material": (Capability.KEY_SOURCE, KeyMaterialCall(purpose="plugin-client-conformance"),
                     ("bad-reference",) + _NOT_READY),
    "put": (Capability.WRITE, PutCall(reference=PROBE_REFERENCE, value=SecretStr("unused")), ("bad-reference",) + _NOT_READY),
    "delete": (Capability.DELETE, DeleteCall(reference=PROBE_REFERENCE), ("bad-reference",) + _NOT_READY),
}
_WRITES = ("put", "delete")


@dataclass(frozen=True)
class Check:
    """One rule's outcome: ``status`` is ``"pass"``, ``"fail"`` or ``"skip"``."""

    name: str
    status: str
    detail: str


@dataclass(frozen=True)
class ConformanceReport:
    """Every check of one run, in order, and the last lines the plugin wrote to stderr."""

    plugin: str
    manifest_path: str
    checks: Tuple[Check, ...]
    stderr_tail: Tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No check failed (skipped ones do not count)."""
        return all(c.status != FAIL for c in self.checks)

    def failed(self) -> List[str]:
        """The names of the failed checks."""
        return [c.name for c in self.checks if c.status == FAIL]

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (what ``conformance --json`` prints)."""
        return {
            "plugin": self.plugin,
            "manifest_path": self.manifest_path,
            "ok": self.ok,
            "failed": self.failed(),
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks],
            "stderr_tail": list(self.stderr_tail),
        }


class _Broken(Exception):
    """The exchange failed in a way that leaves the process unusable (timeout, exit, huge line)."""


def _describe_line(frame: bytes) -> str:
    """A stray line described without its text (it may hold a secret)."""
    try:
        doc = json.loads(frame)
    except ValueError:
        doc = None
    rid = doc.get("id") if isinstance(doc, dict) else None
    about = f", a reply to id {rid}" if isinstance(rid, int) and not isinstance(rid, bool) else ""
    return f"a line of {len(frame)} bytes{about}"


class _Run:
    """One conformance run: the process under test, its request ids, and the findings."""

    def __init__(self, plugin: LoadedPlugin, *, source_name: str, config: Dict[str, Any], timeout: float,
                 quiet_wait: float) -> None:
        self.plugin = plugin
        self.name = plugin.name
        self.source_name = source_name
        self.config = config
        self.timeout = timeout
        self.quiet_wait = quiet_wait
        self.next_id = FIRST_ID
        self.replies = 0
        self.bad_ids: List[str] = []
        self.stray: List[str] = []
        self.proc: Optional[PluginProcess] = None
        self.stderr: List[str] = []
        self.init: Optional[InitResult] = None

    # --- the process ---------------------------------------------------------------

    def spawn(self) -> PluginProcess:
        exe = self.plugin.executable
        exe.check_unchanged(plugin=self.name)
        return PluginProcess.start(
            [exe.path_bytes], plugin_env(self.plugin.manifest.allowed_env_vars), plugin_name=self.name,
            max_frame_bytes=LifetimePolicy().max_frame_bytes, stderr_lines=50, exec_fd=exe.exec_fileno,
        )

    def end(self, proc: PluginProcess) -> None:
        self.stderr = proc.tail.lines()
        proc.kill()
        if self.proc is proc:
            self.proc = None

    def fresh(self) -> PluginProcess:
        """A new process, initialised, for the checks after a broken one."""
        if self.proc is not None:
            self.end(self.proc)
        proc = self.proc = self.spawn()
        exited = self.quiet("after a restart")  # and a banner read now is not taken for init's reply
        if exited:
            raise _Broken(exited)
        self.exchange(InitCall(source_name=self.source_name, config=self.config))
        return proc

    # --- one request ----------------------------------------------------------------

    def take_id(self) -> int:
        rid, self.next_id = self.next_id, self.next_id + 1
        return rid

    def send(self, line: bytes, rid: int, call_type: Type[Call]) -> Result:
        """Write ``line`` (request ``rid``) and decode its reply as ``call_type``'s.
        Raises the codec's typed errors (a ``PluginError`` is the plugin's answer) or
        :class:`_Broken`, after which the process has been ended."""
        proc = self.proc
        assert proc is not None
        try:
            frame = proc.exchange(line, monotonic() + self.timeout)
        except DeadlineExceeded:
            self.end(proc)
            raise _Broken(f"no reply within {self.timeout:g} s") from None
        except (StreamEOF, PipeClosed):
            info = proc.reap_dead()
            self.stderr = proc.tail.lines()
            self.proc = None
            how = info.signal or f"status {info.returncode}"
            raise _Broken(f"the plugin exited (or closed its stdout) instead of replying ({how})") from None
        except FrameTooLargeError:
            self.end(proc)
            raise _Broken("the reply line is longer than 16 MiB") from None
        self.replies += 1
        try:
            return decode_reply(frame, call_type, rid, plugin=self.name)
        except ReplyIdMismatch as exc:
            self.bad_ids.append(exc.message)
            raise

    def exchange(self, call: Call) -> Result:
        rid = self.take_id()
        return self.send(encode_request(call, rid), rid, type(call))

    def raw(self, method: str, params: Optional[Dict[str, Any]], decode_as: Type[Call]) -> Result:
        """A request the client would never send (unclaimed, unknown): built by hand."""
        rid = self.take_id()
        doc: Dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            doc["params"] = params
        return self.send(json.dumps(doc, separators=(",", ":")).encode() + b"\n", rid, decode_as)

    def quiet(self, when: str) -> Optional[str]:
        """After ``quiet_wait``: None if stdout stayed quiet, else what came (the lines
        are read and dropped, so the run goes on in step)."""
        proc = self.proc
        assert proc is not None
        time.sleep(self.quiet_wait)
        state = proc.idle_check()
        if state == IDLE_OUTPUT:
            lines: List[str] = []
            try:
                while True:
                    lines.append(_describe_line(proc.reader.read_frame(monotonic() + 0.05)))
            except (DeadlineExceeded, StreamEOF, FrameTooLargeError):
                pass
            got = "; ".join(lines) if lines else "bytes without a newline"
            self.stray.append(f"{when}: {got}")
        if state == IDLE_EXITED:
            return f"the plugin exited {when}"
        return None


def _answer_check(run: _Run, name: str, call: Call, fine_kinds: Sequence[str]) -> Check:
    """A claimed method: its result's shape, or an acceptable error kind."""
    try:
        result = run.exchange(call)
    except PluginError as exc:
        if exc.kind in fine_kinds:
            return Check(name, PASS, f"answered {exc.kind!r}, a documented answer to the probe")
        return Check(name, FAIL, f"claimed, but answered {exc.kind!r}: {exc.message}")
    except PluginClientError as exc:
        return Check(name, FAIL, exc.message)
    fields = ", ".join(sorted(type(result).model_fields))
    return Check(name, PASS, f"a {type(result).__name__} ({fields})")


def _refusal(run: _Run, method: str, params: Optional[Dict[str, Any]]) -> Optional[str]:
    """None if ``method`` is answered ``unsupported-capability``, else what happened."""
    try:
        run.raw(method, params, IsAvailableCall)
    except PluginError as exc:
        if exc.kind == "unsupported-capability":
            return None
        return f"{method} was answered {exc.kind!r}, not 'unsupported-capability'"
    except PluginClientError as exc:
        return f"{method}: {exc.message}"
    return f"{method} was answered with a result"


def _raw_params(call: Call) -> Optional[Dict[str, Any]]:
    if isinstance(call, (ListCall, IsAvailableCall)):
        return None
    params = call.model_dump()
    if "value" in params:
        params["value"] = "unused"
    return params


def _init_check(run: _Run, result: InitResult) -> Check:
    problems = []
    if result.source_name != run.source_name:
        problems.append(f"source_name is {result.source_name!r}, not the {run.source_name!r} sent")
    if not result.plugin_version.strip():
        problems.append("plugin_version is empty")
    unknown = result.capabilities_bits & ~_KNOWN_BITS
    if unknown:
        problems.append(f"capabilities_bits {result.capabilities_bits:#x} sets bits protocol 1.1 does not define "
                        f"({unknown:#x})")
    if problems:
        return Check("init", FAIL, "; ".join(problems))
    names = [c.name for c in Capability if c.name and result.capabilities_bits & c.value]
    return Check("init", PASS, f"plugin_version {result.plugin_version!r}, capabilities "
                               f"{', '.join(names) or 'none'} ({result.capabilities_bits:#x})")


def _exit_on_stdin_close(run: _Run, bound: float) -> Check:
    proc = run.proc
    assert proc is not None
    run.proc = None
    t0 = monotonic()
    info = proc.stop(exit_wait=bound, grace=1.0)
    run.stderr = proc.tail.lines()
    took = monotonic() - t0
    if info.stage is not ExitStage.STDIN_CLOSE:
        return Check("exit-on-stdin-close", FAIL,
                     f"still running {bound:g} s after its stdin was closed (ended by {info.stage.value})")
    if info.returncode != 0:
        how = info.signal or f"status {info.returncode}"
        return Check("exit-on-stdin-close", FAIL, f"exited after its stdin was closed, but with {how}, not 0")
    return Check("exit-on-stdin-close", PASS, f"exited with status 0 in {took * 1000:.0f} ms")


def _exit_on_sigterm(run: _Run, bound: float) -> Check:
    try:
        proc = run.fresh()
    except (PluginClientError, _Broken, SpawnFailed) as exc:
        return Check("exit-on-sigterm", FAIL, f"a fresh process did not start: {exc}")
    t0 = monotonic()
    proc.child.signal_group(signal.SIGTERM)
    rc = proc.child.wait(bound, reap=False)
    took = monotonic() - t0
    run.end(proc)
    if rc is None:
        return Check("exit-on-sigterm", FAIL, f"still running {bound:g} s after SIGTERM to its process group")
    how = "status 0" if rc == 0 else (f"signal {signal.Signals(-rc).name}" if rc < 0 else f"status {rc}")
    return Check("exit-on-sigterm", PASS, f"exited ({how}) in {took * 1000:.0f} ms")


def run_conformance(
    plugin: LoadedPlugin,
    *,
    write: bool = False,
    source_name: Optional[str] = None,
    config: Optional[Dict[str, Any]] = None,
    timeout: float = 5.0,
    exit_bound: float = 2.0,
    quiet_wait: float = 0.3,
) -> ConformanceReport:
    """Run every check against ``plugin``; see the module docstring.

    ``timeout`` bounds each request (``init`` included), ``exit_bound`` each exit
    check, ``quiet_wait`` is how long stdout is watched for stray output. With
    ``write``, ``put`` and ``delete`` run on :data:`PROBE_REFERENCE` (a claimed
    ``put`` then a claimed ``delete`` removes it again). Never raises for what
    the plugin does: every failure is a failed :class:`Check`.
    """
    run = _Run(plugin, source_name=source_name or plugin.name, config=dict(config or {}), timeout=timeout,
               quiet_wait=quiet_wait)
    checks: List[Check] = []

    def report() -> ConformanceReport:
        if run.bad_ids and not any(c.name == "ids-echoed" for c in checks):  # a run that ended early
            checks.append(Check("ids-echoed", FAIL, "; ".join(run.bad_ids[:3])))
        return ConformanceReport(plugin.name, str(plugin.manifest_path), tuple(checks),
                                 tuple(run.stderr[-_STDERR_SHOWN:]))

    try:
        run.proc = run.spawn()
    except (PluginClientError, SpawnFailed) as exc:
        checks.append(Check("init", FAIL, f"the plugin cannot be started: {exc}"))
        return report()
    try:
        exited = run.quiet("before any request")
        if exited:
            checks.append(Check("init", FAIL, exited))
            return report()
        try:
            result = run.exchange(InitCall(source_name=run.source_name, config=run.config))
        except (PluginClientError, _Broken) as exc:
            checks.append(Check("init", FAIL, str(exc)))
            return report()
        assert isinstance(result, InitResult)
        run.init = result
        checks.append(_init_check(run, result))
        claimed = result.capabilities

        try:
            run.exchange(IsAvailableCall())
            checks.append(Check("is_available", PASS, "a status"))
        except PluginClientError as exc:
            checks.append(Check("is_available", FAIL, exc.message))
        except _Broken as exc:
            checks.append(Check("is_available", FAIL, str(exc)))
            run.fresh()

        refusals: List[str] = []
        refused: List[str] = []
        for name, (cap, call, fine) in _PROBES.items():
            if run.proc is None:
                run.fresh()
            if claimed & cap:
                if name in _WRITES and not write:
                    checks.append(Check(name, SKIP, "claimed; not called without --write (it changes the store)"))
                    continue
                if name == "put":
                    call = PutCall(reference=PROBE_REFERENCE, value=SecretStr(secrets.token_hex(8)))
                try:
                    checks.append(_answer_check(run, name, call, fine))
                except _Broken as exc:
                    checks.append(Check(name, FAIL, str(exc)))
                continue
            checks.append(Check(name, SKIP, f"not claimed ({cap.name}); see unclaimed-capability"))
            if name == "put" and not write:
                continue  # a plugin that does put without claiming WRITE would store the probe
            try:
                problem = _refusal(run, call.method.value, _raw_params(call))
            except _Broken as exc:
                problem = f"{call.method.value}: {exc}"
            refused.append(call.method.value)
            if problem:
                refusals.append(problem)
        if refusals:
            checks.append(Check("unclaimed-capability", FAIL, "; ".join(refusals)))
        elif refused:
            checks.append(Check("unclaimed-capability", PASS, f"refused {', '.join(refused)}"))
        else:
            checks.append(Check("unclaimed-capability", SKIP, "every method that may be sent is claimed"))

        if run.proc is None:
            run.fresh()
        try:
            problem = _refusal(run, _UNKNOWN_METHOD, {})
        except _Broken as exc:
            problem = f"{_UNKNOWN_METHOD}: {exc}"
        checks.append(Check("unknown-method", FAIL, problem) if problem else
                      Check("unknown-method", PASS, f"refused {_UNKNOWN_METHOD}"))

        if run.bad_ids:
            checks.append(Check("ids-echoed", FAIL, "; ".join(run.bad_ids[:3])))
        else:
            checks.append(Check("ids-echoed", PASS, f"{run.replies} replies, ids {FIRST_ID} to {run.next_id - 1}"))

        if run.proc is None:
            run.fresh()
        exited = run.quiet("while idle")
        if run.stray:
            checks.append(Check("stdout-only-replies", FAIL, "stdout carried what nobody asked for: "
                                + "; ".join(run.stray)))
        else:
            checks.append(Check("stdout-only-replies", PASS,
                                f"nothing before init or after {run.quiet_wait:g} s idle"))
        if exited:
            checks.append(Check("exit-on-stdin-close", FAIL, exited))
        else:
            checks.append(_exit_on_stdin_close(run, exit_bound))
        checks.append(_exit_on_sigterm(run, exit_bound))
    except (PluginClientError, _Broken, SpawnFailed) as exc:
        # A fresh process needed between checks did not start: what ran stands.
        checks.append(Check("restart", FAIL, f"a fresh process for the remaining checks did not start: {exc}"))
    finally:
        if run.proc is not None:
            run.end(run.proc)
    return report()

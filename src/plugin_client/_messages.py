"""Every message the engine gives a host, composed in one place.

The style: capitalized sentences that name the plugin, show values with
``!r``, and say what to do. A crash's message is a *cause* (what the plugin
did, one sentence naming it) followed by its *outcome* (what became of the
plugin), and the outcome is chosen once, from whether this crash disabled the
plugin: a message never says both that the next request starts a fresh
process and that the plugin is disabled. The reasons kept in ``health()``
(``last_error``, ``disabled_reason``) are causes, so a message that quotes one
does not repeat an outcome either.

Public names in a private module: the engine (:mod:`plugin_client._flow`)
and the bookkeeping (:mod:`plugin_client._lifecycle`) import them.
"""

from __future__ import annotations

import errno
import os
from datetime import datetime
from typing import Callable, Optional, Union

from ._core_errors import DeadlineExceeded, FrameTooLargeError, PipeClosed, StreamEOF
from .errors import PluginClientError, PluginError
from .policy import LifetimePolicy

__all__ = (
    "init_failure",
    "init_advice",
    "crashed",
    "disabled",
    "disabled_reason",
    "probe_failed_reason",
    "next_probe",
    "executable_changed",
    "stderr_hint",
    "lock_timeout",
    "unsupported",
    "client_closed",
    "init_not_buildable",
    "cannot_start",
    "out_of_fds",
    "wrong_source",
    "stray_output",
    "timed_out",
    "exited_while_answering",
    "reply_too_long",
    "init_timed_out",
    "exited_during_init",
    "exited_while_idle",
    "init_reply_too_long",
    "init_refused",
    "init_failed",
)


def _sentence(text: str) -> str:
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


# --- outcomes ---------------------------------------------------------------------------


def crashed(cause: str, *, killed: bool, now_disabled: bool, policy: LifetimePolicy, advice: str = "") -> str:
    """A crash's message: ``cause``, then its one outcome, then ``advice``.

    ``killed``: the host ended the process (else it exited by itself, or never
    started). ``now_disabled``: this crash reached the restart cap.
    """
    ended = "It was killed" if killed else ""
    if now_disabled and policy.disabled_cooldown is not None:
        # (Reached the cap, or a probe failed: health().disabled_reason says which.)
        outcome = (
            "the plugin is now disabled (health().disabled_reason); one probe spawn is allowed "
            "after its cooldown (health().next_probe), or fix it, then call clear_disabled()."
        )
    elif now_disabled:
        outcome = (
            f"the plugin is now disabled after {policy.restart_cap} crashes within "
            f"{policy.restart_window:g} s; fix it, then call clear_disabled()."
        )
    else:
        outcome = "the next request starts a fresh process."
    outcome = f"{ended}; {outcome}" if ended else outcome[0].upper() + outcome[1:]
    text = f"{_sentence(cause)} {outcome}"
    return f"{text} {_sentence(advice)}" if advice else text


def disabled_reason(count: int, policy: LifetimePolicy, last_cause: str) -> str:
    """``health().disabled_reason``: why, with the last crash's cause (not its outcome)."""
    return (
        f"it crashed {count} times within {policy.restart_window:g} s (restart_cap={policy.restart_cap}); "
        f"the last crash: {_sentence(last_cause)}"
    )


def probe_failed_reason(cooldown: float, last_cause: str) -> str:
    """``health().disabled_reason`` after a failed probe spawn (its cause, not its outcome)."""
    return f"its probe spawn after a cooldown of {cooldown:g} s failed: {_sentence(last_cause)}"


def disabled(name: str, reason: str, probe: str = "") -> str:
    """``PluginDisabled``'s message; ``probe`` is :func:`next_probe`'s sentence under a cooldown."""
    if probe:
        return f"Plugin {name!r} is disabled: {reason} {probe} Or fix the plugin, then call clear_disabled()."
    return f"Plugin {name!r} is disabled: {reason} Fix the plugin, then call clear_disabled()."


def next_probe(in_seconds: float, at: Optional[datetime], cooldown: float) -> str:
    """When a disabled plugin's next probe spawn is allowed (``at`` None: one is under way)."""
    if at is None:
        return f"A probe spawn, after a cooldown of {cooldown:g} s, is under way."
    return (
        f"The next probe spawn is allowed in {max(in_seconds, 0.0):.3g} s, at "
        f"{at.isoformat(timespec='milliseconds')} (a cooldown of {cooldown:g} s)."
    )


def executable_changed(cause: str) -> str:
    """``health().executable_changed``: a spawn refused because the executable changed, and what to do."""
    return (
        f"{_sentence(cause)} This is not counted as a crash, and every spawn checks the file again: "
        "restore the verified file, or load the new one (PluginHost.reload(), or a new client for "
        "a bare client) after updating checksum_sha256."
    )


def stderr_hint(name: str) -> str:
    return f"See health().stderr_tail or the log 'plugin_client.plugin.{name}'."


# --- causes -------------------------------------------------------------------------------


def timed_out(name: str, method: str, policy: LifetimePolicy) -> str:
    return f"Plugin {name!r} did not answer {method!r} within request_timeout={policy.request_timeout:g} s"


def exited_while_answering(name: str, method: str, how: str) -> str:
    return f"Plugin {name!r} exited while answering {method!r} ({how})"


def reply_too_long(name: str, limit: int) -> str:
    return f"Plugin {name!r} sent a reply line longer than max_frame_bytes={limit}"


REPLY_TOO_LONG_ADVICE = "Raise max_frame_bytes in the LifetimePolicy if such replies are legitimate."


def init_timed_out(name: str, policy: LifetimePolicy) -> str:
    return f"Plugin {name!r} did not finish starting within start_timeout={policy.start_timeout:g} s"


def exited_during_init(name: str, how: str) -> str:
    return f"Plugin {name!r} exited during init ({how})"


def exited_while_idle(name: str, how: str) -> str:
    return f"Plugin {name!r} exited while idle ({how})"


def init_reply_too_long(name: str, limit: int) -> str:
    return f"Plugin {name!r} sent an init reply longer than max_frame_bytes={limit}"


def init_refused(name: str, kind: str, detail: str) -> str:
    return f"Plugin {name!r} refused init ({kind}: {detail or 'no detail'}); check its config and protocol version"


def init_failed(name: str, error_type: str) -> str:
    return f"Plugin {name!r} failed during init ({error_type})"


def wrong_source(name: str, got: str, expected: str) -> str:
    return (
        f"Plugin {name!r} answered init for source {got!r} instead of {expected!r}; "
        "it must echo the source_name it was given"
    )


def stray_output(name: str) -> str:
    return (
        f"Plugin {name!r} wrote to stdout while no request was in flight; make sure it writes "
        "only replies to stdout and logs to stderr"
    )


def cannot_start(name: str, path: str, code: int) -> str:
    return (
        f"Plugin {name!r}: cannot start {path!r}: {os.strerror(code)}; "
        "check the manifest's executable and its permissions"
    )


# --- refusals (no crash) -----------------------------------------------------------------


def out_of_fds(name: str, code: int) -> str:
    whose = "the system" if code == errno.ENFILE else "the host process"
    return (
        f"Plugin {name!r} was not started: {whose} has run out of file descriptors "
        f"({errno.errorcode[code]}: {os.strerror(code)}); close files the host no longer needs or raise "
        "the limit (ulimit -n, RLIMIT_NOFILE), then retry. No crash was counted."
    )


def lock_timeout(name: str, seconds: float) -> str:
    return (
        f"Plugin {name!r}: another request held the client for more than "
        f"{seconds:g} s; check health() for a hung plugin."
    )


def unsupported(name: str, capability: str, method: str) -> str:
    return (
        f"Plugin {name!r} does not claim the {capability} capability needed by "
        f"{method!r}; use a plugin that supports it."
    )


def client_closed(name: str, client_type: str) -> str:
    return f"Plugin {name!r}: the client was shut down; make a new {client_type}."


def init_not_buildable(name: str, problems: str) -> str:
    return (
        f"Plugin {name!r}: its init call cannot be built ({problems}); "
        "pass a str source_name and a config of JSON values."
    )


def init_failure(name: str, policy: LifetimePolicy, exc: BaseException) -> Union[str, Callable[[str], str]]:
    """What an init that failed with ``exc`` says the plugin did (for a dead
    process, a function of how it ended)."""
    if isinstance(exc, DeadlineExceeded):
        return init_timed_out(name, policy)
    if isinstance(exc, (StreamEOF, PipeClosed)):
        return lambda how: exited_during_init(name, how)
    if isinstance(exc, FrameTooLargeError):
        return init_reply_too_long(name, exc.limit)
    if isinstance(exc, PluginError):
        return init_refused(name, exc.kind, exc.detail or "")
    if isinstance(exc, PluginClientError):
        return exc.message  # a sentence naming the plugin and the init request already
    return init_failed(name, type(exc).__name__)


def init_advice(name: str, exc: BaseException) -> str:
    """The advice after a failed init: look at stderr, unless the error says it all."""
    if isinstance(exc, (DeadlineExceeded, StreamEOF, PipeClosed)) or not isinstance(exc, PluginClientError):
        return stderr_hint(name)
    return ""

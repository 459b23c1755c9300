"""The slow path of the wire: what exactly is wrong with a line that failed validation.

:func:`plugin_client.protocol.decode_reply` and ``decode_request`` validate a
line in one pass; only when that fails do they come here, with the
validation's issues stripped of input (:func:`issues_of`), to pick the one
exception that names the first thing wrong (:func:`diagnose_reply`,
:func:`diagnose_request`). A well-formed reply that is the plugin's error, the
wrong id, or neither or both of ``result``/``error`` gets its exception from
:func:`plugin_error`, :func:`id_mismatch` or :func:`ambiguous`.

What it deliberately does not do: decode a good line (that is
:mod:`plugin_client._wire` and :mod:`plugin_client.protocol`), or run on the
warm path. Speed is not a concern here; secrecy is. A message describes a value
by its JSON kind, its size or an offset, never its content, and holds no
pydantic text (which quotes input); the plugin's own error text is the one
exception, quoted and clipped.
"""

import re
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import pydantic_core
from pydantic import ValidationError

from ._enums import Method
from ._plugin_wire import MAX_REQUEST_ID, clip, count, int_text, kind_of
from .errors import (
    AmbiguousReply,
    BadJsonRpcVersion,
    BadReplyId,
    BlankReply,
    InvalidJsonReply,
    InvalidUtf8Reply,
    MalformedRequest,
    PluginClientError,
    PluginError,
    PluginUnsupportedCapability,
    ReplyIdMismatch,
    ReplyShapeError,
)

__all__ = (
    "Issue",
    "issues_of",
    "describe_all",
    "diagnose_reply",
    "diagnose_request",
    "id_mismatch",
    "ambiguous",
    "plugin_error",
)

# Only these paths, which explain a broken line, parse it a second time.
_from_json = pydantic_core.from_json

# An issue of a ValidationError, stripped of the input: (type, loc, kind of input, safe text).
Issue = Tuple[str, Tuple[Union[str, int], ...], str, str]
_JITER_MESSAGE = re.compile(r"[A-Za-z ,'`]{1,80} at line \d+ column \d+")


def issues_of(exc: ValidationError) -> List[Issue]:
    out: List[Issue] = []
    for err in exc.errors(include_url=False):
        kind = err["type"]
        ctx = err.get("ctx") or {}
        safe = ""
        if kind == "json_invalid":
            text = str(ctx.get("error", ""))
            safe = text if _JITER_MESSAGE.fullmatch(text) else ""
        elif kind == "value_error":
            # Raised by this module's own validators, whose messages hold no input.
            safe = str(ctx.get("error", ""))
        elif kind in ("literal_error", "enum"):
            safe = str(ctx.get("expected", ""))
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            bound = next(iter(ctx.values()), None)
            safe = str(bound) if isinstance(bound, int) else ""
        out.append((kind, tuple(err["loc"]), kind_of(err.get("input")), safe))
    return out


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "a boolean",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
    "bytes_type": "a string",
}


def _path(loc: Sequence[Union[str, int]]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = "material_b64" if part == "material" else clip(str(part), 40)
            text += f".{name}" if text else name
    return text


def _describe(issue: Issue, root: int) -> str:
    kind, loc, got, safe = issue
    where = _path(loc[root:])
    subject = f"{where!r}" if where else "it"
    if kind == "missing":
        return f"{subject} is missing"
    if kind in _EXPECTED:
        return f"{subject} must be {_EXPECTED[kind]}, not {got}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"{subject} must be >= {safe or 0}"
    if kind in ("less_than_equal", "less_than"):
        return f"{subject} must be <= {safe}" if safe else f"{subject} is too large"
    if kind in ("literal_error", "enum"):
        return f"{subject} must be {safe}, not {got}"
    if kind == "value_error" and safe:
        return safe
    return f"{subject} is invalid ({kind}, got {got})"


def describe_all(issues: Sequence[Issue], root: int) -> str:
    shown = "; ".join(_describe(issue, root) for issue in issues[:3])
    if len(issues) > 3:
        shown += f"; and {len(issues) - 3} more"
    return shown


def _who(plugin: Optional[str]) -> str:
    return "The plugin" if plugin is None else f"Plugin {plugin!r}"


def _on(method: Method, request_id: int) -> str:
    return f"request {request_id} ({method.value!r})"


def diagnose_reply(
    line: bytes, issues: List[Issue], method: Method, request_id: int, plugin: Optional[str]
) -> PluginClientError:
    """Work out what is wrong with a reply that failed validation (the slow path)."""
    who, on = _who(plugin), _on(method, request_id)
    size = count(len(line), "byte")
    if not line.strip():
        return BlankReply(
            f"{who} sent a blank line in reply to {on}; a plugin must write exactly one JSON "
            "object per line to stdout (logs belong on stderr).",
            plugin=plugin,
        )
    if any(issue[0] in ("json_invalid", "json_type") for issue in issues):
        bad_at: Optional[int] = None
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:  # exc.object is the line: keep only the offset
            bad_at = exc.start
        if bad_at is not None:
            return InvalidUtf8Reply(
                f"{who} sent a reply to {on} that is not valid UTF-8 (bad byte at offset {bad_at} "
                f"of {size}); a plugin must write UTF-8 JSON.",
                plugin=plugin,
            )
        why = next((issue[3] for issue in issues if issue[0] == "json_invalid" and issue[3]), "")
        return InvalidJsonReply(
            f"{who} sent a reply to {on} that is not JSON ({why + ', ' if why else ''}{size}); "
            "a plugin must write only JSON-RPC replies to stdout, one per line, and its logs to stderr.",
            plugin=plugin,
        )
    try:
        obj = _from_json(line)
    except ValueError:  # pragma: no cover - validate_json accepted the JSON itself
        obj = None
    if not isinstance(obj, dict):
        return InvalidJsonReply(
            f"{who} sent a reply to {on} that is JSON but not an object (it is {kind_of(obj)}); "
            'a reply must be an object such as {"jsonrpc": "2.0", "id": ..., "result": ...}.',
            plugin=plugin,
        )
    if "jsonrpc" not in obj or obj["jsonrpc"] != "2.0":
        got = "it has none" if "jsonrpc" not in obj else f"it is {kind_of(obj['jsonrpc'])}"
        return BadJsonRpcVersion(
            f'{who} sent a reply to {on} whose "jsonrpc" is not "2.0" ({got}); '
            'every reply must carry "jsonrpc": "2.0".',
            plugin=plugin,
        )
    rid = obj.get("id")
    if "id" not in obj or isinstance(rid, bool) or not isinstance(rid, int) or not 0 <= rid <= MAX_REQUEST_ID:
        if "id" not in obj:
            got = "it has none"
        elif isinstance(rid, bool) or not isinstance(rid, int):
            got = f"it is {kind_of(rid)}"
        else:
            got = f"it is {int_text(rid)}, outside 0..2**64-1"
        return BadReplyId(
            f"{who} sent a reply to {on} without a valid id ({got}); a reply must echo the "
            "request's id, an unsigned 64-bit integer.",
            plugin=plugin,
        )
    if rid != request_id:
        return id_mismatch(rid, request_id, method, plugin)
    result, error = obj.get("result"), obj.get("error")
    if (result is None) == (error is None):
        return ambiguous(result is not None, request_id, method, plugin)
    if error is not None:
        if isinstance(error, dict):  # pragma: no cover - an object error always validates
            return plugin_error(error, method, request_id, plugin)
        return ReplyShapeError(
            f'{who} answered {on} with an "error" that is {kind_of(error)}, not an object; '
            'an error reply must be an object such as {"kind": "other", "detail": "..."}.',
            plugin=plugin,
        )
    shape = [issue for issue in issues if issue[1][:1] == ("result",)]
    hint = " (did it answer another method?)" if any(issue[0] == "missing" for issue in shape) else ""
    return ReplyShapeError(
        f"{who} answered {on} with a result of the wrong shape: "
        f"{describe_all(shape, 1) if shape else 'it does not match the method'}{hint}; "
        f"the result must be a {method.value} result as protocol 1.1 defines it.",
        plugin=plugin,
    )


def id_mismatch(got: int, expected: int, method: Method, plugin: Optional[str]) -> ReplyIdMismatch:
    return ReplyIdMismatch(
        f"{_who(plugin)} sent a reply with id {got} while request {expected} ({method.value!r}) was "
        "in flight; the plugin is out of step (a stale, repeated or invented reply) and must "
        "echo each request's id.",
        expected=expected,
        got=got,
        plugin=plugin,
    )


def ambiguous(both: bool, request_id: int, method: Method, plugin: Optional[str]) -> AmbiguousReply:
    what = 'both "result" and "error"' if both else 'neither "result" nor "error"'
    return AmbiguousReply(
        f"{_who(plugin)} sent a reply to {_on(method, request_id)} with {what}; a reply must "
        "carry exactly one of them.",
        plugin=plugin,
    )


def _text(error: Mapping[str, Any], name: str) -> Optional[str]:
    value = error.get(name)
    return value if isinstance(value, str) else None


def _quoted(text: Optional[str]) -> str:
    return f": {clip(text)!r}" if text else ""


def plugin_error(error: Mapping[str, Any], method: Method, request_id: int, plugin: Optional[str]) -> PluginError:
    """The PluginError for an error object. The plugin's own words are quoted, clipped."""
    who, on = _who(plugin), _on(method, request_id)
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    kind = error.get("kind")
    detail = _text(error, "detail")
    if kind == "unavailable":
        msg = f"{who} reports that its backend is unavailable{_quoted(detail)}; check the backend, then retry."
        return PluginError(msg, kind=kind, detail=detail, code=code, plugin=plugin)
    if kind == "needs-credential":
        msg = f"{who} needs a credential to answer {on}{_quoted(detail)}; do what it asks (for example, sign in), then retry."
        return PluginError(msg, kind=kind, detail=detail, code=code, plugin=plugin)
    if kind == "bad-reference":
        reference, reason = _text(error, "reference"), _text(error, "reason")
        ref = f" {clip(reference)!r}" if reference is not None else ""
        msg = f"{who} rejected the reference{ref} in {on}{_quoted(reason)}; check the reference."
        return PluginError(msg, kind=kind, detail=detail, reference=reference, reason=reason, code=code, plugin=plugin)
    if kind == "unsupported-capability":
        capability = _text(error, "capability")
        if capability is None:
            capability = method.value
        msg = (
            f"{who} does not support {clip(capability)!r} (it refused {on}); use a plugin that "
            "offers it, or do not ask this one."
        )
        return PluginUnsupportedCapability(msg, capability=capability, detail=detail, code=code, plugin=plugin)
    if kind == "other":
        detail = detail if detail is not None else _text(error, "message")
        msg = f"{who} failed {on}{_quoted(detail)}."
    elif isinstance(kind, str):
        detail = next((t for t in (detail, _text(error, "message"), _text(error, "reason")) if t is not None), None)
        msg = f"{who} failed {on} with an error of unknown kind {clip(kind, 60)!r}{_quoted(detail)}; it is treated as 'other'."
    elif "message" in error or "code" in error:
        detail = _text(error, "message")
        number = f" {code}" if code is not None else ""
        msg = f"{who} failed {on} with JSON-RPC error{number}{_quoted(detail)}."
    else:
        detail = "an error object without a 'kind' or a 'message'"
        msg = f"{who} failed {on} with {detail}; a plugin should send a documented error kind."
    return PluginError(msg, kind="other", detail=detail, code=code, plugin=plugin)


def diagnose_request(line: bytes, issues: List[Issue]) -> MalformedRequest:
    if not line.strip():
        return MalformedRequest("The request line is empty; the host must send one JSON object per line.")
    if any(issue[0] in ("json_invalid", "json_type") for issue in issues):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return MalformedRequest(f"The request line is not valid UTF-8 ({count(len(line), 'byte')}).")
        why = next((issue[3] for issue in issues if issue[0] == "json_invalid" and issue[3]), "")
        return MalformedRequest(f"The request line is not JSON ({why + ', ' if why else ''}{count(len(line), 'byte')}).")
    try:
        obj = _from_json(line)
    except ValueError:  # pragma: no cover - validate_json accepted the JSON itself
        obj = None
    rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, int) or not 0 <= rid <= MAX_REQUEST_ID:
        rid = None
    name = obj.get("method") if isinstance(obj, dict) else None
    return MalformedRequest(
        f"{'The request' if rid is None else f'Request {rid}'} is not a JSON-RPC 2.0 request: "
        f"{describe_all(issues, 0)}.",
        request_id=rid,
        method=name if isinstance(name, str) else None,
    )

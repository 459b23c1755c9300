"""A flow's steps performed with blocking calls: the sync client's driver helpers.

:class:`~plugin_client.client.PluginClient` performs the operations of a
:class:`~plugin_client._flow.Flow` with plain calls; these are the slow path
of its request (:func:`begin_blocking`), the stops, and :func:`run_blocking`,
which drives any of the flow's generators. A cold start without a generator is
the flow's own :meth:`~plugin_client._flow.Flow.spawn_blocking` (it writes the
``init`` line). Every function takes the flow and uses its public methods only.
"""

from __future__ import annotations

from typing import Any, Optional

from ._flow import Flow
from ._process import Exchange, PluginProcess, Steps, run_sync
from .protocol import Call

__all__ = ("begin_blocking", "ready_blocking", "run_blocking", "shutdown_blocking", "stop_blocking")


def begin_blocking(flow: Flow, call_type: Any, call: Optional[Call], reference: str) -> Exchange:
    """:meth:`Flow.begin`'s slow path with blocking calls: the gate (raises before
    any I/O), a process readied (spawned, reaped, replaced: :func:`ready_blocking`),
    the gate again (an ``init`` may just have told the capabilities), and the
    pending request."""
    flow.gate(call_type)
    proc = ready_blocking(flow)
    flow.gate(call_type)
    return flow.pending_request(proc, call_type, call, reference)


def ready_blocking(flow: Flow) -> PluginProcess:
    """:meth:`Flow.ready_steps` with blocking calls; a cold start (no process to
    reap or replace) is :meth:`Flow.spawn_blocking`."""
    flow.check_usable()
    if flow.slot.proc is None:
        return flow.spawn_blocking()
    proc: PluginProcess = run_blocking(flow, flow.live_steps())
    return proc


def run_blocking(flow: Flow, steps: Steps) -> Any:
    """Drive ``steps`` (one of ``flow``'s) with blocking calls: :func:`run_sync`,
    whose interruptions are :meth:`~plugin_client._flow_ends.FlowEnds.interrupted`'s to tidy up."""
    return run_sync(steps, flow.interrupted)


def stop_blocking(flow: Flow, proc: PluginProcess) -> None:
    """:meth:`~plugin_client._flow_ends.FlowEnds.stop_steps` with blocking calls
    (``PluginProcess.stop``, whose common case drives no generator). Books the
    end with the ``meta`` lock only, so a process taken out of the slot may be
    stopped without the request lock. An interrupted stop goes on in the
    background (:meth:`~plugin_client._flow_ends.FlowEnds.interrupted`)."""
    policy = flow.policy
    try:
        info = proc.stop(policy.exit_wait, policy.shutdown_grace)
    except BaseException:
        flow.interrupted(proc)
        raise
    flow.book_stopped(proc, info)


def shutdown_blocking(flow: Flow) -> None:
    """:meth:`~plugin_client._flow_ends.FlowEnds.shutdown_steps` with blocking calls: the sync client's shutdown."""
    proc = flow.take_process()
    if proc is not None:
        stop_blocking(flow, proc)

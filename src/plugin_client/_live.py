"""The live clients of this interpreter, and what ends their processes when nobody else does.

Both clients register here instead of each keeping a ``weakref.finalize`` and
a ``WeakSet``: registering costs one weak reference and one dict entry (a
client's construction is part of every cold start), unregistering one
``dict.pop`` (part of every shutdown).

* A client collected without ``shutdown()``: the callback of its weak
  reference stops its process, in the background where the slot says how
  (``Slot.stop_dropped``: the sweeper thread, for both clients), so the thread
  that dropped the client does not wait for a stubborn plugin; otherwise with
  a blocking graceful stop.
* At interpreter exit: every process still live is stopped, all at once, and
  the exit waits for them (:data:`EXIT_WAITS`).
* In a forked child: every client forgets its parent's process without
  signalling it (``Slot.forget_after_fork``).
* The idle sweeper (:mod:`plugin_client._sweeper`) walks the live clients
  whose slot has a ``reap_if_idle`` (:func:`live_slots`) instead of keeping a
  table of its own.

Deliberately not here: how a process is stopped (``PluginProcess.stop``) or
forgotten (the clients and :class:`plugin_client._flow.Flow`). The registry
holds the :class:`Slot`, never the client, so it keeps no client alive.
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

if TYPE_CHECKING:
    from ._process import PluginProcess

__all__ = ("Slot", "watch", "unwatch", "stop_slot", "live_slots", "EXIT_WAITS")

_log = logging.getLogger("plugin_client")


class Slot:
    """Holds a client's live process, and what stopping it needs, apart from the client."""

    __slots__ = ("proc", "exit_wait", "grace", "name", "ref", "reap_if_idle", "forget_after_fork", "stop_dropped", "__weakref__")

    def __init__(self, name: str, exit_wait: float, grace: float) -> None:
        self.proc: Optional[PluginProcess] = None
        self.name = name
        self.exit_wait = exit_wait
        self.grace = grace
        self.ref: Optional[weakref.ref[Any]] = None
        # Called with the client by the sweeper thread: reap its process if it has
        # been idle long enough; returns when to look again (None: nothing to
        # watch). None: the client is not reaped by the sweeper (asyncio clients
        # use a loop timer). Plain functions, not bound methods, like the one
        # below: the registry holds the client weakly.
        self.reap_if_idle: Optional[Callable[[Any, float], Optional[float]]] = None
        # Called with the client in a forked child: drop the parent's process
        # without signalling it.
        self.forget_after_fork: Optional[Callable[[Any], None]] = None
        # Stops the process of a collected client (or one left at exit), taken out
        # of this slot, without waiting for it (the sweeper thread).
        self.stop_dropped: Optional[Callable[[Slot, PluginProcess], None]] = None

    def stop_bound(self) -> float:
        """How long waiting for a graceful stop of this slot's process may take
        before it is given up: the stop's own bound, and a second to spare."""
        return self.exit_wait + self.grace + 1.0

    def _collected(self, _ref: Any) -> None:
        if _LIVE.pop(self, None) is not None:
            stop_slot(self)


# Insertion-ordered: the exit hook stops the newest first, as weakref.finalize did.
_LIVE: Dict[Slot, bool] = {}


def watch(client: Any, slot: Slot) -> None:
    """Stop ``slot``'s process if ``client`` is collected or the interpreter exits first;
    call ``slot.forget_after_fork(client)`` in a forked child."""
    slot.ref = weakref.ref(client, slot._collected)
    _LIVE[slot] = True


def live_slots() -> List[Slot]:
    """The slots of the live clients, oldest first (a snapshot)."""
    return list(_LIVE)


def unwatch(slot: Slot) -> None:
    """The client shut down by itself: nothing is left to do for it."""
    _LIVE.pop(slot, None)
    slot.ref = None  # a weak reference that is gone never calls back


def stop_slot(slot: Slot) -> None:
    """A graceful stop of the slot's process, if any: handed to ``slot.stop_dropped``
    if it has one, else blocking. Never raises."""
    proc, slot.proc = slot.proc, None
    if proc is not None:
        _log.debug("Plugin %r: client collected or interpreter exiting; shutting its process down", slot.name)
        try:
            if slot.stop_dropped is not None:
                try:
                    slot.stop_dropped(slot, proc)
                    return
                except RuntimeError:  # pragma: no cover - no thread to be had (it did nothing then)
                    pass
            proc.stop(slot.exit_wait, slot.grace)
        except Exception:  # pragma: no cover - a finalizer must never raise
            _log.exception("Plugin %r: error while shutting down from a finalizer", slot.name)


# Called at the end of the exit hook, to wait for the stops it handed over.
EXIT_WAITS: List[Callable[[], None]] = []


@atexit.register
def _at_exit() -> None:
    while _LIVE:
        slot = next(reversed(_LIVE))
        del _LIVE[slot]
        stop_slot(slot)
    for wait in EXIT_WAITS:
        wait()


def _after_fork_in_child() -> None:
    for slot in list(_LIVE):
        client = slot.ref() if slot.ref is not None else None
        if client is not None and slot.forget_after_fork is not None:
            slot.forget_after_fork(client)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

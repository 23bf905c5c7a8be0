"""How an event names its cause, so ``fleetlog why`` can walk back from any event to the
command that started it.

Why this exists: every handler records why it acted (DESIGN: "it records why it acted"), and
the chain is only walkable if every writer spells the cause the same way. An event's
``causation_id`` is one of:

* ``seq:<n>`` — the event at stream sequence ``n`` caused it (a controller reacting to a
  ``ScaledTo``, an agent recording a start after the binding, an eviction after a node's
  ``NodeNotReady``). The sequence, not the event id, because the log can fetch an event by its
  sequence directly: walking a chain costs one read per link.
* ``cmd:<key>`` — the command with that idempotency key (the root of a chain: who issued it is
  the event's actor, and the audit trail has the command itself).
* anything else — a cause outside the log, in words (``missed heartbeats …``): also a root.

``correlation_id`` is carried unchanged along a chain (the root command's key), so all events of
one user action can be found together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EVENT_PREFIX = "seq:"
COMMAND_PREFIX = "cmd:"


def caused_by_event(seq: int) -> str:
    return f"{EVENT_PREFIX}{seq}"


def caused_by_command(key: str) -> str:
    return f"{COMMAND_PREFIX}{key}"[:128]


@dataclass(frozen=True)
class CauseRef:
    """A parsed ``causation_id``."""

    kind: Literal["event", "command", "other", "none"]
    seq: int = 0
    command: str = ""
    text: str = ""


def parse_cause(text: str | None) -> CauseRef:
    if not text:
        return CauseRef("none")
    if text.startswith(EVENT_PREFIX) and text[len(EVENT_PREFIX) :].isdigit():
        return CauseRef("event", seq=int(text[len(EVENT_PREFIX) :]))
    if text.startswith(COMMAND_PREFIX):
        return CauseRef("command", command=text[len(COMMAND_PREFIX) :])
    return CauseRef("other", text=text)


__all__ = [
    "COMMAND_PREFIX",
    "EVENT_PREFIX",
    "CauseRef",
    "caused_by_command",
    "caused_by_event",
    "parse_cause",
]

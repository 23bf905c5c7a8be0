"""Poison events: the one seam every reader of a stream passes a stored message through.

Why this exists: a stream holds whatever was published on its subjects, and JetStream lets
anyone with publish rights on ``fleet.evt.>`` store garbage, a truncated envelope, an event type
this build does not know, a payload of a future schema version or one its fold cannot take.
The log forbids deletes, so such a message stays for ever; a reader that raises on it would
crash on every later start (a catch-up reads it again each time). So a message that cannot be
used is **quarantined** instead: skipped, counted, logged loudly once (with its stream
sequence and subject), and kept in the reader's :class:`Quarantine`, where the roles surface it
(the node agent as its node's ``EventsQuarantined`` condition) and ``fleetlog audit verify``
reports it (and fails, as it does for a break of the hash chain).

:func:`read_event` is the check for ``FLEET`` (decode, upcast, catalog, payload shape); every
read path of :class:`streams.eventstore.EventStore` (catch-up, live follow, one subject, one
sequence) goes through it, and a read model whose fold still raises hands the event to
:meth:`Quarantine.add` too (``projections/runtime.py``). Other streams' readers (the audit
trail) put their own unreadable records here through the same method.

Quarantined events are outside the hash chain: the writers chain to the last event they can
read, and :mod:`streams.integrity` lists quarantined events apart from the breaks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog

from core.api.events import UnknownSchemaVersion, payload_problem
from core.errors import ValidationFailed
from streams.envelope import Envelope, decode_envelope

log = structlog.get_logger(__name__)

UNDECODABLE = "undecodable"
"""Not an envelope: garbage, truncated, a missing or mistyped entry."""
UNKNOWN_VERSION = "unknown_schema_version"
"""A schema version this build cannot upcast (newer than it knows, or no upcaster)."""
UNKNOWN_TYPE = "unknown_event_type"
INVALID_PAYLOAD = "invalid_payload"
"""A known type whose payload lacks a field, or has one of the wrong type."""
FOLD_FAILED = "fold_failed"
"""The read model's fold raised on it (a shape the payload check could not see)."""
UNSEALED = "unsealed"
"""Not sealed by a fleetlog writer: its ``Fleet-Seal`` is missing or wrong (``streams/seal.py``)."""
UNREADABLE_RECORD = "unreadable_record"
"""A record of another stream (the audit trail) that cannot be read."""
REASONS = (UNDECODABLE, UNKNOWN_VERSION, UNKNOWN_TYPE, INVALID_PAYLOAD, FOLD_FAILED, UNSEALED)


class PoisonEvent(ValidationFailed):
    """A stored message no reader can use; ``reason`` is one of :data:`REASONS`."""

    code = "poison_event"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_event(data: bytes | bytearray | memoryview) -> Envelope:
    """The envelope of stored bytes, upcast and checked against the catalog, or PoisonEvent."""
    try:
        envelope = decode_envelope(data)
    except UnknownSchemaVersion as exc:
        raise PoisonEvent(UNKNOWN_VERSION, str(exc)) from exc
    except ValidationFailed as exc:
        raise PoisonEvent(UNDECODABLE, str(exc)) from exc
    problem = payload_problem(envelope.type, envelope.payload)
    if problem is not None:
        raise PoisonEvent(
            UNKNOWN_TYPE if problem.startswith("unknown event type") else INVALID_PAYLOAD,
            problem,
        )
    return envelope


def unsealed() -> PoisonEvent:
    """The refusal of a message without a writer's valid seal (``streams/seal.py``)."""
    return PoisonEvent(
        UNSEALED,
        "not sealed by a fleetlog writer (its Fleet-Seal is missing or wrong): published by "
        "someone without the cluster's seal key",
    )


@dataclass(frozen=True, slots=True)
class QuarantinedEvent:
    """One stored message set aside: where it is and why."""

    stream: str
    seq: int
    subject: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq} on {self.subject}: {self.reason}: {self.detail}"


QuarantineListener = Callable[[QuarantinedEvent], None]


class Quarantine:
    """The poison messages one reader (a process's event store) has met, by stream sequence.

    Each is logged once, however often catch-ups and follows read it again; ``listeners`` are
    called once per newly quarantined message (a role that surfaces it as a condition)."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._events: dict[int, QuarantinedEvent] = {}
        self.listeners: list[QuarantineListener] = []

    def add(self, *, seq: int, subject: str, reason: str, detail: str) -> QuarantinedEvent:
        known = self._events.get(seq)
        if known is not None:
            return known
        entry = self._events[seq] = QuarantinedEvent(self.stream, seq, subject, reason, detail)
        log.error(
            "event.quarantined",
            stream=self.stream,
            seq=seq,
            subject=subject,
            reason=reason,
            detail=detail,
            hint="skipped by every reader; `fleetlog audit verify` lists it",
        )
        for listener in list(self.listeners):
            listener(entry)
        return entry

    def poisoned(self, seq: int, subject: str, exc: PoisonEvent) -> QuarantinedEvent:
        return self.add(seq=seq, subject=subject, reason=exc.reason, detail=exc.message)

    def __contains__(self, seq: object) -> bool:
        return seq in self._events

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[QuarantinedEvent]:
        return iter(sorted(self._events.values(), key=lambda entry: entry.seq))

    def summary(self, *, limit: int = 5) -> str:
        """One line for a condition's message: how many, and the first few."""
        entries = list(self)
        shown = "; ".join(str(entry) for entry in entries[:limit])
        more = f"; and {len(entries) - limit} more" if len(entries) > limit else ""
        return f"{len(entries)} event(s) of {self.stream} skipped: {shown}{more}"

"""The audit trail of commands: one record per command the gateway answered, accepted or not.

Why this exists: the event log says what changed, but not what was asked and refused — a
rejected or denied command never touches an aggregate, so it leaves no event. Kubernetes'
audit log answers "who tried what, on what, from where, with what result"; this stream does
the same for fleetlog. Accepted commands are recorded too (with the sequences of the events
they wrote), so one place answers every audit question, including by verb, which events do not
carry.

``FLEET_AUDIT`` (file storage, kept as long as the log: no age limit, no deletes, no purges;
defined and set up with the other streams in :mod:`streams.definitions`) holds msgpack records
on ``fleet.audit.<outcome>.<kind>.<verb>.<actor>`` (outcome ``accepted``, ``rejected`` or
``denied``; kind, verb and actor as lower-case tokens, ``unknown`` when the command could not
be read that far), so a query by outcome, kind, verb or actor is a subject filter the server
applies.

The gateway hands records to :class:`AuditWriter`, which appends them in order from one task,
so answering a command never waits for its audit record; on shutdown the writer drains what
is queued. A crash between a command's events and its audit record loses that record, never
the events (the log stays the truth; ``fleetlog audit`` says so in its help). The writer
pipelines: a record is published as soon as it is queued, in order, on one connection (so it
is stored in that order), and acks are counted as they arrive; one record at a time, each a
request awaited before the next, cost a task, a timer and a round trip per command, and fell
behind whenever the round trip grew.

A record the stream did not take (no ack in time, "no responders" while a NATS server of the
cluster is down, a failed publish) is published again with a growing delay for up to
:data:`RETRY_FOR` seconds, under the same ``Nats-Msg-Id`` (the record's command, outcome and
time), so a retry whose first attempt was stored after all is dropped by the stream's duplicate
window instead of recorded twice. Only a record still refused after that is counted lost (and
logged loudly), as is one still unwritten when the writer stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import datetime

import msgpack
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.nuid import NUID

from streams.cancellation import checkpoint
from streams.definitions import AUDIT_PREFIX, AUDIT_STREAM
from streams.eventstore import EventStore
from streams.quarantine import UNREADABLE_RECORD

log = structlog.get_logger(__name__)

OUTCOMES = ("accepted", "rejected", "denied")
QUEUE_LIMIT = 10_000
WINDOW = 1024
"""The most records published and not yet acknowledged."""
ACK_TIMEOUT = 5.0
RETRY_FOR = 120.0
"""How long a record the stream did not take is retried (within the stream's duplicate
window, so a retry of a record stored after all is recognised)."""
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 5.0
_TOKEN = re.compile(r"[^a-z0-9_-]")


@functools.lru_cache(maxsize=4096)
def _token(text: str) -> str:
    # Cached: kinds, verbs and actors repeat from one command to the next.
    cleaned = _TOKEN.sub("_", text.lower())
    return cleaned or "unknown"


def audit_subject(outcome: str, kind: str, verb: str, actor: str) -> str:
    return f"{AUDIT_PREFIX}.{outcome}.{_token(kind)}.{_token(verb)}.{_token(actor)}"


def audit_filter(
    outcome: str | None, kind: str | None, verb: str | None, actor: str | None = None
) -> str:
    """The subject filter for a query (``*`` where a part is not asked for). Tokens are
    lossy (``user:alice`` -> ``user_alice``): the reader still compares the record's own
    fields."""
    parts = [
        outcome or "*",
        _token(kind) if kind else "*",
        _token(verb) if verb else "*",
        _token(actor) if actor else "*",
    ]
    return ".".join([AUDIT_PREFIX, *parts])


@dataclass
class AuditRecord:
    """One command as the gateway answered it."""

    time_ns: int
    outcome: str
    actor: str
    verb: str
    kind: str
    namespace: str = ""
    name: str = ""
    command_id: str = ""
    correlation_id: str = ""
    causation_id: str = ""
    source: str = ""
    code: str = ""
    message: str = ""
    error_field: str = ""
    events: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    admission: list[str] = field(default_factory=list)
    """What each admission stage did to the command (``mutated by LimitRanger: ...``,
    ``denied by PodSecurity: ...``), in the chain's order; stages that did nothing are not
    named."""
    annotations: dict[str, str] = field(default_factory=dict)
    """Kubernetes-style audit annotations (``pod-security.kubernetes.io/audit-violations``)."""
    signature: dict[str, str] = field(default_factory=dict)
    """What the command's sender signed and the signature (``signer``, ``subject``,
    ``digest`` of the payload, ``signed_at``, ``nonce``, ``signature``): anyone holding the
    signer's public key can check who asked (``core.access.signing.check_digest``)."""
    impersonator: str = ""
    """The verified caller when it acted as ``actor`` (``--as``): "impersonator as actor"."""
    authorization: list[str] = field(default_factory=list)
    """The rule (or privilege) that allowed or denied the command, per check."""
    stored_seq: int = 0
    """The audit stream's own sequence (set when read back)."""

    @property
    def subject(self) -> str:
        return audit_subject(self.outcome, self.kind, self.verb, self.actor)

    @property
    def msg_id(self) -> str:
        """What identifies this record to the stream's duplicate window across retries."""
        return f"audit:{self.command_id}:{self.outcome}:{self.time_ns}"

    def encode(self) -> bytes:
        # A shallow map (``asdict`` deep-copies: a measurable share of a command's cost).
        data = {name: getattr(self, name) for name in _ENCODED_FIELDS}
        return msgpack.packb(data, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes, stored_seq: int = 0) -> AuditRecord:
        """The record stored as ``data``; ValueError (or TypeError: a required field is
        missing) when it is not one."""
        fields = msgpack.unpackb(data, raw=False)
        if not isinstance(fields, dict):
            raise ValueError("an audit record is a map")
        known = {k: v for k, v in fields.items() if k in _FIELD_TYPES}
        for name, value in known.items():
            if not isinstance(value, _FIELD_TYPES[name]):
                raise ValueError(f"audit record field {name} is a {type(value).__name__}")
        return cls(**known, stored_seq=stored_seq)

    def object_ref(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return (
            f"{self.kind.lower() or 'unknown'}/{where}{self.name}"
            if self.name
            else (self.kind.lower() or "unknown")
        )


_ENCODED_FIELDS = tuple(name for name in AuditRecord.__dataclass_fields__ if name != "stored_seq")
_FIELD_TYPES: dict[str, type] = {
    name: {"int": int, "str": str}.get(
        str(AuditRecord.__dataclass_fields__[name].type),
        dict if str(AuditRecord.__dataclass_fields__[name].type).startswith("dict") else list,
    )
    for name in _ENCODED_FIELDS
}
"""What a stored record's fields must be (annotations are strings here: ``int``, ``str``, a
``dict`` or a list)."""


class AuditWriter:
    """Appends audit records in the order they were handed over, from one task, pipelined:
    each record is published as soon as it is queued (up to :data:`WINDOW` awaiting their
    acks), and acks are counted as they come."""

    def __init__(self, nc: Client, *, retry_for: float = RETRY_FOR) -> None:
        self._nc = nc
        self._retry_for = retry_for
        self._retries: dict[str, tuple[int, float, asyncio.TimerHandle | None]] = {}
        """msg id -> (attempts so far, when the first failed, the pending retry's timer)."""
        self._queue: asyncio.Queue[AuditRecord] = asyncio.Queue(QUEUE_LIMIT)
        self._inbox = f"_FLAUD.{NUID().next().decode()}"
        self._counter = itertools.count()
        self._in_flight: dict[str, tuple[AuditRecord, float]] = {}
        """Reply subject -> (record, when it was published), until its ack."""
        self._room = asyncio.Event()
        self._room.set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.written = 0
        self.failed = 0

    def offer(self, record: AuditRecord) -> bool:
        """Queue a record without waiting; False when the queue is full (then :meth:`record`).

        The gateway offers a command's record just before it publishes the answer: the writer
        then publishes the record before the connection flushes, so both leave in one write."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            return False
        return True

    async def record(self, record: AuditRecord) -> None:
        """Queue a record (waits only when the writer is ``QUEUE_LIMIT`` records behind)."""
        await self._queue.put(record)

    async def run(self) -> None:
        """Write until cancelled, then drain what is queued (for at most a few seconds)."""
        subscription = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        self._sweeper = asyncio.get_running_loop().call_later(ACK_TIMEOUT, self._sweep)
        taken: AuditRecord | None = None
        try:
            while True:
                checkpoint()
                taken = await self._queue.get()
                await self._room.wait()
                record, taken = taken, None
                await self._publish(record)
        finally:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._drain(taken), ACK_TIMEOUT)
            if self._sweeper is not None:
                self._sweeper.cancel()
            for record, _ in self._in_flight.values():
                self._lost(record, "no ack from the audit stream")
            self._in_flight.clear()
            for _, _, timer in self._retries.values():
                if timer is not None:
                    timer.cancel()
            if self._retries:
                log.error("audit.retries_abandoned", records=len(self._retries))
                self.failed += len(self._retries)
            self._retries.clear()
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _drain(self, taken: AuditRecord | None) -> None:
        """Publish ``taken`` (dequeued, not yet published when the writer was stopped) and what
        is queued, then wait for every ack."""
        if taken is not None:
            await self._room.wait()
            await self._publish(taken)
        while not self._queue.empty():
            await self._room.wait()
            await self._publish(self._queue.get_nowait())
        while self._in_flight:
            self._room.clear()
            await self._room.wait()

    async def _publish(self, record: AuditRecord) -> None:
        reply = f"{self._inbox}.{next(self._counter)}"
        # Registered before the publish: its ack may come while the publish flushes.
        self._in_flight[reply] = (record, asyncio.get_running_loop().time())
        if len(self._in_flight) >= WINDOW:
            self._room.clear()
        try:
            await self._nc.publish(
                record.subject, record.encode(), reply=reply, headers={"Nats-Msg-Id": record.msg_id}
            )
        except Exception as exc:  # the command was answered; its record is retried
            self._settle(reply, str(exc))

    async def _on_ack(self, msg: Msg) -> None:
        if msg.subject not in self._in_flight:
            return  # settled already (timed out)
        status = (msg.headers or {}).get("Status")
        if status:  # 503: no stream listens on the subject
            self._settle(msg.subject, f"no audit stream (status {status})")
        elif b'"error"' in msg.data:
            error = json.loads(msg.data).get("error") or {}
            self._settle(msg.subject, str(error.get("description") or error or "refused"))
        else:
            self._settle(msg.subject, "")

    def _settle(self, reply: str, error: str) -> None:
        entry = self._in_flight.pop(reply, None)
        if entry is None:
            return
        record = entry[0]
        if error:
            self._retry_later(record, error)
        else:
            self._retries.pop(record.msg_id, None)
            self.written += 1
        if len(self._in_flight) < WINDOW:
            self._room.set()

    def _sweep(self) -> None:
        """Give up on records whose ack is overdue (checked every :data:`ACK_TIMEOUT`)."""
        loop = asyncio.get_running_loop()
        overdue = loop.time() - ACK_TIMEOUT
        for reply in [r for r, (_, sent) in self._in_flight.items() if sent < overdue]:
            self._settle(reply, "no ack from the audit stream")
        self._sweeper = loop.call_later(ACK_TIMEOUT, self._sweep)

    def _retry_later(self, record: AuditRecord, error: str) -> None:
        """Publish ``record`` again after a growing delay, until :attr:`_retry_for` has passed
        since its first failure; then it is lost."""
        loop = asyncio.get_running_loop()
        attempts, first, _ = self._retries.get(record.msg_id, (0, loop.time(), None))
        if loop.time() - first >= self._retry_for:
            self._retries.pop(record.msg_id, None)
            self._lost(record, error)
            return
        if attempts == 0:
            log.warning("audit.write_retrying", error=error, object=record.object_ref())
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2**attempts)
        timer = loop.call_later(delay, self._requeue, record)
        self._retries[record.msg_id] = (attempts + 1, first, timer)

    def _requeue(self, record: AuditRecord) -> None:
        attempts, first, _ = self._retries.get(record.msg_id, (0, 0.0, None))
        self._retries[record.msg_id] = (attempts, first, None)
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._retries.pop(record.msg_id, None)
            self._lost(record, "the audit queue is full")

    def _lost(self, record: AuditRecord, error: str) -> None:
        # The command was answered; say loudly that its record is lost.
        self.failed += 1
        log.error(
            "audit.write_failed",
            error=error,
            actor=record.actor,
            verb=record.verb,
            object=record.object_ref(),
            outcome=record.outcome,
        )


async def read_audit(
    nc: Client,
    *,
    subject: str = f"{AUDIT_PREFIX}.>",
    since: datetime | None = None,
) -> list[AuditRecord]:
    """Every record on ``subject`` (from ``since``), oldest first, up to the stream's end as of
    the call: the event store's bounded walk, on this stream."""
    records: list[AuditRecord] = []
    store = EventStore(nc, stream=AUDIT_STREAM)

    def on_stored(
        seq: int, stored_subject: str, _stored_ns: int, data: bytes, _seal: bytes | None
    ) -> None:
        try:
            records.append(AuditRecord.decode(data, seq))
        except (ValueError, TypeError, AttributeError) as exc:
            # Anyone allowed to publish on the stream's subjects can store anything: skip it.
            store.quarantine.add(
                seq=seq, subject=stored_subject, reason=UNREADABLE_RECORD, detail=str(exc)
            )

    await store.replay_raw(on_stored, filter_subject=subject, from_time=since)
    return records

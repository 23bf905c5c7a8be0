"""Keeping the history index current, answering ``fleetlog history`` from it, and the client
side of that question (with the log itself as the fallback).

Why this exists: ``history``, ``describe``, ``why`` and a single object ``--at`` all need every
event of one object; :mod:`projections.history` explains why reading those from the log is slow
for long-lived objects. ``fleetlog up`` runs this service beside its cluster projection: it
fills the index from the projection's own stream of events (no second consumer of the log),
after first catching the index up with a bulk read of whatever it missed.

Requests are msgpack maps on ``fleet.qry.history`` (``subject``, ``after_seq``); answers carry
the stored rows (sequence, stored time, bytes) a page at a time. Like the cluster query service
the answer is read-your-writes: the service first learns where the log ends (one stream-info
round trip) and waits until it has indexed that far. A client that gets no answer (no
``up`` is running, or it lags) reads the log directly: slower, never different (and, behind
the NATS wall, only for admins: nobody else may read the streams).

Reading an object's history is reading the object: a signed request's signer must be allowed
by RBAC to ``get`` it (``projections.readaccess``), else it is refused with kube's Forbidden,
which the client reports instead of reading the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import TYPE_CHECKING, Any

import msgpack
import structlog
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from core.errors import FleetError, ValidationFailed
from streams.cancellation import checkpoint
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.quarantine import unsealed
from streams.querybus import request as query
from streams.serving import serve
from streams.subjects import QUERY_PREFIX, parse_event_subject

if TYPE_CHECKING:  # the CLI reads history through this module, without the read models
    from projections.cluster import ClusterModel
    from projections.history import HistoryIndex, StoredRow
    from projections.readaccess import ReadAccess, Reader
    from projections.runtime import Projection

log = structlog.get_logger(__name__)

HISTORY_QUERY_SUBJECT = f"{QUERY_PREFIX}.history"
HISTORY_QUEUE = "fleet-history"
PAGE_BYTES = 768 * 1024
"""Stored bytes per answer (a NATS message is at most 1 MiB by default)."""
CATCH_UP_BATCH = 20_000
FLUSH_ROWS = 2_000
FLUSH_EVERY_S = 0.05
WAIT_S = 3.0


class HistoryService:
    """Fills a :class:`HistoryIndex` from a followed projection and answers history queries."""

    def __init__(
        self,
        nc: Client,
        store: EventStore,
        index: HistoryIndex,
        projection: Projection[ClusterModel],
        *,
        read_access: ReadAccess | None = None,
    ) -> None:
        """``read_access``: who may read which object's history (None: unsigned requests
        read everything, signed ones are refused)."""
        from projections.readaccess import ReadAccess

        self._nc = nc
        self._store = store
        self._index = index
        self._projection = projection
        self._read = read_access or ReadAccess()
        self._pending: list[StoredRow] = []
        self._pending_last = 0
        self._caught_up = False

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Catch the index up to the projection, then keep it current and serve, until
        cancelled. A damaged index file is rebuilt from the log instead of stopping ``up``."""
        while True:
            try:
                await self._run(ready)
                return
            except* sqlite3.DatabaseError as group:
                error = str(group.exceptions[0])
                log.error("history_index.damaged", path=str(self._index.path), error=error)
                self._pending, self._caught_up = [], False
                self._index.rebuild()

    async def _run(self, ready: asyncio.Event | None) -> None:
        from projections.readaccess import read_answers

        info = await self._store.stream_info()
        self._index.bind(f"{self._store.stream}@{info['created']}", info["state"]["last_seq"])
        # Events the projection applies from now on are queued; the gap before them is read
        # from the log in bulk.
        start = self._projection.position
        self._pending_last = start
        self._projection.listeners.append(self._on_event)
        try:
            await self._catch_up(start)
            self._caught_up = True
            self._flush()
            log.info("history_index.ready", position=self._index.position)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._flush_periodically())
                tasks.create_task(
                    serve(
                        self._nc,
                        HISTORY_QUERY_SUBJECT,
                        queue=HISTORY_QUEUE,
                        handler=read_answers(
                            self._nc,
                            self._read,
                            self.answer,
                            failure_event="history_query.failed",
                        ),
                        ready=ready,
                    )
                )
        finally:
            with contextlib.suppress(ValueError):
                self._projection.listeners.remove(self._on_event)
            with contextlib.suppress(Exception):
                self._flush()

    def close(self) -> None:
        """Close the index file (after :meth:`run` has ended)."""
        self._index.close()

    async def _catch_up(self, until_seq: int) -> None:
        if self._index.position >= until_seq:
            return
        rows: list[StoredRow] = []

        seal_key = self._store.seal_key

        def on_stored(
            seq: int, subject: str, stored_ns: int, data: bytes, seal: bytes | None
        ) -> None:
            if seal_key is not None and not seal_key.holds(seq, subject, data, seal):
                # Never indexed: the index keeps no headers, so what it holds is what a
                # writer sealed.
                self._store.quarantine.poisoned(seq, subject, unsealed())
                return
            rows.append((seq, subject, stored_ns, data))
            if len(rows) >= CATCH_UP_BATCH:
                self._index.add(rows, seq)
                rows.clear()

        log.info("history_index.catching_up", after=self._index.position, until=until_seq)
        await self._store.replay_raw(
            on_stored, from_seq=self._index.position + 1, until_seq=until_seq
        )
        self._index.add(rows, until_seq)

    def _on_event(self, event: StoredEvent) -> None:
        self._pending.append((event.seq, event.subject, event.stored_ns, event.data))
        self._pending_last = event.seq
        if self._caught_up and len(self._pending) >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._caught_up:
            return
        rows, self._pending = self._pending, []
        self._index.add(rows, self._pending_last)

    async def _flush_periodically(self) -> None:
        while True:
            checkpoint()
            await asyncio.sleep(FLUSH_EVERY_S)
            if self._pending:
                self._flush()

    async def answer(self, request: dict[str, Any], reader: Reader = None) -> dict[str, Any]:
        """One page of an object's events, if ``reader`` may ``get`` the object (None: an
        unsigned request on an open server, which reads everything)."""
        from core.access.readauth import history_request

        subject = request.get("subject")
        if not is_event_subject(subject):
            raise FleetError(f"{subject!r} is not one object's event subject", code="invalid")
        kind, namespace, name = parse_event_subject(subject)
        await self._read.check(reader, history_request(kind=kind, namespace=namespace, name=name))
        after_seq = int(request.get("after_seq") or 0)
        # Read-your-writes as the cluster query service does it: everything in the log now
        # (one stream-info round trip; asking for the object's own last sequence instead can
        # cost a block load for a long-lived object).
        if not await self._projection.wait_for_log_end(WAIT_S) or not self._caught_up:
            raise FleetError("the history index lags the log; read the log", code="unavailable")
        if self._pending:
            self._flush()
        rows, size, more = [], 0, False
        for seq, _, stored_ns, data in self._index.read(subject, after_seq=after_seq):
            if rows and size + len(data) > PAGE_BYTES:
                more = True
                break
            rows.append([seq, stored_ns, data])
            size += len(data)
        else:
            more = len(rows) == 1000
        return {"ok": True, "events": rows, "more": more, "position": self._index.position}


def is_event_subject(subject: object) -> bool:
    """Whether ``subject`` names one object's events (literal, under ``fleet.evt``)."""
    if not isinstance(subject, str):
        return False
    try:
        kind, _, _ = parse_event_subject(subject)
    except ValidationFailed:
        return False
    return kind not in ("", "*", ">")


async def read_history(
    nc: Client,
    store: EventStore,
    subject: str,
    *,
    after_seq: int = 0,
    impersonate: str | None = None,
) -> list[StoredEvent]:
    """Every event of one object after ``after_seq``, oldest first: from the history index of
    a running ``fleetlog up`` when one answers, else from the log. A refusal (the caller may
    not read this object, or did not prove who it is) is raised, not read around.
    ``impersonate``: the name the request acts as (``--as``)."""
    events: list[StoredEvent] = []
    cursor = after_seq
    while True:
        fields: dict[str, Any] = {"subject": subject, "after_seq": cursor}
        if impersonate is not None:
            fields["actor"] = impersonate
        request = msgpack.packb(fields, use_bin_type=True)
        try:
            reply = await query(
                nc, HISTORY_QUERY_SUBJECT, request, timeout=10, impersonate=impersonate
            )
            answer = msgpack.unpackb(reply.data, raw=False)
        except (NoRespondersError, NatsTimeoutError, TimeoutError):
            answer = {"ok": False}
        if not answer.get("ok"):
            error = answer.get("error") or {}
            if error.get("code") in REFUSALS:
                raise FleetError(error.get("message", "refused"), code=error["code"])
            return events + await store.read_subject(subject, after_seq=cursor)
        for seq, stored_ns, data in answer["events"]:
            # The index keeps every stored message, poison included: the store's seam skips it.
            event = store.decoded(seq, subject, stored_ns, data)
            if event is not None:
                events.append(event)
        if not answer["more"] or not answer["events"]:
            return events
        cursor = answer["events"][-1][0]


REFUSALS = frozenset({"forbidden", "unauthorized"})
"""Answers that reading the log instead would not mend (or must not get around)."""

"""API Priority and Fairness at a door: classify a request, hold it in its flow's queue until a
seat is free, refuse it with "too many requests" when its queue is full or it waited too long.

Why this exists: ``core.access.fairness.Dispatcher`` decides (pure, time passed in); a door
needs the waiting itself: one future per queued request, resolved when ``finish`` hands its
seat on, and a bounded wait. Both doors (the gateway's commands, the HTTP door's reads and
writes) use this one class, each with its own seats, so a flood through either is throttled
the same way. The configuration (FlowSchemas, PriorityLevelConfigurations) is read from
callables the door supplies, again whenever its version moved; when it changes, new arrivals go
to a dispatcher built for it while requests already admitted finish on the one that admitted
them. :class:`StoredFlowControl` is that configuration as the log holds it (the stored objects
beneath kube's defaults), for either door.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.access.fairness import RETRY_AFTER_S, TOO_MANY, Classification, Dispatcher, Level
from core.access.fairness import classify as classify_request
from core.access.flowdefaults import configuration
from core.access.rbac import Request, User
from core.errors import FleetError
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.eventstore import EventStore
from streams.subjects import event_filter

Config = tuple[Sequence[Mapping[str, Any]], Mapping[str, Level]]
"""The schemas and levels in force (``core.access.flowdefaults.configuration``)."""

CATCH_ALL = Classification(schema="catch-all", level="catch-all", flow="catch-all/")
MEMO_SIZE = 4096
"""Classifications remembered per configuration (forgotten all at once when full)."""


class TooManyRequests(FleetError):
    """Refused by API Priority and Fairness: the caller's queue is full or it waited too
    long; nothing was done. ``retry_after_s``: when to try again (kube's ``Retry-After``)."""

    code = "too_many_requests"

    def __init__(
        self, classification: Classification, *, retry_after_s: int = RETRY_AFTER_S
    ) -> None:
        super().__init__(TOO_MANY)
        self.classification = classification
        self.retry_after_s = retry_after_s

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "retry_after": self.retry_after_s}


@dataclass(frozen=True, slots=True)
class Seat:
    """A request's place: held from admission until :meth:`FairGate.release`."""

    request_id: str
    classification: Classification
    dispatcher: Dispatcher


def built_in() -> Config:
    """Kube's built-in objects alone (a door that reads no stored ones)."""
    return configuration((), ())


class FairGate:
    """Seats for one door: ``total_seats`` shared among the priority levels by their shares."""

    def __init__(
        self,
        *,
        total_seats: int,
        read: Callable[[], Config] = built_in,
        version: Callable[[], object] = lambda: None,
        queue_wait_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total_seats = total_seats
        self.queue_wait_s = queue_wait_s
        self._read = read
        self._version_of = version
        self._clock = clock
        self._version: object = object()
        self._schemas: Sequence[Mapping[str, Any]] = ()
        self._dispatcher: Dispatcher | None = None
        self._memo: dict[tuple[object, ...], Classification] = {}
        """(user, the request but its object's name) -> classification, for the configuration
        in force: a FlowSchema never names an object, so the same caller doing the same kind
        of thing is classified once (the walk over the schemas was a tenth of the wall's
        cost per command)."""
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._ids = itertools.count()
        self.refused = 0

    def _current(self) -> Dispatcher:
        # The configuration is read again only when its version (the read model's position)
        # moved: classification runs on every request.
        version = self._version_of()
        if self._dispatcher is None or version != self._version:
            schemas, levels = self._read()
            self._version, self._schemas = version, schemas
            self._memo = {}
            self._dispatcher = Dispatcher(
                levels=levels, total_seats=self.total_seats, queue_wait_s=self.queue_wait_s
            )
        return self._dispatcher

    def classify(self, user: User, request: Request) -> Classification:
        self._current()
        return self._classify(user, request)

    def _classify(self, user: User, request: Request) -> Classification:
        key = (user, request.verb, request.api_group, request.resource, request.subresource,
               request.namespace, request.path)  # fmt: skip
        found = self._memo.get(key)
        if found is None:
            found = classify_request(self._schemas, user, request) or CATCH_ALL
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = found
        return found

    async def acquire(self, user: User, request: Request) -> Seat:
        """Wait for a seat (at once when one is free); :class:`TooManyRequests` when the
        flow's queues are full or the wait outlasts ``queue_wait_s``."""
        dispatcher = self._current()
        found = self._classify(user, request)
        request_id = str(next(self._ids))
        outcome = dispatcher.arrive(
            request_id, level=found.level, flow=found.flow, now=self._clock()
        )
        seat = Seat(request_id, found, dispatcher)
        if outcome == "dispatched":
            return seat
        if outcome == "rejected":
            self.refused += 1
            raise TooManyRequests(found)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_wait_s)
        except TimeoutError:
            if dispatcher.cancel(request_id):
                self.refused += 1
                raise TooManyRequests(found) from None
            # Dispatched in the same instant the wait ran out: the seat is ours.
        except asyncio.CancelledError:
            if not dispatcher.cancel(request_id) and waiter.done():
                self.release(seat)  # given a seat its caller no longer wants
            raise
        finally:
            self._waiters.pop(request_id, None)
        return seat

    def release(self, seat: Seat) -> None:
        """The request finished: its seat goes to the next queued request(s)."""
        for started in seat.dispatcher.finish(seat.request_id):
            # Every queued request has its waiter until it leaves the queue (registered in
            # the same step as its arrival, removed only after it left).
            waiter = self._waiters[started]
            if not waiter.done():
                waiter.set_result(None)

    def executing(self, level: str) -> int:
        return self._current().executing(level)

    def seats(self, level: str) -> int:
        """The seats ``level`` holds of ``total_seats``."""
        return self._current().seats(level)


class StoredFlowControl:
    """The cluster's FlowSchemas and PriorityLevelConfigurations, each kind folded by a
    projection of its own (a handful of objects, never the whole log), beneath kube's
    built-in ones: what a :class:`FairGate` reads (``read``, ``version``)."""

    def __init__(self, store: EventStore) -> None:
        self.schemas = Projection(ClusterModel(), store, filter_subject=event_filter("FlowSchema"))
        self.levels = Projection(
            ClusterModel(), store, filter_subject=event_filter("PriorityLevelConfiguration")
        )

    async def start(self) -> None:
        for projection in (self.schemas, self.levels):
            await projection.catch_up()
            await projection.follow()

    async def stop(self) -> None:
        for projection in (self.schemas, self.levels):
            await projection.stop()

    def read(self) -> Config:
        return configuration(
            [r.manifest for r in self.schemas.model.list("FlowSchema")],
            [r.manifest for r in self.levels.model.list("PriorityLevelConfiguration")],
        )

    def version(self) -> object:
        return self.schemas.position, self.levels.position

    def uids(self, classification: Classification) -> tuple[str, str]:
        """The UIDs of the schema and level that classified a request (kube's
        ``X-Kubernetes-PF-FlowSchema-UID`` and ``X-Kubernetes-PF-PriorityLevel-UID``): a stored
        object's own; a built-in one's derived from its name, the same on every server."""
        return (
            self._uid(self.schemas, "FlowSchema", classification.schema),
            self._uid(self.levels, "PriorityLevelConfiguration", classification.level),
        )

    @staticmethod
    def _uid(projection: Projection[ClusterModel], kind: str, name: str) -> str:
        record = projection.model.get(kind, "", name)
        uid = (record.manifest.get("metadata") or {}).get("uid") if record is not None else None
        return str(uid) if uid else str(uuid.uuid5(uuid.NAMESPACE_URL, f"fleetlog:{kind}/{name}"))

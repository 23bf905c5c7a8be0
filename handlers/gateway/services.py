"""The execute stage's Service path: a service is written together with the addresses and node
ports it takes or gives back, in one atomic append.

Why this exists: a ClusterIP or node port must belong to one service at most, however many
gateways create services at once. Each allocated value is a record named by the value
(``IPAddress`` ``100.64.3.7``, ``NodePortAllocation`` ``30080``); the service's create, update
or delete is appended atomically with the records it creates ("must be new", or after the
record's last event if it once existed) and deletes, so of two services racing for one value
exactly one append succeeds. The decisions are ``core.services.allocation``'s; this module only
loads what they need and turns a lost race into another attempt:

* :class:`AllocatedNames` (one read model per record kind, following ``fleet.evt.ipaddress.>``
  and ``fleet.evt.nodeportallocation.>``) says which values are taken, so a free one is picked
  without reading the log. It may trail the log; the append is what decides. A picked value
  found held when its record is loaded (``PickedValueTaken``) is avoided and the command is
  decided again; a value the user asked for is refused instead (``provided IP is already
  allocated``).
* :class:`ServicePath` plugs into ``Execute``: which records a command on a service touches
  (``dependents`` of ``streams.decide``, locked after the service) and the decision on them.
  Only Service commands take this path, so no other command pays for it.

Clients never write the records themselves (:func:`refuse_record_writes`): a record held by a
live service that a user deleted would let a second service take its address.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from core.api.commands import DeleteBody
from core.errors import FleetError, NotFound
from core.meta.aggregate import timestamp_from_ns
from core.services.allocation import (
    PickedValueTaken,
    ServicePlan,
    delete_service,
    plan_deletion,
    plan_service,
    seed_of,
    write_service,
)
from core.services.ranges import DEFAULT_RANGES, ServiceRanges
from handlers.gateway.context import CommandContext
from projections.runtime import Projection, digest_of
from streams.decide import Attempt
from streams.envelope import StoredEvent
from streams.eventstore import ConcurrencyConflict, EventStore
from streams.repository import Loaded
from streams.subjects import AggregateRef, event_filter

RECORD_KINDS = ("IPAddress", "NodePortAllocation")


async def refuse_record_writes(ctx: CommandContext) -> None:
    """Addresses and node ports are allocated with their service, never by a command of
    their own."""
    if ctx.kind in RECORD_KINDS:
        raise FleetError(
            f"{ctx.kind} objects are allocated and released with their service: create, "
            "change or delete the Service instead",
            code="forbidden",
        )


class AllocatedNames:
    """The names of the live records of one kind (the values taken), folded from its events."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"allocated-{kind.lower()}"
        self.names: set[str] = set()

    def apply(self, event: StoredEvent) -> None:
        e = event.envelope
        if e.kind != self.kind:
            return
        if e.type.endswith("Created"):
            self.names.add(e.name)
        elif e.type.endswith("Deleted"):
            self.names.discard(e.name)

    def snapshot(self) -> list[str]:
        return sorted(self.names)

    def restore(self, data: list[str]) -> None:
        self.names = set(data)

    def digest(self) -> str:
        return digest_of(self.snapshot())


class _Either:
    """Taken if the read model says so, or if this command found it taken."""

    __slots__ = ("_first", "_second")

    def __init__(self, first: Container[Any], second: Container[Any]) -> None:
        self._first, self._second = first, second

    def __contains__(self, value: object) -> bool:
        return value in self._first or value in self._second


class ServicePath:
    """How ``Execute`` decides a command on a service (see the module docstring)."""

    def __init__(self, store: EventStore, ranges: ServiceRanges = DEFAULT_RANGES) -> None:
        self.ranges = ranges
        self.addresses = Projection(
            AllocatedNames("IPAddress"), store, filter_subject=event_filter("IPAddress")
        )
        self.node_ports = Projection(
            AllocatedNames("NodePortAllocation"),
            store,
            filter_subject=event_filter("NodePortAllocation"),
        )

    async def start(self) -> None:
        for projection in (self.addresses, self.node_ports):
            await projection.catch_up()
            await projection.follow()

    async def stop(self) -> None:
        for projection in (self.addresses, self.node_ports):
            await projection.stop()

    def command(self, ctx: CommandContext, *, uid: str) -> ServiceCommand:
        """The state one command carries across its attempts."""
        return ServiceCommand(self, ctx, uid=uid)


class ServiceCommand:
    """One command on a service: the plan of each attempt, and the values found taken."""

    def __init__(self, path: ServicePath, ctx: CommandContext, *, uid: str) -> None:
        self._path = path
        self._ctx = ctx
        self._uid = uid
        self._avoid_ips: set[str] = set()
        self._avoid_ports: set[int] = set()
        self._plans: dict[int, ServicePlan | FleetError | None] = {}

    def dependents(self, attempt: Attempt) -> list[AggregateRef]:
        """The records this attempt's plan touches (a refusal is kept for the decision)."""
        try:
            plan = self._plan(attempt)
        except FleetError as refused:
            self._plans[attempt.number] = refused
            return []
        self._plans[attempt.number] = plan
        return self.dependents_of(plan)

    def _plan(self, attempt: Attempt) -> ServicePlan | None:
        ctx = self._ctx
        assert ctx.ref is not None
        current = attempt[ctx.ref].aggregate
        live = current is not None and current.exists
        if ctx.verb == "delete":
            return plan_deletion(current.manifest) if live and current is not None else None
        if ctx.verb == "create" and live:
            return None  # refused as AlreadyExists by the decision
        assert ctx.manifest is not None
        path = self._path
        return plan_service(
            current.manifest if live and current is not None else None,
            ctx.manifest,
            ranges=path.ranges,
            taken_ips=_Either(path.addresses.model.names, self._avoid_ips),
            taken_ports=_Either(_PortNames(path.node_ports.model.names), self._avoid_ports),
            seed=seed_of(self._uid),
        )

    def decide(self, attempt: Attempt, loaded: Loaded) -> list[Loaded]:
        """Record the command's events on the service (``loaded``) and its records; return the
        records' ``Loaded`` in append order."""
        ctx = self._ctx
        assert ctx.command is not None and ctx.ref is not None
        planned = self._plans.get(attempt.number)
        if isinstance(planned, FleetError):
            raise planned
        at = timestamp_from_ns(ctx.received_ns)
        current = loaded.aggregate
        body = ctx.command.body
        records = [attempt[ref] for ref in self.dependents_of(planned)]
        addresses = {r.ref.name: r.aggregate for r in records if r.ref.kind == "IPAddress"}
        node_ports = {
            int(r.ref.name): r.aggregate for r in records if r.ref.kind == "NodePortAllocation"
        }
        if isinstance(body, DeleteBody):
            if current is None or planned is None:
                raise NotFound(f"{ctx.ref} not found")
            delete_service(
                current, plan=planned, addresses=addresses, node_ports=node_ports,
                reason=body.reason, propagation_policy=body.propagationPolicy, at=at,
            )  # fmt: skip
            return records
        if planned is None:  # a create of a live service: refused by Service.create
            planned = ServicePlan(manifest=ctx.manifest)
        try:
            written = write_service(
                current, agg_id=ctx.ref.id, plan=planned, uid=self._uid,
                replace=ctx.verb == "apply", addresses=addresses, node_ports=node_ports, at=at,
            )  # fmt: skip
        except PickedValueTaken as taken:
            # The read model trailed the log: decide again (on fresh state) without it.
            if taken.ip is not None:
                self._avoid_ips.add(taken.ip)
            if taken.port is not None:
                self._avoid_ports.add(taken.port)
            raise ConcurrencyConflict(ctx.ref.subject, loaded.last_seq, str(taken)) from taken
        loaded.aggregate = written.service
        for record in records:
            # A record that never existed is a new aggregate: it replaces the empty one loaded.
            record.aggregate = written.records.get(record.ref.id, record.aggregate)
        return records

    @staticmethod
    def dependents_of(plan: ServicePlan | None) -> list[AggregateRef]:
        if plan is None:
            return []
        return [
            *(AggregateRef("IPAddress", "", ip) for ip in plan.ips),
            *(AggregateRef("NodePortAllocation", "", str(port)) for port in plan.ports),
        ]


class _PortNames:
    """The taken node ports as numbers, over the read model's names."""

    __slots__ = ("_names",)

    def __init__(self, names: Container[str]) -> None:
        self._names = names

    def __contains__(self, port: object) -> bool:
        return str(port) in self._names

"""The node lifecycle controller: turns missed heartbeats into Ready=Unknown and taints.

A singleton (leader-elected through ``fleet_leaders``, so any number may run and one acts).
Every monitor period the leader compares each node's latest heartbeat (``streams.leases``)
with the nodes of the cluster read model, asks ``core.nodes.lifecycle.assess`` which Ready
transitions are due, and records each on the node's aggregate: ``NodeNotReady`` with the
``node.kubernetes.io/unreachable`` NoSchedule + NoExecute taints, or ``NodeReady`` without them.
Each event carries the heartbeat and grace it was decided on, so ``why`` never needs the lease
bucket. Evicting the pods that do not tolerate the NoExecute taint is the taint-eviction
controller's work (``handlers.taint_eviction``), which acts under this controller's lease.

It runs on the shared controller loop (``handlers.controller``) with a single key, the whole
fleet (:data:`EVERY_NODE`): heartbeats live in a KV bucket, not in the log, so no event makes
one node due; the pass asks the loop to run it again one period later. The loop holds the
lease, retries a pass that failed, and gives the lease up on the way out.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.aio.client import Client

from core.errors import FleetError
from core.meta.aggregate import timestamp_from_ns
from core.meta.timestamps import format_stamp
from core.nodes.aggregate import Node
from core.nodes.lifecycle import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_MONITOR_PERIOD_SECONDS,
    DEFAULT_STARTUP_GRACE_SECONDS,
    NodeHealth,
    Transition,
    assess,
)
from core.nodes.status import ready_status
from handlers.controller import ControllerLoop, Leadership
from projections.cluster import ClusterModel
from projections.ownership import Key
from projections.runtime import Projection
from streams.decide import Append, Attempt, decide_and_append
from streams.eventstore import ConcurrencyConflict
from streams.leases import LeaderLease, NodeLeases
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef

log = structlog.get_logger(__name__)

ROLE = "node-lifecycle-controller"
ACTOR = f"system:{ROLE}"
EVERY_NODE: Key = ("", "every-node")
"""The loop's one key: a monitor pass over every node."""


def heartbeat_cause(transition: Transition) -> str:
    """The cause of a Ready change, in words (it lies outside the log: heartbeats live in a KV
    bucket): ``missed heartbeats: last at …, grace 40s`` or ``heartbeat at …``."""
    beat = transition.last_heartbeat_ns
    when = format_stamp(beat) if beat else None
    if transition.status == "True":
        return f"heartbeat at {when}" if when else "heartbeat"
    grace = f"grace {transition.grace_seconds:g}s"
    return f"missed heartbeats: last at {when}, {grace}" if when else f"no heartbeat, {grace}"


class NodeLifecycleController:
    def __init__(
        self,
        nc: Client,
        repository: AggregateRepository,
        projection: Projection[ClusterModel],
        *,
        leases: NodeLeases,
        leader: Leadership,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        startup_grace_seconds: float = DEFAULT_STARTUP_GRACE_SECONDS,
        period_seconds: float = DEFAULT_MONITOR_PERIOD_SECONDS,
    ) -> None:
        self._nc = nc
        self._repository = repository
        self._projection = projection
        self._leases = leases
        self.grace_seconds = grace_seconds
        self.startup_grace_seconds = startup_grace_seconds
        self.loop: ControllerLoop[Key] = ControllerLoop(
            role=ROLE,
            projection=projection,
            leader=leader,
            reconcile=self.reconcile,
            keys_of=lambda event: (),
            all_keys=lambda: (EVERY_NODE,),
            max_in_flight=1,
            period_seconds=period_seconds,
        )

    @property
    def period_seconds(self) -> float:
        return self.loop.period_seconds

    @classmethod
    async def create(
        cls,
        nc: Client,
        repository: AggregateRepository,
        projection: Projection[ClusterModel],
        **options: float,
    ) -> NodeLifecycleController:
        leases = await NodeLeases.open(nc)
        leader = await LeaderLease.open(nc, ROLE)
        return cls(nc, repository, projection, leases=leases, leader=leader, **options)

    @property
    def leader(self) -> Leadership:
        """The lease this controller holds and renews; roles that must act only where it leads
        (the taint-eviction controller) check it."""
        return self.loop.leader

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Monitor until cancelled; leadership is given up on the way out."""
        await self._leases.follow()
        try:
            await self.loop.run(ready)
        finally:
            await self._leases.stop()

    async def reconcile(self, key: Key) -> int | None:
        """One monitor pass; the next is due one period later."""
        now_ns = time.time_ns()
        await self.monitor_once(now_ns)
        return now_ns + int(self.period_seconds * 1e9)

    def health(self) -> list[NodeHealth]:
        """Every node in the read model with its Ready status and latest heartbeat."""
        renewed = self._leases.renewed_ns
        return [
            NodeHealth(
                name=r.name,
                ready=ready_status(r.manifest),
                created_ns=r.created_ns,
                last_heartbeat_ns=renewed.get(r.name),
            )
            for r in self._projection.model.list("Node")
        ]

    async def monitor_once(self, now_ns: int) -> list[Transition]:
        """One monitor pass: record every due transition; return them."""
        transitions = assess(
            self.health(),
            now_ns=now_ns,
            grace_seconds=self.grace_seconds,
            startup_grace_seconds=self.startup_grace_seconds,
        )
        for transition in transitions:
            try:
                await self._record(transition, now_ns)
            except (FleetError, ConcurrencyConflict) as exc:
                # The node changed (or vanished) meanwhile: the next pass decides again.
                log.info("node_lifecycle.skipped", node=transition.name, error=str(exc))
        return transitions

    async def _record(self, transition: Transition, now_ns: int) -> None:
        ref = AggregateRef("Node", "", transition.name)
        token = f"{ROLE}.{transition.name}.{transition.status}.{now_ns}"
        cause = heartbeat_cause(transition)

        async def decide(attempt: Attempt) -> Append | None:
            loaded = attempt[ref]
            node = loaded.aggregate
            if not isinstance(node, Node) or not node.exists:
                return None
            node.set_ready(
                status=transition.status,
                reason=transition.reason,
                message=transition.message,
                last_heartbeat_ns=transition.last_heartbeat_ns,
                grace_seconds=transition.grace_seconds,
                at=timestamp_from_ns(now_ns),
            )
            return Append(
                changes=[loaded],
                provenance=Provenance(
                    actor=ACTOR,
                    correlation_id=token,
                    causation_id=cause,
                    token=token,
                    now_ns=now_ns,
                ),
            )

        # Once, on the log: a node that changed meanwhile is decided again at the next pass.
        decided = await decide_and_append(
            self._repository, [ref], decide, attempts=1, start_fresh=True
        )
        written = decided.written
        if written:
            log.info(
                "node_lifecycle.transition",
                node=transition.name,
                ready=transition.status,
                reason=transition.reason,
            )

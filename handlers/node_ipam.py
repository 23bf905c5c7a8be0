"""The node IPAM controller: every node gets its own range of the cluster CIDR for its pods.

Why this exists: a node agent gives each of its pods an address from its node's range
(``spec.podCIDR``), so two nodes must never share one. This is Kubernetes' node IPAM
controller with its ``RangeAllocator``, leader-elected as ``node-ipam-controller`` on the
shared controller loop (``handlers.controller``), with one difference that makes uniqueness
hold even while two leaders overlap during a hand-over: a range is an object of its own
(``PodCIDR``, named after the range), created "must be new" in the same atomic append as the
node's ``NodePodCIDRAssigned`` (``core.network.decisions``, through ``streams.decide``). Of
two controllers picking one range for two nodes, one append fails and that controller picks
again.

What it does, per node (keys ``("Node", name)``):

* a node without a range gets the next free one (round robin, so a range just released is not
  handed out again at once); the choice comes from the ranges in the read model plus the ones
  this process is assigning right now, so parallel reconciles rarely collide;
* a range the node's manifest states is honoured if it is one of the cluster's node ranges and
  free, and refused otherwise with ``NodePodCIDRRefused`` (``NetworkUnavailable=True``, reason
  ``CIDRNotAvailable``, the message saying why) — so is any node when the cluster CIDR is
  full; those are looked at again when a range is released;
* a node that holds a range whose object is gone (deleted by hand) gets the object back.

And per range (keys ``("PodCIDR", name)``): a range whose node is gone (deleted, or deleted
and created again under the same name: a new uid) is released (``PodCIDRDeleted``). A range
object without a node is a reservation, left alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client

from core.errors import AlreadyExists, FleetError, InvalidTransition
from core.meta.aggregate import timestamp_from_ns
from core.network.aggregate import PodCIDR
from core.network.decisions import (
    CIDRNotAvailable,
    assign_pod_cidr,
    choose_pod_cidr,
    release_pod_cidr,
    taken_ranges,
)
from core.network.ranges import ClusterCIDR, cidr_object_name, parse_cidr
from core.nodes.aggregate import Node
from core.nodes.status import assigned_pod_cidr, stated_pod_cidr
from handlers.controller import ControllerLoop, Leadership, LoopOptions
from projections.cluster import ClusterModel
from projections.ownership import Key
from projections.runtime import Projection
from streams.decide import Append, Attempt, decide_and_append
from streams.envelope import StoredEvent
from streams.eventstore import ConcurrencyConflict
from streams.leases import LeaderLease
from streams.repository import AggregateRepository, uuid5_text
from streams.subjects import AggregateRef

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = structlog.get_logger(__name__)

ROLE = "node-ipam-controller"
ACTOR = f"system:{ROLE}"
CANDIDATES = 8
"""Ranges tried for one node before the reconcile is retried later (each lost to a racer)."""
UID_NAMESPACE = uuid.UUID("6a1f0d7e-54a3-4c8e-9d0b-8f2c61e3b9a4")


@dataclass(frozen=True, slots=True)
class _Held:
    """A range object as the read model shows it."""

    cidr: str
    node: str | None
    node_uid: str | None

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> _Held | None:
        spec = manifest.get("spec", {})
        cidr = spec.get("cidr")
        if not cidr:
            return None
        return cls(str(cidr), spec.get("nodeName"), spec.get("nodeUID"))


class _PickAgain(Exception):
    """The range chosen from the read model is held after all (the read model trailed the log)."""


class NodeIPAMController:
    def __init__(
        self,
        repository: AggregateRepository,
        projection: Projection[ClusterModel],
        leader: Leadership,
        *,
        cluster: ClusterCIDR,
        **options: Unpack[LoopOptions],
    ) -> None:
        self._repository = repository
        self._projection = projection
        self.cluster = cluster
        self._held: dict[str, _Held] = {}
        """PodCIDR object name -> its range and node: what the read model holds."""
        self._by_node: dict[str, set[str]] = {}
        """Node name -> the PodCIDR objects naming it."""
        self._assigning: set[int] = set()
        """Node ranges this process is assigning right now (not yet in the read model)."""
        self._waiting: set[str] = set()
        """Nodes refused a range because it was held (by another node, or the cluster CIDR
        was full): looked at again when a range is released."""
        self._last = -1
        self.assigned = 0
        self.released = 0
        self.refused = 0
        self.collisions = 0
        """Ranges chosen that another writer took first (then another is chosen)."""
        self.loop: ControllerLoop[Key] = ControllerLoop(
            role=ROLE,
            projection=projection,
            leader=leader,
            reconcile=self.reconcile,
            keys_of=self._keys_of,
            all_keys=self._all_keys,
            kind="Node",
            actor=ACTOR,
            **options,
        )

    @classmethod
    async def create(
        cls,
        nc: Client,
        repository: AggregateRepository,
        projection: Projection[ClusterModel],
        *,
        cluster: ClusterCIDR,
        **options: Unpack[LoopOptions],
    ) -> NodeIPAMController:
        leader = await LeaderLease.open(nc, ROLE)
        return cls(repository, projection, leader, cluster=cluster, **options)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        await self.loop.run(ready)

    # -- what is due -------------------------------------------------------------------------

    def _index(self, name: str, held: _Held | None) -> None:
        old = self._held.pop(name, None)
        if old is not None and old.node is not None:
            names = self._by_node.get(old.node, set())
            names.discard(name)
            if not names:
                self._by_node.pop(old.node, None)
        if held is not None:
            self._held[name] = held
            if held.node is not None:
                self._by_node.setdefault(held.node, set()).add(name)

    def _all_keys(self) -> Iterable[Key]:
        """A new leader (its read model caught up) rebuilds its index of ranges and looks at
        every node and every range."""
        self._held.clear()
        self._by_node.clear()
        for record in self._projection.model.list("PodCIDR"):
            self._index(record.name, _Held.of(record.manifest))
        keys: list[Key] = [("Node", r.name) for r in self._projection.model.list("Node")]
        keys += [("PodCIDR", name) for name in self._held]
        return keys

    def _keys_of(self, event: StoredEvent) -> Iterable[Key]:
        e = event.envelope
        if e.kind == "PodCIDR":
            record = self._projection.model.get("PodCIDR", "", e.name)
            if record is None:
                self._index(e.name, None)
                # A range came free: the nodes refused for want of one may get it.
                waiting, self._waiting = self._waiting, set()
                return [("Node", name) for name in sorted(waiting)]
            self._index(e.name, _Held.of(record.manifest))
            return [] if e.actor == ACTOR else [("PodCIDR", e.name)]
        if e.kind != "Node":
            return []
        if e.type == "NodeDeleted":
            self._waiting.discard(e.name)
            return [("PodCIDR", name) for name in sorted(self._by_node.get(e.name, ()))]
        if e.type in ("NodeCreated", "NodeUpdated"):
            return [("Node", e.name)]
        return []

    # -- reconciling -------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> int | None:
        kind, name = key
        if kind == "PodCIDR":
            await self._release_if_orphaned(name)
        else:
            await self._assign(name)
        return None

    def _taken(self) -> set[int]:
        held = [held.cidr for held in self._held.values()]
        return taken_ranges(self.cluster, held) | self._assigning

    async def _assign(self, name: str) -> None:
        record = self._projection.model.get("Node", "", name)
        tried: set[int] = set()
        for _ in range(CANDIDATES):
            if record is None:
                return
            assigned = assigned_pod_cidr(record.manifest)
            if assigned is not None:
                held = self._held.get(cidr_object_name(parse_cidr(assigned)))
                if held is not None and held.node == name:
                    return  # the common case: nothing to do
                cidr = parse_cidr(assigned)  # its object is missing: make it again
            else:
                stated = stated_pod_cidr(record.manifest)
                try:
                    cidr = choose_pod_cidr(
                        stated, cluster=self.cluster, taken=self._taken() | tried,
                        after=self._last,
                    )  # fmt: skip
                except CIDRNotAvailable as exc:
                    if stated is None:
                        self._waiting.add(name)
                    await self._refuse(name, exc.message)
                    return
            index = self._index_in_cluster(cidr)
            try:
                if await self._take(name, cidr, index):
                    return
            except _PickAgain:
                self.collisions += 1
                if index is not None:
                    tried.add(index)
            except ConcurrencyConflict:
                self.collisions += 1
                await self._projection.wait_for_log_end()
            record = self._projection.model.get("Node", "", name)
        raise RuntimeError(f"no node range could be taken for node {name} in {CANDIDATES} tries")

    def _index_in_cluster(self, cidr: IPv4Network) -> int | None:
        try:
            return self.cluster.index_of(cidr)
        except FleetError:
            return None  # a range the node held before the cluster CIDR changed

    async def _take(self, name: str, cidr: IPv4Network, index: int | None) -> bool:
        """Append the node's range and the range's object, both or neither; True when done
        (written, or nothing left to do), False to look again."""
        node_ref = AggregateRef("Node", "", name)
        block_ref = AggregateRef("PodCIDR", "", cidr_object_name(cidr))
        outcome: list[str] = []

        async def decide(attempt: Attempt) -> Append | None:
            outcome.clear()
            loaded, block_loaded = attempt[node_ref], attempt[block_ref]
            node, block = loaded.aggregate, block_loaded.aggregate
            if not isinstance(node, Node) or not node.exists:
                return None
            held = node.pod_cidr
            if held is not None and held != cidr.with_prefixlen:
                return None  # it got another meanwhile: the read model was behind
            stated = node.stated_pod_cidr
            if held is None and stated is not None and stated != cidr.with_prefixlen:
                raise _PickAgain(f"node {name} now states {stated}")
            seen = node.version
            now = time.time_ns()
            at = timestamp_from_ns(now)
            token = f"{ROLE}.{node.uid}.{seen}.{cidr_object_name(cidr)}"
            changes = [loaded, block_loaded]
            try:
                block_loaded.aggregate = assign_pod_cidr(
                    node, block if isinstance(block, PodCIDR) else None, cidr=cidr,
                    cluster=self.cluster, uid=uuid5_text(UID_NAMESPACE, token), at=at,
                )  # fmt: skip
                outcome.append(node.uid)
            except AlreadyExists as exc:
                if held is not None:
                    # Two nodes claim one range: only hand edits of the log get here.
                    log.error("node_ipam.range_claimed_twice", node=name, error=exc.message)
                    return None
                if stated is None:
                    raise _PickAgain(exc.message) from None
                node.refuse_pod_cidr(pod_cidr=stated, message=exc.message, at=at)
                self._waiting.add(name)
                changes = [loaded]
                outcome.append("refused")
            cause = self.loop.cause(("Node", name), loaded.last_seq)
            return Append(
                changes=changes,
                provenance=cause.provenance(actor=ACTOR, token=token, now_ns=now),
            )

        if index is not None:
            self._assigning.add(index)
        try:
            decided = await decide_and_append(
                self._repository, [block_ref, node_ref], decide, attempts=1, start_fresh=True
            )
        finally:
            if index is not None:
                self._assigning.discard(index)
        written = decided.written
        if written:
            await self._projection.wait_for(max(seq for _, seq in written))
        if written and not written.replayed:
            # (Replayed: another leader decided the very same on the very same state.)
            if outcome and outcome[0] != "refused":
                self.assigned += 1
                if index is not None:
                    self._last = index
                self._index(block_ref.name, _Held(cidr.with_prefixlen, name, outcome[0]))
                log.info("node_ipam.assigned", node=name, pod_cidr=cidr.with_prefixlen)
            else:
                self.refused += 1
                log.info("node_ipam.refused", node=name, pod_cidr=cidr.with_prefixlen)
        return True

    async def _refuse(self, name: str, message: str) -> None:
        node_ref = AggregateRef("Node", "", name)

        async def decide(attempt: Attempt) -> Append | None:
            loaded = attempt[node_ref]
            node = loaded.aggregate
            if not isinstance(node, Node) or not node.exists or node.pod_cidr is not None:
                return None
            seen = node.version
            now = time.time_ns()
            node.refuse_pod_cidr(
                pod_cidr=node.stated_pod_cidr, message=message, at=timestamp_from_ns(now)
            )
            token = f"{ROLE}.{node.uid}.{seen}.refused"
            cause = self.loop.cause(("Node", name), loaded.last_seq)
            return Append(
                changes=[loaded],
                provenance=cause.provenance(actor=ACTOR, token=token, now_ns=now),
            )

        decided = await decide_and_append(
            self._repository, [node_ref], decide, attempts=3, start_fresh=True
        )
        if decided.written:
            self.refused += 1
            log.info("node_ipam.refused", node=name, message=message)
            await self._projection.wait_for(max(seq for _, seq in decided.written))

    async def _release_if_orphaned(self, name: str) -> None:
        held = self._held.get(name)
        if held is None or held.node is None:
            return  # gone already, or a reservation
        node_name = held.node
        record = self._projection.model.get("Node", "", node_name)
        if record is not None and held.node_uid in (None, record.uid):
            return  # still its node's
        block_ref = AggregateRef("PodCIDR", "", name)
        node_ref = AggregateRef("Node", "", node_name)

        async def decide(attempt: Attempt) -> Append | None:
            block_loaded = attempt[block_ref]
            block = block_loaded.aggregate
            if not isinstance(block, PodCIDR) or not block.exists:
                return None
            holder = attempt[node_ref].aggregate
            seen = block.version
            now = time.time_ns()
            try:
                release_pod_cidr(
                    block, holder if isinstance(holder, Node) else None, at=timestamp_from_ns(now)
                )
            except InvalidTransition:
                return None  # still held (the read model was behind), or a reservation
            token = f"{ROLE}.{block.uid}.{seen}.released"
            cause = self.loop.cause(("PodCIDR", name), block_loaded.last_seq)
            return Append(
                changes=[block_loaded],
                provenance=cause.provenance(actor=ACTOR, token=token, now_ns=now),
            )

        decided = await decide_and_append(
            self._repository, [block_ref, node_ref], decide, attempts=3, start_fresh=True
        )
        if decided.written:
            self.released += 1
            log.info("node_ipam.released", pod_cidr=held.cidr, node=node_name)
            await self._projection.wait_for(max(seq for _, seq in decided.written))

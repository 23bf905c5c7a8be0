"""The node IPAM controller: every node gets its own range of the cluster CIDR for its pods.

Why this exists: a node agent gives each of its pods an address from its node's range
(``spec.podCIDR``), so two nodes must never share one. This is Kubernetes' node IPAM
controller with its ``RangeAllocator``, leader-elected as ``node-ipam-controller`` on the
shared controller loop (``handlers.controller``), with one difference that makes uniqueness
hold even while two leaders overlap during a hand-over: a range is an object of its own
(``PodCIDR``, named after the range), created "must be new" in the same atomic append as the
node's ``NodePodCIDRAssigned`` (``core.network.decisions``, through ``streams.decide``). Of
two controllers picking one range for two nodes, one append fails and that controller picks
again. Many nodes' claims share one such append (:class:`_Claims`), each keeping its own
expectations, so a cluster of thousands of nodes gets its ranges in seconds.

What it does, per node (keys ``("Node", name)``):

* a node without a range gets the next free one (round robin, so a range just released is not
  handed out again at once); the choice comes from the ranges in the read model plus the ones
  this process is assigning right now, so parallel reconciles rarely collide;
* a range the node's manifest states is honoured if it is one of the cluster's node ranges and
  free, and refused otherwise with ``NodePodCIDRRefused`` (``NetworkUnavailable=True``, reason
  ``CIDRNotAvailable``, the message saying why) — so is any node when the cluster CIDR is
  full (counting only ranges held, not those other claims are taking at that moment); those
  are looked at again when a range is released;
* a node that holds a range whose object is gone (deleted by hand) gets the object back.

And per range (keys ``("PodCIDR", name)``): a range whose node is gone (deleted, or deleted
and created again under the same name: a new uid) is released (``PodCIDRDeleted``). A range
object without a node is a reservation, left alone.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from handlers.controller import Cause, ControllerLoop, Leadership, LoopOptions
from projections.cluster import ClusterModel
from projections.ownership import Key
from projections.runtime import Projection
from streams.decide import Append, Attempt, decide_and_append
from streams.envelope import StoredEvent
from streams.eventstore import ConcurrencyConflict
from streams.leases import LeaderLease
from streams.repository import AggregateRepository, Loaded, Provenance, Written, uuid5_text
from streams.subjects import AggregateRef

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = structlog.get_logger(__name__)

ROLE = "node-ipam-controller"
ACTOR = f"system:{ROLE}"
CANDIDATES = 8
"""Ranges tried for one node before the reconcile is retried later (each lost to a racer)."""
SETTLE_SECONDS = 0.2
"""How soon a node is looked at again when the cluster CIDR seemed full only because of
ranges being claimed at that moment."""
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


class _Claim:
    """One node's claim of one range: the decision on the node and the range's object, made
    on whatever attempt (alone, or among other nodes' claims) loaded them."""

    def __init__(self, controller: NodeIPAMController, name: str, cidr: IPv4Network) -> None:
        self.controller = controller
        self.name = name
        self.cidr = cidr
        self.node_ref = AggregateRef("Node", "", name)
        self.block_ref = AggregateRef("PodCIDR", "", cidr_object_name(cidr))
        self.outcome = ""
        """The node's uid once the range is decided to be its, "refused" when the node's
        stated range is held, "" when there is nothing to write."""

    def decide(self, attempt: Attempt, *, now: int) -> tuple[list[Loaded], str, Cause] | None:
        """Record the claim's events; return what to append (and its write token and cause),
        or None. Raises :class:`_PickAgain` before recording anything."""
        self.outcome = ""
        name, cidr = self.name, self.cidr
        loaded, block_loaded = attempt[self.node_ref], attempt[self.block_ref]
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
        at = timestamp_from_ns(now)
        token = f"{ROLE}.{node.uid}.{seen}.{cidr_object_name(cidr)}"
        changes = [loaded, block_loaded]
        try:
            block_loaded.aggregate = assign_pod_cidr(
                node, block if isinstance(block, PodCIDR) else None, cidr=cidr,
                cluster=self.controller.cluster, uid=uuid5_text(UID_NAMESPACE, token), at=at,
            )  # fmt: skip
            self.outcome = node.uid
        except AlreadyExists as exc:
            if held is not None:
                # Two nodes claim one range: only hand edits of the log get here.
                log.error("node_ipam.range_claimed_twice", node=name, error=exc.message)
                return None
            if stated is None:
                raise _PickAgain(exc.message) from None
            node.refuse_pod_cidr(pod_cidr=stated, message=exc.message, at=at)
            self.controller._waiting.add(name)
            changes = [loaded]
            self.outcome = "refused"
        return changes, token, self.controller.loop.cause(("Node", name), loaded.last_seq)


BATCH_NODES = 250
"""Claims appended together at most: two events each, well within JetStream's 1,000 messages
of one atomic batch."""

IN_FLIGHT = 2 * BATCH_NODES
"""Nodes reconciled at once: enough for a full append of claims while the previous one is
being written (a reconcile is a choice from the read model and a wait for its append)."""


class _Claims:
    """Claims of ranges, appended many at once.

    Why: one atomic append per node (each loading its two aggregates, appending, waiting for
    the read model) gave about 40 nodes/s, so a cluster of 5,000 nodes waited two minutes for
    its ranges. Claims submitted while an append is under way are taken together by the next
    one: one atomic append of every claim's events, each with an expectation on its node and
    on its range's object ("must be new" for a range taken now), so a range still goes to one
    node only, whoever else writes meanwhile. When such an append loses a race (one of its
    nodes changed since it was loaded), each of its claims is decided again on its own, so one
    busy node does not hold the others back."""

    def __init__(self, repository: AggregateRepository) -> None:
        self._repository = repository
        self._pending: list[tuple[_Claim, asyncio.Future[Written | None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, claim: _Claim) -> Written | None:
        """Decide and append ``claim`` (with whatever others come meanwhile); what its append
        wrote (None: nothing to write). Raises what deciding it alone would raise."""
        future: asyncio.Future[Written | None] = asyncio.get_running_loop().create_future()
        self._pending.append((claim, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all())
        return await future

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                # One turn of the loop first: the reconciles started with this one submit too.
                await asyncio.sleep(0)
                batch = self._pending[:BATCH_NODES]
                del self._pending[:BATCH_NODES]
                batch = [(claim, future) for claim, future in batch if not future.done()]
                if len(batch) == 1:
                    await self._alone(*batch[0])
                elif batch:
                    await self._together(batch)
        finally:
            for _, future in self._pending:  # cancelled with the controller
                future.cancel()

    async def _alone(self, claim: _Claim, future: asyncio.Future[Written | None]) -> None:
        async def decide(attempt: Attempt) -> Append | None:
            now = time.time_ns()
            decided = claim.decide(attempt, now=now)
            if decided is None:
                return None
            changes, token, cause = decided
            return Append(
                changes=changes, provenance=cause.provenance(actor=ACTOR, token=token, now_ns=now)
            )

        try:
            result = await decide_and_append(
                self._repository, [claim.block_ref, claim.node_ref], decide, attempts=1,
                start_fresh=True,
            )  # fmt: skip
        except Exception as exc:
            _settle(future, exc)
        else:
            _settle(future, result.written)

    async def _together(self, batch: list[tuple[_Claim, asyncio.Future[Written | None]]]) -> None:
        refs = list(
            dict.fromkeys(ref for claim, _ in batch for ref in (claim.block_ref, claim.node_ref))
        )
        in_append: list[tuple[_Claim, asyncio.Future[Written | None]]] = []

        async def decide(attempt: Attempt) -> Append | None:
            in_append.clear()
            now = time.time_ns()
            changes: dict[int, Loaded] = {}
            tokens: list[str] = []
            causes: dict[str, str] = {}
            for claim, future in batch:
                try:
                    decided = claim.decide(attempt, now=now)
                except _PickAgain as exc:
                    _settle(future, exc)
                    continue
                if decided is None:
                    _settle(future, None)
                    continue
                claim_changes, token, cause = decided
                in_append.append((claim, future))
                tokens.append(token)
                for loaded in claim_changes:
                    changes.setdefault(id(loaded), loaded)
                    causes.setdefault(loaded.ref.subject, cause.causation_id)
            if not in_append:
                return None
            # The write token names every claim's own, so a retry of the same decisions on the
            # same state is recognised as such.
            digest = hashlib.sha256("\n".join(tokens).encode()).hexdigest()[:32]
            token = f"{ROLE}.batch.{digest}"
            return Append(
                changes=list(changes.values()),
                provenance=Provenance(
                    actor=ACTOR, correlation_id=token, causation_id=token, token=token,
                    now_ns=now, causes=causes,
                ),
            )  # fmt: skip

        # The nodes read from the log all at once (one at a time, under the locks, the reads
        # were most of an append's second); a range chosen as free is taken for new. Whatever
        # changed since (or was not new after all) fails the append's expectations, and each
        # claim is then decided again on its own, on the log.
        nodes = list(dict.fromkeys(claim.node_ref for claim, _ in batch))
        blocks = [claim.block_ref for claim, _ in batch]
        try:
            await asyncio.gather(*(self._repository.load(ref, fresh=True) for ref in nodes))
            result = await decide_and_append(
                self._repository, refs, decide, attempts=1, assume_new=blocks
            )
        except ConcurrencyConflict:
            # One of the nodes (or ranges) changed since it was loaded: each alone, on the log.
            await asyncio.gather(
                *(self._alone(claim, future) for claim, future in in_append if not future.done())
            )
            return
        except Exception as exc:  # a timeout, or a claim refused by the domain: all fail
            for _, future in batch:
                _settle(future, exc)
            return
        for _, future in in_append:
            _settle(future, result.written)


def _settle(future: asyncio.Future[Written | None], outcome: Written | Exception | None) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


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
        self._overlaps: dict[str, set[int]] = {}
        """PodCIDR object name -> the node ranges its range overlaps."""
        self._holders: dict[int, int] = {}
        """Node range -> how many held ranges overlap it (kept as ranges come and go, so
        choosing a range does not re-read every held one: 5,000 nodes made that quadratic)."""
        self._claims = _Claims(repository)
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
            **{"max_in_flight": IN_FLIGHT, **options},
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
        for index in self._overlaps.pop(name, ()):
            self._holders[index] -= 1
            if not self._holders[index]:
                del self._holders[index]
        if held is not None:
            self._held[name] = held
            if held.node is not None:
                self._by_node.setdefault(held.node, set()).add(name)
            overlaps = taken_ranges(self.cluster, [held.cidr])
            self._overlaps[name] = overlaps
            for index in overlaps:
                self._holders[index] = self._holders.get(index, 0) + 1

    def _all_keys(self) -> Iterable[Key]:
        """A new leader (its read model caught up) rebuilds its index of ranges and looks at
        every node and every range."""
        self._held.clear()
        self._by_node.clear()
        self._overlaps.clear()
        self._holders.clear()
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
            return None
        return await self._assign(name)

    def _taken(self) -> set[int]:
        return self._holders.keys() | self._assigning

    async def _assign(self, name: str) -> int | None:
        """Give the node a range; when to look again (None: it is answered)."""
        record = self._projection.model.get("Node", "", name)
        tried: set[int] = set()
        for _ in range(CANDIDATES):
            if record is None:
                return None
            assigned = assigned_pod_cidr(record.manifest)
            if assigned is not None:
                held = self._held.get(cidr_object_name(parse_cidr(assigned)))
                if held is not None and held.node == name:
                    return None  # the common case: nothing to do
                cidr = parse_cidr(assigned)  # its object is missing: make it again
            else:
                stated = stated_pod_cidr(record.manifest)
                try:
                    cidr = choose_pod_cidr(
                        stated, cluster=self.cluster, taken=self._taken() | tried,
                        after=self._last,
                    )  # fmt: skip
                except CIDRNotAvailable as exc:
                    if stated is None and (self._assigning or tried):
                        # Full only counting ranges other claims are taking now (or were
                        # taken by racers the read model has not shown yet): those claims may
                        # fail, so look again once they are settled instead of refusing.
                        await self._projection.wait_for_log_end()
                        return time.time_ns() + int(SETTLE_SECONDS * 1e9)
                    if stated is None:
                        self._waiting.add(name)
                    await self._refuse(name, exc.message)
                    return None
            index = self._index_in_cluster(cidr)
            try:
                if await self._take(name, cidr, index):
                    return None
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
        """Append the node's range and the range's object, both or neither (in one atomic
        append with other nodes' claims, see :class:`_Claims`); True when done (written, or
        nothing left to do), False to look again."""
        claim = _Claim(self, name, cidr)
        if index is not None:
            self._assigning.add(index)
        try:
            written = await self._claims.submit(claim)
        finally:
            if index is not None:
                self._assigning.discard(index)
        if written:
            await self._projection.wait_for(max(seq for _, seq in written))
        if written and not written.replayed:
            # (Replayed: another leader decided the very same on the very same state.)
            if claim.outcome != "refused":
                self.assigned += 1
                if index is not None:
                    self._last = index
                self._index(claim.block_ref.name, _Held(cidr.with_prefixlen, name, claim.outcome))
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

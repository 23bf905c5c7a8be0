"""The scheduler: places pending pods on nodes, Omega-style, any number of replicas at once.

Each replica folds the log into a :class:`SchedulingModel` (NodeInfos with their bound pods,
the queue of unbound pods) and loops: for each pending pod, by priority then arrival, it asks
``core.scheduling.schedule`` for a node, *assumes* the pod there in its own NodeInfo (so the next
decision already sees the capacity taken) and binds it in the background: ``PodBound`` on the pod
and ``PodAllocated`` on the node, in an atomic batch with an expectation on both subjects. The
node aggregate refuses to allocate beyond allocatable, so replicas racing on shared state can
lose a binding (a conflict: decide again on fresh state) but can never over-commit a node.

Throughput comes from three things: simple pods are placed with array operations
(``core.scheduling.vectorized``); many bindings share one atomic batch (the log commits a batch
in about the same time whatever its size), with pod and node aggregates built from the read
model rather than read from the log; and replicas split the queue by a hash of the pod over the
live members (``streams.leases.Membership``), so they race only for node capacity. Pods of one
shape reuse the array path's results per node (only nodes changed since are evaluated again), a
batch is written as one buffer, and the log is followed through the store's lean live reader
(``EventStore.follow``) rather than nats-py's ordered consumer.

A pod no node can take gets a ``PodUnschedulable`` event with the Kubernetes-style message
(recorded once per distinct message) and is parked until something relevant happens — a node
joins or changes, or a pod goes away — and then retried after a per-pod back-off (1 s doubling
to 10 s, as kube-scheduler's podInitialBackoff/podMaxBackoff). A binding the node refuses (its
ledger disagrees with this replica's view) or the log does not answer is retried after the same
back-off, never at once. There is no polling: the loop sleeps until the log or a back-off timer
wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from nats.aio.client import Client

from core.api.causation import caused_by_event
from core.errors import FleetError
from core.meta.aggregate import timestamp_from_ns
from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.pods.aggregate import Pod
from core.pods.decisions import bind_pod
from core.scheduling import (
    NodeInfo,
    PodInfo,
    PreemptionResult,
    SchedulerConfig,
    ScheduleResult,
    preempt,
    schedule,
)
from core.scheduling.vectorized import NodeColumns
from projections.runtime import Projection
from projections.scheduling import SchedulingModel
from streams.cancellation import checkpoint
from streams.commandbus import CommandClient, CommandFailed
from streams.connection import in_outage
from streams.decide import Append, Attempt, OnConflict, decide_and_append
from streams.envelope import StoredEvent
from streams.eventstore import ConcurrencyConflict, EventStore, StoreError
from streams.leases import Membership
from streams.repository import AggregateRepository, Loaded, Provenance
from streams.subjects import AggregateRef

log = structlog.get_logger(__name__)

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 10.0
BIND_ATTEMPTS = 3
MAX_BIND_BATCH = 256
"""Most bindings in one atomic batch: two events each (``PodBound``, the node's
``PodAllocated``), 512 messages, within the server's 1,000 a batch. A deep queue fills batches
this big: fewer, larger commits cost the server less per pod than batches of 64 did."""
MIN_BIND_BATCH = 4
ROLE = "scheduler"
TAKEOVER_S = 30.0
YIELD_EVERY_S = 0.005
# Events after which a parked (unschedulable) pod may fit: capacity or placement changed.
RELEVANT = frozenset(
    {"NodeCreated", "NodeUpdated", "NodeReady", "NodeNotReady", "NodeUncordoned",
     "PodDeleted", "PodReleased", "PodUpdated"}
)  # fmt: skip


MAX_IN_UNSCHEDULABLE_S = 300.0
"""kube-scheduler's podMaxInUnschedulablePodsDuration: a parked pod no event woke is tried
again after this long anyway (an event it should have been woken by may not be in RELEVANT)."""


@dataclass
class Parked:
    attempts: int
    retry_at: float
    woken: bool = False
    flush_at: float = 0.0
    """When it is tried again although no event woke it (``MAX_IN_UNSCHEDULABLE_S`` on)."""


class Scheduler:
    def __init__(
        self,
        nc: Client,
        store: EventStore,
        *,
        identity: str = "default-scheduler",
        config: SchedulerConfig | None = None,
        features: FeatureGates = DEFAULT_FEATURES,
        seed: int | None = None,
        max_binds_in_flight: int = 256,
        batches_in_flight: int = 4,
        share_work: bool = True,
        initial_backoff: float = INITIAL_BACKOFF_S,
        max_backoff: float = MAX_BACKOFF_S,
        max_in_unschedulable: float = MAX_IN_UNSCHEDULABLE_S,
    ) -> None:
        self._nc = nc
        self.identity = identity
        self.actor = f"system:scheduler/{identity}"
        self.config = config or SchedulerConfig()
        self.model = SchedulingModel(features=features, scheduler_name=self.config.scheduler_name)
        self.model.listener = self._on_event
        # The scheduler folds three messages per pod it places: it follows the log through the
        # store's lean reader rather than nats-py's ordered consumer.
        self.projection = Projection(self.model, store, lean_follow=True)
        self._repository = AggregateRepository(store)
        self._rng = random.Random(seed)
        self._wake = asyncio.Event()
        self._parked: dict[str, Parked] = {}
        self._in_flight: set[str] = set()
        self._slots = asyncio.Semaphore(max_binds_in_flight)
        # Where round-robin filtering starts. kube-scheduler starts at 0; replicas starting at
        # the same place would walk the nodes in step and keep choosing among the same ones
        # (and conflict), so each starts at a place of its own.
        self._next_start = zlib.crc32(identity.encode())
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._max_in_unschedulable = max_in_unschedulable
        self.bound = 0
        self.conflicts = 0
        self._to_bind: list[tuple[PodInfo, ScheduleResult]] = []
        self._binder_wake = asyncio.Event()
        self._batch_slots = asyncio.Semaphore(batches_in_flight)
        # Bindings per batch: as many as possible alone; halved on every conflict (another
        # replica binds to the same nodes), grown back slowly, so racing replicas lose small
        # batches rather than big ones.
        self._batch_size = MAX_BIND_BATCH
        self._columns: NodeColumns | None = None
        self._columns_version = -1
        self._share_work = share_work
        self._membership: Membership | None = None
        self._waiting_since: dict[str, float] = {}
        self._nominated: dict[str, str] = {}  # pod key -> node preemption made room on
        self._commands = CommandClient(nc, actor=self.actor)

    def _on_event(self, event: StoredEvent) -> None:
        if event.envelope.type in ("PodBound", "PodDeleted"):
            key = f"{event.envelope.namespace}/{event.envelope.name}"
            self._waiting_since.pop(key, None)
            self._parked.pop(key, None)  # bound (by any replica) or gone: nothing to retry
            if key in self._nominated:
                self._release_nomination(key)
        if event.envelope.type in RELEVANT and self._parked:
            for parked in self._parked.values():
                parked.woken = True
        self._wake.set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Schedule until cancelled; bindings in flight finish first."""
        await self.projection.catch_up()
        await self.projection.follow()
        if self._share_work:
            self._membership = await Membership.open(self._nc, ROLE, self.identity)
            self._membership.on_change = self._wake.set
            await self._membership.renew(time.time_ns())
            await self._membership.follow()
        if ready is not None:
            ready.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._binder(tasks))
                if self._membership is not None:
                    tasks.create_task(self._stay_member(self._membership))
                while True:
                    checkpoint()
                    timeout = await self._cycle(tasks)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    self._wake.clear()
        finally:
            if self._membership is not None:
                await self._membership.leave()
                await self._membership.stop()
            await self.projection.stop()

    async def _stay_member(self, membership: Membership) -> None:
        """Renew this replica's membership; when the set of live replicas changes (one
        stopped renewing), wake up: some pods may be this replica's to schedule now."""
        members = membership.members(time.time_ns())
        while True:
            checkpoint()
            await asyncio.sleep(membership.ttl / 3)
            try:
                await membership.renew(time.time_ns())
            except Exception as exc:  # the server is away: renew at the next period
                (log.debug if in_outage(self._nc) else log.warning)(
                    "scheduler.membership_renew_failed", identity=self.identity, error=repr(exc)
                )
            now_members = membership.members(time.time_ns())
            if now_members != members:
                members = now_members
                self._wake.set()

    def _share(self) -> tuple[int, int]:
        """(this replica's index, number of live replicas) for splitting the queue."""
        if self._membership is None:
            return 0, 1
        members = self._membership.members(time.time_ns())
        return members.index(self.identity), len(members)

    async def _cycle(self, tasks: asyncio.TaskGroup) -> float | None:
        """One pass over the queue; returns how long to sleep at most (next back-off expiry).

        Scheduling is CPU work; the pass yields to the event loop every few milliseconds so
        bindings, acks and the log keep flowing while a long queue is worked through.
        """
        now = time.monotonic()
        yield_at = time.perf_counter() + YIELD_EVERY_S
        next_retry: float | None = None
        pending = sorted(self.model.pending.values(), key=lambda p: -p.priority)
        nodes, columns = self._node_columns()
        my_share, shares = self._share()
        # Nodes holding pods with (anti-)affinity terms: the plugins look only at these.
        affinity_nodes = [node for node in nodes if node.pods_with_affinity]
        for pod in pending:
            if time.perf_counter() > yield_at:
                await asyncio.sleep(0)
                yield_at = time.perf_counter() + YIELD_EVERY_S
            key = pod.key
            if key in self._in_flight or key not in self.model.pending:
                continue
            if shares > 1 and zlib.crc32(key.encode()) % shares != my_share:
                # Another replica's pod (replicas split the queue by a hash of the pod, so
                # they do not race for the same pods). Should it not be bound in time (the
                # replicas' views of who is alive differ), this replica takes it anyway.
                since = self._waiting_since.setdefault(key, now)
                if now - since < TAKEOVER_S:
                    takeover = since + TAKEOVER_S
                    next_retry = takeover if next_retry is None else min(next_retry, takeover)
                    continue
            parked = self._parked.get(key)
            if parked is not None:
                if not parked.woken and parked.flush_at > now:
                    next_retry = min(next_retry or parked.flush_at, parked.flush_at)
                    continue
                if parked.retry_at > now:
                    next_retry = min(next_retry or parked.retry_at, parked.retry_at)
                    continue
            nominated = self._nominated.get(key)
            self._release_nomination(key)  # the pod competes for its nominated room itself
            result = schedule(
                pod, nodes, self.config, self._rng, self._next_start,
                namespace_labels=self.model.namespace_labels,
                affinity_nodes=affinity_nodes, columns=columns,
            )  # fmt: skip
            self._next_start = result.next_start_index
            self._in_flight.add(key)
            if result.scheduled:
                assert result.node_name is not None
                self.model.pending.pop(key, None)
                chosen = self.model.nodes[result.node_name]
                chosen.add_pod(pod)  # assume
                if result.node_name == nominated:
                    # The assumption is the held room now: kept should the binding be refused
                    # (``_forget``), so a view lagging the log (the victim's release not folded
                    # yet: "insufficient cpu") does not hand preemption's room to the next pod.
                    self._nominated[key] = nominated
                if pod.has_pod_affinity and chosen not in affinity_nodes:
                    affinity_nodes.append(chosen)
                self._to_bind.append((pod, result))
                self._binder_wake.set()
            else:
                attempts = parked.attempts + 1 if parked else 1
                backoff = min(self._max_backoff, self._initial_backoff * 2 ** (attempts - 1))
                self._parked[key] = Parked(
                    attempts, now + backoff, flush_at=now + self._max_in_unschedulable
                )
                outcome = preempt(
                    pod, nodes, result, self.config, self._rng,
                    namespace_labels=self.model.namespace_labels,
                    pdbs=self.model.disruption_budgets(),
                    nominated_node_name=self._nominated.get(key, ""),
                    affinity_nodes=affinity_nodes,
                )  # fmt: skip
                if outcome.preempting:
                    tasks.create_task(self._preempt_for(pod, outcome))
                else:
                    if outcome.clears_nomination:
                        self._release_nomination(key)
                    tasks.create_task(self._report_unschedulable(pod, result, outcome.message))
        return None if next_retry is None else max(0.0, next_retry - now)

    def _node_columns(self) -> tuple[list[NodeInfo], NodeColumns]:
        """The node list and its arrays, rebuilt only when nodes join or leave (the arrays
        follow changes to each node by themselves)."""
        if self._columns is None or self._columns_version != self.model.node_set_version:
            self._columns = NodeColumns(list(self.model.nodes.values()))
            self._columns_version = self.model.node_set_version
        return self._columns.nodes, self._columns

    async def _binder(self, tasks: asyncio.TaskGroup) -> None:
        """Turn decisions into bindings, many per atomic batch.

        The log commits an atomic batch in about the same time whatever its size (a few
        hundred batches a second on these machines), so one binding per batch would cap the
        scheduler there. Waiting for a free batch slot lets decisions pile up, so batches grow
        with the load and stay small (fast) when it is light.
        """
        while True:
            checkpoint()
            await self._binder_wake.wait()
            self._binder_wake.clear()
            while self._to_bind:
                await self._batch_slots.acquire()
                size = self._batch_size
                batch = self._to_bind[:size]
                del self._to_bind[:size]
                tasks.create_task(self._bind_batch(batch))

    async def _bind_batch(self, batch: list[tuple[PodInfo, ScheduleResult]]) -> None:
        try:
            refused: dict[str, str] | None = None
            try:
                refused = await self._commit_batch(batch)
                self._batch_size = min(MAX_BIND_BATCH, self._batch_size + 1)
            except ConcurrencyConflict:
                pass  # lost every attempt (each was logged): the bindings go one by one
            except (StoreError, TimeoutError) as exc:
                log.warning("scheduler.batch_error", size=len(batch), error=repr(exc))
            if refused is None:
                # Still losing, or the log did not answer: each binding on its own, fresh.
                async with asyncio.TaskGroup() as retries:
                    for pod, result in batch:
                        retries.create_task(self._bind(pod, result))
                return
            for pod, result in batch:
                if pod.key in refused:
                    assert result.node_name is not None
                    self._forget(pod, result.node_name)
                    self._back_off(pod.key)
                    log.info("scheduler.bind_failed", pod=pod.key, node=result.node_name,
                             error=refused[pod.key])  # fmt: skip
                else:
                    self._parked.pop(pod.key, None)
                    self.bound += 1
                self._in_flight.discard(pod.key)
            self._wake.set()
        finally:
            self._batch_slots.release()

    async def _commit_batch(self, batch: list[tuple[PodInfo, ScheduleResult]]) -> dict[str, str]:
        """Append the bindings of ``batch`` as one atomic batch: each pod's ``PodBound`` and its
        node's ``PodAllocated`` (``core.pods.decisions.bind_pod``), with an expectation on every
        subject. Bindings the aggregates refuse (the pod is gone or bound, the node's ledger is
        full) are left out and returned (pod key -> why); the others are all appended, or none
        is. Aggregates are built from the read model, not read: a lost batch is decided again
        once the read model has the write it lost to (the ones still valid go in), and raises
        ConcurrencyConflict when it keeps losing."""
        pod_refs = [AggregateRef("Pod", pod.namespace, pod.name) for pod, _ in batch]
        node_refs = {
            name: AggregateRef("Node", "", name)
            for name in sorted({result.node_name for _, result in batch if result.node_name})
        }
        refused: dict[str, str] = {}

        async def decide(attempt: Attempt) -> Append:
            refused.clear()
            now = time.time_ns()
            at = timestamp_from_ns(now)
            changes: list[Loaded] = []
            for (pod, result), pod_ref in zip(batch, pod_refs, strict=True):
                assert result.node_name is not None
                pod_loaded = attempt[pod_ref]
                try:
                    bind_pod(
                        pod_loaded.aggregate, attempt[node_refs[result.node_name]].aggregate,
                        requests=pod.requests, score=result.total_score,
                        feasible_nodes=result.feasible_nodes,
                        evaluated_nodes=result.evaluated_nodes,
                        plugin_scores=result.plugin_scores, weights=result.weights, at=at,
                    )  # fmt: skip
                except FleetError as exc:
                    refused[pod.key] = str(exc)
                    continue
                changes.append(pod_loaded)
            token = f"bind.{self.identity}.{uuid.uuid4().hex}"
            # Each binding is caused by its pod's last event; a node's allocation by the
            # first pod it takes in this batch.
            causes: dict[str, str] = {}
            for pod_loaded in changes:
                cause = caused_by_event(pod_loaded.last_seq)
                causes[pod_loaded.ref.subject] = cause
                assert isinstance(pod_loaded.aggregate, Pod)
                host = AggregateRef("Node", "", pod_loaded.aggregate.node_name or "").subject
                causes.setdefault(host, cause)
            return Append(
                changes=[*changes, *(attempt[ref] for ref in node_refs.values())],
                provenance=Provenance(
                    actor=self.actor, correlation_id=token, causation_id=token, token=token,
                    now_ns=now, causes=causes,
                ),
            )  # fmt: skip

        async def noticed(attempt: int, exc: ConcurrencyConflict) -> None:
            # Another writer got to one of these pods or nodes first; the batch is all or
            # nothing. Once the read model has that write, the same decisions are checked
            # again against it. Racing replicas lose small batches rather than big ones.
            self._batch_size = max(MIN_BIND_BATCH, self._batch_size // 2)
            self.conflicts += len(batch)
            log.info("scheduler.batch_conflict", size=len(batch), attempt=attempt,
                     error=str(exc))  # fmt: skip
            await self.projection.wait_for_log_end(timeout=2.0)

        await decide_and_append(
            self._repository,
            [*pod_refs, *node_refs.values()],
            decide,
            attempts=BIND_ATTEMPTS,
            load=self._as_seen,
            on_conflict=OnConflict(reload=False, noticed=noticed),
        )
        return refused

    async def _as_seen(self, ref: AggregateRef, *, fresh: bool, assume_new: bool) -> Loaded:
        """A pod or node aggregate as the read model has it (no read of the log; a pod the
        model does not know is gone)."""
        if ref.kind == "Node":
            return await self._node_as_seen(ref)
        loaded = await self._pod_as_seen(ref)
        return loaded if loaded is not None else Loaded(ref, None, 0)

    async def _pod_as_seen(self, ref: AggregateRef) -> Loaded | None:
        """The pod aggregate as the read model has it (no read of the log); None if gone."""
        seen = self.model.pod_aggregate(ref.namespace, ref.name)
        if seen is None:
            return None
        aggregate, last_seq = seen
        last_hash = self.model.last_hash("Pod", ref.namespace, ref.name)
        return await self._repository.adopt(ref, lambda: aggregate, last_seq, last_hash)

    async def _node_as_seen(self, ref: AggregateRef) -> Loaded:
        """The node aggregate, ledger included, as the read model has it (the log if the model
        does not know it)."""
        seen = self.model.node_aggregate(ref.name)
        if seen is None:
            return await self._repository.load(ref)
        aggregate, last_seq = seen
        last_hash = self.model.last_hash("Node", "", ref.name)
        return await self._repository.adopt(ref, lambda: aggregate, last_seq, last_hash)

    async def _bind(self, pod: PodInfo, result: ScheduleResult) -> None:
        assert result.node_name is not None
        try:
            async with self._slots:
                await self._commit_binding(pod, result)
            self._parked.pop(pod.key, None)
            self.bound += 1
        except (ConcurrencyConflict, FleetError) as exc:
            self._forget(pod, result.node_name)
            self._back_off(pod.key)
            log.info("scheduler.bind_failed", pod=pod.key, node=result.node_name, error=str(exc))
        except (StoreError, TimeoutError) as exc:
            # The log did not answer in time: nothing is known to be bound, decide again.
            self._forget(pod, result.node_name)
            self._back_off(pod.key)
            log.warning("scheduler.bind_error", pod=pod.key, node=result.node_name, error=repr(exc))
        finally:
            self._in_flight.discard(pod.key)
            self._wake.set()

    async def _commit_binding(self, pod: PodInfo, result: ScheduleResult) -> None:
        """One binding on its own, decided on the log's state (``core.pods.decisions``)."""
        node_name = result.node_name
        assert node_name is not None
        pod_ref = AggregateRef("Pod", pod.namespace, pod.name)
        node_ref = AggregateRef("Node", "", node_name)

        async def decide(attempt: Attempt) -> Append:
            now = time.time_ns()
            pod_loaded, node_loaded = attempt[pod_ref], attempt[node_ref]
            bind_pod(
                pod_loaded.aggregate, node_loaded.aggregate, requests=pod.requests,
                score=result.total_score, feasible_nodes=result.feasible_nodes,
                evaluated_nodes=result.evaluated_nodes, plugin_scores=result.plugin_scores,
                weights=result.weights, at=timestamp_from_ns(now),
            )  # fmt: skip
            # Unique to this decision: a replica must never take another's binding for its
            # own (the event store recognises a retry by its token).
            token = f"bind.{self.identity}.{pod.key}.{node_name}.{now}"
            return Append(
                changes=[pod_loaded, node_loaded],
                provenance=Provenance(
                    actor=self.actor,
                    correlation_id=token,
                    causation_id=caused_by_event(pod_loaded.last_seq),
                    token=token,
                    now_ns=now,
                ),
            )

        async def noticed(attempt: int, exc: ConcurrencyConflict) -> None:
            self.conflicts += 1

        await decide_and_append(
            self._repository,
            [pod_ref, node_ref],
            decide,
            attempts=BIND_ATTEMPTS,
            on_conflict=OnConflict(noticed=noticed),
        )

    def _forget(self, pod: PodInfo, node_name: str) -> None:
        """Undo an assumption that did not become this replica's binding: the pod leaves the
        node it was assumed on (unless the log bound it there after all, or preemption
        nominated it there: the room stays held for it) and waits again if the log has not
        bound it anywhere."""
        placed = self.model.placement(pod.key)
        node = self.model.nodes.get(node_name)
        if node is not None and placed != node_name and self._nominated.get(pod.key) != node_name:
            node.remove_pod(pod.key)
        if placed is None and self.model.cluster.get("Pod", pod.namespace, pod.name) is not None:
            self.model.pending[pod.key] = pod

    def _back_off(self, key: str) -> None:
        """A binding that was refused (the node's ledger disagrees with this replica's view)
        or not answered: the pod is tried again after its back-off, as kube-scheduler requeues
        a pod whose binding failed, instead of at once against a node that keeps refusing (a
        hot loop of thousands of attempts a second)."""
        parked = self._parked.get(key)
        attempts = parked.attempts + 1 if parked else 1
        backoff = min(self._max_backoff, self._initial_backoff * 2 ** (attempts - 1))
        self._parked[key] = Parked(attempts, time.monotonic() + backoff, woken=True)

    def _hold_nomination(self, pod: PodInfo, node_name: str) -> None:
        """Keep the room preemption makes on ``node_name`` for ``pod``: it is assumed there
        until it is scheduled again, so pods that come next do not take the freed capacity.
        (kube-scheduler weighs nominated pods of equal or higher priority in its filters; here
        the room is held against every pod.)"""
        self._release_nomination(pod.key)
        node = self.model.nodes.get(node_name)
        if node is not None and pod.key in self.model.pending:
            node.add_pod(pod)
            self._nominated[pod.key] = node_name

    def _release_nomination(self, key: str) -> None:
        node_name = self._nominated.pop(key, None)
        node = self.model.nodes.get(node_name) if node_name else None
        if node is not None and self.model.placement(key) != node_name:
            node.remove_pod(key)

    async def _preempt_for(self, pod: PodInfo, outcome: PreemptionResult) -> None:
        """Nominate ``pod`` to the node preemption chose (``PodNominated``, with the victims
        and why) and evict the victims through the gateway, like any client deleting a pod:
        each delete releases the victim's reservation on the node in the same append."""
        node_name = outcome.nominated_node_name
        assert node_name is not None
        victims = [victim.key for victim in outcome.victims]
        try:
            recorded = await self._record_on_unbound_pod(
                pod, "nominate",
                lambda target, at: target.nominate(
                    node=node_name, victims=victims, message=outcome.message, at=at
                ),
            )  # fmt: skip
            if not recorded:
                return
            self._hold_nomination(pod, node_name)
            log.info("scheduler.preempting", pod=pod.key, node=node_name, victims=victims)
            reason = f"preempted by pod {pod.key} (priority {pod.priority}) on node {node_name}"
            for victim in outcome.victims:
                namespace, _, name = victim.key.partition("/")
                record = self.model.cluster.get("Pod", namespace, name)
                # One key per victim incarnation: evicting it again (another replica, a retry)
                # is answered with the first outcome.
                incarnation = f"{victim.key}/{record.uid if record else victim.uid}"
                key = "preempt." + hashlib.sha256(incarnation.encode()).hexdigest()[:40]
                try:
                    await self._commands.send(
                        "Pod", "delete", {"name": name, "namespace": namespace, "reason": reason},
                        idempotency_key=key, causation_id=caused_by_event(recorded),
                    )  # fmt: skip
                except CommandFailed as exc:
                    if exc.code != "not_found":  # already gone is what was wanted
                        raise
        except (ConcurrencyConflict, FleetError, StoreError, TimeoutError, CommandFailed) as exc:
            parked = self._parked.get(pod.key)
            if parked is not None:
                parked.woken = True
            log.warning("scheduler.preemption_failed", pod=pod.key, error=str(exc))
        finally:
            self._in_flight.discard(pod.key)
            self._wake.set()

    async def _record_on_unbound_pod(
        self, pod: PodInfo, what: str, decide: Callable[[Pod, datetime], None]
    ) -> int:
        """Let ``decide`` record a scheduling outcome on the pod's aggregate, read fresh; the
        sequence of the event written, or 0 (nothing written) when the pod is gone or already
        bound."""
        ref = AggregateRef("Pod", pod.namespace, pod.name)

        async def record(attempt: Attempt) -> Append | None:
            loaded = attempt[ref]
            target = loaded.aggregate
            if not isinstance(target, Pod) or not target.exists or target.node_name:
                return None
            now = time.time_ns()
            decide(target, timestamp_from_ns(now))
            token = f"{what}.{self.identity}.{pod.key}.{target.version}"
            return Append(
                changes=[loaded],
                provenance=Provenance(
                    actor=self.actor,
                    correlation_id=token,
                    causation_id=caused_by_event(loaded.last_seq),
                    token=token,
                    now_ns=now,
                ),
            )

        decided = await decide_and_append(
            self._repository, [ref], record, attempts=1, start_fresh=True
        )
        written = decided.written
        if written is None:
            return 0
        return written[-1][1] if written else decided.attempt[ref].last_seq

    async def _report_unschedulable(
        self, pod: PodInfo, result: ScheduleResult, message: str
    ) -> None:
        try:
            await self._record_on_unbound_pod(
                pod, "unschedulable",
                lambda target, at: target.mark_unschedulable(
                    message=message, reasons=dict(result.reason_counts), at=at
                ),
            )  # fmt: skip
        except (ConcurrencyConflict, FleetError, StoreError, TimeoutError) as exc:
            # The pod changed under the report (another replica acted): look at it again soon.
            parked = self._parked.get(pod.key)
            if parked is not None:
                parked.woken = True
            log.info("scheduler.report_failed", pod=pod.key, error=str(exc))
        finally:
            self._in_flight.discard(pod.key)
            self._wake.set()

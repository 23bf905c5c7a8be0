"""The scheduler: places pending pods on nodes, Omega-style, any number of replicas at once.

Each replica folds the log into a :class:`SchedulingModel` (NodeInfos with their bound pods,
the queue of unbound pods) and loops: for each pending pod, by priority then arrival, it asks
``core.scheduling.schedule`` for a node, *assumes* the pod there in its own NodeInfo (so the next
decision already sees the capacity taken) and binds it in the background: ``PodBound`` on the pod
and ``PodAllocated`` on the node, one atomic batch with an expectation on both subjects. The
node aggregate refuses to allocate beyond allocatable, so replicas racing on shared state can
lose a binding (a conflict: decide again on fresh state) but can never over-commit a node.

A pod no node can take gets a ``PodUnschedulable`` event with the Kubernetes-style message
(recorded once per distinct message) and is parked until something relevant happens — a node
joins or changes, or a pod goes away — and then retried after a per-pod back-off (1 s doubling
to 10 s, as kube-scheduler's podInitialBackoff/podMaxBackoff). There is no polling: the loop
sleeps until the log or a back-off timer wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass

import structlog
from nats.aio.client import Client

from core.aggregates import Node, Pod, timestamp_from_ns
from core.errors import FleetError
from core.scheduling import PodInfo, SchedulerConfig, ScheduleResult, schedule
from projections.runtime import Projection
from projections.scheduling import SchedulingModel
from streams.cancellation import checkpoint
from streams.envelope import StoredEvent
from streams.eventstore import ConcurrencyConflict, EventStore, StoreError
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef

log = structlog.get_logger(__name__)

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 10.0
BIND_ATTEMPTS = 3
YIELD_EVERY_S = 0.005
# Events after which a parked (unschedulable) pod may fit: capacity or placement changed.
RELEVANT = frozenset(
    {"NodeCreated", "NodeUpdated", "NodeReady", "NodeNotReady", "NodeUncordoned",
     "PodDeleted", "PodReleased", "PodUpdated"}
)  # fmt: skip


@dataclass
class Parked:
    attempts: int
    retry_at: float
    woken: bool = False


class Scheduler:
    def __init__(
        self,
        nc: Client,
        store: EventStore,
        *,
        identity: str = "default-scheduler",
        config: SchedulerConfig | None = None,
        seed: int | None = None,
        max_binds_in_flight: int = 256,
        initial_backoff: float = INITIAL_BACKOFF_S,
        max_backoff: float = MAX_BACKOFF_S,
    ) -> None:
        self._nc = nc
        self.identity = identity
        self.actor = f"system:scheduler/{identity}"
        self.config = config or SchedulerConfig()
        self.model = SchedulingModel()
        self.model.listener = self._on_event
        self.projection = Projection(self.model, store)
        self._repository = AggregateRepository(store)
        self._rng = random.Random(seed)
        self._wake = asyncio.Event()
        self._parked: dict[str, Parked] = {}
        self._in_flight: set[str] = set()
        self._slots = asyncio.Semaphore(max_binds_in_flight)
        self._next_start = 0
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self.bound = 0
        self.conflicts = 0

    def _on_event(self, event: StoredEvent) -> None:
        if event.envelope.type in RELEVANT and self._parked:
            for parked in self._parked.values():
                parked.woken = True
        self._wake.set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Schedule until cancelled; bindings in flight finish first."""
        await self.projection.catch_up()
        await self.projection.follow()
        if ready is not None:
            ready.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                while True:
                    checkpoint()
                    timeout = await self._cycle(tasks)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    self._wake.clear()
        finally:
            await self.projection.stop()

    async def _cycle(self, tasks: asyncio.TaskGroup) -> float | None:
        """One pass over the queue; returns how long to sleep at most (next back-off expiry).

        Scheduling is CPU work; the pass yields to the event loop every few milliseconds so
        bindings, acks and the log keep flowing while a long queue is worked through.
        """
        now = time.monotonic()
        yield_at = time.perf_counter() + YIELD_EVERY_S
        next_retry: float | None = None
        pending = sorted(self.model.pending.values(), key=lambda p: -p.priority)
        nodes = list(self.model.nodes.values())
        # Nodes holding pods with (anti-)affinity terms: the plugins look only at these.
        affinity_nodes = [node for node in nodes if node.pods_with_affinity]
        for pod in pending:
            if time.perf_counter() > yield_at:
                await asyncio.sleep(0)
                yield_at = time.perf_counter() + YIELD_EVERY_S
            key = pod.key
            if key in self._in_flight or key not in self.model.pending:
                continue
            parked = self._parked.get(key)
            if parked is not None:
                if not parked.woken:
                    continue
                if parked.retry_at > now:
                    next_retry = min(next_retry or parked.retry_at, parked.retry_at)
                    continue
            result = schedule(
                pod, nodes, self.config, self._rng, self._next_start,
                namespace_labels=self.model.namespace_labels,
                affinity_nodes=affinity_nodes,
            )  # fmt: skip
            self._next_start = result.next_start_index
            self._in_flight.add(key)
            if result.scheduled:
                assert result.node_name is not None
                self.model.pending.pop(key, None)
                chosen = self.model.nodes[result.node_name]
                chosen.add_pod(pod)  # assume
                if pod.has_pod_affinity and chosen not in affinity_nodes:
                    affinity_nodes.append(chosen)
                tasks.create_task(self._bind(pod, result))
            else:
                attempts = parked.attempts + 1 if parked else 1
                backoff = min(self._max_backoff, self._initial_backoff * 2 ** (attempts - 1))
                self._parked[key] = Parked(attempts, now + backoff)
                tasks.create_task(self._report_unschedulable(pod, result))
        return None if next_retry is None else max(0.0, next_retry - now)

    async def _bind(self, pod: PodInfo, result: ScheduleResult) -> None:
        assert result.node_name is not None
        try:
            async with self._slots:
                await self._commit_binding(pod, result)
            self._parked.pop(pod.key, None)
            self.bound += 1
        except (ConcurrencyConflict, FleetError) as exc:
            self._forget(pod, result.node_name)
            log.info("scheduler.bind_failed", pod=pod.key, node=result.node_name, error=str(exc))
        except (StoreError, TimeoutError) as exc:
            # The log did not answer in time: nothing is known to be bound, decide again.
            self._forget(pod, result.node_name)
            log.warning("scheduler.bind_error", pod=pod.key, node=result.node_name, error=repr(exc))
        finally:
            self._in_flight.discard(pod.key)
            self._wake.set()

    async def _commit_binding(self, pod: PodInfo, result: ScheduleResult) -> None:
        node_name = result.node_name
        assert node_name is not None
        pod_ref = AggregateRef("Pod", pod.namespace, pod.name)
        node_ref = AggregateRef("Node", "", node_name)
        async with self._repository.lock(node_ref):
            for attempt in range(BIND_ATTEMPTS):
                now = time.time_ns()
                fresh = attempt > 0
                pod_loaded = await self._repository.load(pod_ref, fresh=fresh)
                node_loaded = await self._repository.load(node_ref, fresh=fresh)
                bound_pod, node = pod_loaded.aggregate, node_loaded.aggregate
                if not isinstance(bound_pod, Pod) or not isinstance(node, Node):
                    raise FleetError(f"{pod_ref} or {node_ref} no longer exists")
                at = timestamp_from_ns(now)
                try:
                    bound_pod.bind(
                        node=node_name, score=result.total_score,
                        feasible_nodes=result.feasible_nodes, at=at,
                    )  # fmt: skip
                    node.allocate(pod=pod.key, requests=dict(pod.requests), at=at)
                except FleetError:
                    # A refused decision may have left one aggregate with an unsaved event:
                    # drop both from the cache so the next decision starts from the log.
                    self._repository.forget(pod_ref)
                    self._repository.forget(node_ref)
                    raise
                # Unique to this decision: a replica must never take another's binding
                # for its own (the event store recognises a retry by its token).
                token = f"bind.{self.identity}.{pod.key}.{node_name}.{now}"
                provenance = Provenance(
                    actor=self.actor,
                    correlation_id=token,
                    causation_id=f"{pod_ref}@{bound_pod.version - 1}",
                    token=token,
                    now_ns=now,
                )
                try:
                    await self._repository.save([pod_loaded, node_loaded], provenance)
                    return
                except ConcurrencyConflict:
                    self.conflicts += 1
                    if attempt == BIND_ATTEMPTS - 1:
                        raise

    def _forget(self, pod: PodInfo, node_name: str) -> None:
        """Undo an assumption that did not become this replica's binding: the pod leaves the
        node it was assumed on (unless the log bound it there after all) and waits again if
        the log has not bound it anywhere."""
        placed = self.model.placement(pod.key)
        node = self.model.nodes.get(node_name)
        if node is not None and placed != node_name:
            node.remove_pod(pod.key)
        if placed is None and self.model.cluster.get("Pod", pod.namespace, pod.name) is not None:
            self.model.pending[pod.key] = pod

    async def _report_unschedulable(self, pod: PodInfo, result: ScheduleResult) -> None:
        ref = AggregateRef("Pod", pod.namespace, pod.name)
        try:
            async with self._repository.lock(ref):
                loaded = await self._repository.load(ref, fresh=True)
                target = loaded.aggregate
                if not isinstance(target, Pod) or not target.exists or target.node_name:
                    return
                now = time.time_ns()
                target.mark_unschedulable(
                    message=result.message, reasons=dict(result.reason_counts),
                    at=timestamp_from_ns(now),
                )  # fmt: skip
                token = f"unschedulable.{self.identity}.{pod.key}.{target.version}"
                await self._repository.save(
                    [loaded],
                    Provenance(self.actor, token, f"{ref}@{target.version}", token, now),
                )
        except (ConcurrencyConflict, FleetError, StoreError, TimeoutError) as exc:
            # The pod changed under the report (another replica acted): look at it again soon.
            parked = self._parked.get(pod.key)
            if parked is not None:
                parked.woken = True
            log.info("scheduler.report_failed", pod=pod.key, error=str(exc))
        finally:
            self._in_flight.discard(pod.key)
            self._wake.set()

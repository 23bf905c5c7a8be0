"""Simulated nodes (kwok-like): many nodes with declared capacity in one process.

They register through the command gateway like any client would (``Node`` apply, actor
``system:sim``) and then renew their heartbeat leases on a period, so the node lifecycle
controller sees them Ready, and sees them go Unknown when the simulator stops. This is how the
control plane is exercised at scale on one machine (5,000 nodes take a few seconds to register
and a fraction of a core to keep alive).

:class:`SimulatedPods` plays the kubelet's part for those nodes: it follows the log, and a
configurable delay after a pod is bound to one of its nodes it records the pod's address, its
containers as started and the pod as Ready (``PodIPAssigned``, ``ContainerStarted`` …
``PodReady``, one append each on the pod's subject, actor ``system:sim``), so ``fleetlog get
pods -o wide`` shows them Running with an IP. The address is the next free one of the node's
range (``spec.podCIDR``, from the node IPAM controller; a pod waits until its node has one, as
a kubelet waits for its network), chosen as the agent chooses but with no namespace behind it:
scale tests get realistic endpoints. Pods bound
while the simulator was down are found when it replays the log on start. The write token is
derived from the pod's uid and version, so a restarted simulator never starts a pod twice.

A pod resized in place (``PodResized``) on a simulated node is admitted as the node agent
admits it (``core.pods.resize.resize_admission``): its new requests against the node's
allocatable (``Infeasible``) and against what the other pods hold on the node's ledger
(``Deferred``, tried again every few seconds), recorded ``PodResizePending`` with the
allocation it keeps; else allocated on the ledger and, there being no cgroup to write,
actuated at once (``PodResizeAllocated`` and ``PodResizeActuated`` in one append). So a VPA's
``InPlaceOrRecreate`` works on simulated pods as on real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import structlog
from nats.aio.client import Client

from core.api.causation import caused_by_event
from core.errors import FleetError
from core.meta.aggregate import timestamp_from_ns
from core.network.ipam import next_pod_address
from core.network.ranges import gateway
from core.nodes.aggregate import Node
from core.nodes.status import assigned_pod_cidr
from core.pods.aggregate import Pod
from core.pods.decisions import allocate_resize, pod_key
from core.pods.resize import desired_resources, resize_admission
from core.scheduling.model import PodInfo
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.cancellation import checkpoint
from streams.commandbus import CommandClient, NoGateway
from streams.connection import OUTAGE_ERRORS, in_outage
from streams.decide import Append, Attempt, decide_and_append
from streams.envelope import StoredEvent
from streams.eventstore import ConcurrencyConflict, EventStore, StoreError
from streams.leases import NodeLeases
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef

log = structlog.get_logger(__name__)

ACTOR = "system:sim"
IN_FLIGHT = 200
DEFAULT_START_DELAY_S = 1.0
START_ATTEMPTS = 3
RETRY_S = 1.0
RESIZE_RETRY_S = 2.0
"""How often a Deferred resize is admitted again (as the node agent tries it again)."""


@dataclass(frozen=True)
class SimNodeSpec:
    """The shape of every simulated node."""

    prefix: str = "sim-node"
    cpu: str = "4"
    memory: str = "32Gi"
    pods: str = "110"
    labels: dict[str, str] = field(default_factory=dict)
    taints: Sequence[dict[str, str]] = ()
    zones: int = 3

    def name(self, index: int) -> str:
        return f"{self.prefix}-{index}"

    def manifest(self, index: int) -> dict[str, Any]:
        name = self.name(index)
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        labels = {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": f"zone-{index % max(1, self.zones)}",
            "type": "simulated",
            **self.labels,
        }
        spec: dict[str, Any] = {"taints": list(self.taints)} if self.taints else {}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
            "status": {"capacity": capacity, "allocatable": capacity},
        }


HEARTBEAT_ROUND_S = 15.0
"""The longest a round of heartbeats may take before it is given up."""
REGISTER_RETRY_S = (0.5, 10.0)
"""The first and the longest wait before a node's registration is sent again."""


class SimulatedNodes:
    def __init__(self, nc: Client, leases: NodeLeases, *, spec: SimNodeSpec, count: int) -> None:
        self._nc = nc
        self._commands = CommandClient(nc, actor=ACTOR)
        self._leases = leases
        self.spec = spec
        self.count = count

    @classmethod
    async def create(cls, nc: Client, spec: SimNodeSpec, count: int) -> SimulatedNodes:
        return cls(nc, await NodeLeases.open(nc), spec=spec, count=count)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.spec.name(index) for index in range(self.count))

    async def register(self) -> None:
        """Apply every node's manifest through the gateway (idempotent: unchanged if present)."""
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def apply(index: int) -> None:
            async with slots:
                wait = REGISTER_RETRY_S[0]
                while True:
                    try:
                        await self._commands.send(
                            "Node", "apply", {"manifest": self.spec.manifest(index)}
                        )
                        return
                    except (NoGateway, *OUTAGE_ERRORS) as exc:
                        # Started while the server or the gateway is away: wait for them.
                        log.info("sim.register_waits", node=self.spec.name(index), error=repr(exc))
                    await asyncio.sleep(wait)
                    wait = min(REGISTER_RETRY_S[1], wait * 2)

        async with asyncio.TaskGroup() as tasks:
            for index in range(self.count):
                tasks.create_task(apply(index))
        log.info("sim.registered", nodes=self.count, prefix=self.spec.prefix)

    async def heartbeat_once(self) -> None:
        """Renew every node's lease once; the first failure is raised after all were tried."""
        now = time.time_ns()
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def renew(index: int) -> None:
            async with slots:
                await self._leases.renew(self.spec.name(index), now)

        # gather, not a TaskGroup: a renewal that fails (or that nats-py cancels while it
        # reconnects) must not cancel this task, whose cancel count would then outlive the
        # round and end the heartbeat loop for good.
        outcomes = await asyncio.gather(
            *(renew(index) for index in range(self.count)), return_exceptions=True
        )
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            raise RuntimeError(f"heartbeat renewal failed: {failed!r}") from failed

    async def keep_alive(self, heartbeat_seconds: float = 10.0) -> None:
        """Heartbeat every node on a period until cancelled."""
        while True:
            checkpoint()
            try:
                # Bounded, in a task of its own (wait_for): a round that stalls is given up
                # without touching this task's cancellation state.
                await asyncio.wait_for(
                    self.heartbeat_once(), timeout=max(HEARTBEAT_ROUND_S, heartbeat_seconds)
                )
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # this loop was asked to stop
                # A cancellation nobody asked this task for (nats-py cancels requests it
                # holds when it reconnects): a failed round, not the end of the heartbeat.
                log.warning("sim.heartbeat_failed", error="a renewal was cancelled")
            except Exception as exc:  # the server is away: beat again at the next period
                (log.debug if in_outage(self._nc) else log.warning)(
                    "sim.heartbeat_failed", error=repr(exc)
                )
            await asyncio.sleep(heartbeat_seconds)


class NoRangeYet(Exception):
    """The pod's node has no pod range yet: its start waits (and is tried again)."""


class SimulatedPods:
    """Starts the pods bound to simulated nodes, ``start_delay`` seconds after their binding."""

    def __init__(
        self,
        store: EventStore,
        owns: Callable[[str], bool],
        *,
        start_delay: float = DEFAULT_START_DELAY_S,
        max_in_flight: int = IN_FLIGHT,
    ) -> None:
        self._owns = owns
        self.start_delay = start_delay
        self.projection = Projection(ClusterModel(), store)
        self.projection.listeners.append(self._on_event)
        # Never decided on a pod older than the binding that made it due (a clustered
        # stream's reads may come from a replica that lags).
        self._repository = AggregateRepository(store, known=self.projection.model.last_seq_of)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._wake = asyncio.Event()
        self._due: dict[str, int] = {}  # pod key -> when to start it (ns since the epoch)
        self._heap: list[tuple[int, str]] = []
        self._in_flight: set[str] = set()
        self._addresses: dict[str, dict[str, IPv4Address]] = {}
        """Node -> pod key -> the address it holds (recorded, or chosen and being recorded)."""
        self._last: dict[str, IPv4Address] = {}
        self.started = 0
        self._allocated: dict[str, dict[str, dict[str, Any]]] = {}
        """Pod key -> container -> the resources its node admitted, for pods resized on one
        of our nodes (rebuilt from the log on start: ``PodResized``'s ``before``, then each
        ``PodResizeActuated``)."""
        self._resizes: asyncio.Queue[str] = asyncio.Queue()
        self._resize_queued: set[str] = set()
        self.resize_outcomes: dict[str, str] = {}
        """Pod key -> the last admission's outcome (Feasible, Deferred, Infeasible)."""

    def _free(self, key: str) -> None:
        for held in self._addresses.values():
            held.pop(key, None)

    def _on_event(self, event: StoredEvent) -> None:
        e = event.envelope
        if e.kind != "Pod":
            return
        key = f"{e.namespace}/{e.name}"
        if e.type == "PodIPAssigned":
            if self._owns(e.payload["node"]) and not e.payload.get("host_network"):
                self._free(key)
                for ip in e.payload["pod_ips"]:
                    self._addresses.setdefault(e.payload["node"], {})[key] = IPv4Address(ip)
            return
        if e.type in ("PodDeleted", "PodSucceeded", "PodFailed", "PodCreated"):
            self._free(key)
            self._allocated.pop(key, None)
            self.resize_outcomes.pop(key, None)
        if e.type == "PodResized":
            self._on_resized(key, e.payload)
            return
        if e.type == "PodResizeActuated":
            if key in self._allocated:
                self._allocated[key].update(e.payload.get("resources") or {})
            return
        if e.type == "PodBound":
            if self._owns(e.payload["node"]):
                due = e.timestamp_ns + int(self.start_delay * 1e9)
                self._due[key] = due
                heapq.heappush(self._heap, (due, key))
                self._wake.set()
        elif e.type in ("PodReady", "PodDeleted", "PodCreated"):
            # Started (by us, or by whoever did), gone, or a new pod of the same name.
            self._due.pop(key, None)

    def _on_resized(self, key: str, payload: dict[str, Any]) -> None:
        namespace, _, name = key.partition("/")
        record = self.projection.model.get("Pod", namespace, name)
        if record is None:
            return
        node = (record.manifest.get("spec") or {}).get("nodeName")
        if not node or not self._owns(str(node)):
            return
        if key not in self._allocated:
            # Before its first resize a pod holds what its spec asked: the spec now has the
            # new resources, the event the old ones of the containers it changed.
            before = payload.get("before") or {}
            self._allocated[key] = {
                cname: dict(before.get(cname, resources))
                for cname, resources in desired_resources(record.manifest).items()
            }
        self._queue_resize(key)

    def _queue_resize(self, key: str) -> None:
        if key not in self._resize_queued:
            self._resize_queued.add(key)
            self._resizes.put_nowait(key)

    async def _resize_worker(self) -> None:
        """Admit queued resizes one pod at a time; a Deferred one is queued again later."""
        loop = asyncio.get_running_loop()
        while True:
            key = await self._resizes.get()
            self._resize_queued.discard(key)
            try:
                outcome = await self._admit_resize(key)
            except (StoreError, *OUTAGE_ERRORS) as exc:
                log.warning("sim.resize_not_recorded", pod=key, error=repr(exc))
                outcome = "Deferred"
            except FleetError as exc:
                log.info("sim.resize_skipped", pod=key, error=str(exc))
                continue
            if outcome is not None:
                self.resize_outcomes[key] = outcome
            if outcome == "Deferred":
                loop.call_later(RESIZE_RETRY_S, self._queue_resize, key)

    async def _admit_resize(self, key: str) -> str | None:
        """Admit the pod's desired resources on its node (the node agent's rule) and record
        the outcome; None when there was nothing to admit."""
        namespace, _, name = key.partition("/")
        record = self.projection.model.get("Pod", namespace, name)
        before = self._allocated.get(key)
        if record is None or before is None:
            return None
        node_name = str((record.manifest.get("spec") or {}).get("nodeName") or "")
        if not self._owns(node_name):
            return None
        ref = AggregateRef("Pod", namespace, name)
        node_ref = AggregateRef("Node", "", node_name)
        decided: dict[str, Any] = {}

        async def admit(attempt: Attempt) -> Append | None:
            decided.clear()
            loaded, host = attempt[ref], attempt[node_ref]
            pod, node = loaded.aggregate, host.aggregate
            if not isinstance(pod, Pod) or not pod.exists or pod.node_name != node_name:
                return None
            if not isinstance(node, Node) or not node.exists:
                raise FleetError(f"node {node_name} no longer exists")
            desired = desired_resources(pod.manifest)
            if desired == before:
                return None
            now = time.time_ns()
            at = timestamp_from_ns(now)
            # The desired requests alone: with its status the reading keeps the larger
            # allocated ones, and a decrease would never give anything back.
            requests = PodInfo.from_manifest({**pod.manifest, "status": {}}).requests
            held = node.allocations.get(pod_key(pod), {})
            others = {k: v - held.get(k, 0) for k, v in node.allocated.items()}
            admission = resize_admission(
                allocatable=node.allocatable, others=others, wanted=requests
            )
            decided.update(outcome=admission.outcome, desired=desired)
            seen = pod.version
            if admission.outcome != "Feasible":
                pod.defer_resize(
                    node=node_name, reason=admission.outcome, message=admission.message,
                    allocated=before, at=at,
                )  # fmt: skip
            else:
                allocate_resize(pod, node, requests=requests, allocated=desired, restarts=[],
                                at=at)  # fmt: skip
                pod.actuate_resize(node=node_name, resources=desired, error="", at=at)
            token = f"sim.resize.{pod.uid}.{seen}"
            return Append(
                changes=[loaded, host],
                provenance=Provenance(
                    actor=ACTOR, correlation_id=token,
                    causation_id=caused_by_event(loaded.last_seq), token=token, now_ns=now,
                ),
            )  # fmt: skip

        try:
            # Fresh from the log: the node's ledger changes with every binding elsewhere.
            await decide_and_append(
                self._repository, [ref, node_ref], admit, attempts=START_ATTEMPTS,
                start_fresh=True,
            )  # fmt: skip
        except ConcurrencyConflict as exc:
            raise StoreError(f"{ref} kept changing while its resize was admitted") from exc
        outcome = decided.get("outcome")
        if outcome == "Feasible":
            self._allocated[key] = decided["desired"]
        return str(outcome) if outcome else None

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follow the log and start due pods until cancelled. The replay on start schedules
        every pod bound to one of our nodes and not yet Ready (those bound while we were down
        are due at once)."""
        await self.projection.catch_up()
        await self.projection.follow()
        if ready is not None:
            ready.set()
        log.info("sim.pods_following", pending=len(self._due), delay_s=self.start_delay)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._resize_worker())
                while True:
                    checkpoint()
                    now = time.time_ns()
                    while self._heap and self._heap[0][0] <= now:
                        due, key = heapq.heappop(self._heap)
                        if self._due.get(key) != due or key in self._in_flight:
                            continue
                        await self._slots.acquire()  # bounded: back-pressure on the loop
                        self._in_flight.add(key)
                        tasks.create_task(self._start(key, due))
                    timeout = (self._heap[0][0] - time.time_ns()) / 1e9 if self._heap else None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    self._wake.clear()
        finally:
            await self.projection.stop()

    async def _start(self, key: str, due: int) -> None:
        namespace, _, name = key.partition("/")
        ref = AggregateRef("Pod", namespace, name)
        try:
            try:
                if await self._start_pod(ref):
                    self.started += 1
            except ConcurrencyConflict as exc:
                raise StoreError(f"{ref} kept changing while it was started") from exc
            if self._due.get(key) == due:
                del self._due[key]
        except FleetError as exc:
            # Not ours to start any more (unbound, deleted, moved): forget it.
            self._due.pop(key, None)
            self._free(key)
            log.info("sim.start_skipped", pod=key, error=str(exc))
        except (StoreError, NoRangeYet, *OUTAGE_ERRORS) as exc:
            if self._due.get(key) == due:
                retry = time.time_ns() + int(RETRY_S * 1e9)
                self._due[key] = retry
                heapq.heappush(self._heap, (retry, key))
            if isinstance(exc, NoRangeYet):
                log.debug("sim.start_waits", pod=key, reason=str(exc))
            elif in_outage():
                log.debug("sim.start_failed", pod=key, error=repr(exc))
            else:
                log.warning("sim.start_failed", pod=key, error=repr(exc))
        finally:
            self._in_flight.discard(key)
            self._slots.release()
            self._wake.set()

    def _address_for(self, key: str, node: str, host_network: bool) -> tuple[str, str]:
        """(pod address, node address) for a pod starting on ``node``: the next free address
        of the node's range, held at once so pods starting together never share one."""
        record = self.projection.model.get("Node", "", node)
        cidr = assigned_pod_cidr(record.manifest) if record is not None else None
        if cidr is None:
            raise NoRangeYet(f"node {node} has no podCIDR yet")
        network = IPv4Network(cidr)
        host_ip = str(gateway(network))
        if host_network:
            return host_ip, host_ip
        held = self._addresses.setdefault(node, {})
        if key in held and held[key] in network:
            return str(held[key]), host_ip
        chosen = next_pod_address(network, set(held.values()), last=self._last.get(node))
        if chosen is None:
            raise FleetError(f"node {node} has no free address left in {network}")
        held[key] = self._last[node] = chosen
        return str(chosen), host_ip

    async def _start_pod(self, ref: AggregateRef) -> bool:
        """Record the pod's address, its containers started, then the pod Ready; False if
        nothing was due.

        Each event is its own single-message append (a plain publish): nats-server answers an
        atomic batch far more slowly, and at 10,000 pods that is the difference that matters.
        Each step's token is derived from the pod's uid and the version it was decided on, so
        a restarted simulator re-deciding the same step writes the same event and recognises
        it as its own, and a step that landed is simply not due any more.
        """
        steps: list[str | None] = []  # "" for the address, containers to start, None: Ready
        planned = False
        key = f"{ref.namespace}/{ref.name}"

        async def next_step(attempt: Attempt) -> Append:
            nonlocal planned
            loaded = attempt[ref]
            pod = loaded.aggregate
            if not isinstance(pod, Pod) or not pod.exists:
                raise FleetError(f"{ref} no longer exists")
            node = pod.node_name
            if node is None or not self._owns(node):
                raise FleetError(f"{ref} is not bound to a simulated node")
            if not planned:
                if not (pod.manifest.get("status") or {}).get("podIP"):
                    steps.append("")
                containers = [
                    c["name"] for c in pod.manifest.get("spec", {}).get("containers") or []
                ]
                steps.extend(
                    name
                    for name in containers
                    if not (pod.container_status(name) or {}).get("started")
                )
                steps.append(None)
                planned = True
            container = steps[0]
            seen_version = pod.version
            now = time.time_ns()
            at = timestamp_from_ns(now)
            if container == "":
                host_network = bool(pod.manifest.get("spec", {}).get("hostNetwork"))
                pod_ip, host_ip = self._address_for(key, node, host_network)
                pod.assign_ips(
                    node=node, pod_ips=[pod_ip], host_ip=host_ip, host_network=host_network,
                    at=at,
                )  # fmt: skip
            elif container is not None:
                pod.start_container(container=container, node=node, at=at)
            else:
                pod.mark_ready(reason="simulated containers started", at=at)
            token = f"sim.start.{pod.uid}.{seen_version}"
            return Append(
                changes=[loaded],
                provenance=Provenance(
                    actor=ACTOR,
                    correlation_id=token,
                    causation_id=caused_by_event(loaded.last_seq),
                    token=token,
                    now_ns=now,
                ),
            )

        wrote = False
        while True:
            decided = await decide_and_append(
                self._repository, [ref], next_step, attempts=START_ATTEMPTS
            )
            wrote = wrote or bool(decided.written)
            steps.pop(0)
            if not steps:
                return wrote

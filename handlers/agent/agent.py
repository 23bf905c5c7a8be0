"""The node agent: registers its node, keeps its heartbeat, and runs the pods bound to it.

Why this exists: binding a pod is only a promise until something runs it. The agent follows the
log (pod events only), keeps one :class:`PodWorker` per pod bound to its node, and reconciles
whenever the log changes: a newly bound pod gets a worker, a deleted (or re-created) pod's
worker terminates its containers gracefully. Containers are processes that outlive the agent:
stopping the agent leaves them running, and a restarted agent adopts the ones whose pod is
still bound here (the runtime persists what it started) and stops the rest, so a restart
leaves neither orphans nor duplicates.

The pod network (``network.py``) is decided once at start: each pod its own namespace on the
node's bridge, or, where the machine cannot make namespaces (or the operator says so), every
pod in the node's network, said once in the log and in the node's ``PodNetworkReady``
condition. The agent follows its own node's events for its range (``spec.podCIDR``, given by
the node IPAM controller), and removes the networks its ledger holds for pods that are gone.

Cluster DNS (``dns.py``), when the agent is given :class:`DNSOptions`, is served by the agent
itself at the cluster DNS address on its bridge (``lo`` without pod networks), and each pod's
``resolv.conf`` is written before its first container starts (``poddns.py``).
Service traffic (``proxy.py``, kube-proxy's job) runs beside the pods as a task of its own: it
follows Services and EndpointSlices and forwards ClusterIP and NodePort connections to ready
endpoints. It starts after the agent is ready and costs nothing on the pods' paths; it stops
(removing its addresses, listeners and rules) when the agent does.

``kubectl exec`` and ``port-forward`` reach the pods here through the agent: it answers byte-stream
sessions on its node's NATS subject (``streaming.py``, ``streams/nodestream.py``).

Container output is rotated and shipped by ``logship.py`` (``containerLogMaxSize`` and
``containerLogMaxFiles`` as the kubelet's). A pod's files (``<root>/pods/<uid>``: its containers'
output, working directories and state) are removed as the kubelet's garbage collection removes
them: once the pod object is gone and nothing of it runs here any more (a Succeeded or Failed pod
keeps them until it is deleted, so its logs stay readable); of a running pod's container, the
newest two instances keep theirs. A pass every second, at start too: a restarted agent removes
what pods deleted meanwhile left, never the directory of a container it adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import structlog
from nats.aio.client import Client

from core.meta.quantity import resource_amount
from core.nodes.status import assigned_pod_cidr
from core.pods.containerlogs import ContainerLogPolicy, ShippingLimits, stale_instances
from handlers.agent.dns import ClusterAddress, ClusterDNS, DNSOptions
from handlers.agent.ingress import IngressGateway
from handlers.agent.network import NetworkOptions, detect
from handlers.agent.node import NodeCapacity, NodeCondition, NodeDeclaration, machine_capacity
from handlers.agent.podconfig import PodConfigClient
from handlers.agent.poddns import PodResolvers
from handlers.agent.pods import PodRecorder, PodWorker, WorkerConfig
from handlers.agent.proxy import ServiceProxy
from handlers.agent.seams import Container, ContainerRuntime, PodNetwork
from handlers.agent.sidecar import MeshOptions, MeshSidecars
from handlers.agent.streaming import PodStreams
from projections.cluster import ClusterModel, ObjectRecord
from projections.runtime import Projection
from streams.cancellation import checkpoint
from streams.commandbus import CommandClient, CommandFailed, NoGateway
from streams.connection import OUTAGE_ERRORS, in_outage
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.identity import credentials_of
from streams.leases import NodeLeases
from streams.repository import AggregateRepository
from streams.subjects import AggregateRef, event_filter, event_subject
from streams.telemetry import (
    USAGE_PERIOD_S,
    ContainerUsage,
    publish_node_usage,
    publish_pod_usage,
)

log = structlog.get_logger(__name__)

DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_USAGE_S = USAGE_PERIOD_S
REGISTER_ATTEMPTS = 5
REGISTER_WAIT_S = (0.5, 10.0)
"""While no gateway serves (the agent started first), registering is tried again after the
first pause, doubling it up to the second."""
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
QUARANTINE_REPORT_PAUSE_S = 5.0
GARBAGE_PERIOD_S = 1.0
DEFAULT_START_WORKERS = 2
"""Processes that start the containers of ``runtime``'s default (``handlers.agent.startworker``):
a burst's starts run beside the agent's loop, on the machine's other core."""
STALE_INSTANCES_EVERY = 10
"""Garbage passes between two looks for old instances (a listing per container of every pod)."""
ROTATOR_WAIT_S = 5.0
"""How long the first reconcile waits for the log rotator process to serve (~0.1 s)."""
SHIPPING_GRACE_S = 10.0
"""How long a gone pod's files wait for the shipper to send what is left of its output."""


class NodeAgent:
    def __init__(
        self,
        nc: Client,
        store: EventStore,
        *,
        name: str,
        root: Path,
        capacity: NodeCapacity | None = None,
        labels: dict[str, str] | None = None,
        config: WorkerConfig | None = None,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_S,
        usage_seconds: float = DEFAULT_USAGE_S,
        runtime: ContainerRuntime | None = None,
        start_workers: int = DEFAULT_START_WORKERS,
        network: NetworkOptions | None = None,
        pod_network: PodNetwork | None = None,
        dns: DNSOptions | None = None,
        services: bool = True,
        container_logs: ContainerLogPolicy | None = None,
        log_shipping: ShippingLimits | None = None,
        garbage_seconds: float = GARBAGE_PERIOD_S,
        mesh: MeshOptions | None = None,
    ) -> None:
        """``runtime`` defaults to processes on this machine (``handlers.agent.runtime``),
        started by ``start_workers`` processes beside the agent's; ``pod_network`` to what
        :func:`handlers.agent.network.detect` finds the machine allows, named and enabled as
        ``network`` says; with ``dns``, the node serves cluster DNS;
        ``services``: whether this node forwards service traffic (its service proxy);
        ``container_logs``: rotation (the kubelet's 10Mi and 5 files if None);
        ``log_shipping``: what one container may ship (``core.pods.containerlogs``' defaults
        if None); with ``mesh``, meshed pods get their Envoy sidecar
        (``handlers.agent.sidecar``)."""
        from handlers.agent.logship import LogShipper
        from handlers.agent.runtime import ProcessRuntime

        self._nc = nc
        self.name = name
        self.actor = f"system:node/{name}"
        self.root = root
        self._capacity = capacity
        self._labels = dict(labels or {})
        self.config = config or WorkerConfig()
        if not self.config.node_allocatable:
            declared = capacity or machine_capacity()
            self.config = replace(
                self.config, node_allocatable={"cpu": declared.cpu, "memory": declared.memory}
            )
        self.heartbeat_seconds = heartbeat_seconds
        self.usage_seconds = usage_seconds
        self._cpu_seen: dict[tuple[str, str, int], tuple[int, int]] = {}
        self.runtime: ContainerRuntime = (
            runtime if runtime is not None else ProcessRuntime(root, start_workers=start_workers)
        )
        self.shipper = LogShipper(nc, root, policy=container_logs, limits=log_shipping)
        self.pod_config = PodConfigClient(nc, node=name, root=root)
        self.garbage_seconds = garbage_seconds
        self._garbage_seen: dict[str, float] = {}
        """Gone pods (by uid) whose files wait for the shipper, since when (monotonic)."""
        self.projection = Projection(ClusterModel(), store, filter_subject=event_filter("Pod"))
        self.projection.listeners.append(self._pod_changed)
        self.network_options = network or NetworkOptions()
        max_pods = _whole(capacity.pods) if capacity is not None else None
        if max_pods is not None and max_pods < self.network_options.pool_limit:
            # The pool grows after bursts up to what the node can run, never beyond.
            self.network_options = replace(
                self.network_options, pool_limit=max(max_pods, self.network_options.pool)
            )
        self._pod_network = pod_network
        self.node_projection = Projection(
            ClusterModel(), store, filter_subject=event_subject("Node", "", name)
        )
        self._node_changed = asyncio.Event()
        self.node_projection.listeners.append(lambda event: self._node_changed.set())
        self._store = store
        self.dns_options = dns
        self.cluster_dns: ClusterDNS | None = None
        self.resolvers = PodResolvers(
            prefix=self.network_options.prefix,
            **({"resolv_conf": dns.resolv_conf, "domain": dns.domain} if dns else {}),
        )
        self.resolvers.configured = dns is not None
        self._releasing: set[str] = set()
        """Pods (by uid) whose leftover network is being removed."""
        # Steps are decided on pods at least as new as this node's read model shows them
        # (a clustered stream's reads may come from a replica that lags).
        self.recorder = PodRecorder(
            AggregateRepository(store, known=self.projection.model.last_seq_of),
            actor=self.actor,
            node=name,
            model=self.projection.model,
        )
        self._commands = CommandClient(nc, actor=self.actor)
        self._workers: dict[str, tuple[PodWorker, asyncio.Task[None]]] = {}
        self._adopted: dict[tuple[str, str], Container] = {}
        self._wake = asyncio.Event()
        self._changed: set[tuple[str, str]] = set()
        """Pods (namespace, name) with events since the last pass of :meth:`_reconcile`."""
        self._look_at_all = True
        """Whether the next pass looks at every pod and the ledger (at start, and after a
        worker ended: its network may be left, its pod's next incarnation may wait)."""
        self._store = store
        self._services = services
        self.proxy: ServiceProxy | None = None
        """The node's service proxy, made when the agent runs (with ``services``)."""
        self.sidecars = (
            # Proxy tokens are signed with the mesh's key for agents, else the key this agent
            # connects with (a standalone agent's is the node agents' key).
            MeshSidecars(store, root=root, options=mesh, node=name,
                         signer=mesh.token_signer or credentials_of(nc))
            if mesh is not None
            else None
        )  # fmt: skip
        self.ingress: IngressGateway | None = None
        """The Gateways' ingress Envoy (with ``mesh``: ``handlers.agent.ingress``)."""

    # -- registration ---------------------------------------------------------------------

    @property
    def network(self) -> PodNetwork:
        """The pod network, decided when the agent starts."""
        if self._pod_network is None:
            raise RuntimeError("the pod network is decided when the agent runs")
        return self._pod_network

    def declaration(self) -> NodeDeclaration:
        enforced, reason, message = self.runtime.limits_condition()
        limits = NodeCondition(
            type="ResourceLimitsEnforced",
            status="True" if enforced else "False",
            reason=reason,
            message=message,
        )
        conditions = [limits]
        if self._store.quarantine:
            # Kubernetes' problem conditions read True when something is wrong (MemoryPressure).
            conditions.append(
                NodeCondition(
                    type="EventsQuarantined",
                    status="True",
                    reason="PoisonEvents",
                    message=self._store.quarantine.summary(),
                )
            )
        if self._pod_network is not None:
            ready, reason, message = self._pod_network.condition()
            conditions.append(
                NodeCondition(
                    type="PodNetworkReady",
                    status="True" if ready else "False",
                    reason=reason,
                    message=message,
                )
            )
        return NodeDeclaration(
            name=self.name,
            capacity=self._capacity or machine_capacity(),
            labels=self._labels,
            conditions=tuple(conditions),
        )

    async def register(self) -> None:
        """Create the Node, or update what the agent states of it (its labels and status),
        through the gateway (unchanged: nothing appended). The spec a user or a controller
        set (a cordon, taints) is kept: the apply is decided against the node as read now,
        and a change that lands in between is read again."""
        declaration = self.declaration()
        ref = AggregateRef("Node", "", self.name)
        attempt = 0
        wait = REGISTER_WAIT_S[0]
        while True:
            # A repository of its own: the recorder's cache must not hold the node as read here.
            loaded = await AggregateRepository(self._store).load(ref, fresh=True)
            node = loaded.aggregate
            current = node.manifest if node is not None and node.exists else None
            try:
                await self._commands.send(
                    "Node", "apply", {"manifest": declaration.registration(current)},
                    idempotency_key=f"register.{self.name}.{time.time_ns()}",
                    expected_version=node.version if current is not None else None,
                )  # fmt: skip
                return
            except (NoGateway, *OUTAGE_ERRORS) as exc:
                # Started before any gateway serves (or while the server is away): wait for one.
                log.info("agent.register_waits", node=self.name, error=repr(exc))
                await asyncio.sleep(wait)
                wait = min(REGISTER_WAIT_S[1], wait * 2)
                continue
            except CommandFailed as exc:
                if exc.code in ("unavailable", "timeout"):  # no outcome: the same again
                    await asyncio.sleep(wait)
                    continue
                attempt += 1
                # Changed (or created) since it was read: read it again.
                if exc.code not in ("conflict", "already_exists") or attempt == REGISTER_ATTEMPTS:
                    raise

    # -- running ----------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Run until cancelled. Cancelling stops the agent, not its containers."""
        self.shipper.start_rotator()  # its interpreter starts while the agent catches up
        if self._pod_network is None:
            self._pod_network = await detect(self.root, self.network_options)
        await self.network.start()
        await self._start_dns()
        try:
            if self.sidecars is not None:
                await self.sidecars.start()
            await self.register()
            leases = await NodeLeases.open(self._nc)
            await leases.renew(self.name, time.time_ns())
            await self.node_projection.catch_up()
            await self.node_projection.follow()
            await self._sync_pod_cidr()
            await self.projection.catch_up()
            await self.projection.follow()
            if self._store.quarantine:
                await self.register()  # what the catch-ups skipped, as the node's condition
            self._adopted = {
                (container.spec.pod_uid, container.spec.name): container
                for container in self.runtime.adopt_all()
            }
            log.info("agent.started", node=self.name, adopted=len(self._adopted))
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._heartbeat(leases))
                tasks.create_task(self.shipper.run())
                tasks.create_task(self._sample_usage())
                tasks.create_task(self._follow_node())
                tasks.create_task(self._report_quarantine())
                tasks.create_task(self._collect_garbage())
                tasks.create_task(PodStreams(self._nc, node=self.name, workers=self.workers).run())
                if self.cluster_dns is not None:
                    tasks.create_task(self._hold_dns_address(self.cluster_dns))
                if self.sidecars is not None:
                    self.ingress = IngressGateway(
                        self._store, node=self.name, root=self.root, sidecars=self.sidecars
                    )
                    tasks.create_task(self.ingress.run())
                if self._services:
                    self.proxy = ServiceProxy(
                        self._store, root=self.root, network=self.network,
                        options=self.network_options,
                    )  # fmt: skip
                    tasks.create_task(self._run_proxy(self.proxy))
                # No container starts (nor is adopted) before its output can be bounded.
                await self.shipper.rotator_ready(ROTATOR_WAIT_S)
                self._reconcile(tasks)
                tasks.create_task(self.resolvers.sweep(self._busy()))
                tasks.create_task(self.resolvers.keep_spares())
                if ready is not None:
                    ready.set()
                while True:
                    checkpoint()
                    await self._wake.wait()
                    self._wake.clear()
                    self._reconcile(tasks)
        finally:
            await asyncio.to_thread(self.shipper.stop_rotator)  # if the shipper never ran
            await self.network.stop()
            if self.sidecars is not None:
                await self.sidecars.stop()
            if self.cluster_dns is not None:
                await self.cluster_dns.stop()
            await self.projection.stop()
            await self.node_projection.stop()

    async def _start_dns(self) -> None:
        """Serve cluster DNS if asked to; else remove an address an earlier agent held."""
        if self.dns_options is None:
            try:
                await ClusterAddress(self.root).remove()
            except OSError as exc:
                log.warning("agent.dns_address_left", error=str(exc))
            return
        self.cluster_dns = ClusterDNS(self._store, self.dns_options, root=self.root)
        await self.cluster_dns.start()
        # Pods are told of it as soon as it listens (as the kubelet is configured with it):
        # its address follows as soon as the node's network is up.
        if self.cluster_dns.listening:
            self.resolvers.cluster_dns = (self.dns_options.address,)

    async def _hold_dns_address(self, cluster_dns: ClusterDNS) -> None:
        await self.network.wait_ready()
        device = self.network_options.bridge if self.network.isolated else "lo"
        if not await cluster_dns.hold_address(device):
            self.resolvers.cluster_dns = ()

    async def _sync_pod_cidr(self) -> None:
        """Give the pod network the node's range; say so again if its condition changed."""
        before = self.network.condition()
        record = self.node_projection.model.get("Node", "", self.name)
        await self.network.set_pod_cidr(assigned_pod_cidr(record.manifest) if record else None)
        if self.cluster_dns is not None:
            # (Re)making the bridge removes addresses it does not know: hold it again.
            held = await self.cluster_dns.refresh_address()
            self.resolvers.cluster_dns = (self.dns_options.address,) if held else ()
        if self.network.condition() != before:
            await self.register()

    async def _report_quarantine(self) -> None:
        """Say again in the node's ``EventsQuarantined`` condition when a poison event was
        skipped live (at most every few seconds: a flood of poison is one update per pause)."""
        seen = len(self._store.quarantine)
        changed = asyncio.Event()
        self._store.quarantine.listeners.append(lambda _entry: changed.set())
        while True:
            checkpoint()
            await changed.wait()
            changed.clear()
            if len(self._store.quarantine) != seen:
                seen = len(self._store.quarantine)
                try:
                    await self.register()
                except Exception as exc:
                    log.warning("agent.condition_not_reported", node=self.name, error=repr(exc))
            await asyncio.sleep(QUARANTINE_REPORT_PAUSE_S)

    async def _follow_node(self) -> None:
        while True:
            checkpoint()
            await self._node_changed.wait()
            self._node_changed.clear()
            try:
                await self._sync_pod_cidr()
            except Exception as exc:
                log.warning("agent.pod_cidr_not_applied", node=self.name, error=repr(exc))

    async def _run_proxy(self, proxy: ServiceProxy) -> None:
        """The service proxy; should it fail, the pods go on and the failure is said."""
        try:
            await proxy.run()
        except Exception as exc:
            log.error("agent.service_proxy_failed", node=self.name, error=repr(exc))

    async def _heartbeat(self, leases: NodeLeases) -> None:
        while True:
            checkpoint()
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await leases.renew(self.name, time.time_ns())
            except Exception as exc:  # during an outage (reported once) every beat would say so
                (log.debug if in_outage(self._nc) else log.warning)(
                    "agent.heartbeat_failed", node=self.name, error=repr(exc)
                )

    async def _sample_usage(self) -> None:
        """Every period: each running container's cpu (millicores over the period) and memory
        (working set), per pod and for the node, onto the metrics stream."""
        capacity = self._capacity or machine_capacity()
        cpu_capacity = resource_amount("cpu", capacity.cpu)
        memory_capacity = resource_amount("memory", capacity.memory)
        while True:
            checkpoint()
            await asyncio.sleep(self.usage_seconds)
            node_cpu = node_memory = pods = 0
            seen: set[tuple[str, str, int]] = set()
            for worker in self.workers():
                containers: dict[str, ContainerUsage] = {}
                for name, running in list(worker.running.items()):
                    try:
                        usage = self.runtime.usage(running)
                    except Exception as exc:  # it may have just exited
                        log.debug("agent.usage_unreadable", pod=worker.key, error=repr(exc))
                        continue
                    instance = (worker.uid, name, running.spec.restart_count)
                    seen.add(instance)
                    before = self._cpu_seen.get(instance)
                    self._cpu_seen[instance] = (usage.cpu_ns, usage.timestamp_ns)
                    millicores = 0
                    if before is not None and usage.timestamp_ns > before[1]:
                        used = usage.cpu_ns - before[0]
                        millicores = max(0, used * 1000 // (usage.timestamp_ns - before[1]))
                    containers[name] = ContainerUsage(millicores, usage.working_set_bytes)
                if containers:
                    pods += 1
                    node_cpu += sum(c.cpu_millicores for c in containers.values())
                    node_memory += sum(c.memory_bytes for c in containers.values())
                    with contextlib.suppress(Exception):
                        await publish_pod_usage(
                            self._nc, namespace=worker.namespace, pod=worker.name,
                            containers=containers, window_s=self.usage_seconds,
                        )  # fmt: skip
            self._cpu_seen = {k: v for k, v in self._cpu_seen.items() if k in seen}
            with contextlib.suppress(Exception):
                await publish_node_usage(
                    self._nc, self.name, cpu_millicores=node_cpu, memory_bytes=node_memory,
                    cpu_capacity_millicores=cpu_capacity, memory_capacity_bytes=memory_capacity,
                    pods=pods, window_s=self.usage_seconds,
                )  # fmt: skip

    def bound_here(self) -> dict[str, ObjectRecord]:
        """The live pods bound to this node that are not finished."""
        return {
            f"{record.namespace}/{record.name}": record
            for record in self.projection.model.list("Pod")
            if self._wanted(record)
        }

    def _pod_changed(self, event: StoredEvent) -> None:
        """A pod's event was folded: the next pass looks at that pod."""
        envelope = event.envelope
        self._changed.add((envelope.namespace, envelope.name))
        self._wake.set()

    def _worker_ended(self, _: asyncio.Task[None]) -> None:
        # Its end is news too: the pod's files may go once it has stopped everything, its
        # network may be left for the sweep, a pod re-created under its name may start.
        self._look_at_all = True
        self._wake.set()

    def _reconcile(self, tasks: asyncio.TaskGroup) -> None:
        """Workers for the pods bound here, terminated for the pods gone. A pass looks at the
        pods whose events came since the last one (a burst's hundred pods made every pass
        walk every pod and every worker: 45-75 ms of the loop per burst), or at everything
        after a worker ended and at start."""
        changed, self._changed = self._changed, set()
        if not self._look_at_all:
            model = self.projection.model
            for namespace, name in changed:
                key = f"{namespace}/{name}"
                held = self._workers.get(key)
                record = model.get("Pod", namespace, name)
                if held is not None:
                    self._look_at(key, *held, record)
                if key not in self._workers and record is not None and self._wanted(record):
                    self._start_worker(tasks, key, record)
            return
        self._look_at_all = False
        desired = self.bound_here()
        for key, (worker, task) in list(self._workers.items()):
            record = self.projection.model.get("Pod", worker.namespace, worker.name)
            self._look_at(key, worker, task, record)
        for key, record in desired.items():
            if key not in self._workers:
                self._start_worker(tasks, key, record)
        # Containers found running at start-up whose pod is no longer bound here: stop them,
        # then remove their pod's network.
        wanted = {record.uid for record in desired.values()}
        orphans: dict[str, list[Container]] = {}
        for (uid, name), container in list(self._adopted.items()):
            if uid not in wanted:
                del self._adopted[(uid, name)]
                orphans.setdefault(uid, []).append(container)
        for uid, containers in orphans.items():
            self._releasing.add(uid)
            tasks.create_task(self._stop_orphan_pod(uid, containers))
        # Networks the ledger holds for pods that are gone, with nothing left running in them.
        busy = self._busy(wanted)
        for uid in self.network.known() - busy:
            self._releasing.add(uid)
            tasks.create_task(self._stop_orphan_pod(uid, []))

    def _look_at(
        self, key: str, worker: PodWorker, task: asyncio.Task[None], record: ObjectRecord | None
    ) -> None:
        """An existing worker: forgotten once it ended, terminated when its pod is gone (or
        re-created), else given the pod as the log now has it."""
        if task.done():
            del self._workers[key]
        elif record is None or record.uid != worker.uid:
            worker.terminate("the pod was deleted")
        else:
            worker.update(record)

    def _wanted(self, record: ObjectRecord) -> bool:
        """Whether a pod is bound to this node and not finished (see :meth:`bound_here`)."""
        manifest = record.manifest
        if manifest.get("spec", {}).get("nodeName") != self.name:
            return False
        return (manifest.get("status") or {}).get("phase") not in TERMINAL_PHASES

    def _start_worker(self, tasks: asyncio.TaskGroup, key: str, record: ObjectRecord) -> None:
        adopted = {
            name: container for (uid, name), container in self._adopted.items() if uid == record.uid
        }
        for name in adopted:
            del self._adopted[(record.uid, name)]
        worker = PodWorker(
            record, node=self.name, runtime=self.runtime, recorder=self.recorder,
            shipper=self.shipper, network=self.network, config=self.config, adopted=adopted,
            resolvers=self.resolvers, pod_config=self.pod_config, sidecars=self.sidecars,
        )  # fmt: skip
        task = tasks.create_task(worker.run())
        task.add_done_callback(self._worker_ended)
        self._workers[key] = (worker, task)

    async def _stop_orphan_pod(self, uid: str, containers: list[Container]) -> None:
        try:
            for container in containers:
                log.info("agent.orphan_stopped", pod_uid=uid, container=container.spec.name)
                with contextlib.suppress(Exception):
                    await self.runtime.stop(container, self.config.orphan_grace_seconds)
                with contextlib.suppress(Exception):
                    self.runtime.remove(container)
            try:
                await self.network.detach(uid)
                await self.resolvers.remove(uid)
            except Exception as exc:
                log.warning("agent.pod_network_left", pod_uid=uid, error=repr(exc))
        finally:
            self._releasing.discard(uid)
            # What is left (a network that could not be removed) is tried again by the next
            # pass, as every pass did before passes looked only at the pods that changed.
            self._look_at_all = True

    def _busy(self, wanted: set[str] | None = None) -> set[str]:
        """The pods (by uid) that are wanted here, have a worker, or are being released."""
        if wanted is None:
            wanted = {record.uid for record in self.bound_here().values()}
        return wanted | {worker.uid for worker, _ in self._workers.values()} | self._releasing

    async def _collect_garbage(self) -> None:
        passes = 0
        while True:
            checkpoint()
            try:
                self.remove_garbage(time.monotonic(), instances=passes % STALE_INSTANCES_EVERY == 0)
            except OSError as exc:
                log.warning("agent.pod_files_left", error=str(exc))
            passes += 1
            await asyncio.sleep(self.garbage_seconds)

    def remove_garbage(self, now: float, *, instances: bool = True) -> list[str]:
        """Remove the files of pods that are gone (see the module docstring) and, with
        ``instances``, the stale instances of the others' containers; the uids of the pods
        whose files went."""
        pods = self.root / "pods"
        try:
            with os.scandir(pods) as entries:
                present = {entry.name for entry in entries if entry.is_dir()}
        except FileNotFoundError:
            return []
        keep = self._busy() | {uid for uid, _ in self._adopted}
        candidates = present - keep
        if candidates:
            keep |= {
                record.uid
                for record in self.projection.model.list("Pod")
                if (record.manifest.get("spec") or {}).get("nodeName") == self.name
            }
        removed = []
        for uid in sorted(present - keep):
            directory = pods / uid
            if _holds_containers(directory):
                continue  # the runtime still knows a container there: never pull it away
            since = self._garbage_seen.setdefault(uid, now)
            if self.shipper.tracks_under(directory) and now - since < SHIPPING_GRACE_S:
                continue
            shutil.rmtree(directory, ignore_errors=True)
            self._garbage_seen.pop(uid, None)
            removed.append(uid)
            log.info("agent.pod_files_removed", pod_uid=uid)
        self._garbage_seen = {u: t for u, t in self._garbage_seen.items() if u in present}
        if instances:
            for uid in present & keep:
                self._remove_stale_instances(pods / uid)
        return removed

    def _remove_stale_instances(self, pod: Path) -> None:
        """Of each container of a pod, the instances older than the newest two (whose output
        has been shipped and whose process is gone)."""
        for container in pod.iterdir():
            if not container.is_dir():
                continue
            instances = {int(p.name): p for p in container.iterdir() if p.name.isdigit()}
            for restart in stale_instances(instances):
                directory = instances[restart]
                if _holds_containers(directory, instance=True):
                    continue
                if self.shipper.tracks_under(directory):
                    continue
                shutil.rmtree(directory, ignore_errors=True)

    def workers(self) -> list[PodWorker]:
        """The pod workers now (a copy: callers await between items while pods come and go)."""
        return [worker for worker, _ in self._workers.values()]


def _holds_containers(directory: Path, *, instance: bool = False) -> bool:
    """Whether a container the runtime has not removed yet has its state in ``directory`` (a
    pod's, or with ``instance`` one instance's): ``container.json``, written at start, removed
    when the instance is removed. (Not a recursive walk: working directories may be big.)"""
    from handlers.agent.runtime import STATE_FILE

    if instance:
        return (directory / STATE_FILE).exists()
    return any(directory.glob(f"*/*/{STATE_FILE}"))


def _whole(quantity: str) -> int | None:
    """A pod count as declared (``"110"``), or None when it is not a whole number."""
    try:
        return int(quantity)
    except ValueError:
        return None

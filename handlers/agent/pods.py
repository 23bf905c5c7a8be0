"""One pod on a node: its containers run, probed, restarted with back-off, and stopped.

Why this exists: this is the kubelet's pod worker, with the decisions (probe thresholds,
CrashLoopBackOff, restart policy, phase) taken from ``core.pods.lifecycle`` and every outcome
recorded on the pod's aggregate as an event, so ``describe pod`` and the audit trail tell the
whole story. One task per container runs start → wait → decide; a probe task per container
feeds its tracker and may ask for a restart (liveness, startup) or flip readiness; the pod is
Ready when every container is. The worker stops its containers only when the pod is deleted
(or re-created under the same name); when the agent stops, the containers keep running and
the next agent adopts them.

Before any container starts, the pod gets its network (``handlers.agent.network``: its own
namespace and address, or the node's network) and its host ports (``hostports``). The
addresses are recorded on the pod (``PodIPAssigned``: ``status.podIP``, ``hostIP``) while its
containers start, not before: a burst of pods would otherwise wait a round trip to the log
each between its address and its first process; every later step of the pod is appended
after the addresses, so the log's order is unchanged. The containers run in that namespace;
probes reach them at the pod's address. The network is
removed when the pod is deleted or finishes, never when the agent merely stops.

A pod resized in place (``PodResized``: new desired resources) is admitted here as the
kubelet admits it (``core.pods.resize``): against the node's allocatable and what the other
pods hold on its ledger, then either recorded allocated together with the ledger's new
reservation (``PodResizeAllocated``) or refused for now (``PodResizePending``, Infeasible or
Deferred; a deferred resize is tried again every few seconds and on every change of the pod).
An allocated resize is applied to the running instances' cgroups in place, or by restarting the
containers whose ``resizePolicy`` asks for it, and what the cgroups then hold is recorded
(``PodResizeActuated``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from core.api.causation import caused_by_event
from core.config.consume import ConfigSources, ConfigUnavailable
from core.errors import FleetError
from core.mesh.injection import SIDECAR_CONTAINER
from core.meta.aggregate import Resource, aggregate_id, timestamp_from_ns
from core.meta.quantity import resource_amount
from core.nodes.aggregate import Node
from core.pods.aggregate import Pod
from core.pods.decisions import allocate_resize, finish_pod, pod_key
from core.pods.lifecycle import (
    RESIZE_RESTART,
    BackoffState,
    ContainerHealth,
    ContainerOutcome,
    ContainerProbes,
    CrashLoopBackOff,
    exit_reason,
    pod_phase,
    probes_of,
    should_restart,
)
from core.pods.resize import (
    DEFERRED,
    ERROR,
    ContainerResize,
    desired_resources,
    plan_container,
    resize_admission,
)
from core.scheduling.model import PodInfo
from handlers.agent.cgroups import CgroupError, Limits
from handlers.agent.hostports import HostPortForwarder, host_ports
from handlers.agent.logship import ContainerInstance
from handlers.agent.network import NetworkError, NetworkNotReady, PodAddresses
from handlers.agent.podconfig import (
    PodConfigClient,
    container_mounts,
    write_volumes,
)
from handlers.agent.poddns import PodResolvers
from handlers.agent.probes import run_probe
from handlers.agent.seams import Container, ContainerRuntime, LogSink, PodNetwork
from projections.cluster import ClusterModel, ObjectRecord
from streams.cancellation import checkpoint
from streams.decide import Append, Attempt, decide_and_append
from streams.eventstore import ConcurrencyConflict, StoreError
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef

if TYPE_CHECKING:
    from handlers.agent.runtime import ContainerSpec, ExitStatus
    from handlers.agent.sidecar import MeshSidecars

log = structlog.get_logger(__name__)

RECORD_ATTEMPTS = 5
DEFAULT_GRACE_S = 30
NETWORK_RETRY_S = 2.0
CONFIG_RETRY_S = 2.0
"""How often a container waiting for a ConfigMap or Secret asks again (the kubelet retries
its pod sync on a back-off of its own)."""
CONFIG_ERROR = "CreateContainerConfigError"
RESIZE_RETRY_S = 2.0
"""How often a Deferred resize is admitted again (the kubelet retries on every pod sync)."""
RESIZE_RESTART_WAIT_S = 60.0
"""How long a resize that restarts containers waits for their new instances before it
records what it has (the restart goes on; the next status tells the rest)."""


@dataclass(frozen=True)
class WorkerConfig:
    """Durations of the kubelet's CrashLoopBackOff (initial delay, cap; the reset is twice
    the cap), configurable so tests need not wait minutes."""

    backoff_initial_seconds: float = 10.0
    backoff_cap_seconds: float = 300.0
    orphan_grace_seconds: float = 5.0
    probe_host: str = "127.0.0.1"
    node_allocatable: dict[str, str] = field(default_factory=dict)
    """What ``resourceFieldRef`` reads for a limit a container does not set (the kubelet's
    node allocatable)."""


class PodStep(Protocol):
    """What a worker decides about its pod, as of ``at``: ``pod.start_container(...)`` and the
    like. It raises ``FleetError`` when the pod's state refuses it."""

    def __call__(self, pod: Pod, at: datetime) -> None: ...


class NodeStep(Protocol):
    """A decision on the pod and its node together (a resize's admission): ``node`` is the
    node's aggregate (None if it is gone)."""

    def __call__(self, pod: Pod, node: Resource | None, at: datetime) -> None: ...


class PodRecorder:
    """Appends what happens to a pod on its aggregate, as the node that saw it.

    The write token is the pod's uid, the version the step was decided on, and the step: an
    agent restarted mid-write that decides the same step again writes the same token, which
    the store recognises as its own, so a step is never recorded twice.
    """

    def __init__(
        self,
        repository: AggregateRepository,
        *,
        actor: str,
        node: str,
        model: ClusterModel | None = None,
    ) -> None:
        """``model``: the agent's read model of the pods, folded from the log: a pod is
        decided on as the model holds it (with its last event's sequence and hash) instead
        of its history read again from the log, as the scheduler decides its bindings. A
        stale model costs a lost race (the append's expectation), then a read of the log."""
        self._repository = repository
        self.actor = actor
        self.node = node
        self._model = model

    async def record(
        self,
        namespace: str,
        name: str,
        *,
        step: str,
        decide: PodStep,
        release_on: str | None = None,
    ) -> bool:
        """Let ``decide`` change the pod; append what it decided. False if the pod is gone or
        nothing was decided. With ``release_on``, the step finishes the pod and its reservation
        on that node is given back in the same atomic append (``core.pods.decisions``)."""
        ref = AggregateRef("Pod", namespace, name)
        node_ref = AggregateRef("Node", "", release_on) if release_on else None

        async def record(attempt: Attempt) -> Append | None:
            loaded = attempt[ref]
            pod = loaded.aggregate
            if not isinstance(pod, Pod) or not pod.exists:
                return None
            host = attempt[node_ref] if node_ref is not None else None
            seen = pod.version
            now = time.time_ns()
            if host is None:
                decide(pod, timestamp_from_ns(now))
            else:
                finish_pod(pod, host.aggregate, finish=decide, at=timestamp_from_ns(now))
            token = f"agent.{self.node}.{pod.uid}.{seen}.{step}"
            return Append(
                changes=[loaded] if host is None else [loaded, host],
                provenance=Provenance(
                    actor=self.actor,
                    correlation_id=token,
                    causation_id=caused_by_event(loaded.last_seq),
                    token=token,
                    now_ns=now,
                ),
            )

        refs = [ref] if node_ref is None else [ref, node_ref]
        await self._as_seen(ref)
        try:
            decided = await decide_and_append(
                self._repository, refs, record, attempts=RECORD_ATTEMPTS
            )
        except ConcurrencyConflict as exc:
            raise FleetError(f"{ref} kept changing while {step} was recorded") from exc
        return bool(decided.written)

    async def _as_seen(self, ref: AggregateRef) -> None:
        """The pod as the read model holds it, in the repository's cache unless the cache
        has it as new already (this agent's own last write): its first step here (a burst's
        hundred pods) then costs no read of the log and no fold of its history."""
        model = self._model
        record = model.get("Pod", ref.namespace, ref.name) if model is not None else None
        if record is None or not record.last_hash:
            return  # unknown to the model, or of events before hashes: read from the log

        def build() -> Resource:
            return Pod.from_snapshot(
                aggregate_id("Pod", ref.namespace, ref.name), manifest=record.manifest,
                uid=record.uid, version=record.version, at=timestamp_from_ns(record.updated_ns),
            )  # fmt: skip

        await self._repository.adopt(ref, build, record.last_seq, record.last_hash)

    async def record_on_node(
        self, namespace: str, name: str, *, step: str, decide: NodeStep
    ) -> bool:
        """Let ``decide`` change the pod and this node's aggregate; append both in one atomic
        write (an expectation on each: a scheduler binding meanwhile makes it decide again).
        False if the pod is gone or nothing was decided."""
        ref = AggregateRef("Pod", namespace, name)
        node_ref = AggregateRef("Node", "", self.node)

        async def record(attempt: Attempt) -> Append | None:
            loaded, host = attempt[ref], attempt[node_ref]
            pod = loaded.aggregate
            if not isinstance(pod, Pod) or not pod.exists:
                return None
            seen = pod.version
            now = time.time_ns()
            decide(pod, host.aggregate, timestamp_from_ns(now))
            token = f"agent.{self.node}.{pod.uid}.{seen}.{step}"
            return Append(
                changes=[loaded, host],
                provenance=Provenance(
                    actor=self.actor,
                    correlation_id=token,
                    causation_id=caused_by_event(loaded.last_seq),
                    token=token,
                    now_ns=now,
                ),
            )

        try:
            # Fresh from the log: this node's read model follows pods only, so a cached node
            # could miss a reservation given back since (a Deferred resize would never see it).
            decided = await decide_and_append(
                self._repository, [ref, node_ref], record, attempts=RECORD_ATTEMPTS,
                start_fresh=True,
            )  # fmt: skip
        except ConcurrencyConflict as exc:
            raise FleetError(f"{ref} kept changing while {step} was recorded") from exc
        return bool(decided.written)


class PodWorker:
    """Runs one pod's containers on this node until the pod finishes or is deleted."""

    def __init__(
        self,
        record: ObjectRecord,
        *,
        node: str,
        runtime: ContainerRuntime,
        recorder: PodRecorder,
        shipper: LogSink,
        network: PodNetwork,
        config: WorkerConfig,
        adopted: dict[str, Container],
        resolvers: PodResolvers | None = None,
        pod_config: PodConfigClient | None = None,
        sidecars: MeshSidecars | None = None,
    ) -> None:
        """``pod_config``: where the values of the pod's ConfigMaps and Secrets are asked
        for (without it, a reference to one is a missing object); ``sidecars``: the node's
        mesh, which starts a meshed pod's Envoy (``handlers.agent.sidecar``)."""
        self.namespace = record.namespace
        self.name = record.name
        self.uid = record.uid
        self.manifest = record.manifest
        self.node = node
        self._runtime = runtime
        self._recorder = recorder
        self._shipper = shipper
        self._network = network
        self._config = config
        self.addresses: PodAddresses | None = None
        """The pod's network, once it has one."""
        self._resolvers = resolvers
        self._launch_netns: str | None = None
        """The network namespace its containers enter: the pod's, or (a host-network pod
        with a resolver of its own) an alias of the node's (``poddns``)."""
        self._forwarder: HostPortForwarder | None = None
        self._ip_recorded: asyncio.Task[bool] | None = None
        """The append of the pod's addresses, under way while its containers start."""
        self._adopted = dict(adopted)
        self._terminating = asyncio.Event()
        self._termination_reason = ""
        self._ready: dict[str, bool] = {}
        self._ready_lock = asyncio.Lock()
        self._outcomes: dict[str, ContainerOutcome] = {}
        self.running: dict[str, Container] = {}
        """Container name -> its running instance (for usage sampling)."""
        self._pod_config = pod_config
        self._sidecars = sidecars
        self.sidecar: Container | None = None
        """The pod's running ``istio-proxy``, if it is meshed."""
        self._sidecar_task: asyncio.Task[None] | None = None
        """Keeps the sidecar running (:meth:`_sidecar_loop`) while the pod's containers run."""
        self._sidecar_started_at: float | None = None
        self._sources = ConfigSources(namespace=self.namespace)
        self._volumes: dict[str, Path] = {}
        self._waiting_for: dict[str, tuple[str, str]] = {}
        self._waits = 0
        self._configured_at: dict[str, int] = {}
        """The restart count of each container whose start last read the configuration."""
        self._config_problem: str | None = None
        """Why the pod's configMap or secret volumes cannot be made, if they cannot."""
        self._allocated: dict[str, dict[str, Any]] = self._initial_allocation()
        """Container name -> the resources this node admitted for it (the KEP's allocated
        resources: what its instances run with)."""
        self._resize_wake = asyncio.Event()
        self._restarts: dict[str, asyncio.Future[str]] = {}
        """Container name -> how to ask its running instance's watch to restart it."""
        self._unapplied: tuple[dict[str, dict[str, Any]], str] | None = None
        """After an ``Error`` resize: (what the cgroups hold, as recorded; the error
        recorded), until it is applied."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest.get("spec", {})

    def update(self, record: ObjectRecord) -> None:
        self.manifest = record.manifest
        if self._resizable() != self._allocated:
            self._resize_wake.set()

    def terminate(self, reason: str) -> None:
        if not self._terminating.is_set():
            self._termination_reason = reason
            self._terminating.set()

    # -- the pod ------------------------------------------------------------------------------

    async def run(self) -> None:
        containers = list(self.spec.get("containers") or [])
        self._ready = {c["name"]: False for c in containers}
        while True:
            await self._configure()
            unrunnable = self._unrunnable(containers)
            if not unrunnable:
                break
            # A missing ConfigMap or Secret may yet be created: the kubelet keeps trying.
            retry = all(reason == CONFIG_ERROR for _, reason, _ in unrunnable)
            wait = CONFIG_RETRY_S if retry else None
            if not await self._cannot_run(unrunnable, retry_after=wait):
                return
        resizer: asyncio.Task[None] | None = None
        try:
            if await self._network_up() is None:
                return  # deleted while it waited for the node's network
            await self._sidecar_up()
            resizer = asyncio.create_task(self._resizer())
            async with asyncio.TaskGroup() as tasks:
                for container in containers:
                    tasks.create_task(self._container(container))
            # Native sidecar order: the sidecar stops after every container of the pod.
            await self._sidecar_down()
            if not self._terminating.is_set():
                await self._record_phase()
        finally:
            if self._sidecar_task is not None:
                # The agent stops: the sidecar keeps running for the next agent to adopt.
                self._sidecar_task.cancel()
                await asyncio.gather(self._sidecar_task, return_exceptions=True)
                self._sidecar_task = None
            if resizer is not None:
                resizer.cancel()
                await asyncio.gather(resizer, return_exceptions=True)
            if self._ip_recorded is not None and not self._ip_recorded.done():
                self._ip_recorded.cancel()  # the worker was cancelled (the agent stops)
                await asyncio.gather(self._ip_recorded, return_exceptions=True)
            # Host ports are the agent's sockets: they go with this worker either way. The
            # namespace stays when the agent merely stops (cancelled): the pod still runs.
            if self._forwarder is not None:
                await self._forwarder.close()
                self._forwarder = None
        await self._network_down()

    async def _record_phase(self) -> None:
        policy = self.spec.get("restartPolicy", "Always")
        phase = pod_phase(policy, list(self._outcomes.values()))
        codes = ", ".join(f"{name}={o.exit_code}" for name, o in self._outcomes.items())
        if phase == "Succeeded":
            await self._finish("succeeded", lambda pod, at: pod.succeed(
                reason="Completed", message=f"exit codes: {codes}", at=at))  # fmt: skip
        elif phase == "Failed":
            await self._finish("failed", lambda pod, at: pod.fail(
                reason="Error", message=f"exit codes: {codes}", at=at))  # fmt: skip

    # -- the network ----------------------------------------------------------------------------

    async def _network_up(self) -> PodAddresses | None:
        """The pod's network, host ports and ``resolv.conf``; waits while the node has no
        network for pods yet; None if the pod was deleted meanwhile. The addresses are being
        recorded on the pod when this returns: its containers start meanwhile (their
        environment has the addresses already), and every later step is recorded after them
        (:meth:`_after_addresses`), so the log still says IP assigned, then started."""
        host_network = bool(self.spec.get("hostNetwork"))
        waiting_logged = False
        while True:
            if self._terminating.is_set():
                return None
            try:
                addresses = await self._network.attach(
                    uid=self.uid, namespace=self.namespace, name=self.name,
                    host_network=host_network,
                )  # fmt: skip
                break
            except NetworkNotReady as exc:
                if not waiting_logged:
                    log.info("agent.pod_network_waiting", pod=self.key, reason=str(exc))
                    waiting_logged = True
                await self._until_terminating(self._network.wait_ready())
            except NetworkError as exc:
                log.warning("agent.pod_network_failed", pod=self.key, error=str(exc))
                await self._until_terminating(asyncio.sleep(NETWORK_RETRY_S))
        self.addresses = addresses
        notes = [addresses.message] if addresses.message else []
        ports = host_ports(self.spec)
        if ports:
            target = addresses.pod_ip if not addresses.host_network else "127.0.0.1"
            self._forwarder = HostPortForwarder(target)
            notes += await self._forwarder.open(ports, own_network=not addresses.host_network)
        for note in notes:
            log.warning("agent.pod_network_note", pod=self.key, note=note)
        self._ip_recorded = asyncio.ensure_future(self._write(
            "ip",
            lambda pod, at: pod.assign_ips(
                node=self.node, pod_ips=[addresses.pod_ip], host_ip=addresses.host_ip,
                host_network=addresses.host_network, message="; ".join(notes), at=at,
            ),
        ))  # fmt: skip
        # The pod's resolv.conf after its address is on its way to the log: its write waits
        # for a worker thread, which a burst's container starts keep busy.
        self._launch_netns = await self._resolver_up(addresses)
        return addresses

    async def _sidecar_up(self) -> None:
        """A meshed pod's Envoy, started (or adopted) before its containers and ready when
        its configuration has come, so their first connection goes through it. From then on
        :meth:`_sidecar_loop` keeps it running (restarted with the containers' back-off)
        until :meth:`_sidecar_down`."""
        from handlers.agent.sidecar import READY_TIMEOUT_S

        adopted = self._adopted.pop(SIDECAR_CONTAINER, None)
        addresses, sidecars = self.addresses, self._sidecars
        if (
            sidecars is None
            or addresses is None
            or addresses.host_network
            or addresses.netns is None
            or not sidecars.wanted(self.manifest)
        ):
            self.sidecar = adopted  # stopped with the pod, if it was left running
            return
        # As Istio's injected container: the pod is Ready only once its sidecar is too.
        self._ready[SIDECAR_CONTAINER] = False
        settled = asyncio.Event()
        self._sidecar_task = asyncio.create_task(
            self._sidecar_loop(sidecars, addresses, adopted, settled)
        )
        self._sidecar_task.add_done_callback(self._sidecar_loop_ended)
        waiting = asyncio.ensure_future(settled.wait())
        try:
            await asyncio.wait(
                [waiting, self._sidecar_task], timeout=READY_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
        finally:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
        if not settled.is_set() and not self._sidecar_task.done():
            log.warning("agent.sidecar_not_ready", pod=self.key,
                        error="no configuration from the mesh-push handler in time")  # fmt: skip

    def _sidecar_loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Never silently: the pod stays not Ready without its sidecar.
            log.error("agent.sidecar_loop_failed", pod=self.key, error=repr(task.exception()))

    async def _sidecar_loop(
        self,
        sidecars: MeshSidecars,
        addresses: PodAddresses,
        adopted: Container | None,
        settled: asyncio.Event,
    ) -> None:
        """start → ready → exit → back-off → start again, as for a container with
        ``restartPolicy: Always`` (a native sidecar's, whatever the pod's), each step recorded
        on the pod as ``istio-proxy``'s. The capture stays in place while Envoy is down: the
        pod's connections fail rather than bypass the mesh, as with Istio. Cancelled, it
        leaves the running instance alone (the agent stops; :meth:`_sidecar_down` stops it)."""
        from handlers.agent.runtime import ContainerStartError, ExitStatus
        from handlers.agent.sidecar import SidecarUnavailable

        assert addresses.netns is not None
        name = SIDECAR_CONTAINER
        crash_loop = CrashLoopBackOff(
            self._config.backoff_initial_seconds, self._config.backoff_cap_seconds
        )
        backoff = BackoffState()
        running = adopted
        restart_count, pending_exit = await self._resume(name, adopted is not None)
        if adopted is not None:
            restart_count = adopted.spec.restart_count
            self._shipper.track(self._instance(adopted))
        while True:
            checkpoint()
            status: ExitStatus | None = None
            if pending_exit is None:
                if running is None:
                    try:
                        running = await sidecars.start_sidecar(
                            self._runtime, uid=self.uid, namespace=self.namespace,
                            name=self.name, pod_ip=addresses.pod_ip, netns=addresses.netns,
                            labels=dict((self.manifest.get("metadata") or {}).get("labels") or {}),
                            restart_count=restart_count, keep_capture=restart_count > 0,
                        )  # fmt: skip
                    except ContainerStartError as exc:
                        status = exc.status
                    except (SidecarUnavailable, OSError) as exc:
                        if restart_count == 0:
                            # No mesh here (no handler, no nft): the pod runs un-meshed.
                            log.warning("agent.sidecar_not_started", pod=self.key, error=str(exc))
                            await self._set_ready(name, True)
                            del self._ready[name]
                            settled.set()
                            return
                        status = ExitStatus(
                            exit_code=128, signal=None, oom_killed=False,
                            finished_ns=time.time_ns(), reason="StartError", message=str(exc),
                        )  # fmt: skip
                    if status is not None:
                        await self._record_sidecar_failure(restart_count, status)
                    else:
                        assert running is not None
                        log.info("agent.sidecar_started", pod=self.key, restarts=restart_count)
                        self._shipper.track(self._instance(running))
                        await self._record(
                            f"start-{name}-{restart_count}",
                            functools.partial(
                                _start, container=name, restart_count=restart_count,
                                node=self.node,
                            ),
                        )  # fmt: skip
                if running is not None:
                    self.sidecar = running
                    status = await self._sidecar_run(sidecars, running, settled)
                    self.sidecar = None
                    log.warning("agent.sidecar_exited", pod=self.key, exit_code=status.exit_code)
                    await self._exited(running, status)
                    running = None
            finished_at = status.finished_ns / 1e9 if status is not None else time.time()
            pending_exit = None
            await self._set_ready(name, False)
            started_at = self._sidecar_started_at or finished_at
            delay, backoff = crash_loop.delay_before_restart(backoff, started_at, finished_at)
            restart_count += 1
            code = status.exit_code if status is not None and status.exit_code is not None else 137
            await self._record(
                f"restart-{name}-{restart_count}",
                functools.partial(
                    _restart, container=name, restart_count=restart_count, backoff_seconds=delay,
                    reason=exit_reason(code, None, False), node=self.node,
                ),
            )  # fmt: skip
            await asyncio.sleep(delay)

    async def _sidecar_run(
        self, sidecars: MeshSidecars, running: Container, settled: asyncio.Event
    ) -> ExitStatus:
        """Until this Envoy exits: its readiness (its configuration came) recorded as it
        comes."""
        self._sidecar_started_at = running.started_ns / 1e9

        async def ready() -> None:
            if await sidecars.until_ready(self.uid, timeout=math.inf):
                await self._set_ready(SIDECAR_CONTAINER, True)
                settled.set()

        watching = asyncio.ensure_future(ready())
        try:
            return await self._runtime.wait(running)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)

    async def _record_sidecar_failure(self, restart_count: int, status: ExitStatus) -> None:
        """An Envoy that could not start, recorded as a container's failed start."""
        name = SIDECAR_CONTAINER
        code = status.exit_code if status.exit_code is not None else 128
        log.warning("agent.sidecar_not_started", pod=self.key, error=status.message)
        self._sidecar_started_at = status.finished_ns / 1e9
        await self._record(
            f"exit-{name}-{restart_count}",
            lambda pod, at: pod.exit_container(
                container=name, exit_code=code, reason=status.reason or "StartError",
                node=self.node, restart_count=restart_count, message=status.message, at=at,
            ),
        )  # fmt: skip

    async def _sidecar_down(self) -> None:
        """After every container of the pod stopped (native sidecar order), or when the pod
        goes: the restart loop ends and the running Envoy is stopped, its exit recorded."""
        task, self._sidecar_task = self._sidecar_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        running, self.sidecar = self.sidecar, None
        if running is not None:
            grace = float(self.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S))
            status = None
            with contextlib.suppress(Exception):
                status = await self._runtime.stop(running, grace)
            if status is not None and task is not None:
                await self._exited(running, status)  # its status ends terminated, as kube's
            else:
                self._shipper.finish(self._instance(running))
                with contextlib.suppress(Exception):
                    self._runtime.remove(running)
        if self._sidecars is not None and (running is not None or task is not None):
            self._sidecars.remove(self.uid)

    async def _resolver_up(self, addresses: PodAddresses) -> str | None:
        """The pod's ``resolv.conf`` (its ``dnsPolicy``), before its first container."""
        if self._resolvers is None:
            return addresses.netns
        try:
            return await self._resolvers.prepare(
                uid=self.uid, namespace=self.namespace, name=self.name, spec=self.spec,
                netns=addresses.netns,
            )  # fmt: skip
        except OSError as exc:
            log.warning("agent.pod_resolver_failed", pod=self.key, error=str(exc))
            return addresses.netns

    async def _until_terminating(self, waited: Any) -> None:
        """Await ``waited`` (a coroutine) or the pod's termination, whichever comes first."""
        waiting = asyncio.ensure_future(waited)
        stopping = asyncio.ensure_future(self._terminating.wait())
        try:
            await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, stopping):
                task.cancel()
            await asyncio.gather(waiting, stopping, return_exceptions=True)

    async def _network_down(self) -> None:
        """The pod is gone or finished and its containers have stopped: remove its network."""
        try:
            await self._network.detach(self.uid)
        except (NetworkError, OSError) as exc:
            # The agent's sweep of its ledger tries again.
            log.warning("agent.pod_network_left", pod=self.key, error=str(exc))
        if self._resolvers is not None:
            try:
                await self._resolvers.remove(self.uid)
            except OSError as exc:
                log.warning("agent.pod_resolver_left", pod=self.key, error=str(exc))

    @property
    def probe_host(self) -> str:
        """Where HTTP and TCP probes connect: the pod's own address when it has a namespace
        (Kubernetes probes the pod IP), else the node's loopback."""
        addresses = self.addresses
        if addresses is not None and not addresses.host_network:
            return addresses.pod_ip
        return self._config.probe_host

    @property
    def probe_netns(self) -> str | None:
        """Where HTTP and TCP probes connect from: the pod's own network namespace, if it has
        one (``handlers.agent.probes``: a meshed pod's capture lets ``lo`` pass, so a probe
        reaches the application even under STRICT mTLS), else the node's."""
        addresses = self.addresses
        if addresses is not None and not addresses.host_network:
            return addresses.netns
        return None

    async def _finish(self, step: str, decide: PodStep) -> bool:
        """Record the pod finished and give its node's reservation back, in one append: a
        Succeeded or Failed pod holds no resources (Kubernetes frees them for scheduling)."""
        await self._after_addresses()
        return await self._write(step, decide, release_on=self.node)

    async def _record(self, step: str, decide: PodStep) -> bool:
        """Record a step; a refusal (the pod was deleted or finished meanwhile) is logged and
        the worker carries on: the agent terminates it when the log says the pod is gone."""
        await self._after_addresses()
        return await self._write(step, decide)

    async def _after_addresses(self) -> None:
        """Until the pod's addresses are recorded (or could not be): what happens after
        them is recorded after them."""
        if self._ip_recorded is not None:
            await asyncio.shield(self._ip_recorded)

    async def _write(self, step: str, decide: PodStep, *, release_on: str | None = None) -> bool:
        try:
            return await self._recorder.record(
                self.namespace, self.name, step=step, decide=decide, release_on=release_on
            )
        except (FleetError, StoreError, TimeoutError) as exc:
            log.warning("agent.step_not_recorded", pod=self.key, step=step, error=str(exc))
            return False

    # -- one container ------------------------------------------------------------------------

    async def _configure(self) -> None:
        """The values of the pod's ConfigMaps and Secrets, from the control plane, and its
        configMap and secret volumes written (``handlers.agent.podconfig``)."""
        self._config_problem = None
        if self._pod_config is None:
            return
        try:
            self._sources = await self._pod_config.fetch(self.manifest)
            if not self.spec.get("volumes"):
                # Nothing to write: no trip through a worker thread (in a burst, a hundred
                # such trips each waited for the interpreter lock and the loop's next turn).
                self._volumes = {}
                return
            directory = self._pod_config.volumes_dir(self.uid)
            self._volumes = await asyncio.to_thread(
                write_volumes, directory, self.manifest, self._sources
            )
        except ConfigUnavailable as exc:
            self._config_problem = str(exc)

    def _mounts(self, container: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        mounts = container_mounts(container, self._volumes)
        for source, target in mounts:
            # The mount point must exist in the view bound over (bwrap cannot make one in a
            # read-only root): an empty directory (an empty file for a subPath that is a
            # file), as a container runtime makes in a rootfs.
            point = Path(target)
            if Path(source).is_file():
                point.parent.mkdir(parents=True, exist_ok=True)
                point.touch(exist_ok=True)
            else:
                point.mkdir(parents=True, exist_ok=True)
        return mounts

    def _container_spec(self, container: dict[str, Any], restart_count: int) -> ContainerSpec:
        from core.pods.downward import (
            ContainerConfigError,
            PodFacts,
            container_environment,
            expanded_argv,
        )
        from handlers.agent.runtime import ContainerSpec, ContainerStartError, ExitStatus

        limits = (container.get("resources") or {}).get("limits") or {}
        requests = (container.get("resources") or {}).get("requests") or {}
        addresses = self.addresses
        facts = PodFacts(
            manifest=self.manifest,
            pod_ip=addresses.pod_ip if addresses is not None else None,
            host_ip=addresses.host_ip if addresses is not None else None,
            node_name=self.node,
            node_allocatable=self._config.node_allocatable,
            config=self._sources,
        )
        try:
            if self._config_problem is not None:
                raise ContainerConfigError(self._config_problem)
            env = container_environment(container, facts)
        except ContainerConfigError as exc:
            raise ContainerStartError(
                ExitStatus(
                    exit_code=None, signal=None, oom_killed=False, finished_ns=time.time_ns(),
                    reason="CreateContainerConfigError", message=str(exc),
                )
            ) from exc  # fmt: skip
        argv = expanded_argv(container, env)
        isolate = (self.manifest.get("metadata", {}).get("annotations") or {}).get(
            "fleetlog.dev/isolation"
        ) == "bubblewrap"
        return ContainerSpec(
            pod_uid=self.uid,
            pod_namespace=self.namespace,
            pod_name=self.name,
            name=container["name"],
            restart_count=restart_count,
            argv=argv,
            env=env,
            working_dir=container.get("workingDir"),
            cpu_limit_millis=resource_amount("cpu", limits["cpu"]) if "cpu" in limits else None,
            memory_limit_bytes=(
                resource_amount("memory", limits["memory"]) if "memory" in limits else None
            ),
            cpu_request_millis=(
                resource_amount("cpu", requests["cpu"]) if "cpu" in requests else None
            ),
            isolate=isolate,
            netns=self._launch_netns,
            mounts=self._mounts(container),
        )

    def _status(self, name: str) -> dict[str, Any]:
        for status in (self.manifest.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == name:
                return dict(status)
        return {}

    async def _container(self, container: dict[str, Any]) -> None:
        """start → watch → record the exit → restart (after the back-off) or end."""
        name = container["name"]
        policy = self.spec.get("restartPolicy", "Always")
        grace = float(self.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S))
        crash_loop = CrashLoopBackOff(
            self._config.backoff_initial_seconds, self._config.backoff_cap_seconds
        )
        backoff = BackoffState()
        probes = probes_of(container)
        running = self._adopted.pop(name, None)
        restart_count, pending_exit = await self._resume(name, running is not None)
        while True:
            checkpoint()
            if pending_exit is None:
                if running is None:
                    if restart_count > self._configured_at.get(name, 0):
                        # A restart reads the pod's ConfigMaps and Secrets as they are now,
                        # as the kubelet does.
                        await self._configure()
                    self._configured_at[name] = restart_count
                    running = await self._start(container, restart_count)
                    if running is None:  # it could not start: recorded as an exit
                        pending_exit = self._outcomes[name]
                if running is not None:
                    started_at = running.started_ns / 1e9
                    self._outcomes[name] = ContainerOutcome("running")
                    self.running[name] = running
                    restart_reason, status = await self._watch(
                        running, probes=probes, grace=grace, policy=policy
                    )
                    self.running.pop(name, None)
                    await self._exited(running, status)
                    running = None
                    pending_exit = ContainerOutcome("terminated", status.exit_code)
                    finished_at = status.finished_ns / 1e9
                else:
                    restart_reason, started_at, finished_at = None, time.time(), time.time()
            else:
                restart_reason, started_at, finished_at = None, time.time(), time.time()
            self._outcomes[name] = pending_exit
            code = pending_exit.exit_code
            pending_exit = None
            await self._set_ready(name, False)
            if self._terminating.is_set():
                return
            if restart_reason is None and not should_restart(
                policy, code if code is not None else 1
            ):
                return
            if restart_reason is not None and policy == "Never":
                return
            if restart_reason == RESIZE_RESTART:
                delay = 0.0  # the node's own decision: no CrashLoopBackOff for it
            else:
                delay, backoff = crash_loop.delay_before_restart(backoff, started_at, finished_at)
            restart_count += 1
            count = restart_count
            why = restart_reason or exit_reason(code, None, False)
            await self._record(
                f"restart-{name}-{count}",
                functools.partial(
                    _restart, container=name, restart_count=count, backoff_seconds=delay,
                    reason=why, node=self.node,
                ),
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._terminating.wait(), delay)
            if self._terminating.is_set():
                return

    async def _resume(self, name: str, adopted: bool) -> tuple[int, ContainerOutcome | None]:
        """Where this container's story stands in the log, for a worker (re)starting.

        Returns the restart count to run next and, if the log says an instance ended (or one
        that ran is gone without a trace, the agent having been down), that outcome, still to
        be acted on by the restart policy.
        """
        status = self._status(name)
        count = int(status.get("restartCount") or 0)
        state = status.get("state") or {}
        if adopted:
            return count, None
        if "terminated" in state:
            return count, ContainerOutcome("terminated", state["terminated"].get("exitCode"))
        if status.get("started") or "running" in state:
            # It ran, but no process survives: the kubelet's ContainerStatusUnknown.
            await self._record(
                f"lost-{name}-{count}",
                lambda pod, at: pod.exit_container(
                    container=name, exit_code=137, reason="ContainerStatusUnknown",
                    node=self.node, restart_count=count,
                    message="the container was not running when the node agent restarted",
                    at=at,
                ),
            )  # fmt: skip
            return count, ContainerOutcome("terminated", 137)
        return count, None

    async def _start(self, container: dict[str, Any], restart_count: int) -> Container | None:
        from handlers.agent.runtime import ContainerStartError

        name = container["name"]
        container = self._container_named(name) or container
        spec = self._container_spec(container, restart_count)
        directory = self._runtime.instance_dir(spec)
        self._shipper.expect(directory)  # its output bounded from the first byte
        try:
            running = await self._runtime.start(spec)
        except ContainerStartError as exc:
            self._shipper.forget(directory)
            self._network.started(self.uid)
            code = exc.status.exit_code if exc.status.exit_code is not None else 128
            message = exc.status.message or str(exc)
            reason = exc.status.reason or "StartError"
            await self._record(
                f"exit-{name}-{restart_count}",
                lambda pod, at: pod.exit_container(
                    container=name, exit_code=code, reason=reason, node=self.node,
                    restart_count=restart_count, message=message, at=at,
                ),
            )  # fmt: skip
            self._outcomes[name] = ContainerOutcome("terminated", code)
            return None
        self._network.started(self.uid)
        self._shipper.track(self._instance(running))
        await self._record(
            f"start-{name}-{restart_count}",
            lambda pod, at: pod.start_container(
                container=name, restart_count=restart_count, node=self.node, at=at
            ),
        )
        return running

    def _instance(self, running: Container) -> ContainerInstance:
        """What the log sink ships ``running``'s output under."""
        return ContainerInstance(
            namespace=self.namespace,
            pod=self.name,
            pod_uid=self.uid,
            container=running.spec.name,
            restart_count=running.spec.restart_count,
            directory=running.directory,
        )

    async def _exited(self, running: Container, status: ExitStatus) -> None:
        spec = running.spec
        self._shipper.finish(self._instance(running))
        code = status.exit_code if status.exit_code is not None else 137
        reason = (
            status.reason
            if status.reason in ("Unknown", "StartError")
            else exit_reason(code, status.signal, status.oom_killed)
        )
        await self._record(
            f"exit-{spec.name}-{spec.restart_count}",
            lambda pod, at: pod.exit_container(
                container=spec.name, exit_code=code, signal=status.signal, reason=reason,
                node=self.node, restart_count=spec.restart_count,
                started_at_ns=running.started_ns, finished_at_ns=status.finished_ns,
                message=status.message, at=at,
            ),
        )  # fmt: skip
        with contextlib.suppress(Exception):
            self._runtime.remove(running)

    async def _watch(
        self, running: Container, *, probes: ContainerProbes, grace: float, policy: str
    ) -> tuple[str | None, ExitStatus]:
        """Wait for the container to exit, probing it meanwhile. Returns (why the agent
        stopped it to restart it, or None; its exit status)."""
        restart: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._restarts[running.spec.name] = restart
        exited = asyncio.ensure_future(self._runtime.wait(running))
        stopping = asyncio.ensure_future(self._terminating.wait())
        prober = asyncio.ensure_future(
            self._probe(running, probes=probes, policy=policy, restart=restart)
        )
        try:
            first: list[asyncio.Future[Any]] = [exited, stopping, restart]
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                return None, exited.result()
            why = restart.result() if restart.done() else None
            return why, await self._runtime.stop(running, grace)
        finally:
            if self._restarts.get(running.spec.name) is restart:
                del self._restarts[running.spec.name]
            for task in (prober, stopping, exited):
                if not task.done():
                    task.cancel()
            await asyncio.gather(prober, stopping, exited, return_exceptions=True)

    async def _probe(
        self,
        running: Container,
        *,
        probes: ContainerProbes,
        policy: str,
        restart: asyncio.Future[str],
    ) -> None:
        name = running.spec.name
        health = ContainerHealth(
            container=name,
            probes=probes,
            started_at=running.started_ns / 1e9,
            restart_policy=policy,
        )
        if health.ready:
            await self._set_ready(name, True)
        while True:
            checkpoint()
            now = time.time()
            due_at = health.next_due(now)
            if due_at == math.inf:
                return
            if due_at > now:
                await asyncio.sleep(due_at - now)
                continue
            for kind in health.due(now):
                spec = health.probes.get(kind)
                assert spec is not None
                result = await run_probe(
                    spec, running, host=self.probe_host, netns=self.probe_netns
                )
                outcome = health.record(kind, result.success, time.time())
                if outcome is None:
                    continue
                if outcome.restart:
                    log.info("agent.probe_failed", pod=self.key, container=name, probe=kind,
                             message=result.message)  # fmt: skip
                    if not restart.done():
                        restart.set_result(outcome.reason)
                    return
                await self._set_ready(name, outcome.ready)

    # -- in-place resize ------------------------------------------------------------------------

    def _resizable(self) -> dict[str, dict[str, Any]]:
        return desired_resources(self.manifest)

    def _initial_allocation(self) -> dict[str, dict[str, Any]]:
        """What the node admitted for each container, as the log last said: the resources a
        resize recorded as actual, else the spec's (a pod never resized)."""
        allocated = self._resizable()
        status = self.manifest.get("status") or {}
        for section in ("containerStatuses", "initContainerStatuses"):
            for entry in status.get(section) or ():
                if entry.get("name") in allocated and "resources" in entry:
                    allocated[entry["name"]] = dict(entry["resources"])
        return allocated

    def _container_named(self, name: str) -> dict[str, Any] | None:
        for section in ("containers", "initContainers"):
            for container in self.spec.get(section) or ():
                if container.get("name") == name:
                    return dict(container)
        return None

    async def _resizer(self) -> None:
        """Admit and apply resizes as they come, until the worker ends."""
        if self._resizable() != self._allocated:
            self._resize_wake.set()
        while True:
            await self._resize_wake.wait()
            self._resize_wake.clear()
            try:
                outcome = await self._sync_resize()
            except (FleetError, StoreError, TimeoutError) as exc:
                log.warning("agent.resize_not_recorded", pod=self.key, error=str(exc))
                outcome = DEFERRED
            except Exception:
                # Never silently: the resizer is the pod's only path to its new resources.
                log.exception("agent.resize_failed", pod=self.key)
                outcome = DEFERRED
            if outcome in (DEFERRED, ERROR):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._resize_wake.wait(), RESIZE_RETRY_S)
                self._resize_wake.set()

    async def _sync_resize(self) -> str | None:
        """Admit the pod's desired resources on this node and apply them; the admission's
        outcome (None when there was nothing to resize)."""
        if self._resizable() == self._allocated:
            if self._unapplied is not None:
                return await self._retry_actuation()
            return None
        decided: dict[str, Any] = {}
        before = self._allocated
        policy = self.spec.get("restartPolicy", "Always")

        def admit(pod: Pod, node: Resource | None, at: datetime) -> None:
            decided.clear()
            desired = desired_resources(pod.manifest)
            # The desired requests alone (without its status, the scheduler's reading would
            # keep the larger allocated ones: a decrease would never give anything back).
            requests = PodInfo.from_manifest({**pod.manifest, "status": {}}).requests
            if not isinstance(node, Node) or not node.exists:
                raise FleetError(f"node {self.node} no longer exists")
            held = node.allocations.get(pod_key(pod), {})
            in_use = node.allocated
            others = {k: in_use.get(k, 0) - held.get(k, 0) for k in in_use}
            admission = resize_admission(
                allocatable=node.allocatable, others=others, wanted=requests
            )
            decided.update(outcome=admission.outcome, desired=desired)
            if admission.outcome != "Feasible":
                pod.defer_resize(
                    node=self.node, reason=admission.outcome, message=admission.message,
                    allocated=before, at=at,
                )  # fmt: skip
                return
            restarts = sorted(
                name for name, resources in desired.items()
                if (plan := self._plan(name, resources, before)) is not None
                and plan.restart and policy != "Never"
            )  # fmt: skip
            decided["restarts"] = restarts
            allocate_resize(
                pod, node, requests=requests, allocated=desired, restarts=restarts, at=at
            )

        step = f"resize-{_digest(self._resizable())}"
        await self._after_addresses()
        await self._recorder.record_on_node(self.namespace, self.name, step=step, decide=admit)
        outcome = decided.get("outcome")
        if outcome != "Feasible":
            return str(outcome) if outcome else None
        desired = decided["desired"]
        self._allocated = desired
        self._unapplied = None
        actual, errors = await self._actuate(desired, before, set(decided["restarts"]))
        await self._record_actuation(step, actual, errors)
        return ERROR if errors else "Feasible"

    async def _record_actuation(
        self, step: str, actual: dict[str, dict[str, Any]], errors: list[str]
    ) -> None:
        """Record what the cgroups hold; what could not be applied is tried again (the
        kubelet retries an ``Error`` resize on every sync), recorded again only when it
        changes."""
        error = "; ".join(errors)
        self._unapplied = (actual, error) if errors else None
        await self._record(
            f"{step}-actuated-{_digest(error)}",
            lambda pod, at: pod.actuate_resize(
                node=self.node, resources=actual, error=error, at=at
            ),
        )

    async def _retry_actuation(self) -> str:
        """Apply again what an earlier attempt could not (a memory limit below the usage
        may fit once the container has freed memory)."""
        assert self._unapplied is not None
        recorded, error = self._unapplied
        actual, errors = await self._actuate(self._allocated, recorded, set())
        if "; ".join(errors) == error and actual == recorded:
            return ERROR  # the same as recorded: nothing new to say
        await self._record_actuation(f"resize-retry-{_digest(self._allocated)}", actual, errors)
        return ERROR if errors else "Feasible"

    def _plan(
        self, name: str, resources: dict[str, Any], before: dict[str, dict[str, Any]]
    ) -> ContainerResize | None:
        container = self._container_named(name) or {"name": name}
        return plan_container({**container, "resources": resources}, actual=before.get(name))

    async def _actuate(
        self,
        desired: dict[str, dict[str, Any]],
        before: dict[str, dict[str, Any]],
        restarts: set[str],
    ) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Apply the allocated resources to the running instances: in place (the cgroup's
        files rewritten), or by restarting those in ``restarts``; what each then runs with,
        and what could not be applied."""
        actual: dict[str, dict[str, Any]] = {}
        errors: list[str] = []
        restarted: dict[str, int] = {}
        for name, resources in desired.items():
            plan = self._plan(name, resources, before)
            running = self.running.get(name)
            if plan is None or running is None:
                actual[name] = resources  # a container not running starts with them
                continue
            if name in restarts:
                restart = self._restarts.get(name)
                if restart is not None and not restart.done():
                    restart.set_result(RESIZE_RESTART)
                restarted[name] = running.spec.restart_count
                actual[name] = resources
                continue
            try:
                if plan.memory_limit_bytes is not None:
                    usage = await asyncio.to_thread(self._runtime.usage, running)
                    if usage.working_set_bytes > plan.memory_limit_bytes:
                        raise CgroupError(
                            f"attempting to set container {name!r} memory limit "
                            f"({plan.memory_limit_bytes}) below current usage "
                            f"({usage.working_set_bytes})"
                        )
                held = await asyncio.to_thread(
                    functools.partial(
                        self._runtime.resize, running, cpu_limit_millis=plan.cpu_limit_millis,
                        cpu_request_millis=plan.cpu_request_millis,
                        memory_limit_bytes=plan.memory_limit_bytes,
                    )
                )  # fmt: skip
            except (CgroupError, OSError) as exc:
                errors.append(str(exc))
                actual[name] = before.get(name, {})
                continue
            actual[name] = _actual_resources(resources, plan, held)
        deadline = time.monotonic() + RESIZE_RESTART_WAIT_S
        for name, count in restarted.items():
            while time.monotonic() < deadline and not self._terminating.is_set():
                running = self.running.get(name)
                if running is not None and running.spec.restart_count > count:
                    break
                await asyncio.sleep(0.05)
        return actual, errors

    async def _set_ready(self, name: str, ready: bool) -> None:
        async with self._ready_lock:
            was = bool(self._ready) and all(self._ready.values())
            self._ready[name] = ready
            now_ready = all(self._ready.values())
            if now_ready and not was:
                await self._record("ready", lambda pod, at: pod.mark_ready(
                    reason="all containers are ready", at=at))  # fmt: skip
            elif was and not now_ready:
                await self._record(f"not-ready-{name}", lambda pod, at: pod.mark_not_ready(
                    reason=f"container {name} is not ready", at=at))  # fmt: skip

    def _unrunnable(self, containers: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        """Containers that cannot start however long the agent retries, each with the
        kubelet's waiting reason: no command (``ImagePullBackOff``: fleetlog pulls no image),
        or an environment that cannot be made (``CreateContainerConfigError``: a ConfigMap or
        Secret reference, kinds fleetlog does not store)."""
        from core.pods.downward import ContainerConfigError, PodFacts, container_environment

        facts = PodFacts(
            manifest=self.manifest, pod_ip=None, host_ip=None, node_name=self.node,
            node_allocatable=self._config.node_allocatable, config=self._sources,
        )  # fmt: skip
        found = []
        for c in containers:
            name = c["name"]
            if not c.get("command"):
                found.append((name, "ImagePullBackOff", (
                    f"container {name!r} has no command: fleetlog runs processes and cannot "
                    f"pull the image {c.get('image', '')!r}; give it a command (see the README, "
                    "Images)"
                )))  # fmt: skip
                continue
            if self._config_problem is not None:
                found.append((name, CONFIG_ERROR, self._config_problem))
                continue
            try:
                container_environment(c, facts)
            except ContainerConfigError as exc:
                found.append((name, CONFIG_ERROR, str(exc)))
        return found

    async def _cannot_run(
        self, containers: list[tuple[str, str, str]], *, retry_after: float | None = None
    ) -> bool:
        """Containers that cannot start wait, with their reason (as a container whose image
        cannot be pulled, or whose configuration cannot be made, waits in Kubernetes) until
        the pod is deleted, or (``retry_after``) until it is time to try again: True then.
        The pod stays Pending rather than failing, so a replica set does not replace it with
        another that cannot run either, once a second."""
        for name, reason, message in containers:
            if self._waiting_for.get(name) == (reason, message):
                continue  # recorded already: the same wait is not appended on every retry
            self._waiting_for[name] = (reason, message)
            self._waits += 1
            await self._record(f"waiting-{name}-{self._waits}", functools.partial(
                _wait, container=name, reason=reason, message=message,
                node=self.node))  # fmt: skip
        if retry_after is None:
            await self._terminating.wait()
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._terminating.wait(), retry_after)
        return not self._terminating.is_set()


def _digest(value: object) -> str:
    """A short, stable name for ``value`` in a step's write token (the same resize decided
    again writes the same token)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _actual_resources(
    allocated: dict[str, Any], plan: ContainerResize, held: Limits
) -> dict[str, Any]:
    """What the container runs with, for ``containerStatuses[].resources``: the allocated
    resources, with a limit the cgroup holds differently (rounded by the kernel) as read."""
    actual = {k: dict(v) for k, v in allocated.items() if isinstance(v, dict)}
    limits = dict(actual.get("limits") or {})
    if held.cpu_limit_millis is not None and held.cpu_limit_millis != plan.cpu_limit_millis:
        limits["cpu"] = f"{held.cpu_limit_millis}m"
    if held.memory_limit_bytes is not None and held.memory_limit_bytes != plan.memory_limit_bytes:
        limits["memory"] = str(held.memory_limit_bytes)
    if limits:
        actual["limits"] = limits
    return actual


def _wait(pod: Pod, at: datetime, *, container: str, reason: str, message: str, node: str) -> None:
    """A container's wait as a :class:`PodStep`."""
    pod.wait_container(container=container, reason=reason, message=message, node=node, at=at)


def _start(pod: Pod, at: datetime, *, container: str, restart_count: int, node: str) -> None:
    """A start as a :class:`PodStep`."""
    pod.start_container(container=container, restart_count=restart_count, node=node, at=at)


def _restart(
    pod: Pod,
    at: datetime,
    *,
    container: str,
    restart_count: int,
    backoff_seconds: float,
    reason: str,
    node: str,
) -> None:
    """A restart as a :class:`PodStep`, bound with ``functools.partial`` so it keeps this
    restart's values, not those of a later pass of the container loop."""
    pod.restart_container(
        container=container,
        restart_count=restart_count,
        backoff_seconds=backoff_seconds,
        reason=reason,
        node=node,
        at=at,
    )

"""The VerticalPodAutoscaler's recommender and updater: usage in, recommendations and
evictions out, each recommendation explained in the log.

Why this exists: the VPA's recommender keeps, per VPA and container name, decaying histograms
of CPU usage and of memory peaks, and writes their percentiles (with margin, confidence,
minimums and the resource policy's caps) into ``status.recommendation``; its updater evicts
pods whose requests are far from them so that admission (``Initial`` and the recreate modes,
``handlers.gateway.admission``'s VerticalPodAutoscaler stage) gives the new pod the
recommended requests. The maths is ``core.autoscaling.vertical``; this module feeds it and
writes its results:

* **inputs**: every usage sample of a pod whose controller chain (pod → replica set →
  deployment) is a VPA's ``targetRef``, from a metrics read model that replays what the
  metrics stream holds (``PodMetrics(replay=True)``; the stream keeps an hour, so a restarted
  recommender rebuilds an hour of history: confidence stays below 1/24 of a day, the upper
  bound stays wide, as a young VPA's does; there are no checkpoints), and every
  ``ContainerExited`` with reason ``OOMKilled`` (the node agent's record of an OOM kill), taken
  with the container's memory request;
* **outputs**: the VPA's status (``containerRecommendations`` with target, lowerBound,
  upperBound, uncappedTarget; the ``RecommendationProvided`` condition; ``NoPodsMatched`` or
  ``ConfigUnsupported`` when it cannot recommend) through the ``status`` verb as
  ``system:vpa-recommender``, only when a figure moved by more than 5 % or a condition
  changed (not on every sample). The event carries ``why``: sample counts, percentiles,
  margin, confidence, pod minimum, the caps that applied;
* **updater** (``Recreate``, ``Auto``, ``InPlaceOrRecreate``): the pods of the target are
  ranked by ``update_priority``; those ``should_update`` accepts are evicted as
  ``system:vpa-updater`` through the pod eviction path (``evict_pod``: the gateway's
  ``evict``, which honours PodDisruptionBudgets), within the workload's ``minReplicas`` and
  eviction tolerance and the eviction rate limit;
* **in place** (``InPlaceOrRecreate``, the updater's ``pkg/updater/restriction`` rules,
  ``core.autoscaling.vertical.in_place_decision``): a chosen pod with no resize under way gets
  the pod ``resize`` command (:func:`resize_in_place`) with the recommended requests and the
  limits the admission would give it; one whose resize is in progress, or Deferred by its
  node, is left alone (looked at again later, evicted only after the timeouts); one whose node
  finds the resize Infeasible, or whose resize the gateway refuses, is evicted through the
  same budget-honouring path. Each pass that acts records what it did to which pod, and why,
  as a ``VerticalPodAutoscalerStatusUpdated`` whose ``why.updater`` lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import structlog
from nats.aio.client import Client

from core.api.manifests import parse_manifest
from core.autoscaling.vertical import (
    DEFERRED_RESIZE_TIMEOUT_S,
    IN_PROGRESS_RESIZE_TIMEOUT_S,
    Aggregate,
    ContainerRecommendation,
    ContainerState,
    RateLimit,
    Replicas,
    amount_of,
    changed_meaningfully,
    in_place_decision,
    may_evict,
    policy_of,
    quick_oom,
    recommend,
    resize_entries,
    should_update,
    update_priority,
)
from core.autoscaling.vertical_model import (
    VerticalPodAutoscaler,
)
from core.errors import FleetError
from core.meta.quantity import memory_bytes
from core.meta.timestamps import format_stamp, parse_stamp
from handlers.controller import ControllerLoop, Leadership, LoopOptions
from projections.cluster import ClusterModel, ObjectRecord
from projections.metrics import PodMetrics
from projections.ownership import Key
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.leases import LeaderLease
from streams.telemetry import PodUsage

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = structlog.get_logger(__name__)

ROLE = "vpa-recommender"
ACTOR = f"system:{ROLE}"
UPDATER_ACTOR = "system:vpa-updater"
KIND = "VerticalPodAutoscaler"
TARGET_RESOURCES = {"Deployment": "deployments.apps", "ReplicaSet": "replicasets.apps"}
UPDATING_MODES = frozenset({"Recreate", "InPlaceOrRecreate"})
UPDATE_PERIOD_S = 60.0
"""How often the updater looks again at a VPA whose mode updates pods (the VPA's 1 minute)."""


@dataclass(frozen=True, slots=True)
class UpdaterOptions:
    """The updater's flags: ``--eviction-rate-limit`` (per second, <= 0 unlimited) and
    ``--eviction-rate-burst``, how often it looks again."""

    eviction_rate: float = -1.0
    eviction_burst: int = 1
    period_seconds: float = UPDATE_PERIOD_S
    bounds_interval_seconds: float = UPDATE_PERIOD_S
    """How long a recorded recommendation whose target holds stands while only its bounds
    move (they move with every sample while history is young: the confidence grows)."""
    deferred_resize_timeout_seconds: float = DEFERRED_RESIZE_TIMEOUT_S
    """How long a resize its node defers is waited for before the pod is evicted."""
    in_progress_resize_timeout_seconds: float = IN_PROGRESS_RESIZE_TIMEOUT_S
    """How long a resize in progress is waited for before the pod is evicted."""


def recorded_amounts(status: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """The recommendation a status holds, as amounts per container (to compare with a new
    one)."""
    out: dict[str, dict[str, int]] = {}
    recs = (status.get("recommendation") or {}).get("containerRecommendations") or ()
    for rec in recs:
        amounts: dict[str, int] = {}
        for part in ("target", "lowerBound", "upperBound"):
            for resource, text in (rec.get(part) or {}).items():
                with contextlib.suppress(Exception):
                    amounts[f"{part}.{resource}"] = amount_of(resource, str(text))
        out[str(rec.get("containerName"))] = amounts
    return out


def _targets(amounts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    return {c: {k: v for k, v in a.items() if k.startswith("target.")} for c, a in amounts.items()}


def _amounts(recs: Iterable[ContainerRecommendation]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for rec in recs:
        amounts = {f"target.{r}": v for r, v in rec.target.items()}
        amounts |= {f"lowerBound.{r}": v for r, v in rec.lower.items()}
        amounts |= {f"upperBound.{r}": v for r, v in rec.upper.items()}
        out[rec.container] = amounts
    return out


def container_requests(manifest: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Each container's requests as amounts (millicores, bytes), as the VPA's
    ``ContainerRequestsAndLimits`` reads them: what the container runs with
    (``containerStatuses[].resources``, once a resize was actuated), else what its node holds
    for it (``allocatedResources``: a resize Deferred or Infeasible keeps the old ones), else
    the spec. A resize sent and not yet taken up by the node reads as the spec's new requests,
    so it is not sent again."""
    statuses = {
        str(cs.get("name")): cs
        for cs in (manifest.get("status") or {}).get("containerStatuses") or ()
    }
    out: dict[str, dict[str, int]] = {}
    for c in (manifest.get("spec") or {}).get("containers") or ():
        status = statuses.get(str(c.get("name"))) or {}
        if "resources" in status:
            requests = (status.get("resources") or {}).get("requests") or {}
        elif "allocatedResources" in status:
            requests = status.get("allocatedResources") or {}
        else:
            requests = (c.get("resources") or {}).get("requests") or {}
        amounts = {}
        for resource in ("cpu", "memory"):
            if resource in requests:
                with contextlib.suppress(Exception):
                    amounts[resource] = amount_of(resource, str(requests[resource]))
        out[str(c.get("name"))] = amounts
    return out


def owner_chain(
    model: ClusterModel, namespace: str, pod: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """The pod's controllers, nearest first: (kind, name) of its replica set, that set's
    deployment."""
    chain: list[tuple[str, str]] = []
    meta = pod.get("metadata") or {}
    for _ in range(3):
        owner = next((o for o in meta.get("ownerReferences") or () if o.get("controller")), None)
        if owner is None:
            break
        kind, name = str(owner.get("kind")), str(owner.get("name"))
        chain.append((kind, name))
        record = model.get(kind, namespace, name)
        if record is None:
            break
        meta = record.manifest.get("metadata") or {}
    return chain


def vpas_of_pod(model: ClusterModel, namespace: str, pod: Mapping[str, Any]) -> list[ObjectRecord]:
    """The VPAs whose ``targetRef`` is one of the pod's controllers."""
    chain = set(owner_chain(model, namespace, pod))
    if not chain:
        return []
    found = []
    for record in model.list(KIND, namespace):
        ref = (record.manifest.get("spec") or {}).get("targetRef") or {}
        if (str(ref.get("kind")), str(ref.get("name"))) in chain:
            found.append(record)
    return found


Evicted = Literal["evicted", "gone", "refused"]


async def evict_pod(commands: CommandClient, *, namespace: str, name: str, uid: str,
                    reason: str, attempt: int = 0) -> Evicted:  # fmt: skip
    """Evict a pod through the gateway's ``evict`` command (the eviction path ``fleetlog
    drain`` and the door's ``pods/eviction`` use, which honours PodDisruptionBudgets).
    ``refused``: a budget allowed no disruption (or another refusal); the updater asks again
    on its next look, as a new attempt."""
    try:
        await commands.send(
            "Pod", "evict", {"name": name, "namespace": namespace, "reason": reason},
            idempotency_key=f"vpa-updater.evict.{uid}.{attempt}", throttled_retries=0,
        )  # fmt: skip
    except FleetError as exc:
        if exc.code == "not_found":
            return "gone"
        log.info("vpa.eviction_refused", pod=f"{namespace}/{name}", error=exc.message)
        return "refused"
    return "evicted"


Resized = Literal["resized", "gone", "refused"]


async def resize_in_place(commands: CommandClient, *, namespace: str, name: str, uid: str,
                          containers: list[dict[str, Any]],
                          reason: str) -> tuple[Resized, str]:  # fmt: skip
    """``InPlaceOrRecreate``'s first try: the pod ``resize`` command (kube's ``pods/resize``)
    with each changed container's whole new ``resources``. ``refused``: the gateway said no
    (a QoS class change, a quota, a finished pod), with its message; the updater then evicts,
    as the VPA's updater falls back to eviction when its resize patch fails. The write token
    is the pod's uid and what is asked: the same resize sent again is the same command."""
    digest = hashlib.sha256(json.dumps(containers, sort_keys=True).encode()).hexdigest()[:16]
    try:
        await commands.send(
            "Pod", "resize",
            {"name": name, "namespace": namespace, "containers": containers, "reason": reason},
            idempotency_key=f"vpa-updater.resize.{uid}.{digest}", throttled_retries=0,
        )  # fmt: skip
    except FleetError as exc:
        if exc.code == "not_found":
            return "gone", exc.message
        log.info("vpa.resize_refused", pod=f"{namespace}/{name}", error=exc.message)
        return "refused", exc.message
    return "resized", ""


class VerticalController:
    """The recommender (and updater) of every VPA, as the elected ``vpa-recommender``."""

    def __init__(
        self,
        nc: Client,
        projection: Projection[ClusterModel],
        metrics: PodMetrics,
        leader: Leadership,
        *,
        updater: UpdaterOptions = UpdaterOptions(),
        **loop: Unpack[LoopOptions],
    ) -> None:
        self._projection = projection
        self.metrics = metrics
        self.updater = updater
        self._commands = CommandClient(nc, actor=ACTOR)
        self._evictions = CommandClient(nc, actor=UPDATER_ACTOR)
        self._rate = RateLimit(per_second=updater.eviction_rate, burst=updater.eviction_burst)
        self._aggregates: dict[Key, dict[str, Aggregate]] = {}
        self._containers: dict[tuple[Key, str, str], ContainerState] = {}
        self._written: dict[Key, float] = {}
        self.recorded = 0
        self.evicted = 0
        self.refused = 0
        self.resized = 0
        self._attempts: dict[str, int] = {}
        self._resizing: dict[Key, dict[str, float]] = {}
        """VPA -> pod uid -> when the updater first saw the pod's resize under way (the VPA's
        ``lastInPlaceAttemptTimeMap``: the timeouts count from there); rebuilt on every pass
        from the live pods, so pods gone are forgotten."""
        self.loop: ControllerLoop[Key] = ControllerLoop(
            role=ROLE,
            projection=projection,
            leader=leader,
            reconcile=self.reconcile,
            keys_of=self._keys_of,
            all_keys=lambda: [(r.namespace, r.name) for r in projection.model.list(KIND)],
            kind=KIND,
            actor=ACTOR,
            **loop,
        )

    @classmethod
    async def create(
        cls,
        nc: Client,
        projection: Projection[ClusterModel],
        metrics: PodMetrics,
        *,
        updater: UpdaterOptions = UpdaterOptions(),
        **loop: Unpack[LoopOptions],
    ) -> VerticalController:
        leader = await LeaderLease.open(nc, ROLE)
        return cls(nc, projection, metrics, leader, updater=updater, **loop)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        self.metrics.listeners.append(self._on_sample)
        try:
            await self.loop.run(ready)
        finally:
            with contextlib.suppress(ValueError):
                self.metrics.listeners.remove(self._on_sample)

    # -- feeding the histograms -------------------------------------------------------------

    def _state(self, key: Key, pod: str, container: str) -> ContainerState:
        found = self._containers.get((key, pod, container))
        if found is None:
            aggregate = self._aggregates.setdefault(key, {}).setdefault(container, Aggregate())
            found = self._containers[(key, pod, container)] = ContainerState(aggregate)
        return found

    def _on_sample(self, usage: PodUsage) -> None:
        record = self._projection.model.get("Pod", usage.namespace, usage.name)
        if record is None:
            return
        at = usage.at_ns / 1e9
        for vpa in vpas_of_pod(self._projection.model, usage.namespace, record.manifest):
            key = (vpa.namespace, vpa.name)
            for name, c in usage.containers.items():
                state = self._state(key, usage.name, name)
                state.add_cpu(c.cpu_millicores, at)
                if c.memory_bytes > 0:
                    # No working set is no measurement (the simulator's pods without a memory
                    # load): the VPA never replaces a zero peak within its interval.
                    state.add_memory(c.memory_bytes, at)
            self.loop.mark(key)

    def _on_oom(self, event: StoredEvent) -> list[Key]:
        e = event.envelope
        record = self._projection.model.get("Pod", e.namespace, e.name)
        if record is None:
            return []
        container = str(e.payload.get("container"))
        request = 0
        for c in (record.manifest.get("spec") or {}).get("containers") or ():
            if c.get("name") == container:
                text = ((c.get("resources") or {}).get("requests") or {}).get("memory")
                with contextlib.suppress(Exception):
                    request = memory_bytes(str(text)) if text is not None else 0
        at_ns = e.payload.get("finished_at_ns") or e.timestamp_ns
        keys = []
        for vpa in vpas_of_pod(self._projection.model, e.namespace, record.manifest):
            key = (vpa.namespace, vpa.name)
            needed = self._state(key, e.name, container).record_oom(at_ns / 1e9, request)
            log.info("vpa.oom", vpa=f"{key[0]}/{key[1]}", pod=e.name, container=container,
                     needed=needed)  # fmt: skip
            keys.append(key)
        return keys

    def _keys_of(self, event: StoredEvent) -> Iterable[Key]:
        e = event.envelope
        if e.kind == KIND:
            if e.type == f"{KIND}Deleted":
                self._drop((e.namespace, e.name))
            return [] if e.type == f"{KIND}StatusUpdated" else [(e.namespace, e.name)]
        if (
            e.kind == "Pod"
            and e.type == "ContainerExited"
            and e.payload.get("reason") == "OOMKilled"
        ):
            return self._on_oom(event)
        if e.kind == "Pod" and e.type == "PodResizePending":
            # The node's answer to a resize: Infeasible falls back to eviction at once.
            record = self._projection.model.get("Pod", e.namespace, e.name)
            if record is None:
                return []
            return [
                (v.namespace, v.name)
                for v in vpas_of_pod(self._projection.model, e.namespace, record.manifest)
            ]
        if e.kind == "Pod" and e.type == "PodDeleted":
            self.metrics.forget(e.namespace, e.name)
            for gone in [k for k in self._containers if k[1] == e.name and k[0][0] == e.namespace]:
                del self._containers[gone]  # its history stays in the VPA's aggregate
        return []

    def _drop(self, key: Key) -> None:
        self._aggregates.pop(key, None)
        self._resizing.pop(key, None)
        self._written.pop(key, None)
        for gone in [k for k in self._containers if k[0] == key]:
            del self._containers[gone]

    # -- one recommendation -----------------------------------------------------------------

    def _pods(self, namespace: str, kind: str, name: str) -> list[ObjectRecord]:
        model = self._projection.model
        return [
            r for r in model.list("Pod", namespace)
            if (kind, name) in owner_chain(model, namespace, r.manifest)
        ]  # fmt: skip

    async def reconcile(self, key: Key) -> int | None:
        namespace, name = key
        record = self._projection.model.get(KIND, namespace, name)
        if record is None:
            self._drop(key)
            self.loop.forget(key)
            return None
        parsed = parse_manifest(record.manifest)
        assert isinstance(parsed, VerticalPodAutoscaler)
        spec = parsed.spec
        assert spec.target_ref is not None
        ref = spec.target_ref
        cause = self.loop.cause(key, record.last_seq).kwargs()
        old_status = record.manifest.get("status") or {}
        target = self._projection.model.get(ref.kind, namespace, ref.name)
        if target is None or ref.kind not in TARGET_RESOURCES:
            what = TARGET_RESOURCES.get(ref.kind, f"{ref.kind.lower()}s")
            message = (
                f'Cannot read targetRef: {what} "{ref.name}" not found'
                if ref.kind in TARGET_RESOURCES
                else f"Cannot read targetRef: kind {ref.kind} cannot be autoscaled"
            )
            status = {"conditions": _conditions(old_status, [
                ("ConfigUnsupported", "True", "", message),
                ("RecommendationProvided", "False", "", ""),
            ])}  # fmt: skip
            await self._record(record, status, None, cause)
            return None
        aggregates = self._aggregates.get(key, {})
        policies = {c: policy_of(spec, c) for c in aggregates}
        recs = recommend(aggregates, policies)
        if not recs:
            conditions = [("RecommendationProvided", "False", "", "")]
            if not self._pods(namespace, ref.kind, ref.name):
                conditions.append(("NoPodsMatched", "True", "", "No pods match this VPA object"))
            await self._record(record, {"conditions": _conditions(old_status, conditions)},
                               None, cause)  # fmt: skip
            return None
        recorded = recorded_amounts(old_status)
        new = _amounts(recs)
        provided = _conditions(old_status, [("RecommendationProvided", "True", "", "")])
        bounds_due = (
            time.monotonic() - self._written.get(key, -math.inf)
            >= self.updater.bounds_interval_seconds
        )
        if (
            changed_meaningfully(_targets(recorded), _targets(new))
            or (bounds_due and changed_meaningfully(recorded, new))
            or provided != old_status.get("conditions")
        ):
            status = {
                "recommendation": {"containerRecommendations": [r.as_status() for r in recs]},
                "conditions": provided,
            }
            why = {
                "vpa": name,
                "containers": {
                    r.container: {**r.inputs, "caps": list(r.caps),
                                  "uncappedTarget": r.as_status()["uncappedTarget"]}
                    for r in recs
                },
            }  # fmt: skip
            await self._record(record, status, why, cause)
            self._written[key] = time.monotonic()
        mode = spec.mode()
        if mode not in UPDATING_MODES:
            return None
        # Listing the target's pods scans the namespace: only the updater needs them.
        await self._update(
            parsed, target, self._pods(namespace, ref.kind, ref.name), recs, mode=mode, key=key
        )
        return time.time_ns() + int(self.updater.period_seconds * 1e9)

    async def _record(self, record: ObjectRecord, status: dict[str, Any],
                      why: dict[str, Any] | None, cause: Mapping[str, Any]) -> None:  # fmt: skip
        if status == (record.manifest.get("status") or {}):
            return
        body: dict[str, Any] = {"name": record.name, "namespace": record.namespace,
                                "status": status}  # fmt: skip
        if why is not None:
            body["why"] = why
        outcome = await self._commands.send(
            KIND, "status", body,
            idempotency_key=f"{ROLE}.status.{record.uid}.{record.version}",
            expected_version=record.version, **cause,
        )  # fmt: skip
        self.recorded += 1
        if outcome.seqs:
            await self._projection.wait_for(max(outcome.seqs))

    # -- the updater ------------------------------------------------------------------------

    async def _update(self, vpa: VerticalPodAutoscaler, target: ObjectRecord,
                      pods: list[ObjectRecord], recs: list[ContainerRecommendation], *,
                      mode: str, key: Key) -> None:  # fmt: skip
        now = time.time()
        live = [p for p in pods if not (p.manifest.get("metadata") or {}).get("deletionTimestamp")]
        resizing = self._track_resizes(key, live, now)
        ranked = []
        for pod in live:
            status = pod.manifest.get("status") or {}
            priority = update_priority(container_requests(pod.manifest), recs)
            oom = any(
                quick_oom(
                    reason=(t := (cs.get("lastState") or {}).get("terminated") or {}).get("reason"),
                    started_at=_seconds(t.get("startedAt")),
                    finished_at=_seconds(t.get("finishedAt")),
                )
                for cs in status.get("containerStatuses") or ()
            )
            started = _seconds(status.get("startTime")) or pod.created_ns / 1e9
            if should_update(priority, started_at=started, now=now, quick_oom=oom):
                ranked.append((priority, pod))
        if not ranked:
            return
        ranked.sort(key=lambda item: item[0].sort_key(), reverse=True)
        configured = int((target.manifest.get("spec") or {}).get("replicas", 1))
        running = sum(1 for p in live if (p.manifest.get("status") or {}).get("phase") == "Running")
        policy = vpa.spec.update_policy
        min_replicas = (policy.min_replicas if policy and policy.min_replicas else None) or 2
        disrupted = 0  # evicted, or resized in place: both count against the tolerance
        actions: list[dict[str, Any]] = []
        for priority, pod in ranked:
            status = pod.manifest.get("status") or {}
            phase = status.get("phase") or "Pending"
            wanted = (
                "outside the recommended range" if priority.outside_range
                else f"{priority.resource_diff:.0%} off the target"
            )  # fmt: skip
            fallback = ""
            if mode == "InPlaceOrRecreate":
                decision = in_place_decision(
                    status.get("conditions") or (), phase=phase,
                    resizing_since=resizing.get(pod.uid), now=now,
                    deferred_timeout=self.updater.deferred_resize_timeout_seconds,
                    in_progress_timeout=self.updater.in_progress_resize_timeout_seconds,
                )  # fmt: skip
                if decision.action == "wait":
                    log.info("vpa.resize_waits", pod=pod.name, why=decision.why)
                    continue
                fallback = decision.why if decision.action == "evict" else ""
            allowed, why = may_evict(
                Replicas(configured=configured, running=running, evicted=disrupted),
                phase=phase, min_replicas=min_replicas,
            )  # fmt: skip
            if not allowed:
                log.info("vpa.not_evicted", pod=pod.name, why=why)
                continue
            if not self._rate.take(now):
                log.info("vpa.rate_limited", pod=pod.name)
                break
            reason = f"vertical pod autoscaler {vpa.metadata.name}: requests {wanted}"
            if mode == "InPlaceOrRecreate" and not fallback:
                containers = resize_entries(
                    (pod.manifest.get("spec") or {}).get("containers") or (), recs, vpa.spec
                )
                if not containers:
                    continue  # nothing the recommendation would change (capped, Off)
                outcome, message = await resize_in_place(
                    self._evictions, namespace=pod.namespace, name=pod.name, uid=pod.uid,
                    containers=containers, reason=reason,
                )  # fmt: skip
                if outcome == "gone":
                    continue
                if outcome == "resized":
                    disrupted += 1
                    self.resized += 1
                    log.info("vpa.resized", pod=pod.name, reason=reason)
                    actions.append({"pod": pod.name, "uid": pod.uid, "path": "resized in place",
                                    "reason": reason, "containers": containers})  # fmt: skip
                    continue
                fallback = f"resize refused: {message}"
            if fallback:
                reason = f"{reason}; in-place {fallback}"
            attempt = self._attempts.get(pod.uid, 0)
            outcome = await evict_pod(self._evictions, namespace=pod.namespace, name=pod.name,
                                      uid=pod.uid, reason=reason, attempt=attempt)  # fmt: skip
            path = "evicted" if not fallback else "evicted after in-place resize failed"
            if outcome == "refused":
                self._attempts[pod.uid] = attempt + 1
                self.refused += 1
                path = "eviction refused"
            elif outcome == "evicted":
                self._attempts.pop(pod.uid, None)
                disrupted += 1
                self.evicted += 1
                log.info("vpa.evicted", pod=pod.name, reason=reason)
            else:
                continue
            actions.append({"pod": pod.name, "uid": pod.uid, "path": path, "reason": reason})
        if actions:
            await self._record_updates(key, actions)

    def _track_resizes(self, key: Key, live: list[ObjectRecord], now: float) -> dict[str, float]:
        """When each live pod of the VPA was first seen with a resize under way (a
        ``PodResizePending`` or ``PodResizeInProgress`` condition), as the VPA's updater
        starts its timeouts; pods no longer resizing or gone are forgotten."""
        before = self._resizing.get(key, {})
        now_resizing: dict[str, float] = {}
        for pod in live:
            conditions = (pod.manifest.get("status") or {}).get("conditions") or ()
            if any(
                c.get("type") in ("PodResizePending", "PodResizeInProgress")
                and c.get("status") == "True"
                for c in conditions
            ):
                now_resizing[pod.uid] = before.get(pod.uid, now)
        self._resizing[key] = now_resizing
        return now_resizing

    async def _record_updates(self, key: Key, actions: list[dict[str, Any]]) -> None:
        """The updater's pass, on the VPA's log: which pods it resized in place or evicted
        (or tried to), and why — a status event whose status is unchanged and whose
        ``why.updater`` holds the list (the VPA's ``EvictedPod`` events, with reasons)."""
        record = self._projection.model.get(KIND, *key)
        if record is None:
            return
        body = {"name": record.name, "namespace": record.namespace,
                "status": record.manifest.get("status") or {},
                "why": {"vpa": record.name, "updater": actions}}  # fmt: skip
        token = hashlib.sha256(json.dumps(actions, sort_keys=True).encode()).hexdigest()[:16]
        try:
            outcome = await self._commands.send(
                KIND, "status", body,
                idempotency_key=f"vpa-updater.pass.{record.uid}.{record.version}.{token}",
            )  # fmt: skip
        except FleetError as exc:
            log.warning("vpa.updates_not_recorded", vpa=f"{key[0]}/{key[1]}", error=exc.message)
            return
        if outcome.seqs:
            await self._projection.wait_for(max(outcome.seqs))


def _seconds(stamp: object) -> float | None:
    ns = parse_stamp(stamp)
    return None if ns is None else ns / 1e9


def _conditions(old: Mapping[str, Any],
                wanted: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:  # fmt: skip
    """The conditions (type, status, reason, message), each keeping its transition time while
    its status stays the same."""
    before = {c.get("type"): c for c in old.get("conditions") or ()}
    now = format_stamp(time.time_ns())
    out = []
    for kind, status, reason, message in wanted:
        prior = before.get(kind)
        since = prior.get("lastTransitionTime") if prior and prior.get("status") == status else None
        condition: dict[str, Any] = {"type": kind, "status": status,
                                     "lastTransitionTime": since or now}  # fmt: skip
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        out.append(condition)
    return out

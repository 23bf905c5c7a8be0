"""The HorizontalPodAutoscaler controller: event driven, each decision explained in the log.

Why this exists: Kubernetes' HPA controller polls every HPA every 15 s. This one evaluates an
HPA when something it depends on changes: a new usage sample of a pod its target owns (the
metrics read model, ``projections/metrics.py``), the HPA itself, or its target (created,
scaled, updated, its status, deleted). The maths is ``core.autoscaling.horizontal.evaluate``;
this module reads its inputs and writes its outputs:

* **inputs**: the HPA and its target from the cluster read model (the target's ``scale``:
  ``spec.replicas``, ``status.replicas``, the selector), the pods the selector matches (phase,
  Ready condition and its transition, creation as start time, deletion, each container's
  requests) and their latest samples (CPU in millicores, memory in bytes times 1000 as Kubernetes'
  milli-values, per pod and per container); for Pods, Object and External metrics, the
  workload-published series the metric's ``selector`` matches (as custom.metrics.k8s.io
  applies it: several matching series of one pod or object are summed, an External metric's
  values are all passed on), of the target's pods, of the described object in the HPA's
  namespace, or of the namespace's named External metric. A new sample of such a series makes
  the HPAs that read it due, as a usage sample does;
* **outputs**: the existing ``scale`` command through the gateway (actor
  ``system:horizontal-pod-autoscaler``) carrying the decision's why record, so the target's
  ``ScaledTo`` holds it; and the HPA's status (currentReplicas, desiredReplicas,
  currentMetrics, conditions, lastScaleTime) through the ``status`` verb when it changed.
  An evaluation that scales nothing but changes a condition's reason (a window now holds it,
  the maximum now limits it, a metric can no longer be read) records its why record in that
  status event: the recorded "no change", once per change of reason, not per sample.
* **timers**: only what the stabilisation windows and the policies' periods need. A decision
  held back by a window or a policy is looked at again when the oldest recommendation or
  scale event that held it leaves its window or period (never a fixed poll).
* **memory**: the recommendations and scale events ``behavior`` looks back on
  (``core.autoscaling.behavior.History``) live here, per HPA. After a restart (or a new
  leader) they are rebuilt from the log: the target's ``ScaledTo`` events written by this
  controller within the longest window or period give the scale events (the change and the
  event's time) and, from each event's why record, the recommendation made then. Kubernetes
  forgets both on a restart; this keeps a restart from undoing a scale-down window.

A missing target (or a kind that cannot scale) gives AbleToScale False / FailedGetScale with
Kubernetes' message and scales nothing; a refused scale gives FailedUpdateScale.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client

from core.api.manifests import parse_manifest
from core.autoscaling.behavior import History, Recommendation, ScaleEvent, behavior_of
from core.autoscaling.horizontal import (
    ControllerOptions,
    Decision,
    Readings,
    ScaleView,
    evaluate,
    failed_get_scale,
    failed_rescale,
)
from core.autoscaling.model import HorizontalPodAutoscaler
from core.autoscaling.replicas import ContainerRequests, PodInfo, Sample
from core.errors import FleetError
from core.kubeapi.scale import selector_text
from core.meta.labels import Selector
from core.meta.quantity import parse_quantity
from core.meta.timestamps import parse_stamp
from handlers.controller import ControllerLoop, Leadership, LoopOptions
from projections.cluster import ClusterModel, ObjectRecord
from projections.metrics import Described, PodMetrics
from projections.ownership import Key
from projections.podlabels import PodLabelIndex
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.leases import LeaderLease
from streams.subjects import AggregateRef
from streams.telemetry import MetricSample, PodUsage

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = structlog.get_logger(__name__)

ROLE = "horizontal-pod-autoscaler"
ACTOR = f"system:{ROLE}"
KIND = "HorizontalPodAutoscaler"
TARGET_KINDS = {"Deployment": "deployments.apps", "ReplicaSet": "replicasets.apps"}
"""The kinds whose scale the controller reads, with the resource name kube's errors use."""
_TARGET_EVENTS = ("Created", "Updated", "Deleted", "StatusUpdated")
DEFAULT_OPTIONS = ControllerOptions()
_POD_EVENTS = frozenset({"PodReady", "PodNotReady", "PodDeleted", "PodFailed", "PodSucceeded"})

TargetKey = tuple[str, str, str]
"""(namespace, kind, name) of a scale target."""


def _since(stamp: object) -> float | None:
    ns = parse_stamp(stamp)
    return None if ns is None else ns / 1e9


def pod_info(record: ObjectRecord) -> PodInfo:
    """What the replica calculator reads of a pod."""
    manifest = record.manifest
    status = manifest.get("status") or {}
    ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
    containers = []
    spec = manifest.get("spec") or {}
    sidecars = [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    for c in [*(spec.get("containers") or ()), *sidecars]:
        requests = (c.get("resources") or {}).get("requests") or {}
        milli = {}
        for resource, quantity in requests.items():
            with contextlib.suppress(ValueError, Exception):
                milli[resource] = parse_quantity(str(quantity)).milli_value()
        containers.append(ContainerRequests(c.get("name", ""), milli))
    return PodInfo(
        name=record.name,
        phase=status.get("phase") or "Pending",
        ready=ready.get("status") if ready is not None else None,
        ready_since=_since(ready.get("lastTransitionTime")) if ready is not None else None,
        start_time=_since(status.get("startTime")) or record.created_ns / 1e9,
        deleting=bool((manifest.get("metadata") or {}).get("deletionTimestamp")),
        containers=tuple(containers),
    )


def resource_samples(
    pods: Iterable[str], usage_of: Mapping[str, PodUsage]
) -> dict[tuple[str, str], dict[str, Sample]]:
    """Per (resource, container — "" for the pod), each pod's sample in milli-units."""
    out: dict[tuple[str, str], dict[str, Sample]] = {}
    for name in pods:
        usage = usage_of.get(name)
        if usage is None:
            continue
        at, window = usage.at_ns / 1e9, usage.window_s
        for resource, total in (
            ("cpu", usage.cpu_millicores),
            ("memory", usage.memory_bytes * 1000),
        ):
            out.setdefault((resource, ""), {})[name] = Sample(total, at, window)
        for cname, c in usage.containers.items():
            out.setdefault(("cpu", cname), {})[name] = Sample(c.cpu_millicores, at, window)
            out.setdefault(("memory", cname), {})[name] = Sample(c.memory_bytes * 1000, at, window)
    return out


def _metric_selector(selector: Any) -> Selector:
    """A metric's ``selector``: absent selects every series of the metric (as the custom and
    external metrics APIs read an empty selector)."""
    if selector is None:
        return Selector()
    return Selector.from_manifest(selector.model_dump(mode="json", by_alias=True))


def _summed(samples: list[MetricSample]) -> Sample:
    """One pod's value from the series of it the selector matched: their sum, as of the latest
    and over the widest window among them."""
    return Sample(
        sum(s.milli_value for s in samples),
        max(s.at_ns for s in samples) / 1e9,
        max(s.window_s for s in samples),
    )


def _object_and_external_series(namespace: str, manifest: Mapping[str, Any]) -> Iterable[Described]:
    """The Object and External series an HPA reads (whatever their labels), from its manifest
    as stored, so a sample of one of them makes it due."""
    for metric in (manifest.get("spec") or {}).get("metrics") or ():
        if not isinstance(metric, Mapping):
            continue
        if metric.get("type") == "Object":
            source = metric.get("object") or {}
            described = source.get("describedObject") or {}
            yield (
                "objects", namespace, str(described.get("kind", "")),
                str(described.get("name", "")), str((source.get("metric") or {}).get("name", "")),
            )  # fmt: skip
        elif metric.get("type") == "External":
            name = str(((metric.get("external") or {}).get("metric") or {}).get("name", ""))
            yield ("external", namespace, "", "", name)


def _reasons(status: Mapping[str, Any]) -> dict[str, str]:
    """Each condition's status and reason (``AbleToScale``: ``True/ScaleDownStabilized``): what
    a recorded "no change" is recorded on a change of."""
    return {
        str(c.get("type")): f"{c.get('status')}/{c.get('reason')}"
        for c in status.get("conditions") or ()
        if isinstance(c, Mapping)
    }


def recheck_at(decision: Decision, hpa: HorizontalPodAutoscaler, options: ControllerOptions,
               now: float) -> float | None:  # fmt: skip
    """When the windows or policies that held this decision back may let it go: the earliest
    instant a remembered recommendation leaves its window or a scale event its period; None
    when nothing held it."""
    why = decision.why
    recommendation = why.get("recommendation")
    if recommendation is None or recommendation == decision.desired_replicas:
        return None
    behavior = behavior_of(
        hpa.spec.behavior, downscale_stabilization=options.downscale_stabilization
    )
    if behavior is None:
        windows = [options.downscale_stabilization]
        periods: list[int] = []
    else:
        windows = [
            behavior.scale_up.stabilization_window_seconds,
            behavior.scale_down.stabilization_window_seconds,
        ]
        periods = [
            p.period_seconds
            for rules in (behavior.scale_up, behavior.scale_down)
            for p in rules.policies
        ]
    longest_window = max(windows, default=0)
    instants = [r.at + w for r in decision.history.recommendations for w in windows if w]
    instants += [
        e.at + p
        for events in (decision.history.scale_ups, decision.history.scale_downs)
        for e in events
        for p in periods
    ]
    future = [t for t in instants if t > now]
    if not future and longest_window:
        return now + 1.0
    return min(future) if future else None


class HorizontalController:
    """Evaluates HPAs as their inputs change, as the elected ``horizontal-pod-autoscaler``."""

    def __init__(
        self,
        nc: Client,
        store: EventStore,
        projection: Projection[ClusterModel],
        metrics: PodMetrics,
        leader: Leadership,
        *,
        options: ControllerOptions = DEFAULT_OPTIONS,
        **loop: Unpack[LoopOptions],
    ) -> None:
        self._store = store
        self._projection = projection
        self.metrics = metrics
        self.options = options
        self._commands = CommandClient(nc, actor=ACTOR)
        self._histories: dict[Key, History] = {}
        self._targets: dict[TargetKey, set[Key]] = {}
        self._target_of: dict[Key, TargetKey] = {}
        self._readers: dict[Described, set[Key]] = {}
        self._read_by: dict[Key, list[Described]] = {}
        # The pods a target's selector matches, without testing the namespace's every pod.
        self._pods = PodLabelIndex(projection.model)
        self.evaluations = 0
        self.scaled = 0
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
        store: EventStore,
        projection: Projection[ClusterModel],
        metrics: PodMetrics,
        *,
        options: ControllerOptions = DEFAULT_OPTIONS,
        **loop: Unpack[LoopOptions],
    ) -> HorizontalController:
        leader = await LeaderLease.open(nc, ROLE)
        return cls(nc, store, projection, metrics, leader, options=options, **loop)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        for record in self._projection.model.list(KIND):
            self._index(record.namespace, record.name, record.manifest)
        # From the model as it is now: the loop's listener keeps it current from here on.
        self._pods = PodLabelIndex(self._projection.model)
        self.metrics.listeners.append(self._on_sample)
        self.metrics.metric_listeners.append(self._on_metric)
        try:
            await self.loop.run(ready)
        finally:
            with contextlib.suppress(ValueError):
                self.metrics.listeners.remove(self._on_sample)
            with contextlib.suppress(ValueError):
                self.metrics.metric_listeners.remove(self._on_metric)

    # -- what makes an HPA due ------------------------------------------------------------

    def _index(self, namespace: str, name: str, manifest: Mapping[str, Any] | None) -> None:
        key = (namespace, name)
        old = self._target_of.pop(key, None)
        if old is not None:
            self._targets.get(old, set()).discard(key)
        for described in self._read_by.pop(key, []):
            self._readers.get(described, set()).discard(key)
        if manifest is None:
            return
        ref = (manifest.get("spec") or {}).get("scaleTargetRef") or {}
        target = (namespace, str(ref.get("kind", "")), str(ref.get("name", "")))
        self._target_of[key] = target
        self._targets.setdefault(target, set()).add(key)
        read = list(_object_and_external_series(namespace, manifest))
        self._read_by[key] = read
        for described in read:
            self._readers.setdefault(described, set()).add(key)

    def _hpas_of(self, namespace: str, kind: str, name: str) -> set[Key]:
        return self._targets.get((namespace, kind, name), set())

    def _hpas_of_pod(self, namespace: str, pod: Mapping[str, Any]) -> set[Key]:
        """The HPAs whose target owns the pod (its replica set, or that set's deployment)."""
        keys: set[Key] = set()
        for owner in (pod.get("metadata") or {}).get("ownerReferences") or ():
            if not owner.get("controller"):
                continue
            kind, name = str(owner.get("kind")), str(owner.get("name"))
            keys |= self._hpas_of(namespace, kind, name)
            if kind == "ReplicaSet":
                rs = self._projection.model.get("ReplicaSet", namespace, name)
                for up in ((rs.manifest.get("metadata") or {}).get("ownerReferences") or ()
                           if rs is not None else ()):  # fmt: skip
                    if up.get("controller"):
                        keys |= self._hpas_of(namespace, str(up.get("kind")), str(up.get("name")))
        return keys

    def _keys_of(self, event: StoredEvent) -> Iterable[Key]:
        e = event.envelope
        if e.kind == KIND:
            if e.type in (f"{KIND}Created", f"{KIND}Updated"):
                self._index(e.namespace, e.name, e.payload.get("manifest"))
            elif e.type == f"{KIND}Deleted":
                self._index(e.namespace, e.name, None)
            return [] if e.type == f"{KIND}StatusUpdated" else [(e.namespace, e.name)]
        if e.kind in TARGET_KINDS and (
            e.type == "ScaledTo" or any(e.type == f"{e.kind}{s}" for s in _TARGET_EVENTS)
        ):
            return self._hpas_of(e.namespace, e.kind, e.name)
        if e.kind == "Pod":
            self._pods.observe(e.namespace, e.name)
        if e.kind == "Pod" and e.type in _POD_EVENTS:
            if e.type == "PodDeleted":
                self.metrics.forget(e.namespace, e.name)
            record = self._projection.model.get("Pod", e.namespace, e.name)
            return self._hpas_of_pod(e.namespace, record.manifest) if record is not None else []
        return []

    def _on_sample(self, usage: PodUsage) -> None:
        record = self._projection.model.get("Pod", usage.namespace, usage.name)
        if record is None:
            return
        for key in self._hpas_of_pod(usage.namespace, record.manifest):
            self.loop.mark(key)

    def _on_metric(self, sample: MetricSample) -> None:
        """A workload-published sample: a pod's makes its target's HPAs due (as a usage
        sample does), an object's or an External one those HPAs that read that series."""
        if sample.source == "pods":
            record = self._projection.model.get("Pod", sample.namespace, sample.name)
            keys = set() if record is None else self._hpas_of_pod(sample.namespace, record.manifest)
        else:
            described: Described = (
                sample.source, sample.namespace, sample.kind, sample.name, sample.metric,
            )  # fmt: skip
            keys = self._readers.get(described, set())
        for key in keys:
            self.loop.mark(key)

    # -- one evaluation ---------------------------------------------------------------------

    async def reconcile(self, key: Key) -> int | None:
        namespace, name = key
        record = self._projection.model.get(KIND, namespace, name)
        if record is None:
            self._histories.pop(key, None)
            self.loop.forget(key)
            return None
        parsed = parse_manifest(record.manifest)
        assert isinstance(parsed, HorizontalPodAutoscaler)
        hpa = parsed
        now = time.time()
        cause = self.loop.cause(key, record.last_seq)
        ref = hpa.spec.scale_target_ref
        target = (
            self._projection.model.get(ref.kind, namespace, ref.name)
            if ref.kind in TARGET_KINDS
            else None
        )
        if target is None:
            if ref.kind in TARGET_KINDS:
                error = f'{TARGET_KINDS[ref.kind]} "{ref.name}" not found'
            else:
                group = (
                    (ref.api_version or "").split("/")[0] if "/" in (ref.api_version or "") else ""
                )
                error = f'no matches for kind "{ref.kind}" in group "{group}"'
            status = failed_get_scale(hpa, error=error, now=now)
            await self._record_status(record, status, cause.kwargs())
            return None
        spec = target.manifest.get("spec") or {}
        scale = ScaleView(
            spec_replicas=int(spec.get("replicas", 1)),
            status_replicas=int((target.manifest.get("status") or {}).get("replicas") or 0),
            selector=selector_text(spec.get("selector")),
        )
        readings = self._readings(hpa, namespace, spec.get("selector") or {}, now=now)
        history = self._histories.get(key)
        if history is None:
            history = await self._rebuilt_history(hpa, target, now)
        competing = [
            f"{namespace}/{other}"
            for (_ns, other) in self._hpas_of(namespace, ref.kind, ref.name)
            if other != name
        ]
        decision = evaluate(
            hpa, scale=scale, readings=readings, history=history, now=now,
            options=self.options, competing_hpas=competing,
        )  # fmt: skip
        self.evaluations += 1
        if decision.rescale:
            try:
                await self._commands.send(
                    ref.kind,
                    "scale",
                    {
                        "name": ref.name,
                        "namespace": namespace,
                        "replicas": decision.desired_replicas,
                        "reason": f"horizontal pod autoscaler {name}: {decision.reason}",
                        "why": {**decision.why, "hpa": name},
                    },
                    idempotency_key=(
                        f"{ROLE}.scale.{target.uid}.{target.version}.{decision.desired_replicas}"
                    ),
                    expected_version=target.version,
                    **cause.kwargs(),
                )
                self.scaled += 1
            except FleetError as exc:
                decision = failed_rescale(decision, error=exc.message, now=now)
        self._histories[key] = decision.history
        why = None
        if not decision.rescale and _reasons(decision.status) != _reasons(
            record.manifest.get("status") or {}
        ):
            why = {**decision.why, "hpa": name, "conditions": _reasons(decision.status)}
        await self._record_status(record, decision.status, cause.kwargs(), why=why)
        at = recheck_at(decision, hpa, self.options, now)
        return None if at is None else int(at * 1e9)

    def _readings(
        self,
        hpa: HorizontalPodAutoscaler,
        namespace: str,
        selector: Mapping[str, Any],
        *,
        now: float,
    ) -> Readings:
        pods = self._pods.matching(namespace, selector)
        usage_of = {
            r.name: u for r in pods if (u := self.metrics.of(namespace, r.name)) is not None
        }
        now_ns = int(now * 1e9)
        pods_metrics: dict[str, dict[str, Sample]] = {}
        objects: dict[tuple[str, str, str], int] = {}
        external: dict[str, tuple[int, ...]] = {}
        for spec in hpa.spec.metrics or ():
            if spec.type == "Pods" and spec.pods is not None:
                metric = spec.pods.metric
                wanted = _metric_selector(metric.selector)
                per_pod = {}
                for r in pods:
                    found = self.metrics.series(
                        ("pods", namespace, "Pod", r.name, metric.name),
                        selector=wanted, now_ns=now_ns,
                    )  # fmt: skip
                    if found:
                        per_pod[r.name] = _summed(found)
                if per_pod:
                    pods_metrics[metric.name] = per_pod
            elif spec.type == "Object" and spec.object is not None:
                described, metric = spec.object.described_object, spec.object.metric
                found = self.metrics.series(
                    ("objects", namespace, described.kind, described.name, metric.name),
                    selector=_metric_selector(metric.selector), now_ns=now_ns,
                )  # fmt: skip
                if found:
                    objects[(described.kind, described.name, metric.name)] = sum(
                        s.milli_value for s in found
                    )
            elif spec.type == "External" and spec.external is not None:
                metric = spec.external.metric
                found = self.metrics.series(
                    ("external", namespace, "", "", metric.name),
                    selector=_metric_selector(metric.selector), now_ns=now_ns,
                )  # fmt: skip
                if found:
                    external[metric.name] = tuple(s.milli_value for s in found)
        return Readings(
            pods=tuple(pod_info(r) for r in pods),
            resources=resource_samples((r.name for r in pods), usage_of),
            pods_metrics=pods_metrics,
            objects=objects,
            external=external,
        )

    async def _rebuilt_history(
        self, hpa: HorizontalPodAutoscaler, target: ObjectRecord, now: float
    ) -> History:
        """The scale events and recommendations of this controller still within the longest
        window or period, from the target's ``ScaledTo`` events (see the module's docstring)."""
        behavior = behavior_of(
            hpa.spec.behavior, downscale_stabilization=self.options.downscale_stabilization
        )
        horizon = float(self.options.downscale_stabilization)
        if behavior is not None:
            horizon = max(
                [behavior.scale_up.stabilization_window_seconds,
                 behavior.scale_down.stabilization_window_seconds]
                + [p.period_seconds for r in (behavior.scale_up, behavior.scale_down)
                   for p in r.policies]
            )  # fmt: skip
        ref = AggregateRef(target.kind, target.namespace, target.name)
        try:
            events = await self._store.read_subject(ref.subject)
        except Exception as exc:  # the log is away: start empty, as Kubernetes does
            log.warning("hpa.history_unread", target=str(ref), error=repr(exc))
            return History()
        history = History()
        for event in events:
            e = event.envelope
            at = e.timestamp_ns / 1e9
            if e.type != "ScaledTo" or e.actor != ACTOR or at < now - horizon:
                continue
            change = int(e.payload["replicas"]) - int(e.payload["previous"])
            why = e.payload.get("why") or {}
            if isinstance(why.get("recommendation"), int):
                history = replace(
                    history,
                    recommendations=(
                        *history.recommendations,
                        Recommendation(why["recommendation"], at),
                    ),
                )
            if behavior is None or change == 0:
                continue
            if change > 0:
                history = replace(history, scale_ups=(*history.scale_ups, ScaleEvent(change, at)))
            else:
                history = replace(
                    history, scale_downs=(*history.scale_downs, ScaleEvent(-change, at))
                )
        return history

    async def _record_status(
        self,
        record: ObjectRecord,
        status: dict[str, Any],
        cause: Mapping[str, Any],
        *,
        why: dict[str, Any] | None = None,
    ) -> None:
        if status == (record.manifest.get("status") or {}):
            return
        body: dict[str, Any] = {"name": record.name, "namespace": record.namespace}
        body["status"] = status
        if why is not None:
            body["why"] = why
        outcome = await self._commands.send(
            KIND,
            "status",
            body,
            idempotency_key=f"{ROLE}.status.{record.uid}.{record.version}",
            expected_version=record.version,
            **cause,
        )
        if outcome.seqs:
            await self._projection.wait_for(max(outcome.seqs))

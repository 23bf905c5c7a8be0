"""The replica calculator: how many replicas one metric asks for, by Kubernetes' rules.

Why this exists: an HPA must give exactly Kubernetes' answer for the same inputs
(``pkg/controller/podautoscaler/replica_calculator.go`` and ``metrics/utilization.go``), and
those answers hang on details: utilisation is the *integer* percentage of the summed requests;
failed and deleting pods are ignored; pending pods, and CPU samples of pods that are not ready
or still starting, are set aside as unready; pods without a sample are "missing" and count as
using their whole request (or the target, if it is above 100 %) on a scale-down and nothing on
a scale-up, while unready pods count as using nothing on a scale-up; after that rebalancing the
ratio is computed again, and the proposal is dropped if it is within tolerance or points the
other way. Object and External ``Value`` targets scale the ready pods by the ratio (or, from
zero replicas, to ``ceil(ratio)``); their ``AverageValue`` targets divide the total by the target.

Everything here is a pure function of plain data: the pods matched by the target's selector
(:class:`PodInfo`), the samples the metrics read model holds (:class:`Sample`, a milli-value with
its timestamp and window, as metrics-server reports them), the tolerances and the instant
``now`` (seconds since the epoch). What could not be computed raises :class:`MetricError` with
Kubernetes' message. The result (:class:`MetricReplicas`) keeps every figure that was used, for
the decision's "why" record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

ReadyStatus = Literal["True", "False", "Unknown"]
CPU: Final = "cpu"
MAX_INT32: Final = 2**31 - 1
MAX_INT64: Final = 2**63 - 1

DEFAULT_TOLERANCE: Final = 0.1
"""``--horizontal-pod-autoscaler-tolerance``."""
DEFAULT_CPU_INITIALIZATION_PERIOD: Final = 300.0
"""``--horizontal-pod-autoscaler-cpu-initialization-period`` (5 minutes), in seconds."""
DEFAULT_INITIAL_READINESS_DELAY: Final = 30.0
"""``--horizontal-pod-autoscaler-initial-readiness-delay``, in seconds."""


class MetricError(Exception):
    """A metric whose replica count cannot be computed, with Kubernetes' message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Tolerances:
    """How far below (``down``) and above (``up``) 1.0 a usage ratio may be and still change
    nothing; both 0.1 unless the HPA sets ``behavior.scale{Down,Up}.tolerance``."""

    down: float = DEFAULT_TOLERANCE
    up: float = DEFAULT_TOLERANCE

    def within(self, ratio: float) -> bool:
        return 1.0 - self.down <= ratio <= 1.0 + self.up


@dataclass(frozen=True, slots=True)
class ContainerRequests:
    """A container's requests in milli-units (``{"cpu": 500, "memory": 268435456000}``), for
    the app containers and the restartable init containers (sidecars) of a pod."""

    name: str
    requests: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the calculator reads of a pod. ``ready`` is the status of its Ready condition (None:
    no such condition), ``ready_since`` that condition's last transition; times are seconds
    since the epoch."""

    name: str
    phase: str = "Running"
    ready: ReadyStatus | None = "True"
    ready_since: float | None = None
    start_time: float | None = None
    deleting: bool = False
    containers: tuple[ContainerRequests, ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """One pod's metric: a milli-value measured over ``window`` seconds ending at ``timestamp``."""

    value: int
    timestamp: float = 0.0
    window: float = 0.0


@dataclass(frozen=True, slots=True)
class Timing:
    """The controller's timing options, and now."""

    now: float
    cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD
    initial_readiness_delay: float = DEFAULT_INITIAL_READINESS_DELAY


Outcome = Literal[
    "scaled",
    "within-tolerance",
    "direction-flipped",
    "replica-count-flipped",
    "from-zero",
]


@dataclass(frozen=True, slots=True)
class MetricReplicas:
    """One metric's proposal and everything it was computed from.

    ``usage`` is what ``status.currentMetrics`` shows: the utilisation percentage
    (``utilization``) and the average raw milli-value for a Utilization target, the average
    milli-value for an average target, the total for a Value target. ``per_pod`` are the
    values that entered the final calculation (after missing and unready pods were filled in).
    """

    replicas: int
    usage: int
    ratio: float
    outcome: Outcome
    utilization: int | None = None
    ready: int = 0
    unready: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    per_pod: Mapping[str, int] = field(default_factory=dict)
    rebalanced_ratio: float | None = None


# --------------------------------------------------------------------------------------------
# Pods and requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodGroups:
    """``groupPods``: how each pod matched by the selector enters the calculation."""

    ready: int
    unready: frozenset[str]
    missing: frozenset[str]
    ignored: frozenset[str]


def group_pods(
    pods: Sequence[PodInfo], samples: Mapping[str, Sample], resource: str, timing: Timing
) -> PodGroups:
    """Deleting and terminal pods are ignored; pending pods are unready; pods without a sample
    are missing. For CPU only, a pod is also unready when it has no Ready condition or start
    time; within the CPU initialisation period when it is not ready or its sample does not yet
    cover a full window since it last changed readiness; after it, when it is not ready and
    has never been (its readiness last changed within the initial readiness delay)."""
    ready = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleting or pod.phase in ("Failed", "Succeeded"):
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        sample = samples.get(pod.name)
        if sample is None:
            missing.add(pod.name)
            continue
        if resource == CPU and _cpu_unready(pod, sample, timing):
            unready.add(pod.name)
            continue
        ready += 1
    return PodGroups(ready, frozenset(unready), frozenset(missing), frozenset(ignored))


def _cpu_unready(pod: PodInfo, sample: Sample, timing: Timing) -> bool:
    if pod.ready is None or pod.start_time is None:
        return True
    # A condition without a transition time reads as Go's zero time: long ago.
    since = -math.inf if pod.ready_since is None else pod.ready_since
    if pod.start_time + timing.cpu_initialization_period > timing.now:
        return pod.ready == "False" or sample.timestamp < since + sample.window
    return pod.ready == "False" and pod.start_time + timing.initial_readiness_delay > since


def pod_requests(pods: Iterable[PodInfo], resource: str, container: str = "") -> dict[str, int]:
    """``calculateRequests`` (containers' requests; pod-level requests are not modelled): each
    pod's summed request of ``resource`` in milli-units, or only ``container``'s. Every pod
    matched must state the request, even one that is otherwise ignored."""
    requests: dict[str, int] = {}
    for pod in pods:
        total = 0
        found = False
        for c in pod.containers:
            if container in ("", c.name):
                if resource not in c.requests:
                    raise MetricError(
                        f"missing request for {resource} in container {c.name} of Pod {pod.name}"
                    )
                total += c.requests[resource]
            if container == c.name:
                found = True
                break
        if container and not found:
            raise MetricError(f"container {container} not found in Pod {pod.name}")
        requests[pod.name] = total
    return requests


def _utilization(
    values: Mapping[str, int], requests: Mapping[str, int], target: int
) -> tuple[float, int, int]:
    """``GetResourceUtilizationRatio``: (ratio, utilisation %, average raw value). Samples of
    pods the requests do not know are extraneous and skipped."""
    total = requested = entries = 0
    for name, value in values.items():
        if name not in requests:
            continue
        total += value
        requested += requests[name]
        entries += 1
    if requested == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = total * 100 // requested
    return utilization / target, utilization, total // entries


def _average(values: Mapping[str, int], target: int) -> tuple[float, int]:
    """``GetMetricUsageRatio``: (ratio, truncated average)."""
    average = sum(values.values()) // len(values)
    return average / target, average


# --------------------------------------------------------------------------------------------
# Per-pod metrics: Resource, ContainerResource, Pods
# --------------------------------------------------------------------------------------------


def _grouped(
    pods: Sequence[PodInfo], samples: Mapping[str, Sample], resource: str, timing: Timing
) -> tuple[PodGroups, dict[str, int]]:
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, samples, resource, timing)
    values = {
        name: s.value
        for name, s in samples.items()
        if name not in groups.ignored and name not in groups.unready
    }
    if not values:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    return groups, values


def _result(groups: PodGroups, values: Mapping[str, int], **figures: object) -> MetricReplicas:
    return MetricReplicas(
        ready=groups.ready,
        unready=tuple(sorted(groups.unready)),
        missing=tuple(sorted(groups.missing)),
        ignored=tuple(sorted(groups.ignored)),
        per_pod=dict(values),
        **figures,  # type: ignore[arg-type]
    )


def resource_utilization_replicas(
    *,
    current: int,
    target_utilization: int,
    resource: str,
    pods: Sequence[PodInfo],
    samples: Mapping[str, Sample],
    tolerances: Tolerances,
    timing: Timing,
    container: str = "",
) -> MetricReplicas:
    """``GetResourceReplicas``: a Resource or ContainerResource metric with a Utilization
    target (a percentage of the pods' requests)."""
    groups, values = _grouped(pods, samples, resource, timing)
    requests = pod_requests(pods, resource, container)
    ratio, utilization, raw = _utilization(values, requests, target_utilization)
    figures = {"usage": raw, "utilization": utilization, "ratio": ratio}
    with_unready = bool(groups.unready) and ratio > 1.0
    if not with_unready and not groups.missing:
        if tolerances.within(ratio):
            return _result(groups, values, replicas=current, outcome="within-tolerance", **figures)
        return _result(
            groups, values, replicas=math.ceil(ratio * groups.ready), outcome="scaled", **figures
        )
    filled = dict(values)
    if groups.missing:
        if ratio < 1.0:
            fallback = max(100, target_utilization)
            for name in groups.missing:
                filled[name] = requests[name] * fallback // 100
        elif ratio > 1.0:
            for name in groups.missing:
                filled[name] = 0
    if with_unready:
        for name in groups.unready:
            filled[name] = 0
    new_ratio, _, _ = _utilization(filled, requests, target_utilization)
    return _rebalanced(groups, filled, current, ratio, new_ratio, tolerances, figures)


def _rebalanced(
    groups: PodGroups,
    filled: Mapping[str, int],
    current: int,
    ratio: float,
    new_ratio: float,
    tolerances: Tolerances,
    figures: Mapping[str, object],
    *,
    check_count: bool = True,
) -> MetricReplicas:
    """The second pass, after missing and unready pods were filled in: keep the current count
    if the new ratio is within tolerance or points the other way, or (``check_count``) if
    counting the filled-in pods turns the replica count against the ratio."""
    extra = {**figures, "rebalanced_ratio": new_ratio}
    if tolerances.within(new_ratio):
        return _result(groups, filled, replicas=current, outcome="within-tolerance", **extra)
    if (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return _result(groups, filled, replicas=current, outcome="direction-flipped", **extra)
    replicas = math.ceil(new_ratio * len(filled))
    if check_count and (
        (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current)
    ):
        return _result(groups, filled, replicas=current, outcome="replica-count-flipped", **extra)
    return _result(groups, filled, replicas=replicas, outcome="scaled", **extra)


def average_value_replicas(
    *,
    current: int,
    target: int,
    pods: Sequence[PodInfo],
    samples: Mapping[str, Sample],
    tolerances: Tolerances,
    timing: Timing,
    resource: str = "",
) -> MetricReplicas:
    """``calcPlainMetricReplicas``: a per-pod average target, for a Resource or
    ContainerResource metric with an AverageValue target (``resource`` named, so CPU samples of
    unready pods are set aside) and for a Pods metric (``resource`` empty). Missing pods count as
    using exactly the target on a scale-down. Samples of pods the selector did not match are
    counted, as Kubernetes counts them."""
    groups, values = _grouped(pods, samples, resource, timing)
    ratio, usage = _average(values, target)
    figures = {"usage": usage, "ratio": ratio}
    with_unready = bool(groups.unready) and ratio > 1.0
    if not with_unready and not groups.missing:
        if tolerances.within(ratio):
            return _result(groups, values, replicas=current, outcome="within-tolerance", **figures)
        return _result(
            groups, values, replicas=math.ceil(ratio * groups.ready), outcome="scaled", **figures
        )
    filled = dict(values)
    if groups.missing:
        if ratio < 1.0:
            for name in groups.missing:
                filled[name] = target
        elif ratio > 1.0:
            for name in groups.missing:
                filled[name] = 0
    if with_unready:
        for name in groups.unready:
            filled[name] = 0
    new_ratio, _ = _average(filled, target)
    return _rebalanced(groups, filled, current, ratio, new_ratio, tolerances, figures)


# --------------------------------------------------------------------------------------------
# Object and External metrics
# --------------------------------------------------------------------------------------------


def ready_pod_count(pods: Sequence[PodInfo]) -> int:
    """``getReadyPodsCount``: running pods whose Ready condition is True."""
    if not pods:
        raise MetricError(
            "unable to calculate ready pods: no pods returned by selector while calculating "
            "replica count"
        )
    return sum(1 for p in pods if p.phase == "Running" and p.ready == "True")


def _ratio_replicas(
    *, current: int, ratio: float, pods: Sequence[PodInfo], tolerances: Tolerances
) -> tuple[int, Outcome, int]:
    """``getUsageRatioReplicaCount``: (replicas, outcome, ready pods used). From zero replicas
    the ratio alone decides (scale to zero or to ``ceil(ratio)``), without tolerance."""
    if current == 0:
        return math.ceil(ratio), "from-zero", 0
    if tolerances.within(ratio):
        return current, "within-tolerance", 0
    ready = ready_pod_count(pods)
    wanted = ratio * ready
    return (MAX_INT32 if wanted > MAX_INT32 else math.ceil(wanted)), "scaled", ready


def object_value_replicas(
    *, current: int, value: int, target: int, pods: Sequence[PodInfo], tolerances: Tolerances
) -> MetricReplicas:
    """``GetObjectMetricReplicas``: an Object metric with a Value target."""
    ratio = value / target
    replicas, outcome, ready = _ratio_replicas(
        current=current, ratio=ratio, pods=pods, tolerances=tolerances
    )
    return MetricReplicas(replicas=replicas, usage=value, ratio=ratio, outcome=outcome, ready=ready)


def _per_pod_usage(total: int, replicas: int) -> int:
    """``getPerPodUsage``."""
    if total >= MAX_INT64:
        return MAX_INT64
    if replicas == 0:
        return 0
    return math.ceil(total / replicas)


def _average_target_replicas(
    *, status_replicas: int, total: int, target: int, tolerances: Tolerances
) -> MetricReplicas:
    replicas = status_replicas
    ratio = total / (target * replicas) if replicas else math.inf
    outcome: Outcome = "within-tolerance"
    if not tolerances.within(ratio):
        wanted = math.ceil(total / target)
        replicas = MAX_INT32 if wanted > MAX_INT32 else wanted
        outcome = "scaled"
    usage = _per_pod_usage(total, status_replicas)
    return MetricReplicas(replicas=replicas, usage=usage, ratio=ratio, outcome=outcome)


def object_average_replicas(
    *, status_replicas: int, value: int, target: int, tolerances: Tolerances
) -> MetricReplicas:
    """``GetObjectPerPodMetricReplicas``: an Object metric with an AverageValue target, against
    the target's observed replicas (``status.replicas`` of its scale)."""
    return _average_target_replicas(
        status_replicas=status_replicas, total=value, target=target, tolerances=tolerances
    )


def _external_total(values: Iterable[int]) -> int:
    total = 0
    for value in values:
        if value > 0 and total > MAX_INT64 - value:
            return MAX_INT64
        total += value
    return total


def external_value_replicas(
    *,
    current: int,
    values: Sequence[int],
    target: int,
    pods: Sequence[PodInfo],
    tolerances: Tolerances,
) -> MetricReplicas:
    """``GetExternalMetricReplicas``: the sum of the external series against a Value target."""
    total = _external_total(values)
    ratio = total / target
    replicas, outcome, ready = _ratio_replicas(
        current=current, ratio=ratio, pods=pods, tolerances=tolerances
    )
    return MetricReplicas(replicas=replicas, usage=total, ratio=ratio, outcome=outcome, ready=ready)


def external_average_replicas(
    *, status_replicas: int, values: Sequence[int], target: int, tolerances: Tolerances
) -> MetricReplicas:
    """``GetExternalPerPodMetricReplicas``: the sum of the external series per pod."""
    return _average_target_replicas(
        status_replicas=status_replicas,
        total=_external_total(values),
        target=target,
        tolerances=tolerances,
    )

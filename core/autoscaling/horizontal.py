"""One HPA evaluation: every metric, the limits, the conditions and the "why" of the decision.

Why this exists: this is ``reconcileAutoscaler`` of Kubernetes' ``horizontal.go`` without its
I/O. Given the HPA, its target's scale, what the metrics read model holds (:class:`Readings`),
the HPA's remembered :class:`~core.autoscaling.behavior.History` and the instant, it decides the
replica count exactly as Kubernetes would: replicas out of [min, max] are brought back first;
otherwise each metric proposes a count (``core.autoscaling.replicas``), the largest wins, a
metric that cannot be computed blocks a scale-down but not a scale-up, and the result goes
through the stabilisation windows and rate limits (``core.autoscaling.behavior``). It sets the
conditions Kubernetes sets (AbleToScale, ScalingActive, ScalingLimited and their reasons) and
returns, with the new status and history, a JSON-ready "why" record: each metric's figures
(values per pod, ready/unready/missing/ignored pods, the ratio), the recommendation before
limits, the window or policy that held it. That record is what a ``ScaledTo`` event will carry,
so a decision can be explained from the log alone.

The controller that calls this (issue 19, later part) writes the scale through the gateway; if
that write fails it reports it with :func:`failed_rescale`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from core.autoscaling.behavior import (
    DEFAULT_DOWNSCALE_STABILIZATION,
    History,
    Normalized,
    behavior_of,
    normalize_legacy,
    normalize_with_behavior,
    seeded,
    store_scale_event,
)
from core.autoscaling.model import HorizontalPodAutoscaler, MetricSpec, MetricTarget
from core.autoscaling.replicas import (
    DEFAULT_CPU_INITIALIZATION_PERIOD,
    DEFAULT_INITIAL_READINESS_DELAY,
    DEFAULT_TOLERANCE,
    MetricError,
    MetricReplicas,
    PodInfo,
    Sample,
    Timing,
    Tolerances,
    average_value_replicas,
    external_average_replicas,
    external_value_replicas,
    object_average_replicas,
    object_value_replicas,
    resource_utilization_replicas,
)
from core.errors import ValidationFailed
from core.meta.labels import parse_selector_text
from core.meta.quantity import canonical_quantity, parse_quantity
from core.meta.timestamps import STAMP_FORMAT

NO_RESOURCE_METRICS: Final = "no metrics returned from resource metrics API"
NO_CUSTOM_METRICS: Final = "no metrics returned from custom metrics API"
NO_EXTERNAL_METRICS: Final = "no metrics returned from external metrics API"


@dataclass(frozen=True, slots=True)
class ControllerOptions:
    """kube-controller-manager's HPA options (``--horizontal-pod-autoscaler-*``), in seconds."""

    tolerance: float = DEFAULT_TOLERANCE
    cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD
    initial_readiness_delay: float = DEFAULT_INITIAL_READINESS_DELAY
    downscale_stabilization: int = DEFAULT_DOWNSCALE_STABILIZATION
    configurable_tolerance: bool = True
    """``HPAConfigurableTolerance``: honour ``behavior.scale{Up,Down}.tolerance``."""


@dataclass(frozen=True, slots=True)
class ScaleView:
    """The target's ``scale`` subresource: desired and observed replicas, selector text."""

    spec_replicas: int
    status_replicas: int
    selector: str


@dataclass(frozen=True, slots=True)
class Readings:
    """What the metrics read model holds for this HPA's metrics; a series that is absent reads
    as Kubernetes' "no metrics returned" error.

    ``resources`` is keyed by (resource, container — "" for the whole pod), ``pods_metrics`` by
    metric name, ``objects`` by (described kind, described name, metric name), ``external`` by
    metric name (the values of every series the metric's selector matched). Metric selectors
    are applied by whoever fills these in.
    """

    pods: tuple[PodInfo, ...] = ()
    resources: Mapping[tuple[str, str], Mapping[str, Sample]] = field(default_factory=dict)
    pods_metrics: Mapping[str, Mapping[str, Sample]] = field(default_factory=dict)
    objects: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    external: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConditionChange:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What an evaluation decided. ``desired_replicas`` is what to scale to when ``rescale``;
    ``status`` is the HPA's new status (conditions merged into the previous ones); ``error`` is
    what Kubernetes would return from the reconcile (also set when some metrics failed but the
    others still decided a scale-up)."""

    current_replicas: int
    desired_replicas: int
    rescale: bool
    reason: str
    status: dict[str, Any]
    history: History
    why: dict[str, Any]
    error: str | None = None
    unscaled_history: History | None = None
    """The history without this decision's scale event (what to keep if the write fails)."""
    previous_status: dict[str, Any] = field(default_factory=dict)


def tolerances_for(hpa: HorizontalPodAutoscaler, options: ControllerOptions) -> Tolerances:
    """``tolerancesForHpa``: the controller's tolerance, or a direction's own."""
    down = up = options.tolerance
    behavior = hpa.spec.behavior
    if behavior is not None and options.configurable_tolerance:
        if behavior.scale_down is not None and behavior.scale_down.tolerance is not None:
            down = float(parse_quantity(behavior.scale_down.tolerance).amount)
        if behavior.scale_up is not None and behavior.scale_up.tolerance is not None:
            up = float(parse_quantity(behavior.scale_up.tolerance).amount)
    return Tolerances(down=down, up=up)


def _stamp(now: float) -> str:
    return datetime.fromtimestamp(now, tz=UTC).strftime(STAMP_FORMAT)


def _milli(value: int) -> str:
    return canonical_quantity(f"{value}m")


def _milli_of(quantity: str | None) -> int:
    return parse_quantity(quantity or "0").milli_value()


def merged_conditions(
    previous: Sequence[Mapping[str, Any]], changes: Sequence[ConditionChange], *, now: float
) -> list[dict[str, Any]]:
    """``setConditionInList`` for each change in turn: a condition keeps its place, its
    ``lastTransitionTime`` moves only when its status changes; a new type is appended."""
    out = [dict(c) for c in previous]
    for change in changes:
        existing = next((c for c in out if c.get("type") == change.type), None)
        if existing is None:
            existing = {"type": change.type}
            out.append(existing)
        if existing.get("status") != change.status:
            existing["lastTransitionTime"] = _stamp(now)
        existing.update(status=change.status, reason=change.reason, message=change.message)
    return out


# --------------------------------------------------------------------------------------------
# One metric
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Proposal:
    replicas: int
    name: str
    status: dict[str, Any]
    figures: MetricReplicas


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    message: str
    """The condition's error (what ``getUnableComputeReplicaCountCondition`` is given)."""
    error: str
    """The error as ``computeReplicasForMetric`` returns it."""


def _identifier(metric: Any) -> dict[str, Any]:
    return metric.model_dump(mode="json", by_alias=True, exclude_none=True)


def _selector_repr(metric: Any) -> str:
    selector = metric.selector
    if selector is None:
        return "<nil>"
    return str(selector.model_dump(mode="json", by_alias=True, exclude_none=True))


def _value_status(figures: MetricReplicas, target: MetricTarget) -> dict[str, Any]:
    if target.average_value is not None:
        return {"averageValue": _milli(figures.usage)}
    return {"averageUtilization": figures.utilization, "averageValue": _milli(figures.usage)}


def _metric(
    spec: MetricSpec,
    *,
    hpa: HorizontalPodAutoscaler,
    scale: ScaleView,
    readings: Readings,
    tolerances: Tolerances,
    timing: Timing,
) -> _Proposal | _Failure:
    """``computeReplicasForMetric``: one metric's proposal, or why it has none."""
    current = scale.spec_replicas
    namespace = hpa.metadata.namespace or "default"
    if spec.type in ("Resource", "ContainerResource"):
        source = spec.resource if spec.type == "Resource" else spec.container_resource
        assert source is not None  # validation requires the type's source
        container = getattr(source, "container", "")
        reason = (
            "FailedGetResourceMetric"
            if spec.type == "Resource"
            else "FailedGetContainerResourceMetric"
        )
        target = source.target
        try:
            samples = readings.resources.get((source.name, container))
            if samples is None:
                raise MetricError(
                    f"unable to get metrics for resource {source.name}: {NO_RESOURCE_METRICS}"
                )
            if target.average_value is not None:
                figures = average_value_replicas(
                    current=current,
                    target=_milli_of(target.average_value),
                    pods=readings.pods,
                    samples=samples,
                    tolerances=tolerances,
                    timing=timing,
                    resource=source.name,
                )
                name = f"{source.name} resource"
            else:
                figures = resource_utilization_replicas(
                    current=current,
                    target_utilization=target.average_utilization or 0,
                    resource=source.name,
                    container=container,
                    pods=readings.pods,
                    samples=samples,
                    tolerances=tolerances,
                    timing=timing,
                )
                kind = "container resource" if container else "resource"
                name = f"{source.name} {kind} utilization (percentage of request)"
        except MetricError as err:
            what = "usage" if target.average_value is not None else "utilization"
            inner = f"failed to get {source.name} {what}: {err.message}"
            outer = (
                f"failed to get {source.name} resource metric value: {inner}"
                if not container
                else f"failed to get {container} container metric value: {inner}"
            )
            return _Failure(reason, inner, outer)
        key = "resource" if spec.type == "Resource" else "containerResource"
        status: dict[str, Any] = {"name": source.name, "current": _value_status(figures, target)}
        if container:
            status["container"] = container
        return _Proposal(figures.replicas, name, {"type": spec.type, key: status}, figures)
    if spec.type == "Pods":
        pods = spec.pods
        assert pods is not None
        try:
            samples = readings.pods_metrics.get(pods.metric.name)
            if samples is None:
                raise MetricError(f"unable to get metric {pods.metric.name}: {NO_CUSTOM_METRICS}")
            figures = average_value_replicas(
                current=current,
                target=_milli_of(pods.target.average_value),
                pods=readings.pods,
                samples=samples,
                tolerances=tolerances,
                timing=timing,
            )
        except MetricError as err:
            return _Failure(
                "FailedGetPodsMetric",
                err.message,
                f"failed to get pods metric value: {err.message}",
            )
        status = {
            "type": "Pods",
            "pods": {
                "metric": _identifier(pods.metric),
                "current": {"averageValue": _milli(figures.usage)},
            },
        }
        return _Proposal(figures.replicas, f"pods metric {pods.metric.name}", status, figures)
    if spec.type == "Object":
        obj = spec.object
        assert obj is not None
        described = obj.described_object
        try:
            value = readings.objects.get((described.kind, described.name, obj.metric.name))
            if value is None:
                raise MetricError(
                    f"unable to get metric {obj.metric.name} on {described.kind} "
                    f"{namespace}/{described.name}: {NO_CUSTOM_METRICS}"
                )
            if obj.target.type == "Value" and obj.target.value is not None:
                figures = object_value_replicas(
                    current=current,
                    value=value,
                    target=_milli_of(obj.target.value),
                    pods=readings.pods,
                    tolerances=tolerances,
                )
                current_value = {"value": _milli(figures.usage)}
                name = f"{described.kind} metric {obj.metric.name}"
            elif obj.target.average_value is not None:
                figures = object_average_replicas(
                    status_replicas=scale.status_replicas,
                    value=value,
                    target=_milli_of(obj.target.average_value),
                    tolerances=tolerances,
                )
                current_value = {"averageValue": _milli(figures.usage)}
                # Kubernetes names this proposal "external metric …" (sic); kept for parity.
                name = f"external metric {obj.metric.name}({_selector_repr(obj.metric)})"
            else:
                raise MetricError(
                    "invalid object metric source: neither a value target nor an average value "
                    "target was set"
                )
        except MetricError as err:
            return _Failure(
                "FailedGetObjectMetric",
                err.message,
                f"failed to get object metric value: {err.message}",
            )
        status = {
            "type": "Object",
            "object": {
                "describedObject": _identifier(described),
                "metric": _identifier(obj.metric),
                "current": current_value,
            },
        }
        return _Proposal(figures.replicas, name, status, figures)
    if spec.type == "External":
        ext = spec.external
        assert ext is not None
        selector = _selector_repr(ext.metric)
        try:
            values = readings.external.get(ext.metric.name)
            if values is None:
                raise MetricError(
                    f"unable to get external metric {namespace}/{ext.metric.name}/{selector}: "
                    f"{NO_EXTERNAL_METRICS}"
                )
            if ext.target.average_value is not None:
                figures = external_average_replicas(
                    status_replicas=scale.status_replicas,
                    values=values,
                    target=_milli_of(ext.target.average_value),
                    tolerances=tolerances,
                )
                current_value = {"averageValue": _milli(figures.usage)}
            else:
                figures = external_value_replicas(
                    current=current,
                    values=values,
                    target=_milli_of(ext.target.value),
                    pods=readings.pods,
                    tolerances=tolerances,
                )
                current_value = {"value": _milli(figures.usage)}
        except MetricError as err:
            return _Failure(
                "FailedGetExternalMetric",
                err.message,
                f"failed to get {ext.metric.name} external metric value: {err.message}",
            )
        status = {
            "type": "External",
            "external": {"metric": _identifier(ext.metric), "current": current_value},
        }
        name = f"external metric {ext.metric.name}({selector})"
        return _Proposal(figures.replicas, name, status, figures)
    message = f'unknown metric source type "{spec.type}"'
    return _Failure("InvalidMetricSourceType", message, message)


def _figures_record(figures: MetricReplicas) -> dict[str, Any]:
    record: dict[str, Any] = {
        "replicas": figures.replicas,
        "usage": figures.usage,
        "ratio": figures.ratio,
        "outcome": figures.outcome,
        "readyPods": figures.ready,
        "unreadyPods": list(figures.unready),
        "missingPods": list(figures.missing),
        "ignoredPods": list(figures.ignored),
        "perPod": dict(sorted(figures.per_pod.items())),
    }
    if figures.utilization is not None:
        record["utilization"] = figures.utilization
    if figures.rebalanced_ratio is not None:
        record["rebalancedRatio"] = figures.rebalanced_ratio
    return record


# --------------------------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------------------------


def _unable(reason: str, err: str) -> ConditionChange:
    return ConditionChange(
        "ScalingActive", "False", reason, f"the HPA was unable to compute the replica count: {err}"
    )


def evaluate(
    hpa: HorizontalPodAutoscaler,
    *,
    scale: ScaleView,
    readings: Readings,
    history: History,
    now: float,
    options: ControllerOptions = ControllerOptions(),
    competing_hpas: Sequence[str] = (),
) -> Decision:
    """Decide the HPA's replica count now. ``competing_hpas`` are the other HPAs whose
    selectors match this one's pods (Kubernetes refuses to act then: AmbiguousSelector)."""
    spec = hpa.spec
    namespace = hpa.metadata.namespace or "default"
    reference = f"{spec.scale_target_ref.kind}/{namespace}/{spec.scale_target_ref.name}"
    previous = (hpa.status.model_dump(mode="json", by_alias=True, exclude_none=True)
                if hpa.status else {})  # fmt: skip
    changes = [
        ConditionChange(
            "AbleToScale",
            "True",
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        )
    ]
    current = scale.spec_replicas
    history = seeded(history, current=current, now=now)
    min_replicas = spec.min_replicas if spec.min_replicas is not None else 1
    tolerances = tolerances_for(hpa, options)
    why: dict[str, Any] = {
        "currentReplicas": current,
        "minReplicas": min_replicas,
        "maxReplicas": spec.max_replicas,
        "tolerances": {"down": tolerances.down, "up": tolerances.up},
    }
    metric_statuses: list[dict[str, Any]] = []
    desired = 0
    reason = ""
    rescale = True
    error: str | None = None
    normalized: Normalized | None = None

    if current == 0:
        # HPAScaleToZero off (Kubernetes' default): a target scaled to zero by hand stays there.
        rescale = False
        changes.append(
            ConditionChange(
                "ScalingActive",
                "False",
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            )
        )
    elif current > spec.max_replicas:
        reason, desired = "Current number of replicas above Spec.MaxReplicas", spec.max_replicas
    elif current < min_replicas:
        reason, desired = "Current number of replicas below Spec.MinReplicas", min_replicas
    else:
        outcome = _metrics(
            hpa, scale=scale, readings=readings, tolerances=tolerances, now=now, options=options,
            competing_hpas=competing_hpas, reference=reference,
        )  # fmt: skip
        changes += outcome.changes
        metric_statuses = outcome.statuses
        why["metrics"] = outcome.records
        error = outcome.error
        if outcome.replicas == -1:
            status = _status(previous, changes, current=current,
                             desired=previous.get("desiredReplicas", 0),
                             metrics=metric_statuses, rescale=False, now=now)  # fmt: skip
            why.update(desiredReplicas=current, error=error)
            return Decision(current, current, False, "", status, history, why, error)
        if outcome.replicas > desired:
            desired = outcome.replicas
            rescale_metric = outcome.name
        else:
            rescale_metric = ""
        if desired > current:
            reason = f"{rescale_metric} above target"
        if desired < current:
            reason = "All metrics below target"
        why["recommendation"] = desired
        why["metric"] = outcome.name
        behavior = behavior_of(
            spec.behavior, downscale_stabilization=options.downscale_stabilization
        )
        if behavior is None:
            normalized = normalize_legacy(
                history, current=current, desired=desired, min_replicas=min_replicas,
                max_replicas=spec.max_replicas, now=now,
                downscale_stabilization=options.downscale_stabilization,
            )  # fmt: skip
        else:
            normalized = normalize_with_behavior(
                history, current=current, desired=desired, min_replicas=min_replicas,
                max_replicas=spec.max_replicas, behavior=behavior, now=now,
            )  # fmt: skip
        history = normalized.history
        changes.append(
            ConditionChange("AbleToScale", "True", normalized.able_reason, normalized.able_message)
        )
        changes.append(
            ConditionChange(
                "ScalingLimited",
                "True" if normalized.limited else "False",
                normalized.limit_reason,
                normalized.limit_message,
            )
        )
        why["stabilization"] = _stabilization_record(normalized)
        why["limit"] = _limit_record(normalized)
        desired = normalized.replicas
        rescale = desired != current

    unscaled = history
    if rescale:
        changes.append(
            ConditionChange(
                "AbleToScale",
                "True",
                "SucceededRescale",
                f"the HPA controller was able to update the target scale to {desired}",
            )
        )
        behavior = behavior_of(
            spec.behavior, downscale_stabilization=options.downscale_stabilization
        )
        history = store_scale_event(
            history, behavior=behavior, previous=current, new=desired, now=now
        )
    else:
        desired = current
    why.update(desiredReplicas=desired, reason=reason)
    if error is not None:
        why["error"] = error
    status = _status(previous, changes, current=current, desired=desired,
                     metrics=metric_statuses, rescale=rescale, now=now)  # fmt: skip
    return Decision(
        current, desired, rescale, reason, status, history, why, error, unscaled, dict(previous)
    )


def _stabilization_record(normalized: Normalized) -> dict[str, Any] | None:
    if normalized.stabilized == normalized.recommendation:
        return None
    return {
        "reason": normalized.able_reason,
        "from": normalized.recommendation,
        "to": normalized.stabilized,
        "windowSeconds": normalized.window_seconds,
    }


def _limit_record(normalized: Normalized) -> dict[str, Any]:
    record: dict[str, Any] = {
        "reason": normalized.limit_reason,
        "limited": normalized.limited,
        "from": normalized.stabilized,
        "to": normalized.replicas,
        "lowest": normalized.bounds[0],
        "highest": normalized.bounds[1],
    }
    rate = normalized.rate_limit
    if rate is not None:
        record["selectPolicy"] = rate.select_policy
        record["policyLimit"] = rate.limit
        record["policies"] = [
            {
                "type": part.policy.type,
                "value": part.policy.value,
                "periodSeconds": part.policy.period_seconds,
                "periodStartReplicas": part.period_start,
                "allowed": part.allowed,
            }
            for part in rate.policies
        ]
    return record


def _status(
    previous: Mapping[str, Any],
    changes: Sequence[ConditionChange],
    *,
    current: int,
    desired: int,
    metrics: list[dict[str, Any]],
    rescale: bool,
    now: float,
) -> dict[str, Any]:
    """``setStatus``: the new status, keeping ``lastScaleTime`` unless this evaluation scaled."""
    status: dict[str, Any] = {"currentReplicas": current, "desiredReplicas": desired}
    if metrics:
        status["currentMetrics"] = metrics
    last = _stamp(now) if rescale else previous.get("lastScaleTime")
    if last is not None:
        status["lastScaleTime"] = last
    status["conditions"] = merged_conditions(previous.get("conditions") or [], changes, now=now)
    return status


@dataclass(frozen=True, slots=True)
class _MetricsOutcome:
    replicas: int
    name: str
    statuses: list[dict[str, Any]]
    records: list[dict[str, Any]]
    changes: list[ConditionChange]
    error: str | None


def _metrics(
    hpa: HorizontalPodAutoscaler,
    *,
    scale: ScaleView,
    readings: Readings,
    tolerances: Tolerances,
    now: float,
    options: ControllerOptions,
    competing_hpas: Sequence[str],
    reference: str,
) -> _MetricsOutcome:
    """``computeReplicasForMetrics``: the largest proposal; -1 when no decision may be made
    (every metric failed, or some failed and the others would scale down)."""
    failed = "failed to compute desired number of replicas based on listed metrics for"
    selector_problem = _selector_problem(scale.selector, competing_hpas)
    if selector_problem is not None:
        change, err = selector_problem
        return _MetricsOutcome(-1, "", [], [], [change], err)
    timing = Timing(
        now=now,
        cpu_initialization_period=options.cpu_initialization_period,
        initial_readiness_delay=options.initial_readiness_delay,
    )
    specs = hpa.spec.metrics or []
    replicas, name = 0, ""
    statuses: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    invalid = 0
    first: _Failure | None = None
    for i, spec in enumerate(specs):
        result = _metric(
            spec, hpa=hpa, scale=scale, readings=readings, tolerances=tolerances, timing=timing
        )
        record: dict[str, Any] = {"index": i, "type": spec.type}
        if isinstance(result, _Failure):
            # Kubernetes leaves a zero MetricStatus in place of a metric it could not read.
            statuses.append({"type": ""})
            record["error"] = result.error
            records.append(record)
            if first is None:
                first = result
            invalid += 1
            continue
        statuses.append(result.status)
        record.update(name=result.name, **_figures_record(result.figures))
        records.append(record)
        if replicas == 0 or result.replicas > replicas:
            replicas, name = result.replicas, result.name
    error: str | None = None
    if first is not None:
        error = (
            f"invalid metrics ({invalid} invalid out of {len(specs)}), first error is: "
            f"{first.error}"
        )
    if first is not None and (invalid >= len(specs) or replicas < scale.spec_replicas):
        change = _unable(first.reason, first.message)
        return _MetricsOutcome(
            -1, "", statuses, records, [change], f"{failed} {reference}: {error}"
        )
    change = ConditionChange(
        "ScalingActive",
        "True",
        "ValidMetricFound",
        f"the HPA was able to successfully calculate a replica count from {name}",
    )
    return _MetricsOutcome(replicas, name, statuses, records, [change], error)


def _selector_problem(
    selector: str, competing_hpas: Sequence[str]
) -> tuple[ConditionChange, str] | None:
    """``validateAndParseSelector``."""
    if selector == "":
        return (
            ConditionChange(
                "ScalingActive",
                "False",
                "InvalidSelector",
                "the HPA target's scale is missing a selector",
            ),
            "selector is required",
        )
    try:
        parse_selector_text(selector)
    except ValidationFailed as err:
        message = (
            "couldn't convert selector into a corresponding internal selector object: "
            f"{err.message}"
        )
        return ConditionChange("ScalingActive", "False", "InvalidSelector", message), message
    if competing_hpas:
        message = (
            f"pods by selector {selector} are controlled by more than one HPA "
            f"(e.g. [{' '.join(sorted(competing_hpas))}])"
        )
        return ConditionChange("ScalingActive", "False", "AmbiguousSelector", message), message
    return None


def failed_get_scale(hpa: HorizontalPodAutoscaler, *, error: str, now: float) -> dict[str, Any]:
    """The status when the target's scale cannot be read (a missing target, a kind that cannot
    scale): AbleToScale False, FailedGetScale; the rest unchanged."""
    previous = (
        hpa.status.model_dump(mode="json", by_alias=True, exclude_none=True) if hpa.status else {}
    )
    change = ConditionChange(
        "AbleToScale",
        "False",
        "FailedGetScale",
        f"the HPA controller was unable to get the target's current scale: {error}",
    )
    status = dict(previous)
    status["conditions"] = merged_conditions(previous.get("conditions") or [], [change], now=now)
    return status


def failed_rescale(decision: Decision, *, error: str, now: float) -> Decision:
    """The decision when writing the scale failed: AbleToScale False, FailedUpdateScale; the
    desired count and last scale time stay as they were, no scale event is remembered
    (``setCurrentReplicasAndMetricsInStatus``)."""
    change = ConditionChange(
        "AbleToScale",
        "False",
        "FailedUpdateScale",
        f"the HPA controller was unable to update the target scale: {error}",
    )
    previous = decision.previous_status
    status = dict(decision.status)
    status["desiredReplicas"] = previous.get("desiredReplicas", 0)
    status.pop("lastScaleTime", None)
    if previous.get("lastScaleTime") is not None:
        status["lastScaleTime"] = previous["lastScaleTime"]
    status["conditions"] = merged_conditions(status.get("conditions") or [], [change], now=now)
    history = decision.unscaled_history or decision.history
    return replace(decision, rescale=False, status=status, history=history, error=error)

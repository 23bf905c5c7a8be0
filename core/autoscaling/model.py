"""The HorizontalPodAutoscaler kind (``autoscaling/v2``), its defaults, its validation, and the
``autoscaling/v1`` form converted to it.

Why this exists: users bring Kubernetes' HPA YAML as-is and expect Kubernetes' answers, both
when it is refused and when it is stored. The rules are those of
``pkg/apis/autoscaling/validation`` (messages and field paths) and the defaults those of
``pkg/apis/autoscaling/v2/defaults.go``: ``minReplicas`` 1, a CPU target of 80 % when no metric
is given, and, when ``behavior`` is given, every rule it leaves out filled from the defaults
(scale-up: no window, Max of 4 pods or 100 % per 15 s; scale-down: Max of 100 % per 15 s, the
window left empty for the controller's ``--horizontal-pod-autoscaler-downscale-stabilization``).
Absent ``behavior`` stays absent: the controller then applies the legacy limits.

Two refusals go beyond the API server, because the controller would otherwise fail later with a
condition the user has to go looking for: a ``Utilization`` target on a metric that is not a
(container) resource, and (as Kubernetes with its ``HPAScaleToZero`` gate off, its default)
``minReplicas: 0``. ``autoscaling/v1`` objects (``targetCPUUtilizationPercentage``) are
converted to v2 the way kube-apiserver converts them (:func:`convert_v1`), so one model and one
stored form serve both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, Self

from pydantic import Field, model_validator

from core.errors import FieldError, ValidationFailed
from core.meta.fields import QuantityString, Timestamp
from core.meta.model import K8sModel, Problems, invalid, show, unsupported
from core.meta.names import dns1123_label_errors, dns1123_subdomain_errors
from core.meta.quantity import parse_quantity
from core.meta.types import Condition, LabelSelector, ResourceBase

API_VERSION: Final = "autoscaling/v2"
V1_API_VERSION: Final = "autoscaling/v1"

METRIC_SOURCE_TYPES: Final = ("ContainerResource", "External", "Object", "Pods", "Resource")
"""``validMetricSourceTypesList`` (sorted, as ``sets.String.List`` gives it)."""
_SOURCE_FIELD: Final[Mapping[str, str]] = {
    "Object": "object",
    "Pods": "pods",
    "Resource": "resource",
    "External": "external",
    "ContainerResource": "containerResource",
}
TARGET_TYPES: Final = ("Utilization", "Value", "AverageValue")
SELECT_POLICIES: Final = ("Disabled", "Max", "Min")
POLICY_TYPES: Final = ("Percent", "Pods")
MAX_PERIOD_SECONDS: Final = 1800
MAX_STABILIZATION_WINDOW_SECONDS: Final = 3600
DEFAULT_CPU_UTILIZATION: Final = 80
"""``autoscaling.DefaultCPUUtilization``: the target when an HPA names no metric."""
MIN_REPLICAS_LOWER_BOUND: Final = 1
"""``minReplicas`` may not be below this with ``HPAScaleToZero`` off (Kubernetes' default)."""


def _path_segment_problems(value: str) -> list[str]:
    """``IsValidPathSegmentName``: a name that is one URL path segment."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def _positive(quantity: str | None) -> bool:
    return quantity is None or parse_quantity(quantity).sign() == 1


# --------------------------------------------------------------------------------------------
# spec
# --------------------------------------------------------------------------------------------


class CrossVersionObjectReference(K8sModel):
    """The object scaled (``scaleTargetRef``) or described (an Object metric's object)."""

    kind: str = ""
    name: str = ""
    api_version: str | None = None

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """``ValidateCrossVersionObjectReference``."""
        found = Problems()
        for field, value in (("kind", self.kind), ("name", self.name)):
            if not value:
                found.add("Required value", field)
            for message in _path_segment_problems(value):
                found.add(invalid(value, message), field)
        return found.items


class MetricIdentifier(K8sModel):
    name: str = ""
    selector: LabelSelector | None = None

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        found = Problems()
        if not self.name:
            found.add("Required value: must specify a metric name", "name")
        for message in _path_segment_problems(self.name):
            found.add(invalid(self.name, message), "name")
        return found.items


class MetricTarget(K8sModel):
    """What a metric should be: a total (``Value``), a per-pod average (``AverageValue``), or a
    percentage of the pods' requests (``Utilization``, resources only)."""

    type: str = ""
    value: QuantityString | None = None
    average_value: QuantityString | None = None
    average_utilization: int | None = None

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """``validateMetricTarget``."""
        found = Problems()
        if not self.type:
            found.add("Required value: must specify a metric target type", "type")
        if self.type not in TARGET_TYPES:
            found.add(
                invalid(self.type, "must be either Utilization, Value, or AverageValue"), "type"
            )
        if not _positive(self.value):
            found.add(invalid(self.value, "must be positive"), "value")
        if not _positive(self.average_value):
            found.add(invalid(self.average_value, "must be positive"), "averageValue")
        if self.average_utilization is not None and self.average_utilization < 1:
            found.add(
                invalid(self.average_utilization, "must be greater than 0"), "averageUtilization"
            )
        return found.items

    def not_utilization_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """A percentage of requests means nothing for a metric that is not a resource."""
        found = Problems()
        if self.type == "Utilization":
            found.add(unsupported(self.type, ("AverageValue", "Value")), "type")
        if self.average_utilization is not None:
            found.add(
                "Forbidden: averageUtilization is only meaningful for Resource and "
                "ContainerResource metrics",
                "averageUtilization",
            )
        return found.items


class ResourceMetricSource(K8sModel):
    name: str = ""
    target: MetricTarget = Field(default_factory=MetricTarget)

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        found = Problems()
        if not self.name:
            found.add("Required value: must specify a resource name", "name")
        found.extend(_resource_target_problems(self.target), "target")
        return found.items


class ContainerResourceMetricSource(K8sModel):
    name: str = ""
    container: str = ""
    target: MetricTarget = Field(default_factory=MetricTarget)

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        found = Problems()
        if not self.name:
            found.add("Required value: must specify a resource name", "name")
        if not self.container:
            found.add("Required value: must specify a container", "container")
        else:
            for message in dns1123_label_errors(self.container):
                found.add(invalid(self.container, message), "container")
        found.extend(_resource_target_problems(self.target), "target")
        return found.items


def _resource_target_problems(target: MetricTarget) -> list[tuple[tuple[str | int, ...], str]]:
    found = Problems()
    found.extend(target.problems())
    if target.average_utilization is None and target.average_value is None:
        found.add(
            "Required value: must set either a target raw value or a target utilization",
            "averageUtilization",
        )
    if target.average_utilization is not None and target.average_value is not None:
        found.add(
            "Forbidden: may not set both a target raw value and a target utilization",
            "averageValue",
        )
    return found.items


class PodsMetricSource(K8sModel):
    metric: MetricIdentifier = Field(default_factory=MetricIdentifier)
    target: MetricTarget = Field(default_factory=MetricTarget)

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        found = Problems()
        found.extend(self.metric.problems(), "metric")
        found.extend(self.target.problems(), "target")
        found.extend(self.target.not_utilization_problems(), "target")
        if self.target.average_value is None:
            found.add(
                "Required value: must specify a positive target averageValue",
                "target",
                "averageValue",
            )
        return found.items


class ObjectMetricSource(K8sModel):
    described_object: CrossVersionObjectReference = Field(
        default_factory=CrossVersionObjectReference
    )
    metric: MetricIdentifier = Field(default_factory=MetricIdentifier)
    target: MetricTarget = Field(default_factory=MetricTarget)

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        found = Problems()
        found.extend(self.described_object.problems(), "describedObject")
        found.extend(self.metric.problems(), "metric")
        found.extend(self.target.problems(), "target")
        found.extend(self.target.not_utilization_problems(), "target")
        if self.target.value is None and self.target.average_value is None:
            found.add(
                "Required value: must set either a target value or averageValue",
                "target",
                "averageValue",
            )
        return found.items


class ExternalMetricSource(K8sModel):
    metric: MetricIdentifier = Field(default_factory=MetricIdentifier)
    target: MetricTarget = Field(default_factory=MetricTarget)

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        found = Problems()
        found.extend(self.metric.problems(), "metric")
        found.extend(self.target.problems(), "target")
        found.extend(self.target.not_utilization_problems(), "target")
        if self.target.value is None and self.target.average_value is None:
            found.add(
                "Required value: must set either a target value for metric or a per-pod target",
                "target",
                "averageValue",
            )
        if self.target.value is not None and self.target.average_value is not None:
            found.add(
                "Forbidden: may not set both a target value for metric and a per-pod target",
                "target",
                "value",
            )
        return found.items


MetricSource = (
    ResourceMetricSource
    | ContainerResourceMetricSource
    | PodsMetricSource
    | ObjectMetricSource
    | ExternalMetricSource
)


class MetricSpec(K8sModel):
    """One metric to scale on: its type and the matching source, and nothing else."""

    type: str = ""
    resource: ResourceMetricSource | None = None
    container_resource: ContainerResourceMetricSource | None = None
    pods: PodsMetricSource | None = None
    object: ObjectMetricSource | None = None
    external: ExternalMetricSource | None = None

    def source(self) -> MetricSource | None:
        """The source the type names (None when it is missing or the type is unknown)."""
        field = _SOURCE_FIELD.get(self.type)
        return getattr(self, _snake(field)) if field else None

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """``validateMetricSpec``: the type known, its source given and valid, no other."""
        found = Problems()
        if not self.type:
            found.add("Required value: must specify a metric source type", "type")
        if self.type not in METRIC_SOURCE_TYPES:
            found.add(unsupported(self.type, METRIC_SOURCE_TYPES), "type")
        present = [f for f in ("object", "external", "pods", "resource", "containerResource")
                   if getattr(self, _snake(f)) is not None]  # fmt: skip
        if present:
            # Kubernetes validates only the first source given; the others are refused below.
            first: MetricSource = getattr(self, _snake(present[0]))
            found.extend(first.problems(), present[0])
        expected = _SOURCE_FIELD.get(self.type)
        if expected is not None and expected not in present:
            found.add(
                "Required value: must populate information for the given metric source", expected
            )
        if len(present) > 1:
            for field in sorted(set(present) - {expected}):
                found.add("Forbidden: must populate the given metric source only", field)
        return found.items


def _snake(wire: str) -> str:
    return "container_resource" if wire == "containerResource" else wire


class HPAScalingPolicy(K8sModel):
    """At most ``value`` pods (or percent of the replicas at the period's start) per
    ``periodSeconds``."""

    type: str = ""
    value: int = 0
    period_seconds: int = 0

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """``validateScalingPolicy``."""
        found = Problems()
        if self.type not in POLICY_TYPES:
            found.add(unsupported(self.type, POLICY_TYPES), "type")
        if self.value <= 0:
            found.add(invalid(self.value, "must be greater than zero"), "value")
        if self.period_seconds <= 0:
            found.add(invalid(self.period_seconds, "must be greater than zero"), "periodSeconds")
        if self.period_seconds > MAX_PERIOD_SECONDS:
            found.add(
                invalid(self.period_seconds, f"must be less than or equal to {MAX_PERIOD_SECONDS}"),
                "periodSeconds",
            )
        return found.items


SelectPolicy = str


class HPAScalingRules(K8sModel):
    """One direction's behaviour: how far back to look for a recommendation, which policy
    wins, the policies, and (``HPAConfigurableTolerance``) its own tolerance."""

    stabilization_window_seconds: int | None = None
    select_policy: SelectPolicy | None = None
    policies: list[HPAScalingPolicy] | None = None
    tolerance: QuantityString | None = None

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """``validateScalingRules``."""
        found = Problems()
        window = self.stabilization_window_seconds
        if window is not None and window < 0:
            found.add(
                invalid(window, "must be greater than or equal to zero"),
                "stabilizationWindowSeconds",
            )
        if window is not None and window > MAX_STABILIZATION_WINDOW_SECONDS:
            found.add(
                invalid(
                    window, f"must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}"
                ),
                "stabilizationWindowSeconds",
            )
        if self.select_policy is not None and self.select_policy not in SELECT_POLICIES:
            found.add(unsupported(self.select_policy, SELECT_POLICIES), "selectPolicy")
        if not self.policies:
            found.add("Required value: must specify at least one Policy", "policies")
        for i, policy in enumerate(self.policies or ()):
            found.extend(policy.problems(), "policies", i)
        if self.tolerance is not None and parse_quantity(self.tolerance).sign() < 0:
            found.add(invalid(self.tolerance, "must be greater than or equal to zero"), "tolerance")
        return found.items


class HorizontalPodAutoscalerBehavior(K8sModel):
    scale_up: HPAScalingRules | None = None
    scale_down: HPAScalingRules | None = None


def default_scale_up_rules() -> HPAScalingRules:
    """``defaultHPAScaleUpRules``: no window, the larger of +4 pods and +100 % per 15 s."""
    return HPAScalingRules(
        stabilization_window_seconds=0,
        select_policy="Max",
        policies=[
            HPAScalingPolicy(type="Pods", value=4, period_seconds=15),
            HPAScalingPolicy(type="Percent", value=100, period_seconds=15),
        ],
    )


def default_scale_down_rules() -> HPAScalingRules:
    """``defaultHPAScaleDownRules``: -100 % per 15 s; the window is the controller's."""
    return HPAScalingRules(
        select_policy="Max",
        policies=[HPAScalingPolicy(type="Percent", value=100, period_seconds=15)],
    )


def _filled(given: HPAScalingRules | None, defaults: HPAScalingRules) -> HPAScalingRules:
    """``copyHPAScalingRules``: every field the user set wins, field by field (an explicit
    empty ``policies`` list included, which validation then refuses)."""
    if given is None:
        return defaults
    for field in ("select_policy", "stabilization_window_seconds", "policies", "tolerance"):
        value = getattr(given, field)
        if value is not None:
            setattr(defaults, field, value)
    return defaults


class HorizontalPodAutoscalerSpec(K8sModel):
    scale_target_ref: CrossVersionObjectReference = Field(
        default_factory=CrossVersionObjectReference
    )
    min_replicas: int | None = None
    max_replicas: int = 0
    metrics: list[MetricSpec] | None = None
    behavior: HorizontalPodAutoscalerBehavior | None = None

    @model_validator(mode="after")
    def _default_then_validate(self) -> Self:
        # Kubernetes defaults a request before validating it (SetDefaults_HorizontalPodAutoscaler).
        if self.min_replicas is None:
            self.min_replicas = 1
        if not self.metrics:
            self.metrics = [
                MetricSpec(
                    type="Resource",
                    resource=ResourceMetricSource(
                        name="cpu",
                        target=MetricTarget(
                            type="Utilization", average_utilization=DEFAULT_CPU_UTILIZATION
                        ),
                    ),
                )
            ]
        if self.behavior is not None:
            self.behavior = HorizontalPodAutoscalerBehavior(
                scale_up=_filled(self.behavior.scale_up, default_scale_up_rules()),
                scale_down=_filled(self.behavior.scale_down, default_scale_down_rules()),
            )
        found = Problems()
        if self.min_replicas < MIN_REPLICAS_LOWER_BOUND:
            found.add(
                invalid(
                    self.min_replicas,
                    f"must be greater than or equal to {MIN_REPLICAS_LOWER_BOUND}",
                ),
                "minReplicas",
            )
        if self.max_replicas < 1:
            found.add(invalid(self.max_replicas, "must be greater than 0"), "maxReplicas")
        if self.max_replicas < self.min_replicas:
            found.add(
                invalid(self.max_replicas, "must be greater than or equal to `minReplicas`"),
                "maxReplicas",
            )
        found.extend(self.scale_target_ref.problems(), "scaleTargetRef")
        for i, metric in enumerate(self.metrics):
            found.extend(metric.problems(), "metrics", i)
        if self.behavior is not None:
            for field, rules in (
                ("scaleUp", self.behavior.scale_up),
                ("scaleDown", self.behavior.scale_down),
            ):
                if rules is not None:
                    found.extend(rules.problems(), "behavior", field)
        found.check()
        return self


# --------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------


class MetricValueStatus(K8sModel):
    value: QuantityString | None = None
    average_value: QuantityString | None = None
    average_utilization: int | None = None


class ResourceMetricStatus(K8sModel):
    name: str
    current: MetricValueStatus


class ContainerResourceMetricStatus(K8sModel):
    name: str
    container: str
    current: MetricValueStatus


class PodsMetricStatus(K8sModel):
    metric: MetricIdentifier
    current: MetricValueStatus


class ObjectMetricStatus(K8sModel):
    metric: MetricIdentifier
    current: MetricValueStatus
    described_object: CrossVersionObjectReference


class ExternalMetricStatus(K8sModel):
    metric: MetricIdentifier
    current: MetricValueStatus


class MetricStatus(K8sModel):
    type: str
    resource: ResourceMetricStatus | None = None
    container_resource: ContainerResourceMetricStatus | None = None
    pods: PodsMetricStatus | None = None
    object: ObjectMetricStatus | None = None
    external: ExternalMetricStatus | None = None


class HorizontalPodAutoscalerStatus(K8sModel):
    observed_generation: int | None = None
    last_scale_time: Timestamp | None = None
    current_replicas: int | None = None
    desired_replicas: int | None = None
    current_metrics: list[MetricStatus] | None = None
    conditions: list[Condition] | None = None


class HorizontalPodAutoscaler(ResourceBase):
    """An HPA (``autoscaling/v2``, namespaced); names follow ``ValidateReplicationControllerName``
    (a DNS-1123 subdomain)."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)

    api_version: Literal["autoscaling/v2"] = "autoscaling/v2"
    kind: Literal["HorizontalPodAutoscaler"] = "HorizontalPodAutoscaler"
    spec: HorizontalPodAutoscalerSpec
    status: HorizontalPodAutoscalerStatus | None = None


# --------------------------------------------------------------------------------------------
# autoscaling/v1
# --------------------------------------------------------------------------------------------

_V1_SPEC_FIELDS: Final = frozenset(
    {"scaleTargetRef", "minReplicas", "maxReplicas", "targetCPUUtilizationPercentage"}
)


_V1_STATUS_FIELDS: Final = frozenset(
    {
        "observedGeneration",
        "lastScaleTime",
        "currentReplicas",
        "desiredReplicas",
        "currentCPUUtilizationPercentage",
    }
)


def _unknown_v1_fields(section: str, given: Mapping[str, Any], known: frozenset[str]) -> None:
    """v1 has no ``metrics`` or ``behavior``: a v1 document naming them is refused, as the API
    server's strict decoding refuses a field its version does not have."""
    unknown = sorted(set(given) - known)
    if unknown:
        errors = [FieldError(f"{section}.{f}", f"unknown field {show(f)}") for f in unknown]
        raise ValidationFailed(errors[0].message, field=errors[0].field, errors=errors)


def convert_v1(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An ``autoscaling/v1`` HPA as the ``autoscaling/v2`` document kube-apiserver makes of it:
    ``targetCPUUtilizationPercentage`` becomes a CPU ``Utilization`` metric (none given: the
    v2 default of 80 % applies), ``currentCPUUtilizationPercentage`` a current CPU metric.
    Not converted: the ``autoscaling.alpha.kubernetes.io/*`` annotations through which v1
    clients round-trip v2 fields.
    """
    out = dict(doc)
    out["apiVersion"] = API_VERSION
    spec = doc.get("spec")
    if isinstance(spec, Mapping):
        _unknown_v1_fields("spec", spec, _V1_SPEC_FIELDS)
        new_spec = {k: v for k, v in spec.items() if k != "targetCPUUtilizationPercentage"}
        if "targetCPUUtilizationPercentage" in spec:
            target = spec["targetCPUUtilizationPercentage"]
            new_spec["metrics"] = [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": target},
                    },
                }
            ]
        out["spec"] = new_spec
    status = doc.get("status")
    if isinstance(status, Mapping):
        _unknown_v1_fields("status", status, _V1_STATUS_FIELDS)
        new_status = {k: v for k, v in status.items() if k != "currentCPUUtilizationPercentage"}
        current = status.get("currentCPUUtilizationPercentage")
        if current is not None:
            new_status["currentMetrics"] = [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageUtilization": current}},
                }
            ]
        out["status"] = new_status
    return out


CONVERSIONS: Final = {V1_API_VERSION: convert_v1}
"""apiVersion -> how a document of that version becomes an ``autoscaling/v2`` one."""

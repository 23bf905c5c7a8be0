"""The HorizontalPodAutoscaler kind: defaults (``autoscaling/v2/defaults.go``), validation
messages and paths (``pkg/apis/autoscaling/validation``, cases of its validation_test.go),
the ``autoscaling/v1`` conversion, and its registration as a stored kind."""

from __future__ import annotations

from typing import Any

import pytest

from core.api.kinds import NAMESPACED
from core.api.manifests import dump_manifest, parse_manifest
from core.autoscaling.model import HorizontalPodAutoscaler
from core.errors import ValidationFailed
from core.kubeapi.resources import BY_KIND, BY_PATH


def hpa(spec: dict[str, Any], api_version: str = "autoscaling/v2") -> dict[str, Any]:
    base = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "maxReplicas": 5,
    }
    return {
        "apiVersion": api_version,
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {**base, **spec},
    }


def problems(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as err:
        parse_manifest(hpa(spec))
    return [f"{e.field}: {e.message}" for e in err.value.errors]


def cpu(utilization: int) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": utilization},
        },
    }


def test_defaults_min_replicas_one_and_cpu_80_percent() -> None:
    """SetDefaults_HorizontalPodAutoscaler: minReplicas 1, a CPU 80 % target when no metric."""
    stored = dump_manifest(parse_manifest(hpa({})))
    assert stored["spec"]["minReplicas"] == 1
    assert stored["spec"]["metrics"] == [cpu(80)]
    assert "behavior" not in stored["spec"]  # absent behavior stays absent: legacy limits


def test_partial_behavior_is_completed_from_the_defaults() -> None:
    """SetDefaults_HorizontalPodAutoscalerBehavior / TestGenerateScaleDownRules: what is set
    wins field by field, the rest is Kubernetes' default; the scale-down window stays empty."""
    doc = hpa(
        {
            "behavior": {
                "scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}
            }
        }
    )
    behavior = dump_manifest(parse_manifest(doc))["spec"]["behavior"]
    assert behavior["scaleUp"] == {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    }
    assert behavior["scaleDown"] == {
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    }


def test_stored_form_round_trips() -> None:
    doc = hpa({"metrics": [cpu(50)], "behavior": {"scaleUp": {"tolerance": "0.05"}}})
    stored = dump_manifest(parse_manifest(doc))
    assert dump_manifest(parse_manifest(stored)) == stored


def test_min_greater_than_max() -> None:
    """validation_test "must be greater than or equal to `minReplicas`"."""
    assert problems({"minReplicas": 7}) == [
        "spec.maxReplicas: Invalid value 5: must be greater than or equal to `minReplicas`"
    ]


def test_min_replicas_zero_needs_the_scale_to_zero_gate() -> None:
    """With HPAScaleToZero off (the default) minReplicas has a lower bound of 1."""
    assert problems({"minReplicas": 0}) == [
        "spec.minReplicas: Invalid value 0: must be greater than or equal to 1"
    ]


def test_scale_target_ref_and_max_replicas() -> None:
    assert problems(
        {"scaleTargetRef": {"kind": "Deployment", "name": "a/b"}, "maxReplicas": 0}
    ) == [
        "spec.maxReplicas: Invalid value 0: must be greater than 0",
        "spec.maxReplicas: Invalid value 0: must be greater than or equal to `minReplicas`",
        "spec.scaleTargetRef.name: Invalid value \"a/b\": may not contain '/'",
    ]
    assert problems({"scaleTargetRef": {"name": "web"}}) == [
        "spec.scaleTargetRef.kind: Required value"
    ]


def test_unknown_metric_type() -> None:
    """validation_test "unsupported metric source type"."""
    assert problems({"metrics": [{"type": "Gauge"}]}) == [
        'spec.metrics[0].type: Unsupported value "Gauge": supported values: "ContainerResource", '
        '"External", "Object", "Pods", "Resource"'
    ]


def test_missing_source_and_extra_source() -> None:
    """validation_test "must populate information for the given metric source" and "must
    populate the given metric source only"."""
    assert problems({"metrics": [{"type": "Pods"}]}) == [
        "spec.metrics[0].pods: Required value: must populate information for the given metric source"
    ]
    both = {
        **cpu(50),
        "pods": {
            "metric": {"name": "qps"},
            "target": {"type": "AverageValue", "averageValue": "1"},
        },
    }
    assert problems({"metrics": [both]}) == [
        "spec.metrics[0].pods: Forbidden: must populate the given metric source only"
    ]


def test_resource_target_rules() -> None:
    """validation_test "must set either a target raw value or a target utilization", "may not
    set both", "must be greater than 0", "must be positive"."""
    neither = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}
    assert problems({"metrics": [neither]}) == [
        "spec.metrics[0].resource.target.averageUtilization: Required value: must set either a "
        "target raw value or a target utilization"
    ]
    both = {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 0, "averageValue": "-1"}}}  # fmt: skip
    assert problems({"metrics": [both]}) == [
        'spec.metrics[0].resource.target.averageValue: Invalid value "-1": must be positive',
        "spec.metrics[0].resource.target.averageUtilization: Invalid value 0: must be greater than 0",
        "spec.metrics[0].resource.target.averageValue: Forbidden: may not set both a target raw "
        "value and a target utilization",
    ]


def test_utilization_is_refused_on_metrics_that_are_not_resources() -> None:
    """Kubernetes accepts it and fails every evaluation (FailedGetObjectMetric, "neither a value
    target nor an average value target was set"); fleetlog refuses it up front."""
    obj = {"type": "Object", "object": {
        "describedObject": {"kind": "Service", "name": "front"},
        "metric": {"name": "rps"}, "target": {"type": "Utilization", "averageUtilization": 50}}}  # fmt: skip
    assert problems({"metrics": [obj]}) == [
        'spec.metrics[0].object.target.type: Unsupported value "Utilization": supported values: '
        '"AverageValue", "Value"',
        "spec.metrics[0].object.target.averageUtilization: Forbidden: averageUtilization is only "
        "meaningful for Resource and ContainerResource metrics",
        "spec.metrics[0].object.target.averageValue: Required value: must set either a target "
        "value or averageValue",
    ]


def test_external_and_pods_targets() -> None:
    both = {"type": "External", "external": {"metric": {"name": "queue"},
            "target": {"type": "Value", "value": "10", "averageValue": "2"}}}  # fmt: skip
    assert problems({"metrics": [both]}) == [
        "spec.metrics[0].external.target.value: Forbidden: may not set both a target value for "
        "metric and a per-pod target"
    ]
    pods = {
        "type": "Pods",
        "pods": {"metric": {"name": ""}, "target": {"type": "Value", "value": "1"}},
    }
    assert problems({"metrics": [pods]}) == [
        "spec.metrics[0].pods.metric.name: Required value: must specify a metric name",
        "spec.metrics[0].pods.target.averageValue: Required value: must specify a positive target "
        "averageValue",
    ]


def test_container_resource_needs_a_container() -> None:
    metric = {"type": "ContainerResource", "containerResource": {
        "name": "cpu", "container": "", "target": {"type": "Utilization", "averageUtilization": 60}}}  # fmt: skip
    assert problems({"metrics": [metric]}) == [
        "spec.metrics[0].containerResource.container: Required value: must specify a container"
    ]


def test_behavior_policy_rules() -> None:
    """validation_test's behavior cases: periodSeconds 1..1800, value > 0, window 0..3600,
    selectPolicy values, at least one policy, tolerance >= 0."""
    behavior = {
        "scaleUp": {
            "stabilizationWindowSeconds": 3601,
            "selectPolicy": "Sometimes",
            "policies": [{"type": "Fraction", "value": 0, "periodSeconds": 1801}],
        },
        "scaleDown": {"stabilizationWindowSeconds": -1, "policies": [], "tolerance": "-0.1"},
    }
    assert problems({"behavior": behavior}) == [
        "spec.behavior.scaleUp.stabilizationWindowSeconds: Invalid value 3601: must be less than "
        "or equal to 3600",
        'spec.behavior.scaleUp.selectPolicy: Unsupported value "Sometimes": supported values: '
        '"Disabled", "Max", "Min"',
        'spec.behavior.scaleUp.policies[0].type: Unsupported value "Fraction": supported values: '
        '"Percent", "Pods"',
        "spec.behavior.scaleUp.policies[0].value: Invalid value 0: must be greater than zero",
        "spec.behavior.scaleUp.policies[0].periodSeconds: Invalid value 1801: must be less than "
        "or equal to 1800",
        "spec.behavior.scaleDown.stabilizationWindowSeconds: Invalid value -1: must be greater "
        "than or equal to zero",
        "spec.behavior.scaleDown.policies: Required value: must specify at least one Policy",
        'spec.behavior.scaleDown.tolerance: Invalid value "-100m": must be greater than or equal '
        "to zero",
    ]


def test_v1_is_converted_to_v2() -> None:
    """autoscaling/v1 ``targetCPUUtilizationPercentage`` becomes a CPU Utilization metric and
    the object is stored as autoscaling/v2; without it the v2 default (80 %) applies."""
    stored = dump_manifest(
        parse_manifest(hpa({"targetCPUUtilizationPercentage": 50}, "autoscaling/v1"))
    )
    assert stored["apiVersion"] == "autoscaling/v2"
    assert stored["spec"]["metrics"] == [cpu(50)]
    bare = dump_manifest(parse_manifest(hpa({}, "autoscaling/v1")))
    assert bare["spec"]["metrics"] == [cpu(80)]
    with pytest.raises(ValidationFailed) as err:
        parse_manifest(hpa({"metrics": [cpu(50)]}, "autoscaling/v1"))
    assert (err.value.field, err.value.message) == ("spec.metrics", 'unknown field "metrics"')


def test_v1_status_current_cpu_becomes_a_current_metric() -> None:
    doc = {**hpa({"targetCPUUtilizationPercentage": 50}, "autoscaling/v1"),
           "status": {"currentReplicas": 2, "desiredReplicas": 2, "currentCPUUtilizationPercentage": 40}}  # fmt: skip
    status = dump_manifest(parse_manifest(doc))["status"]
    assert status["currentMetrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}
    ]


def test_other_api_versions_are_refused() -> None:
    with pytest.raises(
        ValidationFailed, match='kind HorizontalPodAutoscaler has apiVersion "autoscaling/v2"'
    ):
        parse_manifest(hpa({}, "autoscaling/v2beta2"))


def test_registered_as_a_namespaced_stored_kind() -> None:
    """``fleetlog apply -f`` and the HTTP door take it: plural horizontalpodautoscalers, short
    name hpa, group autoscaling/v2."""
    assert NAMESPACED["HorizontalPodAutoscaler"] is True
    assert type(parse_manifest(hpa({}))) is HorizontalPodAutoscaler
    resource = BY_KIND["HorizontalPodAutoscaler"]
    assert (resource.group, resource.version, resource.plural) == (
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
    )
    assert resource.short_names == ("hpa",) and resource.namespaced
    assert BY_PATH[("autoscaling", "v2", "horizontalpodautoscalers")] is resource

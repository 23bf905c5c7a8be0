"""One whole HPA evaluation (``core.autoscaling.horizontal.evaluate``) against the cases of
Kubernetes' ``horizontal_test.go``: the max over metrics, invalid metrics blocking only a
scale-down, min/max brought back first, a target at zero, bad selectors, the conditions and
their reasons, status and the "why" record."""

from __future__ import annotations

from typing import Any

from core.api.manifests import parse_manifest
from core.autoscaling.behavior import History, Recommendation
from core.autoscaling.horizontal import (
    Decision,
    Readings,
    ScaleView,
    evaluate,
    failed_get_scale,
    failed_rescale,
)
from core.autoscaling.model import HorizontalPodAutoscaler
from core.autoscaling.replicas import ContainerRequests, PodInfo, Sample

NOW = 1_800_000_000.0
LONG_AGO = NOW - 3600
STAMP = "2027-01-15T08:00:00Z"
EMPTY = History()


def make_hpa(spec: dict[str, Any], status: dict[str, Any] | None = None) -> HorizontalPodAutoscaler:
    doc: dict[str, Any] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 10,
            **spec,
        },
    }
    if status is not None:
        doc["status"] = status
    model = parse_manifest(doc)
    assert isinstance(model, HorizontalPodAutoscaler)
    return model


def cpu_metric(target: int = 30) -> dict[str, Any]:
    return {"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": target}}}  # fmt: skip


def qps_metric(target: str = "10") -> dict[str, Any]:
    return {"type": "Pods", "pods": {"metric": {"name": "qps"},
            "target": {"type": "AverageValue", "averageValue": target}}}  # fmt: skip


def running(n: int) -> tuple[PodInfo, ...]:
    return tuple(
        PodInfo(f"web-{i}", ready="True", ready_since=LONG_AGO + 10, start_time=LONG_AGO,
                containers=(ContainerRequests("app", {"cpu": 1000}),))
        for i in range(n)
    )  # fmt: skip


def cpu_readings(levels: list[int], n: int | None = None) -> Readings:
    return Readings(
        pods=running(n if n is not None else len(levels)),
        resources={("cpu", ""): {f"web-{i}": Sample(v, NOW, 30) for i, v in enumerate(levels)}},
    )


def run(hpa: HorizontalPodAutoscaler, readings: Readings, *, replicas: int,
        history: History = EMPTY, selector: str = "app=web") -> Decision:  # fmt: skip
    return evaluate(
        hpa,
        scale=ScaleView(spec_replicas=replicas, status_replicas=replicas, selector=selector),
        readings=readings,
        history=history,
        now=NOW,
    )


def conditions(decision: Decision) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in decision.status["conditions"]}


def test_scale_up_sets_kubernetes_conditions_status_and_why() -> None:
    """TestScaleUp: 3 pods at 300/500/700m of 1 cpu, target 30 % -> 5."""
    decision = run(make_hpa({"metrics": [cpu_metric()]}), cpu_readings([300, 500, 700]), replicas=3)
    assert (decision.rescale, decision.desired_replicas) == (True, 5)
    assert decision.reason == "cpu resource utilization (percentage of request) above target"
    assert conditions(decision) == {
        "AbleToScale": ("True", "SucceededRescale"),
        "ScalingActive": ("True", "ValidMetricFound"),
        "ScalingLimited": ("False", "DesiredWithinRange"),
    }
    status = decision.status
    assert (status["currentReplicas"], status["desiredReplicas"]) == (3, 5)
    assert status["lastScaleTime"] == STAMP
    assert status["currentMetrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "current": {"averageUtilization": 50, "averageValue": "500m"},
            },
        }
    ]
    why = decision.why
    assert (why["recommendation"], why["desiredReplicas"]) == (5, 5)
    metric = why["metrics"][0]
    assert (metric["utilization"], metric["readyPods"], metric["replicas"]) == (50, 3, 5)
    assert metric["perPod"] == {"web-0": 300, "web-1": 500, "web-2": 700}


def test_the_largest_proposal_wins() -> None:
    """TestScaleUpCMAndResource-like: cpu asks 5, qps 20/pod vs 10 asks 6 -> 6."""
    hpa = make_hpa({"metrics": [cpu_metric(), qps_metric()]})
    readings = cpu_readings([300, 500, 700])
    readings = Readings(
        pods=readings.pods,
        resources=readings.resources,
        pods_metrics={"qps": {f"web-{i}": Sample(20000, NOW, 30) for i in range(3)}},
    )
    decision = run(hpa, readings, replicas=3)
    assert decision.desired_replicas == 6
    assert decision.reason == "pods metric qps above target"


def test_an_invalid_metric_does_not_block_a_scale_up() -> None:
    """TestScaleUpOneMetricInvalid: the readable metric scales up; the error is still reported."""
    hpa = make_hpa({"metrics": [cpu_metric(), qps_metric()]})
    decision = run(hpa, cpu_readings([300, 500, 700]), replicas=3)
    assert decision.desired_replicas == 5 and decision.rescale
    assert decision.error is not None
    assert decision.error.startswith("invalid metrics (1 invalid out of 2), first error is: ")
    assert decision.why["metrics"][1]["error"].endswith(
        "no metrics returned from custom metrics API"
    )


def test_an_invalid_metric_blocks_a_scale_down() -> None:
    """TestScaleDownOneMetricInvalid: cpu would scale 5 -> 3 but qps cannot be read: no change,
    ScalingActive False with the failed metric's reason."""
    hpa = make_hpa({"metrics": [cpu_metric(50), qps_metric()]})
    decision = run(hpa, cpu_readings([100, 300, 500, 250, 250]), replicas=5)
    assert (decision.rescale, decision.desired_replicas) == (False, 5)
    assert conditions(decision)["ScalingActive"] == ("False", "FailedGetPodsMetric")
    message = next(
        c["message"] for c in decision.status["conditions"] if c["type"] == "ScalingActive"
    )
    assert message == (
        "the HPA was unable to compute the replica count: unable to get metric qps: "
        "no metrics returned from custom metrics API"
    )
    assert decision.error is not None and decision.error.startswith(
        "failed to compute desired number of replicas based on listed metrics for "
        "Deployment/shop/web: invalid metrics (1 invalid out of 2)"
    )


def test_missing_request_is_a_failed_resource_metric_condition() -> None:
    """TestEmptyMetrics / missing request: ScalingActive False, FailedGetResourceMetric."""
    readings = cpu_readings([300])
    readings = Readings(pods=(PodInfo("web-0", start_time=LONG_AGO, ready_since=LONG_AGO,
                                      containers=(ContainerRequests("app", {}),)),),
                        resources=readings.resources)  # fmt: skip
    decision = run(make_hpa({"metrics": [cpu_metric()]}), readings, replicas=1)
    assert conditions(decision)["ScalingActive"] == ("False", "FailedGetResourceMetric")
    message = next(
        c["message"] for c in decision.status["conditions"] if c["type"] == "ScalingActive"
    )
    assert message == (
        "the HPA was unable to compute the replica count: failed to get cpu utilization: "
        "missing request for cpu in container app of Pod web-0"
    )


def test_replicas_out_of_range_are_brought_back_without_metrics() -> None:
    """TestMinReplicas / TestMaxReplicas-like: current above max or below min."""
    above = run(make_hpa({"maxReplicas": 4}), Readings(), replicas=7)
    assert (above.desired_replicas, above.reason) == (
        4,
        "Current number of replicas above Spec.MaxReplicas",
    )
    below = run(make_hpa({"minReplicas": 3}), Readings(), replicas=2)
    assert (below.desired_replicas, below.reason) == (
        3,
        "Current number of replicas below Spec.MinReplicas",
    )


def test_a_target_at_zero_disables_scaling() -> None:
    """TestZeroReplicas: ScalingActive False, ScalingDisabled; nothing changes."""
    decision = run(make_hpa({}), Readings(), replicas=0)
    assert (decision.rescale, decision.desired_replicas) == (False, 0)
    assert conditions(decision)["ScalingActive"] == ("False", "ScalingDisabled")


def test_selector_problems() -> None:
    """TestScaleWithoutSelector-like: a scale without selector, an unparsable one, and two HPAs
    on the same pods."""
    hpa = make_hpa({"metrics": [cpu_metric()]})
    missing = run(hpa, cpu_readings([300, 500, 700]), replicas=3, selector="")
    assert conditions(missing)["ScalingActive"] == ("False", "InvalidSelector")
    assert missing.error == "selector is required" and not missing.rescale
    bad = run(hpa, cpu_readings([300]), replicas=1, selector="app in (")
    assert conditions(bad)["ScalingActive"] == ("False", "InvalidSelector")
    ambiguous = evaluate(
        hpa, scale=ScaleView(3, 3, "app=web"), readings=cpu_readings([300, 500, 700]),
        history=EMPTY, now=NOW, competing_hpas=["shop/other"],
    )  # fmt: skip
    assert conditions(ambiguous)["ScalingActive"] == ("False", "AmbiguousSelector")


def test_legacy_downscale_stabilization_reports_scale_down_stabilized() -> None:
    """TestScaleDownStabilizeInitialSize-like: a recommendation of 5 a minute ago holds 5."""
    history = History(recommendations=(Recommendation(5, NOW - 60),))
    decision = run(make_hpa({"metrics": [cpu_metric(50)]}), cpu_readings([100, 300, 500, 250, 250]),
                   replicas=5, history=history)  # fmt: skip
    assert (decision.rescale, decision.desired_replicas) == (False, 5)
    assert conditions(decision)["AbleToScale"] == ("True", "ScaleDownStabilized")
    assert decision.why["stabilization"] == {
        "reason": "ScaleDownStabilized", "from": 3, "to": 5, "windowSeconds": 300,
    }  # fmt: skip
    assert decision.history.recommendations[-1] == Recommendation(3, NOW)


def test_legacy_scale_up_limit() -> None:
    """TestScaleUpLimit-like: 2 pods at 500 % of request: 10 asked, max(2x, 4) = 4 allowed."""
    decision = run(make_hpa({"metrics": [cpu_metric(100)], "maxReplicas": 20}), cpu_readings([5000, 5000]),
                   replicas=2)  # fmt: skip
    assert decision.desired_replicas == 4
    assert conditions(decision)["ScalingLimited"] == ("True", "ScaleUpLimit")
    assert decision.why["limit"]["from"] == 10 and decision.why["recommendation"] == 10


def test_behavior_policy_limit_and_scale_event_memory() -> None:
    """TestScalingWithRules via the evaluation: +1 pod per minute; the next evaluation (10 s
    later) may not add another."""
    behavior = {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
    hpa = make_hpa({"metrics": [cpu_metric()], "behavior": behavior})
    first = run(hpa, cpu_readings([300, 500, 700]), replicas=3)
    assert first.desired_replicas == 4
    assert conditions(first)["ScalingLimited"] == ("True", "ScaleUpLimit")
    assert first.why["limit"]["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": 60, "periodStartReplicas": 3, "allowed": 4}
    ]
    second = evaluate(
        hpa, scale=ScaleView(4, 4, "app=web"), readings=cpu_readings([900, 900, 900, 900]),
        history=first.history, now=NOW + 10,
    )  # fmt: skip
    assert (second.rescale, second.desired_replicas) == (False, 4)


def test_configurable_tolerance() -> None:
    """HPAConfigurableTolerance: 102 % of a 100 % target scales with an up-tolerance of 1 %."""
    behavior = {"scaleUp": {"tolerance": "0.01"}}
    hpa = make_hpa({"metrics": [cpu_metric(100)], "behavior": behavior})
    readings = cpu_readings([1020, 1020, 1020])
    assert run(hpa, readings, replicas=3).desired_replicas == 4
    assert run(make_hpa({"metrics": [cpu_metric(100)]}), readings, replicas=3).rescale is False


def test_conditions_keep_their_transition_time_until_the_status_changes() -> None:
    """setConditionInList: lastTransitionTime moves only when a condition's status changes."""
    earlier = "2026-01-01T00:00:00Z"
    status = {"conditions": [
        {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale", "message": "x",
         "lastTransitionTime": earlier},
        {"type": "ScalingActive", "status": "False", "reason": "ScalingDisabled", "message": "y",
         "lastTransitionTime": earlier},
    ]}  # fmt: skip
    decision = run(
        make_hpa({"metrics": [cpu_metric()]}, status), cpu_readings([300, 500, 700]), replicas=3
    )
    by_type = {c["type"]: c for c in decision.status["conditions"]}
    assert by_type["AbleToScale"]["lastTransitionTime"] == earlier
    assert by_type["ScalingActive"]["lastTransitionTime"] == STAMP
    assert [c["type"] for c in decision.status["conditions"]] == [
        "AbleToScale",
        "ScalingActive",
        "ScalingLimited",
    ]


def test_failed_rescale_and_failed_get_scale() -> None:
    """The scale write failed (FailedUpdateScale: desired count, last scale time and scale
    events as before), or the target cannot be read (FailedGetScale)."""
    behavior = {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
    hpa = make_hpa({"metrics": [cpu_metric()], "behavior": behavior},
                   {"desiredReplicas": 3, "lastScaleTime": "2026-01-01T00:00:00Z"})  # fmt: skip
    decision = run(hpa, cpu_readings([300, 500, 700]), replicas=3)
    assert decision.history.scale_ups
    failed = failed_rescale(decision, error="conflict", now=NOW)
    assert conditions(failed)["AbleToScale"] == ("False", "FailedUpdateScale")
    assert failed.status["desiredReplicas"] == 3
    assert failed.status["lastScaleTime"] == "2026-01-01T00:00:00Z"
    assert not failed.history.scale_ups and not failed.rescale
    missing = failed_get_scale(make_hpa({}), error='deployments.apps "web" not found', now=NOW)
    assert missing["conditions"] == [{
        "type": "AbleToScale", "status": "False", "reason": "FailedGetScale",
        "message": "the HPA controller was unable to get the target's current scale: "
                   'deployments.apps "web" not found',
        "lastTransitionTime": STAMP,
    }]  # fmt: skip


def test_object_and_external_metrics_in_an_evaluation() -> None:
    """TestScaleUpCMObject / TestScaleUpCMExternal-like: an Object Value target and an External
    AverageValue target, with their current metrics."""
    obj = {"type": "Object", "object": {"describedObject": {"apiVersion": "v1", "kind": "Service", "name": "front"},
           "metric": {"name": "rps"}, "target": {"type": "Value", "value": "15"}}}  # fmt: skip
    ext = {"type": "External", "external": {"metric": {"name": "queue"},
           "target": {"type": "AverageValue", "averageValue": "2"}}}  # fmt: skip
    readings = Readings(pods=running(3), objects={("Service", "front", "rps"): 50000},
                        external={"queue": (8000, 4000)})  # fmt: skip
    decision = run(make_hpa({"metrics": [obj, ext]}), readings, replicas=3)
    assert decision.desired_replicas == 6  # object: ceil(50/15 * 3) = 10 -> legacy limit 6
    assert decision.why["recommendation"] == 10
    assert decision.status["currentMetrics"][0]["object"]["current"] == {"value": "50"}
    assert decision.status["currentMetrics"][1]["external"]["current"] == {"averageValue": "4"}

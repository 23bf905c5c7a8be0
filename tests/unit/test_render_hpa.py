"""``fleetlog get hpa``'s columns as kubectl prints them, and the why of a decision."""

from __future__ import annotations

from typing import Any

from ops import render
from ops.render.autoscaling import why_lines
from ops.render.objects import hpa_targets

NOW = 1_800_000_000 * 10**9


def cpu(target: int) -> dict[str, Any]:
    return {"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": target}}}  # fmt: skip


def qps(target: str) -> dict[str, Any]:
    return {"type": "Pods", "pods": {"metric": {"name": "qps"},
            "target": {"type": "AverageValue", "averageValue": target}}}  # fmt: skip


def hpa(metrics: list[dict[str, Any]], status: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 10, "metrics": metrics}  # fmt: skip
    return {"kind": "HorizontalPodAutoscaler", "spec": spec, "status": status or {}}


def test_targets_show_the_reading_over_the_target_resource_first() -> None:
    status = {"currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 85}}},
        {"type": "Pods", "pods": {"metric": {"name": "qps"}, "current": {"averageValue": "7"}}},
    ]}  # fmt: skip
    assert hpa_targets(hpa([cpu(50), qps("10")], status)) == "cpu: 85%/50%, 7/10"


def test_targets_before_a_reading_and_beyond_two_metrics() -> None:
    assert hpa_targets(hpa([cpu(50)])) == "cpu: <unknown>/50%"
    assert hpa_targets(hpa([cpu(50), qps("1"), qps("2")])) == (
        "cpu: <unknown>/50%, <unknown>/1 + 1 more..."
    )
    assert hpa_targets(hpa([])) == "<none>"


def test_object_and_external_average_value_targets_are_marked_avg_as_kubectl_does() -> None:
    queue = {"type": "External", "external": {"metric": {"name": "queue_depth"},
             "target": {"type": "AverageValue", "averageValue": "10"}}}  # fmt: skip
    hits = {"type": "Object", "object": {
        "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "web"},
        "metric": {"name": "hits"}, "target": {"type": "Value", "value": "100"}}}  # fmt: skip
    status = {"currentMetrics": [
        {"type": "External", "external": {"metric": {"name": "queue_depth"},
                                          "current": {"averageValue": "40"}}},
        {"type": "Object", "object": {"metric": {"name": "hits"}, "current": {"value": "300"}}},
    ]}  # fmt: skip
    assert hpa_targets(hpa([queue, hits], status)) == "40/10 (avg), 300/100"
    assert hpa_targets(hpa([queue])) == "<unknown>/10 (avg)"


def test_the_row_has_kubectls_columns() -> None:
    item = {"name": "web", "namespace": "default", "created_ns": NOW - 90 * 10**9,
            "manifest": hpa([cpu(50)], {"currentReplicas": 3})}  # fmt: skip
    text = render.object_table(
        "HorizontalPodAutoscaler", [item], now_ns=NOW, wide=False, show_namespace=False
    )
    assert [line.split() for line in text.splitlines()] == [
        ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"],
        ["web", "Deployment/web", "cpu:", "<unknown>/50%", "2", "10", "3", "90s"],
    ]


def test_the_why_names_the_figures_and_what_held_the_decision() -> None:
    why = {
        "hpa": "web", "currentReplicas": 4, "desiredReplicas": 4, "recommendation": 1,
        "metric": "cpu", "reason": "",
        "metrics": [{"name": "cpu", "utilization": 10, "ratio": 0.2, "readyPods": 4,
                     "unreadyPods": [], "missingPods": ["p"], "ignoredPods": [],
                     "replicas": 1, "outcome": "scaled", "perPod": {"a": 10}}],
        "stabilization": {"reason": "ScaleDownStabilized", "from": 1, "to": 4,
                          "windowSeconds": 300},
        "limit": {"reason": "DesiredWithinRange", "limited": False, "from": 4, "to": 4},
    }  # fmt: skip
    assert why_lines(why) == [
        "horizontal pod autoscaler web: 4 -> 4 replicas (recommended 1 before limits by cpu)",
        "cpu: utilization 10% of requests (ratio 0.20, ready 4, unready 0, missing 1, "
        "ignored 0) -> 1 replicas [scaled]",
        "  per pod: a=10",
        "stabilization: ScaleDownStabilized: 1 held at 4 by the 300s window",
    ]

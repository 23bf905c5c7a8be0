"""The VPA updater's in-place rules (``InPlaceOrRecreate``), written from
``pkg/updater/restriction/pods_inplace_restriction.go`` (``CanInPlaceUpdate``,
``CanEvictInPlacingPod``: Infeasible evicts, Deferred waits 5 minutes, in progress an hour, an
Error evicts) and the admission's patch (the same resources a recreated pod would get), and how
the updater reads a pod's requests (``ContainerRequestsAndLimits``: status first)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.api.manifests import parse_manifest
from core.autoscaling.aggregate import VerticalPodAutoscaler as VpaAggregate
from core.autoscaling.vertical import (
    DEFERRED_RESIZE_TIMEOUT_S,
    IN_PROGRESS_RESIZE_TIMEOUT_S,
    ContainerRecommendation,
    in_place_decision,
    resize_entries,
)
from core.autoscaling.vertical_model import VerticalPodAutoscaler
from handlers.autoscaler.vertical import container_requests

MI = 1024 * 1024
T0 = 1_800_000_000.0


def pending(reason: str, message: str = "msg") -> dict[str, Any]:
    return {"type": "PodResizePending", "status": "True", "reason": reason, "message": message}


def in_progress(reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {"type": "PodResizeInProgress", "status": "True"}
    return condition | ({"reason": reason, "message": message} if reason else {})


def test_a_running_pod_with_no_resize_under_way_is_resized() -> None:
    ready = [{"type": "Ready", "status": "True"}]
    decision = in_place_decision(ready, phase="Running", resizing_since=None, now=T0)
    assert decision.action == "resize"


def test_a_pending_pod_waits() -> None:
    assert in_place_decision([], phase="Pending", resizing_since=None, now=T0).action == "wait"


def test_an_infeasible_resize_falls_back_to_eviction_at_once() -> None:
    decision = in_place_decision(
        [pending("Infeasible", "Node didn't have enough capacity: memory")],
        phase="Running", resizing_since=T0, now=T0,
    )  # fmt: skip
    assert decision.action == "evict"
    assert decision.why == "resize infeasible: Node didn't have enough capacity: memory"


def test_a_deferred_resize_waits_five_minutes_then_evicts() -> None:
    conditions = [pending("Deferred", "Node didn't have enough resource: cpu")]
    assert DEFERRED_RESIZE_TIMEOUT_S == 300
    waits = in_place_decision(conditions, phase="Running", resizing_since=T0, now=T0 + 300)
    assert waits.action == "wait" and "deferred by the node" in waits.why
    gives_up = in_place_decision(conditions, phase="Running", resizing_since=T0, now=T0 + 301)
    assert gives_up.action == "evict" and gives_up.why.startswith("resize deferred for more than")
    # the clock starts when the updater first sees it; a shortened timeout is honoured
    short = in_place_decision(
        conditions, phase="Running", resizing_since=T0, now=T0 + 2, deferred_timeout=1
    )
    assert short.action == "evict"
    assert in_place_decision(conditions, phase="Running", resizing_since=None, now=T0).action == (
        "wait"
    )


def test_a_resize_in_progress_waits_an_hour_and_an_error_evicts() -> None:
    assert IN_PROGRESS_RESIZE_TIMEOUT_S == 3600
    conditions = [in_progress()]
    assert in_place_decision(conditions, phase="Running", resizing_since=T0, now=T0 + 3600).action == "wait"  # fmt: skip
    assert in_place_decision(conditions, phase="Running", resizing_since=T0, now=T0 + 3601).action == "evict"  # fmt: skip
    error = in_place_decision(
        [in_progress("Error", "attempting to set memory limit below usage")],
        phase="Running", resizing_since=T0, now=T0,
    )  # fmt: skip
    assert error.action == "evict" and "below usage" in error.why


def test_a_pending_resize_for_an_unknown_reason_evicts_and_false_conditions_do_not_count() -> None:
    assert in_place_decision([pending("Other")], phase="Running", resizing_since=T0,
                             now=T0).action == "evict"  # fmt: skip
    gone = [{"type": "PodResizePending", "status": "False", "reason": "Infeasible"}]
    assert in_place_decision(gone, phase="Running", resizing_since=None, now=T0).action == "resize"


def vpa(**policy: Any) -> VerticalPodAutoscaler:
    doc = {
        "apiVersion": "autoscaling.k8s.io/v1",
        "kind": "VerticalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "updatePolicy": {"updateMode": "InPlaceOrRecreate"},
            **({"resourcePolicy": {"containerPolicies": [policy]}} if policy else {}),
        },
    }
    parsed = parse_manifest(doc)
    assert isinstance(parsed, VerticalPodAutoscaler)
    return parsed


def rec(container: str, target: dict[str, int]) -> ContainerRecommendation:
    return ContainerRecommendation(
        container=container, target=target, lower=target, upper=target, uncapped=target,
        caps=(), inputs={},
    )  # fmt: skip


def test_the_resize_asks_what_admission_would_give_a_new_pod() -> None:
    containers = [
        {"name": "app", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                      "limits": {"cpu": "200m", "memory": "128Mi"}}},
        {"name": "log", "resources": {"requests": {"cpu": "10m"}}},
        {"name": "side", "resources": {"requests": {"cpu": "50m"}}},
    ]  # fmt: skip
    recs = [rec("app", {"cpu": 300, "memory": 200 * MI}), rec("side", {"cpu": 50})]
    entries = resize_entries(containers, recs, vpa().spec)
    # limits kept in their ratio (2x), memory as the VPA writes it (bytes); "log" has no
    # recommendation and "side" is already at its target: neither is named
    assert entries == [
        {"name": "app", "resources": {"requests": {"cpu": "300m", "memory": str(200 * MI)},
                                      "limits": {"cpu": "600m", "memory": str(400 * MI)}}},
    ]  # fmt: skip


def test_the_resize_follows_the_container_policy() -> None:
    containers = [{"name": "app", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                                "limits": {"memory": "128Mi"}}}]  # fmt: skip
    recs = [rec("app", {"cpu": 300, "memory": 200 * MI})]
    off = resize_entries(containers, recs, vpa(containerName="app", mode="Off").spec)
    assert off == []
    only = resize_entries(
        containers, recs, vpa(containerName="*", controlledValues="RequestsOnly").spec
    )
    # the request is capped at the limit, the limit left alone
    assert only == [{"name": "app", "resources": {
        "requests": {"cpu": "300m", "memory": str(128 * MI)}, "limits": {"memory": "128Mi"}}}]  # fmt: skip


def test_requests_are_read_from_the_status_first() -> None:
    spec = {"containers": [{"name": "app", "resources": {"requests": {"memory": "256Mi"}}}]}
    assert container_requests({"spec": spec}) == {"app": {"memory": 256 * MI}}
    # a resize the node holds back: allocatedResources (the old requests) count
    held = {"containerStatuses": [{"name": "app", "allocatedResources": {"memory": "64Mi"}}]}
    assert container_requests({"spec": spec, "status": held}) == {"app": {"memory": 64 * MI}}
    # what the container runs with, once actuated, counts before anything else
    actual = {"containerStatuses": [{"name": "app", "allocatedResources": {"memory": "64Mi"},
                                     "resources": {"requests": {"memory": "128Mi"}}}]}  # fmt: skip
    assert container_requests({"spec": spec, "status": actual}) == {"app": {"memory": 128 * MI}}


def test_the_updater_pass_is_an_event_even_with_the_status_unchanged() -> None:
    at = datetime(2027, 1, 1, tzinfo=UTC)
    manifest = vpa().model_dump(mode="json", by_alias=True, exclude_none=True)
    agg = VpaAggregate.create(None, agg_id="default/web", manifest=manifest, uid="u1", at=at)
    assert isinstance(agg, VpaAggregate)
    status = {"conditions": [{"type": "RecommendationProvided", "status": "True"}]}
    agg.update_status(status=status, annotations={}, at=at)
    before = len(agg.pending_events)
    agg.update_status(status=status, annotations={}, at=at, why={"vpa": "web"})
    assert len(agg.pending_events) == before  # the same status again: nothing
    why = {"vpa": "web", "updater": [{"pod": "web-1", "path": "resized in place"}]}
    agg.update_status(status=status, annotations={}, at=at, why=why)
    assert len(agg.pending_events) == before + 1
    assert agg.pending_events[-1].why == why

"""In-place pod resize (``core.pods.resize`` and the decisions and folds that record it): the
API's refusals as kube-apiserver's ``ValidatePodResize`` words them, the kubelet's Infeasible /
Deferred admission, which containers restart under their ``resizePolicy``, the quota and node
ledger charged by the new requests, and the status the events fold into. Expectations written
by hand from Kubernetes' rules (KEP 1287, ``pkg/apis/core/validation``, the kubelet's
``canResizePod``), not from this implementation. No server."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from core.errors import InvalidTransition, ValidationFailed
from core.kubeapi.resize import requested_resize
from core.kubeapi.resources import BY_KIND
from core.kubeapi.status import APIError
from core.pods.aggregate import Pod
from core.pods.decisions import allocate_resize, resize_pod
from core.pods.resize import (
    ONLY_CPU_MEMORY,
    QOS_CHANGE,
    plan_container,
    resize_admission,
    resized_spec,
    validate_resize,
)
from core.scheduling.model import PodInfo
from tests.unit.support import recorded
from tests.unit.test_pod_decisions import bound_pod_on, live_pod, node, quota

AT = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)


def spec(*containers: dict[str, Any], inits: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"containers": list(containers)}
    if inits:
        out["initContainers"] = list(inits)
    return out


def container(name: str = "c1", **resources: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "image": "x", "resources": dict(resources)}


BURSTABLE = spec(
    container(requests={"cpu": "100m", "memory": "64Mi"}, limits={"cpu": "200m", "memory": "128Mi"})
)
GUARANTEED = spec(
    container(requests={"cpu": "100m", "memory": "64Mi"}, limits={"cpu": "100m", "memory": "64Mi"})
)


def resize(old: dict[str, Any], **resources: dict[str, str]) -> Any:
    return validate_resize(old, resized_spec(old, [{"name": "c1", "resources": resources}]))


def refusal(old: dict[str, Any], **resources: dict[str, str]) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        resize(old, **resources)
    return caught.value


# -- what the API accepts (ValidatePodResize) ----------------------------------------------------


def test_raising_a_memory_limit_records_before_and_after():
    change = resize(
        BURSTABLE,
        requests={"cpu": "100m", "memory": "64Mi"},
        limits={"cpu": "200m", "memory": "256Mi"},
    )
    assert change.before == {"c1": BURSTABLE["containers"][0]["resources"]}
    assert change.after == {
        "c1": {"requests": {"cpu": "100m", "memory": "64Mi"},
               "limits": {"cpu": "200m", "memory": "256Mi"}},
    }  # fmt: skip
    assert change.spec["containers"][0]["resources"]["limits"]["memory"] == "256Mi"


def test_the_same_resources_again_change_nothing():
    assert resize(BURSTABLE, **BURSTABLE["containers"][0]["resources"]).empty


def test_a_besteffort_pod_asking_for_memory_would_change_its_qos_class():
    err = refusal(spec(container()), requests={"memory": "40Mi"})
    assert err.field == "spec"
    assert err.message == f'Invalid value "BestEffort": {QOS_CHANGE}'


def test_a_guaranteed_pod_raising_only_its_limits_would_become_burstable():
    err = refusal(
        GUARANTEED,
        requests={"cpu": "100m", "memory": "64Mi"},
        limits={"cpu": "200m", "memory": "64Mi"},
    )
    assert QOS_CHANGE in err.message


def test_a_guaranteed_pod_raising_requests_and_limits_together_stays_guaranteed():
    change = resize(
        GUARANTEED,
        requests={"cpu": "300m", "memory": "96Mi"},
        limits={"cpu": "300m", "memory": "96Mi"},
    )
    assert change.after["c1"]["limits"] == {"cpu": "300m", "memory": "96Mi"}


def test_a_memory_limit_cannot_be_removed():
    err = refusal(BURSTABLE, requests={"cpu": "100m", "memory": "64Mi"}, limits={"cpu": "200m"})
    assert err.field == "spec.containers[0].resources.limits[memory]"
    assert err.message == "Forbidden: resource limits cannot be removed"


def test_a_cpu_request_cannot_be_removed():
    old = spec(container(requests={"cpu": "100m", "memory": "64Mi"}))
    err = refusal(old, requests={"memory": "64Mi"})
    assert err.message == "Forbidden: resource requests cannot be removed"


def test_a_cpu_limit_may_be_added_to_a_burstable_pod():
    old = spec(container(requests={"cpu": "100m"}))
    change = resize(old, requests={"cpu": "100m"}, limits={"cpu": "500m"})
    assert change.after["c1"]["limits"] == {"cpu": "500m"}


def test_a_request_above_its_limit_is_refused_as_on_create():
    err = refusal(BURSTABLE, requests={"cpu": "500m", "memory": "64Mi"},
                  limits={"cpu": "200m", "memory": "128Mi"})  # fmt: skip
    assert err.field == "spec.containers[0].resources.requests.cpu"
    assert "must be less than or equal to cpu limit of 200m" in err.message


def test_only_cpu_and_memory_are_mutable():
    old = spec(container(requests={"cpu": "100m", "ephemeral-storage": "1Gi"}))
    err = refusal(old, requests={"cpu": "100m", "ephemeral-storage": "2Gi"})
    assert err.message == "Forbidden: " + ONLY_CPU_MEMORY


def test_any_other_field_changed_is_refused():
    new = copy.deepcopy(BURSTABLE)
    new["containers"][0]["image"] = "y"
    with pytest.raises(ValidationFailed) as caught:
        validate_resize(BURSTABLE, new)
    assert caught.value.field == "spec"
    assert ONLY_CPU_MEMORY in caught.value.message


def test_a_non_sidecar_init_container_cannot_be_resized_but_a_sidecar_can():
    init = container("setup", requests={"cpu": "100m"})
    sidecar = {**container("proxy", requests={"cpu": "100m"}), "restartPolicy": "Always"}
    old = spec(container(requests={"cpu": "100m"}), inits=(init, sidecar))
    with pytest.raises(ValidationFailed) as caught:
        validate_resize(old, resized_spec(old, [{"name": "setup", "resources": {
            "requests": {"cpu": "200m"}}}]))  # fmt: skip
    assert caught.value.field == "spec.initContainers[0].resources"
    assert "resources for non-sidecar init containers are immutable" in caught.value.message
    change = validate_resize(
        old, resized_spec(old, [{"name": "proxy", "resources": {"requests": {"cpu": "200m"}}}])
    )
    assert change.after == {"proxy": {"requests": {"cpu": "200m"}}}


def test_lowering_a_memory_limit_with_not_required_is_allowed_since_1_34():
    change = resize(
        BURSTABLE,
        requests={"cpu": "100m", "memory": "64Mi"},
        limits={"cpu": "200m", "memory": "96Mi"},
    )
    assert change.after["c1"]["limits"]["memory"] == "96Mi"


def test_a_container_the_pod_does_not_have_is_refused():
    with pytest.raises(ValidationFailed) as caught:
        resized_spec(BURSTABLE, [{"name": "nope", "resources": {}}])
    assert caught.value.field == "body.containers[0].name"


def test_every_problem_is_listed():
    old = spec(
        container("a", requests={"cpu": "100m"}, limits={"memory": "64Mi"}),
        container("b", requests={"cpu": "100m"}, limits={"memory": "64Mi"}),
    )
    new = resized_spec(old, [
        {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
        {"name": "b", "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "64Mi"}}},
    ])  # fmt: skip
    with pytest.raises(ValidationFailed) as caught:
        validate_resize(old, new)
    assert [e.field for e in caught.value.errors] == [
        "spec.containers[0].resources.limits[memory]",
        "spec.containers[1].resources.requests[cpu]",
    ]


# -- the door's body ---------------------------------------------------------------------------


def api_pod(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "team"},
        "spec": pod_spec, "status": {"qosClass": "Burstable"},
    }  # fmt: skip


def test_the_door_turns_a_patched_pod_into_the_resize_commands_containers():
    shown = api_pod(BURSTABLE)
    patched = copy.deepcopy(shown)
    patched["spec"]["containers"][0]["resources"]["limits"]["memory"] = "256Mi"
    asked = requested_resize(patched, BY_KIND["Pod"], current=shown, namespace="team", name="web")
    assert asked.containers == [{"name": "c1", "resources": {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "200m", "memory": "256Mi"}}}]  # fmt: skip
    same = requested_resize(shown, BY_KIND["Pod"], current=shown, namespace="team", name="web")
    assert same.containers == []


def test_the_door_refuses_a_qos_change_as_kubes_invalid():
    shown = api_pod(BURSTABLE)
    patched = copy.deepcopy(shown)
    patched["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "200m", "memory": "128Mi"},
        "limits": {"cpu": "200m", "memory": "128Mi"},
    }
    with pytest.raises(APIError) as caught:
        requested_resize(patched, BY_KIND["Pod"], current=shown, namespace="team", name="web")
    assert caught.value.code == 422
    assert str(caught.value.message) == (
        f'Pod "web" is invalid: spec: Invalid value "Burstable": {QOS_CHANGE}'
    )


# -- the node's admission (canResizePod) ---------------------------------------------------------

MI = 2**20


def test_more_than_the_node_allocatable_is_infeasible():
    got = resize_admission(
        allocatable={"cpu": 2000, "memory": 1024 * MI}, others={},
        wanted={"cpu": 500, "memory": 2048 * MI},
    )  # fmt: skip
    assert got.outcome == "Infeasible"
    assert got.message == (
        f"Node didn't have enough capacity: memory, requested: {2048 * MI}, capacity: {1024 * MI}"
    )


def test_what_fits_the_node_but_not_beside_the_other_pods_is_deferred():
    got = resize_admission(
        allocatable={"cpu": 2000, "memory": 1024 * MI}, others={"cpu": 1800, "memory": 0},
        wanted={"cpu": 500, "memory": 64 * MI},
    )  # fmt: skip
    assert got.outcome == "Deferred"
    assert got.message == (
        "Node didn't have enough resource: cpu, requested: 500, used: 1800, capacity: 2000"
    )


def test_what_fits_beside_the_other_pods_is_feasible():
    got = resize_admission(
        allocatable={"cpu": 2000, "memory": 1024 * MI}, others={"cpu": 1500},
        wanted={"cpu": 500, "memory": 64 * MI},
    )  # fmt: skip
    assert got.outcome == "Feasible"


# -- applying it (resizePolicy) ------------------------------------------------------------------


def with_policy(resources: dict[str, Any], **policy: str) -> dict[str, Any]:
    return {
        "name": "c1", "resources": resources,
        "resizePolicy": [{"resourceName": k, "restartPolicy": v} for k, v in policy.items()],
    }  # fmt: skip


OLD = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}
MORE_MEMORY = {**OLD, "limits": {"cpu": "200m", "memory": "256Mi"}}
MORE_CPU = {**OLD, "limits": {"cpu": "400m", "memory": "128Mi"}}


def test_a_memory_change_restarts_only_where_memory_says_restart_container():
    plan = plan_container(
        with_policy(MORE_MEMORY, cpu="NotRequired", memory="RestartContainer"), actual=OLD
    )
    assert plan is not None and plan.restart
    assert (plan.memory_limit_bytes, plan.cpu_limit_millis, plan.cpu_request_millis) == (
        256 * MI, 200, 100,
    )  # fmt: skip
    plan = plan_container(
        with_policy(MORE_CPU, cpu="NotRequired", memory="RestartContainer"), actual=OLD
    )
    assert plan is not None and not plan.restart


def test_no_resize_policy_means_not_required_and_no_change_means_no_plan():
    plan = plan_container({"name": "c1", "resources": MORE_MEMORY}, actual=OLD)
    assert plan is not None and not plan.restart
    assert plan_container({"name": "c1", "resources": OLD}, actual=OLD) is None


# -- decisions: the quota and the node's ledger --------------------------------------------------


def burstable_manifest() -> dict[str, Any]:
    resources = copy.deepcopy(OLD)
    return {
        "metadata": {"name": "web", "namespace": "team"},
        "spec": {"containers": [{"name": "main", "image": "x", "resources": resources}]},
    }


def change_for(pod: Pod, **resources: dict[str, str]) -> Any:
    old = pod.manifest["spec"]
    return validate_resize(old, resized_spec(old, [{"name": "main", "resources": resources}]))


def test_a_resize_charges_the_quota_by_the_new_requests():
    pod = live_pod(burstable_manifest())
    compute = quota(**{"requests.memory": "1Gi"})
    compute.charge(pod="team/web", usage={"requests.memory": 64 * MI}, pod_manifest=pod.manifest,
                   at=AT)  # fmt: skip
    compute.collect_events()
    change = change_for(pod, requests={"cpu": "100m", "memory": "96Mi"},
                        limits={"cpu": "200m", "memory": "128Mi"})  # fmt: skip
    resize_pod(pod, change=change, quotas=[compute], at=AT)
    assert [e.type for e in recorded(pod)] == ["PodResized"]
    charged = recorded(compute)[0]
    assert charged.type == "QuotaCharged"
    assert charged.payload["used"]["requests.memory"] == 96 * MI


def test_a_resize_beyond_the_quota_is_refused_and_records_nothing():
    pod = live_pod(burstable_manifest())
    compute = quota(**{"requests.memory": "100Mi"})
    change = change_for(pod, requests={"cpu": "100m", "memory": "128Mi"},
                        limits={"cpu": "200m", "memory": "128Mi"})  # fmt: skip
    with pytest.raises(InvalidTransition, match="exceeded quota"):
        resize_pod(pod, change=change, quotas=[compute], at=AT)
    assert recorded(compute) == []


def test_a_finished_pod_is_not_resized():
    pod = live_pod(burstable_manifest())
    pod.manifest["status"]["phase"] = "Succeeded"
    change = change_for(pod, **MORE_MEMORY)
    with pytest.raises(InvalidTransition):
        resize_pod(pod, change=change, quotas=[], at=AT)


def test_admitting_a_resize_moves_the_node_reservation_to_the_new_requests():
    host = node(cpu="2", memory="1Gi")
    pod = bound_pod_on(host)
    allocate_resize(
        pod, host, requests={"cpu": 800, "memory": 256 * MI}, allocated={"main": MORE_MEMORY},
        restarts=[], at=AT,
    )  # fmt: skip
    assert [e.type for e in recorded(host)] == ["PodReleased", "PodAllocated"]
    assert host.allocations["team/web"] == {"cpu": 800, "memory": 256 * MI, "pods": 1}
    assert [e.type for e in recorded(pod)] == ["PodResizeAllocated"]


def test_admitting_more_than_the_node_holds_is_refused_by_its_ledger():
    host = node(cpu="1", memory="1Gi")
    pod = bound_pod_on(host)
    with pytest.raises(InvalidTransition, match="insufficient cpu"):
        allocate_resize(
            pod, host, requests={"cpu": 1500, "memory": 128 * MI}, allocated={}, restarts=[],
            at=AT,
        )  # fmt: skip


# -- the status the events fold into -------------------------------------------------------------


def running_pod() -> Pod:
    host = node()
    pod = bound_pod_on(host)
    pod.start_container(container="main", restart_count=0, node="n1", at=AT)
    pod.collect_events()
    return pod


def conditions(pod: Pod) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in pod.manifest["status"].get("conditions") or []}


def test_the_resize_conditions_and_resources_in_status():
    pod = running_pod()
    pod.resize(before={"main": OLD}, after={"main": MORE_MEMORY}, at=AT)
    assert pod.manifest["spec"]["containers"][0]["resources"] == MORE_MEMORY
    pod.defer_resize(node="n1", reason="Deferred", message="not now", at=AT)
    pending = conditions(pod)["PodResizePending"]
    assert (pending["status"], pending["reason"], pending["message"]) == (
        "True", "Deferred", "not now",
    )  # fmt: skip
    pod.collect_events()
    pod.defer_resize(node="n1", reason="Deferred", message="not now", at=AT)
    assert recorded(pod) == []  # the same refusal is not recorded twice
    pod.allocate_resize(node="n1", allocated={"main": MORE_MEMORY}, restarts=[], at=AT)
    got = conditions(pod)
    assert "PodResizePending" not in got and got["PodResizeInProgress"]["status"] == "True"
    status = pod.manifest["status"]["containerStatuses"][0]
    assert status["allocatedResources"] == MORE_MEMORY["requests"]
    pod.actuate_resize(node="n1", resources={"main": MORE_MEMORY}, error="", at=AT)
    assert "PodResizeInProgress" not in conditions(pod)
    assert pod.manifest["status"]["containerStatuses"][0]["resources"] == MORE_MEMORY


def test_a_resize_applied_in_part_stays_in_progress_with_reason_error():
    pod = running_pod()
    pod.allocate_resize(node="n1", allocated={"main": MORE_MEMORY}, restarts=[], at=AT)
    pod.actuate_resize(node="n1", resources={"main": OLD}, error="below usage", at=AT)
    got = conditions(pod)["PodResizeInProgress"]
    assert (got["reason"], got["message"]) == ("Error", "below usage")


def test_only_the_pods_node_records_its_resize():
    pod = running_pod()
    with pytest.raises(InvalidTransition):
        pod.allocate_resize(node="elsewhere", allocated={}, restarts=[], at=AT)


# -- what the scheduler counts (component-helpers PodRequests, UseStatusResources) ---------------


def resized_manifest(spec_cpu: str, allocated_cpu: str, *, infeasible: bool = False) -> Any:
    status: dict[str, Any] = {
        "containerStatuses": [{"name": "main", "allocatedResources": {"cpu": allocated_cpu}}],
        "conditions": [{"type": "PodResizePending", "status": "True", "reason": "Infeasible"}]
        if infeasible else [],
    }  # fmt: skip
    return {
        "metadata": {"name": "web", "namespace": "team"},
        "spec": {"containers": [{"name": "main", "image": "x",
                                 "resources": {"requests": {"cpu": spec_cpu}}}]},
        "status": status,
    }  # fmt: skip


def test_the_scheduler_counts_the_larger_of_desired_and_allocated_while_a_resize_is_pending():
    assert PodInfo.from_manifest(resized_manifest("300m", "100m")).requests["cpu"] == 300
    assert PodInfo.from_manifest(resized_manifest("50m", "100m")).requests["cpu"] == 100


def test_an_infeasible_resize_is_not_counted_by_the_scheduler():
    infeasible = resized_manifest("16", "100m", infeasible=True)
    assert PodInfo.from_manifest(infeasible).requests["cpu"] == 100

"""The decisions that span a pod, its node and its quotas (``core.pods.decisions``): each
records every event the decision needs on the aggregates it is given, refuses with a clear
error, and changes nothing where there is nothing to do. No server: aggregates in memory."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.errors import AlreadyExists, FleetError, InvalidTransition, NotFound
from core.meta.aggregate import Resource
from core.nodes.aggregate import Node
from core.pods.aggregate import Pod
from core.pods.decisions import bind_pod, create_pod, delete_pod, finish_pod
from core.policy.aggregates import ResourceQuota
from tests.unit.support import recorded

AT = datetime(2026, 11, 25, 3, 12, tzinfo=UTC)
POD_ID = "Pod/team/web"


def pod_manifest(cpu: str = "500m", memory: str = "128Mi") -> dict[str, Any]:
    resources = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": "1"}}
    return {
        "metadata": {"name": "web", "namespace": "team"},
        "spec": {"containers": [{"name": "main", "image": "x", "resources": resources}]},
    }


def quota(name: str = "compute", **hard: str) -> ResourceQuota:
    manifest = {"metadata": {"name": name, "namespace": "team"}, "spec": {"hard": hard}}
    created = ResourceQuota.create(
        None, agg_id=f"ResourceQuota/team/{name}", manifest=manifest, uid=name, at=AT
    )
    assert isinstance(created, ResourceQuota)
    created.collect_events()
    return created


def node(cpu: str = "2", memory: str = "1Gi", pods: str = "110") -> Node:
    manifest = {
        "metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods}},
    }
    created = Node.create(None, agg_id="Node//n1", manifest=manifest, uid="n", at=AT)
    assert isinstance(created, Node)
    created.collect_events()
    return created


def live_pod(manifest: dict[str, Any] | None = None) -> Pod:
    created = Pod.create(None, agg_id=POD_ID, manifest=manifest or pod_manifest(), uid="u", at=AT)
    assert isinstance(created, Pod)
    created.collect_events()
    return created


def bind(pod: Resource | None, on: Resource | None, **requests: int) -> None:
    bind_pod(
        pod, on, requests=requests or {"cpu": 500, "memory": 128 * 2**20}, score=87,
        feasible_nodes=3, evaluated_nodes=3, plugin_scores={"NodeResourcesFit": 87},
        weights={"NodeResourcesFit": 1}, at=AT,
    )  # fmt: skip


def bound_pod_on(host: Node) -> Pod:
    pod = live_pod()
    bind(pod, host)
    pod.collect_events()
    host.collect_events()
    return pod


def types(aggregate: Resource) -> list[str]:
    return [e.type for e in recorded(aggregate)]


# -- create a pod and charge its quotas ---------------------------------------------------------


def test_creating_a_pod_charges_its_usage_to_every_live_quota_of_the_namespace() -> None:
    cpu, pods = quota("cpu", **{"requests.cpu": "1"}), quota("count", pods="10")
    gone = quota("gone", pods="1")
    gone.delete(reason="", at=AT)
    gone.collect_events()
    pod = create_pod(
        None, agg_id=POD_ID, manifest=pod_manifest(), uid="u", quotas=[cpu, pods, gone, None],
        at=AT,
    )  # fmt: skip
    assert types(pod) == ["PodCreated"]
    for charged in (cpu, pods):
        [event] = recorded(charged)
        assert event.type == "QuotaCharged" and event.payload["pod"] == "team/web"
        assert event.payload["amounts"]["requests.cpu"] == 500
        assert event.payload["amounts"]["pods"] == 1
    assert recorded(gone) == []


def test_a_create_beyond_a_quota_is_refused_with_kubernetes_wording() -> None:
    tight = quota(**{"requests.cpu": "400m"})
    with pytest.raises(InvalidTransition, match="exceeded quota: compute") as refused:
        create_pod(None, agg_id=POD_ID, manifest=pod_manifest(), uid="u", quotas=[tight], at=AT)
    assert refused.value.code == "forbidden"
    assert recorded(tight) == []


def test_a_quota_on_a_resource_the_pod_does_not_state_refuses_it() -> None:
    limits = quota(**{"limits.memory": "1Gi"})
    with pytest.raises(InvalidTransition, match=r"must specify limits\.memory for: main"):
        create_pod(None, agg_id=POD_ID, manifest=pod_manifest(), uid="u", quotas=[limits], at=AT)


def test_applying_a_new_manifest_to_a_live_pod_charges_nothing_again() -> None:
    pod, counted = live_pod(), quota(pods="10")
    labelled = {
        **pod_manifest(),
        "metadata": {"name": "web", "namespace": "team", "labels": {"a": "b"}},
    }
    create_pod(
        pod, agg_id=POD_ID, manifest=labelled, uid="u2", quotas=[counted], at=AT, replace=True
    )
    assert types(pod) == ["PodUpdated"]
    assert recorded(counted) == []


def test_applying_a_pod_that_does_not_exist_creates_and_charges_it() -> None:
    counted = quota(pods="10")
    pod = create_pod(
        None, agg_id=POD_ID, manifest=pod_manifest(), uid="u", quotas=[counted], at=AT,
        replace=True,
    )  # fmt: skip
    assert types(pod) == ["PodCreated"]
    assert [e.type for e in recorded(counted)] == ["QuotaCharged"]


def test_creating_a_live_pod_again_is_refused_and_charges_nothing() -> None:
    pod, counted = live_pod(), quota(pods="10")
    with pytest.raises(AlreadyExists):
        create_pod(pod, agg_id=POD_ID, manifest=pod_manifest(), uid="u", quotas=[counted], at=AT)
    assert recorded(counted) == []


def test_re_creating_a_deleted_pod_charges_it_again() -> None:
    pod, counted = live_pod(), quota(pods="10")
    pod.delete(reason="", at=AT)
    pod.collect_events()
    create_pod(pod, agg_id=POD_ID, manifest=pod_manifest(), uid="u2", quotas=[counted], at=AT)
    assert types(pod) == ["PodCreated"] and pod.uid == "u2"
    assert [e.type for e in recorded(counted)] == ["QuotaCharged"]


# -- delete a pod and release its node and quotas ---------------------------------------------


def test_deleting_a_bound_pod_releases_its_node_and_its_quota_charges() -> None:
    host, counted = node(), quota(pods="10")
    pod = bound_pod_on(host)
    counted.charge(pod="team/web", usage={"pods": 1}, pod_manifest=pod.manifest, at=AT)
    counted.collect_events()
    delete_pod(
        pod, node=host, quotas=[counted], reason="done", propagation_policy="Background",
        deleted_by="user:alice", at=AT,
    )  # fmt: skip
    assert types(pod) == ["PodDeleted"]
    [released] = recorded(host)
    assert released.type == "PodReleased"
    assert released.payload == {"pod": "team/web", "reason": "pod deleted by user:alice"}
    [given_back] = recorded(counted)
    assert given_back.type == "QuotaReleased"
    assert given_back.payload["reason"] == "pod deleted by user:alice"
    assert given_back.payload["used"]["pods"] == 0
    assert host.allocated == {} and counted.charges == {}


def test_deleting_a_pod_nothing_holds_changes_only_the_pod() -> None:
    host, counted = node(), quota(pods="10")
    pod = live_pod()
    delete_pod(
        pod, node=host, quotas=[counted, None], reason="", propagation_policy="Orphan",
        deleted_by="u", at=AT,
    )  # fmt: skip
    [deleted] = recorded(pod)
    assert deleted.payload["propagation_policy"] == "Orphan"
    assert recorded(host) == [] and recorded(counted) == []


def test_deleting_a_deleted_pod_is_not_found() -> None:
    pod = live_pod()
    pod.delete(reason="", at=AT)
    pod.collect_events()
    with pytest.raises(NotFound):
        delete_pod(
            pod, node=None, quotas=[], reason="", propagation_policy="Background",
            deleted_by="u", at=AT,
        )  # fmt: skip


# -- bind a pod and allocate on its node --------------------------------------------------------


def test_binding_records_the_placement_and_reserves_the_requests_on_the_node() -> None:
    host, pod = node(), live_pod()
    bind(pod, host)
    [bound] = recorded(pod)
    assert bound.type == "PodBound"
    assert bound.payload["node"] == "n1" and bound.payload["score"] == 87
    assert bound.payload["plugin_scores"] == {"NodeResourcesFit": 87}
    assert pod.node_name == "n1"
    [allocated] = recorded(host)
    assert allocated.type == "PodAllocated"
    assert allocated.payload == {
        "pod": "team/web",
        "requests": {"cpu": 500, "memory": 128 * 2**20, "pods": 1},
    }


def test_a_bound_pod_is_not_bound_again_and_the_node_reserves_nothing() -> None:
    host = node()
    pod = bound_pod_on(host)
    other = node()
    with pytest.raises(InvalidTransition, match="already bound to node 'n1'"):
        bind(pod, other)
    assert recorded(pod) == [] and recorded(other) == []


def test_a_node_without_room_refuses_and_the_pod_stays_unbound() -> None:
    host, pod = node(cpu="400m"), live_pod()
    with pytest.raises(InvalidTransition, match="insufficient cpu") as refused:
        bind(pod, host)
    assert refused.value.code == "insufficient_resources"
    assert recorded(pod) == [] and recorded(host) == [] and pod.node_name is None


def test_a_full_node_refuses_the_pod_that_would_be_one_too_many() -> None:
    host, first = node(pods="1"), live_pod()
    bind(first, host)
    second = Pod.create(None, agg_id="Pod/team/db", manifest=pod_manifest(), uid="d", at=AT)
    second.collect_events()
    with pytest.raises(InvalidTransition, match="insufficient pods"):
        bind(second, host)
    assert recorded(second) == []


@pytest.mark.parametrize("gone", ["pod", "node", "deleted pod", "deleted node"])
def test_a_binding_whose_pod_or_node_is_gone_is_not_found(gone: str) -> None:
    host, pod = node(), live_pod()
    if gone == "deleted pod":
        pod.delete(reason="", at=AT)
        pod.collect_events()
    if gone == "deleted node":
        host.delete(reason="", at=AT)
        host.collect_events()
    with pytest.raises(NotFound):
        bind(None if gone == "pod" else pod, None if gone == "node" else host)
    assert recorded(pod) == [] and recorded(host) == []


# -- finish a pod and release its node -----------------------------------------------------------


def succeed(pod: Pod, at: datetime) -> None:
    pod.succeed(reason="Completed", at=at)


def fail(pod: Pod, at: datetime) -> None:
    pod.fail(reason="Error", at=at)


def _ended(pod: Pod, exit_code: int) -> None:
    pod.start_container(container="main", node="n1", at=AT)
    pod.exit_container(container="main", exit_code=exit_code, reason="Completed", node="n1", at=AT)
    pod.collect_events()


def test_a_pod_that_succeeds_gives_its_reservation_back() -> None:
    host = node()
    pod = bound_pod_on(host)
    _ended(pod, 0)
    finish_pod(pod, host, finish=succeed, at=AT)
    assert types(pod) == ["PodSucceeded"]
    [released] = recorded(host)
    assert released.payload == {"pod": "team/web", "reason": "pod Succeeded"}
    assert host.allocated == {}


def test_a_pod_that_fails_gives_its_reservation_back() -> None:
    host = node()
    pod = bound_pod_on(host)
    finish_pod(pod, host, finish=fail, at=AT)
    assert types(pod) == ["PodFailed"]
    assert [e.payload["reason"] for e in recorded(host)] == ["pod Failed"]


def test_finishing_a_finished_pod_again_changes_only_what_is_left() -> None:
    host = node()
    pod = bound_pod_on(host)
    finish_pod(pod, host, finish=fail, at=AT)
    pod.collect_events()
    host.collect_events()
    finish_pod(pod, host, finish=fail, at=AT)
    assert recorded(pod) == [] and recorded(host) == []


def test_a_pod_whose_node_holds_nothing_for_it_just_finishes() -> None:
    host = node()
    pod = bound_pod_on(node())
    finish_pod(pod, host, finish=fail, at=AT)
    assert types(pod) == ["PodFailed"] and recorded(host) == []
    finish_pod(pod, None, finish=fail, at=AT)


def test_a_succeeded_pod_cannot_fail_and_keeps_nothing_recorded() -> None:
    host = node()
    pod = bound_pod_on(host)
    _ended(pod, 0)
    finish_pod(pod, host, finish=succeed, at=AT)
    pod.collect_events()
    with pytest.raises(InvalidTransition, match="has succeeded; it cannot fail"):
        finish_pod(pod, host, finish=fail, at=AT)
    assert recorded(pod) == []


def test_a_finish_that_leaves_the_pod_running_is_refused_before_the_node_is_touched() -> None:
    host = node()
    pod = bound_pod_on(host)
    with pytest.raises(FleetError, match="not finished"):
        finish_pod(pod, host, finish=lambda p, at: None, at=AT)
    assert recorded(host) == [] and host.allocated

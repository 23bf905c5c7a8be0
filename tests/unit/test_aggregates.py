"""Aggregate decisions: valid transitions produce events, invalid ones raise clear errors, and
rebuilding from recorded events gives the same aggregate."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.errors import AlreadyExists, Conflict, InvalidTransition, NotFound
from core.meta.diff import changed_paths
from core.pods.aggregate import Pod
from core.services.aggregate import Service
from core.workloads.aggregate import Deployment
from tests.unit.support import recorded

AT = datetime(2026, 11, 25, 3, 12, tzinfo=UTC)
POD = {
    "metadata": {"name": "web"},
    "spec": {
        "containers": [{"name": "a", "image": "nginx:1", "command": ["serve"]}],
        "tolerations": [{"key": "k", "operator": "Exists"}],
    },
}


def test_history_rebuilds_the_same_aggregate_across_delete_and_recreate() -> None:
    deployment = Deployment.create(
        None, agg_id="Deployment/default/web", manifest={"spec": {"replicas": 1}}, uid="u1", at=AT
    )
    deployment.scale(replicas=3, reason="load", at=AT)
    deployment.delete(reason="", at=AT)
    Deployment.create(
        deployment,
        agg_id="Deployment/default/web",
        manifest={"spec": {"replicas": 2}},
        uid="u2",
        at=AT,
    )
    history = recorded(deployment)
    assert [e.type for e in history] == [
        "DeploymentCreated",
        "ScaledTo",
        "DeploymentDeleted",
        "DeploymentCreated",
    ]
    rebuilt = Deployment.from_history("Deployment/default/web", history)
    assert (
        rebuilt is not None
        and rebuilt.version == 4
        and rebuilt.uid == "u2"
        and rebuilt.replicas == 2
        and rebuilt.exists
    )


def test_create_of_an_existing_object_is_refused() -> None:
    pod = Pod.create(None, agg_id="Pod/default/web", manifest=POD, uid="u", at=AT)
    with pytest.raises(AlreadyExists, match='pod "web" in namespace "default" already exists'):
        Pod.create(pod, agg_id="Pod/default/web", manifest=POD, uid="u", at=AT)


def test_pod_spec_is_immutable_except_images_and_new_tolerations() -> None:
    pod = Pod.create(None, agg_id="Pod/default/web", manifest=POD, uid="u", at=AT)
    pod.collect_events()
    new_image = {
        **POD,
        "spec": {
            **POD["spec"],
            "containers": [{**POD["spec"]["containers"][0], "image": "nginx:2"}],
        },
    }
    Pod.apply_manifest(pod, agg_id="Pod/default/web", manifest=new_image, uid="u", at=AT)
    assert [e.changed for e in pod.collect_events()] == [["spec.containers[0].image"]]
    other_command = {
        **new_image,
        "spec": {
            **new_image["spec"],
            "containers": [{**new_image["spec"]["containers"][0], "command": ["x"]}],
        },
    }
    with pytest.raises(InvalidTransition) as caught:
        Pod.apply_manifest(pod, agg_id="Pod/default/web", manifest=other_command, uid="u", at=AT)
    assert caught.value.field == "spec.containers[0].command[0]"
    dropped = {**new_image, "spec": {**new_image["spec"], "tolerations": []}}
    with pytest.raises(InvalidTransition, match="tolerations"):
        Pod.apply_manifest(pod, agg_id="Pod/default/web", manifest=dropped, uid="u", at=AT)
    assert pod.collect_events() == []


def test_identical_apply_changes_nothing() -> None:
    pod = Pod.create(None, agg_id="Pod/default/web", manifest=POD, uid="u", at=AT)
    pod.collect_events()
    Pod.apply_manifest(pod, agg_id="Pod/default/web", manifest=POD, uid="u", at=AT)
    assert pod.collect_events() == [] and pod.version == 1


def test_deleted_objects_cannot_be_deleted_or_scaled() -> None:
    deployment = Deployment.create(
        None, agg_id="Deployment/default/web", manifest={"spec": {"replicas": 1}}, uid="u", at=AT
    )
    deployment.delete(reason="bye", at=AT)
    with pytest.raises(NotFound, match="deleted"):
        deployment.delete(reason="again", at=AT)
    with pytest.raises(NotFound):
        deployment.scale(replicas=2, reason="", at=AT)


def test_expected_version_must_match() -> None:
    deployment = Deployment.create(
        None, agg_id="Deployment/default/web", manifest={"spec": {"replicas": 1}}, uid="u", at=AT
    )
    deployment.require_version(1)
    with pytest.raises(Conflict, match="at version 1, not 5"):
        deployment.require_version(5)


def test_service_cluster_ip_is_immutable() -> None:
    service = Service.create(
        None,
        agg_id="Service/default/web",
        manifest={"spec": {"clusterIP": "10.0.0.1"}},
        uid="u",
        at=AT,
    )
    with pytest.raises(InvalidTransition, match="may not change once set"):
        Service.apply_manifest(
            service,
            agg_id="Service/default/web",
            manifest={"spec": {"clusterIP": "10.0.0.2"}},
            uid="u",
            at=AT,
        )


def test_changed_paths_name_each_differing_field() -> None:
    old = {
        "spec": {"replicas": 1, "template": {"containers": [{"image": "a"}, {"image": "b"}]}},
        "metadata": {"labels": {"x": "1"}},
    }
    new = {
        "spec": {"replicas": 2, "template": {"containers": [{"image": "a"}, {"image": "c"}]}},
        "metadata": {"labels": {"y": "1"}},
    }
    assert changed_paths(old, new) == [
        "metadata.labels.x",
        "metadata.labels.y",
        "spec.replicas",
        "spec.template.containers[1].image",
    ]
    assert changed_paths({"a": [1]}, {"a": [1, 2]}) == ["a"]


def test_cordon_sets_and_uncordon_clears_spec_unschedulable() -> None:
    from core.nodes.aggregate import Node

    node = Node.create(
        None,
        agg_id="Node//n1",
        manifest={"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24"}},
        uid="u",
        at=AT,
    )
    node.cordon(reason="maintenance", at=AT)
    assert node.unschedulable and node.manifest["spec"] == {
        "podCIDR": "10.0.0.0/24",
        "unschedulable": True,
    }
    node.cordon(reason="again", at=AT)
    node.uncordon(reason="", at=AT)
    assert not node.unschedulable and node.manifest["spec"] == {"podCIDR": "10.0.0.0/24"}
    assert [Node.event_type(e) for e in node.collect_events()] == [
        "NodeCreated",
        "NodeCordoned",
        "NodeUncordoned",
    ]


def test_unknown_ready_condition_adds_unreachable_taints_and_ready_removes_them() -> None:
    from core.nodes.aggregate import Node

    own_taint = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    node = Node.create(
        None,
        agg_id="Node//n1",
        manifest={"metadata": {"name": "n1"}, "spec": {"taints": [own_taint]}},
        uid="u",
        at=AT,
    )
    node.set_ready(
        status="Unknown",
        reason="NodeStatusUnknown",
        message="Kubelet stopped posting node status.",
        last_heartbeat_ns=1,
        grace_seconds=50,
        at=AT,
    )
    taints = node.manifest["spec"]["taints"]
    assert taints[0] == own_taint
    assert [(t["key"], t["effect"]) for t in taints[1:]] == [
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    ]
    assert node.ready_status == "Unknown"
    # A user's apply of the node does not wipe the controller's taints.
    Node.apply_manifest(
        node,
        agg_id="Node//n1",
        manifest={
            "metadata": {"name": "n1", "labels": {"a": "b"}},
            "spec": {"taints": [own_taint]},
        },
        uid="u",
        at=AT,
    )
    assert len(node.manifest["spec"]["taints"]) == 3
    node.set_ready(
        status="True",
        reason="KubeletReady",
        message="",
        last_heartbeat_ns=2,
        grace_seconds=50,
        at=AT,
    )
    node.set_ready(
        status="True",
        reason="KubeletReady",
        message="",
        last_heartbeat_ns=3,
        grace_seconds=50,
        at=AT,
    )
    assert node.manifest["spec"]["taints"] == [own_taint]
    types = [Node.event_type(e) for e in node.collect_events()]
    assert types == ["NodeCreated", "NodeNotReady", "NodeUpdated", "NodeReady"]


def test_a_node_never_allocates_beyond_allocatable_and_releases_what_it_reserved() -> None:
    from core.errors import InvalidTransition
    from core.nodes.aggregate import Node

    manifest = {
        "metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "2"}},
    }
    node = Node.create(None, agg_id="Node//n1", manifest=manifest, uid="u", at=AT)
    assert node.allocatable == {"cpu": 1000, "memory": 1024**3, "pods": 2}
    node.allocate(pod="default/a", requests={"cpu": 600, "memory": 512 * 1024**2}, at=AT)
    with pytest.raises(InvalidTransition, match="insufficient cpu") as caught:
        node.allocate(pod="default/b", requests={"cpu": 600, "memory": 1}, at=AT)
    assert caught.value.code == "insufficient_resources"
    node.allocate(pod="default/b", requests={"cpu": 400}, at=AT)
    with pytest.raises(InvalidTransition, match="insufficient cpu, pods"):
        node.allocate(pod="default/c", requests={"cpu": 1}, at=AT)
    with pytest.raises(InvalidTransition, match=r"insufficient nvidia\.com/gpu"):
        node.allocate(pod="default/d", requests={"nvidia.com/gpu": 1}, at=AT)
    node.release(pod="default/a", reason="deleted", at=AT)
    node.release(pod="default/a", reason="again", at=AT)  # nothing left to release
    assert node.allocated == {"cpu": 400, "pods": 1}
    history = recorded(node)
    assert [e.type for e in history] == [
        "NodeCreated",
        "PodAllocated",
        "PodAllocated",
        "PodReleased",
    ]
    rebuilt = Node.from_history("Node//n1", history)
    assert rebuilt is not None and rebuilt.allocations == {"default/b": {"cpu": 400, "pods": 1}}


def test_a_pod_is_bound_once_and_unschedulable_reasons_are_not_repeated() -> None:
    from core.errors import InvalidTransition

    pod = Pod.create(None, agg_id="Pod/default/web", manifest=POD, uid="u", at=AT)
    pod.mark_unschedulable(
        message="0/3 nodes are available: 3 Insufficient cpu.",
        reasons={"Insufficient cpu": 3},
        at=AT,
    )
    pod.mark_unschedulable(
        message="0/3 nodes are available: 3 Insufficient cpu.",
        reasons={"Insufficient cpu": 3},
        at=AT,
    )
    pod.bind(node="n1", score=87, feasible_nodes=3, at=AT)
    assert pod.node_name == "n1"
    scheduled = [c for c in pod.manifest["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled == [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-25T03:12:00Z"}
    ]
    with pytest.raises(InvalidTransition, match="already bound"):
        pod.bind(node="n2", score=None, feasible_nodes=None, at=AT)
    assert [e.type for e in recorded(pod)] == ["PodCreated", "PodUnschedulable", "PodBound"]


def test_a_pod_built_from_its_manifest_decides_like_the_one_built_from_its_history() -> None:
    pod = Pod.create(None, agg_id="Pod/default/web", manifest=POD, uid="u1", at=AT)
    pod.apply_manifest(
        pod, agg_id="Pod/default/web", manifest={**POD, "metadata": {"name": "web", "labels": {"a": "b"}}},
        uid="u1", at=AT,
    )  # fmt: skip
    history = recorded(pod)
    from_history = Pod.from_history("Pod/default/web", history)
    snapshot = Pod.from_snapshot(
        "Pod/default/web", manifest=pod.manifest, uid="u1", version=pod.version, at=AT
    )
    assert isinstance(from_history, Pod) and isinstance(snapshot, Pod)
    for built in (from_history, snapshot):
        built.bind(node="n1", score=7, feasible_nodes=3, at=AT)
    a, b = recorded(from_history), recorded(snapshot)
    assert [(e.type, e.version, e.payload) for e in a] == [
        (e.type, e.version, e.payload) for e in b
    ]
    assert from_history.manifest == snapshot.manifest and snapshot.version == 3


def test_a_node_holds_state_beyond_its_manifest_so_it_has_no_manifest_snapshot() -> None:
    from core.nodes.aggregate import Node

    with pytest.raises(TypeError, match="beyond its manifest"):
        Node.from_snapshot("Node//n1", manifest={}, uid="u", version=1, at=AT)

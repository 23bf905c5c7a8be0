"""A node's pod range and a pod's addresses as decisions on aggregates (``core.network``,
``Node.assign_pod_cidr``, ``Pod.assign_ips``): a range is taken with the node's event or not at
all, a stated range is honoured or refused with the reason, a range goes back only when its
node is gone, and a node re-registering keeps its range. No server: aggregates in memory."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Network
from typing import Any

import pytest

from core.api.manifests import parse_manifest
from core.errors import AlreadyExists, InvalidTransition, ValidationFailed
from core.network.aggregate import PodCIDR
from core.network.decisions import (
    CIDRNotAvailable,
    assign_pod_cidr,
    choose_pod_cidr,
    release_pod_cidr,
    taken_ranges,
)
from core.network.ranges import ClusterCIDR
from core.nodes.aggregate import Node
from core.nodes.status import assigned_pod_cidr, node_condition
from core.pods.aggregate import Pod
from tests.unit.support import recorded

AT = datetime(2026, 12, 8, 9, 30, tzinfo=UTC)
CLUSTER = ClusterCIDR.parse("100.96.0.0/22", 24)


def node(name: str = "n1", uid: str = "uid-n1", spec: dict[str, Any] | None = None) -> Node:
    manifest = {"metadata": {"name": name}, "spec": spec or {}}
    created = Node.create(None, agg_id=f"Node//{name}", manifest=manifest, uid=uid, at=AT)
    assert isinstance(created, Node)
    created.collect_events()
    return created


def assign(host: Node, cidr: str, block: PodCIDR | None = None) -> PodCIDR:
    return assign_pod_cidr(
        host, block, cidr=IPv4Network(cidr), cluster=CLUSTER, uid=f"uid-{cidr}", at=AT
    )


def test_a_node_gets_the_next_free_range_with_its_object_both_or_neither() -> None:
    host = node()
    chosen = choose_pod_cidr(host.stated_pod_cidr, cluster=CLUSTER, taken={0})
    assert chosen == IPv4Network("100.96.1.0/24")
    block = assign(host, str(chosen))
    assert [e.type for e in recorded(block)] == ["PodCIDRCreated"]
    (event,) = recorded(host)
    assert event.type == "NodePodCIDRAssigned"
    assert event.payload == {"pod_cidr": "100.96.1.0/24", "cluster_cidr": "100.96.0.0/22"}
    assert block.name == "100.96.1.0-24" and block.held_by("n1", "uid-n1")
    assert host.manifest["spec"]["podCIDR"] == "100.96.1.0/24"
    assert host.manifest["spec"]["podCIDRs"] == ["100.96.1.0/24"]
    condition = node_condition(host.manifest, "NetworkUnavailable")
    assert condition is not None and condition["status"] == "False"
    assert condition["reason"] == "PodCIDRAssigned"
    assert assigned_pod_cidr(host.manifest) == host.pod_cidr == "100.96.1.0/24"
    assign(host, "100.96.1.0/24", block)  # the same again: nothing
    assert recorded(host) == [] and recorded(block) == []


def test_a_range_held_by_another_node_or_reserved_is_not_given() -> None:
    first, second = node("n1", "u1"), node("n2", "u2")
    block = assign(first, "100.96.0.0/24")
    block.collect_events()
    with pytest.raises(AlreadyExists, match=r"podCIDR 100\.96\.0\.0/24 is held by node n1"):
        assign(second, "100.96.0.0/24", block)
    assert second.pod_cidr is None
    reserved = PodCIDR.create(
        None, agg_id="PodCIDR//100.96.2.0-24", uid="r",
        manifest={"metadata": {"name": "100.96.2.0-24"}, "spec": {"cidr": "100.96.2.0/24"}},
        at=AT,
    )  # fmt: skip
    assert isinstance(reserved, PodCIDR)
    with pytest.raises(AlreadyExists, match="held by a reservation"):
        assign(second, "100.96.2.0/24", reserved)


def test_a_node_never_changes_its_range() -> None:
    host = node()
    assign(host, "100.96.0.0/24")
    with pytest.raises(InvalidTransition, match=r"already has podCIDR 100\.96\.0\.0/24"):
        assign(host, "100.96.1.0/24")
    with pytest.raises(InvalidTransition, match="already has podCIDR"):
        host.refuse_pod_cidr(pod_cidr=None, message="full", at=AT)


def test_a_stated_range_is_honoured_when_it_lies_in_the_cluster_cidr() -> None:
    host = node(spec={"podCIDR": "100.96.3.0/24"})
    assert host.stated_pod_cidr == "100.96.3.0/24" and host.pod_cidr is None
    chosen = choose_pod_cidr(host.stated_pod_cidr, cluster=CLUSTER, taken=set())
    assert chosen == IPv4Network("100.96.3.0/24")
    assign(host, str(chosen))
    assert host.pod_cidr == "100.96.3.0/24"
    with pytest.raises(InvalidTransition, match=r"states podCIDR 100\.96\.3\.0/24, not"):
        node(spec={"podCIDR": "100.96.3.0/24"}).assign_pod_cidr(
            pod_cidr="100.96.2.0/24", cluster_cidr=str(CLUSTER), at=AT
        )


@pytest.mark.parametrize(
    ("stated", "message"),
    [
        ("10.1.0.0/24", "podCIDR 10.1.0.0/24 is outside the cluster CIDR 100.96.0.0/22"),
        ("100.96.1.0/25", "is a /25; this cluster gives each node a /24"),
    ],
)
def test_a_stated_range_outside_the_cluster_is_refused_with_the_reason(
    stated: str, message: str
) -> None:
    host = node(spec={"podCIDR": stated})
    with pytest.raises(CIDRNotAvailable, match=message) as refused:
        choose_pod_cidr(host.stated_pod_cidr, cluster=CLUSTER, taken=set())
    host.refuse_pod_cidr(pod_cidr=stated, message=refused.value.message, at=AT)
    (event,) = recorded(host)
    assert event.type == "NodePodCIDRRefused" and event.payload["reason"] == "CIDRNotAvailable"
    condition = node_condition(host.manifest, "NetworkUnavailable")
    assert condition is not None and condition["status"] == "True"
    assert condition["reason"] == "CIDRNotAvailable" and message in condition["message"]
    assert host.pod_cidr is None  # stated, but not the node's
    host.refuse_pod_cidr(pod_cidr=stated, message=refused.value.message, at=AT)
    assert recorded(host) == []  # the same refusal once


def test_a_full_cluster_cidr_is_refused_with_the_count() -> None:
    with pytest.raises(CIDRNotAvailable, match=r"100.96.0.0/22 is full: all 4 node ranges"):
        choose_pod_cidr(None, cluster=CLUSTER, taken={0, 1, 2, 3})


def test_ranges_held_at_another_size_keep_every_range_they_touch() -> None:
    held = ["100.96.0.0/23", "100.96.3.128/25", "10.0.0.0/8", "garbage"]
    assert taken_ranges(CLUSTER, held) == {0, 1, 3}


def test_a_range_goes_back_only_when_its_node_is_gone() -> None:
    host = node()
    block = assign(host, "100.96.0.0/24")
    block.collect_events()
    host.collect_events()
    with pytest.raises(InvalidTransition, match="still held by node n1"):
        release_pod_cidr(block, host, at=AT)
    recreated = node(uid="uid-n1-again")  # deleted and created again: a new holder
    release_pod_cidr(block, recreated, at=AT)
    (event,) = recorded(block)
    assert event.type == "PodCIDRDeleted"
    assert event.payload["reason"] == "node n1 was deleted: its podCIDR 100.96.0.0/24 is free"
    block2 = assign(node("n2", "u2"), "100.96.1.0/24")
    release_pod_cidr(block2, None, at=AT)
    assert not block2.exists


def test_a_node_re_registering_keeps_its_range_and_cannot_change_it() -> None:
    host = node()
    assign(host, "100.96.0.0/24")
    host.collect_events()
    declared = {
        "metadata": {"name": "n1"},
        "status": {
            "capacity": {"cpu": "2"},
            "conditions": [{"type": "PodNetworkReady", "status": "True", "reason": "x"}],
        },
    }
    Node.apply_manifest(host, agg_id="Node//n1", manifest=declared, uid="ignored", at=AT)
    assert host.pod_cidr == "100.96.0.0/24"
    types = [c["type"] for c in host.manifest["status"]["conditions"]]
    assert types == ["PodNetworkReady", "NetworkUnavailable"]
    moved = {**declared, "spec": {"podCIDR": "100.96.1.0/24"}}
    with pytest.raises(InvalidTransition, match="may not change podCIDR") as refused:
        Node.apply_manifest(host, agg_id="Node//n1", manifest=moved, uid="ignored", at=AT)
    assert refused.value.field == "spec.podCIDR"


def test_a_pod_cidr_object_is_named_after_its_range() -> None:
    document = {
        "apiVersion": "networking.fleetlog.dev/v1alpha1",
        "kind": "PodCIDR",
        "metadata": {"name": "100.96.9.0-24"},
        "spec": {"cidr": "100.96.9.0/24", "nodeName": "n1"},
    }
    assert parse_manifest(document).kind == "PodCIDR"
    with pytest.raises(ValidationFailed, match=r"named after its range: '100\.96\.9\.0-24'"):
        parse_manifest({**document, "metadata": {"name": "mine"}})
    with pytest.raises(ValidationFailed, match="has host bits set"):
        parse_manifest({**document, "spec": {"cidr": "100.96.9.1/24"}})


# -- a pod's addresses ---------------------------------------------------------------------------


def bound_pod(on: str = "n1") -> Pod:
    manifest = {"metadata": {"name": "web", "namespace": "default"},
                "spec": {"nodeName": on, "containers": [{"name": "main", "image": "x"}]}}  # fmt: skip
    created = Pod.create(None, agg_id="Pod/default/web", manifest=manifest, uid="u", at=AT)
    assert isinstance(created, Pod)
    created.collect_events()
    return created


def test_a_pod_records_its_addresses_once() -> None:
    pod = bound_pod()
    pod.assign_ips(node="n1", pod_ips=["100.96.0.2"], host_ip="100.96.0.1", at=AT)
    (event,) = recorded(pod)
    assert event.type == "PodIPAssigned"
    status = pod.manifest["status"]
    assert status["podIP"] == "100.96.0.2" and status["podIPs"] == [{"ip": "100.96.0.2"}]
    assert status["hostIP"] == "100.96.0.1" and status["hostIPs"] == [{"ip": "100.96.0.1"}]
    pod.assign_ips(node="n1", pod_ips=["100.96.0.2"], host_ip="100.96.0.1", at=AT)
    assert recorded(pod) == []
    pod.assign_ips(node="n1", pod_ips=["100.96.0.7"], host_ip="100.96.0.1", at=AT)
    assert pod.pod_ips == ["100.96.0.7"]  # its network was made again


def test_only_the_pods_node_gives_it_an_address() -> None:
    with pytest.raises(InvalidTransition, match="bound to node 'n1', not 'n2'"):
        bound_pod().assign_ips(node="n2", pod_ips=["100.96.0.2"], host_ip="h", at=AT)

"""The endpoint-slice controller's decisions without a server (``core.services.slices``): which
pods are endpoints and how ready, named ports resolved per pod, at most 100 endpoints a slice,
and slices changed with the least churn."""

from __future__ import annotations

import itertools
from typing import Any

from core.api.manifests import dump_manifest, parse_manifest
from core.services.slices import (
    CONTROLLER_NAME,
    EndpointGroup,
    PodState,
    Ports,
    SlicePlan,
    desired_endpoints,
    plan_slices,
    ready_addresses,
)

ZONES = {"node-a": "zone-1", "node-b": "zone-2"}


def service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"team": "a"}},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}],
            **spec,
        },
    }


def pod(
    name: str,
    ip: str | None = "100.96.0.5",
    *,
    ready: bool = True,
    node: str = "node-a",
    labels: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    phase: str = "Running",
    **extra: Any,
) -> PodState:
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip is not None:
        status["podIP"], status["podIPs"] = ip, [{"ip": ip}]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "shop",
        "labels": labels or {"app": "web"},
    }
    metadata.update(extra.pop("metadata", {}))
    spec = {
        "nodeName": node,
        "containers": [
            {
                "name": "main",
                "image": "web",
                "ports": ports if ports is not None else [{"name": "http", "containerPort": 8080}],
            }
        ],
        **extra,
    }
    return PodState(
        "shop", name, f"uid-{name}", {"metadata": metadata, "spec": spec, "status": status}
    )


def only_group(groups: dict[Ports, EndpointGroup]) -> EndpointGroup:
    assert len(groups) == 1
    return next(iter(groups.values()))


def names() -> Any:
    counter = itertools.count()
    return lambda: f"web-{next(counter):05d}"


def apply(existing: list[dict[str, Any]], plan: SlicePlan) -> list[dict[str, Any]]:
    """The slices after the plan's writes (what the gateway would store)."""
    by_name = {s["metadata"]["name"]: s for s in existing}
    for name in plan.delete:
        del by_name[name]
    for written in [*plan.update, *plan.create]:
        stored = dump_manifest(parse_manifest(written))
        assert stored == written  # the gateway stores what the controller sent: no churn
        by_name[written["metadata"]["name"]] = written
    return sorted(by_name.values(), key=lambda s: s["metadata"]["name"])


def reconcile(
    existing: list[dict[str, Any]], pods: list[PodState], new_name: Any, **spec: Any
) -> tuple[list[dict[str, Any]], SlicePlan]:
    svc = service(**spec)
    plan = plan_slices(
        svc,
        uid="svc-uid",
        desired=desired_endpoints(svc, pods, ZONES),
        existing=existing,
        new_name=new_name,
    )
    return apply(existing, plan), plan


# -- endpoints ------------------------------------------------------------------------------------


def test_a_ready_pod_is_a_ready_serving_endpoint_with_its_node_and_zone() -> None:
    group = only_group(desired_endpoints(service(), [pod("web-1")], ZONES))
    assert group.ports == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert group.endpoints == {
        "shop/web-1": {
            "addresses": ["100.96.0.5"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "uid-web-1"},
            "nodeName": "node-a",
            "zone": "zone-1",
        }
    }


def test_readiness_follows_the_ready_condition_unless_not_ready_addresses_are_published() -> None:
    not_ready = pod("web-1", ready=False)
    conditions = only_group(desired_endpoints(service(), [not_ready], ZONES)).endpoints[
        "shop/web-1"
    ]["conditions"]
    assert conditions == {"ready": False, "serving": False, "terminating": False}
    published = only_group(
        desired_endpoints(service(publishNotReadyAddresses=True), [not_ready], ZONES)
    ).endpoints["shop/web-1"]["conditions"]
    assert published == {"ready": True, "serving": False, "terminating": False}


def test_a_terminating_pod_is_serving_but_not_ready() -> None:
    leaving = pod("web-1", metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"})
    endpoint = only_group(desired_endpoints(service(), [leaving], ZONES)).endpoints["shop/web-1"]
    assert endpoint["conditions"] == {"ready": False, "serving": True, "terminating": True}


def test_pods_without_an_address_finished_or_not_selected_are_no_endpoints() -> None:
    pods = [
        pod("no-ip", ip=None),
        pod("done", phase="Succeeded"),
        pod("failed", phase="Failed"),
        pod("other", labels={"app": "db"}),
    ]
    assert desired_endpoints(service(), pods, ZONES) == {}
    assert desired_endpoints(service(selector={}), [pod("web-1")], ZONES) == {}


def test_a_named_target_port_is_resolved_per_pod_and_a_pod_lacking_it_serves_the_rest() -> None:
    svc = service(
        ports=[
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
            {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090},
        ]
    )
    pods = [
        pod("web-1", "100.96.0.1", ports=[{"name": "http", "containerPort": 8080}]),
        pod("web-2", "100.96.0.2", ports=[{"name": "http", "containerPort": 8081}]),
        pod("web-3", "100.96.0.3", ports=[{"name": "web", "containerPort": 8080}]),
        # The name must come with the service port's protocol.
        pod(
            "web-4",
            "100.96.0.4",
            ports=[{"name": "http", "containerPort": 8080, "protocol": "UDP"}],
        ),
    ]
    groups = desired_endpoints(svc, pods, ZONES)
    by_pods = {tuple(sorted(g.endpoints)): g.ports for g in groups.values()}
    assert by_pods == {
        ("shop/web-1",): [
            {"name": "http", "protocol": "TCP", "port": 8080},
            {"name": "metrics", "protocol": "TCP", "port": 9090},
        ],
        ("shop/web-2",): [
            {"name": "http", "protocol": "TCP", "port": 8081},
            {"name": "metrics", "protocol": "TCP", "port": 9090},
        ],
        ("shop/web-3", "shop/web-4"): [{"name": "metrics", "protocol": "TCP", "port": 9090}],
    }


def test_a_pod_declaring_none_of_the_ports_is_in_a_slice_without_ports() -> None:
    slices, _ = reconcile([], [pod("web-1", ports=[])], names())
    assert len(slices) == 1 and "ports" not in slices[0]
    assert [e["addresses"] for e in slices[0]["endpoints"]] == [["100.96.0.5"]]


def test_the_hostname_is_set_when_the_pod_names_the_service_as_its_subdomain() -> None:
    named = pod("db-0", hostname="db-0", subdomain="web")
    other = pod("db-1", "100.96.0.6", hostname="db-1", subdomain="elsewhere")
    endpoints = only_group(desired_endpoints(service(), [named, other], ZONES)).endpoints
    assert endpoints["shop/db-0"]["hostname"] == "db-0"
    assert "hostname" not in endpoints["shop/db-1"]


# -- slices ---------------------------------------------------------------------------------------


def many(count: int, *, ready: bool = True) -> list[PodState]:
    return [
        pod(f"web-{i:03d}", f"100.96.{i // 200}.{i % 200 + 1}", ready=ready) for i in range(count)
    ]


def test_slices_hold_at_most_100_endpoints() -> None:
    slices, plan = reconcile([], many(250), names())
    assert [len(s["endpoints"]) for s in slices] == [100, 100, 50] and len(plan.create) == 3
    assert {e["targetRef"]["name"] for s in slices for e in s["endpoints"]} == {
        f"web-{i:03d}" for i in range(250)
    }


def test_a_slice_is_labelled_and_owned_as_kubernetes_does_it() -> None:
    (created,), _ = reconcile([], [pod("web-1")], names())
    metadata = created["metadata"]
    assert metadata["name"] == "web-00000" and metadata["generateName"] == "web-"
    assert metadata["labels"] == {
        "team": "a",
        "kubernetes.io/service-name": "web",
        "endpointslice.kubernetes.io/managed-by": CONTROLLER_NAME,
    }
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "web",
            "uid": "svc-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert created["addressType"] == "IPv4"
    (headless,), _ = reconcile([], [pod("web-1")], names(), clusterIP="None")
    assert headless["metadata"]["labels"]["service.kubernetes.io/headless"] == ""


def test_nothing_is_written_when_nothing_changed() -> None:
    slices, _ = reconcile([], many(150), names())
    again, plan = reconcile(slices, many(150), names())
    assert not plan and again == slices


def test_a_pod_turning_not_ready_rewrites_only_its_slice() -> None:
    slices, _ = reconcile([], many(250), names())
    pods = many(250)
    pods[120] = pod("web-120", "100.96.0.121", ready=False)
    after, plan = reconcile(slices, pods, names())
    assert (plan.create, plan.delete) == ([], [])
    assert [s["metadata"]["name"] for s in plan.update] == ["web-00001"]
    changed = {e["targetRef"]["name"]: e for e in plan.update[0]["endpoints"]}
    assert changed["web-120"]["conditions"]["ready"] is False
    ready = [address for address, _ in ready_addresses(after)]
    assert len(ready) == 249 and "100.96.0.121" not in ready


def test_new_endpoints_fill_a_slice_with_room_before_a_new_one_is_made() -> None:
    slices, _ = reconcile([], many(150), names())
    after, plan = reconcile(slices, many(170), names())
    assert plan.create == [] and [s["metadata"]["name"] for s in plan.update] == ["web-00001"]
    assert [len(s["endpoints"]) for s in after] == [100, 70]


def test_new_endpoints_go_first_into_slices_being_rewritten_anyway() -> None:
    slices, _ = reconcile([], many(200), names())  # two full slices
    pods = [*many(200)[1:], pod("web-new", "100.96.9.9")]  # one gone from the first, one new
    after, plan = reconcile(slices, pods, names())
    assert plan.create == [] and [s["metadata"]["name"] for s in plan.update] == ["web-00000"]
    assert [len(s["endpoints"]) for s in after] == [100, 100]


def test_an_emptied_slice_is_deleted_or_reused_for_new_endpoints() -> None:
    slices, _ = reconcile([], many(150), names())
    remaining = many(150)[100:]
    after, plan = reconcile(slices, remaining, names())
    assert plan.delete == ["web-00000"] and plan.create == []
    assert len(after) == 1
    # Different ports for everyone: the old slice is rewritten, not deleted and made anew.
    moved = [
        pod(p.name, p.manifest["status"]["podIP"], ports=[{"name": "http", "containerPort": 9000}])
        for p in remaining
    ]
    again, plan = reconcile(after, moved, names())
    assert plan.create == [] and plan.delete == [] and len(plan.update) == 1
    assert again[0]["ports"] == [{"name": "http", "protocol": "TCP", "port": 9000}]


def test_a_service_without_endpoints_keeps_one_placeholder_slice() -> None:
    placeholder, plan = reconcile([], [], names())
    assert len(plan.create) == 1 and placeholder[0]["endpoints"] == []
    assert "ports" not in placeholder[0]
    same, plan = reconcile(placeholder, [], names())
    assert not plan and same == placeholder
    filled, plan = reconcile(placeholder, [pod("web-1")], names())
    assert plan.create == [] and plan.delete == [] and len(filled) == 1
    emptied, plan = reconcile(filled, [], names())
    assert plan.create == [] and plan.delete == [] and emptied[0]["endpoints"] == []


def test_ready_addresses_skip_endpoints_that_are_not_ready() -> None:
    pods = [pod("web-1", "100.96.0.1"), pod("web-2", "100.96.0.2", ready=False)]
    slices, _ = reconcile([], pods, names())
    assert [a for a, _ in ready_addresses(slices)] == ["100.96.0.1"]

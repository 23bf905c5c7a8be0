"""What the node forwards for a service: frontends per TCP port, the endpoints new connections
may go to (ready ones, else serving-and-terminating ones, else none), and the policy and
affinity the service asks for; and admission refuses an unknown policy."""

from __future__ import annotations

from typing import Any

import pytest

from core.api.manifests import dump_manifest, parse_manifest
from core.errors import ValidationFailed
from core.services.balancing import POLICY_ANNOTATION, Endpoint, Policy
from core.services.forwarding import frontends, passthrough_targets, usable_endpoints


def service(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "web"}
    if annotations:
        metadata["annotations"] = annotations
    return dump_manifest(
        parse_manifest({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec})
    )


def endpoint(address: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions}


def slice_of(port: int, *endpoints: dict[str, Any], name: str = "http") -> dict[str, Any]:
    return {
        "ports": [{"name": name, "port": port, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


WEB = {
    "selector": {"app": "web"},
    "clusterIP": "100.64.3.4",
    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
}


def test_a_cluster_ip_service_has_one_frontend_per_port_with_its_ready_endpoints() -> None:
    slices = [
        slice_of(8080, endpoint("100.96.0.3", ready=True), endpoint("100.96.0.2")),
        # A named targetPort resolved to another number for this pod.
        slice_of(9090, endpoint("100.96.0.4", ready=True)),
        slice_of(8080, endpoint("100.96.0.5", ready=False, serving=False)),
    ]
    (frontend,), skipped = frontends("shop", "web", service(WEB), slices)
    assert skipped == []
    assert (frontend.cluster_ip, frontend.port, frontend.node_port) == ("100.64.3.4", 80, None)
    assert frontend.policy is Policy.ROUND_ROBIN and frontend.affinity_seconds is None
    assert frontend.endpoints == (
        Endpoint("100.96.0.2", 8080),
        Endpoint("100.96.0.3", 8080),
        Endpoint("100.96.0.4", 9090),
    )
    assert str(frontend) == "shop/web:http"


def test_terminating_endpoints_that_still_serve_are_used_only_when_none_is_ready() -> None:
    terminating = endpoint("100.96.0.7", ready=False, serving=True, terminating=True)
    gone = endpoint("100.96.0.8", ready=False, serving=False, terminating=True)
    ready = endpoint("100.96.0.9", ready=True)
    assert usable_endpoints([slice_of(80, terminating, gone, ready)], port_name="http") == (
        Endpoint("100.96.0.9", 80),
    )
    assert usable_endpoints([slice_of(80, terminating, gone)], port_name="http") == (
        Endpoint("100.96.0.7", 80),
    )
    assert usable_endpoints([slice_of(80, gone)], port_name="http") == ()
    # A slice of another port (or protocol) gives this port nothing.
    assert usable_endpoints([slice_of(80, ready, name="admin")], port_name="http") == ()


def test_node_ports_policy_and_client_ip_affinity_come_from_the_service() -> None:
    spec = {
        **WEB,
        "type": "NodePort",
        "sessionAffinity": "ClientIP",
        "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
        ],
    }
    found, skipped = frontends(
        "default", "web", service(spec, {POLICY_ANNOTATION: "RING_HASH"}), []
    )
    (frontend,) = found
    assert frontend.node_port == 30080 and frontend.policy is Policy.RING_HASH
    assert frontend.affinity_seconds == 10800 and frontend.endpoints == ()
    assert [s.reason for s in skipped] == [
        "port 53/UDP is not forwarded: the node forwards TCP service ports only"
    ]


def test_headless_and_external_name_services_are_not_forwarded() -> None:
    headless = service({**WEB, "clusterIP": "None"})
    external = service({"type": "ExternalName", "externalName": "db.example.com"})
    not_allocated = service({k: v for k, v in WEB.items() if k != "clusterIP"})
    for manifest in (headless, external, not_allocated):
        assert frontends("default", "web", manifest, []) == ([], [])


def test_only_passthrough_services_endpoints_are_handed_through() -> None:
    slices = [slice_of(8080, endpoint("100.96.0.3", ready=True))]
    (plain,), _ = frontends("default", "web", service(WEB), slices)
    (through,), _ = frontends(
        "default", "web", service(WEB, {POLICY_ANNOTATION: "PASSTHROUGH"}), slices
    )
    assert passthrough_targets([plain]) == set()
    assert passthrough_targets([plain, through]) == {Endpoint("100.96.0.3", 8080)}


def test_admission_refuses_a_policy_that_is_not_one_of_the_five() -> None:
    with pytest.raises(ValidationFailed) as caught:
        service(WEB, {POLICY_ANNOTATION: "FASTEST"})
    assert [str(e) for e in caught.value.errors] == [
        'metadata.annotations[fleetlog.dev/load-balancer]: Unsupported value "FASTEST": '
        'supported values: "ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "RANDOM", "PASSTHROUGH"'
    ]
    assert service(WEB, {POLICY_ANNOTATION: "LEAST_REQUEST"})["metadata"]["annotations"] == {
        POLICY_ANNOTATION: "LEAST_REQUEST"
    }


def test_a_service_another_proxy_serves_is_left_alone() -> None:
    kube_dns = service(WEB)
    kube_dns["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "node-dns"}
    slices = [slice_of(8080, endpoint("100.96.0.3", ready=True))]
    assert frontends("kube-system", "kube-dns", kube_dns, slices) == ([], [])
    assert frontends("default", "web", service(WEB), slices)[0]

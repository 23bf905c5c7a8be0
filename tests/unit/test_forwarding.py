"""What the node forwards for a service: frontends per TCP and UDP port (SCTP said, not
forwarded), the endpoints new connections
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


def slice_of(
    port: int, *endpoints: dict[str, Any], name: str = "http", protocol: str = "TCP"
) -> dict[str, Any]:
    return {
        "ports": [{"name": name, "port": port, "protocol": protocol}],
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
    http, dns = found
    assert http.node_port == 30080 and http.policy is Policy.RING_HASH
    assert http.affinity_seconds == 10800 and http.endpoints == ()
    assert (dns.protocol, dns.node_port, dns.policy) == ("UDP", 30053, Policy.RING_HASH)
    assert dns.affinity_seconds == 10800 and skipped == []


def test_a_tcp_and_a_udp_port_of_one_number_are_two_frontends_with_their_own_endpoints() -> None:
    spec = {
        **WEB,
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
        ],
    }
    slices = [
        slice_of(5353, endpoint("100.96.0.3", ready=True), name="dns", protocol="UDP"),
        slice_of(5353, endpoint("100.96.0.4", ready=True), name="dns-tcp"),
    ]
    udp, tcp = frontends("default", "web", service(spec), slices)[0]
    assert (udp.protocol, udp.port, udp.endpoints) == ("UDP", 53, (Endpoint("100.96.0.3", 5353),))
    assert (tcp.protocol, tcp.port, tcp.endpoints) == ("TCP", 53, (Endpoint("100.96.0.4", 5353),))
    assert udp.key != tcp.key
    # A slice port is matched by name and protocol: a TCP slice port named "dns" is not UDP's.
    wrong = [slice_of(5353, endpoint("100.96.0.3", ready=True), name="dns")]
    assert frontends("default", "web", service(spec), wrong)[0][0].endpoints == ()


def test_an_sctp_port_is_stored_but_skipped_with_a_reason_the_node_can_say() -> None:
    spec = {
        **WEB,
        "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "sig", "port": 3868, "protocol": "SCTP"},
        ],
    }
    (http,), (sctp,) = frontends("default", "web", service(spec), [])
    assert http.protocol == "TCP"
    assert (sctp.port, sctp.protocol) == (3868, "SCTP")
    assert sctp.reason == (
        "port 3868/SCTP is not forwarded: the node does not forward SCTP (no listener on the "
        "cluster IP or node port); clients reach the endpoints at their pod addresses"
    )


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
    # A PASSTHROUGH UDP port's datagrams are not handed to the proxy (its TCP rules would
    # otherwise catch TCP connections to the same address and port).
    udp = {**WEB, "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}]}
    (udp_through,), _ = frontends(
        "default", "web", service(udp, {POLICY_ANNOTATION: "PASSTHROUGH"}),
        [slice_of(53, endpoint("100.96.0.3", ready=True), name="dns", protocol="UDP")],
    )  # fmt: skip
    assert udp_through.endpoints and passthrough_targets([udp_through]) == set()


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

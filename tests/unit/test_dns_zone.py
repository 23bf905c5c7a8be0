"""The cluster zone's answers, without a server: Kubernetes' DNS specification as CoreDNS'
kubernetes plugin (kubeadm's Corefile: pods insecure, ttl 30, reverse fallthrough) serves it."""

from __future__ import annotations

from typing import Any

import pytest

from core.dns.zone import FORWARD, ClusterZone, Record, SOAData, SRVData


def labels(name: str) -> tuple[str, ...]:
    return tuple(name.rstrip(".").split("."))


def service(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("clusterIP", "100.64.3.4")
    if spec["clusterIP"] != "None":
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
    spec.setdefault("ports", [{"name": "http", "port": 80, "protocol": "TCP"}])
    return {"metadata": {"name": name}, "spec": spec}


def endpoint_slice(
    service_name: str, *endpoints: dict[str, Any], ports: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports,
        "endpoints": list(endpoints),
    }


def ep(address: str, *, ready: bool | None = True, hostname: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [address]}
    if ready is not None:
        out["conditions"] = {"ready": ready}
    if hostname:
        out["hostname"] = hostname
    return out


@pytest.fixture
def zone() -> ClusterZone:
    zone = ClusterZone(dns_ip="100.64.0.10")
    zone.serial = 42
    for namespace in ("default", "shop"):
        zone.set_namespace(namespace, exists=True)
    zone.set_service("shop", "web", service("web"))
    return zone


def answers(zone: ClusterZone, name: str, qtype: str = "A") -> list[tuple[str, str, Any]]:
    return [(r.name, r.rtype, r.data) for r in zone.resolve(labels(name), qtype).answer]


def test_a_service_name_answers_its_cluster_ip_with_the_zone_ttl(zone: ClusterZone) -> None:
    answer = zone.resolve(labels("web.shop.svc.cluster.local"), "A")
    assert answer.rcode == "NOERROR" and not answer.forward
    assert answer.answer == (Record("web.shop.svc.cluster.local.", "A", 30, "100.64.3.4"),)


def test_names_match_case_insensitively_and_answer_in_the_case_asked(zone: ClusterZone) -> None:
    assert answers(zone, "Web.SHOP.svc.Cluster.Local") == [
        ("Web.SHOP.svc.Cluster.Local.", "A", "100.64.3.4")
    ]


def test_an_unknown_service_is_nxdomain_with_the_soa_in_authority(zone: ClusterZone) -> None:
    answer = zone.resolve(labels("nope.shop.svc.cluster.local"), "A")
    assert answer.rcode == "NXDOMAIN" and answer.answer == ()
    (soa,) = answer.authority
    assert soa.name == "cluster.local." and soa.rtype == "SOA" and soa.ttl == 30
    assert soa.data == SOAData(
        "ns.dns.cluster.local.", "hostmaster.cluster.local.", 42, 7200, 1800, 86400, 30
    )


def test_the_search_path_candidates_of_a_pod_in_shop(zone: ClusterZone) -> None:
    # `web.shop` from namespace shop with ndots:5: the resolver asks these in turn.
    assert zone.resolve(labels("web.shop.shop.svc.cluster.local"), "A").rcode == "NXDOMAIN"
    assert answers(zone, "web.shop.svc.cluster.local") == [
        ("web.shop.svc.cluster.local.", "A", "100.64.3.4")
    ]


def test_an_existing_name_without_records_of_the_type_is_nodata(zone: ClusterZone) -> None:
    for name, qtype in [
        ("web.shop.svc.cluster.local", "AAAA"),
        ("web.shop.svc.cluster.local", "TXT"),
        ("shop.svc.cluster.local", "A"),
        ("svc.cluster.local", "A"),
        ("cluster.local", "A"),
    ]:
        answer = zone.resolve(labels(name), qtype)
        assert (answer.rcode, answer.answer) == ("NOERROR", ()), name
        assert answer.authority[0].rtype == "SOA"


def test_a_namespace_that_does_not_exist_is_nxdomain(zone: ClusterZone) -> None:
    for name in ("web.nowhere.svc.cluster.local", "nowhere.svc.cluster.local"):
        assert zone.resolve(labels(name), "A").rcode == "NXDOMAIN"
    assert zone.resolve(labels("web.shop.other.cluster.local"), "A").rcode == "NXDOMAIN"


def test_srv_of_a_named_port_targets_the_service_with_its_address(zone: ClusterZone) -> None:
    zone.set_service(
        "shop", "web",
        service("web", ports=[
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ]),
    )  # fmt: skip
    answer = zone.resolve(labels("_http._tcp.web.shop.svc.cluster.local"), "SRV")
    assert answer.answer == (
        Record(
            "_http._tcp.web.shop.svc.cluster.local.", "SRV", 30,
            SRVData(0, 100, 80, "web.shop.svc.cluster.local."),
        ),
    )  # fmt: skip
    assert answer.additional == (Record("web.shop.svc.cluster.local.", "A", 30, "100.64.3.4"),)
    udp = zone.resolve(labels("_dns._udp.web.shop.svc.cluster.local"), "SRV")
    assert [r.data.port for r in udp.answer if isinstance(r.data, SRVData)] == [53]
    # A port or protocol the service does not have: the name does not exist.
    for name in ("_dns._tcp.web.shop.svc.cluster.local", "_grpc._tcp.web.shop.svc.cluster.local"):
        assert zone.resolve(labels(name), "SRV").rcode == "NXDOMAIN"
    # The service's own name: one SRV per port, weights splitting 100.
    both = zone.resolve(labels("web.shop.svc.cluster.local"), "SRV")
    assert sorted((r.data.port, r.data.weight) for r in both.answer) == [(53, 50), (80, 50)]  # type: ignore[union-attr]


def test_a_headless_service_answers_its_ready_endpoints(zone: ClusterZone) -> None:
    zone.set_service("shop", "db", service("db", clusterIP="None"))
    zone.set_slice(
        "shop", "db-abcde",
        endpoint_slice(
            "db", ep("100.96.0.5", hostname="db-0"), ep("100.96.0.6"),
            ep("100.96.0.7", ready=False), ep("100.96.0.8", ready=None),
        ),
    )  # fmt: skip
    assert sorted(a for _, _, a in answers(zone, "db.shop.svc.cluster.local")) == [
        "100.96.0.5", "100.96.0.6", "100.96.0.8",
    ]  # fmt: skip
    # Each endpoint has a name of its own: its hostname, else its address with dashes.
    assert answers(zone, "db-0.db.shop.svc.cluster.local") == [
        ("db-0.db.shop.svc.cluster.local.", "A", "100.96.0.5")
    ]
    assert answers(zone, "100-96-0-6.db.shop.svc.cluster.local")[0][2] == "100.96.0.6"
    assert zone.resolve(labels("100-96-0-7.db.shop.svc.cluster.local"), "A").rcode == "NXDOMAIN"
    srv = zone.resolve(labels("_http._tcp.db.shop.svc.cluster.local"), "SRV")
    assert sorted((r.data.target, r.data.port, r.data.weight) for r in srv.answer) == [  # type: ignore[union-attr]
        ("100-96-0-6.db.shop.svc.cluster.local.", 8080, 33),
        ("100-96-0-8.db.shop.svc.cluster.local.", 8080, 33),
        ("db-0.db.shop.svc.cluster.local.", 8080, 33),
    ]
    assert ("db-0.db.shop.svc.cluster.local.", "100.96.0.5") in {
        (r.name, r.data) for r in srv.additional
    }


def test_a_headless_service_without_ready_endpoints_is_nxdomain(zone: ClusterZone) -> None:
    zone.set_service("shop", "db", service("db", clusterIP="None"))
    assert zone.resolve(labels("db.shop.svc.cluster.local"), "A").rcode == "NXDOMAIN"
    zone.set_slice("shop", "db-1", endpoint_slice("db", ep("100.96.0.5", ready=False)))
    assert zone.resolve(labels("db.shop.svc.cluster.local"), "A").rcode == "NXDOMAIN"
    zone.set_slice("shop", "db-1", endpoint_slice("db", ep("100.96.0.5")))
    assert answers(zone, "db.shop.svc.cluster.local")[0][2] == "100.96.0.5"
    zone.set_slice("shop", "db-1", None)
    assert zone.resolve(labels("db.shop.svc.cluster.local"), "A").rcode == "NXDOMAIN"


def test_a_headless_service_without_ports_has_addresses_but_no_srv(zone: ClusterZone) -> None:
    zone.set_service("shop", "db", service("db", clusterIP="None", ports=[]))
    zone.set_slice("shop", "db-1", endpoint_slice("db", ep("100.96.0.5"), ports=[]))
    assert answers(zone, "db.shop.svc.cluster.local")[0][2] == "100.96.0.5"
    srv = zone.resolve(labels("db.shop.svc.cluster.local"), "SRV")
    assert (srv.rcode, srv.answer) == ("NOERROR", ())


def test_an_external_name_service_is_a_cname_chased_upstream(zone: ClusterZone) -> None:
    zone.set_service(
        "shop", "pay",
        {"spec": {"type": "ExternalName", "externalName": "pay.example.test"}},
    )  # fmt: skip
    answer = zone.resolve(labels("pay.shop.svc.cluster.local"), "A")
    assert answer.answer == (
        Record("pay.shop.svc.cluster.local.", "CNAME", 30, "pay.example.test."),
    )
    assert answer.chase == "pay.example.test."
    assert zone.resolve(labels("pay.shop.svc.cluster.local"), "CNAME").chase is None
    assert zone.resolve(labels("_http._tcp.pay.shop.svc.cluster.local"), "SRV").rcode == (
        "NXDOMAIN"
    )
    # An external name inside the zone is followed here.
    zone.set_service(
        "shop", "alias",
        {"spec": {"type": "ExternalName", "externalName": "web.shop.svc.cluster.local"}},
    )  # fmt: skip
    chained = answers(zone, "alias.shop.svc.cluster.local")
    assert chained == [
        ("alias.shop.svc.cluster.local.", "CNAME", "web.shop.svc.cluster.local."),
        ("web.shop.svc.cluster.local.", "A", "100.64.3.4"),
    ]


def test_an_external_name_loop_inside_the_zone_ends(zone: ClusterZone) -> None:
    for a, b in (("x", "y"), ("y", "x")):
        zone.set_service(
            "shop", a,
            {"spec": {"type": "ExternalName", "externalName": f"{b}.shop.svc.cluster.local"}},
        )  # fmt: skip
    answer = zone.resolve(labels("x.shop.svc.cluster.local"), "A")
    assert len(answer.answer) == 9 and {r.rtype for r in answer.answer} == {"CNAME"}


def test_pod_names_answer_any_well_formed_address_of_an_existing_namespace(
    zone: ClusterZone,
) -> None:
    assert answers(zone, "100-96-1-7.shop.pod.cluster.local") == [
        ("100-96-1-7.shop.pod.cluster.local.", "A", "100.96.1.7")
    ]
    for name in (
        "100-96-1-7.nowhere.pod.cluster.local",
        "100-96-1.shop.pod.cluster.local",
        "300-96-1-7.shop.pod.cluster.local",
        "x.100-96-1-7.shop.pod.cluster.local",
    ):
        assert zone.resolve(labels(name), "A").rcode == "NXDOMAIN", name


def test_the_zone_apex_schema_version_and_name_server(zone: ClusterZone) -> None:
    soa = zone.resolve(labels("cluster.local"), "SOA")
    assert [r.rtype for r in soa.answer] == ["SOA"]
    assert answers(zone, "dns-version.cluster.local", "TXT") == [
        ("dns-version.cluster.local.", "TXT", "1.1.0")
    ]
    assert zone.resolve(labels("dns-version.cluster.local"), "TXT").answer[0].ttl == 28800
    ns = zone.resolve(labels("cluster.local"), "NS")
    assert ns.answer[0].data == "ns.dns.cluster.local."
    assert ns.additional == (Record("ns.dns.cluster.local.", "A", 30, "100.64.0.10"),)
    assert answers(zone, "ns.dns.cluster.local")[0][2] == "100.64.0.10"


def test_reverse_names_of_services_and_endpoints_answer_ptr(zone: ClusterZone) -> None:
    zone.set_service("shop", "db", service("db", clusterIP="None"))
    zone.set_slice("shop", "db-1", endpoint_slice("db", ep("100.96.0.5", hostname="db-0")))
    assert answers(zone, "4.3.64.100.in-addr.arpa", "PTR") == [
        ("4.3.64.100.in-addr.arpa.", "PTR", "web.shop.svc.cluster.local.")
    ]
    assert answers(zone, "5.0.96.100.in-addr.arpa", "PTR")[0][2] == (
        "db-0.db.shop.svc.cluster.local."
    )
    # Anything else in the reverse zones falls through to the upstream resolvers.
    assert zone.resolve(labels("9.9.96.100.in-addr.arpa"), "PTR") == FORWARD
    assert zone.resolve(labels("4.3.64.100.in-addr.arpa"), "A") == FORWARD


def test_names_outside_the_zone_are_forwarded(zone: ClusterZone) -> None:
    for name in ("example.test", "local", "web.shop.svc.cluster.local.example.test"):
        assert zone.resolve(labels(name), "A") == FORWARD


def test_a_deleted_service_disappears_with_its_reverse_name(zone: ClusterZone) -> None:
    zone.set_service("shop", "web", None)
    assert zone.resolve(labels("web.shop.svc.cluster.local"), "A").rcode == "NXDOMAIN"
    assert zone.resolve(labels("4.3.64.100.in-addr.arpa"), "PTR") == FORWARD


def test_another_cluster_domain_and_ttl() -> None:
    zone = ClusterZone(domain="corp.internal.", ttl=5)
    zone.set_namespace("a", exists=True)
    zone.set_service("a", "s", service("s"))
    assert zone.resolve(labels("s.a.svc.corp.internal"), "A").answer[0].ttl == 5
    assert zone.resolve(labels("s.a.svc.cluster.local"), "A") == FORWARD
    with pytest.raises(ValueError, match="TTL"):
        ClusterZone(ttl=4000)

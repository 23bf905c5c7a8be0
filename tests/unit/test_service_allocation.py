"""Services without a server: validation and defaults as kube-apiserver's, the ranges, and what
a service's create, update and delete take from and give back to them
(``core.services.model``, ``core.services.ranges``, ``core.services.allocation``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.api.manifests import dump_manifest, parse_manifest
from core.errors import InvalidTransition, ValidationFailed
from core.meta.aggregate import Resource
from core.services.aggregate import IPAddress, NodePortAllocation, Service
from core.services.allocation import (
    PickedValueTaken,
    RangeFull,
    ServicePlan,
    address_id,
    address_manifest,
    delete_service,
    node_port_id,
    plan_deletion,
    plan_service,
    seed_of,
    write_service,
)
from core.services.ranges import (
    DEFAULT_RANGES,
    NodePortRange,
    ServiceIPRange,
    ServiceRanges,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


def service(spec: dict[str, Any], name: str = "web") -> dict[str, Any]:
    """A service manifest as the gateway stores it: validated, with Kubernetes' defaults."""
    return dump_manifest(
        parse_manifest(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}
        )
    )


def problems(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        service(spec)
    return [str(error) for error in caught.value.errors]


WEB = {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}


def plan(
    sent: dict[str, Any],
    stored: dict[str, Any] | None = None,
    *,
    ips: set[str] | None = None,
    ports: set[int] | None = None,
    ranges: ServiceRanges = DEFAULT_RANGES,
) -> ServicePlan:
    return plan_service(
        stored, sent, ranges=ranges, taken_ips=ips or set(), taken_ports=ports or set(), seed=7
    )


# -- validation and defaults ----------------------------------------------------------------------


def test_client_ip_affinity_gets_the_three_hour_default_timeout() -> None:
    spec = service({**WEB, "sessionAffinity": "ClientIP"})["spec"]
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    kept = service(
        {
            **WEB,
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
        }
    )
    assert kept["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 60}}


def test_affinity_config_is_dropped_without_client_ip_affinity() -> None:
    spec = service({**WEB, "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}})["spec"]
    assert spec["sessionAffinity"] == "None" and "sessionAffinityConfig" not in spec


def test_affinity_timeout_beyond_a_day_is_refused() -> None:
    found = problems(
        {
            **WEB,
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}},
        }
    )
    assert found == [
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value 86401: "
        "must be greater than 0 and less than 86400"
    ]


def test_traffic_policies_and_load_balancer_node_ports_are_defaulted_where_they_apply() -> None:
    cluster_ip = service(WEB)["spec"]
    assert cluster_ip["internalTrafficPolicy"] == "Cluster"
    assert "externalTrafficPolicy" not in cluster_ip
    lb = service({**WEB, "type": "LoadBalancer"})["spec"]
    assert lb["externalTrafficPolicy"] == "Cluster"
    assert lb["allocateLoadBalancerNodePorts"] is True
    external = service({"type": "ExternalName", "externalName": "db.example.com"})["spec"]
    assert "internalTrafficPolicy" not in external and "ports" not in external


def test_cluster_ips_follow_cluster_ip() -> None:
    spec = service({**WEB, "clusterIP": "100.64.0.20"})["spec"]
    assert spec["clusterIPs"] == ["100.64.0.20"]
    assert problems({**WEB, "clusterIP": "100.64.0.20", "clusterIPs": ["100.64.0.21"]}) == [
        'spec.clusterIPs: Invalid value: ["100.64.0.21"]: first value must match `clusterIP`'
    ]


def test_a_cluster_ip_that_is_not_an_address_is_refused() -> None:
    assert problems({**WEB, "clusterIP": "100.64.0.300"}) == [
        'spec.clusterIPs[0]: Invalid value "100.64.0.300": must be a valid IP address, '
        "(e.g. 10.9.8.7 or 2001:db8::ffff)"
    ]


def test_headless_node_port_and_load_balancer_services_are_refused() -> None:
    for kind in ("NodePort", "LoadBalancer"):
        assert problems({**WEB, "type": kind, "clusterIP": "None"}) == [
            f"spec.clusterIPs[0]: Invalid value \"None\": may not be set to 'None' for {kind} "
            "services"
        ]


def test_external_name_services_take_no_address_and_need_a_name() -> None:
    found = problems({"type": "ExternalName", "clusterIP": "100.64.0.9"})
    assert found == [
        "spec.clusterIPs: Forbidden: may not be set for ExternalName services",
        "spec.externalName: Required value: must be set when `type` is 'ExternalName'",
    ]


def test_ports_are_required_unless_headless_or_external_name() -> None:
    assert problems({"selector": {"app": "web"}}) == [
        "spec.ports: Required value: a service needs at least one port"
    ]
    service({"selector": {"app": "web"}, "clusterIP": "None"})


def test_node_ports_are_forbidden_on_cluster_ip_services_and_unique_per_protocol() -> None:
    assert problems({**WEB, "ports": [{"port": 80, "nodePort": 30080}]}) == [
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
    ]
    found = problems(
        {
            "type": "NodePort",
            "ports": [
                {"name": "a", "port": 80, "nodePort": 30080},
                {"name": "b", "port": 81, "nodePort": 30080},
            ],
        }
    )
    assert found == ["spec.ports[1].nodePort: Duplicate value 30080"]
    # The same node port for TCP and UDP is one port on the node, allowed as in Kubernetes.
    service(
        {
            "type": "NodePort",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053},
            ],
        }
    )


def test_a_named_target_port_no_container_declares_is_accepted() -> None:
    # Kubernetes does not look at pods when a service is written: such a pod is simply not an
    # endpoint of that port (core.services.slices).
    spec = service({**WEB, "ports": [{"port": 80, "targetPort": "no-such-port"}]})["spec"]
    assert spec["ports"][0]["targetPort"] == "no-such-port"


# -- ranges -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("100.0.0.0/8", "too large; for 32-bit addresses, the mask must be >= 12"),
        ("100.64.0.0/30", "too small: at least a /28"),
        ("100.64.0.1/16", "has host bits set"),
        ("fd00::/108", "single-stack IPv4"),
        ("banana", "not a CIDR"),
    ],
)
def test_a_bad_service_range_is_refused_clearly(text: str, words: str) -> None:
    with pytest.raises(ValidationFailed, match="--service-cluster-ip-range") as caught:
        ServiceIPRange.parse(text)
    assert words in caught.value.message


def test_node_port_ranges_are_read_as_kubernetes_reads_them() -> None:
    assert NodePortRange.parse("30000-32767") == NodePortRange(30000, 2768)
    assert NodePortRange.parse("30000+2767") == NodePortRange(30000, 2768)
    for bad in ("32767-30000", "0-10", "60000-70000", "a-b"):
        with pytest.raises(ValidationFailed, match="--service-node-port-range"):
            NodePortRange.parse(bad)


def test_the_well_known_addresses_are_the_first_and_tenth() -> None:
    cidr = DEFAULT_RANGES.cluster_ips
    assert (cidr.kubernetes_ip, cidr.dns_ip) == ("100.64.0.1", "100.64.0.10")
    assert cidr.contains("100.64.255.254")
    assert not cidr.contains("100.64.0.0") and not cidr.contains("100.64.255.255")
    assert not cidr.contains("100.65.0.1")


def test_picks_come_from_the_upper_band_first_and_never_the_well_known_addresses() -> None:
    cidr = ServiceIPRange.parse("100.64.7.0/24")  # 254 addresses, the lowest 16 kept back
    picked = {cidr.pick(set(), seed=seed) for seed in range(500)}
    assert all(int(ip.rsplit(".", 1)[1]) > 16 for ip in picked if ip)
    upper = {f"100.64.7.{n}" for n in range(17, 255)}
    taken: set[str] = set(upper)
    rest = []
    while (ip := cidr.pick(taken, seed=3)) is not None:
        rest.append(ip)
        taken.add(ip)
    assert sorted(rest, key=lambda ip: int(ip.rsplit(".", 1)[1])) == [
        f"100.64.7.{n}" for n in range(2, 17) if n != 10
    ]


def test_node_port_picks_avoid_taken_ports_and_report_a_full_range() -> None:
    ports = NodePortRange.parse("30000-30003")
    taken = {30000, 30001, 30003}
    assert ports.pick(taken, seed=5) == 30002
    assert ports.pick(taken | {30002}, seed=5) is None


# -- planning -----------------------------------------------------------------------------------


def test_a_cluster_ip_service_gets_an_address_and_single_stack_families() -> None:
    result = plan(service(WEB))
    spec = result.manifest["spec"]
    assert spec["clusterIPs"] == [spec["clusterIP"]] == list(result.take_ips)
    assert DEFAULT_RANGES.cluster_ips.contains(spec["clusterIP"])
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert not result.requested_ips and not result.take_ports


def test_a_picked_address_avoids_the_taken_ones() -> None:
    first = plan(service(WEB)).take_ips[0]
    again = plan(service(WEB), ips={first}).take_ips[0]
    assert again != first


def test_a_full_range_is_reported() -> None:
    tiny = ServiceRanges.parse(cluster_ips="100.64.0.0/28")
    taken = {f"100.64.0.{n}" for n in range(1, 15)}
    with pytest.raises(RangeFull, match="failed to allocate a serviceIP: range is full"):
        plan(service(WEB), ips=taken, ranges=tiny)


def test_a_requested_address_outside_the_range_is_refused_in_kubernetes_words() -> None:
    with pytest.raises(ValidationFailed) as caught:
        plan(service({**WEB, "clusterIP": "10.0.0.5"}))
    assert caught.value.field == "spec.clusterIPs"
    assert caught.value.message == (
        'Invalid value: ["10.0.0.5"]: failed to allocate IP 10.0.0.5: provided IP is not in the '
        "valid range. The range of valid IPs is 100.64.0.0/16"
    )


def test_a_requested_address_in_range_is_taken_as_requested() -> None:
    result = plan(service({**WEB, "clusterIP": "100.64.0.10"}))
    assert result.take_ips == ("100.64.0.10",) and result.requested_ips == {"100.64.0.10"}


def test_headless_services_take_no_address() -> None:
    with_selector = plan(service({**WEB, "clusterIP": "None"}))
    assert with_selector.take_ips == ()
    spec = with_selector.manifest["spec"]
    assert spec["clusterIPs"] == ["None"] and spec["ipFamilyPolicy"] == "SingleStack"
    spec = plan(service({"clusterIP": "None", "ports": [{"port": 80}]})).manifest["spec"]
    assert spec["ipFamilyPolicy"] == "RequireDualStack"
    assert spec["ipFamilies"] == ["IPv4", "IPv6"]


def test_external_name_services_take_nothing() -> None:
    result = plan(service({"type": "ExternalName", "externalName": "db.example.com"}))
    assert (result.take_ips, result.take_ports) == ((), ())
    assert "ipFamilies" not in result.manifest["spec"]


def test_ipv6_and_required_dual_stack_are_refused_on_a_single_stack_cluster() -> None:
    with pytest.raises(ValidationFailed, match='"IPv6": not configured on this cluster'):
        plan(service({**WEB, "ipFamilies": ["IPv6"]}))
    with pytest.raises(ValidationFailed, match="not configured for dual-stack services"):
        plan(service({**WEB, "ipFamilyPolicy": "RequireDualStack"}))
    prefer = plan(service({**WEB, "ipFamilyPolicy": "PreferDualStack"})).manifest["spec"]
    assert prefer["ipFamilies"] == ["IPv4"] and prefer["ipFamilyPolicy"] == "PreferDualStack"


def node_port_service(*ports: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return service({"type": "NodePort", "selector": {"app": "web"}, "ports": list(ports), **spec})


def test_each_node_port_is_picked_from_the_range_and_distinct() -> None:
    result = plan(node_port_service({"name": "a", "port": 80}, {"name": "b", "port": 443}))
    ports = [p["nodePort"] for p in result.manifest["spec"]["ports"]]
    assert len(set(ports)) == 2 and all(30000 <= p <= 32767 for p in ports)
    assert sorted(result.take_ports) == sorted(ports) and not result.requested_ports


def test_a_requested_node_port_outside_the_range_is_refused() -> None:
    with pytest.raises(ValidationFailed) as caught:
        plan(node_port_service({"port": 80, "nodePort": 8080}))
    assert caught.value.field == "spec.ports[0].nodePort"
    assert caught.value.message == (
        "Invalid value: 8080: provided port is not in the valid range. The range of valid "
        "ports is 30000-32767"
    )


def test_one_node_port_for_two_protocols_is_one_allocation() -> None:
    result = plan(
        node_port_service(
            {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053},
        )
    )
    assert result.take_ports == (30053,) and result.requested_ports == {30053}


def test_a_local_load_balancer_gets_a_health_check_node_port() -> None:
    result = plan(service({**WEB, "type": "LoadBalancer", "externalTrafficPolicy": "Local"}))
    spec = result.manifest["spec"]
    assert spec["healthCheckNodePort"] in result.take_ports
    assert spec["ports"][0]["nodePort"] in result.take_ports and len(result.take_ports) == 2
    no_ports = plan(
        service({**WEB, "type": "LoadBalancer", "allocateLoadBalancerNodePorts": False})
    )
    assert no_ports.take_ports == () and "nodePort" not in no_ports.manifest["spec"]["ports"][0]


def test_applying_the_same_manifest_again_keeps_what_the_service_holds() -> None:
    stored = plan(node_port_service({"name": "http", "port": 80})).manifest
    again = plan(node_port_service({"name": "http", "port": 80}), stored)
    assert again.manifest["spec"] == stored["spec"]
    assert (again.take_ips, again.release_ips, again.take_ports, again.release_ports) == (
        (),
        (),
        (),
        (),
    )


def test_an_allocated_address_may_not_change() -> None:
    stored = plan(service({**WEB, "clusterIP": "100.64.0.20"})).manifest
    with pytest.raises(InvalidTransition) as caught:
        plan(service({**WEB, "clusterIP": "100.64.0.21"}), stored)
    assert caught.value.field == "spec.clusterIPs[0]"
    assert "may not change once set" in caught.value.message
    headless = plan(service({**WEB, "clusterIP": "None"})).manifest
    with pytest.raises(InvalidTransition, match="may not change once set"):
        plan(service({**WEB, "clusterIP": "100.64.0.21"}), headless)


def test_type_changes_take_and_give_back_as_kubernetes_does() -> None:
    node_port = plan(node_port_service({"name": "http", "port": 80})).manifest
    address = node_port["spec"]["clusterIP"]
    port = node_port["spec"]["ports"][0]["nodePort"]
    to_cluster_ip = plan(service(WEB), node_port)
    assert to_cluster_ip.release_ports == (port,) and to_cluster_ip.release_ips == ()
    assert to_cluster_ip.manifest["spec"]["clusterIP"] == address
    to_external = plan(service({"type": "ExternalName", "externalName": "x.example"}), node_port)
    assert to_external.release_ips == (address,) and to_external.release_ports == (port,)
    back = plan(service(WEB), to_external.manifest)
    assert len(back.take_ips) == 1 and back.release_ips == ()


def test_a_deletion_gives_back_every_address_and_port() -> None:
    stored = plan(
        service({**WEB, "type": "LoadBalancer", "externalTrafficPolicy": "Local"})
    ).manifest
    released = plan_deletion(stored)
    spec = stored["spec"]
    assert released.release_ips == (spec["clusterIP"],)
    assert set(released.release_ports) == {
        spec["ports"][0]["nodePort"],
        spec["healthCheckNodePort"],
    }


# -- deciding -------------------------------------------------------------------------------------


def record_of(ip: str, holder: str) -> Resource:
    return IPAddress.create(
        None,
        agg_id=address_id(ip),
        manifest=address_manifest(ip, namespace="default", name=holder),
        uid=f"u-{ip}",
        at=AT,
    )


def write(result: ServicePlan, **records: Any) -> Service:
    written = write_service(
        None,
        agg_id="Service/default/web",
        plan=result,
        uid="svc-uid",
        replace=False,
        addresses=records.get("addresses", {}),
        node_ports=records.get("node_ports", {}),
        at=AT,
    )
    return written.service


def test_writing_a_service_creates_the_records_of_what_it_takes() -> None:
    result = plan(node_port_service({"name": "http", "port": 80}))
    ip, port = result.take_ips[0], result.take_ports[0]
    written = write_service(
        None,
        agg_id="Service/default/web",
        plan=result,
        uid="svc-uid",
        replace=False,
        addresses={ip: None},
        node_ports={port: None},
        at=AT,
    )
    assert written.service.manifest["status"] == {"loadBalancer": {}}
    assert written.service.manifest["spec"]["clusterIP"] == ip
    address = written.records[address_id(ip)]
    assert isinstance(address, IPAddress) and address.manifest == address_manifest(
        ip, namespace="default", name="web"
    )
    assert address.manifest["metadata"]["labels"] == {
        "ipaddress.kubernetes.io/ip-family": "IPv4",
        "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
    }
    assert isinstance(written.records[node_port_id(port)], NodePortAllocation)


def test_records_are_created_on_the_aggregates_given() -> None:
    result = plan(service(WEB))
    ip = result.take_ips[0]
    deleted = record_of(ip, "old")
    deleted.delete(reason="released", at=AT)
    deleted.collect_events()
    write(result, addresses={ip: deleted})
    assert deleted.exists and deleted.parent == {
        "group": "",
        "resource": "services",
        "namespace": "default",
        "name": "web",
    }
    assert [type(e).__name__ for e in deleted.collect_events()] == ["Recreated"]


def test_a_requested_address_another_service_holds_is_refused() -> None:
    result = plan(service({**WEB, "clusterIP": "100.64.0.20"}))
    with pytest.raises(ValidationFailed) as caught:
        write(result, addresses={"100.64.0.20": record_of("100.64.0.20", "other")})
    assert caught.value.message == (
        'Invalid value: ["100.64.0.20"]: failed to allocate IP 100.64.0.20: provided IP is '
        "already allocated"
    )


def test_a_picked_address_found_taken_asks_for_another_pick() -> None:
    result = plan(service(WEB))
    ip = result.take_ips[0]
    with pytest.raises(PickedValueTaken) as caught:
        write(result, addresses={ip: record_of(ip, "other")})
    assert caught.value.ip == ip


def test_a_requested_node_port_another_service_holds_is_refused() -> None:
    result = plan(node_port_service({"name": "http", "port": 80, "nodePort": 30080}))
    held = NodePortAllocation.create(
        None,
        agg_id=node_port_id(30080),
        manifest={"spec": {"parentRef": {"namespace": "default", "name": "other"}}},
        uid="u",
        at=AT,
    )
    with pytest.raises(ValidationFailed) as caught:
        write(result, addresses={result.take_ips[0]: None}, node_ports={30080: held})
    assert caught.value.field == "spec.ports[0].nodePort"
    assert caught.value.message == "Invalid value: 30080: provided port is already allocated"


def test_deleting_a_service_deletes_only_the_records_it_holds() -> None:
    result = plan(node_port_service({"name": "http", "port": 80}))
    ip, port = result.take_ips[0], result.take_ports[0]
    created = write(result, addresses={ip: None}, node_ports={port: None})
    mine = record_of(ip, "web")
    theirs = NodePortAllocation.create(
        None,
        agg_id=node_port_id(port),
        manifest={"spec": {"parentRef": {"namespace": "default", "name": "other"}}},
        uid="u",
        at=AT,
    )
    released = delete_service(
        created,
        plan=plan_deletion(created.manifest),
        addresses={ip: mine},
        node_ports={port: theirs},
        reason="bye",
        propagation_policy="Background",
        at=AT,
    )
    assert not created.exists and not mine.exists and theirs.exists
    assert released == {address_id(ip): mine}


def test_seeds_follow_the_service_uid() -> None:
    assert seed_of("a") == seed_of("a") != seed_of("b")

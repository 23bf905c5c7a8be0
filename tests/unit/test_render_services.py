"""Services and endpoints as kubectl prints them (``ops.render``, ``core.services.slices``):
EXTERNAL-IP per type, PORT(S), the three-then-more lists of endpoint slices, the legacy
Endpoints view computed from slices."""

from __future__ import annotations

from typing import Any

from core.services.slices import endpoints_text, legacy_endpoints
from ops import render


def item(kind: str, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": kind,
        "namespace": "default",
        "name": name,
        "uid": "u",
        "manifest": manifest,
        "version": 1,
        "last_seq": 1,
        "created_ns": 0,
    }


def test_the_external_ip_column_follows_the_service_type() -> None:
    def shown(
        spec: dict[str, Any], status: dict[str, Any] | None = None, wide: bool = False
    ) -> str:
        return render.service_external_ip(spec, status or {}, wide=wide)

    assert shown({"type": "ClusterIP"}) == "<none>"
    assert shown({"type": "NodePort", "externalIPs": ["192.0.2.1"]}) == "192.0.2.1"
    assert shown({"type": "ExternalName", "externalName": "db.example.com"}) == "db.example.com"
    assert shown({"type": "LoadBalancer"}) == "<pending>"
    ingress = {
        "loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"hostname": "lb.example.com"}]}
    }
    assert shown({"type": "LoadBalancer"}, ingress, wide=True) == "203.0.113.10,lb.example.com"
    assert shown({"type": "LoadBalancer"}, ingress) == "203.0.113.10,..."


def test_a_service_row_has_kubectls_columns() -> None:
    service = item(
        "Service",
        "web",
        {
            "spec": {
                "type": "NodePort",
                "clusterIP": "100.64.3.4",
                "clusterIPs": ["100.64.3.4"],
                "selector": {"tier": "front", "app": "web"},
                "ports": [
                    {"port": 80, "protocol": "TCP", "nodePort": 30080},
                    {"port": 53, "protocol": "UDP"},
                ],
            }
        },
    )
    table = render.object_table(
        "Service", [service], now_ns=5 * 10**9, wide=True, show_namespace=False
    ).splitlines()
    assert table[0].split() == [
        "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR", "ENDPOINTS",
        "DNS", "NATS",
    ]  # fmt: skip
    assert table[1].split() == [
        "web", "NodePort", "100.64.3.4", "<none>", "80:30080/TCP,53/UDP", "5s",
        "app=web,tier=front", "<none>", "web.default.svc.cluster.local",
        "fleet.qry.endpoints.default.web",
    ]  # fmt: skip
    headless = item("Service", "db", {"spec": {"clusterIP": "None", "clusterIPs": ["None"]}})
    row = render.object_table("Service", [headless], now_ns=0, wide=False, show_namespace=False)
    assert row.splitlines()[1].split()[:5] == ["db", "ClusterIP", "None", "<none>", "<none>"]


def endpoint(ip: str, *, ready: bool = True, pod: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": ready}}
    if pod:
        out["targetRef"] = {"kind": "Pod", "namespace": "default", "name": pod}
    return out


def test_endpoint_slice_rows_show_three_then_how_many_more() -> None:
    found = item(
        "EndpointSlice",
        "web-abcde",
        {
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "all"}],
            "endpoints": [endpoint(f"100.96.0.{i}") for i in range(1, 6)],
        },
    )
    row = render.object_table("EndpointSlice", [found], now_ns=0, wide=False, show_namespace=False)
    assert row.splitlines()[1].split() == [
        "web-abcde", "IPv4", "8080,all", "100.96.0.1,100.96.0.2,100.96.0.3", "+", "2", "more...",
        "0s",
    ]  # fmt: skip
    empty = item("EndpointSlice", "web-empty", {"addressType": "IPv4", "endpoints": []})
    row = render.object_table("EndpointSlice", [empty], now_ns=0, wide=False, show_namespace=False)
    assert row.splitlines()[1].split()[1:4] == ["IPv4", "<unset>", "<unset>"]


def test_the_legacy_endpoints_group_ready_and_not_ready_addresses_by_ports() -> None:
    slices = [
        {
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [endpoint("100.96.0.2", pod="b"), endpoint("100.96.0.1", ready=False)],
        },
        {
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [endpoint("100.96.0.3")],
        },
        {"endpoints": [endpoint("100.96.0.9")]},
    ]
    endpoints = legacy_endpoints("default", "web", slices)
    assert endpoints["subsets"] == [
        {
            "addresses": [
                {
                    "ip": "100.96.0.2",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "b"},
                },
                {"ip": "100.96.0.3"},
            ],
            "notReadyAddresses": [{"ip": "100.96.0.1"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        },
        {"addresses": [{"ip": "100.96.0.9"}]},
    ]
    assert endpoints_text(endpoints) == "100.96.0.2:8080,100.96.0.3:8080,100.96.0.9"
    # As kubectl's formatEndpoints: a subset without ports is shown whatever the port asked.
    assert endpoints_text(endpoints, port_names={"metrics"}) == "100.96.0.9"
    assert endpoints_text(legacy_endpoints("default", "web", [])) == "<none>"
    many = legacy_endpoints(
        "default", "web", [{"endpoints": [endpoint(f"100.96.1.{i}") for i in range(1, 8)]}]
    )
    assert endpoints_text(many) == "100.96.1.1,100.96.1.2,100.96.1.3 + 4 more..."


def test_get_endpoints_lists_one_view_per_service_with_slices() -> None:
    def sliced(name: str, service: str, *ips: str) -> dict[str, Any]:
        labels = {"kubernetes.io/service-name": service}
        found = item(
            "EndpointSlice",
            name,
            {"metadata": {"labels": labels}, "endpoints": [endpoint(ip) for ip in ips]},
        )
        found["created_ns"] = len(ips)
        return found

    views = render.endpoints_items(
        [sliced("web-a", "web", "100.96.0.1"), sliced("web-b", "web", "100.96.0.2", "100.96.0.3"),
         sliced("db-a", "db")]
    )  # fmt: skip
    assert [(v["name"], v["created_ns"]) for v in views] == [("db", 0), ("web", 1)]
    table = render.object_table("Endpoints", views, now_ns=10**9, wide=False, show_namespace=False)
    assert [line.split() for line in table.splitlines()] == [
        ["NAME", "ENDPOINTS", "AGE"],
        ["db", "<none>", "1s"],
        ["web", "100.96.0.1,100.96.0.2,100.96.0.3", "0s"],
    ]


def test_describe_service_names_both_ways_of_discovery() -> None:
    manifest = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "100.64.3.4", "ports": [{"name": "http", "port": 80}]},
    }
    lines = render.service_lines(manifest, [])
    assert lines[-2:] == [
        "DNS:          web.shop.svc.cluster.local",
        "NATS:         fleet.qry.endpoints.shop.web (query), fleet.watch.endpoints.shop.web "
        "(watch)",
    ]

"""On-demand virtual hosts (``core.mesh.vhds``) and what the builder gives an on-demand sidecar:
which hosts answer Envoy's ``<route configuration>/<host>`` requests, so that a proxy holding
only the hosts it asked for routes every request as the whole route configuration would."""

from __future__ import annotations

from typing import Any

from core.mesh.envoy.build import MeshBuild, build_snapshot
from core.mesh.envoy.model import MeshState, Proxy
from core.mesh.envoy.names import PASSTHROUGH_CLUSTER, ROUTE_TYPE
from core.mesh.vhds import (
    ON_DEMAND_FILTER,
    VIRTUAL_HOST_TYPE,
    host_index,
    index_replaced,
    passthrough_host,
    request_host,
    resolve,
    virtual_host_resource,
)
from tests.mesh_scenario import NS, dest, istio, service

ON_DEMAND = Proxy(namespace=NS, bind_address="127.0.0.2", on_demand=True)
WHOLE = Proxy(namespace=NS, bind_address="127.0.0.2")


def _entry(name: str, host: str) -> Any:
    return istio("ServiceEntry", name, {
        "hosts": [host], "location": "MESH_EXTERNAL", "resolution": "NONE",
        "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
    })  # fmt: skip


def _state(*, timeout: str = "5s") -> MeshState:
    http = [{"name": "http", "port": 8080}]
    web = {"hosts": ["web"], "http": [{"route": [dest("web")], "timeout": timeout}]}
    return MeshState(
        services=[service("web", "10.96.0.10", http), service("api", "10.96.0.11", http)],
        virtual_services=[istio("VirtualService", "web", web)],
        service_entries=[
            _entry("wild", "*.example.com"),
            _entry("exact", "a.b.example.com"),
            _entry("deeper", "*.b.example.com"),
        ],
    )


def _by_domain(resources: list[dict[str, Any]], domain: str) -> str:
    return next(r["name"] for r in resources if domain in r["domains"])


def test_a_request_names_its_route_configuration_and_host_without_port() -> None:
    assert request_host("8080/Web.Shop:8080") == ("8080", "web.shop")
    assert request_host("8080/web") == ("8080", "web")
    assert request_host("8080/10.96.0.10:80") == ("8080", "10.96.0.10")
    assert request_host("8080/[::1]:8080") == ("8080", "[::1]")
    assert request_host("8080/[::1]") == ("8080", "[::1]")


def test_an_on_demand_sidecar_gets_no_host_in_its_route_configuration_and_asks_for_them() -> None:
    snapshot = build_snapshot(_state(), ON_DEMAND)
    (config,) = snapshot.routes
    assert config["virtual_hosts"] == []
    assert config["vhds"] == {"config_source": {"ads": {}, "resource_api_version": "V3"}}
    assert config["ignore_port_in_host_matching"] is True
    listener = next(x for x in snapshot.listeners if x["name"] == "127.0.0.2_8080")
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["http_filters"][0]["name"] == ON_DEMAND_FILTER
    # The hosts it may ask for are exactly the whole configuration's, named by it.
    (whole,) = build_snapshot(_state(), WHOLE).routes
    assert [r["@type"] for r in snapshot.virtual_hosts] == [VIRTUAL_HOST_TYPE] * len(
        whole["virtual_hosts"]
    )
    assert snapshot.virtual_hosts == [
        virtual_host_resource("8080", host) for host in whole["virtual_hosts"]
    ]
    assert snapshot.virtual_hosts[0]["name"] == "8080/" + whole["virtual_hosts"][0]["name"]


def test_other_proxies_keep_the_whole_route_configuration() -> None:
    snapshot = build_snapshot(_state(), WHOLE)
    assert snapshot.virtual_hosts == []
    assert "vhds" not in snapshot.routes[0] and snapshot.routes[0]["virtual_hosts"]
    listener = next(x for x in snapshot.listeners if x["name"] == "127.0.0.2_8080")
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert ON_DEMAND_FILTER not in [f["name"] for f in manager["http_filters"]]
    gateway = Proxy(kind="gateway", labels={"istio": "ingressgateway"}, on_demand=True)
    assert build_snapshot(_state(), gateway).virtual_hosts == []


def test_a_request_is_answered_by_the_exact_host_else_the_longest_wildcard_with_those_under_it(
) -> None:  # fmt: skip
    resources = build_snapshot(_state(), ON_DEMAND).virtual_hosts
    index = host_index(resources)
    web = _by_domain(resources, "web.shop.svc.cluster.local")
    for name in ("web", "web.shop", "WEB:8080", "10.96.0.10", "web.shop.svc.cluster.local"):
        assert resolve(index, f"8080/{name}") == (web,)
    wild = _by_domain(resources, "*.example.com")
    deeper = _by_domain(resources, "*.b.example.com")
    exact = _by_domain(resources, "a.b.example.com")
    # a.b.example.com has its own host; x.b.example.com takes the longer wildcard, and with it
    # the exact host under it (Envoy would match it without asking once the wildcard is held).
    assert resolve(index, "8080/a.b.example.com") == (exact,)
    assert resolve(index, "8080/x.b.example.com") == (deeper, exact)
    assert resolve(index, "8080/c.example.com:8080") == (wild, *sorted((deeper, exact)))
    assert resolve(index, "8080/example.com") is None  # the wildcard needs a label before it
    assert resolve(index, "8080/nowhere") is None
    assert resolve(index, "9090/web") is None  # another route configuration


def test_an_index_is_not_replaced_in_place_when_a_wildcard_is_involved() -> None:
    resources = build_snapshot(_state(), ON_DEMAND).virtual_hosts
    index = host_index(resources)
    wild = next(r for r in resources if "*.example.com" in r["domains"])
    under = next(r for r in resources if "a.b.example.com" in r["domains"])
    assert index_replaced(index, gone=[wild], added=[wild]) is None
    assert index_replaced(index, gone=[under], added=[under]) is None
    web = next(r for r in resources if "web" in r["domains"])
    moved = {**web, "domains": ["web2"]}
    replaced = index_replaced(index, gone=[web], added=[moved])
    assert replaced is not None
    assert resolve(replaced, "8080/web") is None and resolve(replaced, "8080/web2") == (
        web["name"],
    )


def test_a_captured_sidecar_answers_an_unknown_host_as_the_catch_all_would() -> None:
    host = passthrough_host("8080/Example.ORG:8080", cluster=PASSTHROUGH_CLUSTER)
    assert host == passthrough_host("8080/example.org", cluster=PASSTHROUGH_CLUSTER)
    assert host["domains"] == ["example.org"] and host["name"] == "8080/allow_any:example.org"
    assert host["routes"][0]["route"]["cluster"] == PASSTHROUGH_CLUSTER
    captured = build_snapshot(_state(), Proxy(namespace=NS, captured=True, on_demand=True))
    # No "*" host in the configuration: it would match every request and never ask.
    assert captured.routes[0]["virtual_hosts"] == []
    assert all("*" not in r["domains"] for r in captured.virtual_hosts)
    assert captured.routes[0]["@type"] == ROUTE_TYPE


def test_a_virtual_service_change_makes_only_its_hosts_resource_again() -> None:
    first = MeshBuild(_state())
    before = first.virtual_hosts(ON_DEMAND)
    assert first.host_index == host_index(before)
    between = MeshBuild(_state(), previous=first, kinds={"EndpointSlice"}, slices_of=())
    second = MeshBuild(_state(timeout="6s"), previous=between, kinds={"VirtualService"})
    after = second.virtual_hosts(ON_DEMAND)
    assert after == build_snapshot(_state(timeout="6s"), ON_DEMAND).virtual_hosts
    # The index is the first one's with web's host replaced, as a whole one would be.
    assert second.host_index == host_index(after)
    web_domains = {("8080", d) for d in ("web", "web.shop", "10.96.0.10")}
    assert {k: v for k, v in second.host_index.exact.items() if k in web_domains} == {
        k: v for k, v in first.host_index.exact.items() if k in web_domains
    }
    web = _by_domain(after, "web.shop.svc.cluster.local")
    for old, new in zip(before, after, strict=True):
        if new["name"] == web:
            assert new != old
        else:
            assert new is old  # the very resource: its JSON is not made again

"""The pure Envoy builder, resource by resource: cluster names and policies as Istio writes
them, endpoints per subset, listeners per port, and each VirtualService feature as its route."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from core.mesh.envoy.bootstrap import static_bootstrap
from core.mesh.envoy.build import MeshBuild, build_snapshot, part_key
from core.mesh.envoy.model import MeshState, Proxy, Snapshot, port_protocol
from core.mesh.envoy.names import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    duration,
    fqdn,
)
from core.mesh.envoy.secrets import mesh_secrets
from tests.mesh_scenario import NS, dest, endpoint_slice, istio, scenario, service

WEB = "web.shop.svc.cluster.local"


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    return build_snapshot(scenario(), Proxy())


def _cluster(snap: Snapshot, name: str) -> dict[str, Any]:
    return next(c for c in snap.clusters if c["name"] == name)


def _addresses(snap: Snapshot, name: str) -> list[tuple[str, int]]:
    assignment = next(a for a in snap.endpoints if a["cluster_name"] == name)
    return sorted(
        (e["endpoint"]["address"]["socket_address"]["address"],
         e["endpoint"]["address"]["socket_address"]["port_value"])
        for group in assignment["endpoints"] for e in group["lb_endpoints"]
    )  # fmt: skip


def _route(snap: Snapshot, port: str, name: str) -> dict[str, Any]:
    config = next(r for r in snap.routes if r["name"] == port)
    host = next(h for h in config["virtual_hosts"] if h["name"] == f"{WEB}:80")
    return next(r for r in host["routes"] if r["name"] == name)


# -- small conversions ----------------------------------------------------------------------


def test_durations_and_hosts() -> None:
    assert duration(2500) == "2.5s"
    assert duration(10_000) == "10s"
    assert duration(250) == "0.25s"
    assert fqdn("web", "shop") == WEB
    assert fqdn("web.shop", "other") == WEB
    assert fqdn("api.example.com", "shop") == "api.example.com"


@pytest.mark.parametrize(
    ("name", "app_protocol", "expected"),
    [("http", None, "http"), ("http-web", None, "http"), ("grpc-x", None, "http"),
     ("tcp-pg", None, "tcp"), ("mongo", None, "tcp"), ("", None, "auto"), ("web", None, "auto"),
     ("web", "tcp", "tcp"), ("db", "http2", "http")],
)  # fmt: skip
def test_port_protocol_is_istio_explicit_selection(
    name: str, app_protocol: str | None, expected: str
) -> None:
    assert port_protocol(name, app_protocol) == expected


# -- clusters -------------------------------------------------------------------------------


def test_clusters_per_service_port_and_subset_named_as_istio(snap: Snapshot) -> None:
    names = {c["name"] for c in snap.clusters}
    assert {f"outbound|80||{WEB}", f"outbound|80|v1|{WEB}", f"outbound|80|v2|{WEB}",
            "outbound|5432|primary|db.shop.svc.cluster.local",
            "outbound|9080||ratings.shop.svc.cluster.local"} <= names  # fmt: skip
    assert all(c["@type"] == CLUSTER_TYPE for c in snap.clusters)
    cluster = _cluster(snap, f"outbound|80||{WEB}")
    assert cluster["type"] == "EDS"
    assert cluster["eds_cluster_config"]["service_name"] == cluster["name"]
    assert cluster["ignore_health_on_host_removal"] is True


def test_load_balancer_policies(snap: Snapshot) -> None:
    assert _cluster(snap, f"outbound|80||{WEB}")["lb_policy"] == "ROUND_ROBIN"
    # the subset's own policy wins over the rule's
    assert _cluster(snap, f"outbound|80|v2|{WEB}")["lb_policy"] == "LEAST_REQUEST"
    assert _cluster(snap, "outbound|5432||db.shop.svc.cluster.local")["lb_policy"] == "RANDOM"
    ring = _cluster(snap, "outbound|9080||ratings.shop.svc.cluster.local")
    assert ring["lb_policy"] == "RING_HASH"
    assert ring["ring_hash_lb_config"] == {"minimum_ring_size": 1024}
    passthrough = _cluster(snap, "outbound|6379||cache.shop.svc.cluster.local")
    assert passthrough["type"] == "ORIGINAL_DST"
    assert passthrough["lb_policy"] == "CLUSTER_PROVIDED"
    assert "eds_cluster_config" not in passthrough


def test_istio_default_policy_is_least_request() -> None:
    state = MeshState(services=[service("plain", "10.96.1.1", [{"name": "http", "port": 80}])])
    [cluster] = build_snapshot(state, Proxy()).clusters
    assert cluster["lb_policy"] == "LEAST_REQUEST"
    assert cluster["connect_timeout"] == "10s"


def test_connection_pool_outlier_detection_and_tls_mode(snap: Snapshot) -> None:
    cluster = _cluster(snap, f"outbound|80|v1|{WEB}")
    assert cluster["connect_timeout"] == "3s"
    assert cluster["circuit_breakers"] == {
        "thresholds": [{"max_connections": 100, "max_pending_requests": 10, "max_retries": 4}]
    }
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["common_http_protocol_options"] == {
        "max_requests_per_connection": 5,
        "idle_timeout": "30s",
    }
    assert cluster["outlier_detection"] == {
        "consecutive_5xx": 5,
        "enforcing_consecutive_5xx": 100,
        "interval": "10s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
    }
    assert cluster["metadata"]["filter_metadata"]["istio"]["tls_mode"] == "ISTIO_MUTUAL"


def test_service_entry_clusters(snap: Snapshot) -> None:
    dns = _cluster(snap, "outbound|443||payments.example.com")
    assert dns["type"] == "STRICT_DNS"
    assert dns["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "payments.example.com", "port_value": 443}
    }
    static = _cluster(snap, "outbound|8000||legacy.internal")
    assert static["type"] == "EDS"
    assert _addresses(snap, "outbound|8000||legacy.internal") == [("10.50.0.7", 8001)]


# -- endpoints ------------------------------------------------------------------------------


def test_ready_endpoints_on_the_slice_port_per_subset(snap: Snapshot) -> None:
    assert all(a["@type"] == ENDPOINT_TYPE for a in snap.endpoints)
    assert _addresses(snap, f"outbound|80||{WEB}") == [("10.244.0.5", 8080), ("10.244.0.6", 8080)]
    assert _addresses(snap, f"outbound|80|v1|{WEB}") == [("10.244.0.5", 8080)]
    # web-3 (v2) is not ready: only web-2 serves v2
    assert _addresses(snap, f"outbound|80|v2|{WEB}") == [("10.244.0.6", 8080)]
    assert not any(a["cluster_name"].startswith("outbound|6379") for a in snap.endpoints)


def test_terminating_endpoints_serve_only_when_none_is_ready() -> None:
    slice_ = endpoint_slice("web", "http", 8080, [("web-1", "10.244.0.5", False)])
    slice_["endpoints"][0]["conditions"] = {"ready": False, "serving": True, "terminating": True}
    state = MeshState(services=[service("web", "10.96.0.10", [{"name": "http", "port": 80}])],
                      slices=[slice_])  # fmt: skip
    assert _addresses(build_snapshot(state, Proxy()), f"outbound|80||{WEB}") == [
        ("10.244.0.5", 8080)
    ]


# -- listeners ------------------------------------------------------------------------------


def test_one_virtual_listener_per_http_port_and_one_per_tcp_service(snap: Snapshot) -> None:
    names = [listener["name"] for listener in snap.listeners]
    assert names == ["0.0.0.0_80", "0.0.0.0_7000", "0.0.0.0_8000", "0.0.0.0_9080",
                     "10.96.0.13_6379", "10.96.0.12_5432"]  # fmt: skip
    http = snap.listeners[0]
    assert http["@type"] == LISTENER_TYPE
    manager = http["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["rds"]["route_config_name"] == "80"
    assert [f["name"] for f in manager["http_filters"]] == [
        "envoy.filters.http.cors",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]


def test_tcp_routes_become_weighted_tcp_proxy(snap: Snapshot) -> None:
    listener = next(x for x in snap.listeners if x["name"] == "10.96.0.12_5432")
    proxy = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert proxy["weighted_clusters"]["clusters"] == [
        {"name": "outbound|5432|primary|db.shop.svc.cluster.local", "weight": 9},
        {"name": "outbound|5432|replica|db.shop.svc.cluster.local", "weight": 1},
    ]


def test_listeners_bind_where_told() -> None:
    state = MeshState(services=[service("web", "10.96.0.10", [{"name": "http", "port": 80}])])
    [listener] = build_snapshot(state, Proxy(bind_address="127.0.0.1")).listeners
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 80}


def test_a_captured_sidecar_gets_the_outbound_listener_and_binds_no_other() -> None:
    state = MeshState(services=[
        service("web", "10.96.0.10", [{"name": "http", "port": 80}]),
        service("db", "10.96.0.12", [{"name": "tcp", "port": 5432}]),
    ])  # fmt: skip
    plain = build_snapshot(state, Proxy())
    assert all("bind_to_port" not in x and not x.get("use_original_dst") for x in plain.listeners)
    assert "PassthroughCluster" not in [c["name"] for c in plain.clusters]
    captured = build_snapshot(state, Proxy(captured=True))
    outbound, inbound, *virtual = captured.listeners
    assert outbound["name"] == "virtualOutbound" and outbound["use_original_dst"] is True
    assert outbound["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15001}

    def target(chain: dict[str, Any]) -> str:
        return str(chain["filters"][0]["typed_config"]["cluster"])

    # A connection no virtual listener takes goes on to where the application sent it; one
    # sent to the capture port itself would be passed back to it: it goes nowhere.
    assert target(outbound["default_filter_chain"]) == "PassthroughCluster"
    [loop] = outbound["filter_chains"]
    assert (loop["filter_chain_match"], target(loop)) == (
        {"destination_port": 15001}, "BlackHoleCluster",
    )  # fmt: skip
    # Inbound: the original destination restored, then passed on to the application (mesh
    # TLS or plain text: PERMISSIVE, the default; see the PeerAuthentication tests).
    assert inbound["name"] == "virtualInbound" and "use_original_dst" not in inbound
    assert inbound["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15006}
    assert [f["name"] for f in inbound["listener_filters"]] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
    ]
    loop, *passed = inbound["filter_chains"]
    assert (loop["filter_chain_match"], target(loop)) == (
        {"destination_port": 15006}, "BlackHoleCluster",
    )  # fmt: skip
    assert [target(chain) for chain in passed] == ["InboundPassthroughCluster"] * 2
    added = {c["name"]: c for c in captured.clusters if c not in plain.clusters}
    assert {n: (c["type"], c.get("lb_policy")) for n, c in added.items()} == {
        "PassthroughCluster": ("ORIGINAL_DST", "CLUSTER_PROVIDED"),
        "InboundPassthroughCluster": ("ORIGINAL_DST", "CLUSTER_PROVIDED"),
        "BlackHoleCluster": ("STATIC", None),
    }
    assert "load_assignment" not in added["BlackHoleCluster"]
    assert [x["name"] for x in virtual] == ["0.0.0.0_80", "10.96.0.12_5432"]
    assert all(x["bind_to_port"] is False for x in virtual)
    assert captured.endpoints == plain.endpoints
    # A host no service has, on an HTTP port, goes on too (Istio's ALLOW_ANY), after the
    # services' own virtual hosts.
    [port_80] = captured.routes
    *services, allow_any = port_80["virtual_hosts"]
    assert services == plain.routes[0]["virtual_hosts"]
    assert allow_any["domains"] == ["*"]
    assert allow_any["routes"][0]["route"]["cluster"] == "PassthroughCluster"


# -- routes ---------------------------------------------------------------------------------


def test_virtual_host_domains(snap: Snapshot) -> None:
    config = next(r for r in snap.routes if r["name"] == "80")
    assert config["@type"] == ROUTE_TYPE
    host = next(h for h in config["virtual_hosts"] if h["name"] == f"{WEB}:80")
    # Each name once: a sidecar's route configuration ignores a Host header's port (its
    # listener serves the one port), so no ``:80`` twins (Envoy indexes half the domains).
    assert host["domains"] == [WEB, "web.shop.svc", "web.shop", "web", "10.96.0.10"]
    assert config["ignore_port_in_host_matching"] is True


def test_header_and_method_match(snap: Snapshot) -> None:
    route = _route(snap, "80", "canary-header")
    assert route["match"] == {
        "prefix": "/",
        "headers": [
            {"name": "x-canary", "string_match": {"exact": "yes"}},
            {"name": ":method", "string_match": {"exact": "GET"}},
        ],
    }
    assert route["route"]["cluster"] == f"outbound|80|v2|{WEB}"


def test_redirect(snap: Snapshot) -> None:
    route = _route(snap, "80", "old-api")
    assert route["match"] == {"path": "/old"}
    assert route["redirect"] == {"path_redirect": "/new", "response_code": "FOUND"}
    assert "route" not in route


def test_prefix_query_rewrite_timeout_retries(snap: Snapshot) -> None:
    route = _route(snap, "80", "api")
    assert route["match"]["prefix"] == "/api/"
    assert route["match"]["query_parameters"] == [{"name": "debug", "string_match": {"exact": "1"}}]
    action = route["route"]
    assert action["prefix_rewrite"] == "/"
    assert action["timeout"] == "2.5s"
    retry = action["retry_policy"]
    assert retry["retry_on"] == "5xx,retriable-status-codes"
    assert retry["retriable_status_codes"] == [503]
    assert retry["num_retries"] == 3
    assert retry["per_try_timeout"] == "0.5s"


def test_regex_match_without_headers_and_regex_rewrite(snap: Snapshot) -> None:
    route = _route(snap, "80", "regex")
    assert route["match"]["safe_regex"] == {"regex": "/items/[0-9]+"}
    assert route["match"]["headers"] == [
        {"name": "x-debug", "invert_match": True, "present_match": True}
    ]
    assert route["route"]["regex_rewrite"] == {
        "pattern": {"regex": "/items/([0-9]+)"},
        "substitution": "/item?id=\\1",
    }


def test_fault_injection_percentages_per_million(snap: Snapshot) -> None:
    fault = _route(snap, "80", "faulty")["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"] == {
        "fixed_delay": "1s",
        "percentage": {"numerator": 100_000, "denominator": "MILLION"},
    }
    assert fault["abort"] == {
        "http_status": 503,
        "percentage": {"numerator": 55_000, "denominator": "MILLION"},
    }


def test_weighted_split_mirror_and_headers(snap: Snapshot) -> None:
    route = _route(snap, "80", "split")
    assert route["route"]["weighted_clusters"] == {
        "clusters": [
            {"name": f"outbound|80|v1|{WEB}", "weight": 80},
            {"name": f"outbound|80|v2|{WEB}", "weight": 20},
        ]
    }
    assert route["route"]["request_mirror_policies"] == [
        {
            "cluster": "outbound|9080||ratings.shop.svc.cluster.local",
            "runtime_fraction": {"default_value": {"numerator": 250_000, "denominator": "MILLION"}},
        }
    ]
    assert route["request_headers_to_add"] == [
        {"header": {"key": "x-mesh", "value": "fleetlog"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    ]  # fmt: skip
    assert route["request_headers_to_remove"] == ["x-internal"]


def test_no_retries_set_means_istio_default_and_zero_attempts_none(snap: Snapshot) -> None:
    assert _route(snap, "80", "canary-header")["route"]["retry_policy"]["num_retries"] == 2
    state = MeshState(
        services=[service("web", "10.96.0.10", [{"name": "http", "port": 80}])],
        virtual_services=[
            istio("VirtualService", "web",
                  {"hosts": ["web"], "http": [{"route": [dest("web")], "retries": {"attempts": 0}}]})
        ],
    )  # fmt: skip
    [config] = build_snapshot(state, Proxy()).routes
    assert "retry_policy" not in config["virtual_hosts"][0]["routes"][0]["route"]


def test_direct_response_is_answered_by_envoy_with_its_body(snap: Snapshot) -> None:
    route = _route(snap, "80", "gone")
    assert route["direct_response"] == {"status": 410, "body": {"inline_string": "gone for good"}}
    assert "route" not in route
    config = next(r for r in snap.routes if r["name"] == "80")
    assert config["max_direct_response_body_size_bytes"] == 1024 * 1024
    state = MeshState(
        services=[service("web", "10.96.0.10", [{"name": "http", "port": 80}])],
        virtual_services=[istio("VirtualService", "web", {"hosts": ["web"], "http": [
            {"directResponse": {"status": 503, "body": {"bytes": "AAEC"}}}]})],
    )  # fmt: skip
    [config] = build_snapshot(state, Proxy()).routes
    [route] = config["virtual_hosts"][0]["routes"]
    assert route["direct_response"] == {"status": 503, "body": {"inline_bytes": "AAEC"}}


def test_cors_policy_is_the_cors_filters_per_route_policy(snap: Snapshot) -> None:
    policy = _route(snap, "80", "cors")["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert policy == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [
            {"exact": "https://a.example.com"},
            {"safe_regex": {"regex": "https://.*\\.b\\.com"}},
        ],
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "allow_methods": "GET,POST",
        "allow_headers": "x-token",
        "expose_headers": "x-trace",
        "max_age": "86400",
        "allow_credentials": True,
        "forward_not_matching_preflights": False,
    }
    gone = _route(snap, "80", "gone")["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert "forward_not_matching_preflights" not in gone and "max_age" not in gone


def test_a_delegate_s_routes_are_merged_under_the_root_s_match(snap: Snapshot) -> None:
    config = next(r for r in snap.routes if r["name"] == "80")
    host = next(h for h in config["virtual_hosts"] if h["name"] == f"{WEB}:80")
    prefixes = [
        (r["match"].get("prefix"), r.get("route", {}).get("cluster")) for r in host["routes"]
    ]
    # The root's "reviews" route became the delegate's two, in place and in order: its own
    # /reviews/v2 match (within the root's /reviews), then its catch-all under the root's.
    at = prefixes.index(("/reviews/v2", f"outbound|80|v2|{WEB}"))
    assert prefixes[at + 1] == ("/reviews", f"outbound|80|v1|{WEB}")
    assert not any(r["name"] == "reviews" for r in host["routes"])
    # The delegate serves no host of its own.
    assert all("web-reviews" not in h["name"] for r in snap.routes for h in r["virtual_hosts"])


def test_delegate_matches_that_contradict_the_root_are_dropped() -> None:
    state = MeshState(
        services=[service("web", "10.96.0.10", [{"name": "http", "port": 80}])],
        virtual_services=[
            istio("VirtualService", "root", {"hosts": ["web"], "http": [
                {"match": [{"uri": {"prefix": "/a"}, "headers": {"x": {"exact": "1"}}}],
                 "delegate": {"name": "leaf", "namespace": NS}, "timeout": "3s"},
                {"route": [dest("web")]}]}),
            istio("VirtualService", "leaf", {"http": [
                {"match": [{"uri": {"prefix": "/b"}}], "route": [dest("web")]},
                {"match": [{"uri": {"exact": "/a/x"}, "headers": {"x": {"exact": "2"}}}],
                 "route": [dest("web")]},
                {"match": [{"uri": {"exact": "/a/y"}, "method": {"exact": "GET"}}],
                 "route": [dest("web")], "timeout": "1s"},
                {"route": [dest("web")]}]}),
        ],
    )  # fmt: skip
    [config] = build_snapshot(state, Proxy()).routes
    routes = config["virtual_hosts"][0]["routes"]
    matches = [r["match"] for r in routes]
    header = {"name": "x", "string_match": {"exact": "1"}}
    assert matches == [
        {
            "path": "/a/y",
            "headers": [header, {"name": ":method", "string_match": {"exact": "GET"}}],
        },
        {"prefix": "/a", "headers": [header]},
        {"prefix": "/"},
    ]
    # A delegate's own timeout wins; the root's applies where the delegate sets none.
    assert [r["route"]["timeout"] for r in routes] == ["1s", "3s", "0s"]


def test_weights_are_relative_and_zero_weights_dropped() -> None:
    state = MeshState(
        services=[service("web", "10.96.0.10", [{"name": "http", "port": 80}])],
        virtual_services=[
            istio("VirtualService", "web", {"hosts": ["web"], "http": [{"route": [
                dest("web", "a", 3), dest("web", "b", 1), dest("web", "c", 0)]}]})
        ],
    )  # fmt: skip
    [config] = build_snapshot(state, Proxy()).routes
    weighted = config["virtual_hosts"][0]["routes"][0]["route"]["weighted_clusters"]
    assert weighted == {
        "clusters": [
            {"name": f"outbound|80|a|{WEB}", "weight": 3},
            {"name": f"outbound|80|b|{WEB}", "weight": 1},
        ]
    }


def test_consistent_hash_becomes_the_route_hash_policy() -> None:
    state = scenario()
    snap = build_snapshot(state, Proxy())
    config = next(r for r in snap.routes if r["name"] == "9080")
    [route] = config["virtual_hosts"][0]["routes"]
    assert route["name"] == "default"
    # ratings has no VirtualService: its default route still hashes on the rule's header
    assert route["route"]["cluster"] == "outbound|9080||ratings.shop.svc.cluster.local"
    assert route["route"]["hash_policy"] == [{"header": {"header_name": "x-user"}}]


@pytest.mark.parametrize(
    ("hash_key", "policy"),
    [
        ({"httpHeaderName": "x-user"}, {"header": {"header_name": "x-user"}}),
        ({"httpCookie": {"name": "u", "ttl": "10s"}}, {"cookie": {"name": "u", "ttl": "10s"}}),
        ({"useSourceIp": True}, {"connection_properties": {"source_ip": True}}),
        ({"httpQueryParameterName": "id"}, {"query_parameter": {"name": "id"}}),
    ],
)
def test_hash_keys(hash_key: dict[str, Any], policy: dict[str, Any]) -> None:
    state = MeshState(
        services=[service("web", "10.96.0.10", [{"name": "http", "port": 80}])],
        virtual_services=[
            istio("VirtualService", "web", {"hosts": ["web"], "http": [{"route": [dest("web")]}]})
        ],
        destination_rules=[
            istio("DestinationRule", "web",
                  {"host": "web", "trafficPolicy": {"loadBalancer": {"consistentHash": hash_key}}})
        ],
    )  # fmt: skip
    snap = build_snapshot(state, Proxy())
    assert snap.clusters[0]["lb_policy"] == "RING_HASH"
    [config] = snap.routes
    assert config["virtual_hosts"][0]["routes"][0]["route"]["hash_policy"] == [policy]


# -- gateway and bootstrap ------------------------------------------------------------------


def test_gateway_proxy_serves_the_virtual_services_bound_to_its_gateway() -> None:
    snap = build_snapshot(scenario(), Proxy(kind="gateway", labels={"istio": "ingressgateway"}))
    [listener] = snap.listeners
    assert listener["address"]["socket_address"]["port_value"] == 8088
    [config] = snap.routes
    [host] = config["virtual_hosts"]
    assert host["domains"] == ["shop.example.com", "shop.example.com:8088"]
    assert host["routes"][0]["route"]["cluster"] == f"outbound|80|v1|{WEB}"
    other = build_snapshot(scenario(), Proxy(kind="gateway", labels={"istio": "other"}))
    assert other.listeners == [] and other.routes == []


def test_mesh_virtual_services_do_not_reach_gateways_and_vice_versa(snap: Snapshot) -> None:
    config = next(r for r in snap.routes if r["name"] == "80")
    assert not any("shop.example.com" in h["domains"] for h in config["virtual_hosts"])


def test_static_bootstrap_inlines_routes_and_endpoints(snap: Snapshot) -> None:
    boot = static_bootstrap(snap, admin_port=0)
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    web = clusters[f"outbound|80|v1|{WEB}"]
    assert web["type"] == "STATIC" and "@type" not in web
    assert web["load_assignment"]["cluster_name"] == web["name"]
    manager = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    assert "rds" not in manager and manager["route_config"]["name"] == "80"
    # the snapshot itself is untouched
    assert "rds" in snap.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert _cluster(snap, f"outbound|80|v1|{WEB}")["type"] == "EDS"


def test_pod_labels_missing_means_no_subset_endpoint() -> None:
    state = MeshState(
        services=[service("web", "10.96.0.10", [{"name": "http", "port": 80}])],
        slices=[endpoint_slice("web", "http", 8080, [("web-9", "10.244.0.9", True)])],
        destination_rules=[
            istio("DestinationRule", "web", {"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]})
        ],
    )  # fmt: skip
    snap = build_snapshot(state, Proxy())
    assert _addresses(snap, f"outbound|80|v1|{WEB}") == []
    assert _addresses(snap, f"outbound|80||{WEB}") == [("10.244.0.9", 8080)]
    assert NS == "shop"


# -- mTLS: auto mTLS on clusters and endpoints, SDS references ------------------------------


def _mtls_state(**extra: Any) -> MeshState:
    return MeshState(
        services=[service("web", "10.96.0.10", [{"name": "http", "port": 80,
                                                 "targetPort": 8080}])],
        slices=[endpoint_slice("web", "http", 8080, [("web-1", "10.1.0.5", True),
                                                     ("web-2", "10.1.0.6", True)])],
        pod_labels={(NS, "web-1"): {"app": "web", "version": "v1"},
                    (NS, "web-2"): {"app": "web", "version": "v2"}},
        meshed_pods={(NS, "web-1"): "web-sa"},
        **extra,
    )  # fmt: skip


def _tls_endpoints(snap: Snapshot, name: str) -> dict[str, bool]:
    assignment = next(a for a in snap.endpoints if a["cluster_name"] == name)
    return {
        e["endpoint"]["address"]["socket_address"]["address"]: e.get("metadata", {})
        .get("filter_metadata", {}).get("envoy.transport_socket_match") == {"tlsMode": "istio"}
        for group in assignment["endpoints"] for e in group["lb_endpoints"]
    }  # fmt: skip


def test_auto_mtls_reaches_meshed_pods_over_tls_with_their_spiffe_id() -> None:
    snap = build_snapshot(_mtls_state(), Proxy())
    cluster = _cluster(snap, f"outbound|80||{WEB}")
    tls, plain = cluster["transport_socket_matches"]
    assert (tls["name"], tls["match"], plain["name"], plain["match"]) == (
        "tlsMode-istio", {"tlsMode": "istio"}, "tlsMode-disabled", {},
    )  # fmt: skip
    context = tls["transport_socket"]["typed_config"]
    assert context["@type"].endswith("UpstreamTlsContext")
    assert context["sni"] == f"outbound_.80_._.{WEB}"
    common = context["common_tls_context"]
    assert common["alpn_protocols"] == ["istio"]
    assert common["tls_certificate_sds_secret_configs"] == [
        {"name": "default", "sds_config": {"ads": {}, "resource_api_version": "V3"}}
    ]
    validation = common["combined_validation_context"]
    assert validation["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/shop/sa/web-sa"}}
    ]
    assert plain["transport_socket"]["name"] == "envoy.transport_sockets.raw_buffer"
    # Only the meshed pod's endpoint is labelled for TLS.
    assert _tls_endpoints(snap, f"outbound|80||{WEB}") == {"10.1.0.5": True, "10.1.0.6": False}


def test_no_meshed_pod_no_tls_and_a_disabled_port_is_plain_text() -> None:
    state = MeshState(services=_mtls_state().services, slices=_mtls_state().slices,
                      pod_labels=_mtls_state().pod_labels)  # fmt: skip
    snap = build_snapshot(state, Proxy())
    cluster = _cluster(snap, f"outbound|80||{WEB}")
    assert "transport_socket_matches" not in cluster and "transport_socket" not in cluster
    # The meshed pod's PeerAuthentication disables mTLS on its port: reached in plain text
    # (Istio's mTLS checker).
    disabled = istio("PeerAuthentication", "web", {
        "selector": {"matchLabels": {"version": "v1"}},
        "portLevelMtls": {"8080": {"mode": "DISABLE"}},
    }, group="security")  # fmt: skip
    snap = build_snapshot(_mtls_state(peer_authentications=[disabled]), Proxy())
    assert _tls_endpoints(snap, f"outbound|80||{WEB}") == {"10.1.0.5": False, "10.1.0.6": False}


def test_a_destination_rule_forces_or_forbids_mesh_tls() -> None:
    def with_mode(mode: str) -> dict[str, Any]:
        rule = istio(
            "DestinationRule", "web", {"host": "web", "trafficPolicy": {"tls": {"mode": mode}}}
        )
        return _cluster(build_snapshot(_mtls_state(destination_rules=[rule]), Proxy()),
                        f"outbound|80||{WEB}")  # fmt: skip

    forced = with_mode("ISTIO_MUTUAL")
    assert forced["transport_socket"]["typed_config"]["@type"].endswith("UpstreamTlsContext")
    assert "transport_socket_matches" not in forced
    disabled = with_mode("DISABLE")
    assert "transport_socket" not in disabled and "transport_socket_matches" not in disabled


def test_a_static_bootstrap_refers_to_its_own_secrets() -> None:
    snap = build_snapshot(_mtls_state(), Proxy(captured=True))
    snap = Snapshot(snap.clusters, snap.endpoints, snap.listeners, snap.routes,
                    mesh_secrets(cert_pem="C", key_pem="K", root_pem="R"))  # fmt: skip
    static = static_bootstrap(snap)["static_resources"]
    assert [s["name"] for s in static["secrets"]] == ["default", "ROOTCA"]
    assert static["secrets"][0]["tls_certificate"]["private_key"] == {"inline_string": "K"}
    assert "sds_config" not in str(static)


# -- warmup and locality --------------------------------------------------------------------


def _one_service(policy: dict[str, Any], *, slices: list[dict[str, Any]] | None = None,
                 localities: dict[str, str] | None = None) -> MeshState:  # fmt: skip
    return MeshState(
        services=[service("web", "10.96.0.10", [{"name": "http", "port": 80}])],
        slices=slices or [],
        destination_rules=[
            istio("DestinationRule", "web", {"host": "web", "trafficPolicy": policy})
        ],
        node_localities=localities or {},
    )


@pytest.mark.parametrize(
    ("simple", "key"),
    [("ROUND_ROBIN", "round_robin_lb_config"), ("LEAST_REQUEST", "least_request_lb_config"),
     (None, "least_request_lb_config")],
)  # fmt: skip
def test_warmup_is_envoy_slow_start(simple: str | None, key: str) -> None:
    lb: dict[str, Any] = {"warmup": {"duration": "45s", "aggression": 2, "minimumPercent": 5}}
    if simple:
        lb["simple"] = simple
    [cluster] = build_snapshot(_one_service({"loadBalancer": lb}), Proxy()).clusters
    assert cluster[key] == {
        "slow_start_config": {
            "slow_start_window": "45s",
            "aggression": {"default_value": 2.0, "runtime_key": "mesh.slow_start.aggression"},
            "min_weight_percent": {"value": 5.0},
        }
    }
    old = {"loadBalancer": {"simple": "ROUND_ROBIN", "warmupDurationSecs": "10s"}}
    [cluster] = build_snapshot(_one_service(old), Proxy()).clusters
    assert cluster["round_robin_lb_config"] == {"slow_start_config": {"slow_start_window": "10s"}}
    # Random balancing has no slow start (Istio sets it on round robin and least request only).
    random = {"loadBalancer": {"simple": "RANDOM", "warmup": {"duration": "45s"}}}
    [cluster] = build_snapshot(_one_service(random), Proxy()).clusters
    assert not any(k.endswith("_lb_config") for k in cluster)


def _pods_on_nodes() -> list[dict[str, Any]]:
    found = endpoint_slice("web", "http", 8080, [("web-1", "10.244.0.5", True),
                                                 ("web-2", "10.244.0.6", True),
                                                 ("web-3", "10.244.0.7", True)])  # fmt: skip
    for endpoint, node in zip(found["endpoints"], ("n1", "n2", "n3"), strict=True):
        endpoint["nodeName"] = node
    return [found]


LOCALITIES = {"n1": "us/us-a", "n2": "us/us-b", "n3": "eu/eu-a"}


def _groups(state: MeshState, proxy: Proxy) -> list[tuple[str, Any, list[str]]]:
    [assignment] = build_snapshot(state, proxy).endpoints
    return [
        ("/".join(g.get("locality", {}).values()), g.get("priority", g.get("load_balancing_weight")),
         [e["endpoint"]["address"]["socket_address"]["address"] for e in g["lb_endpoints"]])
        for g in assignment["endpoints"]
    ]  # fmt: skip


def test_endpoints_take_their_node_s_locality_and_failover_priorities_from_the_proxy_s() -> None:
    from core.mesh.envoy.endpoints import locality_of

    labels = {"topology.kubernetes.io/region": "us", "topology.kubernetes.io/zone": "us-a"}
    assert locality_of(labels) == "us/us-a"
    assert locality_of({}) == ""
    failover = {
        "loadBalancer": {"localityLbSetting": {"failover": [{"from": "us", "to": "eu"}]}},
        "outlierDetection": {"consecutive5xxErrors": 1},
    }
    state = _one_service(failover, slices=_pods_on_nodes(), localities=LOCALITIES)
    assert _groups(state, Proxy(locality="us/us-b")) == [
        ("us/us-b", 0, ["10.244.0.6"]),
        ("us/us-a", 1, ["10.244.0.5"]),
        ("eu/eu-a", 2, ["10.244.0.7"]),
    ]
    assert _groups(state, Proxy(locality="eu/eu-a")) == [
        ("eu/eu-a", 0, ["10.244.0.7"]),
        ("us/us-a", 1, ["10.244.0.5"]),
        ("us/us-b", 1, ["10.244.0.6"]),
    ]
    # No localityLbSetting (or enabled: false): one group, no priorities, as before.
    plain = _one_service({"outlierDetection": {"consecutive5xxErrors": 1}},
                         slices=_pods_on_nodes(), localities=LOCALITIES)  # fmt: skip
    [assignment] = build_snapshot(plain, Proxy(locality="us/us-b")).endpoints
    assert len(assignment["endpoints"]) == 1 and "priority" not in assignment["endpoints"][0]


def test_distribute_weights_the_localities_for_a_proxy_in_from() -> None:
    distribute = {"loadBalancer": {"localityLbSetting": {"distribute": [
        {"from": "us/us-a/*", "to": {"us/*": 80, "eu/*": 20}}]}}}  # fmt: skip
    state = _one_service(distribute, slices=_pods_on_nodes(), localities=LOCALITIES)
    [cluster] = build_snapshot(state, Proxy()).clusters
    assert cluster["common_lb_config"] == {"locality_weighted_lb_config": {}}
    assert _groups(state, Proxy(locality="us/us-a")) == [
        ("eu/eu-a", 200, ["10.244.0.7"]),
        ("us/us-a", 400, ["10.244.0.5"]),
        ("us/us-b", 400, ["10.244.0.6"]),
    ]
    # A proxy in no ``from``: each group weighs its share of the endpoints (with no weight,
    # Envoy's locality-weighted balancing would send it nothing).
    assert [g[1] for g in _groups(state, Proxy(locality="eu/eu-a"))] == [10, 10, 10]


# -- protocol sniffing ----------------------------------------------------------------------


def test_a_port_that_names_no_protocol_is_sniffed() -> None:
    state = MeshState(
        services=[
            service("legacy", "10.96.0.14", [{"port": 7000}]),
            service("api", "10.96.0.15", [{"name": "http", "port": 7000}]),
        ],
    )
    [listener] = build_snapshot(state, Proxy()).listeners
    assert listener["name"] == "0.0.0.0_7000"
    assert listener["listener_filters"] == [{
        "name": "envoy.filters.listener.http_inspector",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener."
                                  "http_inspector.v3.HttpInspector"},
    }]  # fmt: skip
    http, tcp, default = listener["filter_chains"]
    ranges = [{"address_prefix": "10.96.0.14", "prefix_len": 32}]
    assert http["filter_chain_match"] == {"prefix_ranges": ranges,
                                          "application_protocols": ["http/1.1", "h2c"]}  # fmt: skip
    assert http["filters"][0]["name"] == "envoy.filters.network.http_connection_manager"
    assert tcp["filter_chain_match"] == {"prefix_ranges": ranges}
    proxy = tcp["filters"][0]["typed_config"]
    assert proxy["cluster"] == "outbound|7000||legacy.shop.svc.cluster.local"
    # The explicit HTTP service (and anything else sent to the port) keeps the HTTP chain.
    assert "filter_chain_match" not in default
    # Both services' hosts are on the port's routes: HTTP to either is routed by Host.
    [config] = build_snapshot(state, Proxy()).routes
    assert [h["name"] for h in config["virtual_hosts"]] == [
        "api.shop.svc.cluster.local:7000", "legacy.shop.svc.cluster.local:7000"]  # fmt: skip
    # With an explicit protocol, no sniffing.
    named = MeshState(services=[service("legacy", "10.96.0.14", [{"name": "http", "port": 7000}])])
    [listener] = build_snapshot(named, Proxy()).listeners
    assert "listener_filters" not in listener and len(listener["filter_chains"]) == 1


# -- one build shared by every proxy (the handler's push) ----------------------------------

PROXIES = (
    Proxy(),
    Proxy(namespace=NS, labels={"app": "web", "version": "v1"}, bind_address="127.0.0.2"),
    Proxy(namespace=NS, labels={"app": "web", "version": "v2"}, bind_address="127.0.0.3"),
    Proxy(namespace=NS, labels={"app": "web"}, captured=True),
    Proxy(namespace="other", labels={"app": "db"}, captured=True, bind_address="127.0.0.4"),
    Proxy(kind="gateway", labels={"istio": "ingressgateway"}),
    Proxy(kind="gateway", namespace="istio-system", labels={"istio": "ingressgateway"},
          bind_address="127.0.0.5"),
    Proxy(kind="gateway", labels={"istio": "other"}),
    Proxy(namespace=NS, labels={"app": "web"}, bind_address="127.0.0.6", locality="r1/z1/"),
    Proxy(namespace=NS, labels={"app": "web"}, bind_address="127.0.0.7", on_demand=True),
    Proxy(namespace=NS, labels={"app": "web"}, captured=True, on_demand=True),
)  # fmt: skip
"""Sidecars and gateways differing by every input a proxy has: namespace, labels (subsets,
Gateways, PeerAuthentication selectors), bind address, capture."""


def rich_state() -> MeshState:
    """The scenario with meshed pods and a workload PeerAuthentication, so that every kind
    the builder reads changes something."""
    disabled = istio("PeerAuthentication", "web", {
        "selector": {"matchLabels": {"app": "web"}},
        "mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}},
    }, group="security")  # fmt: skip
    secure = istio("Gateway", "secure", {
        "selector": {"istio": "ingressgateway"},
        "servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                     "hosts": ["secure.example.com"],
                     "tls": {"mode": "SIMPLE", "credentialName": "secure-cert"}},
                    # The SNI-DNAT clusters: what makes a Gateway change a clusters change.
                    {"port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                     "hosts": ["*.local"], "tls": {"mode": "AUTO_PASSTHROUGH"}}],
    })  # fmt: skip
    origination = istio("DestinationRule", "payments", {
        "host": "payments.example.com", "workloadSelector": {"matchLabels": {"app": "web"}},
        "trafficPolicy": {"tls": {"mode": "SIMPLE", "credentialName": "payments-cred"}},
    })  # fmt: skip
    state = scenario()
    return dataclasses.replace(
        state,
        destination_rules=[*state.destination_rules, origination],
        meshed_pods={(NS, "web-1"): "web-sa", (NS, "db-1"): "db-sa"},
        peer_authentications=[disabled],
        gateways=[*state.gateways, secure],
        credentials={
            (NS, "secure-cert"): {"tls.crt": b"-----CERT-----", "tls.key": b"-KEY-"},
            (NS, "payments-cred"): {"tls.crt": b"-----CERT-----", "tls.key": b"-KEY-"},
        },
    )


def test_a_shared_build_gives_each_proxy_exactly_its_own_full_build() -> None:
    state = rich_state()
    for order in (PROXIES, tuple(reversed(PROXIES))):
        shared = MeshBuild(state)
        for proxy in order:
            assert shared.snapshot(proxy) == build_snapshot(rich_state(), proxy), proxy
        # And nothing a later proxy's build did changed what an earlier one was given.
        for proxy in order:
            assert shared.snapshot(proxy) == build_snapshot(rich_state(), proxy), proxy


def test_proxies_with_the_same_part_key_get_the_same_resources() -> None:
    """``part_key`` says what each type depends on: equal keys, equal resources (each proxy
    built on its own); and the keys do let sidecars share clusters, endpoints and routes."""
    types = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)
    own = [MeshBuild(rich_state()) for _ in PROXIES]
    shared = 0
    for type_url in types:
        for i, a in enumerate(PROXIES):
            for j, b in enumerate(PROXIES):
                if i != j and own[i].key(a, type_url) == own[j].key(b, type_url):
                    shared += 1
                    assert own[i].resources(a, type_url) == own[j].resources(b, type_url), (
                        type_url, a, b,
                    )  # fmt: skip
    assert {part_key(p, ENDPOINT_TYPE) for p in PROXIES} == {("",), ("r1/z1/",)}
    # Gateway or sidecar, captured or not, locality; the sidecar the rule's selector picks;
    # a gateway with an AUTO_PASSTHROUGH server or without.
    assert len({own[0].key(p, CLUSTER_TYPE) for p in PROXIES}) == 7
    assert part_key(PROXIES[1], ROUTE_TYPE) == part_key(PROXIES[2], ROUTE_TYPE)
    assert part_key(PROXIES[1], LISTENER_TYPE) != part_key(PROXIES[2], LISTENER_TYPE)
    assert shared > 0


def _built(state: MeshState, **previous: Any) -> MeshBuild:
    """A build of ``state`` with every proxy's every part made (what a push leaves behind)."""
    build = MeshBuild(state, **previous)
    for proxy in PROXIES:
        build.snapshot(proxy)
    return build


def _with_rule(state: MeshState, rule: Any) -> MeshState:
    kept = [r for r in state.destination_rules if r.metadata.name != rule.metadata.name]
    return dataclasses.replace(state, destination_rules=[*kept, rule])


def _with_route(state: MeshState, vs: Any) -> MeshState:
    kept = [v for v in state.virtual_services if v.metadata.name != vs.metadata.name]
    return dataclasses.replace(state, virtual_services=[*kept, vs])


RATINGS_RULE = istio("DestinationRule", "ratings", {
    "host": "ratings", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
    "subsets": [{"name": "a", "labels": {"app": "ratings"}}],
})  # fmt: skip
RATINGS_ROUTE = istio("VirtualService", "ratings", {
    "hosts": ["ratings"], "http": [{"route": [dest("ratings", "a")], "timeout": "3s"}],
})  # fmt: skip
SCOPED_CHANGES: list[tuple[str, Any, frozenset[str], Any]] = [
    ("a VirtualService for a host that had none", lambda s: _with_route(s, RATINGS_ROUTE),
     frozenset({"VirtualService"}), None),
    ("its timeout changed", lambda s: _with_route(s, istio("VirtualService", "ratings", {
        "hosts": ["ratings"], "http": [{"route": [dest("ratings", "a")], "timeout": "4s"}]})),
     frozenset({"VirtualService"}), None),
    ("a DestinationRule with a subset", lambda s: _with_rule(s, RATINGS_RULE),
     frozenset({"DestinationRule"}), None),
    ("web's rule changed (routes hash on it, subsets)", lambda s: _with_rule(s, istio(
        "DestinationRule", "web", {"host": "web", "trafficPolicy": {"loadBalancer": {
            "consistentHash": {"httpHeaderName": "x-user"}}},
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}]})),
     frozenset({"DestinationRule"}), None),
    ("the VirtualService moved to another host", lambda s: _with_route(s, istio(
        "VirtualService", "ratings", {"hosts": ["web"], "http": [
            {"route": [dest("ratings", "a")]}]})),
     frozenset({"VirtualService"}), None),
    ("web's slice lost an endpoint", lambda s: dataclasses.replace(s, slices=[
        {**s.slices[0], "endpoints": s.slices[0]["endpoints"][1:]}, *s.slices[1:]]),
     frozenset({"EndpointSlice"}), {(NS, "web")}),
    ("the rule went", lambda s: dataclasses.replace(s, destination_rules=[
        r for r in s.destination_rules if r.metadata.name != "ratings"]),
     frozenset({"DestinationRule"}), None),
    ("a pod's labels changed", lambda s: dataclasses.replace(s, pod_labels={
        **s.pod_labels, (NS, "web-2"): {"app": "web", "version": "v1"}}),
     frozenset({"Pod"}), None),
    ("a Service's port", lambda s: dataclasses.replace(s, services=[
        service("web", "10.96.0.10", [{"name": "http", "port": 81}]), *s.services[1:]]),
     frozenset({"Service"}), None),
]  # fmt: skip


def test_a_build_taking_over_the_last_gives_each_proxy_exactly_its_full_build() -> None:
    """A push after VirtualService / DestinationRule changes makes only the virtual hosts,
    clusters and endpoints they touch and takes the rest over from the last build: each proxy
    still gets exactly what a build of its own state gives (dict comparison), change after
    change, including after changes that take nothing or part over."""
    state = rich_state()
    build = _built(state)
    reused = {}
    for what, change, kinds, slices_of in SCOPED_CHANGES:
        state = change(state)
        build = _built(state, previous=build, kinds=kinds, slices_of=slices_of)
        for proxy in PROXIES:
            assert build.snapshot(proxy) == build_snapshot(state, proxy), (what, proxy)
        reused[what] = build.reused
    # Scoped indeed: VirtualService and DestinationRule changes took most over, a Service
    # change nothing.
    assert reused["its timeout changed"] > 0
    assert reused["web's rule changed (routes hash on it, subsets)"] > 0
    assert reused["web's slice lost an endpoint"] > 0
    assert reused["a Service's port"] == 0


def test_a_virtual_service_change_makes_only_its_hosts() -> None:
    """Only the changed VirtualService's host is made again: every other virtual host is the
    very dict of the last build (so the encoder does not convert it again)."""
    state = _with_route(rich_state(), RATINGS_ROUTE)
    sidecar = PROXIES[1]
    old = _built(state)
    after = _with_route(state, istio("VirtualService", "ratings", {
        "hosts": ["ratings"], "http": [{"route": [dest("ratings")], "timeout": "9s"}]}))  # fmt: skip
    new = MeshBuild(after, previous=old, kinds={"VirtualService"})
    before_hosts = {h["name"]: h for r in old.routes(sidecar) for h in r["virtual_hosts"]}
    after_hosts = {h["name"]: h for r in new.routes(sidecar) for h in r["virtual_hosts"]}
    made = {name for name, host in after_hosts.items() if host is not before_hosts.get(name)}
    assert made == {"ratings.shop.svc.cluster.local:9080"}
    assert new.routes(sidecar) == build_snapshot(after, sidecar).routes

"""Istio's kinds refuse what Istio's pkg/config/validation refuses, with the field's path and
Istio's reason; the expectations are written from Istio's validation code and its tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from core.api.catalog import KINDS
from core.api.kinds import NAMESPACED
from core.api.manifests import dump_manifest, parse_manifest
from core.errors import ValidationFailed
from core.kubeapi.resources import RESOURCES
from core.mesh import checks
from core.mesh.kinds.objects import DestinationRule, Gateway, VirtualService
from ops.cliargs import resolve_kind


def _vs(**spec: Any) -> dict[str, Any]:
    base = {"hosts": ["web.shop.svc.cluster.local"], "http": [{"route": [_dest()]}]}
    base.update(spec)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": base,
    }


def _dest(host: str = "web", subset: str | None = None, weight: int | None = None) -> dict:
    destination: dict[str, Any] = {"host": host}
    if subset is not None:
        destination["subset"] = subset
    route: dict[str, Any] = {"destination": destination}
    if weight is not None:
        route["weight"] = weight
    return route


def _dr(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"host": "web", **spec},
    }


def _gw(servers: list[dict]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "shop"},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers},
    }


def _se(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "ext", "namespace": "shop"},
        "spec": spec,
    }


def _refused(doc: dict[str, Any]) -> list[tuple[str | None, str]]:
    with pytest.raises(ValidationFailed) as info:
        parse_manifest(doc)
    err = info.value
    return [(e.field, e.message) for e in err.errors] or [(err.field, err.message)]


def _http(**route: Any) -> dict[str, Any]:
    return _vs(http=[{"route": [_dest()], **route}])


# -- registration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "group"),
    [
        ("VirtualService", "networking.istio.io/v1"),
        ("DestinationRule", "networking.istio.io/v1"),
        ("Gateway", "networking.istio.io/v1"),
        ("ServiceEntry", "networking.istio.io/v1"),
        ("PeerAuthentication", "security.istio.io/v1"),
    ],
)
def test_istio_kinds_are_stored_namespaced_kinds(kind: str, group: str) -> None:
    assert KINDS[kind].api_version == group
    assert KINDS[kind].namespaced and NAMESPACED[kind]
    assert any(r.kind == kind and r.group == group.split("/")[0] for r in RESOURCES)


def test_short_names_resolve_as_istioctl_and_kubectl_spell_them() -> None:
    assert resolve_kind("vs") == "VirtualService"
    assert resolve_kind("destinationrules.networking.istio.io") == "DestinationRule"
    assert resolve_kind("se") == "ServiceEntry"
    assert resolve_kind("pa") == "PeerAuthentication"


@pytest.mark.parametrize("version", ["v1beta1", "v1alpha3"])
def test_older_networking_versions_are_read_and_stored_as_v1(version: str) -> None:
    doc = _vs()
    doc["apiVersion"] = f"networking.istio.io/{version}"
    resource = parse_manifest(doc)
    assert resource.api_version == "networking.istio.io/v1"
    assert dump_manifest(resource)["apiVersion"] == "networking.istio.io/v1"


def test_an_unknown_version_is_still_refused() -> None:
    doc = _vs()
    doc["apiVersion"] = "networking.istio.io/v2"
    assert _refused(doc)[0][0] == "apiVersion"


def test_a_valid_virtual_service_round_trips_in_istio_spelling() -> None:
    doc = _vs(
        http=[
            {
                "match": [{"uri": {"prefix": "/api"}, "headers": {"x-user": {"exact": "a"}}}],
                "route": [_dest(subset="v1", weight=80), _dest(subset="v2", weight=20)],
                "timeout": "1.5s",
                "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx,503"},
                "fault": {"delay": {"fixedDelay": "2s", "percentage": {"value": 10}}},
                "mirror": {"host": "shadow"},
                "mirrorPercentage": {"value": 5.5},
            }
        ]
    )
    resource = parse_manifest(doc)
    assert isinstance(resource, VirtualService)
    dumped = dump_manifest(resource)
    assert dumped["spec"]["http"][0]["mirrorPercentage"] == {"value": 5.5}
    assert dumped["spec"]["http"][0]["retries"]["perTryTimeout"] == "500ms"
    assert parse_manifest(dumped) == resource


# -- VirtualService -------------------------------------------------------------------------


def test_negative_weight() -> None:
    doc = _vs(http=[{"route": [_dest(weight=-1), _dest(weight=101)]}])
    assert _refused(doc) == [("spec.http[0].route[0].weight", "weight -1 < 0")]


def test_weights_summing_to_zero() -> None:
    doc = _vs(http=[{"route": [_dest(weight=0), _dest(weight=0)]}])
    assert _refused(doc) == [("spec.http[0].route", "total destination weight = 0")]


def test_http_route_without_destination() -> None:
    assert _refused(_vs(http=[{"timeout": "1s"}])) == [
        ("spec.http[0].route", "HTTP route, redirect or direct_response is required")
    ]
    assert _refused(_vs(http=[{"route": [{"weight": 1}]}])) == [
        ("spec.http[0].route[0].destination", "destination is required")
    ]


def test_route_and_redirect_together() -> None:
    doc = _http(redirect={"uri": "/new"})
    assert _refused(doc) == [("spec.http[0]", "HTTP route cannot contain both route and redirect")]


def test_redirect_code_must_be_3xx() -> None:
    doc = _vs(http=[{"redirect": {"uri": "/x", "redirectCode": 200}}])
    assert _refused(doc) == [
        ("spec.http[0].redirect.redirectCode", "200 is not a valid redirect code, must be 3xx")
    ]


def test_bad_regex_is_judged_as_re2() -> None:
    doc = _http(match=[{"uri": {"regex": "(?=lookahead)"}}])
    [(field, message)] = _refused(doc)
    assert field == "spec.http[0].match[0].uri.regex"
    assert message.startswith('"uri": error parsing regexp: invalid perl operator')


def test_empty_matches() -> None:
    doc = _http(match=[{"uri": {"regex": ""}, "headers": {"x": {"prefix": ""}}}])
    assert _refused(doc) == [
        ("spec.http[0].match[0].uri.regex", '"uri": regex string match should not be empty'),
        (
            "spec.http[0].match[0].headers.x.prefix",
            '"headers": prefix string match should not be empty',
        ),
    ]


def test_an_empty_uri_prefix_matches_everything_as_in_istio() -> None:
    assert parse_manifest(_http(match=[{"uri": {"prefix": ""}}]))


def test_string_match_is_a_oneof() -> None:
    [(field, message)] = _refused(_http(match=[{"uri": {"exact": "/a", "prefix": "/b"}}]))
    assert field == "spec.http[0].match[0].uri"
    assert "oneof matchType" in message


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("1x", 'invalid duration "1x": use e.g. 100ms, 5s, 1m or 1h30m'),
        ("10", 'invalid duration "10": use e.g. 100ms, 5s, 1m or 1h30m'),
        ("500us", "duration must be greater than 1ms"),
        ("1500us", "only durations to ms precision are supported"),
    ],
)
def test_bad_durations(duration: str, message: str) -> None:
    assert _refused(_http(timeout=duration)) == [("spec.http[0].timeout", message)]


def test_go_durations_are_read_as_go_reads_them() -> None:
    assert checks.parse_go_duration("1h30m") == 5_400_000_000_000
    assert checks.parse_go_duration("1.5s") == 1_500_000_000
    assert checks.parse_go_duration("0") == 0
    assert checks.parse_go_duration("1d") is None
    assert checks.duration_ms("250ms") == 250


def test_retries() -> None:
    doc = _http(retries={"attempts": 2, "retryOn": "5xx,gateway-error,599,bogus", "backoff": "1x"})
    assert _refused(doc) == [
        ("spec.http[0].retries.retryOn", '"599" is not a valid retryOn policy'),
        ("spec.http[0].retries.retryOn", '"bogus" is not a valid retryOn policy'),
        ("spec.http[0].retries.backoff", 'invalid duration "1x": use e.g. 100ms, 5s, 1m or 1h30m'),
    ]
    assert _refused(_http(retries={"attempts": 0, "retryOn": "5xx"})) == [
        (
            "spec.http[0].retries",
            "http retry policy configured when attempts are set to 0 (disabled)",
        )
    ]
    assert _refused(_http(retries={"attempts": -1})) == [
        ("spec.http[0].retries.attempts", "attempts cannot be negative")
    ]


@pytest.mark.parametrize("value", [-1, 100.5, 0.00001])
def test_fault_percentages_outside_0_100(value: float) -> None:
    doc = _http(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": value}}})
    [(field, message)] = _refused(doc)
    assert field == "spec.http[0].fault.delay.percentage.value"
    assert message == f"percentage {value:g} is neither 0.0, nor in range [0.0001, 100.0]"


def test_fault_needs_abort_or_delay_and_a_known_status() -> None:
    assert _refused(_http(fault={})) == [
        ("spec.http[0].fault", "HTTP fault injection must have an abort and/or a delay")
    ]
    assert _refused(_http(fault={"abort": {"httpStatus": 700}})) == [
        ("spec.http[0].fault.abort.httpStatus", "HTTP status 700 is not in range 200-599")
    ]
    [(field, _)] = _refused(_http(fault={"abort": {"grpcStatus": "NOPE"}}))
    assert field == "spec.http[0].fault.abort.grpcStatus"


def test_mirror_percentage_bounds() -> None:
    assert _refused(_http(mirror={"host": "shadow"}, mirrorPercentage={"value": 101})) == [
        (
            "spec.http[0].mirrorPercentage.value",
            "mirror_percentage must have a max value of 100 (it has 101.000000)",
        )
    ]


def test_rewrite_needs_something_to_rewrite() -> None:
    [(field, message)] = _refused(_http(rewrite={}))
    assert field == "spec.http[0].rewrite"
    assert message.startswith("rewrite must specify at least one of URI")


def test_hosts() -> None:
    assert _refused(_vs(hosts=["*"])) == [
        (
            "spec.hosts[0]",
            "wildcard host * is not allowed for virtual services bound to the mesh gateway",
        )
    ]
    assert _refused(_vs(hosts=["a.com", "*.com"])) == [
        ("spec.hosts[1]", "duplicate hosts in virtual service: a.com & *.com")
    ]
    assert _refused(_vs(hosts=["bad_host"])) == [
        ("spec.hosts[0]", 'domain name "bad_host" invalid (label "bad_host" invalid)')
    ]


def test_no_routes_at_all() -> None:
    assert _refused(_vs(http=[])) == [
        ("spec", "http, tcp or tls must be provided in virtual service")
    ]


def test_tcp_route_needs_a_route() -> None:
    assert _refused(_vs(http=[], tcp=[{"match": [{"port": 70000}]}])) == [
        ("spec.tcp[0].match[0].port", "port number 70000 must be in the range 1..65535"),
        ("spec.tcp[0].route", "TCP route is required"),
    ]


def test_every_problem_is_reported_at_once() -> None:
    doc = _http(timeout="1x", retries={"attempts": -1})
    assert [f for f, _ in _refused(doc)] == [
        "spec.http[0].retries.attempts",
        "spec.http[0].timeout",
    ]


# -- DestinationRule ------------------------------------------------------------------------


def test_a_valid_destination_rule() -> None:
    doc = _dr(
        trafficPolicy={
            "loadBalancer": {"consistentHash": {"httpCookie": {"name": "u", "ttl": "10s"}}},
            "connectionPool": {"tcp": {"maxConnections": 10, "connectTimeout": "1s"}},
            "outlierDetection": {"consecutive5xxErrors": 3, "interval": "5s"},
            "portLevelSettings": [{"port": {"number": 80}, "loadBalancer": {"simple": "RANDOM"}}],
        },
        subsets=[{"name": "v1", "labels": {"version": "v1"}}],
    )
    resource = parse_manifest(doc)
    assert isinstance(resource, DestinationRule)
    policy = resource.spec.traffic_policy
    assert policy is not None
    assert policy.for_port(80).load_balancer.simple == "RANDOM"  # type: ignore[union-attr]
    assert policy.for_port(81).load_balancer.consistent_hash is not None  # type: ignore[union-attr]
    # Stored as written (Istio's CRDs keep what was sent; no zero defaults added).
    assert dump_manifest(resource)["spec"]["trafficPolicy"]["outlierDetection"] == {
        "consecutive5xxErrors": 3,
        "interval": "5s",
    }
    assert parse_manifest(dump_manifest(resource)) == resource


def test_subsets_need_unique_valid_names() -> None:
    doc = _dr(subsets=[{"name": "v1"}, {"name": "v1"}, {"labels": {"a": "b"}}])
    assert _refused(doc) == [
        ("spec.subsets[1].name", "duplicate subset names: v1"),
        ("spec.subsets[2].name", "subset name cannot be empty"),
    ]


def test_consistent_hash_with_two_keys() -> None:
    lb = {"consistentHash": {"httpHeaderName": "x-user", "useSourceIp": True}}
    [(field, message)] = _refused(_dr(trafficPolicy={"loadBalancer": lb}))
    assert field == "spec.trafficPolicy.loadBalancer.consistentHash"
    assert "oneof hashKey" in message and "httpHeaderName, useSourceIp" in message


def test_simple_and_consistent_hash_together() -> None:
    lb = {"simple": "RANDOM", "consistentHash": {"useSourceIp": True}}
    [(field, message)] = _refused(_dr(trafficPolicy={"loadBalancer": lb}))
    assert field == "spec.trafficPolicy.loadBalancer" and "oneof lbPolicy" in message


def test_unknown_simple_policy() -> None:
    [(field, message)] = _refused(_dr(trafficPolicy={"loadBalancer": {"simple": "FASTEST"}}))
    assert field == "spec.trafficPolicy.loadBalancer.simple"
    assert message.startswith('Unsupported value "FASTEST"')


def test_cookie_needs_a_name() -> None:
    lb = {"consistentHash": {"httpCookie": {"ttl": "0s"}}}
    assert ("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
            "name required for HttpCookie") in _refused(_dr(trafficPolicy={"loadBalancer": lb}))  # fmt: skip


def test_empty_traffic_policy_and_connection_pool() -> None:
    assert _refused(_dr(trafficPolicy={})) == [
        ("spec.trafficPolicy", "traffic policy must have at least one field")
    ]
    assert _refused(_dr(trafficPolicy={"connectionPool": {}})) == [
        ("spec.trafficPolicy.connectionPool", "connection pool must have at least one field")
    ]


def test_connection_pool_and_outlier_rules() -> None:
    policy = {
        "connectionPool": {"tcp": {"maxConnections": -1}, "http": {"maxRetries": -2}},
        "outlierDetection": {"maxEjectionPercent": 120, "consecutiveLocalOriginFailures": 2},
    }
    assert _refused(_dr(trafficPolicy=policy)) == [
        ("spec.trafficPolicy.connectionPool.http.maxRetries", "max retries must be non-negative"),
        (
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "max connections must be non-negative",
        ),
        (
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, but split "
            "external local origin errors is set to false",
        ),
        (
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "percentage 120 is not in range 0..100",
        ),
    ]


def test_port_level_settings_need_a_port_and_a_field() -> None:
    assert _refused(_dr(trafficPolicy={"portLevelSettings": [{}]})) == [
        ("spec.trafficPolicy.portLevelSettings[0].port", "portTrafficPolicy must have valid port"),
        (
            "spec.trafficPolicy.portLevelSettings[0]",
            "port traffic policy must have at least one field",
        ),
    ]


def test_mutual_tls_needs_certificates() -> None:
    assert [f for f, _ in _refused(_dr(trafficPolicy={"tls": {"mode": "MUTUAL"}}))] == [
        "spec.trafficPolicy.tls.clientCertificate",
        "spec.trafficPolicy.tls.privateKey",
    ]


# -- Gateway --------------------------------------------------------------------------------


def test_gateway_servers_need_hosts_and_port() -> None:
    assert _refused(_gw([{"hosts": []}])) == [
        ("spec.servers[0].hosts", "server config must contain at least one host"),
        ("spec.servers[0].port", "port is required"),
    ]
    assert _refused(_gw([])) == [("spec.servers", "gateway must have at least one server")]


def test_gateway_port_rules() -> None:
    server = {"hosts": ["*"], "port": {"number": 0, "protocol": "SMTP", "name": ""}}
    assert _refused(_gw([server])) == [
        (
            "spec.servers[0].port.protocol",
            'invalid protocol "SMTP", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, '
            "MONGO, REDIS, MYSQL, TCP",
        ),
        ("spec.servers[0].port.number", "port number 0 must be in the range 1..65535"),
        ("spec.servers[0].port.name", "port name must be set"),
    ]


def test_https_server_needs_tls_and_port_names_are_unique() -> None:
    https = {
        "hosts": ["shop/web.example.com"],
        "port": {"number": 443, "protocol": "HTTPS", "name": "p"},
    }
    http = {"hosts": ["*.example.com"], "port": {"number": 80, "protocol": "HTTP", "name": "p"}}
    assert _refused(_gw([https, http])) == [
        ("spec.servers[0].tls", "server must have TLS settings for HTTPS/TLS protocols"),
        ("spec.servers[1].port.name", "port names in servers must be unique: duplicate name p"),
    ]


def test_gateway_names_are_dns_labels() -> None:
    doc = _gw([{"hosts": ["*"], "port": {"number": 80, "protocol": "HTTP", "name": "http"}}])
    parse_manifest(doc)
    doc["metadata"]["name"] = "edge.gw"
    assert _refused(doc)[0][0] == "metadata.name"


def test_server_tls_settings_rules() -> None:
    def server(tls: dict[str, Any]) -> dict[str, Any]:
        return {"hosts": ["a.example.com"], "tls": tls,
                "port": {"number": 443, "protocol": "HTTPS", "name": "https"}}  # fmt: skip

    parse_manifest(_gw([server({"mode": "SIMPLE", "credentialName": "a-cert"})]))
    parse_manifest(_gw([server({"mode": "MUTUAL", "credentialName": "a-cert"})]))
    parse_manifest(_gw([server({"mode": "PASSTHROUGH"})]))
    parse_manifest(
        _gw([server({"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem"})])
    )
    assert _refused(_gw([server({"mode": "SIMPLE"})])) == [
        ("spec.servers[0].tls.serverCertificate", "SIMPLE TLS requires a server certificate"),
        ("spec.servers[0].tls.privateKey", "SIMPLE TLS requires a private key"),
    ]
    assert _refused(
        _gw([server({"mode": "MUTUAL", "serverCertificate": "/c.pem", "privateKey": "/k.pem"})])
    ) == [("spec.servers[0].tls.caCertificates", "MUTUAL TLS requires a client CA bundle")]
    assert _refused(_gw([server({"mode": "ISTIO_MUTUAL", "credentialName": "x"})])) == [
        ("spec.servers[0].tls.credentialName",
         "ISTIO_MUTUAL TLS cannot have associated credentialName"),
    ]  # fmt: skip


def test_optional_mutual_is_validated_as_mutual_and_peer_checks_are_read() -> None:
    def server(tls: dict[str, Any]) -> dict[str, Any]:
        return {"hosts": ["a.example.com"], "tls": tls,
                "port": {"number": 443, "protocol": "HTTPS", "name": "https"}}  # fmt: skip

    parse_manifest(_gw([server({"mode": "OPTIONAL_MUTUAL", "credentialName": "a-cert"})]))
    assert _refused(_gw([server({"mode": "OPTIONAL_MUTUAL"})])) == [
        ("spec.servers[0].tls.caCertificates", "MUTUAL TLS requires a client CA bundle"),
        ("spec.servers[0].tls.serverCertificate", "MUTUAL TLS requires a server certificate"),
        ("spec.servers[0].tls.privateKey", "MUTUAL TLS requires a private key"),
    ]
    peer = {
        "subjectAltNames": ["spiffe://cluster.local/ns/a/sa/b"],
        "verifyCertificateSpki": ["A" * 43 + "="],
        "verifyCertificateHash": ["ab" * 32],
    }
    gw = parse_manifest(_gw([server({"mode": "MUTUAL", "credentialName": "a-cert", **peer})]))
    assert isinstance(gw, Gateway)
    tls = gw.spec.servers[0].tls
    assert tls is not None
    assert tls.verify_certificate_spki == ["A" * 43 + "="]
    assert tls.verify_certificate_hash == ["ab" * 32]
    parse_manifest(_gw([server({"mode": "ISTIO_MUTUAL", **peer})]))
    parse_manifest(_gw([{**server({"mode": "AUTO_PASSTHROUGH"}),
                         "port": {"number": 15443, "protocol": "TLS", "name": "tls"}}]))  # fmt: skip


def _tls_vs(*routes: dict[str, Any], hosts: list[str] | None = None) -> dict[str, Any]:
    doc = _vs(hosts=hosts or ["*.example.com"], gateways=["edge"], tls=list(routes))
    del doc["spec"]["http"]
    return doc


def test_tls_routes_are_read() -> None:
    vs = parse_manifest(_tls_vs({"match": [{"sniHosts": ["a.example.com"], "port": 443}],
                                 "route": [_dest("a", weight=90), _dest("b", weight=10)]}))  # fmt: skip
    assert isinstance(vs, VirtualService)
    (route,) = vs.spec.tls
    assert route.match[0].sni_hosts == ["a.example.com"] and route.match[0].port == 443
    assert [r.weight for r in route.route] == [90, 10]
    # A VirtualService with only tls routes is complete.
    assert dump_manifest(vs)["spec"]["tls"][0]["match"][0]["sniHosts"] == ["a.example.com"]


def test_tls_route_rules_are_istios_validate_tls_route() -> None:
    assert _refused(_tls_vs({"route": [_dest()]})) == [
        ("spec.tls[0].match", "TLS route must have at least one match condition"),
    ]
    assert _refused(_tls_vs({"match": [{"sniHosts": []}]})) == [
        ("spec.tls[0].match[0].sniHosts", "TLS match must have at least one SNI host"),
        ("spec.tls[0].route", "TLS route is required"),
    ]
    assert _refused(
        _tls_vs({"match": [{"sniHosts": ["other.org", "bad_host"], "port": 70000}],
                 "route": [_dest(weight=-1)]})
    ) == [
        ("spec.tls[0].match[0].sniHosts[0]",
         'SNI host "other.org" is not a compatible subset of any of the virtual service '
         "hosts: [*.example.com]"),
        ("spec.tls[0].match[0].sniHosts[1]", _refused(_vs(hosts=["bad_host"]))[0][1]),
        ("spec.tls[0].match[0].port", "port number 70000 must be in the range 1..65535"),
        ("spec.tls[0].route[0].weight", "weight -1 < 0"),
    ]  # fmt: skip
    # A narrower wildcard is a subset of a wider one; an IP is Istio's warning, accepted.
    parse_manifest(_tls_vs({"match": [{"sniHosts": ["*.a.example.com", "10.0.0.1"]}],
                            "route": [_dest()]}))  # fmt: skip
    assert _refused(_tls_vs({"match": [{"sniHosts": ["*.com"]}], "route": [_dest()]}))[0][
        1
    ].startswith('SNI host "*.com" is not a compatible subset')


# -- ServiceEntry ---------------------------------------------------------------------------

_PORTS = [{"number": 443, "name": "https", "protocol": "TLS"}]


def test_a_valid_service_entry() -> None:
    parse_manifest(_se(hosts=["api.example.com"], ports=_PORTS, resolution="DNS"))
    parse_manifest(
        _se(
            hosts=["db.internal"],
            addresses=["10.9.0.0/24"],
            ports=[{"number": 5432, "name": "tcp-pg", "protocol": "TCP"}],
            resolution="STATIC",
            endpoints=[{"address": "10.9.0.5", "ports": {"tcp-pg": 5433}}],
        )
    )


def test_service_entry_needs_hosts_and_refuses_star() -> None:
    assert _refused(_se(hosts=[], ports=_PORTS)) == [
        ("spec.hosts", "service entry must have at least one host")
    ]
    assert _refused(_se(hosts=["*"], ports=_PORTS)) == [("spec.hosts[0]", "invalid host *")]


def test_resolution_none_takes_no_endpoints() -> None:
    doc = _se(hosts=["a.example.com"], ports=_PORTS, endpoints=[{"address": "1.2.3.4"}])
    assert _refused(doc) == [
        ("spec.endpoints", "no endpoints should be provided for resolution type none")
    ]


def test_static_endpoints_are_ip_addresses_on_declared_ports() -> None:
    doc = _se(
        hosts=["a.example.com"],
        ports=_PORTS,
        resolution="STATIC",
        endpoints=[{"address": "db.example.com", "ports": {"grpc": 9000}}],
    )
    assert _refused(doc) == [
        (
            "spec.endpoints[0].address",
            'endpoint address "db.example.com" is not a valid IP address',
        ),
        ("spec.endpoints[0].ports.grpc", "endpoint port 9000 is not defined by the service entry"),
    ]


def test_dns_round_robin_takes_one_endpoint_and_cidrs_need_static() -> None:
    doc = _se(
        hosts=["a.example.com"],
        addresses=["10.0.0.0/8"],
        ports=_PORTS,
        resolution="DNS_ROUND_ROBIN",
        endpoints=[{"address": "a.example.com"}, {"address": "b.example.com"}],
    )
    assert _refused(doc) == [
        ("spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types"),
        (
            "spec.endpoints",
            "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
        ),
    ]


def test_multiple_hosts_need_http_or_tls_ports() -> None:
    doc = _se(
        hosts=["a.example.com", "b.example.com"],
        ports=[{"number": 27017, "name": "mongo", "protocol": "MONGO"}],
        resolution="DNS",
    )
    assert _refused(doc) == [("spec.hosts", "multiple hosts provided with non-HTTP, non-TLS ports")]


def test_duplicate_service_entry_ports() -> None:
    doc = _se(hosts=["a.example.com"], ports=[*_PORTS, *copy.deepcopy(_PORTS)])
    assert _refused(doc) == [
        ("spec.ports[1].name", 'service entry port name "https" already defined'),
        ("spec.ports[1].number", "service entry port 443 already defined"),
    ]


# -- PeerAuthentication ---------------------------------------------------------------------


def _pa(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "shop"},
        "spec": spec,
    }


def test_peer_authentication() -> None:
    resource = parse_manifest(
        _pa(selector={"matchLabels": {"app": "web"}}, mtls={"mode": "STRICT"},
            portLevelMtls={8080: {"mode": "DISABLE"}})
    )  # fmt: skip
    assert parse_manifest(dump_manifest(resource)) == resource
    assert _refused(_pa(portLevelMtls={8080: {"mode": "DISABLE"}})) == [
        ("spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS")
    ]
    assert _refused(_pa(selector={"matchLabels": {"a": "b"}}, portLevelMtls={0: {}})) == [
        ("spec.portLevelMtls.0", "port must be in range 1..65535")
    ]
    [(field, _)] = _refused(_pa(mtls={"mode": "ON"}))
    assert field == "spec.mtls.mode"


# -- CORS, direct responses, delegates ------------------------------------------------------


def test_direct_response_conflicts_and_status() -> None:
    direct = {"status": 503, "body": {"string": "down"}}
    assert parse_manifest(_vs(http=[{"directResponse": direct}]))
    assert _refused(_http(directResponse=direct)) == [
        ("spec.http[0]", "HTTP route cannot contain both route and direct_response")
    ]
    doc = _vs(http=[{"directResponse": direct, "redirect": {"uri": "/x"}}])
    assert _refused(doc) == [
        ("spec.http[0]", "HTTP route rule cannot contain both direct_response and redirect")
    ]
    assert _refused(_vs(http=[{"directResponse": {"status": 700}}])) == [
        ("spec.http[0].directResponse.status", "HTTP status 700 is not in range 0-600")
    ]
    big = {"status": 200, "body": {"string": "x" * (1024 * 1024 + 1)}}
    [(field, message)] = _refused(_vs(http=[{"directResponse": big}]))
    assert field == "spec.http[0].directResponse.body" and "must be less than 1MB" in message
    both = {"status": 200, "body": {"string": "a", "bytes": "YQ=="}}
    [(field, message)] = _refused(_vs(http=[{"directResponse": both}]))
    assert field == "spec.http[0].directResponse.body" and "oneof specifier" in message


def test_cors_policy_rules() -> None:
    cors = {
        "allowOrigins": [{"exact": "https://a.com"}, {"prefix": ""}, {"regex": "("}],
        "allowMethods": ["GET", "FETCH"],
        "allowHeaders": ["x-ok", "*", "bad header"],
        "exposeHeaders": [""],
        "maxAge": "1500ms",
    }
    refused = _refused(_http(corsPolicy=cors))
    assert refused[0] == (
        "spec.http[0].corsPolicy.allowOrigins[1]",
        "'' is not a valid match type for CORS allow origins",
    )
    assert refused[1][0] == "spec.http[0].corsPolicy.allowOrigins[2].regex"
    assert refused[2:] == [
        ("spec.http[0].corsPolicy.allowMethods[1]", '"FETCH" is not a supported HTTP method'),
        (
            "spec.http[0].corsPolicy.allowHeaders[2]",
            "header name bad header is not a valid header name",
        ),
        ("spec.http[0].corsPolicy.exposeHeaders[0]", "header name cannot be empty"),
        (
            "spec.http[0].corsPolicy.maxAge",
            "max_age duration is accurate only to seconds precision",
        ),
    ]
    ok = {"allowOrigins": [{"exact": "https://a.com"}], "maxAge": "24h", "allowMethods": ["*"]}
    assert parse_manifest(_http(corsPolicy=ok))


def test_delegate_virtual_services() -> None:
    root = _vs(http=[{"match": [{"uri": {"prefix": "/r"}}], "delegate": {"name": "leaf"}}])
    assert parse_manifest(root)
    delegate = _vs(hosts=[], http=[{"route": [_dest()]}])
    assert parse_manifest(delegate)
    with_route = _vs(http=[{"route": [_dest()], "delegate": {"name": "leaf"}}])
    assert _refused(with_route) == [("spec.http[0]", "root HTTP route  must not specify route")]
    # A delegate of a delegate is refused.
    nested = _vs(hosts=[], http=[{"delegate": {"name": "other"}, "route": [_dest()]}])
    assert _refused(nested) == [
        ("spec.http[0].delegate", "delegate HTTP route cannot contain delegate")
    ]
    assert _refused(_vs(hosts=[], gateways=["edge"])) == [
        ("spec.gateways", "delegate virtual service must have no gateways specified")
    ]
    tls = [{"match": [{"sniHosts": ["a.example.com"]}], "route": [_dest()]}]
    assert ("spec.tls", "delegate virtual service must have no tls route specified") in _refused(
        _vs(hosts=[], tls=tls)
    )


# -- warmup and locality --------------------------------------------------------------------


def _lb(**lb: Any) -> dict[str, Any]:
    return _dr(trafficPolicy={"loadBalancer": {"simple": "ROUND_ROBIN", **lb}})


def test_warmup() -> None:
    assert parse_manifest(_lb(warmup={"duration": "30s", "aggression": 2, "minimumPercent": 5}))
    assert parse_manifest(_lb(warmupDurationSecs="10s"))
    assert _refused(_lb(warmup={"aggression": 0.5, "minimumPercent": 101})) == [
        ("spec.trafficPolicy.loadBalancer.warmup.duration", "duration is required"),
        (
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
            "minimumPercent value should be less than or equal to 100",
        ),
        (
            "spec.trafficPolicy.loadBalancer.warmup.aggression",
            "aggression should be greater than or equal to 1",
        ),
    ]


def test_locality_lb_setting() -> None:
    where = "spec.trafficPolicy.loadBalancer.localityLbSetting"
    distribute = {"distribute": [{"from": "us/a/*", "to": {"us/a/*": 80, "us/b/*": 20}}]}
    assert parse_manifest(_lb(localityLbSetting=distribute))
    failover = {"failover": [{"from": "us", "to": "eu"}]}
    outlier = {"consecutive5xxErrors": 1}
    doc = _dr(trafficPolicy={"loadBalancer": {"localityLbSetting": failover},
                             "outlierDetection": outlier})  # fmt: skip
    assert parse_manifest(doc)
    assert _refused(_lb(localityLbSetting=failover)) == [
        (f"{where}.failover", "outlier detection policy must be provided for failover")
    ]
    assert _refused(_lb(localityLbSetting={**distribute, **failover})) == [
        (where, "can not simultaneously specify 'distribute' and 'failover'")
    ]
    bad = {"distribute": [{"from": "us", "to": {"us/a": 60, "us/b": 30}}]}
    assert _refused(_lb(localityLbSetting=bad)) == [
        (f"{where}.distribute[0].to", "total locality weight 90 != 100")
    ]
    overlap = {
        "distribute": [{"from": "us/*", "to": {"us/a": 100}}, {"from": "us/a", "to": {"eu": 100}}]
    }
    assert _refused(_lb(localityLbSetting=overlap)) == [
        (f"{where}.distribute", "locality us/a overlap with previous specified ones")
    ]
    same = {"failover": [{"from": "us/a", "to": "us/a"}]}
    doc = _dr(trafficPolicy={"loadBalancer": {"localityLbSetting": same},
                             "outlierDetection": outlier})  # fmt: skip
    assert _refused(doc) == [
        (f"{where}.failover[0]", "locality lb failover settings must specify different regions"),
        (f"{where}.failover[0]", "locality lb failover only specify region"),
    ]

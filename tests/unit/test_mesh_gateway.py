"""A gateway proxy's TLS and TCP servers, resource by resource: HTTPS servers that terminate
TLS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL with their credential over SDS, ISTIO_MUTUAL with the
workload's certificate) and check the client's, SNI per server, httpsRedirect, PASSTHROUGH
servers routed by the VirtualServices' ``tls`` routes, AUTO_PASSTHROUGH servers by SNI to the
SNI-DNAT clusters, TCP servers by their ``tcp`` routes; the hosts of plain HTTP servers; how
the servers of one port merge."""

from __future__ import annotations

from typing import Any

from core.mesh.envoy.build import build_snapshot
from core.mesh.envoy.model import MeshState, Proxy, Snapshot
from core.mesh.envoy.names import (
    CERT_SECRET,
    DOWNSTREAM_TLS_TYPE,
    ROOT_SECRET,
    SECRET_TYPE,
    SNI_CLUSTER_TYPE,
    TLS_INSPECTOR_TYPE,
)
from core.mesh.envoy.secrets import wanted_credentials
from tests.mesh_scenario import istio, service

GATEWAY = Proxy(kind="gateway", labels={"istio": "ingressgateway"}, bind_address="127.0.0.1")
CERT = {"tls.crt": b"-----CERT-----", "tls.key": b"-----KEY-----"}
A = "outbound|443||a.shop.svc.cluster.local"
B = "outbound|443||b.shop.svc.cluster.local"
WEB = "outbound|80||web.shop.svc.cluster.local"


def _gateway(*servers: dict[str, Any]) -> Any:
    return istio("Gateway", "edge", {"selector": {"istio": "ingressgateway"},
                                     "servers": list(servers)})  # fmt: skip


def _server(port: int, protocol: str, hosts: list[str], name: str, **tls: Any) -> dict[str, Any]:
    server: dict[str, Any] = {
        "port": {"number": port, "protocol": protocol, "name": name}, "hosts": hosts,
    }  # fmt: skip
    if tls:
        server["tls"] = tls
    return server


def _vs(name: str, hosts: list[str], **routes: Any) -> Any:
    return istio("VirtualService", name, {"hosts": hosts, "gateways": ["edge"], **routes})


def _state(
    *objects: Any, credentials: dict[tuple[str, str], dict[str, bytes]] | None = None
) -> MeshState:
    services = [
        service("web", "10.96.0.10", [{"name": "http", "port": 80}]),
        service("a", "10.96.0.11", [{"name": "tls", "port": 443}]),
        service("b", "10.96.0.12", [{"name": "tls", "port": 443}]),
        service("db", "10.96.0.13", [{"name": "tcp", "port": 5432}]),
    ]
    return MeshState(
        services=services,
        gateways=[o for o in objects if o.kind == "Gateway"],
        virtual_services=[o for o in objects if o.kind == "VirtualService"],
        credentials=credentials or {},
    )


def _listener(snap: Snapshot, port: int) -> dict[str, Any]:
    return next(
        li for li in snap.listeners if li["address"]["socket_address"]["port_value"] == port
    )


def _web_route(host: str) -> Any:
    return _vs(host.split(".")[0], [host], http=[{"route": [{"destination": {"host": "web"}}]}])


def test_a_simple_https_server_terminates_tls_with_its_credential_over_sds() -> None:
    state = _state(
        _gateway(
            _server(
                443, "HTTPS", ["a.example.com"], "https", mode="SIMPLE", credentialName="a-cert"
            )
        ),
        _web_route("a.example.com"),
        credentials={("shop", "a-cert"): CERT},
    )
    snap = build_snapshot(state, GATEWAY)
    listener = _listener(snap, 443)
    assert [f["typed_config"]["@type"] for f in listener["listener_filters"]] == [
        TLS_INSPECTOR_TYPE
    ]
    [chain] = listener["filter_chains"]
    assert chain["filter_chain_match"] == {
        "transport_protocol": "tls", "server_names": ["a.example.com"],
    }  # fmt: skip
    context = chain["transport_socket"]["typed_config"]
    assert context["@type"] == DOWNSTREAM_TLS_TYPE
    assert "require_client_certificate" not in context
    [sds] = context["common_tls_context"]["tls_certificate_sds_secret_configs"]
    assert sds["name"] == "kubernetes://a-cert" and "ads" in sds["sds_config"]
    manager = chain["filters"][0]["typed_config"]
    route_name = manager["rds"]["route_config_name"]
    assert route_name == "https.443.https.edge.shop"
    config = next(r for r in snap.routes if r["name"] == route_name)
    assert config["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == WEB
    assert snap.secrets == [
        {"@type": SECRET_TYPE, "name": "kubernetes://a-cert",
         "tls_certificate": {"certificate_chain": {"inline_string": "-----CERT-----"},
                             "private_key": {"inline_string": "-----KEY-----"}}},
    ]  # fmt: skip


def test_several_https_servers_on_one_port_are_chains_picked_by_sni() -> None:
    state = _state(
        _gateway(
            _server(
                443, "HTTPS", ["a.example.com"], "https-a", mode="SIMPLE", credentialName="a-cert"
            ),
            _server(
                443,
                "HTTPS",
                ["shop/b.example.com"],
                "https-b",
                mode="SIMPLE",
                credentialName="b-cert",
            ),
        ),
        _web_route("a.example.com"),
        _web_route("b.example.com"),
        credentials={("shop", "a-cert"): CERT, ("shop", "b-cert"): CERT},
    )
    snap = build_snapshot(state, GATEWAY)
    [listener] = snap.listeners
    chains = listener["filter_chains"]
    assert [c["filter_chain_match"]["server_names"] for c in chains] == [
        ["a.example.com"], ["b.example.com"],
    ]  # fmt: skip
    # Each server's route configuration has only the VirtualServices of its hosts.
    by_name = {r["name"]: r for r in snap.routes}
    a = by_name["https.443.https-a.edge.shop"]["virtual_hosts"]
    assert [h["domains"][0] for h in a] == ["a.example.com"]
    assert {s["name"] for s in snap.secrets} == {"kubernetes://a-cert", "kubernetes://b-cert"}


def test_a_missing_credential_leaves_the_server_out() -> None:
    state = _state(
        _gateway(
            _server(
                443, "HTTPS", ["a.example.com"], "https", mode="SIMPLE", credentialName="a-cert"
            )
        ),
        _web_route("a.example.com"),
    )
    snap = build_snapshot(state, GATEWAY)
    assert snap.listeners == [] and snap.secrets == []
    assert wanted_credentials(state.gateways) == {("shop", "a-cert")}


def test_a_mutual_server_requires_a_client_certificate_signed_by_the_ca() -> None:
    gateway = _gateway(_server(443, "HTTPS", ["*"], "https", mode="MUTUAL",
                               credentialName="a-cert"))  # fmt: skip
    assert wanted_credentials([gateway]) == {("shop", "a-cert"), ("shop", "a-cert-cacert")}
    # The CA in the same Secret, or in <name>-cacert.
    for credentials in (
        {("shop", "a-cert"): {**CERT, "ca.crt": b"-----CA-----"}},
        {("shop", "a-cert"): CERT, ("shop", "a-cert-cacert"): {"ca.crt": b"-----CA-----"}},
    ):
        snap = build_snapshot(
            _state(gateway, _web_route("a.example.com"), credentials=credentials), GATEWAY
        )
        [chain] = _listener(snap, 443)["filter_chains"]
        assert chain["filter_chain_match"] == {"transport_protocol": "tls"}  # host "*": any
        context = chain["transport_socket"]["typed_config"]
        assert context["require_client_certificate"] is True
        common = context["common_tls_context"]
        assert common["validation_context_sds_secret_config"]["name"] == (
            "kubernetes://a-cert-cacert"
        )
        ca = next(s for s in snap.secrets if s["name"] == "kubernetes://a-cert-cacert")
        assert ca["validation_context"] == {"trusted_ca": {"inline_string": "-----CA-----"}}
    # No CA anywhere: the server is left out.
    snap = build_snapshot(
        _state(gateway, _web_route("a.example.com"), credentials={("shop", "a-cert"): CERT}),
        GATEWAY,
    )
    assert snap.listeners == []


def test_certificate_files_and_tls_options() -> None:
    state = _state(
        _gateway(
            _server(
                443,
                "HTTPS",
                ["a.example.com"],
                "https",
                mode="SIMPLE",
                serverCertificate="/etc/c.pem",
                privateKey="/etc/k.pem",
                minProtocolVersion="TLSV1_3",
            )
        ),
        _web_route("a.example.com"),
    )
    [chain] = _listener(build_snapshot(state, GATEWAY), 443)["filter_chains"]
    common = chain["transport_socket"]["typed_config"]["common_tls_context"]
    assert common["tls_certificates"] == [
        {"certificate_chain": {"filename": "/etc/c.pem"},
         "private_key": {"filename": "/etc/k.pem"}}
    ]  # fmt: skip
    assert common["tls_params"] == {"tls_minimum_protocol_version": "TLSv1_3"}
    assert common["alpn_protocols"] == ["h2", "http/1.1"]


def test_https_redirect_on_an_http_server_requires_tls() -> None:
    state = _state(
        _gateway(_server(80, "HTTP", ["a.example.com"], "http", httpsRedirect=True)),
        _web_route("a.example.com"),
    )
    snap = build_snapshot(state, GATEWAY)
    [config] = snap.routes
    assert config["name"] == "http.80"
    assert [h["require_tls"] for h in config["virtual_hosts"]] == ["ALL"]
    plain = build_snapshot(
        _state(_gateway(_server(80, "HTTP", ["a.example.com"], "http")),
               _web_route("a.example.com")),
        GATEWAY,
    )  # fmt: skip
    assert "require_tls" not in plain.routes[0]["virtual_hosts"][0]


def test_a_passthrough_server_routes_tls_by_sni_unterminated() -> None:
    state = _state(
        _gateway(_server(443, "TLS", ["*.example.com"], "tls", mode="PASSTHROUGH")),
        _vs("pass", ["*.example.com"], tls=[
            {"match": [{"sniHosts": ["a.example.com"], "port": 443},
                       {"sniHosts": ["a2.example.com"]}],
             "route": [{"destination": {"host": "a"}}]},
            {"match": [{"sniHosts": ["b.example.com"]}],
             "route": [{"destination": {"host": "a"}, "weight": 25},
                       {"destination": {"host": "b"}, "weight": 75}]},
            {"match": [{"sniHosts": ["c.example.com"], "port": 8443}],
             "route": [{"destination": {"host": "a"}}]},
        ]),
    )  # fmt: skip
    snap = build_snapshot(state, GATEWAY)
    listener = _listener(snap, 443)
    assert listener["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    chains = listener["filter_chains"]
    assert [c["filter_chain_match"] for c in chains] == [
        {"server_names": ["a.example.com"], "transport_protocol": "tls"},
        {"server_names": ["a2.example.com"], "transport_protocol": "tls"},
        {"server_names": ["b.example.com"], "transport_protocol": "tls"},
    ]  # the route for port 8443 is not this server's
    assert all("transport_socket" not in c for c in chains)
    first, also, second = (c["filters"][0]["typed_config"] for c in chains)
    assert first["cluster"] == also["cluster"] == A
    assert second["weighted_clusters"]["clusters"] == [
        {"name": A, "weight": 25}, {"name": B, "weight": 75},
    ]  # fmt: skip
    assert snap.routes == []


def test_tcp_servers_proxy_their_tcp_routes() -> None:
    for protocol in ("TCP", "MONGO", "REDIS", "MYSQL"):
        state = _state(
            _gateway(_server(15432, protocol, ["*"], "db")),
            _vs("db", ["*"], tcp=[{"match": [{"port": 15432}],
                                   "route": [{"destination": {"host": "db",
                                                              "port": {"number": 5432}}}]}]),
        )  # fmt: skip
        snap = build_snapshot(state, GATEWAY)
        listener = _listener(snap, 15432)
        assert "listener_filters" not in listener
        [chain] = listener["filter_chains"]
        assert chain["filters"][0]["name"] == "envoy.filters.network.tcp_proxy"
        assert chain["filters"][0]["typed_config"]["cluster"] == (
            "outbound|5432||db.shop.svc.cluster.local"
        )
    # No tcp route for the server: no listener.
    lonely = _state(_gateway(_server(15432, "TCP", ["*"], "db")))
    assert build_snapshot(lonely, GATEWAY).listeners == []


def test_a_tls_server_that_terminates_proxies_its_tcp_routes() -> None:
    state = _state(
        _gateway(_server(5433, "TLS", ["db.example.com"], "tls", mode="SIMPLE",
                         credentialName="db-cert")),
        _vs("db", ["db.example.com"], tcp=[{"route": [{"destination": {
            "host": "db", "port": {"number": 5432}}}]}]),
        credentials={("shop", "db-cert"): {"cert": b"C", "key": b"K"}},  # Istio's generic keys
    )  # fmt: skip
    snap = build_snapshot(state, GATEWAY)
    [chain] = _listener(snap, 5433)["filter_chains"]
    assert chain["filter_chain_match"]["server_names"] == ["db.example.com"]
    assert "alpn_protocols" not in chain["transport_socket"]["typed_config"]["common_tls_context"]
    assert chain["filters"][0]["typed_config"]["cluster"] == (
        "outbound|5432||db.shop.svc.cluster.local"
    )


def test_a_sidecars_tls_service_port_routes_by_sni_with_the_service_as_default() -> None:
    state = _state(
        istio("VirtualService", "a-tls", {"hosts": ["a", "*.example.com"], "tls": [
            {"match": [{"sniHosts": ["b.example.com"], "port": 443}],
             "route": [{"destination": {"host": "b"}}]},
            {"match": [{"sniHosts": ["x.example.com"], "port": 8443}],
             "route": [{"destination": {"host": "b"}}]},
        ]}),
    )  # fmt: skip
    snap = build_snapshot(state, Proxy())
    listener = next(li for li in snap.listeners if li["name"] == "10.96.0.11_443")
    assert listener["listener_filters"][0]["typed_config"]["@type"] == TLS_INSPECTOR_TYPE
    sni, default = listener["filter_chains"]
    assert sni["filter_chain_match"] == {
        "server_names": ["b.example.com"],
        "transport_protocol": "tls",
    }
    assert sni["filters"][0]["typed_config"]["cluster"] == B
    assert "filter_chain_match" not in default
    assert default["filters"][0]["typed_config"]["cluster"] == A
    # A plain TCP port has no SNI chains, even with tls routes naming its host.
    db = next(li for li in snap.listeners if li["name"] == "10.96.0.13_5432")
    assert "listener_filters" not in db and len(db["filter_chains"]) == 1


def _context(snap: Snapshot, port: int) -> dict[str, Any]:
    [chain] = _listener(snap, port)["filter_chains"]
    return chain["transport_socket"]["typed_config"]


def test_an_istio_mutual_server_presents_the_workload_certificate_and_requires_a_mesh_client() -> (
    None
):
    spiffe = "spiffe://cluster.local/ns/shop/sa/client"
    gateway = _gateway(_server(443, "HTTPS", ["a.example.com"], "https", mode="ISTIO_MUTUAL",
                               subjectAltNames=[spiffe]))  # fmt: skip
    assert wanted_credentials([gateway]) == set()
    snap = build_snapshot(_state(gateway, _web_route("a.example.com")), GATEWAY)
    context = _context(snap, 443)
    assert context["require_client_certificate"] is True
    common = context["common_tls_context"]
    assert [s["name"] for s in common["tls_certificate_sds_secret_configs"]] == [CERT_SECRET]
    combined = common["combined_validation_context"]
    assert combined["validation_context_sds_secret_config"]["name"] == ROOT_SECRET
    assert combined["default_validation_context"] == {
        "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": spiffe}}]
    }
    assert common["alpn_protocols"] == ["h2", "http/1.1"]
    assert snap.secrets == []  # the workload's own secrets are served per identity


def test_an_optional_mutual_server_verifies_a_client_certificate_without_requiring_one() -> None:
    gateway = _gateway(_server(443, "HTTPS", ["*"], "https", mode="OPTIONAL_MUTUAL",
                               credentialName="a-cert"))  # fmt: skip
    assert wanted_credentials([gateway]) == {("shop", "a-cert"), ("shop", "a-cert-cacert")}
    credentials = {("shop", "a-cert"): {**CERT, "ca.crt": b"-----CA-----"}}
    snap = build_snapshot(
        _state(gateway, _web_route("a.example.com"), credentials=credentials), GATEWAY
    )
    context = _context(snap, 443)
    assert "require_client_certificate" not in context
    common = context["common_tls_context"]
    assert common["validation_context_sds_secret_config"]["name"] == "kubernetes://a-cert-cacert"
    # Without its CA the server is left out, as a MUTUAL one.
    bare = _state(gateway, _web_route("a.example.com"), credentials={("shop", "a-cert"): CERT})
    assert build_snapshot(bare, GATEWAY).listeners == []


def test_subject_alt_names_spki_and_hash_check_the_client_certificate() -> None:
    checks = {
        "subjectAltNames": ["client.example.com", "spiffe://td/x", "10.0.0.1"],
        "verifyCertificateSpki": ["A" * 43 + "="],
        "verifyCertificateHash": ["ab" * 32],
    }
    expected = {
        "match_typed_subject_alt_names": [
            {"san_type": "DNS", "matcher": {"exact": "client.example.com"}},
            {"san_type": "URI", "matcher": {"exact": "spiffe://td/x"}},
            {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.1"}},
        ],
        "verify_certificate_spki": ["A" * 43 + "="],
        "verify_certificate_hash": ["ab" * 32],
    }  # fmt: skip
    credentials = {("shop", "a-cert"): {**CERT, "ca.crt": b"-----CA-----"}}
    snap = build_snapshot(_state(
        _gateway(_server(443, "HTTPS", ["*"], "https", mode="MUTUAL", credentialName="a-cert",
                         **checks)),
        _web_route("a.example.com"), credentials=credentials,
    ), GATEWAY)  # fmt: skip
    combined = _context(snap, 443)["common_tls_context"]["combined_validation_context"]
    assert combined["default_validation_context"] == expected
    assert combined["validation_context_sds_secret_config"]["name"] == "kubernetes://a-cert-cacert"
    files = build_snapshot(_state(
        _gateway(_server(443, "HTTPS", ["*"], "https", mode="MUTUAL",
                         serverCertificate="/c.pem", privateKey="/k.pem",
                         caCertificates="/ca.pem", **checks)),
        _web_route("a.example.com"),
    ), GATEWAY)  # fmt: skip
    validation = _context(files, 443)["common_tls_context"]["validation_context"]
    assert validation == {"trusted_ca": {"filename": "/ca.pem"}, **expected}
    # SIMPLE verifies no client: the checks do not apply.
    simple = build_snapshot(_state(
        _gateway(_server(443, "HTTPS", ["*"], "https", mode="SIMPLE", credentialName="a-cert",
                         **checks)),
        _web_route("a.example.com"), credentials=credentials,
    ), GATEWAY)  # fmt: skip
    common = _context(simple, 443)["common_tls_context"]
    assert "combined_validation_context" not in common and "validation_context" not in common


def test_an_auto_passthrough_server_routes_by_sni_to_the_sni_dnat_clusters() -> None:
    gateway = _gateway(_server(15443, "TLS", ["*.local"], "tls", mode="AUTO_PASSTHROUGH"))
    snap = build_snapshot(_state(gateway), GATEWAY)
    listener = _listener(snap, 15443)
    assert listener["listener_filters"][0]["typed_config"]["@type"] == TLS_INSPECTOR_TYPE
    [chain] = listener["filter_chains"]
    assert chain["filter_chain_match"] == {"transport_protocol": "tls",
                                           "server_names": ["*.local"]}  # fmt: skip
    sni, proxy = chain["filters"]
    assert sni == {"name": "envoy.filters.network.sni_cluster",
                   "typed_config": {"@type": SNI_CLUSTER_TYPE}}  # fmt: skip
    assert proxy["typed_config"]["cluster"] == "BlackHoleCluster"  # only when SNI names none
    assert "transport_socket" not in chain  # not terminated: no VirtualService involved
    by_name = {c["name"]: c for c in snap.clusters}
    dnat = by_name["outbound_.80_._.web.shop.svc.cluster.local"]
    assert dnat["eds_cluster_config"]["service_name"] == WEB  # the same endpoints
    assert {c["name"] for c in snap.clusters} == {
        *(n for n in by_name if "|" in n),
        *(n.replace("|", "_.") for n in by_name if "|" in n),
    }
    assert snap.routes == []
    # Only the services the servers' hosts match get them (Istio's AutoPassthroughSNIHosts).
    narrow = _gateway(_server(15443, "TLS", ["shop/web.shop.svc.cluster.local"], "tls",
                              mode="AUTO_PASSTHROUGH"))  # fmt: skip
    assert [c["name"] for c in build_snapshot(_state(narrow), GATEWAY).clusters if "|" not in
            c["name"]] == ["outbound_.80_._.web.shop.svc.cluster.local"]  # fmt: skip
    # Without an AUTO_PASSTHROUGH server, no SNI-DNAT cluster.
    plain = build_snapshot(_state(_gateway(_server(80, "HTTP", ["*"], "http"))), GATEWAY)
    assert all("|" in c["name"] for c in plain.clusters)


def test_a_plain_http_servers_hosts_restrict_which_virtual_services_it_serves() -> None:
    state = _state(
        _gateway(_server(80, "HTTP", ["a.example.com", "other/b.example.com"], "http")),
        _web_route("a.example.com"),
        _web_route("b.example.com"),  # in shop: the server takes b only from namespace other
        _web_route("c.example.com"),
        _vs("any", ["*"], http=[{"route": [{"destination": {"host": "web"}}]}]),
    )
    [config] = build_snapshot(state, GATEWAY).routes
    assert [(h["name"], h["domains"]) for h in config["virtual_hosts"]] == [
        ("shop/a:80", ["a.example.com", "a.example.com:80"]),
        # "*" serves the server's hosts only, not whatever Host a client sends.
    ]
    state = _state(
        _gateway(_server(80, "HTTP", ["./*.example.com"], "http")),
        _vs("any", ["*"], http=[{"route": [{"destination": {"host": "web"}}]}]),
        _web_route("a.example.com"),
    )
    [config] = build_snapshot(state, GATEWAY).routes
    assert [(h["name"], h["domains"]) for h in config["virtual_hosts"]] == [
        ("shop/any:80", ["*.example.com", "*.example.com:80"]),
        ("shop/a:80", ["a.example.com", "a.example.com:80"]),
    ]


def test_servers_of_one_port_merge_as_istio_merges_them() -> None:
    """The port's first server decides: HTTP with HTTP, TLS with TLS; others are skipped."""
    credentials = {("shop", "a-cert"): CERT}
    https = _server(8000, "HTTPS", ["a.example.com"], "https", mode="SIMPLE",
                    credentialName="a-cert")  # fmt: skip
    http = _server(8000, "HTTP", ["a.example.com"], "http")
    http2 = _server(8000, "HTTP2", ["b.example.com"], "http2")
    first_http = build_snapshot(_state(
        _gateway(http, https, http2), _web_route("a.example.com"), _web_route("b.example.com"),
        credentials=credentials,
    ), GATEWAY)  # fmt: skip
    [chain] = _listener(first_http, 8000)["filter_chains"]
    assert "transport_socket" not in chain and "listener_filters" not in _listener(first_http, 8000)
    [config] = first_http.routes
    assert config["name"] == "http.8000" and len(config["virtual_hosts"]) == 2
    first_tls = build_snapshot(_state(
        _gateway(https, http), _web_route("a.example.com"), credentials=credentials,
    ), GATEWAY)  # fmt: skip
    [chain] = _listener(first_tls, 8000)["filter_chains"]
    assert chain["name"] == "https.8000.https.edge.shop" and "transport_socket" in chain
    assert [r["name"] for r in first_tls.routes] == ["https.8000.https.edge.shop"]
    tcp = _server(8000, "TCP", ["*"], "tcp")
    first_tcp = build_snapshot(_state(
        _gateway(tcp, http),
        _vs("db", ["*"], tcp=[{"route": [{"destination": {"host": "db",
                                                          "port": {"number": 5432}}}]}],
            http=[{"route": [{"destination": {"host": "web"}}]}]),
    ), GATEWAY)  # fmt: skip
    [chain] = _listener(first_tcp, 8000)["filter_chains"]
    assert chain["filters"][0]["name"] == "envoy.filters.network.tcp_proxy"
    assert first_tcp.routes == []

"""DestinationRule TLS origination in the pure builder: SIMPLE and MUTUAL as Istio writes their
``UpstreamTlsContext`` (files, ``credentialName`` over SDS, SAN matches, SNI, auto SNI,
``insecureSkipVerify``), per port and per subset, and the credentials' SDS secrets a proxy is given."""

from __future__ import annotations

import dataclasses
from typing import Any

from core.mesh.envoy.build import build_snapshot
from core.mesh.envoy.model import MeshState, Proxy
from core.mesh.envoy.secrets import credential_names, wanted_rule_credentials
from core.mesh.envoy.tls import SYSTEM_ROOTS
from tests.mesh_scenario import istio

HOST = "api.example.com"
SDS = {"ads": {}, "resource_api_version": "V3"}


def _state(tls: dict[str, Any] | None = None, **extra: Any) -> MeshState:
    entry = istio("ServiceEntry", "api", {
        "hosts": [HOST], "location": "MESH_EXTERNAL", "resolution": "STATIC",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"},
                  {"number": 5432, "name": "tcp-db", "protocol": "TCP"}],
        "endpoints": [{"address": "127.0.0.1", "ports": {"http": 8443, "tcp-db": 9432}}],
    })  # fmt: skip
    spec: dict[str, Any] = {"host": HOST, **extra}
    if tls is not None:
        spec["trafficPolicy"] = {"tls": tls}
    return MeshState(
        service_entries=[entry], destination_rules=[istio("DestinationRule", "api", spec)]
    )


def _socket(state: MeshState, name: str, proxy: Proxy | None = None) -> dict[str, Any]:
    snap = build_snapshot(state, proxy or Proxy())
    cluster = next(c for c in snap.clusters if c["name"] == name)
    return cluster


def _context(cluster: dict[str, Any]) -> dict[str, Any]:
    return cluster["transport_socket"]["typed_config"]


def test_simple_verifies_the_server_with_its_ca_file_san_and_sni() -> None:
    cluster = _socket(
        _state({"mode": "SIMPLE", "caCertificates": "/etc/certs/ca.pem", "sni": "api.internal",
                "subjectAltNames": ["api.internal", "spiffe://x/y", "127.0.0.1"]}),
        f"outbound|80||{HOST}",
    )  # fmt: skip
    context = _context(cluster)
    assert context["@type"].endswith("UpstreamTlsContext")
    assert context["sni"] == "api.internal"
    common = context["common_tls_context"]
    assert "tls_certificates" not in common and "tls_certificate_sds_secret_configs" not in common
    assert common["validation_context"] == {
        "trusted_ca": {"filename": "/etc/certs/ca.pem"},
        "match_typed_subject_alt_names": [
            {"san_type": "DNS", "matcher": {"exact": "api.internal"}},
            {"san_type": "URI", "matcher": {"exact": "spiffe://x/y"}},
            {"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}},
        ],
    }
    # An SNI was given: no auto SNI.
    assert "typed_extension_protocol_options" not in cluster


def test_simple_without_sni_sends_the_host_header_as_sni_on_http_only() -> None:
    state = _state({"mode": "SIMPLE"})
    http = _socket(state, f"outbound|80||{HOST}")
    options = http["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["upstream_http_protocol_options"] == {
        "auto_sni": True, "auto_san_validation": True,
    }  # fmt: skip
    assert options["explicit_http_config"] == {"http_protocol_options": {}}
    # No CA named: the system's roots (Istio verifies by default).
    assert _context(http)["common_tls_context"]["validation_context"] == {
        "trusted_ca": {"filename": SYSTEM_ROOTS}
    }
    tcp = _socket(state, f"outbound|5432||{HOST}")
    assert "sni" not in _context(tcp) and "typed_extension_protocol_options" not in tcp


def test_insecure_skip_verify_validates_nothing() -> None:
    cluster = _socket(_state({"mode": "SIMPLE", "insecureSkipVerify": True}),
                      f"outbound|80||{HOST}")  # fmt: skip
    assert "validation_context" not in _context(cluster)["common_tls_context"]
    assert "combined_validation_context" not in _context(cluster)["common_tls_context"]
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["upstream_http_protocol_options"] == {"auto_sni": True}


def test_mutual_presents_the_client_certificate_files() -> None:
    cluster = _socket(
        _state({"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem",
                "caCertificates": "/ca.pem"}),
        f"outbound|80||{HOST}",
    )  # fmt: skip
    common = _context(cluster)["common_tls_context"]
    assert common["tls_certificates"] == [
        {"certificate_chain": {"filename": "/c.pem"}, "private_key": {"filename": "/k.pem"}}
    ]
    assert common["validation_context"]["trusted_ca"] == {"filename": "/ca.pem"}


def test_credential_name_comes_over_sds_for_a_gateway_or_a_selected_sidecar() -> None:
    tls = {"mode": "MUTUAL", "credentialName": "api-client"}
    gateway = _socket(_state(tls), f"outbound|80||{HOST}", Proxy(kind="gateway", namespace="x"))
    common = _context(gateway)["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"] == [
        {"name": "kubernetes://api-client", "sds_config": SDS}
    ]
    assert common["combined_validation_context"] == {
        "default_validation_context": {},
        "validation_context_sds_secret_config": {
            "name": "kubernetes://api-client-cacert", "sds_config": SDS,
        },
    }  # fmt: skip
    # A sidecar takes it only when the rule's workloadSelector picks it (Istio's rule);
    # otherwise no certificate, and the system's roots.
    plain = _context(_socket(_state(tls), f"outbound|80||{HOST}", Proxy(namespace="shop")))
    assert "tls_certificate_sds_secret_configs" not in plain["common_tls_context"]
    assert plain["common_tls_context"]["validation_context"]["trusted_ca"]["filename"] == (
        SYSTEM_ROOTS
    )
    selected = _state(tls, workloadSelector={"matchLabels": {"app": "client"}})
    picked = Proxy(namespace="shop", labels={"app": "client"})
    common = _context(_socket(selected, f"outbound|80||{HOST}", picked))["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "kubernetes://api-client"
    other = Proxy(namespace="shop", labels={"app": "other"})
    common = _context(_socket(selected, f"outbound|80||{HOST}", other))["common_tls_context"]
    assert "tls_certificate_sds_secret_configs" not in common
    assert credential_names(selected.destination_rules, picked) == {"api-client"}
    assert credential_names(selected.destination_rules, other) == set()


def test_port_and_subset_settings_choose_the_tls_of_their_clusters() -> None:
    rule = {
        "trafficPolicy": {
            "portLevelSettings": [
                {"port": {"number": 5432}, "tls": {"mode": "SIMPLE", "sni": "db.internal"}}
            ]
        },
        "subsets": [{"name": "secure", "labels": {"v": "1"},
                     "trafficPolicy": {"tls": {"mode": "SIMPLE", "sni": "secure.internal"}}}],
    }  # fmt: skip
    state = _state(None, **rule)
    assert "transport_socket" not in _socket(state, f"outbound|80||{HOST}")
    assert _context(_socket(state, f"outbound|5432||{HOST}"))["sni"] == "db.internal"
    assert _context(_socket(state, f"outbound|80|secure|{HOST}"))["sni"] == "secure.internal"


def test_istio_mutual_takes_the_rules_own_names_and_sni() -> None:
    state = _state({"mode": "ISTIO_MUTUAL", "sni": "x.local", "subjectAltNames": ["spiffe://a"]})
    context = _context(_socket(state, f"outbound|80||{HOST}"))
    assert context["sni"] == "x.local"
    validation = context["common_tls_context"]["combined_validation_context"]
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://a"}}
    ]
    assert validation["validation_context_sds_secret_config"]["name"] == "ROOTCA"


def test_a_gateway_gets_its_rules_credentials_from_the_secrets_of_its_namespace() -> None:
    tls = {"mode": "MUTUAL", "credentialName": "c"}
    opened = {
        ("edge", "c"): {"tls.crt": b"C", "tls.key": b"K", "ca.crt": b"A"},
        ("other", "g"): {"cert": b"C2", "key": b"K2"},
        ("other", "g-cacert"): {"cacert": b"B"},
    }
    state = dataclasses.replace(_state(tls), credentials=opened)
    secrets = build_snapshot(state, Proxy(kind="gateway", namespace="edge")).secrets
    assert [(s["name"], sorted(s)) for s in secrets] == [
        ("kubernetes://c", ["@type", "name", "tls_certificate"]),
        ("kubernetes://c-cacert", ["@type", "name", "validation_context"]),
    ]
    assert secrets[0]["tls_certificate"] == {
        "certificate_chain": {"inline_string": "C"}, "private_key": {"inline_string": "K"},
    }  # fmt: skip
    assert secrets[1]["validation_context"] == {"trusted_ca": {"inline_string": "A"}}
    # Istio's generic keys, the CA from the Secret <name>-cacert; only the proxy's namespace.
    state = dataclasses.replace(_state({"mode": "MUTUAL", "credentialName": "g"}),
                                credentials=opened)  # fmt: skip
    generic = build_snapshot(state, Proxy(kind="gateway", namespace="other")).secrets
    assert [s["name"] for s in generic] == ["kubernetes://g", "kubernetes://g-cacert"]
    assert generic[1]["validation_context"]["trusted_ca"]["inline_string"] == "B"
    assert build_snapshot(state, Proxy(kind="gateway", namespace="edge")).secrets == []
    # A sidecar the rule does not select takes none.
    assert build_snapshot(state, Proxy(namespace="other")).secrets == []
    assert wanted_rule_credentials(state.destination_rules) == {"g", "g-cacert"}

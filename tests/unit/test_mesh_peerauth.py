"""PeerAuthentication as Istio composes it (workload > namespace > mesh, port level over the
workload, UNSET inherits, the oldest of a level wins), and the inbound listener's filter chains
each mode gives a captured sidecar."""

from __future__ import annotations

from typing import Any

from core.api.manifests import parse_manifest
from core.mesh.envoy.build import build_snapshot
from core.mesh.envoy.model import MeshState, Proxy
from core.mesh.kinds.objects import PeerAuthentication
from core.mesh.peerauth import InboundMtls, effective_mtls


def policy(
    name: str,
    namespace: str,
    mode: str | None = None,
    *,
    selector: dict[str, str] | None = None,
    ports: dict[int, str] | None = None,
    created: str | None = None,
) -> PeerAuthentication:
    spec: dict[str, Any] = {}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports is not None:
        spec["portLevelMtls"] = {str(p): {"mode": m} for p, m in ports.items()}
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created is not None:
        meta["creationTimestamp"] = created
    found = parse_manifest({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                            "metadata": meta, "spec": spec})  # fmt: skip
    assert isinstance(found, PeerAuthentication)
    return found


WEB = {"app": "web"}


def mode(policies: list[PeerAuthentication], namespace: str = "shop") -> InboundMtls:
    return effective_mtls(policies, namespace=namespace, labels=WEB)


def test_with_no_policy_a_workload_is_permissive() -> None:
    assert mode([]) == InboundMtls(mode="PERMISSIVE", ports={})


def test_workload_over_namespace_over_mesh() -> None:
    mesh = policy("default", "istio-system", "STRICT")
    namespace = policy("default", "shop", "DISABLE")
    workload = policy("web", "shop", "PERMISSIVE", selector=WEB)
    assert mode([mesh]).mode == "STRICT"
    assert mode([mesh, namespace]).mode == "DISABLE"
    assert mode([mesh, namespace, workload]).mode == "PERMISSIVE"
    # Another namespace's policies, and a selector the workload does not match, do not apply.
    elsewhere = policy("default", "other", "DISABLE")
    unmatched = policy("db", "shop", "DISABLE", selector={"app": "db"})
    assert mode([mesh, elsewhere, unmatched]).mode == "STRICT"
    # A selector in the root namespace selects the root namespace's workloads only.
    rooted = policy("web", "istio-system", "DISABLE", selector=WEB)
    assert mode([mesh, rooted]).mode == "STRICT"
    assert mode([mesh, rooted], namespace="istio-system").mode == "DISABLE"


def test_unset_inherits_from_the_level_above() -> None:
    mesh = policy("default", "istio-system", "STRICT")
    assert mode([mesh, policy("default", "shop", "UNSET")]).mode == "STRICT"
    assert mode([mesh, policy("web", "shop", selector=WEB)]).mode == "STRICT"
    namespace = policy("default", "shop", "DISABLE")
    assert mode([mesh, namespace, policy("web", "shop", "UNSET", selector=WEB)]).mode == "DISABLE"


def test_the_oldest_policy_of_a_level_wins() -> None:
    newer = policy("a", "shop", "DISABLE", created="2026-01-02T00:00:00Z")
    older = policy("b", "shop", "STRICT", created="2026-01-01T00:00:00Z")
    assert mode([newer, older]).mode == "STRICT"


def test_port_level_over_the_workload_and_unset_ports_inherit() -> None:
    namespace = policy("default", "shop", "STRICT")
    workload = policy("web", "shop", selector=WEB,
                      ports={8080: "PERMISSIVE", 9090: "DISABLE", 7070: "UNSET"})  # fmt: skip
    found = mode([namespace, workload])
    assert found.mode == "STRICT"
    assert (found.for_port(8080), found.for_port(9090), found.for_port(7070)) == (
        "PERMISSIVE", "DISABLE", "STRICT",
    )  # fmt: skip


# -- the inbound listener -------------------------------------------------------------------


def inbound(policies: list[PeerAuthentication]) -> dict[str, Any]:
    state = MeshState(peer_authentications=policies)
    snapshot = build_snapshot(state, Proxy(namespace="shop", labels=WEB, captured=True))
    return next(x for x in snapshot.listeners if x["name"] == "virtualInbound")


def chains(listener: dict[str, Any]) -> list[tuple[Any, str, bool]]:
    """Each chain past the capture loop: (its match, its name, whether it terminates TLS)."""
    return [
        (c.get("filter_chain_match"), c["name"], "transport_socket" in c)
        for c in listener["filter_chains"][1:]
    ]


MESH_TLS = {"transport_protocol": "tls", "application_protocols": ["istio"]}


def test_strict_terminates_mesh_tls_and_has_no_plain_text_chain() -> None:
    listener = inbound([policy("default", "shop", "STRICT")])
    assert chains(listener) == [(MESH_TLS, "inbound-mtls", True)]
    assert "default_filter_chain" not in listener  # plain text matches nothing: closed
    tls = listener["filter_chains"][1]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    context = tls["common_tls_context"]
    assert [s["name"] for s in context["tls_certificate_sds_secret_configs"]] == ["default"]
    validation = context["combined_validation_context"]
    assert validation["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}
    ]


def test_permissive_takes_both_and_disable_plain_text_only() -> None:
    assert chains(inbound([])) == [
        (MESH_TLS, "inbound-mtls", True), (None, "inbound-plaintext", False),
    ]  # fmt: skip
    assert chains(inbound([policy("default", "shop", "DISABLE")])) == [
        (None, "inbound-plaintext", False)
    ]


def test_port_level_modes_get_chains_of_their_own() -> None:
    listener = inbound([
        policy("default", "shop", "STRICT"),
        policy("web", "shop", selector=WEB, ports={8080: "DISABLE"}),
    ])  # fmt: skip
    assert chains(listener) == [
        ({"destination_port": 8080}, "inbound-plaintext_8080", False),
        (MESH_TLS, "inbound-mtls", True),
    ]

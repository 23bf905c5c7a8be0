"""The proxy token's rules (``core.mesh.proxytoken``): who may sign, for which proxy, and what
the read model must say of the pod or node before the mesh-push handler serves the proxy."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from core.mesh.proxytoken import (
    ProxyClaims,
    ProxyRefused,
    binding_problem,
    ingress_pod,
    sign_token,
    token_from_metadata,
    verify_token,
)
from core.mesh.push import ads_bootstrap, node_id, parse_node_id
from streams.identity import Credentials, generate_seed

AGENTS = Credentials(generate_seed())
STRANGER = Credentials(generate_seed())
TRUSTED = {AGENTS.public_key: "node agents"}
WEB = parse_node_id(node_id(kind="sidecar", ip="10.1.0.5", pod="web-1", namespace="shop"))
CLAIMS = ProxyClaims(kind="sidecar", namespace="shop", pod="web-1", uid="u-1", node="n1")


def pod(*, node: str = "n1") -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "shop"}, "spec": {"nodeName": node}}


def test_a_token_signed_by_a_trusted_key_for_this_proxy_is_accepted() -> None:
    claims = verify_token(sign_token(AGENTS.seed, CLAIMS), node=WEB, trusted=TRUSTED)
    assert (claims.namespace, claims.pod, claims.uid, claims.node) == ("shop", "web-1", "u-1", "n1")
    assert claims.signer == AGENTS.public_key


def test_no_token_is_unauthenticated_and_says_what_to_do() -> None:
    for missing in (None, ""):
        with pytest.raises(ProxyRefused) as refused:
            verify_token(missing, node=WEB, trusted=TRUSTED)
        assert refused.value.code == "UNAUTHENTICATED"
        assert "web-1.shop" in str(refused.value) and "insecure" in str(refused.value)


def test_a_key_the_handler_does_not_trust_is_refused() -> None:
    with pytest.raises(ProxyRefused) as refused:
        verify_token(sign_token(STRANGER.seed, CLAIMS), node=WEB, trusted=TRUSTED)
    assert refused.value.code == "UNAUTHENTICATED"
    assert "does not trust" in str(refused.value)


def test_altered_claims_or_a_foreign_signature_are_forgeries() -> None:
    scheme, signer, claims_part, signature = sign_token(AGENTS.seed, CLAIMS).split(".")
    body = json.loads(base64.urlsafe_b64decode(claims_part + "=" * (-len(claims_part) % 4)))
    body["uid"] = "u-2"
    altered = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    # The stranger's signature over the same claims, presented as the agents' key's.
    foreign = sign_token(STRANGER.seed, CLAIMS).split(".")[3]
    for forged in (
        f"{scheme}.{signer}.{altered}.{signature}",
        f"{scheme}.{signer}.{claims_part}.{foreign}",
        f"{scheme}.{signer}.{claims_part}.not-base64!",
        "fleetlog-proxy-v0.a.b.c",
        "garbage",
    ):
        with pytest.raises(ProxyRefused) as refused:
            verify_token(forged, node=WEB, trusted=TRUSTED)
        assert refused.value.code == "UNAUTHENTICATED", forged


def test_a_token_speaks_only_for_the_proxy_it_was_made_for() -> None:
    other_pod = parse_node_id(node_id(kind="sidecar", ip="10.1.0.6", pod="db-1", namespace="shop"))
    other_ns = parse_node_id(node_id(kind="sidecar", ip="10.1.0.5", pod="web-1", namespace="dev"))
    as_gateway = parse_node_id(
        node_id(kind="gateway", ip="10.1.0.5", pod="web-1", namespace="shop")
    )
    token = sign_token(AGENTS.seed, CLAIMS)
    for node in (other_pod, other_ns, as_gateway):
        with pytest.raises(ProxyRefused) as refused:
            verify_token(token, node=node, trusted=TRUSTED)
        assert refused.value.code == "PERMISSION_DENIED"
        assert "web-1.shop" in str(refused.value)


def test_the_pod_must_exist_with_the_tokens_uid_on_the_tokens_node() -> None:
    assert binding_problem(CLAIMS, pod=pod(), pod_uid="u-1", node_exists=True) is None
    gone = binding_problem(CLAIMS, pod=None, node_exists=True)
    assert gone is not None and "does not exist" in gone
    recreated = binding_problem(CLAIMS, pod=pod(), pod_uid="u-2", node_exists=True)
    assert recreated is not None and "created again" in recreated
    elsewhere = binding_problem(CLAIMS, pod=pod(node="n2"), pod_uid="u-1", node_exists=True)
    assert elsewhere is not None and "'n2'" in elsewhere
    unbound = binding_problem(CLAIMS, pod=pod(node=""), pod_uid="u-1", node_exists=True)
    assert unbound is not None and "no node" in unbound


def test_a_gateway_token_is_for_its_nodes_ingress_identity_only() -> None:
    mine = ProxyClaims(kind="gateway", namespace="istio-system", pod=ingress_pod("n1"), uid="",
                       node="n1")  # fmt: skip
    assert binding_problem(mine, pod=None, node_exists=True) is None
    missing = binding_problem(mine, pod=None, node_exists=False)
    assert missing is not None and "does not exist" in missing
    borrowed = ProxyClaims(kind="gateway", namespace="istio-system", pod=ingress_pod("n2"),
                           uid="", node="n1")  # fmt: skip
    wrong = binding_problem(borrowed, pod=None, node_exists=True)
    assert wrong is not None and "ingress identity" in wrong
    elsewhere = ProxyClaims(kind="gateway", namespace="shop", pod=ingress_pod("n1"), uid="",
                            node="n1")  # fmt: skip
    assert binding_problem(elsewhere, pod=None, node_exists=True) is not None


def test_the_bootstrap_sends_the_token_as_a_bearer_credential() -> None:
    token = sign_token(AGENTS.seed, CLAIMS)
    config = ads_bootstrap(node=WEB.id, ads_host="127.0.0.1", ads_port=15010, admin_port=0,
                           token=token)  # fmt: skip
    service = config["dynamic_resources"]["ads_config"]["grpc_services"][0]
    metadata = {m["key"]: m["value"] for m in service["initial_metadata"]}
    assert token_from_metadata(metadata) == token
    plain = ads_bootstrap(node=WEB.id, ads_host="127.0.0.1", ads_port=15010, admin_port=0)
    assert "initial_metadata" not in plain["dynamic_resources"]["ads_config"]["grpc_services"][0]
    assert token_from_metadata({}) is None
    assert token_from_metadata({"authorization": "Basic abc"}) is None

"""Who an Envoy on the ADS stream is, proven: the per-proxy token the node agent signs and the
mesh-push handler checks before it serves a proxy anything.

Why this exists: a proxy names itself by its node id (``sidecar~IP~pod.ns~…``), and the handler
answers with that pod's configuration and its workload certificate and key (its SPIFFE
identity). A node id is only a claim: any process that reaches the agent's ADS relay socket or
the handler's loopback port could claim any pod and take its identity. Istio's istiod checks
the proxy's Kubernetes service-account token (bound to the pod); fleetlog's equivalent is a
token the node agent that starts the proxy signs with its node key (an ed25519 nkey, the
agents' ``agent.nk`` NATS identity or, without the NATS wall, the key ``fleetlog up`` keeps for
its own agent), naming the proxy's kind, namespace, pod, the pod's uid and the node. The
handler verifies the signature with the public keys it trusts, that the token names the same
proxy as the node id, and, against its read model, that the pod exists with that uid (a
deleted-and-recreated pod's old token is refused) and is bound to the token's node; a
gateway's token names the node's ingress identity (``istio-ingressgateway-<node>`` in
``istio-system``) and its node must exist.

The token travels in the ADS stream's gRPC metadata (``authorization: Bearer <token>``, what
Envoy's ``initial_metadata`` sends), like Istio's agent sends its JWT, not in the node metadata
the handler records and logs. Format: ``fleetlog-proxy-v1.<claims>.<signature>``, both parts
base64url without padding; the claims are canonical JSON (sorted keys), signed behind a
versioned prefix so a signature of another fleetlog scheme never passes for one.

Pure: keys are nkey strings (``SU…`` seeds to sign, ``U…`` public keys to verify); the read
model's pod and whether the node exists are passed in.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import nkeys
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from core.access.signing import SignatureRefused, public_key_bytes
from core.mesh.push import BEARER, ProxyNode
from core.mesh.push import TOKEN_METADATA as METADATA_KEY

SCHEME: Final = "fleetlog-proxy-v1"
INGRESS_NAMESPACE: Final = "istio-system"
INGRESS_PREFIX: Final = "istio-ingressgateway-"
"""A node's ingress proxy is ``istio-ingressgateway-<node>`` in ``istio-system``."""

Code = Literal["UNAUTHENTICATED", "PERMISSION_DENIED"]


class ProxyRefused(Exception):
    """A proxy the handler will not serve: ``code`` is the gRPC status (UNAUTHENTICATED when
    the proxy proved nothing, PERMISSION_DENIED when it proved an identity that may not have
    this node id); the message says what a person can do about it."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code: Code = code


@dataclass(frozen=True, kw_only=True)
class ProxyClaims:
    """What a token says: the proxy it was made for, on which node, by which key."""

    kind: Literal["sidecar", "gateway"]
    namespace: str
    pod: str
    uid: str
    """The pod's uid (empty for a gateway: no pod)."""
    node: str
    signer: str = ""
    """The public nkey (``U…``) that signed the token (filled in by :func:`verify_token`)."""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "namespace": self.namespace, "pod": self.pod,
                "uid": self.uid, "node": self.node}  # fmt: skip


def ingress_pod(node: str) -> str:
    """The name a node's ingress proxy goes by (the pod part of its node id)."""
    return f"{INGRESS_PREFIX}{node}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signed(claims_part: str) -> bytes:
    return f"{SCHEME}\n{claims_part}".encode()


def sign_token(seed: str, claims: ProxyClaims) -> str:
    """A token for ``claims``, signed with the node key ``seed`` (``SU…``)."""
    body = json.dumps(claims.as_dict(), sort_keys=True, separators=(",", ":")).encode()
    claims_part = _b64(body)
    keys = nkeys.from_seed(bytearray(seed.encode()))
    signature = keys.sign(_signed(claims_part))
    signer = keys.public_key.decode()
    return f"{SCHEME}.{signer}.{claims_part}.{_b64(signature)}"


def token_from_metadata(metadata: Mapping[str, str]) -> str | None:
    """The token in a stream's gRPC metadata (None when there is none)."""
    value = metadata.get(METADATA_KEY, "")
    if not value.startswith(BEARER):
        return None
    return value[len(BEARER) :].strip() or None


def verify_token(token: str | None, *, node: ProxyNode, trusted: Mapping[str, str]) -> ProxyClaims:
    """The claims of ``token`` if a trusted key (``trusted``: public nkey -> whose) signed it
    for the proxy ``node`` names; :class:`ProxyRefused` otherwise."""
    if not token:
        raise ProxyRefused(
            "UNAUTHENTICATED",
            f"proxy {node.name}: no proxy token (metadata {METADATA_KEY!r}): only the node "
            "agent that starts a proxy can give it one; an Envoy started by hand needs a "
            "handler in insecure mode",
        )
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != SCHEME:
        raise ProxyRefused(
            "UNAUTHENTICATED", f"proxy {node.name}: the proxy token is not a {SCHEME} token"
        )
    _, signer, claims_part, signature_part = parts
    if signer not in trusted:
        raise ProxyRefused(
            "UNAUTHENTICATED",
            f"proxy {node.name}: its token is signed by {signer[:12]}…, a key this mesh "
            "handler does not trust (the node agents' key is; is the agent of another "
            "cluster?)",
        )
    try:
        key = VerifyKey(public_key_bytes(signer))
        key.verify(_signed(claims_part), _unb64(signature_part))
        raw: Any = json.loads(_unb64(claims_part))
    except (SignatureRefused, BadSignatureError, ValueError, TypeError) as error:
        raise ProxyRefused(
            "UNAUTHENTICATED",
            f"proxy {node.name}: its token's signature does not match its claims (forged or "
            "altered)",
        ) from error
    if not isinstance(raw, dict) or raw.get("kind") not in ("sidecar", "gateway"):
        raise ProxyRefused("UNAUTHENTICATED", f"proxy {node.name}: malformed token claims")
    claims = ProxyClaims(
        kind=raw["kind"],
        namespace=str(raw.get("namespace") or ""),
        pod=str(raw.get("pod") or ""),
        uid=str(raw.get("uid") or ""),
        node=str(raw.get("node") or ""),
        signer=signer,
    )
    if (claims.kind, claims.namespace, claims.pod) != (node.kind, node.namespace, node.pod):
        raise ProxyRefused(
            "PERMISSION_DENIED",
            f"proxy {node.name} ({node.kind}) presents the token of {claims.pod}."
            f"{claims.namespace} ({claims.kind}): a token speaks only for the proxy it was "
            "made for",
        )
    return claims


def binding_problem(
    claims: ProxyClaims,
    *,
    pod: Mapping[str, Any] | None,
    pod_uid: str = "",
    node_exists: bool,
) -> str | None:
    """Why the read model does not back ``claims`` (None: it does). A sidecar's pod must exist
    with the token's uid and be bound to the token's node; a gateway's name must be its
    node's ingress identity, and the node must exist."""
    if claims.kind == "gateway":
        if claims.namespace != INGRESS_NAMESPACE or claims.pod != ingress_pod(claims.node):
            return (
                f"gateway {claims.pod}.{claims.namespace} is not node {claims.node!r}'s "
                f"ingress identity ({ingress_pod(claims.node)}.{INGRESS_NAMESPACE})"
            )
        if not node_exists:
            return f"node {claims.node!r} of gateway {claims.pod} does not exist"
        return None
    if pod is None:
        return (
            f"pod {claims.pod}.{claims.namespace} does not exist (deleted? its sidecar should "
            "stop with it)"
        )
    if pod_uid != claims.uid:
        return (
            f"pod {claims.pod}.{claims.namespace} is not the pod the token was made for (uid "
            f"{pod_uid or '?'}, the token's {claims.uid or '?'}): it was deleted and created "
            "again; the old pod's proxy must stop"
        )
    bound = str((pod.get("spec") or {}).get("nodeName") or "")
    if bound != claims.node:
        return (
            f"pod {claims.pod}.{claims.namespace} is bound to "
            f"{repr(bound) if bound else 'no node'}, not to {claims.node!r} whose agent "
            "signed the token"
        )
    return None

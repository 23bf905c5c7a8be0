"""TLS transport sockets: the mesh's mTLS both ways (:func:`upstream_mtls`,
:func:`downstream_mtls`, each service's SPIFFE identities), a DestinationRule's SIMPLE /
MUTUAL origination (:func:`upstream_tls`), and a Gateway server's terminated TLS.

Why this exists: how certificates are presented and verified (SDS names, SANs, SPKI and hash
pins, protocol versions) is the security-sensitive part of the configuration; it is kept in one
place, apart from the clusters and listeners that carry it, so it can be read and tested as a
whole.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from core.mesh import checks
from core.mesh.envoy.model import MeshState
from core.mesh.envoy.names import (
    ADS_SOURCE,
    CERT_SECRET,
    DOWNSTREAM_TLS_TYPE,
    MESH_ALPN,
    ROOT_SECRET,
    TRUST_DOMAIN,
    UPSTREAM_TLS_TYPE,
    fqdn,
    spiffe_id,
)
from core.mesh.envoy.secrets import (
    CACERT_SUFFIX,
    CREDENTIAL_PREFIX,
    credential_ca_resource,
    credential_resource,
)
from core.mesh.kinds.gateway import Server, ServerTLSSettings
from core.mesh.kinds.trafficpolicy import ClientTLSSettings

SYSTEM_ROOTS: Final = "/etc/ssl/certs/ca-certificates.crt"
"""The proxy's system trust store (Debian's path, Istio's default on its proxy image): what
SIMPLE/MUTUAL verify the server with when no ``caCertificates`` are named."""


def sds_secret(name: str) -> dict[str, Any]:
    """A secret Envoy asks for over SDS, on the ADS stream."""
    return {"name": name, "sds_config": copy.deepcopy(ADS_SOURCE)}


def upstream_mtls(identities: Sequence[str], *, sni: str = "") -> dict[str, Any]:
    """Istio's ISTIO_MUTUAL transport socket: the proxy's own certificate, the peer verified
    against the mesh's root and (when known) the destination's SPIFFE ids."""
    validation: dict[str, Any] = {}
    if identities:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": identity}} for identity in identities
        ]
    context: dict[str, Any] = {
        "@type": UPSTREAM_TLS_TYPE,
        "common_tls_context": {
            "alpn_protocols": [MESH_ALPN],
            "tls_certificate_sds_secret_configs": [sds_secret(CERT_SECRET)],
            "combined_validation_context": {
                "default_validation_context": validation,
                "validation_context_sds_secret_config": sds_secret(ROOT_SECRET),
            },
        },
    }
    if sni:
        context["sni"] = sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def downstream_mtls() -> dict[str, Any]:
    """The inbound side: the proxy's certificate, a client certificate required and signed by
    the mesh's root with an identity of the trust domain (Istio checks no more by default)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS_TYPE,
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [sds_secret(CERT_SECRET)],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [
                            {"san_type": "URI",
                             "matcher": {"prefix": f"spiffe://{TRUST_DOMAIN}/"}}
                        ]
                    },
                    "validation_context_sds_secret_config": sds_secret(ROOT_SECRET),
                },
            },
        },
    }  # fmt: skip


def _san_matchers(names: Sequence[str]) -> list[dict[str, Any]]:
    """``subjectAltNames`` as Envoy's typed matchers: a name with a scheme is a URI SAN, an
    address an IP SAN, anything else a DNS SAN (Envoy compares each against SANs of its
    type only)."""
    found = []
    for name in names:
        if "://" in name:
            kind = "URI"
        elif checks.is_ip(name):
            kind = "IP_ADDRESS"
        else:
            kind = "DNS"
        found.append({"san_type": kind, "matcher": {"exact": name}})
    return found


def upstream_tls(tls: ClientTLSSettings, *, credentials: bool) -> dict[str, Any]:
    """Istio's TLS origination (DestinationRule ``tls.mode`` SIMPLE or MUTUAL): the server is
    verified against ``caCertificates`` (a file on the proxy), the ``credentialName``'s
    ``-cacert`` over SDS when ``credentials`` (a gateway, or a sidecar the rule's
    ``workloadSelector`` picks: Istio's rule), or the system's roots (Istio verifies by
    default, ``VERIFY_CERTIFICATE_AT_CLIENT``); ``insecureSkipVerify`` verifies nothing.
    MUTUAL presents ``clientCertificate``/``privateKey`` (files) or the credential's."""
    common: dict[str, Any] = {}
    named = bool(tls.credential_name) and credentials
    if tls.mode == "MUTUAL":
        if named:
            common["tls_certificate_sds_secret_configs"] = [
                sds_secret(credential_resource(str(tls.credential_name)))
            ]
        elif tls.client_certificate and tls.private_key:
            common["tls_certificates"] = [
                {"certificate_chain": {"filename": tls.client_certificate},
                 "private_key": {"filename": tls.private_key}}
            ]  # fmt: skip
    if not tls.insecure_skip_verify:
        validation: dict[str, Any] = {}
        if tls.subject_alt_names:
            validation["match_typed_subject_alt_names"] = _san_matchers(tls.subject_alt_names)
        if named:
            common["combined_validation_context"] = {
                "default_validation_context": validation,
                "validation_context_sds_secret_config": sds_secret(
                    credential_ca_resource(str(tls.credential_name))
                ),
            }
        else:
            validation["trusted_ca"] = {"filename": tls.ca_certificates or SYSTEM_ROOTS}
            common["validation_context"] = validation
    context: dict[str, Any] = {"@type": UPSTREAM_TLS_TYPE, "common_tls_context": common}
    if tls.sni:
        context["sni"] = tls.sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def service_identities(state: MeshState) -> dict[str, tuple[str, ...]]:
    """Each Service's host -> the SPIFFE ids of its meshed pods (those its selector picks):
    what a client's sidecar accepts from the other end. From the selector, not the slices, so
    a pod's readiness changing leaves the clusters alone."""
    by_namespace: dict[str, list[tuple[Mapping[str, str], str]]] = {}
    for (namespace, pod), account in state.meshed_pods.items():
        labels = state.pod_labels.get((namespace, pod), {})
        by_namespace.setdefault(namespace, []).append((labels, account))
    found: dict[str, tuple[str, ...]] = {}
    for service in state.services if by_namespace else ():
        meta = service.get("metadata") or {}
        selector = (service.get("spec") or {}).get("selector") or {}
        namespace = meta.get("namespace") or "default"
        if not selector or not meta.get("name") or namespace not in by_namespace:
            continue
        ids = sorted({
            spiffe_id(namespace, account)
            for labels, account in by_namespace[namespace]
            if all(labels.get(k) == v for k, v in selector.items())
        })  # fmt: skip
        if ids:
            found[fqdn(meta["name"], namespace)] = tuple(ids)
    return found


TLS_VERSIONS: Final = {
    "TLS_AUTO": "TLS_AUTO", "TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1",
    "TLSV1_2": "TLSv1_2", "TLSV1_3": "TLSv1_3",
}  # fmt: skip
"""Istio's ``minProtocolVersion``/``maxProtocolVersion`` names as Envoy's ``tls_params``."""


def _peer_checks(tls: ServerTLSSettings) -> dict[str, Any]:
    """A mutual server's checks of the client certificate beyond its chain, as Envoy's
    validation context spells them: ``subjectAltNames`` (typed SAN matchers),
    ``verifyCertificateSpki`` and ``verifyCertificateHash``."""
    peer: dict[str, Any] = {}
    if tls.subject_alt_names:
        peer["match_typed_subject_alt_names"] = _san_matchers(tls.subject_alt_names)
    if tls.verify_certificate_spki:
        peer["verify_certificate_spki"] = list(tls.verify_certificate_spki)
    if tls.verify_certificate_hash:
        peer["verify_certificate_hash"] = list(tls.verify_certificate_hash)
    return peer


def _server_tls(server: Server, secrets: Mapping[str, Any]) -> dict[str, Any] | None:
    """The DownstreamTlsContext of a server that terminates TLS: SIMPLE, MUTUAL and
    OPTIONAL_MUTUAL present their certificate over SDS (``credentialName``) or from files and
    the mutual ones verify a client's against the server's CA; ISTIO_MUTUAL presents the
    gateway's own workload certificate (SDS ``default``) and verifies the client's against
    the mesh's root (``ROOTCA``). MUTUAL and ISTIO_MUTUAL require a client certificate,
    OPTIONAL_MUTUAL asks for one and verifies it only when sent. None when the credential is
    missing (the server is left out rather than a listener warming forever)."""
    tls = server.tls
    assert tls is not None
    mutual = tls.mode != "SIMPLE"
    peer = _peer_checks(tls) if mutual else {}
    common: dict[str, Any] = {}
    trust: str | None = None  # the SDS secret of the CA client certificates must chain to
    if tls.mode == "ISTIO_MUTUAL":
        common["tls_certificate_sds_secret_configs"] = [sds_secret(CERT_SECRET)]
        trust = ROOT_SECRET
    elif tls.credential_name:
        name = CREDENTIAL_PREFIX + tls.credential_name
        if name not in secrets or (mutual and name + CACERT_SUFFIX not in secrets):
            return None
        common["tls_certificate_sds_secret_configs"] = [sds_secret(name)]
        if mutual:
            trust = name + CACERT_SUFFIX
    else:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": tls.server_certificate},
             "private_key": {"filename": tls.private_key}}
        ]  # fmt: skip
        if mutual:
            common["validation_context"] = {
                "trusted_ca": {"filename": tls.ca_certificates},
                **peer,
            }
    if trust is not None and peer:
        common["combined_validation_context"] = {
            "default_validation_context": peer,
            "validation_context_sds_secret_config": sds_secret(trust),
        }
    elif trust is not None:
        common["validation_context_sds_secret_config"] = sds_secret(trust)
    params: dict[str, Any] = {}
    if tls.min_protocol_version in TLS_VERSIONS:
        params["tls_minimum_protocol_version"] = TLS_VERSIONS[tls.min_protocol_version]
    if tls.max_protocol_version in TLS_VERSIONS:
        params["tls_maximum_protocol_version"] = TLS_VERSIONS[tls.max_protocol_version]
    if tls.cipher_suites:
        params["cipher_suites"] = list(tls.cipher_suites)
    if params:
        common["tls_params"] = params
    if checks.protocol_of(server.port.protocol if server.port else "") == "https":
        common["alpn_protocols"] = ["h2", "http/1.1"]
    context: dict[str, Any] = {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": common}
    if tls.mode in ("MUTUAL", "ISTIO_MUTUAL"):
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}

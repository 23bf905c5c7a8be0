"""SDS secrets: the proxy's own identity (``default``, ``ROOTCA``), and the credentials Gateways
and DestinationRules name by ``credentialName`` (``kubernetes://<name>``, its client CA
``kubernetes://<name>-cacert``), made from the Secrets the handler opened.

Why this exists: which credentials a proxy needs decides both what the handler opens (the
``wanted_*`` functions, read by its read model) and what the proxy is sent; keeping the naming
and the selection together keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from core.mesh.envoy.model import MeshState, Proxy
from core.mesh.envoy.names import CERT_SECRET, ROOT_SECRET, SECRET_TYPE
from core.mesh.kinds.objects import DestinationRule, Gateway


def credential_resource(name: str) -> str:
    """Istio's SDS name of a ``credentialName``'s certificate and key."""
    return f"{CREDENTIAL_PREFIX}{name}"


def credential_ca_resource(name: str) -> str:
    """Istio's SDS name of a ``credentialName``'s CA certificates (``<name>-cacert``)."""
    return f"{CREDENTIAL_PREFIX}{name}{CACERT_SUFFIX}"


def mesh_secrets(*, cert_pem: str, key_pem: str, root_pem: str) -> list[dict[str, Any]]:
    """The SDS secrets of a proxy, named as Istio names them: ``default`` (its certificate
    and key) and ``ROOTCA`` (the trust bundle)."""
    return [
        {"@type": SECRET_TYPE, "name": CERT_SECRET,
         "tls_certificate": {"certificate_chain": {"inline_string": cert_pem},
                             "private_key": {"inline_string": key_pem}}},
        {"@type": SECRET_TYPE, "name": ROOT_SECRET,
         "validation_context": {"trusted_ca": {"inline_string": root_pem}}},
    ]  # fmt: skip


def rule_credentials(state: MeshState, proxy: Proxy) -> list[dict[str, Any]]:
    """The SDS secrets of the ``credentialName``s ``proxy``'s DestinationRules use
    (:func:`credential_names`), from the Secrets of the proxy's namespace (Istio reads them
    there): the certificate and key (``kubernetes://<name>``) when the Secret has both, its
    CA (``kubernetes://<name>-cacert``) from its own CA key or the Secret ``<name>-cacert``.
    One missing: Envoy waits for it (the cluster does not warm; its requests fail)."""
    found: list[dict[str, Any]] = []
    for name in sorted(credential_names(state.destination_rules, proxy)):
        data = state.credentials.get((proxy.namespace, name), {})
        companion = state.credentials.get((proxy.namespace, name + CACERT_SUFFIX), {})
        secret = credential_secret(credential_resource(name), data)
        ca = credential_ca_secret(credential_ca_resource(name), data) or credential_ca_secret(
            credential_ca_resource(name), companion
        )
        found += [s for s in (secret, ca) if s is not None]
    return found


def wanted_rule_credentials(rules: Sequence[DestinationRule]) -> set[str]:
    """The Secret names the DestinationRules' ``credentialName``s (and their ``-cacert``
    companions) need opened, in whichever namespace a proxy using them runs."""
    names = credential_names(rules)
    return names | {name + CACERT_SUFFIX for name in names}


def uses_credentials(rule: DestinationRule, proxy: Proxy | None) -> bool:
    """Whether ``proxy`` takes a ``credentialName`` of ``rule`` over SDS: Istio's rule — a
    gateway always; a sidecar only when the rule has a ``workloadSelector`` that picks it
    (in its namespace); other sidecars keep the certificate paths."""
    if proxy is None:
        return False
    if proxy.kind == "gateway":
        return True
    selector = rule.spec.workload_selector
    return (
        selector is not None
        and (rule.metadata.namespace or "default") == proxy.namespace
        and all(proxy.labels.get(k) == v for k, v in selector.match_labels.items())
    )


def credential_names(rules: Sequence[DestinationRule], proxy: Proxy | None = None) -> set[str]:
    """The ``credentialName``s of ``rules`` (every level: top, port, subset) that ``proxy``
    takes over SDS (every one when ``proxy`` is None)."""
    found: set[str] = set()
    for rule in rules:
        if proxy is not None and not uses_credentials(rule, proxy):
            continue
        top = rule.spec.traffic_policy
        for policy in [top, *(subset.traffic_policy for subset in rule.spec.subsets)]:
            if policy is None:
                continue
            for part in [policy, *policy.port_level_settings]:
                if part.tls is not None and part.tls.credential_name:
                    found.add(part.tls.credential_name)
    return found


CREDENTIAL_PREFIX: Final = "kubernetes://"
"""Istio's SDS name of a gateway's ``credentialName``: ``kubernetes://<name>``, the Secret of
that name in the gateway's namespace; its client CA is ``kubernetes://<name>-cacert``."""
CACERT_SUFFIX: Final = "-cacert"


CREDENTIAL_MODES: Final = frozenset({"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"})
"""Modes whose certificate is the server's own (``credentialName`` or files): ISTIO_MUTUAL
presents the gateway's workload certificate instead."""
CLIENT_CA_MODES: Final = frozenset({"MUTUAL", "OPTIONAL_MUTUAL"})
"""Modes that verify a client certificate against the server's own CA (``<name>-cacert``)."""


def wanted_credentials(gateways: Iterable[Gateway]) -> set[tuple[str, str]]:
    """The Secrets ``(namespace, name)`` the Gateways' servers name by ``credentialName`` (in
    the Gateway's namespace, where Istio reads them), with each MUTUAL server's separate CA
    Secret ``<name>-cacert``: what the handler must open for the builder."""
    wanted: set[tuple[str, str]] = set()
    for namespace, name, mode in _credential_servers(gateways):
        wanted.add((namespace, name))
        if mode in CLIENT_CA_MODES:
            wanted.add((namespace, name + CACERT_SUFFIX))
    return wanted


def _credential_servers(gateways: Iterable[Gateway]) -> Iterator[tuple[str, str, str]]:
    """``(namespace, credentialName, mode)`` of every server that terminates TLS with a
    certificate named by ``credentialName`` (read from the Gateway's namespace)."""
    for gateway in gateways:
        namespace = gateway.metadata.namespace or "default"
        for server in gateway.spec.servers:
            tls = server.tls
            if tls is not None and tls.credential_name and tls.mode in CREDENTIAL_MODES:
                yield namespace, tls.credential_name, tls.mode


def _first(data: Mapping[str, bytes], *keys: str) -> str | None:
    for key in keys:
        if key in data:
            return data[key].decode()
    return None


def credential_secret(name: str, data: Mapping[str, bytes]) -> dict[str, Any] | None:
    """A Secret's data as the SDS secret ``name`` holding a certificate and its key:
    ``tls.crt``/``tls.key`` (``kubernetes.io/tls``) or Istio's generic ``cert``/``key``; None
    when it has neither pair."""
    cert, key = _first(data, "tls.crt", "cert"), _first(data, "tls.key", "key")
    if cert is None or key is None:
        return None
    return {"@type": SECRET_TYPE, "name": name,
            "tls_certificate": {"certificate_chain": {"inline_string": cert},
                                "private_key": {"inline_string": key}}}  # fmt: skip


def credential_ca_secret(name: str, data: Mapping[str, bytes]) -> dict[str, Any] | None:
    """A Secret's CA bundle (``ca.crt``, or Istio's generic ``cacert``) as the SDS secret
    ``name`` validating peers' certificates; None when it has none."""
    ca = _first(data, "ca.crt", "cacert")
    if ca is None:
        return None
    return {"@type": SECRET_TYPE, "name": name,
            "validation_context": {"trusted_ca": {"inline_string": ca}}}  # fmt: skip


def _credential_secrets(state: MeshState, gateways: Sequence[Gateway]) -> dict[str, Any]:
    """SDS name -> secret, for the gateways' servers whose credentials the state holds."""
    found: dict[str, Any] = {}
    for namespace, name, mode in _credential_servers(gateways):
        data = state.credentials.get((namespace, name))
        if data is None:
            continue
        secret = credential_secret(CREDENTIAL_PREFIX + name, data)
        if secret is None:
            continue
        if mode in CLIENT_CA_MODES:
            # The CA in the same Secret (``ca.crt``) or in ``<name>-cacert``, as Istio.
            ca_name = CREDENTIAL_PREFIX + name + CACERT_SUFFIX
            ca = credential_ca_secret(ca_name, data) or credential_ca_secret(
                ca_name, state.credentials.get((namespace, name + CACERT_SUFFIX), {})
            )
            if ca is None:
                continue
            found[ca_name] = ca
        found[secret["name"]] = secret
    return found

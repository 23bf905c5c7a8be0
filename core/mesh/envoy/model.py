"""What the mesh builder reads and returns: the proxy asking (:class:`Proxy`), the state it is
built from (:class:`MeshState`), the result (:class:`Snapshot`), and the services as the mesh
sees them (:func:`mesh_services`: Services and ServiceEntries with each port's protocol).

Why this exists: every builder module takes these inputs, and which DestinationRule and
traffic policy apply to a host, and which VirtualServices bind to a Gateway or the mesh, are
questions the clusters, endpoints, routes and gateways all ask; they live below all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, Literal

from core.mesh import checks
from core.mesh.envoy.names import fqdn
from core.mesh.kinds.objects import (
    DestinationRule,
    Gateway,
    PeerAuthentication,
    ServiceEntry,
    VirtualService,
)
from core.mesh.kinds.trafficpolicy import TrafficPolicy
from core.mesh.peerauth import InboundMtls, effective_mtls

HTTP_PORT_PREFIXES: Final = ("http", "http2", "grpc", "grpc-web", "http_proxy")


@dataclass(frozen=True, kw_only=True)
class Proxy:
    """The proxy a snapshot is for."""

    kind: Literal["sidecar", "gateway"] = "sidecar"
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    """A gateway's pod labels: the Gateways whose ``selector`` they match are its own."""
    bind_address: str = "0.0.0.0"
    """Where listeners listen: all addresses, or loopback in tests."""
    captured: bool = False
    """A sidecar whose pod's outbound TCP is redirected to it (Istio's ``INTERCEPTION_MODE``
    ``REDIRECT``): it gets the ``virtualOutbound`` listener on :data:`OUTBOUND_PORT` and its
    virtual listeners bind no port, as Istio's do."""
    locality: str = ""
    """``region/zone/subzone`` of the proxy's node (Envoy's ``node.locality``): what
    ``localityLbSetting`` prefers and fails over from."""
    on_demand: bool = False
    """A sidecar whose virtual hosts come on demand (VHDS, ``core.mesh.vhds``: its stream is
    delta xDS): its route configurations hold none and name the VHDS source, its connection
    managers run the ``on_demand`` filter. A gateway's stay whole."""


@dataclass(frozen=True, kw_only=True)
class MeshState:
    """What the builder reads: manifests of Services and EndpointSlices as the read model holds
    them, the pods' labels (for subsets), and the Istio objects."""

    services: Sequence[Mapping[str, Any]] = ()
    slices: Sequence[Mapping[str, Any]] = ()
    pod_labels: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    """``(namespace, pod name)`` -> labels."""
    virtual_services: Sequence[VirtualService] = ()
    destination_rules: Sequence[DestinationRule] = ()
    gateways: Sequence[Gateway] = ()
    service_entries: Sequence[ServiceEntry] = ()
    peer_authentications: Sequence[PeerAuthentication] = ()
    meshed_pods: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """``(namespace, pod name)`` -> service account, of the pods that have a sidecar (their
    endpoints are reached over mTLS, auto mTLS)."""
    credentials: Mapping[tuple[str, str], Mapping[str, bytes]] = field(default_factory=dict)
    """``(namespace, Secret name)`` -> its data, opened (Secrets are sealed in the log): the
    Secrets Gateways name by ``credentialName`` (:func:`wanted_credentials`), which the
    handler opens."""
    node_localities: Mapping[str, str] = field(default_factory=dict)
    """node name -> ``region/zone/subzone`` from its topology labels (:func:`locality_of`):
    an endpoint's locality is its node's."""

    def inbound_mtls(self, namespace: str, labels: Mapping[str, str]) -> InboundMtls:
        return effective_mtls(self.peer_authentications, namespace=namespace, labels=labels)

    @cached_property
    def rules_by_host(self) -> dict[str, DestinationRule]:
        """Each host's DestinationRule (:func:`rules_by_host`), once per state: every service
        port, subset and route asks."""
        return rules_by_host(self.destination_rules)

    @cached_property
    def mesh_virtual_services(self) -> dict[str, VirtualService]:
        """Each host's VirtualService for the sidecars (bound to ``mesh``): the first by
        namespace and name claims it, as Istio merges none for sidecars."""
        found: dict[str, VirtualService] = {}
        ordered = sorted(
            self.virtual_services,
            key=lambda v: (v.metadata.namespace or "", v.metadata.name or ""),
        )
        for vs in ordered:
            if _bound_to(vs, None):
                for host in _vs_hosts(vs):
                    found.setdefault(host, vs)
        return found


@dataclass(frozen=True)
class Snapshot:
    """One proxy's resources, in the order Envoy needs them applied."""

    clusters: list[dict[str, Any]]
    endpoints: list[dict[str, Any]]
    listeners: list[dict[str, Any]]
    routes: list[dict[str, Any]]
    secrets: list[dict[str, Any]] = field(default_factory=list)
    """SDS secrets: a gateway's credentials (``kubernetes://<credentialName>``) from the
    state's opened Secrets; the proxy's identity (``default``, ``ROOTCA``) is issued by the
    handler, and added here for :func:`static_bootstrap`."""
    virtual_hosts: list[dict[str, Any]] = field(default_factory=list)
    """An on-demand sidecar's VHDS resources (every host it may ask for; the handler sends
    each only to a proxy that asked, ``core.mesh.vhds``)."""


@dataclass(frozen=True, kw_only=True)
class MeshPort:
    number: int
    name: str
    protocol: str
    """``http`` or ``tcp``: how the listener handles it."""
    tls: bool = False
    """A TLS or HTTPS port (proxied as TCP): ``tls`` routes pick its destination by SNI."""


@dataclass(frozen=True, kw_only=True)
class MeshService:
    """A Service (or a ServiceEntry host) with what the builder needs."""

    host: str
    namespace: str
    name: str
    address: str | None
    ports: tuple[MeshPort, ...]
    resolution: str = "EDS"
    """``EDS`` (a Service, a STATIC entry), ``DNS``, ``DNS_ROUND_ROBIN`` or ``NONE``."""


def port_protocol(name: str, app_protocol: str | None, protocol: str = "TCP") -> str:
    """Istio's explicit protocol selection, reduced to what the listener does: ``http``,
    ``tcp``, or ``auto`` — no protocol given (an unnamed port, an unknown prefix), so the
    listener sniffs it as Istio does (UDP is not proxied)."""
    if protocol == "UDP":
        return "udp"
    chosen = (app_protocol or name.split("-", 1)[0]).lower()
    if chosen in HTTP_PORT_PREFIXES or chosen in ("kubernetes.io/h2c", "kubernetes.io/ws"):
        return "http"
    if chosen in checks.PROTOCOLS:
        return "tcp"
    return "auto"


def is_tls_port(name: str, app_protocol: str | None) -> bool:
    """Whether Istio's explicit protocol selection makes the port TLS (``https``, ``tls``)."""
    return (app_protocol or name.split("-", 1)[0]).lower() in checks.TLS_PROTOCOLS


def mesh_services(state: MeshState) -> list[MeshService]:
    """The Services with a ClusterIP, and the ServiceEntries' hosts, in a stable order."""
    found: list[MeshService] = []
    for service in state.services:
        meta = service.get("metadata") or {}
        spec = service.get("spec") or {}
        address = spec.get("clusterIP")
        if spec.get("type") == "ExternalName" or not address or address == "None":
            continue
        namespace = meta.get("namespace") or "default"
        ports = tuple(
            MeshPort(
                number=int(port["port"]),
                name=port.get("name") or "",
                protocol=port_protocol(
                    port.get("name") or "", port.get("appProtocol"), port.get("protocol", "TCP")
                ),
                tls=is_tls_port(port.get("name") or "", port.get("appProtocol")),
            )
            for port in spec.get("ports") or ()
        )
        found.append(
            MeshService(host=fqdn(meta["name"], namespace), namespace=namespace,
                        name=meta["name"], address=str(address), ports=ports)
        )  # fmt: skip
    for entry in state.service_entries:
        spec = entry.spec
        ports = tuple(
            MeshPort(
                number=p.number,
                name=p.name,
                protocol=port_protocol(p.name, p.protocol),
                tls=is_tls_port(p.name, p.protocol),
            )
            for p in spec.ports
        )
        resolution = "EDS" if spec.resolution == "STATIC" else spec.resolution
        for host in spec.hosts:
            found.append(
                MeshService(
                    host=host, namespace=entry.metadata.namespace or "default",
                    name=entry.metadata.name or "", address=next(iter(spec.addresses), None),
                    ports=ports, resolution=resolution,
                )
            )  # fmt: skip
    return sorted(found, key=lambda s: s.host)


def rules_by_host(rules: Sequence[DestinationRule]) -> dict[str, DestinationRule]:
    """Each host's DestinationRule (the oldest name first when several claim it)."""
    found: dict[str, DestinationRule] = {}
    for rule in sorted(rules, key=lambda r: (r.metadata.namespace or "", r.metadata.name or "")):
        found.setdefault(fqdn(rule.spec.host, rule.metadata.namespace or "default"), rule)
    return found


Rules = Sequence[DestinationRule] | Mapping[str, DestinationRule]
"""DestinationRules as stored, or already indexed by host (:attr:`MeshState.rules_by_host`:
a build asks for every service port's, so it indexes them once)."""


def _rule_for(host: str, rules: Rules) -> DestinationRule | None:
    """The DestinationRule of ``host`` (the oldest name first when several claim it)."""
    index = rules if isinstance(rules, Mapping) else rules_by_host(rules)
    return index.get(host)


def _merged(base: TrafficPolicy | None, override: TrafficPolicy | None) -> TrafficPolicy | None:
    """A subset's policy over its rule's, field by field (Istio's ``MergeTrafficPolicy``)."""
    if override is None:
        return base
    if base is None:
        return override
    update = {
        name: getattr(override, name)
        for name in ("load_balancer", "connection_pool", "outlier_detection", "tls")
        if getattr(override, name) is not None
    }
    if override.port_level_settings:
        update["port_level_settings"] = override.port_level_settings
    return base.model_copy(update=update)


def _is_entry(service: MeshService, state: MeshState) -> bool:
    return any(service.host in e.spec.hosts for e in state.service_entries)


def _vs_hosts(vs: VirtualService) -> list[str]:
    namespace = vs.metadata.namespace or "default"
    return [fqdn(host, namespace) for host in vs.spec.hosts]


def _bound_to(vs: VirtualService, gateway: Gateway | None) -> bool:
    """Whether a VirtualService applies to the mesh's sidecars (gateway None) or to a Gateway."""
    names = vs.spec.gateways
    if gateway is None:
        return not names or "mesh" in names
    gw_ns = gateway.metadata.namespace or "default"
    vs_ns = vs.metadata.namespace or "default"
    wanted = {f"{gw_ns}/{gateway.metadata.name}"}
    if gw_ns == vs_ns:
        wanted.add(gateway.metadata.name or "")
    return any(name in wanted for name in names)

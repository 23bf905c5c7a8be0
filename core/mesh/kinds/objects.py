"""Istio's kinds as stored objects: VirtualService, DestinationRule, Gateway, ServiceEntry and
PeerAuthentication, each its spec under Kubernetes' metadata, stored as written.

Why this exists: the catalog, the gateway's admission and the builder take these classes; each
is one spec (from its own module) under the shared object behaviour (``_IstioKind``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_validator,
)

from core.mesh import checks
from core.mesh.kinds.common import (
    NETWORKING_VERSION,
    SECURITY_VERSION,
    Port,
    WorkloadSelector,
    _add_all,
)
from core.mesh.kinds.destinationrule import DestinationRuleSpec
from core.mesh.kinds.virtualservice import VirtualServiceSpec
from core.meta.model import K8sModel, Problems
from core.meta.names import dns1123_label_errors, label_problems
from core.meta.types import ResourceBase

# ------------------------------------------------------------------------------------------
# Gateway and ServiceEntry
# ------------------------------------------------------------------------------------------


ServerTLSMode = Literal[
    "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
]


class ServerTLSSettings(K8sModel):
    https_redirect: bool = False
    mode: ServerTLSMode = "PASSTHROUGH"
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = []
    verify_certificate_spki: list[str] = []
    verify_certificate_hash: list[str] = []
    min_protocol_version: str | None = None
    max_protocol_version: str | None = None
    cipher_suites: list[str] = []

    def problems(self) -> Problems:
        """``validateTLSOptions``: ISTIO_MUTUAL brings its own certificates; SIMPLE, MUTUAL and
        OPTIONAL_MUTUAL need a ``credentialName`` or the certificate files (the two mutual
        modes a client CA too, and Istio names both "MUTUAL TLS" in its messages)."""
        found = Problems()
        if self.mode == "ISTIO_MUTUAL":
            for value, what, name in (
                (self.server_certificate, "server certificate", "serverCertificate"),
                (self.private_key, "private key", "privateKey"),
                (self.ca_certificates, "CA bundle", "caCertificates"),
                (self.credential_name, "credentialName", "credentialName"),
            ):
                if value:
                    found.add(f"ISTIO_MUTUAL TLS cannot have associated {what}", name)
            return found
        if self.mode not in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") or self.credential_name:
            return found
        prefix = "SIMPLE" if self.mode == "SIMPLE" else "MUTUAL"
        if prefix == "MUTUAL" and not self.ca_certificates:
            found.add("MUTUAL TLS requires a client CA bundle", "caCertificates")
        if not self.server_certificate:
            found.add(f"{prefix} TLS requires a server certificate", "serverCertificate")
        if not self.private_key:
            found.add(f"{prefix} TLS requires a private key", "privateKey")
        return found


class Server(K8sModel):
    port: Port | None = None
    bind: str | None = None
    hosts: list[str] = []
    tls: ServerTLSSettings | None = None
    name: str | None = None

    def problems(self) -> Problems:
        """``validateServer``."""
        found = Problems()
        if not self.hosts:
            found.add("server config must contain at least one host", "hosts")
        for index, host in enumerate(self.hosts):
            _add_all(found, _gateway_host_errors(host), "hosts", index)
        if self.port is None:
            found.add("port is required", "port")
            return found
        port_ok = True
        protocol = checks.protocol_of(self.port.protocol)
        if protocol is None:
            port_ok = False
            found.add(
                f'invalid protocol "{self.port.protocol}", supported protocols are HTTP, HTTP2, '
                "GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                "port",
                "protocol",
            )
        if messages := checks.port_errors(self.port.number):
            port_ok = False
            _add_all(found, messages, "port", "number")
        if self.port.target_port > 0:
            port_ok = False
            found.add("targetPort has no impact on Gateways", "port", "targetPort")
        if not self.port.name:
            port_ok = False
            found.add("port name must be set", "port", "name")
        if self.bind and not checks.is_ip(self.bind):
            found.add(f"{self.bind} is not a valid IP", "bind")
        if port_ok and protocol is not None:
            if protocol in checks.TLS_PROTOCOLS and self.tls is None:
                found.add("server must have TLS settings for HTTPS/TLS protocols", "tls")
            elif protocol not in checks.TLS_PROTOCOLS and self.tls is not None:
                if protocol not in checks.HTTP_PROTOCOLS:
                    found.add("server cannot have TLS settings for non HTTPS/TLS ports", "tls")
                elif not self.tls.https_redirect or (
                    self.tls.ca_certificates or self.tls.private_key or self.tls.server_certificate
                ):
                    found.add("server cannot have TLS settings for plain text HTTP ports", "tls")
        if self.tls is not None:
            found.extend(self.tls.problems().items, "tls")
        return found


def _gateway_host_errors(host: str) -> list[str]:
    """``ValidateNamespaceSlashWildcardHostname`` for a gateway: ``[ns/]host``, ``*`` allowed."""
    namespace, slash, name = host.partition("/")
    if not slash:
        namespace, name = "", host
    found = []
    if slash and (not namespace or not name):
        found.append("config namespace and dnsName in host entry cannot be empty")
    if slash and namespace not in ("*", ".") and not checks.is_dns1123_label(namespace):
        found.append(f'invalid namespace value "{namespace}" in gateway')
    if name and name != "*":
        found += checks.wildcard_domain_errors(name)
    return found


class GatewaySpec(K8sModel):
    selector: dict[str, str] = {}
    servers: list[Server] = []

    def problems(self) -> Problems:
        found = Problems()
        if not self.servers:
            found.add("gateway must have at least one server", "servers")
        names: set[str] = set()
        for index, server in enumerate(self.servers):
            found.extend(server.problems().items, "servers", index)
            if server.port is not None:
                if server.port.name in names:
                    found.add(
                        f"port names in servers must be unique: duplicate name {server.port.name}",
                        "servers",
                        index,
                        "port",
                        "name",
                    )
                names.add(server.port.name)
        return found


class WorkloadEntry(K8sModel):
    address: str = ""
    ports: dict[str, int] = {}
    labels: dict[str, str] = {}
    network: str | None = None
    locality: str | None = None
    weight: int = 0
    service_account: str | None = None


ServicePort = Port


class ServiceEntrySpec(K8sModel):
    hosts: list[str] = []
    addresses: list[str] = []
    ports: list[ServicePort] = []
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] = "NONE"
    endpoints: list[WorkloadEntry] | None = None
    workload_selector: WorkloadSelector | None = None
    export_to: list[str] = []
    subject_alt_names: list[str] = []

    def problems(self) -> Problems:
        """``ValidateServiceEntry``."""
        found = Problems()
        endpoints = self.endpoints or []
        if self.workload_selector is not None and self.endpoints is not None:
            found.add("only one of WorkloadSelector or Endpoints is allowed in Service Entry")
        if not self.hosts:
            found.add("service entry must have at least one host", "hosts")
        for index, host in enumerate(self.hosts):
            if host == "*":
                found.add(f"invalid host {host}", "hosts", index)
            else:
                _add_all(found, checks.wildcard_domain_errors(host), "hosts", index)
        cidr = False
        for index, address in enumerate(self.addresses):
            cidr = cidr or "/" in address
            _add_all(found, checks.ip_subnet_errors(address), "addresses", index)
        if cidr and self.resolution not in ("NONE", "STATIC"):
            found.add(
                "CIDR addresses are allowed only for NONE/STATIC resolution types", "addresses"
            )
        names: set[str] = set()
        numbers: set[int] = set()
        for index, port in enumerate(self.ports):
            if port.name in names:
                found.add(
                    f'service entry port name "{port.name}" already defined', "ports", index, "name"
                )
            if port.number in numbers:
                found.add(
                    f"service entry port {port.number} already defined", "ports", index, "number"
                )
            names.add(port.name)
            numbers.add(port.number)
            if port.target_port:
                _add_all(found, checks.port_errors(port.target_port), "ports", index, "targetPort")
            _add_all(found, checks.port_name_errors(port.name), "ports", index, "name")
            if port.protocol and checks.protocol_of(port.protocol) is None:
                found.add(f"unsupported protocol: {port.protocol}", "ports", index, "protocol")
            _add_all(found, checks.port_errors(port.number), "ports", index, "number")
        if self.resolution == "NONE" and endpoints:
            found.add("no endpoints should be provided for resolution type none", "endpoints")
        elif self.resolution == "STATIC":
            for index, endpoint in enumerate(endpoints):
                found.extend(
                    self._endpoint_problems(endpoint, fqdn=False).items, "endpoints", index
                )
        elif self.resolution in ("DNS", "DNS_ROUND_ROBIN"):
            if not endpoints:
                for index, host in enumerate(self.hosts):
                    if messages := checks.fqdn_errors(host):
                        found.add(
                            "hosts must be FQDN or contain only prefix wildcards if no endpoints "
                            f"are provided for resolution mode {self.resolution}, {messages[0]}",
                            "hosts",
                            index,
                        )
                        break
            if self.resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
                found.add(
                    f"there must only be 0 or 1 endpoint for resolution mode {self.resolution}",
                    "endpoints",
                )
            for index, endpoint in enumerate(endpoints):
                found.extend(self._endpoint_problems(endpoint, fqdn=True).items, "endpoints", index)
        if self.resolution != "NONE" and len(self.hosts) > 1:
            for port in self.ports:
                protocol = checks.protocol_of(port.protocol) or ""
                if protocol not in checks.HTTP_PROTOCOLS | checks.TLS_PROTOCOLS:
                    found.add("multiple hosts provided with non-HTTP, non-TLS ports", "hosts")
                    break
        return found

    def _endpoint_problems(self, endpoint: WorkloadEntry, *, fqdn: bool) -> Problems:
        """``validateWorkloadEntry`` (STATIC: addresses are IPs; DNS: IPs or host names)."""
        found = Problems()
        address = endpoint.address
        if not address:
            found.add("address is required", "address")
        elif address.startswith("unix://"):
            if endpoint.ports:
                found.add(f"unix endpoint {address} must not include ports", "ports")
        elif not checks.is_ip(address):
            if not fqdn:
                found.add(f'endpoint address "{address}" is not a valid IP address', "address")
            elif checks.fqdn_errors(address):
                found.add(
                    f'endpoint address "{address}" is not a valid FQDN or an IP address', "address"
                )
        port_names = {port.name for port in self.ports}
        for name, number in endpoint.ports.items():
            if name not in port_names:
                found.add(
                    f"endpoint port {number} is not defined by the service entry", "ports", name
                )
            _add_all(found, checks.port_name_errors(name), "ports", name)
            _add_all(found, checks.port_errors(number), "ports", name)
        found.extend(label_problems(endpoint.labels), "labels")
        return found


# ------------------------------------------------------------------------------------------
# PeerAuthentication
# ------------------------------------------------------------------------------------------

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class PeerMtls(K8sModel):
    mode: MtlsMode = "UNSET"


class PeerAuthenticationSpec(K8sModel):
    selector: WorkloadSelector | None = None
    mtls: PeerMtls | None = None
    port_level_mtls: dict[str, PeerMtls] | None = None

    @field_validator("port_level_mtls", mode="before")
    @classmethod
    def _port_keys(cls, value: object) -> object:
        # YAML reads ``8080:`` as a number, JSON (and the log) as a string: both name a port.
        if isinstance(value, dict):
            return {str(key) if isinstance(key, int) else key: v for key, v in value.items()}
        return value

    def problems(self) -> Problems:
        """``ValidatePeerAuthentication``."""
        found = Problems()
        empty_selector = self.selector is None or not self.selector.match_labels
        if empty_selector and self.port_level_mtls:
            found.add(
                "mesh/namespace peer authentication cannot have port level mTLS", "portLevelMtls"
            )
        if self.port_level_mtls is not None and not self.port_level_mtls:
            found.add(
                "port level mTLS, if defined, must have at least one element", "portLevelMtls"
            )
        for key in self.port_level_mtls or {}:
            if not key.isdigit() or not 1 <= int(key) <= 65535:
                found.add("port must be in range 1..65535", "portLevelMtls", key)
        if self.selector is not None:
            found.extend(label_problems(self.selector.match_labels), "selector", "matchLabels")
        return found


# ------------------------------------------------------------------------------------------
# The stored kinds
# ------------------------------------------------------------------------------------------


class _IstioKind(ResourceBase):
    """An Istio object: namespaced, its spec checked as a whole by ``spec.problems()``.

    Its spec is stored as it was written — the fields the manifest set, not the models' zero
    defaults (``weight: 0``, ``match: []``, ``exportTo: []``): Istio's CRDs keep a proto3
    object as sent, and kubectl's client-side apply compares the live object with the
    manifest, so a stored ``weight: 0`` the user never wrote made every re-apply of an
    unchanged manifest a change ("configured", an event) instead of "unchanged"."""

    NAMESPACED = True
    spec: Any

    @field_serializer("spec", mode="wrap")
    def _spec_as_written(self, spec: Any, handler: SerializerFunctionWrapHandler) -> Any:
        if isinstance(spec, K8sModel):
            return spec.model_dump(
                mode="json", by_alias=True, exclude_none=True, exclude_unset=True
            )
        return handler(spec)

    @model_validator(mode="after")
    def _check_spec(self) -> Self:
        found = Problems()
        found.extend(self.spec.problems().items, "spec")
        found.check()
        return self


class VirtualService(_IstioKind):
    api_version: Literal["networking.istio.io/v1"] = NETWORKING_VERSION
    kind: Literal["VirtualService"] = "VirtualService"
    spec: VirtualServiceSpec = Field(default_factory=VirtualServiceSpec)


class DestinationRule(_IstioKind):
    api_version: Literal["networking.istio.io/v1"] = NETWORKING_VERSION
    kind: Literal["DestinationRule"] = "DestinationRule"
    spec: DestinationRuleSpec = Field(default_factory=DestinationRuleSpec)


class Gateway(_IstioKind):
    # Gateway names are DNS labels (no dots), as Istio's ValidateGateway requires.
    NAME_RULE: ClassVar = staticmethod(dns1123_label_errors)

    api_version: Literal["networking.istio.io/v1"] = NETWORKING_VERSION
    kind: Literal["Gateway"] = "Gateway"
    spec: GatewaySpec = Field(default_factory=GatewaySpec)


class ServiceEntry(_IstioKind):
    api_version: Literal["networking.istio.io/v1"] = NETWORKING_VERSION
    kind: Literal["ServiceEntry"] = "ServiceEntry"
    spec: ServiceEntrySpec = Field(default_factory=ServiceEntrySpec)


class PeerAuthentication(_IstioKind):
    api_version: Literal["security.istio.io/v1"] = SECURITY_VERSION
    kind: Literal["PeerAuthentication"] = "PeerAuthentication"
    spec: PeerAuthenticationSpec = Field(default_factory=PeerAuthenticationSpec)


MESH_KINDS = (VirtualService, DestinationRule, Gateway, ServiceEntry, PeerAuthentication)

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
from core.mesh.kinds.gateway import GatewaySpec
from core.mesh.kinds.virtualservice import VirtualServiceSpec
from core.meta.model import K8sModel, Problems
from core.meta.names import dns1123_label_errors, label_problems
from core.meta.types import ResourceBase

# ------------------------------------------------------------------------------------------
# Gateway and ServiceEntry
# ------------------------------------------------------------------------------------------


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

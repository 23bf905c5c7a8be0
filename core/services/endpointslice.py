"""The EndpointSlice (discovery.k8s.io/v1): a share of a service's endpoints, with their
readiness, node and zone.

Why this exists: which pods stand behind a service is derived data, kept by the endpoint-slice
controller (``handlers/endpointslice_controller.py``) and read by the node's forwarding, DNS and
``fleetlog get endpoints``. Slices are written through the gateway like every object, so they
are validated as kube-apiserver validates them (``pkg/apis/discovery/validation``): addresses
of the slice's address type, at most 1,000 endpoints and 100 ports, unique port names, 1 to 100
addresses per endpoint. Defaults are ``v1.SetDefaults_EndpointPort``'s (protocol TCP, name "").
"""

from __future__ import annotations

import ipaddress
from typing import Literal, Self

from pydantic import Field, model_validator

from core.meta.model import K8sModel, Problems, duplicate, invalid
from core.meta.names import (
    DNSLabel,
    DNSSubdomain,
    QualifiedName,
    dns1123_label_errors,
    dns1123_subdomain_errors,
)
from core.meta.types import ResourceBase
from core.pods.resources import Protocol

AddressType = Literal["IPv4", "IPv6", "FQDN"]
MAX_ENDPOINTS = 1000
MAX_PORTS = 100
MAX_ADDRESSES = 100


class EndpointConditions(K8sModel):
    """``ready`` (may receive new traffic), ``serving`` (ready, whether terminating or not)
    and ``terminating``; unset reads as ready and serving, not terminating."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class ObjectReference(K8sModel):
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    api_version: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


class ZoneHint(K8sModel):
    name: str


class NodeHint(K8sModel):
    name: str


class EndpointHints(K8sModel):
    for_zones: list[ZoneHint] | None = None
    for_nodes: list[NodeHint] | None = None


class Endpoint(K8sModel):
    addresses: list[str] = Field(min_length=1, max_length=MAX_ADDRESSES)
    conditions: EndpointConditions | None = None
    hostname: DNSLabel | None = None
    target_ref: ObjectReference | None = None
    deprecated_topology: dict[str, str] | None = None
    node_name: DNSSubdomain | None = None
    zone: str | None = None
    hints: EndpointHints | None = None


class EndpointPort(K8sModel):
    name: str = ""
    protocol: Protocol = "TCP"
    port: int | None = Field(default=None, ge=0, le=65535)
    app_protocol: QualifiedName | None = None


def _address_errors(address_type: str, address: str) -> list[str]:
    if address_type == "FQDN":
        return dns1123_subdomain_errors(address)
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    want = 4 if address_type == "IPv4" else 6
    if parsed.version != want:
        return [f"must be an {address_type} address"]
    return []


class EndpointSlice(ResourceBase):
    """An endpoint slice (discovery.k8s.io/v1)."""

    api_version: Literal["discovery.k8s.io/v1"] = "discovery.k8s.io/v1"
    kind: Literal["EndpointSlice"] = "EndpointSlice"
    address_type: AddressType
    endpoints: list[Endpoint] = Field(default_factory=list, max_length=MAX_ENDPOINTS)
    ports: list[EndpointPort] | None = Field(default=None, max_length=MAX_PORTS)

    @model_validator(mode="after")
    def _check(self) -> Self:
        found = Problems()
        for i, endpoint in enumerate(self.endpoints):
            for j, address in enumerate(endpoint.addresses):
                for message in _address_errors(self.address_type, address):
                    found.add(invalid(address, message), "endpoints", i, "addresses", j)
        names: set[str] = set()
        for i, port in enumerate(self.ports or ()):
            for message in dns1123_label_errors(port.name) if port.name else ():
                found.add(invalid(port.name, message), "ports", i, "name")
            if port.name in names:
                found.add(duplicate(port.name), "ports", i, "name")
            names.add(port.name)
        found.check()
        return self


__all__ = ["Endpoint", "EndpointConditions", "EndpointPort", "EndpointSlice"]

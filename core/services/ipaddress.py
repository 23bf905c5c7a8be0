"""The allocation records of services: an ``IPAddress`` per ClusterIP and a
``NodePortAllocation`` per node port.

Why this exists: two services must never get the same virtual IP or node port, and in an event
log uniqueness is a name. Kubernetes (1.33, ``MultiCIDRServiceAllocator``) keeps one
``IPAddress`` object (networking.k8s.io/v1, cluster-scoped, named by the address, its
``spec.parentRef`` naming the service) per allocated ClusterIP; fleetlog does the same, and
keeps node ports the same way (Kubernetes keeps them in a bitmap object, which in a log would be
one aggregate every NodePort service contends on). Each record is created "must be new" in the
same atomic append as the service that holds it, and deleted with it, by
``core.services.allocation``: the records are written only there, never by a client's command.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from core.meta.model import K8sModel
from core.meta.names import DNSLabel, DNSSubdomain
from core.meta.types import ResourceBase

IP_FAMILY_LABEL = "ipaddress.kubernetes.io/ip-family"
MANAGED_BY_LABEL = "ipaddress.kubernetes.io/managed-by"
IP_ALLOCATOR = "ipallocator.k8s.io"
"""``ipaddress.kubernetes.io/managed-by`` of the addresses the service allocator holds."""


def ip_address_name_errors(value: str) -> list[str]:
    """An IPAddress is named by its address, written canonically (``10.0.0.1``, not
    ``010.0.0.1``), as Kubernetes' ``ValidateIPAddressName`` requires."""
    try:
        canonical = str(ipaddress.ip_address(value))
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    if canonical != value:
        return [f"must be in canonical form ({canonical!r})"]
    return []


def node_port_name_errors(value: str) -> list[str]:
    """A NodePortAllocation is named by its port number, in decimal."""
    if not value.isdigit() or value != str(int(value)) or not 1 <= int(value) <= 65535:
        return ["must be a port number between 1 and 65535 in decimal"]
    return []


class ParentReference(K8sModel):
    """The object an address or port is allocated to (``group`` "" for core/v1)."""

    group: str | None = None
    resource: DNSLabel
    namespace: DNSLabel | None = None
    name: DNSSubdomain


class AllocationSpec(K8sModel):
    parent_ref: ParentReference


class IPAddress(ResourceBase):
    """An allocated ClusterIP (networking.k8s.io/v1, cluster-scoped)."""

    NAME_RULE = staticmethod(ip_address_name_errors)
    NAMESPACED = False

    api_version: Literal["networking.k8s.io/v1"] = "networking.k8s.io/v1"
    kind: Literal["IPAddress"] = "IPAddress"
    spec: AllocationSpec


class NodePortAllocation(ResourceBase):
    """An allocated node port (fleetlog's own kind, cluster-scoped)."""

    NAME_RULE = staticmethod(node_port_name_errors)
    NAMESPACED = False

    api_version: Literal["networking.fleetlog.dev/v1alpha1"] = "networking.fleetlog.dev/v1alpha1"
    kind: Literal["NodePortAllocation"] = "NodePortAllocation"
    spec: AllocationSpec


__all__ = ["IPAddress", "NodePortAllocation", "ParentReference"]

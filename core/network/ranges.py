"""The address ranges of the cluster's network, their defaults, and the arithmetic over them.

Why this exists: the pod network (each node a slice of the cluster CIDR, each pod an address of
its node's slice) and the services (a virtual IP from the service CIDR, a node port from its
range) all rest on a few ranges; they are decided here once, validated with errors a person can
act on, and every other part (the node IPAM controller, the node agent, the simulated nodes,
the services) asks this module rather than doing its own bit arithmetic.

The defaults come from RFC 6598's shared address space (``100.64.0.0/10``, as kops uses it):
it does not collide with the ranges home and office networks use (10/8, 172.16/12,
192.168/16), so a laptop on any of those can run a cluster. Pod traffic never leaves the
machine unless the operator routes these ranges.

* cluster (pod) CIDR ``100.96.0.0/12``, a ``/24`` per node (``spec.podCIDR``): 4,096 nodes of
  up to 253 pods each; the first address of a node's ``/24`` is its gateway (the node's bridge);
* service CIDR ``100.64.0.0/16``: ``100.64.0.1`` is the ``kubernetes`` service's address and
  ``100.64.0.10`` is kept for the cluster DNS (as kube-dns' ``10.96.0.10``);
* node ports ``30000-32767``.

IPv4 only for now: an IPv6 range is refused with a sentence saying so. Pure: the standard
library's ``ipaddress`` and nothing else.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Final

from core.errors import ValidationFailed

DEFAULT_CLUSTER_CIDR: Final = "100.96.0.0/12"
DEFAULT_NODE_CIDR_MASK_SIZE: Final = 24
DEFAULT_SERVICE_CIDR: Final = "100.64.0.0/16"
KUBERNETES_SERVICE_IP: Final = "100.64.0.1"
CLUSTER_DNS_IP: Final = "100.64.0.10"
DEFAULT_NODE_PORT_RANGE: Final = (30000, 32767)

MAX_NODE_CIDR_BITS: Final = 16
"""At most 2^16 node ranges per cluster CIDR, kube-controller-manager's limit."""
LARGEST_NODE_MASK: Final = 30
"""A node range needs a gateway and at least one pod address: /30 at the smallest."""


def parse_cidr(text: str, *, what: str = "CIDR") -> IPv4Network:
    """``text`` as an IPv4 network, or a :class:`ValidationFailed` naming ``what`` and the fix
    (host bits set: the network it probably meant)."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValidationFailed(
            f"{what} {text!r} is not a CIDR (an address and a prefix length, like "
            f"{DEFAULT_CLUSTER_CIDR})"
        ) from None
    if network.version != 4:
        raise ValidationFailed(f"{what} {text!r}: IPv6 ranges are not supported yet (IPv4 only)")
    assert isinstance(network, IPv4Network)
    if "/" not in text:
        raise ValidationFailed(
            f"{what} {text!r} has no prefix length (like {network.with_prefixlen})"
        )
    if str(network.network_address) != text.strip().split("/", 1)[0]:
        raise ValidationFailed(
            f"{what} {text!r} has host bits set: did you mean {network.with_prefixlen}?"
        )
    return network


def parse_address(text: str, *, what: str = "address") -> IPv4Address:
    """``text`` as an IPv4 address, or a :class:`ValidationFailed` naming ``what``."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValidationFailed(f"{what} {text!r} is not an IP address") from None
    if address.version != 4:
        raise ValidationFailed(f"{what} {text!r}: IPv6 addresses are not supported yet")
    assert isinstance(address, IPv4Address)
    return address


# -- a node's range -----------------------------------------------------------------------------


def host_address(cidr: IPv4Network, n: int) -> IPv4Address:
    """The ``n``-th usable address of ``cidr`` (1 = the first after the network address)."""
    usable = cidr.num_addresses - 2
    if not 1 <= n <= usable:
        raise ValidationFailed(f"{cidr} has no host address #{n} (it has {usable})")
    return cidr.network_address + n


def gateway(cidr: IPv4Network) -> IPv4Address:
    """The node's own address in its pod range: the first host, held by the node's bridge."""
    return host_address(cidr, 1)


def pod_address_count(cidr: IPv4Network) -> int:
    """How many pods a node range can address: every host address but the gateway."""
    return max(0, cidr.num_addresses - 3)


def pod_address(cidr: IPv4Network, index: int) -> IPv4Address:
    """The ``index``-th pod address of ``cidr`` (0 = the address right after the gateway)."""
    if not 0 <= index < pod_address_count(cidr):
        raise ValidationFailed(f"{cidr} has no pod address #{index}")
    return host_address(cidr, index + 2)


def pod_address_index(cidr: IPv4Network, address: IPv4Address) -> int | None:
    """Where ``address`` falls among ``cidr``'s pod addresses; None if it is not one."""
    index = int(address) - int(cidr.network_address) - 2
    return index if 0 <= index < pod_address_count(cidr) else None


# -- the cluster's range ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterCIDR:
    """The cluster (pod) CIDR cut into node ranges of ``/node_mask`` each."""

    network: IPv4Network
    node_mask: int

    @classmethod
    def parse(
        cls, cidr: str = DEFAULT_CLUSTER_CIDR, node_mask: int = DEFAULT_NODE_CIDR_MASK_SIZE
    ) -> ClusterCIDR:
        """Validated: a network, a node mask at least as long as its prefix, at most 2^16 node
        ranges, and room for a gateway and a pod in each."""
        network = parse_cidr(cidr, what="cluster CIDR")
        if not network.prefixlen <= node_mask <= LARGEST_NODE_MASK:
            raise ValidationFailed(
                f"node CIDR mask size {node_mask} must be between the cluster CIDR's prefix "
                f"length ({network.prefixlen}) and {LARGEST_NODE_MASK}"
            )
        if node_mask - network.prefixlen > MAX_NODE_CIDR_BITS:
            raise ValidationFailed(
                f"node CIDR mask size {node_mask} cuts {network.with_prefixlen} into "
                f"2^{node_mask - network.prefixlen} node ranges; at most 2^{MAX_NODE_CIDR_BITS} "
                f"are allowed (use a mask size of at most {network.prefixlen + MAX_NODE_CIDR_BITS})"
            )
        return cls(network, node_mask)

    def __str__(self) -> str:
        return self.network.with_prefixlen

    @property
    def node_ranges(self) -> int:
        """How many node ranges the cluster CIDR holds."""
        return 1 << (self.node_mask - self.network.prefixlen)

    def node_range(self, index: int) -> IPv4Network:
        """The ``index``-th node range (0 = the first)."""
        if not 0 <= index < self.node_ranges:
            raise ValidationFailed(f"{self} has no node range #{index} (it has {self.node_ranges})")
        size = 1 << (32 - self.node_mask)
        return IPv4Network((int(self.network.network_address) + index * size, self.node_mask))

    def index_of(self, cidr: IPv4Network) -> int:
        """Which node range ``cidr`` is; a :class:`ValidationFailed` saying why it is none
        (outside the cluster CIDR, or not a ``/node_mask``)."""
        if not cidr.subnet_of(self.network):
            raise ValidationFailed(f"podCIDR {cidr} is outside the cluster CIDR {self}")
        if cidr.prefixlen != self.node_mask:
            raise ValidationFailed(
                f"podCIDR {cidr} is a /{cidr.prefixlen}; this cluster gives each node a "
                f"/{self.node_mask} of {self}"
            )
        return (int(cidr.network_address) - int(self.network.network_address)) >> (
            32 - self.node_mask
        )

    def check(self, text: str) -> IPv4Network:
        """A podCIDR a node states, parsed and placed in this cluster's ranges, or refused."""
        cidr = parse_cidr(text, what="podCIDR")
        self.index_of(cidr)
        return cidr


def cidr_object_name(cidr: IPv4Network) -> str:
    """The name of the object that holds ``cidr`` (names have no ``/``): ``100.96.3.0-24``."""
    return f"{cidr.network_address}-{cidr.prefixlen}"

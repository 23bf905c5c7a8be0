"""The service ranges: where ClusterIPs and node ports come from, and how a free one is picked.

Why this exists: a Service's virtual IP comes from the service CIDR and each of its node ports
from the NodePort range, as kube-apiserver's ``--service-cluster-ip-range`` and
``--service-node-port-range`` define them. The ranges are read (and refused with a clear
message) when ``fleetlog up`` starts, and a free value is picked the way Kubernetes' allocators
pick one: at random (here: from a seed the caller derives from the service, so a decision is
replayable) in the upper part of the range first, keeping the lower part for values users ask
for by name (Kubernetes' static/dynamic sub-ranges, KEP-3070 and KEP-3668). Which values are
taken is not known here: the caller passes what its read model says, and the append that
creates the allocation ("must be new") is what makes it unique.

The defaults are the cluster's, from ``core/network/ranges.py`` (every range's default in one
module): service CIDR ``100.64.0.0/16``, ``100.64.0.1`` for the ``kubernetes`` service,
``100.64.0.10`` kept for cluster DNS (as kube-dns' ``10.96.0.10``), node ports ``30000-32767``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Container
from dataclasses import dataclass

from core.errors import ValidationFailed
from core.network import ranges

DEFAULT_SERVICE_CIDR = ranges.DEFAULT_SERVICE_CIDR
DEFAULT_NODE_PORT_RANGE = "{}-{}".format(*ranges.DEFAULT_NODE_PORT_RANGE)
KUBERNETES_SERVICE_OFFSET = 1
"""The ``kubernetes`` service has the range's first address (as kube-apiserver gives it)."""
CLUSTER_DNS_OFFSET = 10
"""Cluster DNS has the range's tenth address (kubeadm's ``10.96.0.10``)."""
MIN_PREFIX = 12
"""kube-apiserver refuses a larger IPv4 service range (``the mask must be >= 12``)."""
MAX_PREFIX = 28
"""The smallest range that still holds the ``kubernetes`` and cluster DNS addresses."""


def _band_offset(size: int, *, least: int, most: int, step: int) -> int:
    """How many values at the bottom of a range are kept for requests by value
    (``calculateRangeOffset``: ``min(max(least, size/step), most)``, 0 for a tiny range)."""
    if size <= least:
        return 0
    return min(max(least, size // step), most)


def _pick(size: int, offset: int, is_taken: Callable[[int], bool], seed: int) -> int | None:
    """A free index of ``range(size)``: from ``seed`` upwards in the dynamic band
    ``[offset, size)``, wrapping around, then in the static band ``[0, offset)``."""
    for low, high in ((offset, size), (0, offset)):
        span = high - low
        if span <= 0:
            continue
        start = seed % span
        for step in range(span):
            index = low + (start + step) % span
            if not is_taken(index):
                return index
    return None


@dataclass(frozen=True)
class ServiceIPRange:
    """The service CIDR: IPv4 (fleetlog's clusters are single-stack), network and broadcast
    addresses never handed out."""

    network: ipaddress.IPv4Network

    @classmethod
    def parse(cls, text: str) -> ServiceIPRange:
        """Read a CIDR as ``--service-cluster-ip-range`` gives it, or refuse it clearly."""
        what = f"--service-cluster-ip-range {text!r}"
        try:
            network = ipaddress.ip_network(text.strip(), strict=True)
        except ValueError as exc:
            raise ValidationFailed(f"{what}: not a CIDR like 100.64.0.0/16 ({exc})") from None
        if not isinstance(network, ipaddress.IPv4Network):
            raise ValidationFailed(f"{what}: fleetlog's services are single-stack IPv4")
        if network.prefixlen < MIN_PREFIX:
            raise ValidationFailed(
                f"{what} is too large; for 32-bit addresses, the mask must be >= {MIN_PREFIX}"
            )
        if network.prefixlen > MAX_PREFIX:
            raise ValidationFailed(
                f"{what} is too small: at least a /{MAX_PREFIX}, to hold the kubernetes "
                f"service's address (.{KUBERNETES_SERVICE_OFFSET}) and cluster DNS' "
                f"(.{CLUSTER_DNS_OFFSET})"
            )
        return cls(network)

    def __str__(self) -> str:
        return str(self.network)

    @property
    def _first(self) -> int:
        return int(self.network.network_address) + 1

    @property
    def size(self) -> int:
        """How many addresses can be allocated (all but the network and broadcast ones)."""
        return self.network.num_addresses - 2

    def contains(self, ip: str) -> bool:
        """Whether ``ip`` may be allocated from this range."""
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            return False
        return 0 <= int(address) - self._first < self.size

    def address(self, offset: int) -> str:
        """The range's ``offset``-th address (1: the first one that can be allocated)."""
        return str(ipaddress.IPv4Address(int(self.network.network_address) + offset))

    @property
    def kubernetes_ip(self) -> str:
        return self.address(KUBERNETES_SERVICE_OFFSET)

    @property
    def dns_ip(self) -> str:
        return self.address(CLUSTER_DNS_OFFSET)

    def pick(self, taken: Container[str], *, seed: int) -> str | None:
        """A free address (``None``: the range is full). Never the ``kubernetes`` service's or
        cluster DNS' address: those are only given to a service that asks for them."""
        reserved = {KUBERNETES_SERVICE_OFFSET - 1, CLUSTER_DNS_OFFSET - 1}
        first = self._first

        def is_taken(index: int) -> bool:
            return index in reserved or str(ipaddress.IPv4Address(first + index)) in taken

        offset = _band_offset(self.size, least=16, most=256, step=16)
        index = _pick(self.size, offset, is_taken, seed)
        return None if index is None else str(ipaddress.IPv4Address(first + index))


@dataclass(frozen=True)
class NodePortRange:
    """The NodePort range (``--service-node-port-range``), both ends included."""

    base: int
    size: int

    @classmethod
    def parse(cls, text: str) -> NodePortRange:
        """``30000-32767`` or ``30000+2768`` (``net.ParsePortRange``'s forms), or refuse it."""
        what = f"--service-node-port-range {text!r}"
        value = text.strip()
        try:
            if "+" in value:
                low, count = value.split("+", 1)
                base, size = int(low), int(count) + 1
            elif "-" in value:
                low, high = value.split("-", 1)
                base, size = int(low), int(high) - int(low) + 1
            else:
                base, size = int(value), 1
        except ValueError:
            raise ValidationFailed(f"{what}: not a port range like 30000-32767") from None
        if base < 1 or size < 1 or base + size - 1 > 65535:
            raise ValidationFailed(
                f"{what}: ports must lie in 1-65535, the first not after the last"
            )
        return cls(base, size)

    @property
    def last(self) -> int:
        return self.base + self.size - 1

    def __str__(self) -> str:
        return f"{self.base}-{self.last}"

    def contains(self, port: int) -> bool:
        return self.base <= port <= self.last

    def pick(self, taken: Container[int], *, seed: int) -> int | None:
        """A free port (``None``: the range is full)."""
        base = self.base
        offset = _band_offset(self.size, least=16, most=128, step=32)
        index = _pick(self.size, offset, lambda index: base + index in taken, seed)
        return None if index is None else base + index


@dataclass(frozen=True)
class ServiceRanges:
    """The two ranges a service's allocations come from."""

    cluster_ips: ServiceIPRange
    node_ports: NodePortRange

    @classmethod
    def parse(
        cls, *, cluster_ips: str = DEFAULT_SERVICE_CIDR, node_ports: str = DEFAULT_NODE_PORT_RANGE
    ) -> ServiceRanges:
        return cls(ServiceIPRange.parse(cluster_ips), NodePortRange.parse(node_ports))


DEFAULT_RANGES = ServiceRanges.parse()
"""The ranges of a cluster started without ``--service-cluster-ip-range`` or
``--service-node-port-range``."""

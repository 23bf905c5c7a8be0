"""Which node range, and which pod address, comes next: the allocators' choice, pure.

Why this exists: two allocators pick from a set of numbered slots: the node IPAM controller
picks a node range of the cluster CIDR (Kubernetes' ``RangeAllocator``), the node agent picks
a pod address of its node's range (the CNI ``host-local`` IPAM). Both pick **round robin**:
the first free slot after the one handed out last, wrapping around, so a slot just released
(a deleted node's range, a deleted pod's address) is not handed out again at once, while
something may still point at it (a stale endpoint, a route). Neither choice is what makes a
slot unique: the controller's choice is appended "must be new" on the range's own subject,
and the agent's is written to its ledger; here is only *which* slot to try.
"""

from __future__ import annotations

from collections.abc import Collection
from ipaddress import IPv4Address, IPv4Network

from core.network.ranges import (
    ClusterCIDR,
    pod_address,
    pod_address_count,
    pod_address_index,
)


def next_free(size: int, taken: Collection[int], *, after: int = -1) -> int | None:
    """The first index of ``range(size)`` not in ``taken``, looking from ``after + 1`` on and
    wrapping around; None when every index is taken."""
    if size <= 0 or (len(taken) >= size and all(0 <= i < size for i in taken)):
        return None
    start = (after + 1) % size
    for step in range(size):
        index = (start + step) % size
        if index not in taken:
            return index
    return None


def next_node_range(
    cluster: ClusterCIDR, taken: Collection[int], *, after: int = -1
) -> IPv4Network | None:
    """The next free node range of ``cluster`` (``taken``: the indexes in use); None when the
    cluster CIDR is full."""
    index = next_free(cluster.node_ranges, taken, after=after)
    return None if index is None else cluster.node_range(index)


def next_pod_address(
    cidr: IPv4Network, used: Collection[IPv4Address], *, last: IPv4Address | None = None
) -> IPv4Address | None:
    """The next free pod address of a node's range after ``last`` (the one handed out most
    recently); None when every address is in use. The gateway is never handed out."""
    taken = {i for i in (pod_address_index(cidr, a) for a in used) if i is not None}
    after = -1
    if last is not None:
        found = pod_address_index(cidr, last)
        after = found if found is not None else -1
    index = next_free(pod_address_count(cidr), taken, after=after)
    return None if index is None else pod_address(cidr, index)

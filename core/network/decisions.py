"""The node IPAM controller's decisions, pure: which range a node gets, taking it, giving it
back.

Why this exists: a node's range is decided on two aggregates at once (the node, and the
``PodCIDR`` object of the range), and what may be decided is a rule of the domain, not of the
controller that runs it: a node keeps the range it has; a range its manifest states is
honoured if it lies in the cluster CIDR and no one else holds it, and refused with the reason
otherwise (Kubernetes' ``CIDRNotAvailable``); any other node gets the next free range; a range
goes back only when its node is gone. The controller (``handlers.node_ipam``) loads the two
aggregates, calls these, and appends both or neither.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from ipaddress import IPv4Network
from typing import Any

from core.errors import AlreadyExists, FleetError, InvalidTransition, ValidationFailed
from core.meta.aggregate import aggregate_id
from core.network.aggregate import PodCIDR
from core.network.ipam import next_free
from core.network.model import API_VERSION
from core.network.ranges import ClusterCIDR, cidr_object_name, parse_cidr
from core.nodes.aggregate import Node


class CIDRNotAvailable(FleetError):
    """No range can be given to the node; the message says why (what the node records)."""

    code = "cidr_not_available"


def pod_cidr_manifest(cidr: IPv4Network, *, node: str, node_uid: str) -> dict[str, Any]:
    """The ``PodCIDR`` object that makes ``cidr`` the node's."""
    return {
        "apiVersion": API_VERSION,
        "kind": "PodCIDR",
        "metadata": {"name": cidr_object_name(cidr)},
        "spec": {"cidr": cidr.with_prefixlen, "nodeName": node, "nodeUID": node_uid},
    }


def taken_ranges(cluster: ClusterCIDR, held: Collection[str]) -> set[int]:
    """The node ranges of ``cluster`` that any held range (``PodCIDR`` objects' ``spec.cidr``)
    overlaps: a range held at another size (the cluster was configured differently before)
    keeps every node range it touches from being handed out."""
    taken: set[int] = set()
    size = 1 << (32 - cluster.node_mask)
    base = int(cluster.network.network_address)
    for text in held:
        try:
            cidr = parse_cidr(text)
        except ValidationFailed:
            continue
        if not cidr.overlaps(cluster.network):
            continue
        first = max(int(cidr.network_address), base)
        last = min(int(cidr.broadcast_address), int(cluster.network.broadcast_address))
        taken.update(range((first - base) // size, (last - base) // size + 1))
    return taken


def choose_pod_cidr(
    stated: str | None, *, cluster: ClusterCIDR, taken: Collection[int], after: int = -1
) -> IPv4Network:
    """The range to give a node: the one its manifest states (``stated``, checked against the
    cluster CIDR; whether someone holds it is decided by :func:`assign_pod_cidr`), else the
    next free one after ``after``. :class:`CIDRNotAvailable` says why there is none."""
    if stated is not None:
        try:
            return cluster.check(stated)
        except ValidationFailed as exc:
            raise CIDRNotAvailable(exc.message) from None
    index = next_free(cluster.node_ranges, taken, after=after)
    if index is None:
        raise CIDRNotAvailable(
            f"the cluster CIDR {cluster} is full: all {cluster.node_ranges} node ranges "
            f"(/{cluster.node_mask}) are held"
        )
    return cluster.node_range(index)


def assign_pod_cidr(
    node: Node,
    block: PodCIDR | None,
    *,
    cidr: IPv4Network,
    cluster: ClusterCIDR,
    uid: str,
    at: datetime,
) -> PodCIDR:
    """Make ``cidr`` the node's: the range's object (``block``, None or deleted when it is
    free) is created holding the node, and the node records ``NodePodCIDRAssigned``: both or
    neither. A range another node holds (or one reserved) is refused with
    :class:`AlreadyExists`; one this node already holds is only recorded on the node."""
    node.require_exists()
    if block is not None and block.exists:
        if not block.held_by(node.name, node.uid):
            holder = f"node {block.node_name}" if block.node_name else "a reservation"
            raise AlreadyExists(f"podCIDR {cidr} is held by {holder}")
        held = block
    else:
        held_new = PodCIDR.create(
            block,
            agg_id=aggregate_id("PodCIDR", "", cidr_object_name(cidr)),
            manifest=pod_cidr_manifest(cidr, node=node.name, node_uid=node.uid),
            uid=uid,
            at=at,
        )
        assert isinstance(held_new, PodCIDR)
        held = held_new
    node.assign_pod_cidr(pod_cidr=cidr.with_prefixlen, cluster_cidr=str(cluster), at=at)
    return held


def release_pod_cidr(block: PodCIDR, holder: Node | None, *, at: datetime) -> None:
    """Give ``block``'s range back, its node being gone (deleted, or deleted and created
    again: a new node is a new holder). A range its node still holds is kept; a reservation
    (no node) is never released by the controller."""
    block.require_exists()
    name, uid = block.node_name, block.node_uid
    if name is None:
        raise InvalidTransition(f"{block.name} is a reservation, not held by a node")
    if holder is not None and holder.exists and uid in (None, holder.uid):
        raise InvalidTransition(f"{block.name} is still held by node {name}")
    block.delete(reason=f"node {name} was deleted: its podCIDR {block.cidr} is free", at=at)

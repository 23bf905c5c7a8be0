"""The node aggregate: readiness, cordoning, its pod range, and the allocation ledger that keeps
parallel schedulers from over-committing a node.

What its events do to the manifest is the node's evolve (``core.nodes.status.EVOLVE``), shared
with the cluster read model; the allocation ledger is the aggregate's own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from core.api import payloads
from core.errors import (
    InvalidTransition,
    ValidationFailed,
)
from core.meta.aggregate import Resource
from core.meta.quantity import resource_amount
from core.nodes.status import (
    CIDR_NOT_AVAILABLE,
    LIFECYCLE_TAINTS,
    NETWORK_UNAVAILABLE,
    assigned_pod_cidr,
    node_condition,
    ready_status,
    stated_pod_cidr,
)
from core.nodes.status import EVOLVE as NODE_EVOLVE

CONTROLLER_CONDITIONS = ("Ready", NETWORK_UNAVAILABLE)
"""Conditions controllers record on a node (lifecycle, IPAM), which a node agent re-registering
with its own conditions does not state and must not erase."""
POD_CIDR_FIELDS = ("podCIDR", "podCIDRs")


class Node(Resource):
    KIND = "Node"
    EVOLVE = NODE_EVOLVE

    class Ready(Resource.Event, payloads.NodeConditionChanged):
        SUFFIX: ClassVar[str] = "Ready"

    class NotReady(Ready):
        SUFFIX: ClassVar[str] = "NotReady"

    @property
    def ready_status(self) -> str:
        return ready_status(self.manifest)

    def set_ready(
        self,
        *,
        status: str,
        reason: str,
        message: str,
        last_heartbeat_ns: int | None,
        grace_seconds: float | None,
        at: datetime,
    ) -> None:
        """Record a change of the Ready condition; the same status again changes nothing."""
        self.require_exists()
        if status not in ("True", "False", "Unknown"):
            raise ValidationFailed(f"Ready must be True, False or Unknown, not {status!r}")
        if status == self.ready_status:
            return
        event = self.Ready if status == "True" else self.NotReady
        self.trigger_event(
            event,
            status=status,
            reason=reason,
            message=message,
            last_heartbeat_ns=last_heartbeat_ns,
            grace_seconds=grace_seconds,
            timestamp=at,
        )

    def carry_server_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Besides status, the taints the lifecycle controller manages survive an apply, and so
        do the conditions controllers record (Ready, NetworkUnavailable) when the applied status
        states none, and the pod range when the applied spec states none (a node agent
        re-registering declares its capacity and its own conditions, not these)."""
        manifest = super().carry_server_fields(manifest)
        status = manifest.get("status") or {}
        stated = status.get("conditions") or []
        stated_types = {c.get("type") for c in stated}
        kept = [
            c
            for c in (self.manifest.get("status") or {}).get("conditions") or []
            if c.get("type") in CONTROLLER_CONDITIONS and c.get("type") not in stated_types
        ]
        if kept:
            manifest = {**manifest, "status": {**status, "conditions": [*stated, *kept]}}
        own_spec = self.manifest.get("spec", {})
        if any(own_spec.get(f) for f in POD_CIDR_FIELDS) and not any(
            manifest.get("spec", {}).get(f) for f in POD_CIDR_FIELDS
        ):
            ranges = {f: own_spec[f] for f in POD_CIDR_FIELDS if f in own_spec}
            manifest = {**manifest, "spec": {**manifest.get("spec", {}), **ranges}}
        managed = [
            t
            for t in self.manifest.get("spec", {}).get("taints") or []
            if t.get("key") in LIFECYCLE_TAINTS
        ]
        if not managed:
            return manifest
        spec = dict(manifest.get("spec", {}))
        own = [t for t in spec.get("taints") or [] if t.get("key") not in LIFECYCLE_TAINTS]
        spec["taints"] = own + managed
        return {**manifest, "spec": spec}

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        """As in Kubernetes, a node's pod range may be set once, never changed."""
        own = self.manifest.get("spec", {}).get("podCIDR")
        if own and any(path.startswith("spec.podCIDR") for path in changed):
            raise InvalidTransition(
                'Forbidden: node updates may not change podCIDR except from "" to valid '
                f"(it is {own})",
                field="spec.podCIDR",
            )

    # -- the pod range ----------------------------------------------------------------------

    class PodCIDRAssigned(Resource.Event, payloads.NodePodCIDRAssigned):
        SUFFIX: ClassVar[str] = "PodCIDRAssigned"

    class PodCIDRRefused(Resource.Event, payloads.NodePodCIDRRefused):
        SUFFIX: ClassVar[str] = "PodCIDRRefused"

    @property
    def pod_cidr(self) -> str | None:
        """The pod range the node IPAM controller made this node's own, if any."""
        return assigned_pod_cidr(self.manifest)

    @property
    def stated_pod_cidr(self) -> str | None:
        """The pod range the node's manifest asks for (honoured only once it is assigned)."""
        return stated_pod_cidr(self.manifest)

    def assign_pod_cidr(self, *, pod_cidr: str, cluster_cidr: str, at: datetime) -> None:
        """Record ``pod_cidr`` as this node's range; the same again changes nothing. A node
        never changes its range, nor gets one other than the one its manifest states (use
        ``core.network.decisions.assign_pod_cidr``, which also takes the range's object)."""
        self.require_exists()
        held = self.pod_cidr
        if held == pod_cidr:
            return
        if held is not None:
            raise InvalidTransition(f"node {self.name} already has podCIDR {held}")
        stated = self.stated_pod_cidr
        if stated is not None and stated != pod_cidr:
            raise InvalidTransition(
                f"node {self.name} states podCIDR {stated}, not {pod_cidr}", field="spec.podCIDR"
            )
        self.trigger_event(
            self.PodCIDRAssigned, pod_cidr=pod_cidr, cluster_cidr=cluster_cidr, timestamp=at
        )

    def refuse_pod_cidr(self, *, pod_cidr: str | None, message: str, at: datetime) -> None:
        """Record that no range could be given (``CIDRNotAvailable``); the same refusal again
        changes nothing, and a node that holds a range is never refused one."""
        self.require_exists()
        if self.pod_cidr is not None:
            raise InvalidTransition(f"node {self.name} already has podCIDR {self.pod_cidr}")
        current = node_condition(self.manifest, NETWORK_UNAVAILABLE) or {}
        if current.get("reason") == CIDR_NOT_AVAILABLE and current.get("message") == message:
            return
        self.trigger_event(
            self.PodCIDRRefused,
            pod_cidr=pod_cidr,
            reason=CIDR_NOT_AVAILABLE,
            message=message,
            timestamp=at,
        )

    class Cordoned(Resource.Event, payloads.NodeSchedulingChanged):
        SUFFIX: ClassVar[str] = "Cordoned"

    class Uncordoned(Resource.Event, payloads.NodeSchedulingChanged):
        SUFFIX: ClassVar[str] = "Uncordoned"

    class Allocated(Resource.Event, payloads.PodAllocated):
        TYPE: ClassVar[str] = "PodAllocated"

        def apply(self, aggregate: Resource) -> None:
            assert isinstance(aggregate, Node)
            aggregate.allocations[self.pod] = dict(self.requests)
            total = aggregate.allocated_total
            for name, amount in self.requests.items():
                total[name] = total.get(name, 0) + amount

    class Released(Resource.Event, payloads.PodReleased):
        TYPE: ClassVar[str] = "PodReleased"

        def apply(self, aggregate: Resource) -> None:
            assert isinstance(aggregate, Node)
            released = aggregate.allocations.pop(self.pod, None) or {}
            total = aggregate.allocated_total
            for name, amount in released.items():
                total[name] = total.get(name, 0) - amount

    STATE_IS_MANIFEST: ClassVar[bool] = False  # the allocation ledger is not in the manifest

    def begin_life(self, manifest: dict[str, Any], uid: str) -> None:
        super().begin_life(manifest, uid)
        self.allocations: dict[str, dict[str, int]] = {}
        self.allocated_total: dict[str, int] = {}
        """The sum of ``allocations``, kept as they change (it is read on every binding)."""
        self._allocatable: tuple[object, dict[str, int]] = (None, {})

    @classmethod
    def from_ledger(
        cls,
        agg_id: str,
        *,
        manifest: dict[str, Any],
        uid: str,
        version: int,
        allocations: dict[str, dict[str, int]],
        at: datetime,
    ) -> Node:
        """The node as a read model that folds its manifest *and* its allocation ledger sees
        it at ``version`` (the ledger is what :meth:`allocate` guards, so it must be the one
        folded from the same events)."""
        node = cls._from_manifest(agg_id, manifest=manifest, uid=uid, version=version, at=at)
        assert isinstance(node, Node)
        for pod, requests in allocations.items():
            node.allocations[pod] = dict(requests)
            for name, amount in requests.items():
                node.allocated_total[name] = node.allocated_total.get(name, 0) + amount
        return node

    @property
    def allocatable(self) -> dict[str, int]:
        """Allocatable resources in base units (cpu millicores, bytes, pod count, counts)."""
        status = self.manifest.get("status") or {}
        declared = status.get("allocatable") or status.get("capacity") or {}
        source, parsed = self._allocatable
        if source is not declared:
            parsed = {name: resource_amount(name, value) for name, value in declared.items()}
            self._allocatable = (declared, parsed)
        return dict(parsed)

    @property
    def allocated(self) -> dict[str, int]:
        return {name: amount for name, amount in self.allocated_total.items() if amount}

    def allocate(self, *, pod: str, requests: dict[str, int], at: datetime) -> None:
        """Reserve resources for ``pod`` (``namespace/name``); never beyond allocatable.

        This is the guard that makes parallel schedulers safe: it runs on the node's latest
        state, and the binding is appended atomically with it under the node's expectation.
        """
        self.require_exists()
        if pod in self.allocations:
            raise InvalidTransition(f"{pod} already holds resources on node {self.id}")
        requests = {**requests, "pods": 1}
        allocatable, allocated = self.allocatable, self.allocated
        short = sorted(
            name for name, amount in requests.items()
            if amount > 0 and allocated.get(name, 0) + amount > allocatable.get(name, 0)
        )  # fmt: skip
        if short:
            raise InvalidTransition(
                f"node {self.id.rsplit('/', 1)[-1]} cannot fit {pod}: insufficient "
                + ", ".join(short),
                code="insufficient_resources",
            )
        self.trigger_event(self.Allocated, pod=pod, requests=requests, timestamp=at)

    def release(self, *, pod: str, reason: str, at: datetime) -> None:
        """Give back a pod's reservation; releasing an unknown pod changes nothing."""
        if pod in self.allocations:
            self.trigger_event(self.Released, pod=pod, reason=reason, timestamp=at)

    @property
    def unschedulable(self) -> bool:
        return bool(self.manifest.get("spec", {}).get("unschedulable"))

    def cordon(self, *, reason: str, at: datetime) -> None:
        """Mark the node unschedulable; cordoning a cordoned node changes nothing."""
        self.require_exists()
        if not self.unschedulable:
            self.trigger_event(self.Cordoned, reason=reason, timestamp=at)

    def uncordon(self, *, reason: str, at: datetime) -> None:
        """Let the scheduler use the node again; an uncordoned node is left as it is."""
        self.require_exists()
        if self.unschedulable:
            self.trigger_event(self.Uncordoned, reason=reason, timestamp=at)

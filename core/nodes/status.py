"""How recorded facts change a node's manifest: the Ready condition with the lifecycle taints
that follow it, ``spec.unschedulable``, and the pod range (``spec.podCIDR``) with the
``NetworkUnavailable`` condition that says whether the node has one.

Why this exists: this is the node's *evolve* (``core.meta.evolve``): :data:`EVOLVE` is the one
table the node aggregate and the cluster read model both fold a node's events with (see
``core.pods.status`` for why the helpers are plain functions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.meta.evolve import Evolve, Evolving


def with_unschedulable(manifest: dict[str, Any], unschedulable: bool) -> dict[str, Any]:
    """A node manifest with ``spec.unschedulable`` set (or removed, as Kubernetes omits false)."""
    spec = {k: v for k, v in manifest.get("spec", {}).items() if k != "unschedulable"}
    if unschedulable:
        spec["unschedulable"] = True
    return {**manifest, "spec": spec}


NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
LIFECYCLE_TAINTS = (NOT_READY_TAINT, UNREACHABLE_TAINT)


_LIFECYCLE_TAINT_OF = {"False": NOT_READY_TAINT, "Unknown": UNREACHABLE_TAINT}


def with_ready_condition(
    manifest: dict[str, Any], *, status: str, reason: str, message: str, stamp: str
) -> dict[str, Any]:
    """A node manifest whose Ready condition is ``status`` and whose lifecycle taints follow it:
    Ready=False → not-ready, Ready=Unknown → unreachable (NoSchedule and NoExecute each), as
    Kubernetes' node lifecycle controller sets them; Ready=True → neither."""
    spec = dict(manifest.get("spec", {}))
    taints = [t for t in spec.get("taints") or [] if t.get("key") not in LIFECYCLE_TAINTS]
    key = _LIFECYCLE_TAINT_OF.get(status)
    if key is not None:
        taints += [
            {"key": key, "effect": effect, "timeAdded": stamp}
            for effect in ("NoSchedule", "NoExecute")
        ]
    if taints:
        spec["taints"] = taints
    else:
        spec.pop("taints", None)
    status_block = dict(manifest.get("status") or {})
    conditions = [c for c in status_block.get("conditions") or [] if c.get("type") != "Ready"]
    conditions.append(
        {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": stamp,
        }
    )
    status_block["conditions"] = conditions
    return {**manifest, "spec": spec, "status": status_block}


def ready_status(node_manifest: dict[str, Any]) -> str:
    """A node's Ready condition status ("True", "False", "Unknown"), "" before any."""
    for condition in (node_manifest.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status", ""))
    return ""


NETWORK_UNAVAILABLE = "NetworkUnavailable"
POD_CIDR_ASSIGNED = "PodCIDRAssigned"
"""The reason of ``NetworkUnavailable=False`` once the node IPAM controller gave a range."""
CIDR_NOT_AVAILABLE = "CIDRNotAvailable"
"""The reason of ``NetworkUnavailable=True`` when it could not (Kubernetes' event reason)."""


def with_node_condition(
    manifest: dict[str, Any], *, kind: str, status: str, reason: str, message: str, stamp: str
) -> dict[str, Any]:
    """A node manifest with its ``kind`` condition set (others kept, in their order); the
    transition time moves only when the status changes, as Kubernetes keeps it."""
    status_block = dict(manifest.get("status") or {})
    conditions = []
    since = stamp
    for condition in status_block.get("conditions") or []:
        if condition.get("type") == kind:
            if condition.get("status") == status:
                since = condition.get("lastTransitionTime", stamp)
            continue
        conditions.append(condition)
    conditions.append(
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
        }
    )
    status_block["conditions"] = conditions
    return {**manifest, "status": status_block}


def with_pod_cidr(
    manifest: dict[str, Any], *, pod_cidr: str, cluster_cidr: str, stamp: str
) -> dict[str, Any]:
    """A node manifest holding ``pod_cidr``: ``spec.podCIDR``/``podCIDRs`` and
    ``NetworkUnavailable=False`` (PodCIDRAssigned), which is what tells the node's agent
    (and anyone) that the range is the node's own, not merely stated in its manifest."""
    spec = {**manifest.get("spec", {}), "podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}
    return with_node_condition(
        {**manifest, "spec": spec},
        kind=NETWORK_UNAVAILABLE,
        status="False",
        reason=POD_CIDR_ASSIGNED,
        message=f"podCIDR {pod_cidr} assigned from the cluster CIDR {cluster_cidr}",
        stamp=stamp,
    )


def node_condition(node_manifest: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (node_manifest.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def stated_pod_cidr(node_manifest: dict[str, Any]) -> str | None:
    """The pod range a node's manifest asks for (its own once :func:`assigned_pod_cidr`)."""
    spec = node_manifest.get("spec", {})
    stated = spec.get("podCIDR") or next(iter(spec.get("podCIDRs") or []), None)
    return str(stated) if stated else None


def assigned_pod_cidr(node_manifest: dict[str, Any]) -> str | None:
    """The node's pod range once the node IPAM controller made it the node's own (a range a
    manifest merely states is not, until the controller has checked it is free)."""
    condition = node_condition(node_manifest, NETWORK_UNAVAILABLE)
    if condition is None or condition.get("reason") != POD_CIDR_ASSIGNED:
        return None
    if condition.get("status") != "False":
        return None
    cidr = node_manifest.get("spec", {}).get("podCIDR")
    return str(cidr) if cidr else None


# -- the node's evolve -------------------------------------------------------------------------


def _ready_changed(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_ready_condition(
        state.manifest,
        status=payload["status"],
        reason=payload["reason"],
        message=payload.get("message", ""),
        stamp=stamp,
    )


def _cordoned(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_unschedulable(state.manifest, True)


def _uncordoned(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_unschedulable(state.manifest, False)


def _pod_cidr_assigned(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_pod_cidr(
        state.manifest,
        pod_cidr=payload["pod_cidr"],
        cluster_cidr=payload["cluster_cidr"],
        stamp=stamp,
    )


def _pod_cidr_refused(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_node_condition(
        state.manifest,
        kind=NETWORK_UNAVAILABLE,
        status="True",
        reason=payload["reason"],
        message=payload["message"],
        stamp=stamp,
    )


EVOLVE: dict[str, Evolve] = {
    "NodeReady": _ready_changed,
    "NodePodCIDRAssigned": _pod_cidr_assigned,
    "NodePodCIDRRefused": _pod_cidr_refused,
    "NodeNotReady": _ready_changed,
    "NodeCordoned": _cordoned,
    "NodeUncordoned": _uncordoned,
}
"""How each of a node's own events changes its manifest (``PodAllocated``/``PodReleased``
change only the aggregate's ledger; ``NodeUpdated`` replaces the manifest)."""

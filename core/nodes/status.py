"""How recorded facts change a node's manifest: the Ready condition with the lifecycle taints
that follow it, and ``spec.unschedulable``.

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


EVOLVE: dict[str, Evolve] = {
    "NodeReady": _ready_changed,
    "NodeNotReady": _ready_changed,
    "NodeCordoned": _cordoned,
    "NodeUncordoned": _uncordoned,
}
"""How each of a node's own events changes its manifest (``PodAllocated``/``PodReleased``
change only the aggregate's ledger; ``NodeUpdated`` replaces the manifest)."""

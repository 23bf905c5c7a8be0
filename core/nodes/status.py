"""How recorded facts change a node's manifest: the Ready condition with the lifecycle taints
that follow it, and ``spec.unschedulable``.

Why this exists: the node aggregate and the cluster read model apply these facts alike (see
``core.pods.status`` for why the helpers are plain functions).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.meta.timestamps import stamp_of


def with_unschedulable(manifest: dict[str, Any], unschedulable: bool) -> dict[str, Any]:
    """A node manifest with ``spec.unschedulable`` set (or removed, as Kubernetes omits false)."""
    spec = {k: v for k, v in manifest.get("spec", {}).items() if k != "unschedulable"}
    if unschedulable:
        spec["unschedulable"] = True
    return {**manifest, "spec": spec}


NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
LIFECYCLE_TAINTS = (NOT_READY_TAINT, UNREACHABLE_TAINT)


def with_ready_condition(
    manifest: dict[str, Any], *, status: str, reason: str, message: str, at: datetime
) -> dict[str, Any]:
    """A node manifest whose Ready condition is ``status`` and whose lifecycle taints follow it:
    Ready=False → not-ready, Ready=Unknown → unreachable (NoSchedule and NoExecute each), as
    Kubernetes' node lifecycle controller sets them; Ready=True → neither."""
    return with_ready_condition_stamped(
        manifest, status=status, reason=reason, message=message, stamp=stamp_of(at)
    )


_LIFECYCLE_TAINT_OF = {"False": NOT_READY_TAINT, "Unknown": UNREACHABLE_TAINT}


def with_ready_condition_stamped(
    manifest: dict[str, Any], *, status: str, reason: str, message: str, stamp: str
) -> dict[str, Any]:
    """:func:`with_ready_condition` at a stamp (:func:`stamp_of`, ``format_stamp``)."""
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

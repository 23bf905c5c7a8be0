"""``fleetlog drain``: empty a node for maintenance, the way ``kubectl drain`` does.

Drain is client-side work, as in kubectl (``k8s.io/kubectl/pkg/drain``): list the pods bound to
the node, refuse if some cannot be safely removed, otherwise cordon the node and evict every
pod through the command gateway's ``evict`` command (each is a ``PodDeleted`` with the drain as
its reason, appended with the release of the pod's reservation on the node and, when a
PodDisruptionBudget covers the pod, with the budget's use; a budget with no disruption left
refuses with 429 and ``ops.cli.nodes.evict_politely`` asks again every 5 s, as kubectl does),
then wait until the pods are gone.

The refusals are kubectl's filters, checked *before* anything changes (not even the cordon):

* a pod that declares no controller (no ``ownerReferences`` entry with ``controller: true``)
  would not come back anywhere: refused unless ``--force``;
* a DaemonSet-managed pod would be recreated on the same node: refused unless
  ``--ignore-daemonsets``, which leaves it in place;
* a pod with ``emptyDir`` volumes loses that data: refused unless ``--delete-emptydir-data``.

Pods that already finished (Succeeded/Failed) are deleted without question.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DrainPlan:
    """What draining a node would do: the pods to delete, the ones left alone, and why not."""

    evict: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _controller_of(manifest: dict[str, Any]) -> dict[str, Any] | None:
    for ref in (manifest.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def _has_emptydir(manifest: dict[str, Any]) -> bool:
    return any("emptyDir" in v for v in (manifest.get("spec") or {}).get("volumes") or [])


def pods_on(items: Iterable[dict[str, Any]], node: str) -> list[dict[str, Any]]:
    """The pods (query items) bound to ``node``."""
    return [i for i in items if (i["manifest"].get("spec") or {}).get("nodeName") == node]


def plan_drain(
    pods: Iterable[dict[str, Any]],
    *,
    force: bool = False,
    ignore_daemonsets: bool = False,
    delete_emptydir_data: bool = False,
) -> DrainPlan:
    """Sort a node's pods the way kubectl drain's filters do."""
    plan = DrainPlan()
    unreplicated: list[str] = []
    daemonsets: list[str] = []
    local: list[str] = []
    for item in pods:
        manifest = item["manifest"]
        name = f"{item['namespace']}/{item['name']}"
        if (manifest.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            plan.evict.append(item)
            continue
        controller = _controller_of(manifest)
        if controller is not None and controller.get("kind") == "DaemonSet":
            daemonsets.append(name)
            if ignore_daemonsets:
                plan.ignored.append(name)
            continue
        if controller is None:
            unreplicated.append(name)
        if _has_emptydir(manifest):
            local.append(name)
        plan.evict.append(item)
    if daemonsets:
        if ignore_daemonsets:
            plan.warnings.append(f"ignoring DaemonSet-managed Pods: {', '.join(daemonsets)}")
        else:
            plan.errors.append(
                "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "
                + ", ".join(daemonsets)
            )
    if unreplicated:
        if force:
            plan.warnings.append(
                f"deleting Pods that declare no controller: {', '.join(unreplicated)}"
            )
        else:
            plan.errors.append(
                "cannot delete Pods that declare no controller (use --force to override): "
                + ", ".join(unreplicated)
            )
    if local:
        if delete_emptydir_data:
            plan.warnings.append(f"deleting Pods with local storage: {', '.join(local)}")
        else:
            plan.errors.append(
                "cannot delete Pods with local storage (use --delete-emptydir-data to override): "
                + ", ".join(local)
            )
    return plan


def drain_reason(node: str, actor: str, grace_period: int | None) -> str:
    """The reason recorded on each deletion (the delete command has no grace-period field, so a
    requested grace period is recorded here)."""
    reason = f"drained from node {node} by {actor}"
    if grace_period is not None and grace_period >= 0:
        reason += f" (grace period {grace_period}s)"
    return reason

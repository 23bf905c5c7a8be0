"""The two built-in PriorityClasses (``system-cluster-critical``, ``system-node-critical``) as
plain manifests.

Why this exists: the API server creates these at start-up, so they exist in every cluster
without anyone applying them: admission resolves pods naming them, and ``fleetlog get
priorityclass`` lists them beside the stored classes, as ``kubectl get priorityclass`` does. The
command line must not load the pydantic models for that (``core.policy.priorityclass`` builds
its validated ``SYSTEM_PRIORITY_CLASSES`` from these), so the definitions live here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

HIGHEST_USER_DEFINABLE_PRIORITY: Final = 1_000_000_000
"""``scheduling.HighestUserDefinablePriority``."""
SYSTEM_CRITICAL_PRIORITY: Final = 2 * HIGHEST_USER_DEFINABLE_PRIORITY
"""``scheduling.SystemCriticalPriority``: the base of the built-in system classes."""
SYSTEM_CLUSTER_CRITICAL: Final = "system-cluster-critical"
SYSTEM_NODE_CRITICAL: Final = "system-node-critical"


def _manifest(name: str, value: int, description: str) -> Mapping[str, Any]:
    return MappingProxyType(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": MappingProxyType({"name": name}),
            "value": value,
            "globalDefault": False,
            "description": description,
            "preemptionPolicy": "PreemptLowerPriority",
        }
    )


SYSTEM_CLASS_MANIFESTS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        SYSTEM_CLUSTER_CRITICAL: _manifest(
            SYSTEM_CLUSTER_CRITICAL,
            SYSTEM_CRITICAL_PRIORITY,
            "Used for system critical pods that must run in the cluster, but can be moved to "
            "another node if necessary.",
        ),
        SYSTEM_NODE_CRITICAL: _manifest(
            SYSTEM_NODE_CRITICAL,
            SYSTEM_CRITICAL_PRIORITY + 1000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
    }
)
"""``scheduling.SystemPriorityClasses``: name -> the class as the API server creates it
(read-only; copy before changing)."""


def system_class_manifest(name: str) -> dict[str, Any] | None:
    """A fresh, mutable copy of the built-in class called ``name``, or None."""
    found = SYSTEM_CLASS_MANIFESTS.get(name)
    if found is None:
        return None
    return {**found, "metadata": dict(found["metadata"])}

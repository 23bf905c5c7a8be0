"""Which pods a replica set deletes first when it has too many: Kubernetes' order, pure.

Why this exists: scaling down (or a rollout shrinking an old replica set) must remove the pods
whose loss hurts least — not yet scheduled, not running, not ready, cheap to delete, crowded
onto one node, ready only recently, crash-looping, young — and operators who know
Kubernetes expect exactly its order (``ActivePodsWithRanks`` in pkg/controller/
controller_utils.go, with the PodDeletionCost and LogarithmicScaleDown features on, as they
are by default). The replica-set controller (a handler) calls :func:`pods_to_delete` with the
pods it owns and the time, and deletes what it returns.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.meta.timestamps import parse_stamp

__all__ = [
    "BURST_REPLICAS",
    "DELETION_COST_ANNOTATION",
    "PodCounts",
    "RankedPod",
    "ReplicaSetPlan",
    "available_at",
    "count_pods",
    "is_available",
    "plan_replica_set",
    "pods_to_delete",
    "ranked_pod",
]

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


@dataclass(frozen=True)
class RankedPod:
    """What the ranking reads of one pod (times in ns since the epoch; None: not set)."""

    key: str
    uid: str
    node: str
    phase: str
    ready: bool
    ready_since_ns: int | None
    deletion_cost: int
    max_restarts: int
    created_ns: int | None
    active: bool = True


def ranked_pod(manifest: Mapping[str, Any], created_ns: int | None = None) -> RankedPod:
    """The ranking's view of a stored pod manifest (``created_ns`` from the log when the
    manifest has no ``creationTimestamp``)."""
    meta = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    status = manifest.get("status") or {}
    ready_condition = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None
    )
    ready = bool(ready_condition and ready_condition.get("status") == "True")
    try:
        cost = int((meta.get("annotations") or {}).get(DELETION_COST_ANNOTATION, 0))
    except (TypeError, ValueError):
        cost = 0  # an invalid cost counts as the default, as Kubernetes reads it
    restarts = [int(s.get("restartCount") or 0) for s in status.get("containerStatuses") or []]
    phase = str(status.get("phase") or "Pending")
    return RankedPod(
        key=f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}",
        uid=str(meta.get("uid") or ""),
        node=str(spec.get("nodeName") or ""),
        phase=phase,
        ready=ready,
        ready_since_ns=parse_stamp(ready_condition.get("lastTransitionTime")) if ready else None,
        deletion_cost=cost,
        max_restarts=max(restarts, default=0),
        created_ns=parse_stamp(meta.get("creationTimestamp")) or created_ns,
        active=phase not in ("Succeeded", "Failed"),
    )


def _after_or_zero(first: int | None, second: int | None) -> bool:
    """``afterOrZero``: an unset time sorts first, else the later one."""
    if first is None or second is None:
        return first is None
    return first > second


def _log_rank_diff(first: int, second: int, now_ns: int) -> int:
    """``logarithmicRankDiff``: compare the ages in powers of two (of nanoseconds)."""
    d1, d2 = now_ns - first, now_ns - second
    r1 = int(math.log2(d1)) if d1 > 0 else -1
    r2 = int(math.log2(d2)) if d2 > 0 else -1
    return r1 - r2


def _time_less(
    first: int | None, second: int | None, a: RankedPod, b: RankedPod, now_ns: int
) -> bool:
    if first is None or second is None:
        return _after_or_zero(first, second)
    diff = _log_rank_diff(first, second, now_ns)
    if diff == 0:
        return a.uid < b.uid
    return diff < 0


def _less(a: RankedPod, b: RankedPod, rank_a: int, rank_b: int, now_ns: int) -> bool:
    if a.node != b.node and (not a.node or not b.node):
        return not a.node  # 1. unassigned first
    phase_a, phase_b = _PHASE_ORDINAL.get(a.phase, 0), _PHASE_ORDINAL.get(b.phase, 0)
    if phase_a != phase_b:
        return phase_a < phase_b  # 2. Pending < Unknown < Running
    if a.ready != b.ready:
        return not a.ready  # 3. not ready first
    if a.deletion_cost != b.deletion_cost:
        return a.deletion_cost < b.deletion_cost  # 4. cheaper to delete first
    if rank_a != rank_b:
        return rank_a > rank_b  # 5. more related pods on the same node first
    if a.ready and b.ready and a.ready_since_ns != b.ready_since_ns:
        return _time_less(a.ready_since_ns, b.ready_since_ns, a, b, now_ns)  # 6. ready recently
    if a.max_restarts != b.max_restarts:
        return a.max_restarts > b.max_restarts  # 7. more restarts first
    if a.created_ns != b.created_ns:
        return _time_less(a.created_ns, b.created_ns, a, b, now_ns)  # 8. newer first
    return False


def pods_to_delete(
    pods: Sequence[RankedPod], related: Sequence[RankedPod], count: int, now_ns: int
) -> list[RankedPod]:
    """The ``count`` pods of ``pods`` to delete first. ``related`` are all active pods of the
    owner (they decide how crowded each node is: ``getPodsRankedByRelatedPodsOnSameNode``)."""
    if count <= 0:
        return []
    if count >= len(pods):
        return list(pods)
    on_node: dict[str, int] = {}
    for pod in related:
        if pod.active:
            on_node[pod.node] = on_node.get(pod.node, 0) + 1
    ranks = {id(pod): on_node.get(pod.node, 0) for pod in pods}

    def compare(a: RankedPod, b: RankedPod) -> int:
        if _less(a, b, ranks[id(a)], ranks[id(b)], now_ns):
            return -1
        if _less(b, a, ranks[id(b)], ranks[id(a)], now_ns):
            return 1
        return 0

    return sorted(pods, key=functools.cmp_to_key(compare))[:count]


# -- keeping the count ----------------------------------------------------------------------

BURST_REPLICAS = 500
"""At most this many pods created or deleted per sync (Kubernetes' ``burstReplicas``)."""


@dataclass(frozen=True)
class PodCounts:
    """A replica set's pods as its status reports them (active pods only)."""

    replicas: int = 0
    fully_labeled: int = 0
    ready: int = 0
    available: int = 0


def available_at(pod: RankedPod, min_ready_seconds: int) -> int | None:
    """When a ready pod has been ready for ``minReadySeconds``. Condition times have whole
    seconds (as Kubernetes'), so the pod may have become ready up to a second after its stamp:
    the wait counts from the end of that second, and a pod is never available early
    (Kubernetes counts from the stamp, up to a second early)."""
    if pod.ready_since_ns is None:
        return None
    return pod.ready_since_ns + (min_ready_seconds + 1) * 1_000_000_000


def is_available(pod: RankedPod, min_ready_seconds: int, now_ns: int) -> bool:
    """``IsPodAvailable``: ready, and for at least ``minReadySeconds``."""
    if not pod.ready:
        return False
    if min_ready_seconds == 0:
        return True
    at = available_at(pod, min_ready_seconds)
    return at is not None and at <= now_ns


def count_pods(
    pods: Sequence[tuple[RankedPod, Mapping[str, str]]],
    template_labels: Mapping[str, str],
    min_ready_seconds: int,
    now_ns: int,
) -> tuple[PodCounts, int | None]:
    """The counts of the active pods (each with its labels), and when the next ready pod
    becomes available (``None``: no pod is waiting out ``minReadySeconds``)."""
    replicas = labeled = ready = available = 0
    next_available: int | None = None
    for pod, labels in pods:
        if not pod.active:
            continue
        replicas += 1
        if all(labels.get(k) == v for k, v in template_labels.items()):
            labeled += 1
        if pod.ready:
            ready += 1
            if is_available(pod, min_ready_seconds, now_ns):
                available += 1
            elif (at := available_at(pod, min_ready_seconds)) is not None:
                next_available = at if next_available is None else min(next_available, at)
    return PodCounts(replicas, labeled, ready, available), next_available


@dataclass(frozen=True)
class ReplicaSetPlan:
    """What the replica-set controller does now: create ``create`` pods, delete ``delete``
    (pod keys, in Kubernetes' order), and record ``status``; ``recheck_at_ns`` is when the
    counts change by themselves (a ready pod becomes available)."""

    create: int
    delete: list[RankedPod]
    counts: PodCounts
    recheck_at_ns: int | None


def plan_replica_set(
    desired: int,
    pods: Sequence[tuple[RankedPod, Mapping[str, str]]],
    template_labels: Mapping[str, str],
    min_ready_seconds: int,
    now_ns: int,
) -> ReplicaSetPlan:
    """``manageReplicas``: create the missing pods or delete the surplus (at most
    ``BURST_REPLICAS`` at a time); finished pods (Succeeded, Failed) do not count, so a failed
    pod is replaced."""
    active = [pod for pod, _ in pods if pod.active]
    counts, recheck = count_pods(pods, template_labels, min_ready_seconds, now_ns)
    diff = len(active) - desired
    if diff < 0:
        return ReplicaSetPlan(min(-diff, BURST_REPLICAS), [], counts, recheck)
    victims = pods_to_delete(active, active, min(diff, BURST_REPLICAS), now_ns) if diff else []
    return ReplicaSetPlan(0, victims, counts, recheck)

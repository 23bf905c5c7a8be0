"""Evicting a pod honouring its PodDisruptionBudget: one decision over the pod, its budget, its
node and its quotas.

Why this exists: kube-apiserver's eviction subresource decrements the budget and then deletes
the pod, two writes a crash can split. fleetlog decides both at once on the aggregates as
loaded (``core.disruption.budget.decide_eviction`` says whether, and what the budget records)
and the gateway appends the pod's deletion (with its node and quota releases:
``core.pods.decisions.delete_pod``) and the budget's new status in **one atomic append**, an
expectation on every subject: two evictions racing for the last allowed disruption cannot both
succeed, and a refused eviction appends nothing. Every evicting path (the ``evict`` command:
``fleetlog drain``, ``kubectl drain`` through the door, the VPA's updater) comes here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from core.disruption.aggregate import PodDisruptionBudget
from core.disruption.budget import Budget, EvictionVerdict, decide_eviction, eviction_matches
from core.disruption.budget import pod_view as view_of
from core.meta.aggregate import Resource
from core.pods.aggregate import Pod
from core.pods.decisions import delete_pod


def matching_budgets(pod: Pod, budgets: Sequence[Resource | None]) -> list[PodDisruptionBudget]:
    """The live budgets of the pod's namespace whose selector matches its labels (a budget
    with an empty selector matches nothing here, as kube's eviction path reads it)."""
    labels = (pod.manifest.get("metadata") or {}).get("labels") or {}
    return [
        b
        for b in budgets
        if isinstance(b, PodDisruptionBudget)
        and b.exists
        and b.namespace == pod.namespace
        and eviction_matches(b.spec, labels)
    ]


def evict_pod(
    pod: Pod,
    *,
    budgets: Sequence[Resource | None],
    node: Resource | None,
    quotas: Sequence[Resource | None],
    reason: str,
    propagation_policy: str,
    evicted_by: str,
    at: datetime,
    now_ns: int,
) -> EvictionVerdict:
    """Evict ``pod``: refuse (``EvictionRefused``, 429) when its budget allows no disruption,
    else delete it, release its node and quotas, and record the disruption on the budget."""
    pod.require_exists()
    matched = matching_budgets(pod, budgets)
    verdict = decide_eviction(
        view_of(pod.manifest),
        [
            Budget(name=b.name, spec=b.spec, generation=b.generation, status=b.status)
            for b in matched
        ],
        now_ns=now_ns,
    )
    delete_pod(
        pod, node=node, quotas=quotas, reason=reason or f"evicted by {evicted_by}",
        propagation_policy=propagation_policy, deleted_by=evicted_by, at=at,
    )  # fmt: skip
    if verdict.budget is not None and verdict.status is not None:
        [used] = [b for b in matched if b.name == verdict.budget]
        used.update_status(status=verdict.status, annotations={}, at=at)
    return verdict

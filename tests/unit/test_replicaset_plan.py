"""Keeping a replica set's count (pure): what is missing is created, surplus deleted in
Kubernetes' order, finished pods replaced, bursts capped, and availability counted with
``minReadySeconds``."""

from __future__ import annotations

from dataclasses import replace

from core.workloads.replicaset import (
    BURST_REPLICAS,
    PodCounts,
    RankedPod,
    count_pods,
    is_available,
    plan_replica_set,
)

S = 1_000_000_000
NOW = 1_000_000 * S
LABELS = {"app": "web", "pod-template-hash": "abc"}
BASE = RankedPod(
    key="default/x", uid="u", node="n1", phase="Running", ready=True,
    ready_since_ns=NOW - 3600 * S, deletion_cost=0, max_restarts=0, created_ns=NOW - 7200 * S,
)  # fmt: skip


def pod(name: str, labels: dict[str, str] | None = None, **fields: object):
    ranked = replace(BASE, key=f"default/{name}", uid=f"uid-{name}", **fields)
    return ranked, dict(LABELS if labels is None else labels)


def test_missing_pods_are_created_and_surplus_deleted_worst_first() -> None:
    plan = plan_replica_set(3, [pod("a")], LABELS, 0, NOW)
    assert (plan.create, plan.delete) == (2, [])
    pods = [pod("a"), pod("pending", phase="Pending", ready=False, node=""), pod("b")]
    plan = plan_replica_set(2, pods, LABELS, 0, NOW)
    assert plan.create == 0 and [p.key for p in plan.delete] == ["default/pending"]
    assert plan_replica_set(3, pods, LABELS, 0, NOW).delete == []


def test_finished_pods_do_not_count_so_a_failed_pod_is_replaced() -> None:
    pods = [pod("a"), pod("failed", phase="Failed", active=False, ready=False)]
    plan = plan_replica_set(2, pods, LABELS, 0, NOW)
    assert plan.create == 1 and plan.delete == []
    assert plan.counts == PodCounts(replicas=1, fully_labeled=1, ready=1, available=1)


def test_one_pass_creates_or_deletes_at_most_the_burst() -> None:
    assert plan_replica_set(10_000, [], LABELS, 0, NOW).create == BURST_REPLICAS
    many = [pod(f"p{i}") for i in range(BURST_REPLICAS + 10)]
    assert len(plan_replica_set(0, many, LABELS, 0, NOW).delete) == BURST_REPLICAS


def test_counts_and_the_moment_a_ready_pod_becomes_available() -> None:
    pods = [
        pod("old"),
        pod("fresh", ready_since_ns=NOW - 2 * S),
        pod("unready", ready=False, ready_since_ns=None),
        pod("relabeled", labels={"app": "web"}),
    ]
    counts, next_at = count_pods(pods, LABELS, 5, NOW)
    assert counts == PodCounts(replicas=4, fully_labeled=3, ready=3, available=2)
    assert next_at == NOW + 4 * S  # ready at NOW - 2 s (a whole-second stamp) + 5 s + 1 s
    counts, next_at = count_pods(pods, LABELS, 0, NOW)
    assert counts.available == 3 and next_at is None


def test_available_means_ready_for_min_ready_seconds_never_early() -> None:
    # Stamped at NOW - 10 s: the pod became ready within that second, so it is surely ready
    # for 9 s, not surely for 10 s.
    ranked, _ = pod("p", ready_since_ns=NOW - 10 * S)
    assert is_available(ranked, 9, NOW) and not is_available(ranked, 10, NOW)
    assert not is_available(replace(ranked, ready=False), 0, NOW)

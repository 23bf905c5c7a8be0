"""The order in which a replica set deletes surplus pods, rule by rule, as Kubernetes ranks them
(ActivePodsWithRanks with PodDeletionCost and LogarithmicScaleDown)."""

from __future__ import annotations

from dataclasses import replace

from core.workloads.replicaset import RankedPod, pods_to_delete, ranked_pod

S = 1_000_000_000
NOW = 1_000_000 * S
BASE = RankedPod(
    key="default/x", uid="u", node="n1", phase="Running", ready=True,
    ready_since_ns=NOW - 3600 * S, deletion_cost=0, max_restarts=0, created_ns=NOW - 7200 * S,
)  # fmt: skip


def pod(name: str, **fields: object) -> RankedPod:
    return replace(BASE, key=f"default/{name}", uid=f"uid-{name}", **fields)


def first(*pods: RankedPod, related: list[RankedPod] | None = None) -> str:
    chosen = pods_to_delete(list(pods), related if related is not None else list(pods), 1, NOW)
    return chosen[0].key.split("/")[1]


def test_each_rule_in_turn() -> None:
    assert first(pod("bound"), pod("unbound", node="")) == "unbound"
    assert first(pod("running"), pod("pending", phase="Pending")) == "pending"
    assert first(pod("running"), pod("unknown", phase="Unknown")) == "unknown"
    assert first(pod("ready"), pod("unready", ready=False, ready_since_ns=None)) == "unready"
    assert first(pod("dear", deletion_cost=10), pod("cheap", deletion_cost=-5)) == "cheap"
    crowded, alone = pod("crowded", node="n1"), pod("alone", node="n2")
    neighbour = pod("neighbour", node="n1")
    assert first(crowded, alone, related=[crowded, alone, neighbour]) == "crowded"
    # Ready for 10 minutes vs 2 hours: log2 buckets differ, the recent one goes first.
    recent = pod("recent", ready_since_ns=NOW - 600 * S)
    assert first(pod("old"), recent) == "recent"
    assert first(pod("steady"), pod("crashy", max_restarts=4)) == "crashy"
    young = pod("young", created_ns=NOW - 60 * S)
    assert first(pod("elder"), young) == "young"


def test_ages_in_the_same_power_of_two_tie_and_fall_to_the_uid() -> None:
    # 10 s and 12 s ago are both 2^33 ns buckets: the smaller uid goes first.
    a = pod("a", ready_since_ns=NOW - 12 * S)
    b = pod("b", ready_since_ns=NOW - 10 * S)
    assert first(b, a) == "a" and first(a, b) == "a"


def test_an_unset_time_sorts_first_and_counts() -> None:
    never = pod("never", created_ns=None)
    assert first(pod("known"), never) == "never"
    assert pods_to_delete([pod("a"), pod("b")], [], 0, NOW) == []
    assert len(pods_to_delete([pod("a"), pod("b")], [], 5, NOW)) == 2


def test_ranked_pod_reads_a_stored_manifest() -> None:
    manifest = {
        "metadata": {
            "name": "web-1", "namespace": "shop", "uid": "u1",
            "annotations": {"controller.kubernetes.io/pod-deletion-cost": "not-a-number"},
            "creationTimestamp": "2026-11-25T10:00:00Z",
        },
        "spec": {"nodeName": "n3"},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True",
                            "lastTransitionTime": "2026-11-25T10:00:05Z"}],
            "containerStatuses": [{"name": "a", "restartCount": 2}, {"name": "b", "restartCount": 5}],
        },
    }  # fmt: skip
    ranked = ranked_pod(manifest)
    assert (ranked.key, ranked.node, ranked.ready, ranked.deletion_cost, ranked.max_restarts) == (
        "shop/web-1",
        "n3",
        True,
        0,
        5,
    )
    assert ranked.ready_since_ns - ranked.created_ns == 5 * S

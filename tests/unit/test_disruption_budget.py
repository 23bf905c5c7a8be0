"""The disruption controller's status maths and the eviction decision, rule by rule.

Expectations are written by hand from the rules of kube's ``pkg/controller/disruption`` (its
``disruption_test.go`` cases: TestUnavailable, TestReplicaSet, TestReplicationController,
TestMultipleControllers, TestIntegerMaxUnavailable, TestBasicFinderFunctions…) and of
``pkg/registry/core/pod/storage/eviction.go``, not from this implementation.
"""

from __future__ import annotations

from typing import Any

import pytest

from core.disruption.budget import (
    DELETION_TIMEOUT_NS,
    MULTIPLE_BUDGETS_MESSAGE,
    REFUSAL_MESSAGE,
    Budget,
    EvictionRefused,
    PodView,
    compute_status,
    decide_eviction,
    pod_view,
)
from core.errors import FleetError
from core.meta.timestamps import format_stamp

NOW = 1_800_000_000 * 10**9


def pods(
    n: int, *, ready: int | None = None, scale: tuple[str, int] | None = ("rs", 0)
) -> list[PodView]:
    ready = n if ready is None else ready
    return [PodView(name=f"p{i}", ready=i < ready, scale=scale) for i in range(n)]


def status(spec: dict[str, Any], selected: list[PodView], previous: dict[str, Any] | None = None,
           generation: int = 1) -> dict[str, Any]:  # fmt: skip
    return compute_status(spec, previous, selected, generation=generation, now_ns=NOW).status


def figures(s: dict[str, Any]) -> tuple[int, int, int, int]:
    return (s["expectedPods"], s["desiredHealthy"], s["currentHealthy"], s["disruptionsAllowed"])


def condition(s: dict[str, Any]) -> tuple[str, str]:
    [c] = [c for c in s["conditions"] if c["type"] == "DisruptionAllowed"]
    return c["status"], c["reason"]


def test_integer_min_available_counts_selected_pods_and_allows_the_surplus() -> None:
    # TestUnavailable: minAvailable 3 over 4 ready pods allows one disruption.
    s = status({"minAvailable": 3}, pods(4))
    assert figures(s) == (4, 3, 4, 1)
    assert condition(s) == ("True", "SufficientPods")
    assert s["observedGeneration"] == 1


def test_an_unready_pod_uses_up_the_surplus() -> None:
    s = status({"minAvailable": 3}, pods(4, ready=3))
    assert figures(s) == (4, 3, 3, 0)
    assert condition(s) == ("False", "InsufficientPods")


def test_min_available_two_over_three_allows_one() -> None:
    assert figures(status({"minAvailable": 2}, pods(3))) == (3, 2, 3, 1)


def test_percent_min_available_is_of_the_controller_scale_rounded_up() -> None:
    # TestReplicaSet: 20% of a replica set of 10 with one ready pod.
    s = status({"minAvailable": "20%"}, pods(1, scale=("rs-uid", 10)))
    assert figures(s) == (10, 2, 1, 0)
    # TestReplicationController: 34% of 3 is 1.02, rounded up to 2.
    assert figures(status({"minAvailable": "34%"}, pods(3, scale=("rc", 3)))) == (3, 2, 3, 1)


def test_max_unavailable_is_subtracted_from_the_scale_rounded_up() -> None:
    # 50% of 3 is 1.5 -> 2 may be unavailable, so 1 must stay healthy.
    assert figures(status({"maxUnavailable": "50%"}, pods(3, scale=("d", 3)))) == (3, 1, 3, 2)
    # TestIntegerMaxUnavailable: maxUnavailable 1 over a scale of 2, both ready.
    assert figures(status({"maxUnavailable": 1}, pods(2, scale=("d", 2)))) == (2, 1, 2, 1)
    # Never below zero desired.
    assert figures(status({"maxUnavailable": 5}, pods(2, scale=("d", 2)))) == (2, 0, 2, 2)


def test_each_controller_counts_once_and_several_are_summed() -> None:
    # TestMultipleControllers: pods of two controllers; the scales are added.
    selected = [
        PodView(name="a0", ready=True, scale=("rc1", 2)),
        PodView(name="a1", ready=True, scale=("rc1", 2)),
        PodView(name="b0", ready=True, scale=("rc2", 3)),
    ]
    assert figures(status({"minAvailable": "100%"}, selected)) == (5, 5, 3, 0)


def test_a_budget_selecting_nothing_expects_nothing_and_allows_nothing() -> None:
    s = status({"minAvailable": 2}, [])
    assert figures(s) == (0, 2, 0, 0)
    assert condition(s) == ("False", "InsufficientPods")
    assert s["conditions"][0]["message"] == "No matching pods found"
    # Even a budget that would tolerate everything: expectedPods 0 allows no disruption.
    assert figures(status({"maxUnavailable": "100%"}, [])) == (0, 0, 0, 0)


def test_pods_without_a_controller_are_reported_not_fatal() -> None:
    selected = [PodView(name="bare", ready=True, has_controller=False),
                PodView(name="x", ready=True, scale=("rs", 1))]  # fmt: skip
    result = compute_status({"maxUnavailable": 1}, None, selected, generation=1, now_ns=NOW)
    assert result.unmanaged == ["bare"]
    assert figures(result.status) == (1, 0, 2, 2)


def test_a_controller_that_cannot_be_found_fails_safe() -> None:
    previous = {"disruptionsAllowed": 3, "currentHealthy": 4, "desiredHealthy": 1,
                "expectedPods": 4, "observedGeneration": 1}  # fmt: skip
    selected = [PodView(name="lost", ready=True, scale=None)]
    s = status({"minAvailable": "50%"}, selected, previous)
    assert s["disruptionsAllowed"] == 0
    [c] = s["conditions"]
    assert (c["status"], c["reason"], c["message"]) == (
        "False",
        "SyncFailed",
        'found no controllers for pod "lost"',
    )


def test_a_recent_eviction_is_not_counted_healthy_and_is_kept() -> None:
    recent = format_stamp(NOW - 10**9)
    s = status({"minAvailable": 2}, pods(3), {"disruptedPods": {"p0": recent}})
    assert figures(s) == (3, 2, 2, 0)
    assert s["disruptedPods"] == {"p0": recent}
    result = compute_status({"minAvailable": 2}, {"disruptedPods": {"p0": recent}}, pods(3),
                            generation=1, now_ns=NOW)  # fmt: skip
    assert result.recheck_ns == NOW - 10**9 + DELETION_TIMEOUT_NS


def test_an_eviction_older_than_the_deletion_timeout_counts_the_pod_again() -> None:
    old = format_stamp(NOW - DELETION_TIMEOUT_NS - 10**9)
    s = status({"minAvailable": 2}, pods(3), {"disruptedPods": {"p0": old}})
    assert figures(s) == (3, 2, 3, 1)
    assert "disruptedPods" not in s


def test_deleting_pods_are_not_healthy_and_leave_the_eviction_record() -> None:
    selected = [*pods(2), PodView(name="p9", ready=True, deleting=True, scale=("rs", 0))]
    s = status({"minAvailable": 2}, selected, {"disruptedPods": {"p9": format_stamp(NOW)}})
    assert figures(s) == (3, 2, 2, 0)
    assert "disruptedPods" not in s


def test_the_transition_time_changes_only_with_the_condition_status() -> None:
    first = status({"minAvailable": 1}, pods(3))
    later = compute_status({"minAvailable": 1}, first, pods(2), generation=1,
                           now_ns=NOW + 5 * 10**9).status  # fmt: skip
    assert later["conditions"] == first["conditions"]
    dropped = compute_status({"minAvailable": 1}, first, pods(1), generation=1,
                             now_ns=NOW + 5 * 10**9).status  # fmt: skip
    assert dropped["conditions"][0]["lastTransitionTime"] == format_stamp(NOW + 5 * 10**9)


# --------------------------------------------------------------------------------------------
# The eviction
# --------------------------------------------------------------------------------------------


def budget(allowed: int, *, healthy: int = 3, desired: int = 2, policy: str | None = None,
           generation: int = 1, observed: int = 1, disrupted: dict[str, str] | None = None) -> Budget:  # fmt: skip
    spec: dict[str, Any] = {"minAvailable": desired, "selector": {"matchLabels": {"app": "web"}}}
    if policy:
        spec["unhealthyPodEvictionPolicy"] = policy
    return Budget(
        name="web-pdb", spec=spec, generation=generation,
        status={"disruptionsAllowed": allowed, "currentHealthy": healthy,
                "desiredHealthy": desired, "expectedPods": 3, "observedGeneration": observed,
                **({"disruptedPods": disrupted} if disrupted else {})},
    )  # fmt: skip


READY = PodView(name="web-1", ready=True)
UNREADY = PodView(name="web-1", ready=False)


def test_an_allowed_eviction_uses_one_disruption_and_records_the_pod() -> None:
    verdict = decide_eviction(READY, [budget(1)], now_ns=NOW)
    assert verdict.budget == "web-pdb"
    assert verdict.status is not None
    assert verdict.status["disruptionsAllowed"] == 0
    assert verdict.status["disruptedPods"] == {"web-1": format_stamp(NOW)}
    # The last disruption used: the condition says so at once.
    assert [(c["status"], c["reason"]) for c in verdict.status["conditions"]] == [
        ("False", "InsufficientPods")
    ]


def test_an_eviction_leaving_disruptions_keeps_the_condition() -> None:
    verdict = decide_eviction(READY, [budget(2)], now_ns=NOW)
    assert verdict.status is not None and verdict.status["disruptionsAllowed"] == 1
    assert "conditions" not in verdict.status


def test_no_disruption_left_is_refused_with_kubes_words_and_cause() -> None:
    with pytest.raises(EvictionRefused) as refused:
        decide_eviction(READY, [budget(0, healthy=2, desired=2)], now_ns=NOW)
    assert refused.value.message == REFUSAL_MESSAGE
    assert refused.value.code == "too_many_requests"
    assert refused.value.as_dict()["causes"] == [
        {"reason": "DisruptionBudget",
         "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}
    ]  # fmt: skip


def test_a_budget_not_yet_observed_at_its_generation_is_refused() -> None:
    with pytest.raises(EvictionRefused) as refused:
        decide_eviction(READY, [budget(5, generation=2, observed=1)], now_ns=NOW)
    assert (
        refused.value.cause
        == "The disruption budget web-pdb is still being processed by the server."
    )
    assert refused.value.retry_after == 10


def test_more_than_one_budget_is_kubes_internal_error() -> None:
    with pytest.raises(FleetError) as failed:
        decide_eviction(READY, [budget(1), budget(1)], now_ns=NOW)
    assert failed.value.message == MULTIPLE_BUDGETS_MESSAGE
    assert failed.value.code == "internal"


@pytest.mark.parametrize("pod", [
    PodView(name="done", ready=False, phase="Succeeded"),
    PodView(name="failed", ready=False, phase="Failed"),
    PodView(name="pending", ready=False, phase="Pending"),
    PodView(name="going", ready=True, deleting=True),
])  # fmt: skip
def test_finished_pending_or_deleting_pods_ignore_budgets(pod: PodView) -> None:
    assert decide_eviction(pod, [budget(0), budget(0)], now_ns=NOW).budget is None


def test_unready_pods_pass_while_the_budget_is_healthy_without_using_it() -> None:
    assert decide_eviction(UNREADY, [budget(0, healthy=2, desired=2)], now_ns=NOW).budget is None


def test_unready_pods_under_an_unhealthy_budget_need_a_disruption() -> None:
    with pytest.raises(EvictionRefused):
        decide_eviction(UNREADY, [budget(0, healthy=1, desired=2)], now_ns=NOW)


def test_always_allow_lets_unready_pods_go_whatever_the_budget() -> None:
    verdict = decide_eviction(
        UNREADY, [budget(0, healthy=0, desired=2, policy="AlwaysAllow")], now_ns=NOW
    )
    assert verdict.budget is None
    # ... but not ready ones.
    with pytest.raises(EvictionRefused):
        decide_eviction(READY, [budget(0, policy="AlwaysAllow")], now_ns=NOW)


def test_too_many_unconfirmed_evictions_are_forbidden() -> None:
    many = {f"p{i}": format_stamp(NOW) for i in range(2001)}
    with pytest.raises(FleetError) as refused:
        decide_eviction(READY, [budget(3, disrupted=many)], now_ns=NOW)
    assert refused.value.code == "forbidden"
    assert "DisruptedPods map too big" in refused.value.message


def test_pod_view_reads_readiness_deletion_and_controller() -> None:
    manifest = {
        "metadata": {"name": "w", "ownerReferences": [{"controller": True, "kind": "ReplicaSet"}],
                     "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip
    view = pod_view(manifest, scale=("u", 3))
    assert (view.ready, view.deleting, view.has_controller, view.phase, view.scale) == (
        True,
        True,
        True,
        "Running",
        ("u", 3),
    )
    assert not pod_view({"metadata": {"name": "b"}}).has_controller


def test_preemption_reads_a_stored_budget_and_an_unsynced_one_allows_nothing() -> None:
    from core.scheduling.preemption import DisruptionBudget

    manifest = {"metadata": {"name": "b", "namespace": "shop"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
                "status": {"disruptionsAllowed": 2, "disruptedPods": {"web-1": "x"}}}  # fmt: skip
    read = DisruptionBudget.from_manifest(manifest)
    assert (read.namespace, read.disruptions_allowed, read.disrupted_pods) == (
        "shop",
        2,
        frozenset({"web-1"}),
    )
    assert read.selector.matches({"app": "web"}) and not read.selector.matches({"app": "api"})
    assert DisruptionBudget.from_manifest({"spec": {}}, namespace="x").disruptions_allowed == 0

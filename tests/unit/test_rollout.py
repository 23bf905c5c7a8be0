"""Rolling-update planning against Kubernetes' rounding and order of operations (hand-computed:
the comments walk through each step)."""

from __future__ import annotations

import pytest

from core.errors import ValidationFailed
from core.workloads.rollout import (
    ReplicaSetView,
    max_unavailable,
    plan_rolling_step,
    resolve_fenceposts,
    rollout_finished,
    scaled_value,
)


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "expected"),
    [
        ("25%", "25%", 10, (3, 2)),  # 2.5 surge rounds up, 2.5 unavailable rounds down
        ("25%", "25%", 1, (1, 0)),  # the defaults on one replica: add one, never go below one
        ("25%", "25%", 4, (1, 1)),
        (0, 0, 3, (0, 1)),  # both zero: one may be unavailable, or no progress is possible
        ("0%", "0%", 0, (0, 1)),
        ("50%", 0, 3, (2, 0)),
        (2, "1", 5, (2, 1)),  # a numeric string is an integer
        ("100%", "100%", 7, (7, 7)),
    ],
)
def test_fenceposts_round_surge_up_and_unavailable_down(surge, unavailable, desired, expected):
    assert resolve_fenceposts(surge, unavailable, desired) == expected


def test_max_unavailable_never_exceeds_the_replicas() -> None:
    assert max_unavailable(0, 5, 3) == 3


@pytest.mark.parametrize("bad", ["x%", "-1%", "1.5%", "25 %", -1, True])
def test_malformed_values_are_refused(bad) -> None:
    with pytest.raises(ValidationFailed, match="maxSurge"):
        resolve_fenceposts(bad, 0, 10)


def test_a_numeric_string_is_an_integer_not_a_percentage() -> None:
    assert scaled_value("25", 10, round_up=True) == 25


def test_a_rollout_of_four_with_surge_one_and_no_unavailability_proceeds_one_by_one() -> None:
    # 4 replicas, maxSurge 25% -> 1, maxUnavailable 0% -> 0: at most 5 pods, at least 4 available.
    new, old = ReplicaSetView("new", 0, 0, 2), [ReplicaSetView("old", 4, 4, 1)]
    step = plan_rolling_step(4, "25%", "0%", new, old)
    assert step.new_replicas == 1 and not step.old_replicas  # surge first
    new = ReplicaSetView("new", 1, 0, 2)
    step = plan_rolling_step(4, "25%", "0%", new, old)
    assert step.idle  # 5 pods exist; nothing may go until the new one is available
    new = ReplicaSetView("new", 1, 1, 2)
    step = plan_rolling_step(4, "25%", "0%", new, old)
    assert step.old_replicas == {"old": 3}  # 5 available, 4 needed: one old may go
    old = [ReplicaSetView("old", 3, 3, 1)]
    step = plan_rolling_step(4, "25%", "0%", new, old)
    assert step.new_replicas == 2  # back under 5 pods: surge again
    new, old = ReplicaSetView("new", 4, 4, 2), [ReplicaSetView("old", 0, 0, 1)]
    assert plan_rolling_step(4, "25%", "0%", new, old).idle
    assert rollout_finished(4, new, old)


def test_unhealthy_old_replicas_are_cleaned_up_before_available_ones() -> None:
    # 3 desired, surge 1, unavailable 1: min available 2. New 1 (unavailable); old 3 of which
    # only 1 is available: 4 pods, max scaled down 4 - 2 - 1 = 1, taken from the unhealthy.
    new = ReplicaSetView("new", 1, 0, 2)
    old = [ReplicaSetView("old", 3, 1, 1)]
    step = plan_rolling_step(3, 1, 1, new, old)
    assert step.old_replicas == {"old": 2}
    # 1 available in all after that, below the minimum of 2: no available one goes.


def test_older_replica_sets_are_scaled_down_first() -> None:
    # 4 desired, surge 0, unavailable 2: min available 2. New 2/2, old a(oldest) 1/1, b 2/2.
    new = ReplicaSetView("new", 2, 2, 3)
    old = [ReplicaSetView("b", 2, 2, 2), ReplicaSetView("a", 1, 1, 1)]
    step = plan_rolling_step(4, 0, 2, new, old)
    # 5 available, 2 needed: 3 may go, oldest first: a 1 -> 0, then b 2 -> 0.
    assert step.old_replicas == {"a": 0, "b": 0}


def test_a_new_replica_set_above_the_desired_count_is_scaled_down_to_it() -> None:
    step = plan_rolling_step(2, 1, 0, ReplicaSetView("new", 5, 5), [])
    assert step.new_replicas == 2

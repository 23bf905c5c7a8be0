"""Limits over time (``core.autoscaling.behavior``) against the cases of Kubernetes'
``horizontal_test.go`` (TestScalingWithRules, TestNormalizeDesiredReplicasWithBehavior,
TestCalculateScaleUpLimitWithScalingRules, TestStoreScaleEvents, TestNormalizeDesiredReplicas…),
expectations worked out by hand from ``horizontal.go``."""

from __future__ import annotations

from core.autoscaling.behavior import (
    Behavior,
    History,
    Policy,
    Recommendation,
    Rules,
    ScaleEvent,
    behavior_of,
    legacy_limits,
    normalize_legacy,
    normalize_with_behavior,
    replicas_changed_in_period,
    scale_down_limit,
    scale_up_limit,
    seeded,
    store_scale_event,
)
from core.autoscaling.model import HorizontalPodAutoscalerBehavior, HPAScalingRules

NOW = 1_800_000_000.0
UP_DEFAULT = Rules(0, "Max", (Policy("Pods", 4, 15), Policy("Percent", 100, 15)))
DOWN_DEFAULT = Rules(300, "Max", (Policy("Percent", 100, 15),))
EMPTY = History()


def rules(*policies: Policy, select: str = "Max", window: int = 0) -> Rules:
    return Rules(window, select, policies)


def normalize(
    *,
    current: int,
    desired: int,
    up: Rules = UP_DEFAULT,
    down: Rules = DOWN_DEFAULT,
    history: History = EMPTY,
    min_replicas: int = 1,
    max_replicas: int = 1000,
):
    return normalize_with_behavior(
        seeded(history, current=current, now=NOW), current=current, desired=desired,
        min_replicas=min_replicas, max_replicas=max_replicas, behavior=Behavior(up, down), now=NOW,
    )  # fmt: skip


def test_default_scale_up_is_the_larger_of_4_pods_and_100_percent() -> None:
    """TestScalingWithRules "scaleUp with default behavior": 10 -> 50 asked, 20 allowed."""
    result = normalize(current=10, desired=50)
    assert (result.replicas, result.limit_reason, result.limited) == (20, "ScaleUpLimit", True)
    assert normalize(current=1, desired=50).replicas == 5  # 1 + 4 beats 2 * 1


def test_pods_policy_larger_than_percent_policy() -> None:
    """TestScalingWithRules "scaleUp with pods policy larger than percent policy"."""
    up = rules(Policy("Pods", 100, 60), Policy("Percent", 100, 60))
    assert normalize(current=10, desired=500, up=up).replicas == 110


def test_min_select_policy_picks_the_smaller_change() -> None:
    """TestScalingWithRules "scaleUp with Min select policy" / "scaleDown with Min"."""
    up = rules(Policy("Pods", 4, 60), Policy("Percent", 100, 60), select="Min")
    assert normalize(current=10, desired=50, up=up).replicas == 14
    down = rules(Policy("Pods", 2, 60), Policy("Percent", 50, 60), select="Min")
    assert normalize(current=10, desired=1, down=down).replicas == 8


def test_disabled_select_policy_blocks_the_direction() -> None:
    """TestScalingWithRules "scaleUp with disabled policy" / "scaleDown with disabled"."""
    up = rules(Policy("Pods", 4, 60), select="Disabled")
    result = normalize(current=10, desired=50, up=up)
    assert (result.replicas, result.limit_reason) == (10, "ScaleUpLimit")
    down = rules(Policy("Pods", 4, 60), select="Disabled")
    assert normalize(current=10, desired=1, down=down).replicas == 10


def test_max_replicas_wins_over_a_looser_policy() -> None:
    """TestScalingWithRules "scaleUp with spec MaxReplicas limitation with large pod policy"
    (within range) and "...above max" (TooManyReplicas)."""
    up = rules(Policy("Pods", 100, 60))
    within = normalize(current=10, desired=50, up=up, max_replicas=100)
    assert (within.replicas, within.limit_reason, within.limited) == (
        50,
        "DesiredWithinRange",
        False,
    )
    above = normalize(current=10, desired=150, up=up, max_replicas=100)
    assert (above.replicas, above.limit_reason) == (100, "TooManyReplicas")


def test_scale_down_policies_and_min_replicas() -> None:
    """TestScalingWithRules "scaleDown with default behavior" (no window: the 100 % policy
    lets it fall to min) and "scaleDown with pod policy" (one pod at a time)."""
    no_window = rules(Policy("Percent", 100, 15))
    assert normalize(current=100, desired=5, down=no_window).replicas == 5
    one = normalize(current=10, desired=5, down=rules(Policy("Pods", 1, 60)))
    assert (one.replicas, one.limit_reason) == (9, "ScaleDownLimit")
    floor = normalize(current=10, desired=1, down=no_window, min_replicas=3)
    assert (floor.replicas, floor.limit_reason) == (3, "TooFewReplicas")


def test_percent_rounds_up_going_up_and_truncates_going_down() -> None:
    """calculateScale{Up,Down}Limit: ceil(3 * 1.1) = 4; int(7 * 0.9) = 6."""
    up = scale_up_limit(3, History(), rules(Policy("Percent", 10, 60)), now=NOW)
    assert up.limit == 4
    down = scale_down_limit(7, History(), rules(Policy("Percent", 10, 60)), now=NOW)
    assert down.limit == 6


def test_policies_count_from_the_replicas_at_the_periods_start() -> None:
    """TestScalingWithRules "scaleUp with percent policy and previous scale up events": 3 pods
    were added 10 s ago, so a +100 %/60 s policy counts from 7 at 10 now: at most 14."""
    history = History(scale_ups=(ScaleEvent(3, NOW - 10),))
    result = scale_up_limit(10, history, rules(Policy("Percent", 100, 60)), now=NOW)
    assert result.limit == 14 and result.policies[0].period_start == 7
    # An event older than the period no longer counts.
    old = History(scale_ups=(ScaleEvent(3, NOW - 61),))
    assert scale_up_limit(10, old, rules(Policy("Percent", 100, 60)), now=NOW).limit == 20


def test_scale_events_of_the_other_direction_count_too() -> None:
    """calculateScaleDownLimitWithBehaviors counts scale-ups within the period: 2 pods added
    and 5 removed in the last minute -> the period started at 13; -20 % of 13 -> 10."""
    history = History(scale_ups=(ScaleEvent(2, NOW - 5),), scale_downs=(ScaleEvent(5, NOW - 30),))
    assert scale_down_limit(10, history, rules(Policy("Percent", 20, 60)), now=NOW).limit == 10


def test_replicas_changed_in_period_is_strictly_inside() -> None:
    """getReplicasChangePerPeriod: an event exactly at the cutoff is out."""
    events = (ScaleEvent(1, NOW - 60), ScaleEvent(2, NOW - 59))
    assert replicas_changed_in_period(events, period=60, now=NOW) == 2


def test_scale_down_stabilization_holds_the_highest_recent_recommendation() -> None:
    """TestNormalizeDesiredReplicasWithBehavior "scale down stabilization": recommendations of
    5 and 4 in the last 5 minutes hold a new 3 at 5."""
    history = History(recommendations=(Recommendation(5, NOW - 100), Recommendation(4, NOW - 50)))
    result = normalize(current=5, desired=3, history=history)
    assert (result.replicas, result.able_reason) == (5, "ScaleDownStabilized")
    assert result.history.recommendations[-1] == Recommendation(3, NOW)


def test_scale_up_stabilization_holds_the_lowest_recent_recommendation() -> None:
    """TestNormalizeDesiredReplicasWithBehavior "scale up stabilization": with a 60 s scale-up
    window, a recent 3 holds a new 8 at 3 (the current count)."""
    up = rules(Policy("Pods", 100, 15), window=60)
    history = History(recommendations=(Recommendation(3, NOW - 30),))
    result = normalize(current=3, desired=8, up=up, history=history)
    assert (result.replicas, result.able_reason) == (3, "ScaleUpStabilized")


def test_recommendations_outside_both_windows_are_overwritten() -> None:
    """stabilizeRecommendationWithBehaviors replaces the (last) stale entry in place."""
    history = History(recommendations=(Recommendation(9, NOW - 1000), Recommendation(5, NOW - 10)))
    result = normalize(current=5, desired=5, history=history)
    assert result.history.recommendations == (Recommendation(5, NOW), Recommendation(5, NOW - 10))
    assert result.able_reason == "ReadyForNewScale"


def test_first_evaluation_remembers_the_current_count() -> None:
    """recordInitialRecommendation: a first scale-down is held by the current count."""
    result = normalize(current=10, desired=2)
    assert result.replicas == 10 and result.able_reason == "ScaleDownStabilized"
    no_window = normalize(current=10, desired=2, down=rules(Policy("Percent", 100, 15)))
    assert no_window.replicas == 2


def test_store_scale_event_replaces_an_outdated_event() -> None:
    """TestStoreScaleEvents: events older than the longest policy period are marked outdated
    and the last of them is reused."""
    behavior = Behavior(rules(Policy("Pods", 4, 60)), DOWN_DEFAULT)
    history = History(
        scale_ups=(ScaleEvent(1, NOW - 100), ScaleEvent(2, NOW - 90), ScaleEvent(3, NOW - 10))
    )
    after = store_scale_event(history, behavior=behavior, previous=5, new=9, now=NOW)
    assert after.scale_ups == (
        ScaleEvent(1, NOW - 100, outdated=True),
        ScaleEvent(4, NOW),
        ScaleEvent(3, NOW - 10),
    )
    assert store_scale_event(history, behavior=None, previous=5, new=9, now=NOW) is history
    down = store_scale_event(History(), behavior=behavior, previous=9, new=5, now=NOW)
    assert down.scale_downs == (ScaleEvent(4, NOW),)


def test_legacy_limits() -> None:
    """TestNormalizeDesiredReplicas / convertDesiredReplicasWithRules: max(2x, 4) up limit;
    max replicas; min replicas."""
    assert legacy_limits(current=2, desired=10, min_replicas=1, max_replicas=20)[:2] == (
        4,
        "ScaleUpLimit",
    )
    assert legacy_limits(current=5, desired=12, min_replicas=1, max_replicas=20)[:2] == (
        10,
        "ScaleUpLimit",
    )
    assert legacy_limits(current=5, desired=9, min_replicas=1, max_replicas=8)[:2] == (
        8,
        "TooManyReplicas",
    )
    assert legacy_limits(current=5, desired=1, min_replicas=2, max_replicas=8)[:2] == (
        2,
        "TooFewReplicas",
    )
    assert legacy_limits(current=5, desired=7, min_replicas=2, max_replicas=8)[:2] == (
        7,
        "DesiredWithinRange",
    )


def test_legacy_downscale_stabilization_counts_an_entry_at_the_cutoff() -> None:
    """stabilizeRecommendation: ``Before(cutoff)`` is stale, so an entry exactly 300 s old still
    holds the count (unlike the behavior path)."""
    history = History(recommendations=(Recommendation(8, NOW - 300),))
    result = normalize_legacy(
        history, current=8, desired=4, min_replicas=1, max_replicas=10, now=NOW
    )
    assert (result.replicas, result.able_reason) == (8, "ScaleDownStabilized")
    older = History(recommendations=(Recommendation(8, NOW - 301),))
    assert (
        normalize_legacy(
            older, current=8, desired=4, min_replicas=1, max_replicas=10, now=NOW
        ).replicas
        == 4
    )


def test_behavior_defaults_fill_the_controllers_window() -> None:
    """maybeInitScaleDownStabilizationWindow: an HPA that leaves the scale-down window empty
    gets the controller's (``--horizontal-pod-autoscaler-downscale-stabilization``)."""
    given = HorizontalPodAutoscalerBehavior(scale_down=HPAScalingRules(select_policy="Min"))
    behavior = behavior_of(given, downscale_stabilization=120)
    assert behavior is not None
    assert behavior.scale_down.stabilization_window_seconds == 120
    assert behavior.scale_down.select_policy == "Min"
    assert behavior_of(None) is None

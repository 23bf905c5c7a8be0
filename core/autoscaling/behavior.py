"""Limits over time: stabilisation windows, scaling policies and the legacy limits of an HPA.

Why this exists: the replica count a metric asks for is not what Kubernetes scales to. With
``behavior`` (``normalizeDesiredReplicasWithBehaviors`` in ``horizontal.go``) the
recommendation is first *stabilised* — held between the lowest recommendation of the scale-up
window and the highest of the scale-down window — then *rate-limited* by the direction's
policies (Pods or Percent per ``periodSeconds``, counted from the replicas at the start of the
period, i.e. net of the scale events inside it; ``selectPolicy`` Max, Min or Disabled), then
clamped to min/max. Without ``behavior`` (``normalizeDesiredReplicas``) the legacy rules apply:
the highest recommendation of the downscale stabilisation window (5 minutes by default), then a
scale-up limit of ``max(2 * current, 4)``.

Kubernetes keeps the recommendation and scale-event history in the controller's memory; here it
is a value (:class:`History`) passed in and returned, kept exactly as Kubernetes keeps it (a
stale entry is overwritten, not dropped), so that whoever stores it — the controller's state,
rebuilt from the log — gets the same limits as Kubernetes would. Times are seconds since the
epoch; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

from core.autoscaling.model import HorizontalPodAutoscalerBehavior, HPAScalingRules

DEFAULT_DOWNSCALE_STABILIZATION: Final = 300
"""``--horizontal-pod-autoscaler-downscale-stabilization`` (5 minutes), in seconds."""
SCALE_UP_LIMIT_FACTOR: Final = 2.0
SCALE_UP_LIMIT_MINIMUM: Final = 4.0
MIN_INT32: Final = -(2**31)
MAX_INT32: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A replica count recommended (before limits) at an instant."""

    replicas: int
    at: float


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """A scale the controller made: how many replicas it added (or removed), when; ``outdated``
    marks an entry older than the direction's longest policy period, free to be overwritten."""

    change: int
    at: float
    outdated: bool = False


@dataclass(frozen=True, slots=True)
class History:
    """What one HPA remembers between evaluations."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_ups: tuple[ScaleEvent, ...] = ()
    scale_downs: tuple[ScaleEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    type: Literal["Pods", "Percent"]
    value: int
    period_seconds: int


@dataclass(frozen=True, slots=True)
class Rules:
    """One direction's defaulted rules (``HPAScalingRules`` after defaulting and the
    controller's window filled in)."""

    stabilization_window_seconds: int
    select_policy: str
    policies: tuple[Policy, ...]


@dataclass(frozen=True, slots=True)
class Behavior:
    scale_up: Rules
    scale_down: Rules


def _rules(given: HPAScalingRules | None, *, default_window: int) -> Rules:
    rules = given or HPAScalingRules()
    window = rules.stabilization_window_seconds
    return Rules(
        stabilization_window_seconds=default_window if window is None else window,
        select_policy=rules.select_policy or "Max",
        policies=tuple(
            Policy(p.type, p.value, p.period_seconds)  # type: ignore[arg-type]
            for p in rules.policies or ()
        ),
    )


def behavior_of(
    behavior: HorizontalPodAutoscalerBehavior | None,
    *,
    downscale_stabilization: int = DEFAULT_DOWNSCALE_STABILIZATION,
) -> Behavior | None:
    """The defaulted behavior of a stored HPA with the controller's downscale window filled in
    where the HPA leaves it empty (``maybeInitScaleDownStabilizationWindow``); None when the
    HPA has no behavior (the legacy rules apply)."""
    if behavior is None:
        return None
    return Behavior(
        scale_up=_rules(behavior.scale_up, default_window=0),
        scale_down=_rules(behavior.scale_down, default_window=downscale_stabilization),
    )


# --------------------------------------------------------------------------------------------
# The recommendation history
# --------------------------------------------------------------------------------------------


def seeded(history: History, *, current: int, now: float) -> History:
    """``recordInitialRecommendation``: a first evaluation remembers the current count as a
    recommendation, so a scale-down window starts by holding the current count."""
    if history.recommendations:
        return history
    return replace(history, recommendations=(Recommendation(current, now),))


def _recorded(
    recommendations: Sequence[Recommendation], stale: int | None, new: Recommendation
) -> tuple[Recommendation, ...]:
    if stale is None:
        return (*recommendations, new)
    out = list(recommendations)
    out[stale] = new
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Stabilized:
    """A recommendation after the stabilisation window(s), and the history with it recorded."""

    replicas: int
    history: History
    reason: str
    message: str
    window_seconds: int
    """The window that held it (when ``replicas`` differs from the recommendation)."""


def stabilize_legacy(
    history: History, *, desired: int, now: float, window: int = DEFAULT_DOWNSCALE_STABILIZATION
) -> Stabilized:
    """``stabilizeRecommendation``: the highest recommendation not older than the downscale
    window (an entry exactly at the cutoff still counts); a stale entry is overwritten."""
    highest = desired
    stale: int | None = None
    cutoff = now - window
    for i, rec in enumerate(history.recommendations):
        if rec.at < cutoff:
            stale = i
        elif rec.replicas > highest:
            highest = rec.replicas
    recorded = _recorded(history.recommendations, stale, Recommendation(desired, now))
    return Stabilized(
        replicas=highest,
        history=replace(history, recommendations=recorded),
        reason="ScaleDownStabilized",
        message="recent recommendations were higher than current one, applying the highest "
        "recent recommendation",
        window_seconds=window,
    )


def stabilize_with_behavior(
    history: History, *, current: int, desired: int, behavior: Behavior, now: float
) -> Stabilized:
    """``stabilizeRecommendationWithBehaviors``: the recommendation is brought between the
    lowest recommendation of the scale-up window and the highest of the scale-down window
    (entries strictly after each cutoff), starting from the current count."""
    up_window = behavior.scale_up.stabilization_window_seconds
    down_window = behavior.scale_down.stabilization_window_seconds
    up_cutoff, down_cutoff = now - up_window, now - down_window
    up_limit = down_limit = desired
    stale: int | None = None
    for i, rec in enumerate(history.recommendations):
        if rec.at > up_cutoff:
            up_limit = min(rec.replicas, up_limit)
        if rec.at > down_cutoff:
            down_limit = max(rec.replicas, down_limit)
        if rec.at < up_cutoff and rec.at < down_cutoff:
            stale = i
    replicas = current
    if replicas < up_limit:
        replicas = up_limit
    if replicas > down_limit:
        replicas = down_limit
    recorded = _recorded(history.recommendations, stale, Recommendation(desired, now))
    if desired >= current:
        reason, window = "ScaleUpStabilized", up_window
        message = (
            "recent recommendations were lower than current one, applying the lowest recent "
            "recommendation"
        )
    else:
        reason, window = "ScaleDownStabilized", down_window
        message = (
            "recent recommendations were higher than current one, applying the highest recent "
            "recommendation"
        )
    return Stabilized(
        replicas=replicas,
        history=replace(history, recommendations=recorded),
        reason=reason,
        message=message,
        window_seconds=window,
    )


# --------------------------------------------------------------------------------------------
# Rate limits
# --------------------------------------------------------------------------------------------


def replicas_changed_in_period(events: Sequence[ScaleEvent], *, period: int, now: float) -> int:
    """``getReplicasChangePerPeriod``: replicas added (or removed) by the events strictly
    inside the last ``period`` seconds."""
    cutoff = now - period
    return sum(e.change for e in events if e.at > cutoff)


@dataclass(frozen=True, slots=True)
class PolicyLimit:
    """One policy's bound: the replicas at its period's start and the count it allows."""

    policy: Policy
    period_start: int
    allowed: int


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A direction's bound on the replica count and each policy's part in it."""

    limit: int
    select_policy: str
    policies: tuple[PolicyLimit, ...] = ()


def _period_start(current: int, history: History, policy: Policy, now: float) -> int:
    added = replicas_changed_in_period(history.scale_ups, period=policy.period_seconds, now=now)
    removed = replicas_changed_in_period(history.scale_downs, period=policy.period_seconds, now=now)
    return current - added + removed


def scale_up_limit(current: int, history: History, rules: Rules, *, now: float) -> RateLimit:
    """``calculateScaleUpLimitWithScalingRules``: the most replicas the policies allow now
    (Percent rounds up, so a policy always lets at least one pod be added)."""
    if rules.select_policy == "Disabled":
        return RateLimit(current, "Disabled")
    pick = min if rules.select_policy == "Min" else max
    result = MAX_INT32 if rules.select_policy == "Min" else MIN_INT32
    parts: list[PolicyLimit] = []
    for policy in rules.policies:
        start = _period_start(current, history, policy, now)
        if policy.type == "Pods":
            allowed = start + policy.value
        else:
            allowed = math.ceil(start * (1 + policy.value / 100))
        parts.append(PolicyLimit(policy, start, allowed))
        result = pick(result, allowed)
    return RateLimit(result, rules.select_policy, tuple(parts))


def scale_down_limit(current: int, history: History, rules: Rules, *, now: float) -> RateLimit:
    """``calculateScaleDownLimitWithBehaviors``: the fewest replicas the policies allow now
    (Percent truncates toward zero)."""
    if rules.select_policy == "Disabled":
        return RateLimit(current, "Disabled")
    pick = max if rules.select_policy == "Min" else min
    result = MIN_INT32 if rules.select_policy == "Min" else MAX_INT32
    parts: list[PolicyLimit] = []
    for policy in rules.policies:
        start = _period_start(current, history, policy, now)
        if policy.type == "Pods":
            allowed = start - policy.value
        else:
            allowed = int(start * (1 - policy.value / 100))
        parts.append(PolicyLimit(policy, start, allowed))
        result = pick(result, allowed)
    return RateLimit(result, rules.select_policy, tuple(parts))


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------

WITHIN_RANGE: Final = ("DesiredWithinRange", "the desired count is within the acceptable range")
SCALE_UP_LIMIT: Final = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
)
SCALE_DOWN_LIMIT: Final = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
)
TOO_MANY: Final = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
)
TOO_FEW: Final = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
)


@dataclass(frozen=True, slots=True)
class Normalized:
    """The replica count to scale to, and why: the recommendation, its stabilised value, the
    limit that applied (``limit_reason``, ``ScalingLimited`` True when it changed the count)
    and the ``AbleToScale`` reason; plus the history to keep."""

    replicas: int
    recommendation: int
    stabilized: int
    able_reason: str
    able_message: str
    limited: bool
    limit_reason: str
    limit_message: str
    history: History
    window_seconds: int | None = None
    rate_limit: RateLimit | None = None
    bounds: tuple[int, int] = (0, 0)
    """(lowest, highest) replica count allowed after every limit."""


def _able(stabilized: Stabilized, recommendation: int) -> tuple[str, str, int | None]:
    if stabilized.replicas != recommendation:
        return stabilized.reason, stabilized.message, stabilized.window_seconds
    return "ReadyForNewScale", "recommended size matches current size", None


def legacy_limits(
    *, current: int, desired: int, min_replicas: int, max_replicas: int
) -> tuple[int, str, str, int]:
    """``convertDesiredReplicasWithRules``: (replicas, reason, message, highest allowed)."""
    scale_up_limit_ = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > scale_up_limit_:
        highest, (reason, message) = scale_up_limit_, SCALE_UP_LIMIT
    else:
        highest, (reason, message) = max_replicas, TOO_MANY
    if desired < min_replicas:
        return min_replicas, *TOO_FEW, highest
    if desired > highest:
        return highest, reason, message, highest
    return desired, *WITHIN_RANGE, highest


def normalize_legacy(
    history: History,
    *,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    now: float,
    downscale_stabilization: int = DEFAULT_DOWNSCALE_STABILIZATION,
) -> Normalized:
    """``normalizeDesiredReplicas``: the downscale window, then the legacy limits."""
    stabilized = stabilize_legacy(history, desired=desired, now=now, window=downscale_stabilization)
    able_reason, able_message, window = _able(stabilized, desired)
    replicas, reason, message, highest = legacy_limits(
        current=current,
        desired=stabilized.replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
    )
    return Normalized(
        replicas=replicas,
        recommendation=desired,
        stabilized=stabilized.replicas,
        able_reason=able_reason,
        able_message=able_message,
        limited=replicas != stabilized.replicas,
        limit_reason=reason,
        limit_message=message,
        history=stabilized.history,
        window_seconds=window,
        bounds=(min_replicas, highest),
    )


def normalize_with_behavior(
    history: History,
    *,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    behavior: Behavior,
    now: float,
) -> Normalized:
    """``normalizeDesiredReplicasWithBehaviors``: stabilise, then the direction's policies
    (``convertDesiredReplicasWithBehaviorRate``) and min/max."""
    stabilized = stabilize_with_behavior(
        history, current=current, desired=desired, behavior=behavior, now=now
    )
    able_reason, able_message, window = _able(stabilized, desired)
    target = stabilized.replicas
    replicas, (reason, message) = target, WITHIN_RANGE
    rate: RateLimit | None = None
    bounds = (min_replicas, max_replicas)
    if target > current:
        rate = scale_up_limit(current, history, behavior.scale_up, now=now)
        limit = max(rate.limit, current)
        if max_replicas > limit:
            highest, why = limit, SCALE_UP_LIMIT
        else:
            highest, why = max_replicas, TOO_MANY
        bounds = (min_replicas, highest)
        if target > highest:
            replicas, (reason, message) = highest, why
    elif target < current:
        rate = scale_down_limit(current, history, behavior.scale_down, now=now)
        limit = min(rate.limit, current)
        if min_replicas < limit:
            lowest, why = limit, SCALE_DOWN_LIMIT
        else:
            lowest, why = min_replicas, TOO_FEW
        bounds = (lowest, max_replicas)
        if target < lowest:
            replicas, (reason, message) = lowest, why
    return Normalized(
        replicas=replicas,
        recommendation=desired,
        stabilized=target,
        able_reason=able_reason,
        able_message=able_message,
        limited=replicas != target,
        limit_reason=reason,
        limit_message=message,
        history=stabilized.history,
        window_seconds=window,
        rate_limit=rate,
        bounds=bounds,
    )


def _longest_period(rules: Rules) -> int:
    return max((p.period_seconds for p in rules.policies), default=0)


def _stored(
    events: Sequence[ScaleEvent], rules: Rules, change: int, now: float
) -> tuple[ScaleEvent, ...]:
    cutoff = now - _longest_period(rules)
    marked = [replace(e, outdated=True) if e.at < cutoff else e for e in events]
    stale = max((i for i, e in enumerate(marked) if e.outdated), default=None)
    new = ScaleEvent(change, now)
    if stale is None:
        return (*marked, new)
    marked[stale] = new
    return tuple(marked)


def store_scale_event(
    history: History, *, behavior: Behavior | None, previous: int, new: int, now: float
) -> History:
    """``storeScaleEvent``: after a rescale, remember it for the policies' periods (only with
    ``behavior``: the legacy rules do not look back)."""
    if behavior is None:
        return history
    if new > previous:
        return replace(
            history, scale_ups=_stored(history.scale_ups, behavior.scale_up, new - previous, now)
        )
    return replace(
        history,
        scale_downs=_stored(history.scale_downs, behavior.scale_down, previous - new, now),
    )

"""Rolling-update planning as the Kubernetes deployment controller does it, as pure functions.

Why this exists: how many new pods may be added and how many old ones removed at each step is
where a rollout either keeps the service up or does not, and Kubernetes' answer depends on
exact rounding (``maxSurge`` rounds up, ``maxUnavailable`` rounds down, both zero means one
may be unavailable) and on an order of operations (scale the new replica set up first; then
clean up unhealthy old replicas; then scale old ones down only as far as availability
allows). The deployment controller (a handler) asks :func:`plan_rolling_step` what to do next
given the replica sets it sees, records what it did as events, and asks again when pods
become available. Reference: Kubernetes pkg/controller/deployment (rolling.go,
util/deployment_util.go).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.errors import ValidationFailed

__all__ = [
    "ReplicaSetView",
    "RollingStep",
    "max_surge",
    "max_unavailable",
    "new_replica_set_replicas",
    "plan_rolling_step",
    "resolve_fenceposts",
    "scaled_value",
]

_PERCENT = re.compile(r"^(\d+)%$")


def scaled_value(value: int | str, total: int, *, round_up: bool, field_name: str = "") -> int:
    """``intstr.GetScaledValueFromIntOrPercent``: an int as is, ``"N%"`` of ``total`` rounded
    up or down."""
    if isinstance(value, bool):
        raise ValidationFailed(f"{field_name or 'value'} must be an integer or a percentage")
    if isinstance(value, int):
        if value < 0:
            raise ValidationFailed(f"{field_name or 'value'} must not be negative")
        return value
    match = _PERCENT.match(value)
    if match is None:
        if value.isdigit():  # a numeric string is an integer, as intstr parses it
            return int(value)
        raise ValidationFailed(
            f'{field_name or "value"} must be an integer or a percentage like "25%", not {value!r}'
        )
    percent = int(match.group(1))
    exact = percent * total
    return -(-exact // 100) if round_up else exact // 100


def resolve_fenceposts(surge: int | str, unavailable: int | str, desired: int) -> tuple[int, int]:
    """``ResolveFenceposts``: (maxSurge, maxUnavailable) as counts for ``desired`` replicas.

    Surge rounds up, unavailable rounds down, and if both come out zero, one replica may be
    unavailable (otherwise the rollout could never make progress)."""
    surge_count = scaled_value(surge, desired, round_up=True, field_name="maxSurge")
    unavailable_count = scaled_value(
        unavailable, desired, round_up=False, field_name="maxUnavailable"
    )
    if surge_count == 0 and unavailable_count == 0:
        unavailable_count = 1
    return surge_count, unavailable_count


def max_surge(surge: int | str, unavailable: int | str, desired: int) -> int:
    return resolve_fenceposts(surge, unavailable, desired)[0]


def max_unavailable(surge: int | str, unavailable: int | str, desired: int) -> int:
    """``MaxUnavailable``: never more than the replicas themselves."""
    return min(resolve_fenceposts(surge, unavailable, desired)[1], desired)


@dataclass(frozen=True)
class ReplicaSetView:
    """What a rollout step reads of one replica set: its target and available pods, and its
    creation order (older first)."""

    name: str
    replicas: int
    available: int
    created: float = 0.0


def new_replica_set_replicas(
    desired: int, surge: int | str, unavailable: int | str, all_replicas: int, new_replicas: int
) -> int:
    """``NewRSNewReplicas`` for RollingUpdate: scale the new replica set up as far as the
    surge allows, and never beyond ``desired``."""
    max_total = desired + max_surge(surge, unavailable, desired)
    if all_replicas >= max_total:
        return new_replicas
    scale_up = min(max_total - all_replicas, desired - new_replicas)
    return new_replicas + scale_up


@dataclass(frozen=True)
class RollingStep:
    """What to do now: a new target for the new replica set, or new targets for old ones
    (name -> replicas), or nothing until more pods become available."""

    new_replicas: int | None = None
    old_replicas: dict[str, int] = field(default_factory=dict)
    reason: str = ""

    @property
    def idle(self) -> bool:
        return self.new_replicas is None and not self.old_replicas


def plan_rolling_step(
    desired: int,
    surge: int | str,
    unavailable: int | str,
    new: ReplicaSetView,
    old: Sequence[ReplicaSetView],
    *,
    present: int | None = None,
) -> RollingStep:
    """One pass of ``rolloutRolling``: scale the new replica set up if the surge allows;
    otherwise scale old ones down — first their unhealthy replicas, then available ones down to
    ``desired - maxUnavailable`` available in all.

    ``present``, when given, is how many pods the replica sets have or will have (for each,
    the larger of its target and its live pods): the surge is measured against it, so pods an
    old replica set has not yet deleted count until they are gone — the pod count itself never
    exceeds ``desired + maxSurge`` (Kubernetes measures only the targets)."""
    # reconcileNewReplicaSet
    if new.replicas > desired:
        return RollingStep(new_replicas=desired, reason="new replica set above the desired count")
    if new.replicas < desired:
        all_replicas = new.replicas + sum(rs.replicas for rs in old)
        if present is not None:
            all_replicas = max(all_replicas, present)
        target = new_replica_set_replicas(desired, surge, unavailable, all_replicas, new.replicas)
        if target != new.replicas:
            return RollingStep(
                new_replicas=target,
                reason=f"scaled up new replica set to {target} (max surge "
                f"{max_surge(surge, unavailable, desired)})",
            )
    # reconcileOldReplicaSets
    old_count = sum(rs.replicas for rs in old)
    if old_count == 0:
        return RollingStep(reason="no old replicas left")
    all_count = old_count + new.replicas
    min_available = desired - max_unavailable(surge, unavailable, desired)
    new_unavailable = new.replicas - new.available
    max_scaled_down = all_count - min_available - new_unavailable
    if max_scaled_down <= 0:
        return RollingStep(reason="waiting for new pods to become available")
    ordered = sorted(old, key=lambda rs: (rs.created, rs.name))
    targets: dict[str, int] = {}
    # cleanupUnhealthyReplicas: unhealthy old replicas go first, they cost no availability.
    cleaned = 0
    for rs in ordered:
        if cleaned >= max_scaled_down:
            break
        if rs.replicas == 0 or rs.replicas == rs.available:
            continue
        down = min(max_scaled_down - cleaned, rs.replicas - rs.available)
        targets[rs.name] = rs.replicas - down
        cleaned += down
    # scaleDownOldReplicaSetsForRollingUpdate: then available ones, as availability allows.
    current = {rs.name: targets.get(rs.name, rs.replicas) for rs in ordered}
    available = new.available + sum(min(rs.available, current[rs.name]) for rs in ordered)
    if available > min_available:
        to_scale_down = available - min_available
        scaled = 0
        for rs in ordered:
            if scaled >= to_scale_down:
                break
            if current[rs.name] == 0:
                continue
            down = min(current[rs.name], to_scale_down - scaled)
            targets[rs.name] = current[rs.name] - down
            scaled += down
    if not targets:
        return RollingStep(reason="waiting for new pods to become available")
    return RollingStep(
        old_replicas=targets,
        reason=f"scaled down old replica sets (min available {min_available})",
    )


def rollout_finished(desired: int, new: ReplicaSetView, old: Sequence[ReplicaSetView]) -> bool:
    """Every desired replica is new and available, and no old replica is left."""
    return (
        new.replicas == desired and new.available >= desired and all(rs.replicas == 0 for rs in old)
    )

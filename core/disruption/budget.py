"""The disruption controller's arithmetic and the eviction subresource's decision, pure.

Why this exists: whether an eviction may go ahead is a decision over two aggregates (the pod and
its budget) that must be taken exactly as Kubernetes takes it, so that operators' intuition and
``kubectl drain``'s behaviour carry over; and the numbers it reads (``status.disruptionsAllowed``
…) must be computed as kube's disruption controller computes them. Both are here as functions
of plain values, written from ``pkg/controller/disruption/disruption.go`` and
``pkg/registry/core/pod/storage/eviction.go`` (rules re-stated, not translated):

* **Expected pods and desired healthy** (:func:`expected_and_desired`): ``maxUnavailable``, and
  a percentage ``minAvailable``, are taken of the *scale* of the pods' controllers (each
  controller counted once; a ReplicaSet owned by a Deployment counts as the Deployment), with
  percentages rounded **up**; an integer ``minAvailable`` is taken as is, over the number of
  pods selected. A pod with no controller is *unmanaged* (reported, not fatal); a pod whose
  controller cannot be found fails the sync (``found no controllers for pod "x"``).
* **Current healthy** (:func:`count_healthy`): Ready pods, not being deleted, not recorded in
  ``disruptedPods`` within the last two minutes (``DeletionTimeout``).
* **Disruptions allowed**: healthy minus desired, never below 0, and 0 while no pod is expected
  (a budget that selects nothing is safe when its first pods appear).
* **The eviction** (:func:`decide_eviction`): a finished, pending or deleting pod is deleted
  without looking at budgets; more than one budget is kube's 500; an unready pod passes without
  using the budget under ``AlwaysAllow``, or under ``IfHealthyBudget`` while the budget is
  healthy; otherwise a budget whose controller has not seen its generation, or with no
  disruption left, refuses with kube's 429 words; else one disruption is used and the pod is
  recorded in ``disruptedPods`` — in the same append as the pod's deletion.

No clock is read: ``now_ns`` is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from core.errors import FleetError
from core.meta.labels import Selector
from core.meta.timestamps import format_stamp, parse_stamp

DELETION_TIMEOUT_NS: Final = 120 * 10**9
"""``DeletionTimeout``: an eviction recorded in ``disruptedPods`` counts the pod as gone for
this long; a pod still there afterwards is counted again (kube's ``NotDeleted``)."""
MAX_DISRUPTED_POD_SIZE: Final = 2000
"""``MaxDisruptedPodSize``: more evictions not yet confirmed than this are refused."""
CONDITION_TYPE: Final = "DisruptionAllowed"
SUFFICIENT_PODS: Final = "SufficientPods"
INSUFFICIENT_PODS: Final = "InsufficientPods"
SYNC_FAILED: Final = "SyncFailed"
DISRUPTION_BUDGET_CAUSE: Final = "DisruptionBudget"
"""``policyv1.DisruptionBudgetCause``: the cause type of a 429 refusal."""
REFUSAL_MESSAGE: Final = "Cannot evict pod as it would violate the pod's disruption budget."
MULTIPLE_BUDGETS_MESSAGE: Final = (
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not "
    "support."
)


class SyncFailed(Exception):
    """The status cannot be computed (kube's ``SyncFailed`` condition carries the message)."""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodView:
    """What the controller and the eviction read of a pod."""

    name: str
    ready: bool
    deleting: bool = False
    phase: str = "Running"
    has_controller: bool = True
    """Whether the pod names a controller (an ``ownerReferences`` entry with controller)."""
    scale: tuple[str, int] | None = None
    """The pod's controller's (uid, desired replicas), found by the caller as kube's finders
    find it (a ReplicaSet owned by a Deployment is the Deployment); None: not found."""


def pod_view(manifest: Mapping[str, Any], *, scale: tuple[str, int] | None = None) -> PodView:
    """A :class:`PodView` of a pod manifest (``scale`` found by the caller)."""
    metadata = manifest.get("metadata") or {}
    status = manifest.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return PodView(
        name=str(metadata.get("name", "")),
        ready=ready,
        deleting=bool(metadata.get("deletionTimestamp")),
        phase=str(status.get("phase") or "Pending"),
        has_controller=any(r.get("controller") for r in metadata.get("ownerReferences") or ()),
        scale=scale,
    )


def budget_selector(spec: Mapping[str, Any]) -> Selector:
    """The budget's pod selector as the controller reads it (absent: matches nothing)."""
    return Selector.from_manifest(spec.get("selector"))


def eviction_matches(spec: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether the eviction path counts this budget for a pod with ``labels``: as kube's
    ``getPodDisruptionBudgets``, a nil or empty selector matches nothing there."""
    selector = budget_selector(spec)
    return not selector.empty and selector.matches(labels)


# --------------------------------------------------------------------------------------------
# The controller's arithmetic
# --------------------------------------------------------------------------------------------


def scaled_value(value: int | str, total: int) -> int:
    """``GetScaledValueFromIntOrPercent`` rounding up: an integer as is, a percentage of
    ``total`` rounded up."""
    if isinstance(value, int):
        return value
    return math.ceil(int(value.rstrip("%")) * total / 100)


def expected_scale(pods: Sequence[PodView]) -> tuple[int, list[str]]:
    """The sum of the scales of the pods' controllers, each counted once, and the names of the
    pods with no controller; :class:`SyncFailed` when a pod's controller is not found."""
    scales: dict[str, int] = {}
    unmanaged: list[str] = []
    for pod in pods:
        if not pod.has_controller:
            unmanaged.append(pod.name)
            continue
        if pod.scale is None:
            raise SyncFailed(f'found no controllers for pod "{pod.name}"')
        uid, replicas = pod.scale
        scales.setdefault(uid, replicas)
    return sum(scales.values()), unmanaged


def expected_and_desired(
    spec: Mapping[str, Any], pods: Sequence[PodView]
) -> tuple[int, int, list[str]]:
    """(expectedPods, desiredHealthy, unmanaged pod names) as ``getExpectedPodCount``."""
    max_unavailable = spec.get("maxUnavailable")
    min_available = spec.get("minAvailable")
    if max_unavailable is not None:
        expected, unmanaged = expected_scale(pods)
        desired = max(0, expected - scaled_value(max_unavailable, expected))
        return expected, desired, unmanaged
    if isinstance(min_available, int):
        return len(pods), min_available, []
    if isinstance(min_available, str):
        expected, unmanaged = expected_scale(pods)
        return expected, scaled_value(min_available, expected), unmanaged
    return 0, 0, []


def live_disruptions(
    recorded: Mapping[str, str] | None, pods: Sequence[PodView], now_ns: int
) -> tuple[dict[str, str], int | None]:
    """``buildDisruptedPodMap``: the recorded evictions still pending (the pod is selected, not
    yet being deleted, and recorded less than ``DeletionTimeout`` ago), and when the earliest
    of them runs out (ns; None: none pending)."""
    kept: dict[str, str] = {}
    recheck: int | None = None
    if not recorded:
        return kept, recheck
    for pod in pods:
        if pod.deleting or pod.name not in recorded:
            continue
        at = parse_stamp(recorded[pod.name])
        if at is None:
            continue
        expires = at + DELETION_TIMEOUT_NS
        if expires < now_ns:
            continue  # expected to be deleted and was not: counted again
        kept[pod.name] = recorded[pod.name]
        recheck = expires if recheck is None else min(recheck, expires)
    return kept, recheck


def count_healthy(pods: Sequence[PodView], disrupted: Mapping[str, str], now_ns: int) -> int:
    """``countHealthyPods``: Ready, not being deleted, not recently evicted."""
    healthy = 0
    for pod in pods:
        if pod.deleting:
            continue
        at = parse_stamp(disrupted[pod.name]) if pod.name in disrupted else None
        if at is not None and at + DELETION_TIMEOUT_NS > now_ns:
            continue
        if pod.ready:
            healthy += 1
    return healthy


def with_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    *,
    status: str,
    reason: str,
    message: str,
    observed_generation: int,
    now_ns: int,
) -> list[dict[str, Any]]:
    """``meta.SetStatusCondition`` for DisruptionAllowed: its transition time changes only
    when its status does."""
    out: list[dict[str, Any]] = []
    previous: Mapping[str, Any] | None = None
    for condition in conditions or ():
        if condition.get("type") == CONDITION_TYPE:
            previous = condition
        else:
            out.append(dict(condition))
    since = (
        previous.get("lastTransitionTime")
        if previous is not None and previous.get("status") == status
        else None
    ) or format_stamp(now_ns)
    out.append({
        "type": CONDITION_TYPE, "status": status, "reason": reason, "message": message,
        "observedGeneration": observed_generation, "lastTransitionTime": since,
    })  # fmt: skip
    return out


NO_PODS_MESSAGE: Final = "No matching pods found"
"""What kube's controller says (as a ``NoPods`` event) of a budget selecting no pod; fleetlog
puts it in the condition's message, where ``kubectl describe pdb`` and ``get -o yaml`` show it."""


def allowed_condition(
    status: Mapping[str, Any], *, generation: int, now_ns: int, message: str = ""
) -> list[dict[str, Any]]:
    """``UpdateDisruptionAllowedCondition``: True/SufficientPods while a disruption is
    allowed, else False/InsufficientPods (``message``: fleetlog's, see ``NO_PODS_MESSAGE``)."""
    allowed = int(status.get("disruptionsAllowed") or 0) > 0
    return with_condition(
        status.get("conditions"),
        status="True" if allowed else "False",
        reason=SUFFICIENT_PODS if allowed else INSUFFICIENT_PODS,
        message=message,
        observed_generation=generation,
        now_ns=now_ns,
    )


@dataclass(frozen=True)
class BudgetStatus:
    """What a sync computed: the status to record and when to look again."""

    status: dict[str, Any]
    recheck_ns: int | None = None
    """When a pending eviction record runs out (the controller syncs again then)."""
    unmanaged: list[str] = field(default_factory=list)


def compute_status(
    spec: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    pods: Sequence[PodView],
    *,
    generation: int,
    now_ns: int,
) -> BudgetStatus:
    """The status kube's disruption controller would record for a budget with ``spec`` at
    ``generation`` over the selected ``pods``, from its ``previous`` status (its conditions and
    pending evictions). A sync that cannot compute (a pod whose controller is not found) gives
    kube's fail-safe status: the previous figures, no disruption allowed, SyncFailed."""
    previous = previous or {}
    try:
        expected, desired, unmanaged = expected_and_desired(spec, pods)
    except SyncFailed as exc:
        failed = {**previous, "disruptionsAllowed": 0}
        failed.setdefault("currentHealthy", 0)
        failed.setdefault("desiredHealthy", 0)
        failed.setdefault("expectedPods", 0)
        failed["conditions"] = with_condition(
            previous.get("conditions"), status="False", reason=SYNC_FAILED, message=str(exc),
            observed_generation=int(previous.get("observedGeneration") or 0), now_ns=now_ns,
        )  # fmt: skip
        return BudgetStatus(failed)
    disrupted, recheck = live_disruptions(previous.get("disruptedPods"), pods, now_ns)
    healthy = count_healthy(pods, disrupted, now_ns)
    allowed = healthy - desired
    if expected <= 0 or allowed <= 0:
        allowed = 0
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": previous.get("conditions"),
    }
    if disrupted:
        status["disruptedPods"] = disrupted
    status["conditions"] = allowed_condition(
        status, generation=generation, now_ns=now_ns, message="" if pods else NO_PODS_MESSAGE
    )
    return BudgetStatus(status, recheck, unmanaged)


# --------------------------------------------------------------------------------------------
# The eviction
# --------------------------------------------------------------------------------------------


class EvictionRefused(FleetError):
    """An eviction a budget refuses: kube's 429 TooManyRequests, with the DisruptionBudget
    cause saying which budget and why."""

    code = "too_many_requests"

    def __init__(self, message: str, *, cause: str, retry_after: int) -> None:
        super().__init__(message)
        self.cause = cause
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        out["causes"] = [{"reason": DISRUPTION_BUDGET_CAUSE, "message": self.cause}]
        out["retry_after"] = self.retry_after
        return out


def not_processed(name: str) -> EvictionRefused:
    """``createTooManyRequestsError``: the controller has not yet seen the budget's spec."""
    return EvictionRefused(
        REFUSAL_MESSAGE,
        cause=f"The disruption budget {name} is still being processed by the server.",
        retry_after=10,
    )


@dataclass(frozen=True)
class Budget:
    """A budget as the eviction reads it: its name, spec, generation and status."""

    name: str
    spec: Mapping[str, Any]
    generation: int
    status: Mapping[str, Any]


@dataclass(frozen=True)
class EvictionVerdict:
    """What an allowed eviction does beside deleting the pod: the status to record on the
    budget it used (None: no budget is changed)."""

    budget: str | None = None
    status: dict[str, Any] | None = None


def decide_eviction(pod: PodView, budgets: Sequence[Budget], *, now_ns: int) -> EvictionVerdict:
    """Whether ``pod`` may be evicted under the ``budgets`` that match it, and what the budget
    records if so; raises :class:`EvictionRefused` (429), or a 500 (several budgets) or 403
    (a broken budget) as kube does."""
    if pod.phase in ("Succeeded", "Failed", "Pending") or pod.deleting:
        return EvictionVerdict()  # canIgnorePDB: the disruption already happened, or none will
    if len(budgets) > 1:
        raise FleetError(MULTIPLE_BUDGETS_MESSAGE, code="internal")
    if not budgets:
        return EvictionVerdict()
    budget = budgets[0]
    status = budget.status
    if not pod.ready:
        if budget.spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
            return EvictionVerdict()
        current = int(status.get("currentHealthy") or 0)
        desired = int(status.get("desiredHealthy") or 0)
        if current >= desired and desired > 0:
            return EvictionVerdict()
    if int(status.get("observedGeneration") or 0) < budget.generation:
        raise not_processed(budget.name)
    allowed = int(status.get("disruptionsAllowed") or 0)
    disrupted = dict(status.get("disruptedPods") or {})
    if allowed < 0:
        raise FleetError(
            f'poddisruptionbudgets.policy "{budget.name}" is forbidden: pdb disruptions allowed '
            "is negative",
            code="forbidden",
        )
    if len(disrupted) > MAX_DISRUPTED_POD_SIZE:
        raise FleetError(
            f'poddisruptionbudgets.policy "{budget.name}" is forbidden: DisruptedPods map too '
            "big - too many evictions not confirmed by PDB controller",
            code="forbidden",
        )
    if allowed == 0:
        raise EvictionRefused(
            REFUSAL_MESSAGE,
            cause=(
                f"The disruption budget {budget.name} needs "
                f"{int(status.get('desiredHealthy') or 0)} healthy pods and has "
                f"{int(status.get('currentHealthy') or 0)} currently"
            ),
            retry_after=0,
        )
    new_status = {**status, "disruptionsAllowed": allowed - 1}
    if allowed - 1 == 0:
        new_status["conditions"] = allowed_condition(
            new_status, generation=int(status.get("observedGeneration") or 0), now_ns=now_ns
        )
    disrupted[pod.name] = format_stamp(now_ns)
    new_status["disruptedPods"] = disrupted
    return EvictionVerdict(budget=budget.name, status=new_status)

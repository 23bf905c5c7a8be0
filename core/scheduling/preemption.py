"""Preemption: when a pod fits nowhere, which lower-priority pods to evict, and on which node.

Why this exists: a high-priority pod that does not fit must displace the same pods Kubernetes
would displace, and a pod that cannot be helped must be told so in Kubernetes' words. This is
kube-scheduler's DefaultPreemption PostFilter (``defaultpreemption/default_preemption.go`` and
``framework/preemption/preemption.go``) as pure functions over :class:`PodInfo` /
:class:`NodeInfo`; deleting the victims and setting ``status.nominatedNodeName`` is the caller's
business.

The steps, as in Kubernetes:

1. :func:`pod_eligible_to_preempt_others`: ``preemptionPolicy: Never`` never preempts; a pod whose
   nominated node still holds a lower-priority pod being deleted waits for it.
2. Candidate nodes are those whose filter failure was ``Unschedulable`` (resolvable), not
   ``UnschedulableAndUnresolvable`` (no eviction can fix an untolerated taint).
3. :func:`dry_run_preemption` visits them from a random offset, round-robin, and stops once it has
   ``numCandidates`` (10 % of the candidate nodes, at least 100, at most all) with at least one
   that violates no PodDisruptionBudget.
4. :func:`select_victims_on_node` removes every pod of lower priority (never an equal one), checks
   the pod then fits with the real filters, and reprieves the removed pods most important first
   (higher priority, then earlier start), PDB-violating ones before the others, keeping each one
   that still lets the pod fit; the rest are the victims.
5. :func:`pick_one_node_for_preemption`: fewest PDB violations, lowest highest-victim priority,
   smallest sum of victim priorities (each shifted by 2^31 so that negative priorities count as
   Kubernetes counts them), fewest victims, latest start among the highest-priority victims,
   then the first in visiting order.

Removing a pod from a node copy also updates what PodTopologySpread and InterPodAffinity
computed over the whole cluster in PreFilter (their ``AddPod``/``RemovePod`` extensions), so
spreading and anti-affinity see the node as it would be. The caller's NodeInfos are never changed:
each visited node is copied.

Simplifications versus Kubernetes: no nominated pods are added to nodes before filtering; the
nominated-node check treats any deleting lower-priority pod as being preempted (Kubernetes looks
for the ``DisruptionTarget``/``PreemptionByScheduler`` condition); no extenders; the final tie
goes to the first node visited (Go iterates a map: effectively random, but the visiting order
already starts at a random offset); filter plugins other than the default ones are assumed to
read only the node they are given. A pod without a known start time counts as started "now"
(later than any known start), as ``util.GetPodStartTime`` does.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from core.meta.labels import Selector
from core.scheduling.filters import (
    FilterFailure,
    FilterPlugin,
    Snapshot,
    _AffinityFilterState,
    _SpreadFilterState,
    spread_node_included,
)
from core.scheduling.framework import (
    PreemptionConfig,
    SchedulerConfig,
    ScheduleResult,
    failure_message,
)
from core.scheduling.model import NodeInfo, PodInfo

__all__ = [
    "NOT_ELIGIBLE_NEVER",
    "NOT_ELIGIBLE_TERMINATING",
    "NOT_HELPFUL_REASON",
    "NO_CLAIMS_TO_DEALLOCATE",
    "NO_VICTIMS_REASON",
    "PREEMPTION_PREFIX",
    "Candidate",
    "DisruptionBudget",
    "PreemptionConfig",
    "PreemptionResult",
    "Victim",
    "VictimSelection",
    "calculate_num_candidates",
    "dry_run_preemption",
    "filter_pods_with_pdb_violation",
    "importance_key",
    "more_important_pod",
    "offset_and_num_candidates",
    "pick_one_node_for_preemption",
    "pod_eligible_to_preempt_others",
    "post_filter_message",
    "preempt",
    "select_victims_on_node",
    "victim_condition",
    "victim_event_message",
]

PREEMPTION_PREFIX: Final = "preemption: "
"""DefaultPreemption's PostFilter prefixes its status message with this."""
NO_CLAIMS_TO_DEALLOCATE: Final = "no new claims to deallocate"
"""What the DynamicResources plugin's PostFilter (in the default profile since DRA went GA in
v1.34, and run before DefaultPreemption) says of a pod with no resource claims: it leads the
PostFilter message, joined to preemption's by ", "."""


def post_filter_message(preemption: str) -> str:
    """The PostFilter part of an unschedulable pod's message: every PostFilter plugin's reason
    joined by ", ", as the framework joins them (``no new claims to deallocate, preemption:
    …``). fleetlog allocates no resource claims, so DynamicResources never has one to free."""
    return f"{NO_CLAIMS_TO_DEALLOCATE}, {PREEMPTION_PREFIX}{preemption}"


NO_VICTIMS_REASON: Final = "No preemption victims found for incoming pod"
NOT_HELPFUL_REASON: Final = "Preemption is not helpful for scheduling"
NOT_ELIGIBLE_NEVER: Final = "not eligible due to preemptionPolicy=Never."
NOT_ELIGIBLE_TERMINATING: Final = "not eligible due to a terminating pod on the nominated node."
PREEMPT_NEVER: Final = "Never"
_PRIORITY_SHIFT: Final = 2**31
"""``math.MaxInt32 + 1``, added to every victim priority before summing."""


# --------------------------------------------------------------------------------------------
# Inputs and outputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DisruptionBudget:
    """What preemption reads of a PodDisruptionBudget."""

    namespace: str
    selector: Selector
    """An empty or absent selector matches no pod."""
    disruptions_allowed: int
    disrupted_pods: frozenset[str] = frozenset()
    """Names of pods whose eviction the API server already counted."""

    @classmethod
    def from_manifest(
        cls, manifest: Mapping[str, Any], *, namespace: str | None = None
    ) -> DisruptionBudget:
        """A stored ``policy/v1`` PodDisruptionBudget (a budget its controller has not synced
        yet allows no disruption, as kube reads its zero status)."""
        metadata = manifest.get("metadata") or {}
        spec, status = manifest.get("spec") or {}, manifest.get("status") or {}
        return cls(
            namespace=namespace if namespace is not None else str(metadata.get("namespace") or ""),
            selector=Selector.from_manifest(spec.get("selector")),
            disruptions_allowed=int(status.get("disruptionsAllowed") or 0),
            disrupted_pods=frozenset(status.get("disruptedPods") or ()),
        )


@dataclass(frozen=True)
class Victim:
    """A pod to evict so that the preemptor fits."""

    key: str
    """``namespace/name``."""
    uid: str
    priority: int
    start_time: float | None

    @classmethod
    def of(cls, pod: PodInfo) -> Victim:
        return cls(pod.key, pod.uid, pod.priority, pod.start_time)


@dataclass(frozen=True)
class Candidate:
    """A node where the preemptor fits once ``victims`` are gone."""

    node_name: str
    victims: tuple[Victim, ...]
    """Most important first (higher priority, then earlier start)."""
    num_pdb_violations: int = 0


@dataclass(frozen=True)
class VictimSelection:
    """:func:`select_victims_on_node`'s answer: victims, or why the node cannot be a candidate."""

    victims: tuple[PodInfo, ...] = ()
    num_pdb_violations: int = 0
    failure: tuple[str, ...] | None = None
    """The reasons (Kubernetes' strings) when the node is no candidate, else None."""


@dataclass
class PreemptionResult:
    """The PostFilter outcome for one unschedulable pod."""

    nominated_node_name: str | None
    """Where the pod should go once the victims are gone (``status.nominatedNodeName``); None
    when preemption is not possible or not helpful."""
    victims: tuple[Victim, ...] = ()
    num_pdb_violations: int = 0
    message: str = ""
    """The PodScheduled=False message Kubernetes shows: the FitError, followed on failure by
    " no new claims to deallocate, preemption: ..." (on success the FitError alone, as in
    Kubernetes)."""
    post_filter_message: str = ""
    """The PostFilter status message ("no new claims to deallocate, preemption: ..."), "" on
    success."""
    summary: str = ""
    """One sentence for logs and events: what is preempted where, or why nothing is."""
    eligible: bool = True
    """False when the pod may not preempt at all (``preemptionPolicy: Never`` ...)."""
    candidates: tuple[Candidate, ...] = ()
    node_reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Node -> why the dry run rejected it (only nodes it visited and rejected)."""

    @property
    def preempting(self) -> bool:
        return self.nominated_node_name is not None

    @property
    def clears_nomination(self) -> bool:
        """Kubernetes clears a stale ``nominatedNodeName`` when preemption was tried and found
        nothing (not when the pod was not eligible to try)."""
        return self.eligible and not self.preempting


def victim_condition(scheduler_name: str = "default-scheduler") -> dict[str, str]:
    """The condition Kubernetes sets on a victim before deleting it."""
    return {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "PreemptionByScheduler",
        "message": f"{scheduler_name}: preempting to accommodate a higher priority pod",
    }


def victim_event_message(preemptor_uid: str, node_name: str) -> str:
    """The ``Preempted`` event's note on a victim."""
    return f"Preempted by pod {preemptor_uid} on node {node_name}"


# --------------------------------------------------------------------------------------------
# Ordering and PDBs
# --------------------------------------------------------------------------------------------


def _start(pod: PodInfo | Victim) -> float:
    """``GetPodStartTime``: unknown means now, i.e. later than every known start."""
    return math.inf if pod.start_time is None else pod.start_time


def importance_key(pod: PodInfo) -> tuple[int, float]:
    """Sort key putting the most important pod first (``util.MoreImportantPod``)."""
    return (-pod.priority, _start(pod))


def more_important_pod(first: PodInfo, second: PodInfo) -> bool:
    """``MoreImportantPod``: higher priority, or equal priority and started earlier."""
    if first.priority != second.priority:
        return first.priority > second.priority
    return _start(first) < _start(second)


def filter_pods_with_pdb_violation(
    pods: Sequence[PodInfo], pdbs: Sequence[DisruptionBudget]
) -> tuple[list[PodInfo], list[PodInfo]]:
    """``filterPodsWithPDBViolation``: (violating, non-violating), each in the given order.

    Evicting the pods in order uses up each matching budget's ``disruptions_allowed``; a pod is
    violating once a budget it matches would go below zero.
    """
    allowed = [pdb.disruptions_allowed for pdb in pdbs]
    violating: list[PodInfo] = []
    non_violating: list[PodInfo] = []
    for pod in pods:
        violated = False
        if pod.labels:
            for i, pdb in enumerate(pdbs):
                if pdb.namespace != pod.namespace:
                    continue
                selector = pdb.selector
                if not selector.requirements or not selector.matches(pod.labels):
                    continue
                if pod.name in pdb.disrupted_pods:
                    continue
                allowed[i] -= 1
                if allowed[i] < 0:
                    violated = True
        (violating if violated else non_violating).append(pod)
    return violating, non_violating


# --------------------------------------------------------------------------------------------
# Node copies and PreFilter state that follows pod removals
# --------------------------------------------------------------------------------------------


def _copy_node(node: NodeInfo) -> NodeInfo:
    """A NodeInfo with the same node and pods; changing it leaves ``node`` as it was."""
    return NodeInfo(
        node.name,
        labels=node.labels,
        taints=node.taints,
        allocatable=node.allocatable,
        unschedulable=node.unschedulable,
        pods=node.pods.values(),
    )


_MINIMA_KEY: Final = "DefaultPreemption"
"""Where the spread minima of the base snapshot are cached (the PostFilter's own state)."""

_SpreadMinima = list[tuple[int, tuple[tuple[int, str], ...]]]
"""Per constraint: how many domains, and the two smallest (count, domain) pairs."""


def _spread_minima(snapshot: Snapshot, name: str, state: _SpreadFilterState) -> _SpreadMinima:
    cache: dict[str, _SpreadMinima] = snapshot.state.setdefault(_MINIMA_KEY, {})
    minima = cache.get(name)
    if minima is None:
        minima = [
            (len(counts), tuple(heapq.nsmallest(2, ((n, d) for d, n in counts.items()))))
            for counts in state.counts
        ]
        cache[name] = minima
    return minima


class _SpreadScratch:
    """PodTopologySpread's PreFilter state as seen from one node whose pods change.

    Only that node's domain changes, and the Filter reads only that domain's count and the
    global minimum, so the copy holds one count per constraint and the minimum is that count
    against the smallest count of the other domains (known from the base state).
    """

    __slots__ = ("included", "others_min", "sizes", "state", "values")

    def __init__(
        self, base: _SpreadFilterState, minima: _SpreadMinima, pod: PodInfo, node: NodeInfo
    ) -> None:
        labels = node.labels
        constraints = base.constraints
        all_keys = all(c.topology_key in labels for c in constraints)
        self.values: list[str | None] = []
        self.included: list[bool] = []
        self.others_min: list[float] = []
        self.sizes: list[int] = []
        counts: list[dict[str, int]] = []
        for i, constraint in enumerate(constraints):
            value = labels.get(constraint.topology_key)
            self.values.append(value)
            own = base.counts[i]
            counts.append({value: own[value]} if value is not None and value in own else {})
            self.included.append(
                all_keys
                and value is not None
                and value in own
                and spread_node_included(pod, node, constraint)
            )
            size, smallest = minima[i]
            self.sizes.append(size)
            others = [count for count, domain in smallest if domain != value]
            self.others_min.append(others[0] if others else math.inf)
        self.state = _SpreadFilterState(constraints, counts, list(base.minimums), base.self_match)

    def update(self, pod: PodInfo, other: PodInfo, delta: int) -> None:
        """``AddPod``/``RemovePod``: what PreFilter counted for ``other`` on this node."""
        if other.deleting or other.namespace != pod.namespace:
            return
        state = self.state
        for i, constraint in enumerate(state.constraints):
            if not self.included[i]:
                continue
            selector = constraint.selector
            if not selector.requirements or not selector.matches(other.labels):
                continue
            value = self.values[i]
            assert value is not None
            counts = state.counts[i]
            counts[value] += delta
            if self.sizes[i] < constraint.min_domains:
                state.minimums[i] = 0
            else:
                state.minimums[i] = int(min(self.others_min[i], counts[value]))


def _copy_affinity(state: _AffinityFilterState) -> _AffinityFilterState:
    copy = _AffinityFilterState()
    copy.existing_anti_affinity = dict(state.existing_anti_affinity)
    copy.affinity = dict(state.affinity)
    copy.anti_affinity = dict(state.anti_affinity)
    copy.self_match = state.self_match
    return copy


class _Scratch:
    """A copy of the cluster-wide PreFilter states for one node's dry run, kept in step with the
    pods removed from and added back to (a copy of) that node; the base is never changed."""

    __slots__ = ("affinity", "node", "snapshot", "spread")

    def __init__(self, base: Snapshot, pod: PodInfo, node: NodeInfo) -> None:
        self.node = node
        self.snapshot = Snapshot(base.nodes, base.namespace_labels, base.affinity_nodes)
        state: dict[str, Any] = dict(base.state)
        self.spread: list[_SpreadScratch] = []
        self.affinity: list[_AffinityFilterState] = []
        base.state.setdefault(_MINIMA_KEY, {})
        for name, value in list(base.state.items()):
            if isinstance(value, _SpreadFilterState):
                scratch = _SpreadScratch(value, _spread_minima(base, name, value), pod, node)
                self.spread.append(scratch)
                state[name] = scratch.state
            elif isinstance(value, _AffinityFilterState):
                copy = _copy_affinity(value)
                self.affinity.append(copy)
                state[name] = copy
        self.snapshot.state = state

    def update(self, pod: PodInfo, other: PodInfo, delta: int) -> None:
        for spread in self.spread:
            spread.update(pod, other, delta)
        for affinity in self.affinity:
            _update_affinity(affinity, pod, other, self.node, self.snapshot.namespace_labels, delta)


def _bump(counts: dict[tuple[str, str], int], pair: tuple[str, str], delta: int) -> None:
    left = counts.get(pair, 0) + delta
    if left:
        counts[pair] = left
    else:  # as Kubernetes: an entry down to zero is deleted (emptiness is tested)
        counts.pop(pair, None)


def _update_affinity(
    state: _AffinityFilterState,
    pod: PodInfo,
    other: PodInfo,
    node: NodeInfo,
    namespace_labels: Mapping[str, Mapping[str, str]],
    delta: int,
) -> None:
    """InterPodAffinity ``AddPod``/``RemovePod``: what PreFilter counted for ``other``."""
    labels = node.labels
    for term in other.required_anti_affinity_terms:
        value = labels.get(term.topology_key)
        if value is not None and term.matches(pod, namespace_labels):
            _bump(state.existing_anti_affinity, (term.topology_key, value), delta)
    affinity_terms = pod.required_affinity_terms
    if affinity_terms and all(t.matches(other, namespace_labels) for t in affinity_terms):
        for term in affinity_terms:
            value = labels.get(term.topology_key)
            if value is not None:
                _bump(state.affinity, (term.topology_key, value), delta)
    for term in pod.required_anti_affinity_terms:
        value = labels.get(term.topology_key)
        if value is not None and term.matches(other, namespace_labels):
            _bump(state.anti_affinity, (term.topology_key, value), delta)


def _first_failure(
    plugins: Sequence[FilterPlugin], pod: PodInfo, node: NodeInfo, snapshot: Snapshot
) -> FilterFailure | None:
    for plugin in plugins:
        failure = plugin.filter(pod, node, snapshot)
        if failure is not None:
            return failure
    return None


# --------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------


def pod_eligible_to_preempt_others(
    pod: PodInfo,
    nodes: Sequence[NodeInfo],
    result: ScheduleResult,
    nominated_node_name: str = "",
) -> tuple[bool, str]:
    """``PodEligibleToPreemptOthers``: (eligible, why not).

    ``nominated_node_name`` is the pod's ``status.nominatedNodeName`` from an earlier
    preemption: while a lower-priority pod there is still being deleted, the pod waits rather
    than preempting again (unless that node has become unresolvable for it).
    """
    if pod.preemption_policy == PREEMPT_NEVER:
        return False, NOT_ELIGIBLE_NEVER
    if nominated_node_name:
        failure = result.failures.get(nominated_node_name)
        if failure is None or failure.unresolvable:
            return True, ""
        for node in nodes:
            if node.name == nominated_node_name:
                for other in node.pods.values():
                    if other.deleting and other.priority < pod.priority:
                        return False, NOT_ELIGIBLE_TERMINATING
                break
    return True, ""


def calculate_num_candidates(num_nodes: int, config: PreemptionConfig | None = None) -> int:
    """``calculateNumCandidates``: percentage of the nodes, at least the absolute minimum,
    at most all of them."""
    config = config or PreemptionConfig()
    n = num_nodes * config.min_candidate_nodes_percentage // 100
    n = max(n, config.min_candidate_nodes_absolute)
    return min(n, num_nodes)


def offset_and_num_candidates(
    num_nodes: int, rng: random.Random, config: PreemptionConfig | None = None
) -> tuple[int, int]:
    """``GetOffsetAndNumCandidates``: a uniform random start and the number of candidates."""
    offset = rng.randrange(num_nodes) if num_nodes > 0 else 0
    return offset, calculate_num_candidates(num_nodes, config)


def select_victims_on_node(
    pod: PodInfo,
    node: NodeInfo,
    snapshot: Snapshot,
    plugins: Sequence[FilterPlugin],
    pdbs: Sequence[DisruptionBudget] = (),
) -> VictimSelection:
    """``SelectVictimsOnNode``: the fewest pods to evict from ``node`` for ``pod`` to fit.

    ``snapshot`` must hold the PreFilter state for ``pod`` over the whole cluster and
    ``plugins`` be the filter plugins whose PreFilter accepted it. Neither ``node`` nor
    ``snapshot`` is changed.
    """
    potential = [other for other in node.pods.values() if other.priority < pod.priority]
    if not potential:
        return VictimSelection(failure=(NO_VICTIMS_REASON,))
    work = _copy_node(node)
    scratch = _Scratch(snapshot, pod, work)
    local = scratch.snapshot
    for other in potential:
        work.remove_pod(other.key)
        scratch.update(pod, other, -1)
    failure = _first_failure(plugins, pod, work, local)
    if failure is not None:
        return VictimSelection(failure=failure.reasons)

    potential.sort(key=importance_key)
    violating, non_violating = filter_pods_with_pdb_violation(potential, pdbs)
    victims: list[PodInfo] = []

    def reprieve(other: PodInfo) -> bool:
        work.add_pod(other)
        scratch.update(pod, other, 1)
        if _first_failure(plugins, pod, work, local) is None:
            return True
        work.remove_pod(other.key)
        scratch.update(pod, other, -1)
        victims.append(other)
        return False

    num_violating = sum(1 for other in violating if not reprieve(other))
    for other in non_violating:
        reprieve(other)
    if violating and non_violating:
        victims.sort(key=importance_key)
    return VictimSelection(tuple(victims), num_violating)


def dry_run_preemption(
    pod: PodInfo,
    potential_nodes: Sequence[NodeInfo],
    snapshot: Snapshot,
    plugins: Sequence[FilterPlugin],
    pdbs: Sequence[DisruptionBudget],
    offset: int,
    num_candidates: int,
) -> tuple[list[Candidate], dict[str, tuple[str, ...]]]:
    """``DryRunPreemption``: visit ``potential_nodes`` from ``offset`` round-robin until
    ``num_candidates`` candidates (at least one without PDB violations) are found.

    Returns the candidates (those without violations first, each group in visiting order, at
    most ``num_candidates`` per group) and the reasons of the nodes that were rejected.
    """
    clean: list[Candidate] = []
    violating: list[Candidate] = []
    reasons: dict[str, tuple[str, ...]] = {}
    total = len(potential_nodes)
    for i in range(total):
        node = potential_nodes[(offset + i) % total]
        selection = select_victims_on_node(pod, node, snapshot, plugins, pdbs)
        if selection.failure is None and selection.victims:
            candidate = Candidate(
                node.name,
                tuple(Victim.of(victim) for victim in selection.victims),
                selection.num_pdb_violations,
            )
            group = clean if candidate.num_pdb_violations == 0 else violating
            if len(group) < num_candidates:
                group.append(candidate)
            if clean and len(clean) + len(violating) >= num_candidates:
                break
            continue
        reasons[node.name] = selection.failure or (
            f'expected at least one victim pod on node "{node.name}"',
        )
    return clean + violating, reasons


def _earliest_top_start(candidate: Candidate) -> float:
    """``GetEarliestPodStartTime``: earliest start among the highest-priority victims."""
    top = max(victim.priority for victim in candidate.victims)
    return min(_start(victim) for victim in candidate.victims if victim.priority == top)


_SCORES: Final[tuple[Callable[[Candidate], float], ...]] = (
    lambda c: -c.num_pdb_violations,
    lambda c: -c.victims[0].priority,
    lambda c: -sum(victim.priority + _PRIORITY_SHIFT for victim in c.victims),
    lambda c: -len(c.victims),
    _earliest_top_start,
)
"""``pickOneNodeForPreemption``'s criteria in order, each "higher is better"."""


def pick_one_node_for_preemption(candidates: Sequence[Candidate]) -> Candidate | None:
    """``pickOneNodeForPreemption``: apply each criterion to the nodes still tied; the first
    remaining candidate wins. Victims must be ordered most important first."""
    remaining = list(candidates)
    if not remaining:
        return None
    for score in _SCORES:
        if len(remaining) == 1:
            break
        scores = [score(candidate) for candidate in remaining]
        best = max(scores)
        remaining = [c for c, s in zip(remaining, scores, strict=True) if s == best]
    return remaining[0]


def _fit_error(num_all: int, reasons: Mapping[str, tuple[str, ...]]) -> str:
    """The FitError of the dry run: visited nodes with their reasons, the others not helped."""
    counts: dict[str, int] = {}
    for node_reasons in reasons.values():
        for reason in node_reasons:
            counts[reason] = counts.get(reason, 0) + 1
    absent = num_all - len(reasons)
    if absent > 0:
        counts[NOT_HELPFUL_REASON] = counts.get(NOT_HELPFUL_REASON, 0) + absent
    return failure_message(num_all, counts)


def _joined(result: ScheduleResult, post_filter_message: str) -> str:
    return f"{result.message} {post_filter_message}" if result.message else post_filter_message


def _describe_victims(node_name: str, victims: Sequence[Victim]) -> str:
    listed = ", ".join(f"{v.key} (priority {v.priority})" for v in victims)
    plural = "" if len(victims) == 1 else "s"
    return f'preempting {len(victims)} pod{plural} on node "{node_name}": {listed}'


def preempt(
    pod: PodInfo,
    nodes: Sequence[NodeInfo],
    result: ScheduleResult,
    config: SchedulerConfig,
    rng: random.Random,
    *,
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
    offset: int | None = None,
    pdbs: Sequence[DisruptionBudget] = (),
    preemption_config: PreemptionConfig | None = None,
    nominated_node_name: str = "",
    affinity_nodes: Sequence[NodeInfo] | None = None,
) -> PreemptionResult:
    """DefaultPreemption's PostFilter for ``pod``, which :func:`schedule` could not place.

    ``nodes`` (and ``namespace_labels`` / ``affinity_nodes``) are what ``result`` was computed
    from; ``result.failures`` says which nodes failed resolvably. ``offset`` is where the dry run
    starts among those nodes (drawn from ``rng`` when None, as Kubernetes draws it);
    ``nominated_node_name`` is the pod's current ``status.nominatedNodeName``. The NodeInfos are
    not changed.
    """
    if result.scheduled:
        raise ValueError(f"{pod.key} was scheduled to {result.node_name}: nothing to preempt for")
    preemption_config = preemption_config or config.preemption
    num_all = len(nodes)
    if num_all == 0:
        # Kubernetes runs no PostFilter when there are no nodes at all.
        return PreemptionResult(
            None, message=result.message, summary=result.message, eligible=False
        )
    eligible, why_not = pod_eligible_to_preempt_others(pod, nodes, result, nominated_node_name)
    if not eligible:
        post = post_filter_message(why_not)
        return PreemptionResult(
            None,
            message=_joined(result, post),
            post_filter_message=post,
            summary=why_not,
            eligible=False,
        )

    potential = [
        node
        for node in nodes
        if (failure := result.failures.get(node.name)) is not None and not failure.unresolvable
    ]
    candidates: list[Candidate] = []
    reasons: dict[str, tuple[str, ...]] = {}
    if potential:
        snapshot = Snapshot(nodes, namespace_labels, affinity_nodes)
        plugins = [plugin for plugin in config.filters if plugin.pre_filter(pod, snapshot)]
        if offset is None:
            offset, wanted = offset_and_num_candidates(len(potential), rng, preemption_config)
        else:
            offset %= len(potential)
            wanted = calculate_num_candidates(len(potential), preemption_config)
        candidates, reasons = dry_run_preemption(
            pod, potential, snapshot, plugins, pdbs, offset, wanted
        )

    if not candidates:
        fit_error = _fit_error(num_all, reasons)
        post = post_filter_message(fit_error)
        return PreemptionResult(
            None,
            message=_joined(result, post),
            post_filter_message=post,
            summary=fit_error,
            node_reasons=reasons,
        )

    best = candidates[0] if len(candidates) == 1 else pick_one_node_for_preemption(candidates)
    assert best is not None
    return PreemptionResult(
        best.node_name,
        victims=best.victims,
        num_pdb_violations=best.num_pdb_violations,
        message=result.message,
        summary=_describe_victims(best.node_name, best.victims),
        candidates=tuple(candidates),
        node_reasons=reasons,
    )

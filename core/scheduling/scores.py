"""kube-scheduler's score plugins: how good is each feasible node, 0..100 per plugin.

Why this exists: two schedulers given the same cluster should prefer the same nodes, so each
plugin reproduces its Kubernetes namesake to the integer: raw score, then NormalizeScore, then the
framework multiplies by the plugin weight and sums. Go's integer division truncates toward zero
and ``math.Round`` rounds half away from zero; both are reproduced (:func:`go_div`,
:func:`go_round`); Python's ``//`` is used only where both operands are non-negative (where it
equals Go's) and Python's ``round`` (half to even) never.

Each plugin has ``pre_score(pod, nodes, snapshot) -> bool`` (False is the framework's Skip: the
plugin contributes 0 to every node), ``score(pod, node, snapshot) -> int`` (the raw score) and
``normalize(pod, nodes, scores, snapshot)`` (in place). ``score_nodes`` runs the three; for the
default cpu+memory configuration NodeResourcesFit and BalancedAllocation inline the same arithmetic
in one loop over the nodes (a test pins both paths to the same results).

Simplifications versus Kubernetes:

* PodTopologySpread scoring does not apply the system default constraints (hostname maxSkew 3,
  zone maxSkew 5) to pods without constraints: Kubernetes derives their selector from the
  Services / ReplicaSets / StatefulSets selecting the pod, which this pure core does not see. A
  pod without ``topologySpreadConstraints`` is skipped by the plugin.
* ``math.Log`` / float rounding use the C library: a last-bit difference from Go's software
  ``math.Log`` could in principle move a PodTopologySpread raw score across a .5 boundary.
* InterPodAffinity uses hardPodAffinityWeight 1 and does not ignore existing pods' preferred
  terms (the defaults).
* ImageLocality is not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from core.scheduling.filters import Snapshot, count_pods_matching, spread_node_included
from core.scheduling.model import HOSTNAME_LABEL, NodeInfo, PodInfo, SpreadConstraint

__all__ = [
    "DEFAULT_WEIGHTS",
    "MAX_NODE_SCORE",
    "BalancedAllocationScore",
    "FitStrategy",
    "InterPodAffinityScore",
    "NodeAffinityScore",
    "NodeResourcesFitScore",
    "PodTopologySpreadScore",
    "ScorePlugin",
    "TaintTolerationScore",
    "build_score_plugins",
    "default_normalize",
    "go_div",
    "go_round",
]

MAX_NODE_SCORE: Final = 100
MAX_CUSTOM_PRIORITY_SCORE: Final = 10
"""RequestedToCapacityRatio shape scores are 0..10, scaled by 100/10."""

DEFAULT_WEIGHTS: Final[dict[str, int]] = {
    "TaintToleration": 3,
    "NodeAffinity": 2,
    "NodeResourcesFit": 1,
    "PodTopologySpread": 2,
    "InterPodAffinity": 2,
    "NodeResourcesBalancedAllocation": 1,
}

_NATIVE_SCORED: Final = frozenset({"cpu", "memory", "ephemeral-storage"})


def go_div(a: int, b: int) -> int:
    """Go's integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def go_round(x: float) -> int:
    """Go's ``math.Round``: half away from zero."""
    t = math.trunc(x)
    if abs(x - t) >= 0.5:
        t += 1 if x > 0 else -1
    return int(t)


def default_normalize(scores: list[int], reverse: bool) -> None:
    """``helper.DefaultNormalizeScore(MaxNodeScore, reverse, scores)``."""
    max_count = max(scores, default=0)
    if max_count <= 0:
        if reverse:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
        return
    for i, score in enumerate(scores):
        value = go_div(MAX_NODE_SCORE * score, max_count)
        scores[i] = MAX_NODE_SCORE - value if reverse else value


class ScorePlugin(Protocol):
    name: str

    def pre_score(self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> bool: ...

    def score(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int: ...

    def normalize(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int], snapshot: Snapshot
    ) -> None: ...

    def score_nodes(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None: ...


class _Base:
    name = ""

    def pre_score(self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> bool:
        return True

    def score(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
        raise NotImplementedError

    def normalize(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int], snapshot: Snapshot
    ) -> None:
        return None

    def score_nodes(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        """Normalized scores in ``nodes`` order, or None when the plugin skips this pod."""
        if not self.pre_score(pod, nodes, snapshot):
            return None
        score = self.score
        scores = [score(pod, node, snapshot) for node in nodes]
        self.normalize(pod, nodes, scores, snapshot)
        return scores


# --------------------------------------------------------------------------------------------
# TaintToleration, NodeAffinity
# --------------------------------------------------------------------------------------------


class TaintTolerationScore(_Base):
    """Count of PreferNoSchedule taints the pod does not tolerate; fewer is better."""

    name = "TaintToleration"

    def score_nodes(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        if not any(node.prefer_taints for node in nodes):
            return [MAX_NODE_SCORE] * len(nodes)  # every raw score 0, reversed
        return super().score_nodes(pod, nodes, snapshot)

    def score(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
        count = 0
        tolerations = pod.tolerations
        for taint in node.prefer_taints:
            if not any(
                t.effect in ("", "PreferNoSchedule") and t.tolerates(taint) for t in tolerations
            ):
                count += 1
        return count

    def normalize(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int], snapshot: Snapshot
    ) -> None:
        default_normalize(scores, reverse=True)


class NodeAffinityScore(_Base):
    """Sum of the weights of the preferred node-affinity terms the node matches."""

    name = "NodeAffinity"

    def pre_score(self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> bool:
        return bool(pod.preferred_node_terms)

    def score(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
        total = 0
        for weight, term in pod.preferred_node_terms:
            if weight and term.matches(node.name, node.labels):
                total += weight
        return total

    def normalize(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int], snapshot: Snapshot
    ) -> None:
        default_normalize(scores, reverse=False)


# --------------------------------------------------------------------------------------------
# NodeResourcesFit and BalancedAllocation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FitStrategy:
    """``NodeResourcesFitArgs.scoringStrategy``.

    ``shape`` (utilization 0..100, score 0..10) is used by RequestedToCapacityRatio only; its
    default here is the bin-packing shape ``{0: 0, 100: 10}``.
    """

    type: str = "LeastAllocated"
    resources: tuple[tuple[str, int], ...] = (("cpu", 1), ("memory", 1))
    shape: tuple[tuple[int, int], ...] = ((0, 0), (100, 10))

    def __post_init__(self) -> None:
        if self.type not in ("LeastAllocated", "MostAllocated", "RequestedToCapacityRatio"):
            raise ValueError(f"unknown scoring strategy {self.type!r}")
        if self.type == "RequestedToCapacityRatio" and not self.shape:
            raise ValueError("RequestedToCapacityRatio needs at least one shape point")


def _alloc_and_requested(
    pod: PodInfo, node: NodeInfo, name: str, use_requested: bool
) -> tuple[int, int]:
    """``calculateResourceAllocatableRequest``: (allocatable, node requested + pod request).

    (0, 0) -- skipped -- for a scalar resource the pod does not request.
    """
    if name == "cpu":
        if use_requested:
            return node.allocatable.get("cpu", 0), node.requested.get("cpu", 0) + pod.requests.get(
                "cpu", 0
            )
        return node.allocatable.get("cpu", 0), node.non_zero_cpu + pod.non_zero_cpu
    if name == "memory":
        if use_requested:
            return node.allocatable.get("memory", 0), node.requested.get(
                "memory", 0
            ) + pod.requests.get("memory", 0)
        return node.allocatable.get("memory", 0), node.non_zero_memory + pod.non_zero_memory
    pod_request = pod.requests.get(name, 0)
    if pod_request == 0 and name not in _NATIVE_SCORED:
        return 0, 0
    return node.allocatable.get(name, 0), node.requested.get(name, 0) + pod_request


def _broken_linear(shape: Sequence[tuple[int, int]], p: int) -> int:
    """``helper.BuildBrokenLinearFunction`` with Go integer arithmetic."""
    for i, (utilization, score) in enumerate(shape):
        if p <= utilization:
            if i == 0:
                return score
            prev_u, prev_s = shape[i - 1]
            return prev_s + go_div((score - prev_s) * (p - prev_u), utilization - prev_u)
    return shape[-1][1]


class NodeResourcesFitScore(_Base):
    """LeastAllocated / MostAllocated / RequestedToCapacityRatio over non-zero requests."""

    name = "NodeResourcesFit"

    def __init__(self, strategy: FitStrategy | None = None) -> None:
        self.strategy = strategy or FitStrategy()
        self._resources = self.strategy.resources
        self._shape = tuple(
            (u, s * (MAX_NODE_SCORE // MAX_CUSTOM_PRIORITY_SCORE)) for u, s in self.strategy.shape
        )
        self._kind = self.strategy.type
        names = tuple(name for name, _ in self._resources)
        self._fast = names == ("cpu", "memory") and self._kind != "RequestedToCapacityRatio"

    def score_nodes(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        if not self._fast:
            return super().score_nodes(pod, nodes, snapshot)
        # The common case (cpu + memory, Least/MostAllocated) inlined: same arithmetic as score().
        (_, w_cpu), (_, w_mem) = self._resources
        least = self._kind == "LeastAllocated"
        pod_cpu, pod_mem = pod.non_zero_cpu, pod.non_zero_memory
        out: list[int] = []
        append = out.append
        for node in nodes:
            total = 0
            weights = 0
            a = node.alloc_cpu
            if a:
                r = node.non_zero_cpu + pod_cpu
                if least:
                    total += (0 if r > a else (a - r) * MAX_NODE_SCORE // a) * w_cpu
                else:
                    total += ((r if r < a else a) * MAX_NODE_SCORE // a) * w_cpu
                weights += w_cpu
            a = node.alloc_memory
            if a:
                r = node.non_zero_memory + pod_mem
                if least:
                    total += (0 if r > a else (a - r) * MAX_NODE_SCORE // a) * w_mem
                else:
                    total += ((r if r < a else a) * MAX_NODE_SCORE // a) * w_mem
                weights += w_mem
            append(total // weights if weights else 0)
        return out

    def score(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
        kind = self._kind
        node_score = 0
        weight_sum = 0
        for name, weight in self._resources:
            alloc, req = _alloc_and_requested(pod, node, name, False)
            if alloc == 0:
                continue
            if kind == "LeastAllocated":
                value = 0 if req > alloc else (alloc - req) * MAX_NODE_SCORE // alloc
            elif kind == "MostAllocated":
                value = min(req, alloc) * MAX_NODE_SCORE // alloc
            else:
                utilization = 100 if req > alloc else req * 100 // alloc
                value = _broken_linear(self._shape, utilization)
                if value <= 0:
                    continue
            node_score += value * weight
            weight_sum += weight
        if weight_sum == 0:
            return 0
        if kind == "RequestedToCapacityRatio":
            return go_round(node_score / weight_sum)
        return node_score // weight_sum


class BalancedAllocationScore(_Base):
    """``(1 - std(fractions)) * 100`` with actual requests; skipped for pods requesting nothing."""

    name = "NodeResourcesBalancedAllocation"

    def __init__(self, resources: Sequence[str] = ("cpu", "memory")) -> None:
        self.resources = tuple(resources)

    def pre_score(self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> bool:
        return any(pod.requests.get(name, 0) for name in self.resources)

    def score_nodes(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        if self.resources != ("cpu", "memory"):
            return super().score_nodes(pod, nodes, snapshot)
        if not self.pre_score(pod, nodes, snapshot):
            return None
        # cpu + memory inlined: same arithmetic as score().
        pod_cpu = pod.cpu
        pod_mem = pod.memory
        out: list[int] = []
        append = out.append
        for node in nodes:
            a_cpu = node.alloc_cpu
            a_mem = node.alloc_memory
            if a_cpu and a_mem:
                f_cpu = (node.requested_cpu + pod_cpu) / a_cpu
                f_mem = (node.requested_memory + pod_mem) / a_mem
                if f_cpu > 1:
                    f_cpu = 1.0
                if f_mem > 1:
                    f_mem = 1.0
                append(int((1 - abs((f_cpu - f_mem) / 2)) * MAX_NODE_SCORE))
            else:
                append(MAX_NODE_SCORE)  # fewer than two fractions: std 0
        return out

    def score(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
        fractions: list[float] = []
        total = 0.0
        for name in self.resources:
            alloc, req = _alloc_and_requested(pod, node, name, True)
            if alloc == 0:
                continue
            fraction = req / alloc
            if fraction > 1:
                fraction = 1.0
            total += fraction
            fractions.append(fraction)
        std = 0.0
        if len(fractions) == 2:
            std = abs((fractions[0] - fractions[1]) / 2)
        elif len(fractions) > 2:
            mean = total / len(fractions)
            acc = 0.0
            for fraction in fractions:
                acc = acc + (fraction - mean) * (fraction - mean)
            std = math.sqrt(acc / len(fractions))
        return int((1 - std) * MAX_NODE_SCORE)


# --------------------------------------------------------------------------------------------
# PodTopologySpread (ScheduleAnyway)
# --------------------------------------------------------------------------------------------


class _SpreadScoreState:
    __slots__ = ("constraints", "ignored", "pair_counts", "weights")

    def __init__(self) -> None:
        self.constraints: tuple[SpreadConstraint, ...] = ()
        self.ignored: set[str] = set()
        self.pair_counts: dict[tuple[str, str], int] = {}
        self.weights: list[float] = []


class PodTopologySpreadScore(_Base):
    """Fewer matching pods in the node's domains is better (ScheduleAnyway constraints)."""

    name = "PodTopologySpread"
    _KEY: Final = "PodTopologySpread/score"

    def pre_score(self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> bool:
        if not pod.spread_constraints:
            return False
        constraints = tuple(
            c for c in pod.spread_constraints if c.when_unsatisfiable == "ScheduleAnyway"
        )
        if not constraints or not nodes:
            return False
        state = _SpreadScoreState()
        state.constraints = constraints
        keys = [c.topology_key for c in constraints]
        topo_size = [0] * len(constraints)
        for node in nodes:
            labels = node.labels
            if any(key not in labels for key in keys):
                state.ignored.add(node.name)
                continue
            for i, constraint in enumerate(constraints):
                if constraint.topology_key == HOSTNAME_LABEL:
                    continue
                pair = (constraint.topology_key, labels[constraint.topology_key])
                if pair not in state.pair_counts:
                    state.pair_counts[pair] = 0
                    topo_size[i] += 1
        for i, constraint in enumerate(constraints):
            size = topo_size[i]
            if constraint.topology_key == HOSTNAME_LABEL:
                size = len(nodes) - len(state.ignored)
            state.weights.append(math.log(size + 2))
        counts = state.pair_counts
        for node in snapshot.nodes:
            labels = node.labels
            if any(key not in labels for key in keys):
                continue
            for constraint in constraints:
                if not spread_node_included(pod, node, constraint):
                    continue
                pair = (constraint.topology_key, labels[constraint.topology_key])
                if pair not in counts:
                    continue
                counts[pair] += count_pods_matching(node, constraint.selector, pod.namespace)
        snapshot.state[self._KEY] = state
        return True

    def score(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
        state: _SpreadScoreState = snapshot.state[self._KEY]
        if node.name in state.ignored:
            return 0
        total = 0.0
        labels = node.labels
        for i, constraint in enumerate(state.constraints):
            value = labels.get(constraint.topology_key)
            if value is None:
                continue
            if constraint.topology_key == HOSTNAME_LABEL:
                count = count_pods_matching(node, constraint.selector, pod.namespace)
            else:
                count = state.pair_counts[(constraint.topology_key, value)]
            total += count * state.weights[i] + (constraint.max_skew - 1)
        return go_round(total)

    def normalize(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int], snapshot: Snapshot
    ) -> None:
        state: _SpreadScoreState = snapshot.state[self._KEY]
        ignored = state.ignored
        min_score: int | None = None
        max_score = 0
        for node, score in zip(nodes, scores, strict=True):
            if node.name in ignored:
                continue
            if min_score is None or score < min_score:
                min_score = score
            if score > max_score:
                max_score = score
        low = min_score or 0
        for i, node in enumerate(nodes):
            if node.name in ignored:
                scores[i] = 0
            elif max_score == 0:
                scores[i] = MAX_NODE_SCORE
            else:
                scores[i] = MAX_NODE_SCORE * (max_score + low - scores[i]) // max_score


# --------------------------------------------------------------------------------------------
# InterPodAffinity (preferred terms, and existing pods' terms towards the incoming pod)
# --------------------------------------------------------------------------------------------


class InterPodAffinityScore(_Base):
    """Weights summed per topology domain, min-max normalized.

    Contributions, for every existing pod on a node with labels: the incoming pod's preferred
    affinity (+weight) and anti-affinity (-weight) terms the existing pod matches; the existing
    pod's required affinity terms (+hardPodAffinityWeight 1), preferred affinity (+weight) and
    preferred anti-affinity (-weight) terms the incoming pod matches.
    """

    name = "InterPodAffinity"
    _KEY: Final = "InterPodAffinity/score"

    def __init__(self, hard_pod_affinity_weight: int = 1) -> None:
        self.hard_pod_affinity_weight = hard_pod_affinity_weight

    def pre_score(self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> bool:
        if not nodes:
            return False
        ns_labels = snapshot.namespace_labels
        has_constraints = bool(pod.preferred_affinity_terms or pod.preferred_anti_affinity_terms)
        topology: dict[str, dict[str, int]] = {}

        def add(key: str, labels: dict[str, str], amount: int) -> None:
            value = labels.get(key)
            if value is None:
                return
            per_key = topology.setdefault(key, {})
            per_key[value] = per_key.get(value, 0) + amount

        hard = self.hard_pod_affinity_weight
        for node in snapshot.nodes if has_constraints else snapshot.affinity_nodes:
            labels = node.labels
            if not labels:
                continue
            existing: Any = node.pods if has_constraints else node.pods_with_affinity
            if not existing:
                continue
            for other in existing.values():
                for weight, term in pod.preferred_affinity_terms:
                    if term.matches(other, ns_labels):
                        add(term.topology_key, labels, weight)
                for weight, term in pod.preferred_anti_affinity_terms:
                    if term.matches(other, ns_labels):
                        add(term.topology_key, labels, -weight)
                if hard > 0:
                    for term in other.required_affinity_terms:
                        if term.matches(pod, ns_labels):
                            add(term.topology_key, labels, hard)
                for weight, term in other.preferred_affinity_terms:
                    if term.matches(pod, ns_labels):
                        add(term.topology_key, labels, weight)
                for weight, term in other.preferred_anti_affinity_terms:
                    if term.matches(pod, ns_labels):
                        add(term.topology_key, labels, -weight)
        if not topology:
            return False
        snapshot.state[self._KEY] = topology
        return True

    def score(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
        topology: dict[str, dict[str, int]] = snapshot.state[self._KEY]
        total = 0
        labels = node.labels
        for key, values in topology.items():
            value = labels.get(key)
            if value is not None:
                total += values.get(value, 0)
        return total

    def normalize(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int], snapshot: Snapshot
    ) -> None:
        if not scores:
            return
        low, high = min(scores), max(scores)
        diff = high - low
        for i, score in enumerate(scores):
            scores[i] = int(MAX_NODE_SCORE * ((score - low) / diff)) if diff > 0 else 0


def build_score_plugins(
    strategy: FitStrategy | None = None,
    balanced_resources: Sequence[str] = ("cpu", "memory"),
    *,
    hard_pod_affinity_weight: int = 1,
) -> tuple[ScorePlugin, ...]:
    """The default profile's score plugins, in kube-scheduler's order."""
    return (
        TaintTolerationScore(),
        NodeAffinityScore(),
        NodeResourcesFitScore(strategy),
        PodTopologySpreadScore(),
        InterPodAffinityScore(hard_pod_affinity_weight),
        BalancedAllocationScore(balanced_resources),
    )

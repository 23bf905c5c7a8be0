"""One scheduling cycle: filter nodes round-robin, score the feasible ones, pick the best.

Why this exists: it is the part of kube-scheduler's ``schedule_one.go`` that decides, separated
from everything that talks to the log. It reproduces ``numFeasibleNodesToFind`` (stop filtering
once enough feasible nodes are found, adaptive ``percentageOfNodesToScore``), the round-robin
start index that spreads that work over the cluster from one pod to the next, the weighted sum of
normalized plugin scores, ``selectHost``'s uniform choice among equal best scores (one random
draw among the tied nodes rather than one per tie as in Go's reservoir sampling: same
distribution, fewer calls), and the
``FitError`` message ("0/5 nodes are available: 2 Insufficient cpu, 3 node(s) had untolerated
taint(s).", the wording of Kubernetes v1.34 and later) with its per-reason counts, sorted as Go's
``sort.Strings`` sorts the "<count> <reason>" strings.

Randomness comes only from the ``random.Random`` passed in; nothing here reads a clock.
Simplifications: no nominated pods, no PreFilterResult narrowing, no extenders; a cluster without
nodes gives Kubernetes' "no nodes available to schedule pods".
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from core.scheduling.filters import (
    DEFAULT_FILTERS,
    FilterFailure,
    FilterPlugin,
    NodeResourcesFitFilter,
    Snapshot,
)
from core.scheduling.model import NodeInfo, PodInfo
from core.scheduling.scores import DEFAULT_WEIGHTS, FitStrategy, ScorePlugin, build_score_plugins
from core.scheduling.vectorized import NodeColumns, vector_eligible, vector_filter, vector_scores

__all__ = [
    "MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND",
    "MIN_FEASIBLE_NODES_TO_FIND",
    "NO_NODES_MESSAGE",
    "PreemptionConfig",
    "ScheduleResult",
    "SchedulerConfig",
    "failure_message",
    "num_feasible_nodes_to_find",
    "schedule",
]

FilterRun = Callable[[PodInfo, NodeInfo, Snapshot], FilterFailure | None]

MIN_FEASIBLE_NODES_TO_FIND: Final = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: Final = 5
NO_NODES_MESSAGE: Final = "no nodes available to schedule pods"


def num_feasible_nodes_to_find(num_all_nodes: int, percentage: int | None = None) -> int:
    """``numFeasibleNodesToFind``: how many feasible nodes to look for before scoring.

    Fewer than 100 nodes: all of them. Otherwise ``percentage`` of them (None or 0: adaptive,
    ``50 - n/125`` with a floor of 5 %), but never fewer than 100.
    """
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    pct = percentage or 0
    if pct <= 0:
        pct = 50 - num_all_nodes // 125
        if pct < MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND:
            pct = MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND
    if pct >= 100:
        return num_all_nodes
    num = num_all_nodes * pct // 100
    if num < MIN_FEASIBLE_NODES_TO_FIND:
        return MIN_FEASIBLE_NODES_TO_FIND
    return num


@dataclass(frozen=True)
class PreemptionConfig:
    """``DefaultPreemptionArgs``: how many candidate nodes the dry run looks for."""

    min_candidate_nodes_percentage: int = 10
    min_candidate_nodes_absolute: int = 100

    def __post_init__(self) -> None:
        # ValidateDefaultPreemptionArgs (core.scheduling.config reports these in its words)
        if not 0 <= self.min_candidate_nodes_percentage <= 100:
            raise ValueError("min_candidate_nodes_percentage must be between 0 and 100")
        if self.min_candidate_nodes_absolute < 0:
            raise ValueError("min_candidate_nodes_absolute must not be negative")
        if self.min_candidate_nodes_percentage == 0 and self.min_candidate_nodes_absolute == 0:
            raise ValueError("min_candidate_nodes_percentage and _absolute cannot both be 0")


@dataclass(frozen=True)
class SchedulerConfig:
    """A scheduling profile: plugin weights (0 disables a score plugin), fit strategy and the
    resources NodeResourcesFit ignores, sampling, preemption. Built by hand or read from a
    KubeSchedulerConfiguration file (:mod:`core.scheduling.config`)."""

    scheduler_name: str = "default-scheduler"
    """The profile's ``schedulerName``: only pods naming it (``spec.schedulerName``, defaulted
    to ``default-scheduler``) are this scheduler's to place, as in kube-scheduler."""
    weights: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    fit_strategy: FitStrategy = field(default_factory=FitStrategy)
    balanced_resources: tuple[str, ...] = ("cpu", "memory")
    percentage_of_nodes_to_score: int | None = None
    ignored_resources: frozenset[str] = frozenset()
    """NodeResourcesFit's ``ignoredResources``: extended resources its filter does not check."""
    ignored_resource_groups: frozenset[str] = frozenset()
    """``ignoredResourceGroups``: domains (``example.com``) whose extended resources it ignores."""
    hard_pod_affinity_weight: int = 1
    preemption: PreemptionConfig = field(default_factory=PreemptionConfig)
    filters: tuple[FilterPlugin, ...] = DEFAULT_FILTERS
    score_plugins: tuple[ScorePlugin, ...] = ()

    def __post_init__(self) -> None:
        pct = self.percentage_of_nodes_to_score
        if pct is not None and not 0 <= pct <= 100:
            raise ValueError("percentage_of_nodes_to_score must be between 0 and 100")
        for name, weight in self.weights.items():
            if weight < 0:
                raise ValueError(f"weight of {name} must not be negative")
        if not 0 <= self.hard_pod_affinity_weight <= 100:
            raise ValueError("hard_pod_affinity_weight must be between 0 and 100")
        if self.filters is DEFAULT_FILTERS and (
            self.ignored_resources or self.ignored_resource_groups
        ):
            fit = NodeResourcesFitFilter(
                ignored_resources=self.ignored_resources,
                ignored_resource_groups=self.ignored_resource_groups,
            )
            filters = tuple(
                fit if isinstance(plugin, NodeResourcesFitFilter) else plugin
                for plugin in DEFAULT_FILTERS
            )
            object.__setattr__(self, "filters", filters)
        if not self.score_plugins:
            plugins = build_score_plugins(
                self.fit_strategy,
                self.balanced_resources,
                hard_pod_affinity_weight=self.hard_pod_affinity_weight,
            )
            object.__setattr__(self, "score_plugins", plugins)

    def weighted_score_plugins(self) -> list[tuple[ScorePlugin, int]]:
        return [
            (plugin, self.weights.get(plugin.name, 0))
            for plugin in self.score_plugins
            if self.weights.get(plugin.name, 0) > 0
        ]


@dataclass
class ScheduleResult:
    """The decision for one pod, with what ``describe pod`` needs to explain it."""

    node_name: str | None
    """The chosen node, or None when the pod is unschedulable."""
    total_score: int | None = None
    """Sum of weight x normalized score of the chosen node."""
    plugin_scores: dict[str, int] = field(default_factory=dict)
    """Normalized (0..100, before weighting) score of the chosen node per score plugin."""
    weights: dict[str, int] = field(default_factory=dict)
    evaluated_nodes: int = 0
    feasible_nodes: int = 0
    num_all_nodes: int = 0
    next_start_index: int = 0
    """Where the next cycle should start filtering (round-robin over the node list)."""
    failures: dict[str, FilterFailure] = field(default_factory=dict)
    """Node name -> why it was rejected (only nodes that were evaluated)."""
    reason_counts: dict[str, int] = field(default_factory=dict)
    message: str = ""

    @property
    def scheduled(self) -> bool:
        return self.node_name is not None


def failure_message(num_all_nodes: int, reason_counts: Mapping[str, int]) -> str:
    """``FitError.Error()``: "0/N nodes are available: <count> <reason>, ... ."""
    if num_all_nodes == 0:
        return NO_NODES_MESSAGE
    message = f"0/{num_all_nodes} nodes are available:"
    parts = sorted(f"{count} {reason}" for reason, count in reason_counts.items())
    if parts:
        message += " " + ", ".join(parts) + "."
    return message


def schedule(
    pod: PodInfo,
    nodes: Sequence[NodeInfo],
    config: SchedulerConfig,
    rng: random.Random,
    start_index: int = 0,
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
    affinity_nodes: Sequence[NodeInfo] | None = None,
    columns: NodeColumns | None = None,
) -> ScheduleResult:
    """Place ``pod`` on one of ``nodes`` as kube-scheduler's default profile would.

    ``start_index`` is where round-robin filtering starts (pass the previous result's
    ``next_start_index``); ``namespace_labels`` feeds namespace selectors of affinity terms;
    ``affinity_nodes`` (optional) is the caller's index of nodes holding pods with
    (anti-)affinity terms, which saves a pass over every node for every pod. ``columns``
    (optional, built over this same ``nodes`` list) lets a simple pod be placed with array
    operations instead of node by node; the answer is the same.
    """
    num_all = len(nodes)
    if num_all == 0:
        return ScheduleResult(None, message=NO_NODES_MESSAGE)
    snapshot = Snapshot(nodes, namespace_labels, affinity_nodes)
    plugins = [plugin for plugin in config.filters if plugin.pre_filter(pod, snapshot)]
    active = [plugin.filter for plugin in plugins]
    active_plain = [
        plugin.filter for plugin in plugins if not getattr(plugin, "passes_plain_nodes", False)
    ]
    to_find = num_feasible_nodes_to_find(num_all, config.percentage_of_nodes_to_score)
    if columns is not None:
        assert len(columns.nodes) == num_all, "columns were built over another node list"
        plain_names = [p.name for p in plugins if not getattr(p, "passes_plain_nodes", False)]
        if vector_eligible(pod, columns, snapshot, plain_names):
            vectorized = _schedule_vectorized(
                pod, columns, config, rng, start_index % num_all, to_find, snapshot,
                active, active_plain,
            )  # fmt: skip
            if vectorized is not None:
                return vectorized

    feasible: list[NodeInfo] = []
    failures: dict[str, FilterFailure] = {}
    start = start_index % num_all
    processed = 0
    for i in range(num_all):
        node = nodes[(start + i) % num_all]
        processed += 1
        for run in active_plain if node.plain else active:
            failure = run(pod, node, snapshot)
            if failure is not None:
                failures[node.name] = failure
                break
        else:
            feasible.append(node)
            if len(feasible) >= to_find:
                break
    next_start = (start + processed) % num_all

    if not feasible:
        counts: dict[str, int] = {}
        for failure in failures.values():
            for reason in failure.reasons:
                counts[reason] = counts.get(reason, 0) + 1
        return ScheduleResult(
            None,
            evaluated_nodes=processed,
            num_all_nodes=num_all,
            next_start_index=next_start,
            failures=failures,
            reason_counts=counts,
            message=failure_message(num_all, counts),
        )

    totals = [0] * len(feasible)
    per_plugin: list[tuple[str, int, list[int] | None]] = []
    for plugin, weight in config.weighted_score_plugins():
        scores = plugin.score_nodes(pod, feasible, snapshot)
        per_plugin.append((plugin.name, weight, scores))
        if scores is not None:
            totals = [total + score * weight for total, score in zip(totals, scores, strict=True)]

    # selectHost: the maximum, uniformly at random among ties. kube-scheduler reservoir-samples
    # (one draw per tie); drawing once among the collected ties has the same distribution.
    best_score = max(totals)
    ties = [i for i, score in enumerate(totals) if score == best_score]
    best = ties[0] if len(ties) == 1 else ties[rng.randrange(len(ties))]

    return ScheduleResult(
        feasible[best].name,
        total_score=best_score,
        plugin_scores={
            name: (scores[best] if scores is not None else 0) for name, _, scores in per_plugin
        },
        weights={name: weight for name, weight, _ in per_plugin},
        evaluated_nodes=processed,
        feasible_nodes=len(feasible),
        num_all_nodes=num_all,
        next_start_index=next_start,
        failures=failures,
    )


def _first_failure(
    runs: Sequence[FilterRun], pod: PodInfo, node: NodeInfo, snapshot: Snapshot
) -> FilterFailure | None:
    for run in runs:
        failure = run(pod, node, snapshot)
        if failure is not None:
            return failure
    return None


def _schedule_vectorized(
    pod: PodInfo,
    columns: NodeColumns,
    config: SchedulerConfig,
    rng: random.Random,
    start: int,
    to_find: int,
    snapshot: Snapshot,
    active: Sequence[FilterRun],
    active_plain: Sequence[FilterRun],
) -> ScheduleResult | None:
    """:func:`schedule` for a pod :func:`vector_eligible` accepts; None when no node fits (the
    per-node path then works out the full failure report)."""
    num_all = len(columns.nodes)
    weighted = config.weighted_score_plugins()
    shape = columns.shape_scores(pod, weighted, snapshot) if columns.cache_shapes else None
    feasible, processed, failures = vector_filter(
        pod, columns, start, to_find,
        plain_filter=lambda node: _first_failure(active_plain, pod, node, snapshot),
        full_filter=lambda node: _first_failure(active, pod, node, snapshot),
        shape=shape,
    )  # fmt: skip
    if feasible.size == 0:
        return None
    per_plugin = vector_scores(pod, columns, feasible, weighted, snapshot, shape)
    totals = np.zeros(feasible.size, np.int64)
    for _, weight, scores in per_plugin:
        if scores is not None:
            totals += scores * weight
    best_score = int(totals.max())
    ties = np.flatnonzero(totals == best_score)
    best = int(ties[0]) if ties.size == 1 else int(ties[rng.randrange(ties.size)])
    return ScheduleResult(
        columns.nodes[int(feasible[best])].name,
        total_score=best_score,
        plugin_scores={
            name: (int(scores[best]) if scores is not None else 0) for name, _, scores in per_plugin
        },
        weights={name: weight for name, weight, _ in per_plugin},
        evaluated_nodes=processed,
        feasible_nodes=int(feasible.size),
        num_all_nodes=num_all,
        next_start_index=(start + processed) % num_all,
        failures=failures,
    )

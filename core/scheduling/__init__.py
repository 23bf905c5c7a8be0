"""The pure scheduling core: kube-scheduler's filters, scores and node selection, without I/O.

Why this exists: placement must give the Kubernetes answer for the same inputs (same reasons,
same integer rounding, same tie-breaking distribution), and it must be testable and fast without
a server. The scheduler handler keeps :class:`NodeInfo` snapshots up to date from the log and asks
:func:`schedule` where each pod goes, and :func:`preempt` which lower-priority pods to evict when
it fits nowhere; :func:`parse_scheduler_config` reads a KubeSchedulerConfiguration file into the
:class:`SchedulerConfig` they run with.
"""

from core.scheduling.config import SchedulerConfiguration, parse_scheduler_config
from core.scheduling.filters import (
    DEFAULT_FILTERS,
    FilterFailure,
    FilterPlugin,
    InterPodAffinityFilter,
    NodeAffinityFilter,
    NodeNameFilter,
    NodePortsFilter,
    NodeResourcesFitFilter,
    NodeUnschedulableFilter,
    PodTopologySpreadFilter,
    Snapshot,
    TaintTolerationFilter,
    run_filters,
)
from core.scheduling.framework import (
    SchedulerConfig,
    ScheduleResult,
    num_feasible_nodes_to_find,
    schedule,
)
from core.scheduling.model import NodeInfo, NodeSelectorTerm, PodInfo
from core.scheduling.preemption import (
    Candidate,
    DisruptionBudget,
    PreemptionConfig,
    PreemptionResult,
    Victim,
    VictimSelection,
    pick_one_node_for_preemption,
    pod_eligible_to_preempt_others,
    preempt,
    select_victims_on_node,
)
from core.scheduling.scores import FitStrategy, ScorePlugin, build_score_plugins

__all__ = [
    "DEFAULT_FILTERS",
    "Candidate",
    "DisruptionBudget",
    "FilterFailure",
    "FilterPlugin",
    "FitStrategy",
    "InterPodAffinityFilter",
    "NodeAffinityFilter",
    "NodeInfo",
    "NodeNameFilter",
    "NodePortsFilter",
    "NodeResourcesFitFilter",
    "NodeSelectorTerm",
    "NodeUnschedulableFilter",
    "PodInfo",
    "PodTopologySpreadFilter",
    "PreemptionConfig",
    "PreemptionResult",
    "ScheduleResult",
    "SchedulerConfig",
    "SchedulerConfiguration",
    "ScorePlugin",
    "Snapshot",
    "TaintTolerationFilter",
    "Victim",
    "VictimSelection",
    "build_score_plugins",
    "num_feasible_nodes_to_find",
    "parse_scheduler_config",
    "pick_one_node_for_preemption",
    "pod_eligible_to_preempt_others",
    "preempt",
    "run_filters",
    "schedule",
    "select_victims_on_node",
]

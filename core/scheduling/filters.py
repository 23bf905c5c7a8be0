"""kube-scheduler's filter plugins: can this pod run on this node, and if not, why not.

Why this exists: a refusal must read exactly like the current Kubernetes release's (operators
grep for "Insufficient cpu" and "had untolerated taint(s)"; since v1.34 the TaintToleration
plugin no longer names the taint, whose value may be private to the cluster's operator), and the
set of feasible nodes must be the one kube-scheduler would compute, because scoring and the final
choice depend on it. Each plugin mirrors the plugin of the same name in
``pkg/scheduler/framework/plugins``; the framework runs them in the default
profile's order and stops at the first plugin that rejects a node, so a node contributes the
reasons of one plugin only (several for NodeResourcesFit, one per missing resource).

A plugin has two steps, as in the framework: ``pre_filter(pod, snapshot)`` computes whatever is
shared by all nodes for this pod (inter-pod affinity and topology spread counts over the whole
cluster) into ``snapshot.state`` and returns False when the plugin has nothing to check for this
pod (the framework then skips it); ``filter(pod, node, snapshot)`` returns None or a
:class:`FilterFailure`.

Simplifications versus Kubernetes: no PreFilterResult narrowing (NodeAffinity's ``matchFields``
shortcut) -- the nodes it would exclude are rejected by Filter instead, so the feasible set is the
same but such nodes are counted under the NodeAffinity reason in the message; nominated pods are
not added to nodes before filtering; volume plugins do not exist; NodePorts looks at regular
containers' ``hostPort`` only; namespace selectors of affinity terms are evaluated against
``Snapshot.namespace_labels`` (a namespace missing there has no labels).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

from core.meta.labels import Selector
from core.meta.taints import NodeTaint
from core.scheduling.model import (
    NodeInfo,
    PodInfo,
    SpreadConstraint,
    node_matches_required_affinity,
)

__all__ = [
    "DEFAULT_FILTERS",
    "ERR_AFFINITY_RULES",
    "ERR_ANTI_AFFINITY_RULES",
    "ERR_EXISTING_ANTI_AFFINITY",
    "ERR_NODE_AFFINITY",
    "ERR_NODE_NAME",
    "ERR_NODE_PORTS",
    "ERR_SPREAD",
    "ERR_SPREAD_MISSING_LABEL",
    "ERR_UNSCHEDULABLE",
    "ERR_UNTOLERATED_TAINT",
    "FilterFailure",
    "FilterPlugin",
    "InterPodAffinityFilter",
    "NodeAffinityFilter",
    "NodeNameFilter",
    "NodePortsFilter",
    "NodeResourcesFitFilter",
    "NodeUnschedulableFilter",
    "PodTopologySpreadFilter",
    "Snapshot",
    "TaintTolerationFilter",
    "count_pods_matching",
    "is_extended_resource",
    "run_filters",
    "spread_node_included",
]

ERR_UNSCHEDULABLE: Final = "node(s) were unschedulable"
ERR_NODE_NAME: Final = "node(s) didn't match the requested node name"
ERR_NODE_AFFINITY: Final = "node(s) didn't match Pod's node affinity/selector"
ERR_NODE_PORTS: Final = "node(s) didn't have free ports for the requested pod ports"
ERR_AFFINITY_RULES: Final = "node(s) didn't match pod affinity rules"
ERR_ANTI_AFFINITY_RULES: Final = "node(s) didn't match pod anti-affinity rules"
ERR_EXISTING_ANTI_AFFINITY: Final = "node(s) didn't satisfy existing pods anti-affinity rules"
ERR_SPREAD: Final = "node(s) didn't match pod topology spread constraints"
ERR_SPREAD_MISSING_LABEL: Final = ERR_SPREAD + " (missing required label)"
ERR_UNTOLERATED_TAINT: Final = "node(s) had untolerated taint(s)"

UNSCHEDULABLE_TAINT: Final = NodeTaint("node.kubernetes.io/unschedulable", "", "NoSchedule")


class FilterFailure:
    """Why one plugin rejected one node: Kubernetes reason strings and the status code.

    ``unresolvable`` is ``UnschedulableAndUnresolvable``: preemption cannot help on that node.
    """

    __slots__ = ("plugin", "reasons", "unresolvable")

    def __init__(self, plugin: str, reasons: tuple[str, ...], unresolvable: bool) -> None:
        self.plugin = plugin
        self.reasons = reasons
        self.unresolvable = unresolvable

    @property
    def reason(self) -> str:
        """All reasons joined (one reason for every plugin but NodeResourcesFit)."""
        return ", ".join(self.reasons)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FilterFailure) and (
            self.plugin,
            self.reasons,
            self.unresolvable,
        ) == (other.plugin, other.reasons, other.unresolvable)

    def __hash__(self) -> int:
        return hash((self.plugin, self.reasons, self.unresolvable))

    def __repr__(self) -> str:
        code = "UnschedulableAndUnresolvable" if self.unresolvable else "Unschedulable"
        return f"FilterFailure({self.plugin}, {self.reasons!r}, {code})"


class Snapshot:
    """All nodes of the cluster for one scheduling cycle, plus the plugins' per-pod state."""

    __slots__ = ("_affinity_nodes", "namespace_labels", "nodes", "state")

    def __init__(
        self,
        nodes: Sequence[NodeInfo],
        namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
        affinity_nodes: Sequence[NodeInfo] | None = None,
    ) -> None:
        """``affinity_nodes``: the nodes holding pods with (anti-)affinity terms, if the caller
        keeps that index (kube-scheduler's ``HavePodsWithAffinityList``); computed when None."""
        self.nodes = nodes
        self.namespace_labels: Mapping[str, Mapping[str, str]] = namespace_labels or {}
        self.state: dict[str, Any] = {}
        self._affinity_nodes = affinity_nodes

    @property
    def affinity_nodes(self) -> Sequence[NodeInfo]:
        if self._affinity_nodes is None:
            self._affinity_nodes = [n for n in self.nodes if n.pods_with_affinity]
        return self._affinity_nodes


class FilterPlugin(Protocol):
    """A filter. A plugin may set ``passes_plain_nodes = True`` when it never rejects a node
    that is neither cordoned nor carries a NoSchedule/NoExecute taint (``NodeInfo.plain``);
    the framework then does not call it for such nodes."""

    name: str

    def pre_filter(self, pod: PodInfo, snapshot: Snapshot) -> bool: ...

    def filter(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> FilterFailure | None: ...


def _untolerated(taints: Sequence[NodeTaint], pod: PodInfo) -> NodeTaint | None:
    """The first taint of ``taints`` no toleration of ``pod`` tolerates."""
    tolerations = pod.tolerations
    for taint in taints:
        for toleration in tolerations:
            if toleration.tolerates(taint):
                break
        else:
            return taint
    return None


class NodeUnschedulableFilter:
    """A cordoned node takes only pods tolerating the unschedulable:NoSchedule taint."""

    name = "NodeUnschedulable"
    passes_plain_nodes = True
    _FAIL: Final = FilterFailure("NodeUnschedulable", (ERR_UNSCHEDULABLE,), True)

    def pre_filter(self, pod: PodInfo, snapshot: Snapshot) -> bool:
        return True

    def filter(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> FilterFailure | None:
        if not node.unschedulable:
            return None
        if any(t.tolerates(UNSCHEDULABLE_TAINT) for t in pod.tolerations):
            return None
        return self._FAIL


class NodeNameFilter:
    """``spec.nodeName`` set: only that node."""

    name = "NodeName"
    _FAIL: Final = FilterFailure("NodeName", (ERR_NODE_NAME,), True)

    def pre_filter(self, pod: PodInfo, snapshot: Snapshot) -> bool:
        return bool(pod.node_name)

    def filter(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> FilterFailure | None:
        if pod.node_name and pod.node_name != node.name:
            return self._FAIL
        return None


class TaintToleration:
    """Shared name for the filter and score halves."""

    name = "TaintToleration"


class TaintTolerationFilter(TaintToleration):
    """NoSchedule and NoExecute taints must all be tolerated."""

    passes_plain_nodes = True
    _FAIL: Final = FilterFailure("TaintToleration", (ERR_UNTOLERATED_TAINT,), True)

    def pre_filter(self, pod: PodInfo, snapshot: Snapshot) -> bool:
        return True

    def filter(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> FilterFailure | None:
        if not node.hard_taints or _untolerated(node.hard_taints, pod) is None:
            return None
        return self._FAIL


class NodeAffinityFilter:
    """``nodeSelector`` AND required node affinity."""

    name = "NodeAffinity"
    _FAIL: Final = FilterFailure("NodeAffinity", (ERR_NODE_AFFINITY,), True)

    def pre_filter(self, pod: PodInfo, snapshot: Snapshot) -> bool:
        return pod.has_node_constraints

    def filter(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> FilterFailure | None:
        if node_matches_required_affinity(pod, node.name, node.labels):
            return None
        return self._FAIL


class NodePortsFilter:
    """Requested host ports must be free (``HostPortInfo.CheckConflict``; "" means 0.0.0.0)."""

    name = "NodePorts"
    _FAIL: Final = FilterFailure("NodePorts", (ERR_NODE_PORTS,), False)

    def pre_filter(self, pod: PodInfo, snapshot: Snapshot) -> bool:
        return bool(pod.host_ports)

    def filter(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> FilterFailure | None:
        used = node.used_ports
        if not used:
            return None
        for protocol, ip, port in pod.host_ports:
            if ip == "0.0.0.0":
                for u_protocol, _u_ip, u_port in used:
                    if u_port == port and u_protocol == protocol:
                        return self._FAIL
            elif (protocol, ip, port) in used or (protocol, "0.0.0.0", port) in used:
                return self._FAIL
        return None


def is_extended_resource(name: str) -> bool:
    """``IsExtendedResourceName``: a domain-prefixed name outside ``kubernetes.io/`` (and not a
    quota's ``requests.`` form)."""
    return "/" in name and "kubernetes.io/" not in name and not name.startswith("requests.")


class NodeResourcesFitFilter:
    """Requests must fit into allocatable minus what the node's pods already request.

    One reason per missing resource; ``UnschedulableAndUnresolvable`` when a request exceeds the
    node's whole allocatable (no preemption can make room). Extended resources named in
    ``ignored_resources``, or of a domain in ``ignored_resource_groups``, are not checked
    (``NodeResourcesFitArgs``: something else, an extender or a device plugin, accounts for
    them).
    """

    name = "NodeResourcesFit"

    def __init__(
        self,
        *,
        ignored_resources: Iterable[str] = (),
        ignored_resource_groups: Iterable[str] = (),
    ) -> None:
        self.ignored_resources = frozenset(ignored_resources)
        self.ignored_resource_groups = frozenset(ignored_resource_groups)
        self._ignores = bool(self.ignored_resources or self.ignored_resource_groups)

    def ignores(self, name: str) -> bool:
        return (
            self._ignores
            and is_extended_resource(name)
            and (
                name in self.ignored_resources
                or name.split("/", 1)[0] in self.ignored_resource_groups
            )
        )

    def pre_filter(self, pod: PodInfo, snapshot: Snapshot) -> bool:
        return True

    def filter(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> FilterFailure | None:
        alloc = node.allocatable
        requested = node.requested
        ignores = self.ignores
        # Fast path: everything fits (the common case); details only when something does not.
        if len(node.pods) < alloc.get("pods", 0):
            for name, amount in pod.fit_requests:
                if amount > alloc.get(name, 0) - requested.get(name, 0) and not ignores(name):
                    break
            else:
                return None
        reasons: list[str] | None = None
        unresolvable = False
        if len(node.pods) + 1 > alloc.get("pods", 0):
            reasons = ["Too many pods"]
        reqs = pod.requests
        if reqs:
            for name, amount in reqs.items():
                if amount <= 0 or name == "pods" or ignores(name):
                    continue
                total = alloc.get(name, 0)
                if amount > total - requested.get(name, 0):
                    if reasons is None:
                        reasons = []
                    reasons.append(f"Insufficient {name}")
                    if amount > total:
                        unresolvable = True
        if reasons is None:
            return None
        return FilterFailure(self.name, tuple(_fit_order(reasons)), unresolvable)


def _fit_order(reasons: list[str]) -> list[str]:
    """Kubernetes checks pods, cpu, memory, ephemeral-storage, then the scalar resources
    (in Go map order, here alphabetically)."""
    rank = {
        "Too many pods": 0,
        "Insufficient cpu": 1,
        "Insufficient memory": 2,
        "Insufficient ephemeral-storage": 3,
    }
    return sorted(reasons, key=lambda r: (rank.get(r, 4), r))


# --------------------------------------------------------------------------------------------
# PodTopologySpread
# --------------------------------------------------------------------------------------------


def count_pods_matching(node: NodeInfo, selector: Selector, namespace: str) -> int:
    """``countPodsMatchSelector``: same namespace, not terminating; an empty selector counts 0."""
    if not selector.requirements:
        return 0
    count = 0
    for other in node.pods.values():
        if other.deleting or other.namespace != namespace:
            continue
        if selector.matches(other.labels):
            count += 1
    return count


def spread_node_included(pod: PodInfo, node: NodeInfo, constraint: SpreadConstraint) -> bool:
    """``matchNodeInclusionPolicies``: nodeAffinityPolicy Honor / nodeTaintsPolicy Honor."""
    if constraint.node_affinity_policy == "Honor" and not node_matches_required_affinity(
        pod, node.name, node.labels
    ):
        return False
    return not (
        constraint.node_taints_policy == "Honor"
        and node.hard_taints
        and _untolerated(node.hard_taints, pod) is not None
    )


class _SpreadFilterState:
    __slots__ = ("constraints", "counts", "minimums", "self_match")

    def __init__(
        self,
        constraints: tuple[SpreadConstraint, ...],
        counts: list[dict[str, int]],
        minimums: list[int],
        self_match: list[int],
    ) -> None:
        self.constraints = constraints
        self.counts = counts
        self.minimums = minimums
        self.self_match = self_match


class PodTopologySpreadFilter:
    """DoNotSchedule constraints: ``matching(domain) + self - globalMin <= maxSkew``."""

    name = "PodTopologySpread"
    _FAIL: Final = FilterFailure("PodTopologySpread", (ERR_SPREAD,), False)
    _MISSING: Final = FilterFailure("PodTopologySpread", (ERR_SPREAD_MISSING_LABEL,), True)

    def pre_filter(self, pod: PodInfo, snapshot: Snapshot) -> bool:
        constraints = tuple(
            c for c in pod.spread_constraints if c.when_unsatisfiable == "DoNotSchedule"
        )
        if not constraints:
            return False
        keys = [c.topology_key for c in constraints]
        counts: list[dict[str, int]] = [{} for _ in constraints]
        for node in snapshot.nodes:
            labels = node.labels
            if any(key not in labels for key in keys):
                continue
            for i, constraint in enumerate(constraints):
                if not spread_node_included(pod, node, constraint):
                    continue
                value = labels[constraint.topology_key]
                domain = counts[i]
                domain[value] = domain.get(value, 0) + count_pods_matching(
                    node, constraint.selector, pod.namespace
                )
        minimums: list[int] = []
        for i, constraint in enumerate(constraints):
            domain = counts[i]
            if len(domain) < constraint.min_domains:
                minimums.append(0)
            else:
                minimums.append(min(domain.values()))
        self_match = [1 if c.selector.matches(pod.labels) else 0 for c in constraints]
        snapshot.state[self.name] = _SpreadFilterState(constraints, counts, minimums, self_match)
        return True

    def filter(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> FilterFailure | None:
        state: _SpreadFilterState = snapshot.state[self.name]
        labels = node.labels
        for i, constraint in enumerate(state.constraints):
            value = labels.get(constraint.topology_key)
            if value is None:
                return self._MISSING
            skew = state.counts[i].get(value, 0) + state.self_match[i] - state.minimums[i]
            if skew > constraint.max_skew:
                return self._FAIL
        return None


# --------------------------------------------------------------------------------------------
# InterPodAffinity
# --------------------------------------------------------------------------------------------


class _AffinityFilterState:
    __slots__ = ("affinity", "anti_affinity", "existing_anti_affinity", "self_match")

    def __init__(self) -> None:
        self.existing_anti_affinity: dict[tuple[str, str], int] = {}
        self.affinity: dict[tuple[str, str], int] = {}
        self.anti_affinity: dict[tuple[str, str], int] = {}
        self.self_match = False


class InterPodAffinityFilter:
    """Required pod affinity / anti-affinity, and the symmetric anti-affinity of existing pods."""

    name = "InterPodAffinity"
    _FAIL_AFFINITY: Final = FilterFailure("InterPodAffinity", (ERR_AFFINITY_RULES,), True)
    _FAIL_ANTI: Final = FilterFailure("InterPodAffinity", (ERR_ANTI_AFFINITY_RULES,), False)
    _FAIL_EXISTING: Final = FilterFailure("InterPodAffinity", (ERR_EXISTING_ANTI_AFFINITY,), False)

    def pre_filter(self, pod: PodInfo, snapshot: Snapshot) -> bool:
        state = _AffinityFilterState()
        ns_labels = snapshot.namespace_labels
        existing = state.existing_anti_affinity
        affinity_terms = pod.required_affinity_terms
        anti_terms = pod.required_anti_affinity_terms
        for node in snapshot.affinity_nodes:
            if not node.pods_with_required_anti_affinity:
                continue
            labels = node.labels
            for other in node.pods_with_required_anti_affinity.values():
                for term in other.required_anti_affinity_terms:
                    value = labels.get(term.topology_key)
                    if value is not None and term.matches(pod, ns_labels):
                        pair = (term.topology_key, value)
                        existing[pair] = existing.get(pair, 0) + 1
        if not affinity_terms and not anti_terms and not existing:
            return False
        if affinity_terms or anti_terms:
            affinity, anti = state.affinity, state.anti_affinity
            for node in snapshot.nodes:
                labels = node.labels
                for other in node.pods.values():
                    if affinity_terms and all(t.matches(other, ns_labels) for t in affinity_terms):
                        for term in affinity_terms:
                            value = labels.get(term.topology_key)
                            if value is not None:
                                pair = (term.topology_key, value)
                                affinity[pair] = affinity.get(pair, 0) + 1
                    for term in anti_terms:
                        value = labels.get(term.topology_key)
                        if value is not None and term.matches(other, ns_labels):
                            pair = (term.topology_key, value)
                            anti[pair] = anti.get(pair, 0) + 1
            state.self_match = bool(affinity_terms) and all(
                t.matches(pod, ns_labels) for t in affinity_terms
            )
        snapshot.state[self.name] = state
        return True

    def filter(self, pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> FilterFailure | None:
        state: _AffinityFilterState = snapshot.state[self.name]
        labels = node.labels
        if pod.required_affinity_terms:
            pods_exist = True
            for term in pod.required_affinity_terms:
                value = labels.get(term.topology_key)
                if value is None:
                    return self._FAIL_AFFINITY
                if state.affinity.get((term.topology_key, value), 0) <= 0:
                    pods_exist = False
            if not pods_exist and not (not state.affinity and state.self_match):
                return self._FAIL_AFFINITY
        if state.anti_affinity:
            for term in pod.required_anti_affinity_terms:
                value = labels.get(term.topology_key)
                if value is not None and state.anti_affinity.get((term.topology_key, value), 0):
                    return self._FAIL_ANTI
        existing = state.existing_anti_affinity
        if existing:
            for pair in labels.items():
                if existing.get(pair, 0) > 0:
                    return self._FAIL_EXISTING
        return None


DEFAULT_FILTERS: Final[tuple[FilterPlugin, ...]] = (
    NodeUnschedulableFilter(),
    NodeNameFilter(),
    TaintTolerationFilter(),
    NodeAffinityFilter(),
    NodePortsFilter(),
    NodeResourcesFitFilter(),
    PodTopologySpreadFilter(),
    InterPodAffinityFilter(),
)
"""The default profile's filters, in kube-scheduler's order."""


def run_filters(
    pod: PodInfo,
    node: NodeInfo,
    snapshot: Snapshot | None = None,
    plugins: Sequence[FilterPlugin] = DEFAULT_FILTERS,
) -> FilterFailure | None:
    """Pre-filter then filter one node (convenient for tests and ``describe``)."""
    snap = snapshot if snapshot is not None else Snapshot([node])
    for plugin in plugins:
        if plugin.pre_filter(pod, snap):
            failure = plugin.filter(pod, node, snap)
            if failure is not None:
                return failure
    return None

"""The per-node work of a scheduling cycle as array operations, for the common pod.

Why this exists: kube-scheduler looks at hundreds of nodes per pod; done node by node in Python
that costs about a millisecond per pod at 5,000 nodes, which caps a scheduler replica near
700 pods/s. Most pods in a real cluster are simple — no node or pod affinity, no host ports, no
spread constraints, asking only for cpu and memory — and for them the filters reduce to "the
node is neither cordoned nor NoSchedule/NoExecute-tainted, and the requests fit", and the
scores to arithmetic on a few numbers per node. :class:`NodeColumns` keeps those numbers in
numpy arrays aligned with the node list (updated in place as NodeInfos change), and
:func:`vector_filter` / :func:`vector_scores` compute, for all nodes at once, exactly what the
plugins compute one node at a time: the same feasible nodes in the same round-robin order, the
same integer rounding (every operand stays below 2**52, so int64 products and float64 fractions
are exact or rounded exactly as Python rounds them), the same failures for the nodes that were
evaluated. Nodes that are not plain (cordoned, hard-tainted) still go through the Python
filters, one by one. A pod or configuration outside this shape is not eligible, and the caller
uses the per-node path; a property test checks both paths agree.

Pods come in few shapes (a deployment's replicas ask for the same cpu and memory), and between
two pods of one shape only the nodes that changed meanwhile (usually the one the previous pod
went to) can answer differently. :class:`ShapeScores` keeps, per shape, whether the requests fit
each plain node and the NodeResourcesFit and BalancedAllocation scores of every node; a node's
change marks it stale in every shape, and only stale nodes are evaluated again, by the plugins'
node-by-node code. The feasible window, the random draw among ties and every other plugin run as
without the cache, so the answer is the same (a test replays a script of mixed pods both ways).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Final, overload

import numpy as np
import numpy.typing as npt

from core.scheduling.filters import FilterFailure, Snapshot
from core.scheduling.model import NodeInfo, PodInfo
from core.scheduling.scores import (
    MAX_NODE_SCORE,
    BalancedAllocationScore,
    NodeResourcesFitScore,
    ScorePlugin,
    TaintTolerationScore,
)

__all__ = [
    "EXACT_LIMIT",
    "NodeColumns",
    "ShapeScores",
    "vector_eligible",
    "vector_filter",
    "vector_scores",
]

EXACT_LIMIT: Final = 2**52
"""Amounts at or above this could overflow ``x * 100`` in int64 or lose precision in float64."""

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_VECTOR_RESOURCES: Final = frozenset({"cpu", "memory"})

SHAPES_KEPT: Final = 32
"""Pod shapes whose results :class:`NodeColumns` keeps (the least recently used go first)."""
STALE_NODES_BY_NODE: Final = 32
"""Up to this many stale nodes a shape re-evaluates node by node; more, and it recomputes its
arrays whole (a few array operations beat hundreds of Python calls)."""


class ShapeScores:
    """For one pod shape: whether its requests fit each node, and the array plugins' scores of
    each node, as of the last pod of that shape; ``stale`` holds the nodes changed since.

    ``fits[i]`` is the array filter's answer on a plain node (False on the others, which are
    filtered node by node every time, as without the cache). ``fit`` / ``balanced`` are the
    normalized NodeResourcesFit and BalancedAllocation scores of every node (None: that plugin
    is not weighted, or skips the shape)."""

    __slots__ = ("balanced", "balanced_plugin", "fit", "fit_plugin", "fits", "stale")

    def __init__(
        self,
        fit_plugin: NodeResourcesFitScore | None,
        balanced_plugin: BalancedAllocationScore | None,
    ) -> None:
        self.fit_plugin = fit_plugin
        self.balanced_plugin = balanced_plugin
        self.fits: BoolArray = np.zeros(0, np.bool_)
        self.fit: Int64Array | None = None
        self.balanced: Int64Array | None = None
        self.stale: set[int] | None = None
        """Nodes changed since the arrays were computed; None: never computed."""

    def sync(self, pod: PodInfo, columns: NodeColumns, snapshot: Snapshot) -> None:
        """Bring the arrays up to date with ``columns`` for ``pod`` (a pod of this shape)."""
        stale = self.stale
        if stale is None or len(stale) > STALE_NODES_BY_NODE:
            everything = np.arange(len(columns.nodes), dtype=np.int64)
            self.fits = _fits_at(pod, columns, everything)
            self.fit = (
                None if self.fit_plugin is None
                else _fit_scores(pod, columns, everything, self.fit_plugin)
            )  # fmt: skip
            self.balanced = (
                None if self.balanced_plugin is None or not (pod.cpu or pod.memory)
                else _balanced_scores(pod, columns, everything)
            )  # fmt: skip
            self.stale = set()
            return
        if not stale:
            return
        nodes = columns.nodes
        changed = sorted(stale)
        stale.clear()
        fits = self.fits
        for i in changed:
            fits[i] = _fits_node(pod, nodes[i])
        if self.fit is not None or self.balanced is not None:
            # The plugins' own node-by-node code: the reference the arrays are held to.
            at = [nodes[i] for i in changed]
            for column, plugin in (
                (self.fit, self.fit_plugin),
                (self.balanced, self.balanced_plugin),
            ):
                if column is None or plugin is None:
                    continue
                scores = plugin.score_nodes(pod, at, snapshot)
                assert scores is not None
                for i, score in zip(changed, scores, strict=True):
                    column[i] = score


def _fits_node(pod: PodInfo, node: NodeInfo) -> bool:
    """:func:`_fits_at` for one node, from its NodeInfo (the numbers the columns copy)."""
    if not node.plain or len(node.pods) >= node.allocatable.get("pods", 0):
        return False
    if pod.cpu > 0 and node.requested.get("cpu", 0) + pod.cpu > node.alloc_cpu:
        return False
    return not (pod.memory > 0 and node.requested.get("memory", 0) + pod.memory > node.alloc_memory)


def _fits_at(pod: PodInfo, columns: NodeColumns, at: Int64Array | slice) -> BoolArray:
    """Whether the pod's requests fit the plain nodes ``at`` (False on the others)."""
    fits = columns.plain[at] & (columns.pod_count[at] < columns.alloc_pods[at])
    if pod.cpu > 0:
        fits &= columns.fit_cpu[at] + pod.cpu <= columns.alloc_cpu[at]
    if pod.memory > 0:
        fits &= columns.fit_memory[at] + pod.memory <= columns.alloc_memory[at]
    return fits


class NodeColumns:
    """Numbers the simple-pod filters and scores read, one array slot per node of ``nodes``.

    It registers itself as every node's ``on_change`` hook, so assuming a pod on a node (or the
    log changing it) updates the arrays at once. Build a new one when the set of nodes changes.
    """

    def __init__(self, nodes: Sequence[NodeInfo], *, cache_shapes: bool = True) -> None:
        """``cache_shapes``: keep :class:`ShapeScores` per pod shape (off: every pod is
        evaluated afresh, as the tests compare)."""
        self.nodes: list[NodeInfo] = list(nodes)
        self.cache_shapes = cache_shapes
        self._shapes: dict[tuple[object, ...], ShapeScores] = {}
        size = len(self.nodes)
        self.index = {node.name: i for i, node in enumerate(self.nodes)}
        self.alloc_cpu: Int64Array = np.zeros(size, np.int64)
        self.alloc_memory: Int64Array = np.zeros(size, np.int64)
        self.alloc_pods: Int64Array = np.zeros(size, np.int64)
        self.fit_cpu: Int64Array = np.zeros(size, np.int64)
        """``requested["cpu"]``: what NodeResourcesFit subtracts from allocatable."""
        self.fit_memory: Int64Array = np.zeros(size, np.int64)
        self.requested_cpu: Int64Array = np.zeros(size, np.int64)
        """Actual requests, as BalancedAllocation reads them."""
        self.requested_memory: Int64Array = np.zeros(size, np.int64)
        self.non_zero_cpu: Int64Array = np.zeros(size, np.int64)
        self.non_zero_memory: Int64Array = np.zeros(size, np.int64)
        self.pod_count: Int64Array = np.zeros(size, np.int64)
        self.plain: BoolArray = np.zeros(size, np.bool_)
        self.prefer_tainted: BoolArray = np.zeros(size, np.bool_)
        self._not_exact: set[int] = set()
        self._not_plain: set[int] = set()
        self._prefer_tainted: set[int] = set()
        self._amount_columns = (
            self.alloc_cpu, self.alloc_memory, self.alloc_pods, self.fit_cpu, self.fit_memory,
            self.requested_cpu, self.requested_memory, self.non_zero_cpu, self.non_zero_memory,
        )  # fmt: skip
        for i, node in enumerate(self.nodes):
            self._refresh(i, node)
            node.on_change = self._changed

    @property
    def exact(self) -> bool:
        """Every amount is small enough for exact array arithmetic."""
        return not self._not_exact

    @property
    def has_prefer_tainted(self) -> bool:
        """Some node has a PreferNoSchedule taint (TaintToleration scores then differ)."""
        return bool(self._prefer_tainted)

    @property
    def has_not_plain(self) -> bool:
        """Some node is cordoned or hard-tainted (its filters run node by node)."""
        return bool(self._not_plain)

    def not_plain_indices(self) -> list[int]:
        return sorted(self._not_plain)

    def _changed(self, node: NodeInfo) -> None:
        i = self.index.get(node.name)
        if i is not None and self.nodes[i] is node:
            self._refresh(i, node)

    def shape_scores(
        self, pod: PodInfo, weighted: Sequence[tuple[ScorePlugin, int]], snapshot: Snapshot
    ) -> ShapeScores:
        """The cached results for ``pod``'s shape under these plugins, brought up to date."""
        fit_plugin = balanced_plugin = None
        for plugin, _ in weighted:
            if isinstance(plugin, NodeResourcesFitScore) and plugin._fast:
                fit_plugin = plugin
            elif isinstance(plugin, BalancedAllocationScore) and plugin.resources == (
                "cpu",
                "memory",
            ):
                balanced_plugin = plugin
        # Everything the cached arrays read of the pod; the plugin objects stand for the
        # configuration (strategy and resource weights) they score with.
        key = (pod.cpu, pod.memory, pod.non_zero_cpu, pod.non_zero_memory, fit_plugin,
               balanced_plugin)  # fmt: skip
        shapes = self._shapes
        shape = shapes.pop(key, None)
        if shape is None:
            shape = ShapeScores(fit_plugin, balanced_plugin)
            if len(shapes) >= SHAPES_KEPT:
                del shapes[next(iter(shapes))]
        shapes[key] = shape  # the most recently used last
        shape.sync(pod, self, snapshot)
        return shape

    def _refresh(self, i: int, node: NodeInfo) -> None:
        # Runs on every pod assumed or bound: one array write per column, no generators.
        for shape in self._shapes.values():
            if shape.stale is not None:
                shape.stale.add(i)
        allocatable, requested = node.allocatable, node.requested
        values = (
            allocatable.get("cpu", 0),
            allocatable.get("memory", 0),
            allocatable.get("pods", 0),
            requested.get("cpu", 0),
            requested.get("memory", 0),
            node.requested_cpu,
            node.requested_memory,
            node.non_zero_cpu,
            node.non_zero_memory,
        )
        if min(values) > -EXACT_LIMIT and max(values) < EXACT_LIMIT:
            self._not_exact.discard(i)
        else:
            self._not_exact.add(i)
            values = tuple(min(max(v, -EXACT_LIMIT), EXACT_LIMIT) for v in values)
        for column, value in zip(self._amount_columns, values, strict=True):
            column[i] = value
        self.pod_count[i] = len(node.pods)
        self.plain[i] = node.plain
        if node.plain:
            self._not_plain.discard(i)
        else:
            self._not_plain.add(i)
        if node.prefer_taints:
            self.prefer_tainted[i] = True
            self._prefer_tainted.add(i)
        else:
            self.prefer_tainted[i] = False
            self._prefer_tainted.discard(i)


def vector_eligible(
    pod: PodInfo, columns: NodeColumns, snapshot: Snapshot, plain_filter_names: Sequence[str]
) -> bool:
    """Whether the array path gives the per-node answer for this pod.

    ``plain_filter_names`` are the filters that would run on a plain node for this pod (the
    active ones that do not pass plain nodes by construction): only NodeResourcesFit may be
    among them, so that on plain nodes feasibility is exactly "the requests fit".
    """
    if list(plain_filter_names) != ["NodeResourcesFit"] or not columns.exact:
        return False
    if pod.node_name or pod.has_node_constraints or pod.preferred_node_terms:
        return False
    if pod.host_ports or pod.spread_constraints or pod.has_pod_affinity:
        return False
    if snapshot.affinity_nodes:
        return False  # existing pods' (anti-)affinity terms may reject or attract this pod
    if any(name not in _VECTOR_RESOURCES for name, _ in pod.fit_requests):
        return False
    return all(
        -EXACT_LIMIT < v < EXACT_LIMIT
        for v in (pod.cpu, pod.memory, pod.non_zero_cpu, pod.non_zero_memory)
    )


NodeFilter = Callable[[NodeInfo], FilterFailure | None]


def vector_filter(
    pod: PodInfo,
    columns: NodeColumns,
    start: int,
    to_find: int,
    *,
    plain_filter: NodeFilter,
    full_filter: NodeFilter,
    shape: ShapeScores | None = None,
) -> tuple[Int64Array, int, dict[str, FilterFailure]]:
    """Round-robin filtering from ``start`` until ``to_find`` feasible nodes are found.

    Returns the feasible node indices in evaluation order, how many nodes were evaluated, and
    the failure of each evaluated node that did not pass. ``plain_filter`` / ``full_filter``
    run the per-node filters (the plain-node subset, and all of them), for failure reasons and
    for nodes that are not plain. ``shape`` (synced for this pod): plain nodes' answers come
    from it instead of the arrays.

    Nodes are looked at in round-robin order a window at a time (twice ``to_find`` first, the
    rest only if that window holds too few feasible nodes): in a cluster with room, a pod is
    placed after looking at a tenth of 5,000 nodes, and the arrays need not cover the others.
    """
    nodes = columns.nodes
    size = len(nodes)
    known: dict[int, FilterFailure] = {}
    first = min(size, first_window(to_find))
    rotated = _rotated_fits(pod, columns, start, 0, first, full_filter, known, shape)
    positions = np.flatnonzero(rotated)
    if positions.size < to_find and first < size:
        rest = _rotated_fits(pod, columns, start, first, size, full_filter, known, shape)
        rotated = np.concatenate((rotated, rest))
        positions = np.flatnonzero(rotated)
    if positions.size >= to_find:
        positions = positions[:to_find]
        processed = int(positions[-1]) + 1 if to_find else 0
    else:
        processed = size
    feasible = (positions + start) % size if start else positions
    failures: dict[str, FilterFailure] = {}
    if processed > positions.size:
        for offset in np.flatnonzero(~rotated[:processed]).tolist():
            i = (offset + start) % size
            node = nodes[i]
            failure = known.get(i) or plain_filter(node)
            assert failure is not None, f"{node.name} failed in arrays but passes its filters"
            failures[node.name] = failure
    return feasible.astype(np.int64, copy=False), processed, failures


FIRST_WINDOW: Final = 256
"""The fewest nodes the first window of :func:`vector_filter` covers."""


def first_window(to_find: int) -> int:
    """How many nodes :func:`vector_filter` looks at first when it must find ``to_find``."""
    return max(2 * to_find, FIRST_WINDOW)


def _rotated_fits(
    pod: PodInfo,
    columns: NodeColumns,
    start: int,
    begin: int,
    end: int,
    full_filter: NodeFilter,
    known: dict[int, FilterFailure],
    shape: ShapeScores | None,
) -> BoolArray:
    """Whether the pod fits each node at round-robin positions ``begin`` to ``end`` (position
    0 is node ``start``): the arrays on plain nodes, ``full_filter`` on the others (their
    failures kept in ``known``, by node index)."""
    size = len(columns.nodes)
    low, high = start + begin, start + end
    if low >= size:
        spans = [(low - size, high - size)]
    elif high <= size:
        spans = [(low, high)]
    else:
        spans = [(low, size), (0, high - size)]
    not_plain = columns.not_plain_indices() if columns.has_not_plain else ()
    parts = []
    for lo, hi in spans:
        if shape is None:
            fits = _fits_at(pod, columns, slice(lo, hi))
        else:
            fits = shape.fits[lo:hi]
            if not_plain:
                fits = fits.copy()  # the not-plain nodes' answers are written in below
        for i in not_plain:
            if lo <= i < hi:
                failure = full_filter(columns.nodes[i])
                if failure is None:
                    fits[i - lo] = True
                else:
                    known[i] = failure
        parts.append(fits)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def vector_scores(
    pod: PodInfo,
    columns: NodeColumns,
    feasible: Int64Array,
    weighted: Sequence[tuple[ScorePlugin, int]],
    snapshot: Snapshot,
    shape: ShapeScores | None = None,
) -> list[tuple[str, int, Int64Array | None]]:
    """Normalized scores of the feasible nodes per weighted plugin (None: the plugin skips).

    NodeResourcesFit (Least/MostAllocated on cpu and memory), BalancedAllocation (cpu and
    memory) and TaintToleration are computed on arrays; any other plugin scores the feasible
    NodeInfos itself. ``shape`` (synced for this pod) has the first two for every node.
    """
    out: list[tuple[str, int, Int64Array | None]] = []
    feasible_nodes = _NodesAt(columns.nodes, feasible)
    for plugin, weight in weighted:
        scores: Int64Array | None
        if shape is not None and plugin is shape.fit_plugin:
            assert shape.fit is not None
            scores = shape.fit[feasible]
        elif shape is not None and plugin is shape.balanced_plugin:
            scores = None if shape.balanced is None else shape.balanced[feasible]
        elif isinstance(plugin, NodeResourcesFitScore) and plugin._fast:
            scores = _fit_scores(pod, columns, feasible, plugin)
        elif isinstance(plugin, BalancedAllocationScore) and plugin.resources == ("cpu", "memory"):
            scores = _balanced_scores(pod, columns, feasible) if pod.cpu or pod.memory else None
        elif type(plugin) is TaintTolerationScore:
            scores = _taint_scores(pod, columns, feasible, plugin, snapshot)
        else:
            listed = plugin.score_nodes(pod, feasible_nodes, snapshot)
            scores = None if listed is None else np.array(listed, np.int64)
        out.append((plugin.name, weight, scores))
    return out


class _NodesAt(Sequence[NodeInfo]):
    """The feasible nodes as a sequence, materialised only if a plugin walks it (most plugins
    skip a simple pod after looking at the pod alone)."""

    def __init__(self, nodes: list[NodeInfo], indices: Int64Array) -> None:
        self._nodes = nodes
        self._indices = indices
        self._listed: list[NodeInfo] | None = None

    def _list(self) -> list[NodeInfo]:
        if self._listed is None:
            self._listed = [self._nodes[i] for i in self._indices.tolist()]
        return self._listed

    def __len__(self) -> int:
        return int(self._indices.size)

    @overload
    def __getitem__(self, index: int) -> NodeInfo: ...
    @overload
    def __getitem__(self, index: slice) -> list[NodeInfo]: ...
    def __getitem__(self, index: int | slice) -> NodeInfo | list[NodeInfo]:
        return self._list()[index]

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(self._list())


def _fit_scores(
    pod: PodInfo, columns: NodeColumns, feasible: Int64Array, plugin: NodeResourcesFitScore
) -> Int64Array:
    (_, w_cpu), (_, w_memory) = plugin.strategy.resources
    least = plugin.strategy.type == "LeastAllocated"
    resources = (
        (columns.alloc_cpu[feasible], columns.non_zero_cpu, pod.non_zero_cpu, w_cpu),
        (columns.alloc_memory[feasible], columns.non_zero_memory, pod.non_zero_memory, w_memory),
    )
    if all(alloc.all() for alloc, _, _, _ in resources):
        # Every feasible node states both resources (the usual cluster): the same integer
        # arithmetic without the masks, a third of the array operations. (Least: a request
        # beyond the allocatable scores 0, which max(alloc - requested, 0) gives directly.)
        weight_sum = w_cpu + w_memory
        if weight_sum == 0:
            return np.zeros(feasible.size, np.int64)
        summed: Int64Array | None = None
        for alloc, used_column, request, weight in resources:
            requested = used_column[feasible] + request
            if least:
                value = np.maximum(alloc - requested, 0) * MAX_NODE_SCORE // alloc
            else:
                value = np.minimum(requested, alloc) * MAX_NODE_SCORE // alloc
            summed = value * weight if summed is None else summed + value * weight
        assert summed is not None
        return summed // weight_sum
    total = np.zeros(feasible.size, np.int64)
    weights = np.zeros(feasible.size, np.int64)
    for alloc, used_column, request, weight in resources:
        requested = used_column[feasible] + request
        counted = alloc != 0
        divisor = np.where(counted, alloc, 1)
        if least:
            value = np.where(requested > alloc, 0, (alloc - requested) * MAX_NODE_SCORE // divisor)
        else:
            value = np.minimum(requested, alloc) * MAX_NODE_SCORE // divisor
        total += np.where(counted, value * weight, 0)
        weights += np.where(counted, weight, 0)
    return np.where(weights != 0, total // np.where(weights != 0, weights, 1), 0)


def _balanced_scores(pod: PodInfo, columns: NodeColumns, feasible: Int64Array) -> Int64Array:
    alloc_cpu = columns.alloc_cpu[feasible]
    alloc_memory = columns.alloc_memory[feasible]
    if alloc_cpu.all() and alloc_memory.all():
        # Every feasible node states both (the usual cluster): no masks, the same floats.
        f_cpu = np.minimum((columns.requested_cpu[feasible] + pod.cpu) / alloc_cpu, 1.0)
        f_memory = np.minimum((columns.requested_memory[feasible] + pod.memory) / alloc_memory, 1.0)
        return ((1 - np.abs((f_cpu - f_memory) / 2)) * MAX_NODE_SCORE).astype(np.int64)
    both = (alloc_cpu != 0) & (alloc_memory != 0)
    f_cpu = np.minimum(
        (columns.requested_cpu[feasible] + pod.cpu) / np.where(both, alloc_cpu, 1), 1.0
    )
    f_memory = np.minimum(
        (columns.requested_memory[feasible] + pod.memory) / np.where(both, alloc_memory, 1), 1.0
    )
    balanced = ((1 - np.abs((f_cpu - f_memory) / 2)) * MAX_NODE_SCORE).astype(np.int64)
    return np.where(both, balanced, MAX_NODE_SCORE)


def _taint_scores(
    pod: PodInfo,
    columns: NodeColumns,
    feasible: Int64Array,
    plugin: TaintTolerationScore,
    snapshot: Snapshot,
) -> Int64Array:
    if not columns.has_prefer_tainted:
        # No node prefers to repel pods (the usual cluster): every raw count is 0.
        return np.full(feasible.size, MAX_NODE_SCORE, np.int64)
    tainted = np.flatnonzero(columns.prefer_tainted[feasible])
    raw = np.zeros(feasible.size, np.int64)
    for position in tainted.tolist():
        raw[position] = plugin.score(pod, columns.nodes[int(feasible[position])], snapshot)
    highest = int(raw.max()) if raw.size else 0
    if highest <= 0:
        return np.full(feasible.size, MAX_NODE_SCORE, np.int64)
    return MAX_NODE_SCORE - MAX_NODE_SCORE * raw // highest

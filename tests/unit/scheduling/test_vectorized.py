"""The array path gives exactly the node-by-node answer: same node, scores, rounding, failures,
round-robin position and random draws, on random clusters (hypothesis)."""

from __future__ import annotations

import random
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core.scheduling.framework as framework
import core.scheduling.vectorized as vectorized
from core.meta.labels import Selector
from core.meta.taints import NodeTaint, PodToleration
from core.scheduling import NodeInfo, PodInfo, SchedulerConfig, schedule
from core.scheduling.model import AffinityTerm
from core.scheduling.scores import FitStrategy
from core.scheduling.vectorized import EXACT_LIMIT, NodeColumns

GI = 1024**3
MI = 1024**2

TAINTS = [
    NodeTaint("dedicated", "gpu", "NoSchedule"),
    NodeTaint("maintenance", "", "NoExecute"),
    NodeTaint("spot", "", "PreferNoSchedule"),
    NodeTaint("slow", "yes", "PreferNoSchedule"),
]
TOLERATIONS = [
    PodToleration("dedicated", "Equal", "gpu", "NoSchedule"),
    PodToleration("spot", "Exists", "", "PreferNoSchedule"),
    PodToleration("node.kubernetes.io/unschedulable", "Exists", "", "NoSchedule"),
    PodToleration("maintenance", "Exists", "", "NoExecute", 300),
]


@st.composite
def pods(draw: st.DrawFn, name: str) -> PodInfo:
    requests = {
        "cpu": draw(st.sampled_from([0, 100, 250, 1000, 3000])),
        "memory": draw(st.sampled_from([0, 128 * MI, 1 * GI, 3 * GI])),
    }
    tolerations = tuple(draw(st.lists(st.sampled_from(TOLERATIONS), max_size=3, unique=True)))
    return PodInfo(namespace="default", name=name, requests=requests, tolerations=tolerations)


@st.composite
def nodes(draw: st.DrawFn, index: int) -> NodeInfo:
    existing = draw(st.lists(pods(f"existing-{index}"), max_size=3))
    for n, pod in enumerate(existing):
        pod.name = f"existing-{index}-{n}"
        pod.key = f"default/{pod.name}"
    return NodeInfo(
        f"node-{index}",
        labels={"kubernetes.io/hostname": f"node-{index}"},
        taints=draw(st.lists(st.sampled_from(TAINTS), max_size=2, unique=True)),
        allocatable={
            "cpu": draw(st.sampled_from([0, 1000, 2000, 4000])),
            "memory": draw(st.sampled_from([0, 2 * GI, 8 * GI])),
            "pods": draw(st.sampled_from([0, 2, 110])),
        },
        unschedulable=draw(st.booleans()) and draw(st.booleans()),
        pods=existing,
    )


@st.composite
def clusters(draw: st.DrawFn) -> list[NodeInfo]:
    size = draw(st.sampled_from([1, 3, 20, 130]))
    return [draw(nodes(i)) for i in range(size)]


configs = st.builds(
    lambda kind, w_cpu, w_mem, fit, balanced, taint, pct: SchedulerConfig(
        weights={
            "NodeResourcesFit": fit,
            "NodeResourcesBalancedAllocation": balanced,
            "TaintToleration": taint,
            "NodeAffinity": 2,
            "PodTopologySpread": 2,
            "InterPodAffinity": 2,
        },
        fit_strategy=FitStrategy(kind, (("cpu", w_cpu), ("memory", w_mem))),
        percentage_of_nodes_to_score=pct,
    ),
    st.sampled_from(["LeastAllocated", "MostAllocated"]),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 2),
    st.integers(0, 2),
    st.integers(0, 3),
    st.sampled_from([None, 0, 10, 50, 100]),
)


def outcome(result: object) -> dict:
    fields = dict(vars(result))
    fields["failures"] = {
        k: (f.plugin, f.reasons, f.unresolvable) for k, f in fields["failures"].items()
    }
    return fields


@settings(max_examples=120, deadline=None)
@given(
    clusters(),
    st.lists(pods("incoming"), min_size=1, max_size=4),
    configs,
    st.integers(0, 10**6),
    st.integers(0, 2**32),
)
def test_arrays_and_node_by_node_agree(
    cluster: list[NodeInfo], incoming: list[PodInfo], config: SchedulerConfig, start: int, seed: int
) -> None:
    columns = NodeColumns(cluster)
    by_node, by_array = random.Random(seed), random.Random(seed)
    next_node = next_array = start
    for n, pod in enumerate(incoming):
        pod.name = f"incoming-{n}"
        pod.key = f"default/{pod.name}"
        expected = schedule(pod, cluster, config, by_node, next_node)
        actual = schedule(pod, cluster, config, by_array, next_array, columns=columns)
        assert outcome(actual) == outcome(expected)
        next_node, next_array = expected.next_start_index, actual.next_start_index
        if expected.node_name is not None:
            # Assume the pod where it went: the columns must follow the NodeInfo.
            next(node for node in cluster if node.name == expected.node_name).add_pod(pod)


@settings(max_examples=120, deadline=None)
@given(
    clusters(),
    st.lists(pods("incoming"), min_size=1, max_size=4),
    configs,
    st.integers(0, 10**6),
    st.integers(0, 2**32),
    st.integers(1, 140),
)
def test_filtering_a_window_at_a_time_gives_the_node_by_node_answer(
    cluster: list[NodeInfo],
    incoming: list[PodInfo],
    config: SchedulerConfig,
    start: int,
    seed: int,
    window: int,
) -> None:
    """The arrays look at the first ``window`` nodes (round-robin from the start) first and at
    the rest only when those hold too few feasible nodes; spans that wrap past the last node,
    windows with too few feasible nodes and windows larger than the cluster all agree."""
    with mock.patch.object(vectorized, "first_window", lambda to_find: window):
        test_arrays_and_node_by_node_agree.hypothesis.inner_test(  # type: ignore[attr-defined]
            cluster, incoming, config, start, seed
        )


def test_columns_follow_node_changes() -> None:
    node = NodeInfo("a", allocatable={"cpu": 1000, "memory": GI, "pods": 110})
    columns = NodeColumns([node])
    node.add_pod(PodInfo(name="p", requests={"cpu": 300}))
    assert (columns.fit_cpu[0], columns.pod_count[0], columns.non_zero_memory[0]) == (
        300,
        1,
        200 * MI,
    )
    node.remove_pod("default/p")
    assert (columns.fit_cpu[0], columns.pod_count[0]) == (0, 0)
    node.set_node({"metadata": {"name": "a"}, "spec": {"unschedulable": True}})
    assert not columns.plain[0] and columns.not_plain_indices() == [0]


def test_columns_know_whether_any_node_prefers_to_repel_pods() -> None:
    """TaintToleration's scores are all the same (skipped) only while no node has a
    PreferNoSchedule taint; a node gaining or losing one changes that."""
    nodes = [NodeInfo(name, allocatable={"cpu": 1000, "memory": GI, "pods": 110}) for name in "ab"]
    columns = NodeColumns(nodes)
    config = SchedulerConfig()
    pod = PodInfo(name="p", requests={"cpu": 100})
    assert not columns.has_prefer_tainted
    spot = {"key": "spot", "effect": "PreferNoSchedule"}
    status = {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}}
    nodes[1].set_node({"metadata": {"name": "b"}, "spec": {"taints": [spot]}, "status": status})
    assert nodes[1].plain
    assert columns.has_prefer_tainted
    for start in (0, 1):
        expected = schedule(pod, nodes, config, random.Random(start), start)
        actual = schedule(pod, nodes, config, random.Random(start), start, columns=columns)
        assert outcome(actual) == outcome(expected)
        assert actual.node_name == "a"  # the tainted node scores lower
    nodes[1].set_node({"metadata": {"name": "b"}, "spec": {}, "status": status})
    assert not columns.has_prefer_tainted


def test_amounts_too_large_for_exact_arrays_use_the_node_by_node_path() -> None:
    huge = NodeInfo("huge", allocatable={"cpu": 1000, "memory": EXACT_LIMIT * 4, "pods": 110})
    small = NodeInfo("small", allocatable={"cpu": 1000, "memory": GI, "pods": 110})
    cluster = [huge, small]
    columns = NodeColumns(cluster)
    assert not columns.exact
    pod = PodInfo(name="p", requests={"cpu": 100, "memory": 100 * MI})
    expected = schedule(pod, cluster, SchedulerConfig(), random.Random(1))
    assert outcome(
        schedule(pod, cluster, SchedulerConfig(), random.Random(1), columns=columns)
    ) == outcome(expected)
    assert expected.node_name == "huge"  # least allocated by far


def test_pods_with_affinity_anywhere_use_the_node_by_node_path() -> None:
    term = AffinityTerm(Selector(), frozenset({"default"}), None, "kubernetes.io/hostname")
    anti = PodInfo(name="anti", required_anti_affinity_terms=(term,))
    nodes_ = [
        NodeInfo(
            f"n{i}",
            labels={"kubernetes.io/hostname": f"n{i}"},
            allocatable={"cpu": 1000, "pods": 10},
        )
        for i in range(3)
    ]
    nodes_[0].add_pod(anti)
    columns = NodeColumns(nodes_)
    pod = PodInfo(name="p", requests={"cpu": 100})
    for seed in range(10):
        result = schedule(pod, nodes_, SchedulerConfig(), random.Random(seed), columns=columns)
        assert result.node_name != "n0"  # the existing pod's anti-affinity holds


def test_a_simple_pod_takes_the_array_path(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[object] = []
    original = framework._schedule_vectorized

    def spy(*args: object, **kwargs: object) -> object:
        taken.append(result := original(*args, **kwargs))  # type: ignore[arg-type]
        return result

    monkeypatch.setattr(framework, "_schedule_vectorized", spy)
    cluster = [
        NodeInfo(f"n{i}", allocatable={"cpu": 4000, "memory": 16 * GI, "pods": 110})
        for i in range(300)
    ]
    pod = PodInfo(name="p", requests={"cpu": 100, "memory": 500 * MI})
    result = schedule(
        pod, cluster, SchedulerConfig(), random.Random(1), columns=NodeColumns(cluster)
    )
    assert (
        taken == [result] and result.feasible_nodes == 144 == result.evaluated_nodes
    )  # 48 % of 300


def _script_cluster(size: int) -> list[NodeInfo]:
    return [
        NodeInfo(
            f"n{i}",
            labels={"kubernetes.io/hostname": f"n{i}"},
            allocatable={
                "cpu": (2000, 4000, 8000)[i % 3],
                "memory": (4 * GI, 16 * GI, 32 * GI)[i % 3],
                "pods": 12 if i % 7 else 3,
            },
        )
        for i in range(size)
    ]


def _script_pod(n: int, rng: random.Random) -> PodInfo:
    """Mostly pods of a few shapes (as replicas of deployments are), some that request nothing,
    tolerate taints, or carry affinity terms (which takes every pod off the array path while
    such a pod is placed)."""
    kind = rng.randrange(20)
    requests = rng.choice(
        [{"cpu": 100, "memory": 500 * MI}, {"cpu": 250, "memory": 1 * GI}, {"cpu": 1000}]
    )
    if kind == 0:
        requests = {}
    tolerations = (PodToleration("dedicated", "Equal", "gpu", "NoSchedule"),) if kind == 1 else ()
    anti = ()
    if kind == 2:
        anti = (AffinityTerm(Selector(), frozenset({"default"}), None, "kubernetes.io/hostname"),)
    return PodInfo(
        name=f"p{n}",
        requests=requests,
        tolerations=tolerations,
        required_anti_affinity_terms=anti,
    )


def _change_node(node: NodeInfo, rng: random.Random) -> None:
    """Cordon, taint (hard or PreferNoSchedule) or restore a node, its pods kept."""
    spec: dict[str, object] = {}
    change = rng.randrange(4)
    if change == 0:
        spec["unschedulable"] = True
    elif change == 1:
        spec["taints"] = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
    elif change == 2:
        spec["taints"] = [{"key": "spot", "effect": "PreferNoSchedule"}]
    allocatable = {k: str(v) for k, v in node.allocatable.items()}
    allocatable["cpu"] = f"{node.allocatable['cpu']}m"
    node.set_node(
        {"metadata": {"name": node.name, "labels": node.labels}, "spec": spec,
         "status": {"allocatable": allocatable}}
    )  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cached_shapes_pick_the_same_nodes_as_evaluating_every_pod_afresh(seed: int) -> None:
    """A script of mixed pods, pods leaving and nodes changing, run twice on identical clusters:
    with results kept per pod shape (only changed nodes evaluated again) and without. Every
    decision is the same: node, scores, feasible and evaluated counts, failures, round-robin
    position and random draws."""
    cached_nodes, fresh_nodes = _script_cluster(400), _script_cluster(400)
    cached = NodeColumns(cached_nodes)
    fresh = NodeColumns(fresh_nodes, cache_shapes=False)
    config = SchedulerConfig()
    script = random.Random(seed)
    cached_rng, fresh_rng = random.Random(seed), random.Random(seed)
    cached_start = fresh_start = 0
    placed: list[tuple[str, int]] = []  # pod key, node index
    scheduled = 0
    for n in range(900):
        step = script.randrange(30)
        if step == 0 and placed:
            key, i = placed.pop(script.randrange(len(placed)))
            cached_nodes[i].remove_pod(key)
            fresh_nodes[i].remove_pod(key)
            continue
        if step == 1:
            i = script.randrange(len(cached_nodes))
            _change_node(cached_nodes[i], random.Random(n))
            _change_node(fresh_nodes[i], random.Random(n))
            continue
        pod = _script_pod(n, script)
        expected = schedule(pod, fresh_nodes, config, fresh_rng, fresh_start, columns=fresh)
        actual = schedule(pod, cached_nodes, config, cached_rng, cached_start, columns=cached)
        assert outcome(actual) == outcome(expected), f"step {n}"
        fresh_start, cached_start = expected.next_start_index, actual.next_start_index
        if expected.node_name is not None:
            i = cached.index[expected.node_name]
            cached_nodes[i].add_pod(pod)
            fresh_nodes[i].add_pod(pod)
            placed.append((pod.key, i))
            scheduled += 1
    assert scheduled > 500  # the script fills the cluster, and the cache was used throughout
    assert cached._shapes and not fresh._shapes

"""One scheduling cycle: node sampling, weighted totals, tie-breaking and refusal messages."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from core.scheduling import SchedulerConfig, num_feasible_nodes_to_find, schedule
from tests.unit.scheduling.helpers import node, node_manifest, pod

CONTROL_PLANE_TAINT = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]


@pytest.mark.parametrize(
    ("nodes", "percentage", "expected"),
    [
        (50, None, 50),  # fewer than 100 nodes: all of them
        (99, 10, 99),
        (100, None, 100),  # 50 - 100//125 = 50 % -> 50, raised to the minimum of 100
        (1000, None, 420),  # 50 - 1000//125 = 42 % -> 420
        (5000, None, 500),  # 50 - 40 = 10 % -> 500
        (6000, None, 300),  # 50 - 48 = 2 % -> floor of 5 % -> 300
        (20000, None, 1000),  # 50 - 160 < 5 -> 5 % -> 1000
        (1000, 30, 300),  # configured percentage
        (1000, 5, 100),  # 5 % of 1000 = 50 -> minimum 100
        (1000, 100, 1000),
    ],
)
def test_adaptive_percentage_of_nodes_to_score(nodes: int, percentage: int | None, expected: int):
    assert num_feasible_nodes_to_find(nodes, percentage) == expected


def test_picks_highest_weighted_total_and_reports_plugin_scores():
    nodes = [
        node("busy", pods=[pod("e", cpu="2", memory="16Gi")]),
        node("empty"),
    ]
    p = pod("new", cpu="1", memory="4Gi")
    result = schedule(p, nodes, SchedulerConfig(), random.Random(1))
    # empty: fit cpu (4000-1000)*100//4000 = 75, memory (32-4)*100//32 = 87 -> (75+87)//2 = 81
    #        balanced: fractions 0.25, 0.125 -> int((1 - 0.0625)*100) = 93
    #        taint toleration: no PreferNoSchedule taints -> 100
    #        total = 3*100 + 1*81 + 1*93 = 474
    # busy:  fit cpu 25, memory (32-20)*100//32 = 37 -> 31; balanced 0.75/0.625 -> 93; total 424
    assert result.node_name == "empty"
    assert result.total_score == 474
    assert result.plugin_scores == {
        "TaintToleration": 100,
        "NodeAffinity": 0,
        "NodeResourcesFit": 81,
        "PodTopologySpread": 0,
        "InterPodAffinity": 0,
        "NodeResourcesBalancedAllocation": 93,
    }
    assert result.weights["TaintToleration"] == 3
    assert (result.feasible_nodes, result.evaluated_nodes) == (2, 2)


def test_zero_weight_disables_a_score_plugin():
    nodes = [node("busy", pods=[pod("e", cpu="2", memory="16Gi")]), node("empty")]
    config = SchedulerConfig(weights={"NodeResourcesFit": 0, "TaintToleration": 3})
    result = schedule(pod("new", cpu="1", memory="4Gi"), nodes, config, random.Random(1))
    assert result.plugin_scores == {"TaintToleration": 100}
    assert result.total_score == 300


def test_ties_are_broken_uniformly_at_random():
    nodes = [node(f"n{i}") for i in range(4)]
    rng = random.Random(20240601)
    counts = Counter(
        schedule(pod(cpu="100m"), nodes, SchedulerConfig(), rng).node_name for _ in range(4000)
    )
    assert set(counts) == {"n0", "n1", "n2", "n3"}
    # expected 1000 each; a fair choice stays within +-15 % with overwhelming probability
    assert all(850 <= c <= 1150 for c in counts.values()), counts


def test_same_seed_gives_same_choice():
    nodes = [node(f"n{i}") for i in range(10)]
    a = [schedule(pod(), nodes, SchedulerConfig(), random.Random(7)).node_name for _ in range(3)]
    b = [schedule(pod(), nodes, SchedulerConfig(), random.Random(7)).node_name for _ in range(3)]
    assert a == b


def test_unschedulable_message_counts_reasons_like_kubernetes():
    # workers: 4 cpu with 3 already requested -> 1 free; the pod asks for 2
    nodes = [node(f"w{i}", pods=[pod("e", cpu="3")]) for i in range(3)] + [
        node(f"cp{i}", taints=CONTROL_PLANE_TAINT) for i in range(2)
    ]
    result = schedule(pod(cpu="2"), nodes, SchedulerConfig(), random.Random(0))
    assert result.node_name is None
    assert result.reason_counts == {
        "Insufficient cpu": 3,
        "node(s) had untolerated taint(s)": 2,
    }
    # Go's sort.Strings over "<count> <reason>": "2 node(s)..." sorts before "3 Insufficient..."
    assert result.message == (
        "0/5 nodes are available: 2 node(s) had untolerated taint(s), 3 Insufficient cpu."
    )
    assert result.failures["cp0"].unresolvable
    # 2 cpu <= 4 allocatable: preemption could make room, so only Unschedulable
    assert not result.failures["w0"].unresolvable
    # 2 cpu > 1 allocatable: UnschedulableAndUnresolvable, as in Kubernetes
    tiny = schedule(pod(cpu="2"), [node("t", cpu="1")], SchedulerConfig(), random.Random(0))
    assert tiny.failures["t"].unresolvable


def test_a_node_contributes_every_resource_reason_to_the_message():
    nodes = [node("a", cpu="1", memory="1Gi"), node("b", cpu="1")]
    result = schedule(pod(cpu="2", memory="2Gi"), nodes, SchedulerConfig(), random.Random(0))
    # a: cpu and memory short; b: cpu short (memory 32Gi is enough)
    assert result.message == "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu."


def test_no_nodes_gives_kubernetes_message():
    result = schedule(pod(), [], SchedulerConfig(), random.Random(0))
    assert result.node_name is None
    assert result.message == "no nodes available to schedule pods"


def test_filtering_stops_once_enough_feasible_nodes_are_found_round_robin():
    nodes = [node(f"n{i:03d}") for i in range(200)]
    config = SchedulerConfig(percentage_of_nodes_to_score=10)
    # 10 % of 200 = 20 -> raised to 100 feasible nodes; starting at 150 we look at 150..199, 0..49
    result = schedule(pod(), nodes, config, random.Random(3), start_index=150)
    assert (result.evaluated_nodes, result.feasible_nodes) == (100, 100)
    assert result.next_start_index == 50
    assert result.node_name is not None
    index = int(result.node_name[1:])
    assert index >= 150 or index < 50


def test_rejected_nodes_count_towards_the_next_start_index():
    nodes = [node(f"n{i:03d}", cpu="0" if i % 2 else "4") for i in range(300)]
    config = SchedulerConfig(percentage_of_nodes_to_score=10)
    # need 100 feasible; only even nodes fit: the 100th is n198, so n000..n198 are evaluated
    # (199 nodes, 99 of them rejected) and the next cycle starts at n199
    result = schedule(pod(cpu="1"), nodes, config, random.Random(3), start_index=0)
    assert (result.evaluated_nodes, result.feasible_nodes) == (199, 100)
    assert result.next_start_index == 199
    assert len(result.failures) == 99


def test_scheduling_spreads_replicas_with_topology_spread_and_keeps_node_info_current():
    nodes = [node(f"n{i}", labels={"zone": z}) for i, z in enumerate(["a", "a", "b", "b"])]
    rng = random.Random(5)
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}},
        }
    ]
    zones: Counter[str] = Counter()
    by_name = {n.name: n for n in nodes}
    for i in range(6):
        p = pod(f"w{i}", labels={"app": "web"}, cpu="100m", topologySpreadConstraints=spread)
        result = schedule(p, nodes, SchedulerConfig(), rng)
        assert result.node_name is not None
        chosen = by_name[result.node_name]
        chosen.add_pod(p)
        zones[chosen.labels["zone"]] += 1
        assert abs(zones["a"] - zones["b"]) <= 1
    assert zones == {"a": 3, "b": 3}


def test_rejects_invalid_percentage():
    with pytest.raises(ValueError):
        SchedulerConfig(percentage_of_nodes_to_score=101)


def test_cordoned_and_tainted_nodes_are_still_filtered_after_node_updates():
    a, b = node("a"), node("b")
    a.set_node(node_manifest("a", unschedulable=True))
    b.set_node(node_manifest("b", taints=[{"key": "k", "effect": "NoExecute"}]))
    result = schedule(pod(), [a, b], SchedulerConfig(), random.Random(0))
    assert result.message == (
        "0/2 nodes are available: 1 node(s) had untolerated taint(s), 1 node(s) were unschedulable."
    )
    a.set_node(node_manifest("a"))
    assert schedule(pod(), [a, b], SchedulerConfig(), random.Random(0)).node_name == "a"


def test_explicit_affinity_index_gives_the_same_answer_as_computing_it():
    anti = pod(
        "loner",
        labels={"app": "loner"},
        affinity={
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {"app": "web"}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        },
    )
    nodes = [node("n1", pods=[anti]), node("n2")]
    web = pod("w", labels={"app": "web"})
    computed = schedule(web, nodes, SchedulerConfig(), random.Random(0))
    given = schedule(web, nodes, SchedulerConfig(), random.Random(0), affinity_nodes=[nodes[0]])
    assert computed.node_name == given.node_name == "n2"

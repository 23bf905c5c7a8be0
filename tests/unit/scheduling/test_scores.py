"""Score plugins reproduce kube-scheduler's raw scores, normalisation and integer rounding."""

from __future__ import annotations

import random
from typing import Any

from core.scheduling import FitStrategy, NodeInfo, PodInfo, Snapshot
from core.scheduling.scores import (
    BalancedAllocationScore,
    InterPodAffinityScore,
    NodeAffinityScore,
    NodeResourcesFitScore,
    PodTopologySpreadScore,
    TaintTolerationScore,
    go_div,
    go_round,
)
from tests.unit.scheduling.helpers import node, pod


def _scores(plugin: Any, p: PodInfo, nodes: list[NodeInfo]) -> list[int] | None:
    return plugin.score_nodes(p, nodes, Snapshot(nodes))


def _fit_node() -> NodeInfo:
    # allocatable cpu 3000m, memory 3Gi (3072Mi); existing pod requests 1000m / 1Gi
    return node("n1", cpu="3", memory="3Gi", pods=[pod("e", cpu="1", memory="1Gi")])


def test_go_integer_division_and_rounding_helpers():
    assert go_div(-7, 2) == -3  # Go truncates toward zero; Python's // would give -4
    assert go_div(7, 2) == 3
    assert go_round(38.5) == 39  # half away from zero; Python's round gives 38
    assert go_round(-2.5) == -3
    assert go_round(2.4999) == 2


def test_least_allocated_uses_integer_division_like_kubernetes():
    p = pod(cpu="100m", memory="256Mi")
    # cpu: requested 1000+100 = 1100; (3000-1100)*100 // 3000 = 190000 // 3000 = 63
    # memory: requested 1024+256 = 1280Mi; (3072-1280)*100 // 3072 = 179200 // 3072 = 58
    # node: (63*1 + 58*1) // 2 = 121 // 2 = 60 (a float mean would give 60.5)
    assert NodeResourcesFitScore().score(p, _fit_node(), Snapshot([])) == 60


def test_least_allocated_uses_non_zero_defaults_for_pods_without_requests():
    n = node("n1", cpu="1", memory="1000Mi")
    # best-effort pod counts as 100m / 200Mi for scoring:
    # cpu (1000-100)*100 // 1000 = 90; memory (1000-200)*100 // 1000 = 80; (90+80)//2 = 85
    assert NodeResourcesFitScore().score(pod(), n, Snapshot([])) == 85


def test_least_allocated_scores_zero_when_overcommitted():
    n = node("n1", cpu="1", memory="1Gi", pods=[pod("e", cpu="900m", memory="1Gi")])
    # cpu: 900+200 > 1000 -> 0; memory: 1Gi + 200Mi > 1Gi -> 0
    assert NodeResourcesFitScore().score(pod(cpu="200m"), n, Snapshot([])) == 0


def test_most_allocated_prefers_fuller_nodes_with_integer_division():
    p = pod(cpu="100m", memory="256Mi")
    # cpu 1100*100 // 3000 = 36; memory 1280*100 // 3072 = 41; (36+41) // 2 = 38
    plugin = NodeResourcesFitScore(FitStrategy("MostAllocated"))
    assert plugin.score(p, _fit_node(), Snapshot([])) == 38


def test_requested_to_capacity_ratio_rounds_half_away_from_zero():
    p = pod(cpu="100m", memory="256Mi")
    # shape {0: 0, 100: 10} scaled x10 -> {0: 0, 100: 100}
    # cpu utilization 1100*100 // 3000 = 36 -> 36; memory 1280*100 // 3072 = 41 -> 41
    # math.Round((36+41)/2 = 38.5) = 39
    plugin = NodeResourcesFitScore(FitStrategy("RequestedToCapacityRatio"))
    assert plugin.score(p, _fit_node(), Snapshot([])) == 39


def test_requested_to_capacity_ratio_truncates_negative_slopes_toward_zero():
    p = pod(cpu="100m", memory="256Mi")
    strategy = FitStrategy("RequestedToCapacityRatio", (("memory", 1),), ((0, 10), (60, 0)))
    # memory utilization 41; shape {0: 100, 60: 0}:
    # 100 + (0-100)*(41-0)/(60-0) = 100 + trunc(-4100/60 = -68.3) = 100 - 68 = 32
    assert NodeResourcesFitScore(strategy).score(p, _fit_node(), Snapshot([])) == 32


def test_requested_to_capacity_ratio_leaves_zero_scores_out_of_the_mean():
    n = node("n1", cpu="1000", memory="3Gi", pods=[pod("e", memory="1Gi")])
    p = pod(cpu="100m", memory="256Mi")
    # cpu utilization (100+100)*100 // 1000000 = 0 -> score 0, excluded from the mean
    # memory utilization (1024+256)*100 // 3072 = 41 -> 41; result 41 (not 20)
    plugin = NodeResourcesFitScore(FitStrategy("RequestedToCapacityRatio"))
    assert plugin.score(p, n, Snapshot([])) == 41


def test_fit_score_skips_extended_resources_the_pod_does_not_request():
    strategy = FitStrategy(resources=(("cpu", 1), ("memory", 1), ("example.com/gpu", 5)))
    n = node("n1", cpu="1", memory="1000Mi", extra={"example.com/gpu": "4"})
    # gpu not requested -> skipped, so the result equals the cpu/memory-only score 85
    assert NodeResourcesFitScore(strategy).score(pod(), n, Snapshot([])) == 85
    # requested: gpu (4-1)*100 // 4 = 75, weight 5: (90 + 80 + 375) // 7 = 545 // 7 = 77
    gpu_pod = pod(extra={"example.com/gpu": "1"})
    assert NodeResourcesFitScore(strategy).score(gpu_pod, n, Snapshot([])) == 77


def test_balanced_allocation_uses_actual_requests_and_half_the_difference_for_two_resources():
    n = node("n1", cpu="4", memory="8Gi", pods=[pod("e", cpu="1", memory="1Gi")])
    p = pod(cpu="1", memory="1Gi")
    # fractions: cpu 2000/4000 = 0.5, memory 2Gi/8Gi = 0.25; std = |0.5-0.25|/2 = 0.125
    # int((1 - 0.125) * 100) = int(87.5) = 87
    assert BalancedAllocationScore().score(p, n, Snapshot([])) == 87


def test_balanced_allocation_population_std_for_three_resources():
    n = node(
        "n1",
        cpu="4",
        memory="8Gi",
        extra={"example.com/gpu": "4"},
        pods=[pod("e", cpu="1", memory="1Gi")],
    )
    p = pod(cpu="1", memory="1Gi", extra={"example.com/gpu": "1"})
    # fractions 0.5, 0.25, 0.25; mean 1/3; variance ((1/6)^2 + 2*(1/12)^2)/3 = 1/72
    # std = 0.11785; int((1 - 0.11785) * 100) = int(88.21) = 88
    plugin = BalancedAllocationScore(("cpu", "memory", "example.com/gpu"))
    assert plugin.score(p, n, Snapshot([])) == 88


def test_balanced_allocation_is_skipped_for_pods_without_requests():
    nodes = [node("n1")]
    assert _scores(BalancedAllocationScore(), pod(), nodes) is None


def test_taint_toleration_score_counts_intolerable_prefer_no_schedule_taints_reversed():
    nodes = [
        node("n0"),
        node("n1", taints=[{"key": "a", "effect": "PreferNoSchedule"}]),
        node(
            "n2",
            taints=[
                {"key": "a", "effect": "PreferNoSchedule"},
                {"key": "b", "effect": "PreferNoSchedule"},
            ],
        ),
    ]
    # NoSchedule toleration does not count for PreferNoSchedule taints
    p = pod(tolerations=[{"key": "b", "operator": "Exists", "effect": "NoSchedule"}])
    # raw 0, 1, 2; max 2 -> 100 - 100*0//2, 100 - 100*1//2, 100 - 100*2//2
    assert _scores(TaintTolerationScore(), p, nodes) == [100, 50, 0]
    tolerant = pod(tolerations=[{"key": "b", "operator": "Exists"}])
    # raw 0, 1, 1 -> 100, 0, 0
    assert _scores(TaintTolerationScore(), tolerant, nodes) == [100, 0, 0]


def test_taint_toleration_score_is_max_everywhere_without_prefer_taints():
    assert _scores(TaintTolerationScore(), pod(), [node("a"), node("b")]) == [100, 100]


def test_node_affinity_preferred_weights_summed_and_normalized_by_max():
    p = pod(
        affinity={
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "preference": {
                            "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]
                        },
                    },
                    {
                        "weight": 2,
                        "preference": {
                            "matchExpressions": [
                                {"key": "disk", "operator": "In", "values": ["ssd"]}
                            ]
                        },
                    },
                ]
            }
        }
    )
    nodes = [
        node("n1", labels={"zone": "a"}),
        node("n2", labels={"disk": "ssd"}),
        node("n3", labels={"zone": "a", "disk": "ssd"}),
        node("n4"),
    ]
    # raw 1, 2, 3, 0; max 3 -> 100*1//3 = 33, 100*2//3 = 66, 100, 0
    assert _scores(NodeAffinityScore(), p, nodes) == [33, 66, 100, 0]
    assert _scores(NodeAffinityScore(), pod(), nodes) is None


def _weighted(weight: int, labels: dict[str, str], key: str = "zone") -> dict[str, Any]:
    return {
        "weight": weight,
        "podAffinityTerm": {"labelSelector": {"matchLabels": labels}, "topologyKey": key},
    }


def test_inter_pod_affinity_preferred_terms_min_max_normalized():
    nodes = [
        node("n1", labels={"zone": "a"}, pods=[pod("db", labels={"app": "db"})]),
        node("n2", labels={"zone": "a"}, pods=[pod("w1", labels={"app": "web"})]),
        node("n3", labels={"zone": "b"}, pods=[pod("w2", labels={"app": "web"})]),
        node("n4", labels={"zone": "c"}),
    ]
    p = pod(
        "new",
        labels={"app": "new"},
        affinity={
            "podAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [_weighted(5, {"app": "db"})]
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [_weighted(2, {"app": "web"})]
            },
        },
    )
    # zone a: +5 (db) - 2 (w1) = 3; zone b: -2 (w2); zone c: 0
    # raw n1..n4: 3, 3, -2, 0; min -2, max 3, diff 5
    # int(100 * (s - (-2)) / 5): 100, 100, 0, 40
    assert _scores(InterPodAffinityScore(), p, nodes) == [100, 100, 0, 40]


def test_inter_pod_affinity_counts_existing_pods_required_affinity_with_hard_weight():
    existing = pod(
        "e",
        labels={"app": "e"},
        affinity={
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "new"}}, "topologyKey": "zone"}
                ]
            }
        },
    )
    nodes = [node("n1", labels={"zone": "a"}, pods=[existing]), node("n2", labels={"zone": "b"})]
    # zone a gets +1 (hardPodAffinityWeight); raw 1, 0 -> 100, 0
    assert _scores(InterPodAffinityScore(), pod("x", labels={"app": "new"}), nodes) == [100, 0]
    # a pod the term does not match: no contributions -> skipped
    assert _scores(InterPodAffinityScore(), pod("y", labels={"app": "other"}), nodes) is None


def _spread(max_skew: int, key: str) -> dict[str, Any]:
    return {
        "maxSkew": max_skew,
        "topologyKey": key,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "web"}},
    }


def _web(i: int) -> PodInfo:
    return pod(f"w{i}", labels={"app": "web"})


def test_topology_spread_schedule_anyway_scores_zones_by_matching_pods():
    nodes = [
        node("a1", labels={"zone": "a"}, pods=[_web(1), _web(2)]),
        node("b1", labels={"zone": "b"}, pods=[_web(3)]),
        node("c1", labels={"zone": "c"}),
        node("x"),  # no zone label: ignored, scores 0
    ]
    p = pod("new", labels={"app": "web"}, topologySpreadConstraints=[_spread(1, "zone")])
    # 3 zones -> weight ln(3+2) = 1.609; raw = round(count*1.609 + (maxSkew-1)):
    # a: round(3.219) = 3, b: round(1.609) = 2, c: 0; min 0, max 3
    # normalized 100*(max+min-raw)//max: a 0, b 100*1//3 = 33, c 100
    assert _scores(PodTopologySpreadScore(), p, nodes) == [0, 33, 100, 0]


def test_topology_spread_hostname_constraint_counts_pods_on_the_node_itself():
    nodes = [
        node("n1", pods=[_web(1)]),
        node("n2"),
        node("n3", pods=[_web(2), _web(3), _web(4)]),
    ]
    p = pod(
        "new",
        labels={"app": "web"},
        topologySpreadConstraints=[_spread(2, "kubernetes.io/hostname")],
    )
    # 3 nodes -> weight ln(5) = 1.609; maxSkew-1 = 1
    # raw: n1 round(1.609+1) = 3, n2 round(0+1) = 1, n3 round(4.828+1) = 6; min 1, max 6
    # normalized 100*(6+1-raw)//6: n1 400//6 = 66, n2 600//6 = 100, n3 100//6 = 16
    assert _scores(PodTopologySpreadScore(), p, nodes) == [66, 100, 16]


def test_topology_spread_scoring_skips_pods_without_schedule_anyway_constraints():
    assert _scores(PodTopologySpreadScore(), pod(), [node("n1")]) is None


def test_inlined_fit_and_balanced_paths_agree_with_the_per_node_formulas():
    rng = random.Random(42)
    nodes = []
    for i in range(60):
        existing = [
            pod(f"e{j}", cpu=f"{rng.randint(0, 3000)}m", memory=f"{rng.randint(0, 40)}Gi")
            for j in range(rng.randint(0, 3))
        ]
        nodes.append(
            node(
                f"n{i}", cpu=str(rng.randint(0, 8)), memory=f"{rng.randint(0, 64)}Gi", pods=existing
            )
        )
    pods = [pod(), pod(cpu="250m"), pod(memory="3Gi"), pod(cpu="7", memory="70Gi")]
    snap = Snapshot(nodes)
    for p in pods:
        for kind in ("LeastAllocated", "MostAllocated"):
            plugin = NodeResourcesFitScore(FitStrategy(kind))
            assert plugin.score_nodes(p, nodes, snap) == [plugin.score(p, n, snap) for n in nodes]
        balanced = BalancedAllocationScore()
        fast = balanced.score_nodes(p, nodes, snap)
        if fast is not None:
            assert fast == [balanced.score(p, n, snap) for n in nodes]

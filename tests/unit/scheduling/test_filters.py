"""Filter plugins reject nodes with kube-scheduler's reasons and status codes."""

from __future__ import annotations

from typing import Any

import pytest

from core.meta.taints import NodeTaint, PodToleration
from core.scheduling import (
    FilterFailure,
    InterPodAffinityFilter,
    PodInfo,
    PodTopologySpreadFilter,
    Snapshot,
    run_filters,
)
from tests.unit.scheduling.helpers import node, pod, pod_manifest


def test_untolerated_noschedule_taint_filters_node_with_kubernetes_reason():
    n = node(
        "n1", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    )
    failure = run_filters(pod(), n)
    assert failure == FilterFailure("TaintToleration", ("node(s) had untolerated taint(s)",), True)


def test_untolerated_taint_reason_no_longer_shows_key_and_value_as_since_kubernetes_1_34():
    n = node("n1", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}])
    failure = run_filters(pod(), n)
    assert failure is not None
    assert failure.reason == "node(s) had untolerated taint(s)"


def test_prefer_no_schedule_taint_does_not_filter():
    n = node("n1", taints=[{"key": "a", "effect": "PreferNoSchedule"}])
    assert run_filters(pod(), n) is None


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        # empty effect tolerates every effect
        (PodToleration("k", "Equal", "v", ""), NodeTaint("k", "v", "NoExecute"), True),
        # Equal compares the value
        (PodToleration("k", "Equal", "v", "NoSchedule"), NodeTaint("k", "w", "NoSchedule"), False),
        # missing operator is Equal: value "" against value "" matches
        (PodToleration("k", "", "", "NoSchedule"), NodeTaint("k", "", "NoSchedule"), True),
        # Exists ignores the value
        (
            PodToleration("k", "Exists", "", "NoSchedule"),
            NodeTaint("k", "anything", "NoSchedule"),
            True,
        ),
        # empty key + Exists tolerates everything
        (PodToleration("", "Exists", "", ""), NodeTaint("x", "y", "NoExecute"), True),
        # a different effect does not tolerate
        (PodToleration("k", "Exists", "", "NoSchedule"), NodeTaint("k", "", "NoExecute"), False),
        # a different key does not tolerate
        (PodToleration("j", "Exists", "", ""), NodeTaint("k", "", "NoSchedule"), False),
        # alpha Gt/Lt (gate TaintTolerationComparisonOperators on): the taint's value must be
        # greater / less than the toleration's
        (
            PodToleration("k", "Gt", "5", "", comparison_operators=True),
            NodeTaint("k", "7", "NoSchedule"),
            True,
        ),
        (
            PodToleration("k", "Lt", "5", "", comparison_operators=True),
            NodeTaint("k", "7", "NoSchedule"),
            False,
        ),
        (
            PodToleration("k", "Lt", "9", "", comparison_operators=True),
            NodeTaint("k", "7", "NoSchedule"),
            True,
        ),
        (
            PodToleration("k", "Gt", "5", "", comparison_operators=True),
            NodeTaint("k", "seven", "NoSchedule"),
            False,
        ),
        # ... and with the gate off (Kubernetes' default) they tolerate nothing
        (PodToleration("k", "Gt", "5", ""), NodeTaint("k", "7", "NoSchedule"), False),
        (PodToleration("k", "Lt", "9", ""), NodeTaint("k", "7", "NoSchedule"), False),
    ],
)
def test_toleration_matching_follows_kubernetes_rules(
    toleration: PodToleration, taint: NodeTaint, tolerated: bool
):
    assert toleration.tolerates(taint) is tolerated


def test_cordoned_node_rejects_unless_pod_tolerates_unschedulable_taint():
    n = node("n1", unschedulable=True)
    assert run_filters(pod(), n) == FilterFailure(
        "NodeUnschedulable", ("node(s) were unschedulable",), True
    )
    tolerant = pod(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}])
    assert run_filters(tolerant, n) is None


def test_node_name_mismatch_is_unresolvable():
    failure = run_filters(pod(nodeName="n2"), node("n1"))
    assert failure == FilterFailure(
        "NodeName", ("node(s) didn't match the requested node name",), True
    )
    assert run_filters(pod(nodeName="n1"), node("n1")) is None


NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"


def _required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


@pytest.mark.parametrize(
    ("expression", "labels", "fits"),
    [
        ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "b"}, True),
        ({"key": "zone", "operator": "In", "values": ["a"]}, {"zone": "b"}, False),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {}, True),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "a"}, False),
        ({"key": "zone", "operator": "Exists"}, {"zone": ""}, True),
        ({"key": "zone", "operator": "DoesNotExist"}, {}, True),
        ({"key": "zone", "operator": "DoesNotExist"}, {"zone": "a"}, False),
        ({"key": "cores", "operator": "Gt", "values": ["8"]}, {"cores": "16"}, True),
        ({"key": "cores", "operator": "Gt", "values": ["8"]}, {"cores": "8"}, False),
        ({"key": "cores", "operator": "Lt", "values": ["8"]}, {"cores": "4"}, True),
        ({"key": "cores", "operator": "Gt", "values": ["8"]}, {"cores": "lots"}, False),
        ({"key": "cores", "operator": "Lt", "values": ["8"]}, {}, False),
    ],
)
def test_node_affinity_operators(expression: dict[str, Any], labels: dict[str, str], fits: bool):
    p = pod(affinity=_required({"matchExpressions": [expression]}))
    failure = run_filters(p, node("n1", labels=labels))
    assert (failure is None) is fits
    if not fits:
        assert failure == FilterFailure("NodeAffinity", (NODE_AFFINITY,), True)


def test_node_selector_and_required_terms_are_anded_and_terms_ored():
    p = pod(
        nodeSelector={"disk": "ssd"},
        affinity=_required(
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
        ),
    )
    assert run_filters(p, node("n1", labels={"disk": "ssd", "zone": "b"})) is None
    assert run_filters(p, node("n2", labels={"disk": "hdd", "zone": "b"})) is not None
    assert run_filters(p, node("n3", labels={"disk": "ssd", "zone": "c"})) is not None


def test_match_fields_on_metadata_name_and_empty_term_matches_nothing():
    by_name = pod(
        affinity=_required(
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
        )
    )
    assert run_filters(by_name, node("n2")) is None
    assert run_filters(by_name, node("n1")) is not None
    empty_term = pod(affinity=_required({}))
    assert run_filters(empty_term, node("n1")) is not None


def test_resources_fit_reports_one_reason_per_missing_resource():
    existing = pod("e", cpu="3500m", memory="30Gi")
    n = node("n1", pods=[existing], extra={"example.com/gpu": "1"})
    p = pod(cpu="1", memory="4Gi", extra={"example.com/gpu": "2"})
    # free: cpu 4000-3500 = 500 < 1000; memory 32Gi-30Gi = 2Gi < 4Gi; gpu 1 < 2
    failure = run_filters(p, n)
    assert failure is not None
    assert failure.plugin == "NodeResourcesFit"
    assert failure.reasons == (
        "Insufficient cpu",
        "Insufficient memory",
        "Insufficient example.com/gpu",
    )
    # gpu 2 > allocatable 1: no preemption can help
    assert failure.unresolvable


def test_resources_fit_counts_pods_and_is_resolvable_when_preemption_could_help():
    n = node("n1", pods=[pod("a", cpu="3")], max_pods="1")
    failure = run_filters(pod(cpu="2"), n)
    assert failure == FilterFailure(
        "NodeResourcesFit", ("Too many pods", "Insufficient cpu"), False
    )


def test_resources_fit_exact_fit_passes_and_best_effort_pod_needs_only_a_pod_slot():
    n = node("n1", pods=[pod("a", cpu="3", memory="16Gi")])
    assert run_filters(pod(cpu="1", memory="16Gi"), n) is None
    assert run_filters(pod(), node("full", cpu="0", memory="0")) is None


def test_host_port_conflicts_follow_wildcard_ip_rules():
    def with_port(name: str, port: int, ip: str | None = None, protocol: str = "TCP") -> PodInfo:
        m = pod_manifest(name)
        spec_port: dict[str, Any] = {"containerPort": port, "hostPort": port, "protocol": protocol}
        if ip:
            spec_port["hostIP"] = ip
        m["spec"]["containers"][0]["ports"] = [spec_port]
        return PodInfo.from_manifest(m)

    n = node("n1", pods=[with_port("a", 80, "10.0.0.1")])
    reason = ("node(s) didn't have free ports for the requested pod ports",)
    # 0.0.0.0 conflicts with any IP on the same protocol/port
    assert run_filters(with_port("b", 80), n) == FilterFailure("NodePorts", reason, False)
    # another specific IP does not conflict
    assert run_filters(with_port("c", 80, "10.0.0.2"), n) is None
    # another protocol does not conflict
    assert run_filters(with_port("d", 80, protocol="UDP"), n) is None
    # a specific IP conflicts with a wildcard binding
    n2 = node("n2", pods=[with_port("e", 81)])
    assert run_filters(with_port("f", 81, "10.0.0.9"), n2) is not None


def test_filters_stop_at_first_failing_plugin_in_kubernetes_order():
    n = node("n1", unschedulable=True, taints=[{"key": "t", "effect": "NoSchedule"}], cpu="0")
    failure = run_filters(pod(cpu="1"), n)
    assert failure is not None and failure.plugin == "NodeUnschedulable"


# --- InterPodAffinity ------------------------------------------------------------------------


def _term(labels: dict[str, str], key: str = "zone") -> dict[str, Any]:
    return {"labelSelector": {"matchLabels": labels}, "topologyKey": key}


def _ipa(pod_info: PodInfo, nodes: list[Any]) -> dict[str, FilterFailure | None]:
    snap = Snapshot(nodes)
    plugin = InterPodAffinityFilter()
    if not plugin.pre_filter(pod_info, snap):
        return dict.fromkeys(n.name for n in nodes)
    return {n.name: plugin.filter(pod_info, n, snap) for n in nodes}


def test_required_pod_affinity_needs_matching_pod_in_same_topology_domain():
    db = pod("db", labels={"app": "db"})
    nodes = [
        node("n1", labels={"zone": "a"}, pods=[db]),
        node("n2", labels={"zone": "a"}),
        node("n3", labels={"zone": "b"}),
        node("n4"),  # no zone label at all
    ]
    web = pod(
        "web",
        labels={"app": "web"},
        affinity={
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [_term({"app": "db"})]
            }
        },
    )
    result = _ipa(web, nodes)
    assert result["n1"] is None and result["n2"] is None
    rule = FilterFailure("InterPodAffinity", ("node(s) didn't match pod affinity rules",), True)
    assert result["n3"] == rule
    assert result["n4"] == rule


def test_first_pod_of_a_self_affine_group_may_go_anywhere_with_the_topology_label():
    first = pod(
        "w0",
        labels={"app": "web"},
        affinity={
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [_term({"app": "web"})]
            }
        },
    )
    nodes = [node("n1", labels={"zone": "a"}), node("n2")]
    result = _ipa(first, nodes)
    assert result["n1"] is None
    assert result["n2"] is not None  # the topology key must still exist on the node


def test_required_anti_affinity_rejects_domains_holding_matching_pods():
    other = pod("w1", labels={"app": "web"})
    nodes = [
        node("n1", labels={"zone": "a"}, pods=[other]),
        node("n2", labels={"zone": "a"}),
        node("n3", labels={"zone": "b"}),
    ]
    p = pod(
        "w2",
        labels={"app": "web"},
        affinity={
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [_term({"app": "web"})]
            }
        },
    )
    result = _ipa(p, nodes)
    anti = FilterFailure(
        "InterPodAffinity", ("node(s) didn't match pod anti-affinity rules",), False
    )
    assert result == {"n1": anti, "n2": anti, "n3": None}


def test_existing_pods_anti_affinity_is_symmetric():
    loner = pod(
        "loner",
        labels={"app": "loner"},
        affinity={
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    _term({"app": "web"}, "kubernetes.io/hostname")
                ]
            }
        },
    )
    nodes = [node("n1", pods=[loner]), node("n2")]
    result = _ipa(pod("w", labels={"app": "web"}), nodes)
    assert result["n1"] == FilterFailure(
        "InterPodAffinity", ("node(s) didn't satisfy existing pods anti-affinity rules",), False
    )
    assert result["n2"] is None


def test_affinity_terms_only_see_pods_of_listed_namespaces():
    db = pod("db", namespace="other", labels={"app": "db"})
    nodes = [node("n1", labels={"zone": "a"}, pods=[db])]
    same_ns = pod(
        "web",
        labels={"app": "web"},
        affinity={
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [_term({"app": "db"})]
            }
        },
    )
    assert _ipa(same_ns, nodes)["n1"] is not None
    listed = pod(
        "web",
        labels={"app": "web"},
        affinity={
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {**_term({"app": "db"}), "namespaces": ["other"]}
                ]
            }
        },
    )
    assert _ipa(listed, nodes)["n1"] is None
    any_ns = pod(
        "web",
        labels={"app": "web"},
        affinity={
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {**_term({"app": "db"}), "namespaceSelector": {}}
                ]
            }
        },
    )
    assert _ipa(any_ns, nodes)["n1"] is None


# --- PodTopologySpread -----------------------------------------------------------------------


def _spread(
    max_skew: int = 1, key: str = "zone", when: str = "DoNotSchedule", **extra: Any
) -> dict[str, Any]:
    return {
        "maxSkew": max_skew,
        "topologyKey": key,
        "whenUnsatisfiable": when,
        "labelSelector": {"matchLabels": {"app": "web"}},
        **extra,
    }


def _pts(pod_info: PodInfo, nodes: list[Any]) -> dict[str, FilterFailure | None]:
    snap = Snapshot(nodes)
    plugin = PodTopologySpreadFilter()
    assert plugin.pre_filter(pod_info, snap)
    return {n.name: plugin.filter(pod_info, n, snap) for n in nodes}


def _web(i: int) -> PodInfo:
    return pod(f"w{i}", labels={"app": "web"})


def test_topology_spread_do_not_schedule_bounds_the_skew():
    nodes = [
        node("a1", labels={"zone": "a"}, pods=[_web(1), _web(2)]),
        node("b1", labels={"zone": "b"}, pods=[_web(3)]),
        node("c1", labels={"zone": "c"}, pods=[_web(4)]),
        node("x", labels={}),
    ]
    p = pod("new", labels={"app": "web"}, topologySpreadConstraints=[_spread()])
    result = _pts(p, nodes)
    # zone a: 2 + 1 (self) - min 1 = 2 > 1; zones b, c: 1 + 1 - 1 = 1 <= 1
    assert result["a1"] == FilterFailure(
        "PodTopologySpread", ("node(s) didn't match pod topology spread constraints",), False
    )
    assert result["b1"] is None and result["c1"] is None
    assert result["x"] == FilterFailure(
        "PodTopologySpread",
        ("node(s) didn't match pod topology spread constraints (missing required label)",),
        True,
    )


def test_topology_spread_min_domains_treats_global_minimum_as_zero():
    nodes = [
        node("a1", labels={"zone": "a"}, pods=[_web(1)]),
        node("b1", labels={"zone": "b"}, pods=[_web(2)]),
    ]
    p = pod("new", labels={"app": "web"}, topologySpreadConstraints=[_spread(minDomains=3)])
    result = _pts(p, nodes)
    # 2 domains < minDomains 3 -> global min 0: 1 + 1 - 0 = 2 > 1 everywhere
    assert result["a1"] is not None and result["b1"] is not None


def test_topology_spread_honours_node_affinity_when_counting_domains():
    nodes = [
        node("a1", labels={"zone": "a", "pool": "x"}, pods=[_web(1)]),
        node("b1", labels={"zone": "b", "pool": "y"}),  # excluded by nodeSelector
    ]
    p = pod(
        "new",
        labels={"app": "web"},
        nodeSelector={"pool": "x"},
        topologySpreadConstraints=[_spread()],
    )
    result = _pts(p, nodes)
    # only zone a counts: min = 1, 1 + 1 - 1 = 1 <= 1
    assert result["a1"] is None

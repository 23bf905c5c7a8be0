"""DefaultPreemption: victims, candidate nodes, node choice and messages, computed by hand."""

from __future__ import annotations

import random
from typing import Any

import pytest

from core.meta.labels import Selector
from core.scheduling import (
    Candidate,
    DisruptionBudget,
    NodeInfo,
    PodInfo,
    PreemptionConfig,
    SchedulerConfig,
    ScheduleResult,
    Victim,
    pick_one_node_for_preemption,
    preempt,
    schedule,
)
from core.scheduling.filters import Snapshot
from core.scheduling.preemption import (
    calculate_num_candidates,
    dry_run_preemption,
    filter_pods_with_pdb_violation,
    more_important_pod,
    select_victims_on_node,
)
from tests.unit.scheduling.helpers import node, pod_manifest

CONFIG = SchedulerConfig()
INT32_MIN = -(2**31)


def ts(seconds: int) -> str:
    return f"2024-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}Z"


def p(
    name: str,
    *,
    prio: int = 0,
    cpu: str | None = None,
    start: int | None = None,
    labels: dict[str, str] | None = None,
    deleting: bool = False,
    **spec: Any,
) -> PodInfo:
    manifest = pod_manifest(name, cpu=cpu, labels=labels, priority=prio, **spec)
    if start is not None:
        manifest["status"] = {"startTime": ts(start)}
    if deleting:
        manifest["metadata"]["deletionTimestamp"] = ts(0)
    return PodInfo.from_manifest(manifest)


def run(preemptor: PodInfo, nodes: list[NodeInfo], **kwargs: Any) -> tuple[ScheduleResult, Any]:
    result = schedule(preemptor, nodes, CONFIG, random.Random(1))
    assert not result.scheduled
    return result, preempt(preemptor, nodes, result, CONFIG, random.Random(7), **kwargs)


def keys(victims: tuple[Victim, ...]) -> list[str]:
    return [v.key for v in victims]


def state_of(n: NodeInfo) -> tuple[Any, ...]:
    return (
        list(n.pods),
        dict(n.requested),
        n.requested_cpu,
        n.requested_memory,
        n.non_zero_cpu,
        n.non_zero_memory,
        dict(n.used_ports),
        list(n.pods_with_affinity),
        list(n.pods_with_required_anti_affinity),
    )


# --------------------------------------------------------------------------------------------
# Model inputs
# --------------------------------------------------------------------------------------------


def test_pod_info_reads_start_time_and_preemption_policy():
    manifest = pod_manifest("a", preemptionPolicy="Never")
    manifest["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    info = PodInfo.from_manifest(manifest)
    assert info.preemption_policy == "Never"
    assert info.start_time == 1704067200.0  # creationTimestamp when not started
    manifest["status"] = {"startTime": "2024-01-01T00:01:00Z"}
    assert PodInfo.from_manifest(manifest).start_time == 1704067260.0
    plain = PodInfo.from_manifest(pod_manifest("b"))
    assert plain.start_time is None
    assert plain.preemption_policy == "PreemptLowerPriority"


def test_more_important_pod_is_higher_priority_then_earlier_start():
    assert more_important_pod(p("a", prio=2, start=100), p("b", prio=1, start=0))
    assert more_important_pod(p("a", prio=1, start=0), p("b", prio=1, start=100))
    # an unknown start counts as "now": later than any known start
    assert more_important_pod(p("a", prio=1, start=100), p("b", prio=1))
    assert not more_important_pod(p("a", prio=1), p("b", prio=1))


# --------------------------------------------------------------------------------------------
# Victims on one node
# --------------------------------------------------------------------------------------------


def test_victims_are_minimal_reprieving_the_most_important_first():
    # node 4 cpu, full: a(1, 1cpu) b(2, 1cpu) c(3, 2cpu); preemptor needs 2 cpu at priority 10.
    # All three removed -> 4 free, fits. Reprieve c (prio 3): 2 + 2 = 4 fits, kept.
    # b: 2 + 1 + 2 = 5 > 4 -> victim; a: same -> victim.
    pods = [p("a", prio=1, cpu="1"), p("b", prio=2, cpu="1"), p("c", prio=3, cpu="2")]
    nodes = [node("n1", pods=pods, cpu="4")]
    result, outcome = run(p("big", prio=10, cpu="2"), nodes)
    assert outcome.nominated_node_name == "n1"
    assert keys(outcome.victims) == ["default/b", "default/a"]  # most important first
    assert [v.priority for v in outcome.victims] == [2, 1]
    assert outcome.num_pdb_violations == 0
    # success: the pod's condition keeps the FitError alone, as in Kubernetes
    assert outcome.message == result.message == "0/1 nodes are available: 1 Insufficient cpu."
    assert outcome.post_filter_message == ""
    assert outcome.summary == (
        'preempting 2 pods on node "n1": default/b (priority 2), default/a (priority 1)'
    )


def test_equal_and_higher_priority_pods_are_never_victims():
    # Evicting the equal-priority pod would make room, but it may not be touched.
    nodes = [node("n1", pods=[p("same", prio=10, cpu="2")], cpu="2")]
    _, outcome = run(p("new", prio=10, cpu="1"), nodes)
    assert outcome.nominated_node_name is None
    assert outcome.victims == ()
    assert outcome.node_reasons == {"n1": ("No preemption victims found for incoming pod",)}
    assert outcome.message == (
        "0/1 nodes are available: 1 Insufficient cpu. no new claims to deallocate, "
        "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    )


def test_only_the_lower_priority_pods_are_victims_when_higher_ones_share_the_node():
    # 4 cpu: high(20, 2cpu) + low(1, 2cpu); preemptor(10) needs 2 -> only low can go.
    nodes = [node("n1", pods=[p("high", prio=20, cpu="2"), p("low", prio=1, cpu="2")], cpu="4")]
    _, outcome = run(p("new", prio=10, cpu="2"), nodes)
    assert keys(outcome.victims) == ["default/low"]


def test_pdb_violating_pods_are_reprieved_first():
    # 2 cpu: db and web (priority 1, 1 cpu each, db started earlier so more important).
    # Preemptor needs 1 cpu, so one of them must go.
    def fresh() -> NodeInfo:
        return node(
            "n1",
            cpu="2",
            pods=[
                p("db", prio=1, cpu="1", start=0, labels={"app": "db"}),
                p("web", prio=1, cpu="1", start=100, labels={"app": "web"}),
            ],
        )

    preemptor = p("new", prio=10, cpu="1")
    snapshot = Snapshot([fresh()])
    plugins = [f for f in CONFIG.filters if f.pre_filter(preemptor, snapshot)]
    # no PDB: db (more important) is reprieved, web goes
    chosen = select_victims_on_node(preemptor, fresh(), snapshot, plugins)
    assert [v.key for v in chosen.victims] == ["default/web"]
    # a PDB that allows no disruption of web: web is reprieved first, db goes, no violation
    pdb = DisruptionBudget("default", Selector.from_manifest({"matchLabels": {"app": "web"}}), 0)
    chosen = select_victims_on_node(preemptor, fresh(), snapshot, plugins, [pdb])
    assert [v.key for v in chosen.victims] == ["default/db"]
    assert chosen.num_pdb_violations == 0


def test_pdb_violation_is_counted_when_the_protected_pod_must_go():
    pods = [p("web", prio=1, cpu="2", labels={"app": "web"})]
    preemptor = p("new", prio=10, cpu="1")
    n = node("n1", cpu="2", pods=pods)
    snapshot = Snapshot([n])
    plugins = [f for f in CONFIG.filters if f.pre_filter(preemptor, snapshot)]
    pdb = DisruptionBudget("default", Selector.from_manifest({"matchLabels": {"app": "web"}}), 0)
    chosen = select_victims_on_node(preemptor, n, snapshot, plugins, [pdb])
    assert [v.key for v in chosen.victims] == ["default/web"]
    assert chosen.num_pdb_violations == 1


def test_pdb_budget_is_used_up_in_order_and_empty_selector_matches_nothing():
    a, b, c = (p(x, labels={"app": "web"}) for x in "abc")
    web = Selector.from_manifest({"matchLabels": {"app": "web"}})
    budget = DisruptionBudget("default", web, 1, frozenset({"b"}))
    violating, fine = filter_pods_with_pdb_violation([a, b, c], [budget])
    # a uses the one allowed disruption, b was already counted by the API server, c violates
    assert [x.name for x in violating] == ["c"]
    assert [x.name for x in fine] == ["a", "b"]
    everything = DisruptionBudget("default", Selector.from_manifest({}), 0)
    other_ns = DisruptionBudget("other", web, 0)
    assert filter_pods_with_pdb_violation([a], [everything, other_ns]) == ([], [a])


def test_anti_affinity_to_a_lower_priority_pod_is_resolved_by_evicting_it():
    anti = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"app": "x"}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    nodes = [
        node("n1", pods=[p("x", prio=0, labels={"app": "x"}), p("y", prio=0)]),
        node("n2", pods=[p("x2", prio=50, labels={"app": "x"})]),
    ]
    result, outcome = run(p("new", prio=10, affinity=anti), nodes)
    assert result.failures["n1"].unresolvable is False
    # n1: removing x clears the anti-affinity count (y is reprieved); n2: x2 is not lower
    assert outcome.nominated_node_name == "n1"
    assert keys(outcome.victims) == ["default/x"]
    assert outcome.node_reasons == {"n2": ("No preemption victims found for incoming pod",)}


def test_existing_pods_anti_affinity_is_resolved_by_evicting_that_pod():
    loner = p(
        "loner",
        prio=0,
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
    nodes = [node("n1", pods=[loner, p("other", prio=0)])]
    _, outcome = run(p("new", prio=10, labels={"app": "web"}), nodes)
    assert keys(outcome.victims) == ["default/loner"]


def test_evicting_the_only_pod_a_self_affine_pod_matched_lets_it_go_first():
    # The preemptor wants to be in a zone with an app=new pod and is one itself. Evicting the
    # only such pod empties the affinity counts, so the "first pod of the group" rule applies
    # (Kubernetes deletes a count that drops to zero).
    affinity = {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "new"}}, "topologyKey": "zone"}
            ]
        }
    }
    nodes = [
        node(
            "n1",
            cpu="1",
            labels={"zone": "z1"},
            pods=[p("old", prio=0, cpu="1", labels={"app": "new"})],
        )
    ]
    preemptor = p("new", prio=10, cpu="1", labels={"app": "new"}, affinity=affinity)
    _, outcome = run(preemptor, nodes)
    assert outcome.nominated_node_name == "n1"
    assert keys(outcome.victims) == ["default/old"]


def test_topology_spread_counts_follow_the_removed_pods():
    # zone a holds two app=s pods (priority 0); zone b's node is full with a priority-100 pod.
    # maxSkew 2: on na 2 + 1 - 0 = 3 > 2. Remove both: 0 + 1 = 1 fits. Reprieve s1 (earlier
    # start): 1 + 1 = 2 fits; s2: 2 + 1 = 3 > 2 -> victim.
    spread = [
        {
            "maxSkew": 2,
            "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "s"}},
        }
    ]
    nodes = [
        node(
            "na",
            labels={"zone": "a"},
            pods=[
                p("s1", prio=0, start=0, labels={"app": "s"}),
                p("s2", prio=0, start=10, labels={"app": "s"}),
            ],
        ),
        node("nb", labels={"zone": "b"}, cpu="1", pods=[p("big", prio=100, cpu="1")]),
    ]
    preemptor = p("new", prio=10, cpu="100m", labels={"app": "s"}, topologySpreadConstraints=spread)
    result, outcome = run(preemptor, nodes)
    assert result.failures["na"].plugin == "PodTopologySpread"
    assert outcome.nominated_node_name == "na"
    assert keys(outcome.victims) == ["default/s2"]


# --------------------------------------------------------------------------------------------
# Eligibility and candidate nodes
# --------------------------------------------------------------------------------------------


def test_preemption_policy_never_is_not_eligible():
    nodes = [node("n1", cpu="1", pods=[p("low", prio=0, cpu="1")])]
    _, outcome = run(p("polite", prio=10, cpu="1", preemptionPolicy="Never"), nodes)
    assert outcome.nominated_node_name is None
    assert outcome.eligible is False
    assert not outcome.clears_nomination
    assert outcome.post_filter_message == (
        "no new claims to deallocate, preemption: not eligible due to preemptionPolicy=Never."
    )
    assert outcome.message == (
        "0/1 nodes are available: 1 Insufficient cpu. no new claims to deallocate, "
        "preemption: not eligible due to preemptionPolicy=Never."
    )


def test_a_terminating_victim_on_the_nominated_node_makes_the_pod_wait():
    nodes = [
        node("n1", cpu="2", pods=[p("going", prio=0, cpu="1", deleting=True), p("f", cpu="1")]),
        node("n2", cpu="1", pods=[p("low", prio=0, cpu="1")]),
    ]
    preemptor = p("new", prio=10, cpu="2")
    _, outcome = run(preemptor, nodes, nominated_node_name="n1")
    assert outcome.eligible is False
    assert outcome.summary == "not eligible due to a terminating pod on the nominated node."
    # without a nomination it preempts as usual
    _, again = run(preemptor, nodes)
    assert again.nominated_node_name == "n1"


def test_not_helpful_when_no_node_can_be_freed():
    taint = [{"key": "k", "value": "v", "effect": "NoSchedule"}]
    nodes = [
        # unresolvable (taint): never a candidate, even with a lower-priority pod on it
        node("n1", cpu="1", taints=taint, pods=[p("t", prio=0, cpu="1")]),
        # only equal priority pods
        node("n2", cpu="1", pods=[p("eq", prio=10, cpu="1")]),
        # removing every lower pod still leaves too little cpu
        node("n3", cpu="2", pods=[p("hi", prio=50, cpu="1500m"), p("lo", prio=0, cpu="500m")]),
    ]
    result, outcome = run(p("new", prio=10, cpu="1"), nodes)
    assert result.message == (
        "0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 Insufficient cpu."
    )
    assert outcome.nominated_node_name is None
    assert outcome.eligible is True
    assert outcome.node_reasons == {
        "n2": ("No preemption victims found for incoming pod",),
        "n3": ("Insufficient cpu",),
    }
    assert outcome.post_filter_message == (
        "no new claims to deallocate, preemption: 0/3 nodes are available: 1 Insufficient cpu, "
        "1 No preemption victims found for incoming pod, "
        "1 Preemption is not helpful for scheduling."
    )
    assert outcome.message == result.message + " " + outcome.post_filter_message
    assert outcome.clears_nomination


def test_unresolvable_nodes_are_excluded_even_with_victims_on_them():
    taint = [{"key": "k", "effect": "NoSchedule"}]
    nodes = [
        node("tainted", cpu="1", taints=taint, pods=[p("t", prio=0, cpu="1")]),
        node("ok", cpu="1", pods=[p("v", prio=5, cpu="1")]),
    ]
    _, outcome = run(p("new", prio=10, cpu="1"), nodes)
    assert outcome.nominated_node_name == "ok"
    assert [c.node_name for c in outcome.candidates] == ["ok"]


def test_request_beyond_allocatable_is_unresolvable_so_nothing_is_preempted():
    nodes = [node("n1", cpu="1", pods=[p("low", prio=0, cpu="1")])]
    result, outcome = run(p("huge", prio=10, cpu="2"), nodes)
    assert result.failures["n1"].unresolvable
    assert outcome.post_filter_message == (
        "no new claims to deallocate, "
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    )


def test_caller_node_infos_are_unchanged():
    calls: list[str] = []
    nodes = [
        node(
            "n1",
            cpu="2",
            pods=[
                p("a", prio=1, cpu="1", labels={"app": "x"}),
                p("b", prio=2, cpu="1"),
            ],
        ),
        node("n2", cpu="1", pods=[p("c", prio=3, cpu="1")]),
    ]
    for n in nodes:
        n.on_change = lambda info: calls.append(info.name)
    before = [state_of(n) for n in nodes]
    pod_objects = [dict(n.pods) for n in nodes]
    _, outcome = run(p("new", prio=10, cpu="2"), nodes)
    assert outcome.nominated_node_name == "n1"
    assert [state_of(n) for n in nodes] == before
    assert [dict(n.pods) for n in nodes] == pod_objects
    assert calls == []


def test_num_candidates_is_ten_percent_at_least_one_hundred_at_most_all():
    assert calculate_num_candidates(50) == 50
    assert calculate_num_candidates(1000) == 100
    assert calculate_num_candidates(5000) == 500
    assert calculate_num_candidates(5005) == 500  # 50050 // 100
    config = PreemptionConfig(min_candidate_nodes_percentage=30, min_candidate_nodes_absolute=2)
    assert calculate_num_candidates(10, config) == 3
    with pytest.raises(ValueError):
        PreemptionConfig(min_candidate_nodes_percentage=0, min_candidate_nodes_absolute=0)


def test_dry_run_visits_round_robin_from_the_offset_and_stops_at_num_candidates():
    nodes = [node(f"n{i}", cpu="1", pods=[p(f"v{i}", prio=0, cpu="1")]) for i in range(5)]
    preemptor = p("new", prio=10, cpu="1")
    snapshot = Snapshot(nodes)
    plugins = [f for f in CONFIG.filters if f.pre_filter(preemptor, snapshot)]
    found, reasons = dry_run_preemption(preemptor, nodes, snapshot, plugins, (), 3, 2)
    assert [c.node_name for c in found] == ["n3", "n4"]
    assert reasons == {}


def test_dry_run_keeps_looking_until_one_candidate_violates_no_pdb():
    web = Selector.from_manifest({"matchLabels": {"app": "web"}})
    pdb = DisruptionBudget("default", web, 0)
    nodes = [
        node("n0", cpu="1", pods=[p("w0", prio=0, cpu="1", labels={"app": "web"})]),
        node("n1", cpu="1", pods=[p("w1", prio=0, cpu="1", labels={"app": "web"})]),
        node("n2", cpu="1", pods=[p("free", prio=0, cpu="1")]),
    ]
    preemptor = p("new", prio=10, cpu="1")
    snapshot = Snapshot(nodes)
    plugins = [f for f in CONFIG.filters if f.pre_filter(preemptor, snapshot)]
    found, _ = dry_run_preemption(preemptor, nodes, snapshot, plugins, [pdb], 0, 1)
    # two violating candidates do not end the search; the clean one comes first
    assert [(c.node_name, c.num_pdb_violations) for c in found] == [("n2", 0), ("n0", 1)]
    assert pick_one_node_for_preemption(found).node_name == "n2"  # type: ignore[union-attr]


def test_offset_decides_the_first_of_otherwise_equal_nodes():
    def cluster() -> list[NodeInfo]:
        return [node(f"n{i}", cpu="1", pods=[p(f"v{i}", prio=0, cpu="1")]) for i in range(3)]

    preemptor = p("new", prio=10, cpu="1")
    assert run(preemptor, cluster(), offset=0)[1].nominated_node_name == "n0"
    assert run(preemptor, cluster(), offset=2)[1].nominated_node_name == "n2"
    assert run(preemptor, cluster(), offset=4)[1].nominated_node_name == "n1"  # modulo 3


def test_node_with_lower_priority_victims_is_preferred_end_to_end():
    nodes = [
        node("n1", cpu="1", pods=[p("a", prio=5, cpu="1")]),
        node("n2", cpu="1", pods=[p("b", prio=3, cpu="1")]),
        node("n3", cpu="1", pods=[p("c", prio=4, cpu="1")]),
    ]
    for offset in range(3):
        _, outcome = run(p("new", prio=10, cpu="1"), nodes, offset=offset)
        assert outcome.nominated_node_name == "n2"
        assert keys(outcome.victims) == ["default/b"]
        assert len(outcome.candidates) == 3


# --------------------------------------------------------------------------------------------
# Choosing among candidates, one tie-break level at a time
# --------------------------------------------------------------------------------------------


def v(priority: int, start: float | None = None, name: str = "x") -> Victim:
    return Victim(f"default/{name}", "", priority, start)


def c(name: str, *victims: Victim, pdb: int = 0) -> Candidate:
    return Candidate(name, victims, pdb)


def pick(*candidates: Candidate) -> str:
    chosen = pick_one_node_for_preemption(candidates)
    assert chosen is not None
    return chosen.node_name


def test_pick_fewest_pdb_violations_first():
    assert pick(c("n1", v(0), pdb=1), c("n2", v(100), v(100))) == "n2"


def test_pick_lowest_highest_victim_priority():
    # n2 has more victims and a larger sum, but its most important victim is less important
    assert pick(c("n1", v(5)), c("n2", v(3), v(3), v(3))) == "n2"


def test_pick_smallest_priority_sum():
    assert pick(c("n1", v(5), v(4)), c("n2", v(5), v(1))) == "n2"


def test_priority_sum_shifts_each_priority_by_max_int32_plus_one():
    # raw sums: n1 -10 < n2 -5 would pick n1; shifted: 2(2^31 - 5) > 2^31 - 5 picks n2
    assert pick(c("n1", v(-5), v(-5)), c("n2", v(-5))) == "n2"


def test_pick_fewest_victims_when_shifted_sums_tie():
    # shifted sums: n1 (5 + 2^31) + (INT32_MIN + 2^31) = 5 + 2^31 = n2's single victim
    assert pick(c("n1", v(5), v(INT32_MIN)), c("n2", v(5))) == "n2"


def test_pick_latest_start_among_highest_priority_victims():
    # same priorities, sums and counts; earliest start of the top victims: n1 50, n2 100
    n1 = c("n1", v(5, 300), v(5, 50), v(1, 400))
    n2 = c("n2", v(5, 100), v(5, 100), v(1, 0))
    assert pick(n1, n2) == "n2"
    # an unknown start counts as now: latest of all
    assert pick(c("n1", v(5, 100)), c("n2", v(5, None))) == "n2"


def test_pick_first_when_everything_ties():
    assert pick(c("n1", v(5, 10)), c("n2", v(5, 10)), c("n3", v(5, 10))) == "n1"
    assert pick(c("n3", v(5, 10)), c("n1", v(5, 10))) == "n3"
    assert pick_one_node_for_preemption([]) is None


def test_scheduled_result_is_refused():
    nodes = [node("n1")]
    preemptor = p("new", prio=10)
    result = schedule(preemptor, nodes, CONFIG, random.Random(1))
    with pytest.raises(ValueError):
        preempt(preemptor, nodes, result, CONFIG, random.Random(1))


def test_no_nodes_means_no_post_filter():
    preemptor = p("new", prio=10)
    result = schedule(preemptor, [], CONFIG, random.Random(1))
    outcome = preempt(preemptor, [], result, CONFIG, random.Random(1))
    assert outcome.nominated_node_name is None
    assert outcome.message == "no nodes available to schedule pods"


# --------------------------------------------------------------------------------------------
# The incremental PreFilter updates agree with recomputing everything
# --------------------------------------------------------------------------------------------


def _reference_victims(preemptor: PodInfo, target: NodeInfo, nodes: list[NodeInfo]) -> Any:
    """SelectVictimsOnNode the slow way: rebuild the cluster and rerun every PreFilter."""
    potential = [o for o in target.pods.values() if o.priority < preemptor.priority]
    if not potential:
        return ("No preemption victims found for incoming pod",)
    work = NodeInfo(
        target.name,
        labels=target.labels,
        taints=target.taints,
        allocatable=target.allocatable,
        pods=target.pods.values(),
    )

    def first_failure() -> Any:
        snapshot = Snapshot([work if n.name == target.name else n for n in nodes])
        for plugin in CONFIG.filters:
            if plugin.pre_filter(preemptor, snapshot):
                failure = plugin.filter(preemptor, work, snapshot)
                if failure is not None:
                    return failure
        return None

    for other in potential:
        work.remove_pod(other.key)
    failure = first_failure()
    if failure is not None:
        return failure.reasons
    victims = []
    for other in sorted(potential, key=lambda o: (-o.priority, o.start_time or 1e18)):
        work.add_pod(other)
        if first_failure() is not None:
            work.remove_pod(other.key)
            victims.append(other.key)
    return victims


def _random_cluster(rng: random.Random) -> tuple[PodInfo, list[NodeInfo]]:
    def term(app: str, key: str) -> dict[str, Any]:
        return {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}

    nodes = []
    serial = 0
    for i in range(rng.randint(2, 6)):
        pods = []
        for _ in range(rng.randint(0, 4)):
            serial += 1
            spec: dict[str, Any] = {}
            if rng.random() < 0.15:  # an existing pod that repels app=new pods
                spec["affinity"] = {
                    "podAntiAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [
                            term("new", rng.choice(["zone", "kubernetes.io/hostname"]))
                        ]
                    }
                }
            pods.append(
                p(
                    f"q{serial}",
                    prio=rng.randint(0, 3),
                    cpu=f"{rng.choice([100, 300, 500])}m",
                    start=rng.randint(0, 500),
                    labels={"app": rng.choice(["a", "b", "c"])},
                    **spec,
                )
            )
        nodes.append(
            node(f"n{i}", cpu="1", labels={"zone": rng.choice(["z1", "z2", "z3"])}, pods=pods)
        )
    spec = {}
    if rng.random() < 0.7:
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": rng.randint(1, 2),
                "topologyKey": rng.choice(["zone", "kubernetes.io/hostname"]),
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": rng.choice(["a", "new"])}},
                "minDomains": rng.choice([1, 1, 4]),
            }
            for _ in range(rng.randint(1, 2))
        ]
    affinity: dict[str, Any] = {}
    if rng.random() < 0.4:
        affinity["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                term("b", rng.choice(["zone", "kubernetes.io/hostname"]))
            ]
        }
    if rng.random() < 0.3:
        affinity["podAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [term("c", "zone")]
        }
    if affinity:
        spec["affinity"] = affinity
    preemptor = p(
        "new", prio=rng.randint(1, 4), cpu=f"{rng.choice([100, 400])}m", labels={"app": "new"},
        **spec,
    )  # fmt: skip
    return preemptor, nodes


def test_incremental_prefilter_updates_match_recomputation():
    rng = random.Random(20240611)
    compared = with_victims = 0
    for _ in range(400):
        preemptor, nodes = _random_cluster(rng)
        snapshot = Snapshot(nodes)
        plugins = [f for f in CONFIG.filters if f.pre_filter(preemptor, snapshot)]
        for target in nodes:
            chosen = select_victims_on_node(preemptor, target, snapshot, plugins)
            got = chosen.failure if chosen.failure is not None else [v.key for v in chosen.victims]
            assert got == _reference_victims(preemptor, target, nodes), (preemptor, target)
            compared += 1
            with_victims += bool(chosen.victims)
    assert with_victims > 100 and compared > 1000

"""API Priority and Fairness (``core.access.fairness``): FlowSchemas classify as Kubernetes'
do, levels get their share of seats, and one flooding flow waits and is refused in its own
queues while another flow of the same level keeps being served."""

from __future__ import annotations

from typing import Any

from core.access.fairness import (
    Dispatcher,
    Level,
    classify,
    hand,
    nominal_seats,
)
from core.access.rbac import Request, User

ALICE = User("alice", ("devs", "system:authenticated"))


def schema(name: str, level: str, precedence: int, *rules: dict[str, Any],
           by: str | None = None) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {
        "priorityLevelConfiguration": {"name": level},
        "matchingPrecedence": precedence,
        "rules": list(rules),
    }
    if by:
        spec["distinguisherMethod"] = {"type": by}
    return {"kind": "FlowSchema", "metadata": {"name": name}, "spec": spec}


EVERYONE = {"kind": "Group", "group": {"name": "system:authenticated"}}
ANY_RESOURCE = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"],
                "clusterScope": True}  # fmt: skip
SCHEMAS = [
    schema("exempt", "exempt", 1, {"subjects": [{"kind": "Group", "group": {"name": "system:masters"}}],
                                   "resourceRules": [ANY_RESOURCE],
                                   "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}),
    schema("robots", "workload-low", 900,
           {"subjects": [{"kind": "ServiceAccount", "serviceAccount": {"namespace": "ci", "name": "*"}}],
            "resourceRules": [ANY_RESOURCE]}, by="ByNamespace"),
    schema("global-default", "global-default", 9900,
           {"subjects": [EVERYONE], "resourceRules": [ANY_RESOURCE],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}, by="ByUser"),
    schema("reads-of-shop", "workload-high", 800,
           {"subjects": [{"kind": "User", "user": {"name": "*"}}],
            "resourceRules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
                               "namespaces": ["shop"]}]}),
]  # fmt: skip


def test_the_first_matching_schema_by_precedence_classifies_a_request() -> None:
    write = classify(SCHEMAS, ALICE, Request("create", "pods", namespace="shop"))
    assert write is not None
    assert (write.schema, write.level, write.flow) == (
        "global-default",
        "global-default",
        "global-default/alice",
    )
    read = classify(SCHEMAS, ALICE, Request("list", "pods", namespace="shop"))
    assert read is not None and (read.level, read.flow) == ("workload-high", "reads-of-shop/")
    admin = classify(SCHEMAS, User("root", ("system:masters",)), Request("delete", "nodes"))
    assert admin is not None and admin.level == "exempt"
    robot = User("system:serviceaccount:ci:builder")
    ci = classify(SCHEMAS, robot, Request("create", "pods", namespace="ci"))
    assert ci is not None and (ci.level, ci.flow) == ("workload-low", "robots/ci")
    # cluster-scoped requests match only rules that say clusterScope
    no_cluster = schema(
        "ns-only",
        "x",
        1,
        {
            "subjects": [EVERYONE],
            "resourceRules": [
                {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"]}
            ],
        },
    )
    assert classify([no_cluster], ALICE, Request("list", "nodes")) is None
    assert classify([no_cluster], ALICE, Request("list", "pods", namespace="a")) is not None
    # non-resource rules: "/apis/*" covers the tree below /apis
    health = schema(
        "probes",
        "x",
        1,
        {
            "subjects": [EVERYONE],
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}],
        },
    )
    assert classify([health], ALICE, Request("get", path="/apis/apps/v1")) is not None
    assert classify([health], ALICE, Request("get", path="/api")) is None


def test_seats_follow_the_shares_and_exempt_levels_take_none() -> None:
    levels = [Level("exempt", exempt=True), Level("system", shares=30),
              Level("workload-low", shares=100), Level("catch-all", shares=5)]  # fmt: skip
    assert nominal_seats(levels, 600) == {"system": 134, "workload-low": 445, "catch-all": 23}


def test_a_hand_is_distinct_queues_fixed_per_flow() -> None:
    dealt = hand("global-default/alice", queues=64, hand_size=6)
    assert len(set(dealt)) == 6 and all(0 <= q < 64 for q in dealt)
    assert hand("global-default/alice", queues=64, hand_size=6) == dealt
    assert hand("global-default/bob", queues=64, hand_size=6) != dealt


def test_a_flood_waits_and_is_refused_in_its_own_queues_while_others_are_served() -> None:
    level = Level("users", shares=1, queues=16, hand_size=2, queue_length_limit=5)
    dispatcher = Dispatcher({"users": level}, total_seats=2)
    assert dispatcher.seats("users") == 2
    outcomes = [
        dispatcher.arrive(f"flood-{i}", level="users", flow="users/mallory", now=0.0)
        for i in range(40)
    ]
    # two seats, then at most two queues of five for this flow's hand, then refusals
    assert outcomes[:2] == ["dispatched", "dispatched"]
    assert outcomes[2:12] == ["queued"] * 10
    assert set(outcomes[12:]) == {"rejected"}
    # alice arrives behind the flood and is served as soon as a seat frees, not after it all
    assert dispatcher.arrive("alice-1", level="users", flow="users/alice", now=0.1) == "queued"
    started: list[str] = []
    for finished in ("flood-0", "flood-1"):
        started += dispatcher.finish(finished)
    assert "alice-1" in started
    assert dispatcher.executing("users") == 2


def test_queued_requests_that_wait_too_long_are_refused_and_exempt_never_waits() -> None:
    levels = {
        "users": Level("users", queues=4, hand_size=1),
        "exempt": Level("exempt", exempt=True),
    }
    dispatcher = Dispatcher(levels, total_seats=1, queue_wait_s=15.0)
    assert dispatcher.arrive("a", level="users", flow="f", now=0.0) == "dispatched"
    assert dispatcher.arrive("b", level="users", flow="f", now=1.0) == "queued"
    assert dispatcher.expire(now=10.0) == []
    assert dispatcher.expire(now=16.5) == ["b"]
    assert dispatcher.finish("a") == []  # b is gone: nobody to start
    for i in range(100):
        assert dispatcher.arrive(f"x{i}", level="exempt", flow="e", now=0.0) == "dispatched"


def test_a_request_that_left_its_queue_no_longer_holds_back_new_arrivals() -> None:
    """Whether anyone waits is counted as requests come and go (cancelled, expired,
    dispatched): once the queues are empty again a free seat goes straight to a newcomer."""
    dispatcher = Dispatcher({"users": Level("users", queues=8, hand_size=2)}, total_seats=1)
    assert dispatcher.arrive("a", level="users", flow="f", now=0.0) == "dispatched"
    for name, flow in (("b", "f"), ("c", "g"), ("d", "h")):
        assert dispatcher.arrive(name, level="users", flow=flow, now=1.0) == "queued"
    assert dispatcher.cancel("b") and not dispatcher.cancel("b")
    assert dispatcher.finish("a") in (["c"], ["d"])
    assert dispatcher.expire(now=20.0) != []
    assert dispatcher.arrive("e", level="users", flow="f", now=20.0) == "queued"  # a seat is busy
    assert dispatcher.finish("c") + dispatcher.finish("d") == ["e"]
    assert dispatcher.finish("e") == []
    assert dispatcher.arrive("f", level="users", flow="f", now=21.0) == "dispatched"


def test_a_reject_level_refuses_instead_of_queuing() -> None:
    level = Level("lease", reject_when_full=True)
    dispatcher = Dispatcher({"lease": level}, total_seats=1)
    assert dispatcher.arrive("a", level="lease", flow="f", now=0.0) == "dispatched"
    assert dispatcher.arrive("b", level="lease", flow="f", now=0.0) == "rejected"


def test_levels_read_from_priority_level_configurations() -> None:
    manifest = {
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": "workload-low"},
        "spec": {"type": "Limited", "limited": {
            "nominalConcurrencyShares": 100,
            "limitResponse": {"type": "Queue", "queuing": {
                "queues": 128, "handSize": 6, "queueLengthLimit": 50}}}},
    }  # fmt: skip
    assert Level.from_manifest(manifest) == Level(
        "workload-low", shares=100, queues=128, hand_size=6, queue_length_limit=50
    )
    exempt = {"metadata": {"name": "exempt"}, "spec": {"type": "Exempt"}}
    assert Level.from_manifest(exempt).exempt

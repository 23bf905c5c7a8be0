"""API Priority and Fairness as objects (``core.access.flowkinds``, ``flowdefaults``) and the
dispatcher's cancel: what the doors' wiring decides on."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from core.access.fairness import Dispatcher, Level, classify
from core.access.flowdefaults import FLOW_SCHEMAS, PRIORITY_LEVELS, configuration, flow_user
from core.access.flowkinds import FlowSchema, PriorityLevelConfiguration
from core.access.rbac import Request
from core.meta.model import to_validation_failed


def _fields(model: Any, doc: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(doc)
    return {error.field or "" for error in to_validation_failed(caught.value).errors}


def _schema(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "priorityLevelConfiguration": {"name": "global-default"},
        "matchingPrecedence": 500,
        "rules": [{"subjects": [{"kind": "Group", "group": {"name": "ops"}}],
                   "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]}],
    }  # fmt: skip
    return {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": {"name": "mine"}, "spec": {**base, **spec}}  # fmt: skip


def _level(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration", "metadata": {"name": "mine"}, "spec": spec}  # fmt: skip


def _queued(queues: int, hand: int, length: int = 10) -> dict[str, Any]:
    queuing = {"queues": queues, "handSize": hand, "queueLengthLimit": length}
    return {"type": "Limited", "limited": {"nominalConcurrencyShares": 5,
            "limitResponse": {"type": "Queue", "queuing": queuing}}}  # fmt: skip


def test_kubes_default_objects_are_valid_and_complete() -> None:
    for doc in FLOW_SCHEMAS:
        FlowSchema.model_validate(doc)
    for doc in PRIORITY_LEVELS:
        PriorityLevelConfiguration.model_validate(doc)
    names = {d["metadata"]["name"] for d in PRIORITY_LEVELS}
    assert names == {"exempt", "system", "node-high", "leader-election", "workload-high",
                     "workload-low", "global-default", "catch-all"}  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"matchingPrecedence": 0}, "spec.matchingPrecedence"),
        ({"matchingPrecedence": 10001}, "spec.matchingPrecedence"),
        ({"matchingPrecedence": 1}, "spec.matchingPrecedence"),
        ({"distinguisherMethod": {"type": "ByColour"}}, "spec.distinguisherMethod.type"),
        ({"priorityLevelConfiguration": {"name": ""}}, "spec.priorityLevelConfiguration.name"),
        ({"rules": [{"subjects": [], "nonResourceRules": [
            {"verbs": ["get"], "nonResourceURLs": ["/x"]}]}]}, "spec.rules[0].subjects"),
        ({"rules": [{"subjects": [{"kind": "Robot"}], "nonResourceRules": [
            {"verbs": ["get"], "nonResourceURLs": ["/x"]}]}]}, "spec.rules[0].subjects[0].kind"),
        ({"rules": [{"subjects": [{"kind": "Group", "group": {"name": "g"}}]}]},
         "spec.rules[0].resourceRules"),
        ({"rules": [{"subjects": [{"kind": "Group", "group": {"name": "g"}}], "resourceRules": [
            {"verbs": ["get", "*"], "apiGroups": ["*"], "resources": ["*"],
             "clusterScope": True}]}]}, "spec.rules[0].resourceRules[0].verbs"),
        ({"rules": [{"subjects": [{"kind": "Group", "group": {"name": "g"}}], "resourceRules": [
            {"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}]}]},
         "spec.rules[0].resourceRules[0].namespaces"),
    ],
)  # fmt: skip
def test_a_flow_schema_is_validated_as_kube_validates_it(spec: dict[str, Any], field: str) -> None:
    assert field in _fields(FlowSchema, _schema(**spec))


def test_only_exempt_may_take_precedence_one_and_names_are_path_segments() -> None:
    exempt = _schema(matchingPrecedence=1)
    exempt["metadata"]["name"] = "exempt"
    FlowSchema.model_validate(exempt)
    slashed = _schema()
    slashed["metadata"]["name"] = "a/b"
    assert "metadata.name" in _fields(FlowSchema, slashed)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "Sometimes"}, "spec.type"),
        ({"type": "Limited"}, "spec.limited"),
        ({"type": "Exempt", "limited": {"nominalConcurrencyShares": 1}}, "spec.limited"),
        (_queued(0, 1), "spec.limited.limitResponse.queuing.queues"),
        (_queued(8, 9), "spec.limited.limitResponse.queuing.handSize"),
        (_queued(128, 0, 0), "spec.limited.limitResponse.queuing.queueLengthLimit"),
        (_queued(1 << 20, 4), "spec.limited.limitResponse.queuing.handSize"),  # 80 bits
        ({"type": "Limited", "limited": {"nominalConcurrencyShares": -1,
          "limitResponse": {"type": "Reject"}}}, "spec.limited.nominalConcurrencyShares"),
        ({"type": "Limited", "limited": {"limitResponse": {"type": "Queue"}}},
         "spec.limited.limitResponse.queuing"),
        ({"type": "Limited", "limited": {"limitResponse": {"type": "Drop"}}},
         "spec.limited.limitResponse.type"),
    ],
)  # fmt: skip
def test_a_priority_level_is_validated_as_kube_validates_it(
    spec: dict[str, Any], field: str
) -> None:
    assert field in _fields(PriorityLevelConfiguration, _level(spec))


def test_a_stored_level_replaces_its_built_in_and_a_dangling_schema_is_left_out() -> None:
    tuned = _level(_queued(4, 2, 3))
    tuned["metadata"]["name"] = "global-default"
    dangling = _schema(priorityLevelConfiguration={"name": "nowhere"})
    schemas, levels = configuration([dangling], [tuned])
    assert levels["global-default"] == Level(
        name="global-default", shares=5, queues=4, hand_size=2, queue_length_limit=3
    )
    assert "mine" not in {s["metadata"]["name"] for s in schemas}
    assert len(levels) == len(PRIORITY_LEVELS)


@pytest.mark.parametrize(
    ("actor", "groups", "schema", "level"),
    [
        ("user:alice", (), "global-default", "global-default"),
        ("alice", ("system:masters",), "exempt", "exempt"),
        ("system:replicaset-controller", (), "kube-controller-manager", "workload-high"),
        ("system:scheduler/abc", (), "kube-scheduler", "workload-high"),
        ("system:node/n1", (), "system-nodes", "system"),
        ("system:serviceaccount:default:robot", (), "service-accounts", "workload-low"),
    ],
)
def test_fleetlog_identities_land_on_kubes_levels(
    actor: str, groups: tuple[str, ...], schema: str, level: str
) -> None:
    schemas, _ = configuration((), ())
    request = Request(verb="create", resource="pods", namespace="default")
    found = classify(schemas, flow_user(actor, groups), request)
    assert found is not None and (found.schema, found.level) == (schema, level)


def test_node_status_goes_to_node_high() -> None:
    schemas, _ = configuration((), ())
    found = classify(schemas, flow_user("system:node/n1"), Request(verb="update",
                     resource="nodes", subresource="status"))  # fmt: skip
    assert found is not None and found.level == "node-high"


def test_a_cancelled_waiter_leaves_its_queue_and_its_seat_goes_to_the_next() -> None:
    level = Level(name="l", shares=1, queues=1, hand_size=1, queue_length_limit=5)
    dispatcher = Dispatcher(levels={"l": level}, total_seats=1)
    assert dispatcher.arrive("a", level="l", flow="f", now=0) == "dispatched"
    assert dispatcher.arrive("b", level="l", flow="f", now=0) == "queued"
    assert dispatcher.arrive("c", level="l", flow="f", now=0) == "queued"
    assert dispatcher.cancel("b") is True
    assert dispatcher.cancel("b") is False
    assert dispatcher.cancel("a") is False  # executing, not queued
    assert dispatcher.finish("a") == ["c"]

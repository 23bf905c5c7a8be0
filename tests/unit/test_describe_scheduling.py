"""``describe pod`` explains the scheduler's latest decision: the node and each plugin's share of
its score, or the refusal with its reasons per node count."""

from __future__ import annotations

from ops.render import describe, scheduling_lines
from streams.envelope import Envelope, StoredEvent


def stored(seq: int, event_type: str, payload: dict) -> StoredEvent:
    envelope = Envelope(
        f"id-{seq}", event_type, 1, "Pod", "default", "web", seq, 1_700_000_000_000_000_000,
        "system:scheduler/default-scheduler", "c", "c", payload,
    )  # fmt: skip
    return StoredEvent(seq=seq, subject="fleet.evt.pod.default.web", stored_ns=0, envelope=envelope)


def test_a_bound_pod_shows_its_node_and_the_weighted_plugin_scores() -> None:
    events = [
        stored(1, "PodCreated", {"manifest": {}, "uid": "u"}),
        stored(2, "PodUnschedulable", {"message": "0/1 nodes are available: 1 Insufficient cpu.",
                                       "reasons": {"Insufficient cpu": 1}}),
        stored(3, "PodBound", {
            "node": "n7", "score": 397, "feasible_nodes": 100, "evaluated_nodes": 120,
            "plugin_scores": {"TaintToleration": 100, "NodeResourcesFit": 57, "NodeAffinity": 0},
            "weights": {"TaintToleration": 3, "NodeResourcesFit": 1, "NodeAffinity": 2},
        }),
    ]  # fmt: skip
    lines = scheduling_lines(events)
    assert lines[0].startswith("Scheduling:   bound to n7 (system:scheduler/default-scheduler")
    assert lines[1] == "  score 397 (best of 100 feasible nodes, 120 evaluated)"
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert rows == {
        "TaintToleration": ["100", "3", "300"],
        "NodeResourcesFit": ["57", "1", "57"],
        "NodeAffinity": ["0", "2", "0"],
    }


def test_an_unschedulable_pod_shows_the_message_and_the_reasons() -> None:
    message = "0/5 nodes are available: 2 node(s) had untolerated taint(s), 3 Insufficient cpu."
    lines = scheduling_lines(
        [stored(2, "PodUnschedulable", {"message": message,
                                         "reasons": {"Insufficient cpu": 3,
                                                     "node(s) had untolerated taint(s)": 2}})]
    )  # fmt: skip
    assert lines[0].startswith("Scheduling:   unschedulable")
    assert lines[1] == f"  {message}"
    assert lines[3].split() == ["Insufficient", "cpu", "3"]


def test_describe_of_a_pod_includes_the_scheduling_section_and_other_kinds_do_not() -> None:
    item = {
        "kind": "Pod", "name": "web", "namespace": "default", "uid": "u", "created_ns": 0,
        "version": 1, "last_seq": 1, "manifest": {"metadata": {"name": "web"}},
    }  # fmt: skip
    assert "Scheduling:   <no decision yet>" in describe(item, [], 0)
    assert "Scheduling:" not in describe({**item, "kind": "Node", "namespace": ""}, [], 0)


def test_a_nominated_pod_shows_the_node_and_its_victims() -> None:
    lines = scheduling_lines(
        [stored(4, "PodNominated", {"node": "n1", "victims": ["default/b"], "message": "0/1 …"})]
    )
    assert lines[0].startswith("Scheduling:   nominated to n1")
    assert lines[1] == "  preempting: default/b"

"""Node health from heartbeats: Kubernetes' grace periods and transitions."""

from __future__ import annotations

from core.nodes.lifecycle import NodeHealth, assess

S = 1_000_000_000


def test_missed_heartbeats_past_the_grace_make_a_ready_node_unknown() -> None:
    node = NodeHealth("n1", "True", created_ns=0, last_heartbeat_ns=100 * S)
    assert assess([node], now_ns=150 * S) == []  # exactly 50 s: still within the grace
    [transition] = assess([node], now_ns=150 * S + 1)
    assert (transition.status, transition.reason) == ("Unknown", "NodeStatusUnknown")
    assert transition.message == "Kubelet stopped posting node status."
    assert transition.last_heartbeat_ns == 100 * S and transition.grace_seconds == 50


def test_a_node_that_never_heartbeats_gets_the_startup_grace() -> None:
    node = NodeHealth("n1", "", created_ns=0, last_heartbeat_ns=None)
    assert assess([node], now_ns=60 * S) == []
    [transition] = assess([node], now_ns=61 * S)
    assert (
        transition.status == "Unknown" and transition.message == "Kubelet never posted node status."
    )


def test_a_heartbeating_node_becomes_ready_once() -> None:
    fresh = NodeHealth("n1", "", created_ns=0, last_heartbeat_ns=10 * S)
    [transition] = assess([fresh], now_ns=11 * S)
    assert (transition.status, transition.reason) == ("True", "KubeletReady")
    assert assess([NodeHealth("n1", "True", 0, 10 * S)], now_ns=11 * S) == []


def test_recovered_node_returns_to_ready_and_unknown_nodes_are_not_reported_again() -> None:
    assert assess([NodeHealth("n1", "Unknown", 0, 10 * S)], now_ns=500 * S) == []
    [back] = assess([NodeHealth("n1", "Unknown", 0, 499 * S)], now_ns=500 * S)
    assert back.status == "True"


def test_grace_periods_are_configurable() -> None:
    node = NodeHealth("n1", "True", 0, 10 * S)
    assert assess([node], now_ns=12 * S, grace_seconds=1.0)[0].status == "Unknown"

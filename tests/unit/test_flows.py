"""UDP flows as the node's forwarding keeps them: conntrack's idle timeouts (30 s, 120 s for a
stream), a flow ended when its endpoint leaves, and nothing else ending one."""

from __future__ import annotations

from core.services.balancing import Endpoint
from core.services.flows import UDP_STREAM_TIMEOUT_S, UDP_TIMEOUT_S, FlowTable

A = Endpoint("100.96.0.2", 53)
B = Endpoint("100.96.0.3", 53)


def test_conntracks_timeouts_are_the_defaults() -> None:
    assert (UDP_TIMEOUT_S, UDP_STREAM_TIMEOUT_S) == (30.0, 120.0)


def test_a_flow_without_a_stream_ends_after_the_plain_timeout() -> None:
    table: FlowTable[str] = FlowTable(timeout=30, stream_timeout=120)
    flow = table.add("c1", A, now=0)
    table.from_client(flow, now=0)
    table.from_endpoint(flow, now=1)  # one answer: not yet a stream
    assert not flow.stream
    assert not table.ran_out(flow, now=31) and table.ran_out(flow, now=31.5)
    assert table.expired(now=20) == [] and len(table) == 1
    assert table.expired(now=32) == [flow] and table.get("c1") is None


def test_the_client_writing_after_an_answer_makes_a_stream_kept_longer() -> None:
    table: FlowTable[str] = FlowTable(timeout=30, stream_timeout=120)
    flow = table.add("c1", A, now=0)
    table.from_client(flow, now=0)
    table.from_endpoint(flow, now=1)
    table.from_client(flow, now=2)
    assert flow.stream and flow.datagrams == 2
    assert not table.ran_out(flow, now=100) and table.ran_out(flow, now=123)


def test_every_datagram_either_way_keeps_a_flow_alive() -> None:
    table: FlowTable[str] = FlowTable(timeout=30, stream_timeout=120)
    flow = table.add("c1", A, now=0)
    for second in range(0, 300, 20):  # one datagram each 20 s, only from the client
        assert not table.ran_out(flow, now=second)
        table.from_client(flow, now=second)
    table.from_endpoint(flow, now=310)
    assert not table.ran_out(flow, now=339)


def test_flows_whose_endpoint_left_end_and_the_others_stay() -> None:
    table: FlowTable[tuple[str, int]] = FlowTable()
    on_a = table.add(("10.0.0.1", 5000), A, now=0)
    on_b = table.add(("10.0.0.1", 5001), B, now=0)
    assert table.leaving([A, B]) == []
    assert table.leaving([B]) == [on_a]
    assert table.get(("10.0.0.1", 5000)) is None and table.get(("10.0.0.1", 5001)) is on_b
    assert table.leaving([]) == [on_b] and len(table) == 0


def test_a_key_has_one_flow_and_clear_ends_them_all() -> None:
    table: FlowTable[str] = FlowTable()
    first = table.add("c1", A, now=0, handle="socket-1")
    second = table.add("c1", B, now=1, handle="socket-2")
    assert table.get("c1") is second and first is not second
    table.add("c2", A, now=1)
    assert {f.key for f in table.clear()} == {"c1", "c2"} and list(table) == []
    assert table.remove("c1") is None


def test_a_full_table_makes_room_as_conntrack_does() -> None:
    table: FlowTable[str] = FlowTable(timeout=30, stream_timeout=120, limit=3)
    stream = table.add("stream", A, now=0)
    table.from_client(stream, now=0)
    table.from_endpoint(stream, now=0)
    table.from_client(stream, now=0)
    old = table.add("old", A, now=1)
    table.add("new", B, now=2)
    assert table.make_room(now=2) == [old]  # the oldest that is not a stream
    assert table.make_room(now=2) == []  # room enough
    table.add("newer", B, now=3)
    # Flows that ran out go first, whatever their age.
    table.from_client(stream, now=40)
    assert [f.key for f in table.make_room(now=40)] == ["new", "newer"] and len(table) == 1
    # Only streams left: the oldest goes.
    table.add("s2", B, now=41).stream = True
    table.add("s3", B, now=42).stream = True
    assert table.make_room(now=42) == [stream]

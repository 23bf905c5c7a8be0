"""The event store against a real nats-server: concurrency, atomicity, retries, reads."""

from __future__ import annotations

import asyncio

import pytest

from streams.eventstore import ConcurrencyConflict, EventStore, Write
from streams.subjects import event_subject
from tests.integration.support import event_bytes

pytestmark = pytest.mark.integration


def envelope(name: str, version: int, event_type: str = "PodCreated", **payload: object) -> bytes:
    return event_bytes(
        name, version, event_type=event_type, payload={"manifest": {}, "uid": "u", **payload}
    )


POD_A = event_subject("Pod", "default", "a")
NODE_B = event_subject("Node", "", "b")


async def test_append_to_a_new_subject_then_read_it_back(store: EventStore) -> None:
    seqs = await store.append([Write(POD_A, [envelope("a", 1)], 0)], token="t1")
    assert seqs == [1]
    events = await store.read_subject(POD_A)
    assert [(e.seq, e.envelope.name, e.envelope.version) for e in events] == [(1, "a", 1)]
    assert events[0].stored_ns > 0
    assert await store.last_seq(POD_A) == 1
    assert await store.last_seq(NODE_B) == 0


async def test_a_write_found_stored_by_an_earlier_attempt_is_marked_replayed(
    store: EventStore,
) -> None:
    first = await store.append([Write(POD_A, [envelope("a", 1)], 0)], token="t1")
    assert first == [1] and not first.replayed
    # The same bytes again (a retry after a lost ack): JetStream's duplicate window answers.
    again = await store.append([Write(POD_A, [envelope("a", 1)], 0)], token="t1")
    assert again == [1] and again.replayed
    # Decided again with other bytes under the same token: found by its Msg-Id.
    redecided = await store.append(
        [Write(POD_A, [envelope("a", 1, decided="later")], 0)], token="t1"
    )
    assert redecided == [1] and redecided.replayed
    assert len(await store.read_subject(POD_A)) == 1


async def test_stale_expectation_is_rejected_and_appends_nothing(store: EventStore) -> None:
    await store.append([Write(POD_A, [envelope("a", 1)], 0)], token="t1")
    with pytest.raises(ConcurrencyConflict):
        await store.append([Write(POD_A, [envelope("a", 1)], 0)], token="t2")
    assert len(await store.read_subject(POD_A)) == 1
    assert await store.stream_last_seq() == 1


async def test_atomic_batch_is_all_or_nothing_when_one_expectation_fails(store: EventStore) -> None:
    await store.append([Write(NODE_B, [envelope("b", 1)], 0)], token="node")
    with pytest.raises(ConcurrencyConflict):
        await store.append(
            [Write(POD_A, [envelope("a", 1)], 0), Write(NODE_B, [envelope("b", 2)], 0)],
            token="bind-stale",
        )
    assert await store.read_subject(POD_A) == []
    assert await store.stream_last_seq() == 1
    seqs = await store.append(
        [Write(POD_A, [envelope("a", 1)], 0), Write(NODE_B, [envelope("b", 2)], 1)],
        token="bind-ok",
    )
    assert seqs == [2, 3]


async def test_several_events_on_one_subject_land_together(store: EventStore) -> None:
    seqs = await store.append(
        [Write(POD_A, [envelope("a", 1), envelope("a", 2), envelope("a", 3)], 0)], token="many"
    )
    assert seqs == [1, 2, 3]
    assert [e.envelope.version for e in await store.read_subject(POD_A)] == [1, 2, 3]


async def test_retry_after_lost_ack_applies_once_and_returns_the_first_sequences(
    store: EventStore,
) -> None:
    writes = [Write(POD_A, [envelope("a", 1)], 0), Write(NODE_B, [envelope("b", 1)], 0)]
    first = await store.append(writes, token="cmd-1")
    # The client never saw that ack: it sends the very same write again.
    again = await store.append(writes, token="cmd-1")
    assert again == first
    assert await store.stream_last_seq() == 2
    single = [Write(event_subject("Pod", "default", "c"), [envelope("c", 1)], 0)]
    assert await store.append(single, token="cmd-2") == await store.append(single, token="cmd-2")
    assert await store.stream_last_seq() == 3


async def test_a_loser_never_mistakes_the_winners_event_for_its_own(store: EventStore) -> None:
    """Two writers, same expectation, same event content: only the token tells them apart."""
    results = await asyncio.gather(
        store.append([Write(POD_A, [envelope("a", 1)], 0)], token="writer-1"),
        store.append([Write(POD_A, [envelope("a", 1)], 0)], token="writer-2"),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Appended", "ConcurrencyConflict"]
    assert not any(getattr(r, "replayed", False) for r in results)
    assert len(await store.read_subject(POD_A)) == 1


async def test_read_subject_pages_through_long_histories(store: EventStore) -> None:
    expected = 0
    for version in range(1, 2501, 500):
        batch = [envelope("a", v) for v in range(version, version + 500)]
        seqs = await store.append([Write(POD_A, batch, expected)], token=f"p{version}")
        expected = seqs[-1]
    events = await store.read_subject(POD_A)
    assert [e.envelope.version for e in events] == list(range(1, 2501))
    assert [e.envelope.version for e in await store.read_subject(POD_A, after_seq=2400)] == list(
        range(2401, 2501)
    )


async def test_replay_stops_at_a_sequence_and_at_the_end(store: EventStore) -> None:
    for version in range(1, 11):
        await store.append(
            [Write(POD_A, [envelope("a", version)], version - 1)], token=f"r{version}"
        )
    seen: list[int] = []
    assert await store.replay(lambda e: seen.append(e.seq), until_seq=4) == 4
    assert seen == [1, 2, 3, 4]
    seen.clear()
    assert await store.replay(lambda e: seen.append(e.seq), from_seq=7) == 10
    assert seen == [7, 8, 9, 10]
    seen.clear()
    assert await store.replay(lambda e: seen.append(e.seq), filter_subject=NODE_B) == 0
    assert seen == []


async def test_live_subscription_sees_new_events(store: EventStore) -> None:
    seen: asyncio.Queue[int] = asyncio.Queue()
    sub = await store.subscribe(lambda e: seen.put_nowait(e.envelope.version))
    try:
        await store.append([Write(POD_A, [envelope("a", 1)], 0)], token="s1")
        assert await asyncio.wait_for(seen.get(), 5) == 1
    finally:
        await sub.unsubscribe()


async def test_pipelined_appends_report_each_outcome(store: EventStore) -> None:
    await store.append([Write(POD_A, [envelope("a", 1)], 0)], token="taken")
    items = [
        ([Write(event_subject("Pod", "default", f"n{i}"), [envelope(f"n{i}", 1)], 0)], f"m{i}")
        for i in range(50)
    ]
    items.append(([Write(POD_A, [envelope("a", 1)], 0)], "late"))
    results = await store.append_many(items)
    assert [r for r in results[:50]] == [[i] for i in range(2, 52)]
    assert isinstance(results[50], ConcurrencyConflict)
    assert await store.stream_last_seq() == 51


async def test_the_log_can_be_read_from_an_instant(store: EventStore) -> None:
    import time
    from datetime import UTC, datetime

    await store.append([Write(POD_A, [envelope("a", 1)], 0)], token="before")
    await asyncio.sleep(0.05)
    cut = datetime.fromtimestamp(time.time(), tz=UTC)
    await asyncio.sleep(0.05)
    await store.append([Write(NODE_B, [envelope("b", 1)], 0)], token="after")
    seen: list[str] = []
    await store.replay(lambda e: seen.append(e.envelope.name), from_time=cut)
    assert seen == ["b"]


async def test_a_token_reused_for_another_write_is_an_error_not_a_silent_drop(
    store: EventStore,
) -> None:

    from streams.eventstore import StoreError

    await store.append([Write(POD_A, [envelope("a", 1)], None)], token="same-token")
    with pytest.raises(StoreError, match="write token reused"):
        await store.append([Write(NODE_B, [envelope("b", 1)], None)], token="same-token")
    assert await store.append([Write(POD_A, [envelope("a", 1)], None)], token="same-token") == [1]


async def test_a_write_decided_again_after_its_first_attempt_landed_unseen_is_a_replay(
    store: EventStore,
) -> None:
    """The first attempt landed but its ack was lost; the retry, reading a replica without it,
    decided the same write again (same token, same event id and type, a later time: other
    bytes). JetStream's duplicate window drops it: the write is done, not "token reused"."""
    from core.api.events import schema_version
    from streams.envelope import Envelope

    def decided(at: int) -> bytes:
        return Envelope(
            event_id="e-same", type="PodCreated", schema_version=schema_version("PodCreated"),
            kind="Pod", namespace="default", name="a", version=1, timestamp_ns=at,
            actor="test", correlation_id="c", causation_id="c", payload={"manifest": {}, "uid": "u"},
        ).encode()  # fmt: skip

    first = await store.append([Write(POD_A, [decided(1)], None)], token="retried")
    again = await store.append([Write(POD_A, [decided(2)], None)], token="retried")
    assert again == first == [1] and again.replayed
    assert [e.envelope.timestamp_ns for e in await store.read_subject(POD_A)] == [1]


async def test_a_batch_of_hundreds_of_events_queued_as_one_buffer_lands_whole(
    store: EventStore,
) -> None:
    """An atomic batch as large as the scheduler's (256 bindings, two events each) goes out as
    one buffer: every event is stored, in order, each with its own Msg-Id and expectation."""
    writes = [
        Write(event_subject("Pod", "default", f"p{i}"), [envelope(f"p{i}", 1)], 0)
        for i in range(512)
    ]
    seqs = await store.append(writes, token="big")
    assert seqs == list(range(1, 513)) and not seqs.replayed
    for i in (0, 255, 511):
        events = await store.read_subject(event_subject("Pod", "default", f"p{i}"))
        assert [(e.seq, e.envelope.name) for e in events] == [(i + 1, f"p{i}")]
    # The expectations were sent: a second batch deciding on the same (now stale) state loses.
    with pytest.raises(ConcurrencyConflict):
        await store.append(writes, token="again")
    assert await store.stream_last_seq() == 512


async def test_a_read_the_stream_does_not_answer_is_an_error_not_an_empty_history(nc) -> None:  # type: ignore[no-untyped-def]
    """While a cluster's server is down a direct get can be answered "no responders" (503):
    that must fail the read, never look like an object without events."""
    from nats.errors import NoRespondersError

    from streams.eventstore import StoreError

    async with EventStore(nc, stream="NO_SUCH_STREAM") as missing:
        subject = event_subject("Pod", "default", "web")
        with pytest.raises(StoreError, match="did not answer a read"):
            await missing.read_subject(subject)
        with pytest.raises((StoreError, NoRespondersError)):
            await missing.last_seq(subject)

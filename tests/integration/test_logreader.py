"""The bulk log reader against a real nats-server: it must read exactly what nats-py's ordered
consumer reads, for every kind of bound, across several pull batches and a lost connection;
and, following the log live, hand over every message once, in order, through outages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client

from streams import jsapi
from streams.eventstore import EventStore, Write
from streams.logreader import BulkRead, LiveRead, LogReadError, dial_for
from streams.subjects import ALL_EVENTS, event_filter, event_subject
from tests.conftest import RunningServer
from tests.integration.support import event_bytes

pytestmark = pytest.mark.integration

Stored = tuple[int, str, int, bytes, bytes | None]


def envelope(kind: str, name: str, version: int) -> bytes:
    return event_bytes(
        name,
        version,
        event_type=f"{kind}Created" if version == 1 else "PodReady",
        payload={"manifest": {}, "uid": "u"},
        kind=kind,
        namespace="default" if kind == "Pod" else "",
    )


async def fill(store: EventStore, count: int, tag: str = "f") -> None:
    """``count`` events: pods with three events each, a node every tenth write (``tag`` keeps
    the write tokens of several fills apart)."""
    items = []
    for i in range(count):
        kind = "Node" if i % 10 == 0 else "Pod"
        name = f"n{i}" if kind == "Node" else f"p{i // 30}"
        namespace = "" if kind == "Node" else "default"
        items.append(
            (
                [Write(event_subject(kind, namespace, name), [envelope(kind, name, 1)], None)],
                f"{tag}{i}",
            )
        )
    for start in range(0, len(items), 1000):
        for result in await store.append_many(items[start : start + 1000]):
            assert isinstance(result, list)


def collector(into: list[Stored]) -> Callable[[int, str, int, bytes, bytes | None], None]:
    def collect(seq: int, subject: str, stored_ns: int, data: bytes, seal: bytes | None) -> None:
        into.append((seq, subject, stored_ns, data, seal))

    return collect


async def both_ways(store: EventStore, **bounds: object) -> tuple[list[Stored], list[Stored]]:
    """What the bulk reader and nats-py's ordered consumer hand over for the same bounds."""
    results: list[list[Stored]] = []
    for bulk in (True, False):
        store.bulk_reads = bulk
        seen: list[Stored] = []
        await store.replay_raw(collector(seen), **bounds)  # type: ignore[arg-type]
        results.append(seen)
    store.bulk_reads = True
    return results[0], results[1]


async def test_the_bulk_reader_reads_what_the_ordered_consumer_reads(store: EventStore) -> None:
    await fill(store, 10_000)  # more than two pull batches
    assert store._bulk_read_dial() is not None
    bulk, ordered = await both_ways(store)
    assert len(bulk) == 10_000
    assert bulk == ordered
    assert [m[0] for m in bulk] == list(range(1, 10_001))
    for bounds in (
        {"until_seq": 4_100},
        {"from_seq": 8_000},
        {"from_seq": 5, "until_seq": 5},
        {"filter_subject": event_filter("Node")},
        {"filter_subject": event_filter("Node"), "from_seq": 9_000, "until_seq": 9_500},
        {"filter_subject": event_subject("Pod", "default", "p7")},
        {"filter_subject": event_subject("Pod", "default", "nobody")},
        {"from_seq": 20_000},
    ):
        bulk, ordered = await both_ways(store, **bounds)
        assert bulk == ordered, bounds
    stored_times = [m[2] for m in bulk]
    assert stored_times == sorted(stored_times)


async def test_time_bounds_match_the_ordered_consumer(store: EventStore) -> None:
    await fill(store, 300)
    await asyncio.sleep(0.05)
    cut = datetime.fromtimestamp(time.time(), tz=UTC)
    await asyncio.sleep(0.05)
    await store.append([Write(ALL_EVENTS.replace(">", "Node._.late"), [b"x"], None)], token="l")
    everything, _ = await both_ways(store)
    middle_ns = everything[150][2]
    for bounds in (
        {"from_time": cut},
        {"until_ns": middle_ns},
        {"from_time": datetime.fromtimestamp(time.time() + 60, tz=UTC)},  # nothing newer
    ):
        bulk, ordered = await both_ways(store, **bounds)
        assert bulk == ordered, bounds
    bulk, _ = await both_ways(store, from_time=cut)
    assert [m[1] for m in bulk] == ["fleet.evt.Node._.late"]
    bulk, _ = await both_ways(store, until_ns=middle_ns)
    assert bulk == everything[: len(bulk)] and bulk[-1][2] <= middle_ns < everything[len(bulk)][2]


async def test_a_lost_connection_resumes_after_the_last_message(
    store: EventStore, nats_server: RunningServer
) -> None:
    await fill(store, 20_000)
    dial = store._bulk_read_dial()
    assert dial is not None
    seen: list[int] = []
    restart: list[asyncio.Task[None]] = []

    async def restart_server() -> None:
        await nats_server.server.stop()
        await nats_server.server.start()

    def handler(seq: int, subject: str, stored_ns: int, data: bytes, seal: bytes | None) -> None:
        seen.append(seq)
        if len(seen) == 5_000:
            restart.append(asyncio.create_task(restart_server()))

    read = BulkRead(
        dial,
        store.subjects,
        handler,
        filter_subject=ALL_EVENTS,
        from_seq=1,
        from_ns=0,
        target=20_000,
        until_ns=None,
    )
    await read.run()
    await asyncio.gather(*restart)
    assert seen == list(range(1, 20_001))


async def test_a_failing_handler_ends_the_read_with_its_error(store: EventStore) -> None:
    await fill(store, 100)

    def handler(seq: int, subject: str, stored_ns: int, data: bytes, seal: bytes | None) -> None:
        if seq == 50:
            raise ValueError("cannot fold 50")

    with pytest.raises(ValueError, match="cannot fold 50"):
        await store.replay_raw(handler)


async def test_a_missing_stream_is_a_clear_error(nc: Client, store: EventStore) -> None:
    dial = store._bulk_read_dial()
    assert dial is not None
    read = BulkRead(
        dial,
        jsapi.of(nc).stream("NO_SUCH_STREAM"),
        lambda *m: None,
        filter_subject=ALL_EVENTS,
        from_seq=1,
        from_ns=0,
        target=10,
        until_ns=None,
    )
    with pytest.raises(LogReadError, match="cannot read NO_SUCH_STREAM: stream not found"):
        await read.run()


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_live_read_hands_over_every_message_once_through_server_restarts(
    nc: Client, store: EventStore, nats_server: RunningServer
) -> None:
    """Appends before and after the read starts, while the server is away and after it is
    back: the live read hands over 1..N, each once, in order, and starts a new consumer after
    each outage (from the last message it handed over)."""
    await fill(store, 3_000)
    seen: list[int] = []
    read = LiveRead(
        lambda: dial_for(nc),
        store.subjects,
        lambda seq, subject, stored_ns, data, seal: seen.append(seq),
        filter_subject=ALL_EVENTS,
        from_seq=1_001,
    )
    task = asyncio.create_task(read.run())
    try:
        await wait_until(lambda: len(seen) == 2_000, "the stored messages")
        await fill(store, 5_000, "more")  # while following: more than one pull batch
        await wait_until(lambda: len(seen) == 7_000, "the appended messages")
        for outage in range(2):
            await nats_server.server.stop()
            await asyncio.sleep(0.5)
            await nats_server.server.start()
            await wait_until(lambda: nc.is_connected, "the client reconnected")
            await fill(store, 1_000, f"after{outage}")
            await wait_until(
                lambda total=8_000 + 1_000 * outage: len(seen) == total,  # type: ignore[misc]
                "the messages after the outage",
            )
        assert seen == list(range(1_001, 10_001))
        assert read.restarts >= 2 and read.last_seq == 10_000
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_scheduler_projection_follows_through_the_lean_reader(
    store: EventStore,
) -> None:
    """Events appended after a lean-following projection started are folded in order."""
    from projections.runtime import Projection
    from projections.scheduling import SchedulingModel
    from streams.eventstore import Following

    projection = Projection(SchedulingModel(), store, lean_follow=True)
    await projection.catch_up()
    await projection.follow()
    try:
        assert isinstance(projection._subscription, Following)
        await fill(store, 300)
        assert await projection.wait_for(300, timeout=30)
        assert projection.position == 300
    finally:
        await projection.stop()


async def test_followers_of_one_store_are_handed_the_same_decoded_event(
    store: EventStore,
) -> None:
    """Several readers following the log through one store (``up``'s cluster projection and
    the scheduler's, through the lean reader and nats-py's consumer alike) get each message
    checked and decoded once: the very same event. A replay decodes on its own."""
    from streams.envelope import StoredEvent

    lean: dict[int, StoredEvent] = {}
    other_lean: dict[int, StoredEvent] = {}
    pushed: dict[int, StoredEvent] = {}
    first = store.follow(lambda e: lean.__setitem__(e.seq, e))
    second = store.follow(lambda e: other_lean.__setitem__(e.seq, e))
    assert first is not None and second is not None
    third = await store.subscribe(lambda e: pushed.__setitem__(e.seq, e))
    try:
        await fill(store, 60)
        deadline = time.monotonic() + 30
        while min(len(lean), len(other_lean), len(pushed)) < 60:
            assert time.monotonic() < deadline, (len(lean), len(other_lean), len(pushed))
            await asyncio.sleep(0.05)
    finally:
        await first.unsubscribe()
        await second.unsubscribe()
        await third.unsubscribe()
    assert sorted(lean) == list(range(1, 61))
    assert all(lean[seq] is other_lean[seq] is pushed[seq] for seq in lean)
    assert store.live_reused == 120
    replayed: list[StoredEvent] = []
    await store.replay(replayed.append)
    assert [e.seq for e in replayed] == sorted(lean)
    assert all(e is not lean[e.seq] and e.envelope == lean[e.seq].envelope for e in replayed)

"""The one decide-and-append path (``streams.decide``) against a real server: a decision taken
on stale state loses its race and is decided again on the log with the same token; a refusal
leaves nothing cached; a version precondition judged on the cache is judged again on the log;
locks are taken in one global order, so writers that need the same aggregates never wait on
each other for ever."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.errors import Conflict, InvalidTransition
from core.meta.aggregate import timestamp_from_ns
from core.nodes.aggregate import Node
from handlers.gateway import Gateway
from streams.commandbus import CommandClient
from streams.decide import Append, Attempt, Decide, OnConflict, decide_and_append, lock_order
from streams.eventstore import ConcurrencyConflict, EventStore
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef, event_subject

pytestmark = pytest.mark.integration

N1, N2 = AggregateRef("Node", "", "n1"), AggregateRef("Node", "", "n2")


def node(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}},
    }


def provenance(token: str) -> Provenance:
    return Provenance(
        actor="test", correlation_id=token, causation_id=token, token=token, now_ns=time.time_ns()
    )


def cordon(ref: AggregateRef, token: str, seen: list[Attempt]) -> Decide:
    async def decide(attempt: Attempt) -> Append:
        seen.append(attempt)
        loaded = attempt[ref]
        assert isinstance(loaded.aggregate, Node)
        if loaded.aggregate.unschedulable:
            loaded.aggregate.uncordon(reason="", at=timestamp_from_ns(time.time_ns()))
        else:
            loaded.aggregate.cordon(reason="", at=timestamp_from_ns(time.time_ns()))
        return Append(changes=[loaded], provenance=provenance(token))

    return decide


async def test_a_decision_on_stale_state_is_decided_again_on_the_log_with_the_same_token(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    stale = AggregateRepository(store)
    await stale.load(N1)  # cached at the node's first event
    other: list[Attempt] = []
    await decide_and_append(
        AggregateRepository(store), [N1], cordon(N1, "other", other), attempts=1
    )
    seen: list[Attempt] = []
    noticed: list[int] = []

    async def note(attempt: int, conflict: ConcurrencyConflict) -> None:
        noticed.append(attempt)

    decided = await decide_and_append(
        stale, [N1], cordon(N1, "mine", seen), attempts=3, on_conflict=OnConflict(noticed=note)
    )
    assert [(a.number, a.fresh) for a in seen] == [(1, False), (2, True)]
    assert noticed == [1]
    assert decided.written is not None and [t for t, _ in decided.written] == ["NodeUncordoned"]
    history = await store.read_subject(event_subject("Node", "", "n1"))
    assert [e.envelope.type for e in history] == ["NodeCreated", "NodeCordoned", "NodeUncordoned"]
    assert history[-1].envelope.correlation_id == "mine"


async def test_a_write_that_keeps_losing_raises_its_last_conflict(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    writer, rival = AggregateRepository(store), AggregateRepository(store)
    attempts: list[Attempt] = []

    async def losing(attempt: Attempt) -> Append:
        attempts.append(attempt)
        # Another process writes the node after every load of this one.
        await decide_and_append(rival, [N1], cordon(N1, f"rival{attempt.number}", []), attempts=1)
        return await cordon(N1, "loser", [])(attempt)

    with pytest.raises(ConcurrencyConflict):
        await decide_and_append(writer, [N1], losing, attempts=2)
    assert [a.number for a in attempts] == [1, 2]


async def test_a_refusal_is_raised_and_leaves_nothing_cached(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    repository = AggregateRepository(store)

    async def refuse(attempt: Attempt) -> Append:
        loaded = attempt[N1]
        assert isinstance(loaded.aggregate, Node)
        loaded.aggregate.cordon(reason="", at=timestamp_from_ns(time.time_ns()))
        raise InvalidTransition("no")

    before = await store.stream_last_seq()
    with pytest.raises(InvalidTransition):
        await decide_and_append(repository, [N1], refuse, attempts=3)
    assert await store.stream_last_seq() == before
    reloaded = await repository.load(N1)  # not the refused decision's object
    assert isinstance(reloaded.aggregate, Node) and not reloaded.aggregate.unschedulable


async def test_a_version_precondition_judged_on_the_cache_is_judged_again_on_the_log(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    stale = AggregateRepository(store)
    await stale.load(N1)
    await decide_and_append(AggregateRepository(store), [N1], cordon(N1, "other", []), attempts=1)
    seen: list[bool] = []

    def at_version(version: int) -> Decide:
        async def decide(attempt: Attempt) -> Append | None:
            seen.append(attempt.fresh)
            loaded = attempt[N1]
            assert loaded.aggregate is not None
            loaded.aggregate.require_version(version)
            return None

        return decide

    decided = await decide_and_append(stale, [N1], at_version(2), attempts=3)
    assert seen == [False, True] and decided.written is None
    seen.clear()
    with pytest.raises(Conflict):  # judged on the log: refused at once
        await decide_and_append(stale, [N1], at_version(1), attempts=3, start_fresh=True)
    assert seen == [True]


async def test_writers_locking_the_same_nodes_in_any_order_all_complete(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    for name in ("n1", "n2"):
        await client.send("Node", "apply", {"manifest": node(name)})
    repository = AggregateRepository(store)

    def both(token: str) -> Decide:
        async def decide(attempt: Attempt) -> Append:
            await asyncio.sleep(0.01)  # hold the locks while the other writer asks for them
            changes = [attempt[N1], attempt[N2]]
            for loaded in changes:
                assert isinstance(loaded.aggregate, Node)
                loaded.aggregate.cordon(reason=token, at=timestamp_from_ns(time.time_ns()))
                loaded.aggregate.uncordon(reason=token, at=timestamp_from_ns(time.time_ns()))
            return Append(changes=changes, provenance=provenance(token))

        return decide

    await asyncio.wait_for(
        asyncio.gather(
            *(
                decide_and_append(repository, refs, both(f"w{i}"), attempts=1)
                for i, refs in enumerate([[N1, N2], [N2, N1]] * 5)
            )
        ),
        timeout=30,
    )
    history = await store.read_subject(event_subject("Node", "", "n2"))
    assert len(history) == 1 + 2 * 10


def test_objects_come_before_nodes_and_nodes_before_quotas_in_lock_order() -> None:
    pod, quota = AggregateRef("Pod", "z", "z"), AggregateRef("ResourceQuota", "a", "a")
    assert sorted([quota, N2, pod, N1], key=lock_order) == [pod, N1, N2, quota]


async def test_dependents_that_would_break_the_lock_order_are_refused(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    pod = AggregateRef("Pod", "default", "p")

    async def nothing(attempt: Attempt) -> None:
        return None

    with pytest.raises(ValueError, match="lock order"):
        await decide_and_append(
            AggregateRepository(store), [N1], nothing, attempts=1, dependents=lambda a: [pod]
        )


async def test_a_refusal_judged_on_state_older_than_the_leaders_is_judged_again_on_the_log(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    # A clustered stream's reads may come from a replica that lags; the cache stands for it
    # here: "not cordoned yet" is judged on an older node than the leader holds.
    await client.send("Node", "apply", {"manifest": node("n1")})
    lagging = AggregateRepository(store)
    await lagging.load(N1)
    await decide_and_append(AggregateRepository(store), [N1], cordon(N1, "other", []), attempts=1)
    seen: list[bool] = []

    async def uncordon_only_if_cordoned(attempt: Attempt) -> Append:
        seen.append(attempt.fresh)
        loaded = attempt[N1]
        assert isinstance(loaded.aggregate, Node)
        if not loaded.aggregate.unschedulable:
            raise InvalidTransition("n1 is not cordoned")
        loaded.aggregate.uncordon(reason="", at=timestamp_from_ns(time.time_ns()))
        return Append(changes=[loaded], provenance=provenance("uncordon"))

    decided = await decide_and_append(lagging, [N1], uncordon_only_if_cordoned, attempts=1)
    assert seen == [False, True]
    assert decided.written is not None and [t for t, _ in decided.written] == ["NodeUncordoned"]
    # Judged on the leader's state and refused again: the refusal stands, once checked.
    seen.clear()
    with pytest.raises(InvalidTransition):
        await decide_and_append(lagging, [N1], uncordon_only_if_cordoned, attempts=1)
    assert seen == [False]


async def test_a_load_after_expect_is_at_least_as_new_as_the_event_expected(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    lagging = AggregateRepository(store)
    first = await lagging.load(N1)
    await decide_and_append(AggregateRepository(store), [N1], cordon(N1, "other", []), attempts=1)
    newest = await store.leader_last_seq(N1.subject)
    assert newest > first.last_seq
    assert (await lagging.load(N1)).last_seq == first.last_seq  # cached, as before
    lagging.expect(N1, newest)
    loaded = await lagging.load(N1)
    assert loaded.last_seq == newest
    assert isinstance(loaded.aggregate, Node) and loaded.aggregate.unschedulable
    # Met: the floor is gone, and an unknown subject expected at a sequence is read, not
    # assumed new.
    unknown = AggregateRef("Node", "", "n9")
    lagging.expect(unknown, newest)
    assert (await lagging.load(unknown, assume_new=True)).last_seq == 0


async def test_an_aggregate_read_from_the_leader_equals_the_direct_read(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    await decide_and_append(AggregateRepository(store), [N1], cordon(N1, "a", []), attempts=1)
    direct, last = await store.read_aggregate(N1.subject)
    led, led_last = await store._read_from_leader(N1.subject, 0)
    assert [e.envelope.event_id for e in led] == [e.envelope.event_id for e in direct]
    assert led_last == last == await store.leader_last_seq(N1.subject)
    # Asked for more than the subject holds: the leader has nothing newer, the read ends.
    events, at = await store.read_aggregate(N1.subject, at_least=last + 100)
    assert (len(events), at) == (len(direct), last)
    assert await store.leader_last_seq(event_subject("Node", "", "absent")) == 0
    assert await store.read_aggregate(event_subject("Node", "", "absent"), at_least=5) == ([], 0)

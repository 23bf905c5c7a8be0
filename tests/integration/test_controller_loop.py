"""The shared controller loop against a real nats-server: what every controller built on it
relies on — bounded concurrency, one reconcile per key at a time, looking again when asked,
retrying a failure, remembering why a key is due, and acting only while the lease it holds (or
follows) is held."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from handlers.controller import ControllerLoop, FollowedLease, Leadership
from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.ownership import Key
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.leases import LeaderLease
from tests.integration.support import eventually

pytestmark = pytest.mark.integration


class Reconciles:
    """A reconcile that records every call (key, monotonic time) and how many overlap."""

    def __init__(self) -> None:
        self.calls: list[tuple[Key, float]] = []
        self.running = 0
        self.peak = 0
        self.release = asyncio.Event()
        self.release.set()
        self.answers: dict[Key, list[float | Exception]] = {}
        """Per key, what its next calls answer: look again in that many seconds, or raise."""

    async def __call__(self, key: Key) -> int | None:
        self.calls.append((key, time.monotonic()))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        answers = self.answers.get(key)
        answer = answers.pop(0) if answers else None
        if isinstance(answer, Exception):
            raise answer
        return None if answer is None else time.time_ns() + int(answer * 1e9)

    def times(self, key: Key) -> list[float]:
        return [at for k, at in self.calls if k == key]


def nothing(event: StoredEvent) -> Iterable[Key]:
    return ()


@contextlib.asynccontextmanager
async def running(loop: ControllerLoop[Key]) -> AsyncIterator[asyncio.Task[None]]:
    ready = asyncio.Event()
    task = asyncio.create_task(loop.run(ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def reconcile_tasks() -> int:
    return sum("_run_one" in repr(task.get_coro()) for task in asyncio.all_tasks())


async def test_at_most_max_in_flight_reconciles_run_and_the_other_keys_wait_as_keys(
    nc, projection: Projection[ClusterModel]
) -> None:
    keys = [("default", f"k{i}") for i in range(40)]
    reconcile = Reconciles()
    reconcile.release.clear()
    loop: ControllerLoop[Key] = ControllerLoop(
        role="test-bounded",
        projection=projection,
        leader=await LeaderLease.open(nc, "test-bounded"),
        reconcile=reconcile,
        keys_of=nothing,
        all_keys=lambda: keys,
        max_in_flight=4,
        period_seconds=0.1,
    )
    async with running(loop):
        await eventually(lambda: _true(reconcile.running == 4))
        await asyncio.sleep(0.3)
        assert reconcile.peak == 4 and len(reconcile.calls) == 4
        assert reconcile_tasks() == 4  # not a task per dirty key
        reconcile.release.set()
        await eventually(lambda: _true(len(reconcile.calls) == len(keys)))
        assert sorted(k for k, _ in reconcile.calls) == sorted(keys)
        assert reconcile.peak == 4 and loop.reconciled == len(keys)


async def test_a_key_is_looked_at_again_when_its_reconcile_asks_and_after_a_failure(
    nc, projection: Projection[ClusterModel]
) -> None:
    later, failing = ("default", "later"), ("default", "failing")
    reconcile = Reconciles()
    reconcile.answers[later] = [0.4]
    reconcile.answers[failing] = [RuntimeError("refused")]
    loop: ControllerLoop[Key] = ControllerLoop(
        role="test-recheck",
        projection=projection,
        leader=await LeaderLease.open(nc, "test-recheck"),
        reconcile=reconcile,
        keys_of=nothing,
        all_keys=lambda: [later, failing],
        period_seconds=0.1,
        retry_seconds=0.2,
    )
    async with running(loop):
        await eventually(lambda: _true(len(reconcile.times(later)) == 2))
        await eventually(lambda: _true(len(reconcile.times(failing)) == 2))
        await asyncio.sleep(0.5)
    first, again = reconcile.times(later)
    assert again - first >= 0.39  # the time it asked for, not before
    first, retried = reconcile.times(failing)
    assert retried - first >= 0.15
    assert loop.failures == 1 and len(reconcile.calls) == 4  # nothing asked for a third look


async def test_a_key_dirtied_while_reconciled_is_reconciled_again_after_and_its_cause_is_the_event(
    nc,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    reconcile = Reconciles()

    def pods(event: StoredEvent) -> Iterable[Key]:
        e = event.envelope
        return [(e.namespace, e.name)] if e.kind == "Pod" else []

    loop: ControllerLoop[Key] = ControllerLoop(
        role="test-redo",
        projection=projection,
        leader=await LeaderLease.open(nc, "test-redo"),
        reconcile=reconcile,
        keys_of=pods,
        all_keys=lambda: [],
        period_seconds=0.1,
    )
    metadata: dict[str, Any] = {"name": "p", "labels": {"v": "1"}}
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    async with running(loop):
        await eventually(lambda: _true(loop.leader.is_leader))
        reconcile.release.clear()
        created = await client.send("Pod", "create", {"manifest": manifest})
        await eventually(lambda: _true(reconcile.running == 1))
        metadata["labels"] = {"v": "2"}
        updated = await client.send("Pod", "apply", {"manifest": manifest})
        await projection.wait_for(max(updated.seqs))
        await asyncio.sleep(0.2)
        assert len(reconcile.calls) == 1  # never two at once for one key
        reconcile.release.set()
        await eventually(lambda: _true(len(reconcile.calls) == 2))
        cause = loop.seen_cause(("default", "p"))
        assert cause is not None and cause.causation_id == f"seq:{max(updated.seqs)}"
        assert cause.correlation_id and max(created.seqs) < max(updated.seqs)
        assert reconcile.peak == 1


async def test_a_loop_under_a_followed_lease_acts_only_while_its_holder_leads_and_never_resigns_it(
    nc, projection: Projection[ClusterModel]
) -> None:
    holder = await LeaderLease.open(nc, "test-holder", "holder")
    reconcile = Reconciles()
    followed: Leadership = FollowedLease(holder)
    loop: ControllerLoop[Key] = ControllerLoop(
        role="test-follower",
        projection=projection,
        leader=followed,
        reconcile=reconcile,
        keys_of=nothing,
        all_keys=lambda: [("default", "a")],
        period_seconds=0.05,
    )
    async with running(loop):
        await asyncio.sleep(0.3)
        assert reconcile.calls == []  # nobody leads
        assert await holder.try_lead()
        await eventually(lambda: _true(len(reconcile.calls) == 1))  # a new leader looks
        await holder.resign()
        await asyncio.sleep(0.3)
        assert await holder.try_lead()
        await eventually(lambda: _true(len(reconcile.calls) == 2))  # ... every time it leads
    # The loop stopped; the lease is still its holder's.
    assert holder.is_leader
    assert not await (await LeaderLease.open(nc, "test-holder", "other")).try_lead()
    await holder.resign()


async def _true(value: bool) -> bool:
    return value

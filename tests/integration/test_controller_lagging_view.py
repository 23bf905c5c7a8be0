"""A controller never decides on a read model that misses its own writes or what the log held
when it became leader, however long the model lags.

Why this exists: the chaos run (tests/e2e/test_chaos.py) once logged 499 ``PodCreated`` for a
deployment of 250. The replica-set controller waits for its creates to reach the cluster
projection before it counts the set again (Kubernetes' "expectations"), but that wait gave up
after 5 s and the next reconcile went ahead on the view without them: a projection held up
longer than that (its consumer on the nats-server that was killed is only noticed after 6 s of
silence) made the controller create the whole set a second time, then delete the surplus once
the view caught up. A new leader likewise went ahead when its wait for the log's end timed out.

Here the projection's follow is held (its events kept back, then folded in order) for longer
than that wait; the log must hold exactly one ``PodCreated`` per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from handlers.gateway import Gateway
from handlers.replicaset_controller import ReplicaSetController
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.subjects import event_filter
from tests.integration.support import eventually
from tests.integration.test_pod_creation_rate import replica_set

pytestmark = pytest.mark.integration

HELD_S = 6.5
"""Longer than a projection's default wait (``Projection.wait_for``: 5 s)."""


class HeldPods:
    """Keeps the pods' events a projection's follow delivers while :attr:`holding`, and folds
    them, in order, on :meth:`release` (as a projection whose consumer went silent and was
    started again)."""

    def __init__(self, projection: Projection[ClusterModel]) -> None:
        self._projection = projection
        self.holding = False
        self.held: list[StoredEvent] = []
        # ``follow`` subscribes with ``self._apply``: the instance's attribute wins.
        projection._apply = self  # type: ignore[method-assign]

    def __call__(self, event: StoredEvent) -> None:
        if self.held or (self.holding and event.envelope.kind == "Pod"):
            self.held.append(event)  # everything after a held event waits too: order is kept
        else:
            Projection._apply(self._projection, event)

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for event in held:
            Projection._apply(self._projection, event)


@contextlib.asynccontextmanager
async def held_projection(
    store: EventStore, *, until_seq: int | None = None, holding: bool = False
) -> Any:
    projection = Projection(ClusterModel(), store)
    await projection.catch_up(until_seq=until_seq)
    held = HeldPods(projection)
    held.holding = holding
    await projection.follow()
    try:
        yield projection, held
    finally:
        await projection.stop()


async def pods_created(store: EventStore) -> list[str]:
    created: list[str] = []
    await store.replay(
        lambda e: created.append(e.envelope.name) if e.envelope.type == "PodCreated" else None,
        filter_subject=event_filter("Pod"),
    )
    return created


@contextlib.asynccontextmanager
async def controller_running(nc: Any, projection: Projection[ClusterModel]) -> Any:
    controller = await ReplicaSetController.create(
        nc, projection, period_seconds=0.1, retry_seconds=0.2
    )
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def live_pods(projection: Projection[ClusterModel]) -> int:
    return sum(1 for _ in projection.model.list("Pod", "default"))


async def test_a_replica_set_is_not_counted_again_until_its_creates_are_in_the_view(
    nc: Any, gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    async with held_projection(store) as (projection, held), controller_running(nc, projection):
        held.holding = True
        await client.send("ReplicaSet", "apply", {"manifest": replica_set("default", 3)})
        await eventually(lambda: _true(len(held.held) >= 3), timeout=15)
        await asyncio.sleep(HELD_S)
        held.release()
        await eventually(lambda: _true(live_pods(projection) == 3), timeout=15)
        await asyncio.sleep(1.0)  # time for a surplus to be made, or removed
        created = await pods_created(store)
        assert len(created) == 3, created
        assert live_pods(projection) == 3


async def test_a_new_leader_waits_for_the_log_it_won_the_lease_over(
    nc: Any, gateway: Gateway, client: CommandClient, store: EventStore,
    projection: Projection[ClusterModel],
) -> None:  # fmt: skip
    applied = await client.send("ReplicaSet", "apply", {"manifest": replica_set("default", 3)})
    async with controller_running(nc, projection):
        await eventually(lambda: _true(live_pods(projection) == 3), timeout=15)
    assert len(await pods_created(store)) == 3
    # A second controller (a restarted `up`) whose model has the replica set but whose
    # follow is held before the pods it already has: it must not count the set until it
    # has caught up with the log it became leader over.
    async with held_projection(store, until_seq=max(applied.seqs), holding=True) as (
        lagging,
        held,
    ):
        await asyncio.sleep(0.5)  # the follow delivers the pods' events: they are held
        async with controller_running(nc, lagging):
            await asyncio.sleep(HELD_S)
            held.release()
            await eventually(lambda: _true(live_pods(lagging) == 3), timeout=15)
            await asyncio.sleep(1.0)
        created = await pods_created(store)
        assert len(created) == 3, created


async def _true(value: bool) -> bool:
    return value

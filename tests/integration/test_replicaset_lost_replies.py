"""A pod create whose answer is lost (a NATS outage) is sent again under the same name and
idempotency key before the replica set is counted again: the set never gets a second pod for
the same slot, even for a while, when the first create is applied late.

Why this exists: the chaos run (tests/e2e/test_chaos.py) saw 251 ``PodCreated`` for a set of
250 after a nats-server was killed: the controller's create timed out, the command was applied
later, and meanwhile the controller had counted 249 and created another pod under a new name.
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
from streams.eventstore import EventStore
from streams.subjects import event_filter
from tests.integration.support import eventually
from tests.integration.test_pod_creation_rate import replica_set

pytestmark = pytest.mark.integration


class LateFirstCreate(CommandClient):
    """The first pod create is answered with a timeout at once and delivered a second later
    (as a command held up in a server that died), every other command as usual."""

    delayed: list[asyncio.Task[Any]]

    async def send(self, kind: str, verb: str, body: Any, **kwargs: Any) -> Any:
        if kind == "Pod" and verb == "create" and not self.delayed:

            async def later() -> None:
                await asyncio.sleep(1.0)
                await CommandClient.send(self, kind, verb, body, **kwargs)

            self.delayed.append(asyncio.create_task(later()))
            raise TimeoutError("nats: timeout")
        return await CommandClient.send(self, kind, verb, body, **kwargs)


async def test_a_create_answered_late_never_makes_a_second_pod_for_its_slot(
    nc: Any, gateway: Gateway, client: CommandClient, store: EventStore,
    projection: Projection[ClusterModel],
) -> None:  # fmt: skip
    controller = await ReplicaSetController.create(nc, projection, period_seconds=0.1,
                                                   retry_seconds=0.2)  # fmt: skip
    late = LateFirstCreate(nc, actor="system:replicaset-controller")
    late.delayed = []
    controller._commands = late
    task = asyncio.create_task(controller.run())
    try:
        await client.send("ReplicaSet", "apply", {"manifest": replica_set("default", 1)})

        async def one_pod_after_the_late_create() -> bool:
            return bool(late.delayed) and late.delayed[0].done() and pod_count() == 1

        def pod_count() -> int:
            return sum(1 for _ in projection.model.list("Pod", "default"))

        await eventually(one_pod_after_the_late_create, timeout=15)
        await asyncio.sleep(0.5)  # time for a surplus pod to be made, then removed
        created: list[str] = []
        await store.replay(
            lambda e: created.append(e.envelope.name)
            if e.envelope.type == "PodCreated" else None,
            filter_subject=event_filter("Pod"),
        )  # fmt: skip
        assert len(created) == 1, created
    finally:
        task.cancel()
        for pending in (task, *late.delayed):
            with contextlib.suppress(BaseException):
                await pending

"""The query service: read-your-writes, and lists larger than one NATS message come in pages."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from handlers.gateway import Gateway
from handlers.simnodes import SimNodeSpec, SimulatedNodes
from ops.client import Session
from projections.cluster import ClusterModel
from projections.query import PAGE_SIZE, QueryService
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore

pytestmark = pytest.mark.integration


async def test_a_list_of_many_objects_arrives_whole_across_pages(
    nc, store: EventStore, gateway: Gateway
) -> None:
    projection = Projection(ClusterModel(), store)
    await projection.catch_up()
    await projection.follow()
    ready = asyncio.Event()
    serving = asyncio.create_task(QueryService(nc, projection).run(ready))
    await ready.wait()
    try:
        count = 2 * PAGE_SIZE + 17
        simulated = await SimulatedNodes.create(nc, SimNodeSpec(prefix="n"), count)
        await simulated.register()
        session = Session(nc, store, CommandClient(nc, actor="test"))
        nodes = await session.query("Node")
        assert len(nodes) == count
        assert len({n["name"] for n in nodes}) == count
        assert [n["name"] for n in nodes] == sorted(n["name"] for n in nodes)
        # read-your-writes: a query right after an accepted command sees it
        await session.commands.send("Node", "delete", {"name": "n-5"})
        assert len(await session.query("Node")) == count - 1
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await projection.stop()

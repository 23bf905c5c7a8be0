"""A projection never trusts a snapshot the log does not back: after the stream was deleted
and created again, or truncated by a ``max_msgs`` limit, a restarted projection discards its
snapshot, shows only what the log holds, sees new writes, and ``audit verify`` says why."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client

from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.definitions import FLEET_STREAM, ensure_streams, open_snapshots
from streams.eventstore import EventStore
from streams.integrity import verify_log
from tests.integration.support import cli

pytestmark = pytest.mark.integration


def namespace(name: str) -> dict[str, Any]:
    return {"manifest": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}}


def names(projection: Projection[ClusterModel]) -> set[str]:
    return {record.name for record in projection.model.list("Namespace")}


async def snapshot_of(nc: Client, store: EventStore, client: CommandClient, count: int) -> int:
    """Create ``count`` namespaces, snapshot the cluster model; its position."""
    for index in range(count):
        await client.send("Namespace", "apply", namespace(f"ns-{index}"))
    live = Projection(ClusterModel(), store)
    await live.catch_up()
    await live.save_snapshot(await open_snapshots(nc))
    return live.position


async def restarted(nc: Client, store: EventStore) -> tuple[Projection[ClusterModel], bool]:
    """A projection started as ``fleetlog up`` starts one: snapshot (if trusted), then the log."""
    projection = Projection(ClusterModel(), store)
    loaded = await projection.load_snapshot(await open_snapshots(nc))
    await projection.catch_up()
    return projection, loaded


async def test_a_snapshot_of_a_stream_deleted_and_created_again_is_discarded(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient, nats_server: Any
) -> None:
    await snapshot_of(nc, store, client, 3)
    _, loaded = await restarted(nc, store)
    assert loaded  # the log backs it

    await nc.jetstream().delete_stream(FLEET_STREAM)
    await ensure_streams(nc)
    verified = await cli(nats_server.url, "audit", "verify")
    assert verified.exit_code == 1
    assert "SNAPSHOT  the cluster snapshot is not backed by the log: the stream was created " in (
        verified.output
    )

    projection, loaded = await restarted(nc, store)
    assert not loaded and names(projection) == set() and projection.position == 0
    await client.send("Namespace", "apply", namespace("fresh"))
    await projection.follow()
    try:
        assert await projection.wait_for_log_end()
        assert names(projection) == {"fresh"}
    finally:
        await projection.stop()


async def test_a_snapshot_of_events_a_max_msgs_limit_removed_is_discarded(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient, nats_server: Any
) -> None:
    position = await snapshot_of(nc, store, client, 6)
    js = nc.jetstream()
    config = (await js.stream_info(FLEET_STREAM)).config
    config.max_msgs = 3
    await js.update_stream(config)
    first = position - 2
    assert (await store.stream_info())["state"]["first_seq"] == first

    projection, loaded = await restarted(nc, store)
    assert not loaded
    assert names(projection) == {"ns-3", "ns-4", "ns-5"}  # the three events the log holds
    report = await verify_log(store)
    assert report.missing_before == first and report.breaks == [] and not report.ok
    verified = await cli(nats_server.url, "audit", "verify")
    assert verified.exit_code == 1
    assert f"MISSING  events 1..{first - 1} are not in the log" in verified.output
    assert f"the log starts at sequence {first}: events 1..{first - 1} the snapshot folded" in (
        verified.output
    )

    await client.send("Namespace", "apply", namespace("fresh"))
    await projection.follow()
    try:
        assert await projection.wait_for_log_end()
        assert "fresh" in names(projection)
    finally:
        await projection.stop()
    # A snapshot taken now is of what the log holds: trusted on the next start.
    await projection.save_snapshot(await open_snapshots(nc))
    _, loaded = await restarted(nc, store)
    assert loaded

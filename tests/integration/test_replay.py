"""Replay determinism: whatever commands were accepted, folding the log live, from zero, or from
a snapshot plus the tail gives the same cluster state (compared by digest)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient, CommandFailed
from streams.connection import connect
from streams.definitions import SNAPSHOT_BUCKET, ensure_streams
from streams.eventstore import EventStore
from streams.server import EmbeddedServer, free_port

pytestmark = pytest.mark.integration

NAMES = ["alpha", "beta", "gamma"]


def deployment(name: str, replicas: int, image: str, tier: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"tier": tier}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def pod(name: str, image: str, tier: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"tier": tier}},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


names = st.sampled_from(NAMES)
images = st.sampled_from(["nginx:1", "nginx:2", "redis:7"])
tiers = st.sampled_from(["front", "back"])
commands = st.one_of(
    st.builds(
        lambda n, r, i, t: ("Deployment", "apply", {"manifest": deployment(n, r, i, t)}),
        names,
        st.integers(0, 5),
        images,
        tiers,
    ),
    st.builds(lambda n, i, t: ("Pod", "apply", {"manifest": pod(n, i, t)}), names, images, tiers),
    st.builds(
        lambda n, r: ("Deployment", "scale", {"name": n, "replicas": r}), names, st.integers(0, 9)
    ),
    st.builds(
        lambda k, n: (k, "delete", {"name": n}),
        st.sampled_from(["Pod", "Deployment", "Node"]),
        names,
    ),
    st.builds(lambda n: ("Node", "apply", {"manifest": node(n)}), names),
    st.builds(
        lambda v, n: ("Node", v, {"name": n}), st.sampled_from(["cordon", "uncordon"]), names
    ),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    embedded = EmbeddedServer(data_dir=Path(tmp_path_factory.mktemp("replay")), port=free_port())
    asyncio.run(embedded.start())
    try:
        yield embedded.url
    finally:
        asyncio.run(embedded.stop())


async def run_scenario(url: str, sequence: list[tuple[str, str, dict[str, Any]]]) -> None:
    nc = await connect(url, name="replay-test")
    await ensure_streams(nc)
    try:
        async with EventStore(nc) as store:
            gateway = await Gateway.create(nc, store)
            ready = asyncio.Event()
            serving = asyncio.create_task(gateway.run(ready))
            await ready.wait()
            live = Projection(ClusterModel(), store)
            await live.catch_up()
            await live.follow()
            client = CommandClient(nc, actor="property")
            await client.send(
                "Namespace",
                "apply",
                {
                    "manifest": {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": "default"},
                    }
                },
            )
            middle = len(sequence) // 2
            snapshots = await nc.jetstream().object_store(SNAPSHOT_BUCKET)
            for index, (kind, verb, body) in enumerate(sequence):
                with contextlib.suppress(CommandFailed):
                    await client.send(kind, verb, body)
                if index == middle:
                    assert await live.wait_for_log_end()
                    await live.save_snapshot(snapshots)
            assert await live.wait_for_log_end()
            replayed = await Projection.replayed(ClusterModel(), store)
            assert replayed.position == live.position
            assert replayed.model.digest() == live.model.digest()
            resumed = Projection(ClusterModel(), store)
            assert await resumed.load_snapshot(snapshots)
            await resumed.catch_up()
            assert resumed.model.digest() == live.model.digest()
            await live.stop()
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    finally:
        await nc.close()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=st.lists(commands, min_size=1, max_size=25))
def test_live_state_equals_replayed_state(
    server: str, sequence: list[tuple[str, str, dict[str, Any]]]
) -> None:
    asyncio.run(run_scenario(server, sequence))


async def test_replay_to_a_sequence_stops_exactly_there(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    outcomes = []
    for replicas in range(1, 6):
        outcomes.append(
            await client.send(
                "Deployment", "apply", {"manifest": deployment("web", replicas, "nginx:1", "front")}
            )
        )
    at_third = outcomes[2].seqs[-1]
    model = (await Projection.replayed(ClusterModel(), store, until_seq=at_third)).model
    record = model.get("Deployment", "default", "web")
    assert (
        record is not None
        and record.manifest["spec"]["replicas"] == 3
        and record.last_seq == at_third
    )


async def test_replay_to_an_instant_stops_before_later_events(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    import time
    from datetime import UTC, datetime

    await client.send("Deployment", "apply", {"manifest": deployment("web", 1, "nginx:1", "front")})
    await asyncio.sleep(0.05)
    instant = datetime.fromtimestamp(time.time(), tz=UTC)
    await asyncio.sleep(0.05)
    await client.send("Deployment", "scale", {"name": "web", "replicas": 7})
    then = (await Projection.replayed(ClusterModel(), store, until=instant)).model
    now = (await Projection.replayed(ClusterModel(), store)).model
    assert then.get("Deployment", "default", "web").manifest["spec"]["replicas"] == 1
    assert now.get("Deployment", "default", "web").manifest["spec"]["replicas"] == 7


async def test_only_a_long_catch_up_freezes_the_heap(
    store: EventStore, gateway: Gateway, client: CommandClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from projections import runtime

    for replicas in range(1, 4):
        await client.send(
            "Deployment", "apply", {"manifest": deployment("web", replicas, "nginx:1", "front")}
        )
    gc.unfreeze()
    try:
        short = Projection(ClusterModel(), store)
        await short.catch_up()
        assert short.model.events_applied >= 3 and gc.get_freeze_count() == 0
        assert gc.isenabled()
        monkeypatch.setattr(runtime, "FREEZE_AFTER_EVENTS", 3)
        long = Projection(ClusterModel(), store)
        await long.catch_up()
        assert gc.get_freeze_count() > 0 and gc.isenabled()
    finally:
        gc.unfreeze()


async def test_an_event_appended_right_after_a_catch_ups_replay_is_still_followed(
    store: EventStore, gateway: Gateway, client: CommandClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event appended between the end of the replay and the start of the follow is
    delivered by the follow: the position the catch-up ends at is the log's end as the replay
    began, never one read later (which skipped such an event for good)."""
    await client.send("Deployment", "apply", {"manifest": deployment("web", 1, "nginx:1", "a")})
    replay = store.replay

    async def replay_then_someone_writes(*args: Any, **kwargs: Any) -> int:
        last = await replay(*args, **kwargs)
        await client.send(
            "Deployment", "apply", {"manifest": deployment("late", 1, "nginx:1", "b")}
        )
        return last

    monkeypatch.setattr(store, "replay", replay_then_someone_writes)
    live = Projection(ClusterModel(), store)
    await live.catch_up()
    monkeypatch.setattr(store, "replay", replay)
    await live.follow()
    try:
        assert await live.wait_for_log_end()
        assert live.model.get("Deployment", "default", "late") is not None
    finally:
        await live.stop()

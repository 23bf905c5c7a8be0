"""fleetlog in a named JetStream domain, reached through a leaf node, as federation will run it.

A hub server runs JetStream in domain ``hub``; a leaf server with JetStream of its own (domain
``leaf``) connects to it. fleetlog connects to the *leaf* with ``FLEETLOG_JS_DOMAIN=hub``: every
request with the default ``$JS.API`` prefix would be answered by the leaf's own JetStream, so
the streams appearing on the hub and not on the leaf, the appends, direct gets and the bulk
replay working, show that every path goes through the domain's prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from streams import jsapi, logreader
from streams.connection import connect
from streams.definitions import (
    AUDIT_STREAM,
    FLEET_STREAM,
    LOGS_STREAM,
    METRICS_STREAM,
    SNAPSHOT_BUCKET,
    STREAM_NOT_FOUND,
    StreamSetupError,
    ensure_streams,
    open_snapshots,
)
from streams.eventstore import EventStore, Write
from streams.leases import LeaderLease, NodeLeases
from streams.logreader import BulkRead
from streams.server import EmbeddedServer, free_port
from streams.subjects import ALL_EVENTS, event_subject
from tests.conftest import RunningServer, StartServer
from tests.integration.support import event_bytes

pytestmark = pytest.mark.integration

STREAMS = (FLEET_STREAM, AUDIT_STREAM, LOGS_STREAM, METRICS_STREAM, f"OBJ_{SNAPSHOT_BUCKET}")


@pytest.fixture
async def hub_and_leaf(start_server: StartServer) -> tuple[EmbeddedServer, EmbeddedServer]:
    leaf_port = free_port()
    hub = await start_server(
        "hub", domain="hub", extra_config=f'leafnodes {{ listen: "127.0.0.1:{leaf_port}" }}\n'
    )
    leaf = await start_server(
        "leaf",
        domain="leaf",
        extra_config=f'leafnodes {{ remotes: [ {{ url: "nats://127.0.0.1:{leaf_port}" }} ] }}\n',
    )
    return hub, leaf


@contextlib.asynccontextmanager
async def client(url: str, **options: str) -> AsyncIterator[Client]:
    nc = await connect(url, name="domain-test", **options)
    try:
        yield nc
    finally:
        await nc.close()


async def hub_reachable(nc: Client) -> None:
    """Wait until the leaf node has joined the hub (its JetStream answers through the leaf)."""
    api = jsapi.of(nc)
    for _ in range(200):
        with contextlib.suppress(Exception):
            if (await api.call(f"{api.prefix}.INFO", timeout=0.5)).get("domain") == "hub":
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the leaf node did not reach the hub's JetStream")


def pod_event(name: str, version: int) -> bytes:
    event_type = "PodCreated" if version == 1 else "PodReady"
    return event_bytes(name, version, event_type=event_type, payload={"manifest": {}, "uid": "u"})


async def test_setup_appends_reads_and_replays_go_to_the_configured_domain(
    hub_and_leaf: tuple[EmbeddedServer, EmbeddedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, leaf = hub_and_leaf
    monkeypatch.setenv(jsapi.ENV_DOMAIN, "hub")
    async with client(leaf.url) as nc, client(hub.url, domain="") as on_hub:
        assert jsapi.domain_of(nc) == "hub"
        await hub_reachable(nc)
        await ensure_streams(nc)
        await ensure_streams(nc)  # again: the existing streams are found in the same domain

        for name in STREAMS:
            assert "error" not in await jsapi.of(on_hub).stream_info(name), name
            mine = await jsapi.JetStreamApi(nc, None).stream_info(name)  # the leaf's own domain
            assert mine["error"]["err_code"] == STREAM_NOT_FOUND, name
        assert (await open_snapshots(nc)).__class__.__name__ == "ObjectStore"

        async with EventStore(nc) as store:
            assert store.subjects.direct_get == "$JS.hub.API.DIRECT.GET.FLEET"
            web = event_subject("Pod", "default", "web")
            first = await store.append([Write(web, [pod_event("web", 1)], 0)], token="w1")
            second = await store.append(
                [Write(web, [pod_event("web", 2), pod_event("web", 3)], first[-1])], token="w2"
            )
            others = [
                (
                    [Write(event_subject("Pod", "default", f"p{i}"), [pod_event(f"p{i}", 1)], 0)],
                    f"p{i}",
                )
                for i in range(3000)
            ]
            assert all(isinstance(r, list) for r in await store.append_many(others))

            # Reading one aggregate: batched direct gets, a single one, the last sequence.
            events = await store.read_subject(web)
            assert [e.seq for e in events] == [*first, *second]
            assert [e.envelope.version for e in events] == [1, 2, 3]
            assert await store.last_seq(web) == second[-1]
            found = await store.get_event(second[0])
            assert found is not None and found.subject == web

            # The bulk replay (the protocol-level reader, through the leaf) and nats-py's
            # ordered consumer read the same log.
            dial = store._bulk_read_dial()
            assert dial is not None
            bulk: list[int] = []
            await store.replay(lambda event: bulk.append(event.seq))
            store.bulk_reads = False
            ordered: list[int] = []
            await store.replay(lambda event: ordered.append(event.seq))
            assert bulk == ordered == list(range(1, 3004))
            assert nc not in logreader._unavailable

            direct: list[int] = []
            await BulkRead(
                dial,
                store.subjects,
                lambda seq, *_: direct.append(seq),
                filter_subject=ALL_EVENTS,
                from_seq=1,
                from_ns=0,
                target=3003,
                until_ns=None,
            ).run()
            assert direct == bulk

        # The event store of a client connected to the hub itself sees the same log.
        async with EventStore(on_hub) as hub_store:
            assert [e.seq for e in await hub_store.read_subject(web)] == [*first, *second]


async def test_leases_use_the_domain_of_their_connection(start_server: StartServer) -> None:
    hub = await start_server("hub", domain="hub")
    async with client(hub.url, domain="hub") as nc:
        lease = await LeaderLease.open(nc, "role", "me")
        assert await lease.try_lead()
        leases = await NodeLeases.open(nc)
        await leases.renew("node-a", 42)
        await leases.follow()
        for _ in range(100):
            if leases.renewed_ns.get("node-a") == 42:
                break
            await asyncio.sleep(0.02)
        assert leases.renewed_ns == {"node-a": 42}
        await leases.stop()


async def test_a_domain_nothing_serves_is_a_clear_error(nats_server: RunningServer) -> None:
    url = nats_server.url
    async with client(url, domain="elsewhere") as nc:
        with pytest.raises(
            StreamSetupError, match=r"no JetStream answers \S+ \(domain 'elsewhere'\)"
        ):
            await ensure_streams(nc)
    with pytest.raises(ValueError, match="not a JetStream domain"):
        await connect(url, name="bad", domain="a.b")

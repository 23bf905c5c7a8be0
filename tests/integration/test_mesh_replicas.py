"""Mesh-push handler replicas sharing the proxies (real Envoy, real nats-server): each proxy's
stream is served by the handler it connected to, every handler builds from the log on its own
projection, so a change reaches each proxy exactly once, and each proxy's status key belongs to
the handler holding its stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from pathlib import Path

import pytest
from nats.aio.client import Client

from core.mesh.push import ProxyStatus, node_id
from handlers.gateway import Gateway
from handlers.mesh.push import MeshPush, type_status
from handlers.mesh.status import StatusWriter, read_statuses, status_key
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.definitions import mesh_status_bucket, open_key_value
from streams.eventstore import EventStore
from streams.server import free_port
from tests.integration.meshkit import NS, apply, envoy, mesh_push, until
from tests.integration.test_mesh_push import manifests, virtual_service
from tests.mesh_scenario import http_backends

pytestmark = pytest.mark.integration

SHORTS = ("CDS", "EDS", "LDS", "RDS")


def _node(index: int) -> str:
    return node_id(kind="gateway", ip=f"127.0.0.{index + 2}", pod=f"ingress-{index}", namespace=NS)


def _synced(push: MeshPush, node: str) -> bool:
    return all(
        (t := type_status(push, node, short)).sent and t.state() == "SYNCED" for short in SHORTS
    )


async def test_two_handlers_share_the_proxies_and_a_change_reaches_each_once(
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    store: EventStore,
    nc: Client,
    tmp_path: Path,
) -> None:
    port = free_port()
    with http_backends(tmp_path, ("a", "b")) as backends:
        for manifest in manifests(backends, port, (80, 20)):
            await apply(client, manifest)
        # The second replica follows the log on a projection of its own, as another `up` would.
        other = Projection(ClusterModel(), store)
        await other.catch_up()
        await other.follow()
        nodes = [_node(i) for i in range(4)]
        try:
            async with (
                mesh_push(projection, nc, handler_id="replica-a") as first,
                mesh_push(other, nc, handler_id="replica-b") as second,
            ):
                envoys = contextlib.ExitStack()
                with envoys:
                    # Proxies split between the replicas: 0 and 1 on the first, 2 and 3 on the second.
                    holder = {node: first if i < 2 else second for i, node in enumerate(nodes)}
                    for i, node in enumerate(nodes):
                        envoys.enter_context(
                            envoy(tmp_path, ads_port=holder[node].port, node=node,
                                  labels={"istio": "ingressgateway"}, bind=f"127.0.0.{i + 2}")
                        )  # fmt: skip
                    await until(lambda: all(_synced(holder[n], n) for n in nodes), timeout=120)
                    before = first.sent + second.sent
                    routes = {n: type_status(holder[n], n, "RDS").acked for n in nodes}

                    await apply(client, virtual_service((20, 80)))
                    await until(
                        lambda: all(
                            type_status(holder[n], n, "RDS").acked not in ("", routes[n])
                            and _synced(holder[n], n)
                            for n in nodes
                        ),
                        timeout=120,
                    )
                    # Both replicas built the same routes from the log: same version everywhere.
                    assert len({type_status(holder[n], n, "RDS").acked for n in nodes}) == 1
                    # Let any late (double) push show before counting.
                    await asyncio.sleep(1.0)
                    pushed = (first.sent + second.sent) - before
                    assert pushed == Counter({(n, "RDS"): 1 for n in nodes}), pushed
                    assert all(first.sent[(n, s)] == 0 for n in nodes[2:] for s in SHORTS)
                    assert all(second.sent[(n, s)] == 0 for n in nodes[:2] for s in SHORTS)

                    # Each proxy's status is written by the replica holding its stream.
                    async def owned() -> bool:
                        shown = {s.id: s for s in await read_statuses(nc)}
                        return all(
                            n in shown
                            and shown[n].connected
                            and shown[n].handler == holder[n].handler_id
                            and shown[n].types["RDS"].acked
                            == type_status(holder[n], n, "RDS").acked
                            for n in nodes
                        )

                    await until(owned)
        finally:
            await other.stop()


async def test_a_replica_that_lost_a_proxy_does_not_mark_it_disconnected_under_its_new_holder(
    nc: Client,
) -> None:
    node = _node(0)
    new_holder = await StatusWriter.open(nc)
    old_holder = await StatusWriter.open(nc)
    # The proxy reconnected to replica b, which reports it; replica a's report of the stream it
    # lost is written after.
    new_holder.changed(ProxyStatus(id=node, name="ingress-0.default", kind="gateway",
                                   connected=True, handler="replica-b"))  # fmt: skip
    await new_holder.flush()
    old_holder.changed(ProxyStatus(id=node, name="ingress-0.default", kind="gateway",
                                   connected=False, handler="replica-a"))  # fmt: skip
    await old_holder.flush()
    kv = await open_key_value(nc, mesh_status_bucket())
    stored = json.loads((await kv.get(status_key(node))).value)
    assert stored["connected"] is True and stored["handler"] == "replica-b"

    # Its own proxy, once gone, it does report disconnected.
    other = _node(1)
    for connected in (True, False):
        old_holder.changed(ProxyStatus(id=other, name="ingress-1.default", kind="gateway",
                                       connected=connected, handler="replica-a"))  # fmt: skip
        await old_holder.flush()
    assert json.loads((await kv.get(status_key(other))).value)["connected"] is False

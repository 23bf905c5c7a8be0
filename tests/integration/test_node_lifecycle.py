"""The node lifecycle controller against a real nats-server: heartbeats in, Ready transitions
with Kubernetes taints out, one leader among several controllers."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from core.nodes.status import ready_status
from handlers.gateway import Gateway
from handlers.node_lifecycle import NodeLifecycleController
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.cancellation import checkpoint
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.leases import LeaderLease, NodeLeases
from streams.repository import AggregateRepository
from streams.subjects import event_subject
from tests.integration.support import eventually

pytestmark = pytest.mark.integration


async def node_events(store: EventStore, name: str) -> list[tuple[str, dict]]:
    return [
        (e.envelope.type, e.envelope.payload)
        for e in await store.read_subject(event_subject("Node", "", name))
        if e.envelope.type in ("NodeReady", "NodeNotReady")
    ]


async def test_missed_heartbeats_make_a_node_unknown_with_unreachable_taints_and_recovery_clears_them(
    nc,
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    await client.send(
        "Node",
        "apply",
        {"manifest": {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}},
    )
    heartbeats = await NodeLeases.open(nc)
    await heartbeats.renew("n1", time.time_ns())
    controller = await NodeLifecycleController.create(
        nc,
        AggregateRepository(store),
        projection,
        grace_seconds=0.6,
        startup_grace_seconds=0.6,
        period_seconds=0.05,
    )
    running = asyncio.create_task(controller.run())
    try:

        async def became(status: str) -> bool:
            events = await node_events(store, "n1")
            return bool(events) and events[-1][1]["status"] == status

        async def heartbeat() -> None:
            while True:
                checkpoint()  # renew() may swallow the cancel on Python 3.11
                await heartbeats.renew("n1", time.time_ns())
                await asyncio.sleep(0.1)

        beating = asyncio.create_task(heartbeat())
        await eventually(lambda: became("True"))
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await eventually(lambda: became("Unknown"))  # no heartbeat for > 0.6 s
        events = await node_events(store, "n1")
        not_ready = events[-1][1]
        assert events[-1][0] == "NodeNotReady" and not_ready["reason"] == "NodeStatusUnknown"
        assert not_ready["grace_seconds"] == 0.6 and not_ready["last_heartbeat_ns"] is not None
        await projection.wait_for_log_end()
        taints = projection.model.get("Node", "", "n1").manifest["spec"]["taints"]
        assert sorted((t["key"], t["effect"]) for t in taints) == [
            ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/unreachable", "NoSchedule"),
        ]
        beating = asyncio.create_task(heartbeat())
        await eventually(lambda: became("True"))
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await projection.wait_for_log_end()
        assert "taints" not in projection.model.get("Node", "", "n1").manifest["spec"]
        history = await store.read_subject(event_subject("Node", "", "n1"))
        assert {e.envelope.actor for e in history[1:]} == {"system:node-lifecycle-controller"}
        # Heartbeats live outside the log: the cause is stated in words (a root for `why`).
        causes = [(e.envelope.type, e.envelope.causation_id) for e in history[1:]]
        assert [t for t, _ in causes] == ["NodeReady", "NodeNotReady", "NodeReady"]
        assert causes[0][1].startswith("heartbeat at ")
        assert causes[1][1].startswith("missed heartbeats: last at ")
        assert causes[1][1].endswith(", grace 0.6s")
        assert causes[2][1].startswith("heartbeat at ")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_only_the_leader_among_several_controllers_records_transitions(
    nc,
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    for name in ("a", "b", "c"):
        await client.send(
            "Node",
            "apply",
            {"manifest": {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}},
        )
    heartbeats = await NodeLeases.open(nc)
    for name in ("a", "b", "c"):
        await heartbeats.renew(name, time.time_ns())
    controllers = [
        await NodeLifecycleController.create(
            nc, AggregateRepository(store), projection, grace_seconds=30, period_seconds=0.05
        )
        for _ in range(3)
    ]
    tasks = [asyncio.create_task(c.run()) for c in controllers]
    try:

        async def all_ready() -> bool:
            return all([await node_events(store, name) for name in ("a", "b", "c")])

        await eventually(all_ready)
        await asyncio.sleep(0.5)  # several more passes by every controller
        for name in ("a", "b", "c"):
            assert [t for t, _ in await node_events(store, name)] == ["NodeReady"]
        assert sum(c.leader.is_leader for c in controllers) == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_simulated_nodes_register_with_capacity_become_ready_and_go_unknown_when_stopped(
    nc, store: EventStore, gateway: Gateway, projection: Projection[ClusterModel]
) -> None:
    from handlers.simnodes import SimNodeSpec, SimulatedNodes

    nodes = await SimulatedNodes.create(
        nc, SimNodeSpec(prefix="kwok", cpu="8", memory="64Gi", zones=2), 20
    )
    await nodes.register()
    await nodes.register()  # idempotent: a restarted simulator changes nothing
    keeping_alive = asyncio.create_task(nodes.keep_alive(0.1))
    controller = await NodeLifecycleController.create(
        nc, AggregateRepository(store), projection, grace_seconds=0.8, period_seconds=0.05
    )
    running = asyncio.create_task(controller.run())
    try:
        await projection.wait_for_log_end()
        node = projection.model.get("Node", "", "kwok-7")
        assert node.manifest["status"]["allocatable"] == {
            "cpu": "8",
            "memory": "64Gi",
            "pods": "110",
        }
        assert node.manifest["metadata"]["labels"]["topology.kubernetes.io/zone"] == "zone-1"

        async def ready_count(status: str) -> bool:
            await projection.wait_for_log_end()
            states = [ready_status(n.manifest) for n in projection.model.list("Node")]
            return states.count(status) == 20

        await eventually(lambda: ready_count("True"))
        keeping_alive.cancel()
        await eventually(lambda: ready_count("Unknown"))
        assert len(await store.read_subject(event_subject("Node", "", "kwok-3"))) == 3
    finally:
        keeping_alive.cancel()
        running.cancel()
        await asyncio.wait_for(asyncio.gather(keeping_alive, running, return_exceptions=True), 10)


async def test_resigning_after_a_renewal_it_did_not_see_still_frees_the_lease_at_once(nc) -> None:
    first = await LeaderLease.open(nc, "test-role", "first")
    second = await LeaderLease.open(nc, "test-role", "second")
    assert await first.try_lead()
    stale = first._revision
    assert await first.try_lead()  # renewed: the revision moved on
    first._revision = stale  # as when the renewal's answer was lost to a cancellation
    await first.resign()
    assert await second.try_lead()  # no wait for the TTL

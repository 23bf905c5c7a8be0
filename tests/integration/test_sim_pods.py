"""Simulated nodes run the pods the scheduler binds to them: Running and Ready after the start
delay, each with an address of its node's range, including pods bound while the simulator was
down, and never started twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from ipaddress import IPv4Address, IPv4Network

import pytest

from core.network.ranges import ClusterCIDR
from handlers.gateway import Gateway
from handlers.node_ipam import NodeIPAMController
from handlers.scheduler import Scheduler
from handlers.simnodes import ACTOR, SimNodeSpec, SimulatedNodes, SimulatedPods
from ops import render
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.leases import LeaderLease
from streams.repository import AggregateRepository
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

DELAY = 0.5


def pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "app", "image": "x", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "sidecar", "image": "y"},
            ]
        },
    }


async def started(task_factory) -> asyncio.Task:
    ready = asyncio.Event()
    task = asyncio.create_task(task_factory(ready))
    await asyncio.wait_for(ready.wait(), 10)
    return task


async def stop(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


async def test_bound_pods_become_running_after_the_delay_once_even_across_restarts(
    nc,
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    nodes = await SimulatedNodes.create(nc, SimNodeSpec(prefix="kwok", zones=1), 3)
    await nodes.register()
    scheduler = await started(Scheduler(nc, store, seed=1).run)
    ipam = NodeIPAMController(
        AggregateRepository(store), projection, await LeaderLease.open(nc, "node-ipam-controller"),
        cluster=ClusterCIDR.parse(),
    )  # fmt: skip
    allocator = await started(ipam.run)
    sim: asyncio.Task | None = None
    try:
        # Bound while no simulator runs: found on its replay.
        for index in range(3):
            await client.send("Pod", "create", {"manifest": pod(f"early-{index}")})

        async def phases(prefix: str, phase: str, n: int) -> bool:
            await projection.wait_for_log_end()
            pods = [p for p in projection.model.list("Pod") if p.name.startswith(prefix)]
            return len(pods) == n and all(
                (p.manifest.get("status") or {}).get("phase") == phase for p in pods
            )

        async def all_bound() -> bool:
            await projection.wait_for_log_end()
            return all(p.manifest["spec"].get("nodeName") for p in projection.model.list("Pod"))

        await eventually(all_bound)
        assert await phases("early", "Pending", 3)

        runner = SimulatedPods(store, nodes.names.__contains__, start_delay=DELAY)
        sim = await started(runner.run)
        await eventually(lambda: phases("early", "Running", 3))
        for index in range(3):
            await client.send("Pod", "create", {"manifest": pod(f"late-{index}")})
        await eventually(lambda: phases("late", "Running", 3))

        events: list = []
        await store.replay(lambda e: events.append(e.envelope))
        bound_at = {(e.name): e.timestamp_ns for e in events if e.type == "PodBound"}
        starts = [e for e in events if e.type == "ContainerStarted"]
        assert len(starts) == 12 and {e.actor for e in starts} == {ACTOR}
        for e in starts:
            assert e.payload["node"].startswith("kwok-")
            if e.name.startswith("late"):
                assert e.timestamp_ns - bound_at[e.name] >= DELAY * 1e9
        assert sum(e.type == "PodReady" for e in events) == 6
        # Each pod got an address of its node's range before its containers started.
        assigned = {e.name: e.payload for e in events if e.type == "PodIPAssigned"}
        assert len(assigned) == 6 and len({p["pod_ips"][0] for p in assigned.values()}) == 6
        for name, payload in assigned.items():
            node = projection.model.get("Node", "", payload["node"])
            assert node is not None
            node_range = IPv4Network(node.manifest["spec"]["podCIDR"])
            assert IPv4Address(payload["pod_ips"][0]) in node_range
            assert payload["host_ip"] == str(node_range.network_address + 1)
            first_start = next(e for e in starts if e.name == name)
            ip_seq = next(i for i, e in enumerate(events) if e.type == "PodIPAssigned"
                          and e.name == name)  # fmt: skip
            assert ip_seq < events.index(first_start)

        record = projection.model.get("Pod", "default", "late-0")
        status = record.manifest["status"]
        assert status["startTime"] and {c["type"]: c["status"] for c in status["conditions"]} == {
            "PodScheduled": "True",
            "Initialized": "True",
            "Ready": "True",
            "ContainersReady": "True",
        }
        assert [c["state"].keys() for c in status["containerStatuses"]] == [{"running"}] * 2
        table = render.object_table(
            "Pod", [record.as_dict()], now_ns=time.time_ns(), wide=False, show_namespace=False
        )
        assert table.splitlines()[1].split()[1:3] == ["2/2", "Running"]

        # A restarted simulator replays everything and starts nothing again.
        await stop(sim)
        again = SimulatedPods(store, nodes.names.__contains__, start_delay=0)
        sim = await started(again.run)
        await asyncio.sleep(DELAY + 0.3)
        recount: list = []
        await store.replay(lambda e: recount.append(e.envelope.type))
        assert recount.count("ContainerStarted") == 12 and again.started == 0
        assert recount.count("PodIPAssigned") == 6
    finally:
        await stop(scheduler, allocator, *([sim] if sim else []))


def sized(name: str, memory: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "app", "image": "x",
                 "resources": {"requests": {"cpu": "100m", "memory": memory}}},
            ]
        },
    }  # fmt: skip


async def test_a_simulated_node_admits_resizes_as_a_node_agent_does(
    nc,
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    """Infeasible beyond the node's allocatable, Deferred beside the other pods and applied
    once room is made, then allocated and actuated (what the VPA's in-place mode needs)."""
    nodes = await SimulatedNodes.create(nc, SimNodeSpec(prefix="tiny", memory="1Gi", zones=1), 1)
    await nodes.register()
    scheduler = await started(Scheduler(nc, store, seed=1).run)
    ipam = NodeIPAMController(
        AggregateRepository(store), projection, await LeaderLease.open(nc, "node-ipam-controller"),
        cluster=ClusterCIDR.parse(),
    )  # fmt: skip
    allocator = await started(ipam.run)
    runner = SimulatedPods(store, nodes.names.__contains__, start_delay=0)
    sim = await started(runner.run)
    try:
        await client.send("Pod", "create", {"manifest": sized("holder", "600Mi")})
        await client.send("Pod", "create", {"manifest": sized("web", "100Mi")})

        async def running(*names: str) -> bool:
            await projection.wait_for_log_end()
            found = [projection.model.get("Pod", "default", n) for n in names]
            return all(p and (p.manifest.get("status") or {}).get("phase") == "Running"
                       for p in found)  # fmt: skip

        await eventually(lambda: running("holder", "web"))

        async def resize(memory: str) -> None:
            body = {
                "name": "web",
                "namespace": "default",
                "containers": [
                    {"name": "app", "resources": {"requests": {"cpu": "100m", "memory": memory}}}
                ],
            }
            await client.send("Pod", "resize", body)  # fmt: skip

        def condition(kind: str) -> dict | None:
            record = projection.model.get("Pod", "default", "web")
            assert record is not None
            return next((c for c in record.manifest["status"].get("conditions") or ()
                         if c["type"] == kind), None)  # fmt: skip

        async def pending(reason: str) -> bool:
            await projection.wait_for_log_end()
            found = condition("PodResizePending")
            return found is not None and found.get("reason") == reason

        await resize("2Gi")
        await eventually(lambda: pending("Infeasible"))
        message = condition("PodResizePending")["message"]  # type: ignore[index]
        assert message.startswith("Node didn't have enough capacity: memory, requested: ")
        record = projection.model.get("Pod", "default", "web")
        [status] = record.manifest["status"]["containerStatuses"]
        assert status["allocatedResources"] == {"cpu": "100m", "memory": "100Mi"}  # still

        await resize("500Mi")  # fits the node, not beside the holder's 600Mi
        await eventually(lambda: pending("Deferred"))
        await client.send("Pod", "delete", {"name": "holder", "namespace": "default"})

        async def actuated() -> bool:
            await projection.wait_for_log_end()
            record = projection.model.get("Pod", "default", "web")
            [status] = record.manifest["status"]["containerStatuses"]
            return (status.get("resources") or {}).get("requests", {}).get("memory") == "500Mi"

        await eventually(actuated, timeout=30)
        assert condition("PodResizePending") is None and condition("PodResizeInProgress") is None
        node = projection.model.get("Node", "", "tiny-0")
        assert node is not None
        events: list = []
        await store.replay(lambda e: events.append(e.envelope))
        mine = [e for e in events if e.kind == "Pod" and e.name == "web"]
        assert [e.type for e in mine if e.type.startswith("PodResize")] == [
            "PodResized", "PodResizePending", "PodResized", "PodResizePending",
            "PodResizeAllocated", "PodResizeActuated",
        ]  # fmt: skip
        assert {e.actor for e in mine if e.type.startswith("PodResize")} - {"user:alice"} == {ACTOR}
        assert runner.resize_outcomes["default/web"] == "Feasible"
    finally:
        await stop(scheduler, allocator, sim)

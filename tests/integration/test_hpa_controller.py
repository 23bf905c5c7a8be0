"""The HPA controller end to end on a real server: simulated pods whose synthetic load a test
sets, Kubernetes' maths deciding, the ``ScaledTo`` carrying the why (issue 19)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from core.autoscaling.horizontal import ControllerOptions
from handlers.autoscaler.horizontal import ACTOR, HorizontalController
from handlers.simusage import LOAD_SUBJECT, SimulatedUsage
from projections.cluster import ClusterModel
from projections.metrics import PodMetrics
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.subjects import event_subject
from tests.integration.support import cli, eventually, workload_roles

pytestmark = pytest.mark.integration

FAST = ControllerOptions(cpu_initialization_period=0, initial_readiness_delay=0)


def deployment(name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "x",
                                         "resources": {"requests": {"cpu": "100m"}}}]},
            },
        },
    }  # fmt: skip


def hpa(target: str = "web", *, max_replicas: int = 4, down_window: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": 1,
            "maxReplicas": max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                         "target": {"type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": down_window}},
        },
    }  # fmt: skip


@contextlib.asynccontextmanager
async def autoscaling(
    nc: Client, store: EventStore, projection: Projection[ClusterModel]
) -> AsyncIterator[HorizontalController]:
    async with workload_roles(nc, store, projection, nodes=2, collect=False) as simulated:
        metrics = PodMetrics(nc)
        controller = await HorizontalController.create(
            nc, store, projection, metrics, options=FAST, period_seconds=0.2, retry_seconds=0.2
        )
        usage = SimulatedUsage(nc, projection, simulated.names.__contains__, period=0.5)
        tasks = []
        for role in (metrics.run, controller.run, usage.run):
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(role(ready)))
            await asyncio.wait_for(ready.wait(), 10)
        try:
            yield controller
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def set_load(nc: Client, cpu: str) -> None:
    body = {"namespace": "default", "selector": {"app": "web"}, "cpu": cpu}
    reply = await nc.request(LOAD_SUBJECT, json.dumps(body).encode(), timeout=10)
    assert "error" not in json.loads(reply.data)


async def scaled(store: EventStore, name: str = "web") -> list[StoredEvent]:
    events = await store.read_subject(event_subject("Deployment", "default", name))
    return [e for e in events if e.envelope.type == "ScaledTo"]


def printed(result: Any) -> list[str]:
    """What the CLI printed, without the log lines of the roles running in this process."""
    return [line for line in result.output.splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]


def condition(projection: Projection[ClusterModel], kind: str) -> dict[str, Any]:
    """The HPA's condition ``kind``; empty until the projection folded the HPA (under load it
    may lag the command's reply): the polled checks reading it then wait instead of failing."""
    record = projection.model.get("HorizontalPodAutoscaler", "default", "web")
    if record is None:
        return {}
    conditions = (record.manifest.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


@pytest.mark.usefixtures("queries")
async def test_load_above_target_scales_up_with_the_why_and_down_only_after_the_window(
    nats_server: Any,
    nc: Client,
    store: EventStore,
    projection: Projection[ClusterModel],
    client: CommandClient,
) -> None:
    async with autoscaling(nc, store, projection):
        await client.send("Deployment", "create", {"manifest": deployment()})
        await client.send("HorizontalPodAutoscaler", "create", {"manifest": hpa()})

        async def running(n: int) -> bool:
            pods = [p for p in projection.model.list("Pod", "default")
                    if p.last_event == "PodReady"]  # fmt: skip
            return len(pods) == n

        await eventually(lambda: running(1), timeout=30)
        await set_load(nc, "300m")  # 300 % of the 100m request, target 50 %

        async def up() -> bool:
            return any(e.envelope.payload["replicas"] == 4 for e in await scaled(store))

        await eventually(up, timeout=30)
        first = next(e for e in await scaled(store) if e.envelope.payload["replicas"] == 4)
        why = first.envelope.payload["why"]
        assert first.envelope.actor == ACTOR
        assert why["currentReplicas"] == 1 and why["desiredReplicas"] == 4
        assert why["recommendation"] >= 4  # 300 % / 50 % -> 6 before limits, max 4
        [metric] = why["metrics"]
        assert metric["readyPods"] == 1 and metric["utilization"] == 300
        assert list(metric["perPod"].values()) == [300]
        assert why["hpa"] == "web"

        await eventually(lambda: running(4), timeout=30)
        status = projection.model.get("HorizontalPodAutoscaler", "default", "web")
        assert status is not None and status.manifest["status"]["desiredReplicas"] == 4
        await eventually(
            lambda: asyncio.sleep(0, condition(projection, "ScalingLimited").get("reason")
                                  == "TooManyReplicas"), timeout=30,
        )  # fmt: skip

        # What a person reads: kubectl's columns, the conditions and the why, from the log.
        got = printed(await cli(nats_server.url, "get", "hpa"))
        assert got[0].split() == [
            "NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"
        ]  # fmt: skip
        row = got[1]
        assert row.startswith("web") and "Deployment/web" in row and "cpu: 300%/50%" in row
        described = (await cli(nats_server.url, "describe", "hpa", "web")).output
        assert "ScalingLimited" in described and "TooManyReplicas" in described
        assert "Last decision:  ScaledTo #" in described
        assert "horizontal pod autoscaler web: 1 -> 4 replicas" in described
        explained = (await cli(nats_server.url, "why", "deployment/web")).output
        assert "horizontal pod autoscaler web: 1 -> 4 replicas" in explained
        assert "utilization 300% of requests (ratio 6.00, ready 1" in explained

        off = time.time()
        await set_load(nc, "0")

        async def down() -> bool:
            return any(e.envelope.payload["replicas"] == 1 for e in await scaled(store))

        await eventually(down, timeout=30)
        last = next(e for e in await scaled(store) if e.envelope.payload["replicas"] == 1)
        # The 3 s scale-down window held the recommendation of 4 made before the load went.
        assert last.envelope.timestamp_ns / 1e9 - off >= 2.0
        # 0 % usage recommends 0 before limits; minReplicas holds it at 1.
        assert last.envelope.payload["why"]["recommendation"] == 0
        assert last.envelope.payload["why"]["desiredReplicas"] == 1
        assert last.envelope.payload["previous"] == 4


@pytest.mark.usefixtures("gateway")
async def test_an_hpa_on_a_missing_target_cannot_get_the_scale_and_scales_nothing(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    async with autoscaling(nc, store, projection) as controller:
        await client.send("HorizontalPodAutoscaler", "create", {"manifest": hpa("nothere")})

        async def failed() -> bool:
            return condition(projection, "AbleToScale").get("reason") == "FailedGetScale"

        await eventually(failed, timeout=30)
        able = condition(projection, "AbleToScale")
        assert able["status"] == "False"
        assert able["message"] == (
            "the HPA controller was unable to get the target's current scale: "
            'deployments.apps "nothere" not found'
        )
        assert controller.scaled == 0


@pytest.mark.usefixtures("gateway")
async def test_a_restarted_controller_rebuilds_the_policy_periods_from_the_logged_decisions(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    manifest = hpa()
    # One pod more per minute at most: the period is what a restart must not forget.
    manifest["spec"]["behavior"]["scaleUp"] = {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    }
    async with workload_roles(nc, store, projection, nodes=2, collect=False) as simulated:
        metrics = PodMetrics(nc)
        usage = SimulatedUsage(nc, projection, simulated.names.__contains__, period=0.5)
        side = [asyncio.create_task(metrics.run()), asyncio.create_task(usage.run())]

        async def start() -> tuple[HorizontalController, asyncio.Task[None]]:
            controller = await HorizontalController.create(
                nc, store, projection, metrics, options=FAST, period_seconds=0.2,
                retry_seconds=0.2,
            )  # fmt: skip
            ready = asyncio.Event()
            task = asyncio.create_task(controller.run(ready))
            await asyncio.wait_for(ready.wait(), 10)
            return controller, task

        try:
            await client.send("Deployment", "create", {"manifest": deployment()})
            await client.send("HorizontalPodAutoscaler", "create", {"manifest": manifest})
            first, task = await start()
            await eventually(
                lambda: asyncio.sleep(0, len(list(projection.model.list("Pod", "default"))) == 1)
            )
            await set_load(nc, "300m")

            async def up() -> bool:
                return any(e.envelope.payload["replicas"] == 2 for e in await scaled(store))

            await eventually(up, timeout=30)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await first.loop.leader.resign()
            # A new controller (another process, say) remembers nothing of its own: without
            # the scale event read back from the ScaledTo it would add a pod at once.
            second, task = await start()
            side.append(task)
            await eventually(lambda: asyncio.sleep(0, second.evaluations >= 3), timeout=30)
            await eventually(
                lambda: asyncio.sleep(0, condition(projection, "ScalingLimited").get("reason")
                                      == "ScaleUpLimit"), timeout=30,
            )  # fmt: skip
            assert [e.envelope.payload["replicas"] for e in await scaled(store)] == [2]
            assert second.scaled == 0
        finally:
            for t in side:
                t.cancel()
            await asyncio.gather(*side, return_exceptions=True)

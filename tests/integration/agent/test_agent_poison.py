"""A node agent started after poison on the pod and node subjects catches up, runs its pods,
and says what it skipped in its node's ``EventsQuarantined`` condition (again when more poison
arrives while it runs)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from handlers.agent.agent import NodeAgent
from handlers.agent.network import NetworkOptions
from handlers.agent.node import NodeCapacity
from handlers.gateway import Gateway
from handlers.scheduler import Scheduler
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.subjects import event_subject
from tests.integration.agent.runtime_support import TrackedRuntime
from tests.integration.support import eventually
from tests.integration.test_poison import publish_poison

pytestmark = pytest.mark.integration

NODE = "poisoned-node"


def condition(projection: Projection[ClusterModel]) -> dict[str, Any] | None:
    record = projection.model.get("Node", "", NODE)
    conditions = record.manifest.get("status", {}).get("conditions", []) if record else []
    return next((c for c in conditions if c["type"] == "EventsQuarantined"), None)


async def test_an_agent_started_after_poison_runs_its_pods_and_reports_the_poison(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient, tmp_path: Path
) -> None:
    poisoned = await publish_poison(nc, event_subject("Pod", "default", "web"), "Pod", "web")
    poisoned |= await publish_poison(nc, event_subject("Node", "", NODE), "Node", NODE)
    scheduler = Scheduler(nc, store, share_work=False, initial_backoff=0.05, max_backoff=0.2)
    runtime = TrackedRuntime(tmp_path / "agent")
    async with EventStore(nc) as own:  # the agent's process, started after the poison
        agent = NodeAgent(
            nc, own, name=NODE, root=tmp_path / "agent", capacity=NodeCapacity("4", "8Gi"),
            heartbeat_seconds=1.0, runtime=runtime, network=NetworkOptions(enabled=False),
        )  # fmt: skip
        ready, agent_ready = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(scheduler.run(ready)),
            asyncio.create_task(agent.run(agent_ready)),
        ]
        watch = Projection(ClusterModel(), store)
        try:
            await asyncio.wait_for(ready.wait(), 15)
            await asyncio.wait_for(agent_ready.wait(), 15)
            assert {q.seq for q in own.quarantine} == set(poisoned)
            await watch.catch_up()
            await watch.follow()

            async def reported(count: int) -> bool:
                found = condition(watch)
                return found is not None and found["message"].startswith(
                    f"{count} event(s) of FLEET skipped"
                )

            await eventually(lambda: reported(len(poisoned)), timeout=15)
            assert condition(watch) == {
                **(condition(watch) or {}),
                "status": "True",
                "reason": "PoisonEvents",
            }
            manifest = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web"},
                "spec": {
                    "containers": [
                        {"name": "main", "image": "process", "command": [sys.executable, "-c",
                                                                          "import time; time.sleep(60)"]}
                    ]
                },
            }  # fmt: skip
            await client.send("Pod", "apply", {"manifest": manifest})

            async def running() -> bool:
                record = watch.model.get("Pod", "default", "web")
                return (
                    record is not None
                    and record.manifest.get("status", {}).get("phase") == "Running"
                )

            await eventually(running, timeout=20)
            more = await publish_poison(nc, event_subject("Pod", "default", "web"), "Pod", "web")
            await eventually(lambda: reported(len(poisoned) + len(more)), timeout=20)
        finally:
            await watch.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            runtime.cleanup()

"""A replica count of a billion is created at the namespace's pace, not as fast as the log
takes pods: the replica-set controller creates at most its burst, then ``per_second``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from core.workloads.creation_rate import PodCreationRate
from handlers.gateway import Gateway
from handlers.replicaset_controller import ReplicaSetController
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from tests.integration.support import eventually

pytestmark = pytest.mark.integration


def replica_set(namespace: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "x", "command": ["true"]}]},
            },
        },
    }


async def test_a_billion_replicas_grow_at_the_namespace_rate(
    nc: Any, gateway: Gateway, client: CommandClient, projection: Projection[ClusterModel]
) -> None:
    for namespace in ("default", "other"):
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        await client.send("Namespace", "apply", {"manifest": manifest})
    controller = await ReplicaSetController.create(
        nc, projection, creation_rate=PodCreationRate(per_second=4, burst=10),
        period_seconds=0.1, retry_seconds=0.2,
    )  # fmt: skip
    task = asyncio.create_task(controller.run())
    try:
        started = time.monotonic()
        await client.send("ReplicaSet", "apply", {"manifest": replica_set("default", 10**9)})
        await client.send("ReplicaSet", "apply", {"manifest": replica_set("other", 3)})

        def pods(namespace: str) -> int:
            return sum(1 for _ in projection.model.list("Pod", namespace))

        async def grown() -> bool:
            return pods("default") >= 14 and pods("other") == 3

        await eventually(grown, timeout=30)
        await asyncio.sleep(1.0)
        elapsed = time.monotonic() - started
        # The burst, then 4 a second (+1 for a token that refilled as the count was read).
        assert pods("default") <= 10 + 4 * elapsed + 1
        assert pods("other") == 3  # its own bucket: not starved by the runaway one
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

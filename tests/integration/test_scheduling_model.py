"""The scheduler's read model folded from a real log: NodeInfos carry their bound pods'
requests, unbound pods wait in the queue, and a restored snapshot equals the fold."""

from __future__ import annotations

import time

import pytest

from core.meta.aggregate import timestamp_from_ns
from core.nodes.aggregate import Node
from core.pods.aggregate import Pod
from handlers.gateway import Gateway
from projections.runtime import Projection
from projections.scheduling import SchedulingModel
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef
from tests.integration.test_scheduler import pod

pytestmark = pytest.mark.integration


async def bind(store: EventStore, name: str, node: str) -> None:
    repository = AggregateRepository(store)
    now = time.time_ns()
    pod_loaded = await repository.load(AggregateRef("Pod", "default", name))
    node_loaded = await repository.load(AggregateRef("Node", "", node))
    assert isinstance(pod_loaded.aggregate, Pod) and isinstance(node_loaded.aggregate, Node)
    node_loaded.aggregate.allocate(
        pod=f"default/{name}", requests={"cpu": 250}, at=timestamp_from_ns(now)
    )
    pod_loaded.aggregate.bind(node=node, score=None, feasible_nodes=1, at=timestamp_from_ns(now))
    token = f"bind-{name}"
    await repository.save(
        [pod_loaded, node_loaded],
        Provenance(
            actor="system:scheduler",
            correlation_id=token,
            causation_id=token,
            token=token,
            now_ns=now,
        ),
    )


async def test_bound_pods_count_on_their_node_and_unbound_ones_wait(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send(
        "Namespace",
        "apply",
        {
            "manifest": {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "team", "labels": {"tier": "gold"}},
            }
        },
    )
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"zone": "a"}},
        "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}},
    }
    await client.send("Node", "apply", {"manifest": node})
    for name in ("a", "b", "c"):
        await client.send("Pod", "apply", {"manifest": pod(name, "250m")})
    await bind(store, "a", "n1")
    await bind(store, "b", "n1")
    await client.send("Pod", "delete", {"name": "b"})
    await client.send("Node", "cordon", {"name": "n1"})

    model = (await Projection.replayed(SchedulingModel(), store)).model
    info = model.nodes["n1"]
    assert set(info.pods) == {"default/a"}
    assert info.requested["cpu"] == 250 and info.unschedulable and info.labels == {"zone": "a"}
    assert info.allocatable["cpu"] == 2000
    assert set(model.pending) == {"default/c"}
    assert model.namespace_labels["team"] == {"tier": "gold"}

    restored = SchedulingModel()
    restored.restore(model.snapshot())
    assert set(restored.nodes["n1"].pods) == {"default/a"} and set(restored.pending) == {
        "default/c"
    }
    assert restored.nodes["n1"].requested == info.requested and restored.digest() == model.digest()

"""Binding a pod is one atomic batch on two aggregates (the pod's PodBound and the node's
PodAllocated) with an expectation on each: racing schedulers can never over-commit a node."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.errors import InvalidTransition
from core.meta.aggregate import timestamp_from_ns
from core.nodes.aggregate import Node
from core.pods.aggregate import Pod
from handlers.gateway import Gateway
from streams.commandbus import CommandClient
from streams.eventstore import ConcurrencyConflict, EventStore, StoreError
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef, event_subject

pytestmark = pytest.mark.integration

NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "small"},
    "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}},
}


def pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }


async def bind(
    repository: AggregateRepository, pod_name: str, node_name: str, cpu: int, token: str
) -> list:
    now = time.time_ns()
    pod_loaded = await repository.load(AggregateRef("Pod", "default", pod_name), fresh=True)
    node_loaded = await repository.load(AggregateRef("Node", "", node_name), fresh=True)
    await asyncio.sleep(0.05)  # both schedulers decide on the same node state
    assert isinstance(pod_loaded.aggregate, Pod) and isinstance(node_loaded.aggregate, Node)
    node_loaded.aggregate.allocate(
        pod=f"default/{pod_name}", requests={"cpu": cpu}, at=timestamp_from_ns(now)
    )
    pod_loaded.aggregate.bind(
        node=node_name, score=None, feasible_nodes=1, at=timestamp_from_ns(now)
    )
    provenance = Provenance(
        actor="system:scheduler", correlation_id=token, causation_id=token, token=token, now_ns=now
    )
    return await repository.save([pod_loaded, node_loaded], provenance)


async def test_two_schedulers_racing_for_the_last_cpu_never_over_commit(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": NODE})
    for name in ("a", "b"):
        await client.send("Pod", "apply", {"manifest": pod(name)})
    results = await asyncio.gather(
        bind(AggregateRepository(store), "a", "small", 700, "bind-a"),
        bind(AggregateRepository(store), "b", "small", 700, "bind-b"),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, list)]
    assert len(winners) == 1 and isinstance(
        next(r for r in results if not isinstance(r, list)), ConcurrencyConflict
    )
    assert [t for t, _ in winners[0]] == ["PodBound", "PodAllocated"]
    # The loser decides again on fresh state: the node refuses, nothing is appended.
    loser = "b" if results[0] is winners[0] else "a"
    before = await store.stream_last_seq()
    with pytest.raises(InvalidTransition, match="insufficient cpu"):
        await bind(AggregateRepository(store), loser, "small", 700, f"bind-{loser}-again")
    assert await store.stream_last_seq() == before
    bound = [
        e.envelope.type for e in await store.read_subject(event_subject("Pod", "default", loser))
    ]
    assert bound == ["PodCreated"]


async def test_deleting_a_bound_pod_releases_its_reservation_in_the_same_append(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": NODE})
    await client.send("Pod", "apply", {"manifest": pod("a")})
    await bind(AggregateRepository(store), "a", "small", 700, "bind-a")
    outcome = await client.send("Pod", "delete", {"name": "a"})
    assert outcome.events == ["PodDeleted", "PodReleased"]
    node = (await AggregateRepository(store).load(AggregateRef("Node", "", "small"))).aggregate
    assert isinstance(node, Node) and node.allocations == {}
    # The freed cpu is allocatable again.
    await client.send("Pod", "apply", {"manifest": pod("b")})
    assert await bind(AggregateRepository(store), "b", "small", 700, "bind-b")
    # Deleting a pod that was never bound touches no node.
    await client.send("Pod", "apply", {"manifest": pod("c")})
    outcome = await client.send("Pod", "delete", {"name": "c"})
    assert outcome.events == ["PodDeleted"]


async def test_concurrent_deletes_of_pods_on_one_node_keep_its_versions_contiguous(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    big = {**NODE, "status": {"allocatable": {"cpu": "100", "memory": "1Gi", "pods": "110"}}}
    await client.send("Node", "apply", {"manifest": big})
    names = [f"p{i}" for i in range(40)]
    for name in names:
        await client.send("Pod", "apply", {"manifest": pod(name)})
        await bind(AggregateRepository(store), name, "small", 100, f"bind-{name}")
    outcomes = await asyncio.gather(*(client.send("Pod", "delete", {"name": n}) for n in names))
    assert all(o.events == ["PodDeleted", "PodReleased"] for o in outcomes)
    history = await store.read_subject(event_subject("Node", "", "small"))
    assert [e.envelope.version for e in history] == list(range(1, len(history) + 1))
    node = (await AggregateRepository(store).load(AggregateRef("Node", "", "small"))).aggregate
    assert isinstance(node, Node) and node.allocations == {}


async def test_overlapping_decisions_on_one_cached_aggregate_are_refused_not_appended(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": NODE})
    repository = AggregateRepository(store)
    first = await repository.load(AggregateRef("Node", "", "small"))
    second = await repository.load(AggregateRef("Node", "", "small"))
    assert first is second  # the cache hands out one object
    assert isinstance(first.aggregate, Node)
    first.aggregate.allocate(pod="default/a", requests={"cpu": 100}, at=timestamp_from_ns(0))
    first.stored_version -= 1  # as if another decision had advanced it unseen
    before = await store.stream_last_seq()
    provenance = Provenance(
        actor="test", correlation_id="t", causation_id="t", token="overlap", now_ns=time.time_ns()
    )
    with pytest.raises(StoreError, match="decisions on it overlapped"):
        await repository.save([first], provenance)
    assert await store.stream_last_seq() == before

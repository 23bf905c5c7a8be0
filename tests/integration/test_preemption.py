"""Priorities end to end: admission gives a pod its PriorityClass's priority, and a pod that
fits nowhere preempts the fewest, least important lower-priority pods — nominated first, the
victims evicted through the gateway (their reservations released), then bound."""

from __future__ import annotations

import pytest

from core.nodes.aggregate import Node
from handlers.gateway import Gateway
from handlers.scheduler import Scheduler
from streams.commandbus import CommandClient, CommandFailed
from streams.eventstore import EventStore
from streams.repository import AggregateRepository
from streams.subjects import AggregateRef, event_subject
from tests.integration.support import eventually
from tests.integration.test_scheduler import log_by_type, node, pod, start

pytestmark = pytest.mark.integration


def priority_class(name: str, value: int, *, default: bool = False, never: bool = False) -> dict:
    manifest = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name},
        "value": value,
        "globalDefault": default,
    }
    if never:
        manifest["preemptionPolicy"] = "Never"
    return manifest


def with_class(manifest: dict, class_name: str) -> dict:
    return {**manifest, "spec": {**manifest["spec"], "priorityClassName": class_name}}


async def stored_spec(store: EventStore, name: str) -> dict:
    history = await store.read_subject(event_subject("Pod", "default", name))
    return history[0].envelope.payload["manifest"]["spec"]


async def test_admission_resolves_priority_classes_and_refuses_unknown_ones(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("PriorityClass", "apply", {"manifest": priority_class("high", 1000)})
    await client.send("Pod", "apply", {"manifest": with_class(pod("important", "100m"), "high")})
    spec = await stored_spec(store, "important")
    assert (spec["priority"], spec["preemptionPolicy"]) == (1000, "PreemptLowerPriority")

    before = await store.stream_last_seq()
    with pytest.raises(CommandFailed, match='no PriorityClass with name "nope"') as refused:
        await client.send("Pod", "apply", {"manifest": with_class(pod("lost", "100m"), "nope")})
    assert refused.value.field == "spec.priorityClassName"
    assert await store.stream_last_seq() == before

    await client.send(
        "PriorityClass", "apply", {"manifest": priority_class("normal", 10, default=True)}
    )
    await gateway.priority_classes.wait_for_log_end()
    await client.send("Pod", "apply", {"manifest": pod("plain", "100m")})
    spec = await stored_spec(store, "plain")
    assert (spec["priority"], spec["priorityClassName"]) == (10, "normal")
    with pytest.raises(CommandFailed, match="normal is marked as default"):
        await client.send(
            "PriorityClass", "apply", {"manifest": priority_class("other", 5, default=True)}
        )
    with pytest.raises(CommandFailed):  # a class's value is immutable
        await client.send("PriorityClass", "apply", {"manifest": priority_class("high", 7)})


async def test_a_high_priority_pod_preempts_the_fewest_least_important_pods(
    nc, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1", "1")})
    await client.send("PriorityClass", "apply", {"manifest": priority_class("high", 1000)})
    await client.send("PriorityClass", "apply", {"manifest": priority_class("mid", 500)})
    await client.send(
        "PriorityClass", "apply", {"manifest": priority_class("polite", 2000, never=True)}
    )
    scheduler = Scheduler(nc, store, seed=3, initial_backoff=0.05, max_backoff=0.2)
    task = await start(scheduler)
    try:
        # 1000m: a 300m + b 500m (priority 0) + m 100m (priority 500) leave 100m free.
        await client.send("Pod", "apply", {"manifest": pod("a", "300m")})
        await client.send("Pod", "apply", {"manifest": pod("b", "500m")})
        await client.send("Pod", "apply", {"manifest": with_class(pod("m", "100m"), "mid")})

        async def bound(count: int) -> bool:
            return len((await log_by_type(store))["PodBound"]) >= count

        await eventually(lambda: bound(3))
        # A pod that may not preempt (policy Never) just waits, and says why.
        await client.send("Pod", "apply", {"manifest": with_class(pod("p", "600m"), "polite")})

        async def refused() -> bool:
            return any(e.name == "p" for e in (await log_by_type(store))["PodUnschedulable"])

        await eventually(refused)
        # 600m at priority 1000: removing every lower pod frees 1000m; m (most important) and
        # then a (300m) fit back, b does not: b alone is the victim.
        await client.send("Pod", "apply", {"manifest": with_class(pod("high", "600m"), "high")})

        async def high_bound() -> bool:
            return any(e.name == "high" for e in (await log_by_type(store))["PodBound"])

        await eventually(high_bound)
        events = await log_by_type(store)
        nominated = [e for e in events["PodNominated"] if e.name == "high"]
        assert len(nominated) == 1
        assert nominated[0].payload["node"] == "n1"
        assert nominated[0].payload["victims"] == ["default/b"]
        deleted = {e.name: e for e in events["PodDeleted"]}
        assert set(deleted) == {"b"}
        assert deleted["b"].actor == "system:scheduler/default-scheduler"
        assert deleted["b"].payload["reason"] == (
            "preempted by pod default/high (priority 1000) on node n1"
        )
        assert not any(e.name == "p" for e in events["PodNominated"])
        assert any(e.name == "p" for e in events["PodUnschedulable"])
        n1 = (await AggregateRepository(store).load(AggregateRef("Node", "", "n1"))).aggregate
        assert isinstance(n1, Node)
        assert set(n1.allocations) == {"default/a", "default/m", "default/high"}
        assert n1.allocated["cpu"] == 1000
        record = next(e for e in events["PodBound"] if e.name == "high")
        assert record.payload["node"] == "n1"
    finally:
        task.cancel()
        import asyncio

        await asyncio.gather(task, return_exceptions=True)


async def test_preemption_prefers_the_victim_no_disruption_budget_protects(
    nc, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    import asyncio

    await client.send("Node", "apply", {"manifest": node("n1", "1")})
    await client.send("Node", "apply", {"manifest": node("n2", "1")})
    await client.send("PriorityClass", "apply", {"manifest": priority_class("high", 1000)})
    await client.send("PriorityClass", "apply", {"manifest": priority_class("mid", 500)})
    # "guarded" (priority 0) is the cheaper victim by priority, but its budget allows no
    # disruption; "spare" (priority 500) violates nothing. Fewest violations comes first.
    guarded = pod("guarded", "800m")
    guarded["metadata"]["labels"] = {"app": "guarded"}
    spare = with_class(pod("spare", "800m"), "mid")
    spare["metadata"]["labels"] = {"app": "spare"}
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
              "metadata": {"name": "guard"},
              "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}  # fmt: skip
    await client.send("PodDisruptionBudget", "create", {"manifest": budget})
    scheduler = Scheduler(nc, store, seed=3, initial_backoff=0.05, max_backoff=0.2)
    task = await start(scheduler)
    try:
        await client.send("Pod", "apply", {"manifest": guarded})
        await client.send("Pod", "apply", {"manifest": spare})

        async def bound(count: int) -> bool:
            return len((await log_by_type(store))["PodBound"]) >= count

        await eventually(lambda: bound(2))
        await client.send("Pod", "apply", {"manifest": with_class(pod("high", "600m"), "high")})

        async def high_bound() -> bool:
            return any(e.name == "high" for e in (await log_by_type(store))["PodBound"])

        await eventually(high_bound)
        events = await log_by_type(store)
        [nominated] = [e for e in events["PodNominated"] if e.name == "high"]
        assert nominated.payload["victims"] == ["default/spare"]
        assert {e.name for e in events["PodDeleted"]} == {"spare"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

"""The scheduler handler against a real log: pods are bound, the unschedulable are told why and
retried when the cluster changes, and racing replicas never over-commit a node."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

import pytest

import handlers.scheduler as scheduler_module
from core.meta.aggregate import timestamp_from_ns
from core.meta.quantity import cpu_millis
from core.nodes.aggregate import Node
from handlers.gateway import Gateway
from handlers.scheduler import Scheduler
from ops.schedulerconfig import read_scheduler_config, scheduler_options
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef
from tests.integration.support import eventually

pytestmark = pytest.mark.integration


def node(name: str, cpu: str, zone: str = "a") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone},
        },
        "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}},
    }


def pod(name: str, cpu: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
                }
            ]
        },
    }


async def log_by_type(store: EventStore) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    await store.replay(lambda e: out[e.envelope.type].append(e.envelope))
    return out


async def start(scheduler: Scheduler) -> asyncio.Task:
    ready = asyncio.Event()
    task = asyncio.create_task(scheduler.run(ready))
    await ready.wait()
    return task


async def test_pending_pods_are_bound_and_the_unschedulable_are_retried_when_a_node_joins(
    nc, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1", "1")})
    scheduler = Scheduler(nc, store, seed=1, initial_backoff=0.05, max_backoff=0.2)
    task = await start(scheduler)
    try:
        for i in range(3):
            await client.send("Pod", "apply", {"manifest": pod(f"p{i}", "400m")})

        async def two_bound_one_refused() -> bool:
            events = await log_by_type(store)
            return len(events["PodBound"]) == 2 and len(events["PodUnschedulable"]) == 1

        await eventually(two_bound_one_refused)
        refused = (await log_by_type(store))["PodUnschedulable"][0]
        assert refused.payload["message"] == (
            "0/1 nodes are available: 1 Insufficient cpu. no new claims to deallocate, "
            "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        )
        assert refused.actor == "system:scheduler/default-scheduler"
        await client.send("Node", "apply", {"manifest": node("n2", "1")})

        async def all_bound() -> bool:
            return len((await log_by_type(store))["PodBound"]) == 3

        await eventually(all_bound)
        events = await log_by_type(store)
        assert {e.payload["node"] for e in events["PodBound"]} == {"n1", "n2"}
        assert len(events["PodAllocated"]) == 3
        assert len(events["PodUnschedulable"]) == 1  # reported once, not on every retry
        for bound in events["PodBound"]:  # the score breakdown describe shows adds up
            scores, weights = bound.payload["plugin_scores"], bound.payload["weights"]
            assert scores and set(scores) == set(weights)
            assert bound.payload["score"] == sum(scores[p] * weights[p] for p in scores)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("share_work", [False, True], ids=["all-race-for-every-pod", "queue-split"])
async def test_three_racing_replicas_never_exceed_allocatable_and_decide_each_pod_once(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, share_work: bool
) -> None:
    for i in range(4):
        await client.send("Node", "apply", {"manifest": node(f"n{i}", "2", zone=f"z{i % 2}")})
    replicas = [
        Scheduler(
            nc,
            store,
            identity=f"s{i}",
            seed=i,
            initial_backoff=0.05,
            max_backoff=0.2,
            share_work=share_work,
        )
        for i in range(3)
    ]
    tasks = [await start(r) for r in replicas]
    try:
        # 4 nodes x 2 cpu = 8000m; 45 pods x 200m = 9000m: 40 fit, 5 cannot.
        await asyncio.gather(
            *(client.send("Pod", "apply", {"manifest": pod(f"p{i}", "200m")}) for i in range(45))
        )

        async def settled() -> bool:
            events = await log_by_type(store)
            decided = {e.name for e in events["PodBound"]} | {
                e.name for e in events["PodUnschedulable"]
            }
            return len(events["PodBound"]) == 40 and len(decided) == 45

        await eventually(settled, timeout=30)
        await asyncio.sleep(0.5)  # let any straggling replica act, if it would
        events = await log_by_type(store)
        bound = Counter(e.name for e in events["PodBound"])
        assert len(bound) == 40 and set(bound.values()) == {1}, "a pod was bound twice"
        per_node: dict[str, int] = defaultdict(int)
        for allocation in events["PodAllocated"]:
            per_node[allocation.name] += allocation.payload["requests"]["cpu"]
        assert all(total <= cpu_millis("2") for total in per_node.values()), per_node
        refused = {e.name for e in events["PodUnschedulable"]}
        assert len(refused - set(bound)) == 5
        assert all(
            "Insufficient cpu. no new claims to deallocate, preemption: 0/4 nodes are available"
            in e.payload["message"]
            for e in events["PodUnschedulable"]
        )
        assert sum(r.bound for r in replicas) == 40
        if share_work:
            assert all(r.bound > 0 for r in replicas), [r.bound for r in replicas]
        # Each replica builds node aggregates (ledger included) from its read model instead of
        # reading them: they must be exactly what the log gives.
        repository = AggregateRepository(store)
        for replica in replicas:
            await replica.projection.wait_for_log_end()
            for i in range(4):
                seen = replica.model.node_aggregate(f"n{i}")
                loaded = await repository.load(AggregateRef("Node", "", f"n{i}"), fresh=True)
                assert seen is not None and isinstance(loaded.aggregate, Node)
                aggregate, last_seq = seen
                assert (aggregate.allocations, aggregate.version, last_seq) == (
                    loaded.aggregate.allocations,
                    loaded.aggregate.version,
                    loaded.last_seq,
                )
                assert aggregate.manifest == loaded.aggregate.manifest
                assert aggregate.allocated == loaded.aggregate.allocated
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


SCHEDULER_CONFIG = """\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 5
profiles:
  - schedulerName: default-scheduler
    plugins:
      score:
        enabled:
          - name: NodeResourcesFit
            weight: 7
        disabled:
          - name: NodeResourcesBalancedAllocation
    pluginConfig:
      - name: NodeResourcesFit
        args:
          scoringStrategy:
            type: MostAllocated
            resources:
              - {name: cpu, weight: 3}
              - {name: memory, weight: 1}
"""


async def test_a_scheduler_started_with_a_configuration_file_scores_with_its_weights(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, tmp_path
) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_text(SCHEDULER_CONFIG)
    scheduler = Scheduler(nc, store, seed=1, **scheduler_options(read_scheduler_config(path)))
    assert (scheduler._initial_backoff, scheduler._max_backoff) == (1.0, 5.0)
    # MostAllocated packs: the busier node wins (LeastAllocated, the default, would pick n2).
    await client.send("Node", "apply", {"manifest": node("n1", "4")})
    await client.send("Node", "apply", {"manifest": node("n2", "4")})
    await client.send("Pod", "apply", {"manifest": pod("first", "2")})
    task = await start(scheduler)
    try:

        async def bound(count: int) -> bool:
            return len((await log_by_type(store))["PodBound"]) == count

        await eventually(lambda: bound(1))
        first_on = (await log_by_type(store))["PodBound"][0].payload["node"]
        await client.send("Pod", "apply", {"manifest": pod("second", "1")})
        await eventually(lambda: bound(2))
        second = next(e for e in (await log_by_type(store))["PodBound"] if e.name == "second")
        assert second.payload["node"] == first_on
        weights = second.payload["weights"]
        assert weights["NodeResourcesFit"] == 7
        assert "NodeResourcesBalancedAllocation" not in weights
        assert weights["TaintToleration"] == 3  # untouched defaults stay
        scores = second.payload["plugin_scores"]
        assert second.payload["score"] == sum(scores[p] * weights[p] for p in scores)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_binding_the_node_keeps_refusing_is_retried_with_back_off_not_in_a_hot_loop(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, monkeypatch
) -> None:
    # The node's ledger holds a reservation the scheduler's view does not count, so every
    # binding the scheduler decides is refused by the node aggregate.
    await client.send("Node", "apply", {"manifest": node("n1", "1")})
    repository = AggregateRepository(store)
    loaded = await repository.load(AggregateRef("Node", "", "n1"))
    assert isinstance(loaded.aggregate, Node)
    loaded.aggregate.allocate(
        pod="default/ghost", requests={"cpu": 1000}, at=timestamp_from_ns(time.time_ns())
    )
    provenance = Provenance(
        actor="test", correlation_id="ghost", causation_id="ghost", token="ghost",
        now_ns=time.time_ns(),
    )  # fmt: skip
    await repository.save([loaded], provenance)
    decisions = 0
    real_schedule = scheduler_module.schedule

    def counting(*args, **kwargs):
        nonlocal decisions
        decisions += 1
        return real_schedule(*args, **kwargs)

    monkeypatch.setattr(scheduler_module, "schedule", counting)
    scheduler = Scheduler(nc, store, seed=1, initial_backoff=1.0, max_backoff=10.0)
    task = await start(scheduler)
    try:
        await client.send("Pod", "apply", {"manifest": pod("p", "400m")})
        await asyncio.sleep(3.5)
        # Tried at 0 s, then after 1 s and 2 s of back-off: a hot loop made thousands.
        assert 1 <= decisions <= 3
        assert scheduler.bound == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_unschedulable_pod_no_event_wakes_is_tried_again_after_the_longest_wait(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, monkeypatch
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1", "1")})
    decisions = 0
    real_schedule = scheduler_module.schedule

    def counting(*args, **kwargs):
        nonlocal decisions
        decisions += 1
        return real_schedule(*args, **kwargs)

    monkeypatch.setattr(scheduler_module, "schedule", counting)
    # podMaxInUnschedulablePodsDuration shortened from 5 minutes to 1 s.
    scheduler = Scheduler(
        nc, store, seed=1, initial_backoff=0.1, max_backoff=0.1, max_in_unschedulable=1.0
    )
    task = await start(scheduler)
    try:
        await client.send("Pod", "apply", {"manifest": pod("p", "4")})

        async def tried_again() -> bool:
            return decisions >= 2

        await eventually(tried_again)  # nothing happened in the cluster meanwhile
        await asyncio.sleep(1.5)
        assert decisions <= 4  # once a second, not a loop
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_scheduler_places_only_the_pods_that_name_its_profile(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, tmp_path
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1", "4")})
    mine = pod("mine", "100m")
    theirs = pod("theirs", "100m")
    theirs["spec"]["schedulerName"] = "my-scheduler"
    await client.send("Pod", "apply", {"manifest": theirs})
    await client.send("Pod", "apply", {"manifest": mine})
    default = Scheduler(nc, store, seed=1)
    path = tmp_path / "mine.yaml"
    path.write_text(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
        "profiles:\n- schedulerName: my-scheduler\n"
    )
    tasks = [await start(default)]
    try:

        async def bound() -> set[str]:
            return {e.name for e in (await log_by_type(store))["PodBound"]}

        await eventually(lambda: _true(bound, {"mine"}))
        await asyncio.sleep(0.5)  # the default scheduler had every chance to take "theirs"
        events = await log_by_type(store)
        assert {e.name for e in events["PodBound"]} == {"mine"}
        assert not events["PodUnschedulable"]  # another scheduler's pod is not reported
        other = Scheduler(nc, store, seed=1, identity="my-scheduler",
                          **scheduler_options(read_scheduler_config(path)))  # fmt: skip
        tasks.append(await start(other))
        await eventually(lambda: _true(bound, {"mine", "theirs"}))
        theirs_bound = next(e for e in (await log_by_type(store))["PodBound"] if e.name == "theirs")
        assert theirs_bound.actor == "system:scheduler/my-scheduler"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _true(bound, expected: set[str]) -> bool:  # type: ignore[no-untyped-def]
    return await bound() == expected

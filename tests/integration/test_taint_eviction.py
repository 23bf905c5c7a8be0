"""The taint-eviction controller against a real nats-server: a node that stops heartbeating gets
the unreachable NoExecute taint, and its pods leave as their tolerations say."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from core.meta.aggregate import timestamp_from_ns
from core.meta.timestamps import parse_stamp
from core.nodes.aggregate import Node
from core.pods.aggregate import Pod
from handlers.gateway import Gateway
from handlers.node_lifecycle import NodeLifecycleController
from handlers.taint_eviction import ACTOR, TaintEvictionController
from ops.cli.audit import causal_chain
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.cancellation import checkpoint
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.leases import NodeLeases
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef, event_subject
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

UNREACHABLE = "node.kubernetes.io/unreachable"
S = 1_000_000_000


def node(name: str, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"taints": taints} if taints else {},
        "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}},
    }


def pod(name: str, tolerations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x"}]}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def unreachable_for(seconds: int | None) -> list[dict[str, Any]]:
    toleration: dict[str, Any] = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    if seconds is not None:
        toleration["tolerationSeconds"] = seconds
    return [toleration]


async def bind(store: EventStore, name: str, node_name: str) -> None:
    """Bind as the scheduler does: PodBound + PodAllocated in one atomic append."""
    repository = AggregateRepository(store)
    pod_loaded = await repository.load(AggregateRef("Pod", "default", name))
    node_loaded = await repository.load(AggregateRef("Node", "", node_name))
    assert isinstance(pod_loaded.aggregate, Pod) and isinstance(node_loaded.aggregate, Node)
    now = time.time_ns()
    pod_loaded.aggregate.bind(
        node=node_name, score=None, feasible_nodes=1, at=timestamp_from_ns(now)
    )
    node_loaded.aggregate.allocate(
        pod=f"default/{name}", requests={"cpu": 100}, at=timestamp_from_ns(now)
    )
    token = f"test-bind.{name}"
    await repository.save(
        [pod_loaded, node_loaded],
        Provenance(
            actor="test:scheduler",
            correlation_id=token,
            causation_id=token,
            token=token,
            now_ns=now,
        ),
    )


async def deletion(store: EventStore, name: str) -> Any:
    """The PodDeleted envelope of a pod, or None."""
    events = await store.read_subject(event_subject("Pod", "default", name))
    return next((e.envelope for e in events if e.envelope.type == "PodDeleted"), None)


async def test_noexecute_taints_evict_pods_as_their_tolerations_say_and_recovery_cancels(
    nc,
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    await client.send(
        "Node",
        "apply",
        {"manifest": node("n2", [{"key": "dedicated", "value": "maintenance", "effect": "NoExecute"}])},
    )  # fmt: skip
    pods = {
        "brief": unreachable_for(1),  # tolerated for 1 s
        "zero": unreachable_for(0),  # tolerated for 0 s: at once
        "patient": unreachable_for(3),  # the node recovers before its 3 s are up
        "forever": [{"operator": "Exists"}],  # tolerates everything, forever
        "defaulted": None,  # admission adds the 300 s default tolerations
    }
    for name, tolerations in pods.items():
        await client.send("Pod", "create", {"manifest": pod(name, tolerations)})
        await bind(store, name, "n1")
    await client.send("Pod", "create", {"manifest": pod("intolerant")})
    await bind(store, "intolerant", "n2")

    heartbeats = await NodeLeases.open(nc)
    lifecycle = await NodeLifecycleController.create(
        nc, AggregateRepository(store), projection,
        grace_seconds=0.6, startup_grace_seconds=30, period_seconds=0.05,
    )  # fmt: skip
    eviction = TaintEvictionController(nc, projection, lifecycle.leader, recheck_seconds=0.2)

    async def heartbeat() -> None:
        while True:
            checkpoint()  # renew() may swallow the cancel on Python 3.11
            await heartbeats.renew("n1", time.time_ns())
            await heartbeats.renew("n2", time.time_ns())
            await asyncio.sleep(0.1)

    beating = asyncio.create_task(heartbeat())
    running = [asyncio.create_task(lifecycle.run()), asyncio.create_task(eviction.run())]
    try:
        # n2 is Ready, but its own NoExecute taint is not tolerated: the pod goes at once.
        await eventually(lambda: deletion(store, "intolerant"))
        gone = await deletion(store, "intolerant")
        assert gone.actor == ACTOR
        assert gone.payload["reason"] == "evicted: dedicated=maintenance:NoExecute not tolerated"

        # n1 stops heartbeating: Unknown, with the unreachable taints stamped with timeAdded.
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)

        async def n1_tainted() -> bool:
            record = projection.model.get("Node", "", "n1")
            return any(
                t.get("effect") == "NoExecute" for t in record.manifest["spec"].get("taints") or []
            )

        await eventually(n1_tainted)
        await projection.wait_for_log_end()
        taint = next(
            t
            for t in projection.model.get("Node", "", "n1").manifest["spec"]["taints"]
            if t["effect"] == "NoExecute"
        )
        added_ns = parse_stamp(taint["timeAdded"])
        assert taint["key"] == UNREACHABLE and added_ns is not None

        await eventually(lambda: deletion(store, "brief"))
        brief = await deletion(store, "brief")
        assert brief.timestamp_ns >= added_ns + 1 * S
        assert brief.payload["reason"] == (
            "evicted: node.kubernetes.io/unreachable:NoExecute tolerated for 1s, elapsed"
        )
        zero = await deletion(store, "zero")
        assert zero is not None and zero.timestamp_ns <= brief.timestamp_ns
        assert "tolerated for 0s, elapsed" in zero.payload["reason"]
        # Why was it deleted? The node went NotReady, because its heartbeats stopped.
        history = await store.read_subject(event_subject("Pod", "default", "brief"))
        chain = await causal_chain(store, history[-1])
        types = [link.event.envelope.type for link in chain if link.event is not None]
        assert types == ["PodDeleted", "NodeNotReady"]
        assert chain[-1].root.startswith("missed heartbeats: last at ")
        assert chain[-1].root.endswith("(observed by system:node-lifecycle-controller)")
        assert ("default", "patient") in eviction.scheduled

        # The node comes back before "patient"'s 3 s: its eviction is cancelled.
        beating = asyncio.create_task(heartbeat())

        async def n1_untainted() -> bool:
            record = projection.model.get("Node", "", "n1")
            return not record.manifest["spec"].get("taints")

        await eventually(n1_untainted)
        assert time.time_ns() < added_ns + 3 * S, "the node recovered too late for this test"
        await asyncio.sleep(max(0.0, (added_ns + 3 * S - time.time_ns()) / S) + 0.5)
        for name in ("patient", "forever", "defaulted"):
            assert await deletion(store, name) is None, name
        assert eviction.scheduled == {}
        assert eviction.evicted == 3

        # The deleted pods' reservations were released on their nodes in the same append.
        fresh = AggregateRepository(store)
        n1 = (await fresh.load(AggregateRef("Node", "", "n1"))).aggregate
        n2 = (await fresh.load(AggregateRef("Node", "", "n2"))).aggregate
        assert isinstance(n1, Node) and isinstance(n2, Node)
        assert sorted(n1.allocations) == ["default/defaulted", "default/forever", "default/patient"]
        assert n2.allocations == {}
    finally:
        beating.cancel()
        for task in running:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(beating, *running, return_exceptions=True), 10)


async def test_a_second_controller_resending_an_eviction_never_deletes_twice(
    nc, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    """The key is per pod uid: a new leader repeating the delete gets the first outcome."""
    from handlers.taint_eviction import eviction_key

    await client.send("Node", "apply", {"manifest": node("n1")})
    created = await client.send("Pod", "create", {"manifest": pod("p")})
    evictor = CommandClient(nc, actor=ACTOR)
    body = {"name": "p", "namespace": "default", "reason": "evicted: x:NoExecute not tolerated"}
    first = await evictor.send("Pod", "delete", body, idempotency_key=eviction_key(created.uid))
    again = await evictor.send("Pod", "delete", body, idempotency_key=eviction_key(created.uid))
    assert again.replayed and again.seqs == first.seqs
    events = await store.read_subject(event_subject("Pod", "default", "p"))
    assert [e.envelope.type for e in events] == ["PodCreated", "PodDeleted"]

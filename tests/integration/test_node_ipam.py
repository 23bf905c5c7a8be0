"""The node IPAM controller against a real nats-server: every node gets its own range of the
cluster CIDR, as an event, and never one another node holds — not even when two controllers
believe they lead at once; a stated range is honoured or refused with the reason; a deleted
node's range goes back; a full cluster CIDR refuses and the refused node gets the next range
that comes free."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from core.network.ranges import ClusterCIDR
from core.nodes.status import assigned_pod_cidr, node_condition
from handlers.gateway import Gateway
from handlers.node_ipam import NodeIPAMController
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.repository import AggregateRepository
from streams.subjects import event_subject
from tests.conftest import RunningServer
from tests.integration.support import cli, eventually

pytestmark = pytest.mark.integration


class Leading:
    """A lease this process always holds: two of these are two controllers that both believe
    they lead (a hand-over where the old leader has not noticed yet)."""

    holder = "test"
    is_leader = True

    async def renew(self) -> bool:
        return True

    async def resign(self) -> None:
        """Nothing held."""


@contextlib.asynccontextmanager
async def controller(
    store: EventStore, cluster: ClusterCIDR
) -> AsyncIterator[tuple[NodeIPAMController, Projection[ClusterModel]]]:
    projection = Projection(ClusterModel(), store)
    await projection.catch_up()
    await projection.follow()
    ipam = NodeIPAMController(
        AggregateRepository(store), projection, Leading(), cluster=cluster, retry_seconds=0.1
    )
    ready = asyncio.Event()
    task = asyncio.create_task(ipam.run(ready))
    await ready.wait()
    try:
        yield ipam, projection
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await projection.stop()


def node(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}


async def register(client: CommandClient, name: str, **spec: Any) -> None:
    await client.send("Node", "apply", {"manifest": node(name, **spec)})


def ranges(projection: Projection[ClusterModel]) -> dict[str, str | None]:
    return {r.name: assigned_pod_cidr(r.manifest) for r in projection.model.list("Node")}


def holders(projection: Projection[ClusterModel]) -> dict[str, str]:
    return {
        r.manifest["spec"]["cidr"]: r.manifest["spec"].get("nodeName", "")
        for r in projection.model.list("PodCIDR")
    }


async def test_every_node_gets_its_own_range_as_an_event_with_its_range_object(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    async with controller(store, ClusterCIDR.parse("100.99.0.0/22", 24)) as (_, seen):
        for name in ("a", "b", "c"):
            await register(client, name)

        async def all_assigned() -> bool:
            return len(ranges(seen)) == 3 and None not in ranges(seen).values()

        await eventually(all_assigned)
        assert sorted(ranges(seen).values()) == [
            "100.99.0.0/24", "100.99.1.0/24", "100.99.2.0/24"
        ]  # fmt: skip
        assert holders(seen) == {cidr: name for name, cidr in ranges(seen).items()}
        events = await store.read_subject(event_subject("Node", "", "a"))
        assigned = [e.envelope for e in events if e.envelope.type == "NodePodCIDRAssigned"]
        assert len(assigned) == 1 and assigned[0].actor == "system:node-ipam-controller"
        record = seen.model.get("Node", "", "a")
        assert record is not None
        assert record.manifest["spec"]["podCIDRs"] == [record.manifest["spec"]["podCIDR"]]

        # A node agent re-registering (its own conditions, no spec) keeps the range.
        again = {**node("a"), "status": {"conditions": [{"type": "PodNetworkReady",
                                                          "status": "True", "reason": "x"}]}}  # fmt: skip
        await client.send("Node", "apply", {"manifest": again})
        await seen.wait_for_log_end()
        assert ranges(seen)["a"] == assigned[0].payload["pod_cidr"]


async def test_two_controllers_leading_at_once_never_give_one_range_to_two_nodes(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    # The old leader has not noticed the hand-over, and the new one was started with another
    # cluster CIDR overlapping the old (an operator changed --cluster-cidr): they pick
    # different ranges for one node, and the same range for different nodes.
    old, new = ClusterCIDR.parse("100.99.0.0/20", 24), ClusterCIDR.parse("100.99.8.0/21", 24)
    async with controller(store, old) as (first, seen), controller(store, new) as (second, _):
        await asyncio.gather(*(register(client, f"n{i}") for i in range(12)))

        async def all_assigned() -> bool:
            return len(ranges(seen)) == 12 and None not in ranges(seen).values()

        await eventually(all_assigned, timeout=30)
        await seen.wait_for_log_end()
        given = list(ranges(seen).values())
        assert len(set(given)) == 12  # no range twice
        assert holders(seen) == {cidr: name for name, cidr in ranges(seen).items()}
        assert first.assigned + second.assigned == 12
        for name in ranges(seen):
            events = await store.read_subject(event_subject("Node", "", name))
            assert [e.envelope.type for e in events].count("NodePodCIDRAssigned") == 1


async def test_nodes_waiting_at_once_get_their_ranges_in_shared_atomic_appends(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    # A new leader finds 40 nodes without a range, two of them stating the same one: the
    # ranges are appended many nodes at a time (one correlation per append), each still with
    # its expectations, so the second twin is refused in the very append that gives the first
    # its range.
    await asyncio.gather(*(register(client, f"n{i}") for i in range(38)))
    await register(client, "twin-a", podCIDR="100.99.60.0/24")
    await register(client, "twin-b", podCIDR="100.99.60.0/24")
    async with controller(store, ClusterCIDR.parse("100.99.0.0/18", 24)) as (ipam, seen):

        async def answered() -> bool:
            record = seen.model.get("Node", "", "twin-b")
            refused = bool(record and node_condition(record.manifest, "NetworkUnavailable"))
            return refused and sum(cidr is not None for cidr in ranges(seen).values()) == 39

        await eventually(answered, timeout=30)
        given = ranges(seen)
        assert given["twin-a"] == "100.99.60.0/24" and given["twin-b"] is None
        assert len({cidr for cidr in given.values() if cidr}) == 39
        assert holders(seen) == {cidr: name for name, cidr in given.items() if cidr}
        assert ipam.assigned == 39 and ipam.refused == 1
        correlations = set()
        for name in given:
            events = await store.read_subject(event_subject("Node", "", name))
            answers = [e.envelope for e in events if e.envelope.type.startswith("NodePodCIDR")]
            assert len(answers) == 1, name
            correlations.add(answers[0].correlation_id)
        assert len(correlations) <= 4, f"{len(correlations)} appends for 40 nodes"


async def test_two_leaders_batching_the_same_waiting_nodes_never_give_one_range_twice(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    # Both find the same 30 nodes waiting and append their claims many at a time; their
    # cluster CIDRs overlap, so the appends collide on nodes and on ranges: every node ends
    # with one range, every range with one node.
    await asyncio.gather(*(register(client, f"n{i}") for i in range(30)))
    old, new = ClusterCIDR.parse("100.99.0.0/19", 24), ClusterCIDR.parse("100.99.8.0/21", 24)
    async with controller(store, old) as (first, seen), controller(store, new) as (second, _):

        async def all_assigned() -> bool:
            return len(ranges(seen)) == 30 and None not in ranges(seen).values()

        await eventually(all_assigned, timeout=30)
        await seen.wait_for_log_end()
        given = list(ranges(seen).values())
        assert len(set(given)) == 30
        assert holders(seen) == {cidr: name for name, cidr in ranges(seen).items()}
        assert first.assigned + second.assigned == 30
        for name in ranges(seen):
            events = await store.read_subject(event_subject("Node", "", name))
            assert [e.envelope.type for e in events].count("NodePodCIDRAssigned") == 1


async def test_a_stated_range_is_honoured_if_free_and_refused_with_the_reason_otherwise(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    async with controller(store, ClusterCIDR.parse("100.99.0.0/22", 24)) as (_, seen):
        await register(client, "mine", podCIDR="100.99.2.0/24")
        await register(client, "outside", podCIDR="10.20.0.0/24")

        async def decided() -> bool:
            record = seen.model.get("Node", "", "outside")
            return (
                ranges(seen).get("mine") is not None
                and record is not None
                and (node_condition(record.manifest, "NetworkUnavailable") is not None)
            )

        await eventually(decided)
        assert ranges(seen)["mine"] == "100.99.2.0/24"
        record = seen.model.get("Node", "", "outside")
        assert record is not None
        condition = node_condition(record.manifest, "NetworkUnavailable")
        assert condition is not None and condition["status"] == "True"
        assert condition["reason"] == "CIDRNotAvailable"
        assert condition["message"] == (
            "podCIDR 10.20.0.0/24 is outside the cluster CIDR 100.99.0.0/22"
        )
        assert ranges(seen)["outside"] is None

        await register(client, "copycat", podCIDR="100.99.2.0/24")

        async def refused() -> bool:
            record = seen.model.get("Node", "", "copycat")
            found = record and node_condition(record.manifest, "NetworkUnavailable")
            return bool(found)

        await eventually(refused)
        record = seen.model.get("Node", "", "copycat")
        assert record is not None
        condition = node_condition(record.manifest, "NetworkUnavailable")
        assert condition is not None
        assert condition["message"] == "podCIDR 100.99.2.0/24 is held by node mine"
        assert holders(seen)["100.99.2.0/24"] == "mine"
        # Changing a range once held is refused by the gateway, as by the API server.
        with pytest.raises(Exception, match="may not change podCIDR"):
            await register(client, "mine", podCIDR="100.99.3.0/24")


async def test_a_deleted_nodes_range_goes_back_and_a_full_cluster_refuses_until_then(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    async with controller(store, ClusterCIDR.parse("100.99.0.0/23", 24)) as (_, seen):
        await register(client, "a")
        await register(client, "b")

        async def both() -> bool:
            return len(ranges(seen)) == 2 and None not in ranges(seen).values()

        await eventually(both)
        freed = ranges(seen)["a"]
        await register(client, "c")

        async def c_refused() -> bool:
            record = seen.model.get("Node", "", "c")
            return bool(record and node_condition(record.manifest, "NetworkUnavailable"))

        await eventually(c_refused)
        record = seen.model.get("Node", "", "c")
        assert record is not None
        condition = node_condition(record.manifest, "NetworkUnavailable")
        assert condition is not None and condition["reason"] == "CIDRNotAvailable"
        assert "100.99.0.0/23 is full: all 2 node ranges (/24) are held" in condition["message"]

        await client.send("Node", "delete", {"name": "a"})

        async def c_gets_the_freed_range() -> bool:
            return ranges(seen).get("c") == freed

        await eventually(c_gets_the_freed_range)
        assert holders(seen)[str(freed)] == "c"
        record = seen.model.get("Node", "", "c")
        assert record is not None
        condition = node_condition(record.manifest, "NetworkUnavailable")
        assert condition is not None and condition["status"] == "False"
        events = await store.read_subject(
            event_subject("PodCIDR", "", str(freed).replace("/", "-"))
        )
        types = [e.envelope.type for e in events]
        assert types == ["PodCIDRCreated", "PodCIDRDeleted", "PodCIDRCreated"]
        deleted = events[1].envelope
        assert deleted.payload["reason"] == f"node a was deleted: its podCIDR {freed} is free"


async def test_a_node_created_again_gets_a_new_range_and_its_old_one_goes_back(
    gateway: Gateway, client: CommandClient, store: EventStore, nc: Client
) -> None:
    async with controller(store, ClusterCIDR.parse("100.99.0.0/22", 24)) as (_, seen):
        await register(client, "a")

        async def assigned() -> bool:
            return ranges(seen).get("a") is not None

        await eventually(assigned)
        first = ranges(seen)["a"]
        await client.send("Node", "delete", {"name": "a"})
        await register(client, "a")

        async def moved() -> bool:
            given = ranges(seen).get("a")
            # Its range object folded too (a separate event: under load it may come later).
            return (
                given is not None
                and given != first
                and first not in holders(seen)
                and holders(seen).get(given) == "a"
            )

        await eventually(moved)  # round robin: the range just released is not handed out
        assert list(holders(seen).values()) == ["a"]


async def test_the_ranges_in_use_are_listed_with_their_nodes(
    gateway: Gateway,
    client: CommandClient,
    store: EventStore,
    nats_server: RunningServer,
    queries: None,
) -> None:
    async with controller(store, ClusterCIDR.parse("100.99.0.0/22", 24)) as (_, seen):
        await register(client, "a")

        async def assigned() -> bool:
            return ranges(seen).get("a") is not None

        await eventually(assigned)
        shown = await cli(nats_server.url, "get", "podcidrs")
        assert shown.exit_code == 0, shown.output
        header, row = shown.output.splitlines()
        assert header.split() == ["NAME", "CIDR", "NODE", "AGE"]
        assert row.split()[:3] == ["100.99.0.0-24", "100.99.0.0/24", "a"]

"""NodeRestriction at the gateway, against a real nats-server: a node agent's identity (signed
with a control-plane key, acting as ``system:node/<name>`` as fleetlog's agents do) writes its
own Node and may delete the pods bound to it, but cordoning, re-registering or deleting another
node's objects is refused with kube's words, nothing appended, and audited (rejected, by the NodeRestriction stage)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from nats.aio.client import Client

from core.access.commandauth import node_agent_identity
from handlers.gateway import Gateway
from streams.commandbus import CommandClient, CommandFailed
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from tests.integration.test_signed_commands import (
    CONTROL_PLANE,
    audit_of,
    connect_as,  # noqa: F401 - a fixture
    signing_gateway,  # noqa: F401 - a fixture
)

pytestmark = pytest.mark.integration


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "10"}}}  # fmt: skip


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "a"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}  # fmt: skip


async def refused(send: Any) -> CommandFailed:
    with pytest.raises(CommandFailed) as failure:
        await send
    assert failure.value.code == "forbidden"
    return failure.value


async def test_a_node_agent_writes_only_its_own_node_and_pods(
    nc: Client,
    store: EventStore,
    signing_gateway: Gateway,  # noqa: F811
    connect_as: Any,  # noqa: F811
) -> None:
    setup = CommandClient(nc, actor="test:setup")
    for name in ("n1", "n2"):
        await setup.send("Node", "apply", {"manifest": node(name)})
    for name, bound in (("on-n1", "n1"), ("on-n2", "n2")):
        await setup.send("Pod", "apply", {"manifest": pod(name)})
        await setup.send("Pod", "bind", {"name": name, "namespace": "a", "node": bound})
    agent = await connect_as(CONTROL_PLANE, actor="system:node/n1")

    before = await store.stream_last_seq()
    cordon = await refused(agent.send("Node", "cordon", {"name": "n2"}))
    assert str(cordon) == 'nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2"'
    again = await refused(agent.send("Node", "apply", {"manifest": node("n2")}))
    assert 'node "n1" is not allowed to modify node "n2"' in str(again)
    delete = await refused(agent.send("Pod", "delete", {"name": "on-n2", "namespace": "a"}))
    assert str(delete) == (
        'pods "on-n2" is forbidden: node "n1" can only delete pods with spec.nodeName set to itself'
    )
    change = await refused(agent.send("Pod", "apply", {"manifest": pod("on-n2")}))
    assert 'User "system:node/n1" cannot patch resource "pods"' in str(change)
    create = await refused(agent.send("Pod", "apply", {"manifest": pod("new")}))
    assert 'node "n1" can only create mirror pods' in str(create)
    assert await store.stream_last_seq() == before  # nothing appended

    record = await audit_of(nc, lambda r: r.actor == "system:node/n1" and r.verb == "cordon")
    assert record.outcome == "rejected"  # as every admission refusal is recorded
    assert any("denied by NodeRestriction" in note for note in record.admission)

    await agent.send("Node", "cordon", {"name": "n1"})
    await agent.send("Node", "uncordon", {"name": "n1"})
    await agent.send("Pod", "delete", {"name": "on-n1", "namespace": "a"})


AGENTS = Credentials(generate_seed())


async def test_the_node_agents_key_commands_only_as_a_node(
    nc: Client,
    store: EventStore,
    connect_as: Any,  # noqa: F811
) -> None:
    gateway = await Gateway.create(
        nc, store, identities={AGENTS.public_key: node_agent_identity("agent")}
    )
    ready = asyncio.Event()
    task = asyncio.create_task(gateway.run(ready))
    await ready.wait()
    try:
        await CommandClient(nc, actor="test:setup").send(
            "Namespace", "apply", {"manifest": {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": "a"}}}
        )  # fmt: skip
        before = await store.stream_last_seq()
        for actor in ("system:replicaset-controller", "system:agent", "alice", "system:node/"):
            posing = await connect_as(AGENTS, actor=actor)
            with pytest.raises(CommandFailed) as failure:
                await posing.send("Pod", "apply", {"manifest": pod(f"p{len(actor)}")})
            assert failure.value.code == "unauthorized"
            assert "acts only as a node (system:node/NAME)" in str(failure.value)
        assert await store.stream_last_seq() == before
        agent = await connect_as(AGENTS, actor="system:node/n1")
        await agent.send("Node", "apply", {"manifest": node("n1")})
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)

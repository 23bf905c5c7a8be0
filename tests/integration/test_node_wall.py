"""The node agents' key behind the NATS wall, against a real nats-server configured as ``fleetlog
up`` configures its own (``streams.natsauth``, profile ``node``): an agent appends its pods'
and nodes' events, ships usage and renews its lease, but may not append other kinds' events,
write the audit trail, a leader lease or a nonce, delete or purge a stream, or join the
gateway's queue group."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from core.access.commandauth import control_plane_identity, node_agent_identity
from handlers.agent.agent import NodeAgent
from handlers.agent.network import NetworkOptions
from handlers.agent.node import NodeCapacity
from handlers.gateway import QUEUE_GROUP, Gateway
from handlers.scheduler import Scheduler
from projections.cluster import ClusterModel
from projections.podconfig import PodConfigService
from projections.runtime import Projection
from streams import connection, jsapi
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import FLEET_STREAM, LEADER_BUCKET, NONCE_BUCKET, ensure_streams
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from streams.leases import NodeLeases
from streams.natsauth import NatsUser, Profile, authorization_config
from streams.nodestream import session_subject
from streams.server import EmbeddedServer, free_port
from streams.telemetry import publish_node_usage, read_logs
from tests.integration.agent.runtime_support import TrackedRuntime
from tests.integration.support import eventually
from tests.integration.test_natswall import _violation
from tests.integration.test_read_rbac import serving

pytestmark = pytest.mark.integration

CONTROL = Credentials(generate_seed())
AGENTS = Credentials(generate_seed())


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[Client, Client]]:
    """(the node agents' connection, the control plane's) to a walled server."""
    server = EmbeddedServer(data_dir=tmp_path / "walled", port=free_port())
    server.authorization = authorization_config([
        NatsUser(CONTROL.public_key, Profile.CONTROL_PLANE, "control-plane"),
        NatsUser(AGENTS.public_key, Profile.NODE, "agent"),
    ])  # fmt: skip
    await server.start()
    control = await connect(server.url, name="control-plane", credentials=CONTROL)
    await ensure_streams(control)
    node = await connect(server.url, name="agent", credentials=AGENTS)
    try:
        yield node, control
    finally:
        for nc in (node, control):
            with contextlib.suppress(Exception):
                await nc.close()
        await server.stop()


async def _last_seq(control: Client) -> int:
    return int((await EventStore(control).stream_info())["state"]["last_seq"])


async def test_an_agent_does_its_work_behind_the_wall(agent: tuple[Client, Client]) -> None:
    node, _ = agent
    seen = len(connection.refusals())
    js = jsapi.jetstream(node)
    await js.publish("fleet.evt.pod.a.web", b"x", timeout=5)  # its pods' steps
    await js.publish("fleet.evt.node._.n1", b"x", timeout=5)  # its node's reservation
    await ensure_streams(node)  # what `fleetlog agent` does first: nothing to change
    leases = await NodeLeases.open(node)
    await leases.renew("n1", time.time_ns())
    await publish_node_usage(node, "n1", cpu_millicores=1, memory_bytes=1,
                             cpu_capacity_millicores=1000, memory_capacity_bytes=1 << 30, pods=0)  # fmt: skip
    await node.subscribe(session_subject("n1"))
    assert (await EventStore(node).stream_info())["state"]["last_seq"] == 2  # it reads the log
    await node.flush()
    assert connection.refusals()[seen:] == []


async def test_an_agent_may_not_do_the_gateways_or_the_controllers_work(
    agent: tuple[Client, Client],
) -> None:
    node, control = agent
    before = await _last_seq(control)
    for subject in ("fleet.evt.deployment.a.web", "fleet.evt.rolebinding.a.admin"):
        await node.publish(subject, b"forged")
        await node.flush()
        await _violation(f'publish to "{subject}"')
    for subject in (
        "fleet.audit.accepted.pod.apply.alice", f"$KV.{LEADER_BUCKET}.controllers",
        f"$KV.{NONCE_BUCKET}.x", "fleet.cmd.user.create",
    ):  # fmt: skip
        await node.publish(subject, b"forged")
        await node.flush()
        await _violation(f'publish to "{subject.lower()}"')
    for call in ("STREAM.DELETE", "STREAM.PURGE"):
        subject = f"$JS.API.{call}.{FLEET_STREAM}"
        with pytest.raises(TimeoutError):
            await node.request(subject, b"{}", timeout=1)
        await _violation(f'publish to "{subject.lower()}"')
    await node.subscribe("fleet.cmd.>", queue=QUEUE_GROUP)
    await node.flush()
    await _violation(f'subscription to "fleet.cmd.>" using queue "{QUEUE_GROUP}"')
    assert await _last_seq(control) == before


async def test_a_node_agent_runs_a_pod_behind_the_wall_with_the_agents_key(
    agent: tuple[Client, Client], tmp_path: Path
) -> None:
    """The agent's normal work, end to end, under the node profile and with the gateway
    knowing its key as the node agents' (``system:node/NAME`` only): it registers, renews its
    lease, runs a pod, records its steps and ships its output."""
    node, control = agent
    seen = len(connection.refusals())
    async with EventStore(control) as store, EventStore(node) as node_store:
        gateway = await Gateway.create(
            control, store, identities={
                CONTROL.public_key: control_plane_identity("control-plane"),
                AGENTS.public_key: node_agent_identity("agent"),
            }, require_signatures=True,
        )  # fmt: skip
        projection = Projection(ClusterModel(), store)
        await projection.catch_up()
        await projection.follow()
        scheduler = Scheduler(control, store, share_work=False, initial_backoff=0.05)
        runtime = TrackedRuntime(tmp_path / "agent")
        worker = NodeAgent(
            node, node_store, name="n1", root=tmp_path / "agent",
            capacity=NodeCapacity("4", "8Gi"), heartbeat_seconds=1.0, usage_seconds=0.5,
            runtime=runtime, network=NetworkOptions(enabled=False),
        )  # fmt: skip
        try:
            async with serving(
                gateway, scheduler,
                PodConfigService(control, projection, gateway.secret_keys),
                worker,
            ):  # fmt: skip
                client = CommandClient(control, actor="test:setup")
                await client.send(
                    "Namespace",
                    "apply",
                    {
                        "manifest": {
                            "apiVersion": "v1",
                            "kind": "Namespace",
                            "metadata": {"name": "default"},
                        }
                    },
                )
                code = "print('hello from n1', flush=True); import time; time.sleep(60)"
                await client.send("Pod", "apply", {"manifest": {
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                    "spec": {"containers": [{"name": "main", "image": "process",
                                             "command": [sys.executable, "-c", code]}]},
                }})  # fmt: skip

                async def running() -> bool:
                    record = projection.model.get("Pod", "default", "web")
                    status = (record.manifest.get("status") or {}) if record else {}
                    return status.get("phase") == "Running"

                await eventually(running, 30)
                (item,) = [
                    r for r in [projection.model.get("Pod", "default", "web")] if r is not None
                ]
                shipped: list[bytes] = []

                async def output() -> bool:
                    shipped[:] = [
                        chunk async for chunk in read_logs(
                            control, "default", "web", "main", pod_uid=item.uid
                        )
                    ]  # fmt: skip
                    return b"hello from n1\n" in b"".join(shipped)

                await eventually(output, 30)
                (node_record,) = projection.model.list("Node")
                assert node_record.name == "n1"
        finally:
            await projection.stop()
            runtime.cleanup()
    assert connection.refusals()[seen:] == []

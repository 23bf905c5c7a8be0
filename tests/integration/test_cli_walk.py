"""Defects seen walking through the README, fixed as kubectl behaves, each checked through the
real CLI (in process) against a real nats-server with the gateway and the query service: logs of
a pod on a simulated node, manifests with an unknown kind or no object at all for ``apply -f``
and ``delete -f``, and the audit trail of a refused unknown kind."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client

from handlers.simnodes import SimNodeSpec
from ops.cli.observe import SIMULATED_NODE_LABEL
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from tests.integration.support import cli, eventually, workload_roles

pytestmark = pytest.mark.integration


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "process", "command": ["sleep", "1"]}]},
    }


def test_the_cli_knows_the_label_of_simulated_nodes() -> None:
    key, value = SIMULATED_NODE_LABEL
    assert SimNodeSpec().manifest(0)["metadata"]["labels"][key] == value


async def test_logs_of_a_pod_on_a_simulated_node_say_there_are_none(
    nats_server: Any,
    nc: Client,
    store: EventStore,
    client: CommandClient,
    projection: Projection[ClusterModel],
    queries: None,
) -> None:
    async with workload_roles(nc, store, projection, nodes=1):
        await client.send("Pod", "apply", {"manifest": pod("hello")})

        async def running() -> bool:
            record = projection.model.get("Pod", "default", "hello")
            return (
                record is not None
                and (record.manifest.get("status") or {}).get("phase") == "Running"
            )

        await eventually(running)
        result = await cli(nats_server.url, "logs", "hello")
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr.strip() == (
            'error: pod "hello" is on node "sim-0", a simulated node (fleetlog sim): it runs '
            'no containers, so container "main" has no logs'
        )

"""``fleetlog logs`` and ``fleetlog top`` in-process (click's CliRunner, in a thread with its own
event loop) against a real nats-server with the gateway and the query service running."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from ops.client import Session
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.telemetry import (
    ContainerUsage,
    log_headers,
    log_subject,
    publish_node_usage,
    publish_pod_usage,
)
from tests.integration.support import cli

pytestmark = pytest.mark.integration

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "containers": [
            {"name": "main", "image": "python:3.11", "command": ["python"]},
            {"name": "sidecar", "image": "busybox", "command": ["sleep", "1d"]},
        ]
    },
}


async def test_logs_and_top(nats_server, nc: Client, store: EventStore, queries: None) -> None:
    url = nats_server.url
    commands = CommandClient(nc, actor="user:alice")
    await commands.send("Pod", "apply", {"manifest": POD})
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}
    await commands.send("Node", "apply", {"manifest": node})
    (pod,) = await Session(nc, store, commands).query("Pod", namespace="default", name="web")

    for restart, text in ((0, b"first run\n"), (1, b"hello\nworld\nagain\n")):
        headers = log_headers(
            pod_uid=pod["uid"],
            restart=restart,
            stream="stdout",
            offset=0,
            data=text,
            partial=False,
        )
        await nc.jetstream().publish(log_subject("default", "web", "main"), text, headers=headers)

    result = await cli(url, "logs", "web")
    assert result.exit_code == 1
    assert "a container name must be specified for pod web, choose one of: [main sidecar]" in (
        result.output
    )
    result = await cli(url, "logs", "web", "-c", "main")
    assert (result.exit_code, result.output) == (0, "hello\nworld\nagain\n")
    result = await cli(url, "logs", "pod/web", "-c", "main", "--tail", "1")
    assert result.output == "again\n"
    assert (await cli(url, "logs", "web", "-c", "main", "--previous")).output == "first run\n"
    result = await cli(url, "logs", "web", "-c", "sidecar", "-p")
    assert result.exit_code == 1
    assert result.output.strip() == (
        'error: previous terminated container "sidecar" in pod "web" not found'
    )
    result = await cli(url, "logs", "nope", "-c", "main")
    assert result.output.strip() == 'error: pods "nope" not found'

    result = await cli(url, "top", "pods")
    assert (result.exit_code, result.output.strip()) == (1, "error: metrics not available yet")
    assert (await cli(url, "top", "nodes")).output.strip() == "error: metrics not available yet"
    await publish_pod_usage(
        nc, "default", "web",
        {"main": ContainerUsage(200, 48 << 20), "sidecar": ContainerUsage(50, 16 << 20)},
    )  # fmt: skip
    await publish_pod_usage(nc, "default", "gone", {"main": ContainerUsage(1, 1)})
    await publish_node_usage(
        nc, "node-a", cpu_millicores=1000, memory_bytes=2 << 30,
        cpu_capacity_millicores=4000, memory_capacity_bytes=8 << 30, pods=1,
    )  # fmt: skip
    lines = (await cli(url, "top", "pods")).output.splitlines()
    assert [line.split() for line in lines] == [
        ["NAME", "CPU(cores)", "MEMORY(bytes)"],
        ["web", "250m", "64Mi"],
    ]
    lines = (await cli(url, "top", "pods", "-A")).output.splitlines()
    assert lines[0].split()[0] == "NAMESPACE" and lines[1].split() == [
        "default",
        "web",
        "250m",
        "64Mi",
    ]
    lines = (await cli(url, "top", "nodes")).output.splitlines()
    assert [line.split() for line in lines] == [
        ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"],
        ["node-a", "1000m", "25%", "2048Mi", "25%"],
    ]

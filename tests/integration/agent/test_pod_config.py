"""Pods consume ConfigMaps and Secrets through a real agent: env from a key of each, envFrom
with a prefix, a secret volume bound read-only at its mountPath with its mode; the values come
from the control plane (``fleet.qry.podconfig``) for the pod bound to the asking node only; a
missing ConfigMap makes the container wait with kube's reason until it is created."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from handlers.agent.agent import NodeAgent
from handlers.agent.network import NetworkOptions
from handlers.agent.node import NodeCapacity
from handlers.agent.pods import WorkerConfig
from handlers.gateway import Gateway
from handlers.scheduler import Scheduler
from projections.cluster import ClusterModel
from projections.podconfig import POD_CONFIG_SUBJECT, PodConfigService
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.subjects import event_subject
from tests.integration.agent.runtime_support import TrackedRuntime
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

PY = sys.executable
NODE = "config-node"
PASSWORD = "pa55-w0rd-from-a-secret"


class Node:
    def __init__(self, nc: Client, store: EventStore, client: CommandClient, root: Path) -> None:
        self.nc, self.store, self.client, self.root = nc, store, client, root
        self.runtime = TrackedRuntime(root / "agent")

    async def waits(self, pod: str) -> list[dict[str, Any]]:
        events = await self.store.read_subject(event_subject("Pod", "default", pod))
        return [e.envelope.payload for e in events if e.envelope.type == "ContainerWaiting"]


@pytest.fixture
async def node(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient, tmp_path: Path
) -> AsyncIterator[Node]:
    projection = Projection(ClusterModel(), store)
    await projection.catch_up()
    await projection.follow()
    scheduler = Scheduler(nc, store, share_work=False, initial_backoff=0.05, max_backoff=0.2)
    running = Node(nc, store, client, tmp_path)
    agent = NodeAgent(
        nc, store, name=NODE, root=tmp_path / "agent", capacity=NodeCapacity("4", "8Gi"),
        heartbeat_seconds=1.0, config=WorkerConfig(backoff_initial_seconds=0.3),
        runtime=running.runtime, network=NetworkOptions(enabled=False),
    )  # fmt: skip
    ready = [asyncio.Event() for _ in range(3)]
    tasks = [
        asyncio.create_task(PodConfigService(nc, projection, gateway.secret_keys).run(ready[0])),
        asyncio.create_task(scheduler.run(ready[1])),
        asyncio.create_task(agent.run(ready[2])),
    ]
    for event in ready:
        await asyncio.wait_for(event.wait(), 15)
    try:
        yield running
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        running.runtime.cleanup()
        await projection.stop()


def config_map(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def pod(name: str, code: str, **container: Any) -> dict[str, Any]:
    volumes = container.pop("volumes", [])
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never", "volumes": volumes,
            "containers": [{"name": "main", "image": "process", "command": [PY, "-c", code],
                            **container}],
        },
    }  # fmt: skip


async def output(node: Node, pod_name: str) -> str:
    async def printed() -> bool:
        seen = [c for c in node.runtime.seen if c.spec.pod_name == pod_name]
        return bool(seen) and "END" in seen[0].stdout_path.read_text()

    await eventually(printed, timeout=30)
    container = next(c for c in node.runtime.seen if c.spec.pod_name == pod_name)
    return container.stdout_path.read_text()


async def test_a_pod_sees_its_secret_and_config_map_as_variables_and_files(
    node: Node, tmp_path: Path
) -> None:
    await node.client.send(
        "Secret", "apply",
        {"manifest": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                      "stringData": {"password": PASSWORD, "user": "app"}}},
    )  # fmt: skip
    await node.client.send("ConfigMap", "apply", {"manifest": config_map("settings", mode="fast")})
    mount = tmp_path / "mounted" / "db"
    one = tmp_path / "mounted" / "only-the-password"
    code = (
        "import os, stat; p = os.environ.get('MOUNT');"
        "print('PASSWORD=' + os.environ.get('DB_PASSWORD', '-'));"
        "print('MODE=' + os.environ.get('MODE', '-'));"
        "print('CFG_mode=' + os.environ.get('CFG_mode', '-'));"
        "print('MISSING=' + os.environ.get('MISSING', 'unset'));"
        "print('FILE=' + open(os.path.join(p, 'pw')).read());"
        "print('PERM=' + oct(stat.S_IMODE(os.stat(os.path.join(p, 'pw')).st_mode)));"
        "print('FILES=' + ','.join(sorted(os.listdir(p))));"
        "print('ONE=' + open(os.environ['ONE']).read());"
        "print('END')"
    )
    manifest = pod(
        "reader", code,
        env=[
            {"name": "MOUNT", "value": str(mount)},
            {"name": "ONE", "value": str(one)},
            {"name": "DB_PASSWORD",
             "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "MODE",
             "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "MISSING",
             "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        ],
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        volumeMounts=[{"name": "creds", "mountPath": str(mount), "readOnly": True},
                      {"name": "creds", "mountPath": str(one), "subPath": "pw"}],
        volumes=[{"name": "creds", "secret": {
            "secretName": "db", "defaultMode": 0o400,
            "items": [{"key": "password", "path": "pw"}]}}],
    )  # fmt: skip
    await node.client.send("Pod", "apply", {"manifest": manifest})
    printed = (await output(node, "reader")).split()
    assert f"PASSWORD={PASSWORD}" in printed and f"FILE={PASSWORD}" in printed
    assert "MODE=fast" in printed and "CFG_mode=fast" in printed
    assert "MISSING=unset" in printed and "PERM=0o400" in printed and "FILES=pw" in printed
    assert f"ONE={PASSWORD}" in printed  # a subPath mount: one file of the volume
    # Bound in the container's view only: the host's mount point stays empty.
    assert list(mount.iterdir()) == []


async def test_a_missing_config_map_makes_the_container_wait_until_it_exists(node: Node) -> None:
    code = "import os; print('GOT=' + os.environ['LEVEL']); print('END')"
    env = [{"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "level"}}}]
    await node.client.send("Pod", "apply", {"manifest": pod("patient", code, env=env)})

    async def waiting() -> bool:
        return any(
            w["reason"] == "CreateContainerConfigError"
            and w["message"] == 'configmap "x" not found'
            for w in await node.waits("patient")
        )

    await eventually(waiting, timeout=20)
    assert not [c for c in node.runtime.seen if c.spec.pod_name == "patient"]
    await node.client.send("ConfigMap", "apply", {"manifest": config_map("x", level="3")})
    assert "GOT=3" in (await output(node, "patient")).split()
    # One wait recorded, not one every retry.
    assert len(await node.waits("patient")) == 1


async def test_a_node_gets_the_values_only_of_pods_bound_to_it(node: Node) -> None:
    await node.client.send(
        "Secret", "apply",
        {"manifest": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"},
                      "data": {"k": base64.b64encode(b"v").decode()}}},
    )  # fmt: skip
    env = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}]
    await node.client.send("Pod", "apply", {"manifest": pod("bound", "print('END')", env=env)})
    await output(node, "bound")

    async def ask(asking_node: str) -> dict[str, Any]:
        request = {"node": asking_node, "namespace": "default", "pod": "bound"}
        reply = await node.nc.request(POD_CONFIG_SUBJECT, msgpack.packb(request), timeout=5)
        answer: dict[str, Any] = msgpack.unpackb(reply.data, raw=False)
        return answer

    assert (await ask(NODE))["secrets"] == {"t": {"k": b"v"}}
    other = await ask("another-node")
    assert not other["ok"] and other["error"]["code"] == "forbidden"


async def test_a_restarted_container_reads_the_secret_as_it_is_now(
    node: Node, tmp_path: Path
) -> None:
    def secret(value: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rotating"},
                "stringData": {"v": value}}  # fmt: skip

    await node.client.send("Secret", "apply", {"manifest": secret("first")})
    mount = tmp_path / "rotating"
    code = (
        "import os, sys, time; p = os.environ['MOUNT'];"
        "print('ENV=' + os.environ['V'] + ' FILE=' + open(p + '/v').read(), flush=True);"
        "time.sleep(0.5); sys.exit(1)"
    )
    manifest = pod(
        "rotator", code,
        env=[{"name": "MOUNT", "value": str(mount)},
             {"name": "V", "valueFrom": {"secretKeyRef": {"name": "rotating", "key": "v"}}}],
        volumeMounts=[{"name": "s", "mountPath": str(mount)}],
        volumes=[{"name": "s", "secret": {"secretName": "rotating"}}],
    )  # fmt: skip
    manifest["spec"]["restartPolicy"] = "Always"
    await node.client.send("Pod", "apply", {"manifest": manifest})

    def printed() -> list[str]:
        return [
            c.stdout_path.read_text().strip()
            for c in node.runtime.seen
            if c.spec.pod_name == "rotator" and c.stdout_path.exists()
        ]

    async def said(line: str) -> bool:
        return line in printed()

    await eventually(lambda: said("ENV=first FILE=first"), timeout=20)
    await node.client.send("Secret", "apply", {"manifest": secret("second")})
    await eventually(lambda: said("ENV=second FILE=second"), timeout=30)

"""A container's output bounded on the node and in the log, and a pod's files removed with it:
real nats-server, gateway, scheduler, agent and processes (``yes`` among them).

A container writing as fast as it can keeps about max-size x max-files on disk per stream (plus
what it writes while the rotator is about to look: milliseconds of its output), is
shipped at most a few seconds behind with a marker where output was skipped (``fleetlog logs``
shows it), and its shipping stops and its pod's directory goes seconds after the pod is deleted.
A finished pod keeps its files until it is deleted; a restarted agent removes what pods
deleted meanwhile left, never the directory of a container it adopted.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.pods.containerlogs import ContainerLogPolicy
from handlers.agent.agent import NodeAgent
from handlers.agent.logrotate import SHORTEST_S
from handlers.agent.network import NetworkOptions
from handlers.agent.node import NodeCapacity
from handlers.gateway import Gateway
from handlers.scheduler import Scheduler
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.subjects import event_subject
from streams.telemetry import LOGS_STREAM, log_subject
from tests.integration.agent.runtime_support import TrackedRuntime, alive
from tests.integration.support import cli, eventually

AGENT_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[\w+ *\] ")
"""A line of the agent's console log (structlog's dev renderer), not of a container."""

pytestmark = pytest.mark.integration

PY = sys.executable
NODE = "logs-node"
POLICY = ContainerLogPolicy(max_size=1024 * 1024, max_files=3)
ROTATOR_SLACK_S = 0.05
"""How late the rotator may be beyond its look every ``SHORTEST_S`` at a flooded file: its
wake-up (real-time: 0.1 ms at p99 with both cores busy) and a rotation (the copy of the last
bytes, and a truncation that waits for pages under writeback: up to ~40 ms on a busy disk).
So a writer adds at most this long's output to a file beyond its size."""
TYPICAL_SLACK_S = 0.01
"""Most of the time the rotator is not late at all: the median sample allows 10 ms."""


class Node:
    def __init__(self, nc: Any, store: EventStore, client: CommandClient, root: Path) -> None:
        self.nc, self.store, self.client, self.root = nc, store, client, root
        self.url = f"nats://{nc.connected_url.netloc}"
        self.runtime = TrackedRuntime(root)
        self.runtimes = [self.runtime]
        self.agent: NodeAgent | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> NodeAgent:
        self.agent = NodeAgent(
            self.nc, self.store, name=NODE, root=self.root,
            capacity=NodeCapacity("4", "8Gi"), heartbeat_seconds=1.0, usage_seconds=5.0,
            runtime=self.runtime, network=NetworkOptions(enabled=False), services=False,
            container_logs=POLICY, garbage_seconds=0.2,
        )  # fmt: skip
        ready = asyncio.Event()
        self.task = asyncio.create_task(self.agent.run(ready))
        await asyncio.wait_for(ready.wait(), 15)
        return self.agent

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def restart(self) -> None:
        await self.stop()
        self.runtime = TrackedRuntime(self.root)
        self.runtimes.append(self.runtime)
        await self.start()

    async def types(self, pod: str) -> list[str]:
        events = await self.store.read_subject(event_subject("Pod", "default", pod))
        return [e.envelope.type for e in events]

    async def uid(self, pod: str) -> str:
        assert self.agent is not None
        record = self.agent.projection.model.get("Pod", "default", pod)
        assert record is not None
        return record.uid


@pytest.fixture
async def node(
    nc: Any,
    store: EventStore,
    gateway: Gateway,
    queries: None,
    client: CommandClient,
    tmp_path: Path,
) -> AsyncIterator[Node]:
    scheduler = Scheduler(nc, store, share_work=False, initial_backoff=0.05, max_backoff=0.2)
    ready = asyncio.Event()
    scheduling = asyncio.create_task(scheduler.run(ready))
    await ready.wait()
    running = Node(nc, store, client, tmp_path / "agent")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
        scheduling.cancel()
        await asyncio.gather(scheduling, return_exceptions=True)
        for runtime in running.runtimes:
            runtime.cleanup()


def pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "main", "image": "process", "command": command}],
            "terminationGracePeriodSeconds": 2,
            **spec,
        },
    }


def written_bytes(pid: int) -> int:
    """Bytes process ``pid`` has written so far (``wchar``: its ``write`` calls' total)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no wchar in /proc/{pid}/io")


def disk_bytes(directory: Path) -> int:
    """Bytes the files under ``directory`` occupy on disk (blocks, not apparent sizes)."""
    total = 0
    for path in directory.rglob("*"):
        try:
            total += path.lstat().st_blocks * 512
        except FileNotFoundError:
            continue  # rotated away meanwhile
    return total


async def shipped_messages(nc: Any, pod: str) -> int:
    reply = await nc.request(
        f"$JS.API.STREAM.INFO.{LOGS_STREAM}",
        json.dumps({"subjects_filter": log_subject("default", pod, "main")}).encode(),
        timeout=5,
    )
    return sum(json.loads(reply.data)["state"].get("subjects", {}).values())


async def test_a_yes_container_is_bounded_on_disk_and_in_shipping_and_goes_with_its_pod(
    node: Node,
) -> None:
    yes = shutil.which("yes") or "/usr/bin/yes"
    await node.client.send("Pod", "apply", {"manifest": pod("flood", [yes])})

    async def started() -> bool:
        return "ContainerStarted" in await node.types("flood")

    await eventually(started, timeout=20)
    directory = node.root / "pods" / await node.uid("flood")
    process = node.runtime.seen[0]
    samples = []
    began, written = time.monotonic(), written_bytes(process.pid)
    finish = began + 3
    while time.monotonic() < finish:
        samples.append(await asyncio.to_thread(disk_bytes, directory))
        await asyncio.sleep(0.05)
    rate = (written_bytes(process.pid) - written) / (time.monotonic() - began)
    peak, typical = max(samples), sorted(samples)[len(samples) // 2]
    assert alive(process.pid)
    assert node.agent is not None and node.agent.shipper.rotations > 5
    # 2 streams of at most max-size x max-files each, plus what the writer adds while the
    # rotator is about to look or late (its measured rate: this host's speed, not a guess).
    bound = 2 * POLICY.disk_bound
    assert peak <= bound + rate * (SHORTEST_S + ROTATOR_SLACK_S), (rate, samples)
    assert typical <= bound + rate * (SHORTEST_S + TYPICAL_SLACK_S), (rate, samples)

    shown = await cli(node.url, "logs", "flood")
    assert shown.exit_code == 0, shown.output[-300:]
    # The runner holds this process's stdout while `logs` runs (in a thread), so the agent's
    # own log lines of those moments (it keeps shipping the flood) are in its output too:
    # they are not the container's.
    lines = [line for line in shown.output.splitlines() if not AGENT_LOG_LINE.match(line)]
    markers = [line for line in lines if line.startswith("[fleetlog: ")]
    assert markers, (node.agent.shipper.dropped, len(lines))
    assert all(m.endswith(" bytes of output dropped]") for m in markers), markers[:3]
    assert set(lines) - set(markers) == {"y"}

    await node.client.send("Pod", "delete", {"name": "flood"})
    deleted = time.monotonic()

    async def stopped() -> bool:
        return not alive(process.pid) and not node.agent.shipper.tracks_under(directory)  # type: ignore[union-attr]

    await eventually(stopped, timeout=20)
    settled = await shipped_messages(node.nc, "flood")
    await asyncio.sleep(1.0)
    assert await shipped_messages(node.nc, "flood") == settled  # shipping has stopped
    assert time.monotonic() - deleted < 15  # seconds, not minutes, after the delete

    async def removed() -> bool:
        return not directory.exists()

    await eventually(removed, timeout=10)


async def test_a_finished_pod_keeps_its_files_until_deleted_and_a_restart_clears_leftovers(
    node: Node,
) -> None:
    done = pod("done", [PY, "-c", "print('finished work')"], restartPolicy="Never")
    steady = pod("steady", [PY, "-c", "import time; print('up', flush=True); time.sleep(600)"])
    await node.client.send("Pod", "apply", {"manifest": done})
    await node.client.send("Pod", "apply", {"manifest": steady})

    async def settled() -> bool:
        return "PodSucceeded" in await node.types("done") and "PodReady" in await node.types(
            "steady"
        )

    await eventually(settled, timeout=20)
    finished = node.root / "pods" / await node.uid("done")
    running = node.root / "pods" / await node.uid("steady")
    await asyncio.sleep(1.0)  # several garbage passes
    assert (finished / "main" / "0" / "stdout").read_bytes() == b"finished work\n"
    shown = await cli(node.url, "logs", "done")
    assert shown.output == "finished work\n"  # kubectl logs works on a finished pod

    await node.client.send("Pod", "delete", {"name": "done"})

    async def gone() -> bool:
        return not finished.exists()

    await eventually(gone, timeout=10)
    assert running.exists()

    # While the agent is down: a pod's leftovers appear (its pod long gone).
    await node.stop()
    leftover = node.root / "pods" / "0f0f0f0f-gone" / "main" / "0"
    leftover.mkdir(parents=True)
    (leftover / "stdout").write_bytes(b"old\n")
    await node.restart()

    async def cleared() -> bool:
        return not leftover.parent.parent.exists()

    await eventually(cleared, timeout=10)
    adopted = node.runtime.seen
    assert [c.spec.pod_name for c in adopted] == ["steady"] and alive(adopted[0].pid)
    await asyncio.sleep(1.0)
    assert (running / "main" / "0" / "stdout").read_bytes() == b"up\n"  # never pulled away

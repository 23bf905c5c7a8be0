"""Benchmark of deployments: a 100-replica deployment to fully available, then a rolling update.

    python -m ops.bench_deployment [--replicas 100] [--nodes 20] [--start-delay 0.5]
                                   [--surge 25%] [--unavailable 25%]

A ``fleetlog up`` (scheduler, replica-set and deployment controllers, garbage collector; no
local agent) and a ``fleetlog sim`` of simulated nodes (which mark bound pods Running and Ready
after ``--start-delay``: a stand-in for image pull and start-up) run as separate processes on an
embedded nats-server. The benchmark creates the deployment through the gateway, waits for the
deployment controller to record a complete rollout (observed generation current, every replica
updated and available, no old replica left), then changes the pod template and waits again.

Figures come from the log itself (JetStream's store timestamps): time from the command's event
(``DeploymentCreated`` / ``DeploymentUpdated``) to the ``DeploymentStatusUpdated`` that reports
the rollout complete, and how many events were appended in between, by type.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.server import EmbeddedServer, free_port

DEFAULT_NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}


def deployment(replicas: int, version: str, surge: str, unavailable: str) -> dict[str, Any]:
    def amount(text: str) -> int | str:
        return text if text.endswith("%") else int(text)

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": amount(surge), "maxUnavailable": amount(unavailable)},
            },
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": f"bench:{version}",
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                        }
                    ]
                },
            },
        },
    }


class RolloutWatch:
    """Follows the log; ``done`` is set when the deployment's status reports the rollout of
    the generation ``goal`` complete."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.goal = 0
        self.started_seq = 0
        self.started_ns = 0
        self.finished: tuple[int, int] | None = None  # (seq, stored_ns)
        self.done = asyncio.Event()
        self.events: list[tuple[int, str]] = []

    def on_event(self, event: StoredEvent) -> None:
        e = event.envelope
        self.events.append((event.seq, e.type))
        if e.kind != "Deployment" or e.name != "bench":
            return
        if e.type in ("DeploymentCreated", "DeploymentUpdated"):
            self.started_seq, self.started_ns = event.seq, event.stored_ns
            self.goal = int(e.payload["manifest"]["metadata"].get("generation", 1))
            self.finished = None
            self.done.clear()
        elif e.type == "DeploymentStatusUpdated":
            status = e.payload["status"]
            complete = (
                status.get("observedGeneration") == self.goal
                and status.get("updatedReplicas") == self.replicas
                and status.get("availableReplicas") == self.replicas
                and status.get("replicas") == self.replicas
            )
            if complete and self.finished is None:
                self.finished = (event.seq, event.stored_ns)
                self.done.set()

    def report(self, label: str) -> None:
        assert self.finished is not None
        seq, stored_ns = self.finished
        counts = collections.Counter(t for s, t in self.events if self.started_seq < s <= seq)
        top = ", ".join(f"{name} {count}" for name, count in counts.most_common())
        print(
            f"{label}: {(stored_ns - self.started_ns) / 1e9:.2f} s, "
            f"{sum(counts.values())} events ({top})",
            flush=True,
        )


async def _wait_for_nodes(nc: Any, count: int) -> None:
    """Until ``count`` nodes have been created in the log."""
    seen: set[str] = set()
    enough = asyncio.Event()

    def on_event(event: StoredEvent) -> None:
        if event.envelope.type == "NodeCreated":
            seen.add(event.envelope.name)
            if len(seen) >= count:
                enough.set()

    async with EventStore(nc) as store:
        subscription = await store.subscribe(on_event)
        try:
            await asyncio.wait_for(enough.wait(), 60)
        finally:
            await subscription.unsubscribe()


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-deploy-"))
    server = EmbeddedServer(data_dir=workdir / "nats", port=free_port())
    await server.start()
    env = {
        **os.environ,
        "FLEETLOG_SERVER": server.url,
        "FLEETLOG_SEAL_KEY": str(workdir / "seal.key"),
    }
    children: list[subprocess.Popen[bytes]] = []
    try:
        nc = await connect(server.url, name="bench-deployment")
        await ensure_streams(nc)
        # Its own data directory and API port: another cluster on this machine must neither
        # feed it a snapshot of another log nor hold 6443.
        up = [sys.executable, "-m", "ops", "up", "--nats-url", server.url, "--no-agent"]
        up += ["--data-dir", str(workdir / "up"), "--api-port", "0"]
        children.append(
            subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, stopped below
                up,
                stdout=subprocess.DEVNULL,
                stderr=(workdir / "up.log").open("wb"),
                env=env,
            )
        )
        client = CommandClient(nc, actor="user:bench")
        deadline = time.monotonic() + 60
        while True:  # until `up` answers and has created the default namespace
            try:
                await client.send("Namespace", "apply", {"manifest": DEFAULT_NAMESPACE})
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        sim = ["sim", "--nodes", str(args.nodes), "--start-delay", str(args.start_delay)]
        children.append(
            subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, stopped below
                [sys.executable, "-m", "ops", *sim, "--cpu", "8", "--memory", "32Gi"],
                stdout=subprocess.DEVNULL,
                stderr=(workdir / "sim.log").open("wb"),
                env=env,
            )
        )
        await _wait_for_nodes(nc, args.nodes)
        watch = RolloutWatch(args.replicas)
        async with EventStore(nc) as store:
            subscription = await store.subscribe(watch.on_event, new_only=True)
            try:
                manifest = deployment(args.replicas, "1", args.surge, args.unavailable)
                await client.send("Deployment", "create", {"manifest": manifest})
                await asyncio.wait_for(watch.done.wait(), args.timeout)
                watch.report(f"{args.replicas} replicas to fully available")
                manifest = deployment(args.replicas, "2", args.surge, args.unavailable)
                await client.send("Deployment", "apply", {"manifest": manifest})
                await asyncio.wait_for(watch.done.wait(), args.timeout)
                watch.report(
                    f"rolling update of {args.replicas} (maxSurge {args.surge}, "
                    f"maxUnavailable {args.unavailable})"
                )
            finally:
                await subscription.unsubscribe()
        await nc.close()
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--start-delay", type=float, default=0.5)
    parser.add_argument("--surge", default="25%")
    parser.add_argument("--unavailable", default="25%")
    parser.add_argument("--timeout", type=float, default=300)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

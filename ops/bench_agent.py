"""Benchmark of the node agent: how fast process pods start, and what the agent costs at idle.

    python -m ops.bench_agent [--pods 100] [--idle 30]

Starts an embedded nats-server, a ``fleetlog up --no-agent`` (gateway, scheduler, controllers)
and one ``fleetlog agent`` process with a declared capacity of 100 cpus, so the agent is
measured on its own. Creates the pods in one burst through the gateway (each a ``sleep``
process, no probes, so Ready follows the start), then reads from the log (JetStream's store
timestamps): ``PodCreated`` → ``ContainerStarted`` (running) and → ``PodReady``, p50/p99.
Then it samples the agent process over ``--idle`` seconds with every pod running: cpu time
(utime + stime from /proc) as a share of one core, and its resident memory. The pods are
deleted at the end and the agent must stop every process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.errors import FleetError
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.eventstore import EventStore
from streams.server import EmbeddedServer, free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def pod(name: str, sleep: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "containers": [{"name": "main", "image": "process", "command": [sleep, "3600"]}],
            "terminationGracePeriodSeconds": 2,
        },
    }


async def timeline(store: EventStore) -> dict[str, dict[str, int]]:
    seen: dict[str, dict[str, int]] = {}

    def fold(event: object) -> None:
        envelope = event.envelope  # type: ignore[attr-defined]
        if envelope.kind == "Pod" and envelope.namespace == "bench":
            seen.setdefault(envelope.name, {}).setdefault(envelope.type, event.stored_ns)  # type: ignore[attr-defined]

    await store.replay(fold, filter_subject="fleet.evt.pod.bench.*")
    return seen


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-agent-"))
    server = EmbeddedServer(data_dir=workdir / "nats", port=free_port())
    await server.start()
    env = {**os.environ, "FLEETLOG_SERVER": server.url}
    sleep = shutil.which("sleep") or "/bin/sleep"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        nc = await connect(server.url, name="bench-agent")
        await ensure_streams(nc)
        processes.append(
            subprocess.Popen(  # noqa: ASYNC220 - long-lived children, stopped below
                [sys.executable, "-m", "ops", "up", "--nats-url", server.url, "--no-agent"],
                stderr=(workdir / "up.log").open("wb"),
                env=env,
            )
        )
        client = CommandClient(nc, actor="bench")
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
        for _ in range(100):
            try:
                await client.send("Namespace", "apply", {"manifest": namespace})
                break
            except FleetError:  # the gateway is still starting
                await asyncio.sleep(0.2)
        agent_log = workdir / "agent.log"
        agent = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, stopped below
            [sys.executable, "-m", "ops", "agent", "--name", "bench-node", "--cpu", "100",
             "--memory", "64Gi", "--pods", "500", "--root", str(workdir / "agent")],
            stderr=agent_log.open("wb"), env=env,
        )  # fmt: skip
        processes.append(agent)
        while "ready" not in agent_log.read_text():
            assert agent.poll() is None, agent_log.read_text()
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # the node becomes Ready for the scheduler
        async with EventStore(nc) as store:
            await asyncio.gather(
                *(
                    client.send("Pod", "apply", {"manifest": pod(f"p{i}", sleep)})
                    for i in range(args.pods)
                )
            )
            deadline = time.monotonic() + 300
            while True:
                seen = await timeline(store)
                if sum("PodReady" in events for events in seen.values()) >= args.pods:
                    break
                assert time.monotonic() < deadline, "pods did not all become Ready"
                await asyncio.sleep(0.5)
            running = [(e["ContainerStarted"] - e["PodCreated"]) / 1e6 for e in seen.values()]
            ready = [(e["PodReady"] - e["PodCreated"]) / 1e6 for e in seen.values()]
            print(
                f"{args.pods} process pods: created→running p50 "
                f"{statistics.median(running):,.0f} ms, p99 {percentile(running, 0.99):,.0f} ms; "
                "created→Ready p50 "
                f"{statistics.median(ready):,.0f} ms, p99 {percentile(ready, 0.99):,.0f} ms; "
                f"all Ready after {max(ready) / 1000:.1f} s",
                flush=True,
            )
            await asyncio.sleep(5)
            before, started = cpu_seconds(agent.pid), time.monotonic()
            await asyncio.sleep(args.idle)
            share = (cpu_seconds(agent.pid) - before) / (time.monotonic() - started)
            print(
                f"agent at idle with {args.pods} pods: {share * 100:.1f} % of a core, "
                f"RSS {rss_bytes(agent.pid) / 2**20:.0f} MiB (over {args.idle:.0f} s)",
                flush=True,
            )
            await asyncio.gather(
                *(
                    client.send("Pod", "delete", {"name": f"p{i}", "namespace": "bench"})
                    for i in range(args.pods)
                )
            )
            deadline = time.monotonic() + 60
            while list((workdir / "agent").glob("pods/*/*/*/container.json")):
                assert time.monotonic() < deadline, "the agent did not stop every pod"
                await asyncio.sleep(0.5)
        await nc.close()
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        for state in (workdir / "agent").glob("pods/*/*/*/container.json"):
            with contextlib.suppress(ProcessLookupError, ValueError, KeyError, OSError):
                os.killpg(int(json.loads(state.read_text())["pgid"]), signal.SIGKILL)
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--idle", type=float, default=30.0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

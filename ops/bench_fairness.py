"""Benchmark of API Priority and Fairness at the gateway: ten clients, one of which floods.

    python -m ops.bench_fairness [--seconds 10] [--quiet-rate 20] [--flood-in-flight 300]
                                 [--clients 10] [--nats-url URL] [--keep-workdir]

Why this exists: issue 17 asks that one noisy client cannot starve the others. Against one
``fleetlog up --no-agent --no-scheduler`` (its own process, as in production), two phases of
``--seconds`` each:

* ``calm``: ``--clients`` - 1 quiet users (``user:quiet-N``), each offering pod creates at
  ``--quiet-rate``/s (open loop);
* ``flood``: the same quiet users, and ``user:flood`` keeping ``--flood-in-flight`` creates in
  flight the whole time.

For each phase it prints the quiet users' commands (done, refused "too many requests" after the
client's polite retries, timed out) with their round trip p50/p99/max, and the flood's commands
per second and refusals. Fairness holds when the quiet users' figures barely move while the flood
runs: the flood fills its own queues and is refused there. On an open server (no NATS wall)
the users are the stated ones. Figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ops.bench_commands import running_up
from ops.bench_log import percentile, server_for
from ops.benchup import pod_manifest
from streams.commandbus import CommandClient, CommandFailed
from streams.connection import connect


@dataclass
class Tally:
    """What one group of clients saw in a phase."""

    latencies_ms: list[float] = field(default_factory=list)
    refused: int = 0
    timed_out: int = 0
    failed: int = 0

    def line(self, label: str, seconds: float) -> str:
        done = len(self.latencies_ms)
        latency = (
            f"p50 {percentile(self.latencies_ms, 0.5):.1f} ms, "
            f"p99 {percentile(self.latencies_ms, 0.99):.1f} ms, max {max(self.latencies_ms):.1f} ms"
            if self.latencies_ms
            else "none done"
        )
        return (
            f"  {label:<24} {done:6d} done ({done / seconds:7.1f}/s), {self.refused} refused "
            f"(too many requests), {self.timed_out} timed out, {self.failed} other: {latency}"
        )


async def send_one(client: CommandClient, name: str, tally: Tally) -> None:
    start = time.perf_counter()
    try:
        await client.send("Pod", "create", {"manifest": pod_manifest(name)}, timeout=10)
    except CommandFailed as exc:
        if exc.code == "too_many_requests":
            tally.refused += 1
        elif exc.code == "timeout":
            tally.timed_out += 1
        else:
            tally.failed += 1
        return
    tally.latencies_ms.append((time.perf_counter() - start) * 1000)


async def quiet_user(
    client: CommandClient, rate: float, until: float, tag: str, tally: Tally
) -> None:
    """Open loop: one create every 1/rate s, whatever the answers take."""
    async with asyncio.TaskGroup() as sends:
        index = 0
        next_at = time.monotonic()
        while next_at < until:
            sends.create_task(send_one(client, f"{tag}-{index}", tally))
            index += 1
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def flooding_user(
    client: CommandClient, in_flight: int, until: float, tag: str, tally: Tally
) -> None:
    """Closed loop: ``in_flight`` creates outstanding until the end."""

    async def worker(worker_id: int) -> None:
        index = 0
        while time.monotonic() < until:
            await send_one(client, f"{tag}-{worker_id}-{index}", tally)
            index += 1

    async with asyncio.TaskGroup() as workers:
        for worker_id in range(in_flight):
            workers.create_task(worker(worker_id))


async def phase(url: str, args: argparse.Namespace, *, flood: bool, label: str) -> None:
    quiet_count = args.clients - 1
    connections = [await connect(url, name=f"bench-fair-{i}") for i in range(args.clients)]
    try:
        quiet = Tally()
        flooded = Tally()
        until = time.monotonic() + args.seconds
        async with asyncio.TaskGroup() as users:
            for i in range(quiet_count):
                client = CommandClient(connections[i], actor=f"user:quiet-{i}")
                users.create_task(
                    quiet_user(client, args.quiet_rate, until, f"{label}-q{i}", quiet)
                )
            if flood:
                client = CommandClient(connections[-1], actor="user:flood")
                users.create_task(
                    flooding_user(client, args.flood_in_flight, until, f"{label}-f", flooded)
                )
        flooding = f", one flooding with {args.flood_in_flight} in flight" if flood else ""
        print(f"{label}: {quiet_count} quiet users at {args.quiet_rate:g}/s each{flooding}")
        print(quiet.line("quiet users", args.seconds))
        if flood:
            print(flooded.line("flood", args.seconds))
    finally:
        for nc in connections:
            await nc.close()


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-fairness-"))
    try:
        async with server_for(args.nats_url, workdir / "nats") as url:
            async with running_up(url, workdir) as up_process:
                print(f"fleetlog up pid {up_process.pid}, load {os.getloadavg()[0]:.2f}")
                await phase(url, args, flood=False, label="calm")
                await asyncio.sleep(2)  # what the calm phase left in flight drains
                await phase(url, args, flood=True, label="flood")
            print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        if args.keep_workdir:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quiet-rate", type=float, default=20.0)
    parser.add_argument("--flood-in-flight", type=int, default=300)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--nats-url", default=None)
    parser.add_argument("--keep-workdir", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Benchmark of what a command refused by API Priority and Fairness costs the gateway.

    python -m ops.bench_refusals [--commands 5000] [--rounds 5] [--log-level info]
                                 [--nats-url URL] 2>/dev/null

Why this exists: APF protects the gateway from a flood only if refusing a command is much
cheaper than serving it (issues 15 and 17). This runs one gateway in this process against a
real nats-server, makes ``global-default`` a small level that rejects instead of queuing,
holds all its seats, then sends ``--commands`` pod applies of one user through the gateway's
pipeline (``Gateway.handle``: every stage up to the refusal, without NATS round trips) and
prints the CPU per refused command, the best of ``--rounds``. Logs go to stderr as a fleetlog
process's do (each refusal logs a line at ``info``, as in production). Compare checkouts with
``cd /tmp && PYTHONPATH=<checkout> …/python -m ops.bench_refusals``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from core.access.flowdefaults import flow_user
from core.access.rbac import Request
from handlers.fairgate import Seat, TooManyRequests
from handlers.gateway import Gateway
from ops.bench_commands import pod_manifest
from ops.bench_log import server_for
from ops.logging import configure
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.eventstore import EventStore
from streams.subjects import command_subject

REJECTING_LEVEL = {
    "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
    "kind": "PriorityLevelConfiguration",
    "metadata": {"name": "global-default"},
    "spec": {
        "type": "Limited",
        "limited": {"nominalConcurrencyShares": 5, "limitResponse": {"type": "Reject"}},
    },
}
ACTOR = "user:flood"


async def hold_all_seats(gateway: Gateway) -> list[Seat]:
    """Every seat of the user's level, taken, so that each of its commands is refused."""
    gate = gateway.fairness.gate
    user = flow_user(ACTOR, ())
    seats: list[Seat] = []
    with contextlib.suppress(TooManyRequests):
        while True:
            seats.append(await gate.acquire(user, Request("patch", "pods", namespace="default")))
    return seats


async def refusals_cpu(gateway: Gateway, commands: int) -> float:
    """CPU seconds per refused command over ``commands`` pod applies."""
    subject = command_subject("Pod", "apply")
    messages = [
        msgpack.packb(
            {"id": f"refused-{i:08d}", "actor": ACTOR,
             "body": {"manifest": pod_manifest(f"p{i}")}},
            use_bin_type=True,
        )
        for i in range(commands)
    ]  # fmt: skip
    start = time.process_time()
    for data in messages:
        reply: dict[str, Any] = await gateway.handle(subject, data)
        if reply["ok"] or reply["error"]["code"] != "too_many_requests":
            raise SystemExit(f"a command was not refused by APF: {reply}")
    return (time.process_time() - start) / commands


async def main_async(args: argparse.Namespace) -> None:
    configure(args.log_level)
    with tempfile.TemporaryDirectory(prefix="fleetlog-bench-refusals-") as workdir:
        async with server_for(args.nats_url, Path(workdir) / "nats") as url:
            nc = await connect(url, name="bench-refusals")
            async with EventStore(nc) as store:
                gateway = await Gateway.create(nc, store)
                ready = asyncio.Event()
                task = asyncio.create_task(gateway.run(ready))
                await ready.wait()
                applied = await CommandClient(nc, actor="bench:admin").send(
                    "PriorityLevelConfiguration", "apply", {"manifest": REJECTING_LEVEL}
                )
                await gateway.priority_levels.wait_for(max(applied.seqs), timeout=30)
                seats = await hold_all_seats(gateway)
                figures = [await refusals_cpu(gateway, args.commands) for _ in range(args.rounds)]
                print(
                    f"{args.commands} refused pod applies (seats held: {len(seats)}), best of "
                    f"{args.rounds}: {1e6 * min(figures):.1f} us cpu/command "
                    f"(rounds: {', '.join(f'{1e6 * f:.1f}' for f in figures)}); "
                    f"load average {os.getloadavg()[0]:.2f}"
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--nats-url", default=None)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

"""What the front door costs a command: the round trip against a walled ``fleetlog up`` beside
the same round trip against an open one.

    python -m ops.bench_wall [--commands 2000] [--rounds 2] [--tls] [--claims 2000]
                             [--flood SECONDS [--clients 10] [--flood-in-flight 300]]

Why this exists: issue 17 asks for the command round trip "with signing, verification and
RBAC on, beside the same run with them off (the overhead, goal < 0.3 ms per command)". Two
``fleetlog up --no-agent --no-scheduler --no-api`` processes are measured in turn, each with
one command in flight at a time (the latency of one command, not throughput):

* **walled**: ``up``'s embedded server behind the NATS wall (nkeys, subject permissions),
  every command signed by the client with a user's nkey, verified by the gateway, checked
  against the gateways' nonce memory (a create appends, so its nonce is kept by the log:
  ``handlers/gateway/nonces.py``), authorized by RBAC (the user holds ``edit`` in
  ``default`` through a RoleBinding: the rules are evaluated, not the ``system:masters``
  short cut), then API Priority and Fairness, admission, and the sealed append; with
  ``--tls``, the listener speaks TLS too;
* **open**: ``up --nats-url`` to a server without authorization, with no credentials:
  unsigned commands act as their stated identity (no verification, no nonce, no RBAC); APF,
  admission and the sealed append are the same.

Both run at once and take turns, one command each in a shuffled order, ``--commands`` pod
creates each per round, so both meet the same neighbours on a shared host; the figures are
p50/p99 per command over every round, the difference of the medians, and the CPU each side
(``up``'s process tree and its server) and the client used per command. It also
times the shared nonce memory's claim alone (``--claims`` key-value creates, one at a time,
on the walled server as the control plane): what a signed command that appends nothing (a
no-op, a refusal, a dry run) pays beside the round trip measured here. With ``--flood``, the
issue's other figure, "throughput of 10 clients where one floods", on each side in turn:
``ops.bench_fairness``'s calm and flood phases, the walled side's clients each a user of its
own (signed, verified, authorized; the flood refused by its own queues). Figures are
recorded in docs/benchmarks.md; on a shared host, run it when the load average is lowest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ops.bench_fairness import Tally, flooding_user, quiet_user
from ops.bench_log import percentile
from ops.benchup import (
    Target,
    admit_users,
    pod_manifest,
    running,
    settle,
    until_answered,
    up_command,
    walled_admin,
)
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import nonce_bucket, open_key_value
from streams.identity import Credentials, generate_seed, read_seed_file
from streams.server import EmbeddedServer, free_port


@dataclass
class Figures:
    """Each command's round trip, and the CPU the server side and the client used."""

    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    nats_cpu: float = 0.0
    """The part of ``server_cpu`` the nats-server used."""
    client_cpu: float = 0.0


async def interleaved(targets: list[Target], count: int, *, tag: str) -> dict[str, Figures]:
    """``count`` pod creates on each target, one command in flight at a time, the targets
    taking turns (in a shuffled order each turn), so both meet the same neighbours on a
    shared host: each command's round trip, and the CPU each side used meanwhile."""
    clients = {}
    for target in targets:
        nc = await connect(
            target.url, name=f"bench-{target.mode}", credentials=target.credentials,
            tls=target.tls,
        )  # fmt: skip
        clients[target.mode] = (nc, CommandClient(nc, actor="bench"))
    figures = {target.mode: Figures() for target in targets}
    try:
        for index in range(50):  # warm-up: caches, the gateways' projections
            for target in targets:
                manifest = pod_manifest(f"warm-{tag}-{target.mode}-{index}")
                await clients[target.mode][1].send("Pod", "create", {"manifest": manifest})
        for target in targets:
            await settle(target.pid)
        server_cpu = {target.mode: target.cpu_seconds() for target in targets}
        client_cpu = dict.fromkeys(server_cpu, 0.0)
        order = list(targets)
        for index in range(count):
            random.shuffle(order)
            for target in order:
                manifest = pod_manifest(f"{tag}-{target.mode}-{index}")
                client = clients[target.mode][1]
                cpu, started = time.process_time(), time.perf_counter()
                await client.send("Pod", "create", {"manifest": manifest}, timeout=30)
                figures[target.mode].latencies.append(time.perf_counter() - started)
                client_cpu[target.mode] += time.process_time() - cpu
        for target in targets:
            total, nats = target.cpu_seconds()
            figures[target.mode].server_cpu = total - server_cpu[target.mode][0]
            figures[target.mode].nats_cpu = nats - server_cpu[target.mode][1]
            figures[target.mode].client_cpu = client_cpu[target.mode]
        return figures
    finally:
        for nc, _ in clients.values():
            await nc.close()


async def claim_round_trips(target: Target, control: Credentials, count: int) -> list[float]:
    """The shared nonce memory's claim alone: ``count`` atomic creates, one at a time."""
    nc = await connect(target.url, name="bench-claims", credentials=control, tls=target.tls)
    try:
        bucket = await open_key_value(nc, nonce_bucket())
        latencies = []
        for _ in range(count):
            key = f"{control.public_key}.{secrets.token_hex(16)}"
            started = time.perf_counter()
            await bucket.create(key, b"0")
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        await nc.close()


def summary(name: str, seconds: list[float], figures: Figures | None = None) -> str:
    ms = [1000 * s for s in seconds]
    line = (
        f"{name:<18} {len(ms):6d}: p50 {statistics.median(ms):6.3f} ms, "
        f"p99 {percentile(ms, 0.99):6.3f} ms, mean {statistics.fmean(ms):6.3f} ms"
    )
    if figures is not None:
        line += (
            f"; CPU per command: server side {1000 * figures.server_cpu / len(ms):.3f} ms "
            f"(nats-server {1000 * figures.nats_cpu / len(ms):.3f}), "
            f"client {1000 * figures.client_cpu / len(ms):.3f} ms"
        )
    return line


async def walled_target(
    data: Path, port: int, pid: int, *, tls: bool, flood_users: dict[str, Credentials]
) -> tuple[Target, Credentials]:
    """A user of the walled ``up`` (its server reloaded with it, and ``flood_users`` too),
    and the control plane's key, once ``up`` answers."""
    admin = await walled_admin(data, port, pid, tls=tls)
    user = Credentials(generate_seed())
    await admit_users(admin, {"bench": user, **flood_users})
    target = Target("walled", admin.url, pid, user, admin.tls, nats_pid=admin.nats_pid)
    await until_answered(target)
    return target, read_seed_file(data / "pki" / "nkeys" / "control-plane.nk")


def flood_users(clients: int) -> dict[str, Credentials]:
    """The walled side's users of the flood phases: ``clients`` - 1 quiet ones and
    ``flood`` (each a flow of its own: API Priority and Fairness distinguishes by user)."""
    names = [f"quiet-{i}" for i in range(clients - 1)] + ["flood"]
    return {name: Credentials(generate_seed()) for name in names}


async def flood_phases(
    target: Target, users: dict[str, Credentials], args: argparse.Namespace
) -> list[str]:
    """``ops.bench_fairness``'s two phases against ``target``: the quiet users alone, then
    with ``flood`` keeping ``--flood-in-flight`` creates outstanding; the lines to print.
    Walled, every user signs with its own key; open, each states its name."""
    lines = [f"{target.mode}: {len(users) - 1} quiet users at {args.quiet_rate:g}/s each"]
    connections = {
        name: await connect(
            target.url, name=f"bench-flood-{name}", tls=target.tls,
            credentials=user if target.mode == "walled" else None,
        )
        for name, user in users.items()
    }  # fmt: skip
    try:
        for label in ("calm", "flood"):
            quiet, flooded = Tally(), Tally()
            until = time.monotonic() + args.flood
            async with asyncio.TaskGroup() as running_users:
                for name, nc in connections.items():
                    client = CommandClient(nc, actor=name if target.mode == "walled" else
                                           f"user:{name}")  # fmt: skip
                    tag = f"{target.mode}-{label}-{name}"
                    if name != "flood":
                        running_users.create_task(
                            quiet_user(client, args.quiet_rate, until, tag, quiet)
                        )
                    elif label == "flood":
                        running_users.create_task(
                            flooding_user(client, args.flood_in_flight, until, tag, flooded)
                        )
            lines.append(quiet.line(f"{label}: quiet users", args.flood))
            if label == "flood":
                lines.append(flooded.line("flood: the flood", args.flood))
            await asyncio.sleep(2)  # what a phase left in flight drains
    finally:
        for nc in connections.values():
            await nc.close()
    return lines


def profile(target: Target, directory: Path, round_: int) -> subprocess.Popen[bytes]:
    """py-spy sampling ``up``'s process (collapsed stacks, idle frames left out) for one
    round: where each side's CPU goes, to compare."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{target.mode}-r{round_}.txt"
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    return subprocess.Popen(
        [spy, "record", "-p", str(target.pid), "-r", "250",
         "--format", "raw", "-o", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-wall-"))
    env = {**os.environ, "FLEETLOG_CONFIG": str(workdir / "config")}
    env.pop("FLEETLOG_CREDENTIALS", None)
    print(f"load average at the start {os.getloadavg()[0]:.2f}", flush=True)
    results = {"open": Figures(), "walled": Figures()}
    claims: list[float] = []
    server = EmbeddedServer(data_dir=workdir / "open-nats", port=free_port())
    try:
        await server.start()
        assert server.process is not None
        port = free_port()
        walled_options = ["--port", str(port), *(["--tls"] if args.tls else [])]
        async with (
            running(
                up_command(workdir / "open", "--no-api", "--nats-url", server.url), env=env,
                log=workdir / "open.log",
            ) as open_pid,
            running(
                up_command(workdir / "walled", "--no-api", *walled_options), env=env,
                log=workdir / "walled.log",
            ) as walled_pid,
        ):  # fmt: skip
            opened = Target("open", server.url, open_pid, nats_pid=server.process.pid)
            await until_answered(opened)
            flooders = flood_users(args.clients) if args.flood else {}
            walled, control = await walled_target(
                workdir / "walled", port, walled_pid, tls=args.tls, flood_users=flooders
            )
            for round_ in range(args.rounds):
                profilers = (
                    [profile(target, args.profile, round_) for target in (opened, walled)]
                    if args.profile
                    else []
                )
                try:
                    figures = await interleaved([opened, walled], args.commands, tag=f"r{round_}")
                finally:
                    for profiler in profilers:
                        profiler.send_signal(signal.SIGINT)
                        profiler.wait(timeout=60)
                for mode, found in figures.items():
                    results[mode].latencies += found.latencies
                    results[mode].server_cpu += found.server_cpu
                    results[mode].nats_cpu += found.nats_cpu
                    results[mode].client_cpu += found.client_cpu
                print(f"round {round_ + 1} done, load average {os.getloadavg()[0]:.2f}", flush=True)
            if args.claims:
                claims = await claim_round_trips(walled, control, args.claims)
            flooding: list[str] = []
            if args.flood:
                for target in (opened, walled):
                    flooding += await flood_phases(target, flooders, args)
        opened_f, walled_f = results["open"], results["walled"]
        print(summary("open", opened_f.latencies, opened_f))
        print(summary("walled" + (" + TLS" if args.tls else ""), walled_f.latencies, walled_f))
        difference = statistics.median(walled_f.latencies) - statistics.median(opened_f.latencies)
        print(f"{'overhead (p50)':<18} {1000 * difference:+.3f} ms per command")
        if claims:
            print(summary("nonce claim alone", claims))
        for line in flooding:
            print(line)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        await server.stop()
        if args.keep_workdir:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--tls", action="store_true", help="the walled server speaks TLS too")
    parser.add_argument(
        "--flood", type=float, default=0.0,
        help="seconds of each flood phase (0: none): ten clients, one floods, each side",
    )  # fmt: skip
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--quiet-rate", type=float, default=20.0)
    parser.add_argument("--flood-in-flight", type=int, default=300)
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument(
        "--profile", type=Path, default=None,
        help="py-spy each up for each round; collapsed stacks go to this directory",
    )  # fmt: skip
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

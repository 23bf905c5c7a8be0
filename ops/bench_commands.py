"""Benchmark of the command path under bursts and sustained load, against a real ``fleetlog up``.

    python -m ops.bench_commands [--gateways N] [--burst 2000] [--sustained 10000]
                                 [--in-flight 256] [--rate 500] [--commands 5000]
                                 [--timeout 10] [--delete-timeout S] [--nats-url URL]
                                 [--skip PHASE ...] [--checkout DIR] [--walled [--as-user]]

Why this exists: ``bench_log`` measures the round trip at a steady rate; issue 15 asks what
happens when thousands of commands arrive at once (a ``kubectl apply`` of a large manifest, a
namespace being emptied), whether the gateway scales past one core (``up --gateways N``), and
whether a client that gave up can learn what became of its command. Phases, in one run against
one ``fleetlog up --no-agent --no-scheduler`` (plus its gateway processes):

* ``burst``: ``--burst`` pod applies sent at once, each with the client's ``--timeout`` and no
  retry: p50/p99/max, throughput, and how many timed out;
* ``deletes``: the same pods deleted at once, each with ``--delete-timeout`` (default
  ``--timeout``) and no retry; then every
  delete that timed out is retried with its idempotency key, and the retry's answer says whether
  the first try had been applied (``replayed``) after its client gave up;
* ``sustained``: ``--sustained`` creates, ``--in-flight`` at a time: commands per second;
* ``rate``: ``--commands`` creates offered at ``--rate``/s (open loop): p50/p99/max.

Open (the default), ``up --nats-url`` is started on a server without authorization (the
bench's embedded one, or ``--nats-url``): the commands are unsigned and act as their stated
user ``bench`` (no groups), unverified and not authorized by RBAC, and API Priority and
Fairness puts them in ``global-default``, where one user's 2,000-command burst is mostly refused
(docs/benchmarks.md, "The command path's waits"). ``--walled``: ``up`` on its embedded server
behind the NATS wall (``ops.benchup``, as ``ops.bench_wall``), every command signed, verified,
its nonce claimed and authorized by RBAC, sent as the bootstrap admin (``fleetlog-admin``,
group ``system:masters``: APF exempts it, as kube-apiserver does): the administrator's ``apply``
of a large manifest that issue 15 describes, on the product's default set-up. With
``--as-user``, as the user ``bench`` bound to ``edit`` in ``default`` instead (APF's
``global-default`` again). Each run prints who its commands acted as, read from the log (the
actor of the warm-up's last event).

A command refused "too many requests" by API Priority and Fairness is sent again after the
refusal's Retry-After, as ``CommandClient`` does, and each such refusal is counted
(``throttled``): a phase whose latencies are whole seconds was throttled, not slow.

For each phase it prints the CPU seconds every process of ``up`` used per command (user +
system from ``/proc``, the process and its children, without the nats-server), and the
nats-server's apart (when it is the bench's or ``up``'s child): on a shared host the stable
figure, where wall-clock latencies move with the neighbours. Figures are recorded in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ops.bench_log import percentile, server_for, wait_for_gateway
from ops.benchup import (
    Target,
    admit_users,
    pod_manifest,
    running,
    settle,
    stop,
    tree_cpu_seconds,
    until_answered,
    up_command,
    walled_admin,
)
from streams.commandbus import (
    MAX_RETRY_AFTER_S,
    THROTTLED_RETRIES,
    CommandClient,
    CommandFailed,
    new_idempotency_key,
)
from streams.connection import connect
from streams.definitions import FLEET_STREAM
from streams.identity import Credentials, generate_seed
from streams.quarantine import read_event
from streams.server import free_port

PHASES = ("burst", "deletes", "sustained", "rate")


@dataclass
class Phase:
    """One phase's figures."""

    name: str
    latencies: list[float] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)
    failed: int = 0
    throttled: int = 0
    """Refusals "too many requests" (API Priority and Fairness) waited out and sent again."""
    wall: float = 0.0
    cpu: float = 0.0
    """``up``'s processes, without the nats-server."""
    nats_cpu: float | None = None
    """The nats-server's, when its process is known."""
    client_cpu: float = 0.0
    """This process's (the clients: encoding, signing when walled, the replies): a client
    short of CPU sends late, and the phase's latencies then are its, not the server's."""

    def report(self, commands: int) -> str:
        ms = [1000 * value for value in self.latencies] or [0.0]
        return (
            f"{self.name:<10} {commands:6d} commands in {self.wall:6.2f} s = "
            f"{commands / self.wall:7,.0f}/s; answered p50 {statistics.median(ms):7.1f} ms, "
            f"p99 {percentile(ms, 0.99):7.1f} ms, max {max(ms):7.1f} ms; "
            f"timed out {len(self.timed_out)}, refused {self.failed}, "
            f"throttled {self.throttled} (429s waited out); "
            f"up CPU {1000 * self.cpu / commands:.3f} ms/command"
            + (
                f", nats-server {1000 * self.nats_cpu / commands:.3f} ms/command"
                if self.nats_cpu is not None
                else ""
            )
            + f", client {1000 * self.client_cpu / commands:.3f} ms/command"
        )


def cpu_seconds(target: Target) -> tuple[float, float | None]:
    """CPU used so far by ``up``'s processes without the nats-server, and by the nats-server
    (None when its process is not known: a server of ``--nats-url``)."""
    up = tree_cpu_seconds(target.pid)
    if not target.nats_pid:
        return up, None
    nats = tree_cpu_seconds(target.nats_pid)
    # Walled, the nats-server is up's child (counted in up's tree); open, the bench's.
    return (up - nats if target.mode == "walled" else up), nats


def bench_nats_pid() -> int:
    """The nats-server this process started (``server_for`` without ``--nats-url``), or 0."""
    own = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        if name == "nats-server" and fields[1] == own:
            return int(entry.name)
    return 0


async def actor_of(reader: Target, seq: int) -> str:
    """The actor of the log's event ``seq``, read by ``reader`` (an admin when walled: reading
    the streams is the admins')."""
    nc = await connect(reader.url, name="bench-actor", credentials=reader.credentials)
    try:
        message = await nc.jetstream().get_msg(FLEET_STREAM, seq)
        return read_event(message.data or b"").actor
    finally:
        await nc.close()


async def waited_out(phase: Phase, attempt: Callable[[], Awaitable[object]]) -> None:
    """``attempt()``, a send that does not wait out "too many requests" itself
    (``throttled_retries=0``), sent again after each such refusal's Retry-After as
    ``CommandClient.send`` would (at most ``THROTTLED_RETRIES`` times), each refusal counted in
    ``phase.throttled``."""
    for tries in range(THROTTLED_RETRIES + 1):
        try:
            await attempt()
            return
        except CommandFailed as exc:
            if exc.code != "too_many_requests" or tries == THROTTLED_RETRIES:
                raise
            phase.throttled += 1
            delay = exc.details.get("retry_after", 1)
            seconds = float(delay) if isinstance(delay, int | float) and delay >= 0 else 1.0
            await asyncio.sleep(min(seconds, MAX_RETRY_AFTER_S))


def pod_creates(
    client: CommandClient, phase: Phase, prefix: str
) -> Callable[[int], Awaitable[None]]:
    """``send(i)`` for :func:`run_phase`: the create of pod ``<prefix>-<i>`` (30 s to answer),
    its "too many requests" refusals waited out and counted in ``phase``."""

    async def create(index: int) -> None:
        await waited_out(
            phase,
            lambda: client.send(
                "Pod",
                "create",
                {"manifest": pod_manifest(f"{prefix}-{index}")},
                timeout=30,
                throttled_retries=0,
            ),
        )

    return create


async def run_phase(
    phase: Phase,
    target: Target,
    count: int,
    send: Callable[[int], Awaitable[None]],
    *,
    in_flight: int | None = None,
    rate: float | None = None,
) -> Phase:
    """``send(i)`` for i in range(count): all at once, ``in_flight`` at a time, or at ``rate``."""
    slots = asyncio.Semaphore(in_flight or count)

    async def one(index: int) -> None:
        async with slots:
            sent = time.perf_counter()
            try:
                await send(index)
            except CommandFailed as exc:
                if exc.code == "timeout":
                    phase.timed_out.append(index)
                    return
                phase.failed += 1
                return
            phase.latencies.append(time.perf_counter() - sent)

    cpu_before, nats_before = cpu_seconds(target)
    client_before = time.process_time()
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for index in range(count):
            if rate is not None:
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.create_task(one(index))
    phase.wall = time.perf_counter() - started
    phase.client_cpu = time.process_time() - client_before
    cpu_after, nats_after = cpu_seconds(target)
    phase.cpu = cpu_after - cpu_before
    if nats_before is not None and nats_after is not None:
        phase.nats_cpu = nats_after - nats_before
    return phase


async def bench(target: Target, args: argparse.Namespace, *, reader: Target) -> None:
    """The phases, sent as ``target``'s identity; ``reader`` reads the log."""
    nc = await connect(target.url, name="bench-commands", credentials=target.credentials)
    client = CommandClient(nc, actor=target.actor)
    up_pid = target.pid
    timeout = args.timeout
    try:
        # Warm-up: the first commands load policies and fill caches.
        for index in range(50):
            warmed = await client.send("Pod", "create", {"manifest": pod_manifest(f"warm-{index}")})
        actor = await actor_of(reader, warmed.seqs[-1])
        print(f"commands act as {actor} (the actor of event {warmed.seqs[-1]})", flush=True)
        await settle(up_pid)
        if "burst" not in args.skip:
            burst = Phase("burst")

            async def apply(index: int) -> None:
                await waited_out(
                    burst,
                    lambda: client.send(
                        "Pod",
                        "apply",
                        {"manifest": pod_manifest(f"burst-{index}")},
                        timeout=timeout,
                        attempts=1,
                        throttled_retries=0,
                    ),
                )

            await run_phase(burst, target, args.burst, apply)
            print(burst.report(args.burst), flush=True)
            await settle(up_pid)
        if "deletes" not in args.skip and "burst" not in args.skip:
            keys = [new_idempotency_key() for _ in range(args.burst)]
            deletes = Phase("deletes")

            async def delete(index: int) -> None:
                await waited_out(
                    deletes,
                    lambda: client.send(
                        "Pod",
                        "delete",
                        {"name": f"burst-{index}", "namespace": "default"},
                        idempotency_key=keys[index],
                        timeout=args.delete_timeout or timeout,
                        attempts=1,
                        throttled_retries=0,
                    ),
                )

            await run_phase(deletes, target, args.burst, delete)
            print(deletes.report(args.burst), flush=True)
            await settle(up_pid)
            applied_late = 0
            for index in deletes.timed_out:
                outcome = await client.send(
                    "Pod",
                    "delete",
                    {"name": f"burst-{index}", "namespace": "default"},
                    idempotency_key=keys[index],
                    timeout=30,
                )
                applied_late += outcome.replayed
            print(
                f"           of {len(deletes.timed_out)} deletes that timed out, "
                f"{applied_late} had been applied after their client gave up "
                f"(a retry with the same key answered 'already done')",
                flush=True,
            )
        if "sustained" not in args.skip:
            sustained = Phase("sustained")
            create = pod_creates(client, sustained, "s")
            await run_phase(sustained, target, args.sustained, create, in_flight=args.in_flight)
            print(sustained.report(args.sustained), flush=True)
            await settle(up_pid)
        if "rate" not in args.skip:
            paced_phase = Phase(f"{args.rate:.0f}/s")
            paced = pod_creates(client, paced_phase, "r")
            await run_phase(paced_phase, target, args.commands, paced, rate=args.rate)
            print(paced_phase.report(args.commands), flush=True)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def running_up(
    url: str, workdir: Path, *options: str, checkout: Path | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``fleetlog up --nats-url URL --no-agent --no-scheduler OPTIONS`` in a process of its own
    (data in ``workdir/up``, its log in ``workdir/up.log``), once its gateway answers; stopped
    by PID on the way out (SIGTERM, then SIGKILL). ``checkout`` (an absolute path): run the
    code of that checkout (its gateway processes too), with this bench's client and
    virtualenv, so two commits are compared by the same measurement."""
    command = [
        sys.executable, "-m", "ops", "--log-level", "warning", "up", "--nats-url", url,
        "--data-dir", str(workdir / "up"), "--no-agent", "--no-scheduler",
        # A free API port: another cluster on this machine may hold 6443.
        "--api-port", "0", *options,
    ]  # fmt: skip
    env = None
    if checkout is not None:
        env = {**os.environ, "PYTHONPATH": str(checkout)}
    with (workdir / "up.log").open("wb") as up_log:
        process = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child
            command, stdout=subprocess.DEVNULL, stderr=up_log, env=env,
            cwd=checkout,
        )  # fmt: skip
        try:
            await wait_for_gateway(url, process)
            yield process
        finally:
            stop(process)


@contextlib.asynccontextmanager
async def walled_up(
    workdir: Path, args: argparse.Namespace
) -> AsyncIterator[tuple[Target, Target]]:
    """``fleetlog up`` on its embedded server behind the NATS wall (data in ``workdir/up``, its
    log in ``workdir/up.log``, its fleetlog config in ``workdir/config``, not the caller's):
    the identity the phases are sent as (the bootstrap admin, or with ``--as-user`` the user
    ``bench`` bound to ``edit`` in ``default``) and the admin, once each is answered; stopped
    by PID on the way out. With ``--checkout``, ``up`` runs that checkout's code (as
    :func:`running_up`)."""
    env = {**os.environ, "FLEETLOG_CONFIG": str(workdir / "config")}
    env.pop("FLEETLOG_CREDENTIALS", None)
    if args.checkout is not None:
        env["PYTHONPATH"] = str(args.checkout)
    port = free_port()
    options = ["--port", str(port), "--api-port", "0"]
    if args.gateways != 1:
        options += ["--gateways", str(args.gateways)]
    async with running(
        up_command(workdir / "up", *options), env=env, log=workdir / "up.log", cwd=args.checkout
    ) as pid:
        admin = await walled_admin(workdir / "up", port, pid)
        if not args.as_user:
            yield admin, admin
            return
        user = Credentials(generate_seed())
        await admit_users(admin, {"bench": user})
        target = Target("walled", admin.url, pid, user, nats_pid=admin.nats_pid)
        await until_answered(target)
        yield target, admin


def announce(target: Target, args: argparse.Namespace, how: str) -> None:
    print(
        f"fleetlog up with {args.gateways} gateway process(es), pid {target.pid}, server "
        f"{target.url} ({how}), load average {os.getloadavg()[0]:.2f}"
        + (f", code of {args.checkout}" if args.checkout is not None else ""),
        flush=True,
    )


async def run_open(workdir: Path, args: argparse.Namespace) -> None:
    async with server_for(args.nats_url, workdir / "nats") as url:
        gateways = ["--gateways", str(args.gateways)] if args.gateways != 1 else []
        async with running_up(url, workdir, *gateways, checkout=args.checkout) as up_process:
            target = Target("open", url, up_process.pid, nats_pid=bench_nats_pid())
            await settle(target.pid)
            announce(target, args, "open: unsigned commands")
            await bench(target, args, reader=target)


async def run_walled(workdir: Path, args: argparse.Namespace) -> None:
    async with walled_up(workdir, args) as (target, admin):
        await settle(target.pid)
        who = "the user bench (edit in default)" if args.as_user else "the bootstrap admin"
        announce(target, args, f"walled: commands signed by {who}")
        await bench(target, args, reader=admin)


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-commands-"))
    try:
        await (run_walled if args.walled else run_open)(workdir, args)
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
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--burst", type=int, default=2_000)
    parser.add_argument("--sustained", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--commands", type=int, default=5_000)
    parser.add_argument("--timeout", type=float, default=10.0, help="the burst clients' timeout")
    parser.add_argument(
        "--delete-timeout", type=float, default=None, help="the deleting clients' timeout"
    )
    parser.add_argument("--nats-url", default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=PHASES)
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument(
        "--checkout",
        type=lambda text: Path(text).resolve(),
        default=None,
        help="run fleetlog up (and its gateways) from this checkout, e.g. main's worktree",
    )
    parser.add_argument(
        "--walled", action="store_true",
        help="up on its embedded server behind the NATS wall, commands signed by the admin",
    )  # fmt: skip
    parser.add_argument(
        "--as-user", action="store_true",
        help="with --walled: as the user bench (edit in default), not the admin",
    )  # fmt: skip
    args = parser.parse_args()
    if args.as_user and not args.walled:
        parser.error("--as-user needs --walled (open, every command is unsigned)")
    if args.walled and args.nats_url is not None:
        parser.error("--walled runs up's own embedded server: no --nats-url")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

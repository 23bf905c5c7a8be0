"""Benchmark of the command path under bursts and sustained load, against a real ``fleetlog up``.

    python -m ops.bench_commands [--gateways N] [--burst 2000] [--sustained 10000]
                                 [--in-flight 256] [--rate 500] [--commands 5000]
                                 [--timeout 10] [--delete-timeout S] [--nats-url URL]
                                 [--skip PHASE ...] [--checkout DIR]

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

A command refused "too many requests" by API Priority and Fairness is sent again after the
refusal's Retry-After, as ``CommandClient`` does, and each such refusal is counted
(``throttled``): a phase whose latencies are whole seconds was throttled, not slow.

For each phase it prints the CPU seconds every process of ``up`` used per command (user +
system from ``/proc``, the process and its children): on a shared host the stable figure, where
wall-clock latencies move with the neighbours. Figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ops.bench_log import percentile, server_for, wait_for_gateway
from streams.commandbus import (
    MAX_RETRY_AFTER_S,
    THROTTLED_RETRIES,
    CommandClient,
    CommandFailed,
    new_idempotency_key,
)
from streams.connection import connect

PHASES = ("burst", "deletes", "sustained", "rate")


def pod_manifest(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "containers": [
                {"name": "main", "image": "nginx", "resources": {"requests": {"cpu": "100m"}}}
            ]
        },
    }


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and of every live descendant (``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / tick
        todo.extend(children.get(current, ()))
    return total


async def settle(pid: int, *, busy: float = 0.3, timeout: float = 120.0) -> None:
    """Until ``up`` and its children used less than ``busy`` of a core over a second."""
    deadline = time.monotonic() + timeout
    before = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = tree_cpu_seconds(pid)
        if now - before < busy:
            return
        before = now


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

    def report(self, commands: int) -> str:
        ms = [1000 * value for value in self.latencies] or [0.0]
        return (
            f"{self.name:<10} {commands:6d} commands in {self.wall:6.2f} s = "
            f"{commands / self.wall:7,.0f}/s; answered p50 {statistics.median(ms):7.1f} ms, "
            f"p99 {percentile(ms, 0.99):7.1f} ms, max {max(ms):7.1f} ms; "
            f"timed out {len(self.timed_out)}, refused {self.failed}, "
            f"throttled {self.throttled} (429s waited out); "
            f"up CPU {1000 * self.cpu / commands:.3f} ms/command"
        )


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


async def run_phase(
    phase: Phase,
    up_pid: int,
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

    cpu_before = tree_cpu_seconds(up_pid)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for index in range(count):
            if rate is not None:
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.create_task(one(index))
    phase.wall = time.perf_counter() - started
    phase.cpu = tree_cpu_seconds(up_pid) - cpu_before
    return phase


async def bench(url: str, up_pid: int, args: argparse.Namespace) -> None:
    nc = await connect(url, name="bench-commands")
    client = CommandClient(nc, actor="bench")
    timeout = args.timeout
    try:
        # Warm-up: the first commands load policies and fill caches.
        for index in range(50):
            await client.send("Pod", "create", {"manifest": pod_manifest(f"warm-{index}")})
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

            await run_phase(burst, up_pid, args.burst, apply)
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

            await run_phase(deletes, up_pid, args.burst, delete)
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

            async def create(index: int) -> None:
                await waited_out(
                    sustained,
                    lambda: client.send(
                        "Pod",
                        "create",
                        {"manifest": pod_manifest(f"s-{index}")},
                        timeout=30,
                        throttled_retries=0,
                    ),
                )

            await run_phase(sustained, up_pid, args.sustained, create, in_flight=args.in_flight)
            print(sustained.report(args.sustained), flush=True)
            await settle(up_pid)
        if "rate" not in args.skip:
            paced_phase = Phase(f"{args.rate:.0f}/s")

            async def paced(index: int) -> None:
                await waited_out(
                    paced_phase,
                    lambda: client.send(
                        "Pod",
                        "create",
                        {"manifest": pod_manifest(f"r-{index}")},
                        timeout=30,
                        throttled_retries=0,
                    ),
                )

            await run_phase(paced_phase, up_pid, args.commands, paced, rate=args.rate)
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
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-commands-"))
    try:
        async with server_for(args.nats_url, workdir / "nats") as url:
            gateways = ["--gateways", str(args.gateways)] if args.gateways != 1 else []
            async with running_up(url, workdir, *gateways, checkout=args.checkout) as up_process:
                await settle(up_process.pid)
                print(
                    f"fleetlog up with {args.gateways} gateway process(es), pid "
                    f"{up_process.pid}, server {url}, load average "
                    f"{os.getloadavg()[0]:.2f}"
                    + (f", code of {args.checkout}" if args.checkout is not None else ""),
                    flush=True,
                )
                await bench(url, up_process.pid, args)
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
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

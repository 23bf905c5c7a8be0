"""Benchmark of the log path, beside raw nats-py rates on the same server, in one run.

    python -m ops.bench_log [--events 30000] [--commands 5000] [--rate 500] [--nats-url URL]
                            [--skip-appends] [--skip-replay] [--seal] [--keep-workdir]

Prints, each next to its raw baseline:
  * appends through the event store (OCC expectation on every write, ``--in-flight`` pipelined
    with ``append_many``) vs raw pipelined JetStream publishes (``publish_async``) of the same
    bytes;
  * replay (decode + fold into the cluster read model) vs a raw ordered consumer whose callback
    does nothing;
  * with ``--seal``, the appends and the replay hold a seal key (a MAC written and checked per
    event, ``streams/seal.py``); the round trip's ``up`` always seals;
  * command round trip (client request → gateway → event durable → reply) at a fixed offered
    rate, p50/p99/max, against a ``fleetlog up`` running in its own process, with the CPU time
    that process spent per command (user + system, from ``/proc``) while the commands ran.

It starts its own nats-server in a temporary directory unless ``--nats-url`` is given; the
directory is removed at the end (``--keep-workdir`` keeps it, with ``up.log``). ``--skip-appends``
and ``--skip-replay`` leave those parts out (the round trip alone, e.g. while profiling ``up``:
its PID is printed). Figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from ops.benchup import stop
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams import jsapi, seal
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import FLEET_STREAM, ensure_streams
from streams.envelope import Envelope
from streams.eventstore import EventStore, Write
from streams.seal import KEY_BYTES, SEAL_HEADER, SealKey
from streams.server import EmbeddedServer, free_port
from streams.subjects import event_subject


def event_bytes(prefix: str, index: int) -> tuple[str, bytes]:
    name = f"{prefix}-{index}"
    envelope = Envelope(
        event_id=f"{prefix}:{index:08d}",
        type="PodCreated",
        schema_version=1,
        kind="Pod",
        namespace="default",
        name=name,
        version=1,
        timestamp_ns=time.time_ns(),
        actor="bench",
        correlation_id=f"{prefix}{index:08d}",
        causation_id=f"{prefix}{index:08d}",
        payload={
            # Not bound to a node: a pod on a node that does not exist is garbage to `fleetlog
            # up`'s pod GC, which would delete all of them through the gateway while the round
            # trip is measured. (``hostname``: the same size as the ``nodeName`` written before.)
            "manifest": {"metadata": {"name": name}, "spec": {"hostname": "n1"}},
            "uid": f"u{index}",
        },
    )
    return event_subject("Pod", "default", name), envelope.encode()


async def prepare_log(url: str) -> int:
    """Write the namespace the benchmark's pods live in, unless the log has it; return the
    number of events written. Without it `fleetlog up`'s garbage collector deletes every pod
    of a namespace that does not exist, through the gateway, during the round trip (since the
    collector joined `up`, those deletions were measured along with the commands)."""
    envelope = Envelope(
        event_id="bench:namespace:default",
        type="NamespaceCreated",
        schema_version=1,
        kind="Namespace",
        namespace="",
        name="default",
        version=1,
        timestamp_ns=time.time_ns(),
        actor="bench",
        correlation_id="bench-namespace",
        causation_id="bench-namespace",
        payload={
            "manifest": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
            "uid": "bench-namespace-default",
        },
    )
    nc = await connect(url, name="bench-prepare")
    try:
        async with EventStore(nc) as store:
            subject = event_subject("Namespace", "", "default")
            if await store.last_seq(subject):
                return 0
            await store.append([Write(subject, [envelope.encode()], 0)], token="bench-namespace")
            return 1
    finally:
        await nc.close()


async def bench_raw_publish(url: str, count: int, prefix: str) -> float:
    nc = await connect(url, name="bench-raw")
    js = jsapi.jetstream(nc, publish_async_max_pending=4000)
    messages = [event_bytes(prefix, i) for i in range(count)]
    # With --seal, the raw messages carry their seals too (made before the clock starts: the
    # baseline stays raw NATS), so the replay that reads them skips none.
    key = seal.configured()
    headers = [
        {SEAL_HEADER: key.seal(subject, data)} if key is not None else None
        for subject, data in messages
    ]
    start = time.perf_counter()
    for (subject, data), sealed in zip(messages, headers, strict=True):
        await js.publish_async(subject, data, headers=sealed)
    await js.publish_async_completed()
    elapsed = time.perf_counter() - start
    await nc.close()
    return count / elapsed


async def bench_store_append(url: str, count: int, in_flight: int, prefix: str) -> float:
    nc = await connect(url, name="bench-store")
    messages = [event_bytes(prefix, i) for i in range(count)]
    items = [
        ([Write(subject, [data], 0)], f"bench-{prefix}-{index}")
        for index, (subject, data) in enumerate(messages)
    ]
    async with EventStore(nc) as store:
        start = time.perf_counter()
        for first in range(0, count, in_flight):
            results = await store.append_many(items[first : first + in_flight])
            assert all(isinstance(r, list) for r in results), "an append failed"
        elapsed = time.perf_counter() - start
    await nc.close()
    return count / elapsed


async def bench_raw_read(url: str, total: int) -> float:
    nc = await connect(url, name="bench-read")
    js = jsapi.jetstream(nc)
    done = asyncio.Event()
    seen = 0

    async def on_message(msg: object) -> None:
        nonlocal seen
        seen += 1
        if seen >= total:
            done.set()

    start = time.perf_counter()
    sub = await js.subscribe(
        "fleet.evt.>",
        stream=FLEET_STREAM,
        cb=on_message,
        ordered_consumer=True,
        pending_msgs_limit=512 * 1024,
        pending_bytes_limit=512 * 1024 * 1024,
    )
    await done.wait()
    elapsed = time.perf_counter() - start
    await sub.unsubscribe()
    await nc.close()
    return total / elapsed


async def bench_replay(url: str, total: int) -> tuple[float, int]:
    nc = await connect(url, name="bench-replay")
    async with EventStore(nc) as store:
        start = time.perf_counter()
        projection = await Projection.replayed(ClusterModel(), store)
        elapsed = time.perf_counter() - start
    await nc.close()
    assert projection.model.events_applied == total, projection.model.events_applied
    return total / elapsed, len(projection.model.objects)


async def bench_commands(url: str, count: int, rate: float) -> list[float]:
    nc = await connect(url, name="bench-commands")
    client = CommandClient(nc, actor="bench")
    latencies: list[float] = []
    interval = 1.0 / rate

    async def one(index: int) -> None:
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"cmd-{index}", "labels": {"app": "bench"}},
            "spec": {
                "containers": [
                    {"name": "main", "image": "nginx", "resources": {"requests": {"cpu": "100m"}}}
                ]
            },
        }
        sent = time.perf_counter()
        await client.send("Pod", "create", {"manifest": manifest})
        latencies.append(time.perf_counter() - sent)
        if os.environ.get("BENCH_TRACE"):
            print(f"trace {sent:.3f} {1000 * (time.perf_counter() - sent):.1f}")

    for warm in range(50):
        await one(count + warm)
    latencies.clear()
    # The measuring client keeps its own collector out of the figures, as fleetlog up does.
    gc.collect()
    gc.freeze()
    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for index in range(count):
            delay = start + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.create_task(one(index))
    await nc.close()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def settle(pid: int, *, busy: float = 0.2, timeout: float = 120.0) -> bool:
    """Wait until process ``pid`` used less than ``busy`` of a core over one second (False if
    it did not within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    before = sum(process_cpu_seconds(pid))
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = sum(process_cpu_seconds(pid))
        if now - before < busy:
            return True
        before = now
    return False


async def bench_log_path(url: str, args: argparse.Namespace, prepared: int) -> None:
    """The append and replay measurements (each beside its raw baseline); ``prepared`` events
    were in the log before."""
    # Rates swing on a shared 2-core machine: alternate the measurements, keep the medians.
    raw_publishes, store_appends = [], []
    for round_ in range(args.rounds):
        raw_publishes.append(await bench_raw_publish(url, args.events, f"raw{round_}"))
        store_appends.append(
            await bench_store_append(url, args.events, args.in_flight, f"store{round_}")
        )
    raw_publish = statistics.median(raw_publishes)
    store_append = statistics.median(store_appends)
    print(
        f"raw pipelined JetStream publish (publish_async) : {raw_publish:10,.0f} events/s"
        f"  (median of {args.rounds})"
    )
    print(
        f"event store append (OCC, {args.in_flight} in flight)       : "
        f"{store_append:10,.0f} events/s"
        f"  = {100 * store_append / raw_publish:.0f}% of raw (target >= 60%)"
    )
    if args.skip_replay:
        return
    total = 2 * args.events * args.rounds
    raw_reads, replays = [], []
    objects = 0
    for _ in range(args.rounds):
        raw_reads.append(await bench_raw_read(url, total))
        rate, objects = await bench_replay(url, total + prepared)
        replays.append(rate)
    raw_read, replay = statistics.median(raw_reads), statistics.median(replays)
    print(
        f"raw ordered consumer read (callback)          : {raw_read:10,.0f} events/s"
        f"  (median of {args.rounds})"
    )
    print(
        f"replay into the cluster read model            : {replay:10,.0f} events/s"
        f"  = {100 * replay / raw_read:.0f}% of raw (target >= 50%), {objects:,} objects"
    )


async def bench_round_trip(url: str, args: argparse.Namespace, workdir: Path) -> None:
    """The command round trip against a ``fleetlog up`` in its own process."""
    env = {**os.environ, "FLEETLOG_SERVER": url, "FLEETLOG_SEAL_KEY": str(workdir / "seal.key")}
    with (workdir / "up.log").open("wb") as up_log:
        up_process = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, not awaited
            [
                sys.executable,
                "-m",
                "ops",
                "--log-level",
                "warning",
                "up",
                "--nats-url",
                url,
                "--no-agent",
                "--no-scheduler",
                # Its own data directory and API port: another cluster on this machine must
                # neither feed it a snapshot of another log nor hold 6443.
                "--data-dir",
                str(workdir / "up"),
                "--api-port",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=up_log,
            env=env,
        )
        launched = time.perf_counter()
        try:
            try:
                await wait_for_gateway(url, up_process)
            except RuntimeError:
                up_log.flush()
                tail = (workdir / "up.log").read_text(errors="replace").splitlines()[-20:]
                print("\n".join(["fleetlog up's log ends with:", *tail]), file=sys.stderr)
                raise
            serving = time.perf_counter() - launched
            # The gateway answers before `up` has finished starting (it collects and freezes
            # the garbage of the replay, builds indexes): measure from when it is idle.
            settled = await settle(up_process.pid)
            print(
                f"fleetlog up serving commands after {serving:.1f} s, idle after "
                f"{time.perf_counter() - launched:.1f} s{'' if settled else ' (never idle)'}, "
                f"pid {up_process.pid}",
                flush=True,
            )
            user_before, system_before = process_cpu_seconds(up_process.pid)
            started = time.perf_counter()
            latencies = await bench_commands(url, args.commands, args.rate)
            wall = time.perf_counter() - started
            # Warm-up commands are in the CPU figure too (50 of them): a small overstatement.
            user_after, system_after = process_cpu_seconds(up_process.pid)
            user, system = user_after - user_before, system_after - system_before
        finally:
            stop(up_process)
    ms = [1000 * value for value in latencies]
    print(
        f"command round trip at {args.rate:.0f}/s offered, {len(ms)} commands: "
        f"p50 {statistics.median(ms):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms, "
        f"max {max(ms):.2f} ms (targets p50 < 3 ms, p99 < 15 ms)"
    )
    per_command = 1000 / (args.commands + 50)
    print(
        f"fleetlog up CPU while the commands ran: {user + system:.2f} s in {wall:.1f} s "
        f"= {per_command * (user + system):.2f} ms per command "
        f"(user {per_command * user:.2f}, system {per_command * system:.2f})"
    )


@contextlib.asynccontextmanager
async def server_for(nats_url: str | None, data_dir: Path) -> AsyncIterator[str]:
    """The URL of a server with fleetlog's streams set up: ``nats_url`` as given, or else an
    embedded nats-server keeping its data in ``data_dir``, stopped on the way out."""
    server = None
    try:
        if nats_url is None:
            server = EmbeddedServer(data_dir=data_dir, port=free_port())
            await server.start()
            nats_url = server.url
        nc = await connect(nats_url, name="bench-setup")
        await ensure_streams(nc)
        await nc.close()
        yield nats_url
    finally:
        if server is not None:
            await server.stop()


async def main_async(args: argparse.Namespace) -> None:
    if args.seal:
        seal.use(SealKey(secrets.token_bytes(KEY_BYTES)))
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-"))
    try:
        async with server_for(args.nats_url, workdir / "nats") as url:
            print(
                f"server {url}, {args.rounds} rounds of {args.events} events per write "
                f"benchmark, python {sys.version.split()[0]}"
            )
            prepared = await prepare_log(url)
            if not args.skip_appends:
                await bench_log_path(url, args, prepared)
            await bench_round_trip(url, args, workdir)
    finally:
        if args.keep_workdir:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def wait_for_gateway(
    url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 120.0
) -> None:
    """Until a gateway answers (``fleetlog up`` first replays the log: with the append and
    replay parts' 180,000 events, that takes a while on a busy host)."""
    nc = await connect(url, name="bench-wait")
    client = CommandClient(nc, actor="bench")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"fleetlog up exited with status {process.returncode}")
            try:
                await client.send(
                    "Namespace",
                    "apply",
                    {
                        "manifest": {
                            "apiVersion": "v1",
                            "kind": "Namespace",
                            "metadata": {"name": "default"},
                        }
                    },
                    timeout=1,
                    attempts=1,
                )
                return
            except Exception:
                await asyncio.sleep(0.2)
        raise RuntimeError("fleetlog up did not start serving commands")
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=30_000, help="events per write round")
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--nats-url", default=None)
    parser.add_argument(
        "--rounds", type=int, default=3, help="read measurements to take the median of"
    )
    parser.add_argument(
        "--skip-appends",
        action="store_true",
        help="leave out the append and replay measurements (the replay reads what they wrote)",
    )
    parser.add_argument("--skip-replay", action="store_true", help="leave out the replay part")
    parser.add_argument(
        "--seal",
        action="store_true",
        help="appends and replay with a seal key (as `up` runs): the seal's cost, beside a run "
        "without it (the round trip's `up` always seals)",
    )
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the temporary directory (up.log)"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

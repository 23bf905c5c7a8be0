"""Benchmark of the log path, beside raw nats-py rates on the same server, in one run.

    python -m ops.bench_log [--events 50000] [--commands 5000] [--rate 500] [--nats-url URL]

Prints, each next to its raw baseline:
  * appends through the event store (OCC expectation on every write, ``--in-flight`` pipelined
    with ``append_many``) vs raw pipelined JetStream publishes (``publish_async``) of the same
    bytes;
  * replay (decode + fold into the cluster read model) vs a raw ordered consumer whose callback
    does nothing;
  * command round trip (client request → gateway → event durable → reply) at a fixed offered
    rate, p50/p99/max, against a ``fleetlog up`` running in its own process.

It starts its own nats-server in a temporary directory unless ``--nats-url`` is given. Figures
are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import FLEET_STREAM, ensure_streams
from streams.envelope import Envelope
from streams.eventstore import EventStore, Write
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
            "manifest": {"metadata": {"name": name}, "spec": {"nodeName": "n1"}},
            "uid": f"u{index}",
        },
    )
    return event_subject("Pod", "default", name), envelope.encode()


async def bench_raw_publish(url: str, count: int, prefix: str) -> float:
    nc = await connect(url, name="bench-raw")
    js = nc.jetstream(publish_async_max_pending=4000)
    messages = [event_bytes(prefix, i) for i in range(count)]
    start = time.perf_counter()
    for subject, data in messages:
        await js.publish_async(subject, data)
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
    js = nc.jetstream()
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


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-"))
    server = None
    url = args.nats_url
    if url is None:
        server = EmbeddedServer(data_dir=workdir / "nats", port=free_port())
        await server.start()
        url = server.url
    up_process = None
    try:
        nc = await connect(url, name="bench-setup")
        await ensure_streams(nc)
        await nc.close()
        print(
            f"server {url}, {args.rounds} rounds of {args.events} events per write benchmark, "
            f"python {sys.version.split()[0]}"
        )

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

        total = 2 * args.events * args.rounds
        raw_reads, replays = [], []
        for _ in range(args.rounds):
            raw_reads.append(await bench_raw_read(url, total))
            rate, objects = await bench_replay(url, total)
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

        env = {**os.environ, "FLEETLOG_SERVER": url}
        up_log = (workdir / "up.log").open("wb")
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=up_log,
            env=env,
        )
        await wait_for_gateway(url)
        latencies = await bench_commands(url, args.commands, args.rate)
        ms = [1000 * value for value in latencies]
        print(
            f"command round trip at {args.rate:.0f}/s offered, {len(ms)} commands: "
            f"p50 {statistics.median(ms):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms, "
            f"max {max(ms):.2f} ms (targets p50 < 3 ms, p99 < 15 ms)"
        )
    finally:
        if up_process is not None:
            up_process.send_signal(signal.SIGTERM)
            up_process.wait(timeout=30)
            up_log.close()
        if server is not None:
            await server.stop()


async def wait_for_gateway(url: str) -> None:
    nc = await connect(url, name="bench-wait")
    client = CommandClient(nc, actor="bench")
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
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
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

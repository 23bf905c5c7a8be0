"""Benchmark of one bounded read of the log (``EventStore.replay_raw``), small and whole.

    python -m ops.bench_read [--events 30000] [--small 100] [--repeats 200]

Why this exists: every bounded read is checked with the stream's leader once it ends (one
``STREAM.MSG.GET``: did a lagging replica end it short?), a cost paid by every catch-up,
time-travel read and audit walk. This measures what one read costs in wall and CPU time (of
this process) on one embedded nats-server: the last ``--small`` events of ``--events`` (a
small time-travel read, where one more request weighs most) and all of them. Run it with
``PYTHONPATH`` set to two checkouts in turn to compare them; figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import nats

from streams.definitions import ensure_streams
from streams.eventstore import EventStore
from streams.server import EmbeddedServer, free_port


async def _fill(nc: nats.NATS, events: int) -> None:
    js = nc.jetstream()
    for start in range(0, events, 1000):
        await asyncio.gather(
            *(
                js.publish(f"fleet.evt.Pod.default.p{i % 3000}", b"x" * 200)
                for i in range(start, min(events, start + 1000))
            )
        )


async def _time_reads(store: EventStore, from_seq: int, repeats: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``repeats`` reads from ``from_seq`` to the end."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        await store.replay_raw(lambda *_: None, from_seq=from_seq)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(data_dir=Path(tmp), port=free_port())
        await server.start()
        try:
            nc = await nats.connect(server.url)
            try:
                await ensure_streams(nc)
                await _fill(nc, args.events)
                async with EventStore(nc) as store:
                    for label, from_seq, repeats in (
                        (f"last {args.small}", args.events - args.small + 1, args.repeats),
                        (f"all {args.events}", 1, max(3, args.repeats // 25)),
                    ):
                        wall, cpu = await _time_reads(store, from_seq, repeats)
                        print(
                            f"read of the {label:>10} events: wall {wall:7.2f} ms, "
                            f"cpu {cpu:7.2f} ms (median of {repeats})"
                        )
            finally:
                await nc.close()
        finally:
            await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=200)
    asyncio.run(main(parser.parse_args()))

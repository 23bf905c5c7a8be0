"""A bounded read of a clustered log reaches the end the stream's leader reported, even when
the consumer serving it sits on a replica still catching up after a restart.

Why this exists: a projection's catch-up (``fleetlog up`` starting again, say) reads the log up
to its end as the leader reports it, then moves its position there. The read's consumer may be
placed on any replica; on a nats-server just restarted and still catching up, it reported
nothing pending thousands of messages short of that end, and the position then skipped them for
good: a read model without pods the log holds, whose replica-set controller then made them
again (the chaos run, tests/e2e/test_chaos.py).

Three clustered nats-servers; one is killed while 40,000 messages are appended and started
again; reads through it, from the moment it is back, must each hand over every message up to
the end they were asked for.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from streams.definitions import ensure_streams
from streams.eventstore import EventStore
from tests.e2e.fleet import kill, nats_cluster, start, stop, wait_for_jetstream_cluster

pytestmark = pytest.mark.integration

BACKLOG = 40_000
"""Messages the restarted server has to catch up on: a few seconds' worth of catching up."""
READ_FOR_S = 6.0


async def _append(url: str, count: int, prefix: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=10)

    async def one(index: int) -> None:
        while True:  # a stream leader being elected again answers nothing for a while
            try:
                await js.publish(f"fleet.evt.Pod.default.{prefix}{index % 2000}", b"x" * 200)
                return
            except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError):
                await asyncio.sleep(0.2)

    try:
        for start_at in range(0, count, 500):
            await asyncio.gather(*(one(i) for i in range(start_at, min(count, start_at + 500))))
    finally:
        await nc.close()


class _Seen:
    def __init__(self) -> None:
        self.seqs: list[int] = []

    def __call__(self, seq: int, *_: object) -> None:
        self.seqs.append(seq)


async def _read_while_it_catches_up(url: str) -> list[tuple[int, int, int]]:
    """(end asked for, messages handed over, last sequence handed over) of each read."""
    reads: list[tuple[int, int, int]] = []
    nc = await nats.connect(url)
    try:
        async with EventStore(nc) as store:
            deadline = time.monotonic() + READ_FOR_S
            while time.monotonic() < deadline:
                seen = _Seen()
                try:
                    end = await store.stream_last_seq()
                    await store.replay_raw(seen, from_seq=1, until_seq=end)
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                    # The cluster answers nothing for a moment after the restart (the stream's
                    # leader being elected): a read that did not end is no short read.
                    await asyncio.sleep(0.2)
                    continue
                reads.append((end, len(seen.seqs), seen.seqs[-1] if seen.seqs else 0))
    finally:
        await nc.close()
    return reads


def test_a_read_through_a_restarted_replica_reaches_the_leaders_end(tmp_path: Path) -> None:
    servers = nats_cluster(tmp_path / "nats")
    for server in servers:
        start(server)
    try:
        url = ",".join(server.url for server in servers)
        wait_for_jetstream_cluster(url)

        async def set_up() -> None:
            nc = await nats.connect(servers[0].url)
            try:
                await ensure_streams(nc, replicas=3)
            finally:
                await nc.close()
            await _append(servers[0].url, 1_000, "a")

        asyncio.run(set_up())
        kill(servers[2])
        asyncio.run(_append(servers[0].url, BACKLOG, "b"))
        start(servers[2])
        reads = asyncio.run(_read_while_it_catches_up(servers[2].url))
        assert reads
        short = [read for read in reads if read[1] != read[0] or read[2] != read[0]]
        assert not short, f"{len(short)} of {len(reads)} reads ended short: {short[:5]}"
    finally:
        for server in servers:
            stop(server)

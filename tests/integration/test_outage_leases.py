"""Leases, memberships and the connection across a NATS outage (the server killed by PID and
started again on the same port and data directory)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from streams import connection
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.leases import LeaderLease, Membership
from tests.conftest import RunningServer
from tests.integration.support import captured_logs


async def restart(nats_server: RunningServer, *, down_for: float) -> None:
    process = nats_server.server.process
    assert process is not None
    process.kill()
    await asyncio.to_thread(process.wait)
    await asyncio.sleep(down_for)
    await nats_server.server.start()


async def wait_until(check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_a_leader_that_cannot_renew_yields_at_its_deadline_and_leads_again_after(
    nats_server: RunningServer,
) -> None:
    nc = await connect(nats_server.url, name="lease-test")
    try:
        await ensure_streams(nc)
        lease = await LeaderLease.open(nc, "outage-role")
        lease.renew_deadline = 1.5
        assert await lease.renew() and lease.is_leader
        process = nats_server.server.process
        assert process is not None
        process.kill()
        await asyncio.to_thread(process.wait)
        # Renewals fail without raising; past the deadline the holder stops counting itself.
        for _ in range(3):
            assert await lease.renew() is False
            await asyncio.sleep(0.6)
        assert not lease.is_leader
        await nats_server.server.start()
        # The key still names this holder: it is renewed with its revision, and the holder
        # leads again (the call says so, so the loop catches up before acting).

        async def leads_again() -> bool:
            return await lease.renew() or lease.is_leader

        await wait_until(leads_again)
        assert lease.is_leader
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 10)


async def test_an_outage_is_logged_once_and_a_lost_memory_bucket_is_set_up_again(
    nats_server: RunningServer,
) -> None:
    nc = await connect(nats_server.url, name="members-test")
    try:
        await ensure_streams(nc)
        members = await Membership.open(nc, "outage-role", "m1")
        await members.renew(time.time_ns())
        await members.follow()
        with captured_logs(connection) as logs:
            await restart(nats_server, down_for=2.0)
            await wait_until(lambda: asyncio.sleep(0, nc.is_connected))
            # The members' bucket lives in memory: the restarted server has none. A renewal
            # sets it up again and the follower sees the renewals of the new one.
            other = await Membership.open(nc, "outage-role", "m2")
            members.renewed_ns.clear()

            async def both_seen() -> bool:
                with contextlib.suppress(Exception):
                    await members.renew(time.time_ns())
                    await other.renew(time.time_ns())
                return set(members.renewed_ns) == {"m1", "m2"}

            await wait_until(both_seen)
        # Only this connection's lines: a client an earlier test of this worker left behind may
        # still be logging its own retries. (``captured_logs``, not structlog's capture: an
        # earlier in-process CLI run may have cached the module's logger.)
        own = [e for e in logs if e["log_level"] != "debug" and e.get("client") == "members-test"]
        events = [entry["event"] for entry in own]
        assert events.count("nats.disconnected") == 1, own
        assert events.count("nats.reconnected") == 1, own
        assert "nats.error" not in events, own
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 10)

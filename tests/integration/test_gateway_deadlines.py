"""Commands whose clients stopped waiting, against a real nats-server: the gateway refuses them
unapplied (so nothing lands after the client gave up), and a client that timed out learns the
outcome by retrying with the same idempotency key."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from core.api.commands import command_message
from handlers.gateway import Gateway
from handlers.gateway.context import AppendLatency
from handlers.gateway.execute import Execute
from streams.commandbus import DEADLINE_HEADER, CommandClient
from streams.eventstore import EventStore
from streams.subjects import command_subject, event_subject

pytestmark = pytest.mark.integration

SUBJECT = event_subject("Pod", "default", "web")


def create_web(key: str) -> bytes:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "main", "image": "nginx", "command": ["serve"]}]},
    }
    return msgpack.packb(
        command_message(idempotency_key=key, actor="user:alice", body={"manifest": manifest})
    )


async def request(nc: Client, data: bytes, *, deadline_ns: int) -> dict[str, Any]:
    reply = await nc.request(
        command_subject("pod", "create"),
        data,
        timeout=30,
        headers={DEADLINE_HEADER: str(deadline_ns)},
    )
    answer: dict[str, Any] = msgpack.unpackb(reply.data, raw=False)
    return answer


async def test_a_command_past_its_clients_deadline_is_refused_and_not_applied(
    gateway: Gateway, nc: Client, client: CommandClient, store: EventStore
) -> None:
    answer = await request(nc, create_web("late-key-1"), deadline_ns=time.time_ns() - 1)
    assert not answer["ok"] and answer["error"]["code"] == "timeout", answer
    assert "not applied" in answer["error"]["message"]
    assert await store.read_subject(SUBJECT) == []
    # The retry (same key, a live deadline) is decided afresh: nothing had been applied.
    manifest = msgpack.unpackb(create_web("unused"))["body"]["manifest"]
    outcome = await client.send(
        "Pod", "create", {"manifest": manifest}, idempotency_key="late-key-1"
    )
    assert outcome.events == ["PodCreated"] and not outcome.replayed


async def test_a_command_whose_deadline_passes_while_it_waits_is_not_applied_later(
    gateway: Gateway, nc: Client, store: EventStore
) -> None:
    """Queued behind other work on the same object (here: its lock, held by the test) past
    its client's deadline, the command is refused when its turn comes, not applied."""
    locks = gateway.repository.locks
    await locks.acquire(SUBJECT)
    try:
        sent = asyncio.create_task(
            request(nc, create_web("late-key-2"), deadline_ns=time.time_ns() + 300_000_000)
        )
        await asyncio.sleep(0.6)
        assert not sent.done()
    finally:
        locks.release(SUBJECT)
    answer = await sent
    assert not answer["ok"] and answer["error"]["code"] == "timeout", answer
    assert await store.read_subject(SUBJECT) == []


async def test_a_client_that_timed_out_retries_and_the_command_is_applied_once(
    gateway: Gateway, nc: Client, store: EventStore
) -> None:
    """The first try's client times out while the object is busy; its retry (same key, a new
    deadline) is applied, the first try is refused unapplied when its turn comes, and a later
    retry is answered with the first outcome ("already done")."""
    client = CommandClient(nc, actor="user:alice")
    manifest = msgpack.unpackb(create_web("unused"))["body"]["manifest"]
    locks = gateway.repository.locks
    await locks.acquire(SUBJECT)
    try:
        sent = asyncio.create_task(
            client.send(
                "Pod",
                "create",
                {"manifest": manifest},
                idempotency_key="slow-key-3",
                timeout=0.4,
                attempts=8,
            )
        )
        await asyncio.sleep(0.7)  # past the first try's deadline, within the second's
    finally:
        locks.release(SUBJECT)
    outcome = await sent
    # Applied by a retry, not by the first try landing late (that would answer "replayed").
    assert outcome.events == ["PodCreated"] and not outcome.replayed
    history = await store.read_subject(SUBJECT)
    assert [e.envelope.type for e in history] == ["PodCreated"]
    again = await client.send(
        "Pod", "create", {"manifest": manifest}, idempotency_key="slow-key-3", timeout=30
    )
    assert again.replayed and again.seqs == outcome.seqs


async def test_a_command_is_refused_when_its_client_would_give_up_before_the_append_lands(
    gateway: Gateway, nc: Client, store: EventStore
) -> None:
    """Under a burst appends take long: a command that queued (here: for its object's lock)
    until its client would stop waiting before the append is acknowledged is refused, not
    appended unseen, though its deadline has not passed yet."""
    execute = gateway.stages[-1]
    assert isinstance(execute, Execute)
    execute.append_latency.observe(20 * 10**9, now_ns=time.monotonic_ns())  # one took 20 s
    assert execute.append_latency.margin_ns(time.monotonic_ns()) > 5 * 10**9
    locks = gateway.repository.locks
    await locks.acquire(SUBJECT)
    try:
        deadline = time.time_ns() + 3 * 10**9
        sent = asyncio.create_task(request(nc, create_web("tight-key-4"), deadline_ns=deadline))
        await asyncio.sleep(2.0)  # 1 s left: less than 3/4 of the 3 s the client gave it
    finally:
        locks.release(SUBJECT)
    answer = await sent
    assert not answer["ok"] and answer["error"]["code"] == "timeout", answer
    assert await store.read_subject(SUBJECT) == []
    execute.append_latency = AppendLatency()
    answer = await request(nc, create_web("tight-key-4"), deadline_ns=time.time_ns() + 5 * 10**9)
    assert answer["ok"] and answer["events"] == ["PodCreated"], answer
    # Each acknowledged append teaches the gateway how long appends take now.
    assert 0 < execute.append_latency.average_ns < 10**9


async def test_slow_but_steady_appends_do_not_refuse_a_command_that_did_not_queue(
    gateway: Gateway, nc: Client, store: EventStore
) -> None:
    """The margin is at most 3/4 of the time the client gave: a command arriving with its
    whole budget is decided even when appends have lately taken most of it."""
    execute = gateway.stages[-1]
    assert isinstance(execute, Execute)
    execute.append_latency.observe(20 * 10**9, now_ns=time.monotonic_ns())
    assert execute.append_latency.margin_ns(time.monotonic_ns()) > 5 * 10**9
    # 6 s given: less than the 8 s margin, more than its cap (3/4 of the time given).
    answer = await request(nc, create_web("steady-key-5"), deadline_ns=time.time_ns() + 6 * 10**9)
    assert answer["ok"] and answer["events"] == ["PodCreated"], answer

"""One nonce memory for every gateway of the queue group (``handlers.gateway.nonces``),
against a real nats-server: a signed command replayed to another gateway is refused
(``unauthorized``, "replay"), audited, nothing appended twice — found in the log when its
first delivery appended (no claim on that path), in the shared claims when it did not (a
no-op replayed once it would append); the client's retry with a fresh signature is "already
done"; the bucket is the control plane's alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from core.access.commandauth import admin_identity
from core.access.signing import Signature, sign
from core.api.commands import command_message
from handlers.gateway import Gateway
from streams.audit import read_audit
from streams.connection import connect
from streams.definitions import NONCE_BUCKET
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from streams.natsauth import NatsUser, Profile, authorization_config
from streams.server import EmbeddedServer, free_port
from streams.subjects import command_subject
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

ADMIN = Credentials(generate_seed())
SUBJECT = command_subject("Namespace", "apply")

StartGateway = Callable[[], Awaitable[tuple[Gateway, asyncio.Task[None]]]]


@pytest.fixture
async def start_gateway(nats_server: Any) -> AsyncIterator[StartGateway]:
    """Gateways on connections of their own, in the queue group, knowing the admin's key."""
    running: list[tuple[Client, asyncio.Task[None]]] = []

    async def start() -> tuple[Gateway, asyncio.Task[None]]:
        nc = await connect(nats_server.url, name=f"gateway-{len(running)}")
        store = EventStore(nc)
        await store.__aenter__()
        gateway = await Gateway.create(
            nc, store, identities={ADMIN.public_key: admin_identity("fleetlog-admin")}
        )
        ready = asyncio.Event()
        task = asyncio.create_task(gateway.run(ready))
        await ready.wait()
        await nc.flush()  # its subscription is the server's before anyone sends
        running.append((nc, task))
        return gateway, task

    try:
        yield start
    finally:
        for nc, task in running:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10)
            with contextlib.suppress(Exception):
                await nc.close()


def signed_namespace(name: str) -> tuple[bytes, Signature]:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    message = command_message(
        idempotency_key=f"key-{name}", actor="fleetlog-admin", body={"manifest": manifest}
    )
    payload = msgpack.packb(message, use_bin_type=True)
    signature = sign(
        ADMIN.seed.encode(), subject=SUBJECT, payload=payload, signed_at_ns=time.time_ns(),
        nonce=f"nonce-{name}-{time.time_ns()}",
    )  # fmt: skip
    return payload, signature


async def send(nc: Client, payload: bytes, signature: Signature) -> dict[str, Any]:
    reply = await nc.request(SUBJECT, payload, timeout=10, headers=signature.headers())
    answer: dict[str, Any] = msgpack.unpackb(reply.data, raw=False)
    return answer


async def test_a_replay_to_another_gateway_is_refused_and_audited(
    nc: Client, store: EventStore, start_gateway: StartGateway
) -> None:
    _, first_task = await start_gateway()
    payload, signature = signed_namespace("once")
    assert (await send(nc, payload, signature))["ok"]
    # The first gateway leaves the queue group: the replay can only reach a gateway that
    # never saw the nonce (its own memory is empty).
    first_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first_task
    second, _ = await start_gateway()
    before = await store.stream_last_seq()
    answer = await send(nc, payload, signature)
    assert answer["ok"] is False, answer
    assert answer["error"]["code"] == "unauthorized"
    assert "already received by another gateway" in answer["error"]["message"]
    assert "replay" in answer["error"]["message"]
    assert await store.stream_last_seq() == before
    assert second.nonces.replays == 1

    async def audited() -> bool:
        return any(
            r.code == "unauthorized" and "another gateway" in r.message and r.outcome == "rejected"
            for r in await read_audit(nc)
        )

    await eventually(audited)


async def test_replays_spread_over_two_running_gateways_are_all_refused(
    nc: Client, store: EventStore, start_gateway: StartGateway
) -> None:
    gateways = [(await start_gateway())[0], (await start_gateway())[0]]
    payload, signature = signed_namespace("spread")
    answers = await asyncio.gather(*(send(nc, payload, signature) for _ in range(12)))
    assert [a["ok"] for a in answers].count(True) == 1, answers
    refused = [a for a in answers if not a["ok"]]
    assert {a["error"]["code"] for a in refused} == {"unauthorized"}
    assert all("replay" in a["error"]["message"] for a in refused)
    # Whichever gateways the replays reached (NATS picks), none was accepted twice.
    assert sum(g.handled for g in gateways) == len(answers)


async def test_only_the_control_plane_writes_the_nonce_bucket(tmp_path: Any) -> None:
    control, admin = Credentials(generate_seed()), Credentials(generate_seed())
    server = EmbeddedServer(data_dir=tmp_path / "walled", port=free_port())
    server.authorization = authorization_config(
        [
            NatsUser(control.public_key, Profile.CONTROL_PLANE, "control-plane"),
            NatsUser(admin.public_key, Profile.ADMIN, "admin"),
        ]
    )
    await server.start()
    try:
        setup = await connect(server.url, name="setup", credentials=control)
        gateway = await Gateway.create(setup, EventStore(setup))
        _, signature = signed_namespace("walled")
        await gateway.nonces.admit(signature, now_ns=time.time_ns())  # opens the bucket
        bucket = await setup.jetstream().key_value(NONCE_BUCKET)
        assert (await bucket.status()).values == 1
        admin_nc = await connect(server.url, name="admin", credentials=admin)
        try:
            await admin_nc.publish(f"$KV.{NONCE_BUCKET}.planted", b"x")
            await admin_nc.flush()
            await asyncio.sleep(0.5)
            assert (await bucket.status()).values == 1  # the admin's write never landed
        finally:
            await admin_nc.close()
            await setup.close()
    finally:
        await server.stop()


def signed_apply(
    name: str, *, key: str, labels: dict[str, str] | None = None
) -> tuple[bytes, Signature]:
    """A signed apply of namespace ``name`` (``key``: its idempotency key)."""
    metadata: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
    message = command_message(
        idempotency_key=key, actor="fleetlog-admin", body={"manifest": manifest}
    )
    payload = msgpack.packb(message, use_bin_type=True)
    signature = sign(
        ADMIN.seed.encode(), subject=SUBJECT, payload=payload, signed_at_ns=time.time_ns(),
        nonce=f"nonce-{key}-{time.time_ns()}",
    )  # fmt: skip
    return payload, signature


async def bucket_values(nc: Client) -> int:
    bucket = await nc.jetstream().key_value(NONCE_BUCKET)
    return int((await bucket.status()).values)


async def leave(task: asyncio.Task[None]) -> None:
    """A gateway leaves the queue group (a replay can then only reach another one)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_command_that_appends_claims_nothing_and_its_replay_is_refused_by_the_log(
    nc: Client, store: EventStore, start_gateway: StartGateway
) -> None:
    first, first_task = await start_gateway()
    payload, signature = signed_apply("logged", key="logged-1")
    assert (await send(nc, payload, signature))["ok"]
    # No write to the shared memory on the path of a command that appends: the log keeps it.
    assert first.nonces.claims == 0
    assert await bucket_values(nc) == 0
    await leave(first_task)
    second, _ = await start_gateway()
    before = await store.stream_last_seq()
    answer = await send(nc, payload, signature)
    assert answer["ok"] is False and answer["error"]["code"] == "unauthorized", answer
    assert "replay" in answer["error"]["message"]
    assert await store.stream_last_seq() == before
    assert second.nonces.replays == 1
    # The client's own retry (same request, a fresh signature) is answered "already done".
    retry_payload, retry = signed_apply("logged", key="logged-1")
    again = await send(nc, retry_payload, retry)
    assert again["ok"] and again.get("replayed"), again
    assert await store.stream_last_seq() == before


async def test_a_no_op_replayed_to_another_gateway_is_refused_even_once_it_would_append(
    nc: Client, store: EventStore, start_gateway: StartGateway
) -> None:
    _, first_task = await start_gateway()
    assert (await send(nc, *signed_apply("quiet", key="quiet-key-1")))["ok"]
    payload, signature = signed_apply("quiet", key="quiet-key-2")  # changes nothing
    noop = await send(nc, payload, signature)
    assert noop["ok"] and noop["unchanged"], noop
    await leave(first_task)
    second, _ = await start_gateway()
    # Someone labels the namespace: the no-op, replayed now, would remove the label.
    assert (await send(nc, *signed_apply("quiet", key="quiet-key-3", labels={"a": "b"})))["ok"]
    before = await store.stream_last_seq()
    answer = await send(nc, payload, signature)
    assert answer["ok"] is False and answer["error"]["code"] == "unauthorized", answer
    assert "replay" in answer["error"]["message"]
    assert await store.stream_last_seq() == before
    assert second.nonces.replays == 1

    async def audited() -> bool:
        return any(
            r.code == "unauthorized" and "replay" in r.message and r.command_id == "quiet-key-2"
            for r in await read_audit(nc)
        )

    await eventually(audited)


async def test_a_no_op_replayed_while_both_gateways_run_is_refused(
    nc: Client, store: EventStore, start_gateway: StartGateway
) -> None:
    gateways = [(await start_gateway())[0], (await start_gateway())[0]]
    assert (await send(nc, *signed_apply("twice", key="twice-key-1")))["ok"]
    payload, signature = signed_apply("twice", key="twice-key-2")
    answers = [await send(nc, payload, signature) for _ in range(6)]
    assert [a["ok"] for a in answers].count(True) == 1, answers
    assert all("replay" in a["error"]["message"] for a in answers if not a["ok"])
    assert sum(g.handled for g in gateways) >= len(answers)

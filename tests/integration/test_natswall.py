"""The NATS wall, against a real nats-server configured as ``fleetlog up`` configures its own
(``streams.natsauth``): who is refused, what a user may not publish or subscribe to, and that a
revoked user is disconnected."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

from handlers.gateway import QUEUE_GROUP
from streams import connection, logreader
from streams.connection import Refused, connect
from streams.definitions import FLEET_STREAM, LEADER_BUCKET, METRICS_STREAM, ensure_streams
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from streams.natsauth import (
    METRICS_PUBLISHERS_GROUP,
    SIM_LOAD_SUBJECT,
    NatsUser,
    Profile,
    authorization_config,
    metrics_namespaces_of,
)
from streams.server import EmbeddedServer, free_port
from streams.subjects import POD_CONFIG_SUBJECT
from streams.telemetry import (
    custom_pod_metric_subject,
    external_metric_subject,
    metric_sample_body,
)

pytestmark = pytest.mark.integration


@dataclass
class Walled:
    server: EmbeddedServer
    control: Credentials
    admin: Credentials
    alice: Credentials
    bob: Credentials

    def users(self, *, without: Credentials | None = None) -> list[NatsUser]:
        users = [
            NatsUser(self.control.public_key, Profile.CONTROL_PLANE, "control-plane"),
            NatsUser(self.admin.public_key, Profile.ADMIN, "admin"),
            NatsUser(self.alice.public_key, Profile.USER, "alice"),
            NatsUser(self.bob.public_key, Profile.USER, "bob"),
        ]
        return [u for u in users if without is None or u.public_key != without.public_key]


@pytest.fixture
async def walled(tmp_path: Path) -> AsyncIterator[Walled]:
    keys = [Credentials(generate_seed()) for _ in range(4)]
    server = EmbeddedServer(data_dir=tmp_path / "walled", port=free_port())
    wall = Walled(server, *keys)
    server.authorization = authorization_config(wall.users())
    await server.start()
    try:
        setup = await connect(server.url, name="setup", credentials=wall.control)
        await ensure_streams(setup)
        await setup.close()
        yield wall
    finally:
        await server.stop()


async def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not reached in {timeout:.0f}s: {what}"
        await asyncio.sleep(0.05)


async def _violation(what: str) -> None:
    await _until(lambda: any(what.lower() in v.lower() for v in connection.refusals()), what)


@contextlib.asynccontextmanager
async def _as(wall: Walled, credentials: Credentials, **options: object) -> AsyncIterator[Client]:
    nc = await connect(wall.server.url, name="test", credentials=credentials, **options)  # type: ignore[arg-type]
    try:
        yield nc
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def test_a_connection_without_credentials_is_refused(walled: Walled) -> None:
    with pytest.raises(Refused, match="refused a connection without credentials"):
        await connect(walled.server.url, name="anonymous", reconnect=False)


async def test_an_unknown_key_is_refused_with_what_to_fix(walled: Walled) -> None:
    stranger = Credentials(generate_seed(), source="/tmp/stranger.nk")
    with pytest.raises(Refused, match=r"stranger\.nk.*unknown there, revoked or rotated"):
        await connect(walled.server.url, name="stranger", credentials=stranger, reconnect=False)


async def test_a_user_cannot_publish_an_event(walled: Walled) -> None:
    async with _as(walled, walled.alice) as alice, _as(walled, walled.control) as control:
        before = (await EventStore(control).stream_info())["state"]["last_seq"]
        await alice.publish("fleet.evt.pod.default.forged", b"forged")
        await alice.flush()
        await _violation('publish to "fleet.evt.pod.default.forged"')
        assert (await EventStore(control).stream_info())["state"]["last_seq"] == before


async def test_a_user_cannot_join_the_gateways_queue_group(walled: Walled) -> None:
    answered: list[Msg] = []

    async def liar(msg: Msg) -> None:
        answered.append(msg)
        await msg.respond(b"created")

    async def gateway(msg: Msg) -> None:
        await msg.respond(b"honest")

    async with _as(walled, walled.alice) as alice, _as(walled, walled.control) as control:
        await control.subscribe("fleet.cmd.>", queue=QUEUE_GROUP, cb=gateway)
        await alice.subscribe("fleet.cmd.>", queue=QUEUE_GROUP, cb=liar)
        await alice.flush()
        await _violation(f'subscription to "fleet.cmd.>" using queue "{QUEUE_GROUP}"')
        async with _as(walled, walled.bob) as bob:
            replies = [await bob.request("fleet.cmd.pod.apply", b"{}", timeout=5) for _ in range(8)]
        assert {r.data for r in replies} == {b"honest"}
        assert answered == []


@pytest.mark.parametrize("who", ["alice", "admin"])
async def test_only_the_control_plane_may_ask_for_a_pods_secret_values(
    walled: Walled, who: str
) -> None:
    async def answer(msg: Msg) -> None:
        await msg.respond(b"values")

    async with _as(walled, walled.control) as control, _as(walled, getattr(walled, who)) as nc:
        await control.subscribe(POD_CONFIG_SUBJECT, cb=answer)
        await control.flush()
        assert (await control.request(POD_CONFIG_SUBJECT, b"{}", timeout=5)).data == b"values"
        with pytest.raises(NatsTimeout):
            await nc.request(POD_CONFIG_SUBJECT, b"{}", timeout=1)
        await _violation(f'publish to "{POD_CONFIG_SUBJECT}"')


async def test_a_user_cannot_write_a_key_value_bucket(walled: Walled) -> None:
    async with _as(walled, walled.alice) as alice:
        await alice.publish(f"$KV.{LEADER_BUCKET}.controllers", b"mallory")
        await alice.flush()
        await _violation(f'publish to "$kv.{LEADER_BUCKET}.controllers"')


@pytest.mark.parametrize("who", ["alice", "admin"])
@pytest.mark.parametrize("call", ["STREAM.DELETE", "STREAM.PURGE", "STREAM.UPDATE"])
async def test_no_user_can_delete_purge_or_update_a_stream(
    walled: Walled, who: str, call: str
) -> None:
    async with _as(walled, getattr(walled, who)) as nc, _as(walled, walled.control) as control:
        subject = f"$JS.API.{call}.{FLEET_STREAM}"
        with pytest.raises(TimeoutError):
            await nc.request(subject, b'{"name": "FLEET", "max_msgs": 1}', timeout=1)
        await _violation(f'publish to "{subject}"')
        info = await EventStore(control).stream_info()
        assert info["config"]["name"] == FLEET_STREAM
        assert info["config"].get("max_msgs", -1) == -1


async def test_a_user_cannot_read_another_users_replies(walled: Walled) -> None:
    async with _as(walled, walled.alice) as alice, _as(walled, walled.bob) as bob:
        await alice.subscribe(f"{walled.bob.inbox_prefix}.>")
        await alice.flush()
        await _violation(f'subscription to "{walled.bob.inbox_prefix}.>"')
        # Bob's replies still come to him under his own prefix.
        assert bob.new_inbox().startswith(walled.bob.inbox_prefix + ".")


async def test_an_admin_reads_the_log_through_the_bulk_reader(walled: Walled) -> None:
    """The bulk reader signs the server's nonce with the admin's nkey and reads under the
    admin's inbox prefix, instead of falling back to nats-py."""
    async with _as(walled, walled.control) as control:
        for index in range(3):
            await control.jetstream().publish(f"fleet.evt.pod.default.p{index}", b"x")
    async with _as(walled, walled.admin) as admin, EventStore(admin) as store:
        read: list[int] = []
        await store.replay_raw(lambda seq, *_: read.append(seq))
        assert read == [1, 2, 3]
        assert admin not in logreader._unavailable


async def test_a_revoked_user_is_disconnected_and_refused(walled: Walled) -> None:
    async with _as(walled, walled.alice) as alice:
        closed_or_down = lambda: not alice.is_connected  # noqa: E731
        walled.server.reload(authorization=authorization_config(walled.users(without=walled.alice)))
        await _until(closed_or_down, "the revoked user's connection closed")
    with pytest.raises(Refused, match="revoked"):
        await connect(walled.server.url, name="alice", credentials=walled.alice, reconnect=False)
    async with _as(walled, walled.bob) as bob:
        assert bob.is_connected


async def test_a_metrics_publisher_publishes_its_namespaces_metrics_only(walled: Walled) -> None:
    """A workload's identity (a user in ``fleetlog:metrics-publishers:shop``) stores samples
    on its namespace's custom and external subjects; another namespace's, and a plain user's,
    are refused by the server; an admin sets the simulator's load."""
    carol = Credentials(generate_seed())
    namespaces = metrics_namespaces_of([f"{METRICS_PUBLISHERS_GROUP}:shop"])
    users = [*walled.users(), NatsUser(carol.public_key, Profile.USER, "carol", metrics=namespaces)]
    walled.server.reload(authorization=authorization_config(users))
    ours = custom_pod_metric_subject("shop", "web-1", "rps")
    theirs = external_metric_subject("default", "queue_depth")
    body = metric_sample_body(value="5")
    async with _as(walled, carol) as nc, _as(walled, walled.control) as control:
        await _until(lambda: nc.is_connected, "carol admitted")
        ack = await nc.jetstream().publish(ours, body, timeout=5)
        stored = await control.jetstream().get_msg(METRICS_STREAM, ack.seq)
        assert stored.subject == ours
        await nc.publish(theirs, body)
        await nc.flush()
        await _violation(f'publish to "{theirs}"')
    async with _as(walled, walled.alice) as alice:
        await alice.publish(ours, body)
        await alice.flush()
        await _violation(f'publish to "{ours}"')

    async def simulator(msg: Msg) -> None:
        await msg.respond(b'{"pods": 0}')

    async with _as(walled, walled.control) as control, _as(walled, walled.admin) as admin:
        await control.subscribe(SIM_LOAD_SUBJECT, cb=simulator)
        await control.flush()
        reply = await admin.request(SIM_LOAD_SUBJECT, b"{}", timeout=5)
        assert reply.data == b'{"pods": 0}'

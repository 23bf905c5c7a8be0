"""TLS on the NATS listener, against a real nats-server configured as ``fleetlog up --tls``
configures its own (``ops.natstls``) behind the wall (``streams.natsauth``): a client verifying
the generated CA works (JetStream and the bulk reader included), a plain-text client is refused
by the server, a client trusting another CA is refused with what to fix, and a ``tls://`` URL
refuses a server that does not speak TLS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ops.natstls import ServerTLS, ensure_local_tls, tls_url
from streams import connection, logreader
from streams.connection import Untrusted, connect, tls_context
from streams.definitions import ensure_streams
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from streams.natsauth import NatsUser, Profile, authorization_config
from streams.server import EmbeddedServer, free_port

pytestmark = pytest.mark.integration


@dataclass
class Secured:
    server: EmbeddedServer
    tls: ServerTLS
    control: Credentials

    @property
    def url(self) -> str:
        return tls_url("127.0.0.1", self.server.port)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    control = Credentials(generate_seed())
    tls = ensure_local_tls(tmp_path / "data", host="127.0.0.1")
    server = EmbeddedServer(data_dir=tmp_path / "data", port=free_port(), extra_config=tls.config())
    server.authorization = authorization_config(
        [NatsUser(control.public_key, Profile.CONTROL_PLANE, "control-plane")]
    )
    await server.start()
    try:
        yield Secured(server, tls, control)
    finally:
        await server.stop()
        connection.trust(None)


async def test_a_client_verifying_the_generated_ca_works_and_reads_in_bulk(
    secured: Secured,
) -> None:
    nc = await connect(
        secured.url, name="tls", credentials=secured.control, tls=tls_context(secured.tls.ca)
    )
    try:
        assert nc._server_info["tls_required"]
        await ensure_streams(nc)
        for index in range(3):
            await nc.jetstream().publish(f"fleet.evt.pod.default.p{index}", b"x")
        async with EventStore(nc) as store:
            read: list[int] = []
            await store.replay_raw(lambda seq, *_: read.append(seq))
            assert read == [1, 2, 3]
            assert nc not in logreader._unavailable  # the bulk reader spoke TLS too
    finally:
        await nc.close()


async def test_the_process_wide_trust_is_what_a_connection_uses_by_default(
    secured: Secured,
) -> None:
    connection.trust(secured.tls.ca)
    nc = await connect(secured.url, name="trusting", credentials=secured.control)
    try:
        assert nc.is_connected
    finally:
        await nc.close()


async def test_a_plain_text_client_is_refused_by_the_server(secured: Secured) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", secured.server.port)
    try:
        info = await asyncio.wait_for(reader.readline(), 10)
        assert b'"tls_required":true' in info
        writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
        # The server never answers a plain-text client: it ends the connection (an error
        # line at most), and no PONG comes back.
        assert b"PONG" not in answer
        assert await asyncio.wait_for(reader.read(4096), 10) == b""
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def test_a_client_trusting_another_ca_is_refused_with_what_to_fix(
    secured: Secured, tmp_path: Path
) -> None:
    other = ensure_local_tls(tmp_path / "elsewhere", host="127.0.0.1")
    assert other.ca is not None and other.ca.read_bytes() != secured.tls.ca.read_bytes()  # type: ignore[union-attr]
    with pytest.raises(Untrusted) as refused:
        await connect(
            secured.url, name="wrong-ca", credentials=secured.control,
            tls=tls_context(other.ca), reconnect=False,
        )  # fmt: skip
    message = str(refused.value)
    assert "is not trusted: its certificate does not verify" in message
    assert "--tls-ca" in message


async def test_a_role_waiting_for_its_server_does_not_wait_on_a_wrong_ca(
    secured: Secured, tmp_path: Path
) -> None:
    other = ensure_local_tls(tmp_path / "elsewhere", host="127.0.0.1")
    connection.trust(other.ca)
    with pytest.raises(Untrusted, match=f"the CA in {other.ca}"):
        await asyncio.wait_for(
            connect(secured.url, name="role", credentials=secured.control, wait=True), 30
        )


async def test_a_tls_url_refuses_a_server_that_does_not_speak_tls(nats_server: Any) -> None:
    url = nats_server.url.replace("nats://", "tls://")
    with pytest.raises(Untrusted, match="does not speak TLS"):
        await connect(url, name="downgraded", reconnect=False)

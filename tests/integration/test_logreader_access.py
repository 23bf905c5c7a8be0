"""The bulk log reader joins a server the way its client did: user and password, a token, TLS;
and when a server refuses it, the replay is read through nats-py instead, with one warning.

Each server here really requires what it is configured with: a reader given a wrong password
is turned away, so a replay that took the bulk path proves the reader presented the client's
credentials."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from nats.aio.client import Client

from streams import logreader
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.eventstore import EventStore, Write
from streams.logreader import BulkRead, Dial, ReaderUnavailable
from streams.subjects import ALL_EVENTS, event_subject
from tests.conftest import StartServer
from tests.integration.support import captured_logs, event_bytes

pytestmark = pytest.mark.integration

EVENTS = 5000  # more than one pull batch
USER_PASSWORD = "authorization { user: fleet, password: s3cret }\n"


@contextlib.asynccontextmanager
async def filled_store(url: str, **options: object) -> AsyncIterator[tuple[Client, EventStore]]:
    nc = await connect(url, name="reader-access", **options)  # type: ignore[arg-type]
    try:
        await ensure_streams(nc)
        async with EventStore(nc) as store:
            items = [
                (
                    [
                        Write(
                            event_subject("Pod", "default", f"p{i}"),
                            [
                                event_bytes(
                                    f"p{i}",
                                    1,
                                    event_type="PodCreated",
                                    payload={"uid": "u", "manifest": {}},
                                )
                            ],
                            0,
                        )
                    ],
                    f"t{i}",
                )
                for i in range(EVENTS)
            ]
            assert all(isinstance(r, list) for r in await store.append_many(items))
            yield nc, store
    finally:
        await nc.close()


async def replay_seqs(store: EventStore, *, bulk: bool) -> list[int]:
    store.bulk_reads = bulk
    seen: list[int] = []
    await store.replay_raw(lambda seq, *_: seen.append(seq))
    store.bulk_reads = True
    return seen


async def read_with(dial: Dial, store: EventStore) -> list[int]:
    seen: list[int] = []
    await BulkRead(
        dial,
        store.subjects,
        lambda seq, *_: seen.append(seq),
        filter_subject=ALL_EVENTS,
        from_seq=1,
        from_ns=0,
        target=EVENTS,
        until_ns=None,
    ).run()
    return seen


async def assert_bulk_replay_works(nc: Client, store: EventStore, wrong: Dial) -> None:
    with captured_logs(logreader) as logs:
        bulk = await replay_seqs(store, bulk=True)
    assert bulk == await replay_seqs(store, bulk=False) == list(range(1, EVENTS + 1))
    assert nc not in logreader._unavailable
    assert not [e for e in logs if e["event"] == "logreader.unavailable"]
    dial = store._bulk_read_dial()
    assert dial is not None
    assert await read_with(dial, store) == bulk
    with pytest.raises(ReaderUnavailable, match="Authorization Violation"):
        await read_with(wrong, store)


async def test_a_server_wanting_user_and_password(start_server: StartServer) -> None:
    server = await start_server("auth", extra_config=USER_PASSWORD)
    url = f"nats://fleet:s3cret@127.0.0.1:{server.port}"
    async with filled_store(url) as (nc, store):
        dial = store._bulk_read_dial()
        assert dial is not None and (dial.user, dial.password) == ("fleet", "s3cret")
        await assert_bulk_replay_works(nc, store, replace(dial, password="wrong"))


async def test_a_server_wanting_a_token(start_server: StartServer) -> None:
    server = await start_server("token", extra_config="authorization { token: t0ken }\n")
    async with filled_store(f"nats://t0ken@127.0.0.1:{server.port}") as (nc, store):
        dial = store._bulk_read_dial()
        assert dial is not None and (dial.user, dial.token) == (None, "t0ken")
        await assert_bulk_replay_works(nc, store, replace(dial, token="wrong"))


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, from the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_a_server_wanting_tls_and_a_password(
    start_server: StartServer, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    tls = f'tls {{ cert_file: "{cert}", key_file: "{key}" }}\n'
    server = await start_server("tls", extra_config=tls + USER_PASSWORD)
    context = ssl.create_default_context(cafile=str(cert))
    url = f"nats://fleet:s3cret@127.0.0.1:{server.port}"
    async with filled_store(url, tls=context) as (nc, store):
        dial = store._bulk_read_dial()
        assert dial is not None and dial.tls_context is context
        await assert_bulk_replay_works(nc, store, replace(dial, password="wrong"))
        untrusted = replace(dial, tls_context=ssl.create_default_context())
        with pytest.raises(ReaderUnavailable, match="TLS with the server failed"):
            await read_with(untrusted, store)


async def test_a_server_refusing_the_reader_is_read_through_nats_py(
    start_server: StartServer,
) -> None:
    # One connection per client: fleetlog's own is accepted, the reader's second is refused.
    server = await start_server("one", extra_config="max_connections: 1\n")
    async with filled_store(server.url) as (nc, store):
        with captured_logs(logreader) as logs:
            first = await replay_seqs(store, bulk=True)
            second = await replay_seqs(store, bulk=True)
        assert first == second == list(range(1, EVENTS + 1))
        (warning,) = [e for e in logs if e["event"] == "logreader.unavailable"]
        assert "maximum connections exceeded" in warning["reason"]
        assert warning["log_level"] == "warning"
        assert nc in logreader._unavailable and store._bulk_read_dial() is None  # remembered

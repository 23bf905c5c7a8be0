"""Shared fixtures: a real nats-server per test, on a free loopback port, stopped by PID."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from streams.connection import connect
from streams.definitions import ensure_streams
from streams.eventstore import EventStore
from streams.server import EmbeddedServer, free_port


class RunningServer:
    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server
        self.url = server.url


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A fresh nats-server with JetStream in a temporary directory."""
    server = EmbeddedServer(data_dir=tmp_path / "nats", port=free_port())
    await server.start()
    try:
        yield RunningServer(server)
    finally:
        await server.stop()


@pytest.fixture
async def nc(nats_server: RunningServer) -> AsyncIterator[Client]:
    client = await connect(nats_server.url, name="test")
    await ensure_streams(client)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def store(nc: Client) -> AsyncIterator[EventStore]:
    async with EventStore(nc) as event_store:
        yield event_store

"""Shared fixtures: a real nats-server per test, on a free loopback port, stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client

from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.query import QueryService
from projections.readaccess import ReadAccess
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.eventstore import EventStore
from streams.secretkeys import load_cluster_key
from streams.server import EmbeddedServer, free_port


class RunningServer:
    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server
        self.url = server.url


def _dump_tasks(loop: asyncio.AbstractEventLoop) -> None:
    print("\n=== asyncio tasks of a test close to its timeout ===", file=sys.stderr)
    for task in asyncio.all_tasks(loop):
        print(f"--- {task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)


@pytest.fixture(autouse=True)
def own_fleetlog_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test has a fleetlog config of its own (``FLEETLOG_CONFIG``, inherited by the
    processes it starts): a ``fleetlog up`` it runs writes its admin's context there, never to
    the machine's, and tests running at once never read each other's credentials."""
    path = tmp_path / "fleetlog-config"
    monkeypatch.setenv("FLEETLOG_CONFIG", str(path))
    monkeypatch.delenv("FLEETLOG_CREDENTIALS", raising=False)
    return path


@pytest.fixture
async def nats_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RunningServer]:
    """A fresh nats-server with JetStream in a temporary directory."""
    # pytest-timeout shows threads, not coroutines: a stuck await is only visible in the
    # stacks of the loop's tasks, so print them shortly before the timeout fires.
    loop = asyncio.get_running_loop()
    timeout = float(request.config.getini("timeout") or 0)
    dump = loop.call_later(max(1.0, timeout - 5), _dump_tasks, loop) if timeout else None
    server = EmbeddedServer(data_dir=tmp_path / "nats", port=free_port())
    await server.start()
    try:
        yield RunningServer(server)
    finally:
        if dump is not None:
            dump.cancel()
        await server.stop()


StartServer = Callable[..., Awaitable[EmbeddedServer]]


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Starts more nats-servers, configured (``start(name, domain=…, extra_config=…)``: a
    JetStream domain, leaf nodes, authorization, TLS); all are stopped by PID after the test."""
    started: list[EmbeddedServer] = []

    async def start(
        name: str, *, domain: str | None = None, extra_config: str = ""
    ) -> EmbeddedServer:
        server = EmbeddedServer(
            data_dir=tmp_path / name,
            port=free_port(),
            name=name,
            domain=domain,
            extra_config=extra_config,
        )
        await server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            await server.stop()


@pytest.fixture
async def nc(nats_server: RunningServer) -> AsyncIterator[Client]:
    client = await connect(nats_server.url, name="test")
    await ensure_streams(client)
    try:
        yield client
    finally:
        # Bounded, so a connection stuck under load fails this test's teardown, not the run.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 10)


@pytest.fixture
async def store(nc: Client) -> AsyncIterator[EventStore]:
    async with EventStore(nc) as event_store:
        yield event_store


@pytest.fixture
async def gateway(nc: Client, store: EventStore, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway serving commands on the test server, with the default namespace created and
    a cluster key of its own (so it can store secrets)."""
    cluster_key = load_cluster_key(tmp_path / "pki" / "cluster.key")
    service = await Gateway.create(nc, store, cluster_key=cluster_key)
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready))
    await ready.wait()
    await CommandClient(nc, actor="test:setup").send(
        "Namespace",
        "apply",
        {"manifest": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}},
    )
    try:
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)


@pytest.fixture
def client(nc: Client) -> CommandClient:
    return CommandClient(nc, actor="user:alice")


@pytest.fixture
async def projection(store: EventStore) -> AsyncIterator[Projection[ClusterModel]]:
    """The cluster read model, caught up and following the log."""
    live = Projection(ClusterModel(), store)
    await live.catch_up()
    await live.follow()
    yield live
    await live.stop()


@pytest.fixture
async def queries(nc: Client, store: EventStore, gateway: Gateway) -> AsyncIterator[None]:
    """The gateway and a query service on its own cluster projection: what CLI reads need."""
    projection = Projection(ClusterModel(), store)
    await projection.catch_up()
    await projection.follow()
    ready = asyncio.Event()
    serving = asyncio.create_task(
        QueryService(
            nc,
            projection,
            secret_keys=gateway.secret_keys,
            read_access=ReadAccess(gateway.access),
        ).run(ready)
    )
    await ready.wait()
    try:
        yield
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await projection.stop()

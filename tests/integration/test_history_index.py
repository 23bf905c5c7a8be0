"""The history index and its service against a real nats-server: what it answers is exactly
what the log holds for the object, read-your-writes, across pages, restarts and rebuilds."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.history import HistoryIndex
from projections.history_service import HISTORY_QUERY_SUBJECT, HistoryService, read_history
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.eventstore import EventStore, Write
from streams.subjects import event_subject
from tests.integration.support import event_bytes

pytestmark = pytest.mark.integration

WEB = event_subject("Pod", "default", "web")


def pod(name: str, image: str = "nginx:1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


def event(name: str, version: int) -> bytes:
    return event_bytes(
        name,
        version,
        event_type="PodCreated" if version == 1 else "PodReady",
        payload={"manifest": {"padding": "x" * 400}, "uid": "u"},
    )


def same(a: list[StoredEvent], b: list[StoredEvent]) -> bool:
    """Same events: sequence, subject, stored time and the decoded envelope."""
    return [(e.seq, e.subject, e.stored_ns, e.envelope) for e in a] == [
        (e.seq, e.subject, e.stored_ns, e.envelope) for e in b
    ]


class Running:
    """A followed projection with a history service on it, as ``fleetlog up`` runs them."""

    def __init__(self, nc: Client, store: EventStore, path: Path) -> None:
        self.nc, self.store, self.path = nc, store, path
        self.projection = Projection(ClusterModel(), store)
        self.service: HistoryService | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.projection.catch_up()
        await self.projection.follow()
        self.service = HistoryService(self.nc, self.store, HistoryIndex(self.path), self.projection)
        ready = asyncio.Event()
        self.task = asyncio.create_task(self.service.run(ready))
        await asyncio.wait_for(ready.wait(), 30)

    async def stop(self) -> None:
        assert self.task is not None and self.service is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.service.close()
        await self.projection.stop()


@pytest.fixture
async def history(
    nc: Client, store: EventStore, gateway: Gateway, tmp_path: Path
) -> AsyncIterator[Running]:
    running = Running(nc, store, tmp_path / "history.sqlite3")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def ask(nc: Client, request: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(HISTORY_QUERY_SUBJECT, msgpack.packb(request), timeout=10)
    answer: dict[str, Any] = msgpack.unpackb(reply.data, raw=False)
    return answer


async def test_history_from_the_index_is_the_logs_and_sees_the_last_write(
    nc: Client, store: EventStore, history: Running, client: CommandClient
) -> None:
    await client.send("Pod", "apply", {"manifest": pod("web")})
    for image in ("nginx:2", "nginx:3"):
        await client.send("Pod", "apply", {"manifest": pod("web", image)})
        # Read-your-writes: the event the command just wrote is in the answer.
        answered = await ask(nc, {"subject": WEB})
        assert answered["ok"] and answered["events"][-1][0] == await store.last_seq(WEB)
    from_index = await read_history(nc, store, WEB)
    assert len(from_index) == 3
    assert same(from_index, await store.read_subject(WEB))
    later = await read_history(nc, store, WEB, after_seq=from_index[0].seq)
    assert same(later, from_index[1:])


async def test_long_histories_come_in_pages(
    nc: Client, store: EventStore, history: Running
) -> None:
    expected = 0
    for start in range(1, 3001, 500):  # 3,000 events of ~500 bytes: several pages by count
        batch = [event("web", v) for v in range(start, start + 500)]
        expected = (await store.append([Write(WEB, batch, expected)], token=f"p{start}"))[-1]
    first = await ask(nc, {"subject": WEB})
    assert first["ok"] and first["more"] and len(first["events"]) == 1000
    from_index = await read_history(nc, store, WEB)
    assert [e.envelope.version for e in from_index] == list(range(1, 3001))
    assert same(from_index, await store.read_subject(WEB))


async def test_a_restarted_service_catches_up_with_what_it_missed(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient, tmp_path: Path
) -> None:
    path = tmp_path / "history.sqlite3"
    first = Running(nc, store, path)
    await first.start()
    await client.send("Pod", "apply", {"manifest": pod("web")})
    await read_history(nc, store, WEB)
    await first.stop()
    for name in ("a", "b"):
        await client.send("Pod", "apply", {"manifest": pod(name)})
    await client.send("Pod", "apply", {"manifest": pod("web", "nginx:2")})
    second = Running(nc, store, path)
    await second.start()
    try:
        assert same(await read_history(nc, store, WEB), await store.read_subject(WEB))
        index = HistoryIndex(path)
        assert index.position == await store.stream_last_seq()
        assert index.count() == await store.stream_last_seq()
        index.close()
    finally:
        await second.stop()


async def test_without_a_service_the_log_is_read(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Pod", "apply", {"manifest": pod("web")})
    assert same(await read_history(nc, store, WEB), await store.read_subject(WEB))


async def test_questions_that_name_no_single_object_are_refused(
    nc: Client, history: Running
) -> None:
    for subject in ("fleet.evt.Pod.default.*", "fleet.evt.>", "fleet.cmd.Pod.apply", 42, None):
        answer = await ask(nc, {"subject": subject})
        assert answer == {
            "ok": False,
            "error": {
                "code": "invalid",
                "message": f"{subject!r} is not one object's event subject",
            },
        }


def test_an_index_of_another_log_starts_again(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    index = HistoryIndex(path)
    index.bind("FLEET@2026-11-26T01:00:00Z", 10)
    index.add([(1, WEB, 5, b"one"), (2, WEB, 6, b"two")], 2)
    index.close()
    index = HistoryIndex(path)
    index.bind("FLEET@2026-11-26T01:00:00Z", 10)  # same log: kept
    assert index.position == 2 and [r[0] for r in index.read(WEB)] == [1, 2]
    index.bind("FLEET@2026-11-26T01:00:00Z", 1)  # the log is shorter than the index: not it
    assert index.position == 0 and index.read(WEB) == []
    index.add([(1, WEB, 5, b"one")], 1)
    index.bind("FLEET@2026-11-27T00:00:00Z", 10)  # a new stream of the same name
    assert index.position == 0 and index.count() == 0
    index.close()


def test_a_damaged_index_file_is_started_again(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"not a database, whatever it once was " * 200)
    index = HistoryIndex(path)
    assert index.position == 0 and index.count() == 0
    index.add([(1, WEB, 5, b"one")], 1)
    assert index.read(WEB) == [(1, WEB, 5, b"one")]
    # Every event's payload is in it, the WAL too: its owner's alone, made again or not.
    files = [p for p in tmp_path.iterdir() if p.name.startswith("history.sqlite3")]
    assert len(files) >= 2 and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    index.close()

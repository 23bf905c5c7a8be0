"""Gateway replicas as separate processes (``fleetlog gateway``) against one real nats-server:
racing commands decided on two processes lose no update, and a retry is applied once whichever
process answers it, even one whose cache holds the object as it was before the first try."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from core.api.commands import command_message
from handlers.gateway import Gateway
from streams.commandbus import CommandClient, CommandFailed
from streams.connection import connect
from streams.eventstore import EventStore
from streams.subjects import command_subject, event_subject

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

StartGateway = Callable[[], Awaitable[subprocess.Popen[bytes]]]


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "nginx", "command": ["serve"]}]},
    }


def command(key: str, body: dict[str, Any], *, manifest: bool = True) -> bytes:
    """A command's bytes as ``alice``'s client sends them (``body``: a manifest, or as given)."""
    return msgpack.packb(
        command_message(
            idempotency_key=key, actor="user:alice", body={"manifest": body} if manifest else body
        )
    )


async def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, then wait (SIGKILL if it does not stop)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    for _ in range(300):
        if process.poll() is not None:
            return
        await asyncio.sleep(0.1)
    process.kill()
    process.wait()


@pytest.fixture
async def start_gateway(nats_server: Any, tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Starts ``fleetlog gateway`` processes on the test server, each returned once it says it
    is ready; all are stopped by PID after the test."""
    started: list[subprocess.Popen[bytes]] = []

    async def start() -> subprocess.Popen[bytes]:
        log = tmp_path / f"gateway-{len(started)}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, polled below
                [sys.executable, "-m", "ops", "--server", nats_server.url, "gateway"],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        started.append(process)
        for _ in range(600):
            text = log.read_text(errors="replace")
            if "gateway ready" in text:
                return process
            if process.poll() is not None:
                raise AssertionError(f"gateway exited ({process.returncode}):\n{text}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"gateway not ready after 60 s:\n{log.read_text(errors='replace')}")

    try:
        yield start
    finally:
        for process in started:
            await stop(process)


async def test_racing_commands_on_two_gateway_processes_lose_no_update(
    start_gateway: StartGateway, client: CommandClient, store: EventStore
) -> None:
    await asyncio.gather(start_gateway(), start_gateway())
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
    await client.send("Namespace", "apply", {"manifest": namespace})
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "pods"},
        "spec": {"hard": {"pods": "5"}},
    }
    await client.send("ResourceQuota", "create", {"manifest": quota})

    async def create(index: int) -> bool:
        try:
            await client.send("Pod", "create", {"manifest": pod(f"p{index}")}, timeout=30)
        except CommandFailed as exc:
            assert exc.code == "forbidden", exc
            return False
        return True

    # Every create charges the same quota: both processes decide on it at once, and only the
    # append's expectation on the quota's subject keeps them from over-committing it.
    created = await asyncio.gather(*(create(index) for index in range(40)))
    assert sum(created) == 5
    charges = await store.read_subject(event_subject("ResourceQuota", "default", "pods"))
    charged = [e.envelope.payload["pod"] for e in charges if e.envelope.type == "QuotaCharged"]
    assert sorted(charged) == sorted(f"default/p{i}" for i, ok in enumerate(created) if ok)

    # A version-pinned update from many clients at once: exactly one wins.
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "nginx"}]},
            },
        },
    }
    made = await client.send("Deployment", "apply", {"manifest": deployment})

    async def scale(replicas: int) -> bool:
        try:
            await client.send(
                "Deployment",
                "scale",
                {"name": "web", "replicas": replicas},
                expected_version=made.version,
                timeout=30,
            )
        except CommandFailed as exc:
            assert exc.code == "conflict", exc
            return False
        return True

    won = await asyncio.gather(*(scale(replicas) for replicas in range(2, 22)))
    assert sum(won) == 1
    history = await store.read_subject(event_subject("Deployment", "default", "web"))
    assert [e.envelope.version for e in history] == [1, 2]


async def test_a_retry_is_applied_once_whichever_gateway_process_answers_it(
    start_gateway: StartGateway, nats_server: Any, client: CommandClient, store: EventStore
) -> None:
    first = await start_gateway()
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
    await client.send("Namespace", "apply", {"manifest": namespace})
    created = await client.send(
        "Pod", "create", {"manifest": pod("web")}, idempotency_key="create-1"
    )

    # The retry can only reach the second process.
    second = await start_gateway()
    await stop(first)
    again = await client.send("Pod", "create", {"manifest": pod("web")}, idempotency_key="create-1")
    assert again.replayed and again.seqs == created.seqs
    deleted = await client.send("Pod", "delete", {"name": "web"}, idempotency_key="delete-1")
    assert deleted.events[0] == "PodDeleted"

    # A gateway elsewhere (here: in this process, asked directly) that holds the pod as it was
    # before another process deleted it: the delete's retry reaches it with a stale cache, and
    # must still be answered with the first outcome, not applied again or refused.
    other_nc = await connect(nats_server.url, name="stale-gateway")
    async with EventStore(other_nc) as other_store:
        stale = await Gateway.create(other_nc, other_store)
        made = await stale.handle(command_subject("pod", "create"), command("create-2", pod("old")))
        assert made["ok"] and not made.get("replayed")
        removed = await client.send("Pod", "delete", {"name": "old"}, idempotency_key="delete-2")
        retried = await stale.handle(
            command_subject("pod", "delete"), command("delete-2", {"name": "old"}, manifest=False)
        )
    await other_nc.close()
    assert retried["ok"] and retried["replayed"] and retried["seqs"] == removed.seqs
    await stop(second)

    # Both running, the same command sent many times at once: one apply, one answer.
    await asyncio.gather(start_gateway(), start_gateway())
    outcomes = await asyncio.gather(
        *(
            client.send("Pod", "create", {"manifest": pod("many")}, idempotency_key="create-3")
            for _ in range(20)
        )
    )
    assert len({tuple(o.seqs) for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) <= 1
    for name, types in (
        ("web", ["PodCreated", "PodDeleted"]),
        ("old", ["PodCreated", "PodDeleted"]),
        ("many", ["PodCreated"]),
    ):
        history = await store.read_subject(event_subject("Pod", "default", name))
        assert [e.envelope.type for e in history] == types, name

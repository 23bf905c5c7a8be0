"""The audit trail and causal chains against a real nats-server: every command the gateway
answers is audited (refused and denied ones too, which append nothing to the log), ``fleetlog
audit`` filters them, and ``fleetlog why`` walks from a pod a deployment made back to the
user's command, and from a pod evicted from a failed node back to its missed heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from nats.aio.client import Client

from handlers.gateway import Gateway
from ops.cli.audit import causal_chain
from streams.audit import AuditRecord, AuditWriter, read_audit
from streams.commandbus import CommandClient, CommandFailed
from streams.connection import connect
from streams.definitions import audit_stream, ensure
from streams.envelope import Envelope
from streams.eventstore import EventStore
from streams.subjects import event_subject
from tests.integration.support import cli, eventually, workload_roles

pytestmark = pytest.mark.integration


def pod(name: str, **labels: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }


async def audited(nc: Client, count: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []

    async def enough() -> bool:
        records[:] = await read_audit(nc)
        return len(records) >= count

    await eventually(enough)
    return records


async def test_every_command_is_audited_refused_ones_included(
    nats_server, nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Pod", "create", {"manifest": pod("a")})
    before = await store.stream_last_seq()
    with pytest.raises(CommandFailed):
        await client.send("Pod", "create", {"manifest": pod("a")})
    mallory = CommandClient(nc, actor="user:mallory", source="laptop/42")
    with pytest.raises(CommandFailed):
        await mallory.send("Pod", "create", {"manifest": {"apiVersion": "v1", "kind": "Pod"}})
    assert await store.stream_last_seq() == before  # refused: nothing in the log
    records = await audited(nc, 4)  # the fixture's namespace apply, then ours
    accepted, exists, invalid = records[-3:]
    assert (accepted.outcome, accepted.actor, accepted.verb, accepted.kind) == (
        "accepted",
        "user:alice",
        "create",
        "Pod",
    )
    assert accepted.events == ["PodCreated"] and accepted.seqs == [before]
    assert (accepted.namespace, accepted.name) == ("default", "a")
    assert accepted.source  # host/pid of this process
    assert (exists.outcome, exists.code, exists.name) == ("rejected", "already_exists", "a")
    assert "already exists" in exists.message
    assert (invalid.outcome, invalid.actor, invalid.source) == (
        "rejected",
        "user:mallory",
        "laptop/42",
    )
    assert invalid.error_field == "metadata.name" or invalid.code

    rejected = await cli(nats_server.url, "audit", "--outcome", "rejected", "-o", "json")
    lines = [json.loads(line) for line in rejected.output.splitlines()]
    assert [r["actor"] for r in lines] == ["user:alice", "user:mallory"]
    by_actor = await cli(nats_server.url, "audit", "--actor", "user:mallory")
    rows = by_actor.output.splitlines()
    assert rows[0].split()[:3] == ["TIME", "OUTCOME", "ACTOR"] and len(rows) == 2
    assert "rejected" in rows[1] and "laptop/42" in rows[1]
    creates = await cli(nats_server.url, "audit", "--kind", "pod", "--verb", "create", "-o", "json")
    assert len(creates.output.splitlines()) == 3
    typed = await cli(nats_server.url, "audit", "--type", "PodCreated", "-o", "json")
    assert [json.loads(line)["name"] for line in typed.output.splitlines()] == ["a"]


async def test_a_denied_command_is_audited_as_denied(
    nats_server, nc: Client, store: EventStore
) -> None:
    class NoDeletes:
        def allows(self, actor: str, verb: str, kind: str, namespace: str) -> bool:
            return verb != "delete"

    service = await Gateway.create(nc, store, policy=NoDeletes())
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready))
    await ready.wait()
    try:
        client = CommandClient(nc, actor="user:eve")
        with pytest.raises(CommandFailed, match="may not delete"):
            await client.send("Pod", "delete", {"name": "x"})
        [record] = await audited(nc, 1)
        assert (record.outcome, record.actor, record.verb, record.code) == (
            "denied",
            "user:eve",
            "delete",
            "forbidden",
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_why_walks_from_a_deployments_pod_back_to_the_users_command(
    nats_server, nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }
    async with workload_roles(nc, store, projection, nodes=2, collect=False):
        created = await client.send(
            "Deployment", "create", {"manifest": manifest}, idempotency_key="launch-web-0001"
        )

        async def ready_pod() -> bool:
            pods = list(projection.model.list("Pod", "default"))
            return len(pods) == 1 and pods[0].last_event == "PodReady"

        await eventually(ready_pod)
        [record] = list(projection.model.list("Pod", "default"))
        history = await store.read_subject(event_subject("Pod", "default", record.name))
        # From the PodReady the read model saw, not from whatever the log holds last by now.
        ready = next(e for e in history if e.seq == record.last_seq)
        chain = await causal_chain(store, ready)
        types = [link.event.envelope.type for link in chain if link.event is not None]
        assert types == [
            "PodReady",
            "ContainerStarted",
            "PodIPAssigned",
            "PodBound",
            "PodCreated",
            "ReplicaSetCreated",
            "DeploymentCreated",
        ]
        assert chain[-1].root == "command launch-web-0001 issued by user:alice"
        assert chain[-2].event is not None and chain[-2].event.seq == created.seqs[0]
        # One user action: the whole chain shares the command's correlation id.
        correlations = {link.event.envelope.correlation_id for link in chain[4:-1] if link.event}
        assert correlations == {"launch-web-0001"}
        shown = await cli(nats_server.url, "why", f"pod/{record.name}", "--event", str(ready.seq))
        lines = shown.output.splitlines()
        assert lines[0].startswith("PodReady #") and lines[-1].strip() == (
            "← command launch-web-0001 issued by user:alice"
        )


async def test_audit_verify_reports_a_forged_event_with_its_sequence(
    nats_server, nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Pod", "create", {"manifest": pod("web")})
    await client.send("Pod", "apply", {"manifest": pod("web", tier="front")})
    clean = await cli(nats_server.url, "audit", "verify")
    assert clean.exit_code == 0 and clean.output.splitlines()[-1] == "no breaks"
    # An event published straight to the pod's subject, bypassing the event store.
    subject = event_subject("Pod", "default", "web")
    last = (await store.read_subject(subject))[-1].envelope
    forged = Envelope(
        "forged", "PodUpdated", last.schema_version, "Pod", "default", "web", last.version + 1,
        last.timestamp_ns + 1, "user:alice", "c", "c", {"manifest": last.payload["manifest"]},
    ).encode()  # fmt: skip
    seq = (await nc.jetstream().publish(subject, forged)).seq
    broken = await cli(nats_server.url, "audit", "verify")
    assert broken.exit_code == 1
    assert broken.output.splitlines()[0].startswith(f"BREAK  seq {seq}  Pod/default/web")
    as_json = await cli(nats_server.url, "audit", "verify", "-o", "json")
    report = json.loads(as_json.output.splitlines()[0])
    assert not report["ok"] and [b["seq"] for b in report["breaks"]] == [seq]


def record(index: int, outcome: str = "accepted") -> AuditRecord:
    return AuditRecord(
        time_ns=index,
        outcome=outcome,
        actor="user:alice",
        verb="create",
        kind="Pod",
        name=f"p{index}",
    )


async def test_the_writer_keeps_the_order_of_a_burst_and_drains_what_is_queued_on_stop(
    nc: Client,
) -> None:
    """Records are published as they are queued, many before the first ack comes back; they
    are stored in the order handed over, and stopping the writer writes what is still queued."""
    await ensure(nc, audit_stream())  # again: it exists
    writer = AuditWriter(nc)
    task = asyncio.create_task(writer.run())
    for index in range(1500):  # more than one window of records awaiting their acks
        assert writer.offer(record(index))
    await asyncio.sleep(0)
    task.cancel()  # stop at once: what is queued or in flight is still written
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (writer.written, writer.failed) == (1500, 0)
    stored = await read_audit(nc)
    assert [r.time_ns for r in stored] == list(range(1500))


async def test_records_nobody_stores_are_counted_as_lost(nats_server: Any) -> None:
    bare = await connect(nats_server.url, name="no-streams")  # no FLEET_AUDIT on this server
    writer = AuditWriter(bare, retry_for=0.5)
    task = asyncio.create_task(writer.run())
    try:
        await writer.record(record(1))
        await eventually(lambda: _now(writer.failed == 1), timeout=10)
        assert writer.written == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bare.close()


async def _now(value: bool) -> bool:
    return value


async def test_a_record_the_stream_could_not_take_is_retried_until_it_can(
    nats_server: Any,
) -> None:
    """While a cluster's NATS server is down the audit stream can answer "no responders" for
    seconds: the record is published again, and stored once, when the stream is back."""
    bare = await connect(nats_server.url, name="audit-later")  # no FLEET_AUDIT yet
    writer = AuditWriter(bare)
    task = asyncio.create_task(writer.run())
    try:
        await writer.record(record(7))
        await asyncio.sleep(1.0)  # refused at least once (503), waiting to retry
        assert (writer.written, writer.failed) == (0, 0)
        await ensure(bare, audit_stream())
        await eventually(lambda: _now(writer.written == 1), timeout=15)
        assert writer.failed == 0
        assert [r.time_ns for r in await read_audit(bare)] == [7]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bare.close()

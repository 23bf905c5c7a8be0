"""Tamper evidence against a real nats-server: what the gateway, the repository and the
scheduler write verifies clean; an envelope published straight to an aggregate's subject
(bypassing the event store), an altered copy carrying an original hash, and a removed event are
each reported at their sequence; events from before hashes are counted and chained over."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime

import msgpack
import pytest
from nats.aio.client import Client

from core.workloads.aggregate import Deployment
from handlers.gateway import Gateway
from handlers.scheduler import Scheduler
from streams import repository as repository_module
from streams.commandbus import CommandClient
from streams.definitions import FLEET_STREAM, fleet_stream_config
from streams.envelope import LINK_BYTES, Envelope
from streams.eventstore import EventStore, Write
from streams.integrity import (
    HASH_MISMATCH,
    PREVIOUS_HASH_MISMATCH,
    VERSION_GAP,
    VerifyReport,
    chain_head,
    verify_log,
)
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef, event_subject
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 25, 3, 12, tzinfo=UTC)


def pod(name: str, labels: dict[str, str] | None = None, cpu: str = "100m") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "command": ["run"],
                    "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
                }
            ]
        },
    }


def node(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
    }


def breaks(report: VerifyReport) -> list[tuple[int, str, str]]:
    return sorted((b.seq, b.subject, b.problem) for b in report.breaks)


async def test_what_the_gateway_writes_verifies_and_forged_events_are_caught(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Pod", "create", {"manifest": pod("web")})
    await client.send("Pod", "apply", {"manifest": pod("web", {"app": "web", "tier": "front"})})
    await client.send("Pod", "delete", {"name": "web", "reason": "gone"})
    await client.send("Pod", "create", {"manifest": pod("web")})  # same subject, same chain
    await client.send("Node", "apply", {"manifest": node("n1")})
    await client.send("Node", "cordon", {"name": "n1", "reason": "maintenance"})
    report = await verify_log(store)
    total = await store.stream_last_seq()
    assert report.ok, report.breaks
    assert (report.events, report.sealed, report.unchained, report.last_seq) == (
        total, total, 0, total,
    )  # fmt: skip
    assert report.aggregates == 3  # namespace default, pod web, node n1

    # 1. An envelope published straight to the pod's subject, not through the event store:
    # it states the next version but cannot know the chain.
    web = event_subject("Pod", "default", "web")
    stored = await store.read_subject(web)
    last = stored[-1].envelope
    manifest = copy.deepcopy(last.payload["manifest"])
    manifest["metadata"]["labels"] = {"app": "evil"}
    forged = Envelope(
        "forged", "PodUpdated", last.schema_version, "Pod", "default", "web", last.version + 1,
        last.timestamp_ns + 1, "user:alice", "c", "c",
        {"manifest": manifest},
    ).encode()  # fmt: skip
    js = nc.jetstream()
    forged_seq = (await js.publish(web, forged)).seq
    report = await verify_log(store)
    assert breaks(report) == [(forged_seq, web, PREVIOUS_HASH_MISMATCH)]
    assert report.breaks[0].aggregate == "Pod/default/web"

    # Writers go on from what the log says (the gateway's stale copy fails its expectation and
    # it decides again on fresh state), so the forgery stays the only break.
    await client.send("Pod", "apply", {"manifest": pod("web", {"app": "web", "v": "2"})})
    assert breaks(await verify_log(store)) == [(forged_seq, web, PREVIOUS_HASH_MISMATCH)]

    # 2. A copy of the node's last event with an altered payload, linked to it correctly but
    # carrying the original's hash.
    n1 = event_subject("Node", "", "n1")
    original_seq = (await store.read_subject(n1))[-1].seq
    original = msgpack.unpackb((await js.get_msg(FLEET_STREAM, original_seq)).data, raw=False)
    altered = {key: value for key, value in original.items() if key != "h"}
    altered.update(v=original["v"] + 1, p=original["h"][:LINK_BYTES], a="user:mallory")
    altered["h"] = original["h"]
    altered_seq = (await js.publish(n1, msgpack.packb(altered, use_bin_type=True))).seq
    report = await verify_log(store)
    assert breaks(report) == [
        (forged_seq, web, PREVIOUS_HASH_MISMATCH),
        (altered_seq, n1, HASH_MISMATCH),
    ]
    # A walk starting after the forgeries finds nothing to hold them against.
    later = await verify_log(store, from_seq=altered_seq + 1)
    assert later.ok and later.events == (await store.stream_last_seq()) - altered_seq


async def allow_message_deletes(nc: Client) -> None:
    """Replace FLEET by a stream that allows deleting messages: FLEET itself refuses deletes
    (and refuses to have that setting lifted), so a removal needs someone who can recreate
    the stream; this plays that someone."""
    await nc.jetstream().delete_stream(FLEET_STREAM)
    config = {**fleet_stream_config(), "deny_delete": False}
    reply = await nc.request(f"$JS.API.STREAM.CREATE.{FLEET_STREAM}", json.dumps(config).encode())
    assert "error" not in json.loads(reply.data)


async def test_a_removed_event_is_reported_at_the_next_event_of_its_aggregate(
    nc: Client, store: EventStore
) -> None:
    await allow_message_deletes(nc)
    repository = AggregateRepository(store)
    seqs: dict[str, list[int]] = {"a": [], "b": []}
    for name in ("a", "b"):
        ref = AggregateRef("Deployment", "default", name)
        loaded = await repository.load(ref, assume_new=True)
        loaded.aggregate = Deployment.create(
            None, agg_id=ref.id, manifest={"spec": {"replicas": 1}}, uid=name, at=AT
        )
        for replicas in (2, 3, 4):
            provenance = Provenance(
                actor="user:alice",
                correlation_id="c",
                causation_id="c",
                token=f"{name}{replicas}",
                now_ns=0,
            )
            seqs[name] += [seq for _, seq in await repository.save([loaded], provenance)]
            assert isinstance(loaded.aggregate, Deployment)
            loaded.aggregate.scale(replicas=replicas, reason="", at=AT)
    assert (await verify_log(store)).ok
    js = nc.jetstream()
    await js.delete_msg(FLEET_STREAM, seqs["a"][1])  # a's second event (version 2)
    await js.delete_msg(FLEET_STREAM, seqs["b"][0])  # b's first event
    a, b = (event_subject("Deployment", "default", name) for name in ("a", "b"))
    assert breaks(await verify_log(store)) == [
        (seqs["a"][2], a, PREVIOUS_HASH_MISMATCH),
        (seqs["a"][2], a, VERSION_GAP),
        (seqs["b"][1], b, PREVIOUS_HASH_MISMATCH),
        (seqs["b"][1], b, VERSION_GAP),
    ]


def legacy_pod_created(name: str) -> bytes:
    """A PodCreated as it was stored before hashes (no ``p``, no ``h``)."""
    return msgpack.packb(
        {
            "id": f"old-{name}", "t": "PodCreated", "sv": 1, "k": "Pod", "ns": "default",
            "n": name, "v": 1, "ts": 1_700_000_000_000_000_000, "a": "user:old", "corr": "c",
            "cause": "c", "d": {"manifest": pod(name), "uid": f"uid-{name}"},
        },
        use_bin_type=True,
    )  # fmt: skip


async def test_the_scheduler_chains_its_batches_also_over_events_from_before_hashes(
    nc: Client,
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bindings are built from the scheduler's read model (pods and nodes adopted with the hash
    it folded); a pod whose last event predates hashes has no known hash there and is read
    from the log instead, and its binding chains over the old event."""
    read_raw: list[str] = []

    async def counted_chain_head(store: EventStore, subject: str, *args: int | bytes) -> bytes:
        read_raw.append(subject)
        return await chain_head(store, subject, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(repository_module, "chain_head", counted_chain_head)
    for name in ("old-1", "old-2"):
        subject = event_subject("Pod", "default", name)
        await store.append([Write(subject, [legacy_pod_created(name)], 0)], token=name)
    for name in ("n1", "n2"):
        await client.send("Node", "apply", {"manifest": node(name)})
    for i in range(6):
        await client.send("Pod", "apply", {"manifest": pod(f"p{i}")})
    scheduler = Scheduler(nc, store, seed=1)
    ready = asyncio.Event()
    task = asyncio.create_task(scheduler.run(ready))
    await ready.wait()
    try:

        async def all_bound() -> bool:
            bound = 0
            for name in [*(f"p{i}" for i in range(6)), "old-1", "old-2"]:
                events = await store.read_subject(event_subject("Pod", "default", name))
                bound += any(e.envelope.type == "PodBound" for e in events)
            return bound == 8

        await eventually(all_bound)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    report = await verify_log(store)
    assert report.ok, report.breaks
    # Written after the fixture's (sealed) namespace, so counted as late as well.
    assert (report.unchained, report.late_unchained) == (2, 2)
    assert report.sealed == report.events - 2
    assert sorted(read_raw) == [event_subject("Pod", "default", f"old-{i}") for i in (1, 2)]
    # The gateway chains over the old event too when it next writes the pod.
    await client.send("Pod", "delete", {"name": "old-1", "reason": "done"})
    assert (await verify_log(store)).ok


async def test_a_write_decided_again_after_a_lost_ack_leaves_the_chain_whole(
    store: EventStore,
) -> None:
    """A command retried after a lost ack and decided again elsewhere (another gateway, or
    after its aggregate left the cache) with the same token finds the first attempt's events
    stored. Its own bytes (another timestamp) were not stored, so the writer must not go on
    from what it decided: the next event chains to what the log holds."""
    ref = AggregateRef("Deployment", "default", "web")
    first, second = AggregateRepository(store), AggregateRepository(store)
    answers = []
    for repository, now_ns in ((first, 1_000), (second, 2_000)):
        loaded = await repository.load(ref, assume_new=True)
        loaded.aggregate = Deployment.create(
            None, agg_id=ref.id, manifest={"spec": {"replicas": 1}}, uid="web", at=AT
        )
        provenance = Provenance(
            actor="user:alice",
            correlation_id="c",
            causation_id="c",
            token="create-web",
            now_ns=now_ns,
        )
        answers.append(await repository.save([loaded], provenance))
    assert answers[1] == answers[0]
    assert (answers[0].replayed, answers[1].replayed) == (False, True)
    loaded = await second.load(ref)
    assert isinstance(loaded.aggregate, Deployment)
    assert loaded.aggregate.version == 1
    loaded.aggregate.scale(replicas=2, reason="", at=AT)
    await second.save(
        [loaded],
        Provenance(
            actor="user:alice",
            correlation_id="c2",
            causation_id="c2",
            token="scale-web",
            now_ns=3_000,
        ),
    )
    stored = await store.read_subject(ref.subject)
    assert [e.envelope.timestamp_ns for e in stored] == [1_000, 3_000]
    report = await verify_log(store)
    assert report.ok, breaks(report)

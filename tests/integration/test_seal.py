"""The writers' seal against a real nats-server: events the control plane appends carry a MAC
under the cluster's key; a correctly chained event written through a stolen connection without
the key is skipped by every reader holding the key (never acted on) and reported by
``audit verify``; the stream says which key seals it, and writers without it are refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from core.errors import FleetError
from core.meta.aggregate import timestamp_from_ns
from core.nodes.aggregate import Node
from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.decide import Append, Attempt, decide_and_append
from streams.eventstore import EventStore
from streams.integrity import verify_log
from streams.quarantine import UNSEALED
from streams.repository import AggregateRepository, Provenance
from streams.seal import SEAL_HEADER, SealKey, SealKeyError, create_seal_key
from streams.sealing import check_seal_key, open_seal_key, stream_mark
from streams.subjects import AggregateRef, event_subject

pytestmark = pytest.mark.integration

KEY = SealKey(bytes(range(32)))
N1 = AggregateRef("Node", "", "n1")


@pytest.fixture
async def store(nc: Client) -> AsyncIterator[EventStore]:
    """The control plane's store: it seals what it appends and checks what it reads."""
    async with EventStore(nc, seal=KEY) as sealed:
        yield sealed


def node(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}},
    }


async def cordon_without_the_key(nc: Client) -> int:
    """What someone holding a control-plane connection but not the key can do: read the node,
    decide a correctly chained ``NodeCordoned`` and append it. Returns its sequence."""
    async with EventStore(nc, seal=False) as thief:

        async def decide(attempt: Attempt) -> Append:
            loaded = attempt[N1]
            assert isinstance(loaded.aggregate, Node)
            loaded.aggregate.cordon(reason="forged", at=timestamp_from_ns(time.time_ns()))
            token = "forged-cordon"
            return Append(
                changes=[loaded],
                provenance=Provenance(
                    actor="system:node-lifecycle", correlation_id=token, causation_id=token,
                    token=token, now_ns=time.time_ns(),
                ),
            )  # fmt: skip

        decided = await decide_and_append(AggregateRepository(thief), [N1], decide, attempts=1)
        assert decided.written is not None
        return decided.written[0][1]


async def test_a_forged_event_is_skipped_by_every_reader_and_reported_by_audit_verify(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    subject = event_subject("Node", "", "n1")
    first = await store.get_event(await store.leader_last_seq(subject))
    assert first is not None and first.envelope.type == "NodeCreated"

    forged = await cordon_without_the_key(nc)
    # Every read path of a store holding the key skips it, and quarantines it as unsealed.
    events, last = await store.read_aggregate(subject)
    assert [e.envelope.type for e in events] == ["NodeCreated"] and last == forged
    assert await store.get_event(forged) is None
    replayed: list[str] = []
    await store.replay(lambda e: replayed.append(e.envelope.type), filter_subject=subject)
    assert replayed == ["NodeCreated"]
    store.bulk_reads = False  # nats-py's consumer, the fallback path
    replayed.clear()
    await store.replay(lambda e: replayed.append(e.envelope.type), filter_subject=subject)
    assert replayed == ["NodeCreated"]
    store.bulk_reads = True
    assert {(q.seq, q.reason) for q in store.quarantine} == {(forged, UNSEALED)}
    # Not acted on: the read model (catch-up and live) never sees the node cordoned.
    model = Projection(ClusterModel(), store)
    await model.catch_up()
    await model.follow()
    try:
        record = model.model.get("Node", "", "n1")
        assert record is not None and not (record.manifest.get("spec") or {}).get("unschedulable")
    finally:
        await model.stop()
    # A writer holding the key chains past it, and audit verify names it.
    await client.send("Node", "cordon", {"name": "n1", "reason": "maintenance"})
    report = await verify_log(store)
    assert not report.ok
    assert [(q.seq, q.reason) for q in report.quarantined] == [(forged, UNSEALED)]
    assert report.breaks == []
    # A reader without the key cannot tell: it sees all three (the seal is what tells).
    async with EventStore(nc, seal=False) as keyless:
        seen = [e.envelope.type for e in await keyless.read_subject(subject)]
    assert seen == ["NodeCreated", "NodeCordoned", "NodeCordoned"]


async def test_a_live_follower_skips_a_forged_event(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    model = Projection(ClusterModel(), store)
    await model.catch_up()
    await model.follow()
    try:
        forged = await cordon_without_the_key(nc)
        await client.send("Node", "apply", {"manifest": node("n2")})  # a sealed one after it
        for _ in range(200):
            if model.model.get("Node", "", "n2") is not None:
                break
            await asyncio.sleep(0.05)
        assert model.model.get("Node", "", "n2") is not None
        record = model.model.get("Node", "", "n1")
        assert record is not None and record.last_seq < forged
        assert not (record.manifest.get("spec") or {}).get("unschedulable")
    finally:
        await model.stop()


async def test_every_appended_message_carries_the_seal_of_its_subject_and_bytes(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Node", "apply", {"manifest": node("n1")})
    seq = await store.leader_last_seq(event_subject("Node", "", "n1"))
    message = await nc.request(store.subjects.direct_get, b'{"seq": %d}' % seq)
    assert message.headers is not None
    assert message.headers[SEAL_HEADER] == KEY.seal(event_subject("Node", "", "n1"), message.data)


async def test_the_stream_names_its_key_and_writers_without_it_are_refused(
    nc: Client, tmp_path: Path
) -> None:
    async with EventStore(nc, seal=False) as plain:
        await check_seal_key(plain, None)  # not sealed: any writer
        path = tmp_path / "pki" / "seal.key"
        key = await open_seal_key(plain, path)
        assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        mark = await stream_mark(plain)
        assert mark is not None and mark[0] == key.since
        assert await open_seal_key(plain, path) == key  # the next start: the same key
        await check_seal_key(plain, key)
        with pytest.raises(SealKeyError, match="sealed: a writer without its key"):
            await check_seal_key(plain, None)
        other = create_seal_key(tmp_path / "other" / "seal.key", since=0)
        with pytest.raises(SealKeyError, match="not the one"):
            await check_seal_key(plain, other)
        with pytest.raises(SealKeyError, match="another key"):
            await open_seal_key(plain, tmp_path / "other" / "seal.key")
        with pytest.raises(SealKeyError, match="not in"):
            await open_seal_key(plain, tmp_path / "elsewhere" / "seal.key")
        assert isinstance(SealKeyError("x"), FleetError)  # the CLI reports it in one line

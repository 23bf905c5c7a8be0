"""Tamper evidence without a server: how envelopes are sealed and chained, how the repository
chains the events of a batch, and what the verification fold reports for each kind of
tampering (altered, inserted, removed, unsealed, foreign) and for events from before hashes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

import msgpack
import pytest

from core.workloads.aggregate import Deployment
from projections.scheduling import SchedulingModel
from streams.envelope import (
    GENESIS,
    LINK_BYTES,
    Envelope,
    StoredEvent,
    chain_hash,
    decode_envelope,
    split_seal,
)
from streams.eventstore import Appended, Write
from streams.integrity import (
    HASH_MISMATCH,
    MISSING_HASH,
    PREVIOUS_HASH_MISMATCH,
    SUBJECT_MISMATCH,
    VERSION_GAP,
    ChainVerifier,
    VerifyReport,
    next_head,
)
from streams.quarantine import INVALID_PAYLOAD, UNDECODABLE, UNKNOWN_TYPE
from streams.repository import AggregateRepository, Loaded, Provenance
from streams.subjects import AggregateRef, event_subject

AT = datetime(2026, 11, 25, 3, 12, tzinfo=UTC)
WEB = event_subject("Pod", "default", "web")


def envelope(version: int, name: str = "web", **payload: Any) -> Envelope:
    return Envelope(
        f"id-{name}-{version}", "PodCreated" if version == 1 else "PodUpdated", 1, "Pod",
        "default", name, version, 1_700_000_000_000_000_000 + version, "alice", "corr", "cause",
        {"manifest": {"metadata": {"name": name}}, "uid": "u", **payload},
    )  # fmt: skip


def legacy(version: int, name: str = "web") -> bytes:
    """The bytes an envelope was stored as before hashes: the 12-entry map, nothing more."""
    e = envelope(version, name)
    return msgpack.packb(
        {
            "id": e.event_id, "t": e.type, "sv": e.schema_version, "k": e.kind,
            "ns": e.namespace, "n": e.name, "v": e.version, "ts": e.timestamp_ns,
            "a": e.actor, "corr": e.correlation_id, "cause": e.causation_id, "d": e.payload,
        },
        use_bin_type=True,
    )  # fmt: skip


def chain(count: int, name: str = "web", previous: bytes = GENESIS) -> list[bytes]:
    out = []
    for version in range(1, count + 1):
        data, previous = envelope(version, name).seal(previous)
        out.append(data)
    return out


def verify(messages: Sequence[tuple[str, bytes]], from_seq: int = 1) -> VerifyReport:
    verifier = ChainVerifier(from_seq=from_seq)
    for seq, (subject, data) in enumerate(messages, from_seq):
        verifier.feed(seq, subject, data)
    return verifier.report()


def problems(report: VerifyReport) -> list[tuple[int, str]]:
    return [(b.seq, b.problem) for b in report.breaks]


def reseal_with(data: bytes, **changes: Any) -> bytes:
    """``data`` with entries changed but its stored ``p`` and ``h`` kept (a forgery)."""
    raw = msgpack.unpackb(data, raw=False)
    seal = raw.pop("h")
    raw.update(changes)
    raw["h"] = seal
    return msgpack.packb(raw, use_bin_type=True)


# -- sealing -------------------------------------------------------------------------------


def test_the_seal_is_sha256_of_the_previous_hash_and_the_bytes_without_it() -> None:
    previous = sha256(b"earlier").digest()
    data, digest = envelope(2).seal(previous)
    raw = msgpack.unpackb(data, raw=False)
    assert list(raw) == [
        "id", "t", "sv", "k", "ns", "n", "v", "ts", "a", "corr", "cause", "d", "p", "h",
    ]  # fmt: skip
    assert raw["h"] == digest and raw["p"] == previous[:LINK_BYTES]
    canonical, seal = split_seal(data, raw)
    del raw["h"]
    assert canonical == msgpack.packb(raw, use_bin_type=True)
    assert seal == digest == sha256(previous + canonical).digest()
    assert decode_envelope(data).chain_hash == digest


def test_sealing_is_deterministic_and_depends_on_the_previous_hash() -> None:
    first, h1 = envelope(1).seal(GENESIS)
    assert envelope(1).seal(GENESIS) == (first, h1)
    assert envelope(1).encode() == first
    other, h2 = envelope(1).seal(h1)
    assert other != first and h2 != h1
    assert msgpack.unpackb(first)["p"] == b""


def test_an_event_from_before_hashes_decodes_with_no_seal_and_implies_one() -> None:
    data = legacy(1)
    assert decode_envelope(data).chain_hash == b""
    assert split_seal(data, msgpack.unpackb(data)) == (data, b"")
    assert next_head(GENESIS, data) == chain_hash(GENESIS, data)


def test_a_seal_that_is_not_the_final_entry_is_malformed() -> None:
    raw = msgpack.unpackb(envelope(1).encode(), raw=False)
    moved = {"h": raw.pop("h"), **raw}
    with pytest.raises(ValueError, match="final 32-byte entry"):
        split_seal(msgpack.packb(moved, use_bin_type=True), moved)


# -- the repository chains what it writes --------------------------------------------------


class FakeStore:
    """Appends to a list; reads one subject back decoded (what the repository needs)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, bytes]] = []
        self.reads = 0

    async def append(self, writes: Sequence[Write], *, token: str) -> Appended:
        seqs = []
        for write in writes:
            for data in write.events:
                self.log.append((write.subject, data))
                seqs.append(len(self.log))
        return Appended(seqs)

    async def read_aggregate(
        self, subject: str, *, after_seq: int = 0, at_least: int = 0
    ) -> tuple[list[StoredEvent], int]:
        self.reads += 1
        events = [
            StoredEvent(seq, s, 0, decode_envelope(data))
            for seq, (s, data) in enumerate(self.log, 1)
            if s == subject and seq > after_seq
        ]
        return events, events[-1].seq if events else 0


def deployment(name: str) -> tuple[AggregateRef, Deployment]:
    ref = AggregateRef("Deployment", "default", name)
    created = Deployment.create(None, agg_id=ref.id, manifest={"spec": {}}, uid=name, at=AT)
    assert isinstance(created, Deployment)
    return ref, created


def provenance(token: str) -> Provenance:
    return Provenance(
        actor="alice",
        correlation_id=token,
        causation_id=token,
        token=token,
        now_ns=1_700_000_000_000_000_000,
    )


async def test_a_batch_chains_each_event_to_the_previous_event_of_its_own_aggregate() -> None:
    store = FakeStore()
    repository = AggregateRepository(store)  # type: ignore[arg-type]
    (ref_a, a), (ref_b, b) = deployment("a"), deployment("b")
    a.scale(replicas=3, reason="", at=AT)  # two events of a, interleaved with b in the batch
    loaded_a = Loaded(ref_a, a, 0, stored_version=0)
    loaded_b = Loaded(ref_b, b, 0, stored_version=0)
    await repository.save([loaded_a, loaded_b], provenance("t1"))
    assert [subject for subject, _ in store.log] == [ref_a.subject] * 2 + [ref_b.subject]
    first_a, second_a, first_b = (decode_envelope(data) for _, data in store.log)
    assert msgpack.unpackb(store.log[0][1])["p"] == b""
    assert msgpack.unpackb(store.log[2][1])["p"] == b""  # b's own chain starts afresh
    assert msgpack.unpackb(store.log[1][1])["p"] == first_a.chain_hash[:LINK_BYTES]
    assert (loaded_a.last_hash, loaded_b.last_hash) == (second_a.chain_hash, first_b.chain_hash)
    # The next write chains on from what the save remembered.
    a.scale(replicas=1, reason="", at=AT)
    await repository.save([loaded_a], provenance("t2"))
    report = verify(store.log)
    assert report.ok and (report.events, report.aggregates, report.sealed) == (4, 2, 4)
    # A load from the log finds the same head.
    reloaded = await repository.load(ref_a, fresh=True)
    assert reloaded.last_hash == decode_envelope(store.log[-1][1]).chain_hash


async def test_adopting_without_a_known_hash_reads_the_log_instead() -> None:
    store = FakeStore()
    repository = AggregateRepository(store)  # type: ignore[arg-type]
    ref, created = deployment("a")
    await repository.save([Loaded(ref, created, 0, stored_version=0)], provenance("t1"))
    repository.forget(ref)
    head = decode_envelope(store.log[-1][1]).chain_hash

    def build() -> Deployment:
        return deployment("a")[1]

    adopted = await repository.adopt(ref, build, 1, head)
    assert adopted.last_hash == head and store.reads == 0
    repository.forget(ref)
    adopted = await repository.adopt(ref, build, 1, b"")
    assert adopted.last_hash == head and store.reads == 1


# -- what verification reports ---------------------------------------------------------------


def test_an_intact_log_has_no_break() -> None:
    log = list(zip([WEB] * 3, chain(3), strict=True))
    other = event_subject("Pod", "default", "db")
    log.insert(1, (other, chain(1, "db")[0]))
    report = verify(log)
    assert report.ok, report.breaks
    assert (report.events, report.aggregates, report.sealed, report.unchained) == (4, 2, 4, 0)
    assert report.last_seq == 4 and len(report.head_digest) == 64
    assert verify(log).head_digest == report.head_digest
    assert verify(log[:3]).head_digest != report.head_digest


def test_an_altered_event_is_a_hash_mismatch_at_its_sequence() -> None:
    log = [(WEB, data) for data in chain(3)]
    log[1] = (WEB, reseal_with(log[1][1], a="mallory"))
    report = verify(log)
    assert problems(report) == [(2, HASH_MISMATCH)]
    assert report.breaks[0].aggregate == "Pod/default/web" and report.breaks[0].version == 2


def test_a_removed_event_breaks_the_link_and_the_versions_of_the_next() -> None:
    log = [(WEB, data) for data in chain(4)]
    del log[1]
    assert sorted(problems(verify(log))) == [(2, PREVIOUS_HASH_MISMATCH), (2, VERSION_GAP)]


def test_an_event_inserted_with_a_copied_hash_is_reported() -> None:
    log = [(WEB, data) for data in chain(2)]
    # The last event again with another payload and its original p and h, as version 3.
    forged = reseal_with(log[1][1], v=3, d={"manifest": {}, "uid": "evil"})
    found = problems(verify([*log, (WEB, forged)]))
    assert found == [(3, PREVIOUS_HASH_MISMATCH)]
    # With the right link but a made-up hash: the bytes do not hash to it.
    raw = msgpack.unpackb(forged, raw=False)
    raw["p"] = msgpack.unpackb(log[1][1])["h"][:LINK_BYTES]
    raw["h"] = b"\0" * 32
    found = problems(verify([*log, (WEB, msgpack.packb(raw, use_bin_type=True))]))
    assert found == [(3, HASH_MISMATCH)]


def test_the_walk_goes_on_from_the_suspect_event_so_one_forgery_is_one_break() -> None:
    log = [(WEB, data) for data in chain(2)]
    forged = reseal_with(log[1][1], v=3)
    after, _ = envelope(4).seal(msgpack.unpackb(forged)["h"])  # a writer chaining on from it
    assert problems(verify([*log, (WEB, forged), (WEB, after)])) == [(3, PREVIOUS_HASH_MISMATCH)]


def test_events_from_before_hashes_are_counted_and_sealed_by_the_first_hashed_event() -> None:
    old = [legacy(1), legacy(2)]
    implied = GENESIS
    for data in old:
        implied = next_head(implied, data)
    sealed, _ = envelope(3).seal(implied)
    log = [(WEB, old[0]), (WEB, old[1]), (WEB, sealed)]
    report = verify(log)
    assert report.ok, report.breaks
    assert (report.unchained, report.sealed, report.late_unchained) == (2, 1, 0)
    # An old event altered afterwards breaks the chain at the first sealed event after it.
    tampered = msgpack.unpackb(log[1][1], raw=False)
    tampered["a"] = "mallory"
    log[1] = (WEB, msgpack.packb(tampered, use_bin_type=True))
    assert problems(verify(log)) == [(3, PREVIOUS_HASH_MISMATCH)]


def test_an_unsealed_event_after_the_chain_started_is_a_break() -> None:
    log = [(WEB, data) for data in chain(2)]
    log.append((WEB, legacy(3)))
    assert problems(verify(log)) == [(3, MISSING_HASH)]


def test_unsealed_events_after_the_first_sealed_one_of_the_log_are_counted_apart() -> None:
    db = event_subject("Pod", "default", "db")
    report = verify([(WEB, chain(1)[0]), (db, legacy(1, "db"))])
    assert report.ok and (report.unchained, report.late_unchained) == (1, 1)


def test_an_envelope_on_another_aggregate_subject_is_reported() -> None:
    db = event_subject("Pod", "default", "db")
    report = verify([(db, chain(1)[0])])
    assert problems(report) == [(1, SUBJECT_MISMATCH)]


def test_poison_is_quarantined_outside_the_chain_and_what_follows_links_past_it() -> None:
    first, second = chain(2)
    unknown = Envelope(
        "id-x", "PodExploded", 1, "Pod", "default", "web", 2, 1, "mallory", "c", "c", {}
    ).encode(sha256(b"x").digest())
    bad_payload = Envelope(
        "id-y", "PodBound", 1, "Pod", "default", "web", 2, 1, "mallory", "c", "c", {"node": 7}
    ).encode(sha256(b"x").digest())
    log = [(WEB, first), (WEB, b"\xc1garbage"), (WEB, unknown), (WEB, bad_payload)]
    report = verify([*log, (WEB, second)])
    assert report.breaks == [] and not report.ok
    assert [(q.seq, q.reason) for q in report.quarantined] == [
        (2, UNDECODABLE),
        (3, UNKNOWN_TYPE),
        (4, INVALID_PAYLOAD),
    ]
    assert report.sealed == 2 and report.unanchored == 0
    # An event after the poison that links to something else is still a break.
    data, _ = envelope(2).seal(sha256(b"x").digest())
    assert problems(verify([*log, (WEB, data)])) == [(5, PREVIOUS_HASH_MISMATCH)]


def test_a_walk_from_later_takes_each_aggregate_first_event_as_given() -> None:
    log = [(WEB, data) for data in chain(3)]
    report = verify(log[1:], from_seq=2)
    assert report.ok and (report.unanchored, report.sealed, report.from_seq) == (1, 2, 2)
    forged = reseal_with(log[2][1], a="mallory")
    assert problems(verify([log[1], (WEB, forged)], from_seq=2)) == [(3, HASH_MISMATCH)]


def test_a_first_event_that_does_not_start_at_version_one_is_a_gap() -> None:
    data, _ = envelope(2).seal(GENESIS)
    assert problems(verify([(WEB, data)])) == [(1, VERSION_GAP)]


# -- read models keep each object's last hash (the scheduler writes from them) ---------------


def test_the_scheduling_model_keeps_each_object_last_hash_and_old_snapshots_restore() -> None:
    model = SchedulingModel()
    for seq, data in enumerate(chain(2), 1):
        model.apply(StoredEvent(seq, WEB, 0, decode_envelope(data)))
    head = decode_envelope(chain(2)[-1]).chain_hash
    assert model.last_hash("Pod", "default", "web") == head
    assert model.last_hash("Pod", "default", "nobody") == b""
    snapshot = model.snapshot()
    restored = SchedulingModel()
    restored.restore(snapshot)
    assert restored.last_hash("Pod", "default", "web") == head
    # A snapshot taken before hashes has no last_hash: unknown, so the writer reads the log.
    for item in snapshot["cluster"]:
        del item["last_hash"]
    restored.restore(snapshot)
    assert restored.last_hash("Pod", "default", "web") == b""
    # An event from before hashes leaves the hash unknown too.
    model.apply(
        StoredEvent(3, event_subject("Pod", "default", "db"), 0, decode_envelope(legacy(1, "db")))
    )
    assert model.last_hash("Pod", "default", "db") == b""

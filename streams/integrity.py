"""Tamper evidence: walk the log once and check every aggregate's hash chain.

The log is the cluster's history and its audit trail, so it must be possible to show that
nobody changed it behind the event store's back. Every envelope is sealed with a hash chained to
the previous event of its aggregate (the rule is in ``streams/envelope.py``); this module reads
the whole ``FLEET`` stream with one ordered consumer, recomputes each hash from the stored bytes
and reports every place where the chain does not hold, with the stream sequence where it is:

* ``hash_mismatch``: the event's bytes do not hash to the ``h`` stored with them (it was altered,
  or forged with a copied or made-up hash);
* ``previous_hash_mismatch``: the event does not link to the previous event of its aggregate (an
  event was inserted before it, or its predecessor was removed);
* ``version_gap``: the aggregate's version is not the previous one plus one (removed or forged);
* ``missing_hash``: an event without a hash on an aggregate whose chain had already started
  (only a writer from before hashes, or one bypassing the event store, writes those);
* ``subject_mismatch``: the envelope names another aggregate than the subject it is stored on.

A message no reader can use (not an envelope, an unknown type or schema version, a payload the
folds cannot take: :mod:`streams.quarantine`) is not part of any chain, since every reader and
writer skips it: it is listed in :attr:`VerifyReport.quarantined`, and the chain goes on from
the event before it. A log whose first events are gone (a limit or a purge removed them) is
checked from its first stored event, each aggregate's first event taken as given, and the
missing range is reported (:attr:`VerifyReport.missing_before`).

After a break the walk goes on from the hash the suspect event carries, as writers do (they chain
to whatever the last stored event says), so one tampered event is one break, not a cascade.

Events written before hashes existed are counted (``unchained``), not reported: their hash is
implied from their bytes, so the first sealed event after them seals them too. Memory is one
small entry per aggregate (its last hash, version and identity), never per event.

A chain shows that the history was not changed *in part*; someone able to rewrite a subject's
tail and recompute every hash after the change is caught only by comparing with a digest taken
earlier: :attr:`VerifyReport.head_digest` (over every aggregate's last hash) is that anchor, and
``verify_log(store, until_seq=N)`` reproduces the one taken when the log ended at ``N``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import msgpack
from nats.aio.msg import Msg

from streams.definitions import FLEET_STREAM
from streams.envelope import GENESIS, LINK_BYTES, chain_hash, split_seal
from streams.eventstore import EventStore, StoreError
from streams.logreader import parse_ack_subject
from streams.quarantine import PoisonEvent, QuarantinedEvent, read_event, unsealed
from streams.seal import SealKey
from streams.subjects import event_subject

HASH_MISMATCH = "hash_mismatch"
PREVIOUS_HASH_MISMATCH = "previous_hash_mismatch"
VERSION_GAP = "version_gap"
MISSING_HASH = "missing_hash"
SUBJECT_MISMATCH = "subject_mismatch"
PROBLEMS = (
    HASH_MISMATCH,
    PREVIOUS_HASH_MISMATCH,
    VERSION_GAP,
    MISSING_HASH,
    SUBJECT_MISMATCH,
)

_DECODE_ERRORS = (
    KeyError,
    TypeError,
    ValueError,
    msgpack.ExtraData,
    msgpack.FormatError,
    msgpack.StackError,
)


@dataclass(frozen=True, slots=True)
class Break:
    """One place where an aggregate's chain does not hold."""

    seq: int
    """The stream sequence of the event where the break shows."""
    subject: str
    aggregate: str
    """``Kind/namespace/name`` as the envelope states it (the subject if it cannot be read)."""
    version: int | None
    problem: str
    """One of :data:`PROBLEMS`."""
    detail: str


@dataclass(slots=True)
class VerifyReport:
    """What a walk of the log found: the breaks, and counts of what was checked."""

    from_seq: int
    last_seq: int = 0
    """The last sequence read (0 if nothing was)."""
    events: int = 0
    aggregates: int = 0
    sealed: int = 0
    """Events carrying a hash (each checked against its predecessor unless unanchored)."""
    unchained: int = 0
    """Events without a hash, written before hashes: counted, not breaks. Their hash is implied
    from their bytes, so the first sealed event of their aggregate seals them too."""
    late_unchained: int = 0
    """Of ``unchained``, those stored after the first sealed event of the log (on aggregates
    whose chain had not started yet). Expected to be 0 once every writer seals: otherwise an
    old process, or something bypassing the event store, still writes."""
    unanchored: int = 0
    """Sealed events whose predecessor was not read (walks starting after sequence 1): taken
    as given, and the chain checked from them on."""
    breaks: list[Break] = field(default_factory=list)
    quarantined: list[QuarantinedEvent] = field(default_factory=list)
    """Messages no reader can use (skipped by every role): not part of any chain."""
    missing_before: int = 0
    """The log's first stored sequence when the walk was asked to start before it (events
    before it were removed by a limit or a purge); 0 when nothing asked for is missing."""
    head_digest: str = ""
    """SHA-256 over every aggregate's subject and last hash, sorted by subject: record it with
    ``last_seq`` to prove later that the history up to there was not rewritten."""

    @property
    def ok(self) -> bool:
        """No break, nothing quarantined, nothing missing."""
        return not self.breaks and not self.quarantined and not self.missing_before


@dataclass(slots=True)
class _Head:
    """What the walk remembers of one aggregate: the hash its next event must link to (None
    if unknown), its last version (None if unknown), whether its chain has started, and the
    aggregate its envelopes name."""

    hash: bytes | None
    version: int | None
    sealed: bool
    identity: tuple[Any, Any, Any]


class ChainVerifier:
    """The verification fold, one stored message at a time (no I/O: ``verify_log`` feeds it
    from the log, tests feed it directly)."""

    def __init__(self, *, from_seq: int = 1, seal_key: SealKey | None = None) -> None:
        """With ``seal_key``, a message without a writer's valid seal is reported among the
        quarantined (readers holding the key skip it) instead of being chained."""
        self._seal_key = seal_key
        self._from_start = from_seq <= 1
        self._heads: dict[str, _Head] = {}
        self._seen_sealed = False
        self._report = VerifyReport(from_seq=from_seq)

    def feed(self, seq: int, subject: str, data: bytes, seal: bytes | None = None) -> None:
        report = self._report
        report.events += 1
        report.last_seq = seq
        try:
            if self._seal_key is not None and not self._seal_key.holds(seq, subject, data, seal):
                raise unsealed()
            read_event(data)
        except PoisonEvent as exc:
            # Outside every chain: readers skip it and writers chain to the event before it.
            report.quarantined.append(
                QuarantinedEvent(FLEET_STREAM, seq, subject, exc.reason, exc.message)
            )
            return
        head = self._heads.get(subject)
        try:
            raw = msgpack.unpackb(data, raw=False)
            identity = (raw["k"], raw["ns"], raw["n"])
            version = raw["v"]
            if not isinstance(version, int):
                raise TypeError("the version is not an integer")
            canonical, seal = split_seal(data, raw)
        except _DECODE_ERRORS as exc:  # the envelope reads, but its seal is misplaced
            self._break(seq, subject, subject, None, HASH_MISMATCH, f"unreadable seal: {exc}")
            if head is None:
                head = self._heads[subject] = _Head(None, None, False, (None, None, None))
            head.hash = None  # nothing can be checked against it
            return
        aggregate = f"{identity[0]}/{identity[1]}/{identity[2]}"
        if head is None:
            head = self._heads[subject] = _Head(
                GENESIS if self._from_start else None,
                0 if self._from_start else None,
                False,
                identity,
            )
            if not all(isinstance(part, str) for part in identity) or (
                event_subject(*identity) != subject
            ):
                self._break(
                    seq, subject, aggregate, version, SUBJECT_MISMATCH,
                    f"the envelope names {aggregate}, stored on another subject",
                )  # fmt: skip
        elif identity != head.identity:
            self._break(
                seq, subject, aggregate, version, SUBJECT_MISMATCH,
                f"the envelope names {aggregate}, earlier events of the subject "
                f"{'/'.join(map(str, head.identity))}",
            )  # fmt: skip
        if head.version is not None and version != head.version + 1:
            self._break(
                seq, subject, aggregate, version, VERSION_GAP,
                f"version {version} follows version {head.version}",
            )  # fmt: skip
        head.version = version
        if not seal:
            if head.sealed:
                self._break(
                    seq, subject, aggregate, version, MISSING_HASH,
                    "no hash, though earlier events of the aggregate are sealed",
                )  # fmt: skip
            else:
                report.unchained += 1
                if self._seen_sealed:
                    report.late_unchained += 1
            head.hash = chain_hash(head.hash, canonical) if head.hash is not None else None
            return
        report.sealed += 1
        self._seen_sealed = True
        previous = head.hash
        head.hash = seal
        head.sealed = True
        if previous is None:
            report.unanchored += 1
            return
        link = raw.get("p")
        if link != previous[:LINK_BYTES]:
            stated = link.hex() if isinstance(link, bytes) else repr(link)
            self._break(
                seq, subject, aggregate, version, PREVIOUS_HASH_MISMATCH,
                f"links to {stated or 'nothing'}, the previous event's hash is "
                f"{previous.hex() or 'nothing (first event)'}",
            )  # fmt: skip
        elif chain_hash(previous, canonical) != seal:
            self._break(
                seq, subject, aggregate, version, HASH_MISMATCH,
                f"stored hash {seal.hex()[:16]}… is not the hash of the stored bytes",
            )  # fmt: skip

    def _break(
        self, seq: int, subject: str, aggregate: str, version: int | None, problem: str, detail: str
    ) -> None:
        self._report.breaks.append(Break(seq, subject, aggregate, version, problem, detail))

    def report(self) -> VerifyReport:
        """The report so far, with the aggregate count and head digest filled in."""
        report = self._report
        report.aggregates = len(self._heads)
        digest = sha256()
        for subject in sorted(self._heads):
            digest.update(subject.encode())
            digest.update(b"\0")
            digest.update(self._heads[subject].hash or b"")
            digest.update(b"\n")
        report.head_digest = digest.hexdigest()
        return report


async def verify_log(
    store: EventStore, *, from_seq: int = 1, until_seq: int | None = None
) -> VerifyReport:
    """Walk the log from ``from_seq`` to its end as of now (or ``until_seq``) and check every
    aggregate's chain. From sequence 1 every aggregate is checked from its first event; from a
    later one, each aggregate's first event read is taken as given (``unanchored``), as it is
    when the log's first events are gone (reported as ``missing_before``)."""
    from_seq = max(from_seq, 1)
    first = int((await store.stream_info())["state"].get("first_seq") or 0)
    missing = first if first > from_seq else 0
    verifier = ChainVerifier(from_seq=max(from_seq, first), seal_key=store.seal_key)
    await store.replay_raw(
        lambda seq, subject, _stored_ns, data, seal: verifier.feed(seq, subject, data, seal),
        from_seq=from_seq,
        until_seq=until_seq,
    )
    report = verifier.report()
    report.from_seq = from_seq
    report.missing_before = missing
    return report


def next_head(previous: bytes, data: bytes) -> bytes:
    """The hash the event after stored message ``data`` chains to: the hash stored in it, or
    for an event written before hashes the one implied by ``previous`` and its bytes."""
    raw = msgpack.unpackb(data, raw=False)
    canonical, seal = split_seal(data, raw)
    return seal or chain_hash(previous, canonical)


async def chain_head(
    store: EventStore, subject: str, previous: bytes, first_seq: int, last_seq: int
) -> bytes:
    """The chain's head after the events of ``subject`` from ``first_seq`` to ``last_seq``
    (known to exist), given the hash ``previous`` before them: for a writer whose aggregate's
    last events predate hashes (their implied hashes need their stored bytes)."""
    head = previous
    done = asyncio.Event()
    failure: list[BaseException] = []

    async def on_message(msg: Msg) -> None:
        nonlocal head
        if done.is_set():
            return
        seq, _, pending = parse_ack_subject(msg.reply)
        if seq > last_seq:
            done.set()
            return
        try:
            head = next_head(head, msg.data)
        except _DECODE_ERRORS as exc:
            failure.append(exc)
            done.set()
            return
        if seq >= last_seq or pending == 0:
            done.set()

    sub = await store.subscribe_raw(on_message, filter_subject=subject, from_seq=first_seq)
    try:
        await asyncio.wait_for(done.wait(), 10)
    except TimeoutError as exc:
        raise StoreError(f"{subject}: could not read events {first_seq}..{last_seq}") from exc
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    if failure:
        raise StoreError(f"{subject}: an event cannot be decoded: {failure[0]}")
    return head

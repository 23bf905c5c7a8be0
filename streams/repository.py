"""Loading aggregates from the log and saving their new events, with a cache in front.

Handlers decide on aggregates (``core.<kind>.aggregate``); this is where an aggregate is
rebuilt from its subject (one batched direct get), kept in a bounded LRU cache together with the
stream sequence of its last event, and where its pending events become envelopes appended with that
sequence as the optimistic-concurrency expectation. A cached aggregate can be stale when another
process wrote to it; the append then fails with a conflict and the caller reloads and decides
again, so the cache is only ever a shortcut, never a source of truth.

Every envelope is sealed with a hash chained to the previous event of its aggregate (see
``streams/envelope.py``), so a :class:`Loaded` carries, beside the sequence of the aggregate's
last event, that event's hash: read from the log on load, remembered after a save, or given by
a read model that folded it (:meth:`AggregateRepository.adopt`). The two travel together, so
the expectation on the sequence also guards the chain: a writer holding a stale hash holds a
stale sequence, and its append is refused instead of writing a wrong chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from core.api.catalog import AGGREGATES
from core.api.events import schema_version
from core.meta.aggregate import RecordedEvent, Resource, timestamp_from_ns
from streams.envelope import GENESIS, Envelope, StoredEvent
from streams.eventstore import EventStore, StoreError, Write
from streams.integrity import chain_head
from streams.keylocks import KeyedLocks
from streams.subjects import AggregateRef

EVENT_ID_NAMESPACE = uuid.UUID("6f1c2d1e-3c5a-4b8e-9a57-0c7e1f0a9d11")


RECENT_EVENTS = 256


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``, without building a ``UUID`` (whose checks and
    integer conversions were most of the cost: event ids are made several times a command)."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_id(token: str, index: int) -> str:
    """The id of the ``index``-th event written by the write ``token``: deterministic, so a
    retried write produces identical events and can recognise its own."""
    return uuid5_text(EVENT_ID_NAMESPACE, f"{token}:{index}")


@dataclass
class Loaded:
    """An aggregate (None if it never existed), the sequence of its last event (0 if none), and
    the ids of its most recent events (id → (seq, type)) so a duplicate command is recognised;
    ``last_hash`` is the hash of the event at ``last_seq`` (:data:`GENESIS` when there is none),
    which the next event written chains to."""

    ref: AggregateRef
    aggregate: Resource | None
    last_seq: int
    recent: dict[str, tuple[int, str]] = field(default_factory=dict)
    stored_version: int = -1
    """The aggregate's version as stored (-1: take it from the aggregate as given)."""
    last_hash: bytes = GENESIS

    def __post_init__(self) -> None:
        if self.stored_version < 0:
            self.stored_version = self.aggregate.version if self.aggregate is not None else 0

    def note(self, event_id_: str, seq: int, event_type: str) -> None:
        self.recent[event_id_] = (seq, event_type)
        while len(self.recent) > RECENT_EVENTS:
            del self.recent[next(iter(self.recent))]

    def written_by(self, token: str) -> list[tuple[str, int]]:
        """(type, seq) of the events this aggregate holds from write ``token`` (empty if none)."""
        if not self.recent:  # a new object (the common create): no id to compute
            return []
        found = []
        while (hit := self.recent.get(event_id(token, len(found)))) is not None:
            found.append((hit[1], hit[0]))
        return found


class Written(list[tuple[str, int]]):
    """(type, seq) of every event a save stored, in order. ``replayed``: an earlier attempt of
    the same write had stored them (see :class:`streams.eventstore.Appended`); the saved
    aggregates were then forgotten rather than remembered as decided."""

    replayed: bool

    def __init__(self, written: Iterable[tuple[str, int]], *, replayed: bool = False) -> None:
        super().__init__(written)
        self.replayed = replayed


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """Who decided, and the chain that led to it: stamped on every envelope written."""

    actor: str
    correlation_id: str
    causation_id: str
    token: str
    now_ns: int
    causes: Mapping[str, str] = field(default_factory=dict)
    """Per-aggregate causation (subject -> ``causation_id``) for a write that decides on
    several independent things at once (a scheduler's batch of bindings)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra headers of the write's first event (a signed command's nonce, which the
    gateway reads back when a replay finds the write: ``handlers.gateway.nonces``)."""


class AggregateRepository:
    """Aggregates by reference, cached, with per-aggregate locks for in-process ordering."""

    def __init__(
        self,
        store: EventStore,
        *,
        capacity: int = 10_000,
        known: Callable[[AggregateRef], int] | None = None,
    ) -> None:
        """``known`` says which sequence a read model paired with this repository has folded
        for an aggregate: loads are never older than that (as with :meth:`expect`)."""
        self._store = store
        self._capacity = capacity
        self._known = known
        self._cache: OrderedDict[str, Loaded] = OrderedDict()
        self._floors: OrderedDict[str, int] = OrderedDict()
        """Subject -> a sequence it is known to have reached (see :meth:`expect`)."""
        self.locks = KeyedLocks()
        """Per-aggregate locks (by subject): one decision at a time on a cached aggregate."""

    @contextlib.asynccontextmanager
    async def lock(self, ref: AggregateRef) -> AsyncIterator[None]:
        """Hold ``ref``'s lock (``streams.decide`` takes several at once, in order)."""
        await self.locks.acquire(ref.subject)
        try:
            yield
        finally:
            self.locks.release(ref.subject)

    async def load(
        self, ref: AggregateRef, *, fresh: bool = False, assume_new: bool = False
    ) -> Loaded:
        """The aggregate as of its last stored event (cached unless ``fresh``).

        ``assume_new`` skips the read on a cache miss and returns an empty aggregate: right for
        commands that usually create objects, because if the object does exist the append's
        expectation (must be new) fails and the caller loads it fresh and decides again.
        """
        floor = self._floors.get(ref.subject, 0)
        if self._known is not None:
            floor = max(floor, self._known(ref))
        if not fresh:
            cached = self._cache.get(ref.subject)
            if cached is not None and cached.last_seq >= floor:
                self._cache.move_to_end(ref.subject)
                return cached
            if assume_new and cached is None and not floor:
                return Loaded(ref, None, 0)
        # The last sequence on the subject, not of the last event: a quarantined message
        # stored last is what the append's expectation must name.
        stored, last_seq = await self._store.read_aggregate(ref.subject, at_least=floor)
        if last_seq >= floor:
            self._floors.pop(ref.subject, None)
        aggregate_class = AGGREGATES[ref.kind]
        aggregate = aggregate_class.from_history(
            ref.id,
            (
                RecordedEvent(
                    type=event.envelope.type,
                    version=event.envelope.version,
                    timestamp=timestamp_from_ns(event.envelope.timestamp_ns),
                    payload=event.envelope.payload,
                )
                for event in stored
            ),
        )
        loaded = Loaded(
            ref,
            aggregate,
            last_seq,
            last_hash=await self._last_hash(ref, stored),
        )
        for event in stored[-RECENT_EVENTS:]:
            loaded.note(event.envelope.event_id, event.seq, event.envelope.type)
        self._remember(loaded)
        return loaded

    async def adopt(
        self, ref: AggregateRef, build: Callable[[], Resource], last_seq: int, last_hash: bytes
    ) -> Loaded:
        """The aggregate as a read model holds it at ``last_seq``, whose event has hash
        ``last_hash`` (``build`` makes it from the read model, without a read of the log),
        unless the cache has it at least as fresh. A stale copy is harmless: the append's
        expectation fails, and the caller decides again on newer state.

        A read model that does not know the hash (``b""``: the event predates hashes, or the
        model was restored from a snapshot taken before them) gets the aggregate read from the
        log instead, once; its next write chains right and carries the hash from then on."""
        cached = self._cache.get(ref.subject)
        if cached is not None and cached.last_seq >= last_seq:
            self._cache.move_to_end(ref.subject)
            return cached
        if not last_hash and last_seq:
            return await self.load(ref, fresh=True)
        loaded = Loaded(ref, build(), last_seq, last_hash=last_hash)
        self._remember(loaded)
        return loaded

    async def _last_hash(self, ref: AggregateRef, stored: Sequence[StoredEvent]) -> bytes:
        """The hash of the last of ``stored`` (all of an aggregate's events, in order). Events
        written before hashes carry none: theirs is implied from their stored bytes, which only
        a raw read gives, so such a tail costs one more read (once per aggregate: the next
        write is sealed)."""
        if not stored:
            return GENESIS
        if stored[-1].envelope.chain_hash:
            return stored[-1].envelope.chain_hash
        start = len(stored) - 1
        while start > 0 and not stored[start - 1].envelope.chain_hash:
            start -= 1
        previous = stored[start - 1].envelope.chain_hash if start > 0 else GENESIS
        return await chain_head(
            self._store, ref.subject, previous, stored[start].seq, stored[-1].seq
        )

    def expect(self, ref: AggregateRef, seq: int) -> None:
        """``ref``'s subject is known to hold sequence ``seq`` (a projection delivered it): the
        next load returns the aggregate at least that new, read from the stream's leader if the
        replica answering the read lags (see :meth:`EventStore.read_aggregate`). A handler
        that reacts to an event says so before loading what the event is about; otherwise a
        lagging replica's older answer ("not bound yet", "no such pod") would read as a
        reason to do nothing."""
        if seq > self._floors.get(ref.subject, 0):
            self._floors[ref.subject] = seq
            self._floors.move_to_end(ref.subject)
            while len(self._floors) > self._capacity:
                self._floors.popitem(last=False)

    async def behind_leader(self, loaded: Iterable[Loaded]) -> bool:
        """Whether the stream's leader holds events newer than ``loaded`` on any of their
        subjects; each such subject is then :meth:`expect`-ed at the leader's sequence."""
        behind = False
        for item in loaded:
            newest = await self._store.leader_last_seq(item.ref.subject)
            if newest > item.last_seq:
                self.expect(item.ref, newest)
                behind = True
        return behind

    def forget(self, ref: AggregateRef) -> None:
        self._cache.pop(ref.subject, None)

    def _remember(self, loaded: Loaded) -> None:
        self._cache[loaded.ref.subject] = loaded
        self._cache.move_to_end(loaded.ref.subject)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    async def save(
        self,
        changes: Sequence[Loaded],
        provenance: Provenance,
    ) -> Written:
        """Append every pending event of ``changes`` atomically; return (type, seq) pairs.

        On any failure the affected aggregates are evicted, since their in-memory state holds
        events that were not stored; so they are when the events turn out to have been stored
        by an earlier attempt of the same write (``replayed``).
        """
        writes: list[Write] = []
        types: list[str] = []
        ids: list[str] = []
        index = 0
        collected = []
        for change in changes:
            aggregate = change.aggregate
            events = aggregate.collect_events() if aggregate is not None else []
            if not events:
                continue
            if events[0].originator_version != change.stored_version + 1:
                # Two decisions were taken on one cached object at once (a missing lock):
                # appending would leave a gap in its versions. Refuse, loudly.
                for other in changes:
                    self.forget(other.ref)
                raise StoreError(
                    f"{change.ref}: events from version {events[0].originator_version} on a "
                    f"stored version {change.stored_version}; decisions on it overlapped"
                )
            encoded = []
            chained = change.last_hash
            for event in events:
                event_type = type(aggregate).event_type(event)
                ids.append(event_id(provenance.token, index))
                data, chained = Envelope(
                    event_id=ids[-1],
                    type=event_type,
                    schema_version=schema_version(event_type),
                    kind=change.ref.kind,
                    namespace=change.ref.namespace,
                    name=change.ref.name,
                    version=event.originator_version,
                    timestamp_ns=provenance.now_ns,
                    actor=provenance.actor,
                    correlation_id=provenance.correlation_id,
                    causation_id=provenance.causes.get(change.ref.subject, provenance.causation_id),
                    payload=type(aggregate).event_payload(event),
                ).seal(chained)
                encoded.append(data)
                types.append(event_type)
                index += 1
            writes.append(Write(change.ref.subject, encoded, change.last_seq))
            collected.append((change, len(encoded), chained))
        if not writes:
            return Written([])
        try:
            if provenance.headers:
                seqs = await self._store.append(
                    writes, token=provenance.token, headers=provenance.headers
                )
            else:
                seqs = await self._store.append(writes, token=provenance.token)
        except BaseException:
            for change in changes:
                self.forget(change.ref)
            raise
        if seqs.replayed:
            # An earlier attempt of this write stored its events (a retry after a lost ack).
            # What this attempt decided may differ from them (another timestamp, so another
            # chain hash): forget it, and the next load reads what the log holds.
            for change in changes:
                self.forget(change.ref)
            return Written(zip(types, seqs, strict=True), replayed=True)
        position = 0
        for change, count, chained in collected:
            for offset in range(position, position + count):
                change.note(ids[offset], seqs[offset], types[offset])
            position += count
            change.last_seq = seqs[position - 1]
            change.last_hash = chained
            assert change.aggregate is not None
            change.stored_version = change.aggregate.version
            self._remember(change)
        return Written(zip(types, seqs, strict=True))

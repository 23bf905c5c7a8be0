"""The event store: append with optimistic concurrency, atomic multi-aggregate batches, safe
retries, reads of one aggregate, and callback-based reads of the whole log.

How a write is made safe:

* Every subject written carries ``Nats-Expected-Last-Subject-Sequence`` (0 = must be new), so
  two writers deciding on the same state cannot both win.
* A write touching several subjects (or several events) is one atomic batch
  (``Nats-Batch-Id``/``-Sequence``/``-Commit``): all of it lands or none of it does. The
  expectation sits on the first message of each subject (the server refuses it on later ones).
* Every message carries ``Nats-Msg-Id: <token>:<index>`` where the token is unique to the logical
  write (the gateway uses the command's idempotency key). The server checks the expectation
  *before* de-duplicating, so a resend after a lost ack is refused as a conflict; the store then
  reads the message that directly follows the expectation on that subject. If its Msg-Id is ours,
  the first attempt landed and its sequences are returned; otherwise someone else won and the
  caller gets :class:`ConcurrencyConflict`. A token unique per write means a loser can never
  mistake the winner's event for its own.

Acks are matched to writes through one wildcard inbox subscription, so any number of appends can
be in flight at once (this is where the throughput comes from); an atomic batch goes out as one
buffer (:func:`streams.natsfix.publish_many`). Following the log uses an ordered push consumer
with a message callback (``fetch``/``next_msg`` loops cost a task per message and run four times
slower), or, for a reader of a busy log (:meth:`EventStore.follow`), the live form of
:mod:`streams.logreader`; bounded walks of the log (replay, verify, audit reads) go
through :mod:`streams.logreader`, a bulk protocol reader about twice as fast again (or, for a
connection that reader cannot serve, through nats-py's ordered consumer, with a warning).

Every read decodes through :func:`streams.quarantine.read_event`: a stored message no reader
can use is skipped and kept in the store's :attr:`EventStore.quarantine` (logged once), so one
poison message never stops a reader.

Every JetStream API subject (direct gets, stream info) comes from :mod:`streams.jsapi`, built
once per store, so the store addresses its connection's JetStream domain.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgpack
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError, OutboundBufferLimitError
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.nuid import NUID

from core.meta.timestamps import parse_stamp
from streams import jsapi, logreader, natsfix
from streams.connection import in_outage
from streams.definitions import FLEET_STREAM
from streams.envelope import StoredEvent
from streams.logreader import (
    BulkRead,
    Dial,
    ReaderUnavailable,
    StoredHandler,
    parse_ack_subject,
)
from streams.quarantine import PoisonEvent, Quarantine, read_event, unsealed
from streams.seal import SEAL_HEADER, SealKey, seal_from_header_block
from streams.seal import configured as configured_seal
from streams.subjects import ALL_EVENTS

log = structlog.get_logger(__name__)

MAX_BATCH = 1000
LIVE_SHARED = 1024
"""How many of the latest events the store's live followers share (see
:meth:`EventStore.live_stored`): enough for followers a burst apart, few enough that an
idle process holds no more than a small part of the log beside its read models."""
WRONG_LAST_SEQUENCE = 10071
# An atomic batch is checked for duplicate Msg-Ids before its expectations.
BATCH_DUPLICATE_MSG_ID = 10201
EventHandler = Callable[[StoredEvent], None]
PoisonHandler = Callable[[int], None]
"""Told the sequence of each poison message a read skipped (a reader keeping a position)."""
RawHandler = Callable[[Msg], Awaitable[None]]


class StoreError(RuntimeError):
    """The server refused a write for a reason other than a concurrency conflict."""


class ConcurrencyConflict(StoreError):
    """Someone else appended to ``subject`` after the state this write was decided on."""

    def __init__(self, subject: str, expected: int | None, detail: str) -> None:
        super().__init__(f"{subject}: expected last sequence {expected}, {detail}")
        self.subject = subject
        self.expected = expected


class AppendTimeout(StoreError):
    """No ack arrived; the write may or may not have landed (retrying with the token is safe)."""


@dataclass(frozen=True, slots=True)
class Write:
    """Events for one subject, and the last sequence the decision saw there."""

    subject: str
    events: Sequence[bytes]
    expected_last_seq: int | None


class Appended(list[int]):
    """The stream sequence of every event of an append, in order.

    ``replayed`` says the events were stored by an earlier attempt of the same write (the same
    token): a retry after a lost ack. When the retry was decided again (another gateway, or
    after its aggregate left a cache) its own bytes may differ from the stored ones (a later
    timestamp, hence another chain hash), so a writer must not carry on from what it decided.
    """

    replayed: bool

    def __init__(self, seqs: Iterable[int], *, replayed: bool = False) -> None:
        super().__init__(seqs)
        self.replayed = replayed


SHORT_READ_STALLS = 20
SHORT_READ_RETRY_S = 0.1
SHORT_READ_RETRY_MAX_S = 1.0
"""A bounded read that ended before the leader's end is taken up again, after a pause growing
by this much a time up to the maximum, for as long as each pass gets further; it fails after
this many passes in a row that got nowhere (~15 s): a replica catching up gets further, and
its consumer may be placed on it again and again (R1 consumers go where the client is)."""

NO_RESPONDERS = "503"
NO_RESPONDERS_RETRY_S = 0.5
"""After a write no stream took, the wait before it is sent again (times the attempt)."""


class EventStore:
    """Appends to and reads from the ``FLEET`` stream through one NATS connection."""

    def __init__(
        self, nc: Client, *, stream: str = FLEET_STREAM, seal: SealKey | bool | None = True
    ) -> None:
        """``seal``: the writers' key (:mod:`streams.seal`) this store seals its appends with
        and checks every read against; True (the default) takes the process's configured key
        for ``FLEET``, False or None seals and checks nothing."""
        self._nc = nc
        self.seal_key: SealKey | None = (
            (configured_seal() if stream == FLEET_STREAM else None) if seal is True
            else (seal or None)
        )  # fmt: skip
        api = jsapi.of(nc)
        self._js = api.jetstream()
        self.stream = stream
        self.subjects = api.stream(stream)
        """This stream's API subjects in the connection's JetStream domain."""
        self._direct_get = self.subjects.direct_get
        # Under the connection's own inbox prefix: a user's connection may subscribe there
        # and nowhere else (streams.natsauth).
        self._inbox = nc.new_inbox()
        self._pending: dict[
            str, tuple[asyncio.Future[dict[str, Any]], asyncio.TimerHandle | None]
        ] = {}
        self._batches: dict[str, tuple[list[Msg], asyncio.Future[Msg]]] = {}
        self._counter = itertools.count()
        self._ack_sub: Subscription | None = None
        self.bulk_reads = True
        """Whether whole-log walks use :mod:`streams.logreader` (off: nats-py's consumer)."""
        self.quarantine = Quarantine(stream)
        """The stored messages this store's reads skipped (see :mod:`streams.quarantine`)."""
        self._live: dict[int, tuple[StoredEvent, bytes | None]] = {}
        """The latest events followers decoded (sequence -> the event and the seal it was
        checked with), oldest first: see :meth:`live_stored`."""
        self.live_reused = 0
        """How many times a follower was handed an event another follower had decoded."""

    def stored(
        self,
        seq: int,
        subject: str,
        stored_ns: int,
        data: bytes,
        seal: str | bytes | None = None,
    ) -> StoredEvent | None:
        """The event stored as ``data`` (with ``seal``, its ``Fleet-Seal`` header), or None
        when it is poison or, with a seal key, not sealed by a writer (then quarantined)."""
        if self.seal_key is not None and not self.seal_key.holds(seq, subject, data, seal):
            self.quarantine.poisoned(seq, subject, unsealed())
            return None
        return self.decoded(seq, subject, stored_ns, data)

    def live_stored(
        self,
        seq: int,
        subject: str,
        stored_ns: int,
        data: bytes,
        seal: str | bytes | None = None,
    ) -> StoredEvent | None:
        """:meth:`stored` for a reader following the log live. In one process several
        readers follow the same log through one store (``up``'s cluster projection, the
        scheduler's, the gateway's filtered ones): the message each is handed next is checked
        and decoded once, and every one of them gets that same :class:`StoredEvent` (events
        are values nobody changes, as the listeners of one projection already share them).
        Only a message identical in every stored part (subject, time, bytes, seal) is served
        again; a replay (:meth:`replay`) checks and decodes on its own, and keeps nothing."""
        sealed = seal.encode() if isinstance(seal, str) else seal
        known = self._live.get(seq)
        if known is not None:
            event, known_seal = known
            if (
                known_seal == sealed
                and event.data == data
                and event.subject == subject
                and event.stored_ns == stored_ns
            ):
                self.live_reused += 1
                return event
        event = self.stored(seq, subject, stored_ns, data, seal)
        if event is not None:
            self._live[seq] = (event, sealed)
            if len(self._live) > LIVE_SHARED:
                del self._live[next(iter(self._live))]
        return event

    def decoded(self, seq: int, subject: str, stored_ns: int, data: bytes) -> StoredEvent | None:
        """:meth:`stored` for bytes whose seal was checked when they were read from the stream
        (a local index of them keeps no headers)."""
        try:
            envelope = read_event(data)
        except PoisonEvent as exc:
            self.quarantine.poisoned(seq, subject, exc)
            return None
        return StoredEvent(seq, subject, stored_ns, envelope, data)

    @property
    def connection(self) -> Client:
        """The NATS connection this store reads and writes through."""
        return self._nc

    async def start(self) -> None:
        self._ack_sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)

    async def close(self) -> None:
        if self._ack_sub is not None:
            with contextlib.suppress(Exception):
                await self._ack_sub.unsubscribe()
            self._ack_sub = None
        for future, timer in self._pending.values():
            if timer is not None:
                timer.cancel()
            future.cancel()
        self._pending.clear()

    async def __aenter__(self) -> EventStore:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _on_ack(self, msg: Msg) -> None:
        batch = self._batches.get(msg.subject)
        if batch is not None:
            messages, done = batch
            if msg.headers and msg.headers.get("Status"):
                if not done.done():
                    done.set_result(msg)
            else:
                messages.append(msg)
            return
        pending = self._pending.pop(msg.subject, None)
        if pending is None:
            return
        future, timer = pending
        if timer is not None:
            timer.cancel()
        if future.done():
            return
        if not msg.data and msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            # No stream took the write (a cluster electing the stream's leader, a server
            # still recovering it): nothing was stored, so it is sent again.
            future.set_exception(NoRespondersError())
        else:
            future.set_result(parse_ack(msg.data))

    # -- writing ------------------------------------------------------------------------

    async def append(
        self,
        writes: Sequence[Write],
        *,
        token: str,
        timeout: float = 5.0,
        attempts: int = 3,
        headers: Mapping[str, str] | None = None,
    ) -> Appended:
        """Append atomically; return the stream sequence of every event, in order (marked
        ``replayed`` when an earlier attempt with this token had stored them). ``headers``:
        extra headers of the first event (the gateway's nonce of a signed command), read back
        with :meth:`headers_at`.

        Raises ConcurrencyConflict if an expectation fails because of another writer, and
        AppendTimeout if no attempt was acknowledged. Retrying with the same ``token`` is safe.
        """
        messages = _messages(writes, token, self.seal_key, headers)
        if not messages:
            return Appended([])
        if len(messages) > MAX_BATCH:
            raise StoreError(f"a write may hold at most {MAX_BATCH} events, not {len(messages)}")
        return await self._complete(writes, token, messages, None, timeout, attempts)

    async def append_many(
        self, items: Sequence[tuple[Sequence[Write], str]], *, timeout: float = 5.0
    ) -> list[Appended | StoreError]:
        """Many independent appends, pipelined: every write is sent before any ack is awaited.

        For bulk work (imports, simulated nodes): each item is ``(writes, token)`` with the same
        guarantees as :meth:`append`; the result for each is its sequences or the StoreError
        (a ConcurrencyConflict, say) that :meth:`append` would have raised.
        """
        prepared = []
        try:
            for writes, token in items:
                messages = _messages(writes, token, self.seal_key)
                if len(messages) > MAX_BATCH:
                    raise StoreError(f"a write may hold at most {MAX_BATCH} events")
                # One deadline for the whole window instead of a timer per write.
                prepared.append((writes, token, messages, await self._submit(messages, None)))
        except BaseException:
            self._expire_all({entry[3] for entry in prepared})
            raise
        futures = {entry[3] for entry in prepared}
        deadline = asyncio.get_running_loop().call_later(timeout, self._expire_all, futures)
        results: list[Appended | StoreError] = []
        for writes, token, messages, pending in prepared:
            try:
                results.append(await self._complete(writes, token, messages, pending, timeout, 3))
            except StoreError as exc:
                results.append(exc)
        deadline.cancel()
        return results

    def _expire_all(self, futures: set[asyncio.Future[dict[str, Any]]]) -> None:
        for reply, (future, _) in list(self._pending.items()):
            if future in futures:
                self._expire(reply)

    async def _complete(
        self,
        writes: Sequence[Write],
        token: str,
        messages: list[tuple[str, bytes, dict[str, str]]],
        first_attempt: asyncio.Future[dict[str, Any]] | None,
        timeout: float,
        attempts: int,
    ) -> Appended:
        for attempt in range(1, attempts + 1):
            try:
                if attempt == 1 and first_attempt is not None:
                    ack = await first_attempt
                else:
                    ack = await self._send(messages, timeout)
            except (TimeoutError, OutboundBufferLimitError, NoRespondersError) as exc:
                # No ack, no stream to take it, or (the server away for long) no room left to
                # hold the write until the link is back: the same token is sent again, stored
                # at most once.
                (log.debug if in_outage(self._nc) else log.warning)(
                    "append.ack_timeout", token=token, attempt=attempt, error=repr(exc)
                )
                if isinstance(exc, NoRespondersError) and attempt < attempts:
                    await asyncio.sleep(min(timeout, NO_RESPONDERS_RETRY_S * attempt))
                continue
            error = ack.get("error")
            if error is None:
                last = int(ack["seq"])
                duplicate = bool(ack.get("duplicate"))
                if duplicate:
                    await self._check_duplicate_is_ours(last, messages[-1])
                return Appended(range(last - len(messages) + 1, last + 1), replayed=duplicate)
            if error.get("err_code") in (WRONG_LAST_SEQUENCE, BATCH_DUPLICATE_MSG_ID):
                mine = await self._find_own_write(writes, token)
                if mine is not None:
                    return Appended(range(mine, mine + len(messages)), replayed=True)
                subject, expected = _first_expectation(writes)
                raise ConcurrencyConflict(subject, expected, error.get("description", ""))
            raise StoreError(
                f"append refused: {error.get('description', error)} [{error.get('err_code')}]"
            )
        raise AppendTimeout(f"no ack for write {token} after {attempts} attempts")

    async def _send(
        self, messages: list[tuple[str, bytes, dict[str, str]]], timeout: float
    ) -> dict[str, Any]:
        return await (await self._submit(messages, timeout))

    async def _submit(
        self, messages: list[tuple[str, bytes, dict[str, str]]], timeout: float | None
    ) -> asyncio.Future[dict[str, Any]]:
        """Publish a write; the returned future resolves with its ack (or TimeoutError).

        With ``timeout=None`` the caller owns the deadline (and must call ``_expire``)."""
        reply = f"{self._inbox}.{next(self._counter)}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        # A timer handle is much cheaper than asyncio.wait_for (which wraps the wait in a task).
        timer = loop.call_later(timeout, self._expire, reply) if timeout is not None else None
        self._pending[reply] = (future, timer)
        try:
            if len(messages) == 1:
                subject, data, headers = messages[0]
                await self._nc.publish(subject, data, reply=reply, headers=headers)
            else:
                # One buffer for the whole batch (natsfix.publish_many): queuing hundreds of
                # messages one publish at a time cost more than deciding them.
                batch_id = NUID().next().decode()
                last = len(messages)
                outgoing: list[natsfix.Outgoing] = []
                for index, (subject, data, headers) in enumerate(messages, 1):
                    batch_headers = {
                        **headers,
                        "Nats-Batch-Id": batch_id,
                        "Nats-Batch-Sequence": str(index),
                    }
                    if index == last:
                        batch_headers["Nats-Batch-Commit"] = "1"
                    outgoing.append((subject, data, reply if index == last else "", batch_headers))
                await natsfix.publish_many(self._nc, outgoing)
        except BaseException:
            self._expire(reply)
            raise
        return future

    def _expire(self, reply: str) -> None:
        pending = self._pending.pop(reply, None)
        if pending is not None:
            future, timer = pending
            if timer is not None:
                timer.cancel()
            if not future.done():
                future.set_exception(TimeoutError())

    async def _find_own_write(self, writes: Sequence[Write], token: str) -> int | None:
        """The sequence of this write's first event if an earlier attempt landed, else None."""
        offset = 0
        for write in writes:
            if write.expected_last_seq is not None:
                found = await self._direct_get_next(write.subject, write.expected_last_seq + 1)
                if found is None:
                    return None
                seq, headers = found
                if headers.get("Nats-Msg-Id") == f"{token}:{offset}":
                    return seq - offset
                return None
            offset += len(write.events)
        return None

    async def _check_duplicate_is_ours(
        self, seq: int, message: tuple[str, bytes, dict[str, str]]
    ) -> None:
        """JetStream answered "duplicate": the Msg-Id was seen in its window. That is only our
        own earlier attempt if the stored message is the event we sent; a token reused for
        another write would otherwise be reported as stored when it was dropped.

        "The event we sent" is its subject, id and type, not its bytes: a retry whose first
        attempt landed unseen (its ack lost while a server was killed, and the retry's read
        answered by a replica without it) is decided again, with a later time and so other
        bytes, yet is the same write (its id is derived from the token), as
        :class:`Appended` ``replayed`` says."""
        # Asked of the stream's leader (which just answered "duplicate"), not with a direct
        # get: any replica answers those, and one still catching up (a server of the cluster
        # just restarted) has no message at that sequence yet, which read as "another write".
        request = json.dumps({"seq": seq}).encode()
        answer = json.loads(
            (await self._nc.request(self.subjects.msg_get, request, timeout=5)).data
        )
        stored = answer.get("message") or {}
        subject, data, _ = message
        if answer.get("error") is not None:
            raise StoreError(f"cannot read back sequence {seq}: {answer['error']}")
        stored_data = base64.b64decode(stored.get("data", ""))
        if stored.get("subject") != subject or (
            stored_data != data and _identity(stored_data) != _identity(data)
        ):
            raise StoreError(
                f"write token reused: Msg-Id {message[2].get('Nats-Msg-Id')} already names "
                f"another write (sequence {seq}); each logical write needs its own token"
            )

    async def _direct_get_next(
        self, subject: str, from_seq: int
    ) -> tuple[int, dict[str, str]] | None:
        request = json.dumps({"seq": from_seq, "next_by_subj": subject}).encode()
        msg = await self._nc.request(self._direct_get, request, timeout=5)
        headers = msg.headers or {}
        if headers.get("Status"):
            return None
        return int(headers["Nats-Sequence"]), headers

    # -- reading one aggregate ------------------------------------------------------------

    async def read_subject(self, subject: str, *, after_seq: int = 0) -> list[StoredEvent]:
        """Every event on one subject after ``after_seq``, in order (batched direct gets);
        poison messages are skipped (quarantined)."""
        return (await self.read_aggregate(subject, after_seq=after_seq))[0]

    async def read_aggregate(
        self, subject: str, *, after_seq: int = 0, at_least: int = 0
    ) -> tuple[list[StoredEvent], int]:
        """(:meth:`read_subject`, the sequence of the last message stored on the subject).

        A writer's expectation is the subject's last sequence, which is a quarantined
        message's when one was stored last: the events alone would make every append fail.

        Direct gets are answered by any replica of a clustered stream, and a follower may not
        hold the newest messages yet. A reader that knows the subject reached ``at_least``
        (it saw that event delivered) and got less reads the rest from the stream's leader,
        so it never decides on an aggregate older than what it reacts to."""
        out: list[StoredEvent] = []
        last = after_seq
        next_seq = after_seq + 1
        while True:
            batch, batch_last, more = await self._direct_get_batch(subject, next_seq, 1000)
            out += batch
            last = max(last, batch_last)
            if not more or not batch_last:
                break
            next_seq = batch_last + 1
        if last < at_least:
            tail, last = await self._read_from_leader(subject, last)
            out += tail
        return out, (last if last > after_seq else 0)

    async def leader_last_seq(self, subject: str) -> int:
        """The sequence of the last message on ``subject`` as the stream's leader knows it (0
        if none): what a follower's direct get may not have yet."""
        answer = await self._msg_get({"last_by_subj": subject})
        message = answer.get("message")
        return int(message["seq"]) if message else 0

    async def _read_from_leader(
        self, subject: str, after_seq: int
    ) -> tuple[list[StoredEvent], int]:
        """The messages on ``subject`` after ``after_seq``, one get each from the leader (only
        ever the few a lagging follower did not have); (their events, the last sequence)."""
        out: list[StoredEvent] = []
        last = after_seq
        while True:
            answer = await self._msg_get({"seq": last + 1, "next_by_subj": subject})
            message = answer.get("message")
            if not message:
                return out, last
            last = int(message["seq"])
            event = self.stored(
                last,
                message.get("subject", subject),
                parse_stamp(message.get("time")) or 0,
                base64.b64decode(message.get("data", "")),
                seal_from_header_block(base64.b64decode(message.get("hdrs") or "")),
            )
            if event is not None:
                out.append(event)

    async def _msg_get(self, query: dict[str, Any]) -> dict[str, Any]:
        """One ``STREAM.MSG.GET`` (answered by the leader): its answer, ``{}`` when no message
        matches; a :class:`StoreError` when the stream did not answer."""
        reply = await self._nc.request(self.subjects.msg_get, json.dumps(query).encode(), timeout=5)
        answer: dict[str, Any] = json.loads(reply.data)
        error = answer.get("error")
        if error is None:
            return answer
        if error.get("code") == 404:
            return {}
        raise StoreError(f"stream {self.stream} did not answer a read: {error}")

    async def get_event(self, seq: int) -> StoredEvent | None:
        """The event at stream sequence ``seq`` (one direct get), or None if there is none."""
        request = json.dumps({"seq": seq}).encode()
        msg = await self._nc.request(self._direct_get, request, timeout=5)
        headers = msg.headers or {}
        if headers.get("Status"):
            _direct_get_answered(headers, self.stream)
            return None
        return self.stored(
            int(headers["Nats-Sequence"]),
            headers.get("Nats-Subject", ""),
            parse_stamp(headers.get("Nats-Time-Stamp")) or 0,
            msg.data,
            headers.get(SEAL_HEADER),
        )

    async def headers_at(self, seq: int) -> dict[str, str] | None:
        """The headers the event at stream sequence ``seq`` was stored with (one direct get;
        None if there is no such event)."""
        request = json.dumps({"seq": seq}).encode()
        msg = await self._nc.request(self._direct_get, request, timeout=5)
        headers = dict(msg.headers or {})
        if headers.get("Status"):
            _direct_get_answered(headers, self.stream)
            return None
        return headers

    async def last_seq(self, subject: str) -> int:
        """The stream sequence of the last event on ``subject`` (0 if there is none)."""
        request = json.dumps({"last_by_subj": subject}).encode()
        msg = await self._nc.request(self._direct_get, request, timeout=5)
        headers = msg.headers or {}
        if headers.get("Status"):
            _direct_get_answered(headers, self.stream)
            return 0
        return int(headers["Nats-Sequence"])

    async def _direct_get_batch(
        self, subject: str, from_seq: int, size: int
    ) -> tuple[list[StoredEvent], int, bool]:
        """(the events of up to ``size`` messages on ``subject`` from ``from_seq``, the
        sequence of the last message read (0 if none), whether more are stored)."""
        reply = f"{self._inbox}.{next(self._counter)}"
        loop = asyncio.get_running_loop()
        messages: list[Msg] = []
        done: asyncio.Future[Msg] = loop.create_future()
        self._batches[reply] = (messages, done)
        timer = loop.call_later(5.0, _time_out, done)
        try:
            request = json.dumps({"seq": from_seq, "next_by_subj": subject, "batch": size})
            await self._nc.publish(self._direct_get, request.encode(), reply=reply)
            end = await done
        finally:
            timer.cancel()
            self._batches.pop(reply, None)
        out: list[StoredEvent] = []
        last = 0
        for msg in messages:
            headers = msg.headers or {}
            last = int(headers["Nats-Sequence"])
            event = self.stored(
                last,
                headers.get("Nats-Subject", subject),
                parse_stamp(headers.get("Nats-Time-Stamp")) or 0,
                msg.data,
                headers.get(SEAL_HEADER),
            )
            if event is not None:
                out.append(event)
        end_headers = end.headers or {}
        _direct_get_answered(end_headers, self.stream)
        more = (
            end_headers.get("Status") == "204" and int(end_headers.get("Nats-Num-Pending", "0")) > 0
        )
        return out, last, more

    # -- reading the log --------------------------------------------------------------------

    async def stream_info(self) -> dict[str, Any]:
        """The stream's info as JetStream reports it (config, ``created``, ``state``)."""
        reply = await self._nc.request(self.subjects.info, b"", timeout=5)
        info: dict[str, Any] = json.loads(reply.data)
        if "error" in info:
            raise StoreError(f"cannot read stream {self.stream}: {info['error']}")
        return info

    async def stream_last_seq(self) -> int:
        return int((await self.stream_info())["state"]["last_seq"])

    async def subscribe_raw(
        self,
        handler: RawHandler,
        *,
        filter_subject: str = ALL_EVENTS,
        from_seq: int | None = None,
        from_time: datetime | None = None,
        new_only: bool = False,
    ) -> Any:
        """An ordered consumer delivering raw messages to ``handler`` (the hot path)."""
        if new_only:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        elif from_time is not None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=from_time
            )
        elif from_seq is not None and from_seq > 1:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_seq
            )
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        return await self._js.subscribe(
            filter_subject,
            stream=self.stream,
            cb=handler,
            ordered_consumer=True,
            config=config,
            pending_msgs_limit=512 * 1024,
            pending_bytes_limit=512 * 1024 * 1024,
        )

    async def subscribe(
        self,
        handler: EventHandler,
        *,
        filter_subject: str = ALL_EVENTS,
        from_seq: int | None = None,
        from_time: datetime | None = None,
        new_only: bool = False,
        on_poison: PoisonHandler | None = None,
    ) -> Any:
        """Deliver every event from the given position on, live, to ``handler`` (poison
        messages are quarantined, and their sequences given to ``on_poison``)."""

        from_ns = int(from_time.timestamp() * 1e9) if from_time is not None else 0

        async def on_message(msg: Msg) -> None:
            seq, stored_ns, _ = parse_ack_subject(msg.reply)
            if stored_ns < from_ns:
                return  # see replay(): a by-time start may hand back an older last message
            event = self.live_stored(
                seq, msg.subject, stored_ns, msg.data, (msg.headers or {}).get(SEAL_HEADER)
            )
            if event is not None:
                handler(event)
            elif on_poison is not None:
                on_poison(seq)

        return await self.subscribe_raw(
            on_message,
            filter_subject=filter_subject,
            from_seq=from_seq,
            from_time=from_time,
            new_only=new_only,
        )

    def follow(
        self,
        handler: EventHandler,
        *,
        filter_subject: str = ALL_EVENTS,
        from_seq: int = 1,
        on_poison: PoisonHandler | None = None,
    ) -> Following | None:
        """Deliver every event from ``from_seq`` on, live, through :class:`logreader.LiveRead`
        (a few slices a message instead of nats-py's parser, message objects and callback
        tasks); it rides through outages by itself. None when that reader cannot serve this
        connection (then :meth:`subscribe`)."""
        if self._bulk_read_dial() is None:
            return None

        def on_stored(
            seq: int, subject: str, stored_ns: int, data: bytes, seal: bytes | None
        ) -> None:
            event = self.live_stored(seq, subject, stored_ns, data, seal)
            if event is not None:
                handler(event)
            elif on_poison is not None:
                on_poison(seq)

        def dial() -> Dial | None:
            return logreader.dial_for(self._nc)

        read = logreader.LiveRead(
            dial, self.subjects, on_stored, filter_subject=filter_subject, from_seq=from_seq
        )
        return Following(read, asyncio.get_running_loop().create_task(read.run()))

    async def replay(
        self,
        handler: EventHandler,
        *,
        filter_subject: str = ALL_EVENTS,
        from_seq: int = 1,
        from_time: datetime | None = None,
        until_seq: int | None = None,
        until_ns: int | None = None,
        on_poison: PoisonHandler | None = None,
    ) -> int:
        """Feed ``handler`` every event from the position up to the log's end *as of now*
        (or up to ``until_seq`` / ``until_ns``, whichever comes first); return the last
        sequence delivered (0 if none). Poison messages are skipped (quarantined)."""
        last = 0

        def on_stored(
            seq: int, subject: str, stored_ns: int, data: bytes, seal: bytes | None
        ) -> None:
            nonlocal last
            event = self.stored(seq, subject, stored_ns, data, seal)
            if event is not None:
                handler(event)
                last = seq
            elif on_poison is not None:
                on_poison(seq)

        await self.replay_raw(
            on_stored,
            filter_subject=filter_subject,
            from_seq=from_seq,
            from_time=from_time,
            until_seq=until_seq,
            until_ns=until_ns,
        )
        return last

    async def replay_raw(
        self,
        handler: StoredHandler,
        *,
        filter_subject: str = ALL_EVENTS,
        from_seq: int = 1,
        from_time: datetime | None = None,
        until_seq: int | None = None,
        until_ns: int | None = None,
    ) -> None:
        """:meth:`replay` without decoding: ``handler(seq, subject, stored_ns, data)`` for every
        stored message in the bounds (what a walk that checks the stored bytes needs), with the
        message's ``Fleet-Seal`` (or None) as a fifth argument.

        The target (the log's end now) comes from the stream's leader, but the read's consumer
        may sit on a replica of a clustered stream that is still catching up (a nats-server just
        restarted): it then reports nothing pending before the target and the read ends short.
        So a read that ended is checked with the leader (one get: is there a message in the
        bounds after the last one handed over?) and, if it is short, goes on from there (on a
        new consumer) until it reaches what the leader has; :class:`LogReadError` if it never
        does. A reader that moves its position to the target would otherwise skip the rest
        for good."""
        target = await self.stream_last_seq()
        if until_seq is not None:
            target = min(target, until_seq)
        if target < from_seq:
            return
        from_ns = int(from_time.timestamp() * 1e9) if from_time is not None else 0
        last, stalls, attempt = 0, 0, 0
        while True:
            attempt += 1
            reached = await self._read_bounded(
                handler, filter_subject, from_seq, from_time, from_ns, target, until_ns
            )
            stalls = 0 if reached > last else stalls + 1
            last = max(last, reached)
            if from_ns and not last:
                return  # nothing at or after the start time: no position to check from
            after = max(last, from_seq - 1)
            try:
                missed = await self._missed_after(after, filter_subject, target, until_ns)
            except (TimeoutError, NoRespondersError, StoreError) as exc:
                missed, why = after + 1, repr(exc)  # the leader is being elected: ask again
            else:
                if missed is None:
                    return
                why = "the read ended before it"
            if stalls >= SHORT_READ_STALLS:
                raise logreader.LogReadError(
                    f"reading {self.stream} up to {target}: stuck after {last} ({why})"
                )
            log.info("eventstore.short_read", stream=self.stream, reached=last, missed=missed,
                     target=target, attempt=attempt, why=why)  # fmt: skip
            from_seq, from_time, from_ns = missed, None, 0
            await asyncio.sleep(min(SHORT_READ_RETRY_MAX_S, SHORT_READ_RETRY_S * attempt))

    async def _missed_after(
        self, after: int, filter_subject: str, target: int, until_ns: int | None
    ) -> int | None:
        """The first message in the bounds after ``after`` that the stream's leader holds, if
        any: a read that ended before it was served by a replica that lags."""
        message = (await self._msg_get({"seq": after + 1, "next_by_subj": filter_subject})).get(
            "message"
        )
        if not message or int(message["seq"]) > target:
            return None
        if until_ns is not None and (parse_stamp(message.get("time")) or 0) > until_ns:
            return None
        return int(message["seq"])

    async def _read_bounded(
        self,
        handler: StoredHandler,
        filter_subject: str,
        from_seq: int,
        from_time: datetime | None,
        from_ns: int,
        target: int,
        until_ns: int | None,
    ) -> int:
        """One pass of :meth:`replay_raw`, by the bulk reader or nats-py's ordered consumer:
        the last sequence it read (0 if none)."""
        dial = self._bulk_read_dial()
        if dial is not None:
            read = BulkRead(
                dial,
                self.subjects,
                handler,
                filter_subject=filter_subject,
                from_seq=from_seq,
                from_ns=from_ns,
                target=target,
                until_ns=until_ns,
            )
            try:
                await read.run()
                return read.last_seq
            except ReaderUnavailable as exc:
                logreader.unavailable(self._nc, str(exc))
                if read.last_seq:  # a resume was refused: nats-py reads on from there
                    from_seq, from_time = read.last_seq + 1, None
                    if read.last_seq >= target:
                        return read.last_seq
        return await self._replay_subscribed(
            handler, filter_subject, from_seq, from_time, from_ns, target, until_ns
        )

    def _bulk_read_dial(self) -> Dial | None:
        """How a :class:`BulkRead` reaches this store's server, or None when the log is read
        through nats-py (bulk reads are off, or the reader cannot serve this connection)."""
        if not self.bulk_reads:
            return None
        try:
            return logreader.dial_for(self._nc)
        except ReaderUnavailable:
            return None

    async def _replay_subscribed(
        self,
        handler: StoredHandler,
        filter_subject: str,
        from_seq: int,
        from_time: datetime | None,
        from_ns: int,
        target: int,
        until_ns: int | None,
    ) -> int:
        """The bounded walk through an ordered push consumer of nats-py: the last sequence it
        read (0 if none)."""
        done = asyncio.Event()
        delivered = 0
        last = 0
        # The server starts a by-time consumer at the last message when nothing is newer than
        # the start time, so the bound is also checked (by both paths).

        async def on_message(msg: Msg) -> None:
            nonlocal delivered, last
            if done.is_set():
                return
            seq, stored_ns, pending = parse_ack_subject(msg.reply)
            delivered += 1
            if seq > target or (until_ns is not None and stored_ns > until_ns):
                done.set()
                return
            last = seq
            if stored_ns >= from_ns:
                handler(seq, msg.subject, stored_ns, msg.data, (msg.headers or {}).get(SEAL_HEADER))
            if seq >= target or pending == 0:
                done.set()

        sub = await self.subscribe_raw(
            on_message, filter_subject=filter_subject, from_seq=from_seq, from_time=from_time
        )
        try:
            # Nothing is delivered when no message is left in the bounds (a filter or a start
            # time matched none, or the messages were removed).
            info = await sub.consumer_info()
            if info.num_pending == 0 and delivered >= (info.delivered.consumer_seq or 0):
                done.set()
            await done.wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return last


class Following:
    """A live follow of the log (:meth:`EventStore.follow`) until :meth:`unsubscribe`."""

    def __init__(self, read: logreader.LiveRead, task: asyncio.Task[None]) -> None:
        self.read = read
        self.task = task

    @property
    def last_seq(self) -> int:
        """The last stream sequence handed over."""
        return self.read.last_seq

    async def unsubscribe(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def _direct_get_answered(headers: Mapping[str, str], stream: str) -> None:
    """A direct get's status answer is "no such message" (404) or "end of the batch" (204);
    anything else (503 while a server of the cluster is down, 408) means the stream did not
    answer, which must never be read as "no events" (a reader would see an object vanish and
    a writer would expect an empty history)."""
    status = headers.get("Status", "")
    if status and status not in ("204", "404"):
        description = headers.get("Description", "")
        raise StoreError(
            f"stream {stream} did not answer a read ({status} {description}".rstrip()
            + "): retry when the NATS servers are back"
        )


def _identity(data: bytes) -> tuple[Any, Any] | None:
    """An envelope's event id and type (None for bytes that are not an envelope)."""
    try:
        raw = msgpack.unpackb(data, raw=False)
        return (raw["id"], raw["t"])
    except Exception:  # garbage stored under a Msg-Id: not ours, whatever it is
        return None


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _messages(
    writes: Sequence[Write],
    token: str,
    seal_key: SealKey | None,
    first: Mapping[str, str] | None = None,
) -> list[tuple[str, bytes, dict[str, str]]]:
    out: list[tuple[str, bytes, dict[str, str]]] = []
    seen: set[str] = set()
    for write in writes:
        for position, data in enumerate(write.events):
            headers = {"Nats-Msg-Id": f"{token}:{len(out)}"}
            if first and not out:
                headers.update(first)
            if position == 0 and write.expected_last_seq is not None:
                if write.subject in seen:
                    raise StoreError(f"two writes for {write.subject} in one batch")
                headers["Nats-Expected-Last-Subject-Sequence"] = str(write.expected_last_seq)
            if seal_key is not None:
                headers[SEAL_HEADER] = seal_key.seal(write.subject, data)
            seen.add(write.subject)
            out.append((write.subject, data, headers))
    return out


def _first_expectation(writes: Sequence[Write]) -> tuple[str, int | None]:
    for write in writes:
        if write.expected_last_seq is not None:
            return write.subject, write.expected_last_seq
    return writes[0].subject, None


def parse_ack(data: bytes) -> dict[str, Any]:
    """A JetStream publish ack. The common answer (``{"stream":…,"seq":N}``) is read by hand,
    anything else (errors, batch acks, duplicates) by the JSON parser."""
    if (
        data.startswith(b'{"stream":')
        and b'"error"' not in data
        and b'"duplicate"' not in data
        and b'"batch"' not in data
    ):
        _, sep, rest = data.partition(b'"seq":')
        digits = rest.split(b",", 1)[0].rstrip(b"}")
        if sep and digits.isdigit():
            return {"seq": int(digits)}
    try:
        result: dict[str, Any] = json.loads(data) if data else {}
    except ValueError:
        return {"error": {"description": f"unreadable ack {data!r}"}}
    return result

"""The projection runtime: fold the log into a read model, keep its position, snapshot and
resume it, follow the log live, and replay it to a given sequence or instant.

A read model is anything with ``apply(event)`` (a fold that never fails), ``snapshot()`` /
``restore()`` (its state as plain data) and ``digest()`` (a hash of that state). The runtime
owns the position (the last stream sequence applied), so replaying from zero, resuming from a
snapshot and following live all end in the same state — tests prove it by comparing digests.

Two things a projection never trusts:

* **An event it cannot fold.** The store quarantines what cannot be decoded or checked
  (``streams/quarantine.py``); a fold (or a listener) that still raises quarantines its event
  too, with reason ``fold_failed``. Either way the position moves past it, so read-your-writes
  waits never hang on a poison message, and the reader goes on.
* **A snapshot the log does not back.** A snapshot records the stream it was folded from (its
  creation time and first sequence) with its position; on load it is discarded, with a warning,
  and the model rebuilt from the log when the stream was created again, ends before the
  position, or no longer holds events the snapshot folded (a limit or a purge removed them):
  the model then holds what the log holds, and new events are folded onto it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

import msgpack
import msgspec
import structlog
from nats.js.api import ObjectMeta
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from streams.connection import resubscribe, when_reconnected
from streams.envelope import StoredEvent
from streams.eventstore import EventStore, Following
from streams.quarantine import FOLD_FAILED
from streams.subjects import ALL_EVENTS

log = structlog.get_logger(__name__)


class ReadModel(Protocol):
    """What the runtime needs of a read model."""

    name: str

    def apply(self, event: StoredEvent) -> None: ...

    def snapshot(self) -> Any: ...

    def restore(self, data: Any) -> None: ...


@runtime_checkable
class CapturedSnapshots(Protocol):
    """A read model whose snapshot can be captured cheaply on the event loop and written out
    elsewhere: ``snapshot_capture()`` takes what the state is now (no deep copy: what it holds
    is never changed in place afterwards), ``snapshot_items(captured)`` gives the items of
    ``snapshot()``'s list from it, in any thread."""

    def snapshot_capture(self) -> Any: ...

    def snapshot_items(self, captured: Any) -> Iterator[Any]: ...


def packed_snapshot(position: int, items: Iterator[Any], count: int) -> bytes:
    """``msgpack.packb({"position": position, "state": list(items)})``, byte for byte, packed
    an item at a time: in a worker thread, each item is a call of its own, so the event loop's
    thread takes the interpreter between items (one ``packb`` of a 10,000-pod model held it
    ~80 ms, and building its dicts ~35 ms more, every snapshot period)."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    packer.pack_map_header(2)
    packer.pack("position")
    packer.pack(position)
    packer.pack("state")
    packer.pack_array_header(count)
    for item in items:
        packer.pack(item)
    return packer.bytes()


FREEZE_AFTER_EVENTS = 100_000
"""A catch-up applying at least this many events freezes the heap after it (see catch_up)."""


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a replay builds a read model, or while a large
    one is walked (digest, rendering, diff).

    A replay allocates objects that live as long as the model; the collector would scan them
    again and again as they pile up (a large share of replay time), and a walk that allocates
    a lot would make each full collection scan the whole model again (the digest of 25,000
    objects took 3.3 s instead of 1.2 s). Nothing folded here forms reference cycles that need
    collecting, so collection resumes when the block ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def digest_of(data: Any) -> str:
    """A stable hash of plain data (maps are hashed with sorted keys)."""
    return hashlib.sha256(msgpack.packb(_canonical(data), use_bin_type=True)).hexdigest()


_LEAVES: frozenset[type] = frozenset({str, int, float, bool, bytes, type(None)})
"""Types ``_canonical`` returns as they are: checked by exact type first, which spares most
values of a manifest (strings, numbers) a call and two ``isinstance`` checks."""


def _repr_of_key(item: tuple[Any, Any]) -> str:
    return repr(item[0])


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return [
            [
                k if type(k) in _LEAVES else _canonical(k),
                v if type(v) in _LEAVES else _canonical(v),
            ]
            for k, v in sorted(value.items(), key=_repr_of_key)
        ]
    if isinstance(value, list | tuple):
        return [v if type(v) in _LEAVES else _canonical(v) for v in value]
    return value


M = TypeVar("M", bound=ReadModel)


class SnapshotOrigin(msgspec.Struct, frozen=True, kw_only=True):
    """Where a snapshot stands in the log: the stream it was folded from (its name and
    creation time, and its first sequence then) and the position reached. Empty ``created``:
    a snapshot from before origins were recorded (only its position can be checked)."""

    stream: str = ""
    created: str = ""
    first_seq: int = 0
    position: int = 0

    def describe(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def read(cls, description: str | None, position: int) -> SnapshotOrigin:
        """The origin a snapshot's description states (or only ``position``, if none)."""
        try:
            return msgspec.json.decode(description or "", type=cls)
        except msgspec.DecodeError:
            return cls(position=position)

    def unbacked_by(self, info: dict[str, Any]) -> str | None:
        """Why the stream described by ``info`` (JetStream's stream info) does not back a
        snapshot taken here, or None when it does."""
        state = info.get("state", {})
        first = int(state.get("first_seq") or 0)
        last = int(state.get("last_seq") or 0)
        created = str(info.get("created", ""))
        if self.created and created != self.created:
            return (
                f"the stream was created again (at {created}; the snapshot is of the stream "
                f"created at {self.created})"
            )
        if last < self.position:
            return (
                f"the log ends at sequence {last}, before the snapshot's position {self.position}"
            )
        if self.position and first > self.position + 1:
            return (
                f"the log starts at sequence {first}: events {self.position + 1}.."
                f"{first - 1} after the snapshot are gone"
            )
        if self.created and first > max(self.first_seq, 1) and self.position:
            return (
                f"the log starts at sequence {first}: events {max(self.first_seq, 1)}.."
                f"{first - 1} the snapshot folded are no longer in it"
            )
        return None


async def snapshot_origin(objects: ObjectStore, name: str) -> SnapshotOrigin | None:
    """The origin of the snapshot of read model ``name`` (None if there is no snapshot)."""
    try:
        info = await objects.get_info(name)
    except NotFoundError:
        return None
    return SnapshotOrigin.read(info.description, 0)


class Projection(Generic[M]):
    """A read model together with its position in the log."""

    def __init__(
        self,
        model: M,
        store: EventStore,
        *,
        filter_subject: str = ALL_EVENTS,
        lean_follow: bool = False,
    ) -> None:
        """``lean_follow``: follow the log through the store's own reader
        (:meth:`EventStore.follow`) rather than nats-py's ordered consumer, for a model that
        folds a busy log (the scheduler's); nats-py's when that reader cannot serve."""
        self.model = model
        self._lean_follow = lean_follow
        self._fallback: asyncio.Task[None] | None = None
        self.position = 0
        self._store = store
        self._filter = filter_subject
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._subscription: Any = None
        self._forget_reconnect: Callable[[], None] | None = None
        # Called with each event right after the model folded it (handlers that react to
        # changes of a shared read model register here instead of folding the log again).
        self.listeners: list[Callable[[StoredEvent], None]] = []

    def _apply(self, event: StoredEvent) -> None:
        if event.seq <= self.position:
            return  # an ordered consumer may redeliver after a reset
        try:
            self.model.apply(event)
        except Exception as exc:  # one event must never stop the reader (module docstring)
            self._fold_failed(event, exc, self.model.name)
        self.position = event.seq
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:
                self._fold_failed(event, exc, getattr(listener, "__qualname__", "a listener"))
        if self._waiters:
            self._wake()

    def _fold_failed(self, event: StoredEvent, exc: Exception, where: str) -> None:
        self._store.quarantine.add(
            seq=event.seq,
            subject=event.subject,
            reason=FOLD_FAILED,
            detail=f"{where}: {type(exc).__name__}: {exc}",
        )

    def _skip(self, seq: int) -> None:
        """A poison message at ``seq`` was quarantined: the position moves past it."""
        if seq > self.position:
            self.position = seq
            if self._waiters:
                self._wake()

    def _wake(self) -> None:
        still_waiting = []
        for seq, future in self._waiters:
            if future.done():
                continue
            if seq <= self.position:
                future.set_result(None)
            else:
                still_waiting.append((seq, future))
        self._waiters = still_waiting

    async def catch_up(self, *, until_seq: int | None = None, until_ns: int | None = None) -> int:
        """Apply everything after the position up to the end of the log (or the bound).

        A long catch-up (a replay at start-up, a time-travel read) ends by *freezing* what
        the process holds (``gc.freeze``): otherwise the first young collection after it walks
        every object the replay allocated (1.9 s after a 1,000,000-event replay, two million
        tracked objects) and older collections walk them again later. Frozen objects are
        still freed by reference counting when a model is dropped (it holds no cycles); cyclic
        garbage frozen with them is never collected, which is why a short catch-up does not
        freeze (a process that caught up again and again would keep its garbage)."""
        start = self.position
        # The end of the log as of *before* the replay: the replay reads at least that far,
        # so moving the position there skips nothing. (Asking after the replay skipped the
        # events appended meanwhile: neither the replay nor the follow from the position
        # delivered them.)
        end = await self._store.stream_last_seq() if until_seq is None and until_ns is None else 0
        with collector_paused():
            await self._store.replay(
                self._apply,
                filter_subject=self._filter,
                from_seq=self.position + 1,
                until_seq=until_seq,
                until_ns=until_ns,
                on_poison=self._skip,
            )
            if self.position - start >= FREEZE_AFTER_EVENTS:
                gc.freeze()
        if until_seq is None and until_ns is None and self._filter == ALL_EVENTS:
            self.position = max(self.position, end)
        return self.position

    async def follow(self) -> None:
        """Apply new events as they are appended, until :meth:`stop`. After a reconnection
        (an outage of any length) the consumer is taken up again from the position."""
        if self._lean_follow:
            following = self._store.follow(
                self._apply, filter_subject=self._filter, from_seq=self.position + 1,
                on_poison=self._skip,
            )  # fmt: skip
            if following is not None:
                self._subscription = following
                following.task.add_done_callback(self._lean_follow_ended)
                return  # it takes its consumer up again after outages by itself
        self._subscription = await self._store.subscribe(
            self._apply,
            filter_subject=self._filter,
            from_seq=self.position + 1,
            on_poison=self._skip,
        )
        if self._forget_reconnect is None:
            self._forget_reconnect = when_reconnected(self._store.connection, self._resume)

    def _lean_follow_ended(self, task: asyncio.Task[None]) -> None:
        """The store's reader stopped serving this connection (say, the server now wants
        credentials it cannot give): follow through nats-py from the position."""
        if task.cancelled() or self._subscription is None:
            return
        error = task.exception()
        log.warning("projection.lean_follow_ended", model=self.model.name, error=repr(error))
        self._lean_follow = False
        self._fallback = asyncio.get_running_loop().create_task(self._fall_back())

    async def _fall_back(self) -> None:
        async def subscribe() -> None:
            self._subscription = await self._store.subscribe(
                self._apply, filter_subject=self._filter, from_seq=self.position + 1,
                on_poison=self._skip,
            )  # fmt: skip

        await resubscribe(subscribe, what=f"projection {self.model.name}")
        if self._forget_reconnect is None:
            self._forget_reconnect = when_reconnected(self._store.connection, self._resume)

    async def _resume(self) -> None:
        if self._subscription is None or isinstance(self._subscription, Following):
            return
        await self._unsubscribe()

        async def subscribe() -> None:
            self._subscription = await self._store.subscribe(
                self._apply, filter_subject=self._filter, from_seq=self.position + 1
            )

        await resubscribe(subscribe, what=f"projection {self.model.name}")

    async def stop(self) -> None:
        if self._fallback is not None:
            self._fallback.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fallback
            self._fallback = None
        if self._forget_reconnect is not None:
            self._forget_reconnect()
            self._forget_reconnect = None
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def wait_for(self, seq: int, timeout: float = 5.0) -> bool:
        """Wait until the position reaches ``seq``; False on timeout."""
        if self.position >= seq:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True

    async def log_end(self) -> int:
        """The sequence of the last message in the log now (as the stream's leader says)."""
        return await self._store.stream_last_seq()

    async def wait_for_log_end(self, timeout: float = 5.0) -> bool:
        """Read-your-writes: wait until everything in the log right now has been applied."""
        return await self.wait_for(await self.log_end(), timeout)

    # -- snapshots -------------------------------------------------------------------------

    async def save_snapshot(self, objects: ObjectStore) -> None:
        """Store the model with its position and the stream it was folded from (in the
        object's description, which ``audit verify`` reads without the state)."""
        position = self.position
        model = self.model
        if isinstance(model, CapturedSnapshots):
            captured = model.snapshot_capture()  # the state at ``position``: no await before
            info = await self._store.stream_info()
            items = model.snapshot_items(captured)
            data = await asyncio.to_thread(packed_snapshot, position, items, len(captured))
        else:
            data = msgpack.packb(
                {"position": position, "state": model.snapshot()}, use_bin_type=True
            )
            info = await self._store.stream_info()
        taken = SnapshotOrigin(
            stream=self._store.stream,
            created=str(info.get("created", "")),
            first_seq=int(info["state"].get("first_seq") or 0),
            position=position,
        )
        await objects.put(self.model.name, data, meta=ObjectMeta(description=taken.describe()))
        log.info(
            "projection.snapshot_saved",
            model=self.model.name,
            position=position,
            bytes=len(data),
        )

    async def load_snapshot(self, objects: ObjectStore) -> bool:
        """Restore the model from its snapshot if the log backs it (module docstring); False
        when there is none or it was discarded (the model is then untouched)."""
        try:
            result = await objects.get(self.model.name)
        except NotFoundError:
            return False
        assert result.data is not None
        saved = msgpack.unpackb(result.data, raw=False, strict_map_key=False)
        position = int(saved["position"])
        taken = SnapshotOrigin.read(result.info.description, position)
        problem = taken.unbacked_by(await self._store.stream_info())
        if problem is not None:
            log.warning(
                "projection.snapshot_discarded",
                model=self.model.name,
                position=position,
                reason=problem,
                action="rebuilding the model from the log",
            )
            return False
        self.model.restore(saved["state"])
        self.position = position
        log.info("projection.snapshot_loaded", model=self.model.name, position=self.position)
        return True

    @classmethod
    async def replayed(
        cls,
        model: M,
        store: EventStore,
        *,
        until_seq: int | None = None,
        until: datetime | None = None,
    ) -> Self:
        """A projection rebuilt from the start of the log up to a sequence or instant."""
        projection = cls(model, store)
        until_ns = int(until.timestamp() * 1e9) if until is not None else None
        await projection.catch_up(until_seq=until_seq, until_ns=until_ns)
        return projection

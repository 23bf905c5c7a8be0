"""The loop every reconciling controller shares: follow the cluster, keep a set of dirty keys,
and (as the elected leader) reconcile each one, never two at once for the same key.

Why this exists: the controllers (replica sets, deployments, quotas, the garbage collector,
taint eviction, node lifecycle, endpoint slices) differ only in what they decide; how they
learn that something changed (a listener on the shared cluster projection), how they avoid
acting twice on one object (one reconcile per key in flight; a key dirtied meanwhile is
reconciled again afterwards), when they look again by themselves (a time the reconcile asks for:
``minReadySeconds``, a progress deadline, an eviction deadline, the next monitor pass), how
they retry after a failure, and how leadership is held and given up, is the same. A reconcile
waits for its own writes to reach the projection before it returns (Kubernetes'
"expectations", :meth:`ControllerLoop.settle`), and the loop does not start the next reconcile
of that key before they have, however long the projection lags, so it never decides on a view
that misses them; a new leader likewise acts only once its view has reached the log's end.

The seams, each a small Protocol: :class:`Reconcile` (one key → when to look again),
:class:`KeysOf` (an event → the keys it makes dirty), :class:`AllKeys` (what a new leader looks
at), and :class:`Leadership` (a lease renewed once per period, or one borrowed from another
controller with :class:`FollowedLease`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypedDict, TypeVar

import structlog

from core.api.causation import caused_by_event
from core.errors import FleetError
from core.meta.labels import selector_matches
from projections.cluster import ClusterModel, ObjectRecord
from projections.ownership import ControllerIndex
from projections.runtime import Projection
from streams.cancellation import checkpoint
from streams.commandbus import CommandClient
from streams.connection import OUTAGE_ERRORS, in_outage
from streams.envelope import StoredEvent
from streams.repository import Provenance

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=tuple[str, ...])
K_co = TypeVar("K_co", bound=tuple[str, ...], covariant=True)
K_contra = TypeVar("K_contra", bound=tuple[str, ...], contravariant=True)


class CauseFields(TypedDict):
    """A cause as the keyword arguments of ``CommandClient.send``."""

    causation_id: str
    correlation_id: str | None


@dataclass(frozen=True)
class Cause:
    """What a reconcile acts on behalf of: the event that last dirtied its key (causation
    ``seq:<n>``) and that event's correlation id, carried on to every command it sends."""

    causation_id: str
    correlation_id: str | None = None

    def kwargs(self) -> CauseFields:
        return {"causation_id": self.causation_id, "correlation_id": self.correlation_id}

    def provenance(self, *, actor: str, token: str, now_ns: int) -> Provenance:
        """A controller's own append on behalf of this cause (its write token names the
        correlation when the cause carries none)."""
        return Provenance(
            actor=actor,
            correlation_id=self.correlation_id or token,
            causation_id=self.causation_id,
            token=token,
            now_ns=now_ns,
        )


class Reconcile(Protocol[K_contra]):
    """Reconcile one key; returns when (wall-clock ns) to look again, or None."""

    async def __call__(self, key: K_contra, /) -> int | None: ...


class KeysOf(Protocol[K_co]):
    """The keys an event makes due for a reconcile (none: the controller does not care)."""

    def __call__(self, event: StoredEvent, /) -> Iterable[K_co]: ...


class AllKeys(Protocol[K_co]):
    """Every key there is to look at: what a new leader reconciles first."""

    def __call__(self) -> Iterable[K_co]: ...


class Leadership(Protocol):
    """A singleton role's standing, as the loop uses it: it asks once per period
    (:meth:`renew`), acts only while :attr:`is_leader`, and gives it up on the way out.
    ``streams.leases.LeaderLease`` is the one that holds a key; :class:`FollowedLease` borrows
    another controller's."""

    @property
    def holder(self) -> str: ...

    @property
    def is_leader(self) -> bool: ...

    async def renew(self) -> bool: ...

    async def resign(self) -> None: ...


class FollowedLease:
    """Leadership held by another controller's loop (taint eviction acts under the node
    lifecycle controller's lease): this side only reads it, so it never renews or resigns."""

    def __init__(self, lease: Leadership) -> None:
        self._lease = lease

    @property
    def holder(self) -> str:
        return self._lease.holder

    @property
    def is_leader(self) -> bool:
        return self._lease.is_leader

    async def renew(self) -> bool:
        return False  # the holder renews it

    async def resign(self) -> None:
        """Nothing to give up: the holder resigns when it stops."""


class LoopOptions(TypedDict, total=False):
    """The loop's timings and concurrency, which a controller passes through (tests shorten
    them)."""

    max_in_flight: int
    period_seconds: float
    retry_seconds: float


PERIOD_SECONDS = 5.0
RETRY_SECONDS = 1.0
MAX_IN_FLIGHT = 32


class DirtyKeys(Generic[K]):
    """The keys due for a reconcile, each once, taken in the order they became due.

    A set alone will not do: a new leader marks every object (tens of thousands), the loop
    takes them ``max_in_flight`` at a time, and ``set.pop`` then scans the emptied hash table
    from where it last stopped (sets never shrink on removal), so every later pop costs up to a
    pass over that table — measured as a sixth of ``fleetlog up``'s CPU per command with
    60,000 objects. A queue beside the set keeps a pop at O(1)."""

    __slots__ = ("_members", "_order")

    def __init__(self) -> None:
        self._members: set[K] = set()
        self._order: deque[K] = deque()

    def add(self, key: K) -> None:
        if key not in self._members:
            self._members.add(key)
            self._order.append(key)

    def update(self, keys: Iterable[K]) -> None:
        for key in keys:
            self.add(key)

    def pop(self) -> K:
        key = self._order.popleft()
        self._members.discard(key)
        return key

    def clear(self) -> None:
        self._members.clear()
        self._order.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def __len__(self) -> int:
        return len(self._members)


class ControllerLoop(Generic[K]):
    """Runs ``reconcile`` for dirty keys while ``leader`` leads.

    ``keys_of`` is called for every event of the projection, leader or not (a controller
    keeps its indexes there); ``all_keys`` when this process becomes leader, once the
    projection has caught up with the log. At most ``max_in_flight`` reconciles run at once;
    further dirty keys wait as keys, not as tasks, so a new leader with a large cluster to look
    at does not hold a task per object. ``kind`` and ``actor`` shape the causes remembered
    (see :meth:`cause`); with neither, the last event that dirtied a key is its cause.
    """

    def __init__(
        self,
        *,
        role: str,
        projection: Projection[ClusterModel],
        leader: Leadership,
        reconcile: Reconcile[K],
        keys_of: KeysOf[K],
        all_keys: AllKeys[K],
        kind: str = "",
        actor: str = "",
        max_in_flight: int = MAX_IN_FLIGHT,
        period_seconds: float = PERIOD_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.role = role
        self.kind = kind
        self.actor = actor
        self._projection = projection
        self._leader = leader
        self._reconcile = reconcile
        self._keys_of = keys_of
        self._all_keys = all_keys
        self.max_in_flight = max_in_flight
        self.period_seconds = period_seconds
        self.retry_seconds = retry_seconds
        self._wake = asyncio.Event()
        self._dirty: DirtyKeys[K] = DirtyKeys()
        self._in_flight: set[K] = set()
        self._redo: set[K] = set()
        self._timers: list[tuple[float, K]] = []  # (monotonic time, key), a heap
        self._causes: dict[K, Cause] = {}
        self._own_cause: set[K] = set()  # keys whose cause is an event on the object itself
        self._expected: dict[K, int] = {}  # key -> the last sequence its reconciles wrote
        self._behind: set[K] = set()  # keys reported as waiting for the view
        self.reconciled = 0
        self.deferred = 0
        """Reconciles put off because the view did not yet hold the key's own writes."""
        self.failures = 0

    @property
    def leader(self) -> Leadership:
        return self._leader

    def mark(self, key: K) -> None:
        """Reconcile ``key`` soon (again, if it is being reconciled now)."""
        self._dirty.add(key)
        self._wake.set()

    def mark_after(self, key: K, seconds: float) -> None:
        """Reconcile ``key`` once ``seconds`` have passed."""
        heapq.heappush(self._timers, (time.monotonic() + seconds, key))
        self._wake.set()

    def _on_event(self, event: StoredEvent) -> None:
        keys = list(self._keys_of(event))
        if keys:
            self._note_cause(event, keys)
            self._dirty.update(keys)
            self._wake.set()

    def _note_cause(self, event: StoredEvent, keys: list[K]) -> None:
        """Remember why each key is due. A controller's own writes (its status records) are
        never a cause; a change of the object itself (created, scaled, updated) outranks the
        dependents' comings and goings until it has been acted on."""
        e = event.envelope
        if self.actor and e.actor == self.actor:
            return
        cause = Cause(caused_by_event(event.seq), e.correlation_id or None)
        for key in keys:
            if e.kind == self.kind and (e.namespace, e.name) == key:
                self._causes[key] = cause
                self._own_cause.add(key)
            elif key not in self._own_cause:
                self._causes[key] = cause

    def cause(self, key: K, fallback_seq: int) -> Cause:
        """Why ``key`` is being reconciled: the last event that dirtied it, or (a new leader's
        catch-up, with no such event seen) the object's own last event."""
        return self._causes.get(key) or Cause(caused_by_event(fallback_seq))

    def seen_cause(self, key: K) -> Cause | None:
        """The event that last dirtied ``key``, if one was seen (for a controller whose
        fallback is not an event)."""
        return self._causes.get(key)

    async def settle(self, key: K, seq: int) -> bool:
        """Expectations (Kubernetes' ``ControllerExpectations``): wait until the view holds
        ``seq``, a write this reconcile of ``key`` made. Whether or not it does in time, ``key``
        is not reconciled again before it does (see :meth:`_run_one`): a decision on a view
        without one's own writes makes them again (a replica set's pods created twice). False
        if the view is still behind; the caller may go on with what does not count on it."""
        if seq > self._expected.get(key, 0):
            self._expected[key] = seq
        return await self._projection.wait_for(seq)

    async def _view_holds_own_writes(self, key: K) -> bool:
        expected = self._expected.get(key)
        if expected is None:
            return True
        if not await self._projection.wait_for(expected):
            if key not in self._behind:  # once per key and episode: a lag touches every key
                self._behind.add(key)
                log.info(
                    f"{self.role}.view_behind", key="/".join(key), expected=expected,
                    position=self._projection.position,
                )  # fmt: skip
            return False
        if self._expected.get(key) == expected:
            del self._expected[key]
        self._behind.discard(key)
        return True

    def forget(self, key: K) -> None:
        """The object is gone (or acted on for good): drop what is remembered about it."""
        self._causes.pop(key, None)
        self._own_cause.discard(key)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follow and (as leader) reconcile until cancelled; leadership is given up on the way
        out."""
        self._projection.listeners.append(self._on_event)
        if ready is not None:
            ready.set()
        renew_at = 0.0
        leading = False
        lead_from: int | None = None  # the log's end when the lease was won
        try:
            async with asyncio.TaskGroup() as tasks:
                while True:
                    checkpoint()
                    now = time.monotonic()
                    if now >= renew_at:
                        renew_at = now + self.period_seconds
                        await self._leader.renew()
                    if not self._leader.is_leader:
                        lead_from = None
                    elif not leading:
                        # A new leader first catches up with the log as it was when it won the
                        # lease, then looks at everything: whatever happened meanwhile is
                        # reconciled. (Seen here, not from renew(), so a borrowed lease's
                        # comings and goings count.) A fixed target: a view that folds as fast
                        # as the log grows, some seconds behind, still gets there.
                        try:
                            if lead_from is None:
                                lead_from = await self._projection.log_end()
                        except OUTAGE_ERRORS:
                            # The server is away: not leading until the log's end is known.
                            await asyncio.sleep(self.retry_seconds)
                            continue
                        if not await self._projection.wait_for(lead_from):
                            # The view is still behind (a restart's model behind, a follow held
                            # up): acting now would redo what the log already has. Keep the
                            # lease, wait on.
                            log.info(
                                f"{self.role}.catching_up", position=self._projection.position,
                                log_end=lead_from,
                            )  # fmt: skip
                            continue
                        self._dirty.update(self._all_keys())
                        log.info(f"{self.role}.leading", holder=self._leader.holder)
                    leading = self._leader.is_leader
                    timeout = max(0.0, renew_at - time.monotonic())
                    if leading:
                        self._due_timers()
                        self._start_dirty(tasks)
                        if self._timers:
                            timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
                    else:
                        self._dirty.clear()
                        self._timers.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    self._wake.clear()
        finally:
            with contextlib.suppress(ValueError):
                self._projection.listeners.remove(self._on_event)
            await self._leader.resign()

    def _due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, key = heapq.heappop(self._timers)
            self._dirty.add(key)

    def _start_dirty(self, tasks: asyncio.TaskGroup) -> None:
        # One pop per key, not a pass over the set per wake-up: a new leader may have tens of
        # thousands dirty and only max_in_flight slots.
        while self._dirty and len(self._in_flight) < self.max_in_flight:
            key = self._dirty.pop()
            if key in self._in_flight:
                self._redo.add(key)
                continue
            self._in_flight.add(key)
            tasks.create_task(self._run_one(key))

    async def _run_one(self, key: K) -> None:
        try:
            if not await self._view_holds_own_writes(key):
                self.deferred += 1
                self.mark_after(key, self.retry_seconds)
                return
            recheck_ns = await self._reconcile(key)
            self.reconciled += 1
            self._own_cause.discard(key)  # acted on: dependents' events may be causes again
            if recheck_ns is not None:
                self.mark_after(key, max(0.0, (recheck_ns - time.time_ns()) / 1e9))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a refused command or a timeout: look again shortly
            self.failures += 1
            # During an outage (reported once by the connection) every key would say so.
            (log.debug if in_outage() else log.warning)(
                f"{self.role}.reconcile_failed", key="/".join(key), error=str(exc)
            )
            self.mark_after(key, self.retry_seconds)
        finally:
            self._in_flight.discard(key)
            if key in self._redo:
                self._redo.discard(key)
                self._dirty.add(key)
            self._wake.set()


def with_controller(manifest: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    """The manifest with ``owner`` added as its controller reference (an adoption)."""
    metadata = dict(manifest.get("metadata") or {})
    metadata["ownerReferences"] = [*(metadata.get("ownerReferences") or []), owner]
    return {**manifest, "metadata": metadata}


async def adopt_orphans(
    commands: CommandClient,
    *,
    projection: Projection[ClusterModel],
    index: ControllerIndex,
    namespace: str,
    selector: dict[str, Any],
    owner: dict[str, Any],
    role: str,
    cause: Cause,
    adoptable: Callable[[ObjectRecord], bool] = lambda record: True,
) -> list[int]:
    """Adopt the namespace's orphans whose labels the owner's ``selector`` matches: an apply
    adding the controller reference, with ``expected_version`` (an object that changed
    meanwhile is judged again next time). Returns the sequences written."""
    seqs: list[int] = []
    kind = index.dependent_kind
    for key in index.orphans(namespace):
        record = projection.model.get(kind, *key)
        if record is None or not adoptable(record):
            continue
        labels = (record.manifest.get("metadata") or {}).get("labels") or {}
        if not selector_matches(selector, labels):
            continue
        try:
            outcome = await commands.send(
                kind,
                "apply",
                {"manifest": with_controller(record.manifest, owner)},
                idempotency_key=f"{role}.adopt.{record.uid}.{record.version}",
                expected_version=record.version,
                **cause.kwargs(),
            )
        except FleetError as exc:
            log.info(
                f"{role}.adopt_refused", object=f"{kind}/{namespace}/{key[1]}", error=exc.message
            )
            continue
        log.info(f"{role}.adopted", object=f"{kind}/{namespace}/{key[1]}", owner=owner["name"])
        seqs.extend(outcome.seqs)
    return seqs

"""The loop every reconciling controller shares: follow the cluster, keep a set of dirty keys,
and (as the elected leader) reconcile each one, never two at once for the same key.

Why this exists: the replica-set and deployment controllers differ only in what they decide;
how they learn that something changed (a listener on the shared cluster projection), how they
avoid acting twice on one object (one reconcile per key in flight; a key dirtied meanwhile is
reconciled again afterwards), when they look again by themselves (a time the reconcile asks
for: ``minReadySeconds``, a progress deadline), how they retry after a failure, and how
leadership is held and given up, is the same. A reconcile waits for its own writes to reach
the projection before it returns (Kubernetes' "expectations"), so the next reconcile of that
key never decides on a view that misses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from core.api.causation import caused_by_event
from core.errors import FleetError
from core.meta.labels import selector_matches
from projections.cluster import ClusterModel, ObjectRecord
from projections.ownership import ControllerIndex, Key
from projections.runtime import Projection
from streams.cancellation import checkpoint
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.leases import LeaderLease

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Cause:
    """What a reconcile acts on behalf of: the event that last dirtied its key (causation
    ``seq:<n>``) and that event's correlation id, carried on to every command it sends."""

    causation_id: str
    correlation_id: str | None = None

    def kwargs(self) -> dict[str, str | None]:
        return {"causation_id": self.causation_id, "correlation_id": self.correlation_id}


Reconcile = Callable[[Key], Awaitable[int | None]]
"""Reconcile one key; returns when (wall-clock ns) to look again, or None."""

PERIOD_SECONDS = 5.0
RETRY_SECONDS = 1.0


class ControllerLoop:
    """Runs ``reconcile`` for dirty keys while holding ``leader``."""

    def __init__(
        self,
        role: str,
        projection: Projection[ClusterModel],
        leader: LeaderLease,
        reconcile: Reconcile,
        *,
        keys_of: Callable[[StoredEvent], Iterable[Key]],
        all_keys: Callable[[], Iterable[Key]],
        kind: str = "",
        actor: str = "",
        max_in_flight: int = 32,
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
        self._slots = asyncio.Semaphore(max_in_flight)
        self.period_seconds = period_seconds
        self.retry_seconds = retry_seconds
        self._wake = asyncio.Event()
        self._dirty: set[Key] = set()
        self._in_flight: set[Key] = set()
        self._redo: set[Key] = set()
        self._timers: list[tuple[float, Key]] = []  # (monotonic time, key), a heap
        self._causes: dict[Key, Cause] = {}
        self._own_cause: set[Key] = set()  # keys whose cause is an event on the object itself
        self.reconciled = 0
        self.failures = 0

    @property
    def leader(self) -> LeaderLease:
        return self._leader

    def mark(self, key: Key) -> None:
        self._dirty.add(key)
        self._wake.set()

    def _on_event(self, event: StoredEvent) -> None:
        keys = list(self._keys_of(event))
        if keys:
            self._note_cause(event, keys)
            self._dirty.update(keys)
            self._wake.set()

    def _note_cause(self, event: StoredEvent, keys: list[Key]) -> None:
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

    def cause(self, key: Key, fallback_seq: int) -> Cause:
        """Why ``key`` is being reconciled: the last event that dirtied it, or (a new leader's
        catch-up, with no such event seen) the object's own last event."""
        return self._causes.get(key) or Cause(caused_by_event(fallback_seq))

    def forget(self, key: Key) -> None:
        """The object is gone: drop what is remembered about it."""
        self._causes.pop(key, None)
        self._own_cause.discard(key)

    def _after(self, key: Key, seconds: float) -> None:
        heapq.heappush(self._timers, (time.monotonic() + seconds, key))
        self._wake.set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follow and (as leader) reconcile until cancelled; leadership is given up on the way
        out."""
        self._projection.listeners.append(self._on_event)
        if ready is not None:
            ready.set()
        renew_at = 0.0
        try:
            async with asyncio.TaskGroup() as tasks:
                while True:
                    checkpoint()
                    now = time.monotonic()
                    if now >= renew_at:
                        renew_at = now + self.period_seconds
                        if await self._leader.renew():
                            # A new leader first catches up with the whole log, then looks at
                            # everything: whatever happened meanwhile is reconciled.
                            await self._projection.wait_for_log_end()
                            self._dirty.update(self._all_keys())
                            log.info(f"{self.role}.leading", holder=self._leader.holder)
                    timeout = max(0.0, renew_at - time.monotonic())
                    if self._leader.is_leader:
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
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            if key in self._in_flight:
                self._redo.add(key)
                continue
            self._in_flight.add(key)
            tasks.create_task(self._run_one(key))

    async def _run_one(self, key: Key) -> None:
        try:
            async with self._slots:
                recheck_ns = await self._reconcile(key)
            self.reconciled += 1
            self._own_cause.discard(key)  # acted on: dependents' events may be causes again
            if recheck_ns is not None:
                self._after(key, max(0.0, (recheck_ns - time.time_ns()) / 1e9))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a refused command or a timeout: look again shortly
            self.failures += 1
            log.warning(f"{self.role}.reconcile_failed", key="/".join(key), error=str(exc))
            self._after(key, self.retry_seconds)
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
    projection: Projection[ClusterModel],
    index: ControllerIndex,
    namespace: str,
    selector: dict[str, Any],
    owner: dict[str, Any],
    *,
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

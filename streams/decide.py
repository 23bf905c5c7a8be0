"""One path from a decision to the log: lock, load, decide, append; decide again on conflict.

Why this exists: every writer of the log (the gateway's execute stage, the scheduler, the node
agent, the node lifecycle and quota controllers, the simulated nodes) makes its decisions the
same way, and :func:`decide_and_append` is that way, written once. One attempt:

1. **lock** every aggregate the decision reads (``refs``), in one global order
   (:func:`lock_order`: an object before the ledgers that account for it, its node and then its
   quotas; by subject within a kind), so two writers holding several locks never wait on each
   other. The locks are the repository's, per process: they keep two decisions of one process
   from stacking events on the same cached aggregate; across processes the append's
   expectations do that;
2. **load** each of them: from the repository's cache, or from the log when the previous attempt
   lost a race (or from the first attempt on, with ``start_fresh``). ``assume_new`` lets a cache
   miss stand for "it does not exist" (a create, usually right: if the object exists after all,
   the append's "must be new" fails and the next attempt reads it). Aggregates found from what
   was loaded (``dependents``: a deleted pod's node) are then locked and loaded too;
3. **decide**: the callback records events on the loaded aggregates (through ``core``) and says
   what to append (:class:`Append`: the aggregates in the order their events are numbered, and
   the :class:`~streams.repository.Provenance` with the write token, which the caller derives
   from what it decided on, so a retried write produces identical events), or nothing;
4. **append** atomically, with an expectation on every subject. A
   :class:`~streams.eventstore.ConcurrencyConflict` (another writer got there first) is decided
   again, up to ``attempts`` in all, as ``on_conflict`` says: on state read fresh from the log,
   or on the caller's own view (a read model that has caught up), after an optional jittered
   pause; after the last, the conflict is raised.

A refusal (a :class:`~core.errors.FleetError` from the decision) drops the loaded aggregates from
the cache, since they may hold the refused decision's events, and is raised, except a
:class:`~core.errors.Conflict` (a version precondition) judged on cached state, which is judged
again on the log. Locks are held for one attempt and released before a retry's pause.

A refusal made on aggregates read from the log is first checked against the stream's leader
(with the default loader): a clustered stream's reads may be answered by a replica that lags,
and "no such pod" or "not bound" judged on its older answer would refuse what the log already
allows. When the leader holds newer events on one of the subjects, the decision is made once
more on them; otherwise the refusal stands.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.errors import Conflict, FleetError
from streams.connection import OUTAGE_ERRORS
from streams.eventstore import ConcurrencyConflict, StoreError
from streams.repository import AggregateRepository, Loaded, Provenance, Written
from streams.subjects import AggregateRef

_LEDGER_RANK = {"Node": 1, "ResourceQuota": 2, "IPAddress": 3, "NodePortAllocation": 4}
"""Kinds that account for other objects, locked after them (the rest rank 0): a service's
address and node-port records come after the service."""


def lock_order(ref: AggregateRef) -> tuple[int, str]:
    """Where ``ref`` comes in the one order every writer takes its locks in: objects first,
    then nodes (their allocation ledgers), then quotas, then a service's address and node-port
    records; by subject within a rank."""
    return _LEDGER_RANK.get(ref.kind, 0), ref.subject


@dataclass(frozen=True, kw_only=True)
class Append:
    """What a decision asks to store: the pending events of ``changes`` (in that order: an
    event's id is derived from the write token and its position), stamped with ``provenance``."""

    changes: Sequence[Loaded]
    provenance: Provenance


@dataclass
class Attempt:
    """One attempt's view: what was loaded, and whether it was read from the log."""

    number: int
    """1 for the first attempt."""
    fresh: bool
    """Every aggregate was read from the log now (not taken from the cache or a read model)."""
    loaded: dict[AggregateRef, Loaded] = field(default_factory=dict)

    def __getitem__(self, ref: AggregateRef) -> Loaded:
        return self.loaded[ref]


@dataclass(frozen=True)
class Decided:
    """How it ended: ``written`` (None when the decision asked for no append) and the last
    attempt, with the aggregates as saved."""

    written: Written | None
    attempt: Attempt


class Decide(Protocol):
    """Record the decision's events on ``attempt``'s aggregates; return what to append, or
    None for nothing (the object is gone, or the decision is already in the log). May raise a
    :class:`~core.errors.FleetError` to refuse."""

    def __call__(self, attempt: Attempt, /) -> Awaitable[Append | None]: ...


class Load(Protocol):
    """How an aggregate is loaded (by default :meth:`AggregateRepository.load`)."""

    def __call__(
        self, ref: AggregateRef, /, *, fresh: bool, assume_new: bool
    ) -> Awaitable[Loaded]: ...


@dataclass(frozen=True, kw_only=True)
class OnConflict:
    """What to do when an append loses the race to another writer."""

    reload: bool = True
    """Decide again on state read from the log (False: the loader's own view, e.g. a read
    model the caller waited for in ``noticed``)."""
    step_aside_s: float = 0.0
    """At most this long, a random pause before the next attempt, growing with the attempts
    (2 ms x 2^n), so two writers of the same object do not keep colliding in lock-step."""
    noticed: Callable[[int, ConcurrencyConflict], Awaitable[None]] | None = None
    """Called with the attempt's number and the conflict on every lost race, the last too."""


async def decide_and_append(
    repository: AggregateRepository,
    refs: Sequence[AggregateRef],
    decide: Decide,
    *,
    attempts: int,
    dependents: Callable[[Attempt], Iterable[AggregateRef]] | None = None,
    assume_new: Collection[AggregateRef] = (),
    start_fresh: bool = False,
    load: Load | None = None,
    on_conflict: OnConflict = OnConflict(),
) -> Decided:
    """Lock and load ``refs`` (and their ``dependents``), let ``decide`` record its events and
    append them atomically; decide again on conflict, ``attempts`` times in all (see the module
    docstring). ``dependents`` must come after every one of ``refs`` in :func:`lock_order`.

    Raises the decision's refusal, the last :class:`ConcurrencyConflict` when every attempt lost
    its race, or what the append raised otherwise (a timeout: nothing is known to be written).
    """
    loader: Load = load if load is not None else repository.load
    fresh = start_fresh
    confirmed = load is not None  # a caller's own loader answers for its own freshness
    number = 0
    while True:
        number += 1
        attempt = Attempt(number=number, fresh=fresh)
        try:
            written = await _attempt(
                repository, refs, decide, attempt, dependents, assume_new, loader
            )
        except ConcurrencyConflict as lost:
            if on_conflict.noticed is not None:
                await on_conflict.noticed(number, lost)
            if number >= attempts:
                raise
            if on_conflict.step_aside_s > 0:
                await asyncio.sleep(
                    random.uniform(0, min(on_conflict.step_aside_s, 0.002 * 2**number))
                )
            fresh = fresh or on_conflict.reload
            continue
        except Conflict:
            # A version precondition judged on the cache, which may trail the log (another
            # handler wrote since): judge it again on the log.
            if fresh or number >= attempts:
                raise
            fresh = True
            continue
        except FleetError:
            if confirmed:
                raise
            confirmed = True
            try:
                behind = await repository.behind_leader(attempt.loaded.values())
            except (StoreError, *OUTAGE_ERRORS):
                behind = False  # the leader cannot be asked now: the refusal stands
            if not behind:
                raise
            fresh = True
            continue
        return Decided(written, attempt)


async def _attempt(
    repository: AggregateRepository,
    refs: Sequence[AggregateRef],
    decide: Decide,
    attempt: Attempt,
    dependents: Callable[[Attempt], Iterable[AggregateRef]] | None,
    assume_new: Collection[AggregateRef],
    loader: Load,
) -> Written | None:
    held: set[AggregateRef] = set()
    async with _Locks(repository) as locks:
        await locks.take(refs)
        held.update(refs)
        for ref in refs:
            attempt.loaded[ref] = await loader(
                ref, fresh=attempt.fresh, assume_new=not attempt.fresh and ref in assume_new
            )
        if dependents is not None:
            found = [ref for ref in dict.fromkeys(dependents(attempt)) if ref not in held]
            if found:
                last = max(lock_order(ref) for ref in refs)
                early = [str(ref) for ref in found if lock_order(ref) < last]
                if early:
                    raise ValueError(f"dependents {early} come before {refs} in lock order")
                await locks.take(found)
                for ref in found:
                    attempt.loaded[ref] = await loader(ref, fresh=attempt.fresh, assume_new=False)
        try:
            append = await decide(attempt)
        except BaseException:
            for ref in attempt.loaded:
                repository.forget(ref)
            raise
        if append is None:
            return None
        return await repository.save(append.changes, append.provenance)


class _Locks:
    """The repository's locks this attempt holds, taken in :func:`lock_order`."""

    def __init__(self, repository: AggregateRepository) -> None:
        self._locks = repository.locks
        self._held: list[str] = []

    async def take(self, refs: Iterable[AggregateRef]) -> None:
        locks = self._locks
        for ref in sorted(set(refs), key=lock_order):
            subject = ref.subject
            if not locks.try_acquire(subject):  # the common case costs no await
                await locks.acquire(subject)
            self._held.append(subject)

    async def __aenter__(self) -> _Locks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        while self._held:
            self._locks.release(self._held.pop())

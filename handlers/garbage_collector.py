"""The garbage collector: dependents follow their owners, and namespaces take their objects along.

Kubernetes' garbage collector (and the content-deleting half of its namespace controller) as a
fleetlog handler. Why a separate, log-following controller rather than a cascade inside the
gateway: a delete stays a one-aggregate decision (one append, one expectation), and the
cascade is a chain of ordinary, attributed commands — each dependent's ``…Deleted`` names
``system:garbage-collector`` and the owner it followed — that survives any crash, because the
collector re-derives what is left to do from the log.

How data flows:

* It follows the shared cluster projection (``Projection.listeners``) and indexes which objects
  name which owner (``metadata.ownerReferences``: kind, name, uid). A ``…Deleted`` event
  records the owner's fate (its uid and the ``propagation_policy`` the deleter asked for) and
  marks its dependents dirty; a ``NamespaceDeleted`` marks everything in the namespace dirty;
  a created or updated object is dirty itself (it may name an owner that is already gone, or
  sit in a namespace that no longer exists).
* The leader re-decides each dirty object with ``core.meta.ownership.assess`` and acts
  through the command gateway (actor ``system:garbage-collector``): a delete whose reason names
  the owner (or the namespace), or an apply that only drops the references to owners deleted
  with ``Orphan``. Commands carry ``expected_version`` (Kubernetes' uid precondition: a
  dependent re-created meanwhile is never hit by a stale decision) and an idempotency key
  derived from the dependent's uid, so a new leader re-sending a decision is answered with the
  first outcome and a dependent is never deleted twice.
* Recursion needs nothing special: deleting a replica set is a ``…Deleted`` like any other,
  whose dependents (its pods) are then collected in turn.
* An owner that is neither in the projection nor among the fates seen live (deleted before this
  process started, or never existed) is looked up in the log, by its subject: its ``…Created``
  with that uid and the ``…Deleted`` after it say whether, and how, it was deleted. No such
  uid at all means the dependent was created after its owner was gone (or names a uid that
  never was): it is deleted, as Kubernetes does.
* A pod bound to a node that no longer exists is deleted (Kubernetes' pod garbage collector):
  its replica set then replaces it. A ``NodeDeleted`` marks the node's pods dirty.
* Leadership (``fleet_leaders``, role ``garbage-collector``) is renewed every period; whoever
  becomes leader re-assesses every object in the projection, so a leader change or a restart
  catches up with whatever happened meanwhile.

Difference from Kubernetes: ``Foreground`` is carried out as ``Background`` (the owner is gone
at once and its dependents follow), because fleetlog has no ``deletionTimestamp`` or
finalizers yet to keep the owner visible until its dependents are gone. The policy is recorded
and passed on to the dependents' own deletions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import structlog
from nats.aio.client import Client

from core.api.catalog import KINDS
from core.api.causation import caused_by_event
from core.errors import FleetError
from core.meta.ownership import (
    Collection,
    OwnerStatus,
    assess,
    owner_references,
    without_references,
)
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.cancellation import checkpoint
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.leases import LeaderLease
from streams.subjects import event_subject

log = structlog.get_logger(__name__)

ROLE = "garbage-collector"
ACTOR = f"system:{ROLE}"
PERIOD_SECONDS = 5.0
RETRY_SECONDS = 1.0
MAX_IN_FLIGHT = 64
MAX_FATES = 100_000

Key = tuple[str, str, str]
"""(kind, namespace, name) of an object, as the cluster projection keys it."""


def delete_key(uid: str) -> str:
    """The idempotency key of a dependent's deletion: one per uid, whoever leads."""
    return f"{ROLE}.delete.{uid}"


def unown_key(uid: str, version: int) -> str:
    """The idempotency key of removing references from the dependent at ``version``."""
    return f"{ROLE}.unown.{uid}.{version}"


class GarbageCollector:
    def __init__(
        self,
        nc: Client,
        store: EventStore,
        projection: Projection[ClusterModel],
        leader: LeaderLease,
        *,
        period_seconds: float = PERIOD_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._store = store
        self._projection = projection
        self._leader = leader
        self._commands = CommandClient(nc, actor=ACTOR)
        self.period_seconds = period_seconds
        self.retry_seconds = retry_seconds
        self._slots = asyncio.Semaphore(max_in_flight)
        self._wake = asyncio.Event()
        self._uid_of: dict[Key, str] = {}
        self._owners_of: dict[Key, frozenset[Key]] = {}
        self._dependents: dict[Key, set[Key]] = {}
        self._fates: dict[str, OwnerStatus] = {}
        self._dirty: set[Key] = set()
        self._in_flight: set[Key] = set()
        self._redo: set[Key] = set()
        self._retry_at: dict[Key, float] = {}
        self._waiting_on: dict[str, set[Key]] = {}
        self._in_flight_lookups: set[str] = set()
        # key -> (seq, correlation id) of the event that made it due: its deletion's cause.
        self._causes: dict[Key, tuple[int, str | None]] = {}
        self.collected = 0
        self.orphaned = 0

    @classmethod
    async def create(
        cls,
        nc: Client,
        store: EventStore,
        projection: Projection[ClusterModel],
        **options: Any,
    ) -> GarbageCollector:
        leader = await LeaderLease.open(nc, ROLE)
        return cls(nc, store, projection, leader, **options)

    @property
    def leader(self) -> LeaderLease:
        return self._leader

    # -- following the cluster ------------------------------------------------------------------

    def _seed(self) -> None:
        for key in list(self._projection.model.objects):
            self._index(key)

    def _index(self, key: Key) -> None:
        record = self._projection.model.get(*key)
        if record is None:
            self._unindex(key)
            return
        self._uid_of[key] = record.uid
        owners = frozenset(
            owner_key
            for ref in owner_references(record.manifest)
            if (owner_key := _owner_key(key[1], ref)) is not None
        )
        previous = self._owners_of.get(key, frozenset())
        if owners == previous:
            return
        for owner in previous - owners:
            self._drop_dependent(owner, key)
        for owner in owners - previous:
            self._dependents.setdefault(owner, set()).add(key)
        if owners:
            self._owners_of[key] = owners
        else:
            self._owners_of.pop(key, None)

    def _unindex(self, key: Key) -> None:
        self._uid_of.pop(key, None)
        for owner in self._owners_of.pop(key, frozenset()):
            self._drop_dependent(owner, key)

    def _drop_dependent(self, owner: Key, key: Key) -> None:
        dependents = self._dependents.get(owner)
        if dependents is not None:
            dependents.discard(key)
            if not dependents:
                del self._dependents[owner]

    def _on_event(self, event: StoredEvent) -> None:
        e = event.envelope
        due = self._follow(event, (e.kind, e.namespace, e.name))
        if not due:
            return
        cause = (event.seq, e.correlation_id or None)
        for key in due:
            self._causes[key] = cause
        self._dirty.update(due)
        self._wake.set()

    def _follow(self, event: StoredEvent, key: Key) -> set[Key]:
        """Index what the event changed; the objects it makes due for a decision."""
        e = event.envelope
        if e.type == f"{e.kind}Deleted":
            uid = self._uid_of.get(key)
            due = set(self._dependents.get(key, set()))
            self._unindex(key)
            if uid and due:
                self._remember(uid, str(e.payload.get("propagation_policy") or "Background"))
            if e.kind == "Namespace":
                due.update(k for k in self._projection.model.objects if k[1] == e.name)
            elif e.kind == "Node":
                due.update(
                    (r.kind, r.namespace, r.name)
                    for r in self._projection.model.list("Pod")
                    if r.manifest.get("spec", {}).get("nodeName") == e.name
                )
            return due
        if e.type in (f"{e.kind}Created", f"{e.kind}Updated"):
            self._index(key)
            return {key}
        return set()

    def _remember(self, uid: str, fate: str) -> None:
        if len(self._fates) >= MAX_FATES:
            # Forget the oldest: a forgotten fate is found again in the log when needed.
            del self._fates[next(iter(self._fates))]
        self._fates[uid] = fate  # type: ignore[assignment]

    # -- deciding ---------------------------------------------------------------------------------

    def _owner_status(self, namespace: str, ref: Mapping[str, Any]) -> OwnerStatus | None:
        """What became of an owner, from the projection and the fates seen; ``None`` when only
        the log can tell."""
        owner = _owner_key(namespace, ref)
        if owner is None:
            return "unknown"  # a kind fleetlog does not know: leave it alone
        record = self._projection.model.get(*owner)
        uid = str(ref["uid"])
        if record is not None and record.uid == uid:
            return "alive"
        return self._fates.get(uid)

    def decide(self, key: Key) -> Collection | None:
        """The verdict for one object, or ``None`` while an owner's fate is being looked up."""
        model = self._projection.model
        record = model.get(*key)
        if record is None:
            return None
        namespace = key[1]
        deleted_namespace = (
            namespace if namespace and model.get("Namespace", "", namespace) is None else None
        )
        statuses: dict[str, OwnerStatus] = {}
        unresolved = []
        if deleted_namespace is None:
            for ref in owner_references(record.manifest):
                status = self._owner_status(namespace, ref)
                if status is None:
                    unresolved.append(ref)
                else:
                    statuses[str(ref["uid"])] = status
        if unresolved:
            for ref in unresolved:
                self._waiting_on.setdefault(str(ref["uid"]), set()).add(key)
            return None
        node = (record.manifest.get("spec") or {}).get("nodeName") if key[0] == "Pod" else None
        deleted_node = node if node and model.get("Node", "", node) is None else None
        return assess(
            record.manifest,
            lambda ref: statuses[str(ref["uid"])],
            deleted_namespace=deleted_namespace,
            deleted_node=deleted_node,
        )

    async def look_up(self, namespace: str, ref: Mapping[str, Any]) -> OwnerStatus:
        """An owner's fate from its subject in the log: ``alive`` (created, not deleted since),
        the propagation policy it was deleted with, or ``absent`` (no object had that uid)."""
        owner = _owner_key(namespace, ref)
        if owner is None:
            return "unknown"
        kind, owner_ns, name = owner
        uid = str(ref["uid"])
        fate: OwnerStatus = "absent"
        current: str | None = None
        for stored in await self._store.read_subject(event_subject(kind, owner_ns, name)):
            e = stored.envelope
            if e.type == f"{kind}Created":
                current = str(e.payload.get("uid", ""))
                if current == uid:
                    fate = "alive"
            elif e.type == f"{kind}Deleted" and current == uid:
                fate = str(e.payload.get("propagation_policy") or "Background")  # type: ignore[assignment]
                current = None
        return fate

    # -- acting -----------------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follow the cluster and (as leader) collect, until cancelled; leadership is given up
        on the way out."""
        self._seed()
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
                            # A new leader catches up with everything that happened meanwhile.
                            self._dirty.update(self._projection.model.objects)
                            log.info("garbage_collector.leading", holder=self._leader.holder)
                    timeout = max(0.0, renew_at - time.monotonic())
                    if self._leader.is_leader:
                        self._due_retries(now)
                        self._act_on_dirty(tasks)
                        if self._retry_at:
                            next_retry = min(self._retry_at.values())
                            timeout = min(timeout, max(0.0, next_retry - time.monotonic()))
                    else:
                        self._dirty.clear()
                        self._retry_at.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    self._wake.clear()
        finally:
            with contextlib.suppress(ValueError):
                self._projection.listeners.remove(self._on_event)
            await self._leader.resign()

    def _due_retries(self, now: float) -> None:
        for key, at in list(self._retry_at.items()):
            if at <= now:
                del self._retry_at[key]
                self._dirty.add(key)

    def _act_on_dirty(self, tasks: asyncio.TaskGroup) -> None:
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            if key in self._in_flight:
                self._redo.add(key)
                continue
            verdict = self.decide(key)
            if verdict is None or verdict.action == "keep":
                continue
            record = self._projection.model.get(*key)
            assert record is not None
            self._in_flight.add(key)
            tasks.create_task(self._act(key, record.uid, record.manifest, record.version, verdict))
        for uid, waiting in list(self._waiting_on.items()):
            if uid in self._in_flight_lookups:
                continue
            key = next(iter(waiting))
            record = self._projection.model.get(*key)
            ref = next(
                (r for r in owner_references(record.manifest) if str(r["uid"]) == uid), None
            ) if record is not None else None  # fmt: skip
            if ref is None:
                waiting.discard(key)
                if not waiting:
                    del self._waiting_on[uid]
                continue
            self._in_flight_lookups.add(uid)
            tasks.create_task(self._resolve(key[1], ref))

    async def _resolve(self, namespace: str, ref: Mapping[str, Any]) -> None:
        uid = str(ref["uid"])
        try:
            fate = await self.look_up(namespace, ref)
            if fate == "alive":
                # In the log but not yet in the projection: decide again once it has caught up.
                self._schedule_retry(self._waiting_on.pop(uid, set()))
            else:
                self._remember(uid, fate)
                self._dirty.update(self._waiting_on.pop(uid, set()))
        except Exception as exc:  # the log could not be read: try again a little later
            log.warning("garbage_collector.lookup_failed", owner=uid, error=str(exc))
            self._schedule_retry(self._waiting_on.pop(uid, set()))
        finally:
            self._in_flight_lookups.discard(uid)
            self._wake.set()

    def _schedule_retry(self, keys: set[Key]) -> None:
        at = time.monotonic() + self.retry_seconds
        for key in keys:
            self._retry_at[key] = at

    async def _act(
        self,
        key: Key,
        uid: str,
        manifest: dict[str, Any],
        version: int,
        verdict: Collection,
    ) -> None:
        kind, namespace, name = key
        seen = self._causes.pop(key, None)
        cause = (
            caused_by_event(seen[0])
            if seen is not None
            else f"namespace/{namespace}"
            if verdict.reason.startswith("namespace")
            else f"owner/{verdict.removed_uids[0]}"
            if verdict.removed_uids
            else f"{ROLE}/{uid}"
        )
        correlation = seen[1] if seen is not None else None
        retry = False
        try:
            async with self._slots:
                if verdict.action == "delete":
                    outcome = await self._commands.send(
                        kind,
                        "delete",
                        {
                            "name": name,
                            "namespace": namespace,
                            "reason": verdict.reason,
                            "propagationPolicy": verdict.propagation_policy,
                        },
                        idempotency_key=delete_key(uid),
                        expected_version=version,
                        causation_id=cause[:128],
                        correlation_id=correlation,
                    )
                else:
                    outcome = await self._commands.send(
                        kind,
                        "apply",
                        {"manifest": without_references(manifest, verdict.keep_references)},
                        idempotency_key=unown_key(uid, version),
                        expected_version=version,
                        causation_id=cause[:128],
                        correlation_id=correlation,
                    )
            if not outcome.replayed:
                if verdict.action == "delete":
                    self.collected += 1
                else:
                    self.orphaned += 1
            log.info(
                "garbage_collector.collected",
                object=f"{kind}/{namespace}/{name}",
                action=verdict.action,
                reason=verdict.reason,
                replayed=outcome.replayed,
            )
            if outcome.seqs:
                await self._projection.wait_for(max(outcome.seqs))
        except FleetError as exc:
            if exc.code != "not_found":  # not_found: already gone, nothing left to do
                # A conflict (it changed since the decision) or a failure: decide again later.
                retry = True
                log.info(
                    "garbage_collector.retry",
                    object=f"{kind}/{namespace}/{name}",
                    code=exc.code,
                    error=exc.message,
                )
        finally:
            self._in_flight.discard(key)
            if retry:
                self._schedule_retry({key})
            if key in self._redo:
                self._redo.discard(key)
                self._dirty.add(key)
            self._wake.set()


def _owner_key(namespace: str, ref: Mapping[str, Any]) -> Key | None:
    """Where the owner a reference names lives: in the dependent's namespace for namespaced
    kinds, cluster-wide otherwise; ``None`` for a kind fleetlog does not know."""
    kind = str(ref.get("kind", ""))
    info = KINDS.get(kind)
    if info is None:
        return None
    return (kind, namespace if info.namespaced else "", str(ref.get("name", "")))

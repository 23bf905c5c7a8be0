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
* It runs on the shared controller loop (``handlers.controller``), keyed by (kind, namespace,
  name): one decision per object at a time, a conflict decided again a little later, and
  leadership (``fleet_leaders``, role ``garbage-collector``) renewed every period; whoever
  becomes leader re-assesses every object in the projection, so a leader change or a restart
  catches up with whatever happened meanwhile. An owner's fate looked up in the log is looked
  up once, however many dependents wait on it.

Difference from Kubernetes: ``Foreground`` is carried out as ``Background`` (the owner is gone
at once and its dependents follow), because fleetlog has no ``deletionTimestamp`` or
finalizers yet to keep the owner visible until its dependents are gone. The policy is recorded
and passed on to the dependents' own deletions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client

from core.api.catalog import KINDS
from core.errors import FleetError
from core.meta.ownership import (
    Collection,
    OwnerStatus,
    assess,
    owner_references,
    without_references,
)
from handlers.controller import Cause, ControllerLoop, Leadership, LoopOptions
from projections.cluster import ClusterModel, ObjectRecord
from projections.runtime import Projection
from streams.commandbus import CommandClient, Outcome
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.leases import LeaderLease
from streams.subjects import event_subject

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = structlog.get_logger(__name__)

ROLE = "garbage-collector"
ACTOR = f"system:{ROLE}"
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
        *,
        leader: Leadership,
        **options: Unpack[LoopOptions],
    ) -> None:
        options.setdefault("max_in_flight", MAX_IN_FLIGHT)
        self._store = store
        self._projection = projection
        self._commands = CommandClient(nc, actor=ACTOR)
        self._uid_of: dict[Key, str] = {}
        self._owners_of: dict[Key, frozenset[Key]] = {}
        self._dependents: dict[Key, set[Key]] = {}
        self._fates: dict[str, OwnerStatus] = {}
        self._waiting_on: dict[str, set[Key]] = {}
        self._in_flight_lookups: set[str] = set()
        # Every event that makes an object due is its cause (the collector's own deletions
        # too: they are what cascades), hence no kind and no actor.
        self.loop: ControllerLoop[Key] = ControllerLoop(
            role=ROLE,
            projection=projection,
            leader=leader,
            reconcile=self.reconcile,
            keys_of=self._follow,
            all_keys=lambda: list(projection.model.objects),
            **options,
        )
        self.collected = 0
        self.orphaned = 0

    @classmethod
    async def create(
        cls,
        nc: Client,
        store: EventStore,
        projection: Projection[ClusterModel],
        **options: Unpack[LoopOptions],
    ) -> GarbageCollector:
        leader = await LeaderLease.open(nc, ROLE)
        return cls(nc, store, projection, leader=leader, **options)

    @property
    def leader(self) -> Leadership:
        return self.loop.leader

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follow the cluster and (as leader) collect, until cancelled; leadership is given up
        on the way out."""
        self._seed()
        await self.loop.run(ready)

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

    def _follow(self, event: StoredEvent) -> Iterable[Key]:
        """Index what the event changed; the objects it makes due for a decision."""
        e = event.envelope
        key = (e.kind, e.namespace, e.name)
        if e.type == f"{e.kind}Deleted":
            uid = self._uid_of.get(key)
            due = set(self._dependents.get(key, set()))
            self._unindex(key)
            self.loop.forget(key)
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

    async def reconcile(self, key: Key) -> int | None:
        """Decide one object and act on the verdict; when an owner's fate is only in the log,
        look it up (once per owner, however many dependents wait on it)."""
        record = self._projection.model.get(*key)
        if record is None:
            self.loop.forget(key)
            return None
        verdict = self.decide(key)
        if verdict is None:
            await self._resolve_owners_of(key, record)
            return None
        if verdict.action == "keep":
            return None
        return await self._act(key, record, verdict)

    async def _resolve_owners_of(self, key: Key, record: ObjectRecord) -> None:
        """Look up the owners ``key`` waits on that nobody is looking up yet."""
        mine: list[Mapping[str, Any]] = []
        for ref in owner_references(record.manifest):
            uid = str(ref["uid"])
            if key in self._waiting_on.get(uid, ()) and uid not in self._in_flight_lookups:
                self._in_flight_lookups.add(uid)  # now, so no other reconcile starts it too
                mine.append(ref)
        try:
            await asyncio.gather(*(self._resolve(key[1], ref) for ref in mine))
        finally:
            self._in_flight_lookups.difference_update(str(ref["uid"]) for ref in mine)

    async def _resolve(self, namespace: str, ref: Mapping[str, Any]) -> None:
        uid = str(ref["uid"])
        try:
            fate = await self.look_up(namespace, ref)
        except Exception as exc:  # the log could not be read: try again a little later
            log.warning("garbage_collector.lookup_failed", owner=uid, error=str(exc))
            fate = None
        finally:
            self._in_flight_lookups.discard(uid)
        waiting = self._waiting_on.pop(uid, set())
        if fate is None or fate == "alive":
            # Unreadable, or in the log but not yet in the projection: decide again once it
            # has caught up.
            for key in waiting:
                self.loop.mark_after(key, self.loop.retry_seconds)
        else:
            self._remember(uid, fate)
            for key in waiting:
                self.loop.mark(key)

    def _cause_of(self, key: Key, uid: str, verdict: Collection) -> Cause:
        """Why the collector acts on ``key``: the event that made it due, else the verdict's
        reason in words. Used once: the next act needs a cause of its own."""
        seen = self.loop.seen_cause(key)
        self.loop.forget(key)
        if seen is not None:
            return seen
        namespace = key[1]
        cause = (
            f"namespace/{namespace}"
            if verdict.reason.startswith("namespace")
            else f"owner/{verdict.removed_uids[0]}"
            if verdict.removed_uids
            else f"{ROLE}/{uid}"
        )
        return Cause(cause)

    async def _act(self, key: Key, record: ObjectRecord, verdict: Collection) -> int | None:
        """Carry the verdict out; a conflict or refusal is decided again a little later (the
        time returned)."""
        kind, namespace, name = key
        cause = self._cause_of(key, record.uid, verdict)
        try:
            if verdict.action == "delete":
                outcome = await self._delete(record, verdict=verdict, cause=cause)
            else:
                outcome = await self._unown(record, verdict=verdict, cause=cause)
        except FleetError as exc:
            if exc.code == "not_found":
                return None  # already gone, nothing left to do
            # A conflict (it changed since the decision) or a failure: decide again later.
            log.info(
                "garbage_collector.retry",
                object=f"{kind}/{namespace}/{name}",
                code=exc.code,
                error=exc.message,
            )
            return time.time_ns() + int(self.loop.retry_seconds * 1e9)
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
        return None

    async def _delete(self, record: ObjectRecord, *, verdict: Collection, cause: Cause) -> Outcome:
        """Delete a dependent, passing the owner's propagation policy on."""
        return await self._commands.send(
            record.kind,
            "delete",
            {
                "name": record.name,
                "namespace": record.namespace,
                "reason": verdict.reason,
                "propagationPolicy": verdict.propagation_policy,
            },
            idempotency_key=delete_key(record.uid),
            expected_version=record.version,
            causation_id=cause.causation_id[:128],
            correlation_id=cause.correlation_id,
        )

    async def _unown(self, record: ObjectRecord, *, verdict: Collection, cause: Cause) -> Outcome:
        """Drop the references to owners deleted with ``Orphan``; keep the rest."""
        return await self._commands.send(
            record.kind,
            "apply",
            {"manifest": without_references(record.manifest, verdict.keep_references)},
            idempotency_key=unown_key(record.uid, record.version),
            expected_version=record.version,
            causation_id=cause.causation_id[:128],
            correlation_id=cause.correlation_id,
        )


def _owner_key(namespace: str, ref: Mapping[str, Any]) -> Key | None:
    """Where the owner a reference names lives: in the dependent's namespace for namespaced
    kinds, cluster-wide otherwise; ``None`` for a kind fleetlog does not know."""
    kind = str(ref.get("kind", ""))
    info = KINDS.get(kind)
    if info is None:
        return None
    return (kind, namespace if info.namespaced else "", str(ref.get("name", "")))

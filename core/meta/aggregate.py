"""The aggregate base class: an object's consistency boundary, created, replaced and deleted.

Each Kubernetes object (a pod, a node, a deployment …) is one aggregate with its own subject in
the log. The classes are eventsourcing ``BaseAggregate[str]`` subclasses whose events are
pydantic models; their public methods are the *decide* half of the Decider pattern (check the
command against current state, raise a clear error or trigger events) and each event's
``apply`` is the *evolve* half (a fold that never fails): the kind's evolve table
(``core.meta.evolve``), the very functions the cluster read model folds the log with. The
instant of every decision is passed in: nothing here reads a clock. The kinds' own aggregates
(``core.pods.aggregate`` …) extend :class:`Resource` with their events and decisions.

Names in the log are per kind (``PodCreated``, ``DeploymentUpdated``, ``ScaledTo``). A name can
be reused after a delete, so the first event of an aggregate is the eventsourcing "created"
event while a later ``…Created`` (a re-creation) is an ordinary event with the same payload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from eventsourcing.domain import BaseAggregate, CanInitAggregate, CanMutateAggregate
from pydantic import BaseModel, ConfigDict

from core.api import payloads
from core.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    ValidationFailed,
)
from core.meta.diff import changed_paths
from core.meta.evolve import Evolve, replaced
from core.meta.timestamps import stamp_of

_METADATA_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "originator_topic"}
)


class DomainEvent(BaseModel):
    """What eventsourcing needs of every event, as a pydantic model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    originator_id: str
    originator_version: int
    timestamp: datetime

    # Stored as ``<Kind><SUFFIX>`` (``PodCreated``) unless TYPE names it outright (``ScaledTo``).
    SUFFIX: ClassVar[str] = ""
    TYPE: ClassVar[str] = ""


class RecordedEvent(BaseModel):
    """An event as the log gives it back: enough to rebuild an aggregate."""

    model_config = ConfigDict(frozen=True)

    type: str
    version: int
    timestamp: datetime
    payload: dict[str, Any]


def aggregate_id(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


class Resource(BaseAggregate[str]):
    """A Kubernetes-shaped object: a manifest that can be created, replaced and deleted."""

    KIND: ClassVar[str] = ""
    EVOLVE: ClassVar[Mapping[str, Evolve]] = {}
    """The kind's evolve (``core.<kind>.status.EVOLVE``): how each of its events changes the
    manifest. The cluster read model folds the log with the same table (``core.api.evolve``)."""

    class Event(DomainEvent, CanMutateAggregate[str]):
        def apply(self, aggregate: Resource) -> None:
            """The *evolve* of the event's kind, on the manifest; an event that changes more
            (a ledger, a counter) extends this."""
            evolve = aggregate.EVOLVE[type(aggregate).event_type(self)]
            aggregate.manifest = evolve(aggregate, self.__dict__, stamp_of(self.timestamp))

    class Created(Event, payloads.ResourceCreated, CanInitAggregate[str]):
        SUFFIX: ClassVar[str] = "Created"
        originator_topic: str

        def apply(self, aggregate: Resource) -> None:
            aggregate.begin_life(self.manifest, self.uid)
            aggregate.evolve_created(self)

    class Recreated(Event, payloads.ResourceCreated):
        SUFFIX: ClassVar[str] = "Created"

        def apply(self, aggregate: Resource) -> None:
            aggregate.begin_life(self.manifest, self.uid)
            aggregate.evolve_created(self)

    class Updated(Event, payloads.ResourceUpdated):
        SUFFIX: ClassVar[str] = "Updated"

        def apply(self, aggregate: Resource) -> None:
            if any(path.startswith("spec") for path in self.changed):
                aggregate.generation += 1
            aggregate.manifest = replaced(aggregate, self.__dict__, stamp_of(self.timestamp))

    class Deleted(Event, payloads.ResourceDeleted):
        SUFFIX: ClassVar[str] = "Deleted"

        def apply(self, aggregate: Resource) -> None:
            aggregate.deleted = True

    # State lives in plain attributes set by the events; class-level annotations would make
    # eventsourcing turn them into constructor arguments.

    def begin_life(self, manifest: dict[str, Any], uid: str) -> None:
        """State right after a (re-)creation."""
        self.manifest: dict[str, Any] = manifest
        self.uid = uid
        self.deleted = False
        self.generation = 1

    def evolve_created(self, event: DomainEvent) -> None:
        """A kind that shows more than the given manifest from its creation on (a quota's
        usage) evolves it here, with the same function the read model uses."""
        evolve = self.EVOLVE.get(type(self).event_type(event))
        if evolve is not None:
            self.manifest = evolve(self, event.__dict__, stamp_of(event.timestamp))

    @property
    def namespace(self) -> str:
        """The object's namespace ("" for a cluster-scoped kind)."""
        return self.id.split("/", 2)[1]

    @property
    def name(self) -> str:
        return self.id.split("/", 2)[2]

    # -- naming ---------------------------------------------------------------------------

    @classmethod
    def event_type(cls, event: DomainEvent) -> str:
        """The name an event is stored under (``PodCreated``, ``ScaledTo`` …)."""
        return cls._type_name(type(event))

    @classmethod
    def _type_name(cls, event_class: type[DomainEvent]) -> str:
        return event_class.TYPE or f"{cls.KIND}{event_class.SUFFIX}"

    @staticmethod
    def event_payload(event: DomainEvent) -> dict[str, Any]:
        return event.model_dump(mode="json", exclude=_METADATA_FIELDS)

    @classmethod
    def _event_classes(cls) -> dict[str, type[DomainEvent]]:
        cached: dict[str, type[DomainEvent]] | None = cls.__dict__.get("_EVENT_CLASSES")
        if cached is not None:
            return cached
        out: dict[str, type[DomainEvent]] = {}
        for attr in dir(cls):
            value = getattr(cls, attr)
            named = isinstance(value, type) and issubclass(value, DomainEvent)
            if named and (value.SUFFIX or value.TYPE):
                if value.SUFFIX == "Created" and not issubclass(value, CanInitAggregate):
                    continue
                out[cls._type_name(value)] = value
        cls._EVENT_CLASSES = out
        return out

    # -- rebuilding from the log ------------------------------------------------------------

    @classmethod
    def from_history(cls, agg_id: str, history: Iterable[RecordedEvent]) -> Resource | None:
        """Fold recorded events into the aggregate (``None`` if there are none)."""
        classes = cls._event_classes()
        aggregate: Resource | None = None
        for recorded in history:
            event_class = classes.get(recorded.type)
            if event_class is None:
                raise ValidationFailed(f"{recorded.type} is not an event of a {cls.KIND}")
            fields: dict[str, Any] = {
                "originator_id": agg_id,
                "originator_version": recorded.version,
                "timestamp": recorded.timestamp,
                **recorded.payload,
            }
            if aggregate is None:
                if not issubclass(event_class, CanInitAggregate):
                    raise ValidationFailed(f"{agg_id} history starts with {recorded.type}")
                fields["originator_topic"] = _topic(cls)
            elif issubclass(event_class, CanInitAggregate):
                event_class = cls.Recreated
            event = event_class(**fields)
            aggregate = event.mutate(aggregate)  # type: ignore[attr-defined]
        return aggregate

    STATE_IS_MANIFEST: ClassVar[bool] = True
    """Everything this aggregate decides on is in its manifest (so a read model's copy of the
    manifest is a complete snapshot of it)."""

    @classmethod
    def from_snapshot(
        cls, agg_id: str, *, manifest: dict[str, Any], uid: str, version: int, at: datetime
    ) -> Resource:
        """The aggregate as a read model sees it at ``version``: built from its manifest
        alone, without reading its history. Only for kinds whose state is the manifest."""
        if not cls.STATE_IS_MANIFEST:
            raise TypeError(f"a {cls.KIND} holds state beyond its manifest; load its history")
        return cls._from_manifest(agg_id, manifest=manifest, uid=uid, version=version, at=at)

    @classmethod
    def _from_manifest(
        cls, agg_id: str, *, manifest: dict[str, Any], uid: str, version: int, at: datetime
    ) -> Resource:
        # What replaying a Created event at ``version`` does, without building the event:
        # this runs once per binding, where the event machinery was a tenth of the cost.
        aggregate = cls.__new__(cls)
        aggregate.__base_init__(agg_id, version, at)
        aggregate.begin_life(manifest, uid)
        return aggregate

    # -- decisions ----------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return not self.deleted

    @classmethod
    def create(
        cls,
        current: Resource | None,
        *,
        agg_id: str,
        manifest: dict[str, Any],
        uid: str,
        at: datetime,
    ) -> Resource:
        """Create the object; it must not exist (a deleted one may be created again)."""
        if current is not None and current.exists:
            raise AlreadyExists(f"{describe_aggregate(agg_id)} already exists")
        if current is None:
            return cls._create(cls.Created, id=agg_id, manifest=manifest, uid=uid, timestamp=at)
        current.trigger_event(current.Recreated, manifest=manifest, uid=uid, timestamp=at)
        return current

    @classmethod
    def apply_manifest(
        cls,
        current: Resource | None,
        *,
        agg_id: str,
        manifest: dict[str, Any],
        uid: str,
        at: datetime,
    ) -> Resource:
        """Create the object, or replace its manifest; an identical manifest changes nothing."""
        if current is None or not current.exists:
            return cls.create(current, agg_id=agg_id, manifest=manifest, uid=uid, at=at)
        manifest = current.carry_server_fields(manifest)
        changed = changed_paths(current.manifest, manifest)
        if changed:
            current.check_update(changed, manifest)
            current.trigger_event(current.Updated, manifest=manifest, changed=changed, timestamp=at)
        return current

    def delete(self, *, reason: str, at: datetime, propagation_policy: str = "Background") -> None:
        """Delete the object, recording what should become of its dependents (the garbage
        collector acts on ``propagation_policy``: Background, Foreground or Orphan)."""
        self.require_exists()
        self.trigger_event(
            self.Deleted, reason=reason, propagation_policy=propagation_policy, timestamp=at
        )

    def require_exists(self) -> None:
        if not self.exists:
            raise NotFound(f"{describe_aggregate(self.id)} not found (it was deleted)")

    def require_version(self, expected: int | None) -> None:
        if expected is not None and expected != self.version:
            raise Conflict(
                f"{describe_aggregate(self.id)} is at version {self.version}, not {expected}: "
                "re-read it and try again"
            )

    def carry_server_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Fields the server owns (status) survive a client's apply."""
        if "status" in self.manifest and "status" not in manifest:
            manifest = {**manifest, "status": self.manifest["status"]}
        return manifest

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        """Raise InvalidTransition if an update may not change these fields."""


def _topic(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def describe_aggregate(agg_id: str) -> str:
    kind, namespace, name = agg_id.split("/", 2)
    where = f' in namespace "{namespace}"' if namespace else ""
    return f'{kind.lower()} "{name}"{where}'


def timestamp_from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)

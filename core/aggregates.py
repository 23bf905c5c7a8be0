"""Aggregates: the consistency boundary of each object, and the decisions taken on it.

Each Kubernetes object (a pod, a node, a deployment …) is one aggregate with its own subject in
the log. The classes here are eventsourcing ``BaseAggregate[str]`` subclasses whose events are
pydantic models; their public methods are the *decide* half of the Decider pattern (check the
command against current state, raise a clear error or trigger events) and each event's
``apply`` is the *evolve* half (a fold that never fails). The instant of every decision is passed
in: nothing here reads a clock.

Names in the log are per kind (``PodCreated``, ``DeploymentUpdated``, ``ScaledTo``). A name can
be reused after a delete, so the first event of an aggregate is the eventsourcing "created"
event while a later ``…Created`` (a re-creation) is an ordinary event with the same payload.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar

from eventsourcing.domain import BaseAggregate, CanInitAggregate, CanMutateAggregate
from pydantic import BaseModel, ConfigDict

from core import payloads
from core.diff import changed_paths
from core.errors import (
    AlreadyExists,
    Conflict,
    FleetError,
    InvalidTransition,
    NotFound,
    ValidationFailed,
)
from core.podlifecycle import container_outcomes, restart_reason_allowed
from core.quantity import resource_amount
from core.quota import CHARGED, canonical, exceeded_message, hard_amounts, unstated
from core.resources.priorityclass import check_priority_class_update
from core.status import (
    LIFECYCLE_TAINTS,
    ready_status,
    with_container_exited,
    with_container_restarted,
    with_container_started,
    with_generation,
    with_nomination,
    with_pod_readiness,
    with_pod_scheduled,
    with_pod_terminated,
    with_quota_used,
    with_ready_condition,
    with_status_update,
    with_unschedulable,
)

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

    class Event(DomainEvent, CanMutateAggregate[str]):
        pass

    class Created(Event, payloads.ResourceCreated, CanInitAggregate[str]):
        SUFFIX: ClassVar[str] = "Created"
        originator_topic: str

        def apply(self, aggregate: Resource) -> None:
            aggregate.begin_life(self.manifest, self.uid)

    class Recreated(Event, payloads.ResourceCreated):
        SUFFIX: ClassVar[str] = "Created"

        def apply(self, aggregate: Resource) -> None:
            aggregate.begin_life(self.manifest, self.uid)

    class Updated(Event, payloads.ResourceUpdated):
        SUFFIX: ClassVar[str] = "Updated"

        def apply(self, aggregate: Resource) -> None:
            if any(path.startswith("spec") for path in self.changed):
                aggregate.generation += 1
            aggregate.manifest = self.manifest

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
            raise AlreadyExists(f"{_describe(agg_id)} already exists")
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
            raise NotFound(f"{_describe(self.id)} not found (it was deleted)")

    def require_version(self, expected: int | None) -> None:
        if expected is not None and expected != self.version:
            raise Conflict(
                f"{_describe(self.id)} is at version {self.version}, not {expected}: "
                "re-read it and try again"
            )

    def carry_server_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Fields the server owns (status) survive a client's apply."""
        if "status" in self.manifest and "status" not in manifest:
            manifest = {**manifest, "status": self.manifest["status"]}
        return manifest

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        """Raise InvalidTransition if an update may not change these fields."""


PROTECTED_NAMESPACES = frozenset({"default", "kube-system"})
"""Namespaces Kubernetes refuses to delete (its NamespaceLifecycle admission plugin)."""


class Namespace(Resource):
    KIND = "Namespace"

    def delete(self, *, reason: str, at: datetime, propagation_policy: str = "Background") -> None:
        """Delete the namespace (the garbage collector then deletes everything in it);
        ``default`` and ``kube-system`` may not be deleted, as in Kubernetes."""
        name = self.id.split("/", 2)[2]
        if name in PROTECTED_NAMESPACES:
            raise FleetError(
                f'namespace "{name}" may not be deleted: Kubernetes keeps '
                f"{' and '.join(sorted(PROTECTED_NAMESPACES))} for the life of the cluster",
                code="forbidden",
            )
        super().delete(reason=reason, at=at, propagation_policy=propagation_policy)


class Node(Resource):
    KIND = "Node"

    class Ready(Resource.Event, payloads.NodeConditionChanged):
        SUFFIX: ClassVar[str] = "Ready"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_ready_condition(
                aggregate.manifest,
                status=self.status,
                reason=self.reason,
                message=self.message,
                at=self.timestamp,
            )

    class NotReady(Ready):
        SUFFIX: ClassVar[str] = "NotReady"

    @property
    def ready_status(self) -> str:
        return ready_status(self.manifest)

    def set_ready(
        self,
        *,
        status: str,
        reason: str,
        message: str,
        last_heartbeat_ns: int | None,
        grace_seconds: float | None,
        at: datetime,
    ) -> None:
        """Record a change of the Ready condition; the same status again changes nothing."""
        self.require_exists()
        if status not in ("True", "False", "Unknown"):
            raise ValidationFailed(f"Ready must be True, False or Unknown, not {status!r}")
        if status == self.ready_status:
            return
        event = self.Ready if status == "True" else self.NotReady
        self.trigger_event(
            event,
            status=status,
            reason=reason,
            message=message,
            last_heartbeat_ns=last_heartbeat_ns,
            grace_seconds=grace_seconds,
            timestamp=at,
        )

    def carry_server_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Besides status, the taints the lifecycle controller manages survive an apply, and so
        does its Ready condition when the applied status states none (a node agent
        re-registering declares its capacity and its own conditions, not Ready)."""
        manifest = super().carry_server_fields(manifest)
        ready = [
            c
            for c in (self.manifest.get("status") or {}).get("conditions") or []
            if c.get("type") == "Ready"
        ]
        status = manifest.get("status") or {}
        stated = status.get("conditions") or []
        if ready and not any(c.get("type") == "Ready" for c in stated):
            manifest = {**manifest, "status": {**status, "conditions": [*stated, *ready]}}
        managed = [
            t
            for t in self.manifest.get("spec", {}).get("taints") or []
            if t.get("key") in LIFECYCLE_TAINTS
        ]
        if not managed:
            return manifest
        spec = dict(manifest.get("spec", {}))
        own = [t for t in spec.get("taints") or [] if t.get("key") not in LIFECYCLE_TAINTS]
        spec["taints"] = own + managed
        return {**manifest, "spec": spec}

    class Cordoned(Resource.Event, payloads.NodeSchedulingChanged):
        SUFFIX: ClassVar[str] = "Cordoned"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_unschedulable(aggregate.manifest, True)

    class Uncordoned(Resource.Event, payloads.NodeSchedulingChanged):
        SUFFIX: ClassVar[str] = "Uncordoned"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_unschedulable(aggregate.manifest, False)

    class Allocated(Resource.Event, payloads.PodAllocated):
        TYPE: ClassVar[str] = "PodAllocated"

        def apply(self, aggregate: Resource) -> None:
            assert isinstance(aggregate, Node)
            aggregate.allocations[self.pod] = dict(self.requests)
            total = aggregate.allocated_total
            for name, amount in self.requests.items():
                total[name] = total.get(name, 0) + amount

    class Released(Resource.Event, payloads.PodReleased):
        TYPE: ClassVar[str] = "PodReleased"

        def apply(self, aggregate: Resource) -> None:
            assert isinstance(aggregate, Node)
            released = aggregate.allocations.pop(self.pod, None) or {}
            total = aggregate.allocated_total
            for name, amount in released.items():
                total[name] = total.get(name, 0) - amount

    STATE_IS_MANIFEST: ClassVar[bool] = False  # the allocation ledger is not in the manifest

    def begin_life(self, manifest: dict[str, Any], uid: str) -> None:
        super().begin_life(manifest, uid)
        self.allocations: dict[str, dict[str, int]] = {}
        self.allocated_total: dict[str, int] = {}
        """The sum of ``allocations``, kept as they change (it is read on every binding)."""
        self._allocatable: tuple[object, dict[str, int]] = (None, {})

    @classmethod
    def from_ledger(
        cls,
        agg_id: str,
        *,
        manifest: dict[str, Any],
        uid: str,
        version: int,
        allocations: dict[str, dict[str, int]],
        at: datetime,
    ) -> Node:
        """The node as a read model that folds its manifest *and* its allocation ledger sees
        it at ``version`` (the ledger is what :meth:`allocate` guards, so it must be the one
        folded from the same events)."""
        node = cls._from_manifest(agg_id, manifest=manifest, uid=uid, version=version, at=at)
        assert isinstance(node, Node)
        for pod, requests in allocations.items():
            node.allocations[pod] = dict(requests)
            for name, amount in requests.items():
                node.allocated_total[name] = node.allocated_total.get(name, 0) + amount
        return node

    @property
    def allocatable(self) -> dict[str, int]:
        """Allocatable resources in base units (cpu millicores, bytes, pod count, counts)."""
        status = self.manifest.get("status") or {}
        declared = status.get("allocatable") or status.get("capacity") or {}
        source, parsed = self._allocatable
        if source is not declared:
            parsed = {name: resource_amount(name, value) for name, value in declared.items()}
            self._allocatable = (declared, parsed)
        return dict(parsed)

    @property
    def allocated(self) -> dict[str, int]:
        return {name: amount for name, amount in self.allocated_total.items() if amount}

    def allocate(self, *, pod: str, requests: dict[str, int], at: datetime) -> None:
        """Reserve resources for ``pod`` (``namespace/name``); never beyond allocatable.

        This is the guard that makes parallel schedulers safe: it runs on the node's latest
        state, and the binding is appended atomically with it under the node's expectation.
        """
        self.require_exists()
        if pod in self.allocations:
            raise InvalidTransition(f"{pod} already holds resources on node {self.id}")
        requests = {**requests, "pods": 1}
        allocatable, allocated = self.allocatable, self.allocated
        short = sorted(
            name for name, amount in requests.items()
            if amount > 0 and allocated.get(name, 0) + amount > allocatable.get(name, 0)
        )  # fmt: skip
        if short:
            raise InvalidTransition(
                f"node {self.id.rsplit('/', 1)[-1]} cannot fit {pod}: insufficient "
                + ", ".join(short),
                code="insufficient_resources",
            )
        self.trigger_event(self.Allocated, pod=pod, requests=requests, timestamp=at)

    def release(self, *, pod: str, reason: str, at: datetime) -> None:
        """Give back a pod's reservation; releasing an unknown pod changes nothing."""
        if pod in self.allocations:
            self.trigger_event(self.Released, pod=pod, reason=reason, timestamp=at)

    @property
    def unschedulable(self) -> bool:
        return bool(self.manifest.get("spec", {}).get("unschedulable"))

    def cordon(self, *, reason: str, at: datetime) -> None:
        """Mark the node unschedulable; cordoning a cordoned node changes nothing."""
        self.require_exists()
        if not self.unschedulable:
            self.trigger_event(self.Cordoned, reason=reason, timestamp=at)

    def uncordon(self, *, reason: str, at: datetime) -> None:
        """Let the scheduler use the node again; an uncordoned node is left as it is."""
        self.require_exists()
        if self.unschedulable:
            self.trigger_event(self.Uncordoned, reason=reason, timestamp=at)


class Service(Resource):
    KIND = "Service"

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        old_ip = self.manifest.get("spec", {}).get("clusterIP")
        if old_ip and "spec.clusterIP" in changed:
            raise InvalidTransition(
                f"spec.clusterIP is immutable (it is {old_ip})", field="spec.clusterIP"
            )


_POD_MUTABLE_PREFIXES = (
    "metadata.labels",
    "metadata.annotations",
    # Ownership changes as in Kubernetes: the garbage collector orphans a pod by removing the
    # reference to its deleted owner.
    "metadata.ownerReferences",
    "status",
)


def _pod_field_is_mutable(path: str) -> bool:
    if path.startswith(_POD_MUTABLE_PREFIXES):
        return True
    for containers in ("spec.containers[", "spec.initContainers["):
        if path.startswith(containers) and path.endswith("].image"):
            return True
    return path in ("spec.activeDeadlineSeconds", "spec.tolerations")


class Pod(Resource):
    KIND = "Pod"

    class Nominated(Resource.Event, payloads.PodNominated):
        SUFFIX: ClassVar[str] = "Nominated"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_nomination(aggregate.manifest, self.node)

    def nominate(self, *, node: str, victims: list[str], message: str, at: datetime) -> None:
        """Preemption chose ``node`` for this pod once ``victims`` are gone."""
        self.require_exists()
        if self.node_name is not None:
            raise InvalidTransition(f"{_describe(self.id)} is bound; it cannot be nominated")
        self.trigger_event(
            self.Nominated, node=node, victims=list(victims), message=message, timestamp=at
        )

    class Bound(Resource.Event, payloads.PodBound):
        SUFFIX: ClassVar[str] = "Bound"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_pod_scheduled(
                aggregate.manifest, node=self.node, reason="", message="", at=self.timestamp
            )

    class Unschedulable(Resource.Event, payloads.PodUnschedulable):
        SUFFIX: ClassVar[str] = "Unschedulable"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_pod_scheduled(
                aggregate.manifest, node=None, reason="Unschedulable",
                message=self.message, at=self.timestamp,
            )  # fmt: skip

    class ContainerStarted(Resource.Event, payloads.ContainerStarted):
        TYPE: ClassVar[str] = "ContainerStarted"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_container_started(
                aggregate.manifest,
                container=self.container,
                restart_count=self.restart_count,
                at=self.timestamp,
            )

    class Ready(Resource.Event, payloads.PodReadinessChanged):
        SUFFIX: ClassVar[str] = "Ready"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_pod_readiness(
                aggregate.manifest, ready=True, reason=self.reason, at=self.timestamp
            )

    class NotReady(Resource.Event, payloads.PodReadinessChanged):
        SUFFIX: ClassVar[str] = "NotReady"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_pod_readiness(
                aggregate.manifest, ready=False, reason=self.reason, at=self.timestamp
            )

    class ContainerExited(Resource.Event, payloads.ContainerExited):
        TYPE: ClassVar[str] = "ContainerExited"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_container_exited(
                aggregate.manifest,
                container=self.container,
                exit_code=self.exit_code,
                signal=self.signal,
                reason=self.reason,
                message=self.message,
                restart_count=self.restart_count,
                started_at_ns=self.started_at_ns,
                finished_at_ns=self.finished_at_ns,
                at=self.timestamp,
            )

    class ContainerRestarted(Resource.Event, payloads.ContainerRestarted):
        TYPE: ClassVar[str] = "ContainerRestarted"

        def apply(self, aggregate: Resource) -> None:
            _, namespace, name = aggregate.id.split("/", 2)
            aggregate.manifest = with_container_restarted(
                aggregate.manifest,
                container=self.container,
                restart_count=self.restart_count,
                backoff_seconds=self.backoff_seconds,
                namespace=namespace,
                name=name,
                uid=aggregate.uid,
                at=self.timestamp,
            )

    class Succeeded(Resource.Event, payloads.PodTerminated):
        SUFFIX: ClassVar[str] = "Succeeded"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_pod_terminated(
                aggregate.manifest, phase="Succeeded", reason=self.reason,
                message=self.message, at=self.timestamp,
            )  # fmt: skip

    class Failed(Resource.Event, payloads.PodTerminated):
        SUFFIX: ClassVar[str] = "Failed"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_pod_terminated(
                aggregate.manifest, phase="Failed", reason=self.reason,
                message=self.message, at=self.timestamp,
            )  # fmt: skip

    @property
    def node_name(self) -> str | None:
        node = self.manifest.get("spec", {}).get("nodeName")
        return str(node) if node else None

    def container_status(self, container: str) -> dict[str, Any] | None:
        for status in (self.manifest.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == container:
                return dict(status)
        return None

    @property
    def ready(self) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (self.manifest.get("status") or {}).get("conditions") or []
        )

    def _require_on(self, node: str | None, what: str) -> None:
        self.require_exists()
        if self.node_name is None:
            raise InvalidTransition(
                f"{_describe(self.id)} is not bound to a node; it cannot {what}",
                field="spec.nodeName",
            )
        if node is not None and node != self.node_name:
            raise InvalidTransition(
                f"{_describe(self.id)} is bound to node {self.node_name!r}, not {node!r}; "
                f"it cannot {what} there",
                field="spec.nodeName",
            )

    def start_container(
        self, *, container: str, restart_count: int = 0, node: str, at: datetime
    ) -> None:
        """Record that ``container`` runs on ``node``; only a bound pod starts, and only on its
        node. The same start (container and restart count) again changes nothing."""
        self._require_on(node, "start")
        self._require_container(container)
        current = self.container_status(container)
        if current is not None:
            known = int(current.get("restartCount") or 0)
            # The instance already started, or started and ended since: a repeat of its start.
            ended = "terminated" in (current.get("state") or {})
            if restart_count == known and (current.get("started") or ended):
                return
            if restart_count < known:
                raise InvalidTransition(
                    f"container {container!r} of {_describe(self.id)} has restarted {known} "
                    f"times; a start with restart count {restart_count} is out of date"
                )
        self._require_not_terminal(f"start container {container!r}")
        self.trigger_event(
            self.ContainerStarted,
            container=container,
            restart_count=restart_count,
            node=node,
            timestamp=at,
        )

    def mark_ready(self, *, reason: str = "", at: datetime) -> None:
        """Every container is ready; a pod already Ready changes nothing."""
        self._require_on(None, "become ready")
        self._require_not_terminal("become ready")
        names = [c.get("name") for c in self.manifest.get("spec", {}).get("containers") or []]
        waiting = [n for n in names if not (self.container_status(str(n)) or {}).get("started")]
        if waiting:
            raise InvalidTransition(
                f"{_describe(self.id)} cannot be ready: containers not started: "
                + ", ".join(str(n) for n in waiting)
            )
        if not self.ready:
            self.trigger_event(self.Ready, reason=reason, timestamp=at)

    def mark_not_ready(self, *, reason: str, at: datetime) -> None:
        """The pod stopped being Ready; a pod that is not Ready changes nothing."""
        self._require_on(None, "become not ready")
        if self.ready:
            self.trigger_event(self.NotReady, reason=reason, timestamp=at)

    @property
    def phase(self) -> str:
        return str((self.manifest.get("status") or {}).get("phase") or "Pending")

    @property
    def terminal(self) -> bool:
        """Succeeded or Failed: no container of the pod runs again."""
        return self.phase in ("Succeeded", "Failed")

    def _require_not_terminal(self, what: str) -> None:
        if self.terminal:
            raise InvalidTransition(
                f"{_describe(self.id)} has {self.phase.lower()}; it cannot {what}",
                field="status.phase",
            )

    def _require_container(self, container: str) -> None:
        names = [c.get("name") for c in self.manifest.get("spec", {}).get("containers") or []]
        if container not in names:
            raise InvalidTransition(
                f"{_describe(self.id)} has no container {container!r}", field="spec.containers"
            )

    def exit_container(
        self,
        *,
        container: str,
        exit_code: int,
        reason: str,
        node: str,
        restart_count: int = 0,
        signal: int | None = None,
        started_at_ns: int | None = None,
        finished_at_ns: int | None = None,
        message: str = "",
        at: datetime,
    ) -> None:
        """Record that instance ``restart_count`` of ``container`` ended on ``node``. It may
        end running or before it ran (a start that failed); the same end again changes
        nothing; an instance other than the current one is refused."""
        self._require_on(node, "report a container exit")
        self._require_container(container)
        current = self.container_status(container) or {}
        known = int(current.get("restartCount") or 0)
        if restart_count == known and "terminated" in (current.get("state") or {}):
            return
        if restart_count != known:
            raise InvalidTransition(
                f"container {container!r} of {_describe(self.id)} is at restart {known}; "
                f"an exit of restart {restart_count} is "
                + ("out of date" if restart_count < known else "of an instance never started")
            )
        self._require_not_terminal(f"report an exit of container {container!r}")
        self.trigger_event(
            self.ContainerExited, container=container, exit_code=exit_code, signal=signal,
            reason=reason, node=node, restart_count=restart_count, started_at_ns=started_at_ns,
            finished_at_ns=finished_at_ns, message=message, timestamp=at,
        )  # fmt: skip

    def restart_container(
        self,
        *,
        container: str,
        restart_count: int,
        backoff_seconds: float,
        reason: str,
        node: str,
        at: datetime,
    ) -> None:
        """Record the decision to run instance ``restart_count`` (the ended one's count + 1)
        of an ended container after ``backoff_seconds``. The restart policy must allow it
        (probe failures restart under Always and OnFailure); the same restart again changes
        nothing."""
        self._require_on(node, "restart a container")
        self._require_container(container)
        current = self.container_status(container) or {}
        known = int(current.get("restartCount") or 0)
        state = current.get("state") or {}
        ended = state.get("terminated")
        if restart_count == known and ended is None and "lastState" in current:
            return  # this restart was recorded: the container waits for or runs it
        if ended is None:
            raise InvalidTransition(
                f"container {container!r} of {_describe(self.id)} has not ended; "
                "only an ended container is restarted"
            )
        if restart_count != known + 1:
            raise InvalidTransition(
                f"container {container!r} of {_describe(self.id)} ended at restart {known}; "
                f"its restart must have count {known + 1}, not {restart_count}"
            )
        self._require_not_terminal(f"restart container {container!r}")
        policy = str(self.manifest.get("spec", {}).get("restartPolicy") or "Always")
        exit_code = int(ended.get("exitCode") or 0)
        if not restart_reason_allowed(policy, exit_code, reason):
            raise InvalidTransition(
                f"{_describe(self.id)} has restartPolicy {policy}; container {container!r} "
                f"that ended with exit code {exit_code} ({reason}) is not restarted",
                field="spec.restartPolicy",
            )
        self.trigger_event(
            self.ContainerRestarted, container=container, restart_count=restart_count,
            backoff_seconds=backoff_seconds, reason=reason, node=node, timestamp=at,
        )  # fmt: skip

    def succeed(self, *, reason: str = "", message: str = "", at: datetime) -> None:
        """The pod is done: every container ended with exit code 0 and none will run again.
        Succeeding again changes nothing; a Failed pod cannot succeed."""
        self._require_on(None, "succeed")
        if self.phase == "Succeeded":
            return
        self._require_not_terminal("succeed")
        outcomes = container_outcomes(self.manifest)
        if not all(o.state == "terminated" and o.exit_code == 0 for o in outcomes):
            raise InvalidTransition(
                f"{_describe(self.id)} cannot succeed: not every container ended with exit code 0"
            )
        self.trigger_event(self.Succeeded, reason=reason, message=message, timestamp=at)

    def fail(self, *, reason: str, message: str = "", at: datetime) -> None:
        """The pod is done and failed (a container failed and will not be restarted, or the
        pod was stopped: deadline, eviction). Failing again changes nothing; a Succeeded pod
        cannot fail."""
        self._require_on(None, "fail")
        if self.phase == "Failed":
            return
        self._require_not_terminal("fail")
        self.trigger_event(self.Failed, reason=reason, message=message, timestamp=at)

    def bind(
        self,
        *,
        node: str,
        score: int | None,
        feasible_nodes: int | None,
        at: datetime,
        evaluated_nodes: int | None = None,
        plugin_scores: dict[str, int] | None = None,
        weights: dict[str, int] | None = None,
    ) -> None:
        """Place the pod on ``node``; a pod is bound once (binding is not a move). The score
        breakdown is recorded so ``describe`` can say why this node."""
        self.require_exists()
        if self.node_name is not None:
            raise InvalidTransition(
                f"{_describe(self.id)} is already bound to node {self.node_name!r}",
                field="spec.nodeName",
            )
        self.trigger_event(
            self.Bound, node=node, score=score, feasible_nodes=feasible_nodes,
            evaluated_nodes=evaluated_nodes, plugin_scores=dict(plugin_scores or {}),
            weights=dict(weights or {}), timestamp=at,
        )  # fmt: skip

    def mark_unschedulable(self, *, message: str, reasons: dict[str, int], at: datetime) -> None:
        """Record why no node fits; the same message again is not recorded twice."""
        self.require_exists()
        if self.node_name is not None:
            raise InvalidTransition(f"{_describe(self.id)} is bound; it cannot be unschedulable")
        for condition in (self.manifest.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("message") == message:
                return
        self.trigger_event(self.Unschedulable, message=message, reasons=reasons, timestamp=at)

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        for path in changed:
            if not _pod_field_is_mutable(path):
                raise InvalidTransition(
                    "a pod's spec may not change after creation except spec.containers[*].image, "
                    "spec.initContainers[*].image, spec.activeDeadlineSeconds and additions to "
                    f"spec.tolerations; this update changes {path}",
                    field=path,
                )
        if "spec.tolerations" in changed:
            old = self.manifest.get("spec", {}).get("tolerations") or []
            new = manifest.get("spec", {}).get("tolerations") or []
            if any(toleration not in new for toleration in old):
                raise InvalidTransition(
                    "existing tolerations of a pod may not be removed or changed",
                    field="spec.tolerations",
                )


CONTROLLER_ANNOTATION_PREFIX = "deployment.kubernetes.io/"
"""Annotations the deployment controller owns (revision, desired-replicas, max-replicas): a
status update may set them, and a client's apply that does not state them keeps them."""


class Workload(Resource):
    """A kind with a desired replica count and a status its controller records (Deployment,
    ReplicaSet). Its ``metadata.generation`` counts spec changes (scaling included), so a
    controller's ``status.observedGeneration`` says which spec it has acted on."""

    class ScaledTo(Resource.Event, payloads.ScaledTo):
        TYPE: ClassVar[str] = "ScaledTo"

        def apply(self, aggregate: Resource) -> None:
            manifest = copy.deepcopy(aggregate.manifest)
            manifest.setdefault("spec", {})["replicas"] = self.replicas
            aggregate.generation += 1
            aggregate.manifest = with_generation(manifest, aggregate.generation)

    class StatusUpdated(Resource.Event, payloads.StatusUpdated):
        SUFFIX: ClassVar[str] = "StatusUpdated"

        def apply(self, aggregate: Resource) -> None:
            aggregate.manifest = with_status_update(
                aggregate.manifest, self.status, self.annotations
            )

    def begin_life(self, manifest: dict[str, Any], uid: str) -> None:
        super().begin_life(manifest, uid)
        self.generation = int((manifest.get("metadata") or {}).get("generation") or 1)

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
        manifest = with_generation(manifest, 1)
        return super().create(current, agg_id=agg_id, manifest=manifest, uid=uid, at=at)

    def carry_server_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Status, generation and the controller's annotations are the server's."""
        manifest = super().carry_server_fields(manifest)
        metadata = dict(manifest.get("metadata") or {})
        owned = {
            k: v
            for k, v in ((self.manifest.get("metadata") or {}).get("annotations") or {}).items()
            if k.startswith(CONTROLLER_ANNOTATION_PREFIX)
        }
        stated = metadata.get("annotations") or {}
        if owned.keys() - stated.keys():
            metadata["annotations"] = {**owned, **stated}
        spec_changed = manifest.get("spec") != self.manifest.get("spec")
        metadata["generation"] = self.generation + (1 if spec_changed else 0)
        return {**manifest, "metadata": metadata}

    @property
    def replicas(self) -> int:
        return int(self.manifest.get("spec", {}).get("replicas", 1))

    def scale(self, *, replicas: int, reason: str, at: datetime) -> None:
        """Set the desired replica count; the same count again changes nothing."""
        self.require_exists()
        if replicas == self.replicas:
            return
        self.trigger_event(
            self.ScaledTo, replicas=replicas, previous=self.replicas, reason=reason, timestamp=at
        )

    def update_status(
        self, *, status: dict[str, Any] | None, annotations: dict[str, str], at: datetime
    ) -> None:
        """Record what a controller observed (``None``: keep the recorded status, set only the
        annotations); the same again changes nothing."""
        self.require_exists()
        if status is None:
            status = dict(self.manifest.get("status") or {})
        foreign = sorted(k for k in annotations if not k.startswith(CONTROLLER_ANNOTATION_PREFIX))
        if foreign:
            raise InvalidTransition(
                f"a status update may only set {CONTROLLER_ANNOTATION_PREFIX}* annotations, "
                f"not {foreign[0]!r}",
                field="body.annotations",
            )
        if with_status_update(self.manifest, status, annotations) == self.manifest:
            return
        self.trigger_event(self.StatusUpdated, status=status, annotations=annotations, timestamp=at)


class Deployment(Workload):
    KIND = "Deployment"


class ReplicaSet(Workload):
    KIND = "ReplicaSet"


class PriorityClass(Resource):
    KIND = "PriorityClass"

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        check_priority_class_update(changed)


class LimitRange(Resource):
    KIND = "LimitRange"


class ResourceQuota(Resource):
    """A namespace's quota and its usage ledger (pod ``namespace/name`` -> charged amounts).

    The ledger is what :meth:`charge` guards: a pod's create is appended atomically with its
    charge under this aggregate's expectation, so two gateways racing for the last of a quota
    cannot both succeed (the loser's append fails, it decides again on the new ledger, and is
    refused)."""

    KIND = "ResourceQuota"

    class Charged(Resource.Event, payloads.QuotaCharged):
        TYPE: ClassVar[str] = "QuotaCharged"

        def apply(self, aggregate: Resource) -> None:
            assert isinstance(aggregate, ResourceQuota)
            aggregate.book(self.pod, dict(self.amounts))

    class Released(Resource.Event, payloads.QuotaReleased):
        TYPE: ClassVar[str] = "QuotaReleased"

        def apply(self, aggregate: Resource) -> None:
            assert isinstance(aggregate, ResourceQuota)
            aggregate.book(self.pod, None)

    class Updated(Resource.Updated):
        def apply(self, aggregate: Resource) -> None:
            super().apply(aggregate)
            assert isinstance(aggregate, ResourceQuota)
            aggregate.manifest = with_quota_used(aggregate.manifest, aggregate.used)

    STATE_IS_MANIFEST: ClassVar[bool] = False  # the usage ledger is not in the manifest

    def begin_life(self, manifest: dict[str, Any], uid: str) -> None:
        super().begin_life(manifest, uid)
        self.charges: dict[str, dict[str, int]] = {}
        self.used: dict[str, int] = {}
        self.manifest = with_quota_used(manifest, self.used)

    def book(self, pod: str, amounts: dict[str, int] | None) -> None:
        """Fold one ledger change: ``amounts`` replaces the pod's charge (None removes it)."""
        for name, amount in self.charges.pop(pod, {}).items():
            self.used[name] = self.used.get(name, 0) - amount
        if amounts is not None:
            self.charges[pod] = amounts
            for name, amount in amounts.items():
                self.used[name] = self.used.get(name, 0) + amount
        self.manifest = with_quota_used(self.manifest, self.used)

    @property
    def hard(self) -> dict[str, str]:
        return dict((self.manifest.get("spec") or {}).get("hard") or {})

    def carry_server_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """``status`` is the server's: it follows the (new) ``hard`` and the ledger."""
        return with_quota_used(manifest, self.used)

    def charge(
        self, *, pod: str, usage: dict[str, int], pod_manifest: dict[str, Any], at: datetime
    ) -> None:
        """Charge ``pod``'s ``usage`` (``core.quota.pod_usage``); refused, with Kubernetes'
        message, if a resource the quota limits would exceed ``hard`` or a container does not
        state it. A pod charged before (a re-creation) has its old charge replaced."""
        self.require_exists()
        name = self.id.rsplit("/", 1)[-1]
        hard = self.hard
        missing = unstated(pod_manifest, hard)
        if missing:
            raise InvalidTransition(
                f"failed quota: {name}: must specify "
                + "; ".join(f"{res} for: {','.join(names)}" for res, names in missing.items()),
                code="forbidden",
            )
        limits = hard_amounts(hard)
        previous = self.charges.get(pod, {})
        used = {k: self.used.get(k, 0) - previous.get(k, 0) for k in CHARGED}
        over = sorted(
            stated
            for stated in hard
            if (wanted := usage.get(canonical(stated), 0)) > 0
            and used[canonical(stated)] + wanted > limits[canonical(stated)]
        )
        if over:
            raise InvalidTransition(
                exceeded_message(name, usage, used, hard, over), code="forbidden"
            )
        amounts = {k: usage.get(k, 0) for k in CHARGED}
        after = {k: used[k] + amounts[k] for k in CHARGED}
        self.trigger_event(self.Charged, pod=pod, amounts=amounts, used=after, timestamp=at)

    def count(self, *, pod: str, usage: dict[str, int], reason: str, at: datetime) -> None:
        """Count a pod the ledger missed (it existed before the quota): recorded as it is,
        even beyond ``hard`` — recalculation reports usage, admission is what refuses."""
        self.require_exists()
        amounts = {k: usage.get(k, 0) for k in CHARGED}
        previous = self.charges.get(pod, {})
        after = {k: self.used.get(k, 0) - previous.get(k, 0) + amounts[k] for k in CHARGED}
        self.trigger_event(
            self.Charged, pod=pod, amounts=amounts, used=after, reason=reason, timestamp=at
        )

    def release(self, *, pod: str, reason: str, at: datetime) -> None:
        """Give back a pod's charge; releasing a pod that holds none changes nothing."""
        previous = self.charges.get(pod)
        if previous is None or not self.exists:
            return
        after = {k: self.used.get(k, 0) - previous.get(k, 0) for k in CHARGED}
        self.trigger_event(self.Released, pod=pod, reason=reason, used=after, timestamp=at)


AGGREGATES: dict[str, type[Resource]] = {
    cls.KIND: cls
    for cls in (
        Namespace,
        Node,
        Pod,
        Deployment,
        ReplicaSet,
        Service,
        PriorityClass,
        LimitRange,
        ResourceQuota,
    )
}
SCALABLE_KINDS = frozenset({"Deployment", "ReplicaSet"})


def _topic(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _describe(agg_id: str) -> str:
    kind, namespace, name = agg_id.split("/", 2)
    where = f' in namespace "{namespace}"' if namespace else ""
    return f'{kind.lower()} "{name}"{where}'


def timestamp_from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)

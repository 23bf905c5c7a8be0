"""The event catalog: every fact fleetlog records, its schema version, and the upcasters.

Events are immutable facts in the past tense. Each type has a payload model (pydantic) and a
schema version. When a payload shape changes, the new shape gets a new version and an upcaster
that turns the previous version's payload into it; stored events are never rewritten, they are
upcast as they are read. ``upcast`` is on the replay hot path, so the common case (already the
current version) costs one dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import ValidationFailed

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class EventPayload(BaseModel):
    """Base of every event payload: strict, so a misspelt field is a bug found at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceCreated(EventPayload):
    """An object came into existence with this manifest (defaults already applied)."""

    manifest: dict[str, Any]
    uid: str


class ResourceUpdated(EventPayload):
    """An object's manifest was replaced; ``changed`` lists the field paths that differ."""

    manifest: dict[str, Any]
    changed: list[str] = Field(default_factory=list)


class ResourceDeleted(EventPayload):
    """An object was deleted (its name may be used again by a later create).

    ``propagation_policy`` is what the deleter asked for its dependents (Background,
    Foreground or Orphan): the garbage collector reads it from here. Events written before the
    field existed read as Background, Kubernetes' default."""

    reason: str = ""
    propagation_policy: str = "Background"


class ScaledTo(EventPayload):
    """A scalable workload's desired replica count was set, by someone, for a reason."""

    replicas: int = Field(ge=0)
    previous: int = Field(ge=0)
    reason: str = ""


class StatusUpdated(EventPayload):
    """A controller recorded what it observed of a workload (``status``), and set the
    annotations it owns (``deployment.kubernetes.io/revision`` …; an empty value removes one)."""

    status: dict[str, Any]
    annotations: dict[str, str] = Field(default_factory=dict)


class NodeSchedulingChanged(EventPayload):
    """A node was cordoned (no new pods) or uncordoned, by someone, for a reason."""

    reason: str = ""


class NodeConditionChanged(EventPayload):
    """The node lifecycle controller changed a node's Ready condition (and with it the
    not-ready/unreachable taints), recording what it saw: the last heartbeat and the grace."""

    status: str
    reason: str
    message: str = ""
    last_heartbeat_ns: int | None = None
    grace_seconds: float | None = None


class PodBound(EventPayload):
    """The scheduler placed the pod on a node (appended atomically with the node's
    ``PodAllocated``); ``score`` and ``feasible_nodes`` say how the choice was made."""

    node: str
    score: int | None = None
    feasible_nodes: int | None = None
    evaluated_nodes: int | None = None
    plugin_scores: dict[str, int] = Field(default_factory=dict)
    """Each score plugin's normalized score (0-100) for the chosen node, before weighting."""
    weights: dict[str, int] = Field(default_factory=dict)
    """The weight of each score plugin; ``score`` is the sum of weight x plugin score."""


class PodNominated(EventPayload):
    """No node fits the pod, but one will once lower-priority pods are preempted: the pod is
    nominated to ``node`` (``status.nominatedNodeName``) and ``victims`` are evicted for it."""

    node: str
    victims: list[str] = Field(default_factory=list)
    message: str = ""


class PodUnschedulable(EventPayload):
    """No node can take the pod now; ``message`` is the Kubernetes-style summary
    ("0/5 nodes are available: 3 Insufficient cpu, …") and ``reasons`` the counts."""

    message: str
    reasons: dict[str, int] = Field(default_factory=dict)


class ContainerStarted(EventPayload):
    """A container of a bound pod started running on its node (recorded by the node's agent, or
    by the simulator for simulated nodes); ``restart_count`` is 0 for the first start."""

    container: str
    restart_count: int = Field(default=0, ge=0)
    node: str


class ContainerExited(EventPayload):
    """A container instance of a bound pod ended on its node: how (exit code, and the signal
    that killed it: the exit code is then 128 + signal, as the kubelet reports it) and the
    runtime's reason (Completed, Error, OOMKilled). ``restart_count`` names the instance that
    ended; the times are those of the process, when the agent knows them."""

    container: str
    exit_code: int
    signal: int | None = None
    reason: str
    node: str
    restart_count: int = Field(default=0, ge=0)
    started_at_ns: int | None = None
    finished_at_ns: int | None = None
    message: str = ""


class ContainerRestarted(EventPayload):
    """The agent decided to start a new instance of an ended container: ``restart_count`` is
    the new instance's count, ``backoff_seconds`` how long it waits first (CrashLoopBackOff
    when > 0), ``reason`` why the previous one ended (Error, OOMKilled, Completed,
    LivenessProbeFailed, StartupProbeFailed). ContainerStarted follows when it runs."""

    container: str
    restart_count: int = Field(ge=1)
    backoff_seconds: float = Field(default=0.0, ge=0)
    reason: str
    node: str


class PodTerminated(EventPayload):
    """A pod reached a terminal phase (Succeeded or Failed): no container of it will run
    again."""

    reason: str = ""
    message: str = ""


class PodReadinessChanged(EventPayload):
    """A pod became Ready (every container ready) or stopped being Ready, and why."""

    reason: str = ""


class PodAllocated(EventPayload):
    """A node's resources were reserved for a pod: amounts in base units (cpu in millicores,
    memory and ephemeral storage in bytes, ``pods`` 1, extended resources as counts)."""

    pod: str
    requests: dict[str, int]


class PodReleased(EventPayload):
    """A pod's reservation on a node was given back (the pod ended or was deleted)."""

    pod: str
    reason: str = ""


class QuotaCharged(EventPayload):
    """A pod's usage was charged to its namespace's quota (appended atomically with the
    pod's ``PodCreated``): ``amounts`` in base units (cpu millicores, memory bytes, pods 1);
    ``used`` is the quota's total after the charge, recorded for the audit trail."""

    pod: str
    amounts: dict[str, int]
    used: dict[str, int] = Field(default_factory=dict)
    reason: str = ""
    """Empty for an admission charge; why the quota controller counted a pod otherwise."""


class QuotaReleased(EventPayload):
    """A pod's charge was given back to the quota (the pod was deleted or finished);
    ``used`` is the quota's total after the release."""

    pod: str
    reason: str = ""
    used: dict[str, int] = Field(default_factory=dict)


class EventType(BaseModel):
    """One entry of the catalog."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    schema_version: int
    payload: type[EventPayload]


RESOURCE_KINDS = (
    "Namespace",
    "Node",
    "Pod",
    "Deployment",
    "ReplicaSet",
    "Service",
    "PriorityClass",
    "LimitRange",
    "ResourceQuota",
)


STATUS_KINDS = ("Deployment", "ReplicaSet")
"""Kinds whose ``status`` a controller records with a ``…StatusUpdated`` event."""


def _catalog() -> dict[str, EventType]:
    entries: list[EventType] = []
    for kind in RESOURCE_KINDS:
        entries += [
            EventType(name=f"{kind}Created", schema_version=1, payload=ResourceCreated),
            EventType(name=f"{kind}Updated", schema_version=1, payload=ResourceUpdated),
            EventType(name=f"{kind}Deleted", schema_version=1, payload=ResourceDeleted),
        ]
    entries.append(EventType(name="ScaledTo", schema_version=1, payload=ScaledTo))
    for kind in STATUS_KINDS:
        entries.append(
            EventType(name=f"{kind}StatusUpdated", schema_version=1, payload=StatusUpdated)
        )
    entries.append(EventType(name="NodeCordoned", schema_version=1, payload=NodeSchedulingChanged))
    entries.append(EventType(name="NodeReady", schema_version=1, payload=NodeConditionChanged))
    entries.append(EventType(name="PodBound", schema_version=1, payload=PodBound))
    entries.append(EventType(name="PodUnschedulable", schema_version=1, payload=PodUnschedulable))
    entries.append(EventType(name="PodNominated", schema_version=1, payload=PodNominated))
    entries.append(EventType(name="ContainerStarted", schema_version=1, payload=ContainerStarted))
    entries.append(EventType(name="ContainerExited", schema_version=1, payload=ContainerExited))
    entries.append(
        EventType(name="ContainerRestarted", schema_version=1, payload=ContainerRestarted)
    )
    entries.append(EventType(name="PodSucceeded", schema_version=1, payload=PodTerminated))
    entries.append(EventType(name="PodFailed", schema_version=1, payload=PodTerminated))
    entries.append(EventType(name="PodReady", schema_version=1, payload=PodReadinessChanged))
    entries.append(EventType(name="PodNotReady", schema_version=1, payload=PodReadinessChanged))
    entries.append(EventType(name="PodAllocated", schema_version=1, payload=PodAllocated))
    entries.append(EventType(name="PodReleased", schema_version=1, payload=PodReleased))
    entries.append(EventType(name="NodeNotReady", schema_version=1, payload=NodeConditionChanged))
    entries.append(
        EventType(name="NodeUncordoned", schema_version=1, payload=NodeSchedulingChanged)
    )
    entries.append(EventType(name="QuotaCharged", schema_version=1, payload=QuotaCharged))
    entries.append(EventType(name="QuotaReleased", schema_version=1, payload=QuotaReleased))
    return {entry.name: entry for entry in entries}


CATALOG: dict[str, EventType] = _catalog()


class Upcasters:
    """Chains of ``(type, from_version) -> payload of from_version + 1``.

    ``current_versions`` says which version each type is written with today; a payload of an
    older version is walked up one step at a time.
    """

    def __init__(self, current_versions: dict[str, int]) -> None:
        self._current = current_versions
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: the function upcasts ``type_name`` payloads from ``from_version``."""

        def decorate(step: Upcaster) -> Upcaster:
            key = (type_name, from_version)
            if key in self._steps:
                raise ValueError(f"an upcaster for {type_name} v{from_version} already exists")
            if from_version >= self._current.get(type_name, 1):
                raise ValueError(f"{type_name} v{from_version} is not older than the current one")
            self._steps[key] = step
            return step

        return decorate

    def upcast(self, type_name: str, version: int, payload: Payload) -> tuple[int, Payload]:
        """Bring ``payload`` from ``version`` to the current version of ``type_name``."""
        current = self._current.get(type_name)
        if current is None or version == current:
            return version, payload
        if version > current:
            raise ValidationFailed(
                f"{type_name} schema version {version} is newer than this build knows "
                f"({current}); upgrade fleetlog to read it"
            )
        while version < current:
            step = self._steps.get((type_name, version))
            if step is None:
                raise ValidationFailed(f"no upcaster for {type_name} from version {version}")
            payload = step(payload)
            version += 1
        return version, payload


UPCASTERS = Upcasters({name: entry.schema_version for name, entry in CATALOG.items()})


def upcast_needed(type_name: str, version: int) -> bool:
    """Whether a payload of ``type_name`` read at ``version`` is not current (a type without
    versions never is): the check a reader makes before calling :func:`upcast`."""
    return UPCASTERS._current.get(type_name, version) != version


def upcast(type_name: str, version: int, payload: Payload) -> tuple[int, Payload]:
    """Upcast an event payload read from the log to the current schema."""
    upcasters = UPCASTERS
    if upcasters._current.get(type_name, version) == version:
        return version, payload  # the common case: current (or a type without versions)
    return upcasters.upcast(type_name, version, payload)


def schema_version(type_name: str) -> int:
    """The schema version new events of ``type_name`` are written with."""
    entry = CATALOG.get(type_name)
    if entry is None:
        raise ValidationFailed(f"unknown event type {type_name!r}")
    return entry.schema_version

"""The event catalog: every fact fleetlog records, its schema version, and the upcasters.

Events are immutable facts in the past tense. Each type has a schema version and a payload
model (pydantic, in ``core.api.payloads``). When a payload shape changes, the new shape gets a new
version and an upcaster that turns the previous version's payload into it; stored events are
never rewritten, they are upcast as they are read. ``upcast`` is on the replay hot path, so the
common case (already the current version) costs one dict lookup.

Why the payload models live elsewhere: every reader of the log decodes envelopes, and decoding
needs the versions and upcasters but never the models. Keeping pydantic out of this module keeps
it out of read-only processes such as ``fleetlog history``, whose start-up is what its user
waits for; the writers (the aggregates) import the models from ``core.api.payloads``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import ValidationFailed

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


@dataclass(frozen=True)
class EventType:
    """One entry of the catalog."""

    name: str
    schema_version: int
    payload: str
    """The name of its payload model in ``core.api.payloads`` (which checks that it exists)."""


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
    "EndpointSlice",
    "IPAddress",
    "NodePortAllocation",
    "PodCIDR",
)


STATUS_KINDS = ("Deployment", "ReplicaSet")
"""Kinds whose ``status`` a controller records with a ``…StatusUpdated`` event."""


def _catalog() -> dict[str, EventType]:
    entries: list[EventType] = []
    for kind in RESOURCE_KINDS:
        entries += [
            EventType(name=f"{kind}Created", schema_version=1, payload="ResourceCreated"),
            EventType(name=f"{kind}Updated", schema_version=1, payload="ResourceUpdated"),
            EventType(name=f"{kind}Deleted", schema_version=1, payload="ResourceDeleted"),
        ]
    entries.append(EventType(name="ScaledTo", schema_version=1, payload="ScaledTo"))
    for kind in STATUS_KINDS:
        entries.append(
            EventType(name=f"{kind}StatusUpdated", schema_version=1, payload="StatusUpdated")
        )
    entries += [
        EventType(name="NodeCordoned", schema_version=1, payload="NodeSchedulingChanged"),
        EventType(name="NodeReady", schema_version=1, payload="NodeConditionChanged"),
        EventType(name="PodBound", schema_version=1, payload="PodBound"),
        EventType(name="PodUnschedulable", schema_version=1, payload="PodUnschedulable"),
        EventType(name="PodNominated", schema_version=1, payload="PodNominated"),
        EventType(name="ContainerStarted", schema_version=1, payload="ContainerStarted"),
        EventType(name="ContainerExited", schema_version=1, payload="ContainerExited"),
        EventType(name="ContainerRestarted", schema_version=1, payload="ContainerRestarted"),
        EventType(name="ContainerWaiting", schema_version=1, payload="ContainerWaiting"),
        EventType(name="PodSucceeded", schema_version=1, payload="PodTerminated"),
        EventType(name="PodFailed", schema_version=1, payload="PodTerminated"),
        EventType(name="PodReady", schema_version=1, payload="PodReadinessChanged"),
        EventType(name="PodNotReady", schema_version=1, payload="PodReadinessChanged"),
        EventType(name="PodAllocated", schema_version=1, payload="PodAllocated"),
        EventType(name="PodReleased", schema_version=1, payload="PodReleased"),
        EventType(name="NodeNotReady", schema_version=1, payload="NodeConditionChanged"),
        EventType(name="NodeUncordoned", schema_version=1, payload="NodeSchedulingChanged"),
        EventType(name="QuotaCharged", schema_version=1, payload="QuotaCharged"),
        EventType(name="QuotaReleased", schema_version=1, payload="QuotaReleased"),
        EventType(name="NodePodCIDRAssigned", schema_version=1, payload="NodePodCIDRAssigned"),
        EventType(name="NodePodCIDRRefused", schema_version=1, payload="NodePodCIDRRefused"),
        EventType(name="PodIPAssigned", schema_version=1, payload="PodIPAssigned"),
    ]
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

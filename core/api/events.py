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


class UnknownSchemaVersion(ValidationFailed):
    """A stored payload's schema version cannot be brought to the current one: it is newer
    than this build knows (written by a later release), or no upcaster leads from it."""


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
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "User",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "ServiceEntry",
    "PeerAuthentication",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "VerticalPodAutoscaler",
)


STATUS_KINDS = (
    "Deployment",
    "ReplicaSet",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "VerticalPodAutoscaler",
)
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
        EventType(name="PodResized", schema_version=1, payload="PodResized"),
        EventType(name="PodResizeAllocated", schema_version=1, payload="PodResizeAllocated"),
        EventType(name="PodResizePending", schema_version=1, payload="PodResizePending"),
        EventType(name="PodResizeActuated", schema_version=1, payload="PodResizeActuated"),
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
            raise UnknownSchemaVersion(
                f"{type_name} schema version {version} is newer than this build knows "
                f"({current}); upgrade fleetlog to read it"
            )
        while version < current:
            step = self._steps.get((type_name, version))
            if step is None:
                raise UnknownSchemaVersion(f"no upcaster for {type_name} from version {version}")
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


# -- what a reader checks before folding --------------------------------------------------------

_NONE = type(None)
_NUMBER = (int, float)
_FIELDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    # payload model -> field -> (accepted types, required); tests/unit/test_catalogs.py holds
    # it to the pydantic models of core.api.payloads, which readers must not import.
    "ResourceCreated": {"manifest": ((dict,), True), "uid": ((str,), True)},
    "ResourceUpdated": {"manifest": ((dict,), True), "changed": ((list,), False)},
    "ResourceDeleted": {"reason": ((str,), False), "propagation_policy": ((str,), False)},
    "ScaledTo": {
        "replicas": ((int,), True), "previous": ((int,), True), "reason": ((str,), False),
        "why": ((dict, _NONE), False),
    },
    "StatusUpdated": {
        "status": ((dict,), True), "annotations": ((dict,), False), "why": ((dict, _NONE), False),
    },
    "NodeSchedulingChanged": {"reason": ((str,), False)},
    "NodeConditionChanged": {
        "status": ((str,), True), "reason": ((str,), True), "message": ((str,), False),
        "last_heartbeat_ns": ((int, _NONE), False), "grace_seconds": ((*_NUMBER, _NONE), False),
    },
    "PodBound": {
        "node": ((str,), True), "score": ((int, _NONE), False),
        "feasible_nodes": ((int, _NONE), False), "evaluated_nodes": ((int, _NONE), False),
        "plugin_scores": ((dict,), False), "weights": ((dict,), False),
    },
    "PodNominated": {
        "node": ((str,), True), "victims": ((list,), False), "message": ((str,), False),
    },
    "PodUnschedulable": {"message": ((str,), True), "reasons": ((dict,), False)},
    "ContainerStarted": {
        "container": ((str,), True), "restart_count": ((int,), False), "node": ((str,), True),
    },
    "ContainerExited": {
        "container": ((str,), True), "exit_code": ((int,), True), "signal": ((int, _NONE), False),
        "reason": ((str,), True), "node": ((str,), True), "restart_count": ((int,), False),
        "started_at_ns": ((int, _NONE), False), "finished_at_ns": ((int, _NONE), False),
        "message": ((str,), False),
    },
    "ContainerRestarted": {
        "container": ((str,), True), "restart_count": ((int,), True),
        "backoff_seconds": (_NUMBER, False), "reason": ((str,), True), "node": ((str,), True),
    },
    "ContainerWaiting": {
        "container": ((str,), True), "reason": ((str,), True), "message": ((str,), False),
        "node": ((str,), True),
    },
    "PodTerminated": {"reason": ((str,), False), "message": ((str,), False)},
    "PodReadinessChanged": {"reason": ((str,), False)},
    "PodAllocated": {"pod": ((str,), True), "requests": ((dict,), True)},
    "PodReleased": {"pod": ((str,), True), "reason": ((str,), False)},
    "QuotaCharged": {
        "pod": ((str,), True), "amounts": ((dict,), True), "used": ((dict,), False),
        "reason": ((str,), False),
    },
    "QuotaReleased": {"pod": ((str,), True), "reason": ((str,), False), "used": ((dict,), False)},
    "NodePodCIDRAssigned": {"pod_cidr": ((str,), True), "cluster_cidr": ((str,), True)},
    "NodePodCIDRRefused": {
        "pod_cidr": ((str, _NONE), False), "reason": ((str,), True), "message": ((str,), True),
    },
    "PodIPAssigned": {
        "node": ((str,), True), "pod_ips": ((list,), True), "host_ip": ((str,), True),
        "host_network": ((bool,), False), "message": ((str,), False),
    },
    "PodResized": {"before": ((dict,), True), "after": ((dict,), True)},
    "PodResizeAllocated": {
        "node": ((str,), True), "allocated": ((dict,), True), "restarts": ((list,), False),
    },
    "PodResizePending": {
        "node": ((str,), True), "reason": ((str,), True), "message": ((str,), False),
        "allocated": ((dict,), False),
    },
    "PodResizeActuated": {
        "node": ((str,), True), "resources": ((dict,), True), "error": ((str,), False),
    },
}  # fmt: skip
PAYLOAD_FIELDS = _FIELDS
"""Each payload model's fields as a reader checks them: (accepted types, required)."""

_REQUIRED: dict[str, tuple[tuple[str, tuple[type, ...]], ...]] = {
    entry.name: tuple(
        (name, types) for name, (types, required) in _FIELDS[entry.payload].items() if required
    )
    for entry in CATALOG.values()
}
_MISSING = object()


def payload_problem(type_name: str, payload: Payload) -> str | None:
    """Why an (upcast) event of ``type_name`` with ``payload`` cannot be folded, or None.

    What every fold relies on: the type is in the catalog and each required field is there
    with its type. Optional fields are not looked at (a few lookups per event is what the
    replay path can afford; a fold that still raises on one is caught by the projection
    runtime). A light check, without pydantic."""
    required = _REQUIRED.get(type_name)
    if required is None:
        return f"unknown event type {type_name!r}"
    for key, accepted in required:
        if not isinstance(payload.get(key, _MISSING), accepted):
            return _what_is_wrong(type_name, payload, required)
    return None


def _what_is_wrong(
    type_name: str, payload: Payload, required: tuple[tuple[str, tuple[type, ...]], ...]
) -> str:
    missing = [key for key, _ in required if key not in payload]
    if missing:
        return f"{type_name} payload lacks {', '.join(sorted(missing))}"
    key = next(key for key, accepted in required if not isinstance(payload[key], accepted))
    return f"{type_name} payload field {key} is a {type(payload[key]).__name__}"

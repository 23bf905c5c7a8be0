"""In-place pod resize (Kubernetes' ``InPlacePodVerticalScaling``, KEP 1287): which resizes the
API accepts, whether the node can take one, and what its containers must do to apply it.

Why this exists: a pod's container resources change after creation only through the
``resize`` command (kube's ``pods/resize`` subresource), and three writers must agree on what a
resize is. The gateway validates it as kube-apiserver's ``ValidatePodResize`` does and records
the desired resources (``PodResized``, before and after); the node agent decides, as the
kubelet does, whether the node can hold it (``Infeasible`` when it never could, ``Deferred``
when not now) and which containers restart (``resizePolicy``); the read model folds the
conditions (``PodResizePending``, ``PodResizeInProgress``) and the allocated and actual
resources into ``status``. Everything here is pure: specs and amounts in, decisions out.

The resource states are the KEP's: *desired* (``spec.containers[].resources``), *allocated*
(what the agent admitted: ``status.containerStatuses[].allocatedResources``, and reserved on
the node's ledger) and *actual* (what the cgroup holds: ``containerStatuses[].resources``).

Rules, from ``pkg/apis/core/validation`` (``ValidatePodResize``) as of Kubernetes 1.34:

* only the resources of regular containers and of sidecars (init containers with
  ``restartPolicy: Always``) change; a non-sidecar init container's are immutable;
* only cpu and memory change; other resources and every other field stay as they are;
* a cpu or memory request or limit the container has cannot be removed;
* the new resources must be valid as on create (requests not above limits);
* the pod's QoS class must not change;
* a memory limit may be lowered with either ``resizePolicy`` (1.33 refused it for
  ``NotRequired``; 1.34 allows it and the kubelet refuses to apply a limit below the current
  usage: here, the agent keeps the resize in progress with reason ``Error``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import ValidationError

from core.errors import FieldError, ValidationFailed
from core.meta.model import invalid, to_validation_failed
from core.meta.quantity import resource_amount
from core.pods.qos import pod_qos_class
from core.pods.resources import ResourceRequirements

RESIZABLE: Final = ("cpu", "memory")
PENDING: Final = "PodResizePending"
IN_PROGRESS: Final = "PodResizeInProgress"
INFEASIBLE: Final = "Infeasible"
DEFERRED: Final = "Deferred"
ERROR: Final = "Error"
NOT_REQUIRED: Final = "NotRequired"
RESTART_CONTAINER: Final = "RestartContainer"
QOS_CHANGE: Final = "Pod QOS Class may not change as a result of resizing"
ONLY_CPU_MEMORY: Final = "only cpu and memory resources are mutable"
INIT_IMMUTABLE: Final = "resources for non-sidecar init containers are immutable"

Resources = dict[str, Any]
"""A container's ``resources`` as stored: ``{"requests": {...}, "limits": {...}}``."""


@dataclass(frozen=True, slots=True)
class ResizeChange:
    """What an accepted resize changes: each changed container's resources before and after
    (containers whose resources stay are left out), and the pod's new spec."""

    before: dict[str, Resources]
    after: dict[str, Resources]
    spec: dict[str, Any]

    @property
    def empty(self) -> bool:
        return not self.after


def desired_resources(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Container name -> its desired resources: regular containers and sidecars (the ones a
    resize may change)."""
    spec = manifest.get("spec") or {}
    out = {c["name"]: dict(c.get("resources") or {}) for c in spec.get("containers") or ()}
    for c in spec.get("initContainers") or ():
        if c.get("restartPolicy") == "Always":
            out[c["name"]] = dict(c.get("resources") or {})
    return out


def _sections(resources: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    resources = resources or {}
    return {
        section: dict(resources.get(section) or {})
        for section in ("requests", "limits")
        if resources.get(section)
    }


def _without_resizable(resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """The resources a resize must leave alone: everything but cpu and memory."""
    kept: dict[str, Any] = {
        k: v for k, v in (resources or {}).items() if k not in ("requests", "limits")
    }
    for section, values in _sections(resources).items():
        rest = {name: value for name, value in values.items() if name not in RESIZABLE}
        if rest:
            kept[section] = rest
    return kept


def _normalized(resources: Mapping[str, Any] | None, prefix: tuple[str | int, ...]) -> Resources:
    """``resources`` validated as on create (a limit without a request sets the request)."""
    try:
        model = ResourceRequirements.model_validate(dict(resources or {}))
    except ValidationError as err:
        raise to_validation_failed(err, prefix=prefix) from None
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def resized_spec(spec: Mapping[str, Any], wanted: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``spec`` with the resources of the containers ``wanted`` names (``[{"name", "resources"}]``,
    regular or init containers; what the ``resize`` command carries) replaced. A name the pod
    has no container of is refused."""
    out = copy.deepcopy(dict(spec))
    index = {
        container["name"]: (section, i)
        for section in ("containers", "initContainers")
        for i, container in enumerate(out.get(section) or [])
    }
    for n, entry in enumerate(wanted):
        name = entry.get("name")
        if name not in index:
            raise ValidationFailed(
                f'Not found: "{name}": the pod has no container of that name',
                field=f"body.containers[{n}].name",
            )
        section, i = index[name]
        out[section][i]["resources"] = dict(entry.get("resources") or {})
    return out


def validate_resize(
    spec: Mapping[str, Any], new_spec: Mapping[str, Any], *, qos_class: str | None = None
) -> ResizeChange:
    """Kube's ``ValidatePodResize`` of ``new_spec`` against the pod's ``spec``; raises
    ``ValidationFailed`` listing every problem at its path. ``qos_class`` is the class the
    pod was created with (``status.qosClass``; computed from ``spec`` when absent)."""
    problems: list[FieldError] = []
    normalized = copy.deepcopy(dict(new_spec))
    before: dict[str, Resources] = {}
    after: dict[str, Resources] = {}
    for section in ("containers", "initContainers"):
        old_list = list(spec.get(section) or [])
        new_list = list(normalized.get(section) or [])
        if [c.get("name") for c in old_list] != [c.get("name") for c in new_list]:
            problems.append(FieldError(f"spec.{section}", "Forbidden: " + ONLY_CPU_MEMORY))
            continue
        for i, (old, new) in enumerate(zip(old_list, new_list, strict=True)):
            where = f"spec.{section}[{i}].resources"
            try:
                resources = _normalized(new.get("resources"), ("spec", section, i, "resources"))
            except ValidationFailed as exc:
                problems.extend(exc.errors or (FieldError(exc.field, exc.message),))
                continue
            new["resources"] = resources
            old_resources = _sections(old.get("resources"))
            if _sections(resources) == old_resources:
                continue
            if section == "initContainers" and old.get("restartPolicy") != "Always":
                problems.append(FieldError(where, "Forbidden: " + INIT_IMMUTABLE))
                continue
            if _without_resizable(resources) != _without_resizable(old.get("resources")):
                problems.append(FieldError(where, "Forbidden: " + ONLY_CPU_MEMORY))
                continue
            new_sections = _sections(resources)
            for part, word in (("requests", "requests"), ("limits", "limits")):
                removed = [
                    name for name in RESIZABLE
                    if name in old_resources.get(part, {})
                    and name not in new_sections.get(part, {})
                ]  # fmt: skip
                if removed:
                    problems.append(
                        FieldError(
                            f"{where}.{part}[{removed[0]}]",
                            f"Forbidden: resource {word} cannot be removed",
                        )
                    )
            before[old["name"]] = dict(old.get("resources") or {})
            after[old["name"]] = resources
    rest_old = {k: v for k, v in spec.items() if k not in ("containers", "initContainers")}
    rest_new = {k: v for k, v in normalized.items() if k not in ("containers", "initContainers")}
    others_changed = rest_old != rest_new or any(
        _container_without_resources(o) != _container_without_resources(n)
        for section in ("containers", "initContainers")
        for o, n in zip(spec.get(section) or [], normalized.get(section) or [], strict=False)
    )
    if others_changed:
        problems.append(FieldError("spec", "Forbidden: " + ONLY_CPU_MEMORY))
    if not problems:
        was = qos_class or pod_qos_class(spec)
        if pod_qos_class(normalized) != was:
            problems.append(FieldError("spec", invalid(was, QOS_CHANGE)))
    if problems:
        first = problems[0]
        raise ValidationFailed(first.message, field=first.field, errors=problems)
    return ResizeChange(before=before, after=after, spec=normalized)


def _container_without_resources(container: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in container.items() if k != "resources"}


# -- the node's side (the kubelet's ``canResizePod``) --------------------------------------------

Feasibility = Literal["Feasible", "Deferred", "Infeasible"]


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether the node takes a resize now: ``Feasible``, ``Deferred`` (it fits the node's
    allocatable but not beside the other pods now: tried again) or ``Infeasible`` (more than
    the node's allocatable: never, until the resize is changed); the kubelet's message."""

    outcome: Feasibility
    message: str = ""


def resize_admission(
    *,
    allocatable: Mapping[str, int],
    others: Mapping[str, int],
    wanted: Mapping[str, int],
) -> Admission:
    """The kubelet's ``canResizePod``: ``wanted`` (the pod's new requests, in scheduling units)
    against the node's ``allocatable`` (Infeasible, "Node didn't have enough capacity"), then
    against what the other pods on the node hold, ``others`` (Deferred, the admission
    predicate's "Node didn't have enough resource")."""
    for name in ("memory", "cpu"):  # the kubelet names memory first
        asked, capacity = wanted.get(name, 0), allocatable.get(name, 0)
        if asked > capacity:
            return Admission(
                INFEASIBLE,
                f"Node didn't have enough capacity: {name}, requested: {asked}, "
                f"capacity: {capacity}",
            )
    for name in sorted(wanted):
        asked = wanted[name]
        if asked <= 0 or name == "pods":
            continue
        used, capacity = others.get(name, 0), allocatable.get(name, 0)
        if used + asked > capacity:
            return Admission(
                DEFERRED,
                f"Node didn't have enough resource: {name}, requested: {asked}, used: {used}, "
                f"capacity: {capacity}",
            )
    return Admission("Feasible")


# -- applying it (the kubelet's ``computePodResizeAction``) ---------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerResize:
    """What one container's resize needs: its new cgroup settings (cpu limit and request in
    millicores, memory limit in bytes; None = unlimited or unset) and whether it restarts
    (a changed resource whose ``resizePolicy`` is ``RestartContainer``)."""

    name: str
    cpu_limit_millis: int | None
    cpu_request_millis: int | None
    memory_limit_bytes: int | None
    restart: bool


def restart_policy_of(container: Mapping[str, Any], resource: str) -> str:
    """The container's ``resizePolicy`` for ``resource`` (``NotRequired`` when unstated, the
    API server's default)."""
    for entry in container.get("resizePolicy") or ():
        if entry.get("resourceName") == resource:
            return str(entry.get("restartPolicy") or NOT_REQUIRED)
    return NOT_REQUIRED


def _amount(resources: Mapping[str, Any] | None, section: str, name: str) -> int | None:
    value = ((resources or {}).get(section) or {}).get(name)
    return None if value is None else resource_amount(name, value)


def cgroup_settings(
    resources: Mapping[str, Any] | None,
) -> tuple[int | None, int | None, int | None]:
    """(cpu limit millicores, cpu request millicores, memory limit bytes) of ``resources``."""
    return (
        _amount(resources, "limits", "cpu"),
        _amount(resources, "requests", "cpu"),
        _amount(resources, "limits", "memory"),
    )


def plan_container(
    container: Mapping[str, Any], *, actual: Mapping[str, Any] | None
) -> ContainerResize | None:
    """What applying ``container``'s resources (its spec, now allocated) to an instance
    running with ``actual`` takes; None when nothing differs."""
    wanted = container.get("resources") or {}
    if _sections(wanted) == _sections(actual):
        return None
    restart = False
    for name in RESIZABLE:
        changed = any(
            _amount(wanted, section, name) != _amount(actual, section, name)
            for section in ("requests", "limits")
        )
        if changed and restart_policy_of(container, name) == RESTART_CONTAINER:
            restart = True
    cpu_limit, cpu_request, memory_limit = cgroup_settings(wanted)
    return ContainerResize(
        name=str(container["name"]),
        cpu_limit_millis=cpu_limit,
        cpu_request_millis=cpu_request,
        memory_limit_bytes=memory_limit,
        restart=restart,
    )


def condition(conditions: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    """The pod's condition of type ``kind``, if it has one."""
    return next((c for c in conditions if c.get("type") == kind), None)

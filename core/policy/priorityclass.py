"""The PriorityClass (scheduling.k8s.io/v1): a named pod priority and its preemption policy.

Why this exists: pods do not state their priority as a number; they name a class
(``priorityClassName``), and admission turns that name into ``spec.priority`` and
``spec.preemptionPolicy`` (``core.policy.admission.resolve_priority``), which the scheduler
orders its queue by and preemption compares. The rules are those of
``pkg/apis/scheduling/validation``: a user-defined class may not exceed 1,000,000,000, and names
starting with ``system-`` are reserved for the two built-in classes (``system-cluster-critical``
and ``system-node-critical``), which exist without being created (the API server creates them
at start-up).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, Self

from pydantic import Field, model_validator

from core.errors import InvalidTransition
from core.meta.model import field_error
from core.meta.names import dns1123_subdomain_errors
from core.meta.types import ObjectMeta, ResourceBase
from core.policy.systemclasses import (
    HIGHEST_USER_DEFINABLE_PRIORITY,
    SYSTEM_CLASS_MANIFESTS,
    SYSTEM_CLUSTER_CRITICAL,
    SYSTEM_CRITICAL_PRIORITY,
    SYSTEM_NODE_CRITICAL,
)

PreemptionPolicy = Literal["PreemptLowerPriority", "Never"]

SYSTEM_PRIORITY_CLASS_PREFIX: Final = "system-"
DEFAULT_PRIORITY: Final = 0
"""``scheduling.DefaultPriorityWhenNoDefaultClassExists``."""

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class PriorityClass(ResourceBase):
    """A priority class (scheduling.k8s.io/v1, cluster-scoped). No ``spec``: the fields are
    top-level, as in Kubernetes."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)
    NAMESPACED = False

    api_version: Literal["scheduling.k8s.io/v1"] = "scheduling.k8s.io/v1"
    kind: Literal["PriorityClass"] = "PriorityClass"
    value: Int32
    global_default: bool = False
    description: str | None = None
    preemption_policy: PreemptionPolicy = "PreemptLowerPriority"

    @model_validator(mode="after")
    def _check_value(self) -> Self:
        name = self.metadata.name or ""
        if name.startswith(SYSTEM_PRIORITY_CLASS_PREFIX):
            problem = _system_class_problem(name, self.value, self.global_default)
            if problem:
                raise field_error(
                    f"Forbidden: priority class names with '{SYSTEM_PRIORITY_CLASS_PREFIX}' "
                    f"prefix are reserved for system use only. error: {problem}",
                    "metadata",
                    "name",
                )
        elif self.value > HIGHEST_USER_DEFINABLE_PRIORITY:
            raise field_error(
                "Forbidden: maximum allowed value of a user defined priority is "
                f"{HIGHEST_USER_DEFINABLE_PRIORITY}",
                "value",
            )
        return self


def _system_class_problem(name: str, value: int, global_default: bool) -> str:
    """``IsKnownSystemPriorityClass``: "" when ``name`` is a built-in class stated exactly."""
    known = SYSTEM_PRIORITY_CLASSES.get(name)
    if known is None:
        return f"{name} is not a known system priority class"
    if known.value != value:
        return f"value of {name} PriorityClass must be {known.value}"
    if known.global_default != global_default:
        return f"globalDefault of {name} PriorityClass must be {str(known.global_default).lower()}"
    return ""


def check_priority_class_update(changed: Iterable[str]) -> None:
    """``ValidatePriorityClassUpdate``: ``value`` and ``preemptionPolicy`` are immutable (a pod's
    priority was copied from them on admission). ``changed`` are the paths an update changes."""
    for path in changed:
        if path == "value":
            raise InvalidTransition("Forbidden: may not be changed in an update.", field=path)
        if path == "preemptionPolicy":
            raise InvalidTransition("field is immutable", field=path)


def _system_class(manifest: Mapping[str, Any]) -> PriorityClass:
    # model_construct: these are the definitions the validator checks against.
    return PriorityClass.model_construct(
        metadata=ObjectMeta(name=manifest["metadata"]["name"]),
        value=manifest["value"],
        global_default=manifest["globalDefault"],
        description=manifest["description"],
        preemption_policy=manifest["preemptionPolicy"],
    )


SYSTEM_PRIORITY_CLASSES: Final[Mapping[str, PriorityClass]] = MappingProxyType(
    {name: _system_class(manifest) for name, manifest in SYSTEM_CLASS_MANIFESTS.items()}
)
"""The built-in classes (``scheduling.SystemPriorityClasses``), which exist without a create."""


__all__ = [
    "DEFAULT_PRIORITY",
    "HIGHEST_USER_DEFINABLE_PRIORITY",
    "SYSTEM_CLUSTER_CRITICAL",
    "SYSTEM_CRITICAL_PRIORITY",
    "SYSTEM_NODE_CRITICAL",
    "SYSTEM_PRIORITY_CLASSES",
    "SYSTEM_PRIORITY_CLASS_PREFIX",
    "PreemptionPolicy",
    "PriorityClass",
    "check_priority_class_update",
]

"""A container's compute resources (``resources.requests`` / ``limits``) and their names.

Why this exists: the scheduler, quotas, limit ranges and the agent's cgroups all read these;
the checks are ``pkg/apis/core/validation``'s (standard and extended resource names, requests
not above limits, limits copied to missing requests).
"""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import model_validator

from core.meta.fields import QuantityString
from core.meta.model import K8sModel, field_error, invalid
from core.meta.names import (
    qualified_name_errors,
)
from core.meta.quantity import parse_quantity, resource_quantity_problem

Protocol = Literal["TCP", "UDP", "SCTP"]
ResourceList = dict[str, QuantityString]
"""Resource name -> canonical quantity string (``{"cpu": "500m", "memory": "128Mi"}``)."""

# --------------------------------------------------------------------------------------------
# Compute resources
# --------------------------------------------------------------------------------------------

_STANDARD_CONTAINER_RESOURCES: Final = frozenset({"cpu", "memory", "ephemeral-storage"})


def _is_extended_resource(name: str) -> bool:
    """Extended resources (``example.com/gpu``) are integers and cannot be overcommitted."""
    return "/" in name and "kubernetes.io/" not in name and not name.startswith("requests.")


def container_resource_name_errors(name: str) -> list[str]:
    """Problems with ``name`` as a container resource (``cpu``, ``hugepages-2Mi``, ``x.io/gpu``)."""
    if name in _STANDARD_CONTAINER_RESOURCES or name.startswith("hugepages-"):
        return []
    errs = qualified_name_errors(name)
    if errs:
        return errs
    if "/" not in name:
        return [
            "must be a standard resource for containers (cpu, memory, ephemeral-storage, "
            "hugepages-<size>) or a fully qualified extended resource such as example.com/gpu"
        ]
    return []


def _check_resource_list(section: str, resources: dict[str, str]) -> None:
    for name, text in resources.items():
        errs = container_resource_name_errors(name)
        if errs:
            raise field_error(invalid(name, "; ".join(errs)), section, name)
        quantity = parse_quantity(text)
        if quantity.sign() < 0:
            raise field_error(invalid(text, "must be greater than or equal to 0"), section, name)
        if (problem := resource_quantity_problem(name, quantity)) is not None:
            raise field_error(problem, section, name)
        if _is_extended_resource(name) and quantity.amount.denominator != 1:
            raise field_error(invalid(text, "must be an integer"), section, name)


class ResourceClaim(K8sModel):
    """A reference to a pod-level resource claim (dynamic resource allocation)."""

    name: str
    request: str | None = None


class ResourceRequirements(K8sModel):
    """``requests`` and ``limits``; a limit without a request sets the request (as Kubernetes)."""

    limits: ResourceList | None = None
    requests: ResourceList | None = None
    claims: list[ResourceClaim] | None = None

    @model_validator(mode="after")
    def _default_and_check(self) -> Self:
        limits = self.limits or {}
        if limits:
            requests = dict(self.requests or {})
            missing = {k: v for k, v in limits.items() if k not in requests}
            if missing:
                requests.update(missing)
                self.requests = requests
        requests = self.requests or {}
        _check_resource_list("limits", limits)
        _check_resource_list("requests", requests)
        for name, request in requests.items():
            limit = limits.get(name)
            if limit is None:
                if _is_extended_resource(name):
                    raise field_error(
                        "Forbidden: a limit must be set for non-overcommitable resources",
                        "limits",
                        name,
                    )
                continue
            if _is_extended_resource(name) and parse_quantity(request) != parse_quantity(limit):
                raise field_error(
                    invalid(request, f"must be equal to {name} limit of {limit}"), "requests", name
                )
            if parse_quantity(request) > parse_quantity(limit):
                raise field_error(
                    invalid(request, f"must be less than or equal to {name} limit of {limit}"),
                    "requests",
                    name,
                )
        return self

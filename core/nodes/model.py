"""The Node (core/v1): a machine pods run on, its taints, and the capacity it reports.

Why this exists: the scheduler filters and scores pods against nodes, so a node's taints,
``unschedulable`` flag and ``status.allocatable`` must be read exactly as Kubernetes reads them
(quantities canonicalised, taints validated). ``status`` is server-managed (the node agent
reports it), but it is modelled so that ``kubectl get node -o yaml`` output loads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from core.errors import ValidationFailed
from core.meta.fields import QuantityString
from core.meta.model import K8sModel, Problems, duplicate, invalid
from core.meta.names import (
    dns1123_subdomain_errors,
    qualified_name_errors,
    rule_problems,
)
from core.meta.quantity import parse_quantity, resource_quantity_problem
from core.meta.types import Condition, ResourceBase, Taint
from core.network.ranges import parse_cidr


def _check_node_resources(resources: dict[str, str]) -> dict[str, str]:
    found = Problems()
    for name, text in resources.items():
        found.extend(rule_problems(qualified_name_errors, name), name)
        quantity = parse_quantity(text)
        if quantity.sign() < 0:
            found.add(invalid(text, "must be greater than or equal to 0"), name)
        elif (problem := resource_quantity_problem(name, quantity)) is not None:
            found.add(problem, name)
    found.check()
    return resources


NodeResourceList = Annotated[dict[str, QuantityString], AfterValidator(_check_node_resources)]
"""Capacity/allocatable: resource name (``cpu``, ``pods``, ``example.com/gpu``) -> quantity."""


class NodeSpec(K8sModel):
    taints: list[Taint] | None = None
    unschedulable: bool | None = None
    pod_cidr: str | None = Field(default=None, alias="podCIDR")
    pod_cidrs: list[str] | None = Field(default=None, alias="podCIDRs")
    provider_id: str | None = Field(default=None, alias="providerID")
    external_id: str | None = Field(default=None, alias="externalID")
    config_source: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _unique_taints(self) -> Self:
        found = Problems()
        seen: set[tuple[str, str]] = set()
        for i, taint in enumerate(self.taints or ()):
            key = (taint.key, taint.effect)
            if key in seen:
                found.add(
                    duplicate(f"{taint.key}:{taint.effect}")
                    + ": taints must be unique by key and effect pair",
                    "taints",
                    i,
                )
            seen.add(key)
        self._check_pod_cidrs(found)
        found.check()
        return self

    def _check_pod_cidrs(self, found: Problems) -> None:
        """``podCIDR`` and ``podCIDRs`` as the API server checks them: CIDRs, the first of
        ``podCIDRs`` equal to ``podCIDR`` (IPv4 only here: one range)."""
        for where, text in [("podCIDR", self.pod_cidr)] + [
            (f"podCIDRs[{i}]", cidr) for i, cidr in enumerate(self.pod_cidrs or ())
        ]:
            if text is None:
                continue
            try:
                parse_cidr(text, what="podCIDR")
            except ValidationFailed as exc:
                found.add(invalid(text, exc.message), *_path(where))
        if self.pod_cidrs and len(self.pod_cidrs) > 1:
            found.add("Too many: only one (IPv4) pod range per node is supported", "podCIDRs")
        if self.pod_cidr and self.pod_cidrs and self.pod_cidrs[0] != self.pod_cidr:
            found.add(
                invalid(self.pod_cidrs[0], f"must be the same as podCIDR ({self.pod_cidr})"),
                "podCIDRs",
                0,
            )


def _path(where: str) -> tuple[str | int, ...]:
    if "[" not in where:
        return (where,)
    name, _, index = where.partition("[")
    return (name, int(index.rstrip("]")))


class NodeAddress(K8sModel):
    type: str
    address: str


class NodeStatus(K8sModel):
    """Server-managed: what the node agent reports. Only capacity/allocatable are interpreted."""

    capacity: NodeResourceList | None = None
    allocatable: NodeResourceList | None = None
    conditions: list[Condition] | None = None
    addresses: list[NodeAddress] | None = None
    node_info: dict[str, Any] | None = None
    phase: str | None = None
    daemon_endpoints: dict[str, Any] | None = None
    images: list[dict[str, Any]] | None = None
    volumes_in_use: list[str] | None = None
    volumes_attached: list[dict[str, Any]] | None = None
    config: dict[str, Any] | None = None
    runtime_handlers: list[dict[str, Any]] | None = None
    features: dict[str, Any] | None = None
    declared_features: list[str] | None = None


class Node(ResourceBase):
    """A node (core/v1, cluster-scoped)."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)
    NAMESPACED = False

    api_version: Literal["v1"] = "v1"
    kind: Literal["Node"] = "Node"
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus | None = None

"""The ReplicaSet (apps/v1): a number of identical pods kept alive.

Why this exists: a Deployment rolls out by creating one replica set per pod template and
scaling them against each other; the replica-set controller keeps each one's pod count. The
checks are Kubernetes' own (``pkg/apis/apps/validation``): a non-empty selector that matches
the template's labels, and a template that restarts Always.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from core.resources.base import (
    Condition,
    K8sModel,
    LabelSelector,
    ResourceBase,
    dns1123_subdomain_errors,
)
from core.resources.deployment import PodTemplateSpec, check_pod_template

NonNegative = Annotated[int, Field(ge=0)]


class ReplicaSetSpec(K8sModel):
    replicas: NonNegative = 1
    min_ready_seconds: NonNegative = 0
    selector: LabelSelector
    template: PodTemplateSpec

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_pod_template(self.selector, self.template, "replicaset")
        return self


class ReplicaSetStatus(K8sModel):
    """Server-managed: what the replica-set controller last counted."""

    replicas: NonNegative = 0
    fully_labeled_replicas: NonNegative | None = None
    ready_replicas: NonNegative | None = None
    available_replicas: NonNegative | None = None
    terminating_replicas: NonNegative | None = None
    observed_generation: int | None = None
    conditions: list[Condition] | None = None


class ReplicaSet(ResourceBase):
    """A replica set (apps/v1)."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)
    NAMESPACED = True

    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["ReplicaSet"] = "ReplicaSet"
    spec: ReplicaSetSpec
    status: ReplicaSetStatus | None = None


__all__ = ["ReplicaSet", "ReplicaSetSpec", "ReplicaSetStatus"]

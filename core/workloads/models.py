"""The Deployment and the ReplicaSet (apps/v1): a desired number of identical pods.

Why this exists: the rollout controller plans surges and unavailability from these fields, so
the defaults (1 replica, RollingUpdate with 25 % surge and 25 % unavailable, 10 kept revisions,
600 s progress deadline) and the checks (the selector must match the template's labels, the
template must restart Always) have to be Kubernetes' own (``pkg/apis/apps/v1/defaults.go``,
``pkg/apis/apps/validation``).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from core.meta.fields import IntOrPercent
from core.meta.model import K8sModel, field_error, invalid
from core.meta.names import dns1123_subdomain_errors
from core.meta.types import Condition, LabelSelector, ObjectMeta, ResourceBase
from core.pods.model import PodSpec

NonNegative = Annotated[int, Field(ge=0)]
Replicas = Annotated[int, Field(ge=0, le=2**31 - 1)]
"""A replica count: Kubernetes' ``int32`` field, validated non-negative."""


class PodTemplateSpec(K8sModel):
    """The pod each replica is made from (metadata usually carries just labels)."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec


def _is_zero(value: int | str) -> bool:
    return value == 0 or value == "0%"


class RollingUpdateDeployment(K8sModel):
    """How far a rolling update may go above (surge) and below (unavailable) the replica count."""

    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = "25%"

    @model_validator(mode="after")
    def _check(self) -> Self:
        unavailable = self.max_unavailable
        if isinstance(unavailable, str) and int(unavailable[:-1]) > 100:
            raise field_error(
                invalid(unavailable, "must not be greater than 100%"), "maxUnavailable"
            )
        if _is_zero(unavailable) and _is_zero(self.max_surge):
            raise field_error(
                invalid(unavailable, "may not be 0 when `maxSurge` is 0"), "maxUnavailable"
            )
        return self


class DeploymentStrategy(K8sModel):
    """``RollingUpdate`` (default, with 25 %/25 %) or ``Recreate`` (which takes no parameters)."""

    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    rolling_update: RollingUpdateDeployment | None = None

    @model_validator(mode="after")
    def _default_and_check(self) -> Self:
        if self.type == "Recreate":
            if self.rolling_update is not None:
                raise field_error(
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                    "rollingUpdate",
                )
        elif self.rolling_update is None:
            self.rolling_update = RollingUpdateDeployment()
        return self


def check_pod_template(selector: LabelSelector, template: PodTemplateSpec, kind: str) -> None:
    """What every pod-template owner must satisfy: a non-empty selector that matches the
    template's labels, and a template that restarts Always."""
    if selector.is_empty():
        raise field_error(f"Invalid value: empty selector is invalid for {kind}", "selector")
    labels = template.metadata.labels or {}
    if not selector.matches(labels):
        raise field_error(
            "Invalid value: selector does not match template labels "
            f"(template labels: {json.dumps(labels, sort_keys=True)})",
            "template",
            "metadata",
            "labels",
        )
    policy = template.spec.restart_policy
    if policy != "Always":
        raise field_error(
            f'Unsupported value "{policy}": supported values: "Always"',
            "template",
            "spec",
            "restartPolicy",
        )


class DeploymentSpec(K8sModel):
    replicas: Replicas = 1
    selector: LabelSelector
    template: PodTemplateSpec
    strategy: DeploymentStrategy = Field(default_factory=DeploymentStrategy)
    min_ready_seconds: NonNegative = 0
    revision_history_limit: NonNegative = 10
    progress_deadline_seconds: NonNegative = 600
    paused: bool = False

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_pod_template(self.selector, self.template, "deployment")
        if self.template.spec.active_deadline_seconds is not None:
            raise field_error(
                "Forbidden: activeDeadlineSeconds in a Deployment's pod template is not supported",
                "template",
                "spec",
                "activeDeadlineSeconds",
            )
        if self.progress_deadline_seconds <= self.min_ready_seconds:
            raise field_error(
                invalid(self.progress_deadline_seconds, "must be greater than minReadySeconds"),
                "progressDeadlineSeconds",
            )
        return self


class DeploymentStatus(K8sModel):
    """Server-managed: what the deployment controller last observed."""

    observed_generation: int | None = None
    replicas: int | None = None
    updated_replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    unavailable_replicas: int | None = None
    terminating_replicas: int | None = None
    collision_count: int | None = None
    conditions: list[Condition] | None = None


class Deployment(ResourceBase):
    """A deployment (apps/v1)."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)
    NAMESPACED = True

    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    spec: DeploymentSpec
    status: DeploymentStatus | None = None


NonNegative = Annotated[int, Field(ge=0)]


class ReplicaSetSpec(K8sModel):
    replicas: Replicas = 1
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

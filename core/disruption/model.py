"""The PodDisruptionBudget kind (``policy/v1``, short name ``pdb``) and its validation.

Why this exists: users bring Kubernetes' PDB YAML as-is and expect Kubernetes' refusals, at
Kubernetes' paths: ``ValidatePodDisruptionBudgetSpec`` of ``pkg/apis/policy/validation``
(minAvailable and maxUnavailable not both, each a non-negative integer or a percentage of at
most 100 %, the selector a valid label selector, unhealthyPodEvictionPolicy ``IfHealthyBudget``
or ``AlwaysAllow``). One refusal goes beyond the API server, as ``kubectl create pdb`` already
refuses it: a budget naming **neither** minAvailable nor maxUnavailable (Kubernetes stores it
and then computes ``disruptionsAllowed: 0`` forever, a budget that blocks every eviction without
saying why). A selector that matches no pod is not refused (a PDB is often created before its
pods): its status says so (``expectedPods: 0``, DisruptionAllowed False / InsufficientPods).
"""

from __future__ import annotations

import json
from typing import Final, Literal, Self

from pydantic import Field, model_validator

from core.meta.fields import IntOrPercent, Timestamp
from core.meta.model import K8sModel, Problems, invalid, unsupported
from core.meta.names import dns1123_subdomain_errors
from core.meta.types import LabelSelector, ResourceBase

API_VERSION: Final = "policy/v1"
UNHEALTHY_POD_EVICTION_POLICIES: Final = ("AlwaysAllow", "IfHealthyBudget")
"""``supportedUnhealthyPodEvictionPolicies`` (sorted, as kube lists them)."""
IF_HEALTHY_BUDGET: Final = "IfHealthyBudget"
ALWAYS_ALLOW: Final = "AlwaysAllow"


def _percent_problems(value: int | str) -> list[str]:
    """``IsNotMoreThan100Percent`` (the form itself is checked by ``IntOrPercent``)."""
    if isinstance(value, str) and int(value[:-1]) > 100:
        return [invalid(value, "must not be greater than 100%")]
    return []


class PodDisruptionBudgetSpec(K8sModel):
    min_available: IntOrPercent | None = None
    max_unavailable: IntOrPercent | None = None
    selector: LabelSelector | None = None
    unhealthy_pod_eviction_policy: str | None = None

    @model_validator(mode="after")
    def _validate(self) -> Self:
        found = Problems()
        if self.min_available is not None and self.max_unavailable is not None:
            shown = json.dumps(
                {"minAvailable": self.min_available, "maxUnavailable": self.max_unavailable}
            )
            found.add(f"Invalid value: {shown}: minAvailable and maxUnavailable cannot be both set")
        if self.min_available is None and self.max_unavailable is None:
            found.add("Required value: one of minAvailable or maxUnavailable must be set")
        for field, value in (
            ("minAvailable", self.min_available),
            ("maxUnavailable", self.max_unavailable),
        ):
            if value is not None:
                for message in _percent_problems(value):
                    found.add(message, field)
        policy = self.unhealthy_pod_eviction_policy
        if policy is not None and policy not in UNHEALTHY_POD_EVICTION_POLICIES:
            found.add(unsupported(policy, UNHEALTHY_POD_EVICTION_POLICIES),
                      "unhealthyPodEvictionPolicy")  # fmt: skip
        found.check()
        return self


class PodDisruptionBudgetStatus(K8sModel):
    observed_generation: int | None = None
    disrupted_pods: dict[str, Timestamp] | None = None
    disruptions_allowed: int = Field(default=0, ge=0)
    current_healthy: int = Field(default=0, ge=0)
    desired_healthy: int = Field(default=0, ge=0)
    expected_pods: int = Field(default=0, ge=0)
    conditions: list[MetaCondition] | None = None


class MetaCondition(K8sModel):
    """A ``metav1.Condition`` (type, status, reason, message, observedGeneration,
    lastTransitionTime)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: Timestamp | None = None


PodDisruptionBudgetStatus.model_rebuild()


class PodDisruptionBudget(ResourceBase):
    """A PDB (``policy/v1``, namespaced); its name a DNS-1123 subdomain."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)

    api_version: Literal["policy/v1"] = "policy/v1"
    kind: Literal["PodDisruptionBudget"] = "PodDisruptionBudget"
    spec: PodDisruptionBudgetSpec = Field(default_factory=PodDisruptionBudgetSpec)
    status: PodDisruptionBudgetStatus | None = None

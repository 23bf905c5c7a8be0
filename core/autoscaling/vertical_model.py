"""The VerticalPodAutoscaler kind (``autoscaling.k8s.io/v1``): its schema and its validation.

Why this exists: users bring the VPA project's YAML as-is (the CRD ``verticalpodautoscalers``,
short name ``vpa``) and expect the answers the VPA's admission controller gives
(``pkg/admission-controller/resource/vpa/validation.go``), with its field paths and messages:
``updateMode`` one of the supported modes (``Auto`` accepted with its deprecation warning, as
the current VPA reads it: the same as ``Recreate``), ``InPlace`` refused while its feature
gate is off (the VPA's default), a positive ``minReplicas``, a container policy naming its
container, ``mode`` Auto/Off, ``maxAllowed`` below ``minAllowed`` refused per resource,
``controlledResources`` only cpu and memory, no ``controlledValues: RequestsAndLimits`` on a
container whose scaling is Off, at most one recommender. A bad VPA is refused whole, so
nothing half-applied reaches the recommender.

The status (``recommendation.containerRecommendations`` and the ``RecommendationProvided``
condition) is the recommender's (``handlers.autoscaler.vertical``), written through the
``status`` verb and validated against :class:`VerticalPodAutoscalerStatus`.
"""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import model_validator

from core.autoscaling.model import CrossVersionObjectReference
from core.meta.fields import QuantityString
from core.meta.model import K8sModel, Problems, invalid, unsupported
from core.meta.names import dns1123_subdomain_errors
from core.meta.quantity import parse_quantity
from core.meta.types import Condition, ResourceBase

API_VERSION: Final = "autoscaling.k8s.io/v1"
UPDATE_MODES: Final = ("Off", "Initial", "Recreate", "InPlaceOrRecreate", "InPlace", "Auto")
"""``GetUpdateModesList``, in the CRD's enum order."""
DEPRECATED_AUTO: Final = "Auto"
SCALING_MODES: Final = ("Auto", "Off")
CONTROLLED_VALUES: Final = ("RequestsAndLimits", "RequestsOnly")
CONTROLLED_RESOURCES: Final = ("cpu", "memory")
DEFAULT_CONTAINER: Final = "*"
"""A container policy for every container that has no policy of its own."""


def effective_mode(mode: str | None) -> str:
    """The update mode the updater acts on: none given is ``Recreate`` (the VPA's default,
    ``Auto``), and the deprecated ``Auto`` is ``Recreate``, as the current VPA reads it."""
    if mode is None or mode == DEPRECATED_AUTO:
        return "Recreate"
    return mode


class PodUpdatePolicy(K8sModel):
    update_mode: str | None = None
    min_replicas: int | None = None

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """``validateVPASpecUpdatePolicy``."""
        found = Problems()
        if self.update_mode is None:
            found.add(
                "Required value: updateMode is required if UpdatePolicy is used", "updateMode"
            )
        elif self.update_mode not in UPDATE_MODES:
            found.add(unsupported(self.update_mode, UPDATE_MODES), "updateMode")
        elif self.update_mode == "InPlace":
            found.add(
                "Forbidden: in order to use UpdateMode InPlace, you must enable feature gate "
                "InPlace in the admission-controller args",
                "updateMode",
            )
        if self.min_replicas is not None and self.min_replicas <= 0:
            found.add(invalid(self.min_replicas, "minReplicas has to be positive"), "minReplicas")
        return found.items


class ContainerResourcePolicy(K8sModel):
    container_name: str = ""
    mode: str | None = None
    min_allowed: dict[str, QuantityString] | None = None
    max_allowed: dict[str, QuantityString] | None = None
    controlled_resources: list[str] | None = None
    controlled_values: str | None = None

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """``validateVPASpecResourcePolicy`` for one container policy."""
        found = Problems()
        if not self.container_name:
            found.add("Required value", "containerName")
        if self.mode is not None and self.mode not in SCALING_MODES:
            found.add(unsupported(self.mode, SCALING_MODES), "mode")
        if self.controlled_values is not None and self.controlled_values not in CONTROLLED_VALUES:
            found.add(unsupported(self.controlled_values, CONTROLLED_VALUES), "controlledValues")
        low, high = self.min_allowed or {}, self.max_allowed or {}
        for resource in sorted(low):
            if resource in high and parse_quantity(high[resource]) < parse_quantity(low[resource]):
                found.add(
                    invalid(
                        high[resource],
                        f'max resource for {resource} is lower than min of "{low[resource]}"',
                    ),
                    "maxAllowed",
                    resource,
                )
        if self.mode == "Off" and self.controlled_values == "RequestsAndLimits":
            found.add(
                "Forbidden: controlledValues shouldn't be specified if container scaling mode "
                "is off",
                "controlledValues",
            )
        for j, resource in enumerate(self.controlled_resources or ()):
            if resource not in CONTROLLED_RESOURCES:
                found.add(unsupported(resource, CONTROLLED_RESOURCES), "controlledResources", j)
        return found.items


class PodResourcePolicy(K8sModel):
    container_policies: list[ContainerResourcePolicy] | None = None


class VerticalPodAutoscalerRecommenderSelector(K8sModel):
    name: str = ""


class VerticalPodAutoscalerSpec(K8sModel):
    target_ref: CrossVersionObjectReference | None = None
    update_policy: PodUpdatePolicy | None = None
    resource_policy: PodResourcePolicy | None = None
    recommenders: list[VerticalPodAutoscalerRecommenderSelector] | None = None

    @model_validator(mode="after")
    def _validate(self) -> Self:
        found = Problems()
        if self.target_ref is None:
            found.add(
                "Required value: If you're using v1beta1 version of the API, please migrate to v1",
                "targetRef",
            )
        else:
            found.extend(self.target_ref.problems(), "targetRef")
        if self.update_policy is not None:
            found.extend(self.update_policy.problems(), "updatePolicy")
        if self.resource_policy is not None:
            for i, policy in enumerate(self.resource_policy.container_policies or ()):
                found.extend(policy.problems(), "resourcePolicy", "containerPolicies", i)
        if self.recommenders is not None and len(self.recommenders) > 1:
            found.add(
                f"Too many: {len(self.recommenders)}: must have at most 1 items", "recommenders"
            )
        found.check()
        return self

    def mode(self) -> str:
        """The update mode acted on (:func:`effective_mode`)."""
        return effective_mode(self.update_policy.update_mode if self.update_policy else None)

    def policy_for(self, container: str) -> ContainerResourcePolicy | None:
        """``GetContainerResourcePolicy``: the container's own policy, else the ``*`` one."""
        policies = (self.resource_policy.container_policies or ()) if self.resource_policy else ()
        named = next((p for p in policies if p.container_name == container), None)
        if named is not None:
            return named
        return next((p for p in policies if p.container_name == DEFAULT_CONTAINER), None)


class RecommendedContainerResources(K8sModel):
    container_name: str
    target: dict[str, QuantityString]
    lower_bound: dict[str, QuantityString] | None = None
    upper_bound: dict[str, QuantityString] | None = None
    uncapped_target: dict[str, QuantityString] | None = None


class RecommendedPodResources(K8sModel):
    container_recommendations: list[RecommendedContainerResources] | None = None


class VerticalPodAutoscalerStatus(K8sModel):
    recommendation: RecommendedPodResources | None = None
    conditions: list[Condition] | None = None


class VerticalPodAutoscaler(ResourceBase):
    """A VPA (``autoscaling.k8s.io/v1``, namespaced)."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)

    api_version: Literal["autoscaling.k8s.io/v1"] = "autoscaling.k8s.io/v1"
    kind: Literal["VerticalPodAutoscaler"] = "VerticalPodAutoscaler"
    spec: VerticalPodAutoscalerSpec
    status: VerticalPodAutoscalerStatus | None = None

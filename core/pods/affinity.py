"""A pod's scheduling constraints: node selectors and node affinity, pod (anti-)affinity and
topology spread constraints.

Why this exists: the scheduler compiles these (``core.scheduling.model``); they are validated
here as the API server validates them, so a constraint the scheduler would misread never enters
the log.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal, Self

from pydantic import Field, model_validator

from core.meta.model import K8sModel, field_error, invalid
from core.meta.names import (
    QualifiedName,
)
from core.meta.types import LabelSelector

# --------------------------------------------------------------------------------------------
# Scheduling constraints
# --------------------------------------------------------------------------------------------

_INT64_RE: Final = re.compile(r"[+-]?[0-9]+")


class NodeSelectorRequirement(K8sModel):
    """One node-affinity expression (``key operator values``)."""

    key: QualifiedName
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] | None = None

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Self:
        op, values = self.operator, self.values or []
        if op in ("In", "NotIn") and not values:
            raise field_error(
                "Required value: must be specified when `operator` is 'In' or 'NotIn'", "values"
            )
        if op in ("Exists", "DoesNotExist") and values:
            raise field_error(
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "values",
            )
        if op in ("Gt", "Lt"):
            if len(values) != 1:
                raise field_error(
                    "Required value: must be specified single value when `operator` is 'Lt' or "
                    "'Gt'",
                    "values",
                )
            text = values[0]
            if not _INT64_RE.fullmatch(text) or not -(2**63) <= int(text) < 2**63:
                raise field_error(
                    invalid(text, "must be an integer when `operator` is 'Gt' or 'Lt'"),
                    "values",
                    0,
                )
        return self


class NodeSelectorTerm(K8sModel):
    """Expressions and fields of one term are ANDed; the terms of a selector are ORed."""

    match_expressions: list[NodeSelectorRequirement] | None = None
    match_fields: list[NodeSelectorRequirement] | None = None

    @model_validator(mode="after")
    def _fields(self) -> Self:
        for i, req in enumerate(self.match_fields or ()):
            if req.operator not in ("In", "NotIn"):
                raise field_error(
                    invalid(req.operator, "not a valid selector operator"),
                    "matchFields",
                    i,
                    "operator",
                )
            if len(req.values or ()) != 1:
                raise field_error(
                    "Required value: must be only one value when `operator` is 'In' or 'NotIn' "
                    "for node field selector",
                    "matchFields",
                    i,
                    "values",
                )
            if req.key != "metadata.name":
                raise field_error(
                    invalid(req.key, "not a valid field selector key (only metadata.name)"),
                    "matchFields",
                    i,
                    "key",
                )
        return self


class NodeSelector(K8sModel):
    node_selector_terms: list[NodeSelectorTerm]

    @model_validator(mode="after")
    def _non_empty(self) -> Self:
        if not self.node_selector_terms:
            raise field_error(
                "Required value: must have at least one node selector term", "nodeSelectorTerms"
            )
        return self


Weight = Annotated[int, Field(ge=1, le=100)]


class PreferredSchedulingTerm(K8sModel):
    weight: Weight
    preference: NodeSelectorTerm


class NodeAffinity(K8sModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        None
    )


class PodAffinityTerm(K8sModel):
    """Pods matching ``labelSelector`` in ``namespaces`` define the topology domains to (avoid)."""

    label_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    namespaces: list[str] | None = None
    topology_key: QualifiedName
    match_label_keys: list[str] | None = None
    mismatch_label_keys: list[str] | None = None


class WeightedPodAffinityTerm(K8sModel):
    weight: Weight
    pod_affinity_term: PodAffinityTerm


class PodAffinity(K8sModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        None
    )


class PodAntiAffinity(K8sModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        None
    )


class Affinity(K8sModel):
    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAntiAffinity | None = None


class TopologySpreadConstraint(K8sModel):
    """Spread matching pods across the domains of ``topologyKey`` within ``maxSkew``."""

    max_skew: Annotated[int, Field(ge=1)]
    topology_key: QualifiedName
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    label_selector: LabelSelector | None = None
    min_domains: Annotated[int, Field(ge=1)] | None = None
    node_affinity_policy: Literal["Honor", "Ignore"] | None = None
    node_taints_policy: Literal["Honor", "Ignore"] | None = None
    match_label_keys: list[str] | None = None

    @model_validator(mode="after")
    def _min_domains(self) -> Self:
        if self.min_domains is not None and self.when_unsatisfiable != "DoNotSchedule":
            raise field_error(
                invalid(
                    self.min_domains,
                    "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not "
                    "ScheduleAnyway",
                ),
                "minDomains",
            )
        return self

"""A pod's scheduling constraints: node selectors and node affinity, pod (anti-)affinity and
topology spread constraints.

Why this exists: the scheduler compiles these (``core.scheduling.model``); they are validated
here as the API server validates them (``validateAffinity``, ``validateTopologySpreadConstraints``
in ``pkg/apis/core/validation``), so a constraint the scheduler would misread never enters the
log. Where label keys and values appear they are held to the label rules, exactly where
Kubernetes holds them: keys of node-selector requirements, topology keys of affinity terms and
``matchLabelKeys``/``mismatchLabelKeys`` are label keys; the values of a *required* node
affinity's requirements are label values (a preferred term may name any value, as it may still
match nothing harmlessly); label selectors check their own. A topology spread constraint's
``topologyKey`` only has to be non-empty, as in Kubernetes.

One check is fleetlog's own: a ``Gt``/``Lt`` requirement's single value must be an integer
(Kubernetes accepts any label value there and then never matches a non-integer).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from core.meta.labels import parse_int64
from core.meta.model import K8sModel, Problem, Problems, field_errors, invalid
from core.meta.names import (
    dns1123_label_errors,
    dns1123_subdomain_errors,
    label_key_problems,
    label_value_errors,
    qualified_name_errors,
    rule_problems,
)
from core.meta.types import LabelSelector, selector_requirement_problems

# --------------------------------------------------------------------------------------------
# Node selectors and node affinity
# --------------------------------------------------------------------------------------------


class NodeSelectorRequirement(K8sModel):
    """One node-affinity expression (``key operator values``), in ``matchExpressions`` (a node
    label) or ``matchFields`` (a node field); :class:`NodeSelectorTerm` checks it as the one or
    the other."""

    key: str
    operator: str
    values: list[str] | None = None


def _expression_problems(req: NodeSelectorRequirement) -> list[Problem]:
    """``ValidateNodeSelectorRequirement`` without the values' label rule (which only a required
    node affinity applies: :class:`NodeSelector`)."""
    values = req.values or []
    if req.operator not in ("Gt", "Lt"):
        return selector_requirement_problems(req.key, req.operator, req.values)
    found = Problems()
    if len(values) != 1:
        found.add(
            "Required value: must be specified single value when `operator` is 'Lt' or 'Gt'",
            "values",
        )
    elif parse_int64(values[0]) is None:
        found.add(
            invalid(values[0], "must be an integer when `operator` is 'Gt' or 'Lt'"), "values", 0
        )
    found.extend(rule_problems(qualified_name_errors, req.key), "key")
    return found.items


def _field_problems(req: NodeSelectorRequirement) -> list[Problem]:
    """``ValidateNodeFieldSelectorRequirement``: only ``metadata.name``, In/NotIn one value."""
    found = Problems()
    if req.operator in ("In", "NotIn"):
        if len(req.values or ()) != 1:
            found.add(
                "Required value: must be only one value when `operator` is 'In' or 'NotIn' "
                "for node field selector",
                "values",
            )
    else:
        found.add(invalid(req.operator, "not a valid selector operator"), "operator")
    if req.key != "metadata.name":
        found.add(invalid(req.key, "not a valid field selector key"), "key")
    else:
        for i, value in enumerate(req.values or ()):
            found.extend(rule_problems(dns1123_subdomain_errors, value), "values", i)
    return found.items


class NodeSelectorTerm(K8sModel):
    """Expressions and fields of one term are ANDed; the terms of a selector are ORed."""

    match_expressions: list[NodeSelectorRequirement] | None = None
    match_fields: list[NodeSelectorRequirement] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        found = Problems()
        for i, req in enumerate(self.match_expressions or ()):
            found.extend(_expression_problems(req), "matchExpressions", i)
        for i, req in enumerate(self.match_fields or ()):
            found.extend(_field_problems(req), "matchFields", i)
        found.check()
        return self


class NodeSelector(K8sModel):
    """A required node affinity: terms ORed; the values of their expressions are label values."""

    node_selector_terms: list[NodeSelectorTerm]

    @model_validator(mode="after")
    def _check(self) -> Self:
        found = Problems()
        if not self.node_selector_terms:
            found.add(
                "Required value: must have at least one node selector term", "nodeSelectorTerms"
            )
        for i, term in enumerate(self.node_selector_terms):
            for j, req in enumerate(term.match_expressions or ()):
                for k, value in enumerate(req.values or ()):
                    found.extend(
                        rule_problems(label_value_errors, value),
                        "nodeSelectorTerms",
                        i,
                        "matchExpressions",
                        j,
                        "values",
                        k,
                    )
        found.check()
        return self


def _check_weight(weight: int) -> int:
    if not 1 <= weight <= 100:
        raise field_errors([((), invalid(weight, "must be in the range 1-100"))])
    return weight


Weight = Annotated[int, AfterValidator(_check_weight)]
"""The weight of a preferred term: 1..100."""


class PreferredSchedulingTerm(K8sModel):
    weight: Weight
    preference: NodeSelectorTerm


class NodeAffinity(K8sModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        None
    )


# --------------------------------------------------------------------------------------------
# Pod (anti-)affinity
# --------------------------------------------------------------------------------------------


def _selector_keys(selector: LabelSelector | None) -> list[str]:
    if selector is None:
        return []
    keys = list(selector.match_labels or {})
    keys += [expression.key for expression in selector.match_expressions or ()]
    return keys


class PodAffinityTerm(K8sModel):
    """Pods matching ``labelSelector`` in ``namespaces`` define the topology domains to (avoid)."""

    label_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    namespaces: list[str] | None = None
    topology_key: str = ""
    match_label_keys: list[str] | None = None
    mismatch_label_keys: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """``validatePodAffinityTerm`` and ``validateMatchLabelKeysAndMismatchLabelKeys``."""
        found = Problems()
        for i, name in enumerate(self.namespaces or ()):
            found.extend(rule_problems(dns1123_label_errors, name), "namespaces", i)
        match_keys = self.match_label_keys or []
        mismatch_keys = self.mismatch_label_keys or []
        for field, keys in (("matchLabelKeys", match_keys), ("mismatchLabelKeys", mismatch_keys)):
            if keys and self.label_selector is None:
                found.add("Forbidden: must not be specified when labelSelector is not set", field)
            elif keys:
                found.extend(label_key_problems(keys), field)
        in_selector = set(_selector_keys(self.label_selector))
        mismatched = set(mismatch_keys)
        for i, key in enumerate(match_keys):
            if key in in_selector:
                found.add(
                    invalid(key, "exists in both matchLabelKeys and labelSelector"),
                    "matchLabelKeys",
                    i,
                )
            if key in mismatched:
                found.add(
                    invalid(key, "exists in both matchLabelKeys and mismatchLabelKeys"),
                    "matchLabelKeys",
                    i,
                )
        if not self.topology_key:
            found.add("Required value: can not be empty", "topologyKey")
        found.extend(rule_problems(qualified_name_errors, self.topology_key), "topologyKey")
        found.check()
        return self


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


# --------------------------------------------------------------------------------------------
# Topology spread
# --------------------------------------------------------------------------------------------


class TopologySpreadConstraint(K8sModel):
    """Spread matching pods across the domains of ``topologyKey`` within ``maxSkew``."""

    max_skew: Annotated[int, Field(ge=1)]
    topology_key: str = ""
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    label_selector: LabelSelector | None = None
    min_domains: Annotated[int, Field(ge=1)] | None = None
    node_affinity_policy: Literal["Honor", "Ignore"] | None = None
    node_taints_policy: Literal["Honor", "Ignore"] | None = None
    match_label_keys: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        found = Problems()
        if not self.topology_key:
            found.add("Required value: can not be empty", "topologyKey")
        if self.min_domains is not None and self.when_unsatisfiable != "DoNotSchedule":
            found.add(
                invalid(
                    self.min_domains,
                    "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not "
                    "ScheduleAnyway",
                ),
                "minDomains",
            )
        # validateMatchLabelKeysInTopologySpread
        keys = self.match_label_keys or []
        if keys and self.label_selector is None:
            found.add(
                "Forbidden: must not be specified when labelSelector is not set", "matchLabelKeys"
            )
        in_selector = set(_selector_keys(self.label_selector))
        for i, key in enumerate(keys):
            found.extend(rule_problems(qualified_name_errors, key), "matchLabelKeys", i)
            if key in in_selector:
                found.add(
                    invalid(key, "exists in both matchLabelKeys and labelSelector"),
                    "matchLabelKeys",
                    i,
                )
        found.check()
        return self

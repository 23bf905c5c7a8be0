"""The API Priority and Fairness kinds users bring as YAML: FlowSchema and
PriorityLevelConfiguration (``flowcontrol.apiserver.k8s.io/v1``), validated as
``pkg/apis/flowcontrol/validation`` validates them.

Why this exists: the gateway and the HTTP door limit requests by these objects (issue 17:
"limits configurable as objects"), so the log must accept exactly what Kubernetes accepts: names
are path segments, a schema's precedence lies in 1..10000 (1 is reserved to ``exempt``), its
distinguisher is ``ByUser`` or ``ByNamespace``, every rule names subjects and at least one
resource or non-resource rule; a level is ``Exempt`` or ``Limited`` with the matching section,
and a queuing level's queues, hand size and queue length are positive, the hand no larger than
the deck and within kube's 60 bits of shuffle-sharding entropy.
"""

from __future__ import annotations

import math
from typing import Literal, Self

from pydantic import Field, model_validator

from core.access.kinds import path_segment_errors
from core.meta.model import K8sModel, Problems, invalid, unsupported
from core.meta.types import ResourceBase

FLOWCONTROL_GROUP = "flowcontrol.apiserver.k8s.io"
API_VERSION = f"{FLOWCONTROL_GROUP}/v1"
MAX_PRECEDENCE = 10000
MAX_ENTROPY_BITS = 60
DISTINGUISHERS = ("ByUser", "ByNamespace")
SUBJECT_KINDS = ("Group", "ServiceAccount", "User")
LEVEL_TYPES = ("Exempt", "Limited")
RESPONSE_TYPES = ("Queue", "Reject")


class _Named(K8sModel):
    name: str = ""


class _ServiceAccountSubject(K8sModel):
    namespace: str = ""
    name: str = ""


class FlowSubject(K8sModel):
    kind: str = ""
    user: _Named | None = None
    group: _Named | None = None
    service_account: _ServiceAccountSubject | None = None

    def problems(self) -> Problems:
        found = Problems()
        section = {"User": self.user, "Group": self.group, "ServiceAccount": self.service_account}
        if self.kind not in section:
            found.add(unsupported(self.kind, SUBJECT_KINDS), "kind")
            return found
        field = {"User": "user", "Group": "group", "ServiceAccount": "serviceAccount"}[self.kind]
        value = section[self.kind]
        if value is None:
            found.add("Required value: " + f"{field} is required when subject kind is "
                      f"'{self.kind}'", field)  # fmt: skip
            return found
        if not value.name:
            found.add("Required value", field, "name")
        if isinstance(value, _ServiceAccountSubject) and not value.namespace:
            found.add("Required value", field, "namespace")
        return found


def _verbs_problems(verbs: list[str]) -> Problems:
    found = Problems()
    if not verbs:
        found.add("Required value: verbs must contain at least one value", "verbs")
    elif "*" in verbs and len(verbs) > 1:
        found.add(invalid(verbs, "if '*' is present, must not specify other verbs"), "verbs")
    return found


class ResourcePolicyRule(K8sModel):
    verbs: list[str] = []
    api_groups: list[str] = []
    resources: list[str] = []
    cluster_scope: bool = False
    namespaces: list[str] = []

    def problems(self) -> Problems:
        found = _verbs_problems(self.verbs)
        if not self.api_groups:
            found.add("Required value: resource rules must supply at least one api group",
                      "apiGroups")  # fmt: skip
        if not self.resources:
            found.add("Required value: resource rules must supply at least one resource",
                      "resources")  # fmt: skip
        if not self.cluster_scope and not self.namespaces:
            found.add("Required value: resource rules that are not cluster scoped must "
                      "supply at least one namespace", "namespaces")  # fmt: skip
        return found


class NonResourcePolicyRule(K8sModel):
    verbs: list[str] = []
    non_resource_urls: list[str] = Field(default=[], alias="nonResourceURLs")

    def problems(self) -> Problems:
        found = _verbs_problems(self.verbs)
        if not self.non_resource_urls:
            found.add("Required value: nonResourceURLs must contain at least one value",
                      "nonResourceURLs")  # fmt: skip
        for index, url in enumerate(self.non_resource_urls):
            if url != "*" and not url.startswith("/"):
                found.add(invalid(url, "must start with slash"), "nonResourceURLs", index)
        return found


class PolicyRulesWithSubjects(K8sModel):
    subjects: list[FlowSubject] = []
    resource_rules: list[ResourcePolicyRule] = []
    non_resource_rules: list[NonResourcePolicyRule] = []

    def problems(self) -> Problems:
        found = Problems()
        if not self.subjects:
            found.add("Required value: subjects must contain at least one value", "subjects")
        for index, subject in enumerate(self.subjects):
            found.extend(subject.problems().items, "subjects", index)
        if not self.resource_rules and not self.non_resource_rules:
            found.add("Required value: at least one of resourceRules and nonResourceRules "
                      "has to be non-empty", "resourceRules")  # fmt: skip
        for index, rule in enumerate(self.resource_rules):
            found.extend(rule.problems().items, "resourceRules", index)
        for index, non_resource in enumerate(self.non_resource_rules):
            found.extend(non_resource.problems().items, "nonResourceRules", index)
        return found


class _Distinguisher(K8sModel):
    type: str = ""


class FlowSchemaSpec(K8sModel):
    priority_level_configuration: _Named = Field(default_factory=_Named)
    matching_precedence: int = 1000
    distinguisher_method: _Distinguisher | None = None
    rules: list[PolicyRulesWithSubjects] = []


class FlowSchema(ResourceBase):
    """Which requests go to which priority level, and what makes two of them one flow."""

    NAME_RULE = staticmethod(path_segment_errors)
    NAMESPACED = False

    api_version: Literal["flowcontrol.apiserver.k8s.io/v1"] = API_VERSION
    kind: Literal["FlowSchema"] = "FlowSchema"
    spec: FlowSchemaSpec = Field(default_factory=FlowSchemaSpec)

    @model_validator(mode="after")
    def _check_spec(self) -> Self:
        found = Problems()
        spec = self.spec
        precedence = spec.matching_precedence
        if precedence <= 0:
            found.add(invalid(precedence, "must be a positive value"), "spec",
                      "matchingPrecedence")  # fmt: skip
        elif precedence > MAX_PRECEDENCE:
            found.add(invalid(precedence, f"must not be greater than {MAX_PRECEDENCE}"),
                      "spec", "matchingPrecedence")  # fmt: skip
        elif precedence == 1 and self.metadata.name != "exempt":
            found.add(invalid(precedence, "only the schema named 'exempt' may have "
                              "matchingPrecedence 1"), "spec", "matchingPrecedence")  # fmt: skip
        method = spec.distinguisher_method
        if method is not None and method.type not in DISTINGUISHERS:
            found.add(unsupported(method.type, DISTINGUISHERS), "spec", "distinguisherMethod",
                      "type")  # fmt: skip
        if not spec.priority_level_configuration.name:
            found.add("Required value: must reference a priority level", "spec",
                      "priorityLevelConfiguration", "name")  # fmt: skip
        else:
            for message in path_segment_errors(spec.priority_level_configuration.name):
                found.add(invalid(spec.priority_level_configuration.name, message), "spec",
                          "priorityLevelConfiguration", "name")  # fmt: skip
        for index, rule in enumerate(spec.rules):
            found.extend(rule.problems().items, "spec", "rules", index)
        found.check()
        return self


class QueuingConfiguration(K8sModel):
    queues: int = 64
    hand_size: int = 8
    queue_length_limit: int = 50


class LimitResponse(K8sModel):
    type: str = ""
    queuing: QueuingConfiguration | None = None


class LimitedPriorityLevelConfiguration(K8sModel):
    nominal_concurrency_shares: int = 30
    limit_response: LimitResponse = Field(default_factory=LimitResponse)
    lendable_percent: int = 0
    borrowing_limit_percent: int | None = None


class ExemptPriorityLevelConfiguration(K8sModel):
    nominal_concurrency_shares: int = 0
    lendable_percent: int = 0


class PriorityLevelConfigurationSpec(K8sModel):
    type: str = ""
    limited: LimitedPriorityLevelConfiguration | None = None
    exempt: ExemptPriorityLevelConfiguration | None = None


def _queuing_problems(queuing: QueuingConfiguration) -> Problems:
    found = Problems()
    for field, value in (
        ("queueLengthLimit", queuing.queue_length_limit),
        ("queues", queuing.queues),
        ("handSize", queuing.hand_size),
    ):
        if value <= 0:
            found.add(invalid(value, "must be positive"), field)
    if queuing.queues > 0 and queuing.hand_size > queuing.queues:
        found.add(invalid(queuing.hand_size, f"should not be greater than queues "
                          f"({queuing.queues})"), "handSize")  # fmt: skip
    elif queuing.queues > 0 and queuing.hand_size > 0:
        bits = math.ceil(math.log2(queuing.queues) * queuing.hand_size)
        if bits > MAX_ENTROPY_BITS:
            found.add(invalid(queuing.hand_size, f"required entropy bits of deckSize "
                              f"{queuing.queues} and handSize {queuing.hand_size} should not "
                              f"be greater than {MAX_ENTROPY_BITS}"), "handSize")  # fmt: skip
    return found


def _percent_problems(value: int | None, field: str) -> Problems:
    found = Problems()
    if value is not None and not 0 <= value <= 100:
        found.add(invalid(value, "must be between 0 and 100, inclusive"), field)
    return found


class PriorityLevelConfiguration(ResourceBase):
    """A share of the server's concurrency, and how requests wait for it."""

    NAME_RULE = staticmethod(path_segment_errors)
    NAMESPACED = False

    api_version: Literal["flowcontrol.apiserver.k8s.io/v1"] = API_VERSION
    kind: Literal["PriorityLevelConfiguration"] = "PriorityLevelConfiguration"
    spec: PriorityLevelConfigurationSpec = Field(default_factory=PriorityLevelConfigurationSpec)

    @model_validator(mode="after")
    def _check_spec(self) -> Self:
        found = Problems()
        spec = self.spec
        if spec.type not in LEVEL_TYPES:
            found.add(unsupported(spec.type, LEVEL_TYPES), "spec", "type")
        if spec.type == "Exempt":
            if spec.limited is not None:
                found.add("Forbidden: must be nil if the type is not Limited", "spec", "limited")
            if spec.exempt is not None:
                if spec.exempt.nominal_concurrency_shares < 0:
                    found.add(invalid(spec.exempt.nominal_concurrency_shares,
                                      "must be a non-negative integer"), "spec", "exempt",
                              "nominalConcurrencyShares")  # fmt: skip
                lendable = _percent_problems(spec.exempt.lendable_percent, "lendablePercent")
                found.extend(lendable.items, "spec", "exempt")
        if spec.type == "Limited":
            if spec.exempt is not None:
                found.add("Forbidden: must be nil if the type is Limited", "spec", "exempt")
            if spec.limited is None:
                found.add("Required value: must not be empty when type is Limited", "spec",
                          "limited")  # fmt: skip
            else:
                found.extend(_limited_problems(spec.limited).items, "spec", "limited")
        found.check()
        return self


def _limited_problems(limited: LimitedPriorityLevelConfiguration) -> Problems:
    found = Problems()
    shares = limited.nominal_concurrency_shares
    if shares < 0:
        found.add(invalid(shares, "must be a non-negative integer"), "nominalConcurrencyShares")
    found.extend(_percent_problems(limited.lendable_percent, "lendablePercent").items)
    if limited.borrowing_limit_percent is not None and limited.borrowing_limit_percent < 0:
        found.add(invalid(limited.borrowing_limit_percent, "if specified, must be a "
                          "non-negative integer"), "borrowingLimitPercent")  # fmt: skip
    response = limited.limit_response
    if response.type not in RESPONSE_TYPES:
        found.add(unsupported(response.type, RESPONSE_TYPES), "limitResponse", "type")
    elif response.type == "Reject" and response.queuing is not None:
        found.add("Forbidden: must be nil if limited.limitResponse.type is not Limited",
                  "limitResponse", "queuing")  # fmt: skip
    elif response.type == "Queue":
        if response.queuing is None:
            found.add("Required value: must not be empty if limited.limitResponse.type is "
                      "Queue", "limitResponse", "queuing")  # fmt: skip
        else:
            found.extend(_queuing_problems(response.queuing).items, "limitResponse", "queuing")
    return found

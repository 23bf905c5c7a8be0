"""The RBAC kinds users bring as YAML: Role, ClusterRole, RoleBinding, ClusterRoleBinding
(``rbac.authorization.k8s.io/v1``), validated as ``pkg/apis/rbac/validation`` validates them.

Why this exists: authorization (``core.access.rbac``) reads these objects from the log, so what
the log accepts must be what Kubernetes accepts: names are path segments (``system:view`` is a
fine role name), a rule has verbs and either resources with API groups or non-resource URLs
(never both, and never URLs in a namespaced Role), a binding's ``roleRef`` names a role of the
right kind in the RBAC group and never changes (kube: delete and recreate the binding), and a
subject is a User or Group (in the RBAC group) or a ServiceAccount (in the core group, with a
namespace when the binding is cluster-wide). Who may *create* such an object without thereby
gaining rights (kube's escalation check) is the gateway's question, not this module's.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from core.errors import InvalidTransition
from core.meta.model import K8sModel, Problems, invalid, unsupported
from core.meta.names import dns1123_subdomain_errors
from core.meta.types import LabelSelector, ResourceBase

RBAC_GROUP = "rbac.authorization.k8s.io"
API_VERSION = f"{RBAC_GROUP}/v1"
SUBJECT_KINDS = ("ServiceAccount", "User", "Group")


def path_segment_errors(value: str) -> list[str]:
    """``path.IsValidPathSegmentName``: what RBAC object names must be."""
    if value in (".", ".."):
        return [f'may not be "{value}"']
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


class PolicyRule(K8sModel):
    verbs: list[str] = []
    api_groups: list[str] | None = None
    resources: list[str] | None = None
    resource_names: list[str] | None = None
    non_resource_urls: list[str] | None = Field(default=None, alias="nonResourceURLs")

    def problems(self, *, namespaced: bool) -> Problems:
        found = Problems()
        if not self.verbs:
            found.add("Required value: verbs must contain at least one value", "verbs")
        if self.non_resource_urls:
            urls = self.non_resource_urls
            if namespaced:
                found.add(
                    invalid(urls, "namespaced rules cannot apply to non-resource URLs"),
                    "nonResourceURLs",
                )
            if self.api_groups or self.resources or self.resource_names:
                found.add(
                    invalid(urls, "rules cannot apply to both regular resources and "
                                  "non-resource URLs"),
                    "nonResourceURLs",
                )  # fmt: skip
            return found
        if not self.api_groups:
            found.add(
                "Required value: resource rules must supply at least one api group", "apiGroups"
            )
        if not self.resources:
            found.add(
                "Required value: resource rules must supply at least one resource", "resources"
            )
        return found


class AggregationRule(K8sModel):
    cluster_role_selectors: list[LabelSelector] = []


class RoleRef(K8sModel):
    api_group: str = ""
    kind: str = ""
    name: str = ""


class Subject(K8sModel):
    kind: str = ""
    api_group: str = ""
    name: str = ""
    namespace: str | None = None

    def problems(self, *, namespaced_binding: bool) -> Problems:
        found = Problems()
        if not self.name:
            found.add("Required value", "name")
        if self.kind == "ServiceAccount":
            if self.name:
                for message in dns1123_subdomain_errors(self.name):
                    found.add(invalid(self.name, message), "name")
            if self.api_group:
                found.add(unsupported(self.api_group, [""]), "apiGroup")
            if not namespaced_binding and not self.namespace:
                found.add("Required value", "namespace")
        elif self.kind in ("User", "Group"):
            if self.api_group != RBAC_GROUP:
                found.add(unsupported(self.api_group, [RBAC_GROUP]), "apiGroup")
        else:
            found.add(unsupported(self.kind, SUBJECT_KINDS), "kind")
        return found


def _rules_problems(rules: list[PolicyRule], *, namespaced: bool) -> Problems:
    found = Problems()
    for index, rule in enumerate(rules):
        found.extend(rule.problems(namespaced=namespaced).items, "rules", index)
    return found


class Role(ResourceBase):
    NAME_RULE = staticmethod(path_segment_errors)
    NAMESPACED = True

    api_version: Literal["rbac.authorization.k8s.io/v1"] = API_VERSION
    kind: Literal["Role"] = "Role"
    rules: list[PolicyRule] = []

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        _rules_problems(self.rules, namespaced=True).check()
        return self


class ClusterRole(ResourceBase):
    NAME_RULE = staticmethod(path_segment_errors)
    NAMESPACED = False

    api_version: Literal["rbac.authorization.k8s.io/v1"] = API_VERSION
    kind: Literal["ClusterRole"] = "ClusterRole"
    rules: list[PolicyRule] = []
    aggregation_rule: AggregationRule | None = None

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        found = _rules_problems(self.rules, namespaced=False)
        if self.aggregation_rule is not None and not self.aggregation_rule.cluster_role_selectors:
            found.add(
                "Required value: at least one clusterRoleSelector required if "
                "aggregationRule is non-nil",
                "aggregationRule",
                "clusterRoleSelectors",
            )
        found.check()
        return self


def _binding_problems(role_ref: RoleRef, subjects: list[Subject], *, namespaced: bool) -> Problems:
    found = Problems()
    if role_ref.api_group != RBAC_GROUP:
        found.add(unsupported(role_ref.api_group, [RBAC_GROUP]), "roleRef", "apiGroup")
    kinds = ["Role", "ClusterRole"] if namespaced else ["ClusterRole"]
    if role_ref.kind not in kinds:
        found.add(unsupported(role_ref.kind, kinds), "roleRef", "kind")
    if not role_ref.name:
        found.add("Required value", "roleRef", "name")
    else:
        for message in path_segment_errors(role_ref.name):
            found.add(invalid(role_ref.name, message), "roleRef", "name")
    for index, subject in enumerate(subjects):
        found.extend(subject.problems(namespaced_binding=namespaced).items, "subjects", index)
    return found


class _Binding(ResourceBase):
    """What both bindings are: a fixed roleRef and the subjects it is granted to."""

    NAME_RULE = staticmethod(path_segment_errors)

    role_ref: RoleRef
    subjects: list[Subject] = []

    @model_validator(mode="after")
    def _check_binding(self) -> Self:
        _binding_problems(self.role_ref, self.subjects, namespaced=self.NAMESPACED).check()
        return self


class RoleBinding(_Binding):
    NAMESPACED = True

    api_version: Literal["rbac.authorization.k8s.io/v1"] = API_VERSION
    kind: Literal["RoleBinding"] = "RoleBinding"


class ClusterRoleBinding(_Binding):
    NAMESPACED = False

    api_version: Literal["rbac.authorization.k8s.io/v1"] = API_VERSION
    kind: Literal["ClusterRoleBinding"] = "ClusterRoleBinding"


def check_binding_update(changed: list[str]) -> None:
    """``ValidateRoleBindingUpdate``: the roleRef never changes (the binding would grant
    something else under the same name; kube: delete and recreate it)."""
    for path in changed:
        if path == "roleRef" or path.startswith("roleRef."):
            raise InvalidTransition("Invalid value: cannot change roleRef", field="roleRef")

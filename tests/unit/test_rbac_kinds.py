"""The RBAC kinds are validated as ``pkg/apis/rbac/validation`` validates them, and a binding's
roleRef never changes (``core.access.kinds``, ``core.access.aggregates``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.access.aggregates import RoleBinding
from core.api.manifests import parse_manifest
from core.errors import InvalidTransition, ValidationFailed

RBAC = "rbac.authorization.k8s.io"
AT = datetime(2026, 12, 5, tzinfo=UTC)


def doc(kind: str, name: str = "x", **body: Any) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": {"name": name}, **body}


def rejected(manifest: dict[str, Any]) -> str:
    """Every problem found, as ``field: message`` lines (kube's ``field.ErrorList``)."""
    with pytest.raises(ValidationFailed) as info:
        parse_manifest(manifest)
    errors = info.value.errors or [info.value]
    return "\n".join(f"{e.field}: {e.message}" for e in errors)


def test_role_names_are_path_segments() -> None:
    role = parse_manifest(doc("ClusterRole", "system:aggregate-to-view", rules=[]))
    assert role.metadata.name == "system:aggregate-to-view"
    assert "may not contain '/'" in rejected(doc("Role", "a/b"))
    assert "may not contain '%'" in rejected(doc("ClusterRole", "a%b"))
    assert 'may not be ".."' in rejected(doc("RoleBinding", "..", roleRef={}))


@pytest.mark.parametrize(
    ("kind", "rule", "problem"),
    [
        ("Role", {"apiGroups": [""], "resources": ["pods"]},
         "rules[0].verbs: Required value: verbs must contain at least one value"),
        ("Role", {"verbs": ["get"], "resources": ["pods"]},
         "rules[0].apiGroups: Required value: resource rules must supply at least one api group"),
        ("ClusterRole", {"verbs": ["get"], "apiGroups": [""]},
         "rules[0].resources: Required value: resource rules must supply at least one resource"),
        ("Role", {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
         "rules[0].nonResourceURLs: Invalid value a list: namespaced rules cannot apply to "
         "non-resource URLs"),
        ("ClusterRole", {"verbs": ["get"], "nonResourceURLs": ["/x"], "resources": ["pods"]},
         "rules[0].nonResourceURLs: Invalid value a list: rules cannot apply to both regular "
         "resources and non-resource URLs"),
    ],
)  # fmt: skip
def test_rules_need_verbs_and_one_kind_of_target(
    kind: str, rule: dict[str, Any], problem: str
) -> None:
    assert problem in rejected(doc(kind, rules=[rule]))


def test_an_aggregation_rule_needs_a_selector() -> None:
    assert "aggregationRule.clusterRoleSelectors: Required value" in rejected(
        doc("ClusterRole", aggregationRule={"clusterRoleSelectors": []})
    )


def ref(kind: str = "ClusterRole", name: str = "view", group: str = RBAC) -> dict[str, str]:
    return {"apiGroup": group, "kind": kind, "name": name}


@pytest.mark.parametrize(
    ("kind", "body", "problem"),
    [
        ("ClusterRoleBinding", {"roleRef": ref("Role")},
         'roleRef.kind: Unsupported value "Role": supported values: "ClusterRole"'),
        ("RoleBinding", {"roleRef": ref(group="")},
         'roleRef.apiGroup: Unsupported value "": supported values: "rbac.authorization.k8s.io"'),
        ("RoleBinding", {"roleRef": ref(name="")}, "roleRef.name: Required value"),
        ("RoleBinding", {"roleRef": ref(), "subjects": [{"kind": "Robot", "name": "r"}]},
         'subjects[0].kind: Unsupported value "Robot": supported values: "ServiceAccount", '
         '"User", "Group"'),
        ("RoleBinding", {"roleRef": ref(), "subjects": [{"kind": "User", "name": "alice"}]},
         'subjects[0].apiGroup: Unsupported value "": supported values: '
         '"rbac.authorization.k8s.io"'),
        ("RoleBinding",
         {"roleRef": ref(), "subjects": [{"kind": "ServiceAccount", "name": "r",
                                          "apiGroup": RBAC}]},
         'subjects[0].apiGroup: Unsupported value "rbac.authorization.k8s.io": supported '
         'values: ""'),
        ("ClusterRoleBinding",
         {"roleRef": ref(), "subjects": [{"kind": "ServiceAccount", "name": "robot"}]},
         "subjects[0].namespace: Required value"),
        ("RoleBinding", {"roleRef": ref(), "subjects": [{"kind": "Group", "apiGroup": RBAC}]},
         "subjects[0].name: Required value"),
    ],
)  # fmt: skip
def test_bindings_name_a_role_of_the_right_kind_and_valid_subjects(
    kind: str, body: dict[str, Any], problem: str
) -> None:
    assert problem in rejected(doc(kind, **body))


def test_a_namespaced_service_account_subject_may_leave_its_namespace_to_the_binding() -> None:
    binding = parse_manifest(
        doc("RoleBinding", roleRef=ref(), subjects=[{"kind": "ServiceAccount", "name": "r"}])
    )
    assert binding.metadata.namespace == "default"


def test_a_bindings_role_ref_never_changes() -> None:
    manifest = {"roleRef": ref(), "subjects": [{"kind": "User", "apiGroup": RBAC, "name": "a"}]}
    binding = RoleBinding.create(None, agg_id="RoleBinding/ns/b", manifest=manifest, uid="u",
                                 at=AT)  # fmt: skip
    more = {**manifest, "subjects": [*manifest["subjects"], {"kind": "Group", "apiGroup": RBAC,
                                                             "name": "g"}]}  # fmt: skip
    RoleBinding.apply_manifest(binding, agg_id="RoleBinding/ns/b", manifest=more, uid="u", at=AT)
    with pytest.raises(InvalidTransition, match="cannot change roleRef"):
        RoleBinding.apply_manifest(
            binding, agg_id="RoleBinding/ns/b", manifest={**more, "roleRef": ref(name="edit")},
            uid="u", at=AT,
        )  # fmt: skip

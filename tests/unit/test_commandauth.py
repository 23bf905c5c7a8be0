"""The translation of fleetlog's commands into kube's RBAC requests, and who a key is."""

from __future__ import annotations

import pytest

from core.access import bootstrap, rbac
from core.access.commandauth import (
    CONTROL_PLANE_GROUP,
    acting_as,
    admin_identity,
    command_request,
    control_plane_identity,
    impersonation,
    request_for,
    users_by_key,
)


@pytest.mark.parametrize(
    ("kind", "verb", "exists", "expected"),
    [
        ("Pod", "create", False, ("create", "pods", "", "")),
        ("Pod", "apply", False, ("create", "pods", "", "")),
        ("Pod", "apply", True, ("patch", "pods", "", "")),
        ("Deployment", "scale", True, ("update", "deployments", "apps", "scale")),
        ("Deployment", "delete", True, ("delete", "deployments", "apps", "")),
        ("Node", "cordon", True, ("patch", "nodes", "", "")),
        ("Node", "uncordon", True, ("patch", "nodes", "", "")),
        ("Pod", "status", True, ("update", "pods", "", "status")),
        ("Pod", "bind", True, ("create", "pods", "", "binding")),
        ("Pod", "evict", True, ("create", "pods", "", "eviction")),
        (
            "PodDisruptionBudget",
            "status",
            True,
            ("update", "poddisruptionbudgets", "policy", "status"),
        ),
        ("Pod", "resize", True, ("patch", "pods", "", "resize")),
        ("RoleBinding", "apply", False, ("create", "rolebindings", bootstrap.RBAC_GROUP, "")),
    ],
)
def test_commands_map_to_kube_verbs_and_resources(
    kind: str, verb: str, exists: bool, expected: tuple[str, str, str, str]
) -> None:
    request = command_request(kind=kind, verb=verb, namespace="ns", name="x", exists=exists)
    assert (request.verb, request.resource, request.api_group, request.subresource) == expected
    assert (request.namespace, request.name) == ("ns", "x")


def test_can_i_names_resources_as_kubectl_does() -> None:
    assert request_for(verb="get", kind="pods", namespace="a") == rbac.Request(
        verb="get", resource="pods", namespace="a"
    )
    scale = request_for(verb="update", kind="deployments/scale", namespace="a")
    assert (scale.resource, scale.api_group, scale.subresource) == ("deployments", "apps", "scale")
    assert request_for(verb="list", kind="no", namespace="a").namespace == ""  # cluster-scoped
    assert request_for(verb="get", kind="Deployment").resource == "deployments"


def test_a_binding_of_view_allows_reads_but_not_writes() -> None:
    policy = rbac.Policy.build(
        cluster_roles=bootstrap.CLUSTER_ROLES,
        cluster_role_bindings=bootstrap.CLUSTER_ROLE_BINDINGS,
        role_bindings=[
            {
                "metadata": {"name": "v", "namespace": "a"},
                "roleRef": {"kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": "viewer"}],
            }
        ],
    )
    viewer = rbac.User("viewer")
    assert policy.authorize(viewer, request_for(verb="get", kind="pods", namespace="a")).allowed
    write = command_request(kind="Pod", verb="apply", namespace="a", name="p", exists=True)
    assert not policy.authorize(viewer, write).allowed
    assert not policy.authorize(viewer, request_for(verb="get", kind="pods", namespace="b")).allowed
    admin = admin_identity("root")
    assert policy.authorize(admin.user, impersonation("anyone")).allowed


def test_users_by_key_skips_revoked_users_and_adds_system_authenticated() -> None:
    users = users_by_key(
        [
            {"metadata": {"name": "a"}, "spec": {"publicKey": "UA", "groups": ["dev"]}},
            {"metadata": {"name": "b"}, "spec": {"publicKey": "UB", "revoked": True}},
        ]
    )
    assert list(users) == ["UA"]
    assert users["UA"].user == rbac.User("a", ("dev", bootstrap.AUTHENTICATED))
    assert not users["UA"].control_plane


def test_a_control_plane_identity_acts_as_the_component_it_names() -> None:
    component = control_plane_identity("control-plane")
    assert acting_as(component, "system:scheduler").user.name == "system:scheduler"
    assert acting_as(component, "").user.name == "system:control-plane"
    assert acting_as(component, "kubernetes-admin").control_plane
    assert CONTROL_PLANE_GROUP in acting_as(component, "alice").user.groups

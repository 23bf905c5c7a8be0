"""RBAC decides as Kubernetes' authorizer does (``core.access.rbac``), with the built-in roles'
meaning (``core.access.bootstrap``): rule matching (``*``, ``*/subresource``, resource names,
non-resource URLs), bindings' scopes, service-account subjects, aggregation, and kube's words
for an allow and a denial. Cases follow ``plugin/pkg/auth/authorizer/rbac`` tests' shapes."""

from __future__ import annotations

from typing import Any

import pytest

from core.access.bootstrap import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, with_bootstrap
from core.access.rbac import (
    Policy,
    Request,
    User,
    forbidden_status_message,
    rule_allows,
    service_account_user,
)

ALICE = User("alice", ("team-a", "system:authenticated"))


def rbac(kind: str, name: str, namespace: str = "", **body: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata,
            **body}  # fmt: skip


def binding(
    kind: str, name: str, role_kind: str, role: str, *subjects: dict[str, Any], namespace: str = ""
) -> dict[str, Any]:
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}
    return rbac(kind, name, namespace, roleRef=ref, subjects=list(subjects))


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name}


def default_policy(**extra: list[dict[str, Any]]) -> Policy:
    return Policy.build(
        roles=extra.get("roles", []),
        cluster_roles=with_bootstrap(extra.get("cluster_roles", []), CLUSTER_ROLES),
        role_bindings=extra.get("role_bindings", []),
        cluster_role_bindings=with_bootstrap(
            extra.get("cluster_role_bindings", []), CLUSTER_ROLE_BINDINGS
        ),
    )


@pytest.mark.parametrize(
    ("rule", "request_", "allowed"),
    [
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
         Request("get", "pods"), True),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
         Request("list", "pods"), False),
        ({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]},
         Request("delete", "pods"), True),
        ({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["pods"]},
         Request("get", "pods"), False),
        ({"verbs": ["get"], "apiGroups": ["*"], "resources": ["deployments"]},
         Request("get", "deployments", api_group="apps"), True),
        # a resource does not grant its subresources, and a subresource not its resource
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
         Request("get", "pods", subresource="log"), False),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
         Request("get", "pods"), False),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
         Request("get", "pods", subresource="log"), True),
        # */scale: the scale of every resource
        ({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/scale"]},
         Request("update", "deployments", api_group="apps", subresource="scale"), True),
        ({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/scale"]},
         Request("update", "deployments", api_group="apps"), False),
        ({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/scale"]},
         Request("update", "deployments", api_group="apps", subresource="status"), False),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]},
         Request("get", "pods", subresource="log"), True),
        # resource names: only the named objects, so never a list of the collection
        ({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
          "resourceNames": ["web"]}, Request("get", "pods", name="web"), True),
        ({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
          "resourceNames": ["web"]}, Request("get", "pods", name="db"), False),
        ({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
          "resourceNames": ["web"]}, Request("list", "pods"), False),
        # non-resource URLs: exact or a trailing *
        ({"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
         Request("get", path="/healthz"), True),
        ({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]},
         Request("get", path="/apis/apps/v1"), True),
        ({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]},
         Request("get", path="/api"), False),
        ({"verbs": ["get"], "nonResourceURLs": ["*"]}, Request("get", path="/metrics"), True),
        # a resource rule never grants a path, nor a path rule a resource
        ({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
         Request("get", path="/metrics"), False),
        ({"verbs": ["*"], "nonResourceURLs": ["*"]}, Request("get", "pods"), False),
    ],
)  # fmt: skip
def test_rules_match_as_kubernetes_matches_them(
    rule: dict[str, Any], request_: Request, allowed: bool
) -> None:
    assert rule_allows(rule, request_) is allowed


def test_a_role_binding_grants_only_in_its_namespace_even_for_a_cluster_role() -> None:
    policy = default_policy(
        role_bindings=[binding("RoleBinding", "alice-edit", "ClusterRole", "edit", user("alice"),
                               namespace="shop")],
    )  # fmt: skip
    allowed = policy.authorize(ALICE, Request("create", "pods", namespace="shop"))
    assert allowed.allowed
    assert allowed.reason == (
        'RBAC: allowed by RoleBinding "alice-edit/shop" of ClusterRole "edit" to User "alice"'
    )
    denied = policy.authorize(ALICE, Request("create", "pods", namespace="bank"))
    assert not denied.allowed
    assert denied.reason == (
        'User "alice" cannot create resource "pods" in API group "" in the namespace "bank"'
    )
    # nor across all namespaces, nor cluster-scoped kinds
    assert not policy.authorize(ALICE, Request("list", "pods")).allowed
    assert not policy.authorize(ALICE, Request("list", "nodes")).allowed


def test_a_role_is_read_from_the_bindings_own_namespace() -> None:
    reader = rbac(
        "Role",
        "reader",
        "shop",
        rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    )
    policy = default_policy(
        roles=[reader],
        role_bindings=[
            binding("RoleBinding", "r", "Role", "reader", user("alice"), namespace="shop"),
            binding("RoleBinding", "r", "Role", "reader", user("alice"), namespace="bank"),
        ],
    )  # fmt: skip
    assert policy.authorize(ALICE, Request("get", "pods", namespace="shop")).allowed
    assert not policy.authorize(ALICE, Request("get", "pods", namespace="bank")).allowed


def test_groups_and_service_accounts_are_subjects() -> None:
    policy = default_policy(
        role_bindings=[
            binding("RoleBinding", "team", "ClusterRole", "view",
                    {"kind": "Group", "name": "team-a"}, namespace="shop"),
            # a service account subject without a namespace is the binding's namespace's
            binding("RoleBinding", "robot", "ClusterRole", "edit",
                    {"kind": "ServiceAccount", "name": "deployer"}, namespace="shop"),
        ],
    )  # fmt: skip
    assert policy.authorize(ALICE, Request("list", "pods", namespace="shop")).allowed
    robot = User(service_account_user("shop", "deployer"))
    decision = policy.authorize(robot, Request("create", "deployments", "apps", "shop"))
    assert decision.allowed
    assert decision.reason.endswith('to ServiceAccount "shop/deployer"')
    elsewhere = User(service_account_user("bank", "deployer"))
    assert not policy.authorize(elsewhere, Request("create", "deployments", "apps", "shop")).allowed


def test_view_edit_admin_and_cluster_admin_mean_what_kubernetes_means() -> None:
    policy = default_policy(
        role_bindings=[
            binding("RoleBinding", "v", "ClusterRole", "view", user("viewer"), namespace="ns"),
            binding("RoleBinding", "e", "ClusterRole", "edit", user("editor"), namespace="ns"),
            binding("RoleBinding", "a", "ClusterRole", "admin", user("admin"), namespace="ns"),
        ],
    )  # fmt: skip

    def may(name: str, verb: str, resource: str, group: str = "", sub: str = "") -> bool:
        request = Request(verb, resource, group, "ns", subresource=sub)
        return policy.authorize(User(name), request).allowed

    assert may("viewer", "list", "pods") and may("viewer", "get", "pods", sub="log")
    assert may("viewer", "watch", "deployments", "apps")
    assert not may("viewer", "get", "secrets")
    assert not may("viewer", "create", "pods") and not may("viewer", "create", "pods", sub="exec")
    assert may("editor", "get", "secrets") and may("editor", "create", "pods", sub="exec")
    assert may("editor", "update", "deployments", "apps", sub="scale")
    assert not may("editor", "create", "rolebindings", "rbac.authorization.k8s.io")
    # the status subresource reads with its object, as horizontalpodautoscalers/status does
    assert may("viewer", "get", "verticalpodautoscalers", "autoscaling.k8s.io", sub="status")
    assert may("viewer", "get", "horizontalpodautoscalers", "autoscaling", sub="status")
    # Kubernetes' bootstrap policy does not aggregate pods/resize into edit or admin: patching
    # a pod does not resize it, a resize needs a rule naming the subresource
    assert may("editor", "patch", "pods") and not may("editor", "patch", "pods", sub="resize")
    assert not may("admin", "patch", "pods", sub="resize")
    assert may("admin", "create", "rolebindings", "rbac.authorization.k8s.io")
    assert may("admin", "delete", "pods") and may("admin", "list", "pods")
    # nobody but cluster-admin edits quotas, and nothing namespaced reaches nodes
    assert not may("admin", "update", "resourcequotas")
    root = User("root", ("system:masters",))
    decision = policy.authorize(root, Request("delete", "nodes", name="n1"))
    assert decision.allowed
    assert decision.reason == (
        'RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole "cluster-admin" '
        'to Group "system:masters"'
    )


def test_a_labelled_cluster_role_extends_the_aggregated_roles() -> None:
    extra = rbac("ClusterRole", "crontabs-edit",
                 rules=[{"apiGroups": ["stable.example.com"], "resources": ["crontabs"],
                         "verbs": ["create"]}])  # fmt: skip
    extra["metadata"]["labels"] = {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}
    request = Request("create", "crontabs", "stable.example.com", "ns")
    bound = [binding("RoleBinding", "e", "ClusterRole", "edit", user("editor"), namespace="ns")]
    assert not default_policy(role_bindings=bound).authorize(User("editor"), request).allowed
    policy = default_policy(cluster_roles=[extra], role_bindings=bound)
    assert policy.authorize(User("editor"), request).allowed
    # view does not aggregate edit's additions
    viewer = [binding("RoleBinding", "v", "ClusterRole", "view", user("v"), namespace="ns")]
    policy = default_policy(cluster_roles=[extra], role_bindings=viewer)
    assert not policy.authorize(User("v"), request).allowed


def test_a_binding_to_a_missing_role_grants_nothing_until_the_role_appears() -> None:
    bound = [binding("RoleBinding", "b", "Role", "later", user("alice"), namespace="ns")]
    request = Request("get", "pods", namespace="ns")
    assert not default_policy(role_bindings=bound).authorize(ALICE, request).allowed
    later = rbac(
        "Role", "later", "ns", rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    )
    assert default_policy(roles=[later], role_bindings=bound).authorize(ALICE, request).allowed


def test_a_stored_cluster_role_replaces_its_built_in() -> None:
    narrowed = rbac(
        "ClusterRole",
        "view",
        rules=[{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}],
    )
    bound = [binding("RoleBinding", "v", "ClusterRole", "view", user("v"), namespace="ns")]
    policy = default_policy(cluster_roles=[narrowed], role_bindings=bound)
    assert policy.authorize(User("v"), Request("get", "services", namespace="ns")).allowed
    assert not policy.authorize(User("v"), Request("get", "pods", namespace="ns")).allowed


def test_everyone_authenticated_may_discover_and_check_health() -> None:
    policy = default_policy()
    anyone = User("bob", ("system:authenticated",))
    assert policy.authorize(anyone, Request("get", path="/apis/apps/v1")).allowed
    assert not policy.authorize(anyone, Request("get", path="/metrics")).allowed
    stranger = User("system:anonymous", ("system:unauthenticated",))
    assert policy.authorize(stranger, Request("get", path="/healthz")).allowed
    assert not policy.authorize(stranger, Request("get", path="/api")).allowed
    denied = policy.authorize(anyone, Request("get", path="/metrics"))
    assert denied.reason == 'User "bob" cannot get path "/metrics"'


def test_denials_read_as_kube_apiservers_forbidden_status() -> None:
    request = Request("get", "pods", namespace="shop", name="web")
    assert forbidden_status_message(ALICE, request, qualified_resource="pods") == (
        'pods "web" is forbidden: User "alice" cannot get resource "pods" in API group "" '
        'in the namespace "shop"'
    )
    scale = Request("update", "deployments", "apps", subresource="scale")
    assert forbidden_status_message(ALICE, scale, qualified_resource="deployments.apps") == (
        'deployments.apps is forbidden: User "alice" cannot update resource '
        '"deployments/scale" in API group "apps" at the cluster scope'
    )


def test_rules_for_lists_what_applies_to_a_user_in_a_namespace() -> None:
    bound = [binding("RoleBinding", "v", "ClusterRole", "view", user("alice"), namespace="ns")]
    policy = default_policy(role_bindings=bound)
    in_ns = policy.rules_for(ALICE, "ns")
    assert any("pods/log" in r.get("resources", ()) for r in in_ns)
    assert not any("pods/log" in r.get("resources", ()) for r in policy.rules_for(ALICE, "other"))


def test_a_policy_remembers_its_decisions_and_a_new_policy_decides_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import core.access.rbac as rbac_module

    grant = binding("RoleBinding", "alice-edit", "ClusterRole", "edit", user("alice"),
                    namespace="shop")  # fmt: skip
    policy = default_policy(role_bindings=[grant])
    asked = Request("create", "pods", namespace="shop")
    first = policy.authorize(ALICE, asked)
    assert first.allowed and policy.authorize(ALICE, asked) is first
    # The same user with other groups is another caller.
    other = User("alice", ("system:authenticated",))
    assert policy.authorize(other, asked).allowed
    # Without the binding (a new policy is built when bindings change) nothing is remembered.
    assert not default_policy().authorize(ALICE, asked).allowed
    # Bounded: past the bound the memory starts over.
    monkeypatch.setattr(rbac_module, "DECISIONS_KEPT", 2)
    for namespace in ("a", "b", "c"):
        policy.authorize(ALICE, Request("get", "pods", namespace=namespace))
    assert len(policy._decided) <= 2


def creator_policy(*rules: dict[str, Any]) -> Policy:
    return default_policy(
        roles=[rbac("Role", "maker", "a", rules=list(rules))],
        role_bindings=[
            binding("RoleBinding", "maker", "Role", "maker", user("alice"), namespace="a")
        ],
    )


def test_an_allow_no_object_name_took_part_in_is_taken_once_for_every_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import core.access.rbac as module

    walked: list[Request] = []

    def counted(rule: Any, request: Request) -> bool:
        walked.append(request)
        return rule_allows(rule, request)

    monkeypatch.setattr(module, "rule_allows", counted)
    policy = creator_policy({"verbs": ["create"], "apiGroups": [""], "resources": ["pods"]})
    first = policy.authorize(ALICE, Request("create", "pods", namespace="a", name="p1"))
    assert first.allowed and walked
    rules_walked = len(walked)
    for name in ("p2", "p3"):
        again = policy.authorize(ALICE, Request("create", "pods", namespace="a", name=name))
        assert again == first
    assert len(walked) == rules_walked
    # Another shape (another namespace) is decided on its own.
    assert not policy.authorize(ALICE, Request("create", "pods", namespace="b", name="p4")).allowed
    assert len(walked) > rules_walked


def test_objects_a_rule_names_are_still_decided_each_by_its_name() -> None:
    policy = creator_policy(
        {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["web"]},
        {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]},
    )
    assert policy.authorize(ALICE, Request("get", "pods", namespace="a", name="web")).allowed
    assert not policy.authorize(ALICE, Request("get", "pods", namespace="a", name="db")).allowed
    assert policy.authorize(ALICE, Request("list", "pods", namespace="a")).allowed

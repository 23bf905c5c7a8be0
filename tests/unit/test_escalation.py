"""Kube's escalation checks on roles and bindings (``core.access.escalation``): the covering
rules of ``Covers`` (cases written from ``policy_comparator_test.go`` and ``rule_test.go``:
``*`` verbs and groups, resource ``*``, ``*/sub`` against ``pods/*``, resource names, non-resource
URLs with a trailing ``*``), kube's compacted list of what is not held, and the decisions of
the ``policybased`` storages (``escalate``, ``bind``, the aggregation rule) in kube's words."""

from __future__ import annotations

from typing import Any

import pytest

from core.access.bootstrap import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, with_bootstrap
from core.access.escalation import (
    AGGREGATION_REFUSED,
    breakdown,
    check_binding,
    check_role,
    check_write,
    compact,
    covers,
    escalation_message,
    go_quote,
    non_resource_url_covers,
)
from core.access.rbac import Policy, User

RBAC = "rbac.authorization.k8s.io"
ALICE = User("alice", ("system:authenticated",))


def r(verbs: list[str], groups: list[str] | None = None, resources: list[str] | None = None,
      *, names: list[str] | None = None, urls: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    rule: dict[str, Any] = {"verbs": verbs}
    if groups is not None:
        rule["apiGroups"] = groups
    if resources is not None:
        rule["resources"] = resources
    if names is not None:
        rule["resourceNames"] = names
    if urls is not None:
        rule["nonResourceURLs"] = urls
    return rule


@pytest.mark.parametrize(
    ("owner", "servant", "uncovered"),
    [
        # exact match
        ([r(["get"], ["v1"], ["builds"])], [r(["get"], ["v1"], ["builds"])], []),
        # several owner rules cover one servant rule between them
        ([r(["delete"], ["v1"], ["deployments"]), r(["delete"], ["v1"], ["builds"]),
          r(["update"], ["v1"], ["builds", "deployments"])],
         [r(["delete", "update"], ["v1"], ["builds", "deployments"])], []),
        # one owner rule with two groups covers rules of each
        ([r(["delete", "update"], ["group1", "group2"], ["builds", "deployments"])],
         [r(["delete"], ["group1"], ["deployments"]), r(["update"], ["group2"], ["builds"])],
         []),
        # the one verb/resource pair not held is what is left
        ([r(["delete", "update"], ["v1"], ["builds", "deployments"]),
          r(["delete"], ["v1"], ["pods"])],
         [r(["delete", "update"], ["v1"], ["builds", "deployments", "pods"])],
         [r(["update"], ["v1"], ["pods"])]),
        # apiGroups "*" covers any groups, and "*"; listing groups never covers "*"
        ([r(["get"], ["*"], ["roles"])], [r(["get"], ["group1", "group2"], ["roles"])], []),
        ([r(["get"], ["*"], ["roles"])], [r(["get"], ["*"], ["roles"])], []),
        ([r(["get"], ["dummy-group"], ["roles"])], [r(["get"], ["*"], ["roles"])],
         [r(["get"], ["*"], ["roles"])]),
        # verbs "*" covers any verbs; every verb listed is still not "*"
        ([r(["*"], ["v1"], ["roles"])], [r(["watch", "list"], ["v1"], ["roles"])], []),
        ([r(["*"], ["v1"], ["roles"])], [r(["*"], ["v1"], ["roles"])], []),
        ([r(["get", "list", "watch", "create", "update", "delete", "exec"], ["v1"], ["roles"])],
         [r(["*"], ["v1"], ["roles"])], [r(["*"], ["v1"], ["roles"])]),
        # resources "*" covers any resource (subresources too); listing them never covers "*"
        ([r(["get"], ["v1"], ["*"])], [r(["get"], ["v1"], ["resourcegroup:deployments"])], []),
        ([r(["get"], ["v1"], ["*"])], [r(["get"], ["v1"], ["pods/log"])], []),
        ([r(["get"], ["v1"], ["*"])], [r(["get"], ["v1"], ["*"])], []),
        ([r(["get"], ["v1"], ["roles", "resourcegroup:deployments"])],
         [r(["get"], ["v1"], ["*"])], [r(["get"], ["v1"], ["*"])]),
        # "*/scale" covers every resource's scale; "pods/*" is a name, not a wildcard
        ([r(["get"], ["v1"], ["*/scale"])], [r(["get"], ["v1"], ["foo/scale"])], []),
        ([r(["get"], ["v1"], ["*/scale"])], [r(["get"], ["v1"], ["foo"])],
         [r(["get"], ["v1"], ["foo"])]),
        ([r(["get"], ["v1"], ["pods/*"])], [r(["get"], ["v1"], ["pods/log"])],
         [r(["get"], ["v1"], ["pods/log"])]),
        ([r(["get"], ["v1"], ["pods/*"])], [r(["get"], ["v1"], ["pods/*"])], []),
        ([r(["get"], ["v1"], ["pods"])], [r(["get"], ["v1"], ["pods/log"])],
         [r(["get"], ["v1"], ["pods/log"])]),
        # no resource names owned covers any names; owned names cover only a subset of them
        ([r(["get"], ["v1"], ["pods"], names=[])],
         [r(["get"], ["v1"], ["pods"], names=["foo", "bar"])], []),
        ([r(["get"], ["v1"], ["pods"], names=["foo", "bar"])],
         [r(["get"], ["v1"], ["pods"], names=["foo"])], []),
        ([r(["get"], ["v1"], ["pods"], names=["foo"])],
         [r(["get"], ["v1"], ["pods"], names=["foo", "bar"])],
         [r(["get"], ["v1"], ["pods"], names=["bar"])]),
        ([r(["get"], ["v1"], ["pods"], names=["foo", "bar"])],
         [r(["get"], ["v1"], ["pods"], names=[])], [r(["get"], ["v1"], ["pods"])]),
        # non-resource URLs
        ([r(["*"], urls=["/apis"])], [r(["*"], urls=["/apis"])], []),
        ([r(["*"], urls=["*"])], [r(["*"], urls=["/apis", "/apis/v1", "/"])], []),
        ([r(["*"], urls=["/apis/*"])], [r(["get"], urls=["/apis", "/apis/v1"])],
         [r(["get"], urls=["/apis"])]),
        ([r(["*"], urls=["/apis/*"])], [r(["get"], urls=["/apis/v1/foo", "/apis/v1"])], []),
        ([r(["get"], ["v1"], ["builds"], urls=["/apis"])],
         [r(["get"], ["v1"], ["builds"], urls=["/apis"])], []),
        ([r(["get"], ["v1"], ["builds"])], [r(["get"], ["v1"], ["builds"], urls=["/apis"])],
         [r(["get"], urls=["/apis"])]),
        # a URL rule grants no resource, and a resource rule no URL
        ([r(["*"], urls=["*"])], [r(["get"], [""], ["pods"])], [r(["get"], [""], ["pods"])]),
    ],
)  # fmt: skip
def test_covers_as_kubernetes_covers(
    owner: list[dict[str, Any]], servant: list[dict[str, Any]], uncovered: list[dict[str, Any]]
) -> None:
    held, missing = covers(owner, servant)
    assert held == (not uncovered)

    def canonical(rules: list[dict[str, Any]]) -> list[str]:
        return sorted(repr(sorted(rule.items())) for rule in rules)

    assert canonical(missing) == canonical(uncovered)


@pytest.mark.parametrize(
    ("owned", "wanted", "covered"),
    [
        ("*", "", True), ("*", "/", True), ("*", "/api", True), ("/*", "", False),
        ("/*", "/", True), ("/*", "/foo", True), ("/api", "/api", True),
        ("/apis", "/api", False), ("/api/v1", "/api", False), ("/api/v1", "/api/v1", True),
        ("/api/*", "/api/v1", True), ("/api/*", "/api", False), ("/api/*/*", "/api/v1", False),
        ("/*/v1/*", "/api/v1", False),
    ],
)  # fmt: skip
def test_a_trailing_star_covers_the_paths_it_prefixes(
    owned: str, wanted: str, covered: bool
) -> None:
    assert non_resource_url_covers(owned, wanted) is covered


def test_breakdown_splits_a_rule_into_one_group_resource_verb_and_name_each() -> None:
    rule = r(["get", "list"], ["", "apps"], ["pods"], names=["a", "b"])
    parts = breakdown(rule)
    assert len(parts) == 8
    assert parts[0] == {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"],
                        "resourceNames": ["a"]}  # fmt: skip
    assert breakdown(r(["get"], urls=["/a", "/b"])) == [
        {"nonResourceURLs": ["/a"], "verbs": ["get"]},
        {"nonResourceURLs": ["/b"], "verbs": ["get"]},
    ]


def test_compaction_joins_the_verbs_of_simple_rules_and_leaves_the_others() -> None:
    missing = [
        r(["get"], [""], ["pods"]),
        r(["get"], [""], ["pods"], names=["x"]),
        r(["list"], [""], ["pods"]),
        r(["get"], urls=["/metrics"]),
    ]
    assert compact(missing) == [
        r(["get"], [""], ["pods"], names=["x"]),
        r(["get"], urls=["/metrics"]),
        r(["get", "list"], [""], ["pods"]),
    ]


def test_the_message_lists_what_is_not_held_as_kube_apiserver_does() -> None:
    user = User("alice", ("team-a", "system:authenticated"))
    missing = [
        r(["get"], [""], ["secrets"]),
        r(["list"], [""], ["secrets"]),
        r(["get"], ["apps"], ["deployments"], names=["web"]),
        r(["get"], urls=["/metrics"]),
    ]
    assert escalation_message(user, missing) == (
        'user "alice" (groups=["team-a" "system:authenticated"]) is attempting to grant RBAC '
        "permissions not currently held:\n"
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}\n'
        '{APIGroups:["apps"], Resources:["deployments"], ResourceNames:["web"], Verbs:["get"]}\n'
        '{NonResourceURLs:["/metrics"], Verbs:["get"]}'
    )
    assert escalation_message(User("x"), [r(["get"], [""], ["pods"])]).startswith(
        'user "x" (groups=[]) is attempting'
    )


def test_go_quote_escapes_as_go_does() -> None:
    assert go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote("tab\there\n") == '"tab\\there\\n"'
    assert go_quote("\x01é") == '"\\x01é"'


# --------------------------------------------------------------------------------------------
# The storages' decisions
# --------------------------------------------------------------------------------------------


def obj(kind: str, name: str, namespace: str = "", **body: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": metadata, **body}


def binding(kind: str, name: str, role_kind: str, role: str, who: str, namespace: str = "") -> Any:
    return obj(
        kind, name, namespace,
        roleRef={"apiGroup": RBAC, "kind": role_kind, "name": role},
        subjects=[{"apiGroup": RBAC, "kind": "User", "name": who}],
    )  # fmt: skip


def policy(*objects: dict[str, Any]) -> Policy:
    def of(kind: str) -> list[dict[str, Any]]:
        return [o for o in objects if o["kind"] == kind]

    return Policy.build(
        roles=of("Role"),
        cluster_roles=with_bootstrap(of("ClusterRole"), CLUSTER_ROLES),
        role_bindings=of("RoleBinding"),
        cluster_role_bindings=with_bootstrap(of("ClusterRoleBinding"), CLUSTER_ROLE_BINDINGS),
    )


NS_ADMIN = policy(binding("RoleBinding", "alice-admin", "ClusterRole", "admin", "alice", "a"))


def test_a_namespace_admin_may_bind_edit_and_admin_in_its_namespace_only() -> None:
    for role in ("edit", "admin", "view"):
        verdict = check_binding(
            NS_ADMIN, ALICE,
            manifest=binding("RoleBinding", "x", "ClusterRole", role, "bob", "a"),
        )  # fmt: skip
        assert verdict.allowed, verdict.reason
    assert verdict.reason == 'escalation check: ClusterRole "view" grants nothing not held'
    elsewhere = check_binding(
        NS_ADMIN, ALICE, manifest=binding("RoleBinding", "x", "ClusterRole", "edit", "bob", "b")
    )
    assert not elsewhere.allowed
    assert elsewhere.reason.startswith(
        'rolebindings.rbac.authorization.k8s.io "x" is forbidden: user "alice" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not '
        "currently held:\n"
    )


def test_a_namespace_admin_may_not_bind_cluster_admin_to_itself() -> None:
    verdict = check_binding(
        NS_ADMIN, ALICE,
        manifest=binding("RoleBinding", "mine", "ClusterRole", "cluster-admin", "alice", "a"),
    )  # fmt: skip
    assert not verdict.allowed and not verdict.role_missing
    assert verdict.reason == (
        'rolebindings.rbac.authorization.k8s.io "mine" is forbidden: user "alice" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not '
        "currently held:\n"
        '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}\n'
        '{NonResourceURLs:["*"], Verbs:["*"]}'
    )
    cluster_wide = check_binding(
        NS_ADMIN, ALICE,
        manifest=binding("ClusterRoleBinding", "mine", "ClusterRole", "edit", "alice"),
    )  # fmt: skip
    assert cluster_wide.reason.startswith(
        'clusterrolebindings.rbac.authorization.k8s.io "mine" is forbidden: user "alice"'
    )


def test_bind_on_a_named_role_allows_binding_that_role_and_no_other() -> None:
    binder = obj("ClusterRole", "binder",
                 rules=[r(["bind"], [RBAC], ["clusterroles"], names=["cluster-admin"])])  # fmt: skip
    rights = policy(binder, binding("RoleBinding", "alice-binder", "ClusterRole", "binder",
                                    "alice", "a"))  # fmt: skip
    allowed = check_binding(
        rights, ALICE,
        manifest=binding("RoleBinding", "ok", "ClusterRole", "cluster-admin", "bob", "a"),
    )  # fmt: skip
    assert allowed.allowed
    assert allowed.reason == (
        'bind clusterroles "cluster-admin": RBAC: allowed by RoleBinding "alice-binder/a" of '
        'ClusterRole "binder" to User "alice"'
    )
    for manifest in (
        binding("RoleBinding", "no", "ClusterRole", "admin", "bob", "a"),  # another role
        binding("RoleBinding", "no", "ClusterRole", "cluster-admin", "bob", "b"),  # elsewhere
        binding("ClusterRoleBinding", "no", "ClusterRole", "cluster-admin", "bob"),
    ):
        assert not check_binding(rights, ALICE, manifest=manifest).allowed


def test_a_binding_to_a_missing_role_is_refused_as_not_found_unless_bind_allows_it() -> None:
    verdict = check_binding(
        NS_ADMIN, ALICE, manifest=binding("RoleBinding", "x", "Role", "ghost", "bob", "a")
    )
    assert verdict.role_missing and not verdict.allowed
    assert verdict.reason == 'roles.rbac.authorization.k8s.io "ghost" not found'
    binder = obj("ClusterRole", "binder", rules=[r(["bind"], [RBAC], ["roles"])])
    rights = policy(binder, binding("RoleBinding", "b", "ClusterRole", "binder", "alice", "a"))
    assert check_binding(
        rights, ALICE, manifest=binding("RoleBinding", "x", "Role", "ghost", "bob", "a")
    ).allowed


def test_a_role_binding_to_a_role_is_judged_by_that_roles_rules() -> None:
    readers = obj("Role", "pod-reader", "a", rules=[r(["get"], [""], ["pods"])])
    secrets = obj("Role", "secret-writer", "a", rules=[r(["*"], [""], ["secrets"])])
    viewer = policy(readers, secrets,
                    binding("RoleBinding", "v", "ClusterRole", "view", "alice", "a"))  # fmt: skip
    assert check_binding(
        viewer, ALICE, manifest=binding("RoleBinding", "x", "Role", "pod-reader", "bob", "a")
    ).allowed
    refused = check_binding(
        viewer, ALICE, manifest=binding("RoleBinding", "x", "Role", "secret-writer", "bob", "a")
    )
    assert refused.reason.endswith('\n{APIGroups:[""], Resources:["secrets"], Verbs:["*"]}')


def test_a_role_may_grant_only_what_its_writer_holds_there() -> None:
    pods = obj("Role", "pods", "a", rules=[r(["get", "list"], [""], ["pods"])])
    assert check_role(NS_ADMIN, ALICE, manifest=pods).allowed
    wider = obj("Role", "wider", "a", rules=[r(["*"], [""], ["secrets"])])
    refused = check_role(NS_ADMIN, ALICE, manifest=wider)
    assert refused.reason == (
        'roles.rbac.authorization.k8s.io "wider" is forbidden: user "alice" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not '
        'currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["*"]}'
    )
    elsewhere = obj("Role", "pods", "b", rules=[r(["get"], [""], ["pods"])])
    assert not check_role(NS_ADMIN, ALICE, manifest=elsewhere).allowed
    # A ClusterRole is judged by cluster-wide rights alone: a namespace admin holds none.
    cluster = obj("ClusterRole", "pods", rules=[r(["get"], [""], ["pods"])])
    assert check_role(NS_ADMIN, ALICE, manifest=cluster).reason.startswith(
        'clusterroles.rbac.authorization.k8s.io "pods" is forbidden: user "alice"'
    )


def test_escalate_allows_writing_a_wider_role() -> None:
    escalator = obj("ClusterRole", "escalator",
                    rules=[r(["escalate"], [RBAC], ["roles"])])  # fmt: skip
    rights = policy(escalator,
                    binding("RoleBinding", "e", "ClusterRole", "escalator", "alice", "a"))  # fmt: skip
    wider = obj("Role", "wider", "a", rules=[r(["*"], ["*"], ["*"])])
    verdict = check_role(rights, ALICE, manifest=wider)
    assert verdict.allowed
    assert verdict.reason == (
        'escalate roles: RBAC: allowed by RoleBinding "e/a" of ClusterRole "escalator" to '
        'User "alice"'
    )
    assert not check_role(rights, ALICE, manifest={**wider, "kind": "ClusterRole"}).allowed


def test_escalate_limited_to_a_name_allows_only_updates_of_that_role() -> None:
    # kube asks with the request's name, which a create (a POST to the collection) lacks.
    escalator = obj("ClusterRole", "escalator",
                    rules=[r(["escalate"], [RBAC], ["roles"], names=["wider"])])  # fmt: skip
    rights = policy(escalator,
                    binding("RoleBinding", "e", "ClusterRole", "escalator", "alice", "a"))  # fmt: skip
    wider = obj("Role", "wider", "a", rules=[r(["*"], [""], ["secrets"])])
    assert not check_role(rights, ALICE, manifest=wider).allowed
    assert check_role(rights, ALICE, manifest=wider, old=wider).allowed


def test_an_aggregation_rule_needs_full_authority_or_escalate() -> None:
    aggregating = obj(
        "ClusterRole", "gatherer",
        aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}, rules=[],
    )  # fmt: skip
    # Every rule of the role is held (it has none), but it could gather anything.
    rbac_writer = obj("ClusterRole", "rbac-writer",
                      rules=[r(["create", "update"], [RBAC], ["clusterroles"]), r(["*"], ["*"], ["pods"])])  # fmt: skip
    rights = policy(rbac_writer,
                    binding("ClusterRoleBinding", "w", "ClusterRole", "rbac-writer", "alice"))  # fmt: skip
    refused = check_role(rights, ALICE, manifest=aggregating)
    assert refused.reason == (
        f'clusterroles.rbac.authorization.k8s.io "gatherer" is forbidden: {AGGREGATION_REFUSED}'
    )
    # Dropping the rule on an update is changing it too.
    plain = obj("ClusterRole", "gatherer", rules=[r(["get"], [""], ["pods"])])
    assert not check_role(rights, ALICE, manifest=plain, old=aggregating).allowed
    assert check_role(rights, ALICE, manifest=plain).allowed
    full = policy(binding("ClusterRoleBinding", "root", "ClusterRole", "cluster-admin", "alice"))
    assert check_role(full, ALICE, manifest=aggregating).allowed
    escalator = obj("ClusterRole", "escalator",
                    rules=[r(["escalate"], [RBAC], ["clusterroles"])])  # fmt: skip
    allowed = policy(escalator,
                     binding("ClusterRoleBinding", "e", "ClusterRole", "escalator", "alice"))  # fmt: skip
    assert check_role(allowed, ALICE, manifest=aggregating).allowed


def test_group_rights_count_as_the_users_own() -> None:
    team = User("bob", ("team-a", "system:authenticated"))
    rights = policy(obj("RoleBinding", "t", "a",
                        roleRef={"apiGroup": RBAC, "kind": "ClusterRole", "name": "edit"},
                        subjects=[{"apiGroup": RBAC, "kind": "Group", "name": "team-a"}]))  # fmt: skip
    assert check_binding(
        rights, team, manifest=binding("RoleBinding", "x", "ClusterRole", "view", "carl", "a")
    ).allowed


def test_only_rbac_objects_are_checked() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}}
    assert check_write(NS_ADMIN, ALICE, manifest=pod) is None
    wider = obj("Role", "wider", "a", rules=[r(["*"], [""], ["secrets"])])
    verdict = check_write(NS_ADMIN, ALICE, manifest=wider)
    assert verdict is not None and not verdict.allowed

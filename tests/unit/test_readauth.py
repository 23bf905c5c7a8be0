"""Reads as RBAC requests (``core.access.readauth``): a query, a history read and an endpoints
lookup ask kube's verb on kube's resource, and a refusal reads as kube-apiserver's Forbidden."""

from __future__ import annotations

from core.access.bootstrap import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, with_bootstrap
from core.access.rbac import Policy, Request, User
from core.access.readauth import (
    AUDIT_PATH,
    audit_request,
    endpoints_requests,
    events_request,
    history_request,
    logs_request,
    query_request,
    read_forbidden,
    replay_request,
    usage_request,
)

BOB = User("bob", ("system:authenticated",))


def view_in_a() -> Policy:
    binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "bob-view", "namespace": "a"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}],
    }
    return Policy.build(
        roles=[],
        cluster_roles=with_bootstrap([], CLUSTER_ROLES),
        role_bindings=[binding],
        cluster_role_bindings=with_bootstrap([], CLUSTER_ROLE_BINDINGS),
    )


def test_a_named_query_is_a_get_and_a_query_without_a_name_a_list() -> None:
    assert query_request(kind="Pod", namespace="a", name="web") == Request(
        verb="get", resource="pods", namespace="a", name="web"
    )
    assert query_request(kind="Deployment", namespace="a", name=None) == Request(
        verb="list", resource="deployments", api_group="apps", namespace="a"
    )


def test_a_list_across_namespaces_is_asked_at_the_cluster_scope() -> None:
    assert query_request(kind="Pod", namespace=None, name=None) == Request(
        verb="list", resource="pods"
    )


def test_a_cluster_scoped_kind_is_asked_at_the_cluster_scope_whatever_the_namespace() -> None:
    assert query_request(kind="Node", namespace="a", name="n1") == Request(
        verb="get", resource="nodes", name="n1"
    )
    assert query_request(kind="User", namespace="", name=None) == Request(
        verb="list", resource="users", api_group="auth.fleetlog.dev"
    )


def test_an_objects_history_is_a_get_of_that_object_as_its_event_subject_spells_it() -> None:
    assert history_request(kind="replicaset", namespace="b", name="web-1") == Request(
        verb="get", resource="replicasets", api_group="apps", namespace="b", name="web-1"
    )
    assert history_request(kind="namespace", namespace="", name="b") == Request(
        verb="get", resource="namespaces", name="b"
    )


def test_endpoints_need_the_service_and_its_namespaces_slices() -> None:
    service, slices = endpoints_requests(namespace="a", service="web")
    assert service == Request(verb="get", resource="services", namespace="a", name="web")
    assert slices == Request(
        verb="list", resource="endpointslices", api_group="discovery.k8s.io", namespace="a"
    )


def test_view_in_one_namespace_reads_it_but_not_another_nor_all_nor_its_secrets() -> None:
    policy = view_in_a()

    def may(request: Request) -> bool:
        return policy.authorize(BOB, request).allowed

    assert may(query_request(kind="Pod", namespace="a", name=None))
    assert may(query_request(kind="Pod", namespace="a", name="web"))
    assert not may(query_request(kind="Pod", namespace="b", name=None))
    assert not may(query_request(kind="Pod", namespace=None, name=None))
    assert not may(query_request(kind="Secret", namespace="a", name=None))
    assert not may(query_request(kind="Secret", namespace="a", name="db"))
    assert may(history_request(kind="pod", namespace="a", name="web"))
    assert not may(history_request(kind="pod", namespace="b", name="web"))


def test_refusals_read_as_kube_apiservers_forbidden_messages() -> None:
    every_pod = query_request(kind="Pod", namespace=None, name=None)
    assert read_forbidden(BOB, every_pod) == (
        'pods is forbidden: User "bob" cannot list resource "pods" in API group "" '
        "at the cluster scope"
    )
    one = query_request(kind="Deployment", namespace="b", name="web")
    assert read_forbidden(BOB, one) == (
        'deployments.apps "web" is forbidden: User "bob" cannot get resource "deployments" '
        'in API group "apps" in the namespace "b"'
    )


def test_reads_of_the_streams_ask_what_kubectl_would() -> None:
    assert logs_request(namespace="a", pod="web") == Request(
        verb="get", resource="pods", subresource="log", namespace="a", name="web"
    )
    assert usage_request(kind="pod", namespace="a") == Request(
        verb="list", resource="pods", api_group="metrics.k8s.io", namespace="a"
    )
    assert usage_request(kind="node", namespace="a") == Request(
        verb="list", resource="nodes", api_group="metrics.k8s.io"
    )
    assert events_request(namespace=None) == Request(verb="list", resource="events")
    assert replay_request(kind="rolebinding", namespace="a") == Request(
        verb="list", resource="rolebindings", api_group="rbac.authorization.k8s.io",
        namespace="a",
    )  # fmt: skip


def test_a_view_user_reads_its_namespaces_logs_events_and_usage_but_not_the_audit() -> None:
    policy = view_in_a()
    allowed = [
        logs_request(namespace="a", pod="web"), usage_request(kind="pod", namespace="a"),
        events_request(namespace="a"), replay_request(kind="pod", namespace="a"),
    ]  # fmt: skip
    assert all(policy.authorize(BOB, request).allowed for request in allowed)
    refused = [
        logs_request(namespace="b", pod="web"), events_request(namespace=None),
        replay_request(kind="rolebinding", namespace="a"), audit_request(),
    ]  # fmt: skip
    assert not any(policy.authorize(BOB, request).allowed for request in refused)
    assert read_forbidden(BOB, audit_request()) == (
        'forbidden: User "bob" cannot get path "/fleetlog/audit"'
    )


def test_only_cluster_admin_among_the_built_in_roles_may_read_the_audit() -> None:
    granted = [
        role["metadata"]["name"]
        for role in CLUSTER_ROLES
        if any("*" in rule.get("nonResourceURLs", ()) or AUDIT_PATH in
               rule.get("nonResourceURLs", ()) for rule in role.get("rules") or ())
    ]  # fmt: skip
    assert granted == ["cluster-admin"]

"""The roles every cluster starts with: ``cluster-admin``, ``admin``, ``edit``, ``view`` and the
public ones, as Kubernetes' bootstrap policy defines them.

Why this exists: users bind these roles by name (``kubectl create rolebinding … --clusterrole=
edit``) and expect Kubernetes' meaning: ``view`` reads everything in a namespace except
secrets, ``edit`` also writes workloads and may read secrets and exec into pods, ``admin``
also manages roles and role bindings in the namespace, ``cluster-admin`` may do anything.
``admin``, ``edit`` and ``view`` are aggregated (``aggregate-to-*`` labels) so that a user can
extend them with a labelled ClusterRole, as in Kubernetes. The rules follow
``plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`` for the resources fleetlog
serves or will serve (the mesh and autoscaling kinds included, so a binding made today keeps
its meaning when they arrive); ``metrics.k8s.io`` is in ``view`` because fleetlog serves it
itself (in Kubernetes metrics-server installs the same aggregation).

These manifests exist without being created (the API server reconciles them at start-up in
Kubernetes); :func:`with_bootstrap` adds them beneath what the log holds, and a stored object of
the same name replaces its built-in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

RBAC_GROUP: Final = "rbac.authorization.k8s.io"
AGGREGATE_TO: Final = "rbac.authorization.k8s.io/aggregate-to-"
BOOTSTRAP_LABEL: Final = {"kubernetes.io/bootstrapping": "rbac-defaults"}

SYSTEM_MASTERS: Final = "system:masters"
AUTHENTICATED: Final = "system:authenticated"
UNAUTHENTICATED: Final = "system:unauthenticated"

READ: Final = ("get", "list", "watch")
WRITE: Final = ("create", "delete", "deletecollection", "patch", "update")
READ_WRITE: Final = READ + WRITE


def rule(verbs: Iterable[str], group: str, *resources: str) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}


def _cluster_role(
    name: str,
    rules: list[dict[str, Any]] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    aggregate_from: str | None = None,
) -> dict[str, Any]:
    role: dict[str, Any] = {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**BOOTSTRAP_LABEL, **(labels or {})}},
    }
    if aggregate_from is not None:
        selector = {"matchLabels": {f"{AGGREGATE_TO}{aggregate_from}": "true"}}
        role["aggregationRule"] = {"clusterRoleSelectors": [selector]}
        role["rules"] = []
    else:
        role["rules"] = rules or []
    return role


def _aggregates_to(*levels: str) -> dict[str, str]:
    return {f"{AGGREGATE_TO}{level}": "true" for level in levels}


_VIEW_RULES = [
    rule(READ, "", "pods", "replicationcontrollers", "replicationcontrollers/scale",
         "serviceaccounts", "services", "services/status", "endpoints",
         "persistentvolumeclaims", "persistentvolumeclaims/status", "configmaps"),
    rule(READ, "", "limitranges", "resourcequotas", "bindings", "events", "pods/status",
         "resourcequotas/status", "namespaces/status", "replicationcontrollers/status",
         "pods/log"),
    rule(READ, "", "namespaces"),
    rule(READ, "discovery.k8s.io", "endpointslices"),
    rule(READ, "apps", "controllerrevisions", "statefulsets", "statefulsets/scale",
         "statefulsets/status", "daemonsets", "daemonsets/status", "deployments",
         "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
         "replicasets/status"),
    rule(READ, "autoscaling", "horizontalpodautoscalers", "horizontalpodautoscalers/status"),
    rule(READ, "autoscaling.k8s.io", "verticalpodautoscalers", "verticalpodautoscalers/status"),
    rule(READ, "batch", "jobs", "jobs/status", "cronjobs", "cronjobs/status"),
    rule(READ, "policy", "poddisruptionbudgets", "poddisruptionbudgets/status"),
    rule(READ, "networking.k8s.io", "ingresses", "ingresses/status", "networkpolicies"),
    rule(READ, "networking.istio.io", "virtualservices", "destinationrules", "gateways",
         "serviceentries"),
    rule(READ, "metrics.k8s.io", "pods", "nodes"),
]  # fmt: skip

_EDIT_RULES = [
    rule(("impersonate",), "", "serviceaccounts"),
    rule(WRITE, "", "pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"),
    rule(("create",), "", "pods/eviction"),
    rule(WRITE, "", "replicationcontrollers", "replicationcontrollers/scale",
         "serviceaccounts", "services", "services/proxy", "persistentvolumeclaims",
         "configmaps", "secrets"),
    rule(("create",), "", "serviceaccounts/token"),
    rule(WRITE, "apps", "statefulsets", "statefulsets/scale", "daemonsets", "deployments",
         "deployments/scale", "deployments/rollback", "replicasets", "replicasets/scale"),
    rule(WRITE, "autoscaling", "horizontalpodautoscalers"),
    rule(WRITE, "autoscaling.k8s.io", "verticalpodautoscalers"),
    rule(WRITE, "batch", "jobs", "cronjobs"),
    rule(WRITE, "policy", "poddisruptionbudgets"),
    rule(WRITE, "networking.k8s.io", "ingresses", "networkpolicies"),
    rule(WRITE, "networking.istio.io", "virtualservices", "destinationrules", "gateways",
         "serviceentries"),
    rule(READ, "", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets",
         "services/proxy"),
]  # fmt: skip

_ADMIN_RULES = [
    rule(READ_WRITE, RBAC_GROUP, "roles", "rolebindings"),
    rule(("create",), "authorization.k8s.io", "localsubjectaccessreviews"),
]

_HEALTH_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]

_BASIC_USER_RULES = [
    rule(("create",), "authorization.k8s.io", "selfsubjectaccessreviews",
         "selfsubjectrulesreviews"),
    rule(("create",), "authentication.k8s.io", "selfsubjectreviews"),
]  # fmt: skip

_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", *_HEALTH_URLS]
_DISCOVERY_RULES = [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}]

CLUSTER_ROLES: Final[tuple[dict[str, Any], ...]] = (
    _cluster_role(
        "cluster-admin",
        [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    ),
    _cluster_role("admin", aggregate_from="admin"),
    _cluster_role("edit", aggregate_from="edit", labels=_aggregates_to("admin")),
    _cluster_role("view", aggregate_from="view", labels=_aggregates_to("admin", "edit")),
    _cluster_role("system:aggregate-to-admin", _ADMIN_RULES, labels=_aggregates_to("admin")),
    _cluster_role("system:aggregate-to-edit", _EDIT_RULES, labels=_aggregates_to("admin", "edit")),
    _cluster_role(
        "system:aggregate-to-view", _VIEW_RULES, labels=_aggregates_to("admin", "edit", "view")
    ),
    _cluster_role("system:basic-user", _BASIC_USER_RULES),
    _cluster_role("system:discovery", _DISCOVERY_RULES),
    _cluster_role(
        "system:public-info-viewer", [{"nonResourceURLs": _HEALTH_URLS, "verbs": ["get"]}]
    ),
)


def _cluster_role_binding(name: str, role: str, *groups: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(BOOTSTRAP_LABEL)},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups],
    }


CLUSTER_ROLE_BINDINGS: Final[tuple[dict[str, Any], ...]] = (
    _cluster_role_binding("cluster-admin", "cluster-admin", SYSTEM_MASTERS),
    _cluster_role_binding("system:basic-user", "system:basic-user", AUTHENTICATED),
    _cluster_role_binding("system:discovery", "system:discovery", AUTHENTICATED),
    _cluster_role_binding(
        "system:public-info-viewer", "system:public-info-viewer", AUTHENTICATED, UNAUTHENTICATED
    ),
)


def with_bootstrap(
    stored: Iterable[Mapping[str, Any]], built_in: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The built-in objects beneath the stored ones: a stored object of the same name wins."""
    stored = list(stored)
    names = {(o.get("metadata") or {}).get("name") for o in stored}
    return [o for o in built_in if o["metadata"]["name"] not in names] + stored

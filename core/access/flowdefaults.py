"""The FlowSchemas and PriorityLevelConfigurations every cluster starts with, as Kubernetes'
``apis/flowcontrol/bootstrap`` defines them (v1, the mandatory and suggested objects), and how
fleetlog's own identities map onto the users and groups they name.

Why this exists: requests are classified by these objects from the first command on, before
anyone has written one; an administrator tunes a level or adds a schema by applying an object of
the same (or a new) name, which :func:`configuration` puts above the built-in one, as kube's
``apf.kubernetes.io/autoupdate-spec: "false"`` keeps an edited default. fleetlog's control-plane
components act as ``system:<role>``; kube's schemas know them as ``system:kube-controller-manager``,
``system:kube-scheduler`` and ``system:node:<name>`` in ``system:nodes``, so :func:`flow_user`
translates before classification and kube's defaults keep their meaning: controllers and the
scheduler at ``workload-high``, nodes at ``system``/``node-high``, users at ``global-default``.
Left out of kube's suggestions: ``workload-leader-election`` and ``endpoint-controller``'s
leader-election twin (fleetlog elects leaders in a key-value bucket, not through the API).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from core.access.bootstrap import AUTHENTICATED, SYSTEM_MASTERS, UNAUTHENTICATED, with_bootstrap
from core.access.fairness import Level
from core.access.flowkinds import API_VERSION
from core.access.rbac import User

NODES: Final = "system:nodes"
SERVICE_ACCOUNTS: Final = "system:serviceaccounts"
CONTROLLER_MANAGER: Final = "system:kube-controller-manager"
SCHEDULER: Final = "system:kube-scheduler"
AUTOUPDATE: Final = {"apf.kubernetes.io/autoupdate-spec": "true"}


def _level(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name, "annotations": dict(AUTOUPDATE)},
        "spec": spec,
    }


def _limited(
    name: str, shares: int, *, lendable: int, queues: int = 0, hand: int = 0
) -> dict[str, Any]:
    response: dict[str, Any] = {"type": "Reject"}
    if queues:
        queuing = {"queues": queues, "handSize": hand, "queueLengthLimit": 50}
        response = {"type": "Queue", "queuing": queuing}
    limited = {
        "nominalConcurrencyShares": shares,
        "lendablePercent": lendable,
        "limitResponse": response,
    }
    return _level(name, {"type": "Limited", "limited": limited})


PRIORITY_LEVELS: Final[tuple[dict[str, Any], ...]] = (
    _level(
        "exempt",
        {"type": "Exempt", "exempt": {"nominalConcurrencyShares": 0, "lendablePercent": 0}},
    ),
    _limited("system", 30, lendable=33, queues=64, hand=6),
    _limited("node-high", 40, lendable=25, queues=64, hand=6),
    _limited("leader-election", 10, lendable=0, queues=16, hand=4),
    _limited("workload-high", 40, lendable=50, queues=128, hand=6),
    _limited("workload-low", 100, lendable=90, queues=128, hand=6),
    _limited("global-default", 20, lendable=50, queues=128, hand=6),
    _limited("catch-all", 5, lendable=0),
)


def _group(name: str) -> dict[str, Any]:
    return {"kind": "Group", "group": {"name": name}}


def _user(name: str) -> dict[str, Any]:
    return {"kind": "User", "user": {"name": name}}


def _service_account(namespace: str, name: str) -> dict[str, Any]:
    return {"kind": "ServiceAccount", "serviceAccount": {"namespace": namespace, "name": name}}


def _resources(
    verbs: Sequence[str] = ("*",),
    groups: Sequence[str] = ("*",),
    resources: Sequence[str] = ("*",),
    *,
    cluster_scope: bool = True,
    namespaces: Sequence[str] = ("*",),
) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "verbs": list(verbs),
        "apiGroups": list(groups),
        "resources": list(resources),
        "namespaces": list(namespaces),
    }
    if cluster_scope:
        rule["clusterScope"] = True
    return rule


_EVERYTHING = {
    "resourceRules": [_resources()],
    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
}


def _schema(
    name: str,
    level: str,
    precedence: int,
    subjects: list[dict[str, Any]],
    *,
    method: str | None = None,
    rules: Mapping[str, Any] = _EVERYTHING,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "priorityLevelConfiguration": {"name": level},
        "matchingPrecedence": precedence,
        "rules": [{"subjects": subjects, **rules}],
    }
    if method is not None:
        spec["distinguisherMethod"] = {"type": method}
    return {
        "apiVersion": API_VERSION,
        "kind": "FlowSchema",
        "metadata": {"name": name, "annotations": dict(AUTOUPDATE)},
        "spec": spec,
    }


_EVERYONE = [_group(UNAUTHENTICATED), _group(AUTHENTICATED)]

FLOW_SCHEMAS: Final[tuple[dict[str, Any], ...]] = (
    _schema("exempt", "exempt", 1, [_group(SYSTEM_MASTERS)]),
    _schema(
        "probes", "exempt", 2, _EVERYONE,
        rules={"nonResourceRules": [
            {"verbs": ["get"], "nonResourceURLs": ["/healthz", "/readyz", "/livez"]}]},
    ),
    _schema(
        "system-leader-election", "leader-election", 100,
        [_user(CONTROLLER_MANAGER), _user(SCHEDULER), _service_account("kube-system", "*")],
        method="ByUser",
        rules={"resourceRules": [
            _resources(("get", "create", "update"), ("coordination.k8s.io",), ("leases",),
                       cluster_scope=False)]},
    ),
    _schema(
        "endpoint-controller", "workload-high", 150,
        [_user(CONTROLLER_MANAGER), _service_account("kube-system", "endpoint-controller")],
        method="ByUser",
        rules={"resourceRules": [
            _resources(("get", "create", "update"), ("",), ("endpoints",), cluster_scope=False)]},
    ),
    _schema(
        "system-node-high", "node-high", 400, [_group(NODES)], method="ByUser",
        rules={"resourceRules": [
            _resources(("*",), ("",), ("nodes", "nodes/status"), namespaces=()),
            _resources(("*",), ("coordination.k8s.io",), ("leases",), cluster_scope=False,
                       namespaces=("kube-node-lease",))]},
    ),
    _schema("system-nodes", "system", 500, [_group(NODES)], method="ByUser"),
    _schema("kube-controller-manager", "workload-high", 800, [_user(CONTROLLER_MANAGER)],
            method="ByNamespace"),
    _schema("kube-scheduler", "workload-high", 800, [_user(SCHEDULER)], method="ByNamespace"),
    _schema("kube-system-service-accounts", "workload-high", 900,
            [_service_account("kube-system", "*")], method="ByNamespace"),
    _schema("service-accounts", "workload-low", 9000, [_group(SERVICE_ACCOUNTS)],
            method="ByUser"),
    _schema("global-default", "global-default", 9900, _EVERYONE, method="ByUser"),
    _schema("catch-all", "catch-all", 10000, _EVERYONE, method="ByUser"),
)  # fmt: skip
"""kube's mandatory (``exempt``, ``catch-all``) and suggested schemas."""


def configuration(
    stored_schemas: Iterable[Mapping[str, Any]], stored_levels: Iterable[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], dict[str, Level]]:
    """The schemas and levels in force: the built-in ones beneath the stored ones (a stored
    object replaces the built-in of its name). A schema naming a level that does not exist
    is left out, as kube-apiserver leaves it (its ``Dangling`` condition): its requests fall
    to the next schema that matches."""
    levels = {
        (m.get("metadata") or {}).get("name", ""): Level.from_manifest(m)
        for m in with_bootstrap(stored_levels, PRIORITY_LEVELS)
    }
    schemas = [
        s
        for s in with_bootstrap(stored_schemas, FLOW_SCHEMAS)
        if ((s.get("spec") or {}).get("priorityLevelConfiguration") or {}).get("name") in levels
    ]
    return schemas, levels


def flow_user(actor: str, groups: Iterable[str] = ()) -> User:
    """The user a request is classified as. fleetlog's components (``system:<role>``) are
    the kube components whose work they do; everyone else is themselves, authenticated."""
    stated = tuple(groups)
    if actor.startswith("system:node/"):
        node = actor.removeprefix("system:node/")
        return User(f"system:node:{node}", (NODES, AUTHENTICATED, *stated))
    if actor.startswith("system:scheduler"):
        return User(SCHEDULER, (AUTHENTICATED, *stated))
    if actor.startswith("system:") and not actor.startswith("system:serviceaccount:"):
        return User(CONTROLLER_MANAGER, (AUTHENTICATED, *stated))
    if actor.startswith("system:serviceaccount:"):
        namespace = actor.split(":")[2] if actor.count(":") >= 3 else ""
        accounts = (SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{namespace}")
        return User(actor, (*accounts, AUTHENTICATED, *stated))
    return User(actor, (AUTHENTICATED, *stated))

"""A read seen as Kubernetes' authorizer sees it: which verb on which resource a query, a
history read or an endpoints lookup asks for, and kube's words when RBAC refuses it.

Why this exists: issue 17 asks RBAC to decide every read of the NATS door as kube-apiserver
decides every GET (a user who may not see a namespace sees none of its objects, their history
or their endpoints). The query service, the history service and the endpoints service each
receive a question in their own shape (a kind with a namespace and maybe a name, an object's
event subject, a service); this module is their one translation into kube's request
(``get`` one object, ``list`` a namespace, ``list`` at the cluster scope for ``-A``), so the
three cannot drift from each other or from ``fleetlog auth can-i``. Pure: the services pass in
what they were asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from core.access.rbac import Request, User, forbidden_message, forbidden_status_message
from core.kubeapi.resources import BY_KIND, APIResource

METRICS_GROUP = "metrics.k8s.io"

_BY_LOWER_KIND: Mapping[str, APIResource] = MappingProxyType(
    {kind.lower(): resource for kind, resource in BY_KIND.items()}
)


def _resource_of(kind: str) -> tuple[str, str, bool]:
    """(plural, API group, namespaced) of a kind named as stored (``Pod``) or as an event
    subject spells it (``pod``); a kind kube does not know is its lower-case plural in the
    core group (as ``core.access.commandauth.command_request`` names it)."""
    resource = BY_KIND.get(kind) or _BY_LOWER_KIND.get(kind.lower())
    if resource is None:
        return kind.lower() + "s", "", True
    return resource.plural, resource.group, resource.namespaced


def query_request(*, kind: str, namespace: str | None, name: str | None) -> Request:
    """The RBAC request of a query of the cluster read model: ``get`` one object by name,
    else ``list``; ``namespace`` None (``-A``) lists a namespaced kind at the cluster scope,
    which kube allows only to a cluster-wide grant. A cluster-scoped kind is always asked at
    the cluster scope, whatever namespace the client sent."""
    plural, group, namespaced = _resource_of(kind)
    return Request(
        verb="get" if name else "list",
        resource=plural,
        api_group=group,
        namespace=(namespace or "") if namespaced else "",
        name=name or "",
    )


def history_request(*, kind: str, namespace: str, name: str) -> Request:
    """Reading one object's events (``history``, ``describe``, ``why``): ``get`` on that
    object, as kube asks for reading the object itself."""
    plural, group, namespaced = _resource_of(kind)
    return Request(
        verb="get",
        resource=plural,
        api_group=group,
        namespace=namespace if namespaced else "",
        name=name,
    )


def endpoints_requests(*, namespace: str, service: str) -> tuple[Request, Request]:
    """Reading a service's endpoints: ``get`` the Service and ``list`` the EndpointSlices of
    its namespace (what kube-proxy's and a client's informers ask for)."""
    service_plural, service_group, _ = _resource_of("Service")
    slice_plural, slice_group, _ = _resource_of("EndpointSlice")
    return (
        Request(
            verb="get", resource=service_plural, api_group=service_group,
            namespace=namespace, name=service,
        ),
        Request(verb="list", resource=slice_plural, api_group=slice_group, namespace=namespace),
    )  # fmt: skip


def logs_request(*, namespace: str, pod: str) -> Request:
    """Reading a container's output (``fleetlog logs``): ``get`` ``pods/log`` on the pod, as
    ``kubectl logs`` asks kube-apiserver."""
    return Request(verb="get", resource="pods", subresource="log", namespace=namespace, name=pod)


def usage_request(*, kind: str, namespace: str | None) -> Request:
    """Reading usage (``fleetlog top``): ``list`` ``pods.metrics.k8s.io`` in the namespace (at
    the cluster scope for ``-A``) or ``nodes.metrics.k8s.io`` at the cluster scope, as
    ``kubectl top`` asks metrics-server."""
    if kind == "node":
        return Request(verb="list", resource="nodes", api_group=METRICS_GROUP)
    return Request(verb="list", resource="pods", api_group=METRICS_GROUP, namespace=namespace or "")


def events_request(*, namespace: str | None) -> Request:
    """Reading the log's events (``fleetlog events``): ``list`` ``events`` (the core group's,
    as ``kubectl events``) in the namespace asked, at the cluster scope without one."""
    return Request(verb="list", resource="events", namespace=namespace or "")


def replay_request(*, kind: str, namespace: str) -> Request:
    """Whether one object's events are part of a reader's replay or ``--at`` fold: ``list``
    its kind in its namespace (cluster-scoped kinds at the cluster scope), as listing the
    objects now would be asked."""
    return query_request(kind=kind, namespace=namespace, name=None)


AUDIT_PATH = "/fleetlog/audit"
"""The non-resource URL ``fleetlog audit`` (list and verify) asks ``get`` on. Only
``cluster-admin`` (``nonResourceURLs: ["*"]``) holds it among the built-in roles: the audit
trail spans every namespace, its actors and what they were refused."""


def audit_request() -> Request:
    """Reading the audit trail: ``get`` on :data:`AUDIT_PATH`, a cluster-scoped permission."""
    return Request(verb="get", path=AUDIT_PATH)


def qualified_resource(request: Request) -> str:
    """``pods``, ``deployments.apps``: how kube names a resource in its messages."""
    return f"{request.resource}.{request.api_group}" if request.api_group else request.resource


def read_forbidden(user: User, request: Request) -> str:
    """kube-apiserver's Forbidden message for a refused read (``pods is forbidden: User "bob"
    cannot list resource "pods" in API group "" at the cluster scope``; for a non-resource URL
    ``forbidden: User "bob" cannot get path "/fleetlog/audit"``, as kube words that)."""
    if not request.is_resource_request:
        return f"forbidden: {forbidden_message(user, request)}"
    return forbidden_status_message(user, request, qualified_resource=qualified_resource(request))

"""``<plural>/<name>/status``: an object's status, read and written on its own.

Why this exists: clients read status through the subresource (``kubectl get
--subresource=status``), and controllers written against Kubernetes write it there: a write
to ``/status`` changes only the status (the spec and metadata in its body are ignored, as
kube's status strategies reset them), while the main resource ignores a status in its body
(``core.kubeapi.objects.writable`` drops it).

Which status writes fleetlog accepts: in fleetlog, status is not a field a client sets but
what controllers and node agents record through events (a pod's phase from its node's agent,
a node's conditions from its heartbeats, a service's addresses from allocation). A write is
accepted only where it maps onto a command the gateway has:

* Deployment, ReplicaSet, HorizontalPodAutoscaler and VerticalPodAutoscaler: the gateway's
  ``status`` command, the one their controllers send (validated against the kind's status
  schema, admitted and audited like theirs). As in Kubernetes, the controller records its own
  observation again on its next sync (the HPA controller on its next evaluation, the VPA
  recommender when its recommendation moves).
* every other kind: a write that leaves the status as it is changes nothing and answers the
  object; one that would change it is refused with 405 MethodNotAllowed and a message saying
  who records that status, rather than appearing to succeed while nothing is recorded.

A PUT that states ``metadata.resourceVersion`` is pinned to it (kube's Conflict when the object
has changed); a patch is computed on the object as it is and retried on a conflict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from core.kubeapi.objects import StatusWrite, status_write
from core.kubeapi.paths import ResourcePath
from core.kubeapi.status import APIError, method_not_allowed
from handlers.apiserver.http import JSON, read_json, respond
from handlers.apiserver.resources import (
    check_preconditions,
    no_dry_run,
    patch_subresource,
)
from projections.cluster import ObjectRecord

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources

WRITABLE_STATUS = frozenset(
    {"Deployment", "ReplicaSet", "HorizontalPodAutoscaler", "VerticalPodAutoscaler"}
)
"""Kinds whose status a client may write: those with the gateway's ``status`` command."""
RECORDED_BY = {
    "Pod": "the scheduler and the node agent running it",
    "Node": "its node agent's heartbeats and the node lifecycle controller",
    "Service": "the gateway's address and node-port allocation",
    "Namespace": "the namespace lifecycle",
    "ResourceQuota": "the quota controller",
}


def read_only(path: ResourcePath) -> APIError:
    kind = path.resource.kind
    who = RECORDED_BY.get(kind, "fleetlog's controllers")
    return APIError(
        405,
        "MethodNotAllowed",
        f'{path.target.qualified_resource} "{path.name}": the status of a {kind} is recorded '
        f"by {who} through events, not written by clients; fleetlog accepts status writes "
        f"only for {', '.join(sorted(WRITABLE_STATUS))}",
        path.target,
    )


async def _write(
    resources: Resources,
    path: ResourcePath,
    caller: Caller,
    record: ObjectRecord,
    written: StatusWrite,
    *,
    pin: bool,
) -> web.StreamResponse:
    assert path.name is not None
    expected = check_preconditions(path, record, written.preconditions)
    stored = record.manifest.get("status") or {}
    if written.status is None or written.status == stored:
        return respond(resources.as_api_object(path.resource, record))
    if path.resource.kind not in WRITABLE_STATUS:
        raise read_only(path)
    if pin and expected is None:
        expected = record.version
    after = await resources.send_on_object(
        caller, path, "status",
        {"name": path.name, "namespace": record.namespace, "status": written.status},
        expected_version=expected,
    )  # fmt: skip
    return respond(resources.as_api_object(path.resource, after))


async def serve(
    resources: Resources, request: web.Request, path: ResourcePath, caller: Caller
) -> web.StreamResponse:
    namespace = path.namespace or ""
    assert path.name is not None
    if request.method == "GET":
        return await resources.get(request, path)
    if request.method == "PUT":
        no_dry_run(request)
        # A status is read as JSON only: the protobuf table holds no status messages.
        body = await read_json(request, media_types=(JSON,))
        record = await resources.current(path)
        written = status_write(body, path.resource, namespace=namespace, name=path.name)
        return await _write(resources, path, caller, record, written, pin=False)
    if request.method == "PATCH":
        no_dry_run(request)
        return await patch_subresource(
            resources, request, path,
            shown=lambda record: resources.as_api_object(path.resource, record),
            asked=lambda patched, _: status_write(
                patched, path.resource, namespace=namespace, name=path.name
            ),
            write=lambda record, written: _write(
                resources, path, caller, record, written, pin=True
            ),
        )  # fmt: skip
    raise method_not_allowed(path.target)
